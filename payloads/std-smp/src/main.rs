//! std threads on several CPUs: a Rust `std` program (hermit target) whose threads the runtime spreads
//! over every vCPU the VMM gives the guest. Each check prints one `std-smp: ... ok` line with exact
//! results. It uses no `HashMap` (no entropy source is needed).
//!
//! 1. `available_parallelism` is the CPU count.
//! 2. A spin barrier that only concurrent execution passes: as many threads as CPUs each arrive and
//!    then spin (no blocking call, so a CPU is never handed to another thread) until all have arrived;
//!    on fewer CPUs than threads it would never pass, and the runtime's multiplexing at blocking calls
//!    could not help. Each thread records the CPU it ran on (`libvmm_guest::smp::current_cpu`).
//!    Then, each still on its own CPU, every thread checks that CPU's timer and the clocks across CPUs:
//!    a raw 2 ms sleep on the CPU's own timer (`libvmm_guest::time::sleep_ns`: HLT/WFI until this CPU's
//!    timer fires, which it never would on a CPU whose timer was not set up), a 3 ms `thread::sleep` and
//!    a 3 ms `Condvar::wait_timeout` nobody notifies (a futex timeout) — each ends no earlier than asked,
//!    by `Instant`, even when the thread resumes on another CPU than the one that timed it.
//! 3. Eight threads (more than CPUs) add to a `Mutex` counter 1000 times each, yielding now and then,
//!    and return values summed through `join`; a channel collects squares from four more threads.
//!
//! With the argument `bench` (`-- std-smp bench`, 2 CPUs or more, under the bench's instruction count) it
//! prints `bench: std_wake_other_cpu=N`: a thread parked on another CPU, which waits idle, is unparked
//! (a futex wake: the scheduler's wake-up IPI to that CPU) and answers through an atomic and an IPI to
//! `main`, which waits in HLT/WFI without blocking (so it keeps its own CPU); N is one such round, in
//! emulated instructions.
//!
//! With the argument `deadlock` (`-- std-smp deadlock`) it makes a deadlock instead: a thread waits on a
//! channel whose sender `main` keeps, and `main` joins it. Every CPU goes idle with no thread ready and
//! no deadline: the runtime reports it and aborts the payload rather than waiting forever.
#[cfg(target_os = "hermit")]
use libvmm_guest as _;

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// Sleeps on this CPU's own timer, without the scheduler (host build: `thread::sleep`).
fn raw_sleep(d: Duration) {
    #[cfg(target_os = "hermit")]
    libvmm_guest::time::sleep_ns(d.as_nanos() as u64);
    #[cfg(not(target_os = "hermit"))]
    std::thread::sleep(d);
}

/// The timer checks of one barrier thread (see the module doc): all end no earlier than asked.
fn timers_ok() -> bool {
    let t = Instant::now();
    raw_sleep(Duration::from_millis(2));
    let raw = t.elapsed() >= Duration::from_millis(2);
    let t = Instant::now();
    std::thread::sleep(Duration::from_millis(3));
    let slept = t.elapsed() >= Duration::from_millis(3);
    let pair = (Mutex::new(()), Condvar::new());
    let t = Instant::now();
    let (_g, r) = pair
        .1
        .wait_timeout(pair.0.lock().unwrap(), Duration::from_millis(3))
        .unwrap();
    let futex = r.timed_out() && t.elapsed() >= Duration::from_millis(3);
    if !(raw && slept && futex) {
        println!("std-smp: FAILED: timers on CPU {}: raw sleep {raw}, thread::sleep {slept}, futex timeout {futex}", current_cpu());
    }
    raw && slept && futex
}

fn cycles() -> u64 {
    #[cfg(target_os = "hermit")]
    return libvmm_guest::arch::cycles();
    #[cfg(not(target_os = "hermit"))]
    0
}

/// The cross-CPU wake figure (see the module doc).
#[cfg(target_os = "hermit")]
fn bench(n: usize) {
    use libvmm_guest::{irq, smp};
    const WARM: u64 = 5;
    const ROUNDS: u64 = 100;
    if n < 2 {
        println!("std-smp: FAILED: the bench needs 2 CPUs or more");
        return;
    }
    // The answer's IPI only ends main's HLT (RISC-V: the scheduler's software interrupt, whose
    // handler does the same).
    fn answered(_: &mut libvmm_guest::TrapFrame) -> libvmm_guest::TrapAction {
        irq::eoi();
        libvmm_guest::TrapAction::Resume
    }
    let _ = irq::set_interrupt_handler(irq::Interrupt::Software, answered);
    smp::enable_ipis();
    let main_cpu = current_cpu();
    let turn = Arc::new(AtomicU64::new(0));
    let t = {
        let turn = Arc::clone(&turn);
        spawn(move || {
            let mut cpus = 0u64;
            for i in 0..WARM + ROUNDS {
                while turn.load(Ordering::SeqCst) != 2 * i + 1 {
                    std::thread::park();
                }
                cpus |= 1 << current_cpu();
                turn.store(2 * i + 2, Ordering::SeqCst);
                let _ = smp::send_ipi(main_cpu);
            }
            cpus
        })
    };
    let mut t0 = 0;
    for i in 0..WARM + ROUNDS {
        if i == WARM {
            t0 = cycles();
        }
        turn.store(2 * i + 1, Ordering::SeqCst);
        t.thread().unpark();
        // Main never blocks (so it keeps its CPU, which never goes idle): HLT until the answer.
        while turn.load(Ordering::SeqCst) != 2 * i + 2 {
            irq::wait();
        }
    }
    let per = (cycles() - t0) / ROUNDS;
    let stayed = current_cpu() == main_cpu;
    let cpus = t.join().unwrap();
    if !stayed || cpus & (1 << main_cpu) != 0 {
        println!(
            "std-smp: FAILED: main left CPU {main_cpu}, or the parked thread ran there ({cpus:#b})"
        );
        return;
    }
    println!("bench: std_wake_other_cpu={per}");
    println!("std-smp: bench done (main on CPU {main_cpu}, the parked thread on CPUs {cpus:#b})");
}

#[cfg(not(target_os = "hermit"))]
fn bench(_: usize) {
    println!("std-smp: the bench runs inside libvmm only");
}

fn current_cpu() -> usize {
    #[cfg(target_os = "hermit")]
    return libvmm_guest::smp::current_cpu();
    #[cfg(not(target_os = "hermit"))]
    0
}

/// `thread::spawn` with a 128 KiB stack (std's default of 2 MiB would take the guest's heap fast).
fn spawn<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> std::thread::JoinHandle<T> {
    std::thread::Builder::new()
        .stack_size(128 * 1024)
        .spawn(f)
        .unwrap()
}

fn main() {
    let n = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!("std-smp: available_parallelism {n} ok");
    if std::env::args().any(|a| a == "bench") {
        bench(n);
        return;
    }
    if std::env::args().any(|a| a == "deadlock") {
        let (tx, rx) = mpsc::channel::<()>();
        let h = spawn(move || rx.recv().is_ok());
        println!("std-smp: joining a thread that waits for main");
        let _ = h.join();
        drop(tx);
        println!("std-smp: FAILED: the deadlock ended");
        return;
    }

    // Concurrent execution: every thread must see all `n` arrivals while none of them blocks.
    let arrived = Arc::new(AtomicUsize::new(0));
    let hs: Vec<_> = (0..n)
        .map(|_| {
            let a = Arc::clone(&arrived);
            spawn(move || {
                a.fetch_add(1, Ordering::SeqCst);
                let t = Instant::now();
                while a.load(Ordering::SeqCst) < n {
                    if t.elapsed() > Duration::from_secs(20) {
                        return (false, current_cpu(), false);
                    }
                    std::hint::spin_loop();
                }
                let cpu = current_cpu();
                (true, cpu, timers_ok())
            })
        })
        .collect();
    let res: Vec<(bool, usize, bool)> = hs.into_iter().map(|h| h.join().unwrap()).collect();
    let passed = res.iter().all(|r| r.0);
    let mut cpus: Vec<usize> = res.iter().map(|r| r.1).collect();
    cpus.sort();
    cpus.dedup();
    println!(
        "std-smp: barrier of {n} spinning threads passed {passed} on {} distinct CPUs ok",
        cpus.len()
    );
    if res.iter().all(|r| r.2) {
        println!("std-smp: timers on {n} CPUs: own-timer sleep, thread::sleep, futex timeout ok");
    }

    // More threads than CPUs: exact results through a Mutex, join values and a channel.
    let counter = Arc::new(Mutex::new(0u64));
    let seen = Arc::new(Mutex::new(0u64));
    let hs: Vec<_> = (0..8u64)
        .map(|i| {
            let c = Arc::clone(&counter);
            let s = Arc::clone(&seen);
            spawn(move || {
                for k in 0..1000 {
                    *c.lock().unwrap() += 1;
                    if k % 100 == 0 {
                        *s.lock().unwrap() |= 1 << current_cpu();
                    }
                    if i % 2 == 0 {
                        std::thread::yield_now();
                    }
                }
                i * 10
            })
        })
        .collect();
    let sum: u64 = hs.into_iter().map(|h| h.join().unwrap()).sum();
    println!(
        "std-smp: 8 threads counter {} sum {} ok",
        *counter.lock().unwrap(),
        sum
    );
    println!(
        "std-smp: the counter threads ran on {} CPUs",
        seen.lock().unwrap().count_ones()
    );
    let (tx, rx) = mpsc::channel();
    for i in 0..4u64 {
        let tx = tx.clone();
        spawn(move || tx.send(i * i).unwrap());
    }
    drop(tx);
    let total: u64 = rx.iter().sum();
    println!("std-smp: channel sum {total} ok");
    std::thread::sleep(Duration::from_millis(5));
    println!("std-smp: done");
}
