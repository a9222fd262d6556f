//! The VMCB, typed. Field offsets are checked at compile time against the layout in
//! `shared/reference/svm.md` (Linux `struct vmcb_control_area` / `struct vmcb_save_area`).
#![forbid(unsafe_code)]

use core::mem::{offset_of, size_of};
use static_assertions::const_assert_eq;

/// A segment register in the save area.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VmcbSegment {
    pub selector: u16,
    /// Packed attribute form (see [`crate::x86::segment::svm_attrib`]).
    pub attrib: u16,
    pub limit: u32,
    pub base: u64,
}

#[repr(C)]
#[derive(Clone, Copy)]
pub struct ControlArea {
    pub intercept_cr: u32,
    pub intercept_dr: u32,
    pub intercept_exceptions: u32,
    pub intercept_misc1: u32,
    pub intercept_misc2: u32,
    pub intercept_misc3: u32,
    _r0: [u8; 0x24],
    pub pause_filter_thresh: u16,
    pub pause_filter_count: u16,
    pub iopm_base_pa: u64,
    pub msrpm_base_pa: u64,
    pub tsc_offset: u64,
    pub asid: u32,
    pub tlb_control: u8,
    _r1: [u8; 3],
    pub int_ctl: u32,
    pub int_vector: u32,
    pub int_state: u32,
    _r2: [u8; 4],
    pub exit_code: u64,
    pub exit_info1: u64,
    pub exit_info2: u64,
    pub exit_int_info: u32,
    pub exit_int_info_err: u32,
    pub misc_ctl: u64,
    pub avic_apic_bar: u64,
    pub ghcb_gpa: u64,
    pub event_inj: u32,
    pub event_inj_err: u32,
    pub n_cr3: u64,
    pub misc_ctl2: u64,
    pub clean: u32,
    _r3: u32,
    pub next_rip: u64,
    pub insn_len: u8,
    pub insn_bytes: [u8; 15],
    pub avic_backing_page: u64,
    _r4: u64,
    pub avic_logical_id: u64,
    pub avic_physical_id: u64,
    _r5: u64,
    pub vmsa_pa: u64,
    _r6: [u8; 0x400 - 0x110],
}

#[repr(C)]
#[derive(Clone, Copy)]
pub struct SaveArea {
    pub es: VmcbSegment,
    pub cs: VmcbSegment,
    pub ss: VmcbSegment,
    pub ds: VmcbSegment,
    pub fs: VmcbSegment,
    pub gs: VmcbSegment,
    pub gdtr: VmcbSegment,
    pub ldtr: VmcbSegment,
    pub idtr: VmcbSegment,
    pub tr: VmcbSegment,
    _r0: [u8; 0x2B],
    pub cpl: u8,
    _r1: u32,
    pub efer: u64,
    _r2: [u8; 0x70],
    pub cr4: u64,
    pub cr3: u64,
    pub cr0: u64,
    pub dr7: u64,
    pub dr6: u64,
    pub rflags: u64,
    pub rip: u64,
    _r3: [u8; 0x58],
    pub rsp: u64,
    _r4: [u8; 0x18],
    pub rax: u64,
    pub star: u64,
    pub lstar: u64,
    pub cstar: u64,
    pub sfmask: u64,
    pub kernel_gs_base: u64,
    pub sysenter_cs: u64,
    pub sysenter_esp: u64,
    pub sysenter_eip: u64,
    pub cr2: u64,
    _r5: [u8; 0x20],
    pub g_pat: u64,
    pub dbgctl: u64,
    _r6: [u8; 0xC00 - 0x278],
}

/// One VMCB: a 4 KiB page.
#[repr(C, align(4096))]
#[derive(Clone, Copy)]
pub struct Vmcb {
    pub control: ControlArea,
    pub save: SaveArea,
}

impl Vmcb {
    pub const fn zeroed() -> Self {
        // SAFETY-free: every field is plain integers.
        Self {
            control: ControlArea {
                intercept_cr: 0,
                intercept_dr: 0,
                intercept_exceptions: 0,
                intercept_misc1: 0,
                intercept_misc2: 0,
                intercept_misc3: 0,
                _r0: [0; 0x24],
                pause_filter_thresh: 0,
                pause_filter_count: 0,
                iopm_base_pa: 0,
                msrpm_base_pa: 0,
                tsc_offset: 0,
                asid: 0,
                tlb_control: 0,
                _r1: [0; 3],
                int_ctl: 0,
                int_vector: 0,
                int_state: 0,
                _r2: [0; 4],
                exit_code: 0,
                exit_info1: 0,
                exit_info2: 0,
                exit_int_info: 0,
                exit_int_info_err: 0,
                misc_ctl: 0,
                avic_apic_bar: 0,
                ghcb_gpa: 0,
                event_inj: 0,
                event_inj_err: 0,
                n_cr3: 0,
                misc_ctl2: 0,
                clean: 0,
                _r3: 0,
                next_rip: 0,
                insn_len: 0,
                insn_bytes: [0; 15],
                avic_backing_page: 0,
                _r4: 0,
                avic_logical_id: 0,
                avic_physical_id: 0,
                _r5: 0,
                vmsa_pa: 0,
                _r6: [0; 0x400 - 0x110],
            },
            save: SaveArea {
                es: SEG0,
                cs: SEG0,
                ss: SEG0,
                ds: SEG0,
                fs: SEG0,
                gs: SEG0,
                gdtr: SEG0,
                ldtr: SEG0,
                idtr: SEG0,
                tr: SEG0,
                _r0: [0; 0x2B],
                cpl: 0,
                _r1: 0,
                efer: 0,
                _r2: [0; 0x70],
                cr4: 0,
                cr3: 0,
                cr0: 0,
                dr7: 0,
                dr6: 0,
                rflags: 0,
                rip: 0,
                _r3: [0; 0x58],
                rsp: 0,
                _r4: [0; 0x18],
                rax: 0,
                star: 0,
                lstar: 0,
                cstar: 0,
                sfmask: 0,
                kernel_gs_base: 0,
                sysenter_cs: 0,
                sysenter_esp: 0,
                sysenter_eip: 0,
                cr2: 0,
                _r5: [0; 0x20],
                g_pat: 0,
                dbgctl: 0,
                _r6: [0; 0xC00 - 0x278],
            },
        }
    }
}

const SEG0: VmcbSegment = VmcbSegment {
    selector: 0,
    attrib: 0,
    limit: 0,
    base: 0,
};

// Intercept bits (svm.md §2).
pub mod intercept {
    // intercept_cr (word 0): bits 15:0 reads of CR0..CR15, bits 31:16 writes.
    pub const CR0_WRITE: u32 = 1 << 16;
    pub const CR4_WRITE: u32 = 1 << 20;
    // misc1 (word 3)
    pub const INTR: u32 = 1 << 0;
    pub const VINTR: u32 = 1 << 4;
    pub const CPUID: u32 = 1 << 18;
    pub const HLT: u32 = 1 << 24;
    pub const INVLPGA: u32 = 1 << 26;
    pub const IOIO_PROT: u32 = 1 << 27;
    pub const MSR_PROT: u32 = 1 << 28;
    pub const SHUTDOWN: u32 = 1 << 31;
    // misc2 (word 4)
    pub const VMRUN: u32 = 1 << 0;
    pub const VMMCALL: u32 = 1 << 1;
    pub const VMLOAD: u32 = 1 << 2;
    pub const VMSAVE: u32 = 1 << 3;
    pub const STGI: u32 = 1 << 4;
    pub const CLGI: u32 = 1 << 5;
    pub const SKINIT: u32 = 1 << 6;
    pub const MONITOR: u32 = 1 << 10;
    pub const MWAIT: u32 = 1 << 11;
    pub const MWAIT_COND: u32 = 1 << 12;
    pub const XSETBV: u32 = 1 << 13;
}

/// `int_ctl` bit 8: a virtual interrupt is pending (the interrupt-window request, with the VINTR
/// intercept); bits 19:16 its priority; bit 20: ignore V_TPR for it.
pub const V_IRQ: u32 = 1 << 8;
pub const V_INTR_PRIO_MAX: u32 = 0xF << 16;
pub const V_IGN_TPR: u32 = 1 << 20;
/// `int_state` bit 0: the guest is in an STI / MOV SS interrupt shadow.
pub const INT_SHADOW: u32 = 1 << 0;
/// EVENTINJ type 0: external interrupt.
pub const EVENTINJ_TYPE_INTR: u32 = 0;
/// `int_ctl` bit 24: the guest's IF masks only virtual interrupts; physical ones follow the host's IF.
pub const V_INTR_MASKING: u32 = 1 << 24;
/// `misc_ctl` bit 0: nested paging.
pub const NP_ENABLE: u64 = 1 << 0;
/// TLB_CONTROL: flush every ASID's entries on this VMRUN.
pub const TLB_FLUSH_ALL: u8 = 1;
/// EVENTINJ fields.
pub const EVENTINJ_VALID: u32 = 1 << 31;
pub const EVENTINJ_EV: u32 = 1 << 11;
pub const EVENTINJ_TYPE_EXCEPTION: u32 = 3 << 8;

const_assert_eq!(size_of::<VmcbSegment>(), 16);
const_assert_eq!(size_of::<ControlArea>(), 0x400);
const_assert_eq!(size_of::<Vmcb>(), 4096);
const_assert_eq!(offset_of!(ControlArea, intercept_misc1), 0x00C);
const_assert_eq!(offset_of!(ControlArea, intercept_misc2), 0x010);
const_assert_eq!(offset_of!(ControlArea, pause_filter_thresh), 0x03C);
const_assert_eq!(offset_of!(ControlArea, iopm_base_pa), 0x040);
const_assert_eq!(offset_of!(ControlArea, msrpm_base_pa), 0x048);
const_assert_eq!(offset_of!(ControlArea, tsc_offset), 0x050);
const_assert_eq!(offset_of!(ControlArea, asid), 0x058);
const_assert_eq!(offset_of!(ControlArea, tlb_control), 0x05C);
const_assert_eq!(offset_of!(ControlArea, int_ctl), 0x060);
const_assert_eq!(offset_of!(ControlArea, int_state), 0x068);
const_assert_eq!(offset_of!(ControlArea, exit_code), 0x070);
const_assert_eq!(offset_of!(ControlArea, exit_info1), 0x078);
const_assert_eq!(offset_of!(ControlArea, exit_info2), 0x080);
const_assert_eq!(offset_of!(ControlArea, exit_int_info), 0x088);
const_assert_eq!(offset_of!(ControlArea, misc_ctl), 0x090);
const_assert_eq!(offset_of!(ControlArea, avic_apic_bar), 0x098);
const_assert_eq!(offset_of!(ControlArea, ghcb_gpa), 0x0A0);
const_assert_eq!(offset_of!(ControlArea, event_inj), 0x0A8);
const_assert_eq!(offset_of!(ControlArea, n_cr3), 0x0B0);
const_assert_eq!(offset_of!(ControlArea, misc_ctl2), 0x0B8);
const_assert_eq!(offset_of!(ControlArea, clean), 0x0C0);
const_assert_eq!(offset_of!(ControlArea, next_rip), 0x0C8);
const_assert_eq!(offset_of!(ControlArea, insn_len), 0x0D0);
const_assert_eq!(offset_of!(ControlArea, avic_backing_page), 0x0E0);
const_assert_eq!(offset_of!(ControlArea, avic_logical_id), 0x0F0);
const_assert_eq!(offset_of!(ControlArea, avic_physical_id), 0x0F8);
const_assert_eq!(offset_of!(ControlArea, vmsa_pa), 0x108);
const_assert_eq!(offset_of!(Vmcb, save), 0x400);
const_assert_eq!(offset_of!(SaveArea, cs), 0x010);
const_assert_eq!(offset_of!(SaveArea, gdtr), 0x060);
const_assert_eq!(offset_of!(SaveArea, idtr), 0x080);
const_assert_eq!(offset_of!(SaveArea, tr), 0x090);
const_assert_eq!(offset_of!(SaveArea, cpl), 0x0CB);
const_assert_eq!(offset_of!(SaveArea, efer), 0x0D0);
const_assert_eq!(offset_of!(SaveArea, cr4), 0x148);
const_assert_eq!(offset_of!(SaveArea, cr3), 0x150);
const_assert_eq!(offset_of!(SaveArea, cr0), 0x158);
const_assert_eq!(offset_of!(SaveArea, dr7), 0x160);
const_assert_eq!(offset_of!(SaveArea, dr6), 0x168);
const_assert_eq!(offset_of!(SaveArea, rflags), 0x170);
const_assert_eq!(offset_of!(SaveArea, rip), 0x178);
const_assert_eq!(offset_of!(SaveArea, rsp), 0x1D8);
const_assert_eq!(offset_of!(SaveArea, rax), 0x1F8);
const_assert_eq!(offset_of!(SaveArea, star), 0x200);
const_assert_eq!(offset_of!(SaveArea, kernel_gs_base), 0x220);
const_assert_eq!(offset_of!(SaveArea, sysenter_eip), 0x238);
const_assert_eq!(offset_of!(SaveArea, cr2), 0x240);
const_assert_eq!(offset_of!(SaveArea, g_pat), 0x268);
const_assert_eq!(offset_of!(SaveArea, dbgctl), 0x270);
