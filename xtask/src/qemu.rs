//! QEMU runners. x86: `-kernel` boots the image through its PVH note on the `microvm` machine (the
//! fastest x86 machine type here) with `-cpu max` (SVM with nested paging under TCG), COM1 on stdout,
//! and `isa-debug-exit` at 0xF4 for the stop code.
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::cmd::{ensure_tools, run_bounded, Finished};

/// Deterministic instruction counting (emulators.md): one guest TSC tick per emulated instruction.
pub const ICOUNT: [&str; 4] = ["-icount", "shift=0,sleep=off", "-seed", "1"];

pub fn x86(
    image: &Path,
    cmdline: &str,
    cpu: Option<&str>,
    icount: bool,
    echo: bool,
    limit: Duration,
) -> Result<Finished, String> {
    ensure_tools("qemu", &["qemu-system-x86_64"])?;
    let mut c = Command::new("qemu-system-x86_64");
    c.args([
        "-accel",
        "tcg",
        "-cpu",
        cpu.unwrap_or("max"),
        "-M",
        "microvm",
        "-m",
        "128",
        "-display",
        "none",
        "-serial",
        "stdio",
    ])
    .args([
        "-no-reboot",
        "-nodefaults",
        "-device",
        "isa-debug-exit,iobase=0xf4,iosize=0x04",
        "-kernel",
    ])
    .arg(image);
    if !cmdline.is_empty() {
        c.args(["-append", cmdline]);
    }
    if icount {
        c.args(ICOUNT);
    }
    run_bounded(c, limit, echo)
}

/// Boots an x86 GRUB ISO on QEMU's `pc` machine (SeaBIOS, CD-ROM): the multiboot2 path of the same
/// image that `-kernel` starts through PVH.
pub fn x86_iso(iso: &Path, echo: bool, limit: Duration) -> Result<Finished, String> {
    ensure_tools("qemu", &["qemu-system-x86_64"])?;
    let mut c = Command::new("qemu-system-x86_64");
    c.args([
        "-accel", "tcg", "-cpu", "max", "-M", "pc", "-m", "128", "-display", "none", "-serial",
        "stdio",
    ])
    .args([
        "-no-reboot",
        "-device",
        "isa-debug-exit,iobase=0xf4,iosize=0x04",
        "-boot",
        "d",
        "-cdrom",
    ])
    .arg(iso);
    run_bounded(c, limit, echo)
}
