//! `cargo xtask bench --vs-kvm`: Linux KVM measured in the same emulator, with the same method, as
//! libvmm's bench (`docs`: `../shared/reference/kvm-anchor.md` describes the first, throwaway run).
//!
//! Debian's current amd64 kernel package is fetched with `apt-get download` and unpacked (not installed)
//! into `target/kvm/` by `ci/install-deps.sh kvm`; `tools/kvm-probe` (rust-vmm's `kvm-ioctls`) is built
//! as a static x86_64-unknown-linux-gnu binary (`+crt-static`, in its own target directory so the
//! ordinary build cache is untouched) and becomes `/init` of an initramfs with the four KVM modules.
//! The initramfs is a cpio "newc" archive written here (a dozen lines; the format is fixed and the
//! machine has no `cpio`). QEMU boots it on `microvm` with `-cpu max` under `-icount shift=0,sleep=off
//! -seed 1`, the RTC pinned (`-rtc base=...,clock=vm`: repeated boots are byte-identical), and the probe
//! prints `KVM_PROBE cpuid=... out=... pic_in=... nrips=...`.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::cmd::{cargo, require, root, run_bounded, status, target_dir};

/// The modules `/init` loads, in dependency order, by their path under `lib/modules/<release>/kernel/`.
const MODULES: [&str; 4] = [
    "virt/lib/irqbypass.ko",
    "arch/x86/kvm/kvm.ko",
    "drivers/crypto/ccp/ccp.ko",
    "arch/x86/kvm/kvm-amd.ko",
];

/// One cpio newc entry.
fn newc_entry(out: &mut Vec<u8>, ino: u32, name: &str, mode: u32, data: &[u8]) {
    let fields = [
        ino,
        mode,
        0,
        0,
        1,
        0,
        data.len() as u32,
        0,
        0,
        0,
        0,
        name.len() as u32 + 1,
        0,
    ];
    out.extend_from_slice(b"070701");
    for f in fields {
        out.extend_from_slice(format!("{f:08X}").as_bytes());
    }
    out.extend_from_slice(name.as_bytes());
    out.push(0);
    while !out.len().is_multiple_of(4) {
        out.push(0);
    }
    out.extend_from_slice(data);
    while !out.len().is_multiple_of(4) {
        out.push(0);
    }
}

/// A cpio newc archive of directories and files (name, mode, contents), with its trailer.
pub fn newc(dirs: &[&str], files: &[(String, u32, Vec<u8>)]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut ino = 1;
    for d in dirs {
        newc_entry(&mut out, ino, d, 0o040755, &[]);
        ino += 1;
    }
    for (name, mode, data) in files {
        newc_entry(&mut out, ino, name, 0o100000 | mode, data);
        ino += 1;
    }
    newc_entry(&mut out, 0, "TRAILER!!!", 0, &[]);
    out
}

/// The unpacked kernel package: (vmlinuz, modules directory).
fn kernel() -> Result<(PathBuf, PathBuf), String> {
    let dir = target_dir().join("kvm");
    let mut c = Command::new("bash");
    c.arg(root().join("ci/install-deps.sh"))
        .arg("kvm")
        .arg(&dir);
    status(
        c,
        "fetching Debian's kernel package (ci/install-deps.sh kvm)",
    )?;
    let boot = dir.join("unpacked/boot");
    let vmlinuz = std::fs::read_dir(&boot)
        .map_err(|e| format!("{}: {e}", boot.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("vmlinuz-"))
        })
        .ok_or("the kernel package has no boot/vmlinuz-*")?;
    let release = vmlinuz
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.strip_prefix("vmlinuz-"))
        .unwrap_or_default()
        .to_string();
    let modules = dir
        .join("unpacked/lib/modules")
        .join(release)
        .join("kernel");
    Ok((vmlinuz, modules))
}

/// Builds `tools/kvm-probe` static; returns the binary.
fn probe() -> Result<PathBuf, String> {
    let tdir = target_dir().join("kvm-probe");
    let mut c = cargo();
    c.env("CARGO_TARGET_DIR", &tdir)
        .env("RUSTFLAGS", "-C target-feature=+crt-static")
        .args([
            "build",
            "--quiet",
            "--release",
            "-p",
            "kvm-probe",
            "--target",
            "x86_64-unknown-linux-gnu",
        ]);
    status(
        c,
        "building tools/kvm-probe (static, x86_64-unknown-linux-gnu)",
    )?;
    Ok(tdir.join("x86_64-unknown-linux-gnu/release/kvm-probe"))
}

fn initramfs(probe: &Path, modules: &Path) -> Result<PathBuf, String> {
    let read = |p: &Path| std::fs::read(p).map_err(|e| format!("{}: {e}", p.display()));
    let mut files = vec![("init".to_string(), 0o755, read(probe)?)];
    for m in MODULES {
        let name = Path::new(m).file_name().unwrap().to_string_lossy();
        files.push((format!("modules/{name}"), 0o644, read(&modules.join(m))?));
    }
    let cpio = newc(&["dev", "sys", "proc", "modules"], &files);
    let out = target_dir().join("kvm/initramfs.cpio");
    std::fs::write(&out, cpio).map_err(|e| e.to_string())?;
    Ok(out)
}

/// The values of a `KVM_PROBE key=value ...` line (numbers only).
pub fn parse_probe(output: &str) -> Result<BTreeMap<String, String>, String> {
    if let Some(e) = output
        .lines()
        .find_map(|l| l.trim_end_matches('\r').strip_prefix("KVM_PROBE_ERROR "))
    {
        return Err(format!("the probe failed: {e}"));
    }
    let line = output
        .lines()
        .find_map(|l| l.trim_end_matches('\r').strip_prefix("KVM_PROBE "))
        .ok_or("the probe printed no KVM_PROBE line")?;
    Ok(line
        .split_whitespace()
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect())
}

/// Boots the probe; returns its figures (`cpuid`, `out`, `pic_in`, `nrips`, `kernel`, ...).
pub fn measure() -> Result<BTreeMap<String, String>, String> {
    require(&["qemu-system-x86_64"])?;
    let (vmlinuz, modules) = kernel()?;
    let probe = probe()?;
    let initrd = initramfs(&probe, &modules)?;
    let mut c = Command::new("qemu-system-x86_64");
    c.args([
        "-accel",
        "tcg",
        "-cpu",
        "max",
        "-M",
        "microvm",
        "-m",
        "512",
        "-smp",
        "1",
        "-display",
        "none",
        "-serial",
        "stdio",
        "-nodefaults",
        "-no-reboot",
        "-kernel",
    ])
    .arg(&vmlinuz)
    .arg("-initrd")
    .arg(&initrd)
    .args([
        "-append",
        "console=ttyS0 quiet panic=-1",
        "-rtc",
        "base=2025-01-01T00:00:00,clock=vm",
    ])
    .args(crate::qemu::ICOUNT);
    let f = run_bounded(c, Duration::from_secs(300), false)?;
    if f.timed_out {
        return Err(format!(
            "the KVM probe did not finish in 300 s; rerun: {}",
            f.command
        ));
    }
    parse_probe(&f.output).map_err(|e| {
        let tail: Vec<&str> = f.output.lines().rev().take(20).collect();
        format!(
            "{e}\n--- rerun alone ---\n{}\n--- console (last lines) ---\n{}",
            f.command,
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        )
    })
}

/// The side-by-side table: libvmm's SVM figures (from the same bench run) beside KVM's, with the ratio.
pub fn comparison(svm: Option<&BTreeMap<String, i64>>, kvm: &BTreeMap<String, String>) -> String {
    let num = |k: &str| kvm.get(k).and_then(|v| v.parse::<f64>().ok());
    let ours = |k: &str| svm.and_then(|f| f.get(k)).copied();
    let mut t = format!(
        "libvmm vs Linux KVM {} (kvm_amd nrips={} npt={}), same QEMU TCG -cpu max, -icount shift=0,sleep=off -seed 1,\n\
         emulated instructions per round trip (median of {} batches of {}):\n",
        kvm.get("kernel").map(String::as_str).unwrap_or("?"),
        kvm.get("nrips").map(String::as_str).unwrap_or("?"),
        kvm.get("npt").map(String::as_str).unwrap_or("?"),
        kvm.get("batches").map(String::as_str).unwrap_or("?"),
        kvm.get("n").map(String::as_str).unwrap_or("?"),
    );
    t.push_str(&format!(
        "{:<58}{:>12}{:>12}{:>12}\n",
        "exit", "libvmm SVM", "Linux KVM", "KVM/libvmm"
    ));
    let rows = [
        (
            "CPUID (KVM: handled in the kernel)",
            "cpuid_round_trip",
            "cpuid",
        ),
        (
            "to VMM device code (null hypercall / port out to user)",
            "null_hypercall_round_trip",
            "out",
        ),
        ("port I/O in, KVM's in-kernel PIC", "", "pic_in"),
    ];
    for (label, ours_key, kvm_key) in rows {
        let o = ours(ours_key);
        let k = num(kvm_key);
        let cell = |v: Option<String>| v.unwrap_or_else(|| "-".into());
        let ratio = match (o, k) {
            (Some(o), Some(k)) if o > 0 => Some(format!("{:.1}x", k / o as f64)),
            _ => None,
        };
        let label = if label.len() > 56 {
            format!("{}..", &label[..54])
        } else {
            label.to_string()
        };
        t.push_str(&format!(
            "{label:<58}{:>12}{:>12}{:>12}\n",
            cell(o.map(|v| v.to_string())),
            cell(k.map(|v| format!("{v:.2}"))),
            cell(ratio)
        ));
    }
    t.push_str(
        "KVM's figures include decoding the instruction in its emulator to skip it: QEMU TCG offers no NRIPS\n\
         (next-RIP save), so kvm_amd runs with nrips=0; libvmm adds the instruction's architectural length.\n\
         With NRIPS KVM's CPUID would be about 1440 (the PIC read, which needs no decode, costs ~1521).\n",
    );
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newc_entries_are_aligned_and_end_with_the_trailer() {
        let a = newc(&["dev"], &[("init".into(), 0o755, vec![1, 2, 3])]);
        assert!(a.starts_with(b"070701"));
        assert_eq!(a.len() % 4, 0);
        // Second entry: after the first header (110 bytes + "dev\0", padded to 116).
        assert_eq!(&a[116..122], b"070701");
        assert_eq!(&a[116 + 14..116 + 22], b"000081ED"); // regular file, 0755
        assert!(a.windows(10).any(|w| w == b"TRAILER!!!"));
    }

    #[test]
    fn probe_line_and_errors() {
        let m = parse_probe("x\nKVM_PROBE cpuid=3033.00 out=3140.00 nrips=0\r\n").unwrap();
        assert_eq!(m["cpuid"], "3033.00");
        assert_eq!(m["nrips"], "0");
        assert!(parse_probe("KVM_PROBE_ERROR /dev/kvm: nope\n")
            .unwrap_err()
            .contains("/dev/kvm"));
        assert!(parse_probe("nothing").is_err());
    }

    #[test]
    fn comparison_has_both_columns_and_the_ratio() {
        let kvm =
            parse_probe("KVM_PROBE cpuid=3000.00 out=3150.00 pic_in=1521.00 nrips=0").unwrap();
        let mut svm = BTreeMap::new();
        svm.insert("cpuid_round_trip".to_string(), 120);
        svm.insert("null_hypercall_round_trip".to_string(), 105);
        let t = comparison(Some(&svm), &kvm);
        assert!(t.contains("120     3000.00       25.0x"), "{t}");
        assert!(t.contains("105     3150.00       30.0x"), "{t}");
        assert!(t.contains("nrips=0"));
        let t = comparison(None, &kvm);
        assert!(t.contains("3000.00"), "{t}");
    }
}
