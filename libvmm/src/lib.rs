//! libvmm: a library VMM. One static image links this library with one payload; at boot the library
//! takes the CPU, turns on hardware virtualization and runs the payload deprivileged, as a guest behind
//! nested page tables that map the payload's memory and nothing else.
//!
//! The flow, one direction:
//! ```text
//! boot (PVH / multiboot2 / OpenSBI) -> platform facts (memory map, CPU features, DTB)
//!   -> options (cmdline, parsed once) -> guest memory + payload -> backend bring-up (SVM | VMX | TDX |
//!   RISC-V H, chosen at compile time by a cargo feature) -> vcpu::run (one generic loop)
//!   -> vendor exit -> exit::Exit -> policy -> Reply or Stop -> stop line
//! ```
//! Layers, top to bottom (after Linux KVM's split of generic code and vendor modules behind one ops
//! table; here a trait resolved at compile time, so no vtable sits on the exit path):
//! - `boot`: the composition root: one skeleton plus a small machine per architecture; the panic
//!   handlers and the stop line.
//! - `vcpu`: the one generic run loop; `policy`: what the guest is answered (CPUID, MSRs, I/O,
//!   hypercalls, SBI); `vm`: the VM state, host services and stop reasons both use.
//! - `svm`, `vmx`, `tdx`, `riscv`: vendor backends, each in the same files (`mod.rs`, `decode.rs`,
//!   `vcpu.rs`, `hw.rs`, extras by name). They translate; they never decide policy.
//! - Vocabularies below them: `exit`, `backend`, `guest_mem`, `cmdline`, `config`, `console`, `x86`.
//! - `arch`: instruction wrappers and raw-pointer primitives, the only place with `unsafe` (each block
//!   with a `SAFETY:` note); it imports nothing above it.
//!
//! Every module outside `arch` is `#![forbid(unsafe_code)]` (`boot` is `deny`: its entry symbols need
//! `#[no_mangle]`).
//!
//! The public surface is small: [`Payload`] and the [`image!`] macro for the image crate, the
//! re-exported ABI ([`abi`]) for payload authors, and [`config`]; `cargo doc` shows nothing else. An image
//! crate needs exactly this:
//! ```no_run
//! libvmm::image!(libvmm::Payload { name: "hello", elf: &[] });
//! ```
//! Everything else is `pub(crate)`: the Rust form of exporting KVM internals to its vendor modules
//! only. `tests/public_surface.rs` proves it from outside: a crate depending on libvmm names this
//! surface and compiles, and each internal path it names (`svm`, `vmx`, `riscv`, `vcpu`, `policy`,
//! `x86`, `testing`) fails with rustc's "module is private" (E0603) and no other error. (The TDX backend
//! is public only with the `tdx-sim` feature, for its model-based integration tests and the DPAMT
//! bench; images never enable it.)
#![cfg_attr(not(test), no_std)]
#![deny(unsafe_op_in_unsafe_fn)]
// Dead code is judged in every build: the four images (clippy per backend) and the unit tests (host
// clippy, all targets). What only the boot path uses is `#[cfg(target_os = "none")]`; what only tests use
// lives in `testing/` or under `#[cfg(test)]`. The one build with a standing allow is the fuzz targets'
// (feature `fuzzing`, not a test build): it compiles the parser-bearing modules without the boot path
// that uses the rest of them, so the allow sits on exactly those modules below, with that reason.

pub use libvmm_abi as abi;

// The fuzz targets' entry points (host only): safe functions that take bytes and drive the real code.
#[cfg(all(feature = "fuzzing", target_os = "none"))]
compile_error!("the `fuzzing` feature is for the host fuzz targets, never for an image");
#[cfg(feature = "fuzzing")]
#[macro_use]
extern crate std;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;

// A host build that is not a test build is the dependency of the TDX integration tests and the DPAMT
// bench: it contains `tdx` (with `tdx-sim`) and what that needs, nothing else, so every other module is
// compiled only where something uses it (the images and the unit tests) or where the `fuzzing` feature
// asks for it (the host fuzz targets, which drive the same modules the unit tests do).
#[cfg(any(test, feature = "fuzzing", target_os = "none"))]
pub(crate) mod backend;
#[cfg(all(
    target_os = "none",
    any(target_arch = "x86_64", target_arch = "riscv64")
))]
pub(crate) mod boot;
#[cfg(any(test, feature = "fuzzing", target_os = "none"))]
pub(crate) mod cmdline;
pub mod config;
#[cfg(any(test, feature = "fuzzing", target_os = "none"))]
// fuzzing: the fuzz targets drive this module's parsers, not the boot path that uses the rest.
#[cfg_attr(all(feature = "fuzzing", not(test)), allow(dead_code))]
pub(crate) mod console;
#[cfg(any(test, target_os = "none"))]
pub(crate) mod cpus;
#[cfg(any(test, feature = "fuzzing", target_os = "none"))]
pub(crate) mod exit;
#[cfg(any(test, feature = "fuzzing", target_os = "none"))]
pub(crate) mod guest_mem;
#[cfg(any(test, feature = "fuzzing", target_os = "none"))]
// fuzzing: the fuzz targets drive this module's parsers, not the boot path that uses the rest.
#[cfg_attr(all(feature = "fuzzing", not(test)), allow(dead_code))]
pub(crate) mod loader;
#[cfg(any(test, feature = "fuzzing", target_os = "none"))]
pub(crate) mod policy;
#[cfg(any(test, feature = "fuzzing"))]
// fuzzing: the fuzz targets use some of the doubles (the model platform), the unit tests all of them.
#[cfg_attr(all(feature = "fuzzing", not(test)), allow(dead_code))]
pub(crate) mod testing;
// The TDX image stops at SEAM-module detection (TD entry on hardware is not implemented): it runs no
// guest, so it contains no run loop.
#[cfg(any(test, feature = "fuzzing", target_os = "none"))]
// The fuzzing build drives the SBI policy's SMP calls without a boot path: the per-vCPU exit counts
// and the parked flags are read by the stop line only.
#[cfg_attr(all(feature = "fuzzing", not(test)), allow(dead_code))]
pub(crate) mod smp;
#[cfg(any(
    test,
    feature = "fuzzing",
    all(target_os = "none", not(feature = "tdx"))
))]
pub(crate) mod vcpu;
#[cfg(any(test, feature = "fuzzing", target_os = "none"))]
// fuzzing: the fuzz targets drive this module's parsers, not the boot path that uses the rest.
#[cfg_attr(all(feature = "fuzzing", not(test)), allow(dead_code))]
pub(crate) mod vm;
// fuzzing: the fuzz targets drive this module's parsers, not the boot path that uses the rest.
#[cfg_attr(all(feature = "fuzzing", not(test)), allow(dead_code))]
pub(crate) mod x86;

#[cfg(any(
    test,
    feature = "fuzzing",
    all(target_os = "none", target_arch = "riscv64")
))]
// fuzzing: the fuzz targets drive this module's parsers, not the boot path that uses the rest.
#[cfg_attr(all(feature = "fuzzing", not(test)), allow(dead_code))]
pub(crate) mod riscv;
#[cfg(any(test, feature = "fuzzing", feature = "svm"))]
pub(crate) mod svm;
#[cfg(all(
    feature = "tdx-sim",
    any(not(target_os = "none"), target_arch = "x86_64")
))]
pub mod tdx;
#[cfg(all(not(feature = "tdx-sim"), any(test, feature = "tdx")))]
pub(crate) mod tdx;
#[cfg(any(test, feature = "fuzzing", feature = "vmx"))]
pub(crate) mod vmx;

#[cfg(all(
    target_os = "none",
    any(target_arch = "x86_64", target_arch = "riscv64")
))]
pub(crate) mod arch;
/// On the host (tests, fuzzing, models) only the portable primitives of `arch` exist.
#[cfg(not(target_os = "none"))]
#[allow(unused_imports, dead_code)]
pub(crate) mod arch {
    pub(crate) mod shared;
    pub use shared::{copy_to_guest, fill_guest, share_bytes, Published};
}

/// A payload as the image crate embeds it: its ELF file, unchanged (a static PIE or an executable linked
/// at its load address). The VMM parses and validates it at boot (`loader::elf_image`): its loadable
/// segments are mapped with their own rights (W^X), a PIE is placed at the window's payload offset and
/// its relative relocations applied; a malformed ELF stops the boot with code 102 naming the rule.
#[derive(Clone, Copy)]
pub struct Payload {
    /// Crate name of the payload (printed at boot).
    pub name: &'static str,
    /// The ELF file.
    pub elf: &'static [u8],
}

/// One loadable segment of a payload, as placed in guest memory: `[gpa, gpa + mem_size)` with the ELF
/// `p_flags` rights (from its program header, read at boot). The loader's, not the image crate's.
#[cfg(any(test, feature = "fuzzing", target_os = "none"))]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct PayloadSegment {
    /// Guest-physical start; its page may not be shared with another segment.
    pub gpa: u64,
    /// Bytes in memory (file bytes plus zeroed bss); the last page is rounded up.
    pub mem_size: u64,
    /// ELF `p_flags`: [`PayloadSegment::R`], [`PayloadSegment::W`], [`PayloadSegment::X`].
    pub flags: u32,
}

#[cfg(any(test, feature = "fuzzing", target_os = "none"))]
impl PayloadSegment {
    /// ELF `PF_X`.
    pub const X: u32 = 1;
    /// ELF `PF_W`.
    pub const W: u32 = 2;
    /// ELF `PF_R`.
    pub const R: u32 = 4;
}

/// Declares the payload of an image. Used once, by the image crate (`linker/`).
#[macro_export]
macro_rules! image {
    ($payload:expr) => {
        #[no_mangle]
        pub static LIBVMM_PAYLOAD: $crate::Payload = $payload;
    };
}
