//! The real SEAMCALL instruction and the VMXON it needs first. `tdx::hw` implements the backend's
//! `Seamcall` trait over these wrappers. Only bare-metal x86_64 images contain this; host tests use the
//! simulated module.
//!
//! SEAMCALL (`66 0F 01 CF`, Linux `tdxcall.S`) raises #UD outside VMX operation or without SEAM, and
//! #GP when TDX is not enabled, so [`Real`] can only be made by [`enter`], after `tdx::probe::detect`
//! found a BIOS-configured SEAM range and this CPU entered VMX operation. CF=1 after the instruction is
//! VMfailInvalid (no module loaded in the SEAM range), reported as `SEAMCALL_VMFAILINVALID` like Linux.
//!
//! None of this runs on any emulator here (none has SEAM): QEMU and Bochs stop at the detection step.

use core::arch::asm;

use super::cpu::{rdmsr, wrmsr};

use crate::x86::msr::{
    FEATURE_CONTROL_LOCK as FEATURE_CONTROL_LOCKED, FEATURE_CONTROL_VMX_OUTSIDE_SMX,
    IA32_FEATURE_CONTROL, VMX_BASIC as IA32_VMX_BASIC, VMX_CR0_FIXED0 as IA32_VMX_CR0_FIXED0,
    VMX_CR0_FIXED1 as IA32_VMX_CR0_FIXED1, VMX_CR4_FIXED0 as IA32_VMX_CR4_FIXED0,
    VMX_CR4_FIXED1 as IA32_VMX_CR4_FIXED1,
};
const CR4_VMXE: u64 = 1 << 13;

#[repr(C, align(4096))]
struct VmxonRegion([u8; 4096]);

/// The VMXON region of the boot CPU (the VMM is identity-mapped, so its address is its physical one).
static mut VMXON_REGION: VmxonRegion = VmxonRegion([0; 4096]);

/// Proof that SEAMCALL may be executed on this CPU (made only by [`enter`]).
pub(crate) struct InVmx {
    _entered: (),
}

/// The registers a SEAMCALL leaf takes and returns besides RAX (TDX module ABI; Linux
/// `struct tdx_module_args`, non-"saved" variant).
#[derive(Clone, Copy, Debug, Default)]
pub struct SeamRegs {
    pub rcx: u64,
    pub rdx: u64,
    pub r8: u64,
    pub r9: u64,
    pub r10: u64,
    pub r11: u64,
}

/// Enters VMX operation on this CPU (IA32_FEATURE_CONTROL, CR0/CR4 fixed bits, VMXON) so SEAMCALL can
/// be issued. Call only after `tdx::probe::detect` succeeded (an Intel CPU with VMX and SEAM).
pub(crate) fn enter() -> Result<InVmx, &'static str> {
    // The MSRs below exist on every CPU with CPUID.1:ECX.VMX, which detection checked.
    let fc = rdmsr(IA32_FEATURE_CONTROL);
    if fc & FEATURE_CONTROL_LOCKED == 0 {
        wrmsr(
            IA32_FEATURE_CONTROL,
            fc | FEATURE_CONTROL_LOCKED | FEATURE_CONTROL_VMX_OUTSIDE_SMX,
        );
    } else if fc & FEATURE_CONTROL_VMX_OUTSIDE_SMX == 0 {
        return Err(
            "VMX is disabled by the BIOS (IA32_FEATURE_CONTROL locked without VMX outside SMX)",
        );
    }
    let (cr0_0, cr0_1) = (rdmsr(IA32_VMX_CR0_FIXED0), rdmsr(IA32_VMX_CR0_FIXED1));
    let (cr4_0, cr4_1) = (rdmsr(IA32_VMX_CR4_FIXED0), rdmsr(IA32_VMX_CR4_FIXED1));
    let revision = rdmsr(IA32_VMX_BASIC) as u32 & 0x7fff_ffff;
    let (mut cr0, mut cr4): (u64, u64);
    // SAFETY: reading CR0/CR4 has no side effects.
    unsafe {
        asm!("mov {}, cr0", out(reg) cr0, options(nomem, nostack, preserves_flags));
        asm!("mov {}, cr4", out(reg) cr4, options(nomem, nostack, preserves_flags));
    }
    cr0 = (cr0 | cr0_0) & cr0_1;
    cr4 = (cr4 | cr4_0 | CR4_VMXE) & cr4_1;
    let region = core::ptr::addr_of_mut!(VMXON_REGION);
    // SAFETY: the VMXON region is used by nobody else (one boot CPU, VMXON once), writing the revision
    // ID into its first dword is what the SDM requires before VMXON.
    unsafe { region.cast::<u32>().write(revision) };
    let pa = region as u64;
    let failed: u8;
    // SAFETY: the fixed-bit MSRs say which CR0/CR4 values VMX operation allows and the VMM runs in
    // long mode with paging (PE/PG stay set); VMXON takes the 4 KiB-aligned, identity-mapped region's
    // physical address from memory; CF or ZF set means it failed and nothing changed.
    unsafe {
        asm!("mov cr0, {}", in(reg) cr0, options(nostack));
        asm!("mov cr4, {}", in(reg) cr4, options(nostack));
        asm!("vmxon [{pa}]", "setbe {f}", pa = in(reg) &pa, f = out(reg_byte) failed, options(nostack));
    }
    if failed != 0 {
        return Err("VMXON failed");
    }
    Ok(InVmx { _entered: () })
}

/// SEAMCALL `leaf` with `args`: RAX (the completion status) on return, or `None` for VMfailInvalid (CF=1:
/// no module loaded in the SEAM range).
pub(crate) fn seamcall(_proof: &InVmx, leaf: u64, args: &mut SeamRegs) -> Option<u64> {
    {
        let mut rax = leaf;
        let cf: u8;
        // SAFETY: `InVmx` exists only after `enter` put this CPU in VMX operation on a CPU whose BIOS set
        // up a SEAM range, so SEAMCALL does not #UD/#GP for missing SEAM or VMX. The leaves libvmm issues
        // read and write RAX, RCX, RDX, R8-R11 only (TDX module ABI; Linux `struct tdx_module_args`
        // non-"saved" variant) and touch memory only through the page operands their callers own.
        unsafe {
            asm!(
                ".byte 0x66, 0x0f, 0x01, 0xcf",
                "setc {cf}",
                cf = out(reg_byte) cf,
                inout("rax") rax,
                inout("rcx") args.rcx,
                inout("rdx") args.rdx,
                inout("r8") args.r8,
                inout("r9") args.r9,
                inout("r10") args.r10,
                inout("r11") args.r11,
                options(nostack),
            );
        }
        if cf != 0 {
            return None;
        }
        Some(rax)
    }
}
