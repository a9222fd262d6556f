//! VMX instructions and the world switch. The pages they work on (VMXON region, VMCS, bitmaps, EPT)
//! belong to the VMX backend (`vmx/mod.rs`), which also implements its `VmxOps` trait over these
//! wrappers (`vmx/hw.rs`).
//!
//! Hand-written rather than `x86::bits64::vmx`: that crate reads RFLAGS in a separate asm block after
//! each instruction, which the compiler is free to separate from it; here every instruction captures
//! CF/ZF (VMfailInvalid / VMfailValid) inside its own asm block. The world switch loads the guest's
//! GPRs, executes VMLAUNCH or VMRESUME, and on VM exit (HOST_RIP = `libvmm_vmx_exit`, HOST_RSP written
//! on every entry) saves them back and returns to the caller.

use crate::x86::gprs::Gprs;

/// The VMCS encoding of HOST_RSP (SDM Vol. 3D App. B.4.4), which the world switch writes on every
/// entry; `vmx::hw` checks at compile time that it equals the typed field's encoding.
pub const HOST_RSP_ENCODING: u32 = 0x6C14;

/// How a VMX instruction failed (SDM "Conventions": VMfailInvalid sets CF, VMfailValid sets ZF).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fail {
    Invalid,
    Valid,
}

/// Physical address of a VMM object (the VMM runs identity-mapped).
pub fn pa<T>(r: &T) -> u64 {
    r as *const T as u64
}

/// Physical address of a host pointer.
pub fn pa_ptr(p: *const u8) -> u64 {
    p as u64
}

fn status(cf: u8, zf: u8) -> Result<(), Fail> {
    if cf != 0 {
        Err(Fail::Invalid)
    } else if zf != 0 {
        Err(Fail::Valid)
    } else {
        Ok(())
    }
}

macro_rules! vmx_mem_op {
    ($name:ident, $insn:literal) => {
        /// Executes the instruction on the 4 KiB region at physical address `pa`.
        pub fn $name(pa: u64) -> Result<(), Fail> {
            let (cf, zf): (u8, u8);
            // SAFETY: `pa` is a page the VMX backend owns for this instruction's use only; the instruction
            // reads the 64-bit operand from the stack slot and touches no other Rust memory.
            unsafe {
                core::arch::asm!(
                    concat!($insn, " qword ptr [{p}]"), "setc {cf}", "setz {zf}",
                    p = in(reg) &pa, cf = out(reg_byte) cf, zf = out(reg_byte) zf,
                    options(nostack)
                )
            };
            status(cf, zf)
        }
    };
}

vmx_mem_op!(vmxon, "vmxon");
vmx_mem_op!(vmclear, "vmclear");
vmx_mem_op!(vmptrld, "vmptrld");

macro_rules! vmx_invalidate_all {
    ($name:ident, $insn:literal, $what:literal) => {
        #[doc = concat!($insn, " all-context (type 2): drops every ", $what, ".")]
        pub fn $name() -> Result<(), Fail> {
            let desc = [0u64; 2];
            let (cf, zf): (u8, u8);
            // SAFETY: the instruction reads the 16-byte descriptor on the stack and only invalidates
            // TLB entries.
            unsafe {
                core::arch::asm!(
                    concat!($insn, " {k}, [{d}]"), "setc {cf}", "setz {zf}",
                    k = in(reg) 2u64, d = in(reg) &desc, cf = out(reg_byte) cf, zf = out(reg_byte) zf,
                    options(nostack)
                )
            };
            status(cf, zf)
        }
    };
}

vmx_invalidate_all!(invept_all, "invept", "EPT-derived translation");
vmx_invalidate_all!(invvpid_all, "invvpid", "VPID-tagged linear translation");

pub fn read_cr0() -> u64 {
    let v;
    // SAFETY: reading a control register has no side effects.
    unsafe {
        core::arch::asm!("mov {}, cr0", out(reg) v, options(nomem, nostack, preserves_flags))
    };
    v
}
pub fn read_cr3() -> u64 {
    let v;
    // SAFETY: as above.
    unsafe {
        core::arch::asm!("mov {}, cr3", out(reg) v, options(nomem, nostack, preserves_flags))
    };
    v
}
pub fn read_cr4() -> u64 {
    let v;
    // SAFETY: as above.
    unsafe {
        core::arch::asm!("mov {}, cr4", out(reg) v, options(nomem, nostack, preserves_flags))
    };
    v
}
/// Writes CR0; the caller only adds the VMX fixed bits (NE) to the running value.
pub fn write_cr0(v: u64) {
    // SAFETY: the bring-up only sets bits required by IA32_VMX_CR0_FIXED0 on top of the current value.
    unsafe { core::arch::asm!("mov cr0, {}", in(reg) v, options(nostack, preserves_flags)) };
}
/// Writes CR4; the caller only adds VMXE and the VMX fixed bits to the running value.
pub fn write_cr4(v: u64) {
    // SAFETY: as above, for CR4 (VMXE and IA32_VMX_CR4_FIXED0 bits).
    unsafe { core::arch::asm!("mov cr4, {}", in(reg) v, options(nostack, preserves_flags)) };
}

/// The current segment selectors: CS, SS, DS, ES, FS, GS, TR.
pub fn selectors() -> [u16; 7] {
    let (cs, ss, ds, es, fs, gs, tr): (u16, u16, u16, u16, u16, u16, u16);
    // SAFETY: reading segment registers and TR has no side effects.
    unsafe {
        core::arch::asm!(
            "mov {0:x}, cs", "mov {1:x}, ss", "mov {2:x}, ds", "mov {3:x}, es", "mov {4:x}, fs", "mov {5:x}, gs",
            "str {6:x}",
            out(reg) cs, out(reg) ss, out(reg) ds, out(reg) es, out(reg) fs, out(reg) gs, out(reg) tr,
            options(nomem, nostack, preserves_flags)
        )
    };
    [cs, ss, ds, es, fs, gs, tr]
}

/// VMREAD of the current VMCS.
pub fn vmread(encoding: u32) -> Result<u64, Fail> {
    let (v, cf, zf): (u64, u8, u8);
    // SAFETY: VMREAD only reads the current VMCS into a register.
    unsafe {
        core::arch::asm!(
            "vmread {v}, {f}", "setc {cf}", "setz {zf}",
            f = in(reg) encoding as u64, v = out(reg) v, cf = out(reg_byte) cf, zf = out(reg_byte) zf,
            options(nostack, nomem)
        )
    };
    status(cf, zf).map(|_| v)
}

/// VMWRITE of the current VMCS.
pub fn vmwrite(encoding: u32, value: u64) -> Result<(), Fail> {
    let (cf, zf): (u8, u8);
    // SAFETY: VMWRITE only writes the current VMCS; the typed layer chose a writable field.
    unsafe {
        core::arch::asm!(
            "vmwrite {f}, {v}", "setc {cf}", "setz {zf}",
            f = in(reg) encoding as u64, v = in(reg) value, cf = out(reg_byte) cf, zf = out(reg_byte) zf,
            options(nostack, nomem)
        )
    };
    status(cf, zf)
}

/// VMREAD without capturing the flags (for fields that cannot fail: see `VmxOps::vmread_basic`).
#[inline(always)]
pub fn vmread_basic(encoding: u32) -> u64 {
    let v: u64;
    // SAFETY: as `vmread`; the flags are not captured (see `VmxOps::vmread_basic`).
    unsafe {
        core::arch::asm!("vmread {v}, {f}", f = in(reg) encoding as u64, v = out(reg) v, options(nostack, nomem))
    };
    v
}

/// VMWRITE without capturing the flags (see `VmxOps::vmwrite_basic`).
#[inline(always)]
pub fn vmwrite_basic(encoding: u32, value: u64) {
    // SAFETY: as `vmwrite`; the flags are not captured (see `VmxOps::vmwrite_basic`).
    unsafe {
        core::arch::asm!("vmwrite {f}, {v}", f = in(reg) encoding as u64, v = in(reg) value, options(nostack, nomem))
    };
}

/// VMLAUNCH (first entry) or VMRESUME, with the guest GPRs moved from and back to `regs`.
pub fn enter(regs: &mut Gprs, launched: bool) -> Result<(), Fail> {
    // SAFETY: `regs` is a valid, exclusive Gprs; the world switch saves and restores every
    // callee-saved register and returns normally both on VM exit and on VMfail.
    let r = unsafe { libvmm_vmx_enter(regs, launched as u64) };
    match r {
        0 => Ok(()),
        1 => Err(Fail::Invalid),
        _ => Err(Fail::Valid),
    }
}

/// VTPR: byte 0x80 of the virtual-APIC page, which the CPU writes while the guest runs with TPR shadow.
pub fn read_vtpr<P>(vapic: &P) -> u8 {
    const { assert!(core::mem::size_of::<P>() == 4096) };
    let p = vapic as *const P as *const u8;
    // SAFETY: `vapic` is a 4 KiB page (checked above) borrowed from its owner; the CPU may write it
    // while the guest runs, so it is read volatile, and only between runs.
    unsafe { core::ptr::read_volatile(p.add(0x80)) }
}

/// Address of the VM-exit entry point (HOST_RIP).
pub fn exit_entry() -> u64 {
    libvmm_vmx_exit as *const () as u64
}

extern "C" {
    fn libvmm_vmx_enter(regs: *mut Gprs, launched: u64) -> u64;
    fn libvmm_vmx_exit();
}

core::arch::global_asm!(
    concat!(
    r#"
.section .text.vmx, "ax"
.global libvmm_vmx_enter
.global libvmm_vmx_exit
// rdi = &mut Gprs, rsi = launched; returns 0 on VM exit, 1 VMfailInvalid, 2 VMfailValid
libvmm_vmx_enter:
    push rbp
    push rbx
    push r12
    push r13
    push r14
    push r15
    push rdi
    mov rax, {host_rsp}
    vmwrite rax, rsp
    jbe 3f
    test rsi, rsi
    mov rax, [rdi + 0]
"#,
    load_guest_gprs_from_rdi!(),
    r#"
    mov rdi, [rdi + 40]
    jnz 1f
    vmlaunch
    jmp 3f
1:
    vmresume
3:
    mov eax, 1
    jc 4f
    mov eax, 2
4:
    pop rdi
    pop r15
    pop r14
    pop r13
    pop r12
    pop rbx
    pop rbp
    ret

libvmm_vmx_exit:
    push rdi
    mov rdi, [rsp + 8]
    mov [rdi + 0], rax
"#,
    store_guest_gprs_to_rdi!(),
    r#"
    pop rax
    mov [rdi + 40], rax
    pop rdi
    pop r15
    pop r14
    pop r13
    pop r12
    pop rbx
    pop rbp
    xor eax, eax
    ret
"#
    ),
    host_rsp = const HOST_RSP_ENCODING,
);
