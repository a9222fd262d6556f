//! RISC-V CSR numbers and bit fields the backend uses (privileged spec, H extension; numbers as in Linux
//! `arch/riscv/include/asm/csr.h`). Plain constants: the instructions that use them live in `arch`.
#![forbid(unsafe_code)]
// CSR field vocabulary of the privileged spec: the image names the subset it programs.
#![allow(dead_code)]

// sstatus
pub const SSTATUS_SIE: u64 = 1 << 1;
pub const SSTATUS_SPIE: u64 = 1 << 5;
pub const SSTATUS_SPP: u64 = 1 << 8;
pub const SSTATUS_VS_INITIAL: u64 = 1 << 9;
pub const SSTATUS_VS: u64 = 3 << 9;
pub const SSTATUS_FS_INITIAL: u64 = 1 << 13;
pub const SSTATUS_FS: u64 = 3 << 13;

// hstatus
pub const HSTATUS_SPV: u64 = 1 << 7;
pub const HSTATUS_SPVP: u64 = 1 << 8;
pub const HSTATUS_VTW: u64 = 1 << 21;
pub const HSTATUS_VSXL_64: u64 = 2 << 32;

// Interrupt bits (sip/sie/hip/hvip/hideleg).
pub const IRQ_S_SOFT: u64 = 1;
pub const IRQ_VS_SOFT: u64 = 2;
pub const IRQ_S_TIMER: u64 = 5;
pub const IRQ_VS_TIMER: u64 = 6;
pub const IRQ_S_EXT: u64 = 9;
pub const IRQ_VS_EXT: u64 = 10;

/// scause bit 63: interrupt.
pub const CAUSE_INTERRUPT: u64 = 1 << 63;

// Exception causes.
pub const EXC_INSN_MISALIGNED: u64 = 0;
pub const EXC_INSN_ACCESS: u64 = 1;
pub const EXC_ILLEGAL_INSN: u64 = 2;
pub const EXC_BREAKPOINT: u64 = 3;
pub const EXC_LOAD_MISALIGNED: u64 = 4;
pub const EXC_LOAD_ACCESS: u64 = 5;
pub const EXC_STORE_MISALIGNED: u64 = 6;
pub const EXC_STORE_ACCESS: u64 = 7;
pub const EXC_ECALL_U: u64 = 8;
pub const EXC_ECALL_VS: u64 = 10;
pub const EXC_INSN_PAGE_FAULT: u64 = 12;
pub const EXC_LOAD_PAGE_FAULT: u64 = 13;
pub const EXC_STORE_PAGE_FAULT: u64 = 15;
pub const EXC_INSN_GUEST_PAGE_FAULT: u64 = 20;
pub const EXC_LOAD_GUEST_PAGE_FAULT: u64 = 21;
pub const EXC_VIRTUAL_INSN: u64 = 22;
/// htinst pseudo-instructions for guest-page faults on implicit VS-stage page-table accesses (privileged
/// spec, "Transformed Instruction or Pseudoinstruction for mtinst or htinst"): 32- and 64-bit reads and
/// writes.
pub const HTINST_PT_READ_32: u64 = 0x0000_2000;
pub const HTINST_PT_WRITE_32: u64 = 0x0000_2020;
pub const HTINST_PT_READ_64: u64 = 0x0000_3000;
pub const HTINST_PT_WRITE_64: u64 = 0x0000_3020;
pub const EXC_STORE_GUEST_PAGE_FAULT: u64 = 23;

/// Exceptions a VS-mode guest handles itself (KVM's set): delegated straight to VS through hedeleg, so they
/// never exit. Illegal instruction is among them: CSR accesses a guest may not make at M level arrive in
/// the guest's own handler.
pub const HEDELEG_GUEST: u64 = (1 << EXC_INSN_MISALIGNED)
    | (1 << EXC_ILLEGAL_INSN)
    | (1 << EXC_BREAKPOINT)
    | (1 << EXC_LOAD_MISALIGNED)
    | (1 << EXC_STORE_MISALIGNED)
    | (1 << EXC_ECALL_U)
    | (1 << EXC_INSN_PAGE_FAULT)
    | (1 << EXC_LOAD_PAGE_FAULT)
    | (1 << EXC_STORE_PAGE_FAULT);

/// VS-level interrupts go to the guest.
pub const HIDELEG_GUEST: u64 = (1 << IRQ_VS_SOFT) | (1 << IRQ_VS_TIMER) | (1 << IRQ_VS_EXT);

// hcounteren: the guest may read cycle, time, instret (harmless; exitbench uses cycle).
pub const HCOUNTEREN_CY_TM_IR: u64 = 0b111;

// henvcfg
pub const ENVCFG_CBIE_FLUSH: u64 = 1 << 4;
pub const ENVCFG_CBCFE: u64 = 1 << 6;
pub const ENVCFG_CBZE: u64 = 1 << 7;
pub const ENVCFG_ADUE: u64 = 1 << 61;
pub const ENVCFG_PBMTE: u64 = 1 << 62;
pub const ENVCFG_STCE: u64 = 1 << 63;

// hstateen0 (Smstateen; Linux csr.h SMSTATEEN0_*).
pub const STATEEN0_IMSIC: u64 = 1 << 58;
pub const STATEEN0_AIA: u64 = 1 << 59;
pub const STATEEN0_CSRIND: u64 = 1 << 60;
pub const STATEEN0_ENVCFG: u64 = 1 << 62;
pub const STATEEN0_SE0: u64 = 1 << 63;

// hgatp
pub const HGATP_MODE_SV39X4: u64 = 8 << 60;
pub const HGATP_VMID_SHIFT: u64 = 44;
pub const HGATP_VMID_MASK: u64 = 0x3fff << HGATP_VMID_SHIFT;
pub const HGATP_PPN_MASK: u64 = (1 << 44) - 1;

/// `wfi`.
pub const INSN_WFI: u64 = 0x1050_0073;
/// The Zkr entropy source CSR.
pub const CSR_SEED: u64 = 0x015;
