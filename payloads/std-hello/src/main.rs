//! The smallest Rust `std` payload: `println!` from `main`. With the argument `bench` (command line
//! `-- std-hello bench`) it also prints the std figures of `cargo xtask bench` as `bench: key=value`
//! lines, in emulated instructions (the cycle counter counts one per instruction under the bench's
//! emulators): VMM entry to `main`, a heap allocation and free, a thread spawn and join.
#[cfg(target_os = "hermit")]
use libvmm_guest as guest;

/// Operations per figure (the figure is the loop with the operation minus the same loop without it,
/// divided by this).
const ALLOCS: u64 = 1000;
const THREADS: u64 = 100;

#[cfg(target_os = "hermit")]
fn cycles() -> u64 {
    guest::arch::cycles()
}

#[cfg(not(target_os = "hermit"))]
fn cycles() -> u64 {
    0
}

/// The VMM's entry in the same counter (from the boot info), when running under libvmm.
#[cfg(target_os = "hermit")]
fn vmm_entry() -> Option<u64> {
    guest::boot_info().map(|b| b.vmm_entry_cycles)
}

#[cfg(not(target_os = "hermit"))]
fn vmm_entry() -> Option<u64> {
    None
}

fn timed(n: u64, mut f: impl FnMut()) -> u64 {
    let t0 = cycles();
    for _ in 0..n {
        f();
    }
    cycles().wrapping_sub(t0)
}

fn main() {
    let at_main = cycles();
    println!("std-hello: hello from std");
    if !std::env::args().any(|a| a == "bench") {
        return;
    }
    if let Some(entry) = vmm_entry() {
        println!("bench: std_entry_to_main={}", at_main.wrapping_sub(entry));
    }
    // Warm-up, untimed: the first allocation and the first thread touch fresh memory (zeroed by the
    // VMM on first touch) and the first clock read calibrates the VMM's clock; the figures are the
    // steady state.
    std::hint::black_box(Box::new([0u8; 64]));
    std::thread::spawn(|| std::hint::black_box(1u32))
        .join()
        .unwrap();
    // A heap allocation and its free: 64 bytes through the global allocator (sys_malloc / sys_free).
    let base = timed(ALLOCS, || {
        std::hint::black_box(0u8);
    });
    let alloc = timed(ALLOCS, || {
        std::hint::black_box(Box::new([0u8; 64]));
    });
    println!(
        "bench: std_alloc_free_64={}",
        alloc.saturating_sub(base) / ALLOCS
    );
    // A thread that returns at once, spawned and joined (sys_spawn2, a switch to it, sys_join).
    let spawn = timed(THREADS, || {
        std::thread::spawn(|| std::hint::black_box(1u32))
            .join()
            .unwrap();
    });
    println!("bench: std_spawn_join={}", spawn / THREADS);
    println!("std-hello: bench done");
}
