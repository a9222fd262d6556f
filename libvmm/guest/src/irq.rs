//! Payload interrupt handlers: a handler for an x86 interrupt vector (32..=255, delivered by the
//! VMM's virtual x2APIC: its timer, self-IPIs) or for the RISC-V supervisor timer or software
//! interrupt. Handlers share the fixed table and the frame of [`crate::trap`]; they run with interrupts
//! off (x86: interrupt gates; RISC-V: SIE cleared on trap entry) and must end the interrupt themselves
//! where the architecture asks for it (x86: EOI, [`eoi`]; the RISC-V timer is disarmed by the runtime
//! before the handler runs).
//!
//! ```ignore
//! use libvmm_guest::irq::{self, Interrupt};
//! fn tick(_: &mut libvmm_guest::TrapFrame) -> libvmm_guest::TrapAction {
//!     irq::eoi();
//!     libvmm_guest::TrapAction::Resume
//! }
//! irq::set_interrupt_handler(Interrupt::Vector(0x40), tick).unwrap();
//! ```
#![forbid(unsafe_code)]

use crate::arch::{swap_trap_handler, trap_handler};
use crate::trap::{TrapAction, TrapError, TrapFrame, TrapHandler, RISCV_CAUSES};

/// An interrupt a handler can be installed for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Interrupt {
    /// An x86 interrupt vector, 32..=255.
    Vector(u8),
    /// The RISC-V supervisor timer interrupt (cause 5).
    Timer,
    /// The inter-processor interrupt of `smp::send_ipi`: the RISC-V supervisor software interrupt
    /// (cause 1); on x86 the fixed vector `smp::IPI_VECTOR` (its handler must [`eoi`]).
    Software,
}

impl Interrupt {
    fn slot(self) -> Result<usize, TrapError> {
        match self {
            Interrupt::Vector(v) if cfg!(target_arch = "x86_64") => {
                (v >= 32).then_some(v as usize).ok_or(TrapError::OutOfRange)
            }
            Interrupt::Timer if cfg!(target_arch = "riscv64") => Ok(RISCV_CAUSES as usize + 5),
            Interrupt::Software if cfg!(target_arch = "riscv64") => Ok(RISCV_CAUSES as usize + 1),
            // x86: the fixed vector `smp::send_ipi` uses.
            Interrupt::Software if cfg!(target_arch = "x86_64") => {
                Ok(crate::smp::IPI_VECTOR as usize)
            }
            _ => Err(TrapError::OtherArchitecture),
        }
    }
}

/// x86: the vector of the thread scheduler's wake-up IPI (std payloads): an idle CPU waiting in HLT is
/// sent it when another CPU makes a thread ready; its handler (the runtime's) only EOIs, the idle loop
/// looks at the run queue when HLT ends. Apart from `smp::IPI_VECTOR` (`Interrupt::Software`), so a
/// std payload keeps that one for itself; RISC-V has one software interrupt, which the scheduler uses.
pub const WAKE_VECTOR: u8 = 0xF2;

/// Installs `handler` for `irq`; returns the handler it replaces, if any.
pub fn set_interrupt_handler(
    irq: Interrupt,
    handler: TrapHandler,
) -> Result<Option<TrapHandler>, TrapError> {
    Ok(swap_trap_handler(irq.slot()?, Some(handler)))
}

/// Removes the handler of `irq`; returns it, if there was one.
pub fn clear_interrupt_handler(irq: Interrupt) -> Result<Option<TrapHandler>, TrapError> {
    Ok(swap_trap_handler(irq.slot()?, None))
}

/// Called by the architecture's trap entry for an interrupt: runs its handler. True when one ran and
/// resumed.
pub(crate) fn dispatch(irq: Interrupt, frame: &mut TrapFrame) -> bool {
    let Ok(slot) = irq.slot() else {
        return false;
    };
    match trap_handler(slot) {
        Some(handler) => handler(frame) == TrapAction::Resume,
        None => false,
    }
}

/// x86: the x2APIC's EOI (ends the highest in-service interrupt); RISC-V: nothing (no EOI).
pub fn eoi() {
    #[cfg(target_arch = "x86_64")]
    crate::arch::wrmsr(x2apic::EOI, 0);
}

/// Turns interrupts on (x86 STI; RISC-V sstatus.SIE).
pub fn enable() {
    crate::arch::enable_interrupts()
}

/// Turns interrupts off.
pub fn disable() {
    crate::arch::disable_interrupts()
}

/// Waits for an interrupt with interrupts on (x86 `sti; hlt`, RISC-V WFI), lets its handler run, and
/// returns with interrupts off.
pub fn wait() {
    crate::arch::wait_for_interrupt()
}

/// The x2APIC's MSRs and bits a payload uses (Intel SDM Vol. 3A, "x2APIC Register Address Space").
pub mod x2apic {
    pub const APIC_BASE: u32 = 0x1B;
    pub const BASE_EXTD: u64 = 1 << 10;
    pub const BASE_EN: u64 = 1 << 11;
    pub const ID: u32 = 0x802;
    pub const VERSION: u32 = 0x803;
    pub const TPR: u32 = 0x808;
    pub const PPR: u32 = 0x80A;
    pub const EOI: u32 = 0x80B;
    pub const LDR: u32 = 0x80D;
    pub const SVR: u32 = 0x80F;
    pub const ISR0: u32 = 0x810;
    pub const TMR0: u32 = 0x818;
    pub const IRR0: u32 = 0x820;
    pub const ESR: u32 = 0x828;
    pub const ICR: u32 = 0x830;
    pub const LVT_TIMER: u32 = 0x832;
    pub const LVT_THERMAL: u32 = 0x833;
    pub const LVT_PMI: u32 = 0x834;
    pub const LVT_LINT0: u32 = 0x835;
    pub const LVT_LINT1: u32 = 0x836;
    pub const LVT_ERROR: u32 = 0x837;
    pub const TIMER_INITIAL: u32 = 0x838;
    pub const TIMER_CURRENT: u32 = 0x839;
    pub const TIMER_DIVIDE: u32 = 0x83E;
    pub const SELF_IPI: u32 = 0x83F;
    pub const TSC_DEADLINE: u32 = 0x6E0;
    pub const SVR_ENABLE: u64 = 1 << 8;
    pub const LVT_MASKED: u64 = 1 << 16;
    pub const TIMER_PERIODIC: u64 = 1 << 17;
    pub const TIMER_TSC_DEADLINE: u64 = 2 << 17;
    /// Divide configuration "divide by 1" (0b1011).
    pub const DIVIDE_BY_1: u64 = 0b1011;
}
