//! Guest-physical layout per architecture: where the payload's RAM lives and what the VMM puts in it.
//!
//! libvmm maps the guest's RAM at guest-physical == host-physical addresses inside one fixed window and
//! maps nothing else. So a payload that aims at the VMM's real memory (the image at 1 MiB on x86,
//! 0x8020_0000 on RISC-V) uses the VMM's true addresses and is stopped by the nested tables. The payload
//! linker scripts in `linker/` use the same numbers; xtask checks them against a built payload.

/// Offsets inside the window, common to all architectures.
pub const BOOT_INFO_OFFSET: u64 = 0x0;
/// The command line (at most [`CMDLINE_MAX`] bytes) follows the boot info in the first page.
pub const CMDLINE_OFFSET: u64 = 0x100;
pub const CMDLINE_MAX: u64 = 0xF00;
/// Where the payload image is loaded (its linker script's base).
pub const PAYLOAD_OFFSET: u64 = 0x1_0000;
/// The initial stack sits at the top of the window and grows down.
pub const STACK_SIZE: u64 = 0x1_0000;

pub mod x86_64 {
    /// Guest RAM window: from 32 MiB (2 MiB aligned: the nested tables use 2 MiB pages). Its size is the
    /// machine's (since ABI 1.2; [`crate::BootInfo::mem_size`]): all the RAM from here up that the VMM
    /// does not keep, at most [`WINDOW_MAX`], or what `libvmm.mem=` asks for. [`WINDOW_SIZE`] is the
    /// smallest (and what the hostile tests pin with `libvmm.mem=8M`).
    pub const WINDOW_BASE: u64 = 0x0200_0000;
    pub const WINDOW_SIZE: u64 = 0x0080_0000;
    /// The window ends at the test device at the latest (736 MiB of guest memory).
    pub const WINDOW_MAX: u64 = TEST_DEVICE_BASE - WINDOW_BASE;
    /// Initial guest page tables (PML4, PDPT, 4 PDs: identity 0..4 GiB) at this offset.
    pub const PAGE_TABLES_OFFSET: u64 = 0x1000;
    /// Initial guest GDT at this offset.
    pub const GDT_OFFSET: u64 = 0x7000;
    pub const PAYLOAD_BASE: u64 = WINDOW_BASE + super::PAYLOAD_OFFSET;
    /// Guest SMP (since ABI 1.2): the one page below 1 MiB a guest's STARTUP IPI can name. An AP the
    /// guest starts with INIT + SIPI vector `SIPI_PAGE >> 12` begins in real mode at CS:IP =
    /// 0800:0000 on this page, as on hardware. The nested tables map guest-physical [`SIPI_PAGE`]
    /// read+execute onto the window's page at [`SIPI_PAGE_OFFSET`], which the guest writes (read+write,
    /// no execute) at `WINDOW_BASE + SIPI_PAGE_OFFSET`: the guest writes its AP trampoline there and
    /// its APs run it at `SIPI_PAGE`. The only guest-physical page outside the window, and the only
    /// page with two guest-physical addresses.
    pub const SIPI_PAGE: u64 = 0x8000;
    pub const SIPI_PAGE_OFFSET: u64 = 0x8000;
    /// Where the VMM image is linked (an address the hostile payload aims at).
    pub const VMM_IMAGE_BASE: u64 = 0x0010_0000;
    /// The emulated test register block (since ABI 1.1): a device page outside guest RAM (inside the
    /// initial page tables' identity map, never in the nested tables), so every access is a nested page
    /// fault that the VMM's instruction emulator decodes (MOV only, 1-8 bytes, naturally inside one
    /// register). Registers at offsets [`TEST_DEVICE_ID`] (read-only) and [`TEST_DEVICE_SCRATCH`].
    pub const TEST_DEVICE_BASE: u64 = 0x3000_0000;
    /// Read-only: reads [`TEST_DEVICE_ID_VALUE`]; writes are ignored.
    pub const TEST_DEVICE_ID: u64 = 0x0;
    /// Read+write: keeps the last value written (any width; a narrower write merges).
    pub const TEST_DEVICE_SCRATCH: u64 = 0x8;
    pub const TEST_DEVICE_ID_VALUE: u64 = u64::from_le_bytes(*b"libvmmT1");
}

pub mod riscv64 {
    /// Guest RAM window: from 0x8400_0000 (above OpenSBI at 0x8000_0000 and the VMM at 0x8020_0000)
    /// up to the end of RAM or the host device tree (QEMU puts it near the top of RAM), whichever is
    /// lower, at most [`WINDOW_MAX`], or what `libvmm.mem=` asks for (since ABI 1.2; the size is in
    /// [`crate::BootInfo::mem_size`] and the guest's device tree). [`WINDOW_SIZE`] is the smallest.
    pub const WINDOW_BASE: u64 = 0x8400_0000;
    pub const WINDOW_SIZE: u64 = 0x0080_0000;
    /// The window stays inside the GiB it starts in (one G-stage level-1 table): 960 MiB.
    pub const WINDOW_MAX: u64 = 0xC000_0000 - WINDOW_BASE;
    pub const PAYLOAD_BASE: u64 = WINDOW_BASE + super::PAYLOAD_OFFSET;
    /// Where the VMM image is linked.
    pub const VMM_IMAGE_BASE: u64 = 0x8020_0000;
    /// The guest's device tree (listing exactly its enabled ISA extensions) at this offset; its
    /// guest-physical address is also in a2 at the payload's entry.
    pub const DTB_OFFSET: u64 = 0x1000;
    pub const DTB_MAX: u64 = 0x4000;
}

static_assertions::const_assert!(CMDLINE_OFFSET >= core::mem::size_of::<crate::BootInfo>() as u64);
static_assertions::const_assert!(x86_64::GDT_OFFSET + 0x1000 <= PAYLOAD_OFFSET);
static_assertions::const_assert!(x86_64::GDT_OFFSET + 0x1000 <= x86_64::SIPI_PAGE_OFFSET);
static_assertions::const_assert!(x86_64::SIPI_PAGE_OFFSET + 0x1000 <= PAYLOAD_OFFSET);
static_assertions::const_assert!(
    x86_64::SIPI_PAGE < 0x10_0000 && x86_64::SIPI_PAGE.is_multiple_of(0x1000)
);
static_assertions::const_assert!(x86_64::WINDOW_BASE.is_multiple_of(0x20_0000));
static_assertions::const_assert!(riscv64::WINDOW_BASE.is_multiple_of(0x20_0000));
static_assertions::const_assert!(riscv64::DTB_OFFSET >= CMDLINE_OFFSET + CMDLINE_MAX);
static_assertions::const_assert!(riscv64::DTB_OFFSET + riscv64::DTB_MAX <= PAYLOAD_OFFSET);
