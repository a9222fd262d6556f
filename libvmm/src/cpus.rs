//! The VMM's own CPUs (x86 CPUs, RISC-V harts), numbered by the VMM: 0 is the boot CPU, 1.. the others
//! in the order the firmware lists them (x86 MADT, RISC-V device tree). Each started CPU reports here
//! whether its bring-up (virtualization enabled by itself, with its own storage) succeeded; the boot
//! CPU waits for that before it starts the next one. Atomics only, no heap.
#![forbid(unsafe_code)]
#![cfg_attr(not(target_os = "none"), allow(dead_code))]

use core::sync::atomic::{AtomicU8, AtomicUsize, Ordering};

use crate::cmdline::Selftest;
use crate::config::MAX_CPUS;

/// Where each CPU's bring-up stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum CpuState {
    NotStarted = 0,
    /// Started and checked in; its virtualization is on.
    Ready = 1,
    /// Started, but its own bring-up failed (it printed why).
    Failed = 2,
}

static STATE: [AtomicU8; MAX_CPUS] = [const { AtomicU8::new(0) }; MAX_CPUS];

/// Called by a CPU once its bring-up is done (or failed): the boot CPU may start the next one.
pub fn check_in(cpu: usize, ready: bool) {
    if let Some(s) = STATE.get(cpu) {
        let v = if ready {
            CpuState::Ready
        } else {
            CpuState::Failed
        };
        s.store(v as u8, Ordering::Release);
    }
}

/// Where CPU `cpu`'s bring-up stands.
pub fn state(cpu: usize) -> CpuState {
    match STATE.get(cpu).map(|s| s.load(Ordering::Acquire)) {
        Some(1) => CpuState::Ready,
        Some(2) => CpuState::Failed,
        _ => CpuState::NotStarted,
    }
}

/// The CPU that `libvmm.selftest=ap-fail` makes fail its own bring-up (0, the boot CPU: none).
static SELFTEST_FAILS: AtomicUsize = AtomicUsize::new(0);

/// Arms `libvmm.selftest=ap-fail[=N]` before the boot CPU starts the others (`aps` of them, numbered
/// 1..=aps): CPU N, by default the last, will fail its bring-up. Returns the CPU armed, or `None` when
/// the option is absent or names a CPU beyond `aps` (then nothing fails).
pub fn arm_selftest(selftest: Option<Selftest>, aps: usize) -> Option<usize> {
    let cpu = match selftest {
        Some(Selftest::ApFail(n)) => n.unwrap_or(aps),
        _ => 0,
    };
    let cpu = if (1..=aps).contains(&cpu) { cpu } else { 0 };
    SELFTEST_FAILS.store(cpu, Ordering::Relaxed);
    (cpu != 0).then_some(cpu)
}

/// Whether CPU `cpu` must fail its own bring-up (`libvmm.selftest=ap-fail`), with the reason
/// `selftest`. Read by the CPU itself, which the boot CPU starts after arming.
#[cfg_attr(feature = "tdx", allow(dead_code))] // the TDX image starts no CPU
pub fn selftest_fails(cpu: usize) -> bool {
    cpu != 0 && SELFTEST_FAILS.load(Ordering::Relaxed) == cpu
}

/// The ready CPUs the guest cannot use because a CPU before them did not come up: vCPU n runs on CPU
/// n, so the guest's vCPUs end at the first CPU that is not ready (`vcpus` of them) and the ready ones
/// after it stay idle. 0 when the guest's count stopped at a limit (`libvmm.cpus`) or at the machine's
/// end. The boot says so, since its "N CPU(s) virtualized" line counts them too.
#[cfg_attr(feature = "tdx", allow(dead_code))] // the TDX image runs no guest vCPUs
pub fn stranded(vcpus: usize) -> usize {
    stranded_in(vcpus, state)
}

fn stranded_in(vcpus: usize, state: impl Fn(usize) -> CpuState) -> usize {
    if vcpus >= MAX_CPUS || state(vcpus) == CpuState::Ready {
        return 0;
    }
    (vcpus + 1..MAX_CPUS)
        .filter(|&c| state(c) == CpuState::Ready)
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_ins_are_seen_and_out_of_range_cpus_are_ignored() {
        assert_eq!(state(MAX_CPUS - 1), CpuState::NotStarted);
        check_in(MAX_CPUS - 1, true);
        assert_eq!(state(MAX_CPUS - 1), CpuState::Ready);
        check_in(MAX_CPUS, true);
        assert_eq!(state(MAX_CPUS), CpuState::NotStarted);
    }

    #[test]
    fn ready_cpus_after_a_failed_one_are_counted_as_stranded() {
        use CpuState::{Failed, NotStarted, Ready};
        let machine = |m: &'static [CpuState]| move |c: usize| *m.get(c).unwrap_or(&NotStarted);
        // CPU 1 failed, 2 and 3 came up: the guest has 1 vCPU, 2 CPUs stranded.
        assert_eq!(stranded_in(1, machine(&[Ready, Failed, Ready, Ready])), 2);
        // The last one failed: nothing after it.
        assert_eq!(stranded_in(3, machine(&[Ready, Ready, Ready, Failed])), 0);
        // `libvmm.cpus=2` on 4 ready CPUs: a limit, not a failure.
        assert_eq!(stranded_in(2, machine(&[Ready, Ready, Ready, Ready])), 0);
        // All came up; one CPU; a CPU that did not start, with a ready one after it.
        assert_eq!(stranded_in(4, machine(&[Ready, Ready, Ready, Ready])), 0);
        assert_eq!(stranded_in(1, machine(&[Ready])), 0);
        assert_eq!(stranded_in(1, machine(&[Ready, NotStarted, Ready])), 1);
        assert_eq!(stranded_in(MAX_CPUS, machine(&[Ready])), 0);
    }

    #[test]
    fn ap_fail_selftest_arms_the_named_or_last_ap_only() {
        // One test (the armed CPU is one static): the default, a named AP, and what arms nothing.
        assert_eq!(arm_selftest(Some(Selftest::ApFail(None)), 3), Some(3));
        assert!(selftest_fails(3) && !selftest_fails(2) && !selftest_fails(0));
        assert_eq!(arm_selftest(Some(Selftest::ApFail(Some(1))), 3), Some(1));
        assert!(selftest_fails(1) && !selftest_fails(3));
        assert_eq!(arm_selftest(Some(Selftest::ApFail(Some(4))), 3), None);
        assert_eq!(arm_selftest(Some(Selftest::ApFail(None)), 0), None);
        assert_eq!(arm_selftest(Some(Selftest::Fault), 3), None);
        assert_eq!(arm_selftest(None, 3), None);
        assert!((0..MAX_CPUS).all(|c| !selftest_fails(c)));
    }
}
