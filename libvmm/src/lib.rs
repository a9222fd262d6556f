//! libvmm: a library VMM. One static image links this library with one payload; at boot the library
//! takes the CPU, turns on hardware virtualization and runs the payload deprivileged, as a guest behind
//! nested page tables that map the payload's memory and nothing else.
//!
//! The flow, one direction:
//! ```text
//! boot (PVH / multiboot2 / OpenSBI) -> platform facts (memory map, CPU features, DTB)
//!   -> backend bring-up (SVM | VMX | TDX | RISC-V H), chosen at compile time by a cargo feature
//!   -> guest memory + nested tables (only the payload's window is mapped)
//!   -> vcpu::run (one generic loop) -> vendor exit -> exit::Exit -> policy -> Reply or Stop
//! ```
//! Layering (after the Linux KVM split of generic code and vendor modules behind one ops table, here a
//! trait resolved at compile time, so no vtable sits on the exit path):
//! - `exit`, `backend`, `vcpu`, `policy`, `guest_mem`: generic, `#![forbid(unsafe_code)]`.
//! - `svm`, `vmx`, `tdx`, `riscv`: vendor backends. They translate; they never decide policy.
//! - `arch`: the only place with inline assembly and raw pointers, each block with a `SAFETY:` note.
//!
//! The public surface is small: [`Payload`] and the [`image!`] macro for the image crate, and the
//! re-exported ABI. Backend internals are `pub(crate)`.
#![cfg_attr(not(test), no_std)]
#![deny(unsafe_op_in_unsafe_fn)]
// On the host, libvmm is built for its tests and software models only; nothing there calls the boot
// path, so dead-code analysis is left to the bare-metal builds (which clippy checks per backend).
#![cfg_attr(not(target_os = "none"), allow(dead_code))]
// On RISC-V the x86-only parts of the generic vocabulary (CPUID/MSR/I/O exits, VMX/SVM instructions) are
// never constructed; the x86 builds check them.
#![cfg_attr(all(target_os = "none", target_arch = "riscv64"), allow(dead_code))]
// The TDX image stops at SEAM-module detection (no emulator here has one, and TD entry on hardware is
// not implemented), so the generic loop and policies it would drive are unused in that build only.
#![cfg_attr(feature = "tdx", allow(dead_code))]

pub use libvmm_abi as abi;

pub(crate) mod backend;
#[cfg(all(
    target_os = "none",
    any(target_arch = "x86_64", target_arch = "riscv64")
))]
pub(crate) mod boot;
pub(crate) mod cmdline;
pub mod config;
pub(crate) mod console;
pub(crate) mod exit;
pub(crate) mod guest_mem;
pub(crate) mod policy;
#[cfg(test)]
pub(crate) mod testing;
pub(crate) mod vcpu;
pub(crate) mod vm;

pub(crate) mod loader;
pub(crate) mod x86;

#[cfg(any(test, feature = "riscv", target_arch = "riscv64"))]
pub(crate) mod riscv;
#[cfg(any(test, not(target_os = "none"), target_arch = "x86_64"))]
pub mod svm;
#[cfg(any(test, not(target_os = "none"), target_arch = "x86_64"))]
pub mod tdx;
#[cfg(target_arch = "x86_64")]
pub(crate) mod vmx;

#[cfg(not(test))]
#[cfg(all(target_os = "none", target_arch = "x86_64"))]
const _: () = ();

#[cfg(all(
    target_os = "none",
    any(target_arch = "x86_64", target_arch = "riscv64")
))]
pub(crate) mod arch;

/// A payload as the image crate embeds it: a flat image loaded at `load_gpa` inside the guest window.
#[derive(Clone, Copy)]
pub struct Payload {
    /// Crate name of the payload (printed at boot).
    pub name: &'static str,
    /// Guest-physical load address of `bytes[0]`.
    pub load_gpa: u64,
    /// Guest-physical entry point.
    pub entry_gpa: u64,
    /// Bytes from `load_gpa` the payload occupies once loaded (file bytes plus zeroed bss).
    pub mem_size: u64,
    /// The file bytes.
    pub bytes: &'static [u8],
}

/// Declares the payload of an image. Used once, by the image crate (`linker/`).
#[macro_export]
macro_rules! image {
    ($payload:expr) => {
        #[no_mangle]
        pub static LIBVMM_PAYLOAD: $crate::Payload = $payload;
    };
}
