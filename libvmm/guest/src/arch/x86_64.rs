//! x86-64 payload entry, exception handling and hypercalls.
//!
//! The VMM enters `_start` in 64-bit mode with paging on (identity 0..4 GiB), RSP at the top of guest
//! memory and RDI = boot-info address. `_start` reads the TSC first (so a payload can measure the cost of
//! getting here), installs an IDT for vectors 0..31 and calls into Rust.
//!
//! Every exception goes through one stub that saves all general-purpose registers ([`TrapFrame`]) and
//! calls `trap`. `probe` runs single instructions that may fault (VMRUN, WRMSR, IN ...) and returns the
//! vector they raised: the exception handler resumes after the probed instruction when a probe is armed.
//! Otherwise the payload's handler for the vector runs, if it installed one ([`crate::set_trap_handler`]);
//! any other exception is reported and aborts the payload.

use core::sync::atomic::{AtomicU32, AtomicU64, AtomicU8, Ordering};

use libvmm_abi::HypercallInsn;

static FIRST_CYCLES: AtomicU64 = AtomicU64::new(0);
static INSN: AtomicU32 = AtomicU32::new(HypercallInsn::Vmmcall as u32);
#[no_mangle]
static LIBVMM_GUEST_PROBE_RESUME: AtomicU64 = AtomicU64::new(0);
static PROBE_VECTOR: AtomicU8 = AtomicU8::new(NO_FAULT);
const NO_FAULT: u8 = 0xFF;

// Not in the host build of the crate's unit tests: the host's C runtime has its own `_start`.
#[cfg(not(test))]
core::arch::global_asm!(
    r#"
.section .text.start, "ax"
.global _start
_start:
    rdtsc
    shl rdx, 32
    or rax, rdx
    mov [rip + {first}], rax
    and rsp, -16
    call libvmm_guest_cpu_init
    call {rust_start}
    ud2

.macro LIBVMM_GUEST_ISR vec, err
.Lgisr\vec:
    .if \err == 0
    push 0
    .endif
    push \vec
    jmp .Lgisr_common
.endm

.section .text.isr, "ax"
LIBVMM_GUEST_ISR 0, 0
LIBVMM_GUEST_ISR 1, 0
LIBVMM_GUEST_ISR 2, 0
LIBVMM_GUEST_ISR 3, 0
LIBVMM_GUEST_ISR 4, 0
LIBVMM_GUEST_ISR 5, 0
LIBVMM_GUEST_ISR 6, 0
LIBVMM_GUEST_ISR 7, 0
LIBVMM_GUEST_ISR 8, 1
LIBVMM_GUEST_ISR 9, 0
LIBVMM_GUEST_ISR 10, 1
LIBVMM_GUEST_ISR 11, 1
LIBVMM_GUEST_ISR 12, 1
LIBVMM_GUEST_ISR 13, 1
LIBVMM_GUEST_ISR 14, 1
LIBVMM_GUEST_ISR 15, 0
LIBVMM_GUEST_ISR 16, 0
LIBVMM_GUEST_ISR 17, 1
LIBVMM_GUEST_ISR 18, 0
LIBVMM_GUEST_ISR 19, 0
LIBVMM_GUEST_ISR 20, 0
LIBVMM_GUEST_ISR 21, 1
LIBVMM_GUEST_ISR 22, 0
LIBVMM_GUEST_ISR 23, 0
LIBVMM_GUEST_ISR 24, 0
LIBVMM_GUEST_ISR 25, 0
LIBVMM_GUEST_ISR 26, 0
LIBVMM_GUEST_ISR 27, 0
LIBVMM_GUEST_ISR 28, 0
LIBVMM_GUEST_ISR 29, 1
LIBVMM_GUEST_ISR 30, 1
LIBVMM_GUEST_ISR 31, 0
LIBVMM_GUEST_ISR 32, 0
LIBVMM_GUEST_ISR 33, 0
LIBVMM_GUEST_ISR 34, 0
LIBVMM_GUEST_ISR 35, 0
LIBVMM_GUEST_ISR 36, 0
LIBVMM_GUEST_ISR 37, 0
LIBVMM_GUEST_ISR 38, 0
LIBVMM_GUEST_ISR 39, 0
LIBVMM_GUEST_ISR 40, 0
LIBVMM_GUEST_ISR 41, 0
LIBVMM_GUEST_ISR 42, 0
LIBVMM_GUEST_ISR 43, 0
LIBVMM_GUEST_ISR 44, 0
LIBVMM_GUEST_ISR 45, 0
LIBVMM_GUEST_ISR 46, 0
LIBVMM_GUEST_ISR 47, 0
LIBVMM_GUEST_ISR 48, 0
LIBVMM_GUEST_ISR 49, 0
LIBVMM_GUEST_ISR 50, 0
LIBVMM_GUEST_ISR 51, 0
LIBVMM_GUEST_ISR 52, 0
LIBVMM_GUEST_ISR 53, 0
LIBVMM_GUEST_ISR 54, 0
LIBVMM_GUEST_ISR 55, 0
LIBVMM_GUEST_ISR 56, 0
LIBVMM_GUEST_ISR 57, 0
LIBVMM_GUEST_ISR 58, 0
LIBVMM_GUEST_ISR 59, 0
LIBVMM_GUEST_ISR 60, 0
LIBVMM_GUEST_ISR 61, 0
LIBVMM_GUEST_ISR 62, 0
LIBVMM_GUEST_ISR 63, 0
LIBVMM_GUEST_ISR 64, 0
LIBVMM_GUEST_ISR 65, 0
LIBVMM_GUEST_ISR 66, 0
LIBVMM_GUEST_ISR 67, 0
LIBVMM_GUEST_ISR 68, 0
LIBVMM_GUEST_ISR 69, 0
LIBVMM_GUEST_ISR 70, 0
LIBVMM_GUEST_ISR 71, 0
LIBVMM_GUEST_ISR 72, 0
LIBVMM_GUEST_ISR 73, 0
LIBVMM_GUEST_ISR 74, 0
LIBVMM_GUEST_ISR 75, 0
LIBVMM_GUEST_ISR 76, 0
LIBVMM_GUEST_ISR 77, 0
LIBVMM_GUEST_ISR 78, 0
LIBVMM_GUEST_ISR 79, 0
LIBVMM_GUEST_ISR 80, 0
LIBVMM_GUEST_ISR 81, 0
LIBVMM_GUEST_ISR 82, 0
LIBVMM_GUEST_ISR 83, 0
LIBVMM_GUEST_ISR 84, 0
LIBVMM_GUEST_ISR 85, 0
LIBVMM_GUEST_ISR 86, 0
LIBVMM_GUEST_ISR 87, 0
LIBVMM_GUEST_ISR 88, 0
LIBVMM_GUEST_ISR 89, 0
LIBVMM_GUEST_ISR 90, 0
LIBVMM_GUEST_ISR 91, 0
LIBVMM_GUEST_ISR 92, 0
LIBVMM_GUEST_ISR 93, 0
LIBVMM_GUEST_ISR 94, 0
LIBVMM_GUEST_ISR 95, 0
LIBVMM_GUEST_ISR 96, 0
LIBVMM_GUEST_ISR 97, 0
LIBVMM_GUEST_ISR 98, 0
LIBVMM_GUEST_ISR 99, 0
LIBVMM_GUEST_ISR 100, 0
LIBVMM_GUEST_ISR 101, 0
LIBVMM_GUEST_ISR 102, 0
LIBVMM_GUEST_ISR 103, 0
LIBVMM_GUEST_ISR 104, 0
LIBVMM_GUEST_ISR 105, 0
LIBVMM_GUEST_ISR 106, 0
LIBVMM_GUEST_ISR 107, 0
LIBVMM_GUEST_ISR 108, 0
LIBVMM_GUEST_ISR 109, 0
LIBVMM_GUEST_ISR 110, 0
LIBVMM_GUEST_ISR 111, 0
LIBVMM_GUEST_ISR 112, 0
LIBVMM_GUEST_ISR 113, 0
LIBVMM_GUEST_ISR 114, 0
LIBVMM_GUEST_ISR 115, 0
LIBVMM_GUEST_ISR 116, 0
LIBVMM_GUEST_ISR 117, 0
LIBVMM_GUEST_ISR 118, 0
LIBVMM_GUEST_ISR 119, 0
LIBVMM_GUEST_ISR 120, 0
LIBVMM_GUEST_ISR 121, 0
LIBVMM_GUEST_ISR 122, 0
LIBVMM_GUEST_ISR 123, 0
LIBVMM_GUEST_ISR 124, 0
LIBVMM_GUEST_ISR 125, 0
LIBVMM_GUEST_ISR 126, 0
LIBVMM_GUEST_ISR 127, 0
LIBVMM_GUEST_ISR 128, 0
LIBVMM_GUEST_ISR 129, 0
LIBVMM_GUEST_ISR 130, 0
LIBVMM_GUEST_ISR 131, 0
LIBVMM_GUEST_ISR 132, 0
LIBVMM_GUEST_ISR 133, 0
LIBVMM_GUEST_ISR 134, 0
LIBVMM_GUEST_ISR 135, 0
LIBVMM_GUEST_ISR 136, 0
LIBVMM_GUEST_ISR 137, 0
LIBVMM_GUEST_ISR 138, 0
LIBVMM_GUEST_ISR 139, 0
LIBVMM_GUEST_ISR 140, 0
LIBVMM_GUEST_ISR 141, 0
LIBVMM_GUEST_ISR 142, 0
LIBVMM_GUEST_ISR 143, 0
LIBVMM_GUEST_ISR 144, 0
LIBVMM_GUEST_ISR 145, 0
LIBVMM_GUEST_ISR 146, 0
LIBVMM_GUEST_ISR 147, 0
LIBVMM_GUEST_ISR 148, 0
LIBVMM_GUEST_ISR 149, 0
LIBVMM_GUEST_ISR 150, 0
LIBVMM_GUEST_ISR 151, 0
LIBVMM_GUEST_ISR 152, 0
LIBVMM_GUEST_ISR 153, 0
LIBVMM_GUEST_ISR 154, 0
LIBVMM_GUEST_ISR 155, 0
LIBVMM_GUEST_ISR 156, 0
LIBVMM_GUEST_ISR 157, 0
LIBVMM_GUEST_ISR 158, 0
LIBVMM_GUEST_ISR 159, 0
LIBVMM_GUEST_ISR 160, 0
LIBVMM_GUEST_ISR 161, 0
LIBVMM_GUEST_ISR 162, 0
LIBVMM_GUEST_ISR 163, 0
LIBVMM_GUEST_ISR 164, 0
LIBVMM_GUEST_ISR 165, 0
LIBVMM_GUEST_ISR 166, 0
LIBVMM_GUEST_ISR 167, 0
LIBVMM_GUEST_ISR 168, 0
LIBVMM_GUEST_ISR 169, 0
LIBVMM_GUEST_ISR 170, 0
LIBVMM_GUEST_ISR 171, 0
LIBVMM_GUEST_ISR 172, 0
LIBVMM_GUEST_ISR 173, 0
LIBVMM_GUEST_ISR 174, 0
LIBVMM_GUEST_ISR 175, 0
LIBVMM_GUEST_ISR 176, 0
LIBVMM_GUEST_ISR 177, 0
LIBVMM_GUEST_ISR 178, 0
LIBVMM_GUEST_ISR 179, 0
LIBVMM_GUEST_ISR 180, 0
LIBVMM_GUEST_ISR 181, 0
LIBVMM_GUEST_ISR 182, 0
LIBVMM_GUEST_ISR 183, 0
LIBVMM_GUEST_ISR 184, 0
LIBVMM_GUEST_ISR 185, 0
LIBVMM_GUEST_ISR 186, 0
LIBVMM_GUEST_ISR 187, 0
LIBVMM_GUEST_ISR 188, 0
LIBVMM_GUEST_ISR 189, 0
LIBVMM_GUEST_ISR 190, 0
LIBVMM_GUEST_ISR 191, 0
LIBVMM_GUEST_ISR 192, 0
LIBVMM_GUEST_ISR 193, 0
LIBVMM_GUEST_ISR 194, 0
LIBVMM_GUEST_ISR 195, 0
LIBVMM_GUEST_ISR 196, 0
LIBVMM_GUEST_ISR 197, 0
LIBVMM_GUEST_ISR 198, 0
LIBVMM_GUEST_ISR 199, 0
LIBVMM_GUEST_ISR 200, 0
LIBVMM_GUEST_ISR 201, 0
LIBVMM_GUEST_ISR 202, 0
LIBVMM_GUEST_ISR 203, 0
LIBVMM_GUEST_ISR 204, 0
LIBVMM_GUEST_ISR 205, 0
LIBVMM_GUEST_ISR 206, 0
LIBVMM_GUEST_ISR 207, 0
LIBVMM_GUEST_ISR 208, 0
LIBVMM_GUEST_ISR 209, 0
LIBVMM_GUEST_ISR 210, 0
LIBVMM_GUEST_ISR 211, 0
LIBVMM_GUEST_ISR 212, 0
LIBVMM_GUEST_ISR 213, 0
LIBVMM_GUEST_ISR 214, 0
LIBVMM_GUEST_ISR 215, 0
LIBVMM_GUEST_ISR 216, 0
LIBVMM_GUEST_ISR 217, 0
LIBVMM_GUEST_ISR 218, 0
LIBVMM_GUEST_ISR 219, 0
LIBVMM_GUEST_ISR 220, 0
LIBVMM_GUEST_ISR 221, 0
LIBVMM_GUEST_ISR 222, 0
LIBVMM_GUEST_ISR 223, 0
LIBVMM_GUEST_ISR 224, 0
LIBVMM_GUEST_ISR 225, 0
LIBVMM_GUEST_ISR 226, 0
LIBVMM_GUEST_ISR 227, 0
LIBVMM_GUEST_ISR 228, 0
LIBVMM_GUEST_ISR 229, 0
LIBVMM_GUEST_ISR 230, 0
LIBVMM_GUEST_ISR 231, 0
LIBVMM_GUEST_ISR 232, 0
LIBVMM_GUEST_ISR 233, 0
LIBVMM_GUEST_ISR 234, 0
LIBVMM_GUEST_ISR 235, 0
LIBVMM_GUEST_ISR 236, 0
LIBVMM_GUEST_ISR 237, 0
LIBVMM_GUEST_ISR 238, 0
LIBVMM_GUEST_ISR 239, 0
LIBVMM_GUEST_ISR 240, 0
LIBVMM_GUEST_ISR 241, 0
LIBVMM_GUEST_ISR 242, 0
LIBVMM_GUEST_ISR 243, 0
LIBVMM_GUEST_ISR 244, 0
LIBVMM_GUEST_ISR 245, 0
LIBVMM_GUEST_ISR 246, 0
LIBVMM_GUEST_ISR 247, 0
LIBVMM_GUEST_ISR 248, 0
LIBVMM_GUEST_ISR 249, 0
LIBVMM_GUEST_ISR 250, 0
LIBVMM_GUEST_ISR 251, 0
LIBVMM_GUEST_ISR 252, 0
LIBVMM_GUEST_ISR 253, 0
LIBVMM_GUEST_ISR 254, 0
LIBVMM_GUEST_ISR 255, 0
.Lgisr_common:
    push rax
    push rbx
    push rcx
    push rdx
    push rsi
    push rdi
    push rbp
    push r8
    push r9
    push r10
    push r11
    push r12
    push r13
    push r14
    push r15
    mov rdi, rsp
    call {trap}
    pop r15
    pop r14
    pop r13
    pop r12
    pop r11
    pop r10
    pop r9
    pop r8
    pop rbp
    pop rdi
    pop rsi
    pop rdx
    pop rcx
    pop rbx
    pop rax
    add rsp, 16
    iretq

.section .data.rel.ro.isr, "aw"
.balign 8
.Lgisr_table:
    .quad .Lgisr0, .Lgisr1, .Lgisr2, .Lgisr3, .Lgisr4, .Lgisr5, .Lgisr6, .Lgisr7
    .quad .Lgisr8, .Lgisr9, .Lgisr10, .Lgisr11, .Lgisr12, .Lgisr13, .Lgisr14, .Lgisr15
    .quad .Lgisr16, .Lgisr17, .Lgisr18, .Lgisr19, .Lgisr20, .Lgisr21, .Lgisr22, .Lgisr23
    .quad .Lgisr24, .Lgisr25, .Lgisr26, .Lgisr27, .Lgisr28, .Lgisr29, .Lgisr30, .Lgisr31
    .quad .Lgisr32, .Lgisr33, .Lgisr34, .Lgisr35, .Lgisr36, .Lgisr37, .Lgisr38, .Lgisr39
    .quad .Lgisr40, .Lgisr41, .Lgisr42, .Lgisr43, .Lgisr44, .Lgisr45, .Lgisr46, .Lgisr47
    .quad .Lgisr48, .Lgisr49, .Lgisr50, .Lgisr51, .Lgisr52, .Lgisr53, .Lgisr54, .Lgisr55
    .quad .Lgisr56, .Lgisr57, .Lgisr58, .Lgisr59, .Lgisr60, .Lgisr61, .Lgisr62, .Lgisr63
    .quad .Lgisr64, .Lgisr65, .Lgisr66, .Lgisr67, .Lgisr68, .Lgisr69, .Lgisr70, .Lgisr71
    .quad .Lgisr72, .Lgisr73, .Lgisr74, .Lgisr75, .Lgisr76, .Lgisr77, .Lgisr78, .Lgisr79
    .quad .Lgisr80, .Lgisr81, .Lgisr82, .Lgisr83, .Lgisr84, .Lgisr85, .Lgisr86, .Lgisr87
    .quad .Lgisr88, .Lgisr89, .Lgisr90, .Lgisr91, .Lgisr92, .Lgisr93, .Lgisr94, .Lgisr95
    .quad .Lgisr96, .Lgisr97, .Lgisr98, .Lgisr99, .Lgisr100, .Lgisr101, .Lgisr102, .Lgisr103
    .quad .Lgisr104, .Lgisr105, .Lgisr106, .Lgisr107, .Lgisr108, .Lgisr109, .Lgisr110, .Lgisr111
    .quad .Lgisr112, .Lgisr113, .Lgisr114, .Lgisr115, .Lgisr116, .Lgisr117, .Lgisr118, .Lgisr119
    .quad .Lgisr120, .Lgisr121, .Lgisr122, .Lgisr123, .Lgisr124, .Lgisr125, .Lgisr126, .Lgisr127
    .quad .Lgisr128, .Lgisr129, .Lgisr130, .Lgisr131, .Lgisr132, .Lgisr133, .Lgisr134, .Lgisr135
    .quad .Lgisr136, .Lgisr137, .Lgisr138, .Lgisr139, .Lgisr140, .Lgisr141, .Lgisr142, .Lgisr143
    .quad .Lgisr144, .Lgisr145, .Lgisr146, .Lgisr147, .Lgisr148, .Lgisr149, .Lgisr150, .Lgisr151
    .quad .Lgisr152, .Lgisr153, .Lgisr154, .Lgisr155, .Lgisr156, .Lgisr157, .Lgisr158, .Lgisr159
    .quad .Lgisr160, .Lgisr161, .Lgisr162, .Lgisr163, .Lgisr164, .Lgisr165, .Lgisr166, .Lgisr167
    .quad .Lgisr168, .Lgisr169, .Lgisr170, .Lgisr171, .Lgisr172, .Lgisr173, .Lgisr174, .Lgisr175
    .quad .Lgisr176, .Lgisr177, .Lgisr178, .Lgisr179, .Lgisr180, .Lgisr181, .Lgisr182, .Lgisr183
    .quad .Lgisr184, .Lgisr185, .Lgisr186, .Lgisr187, .Lgisr188, .Lgisr189, .Lgisr190, .Lgisr191
    .quad .Lgisr192, .Lgisr193, .Lgisr194, .Lgisr195, .Lgisr196, .Lgisr197, .Lgisr198, .Lgisr199
    .quad .Lgisr200, .Lgisr201, .Lgisr202, .Lgisr203, .Lgisr204, .Lgisr205, .Lgisr206, .Lgisr207
    .quad .Lgisr208, .Lgisr209, .Lgisr210, .Lgisr211, .Lgisr212, .Lgisr213, .Lgisr214, .Lgisr215
    .quad .Lgisr216, .Lgisr217, .Lgisr218, .Lgisr219, .Lgisr220, .Lgisr221, .Lgisr222, .Lgisr223
    .quad .Lgisr224, .Lgisr225, .Lgisr226, .Lgisr227, .Lgisr228, .Lgisr229, .Lgisr230, .Lgisr231
    .quad .Lgisr232, .Lgisr233, .Lgisr234, .Lgisr235, .Lgisr236, .Lgisr237, .Lgisr238, .Lgisr239
    .quad .Lgisr240, .Lgisr241, .Lgisr242, .Lgisr243, .Lgisr244, .Lgisr245, .Lgisr246, .Lgisr247
    .quad .Lgisr248, .Lgisr249, .Lgisr250, .Lgisr251, .Lgisr252, .Lgisr253, .Lgisr254, .Lgisr255
.global libvmm_guest_isr_table
.set libvmm_guest_isr_table, .Lgisr_table
"#,
    first = sym FIRST_CYCLES,
    rust_start = sym rust_start,
    trap = sym trap,
);

// SSE for `std` payloads (the hermit target's code uses it): CR0.EM=0, CR0.MP=1, CR4.OSFXSR and
// OSXMMEXCPT, before any Rust code runs. The bare-metal target is soft-float and needs nothing.
#[cfg(target_os = "hermit")]
core::arch::global_asm!(
    r#"
.section .text.start, "ax"
libvmm_guest_cpu_init:
    mov rax, cr0
    and rax, -5
    or rax, 2
    mov cr0, rax
    mov rax, cr4
    or rax, 0x600
    mov cr4, rax
    ret
"#
);
#[cfg(not(target_os = "hermit"))]
core::arch::global_asm!(
    r#"
.section .text.start, "ax"
libvmm_guest_cpu_init:
    ret
"#
);

extern "C" {
    static libvmm_guest_isr_table: [u64; 256];
}

#[repr(C, align(16))]
struct Idt([[u64; 2]; 256]);
static mut IDT: Idt = Idt([[0; 2]; 256]);

extern "C" fn rust_start(boot_info: u64) -> ! {
    super::enter(boot_info)
}

/// The saved state of the interrupted code, as the ISR stubs leave it on the stack: every general-purpose
/// register, the vector, the error code (0 for vectors without one), and the CPU's interrupt frame. A
/// trap handler ([`crate::set_trap_handler`]) may change any field: the stubs restore the registers from
/// it and `IRETQ` to `rip`, `cs`, `rflags`, `rsp`, `ss` (change the last four only if you know why).
#[repr(C)]
#[derive(Debug)]
pub struct TrapFrame {
    pub r15: u64,
    pub r14: u64,
    pub r13: u64,
    pub r12: u64,
    pub r11: u64,
    pub r10: u64,
    pub r9: u64,
    pub r8: u64,
    pub rbp: u64,
    pub rdi: u64,
    pub rsi: u64,
    pub rdx: u64,
    pub rcx: u64,
    pub rbx: u64,
    pub rax: u64,
    /// The vector: an exception (0..=31) or an interrupt (32..=255).
    pub vector: u64,
    /// The error code the CPU pushed (#DF, #TS, #NP, #SS, #GP, #PF, #AC, #CP, #VC, #SX), else 0.
    pub error: u64,
    /// Where the exception happened (for a fault, the faulting instruction; for a trap such as #BP, the
    /// next one).
    pub rip: u64,
    pub cs: u64,
    pub rflags: u64,
    pub rsp: u64,
    pub ss: u64,
}

impl TrapFrame {
    /// The instruction pointer the trap returns to.
    pub fn pc(&self) -> u64 {
        self.rip
    }

    /// Sets where the trap returns to (e.g. past the faulting instruction).
    pub fn set_pc(&mut self, pc: u64) {
        self.rip = pc;
    }

    /// Which trap this is.
    pub fn trap(&self) -> crate::Trap {
        crate::Trap::X86(self.vector as u8)
    }

    /// The interrupt this is, for vectors 32..=255.
    pub fn interrupt(&self) -> Option<crate::irq::Interrupt> {
        (self.vector >= 32).then_some(crate::irq::Interrupt::Vector(self.vector as u8))
    }
}

/// Every exception: an armed probe takes it; then the payload's handler for the vector, if any; the
/// default reports it and aborts the payload.
extern "C" fn trap(frame: &mut TrapFrame) {
    if let Some(irq) = frame.interrupt() {
        if crate::irq::dispatch(irq, frame) {
            return;
        }
        crate::println!(
            "payload: unexpected interrupt {} at rip {:#x}",
            frame.vector,
            frame.rip
        );
        crate::hermit::abort()
    }
    let resume = LIBVMM_GUEST_PROBE_RESUME.swap(0, Ordering::SeqCst);
    if resume != 0 {
        PROBE_VECTOR.store(frame.vector as u8, Ordering::SeqCst);
        frame.rip = resume;
        return;
    }
    if crate::trap::dispatch(frame.trap(), frame) {
        return;
    }
    crate::println!(
        "payload: unexpected exception {} (error {:#x}) at rip {:#x}",
        frame.vector,
        frame.error,
        frame.rip
    );
    crate::hermit::abort()
}

/// Called once from `crate::start`: records the hypercall instruction and loads the IDT.
pub(crate) fn init(hypercall_insn: u32) {
    if hypercall_insn == HypercallInsn::Vmcall as u32 {
        INSN.store(hypercall_insn, Ordering::Relaxed);
    }
    // SAFETY: single-threaded start-up; the IDT is written once, then only read by the CPU.
    unsafe {
        let idt = &mut *core::ptr::addr_of_mut!(IDT);
        for (v, gate) in idt.0.iter_mut().enumerate() {
            let h = libvmm_guest_isr_table[v];
            gate[0] = (h & 0xFFFF) | (0x08 << 16) | (0x8E << 40) | (((h >> 16) & 0xFFFF) << 48);
            gate[1] = h >> 32;
        }
        let ptr = DescriptorPointer {
            limit: core::mem::size_of::<Idt>() as u16 - 1,
            base: idt as *const Idt as u64,
        };
        core::arch::asm!("lidt [{}]", in(reg) &ptr);
    }
}

#[repr(C, packed)]
struct DescriptorPointer {
    limit: u16,
    base: u64,
}

/// The hypercall: VMMCALL on SVM, VMCALL on VMX (chosen from the boot info at start-up).
pub fn hypercall(nr: u64, a: [u64; 4]) -> i64 {
    let ret: u64;
    if INSN.load(Ordering::Relaxed) == HypercallInsn::Vmcall as u32 {
        // SAFETY: VMCALL exits to the VMM, which changes only RAX.
        unsafe {
            core::arch::asm!("vmcall", inout("rax") nr => ret, in("rdi") a[0], in("rsi") a[1], in("rdx") a[2], in("r10") a[3], options(nostack))
        }
    } else {
        // SAFETY: VMMCALL exits to the VMM, which changes only RAX.
        unsafe {
            core::arch::asm!("vmmcall", inout("rax") nr => ret, in("rdi") a[0], in("rsi") a[1], in("rdx") a[2], in("r10") a[3], options(nostack))
        }
    }
    ret as i64
}

/// The TSC.
pub fn cycles() -> u64 {
    // SAFETY: RDTSC has no side effects.
    unsafe { core::arch::x86_64::_rdtsc() }
}

/// The TSC read by the payload's very first instruction.
pub fn first_cycles() -> u64 {
    FIRST_CYCLES.load(Ordering::Relaxed)
}

pub fn halt_forever() -> ! {
    loop {
        // SAFETY: halting has no memory effects.
        unsafe { core::arch::asm!("hlt", options(nomem, nostack)) }
    }
}

/// RDMSR (a #GP it raises goes to the trap handlers; use [`probe::rdmsr`] to test MSRs).
pub fn rdmsr(msr: u32) -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: RDMSR exits to the VMM (every MSR is intercepted), which answers or injects #GP.
    unsafe {
        core::arch::asm!("rdmsr", in("ecx") msr, out("eax") lo, out("edx") hi, options(nomem, nostack))
    };
    (u64::from(hi) << 32) | u64::from(lo)
}

/// WRMSR (see [`rdmsr`]).
pub fn wrmsr(msr: u32, value: u64) {
    // SAFETY: WRMSR exits to the VMM (every MSR is intercepted), which emulates it or injects #GP;
    // ordering: it may deliver an interrupt, so it is not `nomem`.
    unsafe {
        core::arch::asm!("wrmsr", in("ecx") msr, in("eax") value as u32, in("edx") (value >> 32) as u32, options(nostack))
    };
}

/// STI: interrupts on (they are delivered after the next instruction).
pub fn enable_interrupts() {
    // SAFETY: only RFLAGS.IF changes; handlers are in the IDT for every vector.
    unsafe { core::arch::asm!("sti", options(nostack)) }
}

/// CLI: interrupts off.
pub fn disable_interrupts() {
    // SAFETY: only RFLAGS.IF changes.
    unsafe { core::arch::asm!("cli", options(nostack)) }
}

/// RFLAGS.IF.
pub fn interrupts_enabled() -> bool {
    let flags: u64;
    // SAFETY: reads RFLAGS through the stack.
    unsafe { core::arch::asm!("pushfq; pop {}", out(reg) flags, options(nomem)) };
    flags & (1 << 9) != 0
}

/// Waits for an interrupt: `sti; hlt` (STI's shadow covers HLT, so one already pending wakes it), the
/// handler runs, then interrupts go back off (`cli`).
pub fn wait_for_interrupt() {
    // SAFETY: only RFLAGS.IF changes around HLT; the handler that runs is the payload's.
    unsafe { core::arch::asm!("sti; hlt; cli", options(nostack)) }
}

/// CPUID as the payload sees it.
pub fn cpuid(leaf: u32, subleaf: u32) -> [u32; 4] {
    let r = core::arch::x86_64::__cpuid_count(leaf, subleaf);
    [r.eax, r.ebx, r.ecx, r.edx]
}

/// Runs single instructions that may fault and reports the exception vector they raised.
pub mod probe {
    use super::{Ordering, LIBVMM_GUEST_PROBE_RESUME, NO_FAULT, PROBE_VECTOR};

    /// Result of a probe: `Err(vector)` when the instruction faulted.
    pub type Probe<T> = Result<T, u8>;

    fn arm() {
        PROBE_VECTOR.store(NO_FAULT, Ordering::SeqCst);
    }

    fn outcome<T>(v: T) -> Probe<T> {
        LIBVMM_GUEST_PROBE_RESUME.store(0, Ordering::SeqCst);
        match PROBE_VECTOR.load(Ordering::SeqCst) {
            NO_FAULT => Ok(v),
            vector => Err(vector),
        }
    }

    macro_rules! probe_asm {
        ($insn:literal $(, $($ops:tt)*)?) => {{
            arm();
            // SAFETY: the instruction runs with the resume address armed: if it faults, the handler
            // continues at label 2; the VMM decides what the instruction does (that is under test).
            unsafe {
                core::arch::asm!(
                    "lea {tmp}, [rip + 2f]",
                    "mov [rip + {resume}], {tmp}",
                    $insn,
                    "2:",
                    tmp = out(reg) _,
                    resume = sym LIBVMM_GUEST_PROBE_RESUME,
                    $($($ops)*)?
                )
            }
        }};
    }

    pub fn vmrun(vmcb: u64) -> Probe<()> {
        probe_asm!("vmrun rax", in("rax") vmcb);
        outcome(())
    }
    pub fn vmsave(vmcb: u64) -> Probe<()> {
        probe_asm!("vmsave rax", in("rax") vmcb);
        outcome(())
    }
    pub fn vmload(vmcb: u64) -> Probe<()> {
        probe_asm!("vmload rax", in("rax") vmcb);
        outcome(())
    }
    pub fn stgi() -> Probe<()> {
        probe_asm!("stgi");
        outcome(())
    }
    pub fn clgi() -> Probe<()> {
        probe_asm!("clgi");
        outcome(())
    }
    pub fn skinit() -> Probe<()> {
        probe_asm!("skinit", in("eax") 0u32);
        outcome(())
    }
    pub fn invlpga() -> Probe<()> {
        probe_asm!("invlpga rax, ecx", in("rax") 0u64, in("ecx") 1u32);
        outcome(())
    }
    pub fn vmxon(region: u64) -> Probe<()> {
        probe_asm!("vmxon [{r}]", r = in(reg) &region);
        outcome(())
    }
    pub fn vmlaunch() -> Probe<()> {
        probe_asm!("vmlaunch");
        outcome(())
    }
    pub fn vmread(field: u64) -> Probe<()> {
        probe_asm!("vmread {v}, {f}", f = in(reg) field, v = out(reg) _);
        outcome(())
    }
    // The rest of the VMX instruction set (hostile VMX forms).
    pub fn vmresume() -> Probe<()> {
        probe_asm!("vmresume");
        outcome(())
    }
    pub fn vmxoff() -> Probe<()> {
        probe_asm!("vmxoff");
        outcome(())
    }
    pub fn vmclear(region: u64) -> Probe<()> {
        probe_asm!("vmclear [{r}]", r = in(reg) &region);
        outcome(())
    }
    pub fn vmptrld(region: u64) -> Probe<()> {
        probe_asm!("vmptrld [{r}]", r = in(reg) &region);
        outcome(())
    }
    pub fn vmptrst() -> Probe<u64> {
        let mut out = 0u64;
        probe_asm!("vmptrst [{r}]", r = in(reg) &mut out);
        outcome(out)
    }
    pub fn vmwrite(field: u64, value: u64) -> Probe<()> {
        probe_asm!("vmwrite {f}, {v}", f = in(reg) field, v = in(reg) value);
        outcome(())
    }
    pub fn invept(kind: u64, desc: &[u64; 2]) -> Probe<()> {
        probe_asm!("invept {k}, [{d}]", k = in(reg) kind, d = in(reg) desc);
        outcome(())
    }
    pub fn invvpid(kind: u64, desc: &[u64; 2]) -> Probe<()> {
        probe_asm!("invvpid {k}, [{d}]", k = in(reg) kind, d = in(reg) desc);
        outcome(())
    }
    pub fn vmfunc(func: u32) -> Probe<()> {
        probe_asm!("vmfunc", in("eax") func, in("ecx") 0u32);
        outcome(())
    }
    pub fn getsec() -> Probe<()> {
        probe_asm!("getsec", inout("eax") 0u32 => _);
        outcome(())
    }
    pub fn read_cr4() -> Probe<u64> {
        let v: u64;
        probe_asm!("mov {v}, cr4", v = out(reg) v);
        outcome(v)
    }
    pub fn write_cr4(v: u64) -> Probe<()> {
        probe_asm!("mov cr4, {v}", v = in(reg) v);
        outcome(())
    }
    pub fn rdmsr(msr: u32) -> Probe<u64> {
        let (lo, hi): (u32, u32);
        probe_asm!("rdmsr", in("ecx") msr, inout("eax") 0u32 => lo, inout("edx") 0u32 => hi);
        outcome(((hi as u64) << 32) | lo as u64)
    }
    pub fn wrmsr(msr: u32, value: u64) -> Probe<()> {
        probe_asm!("wrmsr", in("ecx") msr, in("eax") value as u32, in("edx") (value >> 32) as u32);
        outcome(())
    }
    pub fn inb(port: u16) -> Probe<u8> {
        let v: u8;
        probe_asm!("in al, dx", in("dx") port, out("al") v);
        outcome(v)
    }
    pub fn inl(port: u16) -> Probe<u32> {
        let v: u32;
        probe_asm!("in eax, dx", in("dx") port, out("eax") v);
        outcome(v)
    }
    pub fn outb(port: u16, v: u8) -> Probe<()> {
        probe_asm!("out dx, al", in("dx") port, in("al") v);
        outcome(())
    }
    pub fn outl(port: u16, v: u32) -> Probe<()> {
        probe_asm!("out dx, eax", in("dx") port, in("eax") v);
        outcome(())
    }
    /// REP OUTSB of one byte (string I/O).
    pub fn outsb(port: u16, byte: &u8) -> Probe<()> {
        probe_asm!("rep outsb", in("dx") port, inout("rsi") byte as *const u8 => _, inout("rcx") 1u64 => _);
        outcome(())
    }
    pub fn monitor() -> Probe<()> {
        probe_asm!("monitor", in("rax") 0u64, in("ecx") 0u32, in("edx") 0u32);
        outcome(())
    }
}

/// Loads an empty IDT and raises an exception: #GP cannot be delivered, nor #DF: triple fault.
pub fn triple_fault() -> ! {
    let null_idt = [0u8; 10];
    // SAFETY: deliberately destroys the payload; nothing runs afterwards.
    unsafe { core::arch::asm!("lidt [{}]", "int3", in(reg) null_idt.as_ptr(), options(noreturn)) }
}

// Guest SMP (x86): the AP trampoline a STARTUP IPI runs. `smp::start` copies the 16-bit code between
// `libvmm_guest_ap_tramp_start` and `_end` to the SIPI page (written through its window address, run at
// `layout::x86_64::SIPI_PAGE`) and fills its data words; the AP goes real mode -> long mode with the
// boot CPU's GDT, CR3, CR4, CR0 and EFER.LME|NXE, then a far jump (through the pointer at offset 0x28)
// to `libvmm_guest_ap_entry64` here. Every load is relative to CS = DS = the page; nothing is written
// to the page by the AP (the nested tables map it read+execute at that address).
core::arch::global_asm!(
    r#"
.section .rodata.ap_tramp, "a"
.balign 16
.global libvmm_guest_ap_tramp_start
libvmm_guest_ap_tramp_start:
.code16
    .byte 0xEB, 0x3E
    .fill 0x3E, 1, 0
    cli
    cld
    mov ax, cs
    mov ds, ax
    .byte 0x66
    lgdt [0x2]
    mov eax, dword ptr [0x20]
    mov cr4, eax
    mov eax, dword ptr [0x8]
    mov cr3, eax
    mov ecx, 0xC0000080
    rdmsr
    or eax, 0x900
    wrmsr
    mov eax, dword ptr [0x24]
    mov cr0, eax
    .byte 0x66, 0xFF, 0x2E, 0x28, 0x00
.global libvmm_guest_ap_tramp_end
libvmm_guest_ap_tramp_end:
.code64

.section .text.ap_entry, "ax"
.global libvmm_guest_ap_entry64
libvmm_guest_ap_entry64:
    mov ax, 0x10
    mov ds, ax
    mov es, ax
    mov ss, ax
    xor eax, eax
    mov fs, ax
    mov gs, ax
    mov rsp, qword ptr [{data} + 0x10]
    mov rdi, qword ptr [{data} + 0x18]
    and rsp, -16
    call libvmm_guest_cpu_init
    call {ap_main}
    ud2
"#,
    data = const libvmm_abi::layout::x86_64::WINDOW_BASE + libvmm_abi::layout::x86_64::SIPI_PAGE_OFFSET,
    ap_main = sym ap_main,
);

extern "C" {
    static libvmm_guest_ap_tramp_start: u8;
    static libvmm_guest_ap_tramp_end: u8;
    fn libvmm_guest_ap_entry64();
}

/// Offsets of the trampoline's data words (in its first 0x40 bytes, which its first instruction jumps
/// over).
const T_GDT: usize = 0x2;
const T_CR3: usize = 0x8;
const T_STACK: usize = 0x10;
const T_CPU: usize = 0x18;
const T_CR4: usize = 0x20;
const T_CR0: usize = 0x24;
const T_ENTRY: usize = 0x28;

/// Guest APs' stacks (bytes each).
const AP_STACK: usize = 16 * 1024;

#[repr(C, align(16))]
struct ApStacks([[u8; AP_STACK]; crate::smp::MAX_CPUS]);

static mut AP_STACKS: ApStacks = ApStacks([[0; AP_STACK]; crate::smp::MAX_CPUS]);

/// Writes the AP trampoline for CPU `cpu` (`cpu < smp::MAX_CPUS`) into the SIPI page through its window
/// address: the code, then this CPU's GDT, CR3, CR4, CR0, the 64-bit entry and CPU `cpu`'s stack top.
/// Returns the SIPI vector. The caller holds the start lock (one trampoline page for every AP).
pub(crate) fn write_ap_trampoline(cpu: usize) -> u8 {
    use libvmm_abi::layout::x86_64::{SIPI_PAGE, SIPI_PAGE_OFFSET, WINDOW_BASE};
    let page = (WINDOW_BASE + SIPI_PAGE_OFFSET) as *mut u8;
    let start = core::ptr::addr_of!(libvmm_guest_ap_tramp_start);
    let len = core::ptr::addr_of!(libvmm_guest_ap_tramp_end) as usize - start as usize;
    let mut gdt = [0u8; 10];
    let (cr0, cr3, cr4): (u64, u64, u64);
    // SAFETY: SGDT writes 10 bytes into `gdt`; reading CR0/CR3/CR4 has no side effects (not intercepted
    // for reads).
    unsafe {
        core::arch::asm!("sgdt [{}]", in(reg) gdt.as_mut_ptr(), options(nostack));
        core::arch::asm!("mov {}, cr0", out(reg) cr0, options(nomem, nostack));
        core::arch::asm!("mov {}, cr3", out(reg) cr3, options(nomem, nostack));
        core::arch::asm!("mov {}, cr4", out(reg) cr4, options(nomem, nostack));
    }
    let stack_top = {
        let base = core::ptr::addr_of!(AP_STACKS) as u64;
        base + ((cpu.min(crate::smp::MAX_CPUS - 1) + 1) * AP_STACK) as u64
    };
    let entry = libvmm_guest_ap_entry64 as *const () as u64;
    // SAFETY: the window page at SIPI_PAGE_OFFSET is guest RAM reserved for this trampoline by the ABI
    // (nothing else of the runtime or the payload lives there; it is identity-mapped read+write); the
    // source is the image's trampoline bytes, `len` (< 0x1000) long; only the start lock's holder
    // writes it.
    unsafe {
        core::ptr::copy_nonoverlapping(start, page, len);
        core::ptr::copy_nonoverlapping(gdt.as_ptr(), page.add(T_GDT), 6);
        core::ptr::write_unaligned(page.add(T_CR3) as *mut u32, cr3 as u32);
        core::ptr::write_unaligned(page.add(T_STACK) as *mut u64, stack_top);
        core::ptr::write_unaligned(page.add(T_CPU) as *mut u64, cpu as u64);
        // PCIDE is long-mode only: the AP sets it, if ever, once there.
        core::ptr::write_unaligned(page.add(T_CR4) as *mut u32, cr4 as u32 & !(1 << 17));
        core::ptr::write_unaligned(page.add(T_CR0) as *mut u32, cr0 as u32);
        core::ptr::write_unaligned(page.add(T_ENTRY) as *mut u32, entry as u32);
        core::ptr::write_unaligned(page.add(T_ENTRY + 4) as *mut u16, 0x08);
    }
    core::sync::atomic::fence(Ordering::SeqCst);
    (SIPI_PAGE >> 12) as u8
}

/// An AP's first Rust code, on its own stack: this CPU's IDT, then `smp`'s secondary path.
extern "C" fn ap_main(cpu: u64) -> ! {
    // SAFETY: the IDT was filled by `init` on the boot CPU before any AP could start; loading it here
    // only points this CPU at the same table.
    unsafe {
        let idt = core::ptr::addr_of!(IDT);
        let ptr = DescriptorPointer {
            limit: core::mem::size_of::<Idt>() as u16 - 1,
            base: idt as u64,
        };
        core::arch::asm!("lidt [{}]", in(reg) &ptr);
    }
    crate::smp::run_started(cpu)
}

/// Each CPU's number, at the address its GS base points to once the runtime set it
/// ([`set_gs_cpu_number`]): [`gs_cpu_number`] then reads it with one load, where the x2APIC ID costs
/// two MSR exits (IA32_APIC_BASE, then the ID). GS is otherwise unused by the runtime and by `std` on
/// the hermit target (its TLS is FS-based).
static CPU_NUMBERS: [u64; crate::smp::MAX_CPUS] = {
    let mut a = [0u64; crate::smp::MAX_CPUS];
    let mut i = 0;
    while i < a.len() {
        a[i] = i as u64;
        i += 1;
    }
    a
};

/// Points this CPU's GS base at its entry of [`CPU_NUMBERS`] (`cpu < smp::MAX_CPUS`; one WRMSR exit).
pub(crate) fn set_gs_cpu_number(cpu: usize) {
    let at = core::ptr::addr_of!(CPU_NUMBERS[cpu.min(crate::smp::MAX_CPUS - 1)]) as u64;
    wrmsr(0xC000_0101, at);
}

/// This CPU's number through its GS base. Only after [`set_gs_cpu_number`] ran on this CPU (`smp`
/// keeps that rule: it asks for it only once every running CPU has set its GS base).
#[inline]
pub(crate) fn gs_cpu_number() -> usize {
    let n: u64;
    // SAFETY: GS base points at this CPU's entry of the read-only `CPU_NUMBERS` (the caller's rule);
    // the load has no other effect.
    unsafe {
        core::arch::asm!("mov {}, qword ptr gs:[0]", out(reg) n, options(nostack, readonly, preserves_flags))
    };
    n as usize
}

/// Drops every cached translation of this CPU (a CR3 reload; the payload's tables have no global
/// pages): the x86 half of a TLB shootdown.
pub fn flush_tlb() {
    // SAFETY: reloading CR3 with its own value changes no mapping; it only flushes the TLB.
    unsafe {
        core::arch::asm!("mov {0}, cr3", "mov cr3, {0}", out(reg) _, options(nostack));
    }
}

/// INVLPG of one linear address.
pub fn invlpg(addr: u64) {
    // SAFETY: invalidating a translation has no effect but a later page walk.
    unsafe { core::arch::asm!("invlpg [{}]", in(reg) addr, options(nostack)) }
}

/// Halts this CPU with interrupts off (an x86 AP's end: only INIT wakes it).
pub fn cli_halt_forever() -> ! {
    loop {
        // SAFETY: interrupts off, then halt.
        unsafe { core::arch::asm!("cli; hlt", options(nomem, nostack)) }
    }
}
