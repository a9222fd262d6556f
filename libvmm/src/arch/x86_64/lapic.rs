//! The local APIC, used for three things: a one-shot timer (periodic where its rate against the TSC
//! cannot be measured) that forces VM exits, so the VMM regains the CPU from a guest that never exits on
//! its own and can enforce a time limit (`libvmm.timeout_ms=`); the same timer makes the guest's virtual
//! x2APIC timer be seen to expire (and a halted guest's sleep end) on time; and the ICR, through which the boot CPU sends INIT and STARTUP IPIs to start the other CPUs.
//! Registers are MMIO at the base in IA32_APIC_BASE, reached through the `volatile` crate, or MSRs
//! when the firmware left the APIC in x2APIC mode (IA32_APIC_BASE.EXTD).
//! The legacy PICs are masked first: nothing but this timer may interrupt the VMM.

use core::ptr::NonNull;
use volatile::VolatilePtr;

use super::cpu::{cpuid, outb, rdmsr, wrmsr};

use crate::x86::msr::{APIC_BASE_ENABLE, IA32_APIC_BASE as MSR_APIC_BASE};
const REG_EOI: usize = 0xB0;
const REG_SVR: usize = 0xF0;
const REG_LVT_TIMER: usize = 0x320;
const REG_LVT_LINT0: usize = 0x350;
const REG_LVT_LINT1: usize = 0x360;
const REG_TIMER_INIT: usize = 0x380;
const REG_TIMER_CURRENT: usize = 0x390;
const REG_TIMER_DIVIDE: usize = 0x3E0;
const LVT_MASKED: u32 = 1 << 16;
const LVT_PERIODIC: u32 = 1 << 17;

/// The vector of the timer interrupt (the IDT stub for it only acknowledges it).
pub const TIMER_VECTOR: u8 = 32;

fn base() -> u64 {
    rdmsr(MSR_APIC_BASE) & 0x000F_FFFF_FFFF_F000
}

fn reg(offset: usize) -> VolatilePtr<'static, u32> {
    let addr = base() as usize + offset;
    // SAFETY: the xAPIC register page is identity-mapped by the boot tables (below 4 GiB), each register
    // is an aligned u32, and only the VMM touches it (the guest cannot reach it through nested paging).
    unsafe { VolatilePtr::new(NonNull::new_unchecked(addr as *mut u32)) }
}

const REG_ID: usize = 0x20;
const REG_ICR_LOW: usize = 0x300;
const REG_ICR_HIGH: usize = 0x310;
const ICR_PENDING: u32 = 1 << 12;
const ICR_ASSERT: u32 = 1 << 14;
const ICR_INIT: u32 = 0b101 << 8;
const ICR_STARTUP: u32 = 0b110 << 8;
/// IA32_APIC_BASE.EXTD: the APIC is in x2APIC mode.
const APIC_BASE_EXTD: u64 = 1 << 10;
const MSR_X2APIC_ID: u32 = 0x802;
const MSR_X2APIC_ICR: u32 = 0x830;

fn x2apic_mode() -> bool {
    rdmsr(MSR_APIC_BASE) & APIC_BASE_EXTD != 0
}

/// This CPU's APIC id.
pub fn id() -> u32 {
    if x2apic_mode() {
        rdmsr(MSR_X2APIC_ID) as u32
    } else {
        reg(REG_ID).read() >> 24
    }
}

/// Sends one IPI (`low` = the ICR's low word) to APIC id `dest`; waits, bounded, until an xAPIC has
/// sent it. `false` when the id cannot be addressed in this mode or the ICR stayed busy.
fn send_ipi(dest: u32, low: u32) -> bool {
    if x2apic_mode() {
        wrmsr(MSR_X2APIC_ICR, ((dest as u64) << 32) | low as u64);
        return true;
    }
    if dest > 0xFF {
        return false;
    }
    reg(REG_ICR_HIGH).write(dest << 24);
    reg(REG_ICR_LOW).write(low);
    (0..1_000_000).any(|_| reg(REG_ICR_LOW).read() & ICR_PENDING == 0)
}

/// INIT (level assert) to `dest`: the CPU resets into wait-for-SIPI.
pub fn send_init(dest: u32) -> bool {
    send_ipi(dest, ICR_INIT | ICR_ASSERT)
}

/// STARTUP with `vector` to `dest`: the CPU starts in real mode at `vector << 12`.
pub fn send_startup(dest: u32, vector: u8) -> bool {
    send_ipi(dest, ICR_STARTUP | ICR_ASSERT | vector as u32)
}

/// The vector of the kick one CPU sends another (guest SMP): its stub, like the timer's, only
/// acknowledges it; the VM exit or the wake-up from HLT it causes is the point.
pub const KICK_VECTOR: u8 = 33;
const ICR_FIXED: u32 = 0;

/// Software-enables this CPU's APIC (SVR bit 8, spurious vector 0xFF) so that it accepts fixed IPIs
/// (after INIT an AP's APIC is software-disabled); `false` when the CPU has no APIC.
pub fn enable() -> bool {
    if cpuid(1, 0)[3] & (1 << 9) == 0 {
        return false;
    }
    wrmsr(MSR_APIC_BASE, rdmsr(MSR_APIC_BASE) | APIC_BASE_ENABLE);
    if x2apic_mode() {
        wrmsr(0x80F, 0x1FF);
    } else {
        reg(REG_SVR).write(0x1FF);
    }
    true
}

/// Sends the kick ([`KICK_VECTOR`], fixed, physical destination) to APIC id `dest`.
pub fn send_kick(dest: u32) -> bool {
    send_ipi(dest, ICR_FIXED | ICR_ASSERT | KICK_VECTOR as u32)
}

/// Masks both 8259 PICs (all IRQ lines).
pub fn mask_legacy_pics() {
    outb(0x21, 0xFF);
    outb(0xA1, 0xFF);
}

/// Starts a periodic timer interrupt on vector [`TIMER_VECTOR`]; `false` when the CPU has no APIC.
pub fn start_periodic_timer(initial_count: u32) -> bool {
    if cpuid(1, 0)[3] & (1 << 9) == 0 {
        return false;
    }
    wrmsr(MSR_APIC_BASE, rdmsr(MSR_APIC_BASE) | APIC_BASE_ENABLE);
    reg(REG_SVR).write(0x1FF); // software enable, spurious vector 0xFF
    reg(REG_LVT_LINT0).write(LVT_MASKED);
    reg(REG_LVT_LINT1).write(LVT_MASKED);
    reg(REG_TIMER_DIVIDE).write(0x3); // divide by 16
    reg(REG_LVT_TIMER).write(LVT_PERIODIC | TIMER_VECTOR as u32);
    reg(REG_TIMER_INIT).write(initial_count);
    true
}

/// Starts a one-shot timer interrupt on vector [`TIMER_VECTOR`] after `count` ticks of the APIC timer
/// clock divided by 16 (the divide [`start_periodic_timer`] uses); `false` when the CPU has no APIC.
pub fn start_one_shot(count: u32) -> bool {
    if cpuid(1, 0)[3] & (1 << 9) == 0 {
        return false;
    }
    wrmsr(MSR_APIC_BASE, rdmsr(MSR_APIC_BASE) | APIC_BASE_ENABLE);
    reg(REG_SVR).write(0x1FF);
    reg(REG_LVT_LINT0).write(LVT_MASKED);
    reg(REG_LVT_LINT1).write(LVT_MASKED);
    reg(REG_TIMER_DIVIDE).write(0x3);
    reg(REG_LVT_TIMER).write(TIMER_VECTOR as u32);
    reg(REG_TIMER_INIT).write(count);
    true
}

/// The timer's current count (0 once a one-shot has fired or the timer is stopped).
pub fn current_count() -> u32 {
    reg(REG_TIMER_CURRENT).read()
}

/// Stops the timer (masks its LVT entry).
pub fn stop_timer() {
    reg(REG_LVT_TIMER).write(LVT_MASKED | TIMER_VECTOR as u32);
    reg(REG_TIMER_INIT).write(0);
}

/// Called from the interrupt stub: acknowledges the interrupt.
#[no_mangle]
extern "C" fn libvmm_lapic_eoi() {
    reg(REG_EOI).write(0);
}
