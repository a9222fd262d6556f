//! Model checking of the Dynamic PAMT refcount/lock protocol with loom, over all interleavings of two
//! CPUs (loom's exhaustive search; `LOOM_MAX_PREEMPTIONS` bounds it only if set), against the *simulated* TDX module (which under loom uses
//! loom's Mutex, so each SEAMCALL's lock step and work step are separate scheduling points).
//!
//! The races are the ones of the Dynamic PAMT series: PAMT.ADD racing PAGE.REMOVE + PAMT.REMOVE on the
//! same 2 MiB range, two first uses of an empty range, and a last `put` queued for the lock behind a
//! get + put of the same range (where the series' design issues a second, failing PAMT.REMOVE; with the
//! `installed` bit removed, this test fails). Checked properties:
//! - no use without backing: every PAGE.AUG succeeds (the model refuses a page in an unbacked range),
//!   and the model's invariants hold at the end;
//! - no double install: no PAMT.ADD ever fails (the model answers HPA_RANGE_NOT_FREE to one), libvmm's
//!   `installed` bit equals the module's view;
//! - no leak: every PAMT page is either back in a pool, returned by `put`, or backing the range — exactly
//!   once — and a range nobody uses is not backed.
//!
//! Run: `RUSTFLAGS="--cfg loom" cargo test -p libvmm --lib --release tdx::loom_tests`.
#![forbid(unsafe_code)]

extern crate std;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::vec::Vec;

use loom::thread;

use super::dpamt::Dpamt;
use super::errno::Status;
use super::pool::PagePool;
use super::seamcall::{tdh, PS_4K};
use super::sim::{Owner, SimConfig, SimModule};
use super::tdmr::{TdmrSet, SZ_1G, SZ_2M, SZ_4K};

const MEM: u64 = 0x4000_0000;
/// The contended 2 MiB range X.
const X: u64 = MEM + 8 * SZ_2M;
const Y: u64 = X + SZ_4K;
const Z: u64 = X + 2 * SZ_4K;
const TDR: u64 = MEM;
const GPA: u64 = 0x20_0000;

/// Runs `f` under every interleaving loom explores; returns how many it ran (printed, and checked by the
/// callers so a model that stopped exploring fails). About 500-900 per scenario, under a second.
fn model(name: &str, f: impl Fn() + Sync + Send + 'static) -> usize {
    use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
    let runs = Arc::new(AtomicUsize::new(0));
    let mut b = loom::model::Builder::new();
    b.max_branches = 100_000;
    let r = runs.clone();
    b.check(move || {
        r.fetch_add(1, SeqCst);
        f()
    });
    let n = runs.load(SeqCst);
    std::println!("loom: {name}: {n} interleavings");
    n
}

fn tdmrs() -> TdmrSet {
    let mut next = 0x1_0000_0000u64;
    TdmrSet::build(&[(MEM, SZ_1G)], &SimConfig::default().info, true, |b| {
        let p = next;
        next += b;
        Some(p)
    })
    .unwrap()
}

fn pool_of(first: u64) -> PagePool<4> {
    let mut p = PagePool::default();
    for i in 0..4 {
        p.give(first + i * SZ_4K).unwrap();
    }
    p
}

fn retry_busy(mut f: impl FnMut() -> Status) -> Status {
    loop {
        let s = f();
        if !s.is_busy() {
            return s;
        }
        thread::yield_now();
    }
}

/// A finalized TD whose control pages live in range 0 and whose S-EPT already maps GPA's 2 MiB region
/// (set up single-threaded, before the race).
fn finalized_td(m: &SimModule, d: &Dpamt<512>) {
    let mut ctl = pool_of(MEM + 100 * SZ_2M);
    d.get(m, TDR, &mut ctl).unwrap();
    assert!(tdh::mng_create(m, TDR, 1).is_success());
    assert!(tdh::mng_key_config(m, TDR).is_success());
    for i in 1..=4 {
        d.get(m, TDR + i * SZ_4K, &mut ctl).unwrap();
        assert!(tdh::mng_addcx(m, TDR, TDR + i * SZ_4K).is_success());
    }
    assert!(tdh::mng_init(m, TDR, 0).is_success());
    for (l, page) in [(3u64, 5u64), (2, 6), (1, 7)] {
        d.get(m, TDR + page * SZ_4K, &mut ctl).unwrap();
        assert!(tdh::mem_sept_add(
            m,
            TDR,
            GPA & !((1u64 << (12 + 9 * l)) - 1),
            l,
            TDR + page * SZ_4K
        )
        .is_success());
    }
    assert!(tdh::mr_finalize(m, TDR).is_success());
}

/// Every PAMT page of `initial` is accounted for exactly once: in a pool, returned, or backing a range.
fn assert_no_leak(
    m: &SimModule,
    initial: &BTreeSet<u64>,
    pools: &[&PagePool<4>],
    returned: &[u64],
) {
    let mut seen: Vec<u64> = pools.iter().flat_map(|p| p.contents()).collect();
    seen.extend_from_slice(returned);
    for &x in initial {
        if matches!(m.owner(x), Some(Owner::Pamt(_))) {
            seen.push(x);
        }
    }
    let set: BTreeSet<u64> = seen.iter().copied().collect();
    assert_eq!(
        set.len(),
        seen.len(),
        "a PAMT page counted twice: {seen:x?}"
    );
    assert_eq!(&set, initial, "PAMT pages leaked");
}

/// The series' race: CPU 0 removes the last page Y of range X (PAGE.REMOVE, then `put` → PAMT.REMOVE),
/// while CPU 1 faults page Z of the same range in (`get` → maybe PAMT.ADD, then PAGE.AUG).
#[test]
fn pamt_add_racing_page_remove_and_pamt_remove_on_one_range() {
    let n = model("add-vs-remove", || {
        let m = Arc::new(SimModule::new(SimConfig::default(), tdmrs()));
        let d = Arc::new(Dpamt::<512>::new(&tdmrs()).unwrap());
        finalized_td(&m, &d);
        let initial: BTreeSet<u64> = (0..4)
            .flat_map(|i| [MEM + 200 * SZ_2M + i * SZ_4K, MEM + 300 * SZ_2M + i * SZ_4K])
            .collect();
        let mut p0 = pool_of(MEM + 200 * SZ_2M);
        let p1 = pool_of(MEM + 300 * SZ_2M);
        // Y is mapped and blocked+tracked: ready for PAGE.REMOVE.
        d.get(&*m, Y, &mut p0).unwrap();
        assert!(tdh::mem_page_aug(&*m, TDR, GPA, Y).is_success());
        assert!(tdh::mem_range_block(&*m, TDR, GPA, PS_4K).is_success());
        assert!(tdh::mem_track(&*m, TDR).is_success());

        let (m0, d0) = (m.clone(), d.clone());
        let t0 = thread::spawn(move || {
            assert!(retry_busy(|| tdh::mem_page_remove(&*m0, TDR, GPA, PS_4K)).is_success());
            let freed = d0.put(&*m0, Y).expect("put");
            (p0, freed)
        });
        let (m1, d1) = (m.clone(), d.clone());
        let t1 = thread::spawn(move || {
            let mut p1 = p1;
            d1.get(&*m1, Z, &mut p1)
                .expect("get: no double install, no firmware error");
            let s = retry_busy(|| tdh::mem_page_aug(&*m1, TDR, GPA + SZ_4K, Z));
            assert!(s.is_success(), "AUG of Z used without backing: {s:?}");
            p1
        });
        let (p0, freed) = t0.join().unwrap();
        let p1 = t1.join().unwrap();
        m.check_invariants().unwrap();
        // Z holds the only reference: X is backed, by exactly one installation.
        assert_eq!(d.refcount(X), Some(1));
        assert_eq!(d.is_installed(X), Some(true));
        assert!(m.backed_ranges().contains(&X));
        let returned: Vec<u64> = freed.map(|p| p.to_vec()).unwrap_or_default();
        assert_no_leak(&m, &initial, &[&p0, &p1], &returned);
    });
    assert!(n > 100, "loom explored only {n} interleavings");
}

/// Two first uses of an empty range at once: exactly one PAMT.ADD, both pages mapped, and after both
/// leave the range is unbacked again with every page back.
#[test]
fn two_first_uses_of_one_range_install_once_and_the_last_put_removes() {
    let n = model("two-first-uses", || {
        let m = Arc::new(SimModule::new(SimConfig::default(), tdmrs()));
        let d = Arc::new(Dpamt::<512>::new(&tdmrs()).unwrap());
        let initial: BTreeSet<u64> = (0..4)
            .flat_map(|i| [MEM + 200 * SZ_2M + i * SZ_4K, MEM + 300 * SZ_2M + i * SZ_4K])
            .collect();
        let spawn = |page: u64, pool_base: u64| {
            let (m, d) = (m.clone(), d.clone());
            thread::spawn(move || {
                let mut pool = pool_of(pool_base);
                d.get(&*m, page, &mut pool).expect("get");
                // Use the page: TDX owns it now (TDH.MNG.CREATE needs backing like AUG).
                let hkid = (page >> 12) as u16 & 0x3f;
                let s = retry_busy(|| tdh::mng_create(&*m, page, hkid.max(1)));
                assert!(s.is_success(), "use without backing: {s:?}");
                pool
            })
        };
        let t0 = spawn(Y, MEM + 200 * SZ_2M);
        let t1 = spawn(Z, MEM + 300 * SZ_2M);
        let p0 = t0.join().unwrap();
        let p1 = t1.join().unwrap();
        m.check_invariants().unwrap();
        assert_eq!(d.refcount(X), Some(2));
        assert_eq!(d.snapshot().installs, 1, "installed twice");
        assert_no_leak(&m, &initial, &[&p0, &p1], &[]);
    });
    assert!(n > 100, "loom explored only {n} interleavings");
}

/// The double-REMOVE window of the series' design: CPU 0's last `put` drops the count to 0 and queues
/// for the lock while CPU 1 takes the range again and drops it too. Exactly one PAMT.REMOVE may happen,
/// no `put` may fail, and at the end the range is unbacked with both pairs accounted for.
#[test]
fn a_put_queued_behind_a_get_and_put_removes_once() {
    let n = model("put-get-put", || {
        let m = Arc::new(SimModule::new(SimConfig::default(), tdmrs()));
        let d = Arc::new(Dpamt::<512>::new(&tdmrs()).unwrap());
        let initial: BTreeSet<u64> = (0..4)
            .flat_map(|i| [MEM + 200 * SZ_2M + i * SZ_4K, MEM + 300 * SZ_2M + i * SZ_4K])
            .collect();
        let mut p0 = pool_of(MEM + 200 * SZ_2M);
        d.get(&*m, Y, &mut p0).unwrap();
        let (m0, d0) = (m.clone(), d.clone());
        let t0 = thread::spawn(move || (p0, d0.put(&*m0, Y).expect("put on CPU 0")));
        let (m1, d1) = (m.clone(), d.clone());
        let t1 = thread::spawn(move || {
            let mut p1 = pool_of(MEM + 300 * SZ_2M);
            d1.get(&*m1, Z, &mut p1).expect("get on CPU 1");
            let freed = d1.put(&*m1, Z).expect("put on CPU 1");
            (p1, freed)
        });
        let (p0, f0) = t0.join().unwrap();
        let (p1, f1) = t1.join().unwrap();
        m.check_invariants().unwrap();
        assert_eq!(d.refcount(X), Some(0));
        assert_eq!(
            d.is_installed(X),
            Some(false),
            "nobody holds X: it must be removed"
        );
        assert!(m.backed_ranges().is_empty());
        assert_eq!(d.snapshot().installs, d.snapshot().removes);
        let returned: Vec<u64> = f0.into_iter().chain(f1).flatten().collect();
        assert_no_leak(&m, &initial, &[&p0, &p1], &returned);
    });
    assert!(n > 20, "loom explored only {n} interleavings");
}
