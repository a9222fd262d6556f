//! A model hart for the RISC-V backend's host tests: each scripted trap sets the CSRs and registers a
//! real trap would; CSR writes and host-timer requests are recorded.
use std::collections::HashMap;
use std::vec::Vec;

use libvmm_abi::{Hypercall, SBI_EXT_LIBVMM};

use crate::riscv::{csr, Csr, GuestContext, Hart, A0, A1, A6, A7};

/// One trap the model delivers: scause, stval, htval, and guest registers to set first.
#[derive(Clone)]
pub struct Trap {
    pub scause: u64,
    pub stval: u64,
    pub htval: u64,
    /// htinst: 0, or a pseudo-instruction for a fault on the guest's own page-table walk.
    pub htinst: u64,
    pub regs: Vec<(usize, u64)>,
}

pub fn ecall(a7: u64, a6: u64, args: &[u64]) -> Trap {
    let mut regs = vec![(A7, a7), (A6, a6)];
    regs.extend(args.iter().enumerate().map(|(i, v)| (A0 + i, *v)));
    Trap {
        scause: csr::EXC_ECALL_VS,
        stval: 0,
        htval: 0,
        htinst: 0,
        regs,
    }
}

pub fn hypercall(nr: Hypercall, args: &[u64]) -> Trap {
    ecall(SBI_EXT_LIBVMM, nr as u64, args)
}

pub fn trap(scause: u64, stval: u64, htval: u64) -> Trap {
    Trap {
        scause,
        stval,
        htval,
        htinst: 0,
        regs: vec![],
    }
}

#[derive(Default)]
pub struct ModelHart {
    pub script: Vec<Trap>,
    pub csrs: HashMap<&'static str, u64>,
    /// (a0, a1, sepc) seen at each entry after the first.
    pub entries: Vec<(u64, u64, u64)>,
    pub host_timer: Vec<u64>,
    pub waited: u32,
    /// The model's `time` counter.
    pub now: u64,
    /// hgatp's WARL behaviour: Sv39x4 refused when set; VMIDLEN (None: 14, the RV64 maximum).
    pub no_sv39x4: bool,
    pub vmidlen: Option<u32>,
    pub hfences: u32,
    /// The host's Zkr `seed` CSR value (`None`: no Zkr).
    pub seed: Option<u64>,
    /// G-stage tables for blocks mapped on first touch (`None`: none, the backend answers `false`).
    pub gstage: Option<std::boxed::Box<crate::riscv::gstage::GStage<1>>>,
}

fn key(c: Csr) -> &'static str {
    match c {
        Csr::Sepc => "sepc",
        Csr::Sstatus => "sstatus",
        Csr::Stval => "stval",
        Csr::Htval => "htval",
        Csr::Htinst => "htinst",
        Csr::Hvip => "hvip",
        Csr::Vsstatus => "vsstatus",
        Csr::Vstvec => "vstvec",
        Csr::Vsepc => "vsepc",
        Csr::Vscause => "vscause",
        Csr::Vstval => "vstval",
        Csr::Sie => "sie",
        Csr::Vsatp => "vsatp",
        Csr::Vstimecmp => "vstimecmp",
        Csr::Hstatus => "hstatus",
        Csr::Hedeleg => "hedeleg",
        Csr::Hideleg => "hideleg",
        Csr::Hie => "hie",
        Csr::Htimedelta => "htimedelta",
        Csr::Hcounteren => "hcounteren",
        Csr::Henvcfg => "henvcfg",
        Csr::Hstateen0 => "hstateen0",
        Csr::Hgatp => "hgatp",
    }
}

impl Hart for ModelHart {
    fn enter(&mut self, ctx: &mut GuestContext) -> u64 {
        self.entries
            .push((ctx.x[A0], ctx.x[A1], self.csr(Csr::Sepc)));
        if self.script.is_empty() {
            // Nothing left: the guest exits with status 77 so a test that runs off its script notices.
            ctx.x[A7] = SBI_EXT_LIBVMM;
            ctx.x[A6] = Hypercall::Exit as u64;
            ctx.x[A0] = 77;
            return csr::EXC_ECALL_VS;
        }
        let t = self.script.remove(0);
        for (r, v) in t.regs {
            ctx.x[r] = v;
        }
        self.csrs.insert("stval", t.stval);
        self.csrs.insert("htval", t.htval);
        self.csrs.insert("htinst", t.htinst);
        // A host timer interrupt arrives when the clock reached the armed deadline.
        if t.scause == csr::CAUSE_INTERRUPT | csr::IRQ_S_TIMER {
            self.now = self.now.max(self.host_timer.last().copied().unwrap_or(0));
        }
        t.scause
    }
    fn csr(&self, c: Csr) -> u64 {
        self.csrs.get(key(c)).copied().unwrap_or(0)
    }
    fn set_csr(&mut self, c: Csr, v: u64) {
        let v = if c == Csr::Hgatp {
            // Privileged spec, hgatp: a write of an unsupported MODE has no effect; VMID is WARL with
            // VMIDLEN implemented bits.
            let mode = v >> 60;
            if mode != 0 && (mode != 8 || self.no_sv39x4) {
                return;
            }
            let vmid_mask = ((1u64 << self.vmidlen.unwrap_or(14)) - 1) << csr::HGATP_VMID_SHIFT;
            v & !csr::HGATP_VMID_MASK | v & vmid_mask
        } else {
            v
        };
        self.csrs.insert(key(c), v);
    }
    fn set_host_timer(&mut self, deadline: u64) {
        self.host_timer.push(deadline);
    }
    /// Waiting ends when the armed deadline is reached: the model's clock jumps there.
    fn wait_for_host_timer(&mut self) {
        self.waited += 1;
        self.now = self.now.max(self.host_timer.last().copied().unwrap_or(0));
    }
    fn time(&self) -> u64 {
        self.now
    }
    fn hfence_gvma_all(&mut self) {
        self.hfences += 1;
    }
    fn seed(&mut self) -> Option<u64> {
        self.seed
    }
    fn map_zeroed_block(&mut self, block: u64) -> bool {
        self.gstage.as_mut().is_some_and(|g| g.map_block(block))
    }
}

impl ModelHart {
    /// Whether CSR `c` was ever written (or set by a trap).
    pub fn written(&self, c: Csr) -> bool {
        self.csrs.contains_key(key(c))
    }
}
