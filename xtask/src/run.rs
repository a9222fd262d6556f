//! Booting an image on its emulator and reading how it stopped: every backend prints a final
//! `libvmm: stop <code> <reason>` line; where the emulator can also exit with the code (QEMU's
//! isa-debug-exit, RISC-V's test device) the two must agree.
use std::path::Path;
use std::time::Duration;

use libvmm_stop::{stop_line, StopCodeSource};

use crate::backend::Backend;
use crate::build::build_image;
use crate::cmd::Finished;
use crate::Args;

/// The stop-line and exit-code helpers, kept in one place.
pub mod libvmm_stop {
    pub const PREFIX: &str = "libvmm: stop ";

    /// The last stop line's code and reason.
    pub fn stop_line(output: &str) -> Option<(u8, String)> {
        let line = output
            .lines()
            .rev()
            .find_map(|l| l.trim_end_matches('\r').strip_prefix(PREFIX))?;
        let (code, reason) = line.split_once(' ').unwrap_or((line, ""));
        Some((code.parse().ok()?, reason.to_string()))
    }

    pub enum StopCodeSource {
        /// QEMU x86: status (code << 1) | 1.
        DebugExit,
        /// RISC-V sifive_test: the status is the code.
        Direct,
        /// Bochs: only the stop line tells.
        ConsoleOnly,
    }
}

/// How a boot ended.
pub struct Outcome {
    pub output: String,
    pub code: Option<u8>,
    pub reason: String,
}

pub struct BootOptions<'a> {
    pub cmdline: &'a str,
    /// RISC-V: a device tree to boot with instead of QEMU's own.
    pub dtb: Option<&'a Path>,
    /// Emulator CPU model instead of the backend's default (x86 QEMU: `-cpu`).
    pub cpu: Option<&'a str>,
    pub icount: bool,
    pub echo: bool,
    pub limit: Duration,
}

fn source(backend: Backend) -> StopCodeSource {
    match backend {
        Backend::Svm | Backend::Tdx => StopCodeSource::DebugExit,
        Backend::Riscv => StopCodeSource::Direct,
        Backend::Vmx => StopCodeSource::ConsoleOnly,
    }
}

fn launch(backend: Backend, image: &Path, o: &BootOptions<'_>) -> Result<Finished, String> {
    match backend {
        Backend::Svm | Backend::Tdx => {
            crate::qemu::x86(image, o.cmdline, o.cpu, o.icount, o.echo, o.limit)
        }
        Backend::Riscv => crate::qemu::riscv(image, o.cmdline, o.dtb, o.icount, o.echo, o.limit),
        Backend::Vmx => crate::bochs::launch(image, o.cmdline, o.cpu, o.echo, o.limit),
    }
}

/// Boots `image` and decodes its stop.
pub fn boot(backend: Backend, image: &Path, o: &BootOptions<'_>) -> Result<Outcome, String> {
    let f = launch(backend, image, o)?;
    let line = stop_line(&f.output);
    let mut reason = line.as_ref().map(|l| l.1.clone()).unwrap_or_default();
    let from_status = match (source(backend), f.code) {
        (StopCodeSource::DebugExit, Some(s)) => libvmm_abi::stop::from_qemu_debug_exit(s),
        (StopCodeSource::Direct, Some(s)) => u8::try_from(s).ok(),
        _ => None,
    };
    let code = match (line.as_ref().map(|l| l.0), from_status) {
        (Some(a), Some(b)) if a != b => {
            reason = format!("stop line says {a} but the emulator exited with code {b}: {reason}");
            None
        }
        (Some(a), _) => Some(a),
        (None, b) => b,
    };
    if f.timed_out {
        reason = format!("timed out after {:?}; {reason}", o.limit);
    } else if line.is_none() {
        reason = format!("no stop line (emulator status {:?})", f.code);
    }
    Ok(Outcome {
        output: f.output,
        code,
        reason,
    })
}

pub fn run_cmd(a: &Args) -> Result<u8, String> {
    let image = build_image(a.backend, &a.payload)?;
    let o = BootOptions {
        cmdline: &a.cmdline,
        dtb: None,
        cpu: None,
        icount: false,
        echo: true,
        limit: Duration::from_secs(120),
    };
    let out = boot(a.backend, &image, &o)?;
    match out.code {
        Some(c) => Ok(c),
        None => Err(out.reason),
    }
}
