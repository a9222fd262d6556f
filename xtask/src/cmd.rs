//! Running commands: the workspace root, cargo, and child processes with a time limit.
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target"))
}

pub fn cargo() -> Command {
    let mut c = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    c.current_dir(root());
    c
}

/// Runs a command to completion with inherited output; Ok(()) on success.
pub fn status(mut c: Command, what: &str) -> Result<(), String> {
    let s = c
        .status()
        .map_err(|e| format!("{what}: cannot start: {e}"))?;
    if s.success() {
        Ok(())
    } else {
        Err(format!("{what} failed ({s})"))
    }
}

/// What a bounded run of a child printed and how it ended.
pub struct Finished {
    pub output: String,
    /// Exit code, or None when killed by a signal or by the time limit.
    pub code: Option<i32>,
    pub timed_out: bool,
    /// The command that ran, shell-quoted: what to paste to rerun it alone.
    pub command: String,
}

/// A command as a shell line (program, then arguments quoted where needed).
pub fn shell_line(c: &Command) -> String {
    let quote = |a: &str| {
        if !a.is_empty()
            && a.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_./:=@,+".contains(c))
        {
            a.to_string()
        } else {
            format!("'{}'", a.replace('\'', "'\\''"))
        }
    };
    let mut s = quote(&c.get_program().to_string_lossy());
    for a in c.get_args() {
        s.push(' ');
        s.push_str(&quote(&a.to_string_lossy()));
    }
    s
}

/// Runs `c` with stdout+stderr captured (and echoed line by line when `echo`), killed after `limit`.
pub fn run_bounded(mut c: Command, limit: Duration, echo: bool) -> Result<Finished, String> {
    let command = shell_line(&c);
    c.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let start = Instant::now();
    let mut child = c
        .spawn()
        .map_err(|e| format!("cannot start {:?}: {e}", c.get_program()))?;
    let (tx, rx) = mpsc::channel::<String>();
    let out = child.stdout.take().unwrap();
    let tx2 = tx.clone();
    let t1 = std::thread::spawn(move || {
        let mut r = BufReader::new(out);
        let mut buf = Vec::new();
        while let Ok(n) = r.read_until(b'\n', &mut buf) {
            if n == 0 {
                break;
            }
            let line = String::from_utf8_lossy(&buf).into_owned();
            if echo {
                print!("{line}");
            }
            let _ = tx2.send(line);
            buf.clear();
        }
    });
    let mut err = child.stderr.take().unwrap();
    let t2 = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        if echo {
            eprint!("{s}");
        }
        let _ = tx.send(s);
    });
    let mut timed_out = false;
    let status = loop {
        if let Some(s) = child.try_wait().map_err(|e| e.to_string())? {
            break Some(s);
        }
        if start.elapsed() > limit {
            // SIGTERM first (an emulator writing its console to a file flushes it), SIGKILL after 2 s.
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .stderr(Stdio::null())
                .status();
            let grace = Instant::now();
            while grace.elapsed() < Duration::from_secs(2) {
                if child.try_wait().map_err(|e| e.to_string())?.is_some() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            let _ = child.kill();
            let _ = child.wait();
            timed_out = true;
            break None;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let _ = t1.join();
    let _ = t2.join();
    let output: String = rx.try_iter().collect();
    Ok(Finished {
        output,
        code: status.and_then(|s| s.code()),
        timed_out,
        command,
    })
}

/// Whether a program is on PATH.
pub fn have(program: &str) -> bool {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(program).is_file()))
        .unwrap_or(false)
}

/// Installs everything any command or test case needs (Rust targets, QEMU, Bochs, the GRUB ISO tools)
/// with `ci/install-deps.sh all`, which installs only what is missing. Called once, before anything is
/// built or booted, so that its output never lands in a VM's console output.
pub fn install_deps() -> Result<(), String> {
    let mut c = Command::new("bash");
    c.arg(root().join("ci/install-deps.sh")).arg("all");
    status(c, "ci/install-deps.sh all")
}

/// How a program or file the runs need is installed (Debian packages; `ci/install-deps.sh` does it all).
pub fn install_hint(what: &str) -> &'static str {
    match what {
        "qemu-system-x86_64" => {
            "apt-get install -t bookworm-backports qemu-system-x86 (QEMU 10; ci/install-deps.sh qemu)"
        }
        "qemu-system-riscv64" | "opensbi" => {
            "apt-get install -t bookworm-backports qemu-system-misc (QEMU 10 with OpenSBI; ci/install-deps.sh qemu)"
        }
        "bochs" | "bochsbios" | "vgabios" => {
            "apt-get install bochs bochsbios vgabios (ci/install-deps.sh bochs)"
        }
        "grub-mkrescue" => {
            "apt-get install grub-pc-bin grub-common grub-efi-amd64-bin (ci/install-deps.sh bochs)"
        }
        "xorriso" => "apt-get install xorriso (ci/install-deps.sh bochs)",
        "mformat" => "apt-get install mtools (ci/install-deps.sh bochs)",
        "ovmf" => "apt-get install ovmf (ci/install-deps.sh bochs)",
        "gdb" => "apt-get install gdb (ci/install-deps.sh gdb)",
        "gdb-multiarch" => "apt-get install gdb-multiarch (ci/install-deps.sh gdb)",
        _ => "ci/install-deps.sh all",
    }
}

/// Fails, naming the first missing program and how to install it, unless all of `programs` are on PATH.
pub fn require(programs: &[&str]) -> Result<(), String> {
    match programs.iter().find(|p| !have(p)) {
        Some(p) => Err(format!("{p} is missing: {}", install_hint(p))),
        None => Ok(()),
    }
}

/// Fails, naming the file and how to install it, unless `path` exists (firmware, BIOS images).
pub fn require_file(path: &str, package: &str) -> Result<(), String> {
    if Path::new(path).is_file() {
        Ok(())
    } else {
        Err(format!("{path} is missing: {}", install_hint(package)))
    }
}

/// Makes sure the project's external tools are there, installing them with `ci/install-deps.sh`.
pub fn ensure_tools(what: &str, programs: &[&str]) -> Result<(), String> {
    if programs.iter().all(|p| have(p)) {
        return Ok(());
    }
    eprintln!("xtask: {programs:?} missing: running ci/install-deps.sh {what}");
    let mut c = Command::new("bash");
    c.arg(root().join("ci/install-deps.sh")).arg(what);
    status(c, "ci/install-deps.sh")?;
    match programs.iter().find(|p| !have(p)) {
        Some(p) => Err(format!(
            "{p} is still missing after ci/install-deps.sh {what}: {}",
            install_hint(p)
        )),
        None => Ok(()),
    }
}
