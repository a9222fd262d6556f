//! MSR policy: default deny. An MSR the guest may touch is listed here with the check its value must
//! pass; everything else, and every failed check, is #GP(0) into the guest, as hardware does for an MSR
//! that does not exist. The listed MSRs live in the backend's control structure ([`VirtualMsr`]).
//!
//! EFER: the guest is shown no SVM, so EFER.SVME reads as 0 and setting it is #GP; the backend keeps the
//! hardware bit set underneath (VMRUN requires it).
#![forbid(unsafe_code)]

use crate::exit::{Fault, Output, Reply, VirtualMsr};

#[cfg(test)]
use crate::x86::msr::EFER_SVME;
use crate::x86::msr::{
    EFER as MSR_EFER, EFER_LMA, EFER_LME, EFER_NXE, EFER_SCE, FS_BASE as MSR_FS_BASE,
    GS_BASE as MSR_GS_BASE, IA32_PAT as MSR_PAT, KERNEL_GS_BASE as MSR_KERNEL_GS_BASE,
};
/// EFER bits a guest may hold.
pub const EFER_GUEST_BITS: u64 = EFER_SCE | EFER_LME | EFER_LMA | EFER_NXE;

const GP: Reply = Reply::Inject(Fault::GeneralProtection(0));

fn virtual_msr(msr: u32) -> Option<VirtualMsr> {
    Some(match msr {
        MSR_EFER => VirtualMsr::Efer,
        MSR_FS_BASE => VirtualMsr::FsBase,
        MSR_GS_BASE => VirtualMsr::GsBase,
        MSR_KERNEL_GS_BASE => VirtualMsr::KernelGsBase,
        MSR_PAT => VirtualMsr::Pat,
        _ => return None,
    })
}

const fn is_canonical(v: u64) -> bool {
    let top = (v as i64) >> 47;
    top == 0 || top == -1
}

/// A PAT entry may be UC(0), WC(1), WT(4), WP(5), WB(6), UC-(7).
fn pat_is_valid(v: u64) -> bool {
    v.to_le_bytes()
        .iter()
        .all(|b| matches!(b, 0 | 1 | 4 | 5 | 6 | 7))
}

/// RDMSR: `current` reads the backend's copy.
pub fn read(msr: u32, current: impl Fn(VirtualMsr) -> Option<u64>) -> Reply {
    match virtual_msr(msr).and_then(|v| current(v).map(|val| (v, val))) {
        Some((VirtualMsr::Efer, val)) => Reply::Complete(Output::MsrValue(val & EFER_GUEST_BITS)),
        Some((_, val)) => Reply::Complete(Output::MsrValue(val)),
        None => GP,
    }
}

/// WRMSR of `value`; `current` reads the backend's copy (EFER checks depend on it).
///
/// EFER: reserved bits and SVME are #GP; LMA is read-only (the written bit is ignored, as on hardware);
/// clearing LME while long mode is active (LMA = 1, so paging is on) is #GP, as the SDM and APM require.
pub fn write(msr: u32, value: u64, current: impl Fn(VirtualMsr) -> Option<u64>) -> Reply {
    let Some(v) = virtual_msr(msr) else { return GP };
    let mut value = value;
    let ok = match v {
        VirtualMsr::Efer => {
            let cur = current(VirtualMsr::Efer).unwrap_or(0);
            value = (value & !EFER_LMA) | (cur & EFER_LMA);
            value & !EFER_GUEST_BITS == 0 && !(cur & EFER_LMA != 0 && value & EFER_LME == 0)
        }
        VirtualMsr::FsBase | VirtualMsr::GsBase | VirtualMsr::KernelGsBase => is_canonical(value),
        VirtualMsr::Pat => pat_is_valid(value),
    };
    if ok {
        Reply::Complete(Output::SetVirtualMsr(v, value))
    } else {
        GP
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backend(v: VirtualMsr) -> Option<u64> {
        Some(match v {
            VirtualMsr::Efer => EFER_LME | EFER_LMA | EFER_SVME,
            _ => 0x1234,
        })
    }

    #[test]
    fn efer_reads_hide_svme() {
        assert_eq!(
            read(MSR_EFER, backend),
            Reply::Complete(Output::MsrValue(EFER_LME | EFER_LMA))
        );
    }

    #[test]
    fn efer_write_setting_svme_or_reserved_bits_is_gp() {
        assert_eq!(
            write(MSR_EFER, EFER_LME | EFER_LMA | EFER_SVME, backend),
            GP
        );
        assert_eq!(write(MSR_EFER, 1 << 40, backend), GP);
        assert_eq!(
            write(MSR_EFER, EFER_LME | EFER_LMA | EFER_NXE, backend),
            Reply::Complete(Output::SetVirtualMsr(
                VirtualMsr::Efer,
                EFER_LME | EFER_LMA | EFER_NXE
            ))
        );
    }

    #[test]
    fn efer_lma_is_read_only_and_lme_cannot_drop_in_long_mode() {
        // Clearing LME while LMA is set: #GP.
        assert_eq!(write(MSR_EFER, EFER_LMA, backend), GP);
        assert_eq!(write(MSR_EFER, 0, backend), GP);
        // LMA written as 0 is ignored: the backend keeps LMA.
        assert_eq!(
            write(MSR_EFER, EFER_LME | EFER_SCE, backend),
            Reply::Complete(Output::SetVirtualMsr(
                VirtualMsr::Efer,
                EFER_LME | EFER_LMA | EFER_SCE
            ))
        );
        // Outside long mode LME may change, and LMA cannot be set by writing it.
        let legacy = |_: VirtualMsr| Some(0);
        assert_eq!(
            write(MSR_EFER, EFER_LME | EFER_LMA, legacy),
            Reply::Complete(Output::SetVirtualMsr(VirtualMsr::Efer, EFER_LME))
        );
    }

    #[test]
    fn unknown_msrs_are_gp_both_ways() {
        for msr in [
            0,
            0x10,
            0x1B,
            0x3A,
            0x480,
            0xC001_0114,
            0xC001_0117,
            0xDEAD_BEEF,
            u32::MAX,
        ] {
            assert_eq!(read(msr, backend), GP, "{msr:#x}");
            assert_eq!(write(msr, 0, backend), GP, "{msr:#x}");
        }
    }

    #[test]
    fn bases_must_be_canonical_and_pat_valid() {
        assert_eq!(write(MSR_FS_BASE, 0x0000_8000_0000_0000, backend), GP);
        assert!(matches!(
            write(MSR_GS_BASE, 0xFFFF_8000_0000_0000, backend),
            Reply::Complete(_)
        ));
        assert!(matches!(
            write(MSR_PAT, 0x0007_0406_0007_0406, backend),
            Reply::Complete(_)
        ));
        assert_eq!(write(MSR_PAT, 0x0007_0406_0007_0402, backend), GP);
    }
}
