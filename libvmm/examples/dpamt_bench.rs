//! `dpamt` bench: PAMT memory with Dynamic PAMT against static PAMT for a sparse TD, and how the
//! refcount/global-lock protocol behaves with 1, 2 and 4 faulting threads, all against the *simulated*
//! TDX module (`libvmm::tdx::sim`). Figures are deterministic counts, not times.
//!
//! Scenario: 4 GiB of TDX memory (one TDMR); a TD whose private memory is 2048 pages of 4 KiB spread
//! sparsely, 16 per 2 MiB range over 128 ranges (8 MiB of guest memory), faulted in by PAGE.AUG through
//! libvmm's fault path, then removed again. With T threads, page i is faulted by thread i mod T, so
//! threads meet on first use of every range. The model yields inside PAMT.ADD/REMOVE (between taking
//! its locks and doing the work), widening the Dynamic PAMT races; S-EPT-lock collisions (BUSY 0x92 on
//! AUG) happen at their natural rate and are retried like KVM's RET_PF_RETRY.
//!
//! Prints a human-readable `dpamt` section, then one line `DPAMT_JSON {...}` for `cargo xtask bench`.
use std::sync::{Barrier, Mutex};

use libvmm::tdx::dpamt::{Dpamt, DpamtError};
use libvmm::tdx::pool::PageAllocator;
use libvmm::tdx::sim::{SimConfig, SimModule, Window};
use libvmm::tdx::td::{Td, TdxError, VcpuCtx};
use libvmm::tdx::tdmr::{ModuleInfo, TdmrSet, SZ_1G, SZ_2M};

const MEM: u64 = 0x1_0000_0000;
const MEM_SIZE: u64 = 4 * SZ_1G;
const PAGES: u64 = 2048;
const PER_RANGE: u64 = 16;
const GUEST: u64 = MEM + SZ_1G;
const FRAMES: u64 = 8192;

struct Frames(Mutex<Vec<u64>>);
struct FrameRef<'a>(&'a Frames);
impl PageAllocator for FrameRef<'_> {
    fn alloc_page(&mut self) -> Option<u64> {
        self.0 .0.lock().unwrap().pop()
    }
    fn free_page(&mut self, hpa: u64) -> Result<(), u64> {
        self.0 .0.lock().unwrap().push(hpa);
        Ok(())
    }
}

fn tdmrs(info: &ModuleInfo, dynamic: bool) -> TdmrSet {
    let mut next = 0x10_0000_0000u64;
    TdmrSet::build(&[(MEM, MEM_SIZE)], info, dynamic, |b| {
        let p = next;
        next += b;
        Some(p)
    })
    .expect("TDMRs")
}

fn hpa(i: u64) -> u64 {
    GUEST + (i / PER_RANGE) * SZ_2M + (i % PER_RANGE) * 4096
}
fn gpa(i: u64) -> u64 {
    // Sparse in GPA too: one page per 64 KiB.
    0x1000_0000 + i * 0x1_0000
}

fn retry<T>(mut f: impl FnMut() -> Result<T, TdxError>, busy: &mut u64) -> T {
    loop {
        match f() {
            Ok(v) => return v,
            Err(TdxError::Busy { .. }) | Err(TdxError::Dpamt(DpamtError::Busy(_))) => {
                *busy += 1;
                std::thread::yield_now();
            }
            Err(e) => panic!("bench: unexpected error {e:?}"),
        }
    }
}

#[derive(Debug, Default)]
struct Run {
    threads: u64,
    policy: &'static str,
    faults: u64,
    fault_retries: u64,
    faults_locked: u64,
    fast: u64,
    installs: u64,
    removes: u64,
    puts_locked: u64,
    lock_contended: u64,
    dpamt_busy_retries: u64,
    module_busy: u64,
    peak_backed_ranges: u64,
}

fn run(threads: u64, keep_ref_on_busy: bool, window: Window) -> Run {
    let cfg = SimConfig {
        window,
        ..SimConfig::default()
    };
    let set = tdmrs(&cfg.info, true);
    let m = SimModule::new(cfg, set.clone());
    let d = Box::new(Dpamt::<2048>::new(&set).expect("refcounts"));
    let frames = Frames(Mutex::new(
        (0..FRAMES).rev().map(|i| MEM + i * 4096).collect(),
    ));
    let info = ModuleInfo::read(&m).expect("SYS.RD");
    let td = {
        let mut alloc = FrameRef(&frames);
        let mut td = Box::new(
            Td::<SimModule, 2048, 4096>::create(&m, &d, info, &mut alloc, 1, 0x1000).expect("TD"),
        );
        for _ in 0..threads {
            td.create_vcpu(&mut alloc).expect("vCPU");
        }
        td.finalize().expect("finalize");
        td
    };
    let base = d.snapshot();
    let barrier = Barrier::new(threads as usize);
    let (retries, peak) = std::thread::scope(|s| {
        let hs: Vec<_> = (0..threads)
            .map(|t| {
                let (td, frames, barrier, m) = (&td, &frames, &barrier, &m);
                s.spawn(move || {
                    let mut vcpu = VcpuCtx::default();
                    vcpu.keep_ref_on_busy = keep_ref_on_busy;
                    let mut alloc = FrameRef(frames);
                    let mut busy = 0;
                    barrier.wait();
                    for i in (t..PAGES).step_by(threads as usize) {
                        retry(
                            || td.fault(&mut vcpu, &mut alloc, gpa(i), hpa(i), 0),
                            &mut busy,
                        );
                    }
                    barrier.wait();
                    let peak = m.backed_ranges().len() as u64;
                    barrier.wait();
                    for i in (t..PAGES).step_by(threads as usize) {
                        retry(|| td.remove_private(&mut alloc, gpa(i)), &mut busy);
                    }
                    td.release_vcpu(&mut vcpu, &mut alloc).expect("release");
                    (busy, peak)
                })
            })
            .collect();
        hs.into_iter()
            .map(|h| h.join().unwrap())
            .fold((0, 0), |a, b| (a.0 + b.0, a.1.max(b.1)))
    });
    m.check_invariants().expect("model invariants");
    let s = d.snapshot();
    let module_busy = m.stats.busy.load(std::sync::atomic::Ordering::Relaxed);
    let mut alloc = FrameRef(&frames);
    let td = *td;
    td.teardown(&mut alloc).expect("teardown");
    assert_eq!(m.pages_in_use(), 0, "bench leaked pages in the model");
    Run {
        threads,
        policy: match (keep_ref_on_busy, window) {
            (true, Window::All) => "keep/all",
            (false, Window::All) => "series/all",
            (true, _) => "keep",
            (false, _) => "series",
        },
        faults: PAGES,
        fault_retries: retries,
        faults_locked: s.get_locked - base.get_locked,
        fast: s.fast - base.fast,
        installs: s.installs - base.installs,
        removes: s.removes - base.removes,
        puts_locked: s.put_locked - base.put_locked,
        lock_contended: s.lock_contended - base.lock_contended,
        dpamt_busy_retries: s.busy_retries - base.busy_retries,
        module_busy,
        peak_backed_ranges: peak,
    }
}

fn pct(b: u64) -> f64 {
    b as f64 * 100.0 / MEM_SIZE as f64
}

fn main() {
    let info = SimConfig::default().info;
    let stat = tdmrs(&info, false).pamt_bytes();
    let bitmap_set = tdmrs(&info, true);
    let fixed = bitmap_set.pamt_bytes();
    let bitmap = bitmap_set.tdmrs.iter().map(|(_, p)| p.size_4k).sum::<u64>();
    let mut runs: Vec<Run> = [1, 2, 4]
        .into_iter()
        .map(|t| run(t, true, Window::Pamt))
        .collect();
    // Policy comparison under heavy contention (every SEAMCALL yields inside its lock window, so AUG
    // often meets the S-EPT lock): libvmm keeps a BUSY fault's DPAMT reference; the series drops it.
    runs.push(run(4, true, Window::All));
    runs.push(run(4, false, Window::All));
    let peak = runs.iter().map(|r| r.peak_backed_ranges).max().unwrap_or(0);
    let pair = info.dpamt_entry_pages() * 4096;
    let dynamic = fixed + peak * pair;

    println!("dpamt (simulated TDX module; counts, not times)");
    println!("  TDX memory             {} MiB in 1 TDMR", MEM_SIZE >> 20);
    println!("  sparse TD              {PAGES} private 4 KiB pages ({} MiB), {PER_RANGE} per 2 MiB range", (PAGES * 4096) >> 20);
    println!(
        "  PAMT static            {:>9} KiB  {:.4} % of memory",
        stat >> 10,
        pct(stat)
    );
    println!(
        "  PAMT dynamic, fixed    {:>9} KiB  {:.4} % (4K bitmap {} KiB = {:.4} %, + 2M/1G levels)",
        fixed >> 10,
        pct(fixed),
        bitmap >> 10,
        pct(bitmap)
    );
    println!(
        "  PAMT dynamic, at peak  {:>9} KiB  {:.4} % ({} ranges backed x {} KiB pair)",
        dynamic >> 10,
        pct(dynamic),
        peak,
        pair >> 10
    );
    println!("  policy: keep = libvmm (a BUSY fault keeps its DPAMT reference for the retry); series = put on");
    println!("  error as in the series; /all = every SEAMCALL yields inside its lock window (heavy contention)");
    println!("  threads    policy  faults  retried  took-lock  fast-path  installs  removes  put-lock  lock-contended  pamt-busy-retries  module-busy");
    for r in &runs {
        println!(
            "  {:>7}  {:>8}  {:>6}  {:>7}  {:>9}  {:>9}  {:>8}  {:>7}  {:>8}  {:>14}  {:>17}  {:>11}",
            r.threads,
            r.policy,
            r.faults,
            r.fault_retries,
            r.faults_locked,
            r.fast,
            r.installs,
            r.removes,
            r.puts_locked,
            r.lock_contended,
            r.dpamt_busy_retries,
            r.module_busy
        );
    }
    let runs_json: Vec<String> = runs
        .iter()
        .map(|r| {
            format!(
                "{{\"threads\":{},\"policy\":\"{}\",\"faults\":{},\"fault_retries\":{},\"faults_locked\":{},\"fast_path\":{},\"installs\":{},\"removes\":{},\"puts_locked\":{},\"lock_contended\":{},\"pamt_busy_retries\":{},\"module_busy\":{}}}",
                r.threads, r.policy, r.faults, r.fault_retries, r.faults_locked, r.fast, r.installs, r.removes, r.puts_locked,
                r.lock_contended, r.dpamt_busy_retries, r.module_busy
            )
        })
        .collect();
    println!(
        "DPAMT_JSON {{\"bench\":\"dpamt\",\"simulated\":true,\"mem_bytes\":{},\"static_pamt_bytes\":{},\"dynamic_fixed_bytes\":{},\"bitmap_bytes\":{},\"dynamic_peak_bytes\":{},\"static_pct\":{:.4},\"bitmap_pct\":{:.4},\"dynamic_peak_pct\":{:.4},\"runs\":[{}]}}",
        MEM_SIZE, stat, fixed, bitmap, dynamic, pct(stat), pct(bitmap), pct(dynamic), runs_json.join(",")
    );
}
