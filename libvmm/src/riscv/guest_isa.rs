//! Per-guest ISA-extension control, in the spirit of KVM's `KVM_REG_RISCV_ISA_EXT` ONE_REG registers.
//!
//! The rules (Linux `arch/riscv/kvm/vcpu_onereg.c`, `isa.c`):
//! - an extension exists for a guest only if the host has it (reading one the host lacks is `NotPresent`,
//!   KVM's `-ENOENT`);
//! - at creation every host extension that may be enabled is enabled (H never: no nested virtualization);
//! - an extension that nothing architectural can hide ([`Control::AlwaysOn`]: A, C, I, M, Sstc, Zalasr,
//!   Zba, ...) cannot be disabled, and says so (`NotAllowed`, KVM's `-EINVAL`); writing the value it
//!   already has is always fine;
//! - after the vCPU first ran, changes are refused (`Busy`, KVM's `-EBUSY`).
//!
//! What an enabled set means for the hardware is computed here too ([`GuestIsa::hw`]): the henvcfg bits
//! (Zicbom, Zicboz, Svpbmt, Svadu, Sstc), the hstateen0 bits (Smstateen, Ssaia; only when the host has
//! Smstateen, otherwise the CSR does not exist) and whether FP/vector state is on in sstatus (F/D/V are
//! hidden by turning FS/VS off, which makes their instructions illegal in VS-mode). The generated guest
//! device tree ([`super::guest_dt`]) lists exactly [`GuestIsa::enabled`].
//!
//! [`GuestIsa::reg_list`] is the get-reg-list analogue: it enumerates the guest-visible ISA configuration
//! as register ids encoded like KVM's (`KVM_REG_RISCV | KVM_REG_SIZE_U64 | type << 24 | subtype << 16 |
//! index`). The index of an extension is libvmm's own [`Ext::id`], not KVM's enum value, since libvmm is not
//! KVM and its list differs; only the `ISA_SINGLE` subtype is offered (no `ISA_MULTI_EN/DIS` bitmaps).
#![forbid(unsafe_code)]

use super::csr;
use super::isa::{Control, Ext, ExtSet};

/// Why an ISA register access was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IsaCtlError {
    /// The host lacks the extension, or the id is unknown (KVM: -ENOENT).
    NotPresent,
    /// The vCPU has run; the ISA is fixed (KVM: -EBUSY).
    Busy,
    /// The extension cannot be enabled (H) or cannot be hidden (KVM: -EINVAL).
    NotAllowed,
    /// A value other than 0 or 1.
    BadValue,
}

/// A guest-visible ISA register (the get-reg-list vocabulary).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reg {
    /// `CONFIG.isa`: the single-letter extensions as a bitmask (bit n = letter 'a' + n), read-only here.
    ConfigIsa,
    /// `ISA_EXT.SINGLE.<ext>`: 1 if enabled for the guest.
    IsaExt(Ext),
}

/// KVM's register-id bits.
pub const KVM_REG_RISCV: u64 = 0x8000_0000_0000_0000;
pub const KVM_REG_SIZE_U64: u64 = 0x0030_0000_0000_0000;
pub const KVM_REG_RISCV_CONFIG: u64 = 1 << 24;
pub const KVM_REG_RISCV_ISA_EXT: u64 = 7 << 24;
pub const KVM_REG_RISCV_ISA_SINGLE: u64 = 0 << 16;

impl Reg {
    pub const fn id(self) -> u64 {
        match self {
            Reg::ConfigIsa => KVM_REG_RISCV | KVM_REG_SIZE_U64 | KVM_REG_RISCV_CONFIG,
            Reg::IsaExt(e) => {
                KVM_REG_RISCV
                    | KVM_REG_SIZE_U64
                    | KVM_REG_RISCV_ISA_EXT
                    | KVM_REG_RISCV_ISA_SINGLE
                    | e.id() as u64
            }
        }
    }

    pub fn from_id(id: u64) -> Option<Reg> {
        if id == Reg::ConfigIsa.id() {
            return Some(Reg::ConfigIsa);
        }
        let base =
            KVM_REG_RISCV | KVM_REG_SIZE_U64 | KVM_REG_RISCV_ISA_EXT | KVM_REG_RISCV_ISA_SINGLE;
        if id & !0xffff == base {
            return Ext::from_id(id & 0xffff).map(Reg::IsaExt);
        }
        None
    }
}

/// What an enabled set means for the hardware when the guest runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HwConfig {
    pub henvcfg: u64,
    /// `None` when the host lacks Smstateen (hstateen0 must then not be touched at all).
    pub hstateen0: Option<u64>,
    /// sstatus.FS on (F or D enabled).
    pub fp: bool,
    /// sstatus.VS on (V enabled).
    pub vector: bool,
}

/// One guest's ISA configuration.
#[derive(Clone, Copy, Debug)]
pub struct GuestIsa {
    host: ExtSet,
    enabled: ExtSet,
    ran: bool,
}

impl GuestIsa {
    /// Every host extension that may be enabled, enabled (KVM's `kvm_riscv_vcpu_setup_isa`).
    pub fn new(host: ExtSet) -> Self {
        let mut enabled = ExtSet::EMPTY;
        for e in host.iter() {
            if Self::enable_allowed(e) {
                enabled.insert(e);
            }
        }
        Self {
            host,
            enabled,
            ran: false,
        }
    }

    fn enable_allowed(e: Ext) -> bool {
        !matches!(e.control(), Control::Never)
    }

    fn disable_allowed(&self, e: Ext) -> bool {
        match e.control() {
            Control::Hideable | Control::Never => true,
            Control::AlwaysOn => false,
            Control::HideableIf(helper) => self.host.contains(helper),
        }
    }

    #[cfg(test)]
    pub fn host(&self) -> ExtSet {
        self.host
    }

    /// The extensions the guest sees (and its device tree lists).
    pub fn enabled(&self) -> ExtSet {
        self.enabled
    }

    /// Extensions the host has that can never be hidden from a guest.
    pub fn unhideable(&self) -> ExtSet {
        let mut s = ExtSet::EMPTY;
        for e in self.host.iter() {
            if Self::enable_allowed(e) && !self.disable_allowed(e) {
                s.insert(e);
            }
        }
        s
    }

    /// Marks the vCPU as having run: the configuration is fixed from now on.
    pub fn freeze(&mut self) {
        self.ran = true;
    }

    pub fn get(&self, e: Ext) -> Result<bool, IsaCtlError> {
        if !self.host.contains(e) {
            return Err(IsaCtlError::NotPresent);
        }
        Ok(self.enabled.contains(e))
    }

    pub fn set(&mut self, e: Ext, on: bool) -> Result<(), IsaCtlError> {
        let cur = self.get(e)?;
        if cur == on {
            return Ok(());
        }
        if self.ran {
            return Err(IsaCtlError::Busy);
        }
        if on && !Self::enable_allowed(e) || !on && !self.disable_allowed(e) {
            return Err(IsaCtlError::NotAllowed);
        }
        if on {
            self.enabled.insert(e);
        } else {
            self.enabled.remove(e);
        }
        Ok(())
    }

    /// The get-reg-list analogue: every guest-visible ISA register, `CONFIG.isa` first, then one
    /// `ISA_EXT` register per extension the host has (enabled or not), in canonical order.
    pub fn reg_list(&self) -> impl Iterator<Item = Reg> + '_ {
        core::iter::once(Reg::ConfigIsa).chain(self.host.iter().map(Reg::IsaExt))
    }

    pub fn get_reg(&self, id: u64) -> Result<u64, IsaCtlError> {
        match Reg::from_id(id).ok_or(IsaCtlError::NotPresent)? {
            Reg::ConfigIsa => Ok(self.single_letter_mask()),
            Reg::IsaExt(e) => self.get(e).map(u64::from),
        }
    }

    pub fn set_reg(&mut self, id: u64, value: u64) -> Result<(), IsaCtlError> {
        match Reg::from_id(id).ok_or(IsaCtlError::NotPresent)? {
            Reg::ConfigIsa => {
                if value == self.single_letter_mask() {
                    Ok(())
                } else {
                    Err(IsaCtlError::NotAllowed)
                }
            }
            Reg::IsaExt(e) => match value {
                0 | 1 => self.set(e, value == 1),
                _ => Err(IsaCtlError::BadValue),
            },
        }
    }

    /// misa-style mask of the enabled single-letter extensions.
    pub fn single_letter_mask(&self) -> u64 {
        self.enabled
            .iter()
            .filter_map(|e| match e.name().as_bytes() {
                [c] => Some(1u64 << (c - b'a')),
                _ => None,
            })
            .fold(0, |a, b| a | b)
    }

    /// The hardware controls for the enabled set.
    pub fn hw(&self) -> HwConfig {
        let on = |e| self.enabled.contains(e);
        let mut henvcfg = 0;
        if on(Ext::Zicbom) {
            henvcfg |= csr::ENVCFG_CBIE_FLUSH | csr::ENVCFG_CBCFE;
        }
        if on(Ext::Zicboz) {
            henvcfg |= csr::ENVCFG_CBZE;
        }
        if on(Ext::Svpbmt) {
            henvcfg |= csr::ENVCFG_PBMTE;
        }
        if on(Ext::Svadu) {
            henvcfg |= csr::ENVCFG_ADUE;
        }
        if on(Ext::Sstc) {
            henvcfg |= csr::ENVCFG_STCE;
        }
        let hstateen0 = self.host.contains(Ext::Smstateen).then(|| {
            // senvcfg is always the guest's (its own envcfg); the rest follows the enabled set.
            let mut v = csr::STATEEN0_ENVCFG;
            if on(Ext::Smstateen) {
                v |= csr::STATEEN0_SE0;
            }
            if on(Ext::Ssaia) {
                v |= csr::STATEEN0_AIA | csr::STATEEN0_IMSIC | csr::STATEEN0_CSRIND;
            }
            v
        });
        HwConfig {
            henvcfg,
            hstateen0,
            fp: on(Ext::F) || on(Ext::D),
            vector: on(Ext::V),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn qemu_rv64() -> ExtSet {
        let dtb = include_bytes!("testdata/qemu-virt-rv64.dtb");
        super::super::host_dt::HostPlatform::parse(dtb)
            .unwrap()
            .isa
            .exts
    }

    #[test]
    fn defaults_enable_every_host_extension_but_h() {
        let g = GuestIsa::new(qemu_rv64());
        assert!(g.host().contains(Ext::H));
        assert!(!g.enabled().contains(Ext::H));
        assert!(!g.enabled().contains(Ext::Shgatpa));
        assert!(g.enabled().contains(Ext::Zicboz) && g.enabled().contains(Ext::Sstc));
        assert_eq!(g.enabled().len() + 7, g.host().len()); // h + six Sh* hypervisor properties
        assert!(!g.enabled().is_empty());
    }

    #[test]
    fn extensions_the_host_lacks_are_not_present_and_cannot_be_enabled() {
        let mut g = GuestIsa::new(qemu_rv64());
        assert_eq!(g.get(Ext::Zalasr), Err(IsaCtlError::NotPresent));
        assert_eq!(g.set(Ext::Zalasr, true), Err(IsaCtlError::NotPresent));
        assert!(!g.enabled().contains(Ext::Zalasr));
        assert!(g.reg_list().all(|r| r != Reg::IsaExt(Ext::Zalasr)));
    }

    #[test]
    fn zalasr_on_the_host_is_given_to_the_guest_and_cannot_be_hidden() {
        let mut g = GuestIsa::new(qemu_rv64().with(Ext::Zalasr));
        assert_eq!(g.get(Ext::Zalasr), Ok(true));
        assert_eq!(g.set(Ext::Zalasr, false), Err(IsaCtlError::NotAllowed));
        assert_eq!(g.set(Ext::Zalasr, true), Ok(()));
        assert!(g.unhideable().contains(Ext::Zalasr));
        assert!(g.reg_list().any(|r| r == Reg::IsaExt(Ext::Zalasr)));
        assert_eq!(g.get_reg(Reg::IsaExt(Ext::Zalasr).id()), Ok(1));
    }

    #[test]
    fn hideable_extensions_can_be_disabled_until_the_first_run_and_change_the_hardware_bits() {
        let mut g = GuestIsa::new(qemu_rv64());
        let hw = g.hw();
        assert_ne!(hw.henvcfg & csr::ENVCFG_CBZE, 0);
        assert_ne!(hw.henvcfg & csr::ENVCFG_STCE, 0);
        assert_eq!(
            hw.hstateen0, None,
            "QEMU rv64 has no Smstateen: hstateen0 must not be touched"
        );
        assert!(hw.fp);
        g.set(Ext::Zicboz, false).unwrap();
        g.set(Ext::F, false).unwrap();
        g.set(Ext::D, false).unwrap();
        assert_eq!(g.hw().henvcfg & csr::ENVCFG_CBZE, 0);
        assert!(!g.hw().fp);
        assert_eq!(g.set(Ext::H, true), Err(IsaCtlError::NotAllowed));
        assert_eq!(g.set(Ext::I, false), Err(IsaCtlError::NotAllowed));
        g.freeze();
        assert_eq!(g.set(Ext::Zicbom, false), Err(IsaCtlError::Busy));
        assert_eq!(
            g.set(Ext::Zicboz, false),
            Ok(()),
            "writing the current value is a no-op even after run"
        );
    }

    #[test]
    fn conditional_hiding_follows_the_helper_extension() {
        let host = ExtSet::from_slice(&[Ext::I, Ext::Ssaia]);
        let mut g = GuestIsa::new(host);
        assert_eq!(g.set(Ext::Ssaia, false), Err(IsaCtlError::NotAllowed));
        let mut g2 = GuestIsa::new(host.with(Ext::Smstateen));
        assert_eq!(g2.set(Ext::Ssaia, false), Ok(()));
        // With Smstateen on the host, hstateen0 exists and reflects the guest's set.
        let hs = GuestIsa::new(host.with(Ext::Smstateen))
            .hw()
            .hstateen0
            .unwrap();
        assert_ne!(hs & csr::STATEEN0_AIA, 0);
        assert_ne!(hs & csr::STATEEN0_SE0, 0);
        assert_eq!(g2.hw().hstateen0.unwrap() & csr::STATEEN0_AIA, 0);
        g.freeze();
    }

    #[test]
    fn reg_ids_round_trip_and_garbage_ids_are_not_present() {
        let g = GuestIsa::new(qemu_rv64());
        let ids: Vec<u64> = g.reg_list().map(Reg::id).collect();
        assert_eq!(ids.len() as u32, 1 + g.host().len());
        for id in &ids {
            assert!(Reg::from_id(*id).is_some());
            assert!(g.get_reg(*id).is_ok());
        }
        assert_eq!(g.get_reg(0), Err(IsaCtlError::NotPresent));
        assert_eq!(
            g.get_reg(Reg::IsaExt(Ext::I).id() | 0xfff),
            Err(IsaCtlError::NotPresent)
        );
        let mask = g.get_reg(Reg::ConfigIsa.id()).unwrap();
        assert_eq!(
            mask,
            (1 << 0) | (1 << 2) | (1 << 3) | (1 << 5) | (1 << 8) | (1 << 12)
        ); // acdfim
        let mut g = g;
        assert_eq!(
            g.set_reg(Reg::IsaExt(Ext::Zicboz).id(), 2),
            Err(IsaCtlError::BadValue)
        );
        assert_eq!(g.set_reg(Reg::IsaExt(Ext::Zicboz).id(), 0), Ok(()));
        assert_eq!(g.get_reg(Reg::IsaExt(Ext::Zicboz).id()), Ok(0));
    }
}
