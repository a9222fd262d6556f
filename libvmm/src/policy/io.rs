//! Port I/O policy: default deny. No port is assigned to a libvmm guest, so an IN reads all-ones (what an
//! unclaimed ISA port returns on real hardware) and an OUT is dropped: the guest can neither talk to the
//! host's devices (serial console, QEMU's debug-exit port) nor stop the VM through them. String I/O
//! (INS/OUTS, with or without REP) runs through the instruction emulator, which asks [`decide`] once per
//! element with `string` clear: each element is answered as the same IN or OUT would be. An access
//! still marked `string` (no emulator on this backend) is #GP(0).
#![forbid(unsafe_code)]

use crate::exit::{Fault, IoAccess, Output, Reply};

pub fn decide(io: &IoAccess) -> Reply {
    if io.string || !matches!(io.size, 1 | 2 | 4) {
        return Reply::Inject(Fault::GeneralProtection(0));
    }
    if io.write {
        Reply::Complete(Output::Nothing)
    } else {
        let ones = if io.size == 4 {
            u32::MAX
        } else {
            (1u32 << (io.size * 8)) - 1
        };
        Reply::Complete(Output::IoIn {
            value: ones,
            size: io.size,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn io(port: u16, size: u8, write: bool, string: bool) -> IoAccess {
        IoAccess {
            port,
            size,
            write,
            value: 0x41,
            string,
        }
    }

    #[test]
    fn reads_of_unassigned_ports_are_all_ones() {
        assert_eq!(
            decide(&io(0x3f8, 1, false, false)),
            Reply::Complete(Output::IoIn {
                value: 0xFF,
                size: 1
            })
        );
        assert_eq!(
            decide(&io(0x60, 2, false, false)),
            Reply::Complete(Output::IoIn {
                value: 0xFFFF,
                size: 2
            })
        );
        assert_eq!(
            decide(&io(0xcf8, 4, false, false)),
            Reply::Complete(Output::IoIn {
                value: u32::MAX,
                size: 4
            })
        );
    }

    #[test]
    fn writes_are_dropped_even_to_the_exit_and_console_ports() {
        assert_eq!(
            decide(&io(0xf4, 4, true, false)),
            Reply::Complete(Output::Nothing)
        );
        assert_eq!(
            decide(&io(0x3f8, 1, true, false)),
            Reply::Complete(Output::Nothing)
        );
    }

    #[test]
    fn string_io_and_bad_sizes_are_gp() {
        assert_eq!(
            decide(&io(0x3f8, 1, true, true)),
            Reply::Inject(Fault::GeneralProtection(0))
        );
        assert_eq!(
            decide(&io(0x3f8, 3, false, false)),
            Reply::Inject(Fault::GeneralProtection(0))
        );
    }
}
