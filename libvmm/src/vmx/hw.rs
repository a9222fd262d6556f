//! VMX on the real instructions: [`HwVmcs`], the hardware implementation of [`VmxOps`] (the trait the
//! exit path and the host-test model share), and the bring-up on this CPU that ends in the generic run
//! loop. Safe code over `arch::x86_64::vmx`. Target-only: the bring-up reads the CPU's capability MSRs
//! and control registers directly; its decisions (`caps`, `setup`, `ept`, `checks`) are host-tested.
#![forbid(unsafe_code)]

use crate::arch::x86_64::{cpu, entry as boot_info, tables, vmx as hw};
use crate::cmdline::Options;
use crate::vcpu;
use crate::vm::{Platform, StopReason, Vm};
use crate::x86::guest_setup::InitialState;

use super::caps::{self, msr, Caps, CR4_VMXE};
use super::ept::{self, MmuRole, MT_WB};
use super::pages::Page;
use super::setup::{self, Addrs, HostState, Tweak};
use super::vcpu::{EntryDiagnosis, Vmx};
use super::vmcs::{instruction_error_name, GuestRegs, VmFail, Vmcs, VmxOps};

use crate::x86::msr::{
    EFER as MSR_EFER, FS_BASE as MSR_FS_BASE, GS_BASE as MSR_GS_BASE, IA32_PAT as MSR_PAT,
};

/// Enters VMX operation on AP `cpu` (1..MAX_CPUS) with its own VMXON region, and makes its own VMCS
/// current: the same CPUID, IA32_FEATURE_CONTROL, capability and CR0/CR4 fixed-bit steps as the boot
/// CPU. The VMCS is filled when guest SMP gives this CPU a vCPU.
pub(crate) fn ap_bring_up(cpu_index: usize) -> Result<(), &'static str> {
    if cpu::cpuid(1, 0)[2] & (1 << 5) == 0 {
        return Err(caps::VmxonBlocker::NoVmxCpuid.name());
    }
    match caps::feature_control_update(cpu::rdmsr(msr::IA32_FEATURE_CONTROL)) {
        Ok(None) => {}
        Ok(Some(v)) => cpu::wrmsr(msr::IA32_FEATURE_CONTROL, v),
        Err(e) => return Err(e.name()),
    }
    let max_pa = if cpu::cpuid(0x8000_0000, 0)[0] >= 0x8000_0008 {
        cpu::cpuid(0x8000_0008, 0)[0] as u8
    } else {
        36
    };
    let caps = Caps::read(cpu::rdmsr, max_pa);
    if caps.region_size() > 4096 {
        return Err(caps::VmxonBlocker::RegionTooLarge.name());
    }
    let pages = cpu_index
        .checked_sub(1)
        .and_then(|i| super::AP_STORAGE.get(i))
        .and_then(|s| s.take())
        .ok_or("no VMX pages for this CPU (taken, or beyond MAX_CPUS)")?;
    pages.reset(caps.revision_id());
    hw::write_cr0(caps.fix_cr0(hw::read_cr0()));
    hw::write_cr4(caps.fix_cr4(hw::read_cr4() | CR4_VMXE));
    cpu::enable_xsave();
    if hw::vmxon(hw::pa(&pages.vmxon)).is_err() {
        return Err("VMXON failed");
    }
    let vmcs_pa = hw::pa(&pages.vmcs);
    if hw::vmclear(vmcs_pa).is_err() || hw::vmptrld(vmcs_pa).is_err() {
        return Err("VMCLEAR/VMPTRLD of the VMCS failed");
    }
    Ok(())
}

/// Brings VMX up on this CPU and runs the guest until it stops.
pub(crate) fn boot<P: Platform>(
    vm: &mut Vm<'_, P>,
    state: &InitialState,
    options: &Options<'_>,
) -> StopReason {
    if cpu::cpuid(1, 0)[2] & (1 << 5) == 0 {
        return StopReason::Unsupported(caps::VmxonBlocker::NoVmxCpuid.name());
    }
    match caps::feature_control_update(cpu::rdmsr(msr::IA32_FEATURE_CONTROL)) {
        Ok(None) => {}
        Ok(Some(v)) => cpu::wrmsr(msr::IA32_FEATURE_CONTROL, v),
        Err(e) => return StopReason::Unsupported(e.name()),
    }
    let max_pa = if cpu::cpuid(0x8000_0000, 0)[0] >= 0x8000_0008 {
        cpu::cpuid(0x8000_0008, 0)[0] as u8
    } else {
        36
    };
    let caps = Caps::read(cpu::rdmsr, max_pa);
    if caps.region_size() > 4096 {
        return StopReason::Unsupported(caps::VmxonBlocker::RegionTooLarge.name());
    }
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
    let Some(pages) = super::STORAGE.take() else {
        return StopReason::Platform("VMX storage already in use");
    };
    pages.reset(caps.revision_id());

    // VMXON: CR0/CR4 fixed bits, CR4.VMXE.
    hw::write_cr0(caps.fix_cr0(hw::read_cr0()));
    hw::write_cr4(caps.fix_cr4(hw::read_cr4() | CR4_VMXE));
    // A guest's checked XSETBV is carried out by the VMM, which needs CR4.OSXSAVE for it (before the
    // host CR4 is read into the VMCS below).
    cpu::enable_xsave();
    if hw::vmxon(hw::pa(&pages.vmxon)).is_err() {
        return StopReason::Unsupported("VMXON failed");
    }
    let vmcs_pa = hw::pa(&pages.vmcs);
    if hw::vmclear(vmcs_pa).is_err() || hw::vmptrld(vmcs_pa).is_err() {
        return StopReason::Unsupported("VMCLEAR/VMPTRLD of the VMCS failed");
    }

    // EPT for the window only; EPTP from the root's role.
    if caps.ept_vpid & (caps::ept_cap::WALK_4 | caps::ept_cap::WB | caps::ept_cap::PAGE_2M)
        != caps::ept_cap::WALK_4 | caps::ept_cap::WB | caps::ept_cap::PAGE_2M
    {
        return StopReason::Unsupported("EPT lacks 4-level walks, write-back or 2 MiB pages");
    }
    let role = MmuRole {
        level: 4,
        ad_disabled: caps.ept_vpid & caps::ept_cap::AD == 0,
        memtype: MT_WB,
    };
    // The window with the guest's W^X map (payload text r-x, read-only data r--, the rest rw-).
    let root = match pages.ept.build(role, &vm.map, hw::pa_ptr) {
        Ok(root) => root,
        Err(_) => return StopReason::Platform("EPT cannot map the guest memory map"),
    };
    let (img_start, img_end) = boot_info::image_range();
    let vmm_addrs = [
        img_start,
        img_end - 1,
        vmcs_pa,
        hw::pa(&pages.ept),
        root.hpa,
        boot_info::stack_address(),
    ];
    let tables = pages.ept.pt.iter().map(hw::pa);
    if vmm_addrs.into_iter().chain(tables).any(|a| {
        matches!(
            pages.ept.walk(root.hpa, a, hw::pa_ptr),
            Ok(Some(_)) | Err(_)
        )
    }) {
        return StopReason::Platform("EPT would expose VMM memory");
    }

    // Nothing cached from before this VMM may survive into the guest: the EPT root and VPID are new.
    if caps.ept_vpid & caps::ept_cap::INVEPT_ALL_CONTEXT != 0 && hw::invept_all().is_err() {
        return StopReason::Unsupported("INVEPT all-context failed");
    }
    if caps.ept_vpid & caps::ept_cap::INVVPID_ALL_CONTEXT != 0 && hw::invvpid_all().is_err() {
        return StopReason::Unsupported("INVVPID all-context failed");
    }

    let addrs = Addrs {
        io_bitmap_a: hw::pa(&pages.io_bitmap_a),
        io_bitmap_b: hw::pa(&pages.io_bitmap_b),
        msr_bitmap: hw::pa(&pages.msr_bitmap),
        virtual_apic: hw::pa(&pages.virtual_apic),
        eptp: ept::construct_eptp(Some(&root)),
    };
    let controls = match setup::controls(&caps, &addrs, tweak) {
        Ok(c) => c,
        Err(e) => return StopReason::Unsupported(e.0),
    };

    let mut vmcs = Vmcs(HwVmcs {
        vapic: &pages.virtual_apic,
    });
    let [cs, ss, ds, es, fs, gs, tr] = hw::selectors();
    let host = HostState {
        cr0: hw::read_cr0(),
        cr3: hw::read_cr3(),
        cr4: hw::read_cr4(),
        cs,
        ss,
        ds,
        es,
        fs,
        gs,
        tr: if tweak == Tweak::HostTrZero { 0 } else { tr },
        fs_base: cpu::rdmsr(MSR_FS_BASE),
        gs_base: cpu::rdmsr(MSR_GS_BASE),
        tr_base: tables::tss_base(),
        gdtr_base: tables::gdt_base(),
        idtr_base: tables::idt_base(),
        efer: cpu::rdmsr(MSR_EFER),
        pat: cpu::rdmsr(MSR_PAT),
        rip: hw::exit_entry(),
    };
    if setup::write_host(&mut vmcs, &host).is_err()
        || setup::write_guest(&mut vmcs, &caps, state).is_err()
    {
        return StopReason::Platform("VMWRITE of host or guest state failed");
    }
    let mut cpu = match Vmx::new(vmcs, caps, controls, opts) {
        Ok(c) => c,
        Err(e) => return StopReason::Backend(e),
    };
    cpu.regs.rdi = state.rdi;
    cpu.ept = Some(&mut pages.ept);
    // The instruction emulator and the virtual PMU for this guest; PERF_CAPABILITIES' immutable bits
    // are the host's (read only when CPUID says the MSR exists: PDCM). #UD is intercepted only for
    // forced emulation, so the default exit path is unchanged.
    let host_perf_caps = if cpu::cpuid(1, 0)[2] & (1 << 15) != 0 {
        cpu::rdmsr(msr::IA32_PERF_CAPABILITIES)
    } else {
        0
    };
    vm.emu = crate::vm::EmuState::new(
        max_pa,
        options.force_emulation,
        crate::x86::pmu::Pmu::new(true, host_perf_caps),
    );
    if options.force_emulation {
        if let Err(e) = cpu.intercept_ud() {
            return StopReason::Backend(e);
        }
    }
    let stop = vcpu::run(&mut cpu, vm);
    report(vm, cpu.diagnosis);
    stop
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
const _: () = assert!(hw::HOST_RSP_ENCODING == super::fields::HOST_RSP_ENCODING);

fn fail(f: hw::Fail) -> VmFail {
    match f {
        hw::Fail::Invalid => VmFail::Invalid,
        hw::Fail::Valid => VmFail::Valid,
    }
}

/// The current VMCS of this CPU, through the real instructions.
pub(crate) struct HwVmcs<'p> {
    /// The virtual-APIC page (read for VTPR while TPR shadow is on).
    vapic: &'p Page,
}

impl VmxOps for HwVmcs<'_> {
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
        hw::read_vtpr(self.vapic)
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
}
