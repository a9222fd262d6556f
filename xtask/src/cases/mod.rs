//! The boot cases of `cargo xtask test`, as data: which image to boot, how, and what its console and
//! result must show. Nothing here runs anything; `test.rs` iterates the cases and `run.rs` decides a
//! boot's result (only the stop line that carries the boot token counts, see `run::interpret`).
use std::time::Duration;

use libvmm_abi::stop::StopCode;

use crate::backend::Backend;

mod riscv;
mod svm;
mod tdx;
mod vmx;

/// One boot of one image and what it must show.
#[derive(Clone, Debug)]
pub struct Case {
    /// How the case is listed (`<backend>: <name>`).
    pub name: String,
    pub backend: Backend,
    pub payload: &'static str,
    /// The image's command line (QEMU `-append`, or the GRUB line of an ISO).
    pub cmdline: &'static str,
    /// Emulator CPU model, when the case needs another than the backend's default.
    pub cpu: Option<&'static str>,
    /// x86 QEMU ISO boots (`grub_iso`): UEFI (OVMF, `q35`) instead of SeaBIOS (`pc`).
    pub uefi: bool,
    /// x86 QEMU `-kernel` boots: machine properties appended to `-M microvm` (`pit=off`).
    pub machine: Option<&'static str>,
    /// RISC-V: boot with this device tree (path from the repository root) instead of QEMU's.
    pub dtb: Option<&'static str>,
    /// x86 QEMU: boot from a GRUB ISO (multiboot2, `pc` machine) instead of `-kernel` (PVH). VMX images
    /// always boot from an ISO (in Bochs).
    pub grub_iso: bool,
    /// Text the console must contain.
    pub expect: Vec<String>,
    /// Text the console must not contain.
    pub forbid: Vec<String>,
    /// The trusted stop line's reason must be exactly this, when set.
    pub reason: Option<&'static str>,
    /// The run's result: a stop code (0..=127), or `HOST_TIMED_OUT` for a case that must be killed at
    /// its host time limit.
    pub code: u8,
    /// The host's time limit for this case, instead of the backend's default.
    pub limit: Option<Duration>,
    /// CPUs of the emulated machine (QEMU `-smp`, Bochs `cpu: count=`).
    pub cpus: u32,
    /// Why the case keeps [`Case::cpus`] under `cargo xtask test --cpus N` (a count of its own, or one
    /// CPU for a stated reason); `None`: it boots on N CPUs (see [`Case::on_cpus`]).
    pub keeps_cpus: Option<&'static str>,
    /// Text the console must not contain when the machine has one CPU (what one CPU never says, e.g.
    /// an AP's ready line); on N CPUs it is allowed.
    pub forbid_one_cpu: Vec<String>,
    /// RAM of the emulated machine in MiB (QEMU `-m`, Bochs `megs:`); 0: the default, 128.
    pub mem_mb: u32,
    /// Build-time files of the image (`--file HOST_PATH:GUEST_PATH`, host paths from the repository
    /// root): cases of one payload with different files boot different images.
    pub files: &'static [&'static str],
}

impl Case {
    /// A case named `boot <payload> <cmdline>` with nothing expected yet.
    pub fn new(backend: Backend, payload: &'static str, cmdline: &'static str, code: u8) -> Case {
        Case {
            name: format!("boot {payload} {cmdline}").trim_end().to_string(),
            backend,
            payload,
            cmdline,
            cpu: None,
            machine: None,
            uefi: false,
            dtb: None,
            grub_iso: false,
            expect: Vec::new(),
            forbid: Vec::new(),
            reason: None,
            code,
            limit: None,
            cpus: 1,
            keeps_cpus: None,
            forbid_one_cpu: Vec::new(),
            mem_mb: 0,
            files: &[],
        }
    }

    /// Keeps one CPU under `cargo xtask test --cpus N`, for `reason` (printed by the run): its
    /// expectation depends on one CPU, or its machine cannot have more.
    pub fn single_cpu(mut self, reason: &'static str) -> Case {
        self.cpus = 1;
        self.keeps_cpus = Some(reason);
        self
    }

    pub fn forbid_on_one_cpu(mut self, lines: &[&str]) -> Case {
        self.forbid_one_cpu
            .extend(lines.iter().map(|l| l.to_string()));
        self
    }

    /// The case as `cargo xtask test --cpus n` boots it. A case that keeps its count (written for it,
    /// or [`Case::single_cpu`]) is unchanged; the others boot on an `n`-CPU machine, where the VMM
    /// brings up every other CPU before the payload runs (the guest may start them or not): their
    /// one-CPU-only text is allowed, an AP's failure is not, and a case whose payload exits with status
    /// 0 must show that all `n` CPUs were virtualized. With `n == 1` this is the case of plain
    /// `cargo xtask test`, unchanged.
    pub fn on_cpus(&self, n: u32) -> Case {
        let mut c = self.clone();
        if self.keeps_cpus.is_some() || n <= 1 {
            if c.cpus == 1 {
                c.forbid.append(&mut c.forbid_one_cpu);
            }
            return c;
        }
        c.cpus = n;
        c.forbid_one_cpu.clear();
        for f in AP_FAILURES {
            if !c.forbid.iter().any(|x| x == f) {
                c.forbid.push(f.to_string());
            }
        }
        if c.code == 0 {
            c.expect.push(match c.backend {
                Backend::Riscv => format!("libvmm: {n} hart(s) virtualized"),
                _ => format!("libvmm: {n} CPU(s) virtualized"),
            });
        }
        c
    }

    /// Boots on a machine with `mb` MiB of RAM.
    pub fn machine_mb(mut self, mb: u32) -> Case {
        self.mem_mb = mb;
        self.name = format!("{} ({mb} MiB machine)", self.name);
        self
    }

    /// Boots an image carrying these build-time files (`HOST_PATH:GUEST_PATH`).
    pub fn files(mut self, files: &'static [&'static str]) -> Case {
        self.files = files;
        self
    }

    pub fn expect(mut self, lines: &[&str]) -> Case {
        self.expect.extend(lines.iter().map(|l| l.to_string()));
        self
    }

    pub fn expect_line(mut self, line: String) -> Case {
        self.expect.push(line);
        self
    }

    pub fn forbid(mut self, lines: &[&str]) -> Case {
        self.forbid.extend(lines.iter().map(|l| l.to_string()));
        self
    }

    pub fn cpu(mut self, cpu: &'static str) -> Case {
        self.cpu = Some(cpu);
        self.name = format!("{} (cpu {cpu})", self.name);
        self
    }

    pub fn machine(mut self, props: &'static str) -> Case {
        self.machine = Some(props);
        self.name = format!("{} (-M microvm,{props})", self.name);
        self
    }

    /// Boots with this device tree; one CPU under `cargo xtask test --cpus N` too (the tree lists the
    /// harts the VMM starts: the trees here are QEMU's own for one hart).
    pub fn dtb(mut self, dtb: &'static str) -> Case {
        self.dtb = Some(dtb);
        self.keeps_cpus = Some("its device tree (a file, QEMU's own for one hart) lists one hart");
        self.name = format!("{} (-dtb {dtb})", self.name);
        self
    }

    /// Boots on `n` CPUs, also under `cargo xtask test --cpus N`: the case is written for this count.
    pub fn cpus(mut self, n: u32) -> Case {
        self.cpus = n;
        self.keeps_cpus = Some(OWN_COUNT);
        self.name = format!("{} ({n} CPUs)", self.name);
        self
    }

    pub fn reason(mut self, reason: &'static str) -> Case {
        self.reason = Some(reason);
        self
    }

    pub fn limit(mut self, limit: Duration) -> Case {
        self.limit = Some(limit);
        self
    }

    pub fn named(mut self, name: &str) -> Case {
        self.name = name.to_string();
        self
    }
}

/// Why a case made with [`Case::cpus`] keeps its count under `cargo xtask test --cpus N`.
pub const OWN_COUNT: &str = "written for its own CPU count";

/// What a CPU the VMM could not bring up prints (`smp_hello` forbids them too).
const AP_FAILURES: [&str; 3] = ["did not start", "bring-up failed", "hart_start refused"];

/// How a case is listed in a run: `<backend>: <name>`, and ` [on N CPUs]` when `cargo xtask test
/// --cpus N` moved it to N CPUs (`booted` is `written.on_cpus(N)`).
pub fn run_name(written: &Case, booted: &Case) -> String {
    if booted.cpus == written.cpus {
        format!("{}: {}", written.backend, written.name)
    } else {
        format!(
            "{}: {} [on {} CPUs]",
            written.backend, written.name, booted.cpus
        )
    }
}

/// Under `cargo xtask test --cpus n` (n > 1): the line saying that `written` kept its count and why,
/// or `None` when it moves to `n` CPUs (or `n` is 1: nothing moves).
pub fn kept_line(written: &Case, n: u32) -> Option<String> {
    let why = written.keeps_cpus.filter(|_| n > 1)?;
    let count = match written.cpus {
        1 => "1 CPU".to_string(),
        k => format!("{k} CPUs"),
    };
    Some(format!(
        "{}: {}: {count}, {why}",
        written.backend, written.name
    ))
}

/// Every boot case of a backend.
pub fn all(backend: Backend) -> Vec<Case> {
    match backend {
        Backend::Svm => svm::cases(),
        Backend::Vmx => vmx::cases(),
        Backend::Riscv => riscv::cases(),
        Backend::Tdx => tdx::cases(),
    }
}

/// How the guest names the backend (`libvmm_guest::backend_name`).
fn guest_name(backend: Backend) -> &'static str {
    match backend {
        Backend::Svm => "AMD SVM",
        Backend::Vmx => "Intel VMX",
        Backend::Tdx => "Intel TDX",
        Backend::Riscv => "RISC-V H",
    }
}

const HOSTILE_FORBID: [&str; 3] = [
    "hostile: FAIL",
    "libvmm: VMM",
    "payload: unexpected exception",
];

/// A fatal attack of the hostile payload: every recoverable check passed, then `expect`.
/// The hostile payload aims at fixed addresses around the smallest window (`layout::*::WINDOW_SIZE`):
/// its cases pin the guest's memory there with `libvmm.mem=8M`.
fn hostile(backend: Backend, cmdline: &'static str, code: u8, expect: String) -> Case {
    let cmdline: &'static str = Box::leak(format!("{cmdline} libvmm.mem=8M").trim().into());
    Case::new(backend, "hostile", cmdline, code)
        .expect(&[" recoverable checks passed, 0 failed"])
        .expect_line(expect)
        .forbid(&HOSTILE_FORBID)
}

/// `std-demo` (a Rust std program, a static PIE the VMM places and relocates), the same lines on every
/// backend: heap, a file from the image and a tmpfs round trip, entropy (HashMap: RDRAND on x86, the
/// Zkr `seed` CSR the VMM passes through on RISC-V, so the RISC-V machine is `rv64` with Zkr),
/// args/env, sleep, threads with Mutex / Condvar / channels, a refused socket, `process::exit(3)`.
fn std_demo(backend: Backend) -> Case {
    let c = Case::new(
        backend,
        "std-demo",
        "DEMO=yes RUST_MIN_STACK=131072 -- std-demo a b",
        3,
    )
    .expect(&[
        "std-demo: hello from std",
        "std-demo: words 9 the=3 first=\"brown\"  1.235 0xff ok",
        "std-demo: args [\"std-demo\", \"a\", \"b\"] env DEMO=Some(\"yes\") ok",
        "std-demo: slept >= 20 ms: true ok",
        "std-demo: threads counter 8000 sum 280 ok",
        "std-demo: condvar ok, channel sum 14 ok",
        "std-demo: socket error Uncategorized ok",
        "std-demo: image file \"hello from the image\\n\" 21 bytes ok",
        "std-demo: tmpfs read \"two three four\" len 18 dir [\"a.txt\", \"b.txt\"] busy true after rmdir Some(NotFound) rename Some(Unsupported) ok",
    ])
    .files(&["payloads/std-demo/greeting.txt:/demo/greeting.txt"])
    .forbid(&["panicked"]);
    if backend == Backend::Riscv {
        c.cpu("rv64,zkr=true").expect(&[" zkr "])
    } else {
        c
    }
}

/// `hello`: it greets from the backend and exits with status 0.
fn hello(backend: Backend) -> Case {
    Case::new(backend, "hello", "", 0)
        .expect_line(format!(
            "Hello from a libvmm guest! This payload runs deprivileged on {}.",
            guest_name(backend)
        ))
        .expect(&["libvmm: stop 0 payload exited with status 0"])
        .forbid(&["panic"])
        // One CPU: no AP is started, and nothing is said about APs.
        .forbid_on_one_cpu(&["libvmm: CPU 1:"])
}

/// Why the plain `hello` case of every backend keeps one CPU under `cargo xtask test --cpus N`.
pub const HELLO_ONE_CPU: &str =
    "checks that one CPU starts no AP and says nothing about APs (smp_hello covers more CPUs)";

/// `hello` on a machine of `n` CPUs: the VMM starts every other CPU (x86 INIT-SIPI-SIPI from the MADT,
/// RISC-V SBI HSM from the device tree), each enables virtualization itself and prints its ready line,
/// then parks; the boot CPU runs the payload as on one CPU.
fn smp_hello(backend: Backend, n: u32) -> Case {
    let mut c = Case::new(backend, "hello", "", 0)
        .expect_line(format!(
            "Hello from a libvmm guest! This payload runs deprivileged on {}.",
            guest_name(backend)
        ))
        .expect(&["libvmm: stop 0 payload exited with status 0"])
        .forbid(&[
            "panic",
            "did not start",
            "bring-up failed",
            "hart_start refused",
        ]);
    for k in 1..n {
        c = c.expect_line(format!("libvmm: CPU {k}: {} ready", guest_name(backend)));
    }
    c = c.expect_line(match backend {
        Backend::Riscv => format!("libvmm: {n} hart(s) virtualized"),
        _ => format!("libvmm: {n} CPU(s) virtualized"),
    });
    c.forbid.push(format!("libvmm: CPU {n}:"));
    c.cpus(n)
}

/// The Rust std program `std-smp` on `n` CPUs (guest SMP under std threads): `available_parallelism`
/// is `n`; `n` threads spinning on an atomic barrier, which only concurrent execution passes, each on a
/// CPU of its own, each then checking that CPU's own timer (a raw sleep on it), `thread::sleep` and a
/// futex timeout; eight threads (more than CPUs, multiplexed at blocking calls) with an exact `Mutex`
/// counter and join sum; a channel sum. On one CPU the same program runs every thread on CPU 0.
fn std_smp(backend: Backend, n: u32) -> Case {
    let c = Case::new(backend, "std-smp", "", 0)
        .expect_line(format!("std-smp: available_parallelism {n} ok"))
        .expect_line(format!(
            "std-smp: barrier of {n} spinning threads passed true on {n} distinct CPUs ok"
        ))
        .expect_line(format!(
            "std-smp: timers on {n} CPUs: own-timer sleep, thread::sleep, futex timeout ok"
        ))
        .expect(&[
            "std-smp: 8 threads counter 8000 sum 280 ok",
            "std-smp: channel sum 14 ok",
            "std-smp: done",
            "libvmm: stop 0 payload exited with status 0",
        ])
        .forbid(&[
            "panicked",
            "deadlock",
            "payload: unexpected",
            "std-smp: FAILED",
        ]);
    if n > 1 {
        c.cpus(n)
    } else {
        c.single_cpu("its lines name 1 CPU (available_parallelism 1, barrier on 1 CPU)")
    }
}

/// `std-smp deadlock` on `n` CPUs: a thread waits on a channel whose sender `main` keeps and `main` joins
/// it; with every CPU idle and nothing ready or timed, the runtime reports the deadlock and aborts
/// (never a hang until the host's limit).
fn std_smp_deadlock(backend: Backend, n: u32) -> Case {
    let c = Case::new(
        backend,
        "std-smp",
        "-- std-smp deadlock",
        StopCode::PayloadAbort as u8,
    )
    .expect(&[
        "std-smp: joining a thread that waits for main",
        "payload: deadlock: every thread waits and none can wake it",
        "libvmm: stop 98 payload aborted",
    ])
    .forbid(&["std-smp: FAILED", "panicked"])
    .limit(Duration::from_secs(60));
    if n > 1 {
        c.cpus(n)
    } else {
        c.single_cpu("the 1-CPU counterpart of the deadlock report on several CPUs")
    }
}

/// `smp` on `n` CPUs (guest SMP): every vCPU started by the guest, an exact shared counter, IPI
/// ping-pong between every ordered pair, the TLB shootdown (RISC-V), whole console lines from every
/// CPU, and one stop line with every vCPU's exit count (`libvmm.stats=1`).
fn smp(backend: Backend, n: u32) -> Case {
    let mut c = Case::new(backend, "smp", "libvmm.stats=1", 0)
        .expect_line(format!(
            "smp: {n} CPU(s) on {}, this is CPU 0",
            guest_name(backend)
        ))
        .expect_line(format!("smp: counter {} == {n} x 10000 ok", n * 10000))
        .expect_line(format!(
            "smp: ipi ping-pong between {} ordered pairs ok",
            n * (n - 1)
        ))
        .expect(&[
            "smp: all checks passed",
            "libvmm: stop 0 payload exited with status 0",
        ])
        .forbid(&["smp: FAILED", "panic", "payload: unexpected exception"]);
    c = c.expect_line(format!(
        "smp: TLB shootdown: {n} CPU(s) see page B after the remote fence ok"
    ));
    for cpu in 0..n {
        c = c.expect_line(format!(
            "smp: line 4 from cpu {cpu}: the quick brown fox jumps over the lazy dog\n"
        ));
    }
    if n > 1 {
        c = c.expect_line(match backend {
            Backend::Riscv => format!("libvmm: guest SMP: {n} vCPUs, one per hart, pinned"),
            _ => format!("libvmm: guest SMP: {n} vCPUs, one per CPU, pinned"),
        });
        for cpu in 1..n {
            c = c.expect_line(format!("libvmm: stats: vCPU {cpu}: "));
        }
    }
    c.cpus(n)
}

/// `libvmm.selftest=ap-fail` on `n` CPUs: the last AP fails its own bring-up on purpose (reason
/// `selftest`), the one CPU failure no emulator here produces. With the default
/// `libvmm.ap_failure=continue` the failure is reported by number and the VM runs on the other `n - 1`
/// (payload `smp`: its checks on `n - 1` CPUs; `hello`: it greets); with `libvmm.ap_failure=stop` the
/// boot stops with the reason, before any payload line.
fn ap_fail(backend: Backend, payload: &'static str, n: u32) -> Vec<Case> {
    let last = n - 1;
    let failed = format!("libvmm: CPU {last}: bring-up failed: selftest");
    let (unit, stop) = match backend {
        Backend::Riscv => (
            "hart(s)",
            "platform error: a hart failed bring-up (libvmm.ap_failure=stop)",
        ),
        _ => (
            "CPU(s)",
            "platform error: a CPU failed bring-up (libvmm.ap_failure=stop)",
        ),
    };
    let ready = format!("libvmm: CPU {last}: {} ready", guest_name(backend));
    let mut runs = Case::new(backend, payload, "libvmm.selftest=ap-fail", 0)
        .expect_line(failed.clone())
        .expect_line(format!("libvmm: {last} {unit} virtualized"))
        .expect(&["libvmm: stop 0 payload exited with status 0"])
        .forbid(&["panic", "payload: unexpected exception", "did not start"])
        .forbid(&[ready.as_str()]);
    runs = if payload == "smp" {
        runs.expect_line(format!(
            "smp: {last} CPU(s) on {}, this is CPU 0",
            guest_name(backend)
        ))
        .expect_line(format!(
            "smp: counter {} == {last} x 10000 ok",
            last * 10000
        ))
        .expect(&["smp: all checks passed"])
        .forbid(&["smp: FAILED"])
    } else {
        runs.expect_line(format!(
            "Hello from a libvmm guest! This payload runs deprivileged on {}.",
            guest_name(backend)
        ))
    };
    let stops = Case::new(
        backend,
        payload,
        "libvmm.selftest=ap-fail libvmm.ap_failure=stop",
        StopCode::PlatformError as u8,
    )
    .expect_line(failed)
    .reason(stop)
    .forbid(&["Hello from a libvmm guest", "virtualized", "panic"])
    .forbid(&[format!("{payload}: ").as_str()]);
    let mut v = vec![runs.cpus(n), stops.cpus(n)];
    if payload == "smp" && n >= 3 {
        // A middle CPU fails: vCPU n runs on CPU n, so the guest has the boot CPU only and the boot
        // says that the ready CPUs after the failed one stay idle.
        v.push(
            Case::new(backend, payload, "libvmm.selftest=ap-fail=1", 0)
                .expect(&["libvmm: CPU 1: bring-up failed: selftest"])
                .expect_line(format!(
                    "libvmm: guest SMP: CPU 1 did not come up, so the guest has 1 vCPU(s) (vCPU n runs on CPU n); {} ready CPU(s) after it stay idle",
                    n - 2
                ))
                .expect_line(format!(
                    "smp: 1 CPU(s) on {}, this is CPU 0",
                    guest_name(backend)
                ))
                .expect(&[
                    "smp: all checks passed",
                    "libvmm: stop 0 payload exited with status 0",
                ])
                .forbid(&["panic", "payload: unexpected exception", "smp: FAILED"])
                .cpus(n),
        );
    }
    v
}

/// The short start/stop stress of `smp` (the long one is `cargo xtask bench`'s), the IPI storm from
/// every vCPU at once, every vCPU's first touch of the same blocks at once, and an exit while the other
/// vCPUs start: one clean stop line each.
fn smp_stress(backend: Backend) -> Vec<Case> {
    smp_stress_on(backend, 4, 50)
}

/// [`smp_stress`] on `n` CPUs with `iters` start/stop rounds (VMX: 2 CPUs, Bochs being slow).
fn smp_stress_on(backend: Backend, n: u32, iters: u32) -> Vec<Case> {
    vec![
        Case::new(
            backend,
            "smp",
            format!("mode=stress iters={iters}").leak(),
            0,
        )
        .expect_line(format!("smp: stress {} starts, ", (n - 1) * iters))
        .expect(&["smp: stress ok"])
        .forbid(&["smp: FAILED", "panic", "payload: unexpected exception"])
        .cpus(n),
        Case::new(backend, "smp", "mode=storm iters=200", 0)
            .expect_line(format!(
                "smp: ipi storm: {n} CPU(s) x 200 IPIs to every CPU ok"
            ))
            .forbid(&["smp: FAILED", "panic", "payload: unexpected exception"])
            .cpus(n),
        // Zero on first touch with every vCPU touching the same blocks at once (one shared state per
        // VM): each block zeroed once, nobody's write lost.
        Case::new(backend, "smp", "mode=touch", 0)
            .expect_line(format!(
                "smp: first touch of 8 blocks from {n} CPUs at once, every write kept ok"
            ))
            .expect(&["libvmm: stop 0 payload exited with status 0"])
            .forbid(&["smp: FAILED", "panic", "payload: unexpected exception"])
            .cpus(n),
        Case::new(backend, "smp", "mode=exit-while-starting", 0)
            .expect_line(format!("smp: exiting while {} CPU(s) start", n - 1))
            .expect(&["libvmm: stop 0 payload exited with status 0"])
            .forbid(&["panic", "payload: unexpected exception"])
            .cpus(n),
    ]
}

/// x86 guest SMP's hostile ICR cases (`smp mode=hostile` on 4 CPUs): STARTUP to a running vCPU, INIT
/// to the BSP, IPIs to APIC IDs no vCPU has, NMI/SMI, an illegal vector, logical and shorthand
/// destinations, each with the architectural answer.
fn smp_hostile_x86(backend: Backend) -> Case {
    smp_hostile_x86_on(backend, 4)
}

/// [`smp_hostile_x86`] on `n` CPUs (VMX: 2).
fn smp_hostile_x86_on(backend: Backend, n: u32) -> Case {
    Case::new(backend, "smp", "mode=hostile", 0)
        .expect_line("smp: STARTUP to running cpu 1 ignored ok".into())
        .expect_line("smp: INIT to the BSP ignored ok".into())
        .expect_line("smp: IPIs to nonexistent APIC ids dropped ok".into())
        .expect_line("smp: NMI and SMI to cpu 1 dropped ok".into())
        .expect_line("smp: illegal vector 5: ESR 0x20 ok".into())
        .expect_line("smp: logical IPI (cluster 0, bit 1) reached cpu 1 ok".into())
        .expect_line(format!(
            "smp: all-excluding-self IPI reached {} CPU(s) ok",
            n - 1
        ))
        .expect_line(format!("smp: all-including-self IPI reached {n} CPU(s) ok"))
        .expect(&[
            "smp: hostile checks passed",
            "libvmm: stop 0 payload exited with status 0",
        ])
        .forbid(&["smp: FAILED", "panic", "payload: unexpected exception"])
        .cpus(n)
}

/// The VM's time limit with no vCPU that could end the run (`smp mode=spin-forever`, 4 CPUs): three
/// vCPUs spin forever while the boot vCPU halts with interrupts off, with `timer=1` after arming a guest
/// timer it can never take (on x86 its host one-shot is spent early, and the boot CPU's wait for a kick
/// once had nothing left to end it). The limit stops every vCPU, with one stop line; no host time-out.
fn smp_time_limit(backend: Backend, timers: &[bool]) -> Vec<Case> {
    timers
        .iter()
        .map(|&timer| {
            let (cmdline, line) = if timer {
                (
                    "mode=spin-forever timer=1 libvmm.timeout_ms=1000",
                    "smp: 3 CPU(s) spin forever; cpu 0 halts with interrupts off, its timer armed",
                )
            } else {
                (
                    "mode=spin-forever libvmm.timeout_ms=1000",
                    "smp: 3 CPU(s) spin forever; cpu 0 halts with interrupts off\n",
                )
            };
            Case::new(backend, "smp", cmdline, StopCode::GuestError as u8)
                .expect_line(line.into())
                .reason("guest exceeded its time limit of 1000 ms")
                .forbid(&["panic", "stopped by another vCPU", "smp: FAILED"])
                .limit(Duration::from_secs(60))
                .cpus(4)
        })
        .collect()
}

/// The guest API for a payload's own trap handlers (`libvmm_guest::set_trap_handler`): `hello traps=1`
/// installs an illegal-instruction handler, executes `ud2` / an illegal instruction, skips it and goes
/// on; `traps=default` installs one that declines, so the runtime's default (report and abort) runs.
fn traps(backend: Backend) -> Vec<Case> {
    let declined = match backend {
        Backend::Riscv => vec![
            "hello: trap handler declines Riscv(2)",
            "payload: unexpected exception 0x2 (stval ",
        ],
        _ => vec![
            "hello: trap handler declines X86(6)",
            "payload: unexpected exception 6 (error 0x0) at rip 0x",
        ],
    };
    vec![
        Case::new(backend, "hello", "traps=1", 0)
            .expect(&[
                "hello: trap handler ok",
                "libvmm: stop 0 payload exited with status 0",
            ])
            .forbid(&[
                "hello: trap handler FAILED",
                "payload: unexpected exception",
                "panic",
            ]),
        Case::new(
            backend,
            "hello",
            "traps=default",
            StopCode::PayloadAbort as u8,
        )
        .expect(&declined)
        .expect(&["libvmm: stop 98 payload aborted"])
        .forbid(&["hello: trap handler FAILED"]),
    ]
}

/// `timer`: guest interrupts and time through `libvmm_guest::time` / `irq` (x86: the virtual x2APIC;
/// RISC-V: SBI TIME): periodic ticks counted exactly, a one-shot sleep on HLT/WFI that ends no earlier
/// than asked; on x86 also TSC-deadline mode, EOI discipline, TPR masking, IF=0 until STI, ICR self-IPI.
fn timer(backend: Backend) -> Case {
    let mut lines = vec![
        "timer: periodic: 5 ticks counted exactly ok",
        "timer: one-shot deadline wakes the halted guest no earlier than asked ok",
    ];
    if backend != Backend::Riscv {
        lines.extend([
            "timer: tsc-deadline: fired at or after the deadline, which reads 0 after ok",
            "timer: eoi discipline: the second interrupt waited for the first one's EOI ok",
            "timer: tpr masks a lower-priority vector ok",
            "timer: an interrupt raised with IF=0 waits until STI ok",
            "timer: self-IPI through the ICR ok",
        ]);
    }
    match backend {
        Backend::Svm => lines.push(
            "libvmm: AVIC active: off: x2APIC MSRs 0x800-0x8ff intercepted, emulated by the virtual x2APIC",
        ),
        Backend::Vmx => lines.push(
            "libvmm: APICv off: x2APIC emulated",
        ),
        _ => {}
    }
    lines.extend([
        "timer: all checks passed",
        "libvmm: stop 0 payload exited with status 0",
    ]);
    Case::new(backend, "timer", "", 0).expect(&lines).forbid(&[
        "timer: FAILED",
        "unexpected",
        "panic",
    ])
}

/// The virtual x2APIC under attack (x86): the recoverable APIC checks pass (they run in every hostile
/// boot; named here), and a timer storm (periodic, initial count 1, divide 1, IF=1) leaves the VMM
/// responsive: the time limit stops it.
fn apic_attacks(backend: Backend) -> Vec<Case> {
    vec![hostile(
        backend,
        "attack=apic-storm libvmm.timeout_ms=1000",
        StopCode::GuestError as u8,
        "guest exceeded its time limit of 1000 ms".into(),
    )
    .expect(&[
        "hostile: ok apic-base-extd-without-en-is-gp",
        "hostile: ok apic-base-reserved-bit-is-gp",
        "hostile: ok apic-base-leave-x2apic-to-xapic-is-gp",
        "hostile: ok apic-reserved-bits-are-gp",
        "hostile: ok apic-write-only-or-hole-read-is-gp",
        "hostile: ok apic-icr-reserved-mode-ignored",
        "hostile: ok apic-read-only-write-is-gp",
        "hostile: ok apic-eoi-with-nothing-in-service",
        "hostile: ok apic-icr-lowest-priority-is-refused",
        "hostile: ok apic-illegal-vector-not-sent",
        "hostile: ok apic-tsc-deadline-in-the-past-fires-at-once",
        "hostile: ok apic-tsc-deadline-at-u64-max-is-armed",
        "hostile: fatal attack apic-storm",
    ])]
}

/// `exitbench` on any backend: it runs to the end and every `write`, whatever its length, is one exit.
fn exitbench(backend: Backend) -> Case {
    Case::new(backend, "exitbench", "", 0)
        .expect(&[
            "exitbench: done",
            "bench: exits_per_write_1=1",
            "bench: exits_per_write_65536=1",
        ])
        .forbid(&["panic"])
}

/// `exitbench` with `libvmm.stats=1`: the exits by reason and their total, printed just before the
/// stop line (`reasons`: the exact `libvmm: stats: exit ...` lines, in order). The one guest-memory
/// fault is the first touch of the stack's block (zeroed and mapped then, not at boot).
fn exitbench_stats(backend: Backend, reasons: &[&str]) -> Case {
    let mut lines = String::new();
    for r in reasons.iter().chain(&["guest-memory-fault 1"]) {
        lines.push_str(&format!("libvmm: stats: exit {r}\n"));
    }
    lines
        .push_str("libvmm: stats: total 2048 exits\nlibvmm: stop 0 payload exited with status 0 [");
    let c = Case::new(backend, "exitbench", "libvmm.stats=1", 0)
        .expect(&["exitbench: done"])
        .expect_line(lines)
        .forbid(&["panic"]);
    c.single_cpu(
        "its exact stats block is the one-vCPU form (with several, each vCPU's total follows; x86 \
         guest SMP also takes no first-touch fault: every block is zeroed at boot)",
    )
}

/// Why an x86 case that counts first-touch faults keeps one CPU under `cargo xtask test --cpus N`.
pub const X86_FIRST_TOUCH: &str =
    "it counts first-touch faults, which x86 guest SMP does not take (every block is zeroed at boot)";

/// A guest that never exits is stopped at its time limit (timer exits give the VMM the CPU back: the
/// LAPIC timer on SVM, the VMX-preemption timer on VMX, the supervisor timer on RISC-V).
fn timed_spin(backend: Backend) -> Vec<Case> {
    vec![hostile(
        backend,
        "attack=spin libvmm.timeout_ms=300",
        StopCode::GuestError as u8,
        "guest exceeded its time limit of 300 ms".into(),
    )]
}

/// The fatal attacks of the hostile payload on x86 (SVM, VMX): memory outside the guest window, a triple
/// fault, a halt nothing can wake.
fn x86_memory_attacks(backend: Backend) -> Vec<Case> {
    use libvmm_abi::layout::x86_64::{VMM_IMAGE_BASE, WINDOW_BASE, WINDOW_SIZE};
    let gmv = StopCode::GuestMemoryViolation as u8;
    let window_end = WINDOW_BASE + WINDOW_SIZE;
    vec![
        hostile(
            backend,
            "",
            gmv,
            format!(
                "guest memory violation: read of guest-physical {VMM_IMAGE_BASE:#x} outside guest memory"
            ),
        ),
        hostile(
            backend,
            "attack=vmm-write",
            gmv,
            format!(
                "guest memory violation: write of guest-physical {:#x}",
                VMM_IMAGE_BASE + 0x1000
            ),
        ),
        hostile(
            backend,
            "attack=vmm-exec",
            gmv,
            format!("guest memory violation: execute of guest-physical {VMM_IMAGE_BASE:#x}"),
        ),
        hostile(
            backend,
            "attack=beyond-window",
            gmv,
            format!("guest memory violation: read of guest-physical {window_end:#x}"),
        ),
        hostile(
            backend,
            "attack=triple-fault",
            StopCode::TripleFault as u8,
            "guest triple fault".into(),
        ),
        hostile(
            backend,
            "attack=halt",
            StopCode::GuestError as u8,
            "guest halted with no interrupt source".into(),
        ),
    ]
}

/// The W^X attacks of the hostile payload (`payloads/hostile/src/wx.rs`), the same on every backend: a
/// write to its own text (its first instruction, at the payload base) and to its read-only data, and a
/// call into its own data and its own stack, each a clean stop (96) naming the access, the address and
/// what the nested tables allow there. The boot log shows the map the tables were built from.
fn wx_attacks(backend: Backend, window_base: u64, payload_base: u64) -> Vec<Case> {
    let gmv = StopCode::GuestMemoryViolation as u8;
    // Where the address is not fixed at link time (read-only data, data, stack), the payload prints it
    // and the stop line is checked by shape: access, then what the tables allow there.
    let attack = |cmdline, said: &str, access: &str, mapped: &str| {
        hostile(backend, cmdline, gmv, said.into())
            .expect_line(format!(
                "guest memory violation: {access} of guest-physical 0x"
            ))
            .expect_line(format!(", mapped {mapped} (W^X) ["))
    };
    let text = hostile(
        backend,
        "attack=text-write",
        gmv,
        format!(
            "guest memory violation: write of guest-physical {payload_base:#x}, mapped read+execute, \
             no write (W^X)"
        ),
    )
    .expect_line(format!("hostile: wx write own text at {payload_base:#x}"))
    .expect_line(format!(
        "libvmm: guest memory map (W^X): {window_base:#x}..{payload_base:#x} rw- {payload_base:#x}.."
    ));
    vec![
        text,
        attack(
            "attack=rodata-write",
            "hostile: wx write own read-only data at 0x",
            "write",
            "read-only",
        ),
        attack(
            "attack=data-exec",
            "hostile: wx execute own data at 0x",
            "execute",
            "read+write, no execute",
        ),
        attack(
            "attack=stack-exec",
            "hostile: wx execute own stack at 0x",
            "execute",
            "read+write, no execute",
        ),
    ]
}

/// The attacks on the host tools' reading of the result, on a backend that enforces
/// `libvmm.timeout_ms` (all three): forged stop lines (bare, and after a fake token line with that token)
/// must not count; the real result is the time limit's stop (99). A forged stop line left open must not
/// count either; the real stop line starts on its own line and the result is the payload's status, 7.
fn forged_result_timed(backend: Backend) -> Vec<Case> {
    vec![
        hostile(
            backend,
            "attack=forge-stop libvmm.timeout_ms=300",
            StopCode::GuestError as u8,
            "libvmm: token 0000000000000000".into(),
        )
        .reason("guest exceeded its time limit of 300 ms"),
        open_line(backend),
    ]
}

/// `attack=open-line`: the result is 7, from the VMM's own stop line.
fn open_line(backend: Backend) -> Case {
    hostile(
        backend,
        "attack=open-line",
        7,
        "libvmm: stop 0 forged\nlibvmm: stop 7 payload exited with status 7 [".into(),
    )
    .reason("payload exited with status 7")
}

/// The guest-side fuzzer (`payloads/guestfuzz`): 500 seeds in safe mode, each case recovered by the
/// fuzzer's own exception handlers; the run ends with status 0, every answer inside the ABI (no
/// `guestfuzz: FAIL`), and the VMM's exit statistics. Then one wild seed on x86 that stopped SVM with
/// code 100 before the fix (a MOV to CR3 with reserved bits, which QEMU refuses with VMEXIT_INVALID):
/// the guest now gets #GP, as on hardware (and on Bochs). `cargo xtask guestfuzz --soak` runs many more.
fn guestfuzz(backend: Backend) -> Vec<Case> {
    let mut v = vec![Case::new(
        backend,
        "guestfuzz",
        "seeds=500 libvmm.stats=1 libvmm.timeout_ms=60000 libvmm.mem=8M",
        0,
    )
    .expect(&[
        "guestfuzz: safe mode, seeds 0..500",
        "guestfuzz: 500 seeds ran",
        "guestfuzz: done seeds=500 ",
        " failures=0 exceptions:",
        "libvmm: stats: total ",
    ])
    .forbid(&[
        "guestfuzz: FAIL",
        "payload: unexpected exception",
        "libvmm: VMM",
    ])
    .limit(std::time::Duration::from_secs(90))];
    if backend != Backend::Riscv {
        v.push(
            Case::new(
                backend,
                "guestfuzz",
                "mode=wild seed=1000166 seeds=1 libvmm.timeout_ms=3000 libvmm.mem=8M",
                0,
            )
            .expect(&[
                "guestfuzz: seed 1000166 page-table\nguestfuzz: wild cr3\n",
                "guestfuzz: done seeds=1 completed=0 failures=0 exceptions: 13=1\n",
            ])
            .forbid(&["VMEXIT_INVALID", "libvmm: VMM"]),
        );
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_backend_has_cases_with_distinct_names() {
        let mut total = 0;
        for b in Backend::ALL {
            let cases = all(b);
            assert!(!cases.is_empty(), "{b}");
            let mut names: Vec<&str> = cases.iter().map(|c| c.name.as_str()).collect();
            names.sort();
            names.dedup();
            assert_eq!(names.len(), cases.len(), "{b}: duplicate case names");
            assert!(cases.iter().all(|c| c.backend == b));
            total += cases.len();
        }
        // 48 boot cases before the forged-result attacks (SVM GRUB ISO included), then the forged results,
        // the RISC-V time limit, clocks without a PIT, exit statistics, the ISO under OVMF, the trap API,
        // page walks, the control-register rules and W^X (4 per backend). Cases are added, never silently lost.
        assert!(total >= 74, "{total} boot cases");
    }

    #[test]
    fn plain_test_boots_every_case_as_written() {
        for b in Backend::ALL {
            for c in all(b) {
                let r = c.on_cpus(1);
                assert_eq!(r.cpus, c.cpus, "{}", c.name);
                assert_eq!(run_name(&c, &r), format!("{b}: {}", c.name));
                assert_eq!(kept_line(&c, 1), None);
                assert_eq!(r.expect, c.expect);
                // What one CPU never says stays forbidden on one CPU.
                let mut forbid = c.forbid.clone();
                if c.cpus == 1 {
                    forbid.extend(c.forbid_one_cpu.clone());
                }
                assert_eq!(r.forbid, forbid, "{}", c.name);
            }
        }
        let plain = hello(Backend::Svm).single_cpu(HELLO_ONE_CPU).on_cpus(1);
        assert!(plain.forbid.iter().any(|f| f == "libvmm: CPU 1:"));
    }

    #[test]
    fn cpus_n_moves_every_case_without_a_count_of_its_own() {
        for n in [2, 4, 8] {
            let mut moved = 0;
            for b in Backend::ALL {
                for c in all(b) {
                    let r = c.on_cpus(n);
                    match c.keeps_cpus {
                        Some(why) => {
                            assert_eq!(r.cpus, c.cpus, "{}", c.name);
                            let line = kept_line(&c, n).unwrap();
                            assert!(line.starts_with(&format!("{b}: {}: ", c.name)), "{line}");
                            assert!(line.ends_with(why), "{line}");
                            assert_eq!(run_name(&c, &r), format!("{b}: {}", c.name));
                        }
                        None => {
                            moved += 1;
                            assert_eq!(c.cpus, 1, "{}: a count of its own is kept", c.name);
                            assert_eq!(r.cpus, n);
                            assert_eq!(kept_line(&c, n), None);
                            assert_eq!(run_name(&c, &r), format!("{b}: {} [on {n} CPUs]", c.name));
                            assert!(r.forbid.iter().any(|f| f == "did not start"));
                            assert!(!r.forbid.iter().any(|f| f == "libvmm: CPU 1:"));
                            let all_up = r.expect.iter().any(|e| e.contains(" virtualized"));
                            assert_eq!(all_up, c.code == 0, "{}", c.name);
                        }
                    }
                }
            }
            assert!(moved >= 60, "{moved} cases move to {n} CPUs");
        }
        // Written for a count, or for one CPU with a reason: the plain hello, TDX, fixed device trees.
        let svm = all(Backend::Svm);
        let smp2 = svm
            .iter()
            .find(|c| c.name == "boot smp libvmm.stats=1 (2 CPUs)");
        assert_eq!(smp2.unwrap().keeps_cpus, Some(OWN_COUNT));
        let smp1 = svm
            .iter()
            .find(|c| c.name == "boot smp libvmm.stats=1 (1 CPUs)");
        assert_eq!(smp1.unwrap().on_cpus(4).cpus, 1);
        let hello = svm.iter().find(|c| c.name == "boot hello").unwrap();
        assert_eq!(hello.keeps_cpus, Some(HELLO_ONE_CPU));
        assert!(all(Backend::Tdx).iter().all(|c| c.on_cpus(2).cpus == 1));
        assert!(all(Backend::Riscv)
            .iter()
            .filter(|c| c.dtb.is_some())
            .all(|c| c.on_cpus(2).cpus == 1));
        let traps = svm.iter().find(|c| c.name == "boot hello traps=1").unwrap();
        assert_eq!(traps.on_cpus(2).cpus, 2);
    }

    #[test]
    fn forged_results_never_expect_success() {
        for b in Backend::ALL {
            for c in all(b)
                .iter()
                .filter(|c| c.cmdline.contains("forge") || c.cmdline.contains("open-line"))
            {
                assert_ne!(c.code, 0, "{b}: {}", c.name);
            }
        }
    }
}
