//! The first VMCS image: the controls libvmm wants adjusted to the CPU's capabilities, the host state
//! the CPU returns to on every exit, and the guest's entry state (64-bit mode, paging on, the loader's
//! tables and GDT inside the window).
#![forbid(unsafe_code)]

use super::caps::{Caps, CR4_VMXE};
use super::controls::{entry, exit, pin, proc1, proc2, Controls};
use super::fields as f;
use super::vmcs::{VmFail, Vmcs, VmxOps};
use crate::x86::guest_setup::InitialState;
use crate::x86::segment::vmx_access_rights;

/// Physical addresses of the pages the controls point at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Addrs {
    pub io_bitmap_a: u64,
    pub io_bitmap_b: u64,
    pub msr_bitmap: u64,
    pub virtual_apic: u64,
    pub eptp: u64,
}

impl Addrs {
    #[cfg(test)]
    pub const TEST: Addrs = Addrs {
        io_bitmap_a: 0x10_3000,
        io_bitmap_b: 0x10_4000,
        msr_bitmap: 0x10_2000,
        virtual_apic: 0x10_5000,
        eptp: 0x10_6000 | 0x5e,
    };
}

/// Deliberately bad configurations for the consistency-check tests (command line `vmx.bad=...`): each
/// turns on a control legitimately and then breaks one SDM rule about it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Tweak {
    None,
    /// Use TPR shadow, virtual-interrupt delivery off, TPR_THRESHOLD = 0x10 (bits 31:4 non-zero).
    TprThresholdHigh,
    /// Use TPR shadow, TPR_THRESHOLD = 3 above VTPR[7:4] = 0.
    TprThresholdAboveVtpr,
    /// Use TSC scaling with TSC_MULTIPLIER = 0.
    TscMultiplierZero,
    /// Host TR selector 0: a host-state rule (error 8) the software checks do not cover, to show the
    /// "missed consistency check" report.
    HostTrZero,
}

impl Tweak {
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "tpr-threshold" => Self::TprThresholdHigh,
            "tpr-vtpr" => Self::TprThresholdAboveVtpr,
            "tsc-multiplier" => Self::TscMultiplierZero,
            "host-tr" => Self::HostTrZero,
            _ => return None,
        })
    }
}

/// Why the wanted controls cannot be programmed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Unsupported(pub &'static str);

/// The controls libvmm runs a guest with: external-interrupt, HLT, I/O (bitmaps), MSR (bitmaps),
/// MWAIT/MONITOR and CR8 exiting; EPT and VPID; 64-bit guest; EFER and PAT switched on entry and exit. Nothing else.
pub(crate) fn controls(caps: &Caps, a: &Addrs, tweak: Tweak) -> Result<Controls, Unsupported> {
    let mut want1 = proc1::HLT_EXITING
        | proc1::USE_IO_BITMAPS
        | proc1::USE_MSR_BITMAPS
        | proc1::SECONDARY
        | proc1::CR8_LOAD_EXITING
        | proc1::CR8_STORE_EXITING
        | (1 << 10) // MWAIT exiting
        | (1 << 29); // MONITOR exiting
    let mut want2 = proc2::EPT | proc2::VPID;
    let mut tpr_threshold = 0;
    // With TSC scaling on, the multiplier is left 0 on purpose (the TscMultiplierZero tweak).
    let tsc_multiplier = 0;
    match tweak {
        Tweak::TprThresholdHigh | Tweak::TprThresholdAboveVtpr => {
            want1 = (want1 | proc1::USE_TPR_SHADOW)
                & !(proc1::CR8_LOAD_EXITING | proc1::CR8_STORE_EXITING);
            tpr_threshold = if tweak == Tweak::TprThresholdHigh {
                0x10
            } else {
                3
            };
        }
        Tweak::TscMultiplierZero => want2 |= proc2::TSC_SCALING,
        Tweak::None | Tweak::HostTrZero => {}
    }
    let ctl = |allowed: super::caps::Allowed, want, what| {
        allowed.adjust(want).map_err(|_| Unsupported(what))
    };
    let save_preemption = if caps.pin.may_be_1 & pin::PREEMPTION_TIMER != 0 {
        caps.exit.may_be_1 & exit::SAVE_PREEMPTION_TIMER
    } else {
        0
    };
    Ok(Controls {
        // External interrupts exit, whatever the guest's IF. The VMX-preemption timer, where the CPU has
        // it, makes even a guest that never exits return to the VMM every `PREEMPTION_TIMER_VALUE`
        // timer ticks (it restarts at every entry), so `libvmm.timeout_ms` holds on VMX as well: Bochs,
        // unlike hardware, raises no external-interrupt exit while such a guest runs with IF = 0.
        pin: ctl(
            caps.pin,
            pin::EXT_INTR_EXITING | (caps.pin.may_be_1 & pin::PREEMPTION_TIMER),
            "external-interrupt exiting",
        )?,
        proc1: ctl(
            caps.proc1,
            want1,
            "HLT/I-O-bitmap/MSR-bitmap/secondary/CR8/MWAIT/MONITOR exiting",
        )?,
        proc2: ctl(caps.proc2, want2, "EPT and VPID")?,
        // With the timer, its value is saved on every exit, so it counts down across entries to the
        // host deadline the loop programs (`Vmx::set_host_deadline`) instead of restarting each time.
        // No "acknowledge interrupt on exit": the host interrupt behind an external-interrupt exit stays
        // pending in the local APIC, and the loop takes it once on the host event, through the VMM's
        // IDT (`Platform::clear_kick`), the one path SVM has too.
        exit: ctl(
            caps.exit,
            save_preemption
                | exit::HOST_ADDR_SPACE_SIZE
                | exit::SAVE_EFER
                | exit::LOAD_EFER
                | exit::SAVE_PAT
                | exit::LOAD_PAT,
            "64-bit host, EFER/PAT switching on exit",
        )?,
        entry: ctl(
            caps.entry,
            entry::IA32E_MODE_GUEST | entry::LOAD_EFER | entry::LOAD_PAT,
            "64-bit guest entry",
        )?,
        cr3_target_count: 0,
        io_bitmap_a: a.io_bitmap_a,
        io_bitmap_b: a.io_bitmap_b,
        msr_bitmap: a.msr_bitmap,
        virtual_apic: a.virtual_apic,
        tpr_threshold,
        tsc_multiplier,
        eptp: a.eptp,
        vpid: crate::config::GUEST_TAG,
        exit_msr_store_count: 0,
        exit_msr_load_count: 0,
        entry_msr_load_count: 0,
        entry_intr_info: 0,
        entry_error_code: 0,
        entry_instr_len: 0,
    })
}

/// The controls of a guest SMP AP's vCPU: the boot vCPU's ([`controls`]) plus "unrestricted guest"
/// (with EPT), since the AP starts in real mode after INIT + STARTUP, and no IA-32e mode guest until
/// the AP turns paging on with EFER.LME (`Vmx::set_cr`). A CPU without unrestricted guest is refused by
/// name: the AP then never enters (no VM-entry failure).
pub(crate) fn ap_controls(caps: &Caps, a: &Addrs) -> Result<Controls, Unsupported> {
    let mut c = controls(caps, a, Tweak::None)?;
    c.proc2 = caps
        .proc2
        .adjust(c.proc2 | proc2::UNRESTRICTED_GUEST)
        .map_err(|_| {
            Unsupported("VMX unrestricted guest (IA32_VMX_PROCBASED_CTLS2 bit 39): a guest AP starts in real mode")
        })?;
    c.entry &= !entry::IA32E_MODE_GUEST;
    Ok(c)
}

/// The VMX-preemption timer's start value: it counts down at the TSC rate divided by 2^X
/// (IA32_VMX_MISC[4:0]; 32 on Bochs' skylake_x), so about 1.6 M TSC ticks there, under 1 ms on hardware.
/// With "save VMX-preemption timer value" it is only the first run's bound: the loop then programs the
/// earliest host deadline (the guest's timer, the time limit); without it, it restarts at every entry.
pub(crate) const PREEMPTION_TIMER_VALUE: u32 = 50_000;

/// Writes every control field of `c`.
pub(crate) fn write_controls<H: VmxOps>(v: &mut Vmcs<H>, c: &Controls) -> Result<(), VmFail> {
    v.write(f::PIN_BASED_CONTROLS, c.pin)?;
    if c.pin & pin::PREEMPTION_TIMER != 0 {
        v.write(f::GUEST_PREEMPTION_TIMER, PREEMPTION_TIMER_VALUE)?;
    }
    v.write(f::PRIMARY_PROC_CONTROLS, c.proc1)?;
    v.write(f::SECONDARY_PROC_CONTROLS, c.proc2)?;
    v.write(f::EXIT_CONTROLS, c.exit)?;
    v.write(f::ENTRY_CONTROLS, c.entry)?;
    v.write(f::CR3_TARGET_COUNT, c.cr3_target_count)?;
    v.write(f::EXCEPTION_BITMAP, 0)?;
    v.write(f::IO_BITMAP_A, c.io_bitmap_a)?;
    v.write(f::IO_BITMAP_B, c.io_bitmap_b)?;
    v.write(f::MSR_BITMAP, c.msr_bitmap)?;
    if c.has1(proc1::USE_TPR_SHADOW) {
        v.write(f::VIRTUAL_APIC_PAGE, c.virtual_apic)?;
        v.write(f::TPR_THRESHOLD, c.tpr_threshold)?;
    }
    if c.has2(proc2::TSC_SCALING) {
        v.write(f::TSC_MULTIPLIER, c.tsc_multiplier)?;
    }
    v.write(f::EPT_POINTER, c.eptp)?;
    v.write(f::VPID, c.vpid)?;
    v.write(f::EXIT_MSR_STORE_COUNT, c.exit_msr_store_count)?;
    v.write(f::EXIT_MSR_LOAD_COUNT, c.exit_msr_load_count)?;
    v.write(f::ENTRY_MSR_LOAD_COUNT, c.entry_msr_load_count)?;
    v.write(f::ENTRY_INTERRUPTION_INFO, c.entry_intr_info)?;
    Ok(())
}

/// The host state, read by `arch` at bring-up.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct HostState {
    pub cr0: u64,
    pub cr3: u64,
    pub cr4: u64,
    pub cs: u16,
    pub ss: u16,
    pub ds: u16,
    pub es: u16,
    pub fs: u16,
    pub gs: u16,
    pub tr: u16,
    pub fs_base: u64,
    pub gs_base: u64,
    pub tr_base: u64,
    pub gdtr_base: u64,
    pub idtr_base: u64,
    pub efer: u64,
    pub pat: u64,
    /// Where the CPU resumes the host on a VM exit (the world switch's exit label).
    pub rip: u64,
}

pub(crate) fn write_host<H: VmxOps>(v: &mut Vmcs<H>, h: &HostState) -> Result<(), VmFail> {
    // Host selectors must have RPL = 0 and TI = 0 (host-state checks).
    let sel = |s: u16| s & !7;
    v.write(f::HOST_CR0, h.cr0)?;
    v.write(f::HOST_CR3, h.cr3)?;
    v.write(f::HOST_CR4, h.cr4)?;
    v.write(f::HOST_CS_SELECTOR, sel(h.cs))?;
    v.write(f::HOST_SS_SELECTOR, sel(h.ss))?;
    v.write(f::HOST_DS_SELECTOR, sel(h.ds))?;
    v.write(f::HOST_ES_SELECTOR, sel(h.es))?;
    v.write(f::HOST_FS_SELECTOR, sel(h.fs))?;
    v.write(f::HOST_GS_SELECTOR, sel(h.gs))?;
    v.write(f::HOST_TR_SELECTOR, sel(h.tr))?;
    v.write(f::HOST_FS_BASE, h.fs_base)?;
    v.write(f::HOST_GS_BASE, h.gs_base)?;
    v.write(f::HOST_TR_BASE, h.tr_base)?;
    v.write(f::HOST_GDTR_BASE, h.gdtr_base)?;
    v.write(f::HOST_IDTR_BASE, h.idtr_base)?;
    v.write(f::HOST_IA32_EFER, h.efer)?;
    v.write(f::HOST_IA32_PAT, h.pat)?;
    v.write(f::HOST_SYSENTER_CS, 0)?;
    v.write(f::HOST_SYSENTER_ESP, 0)?;
    v.write(f::HOST_SYSENTER_EIP, 0)?;
    v.write(f::HOST_RIP, h.rip)?;
    Ok(())
}

/// Segment access rights in the VMCS format: 64-bit code (L=1, G=1, P, S, DPL 0, execute/read,
/// accessed), flat data, busy 64-bit TSS, and "unusable".
const AR_TSS_BUSY: u32 = 0x008B;
const AR_UNUSABLE: u32 = 1 << 16;

/// The CR0/CR4 guest/host masks: every bit host-owned. The guest reads its own values (the read
/// shadows), and every MOV to CR0/CR4, CLTS or LMSW that changes a bit exits to the control-register
/// policy (`policy::cr`), which answers as the architecture does; the bits VMX forces (CR0.PE/NE/PG,
/// CR4.VMXE) stay set underneath.
const CR_MASK_ALL: u64 = u64::MAX;

/// The guest-state fields that differ between the boot vCPU's 64-bit entry and an AP's real-mode
/// start; [`write_guest_fields`] writes them with everything the two share.
struct GuestFields {
    /// CR0/CR4 as the CPU holds them (VMX fixed bits applied) and as the guest reads them (shadows).
    cr0: u64,
    cr0_shadow: u64,
    cr4: u64,
    cr4_shadow: u64,
    cr3: u64,
    efer: u64,
    pat: u64,
    rflags: u64,
    rip: u64,
    rsp: u64,
    /// (selector, base, limit, access rights) of CS.
    cs: (u16, u64, u32, u32),
    /// (selector, limit, access rights) of DS, ES, SS, FS and GS (base 0).
    data: (u16, u32, u32),
    /// (limit, access rights) of LDTR (selector and base 0).
    ldtr: (u32, u32),
    /// TR's limit (selector and base 0, a busy TSS as VMX requires).
    tr_limit: u32,
    gdtr: (u64, u32),
    idtr_limit: u32,
}

/// Writes one guest state: the fields of `g`, the CR0/CR4 guest/host masks ([`CR_MASK_ALL`]), and
/// what every start has alike (DEBUGCTL 0, DR7 0x400, IDTR base 0, SYSENTER 0, no blocking, active,
/// no pending debug exceptions, no VMCS link).
fn write_guest_fields<H: VmxOps>(v: &mut Vmcs<H>, g: &GuestFields) -> Result<(), VmFail> {
    v.write(f::GUEST_CR0, g.cr0)?;
    v.write(f::CR0_GUEST_HOST_MASK, CR_MASK_ALL)?;
    v.write(f::CR0_READ_SHADOW, g.cr0_shadow)?;
    v.write(f::GUEST_CR4, g.cr4)?;
    v.write(f::CR4_GUEST_HOST_MASK, CR_MASK_ALL)?;
    v.write(f::CR4_READ_SHADOW, g.cr4_shadow)?;
    v.write(f::GUEST_CR3, g.cr3)?;
    v.write(f::GUEST_IA32_EFER, g.efer)?;
    v.write(f::GUEST_IA32_PAT, g.pat)?;
    v.write(f::GUEST_IA32_DEBUGCTL, 0)?;
    v.write(f::GUEST_DR7, 0x400)?;
    v.write(f::GUEST_RFLAGS, g.rflags)?;
    v.write(f::GUEST_RIP, g.rip)?;
    v.write(f::GUEST_RSP, g.rsp)?;
    let (cs_sel, cs_base, cs_limit, cs_ar) = g.cs;
    v.write(f::GUEST_CS_SELECTOR, cs_sel)?;
    v.write(f::GUEST_CS_BASE, cs_base)?;
    v.write(f::GUEST_CS_LIMIT, cs_limit)?;
    v.write(f::GUEST_CS_AR, cs_ar)?;
    let (data_sel, data_limit, data_ar) = g.data;
    for (sel, base, limit, ar) in [
        (
            f::GUEST_DS_SELECTOR,
            f::GUEST_DS_BASE,
            f::GUEST_DS_LIMIT,
            f::GUEST_DS_AR,
        ),
        (
            f::GUEST_ES_SELECTOR,
            f::GUEST_ES_BASE,
            f::GUEST_ES_LIMIT,
            f::GUEST_ES_AR,
        ),
        (
            f::GUEST_SS_SELECTOR,
            f::GUEST_SS_BASE,
            f::GUEST_SS_LIMIT,
            f::GUEST_SS_AR,
        ),
        (
            f::GUEST_FS_SELECTOR,
            f::GUEST_FS_BASE,
            f::GUEST_FS_LIMIT,
            f::GUEST_FS_AR,
        ),
        (
            f::GUEST_GS_SELECTOR,
            f::GUEST_GS_BASE,
            f::GUEST_GS_LIMIT,
            f::GUEST_GS_AR,
        ),
    ] {
        v.write(sel, data_sel)?;
        v.write(base, 0)?;
        v.write(limit, data_limit)?;
        v.write(ar, data_ar)?;
    }
    v.write(f::GUEST_LDTR_SELECTOR, 0)?;
    v.write(f::GUEST_LDTR_BASE, 0)?;
    v.write(f::GUEST_LDTR_LIMIT, g.ldtr.0)?;
    v.write(f::GUEST_LDTR_AR, g.ldtr.1)?;
    v.write(f::GUEST_TR_SELECTOR, 0)?;
    v.write(f::GUEST_TR_BASE, 0)?;
    v.write(f::GUEST_TR_LIMIT, g.tr_limit)?;
    v.write(f::GUEST_TR_AR, AR_TSS_BUSY)?;
    v.write(f::GUEST_GDTR_BASE, g.gdtr.0)?;
    v.write(f::GUEST_GDTR_LIMIT, g.gdtr.1)?;
    v.write(f::GUEST_IDTR_BASE, 0)?;
    v.write(f::GUEST_IDTR_LIMIT, g.idtr_limit)?;
    v.write(f::GUEST_SYSENTER_CS, 0)?;
    v.write(f::GUEST_SYSENTER_ESP, 0)?;
    v.write(f::GUEST_SYSENTER_EIP, 0)?;
    v.write(f::GUEST_INTERRUPTIBILITY, 0)?;
    v.write(f::GUEST_ACTIVITY_STATE, 0)?;
    v.write(f::GUEST_PENDING_DBG, 0)?;
    v.write(f::VMCS_LINK_POINTER, u64::MAX)?;
    Ok(())
}

/// Writes the guest state. CR0/CR4 get the VMX fixed bits; every bit is host-owned through the
/// guest/host masks ([`CR_MASK_ALL`]).
pub(crate) fn write_guest<H: VmxOps>(
    v: &mut Vmcs<H>,
    caps: &Caps,
    g: &InitialState,
) -> Result<(), VmFail> {
    write_guest_fields(
        v,
        &GuestFields {
            cr0: caps.fix_cr0(g.cr0),
            cr0_shadow: g.cr0,
            cr4: caps.fix_cr4(g.cr4),
            cr4_shadow: g.cr4 & !CR4_VMXE,
            cr3: g.cr3,
            efer: g.efer,
            pat: g.pat,
            rflags: g.rflags,
            rip: g.rip,
            rsp: g.rsp,
            cs: (g.cs.selector, 0, 0xFFFF_FFFF, vmx_access_rights(g.cs.desc)),
            data: (g.data.selector, 0xFFFF_FFFF, vmx_access_rights(g.data.desc)),
            ldtr: (0, AR_UNUSABLE),
            tr_limit: 0x67,
            gdtr: (g.gdt_base, g.gdt_limit as u32),
            idtr_limit: 0,
        },
    )
}

/// CR0 after INIT (SDM "Processor State After Reset": CD, NW, ET).
pub(crate) const CR0_AFTER_INIT: u64 = 0x6000_0010;

/// Writes the state of a vCPU that a STARTUP IPI with `vector` started (guest SMP), as after INIT + SIPI
/// on hardware (SDM Vol. 3A "Processor State After Reset" and "MP Initialization"; KVM's
/// `vmx_vcpu_reset` and SIPI handling): real mode, CS selector `vector << 8` with base `vector << 12`,
/// IP 0, the other segments 0 with 64 KiB limits, LDTR and TR usable with their reset types (TR a busy
/// TSS, as VMX requires), GDTR/IDTR base 0 limit 0xFFFF, CR0 0x6000_0010 as the guest reads it (the
/// guest field: NE, and PE/PG clear under "unrestricted guest", which the AP's controls set; CD/NW off
/// underneath), CR3 = CR4 = EFER = 0 (CR4.VMXE underneath), RFLAGS 2, DR7 0x400, PAT at its reset value.
/// The guest/host masks own every CR0/CR4 bit, as for the boot vCPU.
pub(crate) fn write_guest_sipi<H: VmxOps>(
    v: &mut Vmcs<H>,
    caps: &Caps,
    vector: u8,
) -> Result<(), VmFail> {
    const CD_NW: u64 = 3 << 29;
    const PE_PG: u64 = 1 | 1 << 31;
    write_guest_fields(
        v,
        &GuestFields {
            cr0: ((CR0_AFTER_INIT & !CD_NW) | (caps.cr0_fixed0 & !PE_PG)) & caps.cr0_fixed1,
            cr0_shadow: CR0_AFTER_INIT,
            cr4: caps.fix_cr4(CR4_VMXE),
            cr4_shadow: 0,
            cr3: 0,
            efer: 0,
            pat: 0x0007_0406_0007_0406,
            rflags: 2,
            rip: 0,
            rsp: 0,
            cs: (
                u16::from(vector) << 8,
                u64::from(vector) << 12,
                0xFFFF,
                0x9B,
            ),
            data: (0, 0xFFFF, 0x93),
            ldtr: (0xFFFF, 0x82),
            tr_limit: 0xFFFF,
            gdtr: (0, 0xFFFF),
            idtr_limit: 0xFFFF,
        },
    )
}

/// The VMX debug options (`libvmm.vmx.skip-checks`, `libvmm.vmx.report-missed`, `libvmm.vmx.bad=<tweak>`,
/// parsed by `cmdline`) as the backend uses them. An unknown tweak name builds the normal configuration.
pub(crate) fn debug_options(o: &crate::cmdline::Options<'_>) -> (super::vcpu::Options, Tweak) {
    let opts = super::vcpu::Options {
        skip_checks: o.vmx_skip_checks,
        report_missed: o.vmx_report_missed,
    };
    let tweak = o.vmx_bad.and_then(Tweak::parse).unwrap_or(Tweak::None);
    (opts, tweak)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vmx::caps::tests::skylake_x;

    #[test]
    fn wanted_controls_are_adjusted_to_the_capabilities() {
        let caps = skylake_x();
        let c = controls(&caps, &Addrs::TEST, Tweak::None).unwrap();
        assert!(caps.proc1.permits(c.proc1) && caps.proc2.permits(c.proc2));
        assert!(
            c.has1(proc1::HLT_EXITING | proc1::USE_IO_BITMAPS)
                && c.has2(proc2::EPT)
                && c.has2(proc2::VPID)
        );
        assert!(!c.has1(proc1::USE_TPR_SHADOW) && !c.has2(proc2::TSC_SCALING));
        assert_ne!(c.vpid, 0);
    }

    #[test]
    fn an_aps_controls_add_unrestricted_guest_and_start_outside_ia32e_mode() {
        let caps = skylake_x();
        let c = ap_controls(&caps, &Addrs::TEST).unwrap();
        assert!(c.has2(proc2::UNRESTRICTED_GUEST | proc2::EPT) && c.has2(proc2::VPID));
        assert_eq!(c.entry & entry::IA32E_MODE_GUEST, 0);
        assert!(caps.proc2.permits(c.proc2) && caps.entry.permits(c.entry));
        let mut no_ug = skylake_x();
        no_ug.proc2.may_be_1 &= !proc2::UNRESTRICTED_GUEST;
        assert!(ap_controls(&no_ug, &Addrs::TEST)
            .unwrap_err()
            .0
            .contains("unrestricted guest"));
    }

    #[test]
    fn a_cpu_without_ept_is_refused_by_name() {
        let mut caps = skylake_x();
        caps.proc2.may_be_1 &= !proc2::EPT;
        assert_eq!(
            controls(&caps, &Addrs::TEST, Tweak::None),
            Err(Unsupported("EPT and VPID"))
        );
    }

    #[test]
    fn options_parse_from_the_command_line() {
        let parse = |c: &'static [u8]| debug_options(&crate::cmdline::Options::parse(c).unwrap());
        let (o, t) = parse(b"quiet libvmm.vmx.bad=tpr-threshold libvmm.vmx.skip-checks");
        assert!(o.skip_checks);
        assert_eq!(t, Tweak::TprThresholdHigh);
        let (o, t) = parse(b"");
        assert!(!o.skip_checks);
        assert_eq!(t, Tweak::None);
    }

    #[test]
    fn tweaks_parse() {
        assert_eq!(Tweak::parse("tpr-threshold"), Some(Tweak::TprThresholdHigh));
        assert_eq!(
            Tweak::parse("tsc-multiplier"),
            Some(Tweak::TscMultiplierZero)
        );
        assert_eq!(Tweak::parse("nope"), None);
    }
}
