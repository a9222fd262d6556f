//! G-stage (guest-physical -> host-physical) tables in Sv39x4 form, mapping the guest's window and
//! nothing else.
//!
//! Sv39x4 (privileged spec, "Guest Physical Address Translation"): guest-physical addresses are 41 bits;
//! the root table is widened to 2048 entries (16 KiB, 16 KiB aligned), the lower levels are ordinary Sv39
//! tables. Every leaf has U=1 (G-stage accesses count as user accesses) and A/D preset (no reliance on
//! hardware A/D updates). The window is mapped with 2 MiB leaves from a fixed pool of level-1 tables:
//! no allocation, and running out of tables is an error.
//!
//! The tables live in one struct (the SimpleVisor habit: a fixed, compile-time-sized footprint). Host
//! physical addresses of the tables are their addresses: the VMM runs with satp = Bare.
#![forbid(unsafe_code)]

use super::csr;

pub const ROOT_ENTRIES: usize = 2048;
pub const TABLE_ENTRIES: usize = 512;
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

/// Leaf permissions of guest RAM.
pub const LEAF_RWX: u64 = PTE_V | PTE_R | PTE_W | PTE_X | PTE_U | PTE_A | PTE_D;

#[repr(C, align(16384))]
pub struct RootTable(pub [u64; ROOT_ENTRIES]);

#[repr(C, align(4096))]
pub struct Table(pub [u64; TABLE_ENTRIES]);

static_assertions::const_assert_eq!(core::mem::size_of::<RootTable>(), 16384);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MapError {
    /// Address or size not 2 MiB aligned, or zero size.
    Unaligned,
    /// Beyond the 41-bit Sv39x4 guest-physical space, or overflowing.
    OutOfRange,
    /// The range overlaps an existing mapping.
    Overlap,
    /// The pool of level-1 tables is exhausted.
    NoTables,
}

/// The G-stage tables of one VM, with a pool of `N` level-1 tables (each maps 1 GiB in 2 MiB leaves).
pub struct GStage<const N: usize> {
    root: RootTable,
    l1: [Table; N],
    used: usize,
}

impl<const N: usize> Default for GStage<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> GStage<N> {
    pub const fn new() -> Self {
        Self {
            root: RootTable([0; ROOT_ENTRIES]),
            l1: [const { Table([0; TABLE_ENTRIES]) }; N],
            used: 0,
        }
    }

    /// Host-physical address of the root table.
    pub fn root_pa(&self) -> u64 {
        core::ptr::addr_of!(self.root) as u64
    }

    fn l1_pa(&self, i: usize) -> u64 {
        core::ptr::addr_of!(self.l1[i]) as u64
    }

    /// The hgatp value that selects these tables for `vmid`.
    pub fn hgatp(&self, vmid: u16) -> u64 {
        csr::HGATP_MODE_SV39X4
            | ((vmid as u64) << csr::HGATP_VMID_SHIFT) & csr::HGATP_VMID_MASK
            | (self.root_pa() >> 12) & csr::HGATP_PPN_MASK
    }

    /// Maps `[gpa, gpa + size)` to `[hpa, hpa + size)` read/write/execute with 2 MiB leaves.
    pub fn map(&mut self, gpa: u64, hpa: u64, size: u64) -> Result<(), MapError> {
        if size == 0 || !(gpa | hpa | size).is_multiple_of(PAGE_2M) {
            return Err(MapError::Unaligned);
        }
        let end = gpa.checked_add(size).ok_or(MapError::OutOfRange)?;
        hpa.checked_add(size)
            .filter(|e| *e <= 1 << 56)
            .ok_or(MapError::OutOfRange)?;
        if end > GPA_LIMIT {
            return Err(MapError::OutOfRange);
        }
        // Check first, then write: a failed map changes nothing it had not already proven free.
        let mut a = gpa;
        while a < end {
            if self.translate(a).is_some() {
                return Err(MapError::Overlap);
            }
            a += PAGE_2M;
        }
        let mut off = 0;
        while off < size {
            let g = gpa + off;
            let ri = (g >> 30) as usize;
            let li = ((g >> 21) & 0x1ff) as usize;
            let t = match self.table_index(self.root.0[ri]) {
                Some(t) => t,
                None => {
                    if self.used == N {
                        return Err(MapError::NoTables);
                    }
                    let t = self.used;
                    self.used += 1;
                    self.root.0[ri] = ((self.l1_pa(t) >> 12) << PTE_PPN_SHIFT) | PTE_V;
                    t
                }
            };
            self.l1[t].0[li] = (((hpa + off) >> 12) << PTE_PPN_SHIFT) | LEAF_RWX;
            off += PAGE_2M;
        }
        Ok(())
    }

    /// Which pool table a non-leaf root entry points to.
    fn table_index(&self, pte: u64) -> Option<usize> {
        if pte & PTE_V == 0 || pte & (PTE_R | PTE_W | PTE_X) != 0 {
            return None;
        }
        let pa = ((pte & PTE_PPN_MASK) >> PTE_PPN_SHIFT) << 12;
        (0..self.used).find(|&i| self.l1_pa(i) == pa)
    }

    /// Walks the tables as the hardware would: the host-physical address and leaf flags for `gpa`, or
    /// `None` (a guest-page fault).
    pub fn translate(&self, gpa: u64) -> Option<(u64, u64)> {
        if gpa >= GPA_LIMIT {
            return None;
        }
        let t = self.table_index(self.root.0[(gpa >> 30) as usize])?;
        let leaf = self.l1[t].0[((gpa >> 21) & 0x1ff) as usize];
        if leaf & PTE_V == 0 || leaf & PTE_R == 0 {
            return None;
        }
        let base = ((leaf & PTE_PPN_MASK) >> PTE_PPN_SHIFT) << 12;
        Some((base + (gpa & (PAGE_2M - 1)), leaf & 0x3ff))
    }

    /// Tables in use (for the boot log).
    #[cfg(test)]
    pub fn tables_used(&self) -> usize {
        self.used
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use libvmm_abi::layout::riscv64 as l;

    fn gs() -> Box<GStage<2>> {
        Box::new(GStage::new())
    }

    #[test]
    fn the_window_and_nothing_else_is_mapped_identity() {
        let mut g = gs();
        g.map(l::WINDOW_BASE, l::WINDOW_BASE, l::WINDOW_SIZE)
            .unwrap();
        assert_eq!(
            g.translate(l::WINDOW_BASE),
            Some((l::WINDOW_BASE, LEAF_RWX))
        );
        let last = l::WINDOW_BASE + l::WINDOW_SIZE - 1;
        assert_eq!(g.translate(last).map(|t| t.0), Some(last));
        for outside in [
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
        ] {
            assert_eq!(g.translate(outside), None, "{outside:#x}");
        }
        assert_eq!(g.tables_used(), 1);
    }

    #[test]
    fn leaves_are_user_accessed_dirty_and_hgatp_is_sv39x4_with_vmid() {
        let mut g = gs();
        g.map(0x8400_0000, 0x9000_0000, PAGE_2M).unwrap();
        let (hpa, flags) = g.translate(0x8400_1234).unwrap();
        assert_eq!(hpa, 0x9000_1234);
        assert_eq!(
            flags & (PTE_U | PTE_A | PTE_D | PTE_V),
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
        let mut g = gs();
        assert_eq!(
            g.map(0x8400_1000, 0x8400_1000, PAGE_2M),
            Err(MapError::Unaligned)
        );
        assert_eq!(g.map(0x8400_0000, 0x8400_0000, 0), Err(MapError::Unaligned));
        assert_eq!(g.map(GPA_LIMIT, 0, PAGE_2M), Err(MapError::OutOfRange));
        assert_eq!(
            g.map(u64::MAX - PAGE_2M + 1, 0, PAGE_2M),
            Err(MapError::OutOfRange)
        );
        g.map(0x8400_0000, 0x8400_0000, PAGE_2M).unwrap();
        assert_eq!(
            g.map(0x8400_0000, 0x8400_0000, PAGE_2M),
            Err(MapError::Overlap)
        );
        // Three distinct gigabytes need three level-1 tables; the pool has two.
        g.map(0x4000_0000, 0x4000_0000, PAGE_2M).unwrap();
        assert_eq!(
            g.map(0xC000_0000, 0xC000_0000, PAGE_2M),
            Err(MapError::NoTables)
        );
        assert_eq!(g.translate(0xC000_0000), None);
    }
}
