//! libvmm's public surface, proven from outside the crate: a crate that depends on libvmm (as the image
//! crate does) may name what an image crate or payload author needs, and nothing of the internals. The
//! Rust form of KVM exporting its internals to its vendor modules only.
//!
//! The outsider crate is written and checked here at test time: its compile must fail, and every error
//! must be rustc's "module is private" (E0603), one for each internal path, so a path that fails for
//! another reason (a module this build does not compile, a typo) fails the test. It depends on libvmm
//! with the `fuzzing` feature, the one host build that compiles both x86 backends. Hand-written rather
//! than `trybuild`: one `cargo check` and a count of error codes is all this needs, without a new
//! dependency tree and its snapshot files. (Rustdoc's `compile_fail,E0603` would read the same, but
//! stable rustdoc does not check the code, so a doctest would pass for any error.)
use std::fs;
use std::path::Path;
use std::process::Command;

/// Paths an outsider must not reach: backend internals, the loop, policy, and the shared vocabulary.
const PRIVATE: &[(&str, &str)] = &[
    ("svm", "use libvmm::svm::vmcb::Vmcb;"),
    ("vmx", "use libvmm::vmx::vmcs::VmxOps;"),
    ("riscv", "use libvmm::riscv::Hart;"),
    ("vcpu", "use libvmm::vcpu::run;"),
    ("policy", "use libvmm::policy::cpuid;"),
    ("x86", "use libvmm::x86::msr::EFER;"),
    ("testing", "use libvmm::testing::ModelPlatform;"),
];

/// What the image crate and payload authors use: this part must compile.
const PUBLIC: &str = "
pub use libvmm::abi::Hypercall;
pub use libvmm::config::MAX_CPUS;
libvmm::image!(libvmm::Payload { name: \"outsider\", elf: &[] });
";

#[test]
fn an_outside_crate_reaches_the_public_api_and_no_internal() {
    let libvmm = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("outsider");
    fs::create_dir_all(dir.join("src")).unwrap();
    fs::write(
        dir.join("Cargo.toml"),
        format!(
            "[package]\nname = \"outsider\"\nversion = \"0.0.0\"\nedition = \"2021\"\n\n\
             [dependencies]\nlibvmm = {{ path = {:?}, features = [\"fuzzing\"] }}\n\n[workspace]\n",
            libvmm.display().to_string()
        ),
    )
    .unwrap();
    let mut src = String::from("#![allow(unused_imports)]\n");
    src.push_str(PUBLIC);
    for (_, line) in PRIVATE {
        src.push_str(line);
        src.push('\n');
    }
    fs::write(dir.join("src/lib.rs"), src).unwrap();
    // The workspace's lock file: the same dependency versions, nothing fetched.
    fs::copy(libvmm.join("../Cargo.lock"), dir.join("Cargo.lock")).unwrap();

    let out = Command::new(env!("CARGO"))
        .current_dir(&dir)
        .env("CARGO_TARGET_DIR", dir.join("target"))
        .args(["check", "--offline", "--quiet", "--message-format=short"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "the outsider compiled:\n{stderr}");
    let errors: Vec<&str> = stderr.lines().filter(|l| l.contains(": error")).collect();
    let private: Vec<&&str> = errors
        .iter()
        .filter(|l| l.contains("error[E0603]"))
        .collect();
    assert_eq!(
        private.len(),
        PRIVATE.len(),
        "expected one E0603 per internal path and no other error:\n{stderr}"
    );
    assert_eq!(errors.len(), PRIVATE.len(), "other errors:\n{stderr}");
    for (module, _) in PRIVATE {
        let named = format!("module `{module}` is private");
        assert!(
            private.iter().any(|l| l.contains(&named)),
            "no \"{named}\":\n{stderr}"
        );
    }
}
