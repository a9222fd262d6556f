//! Boot-protocol facts from the loader: the PVH `hvm_start_info` (QEMU `-kernel`, Cloud Hypervisor) or
//! the multiboot2 information (GRUB, Bochs, appliances). Only what libvmm needs: the command line and the
//! RAM ranges (to check that the guest window is real RAM). Layouts per `shared/reference/boot.md`.
//!
//! Hand-written rather than a crate: the `multiboot2` crate covers only one of the two protocols and
//! brings far more than the two tags used here; both parsers together are this one small file, and every
//! read is bounds-checked through the `read` callback (the loader's data is trusted no more than needed).
#![forbid(unsafe_code)]

pub const PVH_MAGIC: u32 = 0x336E_C578;
pub const MULTIBOOT2_MAGIC: u32 = 0x36D7_6289;
pub use crate::config::{HOST_CMDLINE_READ as CMDLINE_READ, MAX_RAM_RANGES};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    Pvh,
    Multiboot2,
}

impl Protocol {
    #[cfg(target_os = "none")] // the boot line
    pub const fn name(self) -> &'static str {
        match self {
            Self::Pvh => "PVH",
            Self::Multiboot2 => "multiboot2",
        }
    }
}

#[derive(Debug)]
pub struct BootFacts<'a> {
    pub protocol: Protocol,
    pub cmdline: &'a [u8],
    /// RAM ranges (base, length) the loader reported; ranges beyond [`MAX_RAM_RANGES`] are dropped.
    pub ram: heapless::Vec<(u64, u64), MAX_RAM_RANGES>,
    /// The ACPI RSDP the loader gave (PVH `rsdp_paddr`, or the copy inside multiboot2 tag 15 / 14).
    pub rsdp: Option<u64>,
    /// Physical ranges (base, length) of the loader's information the VMM still reads (the start info
    /// or MBI, its memory map, the command line): nothing of the VMM's may be placed over them.
    pub loader_ranges: heapless::Vec<(u64, u64), 4>,
}

impl BootFacts<'_> {
    /// Whether `[base, base + size)` lies inside one reported RAM range.
    #[cfg_attr(not(test), allow(dead_code))] // the window is sized by `loader::window` now
    pub fn is_ram(&self, base: u64, size: u64) -> bool {
        self.ram
            .iter()
            .any(|&(b, l)| base >= b && base.saturating_add(size) <= b.saturating_add(l))
    }
}

fn u32_at(b: &[u8], o: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(o..o + 4)?.try_into().ok()?))
}

fn u64_at(b: &[u8], o: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(o..o + 8)?.try_into().ok()?))
}

fn until_nul(b: &[u8]) -> &[u8] {
    &b[..b.iter().position(|&c| c == 0).unwrap_or(b.len())]
}

/// Parses the loader's information. `magic` is EAX at entry, `info` is EBX; `read(addr, len)` returns
/// physical memory or `None`.
pub fn parse<'a>(
    magic: u32,
    info: u64,
    read: impl Fn(u64, usize) -> Option<&'a [u8]>,
) -> Result<BootFacts<'a>, &'static str> {
    let head = read(info, 8).ok_or("boot information is unreadable")?;
    if magic == MULTIBOOT2_MAGIC {
        parse_multiboot2(info, read)
    } else if u32_at(head, 0) == Some(PVH_MAGIC) {
        parse_pvh(info, read)
    } else {
        Err("entered by an unknown loader: neither multiboot2 (EAX) nor PVH (start-info magic)")
    }
}

fn parse_pvh<'a>(
    info: u64,
    read: impl Fn(u64, usize) -> Option<&'a [u8]>,
) -> Result<BootFacts<'a>, &'static str> {
    let si = read(info, 56).ok_or("PVH start info is unreadable")?;
    let bad = "PVH start info is truncated";
    let version = u32_at(si, 4).ok_or(bad)?;
    let cmdline_pa = u64_at(si, 24).ok_or(bad)?;
    let cmdline = if cmdline_pa == 0 {
        &[][..]
    } else {
        until_nul(read(cmdline_pa, CMDLINE_READ).ok_or("PVH command line is unreadable")?)
    };
    let mut ram = heapless::Vec::new();
    let mut loader_ranges = heapless::Vec::new();
    let _ = loader_ranges.push((info, 56));
    if cmdline_pa != 0 {
        let _ = loader_ranges.push((cmdline_pa, cmdline.len() as u64 + 1));
    }
    let rsdp = u64_at(si, 32).filter(|&a| a != 0);
    if version >= 1 {
        let map_pa = u64_at(si, 40).ok_or(bad)?;
        let n = u32_at(si, 48).ok_or(bad)? as usize;
        if map_pa != 0 && n != 0 {
            let n = n.min(128);
            let map = read(map_pa, n * 24).ok_or("PVH memory map is unreadable")?;
            let _ = loader_ranges.push((map_pa, (n * 24) as u64));
            for e in map.chunks_exact(24) {
                if u32_at(e, 16) == Some(1) {
                    let _ = ram.push((u64_at(e, 0).ok_or(bad)?, u64_at(e, 8).ok_or(bad)?));
                }
            }
        }
    }
    Ok(BootFacts {
        protocol: Protocol::Pvh,
        cmdline,
        ram,
        rsdp,
        loader_ranges,
    })
}

fn parse_multiboot2<'a>(
    info: u64,
    read: impl Fn(u64, usize) -> Option<&'a [u8]>,
) -> Result<BootFacts<'a>, &'static str> {
    let total = u32_at(
        read(info, 8).ok_or("multiboot2 information is unreadable")?,
        0,
    )
    .unwrap_or(0) as usize;
    if !(16..=1 << 20).contains(&total) {
        return Err("multiboot2 information has an implausible size");
    }
    let mbi = read(info, total).ok_or("multiboot2 information is unreadable")?;
    let mut cmdline = &[][..];
    let mut ram = heapless::Vec::new();
    let (mut rsdp_old, mut rsdp_new) = (None, None);
    let mut off = 8;
    while off + 8 <= total {
        let ty = u32_at(mbi, off).unwrap_or(0);
        let size = u32_at(mbi, off + 4).unwrap_or(0) as usize;
        if ty == 0 {
            break;
        }
        if size < 8 || off + size > total {
            return Err("multiboot2 tag overruns the information");
        }
        let tag = &mbi[off..off + size];
        match ty {
            1 => cmdline = until_nul(&tag[8..]),
            // ACPI old / new RSDP: a copy of the structure inside the tag.
            14 if size >= 8 + 20 => rsdp_old = Some(info + off as u64 + 8),
            15 if size >= 8 + 36 => rsdp_new = Some(info + off as u64 + 8),
            6 if size >= 16 => {
                let esize = u32_at(tag, 8).unwrap_or(0) as usize;
                if esize >= 24 {
                    for e in tag[16..].chunks_exact(esize) {
                        if u32_at(e, 16) == Some(1) {
                            let _ =
                                ram.push((u64_at(e, 0).unwrap_or(0), u64_at(e, 8).unwrap_or(0)));
                        }
                    }
                }
            }
            _ => {}
        }
        off = (off + size + 7) & !7;
    }
    Ok(BootFacts {
        protocol: Protocol::Multiboot2,
        cmdline,
        ram,
        rsdp: rsdp_new.or(rsdp_old),
        loader_ranges: heapless::Vec::from_slice(&[(info, total as u64)]).unwrap_or_default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Fake physical memory: a buffer at address 0x1000.
    fn reader<'a>(mem: &'a [u8]) -> impl Fn(u64, usize) -> Option<&'a [u8]> + 'a {
        move |a, n| {
            let o = (a as usize).checked_sub(0x1000)?;
            mem.get(o..o.checked_add(n)?)
        }
    }

    fn put32(m: &mut [u8], o: usize, v: u32) {
        m[o..o + 4].copy_from_slice(&v.to_le_bytes());
    }
    fn put64(m: &mut [u8], o: usize, v: u64) {
        m[o..o + 8].copy_from_slice(&v.to_le_bytes());
    }

    #[test]
    fn pvh_start_info_gives_cmdline_and_ram() {
        let mut m = vec![0u8; 0x3000];
        put32(&mut m, 0, PVH_MAGIC);
        put32(&mut m, 4, 1);
        put64(&mut m, 24, 0x1100); // cmdline
        m[0x100..0x10a].copy_from_slice(b"attack=npf");
        put64(&mut m, 40, 0x1200); // memmap
        put32(&mut m, 48, 2);
        put64(&mut m, 0x200, 0);
        put64(&mut m, 0x208, 0x9_FC00);
        put32(&mut m, 0x210, 1);
        put64(&mut m, 0x218, 0x10_0000);
        put64(&mut m, 0x220, 0x7F0_0000);
        put32(&mut m, 0x228, 1);
        let f = parse(0, 0x1000, reader(&m)).unwrap();
        assert_eq!(f.protocol, Protocol::Pvh);
        assert_eq!(f.cmdline, b"attack=npf");
        assert!(f.is_ram(0x200_0000, 0x80_0000));
        assert!(!f.is_ram(0x7F0_0000, 0x20_0000));
        assert_eq!(f.rsdp, None);
        assert_eq!(
            &f.loader_ranges[..],
            &[(0x1000, 56), (0x1100, 11), (0x1200, 48)]
        );
        put64(&mut m, 32, 0xF_5A40);
        assert_eq!(parse(0, 0x1000, reader(&m)).unwrap().rsdp, Some(0xF_5A40));
    }

    #[test]
    fn multiboot2_tags_give_cmdline_and_ram() {
        let mut m = vec![0u8; 0x1000];
        let mut o = 8;
        // cmdline tag
        put32(&mut m, o, 1);
        put32(&mut m, o + 4, 8 + 6);
        m[o + 8..o + 14].copy_from_slice(b"x=1\0\0\0");
        o = (o + 14 + 7) & !7;
        // mmap tag with one available entry
        put32(&mut m, o, 6);
        put32(&mut m, o + 4, 16 + 24);
        put32(&mut m, o + 8, 24);
        put64(&mut m, o + 16, 0x10_0000);
        put64(&mut m, o + 24, 0x3F00_0000);
        put32(&mut m, o + 32, 1);
        o += 40;
        // ACPI new RSDP tag: the RSDP is copied into the tag.
        put32(&mut m, o, 15);
        put32(&mut m, o + 4, 8 + 36);
        let rsdp_at = 0x1000 + o as u64 + 8;
        o += 48;
        put32(&mut m, o, 0);
        put32(&mut m, o + 4, 8);
        put32(&mut m, 0, (o + 8) as u32);
        let f = parse(MULTIBOOT2_MAGIC, 0x1000, reader(&m)).unwrap();
        assert_eq!(f.protocol, Protocol::Multiboot2);
        assert_eq!(f.cmdline, b"x=1");
        assert!(f.is_ram(0x200_0000, 0x80_0000));
        assert_eq!(f.rsdp, Some(rsdp_at));
        assert_eq!(&f.loader_ranges[..], &[(0x1000, o as u64 + 8)]);
    }

    #[test]
    fn garbage_information_is_an_error_not_a_panic() {
        let mut m = vec![0u8; 0x100];
        assert!(parse(0x1234, 0x1000, reader(&m)).is_err());
        put32(&mut m, 0, 0xFFFF_FFFF);
        assert!(parse(MULTIBOOT2_MAGIC, 0x1000, reader(&m)).is_err());
        put32(&mut m, 0, 64);
        put32(&mut m, 8, 6);
        put32(&mut m, 12, 0xFFFF);
        assert!(parse(MULTIBOOT2_MAGIC, 0x1000, reader(&m)).is_err());
        put32(&mut m, 12, 3);
        assert!(parse(MULTIBOOT2_MAGIC, 0x1000, reader(&m)).is_err());
        assert!(parse(0, 0x9000, reader(&m)).is_err());
    }
}
