//! Sizes and limits, in one place, checked at compile time where they constrain each other.
#![forbid(unsafe_code)]

/// VMM stack per CPU (bytes).
pub const VMM_STACK_SIZE: usize = 64 * 1024;

/// The most CPUs (x86 APIC ids / RISC-V harts) the VMM brings up, the boot CPU included. Per-CPU
/// storage (stacks, VMCB + host save area, VMXON region + VMCS, trap stacks) is an array of this many;
/// CPUs the firmware lists beyond it are reported and left alone.
pub const MAX_CPUS: usize = 8;

/// Bytes of physical memory below 1 MiB the x86 AP trampoline occupies (one page, at a SIPI vector).
pub const AP_TRAMPOLINE_SIZE: usize = 4096;

/// How long the boot CPU waits for an x86 AP to check in after its SIPIs, or for a RISC-V hart after
/// `hart_start`, before it counts the CPU as failed (microseconds).
pub const AP_CHECKIN_TIMEOUT_US: u64 = 200_000;

/// VMX guest SMP: the longest a vCPU runs without an exit, in TSC ticks (the VMX-preemption timer's
/// bound, on top of the guest's own deadlines). Bochs raises no external-interrupt exit while the guest
/// runs with RFLAGS.IF = 0 (hardware does), so a kick (a stop, an INIT) to a vCPU that spins with
/// interrupts off is seen at this bound at the latest: 20 ms of Bochs' 50 MHz TSC, ~0.3 ms at 3 GHz.
pub const VMX_KICK_POLL_TSC: u64 = 1_000_000;

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

/// RAM ranges kept from the loader's memory map (x86); more are dropped.
pub const MAX_RAM_RANGES: usize = 32;

/// Bytes of the loader's command line the VMM reads (x86 PVH / multiboot2); the guest is given at most
/// `layout::CMDLINE_MAX` of them.
pub const HOST_CMDLINE_READ: usize = 4096;

/// The generated guest device tree (RISC-V): its strings block and its ISA strings.
pub const GUEST_DT_STRINGS_MAX: usize = 512;
pub const GUEST_DT_ISA_STRING_MAX: usize = 1024;

/// TDX (simulated module): TDMRs, TDCS pages per TD, vCPUs per TD and TDCX pages per vCPU the VMM's
/// fixed pools hold (a module that needs more is refused with an error, never a panic).
pub const TDX_MAX_TDMRS: usize = 8;
pub const TDX_MAX_TDCS: usize = 8;
pub const TDX_MAX_VCPUS: usize = 8;
pub const TDX_MAX_TDCX: usize = 8;

/// Shortest period of a guest's periodic APIC timer, microseconds (KVM's `min_timer_period_us`): a
/// shorter period is stretched to this, so a guest cannot make the VMM spend its time on timer exits.
pub const APIC_MIN_TIMER_PERIOD_US: u64 = 200;
/// The TSC rate the virtual x2APIC's minimum timer period is computed with, kHz: the VMM calibrates
/// its TSC lazily (only when a clock is read), so the limit assumes a fast TSC (4 GHz): on a slower
/// one the minimum period is longer in time, never shorter.
pub const APIC_ASSUMED_TSC_KHZ: u64 = 4_000_000;

/// Loadable segments a payload may have. The payload linker scripts make three (text, read-only data,
/// data+bss); a std payload (rust-lld static PIE) four, plus one when the image carries build-time
/// files (`libvmm_abi::files`: xtask adds them as one read-only segment). More is refused at boot.
pub const PAYLOAD_SEGMENTS_MAX: usize = 5;

/// Regions of the guest's memory map (`loader::GuestMap`): every payload segment plus the read+write
/// memory before, between and after them (boot info, guest page tables, heap, stack).
pub const GUEST_MAP_REGIONS: usize = 2 * PAYLOAD_SEGMENTS_MAX + 1;

/// 4 KiB-leaf tables per nested-table set (NPT, EPT, G-stage), in `.bss` with the backend's other
/// tables. A 2 MiB block of the guest window whose permissions are uniform is one 2 MiB leaf; a block
/// a region boundary crosses (the payload's segments are page-granular) is split into 4 KiB leaves
/// through one of these. The guest map has at most `GUEST_MAP_REGIONS - 1` boundaries inside the
/// window, each in one block, so this many tables serve any payload layout in a window of any size:
/// 32 KiB per backend.
pub const NESTED_PAGE_TABLES: usize = GUEST_MAP_REGIONS - 1;

/// The guest's memory when the machine has less to give it is refused below this (bytes): the 8 MiB the
/// window had when it was fixed. A machine's RAM above the VMM is the guest's by default
/// (`libvmm.mem=SIZE` asks for less); see `loader::window`.
pub const GUEST_MEM_MIN: u64 = 8 << 20;

/// The largest guest memory (bytes): what one level-2 nested table (x86 PD, RISC-V level-1 table) maps
/// in 2 MiB leaves, so the nested tables' fixed pools never grow with the guest. Each architecture's
/// own limit may be lower (`libvmm_abi::layout::*::WINDOW_MAX`).
pub const GUEST_MEM_MAX: u64 = 1 << 30;

/// Granularity of zero-on-first-touch (bytes): guest memory above the payload is neither zeroed nor
/// mapped at boot; the first nested fault in such a block zeroes the whole block and maps it as one
/// leaf. The boot's cost is then the same for 8 MiB and for 1 GiB of guest memory.
pub const LAZY_BLOCK: u64 = 2 << 20;

/// Words of the bitmap of blocks deferred to their first touch (`loader::GuestMap`); the shared
/// per-block state (`lazy::LazyBlocks`) covers as many blocks.
pub const LAZY_WORDS: usize = (GUEST_MEM_MAX / LAZY_BLOCK).div_ceil(64) as usize;

/// Spins a vCPU waits for a block another vCPU is zeroing or mapping (`lazy::LazyBlocks`) before it
/// re-enters the guest to fault again (first touch) or stops the VM (the VMM's own access). Zeroing
/// 2 MiB under emulation takes far fewer.
pub const LAZY_WAIT_SPINS: u64 = 50_000_000;

/// The instruction emulator (x86): device ranges one VM can register (MMIO through the emulator).
pub const EMU_DEVICE_RANGES: usize = 4;

/// The instruction emulator's string I/O batch, bytes: one exit moves at most this much (and never
/// across a page), so a `rep insb` with RCX = 2^64-1 costs bounded work per exit; RIP stays on the
/// instruction until RCX reaches zero.
pub const EMU_IO_BATCH: usize = 256;

/// The test register block every x86 guest gets (an emulated MMIO device, `policy/mmio.rs`): at
/// [`libvmm_abi::layout::x86_64::TEST_DEVICE_BASE`], this many bytes, never mapped in the nested
/// tables, so every access is a nested page fault the emulator decodes.
pub const TEST_DEVICE_SIZE: u64 = 0x1000;

/// General-purpose counters of the virtual PMU (VMX guests; `x86::pmu`).
pub const PMU_GP_COUNTERS: usize = 4;

static_assertions::const_assert!(EMU_IO_BATCH >= 8 && EMU_DEVICE_RANGES >= 1);
static_assertions::const_assert!(PMU_GP_COUNTERS >= 1 && PMU_GP_COUNTERS <= 8);
static_assertions::const_assert!(VMM_STACK_SIZE.is_multiple_of(4096));
// The RISC-V trap vector finds a hart's trap stack from its VMM stack by a shift.
static_assertions::const_assert!(VMM_STACK_SIZE.is_power_of_two());
static_assertions::const_assert!(MAX_CPUS >= 1 && MAX_CPUS <= 256);
static_assertions::const_assert!(AP_TRAMPOLINE_SIZE == 4096);
static_assertions::const_assert!(PAYLOAD_SEGMENTS_MAX >= 3);
static_assertions::const_assert!(NESTED_PAGE_TABLES >= 1);
static_assertions::const_assert!(
    GUEST_MEM_MIN.is_multiple_of(LAZY_BLOCK) && GUEST_MEM_MIN <= GUEST_MEM_MAX
);
static_assertions::const_assert!(GUEST_MEM_MAX.is_multiple_of(LAZY_BLOCK) && LAZY_BLOCK == 2 << 20);
static_assertions::const_assert!(GUEST_TAG != 0);
static_assertions::const_assert!(TRAP_STACK_SIZE.is_multiple_of(16) && TRAP_STACK_SIZE >= 1024);
static_assertions::const_assert!(HOST_CMDLINE_READ as u64 >= libvmm_abi::layout::CMDLINE_MAX);
static_assertions::const_assert!(HOST_DTB_MAX as u64 >= libvmm_abi::layout::riscv64::DTB_MAX);
static_assertions::const_assert!(
    GUEST_DT_ISA_STRING_MAX <= libvmm_abi::layout::riscv64::DTB_MAX as usize
);
static_assertions::const_assert!(MAX_RAM_RANGES >= 1 && TDX_MAX_TDMRS >= 1 && TDX_MAX_VCPUS >= 1);

/// The host LAPIC timer's periodic initial count (divide by 16): about 1 ms where the APIC timer runs at
/// 1 GHz (QEMU). Used only where the LAPIC timer's rate against the TSC could not be measured; otherwise
/// the timer is a one-shot at the earliest host deadline.
pub const HOST_TIMER_INITIAL_COUNT: u32 = 62_500;
/// The host LAPIC timer's rate against the TSC is measured over this many of its ticks (divide 16:
/// 65,536 TSC ticks where both run at 1 GHz, QEMU under `-icount`)...
pub const LAPIC_CALIBRATION_TICKS: u32 = 4096;
/// ... or at most this many TSC ticks, after which a timer that has not moved counts as unmeasurable.
pub const LAPIC_CALIBRATION_MAX_TSC: u64 = 50_000_000;
