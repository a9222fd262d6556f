//! Exit decoding: the VMX exit reason, qualification and guest registers become one generic
//! [`Exit`], every guest-controlled value validated here once.
#![forbid(unsafe_code)]

use super::vmcs::GuestRegs;
use crate::exit::{Access, Cr, CrState, Exit, IoAccess, VirtInsn};

/// Basic exit reasons (SDM Vol. 3D App. C).
#[allow(dead_code)]
pub(crate) mod reason {
    pub const EXCEPTION_NMI: u32 = 0;
    pub const EXTERNAL_INTERRUPT: u32 = 1;
    pub const TRIPLE_FAULT: u32 = 2;
    pub const INTERRUPT_WINDOW: u32 = 7;
    pub const CPUID: u32 = 10;
    pub const GETSEC: u32 = 11;
    pub const HLT: u32 = 12;
    pub const INVD: u32 = 13;
    pub const VMCALL: u32 = 18;
    pub const VMCLEAR: u32 = 19;
    pub const VMLAUNCH: u32 = 20;
    pub const VMPTRLD: u32 = 21;
    pub const VMPTRST: u32 = 22;
    pub const VMREAD: u32 = 23;
    pub const VMRESUME: u32 = 24;
    pub const VMWRITE: u32 = 25;
    pub const VMXOFF: u32 = 26;
    pub const VMXON: u32 = 27;
    pub const CR_ACCESS: u32 = 28;
    pub const IO: u32 = 30;
    pub const RDMSR: u32 = 31;
    pub const WRMSR: u32 = 32;
    pub const INVALID_GUEST_STATE: u32 = 33;
    pub const MSR_LOADING: u32 = 34;
    pub const MWAIT: u32 = 36;
    pub const MONITOR: u32 = 39;
    pub const MCE_DURING_ENTRY: u32 = 41;
    pub const EPT_VIOLATION: u32 = 48;
    pub const EPT_MISCONFIG: u32 = 49;
    pub const INVEPT: u32 = 50;
    pub const PREEMPTION_TIMER: u32 = 52;
    pub const INVVPID: u32 = 53;
    pub const XSETBV: u32 = 55;
    pub const VMFUNC: u32 = 59;
    pub const ENCLS: u32 = 60;
    pub const SEAMCALL: u32 = 76;
    pub const TDCALL: u32 = 77;
    /// Bit 31 of EXIT_REASON: the VM entry failed (guest state, MSR loading, machine check).
    pub const ENTRY_FAILURE: u32 = 1 << 31;
}

/// Exit facts read from the VMCS.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct RawExit {
    pub reason: u32,
    pub qualification: u64,
    pub guest_physical: u64,
}

/// What a control-register or XSETBV exit needs besides the registers the world switch saved.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct CrContext {
    pub state: CrState,
    /// Guest RSP (in the VMCS).
    pub rsp: u64,
}

/// The control-register-access exit qualification (SDM Vol. 3C Table 28-3): CR number 3:0, access type
/// 5:4 (0 MOV to CR, 1 MOV from CR, 2 CLTS, 3 LMSW), GPR 11:8, LMSW source data 31:16 (register or
/// memory operand alike). Writes to CR0/CR4 become `CrWrite` with the whole new value; every other
/// access (CR3 and CR8 moves, which libvmm does not let exit, or reads) stays #UD as before.
// Out of line and cold: a rare exit, kept out of the hot exits' code (inline, it moved the CPUID and
// VMCALL round trips by 2-3 instructions).
#[cold]
#[inline(never)]
fn cr_access(q: u64, regs: &GuestRegs, ctx: impl FnOnce() -> CrContext) -> Exit {
    let cr = match q & 0xF {
        0 => Cr::Cr0,
        4 => Cr::Cr4,
        _ => {
            return Exit::IllegalInsn {
                raw: reason::CR_ACCESS as u64,
            }
        }
    };
    let c = ctx();
    let value = match ((q >> 4) & 3, cr) {
        (0, _) => regs.by_number((q >> 8) as u8, c.rsp),
        (2, Cr::Cr0) => c.state.cr0 & !(1 << 3),
        // LMSW loads CR0[3:0] but cannot clear PE.
        (3, Cr::Cr0) => (c.state.cr0 & !0xE) | ((q >> 16) & 0xF),
        _ => {
            return Exit::IllegalInsn {
                raw: reason::CR_ACCESS as u64,
            }
        }
    };
    Exit::CrWrite { cr, value }
}

/// Decodes one exit. Exits that must never reach the loop (entry failures) are handled by the caller.
/// `ctx` reads the guest's control state, for the exits whose checks need it.
#[inline(always)]
pub(crate) fn decode(raw: &RawExit, regs: &GuestRegs, ctx: impl FnOnce() -> CrContext) -> Exit {
    use reason::*;
    let q = raw.qualification;
    match raw.reason & 0xFFFF {
        // The interrupt-window exit needs nothing but the entry check that follows every exit.
        EXTERNAL_INTERRUPT | PREEMPTION_TIMER | INTERRUPT_WINDOW => Exit::HostEvent,
        TRIPLE_FAULT => Exit::TripleFault,
        CPUID => Exit::Cpuid {
            leaf: regs.rax as u32,
            subleaf: regs.rcx as u32,
        },
        CR_ACCESS => cr_access(q, regs, ctx),
        XSETBV => Exit::Xsetbv {
            index: regs.rcx as u32,
            value: (regs.rdx << 32) | (regs.rax & 0xFFFF_FFFF),
        },
        HLT => Exit::Halt,
        VMCALL => Exit::Hypercall {
            nr: regs.rax,
            args: regs.hypercall_args(),
        },
        VMCLEAR => Exit::VirtInsn(VirtInsn::Vmclear),
        VMLAUNCH => Exit::VirtInsn(VirtInsn::Vmlaunch),
        VMPTRLD => Exit::VirtInsn(VirtInsn::Vmptrld),
        VMPTRST => Exit::VirtInsn(VirtInsn::Vmptrst),
        VMREAD => Exit::VirtInsn(VirtInsn::Vmread),
        VMRESUME => Exit::VirtInsn(VirtInsn::Vmresume),
        VMWRITE => Exit::VirtInsn(VirtInsn::Vmwrite),
        VMXOFF => Exit::VirtInsn(VirtInsn::Vmxoff),
        VMXON => Exit::VirtInsn(VirtInsn::Vmxon),
        INVEPT => Exit::VirtInsn(VirtInsn::Invept),
        INVVPID => Exit::VirtInsn(VirtInsn::Invvpid),
        VMFUNC => Exit::VirtInsn(VirtInsn::Vmfunc),
        // Instructions that exit unconditionally or by a control libvmm sets, none emulated: #UD.
        GETSEC | INVD | MWAIT | MONITOR | ENCLS | SEAMCALL | TDCALL => Exit::IllegalInsn {
            raw: raw.reason as u64,
        },
        IO => {
            let size = (q & 7) as u8 + 1;
            let write = q & (1 << 3) == 0;
            let mask = if size >= 4 {
                u32::MAX
            } else {
                (1u32 << (size * 8)) - 1
            };
            Exit::Io(IoAccess {
                port: (q >> 16) as u16,
                size,
                write,
                value: if write { regs.rax as u32 & mask } else { 0 },
                string: q & (3 << 4) != 0,
            })
        }
        RDMSR => Exit::MsrRead {
            msr: regs.rcx as u32,
        },
        WRMSR => Exit::MsrWrite {
            msr: regs.rcx as u32,
            value: (regs.rdx << 32) | (regs.rax & 0xFFFF_FFFF),
        },
        EPT_VIOLATION => {
            let access = if q & (1 << 2) != 0 {
                Access::Execute
            } else if q & (1 << 1) != 0 {
                Access::Write
            } else {
                Access::Read
            };
            Exit::GuestMemoryFault {
                gpa: raw.guest_physical,
                access,
            }
        }
        // EPT misconfiguration is a VMM bug in the tables, never the guest's doing: stop, with the GPA.
        _ => Exit::Unknown {
            code: raw.reason as u64,
            info1: q,
            info2: raw.guest_physical,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(reason: u32, q: u64, gpa: u64, regs: GuestRegs) -> Exit {
        decode(
            &RawExit {
                reason,
                qualification: q,
                guest_physical: gpa,
            },
            &regs,
            ctx,
        )
    }

    fn ctx() -> CrContext {
        CrContext {
            state: CrState {
                cr0: 0x8001_0039,
                ..Default::default()
            },
            rsp: 0x7000,
        }
    }

    #[test]
    fn cr_access_qualification_becomes_the_new_value() {
        let r = GuestRegs {
            rax: 0x11,
            r11: 0x6_0020,
            ..Default::default()
        };
        let w = |cr, value| Exit::CrWrite { cr, value };
        // MOV CR4, R11; MOV CR0, RAX; MOV CR0, RSP.
        assert_eq!(d(28, 4 | (11 << 8), 0, r), w(Cr::Cr4, 0x6_0020));
        assert_eq!(d(28, 0, 0, r), w(Cr::Cr0, 0x11));
        assert_eq!(d(28, 4 << 8, 0, r), w(Cr::Cr0, 0x7000));
        // CLTS clears TS; LMSW loads bits 3:0 from its operand but keeps PE.
        assert_eq!(d(28, 2 << 4, 0, r), w(Cr::Cr0, 0x8001_0031));
        assert_eq!(
            d(28, (3 << 4) | (0xFFF6 << 16), 0, r),
            w(Cr::Cr0, 0x8001_0037)
        );
        assert_eq!(d(28, (3 << 4) | (1 << 6), 0, r), w(Cr::Cr0, 0x8001_0031));
        // Reads and other registers: #UD as before.
        assert!(matches!(d(28, 1 << 4, 0, r), Exit::IllegalInsn { .. }));
        assert!(matches!(d(28, 8, 0, r), Exit::IllegalInsn { .. }));
        assert!(matches!(d(28, 3, 0, r), Exit::IllegalInsn { .. }));
    }

    #[test]
    fn xsetbv_takes_ecx_and_edx_eax() {
        let r = GuestRegs {
            rax: 0xFFFF_FFFF_0000_0007,
            rdx: 0x2,
            rcx: 0xFFFF_FFFF_0000_0001,
            ..Default::default()
        };
        assert_eq!(
            d(55, 0, 0, r),
            Exit::Xsetbv {
                index: 1,
                value: 0x2_0000_0007,
            }
        );
    }

    #[test]
    fn cpuid_and_vmcall_take_their_registers() {
        let r = GuestRegs {
            rax: 0xFFFF_FFFF_4000_0000,
            rcx: 7,
            rdi: 1,
            rsi: 2,
            rdx: 3,
            r10: 4,
            ..Default::default()
        };
        assert_eq!(
            d(10, 0, 0, r),
            Exit::Cpuid {
                leaf: 0x4000_0000,
                subleaf: 7,
            }
        );
        assert_eq!(
            d(18, 0, 0, r),
            Exit::Hypercall {
                nr: 0xFFFF_FFFF_4000_0000,
                args: [1, 2, 3, 4]
            }
        );
    }

    #[test]
    fn every_vmx_instruction_is_a_virt_insn() {
        for reason in [19, 20, 21, 22, 23, 24, 25, 26, 27, 50, 53, 59] {
            assert!(
                matches!(d(reason, 0, 0, GuestRegs::default()), Exit::VirtInsn(_)),
                "{reason}"
            );
        }
        assert!(matches!(
            d(76, 0, 0, GuestRegs::default()),
            Exit::IllegalInsn { .. }
        ));
    }

    #[test]
    fn io_qualification_is_decoded() {
        let r = GuestRegs {
            rax: 0x1234_5678,
            ..Default::default()
        };
        // OUT DX, AL to 0xf4: size 1, out, port in 31:16.
        assert_eq!(
            d(30, 0xf4 << 16, 0, r),
            Exit::Io(IoAccess {
                port: 0xf4,
                size: 1,
                write: true,
                value: 0x78,
                string: false
            })
        );
        // IN EAX, DX from 0xcf8.
        assert_eq!(
            d(30, (0xcf8 << 16) | (1 << 3) | 3, 0, r),
            Exit::Io(IoAccess {
                port: 0xcf8,
                size: 4,
                write: false,
                value: 0,
                string: false
            })
        );
        // REP OUTSB.
        assert!(matches!(
            d(30, (0x3f8 << 16) | (1 << 4) | (1 << 5), 0, r),
            Exit::Io(IoAccess { string: true, .. })
        ));
    }

    #[test]
    fn msr_and_ept_exits() {
        let r = GuestRegs {
            rcx: 0xFFFF_FFFF_C000_0080,
            rdx: 0xdead_0001,
            rax: 0xFFFF_FFFF_0000_0D01,
            ..Default::default()
        };
        assert_eq!(d(31, 0, 0, r), Exit::MsrRead { msr: 0xC000_0080 });
        assert_eq!(
            d(32, 0, 0, r),
            Exit::MsrWrite {
                msr: 0xC000_0080,
                value: 0xdead_0001_0000_0d01
            }
        );
        assert_eq!(
            d(48, 0x182, 0x10_0000, r),
            Exit::GuestMemoryFault {
                gpa: 0x10_0000,
                access: Access::Write
            }
        );
        assert_eq!(
            d(48, 0x184, 0x10_0000, r),
            Exit::GuestMemoryFault {
                gpa: 0x10_0000,
                access: Access::Execute
            }
        );
        assert_eq!(
            d(48, 0x181, 0x10_0000, r),
            Exit::GuestMemoryFault {
                gpa: 0x10_0000,
                access: Access::Read
            }
        );
        assert_eq!(
            d(49, 0, 0x2000_0000, r),
            Exit::Unknown {
                code: 49,
                info1: 0,
                info2: 0x2000_0000
            }
        );
        assert_eq!(d(2, 0, 0, r), Exit::TripleFault);
        assert_eq!(d(12, 0, 0, r), Exit::Halt);
    }
}
