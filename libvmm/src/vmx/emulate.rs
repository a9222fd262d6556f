//! The VMX vCPU as the instruction emulator sees it: [`GuestCpu`] and [`EmuCpu`] over the VMCS (RSP,
//! RIP, RFLAGS, CR3, EFER, segment access rights and bases) and the registers the world switch saved,
//! with CR0 and CR4 as the guest sees them (the read shadows' copies), and exception delivery through
//! the VM-entry interruption-information field (CR2 loaded for a #PF, which VM entry does not do).
#![forbid(unsafe_code)]

use super::fields as f;
use super::vcpu::Vmx;
use super::vmcs::VmxOps;
use crate::x86::emulate::{EmuCpu, Exception, GuestCpu};

/// CS.L in the VMCS access-rights format.
const AR_L: u64 = 1 << 13;

impl<H: VmxOps> GuestCpu for Vmx<H> {
    fn gpr(&self, n: u8) -> u64 {
        match self.regs.slot(n) {
            Some(r) => *r,
            None => self.vmcs.read_basic(f::GUEST_RSP),
        }
    }
    fn set_gpr(&mut self, n: u8, value: u64) {
        match self.regs.slot_mut(n) {
            Some(r) => *r = value,
            None => self.vmcs.write_basic(f::GUEST_RSP, value),
        }
    }
    fn rip(&self) -> u64 {
        self.vmcs.read_basic(f::GUEST_RIP)
    }
    fn set_rip(&mut self, value: u64) {
        self.vmcs.write_basic(f::GUEST_RIP, value);
    }
    fn rflags(&self) -> u64 {
        self.vmcs.read(f::GUEST_RFLAGS).unwrap_or(0x2)
    }
    fn set_rflags(&mut self, value: u64) {
        let _ = self.vmcs.write(f::GUEST_RFLAGS, value);
    }
    fn cr0(&self) -> u64 {
        self.guest_cr0
    }
    fn cr3(&self) -> u64 {
        self.vmcs.read(f::GUEST_CR3).unwrap_or(0)
    }
    fn cr4(&self) -> u64 {
        self.guest_cr4
    }
    fn efer(&self) -> u64 {
        self.vmcs.read(f::GUEST_IA32_EFER).unwrap_or(0)
    }
    fn cpl(&self) -> u8 {
        // CPL is SS.DPL (SDM Vol. 3C §25.4.1).
        ((self.vmcs.read(f::GUEST_SS_AR).map(u64::from).unwrap_or(0) >> 5) & 3) as u8
    }
    fn cs_long(&self) -> bool {
        self.vmcs.read(f::GUEST_CS_AR).map(u64::from).unwrap_or(0) & AR_L != 0
    }
    fn fs_base(&self) -> u64 {
        self.vmcs.read(f::GUEST_FS_BASE).unwrap_or(0)
    }
    fn gs_base(&self) -> u64 {
        self.vmcs.read(f::GUEST_GS_BASE).unwrap_or(0)
    }
}

impl<H: VmxOps> EmuCpu for Vmx<H> {
    fn inject(&mut self, e: Exception) {
        if let Exception::PageFault { address, .. } = e {
            self.vmcs.0.set_guest_cr2(address);
        }
        self.inject_exception(e.vector(), e.error_code());
    }
}
