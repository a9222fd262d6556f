//! The virtual PMU of VMX guests: an Intel architectural PMU (version 2) whose counters count exactly
//! what libvmm can see, the instructions and branches its instruction emulator retires, the way KVM's
//! `kvm_pmu_trigger_event` counts emulated instructions into a guest's counters.
//!
//! **What the guest is shown** (CPUID 0xA): version 2; [`GP_COUNTERS`] general-purpose counters and one
//! fixed counter (instructions retired), all [`COUNTER_WIDTH`] bits wide; an event-availability vector
//! of [`EVENT_MASK_LEN`] events (EAX[31:24]) whose EBX bits, held as one 32-bit value, mark every
//! architectural event unavailable except instructions retired (event 1, 0xC0/0x00) and branch
//! instructions retired (event 5, 0xC4/0x00): those are the two libvmm counts exactly. A counter
//! programmed with an unavailable event stays at zero.
//!
//! **MSRs**: IA32_PERFEVTSELx, IA32_PMCx (32-bit writes sign-extended, as hardware does) and their
//! full-width aliases IA32_A_PMCx (PERF_CAPABILITIES.FW_WRITE), IA32_FIXED_CTR0, IA32_FIXED_CTR_CTRL,
//! IA32_PERF_GLOBAL_CTRL / STATUS / OVF_CTRL, each with KVM's reserved-bit masks (a reserved bit set is
//! #GP); GLOBAL_STATUS is read-only (a write is #GP, as on a version-2 PMU). A counter that wraps sets its
//! overflow bit in GLOBAL_STATUS; there is no PMI (libvmm injects no interrupts into x86 guests yet).
//!
//! **IA32_PERF_CAPABILITIES** (0x345, shown with CPUID.1:ECX.PDCM): the host's immutable bits (LBR
//! format, PEBS trap, PEBS arch-regs, PEBS record format, PEBS baseline, PEBS timing info (bit 17)) as
//! the host has them, plus FW_WRITE. A guest write that changes an immutable bit, or sets a bit the
//! guest's PMU does not have, is #GP; only FW_WRITE may be toggled (KVM's "fungible" bits).
//!
//! **Errata**: the Intel Atom over-count errata KVM's selftests account for (`get_pmu_errata()`), as a
//! table by CPU model ([`errata`]). They concern hardware counts; libvmm's counts are of emulated
//! instructions and are exact, but on a CPU whose hardware PMU a VMM virtualizes the counts would add the
//! hardware's, so the guest is told the host model's errata in hypervisor leaf 0x4000_0002 (EAX bit 0:
//! instructions retired may over-count; bit 1: branches retired may over-count), and a test uses `>=`
//! where they apply, as KVM's selftests do. None of the emulators here has a hardware PMU.
//!
//! **SVM guests** are shown no PMU: CPUID 0xA is zero (it is Intel's leaf), 0x8000_0001 ECX.PerfCtrExtCore
//! is cleared and the AMD counter MSRs are #GP (the default-deny MSR policy). Documented choice: the
//! emulator's retirements are counted only where a guest can read them.
#![forbid(unsafe_code)]
// Unused where no x86 guest runs (RISC-V; the TDX image stops before running one).
#![cfg_attr(
    any(not(target_arch = "x86_64"), all(target_os = "none", feature = "tdx")),
    allow(dead_code)
)]

use crate::config::PMU_GP_COUNTERS;
use crate::x86::msr::{
    IA32_A_PMC0, IA32_FIXED_CTR0, IA32_FIXED_CTR_CTRL, IA32_PERFEVTSEL0, IA32_PERF_CAPABILITIES,
    IA32_PERF_GLOBAL_CTRL, IA32_PERF_GLOBAL_OVF_CTRL, IA32_PERF_GLOBAL_STATUS, IA32_PMC0,
};

/// Architectural PMU version shown to the guest.
pub const VERSION: u32 = 2;
/// General-purpose counters.
pub const GP_COUNTERS: usize = PMU_GP_COUNTERS;
/// Fixed counters: fixed counter 0, instructions retired.
pub const FIXED_COUNTERS: usize = 1;
/// Bit width of every counter.
pub const COUNTER_WIDTH: u32 = 48;
/// Length of the EBX event-availability vector (EAX[31:24]): events 0..=7.
pub const EVENT_MASK_LEN: u32 = 8;
/// EBX: 1 = event not available. Available: 1 (instructions retired) and 5 (branches retired).
pub const UNAVAILABLE_EVENTS: u32 = ((1u32 << EVENT_MASK_LEN) - 1) & !((1 << 1) | (1 << 5));

/// (event select, unit mask) of the two counted events.
pub const EVENT_INSTRUCTIONS: (u8, u8) = (0xC0, 0x00);
pub const EVENT_BRANCHES: (u8, u8) = (0xC4, 0x00);

/// Event-select bits.
pub mod evtsel {
    pub const USR: u64 = 1 << 16;
    pub const OS: u64 = 1 << 17;
    pub const EN: u64 = 1 << 22;
    /// Reserved on a version-2 PMU (KVM's `reserved_bits`): bits 63:32 and AnyThread (21).
    pub const RESERVED: u64 = 0xFFFF_FFFF_0020_0000;
}

/// PERF_CAPABILITIES bits.
pub mod caps {
    pub const LBR_FMT: u64 = 0x3F;
    pub const PEBS_TRAP: u64 = 1 << 6;
    pub const PEBS_ARCH_REG: u64 = 1 << 7;
    pub const PEBS_FORMAT: u64 = 0xF00;
    pub const FW_WRITE: u64 = 1 << 13;
    pub const PEBS_BASELINE: u64 = 1 << 14;
    pub const PEBS_TIMING_INFO: u64 = 1 << 17;
    /// What KVM's `vmx_pmu_caps_test` treats as immutable.
    pub const IMMUTABLE: u64 =
        LBR_FMT | PEBS_TRAP | PEBS_ARCH_REG | PEBS_FORMAT | PEBS_BASELINE | PEBS_TIMING_INFO;
}

const WIDTH_MASK: u64 = (1 << COUNTER_WIDTH) - 1;
const GP_BITS: u64 = (1 << GP_COUNTERS) - 1;
const FIXED_BITS: u64 = ((1 << FIXED_COUNTERS) - 1) << 32;
/// Reserved bits of GLOBAL_CTRL.
pub const GLOBAL_CTRL_RESERVED: u64 = !(GP_BITS | FIXED_BITS);
/// Reserved bits of GLOBAL_OVF_CTRL: GLOBAL_CTRL's, but OvfBuf (62) and CondChgd (63) (KVM).
pub const GLOBAL_OVF_RESERVED: u64 = GLOBAL_CTRL_RESERVED & !((1 << 62) | (1 << 63));
/// Reserved bits of FIXED_CTR_CTRL: all but OS, USR and PMI (bits 0, 1, 3) of each fixed counter.
pub const FIXED_CTRL_RESERVED: u64 = !0xB;

/// CPUID leaf 0xA as the guest sees it.
pub const fn cpuid_0a() -> [u32; 4] {
    [
        VERSION | (GP_COUNTERS as u32) << 8 | COUNTER_WIDTH << 16 | EVENT_MASK_LEN << 24,
        UNAVAILABLE_EVENTS,
        0,
        FIXED_COUNTERS as u32 | COUNTER_WIDTH << 5,
    ]
}

/// Over-count errata of a CPU model (KVM selftests `lib/x86/pmu.c`, `get_pmu_errata()`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Errata {
    pub instructions_overcount: bool,
    pub branches_overcount: bool,
}

impl Errata {
    /// As hypervisor CPUID leaf 0x4000_0002 EAX carries it.
    pub const fn bits(self) -> u32 {
        self.instructions_overcount as u32 | (self.branches_overcount as u32) << 1
    }
}

/// The errata table: Intel family 6 model -> (instructions, branches) over-count.
const ERRATA: [(u32, bool, bool); 5] = [
    (0xDD, true, false), // Clearwater Forest
    (0xAF, true, true),  // Sierra Forest
    (0x4D, true, true),  // Avaton / Rangely
    (0x5F, true, true),  // Denverton
    (0x86, true, true),  // Jacobsville
];

/// The errata of the CPU whose CPUID leaf 0 and leaf 1 EAX are given. Non-Intel or non-family-6 CPUs
/// have none.
pub fn errata(leaf0: [u32; 4], leaf1_eax: u32) -> Errata {
    let intel = leaf0[1] == u32::from_le_bytes(*b"Genu")
        && leaf0[3] == u32::from_le_bytes(*b"ineI")
        && leaf0[2] == u32::from_le_bytes(*b"ntel");
    let family = (leaf1_eax >> 8) & 0xF;
    if !intel || family != 6 {
        return Errata::default();
    }
    let model = ((leaf1_eax >> 4) & 0xF) | ((leaf1_eax >> 12) & 0xF0);
    ERRATA
        .iter()
        .find(|e| e.0 == model)
        .map(|&(_, i, b)| Errata {
            instructions_overcount: i,
            branches_overcount: b,
        })
        .unwrap_or_default()
}

/// Why a PMU MSR access is refused: #GP(0) for the guest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Gp;

/// The state of one vCPU's virtual PMU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pmu {
    /// The PMU is shown to the guest (VMX); otherwise every access is `None` (the MSR policy's #GP).
    pub enabled: bool,
    evtsel: [u64; GP_COUNTERS],
    pmc: [u64; GP_COUNTERS],
    fixed: [u64; FIXED_COUNTERS],
    fixed_ctrl: u64,
    global_ctrl: u64,
    global_status: u64,
    perf_caps: u64,
}

impl Default for Pmu {
    fn default() -> Self {
        Self::new(false, 0)
    }
}

impl Pmu {
    /// A PMU at reset. `host_caps`: the host's IA32_PERF_CAPABILITIES (0 when CPUID.1:ECX.PDCM is
    /// clear); the guest gets its immutable bits and FW_WRITE.
    pub const fn new(enabled: bool, host_caps: u64) -> Self {
        Pmu {
            enabled,
            evtsel: [0; GP_COUNTERS],
            pmc: [0; GP_COUNTERS],
            fixed: [0; FIXED_COUNTERS],
            fixed_ctrl: 0,
            // At reset GLOBAL_CTRL enables every GP counter (SDM), so a guest that only programs an
            // event select counts.
            global_ctrl: GP_BITS,
            global_status: 0,
            perf_caps: (host_caps & caps::IMMUTABLE) | caps::FW_WRITE,
        }
    }

    /// The guest's PERF_CAPABILITIES.
    #[cfg(test)]
    pub const fn perf_capabilities(&self) -> u64 {
        self.perf_caps
    }

    fn gp_index(msr: u32, base: u32) -> Option<usize> {
        let i = msr.checked_sub(base)? as usize;
        (i < GP_COUNTERS).then_some(i)
    }

    /// RDMSR: `None` when `msr` is not a PMU MSR of this guest (the MSR policy decides), else the value
    /// or #GP.
    pub fn read(&self, msr: u32) -> Option<Result<u64, Gp>> {
        if !self.enabled {
            return None;
        }
        Some(Ok(match msr {
            IA32_PERF_CAPABILITIES => self.perf_caps,
            IA32_FIXED_CTR_CTRL => self.fixed_ctrl,
            IA32_PERF_GLOBAL_CTRL => self.global_ctrl,
            IA32_PERF_GLOBAL_STATUS => self.global_status,
            IA32_PERF_GLOBAL_OVF_CTRL => 0,
            _ => {
                if let Some(i) = Self::gp_index(msr, IA32_PERFEVTSEL0) {
                    self.evtsel[i]
                } else if let Some(i) = Self::gp_index(msr, IA32_PMC0) {
                    self.pmc[i]
                } else if let Some(i) = Self::gp_index(msr, IA32_A_PMC0) {
                    if self.perf_caps & caps::FW_WRITE == 0 {
                        return Some(Err(Gp));
                    }
                    self.pmc[i]
                } else if let Some(i) = msr
                    .checked_sub(IA32_FIXED_CTR0)
                    .filter(|&i| (i as usize) < FIXED_COUNTERS)
                {
                    self.fixed[i as usize]
                } else {
                    return None;
                }
            }
        }))
    }

    /// WRMSR: `None` when `msr` is not a PMU MSR of this guest, else done or #GP.
    pub fn write(&mut self, msr: u32, value: u64) -> Option<Result<(), Gp>> {
        if !self.enabled {
            return None;
        }
        let ok = |c: bool| if c { Ok(()) } else { Err(Gp) };
        Some(match msr {
            IA32_PERF_CAPABILITIES => {
                let changed = value ^ self.perf_caps;
                let r = ok(changed & !caps::FW_WRITE == 0);
                if r.is_ok() {
                    self.perf_caps = value;
                }
                r
            }
            IA32_FIXED_CTR_CTRL => ok(value & FIXED_CTRL_RESERVED == 0).map(|_| {
                self.fixed_ctrl = value;
            }),
            IA32_PERF_GLOBAL_CTRL => ok(value & GLOBAL_CTRL_RESERVED == 0).map(|_| {
                self.global_ctrl = value;
            }),
            IA32_PERF_GLOBAL_STATUS => Err(Gp),
            IA32_PERF_GLOBAL_OVF_CTRL => ok(value & GLOBAL_OVF_RESERVED == 0).map(|_| {
                self.global_status &= !value;
            }),
            _ => {
                if let Some(i) = Self::gp_index(msr, IA32_PERFEVTSEL0) {
                    ok(value & evtsel::RESERVED == 0).map(|_| self.evtsel[i] = value)
                } else if let Some(i) = Self::gp_index(msr, IA32_PMC0) {
                    // A legacy write takes bits 31:0, sign-extended to the counter's width.
                    self.pmc[i] = (value as i32 as i64 as u64) & WIDTH_MASK;
                    Ok(())
                } else if let Some(i) = Self::gp_index(msr, IA32_A_PMC0) {
                    ok(self.perf_caps & caps::FW_WRITE != 0 && value & !WIDTH_MASK == 0)
                        .map(|_| self.pmc[i] = value)
                } else if let Some(i) = msr
                    .checked_sub(IA32_FIXED_CTR0)
                    .filter(|&i| (i as usize) < FIXED_COUNTERS)
                {
                    ok(value & !WIDTH_MASK == 0).map(|_| self.fixed[i as usize] = value)
                } else {
                    return None;
                }
            }
        })
    }

    /// Counts one retired instruction (and branch) at privilege level `cpl` into every counter
    /// programmed for it: enabled globally and locally, the event matching, the USR/OS filter passing.
    pub fn retire(&mut self, instruction: bool, branch: bool, cpl: u8) {
        if !self.enabled || !instruction {
            return;
        }
        let (os, usr) = (cpl == 0, cpl != 0);
        for i in 0..GP_COUNTERS {
            let s = self.evtsel[i];
            if s & evtsel::EN == 0 || self.global_ctrl & (1 << i) == 0 {
                continue;
            }
            if !((os && s & evtsel::OS != 0) || (usr && s & evtsel::USR != 0)) {
                continue;
            }
            let ev = (s as u8, (s >> 8) as u8);
            if ev == EVENT_INSTRUCTIONS || (branch && ev == EVENT_BRANCHES) {
                self.pmc[i] = (self.pmc[i] + 1) & WIDTH_MASK;
                if self.pmc[i] == 0 {
                    self.global_status |= 1 << i;
                }
            }
        }
        for i in 0..FIXED_COUNTERS {
            let ctl = self.fixed_ctrl >> (4 * i);
            if self.global_ctrl & (1 << (32 + i)) == 0
                || !((os && ctl & 1 != 0) || (usr && ctl & 2 != 0))
            {
                continue;
            }
            self.fixed[i] = (self.fixed[i] + 1) & WIDTH_MASK;
            if self.fixed[i] == 0 {
                self.global_status |= 1 << (32 + i);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pmu() -> Pmu {
        Pmu::new(
            true,
            caps::PEBS_TIMING_INFO | caps::PEBS_FORMAT & 0x400 | 0x1F,
        )
    }

    #[test]
    fn cpuid_0a_describes_the_counters_and_the_32_bit_unavailable_mask() {
        let [a, b, c, d] = cpuid_0a();
        assert_eq!(a & 0xFF, 2);
        assert_eq!((a >> 8) & 0xFF, GP_COUNTERS as u32);
        assert_eq!((a >> 16) & 0xFF, 48);
        assert_eq!(a >> 24, 8);
        assert_eq!(b, 0b1101_1101, "only events 1 and 5 available");
        assert_eq!(c, 0);
        assert_eq!((d & 0x1F, (d >> 5) & 0xFF), (1, 48));
    }

    #[test]
    fn counts_only_the_programmed_events_exactly() {
        let mut p = pmu();
        let en = evtsel::EN | evtsel::OS | evtsel::USR;
        p.write(IA32_PERFEVTSEL0, en | 0xC0).unwrap().unwrap();
        p.write(IA32_PERFEVTSEL0 + 1, en | 0xC4).unwrap().unwrap();
        p.write(IA32_PERFEVTSEL0 + 2, en | 0x3C).unwrap().unwrap(); // unavailable: cycles
        p.write(IA32_FIXED_CTR_CTRL, 0x3).unwrap().unwrap();
        p.write(IA32_PERF_GLOBAL_CTRL, 0x1_0000_0007)
            .unwrap()
            .unwrap();
        for (insn, branch) in [(true, false), (true, true), (true, true), (false, false)] {
            p.retire(insn, branch, 0);
        }
        let r = |m| p.read(m).unwrap().unwrap();
        assert_eq!(r(IA32_PMC0), 3);
        assert_eq!(r(IA32_PMC0 + 1), 2);
        assert_eq!(r(IA32_PMC0 + 2), 0);
        assert_eq!(r(IA32_FIXED_CTR0), 3);
        // The USR/OS filter and the global enable.
        p.write(IA32_PERFEVTSEL0, evtsel::EN | evtsel::USR | 0xC0)
            .unwrap()
            .unwrap();
        p.retire(true, false, 0);
        assert_eq!(p.read(IA32_PMC0).unwrap().unwrap(), 3);
        p.retire(true, false, 3);
        assert_eq!(p.read(IA32_PMC0).unwrap().unwrap(), 4);
        p.write(IA32_PERF_GLOBAL_CTRL, 0).unwrap().unwrap();
        p.retire(true, true, 3);
        assert_eq!(p.read(IA32_PMC0).unwrap().unwrap(), 4);
    }

    #[test]
    fn overflow_sets_global_status_and_ovf_ctrl_clears_it() {
        let mut p = pmu();
        p.write(IA32_PERFEVTSEL0, evtsel::EN | evtsel::OS | 0xC0)
            .unwrap()
            .unwrap();
        p.write(IA32_PMC0, 0xFFFF_FFFF).unwrap().unwrap(); // -1, sign-extended to 48 bits
        assert_eq!(p.read(IA32_PMC0).unwrap().unwrap(), WIDTH_MASK);
        p.retire(true, false, 0);
        assert_eq!(p.read(IA32_PERF_GLOBAL_STATUS).unwrap().unwrap(), 1);
        assert_eq!(p.write(IA32_PERF_GLOBAL_STATUS, 0), Some(Err(Gp)));
        p.write(IA32_PERF_GLOBAL_OVF_CTRL, 1).unwrap().unwrap();
        assert_eq!(p.read(IA32_PERF_GLOBAL_STATUS).unwrap().unwrap(), 0);
    }

    #[test]
    fn every_reserved_bit_is_gp() {
        let mut p = pmu();
        for bit in 0..64 {
            let v = 1u64 << bit;
            let expect = |reserved: u64| {
                if v & reserved != 0 {
                    Some(Err(Gp))
                } else {
                    Some(Ok(()))
                }
            };
            assert_eq!(
                p.write(IA32_PERFEVTSEL0 + 3, v),
                expect(evtsel::RESERVED),
                "{bit}"
            );
            assert_eq!(
                p.write(IA32_PERF_GLOBAL_CTRL, v),
                expect(GLOBAL_CTRL_RESERVED)
            );
            assert_eq!(
                p.write(IA32_PERF_GLOBAL_OVF_CTRL, v),
                expect(GLOBAL_OVF_RESERVED)
            );
            assert_eq!(p.write(IA32_FIXED_CTR_CTRL, v), expect(FIXED_CTRL_RESERVED));
            assert_eq!(p.write(IA32_A_PMC0, v), expect(!WIDTH_MASK));
            assert_eq!(p.write(IA32_FIXED_CTR0, v), expect(!WIDTH_MASK));
        }
        assert_eq!(p.read(0x1234), None, "not a PMU MSR: the MSR policy's");
        assert_eq!(Pmu::new(false, 0).read(IA32_PMC0), None);
    }

    #[test]
    fn perf_capabilities_immutable_bits_equal_the_hosts_and_cannot_change() {
        let host = caps::PEBS_TIMING_INFO | 0x400 | 0x1F | (1 << 15);
        let mut p = Pmu::new(true, host);
        let v = p.perf_capabilities();
        assert_eq!(v & caps::IMMUTABLE, host & caps::IMMUTABLE);
        assert_eq!(v & caps::PEBS_TIMING_INFO, caps::PEBS_TIMING_INFO);
        assert_eq!(v & (1 << 15), 0, "perf metrics is not the guest's");
        for bit in 0..64 {
            let r = p.write(IA32_PERF_CAPABILITIES, v ^ (1 << bit));
            if 1 << bit == caps::FW_WRITE {
                assert_eq!(r, Some(Ok(())));
                p.write(IA32_PERF_CAPABILITIES, v).unwrap().unwrap();
            } else {
                assert_eq!(r, Some(Err(Gp)), "bit {bit}");
            }
        }
        assert_eq!(p.write(IA32_PERF_CAPABILITIES, v), Some(Ok(())));
        // Without FW_WRITE the full-width aliases are #GP.
        p.write(IA32_PERF_CAPABILITIES, v & !caps::FW_WRITE)
            .unwrap()
            .unwrap();
        assert_eq!(p.read(IA32_A_PMC0), Some(Err(Gp)));
    }

    #[test]
    fn errata_table_by_model() {
        let intel = [0x20, 0x756e_6547, 0x6c65_746e, 0x4965_6e69];
        let amd = [0x10, 0x6874_7541, 0x444d_4163, 0x6974_6e65];
        // family 6, model = ext << 4 | model
        let sig = |model: u32| 0x600 | ((model & 0xF) << 4) | ((model >> 4) << 16);
        let e = |i, b| Errata {
            instructions_overcount: i,
            branches_overcount: b,
        };
        assert_eq!(errata(intel, sig(0xDD)), e(true, false));
        assert_eq!(errata(intel, sig(0xAF)), e(true, true));
        for m in [0x4D, 0x5F, 0x86] {
            assert_eq!(errata(intel, sig(m)), e(true, true));
        }
        assert_eq!(
            errata(intel, sig(0x55)),
            e(false, false),
            "Skylake-X (Bochs)"
        );
        assert_eq!(errata(amd, sig(0xAF)), e(false, false));
        assert_eq!(errata(intel, 0xF00 | (0xAF & 0xF) << 4), e(false, false));
        assert_eq!(e(true, true).bits(), 3);
        assert_eq!(e(true, false).bits(), 1);
    }
}
