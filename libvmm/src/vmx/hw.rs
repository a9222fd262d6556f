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

/// Whether this CPU can run the VMX backend: what [`read_caps`] checks, and EPT with 4-level walks,
/// write-back and 2 MiB pages. The boot CPU asks before it starts any AP (`boot::x86_64`); bring-up
/// checks the same again.
pub(crate) fn support<H: VmxOps>(hw: &mut H) -> Result<Caps, &'static str> {
    let caps = read_caps(hw)?;
    let needed = caps::ept_cap::WALK_4 | caps::ept_cap::WB | caps::ept_cap::PAGE_2M;
    if caps.ept_vpid & needed != needed {
        return Err(EPT_LACKS);
    }
    Ok(caps)
}

/// What [`support`] says of a CPU whose EPT cannot map the guest as libvmm does.
const EPT_LACKS: &str = "EPT lacks 4-level walks, write-back or 2 MiB pages";

/// [`support`] on this CPU.
#[cfg(all(feature = "vmx", target_os = "none"))]
pub(crate) fn boot_cpu_support() -> Result<(), &'static str> {
    support(&mut HwVmcs { vapic: () }).map(|_| ())
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

/// Enters VMX operation on AP `cpu_index` (1..MAX_CPUS) with its own VMXON region and VMCS, which it
/// keeps for its vCPU (guest SMP, [`run_ap`]).
#[cfg(all(feature = "vmx", target_os = "none"))]
pub(crate) fn ap_bring_up(cpu_index: usize) -> Result<&'static mut VmxCpuPages, &'static str> {
    let pages = cpu_index
        .checked_sub(1)
        .and_then(|i| super::AP_STORAGE.get(i))
        .and_then(|s| s.take())
        .ok_or("no VMX pages for this CPU (taken, or beyond MAX_CPUS)")?;
    enable_on_ap(&mut HwVmcs { vapic: () }, pages)?;
    Ok(pages)
}

/// [`run_ap`] on this AP with its own pages (VMCS, virtual-APIC page) and this CPU's VMX instructions.
#[cfg(all(feature = "vmx", target_os = "none"))]
pub(crate) fn run_ap_here<P: Platform>(
    vm: &mut Vm<'_, P>,
    pages: &'static mut VmxCpuPages,
    links: Addrs,
    options: &Options<'_>,
    wait: impl FnMut(&mut Vm<'_, P>) -> Option<u8>,
) -> StopReason {
    let pages: &'static VmxCpuPages = pages;
    let vmcs_pa = hw::pa(&pages.vmcs);
    let hw = HwVmcs {
        vapic: &pages.virtual_apic,
    };
    run_ap(vm, hw, vmcs_pa, links, options, wait)
}

/// The VM's shared structures every AP's VMCS points to (EPT, MSR and I/O bitmaps; the virtual-APIC
/// address is each CPU's own), published by the boot CPU's bring-up: the APs wait for them.
#[cfg(all(feature = "vmx", target_os = "none"))]
pub(crate) static VM_LINKS: crate::arch::Published<Addrs> = crate::arch::Published::new();

fn publish_links(links: Addrs) {
    #[cfg(all(feature = "vmx", target_os = "none"))]
    VM_LINKS.set(links);
    #[cfg(not(all(feature = "vmx", target_os = "none")))]
    let _ = links;
}

/// The host state of this CPU as a VM exit restores it: control registers, selectors (TR this CPU's
/// own TSS), table bases, FS/GS bases, EFER, PAT, and the world switch's exit entry.
fn host_state<H: VmxOps>(hw: &H, tweak: Tweak) -> HostState {
    let t = hw.host_tables();
    let [cs, ss, ds, es, fs, gs, tr] = t.selectors;
    HostState {
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
    }
}

/// Runs vCPU `vm.cpu` (>= 1) on this AP until the VM stops: the VMX twin of `svm::hw::run_ap`. `wait`
/// blocks until a STARTUP IPI reaches the vCPU in wait-for-SIPI and returns its vector (`None`: the VM
/// stopped meanwhile). Each start clears and reloads this CPU's VMCS (at `vmcs_pa`) and writes the AP
/// controls ([`setup::ap_controls`]: unrestricted guest), this CPU's host state and the real-mode state
/// at `vector << 12` ([`setup::write_guest_sipi`]) over the VM's shared EPT and bitmaps (`links`, with
/// this CPU's own virtual-APIC page from `hw`), with the APIC as after INIT; an INIT to the running
/// vCPU ends its loop with [`StopReason::VcpuOff`] and it waits again. A CPU without unrestricted guest
/// stops the VM at the guest's first STARTUP with the reason (never a VM-entry failure).
pub(crate) fn run_ap<P: Platform, H: VmxOps>(
    vm: &mut Vm<'_, P>,
    mut hw: H,
    vmcs_pa: u64,
    links: Addrs,
    options: &Options<'_>,
    mut wait: impl FnMut(&mut Vm<'_, P>) -> Option<u8>,
) -> StopReason {
    let caps = match read_caps(&mut hw) {
        Ok(c) => c,
        Err(why) => return StopReason::Unsupported(why),
    };
    let Some(virtual_apic) = hw.virtual_apic_pa() else {
        return StopReason::Platform("no virtual-APIC page for this CPU");
    };
    let addrs = Addrs {
        virtual_apic,
        ..links
    };
    let (opts, _) = setup::debug_options(options);
    let host = host_state(&hw, Tweak::None);
    let host_perf_caps = if hw.cpuid(1, 0)[2] & (1 << 15) != 0 {
        hw.rdmsr(msr::IA32_PERF_CAPABILITIES)
    } else {
        0
    };
    vm.emu = crate::vm::EmuState::new(
        caps.max_phys_addr,
        options.force_emulation,
        crate::x86::pmu::Pmu::new(true, host_perf_caps),
    );
    // EPT was built (and every deferred block mapped) by the boot CPU: nothing of it is cached here.
    if caps.ept_vpid & caps::ept_cap::INVEPT_ALL_CONTEXT != 0 && hw.invept_all().is_err() {
        return StopReason::Unsupported("INVEPT all-context failed");
    }
    let mut hw = Some(hw);
    let mut cpu: Option<Vmx<H>> = None;
    loop {
        let Some(vector) = wait(vm) else {
            return StopReason::StoppedElsewhere;
        };
        let controls = match setup::ap_controls(&caps, &addrs) {
            Ok(c) => c,
            Err(e) => return StopReason::Unsupported(e.0),
        };
        if cpu.is_none() {
            let Some(hw) = hw.take() else {
                return StopReason::Platform("VMX AP hardware taken twice");
            };
            match Vmx::new(Vmcs(hw), caps, controls, opts) {
                Ok(c) => cpu = Some(c),
                Err(e) => return StopReason::Backend(e),
            }
        }
        let Some(c) = cpu.as_mut() else {
            return StopReason::Platform("VMX AP vCPU missing");
        };
        if let Err(e) = c.start_after_sipi(vmcs_pa, controls, &host, vector) {
            return StopReason::Backend(e);
        }
        if options.force_emulation {
            if let Err(e) = c.intercept_ud() {
                return StopReason::Backend(e);
            }
        }
        vm.reset_apic(caps.max_phys_addr);
        c.bound_runs_for_kicks();
        if c.keeps_guest_time() {
            vm.platform.guest_time_in_backend();
            let now = vm.platform.guest_tsc();
            crate::backend::Backend::set_host_deadline(c, vm.platform.host_deadline(), now);
        }
        // No EPT of its own: the boot vCPU zeroed and mapped every block before any AP ran.
        match run(c, vm) {
            StopReason::VcpuOff => vm.smp.set_off(vm.cpu),
            stop => {
                report(vm, c.diagnosis);
                return stop;
            }
        }
    }
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
        return Err(StopReason::Unsupported(EPT_LACKS));
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
    // Guest SMP: the one low page a STARTUP IPI names, read+execute onto its window page.
    {
        use libvmm_abi::layout::x86_64::{SIPI_PAGE, SIPI_PAGE_OFFSET, WINDOW_BASE};
        if vm.mem.base() == WINDOW_BASE
            && pages
                .ept
                .map_sipi_page(SIPI_PAGE, vm.mem.base() + SIPI_PAGE_OFFSET, H::pa_ptr)
                .is_err()
        {
            return Err(StopReason::Platform("EPT cannot map the SIPI page"));
        }
    }
    // Guest SMP: every block still deferred (zero on first touch) is zeroed and mapped now, before any
    // AP can start (the APs wait for the links published below), through the VM's one lazy state: the
    // APs then never fault on a block, and map nothing into EPT themselves.
    if vm.smp.cpu_count() > 1
        && !vm
            .lazy
            .touch_all(&vm.mem, |block| pages.ept.map_block(block))
    {
        return Err(StopReason::Platform("EPT cannot map guest memory"));
    }
    if vm.smp.cpu_count() > 1 {
        crate::vmm_print!(
            vm.platform.console(),
            "libvmm: guest SMP: the rest of guest memory zeroed and mapped now, before any AP starts\n"
        );
    }
    // Self-check: no VMM structure is reachable through EPT.
    let own = [vmcs_pa, hw.pa(&pages.ept), root.hpa];
    let tables = pages.ept.addrs(&H::pa_ptr).into_iter();
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

    let host = host_state(&hw, tweak);
    publish_links(Addrs {
        virtual_apic: 0,
        ..addrs
    });
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
    if vm.smp.cpu_count() > 1 {
        cpu.bound_runs_for_kicks();
    }
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
            tr_base: tables::tss_base(hw::selectors()[6]),
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
    use crate::vmx::setup::Addrs;
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
    fn support_names_a_cpu_without_vmx_or_the_ept_libvmm_needs_without_vmxon() {
        let mut ok = ModelVmcs::cpu();
        assert!(support(&mut ok).is_ok());
        assert_eq!(ok.vmxon, None);
        let mut no = ModelVmcs {
            no_vmx: true,
            ..ModelVmcs::cpu()
        };
        assert_eq!(support(&mut no).err(), Some("CPUID.1:ECX.VMX[5] is 0"));
        // Penryn's EPT: no 2 MiB pages (and here no 4-level walk or write-back either).
        let mut penryn = ModelVmcs::cpu();
        penryn.msr_values.insert(msr::VMX_EPT_VPID_CAP, 0);
        assert_eq!(support(&mut penryn).err(), Some(EPT_LACKS));
        assert_eq!(penryn.vmxon, None);
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

    /// Guest SMP on the model VMCS: an AP in wait-for-SIPI starts at the STARTUP vector in real mode
    /// (VMLAUNCH of its freshly cleared VMCS, unrestricted guest, CS 0800 base 0x8000, IP 0, CR0 as
    /// after INIT), goes to long mode the trampoline's way (CR4.PAE, EFER.LME by WRMSR with paging off,
    /// then PE and PG in one MOV to CR0: EFER.LMA and the IA-32e mode guest control come with it), reads
    /// its APIC ID and the vCPU count from CPUID; an INIT sends it back to wait-for-SIPI, and the next
    /// STARTUP starts it again from scratch (VMCLEAR, VMLAUNCH, registers zero) at the new vector.
    #[test]
    fn an_ap_vcpu_starts_in_real_mode_from_a_sipi_and_an_init_sends_it_back_to_wait() {
        use crate::x86::msr::{EFER as MSR_EFER_NR, EFER_LMA, EFER_LME, EFER_NXE};
        let mut buf = vec![0u8; 0x10_0000];
        let mut vm = crate::testing::smp_vm(WINDOW_BASE, &mut buf, 2, 1);
        let shared = vm.smp;
        let mut pages = Box::new(VmxCpuPages::zeroed());
        let mut hw = ModelVmcs::cpu();
        vm.platform.host_irq = hw.host_irq.clone();
        enable_on_ap(&mut hw, &mut pages).unwrap();
        let vmcs_pa = hw.pa(&pages.vmcs);
        let r = |rax: u64, rcx: u64| Gprs {
            rax,
            rcx,
            ..Default::default()
        };
        let cr0_long = 0x8001_0033;
        hw.steps = vec![
            vm_exit(28, 3, r(0x20, 0)), // MOV CR4, EAX (qualification below)
            vm_exit(32, 2, r(0x900, MSR_EFER_NR as u64)), // WRMSR EFER: LME | NXE
            vm_exit(28, 3, r(cr0_long, 0)), // MOV CR0, EAX: PE | PG at once
            vm_exit(10, 2, r(1, 0)),    // CPUID leaf 1
            vm_exit(1, 0, Gprs::default()), // the kick that brings the INIT
            vm_exit(
                18,
                3,
                Gprs {
                    rax: Hypercall::Exit as u64,
                    rdi: 5,
                    ..Default::default()
                },
            ),
        ];
        // CR access qualifications: CR4 (4) and CR0 (0), MOV to CR from RAX.
        if let Step::Exit(fields, _) = &mut hw.steps[0] {
            fields.push((f::EXIT_QUALIFICATION.encoding(), 4));
        }
        if let Step::Exit(fields, _) = &mut hw.steps[2] {
            fields.push((f::EXIT_QUALIFICATION.encoding(), 0));
        }
        assert!(shared.post_sipi(1, 0x08), "wait-for-SIPI at reset");
        let links = Addrs {
            virtual_apic: 0,
            ..Addrs::TEST
        };
        let mut starts = 0;
        let stop = {
            let wait = |vm: &mut Vm<'_, ModelPlatform>| {
                vm.smp.take_init(vm.cpu);
                starts += 1;
                match starts {
                    1 => {
                        let v = vm.smp.take_sipi(vm.cpu);
                        assert!(
                            !vm.smp.post_sipi(1, 0x0A),
                            "SIPI to a running vCPU is ignored"
                        );
                        assert!(vm.smp.post_init(1), "INIT while it runs");
                        v
                    }
                    2 => {
                        assert!(vm.smp.post_sipi(1, 0x09), "accepted in wait-for-SIPI again");
                        vm.smp.take_sipi(vm.cpu)
                    }
                    _ => None,
                }
            };
            run_ap(&mut vm, &mut hw, vmcs_pa, links, &Options::default(), wait)
        };
        assert_eq!(stop, StopReason::PayloadExit(5));
        assert_eq!(starts, 2);
        // The external-interrupt exit's host interrupt (the kick that brought the INIT) was taken once,
        // by the platform, as on SVM.
        assert_eq!((hw.host_irq.taken(), hw.host_irq.acked_on_exit()), (1, 0));
        assert!(!hw.host_irq.pending());
        let e = &hw.entries;
        let field = |i: usize, fl: u32| e[i].2.get(&fl).copied().unwrap_or(0);
        // Start 1: VMLAUNCH in real mode at 0x08 << 12.
        assert!(!e[0].0, "VMLAUNCH of the cleared VMCS");
        assert_eq!(field(0, f::GUEST_CS_SELECTOR.encoding()), 0x800);
        assert_eq!(field(0, f::GUEST_CS_BASE.encoding()), 0x8000);
        assert_eq!(field(0, f::GUEST_RIP.encoding()), 0);
        assert_eq!(field(0, f::CR0_READ_SHADOW.encoding()), 0x6000_0010);
        assert_eq!(
            field(0, f::GUEST_CR0.encoding()),
            0x30,
            "NE; PE, PG, CD, NW clear"
        );
        assert_eq!(field(0, f::GUEST_IA32_EFER.encoding()), 0);
        assert_ne!(
            field(0, f::SECONDARY_PROC_CONTROLS.encoding()) & proc2::UNRESTRICTED_GUEST as u64,
            0
        );
        assert_eq!(
            field(0, f::ENTRY_CONTROLS.encoding()) & entry::IA32E_MODE_GUEST as u64,
            0
        );
        assert_eq!(field(0, f::HOST_TR_SELECTOR.encoding()), 0x18);
        // CR4.PAE, then EFER.LME|NXE with paging off (no #GP), then long mode with CR0.
        assert_eq!(field(1, f::CR4_READ_SHADOW.encoding()), 0x20);
        assert_eq!(field(2, f::GUEST_IA32_EFER.encoding()), EFER_LME | EFER_NXE);
        assert_eq!(
            field(2, f::ENTRY_INTERRUPTION_INFO.encoding()) >> 31,
            0,
            "no #GP"
        );
        assert_eq!(
            field(3, f::GUEST_IA32_EFER.encoding()),
            EFER_LME | EFER_LMA | EFER_NXE
        );
        assert_ne!(
            field(3, f::ENTRY_CONTROLS.encoding()) & entry::IA32E_MODE_GUEST as u64,
            0
        );
        assert_eq!(field(3, f::GUEST_CR0.encoding()), cr0_long);
        assert_eq!(field(3, f::CR0_READ_SHADOW.encoding()), cr0_long);
        // CPUID leaf 1: this vCPU's APIC ID (1) and the vCPU count (2) in EBX[31:16].
        assert_eq!(e[4].1.rbx >> 16 & 0xFFFF, 1 << 8 | 2);
        // Start 2, after the INIT: launched afresh at 0x09 << 12, outside long mode, registers zero.
        assert!(!e[5].0, "VMLAUNCH again after VMCLEAR");
        assert_eq!(field(5, f::GUEST_CS_BASE.encoding()), 0x9000);
        assert_eq!(field(5, f::GUEST_CS_SELECTOR.encoding()), 0x900);
        assert_eq!(field(5, f::GUEST_IA32_EFER.encoding()), 0);
        assert_eq!(
            field(5, f::ENTRY_CONTROLS.encoding()) & entry::IA32E_MODE_GUEST as u64,
            0
        );
        assert_eq!(e[5].1, Gprs::default());
        assert_eq!(hw.cleared.iter().filter(|&&c| c == vmcs_pa).count(), 3);
        assert_eq!(hw.current, Some(vmcs_pa));
        assert!(hw.tlb_flushes >= 2, "INIT flushes the guest's TLB");
    }

    /// A CPU without unrestricted guest: the guest's STARTUP stops the VM with the reason before any
    /// entry (never a VM-entry failure).
    #[test]
    fn an_ap_start_without_unrestricted_guest_stops_by_name_before_any_entry() {
        let mut buf = vec![0u8; 0x10_0000];
        let mut vm = crate::testing::smp_vm(WINDOW_BASE, &mut buf, 2, 1);
        let shared = vm.smp;
        let mut pages = Box::new(VmxCpuPages::zeroed());
        let mut hw = ModelVmcs::cpu();
        let p2 = crate::testing::vmcs::skylake_x_msr(msr::VMX_PROCBASED_CTLS2);
        hw.msr_values.insert(
            msr::VMX_PROCBASED_CTLS2,
            p2 & !((proc2::UNRESTRICTED_GUEST as u64) << 32),
        );
        enable_on_ap(&mut hw, &mut pages).unwrap();
        let vmcs_pa = hw.pa(&pages.vmcs);
        assert!(shared.post_sipi(1, 0x08));
        let stop = run_ap(
            &mut vm,
            &mut hw,
            vmcs_pa,
            Addrs::TEST,
            &Options::default(),
            |vm| vm.smp.take_sipi(vm.cpu),
        );
        assert!(matches!(stop, StopReason::Unsupported(w) if w.contains("unrestricted guest")));
        assert!(hw.entries.is_empty());
    }
}
