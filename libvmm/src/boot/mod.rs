//! The composition root: the one place that knows every layer and puts them together, from the first
//! Rust instruction to the stop line. The flow is one skeleton for every architecture ([`run`]):
//!
//! ```text
//! platform facts (loader info / device tree) -> VMM options (parsed once) -> guest window, zeroed
//!   -> payload loaded, its W^X memory map drawn -> architecture's guest set-up -> Vm
//!   -> backend bring-up (nested tables from the map) -> generic run loop
//!   -> exit statistics (`libvmm.stats=1`) -> stop line (with the boot token) -> exit device
//! ```
//!
//! What truly differs per architecture is a [`Machine`]: `x86_64` (PVH / multiboot2 entry, COM1, the
//! SVM / VMX / TDX backend this image was built for) and `riscv64` (OpenSBI hand-off, the device tree,
//! the H-extension backend). The panic handlers and the stop line live here too.
// `deny`, not `forbid` as in every other generic module: the per-architecture entry symbol needs
// `#[no_mangle]`, which the lint counts as unsafe, and allows it on that one item. No `unsafe` block.
#![deny(unsafe_code)]

#[cfg(target_arch = "riscv64")]
mod riscv64;
#[cfg(target_arch = "x86_64")]
mod x86_64;

use libvmm_abi::BackendId;

use crate::cmdline::{Options, Selftest};
use crate::guest_mem::GuestMemory;
use crate::loader::Loaded;
use crate::vm::{Platform, StopReason, Vm};

/// What one architecture contributes to the boot skeleton.
pub(crate) trait Machine {
    type Platform: Platform;
    /// The architecture's initial guest state, handed to the backend.
    type Guest;
    const BACKEND: BackendId;

    /// Reads the platform facts (memory map, device tree) and returns the image's command line.
    fn facts(&mut self) -> Result<&'static [u8], StopReason>;
    /// A time stamp of the VMM's entry, in the clock the payload's boot info reports.
    fn entry_time(&self) -> u64;
    /// Sizes the guest window from the platform (all the RAM above its base that the VMM does not keep,
    /// or `asked`: `libvmm.mem=`), checks it against the VMM's own addresses, and hands its bytes out.
    fn guest_window(&mut self, asked: Option<u64>) -> Result<(u64, &'static mut [u8]), StopReason>;
    /// Raises an exception in the VMM on purpose (`libvmm.selftest=fault`).
    fn deliberate_fault(&mut self);
    /// The architecture's guest set-up once the payload is loaded (x86: page tables and register state;
    /// RISC-V: the guest ISA and device tree).
    fn prepare(
        &mut self,
        mem: &mut GuestMemory<'static>,
        loaded: &Loaded,
        options: &Options<'static>,
    ) -> Result<Self::Guest, StopReason>;
    /// The host services of the run loop, with the options that concern them (time limit).
    fn platform(&mut self, options: &Options<'static>) -> Result<Self::Platform, StopReason>;
    /// Parks this CPU for good (interrupts off, halted): a vCPU that left a stopped VM.
    fn park() -> !;
    /// Brings the backend up and runs the guest until it stops.
    fn run(
        vm: &mut Vm<'static, Self::Platform>,
        guest: &Self::Guest,
        options: &Options<'static>,
    ) -> StopReason;
}

/// The boot skeleton, the same on every architecture.
pub(crate) fn run<M: Machine>(m: &mut M, payload: &'static crate::Payload) -> StopReason {
    let cmdline = match m.facts() {
        Ok(c) => c,
        Err(stop) => return stop,
    };
    let options = match Options::parse(cmdline) {
        Ok(o) => o,
        Err(refused) => return StopReason::Option(refused),
    };
    match options.selftest {
        Some(Selftest::Panic) => panic!("deliberate VMM panic (libvmm.selftest=panic)"),
        Some(Selftest::Fault) => m.deliberate_fault(),
        // Armed where the CPUs are started (`cpus::arm_selftest`).
        Some(Selftest::ApFail(_)) | None => {}
    }
    let (base, window) = match m.guest_window(options.mem) {
        Ok(w) => w,
        Err(stop) => return stop,
    };
    let mut mem = GuestMemory::new(base, window);
    // The payload ELF, parsed and validated (a PIE goes to the window's payload offset).
    let load_at = base + libvmm_abi::layout::PAYLOAD_OFFSET;
    let img = match crate::loader::elf_image::parse(
        payload.elf,
        load_at,
        crate::loader::elf_image::native(),
    ) {
        Ok(img) => img,
        Err(e) => return StopReason::Platform(e.describe()),
    };
    // W^X: what the nested tables will allow where (payload text r-x, read-only data r--, the rest rw-).
    let mut map = match crate::loader::guest_map(&img, base, mem.size()) {
        Ok(map) => map,
        Err(e) => return StopReason::Platform(e.describe()),
    };
    // No stale host memory is ever shown to a guest: the blocks the VMM writes now (boot info, guest
    // page tables or device tree, the payload) are zeroed here; every block above the payload is zeroed
    // and mapped on its first touch, so what boot costs does not grow with the guest's memory.
    map.defer_from(img.hi);
    let eager = zero_eager(&map, &mut mem);
    let loaded = match crate::loader::load(&img, &mut mem, M::BACKEND, cmdline, m.entry_time()) {
        Ok(l) => l,
        Err(e) => return StopReason::Platform(e.describe()),
    };
    let guest = match m.prepare(&mut mem, &loaded, &options) {
        Ok(g) => g,
        Err(stop) => return stop,
    };
    let platform = match m.platform(&options) {
        Ok(p) => p,
        Err(stop) => return stop,
    };
    let mut vm = Vm::new(mem, platform);
    vm.map = map;
    // The deferred blocks, as the one state every vCPU of the VM shares (`lazy.rs`).
    vm.lazy.arm(&map);
    crate::vmm_print!(
        vm.platform.console(),
        "libvmm: guest memory {:#x}..{:#x} ({} MiB; {} MiB zeroed at boot, the rest on first touch)\n",
        base,
        map.end(),
        (map.end() - base) >> 20,
        eager >> 20
    );
    crate::vmm_print!(
        vm.platform.console(),
        "libvmm: guest memory map (W^X): {map}\n"
    );
    let stop = M::run(&mut vm, &guest, &options);
    finish(&mut vm, stop, options.stats, M::park)
}

/// Spins the first stopping vCPU waits, at most, for the others to leave the VM (a CPU that died must
/// not hold the stop line back).
const STOP_WAIT_SPINS: u64 = 50_000_000;

/// After vCPU `vm.cpu`'s loop ended with `stop` (guest SMP: every CPU of the VM ends here). The first
/// vCPU to stop the VM forces every other one out (a host IPI each: they see the stop flag on that host
/// event, or in their wait for a start), waits for them to leave, prints the exit statistics
/// (`libvmm.stats=1`: its own by reason, and with several vCPUs each one's total) and returns the
/// reason for the image's one stop line. Every other vCPU publishes its exit count and parks for good.
pub(crate) fn finish<P: Platform>(
    vm: &mut Vm<'static, P>,
    stop: StopReason,
    stats: bool,
    park: fn() -> !,
) -> StopReason {
    let first = stop != StopReason::StoppedElsewhere && vm.smp.stop_vm(vm.cpu);
    if !first {
        vm.smp.park(vm.cpu, vm.exits);
        park()
    }
    let (me, n) = (vm.cpu, vm.smp.cpu_count());
    for c in (0..n).filter(|&c| c != me) {
        vm.platform.kick(c);
    }
    let mut spins = 0;
    while spins < STOP_WAIT_SPINS && (0..n).any(|c| c != me && !vm.smp.parked(c)) {
        core::hint::spin_loop();
        spins += 1;
    }
    if stats {
        #[cfg(target_arch = "x86_64")]
        vm.emu.print(vm.platform.console());
        vm.stats.print(vm.exits, vm.platform.console());
        if n > 1 {
            for c in 0..n {
                let exits = if c == me { vm.exits } else { vm.smp.exits(c) };
                crate::vmm_print!(
                    vm.platform.console(),
                    "libvmm: stats: vCPU {c}: {exits} exits{}\n",
                    if c == me { " (stopped the VM)" } else { "" }
                );
            }
        }
    }
    stop
}

/// Zeroes every block of the window that is not deferred to its first touch; returns the bytes zeroed.
fn zero_eager(map: &crate::loader::GuestMap, mem: &mut GuestMemory<'_>) -> u64 {
    use crate::config::LAZY_BLOCK;
    let (base, end) = (map.base(), map.end());
    let mut zeroed = 0;
    let mut block = base;
    while block < end {
        let len = LAZY_BLOCK.min(end - block);
        if !map.is_deferred(block) && mem.fill(block, len, 0).is_ok() {
            zeroed += len;
        }
        block += len;
    }
    zeroed
}
