//! Portable raw-pointer primitives (built for the host tests too, unlike the rest of `arch`).
#![allow(unsafe_code)]

/// The same bytes as atomics: guest memory is shared by every vCPU (each on its own CPU) and by the
/// guest itself, so the VMM never holds a plain `&[u8]`/`&mut [u8]` to it once CPUs run concurrently
/// (`guest_mem::GuestMemory` reads and writes it through [`copy_from_guest`], [`copy_to_guest`] and
/// [`fill_guest`]).
pub fn share_bytes(bytes: &mut [u8]) -> &[core::sync::atomic::AtomicU8] {
    let (ptr, len) = (bytes.as_mut_ptr(), bytes.len());
    // SAFETY: `AtomicU8` has the size and alignment of `u8` (core documents it), the exclusive borrow of
    // `bytes` is given up for the returned one (same lifetime), so nothing else reaches these bytes
    // through a non-atomic Rust reference meanwhile.
    unsafe { core::slice::from_raw_parts(ptr as *const core::sync::atomic::AtomicU8, len) }
}

/// Copies `src` into guest memory `dst` (same length) in bulk, and [`fill_guest`] likewise: the
/// loader's megabytes would cost one emulated store per byte as relaxed atomic stores (the boot figure
/// grew by a fifth). Guest memory is memory the guest itself writes at any time from every vCPU,
/// outside Rust's model: the VMM never holds a reference to its bytes, only these copies in and
/// out; what two CPUs writing the same guest bytes at once leave there is the guests' business
/// (rust-vmm's `vm-memory` copies guest memory the same way).
pub fn copy_to_guest(dst: &[core::sync::atomic::AtomicU8], src: &[u8]) {
    let n = dst.len().min(src.len());
    // SAFETY: `dst` is `n` valid, writable bytes (AtomicU8 is an UnsafeCell<u8>, so writing through a
    // pointer from a shared reference is allowed) that cannot overlap `src` (a VMM buffer: guest memory
    // is never borrowed as `&[u8]`); see the function's note for concurrent writers.
    unsafe { core::ptr::copy_nonoverlapping(src.as_ptr(), dst.as_ptr() as *mut u8, n) }
}

/// Copies guest memory `src` into the VMM buffer `dst` (same length) in bulk, the read half of
/// [`copy_to_guest`]: relaxed byte loads cost the instruction emulator about 500 emulated instructions
/// per emulated instruction (its fetch and page walks read tens of bytes): 2,740 instead of 2,226 for
/// a forced-emulated `add` on SVM (`cargo xtask bench`).
/// What a guest writes to those bytes meanwhile from another vCPU may or may not be seen, as with any
/// copy of memory another CPU writes (rust-vmm's `vm-memory` reads guest memory the same way).
pub fn copy_from_guest(dst: &mut [u8], src: &[core::sync::atomic::AtomicU8]) {
    let n = dst.len().min(src.len());
    // SAFETY: `src` is `n` valid bytes behind UnsafeCells (never borrowed as `&[u8]` or `&mut [u8]`
    // elsewhere), `dst` is a VMM buffer the `&mut` makes exclusive, so the two cannot overlap; see the
    // function's note for concurrent writers.
    unsafe { core::ptr::copy_nonoverlapping(src.as_ptr() as *const u8, dst.as_mut_ptr(), n) }
}

/// Fills guest memory `dst` with `byte` in bulk (see [`copy_to_guest`]); zeroes on RISC-V with
/// Zicboz's `cbo.zero` where the host has it (`riscv64::zero_guest`).
pub fn fill_guest(dst: &[core::sync::atomic::AtomicU8], byte: u8) {
    #[cfg(all(target_os = "none", target_arch = "riscv64"))]
    if byte == 0 && super::riscv64::zero_guest(dst) {
        return;
    }
    // SAFETY: as in `copy_to_guest`: `dst.len()` writable bytes behind UnsafeCells.
    unsafe { core::ptr::write_bytes(dst.as_ptr() as *mut u8, byte, dst.len()) }
}

use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicU8, Ordering};

/// A `Copy` value written once by one CPU and read by any CPU after that: how the boot CPU hands the
/// VM's shared facts (guest memory handle, memory map, backend set-up) to the CPUs that run the other
/// vCPUs. No lock: a state byte orders the one write before every read.
#[cfg_attr(target_arch = "x86_64", allow(dead_code))] // x86: no guest SMP yet
pub struct Published<T: Copy> {
    /// 0 empty, 1 being written, 2 readable.
    state: AtomicU8,
    value: UnsafeCell<Option<T>>,
}

// SAFETY: the value is written once, while `state` is 1 (only the CPU that moved it 0 -> 1 writes), and
// read only after `state` is 2 (Release/Acquire), when nobody writes it any more.
unsafe impl<T: Copy + Send> Sync for Published<T> {}

#[cfg_attr(target_arch = "x86_64", allow(dead_code))]
impl<T: Copy> Published<T> {
    pub const fn new() -> Self {
        Self {
            state: AtomicU8::new(0),
            value: UnsafeCell::new(None),
        }
    }

    /// Publishes `v`; `false` (and nothing changes) if a value was published before.
    pub fn set(&self, v: T) -> bool {
        if self
            .state
            .compare_exchange(0, 1, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            return false;
        }
        // SAFETY: state 1 is held by this CPU alone (the exchange above), and no reader touches the
        // value before state 2.
        unsafe { *self.value.get() = Some(v) };
        self.state.store(2, Ordering::Release);
        true
    }

    /// The published value, if any.
    pub fn get(&self) -> Option<T> {
        if self.state.load(Ordering::Acquire) != 2 {
            return None;
        }
        // SAFETY: state 2: written once before the Release store this Acquire load saw; never again.
        unsafe { *self.value.get() }
    }
}

impl<T: Copy> Default for Published<T> {
    fn default() -> Self {
        Self::new()
    }
}

/// A value several CPUs change in turn, one at a time: a spin lock (no heap, no OS). For what is rare
/// and short, such as the one VM's G-stage tables, which whichever vCPU first touches a block of guest
/// memory maps it into (zero on first touch, `lazy.rs`).
#[cfg_attr(target_arch = "x86_64", allow(dead_code))] // x86: no guest SMP yet
pub struct SpinLock<T> {
    locked: core::sync::atomic::AtomicBool,
    value: UnsafeCell<T>,
}

// SAFETY: the value is reached only inside `with`, while this CPU holds `locked` (taken with Acquire,
// given back with Release), so no two CPUs ever hold a reference to it at once.
unsafe impl<T: Send> Sync for SpinLock<T> {}

#[cfg_attr(target_arch = "x86_64", allow(dead_code))]
impl<T> SpinLock<T> {
    pub const fn new(value: T) -> Self {
        Self {
            locked: core::sync::atomic::AtomicBool::new(false),
            value: UnsafeCell::new(value),
        }
    }

    /// Runs `f` on the value with the lock held (spinning until it is free).
    pub fn with<R>(&self, f: impl FnOnce(&mut T) -> R) -> R {
        while self
            .locked
            .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            core::hint::spin_loop();
        }
        // SAFETY: this CPU holds the lock (the exchange above), so this is the only reference until
        // the store below; `f` cannot keep it (its lifetime ends with the call).
        let r = f(unsafe { &mut *self.value.get() });
        self.locked.store(false, Ordering::Release);
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_spin_lock_serialises_its_users() {
        static L: SpinLock<u64> = SpinLock::new(0);
        let ts: std::vec::Vec<_> = (0..4)
            .map(|_| {
                std::thread::spawn(|| {
                    for _ in 0..10_000 {
                        L.with(|v| *v = core::hint::black_box(*v) + 1);
                    }
                })
            })
            .collect();
        for t in ts {
            t.join().unwrap();
        }
        assert_eq!(L.with(|v| *v), 40_000);
    }

    #[test]
    fn published_once_and_read_everywhere() {
        static P: Published<(u64, u64)> = Published::new();
        assert_eq!(P.get(), None);
        assert!(P.set((1, 2)));
        assert!(!P.set((3, 4)));
        let t = std::thread::spawn(|| P.get());
        assert_eq!(t.join().unwrap(), Some((1, 2)));
    }
}
