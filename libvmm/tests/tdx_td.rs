//! TD life cycle through libvmm's TDX code against the *simulated* TDX module: set-up as the kernel does
//! it, PAGE.ADD and PAGE.AUG faults with S-EPT growth and Dynamic PAMT, removal, teardown with reclaim,
//! and the error paths (exhaustion, BUSY, hostile addresses). After every phase the model's ABI invariants
//! hold and, at the end, every page is back where it came from.
mod tdx_common;

use libvmm::tdx::dpamt::{Dpamt, DpamtError};
use libvmm::tdx::errno;
use libvmm::tdx::seamcall::leaf;
use libvmm::tdx::sim::SimModule;
use libvmm::tdx::td::{Td, TdxError, VcpuCtx};
use libvmm::tdx::tdmr::{ModuleInfo, SZ_1G, SZ_2M};
use tdx_common::*;

type TestTd<'a> = Td<'a, SimModule, 512, 1024>;

fn guest_page(i: u64) -> u64 {
    // Sparse: 16 pages per 2 MiB range.
    GUEST_POOL + (i / 16) * SZ_2M + (i % 16) * 4096
}
fn gpa(i: u64) -> u64 {
    // Spread over several 1 GiB and 2 MiB GPA regions so every S-EPT level grows.
    (i % 3) * SZ_1G + (i / 3) * 0x5000
}

fn life_cycle(dynamic: bool) {
    let m = sim(dynamic, false);
    let d = Dpamt::<512>::new(&tdmrs(dynamic)).unwrap();
    let frames = Frames::new(FRAMES);
    let before = frames.sorted();
    let mut alloc = FrameRef(&frames);
    let info = ModuleInfo::read(&m).unwrap();
    assert_eq!(info.dpamt_bitmap_bits.is_some(), dynamic);

    let mut td = TestTd::create(&m, &d, info, &mut alloc, 1, 0x1000).unwrap();
    td.create_vcpu(&mut alloc).unwrap();
    td.create_vcpu(&mut alloc).unwrap();
    m.check_invariants().unwrap();
    let control = 1 + info.tdcs_pages + 2 * info.tdvps_pages;
    let mut vcpu = VcpuCtx::default();
    // Initial (measured) memory: PAGE.ADD before finalization.
    for i in 0..4 {
        assert_eq!(
            td.fault(&mut vcpu, &mut alloc, gpa(i), guest_page(i), 0x2000),
            Ok(true)
        );
    }
    td.finalize().unwrap();
    for i in 4..96 {
        assert_eq!(
            td.fault(&mut vcpu, &mut alloc, gpa(i), guest_page(i), 0),
            Ok(true)
        );
        m.check_invariants().unwrap();
    }
    assert_eq!(td.private_pages(), 96);
    // 3 GiB-regions × (PDPT shared: 1) ... count what the model holds instead of guessing.
    let sept = td.sept_pages() as u64;
    assert!(sept >= 1 + 3 + 3, "PDPT, 3 PDs, >=3 PTs: {sept}");
    assert_eq!(
        m.pages_in_use() as u64
            - if dynamic {
                2 * d.installed_ranges() as u64
            } else {
                0
            },
        control + sept + 96
    );
    if dynamic {
        assert_eq!(d.installed_ranges(), m.backed_ranges().len());
        // 96 guest pages over 6 ranges + control/S-EPT frames in the first ranges.
        assert!(
            d.installed_ranges() >= 6 && d.installed_ranges() <= 8,
            "{}",
            d.installed_ranges()
        );
        assert_eq!(d.refcount(guest_page(0)), Some(16));
    } else {
        assert!(m.backed_ranges().is_empty());
        assert_eq!(
            m.stats.pamt_add.load(std::sync::atomic::Ordering::Relaxed),
            0
        );
    }
    // Remove one whole guest range: its backing goes.
    for i in 16..32 {
        assert_eq!(td.remove_private(&mut alloc, gpa(i)), Ok(guest_page(i)));
    }
    m.check_invariants().unwrap();
    if dynamic {
        assert_eq!(d.refcount(guest_page(16)), Some(0));
        assert_eq!(d.is_installed(guest_page(16)), Some(false));
        assert!(!m.backed_ranges().contains(&(guest_page(16) & !(SZ_2M - 1))));
    }
    td.release_vcpu(&mut vcpu, &mut alloc).unwrap();
    td.teardown(&mut alloc).unwrap();
    m.check_invariants().unwrap();
    assert_eq!(
        m.pages_in_use(),
        0,
        "every page reclaimed, every PAMT pair removed"
    );
    assert_eq!(d.installed_ranges(), 0);
    // Guest pages are not frames of the allocator; everything else came back exactly once.
    let mut after = frames.sorted();
    after.retain(|p| *p < GUEST_POOL);
    assert_eq!(after, before, "no frame leaked");
}

#[test]
fn td_life_cycle_with_dynamic_pamt_leaves_no_page_behind() {
    life_cycle(true);
}

#[test]
fn td_life_cycle_with_static_pamt_makes_no_pamt_calls() {
    life_cycle(false);
}

#[test]
fn running_out_of_frames_is_an_error_and_create_unwinds_everything() {
    let m = sim(true, false);
    let d = Dpamt::<512>::new(&tdmrs(true)).unwrap();
    let info = ModuleInfo::read(&m).unwrap();
    let mut first_success = None;
    for n in 0..16 {
        let frames = Frames::new(n);
        let mut alloc = FrameRef(&frames);
        match TestTd::create(&m, &d, info, &mut alloc, 2, 0x1000) {
            Err(e) => {
                assert_eq!(e, TdxError::OutOfPages, "{n} frames");
                assert!(
                    first_success.is_none(),
                    "more frames never fail once fewer succeeded"
                );
            }
            Ok(td) => {
                first_success.get_or_insert(n);
                td.teardown(&mut alloc).unwrap();
            }
        }
        assert_eq!(frames.len(), n, "{n} frames: all returned");
        assert_eq!(m.pages_in_use(), 0);
        assert_eq!(d.installed_ranges(), 0);
    }
    // TDR + 4 TDCS pages + one DPAMT pair, plus the pair the pool tops up ahead.
    assert_eq!(first_success, Some(9));
}

#[test]
fn busy_on_the_fault_path_is_returned_for_a_retry_and_the_retry_succeeds() {
    let m = sim(true, false);
    let d = Dpamt::<512>::new(&tdmrs(true)).unwrap();
    let frames = Frames::new(FRAMES);
    let mut alloc = FrameRef(&frames);
    let info = ModuleInfo::read(&m).unwrap();
    let mut td = TestTd::create(&m, &d, info, &mut alloc, 3, 0x1000).unwrap();
    td.finalize().unwrap();
    let mut vcpu = VcpuCtx::default();
    assert_eq!(
        td.fault(&mut vcpu, &mut alloc, 0, guest_page(0), 0),
        Ok(true)
    );
    // Another CPU is inside PAMT.ADD/REMOVE of the guest page's range: AUG answers BUSY on R8.
    m.hold_range(guest_page(1), true);
    let e = td
        .fault(&mut vcpu, &mut alloc, 0x1000, guest_page(1), 0)
        .unwrap_err();
    assert!(
        matches!(e, TdxError::Busy { leaf: leaf::MEM_PAGE_AUG, status } if status.busy_operand() == Some(8)),
        "{e:?}"
    );
    assert_eq!(vcpu.busy_faults, 1);
    assert_eq!(
        d.refcount(guest_page(1)),
        Some(2),
        "the BUSY fault keeps its reference for the retry"
    );
    // A new range whose PAMT.ADD stays BUSY: the DPAMT error, pool intact.
    m.hold_range(guest_page(16), true);
    let e = td
        .fault(&mut vcpu, &mut alloc, 0x2000, guest_page(16), 0)
        .unwrap_err();
    assert!(matches!(e, TdxError::Dpamt(DpamtError::Busy(_))), "{e:?}");
    assert_eq!(
        d.refcount(guest_page(1)),
        Some(1),
        "a fault for another page dropped the kept reference"
    );
    m.release_range(guest_page(1));
    m.release_range(guest_page(16));
    assert_eq!(
        td.fault(&mut vcpu, &mut alloc, 0x1000, guest_page(1), 0),
        Ok(true)
    );
    assert_eq!(
        td.fault(&mut vcpu, &mut alloc, 0x2000, guest_page(16), 0),
        Ok(true)
    );
    assert_eq!(d.refcount(guest_page(1)), Some(2));
    // A vCPU that gives up after a BUSY fault releases the reference it kept.
    m.hold_range(guest_page(2), true);
    assert!(td
        .fault(&mut vcpu, &mut alloc, 0x3000, guest_page(2), 0)
        .is_err());
    m.release_range(guest_page(2));
    assert_eq!(d.refcount(guest_page(2)), Some(3));
    m.check_invariants().unwrap();
    td.release_vcpu(&mut vcpu, &mut alloc).unwrap();
    assert_eq!(d.refcount(guest_page(2)), Some(2));
    td.teardown(&mut alloc).unwrap();
    assert_eq!(m.pages_in_use(), 0);
}

#[test]
fn hostile_addresses_and_double_mappings_get_errors_not_panics() {
    let m = sim(true, false);
    let d = Dpamt::<512>::new(&tdmrs(true)).unwrap();
    let frames = Frames::new(FRAMES);
    let mut alloc = FrameRef(&frames);
    let info = ModuleInfo::read(&m).unwrap();
    let mut td = TestTd::create(&m, &d, info, &mut alloc, 4, 0x1000).unwrap();
    td.finalize().unwrap();
    let mut vcpu = VcpuCtx::default();
    // A host page outside every TDMR.
    let e = td
        .fault(&mut vcpu, &mut alloc, 0, 0x10_0000, 0)
        .unwrap_err();
    assert_eq!(e, TdxError::Dpamt(DpamtError::NotTdxMemory(0x10_0000)));
    // A host page the module already owns (a TDCS page, say): the module refuses it.
    let e = td
        .fault(&mut vcpu, &mut alloc, 0, MEM + 4096, 0)
        .unwrap_err();
    assert!(
        matches!(
            e,
            TdxError::Firmware {
                leaf: leaf::MEM_PAGE_AUG,
                ..
            }
        ),
        "{e:?}"
    );
    // A GPA mapped twice: the second vCPU learns it lost the race.
    assert_eq!(
        td.fault(&mut vcpu, &mut alloc, 0x7000, guest_page(0), 0),
        Ok(true)
    );
    assert_eq!(
        td.fault(&mut vcpu, &mut alloc, 0x7000, guest_page(1), 0),
        Ok(false)
    );
    assert_eq!(
        d.refcount(guest_page(1)),
        Some(1),
        "only the mapped page holds a reference"
    );
    // Removing an unmapped GPA.
    let e = td.remove_private(&mut alloc, 0x9000).unwrap_err();
    assert!(
        matches!(e, TdxError::Firmware { status, .. } if status.is(errno::EPT_ENTRY_FREE)),
        "{e:?}"
    );
    m.check_invariants().unwrap();
    td.release_vcpu(&mut vcpu, &mut alloc).unwrap();
    td.teardown(&mut alloc).unwrap();
    assert_eq!(m.pages_in_use(), 0);
}
