//! SBI policy for RISC-V guests: the SBI a payload expects from its "firmware", answered by libvmm.
//!
//! Offered (SBI spec 2.0): BASE, TIME, SRST, DBCN, and for guest SMP HSM, IPI and RFENCE, plus libvmm's
//! own hypercall extension (decoded by the backend before it gets here; BASE's probe reports it).
//!
//! Guest SMP (one vCPU per physical hart, pinned; the shared state is `smp::Shared`): hart ids are the
//! vCPU numbers `0..cpu_count`. HSM `hart_start(hartid, start_addr, opaque)` asks an off vCPU to start
//! at `start_addr` (which must be executable guest memory: `SBI_ERR_INVALID_ADDRESS` otherwise) with
//! a0 = hartid, a1 = opaque, satp = 0 and interrupts off, and kicks its hart (a host IPI); a started hart
//! is `SBI_ERR_ALREADY_AVAILABLE`, an unknown one `SBI_ERR_INVALID_PARAM`. `hart_stop` ends this vCPU's
//! run until a new start (stopping the last running hart is a guest halt: nothing could start it
//! again). `hart_get_status` reads the shared run state. `hart_suspend` of the default retentive type
//! returns at once (like a WFI, which may complete at any time); non-retentive suspend is
//! `SBI_ERR_NOT_SUPPORTED`. IPI `send_ipi(hart_mask, hart_mask_base)` posts a supervisor software
//! interrupt (VSSIP on the target) and kicks each target; RFENCE `remote_fence_i` and
//! `remote_sfence_vma(_asid)` post a fence (the target does `fence.i` / `hfence.vvma` for the guest's
//! VMID, the whole guest address space: over-fencing is allowed) and wait until every running target
//! has done it, doing this hart's own meanwhile (two harts fencing each other cannot deadlock). The
//! `remote_hfence_*` functions are for a hypervisor in the guest: this guest has no H extension, so
//! `SBI_ERR_NOT_SUPPORTED`. A hart mask naming a hart that does not exist, however far out of range, is
//! `SBI_ERR_INVALID_PARAM` and nothing is sent; `hart_mask_base = -1` means every hart. Every other extension, legacy (v0.1) calls
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

use libvmm_abi::sbi as abi;
pub use libvmm_abi::sbi::{
    ERR_INVALID_PARAM as SBI_ERR_INVALID_PARAM, ERR_NOT_SUPPORTED as SBI_ERR_NOT_SUPPORTED,
    EXT_BASE, EXT_DBCN, EXT_HSM, EXT_IPI, EXT_RFENCE, EXT_SRST, EXT_TIME, SUCCESS as SBI_SUCCESS,
};

use crate::smp::{self, fence, RunState, StartError};

/// SBI specification version reported by BASE: 2.0 (major in bits 30:24).
pub const SPEC_VERSION: i64 = 2 << 24;
/// SBI implementation id reported by BASE. libvmm has no registered id; this value ("LV") is outside the
/// registered range (0..=12 at the time of writing) so a guest cannot mistake libvmm for a known firmware.
pub const IMPL_ID: i64 = 0x4C56;

/// Extensions BASE `probe_extension` reports as available.
const OFFERED: [u64; 8] = [
    EXT_BASE,
    EXT_TIME,
    EXT_SRST,
    EXT_DBCN,
    EXT_HSM,
    EXT_IPI,
    EXT_RFENCE,
    SBI_EXT_LIBVMM,
];

fn ok(value: i64) -> Reply {
    Reply::Complete(Output::Sbi {
        error: SBI_SUCCESS,
        value,
    })
}

fn err(error: i64) -> Reply {
    Reply::Complete(Output::Sbi { error, value: 0 })
}

/// Decides one SBI call (`ext` = a7, `fid` = a6, `args` = a0..a5). `service` carries out what other
/// harts posted for this one (its fences, its IPIs): RFENCE calls it while they wait for the targets.
pub fn decide<P: Platform>(
    ext: u64,
    fid: u64,
    args: &[u64; 6],
    vm: &mut Vm<'_, P>,
    service: &mut impl FnMut(&mut Vm<'_, P>),
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
        EXT_HSM => match fid {
            abi::HSM_HART_START => hart_start(args[0], args[1], args[2], vm),
            abi::HSM_HART_STOP => {
                if vm.smp.active() <= 1 {
                    return Err(StopReason::GuestHalted);
                }
                return Err(StopReason::VcpuOff);
            }
            abi::HSM_HART_GET_STATUS => match vm.smp.status(args[0]) {
                None => err(SBI_ERR_INVALID_PARAM),
                Some(RunState::Running) => ok(abi::HSM_STATE_STARTED),
                Some(RunState::Off) => ok(abi::HSM_STATE_STOPPED),
                Some(RunState::Claimed | RunState::StartRequested) => {
                    ok(abi::HSM_STATE_START_PENDING)
                }
            },
            abi::HSM_HART_SUSPEND => match args[0] as u32 as u64 {
                _ if args[0] >> 32 != 0 => err(SBI_ERR_INVALID_PARAM),
                abi::HSM_SUSPEND_RETENTIVE => ok(0),
                t if (abi::HSM_SUSPEND_NON_RETENTIVE..=0x8FFF_FFFF).contains(&t) => {
                    err(SBI_ERR_NOT_SUPPORTED)
                }
                0xF000_0000..=0xFFFF_FFFF | 0x1000_0000..=0x7FFF_FFFF => err(SBI_ERR_NOT_SUPPORTED),
                _ => err(SBI_ERR_INVALID_PARAM),
            },
            _ => err(SBI_ERR_NOT_SUPPORTED),
        },
        EXT_IPI => match fid {
            abi::IPI_SEND_IPI => send_ipi(args[0], args[1], vm, service),
            _ => err(SBI_ERR_NOT_SUPPORTED),
        },
        EXT_RFENCE => match fid {
            abi::RFENCE_FENCE_I => remote_fence(args[0], args[1], fence::INSN, vm, service)?,
            abi::RFENCE_SFENCE_VMA | abi::RFENCE_SFENCE_VMA_ASID => {
                remote_fence(args[0], args[1], fence::VMA, vm, service)?
            }
            // For a hypervisor in the guest; this guest has no H extension.
            _ => err(SBI_ERR_NOT_SUPPORTED),
        },
        _ => err(SBI_ERR_NOT_SUPPORTED),
    })
}

fn hart_start<P: Platform>(hart: u64, pc: u64, opaque: u64, vm: &mut Vm<'_, P>) -> Reply {
    if vm.smp.status(hart).is_none() {
        return err(SBI_ERR_INVALID_PARAM);
    }
    if vm.map.perm_at(pc) != Some(crate::loader::Perm::ReadExecute) || pc & 1 != 0 {
        return err(abi::ERR_INVALID_ADDRESS);
    }
    match vm.smp.request_start(hart, pc, opaque) {
        Ok(()) => {
            vm.platform.kick(hart as usize);
            ok(0)
        }
        Err(StartError::NoSuchCpu) => err(SBI_ERR_INVALID_PARAM),
        Err(StartError::AlreadyStarted) => err(abi::ERR_ALREADY_AVAILABLE),
    }
}

/// The harts of `(mask, base)` as a bit set, checked.
fn targets<P: Platform>(mask: u64, base: u64, vm: &Vm<'_, P>) -> Option<u64> {
    smp::hart_mask(mask, base, vm.smp.cpu_count())
}

fn send_ipi<P: Platform>(
    mask: u64,
    base: u64,
    vm: &mut Vm<'_, P>,
    service: &mut impl FnMut(&mut Vm<'_, P>),
) -> Reply {
    let Some(set) = targets(mask, base, vm) else {
        return err(SBI_ERR_INVALID_PARAM);
    };
    for hart in (0..64).filter(|h| set & (1 << h) != 0) {
        vm.smp.post_ipi(hart, smp::IPI_SOFT);
        if hart as usize != vm.cpu {
            vm.platform.kick(hart as usize);
        }
    }
    if set & (1 << vm.cpu) != 0 {
        service(vm);
    }
    ok(0)
}

fn remote_fence<P: Platform>(
    mask: u64,
    base: u64,
    kind: u8,
    vm: &mut Vm<'_, P>,
    service: &mut impl FnMut(&mut Vm<'_, P>),
) -> Result<Reply, StopReason> {
    let Some(set) = targets(mask, base, vm) else {
        return Ok(err(SBI_ERR_INVALID_PARAM));
    };
    let mut posted = 0u64;
    vm.smp.wait_fences(vm.cpu, true);
    for hart in (0..64).filter(|h| set & (1 << h) != 0) {
        if vm.smp.post_fence(hart, kind) {
            posted |= 1 << hart;
            if hart as usize != vm.cpu {
                vm.platform.kick(hart as usize);
            }
        }
    }
    // Wait for every running target (this hart's own fence, and those others post to it meanwhile, are
    // done by `service`): halted, a target that completes a fence kicks the waiters. A target that
    // stops meanwhile has no translations left to fence; the VM stopping ends the wait too.
    loop {
        vm.platform.clear_kick();
        service(vm);
        let waiting = (0..64u64).any(|h| {
            posted & (1 << h) != 0
                && vm.smp.fence_pending(h)
                && vm.smp.status(h) == Some(RunState::Running)
        });
        if vm.smp.stopping() {
            // The kick that said so was taken here: this vCPU leaves now.
            vm.smp.wait_fences(vm.cpu, false);
            return Err(StopReason::StoppedElsewhere);
        }
        if !waiting {
            vm.smp.wait_fences(vm.cpu, false);
            return Ok(ok(0));
        }
        vm.platform.idle();
    }
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
    // A buffer in memory the guest never touched reads as zeros, never as what the host left there
    // (another vCPU still zeroing a block of it past the bounded wait: not read, SBI_ERR_FAILED).
    if vm.lazy.zero_stale(&vm.mem, lo, len).is_err() {
        return err(-1);
    }
    let mem = vm.mem;
    let con = vm.platform.console();
    let _line = crate::console::LineLock::acquire();
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
        let r = decide(ext, fid, &args, &mut vm, &mut |_| {});
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
        for e in [0x01, 0x4E41434C, u64::MAX] {
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
            0x4E41434C,
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

    /// A VM of `n` vCPUs on its own shared state, as vCPU `me`, its memory executable at BASE.
    fn smp_vm(mem: &mut [u8], n: usize, me: usize) -> Vm<'_, ModelPlatform> {
        let len = mem.len() as u64;
        let mut vm = crate::testing::smp_vm(BASE, mem, n, me);
        vm.map = crate::loader::GuestMap::whole(BASE, len, crate::loader::Perm::ReadExecute);
        vm
    }

    fn smp_call(vm: &mut Vm<'_, ModelPlatform>, ext: u64, fid: u64, a: [u64; 6]) -> (i64, i64) {
        sbi(decide(ext, fid, &a, vm, &mut |_| {}))
    }

    #[test]
    fn hsm_starts_stops_and_reports_harts() {
        use libvmm_abi::sbi::*;
        let mut m = [0u8; 0x100];
        let mut vm = smp_vm(&mut m, 2, 0);
        assert_eq!(smp_call(&mut vm, EXT_HSM, 2, [1, 0, 0, 0, 0, 0]), (0, 1));
        assert_eq!(smp_call(&mut vm, EXT_HSM, 2, [0, 0, 0, 0, 0, 0]), (0, 0));
        assert_eq!(smp_call(&mut vm, EXT_HSM, 2, [2, 0, 0, 0, 0, 0]).0, -3);
        // Outside guest memory, misaligned, unknown hart, running hart.
        assert_eq!(smp_call(&mut vm, EXT_HSM, 0, [1, 0x1000, 0, 0, 0, 0]).0, -5);
        assert_eq!(
            smp_call(&mut vm, EXT_HSM, 0, [1, u64::MAX, 0, 0, 0, 0]).0,
            -5
        );
        assert_eq!(
            smp_call(&mut vm, EXT_HSM, 0, [1, BASE + 1, 0, 0, 0, 0]).0,
            -5
        );
        assert_eq!(smp_call(&mut vm, EXT_HSM, 0, [9, BASE, 0, 0, 0, 0]).0, -3);
        assert_eq!(smp_call(&mut vm, EXT_HSM, 0, [0, BASE, 0, 0, 0, 0]).0, -6);
        assert!(vm.platform.kicks.borrow().is_empty());
        assert_eq!(
            smp_call(&mut vm, EXT_HSM, 0, [1, BASE + 8, 77, 0, 0, 0]),
            (0, 0)
        );
        assert_eq!(*vm.platform.kicks.borrow(), [1]);
        assert_eq!(smp_call(&mut vm, EXT_HSM, 2, [1, 0, 0, 0, 0, 0]), (0, 2));
        assert_eq!(smp_call(&mut vm, EXT_HSM, 0, [1, BASE, 0, 0, 0, 0]).0, -6);
        assert_eq!(vm.smp.take_start(1), Some((BASE + 8, 77)));
        assert_eq!(smp_call(&mut vm, EXT_HSM, 2, [1, 0, 0, 0, 0, 0]), (0, 0));
        // hart_stop: this vCPU goes off; the last running one halts the guest.
        assert_eq!(
            decide(EXT_HSM, 1, &[0; 6], &mut vm, &mut |_| {}),
            Err(StopReason::VcpuOff)
        );
        vm.smp.set_off(1);
        assert_eq!(
            decide(EXT_HSM, 1, &[0; 6], &mut vm, &mut |_| {}),
            Err(StopReason::GuestHalted)
        );
        // Retentive suspend returns; non-retentive is not offered; reserved types are invalid.
        assert_eq!(smp_call(&mut vm, EXT_HSM, 3, [0, 0, 0, 0, 0, 0]), (0, 0));
        assert_eq!(
            smp_call(&mut vm, EXT_HSM, 3, [0x8000_0000, 0, 0, 0, 0, 0]).0,
            -2
        );
        assert_eq!(smp_call(&mut vm, EXT_HSM, 3, [0x1, 0, 0, 0, 0, 0]).0, -3);
        assert_eq!(
            smp_call(&mut vm, EXT_HSM, 3, [1 << 32, 0, 0, 0, 0, 0]).0,
            -3
        );
    }

    #[test]
    fn ipis_reach_the_named_harts_and_bad_masks_send_nothing() {
        use libvmm_abi::sbi::*;
        let mut m = [0u8; 0x100];
        let mut vm = smp_vm(&mut m, 4, 1);
        for (mask, base) in [(1, 4), (1, 1 << 40), (0b11, 3), (u64::MAX, 0), (1 << 63, 1)] {
            assert_eq!(
                smp_call(&mut vm, EXT_IPI, 0, [mask, base, 0, 0, 0, 0]).0,
                -3
            );
        }
        assert!(vm.platform.kicks.borrow().is_empty());
        assert!((0..4).all(|c| !vm.smp.has_events(c)));
        let mut own = 0;
        let r = decide(EXT_IPI, 0, &[0b101, 0, 0, 0, 0, 0], &mut vm, &mut |_| {
            own += 1
        });
        assert_eq!(sbi(r), (0, 0));
        assert_eq!(*vm.platform.kicks.borrow(), [0, 2]);
        assert_eq!(own, 0);
        assert_eq!(vm.smp.take_events(0).0, crate::smp::IPI_SOFT);
        assert_eq!(vm.smp.take_events(2).0, crate::smp::IPI_SOFT);
        // All harts (base -1): the caller's own IPI is carried out by `service`, not kicked.
        let r = decide(EXT_IPI, 0, &[0, u64::MAX, 0, 0, 0, 0], &mut vm, &mut |_| {
            own += 1
        });
        assert_eq!(sbi(r), (0, 0));
        assert_eq!(own, 1);
        assert_eq!(*vm.platform.kicks.borrow(), [0, 2, 0, 2, 3]);
    }

    #[test]
    fn remote_fences_wait_for_running_targets_and_hfence_is_not_offered() {
        use libvmm_abi::sbi::*;
        let mut m = [0u8; 0x100];
        let mut vm = smp_vm(&mut m, 3, 0);
        vm.smp.request_start(1, BASE, 0).unwrap();
        vm.smp.take_start(1);
        // Hart 2 is off: nothing to wait for there. Hart 1's fence is "done" by its CPU (here, by the
        // service callback standing in for that CPU after two rounds).
        let shared = vm.smp;
        let mut rounds = 0;
        let r = decide(
            EXT_RFENCE,
            1,
            &[0b111, 0, 0, 0x1000, 0, 0],
            &mut vm,
            &mut |v| {
                rounds += 1;
                let (_, f) = v.smp.take_events(0);
                v.smp.fences_done(0, f);
                if rounds == 2 {
                    let (_, f) = shared.take_events(1);
                    assert_eq!(f, fence::VMA);
                    shared.fences_done(1, f);
                }
            },
        );
        assert_eq!(sbi(r), (0, 0));
        assert_eq!(rounds, 2);
        assert!(!shared.fence_pending(0) && !shared.fence_pending(1) && !shared.fence_pending(2));
        assert_eq!(*vm.platform.kicks.borrow(), [1]);
        assert_eq!(
            smp_call(&mut vm, EXT_RFENCE, 0, [1, 1 << 50, 0, 0, 0, 0]).0,
            -3
        );
        for fid in 3..=6 {
            assert_eq!(smp_call(&mut vm, EXT_RFENCE, fid, [1, 0, 0, 0, 0, 0]).0, -2);
        }
    }
}
