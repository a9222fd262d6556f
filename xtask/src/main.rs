//! `cargo xtask`: build, boot, test and benchmark libvmm images.
//!
//! ```text
//! cargo xtask build-image [--backend svm|vmx|tdx|riscv] [--payload NAME] [--format iso]   prints the image path
//!                         [--file HOST_PATH:GUEST_PATH]... [--elf PATH]
//! cargo xtask run [--backend B] [--payload P | --elf PATH] [--file HOST:GUEST]... [--cmdline "..."]
//!                 [--timeout SECS] [--cpus N] [-- ARGS]                   boots it, exits with its status
//! cargo xtask test [--cpus N]                                             every check, ends "N passed, N failed"
//! cargo xtask bench [--check] [--vs-kvm] [--cpus N]                       deterministic figures + target/bench.json
//! cargo xtask bench --backend B [--long] [--cpus N]                       one backend's figures (--long: the SMP stress)
//!
//! --cpus N: the emulated machine's CPU count. run: that boot (QEMU up to 64, Bochs up to 15);
//! test: every boot case without a count of its own (up to config::MAX_CPUS, 8; the others are
//! listed with the reason); bench: the SMP figures on N CPUs only (up to 8; not with --check).
//! cargo xtask fuzz [--soak] [--secs N] [--target NAME]...                 every fuzz target (short, or a soak)
//! cargo xtask guestfuzz [--soak] [--seeds N] [--backend B]                the guest-side fuzzer, many boots
//! cargo xtask hermit-tests                                                the cargo runner and real-world suites
//! ```
mod args;
mod backend;
mod bench;
mod bochs;
mod build;
mod cases;
mod chart;
mod cmd;
mod files;
mod fuzz;
mod gdb;
mod guestfuzz;
mod hermit_tests;
mod iso;
mod kvm;
mod qemu;
mod run;
mod test;

use std::process::ExitCode;

const USAGE: &str =
    "usage: cargo xtask <build-image|run|test|bench|fuzz|guestfuzz|hermit-tests> [--backend svm|vmx|tdx|riscv] [--payload NAME] [--elf PATH] [--file HOST_PATH:GUEST_PATH]... [--cmdline TEXT] [--timeout SECS] [--cpus N] [-- ARGS]";

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let Some((sub, rest)) = argv.split_first() else {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    };
    let args = match args::parse(rest) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("xtask: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    // Everything any command or test case needs is installed once, before anything is built or booted.
    if matches!(
        sub.as_str(),
        "run" | "test" | "bench" | "guestfuzz" | "hermit-tests"
    ) {
        if let Err(e) = cmd::install_deps() {
            eprintln!("xtask: {e}");
            return ExitCode::from(1);
        }
    }
    let result = match sub.as_str() {
        "build-image" => build::build_image_cmd(&args),
        "run" => run::run_cmd(&args),
        "test" => test::test_cmd(&args),
        "bench" => bench::bench_cmd(&args),
        "fuzz" => fuzz::fuzz_cmd(&args.rest),
        "guestfuzz" => guestfuzz::guestfuzz_cmd(&args),
        "hermit-tests" => hermit_tests::cmd(),
        _ => Err(format!("unknown command {sub}\n{USAGE}")),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("xtask: {e}");
            ExitCode::from(1)
        }
    }
}
