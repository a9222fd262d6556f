//! Measures exit costs from inside the guest and prints them as `bench: key=value` lines for
//! `cargo xtask bench`. Under QEMU `-icount shift=0` (and Bochs with an unsynced clock) the cycle counter
//! advances one tick per emulated instruction, so the differences below count emulated instructions:
//! each figure is the loop with the exit minus the same loop without it, divided by the iterations.
#![no_std]
#![no_main]

use libvmm_guest::abi::Hypercall;
use libvmm_guest::{arch, hypercall, println};

libvmm_guest::entry!(main);

const ITERATIONS: u64 = 1000;

/// Cycles for `ITERATIONS` runs of `f`.
#[inline(always)]
fn timed(mut f: impl FnMut()) -> u64 {
    let t0 = arch::cycles();
    for _ in 0..ITERATIONS {
        f();
    }
    arch::cycles() - t0
}

fn exits() -> i64 {
    hypercall(Hypercall::ExitCount, [0; 4])
}

/// Exits taken by one `write` of `len` bytes (the ExitCount call after it is not counted).
fn exits_per_write(buf: &[u8]) -> i64 {
    let before = exits();
    // SAFETY: a valid buffer.
    let n = unsafe { libvmm_guest::hermit_abi::write(1, buf.as_ptr(), buf.len()) };
    let after = exits();
    if n != buf.len() as isize {
        println!("exitbench: write of {} returned {}", buf.len(), n);
        return -1;
    }
    after - before - 1
}

static mut BUF: [u8; 65536] = [b'.'; 65536];

fn main() -> i32 {
    let boot_cost = libvmm_guest::boot_info()
        .map(|b| arch::first_cycles().wrapping_sub(b.vmm_entry_cycles))
        .unwrap_or(0);

    // Warm up both paths once.
    let _ = arch::cpuid(0x4000_0000, 0);
    let _ = hypercall(Hypercall::Nop, [0; 4]);

    let base = timed(|| core::hint::black_box(()));
    let with_cpuid = timed(|| {
        core::hint::black_box(arch::cpuid(0x4000_0000, 0));
    });
    let with_nop = timed(|| {
        core::hint::black_box(hypercall(Hypercall::Nop, [0; 4]));
    });
    // The hypercall loop also sets up four argument registers; measure that without the exit too.
    let base_args = timed(|| {
        core::hint::black_box([0u64; 4]);
    });

    // SAFETY: single-threaded payload; the buffer is only read.
    let buf: &[u8] = unsafe { &*core::ptr::addr_of!(BUF) };
    let w1 = exits_per_write(&buf[..1]);
    let w4k = exits_per_write(&buf[..4096]);
    let w64k = exits_per_write(&buf[..65536]);
    println!();

    println!("bench: iterations={ITERATIONS}");
    println!("bench: loop_base_cycles={base}");
    println!("bench: loop_cpuid_cycles={with_cpuid}");
    println!("bench: loop_nop_hypercall_cycles={with_nop}");
    println!(
        "bench: cpuid_round_trip={}",
        with_cpuid.saturating_sub(base) / ITERATIONS
    );
    println!(
        "bench: null_hypercall_round_trip={}",
        with_nop.saturating_sub(base_args) / ITERATIONS
    );
    println!("bench: exits_per_write_1={w1}");
    println!("bench: exits_per_write_4096={w4k}");
    println!("bench: exits_per_write_65536={w64k}");
    println!("bench: vmm_entry_to_payload={boot_cost}");
    println!("exitbench: done");
    0
}
