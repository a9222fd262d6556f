//! *Simulated*: a software model of the Intel TDX module, the second [`Seamcall`] implementation.
//!
//! No machine or emulator here runs a TDX module, so libvmm's TDX code is verified against this model.
//! It enforces the ABI rules libvmm depends on and answers with the spec's status codes:
//! - page ownership and state in PAMT (free, PAMT backing, TDR, TDCS, TDVPR, TDCX, S-EPT, private);
//!   only free pages inside a TDMR can be given to a TD; pages come back through PAGE.REMOVE (live TD) or
//!   PAGE.RECLAIM (after KEY.FREEID, TDR last);
//! - Dynamic PAMT per 2 MiB range: PAMT.ADD/REMOVE; every 4 KiB page given to TDX (control pages, S-EPT
//!   pages, AUG/ADD pages) needs its range backed; PAMT.REMOVE fails while any 4 KiB page of the range is
//!   in use; PAMT.ADD of a backed range fails with `HPA_RANGE_NOT_FREE`;
//! - the TD life cycle (CREATE → KEY.CONFIG → ADDCX × n → INIT → VP.CREATE/ADDCX → PAGE.ADD* → FINALIZE →
//!   AUG*), S-EPT walk rules (SEPT.ADD parent first; AUG needs the PT; BLOCK → TRACK → REMOVE);
//! - concurrency: the module never waits on its locks. Each call first takes its locks (2 MiB ranges
//!   shared or exclusive, 4 KiB pages exclusive, the TD's S-EPT), then does its work in a second step;
//!   a call that finds a lock held returns `OPERAND_BUSY | operand` at once. Calls that touch the same
//!   2 MiB range at the same time therefore get BUSY instead of waiting.
//!
//! What it does not model: memory contents (MR measurement, TD_PARAMS, the TDMR_INFO array that
//! SYS.CONFIG reads: the model is configured with the [`TdmrSet`] directly), keys and cache flushing
//! beyond their ordering, TD entry (VP.ENTER), huge pages, and statuses for situations libvmm never
//! creates. Where the real module's exact status is not published (a 4 KiB page in a range without
//! Dynamic PAMT backing), the model answers `PAGE_METADATA_INCORRECT` with the page's operand.
#![forbid(unsafe_code)]

extern crate std;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::vec::Vec;

use super::errno::{self, operand as op, Status};
use super::seamcall::{field, leaf, Args, Seamcall};
use super::sync::Mutex;
use super::tdmr::{ModuleInfo, TdmrSet, SZ_2M, SZ_4K};

/// Model parameters.
#[derive(Clone, Copy, Debug)]
pub struct SimConfig {
    pub info: ModuleInfo,
    /// Answer RND_NO_ENTROPY to this many calls first (the entropy-retry path).
    pub entropy_failures: u64,
    /// Which calls yield the thread between taking their locks and doing the work, widening the window
    /// in which other threads collide (stress tests, bench).
    pub window: Window,
    /// Highest HKID the model hands out.
    pub max_hkid: u16,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            info: ModuleInfo {
                pamt_4k_entry_size: 16,
                pamt_2m_entry_size: 16,
                pamt_1g_entry_size: 16,
                dpamt_bitmap_bits: Some(1),
                tdcs_pages: 4,
                tdvps_pages: 4,
            },
            entropy_failures: 0,
            window: Window::None,
            max_hkid: 63,
        }
    }
}

/// Calls that yield inside their lock window.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Window {
    None,
    /// PAMT.ADD/REMOVE only: widens the Dynamic PAMT races without S-EPT-lock contention.
    Pamt,
    /// Every call that takes a lock.
    All,
}

/// What a 4 KiB page is used for (its PAMT page type and owner).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Owner {
    /// Dynamic PAMT backing of the range at this base (marked in the bitmap, not in 4 KiB PAMT).
    Pamt(u64),
    Tdr,
    Tdcs(u64),
    Tdvpr(u64),
    Tdcx {
        tdr: u64,
        tdvpr: u64,
    },
    Sept {
        tdr: u64,
        level: u64,
        gpa: u64,
    },
    Private {
        tdr: u64,
        gpa: u64,
    },
}

impl Owner {
    fn td(self, page: u64) -> Option<u64> {
        match self {
            Owner::Pamt(_) => None,
            Owner::Tdr => Some(page),
            Owner::Tdcs(t) | Owner::Tdvpr(t) | Owner::Tdcx { tdr: t, .. } => Some(t),
            Owner::Sept { tdr, .. } | Owner::Private { tdr, .. } => Some(tdr),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum TdState {
    Created,
    KeysConfigured,
    Initialized,
    Finalized,
    VcpusFlushed,
    KeysFreed,
}

#[derive(Default)]
struct Vcpu {
    tdcx: u64,
    flushed: bool,
}

struct Leaf {
    hpa: u64,
    blocked_at: Option<u64>,
}

struct Td {
    hkid: u16,
    state: TdState,
    tdcs: u64,
    vcpus: BTreeMap<u64, Vcpu>,
    /// S-EPT tables: (level, gpa aligned to the level's span) → page.
    sept: BTreeMap<(u64, u64), u64>,
    leaves: BTreeMap<u64, Leaf>,
    epoch: u64,
    /// Pages owned by this TD besides the TDR.
    children: u64,
}

#[derive(Default)]
struct Range {
    pamt: Option<[u64; 2]>,
    /// 4 KiB pages of this range in use by TDX (not counting pages used as PAMT backing).
    used: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Key {
    Range(u64),
    Page(u64),
    Sept(u64),
}

#[derive(Clone, Copy)]
struct Want {
    key: Key,
    exclusive: bool,
    operand: u32,
}

#[derive(Default)]
struct State {
    pages: BTreeMap<u64, Owner>,
    ranges: BTreeMap<u64, Range>,
    tds: BTreeMap<u64, Td>,
    hkids: BTreeSet<u16>,
    /// Held locks: key → (shared holders, exclusive).
    locks: BTreeMap<Key, (u32, bool)>,
    entropy_left: u64,
}

/// Per-leaf call counts and BUSY answers.
#[derive(Default)]
pub struct SimStats {
    pub calls: AtomicU64,
    pub busy: AtomicU64,
    pub pamt_add: AtomicU64,
    pub pamt_remove: AtomicU64,
}

/// The model. `Sync`: every call may come from any thread.
pub struct SimModule {
    cfg: SimConfig,
    tdmrs: TdmrSet,
    state: Mutex<State>,
    pub stats: SimStats,
}

const fn range_of(hpa: u64) -> u64 {
    hpa & !(SZ_2M - 1)
}

fn err(code: u64, operand: u32) -> Status {
    Status::with_operand(code, operand)
}

impl SimModule {
    /// A module configured (as after TDH.SYS.CONFIG + TDMR.INIT) with `tdmrs`. Dynamic PAMT is on when
    /// the TDMRs were built for it.
    pub fn new(cfg: SimConfig, tdmrs: TdmrSet) -> Self {
        let st = State {
            entropy_left: cfg.entropy_failures,
            ..State::default()
        };
        Self {
            cfg,
            tdmrs,
            state: Mutex::new(st),
            stats: SimStats::default(),
        }
    }

    pub fn dynamic(&self) -> bool {
        self.tdmrs.dynamic
    }

    /// Test hook: holds a lock as an in-flight SEAMCALL would, until [`SimModule::release_range`].
    pub fn hold_range(&self, hpa: u64, exclusive: bool) {
        with_state(&self.state, |st| {
            let e = st
                .locks
                .entry(Key::Range(range_of(hpa)))
                .or_insert((0, false));
            if exclusive {
                e.1 = true;
            } else {
                e.0 += 1;
            }
        })
    }
    pub fn release_range(&self, hpa: u64) {
        with_state(&self.state, |st| {
            st.locks.remove(&Key::Range(range_of(hpa)));
        })
    }

    /// The owner of a page, `None` when free.
    pub fn owner(&self, hpa: u64) -> Option<Owner> {
        with_state(&self.state, |st| st.pages.get(&hpa).copied())
    }
    /// Ranges with Dynamic PAMT backing installed.
    pub fn backed_ranges(&self) -> Vec<u64> {
        with_state(&self.state, |st| {
            st.ranges
                .iter()
                .filter(|(_, r)| r.pamt.is_some())
                .map(|(b, _)| *b)
                .collect()
        })
    }
    /// Pages the module holds (any owner).
    pub fn pages_in_use(&self) -> usize {
        with_state(&self.state, |st| st.pages.len())
    }
    /// The ABI invariants: every TDX page (other than PAMT backing) lies in a backed range; each range's
    /// use count matches its pages; PAMT pages are owned by their range's backing. `Err` names a breach.
    pub fn check_invariants(&self) -> Result<(), std::string::String> {
        with_state(&self.state, |st| {
            let mut used: BTreeMap<u64, u32> = BTreeMap::new();
            for (&p, &o) in &st.pages {
                match o {
                    Owner::Pamt(r) => {
                        if st
                            .ranges
                            .get(&r)
                            .and_then(|x| x.pamt)
                            .is_none_or(|pp| !pp.contains(&p))
                        {
                            return Err(std::format!(
                                "PAMT page {p:#x} not in range {r:#x}'s backing"
                            ));
                        }
                    }
                    _ => {
                        *used.entry(range_of(p)).or_default() += 1;
                        if self.dynamic()
                            && st.ranges.get(&range_of(p)).and_then(|r| r.pamt).is_none()
                        {
                            return Err(std::format!(
                                "page {p:#x} ({o:?}) used without PAMT backing"
                            ));
                        }
                    }
                }
            }
            for (b, r) in &st.ranges {
                if r.used != used.get(b).copied().unwrap_or(0) {
                    return Err(std::format!(
                        "range {b:#x} use count {} != {}",
                        r.used,
                        used.get(b).copied().unwrap_or(0)
                    ));
                }
            }
            Ok(())
        })
    }

    fn wants(&self, st: &State, leaf: u64, a: &Args) -> Vec<Want> {
        let range = |hpa: u64, exclusive, operand| Want {
            key: Key::Range(range_of(hpa)),
            exclusive,
            operand,
        };
        let page = |hpa: u64, operand| Want {
            key: Key::Page(hpa & !(SZ_4K - 1)),
            exclusive: true,
            operand,
        };
        let sept = |tdr: u64| Want {
            key: Key::Sept(tdr),
            exclusive: true,
            operand: op::SEPT,
        };
        let mut w = Vec::new();
        match leaf {
            leaf::PHYMEM_PAMT_ADD => {
                let r = range_of(a.rcx);
                w.push(range(r, true, op::RCX));
                if range_of(a.rdx) != r {
                    w.push(range(a.rdx, false, op::RDX));
                }
                if range_of(a.r8) != r && range_of(a.r8) != range_of(a.rdx) {
                    w.push(range(a.r8, false, op::R8));
                }
            }
            leaf::PHYMEM_PAMT_REMOVE => w.push(range(a.rcx, true, op::RCX)),
            leaf::MEM_PAGE_AUG | leaf::MEM_SEPT_ADD | leaf::MEM_PAGE_ADD => {
                w.push(sept(a.rdx));
                w.push(range(a.r8, false, op::R8));
                w.push(page(a.r8, op::R8));
            }
            leaf::MEM_RANGE_BLOCK => w.push(sept(a.rdx)),
            leaf::MEM_PAGE_REMOVE => {
                w.push(sept(a.rdx));
                if let Some(l) = st
                    .tds
                    .get(&a.rdx)
                    .and_then(|td| td.leaves.get(&(a.rcx & !(SZ_4K - 1))))
                {
                    w.push(range(l.hpa, false, op::RCX));
                    w.push(page(l.hpa, op::RCX));
                }
            }
            leaf::MNG_CREATE | leaf::VP_ADDCX | leaf::PHYMEM_PAGE_RECLAIM => {
                w.push(range(a.rcx, false, op::RCX));
                w.push(page(a.rcx, op::RCX));
            }
            leaf::MNG_ADDCX | leaf::VP_CREATE => {
                w.push(range(a.rcx, false, op::RCX));
                w.push(page(a.rcx, op::RCX));
                w.push(page(a.rdx, op::TDR));
            }
            _ => {}
        }
        w
    }

    fn acquire(st: &mut State, wants: &[Want]) -> Result<(), Status> {
        for w in wants {
            let (shared, excl) = st.locks.get(&w.key).copied().unwrap_or((0, false));
            if excl || (w.exclusive && shared > 0) {
                return Err(err(errno::OPERAND_BUSY, w.operand));
            }
        }
        for w in wants {
            let e = st.locks.entry(w.key).or_insert((0, false));
            if w.exclusive {
                e.1 = true;
            } else {
                e.0 += 1;
            }
        }
        Ok(())
    }

    fn release(st: &mut State, wants: &[Want]) {
        for w in wants {
            if let Some(e) = st.locks.get_mut(&w.key) {
                if w.exclusive {
                    e.1 = false;
                } else {
                    e.0 -= 1;
                }
                if *e == (0, false) {
                    st.locks.remove(&w.key);
                }
            }
        }
    }
}

fn with_state<R>(m: &Mutex<State>, f: impl FnOnce(&mut State) -> R) -> R {
    #[cfg(not(all(test, loom)))]
    let mut g = m.lock().unwrap_or_else(|p| p.into_inner());
    #[cfg(all(test, loom))]
    let mut g = m.lock().unwrap();
    f(&mut g)
}

impl Seamcall for SimModule {
    fn call(&self, leaf: u64, args: &mut Args) -> Status {
        self.stats.calls.fetch_add(1, Ordering::Relaxed);
        let wants = match with_state(&self.state, |st| {
            if st.entropy_left > 0 {
                st.entropy_left -= 1;
                return Err(Status(errno::RND_NO_ENTROPY));
            }
            let wants = self.wants(st, leaf, args);
            Self::acquire(st, &wants).map(|()| wants)
        }) {
            Ok(w) => w,
            Err(s) => {
                if s.is_busy() {
                    self.stats.busy.fetch_add(1, Ordering::Relaxed);
                }
                return s;
            }
        };
        let widen = match self.cfg.window {
            Window::None => false,
            Window::Pamt => matches!(leaf, leaf::PHYMEM_PAMT_ADD | leaf::PHYMEM_PAMT_REMOVE),
            Window::All => !wants.is_empty(),
        };
        if widen {
            #[cfg(not(all(test, loom)))]
            std::thread::yield_now();
        }
        with_state(&self.state, |st| {
            let s = self.execute(st, leaf, args);
            Self::release(st, &wants);
            s
        })
    }
}

impl SimModule {
    /// Hands a free 4 KiB page to TDX as `owner`.
    fn assign(&self, st: &mut State, hpa: u64, owner: Owner, operand: u32) -> Result<(), Status> {
        if !hpa.is_multiple_of(SZ_4K) {
            return Err(err(errno::OPERAND_INVALID, operand));
        }
        if !self.tdmrs.contains(hpa) {
            return Err(err(errno::OPERAND_ADDR_RANGE_ERROR, operand));
        }
        match st.pages.get(&hpa) {
            Some(Owner::Pamt(_)) => return Err(err(errno::PAGE_NOT_FREE, operand)),
            Some(_) => return Err(err(errno::PAGE_METADATA_INCORRECT, operand)),
            None => {}
        }
        let r = st.ranges.entry(range_of(hpa)).or_default();
        if self.dynamic() && r.pamt.is_none() {
            return Err(err(errno::PAGE_METADATA_INCORRECT, operand));
        }
        r.used += 1;
        st.pages.insert(hpa, owner);
        if let Some(td) = owner.td(hpa).filter(|&t| t != hpa) {
            if let Some(td) = st.tds.get_mut(&td) {
                td.children += 1;
            }
        }
        Ok(())
    }

    fn unassign(st: &mut State, hpa: u64) {
        if let Some(o) = st.pages.remove(&hpa) {
            if let Some(r) = st.ranges.get_mut(&range_of(hpa)) {
                r.used -= 1;
            }
            if let Some(td) = o.td(hpa).filter(|&t| t != hpa) {
                if let Some(td) = st.tds.get_mut(&td) {
                    td.children -= 1;
                }
            }
        }
    }

    fn td(st: &mut State, tdr: u64, operand: u32) -> Result<&mut Td, Status> {
        st.tds
            .get_mut(&tdr)
            .ok_or(err(errno::PAGE_METADATA_INCORRECT, operand))
    }

    fn execute(&self, st: &mut State, leaf: u64, a: &mut Args) -> Status {
        match self.execute_inner(st, leaf, a) {
            Ok(s) => s,
            Err(s) => s,
        }
    }

    fn execute_inner(&self, st: &mut State, leaf: u64, a: &mut Args) -> Result<Status, Status> {
        let info = self.cfg.info;
        match leaf {
            leaf::SYS_RD => {
                let features = if self.dynamic() {
                    field::FEATURES0_DYNAMIC_PAMT
                } else {
                    0
                };
                a.r8 = match a.rdx {
                    field::TDX_FEATURES0 => features,
                    field::MAX_TDMRS => super::tdmr::MAX_TDMRS as u64,
                    field::PAMT_4K_ENTRY_SIZE => info.pamt_4k_entry_size,
                    field::PAMT_2M_ENTRY_SIZE => info.pamt_2m_entry_size,
                    field::PAMT_1G_ENTRY_SIZE => info.pamt_1g_entry_size,
                    field::PAMT_PAGE_BITMAP_ENTRY_BITS if self.dynamic() => {
                        info.dpamt_bitmap_bits.unwrap_or(1)
                    }
                    field::TDR_BASE_SIZE => SZ_4K,
                    field::TDCS_BASE_SIZE => info.tdcs_pages * SZ_4K,
                    field::TDVPS_BASE_SIZE => info.tdvps_pages * SZ_4K,
                    _ => return Err(Status(errno::METADATA_FIELD_NOT_READABLE)),
                };
            }
            leaf::PHYMEM_PAMT_ADD => {
                self.stats.pamt_add.fetch_add(1, Ordering::Relaxed);
                if !self.dynamic() {
                    return Err(err(errno::OPERAND_INVALID, op::RAX));
                }
                let base = a.rcx & !0xfff;
                if a.rcx & 0xfff != 1 || !base.is_multiple_of(SZ_2M) {
                    return Err(err(errno::OPERAND_INVALID, op::RCX));
                }
                if !self.tdmrs.contains(base) {
                    return Err(err(errno::OPERAND_ADDR_RANGE_ERROR, op::RCX));
                }
                for (p, o) in [(a.rdx, op::RDX), (a.r8, op::R8)] {
                    if p % SZ_4K != 0 {
                        return Err(err(errno::OPERAND_INVALID, o));
                    }
                    if !self.tdmrs.contains(p) {
                        return Err(err(errno::OPERAND_ADDR_RANGE_ERROR, o));
                    }
                }
                if st.ranges.get(&base).is_some_and(|r| r.pamt.is_some()) {
                    return Err(err(errno::HPA_RANGE_NOT_FREE, op::RCX));
                }
                for (p, o) in [(a.rdx, op::RDX), (a.r8, op::R8)] {
                    if st.pages.contains_key(&p) {
                        return Err(err(errno::PAGE_NOT_FREE, o));
                    }
                }
                if a.rdx == a.r8 {
                    return Err(err(errno::PAGE_NOT_FREE, op::R8));
                }
                st.pages.insert(a.rdx, Owner::Pamt(base));
                st.pages.insert(a.r8, Owner::Pamt(base));
                st.ranges.entry(base).or_default().pamt = Some([a.rdx, a.r8]);
            }
            leaf::PHYMEM_PAMT_REMOVE => {
                self.stats.pamt_remove.fetch_add(1, Ordering::Relaxed);
                if !self.dynamic() {
                    return Err(err(errno::OPERAND_INVALID, op::RAX));
                }
                let base = a.rcx & !0xfff;
                if a.rcx & 0xfff != 1 || !base.is_multiple_of(SZ_2M) {
                    return Err(err(errno::OPERAND_INVALID, op::RCX));
                }
                let r = st
                    .ranges
                    .get_mut(&base)
                    .ok_or(err(errno::PAGE_METADATA_INCORRECT, op::RCX))?;
                let pages = r.pamt.ok_or(err(errno::PAGE_METADATA_INCORRECT, op::RCX))?;
                if r.used != 0 {
                    return Err(err(errno::HPA_RANGE_NOT_FREE, op::RCX));
                }
                r.pamt = None;
                st.pages.remove(&pages[0]);
                st.pages.remove(&pages[1]);
                a.rdx = pages[0];
                a.r8 = pages[1];
            }
            leaf::MNG_CREATE => {
                let hkid = a.rdx as u16;
                if a.rdx == 0 || a.rdx > self.cfg.max_hkid as u64 || st.hkids.contains(&hkid) {
                    return Err(err(errno::OPERAND_INVALID, op::RDX));
                }
                self.assign(st, a.rcx, Owner::Tdr, op::RCX)?;
                st.hkids.insert(hkid);
                st.tds.insert(
                    a.rcx,
                    Td {
                        hkid,
                        state: TdState::Created,
                        tdcs: 0,
                        vcpus: BTreeMap::new(),
                        sept: BTreeMap::new(),
                        leaves: BTreeMap::new(),
                        epoch: 0,
                        children: 0,
                    },
                );
            }
            leaf::MNG_KEY_CONFIG => {
                let td = Self::td(st, a.rcx, op::RCX)?;
                match td.state {
                    TdState::Created => td.state = TdState::KeysConfigured,
                    TdState::KeysConfigured => return Ok(Status(errno::KEY_CONFIGURED)),
                    _ => return Err(Status(errno::KEY_STATE_INCORRECT)),
                }
            }
            leaf::MNG_ADDCX => {
                let td = Self::td(st, a.rdx, op::RDX)?;
                match td.state {
                    TdState::Created => return Err(Status(errno::TD_KEYS_NOT_CONFIGURED)),
                    TdState::KeysConfigured if td.tdcs < info.tdcs_pages => {}
                    _ => return Err(Status(errno::TDCX_NUM_INCORRECT)),
                }
                self.assign(st, a.rcx, Owner::Tdcs(a.rdx), op::RCX)?;
                Self::td(st, a.rdx, op::RDX)?.tdcs += 1;
            }
            leaf::MNG_INIT => {
                let td = Self::td(st, a.rcx, op::RCX)?;
                if td.state != TdState::KeysConfigured {
                    return Err(Status(errno::KEY_STATE_INCORRECT));
                }
                if td.tdcs != info.tdcs_pages {
                    return Err(Status(errno::TDCX_NUM_INCORRECT));
                }
                td.state = TdState::Initialized;
            }
            leaf::VP_CREATE => {
                let td = Self::td(st, a.rdx, op::RDX)?;
                if !matches!(td.state, TdState::Initialized | TdState::Finalized) {
                    return Err(Status(errno::TD_NOT_INITIALIZED));
                }
                self.assign(st, a.rcx, Owner::Tdvpr(a.rdx), op::RCX)?;
                Self::td(st, a.rdx, op::RDX)?
                    .vcpus
                    .insert(a.rcx, Vcpu::default());
            }
            leaf::VP_ADDCX => {
                let Some(Owner::Tdvpr(tdr)) = st.pages.get(&a.rdx).copied() else {
                    return Err(err(errno::PAGE_METADATA_INCORRECT, op::RDX));
                };
                let n = Self::td(st, tdr, op::RDX)?
                    .vcpus
                    .get(&a.rdx)
                    .map_or(0, |v| v.tdcx);
                if n + 1 >= info.tdvps_pages {
                    return Err(Status(errno::TDCX_NUM_INCORRECT));
                }
                self.assign(st, a.rcx, Owner::Tdcx { tdr, tdvpr: a.rdx }, op::RCX)?;
                if let Some(v) = Self::td(st, tdr, op::RDX)?.vcpus.get_mut(&a.rdx) {
                    v.tdcx += 1;
                }
            }
            leaf::MR_FINALIZE => {
                let td = Self::td(st, a.rcx, op::RCX)?;
                match td.state {
                    TdState::Initialized => td.state = TdState::Finalized,
                    TdState::Finalized => return Err(Status(errno::TD_FINALIZED)),
                    _ => return Err(Status(errno::TD_NOT_INITIALIZED)),
                }
            }
            leaf::MEM_SEPT_ADD => {
                let (gpa, level) = (a.rcx & !0xfff, a.rcx & 0x7);
                let td = Self::td(st, a.rdx, op::RDX)?;
                if !matches!(td.state, TdState::Initialized | TdState::Finalized) {
                    return Err(Status(errno::TD_NOT_INITIALIZED));
                }
                let span = 1u64 << (12 + 9 * level);
                if !(1..=3).contains(&level) || gpa % span != 0 {
                    return Err(err(errno::OPERAND_INVALID, op::RCX));
                }
                if level < 3 {
                    let parent_span = span << 9;
                    if !td.sept.contains_key(&(level + 1, gpa & !(parent_span - 1))) {
                        return Err(err(errno::EPT_WALK_FAILED, op::RCX));
                    }
                }
                if td.sept.contains_key(&(level, gpa)) {
                    return Err(err(errno::EPT_ENTRY_NOT_FREE, op::RCX));
                }
                self.assign(
                    st,
                    a.r8,
                    Owner::Sept {
                        tdr: a.rdx,
                        level,
                        gpa,
                    },
                    op::R8,
                )?;
                Self::td(st, a.rdx, op::RDX)?
                    .sept
                    .insert((level, gpa), a.r8);
            }
            leaf::MEM_PAGE_AUG | leaf::MEM_PAGE_ADD => {
                let gpa = a.rcx & !0xfff;
                if leaf == leaf::MEM_PAGE_AUG && a.rcx & 0x7 != 0 {
                    return Err(err(errno::OPERAND_INVALID, op::RCX));
                }
                let td = Self::td(st, a.rdx, op::RDX)?;
                match (leaf, td.state) {
                    (leaf::MEM_PAGE_AUG, TdState::Finalized)
                    | (leaf::MEM_PAGE_ADD, TdState::Initialized) => {}
                    (leaf::MEM_PAGE_AUG, _) => return Err(Status(errno::TD_NOT_FINALIZED)),
                    _ => return Err(Status(errno::TD_FINALIZED)),
                }
                if !td.sept.contains_key(&(1, gpa & !(SZ_2M - 1))) {
                    return Err(err(errno::EPT_WALK_FAILED, op::RCX));
                }
                if td.leaves.contains_key(&gpa) {
                    return Err(err(errno::EPT_ENTRY_NOT_FREE, op::RCX));
                }
                if leaf == leaf::MEM_PAGE_ADD && st.pages.contains_key(&(a.r9 & !0xfff)) {
                    return Err(err(errno::OPERAND_INVALID, op::R9));
                }
                self.assign(st, a.r8, Owner::Private { tdr: a.rdx, gpa }, op::R8)?;
                Self::td(st, a.rdx, op::RDX)?.leaves.insert(
                    gpa,
                    Leaf {
                        hpa: a.r8,
                        blocked_at: None,
                    },
                );
            }
            leaf::MEM_RANGE_BLOCK => {
                let gpa = a.rcx & !0xfff;
                let td = Self::td(st, a.rdx, op::RDX)?;
                let epoch = td.epoch;
                let l = td
                    .leaves
                    .get_mut(&gpa)
                    .ok_or(err(errno::EPT_ENTRY_FREE, op::RCX))?;
                if l.blocked_at.is_some() {
                    return Ok(Status(errno::GPA_RANGE_ALREADY_BLOCKED));
                }
                l.blocked_at = Some(epoch);
            }
            leaf::MEM_TRACK => Self::td(st, a.rcx, op::RCX)?.epoch += 1,
            leaf::MEM_PAGE_REMOVE => {
                let gpa = a.rcx & !0xfff;
                let td = Self::td(st, a.rdx, op::RDX)?;
                let l = td
                    .leaves
                    .get(&gpa)
                    .ok_or(err(errno::EPT_ENTRY_FREE, op::RCX))?;
                match l.blocked_at {
                    None => return Err(err(errno::GPA_RANGE_NOT_BLOCKED, op::RCX)),
                    Some(e) if td.epoch <= e => {
                        return Err(err(errno::TLB_TRACKING_NOT_DONE, op::RCX))
                    }
                    Some(_) => {}
                }
                let hpa = l.hpa;
                td.leaves.remove(&gpa);
                Self::unassign(st, hpa);
            }
            leaf::VP_FLUSH => {
                let Some(Owner::Tdvpr(tdr)) = st.pages.get(&a.rcx).copied() else {
                    return Err(err(errno::PAGE_METADATA_INCORRECT, op::RCX));
                };
                if let Some(v) = Self::td(st, tdr, op::RCX)?.vcpus.get_mut(&a.rcx) {
                    v.flushed = true;
                }
            }
            leaf::MNG_VPFLUSHDONE => {
                let td = Self::td(st, a.rcx, op::RCX)?;
                if td.vcpus.values().any(|v| !v.flushed) {
                    return Err(Status(errno::FLUSHVP_NOT_DONE));
                }
                td.state = TdState::VcpusFlushed;
            }
            leaf::PHYMEM_CACHE_WB
            | leaf::PHYMEM_PAGE_WBINVD
            | leaf::SYS_INIT
            | leaf::SYS_LP_INIT => {}
            leaf::MNG_KEY_FREEID => {
                let td = Self::td(st, a.rcx, op::RCX)?;
                if td.state != TdState::VcpusFlushed {
                    return Err(Status(errno::FLUSHVP_NOT_DONE));
                }
                td.state = TdState::KeysFreed;
                let hkid = td.hkid;
                st.hkids.remove(&hkid);
            }
            leaf::PHYMEM_PAGE_RECLAIM => {
                let page = a.rcx & !0xfff;
                let o = st
                    .pages
                    .get(&page)
                    .copied()
                    .ok_or(err(errno::PAGE_METADATA_INCORRECT, op::RCX))?;
                let tdr = o
                    .td(page)
                    .ok_or(err(errno::PAGE_METADATA_INCORRECT, op::RCX))?;
                let td = Self::td(st, tdr, op::RCX)?;
                if td.state != TdState::KeysFreed {
                    return Err(Status(errno::HKID_NOT_FREE));
                }
                if o == Owner::Tdr && td.children != 0 {
                    return Err(Status(errno::TD_ASSOCIATED_PAGES_EXIST));
                }
                match o {
                    Owner::Sept { level, gpa, .. } => {
                        td.sept.remove(&(level, gpa));
                    }
                    Owner::Private { gpa, .. } => {
                        td.leaves.remove(&gpa);
                    }
                    _ => {}
                }
                Self::unassign(st, page);
                if o == Owner::Tdr {
                    st.tds.remove(&tdr);
                }
            }
            _ => return Err(err(errno::OPERAND_INVALID, op::RAX)),
        }
        Ok(Status::OK)
    }
}

#[cfg(all(test, not(loom)))]
pub(crate) mod tests;
