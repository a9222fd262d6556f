//! RISC-V cases (H extension, the payload in VS-mode): blobs, CSR accesses, SBI calls, and edits of
//! the fuzzer's own Sv39 page tables (its `satp`), all run through `gf_run`, which the fuzzer's trap
//! handler returns from.
//!
//! Recovery: `gf_run(entry, regs)` saves ra, s0-s11, gp, tp and sp, loads x1..x30 from `regs` (sp = the
//! fuzzer's scratch stack; x31 carries the entry address) and jumps to `entry`. Every stub and blob ends
//! in `j gf_done`, an illegal instruction, so every case ends with a trap; the handler (installed for
//! every exception cause) records the cause and where it happened, and returns to `gf_resume` on the
//! saved stack. `restore` then puts back `satp` (bare), `sstatus`, `sie`, `stvec`, `sscratch`,
//! `scounteren` and `senvcfg`.
//!
//! Blobs run with the fuzzer's *sandbox* Sv39 tables, which map the guest window (four 2 MiB pages)
//! and nothing else: a random address raises a page fault in the guest (recoverable) instead of a
//! guest-page fault outside the window (which the VMM must stop: code 96, a wild-mode outcome).
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use libvmm_guest::arch::sbi_call;
use libvmm_guest::{set_trap_handler, Trap, TrapAction, TrapFrame};

use crate::{blobs, Kind, Outcome, Rng, Tally, MESSAGE};

pub use libvmm_guest::abi::layout::riscv64::{VMM_IMAGE_BASE, WINDOW_BASE, WINDOW_SIZE};

pub const REGISTER_KIND: &str = "csr";
pub const DEVICE_KIND: &str = "sbi";
pub const CONTROL_KIND: &str = "sbi";

const ILLEGAL: u64 = 2;
const MIB2: u64 = 2 << 20;
const GIB: u64 = 1 << 30;
const SATP_SV39: u64 = 8 << 60;
/// V R W X A D: a valid leaf with every right.
const LEAF_RWX: u64 = 0xCF;
const SSTATUS: u64 = 0x100;
const STVEC: u64 = 0x105;
const SATP: u64 = 0x180;
const CSRS: &[u64] = &[
    0x001, 0x002, 0x003, 0x008, 0x00F, 0x015, 0x100, 0x104, 0x105, 0x106, 0x10A, 0x10C, 0x140,
    0x141, 0x142, 0x143, 0x144, 0x14D, 0x180, 0x5A8, 0x200, 0x204, 0x240, 0x280, 0x600, 0x602,
    0x603, 0x604, 0x606, 0x607, 0x60A, 0x643, 0x644, 0x645, 0x64A, 0x680, 0x300, 0x301, 0x302,
    0x303, 0x304, 0x305, 0x30A, 0x340, 0x341, 0x342, 0x3A0, 0x3B0, 0x7A0, 0x7B0, 0xB00, 0xC00,
    0xC01, 0xC02, 0xC03, 0xDA0, 0xF11, 0xF12, 0xF13, 0xF14, 0xF15, 0xC20, 0xC21, 0xC22,
];

use libvmm_guest::abi::sbi;
/// SBI extensions a guest would try (the ids from `libvmm_abi::sbi` where it names them).
const EXTENSIONS: &[u64] = &[
    sbi::EXT_BASE,
    sbi::EXT_TIME,
    0x0073_5049, // IPI
    0x5246_4E43, // RFENCE
    0x0048_534D, // HSM
    sbi::EXT_SRST,
    0x0050_4D55, // PMU
    sbi::EXT_DBCN,
    0x5355_5350, // SUSP
    0x4350_5043, // CPPC
    0x4E41_434C, // NACL
    0x0053_5441, // STA
    sbi::EXT_LIBVMM,
    0x00,
    0x01,
    0x02,
    0x03,
    0x04,
    0x05,
    0x06,
    0x07,
    0x08,
];

#[repr(C, align(4096))]
struct Page([u64; 512]);
const ZERO_PAGE: Page = Page([0; 512]);

static mut SCRATCH: [Page; 4] = [ZERO_PAGE; 4];
static mut STACK: [Page; 4] = [ZERO_PAGE; 4];
/// The sandbox: ROOT -> L1 (for the gigabyte of the window) -> the window's four 2 MiB pages.
static mut SANDBOX: [Page; 2] = [ZERO_PAGE; 2];
static mut EDIT_L1: Page = ZERO_PAGE;
static mut EDIT_L0: Page = ZERO_PAGE;

#[no_mangle]
static GF_SAVED_SP: AtomicU64 = AtomicU64::new(0);
#[no_mangle]
static GF_ENTRY: AtomicU64 = AtomicU64::new(0);
static ARMED: AtomicBool = AtomicBool::new(false);
static LAST_CAUSE: AtomicU64 = AtomicU64::new(0);
static LAST_PC: AtomicU64 = AtomicU64::new(0);

/// CSRs `restore` puts back: (number, value at start).
static SAVED: [AtomicU64; 6] = [const { AtomicU64::new(0) }; 6];

core::arch::global_asm!(
    r#"
.section .text.gfuzz, "ax"
.global gf_run
gf_run:
    addi sp, sp, -128
    sd ra, 0(sp)
    sd s0, 8(sp)
    sd s1, 16(sp)
    sd s2, 24(sp)
    sd s3, 32(sp)
    sd s4, 40(sp)
    sd s5, 48(sp)
    sd s6, 56(sp)
    sd s7, 64(sp)
    sd s8, 72(sp)
    sd s9, 80(sp)
    sd s10, 88(sp)
    sd s11, 96(sp)
    sd gp, 104(sp)
    sd tp, 112(sp)
    lla t0, GF_SAVED_SP
    sd sp, 0(t0)
    lla t0, GF_ENTRY
    sd a0, 0(t0)
    mv t6, a1
    ld x1, 8(t6)
    ld x2, 16(t6)
    ld x3, 24(t6)
    ld x4, 32(t6)
    ld x5, 40(t6)
    ld x6, 48(t6)
    ld x7, 56(t6)
    ld x8, 64(t6)
    ld x9, 72(t6)
    ld x10, 80(t6)
    ld x11, 88(t6)
    ld x12, 96(t6)
    ld x13, 104(t6)
    ld x14, 112(t6)
    ld x15, 120(t6)
    ld x16, 128(t6)
    ld x17, 136(t6)
    ld x18, 144(t6)
    ld x19, 152(t6)
    ld x20, 160(t6)
    ld x21, 168(t6)
    ld x22, 176(t6)
    ld x23, 184(t6)
    ld x24, 192(t6)
    ld x25, 200(t6)
    ld x26, 208(t6)
    ld x27, 216(t6)
    ld x28, 224(t6)
    ld x29, 232(t6)
    ld x30, 240(t6)
    lla t6, GF_ENTRY
    ld t6, 0(t6)
    jr t6
.global gf_resume
gf_resume:
    lla t0, GF_SAVED_SP
    ld sp, 0(t0)
    ld ra, 0(sp)
    ld s0, 8(sp)
    ld s1, 16(sp)
    ld s2, 24(sp)
    ld s3, 32(sp)
    ld s4, 40(sp)
    ld s5, 48(sp)
    ld s6, 56(sp)
    ld s7, 64(sp)
    ld s8, 72(sp)
    ld s9, 80(sp)
    ld s10, 88(sp)
    ld s11, 96(sp)
    ld gp, 104(sp)
    ld tp, 112(sp)
    addi sp, sp, 128
    ret
.global gf_done
gf_done:
    .word 0xc0001073
.global gf_load
gf_load:
    ld a0, 0(a0)
    j gf_done
.global gf_store
gf_store:
    sd a1, 0(a0)
    j gf_done
.global gf_exec
gf_exec:
    jalr a0
    j gf_done
.global gf_wfi
gf_wfi:
    wfi
    j gf_done
"#
);

extern "C" {
    fn gf_run(entry: u64, regs: *const [u64; 32]);
    fn gf_resume();
    fn gf_done();
    fn gf_load();
    fn gf_store();
    fn gf_exec();
    fn gf_wfi();
    static gf_blob_table: [u64; blobs::SAFE_BLOBS + blobs::WILD_BLOBS];
    static gf_csr_read_table: [u64; 4096];
    static gf_csr_write_table: [u64; 4096];
}

/// Every exception cause: while a case runs, record it and return to `gf_resume`.
fn on_trap(f: &mut TrapFrame) -> TrapAction {
    if ARMED.swap(false, Ordering::SeqCst) {
        LAST_CAUSE.store(f.scause, Ordering::SeqCst);
        LAST_PC.store(f.sepc, Ordering::SeqCst);
        f.sepc = addr(gf_resume);
        f.x[2] = GF_SAVED_SP.load(Ordering::SeqCst);
        return TrapAction::Resume;
    }
    TrapAction::Default
}

/// The address of an assembly label declared as a function.
fn addr(f: unsafe extern "C" fn()) -> u64 {
    f as *const () as u64
}

fn run_at(entry: u64, regs: &[u64; 32]) -> Outcome {
    ARMED.store(true, Ordering::SeqCst);
    // SAFETY: `gf_run` saves ra, s0-s11, gp, tp and sp and restores them at `gf_resume`, where the armed
    // handler sends the trap every stub and blob ends with; `restore` puts back the CSRs a case may
    // change, and the scratch memory it may write is the fuzzer's own.
    unsafe { gf_run(entry, regs) };
    ARMED.store(false, Ordering::SeqCst);
    let c = LAST_CAUSE.load(Ordering::SeqCst);
    if c == ILLEGAL && LAST_PC.load(Ordering::SeqCst) == addr(gf_done) {
        Outcome::Completed
    } else {
        Outcome::Exception(c)
    }
}

fn scratch_base() -> u64 {
    core::ptr::addr_of!(SCRATCH) as u64
}

fn regs(rng: &mut Rng, set: &[(usize, u64)]) -> [u64; 32] {
    let mut r = [0u64; 32];
    for (i, v) in r.iter_mut().enumerate() {
        *v = match i {
            0 => 0,
            2 => core::ptr::addr_of!(STACK) as u64 + 4 * 4096 - 1024 - (rng.below(64) & !15),
            _ if rng.chance(70) => scratch_base() + 0x1000 + (rng.below(0x2000) & !7),
            // A wild value, but never the fuzzer's own memory outside its scratch area (its stack,
            // tallies and trap table live there, and the sandbox maps the whole window writable).
            _ => match rng.wild() {
                w if (WINDOW_BASE..WINDOW_BASE + WINDOW_SIZE).contains(&w) => {
                    scratch_base() + (w & 0x3FF8)
                }
                w => w,
            },
        };
    }
    for &(i, v) in set {
        r[i] = v;
    }
    r
}

fn table(i: usize) -> *mut u64 {
    let sb = core::ptr::addr_of_mut!(SANDBOX) as *mut Page;
    sb.wrapping_add(i).cast()
}

fn write_entry(t: *mut u64, i: usize, v: u64) {
    // SAFETY: `t` is one of the fuzzer's page-table pages, `i` < 512.
    unsafe { t.add(i).write_volatile(v) }
}

fn read_entry(t: *const u64, i: usize) -> u64 {
    // SAFETY: as in `write_entry`.
    unsafe { t.add(i).read_volatile() }
}

fn pte(pa: u64, flags: u64) -> u64 {
    ((pa >> 12) << 10) | flags
}

fn set_satp(v: u64) {
    // SAFETY: `v` is 0 (bare) or the sandbox, which maps the whole window (the fuzzer itself) identity.
    unsafe { core::arch::asm!("csrw satp, {}", "sfence.vma", in(reg) v, options(nostack)) };
}

fn sandbox_satp(rng: &mut Rng) -> u64 {
    SATP_SV39 | (rng.below(16) << 44) | (table(0) as u64 >> 12)
}

macro_rules! csr_pair {
    ($($name:literal),*) => {
        /// Reads the CSRs `restore` keeps, in `SAVED`'s order.
        fn read_saved() -> [u64; 6] {
            let mut v = [0u64; 6];
            let mut i = 0;
            $(
                // SAFETY: reading an S-mode CSR has no side effects.
                unsafe { core::arch::asm!(concat!("csrr {}, ", $name), out(reg) v[i], options(nomem, nostack)) };
                i += 1;
            )*
            let _ = i;
            v
        }
        /// Writes back every CSR of `SAVED` whose value changed.
        fn write_saved(now: [u64; 6]) {
            let mut i = 0;
            $(
                let want = SAVED[i].load(Ordering::Relaxed);
                if now[i] != want {
                    // SAFETY: the value this CSR held when the fuzzer started.
                    unsafe { core::arch::asm!(concat!("csrw ", $name, ", {}"), in(reg) want, options(nostack)) };
                }
                i += 1;
            )*
            let _ = i;
        }
    };
}
csr_pair!("sstatus", "sie", "stvec", "sscratch", "0x106", "0x10A");

pub fn init() {
    for (slot, v) in SAVED.iter().zip(read_saved()) {
        slot.store(v, Ordering::Relaxed);
    }
    let (root, l1) = (table(0), table(1));
    write_entry(root, (WINDOW_BASE / GIB) as usize, pte(l1 as u64, 1));
    for k in 0..WINDOW_SIZE / MIB2 {
        let pa = WINDOW_BASE + k * MIB2;
        write_entry(l1, ((pa % GIB) / MIB2) as usize, pte(pa, LEAF_RWX));
    }
    for c in 0..64 {
        set_trap_handler(Trap::Riscv(c), on_trap).expect("RISC-V cause");
    }
}

pub fn restore() {
    set_satp(0);
    write_saved(read_saved());
}

pub fn run(kind: Kind, seed: u64, rng: &mut Rng, wild: bool, t: &mut Tally) -> Outcome {
    match kind {
        Kind::Blob => blob(rng, wild),
        Kind::Register => csr(rng, wild),
        Kind::Device | Kind::Control => sbi_case(rng, wild, seed, t),
        _ => page_table(rng, wild),
    }
}

fn blob(rng: &mut Rng, wild: bool) -> Outcome {
    let i = if wild && rng.chance(50) {
        blobs::SAFE_BLOBS + rng.below(blobs::WILD_BLOBS as u64) as usize
    } else {
        rng.below(blobs::SAFE_BLOBS as u64) as usize
    };
    // SAFETY: the table build.rs generated, with this many entries.
    let entry = unsafe {
        core::ptr::addr_of!(gf_blob_table)
            .cast::<u64>()
            .add(i)
            .read()
    };
    if crate::VERBOSE.load(Ordering::Relaxed) {
        libvmm_guest::println!("guestfuzz: blob {i} at {entry:#x}");
    }
    let r = regs(rng, &[]);
    if !(wild && rng.chance(50)) {
        set_satp(sandbox_satp(rng));
    }
    run_at(entry, &r)
}

fn csr(rng: &mut Rng, wild: bool) -> Outcome {
    let n = if rng.chance(70) {
        rng.pick(CSRS)
    } else {
        rng.below(4096)
    };
    let refused = matches!(n, SSTATUS | STVEC | SATP) && !wild;
    let (table, v) = if rng.chance(40) || refused {
        (core::ptr::addr_of!(gf_csr_read_table), 0)
    } else {
        let v = match rng.below(3) {
            0 => 0,
            1 => 1 << rng.below(64),
            _ => rng.word(),
        };
        (core::ptr::addr_of!(gf_csr_write_table), v)
    };
    // SAFETY: a table of 4096 stub addresses generated by build.rs; n < 4096.
    let entry = unsafe { table.cast::<u64>().add(n as usize).read() };
    run_at(entry, &regs(rng, &[(11, v)]))
}

/// A random SBI call. Safe mode leaves out the calls that end the VM (system reset, legacy shutdown,
/// the libvmm EXIT and ABORT hypercalls, hart stop and suspend); a DBCN write whose buffer is valid
/// writes a fixed message, and a DBCN read lands in the scratch area.
fn sbi_case(rng: &mut Rng, wild: bool, seed: u64, t: &mut Tally) -> Outcome {
    let ext = if rng.chance(85) {
        rng.pick(EXTENSIONS)
    } else {
        rng.word()
    };
    let fid = if rng.chance(80) {
        rng.below(8)
    } else {
        rng.word()
    };
    let fatal = ext == sbi::EXT_SRST
        || ext == 0x08
        || (ext == libvmm_guest::abi::SBI_EXT_LIBVMM && matches!(fid, 2 | 3))
        || (ext == 0x0048_534D && matches!(fid, 1 | 3))
        || ext == 0x5355_5350;
    if fatal && !wild {
        return Outcome::Completed;
    }
    let mut a = [
        rng.wild(),
        rng.wild(),
        rng.wild(),
        rng.wild(),
        rng.wild(),
        rng.wild(),
    ];
    if ext == sbi::EXT_DBCN {
        let (base, size) = crate::window();
        let inside = a[1] >= base && a[1].checked_add(a[0]).is_some_and(|e| e <= base + size);
        if inside && fid == 0 {
            a[1] = MESSAGE.as_ptr() as u64;
            a[0] = a[0].min(MESSAGE.len() as u64);
            a[2] = 0;
        } else if inside || fid == 1 {
            a[0] = a[0].min(64);
            a[1] = scratch_base();
            a[2] = 0;
        }
    }
    if ext == 0x01 {
        a[0] = b'.' as u64; // legacy console putchar: one visible byte
    }
    let (e, _) = sbi_call(ext, fid, a);
    // Legacy extensions (0..=0xF) return a value in a0, not an SBI error.
    if ext > 0x0F && !(-13..=0).contains(&e) {
        t.fail(
            seed,
            format_args!("SBI ext {ext:#x} fid {fid:#x} answered error {e}, not an SBI error code"),
        );
    }
    Outcome::Completed
}

/// Random flags of a leaf or pointer entry (V not included), with a reserved bit now and then.
fn flags(rng: &mut Rng) -> u64 {
    let mut f = rng.word() & 0xFE; // R W X U G A D
    if rng.chance(20) {
        f |= 1 << (54 + rng.below(10)); // reserved, PBMT, N
    }
    f
}

/// [`flags`] of a leaf: R or X always set. With R, W and X all clear the entry would be a pointer to a
/// next-level table at the window's base, whose random contents could send the walk outside guest
/// memory (a stop, 96: wild mode only).
fn leaf_flags(rng: &mut Rng) -> u64 {
    let f = flags(rng);
    if f & 0xA == 0 {
        f | 2
    } else {
        f
    }
}

/// Edits one entry of the fuzzer's own Sv39 tables (never the ones that map the window in safe
/// mode), turns translation on, touches an address the entry maps, and turns it off again.
fn page_table(rng: &mut Rng, wild: bool) -> Outcome {
    let (root, l1) = (table(0), table(1));
    let window_gib = WINDOW_BASE / GIB;
    let sign = |va: u64| {
        if va & (1 << 38) != 0 {
            va | !((1 << 39) - 1)
        } else {
            va
        }
    };
    let (t, index, va_base, span, root_level) = if rng.chance(30) {
        let i = loop {
            let i = rng.below(512);
            if i != window_gib || wild {
                break i;
            }
        };
        (root, i as usize, sign(i << 30), GIB, true)
    } else {
        let first = (WINDOW_BASE % GIB) / MIB2;
        let i = loop {
            let i = rng.below(512);
            if !(first..first + WINDOW_SIZE / MIB2).contains(&i) || wild {
                break i;
            }
        };
        (l1, i as usize, (window_gib << 30) | (i << 21), MIB2, false)
    };
    let old = read_entry(t, index);
    let scratch = scratch_base();
    let (new, va, write) = match rng.below(3) {
        0 => (rng.word() & !1, va_base + rng.below(span), rng.chance(50)),
        1 if root_level => (
            pte(window_gib * GIB, 1 | leaf_flags(rng)),
            va_base + (WINDOW_BASE % GIB) + rng.below(WINDOW_SIZE),
            false,
        ),
        1 => (
            pte(
                WINDOW_BASE + rng.below(WINDOW_SIZE / MIB2) * MIB2,
                1 | leaf_flags(rng),
            ),
            va_base + rng.below(span),
            false,
        ),
        _ => {
            let (e1, e0) = (
                core::ptr::addr_of_mut!(EDIT_L1) as *mut u64,
                core::ptr::addr_of_mut!(EDIT_L0) as *mut u64,
            );
            for i in 0..512 {
                let v = if rng.chance(90) { 1 } else { 0 };
                write_entry(e0, i, pte(scratch + rng.below(4) * 4096, v | flags(rng)));
            }
            let target = if root_level {
                for i in 0..512 {
                    write_entry(e1, i, pte(e0 as u64, 1 | (flags(rng) & !0xE)));
                }
                e1 as u64
            } else {
                e0 as u64
            };
            (
                pte(target, 1 | (flags(rng) & !0xE)),
                va_base + rng.below(span),
                rng.chance(50),
            )
        }
    };
    write_entry(t, index, new);
    set_satp(sandbox_satp(rng));
    let stub = if write { addr(gf_store) } else { addr(gf_load) };
    let value = rng.word();
    let r = regs(rng, &[(10, va), (11, value)]);
    let o = if wild && rng.chance(20) {
        // Wild: execute through the edit, wait for an interrupt, or leave the window with bare
        // translation.
        match rng.below(3) {
            0 => run_at(addr(gf_exec), &r),
            1 => run_at(addr(gf_wfi), &r),
            _ => {
                set_satp(0);
                let out = WINDOW_BASE + WINDOW_SIZE + rng.below(GIB);
                run_at(addr(gf_load), &regs(rng, &[(10, out)]))
            }
        }
    } else {
        run_at(stub, &r)
    };
    set_satp(0);
    write_entry(t, index, old);
    o
}
