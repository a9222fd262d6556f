//! RISC-V (HS-mode under OpenSBI) architecture layer: the only RISC-V code with inline assembly and raw
//! pointers, each block with a `SAFETY:` note.
//!
//! - [`entry`]: `_start` (OpenSBI jumps to 0x8020_0000 in HS-mode with a0 = hart id, a1 = device tree),
//!   the trap vector and the world switch into VS-mode;
//! - [`csr`]: safe CSR wrappers; [`devices`]: UART console, sifive_test exit, SBI calls to OpenSBI;
//! - [`start`]: the boot flow from device tree to `vcpu::run`, and [`hart::HwHart`], the real
//!   [`crate::riscv::Hart`].

pub(crate) mod csr;
pub(crate) mod devices;
pub(crate) mod entry;
pub(crate) mod hart;
pub(crate) mod start;

use libvmm_abi::stop::StopCode;

/// A trap while the VMM itself runs (not from the guest): a libvmm bug. Reports and stops.
#[no_mangle]
extern "C" fn libvmm_riscv64_host_trap() -> ! {
    let mut con = devices::Uart;
    crate::vmm_print!(
        &mut con,
        "libvmm: VMM trap scause={:#x} sepc={:#x} stval={:#x}\n",
        csr::scause(),
        csr::sepc(),
        csr::stval(),
    );
    crate::console::stop_line(&mut con, StopCode::VmmPanic as u8, format_args!("VMM trap"));
    devices::exit(StopCode::VmmPanic as u8)
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    let mut con = devices::Uart;
    crate::vmm_print!(&mut con, "libvmm: panic: {}\n", info,);
    crate::console::stop_line(
        &mut con,
        StopCode::VmmPanic as u8,
        format_args!("VMM panic"),
    );
    devices::exit(StopCode::VmmPanic as u8)
}
