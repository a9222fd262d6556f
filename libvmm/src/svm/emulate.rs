//! The SVM vCPU as the instruction emulator sees it: [`GuestCpu`] and [`EmuCpu`] over the VMCB (RAX,
//! RSP, RIP, RFLAGS, control registers, CPL, segments) and the saved registers, and exception delivery
//! through EVENTINJ (with CR2 for a #PF). FS/GS bases live in the CPU across exits (VMLOAD/VMSAVE
//! state), so the loop's call of [`Backend::emulation`](crate::backend::Backend::emulation) saves them
//! into the VMCB first (`vcpu.rs`).
#![forbid(unsafe_code)]

use super::hw::SvmHw;
use super::vcpu::SvmVcpu;
use super::vmcb;
use crate::x86::emulate::{EmuCpu, Exception, GuestCpu};
use crate::x86::msr::EFER_SVME;

/// CS.L in the VMCB's packed segment attributes.
const ATTRIB_L: u16 = 1 << 9;

impl<H: SvmHw> GuestCpu for SvmVcpu<'_, H> {
    fn gpr(&self, n: u8) -> u64 {
        super::decode::gpr(n, &self.gprs, self.vmcb.save.rax, self.vmcb.save.rsp)
    }
    fn set_gpr(&mut self, n: u8, value: u64) {
        // RAX and RSP live in the VMCB.
        match (n & 15, self.gprs.slot_mut(n)) {
            (0, _) => self.vmcb.save.rax = value,
            (_, Some(r)) => *r = value,
            (_, None) => self.vmcb.save.rsp = value,
        }
    }
    fn rip(&self) -> u64 {
        self.vmcb.save.rip
    }
    fn set_rip(&mut self, value: u64) {
        self.vmcb.save.rip = value;
    }
    fn rflags(&self) -> u64 {
        self.vmcb.save.rflags
    }
    fn set_rflags(&mut self, value: u64) {
        self.vmcb.save.rflags = value;
    }
    fn cr0(&self) -> u64 {
        self.vmcb.save.cr0
    }
    fn cr3(&self) -> u64 {
        self.vmcb.save.cr3
    }
    fn cr4(&self) -> u64 {
        self.vmcb.save.cr4
    }
    fn efer(&self) -> u64 {
        self.vmcb.save.efer & !EFER_SVME
    }
    fn cpl(&self) -> u8 {
        self.vmcb.save.cpl
    }
    fn cs_long(&self) -> bool {
        self.vmcb.save.cs.attrib & ATTRIB_L != 0
    }
    fn fs_base(&self) -> u64 {
        self.vmcb.save.fs.base
    }
    fn gs_base(&self) -> u64 {
        self.vmcb.save.gs.base
    }
}

impl<H: SvmHw> EmuCpu for SvmVcpu<'_, H> {
    fn inject(&mut self, e: Exception) {
        let c = &mut self.vmcb.control;
        let mut inj = u32::from(e.vector()) | vmcb::EVENTINJ_TYPE_EXCEPTION | vmcb::EVENTINJ_VALID;
        if let Some(code) = e.error_code() {
            inj |= vmcb::EVENTINJ_EV;
            c.event_inj_err = code;
        }
        c.event_inj = inj;
        if let Exception::PageFault { address, .. } = e {
            self.vmcb.save.cr2 = address;
        }
    }
}
