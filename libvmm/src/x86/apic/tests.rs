//! Host tests of the virtual x2APIC: one per register rule, timer mode and delivery rule (each names the
//! SDM rule it checks), and a seeded random walk over register writes that checks the invariants after
//! every step.

use super::delivery::{EntryAction, HaltAction, Interruptibility};
use super::regs::{self, divisor, Lvt, Reg};
use super::vectors::VectorSet;
use super::*;
use crate::x86::msr::*;

const ID: u32 = 0x25;
const VEC: u64 = 0x40;

/// A fresh APIC (reset state: xAPIC mode).
fn reset() -> VirtualApic {
    VirtualApic::new(ID, true, 48, 0)
}

/// An APIC in x2APIC mode, software-enabled.
fn x2() -> VirtualApic {
    let mut a = reset();
    let base = a.read_msr(IA32_APIC_BASE, 0).unwrap();
    assert_eq!(
        a.write_msr(IA32_APIC_BASE, base | APIC_BASE_EXTD, 0),
        Ok(Effect::ModeChanged(Mode::X2Apic))
    );
    a.write_msr(X2APIC_SVR, 0x1FF, 0).unwrap();
    a
}

fn rd(a: &mut VirtualApic, msr: u32) -> u64 {
    a.read_msr(msr, 0).unwrap()
}

fn wr(a: &mut VirtualApic, msr: u32, v: u64) -> Effect {
    a.write_msr(msr, v, 0).unwrap()
}

const CAN: Interruptibility = Interruptibility {
    interrupts_enabled: true,
    shadow: false,
};

/// Takes the deliverable interrupt and retires it.
fn take_and_eoi(a: &mut VirtualApic) -> Option<u8> {
    let v = a.accept(CAN)?;
    assert!(matches!(
        wr(a, X2APIC_EOI, 0),
        Effect::Eoi { vector, level: false } if vector == v
    ));
    Some(v)
}

// ---- register map and access rules -------------------------------------------------------------

#[test]
fn every_offset_of_the_range_is_either_listed_or_gp() {
    let mut a = x2();
    for m in X2APIC_FIRST..=X2APIC_LAST {
        match Reg::decode(m) {
            None => {
                assert_eq!(a.read_msr(m, 0), Err(Gp), "read {m:#x}");
                assert_eq!(a.write_msr(m, 0, 0), Err(Gp), "write {m:#x}");
            }
            Some(r) => assert!(m <= X2APIC_SELF_IPI, "{m:#x} {r:?}"),
        }
    }
}

#[test]
fn xapic_only_registers_and_cmci_are_gp_in_x2apic_mode() {
    let mut a = x2();
    for m in [
        X2APIC_APR,
        X2APIC_RRD,
        X2APIC_DFR,
        X2APIC_ICR_HI,
        X2APIC_LVT_CMCI,
    ] {
        assert_eq!(a.read_msr(m, 0), Err(Gp), "{m:#x}");
        assert_eq!(a.write_msr(m, 0, 0), Err(Gp), "{m:#x}");
        assert_eq!(a.write_msr(m, 0xFFFF_FFFF, 0), Err(Gp), "{m:#x}");
    }
}

#[test]
fn read_only_registers_refuse_writes_even_of_their_own_value() {
    let mut a = x2();
    let ro = [
        X2APIC_ID,
        X2APIC_VERSION,
        X2APIC_PPR,
        X2APIC_LDR,
        X2APIC_TIMER_CURRENT,
    ]
    .into_iter()
    .chain(0x810..=0x827);
    for m in ro {
        let v = rd(&mut a, m);
        assert_eq!(a.write_msr(m, v, 0), Err(Gp), "{m:#x}");
        assert_eq!(a.write_msr(m, 0, 0), Err(Gp), "{m:#x}");
    }
}

#[test]
fn write_only_registers_refuse_reads() {
    let mut a = x2();
    assert_eq!(a.read_msr(X2APIC_EOI, 0), Err(Gp));
    assert_eq!(a.read_msr(X2APIC_SELF_IPI, 0), Err(Gp));
    // ... and accept their legal writes.
    assert_eq!(a.write_msr(X2APIC_EOI, 0, 0), Ok(Effect::None));
    assert_eq!(a.write_msr(X2APIC_SELF_IPI, VEC, 0), Ok(Effect::None));
}

#[test]
fn x2apic_registers_are_gp_outside_x2apic_mode() {
    let mut a = reset();
    assert_eq!(a.mode(), Mode::XApic);
    for m in X2APIC_FIRST..=X2APIC_LAST {
        assert_eq!(a.read_msr(m, 0), Err(Gp), "{m:#x}");
        assert_eq!(a.write_msr(m, 0, 0), Err(Gp), "{m:#x}");
    }
    wr(&mut a, IA32_APIC_BASE, APIC_BASE_DEFAULT_ADDR);
    assert_eq!(a.mode(), Mode::Disabled);
    assert_eq!(a.read_msr(X2APIC_ID, 0), Err(Gp));
    // IA32_TSC_DEADLINE is an ordinary MSR: reads 0 and ignores writes without an x2APIC timer.
    assert_eq!(a.read_msr(IA32_TSC_DEADLINE, 0), Ok(0));
    assert_eq!(a.write_msr(IA32_TSC_DEADLINE, 5, 0), Ok(Effect::None));
}

/// Every writable register: its defined bits are accepted, each other bit alone raises #GP, and the
/// upper half of every register but the ICR is reserved.
#[test]
fn reserved_bits_of_every_writable_register_raise_gp() {
    let writable = [
        (X2APIC_TPR, 0xFFu64),
        (X2APIC_SVR, 0x3FF),
        (X2APIC_LVT_TIMER, 0x0003_10FF & !(1 << 18) | 1 << 17), // mode 0b01 (0b11 is reserved)
        (X2APIC_LVT_THERMAL, 0x0001_17FF),
        (X2APIC_LVT_PMI, 0x0001_17FF),
        (X2APIC_LVT_LINT0, 0x0001_F7FF),
        (X2APIC_LVT_LINT1, 0x0001_F7FF),
        (X2APIC_LVT_ERROR, 0x0001_10FF),
        (X2APIC_TIMER_INITIAL, 0xFFFF_FFFF),
        (X2APIC_TIMER_DIVIDE, 0b1011),
        (X2APIC_SELF_IPI, 0xFF),
        (X2APIC_EOI, 0),
        (X2APIC_ESR, 0),
        (X2APIC_ICR, 0xFFFF_FFFF_000C_DFFF & !(0b001 << 8)), // not lowest priority (an ESR error)
    ];
    for (m, ok) in writable {
        let mut a = x2();
        assert!(a.write_msr(m, ok, 0).is_ok(), "{m:#x} {ok:#x}");
        let defined = Reg::decode(m).unwrap().write_mask();
        for bit in 0..64 {
            let b = 1u64 << bit;
            if defined & b == 0 {
                assert_eq!(a.write_msr(m, b, 0), Err(Gp), "{m:#x} bit {bit}");
            }
        }
        if m != X2APIC_ICR {
            assert_eq!(defined >> 32, 0, "{m:#x}");
        }
    }
    // The spot checks the SDM spells out.
    let mut a = x2();
    assert_eq!(a.write_msr(X2APIC_SVR, 0x1FF | 1 << 12, 0), Err(Gp)); // no EOI-broadcast suppression
    assert_eq!(a.write_msr(X2APIC_LVT_TIMER, 3 << 17, 0), Err(Gp)); // reserved timer mode
    assert_eq!(a.write_msr(X2APIC_TIMER_DIVIDE, 1 << 2, 0), Err(Gp));
    assert_eq!(a.write_msr(X2APIC_EOI, 1, 0), Err(Gp));
    assert_eq!(a.write_msr(X2APIC_ESR, 1, 0), Err(Gp));
    assert_eq!(a.write_msr(X2APIC_TPR, 1 << 32, 0), Err(Gp));
    for bit in [13, 16, 17, 20, 31] {
        assert_eq!(
            a.write_msr(X2APIC_ICR, 1 << bit, 0),
            Err(Gp),
            "ICR bit {bit}"
        );
    }
    // A #GP changes nothing.
    assert_eq!(rd(&mut a, X2APIC_SVR), 0x1FF);
    assert_eq!(rd(&mut a, X2APIC_TPR), 0);
}

#[test]
fn read_only_bits_of_writable_registers_are_ignored_and_read_zero() {
    let mut a = x2();
    wr(&mut a, X2APIC_LVT_LINT0, 0x0001_5000 | VEC); // delivery status, remote IRR
    assert_eq!(rd(&mut a, X2APIC_LVT_LINT0), 0x0001_0000 | VEC);
    wr(&mut a, X2APIC_LVT_ERROR, 0x1000 | 0x33);
    assert_eq!(rd(&mut a, X2APIC_LVT_ERROR), 0x33);
    // "WRMSR to the ICR MSR ignores bit 12."
    wr(&mut a, X2APIC_ICR, 0x1000 | (0b01 << 18) | VEC);
    assert_eq!(rd(&mut a, X2APIC_ICR), (0b01 << 18) | VEC);
}

#[test]
fn id_version_and_ldr_follow_the_x2apic_id() {
    let mut a = x2();
    assert_eq!(rd(&mut a, X2APIC_ID), u64::from(ID));
    assert_eq!(rd(&mut a, X2APIC_VERSION), 0x0005_0014);
    // Cluster 2 (ID bits 31:4), bit 5 (ID bits 3:0).
    assert_eq!(rd(&mut a, X2APIC_LDR), (2 << 16) | (1 << 5));
    let mut b = VirtualApic::new(0x1_0003, false, 48, 0);
    wr(
        &mut b,
        IA32_APIC_BASE,
        APIC_BASE_DEFAULT_ADDR | APIC_BASE_ENABLE | APIC_BASE_EXTD,
    );
    assert_eq!(rd(&mut b, X2APIC_LDR), (0x1000 << 16) | (1 << 3));
}

#[test]
fn reset_values_follow_the_sdm() {
    let mut a = x2();
    wr(&mut a, X2APIC_SVR, 0xFF); // back to the reset value of SVR
    for l in [
        X2APIC_LVT_TIMER,
        X2APIC_LVT_THERMAL,
        X2APIC_LVT_PMI,
        X2APIC_LVT_LINT0,
        X2APIC_LVT_LINT1,
        X2APIC_LVT_ERROR,
    ] {
        assert_eq!(rd(&mut a, l), u64::from(regs::LVT_MASKED), "{l:#x}");
    }
    for m in [
        X2APIC_TPR,
        X2APIC_PPR,
        X2APIC_ESR,
        X2APIC_ICR,
        X2APIC_TIMER_INITIAL,
        X2APIC_TIMER_CURRENT,
        X2APIC_TIMER_DIVIDE,
    ] {
        assert_eq!(rd(&mut a, m), 0, "{m:#x}");
    }
    assert_eq!(rd(&mut a, X2APIC_SVR), 0xFF);
}

#[test]
fn tpr_and_ppr() {
    let mut a = x2();
    wr(&mut a, X2APIC_TPR, 0x35);
    assert_eq!(rd(&mut a, X2APIC_TPR), 0x35);
    assert_eq!(rd(&mut a, X2APIC_PPR), 0x35);
    wr(&mut a, X2APIC_SELF_IPI, 0x51);
    assert_eq!(a.accept(CAN), Some(0x51));
    // In-service class 5 is above TPR's class 3: PPR = 0x50.
    assert_eq!(rd(&mut a, X2APIC_PPR), 0x50);
    wr(&mut a, X2APIC_TPR, 0x5A);
    assert_eq!(rd(&mut a, X2APIC_PPR), 0x5A);
    wr(&mut a, X2APIC_EOI, 0);
    wr(&mut a, X2APIC_TPR, 0);
    assert_eq!(rd(&mut a, X2APIC_PPR), 0);
}

#[test]
fn esr_is_write_then_read() {
    let mut a = x2();
    wr(&mut a, X2APIC_SELF_IPI, 5);
    // The error is latched by the next write, not visible before it.
    assert_eq!(rd(&mut a, X2APIC_ESR), 0);
    wr(&mut a, X2APIC_ESR, 0);
    assert_eq!(
        rd(&mut a, X2APIC_ESR),
        u64::from(regs::ESR_SEND_ILLEGAL_VECTOR)
    );
    // Reading does not clear; the next write latches "nothing since".
    assert_eq!(
        rd(&mut a, X2APIC_ESR),
        u64::from(regs::ESR_SEND_ILLEGAL_VECTOR)
    );
    wr(&mut a, X2APIC_ESR, 0);
    assert_eq!(rd(&mut a, X2APIC_ESR), 0);
}

#[test]
fn software_disable_masks_every_lvt_and_refuses_fixed_interrupts() {
    let mut a = x2();
    wr(&mut a, X2APIC_LVT_TIMER, VEC);
    wr(&mut a, X2APIC_LVT_ERROR, 0x33);
    wr(&mut a, X2APIC_SELF_IPI, 0x60); // accepted while enabled
    assert_eq!(wr(&mut a, X2APIC_SVR, 0xFF), Effect::Timer);
    assert_eq!(
        rd(&mut a, X2APIC_LVT_TIMER),
        u64::from(regs::LVT_MASKED) | VEC
    );
    assert_eq!(
        rd(&mut a, X2APIC_LVT_ERROR),
        u64::from(regs::LVT_MASKED) | 0x33
    );
    // An unmasking write is forced masked while software-disabled.
    wr(&mut a, X2APIC_LVT_THERMAL, 0x44);
    assert_eq!(
        rd(&mut a, X2APIC_LVT_THERMAL),
        u64::from(regs::LVT_MASKED) | 0x44
    );
    // A new fixed interrupt is refused; the one already in IRR is still delivered.
    wr(&mut a, X2APIC_SELF_IPI, 0x70);
    assert_eq!(rd(&mut a, 0x823), 1 << 0); // IRR word 3: vector 0x60 only
    assert_eq!(a.accept(CAN), Some(0x60));
    // Re-enabling keeps the masks.
    wr(&mut a, X2APIC_SVR, 0x1FF);
    assert_eq!(
        rd(&mut a, X2APIC_LVT_TIMER),
        u64::from(regs::LVT_MASKED) | VEC
    );
}

#[test]
fn svr_focus_and_spurious_vector_are_stored() {
    let mut a = x2();
    wr(&mut a, X2APIC_SVR, 0x3FF);
    assert_eq!(rd(&mut a, X2APIC_SVR), 0x3FF);
    wr(&mut a, X2APIC_SVR, 0x10F);
    assert_eq!(rd(&mut a, X2APIC_SVR), 0x10F);
}

// ---- IPIs ----------------------------------------------------------------------------------------

fn icr(mode: u64, shorthand: u64, dest: u32, vector: u64) -> u64 {
    (u64::from(dest) << 32) | (shorthand << 18) | (mode << 8) | vector
}

#[test]
fn fixed_ipis_to_this_vcpu_are_delivered() {
    for value in [
        icr(0, 0b01, 0, VEC),  // shorthand self
        icr(0, 0b00, ID, VEC), // physical, own ID
    ] {
        let mut a = x2();
        assert_eq!(wr(&mut a, X2APIC_ICR, value), Effect::None);
        assert_eq!(a.pending_vector(), Some(VEC as u8));
        assert_eq!(rd(&mut a, X2APIC_ICR), value);
    }
}

#[test]
fn ipis_beyond_this_vcpu_need_smp() {
    let fixed = |dest| Ipi {
        vector: VEC as u8,
        mode: DeliveryMode::Fixed,
        dest,
        level_assert: false,
        level_trigger: false,
    };
    let cases = [
        (icr(0, 0, 7, VEC), fixed(Destination::Physical(7)), false),
        (
            icr(0, 0, 1, VEC) | regs::ICR_DEST_LOGICAL,
            fixed(Destination::Logical(1)),
            false,
        ),
        (
            icr(0, 0b11, 0, VEC),
            fixed(Destination::AllExcludingSelf),
            false,
        ),
        // Broadcasts include this vCPU: delivered here, the rest needs SMP.
        (
            icr(0, 0b10, 0, VEC),
            fixed(Destination::AllExcludingSelf),
            true,
        ),
        (
            icr(0, 0, u32::MAX, VEC),
            fixed(Destination::AllExcludingSelf),
            true,
        ),
    ];
    for (value, ipi, to_self) in cases {
        let mut a = x2();
        assert_eq!(
            wr(&mut a, X2APIC_ICR, value),
            Effect::Ipi(ipi),
            "{value:#x}"
        );
        assert_eq!(a.pending_vector().is_some(), to_self, "{value:#x}");
    }
}

#[test]
fn nmi_smi_init_and_startup_are_not_delivered_before_smp() {
    let modes = [
        (0b010, DeliveryMode::Smi),
        (0b100, DeliveryMode::Nmi),
        (0b101, DeliveryMode::Init),
        (0b110, DeliveryMode::StartUp),
    ];
    for (bits, mode) in modes {
        let mut a = x2();
        let e = wr(
            &mut a,
            X2APIC_ICR,
            icr(bits, 0b01, 0, 0x9A) | regs::ICR_LEVEL_ASSERT,
        );
        assert_eq!(
            e,
            Effect::Ipi(Ipi {
                vector: 0x9A,
                mode,
                dest: Destination::SelfOnly,
                level_assert: true,
                level_trigger: false,
            })
        );
        assert_eq!(a.pending_vector(), None);
    }
}

#[test]
fn illegal_icr_delivery_modes() {
    let mut a = x2();
    wr(&mut a, X2APIC_LVT_ERROR, 0xE0);
    // Lowest priority: "Redirectible IPI", not processed (even with an illegal vector).
    assert_eq!(wr(&mut a, X2APIC_ICR, icr(0b001, 0b01, 0, 3)), Effect::None);
    wr(&mut a, X2APIC_ESR, 0);
    assert_eq!(
        rd(&mut a, X2APIC_ESR),
        u64::from(regs::ESR_REDIRECTIBLE_IPI)
    );
    // ... and the error interrupt is raised.
    assert_eq!(a.pending_vector(), Some(0xE0));
    // The reserved encodings 011 and 111 send nothing and report nothing.
    let mut b = x2();
    for mode in [0b011, 0b111] {
        assert_eq!(
            wr(&mut b, X2APIC_ICR, icr(mode, 0b01, 0, VEC)),
            Effect::None
        );
    }
    wr(&mut b, X2APIC_ESR, 0);
    assert_eq!(rd(&mut b, X2APIC_ESR), 0);
    assert_eq!(b.pending_vector(), None);
}

#[test]
fn vectors_0_to_15_are_refused_with_esr() {
    for v in 0..16u64 {
        let mut a = x2();
        wr(&mut a, X2APIC_SELF_IPI, v);
        wr(&mut a, X2APIC_ICR, icr(0, 0b01, 0, v));
        assert_eq!(a.vectors().0, VectorSet::EMPTY, "vector {v}");
        wr(&mut a, X2APIC_ESR, 0);
        assert_eq!(
            rd(&mut a, X2APIC_ESR),
            u64::from(regs::ESR_SEND_ILLEGAL_VECTOR)
        );
    }
    // From an LVT source: "receive illegal vector", and the error LVT interrupt when unmasked.
    let mut a = x2();
    wr(&mut a, X2APIC_LVT_ERROR, 0xE0);
    wr(&mut a, X2APIC_LVT_TIMER, 7);
    wr(&mut a, X2APIC_TIMER_DIVIDE, 0b1011); // divide by 1
    wr(&mut a, X2APIC_TIMER_INITIAL, 10);
    assert!(a.tick(10));
    wr(&mut a, X2APIC_ESR, 0);
    assert_eq!(
        a.read_msr(X2APIC_ESR, 10),
        Ok(u64::from(regs::ESR_RECEIVE_ILLEGAL_VECTOR))
    );
    assert_eq!(a.pending_vector(), Some(0xE0));
    assert!(!a.vectors().0.contains(7));
    // An illegal error vector is recorded, not delivered.
    let mut b = x2();
    wr(&mut b, X2APIC_LVT_ERROR, 2);
    wr(&mut b, X2APIC_SELF_IPI, 1);
    wr(&mut b, X2APIC_ESR, 0);
    assert_eq!(
        rd(&mut b, X2APIC_ESR),
        u64::from(regs::ESR_SEND_ILLEGAL_VECTOR | regs::ESR_RECEIVE_ILLEGAL_VECTOR)
    );
    assert_eq!(b.vectors().0, VectorSet::EMPTY);
}

// ---- IA32_APIC_BASE ------------------------------------------------------------------------------

#[test]
fn apic_base_reset_value_and_valid_transitions() {
    let mut a = reset();
    let xapic = APIC_BASE_DEFAULT_ADDR | APIC_BASE_ENABLE | APIC_BASE_BSP;
    assert_eq!(rd(&mut a, IA32_APIC_BASE), xapic);
    assert_eq!(
        VirtualApic::new(1, false, 48, 0).read_msr(IA32_APIC_BASE, 0),
        Ok(xapic & !APIC_BASE_BSP)
    );
    // xAPIC -> x2APIC -> disabled -> xAPIC -> x2APIC.
    assert_eq!(
        wr(&mut a, IA32_APIC_BASE, xapic | APIC_BASE_EXTD),
        Effect::ModeChanged(Mode::X2Apic)
    );
    assert_eq!(
        wr(&mut a, IA32_APIC_BASE, xapic & !APIC_BASE_ENABLE),
        Effect::ModeChanged(Mode::Disabled)
    );
    assert_eq!(
        wr(&mut a, IA32_APIC_BASE, xapic),
        Effect::ModeChanged(Mode::XApic)
    );
    assert_eq!(
        wr(&mut a, IA32_APIC_BASE, xapic | APIC_BASE_EXTD),
        Effect::ModeChanged(Mode::X2Apic)
    );
    // Same mode again: nothing changes; the base address and BSP flag are writable.
    assert_eq!(
        wr(
            &mut a,
            IA32_APIC_BASE,
            0xFED0_0000 | APIC_BASE_ENABLE | APIC_BASE_EXTD
        ),
        Effect::None
    );
    assert_eq!(
        rd(&mut a, IA32_APIC_BASE),
        0xFED0_0000 | APIC_BASE_ENABLE | APIC_BASE_EXTD
    );
    // xAPIC -> disabled.
    let mut b = reset();
    assert_eq!(
        wr(&mut b, IA32_APIC_BASE, 0),
        Effect::ModeChanged(Mode::Disabled)
    );
}

#[test]
fn apic_base_invalid_states_transitions_and_reserved_bits_raise_gp() {
    let xapic = APIC_BASE_DEFAULT_ADDR | APIC_BASE_ENABLE;
    let mut a = reset();
    // EN=0, EXTD=1 is the invalid state.
    assert_eq!(
        a.write_msr(IA32_APIC_BASE, APIC_BASE_DEFAULT_ADDR | APIC_BASE_EXTD, 0),
        Err(Gp)
    );
    // Reserved: bits 0-7, 9, and MAXPHYADDR (48) and above.
    for bit in (0..8).chain([9, 48, 51, 52, 63]) {
        assert_eq!(
            a.write_msr(IA32_APIC_BASE, xapic | 1 << bit, 0),
            Err(Gp),
            "bit {bit}"
        );
    }
    // x2APIC -> xAPIC directly.
    wr(&mut a, IA32_APIC_BASE, xapic | APIC_BASE_EXTD);
    assert_eq!(a.write_msr(IA32_APIC_BASE, xapic, 0), Err(Gp));
    assert_eq!(a.mode(), Mode::X2Apic);
    // disabled -> x2APIC directly.
    wr(&mut a, IA32_APIC_BASE, 0);
    assert_eq!(
        a.write_msr(IA32_APIC_BASE, xapic | APIC_BASE_EXTD, 0),
        Err(Gp)
    );
    assert_eq!(a.mode(), Mode::Disabled);
    // A narrower guest physical-address width moves the reserved boundary.
    let mut n = VirtualApic::new(0, true, 36, 0);
    assert_eq!(n.write_msr(IA32_APIC_BASE, xapic | 1 << 36, 0), Err(Gp));
    assert!(n.write_msr(IA32_APIC_BASE, xapic | 1 << 35, 0).is_ok());
}

#[test]
fn disabling_the_apic_resets_its_registers_and_stops_the_timer() {
    let mut a = x2();
    wr(&mut a, X2APIC_TPR, 0x20);
    wr(&mut a, X2APIC_SELF_IPI, 0x90);
    wr(&mut a, X2APIC_LVT_TIMER, VEC);
    wr(&mut a, X2APIC_TIMER_INITIAL, 100);
    assert!(a.next_deadline(0).is_some());
    wr(&mut a, IA32_APIC_BASE, APIC_BASE_DEFAULT_ADDR);
    assert_eq!(a.next_deadline(0), None);
    assert_eq!(a.pending_vector(), None);
    assert!(!a.tick(u64::MAX));
    wr(
        &mut a,
        IA32_APIC_BASE,
        APIC_BASE_DEFAULT_ADDR | APIC_BASE_ENABLE,
    );
    wr(
        &mut a,
        IA32_APIC_BASE,
        APIC_BASE_DEFAULT_ADDR | APIC_BASE_ENABLE | APIC_BASE_EXTD,
    );
    assert_eq!(rd(&mut a, X2APIC_TPR), 0);
    assert_eq!(rd(&mut a, X2APIC_SVR), 0xFF);
    assert_eq!(rd(&mut a, X2APIC_LVT_TIMER), u64::from(regs::LVT_MASKED));
    assert_eq!(rd(&mut a, 0x824), 0);
    assert_eq!(rd(&mut a, X2APIC_ID), u64::from(ID));
}

// ---- timer ---------------------------------------------------------------------------------------

const DIVIDES: [(u64, u64); 8] = [
    (0b0000, 2),
    (0b0001, 4),
    (0b0010, 8),
    (0b0011, 16),
    (0b1000, 32),
    (0b1001, 64),
    (0b1010, 128),
    (0b1011, 1),
];

#[test]
fn divide_configuration_values() {
    for (cfg, div) in DIVIDES {
        assert_eq!(divisor(cfg as u32), div, "{cfg:#b}");
    }
}

#[test]
fn one_shot_expires_at_exactly_initial_times_divide() {
    for (cfg, div) in DIVIDES {
        let mut a = x2();
        let t0 = 1_000_003;
        wr(&mut a, X2APIC_TIMER_DIVIDE, cfg);
        wr(&mut a, X2APIC_LVT_TIMER, VEC);
        assert_eq!(
            a.write_msr(X2APIC_TIMER_INITIAL, 1000, t0),
            Ok(Effect::Timer)
        );
        let at = t0 + 1000 * div;
        assert_eq!(a.next_deadline(t0), Some(at), "divide {div}");
        assert!(!a.tick(at - 1));
        assert_eq!(a.pending_vector(), None);
        assert!(a.tick(at));
        assert_eq!(a.pending_vector(), Some(VEC as u8));
        // Expired: no more deadline, current count 0, initial count kept.
        assert_eq!(a.next_deadline(at), None);
        assert!(!a.tick(at + 10 * div * 1000));
        assert_eq!(a.read_msr(X2APIC_TIMER_CURRENT, at), Ok(0));
        assert_eq!(a.read_msr(X2APIC_TIMER_INITIAL, at), Ok(1000));
    }
}

#[test]
fn current_count_counts_down_once_per_divisor_ticks() {
    let mut a = x2();
    wr(&mut a, X2APIC_TIMER_DIVIDE, 0b0001); // 4
    a.write_msr(X2APIC_TIMER_INITIAL, 10, 100).unwrap();
    let cur = |a: &mut VirtualApic, now| a.read_msr(X2APIC_TIMER_CURRENT, now).unwrap();
    assert_eq!(cur(&mut a, 100), 10);
    assert_eq!(cur(&mut a, 103), 10);
    assert_eq!(cur(&mut a, 104), 9);
    assert_eq!(cur(&mut a, 139), 1);
    assert_eq!(cur(&mut a, 140), 0);
    assert_eq!(cur(&mut a, 1 << 40), 0);
}

#[test]
fn writing_initial_count_zero_stops_the_timer() {
    let mut a = x2();
    wr(&mut a, X2APIC_LVT_TIMER, VEC);
    wr(&mut a, X2APIC_TIMER_INITIAL, 50);
    wr(&mut a, X2APIC_TIMER_INITIAL, 0);
    assert_eq!(a.next_deadline(0), None);
    assert!(!a.tick(1 << 30));
}

#[test]
fn periodic_timer_ticks_exactly_without_drift() {
    for (cfg, div) in DIVIDES {
        let mut a = x2();
        let t0 = 77;
        wr(&mut a, X2APIC_TIMER_DIVIDE, cfg);
        wr(&mut a, X2APIC_LVT_TIMER, regs::TIMER_PERIODIC as u64 | VEC);
        a.write_msr(X2APIC_TIMER_INITIAL, 100, t0).unwrap();
        let period = 100 * div;
        let n = 50;
        let mut raised = 0;
        for k in 1..=n {
            let due = a.next_deadline(0).unwrap();
            assert_eq!(due, t0 + k * period, "divide {div} tick {k}");
            // The loop wakes late by a varying amount: the grid does not move.
            let late = (k * 7) % period.min(13);
            assert!(!a.tick(due - 1));
            if a.tick(due + late) {
                raised += 1;
            }
            assert_eq!(take_and_eoi(&mut a), Some(VEC as u8));
        }
        assert_eq!(raised, n);
    }
}

#[test]
fn periodic_periods_missed_collapse_into_one_interrupt() {
    let mut a = x2();
    wr(&mut a, X2APIC_TIMER_DIVIDE, 0b1011);
    wr(&mut a, X2APIC_LVT_TIMER, regs::TIMER_PERIODIC as u64 | VEC);
    wr(&mut a, X2APIC_TIMER_INITIAL, 10);
    assert!(a.tick(1005));
    assert_eq!(a.next_deadline(1005), Some(1010));
    assert_eq!(a.read_msr(X2APIC_TIMER_CURRENT, 1005), Ok(5));
    assert_eq!(take_and_eoi(&mut a), Some(VEC as u8));
    assert_eq!(take_and_eoi(&mut a), None);
    // Even a guest TSC near the top does not overflow: the timer stops instead.
    assert!(a.tick(u64::MAX - 3));
    assert!(!a.tick(u64::MAX));
}

#[test]
fn periodic_period_is_at_least_the_minimum() {
    let mut a = VirtualApic::new(0, true, 48, 1000);
    wr(
        &mut a,
        IA32_APIC_BASE,
        APIC_BASE_DEFAULT_ADDR | APIC_BASE_ENABLE | APIC_BASE_EXTD,
    );
    wr(&mut a, X2APIC_SVR, 0x1FF);
    wr(&mut a, X2APIC_TIMER_DIVIDE, 0b1011);
    wr(&mut a, X2APIC_LVT_TIMER, regs::TIMER_PERIODIC as u64 | VEC);
    wr(&mut a, X2APIC_TIMER_INITIAL, 1); // the interrupt storm a hostile guest asks for
    assert_eq!(a.next_deadline(0), Some(1000));
    assert!(a.tick(1000));
    assert_eq!(a.next_deadline(1000), Some(2000));
    // The current count never exceeds the initial count.
    assert_eq!(a.read_msr(X2APIC_TIMER_CURRENT, 1500), Ok(1));
    // One-shot is not clamped.
    wr(&mut a, X2APIC_LVT_TIMER, VEC);
    a.write_msr(X2APIC_TIMER_INITIAL, 1, 5000).unwrap();
    assert_eq!(a.next_deadline(5000), Some(5001));
}

#[test]
fn minimum_period_follows_the_tsc_frequency() {
    // 200 us at 2 GHz and at 1 MHz.
    assert_eq!(VirtualApic::min_period_ticks(2_000_000), 400_000);
    assert_eq!(VirtualApic::min_period_ticks(1_000), 200);
    assert_eq!(VirtualApic::min_period_ticks(u64::MAX), u64::MAX / 1000);
}

#[test]
fn masked_one_shot_expires_without_raising() {
    let mut a = x2();
    wr(&mut a, X2APIC_TIMER_DIVIDE, 0b1011);
    wr(&mut a, X2APIC_LVT_TIMER, u64::from(regs::LVT_MASKED) | VEC);
    wr(&mut a, X2APIC_TIMER_INITIAL, 100);
    // Masked: no host timer needed, nothing raised, but the count runs out.
    assert_eq!(a.next_deadline(0), None);
    assert!(!a.tick(150));
    assert_eq!(a.read_msr(X2APIC_TIMER_CURRENT, 150), Ok(0));
    // Unmasking after the expiry raises nothing: it has expired.
    a.write_msr(X2APIC_LVT_TIMER, VEC, 160).unwrap();
    assert_eq!(a.next_deadline(160), None);
    assert!(!a.tick(1 << 20));
    assert_eq!(a.pending_vector(), None);
    // Unmasking before the expiry raises at the original deadline.
    wr(&mut a, X2APIC_LVT_TIMER, u64::from(regs::LVT_MASKED) | VEC);
    a.write_msr(X2APIC_TIMER_INITIAL, 100, 2000).unwrap();
    a.write_msr(X2APIC_LVT_TIMER, VEC, 2050).unwrap();
    assert_eq!(a.next_deadline(2050), Some(2100));
    assert!(a.tick(2100));
}

#[test]
fn divide_change_keeps_the_remaining_count() {
    let mut a = x2();
    wr(&mut a, X2APIC_LVT_TIMER, VEC);
    wr(&mut a, X2APIC_TIMER_DIVIDE, 0b1011); // 1
    wr(&mut a, X2APIC_TIMER_INITIAL, 100);
    a.write_msr(X2APIC_TIMER_DIVIDE, 0b0000, 40).unwrap(); // 60 counts left, now at 2 ticks each
    assert_eq!(a.read_msr(X2APIC_TIMER_CURRENT, 40), Ok(60));
    assert_eq!(a.next_deadline(40), Some(160));
}

#[test]
fn tsc_deadline_mode() {
    let mut a = x2();
    let deadline_mode = regs::TIMER_TSC_DEADLINE as u64 | VEC;
    // Outside TSC-deadline mode the MSR reads 0 and ignores writes.
    assert_eq!(wr(&mut a, IA32_TSC_DEADLINE, 500), Effect::Timer);
    assert_eq!(rd(&mut a, IA32_TSC_DEADLINE), 0);
    assert_eq!(a.next_deadline(0), None);
    wr(&mut a, X2APIC_LVT_TIMER, deadline_mode);
    // Arms; reads back; fires at the deadline exactly; then reads 0.
    a.write_msr(IA32_TSC_DEADLINE, 500, 100).unwrap();
    assert_eq!(a.read_msr(IA32_TSC_DEADLINE, 100), Ok(500));
    assert_eq!(a.next_deadline(100), Some(500));
    assert!(!a.tick(499));
    assert!(a.tick(500));
    assert_eq!(a.read_msr(IA32_TSC_DEADLINE, 500), Ok(0));
    assert_eq!(take_and_eoi(&mut a), Some(VEC as u8));
    // A deadline in the past, or now, fires at once (on the write).
    for d in [1, 1000] {
        a.write_msr(IA32_TSC_DEADLINE, d, 1000).unwrap();
        assert_eq!(a.pending_vector(), Some(VEC as u8), "deadline {d}");
        assert_eq!(a.next_deadline(1000), None);
        assert_eq!(take_and_eoi(&mut a), Some(VEC as u8));
    }
    // u64::MAX: armed, never reached.
    a.write_msr(IA32_TSC_DEADLINE, u64::MAX, 1000).unwrap();
    assert_eq!(a.next_deadline(1000), Some(u64::MAX));
    assert!(!a.tick(u64::MAX - 1));
    assert!(a.tick(u64::MAX));
    // 0 disarms.
    a.write_msr(IA32_TSC_DEADLINE, 5000, 1000).unwrap();
    a.write_msr(IA32_TSC_DEADLINE, 0, 1000).unwrap();
    assert_eq!(a.next_deadline(1000), None);
    assert!(!a.tick(6000));
    // The initial count is ignored in TSC-deadline mode; current count reads 0.
    wr(&mut a, X2APIC_TIMER_INITIAL, 10);
    assert_eq!(rd(&mut a, X2APIC_TIMER_INITIAL), 0);
    assert_eq!(rd(&mut a, X2APIC_TIMER_CURRENT), 0);
    assert_eq!(a.next_deadline(0), None);
}

#[test]
fn switching_into_or_out_of_tsc_deadline_mode_disarms() {
    let mut a = x2();
    wr(
        &mut a,
        X2APIC_LVT_TIMER,
        regs::TIMER_TSC_DEADLINE as u64 | VEC,
    );
    wr(&mut a, IA32_TSC_DEADLINE, 900);
    wr(&mut a, X2APIC_LVT_TIMER, VEC);
    assert_eq!(a.next_deadline(0), None);
    wr(&mut a, X2APIC_TIMER_INITIAL, 900);
    wr(
        &mut a,
        X2APIC_LVT_TIMER,
        regs::TIMER_TSC_DEADLINE as u64 | VEC,
    );
    assert_eq!(a.next_deadline(0), None);
    assert_eq!(rd(&mut a, X2APIC_TIMER_INITIAL), 0);
    // One-shot <-> periodic keeps the running count.
    wr(&mut a, X2APIC_LVT_TIMER, VEC);
    wr(&mut a, X2APIC_TIMER_DIVIDE, 0b1011);
    wr(&mut a, X2APIC_TIMER_INITIAL, 300);
    a.write_msr(X2APIC_LVT_TIMER, regs::TIMER_PERIODIC as u64 | VEC, 100)
        .unwrap();
    assert_eq!(a.next_deadline(100), Some(300));
    assert!(a.tick(300));
    assert_eq!(a.next_deadline(300), Some(600));
}

// ---- delivery ------------------------------------------------------------------------------------

#[test]
fn a_second_interrupt_of_the_same_class_waits_for_eoi() {
    let mut a = x2();
    wr(&mut a, X2APIC_SELF_IPI, 0x40);
    assert_eq!(a.accept(CAN), Some(0x40));
    wr(&mut a, X2APIC_SELF_IPI, 0x41);
    wr(&mut a, X2APIC_SELF_IPI, 0x40); // the same vector again, while in service
    assert_eq!(a.pending_vector(), None);
    assert_eq!(a.before_entry(CAN, false), EntryAction::None);
    // A higher class nests.
    wr(&mut a, X2APIC_SELF_IPI, 0x50);
    assert_eq!(a.before_entry(CAN, false), EntryAction::Inject(0x50));
    // EOI retires the highest in service (0x50), then 0x40, letting 0x41 and then 0x40 in.
    assert_eq!(
        wr(&mut a, X2APIC_EOI, 0),
        Effect::Eoi {
            vector: 0x50,
            level: false
        }
    );
    assert_eq!(a.pending_vector(), None);
    assert_eq!(
        wr(&mut a, X2APIC_EOI, 0),
        Effect::Eoi {
            vector: 0x40,
            level: false
        }
    );
    assert_eq!(take_and_eoi(&mut a), Some(0x41));
    assert_eq!(take_and_eoi(&mut a), Some(0x40));
    // EOI with nothing in service is ignored.
    assert_eq!(wr(&mut a, X2APIC_EOI, 0), Effect::None);
}

#[test]
fn tpr_masks_a_lower_priority_vector() {
    let mut a = x2();
    wr(&mut a, X2APIC_TPR, 0x50);
    wr(&mut a, X2APIC_SELF_IPI, 0x45);
    wr(&mut a, X2APIC_SELF_IPI, 0x5F); // same class as TPR: masked too
    assert_eq!(a.pending_vector(), None);
    assert_eq!(a.before_entry(CAN, false), EntryAction::None);
    wr(&mut a, X2APIC_SELF_IPI, 0x65);
    assert_eq!(take_and_eoi(&mut a), Some(0x65));
    assert_eq!(a.pending_vector(), None);
    wr(&mut a, X2APIC_TPR, 0x40);
    assert_eq!(take_and_eoi(&mut a), Some(0x5F));
    assert_eq!(a.pending_vector(), None);
    wr(&mut a, X2APIC_TPR, 0);
    assert_eq!(take_and_eoi(&mut a), Some(0x45));
}

#[test]
fn pending_vectors_are_taken_highest_first() {
    let mut a = x2();
    for v in [0x30, 0x80, 0x55, 0xFF, 0x10, 0x31] {
        wr(&mut a, X2APIC_SELF_IPI, v);
    }
    let order: Vec<u8> = core::iter::from_fn(|| take_and_eoi(&mut a)).collect();
    assert_eq!(order, [0xFF, 0x80, 0x55, 0x31, 0x30, 0x10]);
}

#[test]
fn interrupts_wait_for_if_the_shadow_and_queued_events() {
    let mut a = x2();
    assert_eq!(a.before_entry(CAN, false), EntryAction::None);
    wr(&mut a, X2APIC_SELF_IPI, VEC);
    let if0 = Interruptibility {
        interrupts_enabled: false,
        shadow: false,
    };
    let shadow = Interruptibility {
        interrupts_enabled: true,
        shadow: true,
    };
    assert_eq!(a.before_entry(if0, false), EntryAction::OpenWindow);
    assert_eq!(a.before_entry(shadow, false), EntryAction::OpenWindow);
    assert_eq!(a.before_entry(CAN, true), EntryAction::OpenWindow);
    // Nothing moved to ISR while waiting.
    assert_eq!(a.vectors().1, VectorSet::EMPTY);
    assert_eq!(a.before_entry(CAN, false), EntryAction::Inject(VEC as u8));
    assert!(a.vectors().1.contains(VEC as u8));
    assert!(!a.vectors().0.contains(VEC as u8));
    assert_eq!(a.before_entry(CAN, false), EntryAction::None);
}

#[test]
fn halt_sleeps_until_the_timer_or_stops() {
    let mut a = x2();
    // Nothing armed: nothing can wake the guest.
    assert_eq!(a.on_halt(0, true), HaltAction::Stop);
    wr(&mut a, X2APIC_TIMER_DIVIDE, 0b1011);
    wr(&mut a, X2APIC_LVT_TIMER, VEC);
    wr(&mut a, X2APIC_TIMER_INITIAL, 1000);
    // IF=0: no NMI source before SMP.
    assert_eq!(a.on_halt(10, false), HaltAction::Stop);
    assert_eq!(a.on_halt(10, true), HaltAction::SleepUntil(1000));
    // The loop sleeps, the host timer fires: the guest wakes.
    assert_eq!(a.on_halt(1000, true), HaltAction::Wake);
    assert_eq!(a.before_entry(CAN, false), EntryAction::Inject(VEC as u8));
    // A deadline that passed before HLT: woken at once.
    wr(&mut a, X2APIC_EOI, 0);
    a.write_msr(X2APIC_TIMER_INITIAL, 5, 2000).unwrap();
    assert_eq!(a.on_halt(3000, true), HaltAction::Wake);
    take_and_eoi(&mut a);
    // A masked timer, or one whose vector TPR holds back, cannot wake the guest.
    a.write_msr(X2APIC_TIMER_INITIAL, 1000, 4000).unwrap();
    wr(&mut a, X2APIC_TPR, 0x40);
    assert_eq!(a.on_halt(4000, true), HaltAction::Stop);
    wr(&mut a, X2APIC_TPR, 0);
    wr(&mut a, X2APIC_LVT_TIMER, u64::from(regs::LVT_MASKED) | VEC);
    assert_eq!(a.on_halt(4000, true), HaltAction::Stop);
    // A pending vector the guest can take wakes it.
    wr(&mut a, X2APIC_SELF_IPI, 0x90);
    assert_eq!(a.on_halt(4000, true), HaltAction::Wake);
}

// ---- invariants over random register traffic ------------------------------------------------------

/// splitmix64: a seeded, dependency-free generator for the random walk.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    /// A value a guest might write: mostly small or legal-looking, sometimes anything.
    fn value(&mut self) -> u64 {
        match self.below(6) {
            0 => self.next(),
            1 => self.next() & 0xFFFF_FFFF,
            2 => self.below(256),
            3 => (self.below(256)) | (self.below(4) << 17) | (self.below(2) << 16),
            4 => 0,
            _ => 1 << self.below(64),
        }
    }
}

const MSRS: [u32; 26] = [
    X2APIC_ID,
    X2APIC_VERSION,
    X2APIC_TPR,
    X2APIC_APR,
    X2APIC_PPR,
    X2APIC_EOI,
    X2APIC_LDR,
    X2APIC_DFR,
    X2APIC_SVR,
    0x813,
    0x81A,
    0x825,
    X2APIC_ESR,
    X2APIC_ICR,
    X2APIC_ICR_HI,
    X2APIC_LVT_TIMER,
    X2APIC_LVT_THERMAL,
    X2APIC_LVT_LINT0,
    X2APIC_LVT_ERROR,
    X2APIC_TIMER_INITIAL,
    X2APIC_TIMER_CURRENT,
    X2APIC_TIMER_DIVIDE,
    X2APIC_SELF_IPI,
    IA32_TSC_DEADLINE,
    IA32_APIC_BASE,
    0x8A0,
];

fn check_invariants(a: &mut VirtualApic, now: u64, ctx: &str) {
    // Register reads process expiries up to `now`: do it first, so the snapshot below is what they see.
    a.tick(now);
    let (irr, isr, tmr) = a.vectors();
    for v in 0..16 {
        assert!(
            !irr.contains(v) && !isr.contains(v) && !tmr.contains(v),
            "{ctx}: vector {v}"
        );
    }
    // Acceptance only ever nests a higher class: at most one in-service vector per class.
    for class in 0..16u8 {
        let n = (0..16u8).filter(|i| isr.contains(class * 16 + i)).count();
        assert!(n <= 1, "{ctx}: {n} in service in class {class}");
    }
    assert_eq!(
        tmr,
        VectorSet::EMPTY,
        "{ctx}: no level-triggered source exists"
    );
    if let Some(d) = a.next_deadline(now) {
        assert!(d >= now, "{ctx}");
    }
    if let Some(v) = a.pending_vector() {
        assert!(u32::from(v) & 0xF0 > a.ppr() & 0xF0, "{ctx}");
        assert!(irr.contains(v), "{ctx}");
    }
    match a.mode() {
        Mode::X2Apic => {
            let tpr = a.read_msr(X2APIC_TPR, now).unwrap() as u32;
            let ppr = a.read_msr(X2APIC_PPR, now).unwrap() as u32;
            assert!(
                ppr >= tpr && (ppr == tpr || ppr & 0xF == 0),
                "{ctx}: PPR {ppr:#x}"
            );
            for (i, m) in (0x810..=0x827).enumerate() {
                let want = [isr, tmr, irr][i / 8].reg32(i as u32 % 8);
                assert_eq!(a.read_msr(m, now), Ok(u64::from(want)), "{ctx}: {m:#x}");
            }
            let icr = a.read_msr(X2APIC_ICR, now).unwrap();
            assert_eq!(icr & !regs::ICR_WRITABLE, 0, "{ctx}: ICR {icr:#x}");
            let sw_enabled = a.read_msr(X2APIC_SVR, now).unwrap() & 0x100 != 0;
            for l in Lvt::ALL {
                let m = X2APIC_LVT_TIMER + l.index() as u32;
                let v = a.read_msr(m, now).unwrap() as u32;
                assert_eq!(v & !l.writable(), 0, "{ctx}: LVT {l:?} {v:#x}");
                assert!(
                    sw_enabled || v & regs::LVT_MASKED != 0,
                    "{ctx}: LVT {l:?} unmasked"
                );
            }
            let cur = a.read_msr(X2APIC_TIMER_CURRENT, now).unwrap();
            let init = a.read_msr(X2APIC_TIMER_INITIAL, now).unwrap();
            assert!(cur <= init, "{ctx}: current {cur} > initial {init}");
            for m in [
                X2APIC_TPR,
                X2APIC_SVR,
                X2APIC_ESR,
                X2APIC_TIMER_DIVIDE,
                X2APIC_LDR,
            ] {
                assert_eq!(a.read_msr(m, now).unwrap() >> 32, 0, "{ctx}: {m:#x}");
            }
        }
        mode => {
            assert_eq!(a.read_msr(X2APIC_TPR, now), Err(Gp), "{ctx}");
            if mode == Mode::Disabled {
                assert_eq!(irr, VectorSet::EMPTY, "{ctx}");
                assert_eq!(isr, VectorSet::EMPTY, "{ctx}");
                assert_eq!(a.next_deadline(now), None, "{ctx}");
            }
        }
    }
}

#[test]
fn random_register_traffic_keeps_every_invariant() {
    // How often each interesting path was taken, over all seeds: the walk must reach them.
    let (mut injected, mut eois, mut refused, mut slept, mut fired) =
        (0u32, 0u32, 0u32, 0u32, 0u32);
    for seed in 0..64u64 {
        let mut rng = Rng(seed);
        let mut a = VirtualApic::new(rng.below(64) as u32, seed % 2 == 0, 48, rng.below(50));
        let mut now = 0u64;
        for step in 0..3000 {
            let ctx = format!("seed {seed} step {step}");
            match rng.below(10) {
                0..=3 => {
                    let m = MSRS[rng.below(MSRS.len() as u64) as usize];
                    let mut v = rng.value();
                    // Half the writes keep to the register's defined bits, so most of them land.
                    if rng.below(2) == 0 {
                        v &= Reg::decode(m).map_or(u64::MAX, Reg::write_mask);
                    }
                    let before = a.vectors();
                    let was = a.read_msr(m, now);
                    match a.write_msr(m, v, now) {
                        Ok(Effect::Eoi { vector, .. }) => {
                            eois += 1;
                            assert_eq!(before.1.highest(), Some(vector), "{ctx}");
                            assert!(!a.vectors().1.contains(vector), "{ctx}");
                        }
                        Ok(_) => {}
                        // A refused write changes nothing the guest can see.
                        Err(Gp) => {
                            refused += 1;
                            assert_eq!(a.read_msr(m, now), was, "{ctx}: {m:#x}");
                        }
                    }
                }
                4 => {
                    // Bring the APIC (back) to x2APIC mode and enable it, so most traffic lands.
                    let base = a.read_msr(IA32_APIC_BASE, now).unwrap();
                    let _ = a.write_msr(IA32_APIC_BASE, base | APIC_BASE_ENABLE, now);
                    let base = a.read_msr(IA32_APIC_BASE, now).unwrap();
                    let _ = a.write_msr(IA32_APIC_BASE, base | APIC_BASE_EXTD, now);
                    let _ = a.write_msr(X2APIC_SVR, 0x100 | rng.below(256), now);
                }
                5 => {
                    let m = MSRS[rng.below(MSRS.len() as u64) as usize];
                    let _ = a.read_msr(m, now);
                    // The guest's interrupt handlers: a self IPI or an EOI.
                    if rng.below(2) == 0 {
                        let _ = a.write_msr(X2APIC_SELF_IPI, rng.below(256), now);
                    } else if let Ok(Effect::Eoi { .. }) = a.write_msr(X2APIC_EOI, 0, now) {
                        eois += 1;
                    }
                }
                6 | 7 => {
                    let cpu = Interruptibility {
                        interrupts_enabled: rng.below(4) != 0,
                        shadow: rng.below(5) == 0,
                    };
                    let (irr, isr, _) = a.vectors();
                    let ppr = a.ppr();
                    match a.before_entry(cpu, rng.below(6) == 0) {
                        EntryAction::Inject(v) => {
                            injected += 1;
                            assert!(cpu.can_take(), "{ctx}");
                            assert_eq!(irr.highest(), Some(v), "{ctx}");
                            assert!(u32::from(v) & 0xF0 > ppr & 0xF0, "{ctx}");
                            let (irr2, isr2, _) = a.vectors();
                            assert_eq!(irr2.len() + 1, irr.len(), "{ctx}");
                            assert_eq!(isr2.len(), isr.len() + 1, "{ctx}");
                            assert!(isr2.contains(v) && !irr2.contains(v), "{ctx}");
                        }
                        EntryAction::OpenWindow => assert!(a.pending_vector().is_some(), "{ctx}"),
                        EntryAction::None => {
                            assert_eq!(a.pending_vector(), None, "{ctx}");
                            assert_eq!(a.vectors().1, isr, "{ctx}");
                        }
                    }
                }
                8 => {
                    match a.on_halt(now, rng.below(3) != 0) {
                        HaltAction::SleepUntil(t) => {
                            slept += 1;
                            assert!(t >= now, "{ctx}");
                            // Sleep: the host timer fires at `t` and the guest is woken.
                            now = t;
                            if now < u64::MAX / 2 {
                                assert!(a.tick(now), "{ctx}: the timer that was to wake the guest");
                                assert_eq!(a.on_halt(now, true), HaltAction::Wake, "{ctx}");
                            }
                        }
                        HaltAction::Wake => assert!(a.pending_vector().is_some(), "{ctx}"),
                        HaltAction::Stop => {}
                    }
                }
                _ => {
                    now = now.saturating_add(match rng.below(4) {
                        0 => 1,
                        1 => rng.below(100),
                        2 => rng.below(100_000),
                        _ => rng.below(1 << 40),
                    });
                    if a.tick(now) {
                        fired += 1;
                    }
                }
            }
            check_invariants(&mut a, now, &ctx);
        }
    }
    std::println!(
        "injected {injected}, EOIs {eois}, #GP {refused}, slept {slept}, timer fired {fired}"
    );
    assert!(
        injected > 1000 && eois > 1000 && refused > 1000,
        "{injected} {eois} {refused}"
    );
    assert!(slept > 20 && fired > 20, "{slept} {fired}");
}
