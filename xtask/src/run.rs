//! Booting an image on its emulator and deciding how the run ended.
//!
//! The result of a run is what the VMM says, and only the VMM: before the payload's first instruction it
//! prints one line `libvmm: token <16 hex>` (the guest cannot print before it), and every stop line ends
//! with ` [<token>]`. The host trusts the **first** token line of the run and only stop lines that
//! `libvmm_abi::stop::parse_stop_line` accepts with that token; any other line that looks like a stop
//! or token line (a payload can print anything) is ignored. Where the emulator has an out-of-band exit
//! (QEMU x86 `isa-debug-exit`: status `(code << 1) | 1`; RISC-V `sifive_test`: status = code), that is
//! trusted first and the token-carrying stop line must agree; a disagreement, or no trusted stop line,
//! is a failure that says so. A run killed at the host's time limit is never a success: its result is
//! `HOST_TIMED_OUT` (252), which no stop code (0..=127) can be.
use std::path::Path;
use std::time::Duration;

use libvmm_abi::stop::{
    from_qemu_debug_exit, parse_stop_line, parse_token_line, Token, HOST_TIMED_OUT,
    STOP_LINE_PREFIX, TOKEN_LINE_PREFIX,
};

use crate::args::Args;
use crate::backend::Backend;

/// What, besides the console, tells how the machine stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExitDevice {
    /// QEMU x86 `isa-debug-exit`: process status `(code << 1) | 1`.
    DebugExit,
    /// RISC-V `sifive_test`: the process status is the code.
    SifiveTest,
    /// Bochs: nothing; only the console's stop line tells.
    None,
}

impl ExitDevice {
    pub fn of(backend: Backend) -> ExitDevice {
        match backend {
            Backend::Svm | Backend::Tdx => ExitDevice::DebugExit,
            Backend::Riscv => ExitDevice::SifiveTest,
            Backend::Vmx => ExitDevice::None,
        }
    }
}

/// How a run ended, as the host decides it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdict {
    /// `Ok(code)`: the trusted stop code, or `HOST_TIMED_OUT` when the emulator was killed at the time
    /// limit. `Err(why)`: no trustworthy result.
    pub result: Result<u8, String>,
    /// The reason on the trusted stop line (empty when there is none).
    pub reason: String,
    pub timed_out: bool,
    /// Lines that looked like stop or token lines but were not trusted (forged, or after the first token
    /// line).
    pub ignored: Vec<String>,
}

/// The reason of a trusted stop line `libvmm: stop <code> <reason> [<token>]`.
fn stop_reason(line: &str, token: u64) -> String {
    let suffix = format!(" [{}]", Token(token));
    line.trim_end()
        .strip_prefix(STOP_LINE_PREFIX)
        .and_then(|r| r.strip_suffix(suffix.as_str()))
        .map(|r| r.trim_start())
        .and_then(|r| r.split_once(' ').map(|(_, reason)| reason))
        .unwrap_or("")
        .to_string()
}

/// Decides a run from its console `output`, the emulator's exit `status` (`None`: killed by a signal)
/// and whether the host killed it at its time limit (`limit`).
pub fn interpret(
    output: &str,
    status: Option<i32>,
    timed_out: bool,
    limit: Duration,
    device: ExitDevice,
) -> Verdict {
    let lines: Vec<&str> = output
        .split('\n')
        .map(|l| l.trim_end_matches('\r'))
        .collect();
    let first_token = lines
        .iter()
        .enumerate()
        .find_map(|(i, l)| parse_token_line(l).map(|t| (i, t)));
    let mut ignored = Vec::new();
    let mut stops: Vec<(u8, String)> = Vec::new();
    for (i, l) in lines.iter().enumerate() {
        let trusted = match first_token {
            Some((at, token)) if i > at => {
                parse_stop_line(l, token).map(|c| (c, stop_reason(l, token)))
            }
            _ => None,
        };
        match trusted {
            Some(s) => stops.push(s),
            None if first_token.map(|(at, _)| at) != Some(i)
                && (l.contains(STOP_LINE_PREFIX) || l.contains(TOKEN_LINE_PREFIX)) =>
            {
                ignored.push(l.to_string())
            }
            None => {}
        }
    }
    let no_token = if first_token.is_none() {
        " (the run printed no `libvmm: token` line)"
    } else {
        ""
    };
    let reason = stops.first().map(|s| s.1.clone()).unwrap_or_default();
    let verdict = |result| Verdict {
        result,
        reason: reason.clone(),
        timed_out,
        ignored: ignored.clone(),
    };
    if timed_out {
        // Never a success, whatever the console says.
        let mut why = format!("timed out after {} s", limit.as_secs());
        if let Some((c, r)) = stops.first() {
            why.push_str(&format!(" (after the VMM's stop line: {c} {r})"));
        }
        let mut v = verdict(Ok(HOST_TIMED_OUT));
        v.reason = why;
        return v;
    }
    // The VMM starts its lines on a fresh line; a stop line whose reason holds another stop line was
    // glued to text the guest left open, and its code would be the guest's.
    if let Some((_, r)) = stops.iter().find(|(_, r)| r.contains(STOP_LINE_PREFIX)) {
        return verdict(Err(format!(
            "the stop line carrying the boot token is glued to guest text: {r}"
        )));
    }
    if let Some(w) = stops.windows(2).find(|w| w[0].0 != w[1].0) {
        return verdict(Err(format!(
            "two stop lines carry the boot token and disagree: {} and {}",
            w[0].0, w[1].0
        )));
    }
    let line = stops.first().map(|s| s.0);
    let device_code = match (device, status) {
        (ExitDevice::None, _) => None,
        (ExitDevice::DebugExit, Some(s)) => match from_qemu_debug_exit(s) {
            Some(c) => Some(c),
            None => {
                return verdict(Err(format!(
                    "QEMU exited with status {s}, not through isa-debug-exit{}",
                    line.map(|c| format!(" (the stop line says {c})"))
                        .unwrap_or_default()
                )))
            }
        },
        (ExitDevice::SifiveTest, Some(s)) => match u8::try_from(s) {
            Ok(c) => Some(c),
            Err(_) => return verdict(Err(format!("QEMU exited with status {s}"))),
        },
        (_, None) => {
            return verdict(Err(
                "the emulator was killed by a signal, not stopped through its exit device".into(),
            ))
        }
    };
    match (device_code, line) {
        (Some(d), Some(c)) if d == c => verdict(Ok(c)),
        (Some(d), Some(c)) => verdict(Err(format!(
            "the exit device reports {d} but the stop line carrying the boot token says {c}"
        ))),
        (Some(d), None) => verdict(Err(format!(
            "the exit device reports {d} but no stop line carries the boot token{no_token}"
        ))),
        (None, Some(c)) => verdict(Ok(c)),
        (None, None) => verdict(Err(format!(
            "no stop line carries the boot token{no_token}"
        ))),
    }
}

/// How a boot ended: the console and the host's verdict.
pub struct Outcome {
    pub output: String,
    pub verdict: Verdict,
    /// The emulator's command line, to rerun the boot alone.
    pub command: String,
}

pub struct BootOptions<'a> {
    pub cmdline: &'a str,
    /// RISC-V: a device tree to boot with instead of QEMU's own.
    pub dtb: Option<&'a Path>,
    /// Emulator CPU model instead of the backend's default (x86 QEMU: `-cpu`; Bochs: `cpu: model=`).
    pub cpu: Option<&'a str>,
    /// x86 QEMU ISO boots: UEFI (OVMF) instead of SeaBIOS.
    pub uefi: bool,
    /// x86 QEMU `-kernel` boots: machine properties (`pit=off`).
    pub machine: Option<&'a str>,
    /// x86 QEMU: boot from a GRUB ISO (multiboot2) instead of `-kernel` (PVH). VMX always boots an ISO.
    pub grub_iso: bool,
    pub icount: bool,
    pub echo: bool,
    pub limit: Duration,
    /// QEMU (SVM, RISC-V): start with the gdb stub on 127.0.0.1:port, stopped (`run --gdb`).
    pub gdb: Option<u16>,
    /// CPUs of the emulated machine (QEMU `-smp N`, Bochs `cpu: count=N`).
    pub cpus: u32,
}

impl<'a> BootOptions<'a> {
    /// A plain boot: the emulator's default machine, CPU model and firmware, one CPU, no `-icount`, no
    /// echo, no gdb; callers change only the fields they mean (struct update syntax).
    pub fn new(cmdline: &'a str, limit: Duration) -> Self {
        BootOptions {
            cmdline,
            dtb: None,
            cpu: None,
            uefi: false,
            machine: None,
            grub_iso: false,
            icount: false,
            echo: false,
            limit,
            gdb: None,
            cpus: 1,
        }
    }
}

/// RAM of the emulated machine in MiB (QEMU `-m`, Bochs `megs:`); 0 means the default, 128. Set around
/// a boot by [`with_machine_memory`] (the bench's boot figure at 8 MiB and at 256 MiB of guest memory);
/// every other boot keeps the default.
pub static MACHINE_MB: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

/// The machine's RAM in MiB for the next boot.
pub fn machine_mb() -> u32 {
    match MACHINE_MB.load(std::sync::atomic::Ordering::Relaxed) {
        0 => 128,
        n => n,
    }
}

/// Runs `f` (boots) on machines with `mb` MiB of RAM, then restores the default.
pub fn with_machine_memory<T>(mb: u32, f: impl FnOnce() -> T) -> T {
    MACHINE_MB.store(mb, std::sync::atomic::Ordering::Relaxed);
    let r = f();
    MACHINE_MB.store(0, std::sync::atomic::Ordering::Relaxed);
    r
}

/// Boots `image` on the backend's emulator and decides how the run ended.
pub fn boot(backend: Backend, image: &Path, o: &BootOptions<'_>) -> Result<Outcome, String> {
    let q = crate::qemu::Options {
        cmdline: o.cmdline,
        cpu: o.cpu,
        dtb: o.dtb,
        machine: o.machine,
        uefi: o.uefi,
        icount: o.icount,
        echo: o.echo,
        limit: o.limit,
        gdb: o.gdb,
        cpus: o.cpus,
    };
    let f = match backend {
        Backend::Svm | Backend::Tdx if o.grub_iso => {
            crate::qemu::x86_iso(&crate::iso::iso_for(image, o.cmdline)?, &q)?
        }
        Backend::Svm | Backend::Tdx => crate::qemu::x86(image, &q)?,
        Backend::Riscv => crate::qemu::riscv(image, &q)?,
        Backend::Vmx => crate::bochs::launch(
            &crate::iso::iso_for(image, o.cmdline)?,
            o.cpu,
            o.cpus,
            o.echo,
            o.limit,
        )?,
    };
    let verdict = interpret(
        &f.output,
        f.code,
        f.timed_out,
        o.limit,
        ExitDevice::of(backend),
    );
    Ok(Outcome {
        output: f.output,
        verdict,
        command: f.command,
    })
}

/// The default host time limit of `cargo xtask run`, in seconds.
pub const DEFAULT_TIMEOUT_SECS: u64 = 120;

/// `cargo xtask run`: exits with the trusted stop code, `HOST_TIMED_OUT` when killed at the time limit,
/// and fails (status 1) when the run has no trustworthy result.
pub fn run_cmd(a: &Args) -> Result<u8, String> {
    if let Some(mode) = crate::gdb::requested(&a.rest)? {
        return crate::gdb::run_cmd(a, mode);
    }
    let image = crate::build::image_for_args(a)?;
    let cmdline = cmdline_with_argv(a)?;
    let o = BootOptions {
        echo: true,
        cpus: a.cpus,
        ..BootOptions::new(
            &cmdline,
            Duration::from_secs(a.timeout.unwrap_or(DEFAULT_TIMEOUT_SECS)),
        )
    };
    let v = with_machine_memory(a.mem_mb.unwrap_or(0), || boot(a.backend, &image, &o))?.verdict;
    let status = payload_status(&v);
    let code = report(v)?;
    Ok(status.unwrap_or(code))
}

/// `--cmdline` plus, after `--`, the payload's `argv`: its name (the payload, or the ELF's file name)
/// and the words given after `--` (each must be one word: the command line is split at whitespace).
pub fn cmdline_with_argv(a: &Args) -> Result<String, String> {
    let Some(words) = &a.argv else {
        return Ok(a.cmdline.clone());
    };
    if let Some(w) = words
        .iter()
        .find(|w| w.is_empty() || w.contains(char::is_whitespace))
    {
        return Err(format!(
            "program argument {w:?}: arguments reach the payload through the image's command line, \
             which is split at whitespace: one non-empty word each"
        ));
    }
    let name = match &a.elf {
        Some(p) => p
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        None => a.payload.clone(),
    };
    let mut line = a.cmdline.trim().to_string();
    if line.contains(" -- ") || line.starts_with("-- ") || line == "--" {
        return Err(
            "give the payload's arguments either in --cmdline after -- or after --, not both"
                .into(),
        );
    }
    if !line.is_empty() {
        line.push(' ');
    }
    line.push_str("-- ");
    line.push_str(&name);
    for w in words {
        line.push(' ');
        line.push_str(w);
    }
    if line.len() as u64 > libvmm_abi::layout::CMDLINE_MAX {
        return Err(format!(
            "the command line is {} bytes, more than the {} the VMM passes to the payload",
            line.len(),
            libvmm_abi::layout::CMDLINE_MAX
        ));
    }
    Ok(line)
}

/// The payload's own exit status when the trusted stop line says it exited (`payload exited with
/// status N`), as a process status (N mod 256): statuses above `stop::PAYLOAD_MAX` share one stop
/// code, and the cargo runner passes the real one through (the test harness's 101 on a failure).
pub fn payload_status(v: &Verdict) -> Option<u8> {
    if v.timed_out || v.result.is_err() {
        return None;
    }
    let n: i64 = v
        .reason
        .strip_prefix("payload exited with status ")?
        .parse()
        .ok()?;
    Some(n as u8)
}

/// Prints what `run` prints about a verdict and returns its exit status.
pub fn report(v: Verdict) -> Result<u8, String> {
    for l in &v.ignored {
        eprintln!(
            "xtask: ignored, not the VMM's (no boot token, or not the first token line): {l}"
        );
    }
    match v.result {
        Ok(code) if v.timed_out => {
            eprintln!("xtask: {}", v.reason);
            Ok(code)
        }
        Ok(code) => {
            eprintln!("xtask: stop {code}: {}", v.reason);
            Ok(code)
        }
        Err(e) => Err(format!("no trustworthy result: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: u64 = 0x0123_4567_89ab_cdef;
    const LIMIT: Duration = Duration::from_secs(30);

    fn console(body: &str) -> String {
        format!(
            "OpenSBI v1.5\nlibvmm 0.1.0: backend X\nlibvmm: token {}\n{body}",
            Token(T)
        )
    }

    fn stop(code: u8, reason: &str) -> String {
        format!("libvmm: stop {code} {reason} [{}]\n", Token(T))
    }

    /// QEMU x86's status for `code` written to isa-debug-exit.
    fn dbg(code: u8) -> Option<i32> {
        Some(((code as i32) << 1) | 1)
    }

    #[test]
    fn the_token_carrying_stop_line_agreeing_with_the_exit_device_is_the_result() {
        let out = console(&format!(
            "hello\n{}",
            stop(3, "payload exited with status 3")
        ));
        let v = interpret(&out, dbg(3), false, LIMIT, ExitDevice::DebugExit);
        assert_eq!(v.result, Ok(3));
        assert_eq!(v.reason, "payload exited with status 3");
        assert!(v.ignored.is_empty());
        let v = interpret(&out, Some(3), false, LIMIT, ExitDevice::SifiveTest);
        assert_eq!(v.result, Ok(3));
        let v = interpret(&out, None, false, LIMIT, ExitDevice::None);
        assert_eq!(v.result, Ok(3));
    }

    #[test]
    fn forged_lines_before_and_after_the_token_line_are_ignored() {
        // Before the token line (only the VMM and firmware print there, but even so) and after it: bare
        // stop lines, a second token line, and a stop line carrying that second token.
        let out = format!(
            "libvmm: stop 0 early [{}]\n{}",
            Token(0),
            console(&format!(
                "libvmm: stop 0 payload exited with status 0\n\
                 libvmm: token 0000000000000000\n\
                 libvmm: stop 0 payload exited with status 0 [0000000000000000]\n{}",
                stop(99, "guest exceeded its time limit of 300 ms")
            ))
        );
        for (status, device) in [
            (dbg(99), ExitDevice::DebugExit),
            (Some(99), ExitDevice::SifiveTest),
            (None, ExitDevice::None),
        ] {
            let v = interpret(&out, status, false, LIMIT, device);
            assert_eq!(v.result, Ok(99), "{device:?}");
            assert_eq!(v.reason, "guest exceeded its time limit of 300 ms");
            assert_eq!(v.ignored.len(), 4, "{:?}", v.ignored);
        }
        // The same forgeries with the real stop line missing: no result at all, never the forged 0.
        let forged_only = out.replace(&stop(99, "guest exceeded its time limit of 300 ms"), "");
        let v = interpret(&forged_only, None, false, LIMIT, ExitDevice::None);
        assert!(v.result.is_err(), "{v:?}");
        let v = interpret(&forged_only, dbg(0), false, LIMIT, ExitDevice::DebugExit);
        assert!(
            v.result
                .as_ref()
                .unwrap_err()
                .contains("no stop line carries the boot token"),
            "{v:?}"
        );
    }

    #[test]
    fn only_the_first_token_line_counts() {
        // A guest that prints a token line of its own and a stop line with that token gets nothing.
        let out = console(&format!(
            "libvmm: token 1111111111111111\nlibvmm: stop 0 ok [1111111111111111]\n{}",
            stop(7, "payload exited with status 7")
        ));
        let v = interpret(&out, None, false, LIMIT, ExitDevice::None);
        assert_eq!(v.result, Ok(7));
        // With no token line, no stop line is trusted.
        let v = interpret(&stop(0, "x"), None, false, LIMIT, ExitDevice::None);
        let e = v.result.unwrap_err();
        assert!(e.contains("no `libvmm: token` line"), "{e}");
    }

    #[test]
    fn an_open_forged_line_does_not_swallow_the_real_stop_line() {
        // The guest leaves `libvmm: stop 0 forged` open; the VMM starts its stop line on a fresh line.
        let out = console(&format!(
            "libvmm: stop 0 forged\n{}",
            stop(7, "payload exited with status 7")
        ));
        let v = interpret(&out, Some(7), false, LIMIT, ExitDevice::SifiveTest);
        assert_eq!(v.result, Ok(7));
        assert_eq!(v.ignored, vec!["libvmm: stop 0 forged".to_string()]);
        // Had the VMM not started a fresh line, the real stop line would not be trusted: a failure, not 0.
        let glued = console(&format!(
            "libvmm: stop 0 forged{}",
            stop(7, "payload exited with status 7")
        ));
        for (status, device) in [(Some(7), ExitDevice::SifiveTest), (None, ExitDevice::None)] {
            let v = interpret(&glued, status, false, LIMIT, device);
            let e = v.result.unwrap_err();
            assert!(e.contains("glued to guest text"), "{device:?}: {e}");
        }
        // CRLF consoles read the same.
        let crlf = out.replace('\n', "\r\n");
        let v = interpret(&crlf, dbg(7), false, LIMIT, ExitDevice::DebugExit);
        assert_eq!(v.result, Ok(7));
    }

    #[test]
    fn disagreement_with_the_exit_device_is_a_failure_that_says_so() {
        let out = console(&stop(0, "payload exited with status 0"));
        let e = interpret(&out, dbg(7), false, LIMIT, ExitDevice::DebugExit)
            .result
            .unwrap_err();
        assert!(
            e.contains("exit device reports 7") && e.contains("says 0"),
            "{e}"
        );
        let e = interpret(&out, Some(98), false, LIMIT, ExitDevice::SifiveTest)
            .result
            .unwrap_err();
        assert!(e.contains("exit device reports 98"), "{e}");
        // QEMU x86 exiting other than through the device (status 0, or killed) is no result either.
        let e = interpret(&out, Some(0), false, LIMIT, ExitDevice::DebugExit)
            .result
            .unwrap_err();
        assert!(e.contains("not through isa-debug-exit"), "{e}");
        assert!(interpret(&out, None, false, LIMIT, ExitDevice::DebugExit)
            .result
            .is_err());
    }

    #[test]
    fn a_run_killed_at_the_time_limit_is_never_a_success() {
        let out = console(&format!(
            "libvmm: stop 0 payload exited with status 0\n{}",
            stop(0, "payload exited with status 0")
        ));
        for device in [
            ExitDevice::DebugExit,
            ExitDevice::SifiveTest,
            ExitDevice::None,
        ] {
            let v = interpret(&out, None, true, Duration::from_secs(20), device);
            assert_eq!(v.result, Ok(HOST_TIMED_OUT));
            assert!(v.timed_out);
            assert!(v.reason.starts_with("timed out after 20 s"), "{}", v.reason);
        }
        const { assert!(HOST_TIMED_OUT > 127) };
    }
}
