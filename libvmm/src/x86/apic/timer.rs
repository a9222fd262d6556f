//! The local APIC timer (SDM Vol. 3A "APIC Timer", "TSC-Deadline Mode"): one-shot, periodic and
//! TSC-deadline modes, the divide configuration and the current count, all derived from the caller's
//! `now` (guest TSC ticks) instead of a counter that something must decrement.
//!
//! The timer's input clock is the guest TSC: one count of the initial-count register lasts `divisor` TSC
//! ticks, so a one-shot count of `n` expires exactly `n * divisor` ticks after the write. (Real parts
//! count a bus or crystal clock; a guest that calibrates the timer against the TSC, as Linux does, gets
//! the same answer, and CPUID leaf 0x15 can state the ratio when the backends wire this in.)
//!
//! Expiry is processed by [`Timer::advance`], which every access of the model calls first, so state read
//! by the guest is always that of `now` whether or not the host timer fired in between: a masked one-shot
//! timer still expires (its current count reads 0, a later unmask raises nothing) and a periodic timer
//! keeps its phase. Periodic re-arming adds whole periods to the previous deadline (never to `now`), so
//! ticks do not drift; periods missed while nobody looked collapse into one interrupt, as they do in the
//! IRR of a real APIC. Like KVM (`min_timer_period_us`), a periodic period is at least `min_period`
//! ticks: a guest cannot ask for an interrupt storm at one TSC tick per period.
#![forbid(unsafe_code)]

use super::regs::{
    divisor, LVT_MASKED, LVT_TIMER_MODE, LVT_VECTOR, TIMER_PERIODIC, TIMER_TSC_DEADLINE,
};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timer {
    /// The LVT timer entry as stored (writable bits only).
    pub lvt: u32,
    pub initial: u32,
    pub divide_cfg: u32,
    /// One-shot / periodic: the next expiry while counting (`None`: stopped or expired).
    target: Option<u64>,
    /// Periodic: ticks between expiries (initial * divisor, at least `min_period`).
    period: u64,
    /// TSC-deadline mode: the armed deadline, 0 when disarmed.
    tsc_deadline: u64,
    min_period: u64,
}

impl Timer {
    /// The state after reset: masked, one-shot, stopped, divide by 2.
    pub const fn new(min_period: u64) -> Self {
        Self {
            lvt: LVT_MASKED,
            initial: 0,
            divide_cfg: 0,
            target: None,
            period: 0,
            tsc_deadline: 0,
            min_period,
        }
    }

    /// Back to the reset state (the minimum period is a property of the VM, kept).
    pub fn reset(&mut self) {
        *self = Self::new(self.min_period);
    }

    pub fn mode(&self) -> u32 {
        self.lvt & LVT_TIMER_MODE
    }

    pub fn masked(&self) -> bool {
        self.lvt & LVT_MASKED != 0
    }

    pub fn vector(&self) -> u8 {
        // The vector field is bits 7:0.
        (self.lvt & LVT_VECTOR) as u8
    }

    fn divisor(&self) -> u64 {
        divisor(self.divide_cfg)
    }

    /// When the timer next expires, whether or not it is masked.
    pub fn expiry(&self) -> Option<u64> {
        if self.mode() == TIMER_TSC_DEADLINE {
            (self.tsc_deadline != 0).then_some(self.tsc_deadline)
        } else {
            self.target
        }
    }

    /// Processes every expiry up to `now`. Returns true when the timer expired unmasked (the caller
    /// raises the LVT vector: once, however many periods passed).
    pub fn advance(&mut self, now: u64) -> bool {
        let Some(at) = self.expiry() else {
            return false;
        };
        if now < at {
            return false;
        }
        match self.mode() {
            TIMER_TSC_DEADLINE => self.tsc_deadline = 0,
            TIMER_PERIODIC => {
                // Whole periods from the previous deadline: no drift. `period` >= 1 while counting.
                let missed = (now - at) / self.period.max(1) + 1;
                self.target = missed
                    .checked_mul(self.period)
                    .and_then(|d| at.checked_add(d));
            }
            _ => self.target = None,
        }
        !self.masked()
    }

    /// The current-count register at `now` (after [`Self::advance`]): the counts left, rounded up (the
    /// count drops by one after each full `divisor` ticks), 0 when stopped, expired or in TSC-deadline
    /// mode.
    pub fn current(&self, now: u64) -> u32 {
        match self.target {
            Some(t) if self.mode() != TIMER_TSC_DEADLINE && t > now => {
                let left = (t - now).div_ceil(self.divisor());
                // Capped by the initial count, a u32 (a clamped period can be longer than the count).
                left.min(u64::from(self.initial)) as u32
            }
            _ => 0,
        }
    }

    /// (Re)starts the count as a write of the initial count does (ignored in TSC-deadline mode); 0 stops.
    pub fn write_initial(&mut self, value: u32, now: u64) {
        if self.mode() == TIMER_TSC_DEADLINE {
            return;
        }
        self.initial = value;
        self.start(now);
    }

    fn start(&mut self, now: u64) {
        if self.initial == 0 {
            self.target = None;
            return;
        }
        let ticks = u64::from(self.initial) * self.divisor();
        self.period = ticks.max(self.min_period);
        let first = if self.mode() == TIMER_PERIODIC {
            self.period
        } else {
            ticks
        };
        self.target = now.checked_add(first);
    }

    /// A new LVT timer value (writable bits only, already checked). Switching into or out of
    /// TSC-deadline mode disarms the timer ("Transitioning between TSC-deadline mode and other timer
    /// modes also disarms the timer"), as KVM also clears the initial count; one-shot <-> periodic keeps
    /// the running count.
    pub fn write_lvt(&mut self, value: u32) {
        let was_deadline = self.mode() == TIMER_TSC_DEADLINE;
        self.lvt = value;
        let is_deadline = self.mode() == TIMER_TSC_DEADLINE;
        if was_deadline != is_deadline {
            self.target = None;
            self.initial = 0;
            self.tsc_deadline = 0;
        } else if self.mode() == TIMER_PERIODIC {
            self.period = (u64::from(self.initial) * self.divisor()).max(self.min_period);
        }
    }

    /// A new divide configuration: a running count keeps its remaining counts, now at the new rate (as
    /// KVM's `update_target_expiration` rescales the remaining time).
    pub fn write_divide(&mut self, cfg: u32, now: u64) {
        let left = u64::from(self.current(now));
        self.divide_cfg = cfg;
        let div = self.divisor();
        if self.target.is_some() {
            self.target = now.checked_add(left * div);
            self.period = (u64::from(self.initial) * div).max(self.min_period);
        }
    }

    /// IA32_TSC_DEADLINE as RDMSR sees it: the armed deadline in TSC-deadline mode, else 0.
    pub fn read_deadline(&self) -> u64 {
        if self.mode() == TIMER_TSC_DEADLINE {
            self.tsc_deadline
        } else {
            0
        }
    }

    /// WRMSR IA32_TSC_DEADLINE: arms (0 disarms) in TSC-deadline mode; ignored in the other modes.
    pub fn write_deadline(&mut self, value: u64) {
        if self.mode() == TIMER_TSC_DEADLINE {
            self.tsc_deadline = value;
        }
    }

    /// Whether the timer mode field holds the reserved encoding 0b11.
    pub fn reserved_mode(lvt: u32) -> bool {
        lvt & LVT_TIMER_MODE == LVT_TIMER_MODE
    }
}
