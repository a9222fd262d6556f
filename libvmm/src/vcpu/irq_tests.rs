//! The run loop's guest-interrupt paths (delivery before entry, interrupt windows, EOI, HLT that sleeps,
//! the time limit beside guest timers), driven through the real `vcpu::run` with the real virtual
//! x2APIC, against a backend model that reports the guest's interruptibility per exit
//! ([`IrqBackend`]) and a platform model whose guest TSC moves only when the loop sleeps or a test
//! moves it ([`ModelPlatform`]).
use super::*;
use crate::exit::{Output, Reply};
use crate::guest_mem::GuestMemory;
use crate::testing::{IrqBackend, ModelPlatform};
use crate::vm::StopReason;
use crate::x86::apic::delivery::Interruptibility;
use crate::x86::msr;
use std::vec::Vec;

const BASE: u64 = 0x200_0000;
const SVR: u32 = 0x80F;
const TPR: u32 = 0x808;
const EOI: u32 = 0x80B;
const SELF_IPI: u32 = 0x83F;
const LVT_TIMER: u32 = 0x832;
const TSC_DEADLINE_MODE: u64 = 2 << 17;

const IF1: Interruptibility = Interruptibility {
    interrupts_enabled: true,
    shadow: false,
};
const IF0: Interruptibility = Interruptibility {
    interrupts_enabled: false,
    shadow: false,
};
const SHADOW: Interruptibility = Interruptibility {
    interrupts_enabled: true,
    shadow: true,
};

fn wr(msr: u32, value: u64, cpu: Interruptibility) -> (Exit, Interruptibility) {
    (Exit::MsrWrite { msr, value }, cpu)
}

/// The guest turns its x2APIC on the architectural way: IA32_APIC_BASE EN|EXTD, then SVR's software
/// enable.
fn enable_x2apic() -> Vec<(Exit, Interruptibility)> {
    let base = msr::APIC_BASE_DEFAULT_ADDR
        | msr::APIC_BASE_BSP
        | msr::APIC_BASE_ENABLE
        | msr::APIC_BASE_EXTD;
    vec![wr(msr::IA32_APIC_BASE, base, IF0), wr(SVR, 0x1FF, IF0)]
}

/// A TSC-deadline timer on `vector`, armed for `deadline`.
fn arm_timer(vector: u8, deadline: u64) -> Vec<(Exit, Interruptibility)> {
    vec![
        wr(LVT_TIMER, TSC_DEADLINE_MODE | u64::from(vector), IF0),
        wr(msr::IA32_TSC_DEADLINE, deadline, IF0),
    ]
}

fn run_irq(
    script: Vec<(Exit, Interruptibility)>,
    platform: ModelPlatform,
) -> (StopReason, IrqBackend, ModelPlatform) {
    let mut mem = vec![0u8; 0x1000];
    let mut cpu = IrqBackend {
        script,
        ..Default::default()
    };
    let mut vm = Vm::new(GuestMemory::new(BASE, &mut mem), platform);
    let stop = run(&mut cpu, &mut vm);
    (stop, cpu, vm.platform)
}

fn script_ended(stop: &StopReason) -> bool {
    matches!(
        stop,
        StopReason::Backend(crate::backend::BackendError::EntryFailed {
            what: "script ended",
            ..
        })
    )
}

#[test]
fn a_pending_vector_is_injected_only_with_if_set_no_shadow_and_then_the_window_closes() {
    let mut s = enable_x2apic();
    s.push(wr(SELF_IPI, 0x40, IF0)); // 3: pending, IF = 0: a window, no injection
    s.push((Exit::HostEvent, SHADOW)); // 4: the window exit under an STI shadow: still not
    s.push((Exit::HostEvent, IF1)); // 5: now it can: injected, window closed
    let (stop, cpu, _) = run_irq(s, ModelPlatform::default());
    assert!(script_ended(&stop), "{stop:?}");
    assert_eq!(cpu.injected, [(5, 0x40)]);
    assert_eq!(cpu.windows, [(3, true), (5, false)]);
}

#[test]
fn a_vector_at_or_below_the_task_priority_waits_without_a_window_until_tpr_drops() {
    let mut s = enable_x2apic();
    s.push(wr(TPR, 0x50, IF1)); // 3
    s.push(wr(SELF_IPI, 0x45, IF1)); // 4: class 4 <= TPR class 5: held, no window either
    s.push(wr(SELF_IPI, 0x61, IF1)); // 5: class 6 > 5: in at once
    s.push(wr(TPR, 0x00, IF1)); // 6: 0x45 is still below 0x61 in service: held
    s.push(wr(EOI, 0, IF1)); // 7: EOI of 0x61 lets 0x45 in
    let (stop, cpu, _) = run_irq(s, ModelPlatform::default());
    assert!(script_ended(&stop), "{stop:?}");
    assert_eq!(cpu.injected, [(5, 0x61), (7, 0x45)]);
    assert!(cpu.windows.is_empty(), "{:?}", cpu.windows);
}

#[test]
fn eoi_lets_the_next_vector_of_the_same_class_in() {
    let mut s = enable_x2apic();
    s.push(wr(SELF_IPI, 0x40, IF1)); // 3: injected, in service
    s.push(wr(SELF_IPI, 0x41, IF1)); // 4: same class as the one in service: waits
    s.push(wr(SELF_IPI, 0x42, IF1)); // 5: waits too
    s.push(wr(EOI, 0, IF1)); // 6: 0x42, the highest, goes in
    s.push(wr(EOI, 0, IF1)); // 7: then 0x41
    s.push(wr(EOI, 0, IF1)); // 8: nothing left
    let (stop, cpu, _) = run_irq(s, ModelPlatform::default());
    assert!(script_ended(&stop), "{stop:?}");
    assert_eq!(cpu.injected, [(3, 0x40), (6, 0x42), (7, 0x41)]);
    // Every EOI completed as an MSR write, none faulted.
    let eois: Vec<_> = cpu
        .replies
        .iter()
        .filter(|(e, _)| matches!(e, Exit::MsrWrite { msr: EOI, .. }))
        .map(|(_, r)| *r)
        .collect();
    assert_eq!(eois, [Reply::Complete(Output::Nothing); 3]);
}

#[test]
fn hlt_with_a_timer_armed_sleeps_until_the_deadline_then_injects_the_timer_vector() {
    let mut s = enable_x2apic();
    s.extend(arm_timer(0xEC, 5_000)); // 3, 4
    s.push((Exit::Halt, SHADOW)); // 5: `sti; hlt`
    let platform = ModelPlatform::default();
    platform.tsc.set(1_000);
    let (stop, cpu, p) = run_irq(s, platform);
    assert!(script_ended(&stop), "{stop:?}");
    assert_eq!(
        p.armed.first(),
        Some(&Some(5_000)),
        "the host timer was armed for the deadline"
    );
    assert_eq!(p.slept, [5_000], "the CPU slept once, until the deadline");
    assert_eq!(p.tsc.get(), 5_000);
    // HLT retired, its STI shadow ended, and the timer's vector was queued for the entry after it.
    assert_eq!(
        cpu.replies.last().map(|(e, r)| (*e, *r)),
        Some((Exit::Halt, Reply::Complete(Output::Nothing)))
    );
    assert_eq!(cpu.shadows_cleared, 1);
    assert_eq!(cpu.injected, [(5, 0xEC)]);
    assert_eq!(
        p.armed.last(),
        Some(&None),
        "the fired one-shot no longer needs the host timer"
    );
}

#[test]
fn a_host_timer_exit_past_the_deadline_injects_and_before_it_does_not() {
    let mut s = enable_x2apic();
    s.extend(arm_timer(0xEC, 5_000)); // 3, 4
    s.push((Exit::HostEvent, IF1)); // 5: TSC 4_999: not yet
    s.push((Exit::HostEvent, IF1)); // 6: TSC 5_000: fires
    let platform = ModelPlatform::default();
    platform.tsc.set(4_999);
    let mut mem = vec![0u8; 0x1000];
    let mut cpu = IrqBackend {
        script: s,
        ..Default::default()
    };
    let mut vm = Vm::new(GuestMemory::new(BASE, &mut mem), platform);
    for _ in 0..5 {
        let e = cpu.run(&vm.mem).unwrap();
        handle(e, &mut cpu, &mut vm).unwrap();
    }
    assert!(cpu.injected.is_empty());
    vm.platform.tsc.set(5_000);
    let e = cpu.run(&vm.mem).unwrap();
    handle(e, &mut cpu, &mut vm).unwrap();
    assert_eq!(cpu.injected, [(6, 0xEC)]);
}

#[test]
fn hlt_with_nothing_armed_or_with_interrupts_off_stops_with_the_halted_reason() {
    // Nothing armed.
    let mut s = enable_x2apic();
    s.push((Exit::Halt, IF1));
    let (stop, _, p) = run_irq(s, ModelPlatform::default());
    assert_eq!(stop, StopReason::GuestHalted);
    assert!(p.slept.is_empty());
    // A timer armed, but IF = 0: nothing can wake it either.
    let mut s = enable_x2apic();
    s.extend(arm_timer(0xEC, 5_000));
    s.push((Exit::Halt, IF0));
    let (stop, _, p) = run_irq(s, ModelPlatform::default());
    assert_eq!(stop, StopReason::GuestHalted);
    assert!(p.slept.is_empty());
    // A timer armed whose vector the task priority masks.
    let mut s = enable_x2apic();
    s.push(wr(TPR, 0xF0, IF1));
    s.extend(arm_timer(0xEC, 5_000));
    s.push((Exit::Halt, IF1));
    let (stop, _, p) = run_irq(s, ModelPlatform::default());
    assert_eq!(stop, StopReason::GuestHalted);
    assert!(p.slept.is_empty());
}

#[test]
fn the_time_limit_stops_a_guest_sleeping_on_its_timer_and_one_that_takes_timer_exits() {
    // Sleeping in HLT with a guest timer armed: the sleep ends, the limit has passed: stop.
    let mut s = enable_x2apic();
    s.extend(arm_timer(0xEC, 5_000));
    s.push((Exit::Halt, IF1));
    let platform = ModelPlatform {
        limit_passed: Some(7),
        ..Default::default()
    };
    let (stop, cpu, p) = run_irq(s, platform);
    assert_eq!(stop, StopReason::TimeLimit { ms: 7 });
    assert_eq!(p.slept, [5_000]);
    assert!(cpu.injected.is_empty());
    // A host timer exit with a guest timer due and the limit passed: the limit wins, nothing injected.
    let mut s = enable_x2apic();
    s.extend(arm_timer(0xEC, 5_000));
    s.push((Exit::HostEvent, IF1));
    let platform = ModelPlatform {
        limit_passed: Some(7),
        ..Default::default()
    };
    platform.tsc.set(6_000);
    let (stop, cpu, _) = run_irq(s, platform);
    assert_eq!(stop, StopReason::TimeLimit { ms: 7 });
    assert!(cpu.injected.is_empty());
}

#[test]
fn every_host_timer_exit_programs_the_spent_one_shot_again_and_tells_the_backend() {
    let mut s = enable_x2apic();
    s.extend(arm_timer(0xEC, 5_000)); // 3, 4: armed at TSC 1_000
    s.push((Exit::HostEvent, IF1)); // 5: the host timer fired early (TSC 4_990): same deadline again
    let platform = ModelPlatform::default();
    platform.tsc.set(1_000);
    let mut mem = vec![0u8; 0x1000];
    let mut cpu = IrqBackend {
        script: s,
        ..Default::default()
    };
    let mut vm = Vm::new(GuestMemory::new(BASE, &mut mem), platform);
    for _ in 0..4 {
        let e = cpu.run(&vm.mem).unwrap();
        handle(e, &mut cpu, &mut vm).unwrap();
    }
    assert_eq!(vm.platform.armed, [Some(5_000)]);
    assert_eq!(cpu.host_deadlines, [(4, Some(5_000), 1_000)]);
    vm.platform.tsc.set(4_990);
    let e = cpu.run(&vm.mem).unwrap();
    handle(e, &mut cpu, &mut vm).unwrap();
    assert!(cpu.injected.is_empty());
    assert_eq!(vm.platform.armed, [Some(5_000), Some(5_000)]);
    assert_eq!(
        cpu.host_deadlines,
        [(4, Some(5_000), 1_000), (5, Some(5_000), 4_990)]
    );
}
