//! The first instructions: the multiboot2 header, the PVH ELF note, and the 32-bit entry both loaders
//! jump to (protected mode, paging off; EAX = multiboot2 magic or junk, EBX = boot information). It saves
//! EAX/EBX and the TSC, zeroes .bss, identity-maps 0..4 GiB with 2 MiB pages, enters long mode and calls
//! `libvmm_x86_entry`.
//!
//! Layout traps from emulators.md: the PVH note's descriptor is 8 bytes (`.quad`, as Linux does) in a
//! PT_NOTE segment aligned to 4; QEMU `-kernel` does not read multiboot2 headers, so both coexist.
//! Numeric local labels are avoided (Intel syntax would read `1b` as a binary number).

core::arch::global_asm!(
    r#"
.section .multiboot2, "a"
.balign 8
.Lmb2_start:
    .long 0xE85250D6
    .long 0
    .long .Lmb2_end - .Lmb2_start
    .long 0x100000000 - (0xE85250D6 + (.Lmb2_end - .Lmb2_start))
    .short 0
    .short 0
    .long 8
.Lmb2_end:

.section .note.pvh, "a"
.balign 4
    .long 4
    .long 8
    .long 18
    .asciz "Xen"
    .balign 4
    .quad _start32
    .balign 4

.section .data.boot, "aw"
.balign 8
.global libvmm_boot_tsc
libvmm_boot_tsc: .quad 0
.global libvmm_boot_magic
libvmm_boot_magic: .long 0
.global libvmm_boot_info
libvmm_boot_info: .long 0

.section .rodata.boot, "a"
.balign 16
.global libvmm_boot_gdt
libvmm_boot_gdt:
.Lgdt:
    .quad 0
    .quad 0x00AF9B000000FFFF
    .quad 0x00CF93000000FFFF
.Lgdt_ptr:
    .short 23
    .long .Lgdt

.section .bss.boot, "aw", @nobits
.balign 4096
.global libvmm_boot_pml4
libvmm_boot_pml4:
.Lpml4: .skip 4096
.Lpdpt: .skip 4096
.Lpd: .skip 16384
.global libvmm_boot_stack
libvmm_boot_stack: .skip {stack_size}
.global libvmm_boot_stack_top
libvmm_boot_stack_top:

.section .text.boot, "ax"
.code32
.global _start32
_start32:
    mov dword ptr [libvmm_boot_magic], eax
    mov dword ptr [libvmm_boot_info], ebx
    rdtsc
    mov dword ptr [libvmm_boot_tsc], eax
    mov dword ptr [libvmm_boot_tsc + 4], edx
    cli
    cld
    mov edi, offset __bss_start
    mov ecx, offset __bss_end
    sub ecx, edi
    shr ecx, 2
    xor eax, eax
    rep stosd
    mov esp, offset libvmm_boot_stack_top

    mov eax, offset .Lpdpt
    or eax, 3
    mov dword ptr [.Lpml4], eax
    xor ecx, ecx
.Lpdpt_loop:
    mov eax, ecx
    shl eax, 12
    add eax, offset .Lpd
    or eax, 3
    mov dword ptr [.Lpdpt + ecx * 8], eax
    inc ecx
    cmp ecx, 4
    jb .Lpdpt_loop
    xor ecx, ecx
.Lpd_loop:
    mov eax, ecx
    shl eax, 21
    or eax, 0x83
    mov dword ptr [.Lpd + ecx * 8], eax
    mov eax, ecx
    shr eax, 11
    mov dword ptr [.Lpd + ecx * 8 + 4], eax
    inc ecx
    cmp ecx, 2048
    jb .Lpd_loop

    mov eax, cr4
    or eax, 0x20
    mov cr4, eax
    mov eax, offset .Lpml4
    mov cr3, eax
    mov ecx, 0xC0000080
    rdmsr
    or eax, 0x100
    wrmsr
    mov eax, cr0
    or eax, 0x80010001
    mov cr0, eax
    lgdt [.Lgdt_ptr]
    mov eax, 0x08
    push eax
    mov eax, offset .Lstart64
    push eax
    retf

.code64
.Lstart64:
    mov ax, 0x10
    mov ds, ax
    mov es, ax
    mov ss, ax
    xor eax, eax
    mov fs, ax
    mov gs, ax
    mov rsp, offset libvmm_boot_stack_top
    xor ebp, ebp
    call libvmm_x86_entry
.Lhalt:
    cli
    hlt
    jmp .Lhalt
"#,
    stack_size = const crate::config::VMM_STACK_SIZE,
);

extern "C" {
    static libvmm_boot_tsc: u64;
    static libvmm_boot_magic: u32;
    static libvmm_boot_info: u32;
    #[cfg(any(feature = "svm", feature = "vmx"))]
    static libvmm_boot_stack: u8;
    static __image_start: u8;
    static __image_end: u8;
}

/// What the entry code saved.
#[derive(Clone, Copy, Debug)]
pub struct EntryState {
    pub magic: u32,
    pub info: u64,
    pub tsc: u64,
}

pub fn entry_state() -> EntryState {
    // SAFETY: written once by `_start32` before any Rust code runs; only read afterwards.
    unsafe {
        EntryState {
            magic: libvmm_boot_magic,
            info: libvmm_boot_info as u64,
            tsc: libvmm_boot_tsc,
        }
    }
}

/// Physical range of the VMM image (code, data, bss with boot stack and tables).
pub fn image_range() -> (u64, u64) {
    (
        core::ptr::addr_of!(__image_start) as u64,
        core::ptr::addr_of!(__image_end) as u64,
    )
}

/// Physical memory below 4 GiB (identity-mapped by the boot tables), read-only, bounds-checked: how the
/// loader's information (multiboot2 tags, PVH start info, command line) is read.
pub fn phys(addr: u64, len: usize) -> Option<&'static [u8]> {
    let end = addr.checked_add(len as u64)?;
    if addr == 0 || end > 1 << 32 {
        return None;
    }
    // SAFETY: the boot page tables map 0..4 GiB; loaders place their information in RAM there, and the
    // VMM only reads it, before any guest runs (the guest window is zeroed only after the last read of
    // the command line is copied into the guest).
    Some(unsafe { core::slice::from_raw_parts(addr as *const u8, len) })
}

#[cfg(any(feature = "svm", feature = "vmx"))]
/// Address of the boot stack (a VMM address the guest must not reach).
pub fn stack_address() -> u64 {
    core::ptr::addr_of!(libvmm_boot_stack) as u64
}
