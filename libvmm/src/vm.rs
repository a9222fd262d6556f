//! The VM as the run loop and the policies see it: generic per-VM state ([`Vm`]), the host services it
//! needs ([`Platform`]) and why a VM stops ([`StopReason`]). Below both the loop (`vcpu`) and the
//! policies (`policy/`), so neither imports the other for these.
#![forbid(unsafe_code)]
// The TDX image runs no guest: it uses the stop reasons of bring-up only.
#![cfg_attr(all(target_os = "none", feature = "tdx"), allow(dead_code))]

use libvmm_abi::stop::{self, StopCode};

use crate::backend::BackendError;
use crate::exit::Access;
use crate::guest_mem::GuestMemory;
use crate::loader::{GuestMap, Perm};

/// Host services the loop needs, provided by `arch` on the target and by models in tests.
pub(crate) trait Platform {
    type Console: embedded_io::Write;
    fn console(&mut self) -> &mut Self::Console;
    /// Runs the host's CPUID (x86; other architectures return zeros).
    fn host_cpuid(&self, leaf: u32, subleaf: u32) -> [u32; 4];
    /// Nanoseconds for a clock id, or `None` when the clock is unknown or not calibrated.
    /// 64 bits from the host's entropy source (the entropy hypercall), or `None` without one.
    fn entropy(&mut self) -> Option<u64> {
        None
    }
    fn clock_ns(&self, clock: u64) -> Option<u64>;
    /// The guest's time limit in milliseconds once it has run past it (`libvmm.timeout_ms=`), else
    /// `None`. Checked on host events (timer exits), which the platform arranges when a limit is set.
    fn time_limit_exceeded(&self) -> Option<u64> {
        None
    }

    /// The guest's TSC now (x86: the guest runs with no TSC offset, so it is the host's). The virtual
    /// x2APIC's `now`.
    fn guest_tsc(&self) -> u64 {
        0
    }

    /// Makes sure a host timer interrupt (a VM exit) comes no later than about `deadline` (guest TSC),
    /// or, with `None`, that no guest timer needs one. The time limit's own timer is unaffected.
    fn arm_guest_timer(&mut self, _deadline: Option<u64>) {}

    /// Halts the physical CPU until the guest TSC reaches `deadline` or the time limit passes (host timer
    /// interrupts wake it; it never spins through guest exits).
    fn sleep_until(&mut self, _deadline: u64) {}

    /// The earliest host deadline (guest TSC): the earlier of the armed guest timer and the time limit.
    fn host_deadline(&self) -> Option<u64> {
        None
    }

    /// The backend keeps time while the guest runs ([`crate::backend::Backend::set_host_deadline`]:
    /// VMX's preemption timer): the platform's own host timer then serves sleeps only.
    #[cfg_attr(not(feature = "vmx"), allow(dead_code))]
    fn guest_time_in_backend(&mut self) {}
    /// Sends the host IPI that forces vCPU `cpu`'s CPU out of guest mode (or wakes it from a wait), so it
    /// looks at what was posted for it in the shared state ([`crate::smp::Shared`]).
    fn kick(&self, _cpu: usize) {}

    /// Clears this CPU's pending host IPI (before looking at the shared state, then [`Platform::idle`]).
    fn clear_kick(&mut self) {}

    /// Waits for any host interrupt (a kick, the host timer): WFI / HLT with interrupts masked.
    fn idle(&mut self) {}
}

/// Generic per-VM state the loop and the policies work on.
pub(crate) struct Vm<'m, P: Platform> {
    pub mem: GuestMemory<'m>,
    pub platform: P,
    /// This vCPU's number (the guest's hart id / APIC id), and the state every vCPU shares.
    pub cpu: usize,
    pub smp: &'m crate::smp::Shared,
    /// The guest's vCPU count (CPUID topology; set by the boot when it publishes the VM).
    pub cpus: u32,
    /// VM exits handled so far.
    pub exits: u64,
    /// Exits by reason (printed with `libvmm.stats=1`).
    pub stats: ExitStats,
    /// How many denied port accesses were logged (logging stops at [`crate::config::IO_LOG_LIMIT`]).
    pub io_logged: u32,
    /// What the nested tables allow where in guest memory (W^X); the backends build their tables from
    /// it. [`Vm::new`] starts with all of `mem` read+write and nothing executable; the boot sets the
    /// payload's map.
    pub map: GuestMap,
    /// Zero on first touch: what has become of the blocks `map` deferred, one state for the whole VM
    /// (every vCPU's `Vm` holds the same; see `lazy.rs`). [`Vm::new`] starts with the machine's
    /// [`crate::lazy::VM_LAZY`], which the boot arms; tests give each VM their own.
    pub lazy: &'m crate::lazy::LazyBlocks,
    /// The instruction emulator and what it drives (x86).
    #[cfg(target_arch = "x86_64")]
    pub emu: EmuState,
    /// The vCPU's interrupt state (x86 backends: the virtual x2APIC; see [`Irq`]).
    pub irq: Irq,
}

/// The x86 VM's instruction emulator, its devices and its virtual PMU: one per VM, in generic code,
/// used by both x86 backends through [`crate::x86::emulate::EmuCpu`].
#[cfg(target_arch = "x86_64")]
pub(crate) struct EmuState {
    pub emulator: crate::x86::emulate::Emulator<{ crate::config::EMU_DEVICE_RANGES }>,
    /// `libvmm.force_emulation=1`: the backend intercepts #UD and the loop honours the prefix.
    pub force: bool,
    /// The virtual PMU (enabled for VMX guests by their bring-up).
    pub pmu: crate::x86::pmu::Pmu,
    /// The test register block's scratch register (`policy/mmio.rs`).
    pub test_scratch: u64,
    /// Instructions the emulator retired, and MMIO accesses and string I/O elements it carried out
    /// (printed with `libvmm.stats=1`).
    pub retired: u64,
    pub mmio: u64,
    pub string_io: u64,
}

#[cfg(target_arch = "x86_64")]
impl EmuState {
    /// An emulator for a guest with `maxphyaddr` physical-address bits, with the test register block
    /// registered as device memory.
    pub fn new(maxphyaddr: u8, force: bool, pmu: crate::x86::pmu::Pmu) -> Self {
        let mut emulator = crate::x86::emulate::Emulator::new(maxphyaddr);
        // One range into an empty table: cannot fail (config asserts room for it).
        let _ = emulator.add_device(
            libvmm_abi::layout::x86_64::TEST_DEVICE_BASE,
            crate::config::TEST_DEVICE_SIZE,
        );
        Self {
            emulator,
            force,
            pmu,
            test_scratch: 0,
            retired: 0,
            mmio: 0,
            string_io: 0,
        }
    }

    /// Prints the emulator's counts (with `libvmm.stats=1`), when it ran at all.
    #[cfg(target_os = "none")] // the boot's stats report
    pub fn print<W: embedded_io::Write>(&self, w: &mut W) {
        if self.retired | self.mmio | self.string_io != 0 {
            crate::vmm_print!(
                w,
                "libvmm: stats: emulated {} instructions, {} mmio accesses, {} string i/o elements\n",
                self.retired,
                self.mmio,
                self.string_io
            );
        }
    }
}

/// One vCPU's guest-interrupt state, owned by the generic layer: the virtual x2APIC model
/// (`x86::apic`, driven by `vcpu` and `policy::apic` for the x86 backends; unused on RISC-V, whose
/// timer is the SBI's) and whether the backend has an interrupt window open.
pub(crate) struct Irq {
    pub apic: crate::x86::apic::VirtualApic,
    /// An interrupt-window exit is requested (SVM V_IRQ + VINTR, VMX interrupt-window exiting).
    pub window_open: bool,
    /// The guest deadline the host timer was last armed for.
    pub armed: Option<u64>,
}

impl Irq {
    fn new(maxphyaddr: u8) -> Self {
        let min_period =
            crate::x86::apic::VirtualApic::min_period_ticks(crate::config::APIC_ASSUMED_TSC_KHZ);
        Self {
            apic: crate::x86::apic::VirtualApic::new(0, true, maxphyaddr, min_period),
            window_open: false,
            armed: None,
        }
    }

    /// Whether the loop must look at delivery before the next entry: one test of IRR (and of the
    /// window flag) when nothing is pending.
    #[inline(always)]
    pub fn needs_attention(&self) -> bool {
        self.apic.has_pending() || self.window_open
    }
}

impl<'m, P: Platform> Vm<'m, P> {
    pub fn new(mem: GuestMemory<'m>, platform: P) -> Self {
        let map = GuestMap::whole(mem.base(), mem.size(), Perm::ReadWrite);
        // The guest's physical-address width bounds IA32_APIC_BASE's address bits.
        let maxphyaddr = platform.host_cpuid(0x8000_0008, 0)[0] as u8;
        Self {
            irq: Irq::new(maxphyaddr),
            mem,
            platform,
            cpu: 0,
            smp: &crate::smp::SHARED,
            cpus: 1,
            exits: 0,
            stats: ExitStats::default(),
            io_logged: 0,
            map,
            lazy: &crate::lazy::VM_LAZY,
            #[cfg(target_arch = "x86_64")]
            emu: EmuState::new(48, false, crate::x86::pmu::Pmu::new(false, 0)),
        }
    }
}

/// Where the asking vCPU sits: its x2APIC ID (= its vCPU number) and how many vCPUs the guest has
/// (`libvmm.cpus=N` limits it). Leaf 1 EBX[31:24] / [23:16] and leaves 0xB / 0x1F follow it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Topology {
    pub id: u32,
    pub count: u32,
}

impl Topology {
    /// One vCPU, ID 0.
    #[cfg_attr(not(test), allow(dead_code))]
    pub const ONE: Self = Self { id: 0, count: 1 };
}

impl<P: Platform> Vm<'_, P> {
    /// The vCPU's interrupt state after INIT (x86 guest SMP: each start of an AP): a fresh virtual
    /// x2APIC with x2APIC ID = the vCPU's number (BSP flag on vCPU 0 only), no window, no timer.
    #[cfg_attr(not(all(target_os = "none", feature = "svm")), allow(dead_code))]
    pub fn reset_apic(&mut self, maxphyaddr: u8) {
        let min_period =
            crate::x86::apic::VirtualApic::min_period_ticks(crate::config::APIC_ASSUMED_TSC_KHZ);
        self.irq = Irq {
            apic: crate::x86::apic::VirtualApic::new(
                self.cpu as u32,
                self.cpu == 0,
                maxphyaddr,
                min_period,
            ),
            window_open: false,
            armed: None,
        };
        self.platform.arm_guest_timer(None);
    }

    /// This vCPU's place in the guest's CPUID topology.
    #[inline(always)]
    pub fn topology(&self) -> Topology {
        Topology {
            id: self.cpu as u32,
            count: self.cpus,
        }
    }
}

/// The exit reasons the statistics name, in [`EXIT_REASONS`]' order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ExitReason {
    Cpuid,
    /// x86 VMMCALL/VMCALL; on RISC-V every environment call from VS (SBI calls and libvmm hypercalls
    /// are one exit reason there, scause 10). Derived, never added.
    Hypercall,
    MsrRead,
    MsrWrite,
    Io,
    GuestMemoryFault,
    Halt,
    VirtInsn,
    IllegalInsn,
    TripleFault,
    HostEvent,
    /// x86 MOV to CR0/CR4 (and CLTS, LMSW) the VMM checks.
    CrWrite,
    Xsetbv,
    Unknown,
    /// x86: a #UD intercepted for forced emulation (`libvmm.force_emulation=1`).
    UdIntercept,
}

/// How the statistics name each [`ExitReason`].
pub(crate) const EXIT_REASONS: [&str; 15] = [
    "cpuid",
    if cfg!(target_arch = "riscv64") {
        "ecall"
    } else {
        "hypercall"
    },
    "msr-read",
    "msr-write",
    "io",
    "guest-memory-fault",
    "halt",
    "virt-insn",
    "illegal-insn",
    "triple-fault",
    "host-event",
    "cr-write",
    "xsetbv",
    "unknown",
    "ud",
];

/// VM exits by reason, printed before the stop line when `libvmm.stats=1` ([`ExitStats::print`]).
///
/// Always counted, at no cost on the hot path: each arm of `vcpu::handle` adds one to its reason's
/// counter, except the hypercall and SBI arms: those exits (x86 VMMCALL/VMCALL; RISC-V ecall from VS,
/// whether SBI or libvmm hypercall) are the loop's total (`Vm::exits`, which it keeps anyway) minus
/// every other reason. Measured with `cargo xtask bench`: counting in the hypercall or SBI arm, or
/// with an index computed from the exit, cost RISC-V 2-4 emulated instructions per exit; a second,
/// counting copy of the loop made the compiler keep the exit handling out of line (~330 more). Per VM
/// for now: one vCPU.
#[derive(Clone, Debug, Default)]
pub(crate) struct ExitStats {
    counts: [u64; EXIT_REASONS.len()],
}

impl ExitStats {
    /// Counts one exit of `reason` (never called for hypercalls and SBI calls, which are derived).
    #[inline(always)]
    pub fn add(&mut self, reason: ExitReason) {
        self.counts[reason as usize] += 1;
    }

    /// (reason, count) for every reason seen at least once, given the VM's total.
    pub fn seen(&self, total: u64) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        let others = self.counts.iter().fold(0u64, |a, c| a.wrapping_add(*c));
        let hypercalls = total.wrapping_sub(others);
        EXIT_REASONS
            .iter()
            .enumerate()
            .map(move |(i, n)| {
                let c = if i == ExitReason::Hypercall as usize {
                    hypercalls
                } else {
                    self.counts[i]
                };
                (*n, c)
            })
            .filter(|(_, c)| *c != 0)
    }

    /// One line per exit reason seen, then the total: `libvmm: stats: exit <reason> <count>`,
    /// `libvmm: stats: total <n> exits`.
    pub fn print<W: embedded_io::Write>(&self, total: u64, w: &mut W) {
        for (reason, n) in self.seen(total) {
            crate::vmm_print!(w, "libvmm: stats: exit {reason} {n}\n");
        }
        crate::vmm_print!(w, "libvmm: stats: total {total} exits\n");
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
        /// What guest memory allows at `gpa` (a W^X violation), or `None`: outside guest memory.
        mapped: Option<Perm>,
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
    /// A `libvmm.` option on the command line that the image cannot honour.
    Option(crate::cmdline::Refused<'static>),
    /// The guest's memory cannot be sized on this machine (too little RAM, or `libvmm.mem=` asks for
    /// more than there is: both sizes named).
    GuestMemory(crate::loader::window::SizeError),
    /// The guest ran past its time limit (milliseconds).
    TimeLimit {
        ms: u64,
    },
    /// Not a VM stop: this vCPU stopped itself (SBI `hart_stop`) and waits for a start request; the
    /// other vCPUs go on.
    VcpuOff,
    /// Another vCPU stopped the VM (its reason is the VM's; this vCPU was forced out).
    StoppedElsewhere,
    /// The instruction emulator could not go on (an access outside guest memory and every device, a
    /// mode it does not emulate): the reason names it.
    #[cfg(target_arch = "x86_64")]
    Emulation(crate::x86::emulate::Stop),
}

impl StopReason {
    /// The stop code the image exits with.
    pub fn code(&self) -> u8 {
        match self {
            Self::PayloadExit(s) => stop::payload(*s),
            Self::PayloadAbort => StopCode::PayloadAbort as u8,
            Self::GuestMemoryViolation { .. } => StopCode::GuestMemoryViolation as u8,
            Self::TripleFault => StopCode::TripleFault as u8,
            Self::GuestHalted
            | Self::UnhandledExit { .. }
            | Self::TimeLimit { .. }
            | Self::VcpuOff
            | Self::StoppedElsewhere => StopCode::GuestError as u8,
            #[cfg(target_arch = "x86_64")]
            Self::Emulation(_) => StopCode::GuestError as u8,
            Self::Backend(BackendError::ConsistencyCheck { .. }) => {
                StopCode::ConsistencyCheck as u8
            }
            Self::Backend(_) => StopCode::BackendError as u8,
            Self::Unsupported(_) | Self::Option(_) => StopCode::Unsupported as u8,
            Self::Platform(_) | Self::GuestMemory(_) => StopCode::PlatformError as u8,
        }
    }
}

impl core::fmt::Display for StopReason {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::PayloadExit(s) => write!(f, "payload exited with status {s}"),
            Self::PayloadAbort => write!(f, "payload aborted"),
            Self::GuestMemoryViolation {
                gpa,
                access,
                mapped,
            } => match mapped {
                None => write!(
                    f,
                    "guest memory violation: {} of guest-physical {gpa:#x} outside guest memory",
                    access.name()
                ),
                Some(p) => write!(
                    f,
                    "guest memory violation: {} of guest-physical {gpa:#x}, mapped {} (W^X)",
                    access.name(),
                    p.name()
                ),
            },
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
            Self::Option(refused) => write!(f, "unsupported: {refused}"),
            Self::GuestMemory(e) => write!(f, "platform error: {e}"),
            Self::TimeLimit { ms } => write!(f, "guest exceeded its time limit of {ms} ms"),
            Self::VcpuOff => write!(f, "vCPU stopped itself"),
            Self::StoppedElsewhere => write!(f, "stopped by another vCPU"),
            #[cfg(target_arch = "x86_64")]
            Self::Emulation(s) => write!(f, "instruction emulation stopped: {s}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::loader::window::SizeError;

    /// A guest memory the machine cannot give stops the boot as a platform error naming both sizes.
    #[test]
    fn a_guest_memory_sizing_error_is_a_platform_stop_naming_both_sizes() {
        let stop = StopReason::GuestMemory(SizeError::TooBig {
            asked: 256 << 20,
            available: 94 << 20,
        });
        assert_eq!(stop.code(), StopCode::PlatformError as u8);
        let line = std::format!("{stop}");
        assert!(
            line.contains("256 MiB") && line.contains("94 MiB"),
            "{line}"
        );
    }
}
