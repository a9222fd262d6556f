//! The VMM's own GDT (code, data, 64-bit TSS) and IDT. VMX needs a host TR (a TSS) and both vendors
//! benefit from exception handlers that report a VMM fault instead of triple-faulting silently.

use core::ptr::addr_of;

pub const CODE_SELECTOR: u16 = 0x08;
pub const DATA_SELECTOR: u16 = 0x10;
pub const TSS_SELECTOR: u16 = 0x18;

#[repr(C, align(16))]
struct Gdt([u64; 5]);

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

static mut GDT: Gdt = Gdt([0; 5]);
static mut TSS: Tss = Tss {
    _r0: 0,
    rsp: [0; 3],
    _r1: 0,
    ist: [0; 7],
    _r2: 0,
    _r3: 0,
    iomap_base: 104,
};
static mut IDT: Idt = Idt([[0; 2]; 34]);

#[repr(C, packed)]
struct Pointer {
    limit: u16,
    base: u64,
}

extern "C" {
    static libvmm_isr_table: [u64; 34];
}

/// Loads the GDT with a TSS, reloads the segment registers and TR, and loads the IDT. Called once, on
/// the boot CPU, before anything else uses the tables.
pub fn init() {
    // SAFETY: single-threaded boot; the statics are written here once, then only read by the CPU.
    unsafe {
        let tss = addr_of!(TSS) as u64;
        let gdt = &mut *core::ptr::addr_of_mut!(GDT);
        gdt.0[1] = crate::x86::segment::CODE64_DESC;
        gdt.0[2] = crate::x86::segment::DATA_DESC;
        let limit = (core::mem::size_of::<Tss>() - 1) as u64;
        gdt.0[3] = limit | ((tss & 0xFF_FFFF) << 16) | (0x89 << 40) | (((tss >> 24) & 0xFF) << 56);
        gdt.0[4] = tss >> 32;
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

// Host-state facts VMX needs (HOST_TR_BASE, HOST_GDTR_BASE, HOST_IDTR_BASE).
#[cfg(feature = "vmx")]
pub fn tss_base() -> u64 {
    addr_of!(TSS) as u64
}

#[cfg(feature = "vmx")]
pub fn gdt_base() -> u64 {
    addr_of!(GDT) as u64
}

#[cfg(feature = "vmx")]
pub fn idt_base() -> u64 {
    addr_of!(IDT) as u64
}

/// On an AP: loads the GDT and IDT the boot CPU built ([`init`]) and reloads the segment registers.
/// TR is not loaded: the one TSS is the boot CPU's (busy); an AP that runs a guest on VMX will need a
/// TSS of its own (guest SMP, not yet).
pub fn init_ap() {
    let gdt = Pointer {
        limit: (core::mem::size_of::<Gdt>() - 1) as u16,
        base: addr_of!(GDT) as u64,
    };
    let idt = Pointer {
        limit: (core::mem::size_of::<Idt>() - 1) as u16,
        base: addr_of!(IDT) as u64,
    };
    // SAFETY: the boot CPU filled both tables in `init` before starting any AP and never writes them
    // again; loading them and the flat selectors changes nothing this CPU's code depends on.
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
            gdt = in(reg) &gdt,
            idt = in(reg) &idt,
            cs = in(reg) CODE_SELECTOR as u64,
            ds = in(reg) DATA_SELECTOR as u64,
            tmp = out(reg) _,
        );
    }
}
