//! The payload's initial x86 CPU state: 64-bit long mode, paging on with an identity map of 0..4 GiB
//! (2 MiB pages) built in guest memory, a flat GDT, interrupts off, RDI = boot-info address.
//!
//! The guest page tables map all of 0..4 GiB, not only the window: whether a guest-physical address is
//! reachable is decided by the nested tables, which is exactly what the hostile payload tests. Starting in
//! long mode (rather than at a 32-bit PVH-like entry) keeps the guest runtime free of mode switching.
#![forbid(unsafe_code)]

use libvmm_abi::layout::x86_64::{GDT_OFFSET, PAGE_TABLES_OFFSET};

use super::segment::{CODE64_DESC, DATA_DESC};
use crate::guest_mem::{GuestMemory, MemError};
use crate::loader::Loaded;

pub const CR0_PE: u64 = 1 << 0;
pub const CR0_MP: u64 = 1 << 1;
pub const CR0_ET: u64 = 1 << 4;
pub const CR0_NE: u64 = 1 << 5;
pub const CR0_WP: u64 = 1 << 16;
pub const CR0_PG: u64 = 1 << 31;
pub const CR4_PAE: u64 = 1 << 5;
pub const EFER_LME: u64 = 1 << 8;
pub const EFER_LMA: u64 = 1 << 10;

pub const CODE_SELECTOR: u16 = 0x08;
pub const DATA_SELECTOR: u16 = 0x10;

/// A segment register: selector and the raw descriptor it was loaded from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Segment {
    pub selector: u16,
    pub desc: u64,
}

/// Everything a backend needs to put into its control structure for the first entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InitialState {
    pub cr0: u64,
    pub cr3: u64,
    pub cr4: u64,
    pub efer: u64,
    pub rip: u64,
    pub rsp: u64,
    pub rdi: u64,
    pub rflags: u64,
    pub cs: Segment,
    pub data: Segment,
    pub gdt_base: u64,
    pub gdt_limit: u16,
    pub pat: u64,
}

const PTE_P: u64 = 1 << 0;
const PTE_W: u64 = 1 << 1;
const PTE_PS: u64 = 1 << 7;

/// Writes page tables and GDT into guest memory and returns the initial state.
pub fn build(mem: &mut GuestMemory<'_>, loaded: &Loaded) -> Result<InitialState, MemError> {
    let pml4 = mem.base() + PAGE_TABLES_OFFSET;
    let pdpt = pml4 + 0x1000;
    let pd0 = pdpt + 0x1000;
    mem.fill(pml4, 0x6000, 0)?;
    mem.write_u64(pml4, pdpt | PTE_P | PTE_W)?;
    for i in 0..4u64 {
        mem.write_u64(pdpt + i * 8, (pd0 + i * 0x1000) | PTE_P | PTE_W)?;
    }
    for i in 0..2048u64 {
        mem.write_u64(pd0 + i * 8, (i << 21) | PTE_P | PTE_W | PTE_PS)?;
    }
    let gdt = mem.base() + GDT_OFFSET;
    mem.write_u64(gdt, 0)?;
    mem.write_u64(gdt + 8, CODE64_DESC)?;
    mem.write_u64(gdt + 16, DATA_DESC)?;
    Ok(InitialState {
        cr0: CR0_PE | CR0_MP | CR0_ET | CR0_NE | CR0_WP | CR0_PG,
        cr3: pml4,
        cr4: CR4_PAE,
        efer: EFER_LME | EFER_LMA,
        rip: loaded.entry,
        rsp: loaded.stack_top,
        rdi: loaded.boot_info,
        rflags: 0x2,
        cs: Segment {
            selector: CODE_SELECTOR,
            desc: CODE64_DESC,
        },
        data: Segment {
            selector: DATA_SELECTOR,
            desc: DATA_DESC,
        },
        gdt_base: gdt,
        gdt_limit: 23,
        pat: 0x0007_0406_0007_0406,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_maps_four_gib_and_points_cr3_into_the_window() {
        let base = 0x200_0000;
        let mut buf = vec![0u8; 0x10_0000];
        let mut mem = GuestMemory::new(base, &mut buf);
        let loaded = Loaded {
            entry: base + 0x1_0000,
            stack_top: base + 0x10_0000,
            boot_info: base,
        };
        let s = build(&mut mem, &loaded).unwrap();
        assert_eq!(s.cr3, base + PAGE_TABLES_OFFSET);
        // Walk a few addresses through the tables the way the CPU would.
        for va in [0u64, 0x10_0000, base + 0x1234, 0xFFFF_FFFF] {
            let pml4e = mem.read_u64(s.cr3 + ((va >> 39) & 511) * 8).unwrap();
            let pdpte = mem
                .read_u64((pml4e & !0xFFF) + ((va >> 30) & 511) * 8)
                .unwrap();
            let pde = mem
                .read_u64((pdpte & !0xFFF) + ((va >> 21) & 511) * 8)
                .unwrap();
            assert_eq!(pde & PTE_PS, PTE_PS);
            assert_eq!((pde & !0x1F_FFFF) | (va & 0x1F_FFFF), va);
        }
        assert_eq!(mem.read_u64(s.gdt_base + 8).unwrap(), CODE64_DESC);
    }
}
