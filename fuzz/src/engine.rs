//! A deterministic mutation fuzzer: seeded PRNG, a corpus started from real inputs, byte / bit / integer
//! mutations and splicing, a panic caught per input (its input saved), and outcome feedback: an input
//! whose outcome signature (what the target returns) is new joins the corpus.
//!
//! Why not cargo-fuzz / libFuzzer: they need `-Zsanitizer` / `-Cpasses=sancov-module` flags that only a
//! nightly compiler accepts. The project pins a stable toolchain, and forcing nightly features into it
//! with `RUSTC_BOOTSTRAP=1` would make the fuzz build depend on unstable compiler internals the pin is
//! there to avoid (and libfuzzer-sys also needs a C++ toolchain). Without coverage instrumentation the
//! feedback here is semantic (each target hashes its decision), and the inputs are biased in the
//! targets themselves (`libvmm::fuzzing`) towards the values that matter.
use std::cell::RefCell;
use std::collections::HashSet;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use std::time::{Duration, Instant};

/// xorshift64* (deterministic, seeded).
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        // splitmix64 of the seed: never zero, well mixed.
        let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        Rng((z ^ (z >> 31)) | 1)
    }
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// Uniform-enough in `0..n` (`n` > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

const INTERESTING: [u64; 14] = [
    0,
    1,
    2,
    4,
    8,
    16,
    0x7f,
    0x80,
    0xff,
    0x7fff,
    0xffff,
    0x7fff_ffff,
    0xffff_ffff,
    u64::MAX,
];

/// Applies one to four stacked mutations to `input`.
pub fn mutate(rng: &mut Rng, input: &mut Vec<u8>, corpus: &[Vec<u8>], max_len: usize) {
    for _ in 0..1 + rng.below(4) {
        if input.is_empty() {
            let n = 1 + rng.below(16);
            input.extend((0..n).map(|_| rng.next() as u8));
            continue;
        }
        let len = input.len();
        let pos = rng.below(len);
        match rng.below(12) {
            0 => input[pos] ^= 1 << rng.below(8),
            1 => input[pos] = rng.next() as u8,
            2 => input[pos] = INTERESTING[rng.below(9)] as u8,
            3 | 4 => {
                // An interesting 16/32/64-bit value (or the input's length), either byte order.
                let width = [2usize, 4, 8][rng.below(3)];
                let v = if rng.below(4) == 0 {
                    len as u64
                } else {
                    INTERESTING[rng.below(INTERESTING.len())]
                };
                let bytes = if rng.below(2) == 0 {
                    v.to_be_bytes()
                } else {
                    v.to_le_bytes()
                };
                let src = if rng.below(2) == 0 {
                    &bytes[8 - width..]
                } else {
                    &bytes[..width]
                };
                let end = (pos + width).min(len);
                input[pos..end].copy_from_slice(&src[..end - pos]);
            }
            5 => {
                // Add or subtract a small amount to an aligned big-endian u32 (FDT offsets and sizes).
                let p = pos & !3;
                if p + 4 <= len {
                    let v = u32::from_be_bytes(input[p..p + 4].try_into().unwrap());
                    let d = 1 + rng.below(32) as u32;
                    let v = if rng.below(2) == 0 {
                        v.wrapping_add(d)
                    } else {
                        v.wrapping_sub(d)
                    };
                    input[p..p + 4].copy_from_slice(&v.to_be_bytes());
                }
            }
            6 => {
                let n = 1 + rng.below(16);
                let bytes: Vec<u8> = (0..n).map(|_| rng.next() as u8).collect();
                input.splice(pos..pos, bytes);
            }
            7 => {
                let n = 1 + rng.below((len - pos).min(64));
                input.drain(pos..pos + n);
            }
            8 => {
                // Copy a chunk of itself elsewhere.
                let n = 1 + rng.below((len - pos).min(64));
                let chunk = input[pos..pos + n].to_vec();
                let at = rng.below(len);
                let end = (at + n).min(len);
                input[at..end].copy_from_slice(&chunk[..end - at]);
            }
            9 => input.truncate(pos),
            _ => {
                // Splice with another corpus entry: this prefix, that suffix (or overwrite a chunk).
                let other = &corpus[rng.below(corpus.len())];
                if !other.is_empty() {
                    let from = rng.below(other.len());
                    if rng.below(2) == 0 {
                        input.truncate(pos);
                        input.extend_from_slice(&other[from..]);
                    } else {
                        let n = (other.len() - from).min(len - pos).min(64);
                        input[pos..pos + n].copy_from_slice(&other[from..from + n]);
                    }
                }
            }
        }
    }
    input.truncate(max_len);
}

/// How long a target runs.
#[derive(Clone, Copy, Debug)]
pub enum Budget {
    Execs(u64),
    Time(Duration),
}

/// What one run of one target found.
#[derive(Debug, Default)]
pub struct Stats {
    pub execs: u64,
    pub crashes: u64,
    /// Distinct panic locations.
    pub distinct: Vec<String>,
    pub corpus: usize,
    /// Distinct outcomes seen (counting stops at `SEEN_MAX`).
    pub signatures: usize,
    pub secs: f64,
}

thread_local! {
    static LAST_PANIC: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Replaces the panic hook with one that records the panic (location and message) for the engine
/// instead of printing it: a fuzz run can panic millions of times.
pub fn quiet_panics() {
    std::panic::set_hook(Box::new(|info| {
        let loc = info
            .location()
            .map(|l| format!("{}:{}", l.file(), l.line()))
            .unwrap_or_default();
        let msg = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_default();
        LAST_PANIC.with(|p| *p.borrow_mut() = Some(format!("{loc}: {msg}")));
    }));
}

/// Runs `f` on one input; `Err(panic description)` if it panicked.
pub fn run_one(f: fn(&[u8]) -> u64, input: &[u8]) -> Result<u64, String> {
    catch_unwind(AssertUnwindSafe(|| f(input))).map_err(|_| {
        LAST_PANIC
            .with(|p| p.borrow_mut().take())
            .unwrap_or_else(|| "panic".into())
    })
}

fn fnv(b: &[u8]) -> u64 {
    b.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &x| {
        (h ^ x as u64).wrapping_mul(0x100_0000_01b3)
    })
}

/// Corpus entries kept per target (the seeds plus inputs with new outcomes).
const CORPUS_MAX: usize = 4096;
/// Distinct outcomes remembered per target: bounds the memory of a long soak (a target whose outcome
/// is nearly unique per input, like `vcpu_handle`, reached 10 million in 100 million executions).
const SEEN_MAX: usize = 1 << 20;

/// Fuzzes one target. Crashing inputs are written to `crash_dir/<name>-<hash>.bin` (with a `.txt` naming
/// the panic), one per distinct panic location.
pub fn fuzz(
    name: &str,
    f: fn(&[u8]) -> u64,
    seeds: &[Vec<u8>],
    max_len: usize,
    budget: Budget,
    seed: u64,
    crash_dir: &Path,
) -> Stats {
    let mut rng = Rng::new(seed ^ fnv(name.as_bytes()));
    let mut corpus: Vec<Vec<u8>> = vec![Vec::new()];
    corpus.extend(seeds.iter().cloned());
    for _ in 0..8 {
        let n = rng.below(max_len.min(256) + 1);
        corpus.push((0..n).map(|_| rng.next() as u8).collect());
    }
    let mut seen = HashSet::new();
    let mut stats = Stats::default();
    let start = Instant::now();
    let mut child = Vec::with_capacity(max_len);
    // The seeds run unmutated first.
    let mut pending: Vec<Vec<u8>> = corpus.clone();
    loop {
        match budget {
            Budget::Execs(n) if stats.execs >= n => break,
            Budget::Time(d) if stats.execs % 1024 == 0 && start.elapsed() >= d => break,
            _ => {}
        }
        child.clear();
        if let Some(p) = pending.pop() {
            child.extend_from_slice(&p);
        } else if rng.below(64) == 0 {
            let n = rng.below(max_len + 1);
            child.extend((0..n).map(|_| rng.next() as u8));
        } else {
            child.extend_from_slice(&corpus[rng.below(corpus.len())]);
            mutate(&mut rng, &mut child, &corpus, max_len);
        }
        stats.execs += 1;
        match run_one(f, &child) {
            Ok(sig) => {
                if seen.len() < SEEN_MAX && seen.insert(sig) && corpus.len() < CORPUS_MAX {
                    corpus.push(child.clone());
                }
            }
            Err(what) => {
                stats.crashes += 1;
                let key = what.split(": ").next().unwrap_or("").to_string();
                if !stats.distinct.iter().any(|d| d.starts_with(&key)) {
                    let _ = std::fs::create_dir_all(crash_dir);
                    let file = crash_dir.join(format!("{name}-{:016x}", fnv(&child)));
                    let _ = std::fs::write(file.with_extension("bin"), &child);
                    let _ = std::fs::write(file.with_extension("txt"), format!("{what}\n"));
                    println!(
                        "fuzz {name}: CRASH {what} (input saved to {})",
                        file.with_extension("bin").display()
                    );
                    stats.distinct.push(what);
                }
            }
        }
    }
    stats.corpus = corpus.len();
    stats.signatures = seen.len();
    stats.secs = start.elapsed().as_secs_f64();
    stats
}

#[cfg(test)]
mod tests {
    use super::*;

    fn planted(data: &[u8]) -> u64 {
        if data.windows(2).any(|w| w == [0xde, 0xad]) {
            panic!("planted bug");
        }
        data.len() as u64 % 7
    }

    #[test]
    fn a_planted_panic_is_caught_and_its_input_saved() {
        quiet_panics();
        let dir = std::env::temp_dir().join(format!("libvmm-fuzz-test-{}", std::process::id()));
        let s = fuzz(
            "planted",
            planted,
            &[vec![0xde, 0x00, 0xad]],
            64,
            Budget::Execs(200_000),
            1,
            &dir,
        );
        assert!(s.crashes > 0);
        assert_eq!(s.distinct.len(), 1);
        assert!(s.distinct[0].contains("planted bug"));
        let saved: Vec<_> = std::fs::read_dir(&dir).unwrap().collect();
        assert_eq!(saved.len(), 2);
        let bin = saved
            .iter()
            .map(|e| e.as_ref().unwrap().path())
            .find(|p| p.extension().is_some_and(|e| e == "bin"))
            .unwrap();
        assert!(run_one(planted, &std::fs::read(bin).unwrap()).is_err());
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn runs_are_deterministic_for_a_seed() {
        let run = |seed| {
            let mut rng = Rng::new(seed);
            let mut v = b"seed input".to_vec();
            for _ in 0..100 {
                mutate(&mut rng, &mut v, &[b"other".to_vec()], 64);
            }
            v
        };
        assert_eq!(run(7), run(7));
        assert_ne!(run(7), run(8));
    }
}
