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

static_assertions::const_assert_eq!(core::mem::offset_of!(Gprs, rbx), 8);
static_assertions::const_assert_eq!(core::mem::offset_of!(Gprs, rdi), 40);
static_assertions::const_assert_eq!(core::mem::offset_of!(Gprs, r8), 56);
static_assertions::const_assert_eq!(core::mem::offset_of!(Gprs, r15), 112);
