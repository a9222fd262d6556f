//! The instruction emulator's model vCPU: registers and control state in plain fields, for the
//! emulator's host tests (`x86::emulate::tests`) and its fuzz target (`fuzzing::emulator`).
#![forbid(unsafe_code)]

use crate::x86::emulate::GuestCpu;

/// The model vCPU.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct ModelCpu {
    pub gpr: [u64; 16],
    pub rip: u64,
    pub rflags: u64,
    pub cr0: u64,
    pub cr3: u64,
    pub cr4: u64,
    pub efer: u64,
    pub cpl: u8,
    pub long: bool,
    pub fs: u64,
    pub gs: u64,
}

impl GuestCpu for ModelCpu {
    fn gpr(&self, n: u8) -> u64 {
        self.gpr[usize::from(n)]
    }
    fn set_gpr(&mut self, n: u8, value: u64) {
        self.gpr[usize::from(n)] = value;
    }
    fn rip(&self) -> u64 {
        self.rip
    }
    fn set_rip(&mut self, value: u64) {
        self.rip = value;
    }
    fn rflags(&self) -> u64 {
        self.rflags
    }
    fn set_rflags(&mut self, value: u64) {
        self.rflags = value;
    }
    fn cr0(&self) -> u64 {
        self.cr0
    }
    fn cr3(&self) -> u64 {
        self.cr3
    }
    fn cr4(&self) -> u64 {
        self.cr4
    }
    fn efer(&self) -> u64 {
        self.efer
    }
    fn cpl(&self) -> u8 {
        self.cpl
    }
    fn cs_long(&self) -> bool {
        self.long
    }
    fn fs_base(&self) -> u64 {
        self.fs
    }
    fn gs_base(&self) -> u64 {
        self.gs
    }
}
