//! Puts the embedded payload into guest memory and writes the boot-info block: the same on every
//! architecture. All writes go through [`GuestMemory`], so a payload that does not fit is an error here,
//! at boot, not memory corruption.
#![forbid(unsafe_code)]

use libvmm_abi::{layout, BackendId, BootInfo, ABI_VERSION, BOOT_INFO_MAGIC};

use crate::guest_mem::{GuestMemory, MemError};
use crate::Payload;

/// Why the payload could not be loaded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LoadError {
    /// No payload was linked into the image.
    Empty,
    /// The payload's bytes or bss do not fit between its load address and the stack.
    DoesNotFit,
    /// The entry point is outside the loaded payload.
    BadEntry,
}

impl LoadError {
    pub const fn describe(self) -> &'static str {
        match self {
            Self::Empty => "no payload is linked into this image",
            Self::DoesNotFit => "payload does not fit in the guest window",
            Self::BadEntry => "payload entry point lies outside the payload",
        }
    }
}

/// Where the payload starts: entry point, stack top, and the boot-info address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Loaded {
    pub entry: u64,
    pub stack_top: u64,
    pub boot_info: u64,
}

/// Loads `payload` into `mem`, writes the command line (truncated to `CMDLINE_MAX`) and the boot info.
pub fn load(
    payload: &Payload,
    mem: &mut GuestMemory<'_>,
    backend: BackendId,
    cmdline: &[u8],
    vmm_entry_cycles: u64,
) -> Result<Loaded, LoadError> {
    if payload.bytes.is_empty() {
        return Err(LoadError::Empty);
    }
    let base = mem.base();
    // Checked: a window smaller than the stack, or at the top of the address space, does not fit
    // (found by the `loader` fuzz target; it was an arithmetic overflow).
    let stack_top = base.checked_add(mem.size());
    let limit = stack_top.and_then(|t| t.checked_sub(layout::STACK_SIZE));
    let first = base.checked_add(layout::PAYLOAD_OFFSET);
    let (Some(stack_top), Some(limit), Some(first)) = (stack_top, limit, first) else {
        return Err(LoadError::DoesNotFit);
    };
    let end = payload
        .load_gpa
        .checked_add(payload.mem_size)
        .ok_or(LoadError::DoesNotFit)?;
    if payload.load_gpa < first || end > limit || (payload.bytes.len() as u64) > payload.mem_size {
        return Err(LoadError::DoesNotFit);
    }
    if payload.entry_gpa < payload.load_gpa || payload.entry_gpa >= end {
        return Err(LoadError::BadEntry);
    }
    let fit = |_: MemError| LoadError::DoesNotFit;
    mem.write(payload.load_gpa, payload.bytes).map_err(fit)?;
    let bss = payload.load_gpa + payload.bytes.len() as u64;
    mem.fill(bss, end - bss, 0).map_err(fit)?;

    let cmdline = &cmdline[..cmdline.len().min(layout::CMDLINE_MAX as usize)];
    let cmdline_gpa = base + layout::CMDLINE_OFFSET;
    mem.write(cmdline_gpa, cmdline).map_err(fit)?;
    let info = BootInfo {
        magic: BOOT_INFO_MAGIC,
        abi_version: ABI_VERSION,
        backend: backend as u32,
        mem_base: base,
        mem_size: mem.size(),
        cmdline_gpa: if cmdline.is_empty() { 0 } else { cmdline_gpa },
        cmdline_len: cmdline.len() as u64,
        vmm_entry_cycles,
        hypercall: crate::policy::cpuid::hypercall_insn(backend) as u32,
        reserved: 0,
    };
    let boot_info = base + layout::BOOT_INFO_OFFSET;
    mem.write(boot_info, &info.to_bytes()).map_err(fit)?;
    Ok(Loaded {
        entry: payload.entry_gpa,
        stack_top,
        boot_info,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: u64 = 0x200_0000;
    const SIZE: usize = 0x4_0000;

    fn payload(bytes: &'static [u8], mem_size: u64) -> Payload {
        let load = BASE + layout::PAYLOAD_OFFSET;
        Payload {
            name: "t",
            load_gpa: load,
            entry_gpa: load,
            mem_size,
            bytes,
        }
    }

    /// Regression (fuzz target `loader`): a window smaller than the stack, or one that ends at the top
    /// of the address space, is `DoesNotFit`, not an arithmetic overflow.
    #[test]
    fn windows_too_small_or_at_the_top_do_not_fit() {
        let mut buf = vec![0u8; 0x100];
        let mut mem = GuestMemory::new(BASE, &mut buf);
        assert_eq!(
            load(&payload(b"x", 1), &mut mem, BackendId::Svm, b"", 0),
            Err(LoadError::DoesNotFit)
        );
        for base in [u64::MAX - 0x100, u64::MAX - 0x4_0000 + 1] {
            let mut buf = vec![0u8; 0x100];
            let mut mem = GuestMemory::new(base, &mut buf);
            let mut p = payload(b"x", 1);
            p.load_gpa = u64::MAX - 1;
            p.entry_gpa = p.load_gpa;
            assert_eq!(
                load(&p, &mut mem, BackendId::Svm, b"", 0),
                Err(LoadError::DoesNotFit)
            );
        }
    }

    #[test]
    fn loads_bytes_zeroes_bss_and_writes_boot_info() {
        let mut buf = vec![0xAAu8; SIZE];
        let mut mem = GuestMemory::new(BASE, &mut buf);
        let p = payload(b"\x90\x90\xc3", 16);
        let l = load(&p, &mut mem, BackendId::Svm, b"attack=x", 77).unwrap();
        assert_eq!(l.entry, BASE + layout::PAYLOAD_OFFSET);
        assert_eq!(l.stack_top, BASE + SIZE as u64);
        assert_eq!(mem.slice(l.entry, 3).unwrap(), b"\x90\x90\xc3");
        assert!(mem.slice(l.entry + 3, 13).unwrap().iter().all(|&b| b == 0));
        let mut raw = [0u8; 64];
        raw.copy_from_slice(mem.slice(l.boot_info, 64).unwrap());
        let bi = BootInfo::from_bytes(&raw);
        assert_eq!(bi.magic, BOOT_INFO_MAGIC);
        assert_eq!(bi.vmm_entry_cycles, 77);
        assert_eq!(
            mem.slice(bi.cmdline_gpa, bi.cmdline_len).unwrap(),
            b"attack=x"
        );
    }

    #[test]
    fn oversized_payloads_and_bad_entries_are_refused() {
        let mut buf = vec![0u8; SIZE];
        let mut mem = GuestMemory::new(BASE, &mut buf);
        assert_eq!(
            load(
                &payload(b"x", SIZE as u64),
                &mut mem,
                BackendId::Svm,
                b"",
                0
            ),
            Err(LoadError::DoesNotFit)
        );
        assert_eq!(
            load(&payload(b"x", u64::MAX), &mut mem, BackendId::Svm, b"", 0),
            Err(LoadError::DoesNotFit)
        );
        assert_eq!(
            load(&payload(b"", 0), &mut mem, BackendId::Svm, b"", 0),
            Err(LoadError::Empty)
        );
        let mut p = payload(b"xy", 2);
        p.entry_gpa += 2;
        assert_eq!(
            load(&p, &mut mem, BackendId::Svm, b"", 0),
            Err(LoadError::BadEntry)
        );
        p.entry_gpa = BASE;
        assert_eq!(
            load(&p, &mut mem, BackendId::Svm, b"", 0),
            Err(LoadError::BadEntry)
        );
    }

    #[test]
    fn long_command_lines_are_truncated() {
        let mut buf = vec![0u8; SIZE];
        let mut mem = GuestMemory::new(BASE, &mut buf);
        let long = vec![b'a'; 0x2000];
        load(&payload(b"x", 1), &mut mem, BackendId::Svm, &long, 0).unwrap();
        let mut raw = [0u8; 64];
        raw.copy_from_slice(mem.slice(BASE, 64).unwrap());
        assert_eq!(BootInfo::from_bytes(&raw).cmdline_len, layout::CMDLINE_MAX);
    }
}
