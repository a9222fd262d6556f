//! The kernel side of Rust `std` on the hermit targets: what the Hermit kernel normally does before
//! `std` runs, done by libvmm-guest inside a libvmm guest. At entry it reads the payload's own ELF
//! program headers (mapped with its first segment; `__ehdr_start`), hands the RAM between the end of
//! its segments and the initial stack to the heap, gives the main thread its TLS block (`PT_TLS`),
//! builds `argv` and the environment from the image's command line and calls `std`'s
//! `runtime_entry(argc, argv, env)`, which runs `main` and exits through `sys_exit`.
//!
//! **Command line.** Words before `--` of the form `KEY=VALUE` are the environment (`libvmm.*` words
//! are the VMM's and are left out); words after `--` are the arguments, the first being the program
//! name (`cargo xtask run --elf PATH -- ARGS` passes `-- <name> ARGS`). Without `--`, `argv` is
//! `["payload"]`.
#![forbid(unsafe_code)]

extern crate alloc;

use alloc::vec::Vec;

use crate::arch;

/// Reads `n` bytes little-endian at `at`.
fn le(b: &[u8], at: usize, n: usize) -> u64 {
    b.get(at..at + n)
        .map(|s| s.iter().rev().fold(0u64, |v, &x| (v << 8) | x as u64))
        .unwrap_or(0)
}

/// What the runtime reads from its own program headers (addresses placed, i.e. with the load bias).
struct Layout {
    /// End of the highest segment: the heap starts above it.
    end: u64,
    /// The TLS template: address, file size, memory size, alignment.
    tls: Option<(u64, u64, u64, u64)>,
    /// The build-time file archive's segment (`libvmm_abi::files`): address and size.
    files: Option<(u64, u64)>,
}

/// The payload's segment end, its TLS template and its file archive.
fn own_layout() -> Layout {
    let (ehdr, hdrs) = arch::own_elf_headers();
    let (phoff, phnum) = (le(hdrs, 32, 8) as usize, le(hdrs, 56, 2) as usize);
    let mut end = 0;
    let mut tls = None;
    let mut files = None;
    let mut bias = ehdr;
    for i in 0..phnum {
        let p = phoff + 56 * i;
        let (ty, off, vaddr) = (le(hdrs, p, 4), le(hdrs, p + 8, 8), le(hdrs, p + 16, 8));
        let flags = le(hdrs, p + 4, 4) as u32;
        let (filesz, memsz, align) = (
            le(hdrs, p + 32, 8),
            le(hdrs, p + 40, 8),
            le(hdrs, p + 48, 8),
        );
        match ty {
            1 if off == 0 => bias = ehdr.wrapping_sub(vaddr),
            7 => tls = Some((vaddr, filesz, memsz, align)),
            _ => {}
        }
        if ty == 1 && flags & libvmm_abi::files::PF_LIBVMM_FILES != 0 {
            files = Some((vaddr, filesz));
        }
        if ty == 1 {
            end = end.max(vaddr + memsz);
        }
    }
    Layout {
        end: end.wrapping_add(bias),
        tls: tls.map(|(v, f, m, a)| (v.wrapping_add(bias), f, m, a)),
        files: files.map(|(v, f)| (v.wrapping_add(bias), f)),
    }
}

/// Entry for `std` payloads: heap, main TLS, argv/env, then `runtime_entry`.
pub(crate) fn start() -> ! {
    let Layout { end, tls, files } = own_layout();
    let bi = crate::boot_info();
    let top = bi.map_or(0, |b| {
        b.mem_base + b.mem_size - libvmm_abi::layout::STACK_SIZE
    });
    arch::heap::init(end.next_multiple_of(4096), top);
    let (image, mem, align) = match tls {
        Some((gpa, f, m, a)) => (arch::memory(gpa, f as usize), m as usize, a as usize),
        None => (&[][..], 0, 1),
    };
    if !crate::sched::init(image, mem, align) {
        crate::println!("payload: no memory for the main thread's TLS block");
        crate::hermit::abort()
    }
    if let Some((gpa, len)) = files {
        crate::fs::init(arch::memory(gpa, len as usize));
    }
    let line = crate::cmdline();
    let (before, after) = match line.split_once(" -- ") {
        Some((b, a)) => (b, Some(a)),
        None => match line.strip_prefix("-- ") {
            Some(a) => ("", Some(a)),
            None => (line, None),
        },
    };
    let cstr = |w: &str| {
        let mut v: Vec<u8> = w.bytes().collect();
        v.push(0);
        v.leak().as_ptr()
    };
    let mut argv: Vec<*const u8> = match after {
        Some(a) => a.split_ascii_whitespace().map(cstr).collect(),
        None => alloc::vec![cstr("payload")],
    };
    let argc = argv.len() as i32;
    argv.push(core::ptr::null());
    let mut env: Vec<*const u8> = before
        .split_ascii_whitespace()
        .filter(|w| w.contains('=') && !w.starts_with("libvmm."))
        .map(cstr)
        .collect();
    env.push(core::ptr::null());
    arch::call_runtime_entry(argc, argv.leak().as_ptr(), env.leak().as_ptr())
}
