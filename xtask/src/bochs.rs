//! The Bochs runner: boots a GRUB ISO in Bochs 2.7 (`corei7_skylake_x`: VMX with EPT, VPID, TSC scaling,
//! APIC virtualization), headless, under `timeout`, and reads the stop code from the console.
//!
//! Bochs cannot exit with a chosen status, so the result is the final console line
//! `libvmm: stop <code> <reason>` (`libvmm_abi::stop`). The console is COM1 in `mode=file` (a clean
//! byte stream); Bochs' own log goes to a separate file, kept for diagnosis (it names failed VM-entry
//! checks in VMFAIL lines). `clock: sync=none` makes time follow emulated instructions: runs are
//! deterministic and the guest's RDTSC counts instructions (about one tick per instruction), which is
//! what the VMX bench measures. The stop line itself is decoded by `run::boot`, as for every backend. This build of Bochs has no `nogui`: `rfb` with `timeout=0` is the
//! headless display (it opens a TCP port 5900+ locally). The internal debugger would stop at a prompt,
//! so an rc file with `c` is passed and stdin is /dev/null.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use libvmm_abi::stop::StopCode;

use crate::cmd::{ensure_tools, target_dir, Finished};
use crate::test::Case;

/// The Bochs CPU model of VMX runs: VMX with EPT, VPID, TSC scaling and APIC virtualization.
pub const DEFAULT_CPU: &str = "corei7_skylake_x";

/// The bochsrc of a run.
pub fn bochsrc(iso: &Path, com1: &Path, log: &Path, cpu: &str, ips: u64) -> String {
    format!(
        "megs: 128\n\
         romimage: file=/usr/share/bochs/BIOS-bochs-latest\n\
         vgaromimage: file=/usr/share/bochs/VGABIOS-lgpl-latest\n\
         cpu: model={cpu}, count=1, ips={ips}, reset_on_triple_fault=0\n\
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

/// Boots `iso` in Bochs with a wall-clock limit; `workdir` receives bochsrc, console and log. The
/// `Finished` output is the COM1 console; Bochs' exit status carries no stop code.
pub fn run(iso: &Path, workdir: &Path, cpu: &str, limit: Duration) -> Result<Finished, String> {
    std::fs::create_dir_all(workdir).map_err(|e| e.to_string())?;
    let com1 = workdir.join("com1.txt");
    let log = workdir.join("bochs.log");
    let rc = workdir.join("bochsrc");
    let dbg = workdir.join("debugger.rc");
    let _ = std::fs::remove_file(&com1);
    std::fs::write(&rc, bochsrc(iso, &com1, &log, cpu, 50_000_000)).map_err(|e| e.to_string())?;
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
        .map_err(|e| format!("bochs: {e} (run ci/install-deps.sh bochs)"))?;
    let wall = start.elapsed();
    let mut output = std::fs::read_to_string(&com1).unwrap_or_default();
    let timed_out = status.code() == Some(124) || status.code() == Some(137);
    // Bochs' wall time (boot included), for the record: the Bochs boot time figure of the VMX notes.
    output.push_str(&format!("xtask: bochs wall_ms={}\n", wall.as_millis()));
    Ok(Finished {
        output,
        code: None,
        timed_out,
    })
}

/// A short stable name for a command line (ISOs of the same image with different command lines
/// coexist).
fn cmdline_tag(cmdline: &str) -> String {
    if cmdline.is_empty() {
        return String::new();
    }
    let h = cmdline.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
    });
    format!("-{:08x}", h as u32)
}

/// The runner behind `xtask run/test/bench --backend vmx`: wraps `image` in a GRUB ISO whose grub.cfg
/// passes `cmdline`, boots it, and returns the console.
pub fn launch(
    image: &Path,
    cmdline: &str,
    cpu: Option<&str>,
    echo: bool,
    limit: Duration,
) -> Result<Finished, String> {
    ensure_tools("bochs", &["bochs", "grub-mkrescue", "xorriso", "timeout"])?;
    let stem = image
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("image");
    let name = format!("{stem}{}", cmdline_tag(cmdline));
    let iso = image.with_file_name(format!("{name}.iso"));
    crate::iso::build_iso(image, &iso, cmdline)?;
    let workdir = target_dir().join("bochs").join(format!(
        "{name}{}",
        cpu.map(|c| format!("-{c}")).unwrap_or_default()
    ));
    let f = run(&iso, &workdir, cpu.unwrap_or(DEFAULT_CPU), limit)?;
    if echo {
        print!("{}", f.output);
        eprintln!(
            "xtask: Bochs log in {}",
            workdir.join("bochs.log").display()
        );
    }
    Ok(f)
}

/// The VM-entry consistency-check cases, both ways: with the software checks on, each bad
/// configuration stops before the CPU sees it (stop code 103, the rule named); with them bypassed
/// (`libvmm.vmx.skip-checks`), Bochs refuses the same entry with VM-instruction error 7 and the debug report
/// names the software check that would have caught it. Last, a host-state fault the checks do not
/// cover shows the "missed consistency check" report (error 8).
pub fn consistency_cases() -> Vec<Case> {
    let cc = StopCode::ConsistencyCheck as u8;
    let be = StopCode::BackendError as u8;
    let caught = |cmdline: &'static str, rule: &str| Case {
        dtb: None,
        payload: "hello",
        cmdline,
        cpu: None,
        code: cc,
        expect: vec![format!("VM-entry consistency check failed: {rule}")],
        forbid: vec!["Hello from", "MISSED CONSISTENCY CHECK"],
    };
    let cpu_refuses = |cmdline: &'static str, rule: &str| Case {
        dtb: None,
        payload: "hello",
        cmdline,
        cpu: None,
        code: be,
        expect: vec![
            "VM entry failed: VM entry with invalid control field(s) (0x7)".into(),
            format!("the software check that catches it: {rule}"),
        ],
        forbid: vec!["Hello from", "MISSED CONSISTENCY CHECK"],
    };
    const TPR_HIGH: &str =
        "TPR_THRESHOLD[31:4] must be 0 with use-TPR-shadow on and virtual-interrupt delivery off";
    const TPR_VTPR: &str = "TPR_THRESHOLD[3:0] must not exceed VTPR[7:4]";
    const TSC: &str = "TSC_MULTIPLIER must not be 0 with use-TSC-scaling on";
    vec![
        caught("libvmm.vmx.bad=tpr-threshold", TPR_HIGH),
        cpu_refuses(
            "libvmm.vmx.bad=tpr-threshold libvmm.vmx.skip-checks libvmm.vmx.report-missed",
            TPR_HIGH,
        ),
        caught("libvmm.vmx.bad=tpr-vtpr", TPR_VTPR),
        cpu_refuses(
            "libvmm.vmx.bad=tpr-vtpr libvmm.vmx.skip-checks libvmm.vmx.report-missed",
            TPR_VTPR,
        ),
        caught("libvmm.vmx.bad=tsc-multiplier", TSC),
        cpu_refuses(
            "libvmm.vmx.bad=tsc-multiplier libvmm.vmx.skip-checks libvmm.vmx.report-missed",
            TSC,
        ),
        Case {
            dtb: None,
            payload: "hello",
            cmdline: "libvmm.vmx.bad=host-tr libvmm.vmx.report-missed",
            cpu: None,
            code: be,
            expect: vec![
                "!!! MISSED CONSISTENCY CHECK !!!".into(),
                "VM entry with invalid host-state field(s) (0x8)".into(),
            ],
            forbid: vec!["Hello from"],
        },
        // A VMX CPU whose EPT lacks what libvmm needs (Penryn) and one without VMX (an AMD model): refused
        // by name.
        Case {
            dtb: None,
            payload: "hello",
            cmdline: "",
            cpu: Some("core2_penryn_t9600"),
            code: StopCode::Unsupported as u8,
            expect: vec!["unsupported: EPT lacks 4-level walks, write-back or 2 MiB pages".into()],
            forbid: vec!["Hello from"],
        },
        Case {
            dtb: None,
            payload: "hello",
            cmdline: "",
            cpu: Some("athlon64_venice"),
            code: StopCode::Unsupported as u8,
            expect: vec!["unsupported: CPUID.1:ECX.VMX[5] is 0".into()],
            forbid: vec!["Hello from"],
        },
        Case {
            dtb: None,
            payload: "hello",
            cmdline: "libvmm.vmx.report-missed",
            cpu: None,
            code: 0,
            expect: vec!["Hello from a libvmm guest!".into()],
            forbid: vec!["MISSED CONSISTENCY CHECK", "vmx debug"],
        },
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_lines_get_distinct_iso_names() {
        assert_eq!(cmdline_tag(""), "");
        assert_ne!(
            cmdline_tag("libvmm.vmx.bad=tpr-threshold"),
            cmdline_tag("libvmm.vmx.bad=tsc-multiplier")
        );
    }

    #[test]
    fn bochsrc_is_headless_deterministic_and_vmx_capable() {
        let rc = bochsrc(
            Path::new("a.iso"),
            Path::new("c.txt"),
            Path::new("l.txt"),
            DEFAULT_CPU,
            1,
        );
        assert!(rc.contains("model=corei7_skylake_x"));
        assert!(rc.contains("sync=none"));
        assert!(rc.contains("mode=file"));
        assert!(rc.contains("reset_on_triple_fault=0"));
    }
}
