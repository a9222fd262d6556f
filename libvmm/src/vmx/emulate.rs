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

impl<H: VmxOps> Vmx<H> {
    fn reg_slot(&mut self, n: u8) -> &mut u64 {
        let r = &mut self.regs;
        match n & 15 {
            0 => &mut r.rax,
            1 => &mut r.rcx,
            2 => &mut r.rdx,
            3 => &mut r.rbx,
            5 => &mut r.rbp,
            6 => &mut r.rsi,
            7 => &mut r.rdi,
            8 => &mut r.r8,
            9 => &mut r.r9,
            10 => &mut r.r10,
            11 => &mut r.r11,
            12 => &mut r.r12,
            13 => &mut r.r13,
            14 => &mut r.r14,
            // RSP lives in the VMCS; the caller handles it.
            _ => &mut r.r15,
        }
    }
}

impl<H: VmxOps> GuestCpu for Vmx<H> {
    fn gpr(&self, n: u8) -> u64 {
        let r = &self.regs;
        match n & 15 {
            0 => r.rax,
            1 => r.rcx,
            2 => r.rdx,
            3 => r.rbx,
            4 => self.vmcs.read_basic(f::GUEST_RSP),
            5 => r.rbp,
            6 => r.rsi,
            7 => r.rdi,
            8 => r.r8,
            9 => r.r9,
            10 => r.r10,
            11 => r.r11,
            12 => r.r12,
            13 => r.r13,
            14 => r.r14,
            _ => r.r15,
        }
    }
    fn set_gpr(&mut self, n: u8, value: u64) {
        if n & 15 == 4 {
            self.vmcs.write_basic(f::GUEST_RSP, value);
        } else {
            *self.reg_slot(n) = value;
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
