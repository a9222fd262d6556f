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
        // A Rust std program (hermit target, -Zbuild-std): the lines every backend checks.
        super::std_demo(B),
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
    v.push(hello(B).single_cpu(super::HELLO_ONE_CPU));
    // Guest memory: the machine's (QEMU -m 128: 94 MiB above 32 MiB), or less with libvmm.mem; more
    // than there is stops the boot naming both sizes.
    v.push(
        hello(B)
            .expect(&[
                "libvmm: guest memory 0x2000000..0x7e00000 (94 MiB; 2 MiB zeroed at boot, the rest on first touch)",
            ])
            .named("boot hello: guest memory is the machine's (94 of 128 MiB)"),
    );
    v.push(
        Case::new(B, "hello", "libvmm.mem=256M", StopCode::PlatformError as u8)
            .expect(&["guest memory: libvmm.mem asks for 256 MiB, but only 94 MiB are available"])
            .forbid(&["Hello from a libvmm guest"]),
    );
    // With the machine's memory for the guest, std-demo's eight threads take std's default 1 MiB stacks
    // (no RUST_MIN_STACK): their blocks are zeroed and mapped as the threads first touch them.
    v.push(
        Case::new(B, "std-demo", "DEMO=yes libvmm.stats=1 -- std-demo a b", 3)
            .machine_mb(512)
            .expect(&[
                "libvmm: guest memory 0x2000000..0x1fe00000 (478 MiB; 2 MiB zeroed at boot",
                "std-demo: threads counter 8000 sum 280 ok",
                "std-demo: condvar ok, channel sum 14 ok",
                "libvmm: stats: exit guest-memory-fault ",
            ])
            .forbid(&["panicked"])
            .single_cpu(super::X86_FIRST_TOUCH),
    );
    v.push(Case::new(B, "hello", "libvmm.mem=16M", 0).expect(&[
        "Hello from a libvmm guest! This payload runs deprivileged on AMD SVM.",
        "libvmm: guest memory 0x2000000..0x3000000 (16 MiB; 2 MiB zeroed at boot, the rest on first touch)",
    ]));
    v.push(super::smp_hello(B, 2));
    v.push(super::smp_hello(B, 4));
    // std threads on every vCPU (the guest starts its APs at the first spawn; idle CPUs are woken by
    // the scheduler's IPI), and the deadlock report with every CPU idle.
    v.push(super::std_smp(B, 1));
    v.push(super::std_smp(B, 2));
    v.push(super::std_smp(B, 4));
    v.push(super::std_smp_deadlock(B, 1));
    v.push(super::std_smp_deadlock(B, 2));
    // Guest SMP: the guest starts its APs with INIT + SIPI through its virtual x2APIC.
    v.push(super::smp(B, 1));
    v.push(super::smp(B, 2));
    v.push(super::smp(B, 4));
    // A CPU failing bring-up (on purpose: libvmm.selftest=ap-fail), run on the rest or stop.
    v.extend(super::ap_fail(B, "smp", 4));
    v.extend(super::smp_stress(B));
    v.push(super::smp_hostile_x86(B));
    v.extend(super::smp_time_limit(B, &[false, true]));
    v.extend(emulator_cases(B));
    v.push(super::timer(B));
    v.extend(super::apic_attacks(B));
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
    // Two CPUs from the ISO: the RSDP comes from GRUB's multiboot2 ACPI tag, not the PVH start info.
    let mut iso_smp = super::smp_hello(B, 2)
        .expect(&["libvmm: booted via multiboot2"])
        .named("boot hello from the GRUB ISO (multiboot2, QEMU pc) on 2 CPUs")
        .limit(Duration::from_secs(60));
    iso_smp.grub_iso = true;
    v.push(iso_smp);
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

/// The instruction emulator (issue 13), on SVM and VMX alike: payload `pmu` with forced emulation on
/// (forced-emulated branches, stack and arithmetic instructions, the MMIO test device, REP string I/O;
/// the virtual PMU's checks on VMX, the PMU hidden on SVM), the same payload with forced emulation off
/// (the prefix is the guest's own #UD), and the hostile payload's emulator attacks, recoverable and fatal.
pub fn emulator_cases(b: Backend) -> Vec<Case> {
    // VMX runs the 11 forced-emulated instructions twice (results, then counted by the vPMU).
    let (checks, pmu_line, uds): (&str, &str, &str) = if b == Backend::Vmx {
        (
            "pmu: 12 checks passed, 0 failed",
            "pmu: counted 11 instructions, 5 branches (fixed 11); errata 0x0",
            "libvmm: stats: exit ud 22",
        )
    } else {
        (
            "pmu: 6 checks passed, 0 failed",
            "pmu: ok svm-pmu-hidden",
            "libvmm: stats: exit ud 11",
        )
    };
    let mut v = vec![
        Case::new(b, "pmu", "libvmm.force_emulation=1 libvmm.stats=1", 0)
            .expect(&[
                "pmu: ok forced-emulation-results",
                "pmu: ok mmio-scratch-register",
                "pmu: ok rep-insb",
                checks,
                pmu_line,
                uds,
            ])
            .forbid(&["FAIL"]),
        Case::new(b, "pmu", "", StopCode::PayloadAbort as u8)
            .expect(&["payload: unexpected exception 6"])
            .forbid(&["pmu: ok forced-emulation-results"])
            .named("pmu without force_emulation: the prefix is the guest's #UD"),
    ];
    // Pinned at the smallest window, like every hostile case (`super::hostile`): the addresses are fixed.
    let hostile = |attack: &'static str, code: StopCode, expect: &str| {
        let attack: &'static str = Box::leak(format!("{attack} libvmm.mem=8M").into());
        Case::new(b, "hostile", attack, code as u8)
            .expect(&[
                " recoverable checks passed, 0 failed",
                "hostile: ok emu-enter-huge-frame",
                "hostile: ok emu-mmio-insn-across-page",
            ])
            .expect_line(expect.to_string())
            .forbid(&["FAIL"])
    };
    v.push(hostile(
        "libvmm.force_emulation=1 emu=1 attack=emu-vmm-read",
        StopCode::GuestError,
        "instruction emulation stopped: emulated access to unmapped gpa 0x100000",
    ));
    v.push(hostile(
        "libvmm.force_emulation=1 emu=1 attack=emu-mmio-straddle",
        StopCode::GuestMemoryViolation,
        "guest memory violation: read of guest-physical 0x2ffffffc outside guest memory",
    ));
    v.push(
        hostile(
            "libvmm.force_emulation=1 emu=1 attack=emu-rep-forever",
            StopCode::GuestError,
            "instruction emulation stopped: emulated access to unmapped gpa 0x2800000",
        )
        .limit(Duration::from_secs(150)),
    );
    v
}
