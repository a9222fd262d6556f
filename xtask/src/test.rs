//! `cargo xtask test`: host unit tests, formatting, clippy (host and bare-metal targets), image checks,
//! and every boot case of `cases` (every payload on every backend that boots here), each checked for its
//! expected console lines and its result as `run.rs` decides it. Ends with `N passed, N failed`.
use std::time::{Duration, Instant};

use object::{Object, ObjectSection};

use crate::args::Args;
use crate::backend::Backend;
use crate::build::{build_image, PAYLOADS};
use crate::cases::Case;
use crate::cmd::{cargo, run_bounded};
use crate::run::{boot, BootOptions};

use libvmm_abi::stop::HOST_TIMED_OUT;

struct Tally {
    passed: u32,
    failed: u32,
}

impl Tally {
    fn record(&mut self, name: &str, started: Instant, r: Result<(), String>) {
        match r {
            Ok(()) => {
                self.passed += 1;
                println!("PASS {name} ({:.1}s)", started.elapsed().as_secs_f64());
            }
            Err(e) => {
                self.failed += 1;
                println!("FAIL {name} ({:.1}s): {e}", started.elapsed().as_secs_f64());
            }
        }
    }
}

fn step(c: std::process::Command, what: &str) -> Result<(), String> {
    // Loom can hang instead of failing on a broken protocol: every step has a time limit.
    let f = run_bounded(c, Duration::from_secs(900), false)?;
    if f.timed_out {
        return Err(format!("{what} did not finish within 900 s"));
    }
    if f.code == Some(0) {
        Ok(())
    } else {
        let tail: Vec<&str> = f.output.lines().rev().take(40).collect();
        Err(format!(
            "{what} exited {:?}\n{}",
            f.code,
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        ))
    }
}

/// Host-side steps: (name, command).
fn host_steps() -> Vec<(String, std::process::Command)> {
    let mut steps = Vec::new();
    let mut c = cargo();
    c.args(["test", "--quiet"]);
    steps.push(("host unit tests (cargo test)".to_string(), c));
    // The guest runtime's host-testable logic (the file system), on the host (not a default member).
    let mut c = cargo();
    c.args(["test", "--quiet", "-p", "libvmm-guest", "--lib"]);
    steps.push(("host unit tests (libvmm-guest)".to_string(), c));
    // The guest runtime's scheduler bookkeeping (the runtime crate itself does not link on the host).
    let mut c = cargo();
    c.args(["test", "--quiet", "-p", "libvmm-guest", "--test", "runq"]);
    steps.push(("guest scheduler tests (libvmm-guest runq)".to_string(), c));
    let mut c = cargo();
    c.args(["fmt", "--all", "--", "--check"]);
    steps.push(("cargo fmt --check".to_string(), c));
    let mut c = cargo();
    c.args(["clippy", "--quiet", "--all-targets", "--", "-D", "warnings"]);
    steps.push(("clippy (host crates)".to_string(), c));
    // Model check of the TDX Dynamic PAMT protocol over all interleavings (loom), in its own target
    // directory: the `--cfg loom` build would otherwise evict the normal build cache.
    let mut c = cargo();
    c.env("RUSTFLAGS", "--cfg loom")
        .env("CARGO_TARGET_DIR", crate::cmd::target_dir().join("loom"))
        .args([
            "test",
            "-q",
            "-p",
            "libvmm",
            "--lib",
            "--release",
            "tdx::loom_tests",
        ]);
    steps.push(("loom model check (TDX Dynamic PAMT)".to_string(), c));
    steps.extend(crate::fuzz::test_steps());
    for backend in Backend::ALL {
        let mut c = cargo();
        c.args([
            "clippy",
            "--quiet",
            "--target",
            backend.target(),
            "-p",
            "libvmm-image",
            "--features",
            backend.feature(),
        ]);
        for p in PAYLOADS {
            c.args(["-p", p]);
        }
        c.args(["--", "-D", "warnings"]);
        steps.push((format!("clippy ({backend} image and payloads)"), c));
    }
    // The std payloads and the runtime's hermit half, on both hermit targets (std built from source).
    for target in ["x86_64-unknown-hermit", "riscv64gc-unknown-hermit"] {
        let mut c = cargo();
        c.env("RUSTC_BOOTSTRAP", "1").args([
            "clippy",
            "--quiet",
            "-Zbuild-std=std,panic_abort",
            "-Zbuild-std-features=compiler-builtins-mem",
            "--release",
            "--target",
            target,
            "-p",
            "std-demo",
            "-p",
            "std-hello",
            "-p",
            "std-smp",
            "-p",
            "libvmm-guest",
            "--",
            "-D",
            "warnings",
        ]);
        steps.push((
            format!("clippy ({target}: std-demo, std-hello, std-smp, libvmm-guest)"),
            c,
        ));
    }
    steps
}

/// The host time limit of a case that sets none.
fn default_limit(backend: Backend) -> Duration {
    Duration::from_secs(if backend == Backend::Vmx { 60 } else { 30 })
}

fn check_case(image: &std::path::Path, case: &Case) -> Result<(), String> {
    let dtb = case.dtb.map(|d| crate::cmd::root().join(d));
    let o = BootOptions {
        dtb: dtb.as_deref(),
        cpu: case.cpu,
        machine: case.machine,
        uefi: case.uefi,
        grub_iso: case.grub_iso,
        cpus: case.cpus,
        ..BootOptions::new(
            case.cmdline,
            case.limit.unwrap_or(default_limit(case.backend)),
        )
    };
    let out = crate::run::with_machine_memory(case.mem_mb, || boot(case.backend, image, &o))?;
    let v = &out.verdict;
    let console = out.output.replace('\r', "");
    let mut problems = Vec::new();
    let describe = |c: u8| {
        if c == HOST_TIMED_OUT {
            "a host time-out".to_string()
        } else {
            format!("stop code {c}")
        }
    };
    match &v.result {
        Ok(c) if *c == case.code => {}
        Ok(c) => problems.push(format!(
            "{}, expected {} ({})",
            describe(*c),
            describe(case.code),
            v.reason
        )),
        Err(e) => problems.push(format!("no trustworthy result: {e}")),
    }
    if let Some(r) = case.reason {
        if !v.timed_out && v.reason != r {
            problems.push(format!("stop reason {:?}, expected {r:?}", v.reason));
        }
    }
    for e in &case.expect {
        if !console.contains(e.as_str()) {
            problems.push(format!("missing line {e:?}"));
        }
    }
    for f in &case.forbid {
        if console.contains(f.as_str()) {
            problems.push(format!("forbidden text {f:?}"));
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(failure_report(&problems.join("; "), &out.command, &console))
    }
}

/// How a failed boot case is reported: what went wrong, the emulator command line that reruns it alone
/// (the image, ISO and bochsrc it names stay in `target/`), and the last [`TAIL_LINES`] console lines.
fn failure_report(problems: &str, command: &str, console: &str) -> String {
    let lines: Vec<&str> = console.lines().collect();
    let tail = &lines[lines.len().saturating_sub(TAIL_LINES)..];
    format!(
        "{problems}\n--- rerun alone ---\n{command}\n--- console (last {} lines) ---\n{}",
        tail.len(),
        tail.join("\n")
    )
}

/// Console lines shown for a failed case.
const TAIL_LINES: usize = 20;

pub fn test_cmd(a: &Args) -> Result<u8, String> {
    // `--cpus N`: every boot case that has no CPU count of its own boots on an N-CPU machine.
    let cpus = crate::args::vmm_cpus(a.cpus)?;
    if cpus > 1 {
        println!(
            "boot cases on {cpus}-CPU machines (--cpus {cpus}), except those written for a count of \
             their own or for one CPU (listed at the end); the host steps, bench --check, the gdb and \
             Bochs debugger runs and the cargo-runner checks keep their own machines"
        );
    }
    // (the case's own count, the line saying why it kept it)
    let mut kept: Vec<(u32, String)> = Vec::new();
    let all = Instant::now();
    let mut t = Tally {
        passed: 0,
        failed: 0,
    };
    for (name, c) in host_steps() {
        let s = Instant::now();
        println!("---- {name}");
        let r = step(c, &name);
        t.record(&name, s, r);
    }
    // The promises of SPECIFICATION.md (deterministic counts, not timings).
    let s = Instant::now();
    println!("---- bench --check (SPECIFICATION.md)");
    t.record(
        "bench --check (SPECIFICATION.md)",
        s,
        crate::bench::check().map(|_| ()),
    );
    // A payload and the VMM under gdb through QEMU's stub (`run --gdb`), in batch mode.
    for backend in [Backend::Svm, Backend::Riscv] {
        let name = format!("gdb batch ({backend} hello)");
        let s = Instant::now();
        println!("---- {name}");
        t.record(&name, s, crate::gdb::batch_test(backend));
    }
    let name = "Bochs debugger (vmx hello)";
    let s = Instant::now();
    println!("---- {name}");
    t.record(name, s, crate::gdb::bochs_debugger_test());
    // Every backend's image boots on an emulator here (TDX's stops at SEAM-module detection).
    for backend in Backend::ALL {
        let cases = crate::cases::all(backend);
        // The no_std payloads, then the std one (built once per target with -Zbuild-std).
        for payload in PAYLOADS
            .into_iter()
            .chain(["std-demo", "std-smp"])
            .filter(|p| cases.iter().any(|c| c.payload == *p))
        {
            // One image per distinct set of build-time files among the payload's cases.
            let mut file_sets: Vec<&[&str]> = Vec::new();
            for c in cases.iter().filter(|c| c.payload == payload) {
                if !file_sets.contains(&c.files) {
                    file_sets.push(c.files);
                }
            }
            for files in file_sets {
                let s = Instant::now();
                let what = match files {
                    [] => format!("{backend}: build {payload}"),
                    f => format!("{backend}: build {payload} --file {}", f.join(" --file ")),
                };
                println!("---- {what}");
                let image = match image_with_files(backend, payload, files) {
                    Ok(i) => i,
                    Err(e) => {
                        t.record(&what, s, Err(e));
                        continue;
                    }
                };
                if payload == "hello" {
                    t.record(
                        &format!("{backend}: image boot headers"),
                        s,
                        check_image_headers(backend, &image),
                    );
                }
                for written in cases
                    .iter()
                    .filter(|c| c.payload == payload && c.files == files)
                {
                    let case = written.on_cpus(cpus);
                    let name = crate::cases::run_name(written, &case);
                    if let Some(line) = crate::cases::kept_line(written, cpus) {
                        kept.push((written.cpus, line));
                    }
                    let s = Instant::now();
                    println!("---- {name}");
                    let r = check_case(&image, &case);
                    t.record(&name, s, r);
                }
            }
        }
    }
    // Ordinary std crates through the cargo runner: runner-demo and the real-world suites.
    for (name, check) in crate::hermit_tests::checks() {
        let s = Instant::now();
        println!("---- {name}");
        t.record(&name, s, check());
    }
    if cpus > 1 {
        kept.sort_by_key(|(n, _)| *n);
        println!("boot cases that kept their CPU count under --cpus {cpus}:");
        for (_, line) in &kept {
            println!("  {line}");
        }
    }
    println!("total wall time {:.0} s", all.elapsed().as_secs_f64());
    println!("{} passed, {} failed", t.passed, t.failed);
    Ok(if t.failed == 0 { 0 } else { 1 })
}

/// The image of `payload` with the build-time `files` of a case (`HOST_PATH:GUEST_PATH`, host paths
/// from the repository root).
fn image_with_files(
    backend: Backend,
    payload: &str,
    files: &[&str],
) -> Result<std::path::PathBuf, String> {
    if files.is_empty() {
        return build_image(backend, payload);
    }
    let specs = files
        .iter()
        .map(|f| crate::files::FileSpec::parse(f))
        .collect::<Result<Vec<_>, _>>()?;
    crate::build::build_image_from(
        backend,
        crate::build::Source::Payload(payload),
        &specs,
        &crate::cmd::root(),
    )
}

/// Checks the x86 boot headers: a PVH note (Xen, type 18) in a PT_NOTE segment and a multiboot2 header
/// in the first 32 KiB of the file. RISC-V images have neither (OpenSBI jumps to the entry).
fn check_image_headers(backend: Backend, image: &std::path::Path) -> Result<(), String> {
    if backend == Backend::Riscv {
        return Ok(());
    }
    let data = std::fs::read(image).map_err(|e| e.to_string())?;
    let elf = object::File::parse(&*data).map_err(|e| e.to_string())?;
    let note = elf
        .section_by_name(".note.pvh")
        .ok_or("no .note.pvh section")?;
    let d = note.data().map_err(|e| e.to_string())?;
    let u32_at = |o: usize| u32::from_le_bytes(d[o..o + 4].try_into().unwrap());
    if d.len() < 20 || u32_at(0) != 4 || u32_at(8) != 18 || &d[12..16] != b"Xen\0" {
        return Err("the PVH note is not a Xen note of type 18".into());
    }
    let mb2 = (0..32768usize.min(data.len().saturating_sub(16)))
        .step_by(8)
        .find(|&o| {
            let w = |i: usize| u32::from_le_bytes(data[o + i..o + i + 4].try_into().unwrap());
            w(0) == 0xE852_50D6
                && w(0)
                    .wrapping_add(w(4))
                    .wrapping_add(w(8))
                    .wrapping_add(w(12))
                    == 0
        });
    if mb2.is_none() {
        return Err("no valid multiboot2 header in the first 32 KiB".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_case_names_its_rerun_command_and_its_last_console_lines() {
        let console: String = (1..=50).map(|i| format!("line {i}\n")).collect();
        let r = failure_report(
            "stop code 3, expected 0",
            "qemu-system-x86_64 -kernel x.elf",
            &console,
        );
        assert!(r.starts_with(
            "stop code 3, expected 0\n--- rerun alone ---\nqemu-system-x86_64 -kernel x.elf\n"
        ));
        assert!(
            r.contains("--- console (last 20 lines) ---\nline 31\n"),
            "{r}"
        );
        assert!(r.ends_with("line 50") && !r.contains("line 30\n"), "{r}");
        let short = failure_report("x", "c", "only\n");
        assert!(short.ends_with("(last 1 lines) ---\nonly"), "{short}");
    }

    #[test]
    fn missing_tools_name_their_package() {
        assert!(crate::cmd::install_hint("qemu-system-riscv64").contains("qemu-system-misc"));
        assert!(crate::cmd::install_hint("gdb-multiarch").contains("apt-get install gdb-multiarch"));
        let e = crate::cmd::require_file("/nonexistent/OVMF_CODE.fd", "ovmf").unwrap_err();
        assert!(e.contains("apt-get install ovmf"), "{e}");
        let mut c = std::process::Command::new("qemu-system-x86_64");
        c.args(["-append", "a b", "-kernel", "x.elf"]);
        assert_eq!(
            crate::cmd::shell_line(&c),
            "qemu-system-x86_64 -append 'a b' -kernel x.elf"
        );
    }
}
