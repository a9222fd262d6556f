//! Payload trap handlers: a payload's own handler for an x86 exception vector or a RISC-V exception
//! cause, for tests that provoke exceptions on purpose.
//!
//! ```ignore
//! use libvmm_guest::{set_trap_handler, Trap, TrapAction, TrapFrame};
//!
//! fn on_ud(f: &mut TrapFrame) -> TrapAction {
//!     f.set_pc(f.pc() + 2); // skip the 2-byte UD2
//!     TrapAction::Resume
//! }
//! set_trap_handler(Trap::X86(6), on_ud).unwrap();
//! ```
//!
//! A handler gets the saved trap frame ([`TrapFrame`]: every general-purpose register, the faulting pc,
//! and the error code on x86 or `scause`/`stval` on RISC-V), may change any of it, and returns
//! [`TrapAction::Resume`] (continue at the frame's pc, with the frame's registers) or
//! [`TrapAction::Default`] (the runtime's default: report the exception and abort the payload).
//!
//! Order of dispatch: a RISC-V supervisor timer interrupt is the runtime's (see `arch::timer_ticks`);
//! then an armed `arch::probe` takes the exception its instruction raised (probes run one instruction and
//! report what it raised, whatever handlers are installed); then the handler installed for the
//! vector/cause; then the default. Handlers sit in a fixed table (no heap) and run on the payload's
//! stack, in the trap context: keep them short (printing is fine, a hypercall like any other).
#![forbid(unsafe_code)]

pub use crate::arch::TrapFrame;
use crate::arch::{swap_trap_handler, trap_handler};

/// RISC-V exception causes with a slot (the interrupt slots follow them).
pub(crate) const RISCV_CAUSES: u64 = 64;

/// An exception a handler can be installed for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Trap {
    /// An x86 exception vector, 0..=31 (6 = #UD, 13 = #GP, 14 = #PF ...).
    X86(u8),
    /// A RISC-V exception cause (`scause` with the interrupt bit clear), 0..=63 (2 = illegal instruction,
    /// 3 = breakpoint, 13 = load page fault ...). Interrupts cannot be handled here.
    Riscv(u64),
}

impl Trap {
    /// The illegal-instruction exception of the running architecture: #UD (6) or cause 2.
    pub const fn illegal_instruction() -> Trap {
        if cfg!(target_arch = "riscv64") {
            Trap::Riscv(2)
        } else {
            Trap::X86(6)
        }
    }

    /// The table slot of this trap on the running architecture.
    fn slot(self) -> Result<usize, TrapError> {
        match self {
            Trap::X86(v) if cfg!(target_arch = "x86_64") => {
                (v < 32).then_some(v as usize).ok_or(TrapError::OutOfRange)
            }
            Trap::Riscv(c) if cfg!(target_arch = "riscv64") => (c < RISCV_CAUSES)
                .then_some(c as usize)
                .ok_or(TrapError::OutOfRange),
            _ => Err(TrapError::OtherArchitecture),
        }
    }
}

/// What the runtime does after a handler returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TrapAction {
    /// Return from the trap to the frame's pc, with the frame's registers (the handler has usually moved
    /// the pc past the faulting instruction: otherwise it runs, and faults, again).
    Resume,
    /// Not handled: the runtime's default, which reports the exception and aborts the payload.
    Default,
}

/// A trap handler: a plain function (no captures), called with the saved frame.
pub type TrapHandler = fn(&mut TrapFrame) -> TrapAction;

/// Why a handler could not be installed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TrapError {
    /// A [`Trap`] of the other architecture.
    OtherArchitecture,
    /// x86 vector above 31 or RISC-V cause above 63.
    OutOfRange,
}

/// Installs `handler` for `trap`; returns the handler it replaces, if any.
pub fn set_trap_handler(
    trap: Trap,
    handler: TrapHandler,
) -> Result<Option<TrapHandler>, TrapError> {
    Ok(swap_trap_handler(trap.slot()?, Some(handler)))
}

/// Removes the handler of `trap` (back to the runtime's default); returns it, if there was one.
pub fn clear_trap_handler(trap: Trap) -> Result<Option<TrapHandler>, TrapError> {
    Ok(swap_trap_handler(trap.slot()?, None))
}

/// Called by the architecture's trap entry for an exception no probe took: runs the handler installed
/// for `trap`, if any. True when it handled the exception (resume at the frame's pc).
pub(crate) fn dispatch(trap: Trap, frame: &mut TrapFrame) -> bool {
    let Ok(slot) = trap.slot() else {
        return false;
    };
    match trap_handler(slot) {
        Some(handler) => handler(frame) == TrapAction::Resume,
        None => false,
    }
}
