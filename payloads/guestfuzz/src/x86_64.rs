//! x86 cases (SVM, VMX): blobs, MSRs, ports, CR0/CR4/XCR0 writes, edits of the guest page tables the
//! VMM built (reachable from CR3), all run through `gf_run`, which the fuzzer's exception handler
//! returns from.
//!
//! Recovery: `gf_run(entry, regs)` saves the callee-saved registers and RSP, loads all sixteen
//! general-purpose registers from `regs` (RSP = the fuzzer's scratch stack) and jumps to `entry`. Every
//! stub and blob ends in `jmp gf_done`, a UD2, so every case ends with an exception; the handler
//! (installed for all 32 vectors) records the vector and where it happened, and returns to
//! `gf_resume` on the saved stack with CS, SS and RFLAGS the fuzzer's own. `restore` then puts back
//! what a case may have changed: CR3, CR0, CR4, XCR0, DR7, the data segment registers and the MSRs a
//! guest may write (EFER, FS/GS bases, KERNEL_GS_BASE, PAT).
//!
//! Blobs run on the fuzzer's own *sandbox* page tables, which map the guest window and nothing else:
//! a random address then raises #PF in the guest (recoverable) instead of reaching guest-physical
//! memory outside the window (which the VMM must stop: code 96, a wild-mode outcome).
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use libvmm_guest::arch::probe;
use libvmm_guest::{set_trap_handler, Trap, TrapAction, TrapFrame};

use crate::{blobs, Kind, Outcome, Rng, Tally};

pub use libvmm_guest::abi::layout::x86_64::{VMM_IMAGE_BASE, WINDOW_BASE, WINDOW_SIZE};

pub const REGISTER_KIND: &str = "msr";
pub const DEVICE_KIND: &str = "port";
pub const CONTROL_KIND: &str = "control-register";

const UD: u64 = 6;
const MIB2: u64 = 2 << 20;
const ADDR: u64 = 0x000F_FFFF_FFFF_F000;
const CR4_OSXSAVE: u64 = 1 << 18;
const MSR_EFER: u32 = 0xC000_0080;
const MSR_FS_BASE: u32 = 0xC000_0100;
const MSR_GS_BASE: u32 = 0xC000_0101;
const MSR_KERNEL_GS_BASE: u32 = 0xC000_0102;
const MSR_PAT: u32 = 0x277;
/// The MSRs a guest may write (docs/hypercall-abi.md, section 5), restored after each case.
const WRITABLE_MSRS: [u32; 5] = [
    MSR_EFER,
    MSR_FS_BASE,
    MSR_GS_BASE,
    MSR_KERNEL_GS_BASE,
    MSR_PAT,
];
/// MSRs a guest is likely to try, besides random numbers.
const MSRS: &[u32] = &[
    MSR_EFER,
    MSR_FS_BASE,
    MSR_GS_BASE,
    MSR_KERNEL_GS_BASE,
    MSR_PAT,
    0x10,
    0x1B,
    0x3A,
    0x48,
    0x8B,
    0xFE,
    0x174,
    0x175,
    0x176,
    0x1D9,
    0x2FF,
    0x480,
    0x48D,
    0x6E0,
    0x802,
    0x808,
    0x80B,
    0x830,
    0x838,
    0xC000_0081,
    0xC000_0082,
    0xC000_0084,
    0xC000_0103,
    0xC001_0010,
    0xC001_0114,
    0xC001_0117,
    0xC001_0131,
    0x4000_0000,
    0x4B56_4D00,
];
const PORTS: &[u16] = &[
    0x20, 0x21, 0x40, 0x43, 0x60, 0x61, 0x64, 0x70, 0x71, 0x80, 0x92, 0xA0, 0x1F0, 0x2F8, 0x3F8,
    0x3F9, 0x3FD, 0x402, 0x510, 0x511, 0x604, 0xCF8, 0xCFC, 0xF4, 0xB004,
];

#[repr(C, align(4096))]
struct Page([u64; 512]);
const ZERO_PAGE: Page = Page([0; 512]);

/// Registers of a blob point into this (and so do the pages the page-table edits map).
static mut SCRATCH: [Page; 4] = [ZERO_PAGE; 4];
/// The stack blobs run on (and the exception frame lands on).
static mut STACK: [Page; 4] = [ZERO_PAGE; 4];
/// The sandbox tables: PML4 -> PDPT -> PD with the window's four 2 MiB pages only.
static mut SANDBOX: [Page; 4] = [ZERO_PAGE; 4];
/// A page directory and a page table the page-table edits point entries at.
static mut EDIT_PD: Page = ZERO_PAGE;
static mut EDIT_PT: Page = ZERO_PAGE;

#[no_mangle]
static GF_SAVED_RSP: AtomicU64 = AtomicU64::new(0);
#[no_mangle]
static GF_ENTRY: AtomicU64 = AtomicU64::new(0);
static ARMED: AtomicBool = AtomicBool::new(false);
static LAST_VECTOR: AtomicU64 = AtomicU64::new(0);
static LAST_RIP: AtomicU64 = AtomicU64::new(0);
static MSRS_DIRTY: AtomicBool = AtomicBool::new(false);

/// What `init` found, and `restore` puts back.
struct Saved {
    cr0: u64,
    cr3: u64,
    cr4: u64,
    xcr0: u64,
    cs: u64,
    ss: u64,
    ds: u64,
    es: u64,
    fs: u64,
    gs: u64,
    msrs: [Option<u64>; 5],
}

static mut SAVED: Saved = Saved {
    cr0: 0,
    cr3: 0,
    cr4: 0,
    xcr0: 1,
    cs: 0x08,
    ss: 0x10,
    ds: 0x10,
    es: 0x10,
    fs: 0,
    gs: 0,
    msrs: [None; 5],
};

fn saved() -> &'static Saved {
    // SAFETY: written once by `init` before any reader; single vCPU, no interrupts.
    unsafe { &*core::ptr::addr_of!(SAVED) }
}

core::arch::global_asm!(
    r#"
.section .text.gfuzz, "ax"
.global gf_run
gf_run:
    push rbx
    push rbp
    push r12
    push r13
    push r14
    push r15
    mov [rip + GF_SAVED_RSP], rsp
    mov [rip + GF_ENTRY], rdi
    mov rax, [rsi + 0]
    mov rbx, [rsi + 8]
    mov rcx, [rsi + 16]
    mov rdx, [rsi + 24]
    mov rdi, [rsi + 40]
    mov rbp, [rsi + 48]
    mov rsp, [rsi + 56]
    mov r8, [rsi + 64]
    mov r9, [rsi + 72]
    mov r10, [rsi + 80]
    mov r11, [rsi + 88]
    mov r12, [rsi + 96]
    mov r13, [rsi + 104]
    mov r14, [rsi + 112]
    mov r15, [rsi + 120]
    mov rsi, [rsi + 32]
    jmp [rip + GF_ENTRY]
.global gf_resume
gf_resume:
    mov rsp, [rip + GF_SAVED_RSP]
    pop r15
    pop r14
    pop r13
    pop r12
    pop rbp
    pop rbx
    ret
.global gf_done
gf_done:
    ud2
.global gf_load
gf_load:
    mov rax, [rdi]
    jmp gf_done
.global gf_store
gf_store:
    mov [rdi], rsi
    jmp gf_done
.global gf_exec
gf_exec:
    call rdi
    jmp gf_done
.global gf_wcr0
gf_wcr0:
    mov cr0, rdi
    jmp gf_done
.global gf_wcr3
gf_wcr3:
    mov cr3, rdi
    jmp gf_done
.global gf_xsetbv
gf_xsetbv:
    xsetbv
    jmp gf_done
.global gf_hlt
gf_hlt:
    hlt
    jmp gf_done
"#
);

extern "C" {
    fn gf_run(entry: u64, regs: *const [u64; 16]);
    fn gf_resume();
    fn gf_done();
    fn gf_load();
    fn gf_store();
    fn gf_exec();
    fn gf_wcr0();
    fn gf_wcr3();
    fn gf_xsetbv();
    fn gf_hlt();
    static gf_blob_table: [u64; blobs::SAFE_BLOBS + blobs::WILD_BLOBS];
}

/// Every exception vector: while a case runs, record it and return to `gf_resume`.
fn on_trap(f: &mut TrapFrame) -> TrapAction {
    // SAFETY: clears the direction flag a blob may have set (Rust code assumes it clear).
    unsafe { core::arch::asm!("cld", options(nomem, nostack)) };
    if ARMED.swap(false, Ordering::SeqCst) {
        LAST_VECTOR.store(f.vector, Ordering::SeqCst);
        LAST_RIP.store(f.rip, Ordering::SeqCst);
        let s = saved();
        f.rip = addr(gf_resume);
        f.rsp = GF_SAVED_RSP.load(Ordering::SeqCst);
        f.cs = s.cs;
        f.ss = s.ss;
        f.rflags = 0x2;
        return TrapAction::Resume;
    }
    if f.vector == 1 {
        // A hardware breakpoint a blob left in DR7 (GD is clear now: #DB delivery clears it).
        // SAFETY: disables every debug breakpoint.
        unsafe {
            core::arch::asm!("xor eax, eax", "mov dr7, rax", out("rax") _, options(nomem, nostack))
        };
        return TrapAction::Resume;
    }
    TrapAction::Default
}

/// Runs `entry` with `regs` (index 7 = RSP) until it raises an exception.
/// The address of an assembly label declared as a function.
fn addr(f: unsafe extern "C" fn()) -> u64 {
    f as *const () as u64
}

fn run_at(entry: u64, regs: &[u64; 16]) -> Outcome {
    ARMED.store(true, Ordering::SeqCst);
    // SAFETY: `gf_run` saves the callee-saved registers and RSP and restores them at `gf_resume`, where
    // the armed handler sends the exception every stub and blob ends with; what else the code changed
    // (control registers, MSRs, segments, memory in the scratch area) is restored by `restore`.
    unsafe { gf_run(entry, regs) };
    ARMED.store(false, Ordering::SeqCst);
    let v = LAST_VECTOR.load(Ordering::SeqCst);
    if v == UD && LAST_RIP.load(Ordering::SeqCst) == addr(gf_done) {
        Outcome::Completed
    } else {
        Outcome::Exception(v)
    }
}

fn scratch_base() -> u64 {
    core::ptr::addr_of!(SCRATCH) as u64
}

fn stack_top() -> u64 {
    core::ptr::addr_of!(STACK) as u64 + 4 * 4096
}

/// Registers for a stub: scratch pointers, RSP on the fuzzer's stack, and `set` on top.
fn regs(rng: &mut Rng, set: &[(usize, u64)]) -> [u64; 16] {
    let mut r = [0u64; 16];
    for (i, v) in r.iter_mut().enumerate() {
        *v = match i {
            2 => rng.below(64), // RCX: small, for REP string instructions
            7 => stack_top() - 1024 - (rng.below(64) & !15),
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

fn read_cr(n: u8) -> u64 {
    let v: u64;
    // SAFETY: reading a control register has no side effects at CPL 0.
    unsafe {
        match n {
            0 => core::arch::asm!("mov {}, cr0", out(reg) v, options(nomem, nostack)),
            3 => core::arch::asm!("mov {}, cr3", out(reg) v, options(nomem, nostack)),
            _ => core::arch::asm!("mov {}, cr4", out(reg) v, options(nomem, nostack)),
        }
    }
    v
}

fn xgetbv0() -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: XGETBV(0) only reads XCR0; called only with CR4.OSXSAVE set.
    unsafe {
        core::arch::asm!("xgetbv", in("ecx") 0u32, out("eax") lo, out("edx") hi, options(nomem, nostack))
    };
    ((hi as u64) << 32) | lo as u64
}

fn segments() -> [u64; 6] {
    let (cs, ss, ds, es, fs, gs): (u16, u16, u16, u16, u16, u16);
    // SAFETY: reading segment selectors has no side effects.
    unsafe {
        core::arch::asm!(
            "mov {0:x}, cs", "mov {1:x}, ss", "mov {2:x}, ds", "mov {3:x}, es", "mov {4:x}, fs", "mov {5:x}, gs",
            out(reg) cs, out(reg) ss, out(reg) ds, out(reg) es, out(reg) fs, out(reg) gs,
            options(nomem, nostack)
        )
    };
    [cs, ss, ds, es, fs, gs].map(u64::from)
}

fn page(p: *mut Page) -> *mut u64 {
    p.cast()
}

fn write_entry(table: *mut u64, i: usize, v: u64) {
    // SAFETY: `table` is a page-table page (the VMM's, inside the window, or the fuzzer's own), `i` < 512.
    unsafe { table.add(i).write_volatile(v) }
}

fn read_entry(table: *const u64, i: usize) -> u64 {
    // SAFETY: as in `write_entry`.
    unsafe { table.add(i).read_volatile() }
}

fn load_cr3(v: u64) {
    // SAFETY: `v` is the VMM's page tables or the sandbox, both of which map the fuzzer itself.
    unsafe { core::arch::asm!("mov cr3, {}", in(reg) v, options(nostack)) };
}

pub fn init() {
    let seg = segments();
    let cr4 = read_cr(4);
    let mut msrs = [None; 5];
    for (slot, msr) in msrs.iter_mut().zip(WRITABLE_MSRS) {
        *slot = probe::rdmsr(msr).ok();
    }
    let s = Saved {
        cr0: read_cr(0),
        cr3: read_cr(3),
        cr4,
        xcr0: if cr4 & CR4_OSXSAVE != 0 { xgetbv0() } else { 1 },
        cs: seg[0],
        ss: seg[1],
        ds: seg[2],
        es: seg[3],
        fs: seg[4],
        gs: seg[5],
        msrs,
    };
    // SAFETY: single-threaded start-up, before any reader.
    unsafe { core::ptr::addr_of_mut!(SAVED).write(s) };
    // The sandbox: the window, identity, writable; nothing else. The first 2 MiB go through 4 KiB
    // pages so that the payload's own text and read-only data are read-only here too: a blob's write
    // there is the fuzzer's #PF, not a W^X stop by the VMM (whose nested tables forbid it as well).
    let sb = core::ptr::addr_of_mut!(SANDBOX) as *mut Page;
    // SAFETY: the four pages of SANDBOX.
    let (pml4, pdpt, pd, pt) =
        unsafe { (page(sb), page(sb.add(1)), page(sb.add(2)), page(sb.add(3))) };
    write_entry(pml4, 0, pdpt as u64 | 3);
    write_entry(pdpt, 0, pd as u64 | 3);
    for i in 0..WINDOW_SIZE / MIB2 {
        let pa = WINDOW_BASE + i * MIB2;
        write_entry(pd, (pa / MIB2) as usize, pa | 0x83);
    }
    extern "C" {
        static __payload_ro_end: u8;
    }
    let ro = (
        libvmm_guest::abi::layout::x86_64::PAYLOAD_BASE,
        core::ptr::addr_of!(__payload_ro_end) as u64,
    );
    for i in 0..512u64 {
        let pa = WINDOW_BASE + i * 4096;
        let writable = if (ro.0..ro.1).contains(&pa) { 0 } else { 2 };
        write_entry(pt, i as usize, pa | 1 | writable);
    }
    write_entry(pd, (WINDOW_BASE / MIB2) as usize, pt as u64 | 3);
    for v in 0..32 {
        set_trap_handler(Trap::X86(v), on_trap).expect("x86 vector");
    }
}

/// Puts back what a case may have changed.
pub fn restore() {
    let s = saved();
    if read_cr(3) != s.cr3 {
        load_cr3(s.cr3);
    }
    let mut rng = Rng::new(0);
    if read_cr(0) != s.cr0 {
        run_at(addr(gf_wcr0), &regs(&mut rng, &[(5, s.cr0)]));
    }
    let cr4 = read_cr(4);
    if cr4 & CR4_OSXSAVE != 0 && xgetbv0() != s.xcr0 {
        let x = if s.cr4 & CR4_OSXSAVE != 0 { s.xcr0 } else { 1 };
        run_at(
            addr(gf_xsetbv),
            &regs(&mut rng, &[(2, 0), (0, x & 0xFFFF_FFFF), (3, x >> 32)]),
        );
    }
    if cr4 != s.cr4 {
        let _ = probe::write_cr4(s.cr4);
    }
    // SAFETY: clears DR7 (a #DB from GD is handled by `on_trap`) and reloads the data segment
    // registers with the selectors the fuzzer started with.
    unsafe {
        core::arch::asm!("xor eax, eax", "mov dr7, rax", out("rax") _, options(nomem, nostack));
        core::arch::asm!(
            "mov ds, {0:x}", "mov es, {1:x}", "mov fs, {2:x}", "mov gs, {3:x}",
            in(reg) s.ds, in(reg) s.es, in(reg) s.fs, in(reg) s.gs, options(nostack)
        );
    }
    if MSRS_DIRTY.swap(false, Ordering::SeqCst) {
        for (msr, v) in WRITABLE_MSRS.iter().zip(s.msrs) {
            if let Some(v) = v {
                if probe::rdmsr(*msr) != Ok(v) {
                    let _ = probe::wrmsr(*msr, v);
                }
            }
        }
    }
}

pub fn run(kind: Kind, seed: u64, rng: &mut Rng, wild: bool, t: &mut Tally) -> Outcome {
    match kind {
        Kind::Blob => blob(rng, wild),
        Kind::Register => msr(rng),
        Kind::Device => port(rng, seed, t),
        Kind::Control => control(rng),
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
    let mut r = regs(rng, &[]);
    if rng.chance(30) {
        r[2] = rng.pick(MSRS) as u64; // RCX: an MSR number for RDMSR/WRMSR
    }
    if rng.chance(20) {
        r[0] = rng.below(0x20); // RAX: a CPUID leaf
    }
    MSRS_DIRTY.store(true, Ordering::SeqCst);
    // Wild blobs may also run on the VMM's tables, where a random address leaves guest memory.
    if !(wild && rng.chance(50)) {
        load_cr3(core::ptr::addr_of!(SANDBOX) as u64);
    }
    run_at(entry, &r)
}

fn msr(rng: &mut Rng) -> Outcome {
    let msr = if rng.chance(70) {
        rng.pick(MSRS)
    } else {
        rng.word() as u32
    };
    // The local APIC's MSRs (IA32_APIC_BASE, TSC_DEADLINE, x2APIC 0x800-0x8FF) are read only: a write
    // can arm the guest's own timer or send it a self-IPI, and an interrupt landing inside a case that
    // broke the stack or the page tables is the fuzzer's fault, not the VMM's. Writes to them are fuzzed
    // by the host's `apic` fuzz target and the hostile payload's APIC cases.
    let apic = msr == 0x1B || msr == 0x6E0 || (0x800..=0x8FF).contains(&msr);
    let r = if apic || rng.chance(40) {
        probe::rdmsr(msr).map(|_| ())
    } else {
        let old = probe::rdmsr(msr).unwrap_or(0);
        let v = match rng.below(4) {
            0 => old ^ (1 << rng.below(64)),
            1 => old,
            2 => 0,
            _ => rng.word(),
        };
        MSRS_DIRTY.store(true, Ordering::SeqCst);
        probe::wrmsr(msr, v)
    };
    r.map_or_else(|v| Outcome::Exception(v as u64), |_| Outcome::Completed)
}

fn port(rng: &mut Rng, seed: u64, t: &mut Tally) -> Outcome {
    let port = if rng.chance(70) {
        rng.pick(PORTS)
    } else {
        rng.word() as u16
    };
    let v = rng.word() as u32;
    let r = match rng.below(5) {
        0 => probe::inb(port).map(|x| {
            if x != 0xFF {
                t.fail(
                    seed,
                    format_args!("IN AL from port {port:#x} read {x:#x}, not all ones"),
                );
            }
        }),
        1 => probe::inl(port).map(|x| {
            if x != u32::MAX {
                t.fail(
                    seed,
                    format_args!("IN EAX from port {port:#x} read {x:#x}, not all ones"),
                );
            }
        }),
        2 => probe::outb(port, v as u8),
        3 => probe::outl(port, v),
        _ => probe::outsb(port, &(v as u8)),
    };
    r.map_or_else(|v| Outcome::Exception(v as u64), |_| Outcome::Completed)
}

fn control(rng: &mut Rng) -> Outcome {
    let s = saved();
    match rng.below(3) {
        0 => {
            let v = match rng.below(3) {
                0 => s.cr0 ^ (1 << rng.below(64)),
                1 => s.cr0 ^ (1 << rng.below(32)) ^ (1 << rng.below(32)),
                _ => rng.word(),
            };
            run_at(addr(gf_wcr0), &regs(rng, &[(5, v)]))
        }
        1 => {
            let v = match rng.below(3) {
                0 => s.cr4 ^ (1 << rng.below(64)),
                1 => s.cr4 ^ (1 << rng.below(32)) ^ (1 << rng.below(32)),
                _ => rng.word(),
            };
            probe::write_cr4(v)
                .map_or_else(|v| Outcome::Exception(v as u64), |_| Outcome::Completed)
        }
        _ => {
            if rng.chance(70) {
                let _ = probe::write_cr4(s.cr4 | CR4_OSXSAVE);
            }
            let x = match rng.below(3) {
                0 => rng.below(0x100),
                1 => 1 << rng.below(64),
                _ => rng.word(),
            };
            let ecx = if rng.chance(80) { 0 } else { rng.below(4) };
            run_at(
                addr(gf_xsetbv),
                &regs(rng, &[(2, ecx), (0, x & 0xFFFF_FFFF), (3, x >> 32)]),
            )
        }
    }
}

/// Random flags of a page-table entry (P not included), with a reserved bit now and then.
fn flags(rng: &mut Rng, leaf_2m: bool) -> u64 {
    let mut f = rng.word() & 0x17E; // RW, US, PWT, PCD, A, D, G
    if rng.chance(20) {
        f |= 1 << 63; // NX
    }
    if rng.chance(25) {
        f |= 1
            << if leaf_2m {
                13 + rng.below(8)
            } else {
                46 + rng.below(6)
            };
    }
    f
}

/// Edits one entry of the VMM-built guest page tables (at CR3), touches an address it maps, and puts
/// the entry back. Safe mode leaves the entries that map the window alone (the fuzzer's own code and
/// stack live there) and only reads through aliases of the window (a write through one could reach
/// the payload's text: W^X stops the VM).
fn page_table(rng: &mut Rng, wild: bool) -> Outcome {
    let s = saved();
    if wild && rng.chance(15) {
        return wild_page_table(rng);
    }
    let pml4 = (s.cr3 & ADDR) as *mut u64;
    let pdpt = (read_entry(pml4, 0) & ADDR) as *mut u64;
    let scratch = scratch_base();
    let (table, index, va_base, span, pdpt_level) = if rng.chance(20) {
        let g = 1 + rng.below(3);
        (pdpt, g as usize, g << 30, 1u64 << 30, true)
    } else {
        let (g, i) = loop {
            let (g, i) = (rng.below(4), rng.below(512));
            if !(g == 0 && (WINDOW_BASE / MIB2..(WINDOW_BASE + WINDOW_SIZE) / MIB2).contains(&i)) {
                break (g, i);
            }
        };
        let pd = (read_entry(pdpt, g as usize) & ADDR) as *mut u64;
        (pd, i as usize, (g << 30) | (i << 21), MIB2, false)
    };
    let old = read_entry(table, index);
    let (new, va, write) = match rng.below(3) {
        0 => (rng.word() & !1, va_base + rng.below(span), rng.chance(50)),
        1 if pdpt_level => (
            0x81 | flags(rng, false),
            va_base + WINDOW_BASE + rng.below(WINDOW_SIZE),
            false,
        ),
        1 => (
            (WINDOW_BASE + rng.below(WINDOW_SIZE / MIB2) * MIB2) | 0x81 | flags(rng, true),
            va_base + rng.below(span),
            false,
        ),
        _ => {
            let pt = page(core::ptr::addr_of_mut!(EDIT_PT));
            for i in 0..512 {
                let p = if rng.chance(90) { 1 } else { 0 };
                write_entry(
                    pt,
                    i,
                    (scratch + rng.below(4) * 4096) | p | flags(rng, false),
                );
            }
            let target = if pdpt_level {
                let pd = page(core::ptr::addr_of_mut!(EDIT_PD));
                for i in 0..512 {
                    write_entry(pd, i, pt as u64 | 1 | (flags(rng, false) & !0x80));
                }
                pd as u64
            } else {
                pt as u64
            };
            (
                target | 1 | (flags(rng, false) & !0x80),
                va_base + rng.below(span),
                rng.chance(50),
            )
        }
    };
    write_entry(table, index, new);
    load_cr3(s.cr3);
    let stub = if write { addr(gf_store) } else { addr(gf_load) };
    let value = rng.word();
    let o = run_at(stub, &regs(rng, &[(5, va), (4, value)]));
    write_entry(table, index, old);
    load_cr3(s.cr3);
    // SAFETY: drops a global translation the edit may have left in the TLB (CR3 loads keep those).
    unsafe { core::arch::asm!("invlpg [{}]", in(reg) va, options(nostack)) };
    o
}

/// Wild mode: edits that may take the fuzzer down with them (the VM stops; the host counts how).
fn wild_page_table(rng: &mut Rng) -> Outcome {
    let s = saved();
    let pml4 = (s.cr3 & ADDR) as *mut u64;
    let pdpt = (read_entry(pml4, 0) & ADDR) as *mut u64;
    let pd0 = (read_entry(pdpt, 0) & ADDR) as *mut u64;
    let action = rng.below(5);
    const ACTIONS: [&str; 5] = ["window-entry", "cr3", "outside-read", "data-exec", "hlt"];
    libvmm_guest::println!("guestfuzz: wild {}", ACTIONS[action as usize]);
    match action {
        0 => {
            let i = (WINDOW_BASE / MIB2 + rng.below(WINDOW_SIZE / MIB2)) as usize;
            let old = read_entry(pd0, i);
            write_entry(pd0, i, old ^ (1 << rng.below(64)));
            load_cr3(s.cr3);
            write_entry(pd0, i, old);
            load_cr3(s.cr3);
            Outcome::Completed
        }
        1 => {
            let cr3 = rng.word() & !0xFFF;
            run_at(addr(gf_wcr3), &regs(rng, &[(5, cr3)]))
        }
        2 => {
            // Read guest-physical memory outside the window through the VMM's identity map.
            let va = if rng.chance(50) {
                rng.below(WINDOW_BASE)
            } else {
                WINDOW_BASE + WINDOW_SIZE + rng.below(1 << 30)
            };
            run_at(addr(gf_load), &regs(rng, &[(5, va)]))
        }
        3 => run_at(addr(gf_exec), &regs(rng, &[(5, scratch_base())])),
        _ => run_at(addr(gf_hlt), &regs(rng, &[])),
    }
}
