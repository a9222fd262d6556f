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
