//! The contract between the libvmm VMM and the payload it runs, shared by both sides.
//!
//! Everything a payload and the VMM must agree on lives here, in one small versioned crate (the shape of
//! uhyve-interface): hypercall numbers and registers, error codes, the boot-info block the VMM hands to the
//! payload, the stop codes an image exits with, and the guest-physical layout per architecture. The prose
//! form of the same contract is `docs/hypercall-abi.md`; a change here bumps [`ABI_VERSION`] and that file.
#![no_std]
#![forbid(unsafe_code)]

pub mod files;
pub mod layout;
pub mod sbi;
pub mod stop;

use static_assertions::const_assert_eq;

/// ABI version: major in bits 31:16, minor in bits 15:0. A payload built for a different major refuses
/// to run (the guest runtime checks [`Hypercall::Version`] at start-up).
pub const ABI_VERSION: u32 = (ABI_MAJOR << 16) | ABI_MINOR;
pub const ABI_MAJOR: u32 = 1;
pub const ABI_MINOR: u32 = 2;

/// The 12-byte signature in CPUID leaf 0x4000_0000 (EBX, ECX, EDX) on x86.
pub const CPUID_SIGNATURE: [u8; 12] = *b"libvmmlibvmm";
/// Highest hypervisor CPUID leaf libvmm answers.
///
/// 0x4000_0002 (since ABI 1.1): EAX bit 0 = the virtual PMU's instructions-retired counts may
/// over-count, bit 1 = its branches-retired counts may (the host CPU model's errata; see
/// `docs/hypercall-abi.md`).
pub const CPUID_MAX_HV_LEAF: u32 = 0x4000_0002;

/// x86 forced emulation: a payload puts these 5 bytes (`ud2` followed by ASCII `lvm`) before an
/// instruction to have the VMM emulate that instruction instead of the CPU (as KVM's `ud2; .byte 'k','v','m'`
/// prefix, with libvmm's own signature). The VMM recognises it on the #UD intercept only when
/// `libvmm.force_emulation=1`; otherwise, and anywhere the bytes differ, the guest takes the #UD the `ud2`
/// raises. An exception the emulated instruction raises is reported at that instruction, past the prefix.
pub const FORCED_EMULATION_PREFIX: [u8; 5] = [0x0F, 0x0B, b'l', b'v', b'm'];

/// RISC-V: the SBI extension id of libvmm hypercalls (firmware-specific range 0x0A00_0000..=0x0AFF_FFFF).
pub const SBI_EXT_LIBVMM: u64 = 0x0A00_4C56;

/// The x86 hypercall register convention, in one place: the number in RAX (and the result), the
/// arguments in these registers, in order. The VMM's decoders read them through `Gprs::hypercall_args`
/// (checked against this list by its tests); the guest runtime's `vmmcall`/`vmcall` asm binds the same
/// registers.
pub const X86_HYPERCALL_NR: &str = "rax";
pub const X86_HYPERCALL_ARGS: [&str; 4] = ["rdi", "rsi", "rdx", "r10"];
/// The RISC-V convention: `a7` = [`SBI_EXT_LIBVMM`], `a6` = number, these argument registers, `a0` = SBI
/// error, `a1` = result.
pub const RISCV_HYPERCALL_ARGS: [&str; 4] = ["a0", "a1", "a2", "a3"];

/// Hypercall numbers. x86: number in RAX, arguments in RDI, RSI, RDX, R10, result in RAX.
/// RISC-V: `a7` = [`SBI_EXT_LIBVMM`], `a6` = number, arguments in a0..a3; `a0` = SBI error (0), `a1` = result.
/// A result is an `i64`: `>= 0` is success, `< 0` is a negated [`Errno`].
#[repr(u64)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Hypercall {
    /// () -> ABI_VERSION
    Version = 0,
    /// (fd, guest-physical address, length) -> bytes written. fd 1 and 2 go to the VMM console.
    Write = 1,
    /// (status) -> does not return; the VM stops with `stop::payload(status)`.
    Exit = 2,
    /// () -> does not return; the VM stops with [`stop::StopCode::PayloadAbort`].
    Abort = 3,
    /// (clock id: 1 realtime, 4 monotonic) -> nanoseconds.
    Clock = 4,
    /// () -> 0. Does nothing: measures the bare hypercall round trip.
    Nop = 5,
    /// () -> number of VM exits the VMM has handled for this vCPU so far (this call included).
    ExitCount = 6,
    /// () -> 63 bits from the VMM's entropy source (bit 63 clear, so never an error), or `-ENOSYS`
    /// when it has none (since ABI 1.2). Sources: x86 RDRAND; RISC-V the Zkr `seed` CSR, else a weak
    /// source (the `time` counter mixed; README says what that is worth). For guests whose CPU lacks
    /// an entropy instruction of its own.
    Entropy = 7,
}

impl Hypercall {
    /// Decodes a guest-supplied number; unknown numbers are `None` (the guest gets `-ENOSYS`).
    pub const fn from_raw(nr: u64) -> Option<Self> {
        Some(match nr {
            0 => Self::Version,
            1 => Self::Write,
            2 => Self::Exit,
            3 => Self::Abort,
            4 => Self::Clock,
            5 => Self::Nop,
            6 => Self::ExitCount,
            7 => Self::Entropy,
            _ => return None,
        })
    }
}

/// Error numbers a hypercall returns (negated). Values are hermit-abi's errno values.
#[repr(i64)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Errno {
    /// The console failed.
    Io = 5,
    /// Bad file descriptor.
    Badf = 9,
    /// The buffer is not inside guest memory, or its length overflows.
    Fault = 14,
    /// An argument is out of range.
    Inval = 22,
    /// Unknown hypercall number.
    Nosys = 38,
}

impl Errno {
    pub const fn as_result(self) -> i64 {
        -(self as i64)
    }
}

/// Clock ids (hermit-abi's values).
pub const CLOCK_REALTIME: u64 = 1;
pub const CLOCK_MONOTONIC: u64 = 4;

/// Which backend runs the payload (in [`BootInfo::backend`] and CPUID 0x4000_0001 ECX).
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BackendId {
    Svm = 1,
    Vmx = 2,
    Tdx = 3,
    RiscvH = 4,
}

impl BackendId {
    pub const fn from_raw(v: u32) -> Option<Self> {
        Some(match v {
            1 => Self::Svm,
            2 => Self::Vmx,
            3 => Self::Tdx,
            4 => Self::RiscvH,
            _ => return None,
        })
    }
    pub const fn name(self) -> &'static str {
        match self {
            Self::Svm => "AMD SVM",
            Self::Vmx => "Intel VMX",
            Self::Tdx => "Intel TDX",
            Self::RiscvH => "RISC-V H",
        }
    }
}

/// The instruction a payload uses for hypercalls on x86 (CPUID 0x4000_0001 EBX, [`BootInfo::hypercall`]).
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HypercallInsn {
    Vmmcall = 1,
    Vmcall = 2,
    Ecall = 3,
}

/// Magic in [`BootInfo::magic`]: "LIBVMMBI".
pub const BOOT_INFO_MAGIC: u64 = u64::from_le_bytes(*b"LIBVMMBI");

/// What the VMM writes at the start of guest memory before the first entry. Its guest-physical address is
/// in RDI (x86) or a1 (RISC-V; a0 holds the hart id) at the payload's entry.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BootInfo {
    pub magic: u64,
    pub abi_version: u32,
    /// A [`BackendId`].
    pub backend: u32,
    /// Guest-physical base and size of the payload's RAM.
    pub mem_base: u64,
    pub mem_size: u64,
    /// Guest-physical address and length of the command line (no NUL), or 0/0.
    pub cmdline_gpa: u64,
    pub cmdline_len: u64,
    /// The cycle counter (TSC / `cycle`) read by the VMM's first instruction: lets a payload measure the
    /// cost of VMM boot up to its own first instruction.
    pub vmm_entry_cycles: u64,
    /// A [`HypercallInsn`].
    pub hypercall: u32,
    pub reserved: u32,
}

const_assert_eq!(core::mem::size_of::<BootInfo>(), 64);

impl BootInfo {
    /// Encodes as little-endian bytes (the VMM writes guest memory only through byte slices).
    pub fn to_bytes(&self) -> [u8; 64] {
        let mut b = [0u8; 64];
        b[0..8].copy_from_slice(&self.magic.to_le_bytes());
        b[8..12].copy_from_slice(&self.abi_version.to_le_bytes());
        b[12..16].copy_from_slice(&self.backend.to_le_bytes());
        b[16..24].copy_from_slice(&self.mem_base.to_le_bytes());
        b[24..32].copy_from_slice(&self.mem_size.to_le_bytes());
        b[32..40].copy_from_slice(&self.cmdline_gpa.to_le_bytes());
        b[40..48].copy_from_slice(&self.cmdline_len.to_le_bytes());
        b[48..56].copy_from_slice(&self.vmm_entry_cycles.to_le_bytes());
        b[56..60].copy_from_slice(&self.hypercall.to_le_bytes());
        b[60..64].copy_from_slice(&self.reserved.to_le_bytes());
        b
    }

    pub fn from_bytes(b: &[u8; 64]) -> Self {
        let u64_at = |o: usize| {
            let mut w = [0u8; 8];
            w.copy_from_slice(&b[o..o + 8]);
            u64::from_le_bytes(w)
        };
        let u32_at = |o: usize| {
            let mut w = [0u8; 4];
            w.copy_from_slice(&b[o..o + 4]);
            u32::from_le_bytes(w)
        };
        Self {
            magic: u64_at(0),
            abi_version: u32_at(8),
            backend: u32_at(12),
            mem_base: u64_at(16),
            mem_size: u64_at(24),
            cmdline_gpa: u64_at(32),
            cmdline_len: u64_at(40),
            vmm_entry_cycles: u64_at(48),
            hypercall: u32_at(56),
            reserved: u32_at(60),
        }
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;

    #[test]
    fn boot_info_round_trips_through_bytes() {
        let bi = BootInfo {
            magic: BOOT_INFO_MAGIC,
            abi_version: ABI_VERSION,
            backend: BackendId::Svm as u32,
            mem_base: 0x200_0000,
            mem_size: 0x80_0000,
            cmdline_gpa: 0x200_0040,
            cmdline_len: 5,
            vmm_entry_cycles: 123,
            hypercall: HypercallInsn::Vmmcall as u32,
            reserved: 0,
        };
        assert_eq!(BootInfo::from_bytes(&bi.to_bytes()), bi);
    }

    #[test]
    fn hypercall_numbers_are_stable() {
        for nr in 0..8u64 {
            assert_eq!(Hypercall::from_raw(nr).map(|h| h as u64), Some(nr));
        }
        assert_eq!(Hypercall::from_raw(7), Some(Hypercall::Entropy));
        assert_eq!(Hypercall::from_raw(8), None);
        assert_eq!(Hypercall::from_raw(u64::MAX), None);
    }

    #[test]
    fn errno_results_are_negative() {
        assert_eq!(Errno::Fault.as_result(), -14);
        assert_eq!(Errno::Nosys.as_result(), -38);
    }
}
