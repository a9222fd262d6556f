//! The x2APIC register map: which MSR is which register, how it may be accessed, and which bits of it
//! are defined (SDM Vol. 3A "Extended XAPIC (x2APIC)": table "Local APIC Register Address Map Supported by
//! x2APIC", "x2APIC Register Availability", "Reserved Bit Checking"). One table, so the access rules are
//! read in one place and tested register by register.
#![forbid(unsafe_code)]

use crate::x86::msr;

/// The registers this model offers in x2APIC mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reg {
    Id,
    Version,
    Tpr,
    Ppr,
    Eoi,
    Ldr,
    Svr,
    /// ISR / TMR / IRR word 0..8.
    Isr(u32),
    Tmr(u32),
    Irr(u32),
    Esr,
    Icr,
    Lvt(Lvt),
    TimerInitial,
    TimerCurrent,
    TimerDivide,
    SelfIpi,
}

/// The local vector table entries offered (no CMCI: the guest has no machine-check architecture, so the
/// version register reports six entries and MSR 0x82F raises #GP).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lvt {
    Timer,
    Thermal,
    Pmi,
    Lint0,
    Lint1,
    Error,
}

impl Lvt {
    pub const ALL: [Lvt; 6] = [
        Lvt::Timer,
        Lvt::Thermal,
        Lvt::Pmi,
        Lvt::Lint0,
        Lvt::Lint1,
        Lvt::Error,
    ];

    pub const fn index(self) -> usize {
        self as usize
    }

    /// Bits a write may set (SDM figure "Local Vector Table (LVT)"): vector 7:0 everywhere; delivery mode
    /// 10:8 except timer and error; polarity 13, trigger 15 on LINT0/1; mask 16; timer mode 18:17. The
    /// delivery-status bit (12) and LINT remote IRR (14) are read-only: writes to them are ignored (see
    /// [`LVT_READ_ONLY`]); every other bit is reserved (#GP in x2APIC mode).
    pub const fn writable(self) -> u32 {
        match self {
            Lvt::Timer => LVT_VECTOR | LVT_MASKED | LVT_TIMER_MODE,
            Lvt::Thermal | Lvt::Pmi => LVT_VECTOR | LVT_DELIVERY_MODE | LVT_MASKED,
            Lvt::Lint0 | Lvt::Lint1 => {
                LVT_VECTOR | LVT_DELIVERY_MODE | LVT_POLARITY | LVT_TRIGGER | LVT_MASKED
            }
            Lvt::Error => LVT_VECTOR | LVT_MASKED,
        }
    }
}

pub const LVT_VECTOR: u32 = 0xFF;
pub const LVT_DELIVERY_MODE: u32 = 7 << 8;
pub const LVT_DELIVERY_STATUS: u32 = 1 << 12;
pub const LVT_POLARITY: u32 = 1 << 13;
pub const LVT_REMOTE_IRR: u32 = 1 << 14;
pub const LVT_TRIGGER: u32 = 1 << 15;
pub const LVT_MASKED: u32 = 1 << 16;
pub const LVT_TIMER_MODE: u32 = 3 << 17;
/// Read-only LVT bits: a write may carry them (ignored); they read 0 here (no send is ever pending, no
/// level-triggered LINT interrupt is ever in service: the model has no LINT pins).
pub const LVT_READ_ONLY: u32 = LVT_DELIVERY_STATUS | LVT_REMOTE_IRR;

/// Timer modes (LVT timer bits 18:17; 0 is one-shot); 0b11 is reserved.
pub const TIMER_PERIODIC: u32 = 1 << 17;
pub const TIMER_TSC_DEADLINE: u32 = 2 << 17;

/// Spurious-interrupt vector register: vector 7:0, APIC software enable 8, focus-processor checking 9.
/// Bit 12 (EOI-broadcast suppression) is reserved because the version register does not offer it (there
/// is no I/O APIC to suppress broadcasts to).
pub const SVR_VECTOR: u32 = 0xFF;
pub const SVR_ENABLE: u32 = 1 << 8;
pub const SVR_FOCUS_DISABLED: u32 = 1 << 9;
pub const SVR_WRITABLE: u32 = SVR_VECTOR | SVR_ENABLE | SVR_FOCUS_DISABLED;

/// Divide configuration: bits 0, 1 and 3.
pub const DIVIDE_WRITABLE: u32 = 0b1011;

/// ESR bits defined in x2APIC mode (SDM figure "Error Status Register (ESR) in x2APIC Mode"); bits 3:0
/// (bus errors of the three-wire APIC bus) do not exist there. Illegal register addresses raise #GP in
/// x2APIC mode, so bit 7 is never set by this model.
pub const ESR_REDIRECTIBLE_IPI: u32 = 1 << 4;
pub const ESR_SEND_ILLEGAL_VECTOR: u32 = 1 << 5;
pub const ESR_RECEIVE_ILLEGAL_VECTOR: u32 = 1 << 6;

/// ICR (x2APIC: one 64-bit MSR, SDM figure "Interrupt Command Register (ICR) in x2APIC Mode").
pub const ICR_VECTOR: u64 = 0xFF;
pub const ICR_DELIVERY_MODE_SHIFT: u32 = 8;
pub const ICR_DEST_LOGICAL: u64 = 1 << 11;
/// Delivery status: removed in x2APIC mode. "WRMSR to the ICR MSR ignores bit 12"; it reads 0 here.
pub const ICR_DELIVERY_STATUS: u64 = 1 << 12;
pub const ICR_LEVEL_ASSERT: u64 = 1 << 14;
pub const ICR_TRIGGER_LEVEL: u64 = 1 << 15;
pub const ICR_SHORTHAND_SHIFT: u32 = 18;
/// Bits a write may set besides the ignored bit 12: vector, delivery mode, destination mode, level,
/// trigger, shorthand, destination 63:32. Bits 13, 17:16 and 31:20 are reserved.
pub const ICR_WRITABLE: u64 = ICR_VECTOR
    | (7 << ICR_DELIVERY_MODE_SHIFT)
    | ICR_DEST_LOGICAL
    | ICR_LEVEL_ASSERT
    | ICR_TRIGGER_LEVEL
    | (3 << ICR_SHORTHAND_SHIFT)
    | (0xFFFF_FFFF << 32);

/// The version register: version 0x14 (an integrated APIC, as KVM reports), max LVT entry 5 (six
/// entries, no CMCI), no EOI-broadcast suppression (bit 24 clear).
pub const VERSION: u32 = 0x14 | (5 << 16);

/// How the register at an MSR may be accessed in x2APIC mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    ReadOnly,
    WriteOnly,
    ReadWrite,
}

impl Reg {
    /// The register an MSR names in x2APIC mode, or `None` (the access raises #GP): every address of the
    /// range the table does not list, the xAPIC-only ones (APR 0x809, remote read 0x80C, DFR 0x80E, the
    /// ICR high half 0x831) and the CMCI entry this model does not offer (0x82F).
    pub fn decode(msr: u32) -> Option<Reg> {
        Some(match msr {
            msr::X2APIC_ID => Reg::Id,
            msr::X2APIC_VERSION => Reg::Version,
            msr::X2APIC_TPR => Reg::Tpr,
            msr::X2APIC_PPR => Reg::Ppr,
            msr::X2APIC_EOI => Reg::Eoi,
            msr::X2APIC_LDR => Reg::Ldr,
            msr::X2APIC_SVR => Reg::Svr,
            m @ 0x810..=0x817 => Reg::Isr(m - msr::X2APIC_ISR0),
            m @ 0x818..=0x81F => Reg::Tmr(m - msr::X2APIC_TMR0),
            m @ 0x820..=0x827 => Reg::Irr(m - msr::X2APIC_IRR0),
            msr::X2APIC_ESR => Reg::Esr,
            msr::X2APIC_ICR => Reg::Icr,
            msr::X2APIC_LVT_TIMER => Reg::Lvt(Lvt::Timer),
            msr::X2APIC_LVT_THERMAL => Reg::Lvt(Lvt::Thermal),
            msr::X2APIC_LVT_PMI => Reg::Lvt(Lvt::Pmi),
            msr::X2APIC_LVT_LINT0 => Reg::Lvt(Lvt::Lint0),
            msr::X2APIC_LVT_LINT1 => Reg::Lvt(Lvt::Lint1),
            msr::X2APIC_LVT_ERROR => Reg::Lvt(Lvt::Error),
            msr::X2APIC_TIMER_INITIAL => Reg::TimerInitial,
            msr::X2APIC_TIMER_CURRENT => Reg::TimerCurrent,
            msr::X2APIC_TIMER_DIVIDE => Reg::TimerDivide,
            msr::X2APIC_SELF_IPI => Reg::SelfIpi,
            _ => return None,
        })
    }

    pub fn access(self) -> Access {
        match self {
            Reg::Id
            | Reg::Version
            | Reg::Ppr
            | Reg::Ldr
            | Reg::Isr(_)
            | Reg::Tmr(_)
            | Reg::Irr(_)
            | Reg::TimerCurrent => Access::ReadOnly,
            Reg::Eoi | Reg::SelfIpi => Access::WriteOnly,
            Reg::Tpr
            | Reg::Svr
            | Reg::Esr
            | Reg::Icr
            | Reg::Lvt(_)
            | Reg::TimerInitial
            | Reg::TimerDivide => Access::ReadWrite,
        }
    }

    /// Bits a WRMSR may set; any other bit set raises #GP ("Reserved Bit Checking"). Includes the
    /// read-only bits whose writes are ignored (LVT delivery status and remote IRR, ICR delivery status).
    /// EOI and ESR accept only 0 ("WRMSR of a non-zero value to EOI or ESR is #GP(0)").
    pub fn write_mask(self) -> u64 {
        match self {
            Reg::Tpr => 0xFF,
            Reg::Svr => u64::from(SVR_WRITABLE),
            Reg::Eoi | Reg::Esr => 0,
            Reg::Icr => ICR_WRITABLE | ICR_DELIVERY_STATUS,
            Reg::Lvt(l) => u64::from(l.writable() | LVT_READ_ONLY),
            Reg::TimerInitial => 0xFFFF_FFFF,
            Reg::TimerDivide => u64::from(DIVIDE_WRITABLE),
            Reg::SelfIpi => 0xFF,
            // Read-only registers are refused before their mask matters.
            Reg::Id
            | Reg::Version
            | Reg::Ppr
            | Reg::Ldr
            | Reg::Isr(_)
            | Reg::Tmr(_)
            | Reg::Irr(_)
            | Reg::TimerCurrent => 0,
        }
    }
}

/// The divisor a divide-configuration value selects (bits 3,1:0: 000 -> 2, 001 -> 4, ... 110 -> 128,
/// 111 -> 1).
pub fn divisor(cfg: u32) -> u64 {
    let code = (cfg & 3) | ((cfg >> 1) & 4);
    if code == 7 {
        1
    } else {
        2 << code
    }
}
