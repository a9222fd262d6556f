//! x86-64 primitives: the PVH / multiboot2 entry and boot tables ([`entry`]), CPU instruction wrappers
//! ([`cpu`]), the COM1 console ([`serial`]), the local APIC ([`lapic`]), the VMM's own GDT/TSS/IDT and
//! exception handler ([`tables`], [`idt`]), the exit device, and the instructions and world switches of
//! each vendor (`svm`, `vmx`, `seamcall`: each compiled into its own image only). The boot flow that
//! uses them is `boot::x86_64`.
#![allow(unsafe_code)]

/// The guest register moves both x86 world switches share (SVM and VMX): RBX, RCX, RDX, RSI, RBP and
/// R8..R15 between the CPU and the `x86::gprs::Gprs` block that RDI points to (its offsets are checked at
/// compile time there). RAX, RSP and RDI themselves are each vendor's business.
#[cfg_attr(feature = "tdx", allow(unused_macros))] // the TDX image runs no guest
macro_rules! load_guest_gprs_from_rdi {
    () => {
        "
    mov rbx, [rdi + 8]
    mov rcx, [rdi + 16]
    mov rdx, [rdi + 24]
    mov rsi, [rdi + 32]
    mov rbp, [rdi + 48]
    mov r8, [rdi + 56]
    mov r9, [rdi + 64]
    mov r10, [rdi + 72]
    mov r11, [rdi + 80]
    mov r12, [rdi + 88]
    mov r13, [rdi + 96]
    mov r14, [rdi + 104]
    mov r15, [rdi + 112]
"
    };
}

/// The inverse of `load_guest_gprs_from_rdi!`.
#[cfg_attr(feature = "tdx", allow(unused_macros))]
macro_rules! store_guest_gprs_to_rdi {
    () => {
        "
    mov [rdi + 8], rbx
    mov [rdi + 16], rcx
    mov [rdi + 24], rdx
    mov [rdi + 32], rsi
    mov [rdi + 48], rbp
    mov [rdi + 56], r8
    mov [rdi + 64], r9
    mov [rdi + 72], r10
    mov [rdi + 80], r11
    mov [rdi + 88], r12
    mov [rdi + 96], r13
    mov [rdi + 104], r14
    mov [rdi + 112], r15
"
    };
}

pub(crate) mod cpu;
pub(crate) mod entry;
pub(crate) mod exit_device;
pub(crate) mod idt;
pub(crate) mod lapic;
#[cfg(feature = "tdx")]
pub(crate) mod seamcall;
pub(crate) mod serial;
pub(crate) mod smp;
#[cfg(feature = "svm")]
pub(crate) mod svm;
pub(crate) mod tables;
#[cfg(feature = "vmx")]
pub(crate) mod vmx;
