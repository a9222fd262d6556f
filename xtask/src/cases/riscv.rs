//! RISC-V H (QEMU `virt`, `-cpu rv64`, under OpenSBI): the same payloads and checks, the RISC-V forms of
//! the fatal attacks, the Zalasr device-tree boot, per-guest ISA control, the guest time limit, and the
//! forged-result attacks (with the guest time limit, and without it, where the host's limit ends the run).
use std::time::Duration;

use libvmm_abi::layout::riscv64::{VMM_IMAGE_BASE, WINDOW_BASE, WINDOW_SIZE};
use libvmm_abi::stop::{StopCode, HOST_TIMED_OUT};

use super::{exitbench, hello, hostile, Case};
use crate::backend::Backend;

const B: Backend = Backend::Riscv;

/// The device tree that lists Zalasr (QEMU 10.0.2's own tree plus `zalasr`): see its `.dts` beside it.
pub const ZALASR_DTB: &str = "libvmm/src/riscv/testdata/qemu-virt-rv64-zalasr.dtb";

pub fn cases() -> Vec<Case> {
    let gmv = StopCode::GuestMemoryViolation as u8;
    let violation = |what: &str, gpa: u64| {
        format!("guest memory violation: {what} of guest-physical {gpa:#x} outside guest memory")
    };
    let zalasr = hostile(
        B,
        "attack=vmm-read",
        gmv,
        "hostile: info guest device tree lists zalasr: yes; lw.aq trapped (illegal instruction)"
            .into(),
    )
    .expect(&[" zaamo zalasr zalrsc "])
    .dtb(ZALASR_DTB);
    let plain = hostile(B, "", gmv, violation("read", VMM_IMAGE_BASE))
        .expect(&["hostile: info guest device tree lists zalasr: no"]);
    let mut v = vec![
        // The guest gets the RAM between its base and the host device tree at the top of 128 MiB.
        hello(B)
            .expect(&["libvmm: G-stage Sv39x4 VMID 1 maps 0x84000000..0x87e00000 only"])
            .single_cpu(super::HELLO_ONE_CPU),
        super::smp_hello(B, 2),
        super::smp_hello(B, 4),
        super::smp(B, 1),
        super::smp(B, 2),
        super::smp(B, 4),
        super::std_smp(B, 1),
        super::std_smp(B, 4),
        super::std_demo(B).cpus(4),
        super::std_smp_deadlock(B, 4),
        hello(B)
            .expect(&["libvmm: host ISA (riscv,isa-extensions): i m a f d c h"])
            .dtb(ZALASR_DTB),
        plain,
        zalasr,
        // Per-guest ISA control from the command line: Zicboz hidden (cbo.zero must trap), I cannot be.
        hostile(
            B,
            "libvmm.isa=-zicboz,-i attack=vmm-read",
            gmv,
            "hostile: info zicboz listed: no".into(),
        )
        .expect(&[
            "libvmm: guest ISA: hid zicboz",
            "libvmm: guest ISA: cannot hide i: NotAllowed",
        ]),
        hostile(
            B,
            "attack=vmm-write",
            gmv,
            violation("write", VMM_IMAGE_BASE + 0x1000),
        ),
        hostile(
            B,
            "attack=beyond-window",
            gmv,
            violation("read", WINDOW_BASE + WINDOW_SIZE),
        ),
        hostile(
            B,
            "attack=opensbi-read",
            gmv,
            violation("read", 0x8000_0000),
        ),
        hostile(B, "attack=test-device", gmv, violation("write", 0x10_0000)),
        hostile(B, "attack=uart", gmv, violation("write", 0x1000_0000)),
        hostile(
            B,
            "attack=halt",
            StopCode::GuestError as u8,
            "guest halted with no interrupt source".into(),
        ),
        hostile(
            B,
            "attack=sbi-shutdown-failure",
            StopCode::PayloadAbort as u8,
            "payload aborted".into(),
        ),
        exitbench(B),
        // SBI calls and libvmm hypercalls are one exit reason on RISC-V: ecall from VS.
        super::exitbench_stats(B, &["ecall 2047"]),
    ];
    // A hart failing bring-up (on purpose: libvmm.selftest=ap-fail), run on the rest or stop.
    v.extend(super::ap_fail(B, "smp", 4));
    v.push(super::timer(B));
    // The guest's own page-table walk leaves its memory: the stop names the implicit read of the root
    // entry (index 2 for the payload's addresses at 0x8400_0000..) at its guest-physical address.
    v.push(hostile(
        B,
        "attack=pt-outside",
        gmv,
        violation("page-table read", WINDOW_BASE + WINDOW_SIZE + 16),
    ));
    v.extend(super::traps(B));
    v.extend(super::timed_spin(B));
    v.extend(super::forged_result_timed(B));
    // With no guest time limit, forged stop lines followed by a spin end at the host's limit: the result
    // is the host's time-out, never the forged 0.
    v.push(
        hostile(
            B,
            "attack=forge-stop",
            HOST_TIMED_OUT,
            "libvmm: token 0000000000000000".into(),
        )
        .limit(Duration::from_secs(10)),
    );
    v.extend(super::wx_attacks(
        B,
        WINDOW_BASE,
        libvmm_abi::layout::riscv64::PAYLOAD_BASE,
    ));
    v.extend(super::guestfuzz(B));
    v.push(super::std_demo(B));
    // Without Zkr (`rv64`): the guest's `seed` access is illegal and the runtime falls back to the
    // VMM's entropy hypercall (a weak source there: README, Rust std payloads).
    let mut weak = super::std_demo(B);
    weak.cpu = None;
    weak.expect.retain(|e| e != " zkr ");
    v.push(weak.named("std-demo (rv64 without Zkr: entropy from the VMM's weak source)"));
    v.extend(super::smp_stress(B));
    // Every hart keeps the time limit itself (no gap here): the same case as SVM's, with the timer.
    v.extend(super::smp_time_limit(B, &[true]));
    v
}
