//! G-stage (guest-physical -> host-physical) tables in Sv39x4 form, mapping the guest's window and
//! nothing else, with the guest's W^X map.
//!
//! Sv39x4 (privileged spec, "Guest Physical Address Translation"): guest-physical addresses are 41 bits;
//! the root table is widened to 2048 entries (16 KiB, 16 KiB aligned), the lower levels are ordinary Sv39
//! tables. Every leaf has U=1 (G-stage accesses count as user accesses) and A/D preset (no reliance on
//! hardware A/D updates). Leaf rights come from [`GuestMap`]: payload text R+X, read-only data R, the
//! rest of the window R+W, never W and X together, so a store to text is a store guest-page fault
//! (cause 23) and a fetch from data an instruction guest-page fault (cause 20). A 2 MiB block with one
//! permission is a 2 MiB leaf from a fixed pool of level-1 tables; a block a region boundary crosses is
//! split into 4 KiB leaves through one of a fixed pool of level-0 tables (`config::NESTED_PAGE_TABLES`):
//! no allocation, and running out of tables is an error.
//!
//! Blocks the map defers (zero on first touch, `GuestMap::take_pending`) are left invalid; the first
//! guest-page fault there comes to the run loop, which zeroes the block, and [`GStage::map_block`] maps
//! it as one read+write 2 MiB leaf (followed by an HFENCE.GVMA of the block: the privileged spec lets a
//! hart cache invalid entries).
//!
//! The tables live in one struct (the SimpleVisor habit: a fixed, compile-time-sized footprint). Host
//! physical addresses of the tables are their addresses: the VMM runs with satp = Bare.
#![forbid(unsafe_code)]

use libvmm_abi::layout::riscv64::{WINDOW_BASE, WINDOW_MAX};

use super::csr;
use crate::config::NESTED_PAGE_TABLES;
use crate::loader::{GuestMap, Perm};

pub const ROOT_ENTRIES: usize = 2048;
pub const TABLE_ENTRIES: usize = 512;
pub const PAGE_4K: u64 = 4 << 10;
pub const PAGE_2M: u64 = 2 << 20;
/// Sv39x4 guest-physical addresses are 41 bits wide.
pub const GPA_LIMIT: u64 = 1 << 41;

pub const PTE_V: u64 = 1 << 0;
pub const PTE_R: u64 = 1 << 1;
pub const PTE_W: u64 = 1 << 2;
pub const PTE_X: u64 = 1 << 3;
pub const PTE_U: u64 = 1 << 4;
pub const PTE_A: u64 = 1 << 6;
pub const PTE_D: u64 = 1 << 7;
const PTE_PPN_SHIFT: u64 = 10;
const PTE_PPN_MASK: u64 = ((1 << 44) - 1) << PTE_PPN_SHIFT;

// The largest window lies in one gigabyte: one level-1 table.
static_assertions::const_assert!(WINDOW_BASE >> 30 == (WINDOW_BASE + WINDOW_MAX - 1) >> 30);

/// Leaf flags of a permission.
pub const fn leaf(perm: Perm) -> u64 {
    let rights = match perm {
        Perm::ReadOnly => PTE_R,
        Perm::ReadWrite => PTE_R | PTE_W,
        Perm::ReadExecute => PTE_R | PTE_X,
    };
    PTE_V | PTE_U | PTE_A | PTE_D | rights
}

#[repr(C, align(16384))]
pub struct RootTable(pub [u64; ROOT_ENTRIES]);

#[repr(C, align(4096))]
pub struct Table(pub [u64; TABLE_ENTRIES]);

static_assertions::const_assert_eq!(core::mem::size_of::<RootTable>(), 16384);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MapError {
    /// Address or size not 2 MiB aligned (4 KiB for a guest map), or zero size.
    Unaligned,
    /// Beyond the 41-bit Sv39x4 guest-physical space, or overflowing.
    OutOfRange,
    /// The range overlaps an existing mapping.
    Overlap,
    /// A pool of tables (level 1 or level 0) is exhausted.
    NoTables,
}

/// The G-stage tables of one VM, with a pool of `N` level-1 tables (each maps 1 GiB in 2 MiB leaves)
/// and `P` level-0 tables (each maps one 2 MiB block in 4 KiB leaves).
pub struct GStage<const N: usize, const P: usize = { NESTED_PAGE_TABLES }> {
    root: RootTable,
    l1: [Table; N],
    l0: [Table; P],
    used: usize,
    used0: usize,
}

impl<const N: usize, const P: usize> Default for GStage<N, P> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize, const P: usize> GStage<N, P> {
    pub const fn new() -> Self {
        Self {
            root: RootTable([0; ROOT_ENTRIES]),
            l1: [const { Table([0; TABLE_ENTRIES]) }; N],
            l0: [const { Table([0; TABLE_ENTRIES]) }; P],
            used: 0,
            used0: 0,
        }
    }

    /// Host-physical address of the root table.
    pub fn root_pa(&self) -> u64 {
        core::ptr::addr_of!(self.root) as u64
    }

    fn l1_pa(&self, i: usize) -> u64 {
        core::ptr::addr_of!(self.l1[i]) as u64
    }

    fn l0_pa(&self, i: usize) -> u64 {
        core::ptr::addr_of!(self.l0[i]) as u64
    }

    /// Host-physical addresses of every table page (for the VMM's own self-check).
    pub fn table_pas(&self) -> impl Iterator<Item = u64> + '_ {
        core::iter::once(self.root_pa())
            .chain((0..N).map(|i| self.l1_pa(i)))
            .chain((0..P).map(|i| self.l0_pa(i)))
    }

    /// The hgatp value that selects these tables for `vmid`.
    pub fn hgatp(&self, vmid: u16) -> u64 {
        csr::HGATP_MODE_SV39X4
            | ((vmid as u64) << csr::HGATP_VMID_SHIFT) & csr::HGATP_VMID_MASK
            | (self.root_pa() >> 12) & csr::HGATP_PPN_MASK
    }

    /// Checks `[gpa, gpa + size)` -> `[hpa, hpa + size)` is in range, `align`ed and not mapped yet.
    fn check(&self, gpa: u64, hpa: u64, size: u64, align: u64) -> Result<(), MapError> {
        if size == 0 || !(gpa | hpa | size).is_multiple_of(align) {
            return Err(MapError::Unaligned);
        }
        let end = gpa.checked_add(size).ok_or(MapError::OutOfRange)?;
        hpa.checked_add(size)
            .filter(|e| *e <= 1 << 56)
            .ok_or(MapError::OutOfRange)?;
        if end > GPA_LIMIT {
            return Err(MapError::OutOfRange);
        }
        let mut a = gpa;
        while a < end {
            if self.mapped_in_block(a) {
                return Err(MapError::Overlap);
            }
            a = (a & !(PAGE_2M - 1)) + PAGE_2M;
        }
        Ok(())
    }

    /// Whether anything is mapped in the 2 MiB block holding `gpa`.
    fn mapped_in_block(&self, gpa: u64) -> bool {
        let Some(t) = self.table_index(self.root.0[(gpa >> 30) as usize]) else {
            return false;
        };
        let e1 = self.l1[t].0[((gpa >> 21) & 0x1ff) as usize];
        match self.pointer(e1) {
            Some((true, z)) => self.l0[z].0.iter().any(|e| e & PTE_V != 0),
            _ => e1 & PTE_V != 0,
        }
    }

    /// Maps the 2 MiB block at `block` read+write where nothing is mapped (a block [`GStage::map_guest`]
    /// left pending), under a level-1 table already in use. `false` when `block` is not 2 MiB aligned,
    /// in a gigabyte without a table, or already mapped. The caller fences (HFENCE.GVMA).
    pub fn map_block(&mut self, block: u64) -> bool {
        if !block.is_multiple_of(PAGE_2M) || block >= GPA_LIMIT || self.mapped_in_block(block) {
            return false;
        }
        let Some(t) = self.table_index(self.root.0[(block >> 30) as usize]) else {
            return false;
        };
        self.l1[t].0[(block >> 21) as usize & 0x1ff] =
            ((block >> 12) << PTE_PPN_SHIFT) | leaf(Perm::ReadWrite);
        true
    }

    /// The level-1 table for the gigabyte of `gpa`, taken from the pool on first use.
    fn l1_for(&mut self, gpa: u64) -> Result<usize, MapError> {
        let ri = (gpa >> 30) as usize;
        if let Some(t) = self.table_index(self.root.0[ri]) {
            return Ok(t);
        }
        if self.used == N {
            return Err(MapError::NoTables);
        }
        let t = self.used;
        self.used += 1;
        self.root.0[ri] = ((self.l1_pa(t) >> 12) << PTE_PPN_SHIFT) | PTE_V;
        Ok(t)
    }

    /// Maps `[gpa, gpa + size)` to `[hpa, hpa + size)` with `perm`, in 2 MiB leaves (not identity:
    /// the tests' way to prove translation; the VMM maps its guest with [`GStage::map_guest`]).
    #[cfg(test)]
    pub fn map(&mut self, gpa: u64, hpa: u64, size: u64, perm: Perm) -> Result<(), MapError> {
        // Check first, then write: a failed map changes nothing it had not already proven free.
        self.check(gpa, hpa, size, PAGE_2M)?;
        let mut off = 0;
        while off < size {
            let t = self.l1_for(gpa + off)?;
            self.l1[t].0[((gpa + off) >> 21) as usize & 0x1ff] =
                (((hpa + off) >> 12) << PTE_PPN_SHIFT) | leaf(perm);
            off += PAGE_2M;
        }
        Ok(())
    }

    /// Maps the guest window of `map` to itself with the map's permissions: 2 MiB leaves where a block
    /// is uniform, 4 KiB leaves where a region boundary crosses it.
    pub fn map_guest(&mut self, map: &GuestMap) -> Result<(), MapError> {
        let (base, end) = (map.base(), map.end());
        // Checked block by block (a 4 KiB walk of a large window would make boot grow with it).
        self.check(base, base, end.saturating_sub(base), PAGE_4K)?;
        let mut block = base & !(PAGE_2M - 1);
        while block < end {
            let t = self.l1_for(block)?;
            let li = (block >> 21) as usize & 0x1ff;
            if map.is_pending(block) {
                block += PAGE_2M;
                continue;
            }
            match map.uniform(block, PAGE_2M) {
                Some(perm) => {
                    self.l1[t].0[li] = ((block >> 12) << PTE_PPN_SHIFT) | leaf(perm);
                }
                None => {
                    if self.used0 == P {
                        return Err(MapError::NoTables);
                    }
                    let z = self.used0;
                    self.used0 += 1;
                    for (i, e) in self.l0[z].0.iter_mut().enumerate() {
                        let gpa = block + i as u64 * PAGE_4K;
                        *e = match map.perm_at(gpa) {
                            Some(perm) => ((gpa >> 12) << PTE_PPN_SHIFT) | leaf(perm),
                            None => 0,
                        };
                    }
                    self.l1[t].0[li] = ((self.l0_pa(z) >> 12) << PTE_PPN_SHIFT) | PTE_V;
                }
            }
            block += PAGE_2M;
        }
        Ok(())
    }

    /// Which pool table a non-leaf entry points to: `(is_level0, index)`.
    fn pointer(&self, pte: u64) -> Option<(bool, usize)> {
        if pte & PTE_V == 0 || pte & (PTE_R | PTE_W | PTE_X) != 0 {
            return None;
        }
        let pa = ((pte & PTE_PPN_MASK) >> PTE_PPN_SHIFT) << 12;
        if let Some(i) = (0..self.used).find(|&i| self.l1_pa(i) == pa) {
            return Some((false, i));
        }
        (0..self.used0)
            .find(|&i| self.l0_pa(i) == pa)
            .map(|i| (true, i))
    }

    /// Which level-1 pool table a root entry points to.
    fn table_index(&self, pte: u64) -> Option<usize> {
        match self.pointer(pte)? {
            (false, i) => Some(i),
            (true, _) => None,
        }
    }

    /// Walks the tables as the hardware would: the host-physical address and leaf flags for `gpa`, or
    /// `None` (a guest-page fault on any access).
    pub fn translate(&self, gpa: u64) -> Option<(u64, u64)> {
        if gpa >= GPA_LIMIT {
            return None;
        }
        let t = self.table_index(self.root.0[(gpa >> 30) as usize])?;
        let e1 = self.l1[t].0[((gpa >> 21) & 0x1ff) as usize];
        let (leaf, size) = match self.pointer(e1) {
            Some((true, z)) => (self.l0[z].0[((gpa >> 12) & 0x1ff) as usize], PAGE_4K),
            Some((false, _)) => return None,
            None => (e1, PAGE_2M),
        };
        if leaf & PTE_V == 0 || leaf & PTE_R == 0 {
            return None;
        }
        let base = ((leaf & PTE_PPN_MASK) >> PTE_PPN_SHIFT) << 12;
        Some((base + (gpa & (size - 1)), leaf & 0x3ff))
    }

    /// Tables in use: (level 1, level 0).
    #[cfg(test)]
    pub fn tables_used(&self) -> (usize, usize) {
        (self.used, self.used0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::PayloadSegment;
    use libvmm_abi::layout::{riscv64 as l, STACK_SIZE};

    fn gs() -> Box<GStage<2>> {
        Box::new(GStage::new())
    }

    const TEXT: u64 = l::PAYLOAD_BASE;
    const RODATA: u64 = l::PAYLOAD_BASE + 0x5000;
    const DATA: u64 = l::PAYLOAD_BASE + 0x7000;

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
                mem_size: 0x2_1800,
                flags: PayloadSegment::R | PayloadSegment::W,
            },
        ];
        let p = (SEGS, TEXT, 0x7000 + 0x2_1800);
        crate::loader::map_segments(
            &p.0[..],
            p.1,
            p.1 + p.2,
            TEXT,
            l::WINDOW_BASE,
            l::WINDOW_SIZE,
        )
        .unwrap()
    }

    #[test]
    fn the_window_and_nothing_else_is_mapped_identity_with_the_maps_rights() {
        let map = payload_map();
        let mut g = gs();
        g.map_guest(&map).unwrap();
        // Every 4 KiB page: identity, exactly the map's rights, never W and X together.
        let mut gpa = l::WINDOW_BASE;
        while gpa < l::WINDOW_BASE + l::WINDOW_SIZE {
            let (hpa, flags) = g.translate(gpa + 0x10).expect("mapped");
            assert_eq!(hpa, gpa + 0x10);
            assert_eq!(flags, leaf(map.perm_at(gpa).unwrap()), "{gpa:#x}");
            assert_ne!(flags & (PTE_W | PTE_X), PTE_W | PTE_X);
            gpa += PAGE_4K;
        }
        let flags = |g: &GStage<2>, a| g.translate(a).unwrap().1 & (PTE_R | PTE_W | PTE_X);
        assert_eq!(flags(&g, TEXT), PTE_R | PTE_X);
        assert_eq!(flags(&g, RODATA), PTE_R);
        assert_eq!(flags(&g, DATA), PTE_R | PTE_W);
        assert_eq!(flags(&g, l::WINDOW_BASE + l::DTB_OFFSET), PTE_R | PTE_W);
        let stack = l::WINDOW_BASE + l::WINDOW_SIZE - STACK_SIZE;
        assert_eq!(flags(&g, stack), PTE_R | PTE_W);
        let mut outside = vec![
            l::WINDOW_BASE - 1,
            l::WINDOW_BASE + l::WINDOW_SIZE,
            l::VMM_IMAGE_BASE,
            0x8000_0000, // OpenSBI
            0x10_0000,   // sifive_test
            0x1000_0000, // UART
            0,
            GPA_LIMIT - 1,
            GPA_LIMIT,
            u64::MAX,
        ];
        outside.extend(g.table_pas());
        for a in outside {
            assert_eq!(g.translate(a), None, "{a:#x}");
        }
        // One gigabyte table; only the block holding the payload's boundaries is split.
        assert_eq!(g.tables_used(), (1, 1));
    }

    #[test]
    fn leaves_are_user_accessed_dirty_and_hgatp_is_sv39x4_with_vmid() {
        let mut g = gs();
        g.map(0x8400_0000, 0x9000_0000, PAGE_2M, Perm::ReadWrite)
            .unwrap();
        let (hpa, flags) = g.translate(0x8400_1234).unwrap();
        assert_eq!(hpa, 0x9000_1234);
        assert_eq!(
            flags & (PTE_U | PTE_A | PTE_D | PTE_V | PTE_X),
            PTE_U | PTE_A | PTE_D | PTE_V
        );
        let h = g.hgatp(1);
        assert_eq!(h >> 60, 8);
        assert_eq!((h >> 44) & 0x3fff, 1);
        assert_eq!((h & ((1 << 44) - 1)) << 12, g.root_pa());
        assert_eq!(g.root_pa() % 16384, 0, "Sv39x4 root must be 16 KiB aligned");
    }

    #[test]
    fn bad_requests_are_refused_and_change_nothing() {
        let rw = Perm::ReadWrite;
        let mut g = gs();
        assert_eq!(
            g.map(0x8400_1000, 0x8400_1000, PAGE_2M, rw),
            Err(MapError::Unaligned)
        );
        assert_eq!(
            g.map(0x8400_0000, 0x8400_0000, 0, rw),
            Err(MapError::Unaligned)
        );
        assert_eq!(g.map(GPA_LIMIT, 0, PAGE_2M, rw), Err(MapError::OutOfRange));
        assert_eq!(
            g.map(u64::MAX - PAGE_2M + 1, 0, PAGE_2M, rw),
            Err(MapError::OutOfRange)
        );
        g.map(0x8400_0000, 0x8400_0000, PAGE_2M, rw).unwrap();
        assert_eq!(
            g.map(0x8400_0000, 0x8400_0000, PAGE_2M, rw),
            Err(MapError::Overlap)
        );
        assert_eq!(
            g.map_guest(&GuestMap::whole(0x8400_0000, PAGE_2M, rw)),
            Err(MapError::Overlap)
        );
        // Three distinct gigabytes need three level-1 tables; the pool has two.
        g.map(0x4000_0000, 0x4000_0000, PAGE_2M, rw).unwrap();
        assert_eq!(
            g.map(0xC000_0000, 0xC000_0000, PAGE_2M, rw),
            Err(MapError::NoTables)
        );
        assert_eq!(g.translate(0xC000_0000), None);
    }

    #[test]
    fn a_map_needing_more_split_blocks_than_level0_tables_is_refused() {
        // Five maps of one 4 KiB page, each in its own 2 MiB block (so each needs a level-0 table), in a
        // pool of four level-0 tables.
        let mut g: Box<GStage<1, 4>> = Box::default();
        for b in 0..5 {
            let m = GuestMap::whole(0x8400_0000 + b * PAGE_2M, PAGE_4K, Perm::ReadOnly);
            let r = g.map_guest(&m);
            if b < 4 {
                assert_eq!(r, Ok(()));
                assert_eq!(g.translate(m.base()).unwrap().1, leaf(Perm::ReadOnly));
                assert_eq!(
                    g.translate(m.base() + PAGE_4K),
                    None,
                    "the rest of the block"
                );
            } else {
                assert_eq!(r, Err(MapError::NoTables));
            }
        }
        assert_eq!(g.tables_used(), (1, 4));
    }

    #[test]
    fn deferred_blocks_stay_invalid_until_map_block() {
        let mut g = gs();
        let size = 256 << 20;
        let mut map = GuestMap::whole(l::WINDOW_BASE, size, Perm::ReadWrite);
        assert_eq!(map.defer_from(l::WINDOW_BASE + 1), 127);
        g.map_guest(&map).unwrap();
        assert!(g.translate(l::WINDOW_BASE).is_some());
        let gpa = l::WINDOW_BASE + 90 * PAGE_2M + 0x44;
        assert_eq!(g.translate(gpa), None);
        let block = map.take_pending(gpa).unwrap();
        assert!(g.map_block(block));
        let (hpa, flags) = g.translate(gpa).unwrap();
        assert_eq!(hpa, gpa);
        assert_eq!(flags & (PTE_R | PTE_W | PTE_X), PTE_R | PTE_W);
        assert!(!g.map_block(block), "once");
        assert!(!g.map_block(block + PAGE_4K), "aligned");
        assert!(!g.map_block(0x4000_0000), "a gigabyte without a table");
        assert_eq!(g.translate(gpa + PAGE_2M), None);
    }
}
