//! The vendor-backend trait: the Rust form of KVM's `kvm_x86_ops`, resolved at compile time.
//!
//! The generic loop ([`crate::vcpu::run`]) is generic over `B: Backend`, so every call below is a direct
//! (inlinable) call: no vtable on the exit path. A backend owns its vendor state (VMCB, VMCS, CSRs) and
//! translates between it and the generic [`Exit`]/[`Reply`] vocabulary; it decides no policy.
#![forbid(unsafe_code)]
// Each backend constructs its own errors (entry failures on x86, firmware errors on RISC-V and TDX), and
// the TDX image runs no guest.
#![cfg_attr(target_os = "none", allow(dead_code))]

use crate::exit::{Exit, Reply};
use crate::guest_mem::GuestMemory;
use crate::x86::apic::delivery::{GuestInterrupts, Interruptibility};

/// Why a backend could not run the guest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BackendError {
    /// The CPU refused the guest state (SVM VMEXIT_INVALID, VMX VM-entry failure). `code` is the vendor
    /// exit code or VM-instruction error; `what` names it.
    EntryFailed { code: u64, what: &'static str },
    /// A software VM-entry consistency check failed (the CPU was not asked).
    #[allow(dead_code)] // produced by the VMX backend
    ConsistencyCheck { what: &'static str },
    /// Firmware (SEAMCALL, SBI) returned an error.
    #[allow(dead_code)] // produced by the TDX and RISC-V backends
    Firmware { code: u64, what: &'static str },
}

/// One virtual CPU of one vendor. Its guest-interrupt half is the supertrait [`GuestInterrupts`] (on the
/// VMCB / VMCS for SVM and VMX; backends without a virtual APIC say so with [`NoGuestInterrupts`]).
pub(crate) trait Backend: GuestInterrupts {
    /// Which backend this is (reported in CPUID and boot info).
    const ID: libvmm_abi::BackendId;

    /// Enters the guest and runs it until the next exit, then decodes that exit. `mem` is the guest's
    /// memory, for the rare exits whose instruction must be read from it (SVM without decode assists).
    fn run(&mut self, mem: &GuestMemory<'_>) -> Result<Exit, BackendError>;

    /// Carries out the loop's reply to the last exit. (The reply carries everything it needs, so the
    /// exit need not be kept in memory across the call: that keeps the exit path short.)
    fn reply(&mut self, reply: Reply);

    /// The guest's CR4 as it sees it (x86; CPUID's OS-enable bits follow it). One load on the CPUID exit.
    fn guest_cr4(&self) -> u64 {
        0
    }

    /// The guest's control state (x86), read when a CR or XCR0 write is checked.
    fn cr_state(&self) -> crate::exit::CrState {
        crate::exit::CrState::default()
    }

    /// Maps the 2 MiB block at `block` (zeroed by the loop a moment ago: zero on first touch, see
    /// `loader::GuestMap`) read+write in the nested tables, where it was not mapped. `false` when the
    /// backend cannot (the loop then stops the VM). Cold: once per block of guest memory at most.
    fn map_zeroed_block(&mut self, _block: u64) -> bool {
        false
    }

    /// Another vCPU changed the nested tables this vCPU faulted through (it mapped a block on first
    /// touch): drop this CPU's cached translations of them before re-entering. RISC-V may cache invalid
    /// G-stage entries (HFENCE.GVMA here); x86 never caches not-present NPT/EPT entries (nothing to do).
    fn nested_tables_changed(&mut self) {}

    /// Completes an instruction the guest may not execute itself but the backend emulates (RISC-V: a
    /// Zkr `seed` access, answered with the host's); `false` for any other (the loop injects the
    /// fault). Cold: called from the illegal-instruction exit only.
    fn emulate_illegal(&mut self, _raw: u64) -> bool {
        false
    }

    /// Reads an MSR the backend keeps in its control structure (x86 only; others return `None`).
    fn virtual_msr(&self, msr: crate::exit::VirtualMsr) -> Option<u64>;

    /// The vCPU as the instruction emulator sees it (x86 backends; `None` elsewhere: the loop then stops
    /// the VM instead of emulating). Called on the cold emulation exits only (string I/O, MMIO, forced
    /// emulation), after the backend brought its copy of the guest state up to date.
    #[cfg(target_arch = "x86_64")]
    fn emulation(&mut self) -> Option<&mut dyn crate::x86::emulate::EmuCpu> {
        None
    }

    /// Carries out what other vCPUs posted for this one: IPI kinds (`smp::IPI_SOFT`: RISC-V VSSIP) and
    /// remote fences (`smp::fence`). Cold: called on host events and SMP calls only.
    fn remote_events(&mut self, _ipis: u32, _fences: u8) {}

    /// The backend delivers the virtual x2APIC's interrupts (SVM, VMX): the loop then routes the APIC
    /// MSRs to the model, sleeps on HLT and checks for pending vectors before each entry. A constant, so
    /// backends without it (RISC-V, the TDX image) carry none of that code.
    const VIRTUAL_APIC: bool = false;

    /// Ends an STI / MOV SS shadow when the loop retires the instruction under it (the HLT of
    /// `sti; hlt`, which woke): the next instruction boundary may take an interrupt.
    fn clear_interrupt_shadow(&mut self) {}
    /// The earliest host deadline (guest TSC; `None`: none) for a backend that keeps guest time itself
    /// while the guest runs (VMX: the VMX-preemption timer), at guest TSC `now`. Called again after every
    /// host event (a one-shot that fired is spent).
    fn set_host_deadline(&mut self, _deadline: Option<u64>, _now: u64) {}
}

/// A backend without a virtual APIC (RISC-V, the test doubles): its [`GuestInterrupts`] is this blanket
/// one, which the loop never reaches (it asks only when [`Backend::VIRTUAL_APIC`] is set).
pub(crate) trait NoGuestInterrupts {}

impl<T: NoGuestInterrupts> GuestInterrupts for T {
    fn interruptibility(&self) -> Interruptibility {
        Interruptibility::default()
    }
    fn event_queued(&self) -> bool {
        false
    }
    fn inject_interrupt(&mut self, _vector: u8) {}
    fn request_interrupt_window(&mut self, _open: bool) {}
}
