//! The payload-side architecture layer: entry, exception handling, the hypercall instruction.
#[cfg(target_arch = "x86_64")]
mod x86_64;
#[cfg(target_arch = "x86_64")]
pub use x86_64::*;
