//! A hostile payload: it attacks the VMM and checks, from the inside, that each attack got the answer a
//! hypervisor owes a guest. Recoverable attacks run in sequence and each prints `hostile: ok <name>` or
//! `hostile: FAIL <name> ...`; then the attack named by `attack=` on the command line (default:
//! `vmm-read`) ends the VM, and the test harness checks the stop reason and code.
//!
//! Two attacks target the host tools rather than the VMM: `forge-stop` prints stop lines of its own (one
//! bare, one after a fake token line, carrying that fake token) and then spins, and `open-line` leaves a
//! forged stop line open (no newline) and exits with status 7. The host must trust only the VMM's stop
//! line, which carries the boot token printed before the payload's first instruction.
//!
//! The W^X attacks (`text-write`, `rodata-write`, `data-exec`, `stack-exec`, in `wx.rs`) turn on the
//! payload's own memory: the nested tables must stop each one.
#![no_std]
#![no_main]

use libvmm_guest::abi::{Errno, Hypercall};
use libvmm_guest::{hypercall, hypercall_raw, println};

#[cfg(target_arch = "x86_64")]
mod emulation;
#[cfg(target_arch = "x86_64")]
mod x86_64;
#[cfg(target_arch = "x86_64")]
use x86_64 as arch_attacks;
#[cfg(target_arch = "riscv64")]
mod riscv64;
#[cfg(target_arch = "riscv64")]
use riscv64 as arch_attacks;
#[cfg(target_arch = "x86_64")]
mod apic;
mod wx;

libvmm_guest::entry!(main);

/// Records the outcome of one check.
pub struct Checks {
    pub passed: u32,
    pub failed: u32,
}

impl Checks {
    pub fn check(&mut self, name: &str, ok: bool, detail: core::fmt::Arguments<'_>) {
        if ok {
            self.passed += 1;
            println!("hostile: ok {name}");
        } else {
            self.failed += 1;
            println!("hostile: FAIL {name}: {detail}");
        }
    }
}

/// Attacks every backend shares: hypercall arguments.
fn hypercall_attacks(c: &mut Checks) {
    let fault = Errno::Fault.as_result();
    let bi = libvmm_guest::boot_info().expect("boot info");
    let vmm = if cfg!(target_arch = "x86_64") {
        libvmm_guest::abi::layout::x86_64::VMM_IMAGE_BASE
    } else {
        libvmm_guest::abi::layout::riscv64::VMM_IMAGE_BASE
    };
    let r = hypercall(Hypercall::Write, [1, vmm, 64, 0]);
    c.check("write-from-vmm-memory", r == fault, format_args!("got {r}"));
    let r = hypercall(Hypercall::Write, [1, bi.mem_base + 0x1000, u64::MAX, 0]);
    c.check(
        "write-overflowing-length",
        r == fault,
        format_args!("got {r}"),
    );
    let r = hypercall(Hypercall::Write, [1, u64::MAX - 1, 16, 0]);
    c.check(
        "write-wrapping-pointer",
        r == fault,
        format_args!("got {r}"),
    );
    let r = hypercall(Hypercall::Write, [1, bi.mem_base + bi.mem_size - 8, 64, 0]);
    c.check("write-straddling-end", r == fault, format_args!("got {r}"));
    let r = hypercall(Hypercall::Write, [99, bi.mem_base, 1, 0]);
    c.check(
        "write-bad-fd",
        r == Errno::Badf.as_result(),
        format_args!("got {r}"),
    );
    let r = hypercall_raw(0xDEAD_BEEF, [1, 2, 3, 4]);
    c.check(
        "unknown-hypercall",
        r == Errno::Nosys.as_result(),
        format_args!("got {r}"),
    );
    let r = hypercall(Hypercall::Clock, [12345, 0, 0, 0]);
    c.check(
        "clock-bad-id",
        r == Errno::Inval.as_result(),
        format_args!("got {r}"),
    );
    let r = hypercall(Hypercall::Version, [0; 4]);
    c.check(
        "still-alive-after-bad-hypercalls",
        r == libvmm_guest::abi::ABI_VERSION as i64,
        format_args!("got {r}"),
    );
}

/// Prints forged stop lines (bare, then after a fake token line, with that token) and never exits: only
/// the VMM (a time limit) or the host (its own time limit) can end the run.
fn forge_stop() -> ! {
    libvmm_guest::print!("libvmm: stop 0 payload exited with status 0\n");
    libvmm_guest::print!("libvmm: token 0000000000000000\n");
    libvmm_guest::print!("libvmm: stop 0 payload exited with status 0 [0000000000000000]\n");
    loop {
        core::hint::spin_loop();
    }
}

fn main() -> i32 {
    let mut c = Checks {
        passed: 0,
        failed: 0,
    };
    hypercall_attacks(&mut c);
    arch_attacks::recoverable(&mut c);
    #[cfg(target_arch = "x86_64")]
    apic::recoverable(&mut c);
    wx::recoverable(&mut c);
    // The emulator attacks need `libvmm.force_emulation=1` (their cases pass `emu=1` with it).
    #[cfg(target_arch = "x86_64")]
    let emu = libvmm_guest::cmdline_value("emu") == Some("1");
    #[cfg(target_arch = "x86_64")]
    if emu {
        emulation::recoverable(&mut c);
    }
    println!(
        "hostile: {} recoverable checks passed, {} failed",
        c.passed, c.failed
    );
    if c.failed != 0 {
        return 1;
    }
    let attack = libvmm_guest::cmdline_value("attack").unwrap_or("vmm-read");
    println!("hostile: fatal attack {attack}");
    match attack {
        "forge-stop" => forge_stop(),
        "open-line" => {
            libvmm_guest::print!("libvmm: stop 0 forged");
            libvmm_guest::exit(7)
        }
        _ if wx::fatal(attack) => {}
        #[cfg(target_arch = "x86_64")]
        _ if emu && emulation::fatal(attack) => {}
        #[cfg(target_arch = "x86_64")]
        "apic-storm" => apic::storm(),
        _ => arch_attacks::fatal(attack),
    }
    // Every fatal attack must have stopped the VM.
    println!("hostile: FAIL fatal attack {attack} did not stop the VM");
    2
}
