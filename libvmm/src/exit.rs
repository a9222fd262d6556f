//! The generic VM exit and the generic reply: the only vocabulary between the run loop and a backend.
//!
//! A backend decodes its vendor exit (EXITCODE/EXITINFO, exit reason/qualification, scause/htval) into an
//! [`Exit`], validating every guest-controlled value once here at the boundary: handlers take typed values.
//! The loop answers with a [`Reply`] that the backend carries out (write registers, advance the guest's
//! instruction pointer, inject an exception). Variants that an architecture never produces are simply
//! never constructed there.
#![forbid(unsafe_code)]
// The generic exit vocabulary: each architecture constructs its subset (x86 never an SBI call, RISC-V
// never CPUID); the TDX image runs no guest at all.
#![cfg_attr(target_os = "none", allow(dead_code))]

/// How the guest touched memory in a fault.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    Read,
    Write,
    Execute,
    /// The CPU's own read of a guest page-table entry while translating a guest virtual address (RISC-V
    /// reports it through an htinst pseudo-instruction).
    PageTableRead,
    /// The CPU's own update of a guest page-table entry (accessed/dirty bits).
    PageTableWrite,
}

impl Access {
    pub const fn name(self) -> &'static str {
        match self {
            Access::Read => "read",
            Access::Write => "write",
            Access::Execute => "execute",
            Access::PageTableRead => "page-table read",
            Access::PageTableWrite => "page-table write",
        }
    }
}

/// A port I/O access (x86).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IoAccess {
    pub port: u16,
    /// 1, 2 or 4.
    pub size: u8,
    pub write: bool,
    /// The value written (low `size` bytes), for OUT.
    pub value: u32,
    /// INS/OUTS (with or without REP): the loop runs the instruction emulator, which reads the
    /// instruction at RIP and asks the port policy once per element.
    pub string: bool,
}

/// Guest MSRs whose value a backend keeps in its own control structure (VMCB/VMCS fields), so reading or
/// writing them after the policy allowed it is the backend's job.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VirtualMsr {
    Efer,
    FsBase,
    GsBase,
    KernelGsBase,
    Pat,
}

/// Virtualization instructions a guest may try (all answered with an undefined-opcode fault). Each
/// image builds one backend, which constructs only its own vendor's variants.
#[allow(dead_code)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VirtInsn {
    Vmrun,
    Vmload,
    Vmsave,
    Stgi,
    Clgi,
    Skinit,
    Invlpga,
    Vmcall,
    Vmlaunch,
    Vmresume,
    Vmptrld,
    Vmptrst,
    Vmclear,
    Vmread,
    Vmwrite,
    Vmxon,
    Vmxoff,
    Invept,
    Invvpid,
    Vmfunc,
}

/// A control register whose writes libvmm checks (x86). CR3 and CR8 are the guest's own.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cr {
    Cr0,
    Cr4,
}

/// The guest's control state when it writes a control register or XCR0 (x86), as the backend read it
/// from its control structure: what the architectural checks of the write depend on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CrState {
    /// CR0 and CR4 as the guest sees them (VMX: the read shadows' view, no VMX fixed bits).
    pub cr0: u64,
    pub cr3: u64,
    pub cr4: u64,
    /// The guest's EFER (LME, LMA).
    pub efer: u64,
    /// CS.L: the guest runs 64-bit code (else compatibility mode, when EFER.LMA is set).
    pub cs_l: bool,
    /// Current privilege level.
    pub cpl: u8,
    /// The CR4 bits this CPU can run a guest with at all (VMX: IA32_VMX_CR4_FIXED1 without VMXE; SVM:
    /// every bit). The policy allows a bit only when the guest's CPUID offers it *and* it is here.
    pub cr4_hw: u64,
}

/// One VM exit, decoded and validated by the backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    /// CPUID with the guest's EAX/ECX.
    /// (Leaf 1 ECX.OSXSAVE and leaf 7 ECX.OSPKE reflect the guest's CR4, which the loop reads from the
    /// backend: [`crate::backend::Backend::guest_cr4`].)
    Cpuid {
        leaf: u32,
        subleaf: u32,
    },
    /// libvmm hypercall (VMMCALL / VMCALL / ECALL to the libvmm SBI extension).
    Hypercall {
        nr: u64,
        args: [u64; 4],
    },
    /// Other SBI call from VS-mode (RISC-V).
    #[cfg_attr(not(target_arch = "riscv64"), allow(dead_code))]
    Sbi {
        ext: u64,
        fid: u64,
        args: [u64; 6],
    },
    MsrRead {
        msr: u32,
    },
    MsrWrite {
        msr: u32,
        value: u64,
    },
    Io(IoAccess),
    /// Guest-physical access outside the guest's memory (NPF / EPT violation / guest-page fault).
    GuestMemoryFault {
        gpa: u64,
        access: Access,
    },
    /// HLT (x86) / WFI (RISC-V).
    Halt,
    /// MOV to CR0/CR4, CLTS or LMSW (x86): `value` is the whole new register value the instruction
    /// asks for (for CLTS and LMSW, computed from the current CR0).
    /// The checks need the guest's control state, which the loop reads from the backend
    /// ([`crate::backend::Backend::cr_state`]): carrying it here would make every `Exit` larger and cost
    /// the hot exits (CPUID, hypercalls) their fused decode-and-dispatch.
    CrWrite {
        cr: Cr,
        value: u64,
    },
    /// XSETBV (x86): ECX and EDX:EAX.
    Xsetbv {
        index: u32,
        value: u64,
    },
    /// A virtualization instruction executed by the guest.
    VirtInsn(VirtInsn),
    /// An instruction the guest may not execute in its mode and libvmm does not emulate (e.g. a CSR the
    /// guest may not touch on RISC-V).
    IllegalInsn {
        raw: u64,
    },
    /// The guest raised #UD and the VMM intercepted it (x86, only with `libvmm.force_emulation=1`): the
    /// loop checks for the forced-emulation prefix at RIP and emulates the instruction after it, or
    /// reflects the #UD.
    UdIntercept,
    /// The guest shut itself down by a triple fault.
    TripleFault,
    /// A host event (interrupt, timer) ended the run: nothing for the guest, just re-enter.
    HostEvent,
    /// An exit the backend does not decode. `code` is the vendor's exit code.
    Unknown {
        code: u64,
        info1: u64,
        info2: u64,
    },
}

/// Faults libvmm delivers to a guest. The backend maps them to its architecture (x86: #UD, #GP(0);
/// RISC-V: illegal instruction).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Undefined / illegal instruction.
    InvalidOpcode,
    /// General protection with error code (x86); illegal instruction on RISC-V.
    GeneralProtection(u32),
}

/// What completes an exiting instruction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Output {
    /// No register changes (a write that is done, an ignored OUT).
    Nothing,
    /// CPUID result: EAX, EBX, ECX, EDX.
    Cpuid([u32; 4]),
    /// Hypercall result (RAX / a1 with a0 = 0).
    Hypercall(i64),
    /// SBI result: a0 = error, a1 = value.
    Sbi { error: i64, value: i64 },
    /// RDMSR result (EDX:EAX).
    MsrValue(u64),
    /// IN result: the low `size` (1, 2, 4) bytes of `value` go to AL/AX/EAX.
    IoIn { value: u32, size: u8 },
    /// A write to an MSR the backend keeps (the policy has validated the value).
    SetVirtualMsr(VirtualMsr, u64),
    /// A checked control-register value for the guest (x86): the backend loads it (and flushes the
    /// guest's TLB, as the instruction would).
    SetCr(Cr, u64),
    /// A checked XCR0 for the guest (x86): the backend loads it with XSETBV.
    SetXcr0(u64),
}

/// The run loop's answer to an exit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reply {
    /// Apply `Output` and retire the exiting instruction (advance RIP / sepc).
    Complete(Output),
    /// Deliver a fault; the exiting instruction does not retire.
    Inject(Fault),
    /// Re-enter with nothing changed (host events).
    Resume,
}
