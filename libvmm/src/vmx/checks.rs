//! VM-entry consistency checks in software: the SDM's "Checks on VMX Controls" (Vol. 3C, chapter "VM
//! Entries", section "Checks on VMX Controls"; cross-checked with KVM's software mirror of them in
//! `arch/x86/kvm/vmx/nested.c`) for every control libvmm can set, evaluated on the exact [`Controls`]
//! value the next VMLAUNCH/VMRESUME will use.
//!
//! Why: the CPU reports a bad control with one number (VM-instruction error 7) and nothing else; these
//! checks name the rule. They include the two rules KVM itself long missed: TPR_THRESHOLD[31:4] must be 0
//! when "use TPR shadow" is on and "virtual-interrupt delivery" is off, and TSC_MULTIPLIER must not be 0
//! when "use TSC scaling" is on. The backend runs them whenever the controls changed, and the TPR/VTPR
//! rule (which depends on guest-writable virtual-APIC memory) on every entry while TPR shadow is on.
//! Rules about controls libvmm never sets (shadow VMCS, VM functions, PML, posted-interrupt descriptors,
//! EPTP lists, MSR-load areas) are enforced by refusing those controls, not by checking their operands.
//!
//! A few guest-state rules ride along ("Checks on Guest Control Registers"), the ones a vCPU's own mode
//! changes can break: CR0 against IA32_VMX_CR0_FIXED0/1, where "unrestricted guest" lifts PE and PG
//! (guest SMP's APs start in real mode: PE = PG = 0), PG only with PE, and the IA-32e mode guest entry
//! control against CR0.PG, CR4.PAE and EFER.LMA/LME. The CPU reports these as an entry failure (exit
//! reason 33) with no detail; here they are named, and checked before the CPU sees them.
#![forbid(unsafe_code)]

use super::caps::{ept_cap, Caps};
use super::controls::{entry, exit, intr_info, pin, proc1, proc2, Controls};
use super::ept::{eptp, MT_UC, MT_WB};

/// One failed rule. [`Check::name`] is what the VM stop prints.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Check {
    PinAllowed,
    Proc1Allowed,
    Proc2Allowed,
    ExitAllowed,
    EntryAllowed,
    UnsupportedControl,
    Cr3TargetCount,
    IoBitmapAddress,
    MsrBitmapAddress,
    VirtualApicAddress,
    TprThresholdHighBits,
    TprThresholdAboveVtpr,
    X2apicWithApicAccesses,
    ApicVirtWithoutTprShadow,
    VidWithoutExtIntExiting,
    VirtualNmisWithoutNmiExiting,
    NmiWindowWithoutVirtualNmis,
    UnrestrictedWithoutEpt,
    VpidZero,
    SavePreemptionTimerWithoutTimer,
    EptpMemoryType,
    EptpWalkLength,
    EptpReservedBits,
    EptpAccessedDirty,
    EptpAddress,
    TscMultiplierZero,
    MsrAreaCount,
    EntryToSmm,
    InjectionReservedBits,
    InjectionType,
    InjectionVector,
    InjectionErrorCode,
    InjectionLength,
    GuestCr0Fixed,
    GuestCr0PagingWithoutPe,
    GuestIa32eMode,
    GuestEferLma,
}

impl Check {
    pub const fn name(self) -> &'static str {
        match self {
            Self::PinAllowed => "pin-based controls violate IA32_VMX_(TRUE_)PINBASED_CTLS allowed settings",
            Self::Proc1Allowed => "primary processor-based controls violate IA32_VMX_(TRUE_)PROCBASED_CTLS",
            Self::Proc2Allowed => "secondary processor-based controls violate IA32_VMX_PROCBASED_CTLS2",
            Self::ExitAllowed => "VM-exit controls violate IA32_VMX_(TRUE_)EXIT_CTLS allowed settings",
            Self::EntryAllowed => "VM-entry controls violate IA32_VMX_(TRUE_)ENTRY_CTLS allowed settings",
            Self::UnsupportedControl => "a control libvmm does not program operands for is set",
            Self::Cr3TargetCount => "CR3-target count exceeds IA32_VMX_MISC[24:16]",
            Self::IoBitmapAddress => "use I/O bitmaps: bitmap A/B address not 4 KiB aligned or beyond MAXPHYADDR",
            Self::MsrBitmapAddress => "use MSR bitmaps: MSR-bitmap address not 4 KiB aligned or beyond MAXPHYADDR",
            Self::VirtualApicAddress => "use TPR shadow: virtual-APIC address not 4 KiB aligned or beyond MAXPHYADDR",
            Self::TprThresholdHighBits => {
                "TPR_THRESHOLD[31:4] must be 0 with use-TPR-shadow on and virtual-interrupt delivery off"
            }
            Self::TprThresholdAboveVtpr => {
                "TPR_THRESHOLD[3:0] must not exceed VTPR[7:4] with TPR shadow on, VID and APIC-access virtualization off"
            }
            Self::X2apicWithApicAccesses => "virtualize x2APIC mode requires virtualize APIC accesses off",
            Self::ApicVirtWithoutTprShadow => {
                "virtualize x2APIC / APIC-register virtualization / virtual-interrupt delivery require use-TPR-shadow"
            }
            Self::VidWithoutExtIntExiting => "virtual-interrupt delivery requires external-interrupt exiting",
            Self::VirtualNmisWithoutNmiExiting => "virtual NMIs require NMI exiting",
            Self::NmiWindowWithoutVirtualNmis => "NMI-window exiting requires virtual NMIs",
            Self::UnrestrictedWithoutEpt => "unrestricted guest / PML / mode-based EPT execute require enable EPT",
            Self::VpidZero => "enable VPID requires a non-zero VPID",
            Self::SavePreemptionTimerWithoutTimer => {
                "save VMX-preemption timer exit control requires the preemption timer"
            }
            Self::EptpMemoryType => "EPTP memory type must be UC or WB and supported by IA32_VMX_EPT_VPID_CAP",
            Self::EptpWalkLength => "EPTP page-walk length must be a supported one (4 or 5 levels)",
            Self::EptpReservedBits => "EPTP bits 11:7 must be 0",
            Self::EptpAccessedDirty => "EPTP A/D enable set but IA32_VMX_EPT_VPID_CAP[21] is 0",
            Self::EptpAddress => "EPTP root address beyond MAXPHYADDR",
            Self::TscMultiplierZero => "TSC_MULTIPLIER must not be 0 with use-TSC-scaling on",
            Self::MsrAreaCount => "VM-exit/VM-entry MSR-area count exceeds 512 * (IA32_VMX_MISC[27:25] + 1)",
            Self::EntryToSmm => "entry to SMM / deactivate dual-monitor treatment must be 0 outside SMM",
            Self::InjectionReservedBits => "event injection: interruption-info bits 30:12 must be 0",
            Self::InjectionType => "event injection: reserved type 1, or type 7 without monitor-trap-flag support",
            Self::InjectionVector => "event injection: vector does not fit the type (NMI=2, exception <= 31, other=0)",
            Self::InjectionErrorCode => {
                "event injection: deliver-error-code must match the exception and error code bits 31:16 be 0"
            }
            Self::InjectionLength => "event injection: software event needs instruction length 1..=15",
            Self::GuestCr0Fixed => {
                "guest CR0 violates IA32_VMX_CR0_FIXED0/1 (PE and PG free only with unrestricted guest)"
            }
            Self::GuestCr0PagingWithoutPe => "guest CR0.PG = 1 requires CR0.PE = 1",
            Self::GuestIa32eMode => "IA-32e mode guest requires guest CR0.PG = 1 and CR4.PAE = 1",
            Self::GuestEferLma => {
                "guest EFER.LMA must equal IA-32e mode guest, and EFER.LME too while CR0.PG = 1"
            }
        }
    }
}

/// Guest facts a few rules depend on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct GuestFacts {
    /// VTPR: byte 0x80 of the virtual-APIC page (only read when TPR shadow is on).
    pub vtpr: u8,
    /// Guest CR0.PE (unrestricted guests may be in real mode: no error codes then).
    pub protected_mode: bool,
}

/// The guest CR0, CR4 and IA32_EFER fields (what the CPU runs the guest with, not the read shadows),
/// for [`check_guest_crs`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct GuestCrs {
    pub cr0: u64,
    pub cr4: u64,
    pub efer: u64,
}

/// CR0.PE, CR0.PG, CR4.PAE, EFER.LME, EFER.LMA.
const CR0_PE: u64 = 1;
const CR0_PG: u64 = 1 << 31;
const CR4_PAE: u64 = 1 << 5;
const EFER_LME: u64 = 1 << 8;
const EFER_LMA: u64 = 1 << 10;

/// The guest control-register rules (SDM "Checks on Guest Control Registers, Debug Registers, and
/// MSRs"; KVM `nested_vmx_check_guest_state`). Apart from [`check`]: the backend runs them only when
/// CR0, CR4, EFER or the entry controls changed, not on every change of the controls (event injection
/// and interrupt windows change those all the time).
pub(crate) fn check_guest_crs(c: &Controls, caps: &Caps, g: GuestCrs) -> Result<(), Check> {
    let fail = |ok: bool, which: Check| if ok { Ok(()) } else { Err(which) };
    let mut fixed0 = caps.cr0_fixed0;
    if c.proc1 & proc1::SECONDARY != 0 && c.has2(proc2::UNRESTRICTED_GUEST) {
        fixed0 &= !(CR0_PE | CR0_PG);
    }
    fail(
        g.cr0 & fixed0 == fixed0 && g.cr0 & !caps.cr0_fixed1 & 0xFFFF_FFFF == 0,
        Check::GuestCr0Fixed,
    )?;
    fail(
        g.cr0 & CR0_PG == 0 || g.cr0 & CR0_PE != 0,
        Check::GuestCr0PagingWithoutPe,
    )?;
    let ia32e = c.entry & entry::IA32E_MODE_GUEST != 0;
    fail(
        !ia32e || (g.cr0 & CR0_PG != 0 && g.cr4 & CR4_PAE != 0),
        Check::GuestIa32eMode,
    )?;
    if c.entry & entry::LOAD_EFER != 0 {
        let lma = g.efer & EFER_LMA != 0;
        fail(
            lma == ia32e && (g.cr0 & CR0_PG == 0 || (g.efer & EFER_LME != 0) == lma),
            Check::GuestEferLma,
        )?;
    }
    Ok(())
}

fn page_ok(caps: &Caps, pa: u64) -> bool {
    pa & 0xFFF == 0 && caps.phys_ok(pa)
}

/// Exceptions that push an error code (#DF, #TS, #NP, #SS, #GP, #PF, #AC, #CP).
const fn has_error_code(vector: u32) -> bool {
    matches!(vector, 8 | 10..=14 | 17 | 21)
}

/// Checks the controls; the first failed rule is returned.
pub(crate) fn check(c: &Controls, caps: &Caps, guest: GuestFacts) -> Result<(), Check> {
    let fail = |ok: bool, which: Check| if ok { Ok(()) } else { Err(which) };
    // 1. Allowed settings of every control word.
    fail(caps.pin.permits(c.pin), Check::PinAllowed)?;
    fail(caps.proc1.permits(c.proc1), Check::Proc1Allowed)?;
    if c.proc1 & proc1::SECONDARY != 0 {
        fail(caps.proc2.permits(c.proc2), Check::Proc2Allowed)?;
    }
    fail(caps.exit.permits(c.exit), Check::ExitAllowed)?;
    fail(caps.entry.permits(c.entry), Check::EntryAllowed)?;
    let unsupported2 = proc2::VIRT_APIC_ACCESSES | proc2::VMFUNC | proc2::SHADOW_VMCS | proc2::PML;
    fail(
        c.pin & pin::POSTED_INTERRUPTS == 0 && !c.has2(unsupported2),
        Check::UnsupportedControl,
    )?;
    // 2. CR3 targets.
    fail(
        c.cr3_target_count <= caps.cr3_target_max(),
        Check::Cr3TargetCount,
    )?;
    // 3. Bitmaps.
    if c.has1(proc1::USE_IO_BITMAPS) {
        fail(
            page_ok(caps, c.io_bitmap_a) && page_ok(caps, c.io_bitmap_b),
            Check::IoBitmapAddress,
        )?;
    }
    if c.has1(proc1::USE_MSR_BITMAPS) {
        fail(page_ok(caps, c.msr_bitmap), Check::MsrBitmapAddress)?;
    }
    // 4. TPR shadow.
    let vid = c.has2(proc2::VIRTUAL_INTR_DELIVERY);
    if c.has1(proc1::USE_TPR_SHADOW) {
        fail(page_ok(caps, c.virtual_apic), Check::VirtualApicAddress)?;
        if !vid {
            fail(c.tpr_threshold & !0xF == 0, Check::TprThresholdHighBits)?;
            if !c.has2(proc2::VIRT_APIC_ACCESSES) {
                fail(
                    c.tpr_threshold & 0xF <= (guest.vtpr >> 4) as u32,
                    Check::TprThresholdAboveVtpr,
                )?;
            }
        }
    }
    // 5-7. APIC virtualization dependencies.
    fail(
        !(c.has2(proc2::VIRT_X2APIC) && c.has2(proc2::VIRT_APIC_ACCESSES)),
        Check::X2apicWithApicAccesses,
    )?;
    let apic_virt =
        c.has2(proc2::VIRT_X2APIC | proc2::APIC_REGISTER_VIRT | proc2::VIRTUAL_INTR_DELIVERY);
    fail(
        !apic_virt || c.has1(proc1::USE_TPR_SHADOW),
        Check::ApicVirtWithoutTprShadow,
    )?;
    fail(
        !vid || c.pin & pin::EXT_INTR_EXITING != 0,
        Check::VidWithoutExtIntExiting,
    )?;
    // 9. NMIs.
    fail(
        c.pin & pin::NMI_EXITING != 0 || c.pin & pin::VIRTUAL_NMIS == 0,
        Check::VirtualNmisWithoutNmiExiting,
    )?;
    fail(
        c.pin & pin::VIRTUAL_NMIS != 0 || !c.has1(proc1::NMI_WINDOW),
        Check::NmiWindowWithoutVirtualNmis,
    )?;
    // 10. EPT dependants.
    let ept = c.has2(proc2::EPT);
    fail(
        ept || !c.has2(proc2::UNRESTRICTED_GUEST) && !c.has2(proc2::MODE_BASED_EPT_EXEC),
        Check::UnrestrictedWithoutEpt,
    )?;
    // 12. VPID.
    fail(!c.has2(proc2::VPID) || c.vpid != 0, Check::VpidZero)?;
    // 13. Preemption timer.
    fail(
        c.pin & pin::PREEMPTION_TIMER != 0 || c.exit & exit::SAVE_PREEMPTION_TIMER == 0,
        Check::SavePreemptionTimerWithoutTimer,
    )?;
    // 14. EPTP.
    if ept {
        check_eptp(c.eptp, caps)?;
    }
    // 16. TSC scaling.
    fail(
        !c.has2(proc2::TSC_SCALING) || c.tsc_multiplier != 0,
        Check::TscMultiplierZero,
    )?;
    // Exit / entry MSR areas.
    let max_msrs = 512 * (((caps.misc >> 25) & 7) as u32 + 1);
    fail(
        c.exit_msr_store_count <= max_msrs
            && c.exit_msr_load_count <= max_msrs
            && c.entry_msr_load_count <= max_msrs,
        Check::MsrAreaCount,
    )?;
    fail(
        c.entry & (entry::ENTRY_TO_SMM | entry::DEACTIVATE_DUAL_MONITOR) == 0,
        Check::EntryToSmm,
    )?;
    // Event injection.
    check_injection(c, caps, guest)
}

/// EPTP validity (SDM "Checks on VMX Controls", EPTP bullet).
pub(crate) fn check_eptp(v: u64, caps: &Caps) -> Result<(), Check> {
    let mt = v & eptp::MT_MASK;
    let mt_ok = (mt == MT_UC && caps.ept_vpid & ept_cap::UC != 0)
        || (mt == MT_WB && caps.ept_vpid & ept_cap::WB != 0);
    if !mt_ok {
        return Err(Check::EptpMemoryType);
    }
    let walk = (v & eptp::PWL_MASK) >> eptp::PWL_SHIFT;
    let walk_ok = (walk == 3 && caps.ept_vpid & ept_cap::WALK_4 != 0)
        || (walk == 4 && caps.ept_vpid & ept_cap::WALK_5 != 0);
    if !walk_ok {
        return Err(Check::EptpWalkLength);
    }
    if v & eptp::AD_ENABLE != 0 && caps.ept_vpid & ept_cap::AD == 0 {
        return Err(Check::EptpAccessedDirty);
    }
    if v & eptp::RESERVED_LOW != 0 {
        return Err(Check::EptpReservedBits);
    }
    if !caps.phys_ok(v & !0xFFF) {
        return Err(Check::EptpAddress);
    }
    Ok(())
}

fn check_injection(c: &Controls, caps: &Caps, guest: GuestFacts) -> Result<(), Check> {
    use intr_info::*;
    let info = c.entry_intr_info;
    if info & VALID == 0 {
        return Ok(());
    }
    if info & RESERVED != 0 {
        return Err(Check::InjectionReservedBits);
    }
    let ty = (info & TYPE_MASK) >> TYPE_SHIFT;
    let vector = info & VECTOR_MASK;
    let mtf = caps.proc1.can_set(proc1::MONITOR_TRAP_FLAG);
    if ty == 1 || (ty == TYPE_OTHER && !mtf) {
        return Err(Check::InjectionType);
    }
    let vector_ok = match ty {
        TYPE_NMI => vector == 2,
        TYPE_HW_EXCEPTION => vector <= 31,
        TYPE_OTHER => vector == 0,
        _ => true,
    };
    if !vector_ok {
        return Err(Check::InjectionVector);
    }
    let wants_ec = ty == TYPE_HW_EXCEPTION && guest.protected_mode && has_error_code(vector);
    if (info & DELIVER_ERROR_CODE != 0) != wants_ec
        || (wants_ec && c.entry_error_code & 0xFFFF_0000 != 0)
    {
        return Err(Check::InjectionErrorCode);
    }
    if matches!(
        ty,
        TYPE_SW_INTR | TYPE_PRIV_SW_EXCEPTION | TYPE_SW_EXCEPTION
    ) {
        let len = c.entry_instr_len;
        let ok = (1..=15).contains(&len) || (len == 0 && caps.zero_len_injection());
        if !ok {
            return Err(Check::InjectionLength);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vmx::caps::tests::skylake_x;
    use crate::vmx::setup::{self, Tweak};

    const GUEST: GuestFacts = GuestFacts {
        vtpr: 0,
        protected_mode: true,
    };

    /// A 64-bit guest as libvmm starts one (CR0 PE|NE|PG, CR4 PAE|VMXE, EFER LME|LMA).
    const LONG: GuestCrs = GuestCrs {
        cr0: 0x8000_0031,
        cr4: 0x2020,
        efer: EFER_LME | EFER_LMA,
    };

    /// Guest SMP's AP after INIT + SIPI: real mode (CR0 0x6000_0010 plus NE), no long mode, and the same
    /// vCPU on its way to long mode: EFER.LME, then PE and PG in one MOV to CR0, which is when the
    /// backend sets EFER.LMA and the IA-32e mode guest control.
    #[test]
    fn real_mode_is_accepted_only_with_unrestricted_guest() {
        let caps = skylake_x();
        let real = GuestCrs {
            cr0: 0x6000_0030,
            cr4: 0x2000,
            efer: 0,
        };
        let mut c = good();
        c.entry &= !entry::IA32E_MODE_GUEST;
        assert_eq!(check_guest_crs(&c, &caps, real), Err(Check::GuestCr0Fixed));
        c.proc2 |= proc2::UNRESTRICTED_GUEST;
        assert_eq!(check_guest_crs(&c, &caps, real), Ok(()));
        // Still NE (fixed, not lifted), PG only with PE.
        let no_ne = GuestCrs {
            cr0: 0x6000_0010,
            ..real
        };
        assert_eq!(check_guest_crs(&c, &caps, no_ne), Err(Check::GuestCr0Fixed));
        let pg_only = GuestCrs {
            cr0: 0x8000_0020,
            ..real
        };
        assert_eq!(
            check_guest_crs(&c, &caps, pg_only),
            Err(Check::GuestCr0PagingWithoutPe)
        );
        // EFER.LME in real mode is fine; paging on with LMA but without the entry control is not.
        let lme = GuestCrs {
            efer: EFER_LME,
            ..real
        };
        assert_eq!(check_guest_crs(&c, &caps, lme), Ok(()));
        let long = GuestCrs {
            cr0: 0x8001_0031,
            cr4: 0x20a0 | CR4_PAE,
            efer: EFER_LME | EFER_LMA,
        };
        assert_eq!(check_guest_crs(&c, &caps, long), Err(Check::GuestEferLma));
        c.entry |= entry::IA32E_MODE_GUEST;
        assert_eq!(check_guest_crs(&c, &caps, long), Ok(()));
        // The IA-32e control without paging or PAE, and LMA without LME under paging.
        assert_eq!(check_guest_crs(&c, &caps, lme), Err(Check::GuestIa32eMode));
        let no_pae = GuestCrs {
            cr4: 0x2000,
            ..long
        };
        assert_eq!(
            check_guest_crs(&c, &caps, no_pae),
            Err(Check::GuestIa32eMode)
        );
        let no_lme = GuestCrs {
            efer: EFER_LMA,
            ..long
        };
        assert_eq!(check_guest_crs(&c, &caps, no_lme), Err(Check::GuestEferLma));
        // The 64-bit guest libvmm starts passes with or without unrestricted guest, and the controls
        // of the AP (unrestricted guest) pass the control checks.
        assert_eq!(check(&c, &caps, GUEST), Ok(()));
        assert_eq!(check_guest_crs(&c, &caps, LONG), Ok(()));
        c.proc2 &= !proc2::UNRESTRICTED_GUEST;
        assert_eq!(check_guest_crs(&c, &caps, LONG), Ok(()));
    }

    fn good() -> Controls {
        setup::controls(&skylake_x(), &setup::Addrs::TEST, Tweak::None).unwrap()
    }

    #[test]
    fn libvmms_own_configuration_passes() {
        assert_eq!(check(&good(), &skylake_x(), GUEST), Ok(()));
    }

    #[test]
    fn the_test_tweaks_are_valid_until_their_bad_value_is_applied() {
        let caps = skylake_x();
        for t in [
            Tweak::TprThresholdHigh,
            Tweak::TprThresholdAboveVtpr,
            Tweak::TscMultiplierZero,
        ] {
            let c = setup::controls(&caps, &setup::Addrs::TEST, t).unwrap();
            let mut fixed = c;
            fixed.tpr_threshold = 0;
            fixed.tsc_multiplier = 1 << 48;
            assert_eq!(check(&fixed, &caps, GUEST), Ok(()), "{t:?} base config");
        }
    }

    #[test]
    fn each_bad_configuration_names_its_rule() {
        let caps = skylake_x();
        let t = |tweak| {
            check(
                &setup::controls(&caps, &setup::Addrs::TEST, tweak).unwrap(),
                &caps,
                GUEST,
            )
        };
        assert_eq!(t(Tweak::TprThresholdHigh), Err(Check::TprThresholdHighBits));
        assert_eq!(
            t(Tweak::TprThresholdAboveVtpr),
            Err(Check::TprThresholdAboveVtpr)
        );
        assert_eq!(t(Tweak::TscMultiplierZero), Err(Check::TscMultiplierZero));
        assert!(Check::TprThresholdHighBits
            .name()
            .contains("TPR_THRESHOLD[31:4]"));
        assert!(Check::TscMultiplierZero.name().contains("TSC_MULTIPLIER"));
    }

    #[test]
    fn tpr_threshold_high_bits_are_fine_with_virtual_interrupt_delivery() {
        let caps = skylake_x();
        let mut c = setup::controls(&caps, &setup::Addrs::TEST, Tweak::TprThresholdHigh).unwrap();
        c.proc2 |= proc2::VIRTUAL_INTR_DELIVERY;
        c.pin |= pin::EXT_INTR_EXITING;
        assert_eq!(check(&c, &caps, GUEST), Ok(()));
        c.pin &= !pin::EXT_INTR_EXITING;
        assert_eq!(check(&c, &caps, GUEST), Err(Check::VidWithoutExtIntExiting));
    }

    #[test]
    fn tpr_threshold_low_bits_compare_with_vtpr() {
        let caps = skylake_x();
        let c = setup::controls(&caps, &setup::Addrs::TEST, Tweak::TprThresholdAboveVtpr).unwrap();
        assert_eq!(
            check(
                &c,
                &caps,
                GuestFacts {
                    vtpr: 0x2F,
                    ..GUEST
                }
            ),
            Err(Check::TprThresholdAboveVtpr)
        );
        assert_eq!(
            check(
                &c,
                &caps,
                GuestFacts {
                    vtpr: c.tpr_threshold as u8 * 16,
                    ..GUEST
                }
            ),
            Ok(())
        );
    }

    #[test]
    fn control_word_and_address_rules() {
        let caps = skylake_x();
        type Breaker = fn(&mut Controls);
        let cases: [(Breaker, Check); 16] = [
            (|c| c.pin &= !0x16, Check::PinAllowed),
            (|c| c.proc1 |= 1 << 0, Check::Proc1Allowed),
            (|c| c.proc2 |= 1 << 31, Check::Proc2Allowed),
            (|c| c.exit &= 0, Check::ExitAllowed),
            (|c| c.entry |= entry::ENTRY_TO_SMM, Check::EntryToSmm),
            (|c| c.cr3_target_count = 5, Check::Cr3TargetCount),
            (|c| c.io_bitmap_b |= 0x800, Check::IoBitmapAddress),
            (|c| c.msr_bitmap = 1 << 45, Check::MsrBitmapAddress),
            (|c| c.vpid = 0, Check::VpidZero),
            (|c| c.eptp = (c.eptp & !7) | 1, Check::EptpMemoryType),
            (
                |c| c.eptp = (c.eptp & !eptp::PWL_MASK) | (4 << 3),
                Check::EptpWalkLength,
            ),
            (|c| c.eptp |= 1 << 8, Check::EptpReservedBits),
            (|c| c.proc2 &= !proc2::EPT, Check::UnrestrictedWithoutEpt),
            (
                |c| c.pin |= pin::VIRTUAL_NMIS,
                Check::VirtualNmisWithoutNmiExiting,
            ),
            (
                |c| {
                    c.pin &= !pin::PREEMPTION_TIMER;
                    c.exit |= exit::SAVE_PREEMPTION_TIMER;
                },
                Check::SavePreemptionTimerWithoutTimer,
            ),
            (|c| c.proc2 |= proc2::PML, Check::UnsupportedControl),
        ];
        for (i, (bad, want)) in cases.iter().enumerate() {
            let mut c = good();
            if *want == Check::UnrestrictedWithoutEpt {
                c.proc2 |= proc2::UNRESTRICTED_GUEST;
            }
            bad(&mut c);
            assert_eq!(check(&c, &caps, GUEST), Err(*want), "case {i}");
        }
    }

    #[test]
    fn event_injection_rules() {
        use intr_info::*;
        let caps = skylake_x();
        let inj = |info: u32, ec: u32, len: u32| {
            let mut c = good();
            c.entry_intr_info = info;
            c.entry_error_code = ec;
            c.entry_instr_len = len;
            check(&c, &caps, GUEST)
        };
        let hw = VALID | (TYPE_HW_EXCEPTION << TYPE_SHIFT);
        assert_eq!(inj(hw | 6, 0, 0), Ok(()), "#UD");
        assert_eq!(inj(hw | 13 | DELIVER_ERROR_CODE, 0, 0), Ok(()), "#GP(0)");
        assert_eq!(inj(hw | 13, 0, 0), Err(Check::InjectionErrorCode));
        assert_eq!(
            inj(hw | 6 | DELIVER_ERROR_CODE, 0, 0),
            Err(Check::InjectionErrorCode)
        );
        assert_eq!(
            inj(hw | 13 | DELIVER_ERROR_CODE, 0x1_0000, 0),
            Err(Check::InjectionErrorCode)
        );
        assert_eq!(inj(hw | 32, 0, 0), Err(Check::InjectionVector));
        assert_eq!(
            inj(VALID | (TYPE_NMI << TYPE_SHIFT) | 3, 0, 0),
            Err(Check::InjectionVector)
        );
        assert_eq!(
            inj(VALID | (1 << TYPE_SHIFT), 0, 0),
            Err(Check::InjectionType)
        );
        assert_eq!(
            inj(hw | 6 | (1 << 20), 0, 0),
            Err(Check::InjectionReservedBits)
        );
        assert_eq!(
            inj(VALID | (TYPE_SW_INTR << TYPE_SHIFT) | 0x80, 0, 16),
            Err(Check::InjectionLength)
        );
        assert_eq!(
            inj(VALID | (TYPE_SW_INTR << TYPE_SHIFT) | 0x80, 0, 2),
            Ok(())
        );
    }
}
