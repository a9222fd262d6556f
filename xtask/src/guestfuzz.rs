//! `cargo xtask guestfuzz [--soak] [--seeds N] [--backend B ...]`: boots the guest-side fuzzer
//! (`payloads/guestfuzz`) many times per backend and says what it reached.
//!
//! Each backend (svm, vmx, riscv unless `--backend` names some) runs `N` seeds (default 600, 20,000
//! with `--soak`), half in *safe* mode (long boots that must end with status 0 and
//! `guestfuzz: done`) and half in *wild* mode (the fuzzer announces each seed, so when a seed stops the
//! VM the next boot resumes after it). It prints how many seeds ran, in how many boots, the distinct exit
//! reasons the VMM counted (`libvmm.stats=1`) and the stop codes reached, and fails on any problem:
//! a run without a trustworthy result, a host time-out (the VMM hung: guest hangs end at
//! `libvmm.timeout_ms`), stop code 126 (the VMM faulted) or one the ABI does not list, a stop that blames
//! the VMM for what the guest did (100-103: the guest must get an answer, or a guest stop 96-99), a safe boot that
//! did not end cleanly, or a `guestfuzz: FAIL` line (an answer outside the ABI).
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use libvmm_abi::stop::{StopCode, HOST_TIMED_OUT, PAYLOAD_MAX};

use crate::args::Args;
use crate::backend::Backend;
use crate::build::build_image;
use crate::run::{boot, BootOptions};

/// Seeds per backend without and with `--soak`.
const QUICK_SEEDS: u64 = 600;
const SOAK_SEEDS: u64 = 20_000;

/// Whether the ABI (docs/hypercall-abi.md, section 5) lists `code` as a way a VM may stop because of
/// its guest: a payload status, or one of the VMM's codes, never 126 (a VMM fault).
pub fn abi_listed(code: u8) -> bool {
    code <= PAYLOAD_MAX
        || (StopCode::GuestMemoryViolation as u8..=StopCode::ConsistencyCheck as u8).contains(&code)
}

/// What the runs of one backend reached.
#[derive(Default)]
struct Reach {
    seeds: u64,
    safe_boots: u64,
    wild_boots: u64,
    exits: BTreeMap<String, u64>,
    stops: BTreeMap<u8, u64>,
    /// One stop reason per code, as an example.
    reasons: BTreeMap<u8, String>,
    problems: Vec<String>,
}

/// One boot's console facts.
struct Boot {
    code: Result<u8, String>,
    reason: String,
    last_seed: Option<u64>,
    done: bool,
    console: String,
    command: String,
}

fn boot_once(
    backend: Backend,
    image: &std::path::Path,
    cmdline: &str,
    limit: Duration,
) -> Result<Boot, String> {
    let o = BootOptions::new(cmdline, limit);
    let out = boot(backend, image, &o)?;
    let console = out.output.replace('\r', "");
    let last_seed = console
        .lines()
        .rev()
        .filter_map(|l| l.strip_prefix("guestfuzz: seed "))
        .find_map(|r| r.split_whitespace().next()?.parse().ok());
    Ok(Boot {
        code: out.verdict.result,
        reason: out.verdict.reason,
        last_seed,
        done: console.contains("guestfuzz: done "),
        console,
        command: out.command,
    })
}

impl Reach {
    /// Records a boot's exit reasons, stop code and problems.
    fn record(&mut self, b: &Boot, what: &str) {
        for l in b.console.lines() {
            if let Some(r) = l.strip_prefix("libvmm: stats: exit ") {
                if let Some((name, n)) = r.rsplit_once(' ') {
                    *self.exits.entry(name.to_string()).or_default() +=
                        n.parse::<u64>().unwrap_or(0);
                }
            }
            if l.contains("guestfuzz: FAIL") || l.starts_with("libvmm: VMM") {
                self.problems.push(format!("{what}: {l}"));
            }
        }
        match &b.code {
            Ok(c) if *c == HOST_TIMED_OUT => self.problems.push(format!(
                "{what}: host time-out (the VMM hung?): {}\n  rerun: {}",
                b.reason, b.command
            )),
            Ok(c) => {
                *self.stops.entry(*c).or_default() += 1;
                self.reasons.entry(*c).or_insert_with(|| b.reason.clone());
                if !abi_listed(*c) {
                    self.problems.push(format!(
                        "{what}: stop {c} ({}) is not a stop the ABI lists\n  rerun: {}",
                        b.reason, b.command
                    ));
                } else if *c > StopCode::GuestError as u8 {
                    // Listed, but the VMM's own failure (100: the hardware refused the state the VMM
                    // let the guest reach; 101-103: boot time): a guest action must be answered, or
                    // stop with a guest code (96-99).
                    self.problems.push(format!(
                        "{what}: stop {c} ({}) blames the VMM for a guest action\n  rerun: {}",
                        b.reason, b.command
                    ));
                }
            }
            Err(e) => self.problems.push(format!(
                "{what}: no trustworthy result: {e}\n  rerun: {}",
                b.command
            )),
        }
    }
}

/// Runs `seeds` seeds on `backend`, half safe, half wild.
fn fuzz_backend(backend: Backend, seeds: u64, started: Instant) -> Result<Reach, String> {
    let image = build_image(backend, "guestfuzz")?;
    let vmx = backend == Backend::Vmx;
    let (chunk, limit) = if vmx {
        (1000, Duration::from_secs(180))
    } else {
        (2000, Duration::from_secs(120))
    };
    let mut r = Reach::default();
    let safe = seeds / 2;
    let mut s = 0;
    while s < safe {
        let n = chunk.min(safe - s);
        let cmdline =
            format!("seed={s} seeds={n} libvmm.stats=1 libvmm.timeout_ms=90000 libvmm.mem=8M");
        let b = boot_once(backend, &image, &cmdline, limit)?;
        let what = format!("{backend} safe {cmdline}");
        r.record(&b, &what);
        r.safe_boots += 1;
        if b.code != Ok(0) || !b.done {
            r.problems.push(format!(
                "{what}: a safe run must end with `guestfuzz: done` and status 0, got {:?} ({})",
                b.code, b.reason
            ));
        }
        r.seeds += n;
        s += n;
    }
    // Wild seeds start far from the safe ones (a seed picks the same case in either mode).
    let (first, end) = (1_000_000, 1_000_000 + seeds - safe);
    let mut s = first;
    while s < end {
        let n = chunk.min(end - s);
        let cmdline = format!(
            "mode=wild seed={s} seeds={n} libvmm.stats=1 libvmm.timeout_ms=3000 libvmm.mem=8M"
        );
        let b = boot_once(backend, &image, &cmdline, limit)?;
        let what = format!("{backend} wild {cmdline}");
        r.record(&b, &what);
        r.wild_boots += 1;
        let next = if b.done {
            s + n
        } else {
            match b.last_seed {
                Some(l) if l >= s => l + 1,
                // The VM stopped before the first seed: a problem, counted; skip that seed.
                _ => {
                    r.problems
                        .push(format!("{what}: stopped before its first seed"));
                    s + 1
                }
            }
        };
        r.seeds += next - s;
        s = next;
        if r.wild_boots % 25 == 0 {
            println!(
                "guestfuzz: {backend}: {} seeds, {} boots, {:.0} s",
                r.seeds,
                r.safe_boots + r.wild_boots,
                started.elapsed().as_secs_f64()
            );
        }
    }
    Ok(r)
}

pub fn guestfuzz_cmd(a: &Args) -> Result<u8, String> {
    let soak = a.rest.iter().any(|r| r == "--soak");
    let seeds = match a.rest.iter().position(|r| r == "--seeds") {
        Some(i) => a
            .rest
            .get(i + 1)
            .and_then(|v| v.parse::<u64>().ok())
            .filter(|n| *n >= 2)
            .ok_or("--seeds needs a number of seeds (at least 2)")?,
        None if soak => SOAK_SEEDS,
        None => QUICK_SEEDS,
    };
    let backends: Vec<Backend> = if !a.backend_given {
        vec![Backend::Svm, Backend::Vmx, Backend::Riscv]
    } else {
        vec![a.backend]
    };
    let started = Instant::now();
    let mut problems = 0;
    for b in backends {
        let r = fuzz_backend(b, seeds, started)?;
        let exits: Vec<String> = r.exits.iter().map(|(k, v)| format!("{k} {v}")).collect();
        let stops: Vec<String> = r.stops.iter().map(|(c, n)| format!("{c} x{n}")).collect();
        println!(
            "guestfuzz {b}: {} seeds in {} boots ({} safe, {} wild); {} distinct exit reasons ({}); \
             {} distinct stop codes ({}); {} problems",
            r.seeds,
            r.safe_boots + r.wild_boots,
            r.safe_boots,
            r.wild_boots,
            r.exits.len(),
            exits.join(", "),
            r.stops.len(),
            stops.join(", "),
            r.problems.len()
        );
        for (c, reason) in &r.reasons {
            println!("  stop {c}: e.g. {reason}");
        }
        for p in &r.problems {
            println!("  PROBLEM {p}");
        }
        problems += r.problems.len();
    }
    println!(
        "guestfuzz: {:.0} s, {problems} problems",
        started.elapsed().as_secs_f64()
    );
    Ok(if problems == 0 { 0 } else { 1 })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_abi_lists_payload_statuses_and_the_vmm_codes_but_never_a_vmm_fault() {
        for c in 0..=95 {
            assert!(abi_listed(c));
        }
        for c in 96..=103 {
            assert!(abi_listed(c));
        }
        assert!(!abi_listed(StopCode::VmmPanic as u8));
        assert!(!abi_listed(104));
        assert!(!abi_listed(HOST_TIMED_OUT));
    }
}
