//! Sizes and limits, in one place, checked at compile time where they constrain each other.
#![forbid(unsafe_code)]

/// VMM stack per CPU (bytes).
pub const VMM_STACK_SIZE: usize = 64 * 1024;

/// Stack for reporting a trap taken by the VMM itself (RISC-V), bytes.
pub const TRAP_STACK_SIZE: usize = 4096;

/// Largest host device tree the RISC-V VMM accepts from OpenSBI, bytes.
pub const HOST_DTB_MAX: u32 = 1 << 20;

/// Deepest node nesting the device-tree reader accepts (QEMU's `virt` tree is 4 deep; the Linux
/// kernel's own walker stops at 64). Bounds the reader's fixed stack of open nodes.
pub const DT_MAX_DEPTH: usize = 16;

/// Guest ASID (SVM) / VPID (VMX) / VMID (RISC-V) of the one guest. 0 is the host's on every vendor.
pub const GUEST_TAG: u16 = 1;

/// Denied I/O accesses printed per VM before the VMM goes quiet about them (a hostile guest must not be
/// able to flood the console).
pub const IO_LOG_LIMIT: u32 = 4;

static_assertions::const_assert!(VMM_STACK_SIZE.is_multiple_of(4096));
static_assertions::const_assert!(GUEST_TAG != 0);
