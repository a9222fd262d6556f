//! The one generic vCPU run loop: enter the guest through the backend, turn its exit into a policy
//! decision, reply or stop. Every backend (SVM, VMX, RISC-V H, TDX) runs through this same loop.
#![forbid(unsafe_code)]

use crate::backend::Backend;
use crate::config::IO_LOG_LIMIT;
use crate::exit::{Access, Exit, Fault, Output, Reply};
use crate::policy::{apic, cpuid, cr, hypercall, io, msr, sbi};
pub(crate) use crate::vm::{ExitReason, Platform, StopReason, Vm};
use crate::x86::apic::delivery::{EntryAction, HaltAction};

/// Decides the reply to one exit, or that the VM stops. Every arm but the hypercall and SBI ones counts
/// its exit by reason (`vm.stats`; those are the loop's total minus the rest).
///
/// The hot exits (CPUID, hypercalls, SBI calls) hand their reply to the backend from their own arm: the
/// compiler then specialises the backend's `reply` for the one output each produces, instead of joining
/// every arm into one `Reply` value and taking it apart again (about 20 emulated instructions per exit).
pub(crate) fn handle<B: Backend, P: Platform>(
    exit: Exit,
    cpu: &mut B,
    vm: &mut Vm<'_, P>,
) -> Result<(), StopReason> {
    let reply = match exit {
        Exit::Cpuid { leaf, subleaf } => {
            let cr4 = cpu.guest_cr4();
            vm.stats.add(ExitReason::Cpuid);
            let host = |l, s| vm.platform.host_cpuid(l, s);
            cpu.reply(Reply::Complete(Output::Cpuid(cpuid::answer(
                leaf,
                subleaf,
                B::ID,
                cr4,
                vm.topology(),
                host,
            ))));
            return Ok(());
        }
        Exit::Hypercall { nr, args } => match hypercall::dispatch(nr, args, vm) {
            hypercall::Outcome::Return(v) => {
                cpu.reply(Reply::Complete(Output::Hypercall(v)));
                return Ok(());
            }
            hypercall::Outcome::Stop(s) => return Err(s),
        },
        Exit::Sbi { ext, fid, ref args } => {
            let r = sbi::decide(ext, fid, args, vm, &mut |vm| remote_events(cpu, vm))?;
            cpu.reply(r);
            return Ok(());
        }
        Exit::MsrRead { msr } => {
            vm.stats.add(ExitReason::MsrRead);
            let r = msr_read(cpu, vm, msr);
            reply_and_deliver(cpu, vm, r);
            return Ok(());
        }
        Exit::MsrWrite { msr, value } => {
            vm.stats.add(ExitReason::MsrWrite);
            let r = msr_write(cpu, vm, msr, value);
            reply_and_deliver(cpu, vm, r);
            return Ok(());
        }
        Exit::Io(access) => {
            vm.stats.add(ExitReason::Io);
            #[cfg(target_arch = "x86_64")]
            if access.string {
                return emulate(cpu, vm, false);
            }
            if vm.io_logged < IO_LOG_LIMIT {
                vm.io_logged += 1;
                crate::vmm_print!(
                    vm.platform.console(),
                    "libvmm: denied {} of port {:#x} (size {})\n",
                    if access.write { "write" } else { "read" },
                    access.port,
                    access.size
                );
            }
            io::decide(&access)
        }
        Exit::GuestMemoryFault { gpa, access } => {
            vm.stats.add(ExitReason::GuestMemoryFault);
            return nested_fault(cpu, vm, gpa, access);
        }
        Exit::Halt => {
            vm.stats.add(ExitReason::Halt);
            if !B::VIRTUAL_APIC {
                return idle(cpu, vm);
            }
            let r = halt(cpu, vm)?;
            reply_and_deliver(cpu, vm, r);
            return Ok(());
        }
        Exit::VirtInsn(_) => {
            vm.stats.add(ExitReason::VirtInsn);
            Reply::Inject(Fault::InvalidOpcode)
        }
        Exit::IllegalInsn { raw } => {
            vm.stats.add(ExitReason::IllegalInsn);
            if cpu.emulate_illegal(raw) {
                return Ok(());
            }
            Reply::Inject(Fault::InvalidOpcode)
        }
        Exit::UdIntercept => {
            vm.stats.add(ExitReason::UdIntercept);
            #[cfg(target_arch = "x86_64")]
            if vm.emu.force {
                return emulate(cpu, vm, true);
            }
            Reply::Inject(Fault::InvalidOpcode)
        }
        Exit::TripleFault => {
            vm.stats.add(ExitReason::TripleFault);
            return Err(StopReason::TripleFault);
        }
        Exit::HostEvent => {
            vm.stats.add(ExitReason::HostEvent);
            // The host interrupt behind the exit, which the hardware left pending (SVM's INTR exit: the
            // world switch never takes one; VMX's external-interrupt exit: not acknowledged on exit), is
            // taken here, once, whatever it was (a kick, the host timer); then the shared state and the
            // time limit are looked at.
            vm.platform.clear_kick();
            shared_state(cpu, vm)?;
            if let Some(ms) = vm.platform.time_limit_exceeded() {
                return Err(StopReason::TimeLimit { ms });
            }
            if B::VIRTUAL_APIC {
                host_timer(cpu, vm);
                reply_and_deliver(cpu, vm, Reply::Resume);
                return Ok(());
            }
            Reply::Resume
        }
        // The checks look at the guest's CPUID, as the guest sees it.
        Exit::CrWrite { cr, value } => {
            vm.stats.add(ExitReason::CrWrite);
            let state = cpu.cr_state();
            let guest = |l, s| {
                cpuid::answer(l, s, B::ID, state.cr4, vm.topology(), |l, s| {
                    vm.platform.host_cpuid(l, s)
                })
            };
            cr::write(cr, value, &state, guest)?
        }
        Exit::Xsetbv { index, value } => {
            vm.stats.add(ExitReason::Xsetbv);
            let state = cpu.cr_state();
            let guest = |l, s| {
                cpuid::answer(l, s, B::ID, state.cr4, vm.topology(), |l, s| {
                    vm.platform.host_cpuid(l, s)
                })
            };
            cr::xsetbv(index, value, &state, guest)
        }
        Exit::Unknown { code, info1, info2 } => {
            vm.stats.add(ExitReason::Unknown);
            return Err(StopReason::UnhandledExit { code, info1, info2 });
        }
    };
    cpu.reply(reply);
    Ok(())
}

/// A nested fault: the first touch of a deferred block, device memory (x86: the emulator), or a
/// violation that stops the VM. Out of the loop: none of it is a hot exit.
#[cold]
#[inline(never)]
fn nested_fault<B: Backend, P: Platform>(
    cpu: &mut B,
    vm: &mut Vm<'_, P>,
    gpa: u64,
    access: Access,
) -> Result<(), StopReason> {
    if vm.lazy.is_lazy(gpa) && access != Access::Execute {
        return first_touch(cpu, vm, gpa, access);
    }
    #[cfg(target_arch = "x86_64")]
    if vm.emu.emulator.is_device(gpa) {
        return emulate(cpu, vm, false);
    }
    Err(StopReason::GuestMemoryViolation {
        gpa,
        access,
        mapped: vm.map.perm_at(gpa),
    })
}

/// A nested fault in a block of guest memory deferred at boot (`lazy.rs`): the vCPU that claims the
/// block zeroes it and has the backend map it read+write, and every vCPU re-enters at the same
/// instruction, which now finds memory. So the guest never sees what the host left there, and boot does
/// not pay for memory the guest never uses. With guest SMP: a vCPU that faults on a block another one
/// mapped meanwhile (a stale negative nested-TLB entry here) fences its own nested translations and
/// resumes; one that faults while another owns the block re-enters to fault again after a bounded wait.
#[cold]
fn first_touch<B: Backend, P: Platform>(
    cpu: &mut B,
    vm: &mut Vm<'_, P>,
    gpa: u64,
    access: Access,
) -> Result<(), StopReason> {
    use crate::lazy::Touch;
    match vm
        .lazy
        .first_touch(&vm.mem, gpa, |b| cpu.map_zeroed_block(b))
    {
        Touch::Mapped | Touch::Busy => {}
        Touch::MappedElsewhere => cpu.nested_tables_changed(),
        Touch::NotLazy => {
            return Err(StopReason::GuestMemoryViolation {
                gpa,
                access,
                mapped: vm.map.perm_at(gpa),
            })
        }
        Touch::MapFailed => {
            return Err(StopReason::Platform(
                "the nested tables cannot map a block of guest memory on first touch",
            ))
        }
    }
    cpu.reply(Reply::Resume);
    Ok(())
}

/// The cold exits that run the instruction emulator (x86): string port I/O, a nested page fault on a
/// device range (MMIO), and with `forced` the #UD intercept of forced emulation. The emulator works on
/// the backend's guest state ([`Backend::emulation`]); what it needs answered goes to the same policies
/// as the exits it stands for (port I/O, MMIO, CPUID), and what it retires is counted into the virtual
/// PMU. Its exceptions are the guest's; its stops stop the VM with the reason.
#[cfg(target_arch = "x86_64")]
#[cold]
#[inline(never)]
fn emulate<B: Backend, P: Platform>(
    cpu: &mut B,
    vm: &mut Vm<'_, P>,
    forced: bool,
) -> Result<(), StopReason> {
    use crate::config::EMU_IO_BATCH;
    use crate::exit::IoAccess;
    use crate::x86::emulate::{GuestCpu, IoDir, Outcome};
    let Some(mut g) = cpu.emulation() else {
        return Err(StopReason::Unsupported(
            "instruction emulation on this backend",
        ));
    };
    // The emulator reads and writes guest memory wherever the instruction says: every block still
    // holding host data is zeroed first (once per VM: only guests that need the emulator pay for it).
    let (base, size) = (vm.mem.base(), vm.mem.size());
    if vm.lazy.zero_stale(&vm.mem, base, size).is_err() {
        return Err(StopReason::Platform(
            "a block of guest memory stayed busy on another vCPU",
        ));
    }
    let mut buf = [0u8; EMU_IO_BATCH];
    let topo = vm.topology();
    let emu = &mut vm.emu;
    let outcome = if forced {
        emu.emulator.emulate_forced(&mut g, &mut vm.mem, &mut buf)
    } else {
        emu.emulator.emulate(&mut g, &mut vm.mem, &mut buf)
    };
    let retire = match outcome {
        Outcome::Retired(r) => r,
        Outcome::Mmio(m) => {
            emu.mmio += 1;
            let v = crate::policy::mmio::access(&mut emu.test_scratch, m.gpa, m.size, m.write);
            m.complete(&mut g, v)
        }
        Outcome::Cpuid(c) => {
            let cr4 = g.cr4();
            let regs = cpuid::answer(c.leaf, c.subleaf, B::ID, cr4, topo, |l, s| {
                vm.platform.host_cpuid(l, s)
            });
            c.complete(&mut g, regs)
        }
        Outcome::PortIo(p) => {
            let size = usize::from(p.size);
            for (i, el) in buf[..p.bytes()].chunks_exact_mut(size).enumerate() {
                let mut v = [0u8; 4];
                v[..size].copy_from_slice(el);
                let access = IoAccess {
                    port: p.port,
                    size: p.size,
                    write: p.dir == IoDir::Out,
                    value: u32::from_le_bytes(v),
                    string: false,
                };
                match io::decide(&access) {
                    Reply::Complete(Output::IoIn { value, .. }) => {
                        el.copy_from_slice(&value.to_le_bytes()[..size])
                    }
                    Reply::Complete(_) => {}
                    // The same answer for every element of one port: the first decides, nothing moved.
                    _ => {
                        debug_assert_eq!(i, 0);
                        g.inject(crate::x86::emulate::Exception::GeneralProtection(0));
                        return Ok(());
                    }
                }
            }
            emu.string_io += u64::from(p.count);
            p.complete(&mut g, &mut vm.mem, &buf)
                .map_err(StopReason::Emulation)?
        }
        Outcome::Exception(e) => {
            g.inject(e);
            return Ok(());
        }
        Outcome::Stop(s) => return Err(StopReason::Emulation(s)),
    };
    if retire.instruction {
        emu.retired += 1;
        emu.pmu.retire(true, retire.branch, g.cpl());
    }
    Ok(())
}

/// Carries out what other vCPUs posted for this one (shared state, `smp`): IPIs and fences through the
/// backend; fences are then marked done (their requester waits for that).
#[cold]
#[inline(never)]
fn remote_events<B: Backend, P: Platform>(cpu: &mut B, vm: &mut Vm<'_, P>) {
    let (ipis, fences) = vm.smp.take_events(vm.cpu);
    cpu.remote_events(ipis, fences);
    if B::VIRTUAL_APIC {
        // x86: fixed vectors other vCPUs sent, into this vCPU's own x2APIC.
        for (w, bits) in vm.smp.take_vectors(vm.cpu).into_iter().enumerate() {
            for b in (0..64).filter(|b| bits & (1 << b) != 0) {
                vm.irq.apic.receive_fixed((w * 64 + b) as u8);
            }
        }
    }
    if fences != 0 {
        vm.smp.fences_done(vm.cpu, fences);
        let waiters = vm.smp.fence_waiters();
        for w in (0..64).filter(|&w| waiters & (1 << w) != 0 && w != vm.cpu) {
            vm.platform.kick(w);
        }
    }
}

/// On a host event: the VM's stop (another vCPU's kick), or what other vCPUs posted for this one.
/// Out of line, so the hot exits' fused dispatch in `handle` stays as it was.
#[inline(never)]
fn shared_state<B: Backend, P: Platform>(
    cpu: &mut B,
    vm: &mut Vm<'_, P>,
) -> Result<(), StopReason> {
    if vm.smp.stopping() {
        return Err(StopReason::StoppedElsewhere);
    }
    if vm.smp.has_events(vm.cpu) {
        // x86 INIT: the vCPU leaves guest mode into wait-for-SIPI (its CPU waits for a STARTUP).
        if vm.smp.take_init(vm.cpu) {
            return Err(StopReason::VcpuOff);
        }
        remote_events(cpu, vm);
    }
    Ok(())
}

/// A halt with no interrupt source of its own (RISC-V WFI with no timer armed): with another vCPU
/// running, an IPI may still come, so the physical CPU waits for a kick (the WFI is re-executed and
/// retires once the IPI is pending for the guest); alone, nothing can wake the guest and the VM stops.
#[cold]
#[inline(never)]
fn idle<B: Backend, P: Platform>(cpu: &mut B, vm: &mut Vm<'_, P>) -> Result<(), StopReason> {
    loop {
        vm.platform.clear_kick();
        if vm.smp.stopping() {
            return Err(StopReason::StoppedElsewhere);
        }
        if vm.smp.has_events(vm.cpu) {
            remote_events(cpu, vm);
            cpu.reply(Reply::Resume);
            return Ok(());
        }
        if let Some(ms) = vm.platform.time_limit_exceeded() {
            return Err(StopReason::TimeLimit { ms });
        }
        if vm.smp.active() <= 1 {
            return Err(StopReason::GuestHalted);
        }
        vm.platform.idle();
    }
}

/// Runs the vCPU until the VM stops.
pub(crate) fn run<B: Backend, P: Platform>(cpu: &mut B, vm: &mut Vm<'_, P>) -> StopReason {
    loop {
        let exit = match cpu.run(&vm.mem) {
            Ok(exit) => exit,
            Err(e) => return StopReason::Backend(e),
        };
        vm.exits += 1;
        if let Err(stop) = handle(exit, cpu, vm) {
            return stop;
        }
    }
}

/// Replies, then looks at delivery when a vector is pending or a window is open. Only the exits that can
/// change what is deliverable call this (APIC MSR accesses, host timer and interrupt-window exits, HLT):
/// a check in the loop itself, paid by every exit, cost the CPUID and hypercall round trips about 80
/// emulated instructions on SVM (measured with `cargo xtask bench`), as it broke their fused
/// decode-and-dispatch. Everything that makes a vector pending or deliverable is one of these exits: IRR
/// fills only from APIC MSR writes and timer expiries, PPR changes only through TPR and EOI writes, and
/// a guest that cannot take a pending vector gets an interrupt window, whose exit comes back here.
#[inline(never)]
fn reply_and_deliver<B: Backend, P: Platform>(cpu: &mut B, vm: &mut Vm<'_, P>, reply: Reply) {
    cpu.reply(reply);
    if B::VIRTUAL_APIC && vm.irq.needs_attention() {
        deliver(cpu, vm);
    }
}

/// Before an entry with a vector pending or a window open: inject what the guest can take now, or open
/// an interrupt window (its exit comes back here), or close one no longer needed.
#[cold]
#[inline(never)]
fn deliver<B: Backend, P: Platform>(cpu: &mut B, vm: &mut Vm<'_, P>) {
    let want_window = match vm
        .irq
        .apic
        .before_entry(cpu.interruptibility(), cpu.event_queued())
    {
        EntryAction::Inject(vector) => {
            cpu.inject_interrupt(vector);
            false
        }
        EntryAction::OpenWindow => true,
        EntryAction::None => false,
    };
    if want_window != vm.irq.window_open {
        cpu.request_interrupt_window(want_window);
        vm.irq.window_open = want_window;
    }
}

/// Arms the host timer for the APIC's next deadline when it changed (always with `spent`: after a host
/// event the one-shot that fired must be programmed again): the platform's, and the backend's when it
/// keeps guest time itself.
fn rearm<B: Backend, P: Platform>(cpu: &mut B, vm: &mut Vm<'_, P>, now: u64, spent: bool) {
    let next = vm.irq.apic.next_deadline(now);
    if spent || next != vm.irq.armed {
        vm.irq.armed = next;
        vm.platform.arm_guest_timer(next);
        cpu.set_host_deadline(vm.platform.host_deadline(), now);
    }
}

/// A host timer exit: the APIC's timer catches up with the guest TSC.
#[inline(never)]
fn host_timer<B: Backend, P: Platform>(cpu: &mut B, vm: &mut Vm<'_, P>) {
    let now = vm.platform.guest_tsc();
    vm.irq.apic.tick(now);
    rearm(cpu, vm, now, true);
}

/// RDMSR: the APIC's MSRs go to the virtual x2APIC, the rest to the MSR policy. Out of line: the hot
/// exits' fused decode-and-dispatch in `handle` stays as it was (measured with `cargo xtask bench`).
#[inline(never)]
fn msr_read<B: Backend, P: Platform>(cpu: &B, vm: &mut Vm<'_, P>, msr: u32) -> Reply {
    if B::VIRTUAL_APIC && apic::owns(msr) {
        let now = vm.platform.guest_tsc();
        return apic::read(&mut vm.irq.apic, msr, now);
    }
    #[cfg(target_arch = "x86_64")]
    if let Some(r) = vm.emu.pmu.read(msr) {
        return match r {
            Ok(v) => Reply::Complete(Output::MsrValue(v)),
            Err(_) => Reply::Inject(Fault::GeneralProtection(0)),
        };
    }
    msr::read(msr, |v| cpu.virtual_msr(v))
}

/// WRMSR, routed as [`msr_read`].
#[inline(never)]
fn msr_write<B: Backend, P: Platform>(
    cpu: &mut B,
    vm: &mut Vm<'_, P>,
    msr: u32,
    value: u64,
) -> Reply {
    if B::VIRTUAL_APIC && apic::owns(msr) {
        return apic_write(cpu, vm, msr, value);
    }
    #[cfg(target_arch = "x86_64")]
    if let Some(r) = vm.emu.pmu.write(msr, value) {
        return match r {
            Ok(()) => Reply::Complete(Output::Nothing),
            Err(_) => Reply::Inject(Fault::GeneralProtection(0)),
        };
    }
    msr::write(msr, value, |v| cpu.virtual_msr(v))
}

fn apic_write<B: Backend, P: Platform>(
    cpu: &mut B,
    vm: &mut Vm<'_, P>,
    msr: u32,
    value: u64,
) -> Reply {
    let now = vm.platform.guest_tsc();
    let (reply, timer_changed, ipi) = apic::write(&mut vm.irq.apic, msr, value, now);
    if timer_changed {
        rearm(cpu, vm, now, false);
    }
    if let Some(ipi) = ipi {
        apic::send(vm, ipi);
    }
    reply
}

/// HLT (the reply retires it): wake at once when an interrupt can be taken, sleep the physical CPU
/// until the APIC's timer would deliver one, or stop when nothing can ever wake the guest. The time
/// limit still ends a sleeping guest.
///
/// Guest SMP: while another vCPU runs, an IPI (or an INIT, even with IF = 0) may still come, so a halt
/// with nothing of its own to wake it waits for a kick instead of stopping; what other vCPUs posted is
/// taken at every wake-up. When every running vCPU waits so, with nothing posted for any, nothing can
/// ever wake the guest: the last to halt stops the VM.
#[inline(never)]
fn halt<B: Backend, P: Platform>(cpu: &mut B, vm: &mut Vm<'_, P>) -> Result<Reply, StopReason> {
    let interrupts_enabled = cpu.interruptibility().interrupts_enabled;
    let smp = vm.smp.cpu_count() > 1;
    loop {
        if smp {
            shared_state(cpu, vm)?;
        }
        let now = vm.platform.guest_tsc();
        match vm.irq.apic.on_halt(now, interrupts_enabled) {
            HaltAction::Wake => {
                cpu.clear_interrupt_shadow();
                rearm(cpu, vm, now, false);
                return Ok(Reply::Complete(Output::Nothing));
            }
            HaltAction::Stop if !smp => return Err(StopReason::GuestHalted),
            HaltAction::Stop => {
                let halted = vm.smp.enter_halt();
                if halted >= vm.smp.active() && !vm.smp.any_events() {
                    vm.smp.leave_halt();
                    return Err(StopReason::GuestHalted);
                }
                vm.platform.idle();
                vm.smp.leave_halt();
            }
            HaltAction::SleepUntil(at) => {
                rearm(cpu, vm, now, false);
                vm.platform.sleep_until(at);
            }
        }
        if let Some(ms) = vm.platform.time_limit_exceeded() {
            return Err(StopReason::TimeLimit { ms });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exit::Access;
    use crate::exit::{IoAccess, VirtInsn};
    use crate::guest_mem::GuestMemory;
    use crate::testing::{ModelPlatform, ScriptedBackend};
    use crate::vm::StopReason;
    use libvmm_abi::stop::StopCode;
    use libvmm_abi::{Errno, Hypercall};
    use std::vec::Vec;

    const BASE: u64 = 0x200_0000;

    fn run_script(
        script: Vec<Exit>,
        mem: &mut [u8],
    ) -> (StopReason, ScriptedBackend, Vec<u8>, u64) {
        let mut cpu = ScriptedBackend {
            script,
            replies: Vec::new(),
            last: None,
        };
        let mut vm = Vm::new(GuestMemory::new(BASE, mem), ModelPlatform::default());
        let stop = run(&mut cpu, &mut vm);
        (stop, cpu, vm.platform.console.0, vm.exits)
    }

    fn hc(nr: Hypercall, a: [u64; 4]) -> Exit {
        Exit::Hypercall {
            nr: nr as u64,
            args: a,
        }
    }

    #[test]
    fn write_hypercall_copies_guest_bytes_to_the_console_in_one_exit() {
        let mut mem = vec![0u8; 0x1000];
        mem[0x10..0x15].copy_from_slice(b"hello");
        let (stop, cpu, out, exits) = run_script(
            vec![
                hc(Hypercall::Write, [1, BASE + 0x10, 5, 0]),
                hc(Hypercall::Exit, [0; 4]),
            ],
            &mut mem,
        );
        assert_eq!(stop, StopReason::PayloadExit(0));
        assert_eq!(stop.code(), 0);
        assert_eq!(out, b"hello");
        assert_eq!(cpu.replies[0].1, Reply::Complete(Output::Hypercall(5)));
        assert_eq!(exits, 2);
    }

    #[test]
    fn hostile_write_arguments_get_error_codes_and_the_vm_keeps_running() {
        let mut mem = vec![0u8; 0x1000];
        let script = vec![
            hc(Hypercall::Write, [1, 0x10_0000, 16, 0]), // VMM image address
            hc(Hypercall::Write, [1, BASE + 0x10, u64::MAX, 0]), // overflowing length
            hc(Hypercall::Write, [1, u64::MAX, 2, 0]),   // wrapping pointer
            hc(Hypercall::Write, [1, BASE + 0xff0, 0x11, 0]), // straddles the end
            hc(Hypercall::Write, [7, BASE, 1, 0]),       // bad fd
            Exit::Hypercall {
                nr: 0xdead,
                args: [0; 4],
            }, // unknown number
            hc(Hypercall::Exit, [3, 0, 0, 0]),
        ];
        let (stop, cpu, out, _) = run_script(script, &mut mem);
        assert_eq!(stop, StopReason::PayloadExit(3));
        let rets: Vec<Reply> = cpu.replies.iter().map(|r| r.1).collect();
        let f = Reply::Complete(Output::Hypercall(Errno::Fault.as_result()));
        assert_eq!(rets[..4], [f, f, f, f]);
        assert_eq!(
            rets[4],
            Reply::Complete(Output::Hypercall(Errno::Badf.as_result()))
        );
        assert_eq!(
            rets[5],
            Reply::Complete(Output::Hypercall(Errno::Nosys.as_result()))
        );
        assert!(out.is_empty());
    }

    #[test]
    fn a_fault_inside_guest_memory_names_what_the_map_allows_there() {
        let mut mem = vec![0u8; 0x100];
        let gmf = Exit::GuestMemoryFault {
            gpa: BASE + 0x10,
            access: Access::Execute,
        };
        let (stop, ..) = run_script(vec![gmf], &mut mem);
        assert_eq!(
            stop.to_string(),
            format!(
                "guest memory violation: execute of guest-physical {:#x}, mapped read+write, no execute (W^X)",
                BASE + 0x10
            )
        );
        assert_eq!(stop.code(), StopCode::GuestMemoryViolation as u8);
    }

    #[test]
    fn fatal_exits_stop_with_distinct_codes() {
        let mut mem = vec![0u8; 0x100];
        let gmf = Exit::GuestMemoryFault {
            gpa: 0x10_0000,
            access: Access::Write,
        };
        let (stop, ..) = run_script(vec![gmf], &mut mem);
        assert_eq!(
            stop,
            StopReason::GuestMemoryViolation {
                gpa: 0x10_0000,
                access: Access::Write,
                mapped: None
            }
        );
        assert_eq!(stop.code(), StopCode::GuestMemoryViolation as u8);
        let (stop, ..) = run_script(vec![Exit::TripleFault], &mut mem);
        assert_eq!(stop.code(), StopCode::TripleFault as u8);
        let (stop, ..) = run_script(vec![Exit::Halt], &mut mem);
        assert_eq!(stop, StopReason::GuestHalted);
        let (stop, ..) = run_script(
            vec![Exit::Unknown {
                code: 0x55,
                info1: 1,
                info2: 2,
            }],
            &mut mem,
        );
        assert_eq!(stop.code(), StopCode::GuestError as u8);
        let (stop, ..) = run_script(vec![hc(Hypercall::Abort, [0; 4])], &mut mem);
        assert_eq!(stop.code(), StopCode::PayloadAbort as u8);
        let (stop, ..) = run_script(vec![], &mut mem);
        assert_eq!(stop.code(), StopCode::BackendError as u8);
    }

    #[test]
    fn virtualization_instructions_are_ud_and_io_is_denied() {
        let mut mem = vec![0u8; 0x100];
        let script = vec![
            Exit::VirtInsn(VirtInsn::Vmrun),
            Exit::Io(IoAccess {
                port: 0xf4,
                size: 4,
                write: true,
                value: 0x10,
                string: false,
            }),
            Exit::MsrWrite {
                msr: crate::x86::msr::EFER,
                value: crate::x86::msr::EFER_LME
                    | crate::x86::msr::EFER_LMA
                    | crate::x86::msr::EFER_SVME,
            },
            Exit::MsrRead {
                msr: crate::x86::msr::EFER,
            },
            hc(Hypercall::ExitCount, [0; 4]),
            hc(Hypercall::Exit, [0; 4]),
        ];
        let (_, cpu, out, _) = run_script(script, &mut mem);
        assert_eq!(cpu.replies[0].1, Reply::Inject(Fault::InvalidOpcode));
        assert_eq!(cpu.replies[1].1, Reply::Complete(Output::Nothing));
        assert_eq!(cpu.replies[2].1, Reply::Inject(Fault::GeneralProtection(0)));
        assert_eq!(
            cpu.replies[3].1,
            Reply::Complete(Output::MsrValue(
                crate::x86::msr::EFER_LME | crate::x86::msr::EFER_LMA
            ))
        );
        assert_eq!(cpu.replies[4].1, Reply::Complete(Output::Hypercall(5)));
        assert!(String::from_utf8(out)
            .unwrap()
            .contains("denied write of port 0xf4"));
    }

    /// The entropy hypercall: 63 bits of the host's source (never negative, so never an error), or
    /// -ENOSYS without a source.
    #[test]
    fn the_entropy_hypercall_gives_the_hosts_bits_or_enosys() {
        let mut mem = vec![0u8; 0x100];
        for (source, want) in [
            (Some(u64::MAX), i64::MAX),
            (Some(0x1234), 0x1234),
            (None, libvmm_abi::Errno::Nosys.as_result()),
        ] {
            let mut cpu = ScriptedBackend {
                script: vec![hc(Hypercall::Entropy, [0; 4]), hc(Hypercall::Exit, [0; 4])],
                replies: Vec::new(),
                last: None,
            };
            let platform = ModelPlatform {
                entropy: source,
                ..Default::default()
            };
            let mut vm = Vm::new(GuestMemory::new(BASE, &mut mem), platform);
            assert_eq!(run(&mut cpu, &mut vm), StopReason::PayloadExit(0));
            assert_eq!(cpu.replies[0].1, Reply::Complete(Output::Hypercall(want)));
        }
    }

    /// A `write` of guest memory the guest never touched (a block still deferred, holding what the host
    /// left there) prints zeros, and the block is zeroed for good: never stale host bytes.
    #[test]
    fn a_write_from_never_touched_memory_prints_zeros() {
        const MIB: u64 = 1 << 20;
        let mut mem = vec![b'S'; 4 << 20];
        mem[..16].copy_from_slice(b"host secret here");
        mem[2 << 20..(2 << 20) + 16].copy_from_slice(b"host secret here");
        let mut cpu = ScriptedBackend {
            script: vec![
                hc(Hypercall::Write, [1, BASE + 2 * MIB, 16, 0]),
                hc(Hypercall::Exit, [0; 4]),
            ],
            replies: Vec::new(),
            last: None,
        };
        let mut vm = Vm::new(GuestMemory::new(BASE, &mut mem), ModelPlatform::default());
        vm.map.defer_from(BASE + 1);
        vm.lazy = crate::lazy::LazyBlocks::armed_for_test(&vm.map);
        assert_eq!(run(&mut cpu, &mut vm), StopReason::PayloadExit(0));
        assert_eq!(vm.platform.console.0, vec![0u8; 16]);
        assert!(vm
            .mem
            .slice(BASE + 2 * MIB, 2 * MIB)
            .unwrap()
            .iter()
            .all(|&b| b == 0));
        assert!(
            !vm.lazy.is_stale(BASE + 2 * MIB) && !vm.lazy.is_mapped(BASE + 2 * MIB),
            "zeroed, mapped on the guest's own touch"
        );
    }

    #[test]
    fn exits_are_counted_by_reason_and_printed_with_their_total() {
        let mut mem = vec![0u8; 0x100];
        let mut cpu = ScriptedBackend {
            script: vec![
                Exit::Cpuid {
                    leaf: 0,
                    subleaf: 0,
                },
                Exit::Cpuid {
                    leaf: 1,
                    subleaf: 0,
                },
                Exit::HostEvent,
                hc(Hypercall::ExitCount, [0; 4]),
                Exit::VirtInsn(VirtInsn::Vmrun),
                hc(Hypercall::Exit, [0; 4]),
            ],
            replies: Vec::new(),
            last: None,
        };
        let mut vm = Vm::new(GuestMemory::new(BASE, &mut mem), ModelPlatform::default());
        let stop = run(&mut cpu, &mut vm);
        assert_eq!(stop, StopReason::PayloadExit(0));
        assert_eq!(cpu.replies[3].1, Reply::Complete(Output::Hypercall(4)));
        assert_eq!(vm.exits, 6);
        let seen: Vec<(&str, u64)> = vm.stats.seen(vm.exits).collect();
        assert_eq!(
            seen,
            [
                ("cpuid", 2),
                ("hypercall", 2),
                ("virt-insn", 1),
                ("host-event", 1)
            ]
        );
        vm.stats.print(vm.exits, vm.platform.console());
        assert_eq!(
            String::from_utf8(vm.platform.console.0.clone()).unwrap(),
            "libvmm: stats: exit cpuid 2\nlibvmm: stats: exit hypercall 2\n\
             libvmm: stats: exit virt-insn 1\nlibvmm: stats: exit host-event 1\n\
             libvmm: stats: total 6 exits\n"
        );
    }

    #[test]
    fn io_logging_is_rate_limited() {
        let mut mem = vec![0u8; 0x100];
        let mut script: Vec<Exit> = (0..100)
            .map(|_| {
                Exit::Io(IoAccess {
                    port: 0x80,
                    size: 1,
                    write: true,
                    value: 0,
                    string: false,
                })
            })
            .collect();
        script.push(hc(Hypercall::Exit, [0; 4]));
        let (_, _, out, _) = run_script(script, &mut mem);
        assert_eq!(
            String::from_utf8(out).unwrap().lines().count(),
            IO_LOG_LIMIT as usize
        );
    }
}

#[cfg(test)]
mod irq_tests;
