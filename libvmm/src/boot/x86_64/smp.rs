//! Every physical CPU brought up by the VMM: the CPU list from ACPI (`x86::acpi`), the trampoline page
//! from the loader's memory map, INIT-SIPI-SIPI per AP through the LAPIC's ICR (one AP at a time), and
//! the AP's own half ([`libvmm_x86_ap_entry`]): the VMM's GDT and IDT, virtualization enabled by the AP
//! itself with its own storage (`svm::hw::ap_bring_up`, `vmx::hw::ap_bring_up`), the ready line, then
//! parked (halted, interrupts off) until guest SMP gives it a vCPU. The boot CPU runs the guest as before.
//!
//! A CPU that fails (its own bring-up refuses, or it never checks in) is reported by number; with
//! `libvmm.ap_failure=stop` the boot stops with the reason, otherwise the VM runs on the rest. A CPU
//! that did not check in gets a second INIT, so a late start cannot run on the next AP's stack.
//! `libvmm.selftest=ap-fail[=N]` makes CPU N (default: the last) refuse its own bring-up with the
//! reason `selftest`, so this path runs in the boot cases although no emulator's CPU fails.
#![deny(unsafe_code)] // see boot/mod.rs

use core::sync::atomic::Ordering;

use libvmm_abi::CLOCK_MONOTONIC;

use crate::arch::x86_64::serial::Serial;
use crate::arch::x86_64::smp;
use crate::arch::x86_64::{cpu, entry, lapic, tables};
use crate::cmdline::{ApFailure, Options, Selftest};
use crate::config::{AP_CHECKIN_TIMEOUT_US, MAX_CPUS};
use crate::cpus::{self, CpuState};
use crate::vm::{Platform, StopReason};
use crate::x86::acpi;
use crate::x86::bootproto::BootFacts;

/// Waits up to `us` microseconds (by the platform's clock; by a bounded spin count without one) for
/// `done`; returns whether it happened.
fn wait_us<P: Platform>(p: &P, us: u64, done: impl Fn() -> bool) -> bool {
    match p.clock_ns(CLOCK_MONOTONIC) {
        Some(start) => loop {
            if done() {
                return true;
            }
            let now = p.clock_ns(CLOCK_MONOTONIC).unwrap_or(u64::MAX);
            if now.saturating_sub(start) >= us * 1000 {
                return done();
            }
            core::hint::spin_loop();
        },
        None => (0..us.saturating_mul(100)).any(|_| done()) || done(),
    }
}

/// The RSDP: the loader's, else the legacy scan (the EBDA's first KiB, then 0xE0000..0xFFFFF).
fn find_rsdp(facts: &BootFacts<'_>) -> Option<u64> {
    if facts.rsdp.is_some() {
        return facts.rsdp;
    }
    let ebda = entry::phys(0x40E, 2).map(|b| (u16::from_le_bytes([b[0], b[1]]) as u64) << 4);
    let ebda = ebda.filter(|&a| (0x8_0000..0xA_0000).contains(&a));
    ebda.and_then(|a| acpi::scan_for_rsdp(a, entry::phys(a, 1024)?))
        .or_else(|| acpi::scan_for_rsdp(0xE_0000, entry::phys(0xE_0000, 0x2_0000)?))
}

/// Starts every AP the MADT lists. `Err` only when a CPU failed and `libvmm.ap_failure=stop`.
pub(super) fn start_aps<P: Platform>(
    facts: &BootFacts<'_>,
    platform: &mut P,
    options: &Options<'_>,
) -> Result<(), StopReason> {
    if cfg!(feature = "tdx") {
        return Ok(()); // the TDX image runs no guest and starts no CPU
    }
    let cpus = match find_rsdp(facts) {
        None => return Ok(()), // no ACPI: a single-CPU machine as far as the VMM can know
        Some(rsdp) => match acpi::cpus_from_rsdp(rsdp, entry::phys) {
            Ok(c) => c,
            Err(e) => {
                crate::vmm_print!(
                    platform.console(),
                    "libvmm: {}; running on the boot CPU only\n",
                    e.what()
                );
                return Ok(());
            }
        },
    };
    let me = lapic::id();
    super::platform::APIC_ID_OF[0].store(me, Ordering::Relaxed);
    if cpus.apic_ids.iter().all(|&id| id == me) && cpus.dropped == 0 {
        return Ok(());
    }
    // Kicks between vCPUs are fixed IPIs: every CPU's APIC is software-enabled.
    lapic::enable();
    crate::vmm_print!(
        platform.console(),
        "libvmm: ACPI lists {} CPU(s){}; boot CPU APIC id {}\n",
        cpus.apic_ids.len() as u32 + cpus.dropped,
        if cpus.dropped > 0 {
            " (beyond MAX_CPUS: left alone)"
        } else {
            ""
        },
        me
    );
    let Some(vector) =
        acpi::trampoline_page(&facts.ram, &facts.loader_ranges).and_then(smp::install_trampoline)
    else {
        crate::vmm_print!(
            platform.console(),
            "libvmm: no free page below 1 MiB for the AP trampoline; running on the boot CPU only\n"
        );
        return fail(options);
    };
    let aps = cpus.apic_ids.iter().filter(|&&id| id != me).count();
    if cpus::arm_selftest(options.selftest, aps.min(MAX_CPUS - 1)).is_none()
        && matches!(options.selftest, Some(Selftest::ApFail(_)))
    {
        crate::vmm_print!(
            platform.console(),
            "libvmm: selftest ap-fail: no such CPU; none fails\n"
        );
    }
    let mut n = 0;
    let mut ready = 1;
    for &id in cpus.apic_ids.iter().filter(|&&id| id != me) {
        n += 1;
        if n >= MAX_CPUS || !smp::prepare(n) {
            break;
        }
        super::platform::APIC_ID_OF[n].store(id, Ordering::Relaxed);
        let started = lapic::send_init(id)
            && {
                wait_us(platform, 10_000, || false);
                lapic::send_startup(id, vector)
            }
            && {
                wait_us(platform, 200, || cpus::state(n) != CpuState::NotStarted)
                    || lapic::send_startup(id, vector)
            };
        let state = if started {
            wait_us(platform, AP_CHECKIN_TIMEOUT_US, || {
                cpus::state(n) != CpuState::NotStarted
            });
            cpus::state(n)
        } else {
            CpuState::NotStarted
        };
        match state {
            CpuState::Ready => ready += 1,
            CpuState::Failed => {
                // It printed its reason.
                fail(options)?;
            }
            CpuState::NotStarted => {
                lapic::send_init(id);
                crate::vmm_print!(
                    platform.console(),
                    "libvmm: CPU {} (APIC id {}): did not start\n",
                    n,
                    id
                );
                fail(options)?;
            }
        }
    }
    crate::vmm_print!(
        platform.console(),
        "libvmm: {} CPU(s) virtualized; {}\n",
        ready,
        if cfg!(any(feature = "svm", feature = "vmx")) {
            "the boot CPU runs vCPU 0, the others wait for the guest to start them"
        } else {
            "the APs wait parked, the boot CPU runs the guest"
        }
    );
    Ok(())
}

fn fail(options: &Options<'_>) -> Result<(), StopReason> {
    match options.ap_failure {
        ApFailure::Continue => Ok(()),
        ApFailure::Stop => Err(StopReason::Platform(
            "a CPU failed bring-up (libvmm.ap_failure=stop)",
        )),
    }
}

/// An AP's first Rust code, on its own stack (from `arch::x86_64::smp`'s 64-bit entry).
#[allow(unsafe_code)] // `#[no_mangle]` only: the symbol the AP entry assembly calls.
#[no_mangle]
extern "C" fn libvmm_x86_ap_entry(cpu_index: u32) -> ! {
    let n = cpu_index as usize;
    tables::init_ap(n);
    cpu::enable_nx();
    let mut con = Serial;
    #[cfg(feature = "svm")]
    let result = if cpus::selftest_fails(n) {
        Err("selftest")
    } else {
        crate::svm::hw::ap_bring_up(n)
    };
    #[cfg(feature = "vmx")]
    let result = if cpus::selftest_fails(n) {
        Err("selftest")
    } else {
        crate::vmx::hw::ap_bring_up(n)
    };
    #[cfg(feature = "tdx")]
    let result: Result<(), &str> = Err("the TDX image starts no CPU");
    match &result {
        Ok(_) => crate::vmm_print!(
            &mut con,
            "libvmm: CPU {}: {} ready\n",
            n,
            super::BACKEND.name()
        ),
        Err(why) => crate::vmm_print!(&mut con, "libvmm: CPU {}: bring-up failed: {}\n", n, why),
    }
    // Kicks from other CPUs reach it from now on.
    lapic::enable();
    cpus::check_in(n, result.is_ok());
    #[cfg(any(feature = "svm", feature = "vmx"))]
    if let Ok(storage) = result {
        ap_vcpu(n, storage)
    }
    smp::park()
}

/// What every AP needs to run a vCPU of the one VM, published by the boot CPU before it enters the
/// guest (guest SMP: the APs wait for it).
#[derive(Clone, Copy)]
#[cfg_attr(feature = "tdx", allow(dead_code))] // the TDX image runs no guest APs
pub(super) struct VmFacts {
    pub mem: crate::guest_mem::GuestMemory<'static>,
    pub map: crate::loader::GuestMap,
    pub boot_tsc: u64,
    pub cpus: u32,
    pub stats: bool,
    pub force_emulation: bool,
}

pub(super) static FACTS: crate::arch::Published<VmFacts> = crate::arch::Published::new();

/// The guest's vCPUs: the boot CPU and every CPU after it that came up, in order up to the first that
/// did not (vCPU n runs on CPU n), at most `libvmm.cpus`. SVM and VMX (the TDX image runs no guest).
pub(super) fn guest_vcpus(options: &Options<'_>) -> usize {
    if cfg!(feature = "tdx") {
        return 1;
    }
    let mut n = 1;
    while n < MAX_CPUS && cpus::state(n) == CpuState::Ready {
        n += 1;
    }
    match options.cpus {
        Some(max) => n.min(max as usize),
        None => n,
    }
}

/// vCPU `n` on this AP until the VM stops, for either backend: wait for the VM's facts and the
/// backend's shared structures (`links`, published by the boot vCPU's bring-up; a kick wakes it), build
/// this vCPU's `Vm`, and `run` it (the backend's AP loop: each STARTUP from the guest starts it, each
/// INIT sends it back to wait). The first vCPU to stop the VM prints the one stop line; the others park.
/// Generic over the backend's links and loop (no vtable: one instantiation per image, inlined into its
/// one caller; the closure gets only what the VM's `Vm` does not hold already, which kept the SVM image
/// from growing).
#[cfg(any(feature = "svm", feature = "vmx"))]
#[inline(always)]
fn run_ap_vcpu<L: Copy>(
    n: usize,
    links: &crate::arch::Published<L>,
    run: impl FnOnce(&mut crate::vm::Vm<'static, super::platform::X86Platform>, L) -> StopReason,
) -> ! {
    use crate::vm::Vm;
    let shared = &crate::smp::SHARED;
    let (f, links) = loop {
        if let (Some(f), Some(l)) = (FACTS.get(), links.get()) {
            break (f, l);
        }
        if shared.stopping() {
            smp::park()
        }
        cpu::wait_for_interrupt();
    };
    if n >= shared.cpu_count() {
        smp::park()
    }
    let mut vm = Vm::new(f.mem, super::platform::X86Platform::new(Serial, f.boot_tsc));
    vm.map = f.map;
    // The boot vCPU zeroed and mapped every deferred block (the VM's one lazy state) before it
    // published the links.
    vm.cpu = n;
    vm.cpus = f.cpus;
    vm.emu.force = f.force_emulation;
    let stop = run(&mut vm, links);
    let stop = crate::boot::finish(&mut vm, stop, f.stats, smp::park);
    super::stop_machine(stop.code(), format_args!("{stop}"))
}

/// SVM: vCPU `n` with this CPU's own VMCB over the VM's nested tables and permission maps
/// (`svm::hw::run_ap`).
#[cfg(feature = "svm")]
fn ap_vcpu(n: usize, st: &'static mut crate::svm::SvmCpuStorage) -> ! {
    run_ap_vcpu(n, &crate::svm::hw::VM_LINKS, |vm, links| {
        crate::svm::hw::run_ap(
            vm,
            &mut crate::svm::hw::RealSvm,
            &mut st.vmcb,
            links,
            wait_for_sipi,
        )
    })
}

/// VMX: vCPU `n` with this CPU's own VMCS and virtual-APIC page (`pages`, from bring-up) over the VM's
/// shared EPT and bitmaps, real-mode starts under "unrestricted guest" (`vmx::hw::run_ap`).
#[cfg(feature = "vmx")]
fn ap_vcpu(n: usize, pages: &'static mut crate::vmx::pages::VmxCpuPages) -> ! {
    run_ap_vcpu(n, &crate::vmx::hw::VM_LINKS, |vm, links| {
        let options = Options {
            force_emulation: vm.emu.force,
            ..Options::default()
        };
        crate::vmx::hw::run_ap_here(vm, pages, links, &options, wait_for_sipi)
    })
}

/// An off vCPU's CPU waits halted (a kick wakes it) for a STARTUP IPI; `None` when the VM stops. An
/// INIT that comes while it waits changes nothing (it waits for a SIPI already).
#[cfg(any(feature = "svm", feature = "vmx"))]
fn wait_for_sipi<P: crate::vm::Platform>(vm: &mut crate::vm::Vm<'_, P>) -> Option<u8> {
    loop {
        if vm.smp.stopping() {
            return None;
        }
        vm.smp.take_init(vm.cpu);
        if let Some(v) = vm.smp.take_sipi(vm.cpu) {
            return Some(v);
        }
        vm.platform.idle();
    }
}
