//! `cargo xtask fuzz [--soak] [--secs N] [--target NAME]...`: builds the fuzz crate (`fuzz/`, profile
//! `fuzz`: optimised, panics unwind so each input's panic is caught and saved) and runs every target.
//!
//! Without `--soak` each target runs a fixed number of executions from a fixed seed ([`CI_EXECS`]: the
//! same inputs every time, a few seconds in all), which is what `cargo xtask test` runs. `--soak` runs
//! each target for `--secs` seconds (default [`SOAK_SECS`]) and prints executions, rate and crashes per
//! target. Crashing inputs are saved under `target/fuzz-crashes/` (replay one with
//! `target/fuzz/libvmm-fuzz --replay FILE --target NAME`).
use std::process::Command;

use crate::cmd::{cargo, status, target_dir};

/// Executions per target in CI (the slowest target, `dt`, runs about 100 000 per second: about 12 s
/// for all targets).
pub const CI_EXECS: u64 = 500_000;
/// Seconds per target in a soak, unless `--secs` says otherwise.
pub const SOAK_SECS: u64 = 300;

fn build() -> Result<std::path::PathBuf, String> {
    let mut c = cargo();
    c.args(["build", "--quiet", "--profile", "fuzz", "-p", "libvmm-fuzz"]);
    status(c, "building the fuzz targets")?;
    Ok(target_dir().join("fuzz").join("libvmm-fuzz"))
}

/// The fuzz run's arguments from `cargo xtask fuzz`'s own.
fn run_args(rest: &[String]) -> Result<Vec<String>, String> {
    let mut soak = false;
    let mut secs = SOAK_SECS;
    let mut out = Vec::new();
    let mut it = rest.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--soak" => soak = true,
            "--secs" => {
                let v = it.next().ok_or("--secs needs a value")?;
                secs = v
                    .parse()
                    .ok()
                    .filter(|s| *s > 0)
                    .ok_or_else(|| format!("--secs needs a number of seconds, not {v}"))?;
                soak = true;
            }
            "--target" => {
                out.push(a.clone());
                out.push(it.next().ok_or("--target needs a value")?.clone());
            }
            other => return Err(format!("fuzz: unknown argument {other}")),
        }
    }
    if soak {
        out.extend(["--secs".into(), secs.to_string()]);
    } else {
        out.extend(["--execs".into(), CI_EXECS.to_string()]);
    }
    let crashes = target_dir().join("fuzz-crashes");
    out.extend(["--crash-dir".into(), crashes.display().to_string()]);
    Ok(out)
}

pub fn fuzz_cmd(rest: &[String]) -> Result<u8, String> {
    let args = run_args(rest)?;
    let bin = build()?;
    let mut c = Command::new(bin);
    c.args(&args);
    let s = c
        .status()
        .map_err(|e| format!("libvmm-fuzz: cannot start: {e}"))?;
    Ok(if s.success() { 0 } else { 1 })
}

/// `cargo xtask test`'s fuzz steps: the fuzz crate's clippy and unit tests (it is not a default
/// member, so the root-level steps skip it), then the CI run of every target.
pub fn test_steps() -> Vec<(String, Command)> {
    let mut clippy = cargo();
    clippy.args([
        "clippy",
        "--quiet",
        "--profile",
        "fuzz",
        "-p",
        "libvmm-fuzz",
        "-p",
        "libvmm",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]);
    let mut tests = cargo();
    tests.args(["test", "--quiet", "-p", "libvmm-fuzz"]);
    let mut run = cargo();
    run.args([
        "run",
        "--quiet",
        "--profile",
        "fuzz",
        "-p",
        "libvmm-fuzz",
        "--",
    ]);
    run.args(run_args(&[]).unwrap_or_default());
    vec![
        ("clippy (fuzz crate, libvmm with fuzzing)".into(), clippy),
        ("fuzz engine unit tests".into(), tests),
        (
            format!("fuzz: every target, {CI_EXECS} executions each (cargo xtask fuzz)"),
            run,
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(a: &[&str]) -> Vec<String> {
        a.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn ci_is_a_fixed_count_and_soak_a_time() {
        let ci = run_args(&[]).unwrap();
        assert_eq!(ci[..2], s(&["--execs", &CI_EXECS.to_string()]));
        let soak = run_args(&s(&["--soak", "--target", "dt"])).unwrap();
        assert_eq!(
            soak[..4],
            s(&["--target", "dt", "--secs", &SOAK_SECS.to_string()])
        );
        assert_eq!(
            run_args(&s(&["--secs", "9"])).unwrap()[..2],
            s(&["--secs", "9"])
        );
        assert!(run_args(&s(&["--secs", "0"])).is_err());
        assert!(run_args(&s(&["--bogus"])).is_err());
    }
}
