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
    v.extend(super::traps(B));
    // No legacy timer (Cloud Hypervisor has none): the PIT's absence is detected at once, the clock still
    // reads, and the boot takes as long as with a PIT (it took 33 s when the PIT loop spun to its limit).
    v.push(
        hello(B)
            .machine("pit=off")
            .expect(&[
                "hello: monotonic clock reads ",
                "libvmm: clock: TSC ",
                "from the CMOS RTC's 1024 Hz periodic flag (~10 ms); CLOCK_REALTIME: the CMOS RTC",
            ])
            .forbid(&["no clock"])
            .limit(Duration::from_secs(10)),
    );
    // Neither a PIT nor an RTC: no clock, said at once, cached, and the payload still runs to the end.
    v.push(
        hello(B)
            .machine("pit=off,rtc=off")
            .expect(&[
                "PIT: absent (its read-back status reads 0xff); RTC: absent (register D reads 0xff)): clocks answer EINVAL",
                "hello: no clock (-22)",
            ])
            .limit(Duration::from_secs(10)),
    );
    // The same image booted by GRUB from an ISO: the multiboot2 entry, where `-kernel` uses PVH.
    let mut iso = Case::new(B, "hello", "", 0)
        .expect(&["libvmm: booted via multiboot2", "deprivileged on AMD SVM"])
        .named("boot hello from the GRUB ISO (multiboot2, QEMU pc)")
        .limit(Duration::from_secs(60));
    iso.grub_iso = true;
    v.push(iso.clone());
    // The same ISO under UEFI firmware (OVMF on q35): GRUB's EFI path, then the same multiboot2 entry.
    let mut uefi = iso
        .named("boot hello from the GRUB ISO under UEFI (OVMF, QEMU q35)")
        .limit(Duration::from_secs(90));
    uefi.uefi = true;
    v.push(uefi);
    v.extend(x86_memory_attacks(B));
    v.extend(super::wx_attacks(
        B,
        libvmm_abi::layout::x86_64::WINDOW_BASE,
        libvmm_abi::layout::x86_64::PAYLOAD_BASE,
    ));
    v.push(exitbench(B));
    v.push(super::exitbench_stats(B, &["cpuid 1001", "hypercall 1046"]));
    v.extend(forged_result_timed(B));
    v.push(control_registers(B));
    v.extend(super::guestfuzz(B));
    v
}

/// The hostile payload's control-register checks, one `hostile: ok <rule>` line each: the guest's
/// CR0/CR4 and XCR0 writes get the SDM/APM answer (#GP(0), #UD for XSETBV without CR4.OSXSAVE), valid
/// ones take effect, and each checked write exits to the VMM. The same list on SVM and VMX: the same
/// answers on both vendors. (`cr4-pcide-*` and `xsetbv-avx-*` depend on the emulated CPU: the payload
/// checks the variant its CPUID allows.)
pub const CR_RULES: &[&str] = &[
    "hostile: ok cr0-bit63-is-gp",
    "hostile: ok cr0-bit32-is-gp",
    "hostile: ok cr0-nw-without-cd-is-gp",
    "hostile: ok cr0-pg-without-pe-is-gp",
    "hostile: ok cr0-clearing-pg-in-long-mode-is-gp",
    "hostile: ok cr0-unchanged-after-refused-writes",
    "hostile: ok cr0-cd-nw-write-takes-effect",
    "hostile: ok cr0-write-exits-to-the-vmm",
    "hostile: ok cr0-ts-set-then-clts",
    "hostile: ok cr0-lmsw-takes-effect",
    "hostile: ok cr4-reserved-bit-is-gp",
    "hostile: ok cr4-clearing-pae-in-long-mode-is-gp",
    "hostile: ok cr4-changing-la57-in-long-mode-is-gp",
    "hostile: ok cr4-pcide-",
    "hostile: ok cr4-valid-write-takes-effect",
    "hostile: ok cr4-write-exits-to-the-vmm",
    "hostile: ok cr4-unchanged-after-refused-writes",
    "hostile: ok cpuid-osxsave-clear-while-cr4-osxsave-clear",
    "hostile: ok xsetbv-without-cr4-osxsave-is-ud",
    "hostile: ok cr4-osxsave-takes-effect-and-cpuid-follows",
    "hostile: ok xsetbv-x87-clear-is-gp",
    "hostile: ok xsetbv-avx-without-sse-is-gp",
    "hostile: ok xsetbv-reserved-bit63-is-gp",
    "hostile: ok xsetbv-bit-cpuid-0xd-does-not-offer-is-gp",
    "hostile: ok xsetbv-xcr1-is-gp",
    "hostile: ok xsetbv-sse-takes-effect",
    "hostile: ok xsetbv-exits-to-the-vmm",
    "hostile: ok xcr0-and-cr4-restored",
];

/// One boot of the hostile payload whose console must show every control-register rule answered.
pub fn control_registers(backend: Backend) -> Case {
    Case::new(
        backend,
        "hostile",
        "attack=halt",
        StopCode::GuestError as u8,
    )
    .expect(CR_RULES)
    .expect(&[" recoverable checks passed, 0 failed"])
    .forbid(&[
        "hostile: FAIL",
        "libvmm: VMM",
        "payload: unexpected exception",
    ])
    .named("hostile guest CR0/CR4/XCR0 writes answered as the SDM/APM say")
}
