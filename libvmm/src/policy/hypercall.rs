//! libvmm hypercalls (docs/hypercall-abi.md): decode the number, validate every argument at the
//! boundary, act. Guest pointers are guest-physical and reach host memory only through
//! `GuestMemory::slice`; a bad pointer or an overflowing length is `-EFAULT` and the VM keeps running.
#![forbid(unsafe_code)]

use libvmm_abi::{Errno, Hypercall, ABI_VERSION, CLOCK_MONOTONIC, CLOCK_REALTIME};

use crate::vm::{Platform, StopReason, Vm};

/// What a hypercall did.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Return this value to the guest.
    Return(i64),
    /// Stop the VM.
    Stop(StopReason),
}

pub fn dispatch<P: Platform>(nr: u64, args: [u64; 4], vm: &mut Vm<'_, P>) -> Outcome {
    let Some(call) = Hypercall::from_raw(nr) else {
        return Outcome::Return(Errno::Nosys.as_result());
    };
    match call {
        Hypercall::Version => Outcome::Return(ABI_VERSION as i64),
        Hypercall::Write => Outcome::Return(write(args[0], args[1], args[2], vm)),
        Hypercall::Exit => Outcome::Stop(StopReason::PayloadExit(args[0] as i32 as i64)),
        Hypercall::Abort => Outcome::Stop(StopReason::PayloadAbort),
        Hypercall::Clock => Outcome::Return(match args[0] {
            CLOCK_REALTIME | CLOCK_MONOTONIC => match vm.platform.clock_ns(args[0]) {
                Some(ns) => (ns & (i64::MAX as u64)) as i64,
                None => Errno::Inval.as_result(),
            },
            _ => Errno::Inval.as_result(),
        }),
        Hypercall::Nop => Outcome::Return(0),
        Hypercall::ExitCount => Outcome::Return((vm.exits & (i64::MAX as u64)) as i64),
        Hypercall::Entropy => Outcome::Return(match vm.platform.entropy() {
            Some(v) => (v & (i64::MAX as u64)) as i64,
            None => Errno::Nosys.as_result(),
        }),
        #[allow(unreachable_patterns)]
        _ => Outcome::Return(Errno::Nosys.as_result()),
    }
}

// Out of line: its chunk buffer would otherwise sit in the run loop's frame (measured: RISC-V's null
// hypercall and SBI round trips grew by 6 and 3 emulated instructions with it inlined).
#[inline(never)]
fn write<P: Platform>(fd: u64, gpa: u64, len: u64, vm: &mut Vm<'_, P>) -> i64 {
    if fd != 1 && fd != 2 {
        return Errno::Badf.as_result();
    }
    // A buffer in memory the guest never touched reads as zeros, never as what the host left there.
    vm.map.zero_stale(&mut vm.mem, gpa, len);
    let mem = vm.mem;
    let con = vm.platform.console();
    // One guest write at a time across CPUs: a payload's line written in one call arrives whole.
    let _line = crate::console::LineLock::acquire();
    match mem.for_each_chunk(gpa, len, |c| embedded_io::Write::write_all(con, c)) {
        Err(_) => Errno::Fault.as_result(),
        Ok(Ok(())) => len as i64,
        Ok(Err(_)) => Errno::Io.as_result(),
    }
}
