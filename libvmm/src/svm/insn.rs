//! Reading the intercepted CR0/CR4 write from guest memory, for CPUs without decode assists.
//!
//! With DecodeAssists (CPUID 0x8000_000A EDX bit 7) a MOV-to-CR intercept names the source register in
//! EXITINFO1 (bit 63 valid, bits 3:0 the GPR) and NRIPS gives the next RIP (APM Vol. 2 §15.33). QEMU's
//! TCG offers neither (EXITINFO1 is 0 and NEXT_RIP stays 0), so the backend reads the instruction at the
//! guest's RIP itself: a 4-level walk of the guest's own page tables (the guest is always in long mode,
//! and CR4.LA57 cannot change there), every read through `GuestMemory`, then a decoder for exactly the
//! instructions that raise the CR0/CR4 write intercepts: MOV CRn, r64 (`0F 22 /r`), CLTS (`0F 06`) and
//! LMSW r16 (`0F 01 /6`, register form). LMSW with a memory operand (which can only change CR0's low
//! four bits) and anything unreadable are not emulated: the backend stops the VM with the exit named.
//! A general x86 decoder crate (`iced-x86`, `yaxpeax-x86`) would be far larger than these few forms,
//! and the VMM's size is budgeted (README, measured figures).
#![forbid(unsafe_code)]

use crate::guest_mem::GuestMemory;

/// The longest x86 instruction.
pub const MAX_LEN: usize = 15;

const PTE_P: u64 = 1 << 0;
const PTE_PS: u64 = 1 << 7;
const ADDR: u64 = 0x000F_FFFF_FFFF_F000;

/// Translates a guest-linear address through the guest's 4-level tables rooted at `cr3` (PCID bits
/// ignored). `None` when an entry is not present or lies outside guest memory.
pub fn translate(mem: &GuestMemory<'_>, cr3: u64, va: u64) -> Option<u64> {
    let mut table = cr3 & ADDR;
    for level in (1..=4u32).rev() {
        let idx = (va >> (12 + 9 * (level - 1))) & 0x1FF;
        let e = mem.read_u64(table + idx * 8).ok()?;
        if e & PTE_P == 0 {
            return None;
        }
        if level == 1 || (level <= 3 && e & PTE_PS != 0) {
            let page = 1u64 << (12 + 9 * (level - 1));
            return Some((e & ADDR & !(page - 1)) | (va & (page - 1)));
        }
        table = e & ADDR;
    }
    None
}

/// Copies up to [`MAX_LEN`] instruction bytes at guest-linear `rip` into `buf`; returns how many could
/// be read (the bytes stop at the first page that does not translate).
pub fn fetch(mem: &GuestMemory<'_>, cr3: u64, rip: u64, buf: &mut [u8; MAX_LEN]) -> usize {
    let mut n = 0;
    while n < MAX_LEN {
        let va = rip.wrapping_add(n as u64);
        let Some(pa) = translate(mem, cr3, va) else {
            break;
        };
        let in_page = (0x1000 - (va & 0xFFF)) as usize;
        let len = in_page.min(MAX_LEN - n);
        if mem.read(pa, &mut buf[n..n + len]).is_err() {
            break;
        }
        n += len;
    }
    n
}

/// [`fetch`] in any mode: at CS.base + `rip` (linear), through the guest's page tables only when CR0.PG
/// is set (an AP the guest started runs in real mode first). The guest's SIPI page
/// (`layout::x86_64::SIPI_PAGE`, outside the window) is read from the window page behind it.
pub fn fetch_at(
    mem: &GuestMemory<'_>,
    cr: &crate::exit::CrState,
    cs_base: u64,
    rip: u64,
    buf: &mut [u8; MAX_LEN],
) -> usize {
    use crate::x86::cr::cr0::PG;
    use libvmm_abi::layout::x86_64::{SIPI_PAGE, SIPI_PAGE_OFFSET};
    let long = cr.efer & crate::x86::msr::EFER_LMA != 0 && cr.cs_l;
    let linear = if long {
        rip
    } else {
        cs_base.wrapping_add(rip) & 0xFFFF_FFFF
    };
    if cr.cr0 & PG != 0 {
        let n = fetch(mem, cr.cr3, linear, buf);
        if n > 0 || linear & !0xFFF != SIPI_PAGE {
            return n;
        }
    }
    let pa = if linear & !0xFFF == SIPI_PAGE {
        mem.base() + SIPI_PAGE_OFFSET + (linear & 0xFFF)
    } else {
        linear
    };
    let len = (0x1000 - (pa & 0xFFF) as usize).min(MAX_LEN);
    match mem.read(pa, &mut buf[..len]) {
        Ok(()) => len,
        Err(_) => 0,
    }
}

/// An instruction that writes CR0 or CR4.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CrInsn {
    /// MOV CRn, r64: control register number, source GPR number (0 = RAX ... 15 = R15).
    MovToCr {
        cr: u8,
        gpr: u8,
    },
    Clts,
    /// LMSW r16: source GPR number.
    Lmsw {
        gpr: u8,
    },
}

/// Decodes a 64-bit-mode instruction that writes a control register; returns it and its length.
pub fn decode_cr_write(bytes: &[u8]) -> Option<(CrInsn, u64)> {
    let mut i = 0;
    let mut lock = false;
    // Legacy prefixes (any order, at most 14 with the opcode within 15 bytes), then an optional REX.
    while let Some(&b) = bytes.get(i) {
        match b {
            0xF0 => lock = true,
            0x66 | 0x67 | 0xF2 | 0xF3 | 0x2E | 0x36 | 0x3E | 0x26 | 0x64 | 0x65 => {}
            _ => break,
        }
        i += 1;
    }
    let rex = match bytes.get(i) {
        Some(&b @ 0x40..=0x4F) => {
            i += 1;
            b
        }
        _ => 0,
    };
    if bytes.get(i) != Some(&0x0F) {
        return None;
    }
    let op = *bytes.get(i + 1)?;
    let insn = match op {
        0x06 => {
            i += 2;
            CrInsn::Clts
        }
        0x22 | 0x01 => {
            let modrm = *bytes.get(i + 2)?;
            i += 3;
            let reg = (modrm >> 3) & 7;
            let rm = (modrm & 7) | ((rex & 1) << 3);
            if op == 0x22 {
                // The mod field is ignored: the operand is always a register. LOCK MOV CR0 is CR8 on AMD.
                let cr = reg | ((rex & 4) << 1) | if lock { 8 } else { 0 };
                CrInsn::MovToCr { cr, gpr: rm }
            } else if reg == 6 && modrm >> 6 == 3 {
                CrInsn::Lmsw { gpr: rm }
            } else {
                return None;
            }
        }
        _ => return None,
    };
    (i <= MAX_LEN).then_some((insn, i as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_mov_to_cr_clts_and_lmsw() {
        // mov cr0, rax; mov cr4, rcx; mov cr4, r9; mov cr0, rsp (mod ignored)
        assert_eq!(
            decode_cr_write(&[0x0F, 0x22, 0xC0]),
            Some((CrInsn::MovToCr { cr: 0, gpr: 0 }, 3))
        );
        assert_eq!(
            decode_cr_write(&[0x0F, 0x22, 0xE1]),
            Some((CrInsn::MovToCr { cr: 4, gpr: 1 }, 3))
        );
        assert_eq!(
            decode_cr_write(&[0x41, 0x0F, 0x22, 0xE1, 0x90]),
            Some((CrInsn::MovToCr { cr: 4, gpr: 9 }, 4))
        );
        assert_eq!(
            decode_cr_write(&[0x0F, 0x22, 0x04]),
            Some((CrInsn::MovToCr { cr: 0, gpr: 4 }, 3))
        );
        // Prefixes count in the length; REX.R selects CR8+; LOCK makes CR0 into CR8.
        assert_eq!(
            decode_cr_write(&[0x66, 0x2E, 0x0F, 0x22, 0xD8]),
            Some((CrInsn::MovToCr { cr: 3, gpr: 0 }, 5))
        );
        assert_eq!(
            decode_cr_write(&[0x44, 0x0F, 0x22, 0xC0]),
            Some((CrInsn::MovToCr { cr: 8, gpr: 0 }, 4))
        );
        assert_eq!(
            decode_cr_write(&[0xF0, 0x0F, 0x22, 0xC0]),
            Some((CrInsn::MovToCr { cr: 8, gpr: 0 }, 4))
        );
        assert_eq!(decode_cr_write(&[0x0F, 0x06]), Some((CrInsn::Clts, 2)));
        assert_eq!(
            decode_cr_write(&[0x0F, 0x01, 0xF3]),
            Some((CrInsn::Lmsw { gpr: 3 }, 3))
        );
    }

    #[test]
    fn refuses_what_it_does_not_emulate() {
        assert_eq!(decode_cr_write(&[0x0F, 0x01, 0x30]), None, "LMSW [rax]");
        assert_eq!(decode_cr_write(&[0x0F, 0x01, 0xD1]), None, "XSETBV");
        assert_eq!(decode_cr_write(&[0x0F, 0x20, 0xC0]), None, "MOV from CR0");
        assert_eq!(decode_cr_write(&[0x0F, 0x22]), None, "truncated");
        assert_eq!(decode_cr_write(&[]), None);
        assert_eq!(decode_cr_write(&[0x66; 15]), None, "prefixes only");
        let mut long = [0x66u8; 16];
        long[13..16].copy_from_slice(&[0x0F, 0x22, 0xC0]);
        assert_eq!(decode_cr_write(&long), None, "longer than 15 bytes");
    }

    fn tables(buf: &mut [u8]) -> GuestMemory<'_> {
        // Base 0x10_0000: PML4 at +0, PDPT at +0x1000, PD at +0x2000, PT at +0x3000.
        let m = GuestMemory::new(0x10_0000, buf);
        m.write_u64(0x10_0000, 0x10_1000 | 3).unwrap();
        m.write_u64(0x10_1000, 0x10_2000 | 3).unwrap();
        // 0..2 MiB: a 4 KiB table; 2..4 MiB: one 2 MiB page mapping guest-physical 0x10_0000's block.
        m.write_u64(0x10_2000, 0x10_3000 | 3).unwrap();
        m.write_u64(0x10_2008, PTE_PS | 3).unwrap();
        // Linear 0x5000 -> 0x10_4000, 0x6000 -> 0x10_5000; 0x7000 not present.
        m.write_u64(0x10_3000 + 5 * 8, 0x10_4000 | 3).unwrap();
        m.write_u64(0x10_3000 + 6 * 8, 0x10_5000 | 3).unwrap();
        m
    }

    #[test]
    fn walks_4k_and_2m_pages_and_fetches_across_a_page_boundary() {
        let mut buf = vec![0u8; 0x10_000];
        let m = tables(&mut buf);
        assert_eq!(translate(&m, 0x10_0000, 0x5123), Some(0x10_4123));
        assert_eq!(translate(&m, 0x10_0FFF, 0x5123), Some(0x10_4123), "PCID");
        assert_eq!(translate(&m, 0x10_0000, 0x20_0000 + 0x42), Some(0x42));
        assert_eq!(translate(&m, 0x10_0000, 0x7000), None);
        assert_eq!(translate(&m, 0x10_0000, 1 << 39), None);
        m.write(0x10_4FFE, &[0x0F, 0x22]).unwrap();
        m.write(0x10_5000, &[0xE0]).unwrap();
        let mut b = [0u8; MAX_LEN];
        assert_eq!(fetch(&m, 0x10_0000, 0x5FFE, &mut b), MAX_LEN);
        assert_eq!(
            decode_cr_write(&b),
            Some((CrInsn::MovToCr { cr: 4, gpr: 0 }, 3))
        );
        // The bytes stop where the next page is not mapped.
        assert_eq!(fetch(&m, 0x10_0000, 0x6FFE, &mut b), 2);
        // Tables outside guest memory: nothing.
        assert_eq!(fetch(&m, 0x4000_0000, 0x5000, &mut b), 0);
    }
}
