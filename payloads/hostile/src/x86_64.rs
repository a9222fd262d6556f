//! x86 attacks (SVM and VMX).
use libvmm_guest::abi::layout::x86_64::{VMM_IMAGE_BASE, WINDOW_BASE, WINDOW_SIZE};
use libvmm_guest::arch::{cpuid, probe, triple_fault};

use crate::Checks;

const UD: u8 = 6;
const GP: u8 = 13;
const MSR_EFER: u32 = 0xC000_0080;
const EFER_SVME: u64 = 1 << 12;
const MSR_FS_BASE: u32 = 0xC000_0100;

pub fn recoverable(c: &mut Checks) {
    let page = WINDOW_BASE + 0x8000;
    // Virtualization instructions of both vendors: #UD in the guest, whichever backend runs it. (VMXON
    // is probed on VMX only: QEMU's TCG, which runs the SVM backend, does not fault VMXON on a CPU
    // without VMX, while hardware and Bochs raise #UD.)
    if libvmm_guest::backend_name() == "Intel VMX" {
        let r = probe::vmxon(page);
        c.check("vmxon-is-ud", r == Err(UD), format_args!("got {r:?}"));
        vmx_forms(c, page);
    }
    for (name, r) in [
        ("vmrun-is-ud", probe::vmrun(page)),
        ("vmsave-is-ud", probe::vmsave(page)),
        ("vmload-is-ud", probe::vmload(page)),
        ("stgi-is-ud", probe::stgi()),
        ("clgi-is-ud", probe::clgi()),
        ("skinit-is-ud", probe::skinit()),
        ("invlpga-is-ud", probe::invlpga()),
        ("vmlaunch-is-ud", probe::vmlaunch()),
        ("vmread-is-ud", probe::vmread(0)),
        ("monitor-is-ud", probe::monitor()),
    ] {
        c.check(name, r == Err(UD), format_args!("got {r:?}"));
    }

    // The guest is shown no virtualization.
    let svm_bit = cpuid(0x8000_0001, 0)[2] & (1 << 2);
    let vmx_bit = cpuid(1, 0)[2] & (1 << 5);
    c.check(
        "cpuid-hides-svm-and-vmx",
        svm_bit == 0 && vmx_bit == 0,
        format_args!("svm {svm_bit:#x} vmx {vmx_bit:#x}"),
    );
    let sig = cpuid(0x4000_0000, 0);
    c.check(
        "cpuid-hypervisor-leaf",
        sig[1] == u32::from_le_bytes(*b"libv"),
        format_args!("{sig:x?}"),
    );

    // EFER: SVME reads as clear, setting it is #GP, and the VMM keeps running afterwards.
    let efer = probe::rdmsr(MSR_EFER);
    c.check(
        "efer-read-hides-svme",
        matches!(efer, Ok(v) if v & EFER_SVME == 0 && v & (1 << 8) != 0),
        format_args!("got {efer:x?}"),
    );
    let e = efer.unwrap_or(0x500);
    let r = probe::wrmsr(MSR_EFER, e | EFER_SVME);
    c.check(
        "efer-svme-write-is-gp",
        r == Err(GP),
        format_args!("got {r:?}"),
    );
    let r = probe::wrmsr(MSR_EFER, e);
    c.check(
        "efer-same-value-write-ok",
        r == Ok(()),
        format_args!("got {r:?}"),
    );
    let r = probe::wrmsr(MSR_EFER, e & !(1 << 8));
    c.check(
        "efer-clearing-lme-in-long-mode-is-gp",
        r == Err(GP),
        format_args!("got {r:?}"),
    );
    let efer2 = probe::rdmsr(MSR_EFER);
    c.check(
        "efer-unchanged",
        efer2 == efer,
        format_args!("{efer2:x?} vs {efer:x?}"),
    );

    // FS_BASE is the guest's own: a write takes effect for FS-relative loads, a read returns it, and a
    // non-canonical base is #GP.
    static MARK: u64 = 0x5EC2_E7AB_CDEF;
    let mark = core::ptr::addr_of!(MARK) as u64;
    let w = probe::wrmsr(MSR_FS_BASE, mark);
    let r = probe::rdmsr(MSR_FS_BASE);
    let through_fs: u64;
    // SAFETY: FS now points at MARK, a valid u64.
    unsafe { core::arch::asm!("mov {}, fs:[0]", out(reg) through_fs, options(nostack, readonly)) };
    c.check(
        "fs-base-is-the-guests",
        w == Ok(()) && r == Ok(mark) && through_fs == MARK,
        format_args!("write {w:?} read {r:x?} via fs {through_fs:#x}"),
    );
    let w = probe::wrmsr(MSR_FS_BASE, 0x0000_8000_0000_0000);
    c.check(
        "fs-base-non-canonical-is-gp",
        w == Err(GP),
        format_args!("got {w:?}"),
    );
    let _ = probe::wrmsr(MSR_FS_BASE, 0);

    // Unknown and host-only MSRs.
    for (name, msr) in [
        ("unknown-msr", 0x4B56_4D00u32),
        ("vm-hsave-pa-msr", 0xC001_0117),
        ("vm-cr-msr", 0xC001_0114),
        ("feature-control-msr", 0x3A),
    ] {
        let r = probe::rdmsr(msr);
        c.check(name, r == Err(GP), format_args!("rdmsr got {r:x?}"));
        let w = probe::wrmsr(msr, 0);
        c.check(name, w == Err(GP), format_args!("wrmsr got {w:?}"));
    }

    // Port I/O to unassigned ports: reads float high, writes vanish (the debug-exit port must not stop
    // QEMU, the console port must not print), string I/O is #GP.
    let r = probe::inb(0x3F8);
    c.check(
        "in-console-port-reads-ff",
        r == Ok(0xFF),
        format_args!("got {r:x?}"),
    );
    let r = probe::inl(0xCF8);
    c.check(
        "in-pci-port-reads-ones",
        r == Ok(u32::MAX),
        format_args!("got {r:x?}"),
    );
    let r = probe::outl(0xF4, 0x10);
    c.check(
        "out-debug-exit-port-dropped",
        r == Ok(()),
        format_args!("got {r:?}"),
    );
    let r = probe::outb(0x3F8, b'!');
    c.check(
        "out-console-port-dropped",
        r == Ok(()),
        format_args!("got {r:?}"),
    );
    // String I/O runs through the VMM's instruction emulator: an OUTS is answered as the same OUT is
    // (dropped), never #GP any more.
    let r = probe::outsb(0x80, &0x55);
    c.check("string-io-emulated", r == Ok(()), format_args!("got {r:?}"));
    let _ = (VMM_IMAGE_BASE, WINDOW_SIZE);

    control_registers::checks(c);
}

/// Attacks that must stop the VM.
pub fn fatal(attack: &str) {
    match attack {
        "vmm-read" => {
            // SAFETY: deliberately reads the VMM image's physical address.
            let v = unsafe { core::ptr::read_volatile(VMM_IMAGE_BASE as *const u64) };
            libvmm_guest::println!("hostile: read VMM memory: {v:#x}");
        }
        "vmm-write" => {
            // SAFETY: deliberately writes the VMM's physical memory.
            unsafe { core::ptr::write_volatile((VMM_IMAGE_BASE + 0x1000) as *mut u64, 0xBAD) };
        }
        "vmm-exec" => {
            // SAFETY: deliberately jumps into the VMM image.
            let f: extern "C" fn() = unsafe { core::mem::transmute(VMM_IMAGE_BASE as usize) };
            f();
        }
        "beyond-window" => {
            // SAFETY: deliberately reads just past guest memory.
            let _ = unsafe { core::ptr::read_volatile((WINDOW_BASE + WINDOW_SIZE) as *const u8) };
        }
        "triple-fault" => triple_fault(),
        "spin" => loop {
            core::hint::spin_loop();
        },
        "halt" => {
            // SAFETY: halts with interrupts off: nothing can wake the guest.
            unsafe { core::arch::asm!("cli", "hlt") };
        }
        other => libvmm_guest::println!("hostile: unknown attack {other}"),
    }
}

/// The VMX forms of the attacks (run on the VMX backend): the whole VMX instruction set is #UD, the VMX
/// capability MSRs are #GP, CR4.VMXE (which the CPU needs set underneath) is neither visible nor
/// writable, and Bochs' own control ports are denied like every other port.
fn vmx_forms(c: &mut Checks, page: u64) {
    let desc = [0u64, 0];
    for (name, r) in [
        ("vmresume-is-ud", probe::vmresume()),
        ("vmxoff-is-ud", probe::vmxoff()),
        ("vmclear-is-ud", probe::vmclear(page)),
        ("vmptrld-is-ud", probe::vmptrld(page)),
        ("vmptrst-is-ud", probe::vmptrst().map(|_| ())),
        ("vmwrite-is-ud", probe::vmwrite(0x681E, 0)),
        ("invept-is-ud", probe::invept(2, &desc)),
        ("invvpid-is-ud", probe::invvpid(2, &desc)),
        ("vmfunc-is-ud", probe::vmfunc(0)),
        ("getsec-is-ud", probe::getsec()),
    ] {
        c.check(name, r == Err(UD), format_args!("got {r:?}"));
    }
    for msr in [0x480u32, 0x482, 0x48B, 0x48C, 0x48E, 0x491] {
        let r = probe::rdmsr(msr);
        c.check(
            "vmx-capability-msr-is-gp",
            r == Err(GP),
            format_args!("rdmsr {msr:#x} got {r:x?}"),
        );
    }
    const CR4_VMXE: u64 = 1 << 13;
    let cr4 = probe::read_cr4();
    c.check(
        "cr4-hides-vmxe",
        matches!(cr4, Ok(v) if v & CR4_VMXE == 0),
        format_args!("got {cr4:x?}"),
    );
    if let Ok(v) = cr4 {
        let r = probe::write_cr4(v | CR4_VMXE);
        c.check(
            "cr4-vmxe-write-refused",
            r.is_err(),
            format_args!("got {r:?}"),
        );
        let r = probe::write_cr4(v & !CR4_VMXE);
        c.check(
            "cr4-same-value-write-ok",
            r == Ok(()),
            format_args!("got {r:?}"),
        );
    }
    // Bochs ends the emulator on "Shutdown" written to 0x8900; port 0xE9 is its debug console.
    let r = b"Shutdown".iter().try_for_each(|&b| probe::outb(0x8900, b));
    c.check(
        "out-bochs-shutdown-port-dropped",
        r == Ok(()),
        format_args!("got {r:?}"),
    );
    let r = probe::outb(0xE9, b'!');
    c.check(
        "out-port-e9-dropped",
        r == Ok(()),
        format_args!("got {r:?}"),
    );
}

/// Guest CR0/CR4 and XCR0 writes: reserved bits and invalid combinations are #GP(0) (XSETBV with
/// CR4.OSXSAVE clear is #UD), exactly as the SDM/APM say and the same on SVM and VMX; valid writes take
/// effect (read back, and AVX really runs once XCR0 enables it where the CPU has it); each checked
/// write really exits to the VMM (its policy decides, not the emulator underneath).
///
/// The instructions run under the payload's own #UD/#GP handlers (the guest API's `set_trap_handler`):
/// the handler resumes after the instruction and records the vector.
mod control_registers {
    use core::sync::atomic::{AtomicU64, AtomicU8, Ordering};

    use libvmm_guest::abi::Hypercall;
    use libvmm_guest::arch::{cpuid, probe};
    use libvmm_guest::{
        clear_trap_handler, hypercall, set_trap_handler, Trap, TrapAction, TrapFrame,
    };

    use super::{GP, UD};
    use crate::Checks;

    const NONE: u8 = 0xFF;
    static RESUME: AtomicU64 = AtomicU64::new(0);
    static VECTOR: AtomicU8 = AtomicU8::new(NONE);

    fn on_fault(f: &mut TrapFrame) -> TrapAction {
        let resume = RESUME.swap(0, Ordering::SeqCst);
        if resume == 0 {
            return TrapAction::Default;
        }
        VECTOR.store(f.vector as u8, Ordering::SeqCst);
        f.set_pc(resume);
        TrapAction::Resume
    }

    /// Runs one instruction with the resume address armed; `Err(vector)` when it faulted.
    macro_rules! catch {
        ($insn:literal $(, $($ops:tt)*)?) => {{
            VECTOR.store(NONE, Ordering::SeqCst);
            // SAFETY: the instruction under test changes only control state the checks restore; if it
            // faults, the handler resumes at label 2.
            unsafe {
                core::arch::asm!(
                    "lea {tmp}, [rip + 2f]",
                    "mov [rip + {resume}], {tmp}",
                    $insn,
                    "2:",
                    tmp = out(reg) _,
                    resume = sym RESUME,
                    $($($ops)*)?
                )
            }
            RESUME.store(0, Ordering::SeqCst);
            match VECTOR.load(Ordering::SeqCst) {
                NONE => Ok(()),
                v => Err(v),
            }
        }};
    }

    fn write_cr0(v: u64) -> Result<(), u8> {
        catch!("mov cr0, {v}", v = in(reg) v)
    }
    fn read_cr0() -> u64 {
        let v: u64;
        // SAFETY: reading CR0 has no side effects.
        unsafe { core::arch::asm!("mov {}, cr0", out(reg) v, options(nomem, nostack)) };
        v
    }
    fn read_cr3() -> u64 {
        let v: u64;
        // SAFETY: reading CR3 has no side effects.
        unsafe { core::arch::asm!("mov {}, cr3", out(reg) v, options(nomem, nostack)) };
        v
    }
    fn write_cr3(v: u64) -> Result<(), u8> {
        catch!("mov cr3, {v}", v = in(reg) v)
    }
    fn clts() -> Result<(), u8> {
        catch!("clts")
    }
    fn lmsw(v: u16) -> Result<(), u8> {
        catch!("lmsw {v:x}", v = in(reg) v)
    }
    fn xsetbv(index: u32, v: u64) -> Result<(), u8> {
        catch!("xsetbv", in("ecx") index, in("eax") v as u32, in("edx") (v >> 32) as u32)
    }
    fn xgetbv() -> Result<u64, u8> {
        let (lo, hi): (u32, u32);
        catch!("xgetbv", in("ecx") 0u32, out("eax") lo, out("edx") hi)?;
        Ok(((hi as u64) << 32) | lo as u64)
    }
    /// An AVX instruction on YMM state (the payload itself never uses vector registers).
    fn avx() -> Result<(), u8> {
        catch!("vxorps ymm0, ymm0, ymm0")
    }
    fn exits() -> i64 {
        hypercall(Hypercall::ExitCount, [0; 4])
    }

    const CR0_PE: u64 = 1 << 0;
    const CR0_TS: u64 = 1 << 3;
    const CR0_EM: u64 = 1 << 2;
    const CR0_NW: u64 = 1 << 29;
    const CR0_CD: u64 = 1 << 30;
    const CR0_PG: u64 = 1 << 31;
    const CR4_PAE: u64 = 1 << 5;
    const CR4_OSFXSR: u64 = 1 << 9;
    const CR4_OSXMMEXCPT: u64 = 1 << 10;
    const CR4_LA57: u64 = 1 << 12;
    const CR4_PCIDE: u64 = 1 << 17;
    const CR4_OSXSAVE: u64 = 1 << 18;

    pub fn checks(c: &mut Checks) {
        // Their ~45 console lines cost about 6 M emulated cycles (Bochs' UART runs at its baud rate in
        // emulated time), more than the time-limit cases (`libvmm.timeout_ms=300`) leave before their
        // attack: those cases test the limit; every other hostile boot runs these checks.
        if libvmm_guest::cmdline_value("libvmm.timeout_ms").is_some() {
            libvmm_guest::println!("hostile: control-register checks skipped under a time limit");
            return;
        }
        let ok = set_trap_handler(Trap::X86(UD), on_fault).is_ok()
            && set_trap_handler(Trap::X86(GP), on_fault).is_ok();
        c.check(
            "cr-handlers-installed",
            ok,
            format_args!("set_trap_handler failed"),
        );
        cr0_checks(c);
        cr4_checks(c);
        xcr0_checks(c);
        let _ = clear_trap_handler(Trap::X86(UD));
        let _ = clear_trap_handler(Trap::X86(GP));
    }

    fn cr0_checks(c: &mut Checks) {
        let cr0 = read_cr0();
        for (name, v) in [
            ("cr0-bit63-is-gp", cr0 | 1 << 63),
            ("cr0-bit32-is-gp", cr0 | 1 << 32),
            ("cr0-nw-without-cd-is-gp", (cr0 | CR0_NW) & !CR0_CD),
            ("cr0-pg-without-pe-is-gp", cr0 & !CR0_PE),
            ("cr0-clearing-pg-in-long-mode-is-gp", cr0 & !CR0_PG),
        ] {
            let r = write_cr0(v);
            c.check(name, r == Err(GP), format_args!("got {r:?} writing {v:#x}"));
        }
        c.check(
            "cr0-unchanged-after-refused-writes",
            read_cr0() == cr0,
            format_args!("{:#x} vs {cr0:#x}", read_cr0()),
        );
        // Valid writes take effect: CD and NW together, then back; TS, cleared by CLTS; LMSW.
        let e0 = exits();
        let r = write_cr0(cr0 | CR0_CD | CR0_NW);
        let e1 = exits();
        let now = read_cr0();
        let back = write_cr0(cr0);
        c.check(
            "cr0-cd-nw-write-takes-effect",
            r == Ok(()) && now == cr0 | CR0_CD | CR0_NW && back == Ok(()) && read_cr0() == cr0,
            format_args!("write {r:?} read {now:#x}, restore {back:?}"),
        );
        c.check(
            "cr0-write-exits-to-the-vmm",
            e1 - e0 >= 2,
            format_args!("{} exits around the write", e1 - e0),
        );
        let r = write_cr0(cr0 | CR0_TS);
        let ts = read_cr0() & CR0_TS;
        let r2 = clts();
        c.check(
            "cr0-ts-set-then-clts",
            r == Ok(()) && ts == CR0_TS && r2 == Ok(()) && read_cr0() == cr0,
            format_args!("write {r:?} ts {ts:#x} clts {r2:?} cr0 {:#x}", read_cr0()),
        );
        let r = lmsw((cr0 as u16 & !0xF) | (cr0 as u16 & 0xF) | CR0_EM as u16);
        let em = read_cr0() & CR0_EM;
        let r2 = lmsw(cr0 as u16);
        c.check(
            "cr0-lmsw-takes-effect",
            r == Ok(()) && em == CR0_EM && r2 == Ok(()) && read_cr0() == cr0,
            format_args!("lmsw {r:?} em {em:#x} back {r2:?} cr0 {:#x}", read_cr0()),
        );
    }

    fn cr4_checks(c: &mut Checks) {
        let Ok(cr4) = probe::read_cr4() else {
            c.check("cr4-readable", false, format_args!("MOV from CR4 faulted"));
            return;
        };
        // Bits no libvmm guest's CPUID offers (VMX and SMX are hidden): reserved, so #GP.
        for bit in [63u32, 40, 32, 31, 25, 15, 14, 13] {
            let r = probe::write_cr4(cr4 | 1 << bit);
            c.check(
                "cr4-reserved-bit-is-gp",
                r == Err(GP),
                format_args!("bit {bit}: got {r:?}"),
            );
        }
        let r = probe::write_cr4(cr4 & !CR4_PAE);
        c.check(
            "cr4-clearing-pae-in-long-mode-is-gp",
            r == Err(GP),
            format_args!("got {r:?}"),
        );
        let r = probe::write_cr4(cr4 ^ CR4_LA57);
        c.check(
            "cr4-changing-la57-in-long-mode-is-gp",
            r == Err(GP),
            format_args!("got {r:?}"),
        );
        // PCIDE: reserved without CPUID PCID; with it, 0 -> 1 needs CR3[11:0] = 0.
        let has_pcid = cpuid(1, 0)[2] & (1 << 17) != 0;
        let cr3 = read_cr3();
        if has_pcid {
            let w3 = write_cr3(cr3 | 0x8); // PWT: a non-zero bit in CR3[11:0]
            let r = probe::write_cr4(cr4 | CR4_PCIDE);
            let _ = write_cr3(cr3);
            c.check(
                "cr4-pcide-with-cr3-low-bits-is-gp",
                w3 == Ok(()) && r == Err(GP),
                format_args!("cr3 write {w3:?}, cr4 write {r:?}"),
            );
            let r = probe::write_cr4(cr4 | CR4_PCIDE);
            let on = probe::read_cr4();
            let r2 = probe::write_cr4(cr4);
            c.check(
                "cr4-pcide-with-cr3-clean-takes-effect",
                r == Ok(()) && on == Ok(cr4 | CR4_PCIDE) && r2 == Ok(()),
                format_args!("set {r:?} read {on:x?} clear {r2:?}"),
            );
        } else {
            let r = probe::write_cr4(cr4 | CR4_PCIDE);
            c.check(
                "cr4-pcide-without-cpuid-pcid-is-gp",
                r == Err(GP),
                format_args!("got {r:?}"),
            );
        }
        let e0 = exits();
        let want = cr4 | CR4_OSFXSR | CR4_OSXMMEXCPT;
        let r = probe::write_cr4(want);
        let e1 = exits();
        let now = probe::read_cr4();
        c.check(
            "cr4-valid-write-takes-effect",
            r == Ok(()) && now == Ok(want),
            format_args!("write {r:?} read {now:x?}"),
        );
        c.check(
            "cr4-write-exits-to-the-vmm",
            e1 - e0 >= 2,
            format_args!("{} exits around the write", e1 - e0),
        );
        c.check(
            "cr4-unchanged-after-refused-writes",
            probe::read_cr4() == Ok(want) && read_cr3() == cr3,
            format_args!("cr4 {:x?} cr3 {:#x}", probe::read_cr4(), read_cr3()),
        );
    }

    fn xcr0_checks(c: &mut Checks) {
        let Ok(cr4) = probe::read_cr4() else { return };
        let osxsave_bit = |cr4| cpuid(1, 0)[2] & (1 << 27) != 0 && cr4 & CR4_OSXSAVE != 0;
        let shown = cpuid(1, 0)[2] & (1 << 27) != 0;
        c.check(
            "cpuid-osxsave-clear-while-cr4-osxsave-clear",
            !shown && cr4 & CR4_OSXSAVE == 0,
            format_args!("cpuid shows {shown}, cr4 {cr4:#x}"),
        );
        let r = xsetbv(0, 3);
        c.check(
            "xsetbv-without-cr4-osxsave-is-ud",
            r == Err(UD),
            format_args!("got {r:?}"),
        );
        if cpuid(1, 0)[2] & (1 << 26) == 0 {
            let r = probe::write_cr4(cr4 | CR4_OSXSAVE);
            c.check(
                "cr4-osxsave-without-cpuid-xsave-is-gp",
                r == Err(GP),
                format_args!("got {r:?}"),
            );
            return;
        }
        let r = probe::write_cr4(cr4 | CR4_OSXSAVE);
        c.check(
            "cr4-osxsave-takes-effect-and-cpuid-follows",
            r == Ok(()) && osxsave_bit(cr4 | CR4_OSXSAVE),
            format_args!("write {r:?}, cpuid 1 ecx {:#x}", cpuid(1, 0)[2]),
        );
        let d = cpuid(0xD, 0);
        let offered = (d[3] as u64) << 32 | d[0] as u64;
        let not_offered = (9..63)
            .map(|b| 1u64 << b)
            .find(|b| offered & b == 0)
            .unwrap_or(1 << 63);
        for (name, idx, v) in [
            ("xsetbv-x87-clear-is-gp", 0, 2u64),
            ("xsetbv-avx-without-sse-is-gp", 0, 5),
            ("xsetbv-reserved-bit63-is-gp", 0, 1 << 63 | 3),
            (
                "xsetbv-bit-cpuid-0xd-does-not-offer-is-gp",
                0,
                not_offered | 3,
            ),
            ("xsetbv-xcr1-is-gp", 1, 3),
        ] {
            let r = xsetbv(idx, v);
            c.check(
                name,
                r == Err(GP),
                format_args!("got {r:?} for xcr{idx} = {v:#x}"),
            );
        }
        let e0 = exits();
        let r = xsetbv(0, 3);
        let e1 = exits();
        let got = xgetbv();
        c.check(
            "xsetbv-sse-takes-effect",
            r == Ok(()) && got == Ok(3),
            format_args!("xsetbv {r:?}, xgetbv {got:x?}"),
        );
        c.check(
            "xsetbv-exits-to-the-vmm",
            e1 - e0 >= 2,
            format_args!("{} exits around XSETBV", e1 - e0),
        );
        let has_avx = cpuid(1, 0)[2] & (1 << 28) != 0 && offered & 4 != 0;
        if has_avx {
            let before = avx();
            let r = xsetbv(0, 7);
            let got = xgetbv();
            let after = avx();
            c.check(
                "xsetbv-avx-enables-avx",
                before == Err(UD) && r == Ok(()) && got == Ok(7) && after == Ok(()),
                format_args!(
                    "avx before {before:?}, xsetbv {r:?}, xgetbv {got:x?}, avx after {after:?}"
                ),
            );
        } else {
            libvmm_guest::println!("hostile: (no AVX on this CPU: xsetbv-avx-enables-avx skipped)");
        }
        let r = xsetbv(0, 1);
        let r2 = probe::write_cr4(cr4);
        c.check(
            "xcr0-and-cr4-restored",
            r == Ok(()) && r2 == Ok(()) && !osxsave_bit(cr4),
            format_args!("xsetbv {r:?}, cr4 {r2:?}"),
        );
    }
}
