//! Attacks on the instruction emulator, the MMIO path and the virtual PMU (x86; the image runs with
//! `libvmm.force_emulation=1`, cmdline `emu=1`). Recoverable: ENTER with a huge frame and the deepest
//! nesting level, an MMIO load whose instruction crosses a page boundary, every bit of every PMU control
//! MSR (VMX: reserved bits #GP, the rest accepted). Fatal (`attack=`): a forced-emulated load from the
//! VMM's image (`emu-vmm-read`), an MMIO access straddling RAM and the device (`emu-mmio-straddle`), and
//! `rep outsb` with RCX = 2^64-1 (`emu-rep-forever`): bounded work per exit, RIP stays until the
//! emulator reaches the end of guest memory, then a clean stop.
use core::arch::asm;

use libvmm_guest::abi::layout::x86_64::{
    TEST_DEVICE_BASE, TEST_DEVICE_ID_VALUE, VMM_IMAGE_BASE, WINDOW_BASE,
};
use libvmm_guest::abi::BackendId;
use libvmm_guest::arch::{cpuid, probe};

use crate::Checks;

/// A device load whose 3-byte instruction (`mov rax, [rdi]`) starts 2 bytes before a page boundary.
fn mmio_load_across_page(addr: u64) -> u64 {
    let v: u64;
    // SAFETY: jumps over the padding to an instruction that loads from the emulated device.
    unsafe {
        asm!(
            "jmp 3f",
            ".p2align 12",
            ".skip 4094, 0x90",
            "3:",
            "mov rax, qword ptr [rdi]",
            in("rdi") addr,
            out("rax") v,
            options(nostack),
        )
    };
    v
}

/// `enter 0xffff, 31` behind the forced-emulation prefix on the current stack; returns how far RSP
/// moved. RSP and RBP are restored after.
fn enter_huge() -> u64 {
    let moved: u64;
    // SAFETY: RBP = RSP, so the 30 nested frame pointers ENTER copies are read from this stack; its 32
    // pushes go below RSP; RSP and RBP are restored from R12/R13.
    unsafe {
        asm!(
            "mov r12, rsp",
            "mov r13, rbp",
            "mov rbp, rsp",
            ".byte 0x0f, 0x0b, 0x6c, 0x76, 0x6d",
            "enter 0xffff, 31",
            "mov rax, r12",
            "sub rax, rsp",
            "mov rsp, r12",
            "mov rbp, r13",
            out("rax") moved,
            out("r12") _,
            out("r13") _,
        )
    };
    moved
}

pub fn recoverable(c: &mut Checks) {
    let moved = enter_huge();
    c.check(
        "emu-enter-huge-frame",
        moved == 8 * 32 + 0xFFFF,
        format_args!("rsp moved {moved:#x}"),
    );
    let v = mmio_load_across_page(TEST_DEVICE_BASE);
    c.check(
        "emu-mmio-insn-across-page",
        v == TEST_DEVICE_ID_VALUE,
        format_args!("read {v:#x}"),
    );
    let vmx = libvmm_guest::boot_info().map(|b| b.backend) == Some(BackendId::Vmx as u32);
    if vmx {
        pmu_reserved_bits(c);
    }
}

/// Every bit of every PMU control MSR, alone: #GP exactly where the bit is reserved for the PMU CPUID
/// 0xA describes (KVM's masks), accepted elsewhere.
fn pmu_reserved_bits(c: &mut Checks) {
    let [a, _, _, d] = cpuid(0xA, 0);
    let (n, nfixed) = ((a >> 8) & 0xFF, d & 0x1F);
    let counters = ((1u64 << n) - 1) | (((1u64 << nfixed) - 1) << 32);
    let fixed_ctrl_ok: u64 = (0..nfixed).fold(0, |m, i| m | 0xB << (4 * i));
    let msrs: [(&str, u32, u64); 4] = [
        ("perfevtsel", 0x186, 0x0000_0000_FFDF_FFFF),
        ("global-ctrl", 0x38F, counters),
        ("global-ovf-ctrl", 0x390, counters | (1 << 62) | (1 << 63)),
        ("fixed-ctr-ctrl", 0x38D, fixed_ctrl_ok),
    ];
    for (name, msr, allowed) in msrs {
        let mut bad = None;
        for bit in 0..64 {
            let v = 1u64 << bit;
            let want = if allowed & v != 0 { Ok(()) } else { Err(13) };
            if probe::wrmsr(msr, v) != want {
                bad = Some(bit);
            }
        }
        let _ = probe::wrmsr(msr, 0);
        c.check(
            match name {
                "perfevtsel" => "emu-pmu-reserved-perfevtsel",
                "global-ctrl" => "emu-pmu-reserved-global-ctrl",
                "global-ovf-ctrl" => "emu-pmu-reserved-global-ovf-ctrl",
                _ => "emu-pmu-reserved-fixed-ctr-ctrl",
            },
            bad.is_none(),
            format_args!("bit {bad:?}"),
        );
    }
    c.check(
        "emu-pmu-global-status-read-only",
        probe::wrmsr(0x38E, 0) == Err(13),
        format_args!("write accepted"),
    );
}

/// The fatal attacks; returns false for a name it does not know.
pub fn fatal(attack: &str) -> bool {
    match attack {
        "emu-vmm-read" => {
            // SAFETY: the load is emulated by the VMM, which must refuse it (not guest memory).
            unsafe {
                asm!(
                    ".byte 0x0f, 0x0b, 0x6c, 0x76, 0x6d",
                    "mov rax, qword ptr [rdi]",
                    in("rdi") VMM_IMAGE_BASE,
                    out("rax") _,
                    options(nostack),
                )
            };
        }
        "emu-mmio-straddle" => {
            // SAFETY: an 8-byte load at 4 bytes below the device: half outside both RAM and device.
            unsafe {
                asm!("mov rax, qword ptr [rdi]", in("rdi") TEST_DEVICE_BASE - 4, out("rax") _,
                     options(nostack))
            };
        }
        "emu-rep-forever" => {
            // SAFETY: OUTS only reads guest memory (from the window's start up); the VMM stops the VM
            // when it reaches the end of guest memory.
            unsafe {
                asm!("rep outsb", inout("rcx") u64::MAX => _, inout("rsi") WINDOW_BASE => _,
                     in("dx") 0x80u16, options(nostack, readonly))
            };
        }
        _ => return false,
    }
    true
}
