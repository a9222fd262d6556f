//! `cargo xtask test`: host unit tests, formatting, clippy (host and bare-metal targets), image checks,
//! and every payload booted on every backend that boots here, each checked for its expected console
//! lines and stop code. Ends with `N passed, N failed`.
use std::time::{Duration, Instant};

use object::{Object, ObjectSection};

use crate::backend::Backend;
use crate::build::{build_image, PAYLOADS};
use crate::cmd::{cargo, run_bounded};
use crate::run::{boot, BootOptions};
use crate::Args;

use libvmm_abi::stop::StopCode;

/// One boot of one image and what it must show.
pub struct Case {
    pub payload: &'static str,
    pub cmdline: &'static str,
    /// Emulator CPU model, when the case needs another than the backend's default.
    pub cpu: Option<&'static str>,
    pub code: u8,
    pub expect: Vec<String>,
    pub forbid: Vec<&'static str>,
    /// RISC-V: boot with this device tree (path from the repository root) instead of QEMU's.
    pub dtb: Option<&'static str>,
}

/// The device tree that lists Zalasr (QEMU 10.0.2's own tree plus `zalasr`): see its `.dts` beside it.
pub const ZALASR_DTB: &str = "libvmm/src/riscv/testdata/qemu-virt-rv64-zalasr.dtb";

const HOSTILE_FORBID: [&str; 3] = [
    "hostile: FAIL",
    "libvmm: VMM",
    "payload: unexpected exception",
];

/// The boot cases of a backend. `name` is how the guest names the backend.
/// Cases about the VMM itself on x86 QEMU: its panic and exception handlers, and CPUs without SVM.
fn vmm_cases() -> Vec<Case> {
    let case = |cmdline, cpu, code: StopCode, expect: &str| Case {
        dtb: None,
        payload: "hello",
        cmdline,
        cpu,
        code: code as u8,
        expect: vec![expect.to_string()],
        forbid: vec!["Hello from a libvmm guest"],
    };
    vec![
        case(
            "libvmm.selftest=panic",
            None,
            StopCode::VmmPanic,
            "libvmm: VMM panic at libvmm/src/boot/mod.rs:",
        ),
        case(
            "libvmm.selftest=fault",
            None,
            StopCode::VmmPanic,
            "libvmm: VMM exception 6 (error 0x0) at rip 0x",
        ),
        case(
            "",
            Some("qemu64,-svm"),
            StopCode::Unsupported,
            "SVM missing: CPUID 0x8000_0001 ECX bit 2 (SVM) is clear",
        ),
        case(
            "",
            Some("qemu64,+svm,-npt"),
            StopCode::Unsupported,
            "nested paging missing: CPUID 0x8000_000A EDX bit 0 (NP) is clear",
        ),
    ]
}

pub fn cases(backend: Backend) -> Vec<Case> {
    if backend == Backend::Tdx {
        return tdx_cases();
    }
    let name = match backend {
        Backend::Svm => "AMD SVM",
        Backend::Vmx => "Intel VMX",
        Backend::Tdx => "Intel TDX",
        Backend::Riscv => "RISC-V H",
    };
    let gmv = StopCode::GuestMemoryViolation as u8;
    let (vmm_base, window_end) = match backend {
        Backend::Riscv => (
            libvmm_abi::layout::riscv64::VMM_IMAGE_BASE,
            libvmm_abi::layout::riscv64::WINDOW_BASE + libvmm_abi::layout::riscv64::WINDOW_SIZE,
        ),
        _ => (
            libvmm_abi::layout::x86_64::VMM_IMAGE_BASE,
            libvmm_abi::layout::x86_64::WINDOW_BASE + libvmm_abi::layout::x86_64::WINDOW_SIZE,
        ),
    };
    let hostile = |cmdline: &'static str, code: u8, expect: String| Case {
        payload: "hostile",
        cmdline,
        cpu: None,
        code,
        expect: vec![" recoverable checks passed, 0 failed".into(), expect],
        forbid: HOSTILE_FORBID.to_vec(),
        dtb: None,
    };
    if backend == Backend::Riscv {
        return riscv_cases(name, hostile);
    }
    let mut v = if backend == Backend::Svm {
        vmm_cases()
    } else {
        Vec::new()
    };
    if matches!(backend, Backend::Svm | Backend::Vmx) {
        // A guest that never exits is stopped at its time limit (timer exits give the VMM the CPU back:
        // the LAPIC timer on SVM, the VMX-preemption timer on VMX).
        v.push(hostile(
            "attack=spin libvmm.timeout_ms=300",
            StopCode::GuestError as u8,
            "guest exceeded its time limit of 300 ms".into(),
        ));
    }
    v.extend([
        Case {
            payload: "hello",
            cmdline: "",
            cpu: None,
            code: 0,
            expect: vec![
                format!("Hello from a libvmm guest! This payload runs deprivileged on {name}."),
                "libvmm: stop 0 payload exited with status 0".into(),
            ],
            forbid: vec!["panic"],
            dtb: None,
        },
        hostile(
            "",
            gmv,
            format!(
                "guest memory violation: read of guest-physical {vmm_base:#x} outside guest memory"
            ),
        ),
        hostile(
            "attack=vmm-write",
            gmv,
            format!(
                "guest memory violation: write of guest-physical {:#x}",
                vmm_base + 0x1000
            ),
        ),
        hostile(
            "attack=vmm-exec",
            gmv,
            format!("guest memory violation: execute of guest-physical {vmm_base:#x}"),
        ),
        hostile(
            "attack=beyond-window",
            gmv,
            format!("guest memory violation: read of guest-physical {window_end:#x}"),
        ),
        hostile(
            "attack=triple-fault",
            StopCode::TripleFault as u8,
            "guest triple fault".into(),
        ),
        hostile(
            "attack=halt",
            StopCode::GuestError as u8,
            "guest halted with no interrupt source".into(),
        ),
        exitbench_case(),
    ]);
    if backend == Backend::Vmx {
        v.extend(crate::bochs::consistency_cases());
    }
    v
}

/// The RISC-V boot cases: the same payloads and checks, with the RISC-V forms of the fatal attacks.
fn riscv_cases(name: &str, hostile: impl Fn(&'static str, u8, String) -> Case) -> Vec<Case> {
    use libvmm_abi::layout::riscv64::{VMM_IMAGE_BASE, WINDOW_BASE, WINDOW_SIZE};
    let gmv = StopCode::GuestMemoryViolation as u8;
    let violation = |what: &str, gpa: u64| {
        format!("guest memory violation: {what} of guest-physical {gpa:#x} outside guest memory")
    };
    let hello = |dtb: Option<&'static str>, extra: &str| Case {
        cpu: None,
        payload: "hello",
        cmdline: "",
        code: 0,
        expect: vec![
            format!("Hello from a libvmm guest! This payload runs deprivileged on {name}."),
            "libvmm: stop 0 payload exited with status 0".into(),
            extra.into(),
        ],
        forbid: vec!["panic"],
        dtb,
    };
    let mut zalasr = hostile(
        "attack=vmm-read",
        gmv,
        "hostile: info guest device tree lists zalasr: yes; lw.aq trapped (illegal instruction)"
            .into(),
    );
    zalasr.dtb = Some(ZALASR_DTB);
    zalasr.expect.push(" zaamo zalasr zalrsc ".into());
    let mut plain = hostile("", gmv, violation("read", VMM_IMAGE_BASE));
    plain
        .expect
        .push("hostile: info guest device tree lists zalasr: no".into());
    vec![
        hello(
            None,
            "libvmm: G-stage Sv39x4 VMID 1 maps 0x84000000..0x84800000 only",
        ),
        hello(
            Some(ZALASR_DTB),
            "libvmm: host ISA (riscv,isa-extensions): i m a f d c h",
        ),
        plain,
        zalasr,
        {
            // Per-guest ISA control from the command line: Zicboz hidden (cbo.zero must trap), I cannot be.
            let mut c = hostile(
                "libvmm.isa=-zicboz,-i attack=vmm-read",
                gmv,
                "hostile: info zicboz listed: no".into(),
            );
            c.expect.push("libvmm: guest ISA: hid zicboz".into());
            c.expect
                .push("libvmm: guest ISA: cannot hide i: NotAllowed".into());
            c
        },
        hostile(
            "attack=vmm-write",
            gmv,
            violation("write", VMM_IMAGE_BASE + 0x1000),
        ),
        hostile(
            "attack=beyond-window",
            gmv,
            violation("read", WINDOW_BASE + WINDOW_SIZE),
        ),
        hostile("attack=opensbi-read", gmv, violation("read", 0x8000_0000)),
        hostile("attack=test-device", gmv, violation("write", 0x10_0000)),
        hostile("attack=uart", gmv, violation("write", 0x1000_0000)),
        hostile(
            "attack=halt",
            StopCode::GuestError as u8,
            "guest halted with no interrupt source".into(),
        ),
        hostile(
            "attack=sbi-shutdown-failure",
            StopCode::PayloadAbort as u8,
            "payload aborted".into(),
        ),
        exitbench_case(),
    ]
}

/// `exitbench` on any backend: it runs to the end and every `write`, whatever its length, is one exit.
fn exitbench_case() -> Case {
    Case {
        payload: "exitbench",
        cmdline: "",
        cpu: None,
        code: 0,
        expect: vec![
            "exitbench: done".into(),
            "bench: exits_per_write_1=1".into(),
            "bench: exits_per_write_65536=1".into(),
        ],
        forbid: vec!["panic"],
        dtb: None,
    }
}

/// Backends whose `exitbench` runs (TDX cannot run a payload on any emulator here).
pub const BENCHED: [Backend; 3] = [Backend::Svm, Backend::Vmx, Backend::Riscv];

/// The TDX image boots on QEMU and must stop at module detection, naming what is missing; it never
/// executes SEAMCALL without a SEAM module (that would #UD).
fn tdx_cases() -> Vec<Case> {
    let case = |cpu, expect: &str| Case {
        dtb: None,
        payload: "hello",
        cmdline: "",
        cpu,
        code: StopCode::Unsupported as u8,
        expect: vec![format!("libvmm: TDX: no TDX module: {expect}")],
        forbid: vec!["libvmm: VMM", "Hello from a libvmm guest"],
    };
    vec![
        case(None, "the CPU vendor is not GenuineIntel"),
        case(
            Some("max,vendor=GenuineIntel"),
            "CPUID.1:ECX bit 5 (VMX) is clear",
        ),
    ]
}

struct Tally {
    passed: u32,
    failed: u32,
}

impl Tally {
    fn record(&mut self, name: &str, started: Instant, r: Result<(), String>) {
        match r {
            Ok(()) => {
                self.passed += 1;
                println!("PASS {name} ({:.1}s)", started.elapsed().as_secs_f64());
            }
            Err(e) => {
                self.failed += 1;
                println!("FAIL {name}: {e}");
            }
        }
    }
}

fn step(c: std::process::Command, what: &str) -> Result<(), String> {
    // Loom can hang instead of failing on a broken protocol: every step has a time limit.
    let f = run_bounded(c, Duration::from_secs(900), false)?;
    if f.timed_out {
        return Err(format!("{what} did not finish within 900 s"));
    }
    if f.code == Some(0) {
        Ok(())
    } else {
        let tail: Vec<&str> = f.output.lines().rev().take(40).collect();
        Err(format!(
            "{what} exited {:?}\n{}",
            f.code,
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        ))
    }
}

/// Host-side steps: (name, command).
fn host_steps() -> Vec<(String, std::process::Command)> {
    let mut steps = Vec::new();
    let mut c = cargo();
    c.args(["test", "--quiet"]);
    steps.push(("host unit tests (cargo test)".to_string(), c));
    let mut c = cargo();
    c.args(["fmt", "--all", "--", "--check"]);
    steps.push(("cargo fmt --check".to_string(), c));
    let mut c = cargo();
    c.args(["clippy", "--quiet", "--all-targets", "--", "-D", "warnings"]);
    steps.push(("clippy (host crates)".to_string(), c));
    // Model check of the TDX Dynamic PAMT protocol over all interleavings (loom), in its own target
    // directory: the `--cfg loom` build would otherwise evict the normal build cache.
    let mut c = cargo();
    c.env("RUSTFLAGS", "--cfg loom")
        .env("CARGO_TARGET_DIR", crate::cmd::target_dir().join("loom"))
        .args([
            "test",
            "-q",
            "-p",
            "libvmm",
            "--lib",
            "--release",
            "tdx::loom_tests",
        ]);
    steps.push(("loom model check (TDX Dynamic PAMT)".to_string(), c));
    for backend in Backend::ALL {
        let mut c = cargo();
        c.args([
            "clippy",
            "--quiet",
            "--target",
            backend.target(),
            "-p",
            "libvmm-image",
            "--features",
            backend.feature(),
        ]);
        for p in PAYLOADS {
            c.args(["-p", p]);
        }
        c.args(["--", "-D", "warnings"]);
        steps.push((format!("clippy ({backend} image and payloads)"), c));
    }
    steps
}

fn check_case(backend: Backend, image: &std::path::Path, case: &Case) -> Result<(), String> {
    let dtb = case.dtb.map(|d| crate::cmd::root().join(d));
    let o = BootOptions {
        cmdline: case.cmdline,
        dtb: dtb.as_deref(),
        cpu: case.cpu,
        icount: false,
        echo: false,
        limit: Duration::from_secs(if backend == Backend::Vmx { 60 } else { 30 }),
    };
    let out = boot(backend, image, &o)?;
    let mut problems = Vec::new();
    if out.code != Some(case.code) {
        problems.push(format!(
            "stop code {:?}, expected {} ({})",
            out.code, case.code, out.reason
        ));
    }
    for e in &case.expect {
        if !out.output.contains(e.as_str()) {
            problems.push(format!("missing line {e:?}"));
        }
    }
    for f in &case.forbid {
        if out.output.contains(f) {
            problems.push(format!("forbidden text {f:?}"));
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        let tail: Vec<&str> = out.output.lines().rev().take(30).collect();
        Err(format!(
            "{}\n--- console (last lines) ---\n{}",
            problems.join("; "),
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        ))
    }
}

pub fn test_cmd(_a: &Args) -> Result<u8, String> {
    let mut t = Tally {
        passed: 0,
        failed: 0,
    };
    for (name, c) in host_steps() {
        let s = Instant::now();
        println!("---- {name}");
        let r = step(c, &name);
        t.record(&name, s, r);
    }
    // Every backend's image boots on an emulator here (TDX's stops at SEAM-module detection).
    for backend in Backend::ALL {
        let cases = cases(backend);
        for payload in PAYLOADS
            .into_iter()
            .filter(|p| cases.iter().any(|c| c.payload == *p))
        {
            let s = Instant::now();
            println!("---- {backend}: build {payload}");
            let image = match build_image(backend, payload) {
                Ok(i) => i,
                Err(e) => {
                    t.record(&format!("{backend}: build {payload}"), s, Err(e));
                    continue;
                }
            };
            if payload == "hello" {
                t.record(
                    &format!("{backend}: image boot headers"),
                    s,
                    check_image_headers(backend, &image),
                );
                if backend == Backend::Svm {
                    let s = Instant::now();
                    t.record(
                        "svm: boot hello from the GRUB ISO (multiboot2, QEMU pc)",
                        s,
                        svm_iso_case(&image),
                    );
                }
            }
            for case in cases.iter().filter(|c| c.payload == payload) {
                let s = Instant::now();
                let cpu = case.cpu.map(|c| format!(" (cpu {c})")).unwrap_or_default();
                let dtb = case.dtb.map(|d| format!(" (-dtb {d})")).unwrap_or_default();
                let name = format!("{backend}: boot {payload} {}{cpu}{dtb}", case.cmdline)
                    .trim_end()
                    .to_string();
                let r = check_case(backend, &image, case);
                t.record(&name, s, r);
            }
        }
    }
    println!("{} passed, {} failed", t.passed, t.failed);
    Ok(if t.failed == 0 { 0 } else { 1 })
}

/// The SVM image booted by GRUB from an ISO: the multiboot2 entry, where `-kernel` uses PVH.
fn svm_iso_case(image: &std::path::Path) -> Result<(), String> {
    let iso = image.with_extension("iso");
    crate::iso::build_iso(image, &iso, "")?;
    let f = crate::qemu::x86_iso(&iso, false, Duration::from_secs(60))?;
    let code = f.code.and_then(libvmm_abi::stop::from_qemu_debug_exit);
    if code == Some(0)
        && f.output.contains("libvmm: booted via multiboot2")
        && f.output.contains("deprivileged on AMD SVM")
    {
        Ok(())
    } else {
        Err(format!("stop code {code:?}; console:\n{}", f.output))
    }
}

/// Checks the x86 boot headers: a PVH note (Xen, type 18) in a PT_NOTE segment and a multiboot2 header
/// in the first 32 KiB of the file. RISC-V images have neither (OpenSBI jumps to the entry).
fn check_image_headers(backend: Backend, image: &std::path::Path) -> Result<(), String> {
    if backend == Backend::Riscv {
        return Ok(());
    }
    let data = std::fs::read(image).map_err(|e| e.to_string())?;
    let elf = object::File::parse(&*data).map_err(|e| e.to_string())?;
    let note = elf
        .section_by_name(".note.pvh")
        .ok_or("no .note.pvh section")?;
    let d = note.data().map_err(|e| e.to_string())?;
    let u32_at = |o: usize| u32::from_le_bytes(d[o..o + 4].try_into().unwrap());
    if d.len() < 20 || u32_at(0) != 4 || u32_at(8) != 18 || &d[12..16] != b"Xen\0" {
        return Err("the PVH note is not a Xen note of type 18".into());
    }
    let mb2 = (0..32768usize.min(data.len().saturating_sub(16)))
        .step_by(8)
        .find(|&o| {
            let w = |i: usize| u32::from_le_bytes(data[o + i..o + i + 4].try_into().unwrap());
            w(0) == 0xE852_50D6
                && w(0)
                    .wrapping_add(w(4))
                    .wrapping_add(w(8))
                    .wrapping_add(w(12))
                    == 0
        });
    if mb2.is_none() {
        return Err("no valid multiboot2 header in the first 32 KiB".into());
    }
    Ok(())
}
