//! MMIO policy: what an emulated device access reads or does. The one device is the test register
//! block at [`TEST_DEVICE_BASE`] (`libvmm_abi::layout::x86_64`): an ID register (read-only) and a scratch
//! register (read+write), 8 bytes each, reached by MOVs that the instruction emulator decodes from the
//! nested page fault. An access that is not inside one register (unaligned across two, or at another
//! offset) reads all-ones and writes nothing, as an unclaimed bus address does.
#![forbid(unsafe_code)]

use libvmm_abi::layout::x86_64::{
    TEST_DEVICE_BASE, TEST_DEVICE_ID, TEST_DEVICE_ID_VALUE, TEST_DEVICE_SCRATCH,
};

fn mask(size: u8) -> u64 {
    if size >= 8 {
        u64::MAX
    } else {
        (1u64 << (size * 8)) - 1
    }
}

/// One access of `size` (1, 2, 4, 8) bytes at `gpa`: a store of `write`, or a load whose value is
/// returned (the low `size` bytes count). `scratch` is the device's state.
pub fn access(scratch: &mut u64, gpa: u64, size: u8, write: Option<u64>) -> u64 {
    let off = gpa.wrapping_sub(TEST_DEVICE_BASE);
    let (reg, byte) = (off & !7, off & 7);
    if byte + u64::from(size) > 8 {
        return mask(size);
    }
    let shift = byte * 8;
    let m = mask(size) << shift;
    match (reg, write) {
        (TEST_DEVICE_ID, None) => (TEST_DEVICE_ID_VALUE >> shift) & mask(size),
        (TEST_DEVICE_SCRATCH, None) => (*scratch >> shift) & mask(size),
        (TEST_DEVICE_SCRATCH, Some(v)) => {
            *scratch = (*scratch & !m) | ((v << shift) & m);
            0
        }
        (_, None) => mask(size),
        (_, Some(_)) => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_is_read_only_and_scratch_keeps_what_was_written() {
        let mut s = 0;
        let b = TEST_DEVICE_BASE;
        assert_eq!(access(&mut s, b, 8, None), TEST_DEVICE_ID_VALUE);
        assert_eq!(access(&mut s, b + 4, 4, None), TEST_DEVICE_ID_VALUE >> 32);
        access(&mut s, b, 8, Some(1));
        assert_eq!(access(&mut s, b, 8, None), TEST_DEVICE_ID_VALUE);
        access(&mut s, b + 8, 8, Some(0x1122_3344_5566_7788));
        access(&mut s, b + 9, 2, Some(0xAABB));
        assert_eq!(access(&mut s, b + 8, 8, None), 0x1122_3344_55AA_BB88);
        assert_eq!(access(&mut s, b + 12, 1, None), 0x44);
        // Across two registers, or elsewhere: all-ones, no effect.
        assert_eq!(access(&mut s, b + 6, 4, None), 0xFFFF_FFFF);
        access(&mut s, b + 12, 8, Some(0));
        assert_eq!(access(&mut s, b + 8, 8, None), 0x1122_3344_55AA_BB88);
        assert_eq!(access(&mut s, b + 0x100, 2, None), 0xFFFF);
    }
}
