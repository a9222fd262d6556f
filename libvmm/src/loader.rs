//! Puts the embedded payload into guest memory and writes the boot-info block, and draws the guest's
//! memory map (what the nested tables allow where): the same on every architecture. All writes go
//! through [`GuestMemory`], so a payload that does not fit is an error here, at boot, not memory
//! corruption.
//!
//! **W^X.** [`guest_map`] turns the payload's segment list (its ELF program headers, recorded at build
//! time by `linker/build.rs`) into a [`GuestMap`]: a fixed list of page-aligned regions that cover the
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

use crate::config::{GUEST_MAP_REGIONS, PAYLOAD_SEGMENTS_MAX};
use crate::guest_mem::{GuestMemory, MemError};
use crate::{Payload, PayloadSegment};

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
    /// The payload carries no segment list.
    NoSegments,
    /// More segments than `config::PAYLOAD_SEGMENTS_MAX`.
    TooManySegments,
    /// A segment does not start on a 4 KiB page.
    SegmentUnaligned,
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
            Self::NoSegments => "payload has no segment list",
            Self::TooManySegments => "payload has more segments than config::PAYLOAD_SEGMENTS_MAX",
            Self::SegmentUnaligned => "payload segment does not start on a 4 KiB page",
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
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GuestMap {
    regions: [Region; GUEST_MAP_REGIONS],
    len: usize,
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
        }
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
/// each segment (its last page rounded up) with its own rights, read+write elsewhere.
pub fn guest_map(payload: &Payload, base: u64, size: u64) -> Result<GuestMap, LoadError> {
    let segs = payload.segments;
    if segs.is_empty() {
        return Err(LoadError::NoSegments);
    }
    if segs.len() > PAYLOAD_SEGMENTS_MAX {
        return Err(LoadError::TooManySegments);
    }
    // Segments may use the payload's memory and its last page, never the stack below the window's top.
    let payload_end = payload
        .load_gpa
        .checked_add(payload.mem_size)
        .and_then(page_up)
        .ok_or(LoadError::DoesNotFit)?;
    let limit = (base + size).saturating_sub(layout::STACK_SIZE);
    if payload.load_gpa < base + layout::PAYLOAD_OFFSET || payload_end > limit {
        return Err(LoadError::DoesNotFit);
    }
    let mut map = GuestMap {
        regions: [Region {
            start: 0,
            end: 0,
            perm: Perm::ReadWrite,
        }; GUEST_MAP_REGIONS],
        len: 0,
    };
    let mut at = base;
    let mut entry_ok = false;
    for s in segs {
        let perm = segment_perm(s)?;
        if !s.gpa.is_multiple_of(PAGE) {
            return Err(LoadError::SegmentUnaligned);
        }
        let end = s
            .gpa
            .checked_add(s.mem_size)
            .and_then(page_up)
            .ok_or(LoadError::SegmentOutside)?;
        if s.mem_size == 0 || s.gpa < payload.load_gpa || end > payload_end {
            return Err(LoadError::SegmentOutside);
        }
        if s.gpa < at {
            return Err(LoadError::SegmentOverlap);
        }
        map.push(at, s.gpa, Perm::ReadWrite);
        map.push(s.gpa, end, perm);
        entry_ok |= perm.executable() && s.gpa <= payload.entry_gpa && payload.entry_gpa < end;
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
            segments: &[],
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

    // --- the guest map (W^X) ---

    const WBASE: u64 = 0x200_0000;
    const WSIZE: u64 = 0x80_0000;
    const LOAD: u64 = WBASE + layout::PAYLOAD_OFFSET;
    const R: u32 = PayloadSegment::R;
    const W: u32 = PayloadSegment::W;
    const X: u32 = PayloadSegment::X;

    fn seg(gpa: u64, mem_size: u64, flags: u32) -> PayloadSegment {
        PayloadSegment {
            gpa,
            mem_size,
            flags,
        }
    }

    fn with(segments: &'static [PayloadSegment], mem_size: u64) -> Payload {
        Payload {
            name: "t",
            load_gpa: LOAD,
            entry_gpa: LOAD,
            mem_size,
            bytes: b"x",
            segments,
        }
    }

    fn leak(v: Vec<PayloadSegment>) -> &'static [PayloadSegment] {
        Box::leak(v.into_boxed_slice())
    }

    /// What the linker scripts make: text, read-only data, data+bss, each page aligned.
    fn typical() -> Payload {
        with(
            leak(vec![
                seg(LOAD, 0x2345, R | X),
                seg(LOAD + 0x3000, 0x800, R),
                seg(LOAD + 0x4000, 0x1_2010, R | W),
            ]),
            0x4000 + 0x1_2010,
        )
    }

    #[test]
    fn text_is_rx_rodata_r_data_rw_and_the_rest_of_the_window_rw() {
        let m = guest_map(&typical(), WBASE, WSIZE).unwrap();
        let want = [
            (WBASE, LOAD, Perm::ReadWrite),
            (LOAD, LOAD + 0x3000, Perm::ReadExecute),
            (LOAD + 0x3000, LOAD + 0x4000, Perm::ReadOnly),
            // Data and bss (last page rounded up) merge with the heap and stack above them.
            (LOAD + 0x4000, WBASE + WSIZE, Perm::ReadWrite),
        ];
        let got: Vec<_> = m
            .regions()
            .iter()
            .map(|r| (r.start, r.end, r.perm))
            .collect();
        assert_eq!(got, want);
        assert_eq!((m.base(), m.end()), (WBASE, WBASE + WSIZE));
        assert_eq!(m.perm_at(WBASE), Some(Perm::ReadWrite));
        assert_eq!(m.perm_at(LOAD + 0x2fff), Some(Perm::ReadExecute));
        assert_eq!(m.perm_at(LOAD + 0x3000), Some(Perm::ReadOnly));
        assert_eq!(m.perm_at(WBASE + WSIZE - 1), Some(Perm::ReadWrite));
        assert_eq!(m.perm_at(WBASE - 1), None);
        assert_eq!(m.perm_at(WBASE + WSIZE), None);
        // 2 MiB blocks: the first is mixed, the others uniform read+write.
        assert_eq!(m.uniform(WBASE, 0x20_0000), None);
        assert_eq!(
            m.uniform(WBASE + 0x20_0000, 0x20_0000),
            Some(Perm::ReadWrite)
        );
        assert_eq!(m.uniform(LOAD, 0x1000), Some(Perm::ReadExecute));
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
                seg(LOAD + 0x1000, 0x1000, R | X),
                seg(LOAD + 0x5000, 0x10, R | W),
                seg(LOAD + 0x9000, 0x1, R),
            ]),
            0x9001,
        );
        let mut p = p;
        p.entry_gpa = LOAD + 0x1800;
        let m = guest_map(&p, WBASE, WSIZE).unwrap();
        let r = m.regions();
        assert_eq!(r[0].start, WBASE);
        assert_eq!(r[r.len() - 1].end, WBASE + WSIZE);
        for w in r.windows(2) {
            assert_eq!(w[0].end, w[1].start);
            assert_ne!(w[0].perm, w[1].perm, "neighbours merge");
        }
        assert!(r.iter().all(|x| x.start % PAGE == 0 && x.end % PAGE == 0));
        assert_eq!(m.perm_at(LOAD), Some(Perm::ReadWrite));
        assert_eq!(m.perm_at(LOAD + 0x9000), Some(Perm::ReadOnly));
        assert_eq!(m.perm_at(LOAD + 0xA000), Some(Perm::ReadWrite));
    }

    #[test]
    fn malformed_segment_lists_are_refused_by_name() {
        let cases: Vec<(Payload, LoadError)> = vec![
            (with(&[], 0x1000), LoadError::NoSegments),
            (
                with(leak(vec![seg(LOAD, 0x1000, R | X); 5]), 0x1000),
                LoadError::TooManySegments,
            ),
            (
                with(leak(vec![seg(LOAD, 0x1000, R | W | X)]), 0x1000),
                LoadError::SegmentWritableExecutable,
            ),
            (
                with(leak(vec![seg(LOAD, 0x1000, X)]), 0x1000),
                LoadError::SegmentNotReadable,
            ),
            (
                with(
                    leak(vec![seg(LOAD, 0x800, R | X), seg(LOAD + 0x800, 0x800, R)]),
                    0x1000,
                ),
                LoadError::SegmentUnaligned,
            ),
            (
                with(
                    leak(vec![seg(LOAD, 0x1800, R | X), seg(LOAD + 0x1000, 0x800, R)]),
                    0x2000,
                ),
                LoadError::SegmentOverlap,
            ),
            (
                with(
                    leak(vec![seg(LOAD + 0x1000, 0x800, R), seg(LOAD, 0x800, R | X)]),
                    0x2000,
                ),
                LoadError::SegmentOverlap,
            ),
            (
                with(
                    leak(vec![seg(LOAD, 0x1000, R | X), seg(LOAD + 0x1000, 0, R)]),
                    0x2000,
                ),
                LoadError::SegmentOutside,
            ),
            (
                with(leak(vec![seg(LOAD - 0x1000, 0x2000, R | X)]), 0x1000),
                LoadError::SegmentOutside,
            ),
            (
                with(
                    leak(vec![
                        seg(LOAD, 0x1000, R | X),
                        seg(LOAD + 0x1000, 0x2000, R | W),
                    ]),
                    0x2000,
                ),
                LoadError::SegmentOutside,
            ),
            (
                with(leak(vec![seg(LOAD, u64::MAX, R | X)]), 0x1000),
                LoadError::SegmentOutside,
            ),
            (
                with(
                    leak(vec![
                        seg(LOAD, 0x1000, R),
                        seg(LOAD + 0x1000, 0x1000, R | X),
                    ]),
                    0x2000,
                ),
                LoadError::EntryNotExecutable,
            ),
            (
                with(leak(vec![seg(LOAD, 0x1000, R | X)]), WSIZE),
                LoadError::DoesNotFit,
            ),
        ];
        for (p, want) in cases {
            assert_eq!(guest_map(&p, WBASE, WSIZE), Err(want), "{:x?}", p.segments);
            assert!(!want.describe().is_empty());
        }
    }

    #[test]
    fn a_whole_map_is_one_region() {
        let m = GuestMap::whole(WBASE, WSIZE, Perm::ReadWrite);
        assert_eq!(m.regions().len(), 1);
        assert_eq!(m.uniform(WBASE, WSIZE), Some(Perm::ReadWrite));
    }
}
