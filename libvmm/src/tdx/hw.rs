//! The TDX image's backend entry: detect a TDX module without risking a fault, and if one is there,
//! initialize it far enough to read its facts through the real SEAMCALL.
//!
//! No machine or emulator here has SEAM, so every run here stops at detection with the reason printed.
//! On TDX hardware the path continues: VMXON, TDH.SYS.INIT, TDH.SYS.LP.INIT, TDH.SYS.RD of the PAMT and
//! Dynamic PAMT facts; the TDMR configuration and TD launch on hardware are not implemented (the host
//! code in `tdx::{tdmr,dpamt,td}` is verified against the simulated module only), so the VM stops there
//! with that reason.
#![forbid(unsafe_code)]

use super::errno;
use super::errno::Status;
use super::probe;
use super::seamcall::tdh;
use super::seamcall::{Args, Seamcall};
use super::tdmr::ModuleInfo;
use crate::arch::x86_64::{cpu, seamcall};
use crate::vm::{Platform, StopReason, Vm};

/// Call from the x86 boot flow of a `--features tdx` image, in place of a backend run loop.
pub(crate) fn boot<P: Platform>(vm: &mut Vm<'_, P>) -> StopReason {
    let range = {
        let platform = &vm.platform;
        // `detect` reads an MSR only after CPUID showed it exists (see `tdx::probe`).
        probe::detect(|l, s| platform.host_cpuid(l, s), cpu::rdmsr)
    };
    let range = match range {
        Ok(r) => r,
        Err(why) => {
            crate::vmm_print!(vm.platform.console(), "libvmm: TDX: {}\n", why.describe());
            return StopReason::Unsupported(why.describe());
        }
    };
    crate::vmm_print!(
        vm.platform.console(),
        "libvmm: TDX: SEAM range base {:#x} mask {:#x}\n",
        range.base,
        range.mask
    );
    let sc = match seamcall::enter() {
        Ok(proof) => Real(proof),
        Err(e) => return StopReason::Unsupported(e),
    };
    let s = tdh::sys_init(&sc);
    if s.0 == errno::SEAMCALL_VMFAILINVALID {
        return StopReason::Unsupported(
            "no TDX module: SEAMCALL VMfailInvalid (nothing loaded in the SEAM range)",
        );
    }
    if !s.is_success() {
        crate::vmm_print!(
            vm.platform.console(),
            "libvmm: TDX: TDH.SYS.INIT: {:?}\n",
            s
        );
        return StopReason::Backend(crate::backend::BackendError::Firmware {
            code: s.0,
            what: "TDH.SYS.INIT",
        });
    }
    let s = tdh::sys_lp_init(&sc);
    if !s.is_success() {
        return StopReason::Backend(crate::backend::BackendError::Firmware {
            code: s.0,
            what: "TDH.SYS.LP.INIT",
        });
    }
    match ModuleInfo::read(&sc) {
        Ok(info) => crate::vmm_print!(
            vm.platform.console(),
            "libvmm: TDX: module up; PAMT entries 4K/2M/1G {}/{}/{} B, Dynamic PAMT {}\n",
            info.pamt_4k_entry_size,
            info.pamt_2m_entry_size,
            info.pamt_1g_entry_size,
            if info.dpamt_bitmap_bits.is_some() {
                "yes"
            } else {
                "no"
            }
        ),
        Err(s) => {
            return StopReason::Backend(crate::backend::BackendError::Firmware {
                code: s.0,
                what: "TDH.SYS.RD",
            })
        }
    }
    StopReason::Unsupported("TDX module found; TDMR set-up and TD launch on hardware are not implemented (simulated only)")
}

/// The real SEAMCALL, once this CPU is in VMX operation.
struct Real(seamcall::InVmx);

impl Seamcall for Real {
    fn call(&self, leaf: u64, args: &mut Args) -> Status {
        let mut r = seamcall::SeamRegs {
            rcx: args.rcx,
            rdx: args.rdx,
            r8: args.r8,
            r9: args.r9,
            r10: args.r10,
            r11: args.r11,
        };
        let Some(rax) = seamcall::seamcall(&self.0, leaf, &mut r) else {
            return Status(errno::SEAMCALL_VMFAILINVALID);
        };
        (args.rcx, args.rdx, args.r8, args.r9, args.r10, args.r11) =
            (r.rcx, r.rdx, r.r8, r.r9, r.r10, r.r11);
        Status(rax)
    }
}
