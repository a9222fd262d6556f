//! Every TDX status code libvmm knows, in one place, with the helpers callers need.
//!
//! Linux keeps these in one header (`arch/x86/include/asm/shared/tdx_errno.h`, consolidated by the
//! "Move all TDX error defines" patch of the Dynamic PAMT series) and compares only the status part
//! (bits 63:32) through `IS_TDX_<NAME>()` helpers; the details part (bits 31:0) carries the operand ID
//! of BUSY / INVALID errors. [`Status`] is the Rust form: a newtype over RAX after SEAMCALL.
//! Values: Linux `tdx_errno.h` where it has them, otherwise the TDX module's own error-code table
//! (`TDX_PAGE_NOT_FREE`, `TDX_EPT_ENTRY_NOT_FREE`, ...; Intel TDX Module ABI spec).
#![forbid(unsafe_code)]

/// RAX after a SEAMCALL.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Status(pub u64);

/// Bits 63:32: the status code proper.
pub const STATUS_MASK: u64 = 0xFFFF_FFFF_0000_0000;
/// Bit 63: the call failed.
pub const ERROR: u64 = 1 << 63;
/// Bit 62: the failure cannot be recovered from (the TD or vCPU is dead).
pub const NON_RECOVERABLE: u64 = 1 << 62;
/// Class 0xFF (bits 47:40) with bit 63: codes made up by software (the kernel, or libvmm) for faults the
/// SEAMCALL itself took.
pub const SW_ERROR: u64 = ERROR | (0xFF << 40);

pub const SUCCESS: u64 = 0;
pub const NON_RECOVERABLE_VCPU: u64 = 0x4000_0001_0000_0000;
pub const NON_RECOVERABLE_TD: u64 = 0x4000_0002_0000_0000;
pub const INTERRUPTED_RESUMABLE: u64 = 0x8000_0003_0000_0000;
pub const INTERRUPTED_RESTARTABLE: u64 = 0x8000_0004_0000_0000;
pub const OPERAND_INVALID: u64 = 0xC000_0100_0000_0000;
pub const OPERAND_ADDR_RANGE_ERROR: u64 = 0xC000_0101_0000_0000;
pub const OPERAND_BUSY: u64 = 0x8000_0200_0000_0000;
pub const PREVIOUS_TLB_EPOCH_BUSY: u64 = 0x8000_0201_0000_0000;
pub const SYS_BUSY: u64 = 0x8000_0202_0000_0000;
pub const RND_NO_ENTROPY: u64 = 0x8000_0203_0000_0000;
pub const OPERAND_BUSY_HOST_PRIORITY: u64 = 0x8000_0204_0000_0000;
pub const PAGE_METADATA_INCORRECT: u64 = 0xC000_0300_0000_0000;
pub const PAGE_NOT_OWNED_BY_TD: u64 = 0xC000_0302_0000_0000;
pub const PAGE_NOT_FREE: u64 = 0xC000_0303_0000_0000;
pub const HPA_RANGE_NOT_FREE: u64 = 0xC000_0304_0000_0000;
pub const TD_NOT_INITIALIZED: u64 = 0xC000_0600_0000_0000;
pub const TD_NOT_FINALIZED: u64 = 0xC000_0602_0000_0000;
pub const TD_FINALIZED: u64 = 0xC000_0603_0000_0000;
pub const TDCX_NUM_INCORRECT: u64 = 0xC000_0610_0000_0000;
pub const GPA_RANGE_ALREADY_BLOCKED: u64 = 0x0000_0B07_0000_0000;
pub const TD_ASSOCIATED_PAGES_EXIST: u64 = 0xC000_0400_0000_0000;
pub const TD_KEYS_NOT_CONFIGURED: u64 = 0x8000_0810_0000_0000;
pub const HKID_NOT_FREE: u64 = 0xC000_0820_0000_0000;
pub const VCPU_NOT_ASSOCIATED: u64 = 0x8000_0702_0000_0000;
pub const KEY_GENERATION_FAILED: u64 = 0x8000_0800_0000_0000;
pub const KEY_STATE_INCORRECT: u64 = 0xC000_0811_0000_0000;
pub const KEY_CONFIGURED: u64 = 0x0000_0815_0000_0000;
pub const NO_HKID_READY_TO_WBCACHE: u64 = 0x0000_0821_0000_0000;
pub const FLUSHVP_NOT_DONE: u64 = 0x8000_0824_0000_0000;
pub const EPT_WALK_FAILED: u64 = 0xC000_0B00_0000_0000;
pub const EPT_ENTRY_FREE: u64 = 0xC000_0B01_0000_0000;
pub const EPT_ENTRY_NOT_FREE: u64 = 0xC000_0B02_0000_0000;
pub const GPA_RANGE_NOT_BLOCKED: u64 = 0xC000_0B06_0000_0000;
pub const TLB_TRACKING_NOT_DONE: u64 = 0xC000_0B08_0000_0000;
pub const EPT_PAGE_NOT_FREE: u64 = 0xC000_0B0E_0000_0000;
pub const EPT_ENTRY_STATE_INCORRECT: u64 = 0xC000_0B0D_0000_0000;
pub const METADATA_FIELD_NOT_READABLE: u64 = 0xC000_0C02_0000_0000;
/// Software: VMfailInvalid, i.e. no TDX module is loaded in SEAM range.
pub const SEAMCALL_VMFAILINVALID: u64 = 0x8000_FF00_FFFF_0000;
/// Software: the SEAMCALL raised #GP (TDX not enabled by BIOS).
pub const SEAMCALL_GP: u64 = SW_ERROR | 13;
/// Software: the SEAMCALL raised #UD (not in VMX operation, no SEAM).
pub const SEAMCALL_UD: u64 = SW_ERROR | 6;

/// Operand IDs (bits 31:0 of BUSY / INVALID errors).
pub mod operand {
    pub const RAX: u32 = 0x00;
    pub const RCX: u32 = 0x01;
    pub const RDX: u32 = 0x02;
    pub const R8: u32 = 0x08;
    pub const R9: u32 = 0x09;
    pub const TDR: u32 = 0x80;
    pub const SEPT: u32 = 0x92;
    pub const TD_EPOCH: u32 = 0xA9;
}

impl Status {
    pub const OK: Status = Status(SUCCESS);

    /// `code | operand`: how the module reports which operand a BUSY / INVALID refers to.
    pub const fn with_operand(code: u64, operand: u32) -> Self {
        Self(code | operand as u64)
    }
    /// The status part (bits 63:32), `TDX_STATUS()`.
    pub const fn code(self) -> u64 {
        self.0 & STATUS_MASK
    }
    /// The details part (bits 31:0): the operand ID of BUSY / INVALID errors.
    pub const fn details(self) -> u32 {
        self.0 as u32
    }
    pub const fn is(self, code: u64) -> bool {
        self.code() == code
    }
    pub const fn is_success(self) -> bool {
        self.0 == SUCCESS
    }
    pub const fn is_error(self) -> bool {
        self.0 & ERROR != 0
    }
    pub const fn is_non_recoverable(self) -> bool {
        self.0 & NON_RECOVERABLE != 0
    }
    /// Any "resource busy, try again" status: OPERAND_BUSY (with its operand), the host-priority variant,
    /// TLB-epoch and SYS busy. The module never waits on its locks; it returns one of these.
    pub const fn is_busy(self) -> bool {
        matches!(
            self.code(),
            OPERAND_BUSY | OPERAND_BUSY_HOST_PRIORITY | PREVIOUS_TLB_EPOCH_BUSY | SYS_BUSY
        )
    }
    /// `Some(operand id)` when this is OPERAND_BUSY.
    pub const fn busy_operand(self) -> Option<u32> {
        if self.is(OPERAND_BUSY) || self.is(OPERAND_BUSY_HOST_PRIORITY) {
            Some(self.details())
        } else {
            None
        }
    }
    /// BUSY on the S-EPT lock (`TDX_OPERAND_BUSY | 0x92`).
    pub const fn is_sept_busy(self) -> bool {
        matches!(self.busy_operand(), Some(operand::SEPT))
    }
    /// The RNG ran dry: the kernel's `sc_retry()` re-issues the call.
    pub const fn is_entropy_retry(self) -> bool {
        self.is(RND_NO_ENTROPY)
    }
    /// `Some(operand id)` when this is OPERAND_INVALID.
    pub const fn invalid_operand(self) -> Option<u32> {
        if self.is(OPERAND_INVALID) {
            Some(self.details())
        } else {
            None
        }
    }
    /// The SEAMCALL itself did not reach a module (VMfailInvalid, #GP, #UD).
    pub const fn is_seamcall_fault(self) -> bool {
        matches!(self.0, SEAMCALL_VMFAILINVALID | SEAMCALL_GP | SEAMCALL_UD)
    }
    /// `Ok(())` on success, the status otherwise.
    pub const fn ok(self) -> Result<(), Status> {
        if self.is_success() {
            Ok(())
        } else {
            Err(self)
        }
    }
    /// A short name of the status code, for stop messages.
    pub const fn name(self) -> &'static str {
        if self.is_success() {
            return "SUCCESS";
        }
        match self.0 {
            SEAMCALL_VMFAILINVALID => return "SEAMCALL_VMFAILINVALID",
            SEAMCALL_GP => return "SEAMCALL_GP",
            SEAMCALL_UD => return "SEAMCALL_UD",
            _ => {}
        }
        match self.code() {
            NON_RECOVERABLE_VCPU => "NON_RECOVERABLE_VCPU",
            NON_RECOVERABLE_TD => "NON_RECOVERABLE_TD",
            INTERRUPTED_RESUMABLE => "INTERRUPTED_RESUMABLE",
            INTERRUPTED_RESTARTABLE => "INTERRUPTED_RESTARTABLE",
            OPERAND_INVALID => "OPERAND_INVALID",
            OPERAND_ADDR_RANGE_ERROR => "OPERAND_ADDR_RANGE_ERROR",
            OPERAND_BUSY => "OPERAND_BUSY",
            PREVIOUS_TLB_EPOCH_BUSY => "PREVIOUS_TLB_EPOCH_BUSY",
            SYS_BUSY => "SYS_BUSY",
            RND_NO_ENTROPY => "RND_NO_ENTROPY",
            OPERAND_BUSY_HOST_PRIORITY => "OPERAND_BUSY_HOST_PRIORITY",
            PAGE_METADATA_INCORRECT => "PAGE_METADATA_INCORRECT",
            PAGE_NOT_OWNED_BY_TD => "PAGE_NOT_OWNED_BY_TD",
            PAGE_NOT_FREE => "PAGE_NOT_FREE",
            HPA_RANGE_NOT_FREE => "HPA_RANGE_NOT_FREE",
            TD_NOT_INITIALIZED => "TD_NOT_INITIALIZED",
            TD_NOT_FINALIZED => "TD_NOT_FINALIZED",
            TD_FINALIZED => "TD_FINALIZED",
            TDCX_NUM_INCORRECT => "TDCX_NUM_INCORRECT",
            GPA_RANGE_ALREADY_BLOCKED => "GPA_RANGE_ALREADY_BLOCKED",
            TD_ASSOCIATED_PAGES_EXIST => "TD_ASSOCIATED_PAGES_EXIST",
            TD_KEYS_NOT_CONFIGURED => "TD_KEYS_NOT_CONFIGURED",
            HKID_NOT_FREE => "HKID_NOT_FREE",
            VCPU_NOT_ASSOCIATED => "VCPU_NOT_ASSOCIATED",
            KEY_GENERATION_FAILED => "KEY_GENERATION_FAILED",
            KEY_STATE_INCORRECT => "KEY_STATE_INCORRECT",
            KEY_CONFIGURED => "KEY_CONFIGURED",
            NO_HKID_READY_TO_WBCACHE => "NO_HKID_READY_TO_WBCACHE",
            FLUSHVP_NOT_DONE => "FLUSHVP_NOT_DONE",
            EPT_WALK_FAILED => "EPT_WALK_FAILED",
            EPT_ENTRY_FREE => "EPT_ENTRY_FREE",
            EPT_ENTRY_NOT_FREE => "EPT_ENTRY_NOT_FREE",
            GPA_RANGE_NOT_BLOCKED => "GPA_RANGE_NOT_BLOCKED",
            TLB_TRACKING_NOT_DONE => "TLB_TRACKING_NOT_DONE",
            EPT_PAGE_NOT_FREE => "EPT_PAGE_NOT_FREE",
            EPT_ENTRY_STATE_INCORRECT => "EPT_ENTRY_STATE_INCORRECT",
            METADATA_FIELD_NOT_READABLE => "METADATA_FIELD_NOT_READABLE",
            _ => "unknown TDX status",
        }
    }
}

impl core::fmt::Debug for Status {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{}({:#018x})", self.name(), self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn busy_carries_its_operand_and_compares_by_status_part() {
        let s = Status::with_operand(OPERAND_BUSY, operand::SEPT);
        assert!(s.is_busy() && s.is_sept_busy() && s.is_error());
        assert!(s.is(OPERAND_BUSY));
        assert_eq!(s.busy_operand(), Some(0x92));
        assert_eq!(
            Status::with_operand(OPERAND_BUSY, operand::RCX).busy_operand(),
            Some(1)
        );
        assert!(!Status::with_operand(OPERAND_BUSY, operand::RCX).is_sept_busy());
        assert!(Status(SYS_BUSY).is_busy() && Status(SYS_BUSY).busy_operand().is_none());
    }

    #[test]
    fn invalid_entropy_and_software_codes_are_told_apart() {
        let inv = Status::with_operand(OPERAND_INVALID, operand::R8);
        assert_eq!(inv.invalid_operand(), Some(8));
        assert!(!inv.is_busy() && inv.is_error());
        assert!(Status(RND_NO_ENTROPY).is_entropy_retry());
        assert!(!Status(OPERAND_BUSY).is_entropy_retry());
        assert!(Status(SEAMCALL_UD).is_seamcall_fault());
        assert_eq!(SEAMCALL_UD, 0x8000_FF00_0000_0006);
        assert_eq!(SEAMCALL_GP, 0x8000_FF00_0000_000D);
        assert!(
            Status(NON_RECOVERABLE_TD).is_non_recoverable()
                && !Status(NON_RECOVERABLE_TD).is_error()
        );
        assert!(Status::OK.ok().is_ok() && Status(KEY_CONFIGURED).ok().is_err());
        assert_eq!(
            Status::with_operand(HPA_RANGE_NOT_FREE, 1).name(),
            "HPA_RANGE_NOT_FREE"
        );
        assert_eq!(
            Status(SEAMCALL_VMFAILINVALID).name(),
            "SEAMCALL_VMFAILINVALID"
        );
    }
}
