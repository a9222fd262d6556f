//! The Bochs launcher: boots a GRUB ISO in Bochs 2.7 (`corei7_skylake_x`: VMX with EPT, VPID, TSC
//! scaling, APIC virtualization), headless, bounded in time, and returns the console. It knows nothing
//! of stop lines or test cases: `run.rs` decides what a console means.
//!
//! Bochs cannot exit with a chosen status, so the console is all there is (`run.rs` reads the stop line
//! that carries the boot token). The console is COM1 in `mode=file` (a clean byte stream); Bochs' own log
//! goes to a separate file, kept for diagnosis (it names failed VM-entry checks in VMFAIL lines).
//! `clock: sync=none` makes time follow emulated instructions: runs are deterministic and the guest's
//! RDTSC counts instructions (about one tick per instruction), which is what the VMX bench measures.
//! This build of Bochs has no `nogui`: `rfb` with `timeout=0` is the headless display (it opens a TCP
//! port 5900+ locally). The internal debugger would stop at a prompt, so an rc file with `c` is passed
//! and stdin is /dev/null.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::cmd::{require, run_bounded, target_dir, Finished};

/// The Bochs CPU model of VMX runs: VMX with EPT, VPID, TSC scaling and APIC virtualization.
pub const DEFAULT_CPU: &str = "corei7_skylake_x";

/// The bochsrc of a run.
pub fn bochsrc(iso: &Path, com1: &Path, log: &Path, cpu: &str, cpus: u32, ips: u64) -> String {
    let cpus = cpus.max(1);
    format!(
        "megs: {megs}\n\
         romimage: file=/usr/share/bochs/BIOS-bochs-latest\n\
         vgaromimage: file=/usr/share/bochs/VGABIOS-lgpl-latest\n\
         cpu: model={cpu}, count={cpus}, ips={ips}, reset_on_triple_fault=0\n\
         clock: sync=none, time0=1\n\
         display_library: rfb, options=\"timeout=0\"\n\
         ata0-master: type=cdrom, path=\"{iso}\", status=inserted\n\
         boot: cdrom\n\
         com1: enabled=1, mode=file, dev=\"{com1}\"\n\
         port_e9_hack: enabled=1\n\
         sound: driver=dummy\n\
         speaker: enabled=0\n\
         mouse: enabled=0\n\
         log: {log}\n\
         panic: action=fatal\n\
         error: action=report\n\
         info: action=ignore\n\
         debug: action=ignore\n",
        iso = iso.display(),
        com1 = com1.display(),
        log = log.display(),
        megs = crate::run::machine_mb(),
    )
}

/// Boots `iso` in Bochs with a wall-clock limit; `workdir` receives bochsrc, console and log. The
/// `Finished` output is the COM1 console; Bochs' exit status carries no stop code.
pub fn run(
    iso: &Path,
    workdir: &Path,
    cpu: &str,
    cpus: u32,
    limit: Duration,
) -> Result<Finished, String> {
    run_debugger(iso, workdir, cpu, cpus, limit, "c\n").map(|(f, _)| f)
}

/// [`run`] with the internal debugger's commands `script` (Debian's Bochs is built with the debugger,
/// not the gdb stub); returns the run and what the debugger printed (Bochs' stdout and stderr).
pub fn run_debugger(
    iso: &Path,
    workdir: &Path,
    cpu: &str,
    cpus: u32,
    limit: Duration,
    script: &str,
) -> Result<(Finished, String), String> {
    std::fs::create_dir_all(workdir).map_err(|e| e.to_string())?;
    let com1 = workdir.join("com1.txt");
    let log = workdir.join("bochs.log");
    let rc = workdir.join("bochsrc");
    let dbg = workdir.join("debugger.rc");
    let _ = std::fs::remove_file(&com1);
    std::fs::write(&rc, bochsrc(iso, &com1, &log, cpu, cpus, 50_000_000))
        .map_err(|e| e.to_string())?;
    std::fs::write(&dbg, script).map_err(|e| e.to_string())?;
    let start = Instant::now();
    let mut c = Command::new("bochs");
    c.args(["-q", "-f"]).arg(&rc).arg("-rc").arg(&dbg);
    // Bochs' own stdout/stderr (banner, debugger prompt) is not the console: returned apart.
    let f = run_bounded(c, limit, false)?;
    let wall = start.elapsed();
    let mut output = std::fs::read_to_string(&com1).unwrap_or_default();
    // Bochs' wall time (boot included), for the record: the Bochs boot time figure of the VMX notes.
    output.push_str(&format!("xtask: bochs wall_ms={}\n", wall.as_millis()));
    Ok((
        Finished {
            output,
            code: f.code,
            timed_out: f.timed_out,
            command: f.command,
        },
        f.output,
    ))
}

/// Boots a GRUB ISO (built by `iso::iso_for`) in Bochs on `cpu` (default [`DEFAULT_CPU`]), its work
/// files in `target/bochs/<iso name>[-<cpu>]/`; echoes the console afterwards when `echo` (Bochs writes
/// it to a file).
pub fn launch(
    iso: &Path,
    cpu: Option<&str>,
    cpus: u32,
    echo: bool,
    limit: Duration,
) -> Result<Finished, String> {
    require(&["bochs"])?;
    crate::cmd::require_file("/usr/share/bochs/BIOS-bochs-latest", "bochsbios")?;
    crate::cmd::require_file("/usr/share/bochs/VGABIOS-lgpl-latest", "vgabios")?;
    let name = iso.file_stem().and_then(|s| s.to_str()).unwrap_or("image");
    let workdir = target_dir().join("bochs").join(format!(
        "{name}{}{}",
        cpu.map(|c| format!("-{c}")).unwrap_or_default(),
        if cpus > 1 {
            format!("-smp{cpus}")
        } else {
            String::new()
        }
    ));
    let f = run(iso, &workdir, cpu.unwrap_or(DEFAULT_CPU), cpus, limit)?;
    if echo {
        print!("{}", f.output);
        eprintln!(
            "xtask: Bochs log in {}",
            workdir.join("bochs.log").display()
        );
    }
    Ok(f)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bochsrc_is_headless_deterministic_and_vmx_capable() {
        let rc = bochsrc(
            Path::new("a.iso"),
            Path::new("c.txt"),
            Path::new("l.txt"),
            DEFAULT_CPU,
            2,
            1,
        );
        assert!(rc.contains("count=2"));
        assert!(rc.contains("model=corei7_skylake_x"));
        assert!(rc.contains("sync=none"));
        assert!(rc.contains("mode=file"));
        assert!(rc.contains("reset_on_triple_fault=0"));
    }
}
