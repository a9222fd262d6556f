//! Puts the embedded payload ELF into guest memory (its loadable segments, bss zeroed, relative
//! relocations applied) and writes the boot-info block, and draws the guest's memory map (what the
//! nested tables allow where): the same on every architecture. The ELF is parsed and validated by
//! [`elf_image`] first; all writes go through [`GuestMemory`], so a payload that does not fit is an
//! error here, at boot, not memory corruption.
//!
//! **W^X.** [`guest_map`] turns the payload's segment list (its ELF program headers, read at boot)
//! into a [`GuestMap`]: a fixed list of page-aligned regions that cover the
//! guest window exactly, each read-only, read+write (never executable) or read+execute (never
//! writable). Text is read+execute, read-only data read-only, data and bss read+write; everything else
//! in the window (boot info, command line, the x86 guest page tables and GDT, the RISC-V guest device
//! tree, heap, stack) is read+write and not executable. Every backend builds its nested tables from this
//! one list, so even a compromised payload cannot write its code or run its data: the access is a
//! nested fault and a clean stop. A malformed segment list (unaligned, overlapping, outside the payload,
//! writable and executable, too many) is refused here with a message, before anything runs.
#![forbid(unsafe_code)]
// The TDX image runs no guest: it builds no nested tables from the map.
#![cfg_attr(all(target_os = "none", feature = "tdx"), allow(dead_code))]

use libvmm_abi::{layout, BackendId, BootInfo, ABI_VERSION, BOOT_INFO_MAGIC};

use crate::config::{GUEST_MAP_REGIONS, LAZY_BLOCK, LAZY_WORDS, PAYLOAD_SEGMENTS_MAX};
use crate::guest_mem::{GuestMemory, MemError};
use crate::PayloadSegment;

pub mod elf_image;
pub mod window;
pub use elf_image::ElfImage;

/// Granularity of the guest map: the smallest nested page.
pub const PAGE: u64 = 4096;

/// Why the payload could not be loaded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LoadError {
    /// No payload was linked into the image.
    Empty,
    /// The payload's bytes or bss do not fit between its load address and the stack.
    DoesNotFit,
    /// The entry point is outside the loaded payload.
    BadEntry,
    /// The payload has no loadable segment.
    NoSegments,
    /// The payload is not an ELF file (bad magic, truncated header or program headers).
    NotElf,
    /// The payload is not a 64-bit ELF.
    NotElf64,
    /// The payload ELF is for another machine than this image's.
    WrongMachine,
    /// The payload ELF is neither `ET_EXEC` nor `ET_DYN`.
    NotExecutable,
    /// A segment's file size exceeds its memory size.
    SegmentFileSize,
    /// A segment's file bytes lie outside the file.
    SegmentFileOutside,
    /// `PT_TLS` is malformed (file size above memory size, alignment not a power of two, or its
    /// initial image outside the loaded segments).
    BadTls,
    /// `PT_DYNAMIC` lies outside the file or is not a whole number of entries.
    BadDynamic,
    /// The `DT_RELA` table is malformed or a relocation's target is outside the loaded segments.
    BadRelocation,
    /// A relocation other than relative (`DT_REL`, `DT_RELR`, PLT, symbolic, ...).
    UnsupportedRelocations,
    /// More segments than `config::PAYLOAD_SEGMENTS_MAX`.
    TooManySegments,
    /// A segment is empty, or lies (rounded up to whole pages) outside the payload's memory.
    SegmentOutside,
    /// Two segments overlap (after rounding up to whole pages) or are out of address order.
    SegmentOverlap,
    /// A segment is both writable and executable.
    SegmentWritableExecutable,
    /// A segment is not readable.
    SegmentNotReadable,
    /// The entry point is not in an executable segment.
    EntryNotExecutable,
}

impl LoadError {
    pub const fn describe(self) -> &'static str {
        match self {
            Self::Empty => "no payload is linked into this image",
            Self::DoesNotFit => "payload does not fit in the guest window",
            Self::BadEntry => "payload entry point lies outside the payload",
            Self::NoSegments => "payload ELF has no loadable segment",
            Self::NotElf => "payload is not an ELF file (bad magic, or truncated headers)",
            Self::NotElf64 => "payload ELF is not 64-bit",
            Self::WrongMachine => "payload ELF is for another machine than this image",
            Self::NotExecutable => "payload ELF is neither ET_EXEC nor ET_DYN",
            Self::SegmentFileSize => "payload segment has p_filesz above p_memsz",
            Self::SegmentFileOutside => "payload segment's file bytes lie outside the ELF file",
            Self::BadTls => "payload PT_TLS is malformed or outside the loaded segments",
            Self::BadDynamic => "payload PT_DYNAMIC is malformed or outside the ELF file",
            Self::BadRelocation => {
                "payload relocation table or a relocation target lies outside the loaded segments"
            }
            Self::UnsupportedRelocations => {
                "payload has relocations other than R_*_RELATIVE in DT_RELA (DT_REL, DT_RELR, PLT, symbolic)"
            }
            Self::TooManySegments => "payload has more segments than config::PAYLOAD_SEGMENTS_MAX",
            Self::SegmentOutside => "payload segment is empty or lies outside the payload's memory",
            Self::SegmentOverlap => "payload segments overlap or are out of address order",
            Self::SegmentWritableExecutable => {
                "payload segment is both writable and executable (W^X)"
            }
            Self::SegmentNotReadable => "payload segment is not readable",
            Self::EntryNotExecutable => "payload entry point is not in an executable segment",
        }
    }
}

/// What the nested tables allow on a region of guest memory. There is deliberately no
/// read+write+execute.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[allow(clippy::enum_variant_names)] // every permission includes read: the names say what else
pub enum Perm {
    ReadOnly,
    /// Read and write, never execute.
    ReadWrite,
    /// Read and execute, never write.
    ReadExecute,
}

impl Perm {
    #[cfg(test)]
    pub const fn writable(self) -> bool {
        matches!(self, Self::ReadWrite)
    }
    pub const fn executable(self) -> bool {
        matches!(self, Self::ReadExecute)
    }
    /// How a stop reason names it.
    pub const fn name(self) -> &'static str {
        match self {
            Self::ReadOnly => "read-only",
            Self::ReadWrite => "read+write, no execute",
            Self::ReadExecute => "read+execute, no write",
        }
    }
    /// `r--`, `rw-`, `r-x` for the boot log.
    pub const fn short(self) -> &'static str {
        match self {
            Self::ReadOnly => "r--",
            Self::ReadWrite => "rw-",
            Self::ReadExecute => "r-x",
        }
    }
}

/// `[start, end)` with one permission; both ends 4 KiB aligned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Region {
    pub start: u64,
    pub end: u64,
    pub perm: Perm,
}

/// The guest window as the nested tables map it: regions in address order, adjacent, covering the
/// window exactly, neighbours of different permission. Fixed storage, no heap.
///
/// **Zero on first touch.** Blocks of [`LAZY_BLOCK`] bytes may be *pending*: not zeroed and not mapped
/// in the nested tables yet ([`GuestMap::defer_from`]). The first nested fault in a pending block is
/// not a violation: the run loop zeroes the block, the backend maps it with its permission (always
/// read+write: only blocks wholly outside the payload are deferred) and the guest goes on
/// ([`GuestMap::take_pending`]). So the VMM never shows stale host memory, and what boot zeroes does
/// not grow with the guest's memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GuestMap {
    regions: [Region; GUEST_MAP_REGIONS],
    len: usize,
    /// Bit n: block n of the window (from its base) is pending: not mapped in the nested tables.
    pending: [u64; LAZY_WORDS],
    /// Bit n: block n still holds what the host left there (a pending block the VMM has not had to
    /// read or write for the guest yet).
    stale: [u64; LAZY_WORDS],
}

impl GuestMap {
    /// The whole window `[base, base + size)` with one permission.
    pub const fn whole(base: u64, size: u64, perm: Perm) -> Self {
        let r = Region {
            start: base,
            end: base + size,
            perm,
        };
        Self {
            regions: [r; GUEST_MAP_REGIONS],
            len: 1,
            pending: [0; LAZY_WORDS],
            stale: [0; LAZY_WORDS],
        }
    }

    /// Defers every whole block of the window's last region (the read+write memory above the payload)
    /// at or above `from` (rounded up to a block) to its first touch; only as many as the bitmap holds
    /// (`config::GUEST_MEM_MAX`). Returns the number of blocks deferred. Word at a time, so boot does
    /// not pay per block of a large guest.
    pub fn defer_from(&mut self, from: u64) -> usize {
        let (base, last) = (self.base(), self.regions[self.len - 1]);
        if !base.is_multiple_of(LAZY_BLOCK) || last.perm != Perm::ReadWrite {
            return 0;
        }
        let Some(first) = from.max(last.start).checked_add(LAZY_BLOCK - 1) else {
            return 0;
        };
        let i0 = ((first & !(LAZY_BLOCK - 1)) - base) / LAZY_BLOCK;
        let i1 = ((last.end - base) / LAZY_BLOCK).min(LAZY_WORDS as u64 * 64);
        if i0 >= i1 {
            return 0;
        }
        let mut i = i0;
        while i < i1 {
            let (w, b) = ((i / 64) as usize, i % 64);
            let n = (64 - b).min(i1 - i);
            let mask = if n == 64 {
                u64::MAX
            } else {
                ((1u64 << n) - 1) << b
            };
            self.pending[w] |= mask;
            self.stale[w] |= mask;
            i += n;
        }
        (i1 - i0) as usize
    }

    /// The block index of `gpa` in the bitmap, if `gpa` is in the window.
    fn block_index(&self, gpa: u64) -> Option<usize> {
        if gpa < self.base() || gpa >= self.end() {
            return None;
        }
        let i = ((gpa - self.base()) / LAZY_BLOCK) as usize;
        (i < LAZY_WORDS * 64).then_some(i)
    }

    /// Whether the block holding `gpa` is still pending (not zeroed, not mapped).
    pub fn is_pending(&self, gpa: u64) -> bool {
        self.block_index(gpa)
            .is_some_and(|i| self.pending[i / 64] & (1 << (i % 64)) != 0)
    }

    /// The first touch of `gpa`: when its block is pending, marks it mapped and returns the block's
    /// base (the caller maps it, after [`GuestMap::zero_stale`] on it); `None` otherwise (a real fault).
    pub fn take_pending(&mut self, gpa: u64) -> Option<u64> {
        if !self.is_pending(gpa) {
            return None;
        }
        let i = self.block_index(gpa)?;
        self.pending[i / 64] &= !(1 << (i % 64));
        Some(self.base() + i as u64 * LAZY_BLOCK)
    }

    /// Zeroes every stale block `[gpa, gpa + len)` overlaps (clipped to the window), before the VMM
    /// reads or writes guest memory there for the guest (a hypercall's buffer, an emulated access) or
    /// the guest first touches it: so nothing the host left is ever seen, and nothing written for the
    /// guest is zeroed later. Returns the blocks zeroed.
    pub fn zero_stale(&mut self, mem: &mut GuestMemory<'_>, gpa: u64, len: u64) -> usize {
        if len == 0 || self.stale.iter().all(|w| *w == 0) {
            return 0;
        }
        let start = gpa.max(self.base());
        let end = gpa.saturating_add(len).min(self.end());
        let mut n = 0;
        let mut at = start & !(LAZY_BLOCK - 1);
        while at < end {
            if let Some(i) = self.block_index(at.max(self.base())) {
                if self.stale[i / 64] & (1 << (i % 64)) != 0 {
                    let block = self.base() + i as u64 * LAZY_BLOCK;
                    if mem.fill(block, LAZY_BLOCK, 0).is_ok() {
                        self.stale[i / 64] &= !(1 << (i % 64));
                        n += 1;
                    }
                }
            }
            at += LAZY_BLOCK;
        }
        n
    }

    /// Forgets every pending and stale block: for a copy of the map taken before the vCPU that owns the
    /// nested tables zeroed and mapped every block (x86 guest SMP: an AP's copy, so it never zeroes a
    /// block another vCPU has written since).
    #[cfg_attr(not(all(target_os = "none", feature = "svm")), allow(dead_code))]
    pub fn mark_settled(&mut self) {
        self.pending = [0; LAZY_WORDS];
        self.stale = [0; LAZY_WORDS];
    }

    /// Blocks still pending.
    #[cfg(test)]
    pub fn pending_blocks(&self) -> u32 {
        self.pending.iter().map(|w| w.count_ones()).sum()
    }

    pub fn regions(&self) -> &[Region] {
        &self.regions[..self.len]
    }

    pub fn base(&self) -> u64 {
        self.regions[0].start
    }

    pub fn end(&self) -> u64 {
        self.regions[self.len - 1].end
    }

    /// The permission at `gpa`, or `None` outside the window.
    pub fn perm_at(&self, gpa: u64) -> Option<Perm> {
        self.regions()
            .iter()
            .find(|r| r.start <= gpa && gpa < r.end)
            .map(|r| r.perm)
    }

    /// The one permission of all of `[start, start + len)`, or `None` when a region boundary crosses it
    /// or it is not wholly inside the window (the nested tables then split it into smaller pages).
    pub fn uniform(&self, start: u64, len: u64) -> Option<Perm> {
        let end = start.checked_add(len)?;
        self.regions()
            .iter()
            .find(|r| r.start <= start && end <= r.end)
            .map(|r| r.perm)
    }

    /// Appends `[start, end)`, merging with the last region when the permission is the same.
    fn push(&mut self, start: u64, end: u64, perm: Perm) {
        if start == end {
            return;
        }
        if self.len > 0 {
            let last = &mut self.regions[self.len - 1];
            if last.perm == perm && last.end == start {
                last.end = end;
                return;
            }
        }
        // At most one region per segment plus one per gap: GUEST_MAP_REGIONS = 2 * segments + 1.
        self.regions[self.len] = Region { start, end, perm };
        self.len += 1;
    }
}

impl core::fmt::Display for GuestMap {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        for (i, r) in self.regions().iter().enumerate() {
            let sep = if i == 0 { "" } else { " " };
            write!(f, "{sep}{:#x}..{:#x} {}", r.start, r.end, r.perm.short())?;
        }
        Ok(())
    }
}

const fn page_up(v: u64) -> Option<u64> {
    match v.checked_add(PAGE - 1) {
        Some(x) => Some(x & !(PAGE - 1)),
        None => None,
    }
}

/// The permission an ELF segment asks for, refused when it breaks W^X or is not readable.
fn segment_perm(s: &PayloadSegment) -> Result<Perm, LoadError> {
    let (r, w, x) = (
        s.flags & PayloadSegment::R != 0,
        s.flags & PayloadSegment::W != 0,
        s.flags & PayloadSegment::X != 0,
    );
    match (r, w, x) {
        (_, true, true) => Err(LoadError::SegmentWritableExecutable),
        (false, _, _) => Err(LoadError::SegmentNotReadable),
        (true, true, false) => Ok(Perm::ReadWrite),
        (true, false, true) => Ok(Perm::ReadExecute),
        (true, false, false) => Ok(Perm::ReadOnly),
    }
}

/// Validates the payload's segments against the window `[base, base + size)` and draws the guest map:
/// each segment (its first page rounded down, its last rounded up) with its own rights, read+write
/// elsewhere.
pub fn guest_map(img: &ElfImage<'_>, base: u64, size: u64) -> Result<GuestMap, LoadError> {
    map_segments(
        &img.payload_segments(),
        img.lo,
        img.hi,
        img.entry,
        base,
        size,
    )
}

/// [`guest_map`] over a segment list: `[lo, hi)` is the payload's memory, `entry` its entry point.
pub fn map_segments(
    segs: &[PayloadSegment],
    lo: u64,
    hi: u64,
    entry: u64,
    base: u64,
    size: u64,
) -> Result<GuestMap, LoadError> {
    if segs.is_empty() {
        return Err(LoadError::NoSegments);
    }
    if segs.len() > PAYLOAD_SEGMENTS_MAX {
        return Err(LoadError::TooManySegments);
    }
    // Segments may use the payload's memory and its last page, never the stack below the window's top.
    let payload_end = page_up(hi).ok_or(LoadError::DoesNotFit)?;
    let limit = (base + size).saturating_sub(layout::STACK_SIZE);
    if lo < base + layout::PAYLOAD_OFFSET || payload_end > limit || hi < lo {
        return Err(LoadError::DoesNotFit);
    }
    let mut map = GuestMap {
        regions: [Region {
            start: 0,
            end: 0,
            perm: Perm::ReadWrite,
        }; GUEST_MAP_REGIONS],
        len: 0,
        pending: [0; LAZY_WORDS],
        stale: [0; LAZY_WORDS],
    };
    let mut at = base;
    let mut entry_ok = false;
    for s in segs {
        let perm = segment_perm(s)?;
        let start = s.gpa & !(PAGE - 1);
        let end = s
            .gpa
            .checked_add(s.mem_size)
            .and_then(page_up)
            .ok_or(LoadError::SegmentOutside)?;
        if s.mem_size == 0 || start < lo || end > payload_end {
            return Err(LoadError::SegmentOutside);
        }
        if start < at {
            return Err(LoadError::SegmentOverlap);
        }
        map.push(at, start, Perm::ReadWrite);
        map.push(start, end, perm);
        entry_ok |= perm.executable() && s.gpa <= entry && entry < s.gpa + s.mem_size;
        at = end;
    }
    map.push(at, base + size, Perm::ReadWrite);
    if !entry_ok {
        return Err(LoadError::EntryNotExecutable);
    }
    Ok(map)
}

/// Where the payload starts: entry point, stack top, and the boot-info address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Loaded {
    pub entry: u64,
    pub stack_top: u64,
    pub boot_info: u64,
}

/// Loads the payload ELF `img` into `mem` (segments, bss zeroed, relative relocations applied), writes
/// the command line (truncated to `CMDLINE_MAX`) and the boot info.
pub fn load(
    img: &ElfImage<'_>,
    mem: &mut GuestMemory<'_>,
    backend: BackendId,
    cmdline: &[u8],
    vmm_entry_cycles: u64,
) -> Result<Loaded, LoadError> {
    let base = mem.base();
    // Checked: a window smaller than the stack, or at the top of the address space, does not fit
    // (found by the `loader` fuzz target; it was an arithmetic overflow).
    let stack_top = base.checked_add(mem.size());
    let limit = stack_top.and_then(|t| t.checked_sub(layout::STACK_SIZE));
    let first = base.checked_add(layout::PAYLOAD_OFFSET);
    let (Some(stack_top), Some(limit), Some(first)) = (stack_top, limit, first) else {
        return Err(LoadError::DoesNotFit);
    };
    if img.lo < first || img.hi > limit || img.hi < img.lo {
        return Err(LoadError::DoesNotFit);
    }
    if img.entry < img.lo || img.entry >= img.hi {
        return Err(LoadError::BadEntry);
    }
    let fit = |_: MemError| LoadError::DoesNotFit;
    for s in &img.segments {
        let (off, len) = (s.file_offset as usize, s.file_size as usize);
        let bytes = img
            .file
            .get(off..off + len)
            .ok_or(LoadError::SegmentFileOutside)?;
        mem.write(s.seg.gpa, bytes).map_err(fit)?;
        let bss = s.seg.gpa + s.file_size;
        mem.fill(bss, s.seg.mem_size - s.file_size, 0)
            .map_err(fit)?;
    }
    for (gpa, value) in img.relocations() {
        mem.write(gpa, &value.to_le_bytes()).map_err(fit)?;
    }

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
        entry: img.entry,
        stack_top,
        boot_info,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    use elf_image::native;

    const BASE: u64 = 0x200_0000;
    const SIZE: usize = 0x4_0000;
    const AT: u64 = BASE + layout::PAYLOAD_OFFSET;

    /// A program header: (p_type, p_flags, p_offset, p_vaddr, p_filesz, p_memsz, p_align).
    type Ph = (u32, u32, u64, u64, u64, u64, u64);

    /// A 64-bit little-endian ELF: header, program headers at 64, then `body` at offset 0x1000.
    fn elf(e_type: u16, machine: u16, entry: u64, phdrs: &[Ph], body: &[u8]) -> Vec<u8> {
        let mut f = vec![0u8; 0x1000];
        f[..4].copy_from_slice(b"\x7fELF");
        f[4] = 2; // ELFCLASS64
        f[5] = 1; // little endian
        f[6] = 1; // EV_CURRENT
        f[16..18].copy_from_slice(&e_type.to_le_bytes());
        f[18..20].copy_from_slice(&machine.to_le_bytes());
        f[20..24].copy_from_slice(&1u32.to_le_bytes());
        f[24..32].copy_from_slice(&entry.to_le_bytes());
        f[32..40].copy_from_slice(&64u64.to_le_bytes()); // e_phoff
        f[52..54].copy_from_slice(&64u16.to_le_bytes()); // e_ehsize
        f[54..56].copy_from_slice(&56u16.to_le_bytes()); // e_phentsize
        f[56..58].copy_from_slice(&(phdrs.len() as u16).to_le_bytes());
        for (i, p) in phdrs.iter().enumerate() {
            let o = 64 + 56 * i;
            f[o..o + 4].copy_from_slice(&p.0.to_le_bytes());
            f[o + 4..o + 8].copy_from_slice(&p.1.to_le_bytes());
            for (k, v) in [p.2, p.3, p.3, p.4, p.5, p.6].iter().enumerate() {
                f[o + 8 + 8 * k..o + 16 + 8 * k].copy_from_slice(&v.to_le_bytes());
            }
        }
        f.extend_from_slice(body);
        f
    }

    const LOAD: u32 = elf::abi::PT_LOAD;
    const DYNAMIC: u32 = elf::abi::PT_DYNAMIC;
    const TLS: u32 = elf::abi::PT_TLS;
    const R: u32 = PayloadSegment::R;
    const W: u32 = PayloadSegment::W;
    const X: u32 = PayloadSegment::X;

    fn exec(body: &[u8], memsz: u64) -> Vec<u8> {
        let n = body.len() as u64;
        elf(
            2,
            native().0,
            AT,
            &[(LOAD, R | X, 0x1000, AT, n, memsz, 0x1000)],
            body,
        )
    }

    fn parse_native(f: &[u8]) -> Result<ElfImage<'_>, LoadError> {
        elf_image::parse(f, AT, native())
    }

    /// Regression (fuzz target `loader`): a window smaller than the stack, or one that ends at the top
    /// of the address space, is `DoesNotFit`, not an arithmetic overflow.
    #[test]
    fn windows_too_small_or_at_the_top_do_not_fit() {
        let f = exec(b"\x90\xc3", 16);
        let img = parse_native(&f).unwrap();
        let mut buf = vec![0u8; 0x100];
        let mut mem = GuestMemory::new(BASE, &mut buf);
        assert_eq!(
            load(&img, &mut mem, BackendId::Svm, b"", 0),
            Err(LoadError::DoesNotFit)
        );
        for base in [u64::MAX - 0x100, u64::MAX - 0x4_0000 + 1] {
            let mut buf = vec![0u8; 0x100];
            let mut mem = GuestMemory::new(base, &mut buf);
            assert_eq!(
                load(&img, &mut mem, BackendId::Svm, b"", 0),
                Err(LoadError::DoesNotFit)
            );
        }
    }

    #[test]
    fn loads_bytes_zeroes_bss_and_writes_boot_info() {
        let mut buf = vec![0xAAu8; SIZE];
        let mut mem = GuestMemory::new(BASE, &mut buf);
        let f = exec(b"\x90\x90\xc3", 16);
        let img = parse_native(&f).unwrap();
        assert_eq!(img.bias, 0);
        let l = load(&img, &mut mem, BackendId::Svm, b"attack=x", 77).unwrap();
        assert_eq!(l.entry, AT);
        assert_eq!(l.stack_top, BASE + SIZE as u64);
        assert_eq!(mem.slice(l.entry, 3).unwrap(), b"\x90\x90\xc3");
        assert!(mem.slice(l.entry + 3, 13).unwrap().iter().all(|&b| b == 0));
        let mut raw = [0u8; 64];
        raw.copy_from_slice(&mem.slice(l.boot_info, 64).unwrap());
        let bi = BootInfo::from_bytes(&raw);
        assert_eq!(bi.magic, BOOT_INFO_MAGIC);
        assert_eq!(bi.vmm_entry_cycles, 77);
        assert_eq!(
            mem.slice(bi.cmdline_gpa, bi.cmdline_len).unwrap(),
            b"attack=x"
        );
    }

    /// A static PIE as rust-lld makes one, in miniature: text at vaddr 0, data at 0x1000 holding a
    /// pointer, PT_DYNAMIC with one R_*_RELATIVE entry for it, PT_TLS in the data segment.
    fn pie(rel_type: u32, rel_target: u64) -> Vec<u8> {
        let mut body = vec![0u8; 0x1000]; // text: file 0x1000, vaddr 0
        body[..2].copy_from_slice(b"\xeb\xfe");
        let mut data = vec![0u8; 0x100]; // data: file 0x2000, vaddr 0x1000
                                         // dynamic at data+0x10: DT_RELA 0x1040, DT_RELASZ 24, DT_RELAENT 24, DT_NULL
        for (k, (tag, val)) in [(7u64, 0x1040u64), (8, 24), (9, 24), (0, 0)]
            .iter()
            .enumerate()
        {
            let o = 0x10 + 16 * k;
            data[o..o + 8].copy_from_slice(&tag.to_le_bytes());
            data[o + 8..o + 16].copy_from_slice(&val.to_le_bytes());
        }
        // rela at data+0x40: r_offset rel_target, info type, addend 0x123
        data[0x40..0x48].copy_from_slice(&rel_target.to_le_bytes());
        data[0x48..0x50].copy_from_slice(&(rel_type as u64).to_le_bytes());
        data[0x50..0x58].copy_from_slice(&0x123u64.to_le_bytes());
        data[0x60..0x64].copy_from_slice(b"tls!");
        body.extend_from_slice(&data);
        elf(
            3,
            native().0,
            0,
            &[
                (LOAD, R | X, 0x1000, 0, 0x1000, 0x1000, 0x1000),
                (LOAD, R | W, 0x2000, 0x1000, 0x100, 0x200, 0x1000),
                (DYNAMIC, R | W, 0x2010, 0x1010, 0x40, 0x40, 8),
                (TLS, R, 0x2060, 0x1060, 4, 16, 8),
            ],
            &body,
        )
    }

    #[test]
    fn a_static_pie_is_placed_relocated_and_its_tls_found() {
        let f = pie(native().1, 0x1000);
        let img = parse_native(&f).unwrap();
        assert_eq!(img.bias, AT);
        assert_eq!((img.entry, img.lo, img.hi), (AT, AT, AT + 0x1200));
        assert_eq!(
            img.tls,
            Some(elf_image::Tls {
                gpa: AT + 0x1060,
                file_size: 4,
                mem_size: 16,
                align: 8
            })
        );
        let mut buf = vec![0xAAu8; SIZE];
        let mut mem = GuestMemory::new(BASE, &mut buf);
        load(&img, &mut mem, BackendId::Svm, b"", 0).unwrap();
        let v = u64::from_le_bytes(mem.slice(AT + 0x1000, 8).unwrap().try_into().unwrap());
        assert_eq!(v, AT + 0x123, "relocated: addend + load bias");
        assert_eq!(mem.slice(AT + 0x1060, 4).unwrap(), b"tls!");
        assert!(mem
            .slice(AT + 0x1100, 0x100)
            .unwrap()
            .iter()
            .all(|&b| b == 0));
        let m = guest_map(&img, BASE, 0x80_0000).unwrap();
        assert_eq!(m.perm_at(AT), Some(Perm::ReadExecute));
        assert_eq!(m.perm_at(AT + 0x1000), Some(Perm::ReadWrite));
    }

    #[test]
    fn malformed_elfs_are_refused_by_name() {
        let m = native().0;
        let ph = |flags, off, va, fs, ms| (LOAD, flags, off, va, fs, ms, 0x1000);
        let mut not_elf = exec(b"x", 1);
        not_elf[0] = 0;
        // A minimal ELF32 header (52 bytes, no program headers).
        let mut elf32 = vec![0u8; 0x100];
        elf32[..7].copy_from_slice(b"\x7fELF\x01\x01\x01");
        elf32[16] = 2;
        elf32[18..20].copy_from_slice(&m.to_le_bytes());
        elf32[20] = 1;
        elf32[40] = 52;
        let mut truncated = exec(b"x", 1);
        truncated.truncate(40);
        let mut bad_tls_align = pie(native().1, 0x1000);
        bad_tls_align[64 + 3 * 56 + 48] = 3; // PT_TLS p_align = 3
        let cases: Vec<(Vec<u8>, LoadError)> = vec![
            (Vec::new(), LoadError::Empty),
            (not_elf, LoadError::NotElf),
            (truncated, LoadError::NotElf),
            (elf32, LoadError::NotElf64),
            (
                elf(
                    2,
                    m.wrapping_add(1),
                    AT,
                    &[ph(R | X, 0x1000, AT, 1, 1)],
                    b"x",
                ),
                LoadError::WrongMachine,
            ),
            (
                elf(1, m, AT, &[ph(R | X, 0x1000, AT, 1, 1)], b"x"),
                LoadError::NotExecutable,
            ),
            (elf(2, m, AT, &[], b""), LoadError::NoSegments),
            (
                elf(2, m, AT, &[ph(R | X, 0x1000, AT, 2, 1)], b"xy"),
                LoadError::SegmentFileSize,
            ),
            (
                elf(2, m, AT, &[ph(R | X, 0x1000, AT, 0x10000, 0x10000)], b"x"),
                LoadError::SegmentFileOutside,
            ),
            (
                elf(2, m, AT, &[ph(R | X, u64::MAX, AT, 2, 2)], b"x"),
                LoadError::SegmentFileOutside,
            ),
            (
                elf(2, m, AT, &[ph(R | X, 0x1000, AT, 1, 1); 5], b"x"),
                LoadError::SegmentOverlap,
            ),
            (
                elf(
                    2,
                    m,
                    AT,
                    &[
                        ph(R | X, 0x1000, AT, 1, 1),
                        ph(R, 0x1000, AT + 0x1000, 1, 1),
                        ph(R, 0x1000, AT + 0x2000, 1, 1),
                        ph(R, 0x1000, AT + 0x3000, 1, 1),
                        ph(R, 0x1000, AT + 0x4000, 1, 1),
                        ph(R, 0x1000, AT + 0x5000, 1, 1),
                    ],
                    b"x",
                ),
                LoadError::TooManySegments,
            ),
            (
                elf(
                    2,
                    m,
                    AT,
                    &[
                        ph(R | X, 0x1000, AT, 1, 0x10),
                        ph(R, 0x1000, AT + 0x800, 1, 1),
                    ],
                    b"x",
                ),
                LoadError::SegmentOverlap,
            ),
            (
                elf(
                    2,
                    m,
                    u64::MAX,
                    &[ph(R | X, 0x1000, u64::MAX - 1, 1, 1)],
                    b"x",
                ),
                LoadError::SegmentOutside,
            ),
            (
                pie(native().1 + 1, 0x1000),
                LoadError::UnsupportedRelocations,
            ),
            (pie(native().1, 0x5000), LoadError::BadRelocation),
            (pie(native().1, u64::MAX - 2), LoadError::BadRelocation),
            (bad_tls_align, LoadError::BadTls),
        ];
        for (f, want) in cases {
            assert_eq!(parse_native(&f).err(), Some(want), "{want:?}");
            assert!(!want.describe().is_empty());
        }
    }

    #[test]
    fn elfs_that_parse_but_do_not_fit_or_break_w_x_are_refused() {
        let m = native().0;
        let mut buf = vec![0u8; SIZE];
        let mut mem = GuestMemory::new(BASE, &mut buf);
        let big = exec(b"x", SIZE as u64);
        let img = parse_native(&big).unwrap();
        assert_eq!(
            load(&img, &mut mem, BackendId::Svm, b"", 0),
            Err(LoadError::DoesNotFit)
        );
        let low = elf(
            2,
            m,
            BASE,
            &[(LOAD, R | X, 0x1000, BASE, 1, 1, 0x1000)],
            b"x",
        );
        let img = parse_native(&low).unwrap();
        assert_eq!(
            load(&img, &mut mem, BackendId::Svm, b"", 0),
            Err(LoadError::DoesNotFit)
        );
        let entry_out = elf(
            2,
            m,
            AT + 0x10,
            &[(LOAD, R | X, 0x1000, AT, 1, 1, 0x1000)],
            b"x",
        );
        let img = parse_native(&entry_out).unwrap();
        assert_eq!(
            load(&img, &mut mem, BackendId::Svm, b"", 0),
            Err(LoadError::BadEntry)
        );
        let wx = elf(
            2,
            m,
            AT,
            &[(LOAD, R | W | X, 0x1000, AT, 1, 1, 0x1000)],
            b"x",
        );
        let img = parse_native(&wx).unwrap();
        assert_eq!(
            guest_map(&img, BASE, 0x80_0000),
            Err(LoadError::SegmentWritableExecutable)
        );
    }

    #[test]
    fn long_command_lines_are_truncated() {
        let mut buf = vec![0u8; SIZE];
        let mut mem = GuestMemory::new(BASE, &mut buf);
        let long = vec![b'a'; 0x2000];
        let f = exec(b"x", 1);
        load(
            &parse_native(&f).unwrap(),
            &mut mem,
            BackendId::Svm,
            &long,
            0,
        )
        .unwrap();
        let mut raw = [0u8; 64];
        raw.copy_from_slice(&mem.slice(BASE, 64).unwrap());
        assert_eq!(BootInfo::from_bytes(&raw).cmdline_len, layout::CMDLINE_MAX);
    }

    // --- the guest map (W^X) ---

    const WBASE: u64 = 0x200_0000;
    const WSIZE: u64 = 0x80_0000;
    const PLOAD: u64 = WBASE + layout::PAYLOAD_OFFSET;

    fn seg(gpa: u64, mem_size: u64, flags: u32) -> PayloadSegment {
        PayloadSegment {
            gpa,
            mem_size,
            flags,
        }
    }

    /// A segment list with the payload's memory `[PLOAD, PLOAD + mem_size)` and entry.
    #[derive(Debug)]
    struct Tp {
        segments: &'static [PayloadSegment],
        mem_size: u64,
        entry_gpa: u64,
    }

    fn with(segments: &'static [PayloadSegment], mem_size: u64) -> Tp {
        Tp {
            segments,
            mem_size,
            entry_gpa: PLOAD,
        }
    }

    fn gm(p: &Tp, base: u64, size: u64) -> Result<GuestMap, LoadError> {
        map_segments(
            p.segments,
            PLOAD,
            PLOAD + p.mem_size,
            p.entry_gpa,
            base,
            size,
        )
    }

    fn leak(v: Vec<PayloadSegment>) -> &'static [PayloadSegment] {
        Box::leak(v.into_boxed_slice())
    }

    /// What the linker scripts make: text, read-only data, data+bss, each page aligned.
    fn typical() -> Tp {
        with(
            leak(vec![
                seg(PLOAD, 0x2345, R | X),
                seg(PLOAD + 0x3000, 0x800, R),
                seg(PLOAD + 0x4000, 0x1_2010, R | W),
            ]),
            0x4000 + 0x1_2010,
        )
    }

    #[test]
    fn text_is_rx_rodata_r_data_rw_and_the_rest_of_the_window_rw() {
        let m = gm(&typical(), WBASE, WSIZE).unwrap();
        let want = [
            (WBASE, PLOAD, Perm::ReadWrite),
            (PLOAD, PLOAD + 0x3000, Perm::ReadExecute),
            (PLOAD + 0x3000, PLOAD + 0x4000, Perm::ReadOnly),
            // Data and bss (last page rounded up) merge with the heap and stack above them.
            (PLOAD + 0x4000, WBASE + WSIZE, Perm::ReadWrite),
        ];
        let got: Vec<_> = m
            .regions()
            .iter()
            .map(|r| (r.start, r.end, r.perm))
            .collect();
        assert_eq!(got, want);
        assert_eq!((m.base(), m.end()), (WBASE, WBASE + WSIZE));
        assert_eq!(m.perm_at(WBASE), Some(Perm::ReadWrite));
        assert_eq!(m.perm_at(PLOAD + 0x2fff), Some(Perm::ReadExecute));
        assert_eq!(m.perm_at(PLOAD + 0x3000), Some(Perm::ReadOnly));
        assert_eq!(m.perm_at(WBASE + WSIZE - 1), Some(Perm::ReadWrite));
        assert_eq!(m.perm_at(WBASE - 1), None);
        assert_eq!(m.perm_at(WBASE + WSIZE), None);
        // 2 MiB blocks: the first is mixed, the others uniform read+write.
        assert_eq!(m.uniform(WBASE, 0x20_0000), None);
        assert_eq!(
            m.uniform(WBASE + 0x20_0000, 0x20_0000),
            Some(Perm::ReadWrite)
        );
        assert_eq!(m.uniform(PLOAD, 0x1000), Some(Perm::ReadExecute));
        assert_eq!(m.uniform(WBASE + WSIZE - 0x1000, 0x2000), None);
        assert_eq!(m.uniform(u64::MAX, 2), None);
        assert_eq!(
            m.to_string(),
            "0x2000000..0x2010000 rw- 0x2010000..0x2013000 r-x 0x2013000..0x2014000 r-- \
             0x2014000..0x2800000 rw-"
        );
        // Never writable and executable anywhere.
        assert!(m
            .regions()
            .iter()
            .all(|r| !(r.perm.writable() && r.perm.executable())));
    }

    #[test]
    fn regions_always_tile_the_window_exactly() {
        // Gaps between segments and a read-only segment last: still a tiling, gaps read+write.
        let p = with(
            leak(vec![
                seg(PLOAD + 0x1000, 0x1000, R | X),
                seg(PLOAD + 0x5000, 0x10, R | W),
                seg(PLOAD + 0x9000, 0x1, R),
            ]),
            0x9001,
        );
        let mut p = p;
        p.entry_gpa = PLOAD + 0x1800;
        let m = gm(&p, WBASE, WSIZE).unwrap();
        let r = m.regions();
        assert_eq!(r[0].start, WBASE);
        assert_eq!(r[r.len() - 1].end, WBASE + WSIZE);
        for w in r.windows(2) {
            assert_eq!(w[0].end, w[1].start);
            assert_ne!(w[0].perm, w[1].perm, "neighbours merge");
        }
        assert!(r.iter().all(|x| x.start % PAGE == 0 && x.end % PAGE == 0));
        assert_eq!(m.perm_at(PLOAD), Some(Perm::ReadWrite));
        assert_eq!(m.perm_at(PLOAD + 0x9000), Some(Perm::ReadOnly));
        assert_eq!(m.perm_at(PLOAD + 0xA000), Some(Perm::ReadWrite));
    }

    #[test]
    fn malformed_segment_lists_are_refused_by_name() {
        let cases: Vec<(Tp, LoadError)> = vec![
            (with(&[], 0x1000), LoadError::NoSegments),
            (
                with(
                    leak(vec![
                        seg(PLOAD, 0x1000, R | X);
                        crate::config::PAYLOAD_SEGMENTS_MAX + 1
                    ]),
                    0x1000,
                ),
                LoadError::TooManySegments,
            ),
            (
                with(leak(vec![seg(PLOAD, 0x1000, R | W | X)]), 0x1000),
                LoadError::SegmentWritableExecutable,
            ),
            (
                with(leak(vec![seg(PLOAD, 0x1000, X)]), 0x1000),
                LoadError::SegmentNotReadable,
            ),
            (
                with(
                    leak(vec![seg(PLOAD, 0x800, R | X), seg(PLOAD + 0x800, 0x800, R)]),
                    0x1000,
                ),
                LoadError::SegmentOverlap,
            ),
            (
                with(
                    leak(vec![
                        seg(PLOAD, 0x1800, R | X),
                        seg(PLOAD + 0x1000, 0x800, R),
                    ]),
                    0x2000,
                ),
                LoadError::SegmentOverlap,
            ),
            (
                with(
                    leak(vec![
                        seg(PLOAD + 0x1000, 0x800, R),
                        seg(PLOAD, 0x800, R | X),
                    ]),
                    0x2000,
                ),
                LoadError::SegmentOverlap,
            ),
            (
                with(
                    leak(vec![seg(PLOAD, 0x1000, R | X), seg(PLOAD + 0x1000, 0, R)]),
                    0x2000,
                ),
                LoadError::SegmentOutside,
            ),
            (
                with(leak(vec![seg(PLOAD - 0x1000, 0x2000, R | X)]), 0x1000),
                LoadError::SegmentOutside,
            ),
            (
                with(
                    leak(vec![
                        seg(PLOAD, 0x1000, R | X),
                        seg(PLOAD + 0x1000, 0x2000, R | W),
                    ]),
                    0x2000,
                ),
                LoadError::SegmentOutside,
            ),
            (
                with(leak(vec![seg(PLOAD, u64::MAX, R | X)]), 0x1000),
                LoadError::SegmentOutside,
            ),
            (
                with(
                    leak(vec![
                        seg(PLOAD, 0x1000, R),
                        seg(PLOAD + 0x1000, 0x1000, R | X),
                    ]),
                    0x2000,
                ),
                LoadError::EntryNotExecutable,
            ),
            (
                with(leak(vec![seg(PLOAD, 0x1000, R | X)]), WSIZE),
                LoadError::DoesNotFit,
            ),
        ];
        for (p, want) in cases {
            assert_eq!(gm(&p, WBASE, WSIZE), Err(want), "{:x?}", p.segments);
            assert!(!want.describe().is_empty());
        }
    }

    #[test]
    fn blocks_above_the_payload_are_deferred_and_taken_once() {
        const MIB: u64 = 1 << 20;
        let size = 256 * MIB;
        let mut m = gm(&typical(), WBASE, size).unwrap();
        // Only blocks wholly above `from` (rounded up) are deferred; the payload's block is not.
        assert_eq!(m.defer_from(PLOAD + 0x1_6010), 127);
        assert_eq!(m.pending_blocks(), 127);
        assert!(!m.is_pending(WBASE));
        assert!(!m.is_pending(PLOAD + 0x1_0000));
        assert!(m.is_pending(WBASE + 2 * MIB));
        assert!(m.is_pending(WBASE + size - 1));
        assert!(!m.is_pending(WBASE + size));
        assert!(!m.is_pending(WBASE - 1));
        // The first touch anywhere in a block hands out the block's base, once.
        assert_eq!(
            m.take_pending(WBASE + 5 * MIB + 0x123),
            Some(WBASE + 4 * MIB)
        );
        assert_eq!(m.take_pending(WBASE + 4 * MIB), None);
        assert!(!m.is_pending(WBASE + 4 * MIB + 0x1000));
        assert_eq!(m.pending_blocks(), 126);
        // The W^X map itself is unchanged by deferral: pending blocks are read+write.
        assert_eq!(m.perm_at(WBASE + 8 * MIB), Some(Perm::ReadWrite));
        // Stale blocks are zeroed when the VMM must access them for the guest, and only then.
        let mut buf = vec![0xAAu8; size as usize];
        let mut mem = GuestMemory::new(WBASE, &mut buf);
        assert_eq!(m.zero_stale(&mut mem, WBASE + 3 * MIB, 2 * MIB), 2);
        assert!(mem
            .slice(WBASE + 2 * MIB, 4 * MIB)
            .unwrap()
            .iter()
            .all(|&b| b == 0));
        assert_eq!(mem.slice(WBASE + 6 * MIB, 1).unwrap(), [0xAA]);
        assert!(m.is_pending(WBASE + 2 * MIB), "zeroed, still to be mapped");
        assert_eq!(m.zero_stale(&mut mem, WBASE + 3 * MIB, 2 * MIB), 0, "once");
        assert_eq!(
            m.zero_stale(&mut mem, WBASE + 4 * MIB, 1),
            0,
            "the taken block, zeroed"
        );
        assert_eq!(m.zero_stale(&mut mem, WBASE + 6 * MIB, 1), 1);
        assert_eq!(m.zero_stale(&mut mem, 0, u64::MAX), 124);
        assert!(mem
            .slice(WBASE + 2 * MIB, size - 2 * MIB)
            .unwrap()
            .iter()
            .all(|&b| b == 0));
        assert_eq!(m.zero_stale(&mut mem, 0, u64::MAX), 0);
        // Deferring from below the window, or twice, never defers a mixed block.
        let mut m = gm(&typical(), WBASE, 8 * MIB).unwrap();
        assert_eq!(m.defer_from(0), 3);
        assert!(!m.is_pending(WBASE));
        assert_eq!(m.defer_from(0), 3);
        assert_eq!(m.pending_blocks(), 3);
        assert_eq!(m.defer_from(u64::MAX), 0);
        // A window larger than the bitmap defers only what the bitmap holds.
        let mut huge = GuestMap::whole(0, 4 * crate::config::GUEST_MEM_MAX, Perm::ReadWrite);
        huge.defer_from(0);
        assert_eq!(
            huge.pending_blocks() as u64,
            crate::config::GUEST_MEM_MAX / LAZY_BLOCK
        );
        assert!(!huge.is_pending(2 * crate::config::GUEST_MEM_MAX));
    }

    #[test]
    fn a_whole_map_is_one_region() {
        let m = GuestMap::whole(WBASE, WSIZE, Perm::ReadWrite);
        assert_eq!(m.regions().len(), 1);
        assert_eq!(m.uniform(WBASE, WSIZE), Some(Perm::ReadWrite));
    }
}
