//! MSR numbers and bits: the one home of this vocabulary (SDM Vol. 4 "Model-Specific Registers", AMD APM
//! Vol. 2 appendix A). Policy, backends, boot code and `arch` all name MSRs from here.
#![forbid(unsafe_code)]
// A vocabulary: each image (SVM, VMX, TDX, RISC-V) names the subset it needs.
#![allow(dead_code)]

pub const IA32_APIC_BASE: u32 = 0x1B;
/// IA32_APIC_BASE.BSP: this processor is the bootstrap processor.
pub const APIC_BASE_BSP: u64 = 1 << 8;
/// IA32_APIC_BASE.EXTD: x2APIC mode (with EN).
pub const APIC_BASE_EXTD: u64 = 1 << 10;
/// IA32_APIC_BASE.EN: the local APIC is enabled.
pub const APIC_BASE_ENABLE: u64 = 1 << 11;
/// IA32_APIC_BASE bits 12..MAXPHYADDR-1: the xAPIC MMIO page; its reset value.
pub const APIC_BASE_DEFAULT_ADDR: u64 = 0xFEE0_0000;

/// IA32_TSC_DEADLINE: the local APIC timer's deadline in TSC-deadline mode.
pub const IA32_TSC_DEADLINE: u32 = 0x6E0;

/// The x2APIC register MSRs (SDM Vol. 3A "Extended XAPIC (x2APIC)", table "Local APIC Register Address
/// Map Supported by x2APIC": MSR = 0x800 + xAPIC offset / 16). Every MSR of the range not named here
/// raises #GP in x2APIC mode; the range as a whole is what the MSR permission maps cover.
pub const X2APIC_FIRST: u32 = 0x800;
pub const X2APIC_LAST: u32 = 0x8FF;
pub const X2APIC_ID: u32 = 0x802;
pub const X2APIC_VERSION: u32 = 0x803;
pub const X2APIC_TPR: u32 = 0x808;
/// Arbitration priority (xAPIC only: #GP in x2APIC mode).
pub const X2APIC_APR: u32 = 0x809;
pub const X2APIC_PPR: u32 = 0x80A;
pub const X2APIC_EOI: u32 = 0x80B;
/// Remote read (xAPIC only: #GP in x2APIC mode).
pub const X2APIC_RRD: u32 = 0x80C;
pub const X2APIC_LDR: u32 = 0x80D;
/// Destination format (xAPIC only: #GP in x2APIC mode).
pub const X2APIC_DFR: u32 = 0x80E;
pub const X2APIC_SVR: u32 = 0x80F;
/// ISR, TMR, IRR: eight 32-bit MSRs each, lowest vectors first.
pub const X2APIC_ISR0: u32 = 0x810;
pub const X2APIC_TMR0: u32 = 0x818;
pub const X2APIC_IRR0: u32 = 0x820;
pub const X2APIC_ESR: u32 = 0x828;
pub const X2APIC_LVT_CMCI: u32 = 0x82F;
pub const X2APIC_ICR: u32 = 0x830;
/// The xAPIC ICR high half (xAPIC only: #GP in x2APIC mode, where the ICR is one 64-bit MSR).
pub const X2APIC_ICR_HI: u32 = 0x831;
pub const X2APIC_LVT_TIMER: u32 = 0x832;
pub const X2APIC_LVT_THERMAL: u32 = 0x833;
pub const X2APIC_LVT_PMI: u32 = 0x834;
pub const X2APIC_LVT_LINT0: u32 = 0x835;
pub const X2APIC_LVT_LINT1: u32 = 0x836;
pub const X2APIC_LVT_ERROR: u32 = 0x837;
pub const X2APIC_TIMER_INITIAL: u32 = 0x838;
pub const X2APIC_TIMER_CURRENT: u32 = 0x839;
pub const X2APIC_TIMER_DIVIDE: u32 = 0x83E;
pub const X2APIC_SELF_IPI: u32 = 0x83F;

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

// Intel architectural performance monitoring (SDM Vol. 3B ch. 21; the virtual PMU, `x86::pmu`).
/// IA32_PMC0: general-purpose counter 0 (the next ones follow).
pub const IA32_PMC0: u32 = 0xC1;
/// IA32_PERFEVTSEL0: event select of counter 0 (the next ones follow).
pub const IA32_PERFEVTSEL0: u32 = 0x186;
/// IA32_FIXED_CTR0: fixed counter 0, instructions retired (the next ones follow).
pub const IA32_FIXED_CTR0: u32 = 0x309;
pub const IA32_PERF_CAPABILITIES: u32 = 0x345;
pub const IA32_FIXED_CTR_CTRL: u32 = 0x38D;
pub const IA32_PERF_GLOBAL_STATUS: u32 = 0x38E;
pub const IA32_PERF_GLOBAL_CTRL: u32 = 0x38F;
pub const IA32_PERF_GLOBAL_OVF_CTRL: u32 = 0x390;
/// IA32_A_PMC0: full-width alias of IA32_PMC0 (with PERF_CAPABILITIES.FW_WRITE).
pub const IA32_A_PMC0: u32 = 0x4C1;
// AMD legacy performance counters (hidden from SVM guests: #GP).
pub const AMD_PERF_CTL0: u32 = 0xC001_0000;
pub const AMD_PERF_CTR3: u32 = 0xC001_0007;
