//! A Rust `std` program running as a libvmm payload (built for the hermit targets).
#[cfg(target_os = "hermit")]
use libvmm_guest as _;

fn main() {
    println!("std-demo: hello from std");
}
