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
    let r = probe::outsb(0x80, &0x55);
    c.check("string-io-is-gp", r == Err(GP), format_args!("got {r:?}"));
    let _ = (VMM_IMAGE_BASE, WINDOW_SIZE);
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
