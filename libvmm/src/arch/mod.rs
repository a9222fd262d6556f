//! The bottom layer: instruction wrappers and raw-pointer primitives, nothing else. Each architecture
//! directory wraps its instructions (CPUID, MSRs, CSRs, VMRUN, VMREAD, SEAMCALL, the world switches, the
//! console and exit devices) in small safe functions with a `SAFETY:` note on every `unsafe` block, and
//! hands out static storage once ([`take_once`]). Everything above is safe code (`#![forbid(unsafe_code)]`).
//!
//! Import rule: `arch` imports nothing from the backends (`svm`, `vmx`, `tdx`, `riscv`), the policies,
//! the run loop or `boot`; it may use the vocabularies below them (`x86`, `config`, `console`).
#![allow(unsafe_code)]

pub(crate) mod shared;
pub(crate) mod take_once;

#[cfg_attr(target_arch = "x86_64", allow(unused_imports))] // some are RISC-V's only
pub use shared::{copy_from_guest, copy_to_guest, fill_guest, share_bytes, Published, SpinLock};

#[cfg(target_arch = "riscv64")]
pub(crate) mod riscv64;
#[cfg(target_arch = "x86_64")]
pub(crate) mod x86_64;

extern "Rust" {
    /// Defined by the image crate through [`crate::image!`].
    static LIBVMM_PAYLOAD: crate::Payload;
}

/// The payload the image crate embedded.
pub fn payload() -> &'static crate::Payload {
    // SAFETY: the image crate defines this static once (`image!`); it is immutable and only read.
    unsafe { &LIBVMM_PAYLOAD }
}

/// The guest's memory window as bytes, handed out once. The caller has checked that
/// `base..base + len` is RAM of this machine outside the VMM image, its stacks and the boot data.
pub fn guest_window(base: u64, len: u64) -> Option<&'static mut [u8]> {
    static TAKEN: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(false);
    if TAKEN.swap(true, core::sync::atomic::Ordering::AcqRel) {
        return None;
    }
    // SAFETY: the window is RAM the VMM does not otherwise use (checked by the caller against the
    // loader's memory map / device tree and the VMM's own addresses) and the flag above makes this the
    // only reference ever created to it.
    Some(unsafe { core::slice::from_raw_parts_mut(base as *mut u8, len as usize) })
}
