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
    /// `get`s that took the global lock (first use of a range, or a race).
    pub get_locked: AtomicU64,
    /// `put`s that took the global lock (last use of a range).
    pub put_locked: AtomicU64,
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
    pub get_locked: u64,
    pub put_locked: u64,
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
            return Err(DpamtError::TooManyRanges {
                need: map.len(),
                have: R,
            });
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
    pub fn get<S: Seamcall, const N: usize>(
        &self,
        sc: &S,
        hpa: u64,
        pool: &mut PagePool<N>,
    ) -> Result<(), DpamtError> {
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
        self.stats.get_locked.fetch_add(1, Ordering::Relaxed);
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
            return Err(if status.is_busy() {
                DpamtError::Busy(status)
            } else {
                DpamtError::Firmware(status)
            });
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
        self.stats.put_locked.fetch_add(1, Ordering::Relaxed);
        self.remove_locked(sc, i, hpa & !(SZ_2M - 1))
    }

    /// Under the lock: removes range `i` if nobody holds it and it is installed.
    fn remove_locked<S: Seamcall>(
        &self,
        sc: &S,
        i: usize,
        range: u64,
    ) -> Result<Option<[u64; 2]>, DpamtError> {
        if self.count[i].load(Ordering::Acquire) != 0 || !self.installed[i].load(Ordering::Acquire)
        {
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
            return Err(if status.is_busy() {
                DpamtError::Busy(status)
            } else {
                DpamtError::Firmware(status)
            });
        }
        self.stats.removes.fetch_add(1, Ordering::Relaxed);
        self.installed[i].store(false, Ordering::Release);
        Ok(Some(pages))
    }

    /// Removes every installed backing nobody holds (after a REMOVE stayed BUSY; at teardown). Calls
    /// `free` with each returned page pair.
    pub fn reclaim_idle<S: Seamcall>(
        &self,
        sc: &S,
        mut free: impl FnMut([u64; 2]),
    ) -> Result<(), DpamtError> {
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
        self.map
            .index(hpa)
            .map(|i| self.count[i].load(Ordering::Acquire))
    }
    /// Whether libvmm believes the range of `hpa` is backed.
    pub fn is_installed(&self, hpa: u64) -> Option<bool> {
        self.map
            .index(hpa)
            .map(|i| self.installed[i].load(Ordering::Acquire))
    }
    /// How many ranges are backed now.
    pub fn installed_ranges(&self) -> usize {
        (0..self.map.len())
            .filter(|&i| self.installed[i].load(Ordering::Acquire))
            .count()
    }
    pub fn snapshot(&self) -> StatsSnapshot {
        let s = &self.stats;
        StatsSnapshot {
            fast: s.fast.load(Ordering::Relaxed),
            get_locked: s.get_locked.load(Ordering::Relaxed),
            put_locked: s.put_locked.load(Ordering::Relaxed),
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

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::tdx::sim::{tests::tdmrs, Owner, SimConfig, SimModule};

    const MEM: u64 = 0x4000_0000;
    fn page(range: u64, n: u64) -> u64 {
        MEM + range * SZ_2M + n * 4096
    }
    fn setup() -> (SimModule, Dpamt<512>, PagePool<8>) {
        let m = SimModule::new(SimConfig::default(), tdmrs(true));
        let d = Dpamt::new(&tdmrs(true)).unwrap();
        let mut pool = PagePool::default();
        for i in 0..8 {
            pool.give(page(100, i)).unwrap();
        }
        (m, d, pool)
    }

    #[test]
    fn first_get_installs_later_gets_take_the_fast_path_last_put_removes() {
        let (m, d, mut pool) = setup();
        d.get(&m, page(1, 3), &mut pool).unwrap();
        assert_eq!(m.backed_ranges(), std::vec![page(1, 0)]);
        assert_eq!(pool.len(), 6);
        d.get(&m, page(1, 7), &mut pool).unwrap();
        d.get(&m, page(1, 9), &mut pool).unwrap();
        assert_eq!(d.refcount(page(1, 0)), Some(3));
        let s = d.snapshot();
        assert_eq!((s.fast, s.get_locked, s.installs), (2, 1, 1));
        assert_eq!(d.put(&m, page(1, 3)), Ok(None));
        assert_eq!(d.put(&m, page(1, 7)), Ok(None));
        let pair = d.put(&m, page(1, 9)).unwrap().unwrap();
        assert!(pair.contains(&page(100, 7)) && pair.contains(&page(100, 6)));
        assert!(m.backed_ranges().is_empty());
        assert_eq!(d.is_installed(page(1, 0)), Some(false));
        assert_eq!(
            d.put(&m, page(1, 9)),
            Err(DpamtError::Underflow(page(1, 9)))
        );
        assert_eq!(
            d.refcount(page(1, 0)),
            Some(0),
            "an underflowing put does not wrap"
        );
    }

    #[test]
    fn busy_is_retried_a_bounded_number_of_times_then_returned_with_the_pool_intact() {
        let (m, d, mut pool) = setup();
        m.hold_range(page(2, 0), true);
        let e = d.get(&m, page(2, 1), &mut pool).unwrap_err();
        assert!(
            matches!(e, DpamtError::Busy(s) if s.busy_operand() == Some(1)),
            "{e:?}"
        );
        assert_eq!(d.snapshot().busy_retries, (BUSY_RETRIES - 1) as u64);
        assert_eq!(pool.len(), 8);
        assert_eq!(
            (d.refcount(page(2, 0)), d.is_installed(page(2, 0))),
            (Some(0), Some(false))
        );
        m.release_range(page(2, 0));
        d.get(&m, page(2, 1), &mut pool).unwrap();
        // A REMOVE that stays BUSY leaves the backing idle; reclaim_idle removes it later.
        m.hold_range(page(2, 0), false);
        assert!(matches!(d.put(&m, page(2, 1)), Err(DpamtError::Busy(_))));
        assert_eq!(d.is_installed(page(2, 0)), Some(true));
        m.release_range(page(2, 0));
        let mut freed = std::vec::Vec::new();
        d.reclaim_idle(&m, |p| freed.extend(p)).unwrap();
        assert_eq!(freed.len(), 2);
        assert!(m.backed_ranges().is_empty());
    }

    #[test]
    fn an_idle_installed_range_is_revived_without_a_seamcall() {
        let (m, d, mut pool) = setup();
        m.hold_range(page(3, 0), false);
        d.get(&m, page(3, 0), &mut pool).unwrap_err();
        m.release_range(page(3, 0));
        d.get(&m, page(3, 0), &mut pool).unwrap();
        m.hold_range(page(3, 0), false);
        let _ = d.put(&m, page(3, 0));
        m.release_range(page(3, 0));
        let adds = m.stats.pamt_add.load(std::sync::atomic::Ordering::Relaxed);
        d.get(&m, page(3, 5), &mut pool).unwrap();
        assert_eq!(
            m.stats.pamt_add.load(std::sync::atomic::Ordering::Relaxed),
            adds
        );
        assert_eq!(d.snapshot().revived, 1);
        assert_eq!(m.owner(d.put(&m, page(3, 5)).unwrap().unwrap()[0]), None);
    }

    #[test]
    fn pool_exhaustion_and_foreign_addresses_are_errors() {
        let (m, d, _) = setup();
        let mut empty = PagePool::<8>::default();
        assert_eq!(
            d.get(&m, page(4, 0), &mut empty),
            Err(DpamtError::PoolEmpty)
        );
        assert_eq!(
            d.get(&m, 0x10_0000, &mut empty),
            Err(DpamtError::NotTdxMemory(0x10_0000))
        );
        assert_eq!(
            Dpamt::<4>::new(&tdmrs(true)).err(),
            Some(DpamtError::TooManyRanges { need: 512, have: 4 })
        );
        // A range installed behind libvmm's back: ADD fails with HPA_RANGE_NOT_FREE, reported as firmware.
        let mut pool = PagePool::<8>::default();
        for i in 0..4 {
            pool.give(page(200, i)).unwrap();
        }
        let _ = crate::tdx::seamcall::tdh::phymem_pamt_add(
            &m,
            page(5, 0),
            [page(201, 0), page(201, 1)],
        );
        let e = d.get(&m, page(5, 0), &mut pool).unwrap_err();
        assert!(
            matches!(e, DpamtError::Firmware(s) if is_foreign_install(s)),
            "{e:?}"
        );
        assert_eq!(pool.len(), 4);
        assert_eq!(m.owner(page(201, 0)), Some(Owner::Pamt(page(5, 0))));
    }

    #[test]
    fn static_pamt_makes_get_and_put_no_ops() {
        let m = SimModule::new(SimConfig::default(), tdmrs(false));
        let d = Dpamt::<512>::new(&tdmrs(false)).unwrap();
        let mut empty = PagePool::<8>::default();
        assert!(!d.enabled());
        d.get(&m, page(1, 0), &mut empty).unwrap();
        assert_eq!(d.put(&m, page(1, 0)), Ok(None));
        assert_eq!(m.stats.calls.load(std::sync::atomic::Ordering::Relaxed), 0);
    }
}
