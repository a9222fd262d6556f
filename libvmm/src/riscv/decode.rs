//! RISC-V trap -> generic [`Exit`]: the trap translation the module doc of `riscv` describes
//! (environment calls, guest-page faults, virtual instructions, the host timer).
#![forbid(unsafe_code)]

use libvmm_abi::SBI_EXT_LIBVMM;

use crate::exit::{Access, Exit};

use super::{csr, Csr, Hart, RiscvH, A0, A6, A7};

impl<H: Hart> RiscvH<H> {
    pub(super) fn decode(&mut self, scause: u64) -> Exit {
        if scause == csr::EXC_ECALL_VS {
            let x = &self.ctx.x;
            if x[A7] == SBI_EXT_LIBVMM {
                return Exit::Hypercall {
                    nr: x[A6],
                    args: [x[A0], x[A0 + 1], x[A0 + 2], x[A0 + 3]],
                };
            }
            unlikely_path();
            return Exit::Sbi {
                ext: x[A7],
                fid: x[A6],
                args: [x[A0], x[A0 + 1], x[A0 + 2], x[A0 + 3], x[A0 + 4], x[A0 + 5]],
            };
        }
        if scause & csr::CAUSE_INTERRUPT != 0 {
            match scause & !csr::CAUSE_INTERRUPT {
                csr::IRQ_S_TIMER => self.host_timer_fired(),
                // A kick: the loop looks at the shared state on this host event.
                csr::IRQ_S_SOFT => self.hart.clear_host_ipi(),
                _ => {}
            }
            return Exit::HostEvent;
        }
        let access = match scause {
            csr::EXC_INSN_GUEST_PAGE_FAULT => Access::Execute,
            csr::EXC_LOAD_GUEST_PAGE_FAULT => Access::Read,
            csr::EXC_STORE_GUEST_PAGE_FAULT => Access::Write,
            csr::EXC_VIRTUAL_INSN => return self.virtual_instruction(),
            csr::EXC_ILLEGAL_INSN => {
                return Exit::IllegalInsn {
                    raw: self.hart.csr(Csr::Stval),
                }
            }
            _ => {
                return Exit::Unknown {
                    code: scause,
                    info1: self.hart.csr(Csr::Stval),
                    info2: self.hart.csr(Csr::Htval),
                }
            }
        };
        // A fault on the guest's own VS-stage page-table walk is not the access the instruction made:
        // htinst holds a pseudo-instruction then, and htval the entry's address (its low bits are 0).
        let implicit = match self.hart.csr(Csr::Htinst) {
            csr::HTINST_PT_READ_32 | csr::HTINST_PT_READ_64 => Some(Access::PageTableRead),
            csr::HTINST_PT_WRITE_32 | csr::HTINST_PT_WRITE_64 => Some(Access::PageTableWrite),
            _ => None,
        };
        let htval = self.hart.csr(Csr::Htval);
        if let Some(access) = implicit {
            return Exit::GuestMemoryFault {
                gpa: htval << 2,
                access,
            };
        }
        let gpa = (htval << 2) | (self.hart.csr(Csr::Stval) & 3);
        Exit::GuestMemoryFault { gpa, access }
    }

    /// A virtual-instruction trap: stval holds the instruction bits. (A `seed` access is answered from
    /// the loop's illegal-instruction arm, [`RiscvH::seed_access`]: decided here, it cost the fused
    /// decode-and-dispatch of the hot ecall exits about 27 emulated instructions, measured.)
    pub(super) fn virtual_instruction(&mut self) -> Exit {
        let insn = self.hart.csr(Csr::Stval);
        if insn != csr::INSN_WFI {
            return Exit::IllegalInsn { raw: insn };
        }
        // WFI completes at once when an interrupt is already pending for the guest (privileged spec:
        // whatever the enable bits say): its timer fired, or another hart's IPI came, before it got here.
        if self.hart.csr(Csr::Hvip) & (1 << csr::IRQ_VS_TIMER | 1 << csr::IRQ_VS_SOFT) != 0 {
            self.advance();
            return Exit::HostEvent;
        }
        if self.timer.is_none() {
            return Exit::Halt;
        }
        // A WFI with the guest's timer armed: wait for the host timer (the guest's deadline or its time
        // limit, whichever is first). The WFI retires once the guest's timer is pending; otherwise it
        // is re-executed after the loop has looked at the limit.
        self.hart.wait_for_host_timer();
        if self.hart.host_ipi_pending() {
            // A kick: the WFI is re-executed after the loop has looked at what was posted.
            self.hart.clear_host_ipi();
            return Exit::HostEvent;
        }
        self.host_timer_fired();
        if self.timer.is_none() {
            self.advance();
        }
        Exit::HostEvent
    }
}

impl<H: Hart> RiscvH<H> {
    /// The Zkr entropy source for the guest: a VS-mode access to `seed` traps as a virtual instruction
    /// when the hart has Zkr (and M-mode allows S-mode access, `mseccfg.SSEED`); the VMM reads the
    /// host's `seed` and gives the guest its value, as the CSR would (the guest runs the OPST protocol
    /// itself). Only the accesses Zkr allows: CSRRW/CSRRWI, and CSRRS/CSRRC with a source register
    /// (a read-only access is illegal). Anything else stays an illegal instruction.
    /// True when `insn` was such an access and is now complete (rd written, sepc advanced).
    #[cold]
    #[inline(never)]
    pub(super) fn seed_access(&mut self, insn: u64) -> bool {
        let (opcode, rd, funct3, rs1, csr_no) = (
            insn & 0x7F,
            ((insn >> 7) & 31) as usize,
            (insn >> 12) & 7,
            (insn >> 15) & 31,
            insn >> 20,
        );
        let writes = match funct3 {
            1 | 5 => true,
            2 | 3 | 6 | 7 => rs1 != 0,
            _ => false,
        };
        if opcode != 0x73 || csr_no != csr::CSR_SEED || !writes || insn >> 32 != 0 {
            return false;
        }
        // Only a virtual-instruction trap (the hart has Zkr) gets here with a `seed` access: an
        // illegal-instruction trap from VS goes to the guest itself (hedeleg).
        let Some(v) = self.hart.seed() else {
            return false;
        };
        if rd != 0 {
            self.ctx.x[rd] = v;
        }
        self.advance();
        true
    }
}

/// Marks the path that calls it as unlikely (a stable stand-in for `likely`/`unlikely` hints): SBI calls
/// other than libvmm hypercalls are rare, so the hypercall test comes first on the exit path.
#[cold]
#[inline(always)]
fn unlikely_path() {}
