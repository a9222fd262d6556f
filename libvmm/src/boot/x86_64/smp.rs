//! Every physical CPU brought up by the VMM: the CPU list from ACPI (`x86::acpi`), the trampoline page
//! from the loader's memory map, INIT-SIPI-SIPI per AP through the LAPIC's ICR (one AP at a time), and
//! the AP's own half ([`libvmm_x86_ap_entry`]): the VMM's GDT and IDT, virtualization enabled by the AP
//! itself with its own storage (`svm::hw::ap_bring_up`, `vmx::hw::ap_bring_up`), the ready line, then
//! parked (halted, interrupts off) until guest SMP gives it a vCPU. The boot CPU runs the guest as before.
//!
//! A CPU that fails (its own bring-up refuses, or it never checks in) is reported by number; with
//! `libvmm.ap_failure=stop` the boot stops with the reason, otherwise the VM runs on the rest. A CPU
//! that did not check in gets a second INIT, so a late start cannot run on the next AP's stack.
#![deny(unsafe_code)] // see boot/mod.rs

use libvmm_abi::CLOCK_MONOTONIC;

use crate::arch::x86_64::serial::Serial;
use crate::arch::x86_64::smp;
use crate::arch::x86_64::{cpu, entry, lapic, tables};
use crate::cmdline::{ApFailure, Options};
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
    if cpus.apic_ids.iter().all(|&id| id == me) && cpus.dropped == 0 {
        return Ok(());
    }
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
    let mut n = 0;
    let mut ready = 1;
    for &id in cpus.apic_ids.iter().filter(|&&id| id != me) {
        n += 1;
        if n >= MAX_CPUS || !smp::prepare(n) {
            break;
        }
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
        "libvmm: {} CPU(s) virtualized; the APs wait parked, the boot CPU runs the guest\n",
        ready
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
    tables::init_ap();
    cpu::enable_nx();
    let mut con = Serial;
    #[cfg(feature = "svm")]
    let result = crate::svm::hw::ap_bring_up(n);
    #[cfg(feature = "vmx")]
    let result = crate::vmx::hw::ap_bring_up(n);
    #[cfg(feature = "tdx")]
    let result: Result<(), &str> = Err("the TDX image starts no CPU");
    match result {
        Ok(()) => crate::vmm_print!(
            &mut con,
            "libvmm: CPU {}: {} ready\n",
            n,
            super::BACKEND.name()
        ),
        Err(why) => crate::vmm_print!(&mut con, "libvmm: CPU {}: bring-up failed: {}\n", n, why),
    }
    cpus::check_in(n, result.is_ok());
    smp::park()
}
