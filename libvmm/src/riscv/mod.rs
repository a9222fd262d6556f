//! RISC-V H-extension backend: the payload runs in VS-mode behind Sv39x4 G-stage tables.
//!
//! The backend translates, it decides nothing (the design notes' rule): a trap into HS-mode becomes one
//! generic [`Exit`] ([`RiscvH::run`]), and the run loop's [`Reply`] becomes register and CSR writes
//! ([`RiscvH::reply`]). What it knows about the hardware goes through the [`Hart`] trait, implemented by
//! `arch::riscv64` with CSR instructions and the world switch, and by a model in the tests, so the whole
//! trap path runs under `cargo test` through the same generic `vcpu::run` as on the machine.
//!
//! Trap translation (privileged spec, H extension; causes in [`csr`]):
//! - environment call from VS (10): `a7 == SBI_EXT_LIBVMM` is a libvmm hypercall (`a6` = number, `a0..a3`
//!   arguments); any other `a7` is an SBI call for the policy;
//! - guest-page faults (20, 21, 23): [`Exit::GuestMemoryFault`] at `htval << 2 | stval & 3`;
//! - virtual instruction (22): WFI (trapped by hstatus.VTW) waits for the guest's timer when one is armed
//!   and is [`Exit::Halt`] when nothing could wake the guest; every other instruction (hypervisor CSRs,
//!   `hfence`, ... from VS) is [`Exit::IllegalInsn`];
//! - the host's supervisor timer interrupt means the guest's deadline passed: the backend raises VSTIP
//!   (hvip) and the loop just re-enters.
//!
//! Replies: `a0`/`a1` written and `sepc` advanced past the `ecall`; an injected fault is an illegal-
//! instruction exception delivered into VS as the privileged spec has HS do it (vsepc/vscause/vstval,
//! vsstatus.SPP/SPIE/SIE, continue at vstvec). A TIME `set_timer` the policy answered with success is
//! carried out here (host timer armed, VSTIP cleared): arming timers is the backend's job, allowing the
//! call is the policy's.
//!
//! Exceptions a guest handles itself (illegal instruction, breakpoints, misaligned accesses, its own page
//! faults) are delegated to VS through hedeleg and never exit (KVM's choice too).
#![forbid(unsafe_code)]

pub(crate) mod csr;
pub(crate) mod gstage;
pub(crate) mod guest_dt;
pub(crate) mod guest_isa;
pub(crate) mod host_dt;
#[cfg(all(target_os = "none", target_arch = "riscv64"))]
pub(crate) mod hw;
pub(crate) mod isa;

/// The G-stage tables (one level-1 table: the window lies inside one gigabyte), in `.bss`, handed out
/// once to the bring-up.
#[cfg(all(target_os = "none", target_arch = "riscv64"))]
pub(crate) static GSTAGE: crate::arch::take_once::TakeOnce<gstage::GStage<1>> =
    crate::arch::take_once::TakeOnce::new(gstage::GStage::new());

use libvmm_abi::{BackendId, SBI_EXT_LIBVMM};

use crate::backend::{Backend, BackendError};
use crate::exit::{Access, Exit, Output, Reply, VirtualMsr};

use libvmm_abi::sbi::{EXT_TIME as SBI_EXT_TIME, TIME_SET_TIMER};

/// The guest's general registers while it is not running: `x[1..=31]` (x0 unused), plus the host's
/// registers the world switch keeps while the guest runs. The layout is the assembly's (offsets below).
#[repr(C, align(64))]
#[derive(Clone, Debug)]
pub struct GuestContext {
    pub x: [u64; 32],
    /// Host sp, gp, tp, s0, s1 and the resume address, saved by the world switch.
    pub host: [u64; 6],
}

/// Byte offset of `host` in [`GuestContext`] (used by the assembly).
pub const CTX_HOST_OFFSET: usize = 32 * 8;
static_assertions::const_assert_eq!(core::mem::offset_of!(GuestContext, host), CTX_HOST_OFFSET);

impl GuestContext {
    pub const fn new() -> Self {
        Self {
            x: [0; 32],
            host: [0; 6],
        }
    }
}

impl Default for GuestContext {
    fn default() -> Self {
        Self::new()
    }
}

pub const A0: usize = 10;
pub const A1: usize = 11;
pub const A6: usize = 16;
pub const A7: usize = 17;

/// CSRs the backend reads or writes between guest runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Csr {
    Sepc,
    Sstatus,
    Stval,
    Htval,
    Hvip,
    Vsstatus,
    Vstvec,
    Vsepc,
    Vscause,
    Vstval,
}

/// The hardware under the backend: the world switch and CSR access.
pub(crate) trait Hart {
    /// Runs the guest from `sepc` until the next trap into HS-mode; returns scause.
    fn enter(&mut self, ctx: &mut GuestContext) -> u64;
    fn csr(&self, c: Csr) -> u64;
    fn set_csr(&mut self, c: Csr, v: u64);
    /// Programs the host's supervisor timer (`u64::MAX`: off).
    fn set_host_timer(&mut self, deadline: u64);
    /// Waits (host WFI) until the host timer interrupt is pending.
    fn wait_for_host_timer(&mut self);
}

/// The RISC-V H backend over a hart.
pub(crate) struct RiscvH<H: Hart> {
    hart: H,
    ctx: GuestContext,
    /// The guest's armed deadline (SBI TIME), in `time` ticks.
    timer: Option<u64>,
}

impl<H: Hart> RiscvH<H> {
    /// A vCPU that starts at `entry` (sepc) with `a0 = hartid`, `a1 = boot_info`, `a2 = dtb`, `sp = stack`.
    pub fn new(mut hart: H, entry: u64, hartid: u64, boot_info: u64, dtb: u64, stack: u64) -> Self {
        let mut ctx = GuestContext::new();
        ctx.x[2] = stack;
        ctx.x[A0] = hartid;
        ctx.x[A1] = boot_info;
        ctx.x[A0 + 2] = dtb;
        hart.set_csr(Csr::Sepc, entry);
        Self {
            hart,
            ctx,
            timer: None,
        }
    }

    #[cfg(test)]
    pub fn hart(&self) -> &H {
        &self.hart
    }

    #[cfg(test)]
    pub fn regs(&self) -> &GuestContext {
        &self.ctx
    }

    fn decode(&mut self, scause: u64) -> Exit {
        if scause == csr::EXC_ECALL_VS {
            let x = &self.ctx.x;
            if x[A7] == SBI_EXT_LIBVMM {
                return Exit::Hypercall {
                    nr: x[A6],
                    args: [x[A0], x[A0 + 1], x[A0 + 2], x[A0 + 3]],
                };
            }
            unlikely_path();
            return Exit::Sbi {
                ext: x[A7],
                fid: x[A6],
                args: [x[A0], x[A0 + 1], x[A0 + 2], x[A0 + 3], x[A0 + 4], x[A0 + 5]],
            };
        }
        if scause & csr::CAUSE_INTERRUPT != 0 {
            if scause & !csr::CAUSE_INTERRUPT == csr::IRQ_S_TIMER {
                self.guest_timer_fired();
            }
            return Exit::HostEvent;
        }
        let access = match scause {
            csr::EXC_INSN_GUEST_PAGE_FAULT => Access::Execute,
            csr::EXC_LOAD_GUEST_PAGE_FAULT => Access::Read,
            csr::EXC_STORE_GUEST_PAGE_FAULT => Access::Write,
            csr::EXC_VIRTUAL_INSN => return self.virtual_instruction(),
            csr::EXC_ILLEGAL_INSN => {
                return Exit::IllegalInsn {
                    raw: self.hart.csr(Csr::Stval),
                }
            }
            _ => {
                return Exit::Unknown {
                    code: scause,
                    info1: self.hart.csr(Csr::Stval),
                    info2: self.hart.csr(Csr::Htval),
                }
            }
        };
        let gpa = (self.hart.csr(Csr::Htval) << 2) | (self.hart.csr(Csr::Stval) & 3);
        Exit::GuestMemoryFault { gpa, access }
    }

    /// A virtual-instruction trap: stval holds the instruction bits.
    fn virtual_instruction(&mut self) -> Exit {
        let insn = self.hart.csr(Csr::Stval);
        if insn != csr::INSN_WFI {
            return Exit::IllegalInsn { raw: insn };
        }
        if self.timer.is_none() {
            return Exit::Halt;
        }
        // A WFI with the guest's timer armed: wait for it, then continue after the WFI.
        self.hart.wait_for_host_timer();
        self.guest_timer_fired();
        self.advance();
        Exit::HostEvent
    }

    fn guest_timer_fired(&mut self) {
        self.hart.set_host_timer(u64::MAX);
        self.timer = None;
        let hvip = self.hart.csr(Csr::Hvip);
        self.hart
            .set_csr(Csr::Hvip, hvip | (1 << csr::IRQ_VS_TIMER));
    }

    fn set_guest_timer(&mut self, deadline: u64) {
        let hvip = self.hart.csr(Csr::Hvip);
        self.hart
            .set_csr(Csr::Hvip, hvip & !(1 << csr::IRQ_VS_TIMER));
        self.timer = (deadline != u64::MAX).then_some(deadline);
        self.hart.set_host_timer(deadline);
    }

    fn advance(&mut self) {
        let pc = self.hart.csr(Csr::Sepc);
        self.hart.set_csr(Csr::Sepc, pc.wrapping_add(4));
    }

    /// Delivers an illegal-instruction exception to VS-mode (privileged spec: the trap a VS-mode handler
    /// would have seen had the instruction trapped there).
    fn inject_illegal(&mut self, tval: u64) {
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

/// Marks the path that calls it as unlikely (a stable stand-in for `likely`/`unlikely` hints): SBI calls
/// other than libvmm hypercalls are rare, so the hypercall test comes first on the exit path.
#[cold]
#[inline(always)]
fn unlikely_path() {}

impl<H: Hart> Backend for RiscvH<H> {
    const ID: BackendId = BackendId::RiscvH;

    #[inline(always)]
    fn run(&mut self) -> Result<Exit, BackendError> {
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
}

#[cfg(test)]
mod tests;
