//! SBI policy for RISC-V guests: the SBI a payload expects from its "firmware", answered by libvmm.
//!
//! Offered (SBI spec 2.0): BASE, TIME, SRST and DBCN, plus libvmm's own hypercall extension (decoded by
//! the backend before it gets here; BASE's probe reports it). Every other extension, legacy (v0.1) calls
//! included, and every unknown function id answers `SBI_ERR_NOT_SUPPORTED` and the guest keeps running.
//!
//! Guest pointers (DBCN) are guest-physical and reach bytes only through [`GuestMemory`]: a pointer
//! outside the guest's memory, a `base_hi` that is not 0 on RV64, or a length that overflows is
//! `SBI_ERR_INVALID_PARAM` (the spec's error for "memory does not satisfy the requirements").
//!
//! SRST shutdown stops the VM: reason "none" is a payload exit with status 0, "system failure" (or a
//! vendor reason) is a payload abort. Reboots cannot be done by a library VMM: `SBI_ERR_NOT_SUPPORTED`.
//! TIME `set_timer` is allowed here and carried out by the backend (it owns the timer hardware).
//!
//! [`GuestMemory`]: crate::guest_mem::GuestMemory
#![forbid(unsafe_code)]

use libvmm_abi::{ABI_VERSION, SBI_EXT_LIBVMM};

use crate::exit::{Output, Reply};
use crate::vm::{Platform, StopReason, Vm};

pub use libvmm_abi::sbi::{
    ERR_INVALID_PARAM as SBI_ERR_INVALID_PARAM, ERR_NOT_SUPPORTED as SBI_ERR_NOT_SUPPORTED,
    EXT_BASE, EXT_DBCN, EXT_SRST, EXT_TIME, SUCCESS as SBI_SUCCESS,
};

/// SBI specification version reported by BASE: 2.0 (major in bits 30:24).
pub const SPEC_VERSION: i64 = 2 << 24;
/// SBI implementation id reported by BASE. libvmm has no registered id; this value ("LV") is outside the
/// registered range (0..=12 at the time of writing) so a guest cannot mistake libvmm for a known firmware.
pub const IMPL_ID: i64 = 0x4C56;

/// Extensions BASE `probe_extension` reports as available.
const OFFERED: [u64; 5] = [EXT_BASE, EXT_TIME, EXT_SRST, EXT_DBCN, SBI_EXT_LIBVMM];

fn ok(value: i64) -> Reply {
    Reply::Complete(Output::Sbi {
        error: SBI_SUCCESS,
        value,
    })
}

fn err(error: i64) -> Reply {
    Reply::Complete(Output::Sbi { error, value: 0 })
}

/// Decides one SBI call (`ext` = a7, `fid` = a6, `args` = a0..a5).
pub fn decide<P: Platform>(
    ext: u64,
    fid: u64,
    args: &[u64; 6],
    vm: &mut Vm<'_, P>,
) -> Result<Reply, StopReason> {
    Ok(match ext {
        EXT_BASE => match fid {
            0 => ok(SPEC_VERSION),
            1 => ok(IMPL_ID),
            2 => ok(ABI_VERSION as i64),
            3 => ok(OFFERED.contains(&args[0]) as i64),
            // mvendorid, marchid, mimpid: the host's are not the guest's business.
            4..=6 => ok(0),
            _ => err(SBI_ERR_NOT_SUPPORTED),
        },
        EXT_TIME => match fid {
            0 => ok(0),
            _ => err(SBI_ERR_NOT_SUPPORTED),
        },
        EXT_SRST => match fid {
            0 => return system_reset(args[0], args[1]),
            _ => err(SBI_ERR_NOT_SUPPORTED),
        },
        EXT_DBCN => match fid {
            0 => console_write(args[0], args[1], args[2], vm),
            1 => match checked_buffer(args[0], args[1], args[2], vm) {
                // No console input: zero bytes read.
                Some(_) => ok(0),
                None => err(SBI_ERR_INVALID_PARAM),
            },
            2 => {
                let _ = embedded_io::Write::write_all(vm.platform.console(), &[args[0] as u8]);
                ok(0)
            }
            _ => err(SBI_ERR_NOT_SUPPORTED),
        },
        _ => err(SBI_ERR_NOT_SUPPORTED),
    })
}

fn system_reset(kind: u64, reason: u64) -> Result<Reply, StopReason> {
    const SHUTDOWN: u64 = 0;
    const COLD_REBOOT: u64 = 1;
    const WARM_REBOOT: u64 = 2;
    const VENDOR: core::ops::RangeInclusive<u64> = 0xF000_0000..=0xFFFF_FFFF;
    const REASON_NONE: u64 = 0;
    const REASON_FAILURE: u64 = 1;
    match kind {
        SHUTDOWN => match reason {
            REASON_NONE => Err(StopReason::PayloadExit(0)),
            REASON_FAILURE => Err(StopReason::PayloadAbort),
            r if VENDOR.contains(&r) => Err(StopReason::PayloadAbort),
            _ => Ok(err(SBI_ERR_INVALID_PARAM)),
        },
        COLD_REBOOT | WARM_REBOOT => Ok(err(SBI_ERR_NOT_SUPPORTED)),
        k if VENDOR.contains(&k) => Ok(err(SBI_ERR_NOT_SUPPORTED)),
        _ => Ok(err(SBI_ERR_INVALID_PARAM)),
    }
}

/// The guest buffer of a DBCN call, or `None` when it is not wholly inside guest memory.
fn checked_buffer<P: Platform>(len: u64, lo: u64, hi: u64, vm: &Vm<'_, P>) -> Option<()> {
    if hi != 0 {
        return None;
    }
    vm.mem.check(lo, len).ok()
}

fn console_write<P: Platform>(len: u64, lo: u64, hi: u64, vm: &mut Vm<'_, P>) -> Reply {
    if hi != 0 {
        return err(SBI_ERR_INVALID_PARAM);
    }
    let mem = vm.mem;
    let con = vm.platform.console();
    match mem.for_each_chunk(lo, len, |c| embedded_io::Write::write_all(con, c)) {
        Err(_) => err(SBI_ERR_INVALID_PARAM),
        Ok(Ok(())) => ok(len as i64),
        Ok(Err(_)) => err(-1), // SBI_ERR_FAILED
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::guest_mem::GuestMemory;
    use crate::testing::ModelPlatform;

    const BASE: u64 = 0x8400_0000;

    fn call(
        mem: &mut [u8],
        ext: u64,
        fid: u64,
        args: [u64; 6],
    ) -> (Result<Reply, StopReason>, Vec<u8>) {
        let mut vm = Vm::new(GuestMemory::new(BASE, mem), ModelPlatform::default());
        let r = decide(ext, fid, &args, &mut vm);
        (r, vm.platform.console.0)
    }

    fn sbi(r: Result<Reply, StopReason>) -> (i64, i64) {
        match r {
            Ok(Reply::Complete(Output::Sbi { error, value })) => (error, value),
            other => panic!("not an SBI reply: {other:?}"),
        }
    }

    #[test]
    fn base_reports_version_and_probes_only_what_is_offered() {
        let mut m = [0u8; 16];
        assert_eq!(sbi(call(&mut m, EXT_BASE, 0, [0; 6]).0), (0, 0x200_0000));
        for e in OFFERED {
            assert_eq!(sbi(call(&mut m, EXT_BASE, 3, [e, 0, 0, 0, 0, 0]).0), (0, 1));
        }
        for e in [0x735049, 0x52464E43, 0x48534D, 0x01, u64::MAX] {
            assert_eq!(sbi(call(&mut m, EXT_BASE, 3, [e, 0, 0, 0, 0, 0]).0), (0, 0));
        }
        assert_eq!(
            sbi(call(&mut m, EXT_BASE, 99, [0; 6]).0).0,
            SBI_ERR_NOT_SUPPORTED
        );
    }

    #[test]
    fn unknown_and_legacy_extensions_are_not_supported() {
        let mut m = [0u8; 16];
        for ext in [
            0x0,
            0x1,
            0x8,
            0x735049,
            0x48534D,
            0x0A00_0000,
            0xdead_beef,
            u64::MAX,
        ] {
            assert_eq!(
                sbi(call(&mut m, ext, 0, [1; 6]).0).0,
                SBI_ERR_NOT_SUPPORTED,
                "{ext:#x}"
            );
        }
        assert_eq!(
            sbi(call(&mut m, EXT_TIME, 1, [0; 6]).0).0,
            SBI_ERR_NOT_SUPPORTED
        );
    }

    #[test]
    fn dbcn_writes_guest_bytes_and_refuses_wild_pointers_and_overflowing_lengths() {
        let mut m = [0u8; 0x100];
        m[0x10..0x15].copy_from_slice(b"hello");
        let (r, out) = call(&mut m, EXT_DBCN, 0, [5, BASE + 0x10, 0, 0, 0, 0]);
        assert_eq!(sbi(r), (0, 5));
        assert_eq!(out, b"hello");
        for (len, lo, hi) in [
            (16, 0x8020_0000, 0),       // the VMM image
            (u64::MAX, BASE + 0x10, 0), // overflowing length
            (2, u64::MAX, 0),           // wrapping pointer
            (0x11, BASE + 0xf0, 0),     // straddles the end
            (1, BASE, 1),               // base_hi set on RV64
        ] {
            let (r, out) = call(&mut m, EXT_DBCN, 0, [len, lo, hi, 0, 0, 0]);
            assert_eq!(sbi(r).0, SBI_ERR_INVALID_PARAM, "{len:#x} {lo:#x} {hi:#x}");
            assert!(out.is_empty());
            let (r, _) = call(&mut m, EXT_DBCN, 1, [len, lo, hi, 0, 0, 0]);
            assert_eq!(sbi(r).0, SBI_ERR_INVALID_PARAM);
        }
        let (r, out) = call(&mut m, EXT_DBCN, 2, [b'x' as u64 | 0xff00, 0, 0, 0, 0, 0]);
        assert_eq!(sbi(r), (0, 0));
        assert_eq!(out, b"x");
    }

    #[test]
    fn srst_shutdown_stops_and_reboot_is_refused() {
        let mut m = [0u8; 16];
        assert_eq!(
            call(&mut m, EXT_SRST, 0, [0, 0, 0, 0, 0, 0]).0,
            Err(StopReason::PayloadExit(0))
        );
        assert_eq!(
            call(&mut m, EXT_SRST, 0, [0, 1, 0, 0, 0, 0]).0,
            Err(StopReason::PayloadAbort)
        );
        assert_eq!(
            sbi(call(&mut m, EXT_SRST, 0, [1, 0, 0, 0, 0, 0]).0).0,
            SBI_ERR_NOT_SUPPORTED
        );
        assert_eq!(
            sbi(call(&mut m, EXT_SRST, 0, [7, 0, 0, 0, 0, 0]).0).0,
            SBI_ERR_INVALID_PARAM
        );
        assert_eq!(
            sbi(call(&mut m, EXT_SRST, 0, [0, 5, 0, 0, 0, 0]).0).0,
            SBI_ERR_INVALID_PARAM
        );
        assert_eq!(
            sbi(call(&mut m, EXT_SRST, 0, [u64::MAX, 0, 0, 0, 0, 0]).0).0,
            SBI_ERR_INVALID_PARAM
        );
    }
}
