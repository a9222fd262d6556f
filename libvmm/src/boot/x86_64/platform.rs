//! The x86 machine as the generic loop sees it ([`Platform`]): the COM1 console, the real CPUID, and clocks.
//!
//! Clocks: the TSC frequency is found the first time a guest asks for a clock (or a time limit is set),
//! not at boot, so payloads that never read the time pay nothing. The sources and their order are in
//! `x86::clock`: CPUID 0x15 (Intel), the hypervisor timing leaf 0x4000_0010, the PIT (~10 ms), whose
//! absence is detected at once from its read-back status, the CMOS RTC's periodic flag (~10 ms), and
//! last an estimate from CPUID 0x16. The outcome, failure included, is
//! cached, once for the VM: a machine without any source pays one check, not one calibration per clock
//! call, and every vCPU's clock has the same rate and origin. The line
//! `libvmm: clock: ...` says which source was used (or why none), once.
//!
//! CLOCK_REALTIME is the CMOS RTC read at calibration plus the TSC since then. Without an RTC (register
//! D reads 0xFF: QEMU microvm under KVM, Cloud Hypervisor) the VMM does not know the date:
//! CLOCK_REALTIME then counts from the Unix epoch at the VMM's entry (it equals CLOCK_MONOTONIC), and
//! the clock line says so.
#![forbid(unsafe_code)]

use core::cell::Cell;
use core::sync::atomic::{AtomicU32, Ordering};

use crate::arch::x86_64::cpu::{cpuid, inb, outb, rdtsc};
use crate::arch::x86_64::lapic;
use crate::arch::x86_64::serial::Serial;
use crate::vm::Platform;
use crate::x86::clock::{self, Calibrated, SharedCalibration, TscSource};
use libvmm_abi::{CLOCK_MONOTONIC, CLOCK_REALTIME};

/// The host APIC id of the CPU that runs each vCPU (vCPU n on VMM CPU n; `u32::MAX`: none), for kicks.
pub(super) static APIC_ID_OF: [AtomicU32; crate::config::MAX_CPUS] =
    [const { AtomicU32::new(u32::MAX) }; crate::config::MAX_CPUS];

/// The VM's one TSC calibration, which every vCPU's platform takes (see `x86::clock::SharedCalibration`).
static VM_CALIBRATION: SharedCalibration = SharedCalibration::new();

/// (TSC ticks per second, Unix nanoseconds at `tsc_at` (from the RTC; without one, the time since
/// entry), `tsc_at`): a calibration, in the form [`SharedCalibration`] publishes it.
type Calibration = (u64, u64, u64);

pub struct X86Platform {
    serial: Serial,
    boot_tsc: u64,
    /// (limit in ms, TSC deadline) when a time limit is set.
    limit: Option<(u64, u64)>,
    /// The guest's earliest armed timer deadline (TSC), from the loop.
    guest_deadline: Option<u64>,
    /// The backend keeps time while the guest runs (VMX: the VMX-preemption timer): the host LAPIC
    /// timer then serves only sleeps.
    backend_time: bool,
    /// The host LAPIC timer's rate against the TSC, measured once on first use.
    lapic: Cell<LapicRate>,
    /// The host LAPIC timer is programmed (one-shot, or periodic without a rate).
    host_timer: bool,
}

/// The host LAPIC timer's rate, measured against the TSC the first time a host deadline is programmed.
#[derive(Clone, Copy)]
enum LapicRate {
    NotYet,
    /// No local APIC.
    Absent,
    /// Its count did not move against the TSC: the old periodic tick is used instead.
    Unknown,
    /// LAPIC timer ticks (divide 16) per TSC tick, 32.32 fixed point.
    PerTsc(u64),
}

impl X86Platform {
    pub fn new(serial: Serial, boot_tsc: u64) -> Self {
        Self {
            serial,
            boot_tsc,
            limit: None,
            guest_deadline: None,
            backend_time: false,
            lapic: Cell::new(LapicRate::NotYet),
            host_timer: false,
        }
    }

    /// The TSC at the VMM's entry (the APs' platforms count their clocks from it too).
    pub fn boot_tsc(&self) -> u64 {
        self.boot_tsc
    }

    /// Limits the guest to `ms` milliseconds from now and programs the host timer for it (and for the
    /// guest's timers, whichever is first). Fails when the TSC cannot be calibrated or there is no local
    /// APIC.
    pub fn set_time_limit(&mut self, ms: u64) -> Result<(), &'static str> {
        let (hz, ..) = self
            .calibration()
            .ok_or("libvmm.timeout_ms needs a TSC frequency (no CPUID leaf, hypervisor leaf or PIT offers one)")?;
        let ticks = (hz as u128 * ms as u128 / 1000).min(u64::MAX as u128) as u64;
        self.limit = Some((ms, rdtsc().saturating_add(ticks)));
        if let LapicRate::Absent = self.lapic_rate() {
            return Err("libvmm.timeout_ms needs a local APIC");
        }
        self.program_host_timer();
        Ok(())
    }

    /// The host LAPIC timer's rate against the TSC, measured on the first call: a one-shot from the
    /// largest count, read back until it has moved `LAPIC_CALIBRATION_TICKS` (bounded by
    /// `LAPIC_CALIBRATION_MAX_TSC` TSC ticks).
    fn lapic_rate(&self) -> LapicRate {
        if let LapicRate::NotYet = self.lapic.get() {
            let rate = if !lapic::start_one_shot(u32::MAX) {
                LapicRate::Absent
            } else {
                let (t0, c0) = (rdtsc(), lapic::current_count());
                let (mut t1, mut c1) = (t0, c0);
                while c0.wrapping_sub(c1) < crate::config::LAPIC_CALIBRATION_TICKS
                    && t1.wrapping_sub(t0) < crate::config::LAPIC_CALIBRATION_MAX_TSC
                {
                    (t1, c1) = (rdtsc(), lapic::current_count());
                }
                lapic::stop_timer();
                match (c0.saturating_sub(c1), t1.wrapping_sub(t0)) {
                    (0, _) | (_, 0) => LapicRate::Unknown,
                    (dc, dt) => LapicRate::PerTsc(((u128::from(dc) << 32) / u128::from(dt)) as u64),
                }
            };
            self.lapic.set(rate);
        }
        self.lapic.get()
    }

    /// The host LAPIC timer fires at TSC `at` (rounded up: never early by the rate's own error more
    /// than a tick), or, without a measured rate, ticks periodically as before. `false`: no APIC.
    fn lapic_at(&mut self, at: u64) -> bool {
        let ok = match self.lapic_rate() {
            LapicRate::Absent | LapicRate::NotYet => false,
            LapicRate::Unknown => {
                lapic::start_periodic_timer(crate::config::HOST_TIMER_INITIAL_COUNT)
            }
            LapicRate::PerTsc(rate) => {
                let ticks = at.saturating_sub(rdtsc());
                let count = ((u128::from(ticks) * u128::from(rate)) >> 32) + 1;
                lapic::start_one_shot(count.min(u128::from(u32::MAX)) as u32)
            }
        };
        self.host_timer = ok;
        ok
    }

    /// Programs the host LAPIC one-shot for the earliest host deadline while the guest runs (not when
    /// the backend keeps that time itself), or stops it when nothing needs one.
    fn program_host_timer(&mut self) {
        match self.host_deadline() {
            Some(at) if !self.backend_time => {
                self.lapic_at(at);
            }
            _ if self.host_timer => {
                lapic::stop_timer();
                self.host_timer = false;
            }
            _ => {}
        }
    }

    /// (TSC Hz, Unix ns at `tsc_at`, `tsc_at`), calibrating on the VM's first call only: every vCPU's
    /// platform takes the one calibration ([`VM_CALIBRATION`]), so their clocks agree.
    fn calibration(&self) -> Option<Calibration> {
        match VM_CALIBRATION.get_or_claim(core::hint::spin_loop) {
            Calibrated::Done(hz, unix_ns_at, tsc_at) => Some((hz, unix_ns_at, tsc_at)),
            Calibrated::Failed => None,
            Calibrated::Mine => {
                let c = self.calibrate();
                VM_CALIBRATION.publish(c);
                c
            }
        }
    }

    fn calibrate(&self) -> Option<Calibration> {
        let mut con = Serial;
        let found = clock::tsc_hz_from_cpuid(cpuid).map(Ok).unwrap_or_else(|| {
            pit_calibrate()
                .map(|hz| (hz, TscSource::Pit))
                .or_else(|pit| match rtc_calibrate() {
                    Ok(hz) => Ok((hz, TscSource::RtcPeriodic)),
                    Err(rtc) => clock::tsc_hz_estimate(cpuid).ok_or((pit, rtc)),
                })
        });
        let (hz, source) = match found {
            Ok(f) => f,
            Err((pit, rtc)) => {
                crate::vmm_print!(
                    &mut con,
                    "libvmm: clock: no TSC frequency (no CPUID 0x15/0x16 or hypervisor leaf 0x4000_0010; PIT: {pit}; RTC: {rtc}): clocks answer EINVAL\n"
                );
                return None;
            }
        };
        let tsc_at = rdtsc();
        let (unix_ns_at, realtime) = match rtc_unix_seconds() {
            Ok(s) => (s.saturating_mul(1_000_000_000), "the CMOS RTC"),
            Err(why) => {
                let since_entry = ticks_to_ns(tsc_at.wrapping_sub(self.boot_tsc), hz);
                (
                    since_entry,
                    match why {
                        RtcError::Absent => "no CMOS RTC (register D reads 0xff): counts from the Unix epoch at VMM entry",
                        RtcError::Stuck => "CMOS RTC update never ends: counts from the Unix epoch at VMM entry",
                        RtcError::Invalid => "CMOS RTC date invalid: counts from the Unix epoch at VMM entry",
                    },
                )
            }
        };
        crate::vmm_print!(
            &mut con,
            "libvmm: clock: TSC {}.{:03} MHz from {}; CLOCK_REALTIME: {}\n",
            hz / 1_000_000,
            hz / 1000 % 1000,
            source.describe(),
            realtime
        );
        Some((hz, unix_ns_at, tsc_at))
    }
}

fn ticks_to_ns(t: u64, hz: u64) -> u64 {
    ((t as u128 * 1_000_000_000) / hz as u128) as u64
}

impl Platform for X86Platform {
    type Console = Serial;

    fn console(&mut self) -> &mut Serial {
        &mut self.serial
    }

    fn host_cpuid(&self, leaf: u32, subleaf: u32) -> [u32; 4] {
        cpuid(leaf, subleaf)
    }

    /// The host's RDRAND (the guest's CPUID offers it too; the hypercall is for guests that ask).
    /// Out of line, off the hot hypercall dispatch.
    #[cold]
    #[inline(never)]
    fn entropy(&mut self) -> Option<u64> {
        crate::arch::x86_64::cpu::rdrand()
    }

    fn clock_ns(&self, clock: u64) -> Option<u64> {
        let (hz, unix_ns_at, tsc_at) = self.calibration()?;
        match clock {
            CLOCK_MONOTONIC => Some(ticks_to_ns(rdtsc().wrapping_sub(self.boot_tsc), hz)),
            CLOCK_REALTIME => {
                Some(unix_ns_at.saturating_add(ticks_to_ns(rdtsc().wrapping_sub(tsc_at), hz)))
            }
            _ => None,
        }
    }

    fn time_limit_exceeded(&self) -> Option<u64> {
        let (ms, deadline) = self.limit?;
        (rdtsc() >= deadline).then_some(ms)
    }

    /// The guest runs without a TSC offset on both backends: its TSC is the host's.
    fn guest_tsc(&self) -> u64 {
        rdtsc()
    }

    /// The earliest host deadline is programmed: the host LAPIC one-shot (SVM), or nothing here when
    /// the backend keeps guest time itself (VMX: the VMX-preemption timer, told by the loop).
    fn arm_guest_timer(&mut self, deadline: Option<u64>) {
        self.guest_deadline = deadline;
        self.program_host_timer();
    }

    fn host_deadline(&self) -> Option<u64> {
        match (self.guest_deadline, self.limit) {
            (Some(g), Some((_, l))) => Some(g.min(l)),
            (g, l) => g.or(l.map(|(_, l)| l)),
        }
    }

    fn guest_time_in_backend(&mut self) {
        self.backend_time = true;
        self.program_host_timer();
    }

    /// HLT towards the deadline: the host LAPIC one-shot for the earlier of it and the time limit, or
    /// any other host interrupt (a kick from another vCPU), wakes the CPU and returns; the caller looks
    /// at the time, and at what was posted, and halts again. Then the running guest's host timer is
    /// restored.
    fn sleep_until(&mut self, deadline: u64) {
        if rdtsc() < deadline && self.time_limit_exceeded().is_none() {
            let at = self.limit.map_or(deadline, |(_, l)| l.min(deadline));
            if !self.lapic_at(at) {
                return; // no local APIC: nothing could wake the CPU; the caller sees the time unchanged
            }
            crate::arch::x86_64::cpu::wait_for_interrupt();
        }
        self.program_host_timer();
    }

    /// The kick: a fixed host IPI ([`lapic::KICK_VECTOR`]) to the CPU that runs vCPU `cpu`; a CPU in
    /// guest mode exits (INTR), a halted one wakes.
    fn kick(&self, cpu: usize) {
        if let Some(id) = APIC_ID_OF.get(cpu).map(|a| a.load(Ordering::Relaxed)) {
            if id != u32::MAX {
                lapic::send_kick(id);
            }
        }
    }

    /// Takes the host interrupts left pending across the exit (a kick, the host timer): their stubs
    /// acknowledge them.
    fn clear_kick(&mut self) {
        crate::arch::x86_64::cpu::take_pending_interrupts();
    }

    /// HLT with interrupts enabled for that instant (STI's shadow covers HLT, so a kick that came while
    /// interrupts were off wakes it at once). With a time limit, the host one-shot is armed for it first
    /// and the running guest's host timer restored after (`x86::clock::idle_wait`): a vCPU waiting here
    /// wakes at the limit even when its one-shot was spent before (the `spin-forever` hang).
    fn idle(&mut self) {
        // Without a limit, nothing more than before: the IPI round trip's halted vCPU waits here
        // (`cargo xtask bench`: the limit's path inline cost it 13 emulated instructions).
        if self.limit.is_none() {
            crate::arch::x86_64::cpu::wait_for_interrupt();
        } else {
            self.idle_within_limit();
        }
    }
}

impl X86Platform {
    /// [`Platform::idle`] with a time limit set (`x86::clock::idle_wait`).
    #[cold]
    #[inline(never)]
    fn idle_within_limit(&mut self) {
        match clock::idle_wait(self.limit.map(|(_, l)| l), rdtsc) {
            clock::IdleWait::ForKick => crate::arch::x86_64::cpu::wait_for_interrupt(),
            clock::IdleWait::Until(at) => {
                self.lapic_at(at);
                crate::arch::x86_64::cpu::wait_for_interrupt();
                self.program_host_timer();
            }
            clock::IdleWait::NoWait => {}
        }
    }
}

/// TSC ticks per second, measured over ~10 ms of PIT channel 0 read back through the latch command
/// (QEMU's microvm has no port 0x61 speaker gate, so the usual channel-2 method cannot be used). An
/// absent PIT is refused before the loop from its read-back status; a counter that stops moving is
/// given up on after `clock::PIT_STUCK_READS` reads.
fn pit_calibrate() -> Result<u64, &'static str> {
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
    outb(0x43, 0xE2); // read-back: latch the status of channel 0 only
    if !clock::pit_status_ok(inb(0x40)) {
        return Err("absent (its read-back status reads 0xff)");
    }
    let start = read();
    let t0 = rdtsc();
    let (mut last, mut unchanged) = (start, 0u32);
    loop {
        let now = read();
        let elapsed = start.wrapping_sub(now);
        if (WAIT..0x8000).contains(&elapsed) {
            let t1 = rdtsc();
            let hz = (t1.wrapping_sub(t0) as u128 * PIT_HZ as u128 / elapsed as u128) as u64;
            return if hz > 1_000_000 {
                Ok(hz)
            } else {
                Err("the TSC runs slower than 1 MHz against it")
            };
        }
        if now == last {
            unchanged += 1;
            if unchanged > clock::PIT_STUCK_READS {
                return Err("its counter does not move");
            }
        } else {
            (last, unchanged) = (now, 0);
        }
    }
}

fn cmos(reg: u8) -> u8 {
    outb(0x70, reg);
    inb(0x71)
}

fn cmos_write(reg: u8, v: u8) {
    outb(0x70, reg);
    outb(0x71, v);
}

/// TSC ticks per second counted over `clock::RTC_PERIODS` periods of the RTC's periodic flag (register
/// C bit 6, set every 1/1024 s while register B's PIE bit is set; reading C clears it). Polled: no
/// interrupt is taken (the VMM runs with interrupts off and the IRQ is not routed). Registers A and B
/// are restored afterwards.
fn rtc_calibrate() -> Result<u64, &'static str> {
    const PF: u8 = 1 << 6;
    const PIE: u8 = 1 << 6;
    if !clock::rtc_present(cmos(0x0D)) {
        return Err("absent (register D reads 0xff)");
    }
    let (a, b) = (cmos(0x0A), cmos(0x0B));
    cmos_write(0x0A, (a & 0xF0) | clock::RTC_RATE_CODE);
    cmos_write(0x0B, b | PIE);
    let _ = cmos(0x0C);
    // Waits for the next periodic flag; false when none comes within the bound.
    let next_flag = || {
        let t0 = rdtsc();
        while cmos(0x0C) & PF == 0 {
            if rdtsc().wrapping_sub(t0) > clock::RTC_PERIOD_WAIT_TICKS {
                return false;
            }
        }
        true
    };
    let mut result = Err("its periodic flag never sets");
    if next_flag() {
        let t0 = rdtsc();
        if (0..clock::RTC_PERIODS).all(|_| next_flag()) {
            result = clock::hz_from_periods(
                rdtsc().wrapping_sub(t0),
                clock::RTC_PERIODS,
                clock::RTC_RATE_HZ,
            )
            .ok_or("the TSC rate against it is implausible");
        }
    }
    cmos_write(0x0B, b);
    cmos_write(0x0A, a);
    let _ = cmos(0x0C);
    result
}

enum RtcError {
    Absent,
    Stuck,
    Invalid,
}

/// The CMOS RTC as Unix seconds (UTC assumed, as QEMU and Bochs keep it). Absence is detected from
/// status register D before any wait; the update-in-progress wait is bounded.
fn rtc_unix_seconds() -> Result<u64, RtcError> {
    if !clock::rtc_present(cmos(0x0D)) {
        return Err(RtcError::Absent);
    }
    let mut reads = 0;
    while cmos(0x0A) & 0x80 != 0 {
        reads += 1;
        if reads > clock::RTC_UIP_READS {
            return Err(RtcError::Stuck);
        }
    }
    let status_b = cmos(0x0B);
    let bcd = status_b & 0x04 == 0;
    let conv = |v: u8| if bcd { clock::from_bcd(v) } else { v as u64 };
    let sec = conv(cmos(0x00));
    let min = conv(cmos(0x02));
    let hour = conv(cmos(0x04) & 0x7F);
    let day = conv(cmos(0x07));
    let month = conv(cmos(0x08));
    let year = 2000 + conv(cmos(0x09));
    clock::unix_seconds(year, month, day, hour, min, sec).ok_or(RtcError::Invalid)
}
