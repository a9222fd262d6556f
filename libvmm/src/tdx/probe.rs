//! Detection of a TDX module before the first SEAMCALL, which raises #UD on a CPU without SEAM (and
//! outside VMX operation), so it is never executed blindly.
//!
//! Order (each step only if the previous held, so no MSR is read that could #GP): CPUID vendor
//! GenuineIntel → CPUID.1:ECX.VMX → CPUID.1:EDX.MTRR → IA32_MTRRCAP (0xFE) bit 15 SEAMRR → IA32_SEAMRR_PHYS_MASK
//! (0x1401) enabled (bit 11) and locked (bit 10) → IA32_SEAMRR_PHYS_BASE (0x1400) configured (bit 3).
//! MSR numbers and bits: Linux's early TDX host series (`arch/x86/kernel/cpu/tdx.c`/`seam.c`:
//! `MTRR_CAP_SEAMRR BIT(15)`, `SEAMRR_PHYS_MASK_ENABLED BIT(11)`, `_LOCKED BIT(10)`,
//! `SEAMRR_PHYS_BASE_CONFIGURED BIT(3)`). Generic over the CPUID/RDMSR sources so the host tests prove
//! which MSRs each CPU kind makes it read.
#![forbid(unsafe_code)]

pub use crate::x86::msr::{
    IA32_MTRRCAP as MSR_MTRRCAP, IA32_SEAMRR_PHYS_BASE as MSR_SEAMRR_PHYS_BASE,
    IA32_SEAMRR_PHYS_MASK as MSR_SEAMRR_PHYS_MASK,
};
pub const MTRRCAP_SEAMRR: u64 = 1 << 15;
pub const SEAMRR_BASE_CONFIGURED: u64 = 1 << 3;
pub const SEAMRR_MASK_LOCKED: u64 = 1 << 10;
pub const SEAMRR_MASK_ENABLED: u64 = 1 << 11;

/// Why there is no TDX module to talk to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Absent {
    NotIntel,
    NoVmx,
    NoMtrr,
    NoSeamrr,
    SeamrrDisabled,
    SeamrrUnconfigured,
}

impl Absent {
    pub const fn describe(self) -> &'static str {
        match self {
            Self::NotIntel => "no TDX module: the CPU vendor is not GenuineIntel",
            Self::NoVmx => "no TDX module: CPUID.1:ECX bit 5 (VMX) is clear",
            Self::NoMtrr => "no TDX module: CPUID.1:EDX bit 12 (MTRR) is clear, so IA32_MTRRCAP cannot be read",
            Self::NoSeamrr => "no TDX module: IA32_MTRRCAP bit 15 (SEAMRR) is clear, the CPU has no SEAM range register",
            Self::SeamrrDisabled => "no TDX module: IA32_SEAMRR_PHYS_MASK is not enabled and locked by the BIOS",
            Self::SeamrrUnconfigured => "no TDX module: IA32_SEAMRR_PHYS_BASE is not configured",
        }
    }
}

/// The SEAM range the BIOS set up (where a TDX module may be loaded).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SeamRange {
    pub base: u64,
    pub mask: u64,
}

/// Runs the detection chain with `cpuid(leaf, subleaf)` and `rdmsr(msr)`.
pub fn detect(
    cpuid: impl Fn(u32, u32) -> [u32; 4],
    mut rdmsr: impl FnMut(u32) -> u64,
) -> Result<SeamRange, Absent> {
    let v = cpuid(0, 0);
    // "GenuineIntel" in EBX, EDX, ECX.
    if (v[1], v[3], v[2]) != (0x756e_6547, 0x4965_6e69, 0x6c65_746e) {
        return Err(Absent::NotIntel);
    }
    if v[0] < 1 {
        return Err(Absent::NoVmx);
    }
    let f = cpuid(1, 0);
    if f[2] & (1 << 5) == 0 {
        return Err(Absent::NoVmx);
    }
    if f[3] & (1 << 12) == 0 {
        return Err(Absent::NoMtrr);
    }
    if rdmsr(MSR_MTRRCAP) & MTRRCAP_SEAMRR == 0 {
        return Err(Absent::NoSeamrr);
    }
    let mask = rdmsr(MSR_SEAMRR_PHYS_MASK);
    if mask & (SEAMRR_MASK_ENABLED | SEAMRR_MASK_LOCKED) != SEAMRR_MASK_ENABLED | SEAMRR_MASK_LOCKED
    {
        return Err(Absent::SeamrrDisabled);
    }
    let base = rdmsr(MSR_SEAMRR_PHYS_BASE);
    if base & SEAMRR_BASE_CONFIGURED == 0 {
        return Err(Absent::SeamrrUnconfigured);
    }
    Ok(SeamRange {
        base: base & !0xfff,
        mask: mask & !0xfff,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;
    use std::vec::Vec;

    const INTEL: [u32; 4] = [0x20, 0x756e_6547, 0x6c65_746e, 0x4965_6e69];
    const AMD: [u32; 4] = [0x10, 0x6874_7541, 0x444d_4163, 0x6974_6e65];

    fn run(
        vendor: [u32; 4],
        ecx1: u32,
        edx1: u32,
        msrs: &[(u32, u64)],
    ) -> (Result<SeamRange, Absent>, Vec<u32>) {
        let read = RefCell::new(Vec::new());
        let r = detect(
            |l, _| if l == 0 { vendor } else { [0, 0, ecx1, edx1] },
            |m| {
                read.borrow_mut().push(m);
                msrs.iter()
                    .find(|(n, _)| *n == m)
                    .map(|(_, v)| *v)
                    .expect("read an MSR this CPU does not have")
            },
        );
        (r, read.into_inner())
    }

    #[test]
    fn cpus_without_seam_are_told_apart_without_touching_seamrr_msrs() {
        // QEMU TCG (AMD vendor, or Intel without VMX), Bochs with VMX but no SEAMRR: no SEAMRR MSR read.
        assert_eq!(
            run(AMD, 1 << 5, 1 << 12, &[]),
            (Err(Absent::NotIntel), Vec::new())
        );
        assert_eq!(
            run(INTEL, 0, 1 << 12, &[]),
            (Err(Absent::NoVmx), Vec::new())
        );
        assert_eq!(
            run(INTEL, 1 << 5, 0, &[]),
            (Err(Absent::NoMtrr), Vec::new())
        );
        assert_eq!(
            run(INTEL, 1 << 5, 1 << 12, &[(0xFE, 0x508)]),
            (Err(Absent::NoSeamrr), std::vec![0xFE])
        );
    }

    #[test]
    fn a_bios_configured_seam_range_is_found() {
        let msrs = [
            (0xFE, 0x508 | MTRRCAP_SEAMRR),
            (0x1401, 0xFFFF_FE00_0C00),
            (0x1400, 0x7E00_0008),
        ];
        assert_eq!(
            run(INTEL, 1 << 5, 1 << 12, &msrs).0,
            Ok(SeamRange {
                base: 0x7E00_0000,
                mask: 0xFFFF_FE00_0000
            })
        );
        let unlocked = [
            (0xFE, MTRRCAP_SEAMRR),
            (0x1401, SEAMRR_MASK_ENABLED),
            (0x1400, 8),
        ];
        assert_eq!(
            run(INTEL, 1 << 5, 1 << 12, &unlocked).0,
            Err(Absent::SeamrrDisabled)
        );
        let unconfigured = [(0xFE, MTRRCAP_SEAMRR), (0x1401, 0xC00), (0x1400, 0)];
        assert_eq!(
            run(INTEL, 1 << 5, 1 << 12, &unconfigured).0,
            Err(Absent::SeamrrUnconfigured)
        );
    }
}
