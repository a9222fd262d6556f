//! RISC-V SBI extension ids, function ids and error codes (SBI specification v2.0): the one home of this
//! vocabulary for the VMM (its SBI policy, its own calls to OpenSBI), the guest runtime and payloads.

/// BASE extension ("base").
pub const EXT_BASE: u64 = 0x10;
/// TIME extension ("TIME"): function 0 is `set_timer(stime_value)`.
pub const EXT_TIME: u64 = 0x5449_4D45;
/// System reset extension ("SRST"): function 0 is `system_reset(type, reason)`.
pub const EXT_SRST: u64 = 0x5352_5354;
/// Debug console extension ("DBCN").
pub const EXT_DBCN: u64 = 0x4442_434E;
/// Hart state management extension ("HSM"): the VMM starts its own harts with `hart_start`.
pub const EXT_HSM: u64 = 0x0048_534D;
/// HSM `hart_start(hartid, start_addr, opaque)`, `hart_stop()`, `hart_get_status(hartid)`,
/// `hart_suspend(type, resume_addr, opaque)`.
pub const HSM_HART_START: u64 = 0;
pub const HSM_HART_STOP: u64 = 1;
pub const HSM_HART_GET_STATUS: u64 = 2;
pub const HSM_HART_SUSPEND: u64 = 3;
/// HSM hart states (`hart_get_status`).
pub const HSM_STATE_STARTED: i64 = 0;
pub const HSM_STATE_STOPPED: i64 = 1;
pub const HSM_STATE_START_PENDING: i64 = 2;
/// HSM `hart_suspend` types: default retentive (0) and non-retentive (0x8000_0000).
pub const HSM_SUSPEND_RETENTIVE: u64 = 0;
pub const HSM_SUSPEND_NON_RETENTIVE: u64 = 0x8000_0000;
/// IPI extension ("sPI"): function 0 is `send_ipi(hart_mask, hart_mask_base)`.
pub const EXT_IPI: u64 = 0x0073_5049;
pub const IPI_SEND_IPI: u64 = 0;
/// RFENCE extension ("RFNC"): every function takes `(hart_mask, hart_mask_base, ...)`.
pub const EXT_RFENCE: u64 = 0x5246_4E43;
pub const RFENCE_FENCE_I: u64 = 0;
pub const RFENCE_SFENCE_VMA: u64 = 1;
pub const RFENCE_SFENCE_VMA_ASID: u64 = 2;
pub const RFENCE_HFENCE_GVMA_VMID: u64 = 3;
pub const RFENCE_HFENCE_GVMA: u64 = 4;
pub const RFENCE_HFENCE_VVMA_ASID: u64 = 5;
pub const RFENCE_HFENCE_VVMA: u64 = 6;
/// libvmm hypercalls (firmware-specific range 0x0A00_0000..=0x0AFF_FFFF); same value as
/// [`crate::SBI_EXT_LIBVMM`].
pub const EXT_LIBVMM: u64 = crate::SBI_EXT_LIBVMM;

/// TIME `set_timer`.
pub const TIME_SET_TIMER: u64 = 0;
/// SRST `system_reset`, its types and reasons.
pub const SRST_SYSTEM_RESET: u64 = 0;
pub const SRST_TYPE_SHUTDOWN: u64 = 0;
pub const SRST_REASON_NONE: u64 = 0;
pub const SRST_REASON_FAILURE: u64 = 1;

/// Error codes (returned in a0).
pub const SUCCESS: i64 = 0;
pub const ERR_FAILED: i64 = -1;
pub const ERR_NOT_SUPPORTED: i64 = -2;
pub const ERR_INVALID_PARAM: i64 = -3;
pub const ERR_DENIED: i64 = -4;
pub const ERR_INVALID_ADDRESS: i64 = -5;
pub const ERR_ALREADY_AVAILABLE: i64 = -6;
