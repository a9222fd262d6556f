//! Sizes and limits, in one place, checked at compile time where they constrain each other.
#![forbid(unsafe_code)]

/// VMM stack per CPU (bytes).
pub const VMM_STACK_SIZE: usize = 64 * 1024;

/// Stack for reporting a trap taken by the VMM itself (RISC-V), bytes.
pub const TRAP_STACK_SIZE: usize = 4096;

/// Largest host device tree the RISC-V VMM accepts from OpenSBI, bytes.
pub const HOST_DTB_MAX: u32 = 1 << 20;

/// Guest ASID (SVM) / VPID (VMX) / VMID (RISC-V) of the one guest. 0 is the host's on every vendor.
pub const GUEST_TAG: u16 = 1;

/// Denied I/O accesses printed per VM before the VMM goes quiet about them (a hostile guest must not be
/// able to flood the console).
pub const IO_LOG_LIMIT: u32 = 4;

/// Loadable segments a payload may have. The payload linker scripts make three (text, read-only data,
/// data+bss); one spare. More is refused at boot.
pub const PAYLOAD_SEGMENTS_MAX: usize = 4;

/// Regions of the guest's memory map (`loader::GuestMap`): every payload segment plus the read+write
/// memory before, between and after them (boot info, guest page tables, heap, stack).
pub const GUEST_MAP_REGIONS: usize = 2 * PAYLOAD_SEGMENTS_MAX + 1;

/// 4 KiB-leaf tables per nested-table set (NPT, EPT, G-stage), in `.bss` with the backend's other
/// tables. A 2 MiB block of the guest window whose permissions are uniform is one 2 MiB leaf; a block
/// a region boundary crosses (the payload's segments are page-granular) is split into 4 KiB leaves
/// through one of these. One per 2 MiB block of the 8 MiB window (checked against each architecture's
/// window by its table module), so no payload layout can run out: 16 KiB per backend.
pub const NESTED_PAGE_TABLES: usize = 4;

static_assertions::const_assert!(VMM_STACK_SIZE.is_multiple_of(4096));
static_assertions::const_assert!(PAYLOAD_SEGMENTS_MAX >= 3);
static_assertions::const_assert!(NESTED_PAGE_TABLES >= 1);
static_assertions::const_assert!(GUEST_TAG != 0);
