//! Portable raw-pointer primitives (built for the host tests too, unlike the rest of `arch`).
#![allow(unsafe_code)]

/// The same bytes as atomics: guest memory is shared by every vCPU (each on its own CPU) and by the
/// guest itself, so the VMM never holds a plain `&[u8]`/`&mut [u8]` to it once CPUs run concurrently
/// (`guest_mem::GuestMemory` reads and writes it through these, byte by byte, relaxed).
pub fn share_bytes(bytes: &mut [u8]) -> &[core::sync::atomic::AtomicU8] {
    let (ptr, len) = (bytes.as_mut_ptr(), bytes.len());
    // SAFETY: `AtomicU8` has the size and alignment of `u8` (core documents it), the exclusive borrow of
    // `bytes` is given up for the returned one (same lifetime), so nothing else reaches these bytes
    // through a non-atomic Rust reference meanwhile.
    unsafe { core::slice::from_raw_parts(ptr as *const core::sync::atomic::AtomicU8, len) }
}
