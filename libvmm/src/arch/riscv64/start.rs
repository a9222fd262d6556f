//! The RISC-V boot flow: device tree -> checks -> guest memory, payload and guest device tree ->
//! G-stage tables and H-extension CSRs -> the generic run loop -> stop line and exit status.

use core::sync::atomic::{AtomicBool, Ordering};

use libvmm_abi::layout::riscv64 as layout;
use libvmm_abi::stop::StopCode;
use libvmm_abi::BackendId;

use super::devices::{self, Uart};
use super::{csr, hart::HwHart};
use crate::guest_mem::GuestMemory;
use crate::riscv::csr as bits;
use crate::riscv::gstage::GStage;
use crate::riscv::guest_isa::GuestIsa;
use crate::riscv::host_dt::HostPlatform;
use crate::riscv::isa::Ext;
use crate::riscv::{guest_dt, RiscvH};
use crate::vcpu::{self, Platform, StopReason, Vm};
use crate::Payload;

extern "Rust" {
    /// Defined by the image crate through [`crate::image!`].
    static LIBVMM_PAYLOAD: Payload;
}

extern "C" {
    static __image_end: u8;
}

/// The VMM's own stack and the stack for reporting a VMM trap (symbols used by `entry`).
#[repr(C, align(16))]
struct Stack([u8; crate::config::VMM_STACK_SIZE]);

#[no_mangle]
#[link_section = ".bss.stack"]
static mut LIBVMM_STACK: Stack = Stack([0; crate::config::VMM_STACK_SIZE]);

pub const TRAP_STACK_SIZE: usize = 4096;

#[repr(C, align(16))]
struct TrapStack([u8; TRAP_STACK_SIZE]);

#[no_mangle]
#[link_section = ".bss.stack"]
static mut LIBVMM_TRAP_STACK: TrapStack = TrapStack([0; TRAP_STACK_SIZE]);

/// The G-stage tables (one level-1 table: the window lies inside one gigabyte).
static mut GSTAGE: GStage<1> = GStage::new();
static TAKEN: AtomicBool = AtomicBool::new(false);

/// The Platform of the run loop on this machine.
struct RiscvPlatform {
    console: Uart,
    timebase_hz: u64,
}

impl Platform for RiscvPlatform {
    type Console = Uart;
    fn console(&mut self) -> &mut Uart {
        &mut self.console
    }
    fn host_cpuid(&self, _: u32, _: u32) -> [u32; 4] {
        [0; 4]
    }
    /// Both clocks are the `time` counter scaled by the timebase (no RTC is read: "realtime" is time
    /// since boot).
    fn clock_ns(&self, _clock: u64) -> Option<u64> {
        if self.timebase_hz == 0 {
            return None;
        }
        Some((csr::time() as u128 * 1_000_000_000 / self.timebase_hz as u128) as u64)
    }
}

struct Fail(StopCode, &'static str);

#[no_mangle]
extern "C" fn libvmm_riscv64_main(hartid: u64, dtb: u64, entry_cycles: u64) -> ! {
    let mut con = Uart;
    // The `time` counter at entry is the only entropy an S-mode VMM has here (no Zkr on QEMU's rv64).
    crate::console::announce_token(
        &mut con,
        crate::console::make_token(csr::time() ^ entry_cycles << 32 ^ dtb),
    );
    let code = match boot(hartid, dtb, entry_cycles) {
        Ok(stop) => {
            crate::console::stop_line(&mut con, stop.code(), format_args!("{stop}"));
            stop.code()
        }
        Err(Fail(code, what)) => {
            crate::console::stop_line(&mut con, code as u8, format_args!("{what}"));
            code as u8
        }
    };
    devices::exit(code)
}

/// The host device tree OpenSBI passed, as bytes.
fn host_dtb(addr: u64) -> Result<&'static [u8], Fail> {
    const MAX: u32 = 1 << 20;
    if addr == 0 || !addr.is_multiple_of(8) {
        return Err(Fail(StopCode::PlatformError, "no device tree in a1"));
    }
    // SAFETY: OpenSBI hands over the address of the flattened device tree in a1 (8-byte aligned, in RAM
    // it does not reuse). Its 8-byte header is read first; the size it states is bounded before the whole
    // tree is viewed as a byte slice, which nothing writes afterwards.
    let header = unsafe { core::slice::from_raw_parts(addr as *const u8, 8) };
    let size = u32::from_be_bytes([header[4], header[5], header[6], header[7]]);
    if u32::from_be_bytes([header[0], header[1], header[2], header[3]]) != 0xd00d_feed
        || !(40..=MAX).contains(&size)
    {
        return Err(Fail(StopCode::PlatformError, "bad device tree header"));
    }
    // SAFETY: as above, now with the checked size.
    Ok(unsafe { core::slice::from_raw_parts(addr as *const u8, size as usize) })
}

/// Applies `libvmm.isa=-ext,+ext,...` from the command line through the per-guest ISA registers (the
/// KVM ONE_REG way: by register id), reporting each refusal, then lists the registers (get-reg-list).
fn configure_isa(isa: &mut GuestIsa, bootargs: &str, con: &mut Uart) {
    use crate::riscv::guest_isa::Reg;
    let spec = bootargs
        .split_ascii_whitespace()
        .find_map(|w| w.strip_prefix("libvmm.isa="))
        .unwrap_or("");
    for item in spec.split(',').filter(|s| !s.is_empty()) {
        let (on, name) = match item.as_bytes()[0] {
            b'-' => (false, &item[1..]),
            b'+' => (true, &item[1..]),
            _ => (true, item),
        };
        let result = match Ext::from_name(name) {
            Some(e) => isa.set_reg(Reg::IsaExt(e).id(), on as u64),
            None => Err(crate::riscv::guest_isa::IsaCtlError::NotPresent),
        };
        match result {
            Ok(()) => crate::vmm_print!(
                con,
                "libvmm: guest ISA: {} {name}\n",
                if on { "enabled" } else { "hid" }
            ),
            Err(e) => crate::vmm_print!(
                con,
                "libvmm: guest ISA: cannot {} {name}: {e:?}\n",
                if on { "enable" } else { "hide" }
            ),
        }
    }
    let regs = isa.reg_list().count();
    let visible = isa
        .reg_list()
        .filter(|r| isa.get_reg(r.id()) == Ok(1))
        .count();
    crate::vmm_print!(
        con,
        "libvmm: guest ISA registers (get-reg-list): {regs}, {visible} set\n"
    );
}

fn boot(hartid: u64, dtb_addr: u64, entry_cycles: u64) -> Result<StopReason, Fail> {
    let mut con = Uart;
    let dtb = host_dtb(dtb_addr)?;
    let host = HostPlatform::parse(dtb).map_err(|e| Fail(StopCode::PlatformError, e.what()))?;
    devices::set_addresses(host.uart, host.test_device);
    crate::vmm_print!(
        &mut con,
        "libvmm: RISC-V H backend on hart {hartid} ({} hart(s), timebase {} Hz, RAM {:#x}+{:#x})\n",
        host.harts,
        host.timebase_hz,
        host.memory.0,
        host.memory.1
    );
    crate::vmm_print!(
        &mut con,
        "libvmm: host ISA ({}): {}\n",
        if host.from_extension_list {
            "riscv,isa-extensions"
        } else {
            "riscv,isa"
        },
        host.exts()
    );
    if !host.exts().contains(Ext::H) {
        return Err(Fail(StopCode::Unsupported, "the CPU has no H extension"));
    }
    let (ram_base, ram_size) = host.memory;
    // Only the address of the linker-script symbol is taken.
    let image_end = core::ptr::addr_of!(__image_end) as u64;
    if layout::WINDOW_BASE < ram_base
        || layout::WINDOW_BASE + layout::WINDOW_SIZE > ram_base + ram_size
        || image_end > layout::WINDOW_BASE
        || (dtb_addr < layout::WINDOW_BASE + layout::WINDOW_SIZE
            && dtb_addr + dtb.len() as u64 > layout::WINDOW_BASE)
    {
        return Err(Fail(
            StopCode::PlatformError,
            "guest window is not free RAM",
        ));
    }

    // Per-guest ISA: every host extension that may be given, as KVM does by default.
    let mut isa = GuestIsa::new(host.exts());
    let bootargs = fdt::Fdt::new(dtb)
        .ok()
        .and_then(|f| f.find_node("/chosen")?.property("bootargs")?.as_str())
        .unwrap_or("");
    configure_isa(&mut isa, bootargs, &mut con);
    isa.freeze();
    let hw = isa.hw();
    crate::vmm_print!(&mut con, "libvmm: guest ISA: {}\n", isa.enabled());
    crate::vmm_print!(
        &mut con,
        "libvmm: guest ISA cannot hide: {}\n",
        isa.unhideable()
    );

    // Guest memory.
    // SAFETY: the window is RAM (checked against the device tree above), lies above the VMM image and
    // OpenSBI and clear of the device tree, and this is the only reference ever made to it.
    let window = unsafe {
        core::slice::from_raw_parts_mut(
            layout::WINDOW_BASE as *mut u8,
            layout::WINDOW_SIZE as usize,
        )
    };
    window.fill(0);
    let mut mem = GuestMemory::new(layout::WINDOW_BASE, window);
    // SAFETY: the image crate defines this static once (`image!`); it is only read.
    let payload = unsafe { &LIBVMM_PAYLOAD };
    let loaded = crate::loader::load(
        payload,
        &mut mem,
        BackendId::RiscvH,
        bootargs.as_bytes(),
        entry_cycles,
    )
    .map_err(|e| Fail(StopCode::PlatformError, e.describe()))?;
    let mut gdt = [0u8; layout::DTB_MAX as usize];
    let tree = guest_dt::GuestTree {
        mem_base: layout::WINDOW_BASE,
        mem_size: layout::WINDOW_SIZE,
        timebase_hz: host.timebase_hz as u32,
        exts: isa.enabled(),
        bootargs,
    };
    let n = guest_dt::build(&tree, &mut gdt)
        .map_err(|_| Fail(StopCode::PlatformError, "guest device tree too big"))?;
    let dtb_gpa = layout::WINDOW_BASE + layout::DTB_OFFSET;
    mem.write(dtb_gpa, &gdt[..n])
        .map_err(|_| Fail(StopCode::PlatformError, "guest device tree does not fit"))?;

    // G-stage: the window, identity, and nothing else.
    if TAKEN.swap(true, Ordering::AcqRel) {
        return Err(Fail(StopCode::PlatformError, "boot ran twice"));
    }
    // SAFETY: the swap above makes this the only reference to GSTAGE ever taken.
    let gstage = unsafe { &mut *core::ptr::addr_of_mut!(GSTAGE) };
    gstage
        .map(
            layout::WINDOW_BASE,
            layout::WINDOW_BASE,
            layout::WINDOW_SIZE,
        )
        .map_err(|_| Fail(StopCode::PlatformError, "G-stage mapping failed"))?;
    let hgatp = gstage.hgatp(crate::config::GUEST_TAG);
    csr::set_hgatp(hgatp);
    if csr::hgatp() >> 60 != 8 {
        return Err(Fail(StopCode::Unsupported, "hgatp does not take Sv39x4"));
    }
    if (csr::hgatp() & bits::HGATP_VMID_MASK) >> bits::HGATP_VMID_SHIFT
        != crate::config::GUEST_TAG as u64
    {
        return Err(Fail(
            StopCode::Unsupported,
            "VMID 1 not implemented (VMIDLEN 0)",
        ));
    }
    csr::hfence_gvma_all();
    crate::vmm_print!(
        &mut con,
        "libvmm: G-stage Sv39x4 VMID {} maps {:#x}..{:#x} only; payload {} entry {:#x}\n",
        crate::config::GUEST_TAG,
        layout::WINDOW_BASE,
        layout::WINDOW_BASE + layout::WINDOW_SIZE,
        payload.name,
        loaded.entry
    );

    // H-extension set-up for the guest.
    csr::set_hedeleg(bits::HEDELEG_GUEST);
    csr::set_hideleg(bits::HIDELEG_GUEST);
    csr::set_hcounteren(bits::HCOUNTEREN_CY_TM_IR);
    if host.exts().contains(Ext::Sstc) {
        // vstimecmp resets to 0, which is "already due": with it, QEMU keeps VSTIP pending for good (it
        // compares vstimecmp whenever htimedelta is written). Nothing is due until the guest says so.
        csr::set_vstimecmp(u64::MAX);
    }
    csr::set_htimedelta(0);
    csr::set_henvcfg(hw.henvcfg);
    if let Some(h) = hw.hstateen0 {
        csr::set_hstateen0(h);
    }
    csr::set_hvip(0);
    csr::set_hie(0);
    csr::set_hstatus(
        bits::HSTATUS_VSXL_64 | bits::HSTATUS_SPV | bits::HSTATUS_SPVP | bits::HSTATUS_VTW,
    );
    csr::set_vsatp(0);
    csr::set_vstvec(0);
    let mut vsstatus = 0;
    let mut sstatus = csr::sstatus()
        & !(bits::SSTATUS_SIE | bits::SSTATUS_SPIE | bits::SSTATUS_FS | bits::SSTATUS_VS);
    sstatus |= bits::SSTATUS_SPP;
    if hw.fp {
        sstatus |= bits::SSTATUS_FS_INITIAL;
        vsstatus |= bits::SSTATUS_FS_INITIAL;
    }
    if hw.vector {
        sstatus |= bits::SSTATUS_VS_INITIAL;
        vsstatus |= bits::SSTATUS_VS_INITIAL;
    }
    csr::set_vsstatus(vsstatus);
    csr::set_sstatus(sstatus);
    devices::set_timer(u64::MAX);
    csr::set_sie(1 << bits::IRQ_S_TIMER);

    let mut cpu = RiscvH::new(
        HwHart,
        loaded.entry,
        0,
        loaded.boot_info,
        dtb_gpa,
        loaded.stack_top,
    );
    let mut vm = Vm::new(
        mem,
        RiscvPlatform {
            console: Uart,
            timebase_hz: host.timebase_hz,
        },
    );
    Ok(vcpu::run(&mut cpu, &mut vm))
}
