//! RISC-V H-extension bring-up on this hart, over the [`Hart`] trait: the G-stage tables for the guest
//! window (and a self-check that they do not map themselves), hgatp (Sv39x4 and the guest's VMID, read
//! back because both are WARL), and the H-extension CSRs (delegation, counters, henvcfg/hstateen from
//! the guest's ISA, the VS-mode start state). The trait's real implementation ([`HwHart`], target only)
//! is a thin layer over `arch::riscv64`'s CSR instructions and world switch; the host tests run the same
//! bring-up, and the trap path after it, against `testing::hart::ModelHart`.
#![forbid(unsafe_code)]

use crate::vm::StopReason;

use super::csr as bits;
use super::gstage::GStage;
use super::guest_isa::HwConfig;
use super::{Csr, Hart};

/// The H-extension CSRs every hart sets the same way, boot hart or not: exception and interrupt
/// delegation to VS, counters, no time offset, no virtual interrupts, VS-mode with WFI trapping, VS
/// translation off.
fn set_up_h_csrs<H: Hart>(hart: &mut H) {
    hart.set_csr(Csr::Hedeleg, bits::HEDELEG_GUEST);
    hart.set_csr(Csr::Hideleg, bits::HIDELEG_GUEST);
    hart.set_csr(Csr::Hcounteren, bits::HCOUNTEREN_CY_TM_IR);
    hart.set_csr(Csr::Htimedelta, 0);
    hart.set_csr(Csr::Hvip, 0);
    hart.set_csr(Csr::Hie, 0);
    hart.set_csr(
        Csr::Hstatus,
        bits::HSTATUS_VSXL_64 | bits::HSTATUS_SPV | bits::HSTATUS_SPVP | bits::HSTATUS_VTW,
    );
    hart.set_csr(Csr::Vsatp, 0);
}

/// The H-extension CSRs a further hart sets by itself before it parks (guest SMP will give it a vCPU):
/// delegation and counters as the boot hart sets them, no virtual interrupts, VS-mode translation off,
/// G-stage off until a guest runs here (hgatp 0), the timer quiet.
pub(crate) fn set_up_ap<H: Hart>(hart: &mut H) {
    hart.set_csr(Csr::Hgatp, 0);
    set_up_h_csrs(hart);
    hart.set_csr(Csr::Sie, 0);
}

/// Maps the guest window in `gstage` (identity, nothing else) with the guest's W^X `map`, installs the
/// tables with the guest's VMID, and sets the H-extension CSRs for a guest with the ISA `hw` describes.
/// `sstc`: the host has Sstc (vstimecmp exists).
pub(crate) fn set_up<H: Hart, const N: usize, const P: usize>(
    hart: &mut H,
    gstage: &mut GStage<N, P>,
    map: &crate::loader::GuestMap,
    hw: &HwConfig,
    sstc: bool,
) -> Result<(), StopReason> {
    gstage
        .map_guest(map)
        .map_err(|_| StopReason::Platform("G-stage mapping failed"))?;
    if gstage.table_pas().any(|a| gstage.translate(a).is_some()) {
        return Err(StopReason::Platform(
            "G-stage tables would expose themselves",
        ));
    }
    hart.set_csr(Csr::Hgatp, gstage.hgatp(crate::config::GUEST_TAG));
    let hgatp = hart.csr(Csr::Hgatp);
    if hgatp >> 60 != 8 {
        return Err(StopReason::Unsupported("hgatp does not take Sv39x4"));
    }
    if (hgatp & bits::HGATP_VMID_MASK) >> bits::HGATP_VMID_SHIFT != crate::config::GUEST_TAG as u64
    {
        return Err(StopReason::Unsupported(
            "VMID 1 not implemented (VMIDLEN 0)",
        ));
    }
    hart.hfence_gvma_all();
    guest_csrs_on(hart, hw, sstc);
    Ok(())
}

/// The H-extension CSRs for a guest with the ISA `hw` describes, in their start state (VS-mode
/// translation off, no virtual interrupts, the timer quiet): at bring-up, and on every hart each time its
/// vCPU starts (guest SMP: SBI HSM `hart_start` begins with satp = 0 and interrupts off). The host
/// timer and host IPIs (kicks from the other vCPUs' harts) are enabled in `sie`.
pub(crate) fn guest_csrs_on<H: Hart>(hart: &mut H, hw: &HwConfig, sstc: bool) {
    if sstc {
        // vstimecmp resets to 0, which is "already due": with it, QEMU keeps VSTIP pending for good (it
        // compares vstimecmp whenever htimedelta is written, below). Nothing is due until the guest
        // says so.
        hart.set_csr(Csr::Vstimecmp, u64::MAX);
    }
    set_up_h_csrs(hart);
    hart.set_csr(Csr::Henvcfg, hw.henvcfg);
    if let Some(h) = hw.hstateen0 {
        hart.set_csr(Csr::Hstateen0, h);
    }
    hart.set_csr(Csr::Vstvec, 0);
    let mut vsstatus = 0;
    let mut sstatus = hart.csr(Csr::Sstatus)
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
    hart.set_csr(Csr::Vsstatus, vsstatus);
    hart.set_csr(Csr::Sstatus, sstatus);
    hart.set_host_timer(u64::MAX);
    hart.set_csr(Csr::Sie, 1 << bits::IRQ_S_TIMER | 1 << bits::IRQ_S_SOFT);
}

/// A further hart joins the VM: the VM's G-stage tables (`hgatp` as the boot hart installed them; one
/// set per VM, shared), a fence for them, and the guest's CSRs.
pub(crate) fn join_vm_on<H: Hart>(hart: &mut H, hgatp: u64, hw: &HwConfig, sstc: bool) {
    hart.set_csr(Csr::Hgatp, hgatp);
    hart.hfence_gvma_all();
    guest_csrs_on(hart, hw, sstc);
}

#[cfg(all(target_os = "none", target_arch = "riscv64"))]
pub(crate) use target::*;

#[cfg(all(target_os = "none", target_arch = "riscv64"))]
mod target {
    use crate::arch::riscv64::{csr, devices, entry};
    use crate::vm::StopReason;

    use super::super::csr as bits;
    use super::super::guest_isa::HwConfig;
    use super::super::{Csr, GuestContext, Hart, CTX_HOST_OFFSET};

    // The world switch's layout is the context's.
    const _: () = assert!(CTX_HOST_OFFSET == entry::CTX_HOST_OFFSET);
    const _: () = assert!(core::mem::size_of::<GuestContext>() >= entry::CTX_SIZE);

    /// This hart's CSR instructions and world switch, and on the boot hart the G-stage tables its
    /// bring-up installed (blocks of guest memory are mapped into them on first touch).
    pub(crate) struct HwHart(pub Option<&'static mut super::super::gstage::GStage<1>>);

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
                Csr::Sie => csr::sie(),
                Csr::Vsatp => csr::vsatp(),
                Csr::Vstimecmp => csr::vstimecmp(),
                Csr::Hstatus => csr::hstatus(),
                Csr::Hedeleg => csr::hedeleg(),
                Csr::Hideleg => csr::hideleg(),
                Csr::Hie => csr::hie(),
                Csr::Htimedelta => csr::htimedelta(),
                Csr::Hcounteren => csr::hcounteren(),
                Csr::Henvcfg => csr::henvcfg(),
                Csr::Hstateen0 => csr::hstateen0(),
                Csr::Hgatp => csr::hgatp(),
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
                Csr::Sie => csr::set_sie(v),
                Csr::Vsatp => csr::set_vsatp(v),
                Csr::Vstimecmp => csr::set_vstimecmp(v),
                Csr::Hstatus => csr::set_hstatus(v),
                Csr::Hedeleg => csr::set_hedeleg(v),
                Csr::Hideleg => csr::set_hideleg(v),
                Csr::Hie => csr::set_hie(v),
                Csr::Htimedelta => csr::set_htimedelta(v),
                Csr::Hcounteren => csr::set_hcounteren(v),
                Csr::Henvcfg => csr::set_henvcfg(v),
                Csr::Hstateen0 => csr::set_hstateen0(v),
                Csr::Hgatp => csr::set_hgatp(v),
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
        fn hfence_gvma_all(&mut self) {
            csr::hfence_gvma_all()
        }
        fn seed(&mut self) -> Option<u64> {
            Some(csr::seed())
        }
        fn map_zeroed_block(&mut self, block: u64) -> bool {
            let ok = self.0.as_mut().is_some_and(|g| g.map_block(block));
            if ok {
                csr::hfence_gvma_all();
            }
            ok
        }
    }

    /// A further hart's H-extension CSRs, set by itself before it parks ([`super::set_up_ap`]).
    pub(crate) fn ap_bring_up() {
        super::set_up_ap(&mut HwHart(None));
    }

    /// The boot hart's bring-up ([`super::set_up`]) on the static G-stage tables.
    pub(crate) fn bring_up(
        map: &crate::loader::GuestMap,
        hw: &HwConfig,
        sstc: bool,
    ) -> Result<HwHart, StopReason> {
        let gstage = super::super::GSTAGE
            .take()
            .ok_or(StopReason::Platform("G-stage tables already in use"))?;
        let mut hart = HwHart(None);
        super::set_up(&mut hart, gstage, map, hw, sstc)?;
        hart.0 = Some(gstage);
        Ok(hart)
    }

    /// This hart's guest CSRs in their start state ([`super::guest_csrs_on`]).
    pub(crate) fn guest_csrs(hw: &HwConfig, sstc: bool) {
        super::guest_csrs_on(&mut HwHart(None), hw, sstc);
    }

    /// This hart joins the VM ([`super::join_vm_on`]).
    pub(crate) fn join_vm(hgatp: u64, hw: &HwConfig, sstc: bool) {
        super::join_vm_on(&mut HwHart(None), hgatp, hw, sstc);
    }

    /// The G-stage root and VMID this hart runs the guest with (for the other harts to join).
    pub(crate) fn hgatp() -> u64 {
        csr::hgatp()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::guest_mem::GuestMemory;
    use crate::loader::{GuestMap, Perm};
    use crate::testing::hart::{hypercall, ModelHart};
    use crate::testing::ModelPlatform;
    use crate::vcpu;
    use crate::vm::Vm;
    use libvmm_abi::layout::riscv64::{WINDOW_BASE, WINDOW_SIZE};
    use libvmm_abi::Hypercall;
    use std::boxed::Box;

    fn window() -> GuestMap {
        GuestMap::whole(WINDOW_BASE, WINDOW_SIZE, Perm::ReadWrite)
    }

    const ISA: HwConfig = HwConfig {
        henvcfg: 0x8000_0000_0000_00F0,
        hstateen0: None,
        fp: true,
        vector: false,
    };

    fn set_up_on(
        hart: &mut ModelHart,
        hw: &HwConfig,
        sstc: bool,
    ) -> (Result<(), StopReason>, Box<GStage<1>>) {
        let mut gs = Box::new(GStage::<1>::new());
        let r = set_up(hart, &mut gs, &window(), hw, sstc);
        (r, gs)
    }

    #[test]
    fn bring_up_installs_the_g_stage_with_the_guests_vmid_then_fences() {
        let mut hart = ModelHart::default();
        let (r, gs) = set_up_on(&mut hart, &ISA, true);
        r.unwrap();
        assert_eq!(hart.csr(Csr::Hgatp), gs.hgatp(crate::config::GUEST_TAG));
        assert_eq!(hart.csr(Csr::Hgatp) >> 60, 8);
        assert_eq!(hart.hfences, 1);
        // The window is mapped, identity, and nothing outside it.
        assert!(gs.translate(WINDOW_BASE).is_some());
        assert!(gs.translate(WINDOW_BASE + WINDOW_SIZE).is_none());
    }

    #[test]
    fn bring_up_sets_the_h_extension_csrs_from_the_guests_isa() {
        let mut hart = ModelHart::default();
        hart.csrs
            .insert("sstatus", bits::SSTATUS_SIE | bits::SSTATUS_VS);
        set_up_on(&mut hart, &ISA, true).0.unwrap();
        assert_eq!(hart.csr(Csr::Hedeleg), bits::HEDELEG_GUEST);
        assert_eq!(hart.csr(Csr::Hideleg), bits::HIDELEG_GUEST);
        assert_eq!(hart.csr(Csr::Henvcfg), ISA.henvcfg);
        assert!(hart.csr(Csr::Hstatus) & bits::HSTATUS_VTW != 0);
        // FS on for a guest with F/D, VS off without V; the host's SIE cleared, SPP = S for SRET into VS.
        let sstatus = hart.csr(Csr::Sstatus);
        assert_eq!(
            sstatus & (bits::SSTATUS_FS | bits::SSTATUS_VS | bits::SSTATUS_SIE),
            bits::SSTATUS_FS_INITIAL
        );
        assert!(sstatus & bits::SSTATUS_SPP != 0);
        assert_eq!(hart.csr(Csr::Vsstatus), bits::SSTATUS_FS_INITIAL);
        // Sstc: nothing due until the guest says so; the host timer off, its interrupt enabled.
        assert_eq!(hart.csr(Csr::Vstimecmp), u64::MAX);
        assert_eq!(hart.host_timer, [u64::MAX]);
        // The host timer and host IPIs (kicks from the other vCPUs' harts) interrupt the VMM.
        assert_eq!(
            hart.csr(Csr::Sie),
            1 << bits::IRQ_S_TIMER | 1 << bits::IRQ_S_SOFT
        );
        // No Smstateen: hstateen0 is never touched (it would trap).
        assert!(!hart.written(Csr::Hstateen0));
    }

    /// A further hart joins the VM: the boot hart's hgatp (the shared G-stage tables), a fence for
    /// them, then the guest CSRs in their start state.
    #[test]
    fn a_further_hart_joins_the_vm_with_the_shared_tables() {
        let mut boot = ModelHart::default();
        let (r, _gs) = set_up_on(&mut boot, &ISA, true);
        r.unwrap();
        let mut ap = ModelHart::default();
        join_vm_on(&mut ap, boot.csr(Csr::Hgatp), &ISA, true);
        assert_eq!(ap.csr(Csr::Hgatp), boot.csr(Csr::Hgatp));
        assert_eq!(ap.hfences, 1);
        assert_eq!(ap.csr(Csr::Hedeleg), bits::HEDELEG_GUEST);
        assert_eq!(ap.csr(Csr::Vsatp), 0);
        assert_eq!(ap.csr(Csr::Vstimecmp), u64::MAX);
    }

    #[test]
    fn csrs_an_extension_lacks_are_left_alone() {
        let mut hart = ModelHart::default();
        let isa = HwConfig {
            hstateen0: Some(1 << 63),
            vector: true,
            ..ISA
        };
        set_up_on(&mut hart, &isa, false).0.unwrap();
        assert!(!hart.written(Csr::Vstimecmp));
        assert_eq!(hart.csr(Csr::Hstateen0), 1 << 63);
        assert!(hart.csr(Csr::Vsstatus) & bits::SSTATUS_VS_INITIAL != 0);
    }

    #[test]
    fn a_hart_without_sv39x4_is_refused() {
        let mut hart = ModelHart {
            no_sv39x4: true,
            ..Default::default()
        };
        let (r, _) = set_up_on(&mut hart, &ISA, true);
        assert_eq!(
            r,
            Err(StopReason::Unsupported("hgatp does not take Sv39x4"))
        );
        // Refused before any H-extension CSR is set up.
        assert!(!hart.written(Csr::Hedeleg) && hart.hfences == 0);
    }

    #[test]
    fn a_hart_without_vmids_is_refused() {
        let mut hart = ModelHart {
            vmidlen: Some(0),
            ..Default::default()
        };
        let (r, _) = set_up_on(&mut hart, &ISA, true);
        assert_eq!(
            r,
            Err(StopReason::Unsupported(
                "VMID 1 not implemented (VMIDLEN 0)"
            ))
        );
    }

    #[test]
    fn a_map_outside_the_g_stage_is_an_error_not_a_panic() {
        let mut hart = ModelHart::default();
        let mut gs = Box::new(GStage::<1>::new());
        let bad = GuestMap::whole(1 << 41, 0x20_0000, Perm::ReadWrite);
        assert_eq!(
            set_up(&mut hart, &mut gs, &bad, &ISA, true),
            Err(StopReason::Platform("G-stage mapping failed"))
        );
        assert!(!hart.written(Csr::Hgatp));
    }

    #[test]
    fn a_further_hart_sets_its_csrs_with_the_g_stage_off() {
        let mut hart = ModelHart::default();
        hart.csrs.insert("hgatp", 0x8000_0000_0000_1234);
        hart.csrs.insert("sie", 1 << bits::IRQ_S_TIMER);
        set_up_ap(&mut hart);
        assert_eq!(hart.csr(Csr::Hgatp), 0);
        assert_eq!(hart.csr(Csr::Sie), 0);
        assert_eq!(hart.csr(Csr::Hedeleg), bits::HEDELEG_GUEST);
        assert_eq!(hart.csr(Csr::Vsatp), 0);
    }

    #[test]
    fn bring_up_then_an_exit_hypercall_through_the_generic_loop() {
        let mut hart = ModelHart {
            script: vec![hypercall(Hypercall::Exit, &[5])],
            ..Default::default()
        };
        let (r, _gs) = set_up_on(&mut hart, &ISA, true);
        r.unwrap();
        let mut cpu = super::super::RiscvH::new(
            hart,
            WINDOW_BASE + 0x1_0000,
            0,
            WINDOW_BASE,
            WINDOW_BASE + 0x2000,
            WINDOW_BASE + 0x8_0000,
        );
        let mut buf = vec![0u8; 0x1000];
        let mut vm = Vm::new(
            GuestMemory::new(WINDOW_BASE, &mut buf),
            ModelPlatform::default(),
        );
        assert_eq!(vcpu::run(&mut cpu, &mut vm), StopReason::PayloadExit(5));
        // The guest entered at its entry point with the G-stage the bring-up installed.
        assert_eq!(cpu.hart().entries[0].2, WINDOW_BASE + 0x1_0000);
        assert_eq!(cpu.hart().csr(Csr::Hgatp) >> 60, 8);
    }
}
