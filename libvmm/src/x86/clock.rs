//! Where the x86 VMM's clocks come from, as pure decisions over values read from the machine (CPUID
//! leaves, PIT and CMOS registers), so that every rule is tested on the host; the reads themselves are
//! in `boot/x86_64/platform.rs`.
//!
//! Why not only the PIT: machines without legacy devices have none (Cloud Hypervisor; QEMU
//! `-M microvm,pit=off`), and a PIT loop that waits for a counter that never moves costs millions of
//! exits. The TSC frequency is taken, in order, from
//! 1. CPUID 0x15 with all three values (TSC / crystal ratio times the crystal frequency in ECX).
//!    Intel-defined, trusted only on a GenuineIntel CPU (QEMU's TCG returns junk there on its AMD
//!    models);
//! 2. the hypervisor timing leaf 0x4000_0010 (EAX = TSC kHz; VMware's convention, which QEMU under KVM
//!    offers with `vmware-cpuid-freq`; whether Cloud Hypervisor offers it was not checked here), when
//!    CPUID 1 says a hypervisor is present and its leaf range reaches it;
//! 3. the PIT, after an exact presence check (its read-back status byte; an absent device reads 0xFF);
//! 4. the CMOS RTC's periodic flag (1024 Hz, ~10 ms), when the RTC is there (QEMU `microvm,pit=off`
//!    keeps its RTC); each wait for the flag is bounded in TSC ticks, so an RTC without a periodic timer
//!    costs a fraction of a second at most;
//! 5. last, an estimate: 0x15's ratio with the crystal derived from 0x16's base MHz (what Linux's
//!    `native_calibrate_tsc` does when ECX is 0). Last because it is not a measurement: Bochs reports
//!    a 3.5 GHz base there while its TSC counts emulated instructions, and its PIT says so.
//!
//! Each value must be plausible (between 1 MHz and 100 GHz) to be taken. Hand-written rather than a
//! crate: the well-kept ones (`raw-cpuid`) parse the leaves but make none of these decisions.
#![forbid(unsafe_code)]

/// Where the TSC frequency came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum TscSource {
    Cpuid15,
    Cpuid16Estimate,
    HypervisorLeaf,
    Pit,
    RtcPeriodic,
}

impl TscSource {
    pub fn describe(self) -> &'static str {
        match self {
            Self::Cpuid15 => "CPUID 0x15 (TSC/crystal ratio)",
            Self::Cpuid16Estimate => {
                "CPUID 0x16's base frequency (an estimate: nothing could be measured)"
            }
            Self::HypervisorLeaf => "hypervisor timing leaf CPUID 0x4000_0010",
            Self::Pit => "PIT channel 0 (~10 ms)",
            Self::RtcPeriodic => "the CMOS RTC's 1024 Hz periodic flag (~10 ms)",
        }
    }
}

const MIN_HZ: u64 = 1_000_000;
const MAX_HZ: u64 = 100_000_000_000;

fn plausible(hz: u64) -> Option<u64> {
    (MIN_HZ..=MAX_HZ).contains(&hz).then_some(hz)
}

/// The TSC frequency from CPUID alone, or `None` when no leaf offers a plausible one.
pub(crate) fn tsc_hz_from_cpuid(cpuid: impl Fn(u32, u32) -> [u32; 4]) -> Option<(u64, TscSource)> {
    let [max_basic, b, c, d] = cpuid(0, 0);
    let intel = [b, d, c] == [0x756e_6547, 0x4965_6e69, 0x6c65_746e]; // "Genu" "ineI" "ntel"
    if intel && max_basic >= 0x15 {
        let [den, num, crystal, _] = cpuid(0x15, 0);
        if den != 0 && num != 0 && crystal != 0 {
            if let Some(hz) = plausible(crystal as u64 * num as u64 / den as u64) {
                return Some((hz, TscSource::Cpuid15));
            }
        }
    }
    let hypervisor = cpuid(1, 0)[2] & (1 << 31) != 0;
    if hypervisor {
        let max_hv = cpuid(0x4000_0000, 0)[0];
        if (0x4000_0010..0x4000_0100).contains(&max_hv) {
            let khz = cpuid(0x4000_0010, 0)[0];
            if let Some(hz) = plausible(khz as u64 * 1000) {
                return Some((hz, TscSource::HypervisorLeaf));
            }
        }
    }
    None
}

/// The last resort: 0x15 gives the ratio but no crystal, 0x16 the base frequency, which the TSC runs at
/// on the CPUs that report it this way (crystal = base * den / num, TSC = crystal * num / den = base).
pub(crate) fn tsc_hz_estimate(cpuid: impl Fn(u32, u32) -> [u32; 4]) -> Option<(u64, TscSource)> {
    let [max_basic, b, c, d] = cpuid(0, 0);
    let intel = [b, d, c] == [0x756e_6547, 0x4965_6e69, 0x6c65_746e];
    if !intel || max_basic < 0x16 {
        return None;
    }
    let [den, num, ..] = cpuid(0x15, 0);
    let mhz = cpuid(0x16, 0)[0] & 0xFFFF;
    if den == 0 || num == 0 {
        return None;
    }
    plausible(mhz as u64 * 1_000_000).map(|hz| (hz, TscSource::Cpuid16Estimate))
}

/// The PIT's read-back status byte for channel 0 after `0x30` (lobyte/hibyte, mode 0, binary) was
/// programmed: bits 5:4 = 11 (access), 3:1 = 000 (mode), 0 = 0 (binary); bits 7:6 (output, null count)
/// vary. An absent PIT reads 0xFF, which fails the check at once.
pub(crate) fn pit_status_ok(status: u8) -> bool {
    status & 0x3F == 0x30
}

/// Whether a PIT counter that has not moved for `unchanged` consecutive reads should be given up on:
/// a counting PIT (1.19 MHz) moves within a few reads on hardware and under emulation.
#[cfg(target_os = "none")]
pub(crate) const PIT_STUCK_READS: u32 = 100_000;

/// The CMOS RTC is there when status register D reads with its reserved bits 6:0 clear (bit 7 is
/// "valid RAM and time"); an absent RTC reads 0xFF.
pub(crate) fn rtc_present(status_d: u8) -> bool {
    status_d & 0x7F == 0 && status_d & 0x80 != 0
}

/// The RTC's periodic rate used for calibration: rate code 6 = 1024 Hz, counted over
/// [`RTC_PERIODS`] periods (~9.8 ms).
#[cfg(target_os = "none")]
pub(crate) const RTC_RATE_CODE: u8 = 6;
#[cfg(target_os = "none")]
pub(crate) const RTC_RATE_HZ: u64 = 1024;
#[cfg(target_os = "none")]
pub(crate) const RTC_PERIODS: u64 = 10;
/// The longest wait for one periodic flag, in TSC ticks (40 ms at 5 GHz, 200 ms at 1 GHz: dozens of
/// periods): an RTC whose periodic timer does not run is given up on quickly.
#[cfg(target_os = "none")]
pub(crate) const RTC_PERIOD_WAIT_TICKS: u64 = 200_000_000;

/// TSC ticks per second from `ticks` counted over `periods` RTC periods at `rate_hz`.
pub(crate) fn hz_from_periods(ticks: u64, periods: u64, rate_hz: u64) -> Option<u64> {
    if periods == 0 {
        return None;
    }
    plausible((ticks as u128 * rate_hz as u128 / periods as u128) as u64)
}

/// How many reads of status register A the VMM waits for "update in progress" to clear: an update
/// takes under 2 ms, far fewer reads than this on hardware.
#[cfg(target_os = "none")]
pub(crate) const RTC_UIP_READS: u32 = 100_000;

/// The RTC's date and time registers (binary already) as Unix seconds, or `None` when out of range.
pub(crate) fn unix_seconds(
    year: u64,
    month: u64,
    day: u64,
    hour: u64,
    min: u64,
    sec: u64,
) -> Option<u64> {
    if !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
        || hour > 23
        || min > 59
        || sec > 60
        || year < 1970
    {
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

/// A BCD register value as binary.
pub(crate) fn from_bcd(v: u8) -> u64 {
    (v & 0x0F) as u64 + ((v >> 4) as u64) * 10
}

/// One TSC calibration for every CPU of the VM. Each vCPU has its own platform, and each used to
/// calibrate on its first clock call: the vCPUs' clocks then ran at rates a few parts per thousand
/// apart (a guest sleep timed on one CPU and ended on another could end early), and two APs
/// calibrating at once both reprogrammed the one PIT under each other. Now the first CPU to need a
/// clock calibrates (the others that need one meanwhile wait for it), and every CPU takes its outcome,
/// failure included: one rate and one origin, so CLOCK_MONOTONIC agrees on every vCPU.
pub(crate) struct SharedCalibration {
    /// `IDLE`, `BUSY` (a CPU calibrates), `DONE` (the three values are set), `FAILED`.
    state: core::sync::atomic::AtomicU8,
    hz: core::sync::atomic::AtomicU64,
    unix_ns_at: core::sync::atomic::AtomicU64,
    tsc_at: core::sync::atomic::AtomicU64,
}

/// What a CPU that needs a clock does ([`SharedCalibration::get_or_claim`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Calibrated {
    /// (TSC Hz, Unix ns at `tsc_at`, `tsc_at`), measured by some CPU of the VM.
    Done(u64, u64, u64),
    /// No source offered a frequency (a CPU tried).
    Failed,
    /// Nobody has calibrated: the caller does, then [`SharedCalibration::publish`]es the outcome.
    Mine,
}

impl SharedCalibration {
    const IDLE: u8 = 0;
    const BUSY: u8 = 1;
    const DONE: u8 = 2;
    const FAILED: u8 = 3;

    pub const fn new() -> Self {
        use core::sync::atomic::{AtomicU64, AtomicU8};
        Self {
            state: AtomicU8::new(Self::IDLE),
            hz: AtomicU64::new(0),
            unix_ns_at: AtomicU64::new(0),
            tsc_at: AtomicU64::new(0),
        }
    }

    /// The VM's calibration; `Mine` to exactly one caller while none exists (the others wait for its
    /// [`publish`](Self::publish), calling `wait` between looks).
    pub fn get_or_claim(&self, mut wait: impl FnMut()) -> Calibrated {
        use core::sync::atomic::Ordering::{Acquire, Relaxed};
        loop {
            match self.state.load(Acquire) {
                Self::DONE => {
                    return Calibrated::Done(
                        self.hz.load(Relaxed),
                        self.unix_ns_at.load(Relaxed),
                        self.tsc_at.load(Relaxed),
                    )
                }
                Self::FAILED => return Calibrated::Failed,
                Self::IDLE => {
                    if self
                        .state
                        .compare_exchange(Self::IDLE, Self::BUSY, Acquire, Relaxed)
                        .is_ok()
                    {
                        return Calibrated::Mine;
                    }
                }
                _ => wait(),
            }
        }
    }

    /// The claimer's outcome (`None`: no source), for every CPU from now on.
    pub fn publish(&self, outcome: Option<(u64, u64, u64)>) {
        use core::sync::atomic::Ordering::{Relaxed, Release};
        match outcome {
            Some((hz, unix_ns_at, tsc_at)) => {
                self.hz.store(hz, Relaxed);
                self.unix_ns_at.store(unix_ns_at, Relaxed);
                self.tsc_at.store(tsc_at, Relaxed);
                self.state.store(Self::DONE, Release);
            }
            None => self.state.store(Self::FAILED, Release),
        }
    }
}

/// How a CPU waits in the VMM for a kick (another vCPU's host IPI: a halt nothing of the guest's own
/// can end, an off vCPU's wait for a STARTUP).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum IdleWait {
    /// Arm the host one-shot for the time limit's deadline (TSC) first, then halt: the wait ends there
    /// at the latest, whatever spent the one-shot before (a guest deadline the guest cannot take, a
    /// one-shot that fired early against the TSC). Armed again at every wait.
    Until(u64),
    /// No time limit: halt until any host interrupt.
    ForKick,
    /// The limit has passed: do not wait (the caller looks at the limit and stops).
    NoWait,
}

/// The wait of [`IdleWait`] with the time limit's deadline `limit`, `now` reading the TSC (only with a
/// limit). Without this, a CPU whose one-shot was spent waited for kicks only: `smp mode=spin-forever`
/// (the other vCPUs spinning, the boot vCPU halted with interrupts off) ran past its time limit until
/// the host killed it.
pub(crate) fn idle_wait(limit: Option<u64>, now: impl FnOnce() -> u64) -> IdleWait {
    match limit {
        None => IdleWait::ForKick,
        Some(l) if now() < l => IdleWait::Until(l),
        Some(_) => IdleWait::NoWait,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A wait in the VMM always has the time limit armed while it has not passed, at every wait (the
    /// one-shot spent on anything earlier cannot leave it waiting for kicks only), never past it.
    #[test]
    fn an_idle_wait_ends_at_the_time_limit_every_time() {
        assert_eq!(
            idle_wait(None, || panic!("no TSC read without a limit")),
            IdleWait::ForKick
        );
        for now in [0, 999] {
            assert_eq!(idle_wait(Some(1000), || now), IdleWait::Until(1000));
        }
        assert_eq!(idle_wait(Some(1000), || 1000), IdleWait::NoWait);
        assert_eq!(idle_wait(Some(1000), || u64::MAX), IdleWait::NoWait);
    }

    #[test]
    fn one_cpu_calibrates_and_every_cpu_takes_its_outcome() {
        let s = SharedCalibration::new();
        assert_eq!(
            s.get_or_claim(|| panic!("nobody to wait for")),
            Calibrated::Mine
        );
        s.publish(Some((2_600_000_000, 7, 9)));
        assert_eq!(s.get_or_claim(|| {}), Calibrated::Done(2_600_000_000, 7, 9));
        let f = SharedCalibration::new();
        assert_eq!(f.get_or_claim(|| {}), Calibrated::Mine);
        f.publish(None);
        assert_eq!(
            f.get_or_claim(|| {}),
            Calibrated::Failed,
            "a failure is shared too"
        );
    }

    #[test]
    fn cpus_asking_at_once_calibrate_once_and_agree() {
        // Four CPUs' first clock calls at once: one claims (and calibrates), the others wait for it;
        // all end with the same values (two PIT calibrations at once corrupted each other).
        use std::sync::atomic::{AtomicU32, Ordering};
        use std::sync::Arc;
        for _ in 0..100 {
            let s = Arc::new(SharedCalibration::new());
            let claims = Arc::new(AtomicU32::new(0));
            let hs: std::vec::Vec<_> = (0..4u64)
                .map(|cpu| {
                    let (s, claims) = (Arc::clone(&s), Arc::clone(&claims));
                    std::thread::spawn(move || loop {
                        match s.get_or_claim(std::thread::yield_now) {
                            Calibrated::Mine => {
                                claims.fetch_add(1, Ordering::SeqCst);
                                s.publish(Some((1_000_000 + cpu, 1, 2)));
                            }
                            other => return other,
                        }
                    })
                })
                .collect();
            let got: std::vec::Vec<Calibrated> =
                hs.into_iter().map(|h| h.join().unwrap()).collect();
            assert_eq!(claims.load(Ordering::SeqCst), 1);
            assert!(got.iter().all(|g| *g == got[0]), "{got:?}");
        }
    }

    const INTEL: [u32; 3] = [0x756e_6547, 0x6c65_746e, 0x4965_6e69]; // ebx, ecx, edx
    const AMD: [u32; 3] = [0x6874_7541, 0x444d_4163, 0x6974_6e65];

    /// A CPUID model: the vendor, max basic leaf and a few leaves.
    fn model(
        vendor: [u32; 3],
        max: u32,
        leaves: &'static [(u32, [u32; 4])],
    ) -> impl Fn(u32, u32) -> [u32; 4] {
        move |leaf, _| {
            if leaf == 0 {
                return [max, vendor[0], vendor[1], vendor[2]];
            }
            leaves
                .iter()
                .find(|(l, _)| *l == leaf)
                .map(|(_, r)| *r)
                .unwrap_or([0; 4])
        }
    }

    #[test]
    fn every_source_names_itself_in_the_boot_line() {
        use TscSource::*;
        let all = [Cpuid15, Cpuid16Estimate, HypervisorLeaf, Pit, RtcPeriodic];
        for (i, a) in all.iter().enumerate() {
            assert!(!a.describe().is_empty());
            assert!(all[i + 1..].iter().all(|b| b.describe() != a.describe()));
        }
    }

    #[test]
    fn intel_leaf_0x15_with_crystal_wins() {
        // 24 MHz crystal, ratio 2/176 -> 2.112 GHz.
        let c = model(
            INTEL,
            0x16,
            &[(0x15, [2, 176, 24_000_000, 0]), (0x16, [3000, 0, 0, 0])],
        );
        assert_eq!(
            tsc_hz_from_cpuid(c),
            Some((2_112_000_000, TscSource::Cpuid15))
        );
    }

    #[test]
    fn intel_without_crystal_is_only_an_estimate_from_0x16() {
        let c = model(
            INTEL,
            0x16,
            &[(0x15, [2, 176, 0, 0]), (0x16, [3000, 0, 0, 0])],
        );
        assert_eq!(tsc_hz_from_cpuid(&c), None);
        assert_eq!(
            tsc_hz_estimate(&c),
            Some((3_000_000_000, TscSource::Cpuid16Estimate))
        );
        // 0x16 without a ratio in 0x15 is not even an estimate.
        let c = model(INTEL, 0x16, &[(0x16, [3500, 3500, 100, 0])]);
        assert_eq!(tsc_hz_estimate(&c), None);
        // Below the maximum basic leaf, the leaves are not read.
        let c = model(
            INTEL,
            0x14,
            &[(0x15, [2, 176, 24_000_000, 0]), (0x16, [3000, 0, 0, 0])],
        );
        assert_eq!(tsc_hz_from_cpuid(&c), None);
        assert_eq!(tsc_hz_estimate(&c), None);
    }

    #[test]
    fn amd_ignores_the_intel_leaves_and_junk_is_refused() {
        // TCG's AMD models return junk in 0x15/0x16: never taken.
        let c = model(
            AMD,
            0x16,
            &[(0x15, [1, 1, 1_000_000_000, 0]), (0x16, [9999, 0, 0, 0])],
        );
        assert_eq!(tsc_hz_from_cpuid(&c), None);
        assert_eq!(tsc_hz_estimate(&c), None);
        // Implausible values on Intel: 0x15 giving 10 Hz.
        let c = model(INTEL, 0x16, &[(0x15, [100, 1, 1000, 0])]);
        assert_eq!(tsc_hz_from_cpuid(c), None);
    }

    #[test]
    fn the_hypervisor_leaf_needs_the_hypervisor_bit_and_the_range() {
        let leaves: &[(u32, [u32; 4])] = &[
            (1, [0, 0, 1 << 31, 0]),
            (0x4000_0000, [0x4000_0010, 0, 0, 0]),
            (0x4000_0010, [2_500_000, 1_000_000, 0, 0]),
        ];
        assert_eq!(
            tsc_hz_from_cpuid(model(AMD, 0xd, leaves)),
            Some((2_500_000_000, TscSource::HypervisorLeaf))
        );
        // No hypervisor bit: not read.
        let no_bit: &[(u32, [u32; 4])] = &[
            (0x4000_0000, [0x4000_0010, 0, 0, 0]),
            (0x4000_0010, [2_500_000, 0, 0, 0]),
        ];
        assert_eq!(tsc_hz_from_cpuid(model(AMD, 0xd, no_bit)), None);
        // Range that stops below the leaf, or garbage (Intel CPUs echo the highest basic leaf).
        let short: &[(u32, [u32; 4])] = &[
            (1, [0, 0, 1 << 31, 0]),
            (0x4000_0000, [0x4000_0001, 0, 0, 0]),
            (0x4000_0010, [2_500_000, 0, 0, 0]),
        ];
        assert_eq!(tsc_hz_from_cpuid(model(AMD, 0xd, short)), None);
        let echo: &[(u32, [u32; 4])] = &[
            (1, [0, 0, 1 << 31, 0]),
            (0x4000_0000, [0xd, 0, 0, 0]),
            (0x4000_0010, [0xd, 0, 0, 0]),
        ];
        assert_eq!(tsc_hz_from_cpuid(model(AMD, 0xd, echo)), None);
    }

    #[test]
    fn absent_devices_read_all_ones_and_are_detected_at_once() {
        assert!(!pit_status_ok(0xFF));
        assert!(pit_status_ok(0x30));
        assert!(pit_status_ok(0xB0)); // output high
        assert!(pit_status_ok(0x70)); // null count
        assert!(!pit_status_ok(0x34)); // mode 2: not what was programmed
        assert!(!rtc_present(0xFF));
        assert!(rtc_present(0x80));
        assert!(!rtc_present(0x00));
    }

    #[test]
    fn rtc_periods_give_the_frequency() {
        // 10 periods of 1/1024 s at 2 GHz.
        assert_eq!(hz_from_periods(19_531_250, 10, 1024), Some(2_000_000_000));
        assert_eq!(hz_from_periods(5, 10, 1024), None);
        assert_eq!(hz_from_periods(5, 0, 1024), None);
    }

    #[test]
    fn rtc_dates_become_unix_seconds() {
        assert_eq!(unix_seconds(1970, 1, 1, 0, 0, 0), Some(0));
        assert_eq!(unix_seconds(2025, 1, 1, 0, 0, 0), Some(1_735_689_600));
        assert_eq!(unix_seconds(2024, 2, 29, 12, 30, 15), Some(1_709_209_815));
        assert_eq!(unix_seconds(2025, 13, 1, 0, 0, 0), None);
        assert_eq!(unix_seconds(2165, 165, 165, 165, 165, 165), None); // 0xFF in BCD
        assert_eq!(from_bcd(0x59), 59);
    }
}
