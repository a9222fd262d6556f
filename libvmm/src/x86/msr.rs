//! MSR numbers and bits: the one home of this vocabulary (SDM Vol. 4 "Model-Specific Registers", AMD APM
//! Vol. 2 appendix A). Policy, backends, boot code and `arch` all name MSRs from here.
#![forbid(unsafe_code)]
// A vocabulary: each image (SVM, VMX, TDX, RISC-V) names the subset it needs.
#![allow(dead_code)]

pub const IA32_APIC_BASE: u32 = 0x1B;
/// IA32_APIC_BASE.EN: the local APIC is enabled.
pub const APIC_BASE_ENABLE: u64 = 1 << 11;

pub const IA32_FEATURE_CONTROL: u32 = 0x3A;
/// IA32_FEATURE_CONTROL bits.
pub const FEATURE_CONTROL_LOCK: u64 = 1 << 0;
pub const FEATURE_CONTROL_VMX_OUTSIDE_SMX: u64 = 1 << 2;

pub const IA32_MTRRCAP: u32 = 0xFE;
pub const IA32_PAT: u32 = 0x277;

pub const VMX_BASIC: u32 = 0x480;
pub const VMX_PINBASED_CTLS: u32 = 0x481;
pub const VMX_PROCBASED_CTLS: u32 = 0x482;
pub const VMX_EXIT_CTLS: u32 = 0x483;
pub const VMX_ENTRY_CTLS: u32 = 0x484;
pub const VMX_MISC: u32 = 0x485;
pub const VMX_CR0_FIXED0: u32 = 0x486;
pub const VMX_CR0_FIXED1: u32 = 0x487;
pub const VMX_CR4_FIXED0: u32 = 0x488;
pub const VMX_CR4_FIXED1: u32 = 0x489;
pub const VMX_PROCBASED_CTLS2: u32 = 0x48B;
pub const VMX_EPT_VPID_CAP: u32 = 0x48C;
pub const VMX_TRUE_PINBASED_CTLS: u32 = 0x48D;
pub const VMX_TRUE_PROCBASED_CTLS: u32 = 0x48E;
pub const VMX_TRUE_EXIT_CTLS: u32 = 0x48F;
pub const VMX_TRUE_ENTRY_CTLS: u32 = 0x490;

pub const IA32_SEAMRR_PHYS_BASE: u32 = 0x1400;
pub const IA32_SEAMRR_PHYS_MASK: u32 = 0x1401;

pub const EFER: u32 = 0xC000_0080;
pub const FS_BASE: u32 = 0xC000_0100;
pub const GS_BASE: u32 = 0xC000_0101;
pub const KERNEL_GS_BASE: u32 = 0xC000_0102;
/// AMD VM_CR and VM_HSAVE_PA (APM Vol. 2 15.30).
pub const VM_CR: u32 = 0xC001_0114;
pub const VM_HSAVE_PA: u32 = 0xC001_0117;
/// VM_CR.SVMDIS: firmware disabled SVM.
pub const VM_CR_SVMDIS: u64 = 1 << 4;

/// EFER bits.
pub const EFER_SCE: u64 = 1 << 0;
pub const EFER_LME: u64 = 1 << 8;
pub const EFER_LMA: u64 = 1 << 10;
pub const EFER_NXE: u64 = 1 << 11;
pub const EFER_SVME: u64 = 1 << 12;
