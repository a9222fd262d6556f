//! EPT: the nested page tables that map the guest window `libvmm_abi::layout::x86_64` and nothing else,
//! and the EPT pointer built from the root's own role.
//!
//! The tables are a fixed three pages (PML4, PDPT, PD) of 2 MiB leaves, identity (guest-physical ==
//! host-physical, as on every libvmm backend), so a guest access anywhere outside the window — the VMM
//! image at 1 MiB, the tables themselves, MMIO — is an EPT violation. Host tests walk the built tables
//! the way the CPU does and prove exactly the window is mapped.
//!
//! [`construct_eptp`] follows KVM's `construct_eptp()` after "KVM: VMX: Use kvm_mmu_page role to construct
//! EPTP, not current vCPU state" (kvm-x86 2f723a863423): the memory type, walk length and A/D enable come
//! from the role recorded with the root when it was built ([`MmuRole`]), never from whatever the vCPU's
//! current paging mode happens to be, so the same helper is right for any root (e.g. an INVEPT of a root
//! that is not the current one).
#![forbid(unsafe_code)]

use libvmm_abi::layout::x86_64::{WINDOW_BASE, WINDOW_SIZE};

const PAGE_2M: u64 = 0x20_0000;
const ENTRIES: usize = 512;

/// EPT entry bits (SDM Vol. 3C "EPT translation mechanism").
pub(crate) mod pte {
    pub const READ: u64 = 1 << 0;
    pub const WRITE: u64 = 1 << 1;
    pub const EXEC: u64 = 1 << 2;
    pub const RWX: u64 = READ | WRITE | EXEC;
    pub const MEMTYPE_SHIFT: u64 = 3;
    pub const LARGE: u64 = 1 << 7;
    pub const ADDR_MASK: u64 = 0x000F_FFFF_FFFF_F000;
}

/// EPT/EPTP memory types.
pub(crate) const MT_UC: u64 = 0;
pub(crate) const MT_WB: u64 = 6;

/// EPTP fields.
pub(crate) mod eptp {
    pub const MT_MASK: u64 = 0x7;
    pub const PWL_SHIFT: u64 = 3;
    pub const PWL_MASK: u64 = 0x7 << 3;
    pub const AD_ENABLE: u64 = 1 << 6;
    /// Bits 11:7 must be 0.
    pub const RESERVED_LOW: u64 = 0x1F << 7;
    /// The value KVM uses for "no valid root": forces VM-entry to fail rather than run on garbage.
    pub const INVALID: u64 = u64::MAX;
}

// The window must be 2 MiB aligned and fit in one page directory (one 1 GiB slot).
static_assertions::const_assert!(
    WINDOW_BASE.is_multiple_of(PAGE_2M) && WINDOW_SIZE.is_multiple_of(PAGE_2M) && WINDOW_SIZE > 0
);
static_assertions::const_assert!(WINDOW_BASE >> 30 == (WINDOW_BASE + WINDOW_SIZE - 1) >> 30);

/// The role of an EPT root, fixed when the root is built (KVM's `kvm_mmu_page_role` subset that EPTP
/// depends on).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct MmuRole {
    /// Levels of the walk: 4 (5-level EPT is not built by libvmm).
    pub level: u8,
    /// Accessed/dirty flags disabled for this root.
    pub ad_disabled: bool,
    /// Memory type of the paging structures.
    pub memtype: u64,
}

/// A built root: its host-physical address and role.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct EptRoot {
    pub hpa: u64,
    pub role: MmuRole,
}

/// The EPT pointer for `root`, from the root's role only. `None` (no root) gives
/// [`eptp::INVALID`], which the consistency checks reject and the CPU would refuse.
pub(crate) const fn construct_eptp(root: Option<&EptRoot>) -> u64 {
    let Some(root) = root else {
        return eptp::INVALID;
    };
    let mut v = root.hpa | root.role.memtype;
    v |= ((root.role.level as u64) - 1) << eptp::PWL_SHIFT;
    if !root.role.ad_disabled {
        v |= eptp::AD_ENABLE;
    }
    v
}

/// One 4 KiB table.
#[repr(C, align(4096))]
#[derive(Clone, Copy)]
pub(crate) struct Table(pub [u64; ENTRIES]);

/// The three tables of the guest window.
#[repr(C, align(4096))]
pub(crate) struct EptTables {
    pub pml4: Table,
    pub pdpt: Table,
    pub pd: Table,
}

static_assertions::const_assert_eq!(core::mem::size_of::<EptTables>(), 3 * 4096);

impl EptTables {
    pub const fn new() -> Self {
        Self {
            pml4: Table([0; ENTRIES]),
            pdpt: Table([0; ENTRIES]),
            pd: Table([0; ENTRIES]),
        }
    }

    /// Host-physical addresses of the three tables; `phys` translates a host pointer.
    fn addrs(&self, phys: &impl Fn(*const u8) -> u64) -> [u64; 3] {
        [
            phys(self.pml4.0.as_ptr().cast()),
            phys(self.pdpt.0.as_ptr().cast()),
            phys(self.pd.0.as_ptr().cast()),
        ]
    }

    /// Builds identity 2 MiB RWX write-back mappings of the guest window and nothing else.
    pub fn build(&mut self, role: MmuRole, phys: impl Fn(*const u8) -> u64) -> EptRoot {
        let [pml4, pdpt, pd] = self.addrs(&phys);
        self.pml4.0 = [0; ENTRIES];
        self.pdpt.0 = [0; ENTRIES];
        self.pd.0 = [0; ENTRIES];
        self.pml4.0[index(WINDOW_BASE, 39)] = pdpt | pte::RWX;
        self.pdpt.0[index(WINDOW_BASE, 30)] = pd | pte::RWX;
        let mut gpa = WINDOW_BASE;
        while gpa < WINDOW_BASE + WINDOW_SIZE {
            self.pd.0[index(gpa, 21)] = gpa | pte::RWX | pte::LARGE | (MT_WB << pte::MEMTYPE_SHIFT);
            gpa += PAGE_2M;
        }
        EptRoot { hpa: pml4, role }
    }

    /// Translates `gpa` like the CPU's 4-level EPT walk starting at `root`: `Some((hpa, rwx))` when
    /// mapped. Following a pointer to a page that is not one of these tables is reported as `Err`.
    pub fn walk(
        &self,
        root: u64,
        gpa: u64,
        phys: impl Fn(*const u8) -> u64,
    ) -> Result<Option<(u64, u64)>, u64> {
        let addrs = self.addrs(&phys);
        let tables = [&self.pml4, &self.pdpt, &self.pd];
        let mut table = root & pte::ADDR_MASK;
        for (level, shift) in [(4, 39), (3, 30), (2, 21)] {
            let Some(i) = addrs.iter().position(|&a| a == table) else {
                return Err(table);
            };
            let e = tables[i].0[index(gpa, shift)];
            if e & pte::RWX == 0 {
                return Ok(None);
            }
            if level == 2 {
                if e & pte::LARGE == 0 {
                    return Err(e);
                }
                return Ok(Some((
                    (e & pte::ADDR_MASK & !(PAGE_2M - 1)) | (gpa & (PAGE_2M - 1)),
                    e & pte::RWX,
                )));
            }
            table = e & pte::ADDR_MASK;
        }
        Ok(None)
    }
}

const fn index(gpa: u64, shift: u32) -> usize {
    ((gpa >> shift) & 0x1FF) as usize
}

#[cfg(test)]
mod tests {
    use super::*;
    use libvmm_abi::layout::x86_64::VMM_IMAGE_BASE;

    fn phys(p: *const u8) -> u64 {
        p as u64
    }
    const ROLE: MmuRole = MmuRole {
        level: 4,
        ad_disabled: false,
        memtype: MT_WB,
    };

    #[test]
    fn eptp_comes_from_the_roots_role() {
        let root = EptRoot {
            hpa: 0x12_3000,
            role: ROLE,
        };
        assert_eq!(
            construct_eptp(Some(&root)),
            0x12_3000 | 6 | (3 << 3) | (1 << 6)
        );
        let no_ad = EptRoot {
            role: MmuRole {
                ad_disabled: true,
                ..ROLE
            },
            ..root
        };
        assert_eq!(construct_eptp(Some(&no_ad)), 0x12_3000 | 0x1e);
        let five = EptRoot {
            role: MmuRole { level: 5, ..ROLE },
            ..root
        };
        assert_eq!(construct_eptp(Some(&five)) & eptp::PWL_MASK, 4 << 3);
        assert_eq!(construct_eptp(None), eptp::INVALID);
    }

    #[test]
    fn exactly_the_guest_window_is_mapped_identity_rwx() {
        let mut t = Box::new(EptTables::new());
        let root = t.build(ROLE, phys);
        // Every present leaf, enumerated from the root like the CPU would find it.
        let mut mapped = Vec::new();
        for (i4, e4) in t.pml4.0.iter().enumerate() {
            if e4 & pte::RWX == 0 {
                continue;
            }
            assert_eq!(e4 & pte::ADDR_MASK, phys(t.pdpt.0.as_ptr().cast()));
            for (i3, e3) in t.pdpt.0.iter().enumerate() {
                if e3 & pte::RWX == 0 {
                    continue;
                }
                assert_eq!(e3 & pte::LARGE, 0, "no 1 GiB leaves");
                assert_eq!(e3 & pte::ADDR_MASK, phys(t.pd.0.as_ptr().cast()));
                for (i2, e2) in t.pd.0.iter().enumerate() {
                    if e2 & pte::RWX == 0 {
                        continue;
                    }
                    let gpa = ((i4 as u64) << 39) | ((i3 as u64) << 30) | ((i2 as u64) << 21);
                    assert_eq!(e2 & pte::ADDR_MASK, gpa, "identity");
                    assert_eq!(e2 & pte::LARGE, pte::LARGE);
                    mapped.push(gpa);
                }
            }
        }
        let want: Vec<u64> = (WINDOW_BASE..WINDOW_BASE + WINDOW_SIZE)
            .step_by(PAGE_2M as usize)
            .collect();
        assert_eq!(mapped, want);

        // Point walks: inside maps identity, outside (VMM image, the tables, zero, just past) does not.
        for gpa in [
            WINDOW_BASE,
            WINDOW_BASE + 0x1234,
            WINDOW_BASE + WINDOW_SIZE - 1,
        ] {
            assert_eq!(t.walk(root.hpa, gpa, phys), Ok(Some((gpa, pte::RWX))));
        }
        let table_pa = phys(t.pml4.0.as_ptr().cast());
        for gpa in [
            0,
            VMM_IMAGE_BASE,
            WINDOW_BASE - 1,
            WINDOW_BASE + WINDOW_SIZE,
            table_pa,
            1 << 39,
            u64::MAX >> 12,
        ] {
            assert_eq!(t.walk(root.hpa, gpa, phys), Ok(None), "{gpa:#x}");
        }
    }

    #[test]
    fn a_rebuild_clears_stale_entries() {
        let mut t = Box::new(EptTables::new());
        t.pd.0[0] = pte::RWX | pte::LARGE;
        let root = t.build(ROLE, phys);
        assert_eq!(t.walk(root.hpa, 0, phys), Ok(None));
    }
}
