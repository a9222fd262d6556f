//! The guest general-purpose registers that the world-switch assembly saves and restores. SVM keeps RAX
//! and RSP in the VMCB, VMX keeps RSP in the VMCS; both keep the rest here. The layout is fixed: the
//! `arch` assembly addresses fields by offset (checked below).
#![forbid(unsafe_code)]

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Gprs {
    pub rax: u64,
    pub rbx: u64,
    pub rcx: u64,
    pub rdx: u64,
    pub rsi: u64,
    pub rdi: u64,
    pub rbp: u64,
    pub r8: u64,
    pub r9: u64,
    pub r10: u64,
    pub r11: u64,
    pub r12: u64,
    pub r13: u64,
    pub r14: u64,
    pub r15: u64,
}

impl Gprs {
    /// The register with encoding number `n` (0 = RAX ... 15 = R15, as in ModRM/REX and the exit
    /// qualifications). RSP is not in this block (SVM keeps it in the VMCB, VMX in the VMCS): the
    /// caller passes it. (SVM also keeps RAX in the VMCB: its callers answer `n == 0` themselves.)
    #[cfg(any(test, feature = "fuzzing", feature = "svm", feature = "vmx"))]
    pub fn by_number(&self, n: u8, rsp: u64) -> u64 {
        match self.slot(n) {
            Some(r) => *r,
            None => rsp,
        }
    }

    /// The slot of register `n` in this block; `None` for RSP (see [`Gprs::by_number`]).
    #[cfg(any(test, feature = "fuzzing", feature = "svm", feature = "vmx"))]
    pub fn slot(&self, n: u8) -> Option<&u64> {
        Some(match n & 15 {
            0 => &self.rax,
            1 => &self.rcx,
            2 => &self.rdx,
            3 => &self.rbx,
            4 => return None,
            5 => &self.rbp,
            6 => &self.rsi,
            7 => &self.rdi,
            8 => &self.r8,
            9 => &self.r9,
            10 => &self.r10,
            11 => &self.r11,
            12 => &self.r12,
            13 => &self.r13,
            14 => &self.r14,
            _ => &self.r15,
        })
    }

    /// The writable slot of register `n`; `None` for RSP.
    #[cfg(any(test, feature = "fuzzing", feature = "svm", feature = "vmx"))]
    pub fn slot_mut(&mut self, n: u8) -> Option<&mut u64> {
        Some(match n & 15 {
            0 => &mut self.rax,
            1 => &mut self.rcx,
            2 => &mut self.rdx,
            3 => &mut self.rbx,
            4 => return None,
            5 => &mut self.rbp,
            6 => &mut self.rsi,
            7 => &mut self.rdi,
            8 => &mut self.r8,
            9 => &mut self.r9,
            10 => &mut self.r10,
            11 => &mut self.r11,
            12 => &mut self.r12,
            13 => &mut self.r13,
            14 => &mut self.r14,
            _ => &mut self.r15,
        })
    }

    /// The hypercall arguments, in the registers `libvmm_abi::X86_HYPERCALL_ARGS` names.
    #[cfg(any(test, feature = "fuzzing", feature = "svm", feature = "vmx"))]
    #[inline(always)]
    pub fn hypercall_args(&self) -> [u64; 4] {
        [self.rdi, self.rsi, self.rdx, self.r10]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hypercall_arguments_are_the_abi_registers() {
        let named = |r: &str| {
            let mut g = Gprs::default();
            match r {
                "rdi" => g.rdi = 1,
                "rsi" => g.rsi = 1,
                "rdx" => g.rdx = 1,
                "r10" => g.r10 = 1,
                _ => panic!("unknown register {r}"),
            }
            g
        };
        for (i, r) in libvmm_abi::X86_HYPERCALL_ARGS.iter().enumerate() {
            let mut want = [0; 4];
            want[i] = 1;
            assert_eq!(named(r).hypercall_args(), want, "{r}");
        }
    }
}

static_assertions::const_assert_eq!(core::mem::offset_of!(Gprs, rbx), 8);
static_assertions::const_assert_eq!(core::mem::offset_of!(Gprs, rdi), 40);
static_assertions::const_assert_eq!(core::mem::offset_of!(Gprs, r8), 56);
static_assertions::const_assert_eq!(core::mem::offset_of!(Gprs, r15), 112);
