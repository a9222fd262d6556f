//! Intel VMX (Bochs 2.7, `corei7_skylake_x`, from a GRUB ISO): the payloads, the hostile payload's
//! attacks, the forged-result attacks, and the VM-entry consistency checks both ways.
use libvmm_abi::stop::StopCode;

use super::{exitbench, forged_result_timed, hello, x86_memory_attacks, Case};
use crate::backend::Backend;

const B: Backend = Backend::Vmx;

pub fn cases() -> Vec<Case> {
    let mut v = super::timed_spin(B);
    v.push(super::std_demo(B));
    // std threads on Bochs' two CPUs (VMX guest SMP under the same x86 runtime as SVM's).
    v.push(super::std_smp(B, 2));
    v.push(hello(B).single_cpu(super::HELLO_ONE_CPU));
    v.push(super::smp_hello(B, 2));
    // Guest SMP on Bochs' two CPUs (`cpu: count=2`): the checks, a short stress, the storm, the shared
    // first touch, an exit while the AP starts, the hostile ICR cases (each 3-7 s of Bochs).
    v.push(super::smp(B, 1));
    v.push(super::smp(B, 2));
    // A CPU failing bring-up (on purpose: libvmm.selftest=ap-fail): hello, Bochs being slow.
    v.extend(super::ap_fail(B, "hello", 2));
    v.extend(super::smp_stress_on(B, 2, 20));
    v.push(super::smp_hostile_x86_on(B, 2));
    v.extend(super::svm::emulator_cases(B));
    v.push(super::timer(B));
    v.extend(super::apic_attacks(B));
    v.extend(super::traps(B));
    v.extend(x86_memory_attacks(B));
    v.extend(super::wx_attacks(
        B,
        libvmm_abi::layout::x86_64::WINDOW_BASE,
        libvmm_abi::layout::x86_64::PAYLOAD_BASE,
    ));
    v.push(exitbench(B));
    v.push(super::exitbench_stats(B, &["cpuid 1001", "hypercall 1046"]));
    v.extend(consistency_checks());
    v.extend(forged_result_timed(B));
    // The same control-register rules as on SVM, with the same answers.
    v.push(super::svm::control_registers(B));
    v.extend(super::guestfuzz(B));
    v
}

/// The VM-entry consistency-check cases, both ways: with the software checks on, each bad
/// configuration stops before the CPU sees it (stop code 103, the rule named); with them bypassed
/// (`libvmm.vmx.skip-checks`), Bochs refuses the same entry with VM-instruction error 7 and the debug report
/// names the software check that would have caught it. Last, a host-state fault the checks do not
/// cover shows the "missed consistency check" report (error 8).
fn consistency_checks() -> Vec<Case> {
    let cc = StopCode::ConsistencyCheck as u8;
    let be = StopCode::BackendError as u8;
    let caught = |cmdline: &'static str, rule: &str| {
        Case::new(B, "hello", cmdline, cc)
            .expect_line(format!("VM-entry consistency check failed: {rule}"))
            .forbid(&["Hello from", "MISSED CONSISTENCY CHECK"])
    };
    let cpu_refuses = |cmdline: &'static str, rule: &str| {
        Case::new(B, "hello", cmdline, be)
            .expect(&["VM entry failed: VM entry with invalid control field(s) (0x7)"])
            .expect_line(format!("the software check that catches it: {rule}"))
            .forbid(&["Hello from", "MISSED CONSISTENCY CHECK"])
    };
    const TPR_HIGH: &str =
        "TPR_THRESHOLD[31:4] must be 0 with use-TPR-shadow on and virtual-interrupt delivery off";
    const TPR_VTPR: &str = "TPR_THRESHOLD[3:0] must not exceed VTPR[7:4]";
    const TSC: &str = "TSC_MULTIPLIER must not be 0 with use-TSC-scaling on";
    let unsupported = StopCode::Unsupported as u8;
    vec![
        caught("libvmm.vmx.bad=tpr-threshold", TPR_HIGH),
        cpu_refuses(
            "libvmm.vmx.bad=tpr-threshold libvmm.vmx.skip-checks libvmm.vmx.report-missed",
            TPR_HIGH,
        ),
        caught("libvmm.vmx.bad=tpr-vtpr", TPR_VTPR),
        cpu_refuses(
            "libvmm.vmx.bad=tpr-vtpr libvmm.vmx.skip-checks libvmm.vmx.report-missed",
            TPR_VTPR,
        ),
        caught("libvmm.vmx.bad=tsc-multiplier", TSC),
        cpu_refuses(
            "libvmm.vmx.bad=tsc-multiplier libvmm.vmx.skip-checks libvmm.vmx.report-missed",
            TSC,
        ),
        Case::new(
            B,
            "hello",
            "libvmm.vmx.bad=host-tr libvmm.vmx.report-missed",
            be,
        )
        .expect(&[
            "!!! MISSED CONSISTENCY CHECK !!!",
            "VM entry with invalid host-state field(s) (0x8)",
        ])
        .forbid(&["Hello from"]),
        // A VMX CPU whose EPT lacks what libvmm needs (Penryn) and one without VMX (an AMD model): refused
        // by name.
        Case::new(B, "hello", "", unsupported)
            .expect(&["unsupported: EPT lacks 4-level walks, write-back or 2 MiB pages"])
            .forbid(&["Hello from"])
            .cpu("core2_penryn_t9600"),
        Case::new(B, "hello", "", unsupported)
            .expect(&["unsupported: CPUID.1:ECX.VMX[5] is 0"])
            .forbid(&["Hello from"])
            .cpu("athlon64_venice"),
        Case::new(B, "hello", "libvmm.vmx.report-missed", 0)
            .expect(&["Hello from a libvmm guest!"])
            .forbid(&["MISSED CONSISTENCY CHECK", "vmx debug"]),
    ]
}
