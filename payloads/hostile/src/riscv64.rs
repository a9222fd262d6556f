//! RISC-V attacks (H-extension backend): CSRs and instructions a VS-mode guest may not use, SBI calls with
//! wild pointers, overflowing lengths and unknown extensions, and (fatal) accesses outside guest memory.
use libvmm_guest::abi::layout::riscv64::{VMM_IMAGE_BASE, WINDOW_BASE, WINDOW_SIZE};
use libvmm_guest::arch::{probe, sbi_call, time, wait_for_timer};

use crate::Checks;

const ILLEGAL: u64 = probe::ILLEGAL;
use libvmm_guest::abi::sbi::{
    ERR_INVALID_PARAM, ERR_NOT_SUPPORTED, EXT_BASE as BASE, EXT_DBCN as DBCN, EXT_SRST as SRST,
};

pub fn recoverable(c: &mut Checks) {
    // Hypervisor CSRs and instructions: virtual-instruction traps in the VMM, injected back as illegal
    // instruction; M-mode CSRs and MRET: illegal instruction delegated straight to the guest.
    for (name, r) in [
        ("csrr-hgatp-is-illegal", probe::read_hgatp().map(|_| ())),
        ("csrw-hgatp-is-illegal", probe::write_hgatp(0)),
        ("csrr-hstatus-is-illegal", probe::read_hstatus().map(|_| ())),
        ("csrw-hstatus-is-illegal", probe::write_hstatus(0)),
        ("csrw-hedeleg-is-illegal", probe::write_hedeleg(u64::MAX)),
        ("csrr-mstatus-is-illegal", probe::read_mstatus().map(|_| ())),
        ("csrw-mstatus-is-illegal", probe::write_mstatus(0)),
        ("csrr-mhartid-is-illegal", probe::read_mhartid().map(|_| ())),
        ("hfence-gvma-is-illegal", probe::hfence_gvma()),
        ("hlv-is-illegal", probe::hlv_d(VMM_IMAGE_BASE).map(|_| ())),
        ("mret-is-illegal", probe::mret()),
        ("csrw-time-is-illegal", probe::write_time(0)),
    ] {
        c.check(name, r == Err(ILLEGAL), format_args!("got {r:x?}"));
    }
    // What the guest may do: its own satp and reading time.
    let r = probe::read_satp();
    c.check("csrr-satp-allowed", r == Ok(0), format_args!("got {r:x?}"));
    let r = probe::read_time();
    c.check("csrr-time-allowed", r.is_ok(), format_args!("got {r:x?}"));

    // SBI: unknown and legacy extensions are refused, the VM keeps running.
    for (name, ext) in [
        ("sbi-unknown-extension", 0x0BAD_0000u64),
        ("sbi-legacy-putchar", 0x01),
        ("sbi-legacy-shutdown", 0x08),
        ("sbi-ext-all-ones", u64::MAX),
    ] {
        let (e, _) = sbi_call(ext, 0, [b'!' as u64, 0, 0, 0, 0, 0]);
        c.check(name, e == ERR_NOT_SUPPORTED, format_args!("got {e}"));
    }
    let (e, v) = sbi_call(BASE, 3, [DBCN, 0, 0, 0, 0, 0]);
    c.check(
        "sbi-probe-dbcn",
        (e, v) == (0, 1),
        format_args!("got {e} {v}"),
    );
    for (name, ext) in [
        ("sbi-probe-hsm", 0x48_534D),
        ("sbi-probe-ipi", 0x73_5049),
        ("sbi-probe-rfence", 0x5246_4E43),
    ] {
        let (e, v) = sbi_call(BASE, 3, [ext, 0, 0, 0, 0, 0]);
        c.check(name, (e, v) == (0, 1), format_args!("got {e} {v}"));
    }
    smp(c);

    // DBCN with wild pointers and overflowing lengths.
    let bi = libvmm_guest::boot_info().expect("boot info");
    for (name, len, lo, hi) in [
        ("dbcn-vmm-memory", 64u64, VMM_IMAGE_BASE, 0u64),
        ("dbcn-opensbi-memory", 64, 0x8000_0000, 0),
        ("dbcn-overflowing-length", u64::MAX, bi.mem_base + 0x100, 0),
        ("dbcn-wrapping-pointer", 16, u64::MAX - 1, 0),
        ("dbcn-straddling-end", 64, WINDOW_BASE + WINDOW_SIZE - 8, 0),
        ("dbcn-base-hi-set", 1, bi.mem_base, 1),
    ] {
        let (e, _) = sbi_call(DBCN, 0, [len, lo, hi, 0, 0, 0]);
        c.check(name, e == ERR_INVALID_PARAM, format_args!("got {e}"));
        let (e, _) = sbi_call(DBCN, 1, [len, lo, hi, 0, 0, 0]);
        c.check(name, e == ERR_INVALID_PARAM, format_args!("read got {e}"));
    }
    let msg = b"hostile: dbcn write from the guest\n";
    let (e, v) = sbi_call(DBCN, 0, [msg.len() as u64, msg.as_ptr() as u64, 0, 0, 0, 0]);
    c.check(
        "dbcn-valid-write",
        (e, v) == (0, msg.len() as i64),
        format_args!("got {e} {v}"),
    );
    let (e, _) = sbi_call(SRST, 0, [1, 0, 0, 0, 0, 0]);
    c.check(
        "srst-reboot-refused",
        e == ERR_NOT_SUPPORTED,
        format_args!("got {e}"),
    );
    let (e, _) = sbi_call(SRST, 0, [0, 0x1234, 0, 0, 0, 0]);
    c.check(
        "srst-bad-reason-refused",
        e == ERR_INVALID_PARAM,
        format_args!("got {e}"),
    );

    // The guest's timer: SBI TIME set_timer, then the interrupt arrives in VS-mode.
    let ok = wait_for_timer(time() + 100);
    c.check(
        "timer-interrupt-delivered",
        ok,
        format_args!("no timer interrupt"),
    );

    // ISA discovery as the guest sees it: its device tree lists exactly the extensions the VMM enabled.
    let dt = libvmm_guest::arch::device_tree();
    let lists = |name: &[u8]| dt.windows(name.len()).any(|w| w == name);
    c.check(
        "guest-dt-lists-no-h",
        !lists(b"\0h\0"),
        format_args!("h listed"),
    );
    c.check(
        "guest-dt-lists-zicsr",
        lists(b"\0zicsr\0"),
        format_args!("zicsr missing"),
    );
    // Per-guest extension control reaches the hardware: Zicboz works exactly when the tree lists it.
    let zicboz = lists(b"\0zicboz\0");
    let r = probe::cbo_zero(bi.mem_base + 0x8000);
    c.check(
        "cbo-zero-matches-device-tree",
        r.is_ok() == zicboz,
        format_args!("listed {zicboz}, got {r:?}"),
    );
    libvmm_guest::println!(
        "hostile: info zicboz listed: {}",
        if zicboz { "yes" } else { "no" }
    );
    let zalasr = lists(b"\0zalasr\0");
    let lw_aq = probe::lw_aq(bi.mem_base);
    libvmm_guest::println!(
        "hostile: info guest device tree lists zalasr: {}; lw.aq {}",
        if zalasr { "yes" } else { "no" },
        match lw_aq {
            Ok(_) => "executed",
            Err(_) => "trapped (illegal instruction)",
        }
    );
}

/// Attacks that must stop the VM.
pub fn fatal(attack: &str) {
    let read = |a: u64| {
        // SAFETY: deliberately reads a guest-physical address outside guest memory.
        let v = unsafe { core::ptr::read_volatile(a as *const u64) };
        libvmm_guest::println!("hostile: read {a:#x}: {v:#x}");
    };
    let write = |a: u64, v: u32| {
        // SAFETY: deliberately writes outside guest memory.
        unsafe { core::ptr::write_volatile(a as *mut u32, v) };
    };
    match attack {
        "vmm-read" => read(VMM_IMAGE_BASE),
        "vmm-write" => write(VMM_IMAGE_BASE + 0x1000, 0xBAD),
        "beyond-window" => read(WINDOW_BASE + WINDOW_SIZE),
        "opensbi-read" => read(0x8000_0000),
        // The test device would end QEMU with "pass" if the guest could reach it.
        "test-device" => write(0x10_0000, 0x5555),
        "uart" => write(0x1000_0000, b'!' as u32),
        "pt-outside" => {
            // Sv39 with a root table just past guest memory: the next fetch's walk reads the root entry
            // there (index VA[38:30]), and that implicit read is what the VMM must name.
            let satp = (8u64 << 60) | ((WINDOW_BASE + WINDOW_SIZE) >> 12);
            // SAFETY: deliberately points the guest's own translation outside its memory; nothing after
            // this instruction can run.
            unsafe { core::arch::asm!("csrw satp, {0}", "sfence.vma", in(reg) satp) };
        }
        "spin" => loop {
            core::hint::spin_loop();
        },
        "halt" => {
            // SAFETY: WFI with interrupts masked and no timer armed: nothing can wake the guest.
            unsafe { core::arch::asm!("csrci sstatus, 2", "wfi") };
        }
        "sbi-shutdown-failure" => {
            sbi_call(SRST, 0, [0, 1, 0, 0, 0, 0]);
        }
        other => libvmm_guest::println!("hostile: unknown attack {other}"),
    }
}

/// Guest SMP calls with wrong arguments (any CPU count): architectural SBI errors, the VM runs on.
fn smp(c: &mut Checks) {
    use libvmm_guest::abi::sbi::*;
    let me = libvmm_guest::smp::current_cpu() as u64;
    let text = recoverable as *const () as usize as u64;
    for (name, ext, fid, args, want) in [
        // HSM: a running hart (this one), an address outside guest memory / not executable /
        // misaligned, a hart that does not exist, its status, non-retentive suspend.
        (
            "hsm-start-running-hart",
            EXT_HSM,
            HSM_HART_START,
            [me, text, 0],
            ERR_ALREADY_AVAILABLE,
        ),
        (
            "hsm-start-vmm-address",
            EXT_HSM,
            HSM_HART_START,
            [me, VMM_IMAGE_BASE, 0],
            ERR_INVALID_ADDRESS,
        ),
        (
            "hsm-start-data-address",
            EXT_HSM,
            HSM_HART_START,
            [me, WINDOW_BASE, 0],
            ERR_INVALID_ADDRESS,
        ),
        (
            "hsm-start-misaligned",
            EXT_HSM,
            HSM_HART_START,
            [me, text + 1, 0],
            ERR_INVALID_ADDRESS,
        ),
        (
            "hsm-start-no-such-hart",
            EXT_HSM,
            HSM_HART_START,
            [4096, text, 0],
            ERR_INVALID_PARAM,
        ),
        (
            "hsm-start-hart-all-ones",
            EXT_HSM,
            HSM_HART_START,
            [u64::MAX, text, 0],
            ERR_INVALID_PARAM,
        ),
        (
            "hsm-status-no-such-hart",
            EXT_HSM,
            HSM_HART_GET_STATUS,
            [4096, 0, 0],
            ERR_INVALID_PARAM,
        ),
        (
            "hsm-suspend-non-retentive",
            EXT_HSM,
            HSM_HART_SUSPEND,
            [HSM_SUSPEND_NON_RETENTIVE, text, 0],
            ERR_NOT_SUPPORTED,
        ),
        (
            "hsm-suspend-reserved-type",
            EXT_HSM,
            HSM_HART_SUSPEND,
            [1, 0, 0],
            ERR_INVALID_PARAM,
        ),
        // IPI and RFENCE to harts that do not exist, masks far out of range.
        (
            "ipi-no-such-hart",
            EXT_IPI,
            IPI_SEND_IPI,
            [1, 4096, 0],
            ERR_INVALID_PARAM,
        ),
        (
            "ipi-mask-base-far-out",
            EXT_IPI,
            IPI_SEND_IPI,
            [1, 1 << 40, 0],
            ERR_INVALID_PARAM,
        ),
        (
            "ipi-mask-all-bits",
            EXT_IPI,
            IPI_SEND_IPI,
            [u64::MAX, 0, 0],
            ERR_INVALID_PARAM,
        ),
        (
            "ipi-mask-shifted-out",
            EXT_IPI,
            IPI_SEND_IPI,
            [1 << 63, 1, 0],
            ERR_INVALID_PARAM,
        ),
        (
            "rfence-i-mask-far-out",
            EXT_RFENCE,
            RFENCE_FENCE_I,
            [1, 1 << 40, 0],
            ERR_INVALID_PARAM,
        ),
        (
            "rfence-vma-mask-far-out",
            EXT_RFENCE,
            RFENCE_SFENCE_VMA,
            [u64::MAX, 0, 0],
            ERR_INVALID_PARAM,
        ),
        (
            "rfence-vma-asid-no-such-hart",
            EXT_RFENCE,
            RFENCE_SFENCE_VMA_ASID,
            [1, 4096, 0],
            ERR_INVALID_PARAM,
        ),
        (
            "rfence-hfence-gvma-not-offered",
            EXT_RFENCE,
            RFENCE_HFENCE_GVMA,
            [1, 0, 0],
            ERR_NOT_SUPPORTED,
        ),
        (
            "rfence-hfence-vvma-not-offered",
            EXT_RFENCE,
            RFENCE_HFENCE_VVMA,
            [1, 0, 0],
            ERR_NOT_SUPPORTED,
        ),
    ] {
        let (e, _) = sbi_call(ext, fid, [args[0], args[1], args[2], 0, 0, 0]);
        c.check(name, e == want, format_args!("got {e}, want {want}"));
    }
    // What is allowed: this hart's status, a retentive suspend (returns), an IPI to itself (taken
    // later: interrupts are off, and it is cleared here), a fence of every hart.
    let (e, v) = sbi_call(EXT_HSM, HSM_HART_GET_STATUS, [me, 0, 0, 0, 0, 0]);
    c.check(
        "hsm-status-self-started",
        (e, v) == (0, HSM_STATE_STARTED),
        format_args!("got {e} {v}"),
    );
    let (e, _) = sbi_call(
        EXT_HSM,
        HSM_HART_SUSPEND,
        [HSM_SUSPEND_RETENTIVE, 0, 0, 0, 0, 0],
    );
    c.check(
        "hsm-suspend-retentive-returns",
        e == 0,
        format_args!("got {e}"),
    );
    let (e, _) = sbi_call(EXT_RFENCE, RFENCE_SFENCE_VMA, [0, u64::MAX, 0, 0, 0, 0]);
    c.check("rfence-vma-all-harts", e == 0, format_args!("got {e}"));
    let (e, _) = sbi_call(EXT_RFENCE, RFENCE_FENCE_I, [1, me, 0, 0, 0, 0]);
    c.check("rfence-i-self", e == 0, format_args!("got {e}"));
}
