//! The VMM's own GDT (code, data, one 64-bit TSS per CPU) and IDT. VMX needs a host TR (a TSS) on
//! every CPU that runs a vCPU, and both vendors benefit from exception handlers that report a VMM fault
//! instead of triple-faulting silently.
//!
//! One TSS per CPU (`config::MAX_CPUS`), each with its own descriptor: LTR marks a descriptor busy, so
//! two CPUs cannot load the same one, and a VM exit loads the host TR selector and base from the VMCS,
//! which on each CPU must name that CPU's own TSS. CPU n's TSS descriptor is at [`tss_selector`]`(n)`.

use core::ptr::addr_of;

use crate::config::MAX_CPUS;

pub const CODE_SELECTOR: u16 = 0x08;
pub const DATA_SELECTOR: u16 = 0x10;
pub const TSS_SELECTOR: u16 = 0x18;

/// The TSS descriptor of CPU `n` (16 bytes each, from [`TSS_SELECTOR`]).
pub const fn tss_selector(n: usize) -> u16 {
    TSS_SELECTOR + 16 * n as u16
}

#[repr(C, align(16))]
struct Gdt([u64; 3 + 2 * MAX_CPUS]);

#[repr(C, packed(4))]
struct Tss {
    _r0: u32,
    rsp: [u64; 3],
    _r1: u64,
    ist: [u64; 7],
    _r2: u64,
    _r3: u16,
    iomap_base: u16,
}

#[repr(C, align(16))]
struct Idt([[u64; 2]; 34]);

static mut GDT: Gdt = Gdt([0; 3 + 2 * MAX_CPUS]);
static mut TSS: [Tss; MAX_CPUS] = [const {
    Tss {
        _r0: 0,
        rsp: [0; 3],
        _r1: 0,
        ist: [0; 7],
        _r2: 0,
        _r3: 0,
        iomap_base: 104,
    }
}; MAX_CPUS];
static mut IDT: Idt = Idt([[0; 2]; 34]);

#[repr(C, packed)]
struct Pointer {
    limit: u16,
    base: u64,
}

extern "C" {
    static libvmm_isr_table: [u64; 34];
}

/// Loads the GDT with every CPU's TSS descriptor, reloads the segment registers and TR (CPU 0's TSS),
/// and loads the IDT. Called once, on the boot CPU, before anything else uses the tables.
pub fn init() {
    // SAFETY: single-threaded boot; the statics are written here once, then only read by the CPU.
    unsafe {
        let gdt = &mut *core::ptr::addr_of_mut!(GDT);
        gdt.0[1] = crate::x86::segment::CODE64_DESC;
        gdt.0[2] = crate::x86::segment::DATA_DESC;
        let limit = (core::mem::size_of::<Tss>() - 1) as u64;
        for n in 0..MAX_CPUS {
            let tss = tss_base_of(n);
            let i = 3 + 2 * n;
            gdt.0[i] =
                limit | ((tss & 0xFF_FFFF) << 16) | (0x89 << 40) | (((tss >> 24) & 0xFF) << 56);
            gdt.0[i + 1] = tss >> 32;
        }
        let ptr = Pointer {
            limit: (core::mem::size_of::<Gdt>() - 1) as u16,
            base: gdt as *const Gdt as u64,
        };
        core::arch::asm!(
            "lgdt [{ptr}]",
            "push {cs}",
            "lea {tmp}, [rip + 2f]",
            "push {tmp}",
            "retfq",
            "2:",
            "mov ds, {ds:x}",
            "mov es, {ds:x}",
            "mov ss, {ds:x}",
            "ltr {tr:x}",
            ptr = in(reg) &ptr,
            cs = in(reg) CODE_SELECTOR as u64,
            ds = in(reg) DATA_SELECTOR as u64,
            tr = in(reg) TSS_SELECTOR as u64,
            tmp = out(reg) _,
        );
        let idt = &mut *core::ptr::addr_of_mut!(IDT);
        for (v, gate) in idt.0.iter_mut().enumerate() {
            let h = libvmm_isr_table[v];
            gate[0] = (h & 0xFFFF)
                | ((CODE_SELECTOR as u64) << 16)
                | (0x8E << 40)
                | ((h >> 16) & 0xFFFF) << 48;
            gate[1] = h >> 32;
        }
        let ptr = Pointer {
            limit: (core::mem::size_of::<Idt>() - 1) as u16,
            base: idt as *const Idt as u64,
        };
        core::arch::asm!("lidt [{}]", in(reg) &ptr);
    }
}

/// The address of CPU `n`'s TSS (`n < MAX_CPUS`; clamped).
fn tss_base_of(n: usize) -> u64 {
    addr_of!(TSS) as u64 + (n.min(MAX_CPUS - 1) * core::mem::size_of::<Tss>()) as u64
}

// Host-state facts VMX needs (HOST_TR_BASE, HOST_GDTR_BASE, HOST_IDTR_BASE).
/// The base of the TSS whose descriptor is `tr` (this CPU's TR selector, from `str`).
#[cfg(feature = "vmx")]
pub fn tss_base(tr: u16) -> u64 {
    tss_base_of((tr.saturating_sub(TSS_SELECTOR) / 16) as usize)
}

#[cfg(feature = "vmx")]
pub fn gdt_base() -> u64 {
    addr_of!(GDT) as u64
}

#[cfg(feature = "vmx")]
pub fn idt_base() -> u64 {
    addr_of!(IDT) as u64
}

/// On AP `n` (1..MAX_CPUS): loads the GDT and IDT the boot CPU built ([`init`]), reloads the segment
/// registers, and loads TR with this CPU's own TSS (a VMX host TR must be a TSS, and each CPU's its own).
pub fn init_ap(n: usize) {
    let tr = tss_selector(n.min(MAX_CPUS - 1));
    let gdt = Pointer {
        limit: (core::mem::size_of::<Gdt>() - 1) as u16,
        base: addr_of!(GDT) as u64,
    };
    let idt = Pointer {
        limit: (core::mem::size_of::<Idt>() - 1) as u16,
        base: addr_of!(IDT) as u64,
    };
    // SAFETY: the boot CPU filled both tables in `init` before starting any AP and never writes them
    // again; loading them and the flat selectors changes nothing this CPU's code depends on. LTR marks
    // this CPU's own TSS descriptor busy: each AP index is brought up once, so it was not busy before.
    unsafe {
        core::arch::asm!(
            "lgdt [{gdt}]",
            "push {cs}",
            "lea {tmp}, [rip + 2f]",
            "push {tmp}",
            "retfq",
            "2:",
            "mov ds, {ds:x}",
            "mov es, {ds:x}",
            "mov ss, {ds:x}",
            "lidt [{idt}]",
            "ltr {tr:x}",
            gdt = in(reg) &gdt,
            idt = in(reg) &idt,
            cs = in(reg) CODE_SELECTOR as u64,
            ds = in(reg) DATA_SELECTOR as u64,
            tr = in(reg) tr as u64,
            tmp = out(reg) _,
        );
    }
}
