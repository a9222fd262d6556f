//! W^X attacks: the payload turns on its own memory. The nested tables map its text read+execute, its
//! read-only data read-only, and its data, bss, stack and heap read+write without execute, so each
//! fatal attack here must end in a nested fault and a clean stop (96) that names the access and the
//! address. Each target holds a `ret` (or writes back the byte already there), so on a VMM without W^X
//! the attack would return quietly and the payload would report `FAIL fatal attack ... did not stop the
//! VM`. The same code on every architecture; only the `ret` encoding differs.
#[cfg(target_arch = "riscv64")]
use libvmm_guest::abi::layout::riscv64::PAYLOAD_BASE;
#[cfg(target_arch = "x86_64")]
use libvmm_guest::abi::layout::x86_64::PAYLOAD_BASE;
use libvmm_guest::println;

use crate::Checks;

/// `ret`, padded to four bytes.
#[cfg(target_arch = "x86_64")]
const RET: [u8; 4] = [0xC3, 0xCC, 0xCC, 0xCC];
/// `ret` (`jalr x0, 0(ra)`).
#[cfg(target_arch = "riscv64")]
const RET: [u8; 4] = 0x0000_8067u32.to_le_bytes();

/// Read-only data the payload tries to overwrite.
static READ_ONLY: [u8; 8] = *b"rodata!!";

/// Data (initialised, so in `.data`, not `.bss`) holding a `ret` the payload tries to run.
static mut DATA_RET: [u8; 4] = RET;

/// Reading its own text and read-only data is allowed: both are mapped readable.
pub fn recoverable(c: &mut Checks) {
    // SAFETY: reads the payload's first instruction bytes (its own text, mapped readable).
    let text = unsafe { core::ptr::read_volatile(PAYLOAD_BASE as *const u32) };
    c.check(
        "wx-read-own-text",
        text != 0,
        format_args!("read {text:#x}"),
    );
    let ro = core::hint::black_box(&READ_ONLY);
    c.check(
        "wx-read-own-rodata",
        ro == b"rodata!!",
        format_args!("read {ro:x?}"),
    );
}

/// The W^X attack named `attack`, if it is one; `false` when it is not.
pub fn fatal(attack: &str) -> bool {
    match attack {
        "text-write" => write_back("own text", PAYLOAD_BASE as *mut u8),
        "rodata-write" => write_back(
            "own read-only data",
            core::ptr::addr_of!(READ_ONLY) as *mut u8,
        ),
        "data-exec" => run("own data", core::ptr::addr_of!(DATA_RET) as u64),
        "stack-exec" => {
            let code = core::hint::black_box(RET);
            run("own stack", core::ptr::addr_of!(code) as u64);
            core::hint::black_box(&code);
        }
        _ => return false,
    }
    true
}

/// Writes back the byte at `p` (so it would change nothing where writing is allowed).
fn write_back(what: &str, p: *mut u8) {
    println!("hostile: wx write {what} at {:#x}", p as u64);
    // SAFETY: deliberately writes the payload's own non-writable memory; the byte is the one already
    // there.
    unsafe { core::ptr::write_volatile(p, core::ptr::read_volatile(p)) };
}

/// Calls the `ret` at `addr`.
fn run(what: &str, addr: u64) {
    println!("hostile: wx execute {what} at {addr:#x}");
    #[cfg(target_arch = "riscv64")]
    // SAFETY: a fence only (makes the stack copy of the `ret` visible to instruction fetch).
    unsafe {
        core::arch::asm!("fence.i")
    };
    // SAFETY: deliberately calls into the payload's own data; it holds a `ret`.
    let f: extern "C" fn() = unsafe { core::mem::transmute(addr as usize) };
    f();
}
