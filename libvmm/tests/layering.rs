//! The import directions of the tree (README "Design"), checked on every `cargo test`:
//! - nothing under `src/arch/` names a backend, the policies, the run loop or `boot`;
//! - no backend (`svm`, `vmx`, `riscv`, `tdx`) names `policy` or `boot`;
//! - `policy/` does not name the run loop (`vcpu`);
//! - every module outside `arch/` and `boot/` forbids `unsafe` code, and `boot/` at least denies it;
//! - in the guest runtime (`guest/src/`) `unsafe` code is in `arch/` only: every other file forbids it
//!   and contains none, and the crate root denies it and allows it for `mod arch` alone.
use std::fs;
use std::path::{Path, PathBuf};

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// Lines of `file` that name `crate::<module>` (comments excluded).
fn names(file: &Path, modules: &[&str]) -> Vec<String> {
    let text = fs::read_to_string(file).unwrap();
    text.lines()
        .filter(|l| {
            let code = l.split("//").next().unwrap_or("");
            modules.iter().any(|m| {
                let needle = format!("crate::{m}");
                code.match_indices(&needle).any(|(i, _)| {
                    let rest = &code[i + needle.len()..];
                    !rest.starts_with(|c: char| c.is_alphanumeric() || c == '_')
                })
            })
        })
        .map(|l| format!("{}: {}", file.display(), l.trim()))
        .collect()
}

fn check(dir: &str, forbidden: &[&str]) {
    let mut files = Vec::new();
    rust_files(&src().join(dir), &mut files);
    assert!(!files.is_empty(), "{dir} has no files");
    let bad: Vec<String> = files.iter().flat_map(|f| names(f, forbidden)).collect();
    assert!(
        bad.is_empty(),
        "{dir} must not import {forbidden:?}:\n{}",
        bad.join("\n")
    );
}

#[test]
fn arch_imports_nothing_above_it() {
    check(
        "arch",
        &["svm", "vmx", "tdx", "riscv", "policy", "vcpu", "boot"],
    );
}

#[test]
fn backends_do_not_import_policy_or_boot() {
    for b in ["svm", "vmx", "riscv", "tdx"] {
        check(b, &["policy", "boot"]);
    }
}

#[test]
fn policy_does_not_import_the_run_loop() {
    check("policy", &["vcpu"]);
}

#[test]
fn unsafe_code_is_forbidden_outside_arch() {
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    let mut missing = Vec::new();
    for f in files {
        let rel = f
            .strip_prefix(src())
            .unwrap()
            .to_string_lossy()
            .replace('\\', "/");
        if rel.starts_with("arch/") || rel == "lib.rs" {
            continue;
        }
        let text = fs::read_to_string(&f).unwrap();
        // Every file states it itself (an inherited `forbid` is invisible to a reader of the file), except
        // test-only files (`tests.rs`, the test doubles, the TDX-module model), which are never in an image.
        let ok = text.contains("#![forbid(unsafe_code)]")
            || (rel.starts_with("boot/") && text.contains("#![deny(unsafe_code)]"));
        // Generated tables (`// @generated` on their first line) hold data only.
        let test_only = rel.ends_with("tests.rs")
            || rel.contains("/sim/")
            || rel.starts_with("testing/")
            || text.starts_with("// @generated");
        if !ok && !test_only {
            missing.push(rel);
        }
    }
    assert!(
        missing.is_empty(),
        "files without #![forbid(unsafe_code)]:\n{}",
        missing.join("\n")
    );
}

/// The Rust code of a line: what precedes a `//` comment (doc comments included).
fn code(line: &str) -> &str {
    line.split("//").next().unwrap_or("")
}

#[test]
fn guest_runtime_keeps_unsafe_code_in_its_arch() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("guest/src");
    let mut files = Vec::new();
    rust_files(&root, &mut files);
    assert!(files.len() > 1, "guest/src has no files");
    let mut bad = Vec::new();
    for f in files {
        let rel = f
            .strip_prefix(&root)
            .unwrap()
            .to_string_lossy()
            .replace('\\', "/");
        if rel.starts_with("arch/") {
            continue;
        }
        let text = fs::read_to_string(&f).unwrap();
        if rel == "lib.rs" {
            // The root denies `unsafe` and lifts that for `mod arch` only: the allow's next item is it.
            if !text.contains("#![deny(unsafe_code)]") {
                bad.push("lib.rs: no #![deny(unsafe_code)]".to_string());
            }
            let lines: Vec<&str> = text.lines().map(str::trim).collect();
            for (i, l) in lines.iter().enumerate() {
                if code(l).contains("allow(unsafe_code)")
                    && lines.get(i + 1).copied() != Some("pub mod arch;")
                {
                    bad.push(format!(
                        "lib.rs:{}: allow(unsafe_code) not on `mod arch`",
                        i + 1
                    ));
                }
            }
        } else if !text.contains("#![forbid(unsafe_code)]") {
            bad.push(format!("{rel}: no #![forbid(unsafe_code)]"));
        }
        for (i, l) in text.lines().enumerate() {
            let c = code(l);
            let lint = c.contains("(unsafe_code)");
            if !lint && (c.contains("unsafe ") || c.contains("unsafe{") || c.contains("no_mangle"))
            {
                // `#[no_mangle]` in `entry!` is expanded in the payload crate, not compiled here.
                let in_entry_macro = rel == "lib.rs" && c.trim() == "#[no_mangle]";
                if !in_entry_macro {
                    bad.push(format!("{rel}:{}: {}", i + 1, l.trim()));
                }
            }
        }
    }
    assert!(
        bad.is_empty(),
        "unsafe code in the guest runtime outside arch/:\n{}",
        bad.join("\n")
    );
}
