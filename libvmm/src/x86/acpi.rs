//! The host's CPUs from ACPI: RSDP -> RSDT/XSDT -> MADT ("APIC") -> Processor Local APIC (type 0) and
//! Local x2APIC (type 9) entries. The boot CPU uses the list to start every other CPU (INIT-SIPI-SIPI).
//!
//! Firmware tables are input the VMM did not write, so every byte read here is bounds-checked: each
//! table's length against what the reader can map and against the table's own header, every checksum,
//! every MADT entry's length against its type and against the table's end. A bad table is an
//! [`AcpiError`] naming what is wrong, never a fault or a panic. The parser is written over a reader
//! closure (`read(physical address, length) -> Option<&[u8]>`), so host tests and a fuzz target call
//! it on plain byte buffers ([`cpus_from_rsdp`], [`parse_madt`]).
//!
//! Hand-written rather than the `acpi` crate: that crate maps tables through a handler trait built for
//! an allocator and an OS mapping API (its MADT walk wants `alloc` for the processor list); the VMM
//! needs five fixed structures, read-only, into a `heapless` list.
#![forbid(unsafe_code)]

use crate::config::MAX_CPUS;

/// Why the tables could not be used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AcpiError {
    RsdpChecksum,
    RsdpUnreadable,
    RootUnreadable,
    RootBadHeader,
    RootChecksum,
    NoMadt,
    MadtBadHeader,
    MadtChecksum,
    MadtEntryLength,
}

impl AcpiError {
    #[cfg(target_os = "none")] // the boot's CPU report
    pub fn what(self) -> &'static str {
        match self {
            AcpiError::RsdpChecksum => "ACPI: RSDP checksum is wrong",
            AcpiError::RsdpUnreadable => "ACPI: RSDP is outside readable memory",
            AcpiError::RootUnreadable => "ACPI: RSDT/XSDT is outside readable memory",
            AcpiError::RootBadHeader => "ACPI: RSDT/XSDT header (signature or length) is invalid",
            AcpiError::RootChecksum => "ACPI: RSDT/XSDT checksum is wrong",
            AcpiError::NoMadt => "ACPI: no valid MADT (APIC table) in the RSDT/XSDT",
            AcpiError::MadtBadHeader => "ACPI: MADT length is invalid",
            AcpiError::MadtChecksum => "ACPI: MADT checksum is wrong",
            AcpiError::MadtEntryLength => "ACPI: a MADT entry's length overruns the table",
        }
    }
}

/// The CPUs the MADT lists as usable, by APIC id (in table order; duplicates dropped).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Cpus {
    pub apic_ids: heapless::Vec<u32, MAX_CPUS>,
    /// Usable CPUs listed beyond [`MAX_CPUS`] (left alone, and reported).
    pub dropped: u32,
}

const SDT_HEADER: usize = 36;
/// Largest table accepted (a MADT of 256 x2APIC entries is about 4 KiB; far above any real one).
const TABLE_MAX: u32 = 1 << 16;

fn u32_at(b: &[u8], o: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(o..o + 4)?.try_into().ok()?))
}

fn u64_at(b: &[u8], o: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(o..o + 8)?.try_into().ok()?))
}

fn checksum_ok(b: &[u8]) -> bool {
    b.iter().fold(0u8, |a, &x| a.wrapping_add(x)) == 0
}

/// Whether `b` (at least 20 bytes) is a valid RSDP: signature and the ACPI 1.0 checksum over 20 bytes,
/// plus the extended checksum when it claims revision 2 or later.
pub fn rsdp_valid(b: &[u8]) -> bool {
    let Some(v1) = b.get(..20) else { return false };
    if &v1[..8] != b"RSD PTR " || !checksum_ok(v1) {
        return false;
    }
    if v1[15] >= 2 {
        let len = u32_at(b, 20).unwrap_or(0) as usize;
        return (36..=b.len()).contains(&len) && checksum_ok(&b[..len]);
    }
    true
}

/// Scans `area` (at physical `base`) for an RSDP on 16-byte boundaries.
pub fn scan_for_rsdp(base: u64, area: &[u8]) -> Option<u64> {
    (0..area.len().saturating_sub(19))
        .step_by(16)
        .find(|&o| rsdp_valid(&area[o..(o + 36).min(area.len())]))
        .map(|o| base + o as u64)
}

/// Reads one system description table at `pa`, checking its signature (when `sig` is given), length
/// and checksum. `None` for an unreadable or invalid one.
fn table<'a>(
    pa: u64,
    read: &impl Fn(u64, usize) -> Option<&'a [u8]>,
) -> Result<&'a [u8], (bool, bool)> {
    // (readable, checksum ok) for the caller's error choice
    let head = read(pa, SDT_HEADER).ok_or((false, false))?;
    let len = u32_at(head, 4).ok_or((false, false))?;
    if !(SDT_HEADER as u32..=TABLE_MAX).contains(&len) {
        return Err((true, true));
    }
    let t = read(pa, len as usize).ok_or((false, false))?;
    if t.len() != len as usize {
        return Err((false, false));
    }
    if !checksum_ok(t) {
        return Err((true, false));
    }
    Ok(t)
}

/// From an RSDP at `rsdp_pa` to the CPU list.
pub fn cpus_from_rsdp<'a>(
    rsdp_pa: u64,
    read: impl Fn(u64, usize) -> Option<&'a [u8]>,
) -> Result<Cpus, AcpiError> {
    let v1 = read(rsdp_pa, 20).ok_or(AcpiError::RsdpUnreadable)?;
    let rev = v1[15];
    let rsdp = if rev >= 2 {
        read(rsdp_pa, 36).ok_or(AcpiError::RsdpUnreadable)?
    } else {
        v1
    };
    if !rsdp_valid(rsdp) {
        return Err(AcpiError::RsdpChecksum);
    }
    // XSDT (64-bit entries) when revision 2+ gives one, else the RSDT (32-bit entries).
    let xsdt = if rev >= 2 {
        u64_at(rsdp, 24).unwrap_or(0)
    } else {
        0
    };
    let (root_pa, width, sig) = if xsdt != 0 {
        (xsdt, 8, b"XSDT")
    } else {
        (u32_at(rsdp, 16).unwrap_or(0) as u64, 4, b"RSDT")
    };
    let root = table(root_pa, &read).map_err(|e| match e {
        (false, _) => AcpiError::RootUnreadable,
        (true, true) => AcpiError::RootBadHeader,
        (true, false) => AcpiError::RootChecksum,
    })?;
    if &root[..4] != sig {
        return Err(AcpiError::RootBadHeader);
    }
    let mut madt_error = AcpiError::NoMadt;
    for e in root[SDT_HEADER..].chunks_exact(width) {
        let pa = if width == 8 {
            u64_at(e, 0).unwrap_or(0)
        } else {
            u32_at(e, 0).unwrap_or(0) as u64
        };
        let Some(head) = read(pa, 4) else { continue };
        if head != b"APIC" {
            continue;
        }
        match table(pa, &read) {
            Ok(madt) => return parse_madt(madt),
            Err((true, true)) => madt_error = AcpiError::MadtBadHeader,
            Err((true, false)) => madt_error = AcpiError::MadtChecksum,
            Err((false, _)) => {}
        }
    }
    Err(madt_error)
}

/// Parses a whole MADT (header included; checked for length and checksum again, so a fuzz target can
/// hand it any bytes).
pub fn parse_madt(madt: &[u8]) -> Result<Cpus, AcpiError> {
    // Header (36) + local APIC address (4) + flags (4).
    let len = u32_at(madt, 4).ok_or(AcpiError::MadtBadHeader)? as usize;
    if len < SDT_HEADER + 8 || len > madt.len() || &madt[..4] != b"APIC" {
        return Err(AcpiError::MadtBadHeader);
    }
    let madt = &madt[..len];
    if !checksum_ok(madt) {
        return Err(AcpiError::MadtChecksum);
    }
    let mut cpus = Cpus::default();
    let mut off = SDT_HEADER + 8;
    while off < len {
        let ty = madt[off];
        let elen = *madt.get(off + 1).ok_or(AcpiError::MadtEntryLength)? as usize;
        if elen < 2 || off + elen > len {
            return Err(AcpiError::MadtEntryLength);
        }
        let e = &madt[off..off + elen];
        // Flags bit 0: enabled; bit 1: online capable (may be enabled later: not started now).
        let id = match ty {
            0 if elen >= 8 => (u32_at(e, 4).unwrap_or(0) & 1 != 0).then_some(e[3] as u32),
            9 if elen >= 16 => {
                (u32_at(e, 8).unwrap_or(0) & 1 != 0).then(|| u32_at(e, 4).unwrap_or(0))
            }
            0 | 9 => return Err(AcpiError::MadtEntryLength),
            _ => None,
        };
        // 0xFF (xAPIC) and 0xFFFF_FFFF (x2APIC) are "no CPU" / broadcast ids.
        if let Some(id) = id.filter(|&i| i != 0xFF && i != u32::MAX) {
            if !cpus.apic_ids.contains(&id) && cpus.apic_ids.push(id).is_err() {
                cpus.dropped += 1;
            }
        }
        off += elen;
    }
    Ok(cpus)
}

/// A page below 1 MiB for the AP trampoline: page-aligned, inside a RAM range of the loader's map, not
/// page 0 (real-mode IVT and BIOS data), and overlapping none of `avoid` (the loader's own information,
/// which the VMM still reads). The SIPI vector is the page number, so it must be below 0x100000.
pub fn trampoline_page(ram: &[(u64, u64)], avoid: &[(u64, u64)]) -> Option<u64> {
    const PAGE: u64 = crate::config::AP_TRAMPOLINE_SIZE as u64;
    (1..0x100_000 / PAGE).map(|n| n * PAGE).find(|&p| {
        ram.iter()
            .any(|&(b, l)| p >= b && p + PAGE <= b.saturating_add(l))
            && !avoid
                .iter()
                .any(|&(b, l)| b < p + PAGE && p < b.saturating_add(l))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fix_checksum(t: &mut [u8], at: usize) {
        t[at] = 0;
        let s = t.iter().fold(0u8, |a, &x| a.wrapping_add(x));
        t[at] = 0u8.wrapping_sub(s);
    }

    fn sdt(sig: &[u8; 4], body: &[u8]) -> Vec<u8> {
        let mut t = vec![0u8; SDT_HEADER];
        t[..4].copy_from_slice(sig);
        t.extend_from_slice(body);
        let len = t.len() as u32;
        t[4..8].copy_from_slice(&len.to_le_bytes());
        t[8] = 1;
        fix_checksum(&mut t, 9);
        t
    }

    fn madt(entries: &[&[u8]]) -> Vec<u8> {
        let mut body = vec![0, 0, 0xE0, 0xFE, 1, 0, 0, 0];
        for e in entries {
            body.extend_from_slice(e);
        }
        sdt(b"APIC", &body)
    }

    fn lapic(id: u8, flags: u32) -> Vec<u8> {
        let mut e = vec![0, 8, id, id];
        e.extend_from_slice(&flags.to_le_bytes());
        e
    }

    fn x2apic(id: u32, flags: u32) -> Vec<u8> {
        let mut e = vec![9, 16, 0, 0];
        e.extend_from_slice(&id.to_le_bytes());
        e.extend_from_slice(&flags.to_le_bytes());
        e.extend_from_slice(&7u32.to_le_bytes());
        e
    }

    /// A memory image: RSDP at 0x100 (revision `rev`), root table at 0x200, MADT at 0x400.
    fn machine(rev: u8, madt_bytes: &[u8]) -> Vec<u8> {
        let mut m = vec![0u8; 0x1000];
        let root = if rev >= 2 {
            sdt(b"XSDT", &0x400u64.to_le_bytes())
        } else {
            sdt(b"RSDT", &0x400u32.to_le_bytes())
        };
        m[0x200..0x200 + root.len()].copy_from_slice(&root);
        m[0x400..0x400 + madt_bytes.len()].copy_from_slice(madt_bytes);
        let r = &mut m[0x100..0x124];
        r[..8].copy_from_slice(b"RSD PTR ");
        r[15] = rev;
        r[16..20].copy_from_slice(&0x200u32.to_le_bytes());
        if rev >= 2 {
            r[20..24].copy_from_slice(&36u32.to_le_bytes());
            r[24..32].copy_from_slice(&0x200u64.to_le_bytes());
        }
        fix_checksum(&mut r[..20], 8);
        if rev >= 2 {
            fix_checksum(r, 32);
        }
        m
    }

    fn reader<'a>(m: &'a [u8]) -> impl Fn(u64, usize) -> Option<&'a [u8]> + 'a {
        move |a, l| m.get(a as usize..(a as usize).checked_add(l)?)
    }

    #[test]
    fn cpus_from_xsdt_and_rsdt_with_both_entry_kinds() {
        let t = madt(&[&lapic(0, 1), &lapic(1, 1), &lapic(2, 2), &x2apic(300, 1)]);
        for rev in [0, 2] {
            let m = machine(rev, &t);
            let c = cpus_from_rsdp(0x100, reader(&m)).unwrap();
            assert_eq!(&c.apic_ids[..], &[0, 1, 300], "rev {rev}");
            assert_eq!(c.dropped, 0);
            assert_eq!(scan_for_rsdp(0, &m), Some(0x100));
        }
    }

    #[test]
    fn more_cpus_than_the_maximum_are_counted_not_kept() {
        let es: Vec<Vec<u8>> = (0..MAX_CPUS as u8 + 3).map(|i| lapic(i, 1)).collect();
        let refs: Vec<&[u8]> = es.iter().map(|e| &e[..]).collect();
        let c = parse_madt(&madt(&refs)).unwrap();
        assert_eq!(c.apic_ids.len(), MAX_CPUS);
        assert_eq!(c.dropped, 3);
    }

    #[test]
    fn malformed_tables_are_named_errors() {
        let good = madt(&[&lapic(0, 1), &lapic(1, 1)]);
        // Bad checksums.
        let mut m = machine(2, &good);
        m[0x100 + 8] ^= 1;
        assert_eq!(
            cpus_from_rsdp(0x100, reader(&m)),
            Err(AcpiError::RsdpChecksum)
        );
        let mut m = machine(2, &good);
        m[0x400 + 40] ^= 1;
        assert_eq!(
            cpus_from_rsdp(0x100, reader(&m)),
            Err(AcpiError::MadtChecksum)
        );
        let mut m = machine(2, &good);
        m[0x200 + 36] ^= 1;
        assert_eq!(
            cpus_from_rsdp(0x100, reader(&m)),
            Err(AcpiError::RootChecksum)
        );
        // A root table that claims to run past readable memory.
        let mut m = machine(0, &good);
        m[0x204..0x208].copy_from_slice(&0x2000u32.to_le_bytes());
        assert_eq!(
            cpus_from_rsdp(0x100, reader(&m)),
            Err(AcpiError::RootUnreadable)
        );
        // A root table shorter than its header.
        let mut m = machine(0, &good);
        m[0x204..0x208].copy_from_slice(&4u32.to_le_bytes());
        assert_eq!(
            cpus_from_rsdp(0x100, reader(&m)),
            Err(AcpiError::RootBadHeader)
        );
        // An RSDP at the end of memory.
        assert_eq!(
            cpus_from_rsdp(0xFF0, reader(&m)),
            Err(AcpiError::RsdpUnreadable)
        );
        // No MADT among the entries.
        let mut other = good.clone();
        other[..4].copy_from_slice(b"FACP");
        let m = machine(2, &other);
        assert_eq!(cpus_from_rsdp(0x100, reader(&m)), Err(AcpiError::NoMadt));
        // Entries: zero length, overrunning the end, too short for their type.
        for bad in [
            vec![0u8, 0, 0, 0],
            vec![0, 200, 1, 1],
            vec![0, 6, 1, 1, 1, 0],
            vec![9, 8, 0, 0, 0, 0, 0, 0],
        ] {
            let t = madt(&[&lapic(0, 1), &bad]);
            assert_eq!(parse_madt(&t), Err(AcpiError::MadtEntryLength), "{bad:?}");
        }
        // A MADT whose length field exceeds the bytes given, or is below its fixed part.
        let mut t = good.clone();
        t[4..8].copy_from_slice(&9999u32.to_le_bytes());
        assert_eq!(parse_madt(&t), Err(AcpiError::MadtBadHeader));
        assert_eq!(parse_madt(&good[..20]), Err(AcpiError::MadtBadHeader));
        assert_eq!(parse_madt(&[]), Err(AcpiError::MadtBadHeader));
    }

    #[test]
    fn every_truncation_and_byte_flip_is_an_answer_not_a_panic() {
        let t = madt(&[
            &lapic(0, 1),
            &x2apic(5, 1),
            &[1, 12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
        ]);
        let m = machine(2, &t);
        for cut in 0..m.len() {
            let _ = cpus_from_rsdp(0x100, reader(&m[..cut]));
        }
        for i in 0x100..0x500 {
            for bit in 0..8 {
                let mut m2 = m.clone();
                m2[i] ^= 1 << bit;
                let _ = cpus_from_rsdp(0x100, reader(&m2));
            }
        }
        for cut in 0..t.len() {
            let _ = parse_madt(&t[..cut]);
        }
    }

    #[test]
    fn the_trampoline_page_is_free_ram_below_1_mib() {
        let ram = [(0, 0x9_FC00), (0x10_0000, 0x700_0000)];
        assert_eq!(trampoline_page(&ram, &[]), Some(0x1000));
        assert_eq!(
            trampoline_page(&ram, &[(0x1000, 0x10), (0x1FF0, 0x20)]),
            Some(0x3000)
        );
        assert_eq!(trampoline_page(&[(0x10_0000, 0x100_0000)], &[]), None);
        assert_eq!(trampoline_page(&[(0x9_F000, 0x800)], &[]), None);
    }
}
