//! CPUID policy: the host's answers, filtered to what a libvmm guest really has, plus the hypervisor
//! leaves 0x4000_0000 (signature) and 0x4000_0001 (ABI version, hypercall instruction, backend).
//!
//! Leaves are allow-listed: anything not listed reads as zeros, so new host features never leak into a
//! guest by default. Virtualization (VMX, SVM) and MONITOR/MWAIT (intercepted as #UD) are hidden; the
//! local APIC is libvmm's virtual x2APIC (`x86::apic`, leaf 1 x2APIC and TSC-deadline, leaves 0xB/0x1F
//! the topology). The PMU: VMX guests see libvmm's virtual PMU (`x86::pmu`: leaf 0xA, leaf 1 ECX.PDCM for
//! PERF_CAPABILITIES, and the host model's over-count errata in leaf 0x4000_0002); every other guest sees
//! none (leaf 0xA zero, PDCM and AMD's PerfCtrExtCore clear).
#![forbid(unsafe_code)]

use libvmm_abi::{BackendId, HypercallInsn, ABI_VERSION, CPUID_MAX_HV_LEAF, CPUID_SIGNATURE};

/// Highest basic leaf a guest is shown (0x1F: the V2 extended topology leaf).
pub const MAX_BASIC_LEAF: u32 = 0x1F;
/// Highest extended leaf a guest is shown.
pub const MAX_EXT_LEAF: u32 = 0x8000_0008;

mod bit {
    // Leaf 1 ECX
    pub const MONITOR: u32 = 1 << 3;
    pub const VMX: u32 = 1 << 5;
    pub const SMX: u32 = 1 << 6;
    pub const X2APIC: u32 = 1 << 21;
    pub const OSXSAVE: u32 = 1 << 27;
    pub const TSC_DEADLINE: u32 = 1 << 24;
    pub const HYPERVISOR: u32 = 1 << 31;
    pub const PDCM: u32 = 1 << 15;
    // Leaf 1 EDX
    pub const APIC: u32 = 1 << 9;
    /// Leaf 1 EDX: EBX[23:16] counts more than one logical processor.
    pub const HTT: u32 = 1 << 28;
    // Leaf 7.0 ECX
    pub const OSPKE: u32 = 1 << 4;
    pub const WAITPKG: u32 = 1 << 5;
    // Leaf 0x8000_0001 ECX
    pub const SVM: u32 = 1 << 2;
    pub const SKINIT: u32 = 1 << 12;
    pub const MONITORX: u32 = 1 << 29;
    pub const PERFCTR_CORE: u32 = 1 << 23;
}

/// The hypercall instruction of a backend.
pub const fn hypercall_insn(backend: BackendId) -> HypercallInsn {
    match backend {
        BackendId::Svm => HypercallInsn::Vmmcall,
        BackendId::Vmx | BackendId::Tdx => HypercallInsn::Vmcall,
        BackendId::RiscvH => HypercallInsn::Ecall,
    }
}

pub use crate::vm::Topology;

/// The guest's CPUID answer for `leaf`/`subleaf`; `host` runs the real instruction. `guest_cr4` is the
/// guest's CR4: the OS-enable bits (leaf 1 ECX.OSXSAVE, leaf 7 ECX.OSPKE) mirror the guest's CR4.OSXSAVE
/// and CR4.PKE as on hardware, never the host's.
pub fn answer(
    leaf: u32,
    subleaf: u32,
    backend: BackendId,
    guest_cr4: u64,
    topo: Topology,
    host: impl Fn(u32, u32) -> [u32; 4],
) -> [u32; 4] {
    use super::cr::cr4;
    let os_bit = |word: u32, bit: u32, on: bool| if on { word | bit } else { word & !bit };
    let word = |b: &[u8]| u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
    match leaf {
        0 => {
            let [max, b, c, d] = host(0, 0);
            [max.min(MAX_BASIC_LEAF), b, c, d]
        }
        1 => {
            let [a, b, c, d] = host(1, 0);
            // EBX[31:24] initial APIC id (the vCPU's number), EBX[23:16] the logical processors of the
            // package (every vCPU), EDX.HTT with more than one.
            let count = topo.count.clamp(1, 255);
            let b = (b & 0x0000_FFFF) | (topo.id & 0xFF) << 24 | count << 16;
            let d = if count > 1 {
                d | bit::HTT
            } else {
                d & !bit::HTT
            };
            // The virtual x2APIC (x86::apic): x2APIC mode and the TSC-deadline timer, whatever the
            // host has (both are emulated); EDX.APIC: the APIC is present (enabled at reset).
            let c = (c & !(bit::MONITOR | bit::VMX | bit::SMX))
                | bit::HYPERVISOR
                | bit::X2APIC
                | bit::TSC_DEADLINE;
            let c = os_bit(c, bit::OSXSAVE, guest_cr4 & cr4::OSXSAVE != 0);
            let c = os_bit(c, bit::PDCM, backend == BackendId::Vmx);
            let d = d | bit::APIC;
            [a, b, c, d]
        }
        2 | 4 | 0xD => host(leaf, subleaf),
        0xB | 0x1F => topology(subleaf, topo),
        0xA if backend == BackendId::Vmx => crate::x86::pmu::cpuid_0a(),
        7 if subleaf == 0 => {
            let [a, b, c, d] = host(7, 0);
            // EAX: max subleaf; only subleaf 0 is shown.
            let _ = a;
            let c = os_bit(c & !bit::WAITPKG, bit::OSPKE, guest_cr4 & cr4::PKE != 0);
            [0, b, c, d]
        }
        0x4000_0000 => [
            CPUID_MAX_HV_LEAF,
            word(&CPUID_SIGNATURE[0..4]),
            word(&CPUID_SIGNATURE[4..8]),
            word(&CPUID_SIGNATURE[8..12]),
        ],
        0x4000_0001 => [
            ABI_VERSION,
            hypercall_insn(backend) as u32,
            backend as u32,
            0,
        ],
        0x4000_0002 => {
            let errata = match backend {
                BackendId::Vmx => crate::x86::pmu::errata(host(0, 0), host(1, 0)[0]),
                _ => crate::x86::pmu::Errata::default(),
            };
            [errata.bits(), 0, 0, 0]
        }
        0x8000_0000 => {
            let [max, b, c, d] = host(0x8000_0000, 0);
            [max.min(MAX_EXT_LEAF), b, c, d]
        }
        0x8000_0001 => {
            let [a, b, c, d] = host(leaf, 0);
            [
                a,
                b,
                c & !(bit::SVM | bit::SKINIT | bit::MONITORX | bit::PERFCTR_CORE),
                d,
            ]
        }
        0x8000_0002..=0x8000_0008 => host(leaf, subleaf),
        _ => [0; 4],
    }
}

/// Leaf 0xB / 0x1F (extended topology): every vCPU a core of one package, x2APIC ID = vCPU number.
/// Subleaf 0 is the SMT level (one thread per core, no ID bits to shift), 1 the core level (all vCPUs;
/// EAX the ID bits the cores take), higher subleaves are invalid (type 0, ECX[7:0] = the subleaf). EDX
/// is the x2APIC ID.
fn topology(subleaf: u32, topo: Topology) -> [u32; 4] {
    const SMT: u32 = 1 << 8;
    const CORE: u32 = 2 << 8;
    let count = topo.count.max(1);
    let shift = 32 - (count - 1).leading_zeros();
    match subleaf {
        0 => [0, 1, SMT, topo.id],
        1 => [shift, count & 0xFFFF, CORE | 1, topo.id],
        n => [0, 0, n & 0xFF, topo.id],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A host that has every feature bit set in every leaf.
    fn all_ones(leaf: u32, _: u32) -> [u32; 4] {
        match leaf {
            0 => [0x20, 1, 2, 3],
            0x8000_0000 => [0x8000_0021, 0, 0, 0],
            _ => [u32::MAX; 4],
        }
    }

    #[test]
    fn hypervisor_leaf_carries_the_libvmm_signature() {
        let r = answer(0x4000_0000, 0, BackendId::Svm, 0, Topology::ONE, all_ones);
        let mut sig = [0u8; 12];
        sig[0..4].copy_from_slice(&r[1].to_le_bytes());
        sig[4..8].copy_from_slice(&r[2].to_le_bytes());
        sig[8..12].copy_from_slice(&r[3].to_le_bytes());
        assert_eq!(&sig, b"libvmmlibvmm");
        assert_eq!(r[0], CPUID_MAX_HV_LEAF);
    }

    #[test]
    fn leaf_4000_0001_names_backend_and_hypercall_insn() {
        assert_eq!(
            answer(0x4000_0001, 0, BackendId::Svm, 0, Topology::ONE, all_ones),
            [ABI_VERSION, 1, 1, 0]
        );
        assert_eq!(
            answer(0x4000_0001, 0, BackendId::Vmx, 0, Topology::ONE, all_ones),
            [ABI_VERSION, 2, 2, 0]
        );
    }

    #[test]
    fn virtualization_is_hidden_and_hypervisor_bit_set() {
        let l1 = answer(1, 0, BackendId::Vmx, 0, Topology::ONE, all_ones);
        assert_eq!(l1[2] & bit::VMX, 0);
        assert_ne!(l1[2] & bit::HYPERVISOR, 0);
        assert_eq!(l1[1] >> 24, 0);
        let e1 = answer(0x8000_0001, 0, BackendId::Svm, 0, Topology::ONE, all_ones);
        assert_eq!(e1[2] & bit::SVM, 0);
        assert_eq!(
            answer(0x8000_000A, 0, BackendId::Svm, 0, Topology::ONE, all_ones),
            [0; 4]
        );
    }

    #[test]
    fn topology_follows_the_vcpu_and_the_vcpu_count() {
        let t = Topology { id: 2, count: 4 };
        let l1 = answer(1, 0, BackendId::Svm, 0, t, all_ones);
        assert_eq!(l1[1] >> 24, 2);
        assert_eq!((l1[1] >> 16) & 0xFF, 4);
        assert_ne!(l1[3] & bit::HTT, 0);
        for leaf in [0xB, 0x1F] {
            assert_eq!(
                answer(leaf, 0, BackendId::Svm, 0, t, all_ones),
                [0, 1, 1 << 8, 2]
            );
            assert_eq!(
                answer(leaf, 1, BackendId::Svm, 0, t, all_ones),
                [2, 4, (2 << 8) | 1, 2]
            );
            assert_eq!(answer(leaf, 2, BackendId::Svm, 0, t, all_ones)[3], 2);
        }
        let three = Topology { id: 0, count: 3 };
        assert_eq!(answer(0xB, 1, BackendId::Svm, 0, three, all_ones)[0], 2);
        let one = answer(1, 0, BackendId::Svm, 0, Topology::ONE, all_ones);
        assert_eq!(one[3] & bit::HTT, 0);
        assert_eq!((one[1] >> 16) & 0xFF, 1);
    }

    #[test]
    fn the_virtual_x2apic_is_shown_whatever_the_host_has() {
        let none = |_, _| [0u32; 4];
        let l1 = answer(1, 0, BackendId::Svm, 0, Topology::ONE, none);
        assert_ne!(l1[2] & bit::X2APIC, 0);
        assert_ne!(l1[2] & bit::TSC_DEADLINE, 0);
        assert_ne!(l1[3] & bit::APIC, 0);
        assert_eq!(l1[1] >> 24, 0, "initial APIC ID 0");
        for leaf in [0xB, 0x1F] {
            assert_eq!(
                answer(leaf, 0, BackendId::Vmx, 0, Topology::ONE, all_ones),
                [0, 1, 1 << 8, 0]
            );
            assert_eq!(
                answer(leaf, 1, BackendId::Vmx, 0, Topology::ONE, all_ones),
                [0, 1, 2 << 8 | 1, 0]
            );
            assert_eq!(
                answer(leaf, 2, BackendId::Vmx, 0, Topology::ONE, all_ones),
                [0, 0, 2, 0]
            );
        }
    }

    #[test]
    fn os_enable_bits_follow_the_guests_cr4_not_the_hosts() {
        use crate::policy::cr::cr4;
        let l1 = |cr4| answer(1, 0, BackendId::Svm, cr4, Topology::ONE, all_ones)[2] & bit::OSXSAVE;
        assert_eq!(l1(cr4::PAE), 0, "host has OSXSAVE set, the guest has not");
        assert_eq!(l1(cr4::PAE | cr4::OSXSAVE), bit::OSXSAVE);
        let none = |_, _| [0u32; 4];
        assert_eq!(
            answer(1, 0, BackendId::Vmx, cr4::OSXSAVE, Topology::ONE, none)[2] & bit::OSXSAVE,
            bit::OSXSAVE
        );
        let l7 = |cr4| answer(7, 0, BackendId::Vmx, cr4, Topology::ONE, all_ones)[2] & bit::OSPKE;
        assert_eq!(l7(cr4::PAE), 0);
        assert_eq!(l7(cr4::PAE | cr4::PKE), bit::OSPKE);
    }

    #[test]
    fn unlisted_and_out_of_range_leaves_are_zero() {
        for leaf in [
            0x5,
            0x6,
            0xA,
            0x14,
            0x4000_0002,
            0x8000_0009,
            0x8000_001F,
            0xFFFF_FFFF,
        ] {
            assert_eq!(
                answer(leaf, 0, BackendId::Svm, 0, Topology::ONE, all_ones),
                [0; 4],
                "leaf {leaf:#x}"
            );
        }
        assert_eq!(
            answer(0, 0, BackendId::Svm, 0, Topology::ONE, all_ones)[0],
            MAX_BASIC_LEAF
        );
        assert_eq!(
            answer(0x8000_0000, 0, BackendId::Svm, 0, Topology::ONE, all_ones)[0],
            MAX_EXT_LEAF
        );
    }
}
