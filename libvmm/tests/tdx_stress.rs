//! Multi-threaded stress of the fault path and Dynamic PAMT against the *simulated* TDX module, which
//! yields between taking its locks and doing the work, so calls on the same 2 MiB range and the same
//! S-EPT collide (BUSY) and ranges go 0 → n → 0 references many times under contention. At the end:
//! the model's ABI invariants hold (no use without backing), libvmm's view of installed ranges equals
//! the module's, every frame is back exactly once (no leak, no double install, no double free).
mod tdx_common;

use std::sync::Barrier;

use libvmm::tdx::dpamt::Dpamt;
use libvmm::tdx::sim::SimModule;
use libvmm::tdx::td::{Td, TdxError, VcpuCtx};
use libvmm::tdx::tdmr::{ModuleInfo, SZ_2M};
use tdx_common::*;

const THREADS: u64 = 4;
const ROUNDS: u64 = 40;
/// Pages per thread per round; threads interleave inside the same 8 ranges.
const PAGES: u64 = 24;
const RANGES: u64 = 8;

fn hpa(thread: u64, i: u64) -> u64 {
    GUEST_POOL + (i % RANGES) * SZ_2M + (thread * PAGES + i) * 4096
}
fn gpa(thread: u64, i: u64) -> u64 {
    thread * 0x4000_0000 + (i % RANGES) * SZ_2M + i * 4096
}

fn retry<T>(mut f: impl FnMut() -> Result<T, TdxError>) -> T {
    for _ in 0..100_000 {
        match f() {
            Ok(v) => return v,
            Err(TdxError::Busy { .. })
            | Err(TdxError::Dpamt(libvmm::tdx::dpamt::DpamtError::Busy(_))) => {
                std::thread::yield_now()
            }
            Err(e) => panic!("unexpected error {e:?}"),
        }
    }
    panic!("still BUSY after 100000 tries");
}

#[test]
fn concurrent_faults_and_removals_keep_dpamt_and_the_module_consistent() {
    let m = sim(true, true);
    let d = Dpamt::<512>::new(&tdmrs(true)).unwrap();
    let frames = Frames::new(FRAMES);
    let before = frames.sorted();
    let info = ModuleInfo::read(&m).unwrap();
    let td = {
        let mut alloc = FrameRef(&frames);
        let mut td =
            Td::<SimModule, 512, 1024>::create(&m, &d, info, &mut alloc, 1, 0x1000).unwrap();
        for _ in 0..THREADS {
            td.create_vcpu(&mut alloc).unwrap();
        }
        td.finalize().unwrap();
        td
    };
    let barrier = Barrier::new(THREADS as usize);
    let busy: u64 = std::thread::scope(|s| {
        let handles: Vec<_> = (0..THREADS)
            .map(|t| {
                let (td, frames, barrier, m) = (&td, &frames, &barrier, &m);
                s.spawn(move || {
                    let mut vcpu = VcpuCtx::default();
                    let mut alloc = FrameRef(frames);
                    barrier.wait();
                    for round in 0..ROUNDS {
                        for i in 0..PAGES {
                            assert!(retry(|| td.fault(
                                &mut vcpu,
                                &mut alloc,
                                gpa(t, i),
                                hpa(t, i),
                                0
                            )));
                        }
                        if round % 4 == 3 {
                            m.check_invariants().unwrap();
                        }
                        for i in 0..PAGES {
                            assert_eq!(
                                retry(|| td.remove_private(&mut alloc, gpa(t, i))),
                                hpa(t, i)
                            );
                        }
                        // Every other round all threads meet here, so the guest ranges drop to zero
                        // references and the next round races to install them again.
                        if round % 2 == 1 {
                            barrier.wait();
                        }
                    }
                    td.release_vcpu(&mut vcpu, &mut alloc).unwrap();
                    vcpu.busy_faults
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).sum()
    });
    m.check_invariants().unwrap();
    assert_eq!(td.private_pages(), 0);
    for r in 0..RANGES {
        assert_eq!(d.refcount(hpa(0, r)), Some(0));
        assert_eq!(
            d.is_installed(hpa(0, r)),
            Some(false),
            "range {r}: removed on last use"
        );
    }
    assert_eq!(
        d.installed_ranges(),
        m.backed_ranges().len(),
        "libvmm and the module agree"
    );
    let s = d.snapshot();
    // Every guest range was installed again after each synchronised round emptied it.
    assert!(s.installs >= RANGES * ROUNDS / 2, "{s:?}");
    assert_eq!(s.installs - s.removes, d.installed_ranges() as u64, "{s:?}");
    assert!(
        busy > 0 || s.lock_contended > 0,
        "the stress produced no contention at all: {s:?}"
    );
    let mut alloc = FrameRef(&frames);
    td.teardown(&mut alloc).unwrap();
    assert_eq!(m.pages_in_use(), 0);
    assert_eq!(frames.sorted(), before, "every frame back exactly once");
    eprintln!("stress: {THREADS} threads, busy faults {busy}, {s:?}");
}
