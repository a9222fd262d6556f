//! Policy: what the guest sees and may do. Backends only translate; every decision is made here, once,
//! for all vendors (the design notes' rule: "a backend never decides policy").
#![forbid(unsafe_code)]

pub(crate) mod cpuid;
pub(crate) mod hypercall;
pub(crate) mod io;
pub(crate) mod msr;
pub(crate) mod sbi;
