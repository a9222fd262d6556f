//! x86 segment descriptors and their VMCB/VMCS "access rights" forms.
#![forbid(unsafe_code)]

/// 64-bit code, DPL 0, present, accessed.
pub const CODE64_DESC: u64 = 0x00AF_9B00_0000_FFFF;
/// Flat data, DPL 0, present, writable, accessed.
pub const DATA_DESC: u64 = 0x00CF_9300_0000_FFFF;

/// The packed 12-bit SVM attribute form: type/S/DPL/P in 7:0, AVL/L/D/G in 11:8.
#[cfg(any(test, feature = "fuzzing", feature = "svm"))]
pub const fn svm_attrib(desc: u64) -> u16 {
    (((desc >> 40) & 0xFF) | (((desc >> 52) & 0xF) << 8)) as u16
}

/// The VMX access-rights form: the same bits at 7:0 and 15:12 (bit 16 = unusable).
#[cfg(any(test, feature = "fuzzing", feature = "vmx"))]
pub const fn vmx_access_rights(desc: u64) -> u32 {
    (((desc >> 40) & 0xFF) | (((desc >> 52) & 0xF) << 12)) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attribute_forms_keep_the_long_mode_bit() {
        // The reference's probe: 0x29B for 64-bit code; raw flags (0xA09B) would drop L.
        assert_eq!(svm_attrib(CODE64_DESC), 0xA9B);
        assert_eq!(svm_attrib(CODE64_DESC) & (1 << 9), 1 << 9);
        assert_eq!(svm_attrib(DATA_DESC), 0xC93);
        assert_eq!(vmx_access_rights(CODE64_DESC), 0xA09B);
        assert_eq!(vmx_access_rights(DATA_DESC), 0xC093);
    }
}
