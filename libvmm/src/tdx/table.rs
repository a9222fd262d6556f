//! A fixed-capacity, lock-free (key → value) table: libvmm's record of the S-EPT pages and private
//! pages it gave a TD, filled concurrently by faulting vCPUs and drained single-threaded at teardown.
//!
//! Hand-written because it needs no lock and no unsafe: a slot is claimed by one compare-exchange of its
//! key from 0; the value is published after and read only by the claimer or at teardown (`&mut self`).
#![forbid(unsafe_code)]

use super::sync::{AtomicU64, Ordering};

/// The table is full.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TableFull;

pub struct Table<const T: usize> {
    keys: [AtomicU64; T],
    values: [AtomicU64; T],
}

impl<const T: usize> Default for Table<T> {
    fn default() -> Self {
        Self {
            keys: core::array::from_fn(|_| AtomicU64::new(0)),
            values: core::array::from_fn(|_| AtomicU64::new(0)),
        }
    }
}

impl<const T: usize> Table<T> {
    /// Keys must be non-zero. `Ok(false)` when the key was already present.
    pub fn insert(&self, key: u64, value: u64) -> Result<bool, TableFull> {
        for i in 0..T {
            match self.keys[i].compare_exchange(0, key, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => {
                    self.values[i].store(value, Ordering::Release);
                    return Ok(true);
                }
                Err(k) if k == key => return Ok(false),
                Err(_) => {}
            }
        }
        Err(TableFull)
    }
    pub fn contains(&self, key: u64) -> bool {
        self.keys.iter().any(|k| k.load(Ordering::Acquire) == key)
    }
    pub fn get(&self, key: u64) -> Option<u64> {
        (0..T)
            .find(|&i| self.keys[i].load(Ordering::Acquire) == key)
            .map(|i| self.values[i].load(Ordering::Acquire))
    }
    /// Removes `key`. Callers never insert and remove one key concurrently (the module rejects a second
    /// mapping of a GPA), so a freed slot can be reused.
    pub fn remove(&self, key: u64) -> Option<u64> {
        let i = (0..T).find(|&i| self.keys[i].load(Ordering::Acquire) == key)?;
        let v = self.values[i].load(Ordering::Acquire);
        self.keys[i]
            .compare_exchange(key, 0, Ordering::AcqRel, Ordering::Acquire)
            .ok()
            .map(|_| v)
    }
    /// Moves live values into `out` until it is full, removing them from the table.
    pub fn take_some<const N: usize>(&mut self, out: &mut heapless::Vec<u64, N>) {
        for i in 0..T {
            if out.is_full() {
                return;
            }
            if self.keys[i].swap(0, Ordering::AcqRel) != 0 {
                let _ = out.push(self.values[i].load(Ordering::Acquire));
            }
        }
    }
    pub fn len(&self) -> usize {
        self.keys
            .iter()
            .filter(|k| k.load(Ordering::Acquire) != 0)
            .count()
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
