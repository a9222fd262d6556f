//! SEV-SNP guest policy: which bits libvmm supports, how that set is published, and how a launch
//! policy is validated — after KVM's "Publish supported SEV-SNP policy bits" series
//! (shared/reference/sev-snp.md). *Simulated*: no SEV-SNP firmware here; the firmware's answers
//! (SNP_PLATFORM_STATUS feature info, firmware version) are inputs, and the checks are host-tested.
//!
//! Supported = what the firmware reports (the base set, plus RAPL_DIS, CIPHERTEXT_HIDING_DRAM,
//! MEM_AES_256_XTS, CXL_ALLOW by feature-info ECX bits 2..5, PAGE_SWAP_DISABLE from firmware 1.58) AND
//! what libvmm accepts (everything KVM accepts: MIGRATE_MA is excluded). Zero when SNP is not active.
#![forbid(unsafe_code)]
#![cfg_attr(not(test), allow(dead_code))]

pub const API_MINOR: u64 = 0xFF;
pub const API_MAJOR: u64 = 0xFF << 8;
pub const SMT: u64 = 1 << 16;
pub const RSVD_MBO: u64 = 1 << 17;
pub const MIGRATE_MA: u64 = 1 << 18;
pub const DEBUG: u64 = 1 << 19;
pub const SINGLE_SOCKET: u64 = 1 << 20;
pub const CXL_ALLOW: u64 = 1 << 21;
pub const MEM_AES_256_XTS: u64 = 1 << 22;
pub const RAPL_DIS: u64 = 1 << 23;
pub const CIPHERTEXT_HIDING_DRAM: u64 = 1 << 24;
pub const PAGE_SWAP_DISABLE: u64 = 1 << 25;

/// The bits the firmware always knows.
pub const FIRMWARE_BASE: u64 =
    API_MINOR | API_MAJOR | SMT | RSVD_MBO | MIGRATE_MA | DEBUG | SINGLE_SOCKET;

/// The bits libvmm accepts in a guest policy (KVM's `KVM_SNP_POLICY_MASK_VALID`).
pub const LIBVMM_VALID: u64 = API_MINOR
    | API_MAJOR
    | SMT
    | RSVD_MBO
    | DEBUG
    | SINGLE_SOCKET
    | CXL_ALLOW
    | MEM_AES_256_XTS
    | RAPL_DIS
    | CIPHERTEXT_HIDING_DRAM
    | PAGE_SWAP_DISABLE;

/// What the firmware told us.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FirmwareFacts {
    pub snp_active: bool,
    /// SNP_PLATFORM_STATUS feature info ECX, when the firmware reports feature info.
    pub feature_info_ecx: Option<u32>,
    /// Firmware version (major, minor).
    pub version: (u8, u8),
}

/// The firmware's supported policy bits (`sev_get_snp_policy_bits`).
pub fn firmware_policy_bits(f: &FirmwareFacts) -> u64 {
    if !f.snp_active {
        return 0;
    }
    let mut bits = FIRMWARE_BASE;
    if let Some(ecx) = f.feature_info_ecx {
        for (bit, policy) in [
            (2, RAPL_DIS),
            (3, CIPHERTEXT_HIDING_DRAM),
            (4, MEM_AES_256_XTS),
            (5, CXL_ALLOW),
        ] {
            if ecx & (1 << bit) != 0 {
                bits |= policy;
            }
        }
    }
    if f.version >= (1, 58) {
        bits |= PAGE_SWAP_DISABLE;
    }
    bits
}

/// The published set: what both the firmware and libvmm support (computed once at set-up).
pub fn supported_policy_bits(f: &FirmwareFacts) -> u64 {
    firmware_policy_bits(f) & LIBVMM_VALID
}

/// Attribute ids of the query, as KVM's `KVM_X86_GRP_SEV` group numbers them.
pub const ATTR_VMSA_FEATURES: u64 = 0;
pub const ATTR_SNP_POLICY_BITS: u64 = 1;

/// The published-attribute query (`KVM_GET_DEVICE_ATTR` on the system fd); unknown attributes are
/// `Err(())` (KVM: -ENXIO).
pub fn get_attr(attr: u64, supported: u64, vmsa_features: u64) -> Result<u64, ()> {
    match attr {
        ATTR_VMSA_FEATURES => Ok(vmsa_features),
        ATTR_SNP_POLICY_BITS => Ok(supported),
        _ => Err(()),
    }
}

/// Why a launch was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LaunchError {
    NotSnpVm,
    AlreadyStarted,
    NonZeroFlags,
    UnsupportedBits(u64),
    MustBeOneClear,
}

/// Validates SNP_LAUNCH_START's arguments in KVM's order. SMT and SINGLE_SOCKET are left to the
/// firmware (it fails LAUNCH_START / ACTIVATE with POLICY_FAILURE where the host cannot honour them).
pub fn validate_launch_start(
    is_snp_vm: bool,
    already_started: bool,
    flags: u64,
    policy: u64,
    supported: u64,
) -> Result<(), LaunchError> {
    if !is_snp_vm {
        return Err(LaunchError::NotSnpVm);
    }
    if already_started {
        return Err(LaunchError::AlreadyStarted);
    }
    if flags != 0 {
        return Err(LaunchError::NonZeroFlags);
    }
    if policy & !supported != 0 {
        return Err(LaunchError::UnsupportedBits(policy & !supported));
    }
    if policy & RSVD_MBO == 0 {
        return Err(LaunchError::MustBeOneClear);
    }
    Ok(())
}

/// Whether the VMSA may be decrypted for debugging: SNP needs DEBUG; SEV/SEV-ES need NODBG clear.
pub const fn may_decrypt_vmsa(snp: bool, policy: u64) -> bool {
    if snp {
        policy & DEBUG != 0
    } else {
        policy & 1 == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NEW: FirmwareFacts = FirmwareFacts {
        snp_active: true,
        feature_info_ecx: Some(0b11_1100),
        version: (1, 58),
    };

    #[test]
    fn supported_is_firmware_and_libvmm_and_never_migrate_ma() {
        assert_eq!(supported_policy_bits(&NEW), LIBVMM_VALID);
        assert_eq!(supported_policy_bits(&NEW) & MIGRATE_MA, 0);
        assert_ne!(firmware_policy_bits(&NEW) & MIGRATE_MA, 0);
        let old = FirmwareFacts {
            snp_active: true,
            feature_info_ecx: None,
            version: (1, 55),
        };
        assert_eq!(supported_policy_bits(&old), FIRMWARE_BASE & !MIGRATE_MA);
        let partial = FirmwareFacts {
            feature_info_ecx: Some(1 << 4),
            ..old
        };
        assert_eq!(
            supported_policy_bits(&partial) & !FIRMWARE_BASE,
            MEM_AES_256_XTS
        );
        assert_eq!(
            supported_policy_bits(&FirmwareFacts::default()),
            0,
            "SNP off: nothing"
        );
    }

    #[test]
    fn published_through_the_attribute_query() {
        let s = supported_policy_bits(&NEW);
        assert_eq!(get_attr(ATTR_SNP_POLICY_BITS, s, 0), Ok(s));
        assert_eq!(get_attr(7, s, 0), Err(()));
    }

    #[test]
    fn launch_validation_order_and_rules() {
        let s = supported_policy_bits(&NEW);
        let good = RSVD_MBO | SMT | (1 << 8);
        assert_eq!(validate_launch_start(true, false, 0, good, s), Ok(()));
        assert_eq!(
            validate_launch_start(false, false, 0, good, s),
            Err(LaunchError::NotSnpVm)
        );
        assert_eq!(
            validate_launch_start(true, true, 0, good, s),
            Err(LaunchError::AlreadyStarted)
        );
        assert_eq!(
            validate_launch_start(true, false, 1, good, s),
            Err(LaunchError::NonZeroFlags)
        );
        assert_eq!(
            validate_launch_start(true, false, 0, good | MIGRATE_MA, s),
            Err(LaunchError::UnsupportedBits(MIGRATE_MA))
        );
        assert_eq!(
            validate_launch_start(true, false, 0, good | (1 << 40), s),
            Err(LaunchError::UnsupportedBits(1 << 40))
        );
        assert_eq!(
            validate_launch_start(true, false, 0, SMT, s),
            Err(LaunchError::MustBeOneClear)
        );
        // SMT = 0 and SINGLE_SOCKET = 1 are the firmware's call now.
        assert_eq!(
            validate_launch_start(true, false, 0, RSVD_MBO | SINGLE_SOCKET, s),
            Ok(())
        );
        // A bit the firmware lacks is refused even though libvmm knows it.
        let old = supported_policy_bits(&FirmwareFacts {
            snp_active: true,
            feature_info_ecx: None,
            version: (1, 55),
        });
        assert_eq!(
            validate_launch_start(true, false, 0, good | RAPL_DIS, old),
            Err(LaunchError::UnsupportedBits(RAPL_DIS))
        );
    }

    #[test]
    fn vmsa_decryption_follows_the_policy() {
        assert!(may_decrypt_vmsa(true, RSVD_MBO | DEBUG));
        assert!(!may_decrypt_vmsa(true, RSVD_MBO));
        assert!(may_decrypt_vmsa(false, 0));
        assert!(!may_decrypt_vmsa(false, 1));
    }
}
