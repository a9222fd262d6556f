//! The MSR and I/O permission maps: default deny (every bit set = every access exits), with the helpers
//! a pass-through policy would use. Bit numbering per svm.md §4 (kvm-unit-tests `get_msrpm_bit_nr`).
#![forbid(unsafe_code)]

pub const MSRPM_SIZE: usize = 8 * 1024;
pub const IOPM_SIZE: usize = 12 * 1024;

#[repr(C, align(4096))]
pub struct MsrPermissionMap(pub [u8; MSRPM_SIZE]);

#[repr(C, align(4096))]
pub struct IoPermissionMap(pub [u8; IOPM_SIZE]);

/// The bit that intercepts reads of `msr` (the write bit is the next one), or `None` for MSRs outside
/// the three mapped ranges (those always exit when MSR_PROT is on).
pub const fn msrpm_read_bit(msr: u32) -> Option<usize> {
    let (range, base) = match msr {
        0x0000_0000..=0x0000_1FFF => (0, 0x0000_0000),
        0xC000_0000..=0xC000_1FFF => (1, 0xC000_0000),
        0xC001_0000..=0xC001_1FFF => (2, 0xC001_0000),
        _ => return None,
    };
    Some(range * 2048 * 8 + ((msr - base) as usize) * 2)
}

impl MsrPermissionMap {
    /// Intercepts every access to every MSR.
    pub fn deny_all(&mut self) {
        self.0 = [0xFF; MSRPM_SIZE];
    }

    /// Sets whether reads and writes of `msr` exit. Returns false for an unmapped MSR (always exits).
    #[cfg_attr(not(test), allow(dead_code))] // for pass-through policies (x2AVIC); tested here
    pub fn set_intercept(&mut self, msr: u32, read: bool, write: bool) -> bool {
        let Some(bit) = msrpm_read_bit(msr) else {
            return false;
        };
        for (b, on) in [(bit, read), (bit + 1, write)] {
            if on {
                self.0[b / 8] |= 1 << (b % 8);
            } else {
                self.0[b / 8] &= !(1 << (b % 8));
            }
        }
        true
    }

    pub fn intercepts(&self, msr: u32, write: bool) -> bool {
        match msrpm_read_bit(msr) {
            Some(bit) => {
                let b = bit + write as usize;
                self.0[b / 8] & (1 << (b % 8)) != 0
            }
            None => true,
        }
    }
}

impl IoPermissionMap {
    /// Intercepts every port.
    pub fn deny_all(&mut self) {
        self.0 = [0xFF; IOPM_SIZE];
    }

    pub fn intercepts(&self, port: u16) -> bool {
        let p = port as usize;
        self.0[p / 8] & (1 << (p % 8)) != 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn msr_bit_numbers_match_the_reference() {
        // x2APIC MSRs 0x800..0x8FF occupy bytes 0x200..0x23F.
        assert_eq!(msrpm_read_bit(0x800).map(|b| b / 8), Some(0x200));
        assert_eq!(msrpm_read_bit(0x8FF).map(|b| b / 8), Some(0x23F));
        assert_eq!(msrpm_read_bit(0xC000_0080), Some(2048 * 8 + 0x80 * 2));
        assert_eq!(msrpm_read_bit(0xC001_0117), Some(2 * 2048 * 8 + 0x117 * 2));
        assert_eq!(msrpm_read_bit(0x4000_0000), None);
        assert!(msrpm_read_bit(0xC001_1FFF).unwrap() / 8 < 0x1800);
    }

    #[test]
    fn default_deny_intercepts_everything() {
        let mut m = Box::new(MsrPermissionMap([0; MSRPM_SIZE]));
        m.deny_all();
        for msr in [
            0,
            0x10,
            0x1B,
            0x277,
            0x800,
            0xC000_0080,
            0xC000_0103,
            0xC001_0114,
            0xDEAD_BEEF,
        ] {
            assert!(
                m.intercepts(msr, false) && m.intercepts(msr, true),
                "{msr:#x}"
            );
        }
        let mut io = Box::new(IoPermissionMap([0; IOPM_SIZE]));
        io.deny_all();
        assert!((0..=u16::MAX).all(|p| io.intercepts(p)));
    }

    #[test]
    fn pass_through_clears_only_the_chosen_bits() {
        let mut m = Box::new(MsrPermissionMap([0; MSRPM_SIZE]));
        m.deny_all();
        assert!(m.set_intercept(0x802, false, true));
        assert!(!m.intercepts(0x802, false));
        assert!(m.intercepts(0x802, true));
        assert!(m.intercepts(0x801, false) && m.intercepts(0x803, false));
        assert!(!m.set_intercept(0x4000_0000, false, false));
    }
}
