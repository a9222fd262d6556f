//! AVIC / x2AVIC: the enable policy and the x2APIC MSR interception that goes with it, after KVM's
//! "Enable AVIC for Zen4+ (if x2AVIC)" series (shared/reference/svm.md §5). *Simulated*: QEMU's TCG
//! offers no AVIC, so this is decided and tested on the host against modelled CPUs; the image does not
//! turn AVIC on.
//!
//! Policy, as KVM now has it: the parameter is `auto` by default; `auto` enables AVIC only when the CPU
//! has x2AVIC and is Zen4 or a later family (>= 0x1A); AVIC needs nested paging; a CPU without the AVIC
//! CPUID bit is refused unless forced; an SNP host without HV_INUSE_WR_ALLOWED is refused; x2AVIC is used
//! iff the CPU has it, otherwise AVIC runs "hybrid" (accelerated in xAPIC mode only, x2APIC MSRs
//! emulated). With x2AVIC active in x2APIC mode, the x2APIC MSRs AVIC accelerates are passed through;
//! LVTT (0x832, TSC-deadline is not virtualized) and SELF_IPI (0x83F) stay intercepted.
#![forbid(unsafe_code)]
// The image uses only the decision (it has no virtual APIC to activate AVIC for yet); the rest is the
// activation half, exercised by the host tests until then.
#![cfg_attr(not(test), allow(dead_code))]

use super::permission_maps::MsrPermissionMap;

/// The `avic` parameter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AvicParam {
    Auto,
    On,
    Off,
}

impl AvicParam {
    /// Parses like KVM's module parameter: "auto", any boolean spelling, or a bare flag (= on).
    pub fn parse(s: Option<&str>) -> Option<Self> {
        match s {
            None | Some("") => Some(Self::On),
            Some("auto") => Some(Self::Auto),
            Some("1" | "y" | "Y" | "yes" | "on" | "true") => Some(Self::On),
            Some("0" | "n" | "N" | "no" | "off" | "false") => Some(Self::Off),
            Some(_) => None,
        }
    }
}

/// What the policy needs to know about the host.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HostFacts {
    /// CPUID 0x8000_000A EDX bit 13.
    pub avic: bool,
    /// CPUID 0x8000_000A EDX bit 18.
    pub x2avic: bool,
    /// CPUID 0x8000_000A ECX bit 6 (x2AVIC for 4K vCPUs).
    pub x2avic_ext: bool,
    pub zen4: bool,
    pub family: u32,
    pub npt_enabled: bool,
    pub force_avic: bool,
    /// SNP host active but without HV_INUSE_WR_ALLOWED.
    pub snp_without_hv_inuse_wr: bool,
}

impl HostFacts {
    /// Reads the facts from CPUID (family from leaf 1; Zen4 = family 0x19 models 0x10..=0x1F,
    /// 0x60..=0xAF, as Linux's X86_FEATURE_ZEN4 does).
    pub fn from_cpuid(cpuid: impl Fn(u32, u32) -> [u32; 4], npt_enabled: bool) -> Self {
        let sig = cpuid(1, 0)[0];
        let base_family = (sig >> 8) & 0xF;
        let family = if base_family == 0xF {
            base_family + ((sig >> 20) & 0xFF)
        } else {
            base_family
        };
        let model = ((sig >> 4) & 0xF) | (((sig >> 16) & 0xF) << 4);
        let svm = if cpuid(0x8000_0000, 0)[0] >= 0x8000_000A {
            cpuid(0x8000_000A, 0)
        } else {
            [0; 4]
        };
        Self {
            avic: svm[3] & (1 << 13) != 0,
            x2avic: svm[3] & (1 << 18) != 0,
            x2avic_ext: svm[2] & (1 << 6) != 0,
            zen4: family == 0x19 && matches!(model, 0x10..=0x1F | 0x60..=0xAF),
            family,
            npt_enabled,
            force_avic: false,
            snp_without_hv_inuse_wr: false,
        }
    }
}

/// How AVIC runs, if at all.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AvicMode {
    Off(&'static str),
    /// AVIC in xAPIC mode only; x2APIC MSRs are emulated.
    Hybrid,
    X2avic,
}

/// The decision and the message KVM would log with it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decision {
    pub mode: AvicMode,
    pub warning: Option<&'static str>,
}

pub fn decide(param: AvicParam, h: &HostFacts) -> Decision {
    let off = |why| Decision {
        mode: AvicMode::Off(why),
        warning: None,
    };
    let want = match param {
        AvicParam::Off => return off("disabled by parameter"),
        AvicParam::On => true,
        AvicParam::Auto => h.x2avic && (h.zen4 || h.family >= 0x1A),
    };
    if !want {
        return off("auto: needs x2AVIC on Zen4 or later");
    }
    if !h.npt_enabled {
        return off("AVIC needs nested paging");
    }
    let mut warning = None;
    if !h.avic {
        if h.x2avic {
            warning = Some("x2AVIC without AVIC in CPUID: firmware bug");
        }
        if !h.force_avic {
            return Decision {
                mode: AvicMode::Off("CPU does not report AVIC"),
                warning,
            };
        }
        warning = Some("AVIC forced on a CPU that does not report it: unsafe");
    }
    if h.snp_without_hv_inuse_wr {
        return Decision {
            mode: AvicMode::Off("SNP host lacks HV_INUSE_WR_ALLOWED"),
            warning,
        };
    }
    Decision {
        mode: if h.x2avic {
            AvicMode::X2avic
        } else {
            AvicMode::Hybrid
        },
        warning,
    }
}

/// Highest physical APIC ID table index (VMCB +0x0F8 bits 11:0).
pub const fn max_physical_id(mode: AvicMode, x2avic_ext: bool) -> u32 {
    match mode {
        AvicMode::X2avic if x2avic_ext => 0xFFF,
        AvicMode::X2avic => 0x1FF,
        _ => 0xFE,
    }
}

/// A vCPU whose APIC ID exceeds the table inhibits AVIC for the whole VM instead of failing creation.
pub const fn id_inhibits_avic(apic_id: u32, mode: AvicMode, x2avic_ext: bool) -> bool {
    apic_id > max_physical_id(mode, x2avic_ext)
}

/// The x2APIC MSRs x2AVIC accelerates (only the first MSR of the ISR/TMR/IRR banks, as KVM lists them).
pub const X2APIC_PASSTHROUGH: [u32; 24] = [
    0x802, 0x803, 0x808, 0x809, 0x80A, 0x80B, 0x80C, 0x80D, 0x80E, 0x80F, 0x810, 0x818, 0x820,
    0x828, 0x830, 0x831, 0x833, 0x834, 0x835, 0x836, 0x837, 0x838, 0x839, 0x83E,
];

/// Sets the interception of the x2AVIC-accelerated MSRs: passed through (`intercept == false`) only
/// while x2AVIC is active and the guest's APIC is in x2APIC mode.
pub fn set_x2apic_msr_interception(map: &mut MsrPermissionMap, intercept: bool) {
    for msr in X2APIC_PASSTHROUGH {
        map.set_intercept(msr, intercept, intercept);
    }
}

/// The x2APIC MSR interception (0x800-0x8FF) for AVIC mode `mode` with the guest's APIC in x2APIC mode
/// or not: every x2APIC MSR intercepted, then with x2AVIC active and the guest in x2APIC mode the
/// accelerated ones ([`X2APIC_PASSTHROUGH`]) passed through. The bring-up builds the MSR permission map
/// with this; the image runs the mode it can activate (off: QEMU's TCG has no AVIC), so the virtual
/// x2APIC (`x86::apic`) sees every access.
pub fn apply_x2apic_msr_policy(map: &mut MsrPermissionMap, mode: AvicMode, guest_x2apic: bool) {
    for msr in crate::x86::msr::X2APIC_FIRST..=crate::x86::msr::X2APIC_LAST {
        map.set_intercept(msr, true, true);
    }
    if mode == AvicMode::X2avic && guest_x2apic {
        set_x2apic_msr_interception(map, false);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_x2apic_msr_policy_is_checked_bit_by_bit_in_every_mode() {
        use crate::svm::permission_maps::MSRPM_SIZE;
        let modes = [
            (AvicMode::Off("x"), false),
            (AvicMode::Off("x"), true),
            (AvicMode::Hybrid, true),
            (AvicMode::X2avic, false),
            (AvicMode::X2avic, true),
        ];
        for (mode, x2) in modes {
            let mut map = Box::new(MsrPermissionMap([0; MSRPM_SIZE]));
            apply_x2apic_msr_policy(&mut map, mode, x2);
            let accelerated = mode == AvicMode::X2avic && x2;
            for msr in 0x800..=0x8FF {
                let through = accelerated && X2APIC_PASSTHROUGH.contains(&msr);
                for write in [false, true] {
                    assert_eq!(
                        map.intercepts(msr, write),
                        !through,
                        "{mode:?} {x2} {msr:#x} {write}"
                    );
                }
            }
            // LVTT (TSC-deadline is not virtualized) and SELF_IPI stay intercepted even with x2AVIC.
            assert!(map.intercepts(0x832, true) && map.intercepts(0x83F, true));
            // Nothing outside the x2APIC range was touched.
            assert!(!map.intercepts(0x7FF, true) && !map.intercepts(0x900, false));
        }
    }

    fn zen(family: u32, zen4: bool, x2avic: bool) -> HostFacts {
        HostFacts {
            avic: true,
            x2avic,
            zen4,
            family,
            npt_enabled: true,
            ..Default::default()
        }
    }

    #[test]
    fn auto_enables_only_zen4_or_later_with_x2avic() {
        assert_eq!(
            decide(AvicParam::Auto, &zen(0x19, true, true)).mode,
            AvicMode::X2avic
        );
        assert_eq!(
            decide(AvicParam::Auto, &zen(0x1A, false, true)).mode,
            AvicMode::X2avic
        );
        assert!(
            matches!(
                decide(AvicParam::Auto, &zen(0x19, false, true)).mode,
                AvicMode::Off(_)
            ),
            "Zen3"
        );
        assert!(
            matches!(
                decide(AvicParam::Auto, &zen(0x1A, false, false)).mode,
                AvicMode::Off(_)
            ),
            "no x2AVIC"
        );
        // Explicitly on: a Zen3 with AVIC but no x2AVIC runs hybrid.
        assert_eq!(
            decide(AvicParam::On, &zen(0x19, false, false)).mode,
            AvicMode::Hybrid
        );
    }

    #[test]
    fn requirements_and_refusals() {
        let mut h = zen(0x19, true, true);
        h.npt_enabled = false;
        assert_eq!(
            decide(AvicParam::On, &h).mode,
            AvicMode::Off("AVIC needs nested paging")
        );
        let mut h = zen(0x19, true, true);
        h.avic = false;
        let d = decide(AvicParam::On, &h);
        assert!(matches!(d.mode, AvicMode::Off(_)));
        assert_eq!(
            d.warning,
            Some("x2AVIC without AVIC in CPUID: firmware bug")
        );
        h.force_avic = true;
        assert_eq!(decide(AvicParam::On, &h).mode, AvicMode::X2avic);
        let mut h = zen(0x1A, false, true);
        h.snp_without_hv_inuse_wr = true;
        assert!(matches!(decide(AvicParam::Auto, &h).mode, AvicMode::Off(_)));
        assert!(matches!(
            decide(AvicParam::Off, &zen(0x1A, true, true)).mode,
            AvicMode::Off(_)
        ));
    }

    #[test]
    fn parameter_spellings() {
        assert_eq!(AvicParam::parse(None), Some(AvicParam::On));
        assert_eq!(AvicParam::parse(Some("auto")), Some(AvicParam::Auto));
        assert_eq!(AvicParam::parse(Some("N")), Some(AvicParam::Off));
        assert_eq!(AvicParam::parse(Some("maybe")), None);
    }

    #[test]
    fn apic_id_limits() {
        assert!(!id_inhibits_avic(254, AvicMode::Hybrid, false));
        assert!(id_inhibits_avic(255, AvicMode::Hybrid, false));
        assert!(!id_inhibits_avic(511, AvicMode::X2avic, false));
        assert!(id_inhibits_avic(512, AvicMode::X2avic, false));
        assert!(!id_inhibits_avic(4095, AvicMode::X2avic, true));
    }

    #[test]
    fn x2apic_msrs_pass_through_except_lvtt_and_self_ipi() {
        let mut m = Box::new(MsrPermissionMap(
            [0; super::super::permission_maps::MSRPM_SIZE],
        ));
        m.deny_all();
        set_x2apic_msr_interception(&mut m, false);
        for msr in X2APIC_PASSTHROUGH {
            assert!(
                !m.intercepts(msr, false) && !m.intercepts(msr, true),
                "{msr:#x}"
            );
        }
        for msr in [0x832, 0x83F, 0x811, 0x800, 0x801, 0x840] {
            assert!(
                m.intercepts(msr, false) && m.intercepts(msr, true),
                "{msr:#x} must stay intercepted"
            );
        }
        set_x2apic_msr_interception(&mut m, true);
        assert!(X2APIC_PASSTHROUGH
            .iter()
            .all(|&msr| m.intercepts(msr, false)));
    }

    #[test]
    fn cpuid_facts_identify_zen4() {
        // Family 0x19 (0xF + 0xA), model 0x11: Genoa.
        let genoa = |l: u32, _| match l {
            1 => [0x00A1_0F11, 0, 0, 0],
            0x8000_0000 => [0x8000_0021, 0, 0, 0],
            0x8000_000A => [1, 16, 1 << 6, (1 << 13) | (1 << 18) | 1],
            _ => [0; 4],
        };
        let h = HostFacts::from_cpuid(genoa, true);
        assert_eq!(
            (h.family, h.zen4, h.avic, h.x2avic, h.x2avic_ext),
            (0x19, true, true, true, true)
        );
    }
}
