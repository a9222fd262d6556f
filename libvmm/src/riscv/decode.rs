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

    /// A virtual-instruction trap: stval holds the instruction bits.
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

/// Marks the path that calls it as unlikely (a stable stand-in for `likely`/`unlikely` hints): SBI calls
/// other than libvmm hypercalls are rare, so the hypercall test comes first on the exit path.
#[cold]
#[inline(always)]
fn unlikely_path() {}
