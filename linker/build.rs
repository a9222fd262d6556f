//! Embeds the payload named by `LIBVMM_PAYLOAD_ELF` (set by `cargo xtask build-image`) into the image:
//! its loadable segments become one flat blob at its link address, with entry point and memory size, so
//! the VMM needs no ELF parser at run time. Each loadable segment's range and ELF `p_flags` are kept
//! too (`libvmm::PayloadSegment`): the VMM maps text read+execute, read-only data read-only and data
//! read+write in the nested tables (W^X), and its loader refuses a malformed list at boot. Without the
//! variable the image carries no payload and stops at boot saying so.
use std::{env, fs, path::PathBuf};

use object::{Object, ObjectSegment, SegmentFlags};

fn main() {
    println!("cargo:rerun-if-env-changed=LIBVMM_PAYLOAD_ELF");
    println!("cargo:rerun-if-env-changed=LIBVMM_PAYLOAD_NAME");
    let out = PathBuf::from(env::var("OUT_DIR").unwrap());
    let (name, load, entry, mem_size, bytes, segments) = match env::var("LIBVMM_PAYLOAD_ELF") {
        Ok(path) => {
            println!("cargo:rerun-if-changed={path}");
            let data = fs::read(&path).unwrap_or_else(|e| panic!("reading payload {path}: {e}"));
            let elf = object::File::parse(&*data)
                .unwrap_or_else(|e| panic!("payload {path} is not an ELF: {e}"));
            let segs: Vec<_> = elf.segments().filter(|s| s.size() > 0).collect();
            let lo = segs
                .iter()
                .map(|s| s.address())
                .min()
                .expect("payload has no loadable segment");
            let mem_hi = segs.iter().map(|s| s.address() + s.size()).max().unwrap();
            let file_hi = segs
                .iter()
                .map(|s| s.address() + s.data().unwrap().len() as u64)
                .max()
                .unwrap();
            let mut flat = vec![0u8; (file_hi - lo) as usize];
            for s in &segs {
                let d = s.data().unwrap();
                let o = (s.address() - lo) as usize;
                flat[o..o + d.len()].copy_from_slice(d);
            }
            let name = env::var("LIBVMM_PAYLOAD_NAME").unwrap_or_else(|_| "payload".into());
            // The segments as the program headers give them (p_vaddr, p_memsz, p_flags), in address
            // order; the VMM's loader validates them.
            let mut list: Vec<(u64, u64, u32)> = segs
                .iter()
                .map(|s| {
                    let flags = match s.flags() {
                        SegmentFlags::Elf { p_flags } => p_flags,
                        other => panic!("payload {path}: not ELF segment flags: {other:?}"),
                    };
                    (s.address(), s.size(), flags)
                })
                .collect();
            list.sort();
            let segments = list
                .iter()
                .map(|(gpa, size, flags)| {
                    format!(
                        "libvmm::PayloadSegment {{ gpa: {gpa:#x}, mem_size: {size:#x}, flags: {flags} }}"
                    )
                })
                .collect::<Vec<_>>()
                .join(", ");
            (name, lo, elf.entry(), mem_hi - lo, flat, segments)
        }
        Err(_) => ("none".to_string(), 0, 0, 0, Vec::new(), String::new()),
    };
    fs::write(out.join("payload.bin"), &bytes).unwrap();
    let n = bytes.len();
    fs::write(
        out.join("payload.rs"),
        format!(
            "#[link_section = \".payload\"]\n\
             static PAYLOAD_BYTES: [u8; {n}] = *include_bytes!(concat!(env!(\"OUT_DIR\"), \"/payload.bin\"));\n\
             const PAYLOAD: libvmm::Payload = libvmm::Payload {{ name: {name:?}, load_gpa: {load:#x}, entry_gpa: {entry:#x}, mem_size: {mem_size:#x}, bytes: &PAYLOAD_BYTES, segments: &[{segments}] }};\n"
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
