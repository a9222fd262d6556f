//! QEMU launchers: each takes an image and options, runs QEMU bounded in time and returns what it printed
//! and its exit status; what that means is `run.rs`'s business.
//!
//! x86: `-kernel` boots the image through its PVH note on the `microvm` machine (the fastest x86 machine
//! type here) with `-cpu max` (SVM with nested paging under TCG), COM1 on stdout, and `isa-debug-exit`
//! at 0xF4 (QEMU exits with `(code << 1) | 1`). An ISO boots on the `pc` machine (SeaBIOS, CD-ROM, GRUB,
//! multiboot2). RISC-V: the `virt` machine with `-cpu rv64` (H extension), OpenSBI (`-bios default`)
//! handing over to the image at 0x8020_0000 in HS-mode, the UART on stdout, the sifive_test device
//! (QEMU exits with the code); `-dtb` replaces QEMU's device tree (how the Zalasr discovery is booted:
//! QEMU 10.0.2 does not implement Zalasr, a tree can still list it).
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::cmd::{require, run_bounded, Finished};

/// Deterministic instruction counting (emulators.md): one guest TSC tick per emulated instruction.
pub const ICOUNT: [&str; 4] = ["-icount", "shift=0,sleep=off", "-seed", "1"];

/// How to run QEMU.
pub struct Options<'a> {
    /// `-append`.
    pub cmdline: &'a str,
    /// `-cpu`, instead of the machine's default model.
    pub cpu: Option<&'a str>,
    /// RISC-V: `-dtb`.
    pub dtb: Option<&'a Path>,
    /// ISO boots: UEFI (OVMF on `q35`) instead of SeaBIOS on `pc`.
    pub uefi: bool,
    /// Machine properties appended to `-M` (x86 `-kernel` boots: `pit=off` gives a microvm without a PIT).
    pub machine: Option<&'a str>,
    /// Deterministic instruction counting ([`ICOUNT`]).
    pub icount: bool,
    /// Echo the console as it comes.
    pub echo: bool,
    /// Killed after this long.
    pub limit: Duration,
    /// QEMU's gdb stub on 127.0.0.1:port, the CPU stopped before its first instruction (`-S`) until a
    /// debugger continues it (`cargo xtask run --gdb`).
    pub gdb: Option<u16>,
    /// `-smp N`: CPUs of the machine (1 unless told).
    pub cpus: u32,
}

/// `-gdb tcp:127.0.0.1:PORT -S`: the stub listens on the loopback interface only.
fn gdb_stub(c: &mut Command, o: &Options<'_>) {
    if let Some(port) = o.gdb {
        c.args(["-gdb", &format!("tcp:127.0.0.1:{port}"), "-S"]);
    }
}

/// `-M` with extra machine properties.
fn machine(name: &str, props: Option<&str>) -> String {
    match props {
        Some(p) => format!("{name},{p}"),
        None => name.to_string(),
    }
}

/// An x86 image through PVH (`-kernel`) on `microvm`.
pub fn x86(image: &Path, o: &Options<'_>) -> Result<Finished, String> {
    require(&["qemu-system-x86_64"])?;
    let mut c = Command::new("qemu-system-x86_64");
    c.args([
        "-accel",
        "tcg",
        "-cpu",
        o.cpu.unwrap_or("max"),
        "-M",
        &machine("microvm", o.machine),
        "-smp",
        &o.cpus.max(1).to_string(),
        "-m",
        &crate::run::machine_mb().to_string(),
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
    if !o.cmdline.is_empty() {
        c.args(["-append", o.cmdline]);
    }
    if o.icount {
        c.args(ICOUNT);
    }
    gdb_stub(&mut c, o);
    run_bounded(c, o.limit, o.echo)
}

/// A RISC-V image on `virt` under OpenSBI.
pub fn riscv(image: &Path, o: &Options<'_>) -> Result<Finished, String> {
    require(&["qemu-system-riscv64"])?;
    crate::cmd::require_file(OPENSBI, "opensbi")?;
    let mut c = Command::new("qemu-system-riscv64");
    c.args([
        "-M",
        "virt",
        "-cpu",
        o.cpu.unwrap_or("rv64"),
        "-smp",
        &o.cpus.max(1).to_string(),
        "-m",
        &format!("{}M", crate::run::machine_mb()),
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
    if !o.cmdline.is_empty() {
        c.args(["-append", o.cmdline]);
    }
    if let Some(d) = o.dtb {
        c.arg("-dtb").arg(d);
    }
    if o.icount {
        c.args(ICOUNT);
    } else {
        c.args(["-seed", "1"]);
    }
    gdb_stub(&mut c, o);
    run_bounded(c, o.limit, o.echo)
}

/// The OpenSBI firmware `-bios default` loads on `virt` (from qemu-system-misc's dependencies).
pub const OPENSBI: &str = "/usr/share/qemu/opensbi-riscv64-generic-fw_dynamic.bin";

/// Debian's `ovmf` package: the UEFI firmware an ISO boots from with `uefi`.
pub const OVMF_CODE: &str = "/usr/share/OVMF/OVMF_CODE.fd";

/// An x86 GRUB ISO on QEMU's `pc` machine (SeaBIOS, CD-ROM), or with `uefi` on `q35` under OVMF: the
/// multiboot2 path of the same image that `-kernel` starts through PVH. The command line is GRUB's (in
/// the ISO), not QEMU's.
pub fn x86_iso(iso: &Path, o: &Options<'_>) -> Result<Finished, String> {
    require(&["qemu-system-x86_64"])?;
    let mut c = Command::new("qemu-system-x86_64");
    c.args([
        "-accel",
        "tcg",
        "-cpu",
        o.cpu.unwrap_or("max"),
        "-M",
        if o.uefi { "q35" } else { "pc" },
        "-smp",
        &o.cpus.max(1).to_string(),
        "-m",
        if o.uefi { "256" } else { "128" },
        "-display",
        "none",
        "-serial",
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
    if o.uefi {
        crate::cmd::require_file(OVMF_CODE, "ovmf")?;
        c.args(["-bios", OVMF_CODE]);
    }
    if o.icount {
        c.args(ICOUNT);
    }
    run_bounded(c, o.limit, o.echo)
}
