//! The x86 machine: entry from PVH or multiboot2 (`arch::x86_64::entry`), COM1, the VMM's own tables,
//! loader facts, the guest window checks, the initial long-mode guest state, and the backend this image
//! was built for (SVM or VMX; TDX reports that no module is present). The panic handler is here.
#![deny(unsafe_code)] // see boot/mod.rs

mod platform;
mod smp;

use libvmm_abi::layout::x86_64::{WINDOW_BASE, WINDOW_MAX};
use libvmm_abi::stop::StopCode;
use libvmm_abi::BackendId;

use crate::arch::x86_64::serial::Serial;
use crate::arch::x86_64::{cpu, entry, exit_device, lapic, tables};
use crate::cmdline::Options;
use crate::guest_mem::GuestMemory;
use crate::loader::Loaded;
use crate::vm::{Platform, StopReason, Vm};
use crate::x86::bootproto;
use crate::x86::guest_setup::InitialState;

use platform::X86Platform;

#[cfg(feature = "svm")]
const BACKEND: BackendId = BackendId::Svm;
#[cfg(feature = "vmx")]
const BACKEND: BackendId = BackendId::Vmx;
#[cfg(feature = "tdx")]
const BACKEND: BackendId = BackendId::Tdx;
#[cfg(not(any(feature = "svm", feature = "vmx", feature = "tdx")))]
compile_error!("an x86 image needs exactly one backend feature: svm, vmx or tdx");

struct X86Machine {
    entry: entry::EntryState,
    con: Serial,
    facts: Option<bootproto::BootFacts<'static>>,
}

impl super::Machine for X86Machine {
    type Platform = X86Platform;
    type Guest = InitialState;
    const BACKEND: BackendId = BACKEND;

    fn facts(&mut self) -> Result<&'static [u8], StopReason> {
        let facts = bootproto::parse(self.entry.magic, self.entry.info, entry::phys)
            .map_err(StopReason::Platform)?;
        let (img_start, img_end) = entry::image_range();
        crate::vmm_print!(
            &mut self.con,
            "libvmm: booted via {}, image {:#x}..{:#x}, guest window from {:#x}\n",
            facts.protocol.name(),
            img_start,
            img_end,
            WINDOW_BASE,
        );
        let cmdline = facts.cmdline;
        self.facts = Some(facts);
        Ok(cmdline)
    }

    fn entry_time(&self) -> u64 {
        self.entry.tsc
    }

    fn guest_window(&mut self, asked: Option<u64>) -> Result<(u64, &'static mut [u8]), StopReason> {
        let (_, img_end) = entry::image_range();
        // The VMM's image, .bss (tables, control blocks) and stacks lie below the window.
        if img_end > WINDOW_BASE {
            return Err(StopReason::Platform(
                "the VMM image reaches into the guest window",
            ));
        }
        let facts = self
            .facts
            .as_ref()
            .ok_or(StopReason::Platform("no loader facts"))?;
        // The RAM range from the window's base up, cut where the loader's information the VMM still
        // reads begins (GRUB may put its multiboot2 information anywhere), and at the test device.
        // A loader that gives no memory map at all: the smallest window, as before the guest's memory
        // was sized from the machine.
        let end = if facts.ram.is_empty() {
            Some(WINDOW_BASE + crate::config::GUEST_MEM_MIN)
        } else {
            crate::loader::window::available_end(
                WINDOW_BASE,
                &facts.ram,
                &facts.loader_ranges,
                WINDOW_BASE + WINDOW_MAX,
            )
        };
        let size = crate::loader::window::size(WINDOW_BASE, end, asked)
            .map_err(StopReason::GuestMemory)?;
        let window = crate::arch::guest_window(WINDOW_BASE, size).ok_or(StopReason::Platform(
            "the guest window was handed out twice",
        ))?;
        Ok((WINDOW_BASE, window))
    }

    fn deliberate_fault(&mut self) {
        cpu::deliberate_fault()
    }

    fn park() -> ! {
        crate::arch::x86_64::smp::park()
    }

    fn prepare(
        &mut self,
        mem: &mut GuestMemory<'static>,
        loaded: &Loaded,
        _options: &Options<'static>,
    ) -> Result<InitialState, StopReason> {
        crate::x86::guest_setup::build(mem, loaded)
            .map_err(|_| StopReason::Platform("guest page tables do not fit in the guest window"))
    }

    fn platform(&mut self, options: &Options<'static>) -> Result<X86Platform, StopReason> {
        // The boot CPU's own support first: where it cannot run the backend, no AP is started (each
        // would fail alike) and the boot stops with the reason, before any CPU is said virtualized.
        #[cfg(feature = "svm")]
        crate::svm::hw::boot_cpu_support().map_err(StopReason::Unsupported)?;
        #[cfg(feature = "vmx")]
        crate::vmx::hw::boot_cpu_support().map_err(StopReason::Unsupported)?;
        let mut platform = X86Platform::new(Serial, self.entry.tsc);
        if let Some(facts) = self.facts.as_ref() {
            smp::start_aps(facts, &mut platform, options)?;
        }
        if let Some(ms) = options.timeout_ms {
            if BACKEND == BackendId::Tdx {
                return Err(StopReason::Unsupported(
                    "libvmm.timeout_ms: the TDX image runs no guest",
                ));
            }
            platform
                .set_time_limit(ms)
                .map_err(StopReason::Unsupported)?;
        }
        Ok(platform)
    }

    fn run(
        vm: &mut Vm<'static, X86Platform>,
        guest: &InitialState,
        options: &Options<'static>,
    ) -> StopReason {
        // Guest SMP: every AP that came up runs a vCPU (up to `libvmm.cpus`); they wait for these facts.
        let vcpus = smp::guest_vcpus(options);
        vm.cpus = vcpus as u32;
        vm.smp.publish(vcpus);
        if vcpus > 1 {
            smp::FACTS.set(smp::VmFacts {
                mem: vm.mem,
                map: vm.map,
                boot_tsc: vm.platform.boot_tsc(),
                cpus: vcpus as u32,
                stats: options.stats,
                force_emulation: options.force_emulation,
            });
            crate::vmm_print!(
                vm.platform.console(),
                "libvmm: guest SMP: {} vCPUs, one per CPU, pinned; APs start on the guest's INIT + SIPI\n",
                vcpus
            );
        }
        let stranded = crate::cpus::stranded(vcpus);
        if stranded > 0 {
            crate::vmm_print!(
                vm.platform.console(),
                "libvmm: guest SMP: CPU {} did not come up, so the guest has {} vCPU(s) (vCPU n runs on CPU n); {} ready CPU(s) after it stay idle\n",
                vcpus,
                vcpus,
                stranded
            );
        }
        #[cfg(feature = "svm")]
        return crate::svm::boot(vm, guest, options);
        #[cfg(feature = "vmx")]
        return crate::vmx::boot(vm, guest, options);
        #[cfg(feature = "tdx")]
        {
            let _ = (guest, options);
            crate::tdx::boot(vm)
        }
    }
}

/// Called by `arch::x86_64::entry` in long mode on the boot stack, with the BSS zeroed.
#[allow(unsafe_code)] // `#[no_mangle]` only: the symbol the entry assembly calls.
#[no_mangle]
extern "C" fn libvmm_x86_entry() -> ! {
    let entry = entry::entry_state();
    let mut con = Serial::init();
    tables::init();
    lapic::mask_legacy_pics();
    cpu::enable_nx();
    let payload = crate::arch::payload();
    crate::vmm_print!(
        &mut con,
        "libvmm {}: backend {}, payload {}\n",
        env!("CARGO_PKG_VERSION"),
        BACKEND.name(),
        payload.name
    );
    crate::console::announce_token(&mut con, crate::console::make_token(cpu::entropy()));
    let mut machine = X86Machine {
        entry,
        con,
        facts: None,
    };
    let stop = super::run(&mut machine, payload);
    stop_machine(stop.code(), format_args!("{stop}"))
}

/// Prints the stop line and ends the machine.
fn stop_machine(code: u8, reason: core::fmt::Arguments<'_>) -> ! {
    let mut con = Serial;
    crate::console::stop_line(&mut con, code, reason);
    con.drain();
    exit_device::exit(code)
}

#[cfg(not(test))]
#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    let mut con = Serial;
    match info.location() {
        Some(l) => crate::vmm_print!(
            &mut con,
            "libvmm: VMM panic at {}:{}: {}\n",
            l.file(),
            l.line(),
            info.message()
        ),
        None => crate::vmm_print!(&mut con, "libvmm: VMM panic: {}\n", info.message()),
    }
    stop_machine(StopCode::VmmPanic as u8, format_args!("VMM panic"))
}
