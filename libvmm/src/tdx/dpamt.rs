//! Dynamic PAMT: per-2 MiB refcounts and one global lock, installing 4 KiB PAMT backing on first use
//! and removing it on last use (the "TDX: Enable Dynamic PAMT" series, v3/v4 `tdx_pamt_get/put`).
//!
//! Protocol (all state in [`Dpamt`]; `count[i]` and `installed[i]` per 2 MiB range `i`):
//! - `get`: opportunistic `inc_not_zero(count)` without the lock (the common case: the range is already
//!   backed and in use). Otherwise take the global lock; if `count != 0` somebody installed meanwhile:
//!   increment. If `installed` (a `put` dropped the count to 0 but has not removed yet, or its REMOVE stayed
//!   BUSY): revive it, `count = 1`, no SEAMCALL. Else take a page pair from the caller's pre-filled pool,
//!   TDH.PHYMEM.PAMT.ADD (bounded BUSY retry), then `installed = true, count = 1`.
//! - `put`: `dec` without the lock; only the 1→0 transition takes the lock, re-checks `count == 0 &&
//!   installed` and issues TDH.PHYMEM.PAMT.REMOVE, returning the page pair to the caller.
//!
//! Difference from the series, and why: Linux keeps no `installed` bit and detects the put-vs-get race by
//! PAMT.ADD failing with `HPA_RANGE_NOT_FREE` (then frees its fresh pair). That costs a SEAMCALL and a
//! wasted pair per race, and lets two queued `put`s both reach PAMT.REMOVE for one installation (the second
//! fails and is logged). The bit, written only under the lock, makes both cases impossible; the loom test
//! (`tdx::loom_tests`) checks the protocol over all interleavings of two CPUs.
//!
//! No general heap: the refcounts are a fixed `[AtomicU32; R]`, `R` ≥ the TDMRs' 2 MiB ranges, checked at
//! set-up. BUSY is retried [`BUSY_RETRIES`] times, then returned; pool exhaustion and firmware errors are
//! returned, never panicked on.
#![forbid(unsafe_code)]

use super::errno::{self, Status};
use super::pool::{PagePool, PoolEmpty};
use super::seamcall::{tdh, Seamcall};
use super::sync::{AtomicBool, AtomicU32, AtomicU64, Ordering, SpinLock};
use super::tdmr::{RangeMap, TdmrSet, SZ_2M};

/// PAMT.ADD/REMOVE attempts on BUSY before the error is returned.
pub const BUSY_RETRIES: u32 = 8;

/// Why a Dynamic PAMT operation failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DpamtError {
    /// The address is in no TDMR.
    NotTdxMemory(u64),
    /// The pre-allocated pool has no page pair.
    PoolEmpty,
    /// The module stayed BUSY through every retry.
    Busy(Status),
    /// Any other SEAMCALL failure.
    Firmware(Status),
    /// More 2 MiB ranges than refcount slots (set-up).
    TooManyRanges { need: usize, have: usize },
    /// `put` on a range with no reference (a caller bug, reported instead of wrapping the count).
    Underflow(u64),
}

impl From<PoolEmpty> for DpamtError {
    fn from(_: PoolEmpty) -> Self {
        Self::PoolEmpty
    }
}

/// Deterministic counters for the bench and the tests.
#[derive(Default)]
pub struct DpamtStats {
    /// `get`s served by the lock-free fast path.
    pub fast: AtomicU64,
    /// `get`s and `put`s that took the global lock.
    pub locked: AtomicU64,
    pub installs: AtomicU64,
    pub removes: AtomicU64,
    /// Slow-path `get`s that found the backing still installed at count 0 (the put/get race).
    pub revived: AtomicU64,
    /// PAMT.ADD/REMOVE re-issued after BUSY.
    pub busy_retries: AtomicU64,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StatsSnapshot {
    pub fast: u64,
    pub locked: u64,
    pub installs: u64,
    pub removes: u64,
    pub revived: u64,
    pub busy_retries: u64,
    pub lock_contended: u64,
}

/// Dynamic PAMT state for up to `R` 2 MiB ranges.
pub struct Dpamt<const R: usize> {
    map: RangeMap,
    enabled: bool,
    count: [AtomicU32; R],
    installed: [AtomicBool; R],
    lock: SpinLock,
    pub stats: DpamtStats,
}

impl<const R: usize> Dpamt<R> {
    /// Sizes the refcounts from the TDMRs. `enabled = false` (static PAMT) makes get/put no-ops.
    pub fn new(tdmrs: &TdmrSet) -> Result<Self, DpamtError> {
        let map = tdmrs.range_map();
        if map.len() > R {
            return Err(DpamtError::TooManyRanges { need: map.len(), have: R });
        }
        Ok(Self {
            map,
            enabled: tdmrs.dynamic,
            count: core::array::from_fn(|_| AtomicU32::new(0)),
            installed: core::array::from_fn(|_| AtomicBool::new(false)),
            lock: SpinLock::new(),
            stats: DpamtStats::default(),
        })
    }

    pub fn enabled(&self) -> bool {
        self.enabled
    }

    fn index(&self, hpa: u64) -> Result<usize, DpamtError> {
        self.map.index(hpa).ok_or(DpamtError::NotTdxMemory(hpa))
    }

    /// Takes a reference on the 2 MiB range of `hpa`, installing its 4 KiB PAMT if it is the first.
    pub fn get<S: Seamcall, const N: usize>(&self, sc: &S, hpa: u64, pool: &mut PagePool<N>) -> Result<(), DpamtError> {
        if !self.enabled {
            return Ok(());
        }
        let i = self.index(hpa)?;
        let c = &self.count[i];
        // Fast path: increment unless zero.
        let mut cur = c.load(Ordering::Acquire);
        while cur != 0 {
            match c.compare_exchange_weak(cur, cur + 1, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => {
                    self.stats.fast.fetch_add(1, Ordering::Relaxed);
                    return Ok(());
                }
                Err(now) => cur = now,
            }
        }
        let _guard = self.lock.lock();
        self.stats.locked.fetch_add(1, Ordering::Relaxed);
        if c.load(Ordering::Acquire) != 0 {
            c.fetch_add(1, Ordering::AcqRel);
            return Ok(());
        }
        if self.installed[i].load(Ordering::Acquire) {
            self.stats.revived.fetch_add(1, Ordering::Relaxed);
            c.store(1, Ordering::Release);
            return Ok(());
        }
        let pair = pool.take_pair()?;
        let range = hpa & !(SZ_2M - 1);
        let status = self.retry_busy(|| tdh::phymem_pamt_add(sc, range, pair));
        if !status.is_success() {
            // The module did not take the pair: back to the pool it came from (room is certain).
            let _ = pool.give(pair[1]);
            let _ = pool.give(pair[0]);
            return Err(if status.is_busy() { DpamtError::Busy(status) } else { DpamtError::Firmware(status) });
        }
        self.stats.installs.fetch_add(1, Ordering::Relaxed);
        self.installed[i].store(true, Ordering::Release);
        c.store(1, Ordering::Release);
        Ok(())
    }

    /// Drops a reference; on the last one removes the range's 4 KiB PAMT and returns its page pair, which
    /// the caller owns again. A REMOVE that stays BUSY leaves the backing installed and idle (the next
    /// `get` revives it, [`Dpamt::reclaim_idle`] removes it) and is returned as an error.
    pub fn put<S: Seamcall>(&self, sc: &S, hpa: u64) -> Result<Option<[u64; 2]>, DpamtError> {
        if !self.enabled {
            return Ok(None);
        }
        let i = self.index(hpa)?;
        let c = &self.count[i];
        let mut cur = c.load(Ordering::Acquire);
        loop {
            if cur == 0 {
                return Err(DpamtError::Underflow(hpa));
            }
            match c.compare_exchange_weak(cur, cur - 1, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => break,
                Err(now) => cur = now,
            }
        }
        if cur != 1 {
            return Ok(None);
        }
        let _guard = self.lock.lock();
        self.stats.locked.fetch_add(1, Ordering::Relaxed);
        self.remove_locked(sc, i, hpa & !(SZ_2M - 1))
    }

    /// Under the lock: removes range `i` if nobody holds it and it is installed.
    fn remove_locked<S: Seamcall>(&self, sc: &S, i: usize, range: u64) -> Result<Option<[u64; 2]>, DpamtError> {
        if self.count[i].load(Ordering::Acquire) != 0 || !self.installed[i].load(Ordering::Acquire) {
            return Ok(None);
        }
        let mut pages = [0; 2];
        let status = self.retry_busy(|| match tdh::phymem_pamt_remove(sc, range) {
            Ok(p) => {
                pages = p;
                Status::OK
            }
            Err(s) => s,
        });
        if !status.is_success() {
            return Err(if status.is_busy() { DpamtError::Busy(status) } else { DpamtError::Firmware(status) });
        }
        self.stats.removes.fetch_add(1, Ordering::Relaxed);
        self.installed[i].store(false, Ordering::Release);
        Ok(Some(pages))
    }

    /// Removes every installed backing nobody holds (after a REMOVE stayed BUSY; at teardown). Calls
    /// `free` with each returned page pair.
    pub fn reclaim_idle<S: Seamcall>(&self, sc: &S, mut free: impl FnMut([u64; 2])) -> Result<(), DpamtError> {
        if !self.enabled {
            return Ok(());
        }
        let _guard = self.lock.lock();
        for t in 0..self.map.len() {
            if let Some(range) = self.range_base(t) {
                if let Some(p) = self.remove_locked(sc, t, range)? {
                    free(p);
                }
            }
        }
        Ok(())
    }

    fn range_base(&self, index: usize) -> Option<u64> {
        self.map.base_of(index)
    }

    fn retry_busy(&self, mut f: impl FnMut() -> Status) -> Status {
        let mut status = f();
        let mut tries = 1;
        while status.is_busy() && tries < BUSY_RETRIES {
            self.stats.busy_retries.fetch_add(1, Ordering::Relaxed);
            super::sync::spin_hint();
            status = f();
            tries += 1;
        }
        status
    }

    /// Current references on the range of `hpa` (tests, invariants).
    pub fn refcount(&self, hpa: u64) -> Option<u32> {
        self.map.index(hpa).map(|i| self.count[i].load(Ordering::Acquire))
    }
    /// Whether libvmm believes the range of `hpa` is backed.
    pub fn is_installed(&self, hpa: u64) -> Option<bool> {
        self.map.index(hpa).map(|i| self.installed[i].load(Ordering::Acquire))
    }
    /// How many ranges are backed now.
    pub fn installed_ranges(&self) -> usize {
        (0..self.map.len()).filter(|&i| self.installed[i].load(Ordering::Acquire)).count()
    }
    pub fn snapshot(&self) -> StatsSnapshot {
        let s = &self.stats;
        StatsSnapshot {
            fast: s.fast.load(Ordering::Relaxed),
            locked: s.locked.load(Ordering::Relaxed),
            installs: s.installs.load(Ordering::Relaxed),
            removes: s.removes.load(Ordering::Relaxed),
            revived: s.revived.load(Ordering::Relaxed),
            busy_retries: s.busy_retries.load(Ordering::Relaxed),
            lock_contended: self.lock.contended.load(Ordering::Relaxed),
        }
    }
}

/// `HPA_RANGE_NOT_FREE` from PAMT.ADD means the module's view and libvmm's disagree (somebody outside
/// this protocol installed the range): reported as firmware error, never papered over.
pub const fn is_foreign_install(s: Status) -> bool {
    s.is(errno::HPA_RANGE_NOT_FREE)
}
