//! `cargo run` through the libvmm runner: prints its arguments and exits with the status its first
//! argument names.
#[cfg(target_os = "hermit")]
use libvmm_guest as _;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    println!("runner-demo: args {args:?}");
    // A build-time file, when the runner was given one (LIBVMM_FILES=src/main.rs:/src/main.rs).
    if let Ok(text) = std::fs::read_to_string("/src/main.rs") {
        println!(
            "runner-demo: /src/main.rs has {} lines",
            text.lines().count()
        );
    }
    let status = args.first().and_then(|a| a.parse().ok()).unwrap_or(0);
    std::process::exit(status);
}
