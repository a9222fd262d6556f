//! A model of the SVM hardware for host tests: CPUID and MSRs of a capable CPU, EFER.SVME state, and
//! VMRUN that plays a script of #VMEXITs (exit code, EXITINFO1/2, guest RAX and GPRs) into the VMCB,
//! recording the guest state at each entry. Host interrupts as the world switch leaves them: one that
//! fires during an exit stays pending (in the host's local APIC, [`super::HostIrqLine`]), ends the next
//! VMRUN with an INTR exit, and is gone only once the VMM takes it (the platform's `clear_kick`: share
//! the line with the [`super::ModelPlatform`] the loop runs on).
use std::vec::Vec;

use crate::svm::hw::SvmHw;
use crate::svm::vmcb::Vmcb;
use crate::x86::gprs::Gprs;

/// One #VMEXIT the model delivers.
#[derive(Clone, Copy, Debug, Default)]
pub struct SvmExit {
    pub code: u64,
    pub info1: u64,
    pub info2: u64,
    pub rax: u64,
    pub gprs: Gprs,
    /// The host's timer interrupt becomes pending during this exit (while the VMM handles it).
    pub host_irq: bool,
}

#[derive(Default)]
pub struct ModelSvm {
    pub script: Vec<SvmExit>,
    pub svme: bool,
    pub host_save_pa: u64,
    /// (guest RIP, guest RAX, RBX) at each VMRUN.
    pub entries: Vec<(u64, u64, u64)>,
    pub vmloads: u32,
    /// CPUID 0x8000_0001 ECX bit 2 (SVM) cleared when set.
    pub no_svm: bool,
    /// Host CR4.OSXSAVE was set, and each XCR0 loaded with XSETBV.
    pub xsave_enabled: bool,
    pub xcr0: Vec<u64>,
    /// (CR0, CR4, TLB_CONTROL, EVENTINJ) of the VMCB at each VMRUN.
    pub crs: Vec<(u64, u64, u8, u32)>,
    /// The host's local APIC: a host interrupt pending there (not yet taken by the VMM).
    pub host_irq: std::sync::Arc<super::HostIrqLine>,
    /// INTR exits delivered for a pending host interrupt.
    pub intr_exits: u32,
}

impl SvmHw for ModelSvm {
    fn cpuid(&self, leaf: u32, _: u32) -> [u32; 4] {
        match leaf {
            0x8000_0000 => [0x8000_001F, 0, 0, 0],
            0x8000_0001 => [0, 0, if self.no_svm { 0 } else { 1 << 2 }, 0],
            0x8000_000A => [1, 16, 0, 1],
            _ => [0; 4],
        }
    }
    fn rdmsr(&self, _: u32) -> u64 {
        0
    }
    fn enable(&mut self, host_save_pa: u64) {
        self.svme = true;
        self.host_save_pa = host_save_pa;
    }
    fn svme_is_set(&self) -> bool {
        self.svme
    }
    fn pa<T>(&self, r: &T) -> u64 {
        r as *const T as u64
    }
    fn run(&mut self, gprs: &mut Gprs, vmcb: &mut Vmcb) {
        assert!(self.svme, "VMRUN with EFER.SVME clear is #UD");
        self.entries.push((vmcb.save.rip, vmcb.save.rax, gprs.rbx));
        self.crs.push((
            vmcb.save.cr0,
            vmcb.save.cr4,
            vmcb.control.tlb_control,
            vmcb.control.event_inj,
        ));
        // With RFLAGS.IF = 1 at VMRUN and V_INTR_MASKING, a pending host interrupt ends the run at once.
        let e = if self.host_irq.pending() {
            self.intr_exits += 1;
            SvmExit {
                code: crate::svm::decode::code::INTR,
                ..Default::default()
            }
        // Off the end of the script: a guest SHUTDOWN, so a test that runs past it notices.
        } else if self.script.is_empty() {
            SvmExit {
                code: crate::svm::decode::code::SHUTDOWN,
                ..Default::default()
            }
        } else {
            self.script.remove(0)
        };
        vmcb.control.exit_code = e.code;
        vmcb.control.exit_info1 = e.info1;
        vmcb.control.exit_info2 = e.info2;
        vmcb.save.rax = e.rax;
        *gprs = e.gprs;
        // A scripted INTR exit is a host interrupt that ended the run: it stays pending until taken.
        if e.host_irq || e.code == crate::svm::decode::code::INTR {
            self.host_irq.raise();
        }
    }
    fn vmload(&mut self, _: &Vmcb) {
        self.vmloads += 1;
    }
    fn vmsave(&mut self, _: &mut Vmcb) {}
    fn enable_xsave(&mut self) -> bool {
        self.xsave_enabled = true;
        true
    }
    fn xsetbv(&mut self, xcr0: u64) {
        assert!(self.xsave_enabled, "XSETBV with CR4.OSXSAVE clear is #UD");
        self.xcr0.push(xcr0);
    }
}
