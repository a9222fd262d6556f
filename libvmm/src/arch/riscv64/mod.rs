//! RISC-V (HS-mode under OpenSBI) primitives: the only RISC-V code with inline assembly and raw
//! pointers, each block with a `SAFETY:` note.
//!
//! - [`entry`]: `_start` (OpenSBI jumps to 0x8020_0000 in HS-mode with a0 = hart id, a1 = device tree),
//!   the stacks, the trap vector and the world switch into VS-mode;
//! - [`csr`]: safe CSR wrappers; [`devices`]: UART console, sifive_test exit, SBI calls to OpenSBI;
//! - here: the device tree OpenSBI handed over, the image's end, a deliberate fault, and the handler of
//!   a trap taken by the VMM itself.
//!
//! The boot flow that uses them is `boot::riscv64`; the backend's `Hart` over them is `riscv::hw`.

pub(crate) mod csr;
pub(crate) mod devices;
pub(crate) mod entry;

use libvmm_abi::stop::StopCode;

/// A trap while the VMM itself runs (not from the guest): a libvmm bug (or `libvmm.selftest=fault`).
/// Reports and stops.
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

/// Bytes one `cbo.zero` clears (Zicboz), 0 while [`zero_guest`] must not use it.
static CBOZ_BLOCK: core::sync::atomic::AtomicUsize = core::sync::atomic::AtomicUsize::new(0);

/// Lets [`zero_guest`] use Zicboz's `cbo.zero` with `block`-byte blocks (a power of two, from the
/// device tree's `riscv,cboz-block-size`; the boot checks every hart has Zicboz).
pub fn use_cbo_zero(block: u64) {
    if block.is_power_of_two() && (8..=4096).contains(&block) {
        CBOZ_BLOCK.store(block as usize, core::sync::atomic::Ordering::Relaxed);
    }
}

/// Zeroes guest memory `dst`, its whole cache blocks with `cbo.zero` (one instruction a block, where
/// the store loop of `memset` takes three per 8 bytes: zeroing the guest's memory before the other
/// vCPUs start cost ~23 M emulated instructions that way), the ragged ends with stores. `false`: no
/// Zicboz, or no whole block in `dst`; nothing was written and the caller zeroes it.
pub fn zero_guest(dst: &[core::sync::atomic::AtomicU8]) -> bool {
    let b = CBOZ_BLOCK.load(core::sync::atomic::Ordering::Relaxed);
    let start = dst.as_ptr() as usize;
    let end = start + dst.len();
    let first = start.wrapping_add(b.wrapping_sub(1)) & !b.wrapping_sub(1);
    let last = end & !b.wrapping_sub(1);
    if b == 0 || first < start || first >= last {
        return false;
    }
    // SAFETY: `[start, end)` is `dst`, valid writable bytes behind UnsafeCells (guest memory is never
    // borrowed as `&[u8]`/`&mut [u8]`, see `arch::shared::copy_to_guest`); `[first, last)` is the run
    // of whole `b`-byte blocks inside it, so `cbo.zero`, which clears the block holding its address,
    // never writes outside `dst`; the head and tail are plain stores. cbo.zero is enabled for S-mode
    // (`use_cbo_zero` is called only when every hart has Zicboz, which OpenSBI enables in menvcfg).
    // The asm writes memory (no `nomem`), so the compiler orders it with the VMM's other accesses.
    unsafe {
        core::ptr::write_bytes(start as *mut u8, 0, first - start);
        core::arch::asm!(
            ".option push",
            ".option arch, +zicboz",
            "2:",
            "cbo.zero ({p})",
            "add {p}, {p}, {b}",
            "bltu {p}, {e}, 2b",
            ".option pop",
            p = inout(reg) first => _,
            b = in(reg) b,
            e = in(reg) last,
            options(nostack),
        );
        core::ptr::write_bytes(last as *mut u8, 0, end - last);
    }
    true
}

extern "C" {
    static __image_end: u8;
}

/// The end of the VMM image (a linker-script symbol; only its address is taken).
pub fn image_end() -> u64 {
    core::ptr::addr_of!(__image_end) as u64
}

/// The flattened device tree OpenSBI passed in a1, as bytes (header checked, size bounded by `max`).
pub fn host_dtb(addr: u64, max: u32) -> Result<&'static [u8], &'static str> {
    if addr == 0 || !addr.is_multiple_of(8) {
        return Err("no device tree in a1");
    }
    // SAFETY: OpenSBI hands over the address of the flattened device tree in a1 (8-byte aligned, in RAM
    // it does not reuse). Its 8-byte header is read first; the size it states is bounded before the whole
    // tree is viewed as a byte slice, which nothing writes afterwards.
    let header = unsafe { core::slice::from_raw_parts(addr as *const u8, 8) };
    let size = u32::from_be_bytes([header[4], header[5], header[6], header[7]]);
    if u32::from_be_bytes([header[0], header[1], header[2], header[3]]) != 0xd00d_feed
        || !(40..=max).contains(&size)
    {
        return Err("bad device tree header");
    }
    // SAFETY: as above, now with the checked size.
    Ok(unsafe { core::slice::from_raw_parts(addr as *const u8, size as usize) })
}

/// Raises an illegal-instruction trap in the VMM on purpose (`libvmm.selftest=fault`).
pub fn deliberate_fault() {
    // SAFETY: `unimp` traps into the VMM's own trap handler, which reports and ends the machine.
    unsafe { core::arch::asm!("unimp", options(nomem, nostack)) }
}
