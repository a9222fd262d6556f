//! RISC-V H-extension backend: the payload runs in VS-mode behind Sv39x4 G-stage tables.
//!
//! The backend translates, it decides nothing (the design notes' rule): a trap into HS-mode becomes one
//! generic [`Exit`] ([`RiscvH::run`]), and the run loop's [`Reply`] becomes register and CSR writes
//! ([`RiscvH::reply`]). What it knows about the hardware goes through the [`Hart`] trait, implemented
//! over `arch::riscv64`'s CSR instructions and world switch (`hw::HwHart`) and by a model in the tests,
//! so bring-up ([`hw`]) and the whole trap path run under `cargo test`, the trap path through the same
//! generic `vcpu::run` as on the machine.
//!
//! Trap translation (privileged spec, H extension; causes in [`csr`]):
//! - environment call from VS (10): `a7 == SBI_EXT_LIBVMM` is a libvmm hypercall (`a6` = number, `a0..a3`
//!   arguments); any other `a7` is an SBI call for the policy;
//! - guest-page faults (20, 21, 23): [`Exit::GuestMemoryFault`] at `htval << 2 | stval & 3`;
//! - virtual instruction (22): WFI (trapped by hstatus.VTW) waits for the guest's timer when one is armed
//!   and is [`Exit::Halt`] when nothing could wake the guest; every other instruction (hypervisor CSRs,
//!   `hfence`, ... from VS) is [`Exit::IllegalInsn`];
//! - the host's supervisor timer interrupt means the guest's deadline or the guest's time limit
//!   (`libvmm.timeout_ms=`) passed: the host timer is armed for the earlier of the two; the backend raises
//!   VSTIP (hvip) when the guest's deadline is due, and the loop asks the platform about the limit.
//!
//! Replies: `a0`/`a1` written and `sepc` advanced past the `ecall`; an injected fault is an illegal-
//! instruction exception delivered into VS as the privileged spec has HS do it (vsepc/vscause/vstval,
//! vsstatus.SPP/SPIE/SIE, continue at vstvec). A TIME `set_timer` the policy answered with success is
//! carried out here (host timer armed, VSTIP cleared): arming timers is the backend's job, allowing the
//! call is the policy's.
//!
//! Exceptions a guest handles itself (illegal instruction, breakpoints, misaligned accesses, its own page
//! faults) are delegated to VS through hedeleg and never exit (KVM's choice too).
#![forbid(unsafe_code)]

pub(crate) mod csr;
pub(crate) mod decode;
pub(crate) mod dt;
pub(crate) mod gstage;
pub(crate) mod guest_dt;
pub(crate) mod guest_isa;
pub(crate) mod host_dt;
pub(crate) mod hw;
pub(crate) mod isa;
pub(crate) mod vcpu;

/// The G-stage tables (one level-1 table: the window lies inside one gigabyte), in `.bss`, handed out
/// once to the bring-up.
#[cfg(all(target_os = "none", target_arch = "riscv64"))]
pub(crate) static GSTAGE: crate::arch::take_once::TakeOnce<gstage::GStage<1>> =
    crate::arch::take_once::TakeOnce::new(gstage::GStage::new());

/// The guest's general registers while it is not running: `x[1..=31]` (x0 unused), plus the host's
/// registers the world switch keeps while the guest runs. The layout is the assembly's (offsets below).
#[repr(C, align(64))]
#[derive(Clone, Debug)]
pub struct GuestContext {
    pub x: [u64; 32],
    /// Host sp, gp, tp, s0, s1 and the resume address, saved by the world switch.
    pub host: [u64; 6],
}

/// Byte offset of `host` in [`GuestContext`] (used by the assembly).
pub const CTX_HOST_OFFSET: usize = 32 * 8;
static_assertions::const_assert_eq!(core::mem::offset_of!(GuestContext, host), CTX_HOST_OFFSET);

impl GuestContext {
    pub const fn new() -> Self {
        Self {
            x: [0; 32],
            host: [0; 6],
        }
    }
}

impl Default for GuestContext {
    fn default() -> Self {
        Self::new()
    }
}

pub const A0: usize = 10;
pub const A1: usize = 11;
pub const A6: usize = 16;
pub const A7: usize = 17;

/// CSRs the backend reads or writes: between guest runs (the first eleven) and at bring-up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Csr {
    Sepc,
    Sstatus,
    Stval,
    Htval,
    Htinst,
    Hvip,
    Vsstatus,
    Vstvec,
    Vsepc,
    Vscause,
    Vstval,
    // Bring-up (`hw.rs`).
    Sie,
    Vsatp,
    /// Only with Sstc.
    Vstimecmp,
    Hstatus,
    Hedeleg,
    Hideleg,
    Hie,
    Htimedelta,
    Hcounteren,
    Henvcfg,
    /// Only with Smstateen.
    Hstateen0,
    /// WARL: an unsupported mode leaves it unchanged, VMID keeps only VMIDLEN bits.
    Hgatp,
}

/// The hardware under the backend: the world switch and CSR access.
pub(crate) trait Hart {
    /// Runs the guest from `sepc` until the next trap into HS-mode; returns scause.
    fn enter(&mut self, ctx: &mut GuestContext) -> u64;
    fn csr(&self, c: Csr) -> u64;
    fn set_csr(&mut self, c: Csr, v: u64);
    /// Programs the host's supervisor timer (`u64::MAX`: off).
    fn set_host_timer(&mut self, deadline: u64);
    /// Waits (host WFI) until the host timer interrupt or a host IPI (a kick from another vCPU) is
    /// pending.
    fn wait_for_host_timer(&mut self);
    /// Whether a host IPI (SSIP) is pending, and clearing it.
    fn host_ipi_pending(&self) -> bool {
        false
    }
    fn clear_host_ipi(&mut self) {}
    /// Carries out remote-fence kinds (`smp::fence`) on this hart.
    fn fence(&mut self, _kinds: u8) {}
    /// The `time` counter now.
    fn time(&self) -> u64;
    /// HFENCE.GVMA for every guest-physical address and VMID (after the G-stage tables changed).
    fn hfence_gvma_all(&mut self);
    /// Maps a zeroed 2 MiB block of guest memory read+write in the G-stage tables and fences it (zero
    /// on first touch); `false` when it cannot. Models without tables answer `false`.
    fn map_zeroed_block(&mut self, _block: u64) -> bool {
        false
    }
    /// The host's Zkr `seed` CSR (status and 16 bits of entropy), for a guest's `seed` access that
    /// trapped as a virtual instruction (the hart has Zkr); `None` on a model without it.
    fn seed(&mut self) -> Option<u64> {
        None
    }
}

/// The RISC-V H backend over a hart.
pub(crate) struct RiscvH<H: Hart> {
    pub(super) hart: H,
    pub(super) ctx: GuestContext,
    /// The guest's armed deadline (SBI TIME), in `time` ticks.
    timer: Option<u64>,
    /// The end of the guest's time limit (`libvmm.timeout_ms=`), in `time` ticks, until it has passed.
    limit: Option<u64>,
}

impl<H: Hart> RiscvH<H> {
    /// A vCPU that starts at `entry` (sepc) with `a0 = hartid`, `a1 = boot_info`, `a2 = dtb`, `sp = stack`.
    pub fn new(mut hart: H, entry: u64, hartid: u64, boot_info: u64, dtb: u64, stack: u64) -> Self {
        let mut ctx = GuestContext::new();
        ctx.x[2] = stack;
        ctx.x[A0] = hartid;
        ctx.x[A1] = boot_info;
        ctx.x[A0 + 2] = dtb;
        hart.set_csr(Csr::Sepc, entry);
        Self {
            hart,
            ctx,
            timer: None,
            limit: None,
        }
    }

    /// Ends the guest's run at `deadline` (`time` ticks) even if it never traps on its own: the host
    /// timer fires then and the loop asks the platform whether the limit has passed.
    pub fn set_time_limit(&mut self, deadline: u64) {
        self.limit = Some(deadline);
        self.arm_host_timer();
    }

    /// The hart back, when this vCPU's run ended (it may start again).
    #[cfg(all(target_os = "none", target_arch = "riscv64"))]
    pub fn into_hart(self) -> H {
        self.hart
    }

    #[cfg(test)]
    pub fn hart(&self) -> &H {
        &self.hart
    }

    #[cfg(test)]
    pub fn regs(&self) -> &GuestContext {
        &self.ctx
    }
}

#[cfg(test)]
mod tests;
