//! VMCS field encodings, all in one place, each typed with its width.
//!
//! The numbers come from the `x86` crate (`x86::vmx::vmcs`, SDM Vol. 3D App. B); this module adds the
//! width as a type ([`Field<W>`]) so that a 16-bit field can only be written with a `u16`, and checks at
//! compile time that the width encoded in bits 14:13 of every encoding matches the declared width and
//! that no `_HIGH` half (access type bit 0) is used by mistake. A wrong entry here fails the build.
#![forbid(unsafe_code)]
// The encoding table lists the fields a VMM of this shape touches, some only for diagnosis and tests.
#![allow(dead_code)]

use core::marker::PhantomData;
use x86::vmx::vmcs::{control as c, guest as g, host as h, ro};

/// A VMCS field width. `BITS` is the value of encoding bits 14:13.
pub(crate) trait Width {
    type Value: Copy + Into<u64>;
    const BITS: u32;
    fn from_raw(v: u64) -> Self::Value;
}

pub(crate) struct W16;
pub(crate) struct W32;
pub(crate) struct W64;
/// Natural width: 64 bits on x86_64 hosts.
pub(crate) struct Natural;

impl Width for W16 {
    type Value = u16;
    const BITS: u32 = 0;
    fn from_raw(v: u64) -> u16 {
        v as u16
    }
}
impl Width for W64 {
    type Value = u64;
    const BITS: u32 = 1;
    fn from_raw(v: u64) -> u64 {
        v
    }
}
impl Width for W32 {
    type Value = u32;
    const BITS: u32 = 2;
    fn from_raw(v: u64) -> u32 {
        v as u32
    }
}
impl Width for Natural {
    type Value = u64;
    const BITS: u32 = 3;
    fn from_raw(v: u64) -> u64 {
        v
    }
}

/// One VMCS field of width `W`.
pub(crate) struct Field<W: Width>(u32, PhantomData<W>);

impl<W: Width> Clone for Field<W> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<W: Width> Copy for Field<W> {}

impl<W: Width> Field<W> {
    /// Declares a field; panics (a build error, since every field is a `const`) when the encoding's width
    /// bits disagree with `W`, when it is a `_HIGH` half, or when reserved bits are set.
    const fn new(encoding: u32) -> Self {
        assert!(
            (encoding >> 13) & 3 == W::BITS,
            "VMCS field width does not match its encoding"
        );
        assert!(
            encoding & 1 == 0,
            "VMCS field is a _HIGH half: use the full field"
        );
        assert!(
            encoding & !0x6FFF == 0 && encoding & (1 << 12) == 0,
            "reserved bits in VMCS encoding"
        );
        Field(encoding, PhantomData)
    }
    pub const fn encoding(self) -> u32 {
        self.0
    }
    /// Field type from encoding bits 11:10: 1 = read-only data.
    pub const fn is_read_only(self) -> bool {
        (self.0 >> 10) & 3 == 1
    }
}

macro_rules! fields {
    ($($w:ident: $($name:ident = $enc:expr),+ ;)+) => {
        $($(pub(crate) const $name: Field<$w> = Field::<$w>::new($enc);)+)+
    };
}

fields! {
    W16: VPID = c::VPID;
    W16: GUEST_ES_SELECTOR = g::ES_SELECTOR, GUEST_CS_SELECTOR = g::CS_SELECTOR,
         GUEST_SS_SELECTOR = g::SS_SELECTOR, GUEST_DS_SELECTOR = g::DS_SELECTOR,
         GUEST_FS_SELECTOR = g::FS_SELECTOR, GUEST_GS_SELECTOR = g::GS_SELECTOR,
         GUEST_LDTR_SELECTOR = g::LDTR_SELECTOR, GUEST_TR_SELECTOR = g::TR_SELECTOR;
    W16: HOST_ES_SELECTOR = h::ES_SELECTOR, HOST_CS_SELECTOR = h::CS_SELECTOR, HOST_SS_SELECTOR = h::SS_SELECTOR,
         HOST_DS_SELECTOR = h::DS_SELECTOR, HOST_FS_SELECTOR = h::FS_SELECTOR, HOST_GS_SELECTOR = h::GS_SELECTOR,
         HOST_TR_SELECTOR = h::TR_SELECTOR;
    W64: IO_BITMAP_A = c::IO_BITMAP_A_ADDR_FULL, IO_BITMAP_B = c::IO_BITMAP_B_ADDR_FULL,
         MSR_BITMAP = c::MSR_BITMAPS_ADDR_FULL, VIRTUAL_APIC_PAGE = c::VIRT_APIC_ADDR_FULL,
         EPT_POINTER = c::EPTP_FULL, TSC_MULTIPLIER = c::TSC_MULTIPLIER_FULL, TSC_OFFSET = c::TSC_OFFSET_FULL;
    W64: GUEST_PHYSICAL_ADDRESS = ro::GUEST_PHYSICAL_ADDR_FULL;
    W64: VMCS_LINK_POINTER = g::LINK_PTR_FULL, GUEST_IA32_PAT = g::IA32_PAT_FULL,
         GUEST_IA32_EFER = g::IA32_EFER_FULL, GUEST_IA32_DEBUGCTL = g::IA32_DEBUGCTL_FULL;
    W64: HOST_IA32_PAT = h::IA32_PAT_FULL, HOST_IA32_EFER = h::IA32_EFER_FULL;
    W32: PIN_BASED_CONTROLS = c::PINBASED_EXEC_CONTROLS, PRIMARY_PROC_CONTROLS = c::PRIMARY_PROCBASED_EXEC_CONTROLS,
         SECONDARY_PROC_CONTROLS = c::SECONDARY_PROCBASED_EXEC_CONTROLS, EXCEPTION_BITMAP = c::EXCEPTION_BITMAP,
         CR3_TARGET_COUNT = c::CR3_TARGET_COUNT, EXIT_CONTROLS = c::VMEXIT_CONTROLS,
         ENTRY_CONTROLS = c::VMENTRY_CONTROLS, EXIT_MSR_STORE_COUNT = c::VMEXIT_MSR_STORE_COUNT,
         EXIT_MSR_LOAD_COUNT = c::VMEXIT_MSR_LOAD_COUNT, ENTRY_MSR_LOAD_COUNT = c::VMENTRY_MSR_LOAD_COUNT,
         ENTRY_INTERRUPTION_INFO = c::VMENTRY_INTERRUPTION_INFO_FIELD,
         ENTRY_EXCEPTION_ERROR_CODE = c::VMENTRY_EXCEPTION_ERR_CODE,
         ENTRY_INSTRUCTION_LENGTH = c::VMENTRY_INSTRUCTION_LEN, TPR_THRESHOLD = c::TPR_THRESHOLD;
    W32: VM_INSTRUCTION_ERROR = ro::VM_INSTRUCTION_ERROR, EXIT_REASON = ro::EXIT_REASON,
         EXIT_INTERRUPTION_INFO = ro::VMEXIT_INTERRUPTION_INFO, EXIT_INSTRUCTION_LENGTH = ro::VMEXIT_INSTRUCTION_LEN,
         IDT_VECTORING_INFO = ro::IDT_VECTORING_INFO, IDT_VECTORING_ERROR_CODE = ro::IDT_VECTORING_ERR_CODE;
    W32: GUEST_ES_LIMIT = g::ES_LIMIT, GUEST_CS_LIMIT = g::CS_LIMIT, GUEST_SS_LIMIT = g::SS_LIMIT,
         GUEST_DS_LIMIT = g::DS_LIMIT, GUEST_FS_LIMIT = g::FS_LIMIT, GUEST_GS_LIMIT = g::GS_LIMIT,
         GUEST_LDTR_LIMIT = g::LDTR_LIMIT, GUEST_TR_LIMIT = g::TR_LIMIT, GUEST_GDTR_LIMIT = g::GDTR_LIMIT,
         GUEST_IDTR_LIMIT = g::IDTR_LIMIT,
         GUEST_ES_AR = g::ES_ACCESS_RIGHTS, GUEST_CS_AR = g::CS_ACCESS_RIGHTS, GUEST_SS_AR = g::SS_ACCESS_RIGHTS,
         GUEST_DS_AR = g::DS_ACCESS_RIGHTS, GUEST_FS_AR = g::FS_ACCESS_RIGHTS, GUEST_GS_AR = g::GS_ACCESS_RIGHTS,
         GUEST_LDTR_AR = g::LDTR_ACCESS_RIGHTS, GUEST_TR_AR = g::TR_ACCESS_RIGHTS,
         GUEST_INTERRUPTIBILITY = g::INTERRUPTIBILITY_STATE, GUEST_ACTIVITY_STATE = g::ACTIVITY_STATE,
         GUEST_SYSENTER_CS = g::IA32_SYSENTER_CS, GUEST_PREEMPTION_TIMER = g::VMX_PREEMPTION_TIMER_VALUE;
    W32: HOST_SYSENTER_CS = h::IA32_SYSENTER_CS;
    Natural: CR0_GUEST_HOST_MASK = c::CR0_GUEST_HOST_MASK, CR4_GUEST_HOST_MASK = c::CR4_GUEST_HOST_MASK,
         CR0_READ_SHADOW = c::CR0_READ_SHADOW, CR4_READ_SHADOW = c::CR4_READ_SHADOW;
    Natural: EXIT_QUALIFICATION = ro::EXIT_QUALIFICATION, GUEST_LINEAR_ADDRESS = ro::GUEST_LINEAR_ADDR;
    Natural: GUEST_CR0 = g::CR0, GUEST_CR3 = g::CR3, GUEST_CR4 = g::CR4, GUEST_ES_BASE = g::ES_BASE,
         GUEST_CS_BASE = g::CS_BASE, GUEST_SS_BASE = g::SS_BASE, GUEST_DS_BASE = g::DS_BASE,
         GUEST_FS_BASE = g::FS_BASE, GUEST_GS_BASE = g::GS_BASE, GUEST_LDTR_BASE = g::LDTR_BASE,
         GUEST_TR_BASE = g::TR_BASE, GUEST_GDTR_BASE = g::GDTR_BASE, GUEST_IDTR_BASE = g::IDTR_BASE,
         GUEST_DR7 = g::DR7, GUEST_RSP = g::RSP, GUEST_RIP = g::RIP, GUEST_RFLAGS = g::RFLAGS,
         GUEST_PENDING_DBG = g::PENDING_DBG_EXCEPTIONS, GUEST_SYSENTER_ESP = g::IA32_SYSENTER_ESP,
         GUEST_SYSENTER_EIP = g::IA32_SYSENTER_EIP;
    Natural: HOST_CR0 = h::CR0, HOST_CR3 = h::CR3, HOST_CR4 = h::CR4, HOST_FS_BASE = h::FS_BASE,
         HOST_GS_BASE = h::GS_BASE, HOST_TR_BASE = h::TR_BASE, HOST_GDTR_BASE = h::GDTR_BASE,
         HOST_IDTR_BASE = h::IDTR_BASE, HOST_SYSENTER_ESP = h::IA32_SYSENTER_ESP,
         HOST_SYSENTER_EIP = h::IA32_SYSENTER_EIP, HOST_RSP = h::RSP, HOST_RIP = h::RIP;
}

/// Host RSP's encoding, for the world-switch assembly (which writes it on every entry).
pub(crate) const HOST_RSP_ENCODING: u32 = HOST_RSP.encoding();

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodings_match_the_sdm_numbers_the_reference_lists() {
        assert_eq!(EPT_POINTER.encoding(), 0x201A);
        assert_eq!(TSC_MULTIPLIER.encoding(), 0x2032);
        assert_eq!(TPR_THRESHOLD.encoding(), 0x401C);
        assert_eq!(VM_INSTRUCTION_ERROR.encoding(), 0x4400);
        assert_eq!(EXIT_REASON.encoding(), 0x4402);
        assert_eq!(EXIT_INSTRUCTION_LENGTH.encoding(), 0x440C);
        assert_eq!(EXIT_QUALIFICATION.encoding(), 0x6400);
        assert_eq!(GUEST_PHYSICAL_ADDRESS.encoding(), 0x2400);
        assert_eq!(HOST_RSP.encoding(), 0x6C14);
        assert_eq!(HOST_RIP.encoding(), 0x6C16);
        assert_eq!(VMCS_LINK_POINTER.encoding(), 0x2800);
        assert_eq!(SECONDARY_PROC_CONTROLS.encoding(), 0x401E);
    }

    #[test]
    fn read_only_fields_are_marked() {
        assert!(EXIT_REASON.is_read_only());
        assert!(GUEST_PHYSICAL_ADDRESS.is_read_only());
        assert!(!GUEST_RIP.is_read_only());
    }
}
