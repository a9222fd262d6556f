//! The guest's local-APIC MSRs (IA32_APIC_BASE, IA32_TSC_DEADLINE, x2APIC 0x800-0x8FF): answered by the
//! vCPU's virtual x2APIC (`x86::apic`), the same way on SVM and VMX. The model decides every access
//! (including each #GP); this policy turns its answer into the loop's reply and tells the loop what the
//! write changed (re-arm the host timer, nothing, or an IPI for other vCPUs, which [`send`] delivers
//! through the VM's shared state).
#![forbid(unsafe_code)]

use crate::exit::{Fault, Output, Reply};
use crate::vm::{Platform, Vm};
use crate::x86::apic::{DeliveryMode, Destination, Effect, Ipi, VirtualApic};

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

/// WRMSR of an APIC MSR at guest TSC `now`: the reply, whether the host timer must be re-armed, and
/// an IPI for other vCPUs to send ([`send`]).
pub fn write(apic: &mut VirtualApic, msr: u32, value: u64, now: u64) -> (Reply, bool, Option<Ipi>) {
    match apic.write_msr(msr, value, now) {
        Ok(effect) => (
            Reply::Complete(Output::Nothing),
            matches!(effect, Effect::Timer | Effect::ModeChanged(_)),
            match effect {
                Effect::Ipi(ipi) => Some(ipi),
                _ => None,
            },
        ),
        Err(_) => (GP, false, None),
    }
}

/// The vCPUs (a bit each, `0..n`) an IPI from vCPU `me` names. x2APIC IDs are vCPU numbers; a logical
/// destination is x2APIC cluster mode (cluster in 31:16, one bit per ID 3:0 in 15:0, the LDR's form).
/// IDs that name no vCPU name nothing (the message is dropped, as no APIC accepts it).
pub fn targets(dest: Destination, me: u32, n: u32) -> u64 {
    let all = if n >= 64 { u64::MAX } else { (1u64 << n) - 1 };
    let bit = |c: u32| if c < n && c < 64 { 1u64 << c } else { 0 };
    match dest {
        Destination::SelfOnly => bit(me),
        Destination::Physical(id) => bit(id),
        Destination::Logical(d) => (0..n.min(64))
            .filter(|&c| c >> 4 == d >> 16 && d & 0xFFFF & (1 << (c & 0xF)) != 0)
            .fold(0, |a, c| a | 1 << c),
        Destination::AllIncludingSelf => all,
        Destination::AllExcludingSelf => all & !bit(me),
    }
}

/// Sends an IPI the vCPU's ICR holds to the vCPUs it names (guest SMP), through the shared state and a
/// kick of each target's CPU (a host IPI: a running target exits, a halted one wakes):
/// - fixed: the vector goes to the target's IRR (drained into its own virtual x2APIC on its next host
///   event);
/// - INIT (level assert): the target leaves guest mode into wait-for-SIPI; INIT to the BSP (vCPU 0) is
///   ignored, and so is the level de-assert form (no effect on modern CPUs);
/// - STARTUP: a target in wait-for-SIPI starts in real mode at `vector << 12`; one that runs ignores it;
/// - NMI and SMI are not offered: dropped.
///
/// A destination that names no vCPU is dropped. Fixed IPIs to the sender itself were raised by its
/// model already (the destination here excludes it).
pub fn send<P: Platform>(vm: &mut Vm<'_, P>, ipi: Ipi) {
    let me = vm.cpu as u32;
    let n = vm.smp.cpu_count() as u32;
    let t = targets(ipi.dest, me, n);
    for c in (0..64u32).filter(|c| t & (1 << c) != 0) {
        let cpu = u64::from(c);
        let posted = match ipi.mode {
            DeliveryMode::Fixed => vm.smp.post_vector(cpu, ipi.vector),
            DeliveryMode::Init if ipi.level_assert || !ipi.level_trigger => vm.smp.post_init(cpu),
            DeliveryMode::Init => false,
            DeliveryMode::StartUp => vm.smp.post_sipi(cpu, ipi.vector),
            DeliveryMode::Nmi | DeliveryMode::Smi => false,
        };
        if posted {
            // To itself (INIT by shorthand self): the host IPI makes its own next entry exit at once.
            vm.platform.kick(c as usize);
        }
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
    fn destinations_name_existing_vcpus_only() {
        assert_eq!(targets(Destination::Physical(2), 0, 4), 0b100);
        assert_eq!(targets(Destination::Physical(4), 0, 4), 0);
        assert_eq!(targets(Destination::Physical(u32::MAX - 1), 0, 4), 0);
        assert_eq!(targets(Destination::SelfOnly, 1, 4), 0b10);
        assert_eq!(targets(Destination::AllIncludingSelf, 1, 4), 0b1111);
        assert_eq!(targets(Destination::AllExcludingSelf, 1, 4), 0b1101);
        // Cluster 0, IDs 1 and 3; cluster 1 names vCPUs 16.. (none here).
        assert_eq!(targets(Destination::Logical(0b1010), 0, 4), 0b1010);
        assert_eq!(targets(Destination::Logical(1 << 16 | 1), 0, 4), 0);
        assert_eq!(targets(Destination::AllIncludingSelf, 0, 1), 1);
    }

    #[test]
    fn an_icr_write_hands_other_vcpus_ipis_to_the_sender() {
        let mut a = x2apic();
        a.write_msr(0x80F, 0x1FF, 0).unwrap();
        let (r, _, ipi) = write(&mut a, 0x830, 2 << 32 | 0x40, 0);
        assert_eq!(r, Reply::Complete(Output::Nothing));
        let ipi = ipi.unwrap();
        assert_eq!(
            (ipi.vector, ipi.mode, ipi.dest),
            (0x40, DeliveryMode::Fixed, Destination::Physical(2))
        );
        let (_, _, ipi) = write(&mut a, 0x830, 1 << 32 | 0b101 << 8 | 1 << 14, 0);
        assert_eq!(ipi.unwrap().mode, DeliveryMode::Init);
        let (_, _, ipi) = write(&mut a, 0x830, 1 << 32 | 0b110 << 8 | 0x08, 0);
        let ipi = ipi.unwrap();
        assert_eq!((ipi.mode, ipi.vector), (DeliveryMode::StartUp, 0x08));
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
