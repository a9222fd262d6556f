//! Test doubles, in one place: models of the hardware and of the host that the host tests drive the
//! real code through (the generic loop, policies and every backend's exit path). Compiled for tests and
//! for the fuzz targets (feature `fuzzing`, host only), never into an image.
#![forbid(unsafe_code)]

use std::vec::Vec;

#[cfg(target_arch = "x86_64")]
pub(crate) mod emu_cpu;
pub(crate) mod hart;
pub(crate) mod svm;
pub(crate) mod vmcs;

use libvmm_abi::BackendId;

use crate::backend::{Backend, BackendError};
use crate::exit::{Exit, Reply, VirtualMsr};
use crate::vm::Platform;
use crate::x86::msr;

/// A console that records bytes.
#[derive(Default)]
pub struct RecordingConsole(pub Vec<u8>);
impl embedded_io::ErrorType for RecordingConsole {
    type Error = core::convert::Infallible;
}
impl embedded_io::Write for RecordingConsole {
    fn write(&mut self, buf: &[u8]) -> Result<usize, Self::Error> {
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> Result<(), Self::Error> {
        Ok(())
    }
}

/// The host's local APIC as far as a pending host interrupt goes (a kick or the host timer): raised by
/// a hardware model (the SVM model: one that fires while the VMM handles an exit stays pending, see
/// `testing::svm`; the VMX model: the interrupt behind an external-interrupt exit, see
/// `testing::vmcs`), taken only by the platform's `clear_kick`, as on the machine, where the world
/// switch never takes one and the loop takes it on the host event it causes. Shared (`Arc`) by the
/// hardware model and the platform model.
#[derive(Default, Debug)]
pub struct HostIrqLine {
    pending: core::sync::atomic::AtomicBool,
    taken: core::sync::atomic::AtomicU32,
    acked_on_exit: core::sync::atomic::AtomicU32,
}

impl HostIrqLine {
    /// A host interrupt becomes pending.
    pub fn raise(&self) {
        self.pending
            .store(true, core::sync::atomic::Ordering::Relaxed);
    }
    pub fn pending(&self) -> bool {
        self.pending.load(core::sync::atomic::Ordering::Relaxed)
    }
    /// Host interrupts the VMM took.
    pub fn taken(&self) -> u32 {
        self.taken.load(core::sync::atomic::Ordering::Relaxed)
    }
    /// VMX "acknowledge interrupt on exit": the CPU takes the pending interrupt itself at the exit
    /// (its vector into the exit information; the VMM then owes only the EOI).
    pub fn ack_on_exit(&self) {
        if self
            .pending
            .swap(false, core::sync::atomic::Ordering::Relaxed)
        {
            self.acked_on_exit
                .fetch_add(1, core::sync::atomic::Ordering::Relaxed);
        }
    }
    /// Host interrupts the CPU acknowledged on a VM exit (none in libvmm's configuration).
    pub fn acked_on_exit(&self) -> u32 {
        self.acked_on_exit
            .load(core::sync::atomic::Ordering::Relaxed)
    }
    /// Interrupts on for an instant: a pending one is taken (its stub acknowledges it), else nothing.
    fn take(&self) {
        if self
            .pending
            .swap(false, core::sync::atomic::Ordering::Relaxed)
        {
            self.taken
                .fetch_add(1, core::sync::atomic::Ordering::Relaxed);
        }
    }
}

#[derive(Default)]
pub struct ModelPlatform {
    pub console: RecordingConsole,
    /// What `time_limit_exceeded` answers (the limit in ms once "passed").
    pub limit_passed: Option<u64>,
    /// The guest TSC: advanced by `sleep_until` and by tests.
    pub tsc: std::cell::Cell<u64>,
    /// Every `arm_guest_timer` call and every `sleep_until` deadline.
    pub armed: Vec<Option<u64>>,
    pub slept: Vec<u64>,
    /// What the host's entropy source gives (`None`: no source).
    pub entropy: Option<u64>,
    /// Every vCPU kicked (host IPI), in order.
    pub kicks: std::cell::RefCell<Vec<usize>>,
    /// The host interrupt line `clear_kick` takes from (shared with a hardware model that raises it).
    pub host_irq: std::sync::Arc<HostIrqLine>,
    /// `clear_kick` calls.
    pub clear_kicks: std::cell::Cell<u32>,
    /// `idle` calls (waits for a kick), and after how many of them the time limit (ms) has passed.
    pub idles: std::cell::Cell<u32>,
    pub limit_after_idles: Option<(u32, u64)>,
}
impl Platform for ModelPlatform {
    fn kick(&self, cpu: usize) {
        self.kicks.borrow_mut().push(cpu);
    }
    fn clear_kick(&mut self) {
        self.clear_kicks.set(self.clear_kicks.get() + 1);
        self.host_irq.take();
    }
    type Console = RecordingConsole;
    fn console(&mut self) -> &mut RecordingConsole {
        &mut self.console
    }
    fn host_cpuid(&self, _: u32, _: u32) -> [u32; 4] {
        [u32::MAX; 4]
    }
    fn clock_ns(&self, _: u64) -> Option<u64> {
        Some(42)
    }
    fn entropy(&mut self) -> Option<u64> {
        self.entropy
    }
    fn time_limit_exceeded(&self) -> Option<u64> {
        match self.limit_after_idles {
            Some((n, ms)) if self.idles.get() >= n => Some(ms),
            _ => self.limit_passed,
        }
    }
    fn idle(&mut self) {
        self.idles.set(self.idles.get() + 1);
    }
    fn guest_tsc(&self) -> u64 {
        self.tsc.get()
    }
    fn arm_guest_timer(&mut self, deadline: Option<u64>) {
        self.armed.push(deadline);
    }
    fn sleep_until(&mut self, deadline: u64) {
        self.slept.push(deadline);
        self.tsc.set(self.tsc.get().max(deadline));
    }
    /// The last armed guest deadline (the model has no time limit deadline of its own).
    fn host_deadline(&self) -> Option<u64> {
        self.armed.last().copied().flatten()
    }
}

/// vCPU `me` of a VM of `n` vCPUs over `mem` (at guest address `base`) on the model platform, with its
/// own guest-SMP state (leaked: it lives as long as the test); the start of every guest-SMP test.
pub fn smp_vm(base: u64, mem: &mut [u8], n: usize, me: usize) -> crate::vm::Vm<'_, ModelPlatform> {
    let shared: &'static crate::smp::Shared =
        std::boxed::Box::leak(std::boxed::Box::new(crate::smp::Shared::new()));
    shared.publish(n);
    let mut vm = crate::vm::Vm::new(
        crate::guest_mem::GuestMemory::new(base, mem),
        ModelPlatform::default(),
    );
    vm.smp = shared;
    vm.cpu = me;
    vm.cpus = n as u32;
    vm
}

/// A backend that plays a script of exits and records the replies.
pub struct ScriptedBackend {
    pub script: Vec<Exit>,
    pub replies: Vec<(Exit, Reply)>,
    pub last: Option<Exit>,
}
impl crate::backend::NoGuestInterrupts for ScriptedBackend {}
impl Backend for ScriptedBackend {
    const ID: BackendId = BackendId::Svm;
    fn run(&mut self, _mem: &crate::guest_mem::GuestMemory<'_>) -> Result<Exit, BackendError> {
        if self.script.is_empty() {
            return Err(BackendError::EntryFailed {
                code: 0,
                what: "script ended",
            });
        }
        let e = self.script.remove(0);
        self.last = Some(e);
        Ok(e)
    }
    fn reply(&mut self, reply: Reply) {
        self.replies
            .push((self.last.expect("reply without an exit"), reply));
    }
    fn virtual_msr(&self, _: VirtualMsr) -> Option<u64> {
        Some(msr::EFER_LME | msr::EFER_LMA | msr::EFER_SVME)
    }
}

/// A backend with the virtual x2APIC's delivery half (SVM and VMX alike, as the loop sees them): plays
/// a script of exits, each with the guest's interruptibility at that exit, and records what the loop
/// asked of it: the vectors injected (with the index of the exit they follow), the interrupt-window
/// requests, and cleared interrupt shadows.
#[derive(Default)]
pub struct IrqBackend {
    pub script: Vec<(Exit, crate::x86::apic::delivery::Interruptibility)>,
    pub replies: Vec<(Exit, Reply)>,
    /// (exits run so far, vector): what was queued for the next entry, and after which exit.
    pub injected: Vec<(usize, u8)>,
    /// (exits run so far, open).
    pub windows: Vec<(usize, bool)>,
    pub shadows_cleared: usize,
    /// (exits run so far, host deadline, now): what the loop told the backend to keep time for.
    pub host_deadlines: Vec<(usize, Option<u64>, u64)>,
    pub exits: usize,
    pub now: crate::x86::apic::delivery::Interruptibility,
    pub last: Option<Exit>,
}
impl Backend for IrqBackend {
    const ID: BackendId = BackendId::Svm;
    const VIRTUAL_APIC: bool = true;
    fn run(&mut self, _mem: &crate::guest_mem::GuestMemory<'_>) -> Result<Exit, BackendError> {
        if self.script.is_empty() {
            return Err(BackendError::EntryFailed {
                code: 0,
                what: "script ended",
            });
        }
        let (e, cpu) = self.script.remove(0);
        self.exits += 1;
        self.now = cpu;
        self.last = Some(e);
        Ok(e)
    }
    fn reply(&mut self, reply: Reply) {
        self.replies
            .push((self.last.expect("reply without an exit"), reply));
    }
    fn virtual_msr(&self, _: VirtualMsr) -> Option<u64> {
        Some(msr::EFER_LME | msr::EFER_LMA | msr::EFER_SVME)
    }
    fn clear_interrupt_shadow(&mut self) {
        self.now.shadow = false;
        self.shadows_cleared += 1;
    }
    fn set_host_deadline(&mut self, deadline: Option<u64>, now: u64) {
        self.host_deadlines.push((self.exits, deadline, now));
    }
}
impl crate::x86::apic::delivery::GuestInterrupts for IrqBackend {
    fn interruptibility(&self) -> crate::x86::apic::delivery::Interruptibility {
        self.now
    }
    fn event_queued(&self) -> bool {
        false
    }
    fn inject_interrupt(&mut self, vector: u8) {
        self.injected.push((self.exits, vector));
    }
    fn request_interrupt_window(&mut self, open: bool) {
        self.windows.push((self.exits, open));
    }
}
