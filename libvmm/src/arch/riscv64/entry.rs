//! The assembly of the RISC-V image: the boot entry OpenSBI jumps to, the one trap vector, and the world
//! switch into VS-mode.
//!
//! One trap vector serves both worlds, told apart by `sscratch` (the Linux idiom): while the guest runs,
//! `sscratch` holds the guest context's address; while the VMM runs it is 0. A trap from the guest saves
//! its 31 registers into the context and resumes the host right after its `sret` (the address and the
//! registers Rust cannot declare clobbered: sp, s0, s1 are in `GuestContext::host`). Everything else the
//! host needs is declared clobbered on the `asm!` of [`enter`], so the compiler saves only what is live
//! across it.
//!
//! gp and tp are not switched at all: LLVM reserves both, the VMM has no thread-local storage and defines
//! no `__global_pointer$` (so the linker never relaxes to gp), and the firmware preserves them across
//! SBI calls. So the guest's gp/tp simply stay in the registers while the VMM runs (`x[3]`/`x[4]` of the
//! context are unused), which saves eight instructions per exit. `_start` zeroes both so the guest does
//! not start with the firmware's values. A trap taken while the VMM itself runs is a VMM bug: it goes to
//! `libvmm_riscv64_host_trap` on its own stack, which reports and stops.
//!
//! Offsets below are those of the backend's guest context (`riscv::GuestContext`): `x[i]` at `8 * i`,
//! `host[j]` at [`CTX_HOST_OFFSET`]` + 8 * j`; at least [`CTX_SIZE`] bytes in all. `riscv::hw` checks at compile time
//! that its type has exactly this layout; [`enter`] checks the size and alignment of what it is given.

/// Byte offset of the host save slots in the guest context.
pub const CTX_HOST_OFFSET: usize = 256;
/// Size of the guest context: 32 guest registers and 6 host slots.
pub const CTX_SIZE: usize = CTX_HOST_OFFSET + 6 * 8;

/// The VMM's stacks and the stacks for reporting a VMM trap, one of each per hart (slot 0: the boot
/// hart; slot n: the n-th other hart the boot hart starts, `opaque` of its `hart_start`). Symbols used
/// by the assembly. Not zeroed at boot (`.bss.noinit`: a stack needs no initial content). The trap
/// vector finds a hart's trap stack from its stack pointer (slot = (sp - stacks) >> log2(stack size);
/// a pointer outside every slot, a VMM stack overflow, reports on slot 0's trap stack).
#[repr(C, align(16))]
struct Stacks<const N: usize>([[u8; N]; crate::config::MAX_CPUS]);

#[no_mangle]
#[link_section = ".bss.noinit"]
static mut LIBVMM_STACKS: Stacks<{ crate::config::VMM_STACK_SIZE }> =
    Stacks([[0; crate::config::VMM_STACK_SIZE]; crate::config::MAX_CPUS]);

#[no_mangle]
#[link_section = ".bss.noinit"]
static mut LIBVMM_TRAP_STACKS: Stacks<{ crate::config::TRAP_STACK_SIZE }> =
    Stacks([[0; crate::config::TRAP_STACK_SIZE]; crate::config::MAX_CPUS]);

const _: () = assert!(crate::config::TRAP_STACK_SIZE.is_power_of_two());

/// The entry of a hart the boot hart starts with SBI HSM `hart_start` (a0 = hart id, a1 = its slot).
pub fn secondary_entry() -> u64 {
    extern "C" {
        fn _start_hart();
    }
    _start_hart as *const () as u64
}

core::arch::global_asm!(
    r#"
    .section .text.entry, "ax"
    .globl _start
_start:
    li gp, 0
    li tp, 0
    csrw sie, zero
    la t0, __libvmm_trap
    csrw stvec, t0
    csrw sscratch, zero
    rdcycle t2
    la sp, LIBVMM_STACKS + {stack_size}
    la t0, __bss_start
    la t1, __bss_end
1:  bgeu t0, t1, 2f
    sd zero, 0(t0)
    addi t0, t0, 8
    j 1b
2:  mv a2, t2
    call libvmm_riscv64_main
3:  wfi
    j 3b

    .globl _start_hart
    .balign 4
_start_hart:
    li gp, 0
    li tp, 0
    csrw sie, zero
    la t0, __libvmm_trap
    csrw stvec, t0
    csrw sscratch, zero
    li t0, {max_cpus}
    bgeu a1, t0, 4f
    beqz a1, 4f
    addi t1, a1, 1
    slli t1, t1, {stack_shift}
    la sp, LIBVMM_STACKS
    add sp, sp, t1
    call libvmm_riscv64_hart_main
4:  wfi
    j 4b

    .section .text.trap, "ax"
    .balign 4
    .globl __libvmm_trap
__libvmm_trap:
    csrrw a0, sscratch, a0
    beqz a0, 9f
    sd ra, 8(a0)
    sd sp, 16(a0)
    sd t0, 40(a0)
    sd t1, 48(a0)
    sd t2, 56(a0)
    sd s0, 64(a0)
    sd s1, 72(a0)
    sd a1, 88(a0)
    sd a2, 96(a0)
    sd a3, 104(a0)
    sd a4, 112(a0)
    sd a5, 120(a0)
    sd a6, 128(a0)
    sd a7, 136(a0)
    sd s2, 144(a0)
    sd s3, 152(a0)
    sd s4, 160(a0)
    sd s5, 168(a0)
    sd s6, 176(a0)
    sd s7, 184(a0)
    sd s8, 192(a0)
    sd s9, 200(a0)
    sd s10, 208(a0)
    sd s11, 216(a0)
    sd t3, 224(a0)
    sd t4, 232(a0)
    sd t5, 240(a0)
    sd t6, 248(a0)
    csrrw t0, sscratch, zero
    sd t0, 80(a0)
    ld sp, 256(a0)
    ld s0, 280(a0)
    ld s1, 288(a0)
    ld t0, 296(a0)
    jr t0
9:  csrrw a0, sscratch, a0
    la t0, LIBVMM_STACKS
    sub t1, sp, t0
    srli t1, t1, {stack_shift}
    li t0, {max_cpus}
    bltu t1, t0, 7f
    li t1, 0
7:  addi t1, t1, 1
    slli t1, t1, {trap_stack_shift}
    la sp, LIBVMM_TRAP_STACKS
    add sp, sp, t1
    call libvmm_riscv64_host_trap
8:  wfi
    j 8b
"#,
    stack_size = const crate::config::VMM_STACK_SIZE,
    stack_shift = const crate::config::VMM_STACK_SIZE.trailing_zeros(),
    trap_stack_shift = const crate::config::TRAP_STACK_SIZE.trailing_zeros(),
    max_cpus = const crate::config::MAX_CPUS,
);

/// Runs the guest from `sepc` until the next trap into HS-mode; returns scause.
///
/// Preconditions (set once by the boot code): `stvec` is `__libvmm_trap`, `sstatus.SPP = 1`,
/// `hstatus.SPV = 1`, `sscratch = 0`, and the G-stage tables in hgatp map only guest memory.
#[inline(always)]
pub fn enter<C>(ctx: &mut C) -> u64 {
    const {
        assert!(core::mem::size_of::<C>() >= CTX_SIZE && core::mem::align_of::<C>() >= 8);
    };
    let scause: u64;
    // SAFETY: `ctx` is a guest context of the layout above (size checked here, offsets by `riscv::hw`).
    // The asm saves the host registers Rust cannot declare clobbered (sp, s0, s1; gp/tp are never
    // used by the VMM, see the module doc) and the
    // resume address into `ctx.host`, loads the guest's registers from `ctx.x` and `sret`s into VS-mode.
    // The trap vector stores the guest's registers back into the same `ctx` (through sscratch), restores
    // the saved host registers and jumps to `1:`; every other register is declared clobbered. `ctx` is a
    // live exclusive reference for the whole call, so those accesses alias nothing Rust knows about.
    unsafe {
        core::arch::asm!(
            "sd sp, 256(a0)",
            "sd s0, 280(a0)",
            "sd s1, 288(a0)",
            "lla t0, 1f",
            "sd t0, 296(a0)",
            "csrw sscratch, a0",
            "ld ra, 8(a0)",
            "ld sp, 16(a0)",
            "ld t0, 40(a0)",
            "ld t1, 48(a0)",
            "ld t2, 56(a0)",
            "ld s0, 64(a0)",
            "ld s1, 72(a0)",
            "ld a1, 88(a0)",
            "ld a2, 96(a0)",
            "ld a3, 104(a0)",
            "ld a4, 112(a0)",
            "ld a5, 120(a0)",
            "ld a6, 128(a0)",
            "ld a7, 136(a0)",
            "ld s2, 144(a0)",
            "ld s3, 152(a0)",
            "ld s4, 160(a0)",
            "ld s5, 168(a0)",
            "ld s6, 176(a0)",
            "ld s7, 184(a0)",
            "ld s8, 192(a0)",
            "ld s9, 200(a0)",
            "ld s10, 208(a0)",
            "ld s11, 216(a0)",
            "ld t3, 224(a0)",
            "ld t4, 232(a0)",
            "ld t5, 240(a0)",
            "ld t6, 248(a0)",
            "ld a0, 80(a0)",
            "sret",
            "1:",
            "csrr a0, scause",
            inout("a0") ctx as *mut C => scause,
            out("s2") _, out("s3") _, out("s4") _, out("s5") _, out("s6") _, out("s7") _,
            out("s8") _, out("s9") _, out("s10") _, out("s11") _,
            clobber_abi("C"),
        );
    }
    scause
}
