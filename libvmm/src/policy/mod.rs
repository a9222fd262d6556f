//! Policy: what the guest sees and may do. Backends only translate; every decision is made here, once,
//! for all vendors (the design notes' rule: "a backend never decides policy").
#![forbid(unsafe_code)]
// The TDX image runs no guest (it stops at SEAM-module detection), so only the loader's use of `cpuid`
// remains there; every other image uses all of this.
#![cfg_attr(all(target_os = "none", feature = "tdx"), allow(dead_code))]

pub(crate) mod apic;
pub(crate) mod cpuid;
pub(crate) mod cr;
pub(crate) mod hypercall;
pub(crate) mod io;
#[cfg(target_arch = "x86_64")]
pub(crate) mod mmio;
pub(crate) mod msr;
pub(crate) mod sbi;
