//! `cargo xtask run --gdb`: a payload and the VMM under gdb, through QEMU's gdb stub (SVM and RISC-V).
//!
//! The image and the payload are built with the `gdb` cargo profile (the release build with debug info,
//! in `target/<target>/gdb/`, so the ordinary images and the bench figures are untouched). QEMU starts
//! with its stub on 127.0.0.1 and the CPU stopped before its first instruction (`-gdb tcp:... -S`).
//! Both ELFs are linked at the addresses they run at: the VMM image at its load address (1 MiB on x86,
//! 0x8020_0000 on RISC-V), the payload at the guest window's payload base, and the guest window is
//! mapped identity (guest-physical = host-physical) with the payload's own tables identity too, so gdb
//! loads both symbol files without offsets (`file IMAGE`, `add-symbol-file PAYLOAD`), and QEMU's
//! breakpoints (by virtual address, inserted as `Z0` packets, never written into memory that the VMM later
//! overwrites when it copies the payload in) hit in the payload's `main` and in the VMM's exit path alike.
//!
//! - `--gdb` (or `--gdb=print`): prints the gdb command line and boots; attach from another terminal.
//! - `--gdb=attach`: boots and launches gdb on this terminal with that command line.
//! - `--gdb-port=N`: the stub's port (default 1234, QEMU's own; `attach` and the test pick a free one).
//!
//! `cargo xtask test` drives gdb in batch mode ([`batch_test`]): break at `hello::main`, continue, read
//! the local `backend`, break in the VMM's exit path and take a backtrace, continue to the end; the
//! run's verdict must be the payload's status 0. Stepping (`next`) over a hypercall instruction stops
//! in the VMM: the step follows the CPU into the world switch; `break` a later line and `continue`. Bochs (VMX) has no gdb stub in Debian's build (it is compiled with the internal debugger,
//! and the two exclude each other): see README, "Commands".
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::args::Args;
use crate::backend::Backend;
use crate::build::{build_image_with, build_payload_with};
use crate::cmd::{have, run_bounded};
use crate::run::{boot, BootOptions, Outcome};

/// The cargo profile of gdb builds (workspace `Cargo.toml`).
pub const PROFILE: &str = "gdb";

/// QEMU's default gdb port (`-s`).
pub const DEFAULT_PORT: u16 = 1234;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Print the gdb command line; the user attaches.
    Print(u16),
    /// Launch gdb here.
    Attach(Option<u16>),
}

/// Whether `rest` asks for gdb (`--gdb`, `--gdb=print`, `--gdb=attach`, with an optional `--gdb-port=N`).
pub fn requested(rest: &[String]) -> Result<Option<Mode>, String> {
    let mut port = None;
    let mut mode = None;
    for r in rest {
        if let Some(p) = r.strip_prefix("--gdb-port=") {
            port = Some(
                p.parse::<u16>()
                    .ok()
                    .filter(|p| *p > 0)
                    .ok_or_else(|| format!("--gdb-port needs a TCP port, not {p}"))?,
            );
        } else if r == "--gdb" || r == "--gdb=print" {
            mode = Some(false);
        } else if r == "--gdb=attach" {
            mode = Some(true);
        } else if r.starts_with("--gdb") {
            return Err(format!(
                "unknown gdb option {r} (--gdb, --gdb=attach, --gdb-port=N)"
            ));
        }
    }
    Ok(match mode {
        None if port.is_some() => return Err("--gdb-port without --gdb".into()),
        None => None,
        Some(false) => Some(Mode::Print(port.unwrap_or(DEFAULT_PORT))),
        Some(true) => Some(Mode::Attach(port)),
    })
}

/// The gdb program that debugs the backend's target, and the package it comes from.
pub fn program(backend: Backend) -> Result<(&'static str, &'static str), String> {
    match backend {
        Backend::Svm => Ok(("gdb", "gdb")),
        Backend::Riscv => Ok(("gdb-multiarch", "gdb-multiarch")),
        Backend::Vmx => Err(
            "VMX boots in Bochs, whose Debian build has no gdb stub (it has the internal \
             debugger instead): see README, Commands"
                .into(),
        ),
        Backend::Tdx => {
            Err("the TDX image stops at SEAM-module detection; debug the SVM image".into())
        }
    }
}

/// gdb's arguments: symbols of the VMM image and of the payload at their link addresses, then the stub.
pub fn gdb_args(backend: Backend, image: &Path, payload: &Path, port: u16) -> Vec<String> {
    let arch = match backend {
        Backend::Riscv => "riscv:rv64",
        _ => "i386:x86-64",
    };
    let mut v = vec!["-q".to_string(), "-nx".to_string()];
    for c in [
        "set pagination off".to_string(),
        "set confirm off".to_string(),
        format!("set architecture {arch}"),
        format!("file {}", image.display()),
        format!("add-symbol-file {}", payload.display()),
        // QEMU may still be starting: gdb retries a refused connection for this long.
        "set tcp connect-timeout 30".to_string(),
        format!("target remote 127.0.0.1:{port}"),
    ] {
        v.push("-ex".into());
        v.push(c);
    }
    v
}

/// A shell-quoted command line, for the user to paste.
pub fn shell_line(program: &str, args: &[String]) -> String {
    let mut c = Command::new(program);
    c.args(args);
    crate::cmd::shell_line(&c)
}

/// A free TCP port on the loopback interface (bound, read, released).
fn free_port() -> Result<u16, String> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    Ok(l.local_addr().map_err(|e| e.to_string())?.port())
}

/// The gdb build of an image and of its payload: (image, payload ELF).
fn build(backend: Backend, payload: &str) -> Result<(PathBuf, PathBuf), String> {
    let elf = build_payload_with(backend, payload, PROFILE)?;
    let image = build_image_with(backend, payload, PROFILE)?;
    Ok((image, elf))
}

/// Boots `image` with the stub on `port` in a thread; the outcome comes back when QEMU ends.
fn boot_in_background(
    backend: Backend,
    image: PathBuf,
    cmdline: String,
    port: u16,
    echo: bool,
    limit: Duration,
) -> std::thread::JoinHandle<Result<Outcome, String>> {
    std::thread::spawn(move || {
        let o = BootOptions {
            echo,
            gdb: Some(port),
            ..BootOptions::new(&cmdline, limit)
        };
        boot(backend, &image, &o)
    })
}

/// `cargo xtask run --gdb[=attach]`.
pub fn run_cmd(a: &Args, mode: Mode) -> Result<u8, String> {
    let (gdb, package) = program(a.backend)?;
    let (image, payload) = build(a.backend, &a.payload)?;
    let port = match mode {
        Mode::Print(p) | Mode::Attach(Some(p)) => p,
        Mode::Attach(None) => free_port()?,
    };
    let args = gdb_args(a.backend, &image, &payload, port);
    // A debugging session is as long as the user wants, unless told otherwise.
    let limit = Duration::from_secs(a.timeout.unwrap_or(24 * 3600));
    eprintln!(
        "xtask: QEMU waits for gdb on 127.0.0.1:{port}; payload symbols: {}, VMM symbols: {}",
        payload.display(),
        image.display()
    );
    eprintln!(
        "xtask: try `break {}::main`, `continue`, `next`, `info locals`, `bt`; in the VMM's exit path \
         (inlined into the run loop, so break by line): `break libvmm/src/policy/hypercall.rs:{}`",
        a.payload,
        source_line("libvmm/src/policy/hypercall.rs", "Hypercall::Exit =>").unwrap_or(1)
    );
    let qemu = boot_in_background(a.backend, image, a.cmdline.clone(), port, true, limit);
    match mode {
        Mode::Print(_) => {
            if !have(gdb) {
                eprintln!(
                    "xtask: {gdb} is missing: apt-get install {package} (ci/install-deps.sh gdb)"
                );
            }
            eprintln!("xtask: in another terminal:\n{}", shell_line(gdb, &args));
        }
        Mode::Attach(_) => {
            if !have(gdb) {
                return Err(format!(
                    "{gdb} is missing: apt-get install {package} (ci/install-deps.sh gdb)"
                ));
            }
            eprintln!("xtask: {}", shell_line(gdb, &args));
            let s = Command::new(gdb)
                .args(&args)
                .status()
                .map_err(|e| format!("cannot start {gdb}: {e}"))?;
            eprintln!("xtask: {gdb} ended ({s})");
        }
    }
    let out = qemu.join().map_err(|_| "the QEMU thread panicked")??;
    crate::run::report(out.verdict)
}

/// The 1-based line of the first line of `file` (from the workspace root) that contains `needle`, so the
/// breakpoints of the batch test follow the source instead of hard-coded numbers.
pub fn source_line(file: &str, needle: &str) -> Result<usize, String> {
    let text = std::fs::read_to_string(crate::cmd::root().join(file))
        .map_err(|e| format!("{file}: {e}"))?;
    text.lines()
        .position(|l| l.contains(needle))
        .map(|i| i + 1)
        .ok_or_else(|| format!("{file} has no line with {needle:?}"))
}

/// Where the batch test breaks: the payload's greeting line (after `backend` is computed) and the VMM's
/// answer to the exit hypercall (the payload's `main` returned; the host side of the exit path).
fn batch_breakpoints() -> Result<(String, String), String> {
    let greet = "payloads/hello/src/main.rs";
    let policy = "libvmm/src/policy/hypercall.rs";
    Ok((
        format!(
            "{greet}:{}",
            source_line(greet, "This payload runs deprivileged on {backend}")?
        ),
        format!("{policy}:{}", source_line(policy, "Hypercall::Exit =>")?),
    ))
}

/// The gdb batch test of `cargo xtask test`: QEMU waits with its stub; gdb loads both symbol files,
/// breaks at the payload's `hello::main` and continues, breaks at its greeting line and prints the local
/// `backend` (the backend's name, read from guest memory through the stub), breaks in the VMM where
/// the exit hypercall is answered and prints the backtrace (policy -> `vcpu::handle` -> `vcpu::run`),
/// and continues to the end. The run must end with the payload's status 0 through the exit device and
/// the VMM's stop line, as any run.
pub fn batch_test(backend: Backend) -> Result<(), String> {
    let (gdb, package) = program(backend)?;
    if !have(gdb) {
        return Err(format!(
            "{gdb} is missing: apt-get install {package} (ci/install-deps.sh gdb)"
        ));
    }
    let (greet, exit) = batch_breakpoints()?;
    let (image, payload) = build(backend, "hello")?;
    let port = free_port()?;
    let qemu = boot_in_background(
        backend,
        image.clone(),
        String::new(),
        port,
        false,
        Duration::from_secs(90),
    );
    let mut c = Command::new(gdb);
    c.arg("-batch")
        .args(gdb_args(backend, &image, &payload, port))
        .args([
            "-ex",
            "break hello::main",
            "-ex",
            "continue",
            "-ex",
            &format!("break {greet}"),
            "-ex",
            "continue",
            "-ex",
            "print backend",
            "-ex",
            &format!("break {exit}"),
            "-ex",
            "continue",
            "-ex",
            "bt 3",
            "-ex",
            "delete",
            "-ex",
            "continue",
        ]);
    let g = run_bounded(c, Duration::from_secs(90), false)?;
    let out = qemu.join().map_err(|_| "the QEMU thread panicked")??;
    let mut problems = Vec::new();
    if g.timed_out {
        problems.push("gdb did not finish within 90 s".to_string());
    }
    let name = match backend {
        Backend::Riscv => "RISC-V H",
        _ => "AMD SVM",
    };
    for e in [
        "Breakpoint 1, hello::main".to_string(),
        format!("$1 = \"{name}\""),
        "Breakpoint 3, libvmm::policy::hypercall::dispatch".to_string(),
        "libvmm::vcpu::handle<".to_string(),
    ] {
        if !g.output.contains(&e) {
            problems.push(format!("gdb did not print {e:?}"));
        }
    }
    match &out.verdict.result {
        Ok(0) => {}
        Ok(c) => problems.push(format!("stop {c}: {}", out.verdict.reason)),
        Err(e) => problems.push(format!("no trustworthy result: {e}")),
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "{}\n--- gdb ---\n{}\n--- console ---\n{}",
            problems.join("; "),
            g.output.trim_end(),
            out.output.trim_end()
        ))
    }
}

/// The Bochs counterpart of [`batch_test`] (VMX): Debian's Bochs has the internal debugger instead of a
/// gdb stub, so its script sets a linear breakpoint at the payload's entry (`_start`, the ELF entry),
/// continues, prints the registers there (in VMX non-root mode: RDI = the boot-info address, the
/// window's base; RSP = the window's top, with `libvmm.mem=8M`) and continues to the end; the run must stop with status 0.
pub fn bochs_debugger_test() -> Result<(), String> {
    use libvmm_abi::layout::x86_64::{PAYLOAD_BASE, WINDOW_BASE, WINDOW_SIZE};
    let image = crate::build::build_image(Backend::Vmx, "hello")?;
    // The hello window pinned at its smallest, so RSP (the window's top) is a fixed number.
    let iso = crate::iso::iso_for(&image, "libvmm.mem=8M")?;
    crate::cmd::require(&["bochs"])?;
    let workdir = crate::cmd::target_dir().join("bochs").join("debugger");
    let script = format!("lb {PAYLOAD_BASE:#x}\nc\nr\nc\n");
    let (f, dbg) = crate::bochs::run_debugger(
        &iso,
        &workdir,
        crate::bochs::DEFAULT_CPU,
        1,
        Duration::from_secs(60),
        &script,
    )?;
    let v = crate::run::interpret(
        &f.output,
        f.code,
        f.timed_out,
        Duration::from_secs(60),
        crate::run::ExitDevice::None,
    );
    let hex = |v: u64| format!("{:08x}_{:08x}", v >> 32, v & 0xffff_ffff);
    let mut problems = Vec::new();
    for e in [
        format!("Breakpoint 1, {:#018x} in ??", PAYLOAD_BASE),
        format!("rip: {}", hex(PAYLOAD_BASE)),
        format!("rdi: {}", hex(WINDOW_BASE)),
        format!("rsp: {}", hex(WINDOW_BASE + WINDOW_SIZE)),
    ] {
        if !dbg.contains(&e) {
            problems.push(format!("the debugger did not print {e:?}"));
        }
    }
    match &v.result {
        Ok(0) => {}
        Ok(c) => problems.push(format!("stop {c}: {}", v.reason)),
        Err(e) => problems.push(format!("no trustworthy result: {e}")),
    }
    if problems.is_empty() {
        Ok(())
    } else {
        let tail: Vec<&str> = dbg.lines().rev().take(30).collect();
        Err(format!(
            "{}\n--- rerun alone ---\n{}\n--- debugger (last lines) ---\n{}",
            problems.join("; "),
            f.command,
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(a: &[&str]) -> Vec<String> {
        a.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn gdb_options() {
        assert_eq!(requested(&[]).unwrap(), None);
        assert_eq!(
            requested(&s(&["--gdb"])).unwrap(),
            Some(Mode::Print(DEFAULT_PORT))
        );
        assert_eq!(
            requested(&s(&["--gdb=attach"])).unwrap(),
            Some(Mode::Attach(None))
        );
        assert_eq!(
            requested(&s(&["--gdb", "--gdb-port=4000"])).unwrap(),
            Some(Mode::Print(4000))
        );
        assert!(requested(&s(&["--gdb-port=4000"])).is_err());
        assert!(requested(&s(&["--gdb=later"])).is_err());
        assert!(requested(&s(&["--gdb", "--gdb-port=0"])).is_err());
    }

    #[test]
    fn gdb_command_line_loads_both_symbol_files_then_connects() {
        let a = gdb_args(Backend::Riscv, Path::new("i.elf"), Path::new("p elf"), 4321);
        let line = shell_line("gdb-multiarch", &a);
        let file = line.find("'file i.elf'").unwrap();
        let add = line.find("'add-symbol-file p elf'").unwrap();
        let remote = line.find("'target remote 127.0.0.1:4321'").unwrap();
        assert!(file < add && add < remote, "{line}");
        assert!(line.contains("riscv:rv64"));
        assert!(program(Backend::Vmx).is_err());
    }
}
