//! Time for payloads on every backend: the monotonic clock, a one-shot timer deadline, and sleeps that
//! wait on the timer (x86: the VMM's virtual x2APIC in TSC-deadline mode, then HLT, which the VMM turns
//! into a sleep of the physical CPU; RISC-V: SBI TIME, then WFI) instead of spinning.
//!
//! Deadlines are in the architecture's counter ([`ticks`]: the TSC on x86, the `time` CSR on RISC-V);
//! its rate is measured once against the VMM's monotonic clock ([`ticks_per_sec`]). A sleep re-checks
//! the clock when it wakes and waits again when woken early, so it never ends before the time asked.
#![forbid(unsafe_code)]

use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use libvmm_abi::{Hypercall, CLOCK_MONOTONIC};

use crate::irq::{self, Interrupt};
use crate::trap::{TrapAction, TrapFrame};

/// The vector of the runtime's timer interrupt (x86): the x2APIC's LVT timer in TSC-deadline mode.
pub const TIMER_VECTOR: u8 = 0xEC;

/// Bit per CPU (`smp::current_cpu`): its own timer is set up; bit [`HANDLER`]: the runtime's timer
/// handler is installed (once, for every CPU: the handler table is shared).
static READY: AtomicU64 = AtomicU64::new(0);
const HANDLER: u64 = 1 << 63;
static HZ: AtomicU64 = AtomicU64::new(0);
static FIRED: AtomicU64 = AtomicU64::new(0);
/// The payload's timer callback (`fn()` as usize, 0: none).
static CALLBACK: AtomicUsize = AtomicUsize::new(0);

/// Nanoseconds of the monotonic clock, or `None` when the VMM has no clock.
pub fn now_ns() -> Option<u64> {
    let ns = crate::hypercall(Hypercall::Clock, [CLOCK_MONOTONIC, 0, 0, 0]);
    (ns >= 0).then_some(ns as u64)
}

/// The architecture's counter (x86 TSC, RISC-V `time`).
pub fn ticks() -> u64 {
    #[cfg(target_arch = "x86_64")]
    return crate::arch::cycles();
    #[cfg(target_arch = "riscv64")]
    return crate::arch::time();
}

/// Counter ticks per second, measured once over about 1 ms of the monotonic clock (0: no clock).
pub fn ticks_per_sec() -> u64 {
    let hz = HZ.load(Ordering::Relaxed);
    if hz != 0 {
        return hz;
    }
    let (Some(n0), t0) = (now_ns(), ticks()) else {
        return 0;
    };
    let (mut n1, mut t1) = (n0, t0);
    while n1.wrapping_sub(n0) < 1_000_000 {
        for _ in 0..200 {
            core::hint::spin_loop();
        }
        t1 = ticks();
        n1 = now_ns().unwrap_or(n0);
    }
    let hz = ((t1.wrapping_sub(t0) as u128 * 1_000_000_000) / n1.wrapping_sub(n0) as u128) as u64;
    HZ.store(hz.max(1), Ordering::Relaxed);
    hz.max(1)
}

/// Timer interrupts taken so far.
pub fn fired() -> u64 {
    FIRED.load(Ordering::SeqCst)
}

/// Called (in the interrupt, interrupts off) on each timer interrupt, after the runtime counted it.
pub fn set_timer_callback(f: fn()) {
    CALLBACK.store(f as usize, Ordering::SeqCst);
}

fn timer_interrupt(_: &mut TrapFrame) -> TrapAction {
    FIRED.fetch_add(1, Ordering::SeqCst);
    #[cfg(target_arch = "x86_64")]
    irq::eoi();
    let cb = CALLBACK.load(Ordering::SeqCst);
    if cb != 0 {
        crate::arch::call_fn(cb);
    }
    TrapAction::Resume
}

/// Sets this CPU's timer up (idempotent per CPU; [`arm_deadline`] calls it): the runtime's timer handler
/// is installed once (the handler table is every CPU's), and on x86 this CPU's own x2APIC, which no other
/// CPU can program, is enabled (IA32_APIC_BASE EXTD|EN), software-enabled (SVR) and its timer put in
/// TSC-deadline mode on [`TIMER_VECTOR`]. Each CPU's APIC starts with its timer masked: a CPU that never
/// ran this sleeps in HLT with no timer to wake it.
pub fn init() {
    if READY.load(Ordering::SeqCst) & HANDLER == 0 {
        // Installed before any CPU's timer can fire (two CPUs here at once install the same handler).
        #[cfg(target_arch = "x86_64")]
        let _ = irq::set_interrupt_handler(Interrupt::Vector(TIMER_VECTOR), timer_interrupt);
        #[cfg(target_arch = "riscv64")]
        let _ = irq::set_interrupt_handler(Interrupt::Timer, timer_interrupt);
        READY.fetch_or(HANDLER, Ordering::SeqCst);
    }
    // One CPU: no MSR exit to learn which (`current_cpu` is 0 without one).
    let bit = 1u64 << (crate::smp::current_cpu() % 63);
    if READY.load(Ordering::SeqCst) & bit != 0 {
        return;
    }
    #[cfg(target_arch = "x86_64")]
    {
        use crate::arch::{rdmsr, wrmsr};
        use irq::x2apic::*;
        wrmsr(APIC_BASE, rdmsr(APIC_BASE) | BASE_EN | BASE_EXTD);
        wrmsr(SVR, SVR_ENABLE | 0xFF);
        wrmsr(LVT_TIMER, TIMER_TSC_DEADLINE | u64::from(TIMER_VECTOR));
    }
    READY.fetch_or(bit, Ordering::SeqCst);
}

/// Arms the one-shot timer for counter value `deadline` (a deadline already passed fires at once).
pub fn arm_deadline(deadline: u64) {
    init();
    #[cfg(target_arch = "x86_64")]
    crate::arch::wrmsr(irq::x2apic::TSC_DEADLINE, deadline);
    #[cfg(target_arch = "riscv64")]
    crate::arch::arm_timer(deadline);
}

/// Sleeps until the monotonic clock reads at least `end_ns`, waiting on the timer.
pub fn sleep_until_ns(end_ns: u64) {
    let hz = ticks_per_sec();
    loop {
        let Some(now) = now_ns() else { return };
        if now >= end_ns {
            return;
        }
        let wait = ((end_ns - now) as u128 * hz as u128 / 1_000_000_000) as u64;
        let before = fired();
        arm_deadline(ticks().saturating_add(wait.max(1)));
        while fired() == before {
            irq::wait();
        }
    }
}

/// Sleeps at least `ns` nanoseconds on the timer.
pub fn sleep_ns(ns: u64) {
    if let Some(now) = now_ns() {
        sleep_until_ns(now.saturating_add(ns));
    }
}
