//! RISC-V payload entry, trap handling and hypercalls (the payload runs in VS-mode, bare translation).
//!
//! The VMM enters `_start` with a0 = hart id, a1 = boot-info address, a2 = the guest device tree, sp at
//! the top of guest memory. `_start` reads `cycle` first (so a payload can measure the cost of getting
//! here), points `stvec` (the guest's vstvec) at its trap handler and calls into Rust.
//!
//! Hypercalls are ECALLs with a7 = `SBI_EXT_LIBVMM`, a6 = number, a0..a3 = arguments; the VMM answers in
//! a0 (SBI error, 0) and a1 (result). [`sbi_call`] makes any other SBI call.
//!
//! `probe` runs single instructions that may trap (CSR accesses the guest may not make, hypervisor
//! fences, Zalasr loads) and returns the exception cause they raised: the trap handler resumes after the
//! probed instruction when a probe is armed. A supervisor timer interrupt is counted ([`timer_ticks`])
//! and its timer disarmed. Otherwise the payload's handler for the exception cause runs, if it installed
//! one ([`crate::set_trap_handler`]; the trap stub saves every integer register in a [`TrapFrame`]); any
//! other trap is reported and aborts the payload.

use core::sync::atomic::{AtomicU64, Ordering};

use libvmm_abi::SBI_EXT_LIBVMM;

static FIRST_CYCLES: AtomicU64 = AtomicU64::new(0);
static DTB: AtomicU64 = AtomicU64::new(0);
#[no_mangle]
static LIBVMM_GUEST_PROBE_RESUME: AtomicU64 = AtomicU64::new(0);
static PROBE_CAUSE: AtomicU64 = AtomicU64::new(NO_TRAP);
static TIMER_TICKS: AtomicU64 = AtomicU64::new(0);
const NO_TRAP: u64 = u64::MAX;
const INTERRUPT: u64 = 1 << 63;
const IRQ_S_TIMER: u64 = 5;
const IRQ_S_SOFT: u64 = 1;

/// SBI TIME extension (the one SBI vocabulary is `libvmm_abi::sbi`).
pub use libvmm_abi::sbi::EXT_TIME as SBI_EXT_TIME;

core::arch::global_asm!(
    r#"
.section .text.start, "ax"
.global _start
_start:
    rdcycle t0
    lla t1, {first}
    sd t0, 0(t1)
    lla t1, {dtb}
    sd a2, 0(t1)
    csrw sscratch, a0
    lla t0, 3f
    csrw stvec, t0
    andi sp, sp, -16
    mv a0, a1
    call {rust_start}
1:  wfi
    j 1b

.global libvmm_guest_secondary_start
libvmm_guest_secondary_start:
    csrw sscratch, a0
    lla t0, 3f
    csrw stvec, t0
    mv sp, a1
    call {secondary}
2:  wfi
    j 2b

.section .text.trap, "ax"
.balign 4
3:
    addi sp, sp, -{frame}
    sd x1, 8(sp)
    sd x3, 24(sp)
    sd x4, 32(sp)
    sd x5, 40(sp)
    sd x6, 48(sp)
    sd x7, 56(sp)
    sd x8, 64(sp)
    sd x9, 72(sp)
    sd x10, 80(sp)
    sd x11, 88(sp)
    sd x12, 96(sp)
    sd x13, 104(sp)
    sd x14, 112(sp)
    sd x15, 120(sp)
    sd x16, 128(sp)
    sd x17, 136(sp)
    sd x18, 144(sp)
    sd x19, 152(sp)
    sd x20, 160(sp)
    sd x21, 168(sp)
    sd x22, 176(sp)
    sd x23, 184(sp)
    sd x24, 192(sp)
    sd x25, 200(sp)
    sd x26, 208(sp)
    sd x27, 216(sp)
    sd x28, 224(sp)
    sd x29, 232(sp)
    sd x30, 240(sp)
    sd x31, 248(sp)
    addi t0, sp, {frame}
    sd t0, 16(sp)
    sd zero, 0(sp)
    csrr t0, sepc
    sd t0, 256(sp)
    csrr t0, scause
    sd t0, 264(sp)
    csrr t0, stval
    sd t0, 272(sp)
    mv a0, sp
    call {trap}
    ld t0, 256(sp)
    csrw sepc, t0
    ld x1, 8(sp)
    ld x3, 24(sp)
    ld x4, 32(sp)
    ld x5, 40(sp)
    ld x6, 48(sp)
    ld x7, 56(sp)
    ld x8, 64(sp)
    ld x9, 72(sp)
    ld x10, 80(sp)
    ld x11, 88(sp)
    ld x12, 96(sp)
    ld x13, 104(sp)
    ld x14, 112(sp)
    ld x15, 120(sp)
    ld x16, 128(sp)
    ld x17, 136(sp)
    ld x18, 144(sp)
    ld x19, 152(sp)
    ld x20, 160(sp)
    ld x21, 168(sp)
    ld x22, 176(sp)
    ld x23, 184(sp)
    ld x24, 192(sp)
    ld x25, 200(sp)
    ld x26, 208(sp)
    ld x27, 216(sp)
    ld x28, 224(sp)
    ld x29, 232(sp)
    ld x30, 240(sp)
    ld x31, 248(sp)
    ld sp, 16(sp)
    sret
"#,
    first = sym FIRST_CYCLES,
    dtb = sym DTB,
    rust_start = sym rust_start,
    secondary = sym secondary_start,
    trap = sym trap,
    frame = const core::mem::size_of::<TrapFrame>(),
);

extern "C" fn rust_start(boot_info: u64) -> ! {
    super::enter(boot_info)
}

/// A hart the payload started (`crate::smp::start`): SBI HSM entered `libvmm_guest_secondary_start`
/// with a0 = hart id, a1 = opaque = its stack top; runs the function for it, then stops the hart.
extern "C" fn secondary_start(hartid: u64) -> ! {
    crate::smp::run_started(hartid)
}

/// Guest harts' stacks (bytes each), for [`secondary_stack_top`].
const SECONDARY_STACK: usize = 16 * 1024;

#[repr(C, align(16))]
struct SecondaryStacks([[u8; SECONDARY_STACK]; crate::smp::MAX_CPUS]);

static mut SECONDARY_STACKS: SecondaryStacks =
    SecondaryStacks([[0; SECONDARY_STACK]; crate::smp::MAX_CPUS]);

/// The top of hart `cpu`'s stack (`cpu < smp::MAX_CPUS`), and the entry address HSM starts it at.
pub(crate) fn secondary_start_state(cpu: usize) -> (u64, u64) {
    extern "C" {
        fn libvmm_guest_secondary_start();
    }
    // Only the address of the static is taken (no reference): each hart's slice of it is used as that
    // hart's stack by the assembly above and by nothing else.
    let base = core::ptr::addr_of!(SECONDARY_STACKS) as u64;
    let top = base + ((cpu % crate::smp::MAX_CPUS) as u64 + 1) * SECONDARY_STACK as u64;
    (libvmm_guest_secondary_start as *const () as u64, top)
}

/// This hart's id (kept in sscratch from entry on).
pub fn hart_id() -> u64 {
    let v: u64;
    // SAFETY: reads sscratch, which only the entry code writes (the hart id).
    unsafe { core::arch::asm!("csrr {0}, sscratch", out(reg) v, options(nomem, nostack)) };
    v
}

/// Enables the supervisor software interrupt (IPIs from other harts) in `sie`.
pub fn enable_software_interrupt() {
    // SAFETY: sets sie.SSIE; the trap handler handles the interrupt.
    unsafe {
        core::arch::asm!("csrs sie, {0}", in(reg) 1u64 << IRQ_S_SOFT, options(nomem, nostack))
    };
}

/// Full memory fence and this hart's own `sfence.vma` (the local half of a TLB shootdown).
pub fn local_fence_vma() {
    // SAFETY: TLB and memory fences have no effect Rust could observe beyond ordering.
    unsafe { core::arch::asm!("fence rw, rw", "sfence.vma zero, zero", options(nostack)) };
}

/// The saved state of the interrupted code, as the trap stub leaves it on the stack: every integer
/// register, and `sepc`, `scause`, `stval`. A trap handler ([`crate::set_trap_handler`]) may change any
/// field: the stub restores the registers from it (all but `x0`; `x2` last, so a handler may switch
/// stacks) and returns with `sret` to `sepc`; `scause` and `stval` are only read.
#[repr(C, align(16))]
#[derive(Debug)]
pub struct TrapFrame {
    /// `x0..x31` by register number: `x[1]` = ra, `x[2]` = sp at the trap, `x[10..18]` = a0..a7
    /// (`x[0]` reads 0 and is not restored).
    pub x: [u64; 32],
    /// Where the trap happened (the faulting instruction; for ECALL and EBREAK, that instruction).
    pub sepc: u64,
    /// The cause: an exception code (bit 63 clear), 2 = illegal instruction, 3 = breakpoint ...
    pub scause: u64,
    /// The faulting address, or the instruction bits of an illegal instruction when the CPU reports
    /// them, else 0.
    pub stval: u64,
}

impl TrapFrame {
    /// The pc the trap returns to.
    pub fn pc(&self) -> u64 {
        self.sepc
    }

    /// Sets where the trap returns to (e.g. past the faulting instruction).
    pub fn set_pc(&mut self, pc: u64) {
        self.sepc = pc;
    }

    /// Which trap this is.
    pub fn trap(&self) -> crate::Trap {
        crate::Trap::Riscv(self.scause)
    }
}

/// Every trap: the supervisor timer interrupt is counted and disarmed; an armed probe takes an exception;
/// then the payload's handler for the cause, if any; the default reports it and aborts the payload.
extern "C" fn trap(frame: &mut TrapFrame) {
    let (scause, sepc, stval) = (frame.scause, frame.sepc, frame.stval);
    if scause == INTERRUPT | IRQ_S_TIMER {
        TIMER_TICKS.fetch_add(1, Ordering::SeqCst);
        // Disarm (this also clears the pending bit).
        sbi_call(SBI_EXT_TIME, 0, [u64::MAX, 0, 0, 0, 0, 0]);
        let _ = crate::irq::dispatch(crate::irq::Interrupt::Timer, frame);
        return;
    }
    if scause == INTERRUPT | IRQ_S_SOFT {
        // SAFETY: clears the pending supervisor software interrupt.
        unsafe {
            core::arch::asm!("csrc sip, {0}", in(reg) 1u64 << IRQ_S_SOFT, options(nomem, nostack))
        };
        if crate::irq::dispatch(crate::irq::Interrupt::Software, frame) {
            return;
        }
    }
    let resume = LIBVMM_GUEST_PROBE_RESUME.swap(0, Ordering::SeqCst);
    if resume != 0 && scause & INTERRUPT == 0 {
        PROBE_CAUSE.store(scause, Ordering::SeqCst);
        frame.sepc = resume;
        return;
    }
    if scause & INTERRUPT == 0 && crate::trap::dispatch(frame.trap(), frame) {
        return;
    }
    crate::println!(
        "payload: unexpected exception {scause:#x} (stval {stval:#x}) at sepc {sepc:#x}"
    );
    crate::hermit::abort()
}

/// Nothing to set up beyond `_start` (the hypercall instruction is always ECALL).
pub(crate) fn init(_hypercall_insn: u32) {}

/// An SBI call: a7 = `ext`, a6 = `fid`, a0..a5 = `args`; returns (error, value).
#[inline(always)]
pub fn sbi_call(ext: u64, fid: u64, args: [u64; 6]) -> (i64, i64) {
    let (e, v): (u64, u64);
    // SAFETY: ECALL traps to the VMM, which changes only a0 and a1 (the SBI calling convention).
    unsafe {
        core::arch::asm!("ecall",
            inlateout("a0") args[0] => e, inlateout("a1") args[1] => v,
            in("a2") args[2], in("a3") args[3], in("a4") args[4], in("a5") args[5],
            in("a6") fid, in("a7") ext, options(nostack))
    }
    (e as i64, v as i64)
}

/// [`sbi_call`] with the ECALL left out: the same register set-up, for benchmark baselines.
#[inline(always)]
pub fn sbi_call_without_ecall(ext: u64, fid: u64, args: [u64; 6]) -> (i64, i64) {
    let (e, v): (u64, u64);
    // SAFETY: an empty asm block that only takes the registers an SBI call would.
    unsafe {
        core::arch::asm!("",
            inlateout("a0") args[0] => e, inlateout("a1") args[1] => v,
            in("a2") args[2], in("a3") args[3], in("a4") args[4], in("a5") args[5],
            in("a6") fid, in("a7") ext, options(nostack, nomem))
    }
    (e as i64, v as i64)
}

/// The libvmm hypercall: ECALL to the libvmm SBI extension; the result is in a1.
#[inline(always)]
pub fn hypercall(nr: u64, a: [u64; 4]) -> i64 {
    let v: u64;
    // SAFETY: ECALL traps to the VMM, which changes only a0 and a1.
    unsafe {
        core::arch::asm!("ecall",
            inlateout("a0") a[0] => _, inlateout("a1") a[1] => v, in("a2") a[2], in("a3") a[3],
            in("a6") nr, in("a7") SBI_EXT_LIBVMM, options(nostack))
    }
    v as i64
}

/// The cycle counter.
#[inline(always)]
pub fn cycles() -> u64 {
    let v: u64;
    // SAFETY: reading `cycle` has no side effects (the VMM allows it through hcounteren).
    unsafe { core::arch::asm!("rdcycle {0}", out(reg) v, options(nomem, nostack)) };
    v
}

/// The `time` counter (timebase ticks).
pub fn time() -> u64 {
    let v: u64;
    // SAFETY: reading `time` has no side effects.
    unsafe { core::arch::asm!("rdtime {0}", out(reg) v, options(nomem, nostack)) };
    v
}

/// The cycle counter read by the payload's very first instruction.
pub fn first_cycles() -> u64 {
    FIRST_CYCLES.load(Ordering::Relaxed)
}

/// The guest device tree the VMM generated (a2 at entry), as bytes.
pub fn device_tree() -> &'static [u8] {
    let addr = DTB.load(Ordering::Relaxed);
    if addr == 0 {
        return &[];
    }
    // SAFETY: the VMM wrote a flattened device tree there; its header's totalsize (bounded by the
    // layout's maximum) says how long it is.
    unsafe {
        let hdr = core::slice::from_raw_parts(addr as *const u8, 8);
        let size = u32::from_be_bytes([hdr[4], hdr[5], hdr[6], hdr[7]]) as u64;
        core::slice::from_raw_parts(
            addr as *const u8,
            size.min(libvmm_abi::layout::riscv64::DTB_MAX) as usize,
        )
    }
}

/// Timer interrupts taken so far.
pub fn timer_ticks() -> u64 {
    TIMER_TICKS.load(Ordering::SeqCst)
}

/// Arms the SBI timer at `deadline` (time ticks), enables the timer interrupt and waits for it with WFI.
/// Returns whether it arrived.
pub fn wait_for_timer(deadline: u64) -> bool {
    let before = timer_ticks();
    let (e, _) = sbi_call(SBI_EXT_TIME, 0, [deadline, 0, 0, 0, 0, 0]);
    if e != 0 {
        return false;
    }
    // SAFETY: enables the supervisor timer interrupt; the trap handler above handles it.
    unsafe {
        core::arch::asm!("csrs sie, {0}", in(reg) 1u64 << IRQ_S_TIMER, options(nomem, nostack));
        core::arch::asm!("csrs sstatus, {0}", in(reg) 2u64, options(nomem, nostack));
    }
    for _ in 0..1000 {
        if timer_ticks() != before {
            break;
        }
        // SAFETY: waits for an interrupt.
        unsafe { core::arch::asm!("wfi", options(nomem, nostack)) };
    }
    // SAFETY: masks interrupts again.
    unsafe { core::arch::asm!("csrc sstatus, {0}", in(reg) 2u64, options(nomem, nostack)) };
    timer_ticks() != before
}

/// Arms the SBI timer at `deadline` (time ticks) and enables the timer interrupt (taken once
/// interrupts are on: [`wait_for_interrupt`]).
pub fn arm_timer(deadline: u64) {
    sbi_call(SBI_EXT_TIME, 0, [deadline, 0, 0, 0, 0, 0]);
    // SAFETY: enables the supervisor timer interrupt; the trap handler handles it.
    unsafe {
        core::arch::asm!("csrs sie, {0}", in(reg) 1u64 << IRQ_S_TIMER, options(nomem, nostack))
    };
}

/// sstatus.SIE on.
pub fn enable_interrupts() {
    // SAFETY: only sstatus.SIE changes; the trap vector handles every interrupt.
    unsafe { core::arch::asm!("csrs sstatus, {0}", in(reg) 2u64, options(nostack)) }
}

/// sstatus.SIE off.
pub fn disable_interrupts() {
    // SAFETY: only sstatus.SIE changes.
    unsafe { core::arch::asm!("csrc sstatus, {0}", in(reg) 2u64, options(nostack)) }
}

/// Waits for an interrupt (WFI, which a pending enabled interrupt ends whatever sstatus.SIE says), then
/// turns interrupts on so its handler runs, and off again. The WFI runs with interrupts off: an
/// interrupt taken just before it (the one the caller waits for) would leave it waiting for the next.
pub fn wait_for_interrupt() {
    // SAFETY: WFI with SIE clear only stalls the hart; the pending interrupt is then taken after `csrs`.
    unsafe {
        core::arch::asm!("csrc sstatus, {0}", "wfi", "csrs sstatus, {0}", "csrc sstatus, {0}", in(reg) 2u64, options(nostack))
    }
}

pub fn halt_forever() -> ! {
    loop {
        // SAFETY: waiting for an interrupt has no memory effects.
        unsafe { core::arch::asm!("wfi", options(nomem, nostack)) }
    }
}

/// Runs single instructions that may trap and reports the exception cause they raised.
pub mod probe {
    use super::{Ordering, LIBVMM_GUEST_PROBE_RESUME, NO_TRAP, PROBE_CAUSE};

    /// Result of a probe: `Err(cause)` when the instruction trapped.
    pub type Probe<T> = Result<T, u64>;

    /// Illegal instruction.
    pub const ILLEGAL: u64 = 2;

    fn arm() {
        PROBE_CAUSE.store(NO_TRAP, Ordering::SeqCst);
    }

    fn outcome<T>(v: T) -> Probe<T> {
        LIBVMM_GUEST_PROBE_RESUME.store(0, Ordering::SeqCst);
        match PROBE_CAUSE.load(Ordering::SeqCst) {
            NO_TRAP => Ok(v),
            cause => Err(cause),
        }
    }

    macro_rules! probe_asm {
        ([$($insn:tt)*] $(, $($ops:tt)*)?) => {{
            arm();
            // SAFETY: the instruction runs with the resume address armed: if it traps, the handler
            // continues at label 2; the VMM decides what the instruction does (that is under test).
            unsafe {
                core::arch::asm!(
                    "lla {tmp}, 2f",
                    "lla {addr}, {resume}",
                    "sd {tmp}, 0({addr})",
                    $($insn)*,
                    "2:",
                    tmp = out(reg) _,
                    addr = out(reg) _,
                    resume = sym LIBVMM_GUEST_PROBE_RESUME,
                    $($($ops)*)?
                )
            }
        }};
    }

    /// Reads CSR `$num` (a literal CSR number).
    macro_rules! csr_probe {
        ($read:ident, $write:ident, $num:literal) => {
            pub fn $read() -> Probe<u64> {
                let v: u64;
                probe_asm!([concat!("csrr {v}, ", $num)], v = out(reg) v);
                outcome(v)
            }
            pub fn $write(value: u64) -> Probe<()> {
                probe_asm!([concat!("csrw ", $num, ", {v}")], v = in(reg) value);
                outcome(())
            }
        };
    }

    csr_probe!(read_hgatp, write_hgatp, "0x680");
    csr_probe!(read_hstatus, write_hstatus, "0x600");
    csr_probe!(read_hedeleg, write_hedeleg, "0x602");
    csr_probe!(read_mstatus, write_mstatus, "0x300");
    csr_probe!(read_mhartid, write_mhartid, "0xF14");
    csr_probe!(read_satp, write_satp, "0x180");
    csr_probe!(read_time, write_time, "0xC01");

    /// `csrrw rd, seed, x0`: the Zkr entropy source (OPST in bits 31:30, 16 bits of entropy when OPST
    /// is ES16); illegal on a hart without Zkr.
    pub fn seed() -> Probe<u64> {
        let v: u64;
        probe_asm!(["csrrw {v}, 0x015, zero"], v = out(reg) v);
        outcome(v)
    }

    /// HFENCE.GVMA (a hypervisor instruction: not for VS-mode).
    pub fn hfence_gvma() -> Probe<()> {
        probe_asm!([
            ".option push",
            ".option arch, +h",
            "hfence.gvma zero, zero",
            ".option pop"
        ]);
        outcome(())
    }

    /// HLV.D: a hypervisor load (not for VS-mode).
    pub fn hlv_d(addr: u64) -> Probe<u64> {
        let v: u64;
        probe_asm!([".option push", ".option arch, +h", "hlv.d {v}, ({a})", ".option pop"], v = out(reg) v, a = in(reg) addr);
        outcome(v)
    }

    /// Zalasr `lw.aq rd, (rs1)`, encoded by hand (assemblers here do not know Zalasr): word template
    /// 0x3400_202F with rs1 = a0, rd = a0.
    pub fn lw_aq(addr: u64) -> Probe<u64> {
        let v: u64;
        probe_asm!([".word 0x3405252F"], inout("a0") addr => v);
        outcome(v)
    }

    /// Zicboz `cbo.zero (a0)` (encoded by hand): zeroes the cache block at `addr`; illegal when the VMM
    /// hid Zicboz (henvcfg.CBZE clear).
    pub fn cbo_zero(addr: u64) -> Probe<()> {
        probe_asm!([".word 0x0045200F"], in("a0") addr);
        outcome(())
    }

    /// `mret`: an M-mode instruction.
    pub fn mret() -> Probe<()> {
        probe_asm!(["mret"]);
        outcome(())
    }
}
