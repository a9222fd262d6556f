//! Guest SMP, on every vCPU the VMM gives the payload (`libvmm_guest::smp`). Each check prints one
//! `smp: ...` line (written whole, `println_whole!`); the run ends with `smp: all checks passed` and
//! status 0, or the first failure's line and status 1.
//!
//! - every CPU started (RISC-V: SBI HSM `hart_start`), each adds 1 to a shared counter `iters` times
//!   with atomics: the exact total is checked;
//! - IPI ping-pong between every ordered pair of CPUs (the pinged CPU's handler answers with an IPI);
//! - TLB shootdown (RISC-V): every CPU runs on the same Sv39 tables and reads one virtual page; CPU 0
//!   points its entry at another page and calls the remote fence (`remote_sfence_vma`); every CPU must
//!   then read the new page;
//! - console lines from every CPU at once, each whole.
//!
//! `mode=stress iters=N`: CPU 0 starts and stops every other CPU N times (each started CPU sends CPU 0
//! an IPI and stops itself), with CPU 0's IPIs in flight to the CPUs meanwhile; prints the count.
//! `mode=storm iters=N`: every CPU at once sends N IPIs to every CPU (hostile: the VMM must stay
//! up and every CPU finish).
//! `mode=exit-while-starting`: CPU 0 starts every CPU and exits at once; the VM must stop cleanly.
//! `mode=spin-forever [timer=1]`: every other CPU spins forever, CPU 0 halts with interrupts off (with
//! `timer=1` after arming its own timer, which it can never take): only the VM's time limit ends it.
//! `mode=touch`: every CPU at once writes its own words into the same blocks of memory nobody touched
//! before (the VMM zeroes each block on its first touch, once for the VM): every CPU's words must be
//! there afterwards, and the rest of each block zero.
//! `mode=hostile` (x86): STARTUP to a running vCPU, INIT to the BSP, fixed IPIs to APIC IDs that do not
//! exist, NMI, an illegal vector; logical (cluster) and all-excluding-self destinations: each with the
//! architectural answer, checked.
#![no_std]
#![no_main]

use core::sync::atomic::{AtomicU32, AtomicU64, Ordering::SeqCst};

use libvmm_guest::irq::{self, Interrupt};
use libvmm_guest::smp::{self, MAX_CPUS};
use libvmm_guest::{println_whole, TrapAction, TrapFrame};

libvmm_guest::entry!(main);

static COUNTER: AtomicU64 = AtomicU64::new(0);
static DONE: AtomicU32 = AtomicU32::new(0);
static ITERS: AtomicU64 = AtomicU64::new(0);
/// Per CPU: who pinged it (1 + cpu; 0: nobody), pings and pongs it took, its command and argument.
static MAILBOX: [AtomicU32; MAX_CPUS] = [const { AtomicU32::new(0) }; MAX_CPUS];
static PINGS: [AtomicU32; MAX_CPUS] = [const { AtomicU32::new(0) }; MAX_CPUS];
static PONGS: [AtomicU32; MAX_CPUS] = [const { AtomicU32::new(0) }; MAX_CPUS];
static CMD: [AtomicU32; MAX_CPUS] = [const { AtomicU32::new(0) }; MAX_CPUS];
static ARG: [AtomicU32; MAX_CPUS] = [const { AtomicU32::new(0) }; MAX_CPUS];
static RESULT: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];
static IPIS_AT_0: AtomicU32 = AtomicU32::new(0);
/// The cycle counter when each CPU entered its function (`mode=bench`).
static STARTED_AT: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];

const IDLE: u32 = 0;
const PING: u32 = 1;
const TLB_READ: u32 = 2;
const TLB_OFF: u32 = 3;
const LINES: u32 = 4;
const TLB_READ_NOFENCE: u32 = 5;
const QUIT: u32 = 9;

/// Spins before a wait counts as lost (a lost IPI, a CPU that never answers).
const PATIENCE: u64 = 200_000_000;
/// ... and cycles (about 4 s at 2.5 GHz on x86).
const PATIENCE_CYCLES: u64 = 10_000_000_000;

fn wait_until(mut f: impl FnMut() -> bool) -> bool {
    // Bounded in cycles as well (x86: a PAUSE can cost QEMU far more than a cycle).
    let t0 = libvmm_guest::arch::cycles();
    for _ in 0..PATIENCE {
        if f() {
            return true;
        }
        if libvmm_guest::arch::cycles().wrapping_sub(t0) > PATIENCE_CYCLES {
            return f();
        }
        core::hint::spin_loop();
    }
    false
}

fn check(ok: bool, what: core::fmt::Arguments<'_>) -> bool {
    if ok {
        println_whole!("smp: {what} ok");
    } else {
        println_whole!("smp: FAILED: {what}");
    }
    ok
}

/// The software interrupt: a ping (someone left its number in our mailbox) is answered with an IPI
/// back; otherwise it is the pong of our own ping.
fn on_ipi(_: &mut TrapFrame) -> TrapAction {
    // x86: the x2APIC's EOI (RISC-V: nothing to end).
    irq::eoi();
    let me = smp::current_cpu();
    if me == 0 {
        IPIS_AT_0.fetch_add(1, SeqCst);
    }
    let from = MAILBOX[me].swap(0, SeqCst);
    if from != 0 {
        PINGS[me].fetch_add(1, SeqCst);
        let _ = smp::send_ipi(from as usize - 1);
    } else {
        PONGS[me].fetch_add(1, SeqCst);
    }
    TrapAction::Resume
}

fn take_ipis() {
    irq::set_interrupt_handler(Interrupt::Software, on_ipi).unwrap();
    smp::enable_ipis();
    irq::enable();
}

fn count() {
    for _ in 0..ITERS.load(SeqCst) {
        COUNTER.fetch_add(1, SeqCst);
    }
}

/// CPU `me` pings `to` and waits for the pong.
fn ping(me: usize, to: usize) -> bool {
    let before = PONGS[me].load(SeqCst);
    MAILBOX[to].store(me as u32 + 1, SeqCst);
    if smp::send_ipi(to).is_err() {
        return false;
    }
    wait_until(|| PONGS[me].load(SeqCst) != before)
}

/// Every CPU but 0: count, then serve CPU 0's commands until told to quit (then the hart stops).
fn worker() {
    let me = smp::current_cpu();
    STARTED_AT[me].store(libvmm_guest::arch::cycles(), SeqCst);
    take_ipis();
    count();
    DONE.fetch_add(1, SeqCst);
    loop {
        let cmd = CMD[me].load(SeqCst);
        let result = match cmd {
            IDLE => continue,
            PING => ping(me, ARG[me].load(SeqCst) as usize) as u64,
            TLB_READ => tlb::enter_and_read(),
            TLB_READ_NOFENCE => tlb::read_only(),
            TLB_OFF => {
                tlb::leave();
                1
            }
            LINES => {
                for l in 0..ARG[me].load(SeqCst) {
                    println_whole!(
                        "smp: line {l} from cpu {me}: the quick brown fox jumps over the lazy dog"
                    );
                }
                1
            }
            QUIT => return,
            _ => 0,
        };
        RESULT[me].store(result, SeqCst);
        CMD[me].store(IDLE, SeqCst);
    }
}

/// Has CPU `cpu` run `cmd` with `arg` and returns its result (`None`: it never answered).
fn command(cpu: usize, cmd: u32, arg: u32) -> Option<u64> {
    ARG[cpu].store(arg, SeqCst);
    CMD[cpu].store(cmd, SeqCst);
    wait_until(|| CMD[cpu].load(SeqCst) == IDLE).then(|| RESULT[cpu].load(SeqCst))
}

fn main() -> i32 {
    let n = smp::cpu_count().min(MAX_CPUS);
    let iters = libvmm_guest::cmdline_value("iters")
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000u64);
    ITERS.store(iters, SeqCst);
    println_whole!(
        "smp: {n} CPU(s) on {}, this is CPU {}",
        libvmm_guest::backend_name(),
        smp::current_cpu()
    );
    match libvmm_guest::cmdline_value("mode") {
        Some("stress") => return stress(n, iters),
        Some("bench") => return bench(n),
        Some("storm") => {
            for c in 1..n {
                let _ = smp::start(c, storm);
            }
            storm();
            let all = wait_until(|| DONE.load(SeqCst) as usize == n);
            let stopped = wait_until(|| (1..n).all(|c| !smp::is_running(c)));
            let ok = check(
                all && stopped && LOST.load(SeqCst) == 0,
                format_args!("ipi storm: {n} CPU(s) x {iters} IPIs to every CPU"),
            );
            return if ok { 0 } else { 1 };
        }
        Some("touch") => return touch(n),
        #[cfg(target_arch = "x86_64")]
        Some("hostile") => return hostile::run(n),
        Some("spin-forever") => return spin_forever_everywhere(n),
        Some("exit-while-starting") => {
            for c in 1..n {
                let _ = smp::start(c, spin_forever);
            }
            println_whole!("smp: exiting while {} CPU(s) start", n - 1);
            return 0;
        }
        _ => {}
    }
    take_ipis();
    let mut ok = true;

    // 1. Every CPU counts.
    for c in 1..n {
        ok &= check(smp::start(c, worker).is_ok(), format_args!("start cpu {c}"));
    }
    count();
    let all = wait_until(|| DONE.load(SeqCst) as usize == n - 1);
    let total = COUNTER.load(SeqCst);
    ok &= check(
        all && total == n as u64 * iters,
        format_args!("counter {total} == {n} x {iters}"),
    );
    if !ok {
        return 1;
    }

    // 2. IPI ping-pong between every ordered pair.
    let mut pairs = 0;
    for a in 0..n {
        for b in (0..n).filter(|&b| b != a) {
            let r = if a == 0 {
                ping(0, b)
            } else {
                command(a, PING, b as u32) == Some(1)
            };
            if !check(r, format_args!("ping {a} -> {b}")) {
                return 1;
            }
            pairs += 1;
        }
    }
    ok &= check(
        pairs == n * (n - 1),
        format_args!("ipi ping-pong between {pairs} ordered pairs"),
    );

    // 3. TLB shootdown (RISC-V: the guest's own Sv39 tables; x86: its 4-level tables, INVLPG by IPI).
    ok &= tlb::shootdown(n);

    // 4. Whole lines from every CPU at once.
    for c in 1..n {
        ARG[c].store(5, SeqCst);
        CMD[c].store(LINES, SeqCst);
    }
    for l in 0..5 {
        println_whole!("smp: line {l} from cpu 0: the quick brown fox jumps over the lazy dog");
    }
    for cmd in &CMD[1..n] {
        ok &= wait_until(|| cmd.load(SeqCst) == IDLE);
    }

    for cmd in &CMD[1..n] {
        cmd.store(QUIT, SeqCst);
    }
    let stopped = wait_until(|| (1..n).all(|c| !smp::is_running(c)));
    ok &= check(stopped, format_args!("{} CPU(s) stopped", n - 1));
    if !ok {
        return 1;
    }
    println_whole!("smp: all checks passed");
    0
}

/// Deterministic costs (`cargo xtask bench`, QEMU `-icount`: one cycle = one emulated instruction):
/// VMM entry to every CPU running payload code, an IPI round trip between two CPUs (ping and the
/// handler's answer), a remote fence of every CPU (RISC-V: SBI RFENCE `remote_sfence_vma`; x86:
/// `smp::remote_invlpg`, an IPI to every other CPU whose handler runs INVLPG and acknowledges, from the
/// call until every CPU has). The other CPUs wait in WFI / HLT, never spinning: under `-icount` QEMU
/// runs the harts one at a time and switches when one halts. x86's fence waits for the
/// acknowledgements with PAUSE, which in QEMU's TCG ends the CPU's turn ("let another CPU run"), so
/// its figure counts the fenced CPUs' work and a few instructions of spinning per turn.
fn bench(n: usize) -> i32 {
    use libvmm_guest::arch::{cycles, first_cycles};
    take_ipis();
    let entry = libvmm_guest::boot_info().map_or(0, |b| b.vmm_entry_cycles);
    for c in 1..n {
        if smp::start(c, bench_worker).is_err() {
            return 1;
        }
    }
    while (DONE.load(SeqCst) as usize) < n - 1 {
        irq::wait();
        if libvmm_guest::cmdline_value("trace") == Some("1") {
            println_whole!(
                "smp: woke, done {} ipis {}",
                DONE.load(SeqCst),
                IPIS_AT_0.load(SeqCst)
            );
        }
    }
    let last = STARTED_AT[1..n]
        .iter()
        .map(|s| s.load(SeqCst))
        .fold(first_cycles(), u64::max);
    println_whole!("bench: smp_entry_to_all_running_{n}cpu={}", last - entry);
    if n >= 2 {
        const PINGS_N: u64 = 1000;
        let t = cycles();
        for _ in 0..PINGS_N {
            let before = PONGS[0].load(SeqCst);
            MAILBOX[1].store(1, SeqCst);
            if smp::send_ipi(1).is_err() {
                return 1;
            }
            while PONGS[0].load(SeqCst) == before {
                irq::wait();
            }
            if libvmm_guest::cmdline_value("trace") == Some("1") {
                println_whole!(
                    "smp: ping {} pongs {}",
                    PINGS[1].load(SeqCst),
                    PONGS[0].load(SeqCst)
                );
            }
        }
        println_whole!(
            "bench: smp_ipi_round_trip_{n}cpu={}",
            (cycles() - t) / PINGS_N
        );
    }
    const FENCES: u64 = 200;
    let t = cycles();
    for _ in 0..FENCES {
        if fence_every_cpu().is_err() {
            return 1;
        }
    }
    println_whole!("bench: smp_remote_fence_{n}cpu={}", (cycles() - t) / FENCES);
    QUITTING.store(1, SeqCst);
    for c in 1..n {
        let _ = smp::send_ipi(c);
    }
    0
}

static QUITTING: AtomicU32 = AtomicU32::new(0);

/// The bench's remote fence of every CPU: RISC-V's SBI RFENCE `remote_sfence_vma` (whole address
/// space); x86's TLB shootdown of one page, INVLPG on every CPU (the others' by IPI).
fn fence_every_cpu() -> Result<(), smp::SmpError> {
    #[cfg(target_arch = "riscv64")]
    return smp::remote_fence_vma(0, u64::MAX);
    #[cfg(target_arch = "x86_64")]
    return smp::remote_invlpg(0, u64::MAX, core::ptr::addr_of!(STARTED_AT) as u64);
}

/// A bench CPU: says it runs (an IPI to CPU 0), then takes IPIs (its handler answers pings) in WFI
/// until CPU 0 says quit.
fn bench_worker() {
    let me = smp::current_cpu();
    STARTED_AT[me].store(libvmm_guest::arch::cycles(), SeqCst);
    take_ipis();
    DONE.fetch_add(1, SeqCst);
    let _ = smp::send_ipi(0);
    while QUITTING.load(SeqCst) == 0 {
        irq::wait();
    }
}

fn spin_forever() {
    loop {
        COUNTER.fetch_add(1, SeqCst);
    }
}

/// `mode=spin-forever`: every other CPU spins forever and CPU 0 halts with interrupts off, after arming
/// its own timer with `timer=1` (a deadline 10 ms away, which it can never take). Nothing ends this but
/// the VM's time limit (`libvmm.timeout_ms`), which must stop every vCPU with one stop line.
fn spin_forever_everywhere(n: usize) -> i32 {
    for c in 1..n {
        if smp::start(c, spin_forever).is_err() {
            println_whole!("smp: FAILED: start cpu {c}");
            return 1;
        }
    }
    let timer = libvmm_guest::cmdline_value("timer") == Some("1");
    println_whole!(
        "smp: {} CPU(s) spin forever; cpu 0 halts with interrupts off{}",
        n - 1,
        if timer { ", its timer armed" } else { "" }
    );
    irq::disable();
    if timer {
        let hz = libvmm_guest::time::ticks_per_sec();
        libvmm_guest::time::arm_deadline(libvmm_guest::time::ticks() + hz / 100);
    }
    libvmm_guest::arch::halt_forever()
}

static LOST: AtomicU32 = AtomicU32::new(0);

/// A started CPU: one IPI to CPU 0, and it waits until CPU 0 has taken an IPI since (IPIs pending at
/// once may merge into one, as on hardware, but one sent is never lost); then it stops (returning
/// stops the hart).
fn quick() {
    let before = IPIS_AT_0.load(SeqCst);
    if smp::send_ipi(0).is_err() || !wait_until(|| IPIS_AT_0.load(SeqCst) != before) {
        LOST.fetch_add(1, SeqCst);
    }
}

/// Every CPU at once sends IPIs to every CPU (itself included), with its interrupts on.
fn storm() {
    take_ipis();
    for _ in 0..ITERS.load(SeqCst) {
        if smp::send_ipi_mask(0, u64::MAX).is_err() {
            LOST.fetch_add(1, SeqCst);
        }
    }
    DONE.fetch_add(1, SeqCst);
}

fn stress(n: usize, iters: u64) -> i32 {
    take_ipis();
    if n < 2 {
        println_whole!("smp: stress needs 2 CPUs or more");
        return 0;
    }
    let mut starts = 0u64;
    for i in 0..iters {
        for c in 1..n {
            let t0 = libvmm_guest::arch::cycles();
            if !wait_until(|| !smp::is_running(c)) {
                println_whole!("smp: FAILED: cpu {c} did not stop (round {i})");
                return 1;
            }
            let t1 = libvmm_guest::arch::cycles();
            if let Err(e) = smp::start(c, quick) {
                println_whole!("smp: FAILED: start cpu {c} (round {i}): {e:?}");
                return 1;
            }
            let t2 = libvmm_guest::arch::cycles();
            if libvmm_guest::cmdline_value("trace") == Some("1") && t2 - t0 > 2_000_000_000 {
                println_whole!(
                    "smp: slow round {i} cpu {c}: stop wait {} start {}",
                    t1 - t0,
                    t2 - t1
                );
            }
            starts += 1;
            // An IPI in flight to a CPU that is starting, running or stopping again.
            let _ = smp::send_ipi(c);
        }
    }
    let all_stopped = wait_until(|| (1..n).all(|c| !smp::is_running(c)));
    // Each start sent CPU 0 one IPI; IPIs to one CPU may merge while one is pending (like hardware).
    let got = IPIS_AT_0.load(SeqCst);
    println_whole!("smp: stress {starts} starts, {got} IPIs taken by cpu 0");
    let lost = LOST.load(SeqCst);
    if !all_stopped || got == 0 || lost != 0 {
        println_whole!("smp: FAILED: stress ({lost} IPIs lost)");
        return 1;
    }
    println_whole!("smp: stress ok");
    0
}

#[cfg(target_arch = "riscv64")]
mod tlb {
    //! One Sv39 table set for every CPU: VA 0xC000_0000 maps one 4 KiB page (A, then B); the window's
    //! gigabyte is identity-mapped so code, data and stacks keep their addresses.
    use core::sync::atomic::{AtomicU64, Ordering::SeqCst};

    #[repr(C, align(4096))]
    struct Page([AtomicU64; 512]);
    static ROOT: Page = Page([const { AtomicU64::new(0) }; 512]);
    static L1: Page = Page([const { AtomicU64::new(0) }; 512]);
    static L0: Page = Page([const { AtomicU64::new(0) }; 512]);
    static A: Page = Page([const { AtomicU64::new(0) }; 512]);
    static B: Page = Page([const { AtomicU64::new(0) }; 512]);

    const VA: u64 = 0xC000_0000;
    const MARK_A: u64 = 0xAAAA_0001;
    const MARK_B: u64 = 0xBBBB_0002;
    const V: u64 = 1;
    const RWX_AD: u64 = 0x2 | 0x4 | 0x8 | 0x40 | 0x80;
    const RW_AD: u64 = 0x2 | 0x4 | 0x40 | 0x80;

    fn pa(p: &Page) -> u64 {
        p as *const Page as u64
    }
    fn pte(pa: u64, flags: u64) -> u64 {
        (pa >> 12) << 10 | flags
    }

    fn satp() -> u64 {
        8 << 60 | pa(&ROOT) >> 12
    }

    fn set_satp(v: u64) {
        // SAFETY: the tables map the window's gigabyte identity (so this code, its data and stack keep
        // their addresses) plus the test page; satp 0 goes back to bare mode.
        unsafe { core::arch::asm!("csrw satp, {0}", "sfence.vma zero, zero", in(reg) v) };
    }

    fn read_va() -> u64 {
        // SAFETY: VA maps page A or B (static, 8-byte aligned) while this CPU runs on the tables.
        unsafe { core::ptr::read_volatile(VA as *const u64) }
    }

    /// This CPU runs on the tables and reads the test page's first word.
    pub fn enter_and_read() -> u64 {
        set_satp(satp());
        read_va()
    }

    pub fn leave() {
        set_satp(0);
    }

    pub fn shootdown(n: usize) -> bool {
        use super::{check, command, TLB_OFF, TLB_READ};
        A.0[0].store(MARK_A, SeqCst);
        B.0[0].store(MARK_B, SeqCst);
        ROOT.0[2].store(pte(0x8000_0000, V | RWX_AD), SeqCst);
        ROOT.0[3].store(pte(pa(&L1), V), SeqCst);
        L1.0[0].store(pte(pa(&L0), V), SeqCst);
        L0.0[0].store(pte(pa(&A), V | RW_AD), SeqCst);
        let mut ok = true;
        let before = enter_and_read();
        for c in 1..n {
            ok &= command(c, TLB_READ, 0) == Some(MARK_A);
        }
        ok &= check(
            ok && before == MARK_A,
            format_args!("{n} CPU(s) read page A through the guest's tables"),
        );
        // Each CPU has the translation cached now. Re-point it, then the shootdown.
        L0.0[0].store(pte(pa(&B), V | RW_AD), SeqCst);
        let stale = (1..n)
            .filter(|&c| command(c, super::TLB_READ_NOFENCE, 0) == Some(MARK_A))
            .count();
        libvmm_guest::println_whole!(
            "smp: before the remote fence {stale} of {} other CPU(s) still read page A",
            n - 1
        );
        let fenced = libvmm_guest::smp::remote_fence_vma(0, u64::MAX).is_ok();
        // The others read without a fence of their own: only the remote one can have dropped the old
        // entry.
        let mut all_b = read_va() == MARK_B;
        for c in 1..n {
            all_b &= command(c, super::TLB_READ_NOFENCE, 0) == Some(MARK_B);
        }
        ok &= check(
            fenced && all_b,
            format_args!("TLB shootdown: {n} CPU(s) see page B after the remote fence"),
        );
        leave();
        for c in 1..n {
            command(c, TLB_OFF, 0);
        }
        ok
    }

    /// Reads the test page on the tables already installed (no fence of its own).
    pub fn read_only() -> u64 {
        read_va()
    }
}

#[cfg(target_arch = "x86_64")]
mod tlb {
    //! The guest's own 4-level tables (the identity map the VMM built, shared by every CPU): VA
    //! 0xC000_0000's 2 MiB entry (outside guest memory, never touched otherwise) is pointed at a 4 KiB
    //! table of ours whose first entry maps page A, then B; the shootdown is INVLPG on every CPU, the
    //! others' by IPI (`smp::remote_invlpg`).
    use core::sync::atomic::{AtomicU64, Ordering::SeqCst};

    #[repr(C, align(4096))]
    struct Page([AtomicU64; 512]);
    static PT: Page = Page([const { AtomicU64::new(0) }; 512]);
    static A: Page = Page([const { AtomicU64::new(0) }; 512]);
    static B: Page = Page([const { AtomicU64::new(0) }; 512]);
    static SAVED_PDE: AtomicU64 = AtomicU64::new(0);

    const VA: u64 = 0xC000_0000;
    const MARK_A: u64 = 0xAAAA_0001;
    const MARK_B: u64 = 0xBBBB_0002;
    const P_W: u64 = 0x3;
    const ADDR: u64 = 0x000F_FFFF_FFFF_F000;

    fn pa(p: &Page) -> u64 {
        p as *const Page as u64
    }

    /// The page-directory entry of VA (identity-mapped tables: physical = virtual).
    fn pde() -> &'static AtomicU64 {
        let cr3: u64;
        // SAFETY: reading CR3 has no side effects.
        unsafe { core::arch::asm!("mov {}, cr3", out(reg) cr3, options(nomem, nostack)) };
        let entry = |table: u64, i: u64| -> &'static AtomicU64 {
            // SAFETY: the guest's page tables live in guest RAM, identity-mapped, 8-byte aligned
            // entries; the payload is their only writer (the VMM never touches them after boot).
            unsafe { &*((table & ADDR) as *const AtomicU64).add(i as usize) }
        };
        let pdpt = entry(cr3, (VA >> 39) & 511).load(SeqCst);
        let pd = entry(pdpt, (VA >> 30) & 511).load(SeqCst);
        entry(pd, (VA >> 21) & 511)
    }

    fn read_va() -> u64 {
        // SAFETY: VA maps page A or B (static, 8-byte aligned) while the test's entry is installed.
        unsafe { core::ptr::read_volatile(VA as *const u64) }
    }

    /// This CPU drops its old translation of VA and reads the test page's first word.
    pub fn enter_and_read() -> u64 {
        libvmm_guest::arch::invlpg(VA);
        read_va()
    }

    pub fn leave() {
        libvmm_guest::arch::invlpg(VA);
    }

    pub fn shootdown(n: usize) -> bool {
        use super::{check, command, TLB_OFF, TLB_READ};
        A.0[0].store(MARK_A, SeqCst);
        B.0[0].store(MARK_B, SeqCst);
        PT.0[0].store(pa(&A) | P_W, SeqCst);
        SAVED_PDE.store(pde().swap(pa(&PT) | P_W, SeqCst), SeqCst);
        let mut ok = true;
        let before = enter_and_read();
        for c in 1..n {
            ok &= command(c, TLB_READ, 0) == Some(MARK_A);
        }
        ok &= check(
            ok && before == MARK_A,
            format_args!("{n} CPU(s) read page A through the guest's tables"),
        );
        // Each CPU has the translation cached now. Re-point it, then the shootdown.
        PT.0[0].store(pa(&B) | P_W, SeqCst);
        let stale = (1..n)
            .filter(|&c| command(c, super::TLB_READ_NOFENCE, 0) == Some(MARK_A))
            .count();
        libvmm_guest::println_whole!(
            "smp: before the remote fence {stale} of {} other CPU(s) still read page A",
            n - 1
        );
        let fenced = libvmm_guest::smp::remote_invlpg(0, u64::MAX, VA).is_ok();
        let mut all_b = read_va() == MARK_B;
        for c in 1..n {
            all_b &= command(c, super::TLB_READ_NOFENCE, 0) == Some(MARK_B);
        }
        ok &= check(
            fenced && all_b,
            format_args!("TLB shootdown: {n} CPU(s) see page B after the remote fence"),
        );
        pde().store(SAVED_PDE.load(SeqCst), SeqCst);
        leave();
        for c in 1..n {
            command(c, TLB_OFF, 0);
        }
        ok
    }

    /// Reads the test page on the entry already installed (no INVLPG of its own).
    pub fn read_only() -> u64 {
        read_va()
    }
}

#[cfg(target_arch = "x86_64")]
mod hostile {
    //! x86 ICR abuse with the architectural answers (see the module doc of the payload).
    use super::{check, command, take_ipis, worker, CMD, ITERS, PING, QUIT};
    use core::sync::atomic::{AtomicU32, Ordering::SeqCst};
    use libvmm_guest::irq::{self, Interrupt};
    use libvmm_guest::smp::{self, write_icr, MAX_CPUS};
    use libvmm_guest::{println_whole, TrapAction, TrapFrame};

    const VEC: u8 = 0x41;
    static HITS: [AtomicU32; MAX_CPUS] = [const { AtomicU32::new(0) }; MAX_CPUS];

    fn on_vec(_: &mut TrapFrame) -> TrapAction {
        irq::eoi();
        HITS[smp::current_cpu()].fetch_add(1, SeqCst);
        TrapAction::Resume
    }

    fn hits() -> u32 {
        HITS.iter().map(|h| h.load(SeqCst)).sum()
    }

    /// Lets IPIs in flight land (a few thousand spins with interrupts on).
    fn settle() {
        for _ in 0..2_000_000 {
            core::hint::spin_loop();
        }
    }

    pub fn run(n: usize) -> i32 {
        if n < 2 {
            println_whole!("smp: hostile needs 2 CPUs or more");
            return 0;
        }
        take_ipis();
        irq::set_interrupt_handler(Interrupt::Vector(VEC), on_vec).unwrap();
        ITERS.store(10, SeqCst);
        let mut ok = true;
        for c in 1..n {
            ok &= smp::start(c, worker).is_ok();
        }
        let icr =
            |dest: u64, mode: u64, vector: u8| dest << 32 | mode << 8 | 1 << 14 | vector as u64;
        // STARTUP to a running vCPU: ignored; it goes on with its own code (answers a ping).
        write_icr(icr(1, 0b110, 0x08));
        settle();
        ok &= check(
            command(1, PING, 0) == Some(1),
            format_args!("STARTUP to running cpu 1 ignored"),
        );
        // INIT to the BSP (physical and by shorthand self): ignored; this code goes on.
        write_icr(icr(0, 0b101, 0));
        write_icr(1 << 18 | 0b101 << 8 | 1 << 14);
        settle();
        ok &= check(true, format_args!("INIT to the BSP ignored"));
        // Fixed IPIs to APIC IDs no vCPU has (physical, near-broadcast, logical cluster 7): dropped.
        for dest in [n as u64, 0xFF, 0xFFFF_FFFE] {
            write_icr(icr(dest, 0, VEC));
        }
        write_icr(7 << 48 | 0xFFFF << 32 | 1 << 11 | VEC as u64);
        settle();
        ok &= check(
            hits() == 0,
            format_args!("IPIs to nonexistent APIC ids dropped"),
        );
        // NMI and SMI are not offered: dropped; cpu 1 still answers.
        write_icr(icr(1, 0b100, 0));
        write_icr(icr(1, 0b010, 0));
        settle();
        ok &= check(
            command(1, PING, 0) == Some(1),
            format_args!("NMI and SMI to cpu 1 dropped"),
        );
        // An illegal vector (below 16): not sent, "send illegal vector" (bit 5) in this CPU's ESR.
        write_icr(icr(1, 0, 5));
        libvmm_guest::arch::wrmsr(irq::x2apic::ESR, 0);
        let esr = libvmm_guest::arch::rdmsr(irq::x2apic::ESR);
        ok &= check(
            esr & 0x20 != 0,
            format_args!("illegal vector 5: ESR {esr:#x}"),
        );
        // Logical destination, x2APIC cluster 0, the bit of cpu 1.
        write_icr(0b10 << 32 | 1 << 11 | VEC as u64);
        ok &= check(
            super::wait_until(|| HITS[1].load(SeqCst) == 1),
            format_args!("logical IPI (cluster 0, bit 1) reached cpu 1"),
        );
        // All excluding self: every other CPU, once.
        write_icr(0b11 << 18 | VEC as u64);
        let others =
            super::wait_until(|| (1..n).all(|c| HITS[c].load(SeqCst) == 1 + (c == 1) as u32));
        settle();
        ok &= check(
            others && HITS[0].load(SeqCst) == 0,
            format_args!("all-excluding-self IPI reached {} CPU(s)", n - 1),
        );
        // All including self.
        write_icr(0b10 << 18 | VEC as u64);
        ok &= check(
            super::wait_until(|| HITS[0].load(SeqCst) == 1)
                && super::wait_until(|| {
                    (1..n).all(|c| HITS[c].load(SeqCst) == 2 + (c == 1) as u32)
                }),
            format_args!("all-including-self IPI reached {n} CPU(s)"),
        );
        for cmd in &CMD[1..n] {
            cmd.store(QUIT, SeqCst);
        }
        ok &= super::wait_until(|| (1..n).all(|c| !smp::is_running(c)));
        if !ok {
            return 1;
        }
        println_whole!("smp: hostile checks passed");
        0
    }
}

/// Blocks `mode=touch` writes into (2 MiB each, from 16 MiB into the window).
const TOUCH_BLOCKS: u64 = 8;
const TOUCH_FROM: u64 = 16 << 20;
const BLOCK: u64 = 2 << 20;
static GO: AtomicU32 = AtomicU32::new(0);

/// The word CPU `cpu` writes into block `k` (at `k`'s base + 64 x cpu, a cache line each), and its value.
fn touch_word(k: u64, cpu: usize) -> (&'static AtomicU64, u64) {
    let bi = libvmm_guest::boot_info().expect("boot info");
    let at = bi.mem_base + TOUCH_FROM + k * BLOCK + 64 * cpu as u64;
    // SAFETY: inside the guest's RAM (checked against its size by `touch`), 8-byte aligned, and only
    // ever reached as an atomic; RISC-V runs this with translation off (guest-physical addresses), x86
    // on the runtime's identity map of the window.
    let word = unsafe { &*(at as *const AtomicU64) };
    (word, (cpu as u64 + 1) << 32 | k)
}

/// One CPU's part of `mode=touch`: waits for the start, then writes its word into every block.
fn toucher() {
    let me = smp::current_cpu();
    wait_until(|| GO.load(SeqCst) != 0);
    // Each CPU from its own block on: every CPU is the first to touch some blocks.
    for i in 0..TOUCH_BLOCKS {
        let (w, v) = touch_word((i + 2 * me as u64) % TOUCH_BLOCKS, me);
        w.store(v, SeqCst);
    }
    DONE.fetch_add(1, SeqCst);
}

fn touch(n: usize) -> i32 {
    let bi = libvmm_guest::boot_info().expect("boot info");
    if bi.mem_size < TOUCH_FROM + TOUCH_BLOCKS * BLOCK + (4 << 20) {
        println_whole!("smp: FAILED: touch needs more guest memory");
        return 1;
    }
    for c in 1..n {
        if smp::start(c, toucher).is_err() {
            println_whole!("smp: FAILED: start cpu {c}");
            return 1;
        }
    }
    GO.store(1, SeqCst);
    toucher();
    let all = wait_until(|| DONE.load(SeqCst) as usize == n);
    let mut kept = all;
    for k in 0..TOUCH_BLOCKS {
        for c in 0..n {
            let (w, v) = touch_word(k, c);
            kept &= w.load(SeqCst) == v;
            // The word after it: written by nobody, so zero (never the host's bytes).
            // SAFETY: as in `touch_word`: the next word of the same cache line.
            let next = unsafe { &*((w as *const AtomicU64).add(1)) };
            kept &= next.load(SeqCst) == 0;
        }
    }
    let ok = check(
        kept,
        format_args!(
            "first touch of {TOUCH_BLOCKS} blocks from {n} CPUs at once, every write kept"
        ),
    );
    if ok {
        0
    } else {
        1
    }
}
