//! Starting the other CPUs (APs): the real-mode trampoline, the APs' VMM stacks, and the hand-off
//! between the boot CPU and each AP. The INIT and STARTUP IPIs themselves go through the LAPIC's ICR
//! ([`super::lapic`]).
//!
//! The trampoline is 16-bit code assembled into the image and copied, at boot, to a 4 KiB page below
//! 1 MiB (a SIPI vector names the page: the AP starts in real mode at CS:IP = VV00:0000). Its first two
//! bytes jump over its data (GDT pointer at offset 2, CR3 at offset 8: the code addresses them by
//! these offsets, DS = CS). It loads the
//! boot GDT (a 64-bit code descriptor) and the VMM's page tables (the boot tables, identity 0..4 GiB),
//! sets CR4.PAE, EFER.LME and EFER.NXE, and sets CR0.PE and CR0.PG in one write (real mode straight
//! to long mode, legal: long mode needs paging, and paging needs PE, in the same MOV), then a far jump
//! through the 64-bit code selector into [`libvmm_ap_entry64`] in the image. The page's contents are
//! position independent: every address in it is an absolute link-time address of the image (below
//! 16 MiB), never an address inside the page.
//!
//! The boot CPU starts the APs one at a time: it writes the AP's index and stack top into two words,
//! sends INIT-SIPI(-SIPI), and waits for the AP to check in (`crate::cpus`) before the next. So one pair
//! of words serves every AP, and the APs' stacks (one per CPU, `config::VMM_STACK_SIZE` each) are never
//! shared. The stacks are not zeroed at boot (`.bss.noinit`, outside the zeroed `.bss`): a stack needs
//! no initial content, and the boot figure does not grow with `MAX_CPUS`.

use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use crate::config::{AP_TRAMPOLINE_SIZE, MAX_CPUS, VMM_STACK_SIZE};

core::arch::global_asm!(
    r#"
.section .rodata.ap_trampoline, "a"
.balign 16
.global libvmm_ap_trampoline_start
libvmm_ap_trampoline_start:
.code16
    .byte 0xEB, 0x0E
    .short 23
    .long libvmm_boot_gdt
    .long libvmm_boot_pml4
    .long 0
    cli
    cld
    mov ax, cs
    mov ds, ax
    .byte 0x66
    lgdt [0x2]
    mov eax, cr4
    or eax, 0x20
    mov cr4, eax
    mov eax, dword ptr [0x8]
    mov cr3, eax
    mov ecx, 0xC0000080
    rdmsr
    or eax, 0x900
    wrmsr
    mov eax, cr0
    or eax, 0x80000001
    mov cr0, eax
    .byte 0x66, 0xEA
    .long libvmm_ap_entry64
    .short 0x08
.global libvmm_ap_trampoline_end
libvmm_ap_trampoline_end:
.code64

.section .text.ap_entry, "ax"
.global libvmm_ap_entry64
libvmm_ap_entry64:
    mov ax, 0x10
    mov ds, ax
    mov es, ax
    mov ss, ax
    xor eax, eax
    mov fs, ax
    mov gs, ax
    mov rsp, qword ptr [rip + LIBVMM_AP_STACK_TOP]
    mov edi, dword ptr [rip + LIBVMM_AP_CPU]
    xor ebp, ebp
    call libvmm_x86_ap_entry
.Lap_halt:
    cli
    hlt
    jmp .Lap_halt
"#
);

extern "C" {
    static libvmm_ap_trampoline_start: u8;
    static libvmm_ap_trampoline_end: u8;
}

/// The index and stack of the AP being started (read by `libvmm_ap_entry64`).
#[no_mangle]
static LIBVMM_AP_STACK_TOP: AtomicU64 = AtomicU64::new(0);
#[no_mangle]
static LIBVMM_AP_CPU: AtomicU32 = AtomicU32::new(0);

#[repr(C, align(4096))]
struct Stacks([[u8; VMM_STACK_SIZE]; MAX_CPUS - 1]);

/// One VMM stack per AP (CPU n >= 1 uses element n - 1; the boot CPU has the boot stack).
#[link_section = ".bss.noinit"]
static mut AP_STACKS: Stacks = Stacks([[0; VMM_STACK_SIZE]; MAX_CPUS - 1]);

/// Copies the trampoline to physical `page` (below 1 MiB, free RAM the caller chose); returns the SIPI
/// vector, or `None` when the page is unusable.
pub fn install_trampoline(page: u64) -> Option<u8> {
    let start = core::ptr::addr_of!(libvmm_ap_trampoline_start);
    let len = core::ptr::addr_of!(libvmm_ap_trampoline_end) as usize - start as usize;
    if !page.is_multiple_of(4096) || page == 0 || page >= 0x10_0000 || len > AP_TRAMPOLINE_SIZE {
        return None;
    }
    // SAFETY: `page` is a page of RAM below 1 MiB (identity-mapped by the boot tables) that the caller
    // took from the loader's memory map away from the loader's information and that nothing else of the
    // VMM uses; the source is the image's read-only trampoline bytes, `len` long.
    unsafe { core::ptr::copy_nonoverlapping(start, page as *mut u8, len) };
    Some((page >> 12) as u8)
}

/// Sets up the hand-off for CPU `cpu` (1..MAX_CPUS): its index and stack top, state "not started".
pub fn prepare(cpu: usize) -> bool {
    if cpu == 0 || cpu >= MAX_CPUS {
        return false;
    }
    let base = core::ptr::addr_of!(AP_STACKS) as u64;
    let top = base + (cpu * VMM_STACK_SIZE) as u64;
    LIBVMM_AP_STACK_TOP.store(top, Ordering::Release);
    LIBVMM_AP_CPU.store(cpu as u32, Ordering::Release);
    true
}

/// Parks this CPU for good: interrupts off, halted.
pub fn park() -> ! {
    super::cpu::halt_forever()
}
