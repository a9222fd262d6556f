//! The only place with inline assembly and raw pointers. Each architecture directory wraps its
//! instructions in small safe functions; everything above it is safe code.
#[cfg(target_arch = "x86_64")]
pub(crate) mod x86_64;
