//! VM-execution, VM-exit and VM-entry control bits (SDM Vol. 3C ch. 25 "VMCS: VMX controls"; positions
//! cross-checked with Linux `asm/vmxfeatures.h`), and [`Controls`]: the complete set of control-field
//! values libvmm programs, kept as one value so the software consistency checks ([`super::checks`]) see
//! exactly what the next VM entry will see.
#![forbid(unsafe_code)]
// The bit tables are complete on purpose (the checks and the tests name bits libvmm never sets).
#![allow(dead_code)]

pub(crate) mod pin {
    pub const EXT_INTR_EXITING: u32 = 1 << 0;
    pub const NMI_EXITING: u32 = 1 << 3;
    pub const VIRTUAL_NMIS: u32 = 1 << 5;
    pub const PREEMPTION_TIMER: u32 = 1 << 6;
    pub const POSTED_INTERRUPTS: u32 = 1 << 7;
}

pub(crate) mod proc1 {
    pub const INTR_WINDOW: u32 = 1 << 2;
    pub const TSC_OFFSETTING: u32 = 1 << 3;
    pub const HLT_EXITING: u32 = 1 << 7;
    pub const CR8_LOAD_EXITING: u32 = 1 << 19;
    pub const CR8_STORE_EXITING: u32 = 1 << 20;
    pub const USE_TPR_SHADOW: u32 = 1 << 21;
    pub const NMI_WINDOW: u32 = 1 << 22;
    pub const UNCOND_IO_EXITING: u32 = 1 << 24;
    pub const USE_IO_BITMAPS: u32 = 1 << 25;
    pub const MONITOR_TRAP_FLAG: u32 = 1 << 27;
    pub const USE_MSR_BITMAPS: u32 = 1 << 28;
    pub const SECONDARY: u32 = 1 << 31;
}

pub(crate) mod proc2 {
    pub const VIRT_APIC_ACCESSES: u32 = 1 << 0;
    pub const EPT: u32 = 1 << 1;
    pub const RDTSCP: u32 = 1 << 3;
    pub const VIRT_X2APIC: u32 = 1 << 4;
    pub const VPID: u32 = 1 << 5;
    pub const UNRESTRICTED_GUEST: u32 = 1 << 7;
    pub const APIC_REGISTER_VIRT: u32 = 1 << 8;
    pub const VIRTUAL_INTR_DELIVERY: u32 = 1 << 9;
    pub const VMFUNC: u32 = 1 << 13;
    pub const SHADOW_VMCS: u32 = 1 << 14;
    pub const PML: u32 = 1 << 17;
    pub const MODE_BASED_EPT_EXEC: u32 = 1 << 22;
    pub const TSC_SCALING: u32 = 1 << 25;
}

pub(crate) mod exit {
    pub const HOST_ADDR_SPACE_SIZE: u32 = 1 << 9;
    pub const ACK_INTR_ON_EXIT: u32 = 1 << 15;
    pub const SAVE_PAT: u32 = 1 << 18;
    pub const LOAD_PAT: u32 = 1 << 19;
    pub const SAVE_EFER: u32 = 1 << 20;
    pub const LOAD_EFER: u32 = 1 << 21;
    pub const SAVE_PREEMPTION_TIMER: u32 = 1 << 22;
}

pub(crate) mod entry {
    pub const IA32E_MODE_GUEST: u32 = 1 << 9;
    pub const ENTRY_TO_SMM: u32 = 1 << 10;
    pub const DEACTIVATE_DUAL_MONITOR: u32 = 1 << 11;
    pub const LOAD_PAT: u32 = 1 << 14;
    pub const LOAD_EFER: u32 = 1 << 15;
}

/// Event-injection field (VM-entry interruption information) layout.
pub(crate) mod intr_info {
    pub const VECTOR_MASK: u32 = 0xFF;
    pub const TYPE_SHIFT: u32 = 8;
    pub const TYPE_MASK: u32 = 7 << 8;
    pub const TYPE_EXT_INTR: u32 = 0;
    pub const TYPE_NMI: u32 = 2;
    pub const TYPE_HW_EXCEPTION: u32 = 3;
    pub const TYPE_SW_INTR: u32 = 4;
    pub const TYPE_PRIV_SW_EXCEPTION: u32 = 5;
    pub const TYPE_SW_EXCEPTION: u32 = 6;
    pub const TYPE_OTHER: u32 = 7;
    pub const DELIVER_ERROR_CODE: u32 = 1 << 11;
    pub const VALID: u32 = 1 << 31;
    /// Bits 30:12 must be 0.
    pub const RESERVED: u32 = 0x7FFF_F000;
}

/// The VMX-control fields libvmm programs, as one value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Controls {
    pub pin: u32,
    pub proc1: u32,
    pub proc2: u32,
    pub exit: u32,
    pub entry: u32,
    pub cr3_target_count: u32,
    pub io_bitmap_a: u64,
    pub io_bitmap_b: u64,
    pub msr_bitmap: u64,
    pub virtual_apic: u64,
    pub tpr_threshold: u32,
    pub tsc_multiplier: u64,
    pub eptp: u64,
    pub vpid: u16,
    pub exit_msr_store_count: u32,
    pub exit_msr_load_count: u32,
    pub entry_msr_load_count: u32,
    pub entry_intr_info: u32,
    pub entry_error_code: u32,
    pub entry_instr_len: u32,
}

impl Controls {
    /// Whether a secondary control is in effect ("activate secondary controls" set and the bit set).
    pub const fn has2(&self, bit: u32) -> bool {
        self.proc1 & proc1::SECONDARY != 0 && self.proc2 & bit != 0
    }
    pub const fn has1(&self, bit: u32) -> bool {
        self.proc1 & bit != 0
    }
}
