//! Guest SMP: the payload's CPUs (one vCPU per physical CPU, pinned by the VMM; see the README's CPU
//! model). [`cpu_count`] and [`current_cpu`] say where a payload is; [`start`] runs a function on
//! another CPU (RISC-V: SBI HSM `hart_start` at the runtime's secondary entry, on a stack of its own
//! from a fixed table; the hart stops with `hart_stop` when the function returns and may be started
//! again); [`send_ipi`] raises a software interrupt on another CPU (its handler is the
//! `irq::Interrupt::Software` one, after [`enable_ipis`]); [`remote_fence_vma`] is the remote half of a
//! TLB shootdown (SBI RFENCE `remote_sfence_vma`, which returns once every target has fenced).
//!
//!
//! x86 (SVM images): the architectural way, through the virtual x2APIC. [`start`] writes the AP
//! trampoline into the SIPI page (`libvmm_abi::layout::x86_64::SIPI_PAGE`, through its window address),
//! sends INIT then STARTUP with the page's vector through the ICR (MSR 0x830), and waits for the AP to
//! check in (one start at a time: one trampoline page). The AP goes real mode -> long mode on the boot
//! CPU's GDT and page tables, onto a 16 KiB stack of its own, runs the function, and halts with
//! interrupts off (only INIT wakes it); `start` may run it again (INIT + SIPI again). [`cpu_count`] is
//! CPUID leaf 0xB's core count, [`current_cpu`] the x2APIC ID (MSR 0x802). IPIs are fixed x2APIC IPIs
//! with vector [`IPI_VECTOR`] (the handler is `irq::Interrupt::Software`'s); a remote fence is an IPI
//! with [`FENCE_VECTOR`] whose handler (the runtime's) flushes the target's TLB and acknowledges.
#![forbid(unsafe_code)]

#[cfg(target_arch = "x86_64")]
use core::sync::atomic::{AtomicBool, AtomicU32};
use core::sync::atomic::{AtomicUsize, Ordering};

/// x86: the vector of [`send_ipi`] (`irq::Interrupt::Software` is this vector's handler).
pub const IPI_VECTOR: u8 = 0xF0;
/// x86: the vector of a remote fence ([`remote_fence_vma`]); its handler is the runtime's.
pub const FENCE_VECTOR: u8 = 0xF1;

#[cfg(target_arch = "x86_64")]
/// x86: each CPU's state as the runtime sees it (0 off, 1 starting, 2 running).
static STATE: [AtomicU32; MAX_CPUS] = [const { AtomicU32::new(0) }; MAX_CPUS];
#[cfg(target_arch = "x86_64")]
const OFF: u32 = 0;
#[cfg(target_arch = "x86_64")]
const STARTING: u32 = 1;
#[cfg(target_arch = "x86_64")]
const RUNNING: u32 = 2;
#[cfg(target_arch = "x86_64")]
/// x86: every running CPU's GS base points at its number ([`use_gs_cpu_numbers`]), and each CPU started
/// from now on sets its own before anything else: [`current_cpu`] reads it without an exit.
static GS_NUMBERS: AtomicBool = AtomicBool::new(false);
#[cfg(target_arch = "x86_64")]
/// x86: one start at a time (one trampoline page).
static START_LOCK: AtomicBool = AtomicBool::new(false);
#[cfg(target_arch = "x86_64")]
/// x86: fences asked of each CPU and not yet done.
static FENCE_PENDING: [AtomicBool; MAX_CPUS] = [const { AtomicBool::new(false) }; MAX_CPUS];
#[cfg(target_arch = "x86_64")]
/// x86: the address the current remote fence invalidates (`u64::MAX`: the whole TLB).
static FENCE_ADDR: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(u64::MAX);
/// TSC ticks a start waits for the AP to check in (about 2 s at 2.5 GHz).
#[cfg(target_arch = "x86_64")]
const CHECKIN_TICKS: u64 = 5_000_000_000;

/// The most CPUs the runtime keeps stacks for (the VMM's `config::MAX_CPUS`).
pub const MAX_CPUS: usize = 8;

/// Why [`start`] or [`send_ipi`] failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SmpError {
    /// No such CPU (or beyond [`MAX_CPUS`]).
    NoSuchCpu,
    /// It is running (or starting) already.
    AlreadyStarted,
    /// This architecture's VMM does not start guest CPUs yet.
    Unsupported,
    /// Another SBI error.
    Sbi(i64),
    /// x86: the started CPU never checked in.
    Timeout,
}

/// The function each started CPU runs (`fn()` as usize; 0: none).
static ENTRY: [AtomicUsize; MAX_CPUS] = [const { AtomicUsize::new(0) }; MAX_CPUS];

#[cfg(target_arch = "riscv64")]
mod sbi {
    pub use libvmm_abi::sbi::*;
    pub fn call(ext: u64, fid: u64, a: [u64; 6]) -> (i64, i64) {
        crate::arch::sbi_call(ext, fid, a)
    }
}

/// CPUs the payload may run on (RISC-V: the harts HSM knows).
pub fn cpu_count() -> usize {
    // The VM's vCPU count is fixed: probed once (RISC-V: SBI calls; x86: a CPUID exit), then cached.
    match COUNT.load(Ordering::Relaxed) {
        0 => {
            let n = probe_cpu_count();
            COUNT.store(n, Ordering::Relaxed);
            n
        }
        n => n,
    }
}

/// [`cpu_count`], once probed (0: not yet).
static COUNT: AtomicUsize = AtomicUsize::new(0);

fn probe_cpu_count() -> usize {
    #[cfg(target_arch = "riscv64")]
    {
        (0..64u64)
            .take_while(|&h| {
                sbi::call(sbi::EXT_HSM, sbi::HSM_HART_GET_STATUS, [h, 0, 0, 0, 0, 0]).0 == 0
            })
            .count()
            .max(1)
    }
    #[cfg(target_arch = "x86_64")]
    {
        (crate::arch::cpuid(0xB, 1)[1] & 0xFFFF).max(1) as usize
    }
}

/// The CPU this code runs on (RISC-V: the hart id; x86: the x2APIC ID; 0 for the boot CPU).
#[inline]
pub fn current_cpu() -> usize {
    #[cfg(target_arch = "riscv64")]
    return crate::arch::hart_id() as usize;
    #[cfg(target_arch = "x86_64")]
    {
        // One CPU: no MSR exits on the scheduler's every switch (the thread spawn+join figure); the
        // scheduler's CPUs: one load through GS. Both inline; the rest out of line.
        match COUNT.load(Ordering::Relaxed) {
            1 => 0,
            _ if GS_NUMBERS.load(Ordering::Acquire) => crate::arch::gs_cpu_number(),
            _ => current_cpu_slow(),
        }
    }
}

/// x86 [`current_cpu`] before the count is probed or without GS numbers: the x2APIC ID (two MSR exits),
/// or CPUID 0xB's before the x2APIC is on.
#[cfg(target_arch = "x86_64")]
#[inline(never)]
fn current_cpu_slow() -> usize {
    use crate::irq::x2apic;
    if cpu_count() == 1 {
        return 0;
    }
    if crate::arch::rdmsr(x2apic::APIC_BASE) & x2apic::BASE_EXTD != 0 {
        crate::arch::rdmsr(x2apic::ID) as usize
    } else {
        crate::arch::cpuid(0xB, 0)[3] as usize
    }
}

/// x86: from now on [`current_cpu`] is one load through GS instead of two MSR exits: this CPU sets its
/// GS base to its number, and every CPU [`start`]ed later sets its own first thing. For the thread
/// scheduler, on the boot CPU before it starts any other; refused (false) when another CPU already
/// runs, whose GS base nobody set.
#[cfg(all(target_arch = "x86_64", target_os = "hermit"))]
pub(crate) fn use_gs_cpu_numbers() -> bool {
    if GS_NUMBERS.load(Ordering::Acquire) {
        return true;
    }
    if (1..cpu_count().min(MAX_CPUS)).any(is_running) {
        return false;
    }
    crate::arch::set_gs_cpu_number(current_cpu());
    GS_NUMBERS.store(true, Ordering::Release);
    true
}

/// x86: this CPU's APIC in x2APIC mode and software-enabled (idempotent).
#[cfg(target_arch = "x86_64")]
fn x2apic_on() {
    use crate::irq::x2apic;
    let base = crate::arch::rdmsr(x2apic::APIC_BASE);
    if base & x2apic::BASE_EXTD == 0 {
        crate::arch::wrmsr(
            x2apic::APIC_BASE,
            base | x2apic::BASE_EN | x2apic::BASE_EXTD,
        );
    }
    let svr = crate::arch::rdmsr(x2apic::SVR);
    if svr & x2apic::SVR_ENABLE == 0 {
        crate::arch::wrmsr(x2apic::SVR, svr | x2apic::SVR_ENABLE | 0xFF);
    }
}

/// x86: writes the ICR (MSR 0x830): one 64-bit WRMSR sends.
#[cfg(target_arch = "x86_64")]
pub fn write_icr(value: u64) {
    x2apic_on();
    crate::arch::wrmsr(crate::irq::x2apic::ICR, value);
}

/// Whether CPU `cpu` runs (started, or starting).
pub fn is_running(cpu: usize) -> bool {
    #[cfg(target_arch = "riscv64")]
    {
        let (e, v) = sbi::call(
            sbi::EXT_HSM,
            sbi::HSM_HART_GET_STATUS,
            [cpu as u64, 0, 0, 0, 0, 0],
        );
        e == 0 && (v == sbi::HSM_STATE_STARTED || v == sbi::HSM_STATE_START_PENDING)
    }
    #[cfg(target_arch = "x86_64")]
    {
        cpu == 0
            || STATE
                .get(cpu)
                .is_some_and(|s| s.load(Ordering::Acquire) != OFF)
    }
}

/// Runs `f` on CPU `cpu`, which must be stopped; the CPU stops again when `f` returns.
pub fn start(cpu: usize, f: fn()) -> Result<(), SmpError> {
    if cpu >= MAX_CPUS {
        return Err(SmpError::NoSuchCpu);
    }
    #[cfg(target_arch = "riscv64")]
    {
        ENTRY[cpu].store(f as usize, Ordering::Release);
        let (pc, sp) = crate::arch::secondary_start_state(cpu);
        match sbi::call(
            sbi::EXT_HSM,
            sbi::HSM_HART_START,
            [cpu as u64, pc, sp, 0, 0, 0],
        )
        .0
        {
            0 => Ok(()),
            sbi::ERR_INVALID_PARAM => Err(SmpError::NoSuchCpu),
            sbi::ERR_ALREADY_AVAILABLE => Err(SmpError::AlreadyStarted),
            e => Err(SmpError::Sbi(e)),
        }
    }
    #[cfg(target_arch = "x86_64")]
    {
        if cpu == 0 || cpu >= cpu_count() {
            return Err(SmpError::NoSuchCpu);
        }
        if STATE[cpu]
            .compare_exchange(OFF, STARTING, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            return Err(SmpError::AlreadyStarted);
        }
        ENTRY[cpu].store(f as usize, Ordering::Release);
        while START_LOCK
            .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            core::hint::spin_loop();
        }
        let vector = crate::arch::write_ap_trampoline(cpu);
        let dest = (cpu as u64) << 32;
        // INIT (level assert), then STARTUP with the page's vector (the VMM, like current CPUs, needs
        // no second STARTUP and no delays).
        write_icr(dest | 0b101 << 8 | 1 << 14);
        write_icr(dest | 0b110 << 8 | 1 << 14 | u64::from(vector));
        // Bounded in TSC ticks (a PAUSE can cost an emulator far more than a cycle).
        let t0 = crate::arch::cycles();
        let mut ok = false;
        while crate::arch::cycles().wrapping_sub(t0) < CHECKIN_TICKS {
            if STATE[cpu].load(Ordering::Acquire) != STARTING {
                ok = true;
                break;
            }
            core::hint::spin_loop();
        }
        START_LOCK.store(false, Ordering::Release);
        if ok {
            Ok(())
        } else {
            STATE[cpu].store(OFF, Ordering::Release);
            Err(SmpError::Timeout)
        }
    }
}

/// Called by the architecture's secondary entry on a started CPU: runs its function, then stops it.
pub(crate) fn run_started(cpu: u64) -> ! {
    #[cfg(target_arch = "x86_64")]
    {
        if GS_NUMBERS.load(Ordering::Acquire) {
            crate::arch::set_gs_cpu_number(cpu as usize);
        }
        x2apic_on();
        if let Some(s) = STATE.get(cpu as usize) {
            s.store(RUNNING, Ordering::Release);
        }
    }
    let f = ENTRY
        .get(cpu as usize)
        .map_or(0, |e| e.load(Ordering::Acquire));
    if f != 0 {
        // The table only ever holds `fn()` pointers stored by `start`; go through the raw-function
        // helper of `arch`, which owns the one `unsafe` transmute.
        crate::arch::call_fn_ptr(f);
    }
    stop_self()
}

/// Stops this CPU for good (RISC-V `hart_stop`); another `start` may run it again.
pub fn stop_self() -> ! {
    #[cfg(target_arch = "riscv64")]
    {
        sbi::call(sbi::EXT_HSM, sbi::HSM_HART_STOP, [0; 6]);
        crate::arch::halt_forever()
    }
    #[cfg(target_arch = "x86_64")]
    {
        crate::arch::disable_interrupts();
        let me = current_cpu();
        if let Some(s) = STATE.get(me) {
            s.store(OFF, Ordering::Release);
        }
        crate::arch::cli_halt_forever()
    }
}

/// Lets this CPU take IPIs (RISC-V: sie.SSIE; the handler is `irq::Interrupt::Software`'s, and
/// interrupts still need `irq::enable`).
pub fn enable_ipis() {
    #[cfg(target_arch = "riscv64")]
    crate::arch::enable_software_interrupt();
    #[cfg(target_arch = "x86_64")]
    {
        x2apic_on();
        let _ = crate::irq::set_interrupt_handler(
            crate::irq::Interrupt::Vector(FENCE_VECTOR),
            on_fence,
        );
    }
}

/// x86: a remote fence: flush this CPU's TLB, acknowledge, EOI.
#[cfg(target_arch = "x86_64")]
fn on_fence(_: &mut crate::TrapFrame) -> crate::TrapAction {
    match FENCE_ADDR.load(Ordering::Acquire) {
        u64::MAX => crate::arch::flush_tlb(),
        addr => crate::arch::invlpg(addr),
    }
    if let Some(p) = FENCE_PENDING.get(current_cpu()) {
        p.store(false, Ordering::Release);
    }
    crate::irq::eoi();
    crate::TrapAction::Resume
}

/// Sends an IPI to CPU `cpu` (RISC-V: a supervisor software interrupt through SBI IPI).
pub fn send_ipi(cpu: usize) -> Result<(), SmpError> {
    send_ipi_mask(1, cpu as u64)
}

/// The thread scheduler's wake-up IPI to CPU `cpu` (x86: a fixed IPI with `irq::WAKE_VECTOR`, one ICR
/// write: the scheduler enabled every CPU's x2APIC before any wake-up can be sent; RISC-V: the
/// software interrupt of [`send_ipi`]).
#[cfg(target_os = "hermit")]
pub(crate) fn send_wake(cpu: usize) {
    #[cfg(target_arch = "riscv64")]
    let _ = send_ipi(cpu);
    #[cfg(target_arch = "x86_64")]
    crate::arch::wrmsr(
        crate::irq::x2apic::ICR,
        (cpu as u64) << 32 | u64::from(crate::irq::WAKE_VECTOR),
    );
}

/// Sends an IPI to the CPUs of an SBI hart mask (`base = u64::MAX`: every CPU); the raw form, for
/// tests of the VMM's checks.
pub fn send_ipi_mask(mask: u64, base: u64) -> Result<(), SmpError> {
    #[cfg(target_arch = "riscv64")]
    {
        match sbi::call(sbi::EXT_IPI, sbi::IPI_SEND_IPI, [mask, base, 0, 0, 0, 0]).0 {
            0 => Ok(()),
            sbi::ERR_INVALID_PARAM => Err(SmpError::NoSuchCpu),
            e => Err(SmpError::Sbi(e)),
        }
    }
    #[cfg(target_arch = "x86_64")]
    {
        send_vector(mask, base, IPI_VECTOR)
    }
}

/// x86: fixed IPIs with `vector` to the CPUs of a hart-mask-style `(mask, base)`: `base = u64::MAX` is
/// the all-including-self shorthand; a mask naming a CPU that does not exist sends nothing.
#[cfg(target_arch = "x86_64")]
fn send_vector(mask: u64, base: u64, vector: u8) -> Result<(), SmpError> {
    if base == u64::MAX {
        write_icr(0b10 << 18 | u64::from(vector));
        return Ok(());
    }
    let n = cpu_count() as u64;
    let bits = (0..64u64).filter(|b| mask & (1 << b) != 0);
    if bits
        .clone()
        .any(|b| base.checked_add(b).is_none_or(|c| c >= n))
    {
        return Err(SmpError::NoSuchCpu);
    }
    for b in bits {
        write_icr((base + b) << 32 | u64::from(vector));
    }
    Ok(())
}

/// The TLB shootdown: every CPU of `(mask, base)` (`base = u64::MAX`: all) drops its cached
/// translations of the guest's page tables, and this one too; returns once all have.
pub fn remote_fence_vma(mask: u64, base: u64) -> Result<(), SmpError> {
    #[cfg(target_arch = "riscv64")]
    {
        crate::arch::local_fence_vma();
        match sbi::call(
            sbi::EXT_RFENCE,
            sbi::RFENCE_SFENCE_VMA,
            [mask, base, 0, 0, 0, 0],
        )
        .0
        {
            0 => Ok(()),
            sbi::ERR_INVALID_PARAM => Err(SmpError::NoSuchCpu),
            e => Err(SmpError::Sbi(e)),
        }
    }
    #[cfg(target_arch = "x86_64")]
    {
        x86_fence(mask, base, u64::MAX)
    }
}

/// x86: the TLB shootdown of one page: every running CPU of `(mask, base)` but this one takes an IPI
/// whose handler runs INVLPG `addr` (this CPU runs it here); returns once all have.
#[cfg(target_arch = "x86_64")]
pub fn remote_invlpg(mask: u64, base: u64, addr: u64) -> Result<(), SmpError> {
    x86_fence(mask, base, addr)
}

#[cfg(target_arch = "x86_64")]
fn x86_fence(mask: u64, base: u64, addr: u64) -> Result<(), SmpError> {
    // IPIs with the fence vector to every running target but this CPU (whose TLB is flushed here);
    // each target's handler flushes and acknowledges. Targets take it with interrupts on. One fence at
    // a time (the start lock also serializes fences: one address word).
    let me = current_cpu();
    let n = cpu_count();
    let targets: u64 = if base == u64::MAX {
        (1u64 << n.min(63)) - 1
    } else {
        if (0..64u64).any(|b| mask & (1 << b) != 0 && base.saturating_add(b) >= n as u64) {
            return Err(SmpError::NoSuchCpu);
        }
        mask << base
    };
    while START_LOCK
        .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
        .is_err()
    {
        core::hint::spin_loop();
    }
    FENCE_ADDR.store(addr, Ordering::Release);
    match addr {
        u64::MAX => crate::arch::flush_tlb(),
        a => crate::arch::invlpg(a),
    }
    let wanted = |c: usize| c != me && targets & (1 << c) != 0 && is_running(c);
    for c in (0..n).filter(|&c| wanted(c)) {
        FENCE_PENDING[c].store(true, Ordering::Release);
        write_icr((c as u64) << 32 | u64::from(FENCE_VECTOR));
    }
    for c in (0..n).filter(|&c| wanted(c)) {
        while FENCE_PENDING[c].load(Ordering::Acquire) && is_running(c) {
            core::hint::spin_loop();
        }
    }
    START_LOCK.store(false, Ordering::Release);
    Ok(())
}
