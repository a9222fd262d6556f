//! Threads for Rust `std` payloads (hermit targets): `sys_spawn2`, `sys_join`, `sys_yield`,
//! `sys_usleep`, `sys_futex_wait` / `sys_futex_wake`. libvmm gives a guest one vCPU, so the runtime
//! multiplexes every thread on it cooperatively: a thread runs until it blocks (join, futex wait,
//! sleep) or yields, then the next ready thread runs (round robin). `thread::spawn` therefore never
//! fails for lack of CPUs, only for lack of memory or table slots ([`MAX_THREADS`]). Each thread has
//! its own heap stack and TLS block (built from `PT_TLS`). When nothing is ready the runtime waits on
//! the monotonic clock for the earliest sleeper or futex timeout; when nothing can ever become ready
//! (every thread waits without a timeout) it reports the deadlock and aborts the payload.
#![forbid(unsafe_code)]

use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use hermit_abi::errno::{EAGAIN, EINVAL, ESRCH, ETIMEDOUT};
use spin::Mutex;

use crate::arch::{heap, thread as sw};

/// Threads at once, the main thread included.
pub const MAX_THREADS: usize = 64;
/// Smallest stack a new thread gets.
const MIN_STACK: usize = 16 * 1024;

#[derive(Clone, Copy, PartialEq, Eq)]
enum State {
    Free,
    Ready,
    /// Waiting on a futex word, until a wake or the deadline (monotonic ns).
    Futex(usize, Option<u64>),
    Join(usize),
    Sleep(u64),
    Done,
}

#[derive(Clone, Copy)]
struct Thread {
    state: State,
    /// Woken by its deadline rather than by a wake.
    timed_out: bool,
    tp: u64,
    stack: (usize, usize),
    tls: (usize, usize, usize),
}

const IDLE: Thread = Thread {
    state: State::Free,
    timed_out: false,
    tp: 0,
    stack: (0, 0),
    tls: (0, 0, 0),
};

struct Sched {
    threads: [Thread; MAX_THREADS],
    current: usize,
}

static SCHED: Mutex<Sched> = Mutex::new(Sched {
    threads: [IDLE; MAX_THREADS],
    current: 0,
});
/// Saved stack pointers, outside the lock (the switch writes them).
static SP: [AtomicU64; MAX_THREADS] = [const { AtomicU64::new(0) }; MAX_THREADS];

/// The TLS template, set once at start.
static TLS_TEMPLATE: Mutex<(&'static [u8], usize, usize)> = Mutex::new((&[], 0, 1));

fn now() -> u64 {
    crate::hermit::monotonic_ns()
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

/// Records the TLS template and gives the main thread (slot 0, running now) its block.
pub(crate) fn init(template: &'static [u8], mem_size: usize, align: usize) -> bool {
    *TLS_TEMPLATE.lock() = (template, mem_size, align);
    let Some((tp, block, size, al)) = new_tls() else {
        return false;
    };
    let mut s = SCHED.lock();
    s.threads[0] = Thread {
        state: State::Ready,
        timed_out: false,
        tp,
        stack: (0, 0),
        tls: (block, size, al),
    };
    s.current = 0;
    drop(s);
    if tp != 0 {
        sw::set_thread_pointer(tp);
    }
    true
}

/// `sys_spawn2`: a new ready thread running `func(arg)`; its id (> 0), or 0 when out of memory or slots.
pub(crate) fn spawn(func: extern "C" fn(usize), arg: usize, stack_size: usize) -> u32 {
    let stack_size = stack_size.max(MIN_STACK).next_multiple_of(4096);
    let slot = {
        let s = SCHED.lock();
        match (1..MAX_THREADS).find(|&i| s.threads[i].state == State::Free) {
            Some(i) => i,
            None => return 0,
        }
    };
    let stack = heap::alloc(stack_size, 16);
    if stack.is_null() {
        return 0;
    }
    let Some((tp, block, size, align)) = new_tls() else {
        heap::free(stack, stack_size, 16);
        return 0;
    };
    SP[slot].store(
        sw::new_stack(stack, stack_size, func, arg),
        Ordering::SeqCst,
    );
    SCHED.lock().threads[slot] = Thread {
        state: State::Ready,
        timed_out: false,
        tp,
        stack: (stack as usize, stack_size),
        tls: (block, size, align),
    };
    slot as u32
}

/// Where a new thread starts (from `arch::thread`): runs `func(arg)`, then ends the thread.
pub(crate) fn thread_main(func: extern "C" fn(usize), arg: usize) -> ! {
    func(arg);
    {
        let mut s = SCHED.lock();
        let me = s.current;
        s.threads[me].state = State::Done;
        for t in s.threads.iter_mut() {
            if t.state == State::Join(me) {
                t.state = State::Ready;
            }
        }
    }
    schedule();
    // A finished thread is never picked again.
    crate::hermit::abort()
}

/// Switches to the next thread that can run (possibly the current one, if it is ready). Waits on the
/// clock while only sleepers or timed waiters exist; aborts on a deadlock.
fn schedule() {
    loop {
        let mut s = SCHED.lock();
        let cur = s.current;
        let t = now();
        let mut earliest = None::<u64>;
        for th in s.threads.iter_mut() {
            match th.state {
                State::Sleep(d) | State::Futex(_, Some(d)) if d <= t => {
                    th.timed_out = matches!(th.state, State::Futex(..));
                    th.state = State::Ready;
                }
                State::Sleep(d) | State::Futex(_, Some(d)) => {
                    earliest = Some(earliest.map_or(d, |e: u64| e.min(d)));
                }
                _ => {}
            }
        }
        let next = (1..=MAX_THREADS)
            .map(|k| (cur + k) % MAX_THREADS)
            .find(|&i| s.threads[i].state == State::Ready);
        match next {
            Some(n) if n == cur => return,
            Some(n) => {
                s.current = n;
                let tp = s.threads[n].tp;
                drop(s);
                if tp != 0 {
                    sw::set_thread_pointer(tp);
                }
                sw::switch(&SP[cur], SP[n].load(Ordering::SeqCst));
                return;
            }
            None => {
                drop(s);
                match earliest {
                    Some(d) => while now() < d {},
                    None => {
                        crate::println!(
                            "payload: deadlock: every thread waits and none can wake it"
                        );
                        crate::hermit::abort()
                    }
                }
            }
        }
    }
}

/// `sys_yield`.
pub(crate) fn yield_now() {
    schedule()
}

/// `sys_usleep`: other threads run meanwhile.
pub(crate) fn usleep(us: u64) {
    let d = now().saturating_add(us.saturating_mul(1000));
    {
        let mut s = SCHED.lock();
        let me = s.current;
        s.threads[me].state = State::Sleep(d);
    }
    schedule()
}

/// `sys_join`: waits for thread `tid` to finish and frees its stack and TLS block.
pub(crate) fn join(tid: u32) -> i32 {
    let tid = tid as usize;
    loop {
        let mut s = SCHED.lock();
        if tid == 0 || tid >= MAX_THREADS || tid == s.current || s.threads[tid].state == State::Free
        {
            return -ESRCH;
        }
        if s.threads[tid].state == State::Done {
            let t = s.threads[tid];
            s.threads[tid] = IDLE;
            drop(s);
            heap::free(t.stack.0 as *mut u8, t.stack.1, 16);
            if t.tls.1 != 0 {
                heap::free(t.tls.0 as *mut u8, t.tls.1, t.tls.2);
            }
            return 0;
        }
        let me = s.current;
        s.threads[me].state = State::Join(tid);
        drop(s);
        schedule();
    }
}

/// `sys_futex_wait`: blocks while `*word == expected`, until a wake or the deadline.
pub(crate) fn futex_wait(word: &AtomicU32, expected: u32, deadline: Option<u64>) -> i32 {
    if word.load(Ordering::SeqCst) != expected {
        return -EAGAIN;
    }
    {
        let mut s = SCHED.lock();
        let me = s.current;
        s.threads[me].state = State::Futex(word as *const AtomicU32 as usize, deadline);
        s.threads[me].timed_out = false;
    }
    schedule();
    let s = SCHED.lock();
    if s.threads[s.current].timed_out {
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
    let addr = word as *const AtomicU32 as usize;
    let mut n = 0;
    let mut s = SCHED.lock();
    for t in s.threads.iter_mut() {
        if matches!(t.state, State::Futex(a, _) if a == addr) && (count < 0 || n < count) {
            t.state = State::Ready;
            n += 1;
        }
    }
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
