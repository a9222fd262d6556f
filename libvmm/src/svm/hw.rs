//! SVM bring-up on this CPU, over the [`SvmHw`] trait: the support checks, EFER.SVME and the host save
//! area, nested tables for the guest window (and a self-check that no VMM address is reachable through
//! them), permission maps that deny everything, the VMCB, then the generic run loop. The trait's real
//! implementation ([`RealSvm`], target only) is a thin layer over `arch::x86_64::svm`; the host tests run
//! the same bring-up and exit path against `testing::svm::ModelSvm`.
#![forbid(unsafe_code)]

use crate::vcpu;
use crate::vm::{Platform, StopReason, Vm};
use crate::x86::gprs::Gprs;
use crate::x86::guest_setup::InitialState;

use super::vcpu::SvmVcpu;
use super::vmcb::Vmcb;
use super::SvmStorage;

/// The SVM hardware under the backend: the instructions and MSRs bring-up and the exit path use.
pub(crate) trait SvmHw {
    fn cpuid(&self, leaf: u32, subleaf: u32) -> [u32; 4];
    fn rdmsr(&self, msr: u32) -> u64;
    /// Sets EFER.SVME and VM_HSAVE_PA.
    fn enable(&mut self, host_save_pa: u64);
    /// Whether EFER.SVME is set in the hardware now.
    fn svme_is_set(&self) -> bool;
    /// The physical address of a VMM object.
    fn pa<T>(&self, r: &T) -> u64;
    /// VMRUN: runs the guest until the next #VMEXIT, GPRs other than RAX/RSP through `gprs`.
    fn run(&mut self, gprs: &mut Gprs, vmcb: &mut Vmcb);
    /// VMLOAD / VMSAVE of the guest's FS/GS/TR/LDTR/syscall state.
    fn vmload(&mut self, vmcb: &Vmcb);
    fn vmsave(&mut self, vmcb: &mut Vmcb);
    /// Sets the host's CR4.OSXSAVE when the CPU has XSAVE (so XSETBV works in the VMM).
    fn enable_xsave(&mut self) -> bool;
    /// XSETBV of XCR0 with a value the policy checked (for the guest: XCR0 is not in the VMCB).
    fn xsetbv(&mut self, xcr0: u64);
}

/// Brings SVM up with `hw` on `st` and runs the guest until it stops. `vmm_addrs` are VMM addresses
/// (image, stacks) the nested tables must not reach.
pub(crate) fn bring_up_and_run<P: Platform, H: SvmHw>(
    vm: &mut Vm<'_, P>,
    state: &InitialState,
    mut hw: H,
    st: &mut SvmStorage,
    vmm_addrs: &[u64],
) -> StopReason {
    if let Err(why) = support(&hw) {
        return StopReason::Unsupported(why);
    }
    // AVIC: decided by KVM's policy and reported. What runs is "off" (no AVIC backing page is set up;
    // TCG offers no AVIC to test one on): the x2APIC MSR interception is built by the policy's own
    // function for that mode, so every x2APIC access reaches the virtual x2APIC.
    let avic = super::avic::decide(
        super::avic::AvicParam::Auto,
        &super::avic::HostFacts::from_cpuid(|l, s| hw.cpuid(l, s), true),
    );
    crate::vmm_print!(
        vm.platform.console(),
        "libvmm: AVIC policy: {:?}\n",
        avic.mode
    );
    st.msrpm.deny_all();
    let active = super::avic::AvicMode::Off("no AVIC backing page (emulated x2APIC)");
    super::avic::apply_x2apic_msr_policy(&mut st.msrpm, active, false);
    crate::vmm_print!(
        vm.platform.console(),
        "libvmm: AVIC active: off: x2APIC MSRs 0x800-0x8ff intercepted, emulated by the virtual x2APIC\n"
    );
    st.iopm.deny_all();
    hw.enable(hw.pa(&st.host_save));
    // A guest's checked XSETBV is carried out by the VMM, which needs CR4.OSXSAVE for it.
    hw.enable_xsave();
    // The window with the guest's W^X map (payload text r-x, read-only data r--, the rest rw- NX).
    if st.npt.map(&vm.map, |t| hw.pa(t)).is_err() {
        return StopReason::Platform("nested tables cannot map the guest memory map");
    }
    // Guest SMP: the one low page a STARTUP IPI names, read+execute onto its window page.
    {
        use libvmm_abi::layout::x86_64::{SIPI_PAGE, SIPI_PAGE_OFFSET};
        let backing = vm.mem.base() + SIPI_PAGE_OFFSET;
        if vm.mem.base() == libvmm_abi::layout::x86_64::WINDOW_BASE
            && st
                .npt
                .map_sipi_page(SIPI_PAGE, backing, |t| hw.pa(t))
                .is_err()
        {
            return StopReason::Platform("nested tables cannot map the SIPI page");
        }
    }
    // Guest SMP: every block still deferred (zero on first touch) is zeroed and mapped now, before any AP
    // can start (the APs wait for the links published below), through the VM's one lazy state: the APs
    // then never fault on a block, and map nothing into the nested tables themselves.
    if vm.smp.cpu_count() > 1
        && !vm
            .lazy
            .touch_all(&vm.mem, |block| st.npt.map_block(block, |t| hw.pa(t)))
    {
        return StopReason::Platform("nested tables cannot map guest memory");
    }
    if vm.smp.cpu_count() > 1 {
        crate::vmm_print!(
            vm.platform.console(),
            "libvmm: guest SMP: the rest of guest memory zeroed and mapped now, before any AP starts\n"
        );
    }

    // Self-check: no VMM structure is reachable through the nested tables.
    let tables = [&st.npt.pml4, &st.npt.pdpt, &st.npt.pd, &st.npt.low];
    let own = [hw.pa(&st.guest_vmcb), hw.pa(&st.host_save)];
    if own
        .into_iter()
        .chain(tables.into_iter().chain(&st.npt.pt).map(|t| hw.pa(t)))
        .chain(vmm_addrs.iter().copied())
        .any(|a| st.npt.translate(a, |t| hw.pa(t)).is_some())
    {
        return StopReason::Platform("nested tables would expose VMM memory");
    }
    // And the permission maps deny what the policy must see: every MSR and port exits.
    if !st.msrpm.intercepts(crate::x86::msr::EFER, true) || !st.iopm.intercepts(0xF4) {
        return StopReason::Platform("permission maps do not intercept EFER and port I/O");
    }

    let links = super::VmcbLinks {
        iopm_pa: hw.pa(&st.iopm),
        msrpm_pa: hw.pa(&st.msrpm),
        ncr3: hw.pa(&st.npt.pml4),
    };
    super::init_vmcb(&mut st.guest_vmcb, state, links);
    publish_links(links);
    // The instruction emulator for this guest (no virtual PMU on SVM: see `x86::pmu`). #UD is
    // intercepted only for forced emulation, so the default exit path is unchanged.
    let max_pa = if hw.cpuid(0x8000_0000, 0)[0] >= 0x8000_0008 {
        hw.cpuid(0x8000_0008, 0)[0] as u8
    } else {
        36
    };
    vm.emu = crate::vm::EmuState::new(max_pa, vm.emu.force, crate::x86::pmu::Pmu::new(false, 0));
    if vm.emu.force {
        st.guest_vmcb.control.intercept_exceptions |= 1 << 6;
    }
    hw.vmload(&st.guest_vmcb);
    let mut cpu = SvmVcpu {
        hw,
        vmcb: &mut st.guest_vmcb,
        gprs: super::initial_gprs(state),
        npt: Some(&mut st.npt),
    };
    let stop = vcpu::run(&mut cpu, vm);
    if !cpu.hw.svme_is_set() {
        return StopReason::Platform("EFER.SVME was cleared under the VMM");
    }
    stop
}

/// Hands the VM's nested tables and permission maps to the APs (guest SMP): they wait for these.
fn publish_links(links: super::VmcbLinks) {
    #[cfg(all(target_os = "none", target_arch = "x86_64", feature = "svm"))]
    VM_LINKS.set(links);
    #[cfg(not(all(target_os = "none", target_arch = "x86_64", feature = "svm")))]
    let _ = links;
}

/// The VM's shared structures (nested tables, permission maps), published by the boot CPU's bring-up.
#[cfg(all(target_os = "none", target_arch = "x86_64", feature = "svm"))]
pub(crate) static VM_LINKS: crate::arch::Published<super::VmcbLinks> =
    crate::arch::Published::new();

/// Runs vCPU `vm.cpu` (>= 1) on this AP with its own VMCB over the VM's shared nested tables and
/// permission maps (`links`), until the VM stops. `wait` blocks until a STARTUP IPI reaches the vCPU in
/// wait-for-SIPI and returns its vector (`None`: the VM stopped meanwhile). Each start is a fresh
/// real-mode state at `vector << 12` ([`super::init_vmcb_sipi`]) with the APIC after INIT; an INIT to
/// the running vCPU ends its loop with [`StopReason::VcpuOff`] and it waits again.
pub(crate) fn run_ap<P: Platform, H: SvmHw>(
    vm: &mut Vm<'_, P>,
    hw: &mut H,
    vmcb: &mut Vmcb,
    links: super::VmcbLinks,
    mut wait: impl FnMut(&mut Vm<'_, P>) -> Option<u8>,
) -> StopReason {
    let max_pa = if hw.cpuid(0x8000_0000, 0)[0] >= 0x8000_0008 {
        hw.cpuid(0x8000_0008, 0)[0] as u8
    } else {
        36
    };
    vm.emu = crate::vm::EmuState::new(max_pa, vm.emu.force, crate::x86::pmu::Pmu::new(false, 0));
    loop {
        let Some(vector) = wait(vm) else {
            return StopReason::StoppedElsewhere;
        };
        super::init_vmcb_sipi(vmcb, vector, links);
        if vm.emu.force {
            vmcb.control.intercept_exceptions |= 1 << 6;
        }
        vm.reset_apic(max_pa);
        hw.vmload(vmcb);
        // No nested tables of its own: the boot vCPU zeroed and mapped every block before any AP ran.
        let mut cpu = SvmVcpu {
            hw: &mut *hw,
            vmcb: &mut *vmcb,
            gprs: Gprs::default(),
            npt: None,
        };
        match vcpu::run(&mut cpu, vm) {
            StopReason::VcpuOff => vm.smp.set_off(vm.cpu),
            stop => return stop,
        }
    }
}

/// Whether this CPU can run the SVM backend (CPUID, and VM_CR where SVM is offered), naming what is
/// missing: the boot CPU asks before it starts any AP (`boot::x86_64`), each AP before it turns SVM on.
pub(crate) fn support<H: SvmHw>(hw: &H) -> Result<(), &'static str> {
    let vm_cr = if hw.cpuid(0x8000_0001, 0)[2] & (1 << 2) != 0 {
        hw.rdmsr(crate::x86::msr::VM_CR)
    } else {
        0
    };
    super::check_support(|l, s| hw.cpuid(l, s), vm_cr)
}

/// [`support`] on this CPU.
#[cfg(all(target_os = "none", target_arch = "x86_64", feature = "svm"))]
pub(crate) fn boot_cpu_support() -> Result<(), &'static str> {
    support(&RealSvm)
}

/// Turns SVM on on an AP with its own storage: the same support checks as the boot CPU, EFER.SVME and
/// VM_HSAVE_PA at the AP's own host save area. The VMCB stays zeroed until guest SMP gives it a vCPU.
pub(crate) fn enable_on_ap<H: SvmHw>(
    hw: &mut H,
    st: &mut super::SvmCpuStorage,
) -> Result<(), &'static str> {
    support(hw)?;
    st.vmcb = Vmcb::zeroed();
    hw.enable(hw.pa(&st.host_save));
    hw.enable_xsave();
    if !hw.svme_is_set() {
        return Err("EFER.SVME did not stay set");
    }
    Ok(())
}

/// Brings SVM up on AP `cpu` (1..MAX_CPUS) with its element of the per-CPU storage, which it keeps
/// for its vCPU (guest SMP).
#[cfg(all(target_os = "none", target_arch = "x86_64", feature = "svm"))]
pub(crate) fn ap_bring_up(cpu: usize) -> Result<&'static mut super::SvmCpuStorage, &'static str> {
    let st = cpu
        .checked_sub(1)
        .and_then(|i| super::AP_STORAGE.get(i))
        .and_then(|s| s.take())
        .ok_or("no SVM storage for this CPU (taken, or beyond MAX_CPUS)")?;
    enable_on_ap(&mut RealSvm, st)?;
    Ok(st)
}

/// Brings SVM up on this CPU with its static storage and runs the guest until it stops.
#[cfg(all(target_os = "none", target_arch = "x86_64", feature = "svm"))]
pub(crate) fn boot<P: Platform>(
    vm: &mut Vm<'_, P>,
    state: &InitialState,
    options: &crate::cmdline::Options<'_>,
) -> StopReason {
    use crate::arch::x86_64::entry;
    vm.emu.force = options.force_emulation;
    let Some(st) = super::STORAGE.take() else {
        return StopReason::Platform("SVM storage already in use");
    };
    let (img_start, img_end) = entry::image_range();
    let vmm = [img_start, img_end - 1, entry::stack_address()];
    // Through a borrow, like the APs' `run_ap`: one instantiation of the run loop for every vCPU (a
    // second one, for `RealSvm` by value, grew the image by 27 KB and cost the APIC exits about 50
    // emulated instructions each).
    bring_up_and_run(vm, state, &mut RealSvm, st, &vmm)
}

/// The same hardware through a borrow (an AP's vCPU is rebuilt at every start over one `SvmHw`).
impl<H: SvmHw> SvmHw for &mut H {
    fn cpuid(&self, leaf: u32, subleaf: u32) -> [u32; 4] {
        (**self).cpuid(leaf, subleaf)
    }
    fn rdmsr(&self, msr: u32) -> u64 {
        (**self).rdmsr(msr)
    }
    fn enable(&mut self, host_save_pa: u64) {
        (**self).enable(host_save_pa)
    }
    fn svme_is_set(&self) -> bool {
        (**self).svme_is_set()
    }
    fn pa<T>(&self, r: &T) -> u64 {
        (**self).pa(r)
    }
    #[inline(always)]
    fn run(&mut self, gprs: &mut Gprs, vmcb: &mut Vmcb) {
        (**self).run(gprs, vmcb)
    }
    fn vmload(&mut self, vmcb: &Vmcb) {
        (**self).vmload(vmcb)
    }
    fn vmsave(&mut self, vmcb: &mut Vmcb) {
        (**self).vmsave(vmcb)
    }
    fn enable_xsave(&mut self) -> bool {
        (**self).enable_xsave()
    }
    fn xsetbv(&mut self, xcr0: u64) {
        (**self).xsetbv(xcr0)
    }
}

/// The SVM instructions of this CPU.
#[cfg(all(target_os = "none", target_arch = "x86_64", feature = "svm"))]
#[derive(Clone, Copy)]
pub(crate) struct RealSvm;

#[cfg(all(target_os = "none", target_arch = "x86_64", feature = "svm"))]
impl SvmHw for RealSvm {
    fn cpuid(&self, leaf: u32, subleaf: u32) -> [u32; 4] {
        crate::arch::x86_64::cpu::cpuid(leaf, subleaf)
    }
    fn rdmsr(&self, msr: u32) -> u64 {
        crate::arch::x86_64::cpu::rdmsr(msr)
    }
    fn enable(&mut self, host_save_pa: u64) {
        crate::arch::x86_64::svm::enable(host_save_pa)
    }
    fn svme_is_set(&self) -> bool {
        crate::arch::x86_64::svm::svme_is_set()
    }
    fn pa<T>(&self, r: &T) -> u64 {
        crate::arch::x86_64::svm::pa(r)
    }
    #[inline(always)]
    fn run(&mut self, gprs: &mut Gprs, vmcb: &mut Vmcb) {
        crate::arch::x86_64::svm::run(gprs, vmcb)
    }
    fn vmload(&mut self, vmcb: &Vmcb) {
        crate::arch::x86_64::svm::vmload(vmcb)
    }
    fn vmsave(&mut self, vmcb: &mut Vmcb) {
        crate::arch::x86_64::svm::vmsave(vmcb)
    }
    fn enable_xsave(&mut self) -> bool {
        crate::arch::x86_64::cpu::enable_xsave()
    }
    fn xsetbv(&mut self, xcr0: u64) {
        crate::arch::x86_64::cpu::xsetbv0(xcr0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::guest_mem::GuestMemory;
    use crate::loader::Loaded;
    use crate::svm::decode::code;
    use crate::testing::svm::{ModelSvm, SvmExit};
    use crate::testing::ModelPlatform;
    use crate::x86::guest_setup::build;
    use libvmm_abi::layout::x86_64::WINDOW_BASE;
    use libvmm_abi::Hypercall;

    fn run(model: ModelSvm) -> (StopReason, std::vec::Vec<u8>) {
        let mut buf = vec![0u8; 0x10_0000];
        let mut mem = GuestMemory::new(WINDOW_BASE, &mut buf);
        let state = build(
            &mut mem,
            &Loaded {
                entry: WINDOW_BASE + 0x1_0000,
                stack_top: WINDOW_BASE + 0x8_0000,
                boot_info: WINDOW_BASE,
            },
        )
        .unwrap();
        let mut st = Box::new(SvmStorage::zeroed());
        let mut vm = Vm::new(mem, ModelPlatform::default());
        let stop = bring_up_and_run(&mut vm, &state, model, &mut st, &[]);
        (stop, vm.platform.console.0)
    }

    #[test]
    fn bring_up_then_cpuid_and_exit_hypercall_through_the_generic_loop() {
        let cpuid = SvmExit {
            code: code::CPUID,
            rax: 0x4000_0000,
            ..Default::default()
        };
        let mut exit = SvmExit {
            code: code::VMMCALL,
            rax: Hypercall::Exit as u64,
            ..Default::default()
        };
        exit.gprs.rdi = 7;
        let model = ModelSvm {
            script: vec![cpuid, exit],
            ..Default::default()
        };
        let (stop, out) = run(model);
        assert_eq!(stop, StopReason::PayloadExit(7));
        assert!(String::from_utf8(out).unwrap().contains("AVIC policy"));
    }

    /// Zero on first touch, end to end on the model: boot leaves the blocks above the payload stale and
    /// unmapped; the guest's first write there (a not-present NPF) has the loop zero the block and the
    /// backend map it, and the guest goes on at the same instruction; the next block stays untouched.
    #[test]
    fn a_first_touch_zeroes_and_maps_one_block_and_the_guest_goes_on() {
        const MIB: u64 = 1 << 20;
        let mut buf = vec![0xAAu8; 8 << 20];
        let mut mem = GuestMemory::new(WINDOW_BASE, &mut buf);
        mem.fill(WINDOW_BASE, 2 * MIB, 0).unwrap();
        let state = build(
            &mut mem,
            &Loaded {
                entry: WINDOW_BASE + 0x1_0000,
                stack_top: WINDOW_BASE + 8 * MIB,
                boot_info: WINDOW_BASE,
            },
        )
        .unwrap();
        let mut map =
            crate::loader::GuestMap::whole(WINDOW_BASE, 8 * MIB, crate::loader::Perm::ReadWrite);
        assert_eq!(map.defer_from(WINDOW_BASE + 0x2_0000), 3);
        let touched = WINDOW_BASE + 4 * MIB + 0x888;
        let npf = SvmExit {
            code: code::NPF,
            info1: 1 << 1, // a write, page not present
            info2: touched,
            ..Default::default()
        };
        let mut exit = SvmExit {
            code: code::VMMCALL,
            rax: Hypercall::Exit as u64,
            ..Default::default()
        };
        exit.gprs.rdi = 0;
        let mut st = Box::new(SvmStorage::zeroed());
        let mut vm = Vm::new(mem, ModelPlatform::default());
        vm.map = map;
        vm.lazy = crate::lazy::LazyBlocks::armed_for_test(&map);
        let model = ModelSvm {
            script: vec![npf, exit],
            ..Default::default()
        };
        let pa = |t: &super::super::npt::Table| t as *const _ as u64;
        let stop = bring_up_and_run(&mut vm, &state, model, &mut st, &[]);
        assert_eq!(stop, StopReason::PayloadExit(0));
        let block = WINDOW_BASE + 4 * MIB;
        assert!(vm
            .mem
            .slice(block, 2 * MIB)
            .unwrap()
            .iter()
            .all(|&b| b == 0));
        assert_eq!(
            vm.mem.slice(block + 2 * MIB, 1).unwrap(),
            [0xAA],
            "untouched"
        );
        assert!(vm.lazy.is_mapped(touched) && vm.lazy.is_stale(block + 2 * MIB));
        let tr = st
            .npt
            .translate(touched, pa)
            .expect("mapped after the first touch");
        assert!(tr.writable && !tr.executable);
        assert_eq!(st.npt.translate(block + 2 * MIB, pa), None);
        assert_eq!(st.npt.translate(WINDOW_BASE + 2 * MIB, pa), None);
        // Not a violation: the guest was re-entered (two VMRUNs) and exited normally.
        assert_eq!(vm.exits, 2);
    }

    #[test]
    fn an_ap_vcpu_starts_in_real_mode_from_a_sipi_and_an_init_sends_it_back_to_wait() {
        let mut buf = vec![0u8; 0x10_0000];
        let mut vm = crate::testing::smp_vm(WINDOW_BASE, &mut buf, 2, 1);
        let shared = vm.smp;
        // Wait-for-SIPI at reset: the STARTUP is accepted.
        assert!(shared.post_sipi(1, 0x08));
        let mut hw = ModelSvm {
            script: vec![
                SvmExit {
                    code: code::CPUID,
                    rax: 1,
                    ..Default::default()
                },
                SvmExit {
                    code: code::INTR,
                    ..Default::default()
                },
            ],
            svme: true,
            ..Default::default()
        };
        vm.platform.host_irq = hw.host_irq.clone();
        let mut vmcb = Box::new(Vmcb::zeroed());
        let links = super::super::VmcbLinks {
            iopm_pa: 0x1000,
            msrpm_pa: 0x4000,
            ncr3: 0x6000,
        };
        let mut starts = 0;
        let stop = run_ap(&mut vm, &mut hw, &mut vmcb, links, |vm| {
            vm.smp.take_init(vm.cpu);
            starts += 1;
            let sipi = vm.smp.take_sipi(vm.cpu);
            if sipi.is_some() {
                // Another vCPU's INIT once it runs: its first host event takes it.
                assert!(
                    !vm.smp.post_sipi(1, 0x09),
                    "SIPI to a running vCPU is ignored"
                );
                assert!(vm.smp.post_init(1));
            }
            sipi
        });
        assert_eq!(stop, StopReason::StoppedElsewhere);
        assert_eq!(starts, 2, "started once, then waited again after the INIT");
        // The INTR exit's host interrupt (the kick that brought the INIT) was taken, once.
        assert_eq!(hw.host_irq.taken(), 1);
        assert!(!hw.host_irq.pending());
        assert_eq!(shared.status(1), Some(crate::smp::RunState::Off));
        // Real mode at 0x08 << 12: RIP 0, CR0 at its reset value, then CPUID leaf 1 with this vCPU's
        // APIC ID and the vCPU count.
        assert_eq!(hw.entries[0].0, 0);
        assert_eq!(hw.crs[0].0, 0x6000_0010);
        assert_eq!(vmcb.save.cs.base, 0x8000);
        assert_eq!(hw.entries[1].2 >> 16 & 0xFFFF, 1 << 8 | 2);
        assert_eq!(
            vm.irq.apic.read_msr(0x802, 0),
            Err(crate::x86::apic::Gp),
            "xAPIC mode after INIT"
        );
    }

    #[test]
    fn an_ap_enables_svm_with_its_own_host_save_area() {
        let mut a = Box::new(super::super::SvmCpuStorage::zeroed());
        let mut b = Box::new(super::super::SvmCpuStorage::zeroed());
        let mut hw = ModelSvm::default();
        enable_on_ap(&mut hw, &mut a).unwrap();
        assert!(hw.svme);
        assert_eq!(hw.host_save_pa, a.host_save.as_ptr() as u64);
        let mut hw2 = ModelSvm::default();
        enable_on_ap(&mut hw2, &mut b).unwrap();
        assert_ne!(hw2.host_save_pa, hw.host_save_pa);
        let mut no = ModelSvm {
            no_svm: true,
            ..Default::default()
        };
        assert!(enable_on_ap(&mut no, &mut a)
            .unwrap_err()
            .contains("ECX bit 2"));
        assert!(!no.svme);
    }

    #[test]
    fn support_is_asked_without_enabling_anything() {
        let ok = ModelSvm::default();
        assert_eq!(support(&ok), Ok(()));
        assert!(!ok.svme);
        let no = ModelSvm {
            no_svm: true,
            ..Default::default()
        };
        assert!(support(&no).unwrap_err().contains("ECX bit 2"));
        assert!(!no.svme);
    }

    #[test]
    fn a_cpu_without_svm_is_refused_before_anything_is_enabled() {
        let (stop, _) = run(ModelSvm {
            no_svm: true,
            ..Default::default()
        });
        assert!(matches!(stop, StopReason::Unsupported(w) if w.contains("ECX bit 2")));
    }

    #[test]
    fn a_refused_vmrun_is_an_entry_failure_not_a_guest_exit() {
        let (stop, _) = run(ModelSvm {
            script: vec![SvmExit {
                code: code::INVALID,
                ..Default::default()
            }],
            ..Default::default()
        });
        assert!(matches!(
            stop,
            StopReason::Backend(crate::backend::BackendError::EntryFailed { .. })
        ));
    }
}
