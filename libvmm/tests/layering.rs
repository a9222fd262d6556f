//! The import directions of the tree (README "Design"), checked on every `cargo test`:
//! - nothing under `src/arch/` names a backend, the policies, the run loop or `boot`;
//! - no backend (`svm`, `vmx`, `riscv`, `tdx`) names `policy` or `boot`;
//! - `policy/` does not name the run loop (`vcpu`);
//! - every module outside `arch/` and `boot/` forbids `unsafe` code, and `boot/` at least denies it.
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
