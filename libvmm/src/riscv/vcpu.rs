//! The RISC-V vCPU the generic loop drives: [`RiscvH`] implements [`Backend`] over the [`Hart`] trait
//! (`hw::HwHart` on the machine, `testing::hart::ModelHart` in host tests) and carries out the loop's
//! replies (a0/a1, sepc, injected illegal-instruction exceptions, the guest's timer).
#![forbid(unsafe_code)]

use libvmm_abi::sbi::{EXT_TIME as SBI_EXT_TIME, TIME_SET_TIMER};
use libvmm_abi::BackendId;

use crate::backend::{Backend, BackendError};
use crate::exit::{Exit, Output, Reply, VirtualMsr};

use super::{csr, Csr, Hart, RiscvH, A0, A1, A6, A7};

impl<H: Hart> RiscvH<H> {
    /// Programs the host timer for the earlier of the guest's deadline and its time limit.
    pub(super) fn arm_host_timer(&mut self) {
        let at = self
            .timer
            .unwrap_or(u64::MAX)
            .min(self.limit.unwrap_or(u64::MAX));
        self.hart.set_host_timer(at);
    }

    /// The host timer fired (or a WFI waited for it): raises VSTIP if the guest's deadline is due, drops
    /// the limit once it has passed (the loop stops the VM on it), and re-arms for what remains.
    pub(super) fn host_timer_fired(&mut self) {
        let now = self.hart.time();
        if self.timer.is_some_and(|t| now >= t) {
            self.timer = None;
            let hvip = self.hart.csr(Csr::Hvip);
            self.hart
                .set_csr(Csr::Hvip, hvip | (1 << csr::IRQ_VS_TIMER));
        }
        if self.limit.is_some_and(|l| now >= l) {
            self.limit = None;
        }
        self.arm_host_timer();
    }

    pub(super) fn set_guest_timer(&mut self, deadline: u64) {
        let hvip = self.hart.csr(Csr::Hvip);
        self.hart
            .set_csr(Csr::Hvip, hvip & !(1 << csr::IRQ_VS_TIMER));
        self.timer = (deadline != u64::MAX).then_some(deadline);
        self.arm_host_timer();
    }

    pub(super) fn advance(&mut self) {
        let pc = self.hart.csr(Csr::Sepc);
        self.hart.set_csr(Csr::Sepc, pc.wrapping_add(4));
    }

    /// Delivers an illegal-instruction exception to VS-mode (privileged spec: the trap a VS-mode handler
    /// would have seen had the instruction trapped there).
    pub(super) fn inject_illegal(&mut self, tval: u64) {
        let h = &mut self.hart;
        let pc = h.csr(Csr::Sepc);
        let vsstatus = h.csr(Csr::Vsstatus);
        let from_vs = h.csr(Csr::Sstatus) & csr::SSTATUS_SPP != 0;
        let sie = vsstatus & csr::SSTATUS_SIE != 0;
        let mut v = vsstatus & !(csr::SSTATUS_SPP | csr::SSTATUS_SPIE | csr::SSTATUS_SIE);
        if from_vs {
            v |= csr::SSTATUS_SPP;
        }
        if sie {
            v |= csr::SSTATUS_SPIE;
        }
        h.set_csr(Csr::Vsstatus, v);
        h.set_csr(Csr::Vsepc, pc);
        h.set_csr(Csr::Vscause, csr::EXC_ILLEGAL_INSN);
        h.set_csr(Csr::Vstval, tval);
        // The guest's handler runs in VS-mode: SRET from HS goes to V=1 (hstatus.SPV is still set) with
        // privilege S.
        let sstatus = h.csr(Csr::Sstatus);
        h.set_csr(Csr::Sstatus, sstatus | csr::SSTATUS_SPP);
        h.set_csr(Csr::Sepc, h.csr(Csr::Vstvec) & !3);
    }
}

/// No virtual APIC: the guest's interrupts are the hvip bits the replies set.
impl<H: Hart> crate::backend::NoGuestInterrupts for RiscvH<H> {}

impl<H: Hart> Backend for RiscvH<H> {
    const ID: BackendId = BackendId::RiscvH;

    #[inline(always)]
    fn run(&mut self, _mem: &crate::guest_mem::GuestMemory<'_>) -> Result<Exit, BackendError> {
        let scause = self.hart.enter(&mut self.ctx);
        Ok(self.decode(scause))
    }

    /// The exit itself is not passed back: what a reply needs is still in the guest's registers (a7/a6/a0
    /// of an SBI call) or in stval (the bits of a trapped instruction) until the next guest entry.
    #[inline(always)]
    fn reply(&mut self, reply: Reply) {
        match reply {
            Reply::Complete(Output::Hypercall(v)) => {
                self.ctx.x[A0] = 0;
                self.ctx.x[A1] = v as u64;
            }
            Reply::Complete(Output::Sbi { error, value }) => {
                let x = &self.ctx.x;
                let set_timer = error == 0 && x[A7] == SBI_EXT_TIME && x[A6] == TIME_SET_TIMER;
                let deadline = x[A0];
                self.ctx.x[A0] = error as u64;
                self.ctx.x[A1] = value as u64;
                if set_timer {
                    self.set_guest_timer(deadline);
                }
            }
            Reply::Complete(Output::Nothing) => {}
            Reply::Complete(_) | Reply::Inject(_) => {
                // x86-only outputs cannot complete a RISC-V exit; faults are illegal instructions here,
                // with the trapped instruction's bits (stval of a virtual-instruction trap) as vstval.
                let tval = self.hart.csr(Csr::Stval);
                return self.inject_illegal(tval);
            }
            Reply::Resume => return,
        }
        self.advance();
    }

    fn virtual_msr(&self, _: VirtualMsr) -> Option<u64> {
        None
    }

    #[cold]
    fn map_zeroed_block(&mut self, block: u64) -> bool {
        self.hart.map_zeroed_block(block)
    }

    fn emulate_illegal(&mut self, raw: u64) -> bool {
        self.seed_access(raw)
    }

    /// Another hart's IPI is VSSIP here (the guest clears it through its `sip.SSIP`); fences are this
    /// hart's `fence.i` / `hfence.vvma`.
    fn remote_events(&mut self, ipis: u32, fences: u8) {
        if ipis & crate::smp::IPI_SOFT != 0 {
            let hvip = self.hart.csr(Csr::Hvip);
            self.hart.set_csr(Csr::Hvip, hvip | (1 << csr::IRQ_VS_SOFT));
        }
        if fences != 0 {
            self.hart.fence(fences);
        }
    }
}
