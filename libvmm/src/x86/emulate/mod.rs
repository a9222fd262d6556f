//! The x86 instruction emulator: one per VM, shared by the SVM and VMX backends (which implement
//! [`GuestCpu`] over their VMCB / VMCS and the saved GPRs). It runs a guest instruction in software when the
//! hardware cannot: a nested page fault on a device range (MMIO), string port I/O, and the instruction
//! after libvmm's forced-emulation prefix ([`libvmm_abi::FORCED_EMULATION_PREFIX`]).
//!
//! **Decoder.** Instructions are decoded by `yaxpeax-x86` (`long_mode::InstDecoder`), built with
//! `default-features = false`: `no_std`, no `alloc`, no formatting, no tables built at run time, so it fits
//! a VMM without a heap. `iced-x86` was evaluated and rejected: even with `no_std` + `decoder` only, its
//! decoder builds its opcode-handler tables at first use into `Vec`/`Box` (`decoder/handlers.rs`,
//! `decoder/table_de/`), i.e. it needs a global allocator. The decoder is an x86_64-only dependency, so
//! the RISC-V image never links it. Execution is hand-written: no well-kept `no_std` crate was found that
//! executes x86 instructions against a caller's register file and a caller-walked guest address space
//! without an allocator (the Unicorn bindings wrap a C engine with its own memory model).
//!
//! **Guest memory.** The emulator reaches guest memory only through [`GuestMemory`], after its own walk of
//! the guest's 4-level page tables (`walk.rs`: present, R/W, U/S, NX with CR0.WP, EFER.NXE, SMEP and SMAP
//! honoured, reserved bits checked, 2 MiB and 1 GiB pages, accessed/dirty bits set as the CPU does). A
//! write to a read-only page is the guest's #PF with the CPU's error code and CR2, never a VMM write. A
//! guest-physical address inside a registered device range is an MMIO access: a MOV to or from it becomes
//! [`Outcome::Mmio`] for policy to answer; anything else that reaches a device (a read-modify-write, a
//! stack access, a fetch, a paging-structure read) or an address that is neither guest RAM nor a device
//! stops the VM with the reason ([`Stop`]), never a VMM access outside guest memory.
//!
//! **Emulated** (64-bit mode only): MOV between registers, immediates and memory (all widths, moffs,
//! RIP-relative, FS/GS bases); PUSH/POP (register, memory, immediate), ENTER (all nesting levels), LEAVE;
//! CALL/JMP (relative and indirect near), RET (with imm16), Jcc, LOOP/LOOPE/LOOPNE, JRCXZ/JECXZ;
//! ADD/ADC/SUB/SBB/AND/OR/XOR/CMP/TEST/INC/DEC/NEG/NOT with exact RFLAGS (AF is cleared by the logic
//! ops, as Intel and AMD CPUs do; the SDM calls it undefined); INS/OUTS with or without REP, in batches
//! bounded by the caller's buffer and the page, RIP staying on the instruction until RCX reaches zero (as
//! an interrupted REP does), so RCX = 2^64-1 costs a bounded amount of work per exit; CPUID (returned as
//! an outcome for policy); NOP, multi-byte NOP and PAUSE.
//!
//! **Not emulated** (each is the guest's #UD, as the issue asks, or a clean stop): every other opcode
//! (MOV to/from segment, control and debug registers included), far CALL/JMP/RET, IRET, INT n; 16- and
//! 32-bit modes (stop); 5-level paging (stop); protection keys; single-step (RFLAGS.TF) and debug
//! registers; alignment checks; I/O privilege (IOPL and the TSS I/O bitmap: on an I/O exit the CPU has
//! checked them before exiting; under forced emulation they are not, and policy decides the port); the
//! LOCK prefix is honoured by decoding (LOCK where the ISA forbids it is
//! #UD) but an emulated locked instruction is not atomic against other CPUs (libvmm runs one vCPU). Near
//! branches ignore a 0x66 prefix, as Intel CPUs do in 64-bit mode (AMD honours it). The decoder drops
//! CS/DS/ES/SS overrides (no-ops in 64-bit mode), so a non-canonical address with an explicit SS override
//! is #GP(0) rather than #SS(0); RSP- and RBP-based addresses and stack operations are #SS(0).
//!
//! **Retirement.** Every outcome that completes an instruction carries a [`Retire`]: whether the
//! instruction retired and whether it is a branch, so a virtual PMU can count exactly, the way KVM's
//! `kvm_pmu_trigger_event` does. JMP, Jcc (taken or not), CALL, RET, LOOP* and JRCXZ are branches; ENTER
//! and LEAVE are not (they are stack operations: KVM commit "Don't treat ENTER and LEAVE as branches,
//! because they aren't"). An instruction that faults does not retire.
#![forbid(unsafe_code)]
// The TDX image runs no guest (it stops at SEAM-module detection): nothing there emulates.
#![cfg_attr(all(target_os = "none", feature = "tdx"), allow(dead_code))]

mod alu;
mod decode;
mod exec;
mod walk;

#[cfg(test)]
mod alu_vectors;
#[cfg(test)]
mod tests;

use crate::guest_mem::GuestMemory;

#[cfg(test)]
pub use exec::DeviceError;
pub use exec::Emulator;

/// RFLAGS bits the emulator reads or writes.
pub mod rflags {
    pub const CF: u64 = 1 << 0;
    pub const PF: u64 = 1 << 2;
    pub const AF: u64 = 1 << 4;
    pub const ZF: u64 = 1 << 6;
    pub const SF: u64 = 1 << 7;
    pub const DF: u64 = 1 << 10;
    pub const OF: u64 = 1 << 11;
    pub const AC: u64 = 1 << 18;
    /// The six arithmetic flags.
    pub const ARITH: u64 = CF | PF | AF | ZF | SF | OF;
}

/// Control-register and EFER bits the page walk honours (and the tests set).
#[cfg_attr(not(test), allow(dead_code))]
pub mod ctl {
    pub const CR0_WP: u64 = 1 << 16;
    pub const CR0_PG: u64 = 1 << 31;
    pub const CR4_PAE: u64 = 1 << 5;
    pub const CR4_LA57: u64 = 1 << 12;
    pub const CR4_SMEP: u64 = 1 << 20;
    pub const CR4_SMAP: u64 = 1 << 21;
    pub const EFER_LMA: u64 = 1 << 10;
    pub const EFER_NXE: u64 = 1 << 11;
}

/// The guest state the emulator reads and writes. The SVM and VMX backends implement it over their
/// control block and the saved registers; the tests implement it over a plain struct.
pub trait GuestCpu {
    /// A general-purpose register by its encoding number: 0 = RAX, 1 = RCX, 2 = RDX, 3 = RBX, 4 = RSP,
    /// 5 = RBP, 6 = RSI, 7 = RDI, 8..=15 = R8..R15.
    fn gpr(&self, n: u8) -> u64;
    fn set_gpr(&mut self, n: u8, value: u64);
    fn rip(&self) -> u64;
    fn set_rip(&mut self, value: u64);
    fn rflags(&self) -> u64;
    fn set_rflags(&mut self, value: u64);
    fn cr0(&self) -> u64;
    fn cr3(&self) -> u64;
    fn cr4(&self) -> u64;
    fn efer(&self) -> u64;
    /// Current privilege level (SS.DPL).
    fn cpl(&self) -> u8;
    /// CS.L: the guest is in 64-bit mode (with EFER.LMA).
    fn cs_long(&self) -> bool;
    fn fs_base(&self) -> u64;
    fn gs_base(&self) -> u64;
}

/// A vCPU the run loop can emulate on: the emulator's [`GuestCpu`] plus delivering the exceptions it
/// raises. The SVM and VMX backends implement it over their VMCB / VMCS (`svm/emulate.rs`,
/// `vmx/emulate.rs`) and hand it to the loop as `&mut dyn EmuCpu` ([`crate::backend::Backend::emulation`]):
/// emulation is the cold path (hundreds of emulated instructions per exit), so one indirect call per
/// register access there costs nothing the hot exits pay.
pub trait EmuCpu: GuestCpu {
    /// Delivers `e` to the guest on the next entry (a #PF also sets the guest's CR2); RIP stays on the
    /// faulting instruction.
    fn inject(&mut self, e: Exception);
}

/// A borrowed vCPU is one too: the loop passes `&mut &mut dyn EmuCpu` to the emulator's generic calls.
impl<T: GuestCpu + ?Sized> GuestCpu for &mut T {
    fn gpr(&self, n: u8) -> u64 {
        (**self).gpr(n)
    }
    fn set_gpr(&mut self, n: u8, value: u64) {
        (**self).set_gpr(n, value)
    }
    fn rip(&self) -> u64 {
        (**self).rip()
    }
    fn set_rip(&mut self, value: u64) {
        (**self).set_rip(value)
    }
    fn rflags(&self) -> u64 {
        (**self).rflags()
    }
    fn set_rflags(&mut self, value: u64) {
        (**self).set_rflags(value)
    }
    fn cr0(&self) -> u64 {
        (**self).cr0()
    }
    fn cr3(&self) -> u64 {
        (**self).cr3()
    }
    fn cr4(&self) -> u64 {
        (**self).cr4()
    }
    fn efer(&self) -> u64 {
        (**self).efer()
    }
    fn cpl(&self) -> u8 {
        (**self).cpl()
    }
    fn cs_long(&self) -> bool {
        (**self).cs_long()
    }
    fn fs_base(&self) -> u64 {
        (**self).fs_base()
    }
    fn gs_base(&self) -> u64 {
        (**self).gs_base()
    }
}

/// What an emulated instruction counts for a virtual PMU.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Retire {
    /// The instruction retired (a REP string instruction retires once, with its last batch).
    pub instruction: bool,
    /// It is a branch instruction (taken or not).
    pub branch: bool,
}

impl Retire {
    pub const NONE: Retire = Retire {
        instruction: false,
        branch: false,
    };
    pub const INSN: Retire = Retire {
        instruction: true,
        branch: false,
    };
    pub const BRANCH: Retire = Retire {
        instruction: true,
        branch: true,
    };
}

/// An exception the guest takes instead of the instruction completing (registers and memory unchanged).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exception {
    /// #UD: the instruction is invalid or not emulated.
    InvalidOpcode,
    /// #GP(error code): a non-canonical address, an instruction longer than 15 bytes.
    GeneralProtection(u32),
    /// #SS(error code): a non-canonical stack address.
    StackFault(u32),
    /// #PF with its error code; CR2 = `address`.
    PageFault { error: u32, address: u64 },
}

impl Exception {
    pub const fn vector(self) -> u8 {
        match self {
            Exception::InvalidOpcode => 6,
            Exception::StackFault(_) => 12,
            Exception::GeneralProtection(_) => 13,
            Exception::PageFault { .. } => 14,
        }
    }

    pub const fn error_code(self) -> Option<u32> {
        match self {
            Exception::InvalidOpcode => None,
            Exception::StackFault(e) | Exception::GeneralProtection(e) => Some(e),
            Exception::PageFault { error, .. } => Some(error),
        }
    }
}

/// Why emulation stops the VM instead of answering the guest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stop {
    /// The guest is not in 64-bit long mode; only 64-bit mode is emulated.
    NotLongMode,
    /// CR4.LA57: 5-level paging is not emulated.
    FiveLevelPaging,
    /// An access (or a paging-structure read) at a guest-physical address that is neither guest RAM nor a
    /// registered device.
    Unmapped { gpa: u64 },
    /// Device memory reached by something other than a MOV (a read-modify-write, a stack or string access,
    /// an instruction fetch, a paging-structure entry), or an access straddling RAM and a device.
    DeviceAccess { gpa: u64 },
    /// The caller's string I/O buffer is smaller than one element.
    IoBuffer,
}

impl core::fmt::Display for Stop {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match *self {
            Stop::NotLongMode => write!(f, "emulation outside 64-bit mode"),
            Stop::FiveLevelPaging => write!(f, "emulation with 5-level paging"),
            Stop::Unmapped { gpa } => write!(f, "emulated access to unmapped gpa {gpa:#x}"),
            Stop::DeviceAccess { gpa } => {
                write!(
                    f,
                    "emulated non-MOV access to device memory at gpa {gpa:#x}"
                )
            }
            Stop::IoBuffer => write!(f, "string I/O buffer smaller than one element"),
        }
    }
}

/// A general-purpose register destination with its width (1, 2, 4, 8 bytes); `high` = AH/CH/DH/BH.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Reg {
    pub num: u8,
    pub width: u8,
    pub high: bool,
}

impl Reg {
    pub fn read(self, cpu: &impl GuestCpu) -> u64 {
        let v = cpu.gpr(self.num);
        match (self.width, self.high) {
            (1, true) => (v >> 8) & 0xff,
            (w, _) => v & alu::mask(w),
        }
    }

    /// Writes as the CPU does: 32-bit writes zero-extend, 8- and 16-bit writes merge.
    pub fn write(self, cpu: &mut impl GuestCpu, value: u64) {
        let old = cpu.gpr(self.num);
        let new = match (self.width, self.high) {
            (8, _) => value,
            (4, _) => value & 0xffff_ffff,
            (1, true) => (old & !0xff00) | ((value & 0xff) << 8),
            (w, _) => (old & !alu::mask(w)) | (value & alu::mask(w)),
        };
        cpu.set_gpr(self.num, new);
    }
}

/// What finishes an instruction whose outcome needed the caller (MMIO, CPUID).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Done {
    pub next_rip: u64,
    pub retire: Retire,
}

/// An MMIO access for policy to answer; then [`Mmio::complete`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mmio {
    /// Guest-physical address (inside one registered device range, `size` bytes).
    pub gpa: u64,
    /// 1, 2, 4 or 8 bytes.
    pub size: u8,
    /// `Some(value)` for a store (the low `size` bytes), `None` for a load.
    pub write: Option<u64>,
    pub(crate) dest: Option<Reg>,
    pub(crate) done: Done,
}

impl Mmio {
    /// Finishes the instruction: a load writes `value` (its low `size` bytes) to the destination
    /// register; RIP moves on. Returns what it counts for the PMU.
    pub fn complete(self, cpu: &mut impl GuestCpu, value: u64) -> Retire {
        if let Some(r) = self.dest {
            r.write(cpu, value & alu::mask(self.size));
        }
        cpu.set_rip(self.done.next_rip);
        self.done.retire
    }
}

/// A CPUID for policy to answer; then [`Cpuid::complete`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cpuid {
    pub leaf: u32,
    pub subleaf: u32,
    pub(crate) done: Done,
}

impl Cpuid {
    /// Writes EAX, EBX, ECX, EDX (zero-extended) and moves RIP on.
    pub fn complete(self, cpu: &mut impl GuestCpu, regs: [u32; 4]) -> Retire {
        for (n, v) in [0u8, 3, 1, 2].into_iter().zip(regs) {
            cpu.set_gpr(n, u64::from(v));
        }
        cpu.set_rip(self.done.next_rip);
        self.done.retire
    }
}

/// Direction of a string port I/O batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IoDir {
    /// INS: the caller reads `count` elements from the port into the buffer, then completes.
    In,
    /// OUTS: the buffer holds `count` elements read from guest memory, for the caller to write.
    Out,
}

/// One batch of a string I/O instruction: `count` elements of `size` bytes at `port`, in element order in
/// the caller's buffer (`buf[..count * size]`). Then [`PortIo::complete`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PortIo {
    pub port: u16,
    pub size: u8,
    pub count: u32,
    pub dir: IoDir,
    pub(crate) span: walk::Span,
    /// Byte offset of element 0 inside `span` (elements go down with RFLAGS.DF).
    pub(crate) first: u64,
    pub(crate) down: bool,
    pub(crate) addr32: bool,
    pub(crate) rep: bool,
    pub(crate) next_rip: u64,
}

impl PortIo {
    /// Bytes of the caller's buffer this batch uses.
    pub fn bytes(&self) -> usize {
        self.count as usize * self.size as usize
    }

    /// Finishes the batch: INS stores the port data (`buf[..bytes()]`) into guest memory (already
    /// translated and permission-checked, so it cannot fault); RSI/RDI and RCX move on; RIP moves past the
    /// instruction once RCX reaches zero (or without REP), and only then does the instruction retire.
    pub fn complete(
        self,
        cpu: &mut impl GuestCpu,
        mem: &mut GuestMemory<'_>,
        buf: &[u8],
    ) -> Result<Retire, Stop> {
        let size = u64::from(self.size);
        if buf.len() < self.bytes() {
            return Err(Stop::IoBuffer);
        }
        if self.dir == IoDir::In {
            for i in 0..u64::from(self.count) {
                let off = if self.down {
                    self.first - i * size
                } else {
                    self.first + i * size
                };
                let data = &buf[(i * size) as usize..((i + 1) * size) as usize];
                self.span.write(mem, off, data)?;
            }
        }
        let aw = if self.addr32 { 4 } else { 8 };
        let index = Reg {
            num: if self.dir == IoDir::In { 7 } else { 6 },
            width: aw,
            high: false,
        };
        let delta = u64::from(self.count) * size;
        let v = index.read(cpu);
        index.write(
            cpu,
            if self.down {
                v.wrapping_sub(delta)
            } else {
                v.wrapping_add(delta)
            },
        );
        let mut finished = true;
        if self.rep {
            let rcx = Reg {
                num: 1,
                width: aw,
                high: false,
            };
            let left = rcx.read(cpu).saturating_sub(u64::from(self.count));
            rcx.write(cpu, left);
            finished = left == 0;
        }
        if finished {
            cpu.set_rip(self.next_rip);
            Ok(Retire::INSN)
        } else {
            Ok(Retire::NONE)
        }
    }
}

/// What emulating one instruction (or one string I/O batch) came to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Done: registers, memory and RIP are updated.
    Retired(Retire),
    /// A MOV to or from a device range: answer it, then [`Mmio::complete`].
    Mmio(Mmio),
    /// A string I/O batch: perform it, then [`PortIo::complete`].
    PortIo(PortIo),
    /// CPUID: answer it, then [`Cpuid::complete`].
    Cpuid(Cpuid),
    /// The guest takes this exception; the instruction did not retire and changed nothing.
    Exception(Exception),
    /// Stop the VM, printing the reason.
    Stop(Stop),
}
