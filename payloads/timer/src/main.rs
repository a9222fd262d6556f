//! Guest interrupts and time, on every backend: the `libvmm_guest::time` / `irq` API over the VMM's
//! virtual x2APIC (x86) or SBI TIME (RISC-V). Each check prints one `timer: ...` line; the run ends with
//! `timer: all checks passed` and status 0, or the first failure's line and status 1.
//!
//! Both: N periodic ticks counted exactly (x86: the LVT timer in periodic mode; RISC-V: a callback that
//! re-arms SBI TIME), and a one-shot sleep that wakes HLT/WFI no earlier than asked, in few exits.
//! x86 also: TSC-deadline mode (IA32_TSC_DEADLINE reads 0 once it fired), EOI discipline (a second
//! interrupt of the same class waits for the first one's EOI), TPR masking a lower-priority vector, an
//! interrupt raised with IF=0 waiting until STI, and a self-IPI through the ICR.
//! With `bench=1` it prints deterministic costs instead (`cargo xtask bench`).
#![no_std]
#![no_main]

use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use libvmm_guest::abi::Hypercall;
use libvmm_guest::{println, time};

libvmm_guest::entry!(main);

const TICKS: u64 = 5;
static SEEN: [AtomicU32; 256] = [const { AtomicU32::new(0) }; 256];
static LOG: AtomicU64 = AtomicU64::new(0);

fn exits() -> i64 {
    libvmm_guest::hypercall(Hypercall::ExitCount, [0; 4])
}

fn check(ok: bool, what: &str) -> bool {
    if ok {
        println!("timer: {what} ok");
    } else {
        println!("timer: FAILED: {what}");
    }
    ok
}

fn main() -> i32 {
    time::init();
    let hz = time::ticks_per_sec();
    println!("timer: counter at {} kHz", hz / 1000);
    if libvmm_guest::cmdline_value("bench") == Some("1") {
        arch::bench(hz);
        return 0;
    }
    let mut ok = arch::periodic(hz);
    ok &= one_shot();
    ok &= arch::extra(hz);
    if !ok {
        return 1;
    }
    println!("timer: all checks passed");
    0
}

/// A 3 ms sleep ends no earlier than 3 ms later, and sleeps instead of exiting in a loop.
fn one_shot() -> bool {
    let e0 = exits();
    let Some(n0) = time::now_ns() else {
        return check(false, "one-shot: no clock");
    };
    time::sleep_ns(3_000_000);
    let n1 = time::now_ns().unwrap_or(0);
    let e = exits() - e0;
    println!(
        "timer: one-shot: slept {} us for 3000 us asked, in {e} exits",
        (n1 - n0) / 1000
    );
    check(
        n1 - n0 >= 3_000_000 && e < 100,
        "one-shot deadline wakes the halted guest no earlier than asked",
    )
}

#[cfg(target_arch = "x86_64")]
mod arch {
    use super::*;
    use libvmm_guest::arch::{rdmsr, wrmsr};
    use libvmm_guest::irq::{self, x2apic::*, Interrupt};
    use libvmm_guest::{TrapAction, TrapFrame};

    fn count(f: &mut TrapFrame) {
        let v = f.vector as usize;
        SEEN[v].fetch_add(1, Ordering::SeqCst);
        let l = LOG.load(Ordering::SeqCst);
        LOG.store((l << 8) | v as u64, Ordering::SeqCst);
    }

    fn with_eoi(f: &mut TrapFrame) -> TrapAction {
        count(f);
        irq::eoi();
        TrapAction::Resume
    }

    fn without_eoi(f: &mut TrapFrame) -> TrapAction {
        count(f);
        TrapAction::Resume
    }

    fn seen(v: u8) -> u32 {
        SEEN[v as usize].load(Ordering::SeqCst)
    }

    fn in_service(v: u8) -> bool {
        rdmsr(ISR0 + u32::from(v / 32)) & (1 << (v % 32)) != 0
    }

    fn nops() {
        for _ in 0..100 {
            core::hint::spin_loop();
        }
    }

    /// The LVT timer in periodic mode, divide by 1, a 2 ms period: `TICKS` interrupts, each waited
    /// for with HLT, then masked: exactly `TICKS` counted, and no less time than they take.
    pub fn periodic(hz: u64) -> bool {
        const V: u8 = 0x40;
        let _ = irq::set_interrupt_handler(Interrupt::Vector(V), with_eoi);
        let period = (hz / 500).min(u64::from(u32::MAX));
        wrmsr(TIMER_DIVIDE, DIVIDE_BY_1);
        wrmsr(LVT_TIMER, TIMER_PERIODIC | u64::from(V));
        let t0 = time::ticks();
        wrmsr(TIMER_INITIAL, period);
        while seen(V) < TICKS as u32 {
            irq::wait();
        }
        let t1 = time::ticks();
        wrmsr(LVT_TIMER, LVT_MASKED | u64::from(V));
        wrmsr(TIMER_INITIAL, 0);
        // Back to the runtime's TSC-deadline timer.
        wrmsr(
            LVT_TIMER,
            TIMER_TSC_DEADLINE | u64::from(time::TIMER_VECTOR),
        );
        irq::enable();
        nops();
        irq::disable();
        println!(
            "timer: periodic: {} ticks of {period} TSC ticks in {} TSC ticks",
            seen(V),
            t1 - t0
        );
        check(
            seen(V) == TICKS as u32 && t1 - t0 >= TICKS * period,
            "periodic: 5 ticks counted exactly",
        )
    }

    pub fn extra(hz: u64) -> bool {
        let mut ok = true;
        // TSC-deadline mode: the interrupt comes at or after the deadline, which then reads 0.
        let before = time::fired();
        let deadline = time::ticks() + hz / 1000;
        wrmsr(TSC_DEADLINE, deadline);
        while time::fired() == before {
            irq::wait();
        }
        let at = time::ticks();
        ok &= check(
            at >= deadline && rdmsr(TSC_DEADLINE) == 0,
            "tsc-deadline: fired at or after the deadline, which reads 0 after",
        );

        // EOI discipline: 0x52 in service (its handler sends no EOI) holds back 0x51 (same class 5).
        let _ = irq::set_interrupt_handler(Interrupt::Vector(0x52), without_eoi);
        let _ = irq::set_interrupt_handler(Interrupt::Vector(0x51), with_eoi);
        LOG.store(0, Ordering::SeqCst);
        wrmsr(SELF_IPI, 0x51);
        wrmsr(SELF_IPI, 0x52);
        irq::enable();
        nops();
        irq::disable();
        let held = seen(0x52) == 1 && seen(0x51) == 0 && in_service(0x52);
        irq::eoi();
        irq::enable();
        nops();
        irq::disable();
        ok &= check(
            held && seen(0x51) == 1 && LOG.load(Ordering::SeqCst) == 0x5251 && !in_service(0x52),
            "eoi discipline: the second interrupt waited for the first one's EOI",
        );

        // TPR 0x60 masks vector 0x55 (class 5) until it drops.
        let _ = irq::set_interrupt_handler(Interrupt::Vector(0x55), with_eoi);
        wrmsr(TPR, 0x60);
        irq::enable();
        wrmsr(SELF_IPI, 0x55);
        nops();
        let masked = seen(0x55) == 0 && rdmsr(IRR0 + 2) & (1 << 0x15) != 0;
        wrmsr(TPR, 0);
        nops();
        irq::disable();
        ok &= check(
            masked && seen(0x55) == 1,
            "tpr masks a lower-priority vector",
        );

        // Raised with IF=0: waits until STI.
        let _ = irq::set_interrupt_handler(Interrupt::Vector(0x58), with_eoi);
        wrmsr(SELF_IPI, 0x58);
        nops();
        let waited = seen(0x58) == 0;
        irq::enable();
        nops();
        irq::disable();
        ok &= check(
            waited && seen(0x58) == 1,
            "an interrupt raised with IF=0 waits until STI",
        );

        // A fixed self-IPI through the ICR (shorthand self).
        let _ = irq::set_interrupt_handler(Interrupt::Vector(0x59), with_eoi);
        irq::enable();
        wrmsr(ICR, (0b01 << 18) | 0x59);
        nops();
        irq::disable();
        ok &= check(
            seen(0x59) == 1 && rdmsr(ESR) == 0,
            "self-IPI through the ICR",
        );
        ok
    }

    /// Deterministic costs (one emulated instruction per TSC tick under `cargo xtask bench`).
    pub fn bench(_hz: u64) {
        const N: u64 = 200;
        const V: u8 = 0x60;
        let _ = irq::set_interrupt_handler(Interrupt::Vector(V), with_eoi);
        irq::enable();
        // Self-IPI round trip: WRMSR SELF_IPI -> exit -> injection -> handler -> EOI (exit) -> back.
        let t0 = time::ticks();
        for _ in 0..N {
            wrmsr(SELF_IPI, u64::from(V));
        }
        let ipi = (time::ticks() - t0) / N;
        // Timer interrupt delivered: a TSC deadline already passed (fires at the WRMSR) to handler
        // entry and EOI back.
        let t0 = time::ticks();
        for _ in 0..N {
            let before = time::fired();
            wrmsr(TSC_DEADLINE, 1);
            while time::fired() == before {}
        }
        let timer = (time::ticks() - t0) / N;
        irq::disable();
        // HLT to wake with the deadline already passed: arm, HLT, wake, handler, EOI.
        let t0 = time::ticks();
        for _ in 0..N {
            wrmsr(TSC_DEADLINE, 1);
            irq::wait();
        }
        let hlt = (time::ticks() - t0) / N;
        println!("timer-bench: self-ipi {ipi} timer {timer} hlt-wake {hlt}");
        println!("bench: self_ipi_round_trip={ipi}");
        println!("bench: timer_irq_round_trip={timer}");
        println!("bench: hlt_wake_round_trip={hlt}");
    }
}

#[cfg(target_arch = "riscv64")]
mod arch {
    use super::*;
    use libvmm_guest::irq;

    static NEXT: AtomicU64 = AtomicU64::new(0);
    static PERIOD: AtomicU64 = AtomicU64::new(0);

    fn rearm() {
        if time::fired() < TICKS {
            let next = NEXT.load(Ordering::SeqCst) + PERIOD.load(Ordering::SeqCst);
            NEXT.store(next, Ordering::SeqCst);
            time::arm_deadline(next);
        }
    }

    /// SBI TIME re-armed from the timer callback every 2 ms: `TICKS` interrupts, each waited for with
    /// WFI, then no more.
    pub fn periodic(hz: u64) -> bool {
        let period = hz / 500;
        PERIOD.store(period, Ordering::SeqCst);
        time::set_timer_callback(rearm);
        let t0 = time::ticks();
        NEXT.store(t0 + period, Ordering::SeqCst);
        time::arm_deadline(t0 + period);
        while time::fired() < TICKS {
            irq::wait();
        }
        let t1 = time::ticks();
        time::set_timer_callback(|| {});
        let _ = SEEN[0].load(Ordering::SeqCst) + LOG.load(Ordering::SeqCst) as u32;
        println!(
            "timer: periodic: {} ticks of {period} time ticks in {} time ticks",
            time::fired(),
            t1 - t0
        );
        check(
            time::fired() == TICKS && t1 - t0 >= TICKS * period,
            "periodic: 5 ticks counted exactly",
        )
    }

    pub fn extra(_hz: u64) -> bool {
        true
    }

    /// Deterministic costs (one emulated instruction per `cycle` tick under `cargo xtask bench`). Both
    /// figures include the handler's own SBI call that disarms the timer (the runtime's trap handler
    /// does that on every timer interrupt: VSTIP stays pending until the timer is re-armed or stopped).
    pub fn bench(_hz: u64) {
        const N: u64 = 200;
        // Timer interrupt delivered: SBI TIME with a deadline already passed, interrupts on, to handler
        // entry and back (the host timer fires at once, the VMM raises VSTIP, the guest takes it).
        irq::enable();
        let t0 = libvmm_guest::arch::cycles();
        for _ in 0..N {
            let before = time::fired();
            time::arm_deadline(0);
            while time::fired() == before {}
        }
        let timer = (libvmm_guest::arch::cycles() - t0) / N;
        irq::disable();
        // WFI to wake with the deadline already passed: arm, WFI, wake, handler.
        let t0 = libvmm_guest::arch::cycles();
        for _ in 0..N {
            let before = time::fired();
            time::arm_deadline(0);
            while time::fired() == before {
                irq::wait();
            }
        }
        let hlt = (libvmm_guest::arch::cycles() - t0) / N;
        println!("timer-bench: timer {timer} wfi-wake {hlt}");
        println!("bench: timer_irq_round_trip={timer}");
        println!("bench: hlt_wake_round_trip={hlt}");
    }
}
