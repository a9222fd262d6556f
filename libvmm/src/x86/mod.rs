//! Vendor-neutral x86 vocabulary and pieces shared by the SVM and VMX backends (and by `arch::x86_64`,
//! which may import this folder but no backend): MSR numbers, the guest register block, segments, the
//! boot protocols, the initial guest state.
#![forbid(unsafe_code)]

// Control-register bits, shared by the CR policy and the backends.
pub(crate) mod cr;
// The MSR vocabulary is shared with the generic MSR policy, which every image compiles.
pub(crate) mod msr;
// The virtual PMU (VMX guests): CPUID 0xA, the PMU MSRs, counting what the emulator retires.
#[cfg(any(test, feature = "fuzzing", target_os = "none"))]
pub(crate) mod pmu;

#[cfg(any(
    test,
    feature = "fuzzing",
    all(target_os = "none", target_arch = "x86_64")
))]
pub(crate) mod acpi;
// The virtual x2APIC is pure; every image compiles it because the generic `Vm` holds one per vCPU
// (only the x86 backends drive it).
#[cfg(any(test, feature = "fuzzing", target_os = "none"))]
pub(crate) mod apic;
#[cfg(any(
    test,
    feature = "fuzzing",
    all(target_os = "none", target_arch = "x86_64")
))]
pub(crate) mod bootproto;
#[cfg(any(test, all(target_os = "none", target_arch = "x86_64")))]
pub(crate) mod clock;
// The instruction emulator; its decoder is an x86_64-only dependency.
#[cfg(all(
    target_arch = "x86_64",
    any(test, feature = "fuzzing", target_os = "none")
))]
pub(crate) mod emulate;
#[cfg(any(
    test,
    feature = "fuzzing",
    all(target_os = "none", target_arch = "x86_64")
))]
pub(crate) mod gprs;
#[cfg(any(
    test,
    feature = "fuzzing",
    all(target_os = "none", target_arch = "x86_64")
))]
pub(crate) mod guest_setup;
#[cfg(any(
    test,
    feature = "fuzzing",
    all(target_os = "none", target_arch = "x86_64")
))]
pub(crate) mod segment;
#[cfg(any(test, feature = "kvm-models"))]
pub(crate) mod user_return_msr;
