//! A guest-side fuzzer: from fixed seeds it throws random instruction streams, hypercalls, SBI calls,
//! MSR / port / CSR accesses and edits of its own page tables at the VMM, and recovers from every
//! exception with its own handlers (`libvmm_guest::set_trap_handler`), so that one boot runs many seeds.
//!
//! Command line: `seed=S` (first seed, default 0), `seeds=N` (how many, default 300), `mode=safe|wild`
//! (default safe), `verbose=1`.
//!
//! - **safe**: every case returns to the recovery point (the handler resets the pc and stack to it;
//!   the fuzzer then restores what the case may have changed: control registers, MSRs, CSRs, page
//!   tables, segment registers). Actions that legitimately stop the VM are left out (EXIT and ABORT
//!   hypercalls, SBI shutdown, HLT/WFI, edits of the entries that map the payload itself, blobs that
//!   could jump anywhere: see `build.rs`). The boot ends with `guestfuzz: done ...` and status 0, or
//!   status 1 after `guestfuzz: FAIL` lines (an answer outside the ABI).
//! - **wild**: the same kinds plus those fatal actions; each seed is announced first
//!   (`guestfuzz: seed N <kind>`), so when the VM stops, the host knows which seed stopped it and can
//!   resume with the next (`cargo xtask guestfuzz --soak`). Every stop must be one the ABI lists.
//!
//! Random instruction bytes are generated at build time (`build.rs`): W^X in the nested tables means
//! nothing written at run time can be executed.
#![no_std]
#![no_main]

use libvmm_guest::abi::Hypercall;
use libvmm_guest::{print, println};

#[cfg(target_arch = "riscv64")]
mod riscv64;
#[cfg(target_arch = "riscv64")]
use riscv64 as arch;
#[cfg(target_arch = "x86_64")]
mod x86_64;
#[cfg(target_arch = "x86_64")]
use x86_64 as arch;

#[allow(dead_code)]
mod blobs {
    include!(concat!(env!("OUT_DIR"), "/blobs.rs"));
}

libvmm_guest::entry!(main);

/// `verbose=1`: the arch cases say what they picked (the blob and its address, for a disassembler).
pub static VERBOSE: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(false);

/// splitmix64: the fuzzer's only source of randomness, seeded by the seed number.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x2545_F491_4F6C_DD1D) ^ 0x6775_6573_7466_757a)
    }
    pub fn word(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.word() % n
    }
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
    pub fn pick<T: Copy>(&mut self, from: &[T]) -> T {
        from[self.below(from.len() as u64) as usize]
    }
    /// A value a hostile guest would pass as a pointer or length: edges of guest memory, the VMM's
    /// image, wrapping and huge values, small numbers, or anything.
    pub fn wild(&mut self) -> u64 {
        let (base, size) = window();
        match self.below(10) {
            0 => 0,
            1 => u64::MAX - self.below(64),
            2 => base + self.below(size),
            3 => base + size - self.below(128),
            4 => arch::VMM_IMAGE_BASE + self.below(0x10000),
            5 => 1 << (self.below(64)),
            6 => self.below(64),
            7 => base.wrapping_sub(self.below(4096)),
            _ => self.word(),
        }
    }
}

/// The guest window (base, size).
pub fn window() -> (u64, u64) {
    libvmm_guest::boot_info()
        .map(|b| (b.mem_base, b.mem_size))
        .unwrap_or((arch::WINDOW_BASE, arch::WINDOW_SIZE))
}

/// What one case ended with.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Ran to its end (the blob reached `gf_done`, the access or call returned).
    Completed,
    /// Raised this exception vector (x86) or cause (RISC-V), and the fuzzer recovered.
    Exception(u64),
}

/// Case kinds (the arch module implements all but `Hypercall`).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Kind {
    Blob,
    Hypercall,
    /// x86 MSRs, RISC-V CSRs.
    Register,
    /// x86 port I/O, RISC-V SBI calls.
    Device,
    /// x86 CR0/CR4/XCR0 writes; RISC-V: more SBI calls.
    Control,
    PageTable,
}

const KINDS: [Kind; 10] = [
    Kind::Blob,
    Kind::Blob,
    Kind::Blob,
    Kind::Blob,
    Kind::Hypercall,
    Kind::Register,
    Kind::Device,
    Kind::Control,
    Kind::PageTable,
    Kind::PageTable,
];

/// Tallies of a run.
pub struct Tally {
    pub completed: u64,
    pub exceptions: [u64; 64],
    pub failures: u64,
}

impl Tally {
    pub fn fail(&mut self, seed: u64, what: core::fmt::Arguments<'_>) {
        self.failures += 1;
        println!("guestfuzz: FAIL seed {seed}: {what}");
    }
}

/// Whether a libvmm hypercall result is one the ABI allows: success, or a listed errno.
fn abi_result(r: i64) -> bool {
    r >= 0 || matches!(-r, 5 | 9 | 14 | 22 | 38)
}

pub const MESSAGE: &[u8] = b"guestfuzz: a hypercall WRITE with a valid buffer\n";

/// A random libvmm hypercall: any number, wild arguments. A WRITE whose buffer is valid writes a fixed
/// message instead (random memory on the console would only be noise).
fn hypercall_case(rng: &mut Rng, wild: bool, seed: u64, t: &mut Tally) -> Outcome {
    let nr = if rng.chance(75) {
        rng.below(9)
    } else {
        rng.wild()
    };
    if !wild && (nr == Hypercall::Exit as u64 || nr == Hypercall::Abort as u64) {
        return Outcome::Completed;
    }
    let mut a = [rng.wild(), rng.wild(), rng.wild(), rng.wild()];
    if nr == Hypercall::Write as u64 {
        if rng.chance(50) {
            a[0] = rng.pick(&[1, 2]);
        }
        let (base, size) = window();
        let inside = a[1] >= base
            && a[1].checked_add(a[2]).is_some_and(|e| e <= base + size)
            && (a[0] == 1 || a[0] == 2);
        if inside {
            a[1] = MESSAGE.as_ptr() as u64;
            a[2] = a[2].min(MESSAGE.len() as u64);
        }
    }
    let r = libvmm_guest::hypercall_raw(nr, a);
    if !abi_result(r) {
        t.fail(
            seed,
            format_args!("hypercall {nr:#x} {a:x?} answered {r}, not an ABI result"),
        );
    }
    if Hypercall::from_raw(nr).is_none() && r != -38 {
        t.fail(
            seed,
            format_args!("unknown hypercall {nr:#x} answered {r}, not -ENOSYS"),
        );
    }
    Outcome::Completed
}

fn kind_name(k: Kind) -> &'static str {
    match k {
        Kind::Blob => "blob",
        Kind::Hypercall => "hypercall",
        Kind::Register => arch::REGISTER_KIND,
        Kind::Device => arch::DEVICE_KIND,
        Kind::Control => arch::CONTROL_KIND,
        Kind::PageTable => "page-table",
    }
}

fn arg(key: &str, default: u64) -> u64 {
    libvmm_guest::cmdline_value(key)
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() -> i32 {
    let first = arg("seed", 0);
    let count = arg("seeds", 300);
    let wild = libvmm_guest::cmdline_value("mode") == Some("wild");
    let verbose = libvmm_guest::cmdline_value("verbose") == Some("1");
    VERBOSE.store(verbose, core::sync::atomic::Ordering::Relaxed);
    arch::init();
    println!(
        "guestfuzz: {} mode, seeds {first}..{}, {} safe and {} wild blobs on {}",
        if wild { "wild" } else { "safe" },
        first + count,
        blobs::SAFE_BLOBS,
        blobs::WILD_BLOBS,
        libvmm_guest::backend_name()
    );
    let mut t = Tally {
        completed: 0,
        exceptions: [0; 64],
        failures: 0,
    };
    for seed in first..first + count {
        let mut rng = Rng::new(seed);
        let kind = rng.pick(&KINDS);
        if wild || verbose {
            println!("guestfuzz: seed {seed} {}", kind_name(kind));
        }
        let o = match kind {
            Kind::Hypercall => hypercall_case(&mut rng, wild, seed, &mut t),
            k => arch::run(k, seed, &mut rng, wild, &mut t),
        };
        arch::restore();
        match o {
            Outcome::Completed => t.completed += 1,
            Outcome::Exception(v) => t.exceptions[(v as usize).min(63)] += 1,
        }
        if (seed + 1 - first).is_multiple_of(100) {
            println!("guestfuzz: {} seeds ran", seed + 1 - first);
        }
    }
    print!(
        "guestfuzz: done seeds={count} completed={} failures={} exceptions:",
        t.completed, t.failures
    );
    for (v, n) in t.exceptions.iter().enumerate().filter(|(_, n)| **n != 0) {
        print!(" {v}={n}");
    }
    println!();
    if t.failures != 0 {
        1
    } else {
        0
    }
}
