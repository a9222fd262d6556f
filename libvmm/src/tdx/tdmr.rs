//! TDMRs and PAMT sizing, as the kernel sets them up (Linux `arch/x86/virt/vmx/tdx/tdx.c`,
//! `construct_tdmrs()` / `tdmr_get_pamt_sz()`, and the Dynamic PAMT series' bitmap).
//!
//! A TDMR is a 1 GiB-aligned range of convertible memory the module may use. Each carries three PAMT
//! areas: 1 GiB-level, 2 MiB-level and 4 KiB-level entries (`entries = size >> {30,21,12}`,
//! `bytes = entries × entry size` rounded up to 4 KiB). With Dynamic PAMT the 4 KiB area becomes a bitmap
//! of `bits-per-page × pages` (1 bit today), and the real 4 KiB entries arrive per 2 MiB range at run
//! time (`tdx::dpamt`). [`RangeMap`] numbers the 2 MiB ranges of all TDMRs densely so the refcounts cover
//! exactly the memory TDMRs cover (the series' "populate only ranges backing real memory").
#![forbid(unsafe_code)]

use super::errno::Status;
use super::seamcall::{field, tdh, Seamcall};

pub const SZ_4K: u64 = 1 << 12;
pub const SZ_2M: u64 = 1 << 21;
pub const SZ_1G: u64 = 1 << 30;

/// TDMRs libvmm supports (the module reports its own limit in `MAX_TDMRS`).
pub use crate::config::TDX_MAX_TDMRS as MAX_TDMRS;

/// PAMT and control-structure facts read from the module (TDH.SYS.RD).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ModuleInfo {
    pub pamt_4k_entry_size: u64,
    pub pamt_2m_entry_size: u64,
    pub pamt_1g_entry_size: u64,
    /// `Some(bits per 4 KiB page)` when the module supports Dynamic PAMT (TDX_FEATURES0 bit 36).
    pub dpamt_bitmap_bits: Option<u64>,
    /// 4 KiB pages of TDCS (TDH.MNG.ADDCX calls per TD).
    pub tdcs_pages: u64,
    /// 4 KiB pages of TDVPS: one TDVPR plus `tdvps_pages - 1` TDCX pages per vCPU.
    pub tdvps_pages: u64,
}

impl ModuleInfo {
    /// Reads the facts with TDH.SYS.RD, as Linux `get_tdx_sys_info()` does.
    pub fn read<S: Seamcall>(sc: &S) -> Result<Self, Status> {
        let features = tdh::sys_rd(sc, field::TDX_FEATURES0)?;
        let dpamt_bitmap_bits = if features & field::FEATURES0_DYNAMIC_PAMT != 0 {
            Some(tdh::sys_rd(sc, field::PAMT_PAGE_BITMAP_ENTRY_BITS)?)
        } else {
            None
        };
        Ok(Self {
            pamt_4k_entry_size: tdh::sys_rd(sc, field::PAMT_4K_ENTRY_SIZE)?,
            pamt_2m_entry_size: tdh::sys_rd(sc, field::PAMT_2M_ENTRY_SIZE)?,
            pamt_1g_entry_size: tdh::sys_rd(sc, field::PAMT_1G_ENTRY_SIZE)?,
            dpamt_bitmap_bits,
            tdcs_pages: tdh::sys_rd(sc, field::TDCS_BASE_SIZE)? / SZ_4K,
            tdvps_pages: tdh::sys_rd(sc, field::TDVPS_BASE_SIZE)? / SZ_4K,
        })
    }

    /// Pages of 4 KiB PAMT one 2 MiB range needs under Dynamic PAMT (`tdx_dpamt_entry_pages()`:
    /// 512 entries × entry size / 4 KiB = 2 with 16-byte entries).
    pub const fn dpamt_entry_pages(&self) -> u64 {
        (self.pamt_4k_entry_size * 512).div_ceil(SZ_4K)
    }
}

/// One TDMR: `[base, base + size)`, both 1 GiB-aligned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tdmr {
    pub base: u64,
    pub size: u64,
}

/// The PAMT areas of one TDMR, carved from one contiguous allocation (4K, then 2M, then 1G).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Pamt {
    pub base: u64,
    pub size_4k: u64,
    pub size_2m: u64,
    pub size_1g: u64,
}

impl Pamt {
    pub const fn total(&self) -> u64 {
        self.size_4k + self.size_2m + self.size_1g
    }
}

const fn round_up(x: u64, to: u64) -> u64 {
    x.div_ceil(to) * to
}

/// PAMT sizes of one TDMR; `dynamic` replaces the 4 KiB entries by the bitmap.
pub fn pamt_sizes(tdmr: Tdmr, info: &ModuleInfo, dynamic: bool) -> Pamt {
    let pages = tdmr.size / SZ_4K;
    let size_4k = match (dynamic, info.dpamt_bitmap_bits) {
        (true, Some(bits)) => round_up((pages * bits).div_ceil(8), SZ_4K),
        _ => round_up(pages * info.pamt_4k_entry_size, SZ_4K),
    };
    Pamt {
        base: 0,
        size_4k,
        size_2m: round_up((tdmr.size / SZ_2M) * info.pamt_2m_entry_size, SZ_4K),
        size_1g: round_up((tdmr.size / SZ_1G) * info.pamt_1g_entry_size, SZ_4K),
    }
}

/// Why TDMRs could not be built.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TdmrError {
    TooManyTdmrs,
    /// No contiguous memory for a PAMT of this many bytes.
    NoPamtMemory(u64),
    EmptyRange,
}

/// The TDMR_INFO layout the module reads in TDH.SYS.CONFIG (Linux `struct tdmr_info`, 512-byte aligned;
/// reserved areas omitted: libvmm's TDMRs cover convertible memory only).
#[repr(C, align(512))]
#[derive(Clone, Copy, Debug, Default)]
pub struct TdmrInfoHw {
    pub base: u64,
    pub size: u64,
    pub pamt_1g_base: u64,
    pub pamt_1g_size: u64,
    pub pamt_2m_base: u64,
    pub pamt_2m_size: u64,
    pub pamt_4k_base: u64,
    pub pamt_4k_size: u64,
}
static_assertions::const_assert_eq!(core::mem::size_of::<TdmrInfoHw>(), 512);

/// The TDMRs of the machine with their PAMTs.
#[derive(Clone, Debug, Default)]
pub struct TdmrSet {
    pub tdmrs: heapless::Vec<(Tdmr, Pamt), MAX_TDMRS>,
    pub dynamic: bool,
}

impl TdmrSet {
    /// Covers each convertible memory range (sorted by base) with 1 GiB-aligned TDMRs (merging ranges
    /// that share a gigabyte) and allocates each PAMT from `alloc(bytes) -> base` (physically contiguous,
    /// 4 KiB-aligned, as the kernel's `alloc_contig_pages()`).
    pub fn build(
        memory: &[(u64, u64)],
        info: &ModuleInfo,
        dynamic: bool,
        mut alloc: impl FnMut(u64) -> Option<u64>,
    ) -> Result<Self, TdmrError> {
        let dynamic = dynamic && info.dpamt_bitmap_bits.is_some();
        let mut set = TdmrSet {
            tdmrs: heapless::Vec::new(),
            dynamic,
        };
        for &(base, size) in memory {
            if size == 0 {
                return Err(TdmrError::EmptyRange);
            }
            let start = base & !(SZ_1G - 1);
            let end = round_up(base + size, SZ_1G);
            if let Some((last, _)) = set.tdmrs.last_mut() {
                if start <= last.base + last.size {
                    let new_end = end.max(last.base + last.size);
                    last.size = new_end - last.base;
                    continue;
                }
            }
            set.tdmrs
                .push((
                    Tdmr {
                        base: start,
                        size: end - start,
                    },
                    Pamt::default(),
                ))
                .map_err(|_| TdmrError::TooManyTdmrs)?;
        }
        for (tdmr, pamt) in set.tdmrs.iter_mut() {
            let mut p = pamt_sizes(*tdmr, info, dynamic);
            p.base = alloc(p.total()).ok_or(TdmrError::NoPamtMemory(p.total()))?;
            *pamt = p;
        }
        Ok(set)
    }

    /// Bytes of PAMT allocated at set-up.
    pub fn pamt_bytes(&self) -> u64 {
        self.tdmrs.iter().map(|(_, p)| p.total()).sum()
    }
    /// Bytes of memory the TDMRs cover.
    pub fn covered_bytes(&self) -> u64 {
        self.tdmrs.iter().map(|(t, _)| t.size).sum()
    }
    pub fn contains(&self, hpa: u64) -> bool {
        self.tdmrs
            .iter()
            .any(|(t, _)| hpa >= t.base && hpa - t.base < t.size)
    }
    /// The hardware TDMR_INFO entries for TDH.SYS.CONFIG.
    pub fn hw(&self) -> heapless::Vec<TdmrInfoHw, MAX_TDMRS> {
        self.tdmrs
            .iter()
            .map(|(t, p)| TdmrInfoHw {
                base: t.base,
                size: t.size,
                pamt_4k_base: p.base,
                pamt_4k_size: p.size_4k,
                pamt_2m_base: p.base + p.size_4k,
                pamt_2m_size: p.size_2m,
                pamt_1g_base: p.base + p.size_4k + p.size_2m,
                pamt_1g_size: p.size_1g,
            })
            .collect()
    }
    /// Dense numbering of the 2 MiB ranges of all TDMRs.
    pub fn range_map(&self) -> RangeMap {
        let mut m = RangeMap::default();
        let mut first = 0;
        for (t, _) in &self.tdmrs {
            // Cannot fail: same capacity.
            let _ = m.tdmrs.push((t.base, t.size, first));
            first += (t.size / SZ_2M) as usize;
        }
        m.total = first;
        m
    }
}

/// Maps a host-physical address to the index of its 2 MiB range among all TDMRs.
#[derive(Clone, Debug, Default)]
pub struct RangeMap {
    tdmrs: heapless::Vec<(u64, u64, usize), MAX_TDMRS>,
    total: usize,
}

impl RangeMap {
    pub fn index(&self, hpa: u64) -> Option<usize> {
        self.tdmrs
            .iter()
            .find(|(b, s, _)| hpa >= *b && hpa - *b < *s)
            .map(|(b, _, first)| first + ((hpa - b) / SZ_2M) as usize)
    }
    /// Host-physical base of the range with dense `index`.
    pub fn base_of(&self, index: usize) -> Option<u64> {
        self.tdmrs.iter().find_map(|&(b, s, first)| {
            let n = (s / SZ_2M) as usize;
            (index >= first && index < first + n).then(|| b + (index - first) as u64 * SZ_2M)
        })
    }
    /// How many 2 MiB ranges the TDMRs have.
    pub fn len(&self) -> usize {
        self.total
    }
    pub fn is_empty(&self) -> bool {
        self.total == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn info() -> ModuleInfo {
        ModuleInfo {
            pamt_4k_entry_size: 16,
            pamt_2m_entry_size: 16,
            pamt_1g_entry_size: 16,
            dpamt_bitmap_bits: Some(1),
            tdcs_pages: 4,
            tdvps_pages: 4,
        }
    }

    #[test]
    fn static_pamt_is_about_0_4_percent_and_the_bitmap_about_0_004_percent() {
        let t = Tdmr {
            base: 0,
            size: 16 * SZ_1G,
        };
        let s = pamt_sizes(t, &info(), false);
        let d = pamt_sizes(t, &info(), true);
        // 4 KiB level dominates: 16 B per 4 KiB page = 1/256 = 0.39 %.
        assert_eq!(s.size_4k, t.size / 256);
        let pct = |b: u64| b as f64 * 100.0 / t.size as f64;
        assert!((0.39..0.40).contains(&pct(s.total())), "{}", pct(s.total()));
        // 1 bit per 4 KiB page = 1/32768 = 0.003 %, plus the 2 MiB/1 GiB levels.
        assert_eq!(d.size_4k, t.size / 4096 / 8);
        assert!(
            pct(d.size_4k) < 0.004 && pct(d.total()) < 0.005,
            "{}",
            pct(d.total())
        );
        assert_eq!(s.size_2m, d.size_2m);
        assert_eq!(info().dpamt_entry_pages(), 2);
    }

    #[test]
    fn tdmrs_are_gigabyte_aligned_merged_and_numbered_densely() {
        let mem = [
            (0x10_0000, 0x3ff0_0000),
            (0x4000_0000, 0x1000_0000),
            (0x1_0000_0000, 0x4000_0000),
        ];
        let mut next = 0x8000_0000u64;
        let set = TdmrSet::build(&mem, &info(), true, |b| {
            let p = next;
            next += b;
            Some(p)
        })
        .unwrap();
        assert_eq!(set.tdmrs.len(), 2);
        assert_eq!(
            set.tdmrs[0].0,
            Tdmr {
                base: 0,
                size: 2 * SZ_1G
            }
        );
        assert_eq!(
            set.tdmrs[1].0,
            Tdmr {
                base: 4 * SZ_1G,
                size: SZ_1G
            }
        );
        let map = set.range_map();
        assert_eq!(map.len(), 1536);
        assert_eq!(map.index(0), Some(0));
        assert_eq!(map.index(2 * SZ_1G), None, "hole between TDMRs");
        assert_eq!(map.index(4 * SZ_1G + SZ_2M + 5), Some(1025));
        let hw = set.hw();
        assert_eq!(hw[0].pamt_2m_base, hw[0].pamt_4k_base + hw[0].pamt_4k_size);
        let too_many: std::vec::Vec<(u64, u64)> = (0..9).map(|i| (i * 2 * SZ_1G, SZ_4K)).collect();
        assert_eq!(
            TdmrSet::build(&too_many, &info(), false, |_| Some(0)).unwrap_err(),
            TdmrError::TooManyTdmrs
        );
        assert_eq!(
            TdmrSet::build(&mem, &info(), false, |_| None).unwrap_err(),
            TdmrError::NoPamtMemory(set_static_bytes())
        );
    }

    fn set_static_bytes() -> u64 {
        pamt_sizes(
            Tdmr {
                base: 0,
                size: 2 * SZ_1G,
            },
            &info(),
            false,
        )
        .total()
    }
}
