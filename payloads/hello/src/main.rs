//! The smallest useful payload: greets through hermit-abi's `write`, reads a clock, exits 0.
//!
//! With `traps=1` on the command line it also proves the runtime's trap-handler API: it installs an
//! illegal-instruction handler, executes UD2 (x86) / UNIMP (RISC-V), and checks that the handler saw the
//! faulting pc, changed a register in the saved frame, and skipped the instruction, and that an armed
//! `arch::probe` still takes its own exception while the handler is installed; then it prints
//! `hello: trap handler ok` and goes on. With `traps=default` the handler declines
//! ([`TrapAction::Default`]) and the runtime's default reports the exception and aborts the payload.
#![no_std]
#![no_main]

use core::sync::atomic::{AtomicU64, Ordering};

use libvmm_guest::hermit_abi::{self, timespec, CLOCK_MONOTONIC};
use libvmm_guest::{Trap, TrapAction, TrapFrame};

libvmm_guest::entry!(main);

fn main() -> i32 {
    let backend = libvmm_guest::backend_name();
    let greeting = b"Hello from a libvmm guest! ";
    // SAFETY: a valid buffer and its length.
    unsafe { hermit_abi::write(1, greeting.as_ptr(), greeting.len()) };
    libvmm_guest::println!("This payload runs deprivileged on {backend}.");

    let mut t = timespec::default();
    // SAFETY: `t` is a valid timespec.
    let rc = unsafe { hermit_abi::clock_gettime(CLOCK_MONOTONIC, &mut t) };
    if rc == 0 {
        libvmm_guest::println!(
            "hello: monotonic clock reads {}.{:09} s",
            t.tv_sec,
            t.tv_nsec
        );
    } else {
        libvmm_guest::println!("hello: no clock ({rc})");
    }

    match libvmm_guest::cmdline_value("traps") {
        Some("1") => match trap_handler_check() {
            Ok(()) => libvmm_guest::println!("hello: trap handler ok"),
            Err(why) => {
                libvmm_guest::println!("hello: trap handler FAILED: {why}");
                return 1;
            }
        },
        Some("default") => {
            let _ = libvmm_guest::set_trap_handler(Trap::illegal_instruction(), decline);
            run_illegal_instruction();
            // Not reached: the default aborts the payload.
            libvmm_guest::println!("hello: trap handler FAILED: the default did not abort");
            return 1;
        }
        _ => {}
    }
    0
}

/// The value the illegal instruction's marker register holds before the trap, and after the handler.
const BEFORE: u64 = 0x1111_2222_3333_4444;
const AFTER: u64 = 0x5555_6666_7777_8888;
/// Length of the illegal instruction: UD2 (0F 0B) / the 32-bit UNIMP (csrrw zero, cycle, zero).
const ILLEGAL_LEN: u64 = if cfg!(target_arch = "riscv64") { 4 } else { 2 };

/// Traps the handler took, and the pc of the last one.
static HITS: AtomicU64 = AtomicU64::new(0);
static TRAP_PC: AtomicU64 = AtomicU64::new(0);

/// The illegal-instruction handler: records the trap, sets the marker register, skips the instruction.
fn on_illegal(f: &mut TrapFrame) -> TrapAction {
    if f.trap() != Trap::illegal_instruction() {
        return TrapAction::Default;
    }
    HITS.fetch_add(1, Ordering::SeqCst);
    TRAP_PC.store(f.pc(), Ordering::SeqCst);
    #[cfg(target_arch = "x86_64")]
    {
        f.rax = AFTER;
    }
    #[cfg(target_arch = "riscv64")]
    {
        f.x[10] = AFTER; // a0
    }
    f.set_pc(f.pc() + ILLEGAL_LEN);
    TrapAction::Resume
}

/// A handler that declines: the runtime's default handles the exception.
fn decline(f: &mut TrapFrame) -> TrapAction {
    libvmm_guest::println!("hello: trap handler declines {:?}", f.trap());
    TrapAction::Default
}

/// Runs the illegal instruction with the marker register set; returns (its address, the marker after).
fn run_illegal_instruction() -> (u64, u64) {
    let (pc, marker): (u64, u64);
    #[cfg(target_arch = "x86_64")]
    // SAFETY: UD2 raises #UD, which `on_illegal` handles by skipping it; only RAX (declared) changes.
    unsafe {
        core::arch::asm!(
            "lea {pc}, [rip + 2f]",
            "2: ud2",
            pc = out(reg) pc,
            inout("rax") BEFORE => marker,
        )
    };
    #[cfg(target_arch = "riscv64")]
    // SAFETY: the 32-bit UNIMP (a write to the read-only `cycle` CSR) raises an illegal-instruction
    // exception, which `on_illegal` handles by skipping it; only a0 (declared) changes.
    unsafe {
        core::arch::asm!(
            "lla {pc}, 2f",
            "2: .4byte 0xc0001073",
            pc = out(reg) pc,
            inout("a0") BEFORE => marker,
        )
    };
    (pc, marker)
}

fn trap_handler_check() -> Result<(), &'static str> {
    let trap = Trap::illegal_instruction();
    if !matches!(libvmm_guest::set_trap_handler(trap, on_illegal), Ok(None)) {
        return Err("set_trap_handler did not install the first handler");
    }
    let (pc, marker) = run_illegal_instruction();
    let hits = HITS.load(Ordering::SeqCst);
    // An armed probe takes its own exception, not the installed handler (x86: VMLAUNCH is #UD in a
    // guest on both backends; RISC-V: MRET is illegal in VS-mode).
    #[cfg(target_arch = "x86_64")]
    let probed = libvmm_guest::arch::probe::vmlaunch().map_err(u64::from);
    #[cfg(target_arch = "riscv64")]
    let probed = libvmm_guest::arch::probe::mret();
    let hits_after_probe = HITS.load(Ordering::SeqCst);
    let removed = libvmm_guest::clear_trap_handler(trap);
    if hits != 1 {
        return Err("the handler did not run exactly once");
    }
    if TRAP_PC.load(Ordering::SeqCst) != pc {
        return Err("the frame's pc is not the illegal instruction's address");
    }
    if marker != AFTER {
        return Err("the handler's register change did not reach the resumed code");
    }
    let illegal = match trap {
        Trap::X86(v) => u64::from(v),
        Trap::Riscv(c) => c,
    };
    if probed != Err(illegal) || hits_after_probe != hits {
        return Err("a probe's exception did not go to the probe");
    }
    if !matches!(removed, Ok(Some(_))) {
        return Err("clear_trap_handler did not return the handler");
    }
    Ok(())
}
