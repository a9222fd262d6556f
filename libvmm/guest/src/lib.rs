//! The guest-side runtime of a libvmm payload.
//!
//! A payload is an ordinary `no_std` binary crate with this one dependency and one macro:
//! ```ignore
//! #![no_std]
//! #![no_main]
//! libvmm_guest::entry!(main);
//! fn main() -> i32 {
//!     libvmm_guest::println!("hello");
//!     0
//! }
//! ```
//! The payload talks to the world through hermit-abi ([`hermit_abi`] is re-exported): this crate
//! provides the `sys_*` symbols hermit-abi declares (`sys_write`, `sys_exit`, `sys_abort`,
//! `sys_clock_gettime`, `sys_getpid`, `sys_read`, `sys_usleep`) as libvmm hypercalls (see
//! `docs/hypercall-abi.md`). It also sets up the payload's exception handlers, lets a payload install its
//! own for a vector or cause ([`set_trap_handler`]), and offers `arch::probe`, which runs one instruction
//! and reports the exception it raised, for tests of what the VMM lets a guest do. Guest virtual
//! addresses equal guest-physical ones (identity paging on x86, bare mode on RISC-V), so pointers go to
//! the VMM unchanged.
//!
//! `unsafe` code lives in [`arch`] only (see its documentation for what and why); every other module is
//! `#![forbid(unsafe_code)]`, and this crate root denies it.
#![no_std]
#![deny(unsafe_code)]
// The host build of the unit tests (`cargo test -p libvmm-guest --lib`) leaves the entry and the exports
// unused.
#![cfg_attr(test, allow(dead_code, unused_imports))]

pub use hermit_abi;
pub use libvmm_abi as abi;

#[allow(unsafe_code)]
pub mod arch;
#[cfg(any(test, target_os = "hermit"))]
pub mod fs;
mod hermit;
pub mod io;
pub mod irq;
#[cfg(target_os = "hermit")]
mod rt;
#[cfg(target_os = "hermit")]
mod sched;
pub mod smp;
pub mod time;
pub mod trap;

pub use trap::{
    clear_trap_handler, set_trap_handler, Trap, TrapAction, TrapError, TrapFrame, TrapHandler,
};

use core::sync::atomic::AtomicU64;
use libvmm_abi::{BootInfo, Hypercall, BOOT_INFO_MAGIC};

/// The boot-info address the VMM passed at entry (0: none); stored once by `arch`'s entry, before
/// anything reads it.
static BOOT_INFO: AtomicU64 = AtomicU64::new(0);

/// The boot info the VMM wrote, if valid.
pub fn boot_info() -> Option<BootInfo> {
    let bi = BootInfo::from_bytes(&arch::boot_info_bytes()?);
    (bi.magic == BOOT_INFO_MAGIC).then_some(bi)
}

/// The command line the image was booted with (empty if none).
pub fn cmdline() -> &'static str {
    match boot_info() {
        Some(bi) => core::str::from_utf8(arch::cmdline_bytes(&bi)).unwrap_or(""),
        None => "",
    }
}

/// The value of `key=value` on the command line.
pub fn cmdline_value(key: &str) -> Option<&'static str> {
    cmdline()
        .split_ascii_whitespace()
        .find_map(|w| w.strip_prefix(key)?.strip_prefix('='))
}

/// Name of the backend running this payload.
pub fn backend_name() -> &'static str {
    boot_info()
        .and_then(|b| libvmm_abi::BackendId::from_raw(b.backend))
        .map(|b| b.name())
        .unwrap_or("unknown")
}

/// A raw libvmm hypercall: `nr` with up to four arguments; the result is `>= 0` or a negated errno.
pub fn hypercall(nr: Hypercall, args: [u64; 4]) -> i64 {
    arch::hypercall(nr as u64, args)
}

/// A hypercall with a raw, possibly invalid number (for tests of the VMM's decoding).
pub fn hypercall_raw(nr: u64, args: [u64; 4]) -> i64 {
    arch::hypercall(nr, args)
}

/// Ends the payload with `status`.
pub fn exit(status: i32) -> ! {
    arch::hypercall(Hypercall::Exit as u64, [status as u32 as u64, 0, 0, 0]);
    arch::halt_forever()
}

/// Called by the architecture's entry once it has recorded the boot-info address.
pub(crate) fn start() -> ! {
    arch::init(boot_info().map(|b| b.hypercall).unwrap_or(0));
    if let Some(bi) = boot_info() {
        if bi.abi_version >> 16 != libvmm_abi::ABI_MAJOR {
            println!(
                "payload: built for libvmm ABI {}, VMM speaks {:#x}",
                libvmm_abi::ABI_MAJOR,
                bi.abi_version
            );
            exit(libvmm_abi::stop::PAYLOAD_MAX as i32);
        }
    }
    #[cfg(target_os = "hermit")]
    rt::start();
    #[cfg(not(target_os = "hermit"))]
    exit(arch::call_payload_main())
}

/// Declares the payload's main function: `fn main() -> i32`, the exit status.
#[macro_export]
macro_rules! entry {
    ($main:path) => {
        #[no_mangle]
        fn __libvmm_payload_main() -> i32 {
            let f: fn() -> i32 = $main;
            f()
        }
    };
}

#[cfg(all(not(test), target_os = "none"))]
#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    println!("payload panicked: {}", info);
    hermit::abort()
}
