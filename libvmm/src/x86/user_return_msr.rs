//! The user-return MSR cache, after KVM's `kvm_set_user_return_msr`/`kvm_get_user_return_msr`: MSRs a
//! guest's value of which may stay loaded in hardware until the host needs its own back. Per slot the
//! cache knows the host's value and `curr`, the value the CPU holds *now*; a set that would not change
//! `curr` skips the WRMSR, and returning to the host restores only what differs.
//!
//! The invariant that matters (KVM's TSC_AUX fix, shared/reference/svm.md §6): `curr` is always what the
//! hardware holds. Code that makes the CPU reload an MSR behind the cache's back — an SEV-ES #VMEXIT
//! restoring TSC_AUX from the host save area — must reload it with `curr`, not with the host's value
//! (see `svm::sev_es`). *Simulated*: libvmm's image keeps no guest MSR in hardware yet (the SVM MSR
//! policy intercepts TSC_AUX), so this is tested against a model CPU.
#![forbid(unsafe_code)]
#![cfg_attr(not(test), allow(dead_code))]

/// How the cache reaches the MSRs (the real instructions in `arch`, or a model).
pub trait MsrIo {
    fn read(&mut self, msr: u32) -> u64;
    /// WRMSR; `Err` when the CPU refused the value (#GP).
    fn write(&mut self, msr: u32, value: u64) -> Result<(), ()>;
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Slot {
    msr: u32,
    host: u64,
    curr: u64,
}

/// Why a set failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UretError {
    /// All slots are in use.
    Full,
    /// No such slot.
    BadSlot,
    /// The CPU refused the value; the cache is unchanged.
    WriteFailed,
}

/// A fixed number of slots (no heap).
pub struct UserReturnMsrs<const N: usize> {
    slots: heapless::Vec<Slot, N>,
    /// Whether any slot differs from the host's value (KVM registers its notifier then).
    dirty: bool,
}

impl<const N: usize> Default for UserReturnMsrs<N> {
    fn default() -> Self {
        Self {
            slots: heapless::Vec::new(),
            dirty: false,
        }
    }
}

impl<const N: usize> UserReturnMsrs<N> {
    /// Adds `msr`, reading the host's value once; returns its slot.
    pub fn register(&mut self, msr: u32, io: &mut impl MsrIo) -> Result<usize, UretError> {
        let host = io.read(msr);
        self.slots
            .push(Slot {
                msr,
                host,
                curr: host,
            })
            .map_err(|_| UretError::Full)?;
        Ok(self.slots.len() - 1)
    }

    /// Loads `(value & mask) | (host & !mask)` into the slot's MSR unless the CPU already holds it.
    pub fn set(
        &mut self,
        slot: usize,
        value: u64,
        mask: u64,
        io: &mut impl MsrIo,
    ) -> Result<(), UretError> {
        let s = self.slots.get_mut(slot).ok_or(UretError::BadSlot)?;
        let value = (value & mask) | (s.host & !mask);
        if value == s.curr {
            return Ok(());
        }
        io.write(s.msr, value).map_err(|_| UretError::WriteFailed)?;
        s.curr = value;
        self.dirty |= value != s.host;
        Ok(())
    }

    /// What the CPU holds now in the slot's MSR.
    pub fn get(&self, slot: usize) -> Option<u64> {
        self.slots.get(slot).map(|s| s.curr)
    }

    /// Puts the host's values back where the CPU holds something else.
    pub fn return_to_host(&mut self, io: &mut impl MsrIo) {
        if !self.dirty {
            return;
        }
        for s in self.slots.iter_mut() {
            if s.curr != s.host && io.write(s.msr, s.host).is_ok() {
                s.curr = s.host;
            }
        }
        self.dirty = false;
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::collections::HashMap;

    /// A CPU's MSRs, counting writes.
    #[derive(Default)]
    pub struct ModelCpu {
        pub msrs: HashMap<u32, u64>,
        pub writes: u32,
    }
    impl MsrIo for ModelCpu {
        fn read(&mut self, msr: u32) -> u64 {
            *self.msrs.get(&msr).unwrap_or(&0)
        }
        fn write(&mut self, msr: u32, value: u64) -> Result<(), ()> {
            if msr == 0xDEAD {
                return Err(());
            }
            self.writes += 1;
            self.msrs.insert(msr, value);
            Ok(())
        }
    }

    pub const TSC_AUX: u32 = 0xC000_0103;

    #[test]
    fn sets_skip_redundant_writes_and_return_restores_the_host() {
        let mut cpu = ModelCpu::default();
        cpu.msrs.insert(TSC_AUX, 7);
        let mut u = UserReturnMsrs::<4>::default();
        let slot = u.register(TSC_AUX, &mut cpu).unwrap();
        u.set(slot, 7, u64::MAX, &mut cpu).unwrap();
        assert_eq!(cpu.writes, 0, "same as hardware: no WRMSR");
        u.set(slot, 0x1234, u64::MAX, &mut cpu).unwrap();
        u.set(slot, 0x1234, u64::MAX, &mut cpu).unwrap();
        assert_eq!(
            (cpu.writes, u.get(slot), cpu.msrs[&TSC_AUX]),
            (1, Some(0x1234), 0x1234)
        );
        u.return_to_host(&mut cpu);
        assert_eq!((cpu.msrs[&TSC_AUX], u.get(slot)), (7, Some(7)));
    }

    #[test]
    fn masks_keep_host_bits_and_failures_leave_the_cache_alone() {
        let mut cpu = ModelCpu::default();
        cpu.msrs.insert(0xC000_0080, 0xD01);
        cpu.msrs.insert(0xDEAD, 1);
        let mut u = UserReturnMsrs::<2>::default();
        let efer = u.register(0xC000_0080, &mut cpu).unwrap();
        u.set(efer, 0x1, 0x1, &mut cpu).unwrap();
        assert_eq!(u.get(efer), Some(0xD01));
        u.set(efer, 0x0, 0x1, &mut cpu).unwrap();
        assert_eq!(u.get(efer), Some(0xD00));
        let bad = u.register(0xDEAD, &mut cpu).unwrap();
        assert_eq!(
            u.set(bad, 5, u64::MAX, &mut cpu),
            Err(UretError::WriteFailed)
        );
        assert_eq!(u.get(bad), Some(1));
        assert_eq!(u.register(0x10, &mut cpu), Err(UretError::Full));
        assert_eq!(u.set(9, 0, 0, &mut cpu), Err(UretError::BadSlot));
    }
}
