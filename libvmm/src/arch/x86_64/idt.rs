//! Exception stubs for the VMM itself. A VMM exception is a libvmm bug: the handler prints the vector,
//! error code and RIP and stops the machine with the VMM-panic code; it never returns.

core::arch::global_asm!(
    r#"
.macro LIBVMM_ISR_NOERR vec
.Lisr\vec:
    push 0
    push \vec
    jmp .Lisr_common
.endm
.macro LIBVMM_ISR_ERR vec
.Lisr\vec:
    push \vec
    jmp .Lisr_common
.endm

.section .text.isr, "ax"
LIBVMM_ISR_NOERR 0
LIBVMM_ISR_NOERR 1
LIBVMM_ISR_NOERR 2
LIBVMM_ISR_NOERR 3
LIBVMM_ISR_NOERR 4
LIBVMM_ISR_NOERR 5
LIBVMM_ISR_NOERR 6
LIBVMM_ISR_NOERR 7
LIBVMM_ISR_ERR 8
LIBVMM_ISR_NOERR 9
LIBVMM_ISR_ERR 10
LIBVMM_ISR_ERR 11
LIBVMM_ISR_ERR 12
LIBVMM_ISR_ERR 13
LIBVMM_ISR_ERR 14
LIBVMM_ISR_NOERR 15
LIBVMM_ISR_NOERR 16
LIBVMM_ISR_ERR 17
LIBVMM_ISR_NOERR 18
LIBVMM_ISR_NOERR 19
LIBVMM_ISR_NOERR 20
LIBVMM_ISR_ERR 21
LIBVMM_ISR_NOERR 22
LIBVMM_ISR_NOERR 23
LIBVMM_ISR_NOERR 24
LIBVMM_ISR_NOERR 25
LIBVMM_ISR_NOERR 26
LIBVMM_ISR_NOERR 27
LIBVMM_ISR_NOERR 28
LIBVMM_ISR_ERR 29
LIBVMM_ISR_ERR 30
LIBVMM_ISR_NOERR 31
// Vector 32: the LAPIC timer, and vector 33: the kick another CPU sends (guest SMP), both lapic.rs.
// Acknowledge and return; the exit (or the wake-up from HLT) it caused is the point.
.Lisr32:
    push rax
    push rcx
    push rdx
    push rsi
    push rdi
    push r8
    push r9
    push r10
    push r11
    call libvmm_lapic_eoi
    pop r11
    pop r10
    pop r9
    pop r8
    pop rdi
    pop rsi
    pop rdx
    pop rcx
    pop rax
    iretq
.Lisr_common:
    mov rdi, rsp
    and rsp, -16
    call libvmm_x86_exception
    ud2

.section .rodata.isr, "a"
.balign 8
.global libvmm_isr_table
libvmm_isr_table:
    .quad .Lisr0, .Lisr1, .Lisr2, .Lisr3, .Lisr4, .Lisr5, .Lisr6, .Lisr7
    .quad .Lisr8, .Lisr9, .Lisr10, .Lisr11, .Lisr12, .Lisr13, .Lisr14, .Lisr15
    .quad .Lisr16, .Lisr17, .Lisr18, .Lisr19, .Lisr20, .Lisr21, .Lisr22, .Lisr23
        .quad .Lisr24, .Lisr25, .Lisr26, .Lisr27, .Lisr28, .Lisr29, .Lisr30, .Lisr31
    .quad .Lisr32, .Lisr32
"#
);

/// The stack the stubs leave: vector, error code, then the CPU's interrupt frame.
#[repr(C)]
pub struct ExceptionFrame {
    pub vector: u64,
    pub error: u64,
    pub rip: u64,
    pub cs: u64,
    pub rflags: u64,
    pub rsp: u64,
    pub ss: u64,
}

#[no_mangle]
extern "C" fn libvmm_x86_exception(frame: &ExceptionFrame) -> ! {
    let mut con = super::serial::Serial;
    crate::vmm_print!(
        &mut con,
        "libvmm: VMM exception {} (error {:#x}) at rip {:#x}, rsp {:#x}, cr2 {:#x}\n",
        frame.vector,
        frame.error,
        frame.rip,
        frame.rsp,
        cr2()
    );
    let code = libvmm_abi::stop::StopCode::VmmPanic as u8;
    crate::console::stop_line(
        &mut con,
        code,
        format_args!("VMM exception {}", frame.vector),
    );
    con.drain();
    super::exit_device::exit(code)
}

fn cr2() -> u64 {
    let v: u64;
    // SAFETY: reading CR2 has no side effects.
    unsafe { core::arch::asm!("mov {}, cr2", out(reg) v, options(nomem, nostack)) };
    v
}
