//! Atomics and the one spin lock of the TDX code, switchable to loom's checked versions.
//!
//! Under `cfg(all(test, loom))` every atomic and the lock's spin come from `loom`, so the model-checking
//! test explores the real Dynamic PAMT protocol code, not a copy of it. Hand-written (instead of the
//! `spin` crate) because loom must see every access and spin iteration.
#![forbid(unsafe_code)]

#[cfg(not(all(test, loom)))]
pub(crate) use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
#[cfg(all(test, loom))]
pub(crate) use loom::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

#[cfg(all(any(test, feature = "tdx-sim"), not(all(test, loom))))]
pub(crate) use self::std_sync::Mutex;
/// Mutex for the std-only model (`tdx::sim`): loom's under loom, std's otherwise.
#[cfg(all(test, loom))]
pub(crate) use loom::sync::Mutex;
#[cfg(all(any(test, feature = "tdx-sim"), not(all(test, loom))))]
mod std_sync {
    extern crate std;
    pub(crate) use std::sync::Mutex;
}

/// One iteration of a busy-wait.
#[inline]
pub(crate) fn spin_hint() {
    #[cfg(all(test, loom))]
    loom::thread::yield_now();
    #[cfg(not(all(test, loom)))]
    core::hint::spin_loop();
}

/// A test-and-test-and-set spin lock that counts how often it was found held.
pub(crate) struct SpinLock {
    locked: AtomicBool,
    /// Acquisitions that found the lock held at least once.
    pub contended: AtomicU64,
}

pub(crate) struct SpinGuard<'a>(&'a SpinLock);

impl SpinLock {
    pub fn new() -> Self {
        Self {
            locked: AtomicBool::new(false),
            contended: AtomicU64::new(0),
        }
    }

    pub fn lock(&self) -> SpinGuard<'_> {
        let mut waited = false;
        while self
            .locked
            .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            if !waited {
                waited = true;
                self.contended.fetch_add(1, Ordering::Relaxed);
            }
            while self.locked.load(Ordering::Relaxed) {
                spin_hint();
            }
        }
        SpinGuard(self)
    }
}

impl Drop for SpinGuard<'_> {
    fn drop(&mut self) {
        self.0.locked.store(false, Ordering::Release);
    }
}
