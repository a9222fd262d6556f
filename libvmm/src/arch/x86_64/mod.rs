//! x86-64 bare-metal layer: boot entry (PVH and multiboot2), CPU instruction wrappers, the COM1 console,
//! the VMM's own GDT/TSS and exception handlers, the exit device, and per-vendor world switches.
//! `start` is the x86 boot flow from the first Rust instruction to the stop line.
#![allow(unsafe_code)]

pub(crate) mod boot;
pub(crate) mod cpu;
pub(crate) mod exit_device;
pub(crate) mod idt;
pub(crate) mod lapic;
pub(crate) mod platform;
#[cfg(feature = "tdx")]
pub(crate) mod seamcall;
pub(crate) mod serial;
pub(crate) mod start;
#[cfg(feature = "svm")]
pub(crate) mod svm;
pub(crate) mod tables;
#[cfg(feature = "vmx")]
pub(crate) mod vmx;
