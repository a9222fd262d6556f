//! Building images: the payload for the backend's target (linked by `linker/guest-*.ld`), then the image
//! crate `linker/` with the backend feature and the payload embedded; the result is copied to
//! `target/images/<backend>-<payload>.elf` so images of several backends and payloads coexist.
use std::path::{Path, PathBuf};

use crate::backend::Backend;
use crate::cmd::{cargo, root, status, target_dir};
use crate::files::FileSpec;

/// Runs a cargo build with its output captured: on failure the compiler's messages are the error; on
/// success any warnings are printed at once, before anything boots, so that compiler output never lands
/// in the middle of a VM's console output.
fn build_quietly(mut c: std::process::Command, what: &str) -> Result<(), String> {
    let o = c
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| format!("{what}: cannot start cargo: {e}"))?;
    let mut text = String::from_utf8_lossy(&o.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&o.stderr));
    if !o.status.success() {
        return Err(format!("{what} failed ({}):\n{text}", o.status));
    }
    if !text.trim().is_empty() {
        eprint!("{text}");
    }
    Ok(())
}
use crate::args::Args;

pub const PAYLOADS: [&str; 7] = [
    "hello",
    "hostile",
    "exitbench",
    "pmu",
    "timer",
    "guestfuzz",
    "smp",
];

/// Adds the backend's Rust target when missing (RUSTUP_AUTO_INSTALL=0 on these machines).
fn ensure_target(backend: Backend) -> Result<(), String> {
    let sysroot = std::process::Command::new("rustc")
        .current_dir(root())
        .args(["--print", "sysroot"])
        .output();
    if let Ok(o) = sysroot {
        let dir = PathBuf::from(String::from_utf8_lossy(&o.stdout).trim())
            .join("lib/rustlib")
            .join(backend.target());
        if dir.is_dir() {
            return Ok(());
        }
    }
    let mut c = std::process::Command::new("bash");
    c.arg(root().join("ci/install-deps.sh")).arg("rust");
    status(c, "installing Rust targets").map_err(|e| {
        format!(
            "{e}: the Rust target {} is missing; install it with `rustup target add {}`",
            backend.target(),
            backend.target()
        )
    })
}

/// Builds the payload ELF with a cargo profile (`release`, or `gdb`: release with debug info); returns
/// `target/<target>/<profile>/<payload>`, the ELF with its symbols, linked at its load address.
pub fn build_payload_with(
    backend: Backend,
    payload: &str,
    profile: &str,
) -> Result<PathBuf, String> {
    if !root()
        .join("payloads")
        .join(payload)
        .join("Cargo.toml")
        .is_file()
    {
        return Err(format!("no payload named {payload} under payloads/"));
    }
    if is_std_payload(payload) {
        return build_std_payload(backend, payload, profile);
    }
    ensure_target(backend)?;
    let script = root().join("linker").join(backend.guest_linker_script());
    let mut c = cargo();
    c.args([
        "rustc",
        "--quiet",
        "--profile",
        profile,
        "-p",
        payload,
        "--target",
        backend.target(),
        "--",
    ])
    .arg(format!("-Clink-arg=-T{}", script.display()));
    build_quietly(c, &format!("building payload {payload}"))?;
    Ok(target_dir()
        .join(backend.target())
        .join(profile)
        .join(payload))
}

/// Whether a payload is a Rust `std` program: its manifest depends on libvmm-guest for the hermit
/// targets only (`[target.'cfg(target_os = "hermit")'.dependencies]`).
pub fn is_std_payload(payload: &str) -> bool {
    std::fs::read_to_string(root().join("payloads").join(payload).join("Cargo.toml"))
        .is_ok_and(|m| m.contains("target_os = \"hermit\""))
}

/// The hermit target of a backend's architecture (where `std` payloads are built).
pub fn hermit_target(backend: Backend) -> &'static str {
    match backend {
        Backend::Riscv => "riscv64gc-unknown-hermit",
        _ => "x86_64-unknown-hermit",
    }
}

/// Builds a `std` payload for the hermit target of `backend`'s architecture. These targets are tier 3:
/// rustup has no prebuilt `std` for them, so `std` is built from the `rust-src` component with
/// `-Zbuild-std` (on the pinned stable toolchain through `RUSTC_BOOTSTRAP=1`); `compiler-builtins-mem`
/// provides `memcpy` and friends, which the Hermit kernel would otherwise export. The result is a
/// static PIE the VMM places and relocates at boot. The first build takes about 40 s; later ones reuse it.
pub fn build_std_payload(
    backend: Backend,
    payload: &str,
    profile: &str,
) -> Result<PathBuf, String> {
    let target = hermit_target(backend);
    let mut c = cargo();
    c.env("RUSTC_BOOTSTRAP", "1").args([
        "build",
        "--quiet",
        "-Zbuild-std=std,panic_abort",
        "-Zbuild-std-features=compiler-builtins-mem",
        "--profile",
        profile,
        "-p",
        payload,
        "--target",
        target,
    ]);
    build_quietly(c, &format!("building std payload {payload} for {target}"))?;
    Ok(target_dir().join(target).join(profile).join(payload))
}

/// Builds the image and returns its path.
pub fn build_image(backend: Backend, payload: &str) -> Result<PathBuf, String> {
    build_image_with(backend, payload, "release")
}

/// Builds the image with a cargo profile and returns its path: `target/images/<backend>-<payload>.elf`
/// for `release`, `<backend>-<payload>-<profile>.elf` otherwise.
pub fn build_image_with(backend: Backend, payload: &str, profile: &str) -> Result<PathBuf, String> {
    let elf = build_payload_with(backend, payload, profile)?;
    link_image(backend, &elf, payload, profile)
}

/// Where an image's payload comes from.
#[derive(Clone, Copy, Debug)]
pub enum Source<'a> {
    /// A payload crate under `payloads/`, built for the backend.
    Payload(&'a str),
    /// A payload ELF built elsewhere (`run --elf PATH`, the cargo runner).
    Elf(&'a Path),
}

/// The image of `source` with build-time `files` (host paths relative to `base`), release profile:
/// `target/images/<backend>-<name>[-files-<hash>].elf`, where an ELF's name is `elf-<file name>`.
pub fn build_image_from(
    backend: Backend,
    source: Source<'_>,
    files: &[FileSpec],
    base: &Path,
) -> Result<PathBuf, String> {
    let (elf, name) = match source {
        Source::Payload(p) => {
            if !files.is_empty() && !is_std_payload(p) {
                return Err(format!(
                    "--file needs a std payload (the file system is the hermit runtime's); {p} is no_std"
                ));
            }
            (build_payload_with(backend, p, "release")?, p.to_string())
        }
        Source::Elf(path) => {
            let stem = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .ok_or_else(|| format!("--elf {}: not a file", path.display()))?;
            (path.to_path_buf(), format!("elf-{stem}"))
        }
    };
    if files.is_empty() {
        return link_image(backend, &elf, &name, "release");
    }
    let mut h = std::collections::hash_map::DefaultHasher::new();
    std::hash::Hash::hash(files, &mut h);
    let name = format!("{name}-files-{:08x}", std::hash::Hasher::finish(&h) as u32);
    let bytes = std::fs::read(&elf).map_err(|e| format!("reading {}: {e}", elf.display()))?;
    let with = crate::files::attach(&bytes, &crate::files::pack(files, base)?)
        .map_err(|e| format!("{}: {e}", elf.display()))?;
    let dir = target_dir().join("images");
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let out = dir.join(format!("{backend}-{name}.payload.elf"));
    // Rewritten only when it changed: the image crate relinks when this file's time changes.
    if std::fs::read(&out).ok().as_deref() != Some(&with[..]) {
        std::fs::write(&out, &with).map_err(|e| format!("writing {}: {e}", out.display()))?;
    }
    link_image(backend, &out, &name, "release")
}

/// Links the image crate with the payload ELF `elf` embedded; copies it to `target/images/`.
fn link_image(
    backend: Backend,
    elf: &Path,
    payload: &str,
    profile: &str,
) -> Result<PathBuf, String> {
    ensure_target(backend)?;
    let mut c = cargo();
    c.args([
        "build",
        "--quiet",
        "--profile",
        profile,
        "-p",
        "libvmm-image",
        "--target",
        backend.target(),
        "--features",
        backend.feature(),
    ])
    .env("LIBVMM_PAYLOAD_ELF", elf)
    .env("LIBVMM_PAYLOAD_NAME", payload);
    build_quietly(c, &format!("building the {backend} image"))?;
    let built = target_dir()
        .join(backend.target())
        .join(profile)
        .join("libvmm-image");
    let dir = target_dir().join("images");
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let out = match profile {
        "release" => dir.join(format!("{backend}-{payload}.elf")),
        p => dir.join(format!("{backend}-{payload}-{p}.elf")),
    };
    std::fs::copy(&built, &out).map_err(|e| format!("copying {}: {e}", built.display()))?;
    Ok(out)
}

/// The image `run` and `build-image` build from their arguments (`--payload`, `--elf`, `--file`).
pub fn image_for_args(a: &Args) -> Result<PathBuf, String> {
    let cwd = std::env::current_dir().map_err(|e| e.to_string())?;
    match &a.elf {
        Some(elf) => build_image_from(a.backend, Source::Elf(&cwd.join(elf)), &a.files, &cwd),
        None => build_image_from(a.backend, Source::Payload(&a.payload), &a.files, &cwd),
    }
}

pub fn build_image_cmd(a: &Args) -> Result<u8, String> {
    let path = image_for_args(a)?;
    let format = a
        .rest
        .iter()
        .position(|r| r == "--format")
        .and_then(|i| a.rest.get(i + 1));
    match format.map(String::as_str) {
        None | Some("elf") => println!("{}", path.display()),
        // A GRUB multiboot2 ISO (x86 images carry a multiboot2 header): the file for a USB stick or disk.
        Some("iso") if a.backend != Backend::Riscv => {
            crate::cmd::ensure_tools("bochs", &["grub-mkrescue", "xorriso"])?;
            let iso = path.with_extension("iso");
            let fw = crate::iso::build_iso(&path, &iso, &a.cmdline)?;
            let firmware = match (fw.bios, fw.uefi) {
                (true, true) => "BIOS + UEFI",
                (true, false) => "BIOS (install grub-efi-amd64-bin for UEFI)",
                _ => "UEFI",
            };
            println!("{} ({firmware})", iso.display());
        }
        Some(f) => {
            return Err(format!(
                "unknown image format {f} for {} (elf, iso on x86)",
                a.backend
            ))
        }
    }
    Ok(0)
}
