//! A virtual x2APIC per vCPU: the guest's local interrupt controller and timer, as one vendor-neutral
//! model below the SVM and VMX backends (KVM's `lapic.c` plays this part for both of its vendors).
//!
//! # What it offers
//! - The x2APIC registers through RDMSR/WRMSR of 0x800-0x8FF, IA32_APIC_BASE (0x1B) and
//!   IA32_TSC_DEADLINE (0x6E0): ID, version, TPR, PPR, EOI, LDR, SVR, ISR/TMR/IRR, ESR, the 64-bit ICR,
//!   SELF IPI, the LVT entries timer, thermal, PMI, LINT0, LINT1 and error, the timer's initial count,
//!   current count and divide configuration ([`regs`] holds the map and every register's bits).
//! - The access rules of the SDM's x2APIC chapter, each answered with [`Gp`] as hardware does: any
//!   access to 0x800-0x8FF outside x2APIC mode; addresses the x2APIC table does not list (the xAPIC-only
//!   APR 0x809, remote read 0x80C, DFR 0x80E and ICR high half 0x831 among them); WRMSR of a read-only
//!   register and RDMSR of a write-only one (EOI, SELF IPI); set reserved bits (the upper 32 bits of
//!   everything but the ICR, the reserved timer mode 0b11, SVR bit 12); non-zero writes to EOI and ESR.
//!   Read-only bits inside writable registers (LVT delivery status and remote IRR, ICR delivery status)
//!   are ignored on write and read 0.
//! - IA32_APIC_BASE's states and transitions: disabled, xAPIC (the reset state) and x2APIC; EN=0 with
//!   EXTD=1, x2APIC -> xAPIC and disabled -> x2APIC raise #GP, as do reserved bits (0-7, 9 and those at
//!   or above the guest's MAXPHYADDR). Disabling the APIC returns it to its reset state (the SDM allows
//!   this: "prior initialization to the APIC may be lost"), so a timer never runs in a disabled APIC.
//! - Delivery: IRR/ISR/TMR, PPR from TPR and the highest in-service vector, the highest pending vector
//!   the guest can take given RFLAGS.IF and its interrupt shadow, acceptance (IRR -> ISR), EOI (clears
//!   the highest ISR bit); SVR software disable (all LVT entries masked and kept masked, fixed
//!   interrupts refused, what is already in IRR still delivered, as KVM does); illegal vectors 0-15
//!   refused with the ESR bit ("send illegal vector" for ICR and SELF IPI, "receive illegal vector" for
//!   LVT sources) and the LVT error interrupt; lowest-priority IPIs refused with "redirectible IPI" (the
//!   SDM's x2APIC rule).
//! - The timer in one-shot, periodic and TSC-deadline modes ([`timer`]), derived from `now`; its next
//!   deadline for the host timer and its expiry on [`VirtualApic::tick`].
//!
//! # What it does not offer
//! - **No xAPIC MMIO.** The guest's CPUID is to advertise x2APIC; the xAPIC state exists (it is the
//!   reset state and a legal IA32_APIC_BASE value) but no MMIO page backs it: the guest must set EXTD to
//!   use its APIC, and an access to the xAPIC page is an ordinary access outside guest memory.
//! - No LINT0/LINT1 pins, no thermal sensor, no PMU interrupts, no CMCI: those LVT entries are stored
//!   and read back but never fire (the version register reports six entries, so 0x82F is #GP).
//! - No NMI, SMI, INIT or start-up delivery, no logical destinations and no other CPUs before SMP: such
//!   ICR writes come back as [`Effect::Ipi`] (a typed "needs SMP" outcome); a single-vCPU loop drops it,
//!   as hardware drops a message no APIC accepts. Fixed IPIs to the vCPU itself (shorthand self, its own
//!   physical ID, the self part of a broadcast) and SELF IPI are delivered here.
//! - No EOI-broadcast suppression and no level-triggered sources (no I/O APIC): TMR stays clear; an EOI
//!   still reports its vector ([`Effect::Eoi`]) for the I/O APIC to come.
//! - No spurious-interrupt delivery: an interrupt is chosen and accepted at one point (VM entry), so it
//!   cannot be withdrawn between the two; the SVR vector is stored only.
//!
//! # Time
//! `now` is the guest's TSC, in ticks. The timer's input clock is that TSC (see [`timer`]); TSC-deadline
//! values compare against it directly. The model never reads a clock: the caller passes `now`, which
//! keeps it deterministic and host-testable.
//!
//! # Wiring into a backend and the loop (design)
//! The model is pure; the loop owns one [`VirtualApic`] per vCPU and the backend implements
//! [`GuestInterrupts`] over its VMCB / VMCS. Each step is one call:
//! 1. **MSR exits.** For an MSR [`owns`] (0x1B, 0x6E0, 0x800-0x8FF) the MSR policy calls
//!    [`VirtualApic::read_msr`] / [`VirtualApic::write_msr`] with the guest TSC and answers `Err(Gp)` with
//!    #GP(0). After a write the loop re-arms the host timer for [`VirtualApic::next_deadline`] (the
//!    earlier of it and the VM's time limit) when the effect is [`Effect::Timer`] or
//!    [`Effect::ModeChanged`]; [`Effect::Ipi`] is dropped until SMP; [`Effect::ModeChanged`] also updates
//!    CPUID.1:EDX.APIC, which follows IA32_APIC_BASE.EN.
//! 2. **Host timer exits** (`Exit::HostEvent`): [`VirtualApic::tick`], then re-arm as above.
//! 3. **Before every entry** the loop calls [`VirtualApic::before_entry`] with the backend's
//!    [`GuestInterrupts::interruptibility`] and [`GuestInterrupts::event_queued`], and carries out the
//!    answer: [`EntryAction::Inject`] -> [`GuestInterrupts::inject_interrupt`] (EVENTINJ type 0 on SVM,
//!    the VM-entry interruption-information field type 0 on VMX; the vector is already in service);
//!    [`EntryAction::OpenWindow`] -> [`GuestInterrupts::request_interrupt_window`]`(true)` (V_IRQ with the
//!    VINTR intercept on SVM, interrupt-window exiting on VMX), whose exit simply comes back here;
//!    [`EntryAction::None`] -> `request_interrupt_window(false)` if one was open. When IRR is empty this
//!    is one test of four words: nothing is added to the exit path when nothing is pending. An event
//!    the backend re-injects after an interrupted delivery (EXITINTINFO / IDT-vectoring information) is
//!    the backend's own business and counts as `event_queued`: the APIC accepted it already.
//! 4. **HLT** (after the backend advanced RIP past it): [`VirtualApic::on_halt`] with RFLAGS.IF answers
//!    [`HaltAction::Wake`] (enter again: step 3 injects), [`HaltAction::SleepUntil`] (halt the physical
//!    CPU until the host timer fires at that guest TSC, or the VM's time limit comes first, then
//!    [`VirtualApic::tick`] and ask again) or [`HaltAction::Stop`] (nothing can wake the guest: IF=0, or
//!    no unmasked timer whose vector PPR admits; stop with today's "guest halted" reason).
//!
//! # Sources
//! Intel SDM Vol. 3A, chapter "Advanced Programmable Interrupt Controller (APIC)": "Enabling or
//! Disabling the Local APIC", "Local APIC State After Power-Up or Reset", "Local APIC State After It Has
//! Been Software Disabled", "APIC Timer" and "TSC-Deadline Mode", "Error Handling" and the x2APIC ESR
//! figure, "Task and Processor Priorities", "Interrupt Acceptance for Fixed Interrupts", "End-of-Interrupt
//! (EOI)", and "Extended XAPIC (x2APIC)" (state transitions, register address map, availability,
//! reserved-bit checking, "ICR Operation in x2APIC Mode", "SELF IPI Register"); Linux
//! `arch/x86/kvm/lapic.c` where the SDM leaves a choice (reserved ICR delivery modes ignored, periodic
//! minimum period, divide changes rescale the remaining count, fixed interrupts refused while
//! software-disabled).
//!
//! Hand-written rather than a crate: the APIC crates on crates.io drive a real APIC through MMIO or MSRs
//! (the guest's side); none models one for a hypervisor without a heap.
//!
//! [`GuestInterrupts`]: delivery::GuestInterrupts
//! [`GuestInterrupts::interruptibility`]: delivery::GuestInterrupts::interruptibility
//! [`GuestInterrupts::event_queued`]: delivery::GuestInterrupts::event_queued
//! [`GuestInterrupts::inject_interrupt`]: delivery::GuestInterrupts::inject_interrupt
//! [`GuestInterrupts::request_interrupt_window`]: delivery::GuestInterrupts::request_interrupt_window
//! [`EntryAction::Inject`]: delivery::EntryAction::Inject
//! [`EntryAction::OpenWindow`]: delivery::EntryAction::OpenWindow
//! [`EntryAction::None`]: delivery::EntryAction::None
//! [`HaltAction::Wake`]: delivery::HaltAction::Wake
//! [`HaltAction::SleepUntil`]: delivery::HaltAction::SleepUntil
//! [`HaltAction::Stop`]: delivery::HaltAction::Stop
#![forbid(unsafe_code)]
// Built for every target; the RISC-V image never drives it (its timer is the SBI's).
#![cfg_attr(not(test), allow(dead_code))]

pub mod delivery;
pub mod regs;
pub mod timer;
pub mod vectors;

#[cfg(test)]
mod tests;

use vectors::VectorSet;

use crate::x86::msr;
use regs::{Access, Lvt, Reg};
use timer::Timer;

/// The access raises #GP(0) in the guest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Gp;

/// The APIC's mode (IA32_APIC_BASE EN and EXTD).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Disabled,
    XApic,
    X2Apic,
}

/// What the loop must do after a WRMSR the model accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Effect {
    /// Nothing beyond the usual pending-interrupt check before the next entry.
    None,
    /// The timer was re-programmed: re-arm the host timer for [`VirtualApic::next_deadline`].
    Timer,
    /// An EOI retired this vector (`level`: it was level-triggered; an I/O APIC would be told).
    Eoi { vector: u8, level: bool },
    /// IA32_APIC_BASE moved the APIC to this mode (CPUID.1:EDX.APIC follows EN; the timer may have
    /// stopped).
    ModeChanged(Mode),
    /// An IPI for destinations beyond this vCPU, or of a kind only SMP delivers: needs SMP.
    Ipi(Ipi),
}

/// An interprocessor interrupt this model does not deliver itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ipi {
    pub vector: u8,
    pub mode: DeliveryMode,
    pub dest: Destination,
    /// ICR bit 14 (level assert) and bit 15 (level trigger): INIT level de-assert uses them.
    pub level_assert: bool,
    pub level_trigger: bool,
}

/// ICR delivery modes a sender may use in x2APIC mode (001 lowest priority, 011 and 111 are reserved).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeliveryMode {
    Fixed,
    Smi,
    Nmi,
    Init,
    StartUp,
}

/// Who an [`Ipi`] is for (for fixed IPIs, the part the model did not deliver to itself).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Destination {
    /// This vCPU (shorthand self or its own physical ID) with a non-fixed delivery mode.
    SelfOnly,
    Physical(u32),
    Logical(u32),
    AllIncludingSelf,
    AllExcludingSelf,
}

/// Where an illegal vector was met (which ESR bit records it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Source {
    /// ICR or SELF IPI: "send illegal vector".
    Sent,
    /// An LVT entry: "receive illegal vector".
    Local,
}

/// Whether an MSR belongs to the APIC model (the MSR policy routes these to it).
pub const fn owns(msr: u32) -> bool {
    matches!(
        msr,
        msr::IA32_APIC_BASE | msr::IA32_TSC_DEADLINE | msr::X2APIC_FIRST..=msr::X2APIC_LAST
    )
}

/// One vCPU's local APIC.
#[derive(Clone, Debug)]
pub struct VirtualApic {
    id: u32,
    /// IA32_APIC_BASE as the guest reads it.
    base: u64,
    /// Bits of IA32_APIC_BASE a WRMSR may set (depends on MAXPHYADDR).
    base_writable: u64,
    tpr: u32,
    svr: u32,
    icr: u64,
    /// LVT entries other than the timer's (which lives in `timer`), by [`Lvt::index`].
    lvt: [u32; 6],
    /// ESR as read; errors detected since the last ESR write wait in `esr_pending`.
    esr: u32,
    esr_pending: u32,
    irr: VectorSet,
    isr: VectorSet,
    tmr: VectorSet,
    timer: Timer,
}

impl VirtualApic {
    /// The APIC of the vCPU with x2APIC ID `id` after RESET: xAPIC mode at the default base (BSP flag
    /// for the bootstrap vCPU), registers as the SDM's "Local APIC State After Power-Up or Reset".
    /// `maxphyaddr` is the guest's physical-address width (CPUID 0x8000_0008), `min_period` the shortest
    /// periodic timer period in TSC ticks ([`Self::min_period_ticks`]).
    pub fn new(id: u32, bsp: bool, maxphyaddr: u8, min_period: u64) -> Self {
        let width = u32::from(maxphyaddr.clamp(32, 52));
        let addr_bits = ((1u64 << width) - 1) & !0xFFF;
        let base = msr::APIC_BASE_DEFAULT_ADDR
            | msr::APIC_BASE_ENABLE
            | if bsp { msr::APIC_BASE_BSP } else { 0 };
        let mut apic = Self {
            id,
            base,
            base_writable: addr_bits
                | msr::APIC_BASE_BSP
                | msr::APIC_BASE_EXTD
                | msr::APIC_BASE_ENABLE,
            tpr: 0,
            svr: 0,
            icr: 0,
            lvt: [0; 6],
            esr: 0,
            esr_pending: 0,
            irr: VectorSet::EMPTY,
            isr: VectorSet::EMPTY,
            tmr: VectorSet::EMPTY,
            timer: Timer::new(min_period),
        };
        apic.reset_registers();
        apic
    }

    /// The shortest periodic-timer period in guest TSC ticks for a TSC of `tsc_khz`
    /// ([`crate::config::APIC_MIN_TIMER_PERIOD_US`]), the `min_period` of [`Self::new`].
    pub fn min_period_ticks(tsc_khz: u64) -> u64 {
        crate::config::APIC_MIN_TIMER_PERIOD_US.saturating_mul(tsc_khz) / 1000
    }

    /// Everything but the ID and IA32_APIC_BASE back to the reset values.
    fn reset_registers(&mut self) {
        self.tpr = 0;
        self.svr = 0xFF;
        self.icr = 0;
        self.lvt = [regs::LVT_MASKED; 6];
        self.esr = 0;
        self.esr_pending = 0;
        self.irr = VectorSet::EMPTY;
        self.isr = VectorSet::EMPTY;
        self.tmr = VectorSet::EMPTY;
        self.timer.reset();
    }

    pub fn mode(&self) -> Mode {
        match (
            self.base & msr::APIC_BASE_ENABLE != 0,
            self.base & msr::APIC_BASE_EXTD != 0,
        ) {
            (false, _) => Mode::Disabled,
            (true, false) => Mode::XApic,
            (true, true) => Mode::X2Apic,
        }
    }

    fn software_enabled(&self) -> bool {
        self.svr & regs::SVR_ENABLE != 0
    }

    /// The logical x2APIC ID: cluster (ID bits 31:4) in 31:16, one bit for ID bits 3:0 in 15:0.
    pub fn ldr(&self) -> u32 {
        ((self.id >> 4) << 16) | (1 << (self.id & 0xF))
    }

    /// The processor priority: TPR when its class is at least the highest in-service vector's, else
    /// that vector's class ("Processor-Priority Register").
    pub fn ppr(&self) -> u32 {
        let isrv = self.isr.highest().map_or(0, u32::from);
        if self.tpr & 0xF0 >= isrv & 0xF0 {
            self.tpr
        } else {
            isrv & 0xF0
        }
    }

    fn lvt_value(&self, l: Lvt) -> u32 {
        match l {
            Lvt::Timer => self.timer.lvt,
            _ => self.lvt[l.index()],
        }
    }

    /// RDMSR of an APIC MSR at guest TSC `now`.
    pub fn read_msr(&mut self, msr: u32, now: u64) -> Result<u64, Gp> {
        match msr {
            msr::IA32_APIC_BASE => return Ok(self.base),
            msr::IA32_TSC_DEADLINE => {
                self.tick(now);
                return Ok(self.timer.read_deadline());
            }
            _ => {}
        }
        let reg = self.x2apic_reg(msr)?;
        if reg.access() == Access::WriteOnly {
            return Err(Gp);
        }
        self.tick(now);
        let v: u32 = match reg {
            Reg::Id => self.id,
            Reg::Version => regs::VERSION,
            Reg::Tpr => self.tpr,
            Reg::Ppr => self.ppr(),
            Reg::Ldr => self.ldr(),
            Reg::Svr => self.svr,
            Reg::Isr(i) => self.isr.reg32(i),
            Reg::Tmr(i) => self.tmr.reg32(i),
            Reg::Irr(i) => self.irr.reg32(i),
            Reg::Esr => self.esr,
            Reg::Icr => return Ok(self.icr),
            Reg::Lvt(l) => self.lvt_value(l),
            Reg::TimerInitial => self.timer.initial,
            Reg::TimerCurrent => self.timer.current(now),
            Reg::TimerDivide => self.timer.divide_cfg,
            Reg::Eoi | Reg::SelfIpi => return Err(Gp),
        };
        Ok(u64::from(v))
    }

    /// The x2APIC register an MSR of 0x800-0x8FF names, if the APIC is in x2APIC mode and the register
    /// exists.
    fn x2apic_reg(&self, msr: u32) -> Result<Reg, Gp> {
        if self.mode() != Mode::X2Apic {
            return Err(Gp);
        }
        Reg::decode(msr).ok_or(Gp)
    }

    /// WRMSR of an APIC MSR at guest TSC `now`.
    pub fn write_msr(&mut self, msr: u32, value: u64, now: u64) -> Result<Effect, Gp> {
        match msr {
            msr::IA32_APIC_BASE => return self.write_base(value),
            msr::IA32_TSC_DEADLINE => {
                // An ordinary MSR: never #GP; it arms only an x2APIC timer in TSC-deadline mode.
                if self.mode() != Mode::X2Apic {
                    return Ok(Effect::None);
                }
                self.tick(now);
                self.timer.write_deadline(value);
                // A deadline already passed fires at once.
                self.tick(now);
                return Ok(Effect::Timer);
            }
            _ => {}
        }
        let reg = self.x2apic_reg(msr)?;
        if reg.access() == Access::ReadOnly || value & !reg.write_mask() != 0 {
            return Err(Gp);
        }
        // The mask above admits only bits of the low 32 except for the ICR.
        let v32 = value as u32;
        if reg == Reg::Lvt(Lvt::Timer) && Timer::reserved_mode(v32) {
            return Err(Gp);
        }
        self.tick(now);
        let effect = match reg {
            Reg::Tpr => {
                self.tpr = v32;
                Effect::None
            }
            Reg::Eoi => self.eoi(),
            Reg::Svr => {
                self.svr = v32;
                if !self.software_enabled() {
                    // Software disable masks every LVT entry ("Local APIC State After It Has Been
                    // Software Disabled").
                    self.timer.lvt |= regs::LVT_MASKED;
                    for l in &mut self.lvt {
                        *l |= regs::LVT_MASKED;
                    }
                }
                Effect::Timer
            }
            Reg::Esr => {
                // Write-then-read: the write latches the errors seen since the previous write.
                self.esr = self.esr_pending;
                self.esr_pending = 0;
                Effect::None
            }
            Reg::Icr => {
                self.icr = value & regs::ICR_WRITABLE;
                self.send_icr(self.icr)
            }
            Reg::Lvt(l) => {
                let mut v = v32 & l.writable();
                if !self.software_enabled() {
                    v |= regs::LVT_MASKED;
                }
                if l == Lvt::Timer {
                    self.timer.write_lvt(v);
                    Effect::Timer
                } else {
                    self.lvt[l.index()] = v;
                    Effect::None
                }
            }
            Reg::TimerInitial => {
                self.timer.write_initial(v32, now);
                Effect::Timer
            }
            Reg::TimerDivide => {
                self.timer.write_divide(v32, now);
                Effect::Timer
            }
            Reg::SelfIpi => {
                // Bits 7:0, the rest checked reserved above.
                self.raise(v32 as u8, Source::Sent);
                Effect::None
            }
            Reg::Id
            | Reg::Version
            | Reg::Ppr
            | Reg::Ldr
            | Reg::Isr(_)
            | Reg::Tmr(_)
            | Reg::Irr(_)
            | Reg::TimerCurrent => return Err(Gp),
        };
        Ok(effect)
    }

    /// WRMSR IA32_APIC_BASE (SDM "x2APIC State Transitions").
    fn write_base(&mut self, value: u64) -> Result<Effect, Gp> {
        if value & !self.base_writable != 0 {
            return Err(Gp);
        }
        let en = value & msr::APIC_BASE_ENABLE != 0;
        let extd = value & msr::APIC_BASE_EXTD != 0;
        let new = match (en, extd) {
            (false, false) => Mode::Disabled,
            (true, false) => Mode::XApic,
            (true, true) => Mode::X2Apic,
            (false, true) => return Err(Gp),
        };
        let old = self.mode();
        match (old, new) {
            (Mode::X2Apic, Mode::XApic) | (Mode::Disabled, Mode::X2Apic) => return Err(Gp),
            _ => {}
        }
        self.base = value;
        if old == new {
            return Ok(Effect::None);
        }
        if new == Mode::Disabled {
            self.reset_registers();
        }
        // xAPIC -> x2APIC: the ID and LDR are derived from the x2APIC ID; nothing else changes.
        Ok(Effect::ModeChanged(new))
    }

    /// EOI: retire the highest in-service vector (none in service: nothing happens).
    fn eoi(&mut self) -> Effect {
        let Some(vector) = self.isr.highest() else {
            return Effect::None;
        };
        self.isr.clear(vector);
        let level = self.tmr.contains(vector);
        self.tmr.clear(vector);
        Effect::Eoi { vector, level }
    }

    /// Sends what the ICR now holds.
    fn send_icr(&mut self, icr: u64) -> Effect {
        // Bits 7:0, 10:8, 19:18 and 63:32 of the ICR.
        let vector = (icr & regs::ICR_VECTOR) as u8;
        let mode = match (icr >> regs::ICR_DELIVERY_MODE_SHIFT) & 7 {
            0b000 => DeliveryMode::Fixed,
            0b001 => {
                // Lowest priority is not offered in x2APIC mode: "Redirectible IPI" is set and the
                // interrupt is not processed (not even its illegal vector is reported).
                self.record_error(regs::ESR_REDIRECTIBLE_IPI);
                return Effect::None;
            }
            0b010 => DeliveryMode::Smi,
            0b100 => DeliveryMode::Nmi,
            0b101 => DeliveryMode::Init,
            0b110 => DeliveryMode::StartUp,
            // 011 and 111 are reserved encodings: nothing is sent (KVM ignores them too).
            _ => return Effect::None,
        };
        let dest_id = (icr >> 32) as u32;
        let dest = match (icr >> regs::ICR_SHORTHAND_SHIFT) & 3 {
            0b01 => Destination::SelfOnly,
            0b10 => Destination::AllIncludingSelf,
            0b11 => Destination::AllExcludingSelf,
            _ if icr & regs::ICR_DEST_LOGICAL != 0 => Destination::Logical(dest_id),
            _ if dest_id == u32::MAX => Destination::AllIncludingSelf,
            _ if dest_id == self.id => Destination::SelfOnly,
            _ => Destination::Physical(dest_id),
        };
        let ipi = Ipi {
            vector,
            mode,
            dest,
            level_assert: icr & regs::ICR_LEVEL_ASSERT != 0,
            level_trigger: icr & regs::ICR_TRIGGER_LEVEL != 0,
        };
        if mode != DeliveryMode::Fixed {
            return Effect::Ipi(ipi);
        }
        if vector < 16 {
            // Checked at the sender, whoever the destination: nothing is sent.
            self.record_error(regs::ESR_SEND_ILLEGAL_VECTOR);
            return Effect::None;
        }
        // The trigger-mode bit is ignored for fixed IPIs: they are edge-triggered.
        match dest {
            Destination::SelfOnly => {
                self.raise(vector, Source::Sent);
                Effect::None
            }
            Destination::AllIncludingSelf => {
                self.raise(vector, Source::Sent);
                Effect::Ipi(Ipi {
                    dest: Destination::AllExcludingSelf,
                    ..ipi
                })
            }
            _ => Effect::Ipi(ipi),
        }
    }

    /// Records an error in the ESR and raises the LVT error interrupt if it is enabled.
    fn record_error(&mut self, bit: u32) {
        self.esr_pending |= bit;
        let lvt = self.lvt[Lvt::Error.index()];
        if lvt & regs::LVT_MASKED == 0 && self.software_enabled() {
            // Bits 7:0.
            let vector = (lvt & regs::LVT_VECTOR) as u8;
            if vector < 16 {
                // The error vector itself is illegal: recorded, not delivered (and not recursed into).
                self.esr_pending |= regs::ESR_RECEIVE_ILLEGAL_VECTOR;
            } else {
                self.accept_fixed(vector);
            }
        }
    }

    /// A fixed, edge-triggered interrupt for this APIC.
    fn raise(&mut self, vector: u8, source: Source) {
        if vector < 16 {
            self.record_error(match source {
                Source::Sent => regs::ESR_SEND_ILLEGAL_VECTOR,
                Source::Local => regs::ESR_RECEIVE_ILLEGAL_VECTOR,
            });
            return;
        }
        self.accept_fixed(vector);
    }

    fn accept_fixed(&mut self, vector: u8) {
        // A software-disabled APIC does not accept fixed interrupts (KVM's `__apic_accept_irq`).
        if self.software_enabled() {
            self.irr.set(vector);
            self.tmr.clear(vector);
        }
    }

    /// A fixed interrupt another vCPU's ICR sent here (guest SMP; the sender checked the vector): into
    /// IRR, unless this APIC is software-disabled or not in x2APIC mode.
    pub fn receive_fixed(&mut self, vector: u8) {
        if vector >= 16 && self.mode() == Mode::X2Apic {
            self.accept_fixed(vector);
        }
    }

    /// Processes timer expiries up to `now` (the host timer fired, or the loop looks before it sleeps).
    /// Returns true when the timer raised its vector.
    pub fn tick(&mut self, now: u64) -> bool {
        if self.mode() != Mode::X2Apic || !self.timer.advance(now) {
            return false;
        }
        self.raise(self.timer.vector(), Source::Local);
        true
    }

    /// When the host timer must fire next for this APIC (never before `now`): the unmasked timer's
    /// expiry, or `None` when no timer can raise anything.
    pub fn next_deadline(&self, now: u64) -> Option<u64> {
        if self.mode() != Mode::X2Apic || self.timer.masked() {
            return None;
        }
        self.timer.expiry().map(|t| t.max(now))
    }

    /// Whether any vector waits in IRR (the loop's cheap test before every entry).
    #[inline(always)]
    pub fn has_pending(&self) -> bool {
        !self.irr.is_empty()
    }

    /// IRR, ISR and TMR (for tests, debugging and a future state save).
    pub fn vectors(&self) -> (VectorSet, VectorSet, VectorSet) {
        (self.irr, self.isr, self.tmr)
    }
}
