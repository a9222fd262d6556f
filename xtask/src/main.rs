//! `cargo xtask`: build, boot, test and benchmark libvmm images.
//!
//! ```text
//! cargo xtask build-image [--backend svm|vmx|tdx|riscv] [--payload NAME] [--format iso]   prints the image path
//! cargo xtask run [--backend B] [--payload P] [--cmdline "..."]           boots it, exits with its status
//! cargo xtask test                                                        every check, ends "N passed, N failed"
//! cargo xtask bench                                                       deterministic figures + target/bench.json
//! ```
mod backend;
mod bench;
mod bochs;
mod build;
mod cmd;
mod iso;
mod qemu;
mod run;
mod test;

use std::process::ExitCode;

use backend::Backend;

pub struct Args {
    pub backend: Backend,
    pub payload: String,
    pub cmdline: String,
    pub rest: Vec<String>,
}

fn parse(args: &[String]) -> Result<Args, String> {
    let mut a = Args {
        backend: Backend::Svm,
        payload: "hello".into(),
        cmdline: String::new(),
        rest: Vec::new(),
    };
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let mut value = |name: &str| {
            it.next()
                .cloned()
                .ok_or_else(|| format!("{name} needs a value"))
        };
        match arg.as_str() {
            "--backend" => a.backend = Backend::parse(&value("--backend")?)?,
            "--payload" => a.payload = value("--payload")?,
            "--cmdline" => a.cmdline = value("--cmdline")?,
            other => a.rest.push(other.to_string()),
        }
    }
    Ok(a)
}

const USAGE: &str =
    "usage: cargo xtask <build-image|run|test|bench> [--backend svm|vmx|tdx|riscv] [--payload NAME] [--cmdline TEXT]";

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let Some((sub, rest)) = argv.split_first() else {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    };
    let args = match parse(rest) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("xtask: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let result = match sub.as_str() {
        "build-image" => build::build_image_cmd(&args),
        "run" => run::run_cmd(&args),
        "test" => test::test_cmd(&args),
        "bench" => bench::bench_cmd(&args),
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
