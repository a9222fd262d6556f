//! What this CPU's VMX allows: the capability MSRs read once at bring-up, the adjustment of wanted
//! controls to them (TRUE_* MSRs when IA32_VMX_BASIC[55] says they exist), the VMXON preconditions
//! (IA32_FEATURE_CONTROL, CR0/CR4 fixed bits) and the VMXON/VMCS revision id.
//!
//! Pure data and arithmetic: the MSR reads happen in `arch`, so every rule here is host-tested with the
//! values Bochs' `corei7_skylake_x` reports.
#![forbid(unsafe_code)]

/// MSR numbers (SDM Vol. 3D App. A), from the one MSR module.
pub(crate) use crate::x86::msr;
pub(crate) use crate::x86::msr::{FEATURE_CONTROL_LOCK, FEATURE_CONTROL_VMX_OUTSIDE_SMX};
/// CR4.VMXE.
pub(crate) const CR4_VMXE: u64 = 1 << 13;
/// IA32_VMX_BASIC[55]: the TRUE_* control MSRs exist.
const BASIC_TRUE_CTLS: u64 = 1 << 55;

/// EPT/VPID capability bits (IA32_VMX_EPT_VPID_CAP).
pub(crate) mod ept_cap {
    pub const WALK_4: u64 = 1 << 6;
    pub const WALK_5: u64 = 1 << 7;
    pub const UC: u64 = 1 << 8;
    pub const WB: u64 = 1 << 14;
    pub const PAGE_2M: u64 = 1 << 16;
    pub const AD: u64 = 1 << 21;
    pub const INVEPT_ALL_CONTEXT: u64 = 1 << 26;
    pub const INVVPID_ALL_CONTEXT: u64 = 1 << 42;
}

/// One control's allowed settings: bits set in `must_be_1` (allowed-0 settings, low half of the MSR)
/// must be 1, bits clear in `may_be_1` (allowed-1 settings, high half) must be 0.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Allowed {
    pub must_be_1: u32,
    pub may_be_1: u32,
}

impl Allowed {
    pub const fn from_msr(v: u64) -> Self {
        Self {
            must_be_1: v as u32,
            may_be_1: (v >> 32) as u32,
        }
    }
    /// Everything allowed-0 and allowed-1 (for a control that does not exist: all zero).
    pub const NONE: Self = Self {
        must_be_1: 0,
        may_be_1: 0,
    };

    /// The value to program: `wanted` plus the mandatory 1s, or the wanted bits the CPU cannot set.
    pub const fn adjust(self, wanted: u32) -> Result<u32, u32> {
        let missing = wanted & !self.may_be_1;
        if missing != 0 {
            return Err(missing);
        }
        Ok(wanted | self.must_be_1)
    }
    /// Whether `value` respects both halves.
    pub const fn permits(self, value: u32) -> bool {
        value & self.must_be_1 == self.must_be_1 && value & !self.may_be_1 == 0
    }
    pub const fn can_set(self, bits: u32) -> bool {
        self.may_be_1 & bits == bits
    }
}

/// The VMX capability MSRs, as read at bring-up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Caps {
    pub basic: u64,
    pub pin: Allowed,
    pub proc1: Allowed,
    /// `Allowed::NONE` when "activate secondary controls" cannot be set.
    pub proc2: Allowed,
    pub exit: Allowed,
    pub entry: Allowed,
    pub misc: u64,
    pub ept_vpid: u64,
    pub cr0_fixed0: u64,
    pub cr0_fixed1: u64,
    pub cr4_fixed0: u64,
    pub cr4_fixed1: u64,
    /// CPUID 0x8000_0008 EAX[7:0].
    pub max_phys_addr: u8,
}

impl Caps {
    /// Reads every capability through `rdmsr`, choosing the TRUE_* MSRs when IA32_VMX_BASIC[55] is set.
    pub fn read(rdmsr: impl Fn(u32) -> u64, max_phys_addr: u8) -> Self {
        let basic = rdmsr(msr::VMX_BASIC);
        let true_ctls = basic & BASIC_TRUE_CTLS != 0;
        let pick = |plain, tru| Allowed::from_msr(rdmsr(if true_ctls { tru } else { plain }));
        let proc1 = pick(msr::VMX_PROCBASED_CTLS, msr::VMX_TRUE_PROCBASED_CTLS);
        let has2 = proc1.can_set(super::controls::proc1::SECONDARY);
        let proc2 = if has2 {
            Allowed::from_msr(rdmsr(msr::VMX_PROCBASED_CTLS2))
        } else {
            Allowed::NONE
        };
        let has_ept_vpid = proc2.can_set(super::controls::proc2::EPT)
            || proc2.can_set(super::controls::proc2::VPID);
        Self {
            basic,
            pin: pick(msr::VMX_PINBASED_CTLS, msr::VMX_TRUE_PINBASED_CTLS),
            proc1,
            proc2,
            exit: pick(msr::VMX_EXIT_CTLS, msr::VMX_TRUE_EXIT_CTLS),
            entry: pick(msr::VMX_ENTRY_CTLS, msr::VMX_TRUE_ENTRY_CTLS),
            misc: rdmsr(msr::VMX_MISC),
            ept_vpid: if has_ept_vpid {
                rdmsr(msr::VMX_EPT_VPID_CAP)
            } else {
                0
            },
            cr0_fixed0: rdmsr(msr::VMX_CR0_FIXED0),
            cr0_fixed1: rdmsr(msr::VMX_CR0_FIXED1),
            cr4_fixed0: rdmsr(msr::VMX_CR4_FIXED0),
            cr4_fixed1: rdmsr(msr::VMX_CR4_FIXED1),
            max_phys_addr,
        }
    }

    /// VMCS revision identifier (IA32_VMX_BASIC[30:0]), the first dword of VMXON region and VMCS.
    pub const fn revision_id(&self) -> u32 {
        self.basic as u32 & 0x7FFF_FFFF
    }
    /// VMXON region / VMCS size in bytes (IA32_VMX_BASIC[44:32]).
    pub const fn region_size(&self) -> u32 {
        ((self.basic >> 32) & 0x1FFF) as u32
    }
    /// Maximum CR3-target count (IA32_VMX_MISC[24:16]).
    pub const fn cr3_target_max(&self) -> u32 {
        ((self.misc >> 16) & 0x1FF) as u32
    }
    /// IA32_VMX_MISC[30]: event injection with instruction length 0 allowed.
    pub const fn zero_len_injection(&self) -> bool {
        self.misc & (1 << 30) != 0
    }
    /// A physical address fits below MAXPHYADDR.
    pub const fn phys_ok(&self, pa: u64) -> bool {
        self.max_phys_addr >= 64 || pa >> self.max_phys_addr == 0
    }
    /// CR0 with the VMX fixed bits applied (fixed-0 bits forced on, bits clear in fixed-1 forced off).
    pub const fn fix_cr0(&self, cr0: u64) -> u64 {
        (cr0 | self.cr0_fixed0) & self.cr0_fixed1
    }
    pub const fn fix_cr4(&self, cr4: u64) -> u64 {
        (cr4 | self.cr4_fixed0) & self.cr4_fixed1
    }
    /// Whether `cr` satisfies the fixed bits.
    #[cfg(test)]
    pub const fn cr_ok(cr: u64, fixed0: u64, fixed1: u64) -> bool {
        cr & fixed0 == fixed0 && cr & !fixed1 == 0
    }
}

/// Why VMX cannot be turned on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum VmxonBlocker {
    NoVmxCpuid,
    /// IA32_FEATURE_CONTROL is locked with VMX outside SMX disabled (firmware forbids VMX).
    FeatureControlLockedOff,
    RegionTooLarge,
}

impl VmxonBlocker {
    pub const fn name(self) -> &'static str {
        match self {
            Self::NoVmxCpuid => "CPUID.1:ECX.VMX[5] is 0",
            Self::FeatureControlLockedOff => "IA32_FEATURE_CONTROL locked with VMX outside SMX off",
            Self::RegionTooLarge => "VMXON region larger than 4 KiB",
        }
    }
}

/// IA32_FEATURE_CONTROL: `Ok(None)` if already fine, `Ok(Some(v))` if the VMM must write `v` (unlocked
/// MSR: enable VMX outside SMX and lock), `Err` if firmware locked VMX off.
pub(crate) const fn feature_control_update(current: u64) -> Result<Option<u64>, VmxonBlocker> {
    let want = FEATURE_CONTROL_LOCK | FEATURE_CONTROL_VMX_OUTSIDE_SMX;
    if current & want == want {
        Ok(None)
    } else if current & FEATURE_CONTROL_LOCK != 0 {
        Err(VmxonBlocker::FeatureControlLockedOff)
    } else {
        Ok(Some(current | want))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Bochs 2.7 `corei7_skylake_x` (`testing::vmcs::skylake_x_msr`), MAXPHYADDR 40.
    pub fn skylake_x() -> Caps {
        Caps::read(crate::testing::vmcs::skylake_x_msr, 40)
    }

    #[test]
    fn true_ctls_are_used_when_basic_bit_55_is_set() {
        let c = skylake_x();
        assert_eq!(c.proc1.must_be_1, 0x0400_6172);
        assert_eq!(c.cr3_target_max(), 4);
        assert!(c.zero_len_injection());
        assert_eq!(c.revision_id(), 0x2b);
        assert_eq!(c.region_size(), 4096);
    }

    #[test]
    fn adjust_adds_mandatory_ones_and_refuses_unsupported_bits() {
        let a = Allowed::from_msr(0x0000_00ff_0000_0016);
        assert_eq!(a.adjust(1 << 0), Ok(0x17));
        assert_eq!(a.adjust(1 << 9), Err(1 << 9));
        assert!(a.permits(0x16));
        assert!(!a.permits(0x06));
    }

    #[test]
    fn fixed_bits_force_pe_pg_ne_and_vmxe() {
        let c = skylake_x();
        assert_eq!(c.fix_cr0(0), 0x8000_0021);
        assert_eq!(c.fix_cr4(0x20), 0x2020);
        assert!(Caps::cr_ok(0x8000_0031, c.cr0_fixed0, c.cr0_fixed1));
        assert!(!Caps::cr_ok(0x31, c.cr0_fixed0, c.cr0_fixed1));
        assert!(!Caps::cr_ok(0x2000 | (1 << 23), c.cr4_fixed0, c.cr4_fixed1));
    }

    #[test]
    fn feature_control_is_locked_on_or_refused() {
        assert_eq!(feature_control_update(0x5), Ok(None));
        assert_eq!(feature_control_update(0x0), Ok(Some(0x5)));
        assert_eq!(
            feature_control_update(0x1),
            Err(VmxonBlocker::FeatureControlLockedOff)
        );
    }
}
