//! AMD SVM backend: VMCB set-up, nested paging, permission maps, exit decoding and replies.
//!
//! Files, as in every backend: this one (what SVM is here, the VMCB set-up, the storage), [`decode`]
//! (#VMEXIT -> generic `Exit`), [`vcpu`] (the `Backend` the generic loop drives, over the [`SvmHw`](hw::SvmHw) trait,
//! and the replies), [`hw`] (bring-up on this CPU over the same trait, and the real instructions behind
//! it); vendor extras: [`vmcb`], [`npt`], [`permission_maps`], [`avic`], [`insn`]. Everything here is
//! safe code; the instructions are behind safe wrappers in `arch::x86_64::svm`, and the host tests run
//! bring-up and the exit path against a model of the hardware (`testing::svm`).
//!
//! Guest CR0/CR4 writes and XSETBV are intercepted and answered by the generic control-register policy
//! (`policy::cr`), never left to VMRUN's own checks (which refuse the whole guest, VMEXIT_INVALID, where
//! the instruction owed the guest a #GP). Without decode assists the MOV CR / CLTS / LMSW is read from
//! guest memory ([`insn`]).
//!
//! Instruction lengths: QEMU's TCG offers no NRIPS (NEXT_RIP stays 0), so when NEXT_RIP is 0 the guest
//! RIP advances by the architectural length of the intercepted instruction (IOIO uses EXITINFO2, which
//! holds the next RIP). A guest that pads an intercepted instruction with redundant prefixes therefore
//! resumes inside its own instruction: that hurts only the guest itself. With NRIPS (real hardware)
//! NEXT_RIP is used.
#![forbid(unsafe_code)]
// fuzzing: the fuzz targets drive the decoder and checks, not the bring-up that uses the rest.
#![cfg_attr(all(feature = "fuzzing", not(test)), allow(dead_code))]

pub(crate) mod avic;
pub(crate) mod decode;
pub(crate) mod emulate;
pub(crate) mod hw;
pub(crate) mod insn;
pub(crate) mod npt;
pub(crate) mod permission_maps;
#[cfg(any(test, feature = "kvm-models"))]
pub(crate) mod sev_es;
#[cfg(any(test, feature = "kvm-models"))]
pub(crate) mod sev_snp;
pub(crate) mod vcpu;
pub(crate) mod vmcb;

#[cfg(all(target_os = "none", target_arch = "x86_64", feature = "svm"))]
pub(crate) use hw::boot;

use crate::x86::gprs::Gprs;
use crate::x86::guest_setup::InitialState;
use crate::x86::msr::{EFER_SVME, VM_CR_SVMDIS};
use crate::x86::segment::svm_attrib;
use npt::NestedTables;
use permission_maps::{IoPermissionMap, MsrPermissionMap};
use vmcb::{intercept, Vmcb, VmcbSegment};

/// Everything the SVM backend runs on, one page-aligned block (in `.bss` on the machine, boxed in tests).
#[repr(C, align(4096))]
pub struct SvmStorage {
    pub guest_vmcb: Vmcb,
    pub host_save: [u8; 4096],
    pub msrpm: MsrPermissionMap,
    pub iopm: IoPermissionMap,
    pub npt: NestedTables,
}

impl SvmStorage {
    pub const fn zeroed() -> Self {
        Self {
            guest_vmcb: Vmcb::zeroed(),
            host_save: [0; 4096],
            msrpm: MsrPermissionMap([0; permission_maps::MSRPM_SIZE]),
            iopm: IoPermissionMap([0; permission_maps::IOPM_SIZE]),
            npt: NestedTables::new(),
        }
    }
}

/// This CPU's SVM storage, handed out once to the bring-up.
#[cfg(all(target_os = "none", target_arch = "x86_64", feature = "svm"))]
pub(crate) static STORAGE: crate::arch::take_once::TakeOnce<SvmStorage> =
    crate::arch::take_once::TakeOnce::new(SvmStorage::zeroed());

/// What each further CPU (AP) of the VMM needs for itself: its own host save area (VM_HSAVE_PA: each
/// CPU with EFER.SVME set needs one) and its own VMCB. The nested tables and permission maps are the
/// VM's, one set shared by every CPU ([`SvmStorage`], which also holds the boot CPU's VMCB and save
/// area). The AP's VMCB waits for guest SMP: today an AP enables SVM and parks.
#[repr(C, align(4096))]
pub struct SvmCpuStorage {
    pub vmcb: Vmcb,
    pub host_save: [u8; 4096],
}

impl SvmCpuStorage {
    pub const fn zeroed() -> Self {
        Self {
            vmcb: Vmcb::zeroed(),
            host_save: [0; 4096],
        }
    }
}

/// Per-AP SVM storage: CPU n (n >= 1) takes element n - 1, once.
#[cfg(all(target_os = "none", target_arch = "x86_64", feature = "svm"))]
pub(crate) static AP_STORAGE: [crate::arch::take_once::TakeOnce<SvmCpuStorage>;
    crate::config::MAX_CPUS - 1] =
    [const { crate::arch::take_once::TakeOnce::new(SvmCpuStorage::zeroed()) };
        crate::config::MAX_CPUS - 1];

pub const CPUID_EXT_FEATURES: u32 = 0x8000_0001;
pub const CPUID_SVM_FEATURES: u32 = 0x8000_000A;

/// Checks that the CPU can run the SVM backend, naming the missing bit when it cannot.
pub fn check_support(cpuid: impl Fn(u32, u32) -> [u32; 4], vm_cr: u64) -> Result<(), &'static str> {
    if cpuid(0x8000_0000, 0)[0] < CPUID_SVM_FEATURES {
        return Err("CPUID leaf 0x8000_000A (SVM features) is not offered");
    }
    if cpuid(CPUID_EXT_FEATURES, 0)[2] & (1 << 2) == 0 {
        return Err("SVM missing: CPUID 0x8000_0001 ECX bit 2 (SVM) is clear");
    }
    if cpuid(CPUID_SVM_FEATURES, 0)[3] & 1 == 0 {
        return Err("nested paging missing: CPUID 0x8000_000A EDX bit 0 (NP) is clear");
    }
    if vm_cr & VM_CR_SVMDIS != 0 {
        return Err("SVM disabled by firmware: VM_CR (MSR 0xC001_0114) bit 4 (SVMDIS) is set");
    }
    Ok(())
}

/// Host-physical addresses of the structures a VMCB points to.
#[derive(Clone, Copy, Debug)]
pub struct VmcbLinks {
    pub iopm_pa: u64,
    pub msrpm_pa: u64,
    pub ncr3: u64,
}

fn seg(selector: u16, desc: u64) -> VmcbSegment {
    VmcbSegment {
        selector,
        attrib: svm_attrib(desc),
        limit: 0xFFFF_FFFF,
        base: 0,
    }
}

/// Fills a zeroed VMCB for the first VMRUN: intercepts, maps, ASID, nested paging, guest state.
pub fn init_vmcb(v: &mut Vmcb, s: &InitialState, links: VmcbLinks) {
    let c = &mut v.control;
    // Guest CR0/CR4 writes and XSETBV are checked by the policy (`policy::cr`), never left to VMRUN.
    c.intercept_cr = intercept::CR0_WRITE | intercept::CR4_WRITE;
    c.intercept_misc1 = intercept::INTR
        | intercept::CPUID
        | intercept::HLT
        | intercept::INVLPGA
        | intercept::IOIO_PROT
        | intercept::MSR_PROT
        | intercept::SHUTDOWN;
    c.intercept_misc2 = intercept::VMRUN
        | intercept::VMMCALL
        | intercept::VMLOAD
        | intercept::VMSAVE
        | intercept::STGI
        | intercept::CLGI
        | intercept::SKINIT
        | intercept::MONITOR
        | intercept::MWAIT
        | intercept::MWAIT_COND
        | intercept::XSETBV;
    c.iopm_base_pa = links.iopm_pa;
    c.msrpm_base_pa = links.msrpm_pa;
    c.asid = crate::config::GUEST_TAG as u32;
    c.int_ctl = vmcb::V_INTR_MASKING;
    c.tlb_control = vmcb::TLB_FLUSH_ALL;
    c.misc_ctl = vmcb::NP_ENABLE;
    c.n_cr3 = links.ncr3;

    let g = &mut v.save;
    g.cs = seg(s.cs.selector, s.cs.desc);
    let data = seg(s.data.selector, s.data.desc);
    g.ds = data;
    g.es = data;
    g.ss = data;
    g.fs = VmcbSegment {
        attrib: data.attrib,
        ..data
    };
    g.gs = g.fs;
    g.gdtr = VmcbSegment {
        selector: 0,
        attrib: 0,
        limit: s.gdt_limit as u32,
        base: s.gdt_base,
    };
    g.idtr = VmcbSegment::default();
    // A busy 64-bit TSS type so the state is consistent; the payload never switches stacks through it.
    g.tr = VmcbSegment {
        selector: 0,
        attrib: 0x8B,
        limit: 0x67,
        base: 0,
    };
    g.ldtr = VmcbSegment {
        selector: 0,
        attrib: 0x82,
        limit: 0,
        base: 0,
    };
    g.cpl = 0;
    g.efer = s.efer | EFER_SVME;
    g.cr0 = s.cr0;
    g.cr3 = s.cr3;
    g.cr4 = s.cr4;
    g.dr6 = 0xFFFF_0FF0;
    g.dr7 = 0x400;
    g.rflags = s.rflags;
    g.rip = s.rip;
    g.rsp = s.rsp;
    g.rax = 0;
    g.g_pat = s.pat;
}

/// The state of a vCPU that a STARTUP IPI with `vector` started (guest SMP), as after INIT + SIPI on
/// hardware (SDM "Processor State After Reset", APM "Processor Initialization State"): real mode,
/// CS = vector << 8 with base vector << 12, IP 0, the other segments 0 with 64 KiB limits, CR0 =
/// 0x6000_0010, CR4 = 0, EFER = 0 (SVME underneath), RFLAGS = 2, DR6/DR7 and PAT at reset values. SVM
/// runs a paging-off guest natively under nested paging; the intercepts, maps and nested tables are
/// those of `init_vmcb`'s guest.
pub fn init_vmcb_sipi(v: &mut Vmcb, vector: u8, links: VmcbLinks) {
    let dummy = InitialState {
        cr0: 0,
        cr3: 0,
        cr4: 0,
        efer: 0,
        rip: 0,
        rsp: 0,
        rdi: 0,
        rflags: 2,
        cs: crate::x86::guest_setup::Segment {
            selector: 0,
            desc: 0,
        },
        data: crate::x86::guest_setup::Segment {
            selector: 0,
            desc: 0,
        },
        gdt_base: 0,
        gdt_limit: 0xFFFF,
        pat: 0x0007_0406_0007_0406,
    };
    *v = Vmcb::zeroed();
    init_vmcb(v, &dummy, links);
    let g = &mut v.save;
    let real = |selector: u16, attrib: u16| VmcbSegment {
        selector,
        attrib,
        limit: 0xFFFF,
        base: u64::from(selector) << 4,
    };
    g.cs = real(u16::from(vector) << 8, 0x9B);
    g.ds = real(0, 0x93);
    g.es = g.ds;
    g.ss = g.ds;
    g.fs = g.ds;
    g.gs = g.ds;
    g.gdtr = VmcbSegment {
        selector: 0,
        attrib: 0,
        limit: 0xFFFF,
        base: 0,
    };
    g.idtr = g.gdtr;
    g.tr.limit = 0xFFFF;
    g.cr0 = 0x6000_0010;
    g.efer = EFER_SVME;
}

/// The guest-entry register state besides the VMCB.
pub fn initial_gprs(s: &InitialState) -> Gprs {
    Gprs {
        rdi: s.rdi,
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::vcpu::{after_exit, apply_reply};
    use super::*;
    use crate::exit::{Fault, Output, Reply, VirtualMsr};
    use crate::guest_mem::GuestMemory;
    use crate::loader::Loaded;
    use crate::x86::guest_setup::{build, InitialState};

    fn state() -> InitialState {
        let mut buf = vec![0u8; 0x10_0000];
        let mut mem = GuestMemory::new(0x200_0000, &mut buf);
        build(
            &mut mem,
            &Loaded {
                entry: 0x201_0000,
                stack_top: 0x210_0000,
                boot_info: 0x200_0000,
            },
        )
        .unwrap()
    }

    fn vmcb() -> Box<Vmcb> {
        let mut v = Box::new(Vmcb::zeroed());
        init_vmcb(
            &mut v,
            &state(),
            VmcbLinks {
                iopm_pa: 0x1000,
                msrpm_pa: 0x4000,
                ncr3: 0x6000,
            },
        );
        v
    }

    #[test]
    fn init_sets_every_required_intercept_and_a_valid_long_mode_guest() {
        let v = vmcb();
        let c = &v.control;
        for bit in [
            intercept::CPUID,
            intercept::HLT,
            intercept::IOIO_PROT,
            intercept::MSR_PROT,
            intercept::SHUTDOWN,
            intercept::INVLPGA,
        ] {
            assert_ne!(c.intercept_misc1 & bit, 0);
        }
        for bit in [
            intercept::VMRUN,
            intercept::VMMCALL,
            intercept::VMLOAD,
            intercept::VMSAVE,
            intercept::STGI,
            intercept::CLGI,
            intercept::SKINIT,
        ] {
            assert_ne!(c.intercept_misc2 & bit, 0);
        }
        assert_ne!(c.asid, 0, "ASID 0 makes VMRUN fail");
        assert_eq!(c.misc_ctl & vmcb::NP_ENABLE, vmcb::NP_ENABLE);
        let s = &v.save;
        assert_ne!(s.efer & EFER_SVME, 0, "guest EFER.SVME 0 makes VMRUN fail");
        assert_ne!(s.efer & (1 << 10), 0, "LMA must be set explicitly");
        assert_eq!(s.cs.attrib & (1 << 9), 1 << 9, "CS.L");
        assert_eq!(
            s.cs.attrib & (1 << 10),
            0,
            "CS with L and D both set makes VMRUN fail"
        );
        assert_eq!(s.cr0 >> 32, 0);
        assert_eq!(s.dr6 >> 32, 0);
    }

    #[test]
    fn a_sipi_starts_the_vcpu_in_real_mode_at_the_vector_page() {
        let mut v = vmcb();
        let links = VmcbLinks {
            iopm_pa: 0x1000,
            msrpm_pa: 0x4000,
            ncr3: 0x6000,
        };
        init_vmcb_sipi(&mut v, 0x08, links);
        let s = &v.save;
        assert_eq!((s.cs.selector, s.cs.base, s.rip), (0x0800, 0x8000, 0));
        assert_eq!(s.cs.limit, 0xFFFF);
        assert_eq!(s.cr0, 0x6000_0010);
        assert_eq!((s.cr4, s.efer), (0, EFER_SVME));
        assert_eq!(s.rflags, 2);
        assert_eq!(v.control.n_cr3, 0x6000);
        assert_ne!(v.control.intercept_misc1 & intercept::CPUID, 0);
        assert_eq!(v.control.misc_ctl & vmcb::NP_ENABLE, vmcb::NP_ENABLE);
    }

    #[test]
    fn replies_write_registers_and_advance_rip() {
        let mut v = vmcb();
        let mut g = Gprs::default();
        let rip = v.save.rip;
        v.control.exit_code = decode::code::CPUID;
        apply_reply(&mut v, &mut g, Reply::Complete(Output::Cpuid([1, 2, 3, 4])));
        assert_eq!((v.save.rax, g.rbx, g.rcx, g.rdx), (1, 2, 3, 4));
        assert_eq!(v.save.rip, rip + 2);

        v.control.exit_code = decode::code::VMMCALL;
        apply_reply(&mut v, &mut g, Reply::Complete(Output::Hypercall(-14)));
        assert_eq!(v.save.rax as i64, -14);
        assert_eq!(v.save.rip, rip + 5);

        v.control.exit_code = decode::code::IOIO;
        v.control.exit_info2 = 0x4242;
        v.save.rax = 0x1234_5678;
        apply_reply(
            &mut v,
            &mut g,
            Reply::Complete(Output::IoIn {
                value: 0xFF,
                size: 1,
            }),
        );
        assert_eq!(v.save.rax, 0x1234_56FF);
        assert_eq!(v.save.rip, 0x4242);
    }

    #[test]
    fn faults_are_injected_without_advancing_and_efer_keeps_svme() {
        let mut v = vmcb();
        let mut g = Gprs::default();
        let rip = v.save.rip;
        v.control.exit_code = decode::code::VMRUN;
        apply_reply(&mut v, &mut g, Reply::Inject(Fault::InvalidOpcode));
        assert_eq!(v.control.event_inj, 6 | (3 << 8) | (1 << 31));
        assert_eq!(v.save.rip, rip);
        apply_reply(&mut v, &mut g, Reply::Inject(Fault::GeneralProtection(0)));
        assert_eq!(v.control.event_inj, 13 | (3 << 8) | (1 << 11) | (1 << 31));
        v.control.exit_code = decode::code::MSR;
        apply_reply(
            &mut v,
            &mut g,
            Reply::Complete(Output::SetVirtualMsr(VirtualMsr::Efer, 0x500)),
        );
        assert_eq!(v.save.efer, 0x500 | EFER_SVME);
        after_exit(&mut v);
        assert_eq!(v.control.event_inj, 0);
    }

    #[test]
    fn missing_features_are_named() {
        let full = |l: u32, _| match l {
            0x8000_0000 => [0x8000_001F, 0, 0, 0],
            0x8000_0001 => [0, 0, 1 << 2, 0],
            0x8000_000A => [1, 16, 0, 1],
            _ => [0; 4],
        };
        assert_eq!(check_support(full, 0), Ok(()));
        assert!(
            check_support(|l, s| if l == 0x8000_0001 { [0; 4] } else { full(l, s) }, 0)
                .unwrap_err()
                .contains("ECX bit 2")
        );
        assert!(check_support(
            |l, s| if l == 0x8000_000A {
                [1, 16, 0, 0]
            } else {
                full(l, s)
            },
            0
        )
        .unwrap_err()
        .contains("NP"));
        assert!(check_support(full, VM_CR_SVMDIS)
            .unwrap_err()
            .contains("SVMDIS"));
    }
}
