//! The payload-side architecture layer: entry, exception handling, the hypercall instruction — and the
//! only place in this crate with `unsafe` code.
//!
//! Every other module of the crate starts with `#![forbid(unsafe_code)]` (the crate root denies it and
//! allows it for this module only). What needs `unsafe` lives here as small wrappers, each `unsafe`
//! block with a `SAFETY:` note:
//! - this file: reading the boot info and the command line the VMM wrote before entry, calling the
//!   payload's `main` (a symbol `entry!` defines in the payload crate), and the table of trap handlers
//!   (function pointers kept in atomics);
//! - `abi_exports.rs`: the `#[no_mangle] extern "C" fn sys_*` symbols hermit-abi links against (an exported
//!   unmangled symbol counts as unsafe code, and `sys_clock_gettime` writes through the caller's pointer);
//! - `x86_64.rs` / `riscv64.rs`: the entry and trap stubs (`global_asm!`), the IDT, the hypercall
//!   instruction, counters, probes.
use core::sync::atomic::{AtomicUsize, Ordering};

use libvmm_abi::BootInfo;

#[cfg(target_arch = "x86_64")]
mod x86_64;
#[cfg(target_arch = "x86_64")]
pub use x86_64::*;
#[cfg(target_arch = "riscv64")]
mod riscv64;
#[cfg(target_arch = "riscv64")]
pub use riscv64::*;

mod abi_exports;

/// Called by the architecture's `rust_start` with the boot-info address the VMM passed.
fn enter(boot_info_gpa: u64) -> ! {
    crate::BOOT_INFO.store(boot_info_gpa, Ordering::Relaxed);
    crate::start()
}

/// The 64 bytes of boot info at the address the VMM passed at entry, if it passed one.
pub(crate) fn boot_info_bytes() -> Option<[u8; 64]> {
    let addr = crate::BOOT_INFO.load(Ordering::Relaxed);
    if addr == 0 {
        return None;
    }
    // SAFETY: only `enter` stores to `crate::BOOT_INFO` (private to the crate): the address the VMM passed
    // at entry, where it wrote 64 bytes of boot info, in guest memory that is identity-mapped and stays
    // mapped for the payload's life. An unaligned read: nothing promises alignment.
    Some(unsafe { (addr as *const [u8; 64]).read_unaligned() })
}

/// The command line `bi` describes, if it lies inside the guest memory `bi` describes and is at most
/// `CMDLINE_MAX` bytes long; otherwise empty. `bi` must come from [`boot_info_bytes`].
pub(crate) fn cmdline_bytes(bi: &BootInfo) -> &'static [u8] {
    let (gpa, len) = (bi.cmdline_gpa, bi.cmdline_len);
    let mem_end = bi.mem_base.saturating_add(bi.mem_size);
    let inside = gpa != 0
        && len <= libvmm_abi::layout::CMDLINE_MAX
        && gpa >= bi.mem_base
        && gpa.checked_add(len).is_some_and(|end| end <= mem_end);
    if !inside {
        return &[];
    }
    // SAFETY: the VMM wrote `len` bytes of command line at `gpa` before entry, inside the payload's guest
    // memory (checked above), which is identity-mapped and never written by the runtime afterwards; a
    // payload that overwrites it through its own raw pointers breaks this, like any aliasing.
    unsafe { core::slice::from_raw_parts(gpa as *const u8, len as usize) }
}

/// Calls a `fn()` kept as an address (the start table of `crate::smp`).
#[cfg_attr(not(target_arch = "riscv64"), allow(dead_code))]
pub(crate) fn call_fn_ptr(f: usize) {
    // SAFETY: `smp::start` stores only `fn()` pointers in its table, and `run_started` passes only
    // nonzero values read from it.
    let f: fn() = unsafe { core::mem::transmute::<usize, fn()>(f) };
    f()
}

#[cfg(not(target_os = "hermit"))]
/// Calls the payload's `main`, which `entry!` defines as `__libvmm_payload_main`.
pub(crate) fn call_payload_main() -> i32 {
    extern "Rust" {
        fn __libvmm_payload_main() -> i32;
    }
    // SAFETY: defined by `entry!` in the payload crate as `fn() -> i32` (a payload without `entry!`
    // fails to link, naming the symbol).
    unsafe { __libvmm_payload_main() }
}

/// Slots of the trap-handler table: x86 vectors 0..=255 (exceptions 0..=31, interrupts 32..=255);
/// RISC-V exception causes 0..=63, then interrupt causes at 64 + cause.
pub(crate) const TRAP_SLOTS: usize = 256;

/// The installed trap handlers, as `TrapHandler` function pointers (0: none). A fixed table, no heap.
static TRAP_HANDLERS: [AtomicUsize; TRAP_SLOTS] = [const { AtomicUsize::new(0) }; TRAP_SLOTS];

/// Installs (or with `None` removes) the handler of `slot` (< [`TRAP_SLOTS`]); returns the previous one.
pub(crate) fn swap_trap_handler(
    slot: usize,
    handler: Option<crate::trap::TrapHandler>,
) -> Option<crate::trap::TrapHandler> {
    let new = handler.map_or(0, |h| h as usize);
    from_slot(TRAP_HANDLERS[slot].swap(new, Ordering::SeqCst))
}

/// The handler of `slot` (< [`TRAP_SLOTS`]), if one is installed.
pub(crate) fn trap_handler(slot: usize) -> Option<crate::trap::TrapHandler> {
    from_slot(TRAP_HANDLERS[slot].load(Ordering::SeqCst))
}

fn from_slot(raw: usize) -> Option<crate::trap::TrapHandler> {
    (raw != 0).then(|| {
        // SAFETY: the table only ever holds 0 or a `TrapHandler` stored by `swap_trap_handler` as
        // `usize` (function pointers and `usize` have the same size on both targets).
        unsafe { core::mem::transmute::<usize, crate::trap::TrapHandler>(raw) }
    })
}

#[cfg(target_os = "hermit")]
pub(crate) mod heap;
#[cfg(target_os = "hermit")]
pub(crate) mod thread;

/// The address of the payload's own ELF header and the bytes of its header and program headers (a
/// PIE's first segment maps them; `__ehdr_start` is the linker's symbol for it).
#[cfg(target_os = "hermit")]
pub(crate) fn own_elf_headers() -> (u64, &'static [u8]) {
    extern "C" {
        static __ehdr_start: [u8; 64];
    }
    // SAFETY: the linker defines `__ehdr_start` at the ELF header, which the first loadable segment of
    // a hermit-target PIE maps (read-only, loaded by the VMM); the header's own phoff/phnum bound the
    // program headers that follow it in the same segment.
    unsafe {
        let base = core::ptr::addr_of!(__ehdr_start) as *const u8;
        let ehdr = &*core::ptr::addr_of!(__ehdr_start);
        let phoff = u64::from_le_bytes(ehdr[32..40].try_into().unwrap_or([0; 8])) as usize;
        let phnum = u16::from_le_bytes([ehdr[56], ehdr[57]]) as usize;
        let len = if (64..4096).contains(&phoff) && phnum <= 64 {
            phoff + 56 * phnum
        } else {
            64
        };
        (base as u64, core::slice::from_raw_parts(base, len))
    }
}

/// `len` bytes of payload memory at `gpa`: the TLS template or the build-time file archive, both
/// read-only.
#[cfg(target_os = "hermit")]
pub(crate) fn memory(gpa: u64, len: usize) -> &'static [u8] {
    if gpa == 0 || len == 0 {
        return &[];
    }
    // SAFETY: `gpa`/`len` come from the payload's own PT_TLS, or its file-archive PT_LOAD, which the
    // VMM validated to lie inside a loaded segment's file bytes; that memory stays mapped and is never
    // written (.tdata; the archive's segment is read-only in the nested tables).
    unsafe { core::slice::from_raw_parts(gpa as *const u8, len) }
}

/// Calls `std`'s `runtime_entry`, which runs `main` and exits.
#[cfg(target_os = "hermit")]
pub(crate) fn call_runtime_entry(argc: i32, argv: *const *const u8, env: *const *const u8) -> ! {
    extern "C" {
        fn runtime_entry(argc: i32, argv: *const *const u8, env: *const *const u8) -> !;
    }
    // SAFETY: `std` (sys/pal/hermit) defines it with this signature; argv and env are NUL-terminated
    // arrays of NUL-terminated strings the runtime leaked for the program's life.
    unsafe { runtime_entry(argc, argv, env) }
}

/// Fills `buf` from the CPU's random-number instruction; false when it has none or keeps failing.
#[cfg(target_os = "hermit")]
pub(crate) fn hw_random(buf: &mut [u8]) -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        for chunk in buf.chunks_mut(8) {
            let mut v = 0u64;
            let mut ok = 0u8;
            for _ in 0..64 {
                // SAFETY: RDRAND only writes its register and CF; the hermit target requires the CPU
                // to have it (`+rdrand`).
                unsafe {
                    core::arch::asm!("rdrand {v}", "setc {ok}", v = out(reg) v, ok = out(reg_byte) ok,
                        options(nomem, nostack));
                }
                if ok != 0 {
                    break;
                }
            }
            if ok == 0 {
                return false;
            }
            chunk.copy_from_slice(&v.to_le_bytes()[..chunk.len()]);
        }
        true
    }
    #[cfg(target_arch = "riscv64")]
    {
        // Zkr's entropy source, 16 bits per ES16 read (the VMM passes the host's `seed` through). BIST
        // and WAIT are retried a bounded number of times; DEAD, an illegal instruction (no Zkr) or no
        // progress gives up: std then reports the failure, never a constant.
        const ES16: u64 = 0b10;
        const DEAD: u64 = 0b11;
        if riscv64::probe::seed().is_err() {
            return entropy_hypercall(buf);
        }
        for chunk in buf.chunks_mut(2) {
            let mut got = None;
            for _ in 0..10_000 {
                match riscv64::probe::seed() {
                    Ok(v) if (v >> 30) & 3 == ES16 => {
                        got = Some(v as u16);
                        break;
                    }
                    Ok(v) if (v >> 30) & 3 == DEAD => return false,
                    Ok(_) => continue,
                    Err(_) => return false,
                }
            }
            let Some(w) = got else { return false };
            chunk.copy_from_slice(&w.to_le_bytes()[..chunk.len()]);
        }
        true
    }
}

/// Entropy from the VMM (the entropy hypercall, 7 bytes per call) for a CPU without an instruction
/// of its own (RISC-V without Zkr): see README for the VMM's source there.
#[cfg(all(target_os = "hermit", target_arch = "riscv64"))]
fn entropy_hypercall(buf: &mut [u8]) -> bool {
    for chunk in buf.chunks_mut(7) {
        let v = hypercall(libvmm_abi::Hypercall::Entropy as u64, [0; 4]);
        if v < 0 {
            return false;
        }
        chunk.copy_from_slice(&v.to_le_bytes()[..chunk.len()]);
    }
    true
}

/// Calls a `fn()` kept as `usize` (the timer callback of `crate::time`).
pub(crate) fn call_fn(raw: usize) {
    // SAFETY: `crate::time` only stores `fn()` pointers cast to `usize` (same size on both targets) and
    // never 0 here.
    let f = unsafe { core::mem::transmute::<usize, fn()>(raw) };
    f()
}
