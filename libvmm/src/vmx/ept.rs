//! EPT: the nested page tables that map the guest window `libvmm_abi::layout::x86_64` and nothing else,
//! with the guest's W^X map, and the EPT pointer built from the root's own role.
//!
//! The tables are a fixed set (PML4, PDPT, PD and `config::NESTED_PAGE_TABLES` page tables), identity
//! (guest-physical == host-physical, as on every libvmm backend), so a guest access anywhere outside the
//! window — the VMM image at 1 MiB, the tables themselves, MMIO — is an EPT violation. Inside it, the
//! rights come from [`GuestMap`]: payload text read+execute, read-only data read, everything else
//! read+write without execute, so a write to text or a fetch from data is an EPT violation too (exit
//! qualification bits 0-2 name the access). A 2 MiB block with one permission is a 2 MiB leaf; a block a
//! region boundary crosses is split into 4 KiB leaves. Host tests walk the built tables the way the CPU
//! does and prove exactly the window is mapped, with exactly the map's rights.
//!
//! Blocks the map defers (zero on first touch, `lazy.rs`) are left without rights; the
//! first EPT violation there comes to the run loop, which zeroes the block, and
//! [`EptTables::map_block`] maps it as one read+write 2 MiB leaf (an EPT violation invalidates what the
//! CPU cached for the address, and entries without rights are never cached: no INVEPT is needed).
//!
//! [`construct_eptp`] follows KVM's `construct_eptp()` after "KVM: VMX: Use kvm_mmu_page role to construct
//! EPTP, not current vCPU state" (kvm-x86 2f723a863423): the memory type, walk length and A/D enable come
//! from the role recorded with the root when it was built ([`MmuRole`]), never from whatever the vCPU's
//! current paging mode happens to be, so the same helper is right for any root (e.g. an INVEPT of a root
//! that is not the current one).
#![forbid(unsafe_code)]

use libvmm_abi::layout::x86_64::{WINDOW_BASE, WINDOW_MAX, WINDOW_SIZE};

use crate::config::NESTED_PAGE_TABLES;
use crate::loader::{GuestMap, Perm};

const PAGE_4K: u64 = 0x1000;
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
static_assertions::const_assert!(WINDOW_BASE >> 30 == (WINDOW_BASE + WINDOW_MAX - 1) >> 30);

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

/// The tables of the guest window.
#[repr(C, align(4096))]
pub(crate) struct EptTables {
    pub pml4: Table,
    pub pdpt: Table,
    pub pd: Table,
    pub pt: [Table; NESTED_PAGE_TABLES],
    /// The 4 KiB-leaf table of the one page outside the window: the guest's SIPI page (guest SMP,
    /// [`EptTables::map_sipi_page`]).
    pub low: Table,
}

static_assertions::const_assert_eq!(
    core::mem::size_of::<EptTables>(),
    (4 + NESTED_PAGE_TABLES) * 4096
);

/// Why the tables could not be built.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum EptError {
    /// The map is not the x86 guest window, or not 4 KiB aligned.
    BadMap,
    /// More 2 MiB blocks need 4 KiB leaves than `config::NESTED_PAGE_TABLES`.
    NoTables,
}

/// The rights of a permission.
const fn rights(perm: Perm) -> u64 {
    match perm {
        Perm::ReadOnly => pte::READ,
        Perm::ReadWrite => pte::READ | pte::WRITE,
        Perm::ReadExecute => pte::READ | pte::EXEC,
    }
}

impl EptTables {
    pub const fn new() -> Self {
        Self {
            pml4: Table([0; ENTRIES]),
            pdpt: Table([0; ENTRIES]),
            pd: Table([0; ENTRIES]),
            pt: [Table([0; ENTRIES]); NESTED_PAGE_TABLES],
            low: Table([0; ENTRIES]),
        }
    }

    /// Host-physical addresses of every table page (PML4, PDPT, PD, the page tables, then the SIPI
    /// page's table); `phys` translates a host pointer.
    pub fn addrs(&self, phys: &impl Fn(*const u8) -> u64) -> [u64; 4 + NESTED_PAGE_TABLES] {
        let mut a = [0; 4 + NESTED_PAGE_TABLES];
        a[0] = phys(self.pml4.0.as_ptr().cast());
        a[1] = phys(self.pdpt.0.as_ptr().cast());
        a[2] = phys(self.pd.0.as_ptr().cast());
        for (i, t) in self.pt.iter().enumerate() {
            a[3 + i] = phys(t.0.as_ptr().cast());
        }
        a[3 + NESTED_PAGE_TABLES] = phys(self.low.0.as_ptr().cast());
        a
    }

    /// The table at host-physical `pa`, if it is one of these.
    fn table_at(&self, pa: u64, phys: &impl Fn(*const u8) -> u64) -> Option<&Table> {
        let i = self.addrs(phys).iter().position(|&a| a == pa)?;
        Some(match i {
            0 => &self.pml4,
            1 => &self.pdpt,
            2 => &self.pd,
            n if n == 3 + NESTED_PAGE_TABLES => &self.low,
            n => &self.pt[n - 3],
        })
    }

    /// Guest SMP: maps guest-physical `gpa` (a page below the window, in a 2 MiB block with nothing else
    /// mapped: the SIPI page, `layout::x86_64::SIPI_PAGE`) read+execute onto host-physical `hpa`, a page
    /// of the window (which the guest writes at its own address), through the [`EptTables::low`] table.
    /// After [`EptTables::build`]. The SVM twin is `svm::npt::NestedTables::map_sipi_page`.
    pub fn map_sipi_page(
        &mut self,
        gpa: u64,
        hpa: u64,
        phys: impl Fn(*const u8) -> u64,
    ) -> Result<(), EptError> {
        let in_window = |a: u64| (WINDOW_BASE..WINDOW_BASE + WINDOW_MAX).contains(&a);
        let pde = index(gpa, 21);
        if !(gpa | hpa).is_multiple_of(PAGE_4K)
            || gpa >> 30 != WINDOW_BASE >> 30
            || gpa >> 21 == WINDOW_BASE >> 21
            || in_window(gpa)
            || !in_window(hpa)
            || self.pdpt.0[index(WINDOW_BASE, 30)] == 0
            || self.pd.0[pde] & pte::RWX != 0
        {
            return Err(EptError::BadMap);
        }
        self.low.0 = [0; ENTRIES];
        self.low.0[index(gpa, 12)] =
            hpa | rights(Perm::ReadExecute) | (MT_WB << pte::MEMTYPE_SHIFT);
        self.pd.0[pde] = phys(self.low.0.as_ptr().cast()) | pte::RWX;
        Ok(())
    }

    /// Builds identity write-back mappings of the guest window with the map's rights (2 MiB leaves
    /// where a block is uniform, 4 KiB leaves where a boundary crosses it) and nothing else.
    pub fn build(
        &mut self,
        role: MmuRole,
        map: &GuestMap,
        phys: impl Fn(*const u8) -> u64,
    ) -> Result<EptRoot, EptError> {
        let (base, end) = (map.base(), map.end());
        if base != WINDOW_BASE
            || end > WINDOW_BASE + WINDOW_MAX
            || end <= base
            || !end.is_multiple_of(PAGE_2M)
        {
            return Err(EptError::BadMap);
        }
        let addrs = self.addrs(&phys);
        self.pml4.0 = [0; ENTRIES];
        self.pdpt.0 = [0; ENTRIES];
        self.pd.0 = [0; ENTRIES];
        for t in self.pt.iter_mut() {
            t.0 = [0; ENTRIES];
        }
        self.low.0 = [0; ENTRIES];
        self.pml4.0[index(WINDOW_BASE, 39)] = addrs[1] | pte::RWX;
        self.pdpt.0[index(WINDOW_BASE, 30)] = addrs[2] | pte::RWX;
        let wb = MT_WB << pte::MEMTYPE_SHIFT;
        let mut used = 0;
        let mut block = WINDOW_BASE;
        while block < end {
            if map.is_deferred(block) {
                block += PAGE_2M;
                continue;
            }
            self.pd.0[index(block, 21)] = match map.uniform(block, PAGE_2M) {
                Some(perm) => block | rights(perm) | pte::LARGE | wb,
                None => {
                    if used == NESTED_PAGE_TABLES {
                        return Err(EptError::NoTables);
                    }
                    for (i, e) in self.pt[used].0.iter_mut().enumerate() {
                        let gpa = block + i as u64 * PAGE_4K;
                        *e = match map.perm_at(gpa) {
                            Some(perm) => gpa | rights(perm) | wb,
                            None => 0,
                        };
                    }
                    used += 1;
                    addrs[2 + used] | pte::RWX
                }
            };
            block += PAGE_2M;
        }
        Ok(EptRoot {
            hpa: addrs[0],
            role,
        })
    }

    /// Maps the 2 MiB block at `block` read+write (write-back, never executable) where the window had
    /// nothing mapped yet (a block [`EptTables::build`] left pending). `false` when `block` is not a 2 MiB
    /// block of the largest window or is already mapped.
    pub fn map_block(&mut self, block: u64) -> bool {
        if !block.is_multiple_of(PAGE_2M)
            || !(WINDOW_BASE..WINDOW_BASE + WINDOW_MAX).contains(&block)
            || self.pdpt.0[index(WINDOW_BASE, 30)] == 0
        {
            return false;
        }
        let e = &mut self.pd.0[index(block, 21)];
        if *e & pte::RWX != 0 {
            return false;
        }
        *e = block | rights(Perm::ReadWrite) | pte::LARGE | (MT_WB << pte::MEMTYPE_SHIFT);
        true
    }

    /// Translates `gpa` like the CPU's 4-level EPT walk starting at `root`: `Some((hpa, rights))` when
    /// mapped, the rights being what every level allows. Following a pointer to a page that is not one
    /// of these tables is reported as `Err`.
    pub fn walk(
        &self,
        root: u64,
        gpa: u64,
        phys: impl Fn(*const u8) -> u64,
    ) -> Result<Option<(u64, u64)>, u64> {
        let mut table = root & pte::ADDR_MASK;
        let mut allowed = pte::RWX;
        for (level, shift) in [(4, 39), (3, 30), (2, 21), (1, 12)] {
            let Some(t) = self.table_at(table, &phys) else {
                return Err(table);
            };
            let e = t.0[index(gpa, shift)];
            if e & pte::RWX == 0 {
                return Ok(None);
            }
            allowed &= e & pte::RWX;
            let size = match level {
                1 => PAGE_4K,
                2 if e & pte::LARGE != 0 => PAGE_2M,
                3 if e & pte::LARGE != 0 => return Err(e),
                _ => {
                    table = e & pte::ADDR_MASK;
                    continue;
                }
            };
            return Ok(Some((
                (e & pte::ADDR_MASK & !(size - 1)) | (gpa & (size - 1)),
                allowed,
            )));
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

    /// The W^X map of a payload shaped like the linker scripts make them.
    fn payload_map() -> GuestMap {
        use crate::PayloadSegment;
        use libvmm_abi::layout::x86_64::PAYLOAD_BASE;
        static SEGS: [PayloadSegment; 3] = [
            PayloadSegment {
                gpa: PAYLOAD_BASE,
                mem_size: 0x4321,
                flags: PayloadSegment::R | PayloadSegment::X,
            },
            PayloadSegment {
                gpa: PAYLOAD_BASE + 0x5000,
                mem_size: 0x1234,
                flags: PayloadSegment::R,
            },
            PayloadSegment {
                gpa: PAYLOAD_BASE + 0x7000,
                mem_size: 0x2_1800,
                flags: PayloadSegment::R | PayloadSegment::W,
            },
        ];
        let p = (SEGS, PAYLOAD_BASE, 0x7000 + 0x2_1800);
        crate::loader::map_segments(
            &p.0[..],
            p.1,
            p.1 + p.2,
            PAYLOAD_BASE,
            WINDOW_BASE,
            WINDOW_SIZE,
        )
        .unwrap()
    }

    fn rights_of(perm: Perm) -> u64 {
        match perm {
            Perm::ReadOnly => pte::READ,
            Perm::ReadWrite => pte::READ | pte::WRITE,
            Perm::ReadExecute => pte::READ | pte::EXEC,
        }
    }

    #[test]
    fn exactly_the_guest_window_is_mapped_identity_with_the_maps_rights() {
        let map = payload_map();
        let mut t = Box::new(EptTables::new());
        let root = t.build(ROLE, &map, phys).unwrap();
        // Every present leaf, enumerated from the root like the CPU would find it.
        let mut mapped = Vec::new();
        let mut split = 0;
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
                    if e2 & pte::LARGE != 0 {
                        assert_eq!(e2 & pte::ADDR_MASK, gpa, "identity");
                        mapped.push((gpa, PAGE_2M, e2 & pte::RWX));
                        continue;
                    }
                    split += 1;
                    let pt =
                        t.pt.iter()
                            .find(|p| phys(p.0.as_ptr().cast()) == e2 & pte::ADDR_MASK)
                            .expect("a split block points at a pool table");
                    for (i1, e1) in pt.0.iter().enumerate() {
                        assert_ne!(e1 & pte::RWX, 0, "the whole block is in the window");
                        let g = gpa | (i1 as u64) << 12;
                        assert_eq!(e1 & pte::ADDR_MASK, g, "identity");
                        assert_eq!((e1 >> pte::MEMTYPE_SHIFT) & 7, MT_WB);
                        mapped.push((g, PAGE_4K, e1 & pte::RWX));
                    }
                }
            }
        }
        assert_eq!(
            split, 1,
            "only the block with the payload's boundaries is split"
        );
        // The leaves tile the window exactly, each with the map's rights, never write+execute.
        let mut at = WINDOW_BASE;
        for (gpa, size, rwx) in &mapped {
            assert_eq!(*gpa, at);
            assert_eq!(
                *rwx,
                rights_of(map.uniform(*gpa, *size).unwrap()),
                "{gpa:#x}"
            );
            assert_ne!(*rwx & (pte::WRITE | pte::EXEC), pte::WRITE | pte::EXEC);
            at += size;
        }
        assert_eq!(at, WINDOW_BASE + WINDOW_SIZE);

        // Point walks: text r-x, read-only data r--, data rw-, boot info and stack rw-.
        use libvmm_abi::layout::x86_64::PAYLOAD_BASE;
        for (gpa, want) in [
            (PAYLOAD_BASE, pte::READ | pte::EXEC),
            (PAYLOAD_BASE + 0x4fff, pte::READ | pte::EXEC),
            (PAYLOAD_BASE + 0x5000, pte::READ),
            (PAYLOAD_BASE + 0x7000, pte::READ | pte::WRITE),
            (WINDOW_BASE, pte::READ | pte::WRITE),
            (WINDOW_BASE + 0x1234, pte::READ | pte::WRITE),
            (WINDOW_BASE + WINDOW_SIZE - 1, pte::READ | pte::WRITE),
        ] {
            assert_eq!(
                t.walk(root.hpa, gpa, phys),
                Ok(Some((gpa, want))),
                "{gpa:#x}"
            );
        }
        // Outside (VMM image, every table page, zero, just past) nothing is mapped.
        let mut outside = vec![
            0,
            VMM_IMAGE_BASE,
            WINDOW_BASE - 1,
            WINDOW_BASE + WINDOW_SIZE,
            1 << 39,
            u64::MAX >> 12,
        ];
        outside.extend(t.addrs(&phys));
        for gpa in outside {
            assert_eq!(t.walk(root.hpa, gpa, phys), Ok(None), "{gpa:#x}");
        }
    }

    #[test]
    fn a_rebuild_clears_stale_entries_and_a_foreign_map_is_refused() {
        let mut t = Box::new(EptTables::new());
        t.pd.0[0] = pte::RWX | pte::LARGE;
        t.pt[3].0[7] = pte::RWX;
        let root = t
            .build(
                ROLE,
                &GuestMap::whole(WINDOW_BASE, WINDOW_SIZE, Perm::ReadWrite),
                phys,
            )
            .unwrap();
        assert_eq!(t.walk(root.hpa, 0, phys), Ok(None));
        assert!(t.pt.iter().all(|p| p.0.iter().all(|e| *e == 0)));
        assert_eq!(
            t.walk(root.hpa, WINDOW_BASE, phys),
            Ok(Some((WINDOW_BASE, pte::READ | pte::WRITE)))
        );
        let other = GuestMap::whole(WINDOW_BASE + PAGE_2M, WINDOW_SIZE, Perm::ReadWrite);
        assert_eq!(t.build(ROLE, &other, phys), Err(EptError::BadMap));
        let huge = GuestMap::whole(WINDOW_BASE, WINDOW_MAX + PAGE_2M, Perm::ReadWrite);
        assert_eq!(t.build(ROLE, &huge, phys), Err(EptError::BadMap));
    }

    #[test]
    fn deferred_blocks_have_no_rights_until_map_block() {
        let mut t = Box::new(EptTables::new());
        let size = 256 << 20;
        let mut map = GuestMap::whole(WINDOW_BASE, size, Perm::ReadWrite);
        assert_eq!(map.defer_from(WINDOW_BASE + 0x1000), 127);
        let root = t.build(ROLE, &map, phys).unwrap();
        assert_eq!(
            t.walk(root.hpa, WINDOW_BASE, phys),
            Ok(Some((WINDOW_BASE, pte::READ | pte::WRITE)))
        );
        let gpa = WINDOW_BASE + 77 * PAGE_2M + 0x321;
        assert_eq!(t.walk(root.hpa, gpa, phys), Ok(None));
        assert!(map.is_deferred(gpa));
        let block = gpa & !(PAGE_2M - 1);
        assert!(t.map_block(block));
        assert_eq!(
            t.walk(root.hpa, gpa, phys),
            Ok(Some((gpa, pte::READ | pte::WRITE)))
        );
        assert!(!t.map_block(block), "once");
        assert!(!t.map_block(block + 0x1000), "aligned");
        assert!(
            !t.map_block(WINDOW_BASE + WINDOW_MAX),
            "inside the largest window"
        );
        assert_eq!(t.walk(root.hpa, gpa + PAGE_2M, phys), Ok(None));
    }

    /// Guest SMP: the SIPI page is one read+execute alias, through the low table, of the window page the
    /// guest writes its trampoline into; nothing else below the window appears, and a bad request (a page
    /// in the window, a target outside it, unaligned, before `build`) is refused.
    #[test]
    fn the_sipi_page_is_one_read_execute_alias_of_a_window_page() {
        use libvmm_abi::layout::x86_64::{SIPI_PAGE, SIPI_PAGE_OFFSET};
        let map = payload_map();
        let mut t = Box::new(EptTables::new());
        let hpa = WINDOW_BASE + SIPI_PAGE_OFFSET;
        assert_eq!(
            t.map_sipi_page(SIPI_PAGE, hpa, phys),
            Err(EptError::BadMap),
            "before build"
        );
        let root = t.build(ROLE, &map, phys).unwrap();
        t.map_sipi_page(SIPI_PAGE, hpa, phys).unwrap();
        assert_eq!(
            t.walk(root.hpa, SIPI_PAGE + 0x10, phys),
            Ok(Some((hpa + 0x10, pte::READ | pte::EXEC)))
        );
        for gpa in [SIPI_PAGE - 1, SIPI_PAGE + 0x1000, 0, 0x10_0000] {
            assert_eq!(t.walk(root.hpa, gpa, phys), Ok(None), "{gpa:#x}");
        }
        // The window itself is unchanged: its page is still read+write, not executable.
        assert_eq!(
            t.walk(root.hpa, hpa, phys),
            Ok(Some((hpa, pte::READ | pte::WRITE)))
        );
        assert_eq!(t.map_sipi_page(SIPI_PAGE, hpa, phys), Err(EptError::BadMap));
        let mut u = Box::new(EptTables::new());
        u.build(ROLE, &map, phys).unwrap();
        assert_eq!(u.map_sipi_page(hpa, hpa, phys), Err(EptError::BadMap));
        assert_eq!(
            u.map_sipi_page(SIPI_PAGE, 0x10_0000, phys),
            Err(EptError::BadMap)
        );
        assert_eq!(
            u.map_sipi_page(SIPI_PAGE + 1, hpa, phys),
            Err(EptError::BadMap)
        );
        // A rebuild drops it.
        let root = t.build(ROLE, &map, phys).unwrap();
        assert_eq!(t.walk(root.hpa, SIPI_PAGE, phys), Ok(None));
    }
}
