//! The image crate: links libvmm (with the backend chosen by a cargo feature) and one payload, embedded
//! by build.rs from `LIBVMM_PAYLOAD_ELF`. Build it with `cargo xtask build-image`.
#![no_std]
#![no_main]

include!(concat!(env!("OUT_DIR"), "/payload.rs"));

libvmm::image!(PAYLOAD);
