//! Attacks on the virtual x2APIC (x86): every access gets the architectural answer (#GP or ignored),
//! never a VMM fault. Recoverable checks run with the others; `attack=apic-storm` is fatal: a periodic
//! timer at the shortest period with divide 1 and interrupts on, stopped by the time limit.
use libvmm_guest::arch::probe;
use libvmm_guest::irq::{self, x2apic::*, Interrupt};
use libvmm_guest::{TrapAction, TrapFrame};

use crate::Checks;

const GP: u8 = 13;

fn eoi_handler(_: &mut TrapFrame) -> TrapAction {
    irq::eoi();
    TrapAction::Resume
}

pub fn recoverable(c: &mut Checks) {
    // Leaving or skipping modes: x2APIC needs EN; EXTD without EN, and reserved bits, are #GP; before
    // x2APIC mode the x2APIC MSRs are #GP; x2APIC -> xAPIC is #GP.
    let base = probe::rdmsr(APIC_BASE).unwrap_or(0);
    let r = probe::wrmsr(APIC_BASE, (base & !BASE_EN) | BASE_EXTD);
    c.check(
        "apic-base-extd-without-en-is-gp",
        r == Err(GP),
        format_args!("{r:?}"),
    );
    let r = probe::wrmsr(APIC_BASE, base | 1 << 9);
    let id = probe::rdmsr(ID);
    c.check(
        "apic-base-reserved-bit-is-gp",
        r == Err(GP) && id == Err(GP),
        format_args!("{r:?}, ID in xAPIC mode {id:?}"),
    );
    let x2 = base | BASE_EN | BASE_EXTD;
    let r = probe::wrmsr(APIC_BASE, x2);
    let r2 = probe::wrmsr(APIC_BASE, x2 & !BASE_EXTD);
    c.check(
        "apic-base-leave-x2apic-to-xapic-is-gp",
        r.is_ok() && r2 == Err(GP),
        format_args!("enter {r:?}, leave {r2:?}"),
    );
    let _ = probe::wrmsr(SVR, SVR_ENABLE | 0xFF);

    // Reserved bits in every writable register: #GP.
    let reserved: [(&str, u32, u64); 12] = [
        ("tpr", TPR, 1 << 8),
        ("svr", SVR, 1 << 12),
        ("svr-high", SVR, 1 << 32),
        ("esr", ESR, 1),
        ("eoi", EOI, 1),
        ("lvt-timer-mode-11", LVT_TIMER, 3 << 17),
        ("lvt-timer-high", LVT_TIMER, 1 << 32),
        ("lvt-lint0-high", LVT_LINT0, 1 << 40),
        ("lvt-error-high", LVT_ERROR, 1 << 33),
        ("timer-initial-high", TIMER_INITIAL, 1 << 32),
        ("timer-divide-bits", TIMER_DIVIDE, 1 << 4),
        ("self-ipi-bits", SELF_IPI, 1 << 8),
    ];
    // One line per group: Bochs' serial console costs ~4,300 emulated instructions a character, and the
    // timed hostile cases run these checks inside a 300 ms limit.
    let bad = reserved
        .iter()
        .find(|(_, msr, v)| probe::wrmsr(*msr, *v) != Err(GP));
    c.check(
        "apic-reserved-bits-are-gp",
        bad.is_none(),
        format_args!("{:?}", bad.map(|b| b.0)),
    );
    // Read-only registers: #GP on write; write-only ones: #GP on read; holes: #GP.
    let bad = [ID, VERSION, PPR, LDR, ISR0, TMR0, IRR0, TIMER_CURRENT]
        .into_iter()
        .find(|msr| probe::wrmsr(*msr, 0) != Err(GP));
    c.check(
        "apic-read-only-write-is-gp",
        bad.is_none(),
        format_args!("{bad:?}"),
    );
    let bad = [EOI, SELF_IPI, 0x809, 0x831, 0x82F]
        .into_iter()
        .find(|msr| probe::rdmsr(*msr) != Err(GP));
    c.check(
        "apic-write-only-or-hole-read-is-gp",
        bad.is_none(),
        format_args!("{bad:?}"),
    );
    // EOI with nothing in service: ignored.
    let r = probe::wrmsr(EOI, 0);
    c.check(
        "apic-eoi-with-nothing-in-service",
        r.is_ok(),
        format_args!("{r:?}"),
    );
    // ICR with a lowest-priority (illegal in x2APIC) or reserved delivery mode: accepted, not sent;
    // lowest priority sets ESR's "redirectible IPI" bit (4).
    let _ = probe::wrmsr(ESR, 0);
    let r = probe::wrmsr(ICR, (0b01 << 18) | (0b001 << 8) | 0x70);
    let _ = probe::wrmsr(ESR, 0);
    let esr = probe::rdmsr(ESR);
    c.check(
        "apic-icr-lowest-priority-is-refused",
        r.is_ok() && esr == Ok(1 << 4),
        format_args!("{r:?} esr {esr:?}"),
    );
    let bad = [0b011u64, 0b111]
        .into_iter()
        .find(|mode| probe::wrmsr(ICR, (0b01 << 18) | (mode << 8) | 0x70).is_err());
    c.check(
        "apic-icr-reserved-mode-ignored",
        bad.is_none(),
        format_args!("{bad:?}"),
    );
    // Vectors 0-15: not delivered, ESR "send illegal vector" (bit 5).
    let bad = [0u64, 2, 15].into_iter().find(|v| {
        let _ = probe::wrmsr(ESR, 0);
        let r = probe::wrmsr(SELF_IPI, *v);
        let _ = probe::wrmsr(ESR, 0);
        !(r.is_ok() && probe::rdmsr(ESR) == Ok(1 << 5))
    });
    c.check(
        "apic-illegal-vector-not-sent",
        bad.is_none(),
        format_args!("vector {bad:?}"),
    );
    // TSC deadline in the past fires at once; at u64::MAX it never fires (and reads back).
    let _ = irq::set_interrupt_handler(Interrupt::Vector(0x41), eoi_handler);
    let _ = probe::wrmsr(LVT_TIMER, TIMER_TSC_DEADLINE | 0x41);
    let r = probe::wrmsr(TSC_DEADLINE, 1);
    let fired = probe::rdmsr(IRR0 + 2).map(|irr| irr & (1 << 1) != 0);
    c.check(
        "apic-tsc-deadline-in-the-past-fires-at-once",
        r.is_ok() && fired == Ok(true),
        format_args!("{r:?} irr {fired:?}"),
    );
    irq::enable();
    irq::disable();
    let r = probe::wrmsr(TSC_DEADLINE, u64::MAX);
    let back = probe::rdmsr(TSC_DEADLINE);
    c.check(
        "apic-tsc-deadline-at-u64-max-is-armed",
        r.is_ok() && back == Ok(u64::MAX),
        format_args!("{r:?} reads {back:?}"),
    );
    let _ = probe::wrmsr(TSC_DEADLINE, 0);
}

/// A periodic timer with initial count 1 and divide 1, interrupts on: the VMM stays responsive (the
/// minimum period bounds the storm) and the time limit still stops the VM.
pub fn storm() {
    let _ = irq::set_interrupt_handler(Interrupt::Vector(0x42), eoi_handler);
    let base = probe::rdmsr(APIC_BASE).unwrap_or(0);
    let _ = probe::wrmsr(APIC_BASE, base | BASE_EN | BASE_EXTD);
    let _ = probe::wrmsr(SVR, SVR_ENABLE | 0xFF);
    let _ = probe::wrmsr(TIMER_DIVIDE, DIVIDE_BY_1);
    let _ = probe::wrmsr(LVT_TIMER, TIMER_PERIODIC | 0x42);
    let _ = probe::wrmsr(TIMER_INITIAL, 1);
    irq::enable();
    loop {
        core::hint::spin_loop();
    }
}
