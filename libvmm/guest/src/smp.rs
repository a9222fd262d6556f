//! Guest SMP: the payload's CPUs (one vCPU per physical CPU, pinned by the VMM; see the README's CPU
//! model). [`cpu_count`] and [`current_cpu`] say where a payload is; [`start`] runs a function on
//! another CPU (RISC-V: SBI HSM `hart_start` at the runtime's secondary entry, on a stack of its own
//! from a fixed table; the hart stops with `hart_stop` when the function returns and may be started
//! again); [`send_ipi`] raises a software interrupt on another CPU (its handler is the
//! `irq::Interrupt::Software` one, after [`enable_ipis`]); [`remote_fence_vma`] is the remote half of a
//! TLB shootdown (SBI RFENCE `remote_sfence_vma`, which returns once every target has fenced).
//!
//! x86: the VMM does not start guest APs yet (the x2APIC INIT/SIPI path is the next step of issue
//! 11): [`cpu_count`] is 1 and [`start`] answers [`SmpError::Unsupported`].
#![forbid(unsafe_code)]

use core::sync::atomic::{AtomicUsize, Ordering};

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
    #[cfg(target_arch = "riscv64")]
    {
        (0..64u64)
            .take_while(|&h| {
                sbi::call(sbi::EXT_HSM, sbi::HSM_HART_GET_STATUS, [h, 0, 0, 0, 0, 0]).0 == 0
            })
            .count()
            .max(1)
    }
    #[cfg(not(target_arch = "riscv64"))]
    1
}

/// The CPU this code runs on (RISC-V: the hart id, 0 for the boot CPU).
pub fn current_cpu() -> usize {
    #[cfg(target_arch = "riscv64")]
    return crate::arch::hart_id() as usize;
    #[cfg(not(target_arch = "riscv64"))]
    0
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
    #[cfg(not(target_arch = "riscv64"))]
    {
        cpu == 0
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
    #[cfg(not(target_arch = "riscv64"))]
    {
        let _ = f;
        Err(SmpError::Unsupported)
    }
}

/// Called by the architecture's secondary entry on a started CPU: runs its function, then stops it.
#[cfg_attr(not(target_arch = "riscv64"), allow(dead_code))]
pub(crate) fn run_started(cpu: u64) -> ! {
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
    sbi::call(sbi::EXT_HSM, sbi::HSM_HART_STOP, [0; 6]);
    crate::arch::halt_forever()
}

/// Lets this CPU take IPIs (RISC-V: sie.SSIE; the handler is `irq::Interrupt::Software`'s, and
/// interrupts still need `irq::enable`).
pub fn enable_ipis() {
    #[cfg(target_arch = "riscv64")]
    crate::arch::enable_software_interrupt();
}

/// Sends an IPI to CPU `cpu` (RISC-V: a supervisor software interrupt through SBI IPI).
pub fn send_ipi(cpu: usize) -> Result<(), SmpError> {
    send_ipi_mask(1, cpu as u64)
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
    #[cfg(not(target_arch = "riscv64"))]
    {
        let _ = (mask, base);
        Err(SmpError::Unsupported)
    }
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
    #[cfg(not(target_arch = "riscv64"))]
    {
        let _ = (mask, base);
        Err(SmpError::Unsupported)
    }
}
