//! The thread scheduler's bookkeeping (see `sched.rs`), kept apart as plain data so that host tests
//! check it: which threads may run, which one a CPU picks next, what a futex wake, a thread's end or a
//! passed deadline changes. No locking and no CPU state here: `sched.rs` holds the table under its
//! spin lock, and a thread's registers and stack are `arch::thread`'s.
//!
//! The SMP rule lives in [`Slot::on_cpu`]: a thread whose context is live on some CPU (running, or still
//! switching away: its stack pointer is not saved yet) is never picked by another CPU, even when ready.
//! The CPU that switched away from it clears the flag once the switch is complete.
//!
//! The wake-up rule lives in [`IdleCpus`]: an idle CPU is claimed by exactly one waker, which then sends
//! it the wake-up IPI; two threads made ready at once on two CPUs thus wake two different idle CPUs,
//! never the same one twice while another sleeps on with a ready thread left for it.
#![forbid(unsafe_code)]
#![cfg_attr(not(any(test, target_os = "hermit")), allow(dead_code))]

/// What a thread is doing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum State {
    /// The slot is unused.
    Free,
    /// May run (or runs).
    Ready,
    /// Waiting on a futex word (its address), until a wake or the deadline (monotonic ns).
    Futex(usize, Option<u64>),
    /// Waiting for thread `n` to finish.
    Join(usize),
    /// Sleeping until the deadline (monotonic ns).
    Sleep(u64),
    /// Finished; its stack is freed by the join.
    Done,
}

/// One thread's scheduling state.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Slot {
    pub state: State,
    /// Woken by its deadline rather than by a wake.
    pub timed_out: bool,
    /// Its context is live on a CPU (see the module doc).
    pub on_cpu: bool,
}

pub(crate) const FREE: Slot = Slot {
    state: State::Free,
    timed_out: false,
    on_cpu: false,
};

/// The table of threads; slot 0 is the main thread.
pub(crate) struct RunQueue<const N: usize> {
    pub slots: [Slot; N],
}

impl<const N: usize> RunQueue<N> {
    pub const fn new() -> Self {
        RunQueue { slots: [FREE; N] }
    }

    /// A free slot for a new thread (never 0, the main thread's).
    pub fn free_slot(&self) -> Option<usize> {
        (1..N).find(|&i| self.slots[i].state == State::Free)
    }

    /// Makes every sleeper and timed futex waiter whose deadline is at or before `now` ready (a futex
    /// waiter marked timed out); returns the earliest deadline still pending.
    pub fn expire(&mut self, now: u64) -> Option<u64> {
        let mut earliest = None::<u64>;
        for s in self.slots.iter_mut() {
            match s.state {
                State::Sleep(d) | State::Futex(_, Some(d)) if d <= now => {
                    s.timed_out = matches!(s.state, State::Futex(..));
                    s.state = State::Ready;
                }
                State::Sleep(d) | State::Futex(_, Some(d)) => {
                    earliest = Some(earliest.map_or(d, |e: u64| e.min(d)));
                }
                _ => {}
            }
        }
        earliest
    }

    /// The next thread after `after` (round robin) that is ready and not live on any CPU.
    pub fn pick(&self, after: usize) -> Option<usize> {
        (1..=N)
            .map(|k| (after + k) % N)
            .find(|&i| self.slots[i].state == State::Ready && !self.slots[i].on_cpu)
    }

    /// Whether any thread is ready (running on a CPU, or waiting for one).
    pub fn any_ready(&self) -> bool {
        self.slots.iter().any(|s| s.state == State::Ready)
    }

    /// Thread `me` finished: marks it done and makes its joiners ready; returns how many.
    pub fn finish(&mut self, me: usize) -> usize {
        self.slots[me].state = State::Done;
        let mut n = 0;
        for s in self.slots.iter_mut() {
            if s.state == State::Join(me) {
                s.state = State::Ready;
                n += 1;
            }
        }
        n
    }

    /// Wakes up to `count` waiters of the futex word at `addr` (all when negative); returns how many.
    pub fn wake_futex(&mut self, addr: usize, count: i32) -> i32 {
        let mut n = 0;
        for s in self.slots.iter_mut() {
            if (count < 0 || n < count) && matches!(s.state, State::Futex(a, _) if a == addr) {
                s.state = State::Ready;
                s.timed_out = false;
                n += 1;
            }
        }
        n
    }
}

/// Which CPUs wait in their idle loop (bit per CPU), shared by every CPU without the run queue's lock.
pub(crate) struct IdleCpus(core::sync::atomic::AtomicU64);

impl IdleCpus {
    pub const fn new() -> Self {
        IdleCpus(core::sync::atomic::AtomicU64::new(0))
    }

    /// CPU `cpu` is about to wait (set under the run queue's lock, after it found nothing to run).
    pub fn set(&self, cpu: usize) {
        self.0
            .fetch_or(1 << cpu, core::sync::atomic::Ordering::SeqCst);
    }

    /// CPU `cpu` runs again (it picked a thread, or was claimed).
    pub fn clear(&self, cpu: usize) {
        self.0
            .fetch_and(!(1 << cpu), core::sync::atomic::Ordering::SeqCst);
    }

    /// Whether CPU `cpu` waits and nobody has claimed it yet.
    pub fn is_idle(&self, cpu: usize) -> bool {
        self.0.load(core::sync::atomic::Ordering::SeqCst) & (1 << cpu) != 0
    }

    /// Claims up to `n` idle CPUs other than `me` for the caller to wake (bit mask of the claimed
    /// ones): each claimed CPU is no longer idle for any other waker, so concurrent wakers never pick
    /// the same CPU; a CPU claimed while it still goes to sleep takes the wake-up IPI on its way down
    /// (pending, it ends the HLT/WFI at once).
    pub fn claim(&self, me: usize, n: usize) -> u64 {
        use core::sync::atomic::Ordering::SeqCst;
        let mut claimed = 0u64;
        let mut cur = self.0.load(SeqCst);
        while (claimed.count_ones() as usize) < n {
            let free = cur & !(1u64 << me);
            if free == 0 {
                break;
            }
            let bit = free & free.wrapping_neg();
            match self.0.compare_exchange(cur, cur & !bit, SeqCst, SeqCst) {
                Ok(_) => {
                    claimed |= bit;
                    cur &= !bit;
                }
                Err(now) => cur = now,
            }
        }
        claimed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q() -> RunQueue<8> {
        let mut q = RunQueue::new();
        q.slots[0] = Slot {
            state: State::Ready,
            timed_out: false,
            on_cpu: true,
        };
        q
    }

    fn ready(q: &mut RunQueue<8>, i: usize) {
        q.slots[i] = Slot {
            state: State::Ready,
            timed_out: false,
            on_cpu: false,
        };
    }

    #[test]
    fn pick_is_round_robin_and_skips_threads_live_on_a_cpu() {
        let mut q = q();
        ready(&mut q, 2);
        ready(&mut q, 5);
        assert_eq!(q.pick(0), Some(2));
        assert_eq!(q.pick(2), Some(5));
        assert_eq!(q.pick(5), Some(2));
        // Thread 2 is taken by another CPU: this one must not pick it too.
        q.slots[2].on_cpu = true;
        assert_eq!(q.pick(5), Some(5));
        q.slots[5].on_cpu = true;
        assert_eq!(q.pick(0), None);
        // The main thread runs on a CPU: never picked again elsewhere.
        assert_eq!(q.free_slot(), Some(1));
    }

    #[test]
    fn a_ready_thread_still_switching_away_is_not_picked_until_released() {
        // CPU 0 yields thread 1 (ready) and switches to thread 2; until CPU 0 has saved thread 1's
        // stack pointer (on_cpu still set), an idle CPU 1 must find nothing to run.
        let mut q = q();
        q.slots[0].state = State::Join(3);
        q.slots[0].on_cpu = false;
        ready(&mut q, 1);
        q.slots[1].on_cpu = true;
        assert_eq!(q.pick(0), None);
        assert!(q.any_ready(), "not a deadlock: thread 1 is ready");
        q.slots[1].on_cpu = false;
        assert_eq!(q.pick(0), Some(1));
    }

    #[test]
    fn deadlines_expire_and_the_earliest_pending_one_is_reported() {
        let mut q = q();
        q.slots[1] = Slot {
            state: State::Sleep(100),
            ..FREE
        };
        q.slots[2] = Slot {
            state: State::Futex(0x1000, Some(50)),
            ..FREE
        };
        q.slots[3] = Slot {
            state: State::Futex(0x1000, None),
            ..FREE
        };
        assert_eq!(q.expire(10), Some(50));
        assert_eq!(q.expire(60), Some(100));
        assert_eq!(q.slots[2].state, State::Ready);
        assert!(q.slots[2].timed_out);
        assert_eq!(q.expire(100), None);
        assert_eq!(q.slots[1].state, State::Ready);
        assert!(!q.slots[1].timed_out);
        assert_eq!(q.slots[3].state, State::Futex(0x1000, None));
    }

    #[test]
    fn futex_wake_counts_and_matches_the_word() {
        let mut q = q();
        for i in 1..5 {
            q.slots[i] = Slot {
                state: State::Futex(0x2000, None),
                ..FREE
            };
        }
        q.slots[5] = Slot {
            state: State::Futex(0x3000, None),
            ..FREE
        };
        assert_eq!(q.wake_futex(0x2000, 0), 0);
        assert_eq!(q.wake_futex(0x2000, 1), 1);
        assert_eq!(q.slots[1].state, State::Ready);
        assert_eq!(q.wake_futex(0x2000, -1), 3);
        assert_eq!(q.wake_futex(0x2000, -1), 0);
        assert_eq!(q.slots[5].state, State::Futex(0x3000, None));
    }

    #[test]
    fn finish_wakes_every_joiner_and_nothing_else() {
        let mut q = q();
        q.slots[0].state = State::Join(4);
        q.slots[2] = Slot {
            state: State::Join(4),
            ..FREE
        };
        q.slots[3] = Slot {
            state: State::Join(5),
            ..FREE
        };
        ready(&mut q, 4);
        assert_eq!(q.finish(4), 2);
        assert_eq!(q.slots[4].state, State::Done);
        assert_eq!(q.slots[0].state, State::Ready);
        assert_eq!(q.slots[2].state, State::Ready);
        assert_eq!(q.slots[3].state, State::Join(5));
    }

    #[test]
    fn every_thread_blocked_without_a_deadline_is_a_deadlock() {
        let mut q = q();
        q.slots[0].state = State::Futex(0x10, None);
        q.slots[1] = Slot {
            state: State::Join(0),
            ..FREE
        };
        assert_eq!(q.expire(0), None);
        assert!(!q.any_ready());
        q.slots[2] = Slot {
            state: State::Sleep(5),
            ..FREE
        };
        assert_eq!(q.expire(0), Some(5));
    }

    #[test]
    fn a_claim_takes_idle_cpus_other_than_the_waker_once() {
        let idle = IdleCpus::new();
        assert_eq!(idle.claim(0, 1), 0, "nobody idle: nothing to wake");
        idle.set(0);
        idle.set(2);
        idle.set(3);
        assert_eq!(idle.claim(0, 0), 0);
        assert_eq!(idle.claim(0, 1), 1 << 2, "never the waker itself");
        assert!(!idle.is_idle(2) && idle.is_idle(3) && idle.is_idle(0));
        assert_eq!(idle.claim(0, 5), 1 << 3, "at most the idle ones");
        assert_eq!(idle.claim(0, 1), 0, "CPU 3 was claimed already");
        assert_eq!(idle.claim(1, 1), 1, "another waker may wake CPU 0");
        idle.set(1);
        idle.clear(1);
        assert!(!idle.is_idle(1));
    }

    #[test]
    fn concurrent_wakers_never_claim_the_same_cpu() {
        // Two threads made ready at once: each waker must wake a different idle CPU (the bug this
        // replaces: both read CPU 2 idle, both woke it, and CPU 3 slept on with a ready thread).
        extern crate std;
        use std::sync::Arc;
        for round in 0..200 {
            let idle = Arc::new(IdleCpus::new());
            for c in 2..8 {
                idle.set(c);
            }
            let hs: std::vec::Vec<_> = (0..2)
                .map(|me| {
                    let idle = Arc::clone(&idle);
                    std::thread::spawn(move || (0..3).fold(0u64, |acc, _| acc | idle.claim(me, 1)))
                })
                .collect();
            let got: std::vec::Vec<u64> = hs.into_iter().map(|h| h.join().unwrap()).collect();
            assert_eq!(got[0] & got[1], 0, "round {round}: a CPU claimed twice");
            assert_eq!(
                got[0].count_ones() + got[1].count_ones(),
                6,
                "round {round}"
            );
            assert_eq!(got[0] | got[1], 0b1111_1100);
        }
    }
}
