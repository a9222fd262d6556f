//! Cooperative thread switching for Rust `std` payloads (hermit targets): the stack switch (callee-saved
//! registers pushed on the old stack, the stack pointer stored, the new one loaded), a new thread's
//! first frame, and the thread pointer (x86 FS base, RISC-V `tp`). The scheduler that decides which
//! thread runs is safe code in `sched.rs`; only the register and stack work is here.
use core::sync::atomic::AtomicU64;

extern "C" {
    fn libvmm_guest_switch(save_sp: *mut u64, new_sp: u64);
    fn libvmm_guest_thread_start();
}

#[cfg(target_arch = "x86_64")]
core::arch::global_asm!(
    r#"
.section .text.libvmm_switch, "ax"
.global libvmm_guest_switch
libvmm_guest_switch:
    push rbp
    push rbx
    push r12
    push r13
    push r14
    push r15
    mov [rdi], rsp
    mov rsp, rsi
    pop r15
    pop r14
    pop r13
    pop r12
    pop rbx
    pop rbp
    ret
.global libvmm_guest_thread_start
libvmm_guest_thread_start:
    mov rdi, r12
    mov rsi, r13
    and rsp, -16
    call {entry}
    ud2
"#,
    entry = sym thread_entry,
);

/// Words of a new thread's first frame: x86 r15, r14, r13 (arg), r12 (func), rbx, rbp, return address.
#[cfg(target_arch = "x86_64")]
const FRAME_WORDS: usize = 7;

// `global_asm!` is assembled without the target's features on RISC-V (the hermit target has F and D,
// the assembler is not told): the FP saves say so themselves.
#[cfg(target_arch = "riscv64")]
core::arch::global_asm!(
    r#"
.section .text.libvmm_switch, "ax"
.option push
.option arch, +d
.global libvmm_guest_switch
libvmm_guest_switch:
    addi sp, sp, -208
    sd ra, 0(sp)
    sd s0, 8(sp)
    sd s1, 16(sp)
    sd s2, 24(sp)
    sd s3, 32(sp)
    sd s4, 40(sp)
    sd s5, 48(sp)
    sd s6, 56(sp)
    sd s7, 64(sp)
    sd s8, 72(sp)
    sd s9, 80(sp)
    sd s10, 88(sp)
    sd s11, 96(sp)
    fsd fs0, 104(sp)
    fsd fs1, 112(sp)
    fsd fs2, 120(sp)
    fsd fs3, 128(sp)
    fsd fs4, 136(sp)
    fsd fs5, 144(sp)
    fsd fs6, 152(sp)
    fsd fs7, 160(sp)
    fsd fs8, 168(sp)
    fsd fs9, 176(sp)
    fsd fs10, 184(sp)
    fsd fs11, 192(sp)
    sd sp, 0(a0)
    mv sp, a1
    ld ra, 0(sp)
    ld s0, 8(sp)
    ld s1, 16(sp)
    ld s2, 24(sp)
    ld s3, 32(sp)
    ld s4, 40(sp)
    ld s5, 48(sp)
    ld s6, 56(sp)
    ld s7, 64(sp)
    ld s8, 72(sp)
    ld s9, 80(sp)
    ld s10, 88(sp)
    ld s11, 96(sp)
    fld fs0, 104(sp)
    fld fs1, 112(sp)
    fld fs2, 120(sp)
    fld fs3, 128(sp)
    fld fs4, 136(sp)
    fld fs5, 144(sp)
    fld fs6, 152(sp)
    fld fs7, 160(sp)
    fld fs8, 168(sp)
    fld fs9, 176(sp)
    fld fs10, 184(sp)
    fld fs11, 192(sp)
    addi sp, sp, 208
    ret
.global libvmm_guest_thread_start
libvmm_guest_thread_start:
    mv a0, s0
    mv a1, s1
    andi sp, sp, -16
    call {entry}
    unimp
.option pop
"#,
    entry = sym thread_entry,
);

/// Words of a new thread's first frame: RISC-V ra, s0 (func), s1 (arg), s2..s11, fs0..fs11 (26 words).
#[cfg(target_arch = "riscv64")]
const FRAME_WORDS: usize = 26;

extern "C" fn thread_entry(func: u64, arg: u64) -> ! {
    // SAFETY: `func` is the `extern "C" fn(usize)` std passed to sys_spawn2 (stored by `new_stack`).
    let f = unsafe { core::mem::transmute::<u64, extern "C" fn(usize)>(func) };
    crate::sched::thread_main(f, arg as usize)
}

/// Writes a new thread's first frame at the top of `[stack, stack + size)` (16-byte aligned top) so that
/// switching to the returned stack pointer starts `func(arg)`.
pub(crate) fn new_stack(
    stack: *mut u8,
    size: usize,
    func: extern "C" fn(usize),
    arg: usize,
) -> u64 {
    let top = (stack as u64 + size as u64) & !15;
    let sp = top - 8 * (FRAME_WORDS as u64 + 1);
    let mut frame = [0u64; FRAME_WORDS];
    #[cfg(target_arch = "x86_64")]
    {
        frame[2] = arg as u64;
        frame[3] = func as usize as u64;
        frame[6] = libvmm_guest_thread_start as *const () as usize as u64;
    }
    #[cfg(target_arch = "riscv64")]
    {
        frame[0] = libvmm_guest_thread_start as *const () as usize as u64;
        frame[1] = func as usize as u64;
        frame[2] = arg as u64;
    }
    // SAFETY: `[sp, sp + 8 * FRAME_WORDS)` lies inside the fresh stack block the caller allocated for
    // this thread (at least a page; nothing else refers to it), 8-byte aligned.
    unsafe { (sp as *mut [u64; FRAME_WORDS]).write(frame) };
    sp
}

/// Saves the running thread's registers and stack pointer in `save`, then resumes the thread whose
/// saved stack pointer is `new_sp`. Returns when some thread switches back to this one.
pub(crate) fn switch(save: &AtomicU64, new_sp: u64) {
    // SAFETY: `save` is the running thread's slot (a static, so valid for the write); `new_sp` is a stack
    // pointer that `switch` saved or `new_stack` built, of a thread that is not running (the scheduler's
    // invariant), so the frame popped there is the one pushed or written for it.
    unsafe { libvmm_guest_switch(save.as_ptr(), new_sp) }
}

/// Sets the thread pointer (x86: FS base through its MSR, which the VMM virtualizes; RISC-V: `tp`).
pub(crate) fn set_thread_pointer(tp: u64) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: WRMSR of IA32_FS_BASE only changes the FS base (the VMM answers a non-canonical value with
    // #GP; the runtime only passes heap addresses).
    unsafe {
        core::arch::asm!("wrmsr", in("ecx") 0xC000_0100u32, in("eax") tp as u32,
            in("edx") (tp >> 32) as u32, options(nostack, preserves_flags));
    }
    #[cfg(target_arch = "riscv64")]
    // SAFETY: `tp` is reserved for the thread pointer: no compiled code uses it for anything else.
    unsafe {
        core::arch::asm!("mv tp, {0}", in(reg) tp, options(nostack, preserves_flags));
    }
}

/// Fills a fresh TLS block: the first `image.len()` bytes from the template, the rest of `len` zero,
/// and on x86 (variant II) the self pointer at `tcb`.
pub(crate) fn init_tls(block: *mut u8, image: &[u8], len: usize, tcb: Option<u64>) {
    // SAFETY: `block` is a fresh heap block of at least `len` (+ 8 for the x86 TCB at `tcb`, which the
    // caller places inside it) bytes; `image` is the read-only PT_TLS template, never inside it.
    unsafe {
        core::ptr::write_bytes(block, 0, len);
        core::ptr::copy_nonoverlapping(image.as_ptr(), block, image.len().min(len));
        if let Some(t) = tcb {
            (t as *mut u64).write(t);
        }
    }
}

/// Writes the x86 TCB's self pointer at `tp` (inside a fresh TLS block, 8 bytes past its data).
pub(crate) fn init_tls_tcb(tp: u64) {
    // SAFETY: `tp` points at the 16 bytes the caller reserved after the TLS data in its fresh block.
    unsafe { (tp as *mut u64).write(tp) };
}
