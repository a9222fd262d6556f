//! VMX on the real instructions: bring-up on this CPU and the run of the guest through the generic
//! loop. Safe code over `arch::x86_64::vmx`; mirrors the SVM bring-up.
#![forbid(unsafe_code)]

use libvmm_abi::layout::{x86_64::WINDOW_BASE, BOOT_INFO_OFFSET};
use libvmm_abi::BootInfo;

use crate::arch::x86_64::{boot as boot_info, cpu, tables, vmx as hw};
use crate::vcpu::{self, Platform, StopReason, Vm};
use crate::x86::guest_setup::InitialState;

use super::caps::{self, msr, Caps, CR4_VMXE};
use super::ept::{self, MmuRole, MT_WB};
use super::setup::{self, parse_options, Addrs, HostState, Tweak};
use super::vcpu::{EntryDiagnosis, Vmx};
use super::vmcs::{instruction_error_name, Vmcs};

use crate::x86::msr::{
    EFER as MSR_EFER, FS_BASE as MSR_FS_BASE, GS_BASE as MSR_GS_BASE, IA32_PAT as MSR_PAT,
};

fn cmdline<'a, P: Platform>(vm: &'a Vm<'_, P>) -> &'a [u8] {
    let gpa = WINDOW_BASE + BOOT_INFO_OFFSET;
    let Ok(raw) = vm.mem.slice(gpa, 64) else {
        return &[];
    };
    let mut bytes = [0u8; 64];
    bytes.copy_from_slice(raw);
    let bi = BootInfo::from_bytes(&bytes);
    vm.mem.slice(bi.cmdline_gpa, bi.cmdline_len).unwrap_or(&[])
}

/// Brings VMX up on this CPU and runs the guest until it stops.
pub(crate) fn boot<P: Platform>(vm: &mut Vm<'_, P>, state: &InitialState) -> StopReason {
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
    let (opts, tweak) = parse_options(cmdline(vm));
    if tweak != Tweak::None || opts.skip_checks {
        crate::vmm_print!(
            vm.platform.console(),
            "libvmm: vmx debug: configuration {:?}, software checks {}\n",
            tweak,
            if opts.skip_checks { "BYPASSED" } else { "on" }
        );
    }

    let Some(pages) = hw::take_storage() else {
        return StopReason::Platform("VMX storage already in use");
    };
    pages.reset(caps.revision_id());

    // VMXON: CR0/CR4 fixed bits, CR4.VMXE.
    hw::write_cr0(caps.fix_cr0(hw::read_cr0()));
    hw::write_cr4(caps.fix_cr4(hw::read_cr4() | CR4_VMXE));
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
    let root = pages.ept.build(role, hw::pa_ptr);
    let (img_start, img_end) = boot_info::image_range();
    let vmm_addrs = [
        img_start,
        img_end - 1,
        vmcs_pa,
        hw::pa(&pages.ept),
        root.hpa,
        boot_info::stack_address(),
    ];
    if vmm_addrs.iter().any(|&a| {
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

    let mut vmcs = Vmcs(hw::HwVmcs {
        vapic: pages.virtual_apic.0.as_ptr(),
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
