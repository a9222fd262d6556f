//! Nested page tables (AMD NPT): map the guest window at guest-physical == host-physical, and nothing
//! else, with the permissions of the guest's W^X map ([`GuestMap`]): payload text read+execute, its
//! read-only data read-only, everything else read+write and no-execute (NX, bit 63: the host runs with
//! EFER.NXE, without which bit 63 is reserved and the NPF error code does not report fetches). One PML4,
//! one PDPT, one PD: the window must lie inside one 1 GiB-aligned GiB (checked at compile time). A 2 MiB
//! block with one permission is a 2 MiB leaf; a block that a region boundary crosses is split into
//! 4 KiB leaves through one of `config::NESTED_PAGE_TABLES` page tables (one per block of the window, so
//! the pool cannot run out).
//!
//! Blocks the map defers (zero on first touch, `lazy.rs`) are left not present; the
//! first nested fault there comes to the run loop, which zeroes the block, and [`NestedTables::map_block`]
//! then maps it as one read+write 2 MiB leaf. A not-present entry is never cached by the TLB or the
//! paging-structure caches, so no flush is needed when it becomes present.
//!
//! Nested walks are user accesses, so every entry carries U (emulators.md: without U the walk faults with
//! EXITINFO1 bit 33).
#![forbid(unsafe_code)]

use libvmm_abi::layout::x86_64::{WINDOW_BASE, WINDOW_SIZE};

use crate::config::NESTED_PAGE_TABLES;
use crate::loader::{GuestMap, Perm};

const P: u64 = 1 << 0;
const W: u64 = 1 << 1;
const U: u64 = 1 << 2;
const PS: u64 = 1 << 7;
const NX: u64 = 1 << 63;
const ADDR: u64 = 0x000F_FFFF_FFFF_F000;
const PAGE_4K: u64 = 1 << 12;
const PAGE_2M: u64 = 1 << 21;

static_assertions::const_assert!(
    WINDOW_BASE.is_multiple_of(PAGE_2M) && WINDOW_SIZE.is_multiple_of(PAGE_2M)
);
// The largest window stays in the one GiB the PD maps.
static_assertions::const_assert!(
    WINDOW_BASE >> 30 == (WINDOW_BASE + libvmm_abi::layout::x86_64::WINDOW_MAX - 1) >> 30
);

#[repr(C, align(4096))]
#[derive(Clone, Copy)]
pub struct Table(pub [u64; 512]);

/// The table pages: PML4, PDPT, PD and the 4 KiB-leaf tables. `pa` gives each page's host-physical
/// address (identity in the VMM; any injective function in tests).
#[repr(C, align(4096))]
pub struct NestedTables {
    pub pml4: Table,
    pub pdpt: Table,
    pub pd: Table,
    pub pt: [Table; NESTED_PAGE_TABLES],
    /// The 4 KiB-leaf table of the one page outside the window: the guest's SIPI page (guest SMP,
    /// [`NestedTables::map_sipi_page`]).
    pub low: Table,
}

/// What a guest-physical address translates to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Translation {
    pub hpa: u64,
    pub writable: bool,
    pub executable: bool,
    /// Mapped by a 4 KiB leaf (else 2 MiB).
    pub small: bool,
}

/// Why the tables could not be built.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NptError {
    /// The map is not 4 KiB aligned or leaves the one GiB the tables cover.
    BadMap,
    /// More 2 MiB blocks need 4 KiB leaves than `config::NESTED_PAGE_TABLES`.
    NoTables,
}

/// The leaf bits of a permission (below the address; `PS` added for 2 MiB leaves).
const fn leaf_bits(perm: Perm) -> u64 {
    match perm {
        Perm::ReadOnly => P | U | NX,
        Perm::ReadWrite => P | W | U | NX,
        Perm::ReadExecute => P | U,
    }
}

impl NestedTables {
    pub const fn new() -> Self {
        Self {
            pml4: Table([0; 512]),
            pdpt: Table([0; 512]),
            pd: Table([0; 512]),
            pt: [Table([0; 512]); NESTED_PAGE_TABLES],
            low: Table([0; 512]),
        }
    }

    /// Fills the tables so that the map's window maps to itself with the map's permissions, and
    /// nothing else is mapped. `pa` translates a table page to its host-physical address.
    pub fn map(&mut self, map: &GuestMap, pa: impl Fn(&Table) -> u64) -> Result<(), NptError> {
        let (base, end) = (map.base(), map.end());
        if !(base | end).is_multiple_of(PAGE_4K) || base >= end || base >> 30 != (end - 1) >> 30 {
            return Err(NptError::BadMap);
        }
        self.pml4.0 = [0; 512];
        self.pdpt.0 = [0; 512];
        self.pd.0 = [0; 512];
        for t in self.pt.iter_mut() {
            t.0 = [0; 512];
        }
        self.low.0 = [0; 512];
        self.pml4.0[((base >> 39) & 511) as usize] = pa(&self.pdpt) | P | W | U;
        self.pdpt.0[((base >> 30) & 511) as usize] = pa(&self.pd) | P | W | U;
        let mut used = 0;
        let mut block = base & !(PAGE_2M - 1);
        while block < end {
            let pde = &mut self.pd.0[((block >> 21) & 511) as usize];
            if map.is_deferred(block) {
                block += PAGE_2M;
                continue;
            }
            match map.uniform(block, PAGE_2M) {
                Some(perm) => *pde = block | leaf_bits(perm) | PS,
                None => {
                    if used == NESTED_PAGE_TABLES {
                        return Err(NptError::NoTables);
                    }
                    *pde = pa(&self.pt[used]) | P | W | U;
                    for (i, e) in self.pt[used].0.iter_mut().enumerate() {
                        let gpa = block + i as u64 * PAGE_4K;
                        *e = match map.perm_at(gpa) {
                            Some(perm) => gpa | leaf_bits(perm),
                            None => 0,
                        };
                    }
                    used += 1;
                }
            }
            block += PAGE_2M;
        }
        Ok(())
    }

    /// Guest SMP: maps guest-physical `gpa` (a page below the window, in a 2 MiB block with nothing else
    /// mapped: the SIPI page, `layout::x86_64::SIPI_PAGE`) read+execute onto host-physical `hpa`, a page
    /// of the window (which the guest writes at its own address). After [`NestedTables::map`].
    pub fn map_sipi_page(
        &mut self,
        gpa: u64,
        hpa: u64,
        pa: impl Fn(&Table) -> u64,
    ) -> Result<(), NptError> {
        let in_window = |a: u64| (WINDOW_BASE..WINDOW_BASE + WINDOW_SIZE).contains(&a);
        let pde = ((gpa >> 21) & 511) as usize;
        if !(gpa | hpa).is_multiple_of(PAGE_4K)
            || gpa >> 30 != WINDOW_BASE >> 30
            || gpa >> 21 == WINDOW_BASE >> 21
            || in_window(gpa)
            || !in_window(hpa)
            || self.pd.0[pde] & P != 0
        {
            return Err(NptError::BadMap);
        }
        self.pd.0[pde] = pa(&self.low) | P | W | U;
        self.low.0[((gpa >> 12) & 511) as usize] = hpa | leaf_bits(Perm::ReadExecute);
        Ok(())
    }

    /// Maps the 2 MiB block at `block` read+write (never executable) where nothing is mapped yet: a
    /// block of the window [`NestedTables::map`] left pending. `false` when `block` is not 2 MiB aligned,
    /// outside the GiB the tables map, or already mapped.
    pub fn map_block(&mut self, block: u64, pa: impl Fn(&Table) -> u64) -> bool {
        let e4 = self.pml4.0[((block >> 39) & 511) as usize];
        let e3 = self.pdpt.0[((block >> 30) & 511) as usize];
        if !block.is_multiple_of(PAGE_2M)
            || block >> 48 != 0
            || e4 & ADDR != pa(&self.pdpt)
            || e3 & ADDR != pa(&self.pd)
        {
            return false;
        }
        let pde = &mut self.pd.0[((block >> 21) & 511) as usize];
        if *pde & P != 0 {
            return false;
        }
        *pde = block | leaf_bits(Perm::ReadWrite) | PS;
        true
    }

    /// Walks the tables like the CPU would: `None` when the address is not mapped (or an entry points
    /// at a page that is not one of these tables).
    pub fn translate(&self, gpa: u64, pa: impl Fn(&Table) -> u64) -> Option<Translation> {
        if gpa >> 48 != 0 {
            return None;
        }
        let e4 = self.pml4.0[((gpa >> 39) & 511) as usize];
        if e4 & P == 0 || e4 & ADDR != pa(&self.pdpt) {
            return None;
        }
        let e3 = self.pdpt.0[((gpa >> 30) & 511) as usize];
        if e3 & P == 0 || e3 & PS != 0 || e3 & ADDR != pa(&self.pd) {
            return None;
        }
        let e2 = self.pd.0[((gpa >> 21) & 511) as usize];
        if e2 & P == 0 {
            return None;
        }
        let (leaf, size, small) = if e2 & PS != 0 {
            (e2, PAGE_2M, false)
        } else {
            let t = self
                .pt
                .iter()
                .chain(core::iter::once(&self.low))
                .find(|t| pa(t) == e2 & ADDR)?;
            (t.0[((gpa >> 12) & 511) as usize], PAGE_4K, true)
        };
        if leaf & P == 0 {
            return None;
        }
        // Every level must allow it (the CPU combines W and NX over the walk).
        let w = e4 & e3 & e2 & leaf & W != 0;
        let nx = (e4 | e3 | e2 | leaf) & NX != 0;
        Some(Translation {
            hpa: (leaf & ADDR & !(size - 1)) | (gpa & (size - 1)),
            writable: w,
            executable: !nx,
            small,
        })
    }
}

impl Default for NestedTables {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::GUEST_MAP_REGIONS;
    use crate::loader::{map_segments, PAGE};
    use crate::PayloadSegment;
    use libvmm_abi::layout::{x86_64::PAYLOAD_BASE, STACK_SIZE};

    /// Host-physical address of a table: its host address (the tables are boxed, so distinct).
    fn pa(t: &Table) -> u64 {
        t as *const Table as u64
    }

    const TEXT: u64 = PAYLOAD_BASE;
    const RODATA: u64 = PAYLOAD_BASE + 0x5000;
    const DATA: u64 = PAYLOAD_BASE + 0x7000;
    const DATA_SIZE: u64 = 0x2_1800;

    /// The map of a payload shaped like the linker scripts make them.
    fn payload_map() -> GuestMap {
        static SEGS: [PayloadSegment; 3] = [
            PayloadSegment {
                gpa: TEXT,
                mem_size: 0x4321,
                flags: PayloadSegment::R | PayloadSegment::X,
            },
            PayloadSegment {
                gpa: RODATA,
                mem_size: 0x1234,
                flags: PayloadSegment::R,
            },
            PayloadSegment {
                gpa: DATA,
                mem_size: DATA_SIZE,
                flags: PayloadSegment::R | PayloadSegment::W,
            },
        ];
        let p = (SEGS, TEXT, DATA + DATA_SIZE - TEXT);
        map_segments(&p.0[..], p.1, p.1 + p.2, TEXT, WINDOW_BASE, WINDOW_SIZE).unwrap()
    }

    fn tables(map: &GuestMap) -> Box<NestedTables> {
        let mut t = Box::new(NestedTables::new());
        t.map(map, pa).unwrap();
        t
    }

    fn own_pages(t: &NestedTables) -> Vec<u64> {
        let mut v = vec![pa(&t.pml4), pa(&t.pdpt), pa(&t.pd)];
        v.extend(t.pt.iter().map(pa));
        v.push(pa(&t.low));
        v
    }

    #[test]
    fn the_sipi_page_is_one_read_execute_alias_of_a_window_page() {
        use libvmm_abi::layout::x86_64::{SIPI_PAGE, SIPI_PAGE_OFFSET};
        let mut t = tables(&payload_map());
        let hpa = WINDOW_BASE + SIPI_PAGE_OFFSET;
        t.map_sipi_page(SIPI_PAGE, hpa, pa).unwrap();
        let tr = t.translate(SIPI_PAGE + 0x10, pa).unwrap();
        assert_eq!(tr.hpa, hpa + 0x10);
        assert!(tr.executable && !tr.writable && tr.small);
        // Its neighbours and the rest of low memory stay unmapped.
        for gpa in [
            0,
            SIPI_PAGE - 1,
            SIPI_PAGE + 0x1000,
            0x10_0000,
            WINDOW_BASE - 1,
        ] {
            assert_eq!(t.translate(gpa, pa), None, "{gpa:#x}");
        }
        // The window page stays read+write, no execute.
        let w = t.translate(hpa, pa).unwrap();
        assert!(w.writable && !w.executable);
        // Refused: twice, inside the window, onto memory outside the window, unaligned.
        assert_eq!(t.map_sipi_page(SIPI_PAGE, hpa, pa), Err(NptError::BadMap));
        let mut t = tables(&payload_map());
        assert_eq!(t.map_sipi_page(hpa, hpa, pa), Err(NptError::BadMap));
        assert_eq!(
            t.map_sipi_page(SIPI_PAGE, 0x10_0000, pa),
            Err(NptError::BadMap)
        );
        assert_eq!(
            t.map_sipi_page(SIPI_PAGE + 1, hpa, pa),
            Err(NptError::BadMap)
        );
    }

    #[test]
    fn the_window_maps_to_itself_with_the_maps_permissions_page_by_page() {
        let map = payload_map();
        let t = tables(&map);
        // Every 4 KiB page of the window: identity, and exactly the map's rights.
        let mut gpa = WINDOW_BASE;
        while gpa < WINDOW_BASE + WINDOW_SIZE {
            let perm = map.perm_at(gpa).unwrap();
            let tr = t.translate(gpa + 0x123, pa).expect("mapped");
            assert_eq!(tr.hpa, gpa + 0x123);
            assert_eq!(tr.writable, perm.writable(), "{gpa:#x}");
            assert_eq!(tr.executable, perm.executable(), "{gpa:#x}");
            gpa += PAGE;
        }
        // Text r-x, read-only data r--, data/bss rw-, boot info and stack rw-.
        let at = |g| t.translate(g, pa).unwrap();
        assert!(at(TEXT).executable && !at(TEXT).writable);
        assert!(
            at(TEXT + 0x4fff).executable,
            "the text's last page, rounded up"
        );
        assert!(!at(RODATA).executable && !at(RODATA).writable);
        assert!(!at(DATA).executable && at(DATA).writable);
        assert!(!at(DATA + DATA_SIZE).executable && at(DATA + DATA_SIZE).writable);
        assert!(!at(WINDOW_BASE).executable && at(WINDOW_BASE).writable);
        let stack = WINDOW_BASE + WINDOW_SIZE - STACK_SIZE;
        assert!(!at(stack).executable && at(stack).writable);
    }

    #[test]
    fn only_blocks_a_boundary_crosses_are_split() {
        let map = payload_map();
        let t = tables(&map);
        assert!(t.translate(WINDOW_BASE, pa).unwrap().small);
        for block in 1..WINDOW_SIZE / PAGE_2M {
            let tr = t.translate(WINDOW_BASE + block * PAGE_2M, pa).unwrap();
            assert!(!tr.small, "block {block} is one 2 MiB leaf");
        }
        let split =
            t.pd.0
                .iter()
                .filter(|e| **e & P != 0 && **e & PS == 0)
                .count();
        assert_eq!(split, 1);
        // A whole-window map needs no 4 KiB table at all.
        let t = tables(&GuestMap::whole(WINDOW_BASE, WINDOW_SIZE, Perm::ReadWrite));
        assert!(t.pd.0.iter().all(|e| *e & P == 0 || *e & PS != 0));
    }

    #[test]
    fn nothing_outside_the_window_is_mapped() {
        let t = tables(&payload_map());
        // The VMM image, its tables, low memory, just around the window, high memory, non-canonical.
        let mut outside = vec![
            0,
            0x10_0000,
            WINDOW_BASE - 1,
            WINDOW_BASE + WINDOW_SIZE,
            0xFEE0_0000,
            1 << 40,
            u64::MAX,
        ];
        outside.extend(own_pages(&t));
        for gpa in outside {
            assert_eq!(t.translate(gpa, pa), None, "{gpa:#x}");
        }
        // Exhaustive over 2 MiB steps of the first 4 GiB.
        let mapped = (0..(4u64 << 30))
            .step_by(PAGE_2M as usize)
            .filter(|&g| t.translate(g, pa).is_some())
            .count();
        assert_eq!(mapped as u64, WINDOW_SIZE / PAGE_2M);
    }

    #[test]
    fn every_entry_is_user_and_no_leaf_is_writable_and_executable() {
        let t = tables(&payload_map());
        let all = t
            .pml4
            .0
            .iter()
            .chain(&t.pdpt.0)
            .chain(&t.pd.0)
            .chain(t.pt.iter().flat_map(|p| p.0.iter()))
            .chain(t.low.0.iter())
            .filter(|e| **e & P != 0);
        for e in all {
            assert_eq!(e & U, U);
            let is_leaf = e & PS != 0 || t.pt.iter().any(|p| p.0.contains(e));
            if is_leaf {
                assert!(e & W == 0 || e & NX != 0, "W^X: {e:#x}");
            }
        }
    }

    #[test]
    fn deferred_blocks_stay_unmapped_until_map_block() {
        let size = 256 << 20;
        let mut map = map_segments(
            &[PayloadSegment {
                gpa: TEXT,
                mem_size: 0x4321,
                flags: PayloadSegment::R | PayloadSegment::X,
            }],
            TEXT,
            TEXT + 0x4321,
            TEXT,
            WINDOW_BASE,
            size,
        )
        .unwrap();
        assert_eq!(map.defer_from(TEXT + 0x4321), 127);
        let mut t = tables(&map);
        assert!(t.translate(TEXT, pa).unwrap().executable);
        for g in (WINDOW_BASE + PAGE_2M..WINDOW_BASE + size).step_by(PAGE_2M as usize) {
            assert_eq!(t.translate(g, pa), None, "{g:#x} pending");
        }
        assert!(map.is_deferred(WINDOW_BASE + 100 * PAGE_2M + 5));
        let block = WINDOW_BASE + 100 * PAGE_2M;
        assert!(t.map_block(block, pa));
        let tr = t.translate(block + 0x1234, pa).unwrap();
        assert_eq!(tr.hpa, block + 0x1234);
        assert!(tr.writable && !tr.executable && !tr.small);
        // Once only, aligned only, inside the window's GiB only.
        assert!(!t.map_block(block, pa));
        assert!(!t.map_block(block + PAGE_2M + 0x1000, pa));
        assert!(!t.map_block(1 << 30, pa));
        assert_eq!(t.translate(block + PAGE_2M, pa), None);
    }

    #[test]
    fn the_worst_split_layout_fits_the_pool_and_a_wide_map_is_refused() {
        // Synthetic: segments that each start and end in the middle of a 2 MiB block, so every segment
        // needs two split blocks: more than the pool (outside libvmm's own 8 MiB window, where the pool
        // covers every block).
        let base = 0x4000_0000;
        let segs: Vec<_> = (0..crate::config::PAYLOAD_SEGMENTS_MAX as u64)
            .map(|i| PayloadSegment {
                gpa: base + 0x1_0000 + i * 2 * PAGE_2M,
                mem_size: PAGE_2M,
                flags: PayloadSegment::R | PayloadSegment::X,
            })
            .collect();
        let n = segs.len() as u64;
        let segs: &'static [PayloadSegment] = Box::leak(segs.into_boxed_slice());
        let p = (segs, base + 0x1_0000, (n - 1) * 2 * PAGE_2M + PAGE_2M);
        let map = map_segments(p.0, p.1, p.1 + p.2, base + 0x1_0000, base, 16 * PAGE_2M).unwrap();
        assert!(map.regions().len() <= GUEST_MAP_REGIONS);
        // Every boundary of the map needs at most one split block: the pool covers the worst case.
        assert_eq!(2 * n as usize, NESTED_PAGE_TABLES);
        let mut t = Box::new(NestedTables::new());
        assert_eq!(t.map(&map, pa), Ok(()));
        // A map across a GiB boundary is refused.
        let wide = GuestMap::whole(0x3FE0_0000, 2 * PAGE_2M, Perm::ReadWrite);
        assert_eq!(t.map(&wide, pa), Err(NptError::BadMap));
    }
}
