//! The one generic vCPU run loop: enter the guest through the backend, turn its exit into a policy
//! decision, reply or stop. Every backend (SVM, VMX, RISC-V H, TDX) runs through this same loop.
#![forbid(unsafe_code)]

use libvmm_abi::stop::{self, StopCode};

use crate::backend::{Backend, BackendError};
use crate::exit::{Access, Exit, Fault, Output, Reply};
use crate::guest_mem::GuestMemory;
use crate::policy::{cpuid, hypercall, io, msr, sbi};

/// Host services the loop needs, provided by `arch` on the target and by models in tests.
pub(crate) trait Platform {
    type Console: embedded_io::Write;
    fn console(&mut self) -> &mut Self::Console;
    /// Runs the host's CPUID (x86; other architectures return zeros).
    fn host_cpuid(&self, leaf: u32, subleaf: u32) -> [u32; 4];
    /// Nanoseconds for a clock id, or `None` when the clock is unknown or not calibrated.
    fn clock_ns(&self, clock: u64) -> Option<u64>;
    /// The guest's time limit in milliseconds once it has run past it (`libvmm.timeout_ms=`), else
    /// `None`. Checked on host events (timer exits), which the platform arranges when a limit is set.
    fn time_limit_exceeded(&self) -> Option<u64> {
        None
    }
}

/// Generic per-VM state the loop and the policies work on.
pub(crate) struct Vm<'m, P: Platform> {
    pub mem: GuestMemory<'m>,
    pub platform: P,
    /// VM exits handled so far.
    pub exits: u64,
    /// How many denied port accesses were logged (logging stops at [`IO_LOG_LIMIT`]).
    pub io_logged: u32,
}

/// Denied I/O accesses printed per VM before the VMM goes quiet about them (a hostile guest must not be
/// able to flood the console).
pub const IO_LOG_LIMIT: u32 = 4;

impl<'m, P: Platform> Vm<'m, P> {
    pub fn new(mem: GuestMemory<'m>, platform: P) -> Self {
        Self {
            mem,
            platform,
            exits: 0,
            io_logged: 0,
        }
    }
}

/// Why a VM stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopReason {
    PayloadExit(i64),
    PayloadAbort,
    GuestMemoryViolation {
        gpa: u64,
        access: Access,
    },
    TripleFault,
    /// HLT/WFI with nothing that could ever wake the guest.
    GuestHalted,
    UnhandledExit {
        code: u64,
        info1: u64,
        info2: u64,
    },
    Backend(BackendError),
    /// The CPU or firmware lacks something the backend needs (the reason names the bit or leaf).
    Unsupported(&'static str),
    /// A boot-time platform problem (memory map, device tree, payload does not fit).
    Platform(&'static str),
    /// The guest ran past its time limit (milliseconds).
    TimeLimit {
        ms: u64,
    },
}

impl StopReason {
    /// The stop code the image exits with.
    pub fn code(&self) -> u8 {
        match self {
            Self::PayloadExit(s) => stop::payload(*s),
            Self::PayloadAbort => StopCode::PayloadAbort as u8,
            Self::GuestMemoryViolation { .. } => StopCode::GuestMemoryViolation as u8,
            Self::TripleFault => StopCode::TripleFault as u8,
            Self::GuestHalted | Self::UnhandledExit { .. } | Self::TimeLimit { .. } => {
                StopCode::GuestError as u8
            }
            Self::Backend(BackendError::ConsistencyCheck { .. }) => {
                StopCode::ConsistencyCheck as u8
            }
            Self::Backend(_) => StopCode::BackendError as u8,
            Self::Unsupported(_) => StopCode::Unsupported as u8,
            Self::Platform(_) => StopCode::PlatformError as u8,
        }
    }
}

impl core::fmt::Display for StopReason {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::PayloadExit(s) => write!(f, "payload exited with status {s}"),
            Self::PayloadAbort => write!(f, "payload aborted"),
            Self::GuestMemoryViolation { gpa, access } => {
                write!(
                    f,
                    "guest memory violation: {} of guest-physical {gpa:#x} outside guest memory",
                    access.name()
                )
            }
            Self::TripleFault => write!(f, "guest triple fault (shutdown)"),
            Self::GuestHalted => write!(f, "guest halted with no interrupt source to wake it"),
            Self::UnhandledExit { code, info1, info2 } => {
                write!(f, "unhandled exit {code:#x} (info {info1:#x}, {info2:#x})")
            }
            Self::Backend(BackendError::EntryFailed { code, what }) => {
                write!(f, "VM entry failed: {what} ({code:#x})")
            }
            Self::Backend(BackendError::ConsistencyCheck { what }) => {
                write!(f, "VM-entry consistency check failed: {what}")
            }
            Self::Backend(BackendError::Firmware { code, what }) => {
                write!(f, "firmware error: {what} ({code:#x})")
            }
            Self::Unsupported(what) => write!(f, "unsupported: {what}"),
            Self::Platform(what) => write!(f, "platform error: {what}"),
            Self::TimeLimit { ms } => write!(f, "guest exceeded its time limit of {ms} ms"),
        }
    }
}

/// Decides the reply to one exit, or that the VM stops.
///
/// The hot exits (CPUID, hypercalls, SBI calls) hand their reply to the backend from their own arm: the
/// compiler then specialises the backend's `reply` for the one output each produces, instead of joining
/// every arm into one `Reply` value and taking it apart again (about 20 emulated instructions per exit).
pub(crate) fn handle<B: Backend, P: Platform>(
    exit: Exit,
    cpu: &mut B,
    vm: &mut Vm<'_, P>,
) -> Result<(), StopReason> {
    let reply = match exit {
        Exit::Cpuid { leaf, subleaf } => {
            let host = |l, s| vm.platform.host_cpuid(l, s);
            cpu.reply(Reply::Complete(Output::Cpuid(cpuid::answer(
                leaf,
                subleaf,
                B::ID,
                host,
            ))));
            return Ok(());
        }
        Exit::Hypercall { nr, args } => match hypercall::dispatch(nr, args, vm) {
            hypercall::Outcome::Return(v) => {
                cpu.reply(Reply::Complete(Output::Hypercall(v)));
                return Ok(());
            }
            hypercall::Outcome::Stop(s) => return Err(s),
        },
        Exit::Sbi { ext, fid, ref args } => {
            let r = sbi::decide(ext, fid, args, vm)?;
            cpu.reply(r);
            return Ok(());
        }
        Exit::MsrRead { msr } => msr::read(msr, |v| cpu.virtual_msr(v)),
        Exit::MsrWrite { msr, value } => msr::write(msr, value, |v| cpu.virtual_msr(v)),
        Exit::Io(access) => {
            if vm.io_logged < IO_LOG_LIMIT {
                vm.io_logged += 1;
                crate::vmm_print!(
                    vm.platform.console(),
                    "libvmm: denied {} of port {:#x} (size {})\n",
                    if access.write { "write" } else { "read" },
                    access.port,
                    access.size
                );
            }
            io::decide(&access)
        }
        Exit::GuestMemoryFault { gpa, access } => {
            return Err(StopReason::GuestMemoryViolation { gpa, access })
        }
        Exit::Halt => return Err(StopReason::GuestHalted),
        Exit::VirtInsn(_) | Exit::IllegalInsn { .. } => Reply::Inject(Fault::InvalidOpcode),
        Exit::TripleFault => return Err(StopReason::TripleFault),
        Exit::HostEvent => match vm.platform.time_limit_exceeded() {
            Some(ms) => return Err(StopReason::TimeLimit { ms }),
            None => Reply::Resume,
        },
        Exit::Unknown { code, info1, info2 } => {
            return Err(StopReason::UnhandledExit { code, info1, info2 })
        }
    };
    cpu.reply(reply);
    Ok(())
}

/// Runs the vCPU until the VM stops.
pub(crate) fn run<B: Backend, P: Platform>(cpu: &mut B, vm: &mut Vm<'_, P>) -> StopReason {
    loop {
        let exit = match cpu.run() {
            Ok(exit) => exit,
            Err(e) => return StopReason::Backend(e),
        };
        vm.exits += 1;
        if let Err(stop) = handle(exit, cpu, vm) {
            return stop;
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::exit::{IoAccess, VirtInsn, VirtualMsr};
    use libvmm_abi::{BackendId, Errno, Hypercall};
    use std::vec::Vec;

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
    }
    impl Platform for ModelPlatform {
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
    }

    /// A backend that plays a script of exits and records the replies.
    pub struct ScriptedBackend {
        pub script: Vec<Exit>,
        pub replies: Vec<(Exit, Reply)>,
        pub last: Option<Exit>,
    }
    impl Backend for ScriptedBackend {
        const ID: BackendId = BackendId::Svm;
        fn run(&mut self) -> Result<Exit, BackendError> {
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

    const BASE: u64 = 0x200_0000;

    fn run_script(
        script: Vec<Exit>,
        mem: &mut [u8],
    ) -> (StopReason, ScriptedBackend, Vec<u8>, u64) {
        let mut cpu = ScriptedBackend {
            script,
            replies: Vec::new(),
            last: None,
        };
        let mut vm = Vm::new(GuestMemory::new(BASE, mem), ModelPlatform::default());
        let stop = run(&mut cpu, &mut vm);
        (stop, cpu, vm.platform.console.0, vm.exits)
    }

    fn hc(nr: Hypercall, a: [u64; 4]) -> Exit {
        Exit::Hypercall {
            nr: nr as u64,
            args: a,
        }
    }

    #[test]
    fn write_hypercall_copies_guest_bytes_to_the_console_in_one_exit() {
        let mut mem = vec![0u8; 0x1000];
        mem[0x10..0x15].copy_from_slice(b"hello");
        let (stop, cpu, out, exits) = run_script(
            vec![
                hc(Hypercall::Write, [1, BASE + 0x10, 5, 0]),
                hc(Hypercall::Exit, [0; 4]),
            ],
            &mut mem,
        );
        assert_eq!(stop, StopReason::PayloadExit(0));
        assert_eq!(stop.code(), 0);
        assert_eq!(out, b"hello");
        assert_eq!(cpu.replies[0].1, Reply::Complete(Output::Hypercall(5)));
        assert_eq!(exits, 2);
    }

    #[test]
    fn hostile_write_arguments_get_error_codes_and_the_vm_keeps_running() {
        let mut mem = vec![0u8; 0x1000];
        let script = vec![
            hc(Hypercall::Write, [1, 0x10_0000, 16, 0]), // VMM image address
            hc(Hypercall::Write, [1, BASE + 0x10, u64::MAX, 0]), // overflowing length
            hc(Hypercall::Write, [1, u64::MAX, 2, 0]),   // wrapping pointer
            hc(Hypercall::Write, [1, BASE + 0xff0, 0x11, 0]), // straddles the end
            hc(Hypercall::Write, [7, BASE, 1, 0]),       // bad fd
            Exit::Hypercall {
                nr: 0xdead,
                args: [0; 4],
            }, // unknown number
            hc(Hypercall::Exit, [3, 0, 0, 0]),
        ];
        let (stop, cpu, out, _) = run_script(script, &mut mem);
        assert_eq!(stop, StopReason::PayloadExit(3));
        let rets: Vec<Reply> = cpu.replies.iter().map(|r| r.1).collect();
        let f = Reply::Complete(Output::Hypercall(Errno::Fault.as_result()));
        assert_eq!(rets[..4], [f, f, f, f]);
        assert_eq!(
            rets[4],
            Reply::Complete(Output::Hypercall(Errno::Badf.as_result()))
        );
        assert_eq!(
            rets[5],
            Reply::Complete(Output::Hypercall(Errno::Nosys.as_result()))
        );
        assert!(out.is_empty());
    }

    #[test]
    fn fatal_exits_stop_with_distinct_codes() {
        let mut mem = vec![0u8; 0x100];
        let gmf = Exit::GuestMemoryFault {
            gpa: 0x10_0000,
            access: Access::Write,
        };
        let (stop, ..) = run_script(vec![gmf], &mut mem);
        assert_eq!(
            stop,
            StopReason::GuestMemoryViolation {
                gpa: 0x10_0000,
                access: Access::Write
            }
        );
        assert_eq!(stop.code(), StopCode::GuestMemoryViolation as u8);
        let (stop, ..) = run_script(vec![Exit::TripleFault], &mut mem);
        assert_eq!(stop.code(), StopCode::TripleFault as u8);
        let (stop, ..) = run_script(vec![Exit::Halt], &mut mem);
        assert_eq!(stop, StopReason::GuestHalted);
        let (stop, ..) = run_script(
            vec![Exit::Unknown {
                code: 0x55,
                info1: 1,
                info2: 2,
            }],
            &mut mem,
        );
        assert_eq!(stop.code(), StopCode::GuestError as u8);
        let (stop, ..) = run_script(vec![hc(Hypercall::Abort, [0; 4])], &mut mem);
        assert_eq!(stop.code(), StopCode::PayloadAbort as u8);
        let (stop, ..) = run_script(vec![], &mut mem);
        assert_eq!(stop.code(), StopCode::BackendError as u8);
    }

    #[test]
    fn virtualization_instructions_are_ud_and_io_is_denied() {
        let mut mem = vec![0u8; 0x100];
        let script = vec![
            Exit::VirtInsn(VirtInsn::Vmrun),
            Exit::Io(IoAccess {
                port: 0xf4,
                size: 4,
                write: true,
                value: 0x10,
                string: false,
            }),
            Exit::MsrWrite {
                msr: msr::MSR_EFER,
                value: msr::EFER_LME | msr::EFER_LMA | msr::EFER_SVME,
            },
            Exit::MsrRead { msr: msr::MSR_EFER },
            hc(Hypercall::ExitCount, [0; 4]),
            hc(Hypercall::Exit, [0; 4]),
        ];
        let (_, cpu, out, _) = run_script(script, &mut mem);
        assert_eq!(cpu.replies[0].1, Reply::Inject(Fault::InvalidOpcode));
        assert_eq!(cpu.replies[1].1, Reply::Complete(Output::Nothing));
        assert_eq!(cpu.replies[2].1, Reply::Inject(Fault::GeneralProtection(0)));
        assert_eq!(
            cpu.replies[3].1,
            Reply::Complete(Output::MsrValue(msr::EFER_LME | msr::EFER_LMA))
        );
        assert_eq!(cpu.replies[4].1, Reply::Complete(Output::Hypercall(5)));
        assert!(String::from_utf8(out)
            .unwrap()
            .contains("denied write of port 0xf4"));
    }

    #[test]
    fn io_logging_is_rate_limited() {
        let mut mem = vec![0u8; 0x100];
        let mut script: Vec<Exit> = (0..100)
            .map(|_| {
                Exit::Io(IoAccess {
                    port: 0x80,
                    size: 1,
                    write: true,
                    value: 0,
                    string: false,
                })
            })
            .collect();
        script.push(hc(Hypercall::Exit, [0; 4]));
        let (_, _, out, _) = run_script(script, &mut mem);
        assert_eq!(
            String::from_utf8(out).unwrap().lines().count(),
            IO_LOG_LIMIT as usize
        );
    }
}
