//! SVM on the real instruction: bring-up on this CPU and the [`Backend`] implementation the generic loop
//! drives. Safe code over `arch::x86_64::svm`.
//!
//! The state VMLOAD/VMSAVE move (FS, GS, TR, LDTR, KERNEL_GS_BASE, STAR/LSTAR/CSTAR/SFMASK, SYSENTER_*)
//! is loaded into the CPU once, before the first VMRUN, and stays there across exits: the VMM never uses
//! those registers, so nothing needs swapping on the exit path (KVM likewise defers the host's VMLOAD).
//! The VMCB copy is refreshed with VMSAVE on MSR exits, where the policy may read those MSRs, and
//! written back with VMLOAD when the policy changes one.
#![forbid(unsafe_code)]

use crate::arch::x86_64::{boot as boot_info, cpu, svm as hw};
use crate::backend::{Backend, BackendError};
use crate::exit::{Exit, Output, Reply, VirtualMsr};
use crate::vcpu::{self, Platform, StopReason, Vm};
use crate::x86::gprs::Gprs;
use crate::x86::guest_setup::InitialState;

use super::decode::{self, code};
use super::vmcb::Vmcb;

pub(crate) struct SvmVcpu {
    vmcb: &'static mut Vmcb,
    gprs: Gprs,
}

impl Backend for SvmVcpu {
    const ID: libvmm_abi::BackendId = libvmm_abi::BackendId::Svm;

    fn run(&mut self) -> Result<Exit, BackendError> {
        hw::run(&mut self.gprs, self.vmcb);
        super::after_exit(self.vmcb);
        if self.vmcb.control.exit_code == code::MSR {
            hw::vmsave(self.vmcb);
        }
        if self.vmcb.control.exit_code & 0xFFFF_FFFF == code::INVALID {
            return Err(BackendError::EntryFailed {
                code: self.vmcb.control.exit_code,
                what: "VMRUN refused the guest state (VMEXIT_INVALID)",
            });
        }
        Ok(decode::decode(&super::exit_info(self.vmcb), &self.gprs))
    }

    #[inline(always)]
    fn reply(&mut self, reply: Reply) {
        super::apply_reply(self.vmcb, &mut self.gprs, reply);
        if let Reply::Complete(Output::SetVirtualMsr(
            VirtualMsr::FsBase | VirtualMsr::GsBase | VirtualMsr::KernelGsBase,
            _,
        )) = reply
        {
            hw::vmload(self.vmcb);
        }
    }

    fn virtual_msr(&self, msr: VirtualMsr) -> Option<u64> {
        Some(super::virtual_msr(self.vmcb, msr))
    }
}

/// Brings SVM up on this CPU and runs the guest until it stops.
pub(crate) fn boot<P: Platform>(vm: &mut Vm<'_, P>, state: &InitialState) -> StopReason {
    let vm_cr = if cpu::cpuid(0x8000_0001, 0)[2] & (1 << 2) != 0 {
        cpu::rdmsr(crate::x86::msr::VM_CR)
    } else {
        0
    };
    if let Err(why) = super::check_support(cpu::cpuid, vm_cr) {
        return StopReason::Unsupported(why);
    }
    // AVIC: decided by KVM's policy and reported; not activated (libvmm has no virtual APIC yet, and TCG
    // offers no AVIC to test it on).
    let avic = super::avic::decide(
        super::avic::AvicParam::Auto,
        &super::avic::HostFacts::from_cpuid(cpu::cpuid, true),
    );
    crate::vmm_print!(
        vm.platform.console(),
        "libvmm: AVIC policy: {:?}\n",
        avic.mode
    );
    let Some(st) = hw::take_storage() else {
        return StopReason::Platform("SVM storage already in use");
    };
    hw::enable(hw::pa(&st.host_save));
    let (pdpt_pa, pd_pa) = (hw::pa(&st.npt.pdpt), hw::pa(&st.npt.pd));
    super::npt::map_window(&mut st.npt, pdpt_pa, pd_pa);

    // Self-check: no VMM structure is reachable through the nested tables.
    let (img_start, img_end) = boot_info::image_range();
    let vmm_addrs = [
        img_start,
        img_end - 1,
        hw::pa(&st.guest_vmcb),
        hw::pa(&st.npt),
        pdpt_pa,
        boot_info::stack_address(),
    ];
    if vmm_addrs
        .iter()
        .any(|&a| st.npt.translate(a, pdpt_pa, pd_pa).is_some())
    {
        return StopReason::Platform("nested tables would expose VMM memory");
    }
    // And the permission maps deny what the policy must see: every MSR and port exits.
    if !st.msrpm.intercepts(crate::x86::msr::EFER, true) || !st.iopm.intercepts(0xF4) {
        return StopReason::Platform("permission maps do not intercept EFER and port I/O");
    }

    let links = super::VmcbLinks {
        iopm_pa: hw::pa(&st.iopm),
        msrpm_pa: hw::pa(&st.msrpm),
        ncr3: hw::pa(&st.npt.pml4),
    };
    super::init_vmcb(&mut st.guest_vmcb, state, links);
    hw::vmload(&st.guest_vmcb);
    let mut cpu = SvmVcpu {
        vmcb: &mut st.guest_vmcb,
        gprs: super::initial_gprs(state),
    };
    let stop = vcpu::run(&mut cpu, vm);
    if !hw::svme_is_set() {
        return StopReason::Platform("EFER.SVME was cleared under the VMM");
    }
    stop
}
