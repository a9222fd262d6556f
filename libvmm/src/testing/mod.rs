//! Test doubles, in one place: models of the hardware and of the host that the host tests drive the
//! real code through (the generic loop, policies and every backend's exit path). Compiled for tests and
//! for the fuzz targets (feature `fuzzing`, host only), never into an image.
#![forbid(unsafe_code)]

use std::vec::Vec;

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
    /// Every vCPU kicked (host IPI), in order.
    pub kicks: std::cell::RefCell<Vec<usize>>,
}
impl Platform for ModelPlatform {
    fn kick(&self, cpu: usize) {
        self.kicks.borrow_mut().push(cpu);
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
    fn time_limit_exceeded(&self) -> Option<u64> {
        self.limit_passed
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
}

/// A backend that plays a script of exits and records the replies.
pub struct ScriptedBackend {
    pub script: Vec<Exit>,
    pub replies: Vec<(Exit, Reply)>,
    pub last: Option<Exit>,
}
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
