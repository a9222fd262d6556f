//! The x86 boot flow, from the first Rust instruction to the stop line:
//! console -> VMM tables -> loader facts -> guest window checks -> payload load -> initial guest
//! state -> the backend this image was built for (SVM or VMX; TDX reports that no module is present)
//! -> stop line -> exit device.

use core::fmt::Arguments;

use libvmm_abi::layout::x86_64::{WINDOW_BASE, WINDOW_SIZE};
use libvmm_abi::stop::StopCode;

use super::serial::Serial;
use super::{boot, exit_device, platform::X86Platform, tables};
use crate::guest_mem::GuestMemory;
use crate::vcpu::{StopReason, Vm};
use crate::x86::bootproto;

extern "Rust" {
    static LIBVMM_PAYLOAD: crate::Payload;
}

#[cfg(feature = "svm")]
const BACKEND: libvmm_abi::BackendId = libvmm_abi::BackendId::Svm;
#[cfg(feature = "vmx")]
const BACKEND: libvmm_abi::BackendId = libvmm_abi::BackendId::Vmx;
#[cfg(feature = "tdx")]
const BACKEND: libvmm_abi::BackendId = libvmm_abi::BackendId::Tdx;
#[cfg(not(any(feature = "svm", feature = "vmx", feature = "tdx")))]
compile_error!("an x86 image needs exactly one backend feature: svm, vmx or tdx");

/// Physical memory below 4 GiB (identity-mapped by the boot tables), read-only, bounds-checked.
fn phys(addr: u64, len: usize) -> Option<&'static [u8]> {
    let end = addr.checked_add(len as u64)?;
    if addr == 0 || end > 1 << 32 {
        return None;
    }
    // SAFETY: the boot page tables map 0..4 GiB; loaders place their information in RAM there, and the
    // VMM only reads it, before any guest runs.
    Some(unsafe { core::slice::from_raw_parts(addr as *const u8, len) })
}

/// The guest window as bytes. Called once.
fn window() -> &'static mut [u8] {
    // SAFETY: the window is RAM (checked against the loader's map), outside the VMM image (checked), and
    // this is the only reference to it the VMM creates.
    unsafe { core::slice::from_raw_parts_mut(WINDOW_BASE as *mut u8, WINDOW_SIZE as usize) }
}

#[no_mangle]
extern "C" fn libvmm_x86_entry() -> ! {
    let entry = boot::entry_state();
    let mut con = Serial::init();
    tables::init();
    super::lapic::mask_legacy_pics();
    super::cpu::enable_nx();
    // SAFETY: the image crate defines this static through `libvmm::image!`.
    let payload: &crate::Payload = unsafe { &LIBVMM_PAYLOAD };
    crate::vmm_print!(
        &mut con,
        "libvmm {}: backend {}, payload {}\n",
        env!("CARGO_PKG_VERSION"),
        BACKEND.name(),
        payload.name
    );
    crate::console::announce_token(&mut con, crate::console::make_token(super::cpu::entropy()));
    let stop = boot_and_run(entry, con, payload);
    let mut con = Serial;
    stop_machine(&mut con, stop.code(), format_args!("{stop}"))
}

fn boot_and_run(entry: boot::EntryState, mut con: Serial, payload: &crate::Payload) -> StopReason {
    let facts = match bootproto::parse(entry.magic, entry.info, phys) {
        Ok(f) => f,
        Err(e) => return StopReason::Platform(e),
    };
    let (img_start, img_end) = boot::image_range();
    crate::vmm_print!(
        &mut con,
        "libvmm: booted via {}, image {:#x}..{:#x}, guest window {:#x}..{:#x}\n",
        facts.protocol.name(),
        img_start,
        img_end,
        WINDOW_BASE,
        WINDOW_BASE + WINDOW_SIZE
    );
    selftest(facts.cmdline);
    if img_end > WINDOW_BASE && img_start < WINDOW_BASE + WINDOW_SIZE {
        return StopReason::Platform("the VMM image overlaps the guest window");
    }
    if !facts.ram.is_empty() && !facts.is_ram(WINDOW_BASE, WINDOW_SIZE) {
        return StopReason::Platform(
            "the guest window is not RAM in the loader's memory map (give the machine at least 64 MiB)",
        );
    }
    let mut mem = GuestMemory::new(WINDOW_BASE, window());
    let _ = mem.fill(WINDOW_BASE, WINDOW_SIZE, 0);
    let loaded = match crate::loader::load(payload, &mut mem, BACKEND, facts.cmdline, entry.tsc) {
        Ok(l) => l,
        Err(e) => return StopReason::Platform(e.describe()),
    };
    let state = match crate::x86::guest_setup::build(&mut mem, &loaded) {
        Ok(s) => s,
        Err(_) => return StopReason::Platform("guest page tables do not fit in the guest window"),
    };
    let mut platform = X86Platform::new(con, entry.tsc);
    if let Some(ms) = crate::cmdline::number(facts.cmdline, "timeout_ms") {
        if BACKEND == libvmm_abi::BackendId::Tdx {
            return StopReason::Unsupported("libvmm.timeout_ms: the TDX image runs no guest");
        }
        if let Err(e) = platform.set_time_limit(ms) {
            return StopReason::Unsupported(e);
        }
    }
    let mut vm = Vm::new(mem, platform);
    run_backend(&mut vm, &state)
}

#[cfg(feature = "vmx")]
fn run_backend(
    vm: &mut Vm<'_, X86Platform>,
    state: &crate::x86::guest_setup::InitialState,
) -> StopReason {
    crate::vmx::boot(vm, state)
}

#[cfg(feature = "svm")]
fn run_backend(
    vm: &mut Vm<'_, X86Platform>,
    state: &crate::x86::guest_setup::InitialState,
) -> StopReason {
    crate::svm::boot(vm, state)
}

#[cfg(feature = "tdx")]
fn run_backend(
    vm: &mut Vm<'_, X86Platform>,
    _state: &crate::x86::guest_setup::InitialState,
) -> StopReason {
    crate::tdx::boot(vm)
}

/// `libvmm.selftest=panic|fault` on the command line makes the VMM fail on purpose, so that the panic
/// handler and the VMM's own exception handlers are exercised by tests.
fn selftest(cmdline: &[u8]) {
    match crate::cmdline::value(cmdline, "selftest") {
        Some(b"panic") => panic!("deliberate VMM panic (libvmm.selftest=panic)"),
        // SAFETY: deliberately raises #UD in the VMM to test its exception handler.
        Some(b"fault") => unsafe { core::arch::asm!("ud2") },
        _ => {}
    }
}

/// Prints the stop line and ends the machine.
pub fn stop_machine(con: &mut Serial, code: u8, reason: Arguments<'_>) -> ! {
    crate::console::stop_line(con, code, reason);
    con.drain();
    exit_device::exit(code)
}

#[cfg(not(test))]
#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    let mut con = Serial;
    match info.location() {
        Some(l) => {
            crate::vmm_print!(
                &mut con,
                "\nlibvmm: VMM panic at {}:{}: {}\n",
                l.file(),
                l.line(),
                info.message()
            )
        }
        None => crate::vmm_print!(&mut con, "\nlibvmm: VMM panic: {}\n", info.message()),
    }
    stop_machine(
        &mut con,
        StopCode::VmmPanic as u8,
        format_args!("VMM panic"),
    )
}
