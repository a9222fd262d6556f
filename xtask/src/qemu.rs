//! QEMU runners. x86: `-kernel` boots the image through its PVH note on the `microvm` machine (the
//! fastest x86 machine type here) with `-cpu max` (SVM with nested paging under TCG), COM1 on stdout,
//! and `isa-debug-exit` at 0xF4 for the stop code. RISC-V: the `virt` machine with `-cpu rv64` (H
//! extension), OpenSBI (`-bios default`) handing over to the image at 0x8020_0000 in HS-mode, the UART on
//! stdout, the stop code from the sifive_test device; `-dtb` replaces QEMU's device tree (how the Zalasr
//! discovery is booted: QEMU 10.0.2 does not implement Zalasr, a tree can still list it).
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

pub fn riscv(
    image: &Path,
    cmdline: &str,
    dtb: Option<&Path>,
    icount: bool,
    echo: bool,
    limit: Duration,
) -> Result<Finished, String> {
    ensure_tools("qemu", &["qemu-system-riscv64"])?;
    let mut c = Command::new("qemu-system-riscv64");
    c.args([
        "-M",
        "virt",
        "-cpu",
        "rv64",
        "-smp",
        "1",
        "-m",
        "128M",
        "-display",
        "none",
        "-serial",
        "stdio",
        "-monitor",
        "none",
        "-no-reboot",
        "-bios",
        "default",
        "-kernel",
    ])
    .arg(image);
    if !cmdline.is_empty() {
        c.args(["-append", cmdline]);
    }
    if let Some(d) = dtb {
        c.arg("-dtb").arg(d);
    }
    if icount {
        c.args(ICOUNT);
    } else {
        c.args(["-seed", "1"]);
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
