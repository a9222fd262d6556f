//! The RISC-V machine: OpenSBI's hand-off (hart id and device tree in a0/a1, `arch::riscv64::entry`),
//! the host device tree (memory, UART, test device, timebase, ISA), the guest window checks, the
//! per-guest ISA and the guest's device tree, and the H-extension backend. The panic handler is here.
#![deny(unsafe_code)] // see boot/mod.rs

use libvmm_abi::layout::riscv64 as layout;
use libvmm_abi::stop::StopCode;
use libvmm_abi::BackendId;

use crate::arch::riscv64::devices::{self, Uart};
use crate::arch::riscv64::{self as arch, csr};
use crate::cmdline::Options;
use crate::guest_mem::GuestMemory;
use crate::loader::Loaded;
use crate::riscv::guest_isa::GuestIsa;
use crate::riscv::host_dt::HostPlatform;
use crate::riscv::isa::Ext;
use crate::riscv::{guest_dt, hw, RiscvH};
use crate::vcpu;
use crate::vm::{Platform, StopReason, Vm};

use core::sync::atomic::{AtomicU64, Ordering};

/// The host hart id of each VMM CPU slot (0: the boot hart), for kicks.
static HART_OF: [AtomicU64; crate::config::MAX_CPUS] =
    [const { AtomicU64::new(u64::MAX) }; crate::config::MAX_CPUS];

/// What every hart needs to run a vCPU of the one VM, published by the boot hart once the G-stage
/// tables are installed (guest SMP: the other harts wait for it).
#[derive(Clone, Copy)]
struct VmFacts {
    mem: GuestMemory<'static>,
    map: crate::loader::GuestMap,
    isa: crate::riscv::guest_isa::HwConfig,
    sstc: bool,
    hgatp: u64,
    timebase_hz: u64,
    limit: Option<(u64, u64)>,
    stats: bool,
    /// The host has Zkr (the guest's `seed` is answered from it).
    zkr: bool,
}

static FACTS: crate::arch::Published<VmFacts> = crate::arch::Published::new();

/// The Platform of the run loop on this machine.
struct RiscvPlatform {
    console: Uart,
    timebase_hz: u64,
    /// (limit in ms, `time` at which it ends) when `libvmm.timeout_ms=` is set.
    limit: Option<(u64, u64)>,
    /// The host has Zkr: entropy from its `seed` CSR.
    zkr: bool,
    /// The weak source's state, without Zkr.
    weak: u64,
}

/// SplitMix64's output function: spreads the few unpredictable low bits of its input over 64 bits.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
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
    fn time_limit_exceeded(&self) -> Option<u64> {
        let (ms, end) = self.limit?;
        (csr::time() >= end).then_some(ms)
    }

    /// With Zkr, 64 bits from four ES16 reads of the host's `seed` (BIST/WAIT retried, bounded; DEAD
    /// is no source). Without it, a **weak** source: the `time` counter at each call, folded into a
    /// running state and mixed. Under QEMU TCG its low bits carry host timing jitter; under `-icount`
    /// (the bench) none, so such a boot repeats its numbers. Never a constant, never a secret.
    /// Out of line: inlined into the hypercall dispatch it cost every RISC-V exit about 30 emulated
    /// instructions (measured with `cargo xtask bench`).
    #[cold]
    #[inline(never)]
    fn entropy(&mut self) -> Option<u64> {
        if !self.zkr {
            self.weak = mix(self.weak.wrapping_add(0x9E37_79B9_7F4A_7C15) ^ csr::time());
            return Some(self.weak);
        }
        let mut v = 0u64;
        let mut words = 0;
        for _ in 0..10_000 {
            let s = csr::seed();
            match (s >> 30) & 3 {
                0b10 => {
                    v = (v << 16) | (s & 0xFFFF);
                    words += 1;
                    if words == 4 {
                        return Some(v);
                    }
                }
                0b11 => return None,
                _ => {}
            }
        }
        None
    }
    /// An SBI IPI to the hart that runs vCPU `cpu` (a supervisor software interrupt there).
    fn kick(&self, cpu: usize) {
        if let Some(h) = HART_OF.get(cpu).map(|h| h.load(Ordering::Relaxed)) {
            if h != u64::MAX {
                devices::send_ipi(h);
            }
        }
    }
    fn clear_kick(&mut self) {
        csr::clear_sip(1 << crate::riscv::csr::IRQ_S_SOFT);
    }
    fn idle(&mut self) {
        csr::wfi();
    }
}

/// What the guest starts with besides its memory.
struct RiscvGuest {
    entry: u64,
    boot_info: u64,
    stack_top: u64,
    dtb_gpa: u64,
    isa: crate::riscv::guest_isa::HwConfig,
    /// The host has Sstc (vstimecmp exists).
    sstc: bool,
    /// vCPUs of the guest (harts it can start): 0..vcpus run on VMM CPU slots 0..vcpus.
    vcpus: usize,
}

struct RiscvMachine {
    hartid: u64,
    dtb_addr: u64,
    entry_cycles: u64,
    con: Uart,
    host: Option<HostPlatform>,
    dtb_len: u64,
    bootargs: &'static str,
}

impl super::Machine for RiscvMachine {
    type Platform = RiscvPlatform;
    type Guest = RiscvGuest;
    const BACKEND: BackendId = BackendId::RiscvH;

    fn facts(&mut self) -> Result<&'static [u8], StopReason> {
        let dtb = arch::host_dtb(self.dtb_addr, crate::config::HOST_DTB_MAX)
            .map_err(StopReason::Platform)?;
        let host = HostPlatform::parse(dtb).map_err(|e| StopReason::Platform(e.what()))?;
        devices::set_addresses(host.uart, host.test_device);
        crate::vmm_print!(
            &mut self.con,
            "libvmm: RISC-V H backend on hart {} ({} hart(s), timebase {} Hz, RAM {:#x}+{:#x})\n",
            self.hartid,
            host.harts,
            host.timebase_hz,
            host.memory.0,
            host.memory.1
        );
        crate::vmm_print!(
            &mut self.con,
            "libvmm: host ISA ({}): {}\n",
            if host.from_extension_list {
                "riscv,isa-extensions"
            } else {
                "riscv,isa"
            },
            host.exts()
        );
        if !host.exts().contains(Ext::H) {
            return Err(StopReason::Unsupported("the CPU has no H extension"));
        }
        // Guest memory is zeroed with Zicboz's cbo.zero where every hart has it (OpenSBI enables it
        // for S-mode, menvcfg.CBZE, as the guest's own Zicboz needs too): one instruction a 64-byte
        // block instead of eight stores and their loop.
        if host.exts().contains(Ext::Zicboz) && host.cboz_block != 0 {
            arch::use_cbo_zero(host.cboz_block);
        }
        self.bootargs = crate::riscv::dt::Tree::new(dtb)
            .ok()
            .and_then(|f| f.find("/chosen")?.property("bootargs")?.as_str())
            .unwrap_or("");
        self.dtb_len = dtb.len() as u64;
        self.host = Some(host);
        Ok(self.bootargs.as_bytes())
    }

    fn entry_time(&self) -> u64 {
        self.entry_cycles
    }

    fn guest_window(&mut self, asked: Option<u64>) -> Result<(u64, &'static mut [u8]), StopReason> {
        let host = self
            .host
            .as_ref()
            .ok_or(StopReason::Platform("no device tree"))?;
        let base = layout::WINDOW_BASE;
        if arch::image_end() > base {
            return Err(StopReason::Platform(
                "the VMM image reaches into the guest window",
            ));
        }
        // RAM from the device tree; the VMM keeps the host device tree (QEMU puts it at the top of RAM).
        let end = crate::loader::window::available_end(
            base,
            &[host.memory],
            &[(self.dtb_addr, self.dtb_len)],
            base + layout::WINDOW_MAX,
        );
        let size =
            crate::loader::window::size(base, end, asked).map_err(StopReason::GuestMemory)?;
        let window = crate::arch::guest_window(base, size).ok_or(StopReason::Platform(
            "the guest window was handed out twice",
        ))?;
        Ok((base, window))
    }

    fn deliberate_fault(&mut self) {
        arch::deliberate_fault()
    }

    fn park() -> ! {
        park()
    }

    fn prepare(
        &mut self,
        mem: &mut GuestMemory<'static>,
        loaded: &Loaded,
        options: &Options<'static>,
    ) -> Result<RiscvGuest, StopReason> {
        let host = self
            .host
            .as_ref()
            .ok_or(StopReason::Platform("no device tree"))?;
        // Per-guest ISA: every host extension that may be given, as KVM does by default.
        let mut isa = GuestIsa::new(host.exts());
        configure_isa(&mut isa, options.isa.unwrap_or(""), &mut self.con);
        isa.freeze();
        crate::vmm_print!(&mut self.con, "libvmm: guest ISA: {}\n", isa.enabled());
        crate::vmm_print!(
            &mut self.con,
            "libvmm: guest ISA cannot hide: {}\n",
            isa.unhideable()
        );
        // The harts come up first: the guest's device tree lists one cpu node per vCPU.
        start_harts(host, self.hartid, options)?;
        let vcpus = guest_vcpus(options);
        let mut gdt = [0u8; layout::DTB_MAX as usize];
        let tree = guest_dt::GuestTree {
            harts: vcpus as u32,
            mem_base: mem.base(),
            mem_size: mem.size(),
            timebase_hz: host.timebase_hz as u32,
            exts: isa.enabled(),
            bootargs: self.bootargs,
        };
        let n = guest_dt::build(&tree, &mut gdt)
            .map_err(|_| StopReason::Platform("guest device tree too big"))?;
        let dtb_gpa = layout::WINDOW_BASE + layout::DTB_OFFSET;
        mem.write(dtb_gpa, &gdt[..n])
            .map_err(|_| StopReason::Platform("guest device tree does not fit"))?;
        Ok(RiscvGuest {
            entry: loaded.entry,
            boot_info: loaded.boot_info,
            stack_top: loaded.stack_top,
            dtb_gpa,
            isa: isa.hw(),
            sstc: host.exts().contains(Ext::Sstc),
            vcpus,
        })
    }

    fn platform(&mut self, options: &Options<'static>) -> Result<RiscvPlatform, StopReason> {
        let host = self
            .host
            .as_ref()
            .ok_or(StopReason::Platform("no device tree"))?;
        let limit = match options.timeout_ms {
            None => None,
            Some(_) if host.timebase_hz == 0 => {
                return Err(StopReason::Unsupported(
                    "libvmm.timeout_ms needs the timebase-frequency of the device tree",
                ))
            }
            Some(ms) => {
                let ticks = (host.timebase_hz as u128 * ms as u128 / 1000).min(u64::MAX as u128);
                Some((ms, csr::time().saturating_add(ticks as u64)))
            }
        };
        let platform = RiscvPlatform {
            console: Uart,
            timebase_hz: host.timebase_hz,
            limit,
            zkr: host.exts().contains(Ext::Zkr),
            weak: mix(csr::time()),
        };
        Ok(platform)
    }

    fn run(
        vm: &mut Vm<'static, RiscvPlatform>,
        guest: &RiscvGuest,
        options: &Options<'static>,
    ) -> StopReason {
        let (base, size) = (vm.mem.base(), vm.mem.size());
        let hart = match hw::bring_up(&vm.map, &guest.isa, guest.sstc) {
            Ok(h) => h,
            Err(stop) => return stop,
        };
        crate::vmm_print!(
            vm.platform.console(),
            "libvmm: G-stage Sv39x4 VMID {} maps {:#x}..{:#x} only; payload {} entry {:#x}\n",
            crate::config::GUEST_TAG,
            base,
            base + size,
            crate::arch::payload().name,
            guest.entry
        );
        // Zero on first touch needs nothing more with several vCPUs: its state is one per VM
        // (`vm.lazy`, the same for every vCPU's `Vm`), and the G-stage tables it maps blocks into are
        // the VM's one set, shared by every hart.
        let facts = VmFacts {
            mem: vm.mem,
            map: vm.map,
            isa: guest.isa,
            sstc: guest.sstc,
            hgatp: hw::hgatp(),
            timebase_hz: vm.platform.timebase_hz,
            limit: vm.platform.limit,
            stats: options.stats,
            zkr: vm.platform.zkr,
        };
        FACTS.set(facts);
        vm.smp.publish(guest.vcpus);
        if guest.vcpus > 1 {
            crate::vmm_print!(
                vm.platform.console(),
                "libvmm: guest SMP: {} vCPUs, one per hart, pinned\n",
                guest.vcpus
            );
        }
        let stranded = crate::cpus::stranded(guest.vcpus);
        if stranded > 0 {
            crate::vmm_print!(
                vm.platform.console(),
                "libvmm: guest SMP: CPU {} did not come up, so the guest has {} vCPU(s) (vCPU n runs on CPU n); {} ready CPU(s) after it stay idle\n",
                guest.vcpus,
                guest.vcpus,
                stranded
            );
        }
        // The other harts wait for the facts: a kick each.
        for c in 1..guest.vcpus {
            vm.platform.kick(c);
        }
        let first = Start {
            pc: guest.entry,
            a1: guest.boot_info,
            a2: guest.dtb_gpa,
            sp: guest.stack_top,
        };
        vcpu_main(vm, &facts, Some(first), hart)
    }
}

/// Where a vCPU starts: pc, a1, a2 and sp (a0 is its hart id).
struct Start {
    pc: u64,
    a1: u64,
    a2: u64,
    sp: u64,
}

/// One vCPU on this hart until the VM stops: start (the boot vCPU at the payload's entry, the others
/// when the guest's HSM `hart_start` asks), run the generic loop, and after the guest's `hart_stop` wait
/// for the next start. Each start begins from the guest CSRs' start state (satp 0, interrupts off).
/// `hart`: this hart's [`hw::HwHart`].
fn vcpu_main(
    vm: &mut Vm<'static, RiscvPlatform>,
    f: &VmFacts,
    first: Option<Start>,
    mut hart: hw::HwHart,
) -> StopReason {
    let mut start = first;
    loop {
        let s = match start.take() {
            Some(s) => s,
            None => match wait_for_start(vm) {
                Some((pc, opaque)) => Start {
                    pc,
                    a1: opaque,
                    a2: 0,
                    sp: 0,
                },
                None => return StopReason::StoppedElsewhere,
            },
        };
        hw::guest_csrs(&f.isa, f.sstc);
        let mut cpu = RiscvH::new(hart, s.pc, vm.cpu as u64, s.a1, s.a2, s.sp);
        if let Some((_, end)) = vm.platform.limit {
            cpu.set_time_limit(end);
        }
        match vcpu::run(&mut cpu, vm) {
            StopReason::VcpuOff => {
                vm.smp.set_off(vm.cpu);
                hart = cpu.into_hart();
            }
            stop => return stop,
        }
    }
}

/// An off vCPU's hart waits (WFI; kicks wake it) for a start request, or `None` when the VM stops.
fn wait_for_start(vm: &mut Vm<'static, RiscvPlatform>) -> Option<(u64, u64)> {
    csr::set_sie(1 << crate::riscv::csr::IRQ_S_SOFT);
    loop {
        vm.platform.clear_kick();
        if vm.smp.stopping() {
            return None;
        }
        if let Some(s) = vm.smp.take_start(vm.cpu) {
            return Some(s);
        }
        vm.platform.idle();
    }
}

/// The guest's vCPUs: the boot hart and every hart after it that came up, in slot order up to the first
/// that did not (vCPU n runs on slot n), at most `libvmm.cpus`.
fn guest_vcpus(options: &Options<'_>) -> usize {
    use crate::cpus::{self, CpuState};
    let mut n = 1;
    while n < crate::config::MAX_CPUS && cpus::state(n) == CpuState::Ready {
        n += 1;
    }
    match options.cpus {
        Some(max) => n.min(max as usize),
        None => n,
    }
}

/// Parks this hart for good (interrupts off, WFI).
fn park() -> ! {
    csr::set_sie(0);
    loop {
        csr::wfi();
    }
}

/// Starts every other hart of the host device tree with SBI HSM `hart_start`, one at a time: hart n
/// (n-th in the tree after the boot hart) gets stack slot n, sets its own H-extension CSRs, prints its
/// ready line and checks in, then parks. A hart that `hart_start` refuses, that does not check in, or
/// that fails its bring-up (only on purpose: `libvmm.selftest=ap-fail`, the hart's own setup cannot
/// fail) is reported by number; `libvmm.ap_failure=stop` stops the boot then.
fn start_harts(
    host: &HostPlatform,
    boot_hart: u64,
    options: &Options<'_>,
) -> Result<(), StopReason> {
    use crate::config::{AP_CHECKIN_TIMEOUT_US, MAX_CPUS};
    use crate::cpus::{self, CpuState};
    let mut con = Uart;
    let listed = (host.harts as usize).min(MAX_CPUS);
    if host.harts <= 1 {
        return Ok(());
    }
    if host.harts as usize > MAX_CPUS {
        crate::vmm_print!(
            &mut con,
            "libvmm: {} harts listed; harts beyond MAX_CPUS ({}) are left alone\n",
            host.harts,
            MAX_CPUS
        );
    }
    let fail = || match options.ap_failure {
        crate::cmdline::ApFailure::Continue => Ok(()),
        crate::cmdline::ApFailure::Stop => Err(StopReason::Platform(
            "a hart failed bring-up (libvmm.ap_failure=stop)",
        )),
    };
    let aps = host.hart_ids[..listed]
        .iter()
        .filter(|&&h| h != boot_hart)
        .count();
    if cpus::arm_selftest(options.selftest, aps).is_none()
        && matches!(options.selftest, Some(crate::cmdline::Selftest::ApFail(_)))
    {
        crate::vmm_print!(
            &mut con,
            "libvmm: selftest ap-fail: no such hart; none fails\n"
        );
    }
    let ticks =
        (host.timebase_hz.max(1) as u128 * AP_CHECKIN_TIMEOUT_US as u128 / 1_000_000) as u64;
    let mut n = 0;
    let mut ready = 1;
    HART_OF[0].store(boot_hart, Ordering::Relaxed);
    for &hart in host.hart_ids[..listed].iter().filter(|&&h| h != boot_hart) {
        n += 1;
        HART_OF[n].store(hart, Ordering::Relaxed);
        let err = devices::hart_start(hart, arch::entry::secondary_entry(), n as u64);
        if err != 0 {
            crate::vmm_print!(
                &mut con,
                "libvmm: CPU {} (hart {}): hart_start refused (SBI error {})\n",
                n,
                hart,
                err
            );
            fail()?;
            continue;
        }
        let end = csr::time().saturating_add(ticks);
        while cpus::state(n) == CpuState::NotStarted && csr::time() < end {
            core::hint::spin_loop();
        }
        match cpus::state(n) {
            CpuState::Ready => ready += 1,
            CpuState::Failed => fail()?,
            CpuState::NotStarted => {
                crate::vmm_print!(
                    &mut con,
                    "libvmm: CPU {} (hart {}): did not start\n",
                    n,
                    hart
                );
                fail()?;
            }
        }
    }
    crate::vmm_print!(
        &mut con,
        "libvmm: {} hart(s) virtualized; hart {} runs vCPU 0, the others wait for the guest to start them\n",
        ready,
        boot_hart
    );
    Ok(())
}

/// A hart started by [`start_harts`], on its own stack (slot `slot`, from `_start_hart`).
#[allow(unsafe_code)] // `#[no_mangle]` only: the symbol the entry assembly calls.
#[no_mangle]
extern "C" fn libvmm_riscv64_hart_main(hartid: u64, slot: u64) -> ! {
    // `libvmm.selftest=ap-fail`: this hart's bring-up fails on purpose, reported as a real failure.
    if crate::cpus::selftest_fails(slot as usize) {
        crate::vmm_print!(
            &mut Uart,
            "libvmm: CPU {}: bring-up failed: selftest (hart {})\n",
            slot,
            hartid
        );
        crate::cpus::check_in(slot as usize, false);
        park()
    }
    hw::ap_bring_up();
    crate::vmm_print!(
        &mut Uart,
        "libvmm: CPU {}: {} ready (hart {})\n",
        slot,
        BackendId::RiscvH.name(),
        hartid
    );
    crate::cpus::check_in(slot as usize, true);
    // Parked until the boot hart publishes the VM (a kick wakes it); a hart beyond the guest's vCPUs
    // stays parked.
    csr::set_sie(1 << crate::riscv::csr::IRQ_S_SOFT);
    let f = loop {
        csr::clear_sip(1 << crate::riscv::csr::IRQ_S_SOFT);
        if let Some(f) = FACTS.get() {
            break f;
        }
        csr::wfi();
    };
    let cpu = slot as usize;
    if cpu >= crate::smp::SHARED.cpu_count() {
        park()
    }
    let platform = RiscvPlatform {
        console: Uart,
        timebase_hz: f.timebase_hz,
        limit: f.limit,
        zkr: f.zkr,
        weak: mix(csr::time() ^ cpu as u64),
    };
    let mut vm = Vm::new(f.mem, platform);
    vm.map = f.map;
    vm.cpu = cpu;
    hw::join_vm(f.hgatp, &f.isa, f.sstc);
    let stop = vcpu_main(&mut vm, &f, None, hw::HwHart);
    let stop = super::finish(&mut vm, stop, f.stats, park);
    crate::console::stop_line(&mut Uart, stop.code(), format_args!("{stop}"));
    devices::exit(stop.code())
}

/// Applies `libvmm.isa=-ext,+ext,...` from the command line through the per-guest ISA registers (the
/// KVM ONE_REG way: by register id), reporting each refusal, then lists the registers (get-reg-list).
fn configure_isa(isa: &mut GuestIsa, spec: &str, con: &mut Uart) {
    use crate::riscv::guest_isa::Reg;
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

#[allow(unsafe_code)] // `#[no_mangle]` only: the symbol the entry assembly calls.
#[no_mangle]
extern "C" fn libvmm_riscv64_main(hartid: u64, dtb: u64, entry_cycles: u64) -> ! {
    let mut con = Uart;
    // The `time` counter at entry is the only entropy an S-mode VMM has here (no Zkr on QEMU's rv64).
    crate::console::announce_token(
        &mut con,
        crate::console::make_token(csr::time() ^ entry_cycles << 32 ^ dtb),
    );
    let mut machine = RiscvMachine {
        hartid,
        dtb_addr: dtb,
        entry_cycles,
        con,
        host: None,
        dtb_len: 0,
        bootargs: "",
    };
    let stop = super::run(&mut machine, crate::arch::payload());
    crate::console::stop_line(&mut Uart, stop.code(), format_args!("{stop}"));
    devices::exit(stop.code())
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    let mut con = Uart;
    crate::vmm_print!(&mut con, "libvmm: panic: {}\n", info);
    crate::console::stop_line(
        &mut con,
        StopCode::VmmPanic as u8,
        format_args!("VMM panic"),
    );
    devices::exit(StopCode::VmmPanic as u8)
}
