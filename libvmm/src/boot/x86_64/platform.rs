//! The x86 machine as the generic loop sees it ([`Platform`]): the COM1 console, the real CPUID, and clocks.
//!
//! Clocks: the TSC frequency is calibrated against PIT channel 0 (~10 ms) the first time a guest asks for
//! a clock, not at boot, so payloads that never read the time pay nothing (CPUID 0x15/0x16 are junk under
//! TCG). Realtime adds the CMOS RTC read at calibration to the monotonic clock.
#![forbid(unsafe_code)]

use core::cell::Cell;

use crate::arch::x86_64::cpu::{cpuid, inb, outb, rdtsc};
use crate::arch::x86_64::lapic;
use crate::arch::x86_64::serial::Serial;
use crate::vm::Platform;
use libvmm_abi::{CLOCK_MONOTONIC, CLOCK_REALTIME};

pub struct X86Platform {
    serial: Serial,
    boot_tsc: u64,
    /// (limit in ms, TSC deadline) when a time limit is set.
    limit: Option<(u64, u64)>,
    /// (TSC ticks per second, Unix seconds at `calibrated_at`, TSC at calibration); 0 = not yet.
    calib: Cell<(u64, u64, u64)>,
}

impl X86Platform {
    pub fn new(serial: Serial, boot_tsc: u64) -> Self {
        Self {
            serial,
            boot_tsc,
            limit: None,
            calib: Cell::new((0, 0, 0)),
        }
    }

    /// Limits the guest to `ms` milliseconds from now and starts the LAPIC timer that makes the guest
    /// exit periodically so the limit can be checked. Fails when the TSC cannot be calibrated or there is
    /// no local APIC.
    pub fn set_time_limit(&mut self, ms: u64) -> Result<(), &'static str> {
        let (hz, ..) = self
            .calibration()
            .ok_or("libvmm.timeout_ms needs a calibrated TSC (no PIT found)")?;
        let ticks = (hz as u128 * ms as u128 / 1000).min(u64::MAX as u128) as u64;
        self.limit = Some((ms, rdtsc().saturating_add(ticks)));
        // ~1 ms periods where the APIC timer runs at 1 GHz (QEMU); longer on slower APIC clocks.
        if !lapic::start_periodic_timer(62_500) {
            return Err("libvmm.timeout_ms needs a local APIC");
        }
        Ok(())
    }

    fn calibration(&self) -> Option<(u64, u64, u64)> {
        if self.calib.get().0 == 0 {
            let hz = pit_calibrate()?;
            let now = rdtsc();
            self.calib.set((hz, rtc_unix_seconds().unwrap_or(0), now));
        }
        Some(self.calib.get())
    }
}

impl Platform for X86Platform {
    type Console = Serial;

    fn console(&mut self) -> &mut Serial {
        &mut self.serial
    }

    fn host_cpuid(&self, leaf: u32, subleaf: u32) -> [u32; 4] {
        cpuid(leaf, subleaf)
    }

    fn clock_ns(&self, clock: u64) -> Option<u64> {
        let (hz, unix_at_calib, tsc_at_calib) = self.calibration()?;
        let ticks_to_ns = |t: u64| ((t as u128 * 1_000_000_000) / hz as u128) as u64;
        match clock {
            CLOCK_MONOTONIC => Some(ticks_to_ns(rdtsc().wrapping_sub(self.boot_tsc))),
            CLOCK_REALTIME => Some(
                unix_at_calib * 1_000_000_000 + ticks_to_ns(rdtsc().wrapping_sub(tsc_at_calib)),
            ),
            _ => None,
        }
    }

    fn time_limit_exceeded(&self) -> Option<u64> {
        let (ms, deadline) = self.limit?;
        (rdtsc() >= deadline).then_some(ms)
    }
}

/// TSC ticks per second, measured over ~10 ms of PIT channel 0 read back through the latch command
/// (QEMU's microvm has no port 0x61 speaker gate, so the usual channel-2 method cannot be used); `None` when the PIT does
/// not count.
fn pit_calibrate() -> Option<u64> {
    const PIT_HZ: u64 = 1_193_182;
    const WAIT: u16 = (PIT_HZ / 100) as u16;
    let read = || {
        outb(0x43, 0x00);
        let lo = inb(0x40);
        let hi = inb(0x40);
        u16::from_le_bytes([lo, hi])
    };
    outb(0x43, 0x30); // channel 0, lobyte/hibyte, mode 0, binary
    outb(0x40, 0xFF);
    outb(0x40, 0xFF);
    let start = read();
    let t0 = rdtsc();
    let mut spins: u64 = 0;
    loop {
        let elapsed = start.wrapping_sub(read());
        if (WAIT..0x8000).contains(&elapsed) {
            let t1 = rdtsc();
            let hz = (t1.wrapping_sub(t0) as u128 * PIT_HZ as u128 / elapsed as u128) as u64;
            return (hz > 1_000_000).then_some(hz);
        }
        spins += 1;
        if spins > 10_000_000 {
            return None;
        }
    }
}

fn cmos(reg: u8) -> u8 {
    outb(0x70, reg);
    inb(0x71)
}

/// The CMOS RTC as Unix seconds (UTC assumed, as QEMU and Bochs keep it).
fn rtc_unix_seconds() -> Option<u64> {
    let mut spins = 0;
    while cmos(0x0A) & 0x80 != 0 {
        spins += 1;
        if spins > 1_000_000 {
            return None;
        }
    }
    let status_b = cmos(0x0B);
    let bcd = status_b & 0x04 == 0;
    let conv = |v: u8| {
        if bcd {
            (v & 0x0F) as u64 + ((v >> 4) as u64) * 10
        } else {
            v as u64
        }
    };
    let sec = conv(cmos(0x00));
    let min = conv(cmos(0x02));
    let hour = conv(cmos(0x04) & 0x7F);
    let day = conv(cmos(0x07));
    let month = conv(cmos(0x08));
    let year = 2000 + conv(cmos(0x09));
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) {
        return None;
    }
    // Days from civil (Howard Hinnant's algorithm).
    let (y, m) = if month <= 2 {
        (year - 1, month + 9)
    } else {
        (year, month - 3)
    };
    let era = y / 400;
    let yoe = y - era * 400;
    let doy = (153 * m + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + hour * 3600 + min * 60 + sec)
}
