//! The payload ELF as the image embeds it, parsed and validated at boot.
//!
//! The image carries the payload's ELF file unchanged (a static PIE from the hermit targets, or an
//! `ET_EXEC` linked at its load address by `linker/guest-*.ld`). This module reads its file header and
//! program headers with the [`elf`] crate — chosen over `goblin` (whose ELF program-header and dynamic
//! parsing wants `alloc`) and `xmas-elf` (less maintained, panics on some malformed inputs): `elf`'s
//! `ElfBytes` is `no_std`, allocates nothing, borrows the file and returns an error for every
//! out-of-range read instead of panicking. What it returns is then checked here against libvmm's rules;
//! any violation is a [`LoadError`] naming the rule (the boot stops with code 102), never a fault.
//!
//! Rules: ELF64, little endian, this architecture's machine, `ET_EXEC` or `ET_DYN`; 1..=
//! `PAYLOAD_SEGMENTS_MAX` non-empty `PT_LOAD`s in address order, each with `p_filesz <= p_memsz`, its
//! file bytes inside the file and no page shared with another segment. An `ET_DYN` (PIE) is placed at
//! the window's payload offset (its load bias keeps every segment's page offset); an `ET_EXEC` stays
//! where it is linked and must lie inside the window. Relocations: `PT_DYNAMIC` may name one `DT_RELA`
//! table (entries of 24 bytes, inside a segment's file bytes) whose entries are all `R_*_RELATIVE`
//! (`R_*_NONE` skipped) with a target of 8 bytes inside a loaded segment; `DT_REL`, `DT_RELR` and PLT
//! relocations (`DT_JMPREL`) are refused (a static PIE from rust-lld has none). `PT_TLS`, when present,
//! must have `p_filesz <= p_memsz`, a power-of-two alignment and its initial image inside a loaded
//! segment: the guest runtime builds each thread's TLS block from it.
#![forbid(unsafe_code)]

use elf::abi;
use elf::endian::LittleEndian;
use elf::ElfBytes;

use super::{LoadError, PAGE};
use crate::config::PAYLOAD_SEGMENTS_MAX;
use crate::PayloadSegment;

/// `DT_RELR` (packed relative relocations), not in the `elf` crate's `abi` list.
const DT_RELR: i64 = 36;
/// Bytes of one `Elf64_Rela`.
const RELA_SIZE: u64 = 24;
/// Bytes of one `Elf64_Dyn`.
const DYN_SIZE: u64 = 16;

/// One loadable segment, placed: where it goes in guest memory and where its bytes are in the file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Segment {
    /// Guest-physical start (after the load bias), its size in memory and its ELF rights.
    pub seg: PayloadSegment,
    /// File offset and size of its initialised bytes (`p_offset`, `p_filesz`).
    pub file_offset: u64,
    pub file_size: u64,
}

/// The thread-local storage template (`PT_TLS`), placed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tls {
    pub gpa: u64,
    pub file_size: u64,
    pub mem_size: u64,
    pub align: u64,
}

/// A validated payload ELF, placed in the window.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ElfImage<'a> {
    pub file: &'a [u8],
    /// Added to every link-time address (0 for `ET_EXEC`).
    pub bias: u64,
    pub entry: u64,
    /// The lowest segment page and the end of the highest segment (bss included).
    pub lo: u64,
    pub hi: u64,
    pub segments: heapless::Vec<Segment, PAYLOAD_SEGMENTS_MAX>,
    /// File offset and length of the `DT_RELA` table, if any.
    pub rela: Option<(u64, u64)>,
    pub tls: Option<Tls>,
}

impl ElfImage<'_> {
    /// The segments as the guest map wants them.
    pub fn payload_segments(&self) -> heapless::Vec<PayloadSegment, PAYLOAD_SEGMENTS_MAX> {
        self.segments.iter().map(|s| s.seg).collect()
    }

    /// The segment that holds `[gpa, gpa + len)` in memory, if one does.
    fn segment_of(&self, gpa: u64, len: u64) -> Option<&Segment> {
        let end = gpa.checked_add(len)?;
        self.segments
            .iter()
            .find(|s| s.seg.gpa <= gpa && end <= s.seg.gpa + s.seg.mem_size)
    }

    /// The file offset of `[gpa, gpa + len)` when a segment's file bytes hold all of it.
    fn file_offset_of(&self, gpa: u64, len: u64) -> Option<u64> {
        let end = gpa.checked_add(len)?;
        self.segments
            .iter()
            .find(|s| s.seg.gpa <= gpa && end <= s.seg.gpa + s.file_size)
            .map(|s| s.file_offset + (gpa - s.seg.gpa))
    }

    /// Every relative relocation: (guest-physical address of the 8-byte slot, value to write).
    /// Validated by [`parse`], so this yields only good entries.
    pub fn relocations(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        let (off, len) = self.rela.unwrap_or((0, 0));
        let bias = self.bias;
        (0..len / RELA_SIZE).filter_map(move |i| {
            let at = (off + i * RELA_SIZE) as usize;
            let r_offset = le64(self.file, at)?;
            let info = le64(self.file, at + 8)?;
            let addend = le64(self.file, at + 16)?;
            (info & 0xffff_ffff != 0)
                .then(|| (r_offset.wrapping_add(bias), addend.wrapping_add(bias)))
        })
    }
}

fn le64(b: &[u8], at: usize) -> Option<u64> {
    let s = b.get(at..at.checked_add(8)?)?;
    Some(u64::from_le_bytes(s.try_into().ok()?))
}

const fn page_down(v: u64) -> u64 {
    v & !(PAGE - 1)
}

fn page_up(v: u64) -> Option<u64> {
    Some(v.checked_add(PAGE - 1)? & !(PAGE - 1))
}

/// This image's ELF machine and relative-relocation type.
pub const fn native() -> (u16, u32) {
    if cfg!(target_arch = "riscv64") {
        (abi::EM_RISCV, abi::R_RISCV_RELATIVE)
    } else {
        (abi::EM_X86_64, abi::R_X86_64_RELATIVE)
    }
}

/// Parses and validates `file` for a window `[base, base + size)` whose payload area starts at
/// `load_at` (`ET_DYN` goes there), for machine `machine` whose relative relocation is `relative`.
pub fn parse(
    file: &[u8],
    load_at: u64,
    (machine, relative): (u16, u32),
) -> Result<ElfImage<'_>, LoadError> {
    if file.is_empty() {
        return Err(LoadError::Empty);
    }
    let elf = ElfBytes::<LittleEndian>::minimal_parse(file).map_err(|_| LoadError::NotElf)?;
    let h = &elf.ehdr;
    if h.class != elf::file::Class::ELF64 {
        return Err(LoadError::NotElf64);
    }
    if h.e_machine != machine {
        return Err(LoadError::WrongMachine);
    }
    let pie = match h.e_type {
        abi::ET_EXEC => false,
        abi::ET_DYN => true,
        _ => return Err(LoadError::NotExecutable),
    };
    let phdrs = elf.segments().ok_or(LoadError::NoSegments)?;
    // First pass: the lowest address, for the load bias of a PIE.
    let mut lo = u64::MAX;
    for p in phdrs.iter() {
        if p.p_type == abi::PT_LOAD && p.p_memsz > 0 {
            lo = lo.min(p.p_vaddr);
        }
    }
    if lo == u64::MAX {
        return Err(LoadError::NoSegments);
    }
    let bias = if pie {
        load_at.wrapping_sub(page_down(lo))
    } else {
        0
    };
    let mut img = ElfImage {
        file,
        bias,
        entry: h.e_entry.wrapping_add(bias),
        lo: page_down(lo).wrapping_add(bias),
        hi: 0,
        segments: heapless::Vec::new(),
        rela: None,
        tls: None,
    };
    let mut prev_end = 0u64;
    let mut dynamic = None;
    let mut tls = None;
    for p in phdrs.iter() {
        match p.p_type {
            abi::PT_LOAD if p.p_memsz > 0 => {
                if p.p_filesz > p.p_memsz {
                    return Err(LoadError::SegmentFileSize);
                }
                let fend = p.p_offset.checked_add(p.p_filesz);
                if fend.is_none_or(|e| e > file.len() as u64) {
                    return Err(LoadError::SegmentFileOutside);
                }
                let gpa = p
                    .p_vaddr
                    .checked_add(bias)
                    .ok_or(LoadError::SegmentOutside)?;
                let end = gpa
                    .checked_add(p.p_memsz)
                    .and_then(page_up)
                    .ok_or(LoadError::SegmentOutside)?;
                if page_down(gpa) < prev_end {
                    return Err(LoadError::SegmentOverlap);
                }
                prev_end = end;
                img.hi = gpa + p.p_memsz;
                let flags = p.p_flags & (PayloadSegment::R | PayloadSegment::W | PayloadSegment::X);
                img.segments
                    .push(Segment {
                        seg: PayloadSegment {
                            gpa,
                            mem_size: p.p_memsz,
                            flags,
                        },
                        file_offset: p.p_offset,
                        file_size: p.p_filesz,
                    })
                    .map_err(|_| LoadError::TooManySegments)?;
            }
            abi::PT_DYNAMIC => dynamic = Some(p),
            abi::PT_TLS => tls = Some(p),
            _ => {}
        }
    }
    if let Some(t) = tls {
        if t.p_filesz > t.p_memsz || (t.p_align > 1 && !t.p_align.is_power_of_two()) {
            return Err(LoadError::BadTls);
        }
        let gpa = t.p_vaddr.wrapping_add(bias);
        if t.p_filesz > 0 && img.file_offset_of(gpa, t.p_filesz).is_none() {
            return Err(LoadError::BadTls);
        }
        img.tls = Some(Tls {
            gpa,
            file_size: t.p_filesz,
            mem_size: t.p_memsz,
            align: t.p_align.max(1),
        });
    }
    if let Some(d) = dynamic {
        let fend = d.p_offset.checked_add(d.p_filesz);
        if fend.is_none_or(|e| e > file.len() as u64) || d.p_filesz % DYN_SIZE != 0 {
            return Err(LoadError::BadDynamic);
        }
        let (mut rela, mut relasz, mut relaent) = (None, 0u64, RELA_SIZE);
        for i in 0..d.p_filesz / DYN_SIZE {
            let at = (d.p_offset + i * DYN_SIZE) as usize;
            let (tag, val) = match (le64(file, at), le64(file, at + 8)) {
                (Some(t), Some(v)) => (t as i64, v),
                _ => return Err(LoadError::BadDynamic),
            };
            match tag {
                abi::DT_NULL => break,
                abi::DT_RELA => rela = Some(val),
                abi::DT_RELASZ => relasz = val,
                abi::DT_RELAENT => relaent = val,
                abi::DT_REL | DT_RELR | abi::DT_JMPREL => {
                    return Err(LoadError::UnsupportedRelocations)
                }
                abi::DT_PLTRELSZ if val != 0 => return Err(LoadError::UnsupportedRelocations),
                _ => {}
            }
        }
        if let Some(vaddr) = rela {
            if relaent != RELA_SIZE || relasz % RELA_SIZE != 0 {
                return Err(LoadError::BadRelocation);
            }
            let off = img
                .file_offset_of(vaddr.wrapping_add(bias), relasz)
                .ok_or(LoadError::BadRelocation)?;
            img.rela = Some((off, relasz));
            for i in 0..relasz / RELA_SIZE {
                let at = (off + i * RELA_SIZE) as usize;
                let (Some(r_offset), Some(info)) = (le64(file, at), le64(file, at + 8)) else {
                    return Err(LoadError::BadRelocation);
                };
                match (info & 0xffff_ffff) as u32 {
                    0 => continue, // R_*_NONE
                    t if t == relative && info >> 32 == 0 => {}
                    _ => return Err(LoadError::UnsupportedRelocations),
                }
                if img.segment_of(r_offset.wrapping_add(bias), 8).is_none() {
                    return Err(LoadError::BadRelocation);
                }
            }
        } else if relasz != 0 {
            return Err(LoadError::BadRelocation);
        }
    }
    Ok(img)
}
