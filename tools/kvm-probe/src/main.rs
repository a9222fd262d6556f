//! PID 1 of the initramfs that `cargo xtask bench --vs-kvm` boots with Debian's Linux kernel in the same
//! QEMU TCG and icount set-up as libvmm's bench: it loads the KVM modules, creates a VM the way QEMU
//! does (in-kernel irqchip, the full supported CPUID table) with rust-vmm's `kvm-ioctls`, runs a tiny
//! 64-bit guest that times loops of exiting instructions with RDTSC (one tick per emulated instruction
//! under `-icount shift=0`), and prints one line `KVM_PROBE key=value ...`, then reboots (QEMU runs with
//! `-no-reboot`, so it exits).
//!
//! Figures, each the loop with the exiting instruction minus the same loop without it, per iteration
//! (the method of libvmm's `exitbench`): `cpuid` (CPUID leaf 0x4000_0000, answered in the kernel),
//! `out` (port I/O out to this userspace VMM and back), `pic_in` (port I/O in from the in-kernel PIC).
//! Each is the median of [`BATCHES`] batches of [`N`] iterations, so a timer tick landing in one batch
//! does not move it.
//!
//! Why a hand-written harness: this is the smallest VMM that uses KVM like QEMU, and the well-kept crates
//! it needs (`kvm-ioctls`, `kvm-bindings`) are used; the guest is 115 bytes of machine code.

#[cfg(target_os = "linux")]
mod probe;

#[cfg(target_os = "linux")]
fn main() {
    probe::main()
}

#[cfg(not(target_os = "linux"))]
fn main() {
    eprintln!("kvm-probe runs only on Linux");
}

/// Iterations per batch: 100 exits of ~3000 emulated instructions take 0.3 ms of virtual time, well
/// inside one 4 ms timer tick (HZ=250), so most batches see no tick and their median none.
pub const N: u64 = 100;
/// Batches per figure.
pub const BATCHES: usize = 21;
