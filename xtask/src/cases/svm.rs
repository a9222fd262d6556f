//! AMD SVM (QEMU x86, `-cpu max -M microvm`): the VMM's own failure paths, CPUs without SVM, the
//! hostile payload's attacks, the forged-result attacks, and the multiboot2 path through a GRUB ISO.
use std::time::Duration;

use libvmm_abi::stop::StopCode;

use super::{exitbench, forged_result_timed, hello, x86_memory_attacks, Case};
use crate::backend::Backend;

const B: Backend = Backend::Svm;

pub fn cases() -> Vec<Case> {
    let vmm = |cmdline, code: StopCode, expect: &str| {
        Case::new(B, "hello", cmdline, code as u8)
            .expect(&[expect])
            .forbid(&["Hello from a libvmm guest"])
    };
    let mut v = vec![
        vmm(
            "libvmm.selftest=panic",
            StopCode::VmmPanic,
            "libvmm: VMM panic at libvmm/src/boot/mod.rs:",
        ),
        vmm(
            "libvmm.selftest=fault",
            StopCode::VmmPanic,
            "libvmm: VMM exception 6 (error 0x0) at rip 0x",
        ),
        vmm(
            "",
            StopCode::Unsupported,
            "SVM missing: CPUID 0x8000_0001 ECX bit 2 (SVM) is clear",
        )
        .cpu("qemu64,-svm"),
        vmm(
            "",
            StopCode::Unsupported,
            "nested paging missing: CPUID 0x8000_000A EDX bit 0 (NP) is clear",
        )
        .cpu("qemu64,+svm,-npt"),
    ];
    v.extend(super::timed_spin(B));
    v.push(hello(B));
    // The same image booted by GRUB from an ISO: the multiboot2 entry, where `-kernel` uses PVH.
    let mut iso = Case::new(B, "hello", "", 0)
        .expect(&["libvmm: booted via multiboot2", "deprivileged on AMD SVM"])
        .named("boot hello from the GRUB ISO (multiboot2, QEMU pc)")
        .limit(Duration::from_secs(60));
    iso.grub_iso = true;
    v.push(iso);
    v.extend(x86_memory_attacks(B));
    v.extend(super::wx_attacks(
        B,
        libvmm_abi::layout::x86_64::WINDOW_BASE,
        libvmm_abi::layout::x86_64::PAYLOAD_BASE,
    ));
    v.push(exitbench(B));
    v.extend(forged_result_timed(B));
    v
}
