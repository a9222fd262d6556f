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
use crate::exit::{Cr, CrState, Exit, Fault, Output, Reply, VirtualMsr};
use crate::guest_mem::GuestMemory;
use crate::x86::apic::delivery::{GuestInterrupts, Interruptibility};
use crate::x86::gprs::Gprs;
use crate::x86::msr::{EFER_LMA, EFER_LME, EFER_SVME};

/// RFLAGS.IF.
const RFLAGS_IF: u64 = 1 << 9;

use super::decode::{self, code};
use super::hw::SvmHw;
use super::insn::{self, CrInsn};
use super::vmcb::{self, Vmcb};

pub(crate) struct SvmVcpu<'v, H: SvmHw> {
    pub hw: H,
    pub vmcb: &'v mut Vmcb,
    pub gprs: Gprs,
    /// The nested tables, for blocks mapped on first touch (`None`: a test without tables).
    pub npt: Option<&'v mut super::npt::NestedTables>,
}

impl<H: SvmHw> Backend for SvmVcpu<'_, H> {
    const ID: libvmm_abi::BackendId = libvmm_abi::BackendId::Svm;

    fn run(&mut self, mem: &GuestMemory<'_>) -> Result<Exit, BackendError> {
        // NEXT_RIP is an output of the CPU (with NRIPS) or of `decode_with_memory` for the one exit it
        // completes: never left over for a later exit.
        self.vmcb.control.next_rip = 0;
        self.hw.run(&mut self.gprs, self.vmcb);
        after_exit(self.vmcb);
        if self.vmcb.control.exit_code == code::MSR {
            self.hw.vmsave(self.vmcb);
        }
        if self.vmcb.control.exit_code & 0xFFFF_FFFF == code::INVALID
            && !self.answer_refused_cr3_write(mem)
        {
            return Err(BackendError::EntryFailed {
                code: self.vmcb.control.exit_code,
                what: "VMRUN refused the guest state (VMEXIT_INVALID)",
            });
        }
        // The hot exits first, before the full decoder: built here, they reach the loop's dispatch without
        // a second switch. With the CR and XSETBV exits in `decode`, the compiler stopped fusing decode
        // and dispatch, which cost every CPUID and hypercall exit about 30 instructions (measured).
        match self.vmcb.control.exit_code {
            code::CPUID => {
                return Ok(Exit::Cpuid {
                    leaf: self.vmcb.save.rax as u32,
                    subleaf: self.gprs.rcx as u32,
                })
            }
            code::VMMCALL => {
                return Ok(Exit::Hypercall {
                    nr: self.vmcb.save.rax,
                    args: self.gprs.hypercall_args(),
                })
            }
            _ => {}
        }
        let info = exit_info(self.vmcb);
        let (vmcb, gprs) = (&mut *self.vmcb, &self.gprs);
        Ok(decode::decode(&info, gprs, || {
            cr_write_from_memory(vmcb, gprs, mem)
        }))
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
        // XCR0 is not part of the VMCB: the guest's value stays loaded in the CPU (the VMM uses no
        // extended state), exactly as the guest's own XSETBV would have left it.
        if let Reply::Complete(Output::SetXcr0(v)) = reply {
            self.hw.xsetbv(v);
        }
    }

    #[inline(always)]
    fn guest_cr4(&self) -> u64 {
        self.vmcb.save.cr4
    }

    fn cr_state(&self) -> CrState {
        cr_state(self.vmcb)
    }

    fn virtual_msr(&self, msr: VirtualMsr) -> Option<u64> {
        Some(virtual_msr(self.vmcb, msr))
    }

    #[cold]
    fn map_zeroed_block(&mut self, block: u64) -> bool {
        let hw = &self.hw;
        self.npt
            .as_deref_mut()
            .is_some_and(|t| t.map_block(block, |p| hw.pa(p)))
    }

    #[cold]
    fn emulation(&mut self) -> Option<&mut dyn crate::x86::emulate::EmuCpu> {
        // FS/GS bases stay in the CPU across exits: bring the VMCB's copy up to date for the emulator's
        // address computations (it never writes them, so no VMLOAD afterwards).
        self.hw.vmsave(self.vmcb);
        Some(self)
    }

    const VIRTUAL_APIC: bool = true;

    // The host interrupt behind an INTR exit is still pending (the world switch never takes one, see
    // `arch::x86_64::svm::run`): the loop takes it on the host event it caused, through the platform
    // (`Platform::clear_kick`, the one path for kicks and the host timer alike), so none is ever spent
    // without a host event; this backend takes none itself. Not after every VMRUN: a compare there cost
    // the CPUID and hypercall round trips 2 to 4 emulated instructions each (measured with `cargo xtask
    // bench`).

    fn clear_interrupt_shadow(&mut self) {
        self.vmcb.control.int_state &= !vmcb::INT_SHADOW;
    }
}

/// Guest-interrupt delivery on the VMCB: EVENTINJ type 0 for an interrupt the guest can take now; for
/// one it cannot, V_IRQ with the VINTR intercept (the CPU exits as soon as the guest could take a
/// virtual interrupt: IF = 1 and no shadow), as KVM's `svm_enable_irq_window` does. V_INTR_MASKING is
/// on (the time limit's host interrupts must exit whatever the guest's IF), so EVENTINJ is the only way
/// an interrupt reaches the guest, and the VMCB's RFLAGS.IF is the guest's own.
impl<H: SvmHw> GuestInterrupts for SvmVcpu<'_, H> {
    fn interruptibility(&self) -> Interruptibility {
        Interruptibility {
            interrupts_enabled: self.vmcb.save.rflags & RFLAGS_IF != 0,
            shadow: self.vmcb.control.int_state & vmcb::INT_SHADOW != 0,
        }
    }

    fn event_queued(&self) -> bool {
        self.vmcb.control.event_inj & vmcb::EVENTINJ_VALID != 0
    }

    fn inject_interrupt(&mut self, vector: u8) {
        self.vmcb.control.event_inj =
            u32::from(vector) | vmcb::EVENTINJ_TYPE_INTR | vmcb::EVENTINJ_VALID;
    }

    fn request_interrupt_window(&mut self, open: bool) {
        let c = &mut self.vmcb.control;
        let bits = vmcb::V_IRQ | vmcb::V_INTR_PRIO_MAX | vmcb::V_IGN_TPR;
        if open {
            c.int_ctl |= bits;
            c.int_vector = 0;
            c.intercept_misc1 |= vmcb::intercept::VINTR;
        } else {
            c.int_ctl &= !bits;
            c.intercept_misc1 &= !vmcb::intercept::VINTR;
        }
    }
}

impl<H: SvmHw> SvmVcpu<'_, H> {
    /// QEMU's TCG refuses a guest's MOV to CR3 with bits set above MAXPHYADDR with VMEXIT_INVALID at
    /// that instruction (RIP still on it, CR3 unchanged), where the APM gives the guest #GP(0); found by
    /// `payloads/guestfuzz` (wild mode), which stopped with code 100 as if the VMM had failed. So when
    /// VMRUN is refused with the guest's RIP on a MOV to CR3, the guest gets #GP(0), as hardware would
    /// answer, and the VMM enters it once more; true when that entry succeeded (its exit is then the one
    /// `run` goes on with). Anything else, or a second refusal, stays the VMM's stop (100). Known
    /// approximation: with CR4.PCIDE set, QEMU refuses bit 63 (no flush) the same way, which hardware
    /// accepts; the guest gets #GP there too.
    #[cold]
    #[inline(never)]
    fn answer_refused_cr3_write(&mut self, mem: &GuestMemory<'_>) -> bool {
        let mut bytes = [0u8; insn::MAX_LEN];
        let len = insn::fetch(mem, self.vmcb.save.cr3, self.vmcb.save.rip, &mut bytes);
        if !matches!(
            insn::decode_cr_write(&bytes[..len]),
            Some((CrInsn::MovToCr { cr: 3, .. }, _))
        ) {
            return false;
        }
        apply_reply(
            self.vmcb,
            &mut self.gprs,
            Reply::Inject(Fault::GeneralProtection(0)),
        );
        self.vmcb.control.next_rip = 0;
        self.hw.run(&mut self.gprs, self.vmcb);
        after_exit(self.vmcb);
        if self.vmcb.control.exit_code == code::MSR {
            self.hw.vmsave(self.vmcb);
        }
        self.vmcb.control.exit_code & 0xFFFF_FFFF != code::INVALID
    }
}

/// A CR0/CR4 write intercept without decode assists: read the instruction at the guest's RIP, take
/// the value from its source register, and record its length as NEXT_RIP for the reply. What cannot
/// be read or is not a form libvmm emulates stops the VM as an unhandled exit (RIP in info2).
#[cold]
#[inline(never)]
fn cr_write_from_memory(v: &mut Vmcb, gprs: &Gprs, mem: &GuestMemory<'_>) -> Exit {
    let unhandled = Exit::Unknown {
        code: v.control.exit_code,
        info1: v.control.exit_info1,
        info2: v.save.rip,
    };
    let (cr, n) = match v.control.exit_code {
        code::CR0_WRITE => (Cr::Cr0, 0),
        code::CR4_WRITE => (Cr::Cr4, 4),
        _ => return unhandled,
    };
    let mut bytes = [0u8; insn::MAX_LEN];
    let len = insn::fetch_at(mem, &cr_state(v), v.save.cs.base, v.save.rip, &mut bytes);
    let Some((i, insn_len)) = insn::decode_cr_write(&bytes[..len]) else {
        return unhandled;
    };
    let state = cr_state(v);
    let reg = |r| decode::gpr(r, gprs, v.save.rax, v.save.rsp);
    let value = match i {
        CrInsn::MovToCr { cr, gpr } if cr == n => reg(gpr),
        CrInsn::Clts if n == 0 => state.cr0 & !crate::x86::cr::cr0::TS,
        // LMSW loads CR0[3:0] from the source but cannot clear PE.
        CrInsn::Lmsw { gpr } if n == 0 => (state.cr0 & !0xE) | (reg(gpr) & 0xF),
        _ => return unhandled,
    };
    v.control.next_rip = v.save.rip.wrapping_add(insn_len);
    Exit::CrWrite { cr, value }
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
        rsp: v.save.rsp,
        next_rip: v.control.next_rip,
    }
}

/// CS.L in the VMCB's packed segment attributes (descriptor bit 53 -> attribute bit 9).
const ATTRIB_L: u16 = 1 << 9;

/// The guest's control state: SVM keeps no shadows, the VMCB holds what the guest sees (but EFER.SVME,
/// which is the VMM's, and which the guest reads as clear).
pub fn cr_state(v: &Vmcb) -> CrState {
    CrState {
        cr0: v.save.cr0,
        cr3: v.save.cr3,
        cr4: v.save.cr4,
        efer: v.save.efer & !EFER_SVME,
        cs_l: v.save.cs.attrib & ATTRIB_L != 0,
        cpl: v.save.cpl,
        // VMRUN checks CR4 against this CPU's features, which the guest's CPUID never exceeds.
        cr4_hw: u64::MAX,
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
                // A changed CR0/CR4 may change how the guest's linear addresses translate (PG, WP, PGE,
                // PCIDE, SMEP...): flush its TLB on the next VMRUN, as the instruction would.
                Output::SetCr(Cr::Cr0, val) => {
                    v.save.cr0 = val;
                    // Paging on with EFER.LME activates long mode (the CPU would set LMA itself; the
                    // write was intercepted). Only an AP starting from real mode gets here with LMA 0.
                    if val & crate::x86::cr::cr0::PG != 0 && v.save.efer & EFER_LME != 0 {
                        v.save.efer |= EFER_LMA;
                    }
                    v.control.tlb_control = vmcb::TLB_FLUSH_ALL;
                }
                Output::SetCr(Cr::Cr4, val) => {
                    v.save.cr4 = val;
                    v.control.tlb_control = vmcb::TLB_FLUSH_ALL;
                }
                Output::SetXcr0(_) => {}
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::guest_mem::GuestMemory;
    use crate::loader::Loaded;
    use crate::svm::hw::SvmHw;
    use crate::testing::svm::{ModelSvm, SvmExit};
    use crate::testing::ModelPlatform;
    use crate::vcpu::{self, StopReason, Vm};
    use crate::x86::cr::{cr0, cr4};
    use crate::x86::guest_setup::build;
    use libvmm_abi::layout::x86_64::WINDOW_BASE;
    use libvmm_abi::Hypercall;

    const ENTRY: u64 = WINDOW_BASE + 0x1_0000;
    const GP: u32 = 13 | (3 << 8) | (1 << 11) | (1 << 31);
    const UD: u32 = 6 | (3 << 8) | (1 << 31);

    /// Runs `script` through the generic loop with `code` at the guest's entry (RIP).
    fn run(script: Vec<SvmExit>, code: &[u8]) -> (StopReason, ModelSvm, Box<Vmcb>) {
        let (stop, hw, vmcb, _) = run_on(script, code, ModelPlatform::default());
        (stop, hw, vmcb)
    }

    /// As [`run`], on `platform` (which shares the model's host interrupt line); also returns how many
    /// times the loop took pending host interrupts (`Platform::clear_kick`).
    fn run_on(
        script: Vec<SvmExit>,
        code: &[u8],
        platform: ModelPlatform,
    ) -> (StopReason, ModelSvm, Box<Vmcb>, u32) {
        let (stop, hw, vmcb, p) = run_vm(script, code, platform, |_| {});
        (stop, hw, vmcb, p.clear_kicks.get())
    }

    /// As [`run_on`], with `setup` applied to the VM first; returns the platform.
    fn run_vm(
        script: Vec<SvmExit>,
        code: &[u8],
        mut platform: ModelPlatform,
        setup: impl FnOnce(&mut Vm<'_, ModelPlatform>),
    ) -> (StopReason, ModelSvm, Box<Vmcb>, ModelPlatform) {
        let mut buf = vec![0u8; 0x10_0000];
        buf[0x1_0000..0x1_0000 + code.len()].copy_from_slice(code);
        let mut mem = GuestMemory::new(WINDOW_BASE, &mut buf);
        let loaded = Loaded {
            entry: ENTRY,
            stack_top: WINDOW_BASE + 0x8_0000,
            boot_info: WINDOW_BASE,
        };
        let state = build(&mut mem, &loaded).unwrap();
        let mut vmcb = Box::new(Vmcb::zeroed());
        let links = super::super::VmcbLinks {
            iopm_pa: 0x1000,
            msrpm_pa: 0x4000,
            ncr3: 0x6000,
        };
        super::super::init_vmcb(&mut vmcb, &state, links);
        let mut hw = ModelSvm {
            script,
            ..Default::default()
        };
        hw.enable(0x9000);
        hw.enable_xsave();
        platform.host_irq = hw.host_irq.clone();
        let mut cpu = SvmVcpu {
            hw,
            vmcb: &mut vmcb,
            gprs: Gprs::default(),
            npt: None,
        };
        let mut vm = Vm::new(mem, platform);
        setup(&mut vm);
        let stop = vcpu::run(&mut cpu, &mut vm);
        let hw = core::mem::take(&mut cpu.hw);
        (stop, hw, vmcb, vm.platform)
    }

    fn exit(code: u64, rax: u64, gprs: Gprs) -> SvmExit {
        SvmExit {
            code,
            rax,
            gprs,
            ..Default::default()
        }
    }

    fn leave() -> SvmExit {
        exit(code::VMMCALL, Hypercall::Exit as u64, Gprs::default())
    }

    /// The `apic-storm` hang: the host's one-shot fired while the VMM handled an exit of another kind
    /// (a guest that exits all the time), and the world switch took it between STGI and CLI, so no
    /// INTR exit ever came and the time limit was never looked at. Now it stays pending: the next
    /// VMRUN ends with INTR at once, the VMM takes it then, and the time limit stops the guest.
    #[test]
    fn host_interrupt_during_another_exit_still_reaches_the_time_limit() {
        let storm = |host_irq| SvmExit {
            code: code::CPUID,
            host_irq,
            ..Default::default()
        };
        let platform = ModelPlatform {
            limit_passed: Some(1000),
            ..Default::default()
        };
        let script = vec![storm(false), storm(true), storm(false), leave()];
        let (stop, hw, _, takes) = run_on(script, &[], platform);
        assert!(
            matches!(stop, StopReason::TimeLimit { ms: 1000 }),
            "{stop:?}"
        );
        assert_eq!((hw.intr_exits, hw.host_irq.taken(), takes), (1, 1, 1));
        assert!(!hw.host_irq.pending());
        // Entered three times: the two CPUID exits, then the INTR exit right after the second.
        assert_eq!(hw.entries.len(), 3);
        assert_eq!(hw.script.len(), 2);
    }

    /// Every INTR exit takes its interrupt once, through the one path (the platform's `clear_kick`, one
    /// call per host event: the backend takes nothing itself), and resumes the guest (no time limit
    /// passed); until it is taken, every VMRUN ends with INTR at once.
    #[test]
    fn each_intr_exit_takes_its_host_interrupt_once() {
        let irq = SvmExit {
            code: code::CPUID,
            host_irq: true,
            ..Default::default()
        };
        let (stop, hw, _, takes) = run_on(vec![irq, irq, leave()], &[], ModelPlatform::default());
        assert_eq!(stop, StopReason::PayloadExit(0));
        assert_eq!((hw.intr_exits, hw.host_irq.taken(), takes), (2, 2, 2));
        assert!(!hw.host_irq.pending());
        // CPUID, INTR, CPUID, INTR, VMMCALL: five entries.
        assert_eq!(hw.entries.len(), 5);
        // A host interrupt nobody takes (a platform whose `clear_kick` does not reach the line) would
        // end every VMRUN with INTR: the model keeps it pending across entries.
        let mut alone = ModelSvm {
            script: vec![irq, leave()],
            svme: true,
            ..Default::default()
        };
        let mut vmcb = Box::new(Vmcb::zeroed());
        let mut gprs = Gprs::default();
        for _ in 0..3 {
            alone.run(&mut gprs, &mut vmcb);
        }
        assert_eq!(vmcb.control.exit_code, code::INTR);
        assert_eq!((alone.intr_exits, alone.host_irq.taken()), (2, 0));
    }

    /// The boot vCPU halts with interrupts off while another vCPU runs (which may still send it an IPI
    /// or an INIT): it waits for a kick in the platform, looks at the time limit at every wake, and
    /// stops the VM with it once passed (`smp mode=spin-forever`: the one-shot behind each wake is the
    /// platform's, `x86::clock::idle_wait`). Without the limit nothing else ends this wait.
    #[test]
    fn a_vcpu_halted_with_interrupts_off_stops_at_the_time_limit_while_another_runs() {
        let hlt = SvmExit {
            code: code::HLT,
            ..Default::default()
        };
        let platform = ModelPlatform {
            limit_after_idles: Some((3, 1000)),
            ..Default::default()
        };
        let shared: &'static crate::smp::Shared = Box::leak(Box::new(crate::smp::Shared::new()));
        shared.publish(2);
        assert!(shared.post_sipi(1, 0x08));
        assert_eq!(shared.take_sipi(1), Some(0x08), "vCPU 1 runs");
        let (stop, hw, vmcb, p) = run_vm(vec![hlt, leave()], &[], platform, |vm| {
            vm.smp = shared;
            vm.cpus = 2;
        });
        assert_eq!(vmcb.save.rflags & RFLAGS_IF, 0, "halted with IF = 0");
        assert_eq!(stop, StopReason::TimeLimit { ms: 1000 });
        assert_eq!(
            p.idles.get(),
            3,
            "woke twice before the limit, waited again each time"
        );
        assert_eq!(hw.entries.len(), 1, "never re-entered the guest");
        assert_eq!(shared.active(), 2);
    }

    #[test]
    fn intercepts_cr0_cr4_writes_and_xsetbv() {
        let v = run(vec![], &[]).2;
        assert_ne!(
            v.control.intercept_cr & super::super::vmcb::intercept::CR0_WRITE,
            0
        );
        assert_ne!(
            v.control.intercept_cr & super::super::vmcb::intercept::CR4_WRITE,
            0
        );
        assert_ne!(
            v.control.intercept_misc2 & super::super::vmcb::intercept::XSETBV,
            0
        );
    }

    #[test]
    fn cr_writes_are_read_from_guest_memory_checked_and_loaded_or_gp() {
        // mov cr4, rcx | mov cr0, r9 (REX.B) | clts | lmsw bx | lmsw [rax]
        let code = [
            0x0F, 0x22, 0xE1, 0x41, 0x0F, 0x22, 0xC1, 0x0F, 0x06, 0x0F, 0x01, 0xF3, 0x0F, 0x01,
            0x30,
        ];
        let good4 = cr4::PAE | cr4::OSFXSR | cr4::OSXSAVE;
        let rcx = |v| Gprs {
            rcx: v,
            ..Default::default()
        };
        let r9 = |v| Gprs {
            r9: v,
            ..Default::default()
        };
        let script = vec![
            exit(code::CR4_WRITE, 0, rcx(good4 | 1 << 63)), // reserved bit: #GP, RIP stays
            exit(code::CR4_WRITE, 0, rcx(good4)),           // valid: loaded, RIP + 3
            exit(code::CR0_WRITE, 0, r9(0xA001_0033)),      // NW without CD: #GP
            exit(code::CR0_WRITE, 0, r9(1 << 32 | 0x8001_0033)), // bits 63:32: #GP
            exit(code::CR0_WRITE, 0, r9(0x8001_003B)),      // TS set: loaded, RIP + 4
            exit(code::CR0_WRITE, 0, Gprs::default()),      // CLTS: TS cleared, RIP + 2
            exit(
                code::CR0_WRITE,
                0,
                Gprs {
                    rbx: 0xFFF4,
                    ..Default::default()
                },
            ), // LMSW bx: EM set, RIP + 3
            exit(code::CR0_WRITE, 0, Gprs::default()),      // LMSW [rax]: not emulated, stop
        ];
        let (stop, m, v) = run(script, &code);
        let rips: Vec<u64> = m.entries.iter().map(|e| e.0).collect();
        assert_eq!(
            rips,
            [
                ENTRY,
                ENTRY,
                ENTRY + 3,
                ENTRY + 3,
                ENTRY + 3,
                ENTRY + 7,
                ENTRY + 9,
                ENTRY + 12
            ]
        );
        let inj: Vec<u32> = m.crs.iter().map(|c| c.3).collect();
        assert_eq!(inj[1..5], [GP, 0, GP, GP]);
        assert_eq!(m.crs[2].1, good4, "valid CR4 loaded");
        assert_eq!(
            m.crs[2].2,
            super::super::vmcb::TLB_FLUSH_ALL,
            "guest TLB flushed"
        );
        assert_eq!(m.crs[5].0, 0x8001_003B);
        assert_eq!(m.crs[6].0, 0x8001_0033, "CLTS");
        assert_eq!(
            m.crs[7].0, 0x8001_0035,
            "LMSW: EM from BX, MP cleared, PE kept"
        );
        assert_eq!(
            stop,
            StopReason::UnhandledExit {
                code: code::CR0_WRITE,
                info1: 0,
                info2: ENTRY + 12
            }
        );
        assert_eq!(v.save.cr0 & cr0::PG, cr0::PG);
    }

    #[test]
    fn a_cr3_write_qemu_refuses_with_vmexit_invalid_is_gp_in_the_guest() {
        // mov cr3, rax with reserved bits: QEMU's TCG answers VMEXIT_INVALID with RIP on the
        // instruction (found by payloads/guestfuzz). The guest gets #GP(0) and runs on, RIP unchanged.
        let code = [0x0F, 0x22, 0xD8];
        let script = vec![exit(code::INVALID, 1 << 62, Gprs::default()), leave()];
        let (stop, m, _) = run(script, &code);
        assert_eq!(stop, StopReason::PayloadExit(0));
        let rips: Vec<u64> = m.entries.iter().map(|e| e.0).collect();
        assert_eq!(rips, [ENTRY, ENTRY]);
        assert_eq!(m.crs[1].3, GP, "#GP(0) injected on the second entry");
        // Refused again, or refused anywhere but at a MOV to CR3: the VMM's stop, 100.
        let script = vec![
            exit(code::INVALID, 1 << 62, Gprs::default()),
            exit(code::INVALID, 1 << 62, Gprs::default()),
        ];
        assert!(matches!(run(script, &code).0, StopReason::Backend(_)));
        let script = vec![exit(code::INVALID, 0, Gprs::default())];
        let (stop, m, _) = run(script, &[0x0F, 0x22, 0xC0]);
        assert!(matches!(stop, StopReason::Backend(_)), "{stop:?}");
        assert_eq!(m.entries.len(), 1, "mov cr0 is not retried");
    }

    #[test]
    fn xsetbv_is_ud_without_osxsave_then_checked_and_loaded() {
        let code = [0x0F, 0x22, 0xE1]; // mov cr4, rcx
        let xsetbv = |rcx, edx_eax: u64| {
            exit(
                code::XSETBV,
                edx_eax & 0xFFFF_FFFF,
                Gprs {
                    rcx,
                    rdx: edx_eax >> 32,
                    ..Default::default()
                },
            )
        };
        let script = vec![
            xsetbv(0, 3),
            exit(
                code::CR4_WRITE,
                0,
                Gprs {
                    rcx: cr4::PAE | cr4::OSXSAVE,
                    ..Default::default()
                },
            ),
            xsetbv(0, 2),
            xsetbv(1, 3),
            xsetbv(0, 7),
            leave(),
        ];
        let (stop, m, _) = run(script, &code);
        assert_eq!(stop, StopReason::PayloadExit(0));
        let inj: Vec<u32> = m.crs.iter().map(|c| c.3).collect();
        assert_eq!(inj[1..6], [UD, 0, GP, GP, 0]);
        assert_eq!(m.xcr0, [7], "only the valid XCR0 reached XSETBV");
        // The XSETBV that worked advanced RIP by its 3 bytes.
        assert_eq!(m.entries[5].0, m.entries[4].0 + 3);
    }
}
