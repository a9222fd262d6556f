//! Control-register policy (x86): what a guest's MOV to CR0/CR4 (and CLTS, LMSW) and XSETBV are
//! answered, the same for SVM and VMX.
//!
//! Both backends intercept these writes (SVM: the CR0/CR4 write and XSETBV intercepts; VMX: CR0/CR4
//! guest/host masks covering every bit, and XSETBV, which always exits) and decode them into
//! [`Exit::CrWrite`](crate::exit::Exit) / [`Exit::Xsetbv`](crate::exit::Exit) with the guest's control
//! state. The rules are the architectural ones (Intel SDM Vol. 2 "MOV—Move to/from Control Registers"
//! and "XSETBV", Vol. 3 §2.5 "Control Registers"; AMD APM Vol. 2 §3.1 and Vol. 3 "MOV CRn", "XSETBV"),
//! with the reserved bits taken from what the guest's CPUID shows (so a feature libvmm hides is reserved
//! for the guest, whatever the host has): a write that breaks one is #GP(0) (XSETBV with CR4.OSXSAVE
//! clear is #UD), a valid write takes effect. Without this the CPU itself judged the values on SVM, and
//! QEMU's TCG lets a bad CR0/CR4 through until the next VMRUN refuses the whole guest.
//!
//! libvmm starts x86 guests in long mode, and guest SMP's APs in real mode (after INIT + SIPI) on their
//! way to long mode: writes outside long mode follow the legacy rules (entering long mode included); a
//! write that would leave long mode from compatibility mode (the one place the architecture allows
//! clearing CR0.PG with EFER.LMA set) stops the VM with the reason.
#![forbid(unsafe_code)]

use crate::exit::{Cr, CrState, Fault, Output, Reply};
use crate::vm::StopReason;
use crate::x86::msr::EFER_LMA;

pub use crate::x86::cr::{cr0, cr4, xcr0};

const GP: Reply = Reply::Inject(Fault::GeneralProtection(0));

/// The CR4 bits a guest may set: each one only where the guest's CPUID (`cpuid`, the guest's view)
/// shows its feature and the CPU can run a guest with it (`hw`). The same choice as KVM's
/// `__cr4_reserved_bits`; the bits of features libvmm does not virtualize (key locker, PKS, user
/// interrupts, LASS, LAM, FRED: none shown in the guest's CPUID) stay reserved.
pub fn cr4_allowed(cpuid: impl Fn(u32, u32) -> [u32; 4], hw: u64) -> u64 {
    let [_, _, c1, d1] = cpuid(1, 0);
    let [_, b7, c7, d7] = cpuid(7, 0);
    let has = |word: u32, bit: u32| word & (1 << bit) != 0;
    let mut ok = cr4::PCE; // RDPMC permission: architectural on every x86-64 CPU
    for (present, bits) in [
        (has(d1, 1), cr4::VME | cr4::PVI),
        (has(d1, 4), cr4::TSD),
        (has(d1, 2), cr4::DE),
        (has(d1, 3), cr4::PSE),
        (has(d1, 6), cr4::PAE),
        (has(d1, 7), cr4::MCE),
        (has(d1, 13), cr4::PGE),
        (has(d1, 24), cr4::OSFXSR),
        (has(d1, 25), cr4::OSXMMEXCPT),
        (has(c1, 5), cr4::VMXE),
        (has(c1, 6), cr4::SMXE),
        (has(c1, 17), cr4::PCIDE),
        (has(c1, 26), cr4::OSXSAVE),
        (has(b7, 0), cr4::FSGSBASE),
        (has(b7, 7), cr4::SMEP),
        (has(b7, 20), cr4::SMAP),
        (has(c7, 2), cr4::UMIP),
        (has(c7, 3), cr4::PKE),
        (has(c7, 16), cr4::LA57),
        (has(c7, 7) || has(d7, 20), cr4::CET),
    ] {
        if present {
            ok |= bits;
        }
    }
    ok & hw
}

/// The guest's answer to a write of `value` to `cr` (MOV to CR0/CR4, CLTS, LMSW). `cpuid` is the
/// guest's CPUID.
pub fn write(
    cr: Cr,
    value: u64,
    s: &CrState,
    cpuid: impl Fn(u32, u32) -> [u32; 4],
) -> Result<Reply, StopReason> {
    let long_mode = s.efer & EFER_LMA != 0;
    if !long_mode {
        return Ok(write_legacy(cr, value, s, cpuid));
    }
    match cr {
        Cr::Cr0 => {
            // Bits 63:32 are reserved: #GP. Reserved bits in 31:0 are ignored; ET is hardwired to 1.
            if value >> 32 != 0 {
                return Ok(GP);
            }
            let v = (value & cr0::DEFINED) | cr0::ET;
            if v & cr0::NW != 0 && v & cr0::CD == 0 {
                return Ok(GP);
            }
            if v & cr0::PG != 0 && v & cr0::PE == 0 {
                return Ok(GP);
            }
            if v & cr0::WP == 0 && s.cr4 & cr4::CET != 0 {
                return Ok(GP);
            }
            if v & cr0::PG == 0 {
                if s.cr4 & cr4::PCIDE != 0 || s.cs_l {
                    return Ok(GP);
                }
                return Err(StopReason::Unsupported(
                    "the guest left long mode (CR0.PG cleared in compatibility mode)",
                ));
            }
            Ok(Reply::Complete(Output::SetCr(Cr::Cr0, v)))
        }
        Cr::Cr4 => {
            let changed = value ^ s.cr4;
            if value & !cr4_allowed(cpuid, s.cr4_hw) != 0 {
                return Ok(GP);
            }
            if value & cr4::PAE == 0 {
                return Ok(GP); // clearing PAE in long mode
            }
            if changed & cr4::LA57 != 0 {
                return Ok(GP); // changing LA57 in long mode
            }
            if changed & value & cr4::PCIDE != 0 && s.cr3 & 0xFFF != 0 {
                return Ok(GP); // PCIDE 0 -> 1 needs CR3[11:0] = 0
            }
            if value & cr4::CET != 0 && s.cr0 & cr0::WP == 0 {
                return Ok(GP);
            }
            Ok(Reply::Complete(Output::SetCr(Cr::Cr4, value)))
        }
    }
}

/// A write outside long mode: an AP the guest started with INIT + SIPI (guest SMP) on its way from real
/// mode to long mode. The same reserved-bit rules; CR0.PG with EFER.LME needs CR4.PAE (SDM "Initializing
/// IA-32e Mode"), and then the backend sets EFER.LMA with it; CR4.PCIDE is long-mode only.
fn write_legacy(cr: Cr, value: u64, s: &CrState, cpuid: impl Fn(u32, u32) -> [u32; 4]) -> Reply {
    match cr {
        Cr::Cr0 => {
            if value >> 32 != 0 {
                return GP;
            }
            let v = (value & cr0::DEFINED) | cr0::ET;
            let bad = (v & cr0::NW != 0 && v & cr0::CD == 0)
                || (v & cr0::PG != 0 && v & cr0::PE == 0)
                || (v & cr0::PG != 0
                    && s.efer & crate::x86::msr::EFER_LME != 0
                    && s.cr4 & cr4::PAE == 0);
            if bad {
                GP
            } else {
                Reply::Complete(Output::SetCr(Cr::Cr0, v))
            }
        }
        Cr::Cr4 => {
            if value & !cr4_allowed(cpuid, s.cr4_hw) != 0 || value & cr4::PCIDE != 0 {
                return GP;
            }
            if value & cr4::CET != 0 && s.cr0 & cr0::WP == 0 {
                return GP;
            }
            Reply::Complete(Output::SetCr(Cr::Cr4, value))
        }
    }
}

/// The XCR0 values a guest may load: what the guest's CPUID leaf 0xD subleaf 0 offers (EDX:EAX), x87
/// always.
pub fn xcr0_supported(cpuid: impl Fn(u32, u32) -> [u32; 4]) -> u64 {
    let [a, _, _, d] = cpuid(0xD, 0);
    ((d as u64) << 32 | a as u64) | xcr0::X87
}

/// The guest's answer to XSETBV with ECX = `index`, EDX:EAX = `value` (SDM "XSETBV", KVM `__kvm_set_xcr`).
pub fn xsetbv(index: u32, value: u64, s: &CrState, cpuid: impl Fn(u32, u32) -> [u32; 4]) -> Reply {
    if s.cr4 & cr4::OSXSAVE == 0 {
        return Reply::Inject(Fault::InvalidOpcode);
    }
    if s.cpl != 0 || index != 0 {
        return GP;
    }
    let bad = value & !xcr0_supported(cpuid) != 0
        || value & xcr0::X87 == 0
        || (value & xcr0::AVX != 0 && value & xcr0::SSE == 0)
        || (value & xcr0::BNDREGS == 0) != (value & xcr0::BNDCSR == 0)
        || (value & xcr0::AVX512 != 0
            && (value & xcr0::AVX512 != xcr0::AVX512 || value & xcr0::AVX == 0))
        || (value & xcr0::AMX != 0 && value & xcr0::AMX != xcr0::AMX);
    if bad {
        GP
    } else {
        Reply::Complete(Output::SetXcr0(value))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::x86::msr::{EFER_LMA, EFER_LME};

    /// A guest CPUID with the usual features: VME..PGE, FXSR/SSE, PCID, XSAVE, FSGSBASE, SMEP, SMAP,
    /// UMIP; no PKU, LA57, CET, VMX, SMX. XCR0 may hold x87, SSE, AVX and AVX-512.
    fn guest(leaf: u32, _: u32) -> [u32; 4] {
        match leaf {
            1 => [
                0,
                0,
                (1 << 17) | (1 << 26),
                (1 << 1)
                    | (1 << 2)
                    | (1 << 3)
                    | (1 << 4)
                    | (1 << 6)
                    | (1 << 7)
                    | (1 << 13)
                    | (3 << 24),
            ],
            7 => [0, 1 | (1 << 7) | (1 << 20), 1 << 2, 0],
            0xD => [0xE7, 0, 0, 0],
            _ => [0; 4],
        }
    }

    fn state() -> CrState {
        CrState {
            cr0: 0x8001_0033,
            cr3: 0x20_0000,
            cr4: cr4::PAE,
            efer: EFER_LME | EFER_LMA,
            cs_l: true,
            cpl: 0,
            cr4_hw: u64::MAX,
        }
    }

    #[test]
    fn an_ap_enters_long_mode_from_real_mode() {
        let real = CrState {
            cr0: 0x6000_0010,
            cr3: 0,
            cr4: 0,
            efer: 0,
            cs_l: false,
            cpl: 0,
            cr4_hw: u64::MAX,
        };
        let w = |cr, v, s: &CrState| write(cr, v, s, guest).unwrap();
        // CR4.PAE, then CR0.PE | PG with EFER.LME set.
        assert_eq!(
            w(Cr::Cr4, cr4::PAE, &real),
            Reply::Complete(Output::SetCr(Cr::Cr4, cr4::PAE))
        );
        assert_eq!(w(Cr::Cr4, cr4::PCIDE, &real), GP);
        let lme = CrState {
            efer: EFER_LME,
            ..real
        };
        assert_eq!(w(Cr::Cr0, 0x8000_0001, &lme), GP, "PG with LME needs PAE");
        let ready = CrState {
            cr4: cr4::PAE,
            ..lme
        };
        assert_eq!(
            w(Cr::Cr0, 0x8000_0001, &ready),
            Reply::Complete(Output::SetCr(Cr::Cr0, 0x8000_0011))
        );
        assert_eq!(w(Cr::Cr0, 0x8000_0000, &ready), GP, "PG without PE");
        assert_eq!(w(Cr::Cr0, 1 << 32, &ready), GP);
    }

    fn cr0(v: u64) -> Reply {
        write(Cr::Cr0, v, &state(), guest).unwrap()
    }
    fn cr4w(v: u64) -> Reply {
        write(Cr::Cr4, v, &state(), guest).unwrap()
    }
    fn ok(cr: Cr, v: u64) -> Reply {
        Reply::Complete(Output::SetCr(cr, v))
    }

    #[test]
    fn valid_cr0_writes_take_effect_with_reserved_low_bits_ignored_and_et_set() {
        assert_eq!(cr0(0x8001_0033), ok(Cr::Cr0, 0x8001_0033));
        // CD alone, CD with NW, TS, AM, EM: all fine.
        assert_eq!(cr0(0xC001_0033), ok(Cr::Cr0, 0xC001_0033));
        assert_eq!(cr0(0xE001_003B), ok(Cr::Cr0, 0xE001_003B));
        // Reserved bits 28:19, 17, 15:6 and a clear ET: ignored / forced.
        assert_eq!(cr0(0x8FFA_FFE1), ok(Cr::Cr0, 0x8000_0031));
    }

    #[test]
    fn cr0_rules_are_gp() {
        assert_eq!(cr0(1 << 32 | 0x8001_0033), GP, "bits 63:32");
        assert_eq!(cr0(1 << 63 | 0x8001_0033), GP, "bit 63");
        assert_eq!(cr0(0xA001_0033), GP, "NW without CD");
        assert_eq!(cr0(0x8001_0032), GP, "PG without PE");
        assert_eq!(cr0(0x0001_0033), GP, "clearing PG in 64-bit mode");
    }

    #[test]
    fn clearing_pg_in_compatibility_mode_stops_unless_pcide_makes_it_gp() {
        let mut s = state();
        s.cs_l = false;
        assert!(matches!(
            write(Cr::Cr0, 0x11, &s, guest),
            Err(StopReason::Unsupported(w)) if w.contains("left long mode")
        ));
        s.cr4 |= cr4::PCIDE;
        assert_eq!(write(Cr::Cr0, 0x11, &s, guest), Ok(GP));
    }

    #[test]
    fn cr4_reserved_bits_follow_the_guests_cpuid() {
        let base = cr4::PAE;
        for bit in [63, 40, 32, 31, 25, 24, 23, 22, 19, 15, 14, 13, 12] {
            assert_eq!(cr4w(base | 1 << bit), GP, "bit {bit}");
        }
        for bits in [
            cr4::PGE,
            cr4::OSFXSR | cr4::OSXMMEXCPT,
            cr4::OSXSAVE,
            cr4::FSGSBASE,
            cr4::SMEP | cr4::SMAP,
            cr4::UMIP,
            cr4::PCIDE,
            cr4::VME | cr4::PVI | cr4::TSD | cr4::DE | cr4::PSE | cr4::MCE | cr4::PCE,
        ] {
            assert_eq!(cr4w(base | bits), ok(Cr::Cr4, base | bits), "{bits:#x}");
        }
        // A bit the guest's CPUID offers but the CPU cannot run a guest with (VMX fixed-1) is reserved.
        let mut s = state();
        s.cr4_hw = !cr4::UMIP;
        assert_eq!(write(Cr::Cr4, base | cr4::UMIP, &s, guest), Ok(GP));
        // Features the guest's CPUID shows make their bits valid.
        let more = |l, s| {
            let mut r = guest(l, s);
            if l == 7 {
                r[2] |= (1 << 3) | (1 << 16) | (1 << 7);
            }
            r
        };
        assert_eq!(
            write(Cr::Cr4, base | cr4::PKE | cr4::CET, &state(), more),
            Ok(ok(Cr::Cr4, base | cr4::PKE | cr4::CET))
        );
    }

    #[test]
    fn cr4_long_mode_pcide_la57_and_cet_rules() {
        assert_eq!(cr4w(0), GP, "clearing PAE in long mode");
        let la57 = |l, s| {
            let mut r = guest(l, s);
            if l == 7 {
                r[2] |= 1 << 16;
            }
            r
        };
        assert_eq!(
            write(Cr::Cr4, cr4::PAE | cr4::LA57, &state(), la57),
            Ok(GP),
            "changing LA57 in long mode"
        );
        let mut s = state();
        s.cr3 |= 0x5;
        assert_eq!(
            write(Cr::Cr4, cr4::PAE | cr4::PCIDE, &s, guest),
            Ok(GP),
            "PCIDE with CR3[11:0] != 0"
        );
        s.cr4 |= cr4::PCIDE;
        assert_eq!(
            write(Cr::Cr4, cr4::PAE | cr4::PCIDE, &s, guest),
            Ok(ok(Cr::Cr4, cr4::PAE | cr4::PCIDE)),
            "PCIDE already set: CR3 is a PCID now"
        );
        let cet = |l, s| {
            let mut r = guest(l, s);
            if l == 7 {
                r[3] |= 1 << 20;
            }
            r
        };
        let mut s = state();
        s.cr0 &= !cr0::WP;
        assert_eq!(write(Cr::Cr4, cr4::PAE | cr4::CET, &s, cet), Ok(GP));
        let mut s = state();
        s.cr4 |= cr4::CET;
        assert_eq!(
            write(Cr::Cr0, 0x8000_0033, &s, cet),
            Ok(GP),
            "WP off under CET"
        );
    }

    #[test]
    fn xsetbv_rules() {
        let mut s = state();
        assert_eq!(
            xsetbv(0, 3, &s, guest),
            Reply::Inject(Fault::InvalidOpcode),
            "OSXSAVE clear"
        );
        s.cr4 |= cr4::OSXSAVE;
        let set = |v| Reply::Complete(Output::SetXcr0(v));
        assert_eq!(xsetbv(0, 1, &s, guest), set(1));
        assert_eq!(xsetbv(0, 3, &s, guest), set(3));
        assert_eq!(xsetbv(0, 7, &s, guest), set(7));
        assert_eq!(xsetbv(0, 0xE7, &s, guest), set(0xE7));
        assert_eq!(xsetbv(0, 2, &s, guest), GP, "x87 clear");
        assert_eq!(xsetbv(0, 5, &s, guest), GP, "AVX without SSE");
        assert_eq!(xsetbv(0, 0x27, &s, guest), GP, "AVX-512 partly");
        assert_eq!(xsetbv(0, 0xE3, &s, guest), GP, "AVX-512 without AVX");
        assert_eq!(xsetbv(0, 0x1B, &s, guest), GP, "MPX not offered");
        assert_eq!(xsetbv(0, 1 << 9 | 3, &s, guest), GP, "PKRU not offered");
        assert_eq!(xsetbv(0, 1 << 63 | 3, &s, guest), GP, "reserved bit 63");
        assert_eq!(xsetbv(1, 3, &s, guest), GP, "XCR1 is not writable");
        assert_eq!(xsetbv(0x8000_0000, 3, &s, guest), GP, "no such XCR");
        let mpx_amx = |l, _| {
            if l == 0xD {
                [0x6_001F, 0, 0, 0]
            } else {
                [0; 4]
            }
        };
        assert_eq!(xsetbv(0, 0x0B, &s, mpx_amx), GP, "BNDREGS without BNDCSR");
        assert_eq!(xsetbv(0, 0x1B, &s, mpx_amx), set(0x1B));
        assert_eq!(
            xsetbv(0, 0x2_0003, &s, mpx_amx),
            GP,
            "TILECFG without TILEDATA"
        );
        assert_eq!(xsetbv(0, 0x6_0003, &s, mpx_amx), set(0x6_0003));
        s.cpl = 3;
        assert_eq!(xsetbv(0, 3, &s, guest), GP, "CPL 3");
    }
}
