//! The guest's device tree: one hart whose `riscv,isa-extensions` (and `riscv,isa`) list exactly the
//! extensions enabled for the guest, its memory window, and the timebase.
//!
//! Hand-written flattened-device-tree writer, and why: the well-kept Rust writers (`vm-fdt` from rust-vmm,
//! `fdt`'s sibling crates) build into a growable `Vec`, and libvmm has no heap. Writing FDT v17 is small
//! (a 40-byte header, an empty reservation map, a structure block of BEGIN_NODE/PROP/END_NODE tokens and a
//! strings block), so [`FdtWriter`] does it into a caller's fixed buffer, with every overflow an error.
//! The result is checked in tests by parsing it back with the `fdt` crate.
#![forbid(unsafe_code)]

use super::isa::ExtSet;

const FDT_MAGIC: u32 = 0xd00d_feed;
const FDT_BEGIN_NODE: u32 = 1;
const FDT_END_NODE: u32 = 2;
const FDT_PROP: u32 = 3;
const FDT_END: u32 = 9;
const HEADER_LEN: usize = 40;
const RSVMAP_LEN: usize = 16;
use crate::config::GUEST_DT_STRINGS_MAX as STRINGS_MAX;

/// The buffer is too small (or the strings table is full).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NoSpace;

/// Writes one FDT into a fixed buffer.
pub struct FdtWriter<'b> {
    buf: &'b mut [u8],
    pos: usize,
    strings: heapless::Vec<u8, STRINGS_MAX>,
    depth: u32,
}

impl<'b> FdtWriter<'b> {
    pub fn new(buf: &'b mut [u8]) -> Result<Self, NoSpace> {
        if buf.len() < HEADER_LEN + RSVMAP_LEN {
            return Err(NoSpace);
        }
        buf[..HEADER_LEN + RSVMAP_LEN].fill(0);
        Ok(Self {
            buf,
            pos: HEADER_LEN + RSVMAP_LEN,
            strings: heapless::Vec::new(),
            depth: 0,
        })
    }

    fn put(&mut self, bytes: &[u8]) -> Result<(), NoSpace> {
        let end = self.pos.checked_add(bytes.len()).ok_or(NoSpace)?;
        self.buf
            .get_mut(self.pos..end)
            .ok_or(NoSpace)?
            .copy_from_slice(bytes);
        self.pos = end;
        Ok(())
    }

    fn align4(&mut self) -> Result<(), NoSpace> {
        while !self.pos.is_multiple_of(4) {
            self.put(&[0])?;
        }
        Ok(())
    }

    fn u32(&mut self, v: u32) -> Result<(), NoSpace> {
        self.put(&v.to_be_bytes())
    }

    fn string_offset(&mut self, name: &str) -> Result<u32, NoSpace> {
        let nb = name.as_bytes();
        let mut off = 0;
        for s in self.strings.split(|&c| c == 0) {
            if s == nb {
                return Ok(off as u32);
            }
            off += s.len() + 1;
        }
        let off = self.strings.len();
        self.strings.extend_from_slice(nb).map_err(|_| NoSpace)?;
        self.strings.push(0).map_err(|_| NoSpace)?;
        Ok(off as u32)
    }

    pub fn begin_node(&mut self, name: &str) -> Result<(), NoSpace> {
        self.u32(FDT_BEGIN_NODE)?;
        self.put(name.as_bytes())?;
        self.put(&[0])?;
        self.align4()?;
        self.depth += 1;
        Ok(())
    }

    pub fn end_node(&mut self) -> Result<(), NoSpace> {
        self.depth = self.depth.checked_sub(1).ok_or(NoSpace)?;
        self.u32(FDT_END_NODE)
    }

    /// A property from raw value pieces (concatenated).
    pub fn prop_parts(&mut self, name: &str, parts: &[&[u8]]) -> Result<(), NoSpace> {
        let nameoff = self.string_offset(name)?;
        let len: usize = parts.iter().map(|p| p.len()).sum();
        self.u32(FDT_PROP)?;
        self.u32(u32::try_from(len).map_err(|_| NoSpace)?)?;
        self.u32(nameoff)?;
        for p in parts {
            self.put(p)?;
        }
        self.align4()
    }

    pub fn prop_empty(&mut self, name: &str) -> Result<(), NoSpace> {
        self.prop_parts(name, &[])
    }

    pub fn prop_str(&mut self, name: &str, v: &str) -> Result<(), NoSpace> {
        self.prop_parts(name, &[v.as_bytes(), &[0]])
    }

    pub fn prop_u32(&mut self, name: &str, v: u32) -> Result<(), NoSpace> {
        self.prop_parts(name, &[&v.to_be_bytes()])
    }

    /// Two-cell address and two-cell size.
    pub fn prop_reg64(&mut self, name: &str, addr: u64, size: u64) -> Result<(), NoSpace> {
        self.prop_parts(name, &[&addr.to_be_bytes(), &size.to_be_bytes()])
    }

    /// Finishes the tree; returns its total size.
    pub fn finish(mut self) -> Result<usize, NoSpace> {
        if self.depth != 0 {
            return Err(NoSpace);
        }
        self.u32(FDT_END)?;
        let struct_off = HEADER_LEN + RSVMAP_LEN;
        let struct_len = self.pos - struct_off;
        let strings_off = self.pos;
        let strings = self.strings.clone();
        self.put(&strings)?;
        let total = self.pos;
        let hdr = [
            FDT_MAGIC,
            total as u32,
            struct_off as u32,
            strings_off as u32,
            HEADER_LEN as u32, // reservation map right after the header
            17,
            16,
            0, // boot_cpuid_phys
            strings.len() as u32,
            struct_len as u32,
        ];
        for (i, w) in hdr.iter().enumerate() {
            self.buf[i * 4..i * 4 + 4].copy_from_slice(&w.to_be_bytes());
        }
        Ok(total)
    }
}

/// What goes into a guest's tree.
pub struct GuestTree<'a> {
    pub mem_base: u64,
    pub mem_size: u64,
    pub timebase_hz: u32,
    pub exts: ExtSet,
    pub bootargs: &'a str,
    /// Harts the guest can start (`cpu@0` .. `cpu@{harts-1}`, `reg` = hart id): its vCPUs.
    pub harts: u32,
}

/// Longest `riscv,isa` string we generate.
use crate::config::GUEST_DT_ISA_STRING_MAX as ISA_STRING_MAX;

/// Builds the guest's `riscv,isa` string from the set (single letters, then `_`-separated names).
pub fn isa_string(exts: ExtSet, out: &mut heapless::String<ISA_STRING_MAX>) -> Result<(), NoSpace> {
    out.clear();
    out.push_str("rv64").map_err(|_| NoSpace)?;
    for e in exts.iter().filter(|e| e.name().len() == 1) {
        out.push_str(e.name()).map_err(|_| NoSpace)?;
    }
    for e in exts.iter().filter(|e| e.name().len() > 1) {
        out.push('_').map_err(|_| NoSpace)?;
        out.push_str(e.name()).map_err(|_| NoSpace)?;
    }
    Ok(())
}

/// Writes the guest's device tree into `buf`; returns its size.
pub fn build(t: &GuestTree<'_>, buf: &mut [u8]) -> Result<usize, NoSpace> {
    let mut w = FdtWriter::new(buf)?;
    w.begin_node("")?;
    w.prop_u32("#address-cells", 2)?;
    w.prop_u32("#size-cells", 2)?;
    w.prop_str("compatible", "libvmm,riscv-vs")?;
    w.prop_str("model", "libvmm RISC-V guest")?;

    w.begin_node("chosen")?;
    w.prop_str("bootargs", t.bootargs)?;
    w.end_node()?;

    w.begin_node("cpus")?;
    w.prop_u32("#address-cells", 1)?;
    w.prop_u32("#size-cells", 0)?;
    w.prop_u32("timebase-frequency", t.timebase_hz)?;
    for hart in 0..t.harts.max(1) {
        let mut node: heapless::String<16> = heapless::String::new();
        core::fmt::Write::write_fmt(&mut node, format_args!("cpu@{hart}")).map_err(|_| NoSpace)?;
        w.begin_node(&node)?;
        w.prop_str("device_type", "cpu")?;
        w.prop_u32("reg", hart)?;
        w.prop_str("status", "okay")?;
        w.prop_str("compatible", "riscv")?;
        w.prop_str("mmu-type", "riscv,sv39")?;
        w.prop_str("riscv,isa-base", "rv64i")?;
        // The extension list: each name NUL-terminated, back to back.
        let mut list: heapless::Vec<u8, ISA_STRING_MAX> = heapless::Vec::new();
        for e in t.exts.iter() {
            list.extend_from_slice(e.name().as_bytes())
                .map_err(|_| NoSpace)?;
            list.push(0).map_err(|_| NoSpace)?;
        }
        w.prop_parts("riscv,isa-extensions", &[&list])?;
        let mut s = heapless::String::new();
        isa_string(t.exts, &mut s)?;
        w.prop_str("riscv,isa", &s)?;
        w.begin_node("interrupt-controller")?;
        w.prop_u32("#interrupt-cells", 1)?;
        w.prop_empty("interrupt-controller")?;
        w.prop_str("compatible", "riscv,cpu-intc")?;
        w.end_node()?;
        w.end_node()?; // cpu@N
    }
    w.end_node()?; // cpus

    let mut name: heapless::String<32> = heapless::String::new();
    core::fmt::Write::write_fmt(&mut name, format_args!("memory@{:x}", t.mem_base))
        .map_err(|_| NoSpace)?;
    w.begin_node(&name)?;
    w.prop_str("device_type", "memory")?;
    w.prop_reg64("reg", t.mem_base, t.mem_size)?;
    w.end_node()?;

    w.end_node()?; // root
    w.finish()
}

#[cfg(test)]
mod tests {
    use super::super::guest_isa::GuestIsa;
    use super::super::host_dt::HostPlatform;
    use super::super::isa::Ext;
    use super::*;

    fn tree(exts: ExtSet) -> Vec<u8> {
        let mut buf = vec![0u8; 4096];
        let n = build(
            &GuestTree {
                mem_base: 0x8400_0000,
                mem_size: 0x80_0000,
                timebase_hz: 10_000_000,
                exts,
                bootargs: "x=1",
                harts: 1,
            },
            &mut buf,
        )
        .unwrap();
        buf.truncate(n);
        buf
    }

    #[test]
    fn generated_tree_parses_back_with_exactly_the_enabled_extensions() {
        let host =
            HostPlatform::parse(include_bytes!("testdata/qemu-virt-rv64-zalasr.dtb")).unwrap();
        let mut g = GuestIsa::new(host.exts());
        g.set(Ext::Zicboz, false).unwrap();
        let dtb = tree(g.enabled());
        let back = HostPlatform::parse(&dtb).unwrap();
        assert_eq!(back.isa.exts, g.enabled());
        assert!(back.isa.exts.contains(Ext::Zalasr));
        assert!(!back.isa.exts.contains(Ext::Zicboz) && !back.isa.exts.contains(Ext::H));
        assert_eq!(back.memory, (0x8400_0000, 0x80_0000));
        assert_eq!(back.timebase_hz, 10_000_000);
        // The riscv,isa string form says the same.
        let fdt = fdt::Fdt::new(&dtb).unwrap();
        let cpu = fdt.find_node("/cpus/cpu@0").unwrap();
        let s = cpu.property("riscv,isa").unwrap().as_str().unwrap();
        assert!(s.starts_with("rv64imafdc_"));
        assert_eq!(
            super::super::isa::parse_isa_string(s).unwrap().exts,
            g.enabled()
        );
        assert_eq!(fdt.chosen().bootargs(), Some("x=1"));
    }

    #[test]
    fn the_cpus_node_lists_every_vcpu_within_the_guest_tree_size() {
        let host =
            HostPlatform::parse(include_bytes!("testdata/qemu-virt-rv64-zalasr.dtb")).unwrap();
        let g = GuestIsa::new(host.exts());
        let mut buf = vec![0u8; libvmm_abi::layout::riscv64::DTB_MAX as usize];
        let n = build(
            &GuestTree {
                mem_base: 0x8400_0000,
                mem_size: 0x80_0000,
                timebase_hz: 10_000_000,
                exts: g.enabled(),
                bootargs: "x=1",
                harts: crate::config::MAX_CPUS as u32,
            },
            &mut buf,
        )
        .unwrap();
        let back = HostPlatform::parse(&buf[..n]).unwrap();
        assert_eq!(back.harts as usize, crate::config::MAX_CPUS);
        assert!(back.hart_ids[..crate::config::MAX_CPUS]
            .iter()
            .enumerate()
            .all(|(i, &h)| h == i as u64));
    }

    #[test]
    fn small_buffers_are_an_error() {
        let mut buf = [0u8; 100];
        let r = build(
            &GuestTree {
                mem_base: 0,
                mem_size: 1,
                timebase_hz: 1,
                exts: ExtSet::EMPTY.with(Ext::I),
                bootargs: "",
                harts: 1,
            },
            &mut buf,
        );
        assert_eq!(r, Err(NoSpace));
        assert!(FdtWriter::new(&mut [0u8; 10]).is_err());
    }
}
