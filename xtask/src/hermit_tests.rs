//! `cargo xtask test`'s checks of ordinary std crates run through the cargo runner
//! (`tools/libvmm-runner`, set in `tests/hermit/.cargo/config.toml`):
//!
//! - `tests/hermit/runner-demo`: `cargo run` passes arguments and the exit status through; `cargo test`
//!   passes (4 tests); with `--features fail` one test fails and the run ends with the harness's 101.
//! - Real-world suites: the own unit tests (`--lib`) of crates from crates.io, at the versions
//!   `tests/hermit/realworld/Cargo.lock` pins, fetched by `cargo vendor` at test time. Each vendored
//!   copy gets two lines so its test binary links the runtime (a hermit-only dev-dependency on
//!   libvmm-guest and `extern crate libvmm_guest as _;` under `cfg(all(test, target_os = "hermit"))` (any edition)), then
//!   its tests run on the host and inside libvmm: the pass counts (`test result: ok. N passed`) must be
//!   equal.
//!
//! Every hermit build shares one target directory (`target/hermit-tests`), so `std` is built once for
//! all of them (build-std, release profile).
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::cmd::{root, run_bounded, target_dir};

/// The crates of `tests/hermit/realworld/Cargo.toml`, as `cargo vendor --versioned-dirs` names them.
pub const REALWORLD: [&str; 4] = [
    "adler2-2.0.1",
    "fnv-1.0.7",
    "heck-0.5.0",
    "percent-encoding-2.3.2",
];

/// The build-std flags of a hermit build (std from source, on the pinned stable toolchain).
const BUILD_STD: [&str; 2] = [
    "-Zbuild-std=std,panic_abort",
    "-Zbuild-std-features=compiler-builtins-mem",
];

const LIMIT: Duration = Duration::from_secs(1800);

fn hermit_dir() -> PathBuf {
    target_dir().join("hermit-tests")
}

/// `cargo <sub> --release <build-std> --target x86_64-unknown-hermit <extra>` in `dir`.
fn hermit_cargo(dir: &Path, sub: &str, extra: &[&str]) -> Command {
    let mut c = crate::cmd::cargo();
    c.current_dir(dir)
        .env("RUSTC_BOOTSTRAP", "1")
        .env("CARGO_TARGET_DIR", hermit_dir())
        .args([sub, "--release"])
        .args(BUILD_STD)
        .args(["--target", "x86_64-unknown-hermit"])
        .args(extra);
    c
}

/// Runs `c`; its output, and its exit status (`None`: killed).
fn run(c: Command) -> Result<(String, Option<i32>), String> {
    let f = run_bounded(c, LIMIT, false)?;
    if f.timed_out {
        return Err(format!("timed out: {}", f.command));
    }
    Ok((f.output, f.code))
}

/// The last lines of `out`, for a failure report.
fn tail(out: &str) -> String {
    let lines: Vec<&str> = out.lines().collect();
    lines[lines.len().saturating_sub(25)..].join("\n")
}

fn expect(
    what: &str,
    out: &str,
    code: Option<i32>,
    want: i32,
    lines: &[&str],
) -> Result<(), String> {
    if code != Some(want) {
        return Err(format!(
            "{what}: exit status {code:?}, expected {want}\n{}",
            tail(out)
        ));
    }
    for l in lines {
        if !out.contains(l) {
            return Err(format!("{what}: output lacks {l:?}\n{}", tail(out)));
        }
    }
    Ok(())
}

/// `cargo run -- 7 hello` in runner-demo, with a build-time file (`LIBVMM_FILES`): the program's
/// arguments, the file, and its status 7.
pub fn runner_run() -> Result<(), String> {
    let dir = root().join("tests/hermit/runner-demo");
    let lines = std::fs::read_to_string(dir.join("src/main.rs"))
        .map_err(|e| e.to_string())?
        .lines()
        .count();
    let mut c = hermit_cargo(&dir, "run", &["--", "7", "hello"]);
    c.env("LIBVMM_FILES", "src/main.rs:/src/main.rs");
    let (out, code) = run(c)?;
    expect(
        "cargo run",
        &out,
        code,
        7,
        &[
            "runner-demo: args [\"7\", \"hello\"]",
            &format!("runner-demo: /src/main.rs has {lines} lines"),
        ],
    )
}

/// `cargo test --lib` in runner-demo: passes (0); with `--features fail`: 101.
pub fn runner_test() -> Result<(), String> {
    let dir = root().join("tests/hermit/runner-demo");
    let (out, code) = run(hermit_cargo(&dir, "test", &["--lib"]))?;
    expect(
        "cargo test",
        &out,
        code,
        0,
        &["test result: ok. 4 passed; 0 failed"],
    )?;
    let (out, code) = run(hermit_cargo(&dir, "test", &["--lib", "--features", "fail"]))?;
    expect(
        "cargo test --features fail",
        &out,
        code,
        101,
        &[
            "test tests::fails ... FAILED",
            "test result: FAILED. 4 passed; 1 failed",
        ],
    )
}

/// The pass count of a `test result: ok. N passed; 0 failed` line (exactly one such line).
fn passed(out: &str) -> Result<u64, String> {
    let counts: Vec<u64> = out
        .lines()
        .filter_map(|l| l.trim().strip_prefix("test result: ok. "))
        .filter_map(|r| r.split_once(" passed; 0 failed"))
        .filter_map(|(n, _)| n.parse().ok())
        .collect();
    match counts[..] {
        [n] => Ok(n),
        _ => Err(format!(
            "expected one \"test result: ok. N passed; 0 failed\" line, found {}\n{}",
            counts.len(),
            tail(out)
        )),
    }
}

/// Fetches the pinned crates (`cargo vendor`) and makes a copy of each that links the runtime.
fn prepare_realworld() -> Result<(), String> {
    let vendor = hermit_dir().join("vendor");
    let mut c = crate::cmd::cargo();
    c.current_dir(root().join("tests/hermit/realworld"))
        .args(["vendor", "--quiet", "--locked", "--versioned-dirs"])
        .arg(&vendor);
    let (out, code) = run(c)?;
    if code != Some(0) {
        return Err(format!("cargo vendor failed\n{}", tail(&out)));
    }
    let guest = root().join("libvmm/guest");
    for name in REALWORLD {
        let to = hermit_dir().join("crates").join(name);
        let _ = std::fs::remove_dir_all(&to);
        copy_dir(&vendor.join(name), &to)?;
        let manifest = to.join("Cargo.toml");
        let mut m = std::fs::read_to_string(&manifest).map_err(|e| e.to_string())?;
        m.push_str(&format!(
            "\n[workspace]\n\n[target.'cfg(target_os = \"hermit\")'.dev-dependencies]\n\
             libvmm-guest = {{ path = {:?} }}\n",
            guest.display().to_string()
        ));
        std::fs::write(&manifest, m).map_err(|e| e.to_string())?;
        let lib = lib_path(&to)?;
        let mut src = std::fs::read_to_string(&lib).map_err(|e| e.to_string())?;
        src.push_str(
            "\n// Added by libvmm's xtask: the test binary links the libvmm guest runtime.\n\
             #[cfg(all(test, target_os = \"hermit\"))]\nextern crate libvmm_guest as _;\n",
        );
        std::fs::write(&lib, src).map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// The library's root file (`[lib] path`, or `src/lib.rs`).
fn lib_path(dir: &Path) -> Result<PathBuf, String> {
    let m = std::fs::read_to_string(dir.join("Cargo.toml")).map_err(|e| e.to_string())?;
    let mut in_lib = false;
    for l in m.lines() {
        let l = l.trim();
        if l.starts_with('[') {
            in_lib = l == "[lib]";
        } else if let Some(p) = l.strip_prefix("path = ").filter(|_| in_lib) {
            return Ok(dir.join(p.trim_matches('"')));
        }
    }
    Ok(dir.join("src/lib.rs"))
}

fn copy_dir(from: &Path, to: &Path) -> Result<(), String> {
    std::fs::create_dir_all(to).map_err(|e| format!("{}: {e}", to.display()))?;
    for e in std::fs::read_dir(from).map_err(|e| format!("{}: {e}", from.display()))? {
        let e = e.map_err(|e| e.to_string())?;
        let (src, dst) = (e.path(), to.join(e.file_name()));
        if e.file_type().map_err(|e| e.to_string())?.is_dir() {
            copy_dir(&src, &dst)?;
        } else {
            std::fs::copy(&src, &dst).map_err(|e| format!("{}: {e}", src.display()))?;
        }
    }
    Ok(())
}

/// One crate's unit tests on the host, then inside libvmm: the same pass count, both successful.
pub fn realworld(name: &str) -> Result<(u64, u64), String> {
    let dir = hermit_dir().join("crates").join(name);
    let mut host = crate::cmd::cargo();
    host.current_dir(&dir)
        .env("CARGO_TARGET_DIR", hermit_dir().join("host"))
        .args(["test", "--release", "--lib"]);
    let (out, code) = run(host)?;
    if code != Some(0) {
        return Err(format!(
            "{name} on the host: status {code:?}\n{}",
            tail(&out)
        ));
    }
    let on_host = passed(&out)?;
    let mut c = hermit_cargo(&dir, "test", &["--lib"]);
    c.env(
        "CARGO_TARGET_X86_64_UNKNOWN_HERMIT_RUNNER",
        root().join("tools/libvmm-runner"),
    );
    let (out, code) = run(c)?;
    if code != Some(0) {
        return Err(format!("{name} in libvmm: status {code:?}\n{}", tail(&out)));
    }
    let in_vm = passed(&out)?;
    if in_vm != on_host {
        return Err(format!(
            "{name}: {in_vm} tests passed in libvmm, {on_host} on the host"
        ));
    }
    println!("{name}: {in_vm} passed in libvmm, {on_host} on the host");
    Ok((on_host, in_vm))
}

/// `cargo xtask run --backend riscv --elf <hello>`: a payload ELF built outside the image build boots
/// on another backend than the runner's (the no_std hello, built for RISC-V, as a file).
pub fn elf_on_riscv() -> Result<(), String> {
    use crate::backend::Backend;
    let elf = crate::build::build_payload_with(Backend::Riscv, "hello", "release")?;
    let copy = hermit_dir().join("hello-riscv.elf");
    std::fs::create_dir_all(hermit_dir()).map_err(|e| e.to_string())?;
    std::fs::copy(&elf, &copy).map_err(|e| e.to_string())?;
    let image = crate::build::build_image_from(
        Backend::Riscv,
        crate::build::Source::Elf(&copy),
        &[],
        &root(),
    )?;
    let o = crate::run::BootOptions::new("-- hello-riscv.elf", Duration::from_secs(60));
    let out = crate::run::boot(Backend::Riscv, &image, &o)?;
    match out.verdict.result {
        Ok(0)
            if out
                .output
                .contains("This payload runs deprivileged on RISC-V H.") =>
        {
            Ok(())
        }
        r => Err(format!("riscv --elf hello: {r:?}\n{}", tail(&out.output))),
    }
}

/// A named check of `cargo xtask test`.
pub type Check = (String, Box<dyn FnOnce() -> Result<(), String>>);

/// The named checks, in order (the real-world crates are fetched by the third).
pub fn checks() -> Vec<Check> {
    let mut v: Vec<Check> = vec![
        (
            "runner: cargo run (tests/hermit/runner-demo, svm)".into(),
            Box::new(runner_run),
        ),
        (
            "runner: cargo test, passing and failing (runner-demo, svm)".into(),
            Box::new(runner_test),
        ),
        (
            "run --elf: a payload ELF file on riscv (hello)".into(),
            Box::new(elf_on_riscv),
        ),
        (
            "real-world suites: cargo vendor (tests/hermit/realworld)".into(),
            Box::new(prepare_realworld),
        ),
    ];
    for name in REALWORLD {
        v.push((
            format!("real-world suite: {name} unit tests in libvmm (svm) = host"),
            Box::new(move || realworld(name).map(|_| ())),
        ));
    }
    v
}

/// `cargo xtask hermit-tests`: these checks alone (they are also steps of `cargo xtask test`).
pub fn cmd() -> Result<u8, String> {
    let mut failed = 0;
    for (name, check) in checks() {
        println!("---- {name}");
        match check() {
            Ok(()) => println!("PASS {name}"),
            Err(e) => {
                failed += 1;
                println!("FAIL {name}: {e}");
            }
        }
    }
    Ok(if failed == 0 { 0 } else { 1 })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pass_counts_come_from_the_one_ok_line() {
        let out =
            "running 3 tests\ntest a ... ok\n\ntest result: ok. 3 passed; 0 failed; 0 ignored;";
        assert_eq!(passed(out), Ok(3));
        assert!(passed("test result: FAILED. 2 passed; 1 failed").is_err());
        assert!(passed(&format!("{out}\n{out}")).is_err());
    }
}
