//! TD and vCPU set-up, the private-memory fault path, page removal and teardown with reclaim, as KVM's
//! `arch/x86/kvm/vmx/tdx.c` does them, over any [`Seamcall`].
//!
//! - Control pages (TDR, TDCS, TDVPR, TDCX) come from [`Td::alloc_control_page`]: a host page plus its
//!   Dynamic PAMT reference (the series' `tdx_alloc_control_page()`), and go back through
//!   [`Td::free_control_page`].
//! - The fault path ([`Td::fault`]) first tops up the vCPU's two fixed pools outside any lock (one for
//!   DPAMT page pairs, one external S-EPT page cache: `cnt + dpamt_entry_pages × levels`, as the
//!   series' `tdx_prealloc`), then links missing S-EPT levels (SEPT.ADD, top-down) and maps the page
//!   (PAGE.AUG after finalization, PAGE.ADD before). BUSY and lost races come back as
//!   [`TdxError::Busy`] / `Ok(false)`, for the caller to retry the fault, as KVM's RET_PF_RETRY.
//! - Removal is RANGE.BLOCK → TRACK → PAGE.REMOVE, then the page's DPAMT reference is dropped.
//! - Teardown: VP.FLUSH each vCPU, VPFLUSHDONE, CACHE.WB, KEY.FREEID, then PAGE.RECLAIM every page
//!   (private, S-EPT, TDCX, TDVPR, TDCS; TDR last) and drop each DPAMT reference.
#![forbid(unsafe_code)]

use super::dpamt::{Dpamt, DpamtError};
use super::errno::{self, Status};
use super::pool::{PageAllocator, PagePool, PoolEmpty};
use super::seamcall::{leaf, tdh, Seamcall, PS_4K, SEPT_512G};
use super::table::{Table, TableFull};
use super::tdmr::{ModuleInfo, SZ_2M};

/// S-EPT levels above a 4 KiB leaf in a 4-level S-EPT (PDPT, PD, PT pages; the root lives in TDCS).
pub const SEPT_LEVELS: usize = 3;
/// DPAMT pool: enough for one fault (a pair per S-EPT page and one for the private page).
pub const DPAMT_POOL: usize = 2 * (SEPT_LEVELS + 1) + 2;
/// External S-EPT page cache per vCPU.
pub const SEPT_POOL: usize = SEPT_LEVELS;
/// TDCS pages libvmm can hold (the module's count must fit), vCPUs per TD, TDCX pages per vCPU.
pub use crate::config::{
    TDX_MAX_TDCS as MAX_TDCS, TDX_MAX_TDCX as MAX_TDCX, TDX_MAX_VCPUS as MAX_VCPUS,
};
/// BUSY retries of removal/teardown SEAMCALLs (paths that must not fail) before the error is returned.
pub const REMOVE_RETRIES: u32 = 16;

/// Why a TDX operation failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TdxError {
    /// A fixed pool, page allocator or table ran dry.
    OutOfPages,
    TableFull,
    Dpamt(DpamtError),
    /// The module answered BUSY: retry the fault (or the removal later).
    Busy {
        leaf: u64,
        status: Status,
    },
    /// Any other status.
    Firmware {
        leaf: u64,
        status: Status,
    },
    /// libvmm's own limits (too many TDCS/TDCX pages or vCPUs).
    Limit(&'static str),
}

impl From<PoolEmpty> for TdxError {
    fn from(_: PoolEmpty) -> Self {
        Self::OutOfPages
    }
}
impl From<TableFull> for TdxError {
    fn from(_: TableFull) -> Self {
        Self::TableFull
    }
}
impl From<DpamtError> for TdxError {
    fn from(e: DpamtError) -> Self {
        match e {
            DpamtError::PoolEmpty => Self::OutOfPages,
            e => Self::Dpamt(e),
        }
    }
}

fn check(leaf: u64, status: Status) -> Result<(), TdxError> {
    if status.is_success() {
        Ok(())
    } else if status.is_busy() {
        Err(TdxError::Busy { leaf, status })
    } else {
        Err(TdxError::Firmware { leaf, status })
    }
}

/// Per-vCPU fault-path state: the two fixed pools and counters.
pub struct VcpuCtx {
    pub dpamt_pool: PagePool<DPAMT_POOL>,
    pub sept_pool: PagePool<SEPT_POOL>,
    /// Fault attempts that ended in BUSY from the module (S-EPT or PAMT locks).
    pub busy_faults: u64,
    /// A private page whose DPAMT reference this vCPU kept after a BUSY fault, so the retry neither
    /// drops nor re-takes it (with the series' put-on-error, a BUSY AUG on a range's first page removes
    /// the backing that the retry installs again; the bench counts the difference).
    held: Option<u64>,
    /// Keep the reference across a BUSY retry (default). `false` is the series' put-on-error policy,
    /// kept for the bench's comparison.
    pub keep_ref_on_busy: bool,
}

impl Default for VcpuCtx {
    fn default() -> Self {
        Self {
            dpamt_pool: PagePool::default(),
            sept_pool: PagePool::default(),
            busy_faults: 0,
            held: None,
            keep_ref_on_busy: true,
        }
    }
}

impl VcpuCtx {
    /// Fills both pools for one worst-case fault, outside any lock.
    pub fn topup<A: PageAllocator>(
        &mut self,
        alloc: &mut A,
        dpamt_pages_per_range: usize,
    ) -> Result<(), PoolEmpty> {
        self.sept_pool.topup(alloc, SEPT_LEVELS)?;
        self.dpamt_pool.topup(
            alloc,
            (dpamt_pages_per_range * (SEPT_LEVELS + 1)).min(DPAMT_POOL),
        )
    }
    /// Returns every pooled page to `alloc` (call [`Td::release_vcpu`] first to drop a held reference).
    pub fn drain<A: PageAllocator>(&mut self, alloc: &mut A) -> Result<(), TdxError> {
        self.dpamt_pool
            .drain_into(alloc)
            .map_err(|_| TdxError::OutOfPages)?;
        self.sept_pool
            .drain_into(alloc)
            .map_err(|_| TdxError::OutOfPages)
    }
}

/// One vCPU's control pages.
pub struct TdVcpu {
    pub tdvpr: u64,
    pub tdcx: heapless::Vec<u64, MAX_TDCX>,
}

/// One TD: its control pages and libvmm's record of the S-EPT and private pages it gave the module.
/// `T` bounds both records.
pub struct Td<'a, S: Seamcall, const R: usize, const T: usize> {
    sc: &'a S,
    dpamt: &'a Dpamt<R>,
    info: ModuleInfo,
    pub tdr: u64,
    pub hkid: u16,
    tdcs: heapless::Vec<u64, MAX_TDCS>,
    vcpus: heapless::Vec<TdVcpu, MAX_VCPUS>,
    /// S-EPT pages: key `gpa | level` → page.
    sept: Table<T>,
    /// Private pages: key `gpa | 1` → page.
    private: Table<T>,
    finalized: bool,
}

const fn sept_key(gpa: u64, level: u64) -> u64 {
    gpa | level
}
const fn leaf_key(gpa: u64) -> u64 {
    gpa | 1
}
const fn span(level: u64) -> u64 {
    1 << (12 + 9 * level)
}

impl<'a, S: Seamcall, const R: usize, const T: usize> Td<'a, S, R, T> {
    fn dpamt_pages(&self) -> usize {
        self.info.dpamt_entry_pages() as usize
    }

    /// A control page: a host page with its Dynamic PAMT reference taken.
    pub fn alloc_control_page<A: PageAllocator>(
        sc: &S,
        dpamt: &Dpamt<R>,
        info: &ModuleInfo,
        alloc: &mut A,
        pool: &mut PagePool<DPAMT_POOL>,
    ) -> Result<u64, TdxError> {
        pool.topup(alloc, info.dpamt_entry_pages() as usize)?;
        let page = alloc.alloc_page().ok_or(TdxError::OutOfPages)?;
        if let Err(e) = dpamt.get(sc, page, pool) {
            let _ = alloc.free_page(page);
            return Err(e.into());
        }
        Ok(page)
    }

    /// Gives a control page (no longer owned by the module) back: drops its DPAMT reference.
    pub fn free_control_page<A: PageAllocator>(
        sc: &S,
        dpamt: &Dpamt<R>,
        alloc: &mut A,
        page: u64,
    ) -> Result<(), TdxError> {
        let freed = dpamt.put(sc, page);
        let _ = alloc.free_page(page);
        if let Some(pair) = freed? {
            for p in pair {
                let _ = alloc.free_page(p);
            }
        }
        Ok(())
    }

    /// TDH.MNG.CREATE → KEY.CONFIG → ADDCX × tdcs_pages → MNG.INIT (TD_PARAMS at `td_params`).
    /// On failure everything created is torn down again.
    pub fn create<A: PageAllocator>(
        sc: &'a S,
        dpamt: &'a Dpamt<R>,
        info: ModuleInfo,
        alloc: &mut A,
        hkid: u16,
        td_params: u64,
    ) -> Result<Self, TdxError> {
        if info.tdcs_pages as usize > MAX_TDCS {
            return Err(TdxError::Limit("TDCS pages"));
        }
        let mut pool = PagePool::default();
        let tdr = match Self::alloc_control_page(sc, dpamt, &info, alloc, &mut pool) {
            Ok(p) => p,
            Err(e) => {
                let _ = pool.drain_into(alloc);
                return Err(e);
            }
        };
        if let Err(e) = check(leaf::MNG_CREATE, tdh::mng_create(sc, tdr, hkid)) {
            let _ = Self::free_control_page(sc, dpamt, alloc, tdr);
            let _ = pool.drain_into(alloc);
            return Err(e);
        }
        let mut td = Td {
            sc,
            dpamt,
            info,
            tdr,
            hkid,
            tdcs: heapless::Vec::new(),
            vcpus: heapless::Vec::new(),
            sept: Table::default(),
            private: Table::default(),
            finalized: false,
        };
        let r = td.configure(alloc, &mut pool, td_params);
        let _ = pool.drain_into(alloc);
        match r {
            Ok(()) => Ok(td),
            Err(e) => {
                let _ = td.teardown(alloc);
                Err(e)
            }
        }
    }

    fn configure<A: PageAllocator>(
        &mut self,
        alloc: &mut A,
        pool: &mut PagePool<DPAMT_POOL>,
        td_params: u64,
    ) -> Result<(), TdxError> {
        let s = tdh::mng_key_config(self.sc, self.tdr);
        if !s.is(errno::KEY_CONFIGURED) {
            check(leaf::MNG_KEY_CONFIG, s)?;
        }
        for _ in 0..self.info.tdcs_pages {
            let page = Self::alloc_control_page(self.sc, self.dpamt, &self.info, alloc, pool)?;
            if let Err(e) = check(leaf::MNG_ADDCX, tdh::mng_addcx(self.sc, self.tdr, page)) {
                let _ = Self::free_control_page(self.sc, self.dpamt, alloc, page);
                return Err(e);
            }
            // Cannot fail: tdcs_pages <= MAX_TDCS was checked.
            let _ = self.tdcs.push(page);
        }
        check(leaf::MNG_INIT, tdh::mng_init(self.sc, self.tdr, td_params))
    }

    /// TDH.VP.CREATE + VP.ADDCX × (tdvps_pages − 1). Returns the vCPU index.
    pub fn create_vcpu<A: PageAllocator>(&mut self, alloc: &mut A) -> Result<usize, TdxError> {
        if self.vcpus.is_full() {
            return Err(TdxError::Limit("vCPUs"));
        }
        let ntdcx = self.info.tdvps_pages.saturating_sub(1) as usize;
        if ntdcx > MAX_TDCX {
            return Err(TdxError::Limit("TDCX pages"));
        }
        let mut pool = PagePool::default();
        let r = self.create_vcpu_inner(alloc, &mut pool, ntdcx);
        let _ = pool.drain_into(alloc);
        r
    }

    fn create_vcpu_inner<A: PageAllocator>(
        &mut self,
        alloc: &mut A,
        pool: &mut PagePool<DPAMT_POOL>,
        ntdcx: usize,
    ) -> Result<usize, TdxError> {
        let tdvpr = Self::alloc_control_page(self.sc, self.dpamt, &self.info, alloc, pool)?;
        if let Err(e) = check(leaf::VP_CREATE, tdh::vp_create(self.sc, self.tdr, tdvpr)) {
            let _ = Self::free_control_page(self.sc, self.dpamt, alloc, tdvpr);
            return Err(e);
        }
        // Recorded at once so teardown reclaims it whatever fails next. Cannot fail: checked not full.
        let _ = self.vcpus.push(TdVcpu {
            tdvpr,
            tdcx: heapless::Vec::new(),
        });
        let idx = self.vcpus.len() - 1;
        for _ in 0..ntdcx {
            let page = Self::alloc_control_page(self.sc, self.dpamt, &self.info, alloc, pool)?;
            if let Err(e) = check(leaf::VP_ADDCX, tdh::vp_addcx(self.sc, tdvpr, page)) {
                let _ = Self::free_control_page(self.sc, self.dpamt, alloc, page);
                return Err(e);
            }
            let _ = self.vcpus[idx].tdcx.push(page);
        }
        Ok(idx)
    }

    /// TDH.MR.FINALIZE: from now on private memory arrives by PAGE.AUG.
    pub fn finalize(&mut self) -> Result<(), TdxError> {
        check(leaf::MR_FINALIZE, tdh::mr_finalize(self.sc, self.tdr))?;
        self.finalized = true;
        Ok(())
    }

    pub fn vcpus(&self) -> usize {
        self.vcpus.len()
    }
    pub fn sept_pages(&self) -> usize {
        self.sept.len()
    }
    pub fn private_pages(&self) -> usize {
        self.private.len()
    }
    /// The host page backing a private GPA.
    pub fn private_page(&self, gpa: u64) -> Option<u64> {
        self.private.get(leaf_key(gpa & !0xfff))
    }

    /// Maps the private 4 KiB page `hpa` at `gpa`, linking S-EPT levels as needed. `source` is the page
    /// whose contents PAGE.ADD copies (before finalization). `Ok(true)` when this call mapped it,
    /// `Ok(false)` when another vCPU had mapped `gpa` already (then `hpa` stays the caller's).
    pub fn fault<A: PageAllocator>(
        &self,
        vcpu: &mut VcpuCtx,
        alloc: &mut A,
        gpa: u64,
        hpa: u64,
        source: u64,
    ) -> Result<bool, TdxError> {
        let gpa = gpa & !0xfff;
        vcpu.topup(alloc, self.dpamt_pages())?;
        let r = self.fault_locked(vcpu, gpa, hpa, source);
        if matches!(r, Err(TdxError::Busy { .. })) {
            vcpu.busy_faults += 1;
        }
        r
    }

    fn fault_locked(
        &self,
        vcpu: &mut VcpuCtx,
        gpa: u64,
        hpa: u64,
        source: u64,
    ) -> Result<bool, TdxError> {
        for level in (1..=SEPT_512G).rev() {
            let base = gpa & !(span(level) - 1);
            if self.sept.contains(sept_key(base, level)) {
                continue;
            }
            let page = vcpu.sept_pool.take()?;
            if let Err(e) = self.dpamt.get(self.sc, page, &mut vcpu.dpamt_pool) {
                let _ = vcpu.sept_pool.give(page);
                return Err(e.into());
            }
            let s = tdh::mem_sept_add(self.sc, self.tdr, base, level, page);
            if s.is_success() {
                self.sept.insert(sept_key(base, level), page)?;
                continue;
            }
            // Not taken by the module: undo our reference, keep the page.
            self.unref_into(vcpu, page);
            let _ = vcpu.sept_pool.give(page);
            if s.is(errno::EPT_ENTRY_NOT_FREE) {
                continue; // another vCPU linked this level first
            }
            return Err(check(leaf::MEM_SEPT_ADD, s)
                .err()
                .unwrap_or(TdxError::Firmware {
                    leaf: leaf::MEM_SEPT_ADD,
                    status: s,
                }));
        }
        match vcpu.held.take() {
            Some(h) if h == hpa => {}
            other => {
                if let Some(h) = other {
                    self.unref_into(vcpu, h);
                }
                self.dpamt.get(self.sc, hpa, &mut vcpu.dpamt_pool)?;
            }
        }
        let (lf, s) = if self.finalized {
            (
                leaf::MEM_PAGE_AUG,
                tdh::mem_page_aug(self.sc, self.tdr, gpa, hpa),
            )
        } else {
            (
                leaf::MEM_PAGE_ADD,
                tdh::mem_page_add(self.sc, self.tdr, gpa, hpa, source),
            )
        };
        if s.is_success() {
            self.private.insert(leaf_key(gpa), hpa)?;
            return Ok(true);
        }
        if s.is_busy() && vcpu.keep_ref_on_busy {
            vcpu.held = Some(hpa);
            return Err(TdxError::Busy {
                leaf: lf,
                status: s,
            });
        }
        self.unref_into(vcpu, hpa);
        if s.is(errno::EPT_ENTRY_NOT_FREE) {
            return Ok(false);
        }
        Err(check(lf, s).err().unwrap_or(TdxError::Firmware {
            leaf: lf,
            status: s,
        }))
    }

    /// Ends a vCPU's use of the fault path: drops a reference kept for a retry and returns its pools.
    pub fn release_vcpu<A: PageAllocator>(
        &self,
        vcpu: &mut VcpuCtx,
        alloc: &mut A,
    ) -> Result<(), TdxError> {
        if let Some(h) = vcpu.held.take() {
            self.unref_into(vcpu, h);
        }
        vcpu.drain(alloc)
    }

    /// Drops a DPAMT reference taken on the fault path; a freed pair goes back to the vCPU's pool.
    fn unref_into(&self, vcpu: &mut VcpuCtx, page: u64) {
        if let Ok(Some(pair)) = self.dpamt.put(self.sc, page) {
            for p in pair {
                let _ = vcpu.dpamt_pool.give(p);
            }
        }
    }

    /// Unmaps the private page at `gpa`: BLOCK → TRACK → REMOVE (bounded BUSY retry), WBINVD, then drops
    /// its DPAMT reference. Returns the host page and any freed PAMT pages to `alloc`'s caller via `free`.
    pub fn remove_private<A: PageAllocator>(
        &self,
        alloc: &mut A,
        gpa: u64,
    ) -> Result<u64, TdxError> {
        let gpa = gpa & !0xfff;
        let hpa = self.private.get(leaf_key(gpa)).ok_or(TdxError::Firmware {
            leaf: leaf::MEM_PAGE_REMOVE,
            status: Status::with_operand(errno::EPT_ENTRY_FREE, errno::operand::RCX),
        })?;
        let s = retry(|| tdh::mem_range_block(self.sc, self.tdr, gpa, PS_4K));
        if !s.is(errno::GPA_RANGE_ALREADY_BLOCKED) {
            check(leaf::MEM_RANGE_BLOCK, s)?;
        }
        check(leaf::MEM_TRACK, retry(|| tdh::mem_track(self.sc, self.tdr)))?;
        check(
            leaf::MEM_PAGE_REMOVE,
            retry(|| tdh::mem_page_remove(self.sc, self.tdr, gpa, PS_4K)),
        )?;
        self.private.remove(leaf_key(gpa));
        let _ = tdh::phymem_page_wbinvd(self.sc, hpa);
        if let Some(pair) = self.dpamt.put(self.sc, hpa)? {
            for p in pair {
                let _ = alloc.free_page(p);
            }
        }
        Ok(hpa)
    }

    /// Tears the TD down and reclaims every page: private pages and S-EPT pages go to `alloc` (the caller
    /// owns private pages' memory; here they are returned to the same allocator), control pages too.
    pub fn teardown<A: PageAllocator>(mut self, alloc: &mut A) -> Result<(), TdxError> {
        let sc = self.sc;
        for v in &self.vcpus {
            check(leaf::VP_FLUSH, retry(|| tdh::vp_flush(sc, v.tdvpr)))?;
        }
        check(
            leaf::MNG_VPFLUSHDONE,
            retry(|| tdh::mng_vpflushdone(sc, self.tdr)),
        )?;
        let s = tdh::phymem_cache_wb(sc, false);
        if !s.is(errno::NO_HKID_READY_TO_WBCACHE) {
            check(leaf::PHYMEM_CACHE_WB, s)?;
        }
        check(
            leaf::MNG_KEY_FREEID,
            retry(|| tdh::mng_key_freeid(sc, self.tdr)),
        )?;
        let mut first_err = Ok(());
        let mut reclaim = |page: u64, alloc: &mut A| {
            let r = check(
                leaf::PHYMEM_PAGE_RECLAIM,
                retry(|| tdh::phymem_page_reclaim(sc, page)),
            )
            .and_then(|()| check(leaf::PHYMEM_PAGE_WBINVD, tdh::phymem_page_wbinvd(sc, page)))
            .and_then(|()| Self::free_control_page(sc, self.dpamt, alloc, page));
            if first_err.is_ok() {
                first_err = r;
            }
        };
        // Private pages, then S-EPT pages, in batches of a fixed scratch list.
        loop {
            let mut batch: heapless::Vec<u64, 64> = heapless::Vec::new();
            self.private.take_some(&mut batch);
            self.sept.take_some(&mut batch);
            if batch.is_empty() {
                break;
            }
            for p in batch {
                reclaim(p, alloc);
            }
        }
        for v in self.vcpus.iter() {
            for &p in v.tdcx.iter() {
                reclaim(p, alloc);
            }
            reclaim(v.tdvpr, alloc);
        }
        for &p in self.tdcs.iter() {
            reclaim(p, alloc);
        }
        reclaim(self.tdr, alloc);
        first_err
    }
}

/// Re-issues a call that must not fail while the module answers BUSY, at most [`REMOVE_RETRIES`] times
/// (KVM kicks vCPUs out of the guest and retries; no vCPU runs inside the model).
fn retry(mut f: impl FnMut() -> Status) -> Status {
    let mut s = f();
    let mut n = 1;
    while s.is_busy() && n < REMOVE_RETRIES {
        super::sync::spin_hint();
        s = f();
        n += 1;
    }
    s
}

/// The 2 MiB range base of an address (for callers grouping faults).
pub const fn range_base(hpa: u64) -> u64 {
    hpa & !(SZ_2M - 1)
}
