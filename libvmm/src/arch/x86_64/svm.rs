//! SVM instructions and the world switch: VMRUN (with the guest GPR moves), VMLOAD, VMSAVE, and the
//! EFER.SVME / VM_HSAVE_PA writes that enable SVM. The storage they work on (VMCB, host save area,
//! permission maps, nested tables) belongs to the SVM backend (`svm/mod.rs`); these wrappers take it by
//! reference, and check at compile time that a VMCB is one 4 KiB-aligned page.

use crate::x86::gprs::Gprs;
use crate::x86::msr::{EFER as MSR_EFER, EFER_SVME, VM_HSAVE_PA as MSR_VM_HSAVE_PA};

/// A VMCB as these wrappers need it: one page, page-aligned (its layout is checked in `svm::vmcb`).
const fn assert_page<V>() {
    assert!(core::mem::size_of::<V>() == 4096 && core::mem::align_of::<V>() == 4096);
}

/// Physical address of a VMM object (the VMM runs identity-mapped).
pub fn pa<T>(r: &T) -> u64 {
    r as *const T as u64
}

/// Sets EFER.SVME and the host save area.
pub fn enable(host_save_pa: u64) {
    let efer = super::cpu::rdmsr(MSR_EFER);
    super::cpu::wrmsr(MSR_EFER, efer | EFER_SVME);
    super::cpu::wrmsr(MSR_VM_HSAVE_PA, host_save_pa);
}

/// Whether EFER.SVME is set in hardware now.
pub fn svme_is_set() -> bool {
    super::cpu::rdmsr(MSR_EFER) & EFER_SVME != 0
}

/// VMSAVE: stores the CPU's FS/GS/TR/LDTR/KERNEL_GS_BASE/syscall state into the VMCB.
pub fn vmsave<V>(vmcb: &mut V) {
    const { assert_page::<V>() };
    // SAFETY: `vmcb` is a page-aligned VMCB owned by the VMM (the `&mut` keeps Rust off it); SVME is on.
    unsafe { core::arch::asm!("vmsave rax", in("rax") pa(vmcb), options(nostack)) }
}

/// VMLOAD: loads that state from the VMCB into the CPU. The VMCB's values were written by the VMM or
/// validated by the policy (canonical bases).
pub fn vmload<V>(vmcb: &V) {
    const { assert_page::<V>() };
    // SAFETY: as `vmsave`; the VMCB holds state written by `init_vmcb`/VMSAVE or validated by the policy
    // (canonical bases), and the VMM itself never uses the registers VMLOAD changes.
    unsafe { core::arch::asm!("vmload rax", in("rax") pa(vmcb), options(nostack)) }
}

core::arch::global_asm!(concat!(
    r#"
.section .text.svm, "ax"
.global libvmm_svm_world_switch
// rdi = &mut Gprs, rsi = guest VMCB pa
libvmm_svm_world_switch:
    push rbp
    push rbx
    push r12
    push r13
    push r14
    push r15
    push rdi
    mov rax, rsi
"#,
    load_guest_gprs_from_rdi!(),
    r#"
    mov rdi, [rdi + 40]
    clgi
    sti
    vmrun rax
    xchg rdi, [rsp]
"#,
    store_guest_gprs_to_rdi!(),
    r#"
    pop rbx
    mov [rdi + 40], rbx
    cli
    stgi
    pop r15
    pop r14
    pop r13
    pop r12
    pop rbx
    pop rbp
    ret
"#
));

extern "C" {
    fn libvmm_svm_world_switch(gprs: *mut Gprs, guest_vmcb_pa: u64);
}

/// Runs the guest once (VMRUN). VMRUN executes with RFLAGS.IF = 1 but GIF = 0: with V_INTR_MASKING a
/// host interrupt (the LAPIC timer) then ends the guest's run with an INTR exit. After the exit the
/// world switch clears IF before it sets GIF again, so the VMM never takes a host interrupt here: one
/// that became pending during an exit of another kind (or while the VMM handled an exit) stays pending
/// in the local APIC and ends the next VMRUN at once with an INTR exit, which the loop sees as a host
/// event; the loop takes it after that exit (`cpu::take_pending_interrupts`, the platform's
/// `clear_kick`). (Taken here, between STGI and CLI, as
/// before, such an interrupt was swallowed by the stub: the host one-shot was spent with no host
/// event, and a guest that never exits by time was never stopped by its time limit.) The VMM's own
/// code always runs with interrupts off. The guest's GPRs other than RAX/RSP (kept in the VMCB) travel
/// through `gprs`. The VMLOAD/VMSAVE part of the guest state stays in the CPU between runs (see
/// `svm::hw`).
pub fn run<V>(gprs: &mut Gprs, guest: &mut V) {
    const { assert_page::<V>() };
    let guest_pa = pa(guest);
    // SAFETY: `guest` is a page-aligned VMCB page (checked above) that the SVM backend initialised (VMRUN validates it and reports bad
    // state as VMEXIT_INVALID), SVME and HSAVE are set, and the `&mut` borrows keep Rust from touching
    // the registers or the VMCB while the CPU owns them.
    unsafe { libvmm_svm_world_switch(gprs, guest_pa) }
}
