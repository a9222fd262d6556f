//! The x86 checks (see the crate doc).
use core::arch::asm;

use libvmm_guest::abi::layout::x86_64::{
    TEST_DEVICE_BASE, TEST_DEVICE_ID, TEST_DEVICE_ID_VALUE, TEST_DEVICE_SCRATCH,
};
use libvmm_guest::abi::BackendId;
use libvmm_guest::arch::{cpuid, probe};
use libvmm_guest::println;

const GP: Result<(), u8> = Err(13);

const PMC0: u32 = 0xC1;
const PERFEVTSEL0: u32 = 0x186;
const FIXED_CTR0: u32 = 0x309;
const PERF_CAPABILITIES: u32 = 0x345;
const FIXED_CTR_CTRL: u32 = 0x38D;
const GLOBAL_CTRL: u32 = 0x38F;
const A_PMC0: u32 = 0x4C1;
const EN_OS_USR: u64 = (1 << 22) | (1 << 17) | (1 << 16);
/// PERF_CAPABILITIES bits KVM treats as immutable: LBR format, PEBS trap, arch regs, record format,
/// baseline, timing info (17).
const IMMUTABLE: u64 = 0x3F | (1 << 6) | (1 << 7) | 0xF00 | (1 << 14) | (1 << 17);
/// Architectural events by EBX bit: (event select, unit mask).
const EVENTS: [(u64, u64); 8] = [
    (0x3C, 0x00),
    (0xC0, 0x00),
    (0x3C, 0x01),
    (0x2E, 0x4F),
    (0x2E, 0x41),
    (0xC4, 0x00),
    (0xC5, 0x00),
    (0xA4, 0x01),
];

/// Instructions and branches [`emulated_sequence`] forces through the emulator.
const SEQ_INSNS: u64 = 11;
const SEQ_BRANCHES: u64 = 5;

struct Checks {
    passed: u32,
    failed: u32,
}

impl Checks {
    fn check(&mut self, name: &str, ok: bool, detail: core::fmt::Arguments<'_>) {
        if ok {
            self.passed += 1;
            println!("pmu: ok {name}");
        } else {
            self.failed += 1;
            println!("pmu: FAIL {name}: {detail}");
        }
    }
}

/// JMP, CALL, RET, ENTER, LEAVE, CMP, Jcc taken, Jcc not taken, ADD, SUB, XOR, each behind the
/// forced-emulation prefix: 11 instructions, 5 branches. Returns RAX ((0 + 5 - 2) ^ 0xF = 12) and the
/// RSP and RBP after it (unchanged if ENTER/LEAVE and CALL/RET balance).
fn emulated_sequence() -> (u64, u64, u64) {
    let (rax, rsp, rbp): (u64, u64, u64);
    // SAFETY: the sequence is balanced (CALL/RET, ENTER/LEAVE restore RSP and RBP); it touches only the
    // stack below RSP, which the asm block may use (no `nostack`).
    unsafe {
        asm!(
            "xor eax, eax",
            "mov ecx, 0x0f",
            ".byte 0x0f, 0x0b, 0x6c, 0x76, 0x6d",
            "jmp 2f",
            "ud2",
            "2:",
            ".byte 0x0f, 0x0b, 0x6c, 0x76, 0x6d",
            "call 5f",
            "jmp 6f",
            "5:",
            ".byte 0x0f, 0x0b, 0x6c, 0x76, 0x6d",
            "ret",
            "6:",
            ".byte 0x0f, 0x0b, 0x6c, 0x76, 0x6d",
            "enter 32, 0",
            ".byte 0x0f, 0x0b, 0x6c, 0x76, 0x6d",
            "leave",
            ".byte 0x0f, 0x0b, 0x6c, 0x76, 0x6d",
            "cmp eax, 1",
            ".byte 0x0f, 0x0b, 0x6c, 0x76, 0x6d",
            "jne 7f",
            "ud2",
            "7:",
            ".byte 0x0f, 0x0b, 0x6c, 0x76, 0x6d",
            "je 8f",
            "8:",
            ".byte 0x0f, 0x0b, 0x6c, 0x76, 0x6d",
            "add rax, 5",
            ".byte 0x0f, 0x0b, 0x6c, 0x76, 0x6d",
            "sub rax, 2",
            ".byte 0x0f, 0x0b, 0x6c, 0x76, 0x6d",
            "xor rax, rcx",
            "mov {sp}, rsp",
            "mov {bp}, rbp",
            sp = out(reg) rsp,
            bp = out(reg) rbp,
            out("rax") rax,
            out("rcx") _,
        );
    }
    (rax, rsp, rbp)
}

fn rsp_rbp() -> (u64, u64) {
    let (sp, bp): (u64, u64);
    // SAFETY: reads two registers.
    unsafe {
        asm!("mov {}, rsp", "mov {}, rbp", out(reg) sp, out(reg) bp, options(nomem, nostack))
    };
    (sp, bp)
}

fn mmio_read64(addr: u64) -> u64 {
    let v: u64;
    // SAFETY: the address is the VMM's emulated test device (not memory); the VMM answers the load.
    unsafe { asm!("mov {v}, qword ptr [{a}]", a = in(reg) addr, v = out(reg) v, options(nostack)) };
    v
}

fn mmio_write64(addr: u64, v: u64) {
    // SAFETY: as `mmio_read64`.
    unsafe { asm!("mov qword ptr [{a}], {v}", a = in(reg) addr, v = in(reg) v, options(nostack)) };
}

fn mmio_write32(addr: u64, v: u32) {
    // SAFETY: as `mmio_read64`.
    unsafe {
        asm!("mov dword ptr [{a}], {v:e}", a = in(reg) addr, v = in(reg) v, options(nostack))
    };
}

fn emulator_checks(c: &mut Checks) {
    let before = rsp_rbp();
    let (rax, rsp, rbp) = emulated_sequence();
    c.check(
        "forced-emulation-results",
        rax == 12 && (rsp, rbp) == before,
        format_args!(
            "rax {rax}, rsp/rbp {:#x}/{:#x}, before {before:#x?}",
            rsp, rbp
        ),
    );

    let id = mmio_read64(TEST_DEVICE_BASE + TEST_DEVICE_ID);
    mmio_write64(TEST_DEVICE_BASE + TEST_DEVICE_ID, 0);
    let id2 = mmio_read64(TEST_DEVICE_BASE + TEST_DEVICE_ID);
    c.check(
        "mmio-id-register",
        id == TEST_DEVICE_ID_VALUE && id2 == id,
        format_args!("read {id:#x}, then {id2:#x}"),
    );
    let s = TEST_DEVICE_BASE + TEST_DEVICE_SCRATCH;
    mmio_write64(s, 0x1122_3344_5566_7788);
    mmio_write32(s, 0xAABB_CCDD);
    let v = mmio_read64(s);
    c.check(
        "mmio-scratch-register",
        v == 0x1122_3344_AABB_CCDD,
        format_args!("read {v:#x}"),
    );

    let out = [0x5Au8; 300];
    let (rcx, rsi): (u64, u64);
    // SAFETY: OUTS reads `out` (300 bytes) and writes port 0x80, which the VMM's policy answers.
    unsafe {
        asm!("rep outsb", inout("rcx") 300u64 => rcx, inout("rsi") out.as_ptr() as u64 => rsi,
             in("dx") 0x80u16, options(nostack, readonly))
    };
    c.check(
        "rep-outsb",
        rcx == 0 && rsi == out.as_ptr() as u64 + 300,
        format_args!(
            "rcx {rcx}, rsi moved {}",
            rsi.wrapping_sub(out.as_ptr() as u64)
        ),
    );
    let mut inb = [0u8; 300];
    let (rcx, rdi): (u64, u64);
    // SAFETY: INS writes 300 bytes into `inb`.
    unsafe {
        asm!("rep insb", inout("rcx") 300u64 => rcx, inout("rdi") inb.as_mut_ptr() as u64 => rdi,
             in("dx") 0x80u16, options(nostack))
    };
    c.check(
        "rep-insb",
        rcx == 0 && rdi == inb.as_ptr() as u64 + 300 && inb.iter().all(|&b| b == 0xFF),
        format_args!("rcx {rcx}, first byte {:#x}", inb[0]),
    );
}

fn wr(msr: u32, v: u64) -> Result<(), u8> {
    probe::wrmsr(msr, v)
}

fn rd(msr: u32) -> u64 {
    probe::rdmsr(msr).unwrap_or(u64::MAX)
}

fn vmx_pmu_checks(c: &mut Checks) {
    let pdcm = cpuid(1, 0)[2] & (1 << 15) != 0;
    let [a, b, _, d] = cpuid(0xA, 0);
    let (version, n, width, len) = (a & 0xFF, (a >> 8) & 0xFF, (a >> 16) & 0xFF, a >> 24);
    let (nfixed, fwidth) = (d & 0x1F, (d >> 5) & 0xFF);
    println!(
        "pmu: cpuid 0xa: version {version}, {n} counters of {width} bits, {nfixed} fixed of {fwidth} bits, \
         events mask {b:#x} of length {len}"
    );
    c.check(
        "cpuid-0xa-shape",
        pdcm && version >= 2
            && n >= 2
            && width >= 32
            && nfixed >= 1
            && (len >= 32 || b >> len == 0),
        format_args!("pdcm {pdcm}, eax {a:#x}, ebx {b:#x}, edx {d:#x}"),
    );
    let counters_ok = (0..n)
        .all(|i| probe::rdmsr(PERFEVTSEL0 + i).is_ok() && probe::rdmsr(PMC0 + i).is_ok())
        && probe::rdmsr(PERFEVTSEL0 + n) == Err(13)
        && probe::rdmsr(PMC0 + n) == Err(13)
        && (0..nfixed).all(|i| probe::rdmsr(FIXED_CTR0 + i).is_ok())
        && probe::rdmsr(FIXED_CTR0 + nfixed) == Err(13);
    c.check(
        "cpuid-0xa-counters-match-msrs",
        counters_ok,
        format_args!("{n} GP, {nfixed} fixed"),
    );
    let caps = rd(PERF_CAPABILITIES);
    let top = (1u64 << width) - 1;
    let width_ok = caps & (1 << 13) != 0
        && wr(A_PMC0, top).is_ok()
        && rd(A_PMC0) == top
        && wr(A_PMC0, top + 1) == GP
        && wr(FIXED_CTR0, (1u64 << fwidth) - 1).is_ok()
        && wr(FIXED_CTR0, 1u64 << fwidth) == GP;
    c.check(
        "cpuid-0xa-width-matches-msrs",
        width_ok,
        format_args!("caps {caps:#x}, width {width}"),
    );

    let mut immutable_ok = wr(PERF_CAPABILITIES, caps).is_ok();
    for bit in 0..64 {
        if IMMUTABLE & (1 << bit) != 0 && wr(PERF_CAPABILITIES, caps ^ (1 << bit)) != GP {
            println!("pmu: PERF_CAPABILITIES bit {bit} changed without #GP");
            immutable_ok = false;
        }
    }
    c.check(
        "perf-capabilities-immutable-bits-gp",
        immutable_ok && rd(PERF_CAPABILITIES) == caps,
        format_args!("caps {caps:#x}, pebs timing info {}", caps >> 17 & 1),
    );

    // Counters: instructions and branches retired, and the first event EBX marks unavailable.
    let unavailable = (0..len.min(8)).find(|i| b & (1 << i) != 0);
    let available = b & ((1 << 1) | (1 << 5)) == 0;
    let (ev, um) = EVENTS[unavailable.unwrap_or(0) as usize];
    let setup = wr(GLOBAL_CTRL, 0).is_ok()
        && (0..3).all(|i| wr(PMC0 + i, 0).is_ok())
        && wr(FIXED_CTR0, 0).is_ok()
        && wr(PERFEVTSEL0, EN_OS_USR | 0xC0).is_ok()
        && wr(PERFEVTSEL0 + 1, EN_OS_USR | 0xC4).is_ok()
        && wr(PERFEVTSEL0 + 2, EN_OS_USR | um << 8 | ev).is_ok()
        && wr(FIXED_CTR_CTRL, 0x3).is_ok()
        && wr(GLOBAL_CTRL, 0x1_0000_0007).is_ok();
    let _ = emulated_sequence();
    let _ = wr(GLOBAL_CTRL, 0);
    let (insns, branches, other, fixed) = (rd(PMC0), rd(PMC0 + 1), rd(PMC0 + 2), rd(FIXED_CTR0));
    let errata = cpuid(0x4000_0002, 0)[0];
    let exact = |got: u64, want: u64, overcount: bool| {
        if overcount {
            got >= want
        } else {
            got == want
        }
    };
    println!(
        "pmu: counted {insns} instructions, {branches} branches (fixed {fixed}); errata {errata:#x}"
    );
    c.check(
        "instructions-retired-exact",
        setup
            && exact(insns, SEQ_INSNS, errata & 1 != 0)
            && exact(fixed, SEQ_INSNS, errata & 1 != 0),
        format_args!("{insns} (fixed {fixed}), want {SEQ_INSNS}"),
    );
    c.check(
        "branches-retired-exact-enter-leave-not-branches",
        setup && exact(branches, SEQ_BRANCHES, errata & 2 != 0),
        format_args!("{branches}, want {SEQ_BRANCHES}"),
    );
    c.check(
        "unavailable-event-counts-zero",
        setup && available && unavailable.is_some() && other == 0,
        format_args!("event {ev:#x}/{um:#x}: {other}"),
    );
}

fn svm_pmu_hidden(c: &mut Checks) {
    let leaf = cpuid(0xA, 0);
    let gp = probe::rdmsr(PMC0) == Err(13)
        && probe::rdmsr(0xC001_0004) == Err(13)
        && probe::wrmsr(0xC001_0000, 0) == GP;
    c.check(
        "svm-pmu-hidden",
        leaf == [0; 4] && gp && cpuid(0x8000_0001, 0)[2] & (1 << 23) == 0,
        format_args!("leaf 0xa {leaf:x?}, msrs gp {gp}"),
    );
}

/// Iterations of each bench loop.
const BENCH_N: u64 = 200;
/// Bytes of each `rep outsb` in the string I/O figure (16 exits of at most 256 bytes).
const BENCH_STRING_BYTES: u64 = 4096;

/// TSC ticks of `BENCH_N` runs of `f` (one tick per emulated instruction under `cargo xtask bench`).
#[inline(always)]
fn timed(mut f: impl FnMut()) -> u64 {
    let t0 = libvmm_guest::arch::cycles();
    for _ in 0..BENCH_N {
        f();
    }
    libvmm_guest::arch::cycles() - t0
}

/// `bench=1` (with `libvmm.force_emulation=1`): the instruction emulator's costs in emulated
/// instructions, each a loop with the emulated path minus the same loop with the CPU doing the work:
/// a forced-emulated `add` (prefix, #UD exit, decode, execute, retire) against a plain `add`; an MMIO
/// load from the test register block (EPT violation / NPF, decode, device, write-back) against a load
/// from guest memory; and `rep outsb` of 4 KiB to port 0x80 (16 exits of 256 bytes, each element
/// answered by the port policy) per byte.
fn bench() -> i32 {
    let plain = timed(|| {
        // SAFETY: register arithmetic only.
        unsafe { asm!("add rax, 1", out("rax") _, options(nomem, nostack)) }
    });
    let forced = timed(|| {
        // SAFETY: the forced-emulation prefix (`ud2; 'lvm'`) makes the VMM emulate the `add` after it.
        unsafe {
            asm!(".byte 0x0f, 0x0b, 0x6c, 0x76, 0x6d", "add rax, 1", out("rax") _, options(nostack))
        }
    });
    let cell = core::hint::black_box(0u64);
    let memory = timed(|| {
        core::hint::black_box(mmio_read_mem(&cell));
    });
    let mmio = timed(|| {
        core::hint::black_box(mmio_read64(TEST_DEVICE_BASE + TEST_DEVICE_ID));
    });
    let out = [0x5Au8; BENCH_STRING_BYTES as usize];
    let t0 = libvmm_guest::arch::cycles();
    for _ in 0..BENCH_N / 20 {
        // SAFETY: OUTS reads `out` and writes port 0x80, which the VMM's policy answers.
        unsafe {
            asm!("rep outsb", inout("rcx") BENCH_STRING_BYTES => _, inout("rsi") out.as_ptr() => _,
                 in("dx") 0x80u16, options(nostack, readonly))
        };
    }
    let string = (libvmm_guest::arch::cycles() - t0) / (BENCH_N / 20 * BENCH_STRING_BYTES);
    let per = |a: u64, b: u64| a.saturating_sub(b) / BENCH_N;
    println!("bench: forced_emulation_round_trip={}", per(forced, plain));
    println!("bench: mmio_round_trip={}", per(mmio, memory));
    println!("bench: string_io_per_byte={string}");
    0
}

/// The same load as [`mmio_read64`] from ordinary guest memory.
fn mmio_read_mem(cell: &u64) -> u64 {
    mmio_read64(cell as *const u64 as u64)
}

pub fn run() -> i32 {
    if libvmm_guest::cmdline_value("bench") == Some("1") {
        return bench();
    }
    let mut c = Checks {
        passed: 0,
        failed: 0,
    };
    emulator_checks(&mut c);
    match libvmm_guest::boot_info().map(|b| b.backend) {
        Some(b) if b == BackendId::Vmx as u32 => vmx_pmu_checks(&mut c),
        _ => svm_pmu_hidden(&mut c),
    }
    println!("pmu: {} checks passed, {} failed", c.passed, c.failed);
    i32::from(c.failed != 0)
}
