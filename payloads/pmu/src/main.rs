//! The emulator and virtual-PMU payload (x86; run with `libvmm.force_emulation=1`).
//!
//! On every x86 backend: instructions behind libvmm's forced-emulation prefix (ENTER, LEAVE, JMP, CALL,
//! RET, Jcc taken and not taken, arithmetic) run in the VMM's emulator and leave the registers the CPU
//! would; the emulated MMIO test register block answers (ID read-only, scratch read+write); `rep outsb`
//! and `rep insb` to port 0x80 complete (the port policy answers each byte: writes dropped, reads
//! all-ones), with RCX, RSI/RDI where the CPU leaves them.
//!
//! On VMX, the virtual PMU too: CPUID 0xA against the MSRs it describes (counters, widths, the
//! unavailable-events mask), IA32_PERF_CAPABILITIES' immutable bits (each changed by a write: #GP),
//! exact instructions-retired and branches-retired counts of the forced-emulated sequence (ENTER and
//! LEAVE are not branches; `>=` where hypervisor leaf 0x4000_0002 reports the host model's errata), and a
//! counter programmed with an unavailable event staying at zero. On SVM the PMU is hidden: CPUID 0xA is
//! zero and the counter MSRs are #GP.
//!
//! Each check prints `pmu: ok <name>` or `pmu: FAIL <name> ...`; the last line is
//! `pmu: <n> checks passed, <m> failed` and the exit status is 0 only when none failed.
#![no_std]
#![no_main]

#[cfg(target_arch = "x86_64")]
mod x86;

libvmm_guest::entry!(main);

fn main() -> i32 {
    #[cfg(target_arch = "x86_64")]
    return x86::run();
    #[cfg(not(target_arch = "x86_64"))]
    {
        libvmm_guest::println!("pmu: x86 only");
        0
    }
}
