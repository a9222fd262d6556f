//! The Bochs runner: boots a GRUB ISO in Bochs 2.7 (`corei7_skylake_x`: VMX with EPT, VPID, TSC scaling,
//! APIC virtualization), headless, under `timeout`, and reads the stop code from the console.
//!
//! Bochs cannot exit with a chosen status, so the result is the final console line
//! `libvmm: stop <code> <reason>` (`libvmm_abi::stop`). The console is COM1 in `mode=file` (a clean
//! byte stream); Bochs' own log goes to a separate file, kept for diagnosis (it names failed VM-entry
//! checks in VMFAIL lines). `clock: sync=none` makes time follow emulated instructions: runs are
//! deterministic and the guest's RDTSC counts instructions (about one tick per instruction), which is
//! what the VMX bench measures. This build of Bochs has no `nogui`: `rfb` with `timeout=0` is the
//! headless display (it opens a TCP port 5900+ locally). The internal debugger would stop at a prompt,
//! so an rc file with `c` is passed and stdin is /dev/null.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// What one Bochs run produced.
#[derive(Debug)]
pub struct BochsRun {
    /// The COM1 console (what the VMM and the payload printed).
    pub console: String,
    /// The stop code from the last `libvmm: stop` line, if there was one.
    pub stop_code: Option<u8>,
    pub wall: Duration,
    pub timed_out: bool,
    pub log: PathBuf,
}

/// The bochsrc of a run.
pub fn bochsrc(iso: &Path, com1: &Path, log: &Path, ips: u64) -> String {
    format!(
        "megs: 128\n\
         romimage: file=/usr/share/bochs/BIOS-bochs-latest\n\
         vgaromimage: file=/usr/share/bochs/VGABIOS-lgpl-latest\n\
         cpu: model=corei7_skylake_x, count=1, ips={ips}, reset_on_triple_fault=0\n\
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
    )
}

/// Parses the stop code out of a console transcript (the last stop line wins).
pub fn stop_code(console: &str) -> Option<u8> {
    let prefix = libvmm_stop_prefix();
    console
        .lines()
        .rev()
        .find_map(|l| l.trim_end_matches('\r').strip_prefix(prefix)?.split_whitespace().next()?.parse::<u8>().ok())
}

fn libvmm_stop_prefix() -> &'static str {
    // Same text as `libvmm_abi::stop::STOP_LINE_PREFIX` plus the separating space.
    "libvmm: stop "
}

/// Boots `iso` in Bochs with a wall-clock limit; `workdir` receives bochsrc, console and log.
pub fn run(iso: &Path, workdir: &Path, limit: Duration) -> Result<BochsRun, String> {
    std::fs::create_dir_all(workdir).map_err(|e| e.to_string())?;
    let com1 = workdir.join("com1.txt");
    let log = workdir.join("bochs.log");
    let rc = workdir.join("bochsrc");
    let dbg = workdir.join("debugger.rc");
    let _ = std::fs::remove_file(&com1);
    std::fs::write(&rc, bochsrc(iso, &com1, &log, 50_000_000)).map_err(|e| e.to_string())?;
    std::fs::write(&dbg, "c\n").map_err(|e| e.to_string())?;
    let start = Instant::now();
    let status = Command::new("timeout")
        .arg("--kill-after=2")
        .arg(format!("{}", limit.as_secs().max(1)))
        .arg("bochs")
        .args(["-q", "-f"])
        .arg(&rc)
        .arg("-rc")
        .arg(&dbg)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map_err(|e| format!("bochs: {e} (run ci/install-deps.sh)"))?;
    let wall = start.elapsed();
    let console = std::fs::read_to_string(&com1).unwrap_or_default();
    Ok(BochsRun { stop_code: stop_code(&console), console, wall, timed_out: status.code() == Some(124), log })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_stop_line_gives_the_code() {
        assert_eq!(stop_code("x\nlibvmm: stop 0 payload exited with status 0\n"), Some(0));
        assert_eq!(stop_code("libvmm: stop 96 guest memory violation\r\n"), Some(96));
        assert_eq!(stop_code("libvmm: stop 3 a\nlibvmm: stop 103 b\n"), Some(103));
        assert_eq!(stop_code("no stop line\n"), None);
        assert_eq!(stop_code("libvmm: stop x\n"), None);
    }

    #[test]
    fn bochsrc_is_headless_deterministic_and_vmx_capable() {
        let rc = bochsrc(Path::new("a.iso"), Path::new("c.txt"), Path::new("l.txt"), 1);
        assert!(rc.contains("model=corei7_skylake_x"));
        assert!(rc.contains("sync=none"));
        assert!(rc.contains("mode=file"));
        assert!(rc.contains("reset_on_triple_fault=0"));
    }
}
