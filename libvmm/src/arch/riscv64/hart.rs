//! The real hart under the RISC-V backend: CSR instructions and the world switch, behind the
//! [`Hart`] trait the backend's tests model.

use super::{csr, devices, entry};
use crate::riscv::{Csr, GuestContext, Hart};

/// This hart, after [`super::start`] has set the H-extension CSRs up.
pub struct HwHart;

impl Hart for HwHart {
    #[inline(always)]
    fn enter(&mut self, ctx: &mut GuestContext) -> u64 {
        entry::enter(ctx)
    }
    #[inline(always)]
    fn csr(&self, c: Csr) -> u64 {
        csr::read(c)
    }
    #[inline(always)]
    fn set_csr(&mut self, c: Csr, v: u64) {
        csr::write(c, v)
    }
    fn set_host_timer(&mut self, deadline: u64) {
        devices::set_timer(deadline);
    }
    fn wait_for_host_timer(&mut self) {
        while csr::sip() & (1 << crate::riscv::csr::IRQ_S_TIMER) == 0 {
            csr::wfi();
        }
    }
}
