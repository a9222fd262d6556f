//! The shared part of the VM (guest SMP): what every vCPU of the one VM sees. Each physical CPU runs one
//! vCPU, pinned, with no scheduler; each vCPU has its own [`crate::vm::Vm`] (exits, statistics, interrupt
//! state, emulator, platform) and all of them hold one `&'static` [`Shared`]: per-vCPU run state and
//! start request, pending IPIs, pending remote fences, the stop flag and per-vCPU exit counts. Static
//! storage sized by `config::MAX_CPUS`, atomics only, no heap, no lock.
//!
//! Costs on the exit path: none on the hot exits. A vCPU looks at this state only on a host event (the
//! host IPI another vCPU sends when it posts something for it, or when the VM stops) and on the cold
//! exits that concern other vCPUs (HSM, IPI and fence calls, halts).
//!
//! vCPU numbers are the guest's: RISC-V hart ids and x86 APIC ids `0..cpu_count()`; vCPU n runs on the
//! VMM's CPU n (`cpus.rs`).
#![forbid(unsafe_code)]
// Each image uses its architecture's half (x86: INIT/SIPI and vectors; RISC-V: HSM, IPI kinds, fences).
#![cfg_attr(target_os = "none", allow(dead_code))]

use core::sync::atomic::{AtomicU32, AtomicU64, AtomicU8, AtomicUsize, Ordering};

use crate::config::MAX_CPUS;

/// Run states of a vCPU ([`Shared::status`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum RunState {
    /// Not running guest code: never started, or stopped itself (SBI `hart_stop`, x86 INIT).
    Off = 0,
    /// A start request is being written (the requester owns the start fields).
    Claimed = 1,
    /// Start requested: its CPU picks the request up and enters the guest.
    StartRequested = 2,
    Running = 3,
}

/// Why a start request was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StartError {
    /// No such vCPU.
    NoSuchCpu,
    /// It is running or already starting.
    AlreadyStarted,
}

/// Remote-fence request bits ([`Shared::post_fence`]).
pub mod fence {
    /// `fence.i` (RISC-V) on the target.
    pub const INSN: u8 = 1 << 0;
    /// The guest's VS-stage / linear translations (RISC-V `hfence.vvma` for the guest's VMID; x86
    /// INVLPG-all is the guest's own business).
    pub const VMA: u8 = 1 << 1;
}

/// The shared VM state.
pub(crate) struct Shared {
    /// vCPUs the guest may start (0: not yet published, read as 1).
    cpus: AtomicUsize,
    run: [AtomicU8; MAX_CPUS],
    start_pc: [AtomicU64; MAX_CPUS],
    start_arg: [AtomicU64; MAX_CPUS],
    /// Pending software IPIs, one bit per kind (RISC-V: bit 0 = SSIP).
    ipi: [AtomicU32; MAX_CPUS],
    /// Pending remote-fence requests ([`fence`]).
    fences: [AtomicU8; MAX_CPUS],
    /// 0 while the VM runs; 1 + the vCPU that stopped it first.
    stop: AtomicUsize,
    /// Exits of each vCPU, published when it leaves the VM (printed with `libvmm.stats=1`).
    exits: [AtomicU64; MAX_CPUS],
    /// 1 once the vCPU's CPU has left the VM for good (after a stop).
    parked: [AtomicU8; MAX_CPUS],
    /// vCPUs waiting for remote fences to complete (a bit each): a vCPU that completes a fence kicks
    /// them, so they wait halted instead of spinning.
    fence_waiters: AtomicU64,
    /// x86: fixed vectors posted to each vCPU's virtual x2APIC (256 bits: IRR to be), drained into the
    /// target's own `VirtualApic` on its next host event.
    vectors: [[AtomicU64; 4]; MAX_CPUS],
    /// x86: an INIT is posted (the target leaves guest mode into wait-for-SIPI at its next host event).
    init: [AtomicU8; MAX_CPUS],
    /// x86: a STARTUP IPI waits for a vCPU in wait-for-SIPI: `SIPI_VALID | vector`, 0 for none.
    sipi: [AtomicU32; MAX_CPUS],
    /// x86: running vCPUs halted with nothing of their own to wake them (waiting for an IPI or INIT).
    halted: AtomicUsize,
}

/// [`Shared::take_sipi`]'s valid bit.
const SIPI_VALID: u32 = 1 << 8;

/// The VM's shared state on the machine (one VM per image).
pub(crate) static SHARED: Shared = Shared::new();

/// The RISC-V IPI kind: supervisor software interrupt (VSSIP on the target).
pub const IPI_SOFT: u32 = 1;

impl Shared {
    pub const fn new() -> Self {
        Self {
            cpus: AtomicUsize::new(0),
            run: [const { AtomicU8::new(0) }; MAX_CPUS],
            start_pc: [const { AtomicU64::new(0) }; MAX_CPUS],
            start_arg: [const { AtomicU64::new(0) }; MAX_CPUS],
            ipi: [const { AtomicU32::new(0) }; MAX_CPUS],
            fences: [const { AtomicU8::new(0) }; MAX_CPUS],
            stop: AtomicUsize::new(0),
            exits: [const { AtomicU64::new(0) }; MAX_CPUS],
            parked: [const { AtomicU8::new(0) }; MAX_CPUS],
            fence_waiters: AtomicU64::new(0),
            vectors: [const { [const { AtomicU64::new(0) }; 4] }; MAX_CPUS],
            init: [const { AtomicU8::new(0) }; MAX_CPUS],
            sipi: [const { AtomicU32::new(0) }; MAX_CPUS],
            halted: AtomicUsize::new(0),
        }
    }

    /// Sets the number of vCPUs (once the boot knows which CPUs came up); vCPU 0 is running.
    pub fn publish(&self, n: usize) {
        self.cpus.store(n.clamp(1, MAX_CPUS), Ordering::Release);
        self.run[0].store(RunState::Running as u8, Ordering::Release);
    }

    pub fn cpu_count(&self) -> usize {
        self.cpus.load(Ordering::Acquire).max(1)
    }

    fn slot(&self, cpu: u64) -> Option<usize> {
        (cpu < self.cpu_count() as u64).then_some(cpu as usize)
    }

    /// The run state of vCPU `cpu`, or `None` when there is no such vCPU.
    pub fn status(&self, cpu: u64) -> Option<RunState> {
        let s = self.slot(cpu)?;
        Some(match self.run[s].load(Ordering::Acquire) {
            0 => RunState::Off,
            1 => RunState::Claimed,
            2 => RunState::StartRequested,
            _ => RunState::Running,
        })
    }

    /// vCPUs running guest code or about to (everything but off).
    pub fn active(&self) -> usize {
        (0..self.cpu_count())
            .filter(|&c| self.run[c].load(Ordering::Acquire) != RunState::Off as u8)
            .count()
    }

    /// Asks vCPU `cpu` (which must be off) to start at `pc` with `arg`. The caller kicks its CPU.
    pub fn request_start(&self, cpu: u64, pc: u64, arg: u64) -> Result<(), StartError> {
        let s = self.slot(cpu).ok_or(StartError::NoSuchCpu)?;
        self.run[s]
            .compare_exchange(
                RunState::Off as u8,
                RunState::Claimed as u8,
                Ordering::Acquire,
                Ordering::Relaxed,
            )
            .map_err(|_| StartError::AlreadyStarted)?;
        self.start_pc[s].store(pc, Ordering::Relaxed);
        self.start_arg[s].store(arg, Ordering::Relaxed);
        self.run[s].store(RunState::StartRequested as u8, Ordering::Release);
        Ok(())
    }

    /// On vCPU `cpu`'s own CPU: takes a pending start request (it is running from now on), with the
    /// IPIs and fences posted while it was off dropped (a started hart begins clean).
    pub fn take_start(&self, cpu: usize) -> Option<(u64, u64)> {
        let s = self.run.get(cpu)?;
        if s.load(Ordering::Acquire) != RunState::StartRequested as u8 {
            return None;
        }
        let start = (
            self.start_pc[cpu].load(Ordering::Relaxed),
            self.start_arg[cpu].load(Ordering::Relaxed),
        );
        self.ipi[cpu].store(0, Ordering::Relaxed);
        self.fences[cpu].store(0, Ordering::Relaxed);
        s.store(RunState::Running as u8, Ordering::Release);
        Some(start)
    }

    /// On vCPU `cpu`'s own CPU: it stopped itself (hart_stop, INIT).
    pub fn set_off(&self, cpu: usize) {
        if let Some(s) = self.run.get(cpu) {
            s.store(RunState::Off as u8, Ordering::Release);
        }
    }

    /// Posts IPI kinds `bits` to `cpu`; the caller kicks its CPU. `false`: no such vCPU.
    pub fn post_ipi(&self, cpu: u64, bits: u32) -> bool {
        match self.slot(cpu) {
            Some(s) => {
                self.ipi[s].fetch_or(bits, Ordering::AcqRel);
                true
            }
            None => false,
        }
    }

    /// Posts fence kinds `bits` to `cpu` (running vCPUs only: one that is off starts with clean
    /// translations). Returns whether the request was posted.
    pub fn post_fence(&self, cpu: u64, bits: u8) -> bool {
        match self.slot(cpu) {
            Some(s) if self.run[s].load(Ordering::Acquire) == RunState::Running as u8 => {
                self.fences[s].fetch_or(bits, Ordering::AcqRel);
                true
            }
            _ => false,
        }
    }

    /// Whether a fence posted to `cpu` is still to be done.
    pub fn fence_pending(&self, cpu: u64) -> bool {
        self.slot(cpu)
            .is_some_and(|s| self.fences[s].load(Ordering::Acquire) != 0)
    }

    /// Whether anything is posted for `cpu` (one load per kind; called on host events only).
    pub fn has_events(&self, cpu: usize) -> bool {
        self.ipi[cpu].load(Ordering::Relaxed) != 0
            || self.fences[cpu].load(Ordering::Relaxed) != 0
            || self.init[cpu].load(Ordering::Relaxed) != 0
            || self.vectors[cpu]
                .iter()
                .any(|w| w.load(Ordering::Relaxed) != 0)
    }

    /// x86: posts fixed vector `vector` to `cpu`'s x2APIC (the caller kicks its CPU). `false`: no such
    /// vCPU (the message is dropped, as hardware drops one no APIC accepts).
    pub fn post_vector(&self, cpu: u64, vector: u8) -> bool {
        match self.slot(cpu) {
            Some(s) => {
                self.vectors[s][usize::from(vector >> 6)]
                    .fetch_or(1 << (vector & 63), Ordering::AcqRel);
                true
            }
            None => false,
        }
    }

    /// x86: takes the vectors posted to `cpu` (four 64-bit words, vector = word * 64 + bit).
    pub fn take_vectors(&self, cpu: usize) -> [u64; 4] {
        let v = &self.vectors[cpu];
        [0, 1, 2, 3].map(|i| {
            if v[i].load(Ordering::Relaxed) == 0 {
                0
            } else {
                v[i].swap(0, Ordering::AcqRel)
            }
        })
    }

    /// x86: INIT to `cpu` (never the BSP, vCPU 0: hardware ignores INIT to the BSP in this model, the
    /// caller drops it). A SIPI that waited is cancelled; the caller kicks the CPU. `false`: no such vCPU.
    pub fn post_init(&self, cpu: u64) -> bool {
        match self.slot(cpu) {
            Some(s) if s != 0 => {
                self.sipi[s].store(0, Ordering::Release);
                self.init[s].store(1, Ordering::Release);
                true
            }
            _ => false,
        }
    }

    /// x86: on `cpu`'s own CPU, whether an INIT was posted (taken: the vCPU goes to wait-for-SIPI).
    /// The vCPU is off (wait-for-SIPI) from here on: marked before the INIT is cleared, so a STARTUP
    /// posted meanwhile always sees one or the other and is kept (it was lost in between: found by the
    /// start/stop stress on 4 CPUs).
    pub fn take_init(&self, cpu: usize) -> bool {
        if self.init[cpu].load(Ordering::Acquire) == 0 {
            return false;
        }
        self.run[cpu].store(RunState::Off as u8, Ordering::SeqCst);
        self.init[cpu].swap(0, Ordering::SeqCst) != 0
    }

    /// x86: STARTUP with `vector` to `cpu`. Accepted only by a vCPU in wait-for-SIPI (off, or with an
    /// INIT posted it has not yet taken); a running vCPU ignores it, as hardware does. Returns whether it
    /// was accepted (the caller kicks the CPU).
    pub fn post_sipi(&self, cpu: u64, vector: u8) -> bool {
        let Some(s) = self.slot(cpu) else {
            return false;
        };
        if s == 0 {
            return false;
        }
        // INIT first (cleared after the vCPU is marked off, see `take_init`), then the run state.
        let waiting = self.init[s].load(Ordering::SeqCst) != 0
            || self.run[s].load(Ordering::SeqCst) == RunState::Off as u8;
        if waiting {
            self.sipi[s].store(SIPI_VALID | u32::from(vector), Ordering::Release);
        }
        waiting
    }

    /// x86: a vCPU starts waiting halted for other vCPUs; returns how many wait so now (itself included).
    pub fn enter_halt(&self) -> usize {
        self.halted.fetch_add(1, Ordering::SeqCst) + 1
    }

    /// x86: the vCPU no longer waits halted.
    pub fn leave_halt(&self) {
        self.halted.fetch_sub(1, Ordering::SeqCst);
    }

    /// Whether anything is posted for any vCPU (the last halting vCPU's check before it calls the guest
    /// halted for good).
    pub fn any_events(&self) -> bool {
        (0..self.cpu_count())
            .any(|c| self.has_events(c) || self.sipi[c].load(Ordering::SeqCst) != 0)
    }

    /// x86: on an off vCPU's own CPU, takes a waiting STARTUP (after dropping an INIT that came while it
    /// was off, with [`Shared::take_init`]: it waits for a SIPI already): it runs from now on (real mode at
    /// vector << 12), with what was posted while it was off dropped. `None`: no SIPI, or an INIT came
    /// after it (the INIT wins: wait again).
    pub fn take_sipi(&self, cpu: usize) -> Option<u8> {
        let v = self.sipi.get(cpu)?.swap(0, Ordering::AcqRel);
        if v & SIPI_VALID == 0 {
            return None;
        }
        self.ipi[cpu].store(0, Ordering::Relaxed);
        for w in &self.vectors[cpu] {
            w.store(0, Ordering::Relaxed);
        }
        self.run[cpu].store(RunState::Running as u8, Ordering::Release);
        Some(v as u8)
    }

    /// Takes what is posted for `cpu`: (IPI kinds, fence kinds). The fence bits are cleared by
    /// [`Shared::fences_done`] once carried out (the requester waits for that).
    pub fn take_events(&self, cpu: usize) -> (u32, u8) {
        (
            self.ipi[cpu].swap(0, Ordering::AcqRel),
            self.fences[cpu].load(Ordering::Acquire),
        )
    }

    /// The fences `done` taken from [`Shared::take_events`] are carried out on `cpu`.
    pub fn fences_done(&self, cpu: usize, done: u8) {
        self.fences[cpu].fetch_and(!done, Ordering::AcqRel);
    }

    /// vCPU `cpu` waits (or no longer waits) for fences it posted.
    pub fn wait_fences(&self, cpu: usize, waiting: bool) {
        let bit = 1 << (cpu % 64);
        if waiting {
            self.fence_waiters.fetch_or(bit, Ordering::AcqRel);
        } else {
            self.fence_waiters.fetch_and(!bit, Ordering::AcqRel);
        }
    }

    /// The vCPUs waiting for fences (to kick once a fence is done).
    pub fn fence_waiters(&self) -> u64 {
        self.fence_waiters.load(Ordering::Acquire)
    }

    /// vCPU `cpu` stops the VM; `true` for the first vCPU to do so (it prints the one stop line).
    pub fn stop_vm(&self, cpu: usize) -> bool {
        self.stop
            .compare_exchange(0, cpu + 1, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    /// Whether the VM is stopping: one relaxed load.
    #[inline(always)]
    pub fn stopping(&self) -> bool {
        self.stop.load(Ordering::Relaxed) != 0
    }

    /// vCPU `cpu` has left the VM for good after `exits` exits.
    pub fn park(&self, cpu: usize, exits: u64) {
        if cpu < MAX_CPUS {
            self.exits[cpu].store(exits, Ordering::Relaxed);
            self.parked[cpu].store(1, Ordering::Release);
        }
    }

    pub fn parked(&self, cpu: usize) -> bool {
        self.parked
            .get(cpu)
            .is_some_and(|p| p.load(Ordering::Acquire) != 0)
    }

    /// The exits vCPU `cpu` published when it parked.
    pub fn exits(&self, cpu: usize) -> u64 {
        self.exits.get(cpu).map_or(0, |e| e.load(Ordering::Relaxed))
    }
}

/// Harts (vCPUs) a hart mask names (SBI: `hart_mask_base == -1` means every hart), or `None` when one
/// named hart does not exist (`SBI_ERR_INVALID_PARAM`).
pub fn hart_mask(mask: u64, base: u64, cpus: usize) -> Option<u64> {
    let all = if cpus >= 64 {
        u64::MAX
    } else {
        (1 << cpus) - 1
    };
    if base == u64::MAX {
        return Some(all);
    }
    if mask == 0 {
        return Some(0);
    }
    if base >= cpus as u64 {
        return None;
    }
    // Bits at or past 64 - base cannot name a hart below `cpus` either.
    let shifted = mask.checked_shl(base as u32)?;
    if shifted >> base != mask || shifted & !all != 0 {
        return None;
    }
    Some(shifted)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shared(n: usize) -> Shared {
        let s = Shared::new();
        s.publish(n);
        s
    }

    #[test]
    fn start_requests_follow_the_run_states() {
        let s = shared(2);
        assert_eq!(s.status(0), Some(RunState::Running));
        assert_eq!(s.status(1), Some(RunState::Off));
        assert_eq!(s.status(2), None);
        assert_eq!(s.request_start(2, 0, 0), Err(StartError::NoSuchCpu));
        assert_eq!(s.request_start(0, 0, 0), Err(StartError::AlreadyStarted));
        s.post_ipi(1, IPI_SOFT); // posted while off: dropped at start
        s.request_start(1, 0x8000_1000, 7).unwrap();
        assert_eq!(s.status(1), Some(RunState::StartRequested));
        assert_eq!(s.request_start(1, 0, 0), Err(StartError::AlreadyStarted));
        assert_eq!(s.take_start(1), Some((0x8000_1000, 7)));
        assert!(!s.has_events(1));
        assert_eq!(s.take_start(1), None);
        assert_eq!(s.active(), 2);
        s.set_off(1);
        assert_eq!(s.active(), 1);
        s.request_start(1, 1, 2).unwrap();
    }

    #[test]
    fn ipis_and_fences_are_taken_once() {
        let s = shared(2);
        s.request_start(1, 0, 0).unwrap();
        s.take_start(1);
        assert!(s.post_ipi(1, IPI_SOFT));
        assert!(!s.post_ipi(5, IPI_SOFT));
        assert!(s.post_fence(1, fence::VMA));
        assert!(s.has_events(1));
        assert_eq!(s.take_events(1), (IPI_SOFT, fence::VMA));
        assert!(s.fence_pending(1));
        s.fences_done(1, fence::VMA);
        assert!(!s.fence_pending(1));
        assert!(!s.has_events(1));
    }

    #[test]
    fn init_and_sipi_follow_wait_for_sipi() {
        let s = shared(3);
        // Never started: wait-for-SIPI, so a SIPI starts it.
        assert!(s.post_sipi(1, 0x08));
        assert!(!s.take_init(1));
        assert_eq!(s.take_sipi(1), Some(0x08));
        assert_eq!(s.status(1), Some(RunState::Running));
        // SIPI to a running vCPU: ignored.
        assert!(!s.post_sipi(1, 0x09));
        assert_eq!(s.take_sipi(1), None);
        // INIT to the BSP and to a vCPU that does not exist: dropped.
        assert!(!s.post_init(0));
        assert!(!s.post_init(3));
        assert!(!s.post_sipi(0, 0x08));
        // INIT then SIPI before the target took the INIT: the SIPI waits for it.
        assert!(s.post_init(1));
        assert!(s.has_events(1));
        assert!(s.post_sipi(1, 0x0A));
        assert!(s.take_init(1));
        s.set_off(1);
        assert!(!s.take_init(1));
        assert_eq!(s.take_sipi(1), Some(0x0A));
        // An INIT after the SIPI cancels it.
        s.set_off(1);
        assert!(s.post_sipi(1, 0x0B));
        assert!(s.post_init(1));
        assert_eq!(s.take_sipi(1), None);
    }

    #[test]
    fn fixed_vectors_are_posted_per_vcpu_and_taken_once() {
        let s = shared(2);
        assert!(s.post_vector(1, 0x40));
        assert!(s.post_vector(1, 0xFF));
        assert!(!s.post_vector(2, 0x40));
        assert!(s.has_events(1) && !s.has_events(0));
        assert_eq!(s.take_vectors(1), [0, 1, 0, 1 << 63]);
        assert_eq!(s.take_vectors(1), [0; 4]);
        assert!(!s.has_events(1));
    }

    #[test]
    fn the_first_stop_wins() {
        let s = shared(4);
        assert!(!s.stopping());
        assert!(s.stop_vm(2));
        assert!(!s.stop_vm(0));
        assert!(s.stopping());
        s.park(1, 42);
        assert!(s.parked(1) && !s.parked(3));
        assert_eq!(s.exits(1), 42);
    }

    #[test]
    fn hart_masks_are_checked_against_the_vcpus() {
        assert_eq!(hart_mask(0, u64::MAX, 4), Some(0b1111));
        assert_eq!(hart_mask(0b11, 0, 4), Some(0b11));
        assert_eq!(hart_mask(0b1, 3, 4), Some(0b1000));
        assert_eq!(hart_mask(0b11, 3, 4), None);
        assert_eq!(hart_mask(1, 4, 4), None);
        assert_eq!(hart_mask(1, 1 << 40, 4), None);
        assert_eq!(hart_mask(u64::MAX, 0, 4), None);
        assert_eq!(hart_mask(1 << 63, 1, 4), None);
        assert_eq!(hart_mask(0, 1 << 40, 4), Some(0));
    }
}
