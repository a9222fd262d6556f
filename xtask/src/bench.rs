//! `cargo xtask bench`: deterministic figures. Each backend's `exitbench` image boots with the
//! emulator counting instructions (QEMU `-icount shift=0,sleep=off -seed 1`: the guest's cycle counter
//! advances one tick per emulated instruction), so the same build gives the same numbers run after run.
//! Sizes come from the image's ELF sections, with the embedded payload (`.payload`) left out.
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use object::{Object, ObjectSection};

use crate::args::Args;
use crate::backend::Backend;
use crate::build::build_image;
use crate::cmd::target_dir;
use crate::run::{boot, BootOptions};

/// VMM size by section class, in bytes.
#[derive(Default, Debug)]
pub struct Sizes {
    pub text: u64,
    pub rodata: u64,
    pub data: u64,
    pub bss: u64,
    pub payload: u64,
}

pub fn image_sizes(image: &Path) -> Result<Sizes, String> {
    let data = std::fs::read(image).map_err(|e| e.to_string())?;
    let elf = object::File::parse(&*data).map_err(|e| e.to_string())?;
    let mut s = Sizes::default();
    for sec in elf.sections() {
        let name = sec.name().unwrap_or("");
        let size = sec.size();
        match name {
            n if n.starts_with(".text") => s.text += size,
            n if n.starts_with(".rodata")
                || n.starts_with(".note")
                || n.starts_with(".srodata") =>
            {
                s.rodata += size
            }
            ".payload" => s.payload += size,
            n if n.starts_with(".data") || n.starts_with(".sdata") || n.starts_with(".got") => {
                s.data += size
            }
            n if n.starts_with(".bss") || n.starts_with(".sbss") => s.bss += size,
            _ => {}
        }
    }
    Ok(s)
}

/// The `bench: key=value` lines of a run.
fn bench_lines(output: &str) -> BTreeMap<String, i64> {
    output
        .lines()
        .filter_map(|l| l.trim_end_matches('\r').strip_prefix("bench: "))
        .filter_map(|kv| kv.split_once('='))
        .filter_map(|(k, v)| Some((k.to_string(), v.trim().parse().ok()?)))
        .collect()
}

/// Backends whose `exitbench` runs (TDX cannot run a payload on any emulator here).
pub const BENCHED: [Backend; 3] = [Backend::Svm, Backend::Vmx, Backend::Riscv];

/// Runs `exitbench` on one backend; returns its figures.
/// `long`: also the long SMP stress (`cargo xtask bench`; `--check`, a CI step, leaves it out).
/// `smp_cpus`: the SMP figures on this many CPUs only (`bench --cpus N`), instead of [`smp_counts`].
pub fn bench_backend(
    backend: Backend,
    long: bool,
    smp_cpus: Option<u32>,
) -> Result<BTreeMap<String, i64>, String> {
    let image = build_image(backend, "exitbench")?;
    let o = BootOptions {
        icount: true,
        ..BootOptions::new("", Duration::from_secs(120))
    };
    let out = boot(backend, &image, &o)?;
    match &out.verdict.result {
        Ok(0) => {}
        Ok(c) => {
            return Err(format!(
                "exitbench stopped with {c}: {}",
                out.verdict.reason
            ))
        }
        Err(e) => return Err(format!("exitbench: no trustworthy result: {e}")),
    }
    let mut figures = bench_lines(&out.output);
    // The boot figure must not grow with the guest's memory (blocks above the payload are zeroed on
    // first touch): the same boot with 8 MiB of guest memory, and with 256 MiB on a 512 MiB machine.
    for (key, mb, cmdline) in [
        ("vmm_entry_to_payload_mem8m", 128, "libvmm.mem=8M"),
        ("vmm_entry_to_payload_mem256m", 512, "libvmm.mem=256M"),
    ] {
        let b = crate::run::with_machine_memory(mb, || {
            boot(backend, &image, &BootOptions { cmdline, ..o })
        })?;
        match &b.verdict.result {
            Ok(0) => {}
            Ok(c) => {
                return Err(format!(
                    "exitbench {cmdline} stopped with {c}: {}",
                    b.verdict.reason
                ))
            }
            Err(e) => return Err(format!("exitbench {cmdline}: no trustworthy result: {e}")),
        }
        let v = bench_lines(&b.output)
            .get("vmm_entry_to_payload")
            .copied()
            .ok_or(format!("exitbench {cmdline} printed no boot figure"))?;
        figures.insert(key.into(), v);
    }
    // Rust std (issue 12): a std hello's boot to `main`, heap and thread costs, and its image size.
    let std_image = build_image(backend, "std-hello")?;
    let b = boot(
        backend,
        &std_image,
        &BootOptions {
            cmdline: "-- std-hello bench",
            ..o
        },
    )?;
    match &b.verdict.result {
        Ok(0) => figures.extend(bench_lines(&b.output)),
        Ok(c) => {
            return Err(format!(
                "std-hello bench stopped with {c}: {}",
                b.verdict.reason
            ))
        }
        Err(e) => return Err(format!("std-hello bench: no trustworthy result: {e}")),
    }
    // std threads across CPUs (2 CPUs; SVM and RISC-V, the backends with guest SMP): a thread parked on
    // an idle CPU, unparked from the other, until it answers (`std-smp bench`).
    if matches!(backend, Backend::Svm | Backend::Riscv) {
        let smp_image = build_image(backend, "std-smp")?;
        let b = boot(
            backend,
            &smp_image,
            &BootOptions {
                cmdline: "-- std-smp bench",
                cpus: 2,
                ..o
            },
        )?;
        match &b.verdict.result {
            Ok(0) if b.output.contains("std-smp: bench done") => {
                figures.extend(bench_lines(&b.output))
            }
            Ok(c) => {
                return Err(format!(
                    "std-smp bench stopped with {c} (or without its figure): {}",
                    b.verdict.reason
                ))
            }
            Err(e) => return Err(format!("std-smp bench: no trustworthy result: {e}")),
        }
    }
    let s = image_sizes(&std_image)?;
    figures.insert("std_hello_payload_bytes".into(), s.payload as i64);
    figures.insert(
        "std_hello_image_bytes".into(),
        (s.text + s.rodata + s.data + s.payload) as i64,
    );
    // Guest interrupts (issue 10): the `timer` payload's deterministic costs with `bench=1` (x86: the
    // virtual x2APIC; RISC-V: SBI TIME and WFI).
    let timer = build_image(backend, "timer")?;
    let t = boot(
        backend,
        &timer,
        &BootOptions {
            cmdline: "bench=1",
            ..o
        },
    )?;
    match &t.verdict.result {
        Ok(0) => figures.extend(bench_lines(&t.output)),
        Ok(c) => {
            return Err(format!(
                "timer bench=1 stopped with {c}: {}",
                t.verdict.reason
            ))
        }
        Err(e) => return Err(format!("timer bench=1: no trustworthy result: {e}")),
    }
    // The instruction emulator (issue 13, x86): the `pmu` payload's costs with `bench=1` and forced
    // emulation on (a forced-emulated instruction, an MMIO round trip, a string I/O byte).
    if backend != Backend::Riscv {
        let pmu = build_image(backend, "pmu")?;
        let p = boot(
            backend,
            &pmu,
            &BootOptions {
                cmdline: "libvmm.force_emulation=1 bench=1",
                ..o
            },
        )?;
        match &p.verdict.result {
            Ok(0) => figures.extend(bench_lines(&p.output)),
            Ok(c) => {
                return Err(format!(
                    "pmu bench=1 stopped with {c}: {}",
                    p.verdict.reason
                ))
            }
            Err(e) => return Err(format!("pmu bench=1: no trustworthy result: {e}")),
        }
    }
    // Guest SMP: IPI round trips, remote fences, entry to all vCPUs running; the long stress with `long`
    // (VMX: on Bochs' two CPUs, `cpu: count=2`, counted like every VMX figure, `clock: sync=none`).
    match backend {
        Backend::Riscv | Backend::Svm | Backend::Vmx => {
            figures.extend(smp_figures(backend, &o, long, smp_cpus)?)
        }
        _ => {}
    }
    finish(figures, &image)
}

/// Guest SMP (issue 11; RISC-V, SVM and VMX): `smp mode=bench` under `-icount` (Bochs: `clock:
/// sync=none`) on 1, 2 and 4 CPUs (VMX: Bochs' 1 and 2) (VMM entry to every vCPU running payload code,
/// IPI round trip between two vCPUs, remote fence of every vCPU: RISC-V's SBI RFENCE, x86's INVLPG by
/// IPI), then with `long` the long start/stop stress (`mode=stress`, 2,000 rounds on 4 CPUs, VMX on
/// Bochs' 2; not counted in instructions; x86: INIT + STARTUP again after each AP halted), whose number
/// of starts is a figure too, and its wall time is printed.
fn smp_figures(
    backend: Backend,
    o: &BootOptions,
    long: bool,
    only: Option<u32>,
) -> Result<BTreeMap<String, i64>, String> {
    let image = build_image(backend, "smp")?;
    let mut figures = BTreeMap::new();
    for cpus in smp_counts(backend, only) {
        let out = boot(
            backend,
            &image,
            &BootOptions {
                cmdline: "mode=bench",
                cpus,
                ..*o
            },
        )?;
        match &out.verdict.result {
            Ok(0) => figures.extend(bench_lines(&out.output)),
            Ok(c) => {
                return Err(format!(
                    "smp mode=bench on {cpus} CPUs stopped with {c}: {}",
                    out.verdict.reason
                ))
            }
            Err(e) => return Err(format!("smp mode=bench: no trustworthy result: {e}")),
        }
    }
    if !long {
        return Ok(figures);
    }
    // The stress on `--cpus N` when N has other CPUs to start, else on the backend's largest default count.
    let cpus = match only {
        Some(n) if n > 1 => n,
        _ => *smp_counts(backend, None).last().unwrap_or(&2),
    };
    let started = std::time::Instant::now();
    let out = boot(
        backend,
        &image,
        &BootOptions {
            cmdline: "mode=stress iters=2000",
            cpus,
            icount: false,
            limit: Duration::from_secs(600),
            ..*o
        },
    )?;
    let starts = out.output.lines().find_map(|l| {
        l.strip_prefix("smp: stress ")?
            .split(' ')
            .next()?
            .parse()
            .ok()
    });
    match (&out.verdict.result, starts) {
        (Ok(0), Some(n)) if out.output.contains("smp: stress ok") => {
            println!(
                "smp stress ({backend}, {cpus} CPUs): {n} vCPU starts and stops, every IPI taken, in {:.1} s",
                started.elapsed().as_secs_f64()
            );
            figures.insert("smp_stress_starts".into(), n);
        }
        _ => return Err(format!("smp mode=stress failed: {}", out.verdict.reason)),
    }
    Ok(figures)
}

/// The CPU counts of the SMP figures: `bench --cpus N`'s one, or 1, 2 and 4 (VMX: Bochs' 1 and 2).
fn smp_counts(backend: Backend, only: Option<u32>) -> Vec<u32> {
    match (only, backend) {
        (Some(n), _) => vec![n],
        (None, Backend::Vmx) => vec![1, 2],
        (None, _) => vec![1, 2, 4],
    }
}

/// `bench --cpus N`: the table rows of the SMP figures on N CPUs, in place of the default counts'.
fn rows_for_cpus(n: u32) -> Vec<(&'static str, &'static str, &'static str)> {
    let leak = |s: String| -> &'static str { s.leak() };
    let cpus = if n == 1 { "CPU" } else { "CPUs" };
    let mut rows = ROWS
        .iter()
        .copied()
        .filter(|(k, _, _)| !SMP_COUNTED.iter().any(|p| k.starts_with(p)))
        .collect::<Vec<_>>();
    let at = rows
        .iter()
        .position(|(k, _, _)| *k == "smp_stress_starts")
        .unwrap_or(rows.len());
    let mut smp = vec![(
        leak(format!("smp_entry_to_all_running_{n}cpu")),
        leak(format!(
            "SMP: VMM entry -> all vCPUs in payload, {n} {cpus}"
        )),
        "",
    )];
    // One CPU has nobody to send an IPI or a fence to: the payload measures neither.
    if n > 1 {
        smp.push((
            leak(format!("smp_ipi_round_trip_{n}cpu")),
            leak(format!("SMP: IPI round trip between two vCPUs ({n} CPUs)")),
            "",
        ));
        smp.push((
            leak(format!("smp_remote_fence_{n}cpu")),
            leak(format!("SMP: remote fence of {n} vCPUs")),
            "",
        ));
    }
    rows.splice(at..at, smp);
    rows
}

/// The SMP figures measured per CPU count (`smp mode=bench`), by key prefix.
const SMP_COUNTED: [&str; 3] = [
    "smp_entry_to_all_running_",
    "smp_ipi_round_trip_",
    "smp_remote_fence_",
];

/// What `bench --cpus N` says about the figures it does not move to N CPUs.
fn cpus_note(n: u32) -> String {
    format!(
        "--cpus {n}: the SMP figures (VMM entry to all vCPUs running, IPI round trip, remote fence) on \
         {n} CPU(s) only; every other figure keeps its own machine: one CPU (exits, boot, std, timer, \
         emulator, sizes: single-CPU by definition), std_wake_other_cpu 2 CPUs, the --long stress its own count"
    )
}

/// Adds the image's section sizes to a backend's figures.
fn finish(
    mut figures: BTreeMap<String, i64>,
    image: &std::path::Path,
) -> Result<BTreeMap<String, i64>, String> {
    let s = image_sizes(image)?;
    figures.insert("vmm_text_bytes".into(), s.text as i64);
    figures.insert("vmm_rodata_bytes".into(), s.rodata as i64);
    figures.insert("vmm_data_bytes".into(), s.data as i64);
    figures.insert("vmm_bss_bytes".into(), s.bss as i64);
    figures.insert(
        "vmm_text_rodata_data_bytes".into(),
        (s.text + s.rodata + s.data) as i64,
    );
    figures.insert("payload_bytes_excluded".into(), s.payload as i64);
    Ok(figures)
}

const ROWS: [(&str, &str, &str); 33] = [
    (
        "cpuid_round_trip",
        "CPUID exit round trip (emulated insns)",
        "<= 150",
    ),
    (
        "ecall_round_trip",
        "RISC-V SBI ecall round trip, full dispatch (emulated insns)",
        "<= 120",
    ),
    (
        "null_hypercall_round_trip",
        "null hypercall round trip (emulated insns)",
        "",
    ),
    (
        "self_ipi_round_trip",
        "x2APIC self-IPI to handler and EOI (emulated insns)",
        "",
    ),
    (
        "timer_irq_round_trip",
        "timer interrupt, deadline passed, to handler and EOI",
        "",
    ),
    (
        "hlt_wake_round_trip",
        "HLT / WFI to wake with the deadline passed",
        "",
    ),
    (
        "forced_emulation_round_trip",
        "forced-emulated instruction (prefix, #UD exit, emulate)",
        "",
    ),
    (
        "mmio_round_trip",
        "MMIO load from the test register block (emulated)",
        "",
    ),
    (
        "string_io_per_byte",
        "rep outsb to an allowed port, per byte",
        "",
    ),
    ("exits_per_write_1", "exits per write of 1 byte", "1"),
    ("exits_per_write_4096", "exits per write of 4 KiB", "1"),
    ("exits_per_write_65536", "exits per write of 64 KiB", "1"),
    (
        "vmm_entry_to_payload",
        "VMM entry -> payload first insn (emulated insns)",
        "",
    ),
    (
        "vmm_entry_to_payload_mem8m",
        "  same, 8 MiB of guest memory (libvmm.mem=8M)",
        "",
    ),
    (
        "vmm_entry_to_payload_mem256m",
        "  same, 256 MiB of guest memory (512 MiB machine)",
        "",
    ),
    (
        "std_entry_to_main",
        "std hello: VMM entry -> main (emulated insns)",
        "",
    ),
    (
        "std_alloc_free_64",
        "std: Box of 64 B allocated and freed (emulated insns)",
        "",
    ),
    (
        "std_spawn_join",
        "std: thread spawned and joined (emulated insns)",
        "",
    ),
    (
        "std_wake_other_cpu",
        "std: thread parked on an idle CPU, unparked until it answers (2 CPUs, emulated insns)",
        "",
    ),
    (
        "std_hello_payload_bytes",
        "std hello: payload ELF bytes (static PIE)",
        "",
    ),
    (
        "std_hello_image_bytes",
        "std hello: image bytes (VMM + payload, no bss)",
        "",
    ),
    (
        "smp_entry_to_all_running_1cpu",
        "SMP: VMM entry -> all vCPUs in payload, 1 CPU",
        "",
    ),
    (
        "smp_entry_to_all_running_2cpu",
        "SMP: VMM entry -> all vCPUs in payload, 2 CPUs",
        "",
    ),
    (
        "smp_entry_to_all_running_4cpu",
        "SMP: VMM entry -> all vCPUs in payload, 4 CPUs",
        "",
    ),
    (
        "smp_ipi_round_trip_2cpu",
        "SMP: IPI round trip between two vCPUs (2 CPUs)",
        "",
    ),
    (
        "smp_ipi_round_trip_4cpu",
        "SMP: IPI round trip between two vCPUs (4 CPUs)",
        "",
    ),
    ("smp_remote_fence_2cpu", "SMP: remote fence of 2 vCPUs", ""),
    ("smp_remote_fence_4cpu", "SMP: remote fence of 4 vCPUs", ""),
    (
        "smp_stress_starts",
        "SMP: long stress, vCPU starts (4 CPUs; VMX 2)",
        "",
    ),
    ("vmm_text_bytes", "VMM .text bytes", ""),
    ("vmm_rodata_bytes", "VMM .rodata bytes", ""),
    ("vmm_data_bytes", "VMM .data bytes", ""),
    ("vmm_bss_bytes", "VMM .bss bytes", ""),
];

/// The promises of SPECIFICATION.md: (backend or `dpamt`, figure, ceiling). Every one is a
/// deterministic count, so `--check` compares exactly: a figure above its ceiling fails, and so does a
/// promised figure the bench did not produce.
pub const PROMISES: [(&str, &str, i64); 73] = [
    ("svm", "cpuid_round_trip", 150),
    ("vmx", "cpuid_round_trip", 150),
    ("riscv", "ecall_round_trip", 120),
    ("svm", "null_hypercall_round_trip", 120),
    ("vmx", "null_hypercall_round_trip", 130),
    ("riscv", "null_hypercall_round_trip", 115),
    ("svm", "self_ipi_round_trip", 1_300),
    ("vmx", "self_ipi_round_trip", 2_000),
    ("svm", "timer_irq_round_trip", 1_300),
    ("vmx", "timer_irq_round_trip", 2_000),
    ("svm", "hlt_wake_round_trip", 1_900),
    ("vmx", "hlt_wake_round_trip", 3_000),
    ("riscv", "timer_irq_round_trip", 2_000),
    ("riscv", "hlt_wake_round_trip", 2_200),
    ("svm", "forced_emulation_round_trip", 2_800),
    ("vmx", "forced_emulation_round_trip", 3_000),
    ("svm", "mmio_round_trip", 2_600),
    ("vmx", "mmio_round_trip", 2_700),
    ("svm", "string_io_per_byte", 160),
    ("vmx", "string_io_per_byte", 160),
    ("svm", "exits_per_write_1", 1),
    ("svm", "exits_per_write_4096", 1),
    ("svm", "exits_per_write_65536", 1),
    ("vmx", "exits_per_write_1", 1),
    ("vmx", "exits_per_write_4096", 1),
    ("vmx", "exits_per_write_65536", 1),
    ("riscv", "exits_per_write_1", 1),
    ("riscv", "exits_per_write_4096", 1),
    ("riscv", "exits_per_write_65536", 1),
    // x86: the instruction emulator's decoder (yaxpeax-x86) is about 210 KiB of the image.
    ("svm", "vmm_text_rodata_data_bytes", 327_680),
    ("vmx", "vmm_text_rodata_data_bytes", 327_680),
    ("riscv", "vmm_text_rodata_data_bytes", 131_072),
    // Boot no longer zeroes the guest's memory up front (zero on first touch): the same ceiling with
    // the machine's memory (94 / 94 / 62 MiB), 8 MiB and 256 MiB of guest memory.
    ("svm", "vmm_entry_to_payload", 600_000),
    ("vmx", "vmm_entry_to_payload", 2_600_000),
    ("riscv", "vmm_entry_to_payload", 1_500_000),
    ("svm", "vmm_entry_to_payload_mem8m", 600_000),
    ("vmx", "vmm_entry_to_payload_mem8m", 2_600_000),
    ("riscv", "vmm_entry_to_payload_mem8m", 1_500_000),
    ("svm", "vmm_entry_to_payload_mem256m", 600_000),
    ("vmx", "vmm_entry_to_payload_mem256m", 2_600_000),
    ("riscv", "vmm_entry_to_payload_mem256m", 1_500_000),
    // Rust std (payload std-hello): VMM entry to `main`, a 64-byte Box allocated and freed, a thread
    // spawned and joined, and the image (VMM text+rodata+data plus the embedded payload ELF).
    ("svm", "std_entry_to_main", 1_000_000),
    ("vmx", "std_entry_to_main", 3_000_000),
    ("riscv", "std_entry_to_main", 2_600_000),
    ("svm", "std_alloc_free_64", 300),
    ("vmx", "std_alloc_free_64", 300),
    ("riscv", "std_alloc_free_64", 300),
    ("svm", "std_spawn_join", 7_000),
    ("vmx", "std_spawn_join", 7_000),
    ("riscv", "std_spawn_join", 7_000),
    ("svm", "std_hello_image_bytes", 491_520),
    ("vmx", "std_hello_image_bytes", 491_520),
    ("riscv", "std_hello_image_bytes", 327_680),
    // std threads across CPUs (`std-smp bench`, 2 CPUs): a thread parked on an idle CPU, unparked
    // (the scheduler's wake-up IPI), until its answering IPI reaches main.
    ("svm", "std_wake_other_cpu", 20_000),
    ("riscv", "std_wake_other_cpu", 20_000),
    ("dpamt", "dynamic_peak_bytes", 1_572_864),
    // Guest SMP (RISC-V; `smp mode=bench`): a ping and its answering IPI, a remote fence of every vCPU,
    // and VMM entry to every vCPU running payload code (the VMM's own hart bring-up included).
    ("riscv", "smp_ipi_round_trip_2cpu", 12_000),
    ("riscv", "smp_ipi_round_trip_4cpu", 14_000),
    ("riscv", "smp_remote_fence_2cpu", 12_000),
    ("riscv", "smp_remote_fence_4cpu", 36_000),
    ("riscv", "smp_entry_to_all_running_1cpu", 5_500_000),
    ("riscv", "smp_entry_to_all_running_2cpu", 45_000_000),
    ("riscv", "smp_entry_to_all_running_4cpu", 48_000_000),
    // Guest SMP on SVM (`smp mode=bench`): the ping and its answering fixed x2APIC IPI, a remote fence
    // of every vCPU (`smp::remote_invlpg`: a fixed IPI to each other vCPU, whose handler runs INVLPG and
    // acknowledges, until all have), and VMM entry to every vCPU running payload code (the VMM's
    // INIT-SIPI-SIPI of its own CPUs, 10 ms waits in emulated time each, every guest memory block zeroed
    // before the APs may start, and the guest's INIT + SIPI and real-mode trampoline included).
    ("svm", "smp_ipi_round_trip_2cpu", 14_000),
    ("svm", "smp_ipi_round_trip_4cpu", 14_000),
    ("svm", "smp_remote_fence_2cpu", 7_000),
    ("svm", "smp_remote_fence_4cpu", 19_000),
    ("svm", "smp_entry_to_all_running_1cpu", 600_000),
    ("svm", "smp_entry_to_all_running_2cpu", 60_000_000),
    ("svm", "smp_entry_to_all_running_4cpu", 80_000_000),
    ("vmx", "smp_ipi_round_trip_2cpu", 13_000),
    ("vmx", "smp_entry_to_all_running_1cpu", 2_800_000),
    ("vmx", "smp_entry_to_all_running_2cpu", 21_000_000),
];

/// Compares figures with [`PROMISES`]; returns one line per promise and whether all were kept.
pub fn check_promises(results: &BTreeMap<String, BTreeMap<String, i64>>) -> (Vec<String>, bool) {
    let mut lines = Vec::new();
    let mut ok = true;
    for (b, key, ceiling) in PROMISES {
        match results.get(b).and_then(|f| f.get(key)) {
            Some(v) if *v <= ceiling => {
                lines.push(format!("ok       {b:<6} {key} = {v} <= {ceiling}"))
            }
            Some(v) => {
                ok = false;
                lines.push(format!("EXCEEDED {b:<6} {key} = {v} > {ceiling}"));
            }
            None => {
                ok = false;
                lines.push(format!(
                    "MISSING  {b:<6} {key}: the bench did not produce it"
                ));
            }
        }
    }
    (lines, ok)
}

/// The top-level integer fields of a flat JSON object (the dpamt figures).
fn json_ints(json: &str) -> BTreeMap<String, i64> {
    let head = json.split("\"runs\"").next().unwrap_or(json);
    head.split(',')
        .filter_map(|kv| kv.split_once(':'))
        .filter_map(|(k, v)| {
            let k = k.trim().trim_start_matches('{').trim().trim_matches('"');
            Some((k.to_string(), v.trim().parse().ok()?))
        })
        .collect()
}

/// `cargo xtask bench --check` (also a step of `cargo xtask test`): runs the deterministic benches and
/// compares them with the promises; Ok(lines) when every promise holds.
pub fn check() -> Result<Vec<String>, String> {
    let mut results: BTreeMap<String, BTreeMap<String, i64>> = BTreeMap::new();
    for backend in BENCHED {
        results.insert(
            backend.name().to_string(),
            bench_backend(backend, false, None)?,
        );
    }
    let (_, json) = dpamt_bench()?;
    results.insert("dpamt".into(), json_ints(&json));
    let (lines, ok) = check_promises(&results);
    if ok {
        Ok(lines)
    } else {
        Err(lines.join("\n"))
    }
}

pub fn bench_cmd(a: &Args) -> Result<u8, String> {
    // `--backend B`: that backend's figures only, printed (no table, JSON or chart); the long SMP stress
    // only with `--long`.
    let smp_cpus = if a.cpus_given {
        Some(crate::args::vmm_cpus(a.cpus)?)
    } else {
        None
    };
    if smp_cpus.is_some() && a.rest.iter().any(|r| r == "--check") {
        return Err(
            "--check compares the default CPU counts' figures with SPECIFICATION.md; it takes no --cpus"
                .into(),
        );
    }
    if let Some(n) = smp_cpus {
        println!("{}", cpus_note(n));
    }
    if a.backend_given {
        let long = a.rest.iter().any(|r| r == "--long");
        for (k, v) in bench_backend(a.backend, long, smp_cpus)? {
            println!("{}: {k} = {v}", a.backend.name());
        }
        return Ok(0);
    }
    if a.rest.iter().any(|r| r == "--check") {
        return match check() {
            Ok(lines) => {
                for l in lines {
                    println!("{l}");
                }
                println!("every promise of SPECIFICATION.md holds");
                Ok(0)
            }
            Err(e) => {
                println!("{e}");
                Err("a promise of SPECIFICATION.md is broken".into())
            }
        };
    }
    let mut results: BTreeMap<&'static str, BTreeMap<String, i64>> = BTreeMap::new();
    let mut failures = Vec::new();
    for backend in BENCHED {
        match bench_backend(backend, true, smp_cpus) {
            Ok(f) => {
                results.insert(backend.name(), f);
            }
            Err(e) => failures.push(format!("{backend}: {e}")),
        }
    }
    let dpamt = match dpamt_bench() {
        Ok(d) => Some(d),
        Err(e) => {
            failures.push(format!("dpamt: {e}"));
            None
        }
    };
    // Linux KVM in the same emulator (a bench step, not a CI step): when it cannot run, say why and go on.
    let kvm = if a.rest.iter().any(|r| r == "--vs-kvm") {
        println!("measuring Linux KVM in the same emulator (about half a minute) ...");
        match crate::kvm::measure() {
            Ok(k) => Some(k),
            Err(e) => {
                println!("KVM comparison not measured: {e}");
                None
            }
        }
    } else {
        None
    };
    let backends: Vec<&str> = results.keys().copied().collect();
    let mut table = String::new();
    let _ = write!(table, "{:<50}", "figure");
    for b in &backends {
        let _ = write!(table, "{b:>12}");
    }
    let _ = writeln!(table, "  target");
    let mut rows: Vec<(&str, &str, &str)> = match smp_cpus {
        Some(n) => rows_for_cpus(n),
        None => ROWS.to_vec(),
    };
    rows.push((
        "vmm_text_rodata_data_bytes",
        "VMM text+rodata+data bytes",
        "<= 327680 x86, 131072 RISC-V",
    ));
    for (key, label, target) in rows {
        let _ = write!(table, "{label:<50}");
        for b in &backends {
            match results[b].get(key) {
                Some(v) => {
                    let _ = write!(table, "{v:>12}");
                }
                None => {
                    let _ = write!(table, "{:>12}", "-");
                }
            }
        }
        let _ = writeln!(table, "  {target}");
    }
    println!("libvmm bench (QEMU -icount shift=0,sleep=off -seed 1: one cycle = one emulated instruction)");
    println!("vmx: Bochs 2.7 corei7_skylake_x with `clock: sync=none`: the guest's RDTSC counts emulated instructions (deterministic)\n");
    print!("{table}");

    let mut json = String::from("{\n");
    for (i, (b, figs)) in results.iter().enumerate() {
        let _ = write!(json, "  \"{b}\": {{");
        for (j, (k, v)) in figs.iter().enumerate() {
            let _ = write!(json, "{}\"{k}\": {v}", if j == 0 { "" } else { ", " });
        }
        let _ = writeln!(json, "}}{}", if i + 1 == results.len() { "" } else { "," });
    }
    if let Some(k) = &kvm {
        if json.ends_with("}\n") && json.len() > 2 {
            json.truncate(json.len() - 1);
            json.push_str(",\n");
        }
        let fields: Vec<String> = k
            .iter()
            .map(|(key, v)| match v.parse::<f64>() {
                Ok(_) if key != "kernel" && key != "npt" && key != "nrips" => {
                    format!("\"{key}\": {v}")
                }
                _ => format!("\"{key}\": \"{v}\""),
            })
            .collect();
        let _ = writeln!(json, "  \"kvm\": {{{}}}", fields.join(", "));
    }
    if let Some((_, j)) = &dpamt {
        if json.ends_with("}\n") && json.len() > 2 {
            json.truncate(json.len() - 1);
            json.push_str(",\n");
        }
        let _ = writeln!(json, "  \"dpamt\": {j}");
    }
    json.push_str("}\n");
    let path = target_dir().join("bench.json");
    std::fs::write(&path, json).map_err(|e| e.to_string())?;
    if let Some((text, _)) = &dpamt {
        println!("\n{text}");
    }
    if let Some(k) = &kvm {
        println!("\n{}", crate::kvm::comparison(results.get("svm"), k));
    }
    println!("\nwrote {}", path.display());
    let svg = target_dir().join("bench.svg");
    match crate::chart::draw(&svg, CHART_TITLE, &chart_bars(&results, kvm.as_ref())) {
        Ok(()) => println!("wrote {}", svg.display()),
        Err(e) => failures.push(format!("chart: {e}")),
    }
    for f in &failures {
        eprintln!("bench failed: {f}");
    }
    Ok(if failures.is_empty() { 0 } else { 1 })
}

const CHART_TITLE: &str =
    "libvmm exit round trips (QEMU TCG / Bochs, one tick = one emulated instruction)";

/// The chart's bars: per exit (CPUID or SBI ecall, null hypercall), each backend, then KVM's CPUID and
/// port I/O out to userspace (its exit to the VMM's device code) when measured.
fn chart_bars(
    results: &BTreeMap<&'static str, BTreeMap<String, i64>>,
    kvm: Option<&BTreeMap<String, String>>,
) -> Vec<crate::chart::Bar> {
    let mut bars = Vec::new();
    let exits = [
        (
            "CPUID / SBI ecall",
            ["cpuid_round_trip", "ecall_round_trip"],
        ),
        (
            "exit to the VMM's device code",
            ["null_hypercall_round_trip", "null_hypercall_round_trip"],
        ),
    ];
    for (group, keys) in exits {
        for (b, figs) in results {
            if let Some(v) = keys.iter().find_map(|k| figs.get(*k)) {
                bars.push((group.to_string(), format!("libvmm {b}"), *v as f64));
            }
        }
        if let Some(k) = kvm {
            let key = if group.starts_with("CPUID") {
                "cpuid"
            } else {
                "out"
            };
            if let Some(v) = k.get(key).and_then(|v| v.parse().ok()) {
                bars.push((group.to_string(), "Linux KVM (svm)".to_string(), v));
            }
        }
    }
    bars
}

/// The TDX Dynamic PAMT figures (simulated TDX module): the `dpamt_bench` example prints a section and
/// one `DPAMT_JSON {...}` line. Returns (section text, JSON object).
fn dpamt_bench() -> Result<(String, String), String> {
    let mut c = crate::cmd::cargo();
    c.args([
        "run",
        "-q",
        "-p",
        "libvmm",
        "--release",
        "--example",
        "dpamt_bench",
        "--features",
        "tdx-sim",
    ]);
    let f = crate::cmd::run_bounded(c, Duration::from_secs(600), false)?;
    if f.code != Some(0) {
        return Err(format!("dpamt_bench exited {:?}: {}", f.code, f.output));
    }
    let json = f
        .output
        .lines()
        .find_map(|l| l.strip_prefix("DPAMT_JSON "))
        .ok_or("dpamt_bench printed no DPAMT_JSON line")?
        .to_string();
    let text: Vec<&str> = f
        .output
        .lines()
        .filter(|l| !l.starts_with("DPAMT_JSON "))
        .collect();
    Ok((text.join("\n"), json))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn promises_fail_when_exceeded_or_missing() {
        let mut r: BTreeMap<String, BTreeMap<String, i64>> = BTreeMap::new();
        for (b, k, c) in PROMISES {
            r.entry(b.to_string()).or_default().insert(k.to_string(), c);
        }
        assert!(check_promises(&r).1);
        r.get_mut("svm")
            .unwrap()
            .insert("cpuid_round_trip".into(), 151);
        let (lines, ok) = check_promises(&r);
        assert!(!ok);
        assert!(lines.iter().any(|l| l.starts_with("EXCEEDED svm")));
        r.get_mut("svm").unwrap().remove("cpuid_round_trip");
        assert!(check_promises(&r)
            .0
            .iter()
            .any(|l| l.starts_with("MISSING")));
    }

    #[test]
    fn cpus_n_measures_the_smp_figures_on_n_cpus_only() {
        assert_eq!(smp_counts(Backend::Svm, None), [1, 2, 4]);
        assert_eq!(smp_counts(Backend::Vmx, None), [1, 2]);
        assert_eq!(smp_counts(Backend::Vmx, Some(3)), [3]);
        assert_eq!(smp_counts(Backend::Riscv, Some(8)), [8]);
        let keys = |n| -> Vec<&str> { rows_for_cpus(n).iter().map(|r| r.0).collect() };
        let three = keys(3);
        assert!(three.contains(&"smp_ipi_round_trip_3cpu"));
        assert!(three.contains(&"smp_remote_fence_3cpu"));
        assert!(three.contains(&"smp_entry_to_all_running_3cpu"));
        assert!(!three
            .iter()
            .any(|k| k.ends_with("_2cpu") || k.ends_with("_4cpu")));
        // Every figure that is not counted per CPU keeps its row, the stress after the SMP rows.
        assert!(three.contains(&"std_wake_other_cpu") && three.contains(&"vmm_bss_bytes"));
        let at = |k| three.iter().position(|x| *x == k).unwrap();
        assert!(at("smp_remote_fence_3cpu") < at("smp_stress_starts"));
        assert_eq!(three.len(), ROWS.len() - 7 + 3);
        assert_eq!(keys(1).len(), ROWS.len() - 7 + 1);
        assert!(cpus_note(2).contains("single-CPU by definition"));
    }

    #[test]
    fn dpamt_json_top_level_integers() {
        let j = r#"{"bench":"dpamt","simulated":true,"mem_bytes":4294967296,"dynamic_peak_bytes":1224704,"static_pct":0.3915,"runs":[{"threads":1}]}"#;
        let m = json_ints(j);
        assert_eq!(m.get("dynamic_peak_bytes"), Some(&1_224_704));
        assert_eq!(m.get("mem_bytes"), Some(&4_294_967_296));
        assert!(!m.contains_key("threads"));
    }
}
