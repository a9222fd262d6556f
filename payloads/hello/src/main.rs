//! The smallest useful payload: greets through hermit-abi's `write`, reads a clock, exits 0.
#![no_std]
#![no_main]

use libvmm_guest::hermit_abi::{self, timespec, CLOCK_MONOTONIC};

libvmm_guest::entry!(main);

fn main() -> i32 {
    let backend = libvmm_guest::backend_name();
    let greeting = b"Hello from a libvmm guest! ";
    // SAFETY: a valid buffer and its length.
    unsafe { hermit_abi::write(1, greeting.as_ptr(), greeting.len()) };
    libvmm_guest::println!("This payload runs deprivileged on {backend}.");

    let mut t = timespec::default();
    // SAFETY: `t` is a valid timespec.
    let rc = unsafe { hermit_abi::clock_gettime(CLOCK_MONOTONIC, &mut t) };
    if rc == 0 {
        libvmm_guest::println!(
            "hello: monotonic clock reads {}.{:09} s",
            t.tv_sec,
            t.tv_nsec
        );
    } else {
        libvmm_guest::println!("hello: no clock ({rc})");
    }
    0
}
