//! Nested page tables (AMD NPT): map the guest window at guest-physical == host-physical with 2 MiB
//! pages, and nothing else. One PML4, one PDPT, one PD: the window must lie inside one 1 GiB-aligned
//! GiB (checked at compile time for the window libvmm uses).
//!
//! Nested walks are user accesses, so every entry carries U (emulators.md: without U the walk faults with
//! EXITINFO1 bit 33).
#![forbid(unsafe_code)]

use libvmm_abi::layout::x86_64::{WINDOW_BASE, WINDOW_SIZE};

const P: u64 = 1 << 0;
const W: u64 = 1 << 1;
const U: u64 = 1 << 2;
const PS: u64 = 1 << 7;
const ADDR: u64 = 0x000F_FFFF_FFFF_F000;
const PAGE_2M: u64 = 1 << 21;

static_assertions::const_assert!(
    WINDOW_BASE.is_multiple_of(PAGE_2M) && WINDOW_SIZE.is_multiple_of(PAGE_2M)
);
static_assertions::const_assert!(WINDOW_BASE >> 30 == (WINDOW_BASE + WINDOW_SIZE - 1) >> 30);

#[repr(C, align(4096))]
#[derive(Clone, Copy)]
pub struct Table(pub [u64; 512]);

/// The three table pages. `phys` gives each page's host-physical address (identity in the VMM; any
/// injective function in tests).
#[repr(C, align(4096))]
pub struct NestedTables {
    pub pml4: Table,
    pub pdpt: Table,
    pub pd: Table,
}

/// What a guest-physical address translates to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Translation {
    pub hpa: u64,
    pub writable: bool,
}

impl NestedTables {
    pub const fn new() -> Self {
        Self {
            pml4: Table([0; 512]),
            pdpt: Table([0; 512]),
            pd: Table([0; 512]),
        }
    }

    /// Fills the tables so that `[base, base + size)` maps to itself, read/write/execute.
    /// `pdpt_pa`/`pd_pa` are the host-physical addresses of `self.pdpt` and `self.pd`.
    pub fn map_identity(&mut self, base: u64, size: u64, pdpt_pa: u64, pd_pa: u64) {
        self.pml4.0 = [0; 512];
        self.pdpt.0 = [0; 512];
        self.pd.0 = [0; 512];
        self.pml4.0[((base >> 39) & 511) as usize] = pdpt_pa | P | W | U;
        self.pdpt.0[((base >> 30) & 511) as usize] = pd_pa | P | W | U;
        let mut gpa = base;
        while gpa < base + size {
            self.pd.0[((gpa >> 21) & 511) as usize] = gpa | P | W | U | PS;
            gpa += PAGE_2M;
        }
    }

    /// Walks the tables like the CPU would: `None` when the address is not mapped.
    pub fn translate(&self, gpa: u64, pdpt_pa: u64, pd_pa: u64) -> Option<Translation> {
        if gpa >> 48 != 0 {
            return None;
        }
        let e4 = self.pml4.0[((gpa >> 39) & 511) as usize];
        if e4 & P == 0 || e4 & ADDR != pdpt_pa {
            return None;
        }
        let e3 = self.pdpt.0[((gpa >> 30) & 511) as usize];
        if e3 & P == 0 || e3 & PS != 0 || e3 & ADDR != pd_pa {
            return None;
        }
        let e2 = self.pd.0[((gpa >> 21) & 511) as usize];
        if e2 & P == 0 || e2 & PS == 0 {
            return None;
        }
        Some(Translation {
            hpa: (e2 & ADDR & !(PAGE_2M - 1)) | (gpa & (PAGE_2M - 1)),
            writable: e2 & W != 0,
        })
    }
}

impl Default for NestedTables {
    fn default() -> Self {
        Self::new()
    }
}

/// Builds the tables for libvmm's x86 window.
pub fn map_window(t: &mut NestedTables, pdpt_pa: u64, pd_pa: u64) {
    t.map_identity(WINDOW_BASE, WINDOW_SIZE, pdpt_pa, pd_pa);
}

#[cfg(test)]
mod tests {
    use super::*;

    const PDPT: u64 = 0x11_1000;
    const PD: u64 = 0x11_2000;

    fn tables() -> Box<NestedTables> {
        let mut t = Box::new(NestedTables::new());
        map_window(&mut t, PDPT, PD);
        t
    }

    #[test]
    fn the_window_maps_to_itself() {
        let t = tables();
        for gpa in [
            WINDOW_BASE,
            WINDOW_BASE + 0x1234,
            WINDOW_BASE + WINDOW_SIZE - 1,
        ] {
            assert_eq!(
                t.translate(gpa, PDPT, PD),
                Some(Translation {
                    hpa: gpa,
                    writable: true
                })
            );
        }
    }

    #[test]
    fn nothing_outside_the_window_is_mapped() {
        let t = tables();
        // The VMM image, its tables, low memory, just around the window, high memory, non-canonical.
        for gpa in [
            0,
            0x10_0000,
            PDPT,
            PD,
            WINDOW_BASE - 1,
            WINDOW_BASE + WINDOW_SIZE,
            0xFEE0_0000,
            1 << 40,
            u64::MAX,
        ] {
            assert_eq!(t.translate(gpa, PDPT, PD), None, "{gpa:#x}");
        }
        // Exhaustive over 2 MiB steps of the first 4 GiB.
        let mapped = (0..(4u64 << 30))
            .step_by(PAGE_2M as usize)
            .filter(|&g| t.translate(g, PDPT, PD).is_some())
            .count();
        assert_eq!(mapped as u64, WINDOW_SIZE / PAGE_2M);
    }

    #[test]
    fn every_entry_is_user_so_nested_walks_succeed() {
        let t = tables();
        for e in t
            .pml4
            .0
            .iter()
            .chain(&t.pdpt.0)
            .chain(&t.pd.0)
            .filter(|e| **e & P != 0)
        {
            assert_eq!(e & U, U);
        }
    }
}
