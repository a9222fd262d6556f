//! Embeds the payload ELF named by `LIBVMM_PAYLOAD_ELF` (set by `cargo xtask build-image`) into the
//! image as it is: the VMM's loader parses it at boot (`libvmm::loader::elf_image`), maps its loadable
//! segments with their own rights (W^X), applies a PIE's relative relocations and refuses a malformed
//! file with a stop naming the rule. Here it is only read far enough to say early, at build time, that it
//! is not an ELF at all. Without the variable the image carries no payload and stops at boot saying so.
use std::{env, fs, path::PathBuf};

fn main() {
    println!("cargo:rerun-if-env-changed=LIBVMM_PAYLOAD_ELF");
    println!("cargo:rerun-if-env-changed=LIBVMM_PAYLOAD_NAME");
    let out = PathBuf::from(env::var("OUT_DIR").unwrap());
    let (name, bytes) = match env::var("LIBVMM_PAYLOAD_ELF") {
        Ok(path) => {
            println!("cargo:rerun-if-changed={path}");
            let data = fs::read(&path).unwrap_or_else(|e| panic!("reading payload {path}: {e}"));
            if !data.starts_with(b"\x7fELF") {
                panic!("payload {path} is not an ELF file");
            }
            let name = env::var("LIBVMM_PAYLOAD_NAME").unwrap_or_else(|_| "payload".into());
            (name, data)
        }
        Err(_) => ("none".to_string(), Vec::new()),
    };
    fs::write(out.join("payload.elf"), &bytes).unwrap();
    let n = bytes.len();
    fs::write(
        out.join("payload.rs"),
        format!(
            "#[link_section = \".payload\"]\n\
             static PAYLOAD_ELF: [u8; {n}] = *include_bytes!(concat!(env!(\"OUT_DIR\"), \"/payload.elf\"));\n\
             const PAYLOAD: libvmm::Payload = libvmm::Payload {{ name: {name:?}, elf: &PAYLOAD_ELF }};\n"
        ),
    )
    .unwrap();
    let arch = env::var("CARGO_CFG_TARGET_ARCH").unwrap();
    let os = env::var("CARGO_CFG_TARGET_OS").unwrap();
    if os == "none" {
        let dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap());
        let script = dir.join(format!("{arch}.ld"));
        println!("cargo:rerun-if-changed={}", script.display());
        println!("cargo:rustc-link-arg-bins=-T{}", script.display());
        println!("cargo:rustc-link-arg-bins=--no-dynamic-linker");
        println!("cargo:rustc-link-arg-bins=-z");
        println!("cargo:rustc-link-arg-bins=max-page-size=4096");
    }
}
