//! SEV-ES host save area and TSC_AUX (shared/reference/svm.md §6). For an SEV-ES guest the CPU reloads
//! host state on #VMEXIT from the host save area; on CPUs with V_TSC_AUX that includes TSC_AUX (at
//! +0x2EC of `sev_es_save_area`). KVM once primed that field with the host's TSC_AUX at CPU enable, so an
//! SEV-ES exit clobbered the TSC_AUX a non-SEV-ES vCPU still had loaded through the user-return cache.
//! The fix, done the same way here: before every SEV-ES entry, store what the hardware holds now — the
//! user-return cache's `curr` — not the host's value. *Simulated*: no SEV here; tested on a model CPU.
#![forbid(unsafe_code)]
#![cfg_attr(not(test), allow(dead_code))]

use crate::x86::user_return_msr::UserReturnMsrs;

/// Offset of TSC_AUX in the SEV-ES save area (u32).
pub const HOSTSA_TSC_AUX: usize = 0x2EC;
/// Size of `sev_es_save_area`.
pub const SEV_ES_SAVE_AREA_SIZE: usize = 1648;

/// The part of the host save area libvmm writes for SEV-ES entries.
pub struct SevEsHostSave(pub [u8; SEV_ES_SAVE_AREA_SIZE]);

impl SevEsHostSave {
    pub fn tsc_aux(&self) -> u32 {
        u32::from_le_bytes(
            self.0[HOSTSA_TSC_AUX..HOSTSA_TSC_AUX + 4]
                .try_into()
                .unwrap(),
        )
    }
    fn set_tsc_aux(&mut self, v: u32) {
        self.0[HOSTSA_TSC_AUX..HOSTSA_TSC_AUX + 4].copy_from_slice(&v.to_le_bytes());
    }
}

/// Before an SEV-ES VMRUN: make the #VMEXIT restore the TSC_AUX the CPU holds now.
pub fn prepare_switch_to_guest<const N: usize>(
    hostsa: &mut SevEsHostSave,
    uret: &UserReturnMsrs<N>,
    tsc_aux_slot: usize,
) {
    if let Some(curr) = uret.get(tsc_aux_slot) {
        hostsa.set_tsc_aux(curr as u32);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::x86::user_return_msr::tests::{ModelCpu, TSC_AUX};
    use crate::x86::user_return_msr::MsrIo;

    /// An SEV-ES guest run on the model CPU with V_TSC_AUX: the guest uses its own TSC_AUX, and #VMEXIT
    /// reloads the host save area's value into hardware.
    fn run_sev_es_guest(cpu: &mut ModelCpu, hostsa: &SevEsHostSave) {
        cpu.msrs.insert(TSC_AUX, 0xEEEE); // the guest's value while it runs
        cpu.msrs.insert(TSC_AUX, hostsa.tsc_aux() as u64); // #VMEXIT
    }

    /// A non-SEV-ES vCPU loads its TSC_AUX through the cache, an SEV-ES vCPU then runs on the same CPU,
    /// and the first vCPU resumes trusting the cache. Returns what that vCPU would read with RDTSCP.
    fn scenario(fixed: bool) -> (u64, u64) {
        let mut cpu = ModelCpu::default();
        cpu.msrs.insert(TSC_AUX, 3); // host value (e.g. the CPU number)
        let mut uret = UserReturnMsrs::<4>::default();
        let slot = uret.register(TSC_AUX, &mut cpu).unwrap();
        let mut hostsa = SevEsHostSave([0; SEV_ES_SAVE_AREA_SIZE]);
        if !fixed {
            // The old behaviour: prime the host's value once at enable.
            let host = cpu.read(TSC_AUX);
            hostsa.set_tsc_aux(host as u32);
        }
        uret.set(slot, 0x1234, u64::MAX, &mut cpu).unwrap(); // non-SEV-ES vCPU A
        if fixed {
            prepare_switch_to_guest(&mut hostsa, &uret, slot);
        }
        run_sev_es_guest(&mut cpu, &hostsa); // SEV-ES vCPU B
        uret.set(slot, 0x1234, u64::MAX, &mut cpu).unwrap(); // A again: the cache skips the WRMSR
        (cpu.msrs[&TSC_AUX], uret.get(slot).unwrap())
    }

    #[test]
    fn sev_es_exit_restores_what_hardware_held() {
        let (hardware, cached) = scenario(true);
        assert_eq!(hardware, 0x1234);
        assert_eq!(hardware, cached);
    }

    #[test]
    fn the_old_priming_clobbered_the_non_sev_es_vcpu() {
        let (hardware, cached) = scenario(false);
        assert_eq!(hardware, 3, "host value reloaded behind the cache's back");
        assert_ne!(hardware, cached);
    }
}
