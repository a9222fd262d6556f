//! Static storage handed out once: the VMM's control blocks, tables and windows live in `.bss` (no heap),
//! and each is borrowed mutably exactly once, by whoever brings its backend up. This is the one place
//! that turns a `static` into a `&'static mut`.
// The TDX image hands out no backend storage (it runs no guest).
#![cfg_attr(feature = "tdx", allow(dead_code))]

use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicBool, Ordering};

/// A value in static storage that [`TakeOnce::take`] hands out at most once.
pub struct TakeOnce<T> {
    taken: AtomicBool,
    value: UnsafeCell<T>,
}

// SAFETY: the value is reached only through `take`, which the atomic flag lets succeed once; after that
// the one `&'static mut` is the only access, so sharing the cell between CPUs cannot alias it.
unsafe impl<T: Send> Sync for TakeOnce<T> {}

impl<T> TakeOnce<T> {
    /// A cell holding `value` (a `const` all-zero value puts the static in `.bss`).
    pub const fn new(value: T) -> Self {
        Self {
            taken: AtomicBool::new(false),
            value: UnsafeCell::new(value),
        }
    }

    /// The value, the first time; `None` ever after.
    // A `&'static mut` from a shared `&'static self` is the point: the flag makes it unique.
    #[allow(clippy::mut_from_ref)]
    pub fn take(&'static self) -> Option<&'static mut T> {
        if self.taken.swap(true, Ordering::AcqRel) {
            return None;
        }
        // SAFETY: the swap above returned false exactly once, so this is the only reference ever made.
        Some(unsafe { &mut *self.value.get() })
    }
}
