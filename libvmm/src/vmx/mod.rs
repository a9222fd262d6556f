//! Intel VMX backend.
//!
//! Bring-up order ([`hw`], over the same [`vmcs::VmxOps`] trait as the exit path): capabilities ([`caps`]) -> IA32_FEATURE_CONTROL and the
//! CR0/CR4 fixed bits -> VMXON -> VMCLEAR/VMPTRLD of the one VMCS -> EPT for the guest window ([`ept`],
//! EPTP from the root's role) -> controls adjusted to the capability MSRs ([`setup`]) -> host and guest
//! state -> the generic run loop over [`vcpu::Vmx`], which runs the software VM-entry consistency checks
//! ([`checks`]) before entering and decodes exits ([`decode`]).
//!
//! Guest SMP: each AP enters VMX operation with pages of its own ([`pages::VmxCpuPages`]) and runs its
//! vCPU with [`hw::run_ap`] over the boot CPU's EPT and bitmaps: each STARTUP restarts it in real mode
//! under "unrestricted guest" ([`setup::ap_controls`], [`setup::write_guest_sipi`]).
//!
//! Everything here is safe code over the raw VMX operations of [`vmcs::VmxOps`]; the instructions
//! themselves live in `arch::x86_64::vmx`. Host tests drive the same code through a model VMCS.
#![forbid(unsafe_code)]
// fuzzing: the fuzz targets drive the decoder and checks, not the bring-up that uses the rest.
#![cfg_attr(all(feature = "fuzzing", not(test)), allow(dead_code))]

pub(crate) mod caps;
pub(crate) mod checks;
pub(crate) mod controls;
pub(crate) mod decode;
pub(crate) mod emulate;
pub(crate) mod ept;
pub(crate) mod fields;
pub(crate) mod hw;
pub(crate) mod pages;
pub(crate) mod setup;
pub(crate) mod vcpu;
pub(crate) mod vmcs;
#[cfg(all(feature = "vmx", target_os = "none"))]
pub(crate) use hw::boot;

/// The pages the VMX backend runs on (VMXON region, VMCS, bitmaps, virtual-APIC page, EPT), in `.bss`,
/// handed out once to the bring-up.
#[cfg(all(feature = "vmx", target_os = "none"))]
pub(crate) static STORAGE: crate::arch::take_once::TakeOnce<pages::VmxStorage> =
    crate::arch::take_once::TakeOnce::new(pages::VmxStorage::zeroed());

/// Per-AP VMX pages (VMXON region, VMCS): CPU n (n >= 1) takes element n - 1, once.
#[cfg(all(feature = "vmx", target_os = "none"))]
pub(crate) static AP_STORAGE: [crate::arch::take_once::TakeOnce<pages::VmxCpuPages>;
    crate::config::MAX_CPUS - 1] =
    [const { crate::arch::take_once::TakeOnce::new(pages::VmxCpuPages::zeroed()) };
        crate::config::MAX_CPUS - 1];
