//! Integer arithmetic and logic with the CPU's RFLAGS results, per operand width (1, 2, 4, 8 bytes).
//! Checked against results recorded on an x86_64 CPU (`alu_vectors.rs`, which the integration test
//! `emulate_alu_native` re-derives natively on every host run).
#![forbid(unsafe_code)]

use super::rflags::{AF, CF, OF, PF, SF, ZF};

/// The value mask of a width in bytes.
pub const fn mask(width: u8) -> u64 {
    if width >= 8 {
        u64::MAX
    } else {
        (1u64 << (width as u32 * 8)) - 1
    }
}

const fn sign(width: u8) -> u64 {
    1u64 << (width as u32 * 8 - 1)
}

/// ZF, SF, PF of a result.
fn zsp(r: u64, w: u8) -> u64 {
    let mut f = 0;
    if r & mask(w) == 0 {
        f |= ZF;
    }
    if r & sign(w) != 0 {
        f |= SF;
    }
    if (r as u8).count_ones().is_multiple_of(2) {
        f |= PF;
    }
    f
}

/// `a + b + carry`: (result, flags).
pub fn add(a: u64, b: u64, carry: bool, w: u8) -> (u64, u64) {
    let (a, b) = (a & mask(w), b & mask(w));
    let wide = u128::from(a) + u128::from(b) + u128::from(carry);
    let r = (wide as u64) & mask(w);
    let mut f = zsp(r, w);
    if wide > u128::from(mask(w)) {
        f |= CF;
    }
    if (a ^ r) & (b ^ r) & sign(w) != 0 {
        f |= OF;
    }
    if (a ^ b ^ r) & 0x10 != 0 {
        f |= AF;
    }
    (r, f)
}

/// `a - b - borrow`: (result, flags).
pub fn sub(a: u64, b: u64, borrow: bool, w: u8) -> (u64, u64) {
    let (a, b) = (a & mask(w), b & mask(w));
    let r = a.wrapping_sub(b).wrapping_sub(u64::from(borrow)) & mask(w);
    let mut f = zsp(r, w);
    if u128::from(a) < u128::from(b) + u128::from(borrow) {
        f |= CF;
    }
    if (a ^ b) & (a ^ r) & sign(w) != 0 {
        f |= OF;
    }
    if (a ^ b ^ r) & 0x10 != 0 {
        f |= AF;
    }
    (r, f)
}

/// AND/OR/XOR/TEST: CF = OF = 0, AF = 0 (what CPUs do; architecturally undefined).
pub fn logic(r: u64, w: u8) -> (u64, u64) {
    let r = r & mask(w);
    (r, zsp(r, w))
}

/// The binary operations the emulator implements.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Add,
    Adc,
    Sub,
    Sbb,
    And,
    Or,
    Xor,
    Cmp,
    Test,
}

/// `dst op src` with the incoming RFLAGS: (result, new arithmetic flags, result is written back).
pub fn binary(op: Op, a: u64, b: u64, flags_in: u64, w: u8) -> (u64, u64, bool) {
    let cf = flags_in & CF != 0;
    match op {
        Op::Add => tup(add(a, b, false, w), true),
        Op::Adc => tup(add(a, b, cf, w), true),
        Op::Sub => tup(sub(a, b, false, w), true),
        Op::Sbb => tup(sub(a, b, cf, w), true),
        Op::Cmp => tup(sub(a, b, false, w), false),
        Op::And => tup(logic(a & b, w), true),
        Op::Or => tup(logic(a | b, w), true),
        Op::Xor => tup(logic(a ^ b, w), true),
        Op::Test => tup(logic(a & b, w), false),
    }
}

fn tup((r, f): (u64, u64), write: bool) -> (u64, u64, bool) {
    (r, f, write)
}

/// The unary operations.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unary {
    Inc,
    Dec,
    Neg,
    Not,
}

/// `op dst` with the incoming RFLAGS: (result, new arithmetic flags). INC/DEC keep CF; NOT changes no
/// flag.
pub fn unary(op: Unary, a: u64, flags_in: u64, w: u8) -> (u64, u64) {
    let keep_cf = flags_in & CF;
    match op {
        Unary::Inc => {
            let (r, f) = add(a, 1, false, w);
            (r, (f & !CF) | keep_cf)
        }
        Unary::Dec => {
            let (r, f) = sub(a, 1, false, w);
            (r, (f & !CF) | keep_cf)
        }
        Unary::Neg => sub(0, a, false, w),
        Unary::Not => (!a & mask(w), flags_in & super::rflags::ARITH),
    }
}
