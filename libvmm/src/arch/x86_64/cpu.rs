//! Safe wrappers over the x86 instructions the VMM needs (port I/O through the `x86` crate).

pub fn cpuid(leaf: u32, subleaf: u32) -> [u32; 4] {
    let r = core::arch::x86_64::__cpuid_count(leaf, subleaf);
    [r.eax, r.ebx, r.ecx, r.edx]
}

pub fn rdtsc() -> u64 {
    // SAFETY: RDTSC has no side effects; CR4.TSD is clear in the VMM.
    unsafe { core::arch::x86_64::_rdtsc() }
}

/// 64 bits from RDRAND when the CPU has it (retried as the SDM advises), else the time-stamp counter.
pub fn entropy() -> u64 {
    if cpuid(1, 0)[2] & (1 << 30) != 0 {
        for _ in 0..10 {
            let mut v = 0u64;
            // SAFETY: RDRAND exists (CPUID.1:ECX.RDRAND); it writes `v` and reports success in CF.
            if unsafe { core::arch::x86_64::_rdrand64_step(&mut v) } == 1 {
                return v ^ rdtsc();
            }
        }
    }
    rdtsc()
}

/// RDRAND, strictly: `None` when the CPU has no RDRAND or it keeps failing (no fallback).
pub fn rdrand() -> Option<u64> {
    if cpuid(1, 0)[2] & (1 << 30) == 0 {
        return None;
    }
    for _ in 0..10 {
        let mut v = 0u64;
        // SAFETY: RDRAND exists (CPUID.1:ECX.RDRAND); it writes `v` and reports success in CF.
        if unsafe { core::arch::x86_64::_rdrand64_step(&mut v) } == 1 {
            return Some(v);
        }
    }
    None
}

/// RDMSR. Only called for MSRs the VMM checked exist (architectural or CPUID-gated).
pub fn rdmsr(msr: u32) -> u64 {
    // SAFETY: the caller reads an MSR that exists on this CPU (see each call site).
    unsafe { x86::msr::rdmsr(msr) }
}

/// WRMSR. Only for MSRs the VMM owns and values it computed.
pub fn wrmsr(msr: u32, value: u64) {
    // SAFETY: the caller writes an MSR that exists with a valid value (see each call site).
    unsafe { x86::msr::wrmsr(msr, value) }
}

pub fn outb(port: u16, v: u8) {
    // SAFETY: port I/O to devices the VMM owns (COM1, PIT, CMOS, exit ports).
    unsafe { x86::io::outb(port, v) }
}

pub fn inb(port: u16) -> u8 {
    // SAFETY: as `outb`.
    unsafe { x86::io::inb(port) }
}

pub fn outl(port: u16, v: u32) {
    // SAFETY: as `outb`.
    unsafe { x86::io::outl(port, v) }
}

/// Sets EFER.NXE when the CPU has NX: with it, nested page faults report instruction fetches as such
/// (the fetch bit of the #PF-style error code is defined only with NX enabled).
pub fn enable_nx() {
    use crate::x86::msr::{EFER, EFER_NXE};
    if cpuid(0x8000_0000, 0)[0] >= 0x8000_0001 && cpuid(0x8000_0001, 0)[3] & (1 << 20) != 0 {
        wrmsr(EFER, rdmsr(EFER) | EFER_NXE);
    }
}

/// Raises #UD in the VMM on purpose (`libvmm.selftest=fault`: a test of the VMM's exception handlers).
pub fn deliberate_fault() {
    // SAFETY: UD2 raises #UD, which the VMM's IDT reports and ends the machine with; nothing resumes.
    unsafe { core::arch::asm!("ud2", options(nomem, nostack)) }
}

/// Halts until an interrupt comes, takes it (the VMM's IDT: the LAPIC timer's stub only acknowledges
/// it), and returns with interrupts off again. The sleep of a halted guest.
pub fn wait_for_interrupt() {
    // SAFETY: STI's shadow covers HLT, so an interrupt pending already wakes the HLT instead of being
    // taken before it; the only unmasked source is the LAPIC timer, whose stub EOIs and returns; CLI
    // restores the VMM's interrupts-off state. No memory is touched by these instructions.
    unsafe { core::arch::asm!("sti; hlt; cli", options(nomem, nostack)) }
}

/// Takes the host interrupts pending now (their stubs acknowledge them): interrupts on for one
/// instruction. The SVM world switch leaves them pending across an exit (see `svm::run`).
pub fn take_pending_interrupts() {
    // SAFETY: only RFLAGS.IF changes; the only unmasked sources are the LAPIC timer and the kick, whose
    // stubs EOI and return; CLI restores the VMM's interrupts-off state.
    unsafe { core::arch::asm!("sti; nop; cli", options(nomem, nostack)) }
}

/// Stops this CPU for good.
pub fn halt_forever() -> ! {
    loop {
        // SAFETY: interrupts off, then halt: nothing runs again.
        unsafe { core::arch::asm!("cli; hlt", options(nomem, nostack)) }
    }
}

/// CPUID.1:ECX.XSAVE.
#[cfg(any(feature = "svm", feature = "vmx"))] // the guests of the x86 backends
const CPUID_1_ECX_XSAVE: u32 = 1 << 26;
/// CR4.OSXSAVE.
#[cfg(any(feature = "svm", feature = "vmx"))] // the guests of the x86 backends
const CR4_OSXSAVE: u64 = 1 << 18;

/// Sets CR4.OSXSAVE when the CPU has XSAVE, so that the VMM can load a guest's XCR0 with XSETBV (the
/// VMM itself uses no extended state: its target has no SSE). Returns whether XSETBV is usable.
#[cfg(any(feature = "svm", feature = "vmx"))] // the guests of the x86 backends
pub fn enable_xsave() -> bool {
    if cpuid(1, 0)[2] & CPUID_1_ECX_XSAVE == 0 {
        return false;
    }
    // SAFETY: CR4.OSXSAVE is defined (CPUID.1:ECX.XSAVE); setting it only allows XGETBV/XSETBV and
    // XSAVE-family instructions, which change no memory the VMM owns.
    unsafe {
        core::arch::asm!(
            "mov {t}, cr4",
            "or {t}, {bit}",
            "mov cr4, {t}",
            t = out(reg) _,
            bit = in(reg) CR4_OSXSAVE,
            options(nomem, nostack, preserves_flags)
        )
    };
    true
}

/// XSETBV of XCR0. Only with CR4.OSXSAVE set ([`enable_xsave`]) and a value the guest-CR policy checked
/// against the CPUID leaf 0xD the guest sees (a subset of this CPU's).
#[cfg(any(feature = "svm", feature = "vmx"))] // the guests of the x86 backends
pub fn xsetbv0(value: u64) {
    // SAFETY: CR4.OSXSAVE is set and the value holds only supported, consistent XCR0 bits (see above), so
    // XSETBV does not fault; XCR0 governs only extended state, which the VMM does not use.
    unsafe {
        core::arch::asm!(
            "xsetbv",
            in("ecx") 0u32,
            in("eax") value as u32,
            in("edx") (value >> 32) as u32,
            options(nomem, nostack, preserves_flags)
        )
    };
}

/// Loads CR2 with a VMX guest's page-fault address before the entry that delivers its #PF: VM entry does
/// not load CR2, and the VMM itself never reads it (its own page faults are fatal and print it first).
#[cfg(feature = "vmx")]
pub fn write_cr2(value: u64) {
    // SAFETY: CR2 only records the last page-fault address; writing it changes no translation or
    // protection, and nothing in the VMM depends on its value.
    unsafe {
        core::arch::asm!("mov cr2, {}", in(reg) value, options(nomem, nostack, preserves_flags))
    };
}
