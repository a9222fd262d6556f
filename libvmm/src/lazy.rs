//! Zero on first touch, one state per VM: the blocks of guest memory left *deferred* at boot
//! (`loader::GuestMap::defer_from`: not zeroed, not in the nested tables) and what has become of each
//! since. Every vCPU of the VM holds the same `&'static` [`LazyBlocks`] (static storage, atomics, no
//! heap), so with guest SMP a block is zeroed exactly once and nothing a vCPU wrote into it is ever
//! zeroed by another one's later touch (per-vCPU copies of a bitmap would do exactly that).
//!
//! Each block is a small state machine, moved on by `compare_exchange` so exactly one vCPU owns a
//! block while it is zeroed or mapped:
//!
//! ```text
//! PENDING --claim--> ZEROING --zeroed--> ZEROED --claim--> MAPPING --mapped--> MAPPED
//!                          \______________________________(first touch: both)____/
//! ```
//!
//! * the guest's first nested fault in a block ([`LazyBlocks::first_touch`]): the vCPU that claims it
//!   zeroes it and maps it in the nested tables (the tables are one per VM, shared by every vCPU, so the
//!   others find it mapped); a vCPU that faults while another owns the block waits a bounded while, then
//!   re-enters the guest to fault again; one that faults after it is mapped (a stale negative TLB entry
//!   on its own CPU: RISC-V may cache invalid G-stage entries) fences locally and resumes;
//! * the VMM's own access for the guest (a console write's buffer, the x86 emulator's operands:
//!   [`LazyBlocks::zero_stale`]) zeroes what still holds host bytes first, and waits for a block another
//!   vCPU is zeroing: it never reads or writes a block before it is zeroed.
//!
//! RISC-V uses it from every hart. x86 goes through the same calls from its loop (`vcpu::first_touch`);
//! with guest SMP its boot vCPU zeroes and maps every block still deferred before any AP can start
//! ([`LazyBlocks::touch_all`]), so the APs, which share `&`[`VM_LAZY`] and the VM's one NPT/EPT, never
//! fault on a block and never map into the tables themselves. x86 never caches not-present nested
//! entries, so its `nested_tables_changed` stays a no-op.
#![forbid(unsafe_code)]
// The TDX image runs no guest; the fuzz targets drive the policies without the run loop.
#![cfg_attr(
    any(
        all(target_os = "none", feature = "tdx"),
        all(feature = "fuzzing", not(test))
    ),
    allow(dead_code)
)]

use core::sync::atomic::{AtomicU32, AtomicU64, AtomicU8, Ordering};

use crate::config::{LAZY_BLOCK, LAZY_WAIT_SPINS, LAZY_WORDS};
use crate::guest_mem::GuestMemory;
use crate::loader::GuestMap;

/// Blocks the state covers (the whole of `config::GUEST_MEM_MAX`).
const BLOCKS: usize = LAZY_WORDS * 64;

/// Not deferred (or outside the window): boot zeroed and mapped it.
const RESIDENT: u8 = 0;
/// Deferred: still holds the host's bytes, not mapped.
const PENDING: u8 = 1;
/// A vCPU is zeroing it.
const ZEROING: u8 = 2;
/// Zeroed (for the VMM's own access), not mapped yet.
const ZEROED: u8 = 3;
/// A vCPU is mapping it (zeroed).
const MAPPING: u8 = 4;
/// Zeroed and mapped.
const MAPPED: u8 = 5;

/// What a nested fault found ([`LazyBlocks::first_touch`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Touch {
    /// Not a deferred block: a real fault.
    NotLazy,
    /// This vCPU zeroed (if needed) and mapped the block: resume.
    Mapped,
    /// Another vCPU mapped it already: fence the nested translations locally and resume.
    MappedElsewhere,
    /// Another vCPU still owns it after the bounded wait: re-enter the guest, which faults again.
    Busy,
    /// The backend could not map it (the block stays zeroed, unmapped).
    MapFailed,
}

/// A block another vCPU kept busy past the bounded wait ([`LazyBlocks::zero_stale`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct StillBusy;

/// The lazy-block state of the one VM.
pub(crate) struct LazyBlocks {
    /// The window's base (block 0).
    base: AtomicU64,
    state: [AtomicU8; BLOCKS],
    /// Blocks still holding host bytes (PENDING or ZEROING): 0 makes [`LazyBlocks::zero_stale`] one load.
    stale: AtomicU32,
}

/// The VM's state on the machine (one VM per image); boot arms it, every vCPU's `Vm` refers to it.
pub(crate) static VM_LAZY: LazyBlocks = LazyBlocks::new();

impl LazyBlocks {
    pub const fn new() -> Self {
        Self {
            base: AtomicU64::new(0),
            state: [const { AtomicU8::new(RESIDENT) }; BLOCKS],
            stale: AtomicU32::new(0),
        }
    }

    /// Takes `map`'s deferred blocks as pending (at boot, before any vCPU runs). Returns how many.
    pub fn arm(&self, map: &GuestMap) -> usize {
        let base = map.base();
        self.base.store(base, Ordering::Relaxed);
        let mut n = 0;
        // The window's blocks only (the rest stay resident): bookkeeping per block of guest memory.
        let blocks = (map.end().saturating_sub(base)).div_ceil(LAZY_BLOCK) as usize;
        for (i, s) in self.state.iter().enumerate().take(blocks) {
            let deferred = map.is_deferred(base + i as u64 * LAZY_BLOCK);
            s.store(if deferred { PENDING } else { RESIDENT }, Ordering::Relaxed);
            n += deferred as usize;
        }
        self.stale.store(n as u32, Ordering::Release);
        n
    }

    /// Block index and base of `gpa`, if it is in the covered range.
    fn index(&self, gpa: u64) -> Option<(usize, u64)> {
        let base = self.base.load(Ordering::Relaxed);
        let i = gpa.checked_sub(base)? / LAZY_BLOCK;
        (i < BLOCKS as u64).then(|| (i as usize, base + i * LAZY_BLOCK))
    }

    fn state_of(&self, gpa: u64) -> u8 {
        self.index(gpa)
            .map_or(RESIDENT, |(i, _)| self.state[i].load(Ordering::Acquire))
    }

    /// Whether `gpa` is in a block deferred at boot (whatever has become of it since).
    pub fn is_lazy(&self, gpa: u64) -> bool {
        self.state_of(gpa) != RESIDENT
    }

    /// Whether the block of `gpa` is mapped in the nested tables (resident or mapped since).
    #[cfg(test)]
    pub fn is_mapped(&self, gpa: u64) -> bool {
        matches!(self.state_of(gpa), RESIDENT | MAPPED)
    }

    /// Whether the block of `gpa` still holds the host's bytes.
    #[cfg(test)]
    pub fn is_stale(&self, gpa: u64) -> bool {
        matches!(self.state_of(gpa), PENDING | ZEROING)
    }

    fn claim(&self, i: usize, from: u8, to: u8) -> bool {
        self.state[i]
            .compare_exchange(from, to, Ordering::Acquire, Ordering::Acquire)
            .is_ok()
    }

    /// Zeroes block `i` at `block`, which this vCPU claimed (ZEROING); leaves it `then`.
    fn zero_claimed(&self, mem: &GuestMemory<'_>, i: usize, block: u64, then: u8) -> bool {
        if mem.fill(block, LAZY_BLOCK, 0).is_err() {
            self.state[i].store(PENDING, Ordering::Release);
            return false;
        }
        self.stale.fetch_sub(1, Ordering::Release);
        self.state[i].store(then, Ordering::Release);
        true
    }

    /// Waits (bounded) while another vCPU owns block `i`; the state it leaves.
    fn wait(&self, i: usize) -> u8 {
        let mut spins = 0;
        loop {
            let s = self.state[i].load(Ordering::Acquire);
            if !matches!(s, ZEROING | MAPPING) || spins >= LAZY_WAIT_SPINS {
                return s;
            }
            core::hint::spin_loop();
            spins += 1;
        }
    }

    /// The guest's nested fault at `gpa`: when its block is deferred, the one vCPU that claims it zeroes
    /// it (unless the VMM did before) and maps it with `map` (the backend's `map_zeroed_block`).
    pub fn first_touch(
        &self,
        mem: &GuestMemory<'_>,
        gpa: u64,
        map: impl FnOnce(u64) -> bool,
    ) -> Touch {
        let Some((i, block)) = self.index(gpa) else {
            return Touch::NotLazy;
        };
        loop {
            match self.state[i].load(Ordering::Acquire) {
                RESIDENT => return Touch::NotLazy,
                MAPPED => return Touch::MappedElsewhere,
                PENDING => {
                    if self.claim(i, PENDING, ZEROING) {
                        if !self.zero_claimed(mem, i, block, MAPPING) {
                            return Touch::MapFailed;
                        }
                        break;
                    }
                }
                ZEROED => {
                    if self.claim(i, ZEROED, MAPPING) {
                        break;
                    }
                }
                _ => {
                    if matches!(self.wait(i), ZEROING | MAPPING) {
                        return Touch::Busy;
                    }
                }
            }
        }
        // MAPPING is this vCPU's: the block is zeroed.
        if map(block) {
            self.state[i].store(MAPPED, Ordering::Release);
            Touch::Mapped
        } else {
            self.state[i].store(ZEROED, Ordering::Release);
            Touch::MapFailed
        }
    }

    /// Zeroes and maps (with `map`, the backend's) every block of `mem` still deferred, as a first touch
    /// of each would: guest SMP on x86 does it on the boot vCPU before any AP can start, so the APs never
    /// fault on a block and map nothing into the VM's nested tables themselves. `false`: a block could
    /// not be mapped.
    #[cfg_attr(all(target_os = "none", feature = "riscv"), allow(dead_code))] // RISC-V: first touches
    #[inline(never)] // once per boot: out of the boot path's line (16 bytes of image smaller)
    pub fn touch_all(&self, mem: &GuestMemory<'_>, mut map: impl FnMut(u64) -> bool) -> bool {
        let end = mem.base() + mem.size();
        let mut at = mem.base();
        while at < end {
            if matches!(self.first_touch(mem, at, &mut map), Touch::MapFailed) {
                return false;
            }
            at += LAZY_BLOCK;
        }
        true
    }

    /// Zeroes every block `[gpa, gpa + len)` overlaps that still holds host bytes, before the VMM reads
    /// or writes guest memory there for the guest (a hypercall's buffer, an emulated access), waiting
    /// for one another vCPU is zeroing: nothing the host left is ever seen, and nothing written for the
    /// guest is zeroed later. Returns the blocks this call zeroed. One load once nothing is stale.
    pub fn zero_stale(
        &self,
        mem: &GuestMemory<'_>,
        gpa: u64,
        len: u64,
    ) -> Result<usize, StillBusy> {
        if len == 0 || self.stale.load(Ordering::Acquire) == 0 {
            return Ok(0);
        }
        let base = self.base.load(Ordering::Relaxed);
        let start = gpa.max(base);
        let end = gpa
            .saturating_add(len)
            .min(base + BLOCKS as u64 * LAZY_BLOCK);
        let mut n = 0;
        let mut at = start.saturating_sub(base) / LAZY_BLOCK * LAZY_BLOCK + base;
        while at < end {
            let Some((i, block)) = self.index(at) else {
                break;
            };
            loop {
                match self.state[i].load(Ordering::Acquire) {
                    PENDING => {
                        if self.claim(i, PENDING, ZEROING) {
                            n += self.zero_claimed(mem, i, block, ZEROED) as usize;
                            break;
                        }
                    }
                    ZEROING => {
                        if self.wait(i) == ZEROING {
                            return Err(StillBusy);
                        }
                    }
                    _ => break,
                }
            }
            at += LAZY_BLOCK;
        }
        Ok(n)
    }

    /// A state of its own for a test's VM, armed with `map` (tests run in parallel: never [`VM_LAZY`]).
    #[cfg(test)]
    pub fn armed_for_test(map: &GuestMap) -> &'static Self {
        let lazy = std::boxed::Box::leak(std::boxed::Box::new(Self::new()));
        lazy.arm(map);
        lazy
    }

    /// Blocks still holding host bytes.
    #[cfg(test)]
    pub fn stale_blocks(&self) -> u32 {
        self.stale.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::loader::Perm;
    use std::boxed::Box;
    use std::vec;

    const BASE: u64 = 0x4000_0000;
    const MIB: u64 = 1 << 20;
    const SIZE: u64 = 16 * MIB;

    /// A window whose blocks from 2 MiB on are deferred, filled with host garbage, and its state.
    fn set_up() -> (GuestMemory<'static>, GuestMap, &'static LazyBlocks) {
        let bytes = Box::leak(vec![0xA5u8; SIZE as usize].into_boxed_slice());
        let mem = GuestMemory::new(BASE, bytes);
        let mut map = GuestMap::whole(BASE, SIZE, Perm::ReadWrite);
        assert_eq!(map.defer_from(BASE + 1), 7);
        let lazy = Box::leak(Box::new(LazyBlocks::new()));
        assert_eq!(lazy.arm(&map), 7);
        (mem, map, lazy)
    }

    #[test]
    fn a_block_is_zeroed_and_mapped_once_by_the_first_toucher_and_resumed_by_the_second() {
        let (mem, _, lazy) = set_up();
        let b = BASE + 4 * MIB;
        let mut maps = 0;
        assert_eq!(lazy.first_touch(&mem, b + 8, |_| true), Touch::Mapped);
        maps += 1;
        assert_eq!(mem.read_u64(b).unwrap(), 0);
        mem.write_u64(b + 8, 0x1234).unwrap(); // the guest's write
        let t = lazy.first_touch(&mem, b + 0x1000, |_| {
            maps += 1;
            true
        });
        assert_eq!(t, Touch::MappedElsewhere);
        assert_eq!(maps, 1);
        assert_eq!(mem.read_u64(b + 8).unwrap(), 0x1234, "not zeroed again");
        assert_eq!(lazy.first_touch(&mem, BASE, |_| true), Touch::NotLazy);
        assert_eq!(
            lazy.first_touch(&mem, BASE + SIZE, |_| true),
            Touch::NotLazy
        );
    }

    #[test]
    fn touch_all_zeroes_and_maps_every_deferred_block_once_and_names_a_failure() {
        let (mem, _, lazy) = set_up();
        mem.write_u64(BASE + 5 * MIB, 9).unwrap();
        assert_eq!(
            lazy.first_touch(&mem, BASE + 5 * MIB, |_| true),
            Touch::Mapped
        );
        mem.write_u64(BASE + 5 * MIB, 9).unwrap(); // the guest's write after its first touch
        let mut mapped = vec![];
        assert!(lazy.touch_all(&mem, |b| {
            mapped.push(b);
            true
        }));
        // Blocks 1..8 were deferred; block 2 (BASE + 4 MiB .. 6 MiB) was mapped already.
        let want: std::vec::Vec<u64> = [1, 3, 4, 5, 6, 7]
            .iter()
            .map(|i| BASE + i * 2 * MIB)
            .collect();
        assert_eq!(mapped, want);
        assert_eq!(lazy.stale_blocks(), 0);
        assert!((0..SIZE)
            .step_by(2 * MIB as usize)
            .all(|o| lazy.is_mapped(BASE + o)));
        assert_eq!(mem.read_u64(BASE + 5 * MIB).unwrap(), 9, "not zeroed again");
        assert_eq!(mem.read_u64(BASE + SIZE - 8).unwrap(), 0);
        // A backend that cannot map a block: `false`, and that block stays zeroed, unmapped.
        let (mem, _, lazy) = set_up();
        assert!(!lazy.touch_all(&mem, |b| b != BASE + 6 * MIB));
        assert!(!lazy.is_mapped(BASE + 6 * MIB) && !lazy.is_stale(BASE + 6 * MIB));
    }

    #[test]
    fn a_console_write_zeroes_first_and_the_fault_after_it_only_maps() {
        let (mem, _, lazy) = set_up();
        let b = BASE + 6 * MIB;
        assert_eq!(lazy.zero_stale(&mem, b + MIB, 16), Ok(1));
        assert_eq!(mem.read_u64(b + MIB).unwrap(), 0);
        assert!(!lazy.is_stale(b) && !lazy.is_mapped(b));
        mem.write_u64(b, 7).unwrap();
        assert_eq!(lazy.zero_stale(&mem, b, 16), Ok(0), "once");
        assert_eq!(lazy.first_touch(&mem, b, |_| true), Touch::Mapped);
        assert_eq!(mem.read_u64(b).unwrap(), 7);
        // A range over two blocks; the whole window; then one load.
        assert_eq!(lazy.zero_stale(&mem, BASE + 3 * MIB, 2 * MIB), Ok(2));
        assert_eq!(lazy.zero_stale(&mem, 0, u64::MAX), Ok(4));
        assert_eq!(lazy.stale_blocks(), 0);
        assert_eq!(lazy.zero_stale(&mem, 0, u64::MAX), Ok(0));
    }

    #[test]
    fn a_block_another_vcpu_owns_is_waited_for_never_touched() {
        let (mem, _, lazy) = set_up();
        let b = BASE + 2 * MIB;
        let (i, _) = lazy.index(b).unwrap();
        lazy.state[i].store(ZEROING, Ordering::Release);
        assert_eq!(lazy.first_touch(&mem, b, |_| true), Touch::Busy);
        assert_eq!(lazy.zero_stale(&mem, b, 1), Err(StillBusy));
        assert_eq!(mem.read_u64(b).unwrap(), 0xA5A5_A5A5_A5A5_A5A5, "untouched");
        lazy.state[i].store(MAPPING, Ordering::Release);
        assert_eq!(lazy.first_touch(&mem, b, |_| true), Touch::Busy);
    }

    #[test]
    fn a_failed_map_leaves_the_block_zeroed_for_the_next_try() {
        let (mem, _, lazy) = set_up();
        let b = BASE + 2 * MIB;
        assert_eq!(lazy.first_touch(&mem, b, |_| false), Touch::MapFailed);
        assert!(!lazy.is_stale(b) && !lazy.is_mapped(b));
        assert_eq!(lazy.first_touch(&mem, b, |_| true), Touch::Mapped);
    }

    /// Two CPUs racing for every block: each block is zeroed and mapped exactly once, and what the
    /// winner wrote after its touch survives the loser's.
    #[test]
    fn racing_cpus_zero_and_map_each_block_once() {
        use std::sync::atomic::AtomicUsize;
        let (mem, _, lazy) = set_up();
        let maps: &'static AtomicUsize = Box::leak(Box::new(AtomicUsize::new(0)));
        let run = move |me: u64| {
            for k in 1..8u64 {
                let at = BASE + k * 2 * MIB;
                loop {
                    match lazy.first_touch(&mem, at + me * 8, |_| {
                        maps.fetch_add(1, Ordering::Relaxed);
                        true
                    }) {
                        Touch::Busy => continue,
                        Touch::Mapped | Touch::MappedElsewhere => break,
                        t => panic!("{t:?}"),
                    }
                }
                mem.write_u64(at + me * 8, me + 1).unwrap();
            }
        };
        let a = std::thread::spawn(move || run(0));
        let b = std::thread::spawn(move || run(1));
        a.join().unwrap();
        b.join().unwrap();
        assert_eq!(maps.load(Ordering::Relaxed), 7);
        for k in 1..8u64 {
            let at = BASE + k * 2 * MIB;
            assert_eq!(mem.read_u64(at).unwrap(), 1);
            assert_eq!(mem.read_u64(at + 8).unwrap(), 2);
        }
    }
}
