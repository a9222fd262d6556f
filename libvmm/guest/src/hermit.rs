//! The hermit-abi system calls a libvmm payload can make, each a libvmm hypercall. hermit-abi declares
//! them (`extern "C"` with `link_name = "sys_*"`); these definitions satisfy the linker.
use hermit_abi::{clockid_t, pid_t, timespec};
use libvmm_abi::{Errno, Hypercall};

use crate::hypercall;

#[no_mangle]
pub extern "C" fn sys_write(fd: i32, buf: *const u8, len: usize) -> isize {
    hypercall(
        Hypercall::Write,
        [fd as u32 as u64, buf as u64, len as u64, 0],
    ) as isize
}

/// There is no input device: reads return end-of-file.
#[no_mangle]
pub extern "C" fn sys_read(_fd: i32, _buf: *mut u8, _len: usize) -> isize {
    0
}

#[no_mangle]
pub extern "C" fn sys_exit(status: i32) -> ! {
    crate::exit(status)
}

#[no_mangle]
pub extern "C" fn sys_abort() -> ! {
    hypercall(Hypercall::Abort, [0; 4]);
    crate::arch::halt_forever()
}

#[no_mangle]
pub extern "C" fn sys_getpid() -> pid_t {
    0
}

/// # Safety
/// `tp` must be valid for a write of a `timespec`, as hermit-abi requires.
#[no_mangle]
pub unsafe extern "C" fn sys_clock_gettime(clock: clockid_t, tp: *mut timespec) -> i32 {
    if tp.is_null() {
        return -(Errno::Inval as i32);
    }
    let ns = hypercall(Hypercall::Clock, [clock as u32 as u64, 0, 0, 0]);
    if ns < 0 {
        return ns as i32;
    }
    // SAFETY: checked non-null; validity is the caller's contract.
    unsafe {
        tp.write(timespec {
            tv_sec: ns / 1_000_000_000,
            tv_nsec: (ns % 1_000_000_000) as i32,
        });
    }
    0
}

/// Busy-waits on the monotonic clock (there is no timer interrupt to sleep on).
#[no_mangle]
pub extern "C" fn sys_usleep(usecs: u64) {
    let start = hypercall(Hypercall::Clock, [libvmm_abi::CLOCK_MONOTONIC, 0, 0, 0]);
    if start < 0 {
        return;
    }
    let end = start.saturating_add((usecs as i64).saturating_mul(1000));
    while hypercall(Hypercall::Clock, [libvmm_abi::CLOCK_MONOTONIC, 0, 0, 0]) < end {}
}
