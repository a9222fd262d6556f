//! How big the guest's memory is, from the machine: the arithmetic behind the window, kept apart from
//! the boot code that gathers its inputs so the host tests can try every shape of memory map.
//!
//! The window starts at the architecture's fixed base (`libvmm_abi::layout::*::WINDOW_BASE`, where the
//! payload linker scripts put payloads) and runs up through the RAM range that holds the base, until the
//! first range the VMM keeps (x86: the loader's information the VMM still reads; RISC-V: the host device
//! tree), the architecture's limit, or [`GUEST_MEM_MAX`], whichever comes first, rounded down to whole
//! 2 MiB blocks (the nested tables' leaves). Everything the VMM itself keeps (its image, stacks, tables
//! and control blocks in `.bss`, AP trampolines) lies below the base on both architectures, which boot
//! checks. `libvmm.mem=SIZE` asks for less; asking for more than there is is a boot error naming both.
#![forbid(unsafe_code)]

use crate::config::{GUEST_MEM_MAX, GUEST_MEM_MIN, LAZY_BLOCK};

/// Why the guest's memory could not be sized.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SizeError {
    /// The window's base is not in any RAM range the loader reported.
    BaseNotRam,
    /// Less than [`GUEST_MEM_MIN`] is there (bytes available).
    TooSmall { available: u64 },
    /// `libvmm.mem=` asked for more than there is (bytes asked, rounded down; bytes available).
    TooBig { asked: u64, available: u64 },
    /// `libvmm.mem=` asked for less than [`GUEST_MEM_MIN`].
    AskedTooSmall { asked: u64 },
}

impl core::fmt::Display for SizeError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let mib = |b: u64| b >> 20;
        match *self {
            Self::BaseNotRam => write!(
                f,
                "guest memory: the window's base is not RAM in the loader's memory map"
            ),
            Self::TooSmall { available } => write!(
                f,
                "guest memory: only {} MiB of RAM above the VMM, at least {} MiB needed",
                mib(available),
                mib(GUEST_MEM_MIN)
            ),
            Self::TooBig { asked, available } => write!(
                f,
                "guest memory: libvmm.mem asks for {} MiB, but only {} MiB are available",
                mib(asked),
                mib(available)
            ),
            Self::AskedTooSmall { asked } => write!(
                f,
                "guest memory: libvmm.mem asks for {} MiB, at least {} MiB needed",
                mib(asked),
                mib(GUEST_MEM_MIN)
            ),
        }
    }
}

/// Where the memory available to the guest ends: the end of the RAM range (base, length) holding
/// `base`, cut at the first kept range (base, length) that ends above `base`, and at `limit` (an
/// address). Kept ranges that end at or below `base` do not matter (boot checks the VMM's own).
pub fn available_end(
    base: u64,
    ram: &[(u64, u64)],
    kept: &[(u64, u64)],
    limit: u64,
) -> Option<u64> {
    let ram_end = ram
        .iter()
        .filter(|&&(b, l)| b <= base && base < b.saturating_add(l))
        .map(|&(b, l)| b.saturating_add(l))
        .max()?;
    let mut end = ram_end.min(limit);
    for &(k, l) in kept {
        if k.saturating_add(l) > base {
            end = end.min(k.max(base));
        }
    }
    Some(end)
}

/// The guest's memory size in bytes for a window at `base` with memory available up to `end`
/// (from [`available_end`]), and `asked` from `libvmm.mem=` (rounded down to 2 MiB).
pub fn size(base: u64, end: Option<u64>, asked: Option<u64>) -> Result<u64, SizeError> {
    let end = end.ok_or(SizeError::BaseNotRam)?;
    let available = (end.saturating_sub(base) & !(LAZY_BLOCK - 1)).min(GUEST_MEM_MAX);
    if available < GUEST_MEM_MIN {
        return Err(SizeError::TooSmall { available });
    }
    match asked.map(|a| a & !(LAZY_BLOCK - 1)) {
        None => Ok(available),
        Some(a) if a > available => Err(SizeError::TooBig {
            asked: a,
            available,
        }),
        Some(a) if a < GUEST_MEM_MIN => Err(SizeError::AskedTooSmall { asked: a }),
        Some(a) => Ok(a),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;
    const BASE: u64 = 32 * MIB;

    #[test]
    fn the_guest_gets_the_ram_range_above_its_base_up_to_what_the_vmm_keeps() {
        // QEMU microvm -m 128: RAM 0..640 KiB and 1 MiB..128 MiB.
        let ram = [(0, 0xA_0000), (MIB, 127 * MIB)];
        let end = available_end(BASE, &ram, &[], u64::MAX);
        assert_eq!(end, Some(128 * MIB));
        assert_eq!(size(BASE, end, None), Ok(96 * MIB));
        // -m 256 gives 224 MiB: the guest grows with the machine.
        let ram = [(0, 0xA_0000), (MIB, 255 * MIB)];
        assert_eq!(
            size(BASE, available_end(BASE, &ram, &[], u64::MAX), None),
            Ok(224 * MIB)
        );
        // The loader's information the VMM still reads cuts the window below it; information below the
        // base does not matter.
        let kept = [(0x9000, 0x1000), (100 * MIB + 0x123, 0x200)];
        let end = available_end(BASE, &ram, &kept, u64::MAX);
        assert_eq!(end, Some(100 * MIB + 0x123));
        assert_eq!(size(BASE, end, None), Ok(68 * MIB), "rounded down to 2 MiB");
        // A kept range that straddles the base leaves nothing.
        let end = available_end(BASE, &ram, &[(BASE - 1, 2)], u64::MAX);
        assert_eq!(end, Some(BASE));
        assert_eq!(
            size(BASE, end, None),
            Err(SizeError::TooSmall { available: 0 })
        );
        // The architecture's limit (x86: the test device) and the nested tables' limit.
        let big = [(MIB, 64 << 30)];
        assert_eq!(
            available_end(BASE, &big, &[], 0x3000_0000),
            Some(0x3000_0000)
        );
        assert_eq!(
            size(BASE, available_end(BASE, &big, &[], u64::MAX), None),
            Ok(GUEST_MEM_MAX)
        );
    }

    #[test]
    fn libvmm_mem_asks_for_less_and_is_refused_when_it_asks_for_more() {
        let end = Some(BASE + 96 * MIB);
        assert_eq!(size(BASE, end, Some(8 * MIB)), Ok(8 * MIB));
        assert_eq!(size(BASE, end, Some(9 * MIB + 5)), Ok(8 * MIB));
        assert_eq!(size(BASE, end, Some(96 * MIB)), Ok(96 * MIB));
        let e = size(BASE, end, Some(256 * MIB)).unwrap_err();
        assert_eq!(
            e,
            SizeError::TooBig {
                asked: 256 * MIB,
                available: 96 * MIB
            }
        );
        assert_eq!(
            e.to_string(),
            "guest memory: libvmm.mem asks for 256 MiB, but only 96 MiB are available"
        );
        assert_eq!(
            size(BASE, end, Some(MIB)),
            Err(SizeError::AskedTooSmall { asked: 0 })
        );
    }

    #[test]
    fn no_ram_at_the_base_or_too_little_is_refused() {
        let ram = [(0, 0xA_0000), (MIB, 20 * MIB)];
        assert_eq!(available_end(BASE, &ram, &[], u64::MAX), None);
        assert_eq!(size(BASE, None, None), Err(SizeError::BaseNotRam));
        let ram = [(MIB, 36 * MIB)];
        let end = available_end(BASE, &ram, &[], u64::MAX);
        assert_eq!(
            size(BASE, end, None),
            Err(SizeError::TooSmall { available: 4 * MIB })
        );
        assert!(size(BASE, end, None)
            .unwrap_err()
            .to_string()
            .contains("only 4 MiB"));
        // Overflowing ranges saturate instead of wrapping.
        let ram = [(MIB, u64::MAX)];
        assert_eq!(available_end(BASE, &ram, &[], u64::MAX), Some(u64::MAX));
    }
}
