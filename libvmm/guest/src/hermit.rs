//! The hermit-abi system calls a libvmm payload can make, each a libvmm hypercall. hermit-abi declares
//! them (`extern "C"` with `link_name = "sys_*"`); `arch/abi_exports.rs` exports the `sys_*` symbols
//! that satisfy the linker, each forwarding to the function of the same name here.
#![forbid(unsafe_code)]

use hermit_abi::{clockid_t, pid_t, timespec};
use libvmm_abi::{Errno, Hypercall};

use crate::hypercall;

/// `-EINVAL`, as hermit-abi's calls return it.
pub(crate) const EINVAL: i32 = -(Errno::Inval as i32);

/// The pointer goes to the VMM as a number: the VMM checks the whole buffer lies in guest memory.
pub(crate) fn write(fd: i32, buf: *const u8, len: usize) -> isize {
    hypercall(
        Hypercall::Write,
        [fd as u32 as u64, buf as u64, len as u64, 0],
    ) as isize
}

/// There is no input device: reads return end-of-file.
pub(crate) fn read(_fd: i32, _buf: *mut u8, _len: usize) -> isize {
    0
}

pub(crate) fn exit(status: i32) -> ! {
    crate::exit(status)
}

pub(crate) fn abort() -> ! {
    hypercall(Hypercall::Abort, [0; 4]);
    crate::arch::halt_forever()
}

pub(crate) fn getpid() -> pid_t {
    0
}

/// The clock's time, or a negated errno.
pub(crate) fn clock_gettime(clock: clockid_t) -> Result<timespec, i32> {
    let ns = hypercall(Hypercall::Clock, [clock as u32 as u64, 0, 0, 0]);
    if ns < 0 {
        return Err(ns as i32);
    }
    Ok(timespec {
        tv_sec: ns / 1_000_000_000,
        tv_nsec: (ns % 1_000_000_000) as i32,
    })
}

/// Sleeps on the timer (x86 HLT on the virtual x2APIC's TSC deadline, RISC-V WFI on SBI TIME): see
/// [`crate::time`]. `std` payloads sleep through the scheduler instead (`sched::usleep`), which runs
/// other threads meanwhile.
#[cfg_attr(target_os = "hermit", allow(dead_code))]
pub(crate) fn usleep(usecs: u64) {
    crate::time::sleep_ns(usecs.saturating_mul(1000));
}

/// The monotonic clock in nanoseconds (0 when the VMM has no clock).
#[cfg(target_os = "hermit")]
pub(crate) fn monotonic_ns() -> u64 {
    hypercall(Hypercall::Clock, [libvmm_abi::CLOCK_MONOTONIC, 0, 0, 0]).max(0) as u64
}
