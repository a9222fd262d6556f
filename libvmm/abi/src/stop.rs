//! Stop codes: how an image reports why its VM stopped.
//!
//! A code is 0..=127. On x86 under QEMU the VMM writes it to `isa-debug-exit` (port 0xf4), and QEMU exits
//! with `(code << 1) | 1`; xtask maps that back. On RISC-V the `sifive_test` device exits with the code
//! itself (0 as PASS). Under Bochs, which cannot exit with a chosen status, xtask reads the final console
//! line [`STOP_LINE_PREFIX`]` <code> ...`. Every stop prints that line on every backend.

/// The last console line of every run: `libvmm: stop <code> <reason>`.
pub const STOP_LINE_PREFIX: &str = "libvmm: stop";

/// Payload exit statuses 0..=PAYLOAD_MAX map to themselves; larger ones (and negative) clamp to it.
pub const PAYLOAD_MAX: u8 = 95;

/// Stop codes the VMM chooses (above the payload range).
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopCode {
    /// The guest touched guest-physical memory that is not its own (nested/G-stage/EPT fault).
    GuestMemoryViolation = 96,
    /// The guest triple-faulted (x86 SHUTDOWN) or otherwise shut itself down uncleanly.
    TripleFault = 97,
    /// The payload called abort (or its runtime panicked).
    PayloadAbort = 98,
    /// The guest did something the VMM refuses to continue from (halt with nothing to wake it, an exit
    /// libvmm does not handle).
    GuestError = 99,
    /// The hardware or firmware refused the VMM's request (VMRUN/VMLAUNCH failure, SEAMCALL error).
    BackendError = 100,
    /// The CPU lacks a feature the backend needs.
    Unsupported = 101,
    /// Boot-time platform problem (memory map, device tree, payload does not fit).
    PlatformError = 102,
    /// A VM-entry consistency check in software failed.
    ConsistencyCheck = 103,
    /// The VMM itself panicked: a libvmm bug.
    VmmPanic = 126,
}

/// Stop code of a payload exit status.
pub const fn payload(status: i64) -> u8 {
    if status < 0 || status > PAYLOAD_MAX as i64 {
        PAYLOAD_MAX
    } else {
        status as u8
    }
}

/// Decodes a QEMU x86 process status written through isa-debug-exit: `Some(code)` for an odd status.
pub const fn from_qemu_debug_exit(status: i32) -> Option<u8> {
    if status & 1 == 1 && status > 0 && status < 256 {
        Some(((status - 1) >> 1) as u8)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_statuses_clamp() {
        assert_eq!(payload(0), 0);
        assert_eq!(payload(95), 95);
        assert_eq!(payload(96), 95);
        assert_eq!(payload(-1), 95);
    }

    #[test]
    fn qemu_status_decodes_every_code() {
        for code in 0u8..=127 {
            let status = ((code as i32) << 1) | 1;
            assert_eq!(from_qemu_debug_exit(status), Some(code));
        }
        assert_eq!(from_qemu_debug_exit(0), None);
        assert_eq!(from_qemu_debug_exit(2), None);
    }
}
