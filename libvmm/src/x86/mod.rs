//! Vendor-neutral x86 vocabulary and pieces shared by the SVM and VMX backends (and by `arch::x86_64`,
//! which may import this folder but no backend): MSR numbers, the guest register block, segments, the
//! boot protocols, the initial guest state.
#![forbid(unsafe_code)]

// The MSR vocabulary is shared with the generic MSR policy, which every image compiles.
pub(crate) mod msr;

#[cfg(any(
    test,
    feature = "fuzzing",
    all(target_os = "none", target_arch = "x86_64")
))]
pub(crate) mod bootproto;
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
