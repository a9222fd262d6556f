//! VMX bring-up on this CPU, over the [`VmxOps`] trait: VMX in CPUID, IA32_FEATURE_CONTROL, the
//! capability MSRs, the CR0/CR4 fixed bits, VMXON, the one VMCS made current, EPT for the guest window
//! (and a self-check that no VMM address is reachable through it), INVEPT/INVVPID, the controls adjusted
//! to the capabilities, host and guest state, then the generic run loop. The trait's real implementation
//! ([`HwVmcs`], target only) is a thin layer over `arch::x86_64::vmx`; the host tests run the same
//! bring-up and exit path against `testing::vmcs::ModelVmcs`.
#![forbid(unsafe_code)]

use crate::cmdline::Options;
use crate::vcpu;
use crate::vm::{Platform, StopReason, Vm};
use crate::x86::guest_setup::InitialState;

use super::caps::{self, msr, Caps, CR4_VMXE};
use super::ept::{self, MmuRole, MT_WB};
use super::pages::{VmxCpuPages, VmxPages};
use super::setup::{self, Addrs, HostState, Tweak};
use super::vcpu::{EntryDiagnosis, Vmx};
use super::vmcs::{instruction_error_name, Vmcs, VmxOps};

use crate::x86::msr::{
    EFER as MSR_EFER, FS_BASE as MSR_FS_BASE, GS_BASE as MSR_GS_BASE, IA32_PAT as MSR_PAT,
};

/// What every CPU checks before VMXON: VMX in CPUID, IA32_FEATURE_CONTROL locked with VMX outside SMX
/// on (written so when firmware left it unlocked), the capability MSRs, a VMXON region that fits its
/// page. Returns the capabilities, or why VMX cannot be turned on.
pub(crate) fn read_caps<H: VmxOps>(hw: &mut H) -> Result<Caps, &'static str> {
    if hw.cpuid(1, 0)[2] & (1 << 5) == 0 {
        return Err(caps::VmxonBlocker::NoVmxCpuid.name());
    }
    match caps::feature_control_update(hw.rdmsr(msr::IA32_FEATURE_CONTROL)) {
        Ok(None) => {}
        Ok(Some(v)) => hw.wrmsr(msr::IA32_FEATURE_CONTROL, v),
        Err(e) => return Err(e.name()),
    }
    let max_pa = if hw.cpuid(0x8000_0000, 0)[0] >= 0x8000_0008 {
        hw.cpuid(0x8000_0008, 0)[0] as u8
    } else {
        36
    };
    let caps = Caps::read(|m| hw.rdmsr(m), max_pa);
    if caps.region_size() > 4096 {
        return Err(caps::VmxonBlocker::RegionTooLarge.name());
    }
    Ok(caps)
}

/// VMXON with the CR0/CR4 fixed bits and CR4.VMXE (and CR4.OSXSAVE: a guest's checked XSETBV is
/// carried out by the VMM), then VMCLEAR and VMPTRLD of the VMCS at `vmcs_pa`.
fn enter_vmx_operation<H: VmxOps>(
    hw: &mut H,
    caps: &Caps,
    vmxon_pa: u64,
    vmcs_pa: u64,
) -> Result<(), &'static str> {
    hw.set_host_cr0(caps.fix_cr0(hw.host_cr0()));
    hw.set_host_cr4(caps.fix_cr4(hw.host_cr4() | CR4_VMXE));
    hw.enable_xsave();
    if hw.vmxon(vmxon_pa).is_err() {
        return Err("VMXON failed");
    }
    if hw.vmclear(vmcs_pa).is_err() || hw.vmptrld(vmcs_pa).is_err() {
        return Err("VMCLEAR/VMPTRLD of the VMCS failed");
    }
    Ok(())
}

/// Enters VMX operation on an AP with its own pages (VMXON region, VMCS), and makes its VMCS current:
/// the same CPUID, IA32_FEATURE_CONTROL, capability and CR0/CR4 fixed-bit steps as the boot CPU. The
/// VMCS is filled when guest SMP gives this CPU a vCPU.
pub(crate) fn enable_on_ap<H: VmxOps>(
    hw: &mut H,
    pages: &mut VmxCpuPages,
) -> Result<(), &'static str> {
    let caps = read_caps(hw)?;
    pages.reset(caps.revision_id());
    let (vmxon_pa, vmcs_pa) = (hw.pa(&pages.vmxon), hw.pa(&pages.vmcs));
    enter_vmx_operation(hw, &caps, vmxon_pa, vmcs_pa)
}

/// Enters VMX operation on AP `cpu_index` (1..MAX_CPUS) with its own VMXON region and VMCS.
#[cfg(all(feature = "vmx", target_os = "none"))]
pub(crate) fn ap_bring_up(cpu_index: usize) -> Result<(), &'static str> {
    let pages = cpu_index
        .checked_sub(1)
        .and_then(|i| super::AP_STORAGE.get(i))
        .and_then(|s| s.take())
        .ok_or("no VMX pages for this CPU (taken, or beyond MAX_CPUS)")?;
    enable_on_ap(&mut HwVmcs { vapic: () }, pages)
}

/// Brings VMX up on this CPU with its static storage and runs the guest until it stops.
#[cfg(all(feature = "vmx", target_os = "none"))]
pub(crate) fn boot<P: Platform>(
    vm: &mut Vm<'_, P>,
    state: &InitialState,
    options: &Options<'_>,
) -> StopReason {
    use crate::arch::x86_64::entry;
    let Some(st) = super::STORAGE.take() else {
        return StopReason::Platform("VMX storage already in use");
    };
    let (img_start, img_end) = entry::image_range();
    let vmm = [img_start, img_end - 1, entry::stack_address()];
    let hw = HwVmcs {
        vapic: &st.virtual_apic,
    };
    bring_up_and_run(vm, state, options, hw, &mut st.pages, &vmm)
}

/// Brings VMX up with `hw` on `pages` and runs the guest until it stops. `vmm_addrs` are VMM addresses
/// (image, stacks) EPT must not reach.
pub(crate) fn bring_up_and_run<P: Platform, H: VmxOps>(
    vm: &mut Vm<'_, P>,
    state: &InitialState,
    options: &Options<'_>,
    hw: H,
    pages: &'static mut VmxPages,
    vmm_addrs: &[u64],
) -> StopReason {
    let mut cpu = match bring_up(vm, state, options, hw, pages, vmm_addrs) {
        Ok(cpu) => cpu,
        Err(stop) => return stop,
    };
    // Blocks of guest memory are mapped into these tables on first touch.
    cpu.ept = Some(&mut pages.ept);
    let stop = run(&mut cpu, vm);
    report(vm, cpu.diagnosis);
    stop
}

/// The run loop in a function of its own, apart from bring-up: inlined into it, the loop's registers
/// were allocated around bring-up's and the CPUID round trip took two instructions more (bench).
#[inline(never)]
fn run<P: Platform, H: VmxOps>(cpu: &mut Vmx<H>, vm: &mut Vm<'_, P>) -> StopReason {
    vcpu::run(cpu, vm)
}

/// Everything before the run loop: the vCPU with its VMCS written and made current, or why not.
pub(crate) fn bring_up<P: Platform, H: VmxOps>(
    vm: &mut Vm<'_, P>,
    state: &InitialState,
    options: &Options<'_>,
    mut hw: H,
    pages: &mut VmxPages,
    vmm_addrs: &[u64],
) -> Result<Vmx<H>, StopReason> {
    let caps = read_caps(&mut hw).map_err(StopReason::Unsupported)?;
    let (opts, tweak) = setup::debug_options(options);
    if tweak != Tweak::None || opts.skip_checks {
        crate::vmm_print!(
            vm.platform.console(),
            "libvmm: vmx debug: configuration {:?}, software checks {}\n",
            tweak,
            if opts.skip_checks { "BYPASSED" } else { "on" }
        );
    }

    // No APICv: the guest's x2APIC is the virtual one, every x2APIC MSR exits (the MSR bitmap denies
    // all), on Bochs as on hardware that would offer virtual-interrupt delivery.
    crate::vmm_print!(
        vm.platform.console(),
        "libvmm: APICv off: x2APIC emulated\n"
    );
    pages.reset(caps.revision_id());
    let (vmxon_pa, vmcs_pa) = (hw.pa(&pages.vmxon), hw.pa(&pages.vmcs));
    // The host CR4 is read into the VMCS below, after VMXON set VMXE and OSXSAVE.
    if let Err(why) = enter_vmx_operation(&mut hw, &caps, vmxon_pa, vmcs_pa) {
        return Err(StopReason::Unsupported(why));
    }

    // EPT for the window only; EPTP from the root's role.
    let needed = caps::ept_cap::WALK_4 | caps::ept_cap::WB | caps::ept_cap::PAGE_2M;
    if caps.ept_vpid & needed != needed {
        return Err(StopReason::Unsupported(
            "EPT lacks 4-level walks, write-back or 2 MiB pages",
        ));
    }
    let role = MmuRole {
        level: 4,
        ad_disabled: caps.ept_vpid & caps::ept_cap::AD == 0,
        memtype: MT_WB,
    };
    // The window with the guest's W^X map (payload text r-x, read-only data r--, the rest rw-).
    let root = match pages.ept.build(role, &vm.map, H::pa_ptr) {
        Ok(root) => root,
        Err(_) => return Err(StopReason::Platform("EPT cannot map the guest memory map")),
    };
    // Self-check: no VMM structure is reachable through EPT.
    let own = [vmcs_pa, hw.pa(&pages.ept), root.hpa];
    let tables = pages.ept.pt.iter().map(|t| hw.pa(t));
    if own
        .into_iter()
        .chain(vmm_addrs.iter().copied())
        .chain(tables)
        .any(|a| matches!(pages.ept.walk(root.hpa, a, H::pa_ptr), Ok(Some(_)) | Err(_)))
    {
        return Err(StopReason::Platform("EPT would expose VMM memory"));
    }

    // Nothing cached from before this VMM may survive into the guest: the EPT root and VPID are new.
    if caps.ept_vpid & caps::ept_cap::INVEPT_ALL_CONTEXT != 0 && hw.invept_all().is_err() {
        return Err(StopReason::Unsupported("INVEPT all-context failed"));
    }
    if caps.ept_vpid & caps::ept_cap::INVVPID_ALL_CONTEXT != 0 && hw.invvpid_all().is_err() {
        return Err(StopReason::Unsupported("INVVPID all-context failed"));
    }

    let Some(virtual_apic) = hw.virtual_apic_pa() else {
        return Err(StopReason::Platform("no virtual-APIC page for this CPU"));
    };
    let addrs = Addrs {
        io_bitmap_a: hw.pa(&pages.io_bitmap_a),
        io_bitmap_b: hw.pa(&pages.io_bitmap_b),
        msr_bitmap: hw.pa(&pages.msr_bitmap),
        virtual_apic,
        eptp: ept::construct_eptp(Some(&root)),
    };
    let controls = match setup::controls(&caps, &addrs, tweak) {
        Ok(c) => c,
        Err(e) => return Err(StopReason::Unsupported(e.0)),
    };

    let t = hw.host_tables();
    let [cs, ss, ds, es, fs, gs, tr] = t.selectors;
    let host = HostState {
        cr0: hw.host_cr0(),
        cr3: hw.host_cr3(),
        cr4: hw.host_cr4(),
        cs,
        ss,
        ds,
        es,
        fs,
        gs,
        tr: if tweak == Tweak::HostTrZero { 0 } else { tr },
        fs_base: hw.rdmsr(MSR_FS_BASE),
        gs_base: hw.rdmsr(MSR_GS_BASE),
        tr_base: t.tr_base,
        gdtr_base: t.gdtr_base,
        idtr_base: t.idtr_base,
        efer: hw.rdmsr(MSR_EFER),
        pat: hw.rdmsr(MSR_PAT),
        rip: t.exit_rip,
    };
    // The instruction emulator and the virtual PMU for this guest; PERF_CAPABILITIES' immutable bits
    // are the host's (read only when CPUID says the MSR exists: PDCM).
    let host_perf_caps = if hw.cpuid(1, 0)[2] & (1 << 15) != 0 {
        hw.rdmsr(msr::IA32_PERF_CAPABILITIES)
    } else {
        0
    };
    let mut vmcs = Vmcs(hw);
    if setup::write_host(&mut vmcs, &host).is_err()
        || setup::write_guest(&mut vmcs, &caps, state).is_err()
    {
        return Err(StopReason::Platform(
            "VMWRITE of host or guest state failed",
        ));
    }
    let mut cpu = match Vmx::new(vmcs, caps, controls, opts) {
        Ok(c) => c,
        Err(e) => return Err(StopReason::Backend(e)),
    };
    cpu.regs.rdi = state.rdi;
    // Guest time while the guest runs: the VMX-preemption timer at the earliest host deadline (the time
    // limit from the start; the guest's timers as it arms them), the host LAPIC only for HLT sleeps.
    if cpu.keeps_guest_time() {
        vm.platform.guest_time_in_backend();
        let now = vm.platform.guest_tsc();
        crate::backend::Backend::set_host_deadline(&mut cpu, vm.platform.host_deadline(), now);
    }
    vm.emu = crate::vm::EmuState::new(
        caps.max_phys_addr,
        options.force_emulation,
        crate::x86::pmu::Pmu::new(true, host_perf_caps),
    );
    // #UD is intercepted only for forced emulation, so the default exit path is unchanged.
    if options.force_emulation {
        if let Err(e) = cpu.intercept_ud() {
            return Err(StopReason::Backend(e));
        }
    }
    Ok(cpu)
}

/// The debug report on a refused entry, printed before the stop line.
fn report<P: Platform>(vm: &mut Vm<'_, P>, d: Option<EntryDiagnosis>) {
    let con = vm.platform.console();
    match d {
        None => {}
        Some(EntryDiagnosis::MissedConsistencyCheck { error }) => crate::vmm_print!(
            con,
            "libvmm: !!! MISSED CONSISTENCY CHECK !!! the CPU refused a VM entry that the software checks \
             passed: error {} ({})\n",
            error,
            instruction_error_name(error)
        ),
        Some(EntryDiagnosis::BypassedCheckWouldCatch { error, check }) => crate::vmm_print!(
            con,
            "libvmm: vmx debug: software checks bypassed; the CPU refused the entry with VM-instruction error {} \
             ({}); the software check that catches it: {}\n",
            error,
            instruction_error_name(error),
            check.name()
        ),
    }
}

// The world switch writes HOST_RSP by its encoding; it must be the typed field's.
#[cfg(all(feature = "vmx", target_os = "none"))]
const _: () = assert!(hw::HOST_RSP_ENCODING == super::fields::HOST_RSP_ENCODING);

#[cfg(all(feature = "vmx", target_os = "none"))]
use super::vmcs::{GuestRegs, HostTables, VmFail};
#[cfg(all(feature = "vmx", target_os = "none"))]
use crate::arch::x86_64::{cpu, tables, vmx as hw};

#[cfg(all(feature = "vmx", target_os = "none"))]
fn fail(f: hw::Fail) -> VmFail {
    match f {
        hw::Fail::Invalid => VmFail::Invalid,
        hw::Fail::Valid => VmFail::Valid,
    }
}

/// This CPU's VMX instructions and its current VMCS.
#[cfg(all(feature = "vmx", target_os = "none"))]
pub(crate) struct HwVmcs<V: VirtualApicPage> {
    /// The virtual-APIC page (read for VTPR while TPR shadow is on); `()` on an AP, which has none yet.
    vapic: V,
}

/// Where [`HwVmcs`] reads VTPR: the boot CPU's virtual-APIC page, or nothing (an AP, until guest SMP
/// gives it a vCPU). A type rather than an `Option`, so the boot CPU's exit path has no test for it
/// (with one, the interrupt round trips took 8 to 12 instructions more: bench).
#[cfg(all(feature = "vmx", target_os = "none"))]
pub(crate) trait VirtualApicPage {
    fn vtpr(&self) -> u8;
    fn pa(&self) -> Option<u64>;
}

#[cfg(all(feature = "vmx", target_os = "none"))]
impl VirtualApicPage for &'static super::pages::Page {
    #[inline(always)]
    fn vtpr(&self) -> u8 {
        hw::read_vtpr(*self)
    }
    fn pa(&self) -> Option<u64> {
        Some(hw::pa(*self))
    }
}

#[cfg(all(feature = "vmx", target_os = "none"))]
impl VirtualApicPage for () {
    fn vtpr(&self) -> u8 {
        0
    }
    fn pa(&self) -> Option<u64> {
        None
    }
}

#[cfg(all(feature = "vmx", target_os = "none"))]
impl<V: VirtualApicPage> VmxOps for HwVmcs<V> {
    fn vmread(&self, encoding: u32) -> Result<u64, VmFail> {
        hw::vmread(encoding).map_err(fail)
    }
    fn vmwrite(&mut self, encoding: u32, value: u64) -> Result<(), VmFail> {
        hw::vmwrite(encoding, value).map_err(fail)
    }
    #[inline(always)]
    fn vmread_basic(&self, encoding: u32) -> u64 {
        hw::vmread_basic(encoding)
    }
    #[inline(always)]
    fn vmwrite_basic(&mut self, encoding: u32, value: u64) {
        hw::vmwrite_basic(encoding, value)
    }
    #[inline(always)]
    fn enter(&mut self, regs: &mut GuestRegs, launched: bool) -> Result<(), VmFail> {
        hw::enter(regs, launched).map_err(fail)
    }
    fn wrmsr(&mut self, msr: u32, value: u64) {
        cpu::wrmsr(msr, value)
    }
    fn take_host_interrupt(&mut self) {
        hw::take_host_interrupt()
    }
    fn read_vtpr(&self) -> u8 {
        self.vapic.vtpr()
    }
    fn xsetbv(&mut self, xcr0: u64) {
        cpu::xsetbv0(xcr0)
    }
    fn set_guest_cr2(&mut self, cr2: u64) {
        cpu::write_cr2(cr2)
    }
    fn flush_guest_tlb(&mut self) {
        // All contexts: the guest's VPID is the only one in use (INVVPID all-context ran at bring-up).
        let _ = hw::invvpid_all();
    }
    fn cpuid(&self, leaf: u32, subleaf: u32) -> [u32; 4] {
        cpu::cpuid(leaf, subleaf)
    }
    fn rdmsr(&self, msr: u32) -> u64 {
        cpu::rdmsr(msr)
    }
    fn host_cr0(&self) -> u64 {
        hw::read_cr0()
    }
    fn host_cr3(&self) -> u64 {
        hw::read_cr3()
    }
    fn host_cr4(&self) -> u64 {
        hw::read_cr4()
    }
    fn set_host_cr0(&mut self, v: u64) {
        hw::write_cr0(v)
    }
    fn set_host_cr4(&mut self, v: u64) {
        hw::write_cr4(v)
    }
    fn enable_xsave(&mut self) -> bool {
        cpu::enable_xsave()
    }
    fn vmxon(&mut self, pa: u64) -> Result<(), VmFail> {
        hw::vmxon(pa).map_err(fail)
    }
    fn vmclear(&mut self, pa: u64) -> Result<(), VmFail> {
        hw::vmclear(pa).map_err(fail)
    }
    fn vmptrld(&mut self, pa: u64) -> Result<(), VmFail> {
        hw::vmptrld(pa).map_err(fail)
    }
    fn invept_all(&mut self) -> Result<(), VmFail> {
        hw::invept_all().map_err(fail)
    }
    fn invvpid_all(&mut self) -> Result<(), VmFail> {
        hw::invvpid_all().map_err(fail)
    }
    fn pa_ptr(p: *const u8) -> u64 {
        hw::pa_ptr(p)
    }
    fn host_tables(&self) -> HostTables {
        HostTables {
            selectors: hw::selectors(),
            tr_base: tables::tss_base(),
            gdtr_base: tables::gdt_base(),
            idtr_base: tables::idt_base(),
            exit_rip: hw::exit_entry(),
        }
    }
    fn virtual_apic_pa(&self) -> Option<u64> {
        self.vapic.pa()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::guest_mem::GuestMemory;
    use crate::loader::Loaded;
    use crate::testing::vmcs::{ModelVmcs, Step};
    use crate::testing::ModelPlatform;
    use crate::vmx::controls::{entry, exit, proc1, proc2};
    use crate::vmx::fields as f;
    use crate::vmx::pages::VmxCpuPages;
    use crate::x86::gprs::Gprs;
    use crate::x86::guest_setup::build;
    use crate::x86::msr::{FEATURE_CONTROL_LOCK, FEATURE_CONTROL_VMX_OUTSIDE_SMX};
    use libvmm_abi::layout::x86_64::{WINDOW_BASE, WINDOW_SIZE};
    use libvmm_abi::Hypercall;
    use std::boxed::Box;
    use std::string::String;
    use std::vec::Vec;

    fn vm_exit(reason: u64, len: u64, regs: Gprs) -> Step {
        Step::Exit(
            vec![
                (f::EXIT_REASON.encoding(), reason),
                (f::EXIT_INSTRUCTION_LENGTH.encoding(), len),
            ],
            Some(regs),
        )
    }

    fn cpuid_then_exit(status: u64) -> Vec<Step> {
        let cpuid = Gprs {
            rax: 0x4000_0000,
            ..Default::default()
        };
        let exit_hc = Gprs {
            rax: Hypercall::Exit as u64,
            rdi: status,
            ..Default::default()
        };
        vec![vm_exit(10, 2, cpuid), vm_exit(18, 3, exit_hc)]
    }

    /// A guest window with the loader's initial state, the model platform, zeroed VMX pages.
    struct Fixture {
        buf: Vec<u8>,
        pages: Box<VmxPages>,
    }

    impl Fixture {
        fn new() -> Self {
            Self {
                buf: vec![0u8; WINDOW_SIZE as usize],
                pages: Box::new(VmxPages::zeroed()),
            }
        }

        /// `bring_up`, or with `run` the whole `bring_up_and_run`: (result, console).
        fn go(
            &mut self,
            model: ModelVmcs,
            options: &Options<'_>,
            vmm_addrs: &[u64],
            run: bool,
        ) -> (Result<Vmx<ModelVmcs>, StopReason>, String) {
            let mut mem = GuestMemory::new(WINDOW_BASE, &mut self.buf);
            let loaded = Loaded {
                entry: WINDOW_BASE + 0x1_0000,
                stack_top: WINDOW_BASE + 0x8_0000,
                boot_info: WINDOW_BASE,
            };
            let state = build(&mut mem, &loaded).unwrap();
            let mut vm = Vm::new(mem, ModelPlatform::default());
            let r = if run {
                Err(bring_up_and_run(
                    &mut vm,
                    &state,
                    options,
                    model,
                    Box::leak(Box::new(VmxPages::zeroed())),
                    vmm_addrs,
                ))
            } else {
                bring_up(&mut vm, &state, options, model, &mut self.pages, vmm_addrs)
            };
            (r, String::from_utf8(vm.platform.console.0).unwrap())
        }
    }

    fn bring_up_on(model: ModelVmcs) -> Result<Vmx<ModelVmcs>, StopReason> {
        Fixture::new().go(model, &Options::default(), &[], false).0
    }

    fn refused(model: ModelVmcs) -> StopReason {
        match bring_up_on(model) {
            Ok(_) => panic!("bring-up went through"),
            Err(stop) => stop,
        }
    }

    #[test]
    fn bring_up_then_cpuid_and_exit_hypercall_through_the_generic_loop() {
        let model = ModelVmcs {
            steps: cpuid_then_exit(7),
            ..ModelVmcs::cpu()
        };
        let mut fx = Fixture::new();
        let (stop, out) = fx.go(model, &Options::default(), &[], true);
        assert_eq!(stop.err(), Some(StopReason::PayloadExit(7)));
        assert!(out.contains("libvmm: APICv off: x2APIC emulated"));
        // Both regions carry the revision id of IA32_VMX_BASIC (Bochs: 0x2b); every MSR and port exits.
        // (The run above took pages of its own for good: the run keeps its EPT tables.)
        let (cpu, _) = fx.go(ModelVmcs::cpu(), &Options::default(), &[], false);
        assert!(cpu.is_ok());
        assert_eq!(&fx.pages.vmxon.0[..4], &[0x2b, 0, 0, 0]);
        assert_eq!(&fx.pages.vmcs.0[..4], &[0x2b, 0, 0, 0]);
        assert!(fx.pages.msr_bitmap.0.iter().all(|&b| b == 0xFF));
        assert!(fx.pages.io_bitmap_b.0.iter().all(|&b| b == 0xFF));
    }

    #[test]
    fn bring_up_enters_vmx_operation_in_the_architectural_order() {
        let mut fx = Fixture::new();
        let cpu = fx
            .go(ModelVmcs::cpu(), &Options::default(), &[], false)
            .0
            .unwrap();
        let hw = &cpu.vmcs.0;
        let (vmxon, vmcs) = (hw.pa(&fx.pages.vmxon), hw.pa(&fx.pages.vmcs));
        // IA32_FEATURE_CONTROL was unlocked: locked with VMX outside SMX on, before VMXON (which the
        // model refuses otherwise).
        assert_eq!(
            hw.msrs[0],
            (
                msr::IA32_FEATURE_CONTROL,
                FEATURE_CONTROL_LOCK | FEATURE_CONTROL_VMX_OUTSIDE_SMX
            )
        );
        assert_eq!(hw.vmxon, Some(vmxon));
        assert_eq!(
            (hw.cleared.as_slice(), hw.current),
            (&[vmcs][..], Some(vmcs))
        );
        // CR4.VMXE and the fixed bits; OSXSAVE for the guest's XSETBV.
        assert!(hw.cr4 & CR4_VMXE != 0 && hw.xsave_enabled);
        // Nothing cached survives: INVEPT and INVVPID all-context once each (Bochs has both).
        assert_eq!((hw.invept, hw.invvpid), (1, 1));
    }

    #[test]
    fn bring_up_programs_the_vmcs_from_the_capabilities() {
        let mut fx = Fixture::new();
        let cpu = fx
            .go(ModelVmcs::cpu(), &Options::default(), &[], false)
            .0
            .unwrap();
        let v = &cpu.vmcs;
        let caps = crate::vmx::caps::tests::skylake_x();
        let p1 = v.read(f::PRIMARY_PROC_CONTROLS).unwrap();
        let p2 = v.read(f::SECONDARY_PROC_CONTROLS).unwrap();
        assert!(caps.proc1.permits(p1) && caps.proc2.permits(p2));
        assert!(p1 & (proc1::HLT_EXITING | proc1::USE_MSR_BITMAPS) != 0);
        assert!(p2 & proc2::EPT != 0 && p2 & proc2::VPID != 0);
        assert!(v.read(f::ENTRY_CONTROLS).unwrap() & entry::IA32E_MODE_GUEST != 0);
        assert!(v.read(f::EXIT_CONTROLS).unwrap() & exit::HOST_ADDR_SPACE_SIZE != 0);
        // The bitmaps and EPT are the pages bring-up filled; EPTP from the root's role (4 levels, WB).
        assert_eq!(v.read(f::MSR_BITMAP).unwrap(), v.0.pa(&fx.pages.msr_bitmap));
        let eptp = v.read(f::EPT_POINTER).unwrap();
        assert_eq!(eptp & 0x3F, 0x1E);
        // Host state from the CPU: CR4 after VMXON (VMXE set), the exit entry, the selectors.
        assert!(v.read(f::HOST_CR4).unwrap() & CR4_VMXE != 0);
        assert_eq!(v.read(f::HOST_RIP).unwrap(), 0x10_0000);
        assert_eq!(v.read(f::HOST_TR_SELECTOR).unwrap(), 0x18);
    }

    #[test]
    fn a_cpu_without_vmx_is_refused_before_anything_is_written() {
        let stop = refused(ModelVmcs {
            no_vmx: true,
            ..ModelVmcs::cpu()
        });
        assert_eq!(stop, StopReason::Unsupported("CPUID.1:ECX.VMX[5] is 0"));
    }

    #[test]
    fn firmware_that_locked_vmx_off_is_refused_and_the_msr_left_alone() {
        let mut model = ModelVmcs::cpu();
        model
            .msr_values
            .insert(msr::IA32_FEATURE_CONTROL, FEATURE_CONTROL_LOCK);
        let mut hw = model;
        assert_eq!(
            read_caps(&mut hw),
            Err("IA32_FEATURE_CONTROL locked with VMX outside SMX off")
        );
        assert!(hw.msrs.is_empty());
        assert!(matches!(refused(hw), StopReason::Unsupported(w) if w.contains("locked")));
    }

    #[test]
    fn a_vmxon_region_larger_than_a_page_is_refused() {
        let mut model = ModelVmcs::cpu();
        model
            .msr_values
            .insert(msr::VMX_BASIC, 0x00d8_1800_0000_002b); // 6 KiB regions
        assert_eq!(
            refused(model),
            StopReason::Unsupported("VMXON region larger than 4 KiB")
        );
    }

    #[test]
    fn a_refused_vmxon_stops_before_any_vmcs_is_touched() {
        let mut fx = Fixture::new();
        let (r, _) = fx.go(
            ModelVmcs {
                refuse_vmxon: true,
                ..ModelVmcs::cpu()
            },
            &Options::default(),
            &[],
            false,
        );
        assert_eq!(r.err(), Some(StopReason::Unsupported("VMXON failed")));
    }

    #[test]
    fn ept_without_2m_pages_is_refused() {
        let mut model = ModelVmcs::cpu();
        let ept = crate::testing::vmcs::skylake_x_msr(msr::VMX_EPT_VPID_CAP);
        model.msr_values.insert(
            msr::VMX_EPT_VPID_CAP,
            ept & !crate::vmx::caps::ept_cap::PAGE_2M,
        );
        assert!(matches!(refused(model), StopReason::Unsupported(w) if w.contains("2 MiB")));
    }

    #[test]
    fn a_control_the_cpu_cannot_set_is_named() {
        // No "load IA32_EFER" on exit (bit 21 of the allowed-1 half).
        let mut model = ModelVmcs::cpu();
        let ctls = crate::testing::vmcs::skylake_x_msr(msr::VMX_TRUE_EXIT_CTLS);
        model.msr_values.insert(
            msr::VMX_TRUE_EXIT_CTLS,
            ctls & !(exit::LOAD_EFER as u64) << 32 | ctls & 0xFFFF_FFFF,
        );
        assert_eq!(
            refused(model),
            StopReason::Unsupported("64-bit host, EFER/PAT switching on exit")
        );
    }

    #[test]
    fn ept_that_would_reach_vmm_memory_is_refused() {
        let mut fx = Fixture::new();
        // A VMM address inside the guest window: the self-check finds it mapped.
        let (r, _) = fx.go(
            ModelVmcs::cpu(),
            &Options::default(),
            &[WINDOW_BASE + 0x1000],
            false,
        );
        assert_eq!(
            r.err(),
            Some(StopReason::Platform("EPT would expose VMM memory"))
        );
    }

    #[test]
    fn debug_options_reach_the_vmcs() {
        let mut fx = Fixture::new();
        let opts = Options {
            vmx_bad: Some("host-tr"),
            ..Default::default()
        };
        let (r, out) = fx.go(ModelVmcs::cpu(), &opts, &[], false);
        assert_eq!(r.ok().unwrap().vmcs.read(f::HOST_TR_SELECTOR), Ok(0));
        assert!(out.contains("configuration HostTrZero, software checks on"));
    }

    #[test]
    fn an_ap_enters_vmx_operation_with_its_own_regions() {
        let mut a = Box::new(VmxCpuPages::zeroed());
        let mut b = Box::new(VmxCpuPages::zeroed());
        let mut hw = ModelVmcs::cpu();
        enable_on_ap(&mut hw, &mut a).unwrap();
        assert_eq!(hw.vmxon, Some(hw.pa(&a.vmxon)));
        assert_eq!(hw.current, Some(hw.pa(&a.vmcs)));
        assert_eq!(&a.vmcs.0[..4], &[0x2b, 0, 0, 0]);
        let mut hw2 = ModelVmcs::cpu();
        enable_on_ap(&mut hw2, &mut b).unwrap();
        assert_ne!(hw2.vmxon, hw.vmxon);
        // A second VMXON on the same CPU is VMfailValid: an error, not a panic.
        assert_eq!(enable_on_ap(&mut hw, &mut b), Err("VMXON failed"));
        let mut no = ModelVmcs {
            no_vmx: true,
            ..ModelVmcs::cpu()
        };
        assert_eq!(
            enable_on_ap(&mut no, &mut a),
            Err("CPUID.1:ECX.VMX[5] is 0")
        );
        assert_eq!(no.vmxon, None);
    }
}
