//! Nothing: this crate only pins the versions (with its Cargo.lock) of the crates whose own unit tests
//! `cargo xtask test` fetches with `cargo vendor` and runs inside libvmm.
