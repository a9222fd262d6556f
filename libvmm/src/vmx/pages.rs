//! All memory the VMX backend hands to the CPU, in one page-aligned value with a size fixed at compile
//! time (SimpleVisor's shape): VMXON region, VMCS, the MSR and I/O bitmaps and the EPT tables, which
//! bring-up fills ([`VmxPages`]), and the virtual-APIC page (only used by the consistency-check test
//! configurations), which the hardware `VmxOps` keeps to read VTPR from ([`VmxStorage`]). Nothing is
//! allocated later.
//!
//! Bitmaps default to deny: every bit set, so every RDMSR/WRMSR and every port access exits to the VMM,
//! whose policy decides (`policy::msr`, `policy::io`). MSRs outside the two bitmap ranges always exit.
#![forbid(unsafe_code)]

use super::ept::EptTables;

#[repr(C, align(4096))]
pub(crate) struct Page(pub [u8; 4096]);

impl Page {
    pub const fn zeroed() -> Self {
        Self([0; 4096])
    }
    #[cfg(test)]
    pub const fn all_ones() -> Self {
        Self([0xFF; 4096])
    }
}

/// What each further CPU (AP) of the VMM needs for itself: its own VMXON region, its own VMCS, and a
/// virtual-APIC page like the boot CPU's (so an AP's hardware `VmxOps` is the boot CPU's type, and the
/// run loop is built once for every vCPU). The EPT tables and the bitmaps are the VM's, one set shared
/// by every CPU ([`VmxPages`], which also holds the boot CPU's VMXON region and VMCS). The AP's VMCS is
/// filled when the guest starts its vCPU (guest SMP, `vmx::hw::run_ap`).
#[repr(C, align(4096))]
pub(crate) struct VmxCpuPages {
    pub vmxon: Page,
    pub vmcs: Page,
    pub virtual_apic: Page,
}

impl VmxCpuPages {
    pub const fn zeroed() -> Self {
        Self {
            vmxon: Page::zeroed(),
            vmcs: Page::zeroed(),
            virtual_apic: Page::zeroed(),
        }
    }

    /// Zeroes both regions and writes the VMCS revision id into each.
    pub fn reset(&mut self, revision_id: u32) {
        self.vmxon.0 = [0; 4096];
        self.vmcs.0 = [0; 4096];
        self.vmxon.0[..4].copy_from_slice(&revision_id.to_le_bytes());
        self.vmcs.0[..4].copy_from_slice(&revision_id.to_le_bytes());
    }
}

#[repr(C, align(4096))]
pub(crate) struct VmxPages {
    pub vmxon: Page,
    pub vmcs: Page,
    pub msr_bitmap: Page,
    pub io_bitmap_a: Page,
    pub io_bitmap_b: Page,
    pub ept: EptTables,
}

static_assertions::const_assert_eq!(
    core::mem::size_of::<VmxPages>(),
    (9 + crate::config::NESTED_PAGE_TABLES) * 4096
);

/// The boot CPU's VMX memory: the virtual-APIC page apart from the pages bring-up fills, so the two can
/// be borrowed apart (the hardware `VmxOps` holds the first while bring-up writes the second).
#[repr(C, align(4096))]
pub(crate) struct VmxStorage {
    pub virtual_apic: Page,
    pub pages: VmxPages,
}

static_assertions::const_assert_eq!(
    core::mem::size_of::<VmxStorage>(),
    (10 + crate::config::NESTED_PAGE_TABLES) * 4096
);

impl VmxStorage {
    /// All zero, so a static of it lands in `.bss`.
    #[cfg(all(feature = "vmx", target_os = "none"))]
    pub const fn zeroed() -> Self {
        Self {
            virtual_apic: Page::zeroed(),
            pages: VmxPages::zeroed(),
        }
    }
}

impl VmxPages {
    /// All zero, so a static of it lands in `.bss`; [`VmxPages::reset`] sets it up at bring-up.
    pub const fn zeroed() -> Self {
        Self {
            vmxon: Page::zeroed(),
            vmcs: Page::zeroed(),
            msr_bitmap: Page::zeroed(),
            io_bitmap_a: Page::zeroed(),
            io_bitmap_b: Page::zeroed(),
            ept: EptTables::new(),
        }
    }

    #[cfg(test)]
    pub const fn new() -> Self {
        Self {
            vmxon: Page::zeroed(),
            vmcs: Page::zeroed(),
            msr_bitmap: Page::all_ones(),
            io_bitmap_a: Page::all_ones(),
            io_bitmap_b: Page::all_ones(),
            ept: EptTables::new(),
        }
    }

    /// Resets to the default: regions zeroed, bitmaps deny all.
    pub fn reset(&mut self, revision_id: u32) {
        self.vmxon.0 = [0; 4096];
        self.vmcs.0 = [0; 4096];
        self.vmxon.0[..4].copy_from_slice(&revision_id.to_le_bytes());
        self.vmcs.0[..4].copy_from_slice(&revision_id.to_le_bytes());
        self.msr_bitmap.0 = [0xFF; 4096];
        self.io_bitmap_a.0 = [0xFF; 4096];
        self.io_bitmap_b.0 = [0xFF; 4096];
    }
}

/// Whether an access to MSR `msr` exits under `bitmap` (SDM "MSR-Bitmap Address").
#[cfg(test)]
pub(crate) fn msr_exits(bitmap: &Page, msr: u32, write: bool) -> bool {
    let base = match msr {
        0..=0x1FFF => 0,
        0xC000_0000..=0xC000_1FFF => 0x400,
        _ => return true,
    } + if write { 0x800 } else { 0 };
    let bit = (msr & 0x1FFF) as usize;
    bitmap.0[base + bit / 8] & (1 << (bit % 8)) != 0
}

/// Whether an access to `port` exits under bitmaps A/B.
#[cfg(test)]
pub(crate) fn port_exits(a: &Page, b: &Page, port: u16) -> bool {
    let (page, p) = if port < 0x8000 {
        (a, port as usize)
    } else {
        (b, port as usize - 0x8000)
    };
    page.0[p / 8] & (1 << (p % 8)) != 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_msr_and_port_exits_by_default() {
        let mut p = Box::new(VmxPages::new());
        p.reset(0x2b);
        for msr in (0..0x2000)
            .chain(0xC000_0000..0xC000_2000)
            .chain([0x4000_0000, u32::MAX])
        {
            assert!(
                msr_exits(&p.msr_bitmap, msr, false) && msr_exits(&p.msr_bitmap, msr, true),
                "{msr:#x}"
            );
        }
        for port in 0..=u16::MAX {
            assert!(port_exits(&p.io_bitmap_a, &p.io_bitmap_b, port));
        }
        assert_eq!(&p.vmcs.0[..4], &[0x2b, 0, 0, 0]);
    }
}
