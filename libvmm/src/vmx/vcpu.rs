//! The VMX [`Backend`]: enter the guest (after the software consistency checks), decode its exit, carry
//! out the loop's reply (RIP advanced by the VM-exit instruction length, faults injected through the
//! VM-entry interruption-information field).
#![forbid(unsafe_code)]

use super::caps::{Caps, CR4_VMXE};
use super::checks::{self, Check, GuestCrs, GuestFacts};
use super::controls::{intr_info, proc1, Controls};
use super::decode::{self, reason, CrContext, RawExit};
use super::fields as f;
use super::vmcs::{instruction_error_name, GuestRegs, VmFail, Vmcs, VmxOps};
use crate::backend::{Backend, BackendError};
use crate::exit::{Cr, CrState, Exit, Fault, Output, Reply, VirtualMsr};
use crate::x86::apic::delivery::{GuestInterrupts, Interruptibility};
use crate::x86::cr::cr0;
use crate::x86::msr::{EFER_LMA, EFER_LME};

use crate::x86::msr::KERNEL_GS_BASE as MSR_KERNEL_GS_BASE;

/// Debug switches (VMM command line `vmx.skip-checks`, `vmx.report-missed`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Options {
    /// Do not run the software checks: let the CPU judge (to prove it rejects what they catch).
    pub skip_checks: bool,
    /// When the CPU rejects an entry, re-run the software checks and report whether they missed it.
    pub report_missed: bool,
}

/// What the debug report found about a rejected entry (printed by the bring-up before the stop line).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum EntryDiagnosis {
    /// The software checks passed but the CPU refused: a missing or wrong check in `checks`.
    MissedConsistencyCheck { error: u64 },
    /// The checks were bypassed; had they run, this rule would have stopped the entry.
    BypassedCheckWouldCatch { error: u64, check: Check },
}

pub(crate) struct Vmx<H: VmxOps> {
    pub vmcs: Vmcs<H>,
    pub regs: GuestRegs,
    launched: bool,
    caps: Caps,
    controls: Controls,
    /// The controls changed since they were last checked.
    dirty: bool,
    /// CR0, CR4, EFER or the IA-32e entry control changed since the guest CR rules were last checked.
    crs_dirty: bool,
    opts: Options,
    kernel_gs_base: u64,
    /// The guest's CR0 and CR4 as it sees them (= the read shadows). The guest/host masks cover every
    /// bit, so every change exits and goes through the policy: these copies are always current.
    pub(super) guest_cr0: u64,
    pub(super) guest_cr4: u64,
    /// The guest's IA32_EFER field (every change exits: WRMSR, or the MOV to CR0 that activates long
    /// mode), kept for the entry checks.
    guest_efer: u64,
    pub diagnosis: Option<EntryDiagnosis>,
    /// An external interrupt was injected at the last entry: its delivery may have been cut short by
    /// the exit (IDT-vectoring information), then it is queued again.
    injected_intr: bool,
    /// The VMX-preemption timer's rate (TSC >> X, IA32_VMX_MISC[4:0]) when its value is saved on exit:
    /// then it keeps the guest's time ([`Backend::set_host_deadline`]).
    preemption_shift: Option<u8>,
    /// Guest SMP: the VMX-preemption timer's bound on every run, in its units
    /// ([`Vmx::bound_runs_for_kicks`]).
    kick_poll: Option<u32>,
    /// The EPT tables, for blocks mapped on first touch (`None`: a test without tables).
    pub ept: Option<&'static mut super::ept::EptTables>,
}

impl<H: VmxOps> Vmx<H> {
    /// A vCPU over a VMCS whose host and guest state are written; the controls are written here.
    pub fn new(
        mut vmcs: Vmcs<H>,
        caps: Caps,
        controls: Controls,
        opts: Options,
    ) -> Result<Self, BackendError> {
        super::setup::write_controls(&mut vmcs, &controls).map_err(|_| vmwrite_failed())?;
        let guest_cr0 = vmcs.read(f::CR0_READ_SHADOW).unwrap_or(0);
        let guest_cr4 = vmcs.read(f::CR4_READ_SHADOW).unwrap_or(0);
        let guest_efer = vmcs.read(f::GUEST_IA32_EFER).unwrap_or(0);
        let preemption_shift = (controls.pin & super::controls::pin::PREEMPTION_TIMER != 0
            && controls.exit & super::controls::exit::SAVE_PREEMPTION_TIMER != 0)
            .then_some((caps.misc & 0x1F) as u8);
        Ok(Self {
            vmcs,
            regs: GuestRegs::default(),
            launched: false,
            caps,
            controls,
            dirty: true,
            crs_dirty: true,
            opts,
            kernel_gs_base: 0,
            guest_cr0,
            guest_cr4,
            guest_efer,
            diagnosis: None,
            injected_intr: false,
            preemption_shift,
            kick_poll: None,
            ept: None,
        })
    }

    /// Guest SMP: bounds every run to `config::VMX_KICK_POLL_TSC` TSC ticks with the VMX-preemption
    /// timer, so another vCPU's kick (a stop, an INIT) is seen even while this guest spins with
    /// RFLAGS.IF = 0, where Bochs raises no external-interrupt exit (hardware does). Only where the timer
    /// keeps guest time; without "save preemption timer value" it restarts at a small value anyway.
    pub fn bound_runs_for_kicks(&mut self) {
        if let Some(shift) = self.preemption_shift {
            let units = (crate::config::VMX_KICK_POLL_TSC >> shift).clamp(1, u64::from(u32::MAX));
            self.kick_poll = Some(units as u32);
        }
    }

    /// The VMX-preemption timer keeps the guest's time (its value is saved on exit).
    pub fn keeps_guest_time(&self) -> bool {
        self.preemption_shift.is_some()
    }

    fn facts(&self) -> GuestFacts {
        GuestFacts {
            vtpr: self.vmcs.0.read_vtpr(),
            protected_mode: self.guest_cr0 & cr0::PE != 0,
        }
    }

    fn crs(&self) -> GuestCrs {
        GuestCrs {
            cr0: self.hw_cr0(self.guest_cr0),
            cr4: self.caps.fix_cr4(self.guest_cr4 | CR4_VMXE),
            efer: self.guest_efer,
        }
    }

    /// The guest CR0 field for the guest's CR0 `value`: the VMX fixed bits, of which "unrestricted
    /// guest" (guest SMP's APs, which start in real mode) lifts PE and PG; CD and NW off underneath, as
    /// KVM runs every guest (`KVM_VM_CR0_ALWAYS_OFF`: the guest still reads its own value).
    fn hw_cr0(&self, value: u64) -> u64 {
        let mut fixed0 = self.caps.cr0_fixed0;
        if self
            .controls
            .has2(super::controls::proc2::UNRESTRICTED_GUEST)
        {
            fixed0 &= !(cr0::PE | cr0::PG);
        }
        ((value & !(cr0::CD | cr0::NW)) | fixed0) & self.caps.cr0_fixed1
    }

    /// The software checks, run when the controls changed, and on every entry while TPR shadow is on
    /// (VTPR is guest-writable memory).
    fn check_before_entry(&mut self) -> Result<(), BackendError> {
        if self.opts.skip_checks || !(self.dirty || self.controls.has1(proc1::USE_TPR_SHADOW)) {
            return Ok(());
        }
        checks::check(&self.controls, &self.caps, self.facts())
            .map_err(|c| BackendError::ConsistencyCheck { what: c.name() })?;
        self.dirty = false;
        if self.crs_dirty {
            self.check_crs()?;
        }
        Ok(())
    }

    /// The guest CR rules ([`checks::check_guest_crs`]), after CR0, CR4, EFER or the IA-32e entry
    /// control changed (rare: out of line).
    #[cold]
    #[inline(never)]
    fn check_crs(&mut self) -> Result<(), BackendError> {
        checks::check_guest_crs(&self.controls, &self.caps, self.crs())
            .map_err(|c| BackendError::ConsistencyCheck { what: c.name() })?;
        self.crs_dirty = false;
        Ok(())
    }

    /// A refused entry: VMfailInvalid / VMfailValid(n), or an entry-failure exit (bit 31).
    fn refused(&mut self, code: u64, what: &'static str) -> BackendError {
        if self.opts.report_missed {
            let verdict = checks::check(&self.controls, &self.caps, self.facts())
                .and_then(|_| checks::check_guest_crs(&self.controls, &self.caps, self.crs()));
            self.diagnosis = Some(match (self.opts.skip_checks, verdict) {
                (_, Ok(())) => EntryDiagnosis::MissedConsistencyCheck { error: code },
                (true, Err(check)) => {
                    EntryDiagnosis::BypassedCheckWouldCatch { error: code, check }
                }
                // Checks ran, failed now but passed before entry: the input changed under us.
                (false, Err(_)) => EntryDiagnosis::MissedConsistencyCheck { error: code },
            });
        }
        BackendError::EntryFailed { code, what }
    }

    fn read_or_zero<W: f::Width>(&self, field: f::Field<W>) -> u64 {
        self.vmcs.read(field).map(Into::into).unwrap_or(0)
    }

    fn advance_rip(&mut self) {
        let len = self.vmcs.read_basic(f::EXIT_INSTRUCTION_LENGTH) as u64;
        let rip = self.vmcs.read_basic(f::GUEST_RIP);
        self.vmcs.write_basic(f::GUEST_RIP, rip.wrapping_add(len));
    }

    fn inject(&mut self, fault: Fault) {
        use intr_info::*;
        let hw = VALID | (TYPE_HW_EXCEPTION << TYPE_SHIFT);
        let (info, ec) = match fault {
            Fault::InvalidOpcode => (hw | 6, 0),
            // Real mode (an AP after SIPI) pushes no error code: VM entry refuses one there.
            Fault::GeneralProtection(_) if self.guest_cr0 & cr0::PE == 0 => (hw | 13, 0),
            Fault::GeneralProtection(ec) => (hw | 13 | DELIVER_ERROR_CODE, ec),
        };
        self.controls.entry_intr_info = info;
        self.controls.entry_error_code = ec;
        self.dirty = true;
        let _ = self.vmcs.write(f::ENTRY_EXCEPTION_ERROR_CODE, ec);
        let _ = self.vmcs.write(f::ENTRY_INTERRUPTION_INFO, info);
    }

    /// Injects hardware exception `vector` (with `error` pushed when given) on the next entry: the
    /// instruction emulator's faults (`vmx/emulate.rs`).
    pub(super) fn inject_exception(&mut self, vector: u8, error: Option<u32>) {
        use intr_info::*;
        let mut info = VALID | (TYPE_HW_EXCEPTION << TYPE_SHIFT) | u32::from(vector);
        let error = error.filter(|_| self.guest_cr0 & cr0::PE != 0);
        if error.is_some() {
            info |= DELIVER_ERROR_CODE;
        }
        let ec = error.unwrap_or(0);
        self.controls.entry_intr_info = info;
        self.controls.entry_error_code = ec;
        self.dirty = true;
        let _ = self.vmcs.write(f::ENTRY_EXCEPTION_ERROR_CODE, ec);
        let _ = self.vmcs.write(f::ENTRY_INTERRUPTION_INFO, info);
    }

    /// Intercepts #UD (exception bitmap bit 6) for forced emulation.
    pub(crate) fn intercept_ud(&mut self) -> Result<(), BackendError> {
        self.vmcs
            .write(f::EXCEPTION_BITMAP, 1 << 6)
            .map_err(|_| vmwrite_failed())
    }

    /// The guest's control state for the CR and XSETBV checks.
    fn cr_context(&self) -> CrContext {
        const AR_L: u64 = 1 << 13;
        let ss_ar = self.read_or_zero(f::GUEST_SS_AR);
        CrContext {
            state: CrState {
                cr0: self.guest_cr0,
                cr3: self.read_or_zero(f::GUEST_CR3),
                cr4: self.guest_cr4,
                efer: self.read_or_zero(f::GUEST_IA32_EFER),
                cs_l: self.read_or_zero(f::GUEST_CS_AR) & AR_L != 0,
                // CPL is SS.DPL (SDM Vol. 3C §25.4.1).
                cpl: ((ss_ar >> 5) & 3) as u8,
                // VMX cannot run a guest with a CR4 bit that IA32_VMX_CR4_FIXED1 has clear; VMXE is the
                // VMM's (set underneath, hidden from the guest).
                cr4_hw: self.caps.cr4_fixed1 & !CR4_VMXE,
            },
            rsp: self.read_or_zero(f::GUEST_RSP),
        }
    }

    /// Loads a checked CR0/CR4: the guest's value in the read shadow, the value with the VMX fixed bits
    /// (CR0.NE/PE/PG, CR4.VMXE; [`Vmx::hw_cr0`]) in the guest field; then the guest's VPID-tagged
    /// translations are flushed, as the instruction itself would flush them. Paging turned on with
    /// EFER.LME activates long mode, which the CPU would do itself had the write not exited: EFER.LMA
    /// and the IA-32e mode guest entry control (only an AP starting from real mode gets here so).
    fn set_cr(&mut self, cr: Cr, value: u64) -> Result<(), Fault> {
        let r = match cr {
            Cr::Cr0 => {
                self.guest_cr0 = value;
                self.crs_dirty = true;
                self.dirty = true;
                if value & cr0::PG != 0
                    && self.guest_efer & (EFER_LME | EFER_LMA) == EFER_LME
                    && self.enter_long_mode().is_err()
                {
                    return Err(Fault::GeneralProtection(0));
                }
                let hw = self.hw_cr0(value);
                self.vmcs
                    .write(f::CR0_READ_SHADOW, value)
                    .and_then(|_| self.vmcs.write(f::GUEST_CR0, hw))
            }
            Cr::Cr4 => {
                self.guest_cr4 = value;
                self.crs_dirty = true;
                self.dirty = true;
                self.vmcs.write(f::CR4_READ_SHADOW, value).and_then(|_| {
                    self.vmcs
                        .write(f::GUEST_CR4, self.caps.fix_cr4(value | CR4_VMXE))
                })
            }
        };
        self.vmcs.0.flush_guest_tlb();
        r.map_err(|_| Fault::GeneralProtection(0))
    }

    /// EFER.LMA and the IA-32e mode guest entry control, together (the entry checks want them equal).
    #[cold]
    fn enter_long_mode(&mut self) -> Result<(), VmFail> {
        self.guest_efer |= EFER_LMA;
        self.vmcs.write(f::GUEST_IA32_EFER, self.guest_efer)?;
        self.controls.entry |= super::controls::entry::IA32E_MODE_GUEST;
        self.dirty = true;
        self.vmcs.write(f::ENTRY_CONTROLS, self.controls.entry)
    }

    /// A fresh start of this vCPU after INIT + STARTUP (guest SMP's APs): the VMCS at `vmcs_pa` cleared
    /// and made current again (so the next entry is a VMLAUNCH), then `controls`, `host` and the real-mode
    /// state at `vector << 12` ([`super::setup::write_guest_sipi`]) written; the vCPU's own copies
    /// (registers, CR shadows, EFER, pending injection) reset to match; the guest's translations flushed
    /// (INIT flushes the TLB).
    pub(crate) fn start_after_sipi(
        &mut self,
        vmcs_pa: u64,
        controls: Controls,
        host: &super::setup::HostState,
        vector: u8,
    ) -> Result<(), BackendError> {
        let hw = &mut self.vmcs.0;
        if hw.vmclear(vmcs_pa).is_err() || hw.vmptrld(vmcs_pa).is_err() {
            return Err(BackendError::EntryFailed {
                code: 0,
                what: "VMCLEAR/VMPTRLD of an AP's VMCS failed",
            });
        }
        super::setup::write_host(&mut self.vmcs, host)
            .and_then(|_| super::setup::write_guest_sipi(&mut self.vmcs, &self.caps, vector))
            .and_then(|_| super::setup::write_controls(&mut self.vmcs, &controls))
            .map_err(|_| vmwrite_failed())?;
        self.controls = controls;
        self.launched = false;
        self.dirty = true;
        self.crs_dirty = true;
        self.regs = GuestRegs::default();
        self.kernel_gs_base = 0;
        self.guest_cr0 = self.read_or_zero(f::CR0_READ_SHADOW);
        self.guest_cr4 = self.read_or_zero(f::CR4_READ_SHADOW);
        self.guest_efer = self.read_or_zero(f::GUEST_IA32_EFER);
        self.injected_intr = false;
        self.diagnosis = None;
        self.vmcs.0.flush_guest_tlb();
        Ok(())
    }

    fn set_edx_eax(&mut self, v: u64) {
        self.regs.rax = v & 0xFFFF_FFFF;
        self.regs.rdx = v >> 32;
    }

    fn write_virtual_msr(&mut self, msr: VirtualMsr, value: u64) -> Result<(), Fault> {
        let r = match msr {
            VirtualMsr::Efer => {
                // Toggling long mode through WRMSR while paging is on is #GP on hardware, and the IA-32e
                // entry control must keep matching EFER.LMA (read-only: only a MOV to CR0 changes it).
                // With paging off (an AP in real mode on its way to long mode) LME may change.
                let cur = self.guest_efer;
                let changed = cur ^ value;
                if changed & EFER_LMA != 0
                    || (self.guest_cr0 & cr0::PG != 0 && changed & EFER_LME != 0)
                {
                    return Err(Fault::GeneralProtection(0));
                }
                self.guest_efer = value;
                self.crs_dirty = true;
                self.dirty = true;
                self.vmcs.write(f::GUEST_IA32_EFER, value)
            }
            VirtualMsr::FsBase => self.vmcs.write(f::GUEST_FS_BASE, value),
            VirtualMsr::GsBase => self.vmcs.write(f::GUEST_GS_BASE, value),
            VirtualMsr::Pat => self.vmcs.write(f::GUEST_IA32_PAT, value),
            VirtualMsr::KernelGsBase => {
                // Not in the VMCS: the host does not use it, so the guest's value lives in the MSR.
                self.kernel_gs_base = value;
                self.vmcs.0.wrmsr(MSR_KERNEL_GS_BASE, value);
                Ok(())
            }
        };
        r.map_err(|_| Fault::GeneralProtection(0))
    }

    /// After an entry that injected an external interrupt: when the exit interrupted its delivery
    /// (IDT-vectoring information valid), queue it again for the next entry, as KVM's
    /// `vmx_complete_interrupts` does; the APIC has it in service already.
    #[cold]
    fn requeue_interrupted_delivery(&mut self) {
        self.injected_intr = false;
        let info = self.read_or_zero(f::IDT_VECTORING_INFO) as u32;
        if info & intr_info::VALID != 0
            && (info & intr_info::TYPE_MASK) >> intr_info::TYPE_SHIFT == intr_info::TYPE_EXT_INTR
        {
            self.inject_intr_info(info & (intr_info::VALID | intr_info::TYPE_MASK | 0xFF));
        }
    }

    fn inject_intr_info(&mut self, info: u32) {
        self.controls.entry_intr_info = info;
        self.controls.entry_error_code = 0;
        self.dirty = true;
        self.injected_intr = true;
        let _ = self.vmcs.write(f::ENTRY_INTERRUPTION_INFO, info);
    }

    #[cfg(test)]
    pub fn controls(&self) -> &Controls {
        &self.controls
    }
}

fn vmwrite_failed() -> BackendError {
    BackendError::EntryFailed {
        code: 0,
        what: "VMWRITE of a control field failed",
    }
}

impl<H: VmxOps> Backend for Vmx<H> {
    const ID: libvmm_abi::BackendId = libvmm_abi::BackendId::Vmx;

    fn run(&mut self, _mem: &crate::guest_mem::GuestMemory<'_>) -> Result<Exit, BackendError> {
        self.check_before_entry()?;
        if let Err(fail) = self.vmcs.0.enter(&mut self.regs, self.launched) {
            return Err(match fail {
                VmFail::Invalid => self.refused(0, "VMfailInvalid (no current VMCS)"),
                VmFail::Valid => {
                    let n = self.read_or_zero(f::VM_INSTRUCTION_ERROR);
                    let what = instruction_error_name(n);
                    self.refused(n, what)
                }
            });
        }
        // The CPU cleared the valid bit of the event-injection field on this exit.
        if self.controls.entry_intr_info != 0 {
            self.controls.entry_intr_info = 0;
            self.dirty = true;
        }
        let exit_reason = self.vmcs.read_basic(f::EXIT_REASON);
        if exit_reason & reason::ENTRY_FAILURE != 0 {
            let what = match exit_reason & 0xFFFF {
                reason::INVALID_GUEST_STATE => {
                    "VM entry failed: invalid guest state (exit reason 33)"
                }
                reason::MSR_LOADING => "VM entry failed: MSR loading (exit reason 34)",
                reason::MCE_DURING_ENTRY => "VM entry failed: machine check (exit reason 41)",
                _ => "VM entry failed (exit reason with bit 31)",
            };
            return Err(self.refused((exit_reason & 0xFFFF) as u64, what));
        }
        self.launched = true;
        if self.injected_intr {
            self.requeue_interrupted_delivery();
        }
        let basic = exit_reason & 0xFFFF;
        // The hot exits first, before the full decoder: built here, they reach the loop's dispatch without
        // a second switch (measured: a few instructions per CPUID or VMCALL exit).
        match basic {
            reason::CPUID => {
                return Ok(Exit::Cpuid {
                    leaf: self.regs.rax as u32,
                    subleaf: self.regs.rcx as u32,
                })
            }
            reason::VMCALL => {
                return Ok(Exit::Hypercall {
                    nr: self.regs.rax,
                    args: self.regs.hypercall_args(),
                })
            }
            _ => {}
        }
        // #UD, intercepted only with forced emulation on (exception bitmap bit 6); anything else arriving
        // as an exception-or-NMI exit goes to the decoder (and stops the VM as unknown).
        if basic == reason::EXCEPTION_NMI
            && self.read_or_zero(f::EXIT_INTERRUPTION_INFO) & 0x7FF
                == (intr_info::TYPE_HW_EXCEPTION << intr_info::TYPE_SHIFT | 6) as u64
        {
            return Ok(Exit::UdIntercept);
        }
        // The other hot exits need no qualification: skip the VMREAD.
        let needs_q = !matches!(
            basic,
            reason::CPUID | reason::VMCALL | reason::HLT | reason::RDMSR | reason::WRMSR
        );
        let raw = RawExit {
            reason: exit_reason,
            qualification: if needs_q {
                self.vmcs.read_basic(f::EXIT_QUALIFICATION)
            } else {
                0
            },
            guest_physical: if matches!(basic, reason::EPT_VIOLATION | reason::EPT_MISCONFIG) {
                self.vmcs.read_basic(f::GUEST_PHYSICAL_ADDRESS)
            } else {
                0
            },
        };
        Ok(decode::decode(&raw, &self.regs, || self.cr_context()))
    }

    #[inline(always)]
    fn reply(&mut self, reply: Reply) {
        let out = match reply {
            Reply::Resume => return,
            Reply::Inject(fault) => return self.inject(fault),
            Reply::Complete(out) => out,
        };
        match out {
            Output::Nothing => {}
            Output::Cpuid([a, b, c, d]) => {
                self.regs.rax = a as u64;
                self.regs.rbx = b as u64;
                self.regs.rcx = c as u64;
                self.regs.rdx = d as u64;
            }
            Output::Hypercall(v) => self.regs.rax = v as u64,
            Output::Sbi { .. } => {}
            Output::MsrValue(v) => self.set_edx_eax(v),
            Output::IoIn { value, size } => {
                let v = value as u64;
                self.regs.rax = match size {
                    1 => (self.regs.rax & !0xFF) | (v & 0xFF),
                    2 => (self.regs.rax & !0xFFFF) | (v & 0xFFFF),
                    _ => v, // a 32-bit IN zero-extends into RAX
                };
            }
            Output::SetVirtualMsr(msr, value) => {
                if let Err(fault) = self.write_virtual_msr(msr, value) {
                    return self.inject(fault);
                }
            }
            Output::SetCr(cr, value) => {
                if let Err(fault) = self.set_cr(cr, value) {
                    return self.inject(fault);
                }
            }
            // XCR0 is not in the VMCS: the guest's value stays loaded in the CPU (the VMM uses no
            // extended state).
            Output::SetXcr0(value) => self.vmcs.0.xsetbv(value),
        }
        self.advance_rip();
    }

    #[inline(always)]
    fn guest_cr4(&self) -> u64 {
        self.guest_cr4
    }

    fn cr_state(&self) -> CrState {
        self.cr_context().state
    }

    #[cold]
    fn emulation(&mut self) -> Option<&mut dyn crate::x86::emulate::EmuCpu> {
        Some(self)
    }

    /// Maps the block, then delivers again an exception or software interrupt whose delivery made the
    /// first touch (IDT-vectoring information valid: e.g. its frame was pushed onto a fresh stack), as
    /// KVM's `vmx_complete_interrupts` does. External interrupts the VMM injected are re-queued already
    /// on every exit (`requeue_interrupted_delivery`).
    #[cold]
    fn map_zeroed_block(&mut self, block: u64) -> bool {
        use intr_info::*;
        if !self.ept.as_deref_mut().is_some_and(|t| t.map_block(block)) {
            return false;
        }
        let info = self.read_or_zero(f::IDT_VECTORING_INFO) as u32;
        let ty = (info & TYPE_MASK) >> TYPE_SHIFT;
        if info & VALID != 0 && ty != TYPE_EXT_INTR {
            let ec = if info & DELIVER_ERROR_CODE != 0 {
                self.read_or_zero(f::IDT_VECTORING_ERROR_CODE) as u32
            } else {
                0
            };
            if matches!(
                ty,
                TYPE_SW_INTR | TYPE_PRIV_SW_EXCEPTION | TYPE_SW_EXCEPTION
            ) {
                let len = self.read_or_zero(f::EXIT_INSTRUCTION_LENGTH) as u32;
                let _ = self.vmcs.write(f::ENTRY_INSTRUCTION_LENGTH, len);
            }
            let info = info & (VALID | TYPE_MASK | DELIVER_ERROR_CODE | VECTOR_MASK);
            self.controls.entry_intr_info = info;
            self.controls.entry_error_code = ec;
            self.dirty = true;
            let _ = self.vmcs.write(f::ENTRY_EXCEPTION_ERROR_CODE, ec);
            let _ = self.vmcs.write(f::ENTRY_INTERRUPTION_INFO, info);
        }
        true
    }

    fn virtual_msr(&self, msr: VirtualMsr) -> Option<u64> {
        let field = match msr {
            VirtualMsr::Efer => f::GUEST_IA32_EFER,
            VirtualMsr::FsBase => return self.vmcs.read(f::GUEST_FS_BASE).ok(),
            VirtualMsr::GsBase => return self.vmcs.read(f::GUEST_GS_BASE).ok(),
            VirtualMsr::Pat => f::GUEST_IA32_PAT,
            VirtualMsr::KernelGsBase => return Some(self.kernel_gs_base),
        };
        self.vmcs.read(field).ok()
    }

    const VIRTUAL_APIC: bool = true;

    fn clear_interrupt_shadow(&mut self) {
        let blocking = self.read_or_zero(f::GUEST_INTERRUPTIBILITY);
        if blocking & 3 != 0 {
            let _ = self
                .vmcs
                .write(f::GUEST_INTERRUPTIBILITY, (blocking & !3) as u32);
        }
    }
    /// The VMX-preemption timer counts to the deadline (rounded up to its rate; 0 exits at once, as
    /// for a deadline already passed), or its largest value without one (2^(32+X) TSC ticks).
    fn set_host_deadline(&mut self, deadline: Option<u64>, now: u64) {
        let Some(shift) = self.preemption_shift else {
            return;
        };
        let value = match deadline {
            Some(at) => {
                let ticks = at.saturating_sub(now);
                let units = (ticks >> shift) + u64::from(ticks & ((1u64 << shift) - 1) != 0);
                units.min(u64::from(u32::MAX)) as u32
            }
            None => u32::MAX,
        };
        let value = self.kick_poll.map_or(value, |p| value.min(p));
        let _ = self.vmcs.write(f::GUEST_PREEMPTION_TIMER, value);
    }
}

/// Guest-interrupt delivery on the VMCS: the VM-entry interruption-information field (type 0, external
/// interrupt) for an interrupt the guest can take now; interrupt-window exiting for one it cannot
/// (SDM Vol. 3C "Interrupt-Window Exiting"). No APICv: Bochs offers virtual-interrupt delivery, but the
/// virtual x2APIC is emulated through MSR exits on both vendors.
impl<H: VmxOps> GuestInterrupts for Vmx<H> {
    fn interruptibility(&self) -> Interruptibility {
        const RFLAGS_IF: u64 = 1 << 9;
        // Blocking by STI (bit 0) or MOV SS (bit 1).
        let blocking = self.read_or_zero(f::GUEST_INTERRUPTIBILITY);
        Interruptibility {
            interrupts_enabled: self.read_or_zero(f::GUEST_RFLAGS) & RFLAGS_IF != 0,
            shadow: blocking & 3 != 0,
        }
    }

    fn event_queued(&self) -> bool {
        self.controls.entry_intr_info & intr_info::VALID != 0
    }

    fn inject_interrupt(&mut self, vector: u8) {
        use intr_info::*;
        self.inject_intr_info(VALID | (TYPE_EXT_INTR << TYPE_SHIFT) | u32::from(vector));
    }

    fn request_interrupt_window(&mut self, open: bool) {
        if open {
            self.controls.proc1 |= proc1::INTR_WINDOW;
        } else {
            self.controls.proc1 &= !proc1::INTR_WINDOW;
        }
        self.dirty = true;
        let _ = self
            .vmcs
            .write(f::PRIMARY_PROC_CONTROLS, self.controls.proc1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exit::{Access, IoAccess};
    use crate::guest_mem::GuestMemory;
    use crate::testing::vmcs::{ModelVmcs, Step};
    use crate::testing::ModelPlatform;
    use crate::vcpu::{self, StopReason, Vm};
    use crate::vmx::caps::tests::skylake_x;
    use crate::vmx::setup::{self, Addrs, Tweak};
    use libvmm_abi::{Hypercall, ABI_VERSION};

    fn exit(reason: u32, len: u64, q: u64, gpa: u64, regs: GuestRegs) -> Step {
        Step::Exit(
            vec![
                (f::EXIT_REASON.encoding(), reason as u64),
                (f::EXIT_INSTRUCTION_LENGTH.encoding(), len),
                (f::EXIT_QUALIFICATION.encoding(), q),
                (f::GUEST_PHYSICAL_ADDRESS.encoding(), gpa),
            ],
            Some(regs),
        )
    }

    fn vmx(tweak: Tweak, opts: Options, steps: Vec<Step>) -> Vmx<ModelVmcs> {
        let caps = skylake_x();
        let c = setup::controls(&caps, &Addrs::TEST, tweak).unwrap();
        let mut model = ModelVmcs {
            steps,
            ..Default::default()
        };
        // A 64-bit guest as bring-up writes one (the entry checks look at CR0, CR4 and EFER).
        model.fields.insert(f::GUEST_RIP.encoding(), 0x201_0000);
        model
            .fields
            .insert(f::GUEST_IA32_EFER.encoding(), EFER_LME | EFER_LMA);
        model
            .fields
            .insert(f::CR0_READ_SHADOW.encoding(), 0x8001_0033);
        model.fields.insert(f::CR4_READ_SHADOW.encoding(), 0x20);
        Vmx::new(Vmcs(model), caps, c, opts).unwrap()
    }

    #[test]
    fn the_preemption_timer_counts_to_the_host_deadline_rounded_up_and_is_saved_across_entries() {
        let mut caps = skylake_x();
        caps.misc = (caps.misc & !0x1F) | 5; // TSC / 32
        let c = setup::controls(&caps, &Addrs::TEST, Tweak::None).unwrap();
        assert_ne!(
            c.exit & super::super::controls::exit::SAVE_PREEMPTION_TIMER,
            0
        );
        let mut v = Vmx::new(Vmcs(ModelVmcs::default()), caps, c, Options::default()).unwrap();
        assert!(v.keeps_guest_time());
        let timer =
            |v: &Vmx<ModelVmcs>| v.vmcs.0.fields[&f::GUEST_PREEMPTION_TIMER.encoding()] as u32;
        // 600 TSC ticks away: 18.75 units of 32, rounded up (never early).
        v.set_host_deadline(Some(1_000), 400);
        assert_eq!(timer(&v), 19);
        v.set_host_deadline(Some(1_040), 400);
        assert_eq!(timer(&v), 20);
        // Passed: exit at once. None: the largest value. Far away: clamped.
        v.set_host_deadline(Some(100), 400);
        assert_eq!(timer(&v), 0);
        v.set_host_deadline(None, 400);
        assert_eq!(timer(&v), u32::MAX);
        v.set_host_deadline(Some(u64::MAX), 0);
        assert_eq!(timer(&v), u32::MAX);
        // Guest SMP: every run is bounded, so a kick is seen even with the guest's IF = 0 (Bochs).
        v.bound_runs_for_kicks();
        let bound = (crate::config::VMX_KICK_POLL_TSC >> 5) as u32;
        v.set_host_deadline(None, 400);
        assert_eq!(timer(&v), bound);
        v.set_host_deadline(Some(u64::MAX), 0);
        assert_eq!(timer(&v), bound);
        v.set_host_deadline(Some(1_000), 400);
        assert_eq!(timer(&v), 19, "an earlier deadline stays");
        // Without the save control the value restarts at every entry: the backend does not keep time.
        let mut caps = skylake_x();
        caps.exit.may_be_1 &= !super::super::controls::exit::SAVE_PREEMPTION_TIMER;
        let c = setup::controls(&caps, &Addrs::TEST, Tweak::None).unwrap();
        let mut v = Vmx::new(Vmcs(ModelVmcs::default()), caps, c, Options::default()).unwrap();
        assert!(!v.keeps_guest_time());
        v.set_host_deadline(Some(1_000), 400);
        assert_eq!(timer(&v), setup::PREEMPTION_TIMER_VALUE);
    }

    /// A host interrupt (a kick, the host timer) ends the guest's run with an external-interrupt exit
    /// and stays pending in the local APIC: no "acknowledge interrupt on exit", and the backend sends
    /// no EOI of its own. The loop takes it once, through the one path SVM has too (the platform's
    /// `clear_kick`, once per host event), and resumes the guest. Before, the CPU acknowledged it on
    /// exit, the backend sent its EOI, and the loop's `clear_kick` looked for it again.
    #[test]
    fn each_external_interrupt_exit_takes_its_host_interrupt_once_through_the_platform() {
        use crate::vmx::controls::exit::ACK_INTR_ON_EXIT;
        let ext = || exit(1, 0, 0, 0, GuestRegs::default());
        let cpuid = GuestRegs {
            rax: 1,
            ..Default::default()
        };
        let leave = || exit(18, 3, 0, 0, regs_hc(Hypercall::Exit, [0; 3]));
        let script = vec![ext(), exit(10, 2, 0, 0, cpuid), ext(), leave()];
        let mut v = vmx(Tweak::None, Options::default(), script);
        let exit_ctls = v.vmcs.0.fields[&f::EXIT_CONTROLS.encoding()] as u32;
        assert_eq!(exit_ctls & ACK_INTR_ON_EXIT, 0, "not acknowledged on exit");
        let mut mem = vec![0u8; 0x1000];
        let mut vm = Vm::new(
            GuestMemory::new(0x200_0000, &mut mem),
            ModelPlatform::default(),
        );
        vm.platform.host_irq = v.vmcs.0.host_irq.clone();
        assert_eq!(vcpu::run(&mut v, &mut vm), StopReason::PayloadExit(0));
        let irq = &v.vmcs.0.host_irq;
        assert_eq!(
            (
                irq.taken(),
                irq.acked_on_exit(),
                vm.platform.clear_kicks.get()
            ),
            (2, 0, 2)
        );
        assert!(!irq.pending());
        // Taken before the next entry: no entry found it still pending.
        assert_eq!((v.vmcs.0.ext_intr_exits, v.vmcs.0.entries.len()), (0, 4));

        // Nobody takes it (a platform that does not reach the line): every entry ends at once with
        // another external-interrupt exit, as on the CPU.
        let mut alone = vmx(Tweak::None, Options::default(), vec![ext(), leave()]);
        let mut regs = GuestRegs::default();
        for _ in 0..3 {
            alone.vmcs.0.enter(&mut regs, true).unwrap();
        }
        assert_eq!(alone.vmcs.0.steps.len(), 1, "the script waits");
        assert_eq!(alone.vmcs.0.ext_intr_exits, 2);
        assert!(alone.vmcs.0.host_irq.pending());
        // With "acknowledge interrupt on exit" the CPU takes it itself at the exit (a second path,
        // with an EOI owed by the VMM): what libvmm no longer asks for.
        let mut acked = vmx(Tweak::None, Options::default(), vec![ext()]);
        acked.vmcs.0.fields.insert(
            f::EXIT_CONTROLS.encoding(),
            u64::from(exit_ctls | ACK_INTR_ON_EXIT),
        );
        acked.vmcs.0.enter(&mut regs, true).unwrap();
        let irq = &acked.vmcs.0.host_irq;
        assert_eq!(
            (irq.acked_on_exit(), irq.taken(), irq.pending()),
            (1, 0, false)
        );
    }

    fn run(v: &mut Vmx<ModelVmcs>) -> (StopReason, Vec<u8>) {
        let mut mem = vec![0u8; 0x1000];
        mem[0x10..0x13].copy_from_slice(b"hi\n");
        let mut vm = Vm::new(
            GuestMemory::new(0x200_0000, &mut mem),
            ModelPlatform::default(),
        );
        let stop = vcpu::run(v, &mut vm);
        (stop, vm.platform.console.0)
    }

    fn regs_hc(nr: Hypercall, a: [u64; 3]) -> GuestRegs {
        GuestRegs {
            rax: nr as u64,
            rdi: a[0],
            rsi: a[1],
            rdx: a[2],
            ..Default::default()
        }
    }

    #[test]
    fn hello_through_the_generic_loop_launches_once_then_resumes() {
        let mut v = vmx(
            Tweak::None,
            Options::default(),
            vec![
                exit(18, 3, 0, 0, regs_hc(Hypercall::Version, [0; 3])),
                exit(18, 3, 0, 0, regs_hc(Hypercall::Write, [1, 0x200_0010, 3])),
                exit(18, 3, 0, 0, regs_hc(Hypercall::Exit, [0; 3])),
            ],
        );
        let (stop, out) = run(&mut v);
        assert_eq!(stop, StopReason::PayloadExit(0));
        assert_eq!(out, b"hi\n");
        let e = &v.vmcs.0.entries;
        assert_eq!(
            e.iter().map(|x| x.0).collect::<Vec<_>>(),
            [false, true, true]
        );
        // The Version result came back in RAX and RIP moved by 3 (VMCALL) before the next entry.
        assert_eq!(e[1].1.rax, ABI_VERSION as u64);
        assert_eq!(e[1].2[&f::GUEST_RIP.encoding()], 0x201_0003);
    }

    #[test]
    fn cpuid_result_lands_in_four_registers() {
        let r = GuestRegs {
            rax: 0x4000_0000,
            rbx: 0xAAAA,
            ..Default::default()
        };
        let mut v = vmx(Tweak::None, Options::default(), vec![exit(10, 2, 0, 0, r)]);
        let e = v.run(&GuestMemory::new(0, &mut [])).unwrap();
        assert_eq!(
            e,
            Exit::Cpuid {
                leaf: 0x4000_0000,
                subleaf: 0,
            }
        );
        v.reply(Reply::Complete(Output::Cpuid([1, 2, 3, 4])));
        assert_eq!(
            (v.regs.rax, v.regs.rbx, v.regs.rcx, v.regs.rdx),
            (1, 2, 3, 4)
        );
        assert_eq!(v.vmcs.read(f::GUEST_RIP), Ok(0x201_0002));
    }

    #[test]
    fn guest_vmx_instructions_get_ud_without_rip_advance() {
        let mut v = vmx(
            Tweak::None,
            Options::default(),
            vec![
                exit(27, 4, 0, 0, GuestRegs::default()),
                exit(18, 3, 0, 0, regs_hc(Hypercall::Exit, [7, 0, 0])),
            ],
        );
        let (stop, _) = run(&mut v);
        assert_eq!(stop, StopReason::PayloadExit(7));
        let second = &v.vmcs.0.entries[1].2;
        assert_eq!(
            second[&f::ENTRY_INTERRUPTION_INFO.encoding()],
            (1 << 31) | (3 << 8) | 6
        );
        assert_eq!(second[&f::GUEST_RIP.encoding()], 0x201_0000);
    }

    #[test]
    fn io_and_msr_exits_are_denied_by_policy() {
        let out = GuestRegs {
            rax: 0x41,
            ..Default::default()
        };
        let inp = GuestRegs {
            rax: 0x1234_5678_9abc_def0,
            ..Default::default()
        };
        let rd = GuestRegs {
            rcx: 0x3A,
            ..Default::default()
        };
        let mut v = vmx(
            Tweak::None,
            Options::default(),
            vec![
                exit(30, 1, 0xf4 << 16, 0, out),
                exit(30, 1, (0x60 << 16) | 8, 0, inp),
                exit(31, 2, 0, 0, rd),
            ],
        );
        let e = v.run(&GuestMemory::new(0, &mut [])).unwrap();
        assert_eq!(
            e,
            Exit::Io(IoAccess {
                port: 0xf4,
                size: 1,
                write: true,
                value: 0x41,
                string: false
            })
        );
        v.reply(Reply::Complete(Output::Nothing));
        let e = v.run(&GuestMemory::new(0, &mut [])).unwrap();
        assert!(matches!(
            e,
            Exit::Io(IoAccess {
                port: 0x60,
                write: false,
                ..
            })
        ));
        v.reply(Reply::Complete(Output::IoIn {
            value: 0xFF,
            size: 1,
        }));
        assert_eq!(v.regs.rax, 0x1234_5678_9abc_deff);
        let e = v.run(&GuestMemory::new(0, &mut [])).unwrap();
        assert_eq!(e, Exit::MsrRead { msr: 0x3A });
    }

    #[test]
    fn efer_write_that_toggles_long_mode_is_gp() {
        let mut v = vmx(Tweak::None, Options::default(), vec![]);
        v.reply(Reply::Complete(Output::SetVirtualMsr(VirtualMsr::Efer, 0)));
        assert_eq!(
            v.controls().entry_intr_info,
            (1 << 31) | (3 << 8) | (1 << 11) | 13
        );
        assert_eq!(v.vmcs.read(f::GUEST_IA32_EFER), Ok(EFER_LME | EFER_LMA));
    }

    /// An AP in real mode (unrestricted guest): a #GP pushes no error code (VM entry refuses one outside
    /// protected mode), the software checks accept the entry, and EFER.LME may change with paging off;
    /// with paging on, the same change is #GP.
    #[test]
    fn in_real_mode_a_gp_has_no_error_code_and_lme_may_change() {
        let caps = skylake_x();
        let c = setup::ap_controls(&caps, &Addrs::TEST).unwrap();
        let mut model = ModelVmcs::default();
        model
            .fields
            .insert(f::CR0_READ_SHADOW.encoding(), 0x6000_0010);
        model.fields.insert(f::GUEST_CR0.encoding(), 0x30);
        let mut v = Vmx::new(Vmcs(model), caps, c, Options::default()).unwrap();
        v.reply(Reply::Inject(Fault::GeneralProtection(0)));
        assert_eq!(v.controls().entry_intr_info, (1 << 31) | (3 << 8) | 13);
        assert_eq!(v.check_before_entry(), Ok(()));
        v.controls.entry_intr_info = 0; // as the CPU clears it on the next exit
        v.reply(Reply::Complete(Output::SetVirtualMsr(
            VirtualMsr::Efer,
            EFER_LME,
        )));
        assert_eq!(v.vmcs.read(f::GUEST_IA32_EFER), Ok(EFER_LME));
        assert_eq!(v.controls().entry_intr_info >> 31, 0, "no #GP");
        // LMA is the CPU's: a write that sets it is #GP.
        v.reply(Reply::Complete(Output::SetVirtualMsr(
            VirtualMsr::Efer,
            EFER_LME | EFER_LMA,
        )));
        assert_eq!(v.controls().entry_intr_info & 0xFF, 13);
        assert_eq!(v.vmcs.read(f::GUEST_IA32_EFER), Ok(EFER_LME));
    }

    /// Zero on first touch on the model VMCS: an EPT violation in a pending block zeroes it and maps it,
    /// and an exception whose delivery made the touch (IDT-vectoring information: a #PF pushing onto a
    /// fresh stack) is delivered again at the next entry, with its error code, RIP unchanged.
    #[test]
    fn a_first_touch_maps_the_block_and_delivers_the_interrupted_exception_again() {
        use crate::loader::{GuestMap, Perm};
        use crate::vmx::ept::{EptTables, MmuRole, MT_WB};
        const BASE: u64 = 0x200_0000;
        const MIB: u64 = 1 << 20;
        let touched = BASE + 4 * MIB + 0x40;
        let mut fault = exit(48, 0, 0x182, touched, GuestRegs::default());
        let pf = intr_info::VALID
            | (intr_info::TYPE_HW_EXCEPTION << intr_info::TYPE_SHIFT)
            | intr_info::DELIVER_ERROR_CODE
            | 14;
        if let Step::Exit(fields, _) = &mut fault {
            fields.push((f::IDT_VECTORING_INFO.encoding(), pf as u64));
            fields.push((f::IDT_VECTORING_ERROR_CODE.encoding(), 2));
        }
        let mut v = vmx(
            Tweak::None,
            Options::default(),
            vec![fault, exit(18, 3, 0, 0, regs_hc(Hypercall::Exit, [0; 3]))],
        );
        let mut map = GuestMap::whole(BASE, 8 * MIB, Perm::ReadWrite);
        map.defer_from(BASE + 1);
        let phys = |p: *const u8| p as u64;
        let tables = Box::leak(Box::new(EptTables::new()));
        let role = MmuRole {
            level: 4,
            ad_disabled: false,
            memtype: MT_WB,
        };
        let root = tables.build(role, &map, phys).unwrap();
        assert_eq!(tables.walk(root.hpa, touched, phys), Ok(None));
        v.ept = Some(tables);
        let mut mem = vec![0xEEu8; 8 << 20];
        let mut vm = Vm::new(GuestMemory::new(BASE, &mut mem), ModelPlatform::default());
        vm.map = map;
        vm.lazy = crate::lazy::LazyBlocks::armed_for_test(&map);
        assert_eq!(vcpu::run(&mut v, &mut vm), StopReason::PayloadExit(0));
        assert!(vm
            .mem
            .slice(BASE + 4 * MIB, 2 * MIB)
            .unwrap()
            .iter()
            .all(|&b| b == 0));
        assert_eq!(vm.mem.slice(BASE + 6 * MIB, 1).unwrap(), [0xEE]);
        let t = v.ept.as_deref().unwrap();
        assert!(matches!(t.walk(root.hpa, touched, phys), Ok(Some((h, _))) if h == touched));
        let e = &v.vmcs.0.entries;
        assert_eq!(e[1].2[&f::ENTRY_INTERRUPTION_INFO.encoding()], pf as u64);
        assert_eq!(e[1].2[&f::ENTRY_EXCEPTION_ERROR_CODE.encoding()], 2);
        assert_eq!(e[1].2[&f::GUEST_RIP.encoding()], 0x201_0000, "not retired");
    }

    #[test]
    fn ept_violation_stops_with_the_address() {
        let mut v = vmx(
            Tweak::None,
            Options::default(),
            vec![exit(48, 0, 0x182, 0x10_0000, GuestRegs::default())],
        );
        let (stop, _) = run(&mut v);
        assert_eq!(
            stop,
            StopReason::GuestMemoryViolation {
                gpa: 0x10_0000,
                access: Access::Write,
                mapped: None
            }
        );
    }

    #[test]
    fn software_checks_stop_bad_controls_before_the_cpu_sees_them() {
        for (tweak, want) in [
            (Tweak::TprThresholdHigh, Check::TprThresholdHighBits),
            (Tweak::TprThresholdAboveVtpr, Check::TprThresholdAboveVtpr),
            (Tweak::TscMultiplierZero, Check::TscMultiplierZero),
        ] {
            let mut v = vmx(tweak, Options::default(), vec![]);
            let (stop, _) = run(&mut v);
            assert_eq!(
                stop,
                StopReason::Backend(BackendError::ConsistencyCheck { what: want.name() })
            );
            assert!(v.vmcs.0.entries.is_empty(), "the CPU was never asked");
            assert_eq!(
                stop.code(),
                libvmm_abi::stop::StopCode::ConsistencyCheck as u8
            );
        }
    }

    #[test]
    fn bypassed_checks_let_the_cpu_fail_and_the_report_names_the_rule() {
        let opts = Options {
            skip_checks: true,
            report_missed: true,
        };
        let mut v = vmx(
            Tweak::TprThresholdHigh,
            opts,
            vec![Step::Fail(VmFail::Valid, 7)],
        );
        let (stop, _) = run(&mut v);
        assert_eq!(
            stop,
            StopReason::Backend(BackendError::EntryFailed {
                code: 7,
                what: instruction_error_name(7)
            })
        );
        assert_eq!(
            v.diagnosis,
            Some(EntryDiagnosis::BypassedCheckWouldCatch {
                error: 7,
                check: Check::TprThresholdHighBits
            })
        );
    }

    #[test]
    fn a_cpu_rejection_the_checks_let_through_is_reported_as_missed() {
        let opts = Options {
            skip_checks: false,
            report_missed: true,
        };
        let mut v = vmx(Tweak::HostTrZero, opts, vec![Step::Fail(VmFail::Valid, 8)]);
        let (stop, _) = run(&mut v);
        assert_eq!(stop.code(), libvmm_abi::stop::StopCode::BackendError as u8);
        assert_eq!(
            v.diagnosis,
            Some(EntryDiagnosis::MissedConsistencyCheck { error: 8 })
        );
    }

    fn vmx_with_crs(steps: Vec<Step>) -> Vmx<ModelVmcs> {
        let caps = skylake_x();
        let c = setup::controls(&caps, &Addrs::TEST, Tweak::None).unwrap();
        let mut model = ModelVmcs {
            steps,
            ..Default::default()
        };
        for (field, v) in [
            (f::GUEST_RIP.encoding(), 0x201_0000),
            (f::GUEST_IA32_EFER.encoding(), EFER_LME | EFER_LMA),
            (f::CR0_READ_SHADOW.encoding(), 0x8001_0033),
            (f::CR4_READ_SHADOW.encoding(), 0x20),
            (f::GUEST_CS_AR.encoding(), 0xA09B),
        ] {
            model.fields.insert(field, v);
        }
        Vmx::new(Vmcs(model), caps, c, opts_none()).unwrap()
    }

    fn opts_none() -> Options {
        Options::default()
    }

    const GP_INFO: u64 = (1 << 31) | (3 << 8) | (1 << 11) | 13;
    const UD_INFO: u64 = (1 << 31) | (3 << 8) | 6;

    #[test]
    fn cr_writes_go_through_the_policy_and_load_shadow_and_guest_field() {
        use crate::x86::cr::cr4;
        let r = |rcx| GuestRegs {
            rcx,
            ..Default::default()
        };
        let good = cr4::PAE | cr4::OSFXSR;
        let mut v = vmx_with_crs(vec![
            exit(28, 3, 4 | (1 << 8), 0, r(good | 1 << 25)), // reserved bit 25: #GP
            exit(28, 3, 4 | (1 << 8), 0, r(good | cr4::VMXE)), // VMXE: not the guest's, #GP
            exit(28, 3, 4 | (1 << 8), 0, r(good)),           // valid
            exit(28, 3, 1 << 8, 0, r(0xA001_0033)),          // CR0.NW without CD: #GP
            exit(28, 3, 1 << 8, 0, r(0x0001_0033)),          // clearing PG in 64-bit mode: #GP
            exit(18, 3, 0, 0, regs_hc(Hypercall::Exit, [0; 3])),
        ]);
        let (stop, _) = run(&mut v);
        assert_eq!(stop, StopReason::PayloadExit(0));
        let e = &v.vmcs.0.entries;
        let inj = |i: usize| e[i].2[&f::ENTRY_INTERRUPTION_INFO.encoding()];
        assert_eq!(
            [inj(1), inj(2), inj(4), inj(5)],
            [GP_INFO, GP_INFO, GP_INFO, GP_INFO]
        );
        assert_eq!(inj(3) & (1 << 31), 0, "the valid write injects nothing");
        assert_eq!(e[3].2[&f::CR4_READ_SHADOW.encoding()], good);
        assert_eq!(e[3].2[&f::GUEST_CR4.encoding()], good | CR4_VMXE);
        assert_eq!(e[3].2[&f::GUEST_RIP.encoding()], 0x201_0003);
        assert_eq!(
            e[5].2[&f::GUEST_RIP.encoding()],
            0x201_0003,
            "#GP: no advance"
        );
        assert_eq!(v.vmcs.0.tlb_flushes, 1);
        assert_eq!(v.vmcs.0.fields[&f::CR0_READ_SHADOW.encoding()], 0x8001_0033);
    }

    #[test]
    fn every_cr0_and_cr4_bit_is_host_owned() {
        let caps = skylake_x();
        let mut vmcs = Vmcs(ModelVmcs::default());
        let mut buf = vec![0u8; 0x10_0000];
        let mut mem = GuestMemory::new(0x200_0000, &mut buf);
        let st = crate::x86::guest_setup::build(
            &mut mem,
            &crate::loader::Loaded {
                entry: 0x201_0000,
                stack_top: 0x210_0000,
                boot_info: 0x200_0000,
            },
        )
        .unwrap();
        setup::write_guest(&mut vmcs, &caps, &st).unwrap();
        assert_eq!(vmcs.read(f::CR0_GUEST_HOST_MASK), Ok(u64::MAX));
        assert_eq!(vmcs.read(f::CR4_GUEST_HOST_MASK), Ok(u64::MAX));
        assert_eq!(vmcs.read(f::CR4_READ_SHADOW), Ok(st.cr4));
    }

    #[test]
    fn xsetbv_is_ud_without_osxsave_then_checked_and_loaded() {
        use crate::x86::cr::cr4;
        let xs = |rcx, edx_eax: u64| GuestRegs {
            rcx,
            rax: edx_eax & 0xFFFF_FFFF,
            rdx: edx_eax >> 32,
            ..Default::default()
        };
        let mut v = vmx_with_crs(vec![
            exit(55, 3, 0, 0, xs(0, 3)),
            exit(
                28,
                3,
                4,
                0,
                GuestRegs {
                    rax: cr4::PAE | cr4::OSXSAVE,
                    ..Default::default()
                },
            ),
            exit(55, 3, 0, 0, xs(0, 4)), // AVX without SSE
            exit(55, 3, 0, 0, xs(0, 7)),
            exit(18, 3, 0, 0, regs_hc(Hypercall::Exit, [0; 3])),
        ]);
        let (stop, _) = run(&mut v);
        assert_eq!(stop, StopReason::PayloadExit(0));
        let e = &v.vmcs.0.entries;
        let inj = |i: usize| e[i].2[&f::ENTRY_INTERRUPTION_INFO.encoding()];
        assert_eq!(inj(1), UD_INFO);
        assert_eq!(inj(3), GP_INFO);
        assert_eq!(v.vmcs.0.xcr0, [7]);
        assert_eq!(e[4].2[&f::GUEST_RIP.encoding()], 0x201_0006);
    }
}
