//! The guest's local-APIC MSRs (IA32_APIC_BASE, IA32_TSC_DEADLINE, x2APIC 0x800-0x8FF): answered by the
//! vCPU's virtual x2APIC (`x86::apic`), the same way on SVM and VMX. The model decides every access
//! (including each #GP); this policy turns its answer into the loop's reply and tells the loop what the
//! write changed (re-arm the host timer, nothing, or an IPI it cannot deliver before SMP).
#![forbid(unsafe_code)]

use crate::exit::{Fault, Output, Reply};
use crate::x86::apic::{Effect, VirtualApic};

const GP: Reply = Reply::Inject(Fault::GeneralProtection(0));

/// Whether `msr` is the APIC's (routed here instead of the MSR policy).
#[inline(always)]
pub const fn owns(msr: u32) -> bool {
    crate::x86::apic::owns(msr)
}

/// RDMSR of an APIC MSR at guest TSC `now`.
pub fn read(apic: &mut VirtualApic, msr: u32, now: u64) -> Reply {
    match apic.read_msr(msr, now) {
        Ok(v) => Reply::Complete(Output::MsrValue(v)),
        Err(_) => GP,
    }
}

/// WRMSR of an APIC MSR at guest TSC `now`: the reply, and whether the host timer must be re-armed.
pub fn write(apic: &mut VirtualApic, msr: u32, value: u64, now: u64) -> (Reply, bool) {
    match apic.write_msr(msr, value, now) {
        Ok(effect) => (
            Reply::Complete(Output::Nothing),
            matches!(effect, Effect::Timer | Effect::ModeChanged(_)),
        ),
        // An IPI to other CPUs is dropped until SMP, as hardware drops a message no APIC accepts.
        Err(_) => (GP, false),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::x86::msr;

    fn x2apic() -> VirtualApic {
        let mut a = VirtualApic::new(0, true, 48, 100);
        let base = msr::APIC_BASE_DEFAULT_ADDR
            | msr::APIC_BASE_BSP
            | msr::APIC_BASE_ENABLE
            | msr::APIC_BASE_EXTD;
        assert_eq!(
            write(&mut a, msr::IA32_APIC_BASE, base, 0).0,
            Reply::Complete(Output::Nothing)
        );
        a
    }

    #[test]
    fn apic_msrs_are_owned_and_answered_by_the_model() {
        assert!(owns(0x1B) && owns(0x6E0) && owns(0x800) && owns(0x8FF));
        assert!(!owns(0x7FF) && !owns(0x900) && !owns(msr::EFER));
        let mut a = x2apic();
        assert_eq!(read(&mut a, 0x802, 0), Reply::Complete(Output::MsrValue(0)));
        // Read-only register, reserved bits, write-only register: #GP.
        assert_eq!(write(&mut a, 0x802, 1, 0).0, GP);
        assert_eq!(write(&mut a, 0x808, 1 << 32, 0).0, GP);
        assert_eq!(read(&mut a, 0x80B, 0), GP);
        // Timer writes ask for the host timer to be re-armed; TPR does not.
        assert!(write(&mut a, 0x838, 1000, 0).1);
        assert!(!write(&mut a, 0x808, 0x20, 0).1);
    }
}
