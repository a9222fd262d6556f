//! The RISC-V H extension on this hart: [`HwHart`], the hardware implementation of the [`Hart`] trait
//! (CSR instructions and the world switch of `arch::riscv64`), and the bring-up that precedes the run
//! loop: the G-stage tables for the guest window, checked hgatp (Sv39x4, VMID), and the H-extension CSRs
//! (delegation, counters, henvcfg/hstateen from the guest's ISA, the VS-mode start state). Target only;
//! the trap path it serves is host-tested on `testing::hart::ModelHart`.
#![forbid(unsafe_code)]

use crate::arch::riscv64::{csr, devices, entry};
use crate::vm::StopReason;

use super::csr as bits;
use super::guest_isa::HwConfig;
use super::{Csr, GuestContext, Hart, CTX_HOST_OFFSET};

// The world switch's layout is the context's.
const _: () = assert!(CTX_HOST_OFFSET == entry::CTX_HOST_OFFSET);
const _: () = assert!(core::mem::size_of::<GuestContext>() >= entry::CTX_SIZE);

/// This hart, after [`bring_up`] has set the H-extension CSRs up.
pub(crate) struct HwHart;

impl Hart for HwHart {
    #[inline(always)]
    fn enter(&mut self, ctx: &mut GuestContext) -> u64 {
        entry::enter(ctx)
    }
    #[inline(always)]
    fn csr(&self, c: Csr) -> u64 {
        match c {
            Csr::Sepc => csr::sepc(),
            Csr::Sstatus => csr::sstatus(),
            Csr::Stval => csr::stval(),
            Csr::Htval => csr::htval(),
            Csr::Htinst => csr::htinst(),
            Csr::Hvip => csr::hvip(),
            Csr::Vsstatus => csr::vsstatus(),
            Csr::Vstvec => csr::vstvec(),
            Csr::Vsepc => csr::vsepc(),
            Csr::Vscause => csr::vscause(),
            Csr::Vstval => csr::vstval(),
        }
    }
    #[inline(always)]
    fn set_csr(&mut self, c: Csr, v: u64) {
        match c {
            Csr::Sepc => csr::set_sepc(v),
            Csr::Sstatus => csr::set_sstatus(v),
            Csr::Stval => csr::set_stval(v),
            Csr::Htval => csr::set_htval(v),
            Csr::Htinst => csr::set_htinst(v),
            Csr::Hvip => csr::set_hvip(v),
            Csr::Vsstatus => csr::set_vsstatus(v),
            Csr::Vstvec => csr::set_vstvec(v),
            Csr::Vsepc => csr::set_vsepc(v),
            Csr::Vscause => csr::set_vscause(v),
            Csr::Vstval => csr::set_vstval(v),
        }
    }
    fn set_host_timer(&mut self, deadline: u64) {
        devices::set_timer(deadline);
    }
    fn time(&self) -> u64 {
        csr::time()
    }
    fn wait_for_host_timer(&mut self) {
        while csr::sip() & (1 << bits::IRQ_S_TIMER | 1 << bits::IRQ_S_SOFT) == 0 {
            csr::wfi();
        }
    }
    fn host_ipi_pending(&self) -> bool {
        csr::sip() & (1 << bits::IRQ_S_SOFT) != 0
    }
    fn clear_host_ipi(&mut self) {
        csr::clear_sip(1 << bits::IRQ_S_SOFT);
    }
    fn fence(&mut self, kinds: u8) {
        if kinds & crate::smp::fence::INSN != 0 {
            csr::fence_i();
        }
        if kinds & crate::smp::fence::VMA != 0 {
            csr::hfence_vvma_all();
        }
    }
}

/// The H-extension CSRs a further hart sets by itself before it parks (guest SMP will give it a vCPU):
/// delegation and counters as the boot hart sets them, no virtual interrupts, VS-mode translation off,
/// G-stage off until a guest runs here (hgatp 0), the timer quiet.
pub(crate) fn ap_bring_up() {
    csr::set_hgatp(0);
    csr::set_hedeleg(bits::HEDELEG_GUEST);
    csr::set_hideleg(bits::HIDELEG_GUEST);
    csr::set_hcounteren(bits::HCOUNTEREN_CY_TM_IR);
    csr::set_htimedelta(0);
    csr::set_hvip(0);
    csr::set_hie(0);
    csr::set_hstatus(
        bits::HSTATUS_VSXL_64 | bits::HSTATUS_SPV | bits::HSTATUS_SPVP | bits::HSTATUS_VTW,
    );
    csr::set_vsatp(0);
    csr::set_sie(0);
}

/// Maps the guest window in the G-stage tables (identity, nothing else) with the guest's W^X `map`,
/// installs them with the guest's VMID, and sets the H-extension CSRs for a guest with the ISA `hw`
/// describes. `sstc`: the host has Sstc (vstimecmp exists).
pub(crate) fn bring_up(
    map: &crate::loader::GuestMap,
    hw: &HwConfig,
    sstc: bool,
) -> Result<(), StopReason> {
    let gstage = super::GSTAGE
        .take()
        .ok_or(StopReason::Platform("G-stage tables already in use"))?;
    gstage
        .map_guest(map)
        .map_err(|_| StopReason::Platform("G-stage mapping failed"))?;
    if gstage.table_pas().any(|a| gstage.translate(a).is_some()) {
        return Err(StopReason::Platform(
            "G-stage tables would expose themselves",
        ));
    }
    let hgatp = gstage.hgatp(crate::config::GUEST_TAG);
    csr::set_hgatp(hgatp);
    if csr::hgatp() >> 60 != 8 {
        return Err(StopReason::Unsupported("hgatp does not take Sv39x4"));
    }
    if (csr::hgatp() & bits::HGATP_VMID_MASK) >> bits::HGATP_VMID_SHIFT
        != crate::config::GUEST_TAG as u64
    {
        return Err(StopReason::Unsupported(
            "VMID 1 not implemented (VMIDLEN 0)",
        ));
    }
    csr::hfence_gvma_all();

    guest_csrs(hw, sstc);
    Ok(())
}

/// The H-extension CSRs for a guest with the ISA `hw` describes, in their start state (VS-mode
/// translation off, no virtual interrupts, the timer quiet): at bring-up, and on every hart each time its
/// vCPU starts (guest SMP: SBI HSM `hart_start` begins with satp = 0 and interrupts off). The host
/// timer and host IPIs (kicks from the other vCPUs' harts) are enabled in `sie`.
pub(crate) fn guest_csrs(hw: &HwConfig, sstc: bool) {
    csr::set_hedeleg(bits::HEDELEG_GUEST);
    csr::set_hideleg(bits::HIDELEG_GUEST);
    csr::set_hcounteren(bits::HCOUNTEREN_CY_TM_IR);
    if sstc {
        // vstimecmp resets to 0, which is "already due": with it, QEMU keeps VSTIP pending for good (it
        // compares vstimecmp whenever htimedelta is written). Nothing is due until the guest says so.
        csr::set_vstimecmp(u64::MAX);
    }
    csr::set_htimedelta(0);
    csr::set_henvcfg(hw.henvcfg);
    if let Some(h) = hw.hstateen0 {
        csr::set_hstateen0(h);
    }
    csr::set_hvip(0);
    csr::set_hie(0);
    csr::set_hstatus(
        bits::HSTATUS_VSXL_64 | bits::HSTATUS_SPV | bits::HSTATUS_SPVP | bits::HSTATUS_VTW,
    );
    csr::set_vsatp(0);
    csr::set_vstvec(0);
    let mut vsstatus = 0;
    let mut sstatus = csr::sstatus()
        & !(bits::SSTATUS_SIE | bits::SSTATUS_SPIE | bits::SSTATUS_FS | bits::SSTATUS_VS);
    sstatus |= bits::SSTATUS_SPP;
    if hw.fp {
        sstatus |= bits::SSTATUS_FS_INITIAL;
        vsstatus |= bits::SSTATUS_FS_INITIAL;
    }
    if hw.vector {
        sstatus |= bits::SSTATUS_VS_INITIAL;
        vsstatus |= bits::SSTATUS_VS_INITIAL;
    }
    csr::set_vsstatus(vsstatus);
    csr::set_sstatus(sstatus);
    devices::set_timer(u64::MAX);
    csr::set_sie(1 << bits::IRQ_S_TIMER | 1 << bits::IRQ_S_SOFT);
}

/// A further hart joins the VM: the VM's G-stage tables (`hgatp` as the boot hart installed them; one
/// set per VM, shared), a fence for them, and the guest's CSRs.
pub(crate) fn join_vm(hgatp: u64, hw: &HwConfig, sstc: bool) {
    csr::set_hgatp(hgatp);
    csr::hfence_gvma_all();
    guest_csrs(hw, sstc);
}

/// The G-stage root and VMID this hart runs the guest with (for the other harts to join).
pub(crate) fn hgatp() -> u64 {
    csr::hgatp()
}
