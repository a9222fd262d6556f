//! The SVM vCPU the generic loop drives: [`SvmVcpu`] implements [`Backend`] over the [`SvmHw`] trait
//! (the real instructions on the machine, a model in host tests), and carries out the loop's replies on
//! the VMCB.
//!
//! The state VMLOAD/VMSAVE move (FS, GS, TR, LDTR, KERNEL_GS_BASE, STAR/LSTAR/CSTAR/SFMASK, SYSENTER_*)
//! is loaded into the CPU once, before the first VMRUN, and stays there across exits: the VMM never uses
//! those registers, so nothing needs swapping on the exit path (KVM likewise defers the host's VMLOAD).
//! The VMCB copy is refreshed with VMSAVE on MSR exits, where the policy may read those MSRs, and
//! written back with VMLOAD when the policy changes one.
#![forbid(unsafe_code)]

use crate::backend::{Backend, BackendError};
use crate::exit::{Exit, Fault, Output, Reply, VirtualMsr};
use crate::x86::gprs::Gprs;
use crate::x86::msr::EFER_SVME;

use super::decode::{self, code};
use super::hw::SvmHw;
use super::vmcb::{self, Vmcb};

pub(crate) struct SvmVcpu<'v, H: SvmHw> {
    pub hw: H,
    pub vmcb: &'v mut Vmcb,
    pub gprs: Gprs,
}

impl<H: SvmHw> Backend for SvmVcpu<'_, H> {
    const ID: libvmm_abi::BackendId = libvmm_abi::BackendId::Svm;

    fn run(&mut self) -> Result<Exit, BackendError> {
        self.hw.run(&mut self.gprs, self.vmcb);
        after_exit(self.vmcb);
        if self.vmcb.control.exit_code == code::MSR {
            self.hw.vmsave(self.vmcb);
        }
        if self.vmcb.control.exit_code & 0xFFFF_FFFF == code::INVALID {
            return Err(BackendError::EntryFailed {
                code: self.vmcb.control.exit_code,
                what: "VMRUN refused the guest state (VMEXIT_INVALID)",
            });
        }
        Ok(decode::decode(&exit_info(self.vmcb), &self.gprs))
    }

    #[inline(always)]
    fn reply(&mut self, reply: Reply) {
        apply_reply(self.vmcb, &mut self.gprs, reply);
        if let Reply::Complete(Output::SetVirtualMsr(
            VirtualMsr::FsBase | VirtualMsr::GsBase | VirtualMsr::KernelGsBase,
            _,
        )) = reply
        {
            self.hw.vmload(self.vmcb);
        }
    }

    fn virtual_msr(&self, msr: VirtualMsr) -> Option<u64> {
        Some(virtual_msr(self.vmcb, msr))
    }
}

/// Work to do on the VMCB right after every #VMEXIT, before decoding: stop re-flushing the TLB and
/// re-queue an event whose delivery the exit interrupted (EXITINTINFO), as KVM does.
pub fn after_exit(v: &mut Vmcb) {
    let c = &mut v.control;
    c.tlb_control = 0;
    c.event_inj = 0;
    if c.exit_int_info & vmcb::EVENTINJ_VALID != 0 {
        c.event_inj = c.exit_int_info;
        c.event_inj_err = c.exit_int_info_err;
    }
}

/// The exit as the decoder sees it.
pub fn exit_info(v: &Vmcb) -> decode::ExitInfo {
    decode::ExitInfo {
        code: v.control.exit_code,
        info1: v.control.exit_info1,
        info2: v.control.exit_info2,
        rax: v.save.rax,
    }
}

/// Reads an MSR kept in the VMCB.
pub fn virtual_msr(v: &Vmcb, msr: VirtualMsr) -> u64 {
    match msr {
        VirtualMsr::Efer => v.save.efer,
        VirtualMsr::FsBase => v.save.fs.base,
        VirtualMsr::GsBase => v.save.gs.base,
        VirtualMsr::KernelGsBase => v.save.kernel_gs_base,
        VirtualMsr::Pat => v.save.g_pat,
    }
}

/// Carries out the loop's reply on the VMCB and the saved registers.
#[inline(always)]
pub fn apply_reply(v: &mut Vmcb, g: &mut Gprs, reply: Reply) {
    match reply {
        Reply::Resume => {}
        Reply::Inject(fault) => {
            let (vector, error) = match fault {
                Fault::InvalidOpcode => (6u32, None),
                Fault::GeneralProtection(e) => (13, Some(e)),
            };
            let mut inj = vector | vmcb::EVENTINJ_TYPE_EXCEPTION | vmcb::EVENTINJ_VALID;
            if let Some(e) = error {
                inj |= vmcb::EVENTINJ_EV;
                v.control.event_inj_err = e;
            }
            v.control.event_inj = inj;
        }
        Reply::Complete(out) => {
            match out {
                Output::Nothing | Output::Sbi { .. } => {}
                Output::Cpuid([a, b, c, d]) => {
                    v.save.rax = a as u64;
                    g.rbx = b as u64;
                    g.rcx = c as u64;
                    g.rdx = d as u64;
                }
                Output::Hypercall(r) => v.save.rax = r as u64,
                Output::MsrValue(val) => {
                    v.save.rax = val & 0xFFFF_FFFF;
                    g.rdx = val >> 32;
                }
                Output::IoIn { value: val, size } => {
                    v.save.rax = match size {
                        1 => (v.save.rax & !0xFF) | (val as u64 & 0xFF),
                        2 => (v.save.rax & !0xFFFF) | (val as u64 & 0xFFFF),
                        _ => val as u64,
                    };
                }
                Output::SetVirtualMsr(msr, val) => match msr {
                    // The hardware bit stays set underneath: VMRUN refuses a guest with EFER.SVME clear.
                    VirtualMsr::Efer => v.save.efer = val | EFER_SVME,
                    VirtualMsr::FsBase => v.save.fs.base = val,
                    VirtualMsr::GsBase => v.save.gs.base = val,
                    VirtualMsr::KernelGsBase => v.save.kernel_gs_base = val,
                    VirtualMsr::Pat => v.save.g_pat = val,
                },
            }
            let c = &v.control;
            v.save.rip = if c.exit_code == decode::code::IOIO {
                c.exit_info2
            } else if c.next_rip != 0 {
                c.next_rip
            } else {
                v.save.rip.wrapping_add(decode::insn_len(c.exit_code))
            };
        }
    }
}
