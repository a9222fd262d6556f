//! The VMM's own CPUs (x86 CPUs, RISC-V harts), numbered by the VMM: 0 is the boot CPU, 1.. the others
//! in the order the firmware lists them (x86 MADT, RISC-V device tree). Each started CPU reports here
//! whether its bring-up (virtualization enabled by itself, with its own storage) succeeded; the boot
//! CPU waits for that before it starts the next one. Atomics only, no heap.
#![forbid(unsafe_code)]
#![cfg_attr(not(target_os = "none"), allow(dead_code))]

use core::sync::atomic::{AtomicU8, Ordering};

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
}
