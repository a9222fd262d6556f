//! The model's own rules, checked without libvmm's protocol code on top.
use super::*;
use crate::tdx::seamcall::{tdh, PS_2M, PS_4K};
use crate::tdx::tdmr::SZ_1G;

const MEM: u64 = 0x4000_0000;

pub(crate) fn tdmrs(dynamic: bool) -> TdmrSet {
    let cfg = SimConfig::default();
    let mut next = 0x1_0000_0000u64;
    TdmrSet::build(&[(MEM, SZ_1G)], &cfg.info, dynamic, |b| {
        let p = next;
        next += b;
        Some(p)
    })
    .unwrap()
}

fn sim(dynamic: bool) -> SimModule {
    SimModule::new(SimConfig::default(), tdmrs(dynamic))
}

fn range(n: u64) -> u64 {
    MEM + n * SZ_2M
}

fn pair(r: u64) -> [u64; 2] {
    [range(r), range(r) + SZ_4K]
}

fn code(s: Status) -> u64 {
    s.code()
}

#[test]
fn a_page_given_to_tdx_needs_dynamic_pamt_backing_of_its_2m_range() {
    let m = sim(true);
    let tdr = range(1);
    let s = tdh::mng_create(&m, tdr, 1);
    assert_eq!(
        s,
        Status::with_operand(errno::PAGE_METADATA_INCORRECT, op::RCX)
    );
    assert!(tdh::phymem_pamt_add(&m, range(1), pair(10)).is_success());
    assert!(tdh::mng_create(&m, tdr, 1).is_success());
    assert_eq!(m.owner(tdr), Some(Owner::Tdr));
    assert_eq!(m.owner(range(10)), Some(Owner::Pamt(range(1))));
    m.check_invariants().unwrap();
}

#[test]
fn static_pamt_needs_no_backing_and_rejects_pamt_add() {
    let m = sim(false);
    assert!(tdh::mng_create(&m, range(1), 1).is_success());
    assert_eq!(
        tdh::phymem_pamt_add(&m, range(2), pair(10)),
        Status::with_operand(errno::OPERAND_INVALID, op::RAX)
    );
}

#[test]
fn pamt_add_checks_alignment_double_install_and_free_pages() {
    let m = sim(true);
    let mut a = Args {
        rcx: range(1) | 2,
        rdx: range(10),
        r8: range(10) + SZ_4K,
        ..Args::default()
    };
    assert_eq!(
        m.call(leaf::PHYMEM_PAMT_ADD, &mut a),
        Status::with_operand(errno::OPERAND_INVALID, op::RCX)
    );
    assert_eq!(
        code(tdh::phymem_pamt_add(&m, range(1) + SZ_4K, pair(10))),
        errno::OPERAND_INVALID
    );
    assert_eq!(
        code(tdh::phymem_pamt_add(&m, 0x1000_0000, pair(10))),
        errno::OPERAND_ADDR_RANGE_ERROR
    );
    assert!(tdh::phymem_pamt_add(&m, range(1), pair(10)).is_success());
    assert_eq!(
        tdh::phymem_pamt_add(&m, range(1), pair(12)),
        Status::with_operand(errno::HPA_RANGE_NOT_FREE, op::RCX)
    );
    // A page already used as PAMT cannot back another range, nor be given to a TD.
    assert_eq!(
        tdh::phymem_pamt_add(&m, range(2), pair(10)),
        Status::with_operand(errno::PAGE_NOT_FREE, op::RDX)
    );
    assert!(tdh::phymem_pamt_add(&m, range(10), pair(20)).is_success());
    assert_eq!(
        tdh::mng_create(&m, range(10), 1),
        Status::with_operand(errno::PAGE_NOT_FREE, op::RCX)
    );
    m.check_invariants().unwrap();
}

#[test]
fn pamt_remove_fails_while_any_4k_page_of_the_range_is_in_use_and_returns_the_pair() {
    let m = sim(true);
    assert!(tdh::phymem_pamt_add(&m, range(1), pair(10)).is_success());
    assert!(tdh::mng_create(&m, range(1) + 511 * SZ_4K, 1).is_success());
    assert_eq!(
        tdh::phymem_pamt_remove(&m, range(1)),
        Err(Status::with_operand(errno::HPA_RANGE_NOT_FREE, op::RCX))
    );
    assert_eq!(
        code(tdh::phymem_pamt_remove(&m, range(3)).unwrap_err()),
        errno::PAGE_METADATA_INCORRECT
    );
    // Tear the TD down so the page is free again.
    assert!(tdh::mng_vpflushdone(&m, range(1) + 511 * SZ_4K).is_success());
    assert!(tdh::mng_key_freeid(&m, range(1) + 511 * SZ_4K).is_success());
    assert!(tdh::phymem_page_reclaim(&m, range(1) + 511 * SZ_4K).is_success());
    assert_eq!(tdh::phymem_pamt_remove(&m, range(1)), Ok(pair(10)));
    assert_eq!(m.owner(range(10)), None);
    assert!(m.backed_ranges().is_empty());
    assert_eq!(m.pages_in_use(), 0);
}

#[test]
fn calls_on_the_same_2m_range_at_the_same_time_get_busy_instead_of_waiting() {
    let m = sim(true);
    // An in-flight AUG-like call holds range 1 shared: PAMT.ADD/REMOVE (exclusive) get BUSY on RCX.
    m.hold_range(range(1), false);
    let s = tdh::phymem_pamt_add(&m, range(1), pair(10));
    assert_eq!(s, Status::with_operand(errno::OPERAND_BUSY, op::RCX));
    assert_eq!(s.busy_operand(), Some(op::RCX));
    assert!(m.backed_ranges().is_empty(), "a BUSY call changes nothing");
    // Shared users do not exclude each other.
    assert!(tdh::phymem_pamt_add(&m, range(2), pair(20)).is_success());
    m.release_range(range(1));
    // PAMT.ADD holding range 3 exclusively: a page of it given to TDX at that moment gets BUSY on RCX.
    m.hold_range(range(3), true);
    assert!(tdh::mng_create(&m, range(3), 1).busy_operand() == Some(op::RCX));
    // ...and the PAMT pages of another ADD that lie in range 3 get BUSY on RDX.
    assert_eq!(
        tdh::phymem_pamt_add(&m, range(4), pair(3)).busy_operand(),
        Some(op::RDX)
    );
    m.release_range(range(3));
    assert!(m.stats.busy.load(Ordering::Relaxed) >= 3);
}

#[test]
fn td_life_cycle_and_s_ept_rules() {
    let m = sim(true);
    for r in 0..4 {
        assert!(tdh::phymem_pamt_add(&m, range(r), pair(100 + 2 * r)).is_success());
    }
    let tdr = range(0);
    assert!(tdh::mng_create(&m, tdr, 5).is_success());
    assert_eq!(
        code(tdh::mng_create(&m, range(0) + SZ_4K, 5)),
        errno::OPERAND_INVALID,
        "HKID in use"
    );
    assert_eq!(
        tdh::mng_addcx(&m, tdr, range(0) + SZ_4K),
        Status(errno::TD_KEYS_NOT_CONFIGURED)
    );
    assert!(tdh::mng_key_config(&m, tdr).is_success());
    assert_eq!(tdh::mng_key_config(&m, tdr), Status(errno::KEY_CONFIGURED));
    assert_eq!(tdh::mng_init(&m, tdr, 0), Status(errno::TDCX_NUM_INCORRECT));
    for i in 1..=4 {
        assert!(tdh::mng_addcx(&m, tdr, range(0) + i * SZ_4K).is_success());
    }
    assert_eq!(
        tdh::mng_addcx(&m, tdr, range(0) + 5 * SZ_4K),
        Status(errno::TDCX_NUM_INCORRECT)
    );
    assert!(tdh::mng_init(&m, tdr, 0).is_success());
    let gpa = 0x8000_0000u64;
    // AUG before finalize, PAGE.ADD needs the PT first; SEPT.ADD needs parents first.
    assert_eq!(
        tdh::mem_page_aug(&m, tdr, gpa, range(1)),
        Status(errno::TD_NOT_FINALIZED)
    );
    assert_eq!(
        code(tdh::mem_page_add(&m, tdr, gpa, range(1), 0x1000)),
        errno::EPT_WALK_FAILED
    );
    assert_eq!(
        code(tdh::mem_sept_add(&m, tdr, gpa, 1, range(2))),
        errno::EPT_WALK_FAILED
    );
    // S-EPT pages need Dynamic PAMT backing too.
    assert_eq!(
        tdh::mem_sept_add(&m, tdr, 0, 3, range(9)),
        Status::with_operand(errno::PAGE_METADATA_INCORRECT, op::R8)
    );
    assert!(tdh::mem_sept_add(&m, tdr, 0, 3, range(2)).is_success());
    assert_eq!(
        code(tdh::mem_sept_add(&m, tdr, 0, 3, range(2) + SZ_4K)),
        errno::EPT_ENTRY_NOT_FREE
    );
    assert!(tdh::mem_sept_add(&m, tdr, gpa & !(SZ_1G - 1), 2, range(2) + SZ_4K).is_success());
    assert!(tdh::mem_sept_add(&m, tdr, gpa, 1, range(2) + 2 * SZ_4K).is_success());
    assert!(tdh::mem_page_add(&m, tdr, gpa, range(1), 0x1000).is_success());
    assert!(tdh::mr_finalize(&m, tdr).is_success());
    assert_eq!(
        tdh::mem_page_add(&m, tdr, gpa + SZ_4K, range(1) + SZ_4K, 0x1000),
        Status(errno::TD_FINALIZED)
    );
    assert!(tdh::mem_page_aug(&m, tdr, gpa + SZ_4K, range(1) + SZ_4K).is_success());
    assert_eq!(
        code(tdh::mem_page_aug(
            &m,
            tdr,
            gpa + SZ_4K,
            range(1) + 2 * SZ_4K
        )),
        errno::EPT_ENTRY_NOT_FREE
    );
    // An AUG page must be in a backed range.
    assert_eq!(
        tdh::mem_page_aug(&m, tdr, gpa + 2 * SZ_4K, range(9)),
        Status::with_operand(errno::PAGE_METADATA_INCORRECT, op::R8)
    );
    // Removal: BLOCK, TRACK, REMOVE in that order.
    assert_eq!(
        code(tdh::mem_page_remove(&m, tdr, gpa, PS_4K)),
        errno::GPA_RANGE_NOT_BLOCKED
    );
    assert!(tdh::mem_range_block(&m, tdr, gpa, PS_4K).is_success());
    assert_eq!(
        code(tdh::mem_page_remove(&m, tdr, gpa, PS_4K)),
        errno::TLB_TRACKING_NOT_DONE
    );
    assert!(tdh::mem_track(&m, tdr).is_success());
    assert!(tdh::mem_page_remove(&m, tdr, gpa, PS_4K).is_success());
    assert_eq!(m.owner(range(1)), None);
    // Teardown: reclaim refused while keys live; TDR only after its children.
    assert_eq!(
        tdh::phymem_page_reclaim(&m, range(1) + SZ_4K),
        Status(errno::HKID_NOT_FREE)
    );
    assert_eq!(
        tdh::mng_key_freeid(&m, tdr),
        Status(errno::FLUSHVP_NOT_DONE)
    );
    assert!(tdh::mng_vpflushdone(&m, tdr).is_success());
    assert!(tdh::mng_key_freeid(&m, tdr).is_success());
    assert_eq!(
        tdh::phymem_page_reclaim(&m, tdr),
        Status(errno::TD_ASSOCIATED_PAGES_EXIST)
    );
    for p in [
        range(1) + SZ_4K,
        range(2),
        range(2) + SZ_4K,
        range(2) + 2 * SZ_4K,
    ] {
        assert!(tdh::phymem_page_reclaim(&m, p).is_success(), "{p:#x}");
    }
    for i in 1..=4 {
        assert!(tdh::phymem_page_reclaim(&m, range(0) + i * SZ_4K).is_success());
    }
    assert!(tdh::phymem_page_reclaim(&m, tdr).is_success());
    m.check_invariants().unwrap();
    assert_eq!(m.pages_in_use(), 8, "only the 4 PAMT pairs remain");
    let _ = PS_2M;
}

#[test]
fn sys_rd_reports_dynamic_pamt_and_entropy_failures_are_injected() {
    let m = SimModule::new(
        SimConfig {
            entropy_failures: 3,
            ..SimConfig::default()
        },
        tdmrs(true),
    );
    let info = ModuleInfo::read(&m).unwrap();
    assert_eq!(info, SimConfig::default().info);
    assert_eq!(info.dpamt_entry_pages(), 2);
    let s = SimModule::new(SimConfig::default(), tdmrs(false));
    assert_eq!(ModuleInfo::read(&s).unwrap().dpamt_bitmap_bits, None);
    assert_eq!(
        tdh::sys_rd(&s, 0x1234),
        Err(Status(errno::METADATA_FIELD_NOT_READABLE))
    );
}

#[test]
fn the_invariant_check_catches_a_use_without_backing() {
    let m = sim(true);
    assert!(tdh::phymem_pamt_add(&m, range(1), pair(10)).is_success());
    assert!(tdh::mng_create(&m, range(1), 1).is_success());
    // Corrupt the model on purpose: drop the backing behind the module's back.
    with_state(&m.state, |st| {
        st.ranges.get_mut(&range(1)).unwrap().pamt = None
    });
    assert!(m.check_invariants().is_err());
}
