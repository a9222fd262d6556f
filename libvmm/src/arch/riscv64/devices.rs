//! The few devices and firmware calls the VMM itself uses: the NS16550A UART (console), the sifive_test
//! device (exit status to QEMU) and two SBI calls into OpenSBI (set_timer; DBCN as console fallback).
//!
//! MMIO goes through the `volatile` crate. Addresses come from the host device tree, defaulting to the
//! QEMU virt map (UART 0x1000_0000, test 0x10_0000) so the panic path can print before the tree is read.

use core::ptr::NonNull;
use core::sync::atomic::{AtomicU64, Ordering};

use volatile::VolatilePtr;

static UART_BASE: AtomicU64 = AtomicU64::new(0x1000_0000);
static TEST_BASE: AtomicU64 = AtomicU64::new(0x10_0000);

/// Records device addresses found in the device tree.
pub fn set_addresses(uart: Option<u64>, test: Option<u64>) {
    if let Some(u) = uart {
        UART_BASE.store(u, Ordering::Relaxed);
    }
    if let Some(t) = test {
        TEST_BASE.store(t, Ordering::Relaxed);
    }
}

/// The NS16550A at its MMIO base (register stride 1: THR at +0, LSR at +5).
pub struct Uart;

const LSR_THR_EMPTY: u8 = 1 << 5;

impl Uart {
    fn reg(off: u64) -> VolatilePtr<'static, u8> {
        let addr = UART_BASE.load(Ordering::Relaxed) + off;
        // SAFETY: the address is the UART's MMIO register from the device tree (or QEMU virt's), which
        // is device memory no Rust object occupies; VolatilePtr does only volatile byte accesses.
        unsafe { VolatilePtr::new(NonNull::new(addr as *mut u8).unwrap_or(NonNull::dangling())) }
    }

    pub fn put(b: u8) {
        let mut spins = 0u32;
        while Self::reg(5).read() & LSR_THR_EMPTY == 0 && spins < 100_000 {
            spins += 1;
        }
        Self::reg(0).write(b);
    }
}

impl embedded_io::ErrorType for Uart {
    type Error = core::convert::Infallible;
}

impl embedded_io::Write for Uart {
    fn write(&mut self, buf: &[u8]) -> Result<usize, Self::Error> {
        for &b in buf {
            Self::put(b);
        }
        crate::console::note_written(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> Result<(), Self::Error> {
        Ok(())
    }
}

/// Ends the QEMU run with `code` through sifive_test: 0x5555 is PASS (status 0), `code << 16 | 0x3333`
/// is FAIL with status `code`. Falls back to SBI SRST (which can only say "success") and then spins.
/// QEMU 10's test device only *requests* the shutdown; the CPU keeps running until the main loop acts on
/// it, so the fallback waits first: an SRST issued at once could win the race and end QEMU with status 0.
pub fn exit(code: u8) -> ! {
    let v: u32 = if code == 0 {
        0x5555
    } else {
        ((code as u32) << 16) | 0x3333
    };
    let addr = TEST_BASE.load(Ordering::Relaxed);
    // SAFETY: the sifive_test register from the device tree (or QEMU virt's): device memory, one 32-bit
    // volatile write that ends the machine.
    unsafe { VolatilePtr::new(NonNull::new(addr as *mut u32).unwrap_or(NonNull::dangling())) }
        .write(v);
    for i in 0..50_000_000u32 {
        core::hint::black_box(i);
    }
    use libvmm_abi::sbi;
    let reason = if code == 0 {
        sbi::SRST_REASON_NONE
    } else {
        sbi::SRST_REASON_FAILURE
    };
    sbi_call(
        sbi::EXT_SRST,
        sbi::SRST_SYSTEM_RESET,
        sbi::SRST_TYPE_SHUTDOWN,
        reason,
    );
    loop {
        super::csr::wfi();
    }
}

/// One SBI call into the firmware (a7 = ext, a6 = fid); returns (error, value).
/// (TIME, SRST and IPI: OpenSBI changes only a0/a1 and touches none of our memory for these.)
fn sbi_call(ext: u64, fid: u64, a0: u64, a1: u64) -> (i64, u64) {
    let (err, val): (i64, u64);
    // SAFETY: ECALL from HS-mode into OpenSBI, which follows the SBI calling convention: it preserves
    // every register except a0/a1 and touches no memory of ours for these calls (TIME, SRST).
    unsafe {
        core::arch::asm!("ecall", inlateout("a0") a0 => err, inlateout("a1") a1 => val,
            in("a6") fid, in("a7") ext, options(nostack));
    }
    (err, val)
}

/// SBI HSM hart_start: starts `hartid` in S-mode at `start` with a0 = hartid, a1 = `opaque`, satp = 0
/// and interrupts off. Returns the SBI error (0 = started or start pending).
pub fn hart_start(hartid: u64, start: u64, opaque: u64) -> i64 {
    let err: i64;
    // SAFETY: ECALL into OpenSBI's HSM extension (SBI calling convention: only a0/a1 change). The
    // started hart runs the image's own secondary entry on its own stack; nothing of ours is touched.
    unsafe {
        core::arch::asm!("ecall", inlateout("a0") hartid as i64 => err, inlateout("a1") start => _,
            in("a2") opaque, in("a6") libvmm_abi::sbi::HSM_HART_START, in("a7") libvmm_abi::sbi::EXT_HSM,
            options(nostack));
    }
    err
}

/// SBI TIME set_timer: programs the host's supervisor timer (also clears a pending STIP).
pub fn set_timer(deadline: u64) {
    sbi_call(
        libvmm_abi::sbi::EXT_TIME,
        libvmm_abi::sbi::TIME_SET_TIMER,
        deadline,
        0,
    );
}

/// SBI IPI `send_ipi` to one hart: a supervisor software interrupt there (the VMM's kick of a hart that
/// runs another vCPU). Returns the SBI error.
pub fn send_ipi(hartid: u64) -> i64 {
    let (hart_mask, base) = (1u64, hartid);
    sbi_call(
        libvmm_abi::sbi::EXT_IPI,
        libvmm_abi::sbi::IPI_SEND_IPI,
        hart_mask,
        base,
    )
    .0
}
