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
    // Leaving or skipping modes: x2APIC needs EN; EXTD without EN, and reserved bits, are #GP.
    let base = probe::rdmsr(APIC_BASE).unwrap_or(0);
    let r = probe::wrmsr(APIC_BASE, (base & !BASE_EN) | BASE_EXTD);
    c.check(
        "apic-base-extd-without-en-is-gp",
        r == Err(GP),
        format_args!("{r:?}"),
    );
    let r = probe::wrmsr(APIC_BASE, base | 1 << 9);
    c.check(
        "apic-base-reserved-bit-is-gp",
        r == Err(GP),
        format_args!("{r:?}"),
    );
    // Before x2APIC mode, the x2APIC MSRs are #GP.
    let r = probe::rdmsr(ID);
    c.check(
        "x2apic-msr-in-xapic-mode-is-gp",
        r == Err(GP),
        format_args!("{r:?}"),
    );
    let r = probe::wrmsr(APIC_BASE, base | BASE_EN | BASE_EXTD);
    c.check("apic-base-enter-x2apic", r.is_ok(), format_args!("{r:?}"));
    let x2 = base | BASE_EN | BASE_EXTD;
    // x2APIC -> xAPIC is #GP.
    let r = probe::wrmsr(APIC_BASE, x2 & !BASE_EXTD);
    c.check(
        "apic-base-leave-x2apic-to-xapic-is-gp",
        r == Err(GP),
        format_args!("{r:?}"),
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
    for (name, msr, v) in reserved {
        let r = probe::wrmsr(msr, v);
        c.check(
            name,
            r == Err(GP),
            format_args!("reserved bits in {msr:#x}: {r:?}"),
        );
    }
    // Read-only registers: #GP on write; write-only ones: #GP on read; holes: #GP.
    for msr in [ID, VERSION, PPR, LDR, ISR0, TMR0, IRR0, TIMER_CURRENT] {
        let r = probe::wrmsr(msr, 0);
        c.check(
            "apic-read-only-write-is-gp",
            r == Err(GP),
            format_args!("{msr:#x}: {r:?}"),
        );
    }
    for msr in [EOI, SELF_IPI, 0x809, 0x831, 0x82F] {
        let r = probe::rdmsr(msr);
        c.check(
            "apic-write-only-or-hole-read-is-gp",
            r == Err(GP),
            format_args!("{msr:#x}: {r:?}"),
        );
    }
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
    for mode in [0b011u64, 0b111] {
        let r = probe::wrmsr(ICR, (0b01 << 18) | (mode << 8) | 0x70);
        c.check(
            "apic-icr-reserved-mode-ignored",
            r.is_ok(),
            format_args!("{r:?}"),
        );
    }
    // Vectors 0-15: not delivered, ESR "send illegal vector" (bit 5).
    for v in [0u64, 2, 15] {
        let _ = probe::wrmsr(ESR, 0);
        let r = probe::wrmsr(SELF_IPI, v);
        let _ = probe::wrmsr(ESR, 0);
        let esr = probe::rdmsr(ESR);
        c.check(
            "apic-illegal-vector-not-sent",
            r.is_ok() && esr == Ok(1 << 5),
            format_args!("vector {v}: {r:?} esr {esr:?}"),
        );
    }
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
