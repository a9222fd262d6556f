//! Delivery: which pending vector the guest takes and when, and what the loop does on HLT. The pure
//! half of the guest-interrupt interface (the decisions, on [`VirtualApic`]) and the vendor half
//! ([`GuestInterrupts`], implemented by each x86 backend over its VMCB / VMCS); the module doc of
//! `x86::apic` gives the wiring step by step.
//!
//! Rules (SDM Vol. 3A "Interrupt Acceptance for Fixed Interrupts", "Task and Processor Priorities"; the
//! interrupt shadow: Vol. 3A "Interrupt and Exception Handling", STI and MOV SS): the highest vector in
//! IRR is deliverable when its priority class (vector bits 7:4) is above PPR's class, RFLAGS.IF = 1 and no
//! STI / MOV SS shadow is in effect. Accepting it moves it from IRR to ISR (PPR rises with it); EOI clears
//! the highest ISR bit, which may let the next one in.
#![forbid(unsafe_code)]

use super::{Mode, VirtualApic};

/// Whether the guest can take an external interrupt at the next instruction boundary.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Interruptibility {
    /// RFLAGS.IF.
    pub interrupts_enabled: bool,
    /// Blocking by STI or MOV SS (SVM int_state bit 0; VMX guest interruptibility bits 1:0).
    pub shadow: bool,
}

impl Interruptibility {
    pub const fn can_take(self) -> bool {
        self.interrupts_enabled && !self.shadow
    }
}

/// What the backend does before the next entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EntryAction {
    /// Nothing pending that PPR admits: no injection, no interrupt window (close one that is open).
    None,
    /// Inject this vector as an external interrupt; it is already in service (ISR).
    Inject(u8),
    /// A vector is pending but the guest cannot take it now (IF=0, shadow, or an event already queued):
    /// ask for an exit as soon as it can (SVM V_IRQ + VINTR intercept, VMX interrupt-window exiting).
    OpenWindow,
}

/// What the loop does when the guest executes HLT.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HaltAction {
    /// An interrupt can be taken now: re-enter (the entry check injects it).
    Wake,
    /// Halt the physical CPU until this guest TSC (the host timer is armed for it), then `tick` and ask
    /// again.
    SleepUntil(u64),
    /// Nothing can ever wake the guest (IF=0 with no NMI source, or no timer that would deliver a
    /// vector PPR admits): stop the VM with the "guest halted" reason.
    Stop,
}

/// What an x86 backend provides for interrupt delivery (implemented over the VMCB on SVM and the VMCS
/// on VMX; the loop calls these with the decisions of [`VirtualApic::before_entry`]).
pub trait GuestInterrupts {
    /// RFLAGS.IF and the STI / MOV SS shadow as the guest will resume.
    fn interruptibility(&self) -> Interruptibility;
    /// Whether an event is already queued for the next entry (an exception the loop injects, or an
    /// interrupted delivery the backend re-injects): then no interrupt is injected on top of it.
    fn event_queued(&self) -> bool;
    /// Queues external interrupt `vector` for the next entry (SVM EVENTINJ type 0 with V; VMX VM-entry
    /// interruption information type 0 with valid). Called only when the guest can take it.
    fn inject_interrupt(&mut self, vector: u8);
    /// Asks for (true) or cancels (false) an exit at the next point the guest can take an interrupt.
    fn request_interrupt_window(&mut self, open: bool);
}

impl VirtualApic {
    /// The highest pending vector PPR admits, whether or not the guest can take it now. A disabled APIC
    /// has none; a software-disabled one still delivers what it accepted before.
    pub fn pending_vector(&self) -> Option<u8> {
        if self.mode() == Mode::Disabled {
            return None;
        }
        let v = self.irr.highest()?;
        (u32::from(v) & 0xF0 > self.ppr() & 0xF0).then_some(v)
    }

    /// The vector the guest would take now, if any.
    pub fn deliverable(&self, cpu: Interruptibility) -> Option<u8> {
        if !cpu.can_take() {
            return None;
        }
        self.pending_vector()
    }

    /// Accepts the deliverable vector: moves it from IRR to ISR and returns it for injection.
    pub fn accept(&mut self, cpu: Interruptibility) -> Option<u8> {
        let v = self.deliverable(cpu)?;
        self.irr.clear(v);
        self.isr.set(v);
        Some(v)
    }

    /// The decision before each entry. Costs one test of IRR when nothing is pending.
    pub fn before_entry(&mut self, cpu: Interruptibility, event_queued: bool) -> EntryAction {
        if self.irr.is_empty() || self.pending_vector().is_none() {
            return EntryAction::None;
        }
        if event_queued {
            return EntryAction::OpenWindow;
        }
        match self.accept(cpu) {
            Some(v) => EntryAction::Inject(v),
            None => EntryAction::OpenWindow,
        }
    }

    /// The decision on HLT at guest TSC `now`, with RFLAGS.IF as the guest halted (the shadow of an
    /// `STI; HLT` pair has ended once HLT retired).
    pub fn on_halt(&mut self, now: u64, interrupts_enabled: bool) -> HaltAction {
        self.tick(now);
        if !interrupts_enabled {
            return HaltAction::Stop;
        }
        if self.pending_vector().is_some() {
            return HaltAction::Wake;
        }
        match self.next_deadline(now) {
            Some(at) if self.timer_would_deliver() => HaltAction::SleepUntil(at),
            _ => HaltAction::Stop,
        }
    }

    /// Whether the timer's expiry would put a vector in IRR that PPR admits (PPR cannot change while the
    /// guest is halted).
    fn timer_would_deliver(&self) -> bool {
        let v = self.timer.vector();
        v >= 16 && self.software_enabled() && u32::from(v) & 0xF0 > self.ppr() & 0xF0
    }
}
