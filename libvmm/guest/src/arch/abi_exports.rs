//! The `sys_*` symbols hermit-abi declares (`extern "C"` with `link_name = "sys_*"`), exported unmangled
//! so a payload's hermit-abi calls link against this runtime.
//!
//! They live in `arch/` because exporting an unmangled symbol is unsafe code (rustc's `unsafe_code` lint
//! flags every `#[no_mangle]` item: the name could clash with, and silently replace, another symbol), and
//! `sys_clock_gettime` writes through the pointer its C caller passes. Each export only forwards to the
//! safe implementation in `hermit.rs`, which is `#![forbid(unsafe_code)]`.
use hermit_abi::{clockid_t, pid_t, timespec};

use crate::hermit;

#[no_mangle]
pub extern "C" fn sys_write(fd: i32, buf: *const u8, len: usize) -> isize {
    hermit::write(fd, buf, len)
}

#[no_mangle]
pub extern "C" fn sys_read(fd: i32, buf: *mut u8, len: usize) -> isize {
    hermit::read(fd, buf, len)
}

#[no_mangle]
pub extern "C" fn sys_exit(status: i32) -> ! {
    hermit::exit(status)
}

#[no_mangle]
pub extern "C" fn sys_abort() -> ! {
    hermit::abort()
}

#[no_mangle]
pub extern "C" fn sys_getpid() -> pid_t {
    hermit::getpid()
}

/// # Safety
/// `tp` must be null or valid for a write of a `timespec`, as hermit-abi requires.
#[no_mangle]
pub unsafe extern "C" fn sys_clock_gettime(clock: clockid_t, tp: *mut timespec) -> i32 {
    if tp.is_null() {
        return hermit::EINVAL;
    }
    match hermit::clock_gettime(clock) {
        Ok(t) => {
            // SAFETY: checked non-null; validity for a write is the caller's contract (above).
            unsafe { tp.write(t) };
            0
        }
        Err(e) => e,
    }
}

#[no_mangle]
pub extern "C" fn sys_usleep(usecs: u64) {
    hermit::usleep(usecs)
}
