//! Platform facts from the host device tree OpenSBI hands over in a1: memory, harts, timebase, the UART,
//! the test (exit) device and each hart's ISA. Parsing is done by [`super::dt`], libvmm's validating
//! reader (its module doc says why not the `fdt` crate, which panicked on corrupted trees).
//!
//! The tree comes from firmware, not from a guest; still, a corrupt blob, missing or odd properties are
//! errors or defaults here, never panics (the `dt` fuzz target runs [`HostPlatform::parse`] over
//! mutated real trees).
//!
//! The host ISA is the intersection over all enabled harts (what every hart can run), from
//! `riscv,isa-extensions` when a hart has it, else from `riscv,isa` (Linux's order of preference).
#![forbid(unsafe_code)]

use super::dt::{Node, Tree};
use super::isa::{self, ExtSet, Isa, IsaError};

/// Why the device tree was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DtError {
    /// Bad magic, version or sizes.
    Header,
    NoMemory,
    NoHarts,
    /// A hart's ISA description is missing or malformed.
    Isa(IsaError),
}

impl DtError {
    #[cfg(any(target_os = "none", feature = "fuzzing"))] // the boot's stop reason
    pub const fn what(self) -> &'static str {
        match self {
            DtError::Header => "bad device-tree header",
            DtError::NoMemory => "no /memory node with a reg",
            DtError::NoHarts => "no enabled hart in /cpus",
            DtError::Isa(IsaError::BadBase) => "riscv,isa: bad base",
            DtError::Isa(IsaError::BadName) => "riscv,isa: bad extension name",
            DtError::Isa(IsaError::NoBase) => "riscv,isa-extensions without i (or no ISA property)",
        }
    }
}

/// What libvmm needs to know about the machine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HostPlatform {
    /// The first memory region (base, size).
    pub memory: (u64, u64),
    pub harts: u32,
    /// Hart ids (`reg` of each enabled `/cpus/cpu@N`), the first `min(harts, MAX_CPUS)` of them.
    pub hart_ids: [u64; crate::config::MAX_CPUS],
    /// `timebase-frequency` in Hz (10 MHz on QEMU virt); 0 when absent.
    pub timebase_hz: u64,
    /// MMIO base of the first ns16550a UART, if any.
    pub uart: Option<u64>,
    /// MMIO base of the sifive_test device, if any.
    pub test_device: Option<u64>,
    /// Common ISA of all harts.
    pub isa: Isa,
    /// Whether any hart described itself with `riscv,isa-extensions` (else only `riscv,isa` was read).
    pub from_extension_list: bool,
}

fn str_prop<'a>(node: &Node<'a>, name: &str) -> Option<&'a str> {
    node.property(name).and_then(|p| p.as_str())
}

fn timebase(node: &Node<'_>) -> u64 {
    node.property("timebase-frequency")
        .and_then(|p| p.as_u64())
        .unwrap_or(0)
}

impl HostPlatform {
    pub fn parse(dtb: &[u8]) -> Result<Self, DtError> {
        let tree = Tree::new(dtb).map_err(|_| DtError::Header)?;
        let memory = tree
            .nodes()
            .find(|n| str_prop(n, "device_type") == Some("memory"))
            .and_then(|n| n.first_reg())
            .filter(|m| m.1 != 0)
            .ok_or(DtError::NoMemory)?;
        let cpus = tree.find("/cpus").ok_or(DtError::NoHarts)?;
        let mut timebase_hz = timebase(&cpus);
        let mut harts = 0;
        let mut hart_ids = [0; crate::config::MAX_CPUS];
        let mut common: Option<Isa> = None;
        let mut from_list = false;
        for cpu in cpus.children() {
            if str_prop(&cpu, "device_type") != Some("cpu") {
                continue;
            }
            if matches!(str_prop(&cpu, "status"), Some("disabled" | "fail")) {
                continue;
            }
            if timebase_hz == 0 {
                timebase_hz = timebase(&cpu);
            }
            let hart_isa = if let Some(list) = cpu.property("riscv,isa-extensions") {
                from_list = true;
                let xlen = match str_prop(&cpu, "riscv,isa-base") {
                    Some(b) if b.eq_ignore_ascii_case("rv32i") => 32,
                    _ => 64,
                };
                isa::parse_isa_extensions(xlen, isa::string_list(list.value))
            } else {
                let s = str_prop(&cpu, "riscv,isa").ok_or(DtError::Isa(IsaError::NoBase))?;
                isa::parse_isa_string(s)
            }
            .map_err(DtError::Isa)?;
            if let Some(slot) = hart_ids.get_mut(harts as usize) {
                *slot = cpu
                    .property("reg")
                    .and_then(|p| p.as_u64())
                    .ok_or(DtError::NoHarts)?;
            }
            harts += 1;
            common = Some(match common {
                None => hart_isa,
                Some(c) => Isa {
                    xlen: c.xlen.min(hart_isa.xlen),
                    exts: c.exts.intersect(hart_isa.exts),
                    unknown: c.unknown.max(hart_isa.unknown),
                },
            });
        }
        let isa = common.ok_or(DtError::NoHarts)?;
        let find = |compat: &str| {
            tree.find_compatible(compat)
                .and_then(|n| n.first_reg())
                .map(|r| r.0)
        };
        Ok(Self {
            memory,
            harts,
            hart_ids,
            timebase_hz,
            uart: find("ns16550a"),
            test_device: find("sifive,test0"),
            isa,
            from_extension_list: from_list,
        })
    }

    pub fn exts(&self) -> ExtSet {
        self.isa.exts
    }
}

#[cfg(test)]
mod tests {
    use super::super::isa::Ext;
    use super::*;

    const QEMU: &[u8] = include_bytes!("testdata/qemu-virt-rv64.dtb");
    const QEMU_ZALASR: &[u8] = include_bytes!("testdata/qemu-virt-rv64-zalasr.dtb");

    #[test]
    fn qemu_virt_tree_gives_memory_harts_timebase_uart_test_device_and_isa() {
        let p = HostPlatform::parse(QEMU).unwrap();
        assert_eq!(p.memory, (0x8000_0000, 128 << 20));
        assert_eq!(p.harts, 1);
        assert_eq!(p.hart_ids[0], 0);
        assert_eq!(p.timebase_hz, 10_000_000);
        assert_eq!(p.uart, Some(0x1000_0000));
        assert_eq!(p.test_device, Some(0x10_0000));
        assert!(p.from_extension_list);
        assert_eq!(p.isa.xlen, 64);
        assert!(p.exts().contains(Ext::H));
        assert!(
            !p.exts().contains(Ext::Zalasr),
            "QEMU 10.0.2 does not implement Zalasr"
        );
        assert_eq!(p.isa.unknown, 0);
    }

    #[test]
    fn a_tree_listing_zalasr_is_discovered() {
        let p = HostPlatform::parse(QEMU_ZALASR).unwrap();
        assert!(p.exts().contains(Ext::Zalasr));
        let plain = HostPlatform::parse(QEMU).unwrap();
        assert_eq!(p.exts(), plain.exts().with(Ext::Zalasr));
    }

    #[test]
    fn garbage_trees_are_errors() {
        assert_eq!(HostPlatform::parse(&[]), Err(DtError::Header));
        assert_eq!(HostPlatform::parse(&[0u8; 64]), Err(DtError::Header));
        let mut bad = QEMU.to_vec();
        bad[0] ^= 0xff;
        assert_eq!(HostPlatform::parse(&bad), Err(DtError::Header));
        // Truncated: the header's totalsize no longer fits.
        assert_eq!(
            HostPlatform::parse(&QEMU[..QEMU.len() / 2]),
            Err(DtError::Header)
        );
    }
}
