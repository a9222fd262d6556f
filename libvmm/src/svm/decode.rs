//! SVM exit decoding: EXITCODE/EXITINFO plus guest registers -> generic [`Exit`], and the length of the
//! exiting instruction (TCG offers no NRIPS, so when NEXT_RIP is 0 libvmm uses the architectural length
//! of the intercepted instruction; see the module doc of `svm` for the prefix caveat).
#![forbid(unsafe_code)]

use crate::exit::{Access, Cr, Exit, IoAccess, VirtInsn};
use crate::x86::gprs::Gprs;

pub mod code {
    pub const CR0_WRITE: u64 = 0x010;
    pub const CR4_WRITE: u64 = 0x014;
    pub const INTR: u64 = 0x60;
    pub const NMI: u64 = 0x61;
    pub const SMI: u64 = 0x62;
    pub const INIT: u64 = 0x63;
    pub const VINTR: u64 = 0x64;
    /// Exception intercept of #UD (0x40 + vector 6): only with forced emulation on.
    pub const EXCP_UD: u64 = 0x46;
    pub const CPUID: u64 = 0x72;
    pub const HLT: u64 = 0x78;
    pub const INVLPGA: u64 = 0x7A;
    pub const IOIO: u64 = 0x7B;
    pub const MSR: u64 = 0x7C;
    pub const SHUTDOWN: u64 = 0x7F;
    pub const VMRUN: u64 = 0x80;
    pub const VMMCALL: u64 = 0x81;
    pub const VMLOAD: u64 = 0x82;
    pub const VMSAVE: u64 = 0x83;
    pub const STGI: u64 = 0x84;
    pub const CLGI: u64 = 0x85;
    pub const SKINIT: u64 = 0x86;
    pub const MONITOR: u64 = 0x8A;
    pub const MWAIT: u64 = 0x8B;
    pub const MWAIT_COND: u64 = 0x8C;
    pub const XSETBV: u64 = 0x8D;
    pub const NPF: u64 = 0x400;
    /// VMEXIT_INVALID: the low 32 bits read 0xFFFF_FFFF (emulators.md).
    pub const INVALID: u64 = 0xFFFF_FFFF;
}

/// What the decoder reads besides the registers.
#[derive(Clone, Copy, Debug)]
pub struct ExitInfo {
    pub code: u64,
    pub info1: u64,
    pub info2: u64,
    /// Guest RAX and RSP (kept in the VMCB).
    pub rax: u64,
    pub rsp: u64,
    /// NEXT_RIP (0 without NRIPS).
    pub next_rip: u64,
}

/// EXITINFO1 of a MOV-to-CR intercept with decode assists: bit 63 = MOV CRn (not CLTS/LMSW), bits 3:0
/// = the source GPR (APM Vol. 2 §15.33.1).
const CR_INFO_MOV: u64 = 1 << 63;

/// A general-purpose register by its encoding number (0 = RAX ... 15 = R15); RAX and RSP live in the
/// VMCB.
pub fn gpr(n: u8, g: &Gprs, rax: u64, rsp: u64) -> u64 {
    if n & 15 == 0 {
        rax
    } else {
        g.by_number(n, rsp)
    }
}

/// A CR0/CR4 write intercept: with decode assists and NRIPS the exit names the register; otherwise the
/// instruction is read from guest memory (`from_memory`).
#[inline(always)]
fn cr_write(
    code: u64,
    info1: u64,
    next_rip: u64,
    rax: u64,
    rsp: u64,
    g: &Gprs,
    from_memory: impl FnOnce() -> Exit,
) -> Exit {
    if info1 & CR_INFO_MOV != 0 && next_rip != 0 {
        Exit::CrWrite {
            cr: if code == code::CR0_WRITE {
                Cr::Cr0
            } else {
                Cr::Cr4
            },
            value: gpr(info1 as u8, g, rax, rsp),
        }
    } else {
        from_memory()
    }
}

/// Decodes one exit. Never fails: what it does not know becomes `Exit::Unknown`. `state` reads the
/// guest's control state from the VMCB, for the exits whose checks need it.
#[inline(always)]
pub fn decode(e: &ExitInfo, g: &Gprs, from_memory: impl FnOnce() -> Exit) -> Exit {
    match e.code {
        code::CPUID => Exit::Cpuid {
            leaf: e.rax as u32,
            subleaf: g.rcx as u32,
        },
        // With decode assists and NRIPS the exit names the register and the next RIP; otherwise the
        // instruction is read from guest memory (`insn`, through `Backend::decode_with_memory`).
        code::CR0_WRITE | code::CR4_WRITE => {
            cr_write(e.code, e.info1, e.next_rip, e.rax, e.rsp, g, from_memory)
        }
        code::XSETBV => Exit::Xsetbv {
            index: g.rcx as u32,
            value: (g.rdx << 32) | (e.rax & 0xFFFF_FFFF),
        },
        code::VMMCALL => Exit::Hypercall {
            nr: e.rax,
            args: g.hypercall_args(),
        },
        code::HLT => Exit::Halt,
        code::MSR => {
            let msr = g.rcx as u32;
            if e.info1 & 1 == 0 {
                Exit::MsrRead { msr }
            } else {
                Exit::MsrWrite {
                    msr,
                    value: (g.rdx << 32) | (e.rax & 0xFFFF_FFFF),
                }
            }
        }
        code::IOIO => {
            let i = e.info1;
            let size = if i & (1 << 4) != 0 {
                1
            } else if i & (1 << 5) != 0 {
                2
            } else if i & (1 << 6) != 0 {
                4
            } else {
                0
            };
            Exit::Io(IoAccess {
                port: (i >> 16) as u16,
                size,
                write: i & 1 == 0,
                value: e.rax as u32,
                string: i & ((1 << 2) | (1 << 3)) != 0,
            })
        }
        code::NPF => {
            let access = if e.info1 & (1 << 4) != 0 {
                Access::Execute
            } else if e.info1 & (1 << 1) != 0 {
                Access::Write
            } else {
                Access::Read
            };
            Exit::GuestMemoryFault {
                gpa: e.info2,
                access,
            }
        }
        code::SHUTDOWN => Exit::TripleFault,
        code::EXCP_UD => Exit::UdIntercept,
        code::VMRUN => Exit::VirtInsn(VirtInsn::Vmrun),
        code::VMLOAD => Exit::VirtInsn(VirtInsn::Vmload),
        code::VMSAVE => Exit::VirtInsn(VirtInsn::Vmsave),
        code::STGI => Exit::VirtInsn(VirtInsn::Stgi),
        code::CLGI => Exit::VirtInsn(VirtInsn::Clgi),
        code::SKINIT => Exit::VirtInsn(VirtInsn::Skinit),
        code::INVLPGA => Exit::VirtInsn(VirtInsn::Invlpga),
        code::MONITOR | code::MWAIT | code::MWAIT_COND => Exit::IllegalInsn { raw: e.code },
        code::INTR | code::NMI | code::SMI | code::INIT | code::VINTR => Exit::HostEvent,
        _ => Exit::Unknown {
            code: e.code,
            info1: e.info1,
            info2: e.info2,
        },
    }
}

/// The architectural length of the instruction behind an instruction intercept, for when the CPU gives
/// no NEXT_RIP. IOIO carries the next RIP in EXITINFO2 and is handled by the caller.
pub const fn insn_len(code: u64) -> u64 {
    match code {
        code::HLT => 1,
        code::CPUID | code::MSR => 2,
        code::XSETBV => 3,
        code::VMRUN
        | code::VMMCALL
        | code::VMLOAD
        | code::VMSAVE
        | code::STGI
        | code::CLGI
        | code::SKINIT
        | code::INVLPGA
        | code::MONITOR
        | code::MWAIT
        | code::MWAIT_COND => 3,
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the decoder returns when the instruction must be read from guest memory.
    const FROM_MEMORY: Exit = Exit::Unknown {
        code: 0xFEED,
        info1: 0,
        info2: 0,
    };

    fn decode(e: &ExitInfo, g: &Gprs) -> Exit {
        super::decode(e, g, || FROM_MEMORY)
    }

    fn info(code: u64, info1: u64, info2: u64, rax: u64) -> ExitInfo {
        ExitInfo {
            code,
            info1,
            info2,
            rax,
            rsp: 0x5000,
            next_rip: 0,
        }
    }

    #[test]
    fn decodes_cr_writes_with_decode_assists_else_asks_for_guest_memory() {
        let g = Gprs {
            r9: 0x6_0020,
            ..Default::default()
        };
        let mut e = info(code::CR4_WRITE, CR_INFO_MOV | 9, 0, 0);
        assert_eq!(decode(&e, &g), FROM_MEMORY, "no NEXT_RIP");
        e.next_rip = 0x1003;
        assert_eq!(
            decode(&e, &g),
            Exit::CrWrite {
                cr: Cr::Cr4,
                value: 0x6_0020
            }
        );
        let e = ExitInfo {
            next_rip: 0x1003,
            ..info(code::CR0_WRITE, CR_INFO_MOV | 4, 0, 0)
        };
        assert!(matches!(
            decode(&e, &g),
            Exit::CrWrite {
                cr: Cr::Cr0,
                value: 0x5000,
                ..
            }
        ));
        // CLTS / LMSW (bit 63 clear) and TCG (EXITINFO1 0): read the instruction.
        let e = ExitInfo {
            next_rip: 0x1002,
            ..info(code::CR0_WRITE, 0, 0, 0)
        };
        assert_eq!(decode(&e, &g), FROM_MEMORY);
    }

    #[test]
    fn decodes_xsetbv_and_cpuid() {
        let g = Gprs {
            rcx: 0xFFFF_FFFF_0000_0000,
            rdx: 0x2,
            ..Default::default()
        };
        assert_eq!(
            decode(&info(code::XSETBV, 0, 0, 0xFFFF_FFFF_0000_0007), &g),
            Exit::Xsetbv {
                index: 0,
                value: 0x2_0000_0007
            }
        );
        assert_eq!(insn_len(code::XSETBV), 3);
        assert_eq!(
            decode(&info(code::CPUID, 0, 0, 1), &g),
            Exit::Cpuid {
                leaf: 1,
                subleaf: 0,
            }
        );
    }

    #[test]
    fn decodes_cpuid_hypercall_and_msrs() {
        let g = Gprs {
            rcx: 0xC000_0080,
            rdx: 0x1,
            rdi: 1,
            rsi: 2,
            r10: 4,
            ..Default::default()
        };
        assert_eq!(
            decode(&info(code::CPUID, 0, 0, 0x4000_0000), &g),
            Exit::Cpuid {
                leaf: 0x4000_0000,
                subleaf: 0xC000_0080,
            }
        );
        assert_eq!(
            decode(&info(code::VMMCALL, 0, 0, 5), &g),
            Exit::Hypercall {
                nr: 5,
                args: [1, 2, 1, 4]
            }
        );
        assert_eq!(
            decode(&info(code::MSR, 0, 0, 0), &g),
            Exit::MsrRead { msr: 0xC000_0080 }
        );
        assert_eq!(
            decode(&info(code::MSR, 1, 0, 0xFFFF_FFFF_0000_1500), &g),
            Exit::MsrWrite {
                msr: 0xC000_0080,
                value: 0x1_0000_1500
            }
        );
    }

    #[test]
    fn decodes_io_including_string_forms() {
        let g = Gprs::default();
        // OUT dx, al to 0xf4.
        let out = decode(&info(code::IOIO, (0xf4 << 16) | (1 << 4), 0, 0x1234), &g);
        assert_eq!(
            out,
            Exit::Io(IoAccess {
                port: 0xf4,
                size: 1,
                write: true,
                value: 0x1234,
                string: false
            })
        );
        // IN eax, dx from 0x3f8.
        let inl = decode(&info(code::IOIO, (0x3f8 << 16) | (1 << 6) | 1, 0, 0), &g);
        assert_eq!(
            inl,
            Exit::Io(IoAccess {
                port: 0x3f8,
                size: 4,
                write: false,
                value: 0,
                string: false
            })
        );
        // REP OUTSB.
        let rep = decode(
            &info(
                code::IOIO,
                (0x80 << 16) | (1 << 4) | (1 << 2) | (1 << 3),
                0,
                0,
            ),
            &g,
        );
        assert!(matches!(rep, Exit::Io(IoAccess { string: true, .. })));
    }

    #[test]
    fn decodes_nested_faults_with_access_kind() {
        let g = Gprs::default();
        let gmf = |i1| decode(&info(code::NPF, i1, 0x10_0000, 0), &g);
        assert_eq!(
            gmf(0x1_0000_0004),
            Exit::GuestMemoryFault {
                gpa: 0x10_0000,
                access: Access::Read
            }
        );
        assert_eq!(
            gmf(0x1_0000_0006),
            Exit::GuestMemoryFault {
                gpa: 0x10_0000,
                access: Access::Write
            }
        );
        assert_eq!(
            gmf(0x1_0000_0014),
            Exit::GuestMemoryFault {
                gpa: 0x10_0000,
                access: Access::Execute
            }
        );
    }

    #[test]
    fn svm_instructions_are_virt_insns_and_unknown_codes_survive() {
        let g = Gprs::default();
        for c in [
            code::VMRUN,
            code::VMLOAD,
            code::VMSAVE,
            code::STGI,
            code::CLGI,
            code::SKINIT,
            code::INVLPGA,
        ] {
            assert!(
                matches!(decode(&info(c, 0, 0, 0), &g), Exit::VirtInsn(_)),
                "{c:#x}"
            );
            assert_eq!(insn_len(c), 3);
        }
        assert_eq!(
            decode(&info(code::SHUTDOWN, 0, 0, 0), &g),
            Exit::TripleFault
        );
        assert!(matches!(
            decode(&info(0x1234, 1, 2, 0), &g),
            Exit::Unknown { code: 0x1234, .. }
        ));
        assert!(matches!(
            decode(&info(u64::MAX, 0, 0, 0), &g),
            Exit::Unknown { .. }
        ));
    }
}
