//! The RISC-V trap path under the generic run loop, on a model hart: each scripted trap sets the CSRs and
//! registers a real trap would, and the test checks what the backend wrote back.
use super::*;
use crate::backend::Backend;
use crate::exit::Fault;
use crate::exit::{Access, Exit, Reply};
use crate::guest_mem::GuestMemory;
use crate::testing::ModelPlatform;
use crate::vcpu::{self, StopReason, Vm};
use libvmm_abi::sbi::EXT_TIME as SBI_EXT_TIME;
use libvmm_abi::SBI_EXT_LIBVMM;
use libvmm_abi::{Errno, Hypercall};
use std::vec::Vec;

use crate::testing::hart::{ecall, hypercall, trap, ModelHart, Trap};

const MEM_BASE: u64 = 0x8400_0000;
const ENTRY: u64 = 0x8401_0000;

fn run(script: Vec<Trap>, mem: &mut [u8]) -> (StopReason, RiscvH<ModelHart>, String) {
    let hart = ModelHart {
        script,
        ..Default::default()
    };
    let mut cpu = RiscvH::new(
        hart,
        ENTRY,
        0,
        MEM_BASE,
        MEM_BASE + 0x2000,
        MEM_BASE + 0x100,
    );
    let mut vm = Vm::new(GuestMemory::new(MEM_BASE, mem), ModelPlatform::default());
    let stop = vcpu::run(&mut cpu, &mut vm);
    (
        stop,
        cpu,
        String::from_utf8_lossy(&vm.platform.console.0).into_owned(),
    )
}

#[test]
fn the_first_entry_has_hartid_boot_info_and_dtb_in_a0_a1_a2_at_the_entry_point() {
    let mut mem = vec![0u8; 0x100];
    let (_, cpu, _) = run(vec![], &mut mem);
    assert_eq!(cpu.hart().entries[0], (0, MEM_BASE, ENTRY));
    assert_eq!(cpu.regs().x[A0 + 2], MEM_BASE + 0x2000);
    assert_eq!(cpu.regs().x[2], MEM_BASE + 0x100);
}

#[test]
fn a_hypercall_writes_a0_a1_and_advances_past_the_ecall() {
    let mut mem = vec![0u8; 0x100];
    mem[0x20..0x23].copy_from_slice(b"hi\n");
    let script = vec![
        hypercall(Hypercall::Write, &[1, MEM_BASE + 0x20, 3]),
        hypercall(Hypercall::Nop, &[]),
        hypercall(Hypercall::Exit, &[3]),
    ];
    let (stop, cpu, out) = run(script, &mut mem);
    assert_eq!(stop, StopReason::PayloadExit(3));
    assert_eq!(out, "hi\n");
    let e = &cpu.hart().entries;
    assert_eq!(e[1], (0, 3, ENTRY + 4));
    assert_eq!(e[2], (0, 0, ENTRY + 8));
}

#[test]
fn hostile_hypercall_arguments_get_errors_and_the_guest_continues() {
    let mut mem = vec![0u8; 0x100];
    let script = vec![
        hypercall(Hypercall::Write, &[1, 0x8020_0000, 16]),
        hypercall(Hypercall::Write, &[1, MEM_BASE, u64::MAX]),
        Trap {
            regs: vec![(A7, SBI_EXT_LIBVMM), (A6, 0xdead)],
            ..trap(csr::EXC_ECALL_VS, 0, 0)
        },
        hypercall(Hypercall::Exit, &[0]),
    ];
    let (stop, cpu, out) = run(script, &mut mem);
    assert_eq!(stop, StopReason::PayloadExit(0));
    assert!(out.is_empty());
    let e = &cpu.hart().entries;
    assert_eq!(e[1].1 as i64, Errno::Fault.as_result());
    assert_eq!(e[2].1 as i64, Errno::Fault.as_result());
    assert_eq!(e[3].1 as i64, Errno::Nosys.as_result());
}

#[test]
fn sbi_calls_reach_the_policy_and_unknown_extensions_are_not_supported() {
    let mut mem = vec![0u8; 0x100];
    mem[..4].copy_from_slice(b"dbcn");
    let script = vec![
        ecall(libvmm_abi::sbi::EXT_BASE, 0, &[]), // BASE spec version
        ecall(0x4442_434E, 0, &[4, MEM_BASE, 0]), // DBCN write
        ecall(0x4442_434E, 0, &[4, 0x8020_0000, 0]), // DBCN wild pointer
        ecall(0x0BAD_0000, 0, &[]),               // unknown extension
        ecall(libvmm_abi::sbi::EXT_SRST, 0, &[0, 0]), // SRST shutdown
    ];
    let (stop, cpu, out) = run(script, &mut mem);
    assert_eq!(stop, StopReason::PayloadExit(0));
    assert_eq!(out, "dbcn");
    let e = &cpu.hart().entries;
    assert_eq!((e[1].0, e[1].1), (0, 2 << 24));
    assert_eq!((e[2].0, e[2].1), (0, 4));
    assert_eq!(e[3].0 as i64, -3);
    assert_eq!(e[4].0 as i64, -2);
    assert_eq!(e[4].2, ENTRY + 16);
}

#[test]
fn guest_page_faults_stop_with_the_guest_physical_address_from_htval() {
    for (cause, access) in [
        (csr::EXC_LOAD_GUEST_PAGE_FAULT, Access::Read),
        (csr::EXC_STORE_GUEST_PAGE_FAULT, Access::Write),
        (csr::EXC_INSN_GUEST_PAGE_FAULT, Access::Execute),
    ] {
        let mut mem = vec![0u8; 0x100];
        let (stop, ..) = run(vec![trap(cause, 0x8020_0003, 0x8020_0000 >> 2)], &mut mem);
        assert_eq!(
            stop,
            StopReason::GuestMemoryViolation {
                gpa: 0x8020_0003,
                access,
                mapped: None
            }
        );
    }
}

#[test]
fn a_forbidden_csr_access_is_injected_into_vs_as_an_illegal_instruction() {
    let csrr_hgatp = 0x6800_2573; // csrr a0, hgatp
    let mut mem = vec![0u8; 0x100];
    let hart = ModelHart {
        script: vec![trap(csr::EXC_VIRTUAL_INSN, csrr_hgatp, 0)],
        ..Default::default()
    };
    let mut cpu = RiscvH::new(hart, ENTRY, 0, MEM_BASE, 0, 0);
    cpu.hart.set_csr(Csr::Vstvec, 0x8401_0101); // vectored mode bit set: exceptions still go to BASE
    cpu.hart.set_csr(Csr::Vsstatus, csr::SSTATUS_SIE);
    cpu.hart.set_csr(Csr::Sstatus, csr::SSTATUS_SPP);
    let mut vm = Vm::new(
        GuestMemory::new(MEM_BASE, &mut mem),
        ModelPlatform::default(),
    );
    let _ = vcpu::run(&mut cpu, &mut vm);
    let h = cpu.hart();
    assert_eq!(h.csr(Csr::Vscause), csr::EXC_ILLEGAL_INSN);
    assert_eq!(h.csr(Csr::Vsepc), ENTRY);
    assert_eq!(h.csr(Csr::Vstval), csrr_hgatp);
    assert_eq!(h.csr(Csr::Vsstatus), csr::SSTATUS_SPP | csr::SSTATUS_SPIE);
    assert_eq!(
        h.entries[1].2, 0x8401_0100,
        "the guest continues in its own trap handler"
    );
}

#[test]
fn reply_inject_maps_every_fault_to_illegal_instruction() {
    let hart = ModelHart::default();
    let mut cpu = RiscvH::new(hart, ENTRY, 0, MEM_BASE, 0, 0);
    cpu.hart.set_csr(Csr::Vstvec, 0x8400_4000);
    cpu.hart.set_csr(Csr::Stval, 0x30);
    cpu.reply(Reply::Inject(Fault::GeneralProtection(0)));
    assert_eq!(cpu.hart().csr(Csr::Vscause), csr::EXC_ILLEGAL_INSN);
    assert_eq!(cpu.hart().csr(Csr::Vstval), 0x30);
    assert_eq!(cpu.hart().csr(Csr::Sepc), 0x8400_4000);
}

#[test]
fn wfi_with_nothing_armed_halts_the_vm() {
    let mut mem = vec![0u8; 0x100];
    let (stop, ..) = run(
        vec![trap(csr::EXC_VIRTUAL_INSN, csr::INSN_WFI, 0)],
        &mut mem,
    );
    assert_eq!(stop, StopReason::GuestHalted);
}

#[test]
fn the_guest_timer_is_armed_by_sbi_time_and_delivered_as_vstip() {
    let mut mem = vec![0u8; 0x100];
    let script = vec![
        ecall(SBI_EXT_TIME, 0, &[1234]),
        trap(csr::CAUSE_INTERRUPT | csr::IRQ_S_TIMER, 0, 0),
        ecall(SBI_EXT_TIME, 0, &[5678]),
        trap(csr::EXC_VIRTUAL_INSN, csr::INSN_WFI, 0), // WFI waits for the armed timer
        hypercall(Hypercall::Exit, &[0]),
    ];
    let hart = ModelHart {
        script,
        ..Default::default()
    };
    let mut cpu = RiscvH::new(hart, ENTRY, 0, MEM_BASE, 0, 0);
    let mut vm = Vm::new(
        GuestMemory::new(MEM_BASE, &mut mem),
        ModelPlatform::default(),
    );
    let stop = vcpu::run(&mut cpu, &mut vm);
    assert_eq!(stop, StopReason::PayloadExit(0));
    let h = cpu.hart();
    assert_eq!(h.host_timer, [1234, u64::MAX, 5678, u64::MAX]);
    assert_eq!(h.waited, 1);
    assert_ne!(h.csr(Csr::Hvip) & (1 << csr::IRQ_VS_TIMER), 0);
    // The interrupt did not move the guest; the WFI retired.
    assert_eq!(h.entries[2].2, ENTRY + 4);
    assert_eq!(h.entries[4].2, ENTRY + 12);
}

#[test]
fn unknown_traps_stop_the_vm_with_the_cause() {
    let mut mem = vec![0u8; 0x100];
    let (stop, ..) = run(vec![trap(csr::EXC_LOAD_ACCESS, 0x1234, 0)], &mut mem);
    assert_eq!(
        stop,
        StopReason::UnhandledExit {
            code: csr::EXC_LOAD_ACCESS,
            info1: 0x1234,
            info2: 0
        }
    );
}

#[test]
fn a_guest_that_never_traps_is_stopped_at_its_time_limit_and_the_guest_timer_still_works() {
    let mut mem = vec![0u8; 0x100];
    let script = vec![
        ecall(SBI_EXT_TIME, 0, &[100]), // the guest's own timer, before the limit
        trap(csr::CAUSE_INTERRUPT | csr::IRQ_S_TIMER, 0, 0), // its deadline: VSTIP, limit still ahead
        trap(csr::CAUSE_INTERRUPT | csr::IRQ_S_TIMER, 0, 0), // the limit: the loop asks the platform
    ];
    let hart = ModelHart {
        script,
        ..Default::default()
    };
    let mut cpu = RiscvH::new(hart, ENTRY, 0, MEM_BASE, 0, 0);
    cpu.set_time_limit(500);
    let mut vm = Vm::new(
        GuestMemory::new(MEM_BASE, &mut mem),
        ModelPlatform::default(),
    );
    // The first host event comes before the limit: the platform says "not yet", the guest goes on.
    let exit = cpu.run(&vm.mem).unwrap();
    assert!(vcpu::handle(exit, &mut cpu, &mut vm).is_ok());
    let exit = cpu.run(&vm.mem).unwrap();
    assert_eq!(exit, Exit::HostEvent);
    assert!(vcpu::handle(exit, &mut cpu, &mut vm).is_ok());
    assert_ne!(cpu.hart().csr(Csr::Hvip) & (1 << csr::IRQ_VS_TIMER), 0);
    // The host timer was armed for the guest's deadline first, then for the limit.
    assert_eq!(cpu.hart().host_timer[..3], [500, 100, 500]);
    vm.platform.limit_passed = Some(300);
    let stop = vcpu::run(&mut cpu, &mut vm);
    assert_eq!(stop, StopReason::TimeLimit { ms: 300 });
    assert!(cpu.hart().now >= 500);
}

#[test]
fn faults_on_the_guests_own_page_table_walk_name_the_implicit_access_and_its_address() {
    for (htinst, access) in [
        (csr::HTINST_PT_READ_64, Access::PageTableRead),
        (csr::HTINST_PT_READ_32, Access::PageTableRead),
        (csr::HTINST_PT_WRITE_64, Access::PageTableWrite),
        (csr::HTINST_PT_WRITE_32, Access::PageTableWrite),
    ] {
        let mut mem = vec![0u8; 0x100];
        // An instruction fetch at 0x8401_0002 whose walk read the root entry at 0x8480_0010.
        let mut t = trap(
            csr::EXC_INSN_GUEST_PAGE_FAULT,
            0x8401_0002,
            0x8480_0010 >> 2,
        );
        t.htinst = htinst;
        let (stop, ..) = run(vec![t], &mut mem);
        assert_eq!(
            stop,
            StopReason::GuestMemoryViolation {
                gpa: 0x8480_0010,
                access,
                mapped: None,
            },
            "htinst {htinst:#x}"
        );
    }
    assert!(StopReason::GuestMemoryViolation {
        gpa: 0x8480_0010,
        access: Access::PageTableRead,
        mapped: None,
    }
    .to_string()
    .contains("page-table read of guest-physical 0x84800010"));
}

#[test]
fn wfi_with_the_guest_timer_already_pending_completes_instead_of_halting() {
    let mut mem = vec![0u8; 0x100];
    let script = vec![
        ecall(SBI_EXT_TIME, 0, &[100]),
        trap(csr::CAUSE_INTERRUPT | csr::IRQ_S_TIMER, 0, 0), // fires: VSTIP pending, no timer armed
        trap(csr::EXC_VIRTUAL_INSN, csr::INSN_WFI, 0),       // WFI with VSTIP pending: retires
        hypercall(Hypercall::Exit, &[0]),
    ];
    let (stop, cpu, _) = run(script, &mut mem);
    assert_eq!(stop, StopReason::PayloadExit(0));
    // The WFI retired (sepc moved past it) and nothing waited.
    assert_eq!(cpu.hart().waited, 0);
    assert_eq!(cpu.hart().entries[3].2, ENTRY + 8);
}

#[test]
fn wfi_with_the_guest_software_interrupt_pending_completes_instead_of_halting() {
    // The guest raised its own software interrupt (sip.SSIP, which is hvip.VSSIP) and waits with SIE
    // off: the WFI retires (privileged spec: a pending interrupt ends WFI whatever SIE says).
    let mut hart = ModelHart {
        script: vec![
            trap(csr::EXC_VIRTUAL_INSN, csr::INSN_WFI, 0),
            hypercall(Hypercall::Exit, &[0]),
        ],
        ..Default::default()
    };
    hart.set_csr(Csr::Hvip, 1 << csr::IRQ_VS_SOFT);
    let mut cpu = RiscvH::new(hart, ENTRY, 0, MEM_BASE, MEM_BASE, MEM_BASE + 0x100);
    let mut mem = vec![0u8; 0x100];
    let mut vm = Vm::new(
        GuestMemory::new(MEM_BASE, &mut mem),
        ModelPlatform::default(),
    );
    assert_eq!(vcpu::run(&mut cpu, &mut vm), StopReason::PayloadExit(0));
    assert_eq!(cpu.hart().waited, 0);
    assert_eq!(cpu.hart().entries[1].2, ENTRY + 4);
}

/// Zkr for the guest: a `seed` access from VS traps as a virtual instruction; the VMM answers with the
/// host's `seed` in rd and the guest goes on after it. A read-only access (CSRRS with x0) and any access
/// on a hart without Zkr are illegal instructions, as the CSR's rules say.
#[test]
fn a_guest_seed_access_gets_the_hosts_entropy_source() {
    const SEED_T0: u64 = 0x0150_52F3; // csrrw t0, seed, x0
    const SEED_RO: u64 = 0x0150_22F3; // csrrs t0, seed, x0 (read-only: illegal)
    let script = |insn| {
        vec![
            trap(csr::EXC_VIRTUAL_INSN, insn, 0),
            hypercall(Hypercall::Exit, &[0]),
        ]
    };
    let mut mem = vec![0u8; 0x100];
    let hart = ModelHart {
        script: script(SEED_T0),
        seed: Some(0x8000_1234),
        ..Default::default()
    };
    let mut cpu = RiscvH::new(hart, ENTRY, 0, MEM_BASE, 0, MEM_BASE + 0x100);
    let mut vm = Vm::new(
        GuestMemory::new(MEM_BASE, &mut mem),
        ModelPlatform::default(),
    );
    assert_eq!(vcpu::run(&mut cpu, &mut vm), StopReason::PayloadExit(0));
    assert_eq!(cpu.regs().x[5], 0x8000_1234, "t0 = the host's seed");
    assert_eq!(cpu.hart().entries[1].2, ENTRY + 4, "the access retired");
    for (insn, seed) in [(SEED_RO, Some(1)), (SEED_T0, None)] {
        let hart = ModelHart {
            script: script(insn),
            seed,
            ..Default::default()
        };
        let mut cpu = RiscvH::new(hart, ENTRY, 0, MEM_BASE, 0, MEM_BASE + 0x100);
        let mut vm = Vm::new(
            GuestMemory::new(MEM_BASE, &mut mem),
            ModelPlatform::default(),
        );
        assert_eq!(vcpu::run(&mut cpu, &mut vm), StopReason::PayloadExit(0));
        assert_eq!(cpu.regs().x[5], 0);
        assert_eq!(
            cpu.hart().csr(Csr::Vscause),
            csr::EXC_ILLEGAL_INSN,
            "{insn:#x}"
        );
    }
}

/// Zero on first touch on the model hart: a store guest-page fault in a pending block has the loop
/// zero the block and the hart map it; the guest re-executes the store (same sepc).
#[test]
fn a_first_touch_zeroes_and_maps_a_block_in_the_g_stage() {
    const MIB: u64 = 1 << 20;
    let mut mem = vec![0x55u8; 8 << 20];
    let mut map = crate::loader::GuestMap::whole(MEM_BASE, 8 * MIB, crate::loader::Perm::ReadWrite);
    map.defer_from(MEM_BASE + 1);
    let mut gs: Box<gstage::GStage<1>> = Box::default();
    gs.map_guest(&map).unwrap();
    let touched = MEM_BASE + 6 * MIB + 0x10;
    let hart = ModelHart {
        script: vec![
            trap(csr::EXC_STORE_GUEST_PAGE_FAULT, touched & 3, touched >> 2),
            hypercall(Hypercall::Exit, &[0]),
        ],
        gstage: Some(gs),
        ..Default::default()
    };
    let mut cpu = RiscvH::new(hart, ENTRY, 0, MEM_BASE, 0, MEM_BASE + 0x100);
    let mut vm = Vm::new(
        GuestMemory::new(MEM_BASE, &mut mem),
        ModelPlatform::default(),
    );
    vm.map = map;
    assert_eq!(vcpu::run(&mut cpu, &mut vm), StopReason::PayloadExit(0));
    assert_eq!(cpu.hart().entries[1].2, ENTRY, "the store runs again");
    assert!(vm
        .mem
        .slice(MEM_BASE + 6 * MIB, 2 * MIB)
        .unwrap()
        .iter()
        .all(|&b| b == 0));
    assert_eq!(vm.mem.slice(MEM_BASE + 4 * MIB, 1).unwrap(), [0x55]);
    let g = cpu.hart().gstage.as_ref().unwrap();
    assert!(g.translate(touched).is_some());
    assert!(g.translate(MEM_BASE + 4 * MIB).is_none());
}
