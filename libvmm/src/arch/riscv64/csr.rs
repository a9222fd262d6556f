//! Safe wrappers over the CSR instructions the VMM uses. CSRs are named by number (the assembler does not
//! know the H-extension names without `.option arch, +h`); the numbers are the privileged spec's.
//!
//! Reading or writing these CSRs in HS-mode has no memory effects Rust could observe; what the values do
//! to the guest is the backend's business, so the wrappers are safe.
// Wrappers for every CSR of the H-extension set-up, read and write, whether or not the VMM needs both
// directions today.
#![allow(dead_code)]

macro_rules! csr_rw {
    ($($read:ident $write:ident $num:literal;)*) => {$(
        #[inline(always)]
        pub fn $read() -> u64 {
            let v: u64;
            // SAFETY: a CSR read in HS-mode; no memory is touched.
            unsafe { core::arch::asm!(concat!("csrr {0}, ", $num), out(reg) v, options(nomem, nostack)) };
            v
        }
        #[inline(always)]
        pub fn $write(v: u64) {
            // SAFETY: a CSR write in HS-mode of a register that only affects guest execution, traps or
            // the timer; no memory Rust knows about changes.
            unsafe { core::arch::asm!(concat!("csrw ", $num, ", {0}"), in(reg) v, options(nomem, nostack)) };
        }
    )*};
}

csr_rw! {
    sstatus set_sstatus "0x100";
    sie set_sie "0x104";
    sepc set_sepc "0x141";
    scause set_scause "0x142";
    stval set_stval "0x143";
    sip set_sip "0x144";
    vsstatus set_vsstatus "0x200";
    vstvec set_vstvec "0x205";
    vsepc set_vsepc "0x241";
    vscause set_vscause "0x242";
    vstval set_vstval "0x243";
    vsatp set_vsatp "0x280";
    vstimecmp set_vstimecmp "0x24D";
    hstatus set_hstatus "0x600";
    hedeleg set_hedeleg "0x602";
    hideleg set_hideleg "0x603";
    hie set_hie "0x604";
    htimedelta set_htimedelta "0x605";
    hcounteren set_hcounteren "0x606";
    henvcfg set_henvcfg "0x60A";
    hstateen0 set_hstateen0 "0x60C";
    htval set_htval "0x643";
    htinst set_htinst "0x64A";
    hvip set_hvip "0x645";
    hgatp set_hgatp "0x680";
}

/// The `time` CSR.
#[inline(always)]
pub fn time() -> u64 {
    let v: u64;
    // SAFETY: reads the time counter; no memory is touched.
    unsafe { core::arch::asm!("rdtime {0}", out(reg) v, options(nomem, nostack)) };
    v
}

/// HFENCE.GVMA for all guest-physical addresses and all VMIDs.
#[inline(always)]
pub fn hfence_gvma_all() {
    // SAFETY: a TLB fence for G-stage translations; it orders the table writes before it against later
    // guest accesses and touches no memory itself.
    unsafe {
        core::arch::asm!(
            ".option push",
            ".option arch, +h",
            "hfence.gvma zero, zero",
            ".option pop",
            options(nostack)
        )
    };
}

/// Reads the Zkr `seed` CSR (0x015) with the write access the extension requires (`csrrw rd, seed,
/// x0`): the entropy source's status (OPST, bits 31:30) and 16 bits of entropy when OPST is ES16.
/// Only called after a VS-mode access to `seed` trapped as a virtual instruction, which the hart does
/// only when it has Zkr and M-mode set `mseccfg.SSEED` (so HS-mode may access it).
#[inline(always)]
pub fn seed() -> u64 {
    let v: u64;
    // SAFETY: reads (and polls) the entropy source; no memory is touched.
    unsafe { core::arch::asm!("csrrw {0}, 0x015, zero", out(reg) v, options(nomem, nostack)) };
    v
}

/// HFENCE.VVMA for all guest-virtual addresses and ASIDs of the current VMID (hgatp's): what a guest's
/// remote `sfence.vma` asks of a hart that runs it.
#[inline(always)]
pub fn hfence_vvma_all() {
    // SAFETY: a TLB fence for VS-stage translations; it orders the guest's page-table writes (seen by
    // the requesting hart before its SBI call) against later guest accesses; no memory is touched.
    unsafe {
        core::arch::asm!(
            ".option push",
            ".option arch, +h",
            "hfence.vvma zero, zero",
            ".option pop",
            options(nostack)
        )
    };
}

/// FENCE.I: this hart's instruction fetches see earlier stores (a guest's remote `fence.i`).
#[inline(always)]
pub fn fence_i() {
    // SAFETY: an instruction-fetch fence; it changes no memory.
    unsafe { core::arch::asm!("fence.i", options(nostack)) };
}

/// Clears bits of `sip` (the pending supervisor software interrupt, SSIP, is the one writable bit).
#[inline(always)]
pub fn clear_sip(bits: u64) {
    // SAFETY: a CSR bit clear in HS-mode; no memory is touched.
    unsafe { core::arch::asm!("csrc sip, {0}", in(reg) bits, options(nomem, nostack)) };
}

/// Waits for an interrupt (with sstatus.SIE = 0 it only wakes the hart).
#[inline(always)]
pub fn wfi() {
    // SAFETY: WFI only stalls the hart.
    unsafe { core::arch::asm!("wfi", options(nomem, nostack)) };
}
