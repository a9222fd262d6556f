//! A set of the 256 interrupt vectors: the storage of IRR, ISR and TMR (SDM Vol. 3A "Interrupt Request
//! Register (IRR), In-Service Register (ISR) and Trigger Mode Register (TMR)"). Four words, so "highest
//! vector" is four leading-zero counts and "anything pending" is four compares.
#![forbid(unsafe_code)]

/// 256 bits, bit `v` for vector `v`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VectorSet([u64; 4]);

impl VectorSet {
    pub const EMPTY: Self = Self([0; 4]);

    pub fn set(&mut self, v: u8) {
        self.0[usize::from(v >> 6)] |= 1 << (v & 63);
    }

    pub fn clear(&mut self, v: u8) {
        self.0[usize::from(v >> 6)] &= !(1 << (v & 63));
    }

    pub fn contains(&self, v: u8) -> bool {
        self.0[usize::from(v >> 6)] & (1 << (v & 63)) != 0
    }

    pub fn is_empty(&self) -> bool {
        self.0 == [0; 4]
    }

    /// The highest vector in the set (the highest priority: priority is the vector number).
    pub fn highest(&self) -> Option<u8> {
        (0..4u8).rev().find_map(|i| {
            let w = self.0[usize::from(i)];
            // 63 - leading_zeros < 64: the cast cannot truncate.
            (w != 0).then(|| i * 64 + (63 - w.leading_zeros() as u8))
        })
    }

    /// The 32-bit register `i` (0..8) as the x2APIC MSR 0x810 + i (ISR), 0x818 + i (TMR) or 0x820 + i
    /// (IRR) shows it: vectors 32 * i .. 32 * i + 31.
    pub fn reg32(&self, i: u32) -> u32 {
        let w = self.0[(i as usize / 2) & 3];
        // The chosen half of a 64-bit word.
        (w >> (32 * (i & 1))) as u32
    }

    /// How many vectors are in the set.
    pub fn len(&self) -> u32 {
        self.0.iter().map(|w| w.count_ones()).sum()
    }
}
