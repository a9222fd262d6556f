//! Intel TDX (simulated module; the image boots in QEMU x86): it must stop at SEAM-module detection,
//! naming what is missing; it never executes SEAMCALL without a SEAM module (that would #UD).
use libvmm_abi::stop::StopCode;

use super::Case;
use crate::backend::Backend;

const B: Backend = Backend::Tdx;

pub fn cases() -> Vec<Case> {
    let case = |expect: &str| {
        Case::new(B, "hello", "", StopCode::Unsupported as u8)
            .expect_line(format!("libvmm: TDX: no TDX module: {expect}"))
            .forbid(&["libvmm: VMM", "Hello from a libvmm guest"])
    };
    // One CPU under `cargo xtask test --cpus N`: the image stops at module detection, before any AP
    // would be started, and the TDX module (and its TDs' vCPUs) exists only as the host-side model.
    const SIMULATED: &str = "TDX is simulated: the image stops at module detection, before any AP";
    vec![
        case("the CPU vendor is not GenuineIntel").single_cpu(SIMULATED),
        case("CPUID.1:ECX bit 5 (VMX) is clear")
            .cpu("max,vendor=GenuineIntel")
            .single_cpu(SIMULATED),
    ]
}
