//! Intel TDX backend, host side: built against the real SEAMCALL ABI, verified against a software model
//! of the TDX module (no machine or emulator here runs one).
//!
//! - [`errno`]: every status code, with the helpers callers need (success, busy + operand, entropy,
//!   invalid operand), as Linux's consolidated `tdx_errno.h`.
//! - [`seamcall`]: the one seam, trait [`seamcall::Seamcall`], implemented by the real instruction
//!   (`arch::x86_64::seamcall`, bare-metal builds) and by [`sim::SimModule`] (*simulated*, tests and the
//!   `tdx-sim` feature); typed `tdh::*` wrappers per leaf.
//! - [`tdmr`]: TDMRs and PAMT sizing (static, or the Dynamic PAMT bitmap).
//! - [`dpamt`]: Dynamic PAMT refcounts + global lock (install on first use, remove on last).
//! - [`pool`], [`table`]: the fixed heapless pools and records; no general heap.
//! - [`td`]: TD/vCPU set-up, S-EPT growth and AUG/ADD fault path, removal, teardown with reclaim.
//! - [`probe`]: TDX-module detection (CPUID, MTRRCAP, SEAMRR) before any SEAMCALL; `boot` (bare-metal
//!   x86_64 only) is the tdx image's entry: detect, and stop with the reason when there is no module.
//!
//! Everything here is `no_std` and allocation-free except [`sim`] (std, test/bench only).
//!
//! *Simulated*: no machine or emulator here runs a TDX module. The real SEAMCALL path is compiled into
//! the tdx image but only its detection step ever runs here (and stops: no SEAM); everything past it is
//! verified against [`sim::SimModule`], by host tests, a multi-threaded stress test, and a loom model
//! check of the Dynamic PAMT protocol (`loom_tests`, `RUSTFLAGS="--cfg loom"`).
#![forbid(unsafe_code)]
// The image runs only the detection step and TDH.SYS.* bring-up (no emulator here has a TDX module,
// and TD entry on hardware is not implemented); TD creation, S-EPT and Dynamic PAMT are exercised
// against `sim` by the host tests.
#![cfg_attr(all(target_os = "none", feature = "tdx"), allow(dead_code))]

pub mod dpamt;
pub mod errno;
pub mod pool;
pub mod probe;
pub mod seamcall;
pub(crate) mod sync;
pub mod table;
pub mod td;
pub mod tdmr;

#[cfg(any(test, feature = "tdx-sim"))]
pub mod sim;

#[cfg(all(target_os = "none", target_arch = "x86_64", feature = "tdx"))]
mod hw;
#[cfg(all(target_os = "none", target_arch = "x86_64", feature = "tdx"))]
pub(crate) use hw::boot;

#[cfg(all(test, loom))]
mod loom_tests;
