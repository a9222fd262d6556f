//! The one SEAMCALL seam: a trait with two implementations chosen at compile time, plus typed wrappers
//! for the leaves libvmm uses.
//!
//! [`Seamcall`] is implemented by the real instruction (`arch::x86_64::seamcall::Real`, inline asm, only
//! in bare-metal x86_64 builds) and by the software TDX-module model (`tdx::sim::SimModule`, host
//! tests and the `tdx-sim` feature). Every TDX function in libvmm is generic over `S: Seamcall`, so the
//! choice is made by the type the caller instantiates, never through a vtable.
//!
//! Register use follows the TDX module ABI as Linux encodes it (`arch/x86/virt/vmx/tdx/tdx.c`,
//! `tdh_*()` helpers): RAX = leaf (bits 15:0) | version (bits 23:16); inputs/outputs in RCX, RDX, R8,
//! R9, R10, R11; status back in RAX.
#![forbid(unsafe_code)]

use super::errno::Status;

/// SEAMCALL leaf numbers (Linux `arch/x86/virt/vmx/tdx/tdx.h`; PAMT.ADD/REMOVE from the Dynamic PAMT
/// series; SYS.INFO and SEPT.REMOVE from the TDX module ABI spec).
pub mod leaf {
    pub const VP_ENTER: u64 = 0;
    pub const MNG_ADDCX: u64 = 1;
    pub const MEM_PAGE_ADD: u64 = 2;
    pub const MEM_SEPT_ADD: u64 = 3;
    pub const VP_ADDCX: u64 = 4;
    pub const MEM_PAGE_AUG: u64 = 6;
    pub const MEM_RANGE_BLOCK: u64 = 7;
    pub const MNG_KEY_CONFIG: u64 = 8;
    pub const MNG_CREATE: u64 = 9;
    pub const VP_CREATE: u64 = 10;
    pub const MR_FINALIZE: u64 = 17;
    pub const VP_FLUSH: u64 = 18;
    pub const MNG_VPFLUSHDONE: u64 = 19;
    pub const MNG_KEY_FREEID: u64 = 20;
    pub const MNG_INIT: u64 = 21;
    pub const VP_INIT: u64 = 22;
    pub const PHYMEM_PAGE_RECLAIM: u64 = 28;
    pub const MEM_PAGE_REMOVE: u64 = 29;
    pub const MEM_SEPT_REMOVE: u64 = 30;
    pub const SYS_INFO: u64 = 32;
    pub const SYS_INIT: u64 = 33;
    pub const SYS_RD: u64 = 34;
    pub const SYS_LP_INIT: u64 = 35;
    pub const MEM_TRACK: u64 = 38;
    pub const PHYMEM_CACHE_WB: u64 = 40;
    pub const PHYMEM_PAGE_WBINVD: u64 = 41;
    pub const PHYMEM_PAMT_ADD: u64 = 58;
    pub const PHYMEM_PAMT_REMOVE: u64 = 59;
}

/// Global metadata field IDs for TDH.SYS.RD (Linux `tdx_global_metadata.c`; the DPAMT bitmap field from
/// the Dynamic PAMT series).
pub mod field {
    pub const TDX_FEATURES0: u64 = 0x0A00_0003_0000_0008;
    pub const MAX_TDMRS: u64 = 0x9100_0001_0000_0008;
    pub const PAMT_4K_ENTRY_SIZE: u64 = 0x9100_0001_0000_0010;
    pub const PAMT_2M_ENTRY_SIZE: u64 = 0x9100_0001_0000_0011;
    pub const PAMT_1G_ENTRY_SIZE: u64 = 0x9100_0001_0000_0012;
    pub const PAMT_PAGE_BITMAP_ENTRY_BITS: u64 = 0x9100_0001_0000_0013;
    pub const TDR_BASE_SIZE: u64 = 0x9800_0001_0000_0000;
    pub const TDCS_BASE_SIZE: u64 = 0x9800_0001_0000_0100;
    pub const TDVPS_BASE_SIZE: u64 = 0x9800_0001_0000_0200;
    /// `TDX_FEATURES0` bit: Dynamic PAMT is supported.
    pub const FEATURES0_DYNAMIC_PAMT: u64 = 1 << 36;
}

/// TDX page-size levels in GPA/HPA operands (`TDX_PS_4K/2M/1G`; Linux pg_level − 1). S-EPT page-table
/// levels continue upwards: [`SEPT_512G`] is the level of the PDPT-linking entry.
pub const PS_4K: u64 = 0;
pub const PS_2M: u64 = 1;
pub const PS_1G: u64 = 2;
pub const SEPT_512G: u64 = 3;

/// Entropy retries per call, as Linux `sc_retry()` (`RDRAND_RETRY_LOOPS`).
pub const ENTROPY_RETRIES: u32 = 10;

/// The general-purpose registers a SEAMCALL reads and writes besides RAX (Linux `struct tdx_module_args`,
/// the part libvmm's leaves use).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Args {
    pub rcx: u64,
    pub rdx: u64,
    pub r8: u64,
    pub r9: u64,
    pub r10: u64,
    pub r11: u64,
}

/// One SEAMCALL: `leaf` into RAX, `args` in and out, the status from RAX back.
///
/// `&self` and `Sync`: SEAMCALL is issued concurrently from every CPU; the module serialises internally and
/// answers BUSY instead of waiting.
pub trait Seamcall: Sync {
    fn call(&self, leaf: u64, args: &mut Args) -> Status;

    /// [`Seamcall::call`], re-issued while the module reports `RND_NO_ENTROPY` (Linux `sc_retry()`).
    fn call_retry(&self, leaf: u64, args: &mut Args) -> Status {
        let input = *args;
        let mut status = self.call(leaf, args);
        let mut tries = 1;
        while status.is_entropy_retry() && tries < ENTROPY_RETRIES {
            *args = input;
            status = self.call(leaf, args);
            tries += 1;
        }
        status
    }
}

fn call1<S: Seamcall>(sc: &S, leaf: u64, rcx: u64) -> Status {
    sc.call_retry(
        leaf,
        &mut Args {
            rcx,
            ..Args::default()
        },
    )
}
fn call2<S: Seamcall>(sc: &S, leaf: u64, rcx: u64, rdx: u64) -> Status {
    sc.call_retry(
        leaf,
        &mut Args {
            rcx,
            rdx,
            ..Args::default()
        },
    )
}

/// Typed wrappers, one per leaf: the Rust form of Linux's `tdh_*()` exports.
pub mod tdh {
    use super::*;

    /// TDH.SYS.INIT: global module initialization (once, any CPU).
    pub fn sys_init<S: Seamcall>(sc: &S) -> Status {
        sc.call_retry(leaf::SYS_INIT, &mut Args::default())
    }
    /// TDH.SYS.LP.INIT: per-CPU initialization (every CPU, after SYS.INIT).
    pub fn sys_lp_init<S: Seamcall>(sc: &S) -> Status {
        sc.call_retry(leaf::SYS_LP_INIT, &mut Args::default())
    }
    /// TDH.SYS.RD: one global metadata field.
    pub fn sys_rd<S: Seamcall>(sc: &S, field: u64) -> Result<u64, Status> {
        let mut a = Args {
            rdx: field,
            ..Args::default()
        };
        sc.call_retry(leaf::SYS_RD, &mut a).ok().map(|()| a.r8)
    }
    /// TDH.PHYMEM.PAMT.ADD: installs `pages` as the 4 KiB PAMT of the 2 MiB range at `hpa_2m`.
    pub fn phymem_pamt_add<S: Seamcall>(sc: &S, hpa_2m: u64, pages: [u64; 2]) -> Status {
        let mut a = Args {
            rcx: hpa_2m | PS_2M,
            rdx: pages[0],
            r8: pages[1],
            ..Args::default()
        };
        sc.call_retry(leaf::PHYMEM_PAMT_ADD, &mut a)
    }
    /// TDH.PHYMEM.PAMT.REMOVE: removes the 4 KiB PAMT of a 2 MiB range and returns its pages.
    pub fn phymem_pamt_remove<S: Seamcall>(sc: &S, hpa_2m: u64) -> Result<[u64; 2], Status> {
        let mut a = Args {
            rcx: hpa_2m | PS_2M,
            ..Args::default()
        };
        sc.call_retry(leaf::PHYMEM_PAMT_REMOVE, &mut a)
            .ok()
            .map(|()| [a.rdx, a.r8])
    }
    pub fn mng_create<S: Seamcall>(sc: &S, tdr: u64, hkid: u16) -> Status {
        call2(sc, leaf::MNG_CREATE, tdr, hkid as u64)
    }
    pub fn mng_key_config<S: Seamcall>(sc: &S, tdr: u64) -> Status {
        call1(sc, leaf::MNG_KEY_CONFIG, tdr)
    }
    pub fn mng_addcx<S: Seamcall>(sc: &S, tdr: u64, tdcs_page: u64) -> Status {
        call2(sc, leaf::MNG_ADDCX, tdcs_page, tdr)
    }
    pub fn mng_init<S: Seamcall>(sc: &S, tdr: u64, td_params: u64) -> Status {
        call2(sc, leaf::MNG_INIT, tdr, td_params)
    }
    pub fn vp_create<S: Seamcall>(sc: &S, tdr: u64, tdvpr: u64) -> Status {
        call2(sc, leaf::VP_CREATE, tdvpr, tdr)
    }
    pub fn vp_addcx<S: Seamcall>(sc: &S, tdvpr: u64, tdcx: u64) -> Status {
        call2(sc, leaf::VP_ADDCX, tdcx, tdvpr)
    }
    pub fn vp_init<S: Seamcall>(sc: &S, tdvpr: u64, initial_rcx: u64) -> Status {
        call2(sc, leaf::VP_INIT, tdvpr, initial_rcx)
    }
    pub fn mr_finalize<S: Seamcall>(sc: &S, tdr: u64) -> Status {
        call1(sc, leaf::MR_FINALIZE, tdr)
    }
    /// TDH.MEM.SEPT.ADD: links `page` as the S-EPT table below the entry at (`gpa`, `level`).
    pub fn mem_sept_add<S: Seamcall>(sc: &S, tdr: u64, gpa: u64, level: u64, page: u64) -> Status {
        let mut a = Args {
            rcx: gpa | level,
            rdx: tdr,
            r8: page,
            ..Args::default()
        };
        sc.call_retry(leaf::MEM_SEPT_ADD, &mut a)
    }
    /// TDH.MEM.PAGE.AUG: adds a pending private 4 KiB page after the TD is finalized.
    pub fn mem_page_aug<S: Seamcall>(sc: &S, tdr: u64, gpa: u64, page: u64) -> Status {
        let mut a = Args {
            rcx: gpa | PS_4K,
            rdx: tdr,
            r8: page,
            ..Args::default()
        };
        sc.call_retry(leaf::MEM_PAGE_AUG, &mut a)
    }
    /// TDH.MEM.PAGE.ADD: adds an initial (measured) private page before finalization, copying `source`.
    pub fn mem_page_add<S: Seamcall>(sc: &S, tdr: u64, gpa: u64, page: u64, source: u64) -> Status {
        let mut a = Args {
            rcx: gpa,
            rdx: tdr,
            r8: page,
            r9: source,
            ..Args::default()
        };
        sc.call_retry(leaf::MEM_PAGE_ADD, &mut a)
    }
    pub fn mem_range_block<S: Seamcall>(sc: &S, tdr: u64, gpa: u64, level: u64) -> Status {
        call2(sc, leaf::MEM_RANGE_BLOCK, gpa | level, tdr)
    }
    pub fn mem_track<S: Seamcall>(sc: &S, tdr: u64) -> Status {
        call1(sc, leaf::MEM_TRACK, tdr)
    }
    pub fn mem_page_remove<S: Seamcall>(sc: &S, tdr: u64, gpa: u64, level: u64) -> Status {
        call2(sc, leaf::MEM_PAGE_REMOVE, gpa | level, tdr)
    }
    pub fn vp_flush<S: Seamcall>(sc: &S, tdvpr: u64) -> Status {
        call1(sc, leaf::VP_FLUSH, tdvpr)
    }
    pub fn mng_vpflushdone<S: Seamcall>(sc: &S, tdr: u64) -> Status {
        call1(sc, leaf::MNG_VPFLUSHDONE, tdr)
    }
    pub fn phymem_cache_wb<S: Seamcall>(sc: &S, resume: bool) -> Status {
        call1(sc, leaf::PHYMEM_CACHE_WB, resume as u64)
    }
    pub fn mng_key_freeid<S: Seamcall>(sc: &S, tdr: u64) -> Status {
        call1(sc, leaf::MNG_KEY_FREEID, tdr)
    }
    /// TDH.PHYMEM.PAGE.RECLAIM: takes a page of a torn-down TD back from the module.
    pub fn phymem_page_reclaim<S: Seamcall>(sc: &S, page: u64) -> Status {
        call1(sc, leaf::PHYMEM_PAGE_RECLAIM, page)
    }
    /// TDH.PHYMEM.PAGE.WBINVD: writes back and invalidates a page's cache lines under the TD's key
    /// (`hkid_pa` = page | hkid << MAXPHYADDR, composed by the caller).
    pub fn phymem_page_wbinvd<S: Seamcall>(sc: &S, hkid_pa: u64) -> Status {
        call1(sc, leaf::PHYMEM_PAGE_WBINVD, hkid_pa)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tdx::errno;
    use core::cell::Cell;
    use std::sync::Mutex;

    /// Fails with RND_NO_ENTROPY `fails` times, then succeeds; records what it saw.
    struct Flaky {
        fails: Mutex<Cell<u32>>,
        seen: Mutex<std::vec::Vec<(u64, Args)>>,
    }
    impl Seamcall for Flaky {
        fn call(&self, leaf: u64, args: &mut Args) -> Status {
            self.seen.lock().unwrap().push((leaf, *args));
            args.r8 = 0xdead; // outputs clobber inputs, as the real instruction may
            let f = self.fails.lock().unwrap();
            if f.get() > 0 {
                f.set(f.get() - 1);
                Status(errno::RND_NO_ENTROPY)
            } else {
                Status::OK
            }
        }
    }

    #[test]
    fn entropy_retry_reissues_with_the_original_inputs_and_gives_up_when_bounded() {
        let sc = Flaky {
            fails: Mutex::new(Cell::new(3)),
            seen: Mutex::default(),
        };
        assert!(tdh::mem_page_aug(&sc, 0x1000, 0x5000, 0x9000).is_success());
        let seen = sc.seen.lock().unwrap();
        assert_eq!(seen.len(), 4);
        assert!(seen
            .iter()
            .all(|(l, a)| *l == leaf::MEM_PAGE_AUG && a.r8 == 0x9000 && a.rcx == 0x5000));
        drop(seen);
        let sc = Flaky {
            fails: Mutex::new(Cell::new(100)),
            seen: Mutex::default(),
        };
        assert!(tdh::mng_key_config(&sc, 0x1000).is_entropy_retry());
        assert_eq!(sc.seen.lock().unwrap().len(), ENTROPY_RETRIES as usize);
    }

    #[test]
    fn pamt_add_encodes_the_2m_range_and_page_pair_as_the_series_does() {
        let sc = Flaky {
            fails: Mutex::new(Cell::new(0)),
            seen: Mutex::default(),
        };
        let _ = tdh::phymem_pamt_add(&sc, 0x4000_0000, [0x7000, 0x8000]);
        let (l, a) = sc.seen.lock().unwrap()[0];
        assert_eq!(l, 58);
        assert_eq!((a.rcx, a.rdx, a.r8), (0x4000_0001, 0x7000, 0x8000));
    }
}
