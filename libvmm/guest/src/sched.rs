//! Threads for Rust `std` payloads (hermit targets): `sys_spawn2`, `sys_join`, `sys_yield`,
//! `sys_usleep`, `sys_futex_wait` / `sys_futex_wake`, on every CPU the VMM gives the guest.
//!
//! One table of threads ([`crate::runq`]) under a spin lock is the run queue of all CPUs. At the
//! first `spawn`, the runtime starts every other CPU ([`smp::start`]: RISC-V SBI HSM, x86 INIT +
//! STARTUP) into its idle loop; a CPU that does not come up is not used. Each CPU joins with its
//! own timer and wake-up IPI set up (`cpu_setup`: on x86 both are per-CPU x2APIC state, so the boot
//! CPU and each AP program their own) before it can go idle. Each CPU runs one thread at a time; a
//! thread runs until it blocks (join, futex wait, sleep), yields or ends, and then its CPU takes
//! the next ready thread that no other CPU holds (round robin), or, when there is none, switches to
//! its own idle context. Threads beyond the CPU count are thus multiplexed at blocking calls only:
//! there is no preemption on the timer (a thread that spins without a blocking call keeps its CPU;
//! std's locks block through the futex calls, so they never spin for long). `thread::spawn` fails
//! only for lack of memory or table slots ([`MAX_THREADS`]).
//!
//! Per CPU: the thread it runs (`current[cpu]`, indexed by [`smp::current_cpu`], which reads the
//! CPU's identity from a register the runtime never moves — RISC-V `sscratch`, x86 the GS base set
//! per CPU at start (`smp::use_gs_cpu_numbers`) — never from TLS, which follows the thread), and
//! its idle context (CPU 0: a heap stack made when a thread first stops; the others: the stack
//! `smp::start` gave them). A thread's TLS block (built from `PT_TLS`) goes with it: the switch
//! loads its thread pointer on whichever CPU resumes it.
//!
//! Idle CPUs wait with WFI/HLT on their own timer, armed for the earliest sleeper or futex deadline
//! (at most [`IDLE_RECHECK_NS`] ahead, a safety net), and are woken early by the wake-up IPI
//! (RISC-V: the supervisor software interrupt; x86: `irq::WAKE_VECTOR`, EOI'd by its handler)
//! whenever another CPU makes a thread ready (spawn, futex wake, a thread's end waking its joiner,
//! a yielded thread released): one idle CPU per thread made ready, each claimed by one waker
//! (`runq::IdleCpus`). When no thread is ready, none has a deadline and every CPU is idle, nothing
//! can ever become ready: the runtime reports the deadlock and aborts the payload.
#![forbid(unsafe_code)]

use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};

use hermit_abi::errno::{EAGAIN, EINVAL, ESRCH, ETIMEDOUT};
use spin::Mutex;

use crate::arch::{heap, thread as sw};
use crate::runq::{IdleCpus, RunQueue, Slot, State, FREE};
use crate::smp::{self, MAX_CPUS};

/// Threads at once, the main thread included.
pub const MAX_THREADS: usize = 64;
/// Smallest stack a new thread gets.
const MIN_STACK: usize = 16 * 1024;
/// CPU 0's idle stack.
const IDLE_STACK: usize = 16 * 1024;
/// An idle CPU looks at the table again at least this often (ns), IPI or not: a safety net only (every
/// thread made ready wakes an idle CPU by IPI, on x86 and RISC-V).
pub const IDLE_RECHECK_NS: u64 = 10_000_000;
/// "No thread" in [`PREV`].
const NONE: usize = usize::MAX;

/// A thread's memory: thread pointer, stack block, TLS block (address, size, alignment).
#[derive(Clone, Copy)]
struct Mem {
    tp: u64,
    stack: (usize, usize),
    tls: (usize, usize, usize),
}

const NO_MEM: Mem = Mem {
    tp: 0,
    stack: (0, 0),
    tls: (0, 0, 0),
};

struct Sched {
    q: RunQueue<MAX_THREADS>,
    mem: [Mem; MAX_THREADS],
    /// The thread each CPU runs (meaningless while the CPU is idle).
    current: [usize; MAX_CPUS],
    /// The CPUs running the scheduler (bit per CPU; a started CPU sets its own).
    cpus: u64,
}

static SCHED: Mutex<Sched> = Mutex::new(Sched {
    q: RunQueue::new(),
    mem: [NO_MEM; MAX_THREADS],
    current: [0; MAX_CPUS],
    cpus: 1,
});
/// Saved stack pointers, outside the lock (the switch writes them): threads, then each CPU's idle
/// context at `MAX_THREADS + cpu`.
static SP: [AtomicU64; MAX_THREADS + MAX_CPUS] =
    [const { AtomicU64::new(0) }; MAX_THREADS + MAX_CPUS];
/// Per CPU: the thread it just switched away from, released (`on_cpu` cleared) once the switch is done.
static PREV: [AtomicUsize; MAX_CPUS] = [const { AtomicUsize::new(NONE) }; MAX_CPUS];
/// The CPUs waiting in their idle loop, each claimed by one waker ([`kick`]).
static IDLE: IdleCpus = IdleCpus::new();
/// CPU 0's idle context exists ([`make_idle0`]).
static IDLE0_MADE: AtomicBool = AtomicBool::new(false);
/// The other CPUs were started (first spawn).
static STARTED: AtomicBool = AtomicBool::new(false);

/// The TLS template, set once at start.
static TLS_TEMPLATE: Mutex<(&'static [u8], usize, usize)> = Mutex::new((&[], 0, 1));

fn now() -> u64 {
    crate::hermit::monotonic_ns()
}

fn cpu() -> usize {
    smp::current_cpu() % MAX_CPUS
}

/// Allocates and fills a TLS block; returns (thread pointer, block, size, align).
fn new_tls() -> Option<(u64, usize, usize, usize)> {
    let (image, mem, align) = *TLS_TEMPLATE.lock();
    if mem == 0 {
        return Some((0, 0, 0, 0));
    }
    // The linker places the data `round_up(p_memsz, p_align)` below the thread pointer (x86 variant
    // II) or at it (RISC-V variant I); the block itself is at least 16-byte aligned.
    let len = mem.next_multiple_of(align.max(1));
    let align = align.max(16);
    let size = len + 16;
    let block = heap::alloc(size, align);
    if block.is_null() {
        return None;
    }
    if cfg!(target_arch = "x86_64") {
        // Variant II: the data ends where the thread pointer points; [tp] holds tp itself.
        let tp = block as u64 + len as u64;
        sw::init_tls(block, image, mem, None);
        sw::init_tls_tcb(tp);
        Some((tp, block as usize, size, align))
    } else {
        // Variant I (RISC-V local-exec): tp points at the start of the block.
        sw::init_tls(block, image, mem, None);
        Some((block as u64, block as usize, size, align))
    }
}

/// Records the TLS template and gives the main thread (slot 0, running now on CPU 0) its block.
pub(crate) fn init(template: &'static [u8], mem_size: usize, align: usize) -> bool {
    *TLS_TEMPLATE.lock() = (template, mem_size, align);
    let Some((tp, block, size, al)) = new_tls() else {
        return false;
    };
    let mut s = SCHED.lock();
    s.q.slots[0] = Slot {
        state: State::Ready,
        timed_out: false,
        on_cpu: true,
    };
    s.mem[0] = Mem {
        tp,
        stack: (0, 0),
        tls: (block, size, al),
    };
    // The main thread runs on the boot CPU, 0 (no need to ask: on x86 the first ask probes the count).
    s.current[0] = 0;
    drop(s);
    if tp != 0 {
        sw::set_thread_pointer(tp);
    }
    true
}

/// The wake-up IPI's handler: only the EOI (x86; nothing on RISC-V); the idle loop looks at the table
/// when its HLT/WFI ends.
fn ipi(_: &mut crate::TrapFrame) -> crate::TrapAction {
    crate::irq::eoi();
    crate::TrapAction::Resume
}

/// This CPU joins the scheduler, before it can go idle or wake another CPU: its own timer (x86: its
/// x2APIC's LVT timer in TSC-deadline mode; each CPU's APIC starts masked), its wake-up IPIs (x86: the
/// x2APIC on and software-enabled, task priority 0 so that every vector is taken; RISC-V: sie.SSIE).
/// The IDT (x86) is every CPU's already: the boot CPU loads it at entry and each AP at its start.
fn cpu_setup() {
    crate::time::init();
    smp::enable_ipis();
    #[cfg(target_arch = "x86_64")]
    crate::arch::wrmsr(crate::irq::x2apic::TPR, 0);
}

/// Starts every other CPU into its idle loop, once (first spawn, always on CPU 0: no other CPU runs
/// before it). The wake-up IPI's handler is installed first (the handler table is every CPU's).
fn start_cpus() {
    if STARTED.swap(true, Ordering::SeqCst) {
        return;
    }
    let n = smp::cpu_count().min(MAX_CPUS);
    if n < 2 {
        return;
    }
    #[cfg(target_arch = "riscv64")]
    let _ = crate::irq::set_interrupt_handler(crate::irq::Interrupt::Software, ipi);
    #[cfg(target_arch = "x86_64")]
    let _ = crate::irq::set_interrupt_handler(
        crate::irq::Interrupt::Vector(crate::irq::WAKE_VECTOR),
        ipi,
    );
    // x86: `cpu()` without MSR exits on every CPU from here on.
    #[cfg(target_arch = "x86_64")]
    let _ = smp::use_gs_cpu_numbers();
    cpu_setup();
    let me = cpu();
    for c in (0..n).filter(|&c| c != me) {
        // A CPU that does not come up is simply not used (it joins `cpus` itself, in its idle loop).
        let _ = smp::start(c, secondary_main);
    }
}

/// A started CPU: sets up its timer and IPIs, then runs the idle loop on the stack `smp::start` gave it.
fn secondary_main() {
    cpu_setup();
    SCHED.lock().cpus |= 1 << cpu();
    idle_loop()
}

/// Makes CPU 0's idle context (a heap stack whose first frame enters [`idle_entry`]), the first time the
/// running thread stops: a program that never blocks does not pay for it.
fn make_idle0() {
    let idle = heap::alloc(IDLE_STACK, 16);
    if idle.is_null() {
        crate::println!("payload: out of memory for the scheduler's idle stack");
        crate::hermit::abort()
    }
    SP[MAX_THREADS].store(
        sw::new_stack(idle, IDLE_STACK, idle_entry, 0),
        Ordering::SeqCst,
    );
    IDLE0_MADE.store(true, Ordering::Relaxed);
}

/// CPU 0's idle context starts here (through `thread_main`).
extern "C" fn idle_entry(_: usize) {
    idle_loop()
}

/// Wakes idle CPUs (other than this one) to look for the threads just made ready: at most `n` of them,
/// each claimed by this waker alone (see [`IdleCpus::claim`]) and sent the wake-up IPI.
fn kick(n: usize) {
    if n == 0 || !STARTED.load(Ordering::Relaxed) {
        return;
    }
    let mut claimed = IDLE.claim(cpu(), n);
    while claimed != 0 {
        smp::send_wake(claimed.trailing_zeros() as usize);
        claimed &= claimed - 1;
    }
}

/// Completes a switch on this CPU: the thread it left is no longer live here (so another CPU may pick
/// it); an idle CPU is woken when that thread is ready (it yielded).
fn after_switch() {
    let prev = PREV[cpu()].swap(NONE, Ordering::SeqCst);
    if prev == NONE {
        return;
    }
    let ready = {
        let mut s = SCHED.lock();
        s.q.slots[prev].on_cpu = false;
        s.q.slots[prev].state == State::Ready
    };
    kick(ready as usize);
}

/// Switches this CPU from context `from` (a thread, or `MAX_THREADS + cpu` for its idle context) to
/// thread `to` (or the idle context), with the lock held on entry. Returns when some CPU switches back
/// to `from`.
fn switch(mut s: spin::MutexGuard<'_, Sched>, c: usize, from: usize, to: usize) {
    let tp = if to < MAX_THREADS {
        s.q.slots[to].on_cpu = true;
        s.current[c] = to;
        s.mem[to].tp
    } else {
        0
    };
    PREV[c].store(
        if from < MAX_THREADS { from } else { NONE },
        Ordering::SeqCst,
    );
    drop(s);
    if tp != 0 {
        sw::set_thread_pointer(tp);
    }
    sw::switch(&SP[from], SP[to].load(Ordering::SeqCst));
    after_switch();
}

/// A CPU with nothing to run: picks the next ready thread, or waits on its timer and IPIs.
///
/// No wake-up is lost between the look at the table and the wait: interrupts are off from the look
/// until the wait (x86 `cli`; RISC-V sstatus.SIE clear), the CPU is marked idle under the table's lock
/// (so a CPU that makes a thread ready after the look sees it idle and sends it the wake-up IPI), and
/// the wait itself is `sti; hlt` (STI's one-instruction shadow: an interrupt already pending is taken
/// only once HLT is reached, and ends it) or WFI with SIE clear (a pending interrupt ends it).
fn idle_loop() -> ! {
    loop {
        crate::irq::disable();
        let c = cpu();
        let mut s = SCHED.lock();
        let earliest = s.q.expire(now());
        let last = s.current[c];
        if let Some(n) = s.q.pick(last) {
            IDLE.clear(c);
            switch(s, c, MAX_THREADS + c, n);
            continue;
        }
        let all_idle = (0..MAX_CPUS)
            .filter(|&o| o != c && s.cpus & (1 << o) != 0)
            .all(|o| IDLE.is_idle(o));
        if earliest.is_none() && !s.q.any_ready() && all_idle {
            drop(s);
            crate::println!("payload: deadlock: every thread waits and none can wake it");
            crate::hermit::abort()
        }
        IDLE.set(c);
        drop(s);
        wait(earliest);
    }
}

/// Waits for an interrupt (an IPI, or this CPU's own timer armed for `deadline` but at most
/// [`IDLE_RECHECK_NS`] ahead).
fn wait(deadline: Option<u64>) {
    let t = now();
    let d = t.saturating_add(IDLE_RECHECK_NS);
    let d = deadline.map_or(d, |x| x.min(d));
    if d <= t {
        return;
    }
    let hz = crate::time::ticks_per_sec();
    if hz == 0 {
        return;
    }
    let ticks = ((d - t) as u128 * hz as u128 / 1_000_000_000) as u64;
    crate::time::arm_deadline(crate::time::ticks().saturating_add(ticks.max(1)));
    crate::irq::wait();
}

/// `sys_spawn2`: a new ready thread running `func(arg)`; its id (> 0), or 0 when out of memory or slots.
pub(crate) fn spawn(func: extern "C" fn(usize), arg: usize, stack_size: usize) -> u32 {
    start_cpus();
    let stack_size = stack_size.max(MIN_STACK).next_multiple_of(4096);
    if SCHED.lock().q.free_slot().is_none() {
        return 0;
    }
    let stack = heap::alloc(stack_size, 16);
    if stack.is_null() {
        return 0;
    }
    let Some((tp, block, size, align)) = new_tls() else {
        heap::free(stack, stack_size, 16);
        return 0;
    };
    let mut s = SCHED.lock();
    // Taken again under the lock: another CPU may have spawned meanwhile.
    let Some(slot) = s.q.free_slot() else {
        drop(s);
        heap::free(stack, stack_size, 16);
        if size != 0 {
            heap::free(block as *mut u8, size, align);
        }
        return 0;
    };
    SP[slot].store(
        sw::new_stack(stack, stack_size, func, arg),
        Ordering::SeqCst,
    );
    s.q.slots[slot] = Slot {
        state: State::Ready,
        timed_out: false,
        on_cpu: false,
    };
    s.mem[slot] = Mem {
        tp,
        stack: (stack as usize, stack_size),
        tls: (block, size, align),
    };
    drop(s);
    kick(1);
    slot as u32
}

/// Where a new thread (or CPU 0's idle context) starts, from `arch::thread`: completes the switch that
/// started it, runs `func(arg)`, then ends the thread.
pub(crate) fn thread_main(func: extern "C" fn(usize), arg: usize) -> ! {
    after_switch();
    func(arg);
    let woken = {
        let mut s = SCHED.lock();
        let me = s.current[cpu()];
        s.q.finish(me)
    };
    kick(woken);
    schedule(false);
    // A finished thread is never picked again.
    crate::hermit::abort()
}

/// The running thread stops (it blocked, yielded or ended): this CPU runs the next ready thread, or
/// goes idle. Returns when the thread runs again (at once when it is ready and nothing else is, or when
/// `yielding` is false and it is ready already: woken before it got here).
fn schedule(yielding: bool) {
    let c = cpu();
    if c == 0 && !IDLE0_MADE.load(Ordering::Relaxed) {
        make_idle0();
    }
    let mut s = SCHED.lock();
    s.q.expire(now());
    let me = s.current[c];
    let ready = s.q.slots[me].state == State::Ready;
    if ready && !yielding {
        return;
    }
    match s.q.pick(me) {
        Some(n) => switch(s, c, me, n),
        None if ready => {}
        None => switch(s, c, me, MAX_THREADS + c),
    }
}

/// `sys_yield`.
pub(crate) fn yield_now() {
    schedule(true)
}

/// `sys_usleep`: other threads run meanwhile.
pub(crate) fn usleep(us: u64) {
    let d = now().saturating_add(us.saturating_mul(1000));
    {
        let mut s = SCHED.lock();
        let me = s.current[cpu()];
        s.q.slots[me].state = State::Sleep(d);
    }
    schedule(false)
}

/// `sys_join`: waits for thread `tid` to finish and frees its stack and TLS block.
pub(crate) fn join(tid: u32) -> i32 {
    let tid = tid as usize;
    loop {
        let mut s = SCHED.lock();
        let me = s.current[cpu()];
        if tid == 0 || tid >= MAX_THREADS || tid == me || s.q.slots[tid].state == State::Free {
            return -ESRCH;
        }
        if s.q.slots[tid].state == State::Done {
            if s.q.slots[tid].on_cpu {
                // Its CPU is still switching away from its stack: a moment more.
                drop(s);
                core::hint::spin_loop();
                continue;
            }
            let m = s.mem[tid];
            s.q.slots[tid] = FREE;
            s.mem[tid] = NO_MEM;
            drop(s);
            heap::free(m.stack.0 as *mut u8, m.stack.1, 16);
            if m.tls.1 != 0 {
                heap::free(m.tls.0 as *mut u8, m.tls.1, m.tls.2);
            }
            return 0;
        }
        s.q.slots[me].state = State::Join(tid);
        drop(s);
        schedule(false);
    }
}

/// `sys_futex_wait`: blocks while `*word == expected`, until a wake or the deadline. The word is read
/// under the lock a waker takes too, so a wake between the read and the block is never lost.
pub(crate) fn futex_wait(word: &AtomicU32, expected: u32, deadline: Option<u64>) -> i32 {
    let me = {
        let mut s = SCHED.lock();
        if word.load(Ordering::SeqCst) != expected {
            return -EAGAIN;
        }
        let me = s.current[cpu()];
        s.q.slots[me].state = State::Futex(word as *const AtomicU32 as usize, deadline);
        s.q.slots[me].timed_out = false;
        me
    };
    schedule(false);
    if SCHED.lock().q.slots[me].timed_out {
        -ETIMEDOUT
    } else {
        0
    }
}

/// `sys_futex_wake`: wakes up to `count` waiters of `word` (all when negative); returns how many.
pub(crate) fn futex_wake(word: &AtomicU32, count: i32) -> i32 {
    if count == 0 {
        return 0;
    }
    let n = SCHED
        .lock()
        .q
        .wake_futex(word as *const AtomicU32 as usize, count);
    kick(n as usize);
    n
}

/// A relative or absolute futex timeout as an absolute monotonic deadline.
pub(crate) fn deadline(sec: i64, nsec: i32, relative: bool) -> Result<u64, i32> {
    if sec < 0 || !(0..1_000_000_000).contains(&nsec) {
        return Err(-EINVAL);
    }
    let ns = (sec as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(nsec as u64);
    Ok(if relative {
        now().saturating_add(ns)
    } else {
        ns
    })
}
