//! `build-image --format iso`: wraps a built multiboot2 image in a GRUB ISO, the file a user writes to a
//! USB stick or an appliance's disk. BIOS always (grub-pc modules), UEFI too when the GRUB EFI modules
//! are installed (`grub-efi-amd64-bin`). A minimal module set keeps the ISO small (~1.7 MB BIOS-only).
//!
//! `grub-mkrescue` does the work (GRUB + xorriso + mtools); xtask writes the staging tree and grub.cfg.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Where the GRUB platform modules live on Debian.
const GRUB_BIOS_DIR: &str = "/usr/lib/grub/i386-pc";
const GRUB_EFI_DIR: &str = "/usr/lib/grub/x86_64-efi";

/// Which firmware the ISO boots from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Firmware {
    pub bios: bool,
    pub uefi: bool,
}

/// The firmware this machine's GRUB tools can build for.
pub fn available_firmware() -> Firmware {
    Firmware {
        bios: Path::new(GRUB_BIOS_DIR).is_dir(),
        uefi: Path::new(GRUB_EFI_DIR).is_dir(),
    }
}

/// The grub.cfg of an image: boot at once, no menu, the command line passed to the VMM (and through the
/// boot info to the payload).
pub fn grub_cfg(cmdline: &str) -> String {
    let cmdline = cmdline.replace(['\n', '"', '\''], " ");
    format!(
        "set timeout=0\nset default=0\n\
         menuentry \"libvmm\" {{\n  multiboot2 /boot/libvmm.elf {cmdline}\n  boot\n}}\n"
    )
}

/// Builds `out` from the multiboot2 ELF `image` with `cmdline`.
pub fn build_iso(image: &Path, out: &Path, cmdline: &str) -> Result<Firmware, String> {
    let fw = available_firmware();
    if !fw.bios && !fw.uefi {
        return Err(format!(
            "no GRUB platform modules in {GRUB_BIOS_DIR} or {GRUB_EFI_DIR}: run ci/install-deps.sh"
        ));
    }
    let stage: PathBuf = out.with_extension("isodir");
    let _ = std::fs::remove_dir_all(&stage);
    let grub_dir = stage.join("boot/grub");
    std::fs::create_dir_all(&grub_dir).map_err(|e| format!("{}: {e}", grub_dir.display()))?;
    std::fs::copy(image, stage.join("boot/libvmm.elf"))
        .map_err(|e| format!("{}: {e}", image.display()))?;
    std::fs::write(grub_dir.join("grub.cfg"), grub_cfg(cmdline)).map_err(|e| e.to_string())?;

    let mut cmd = Command::new("grub-mkrescue");
    // Only what grub.cfg needs: smaller ISO, faster GRUB in Bochs.
    cmd.args([
        "--install-modules=multiboot2 normal serial terminal configfile",
        "--fonts=",
        "--locales=",
        "--themes=",
    ]);
    cmd.args(["--compress=no", "-o"]).arg(out);
    // Without -d grub-mkrescue builds for every installed platform (BIOS + UEFI when both are there).
    match (fw.bios, fw.uefi) {
        (true, false) => {
            cmd.args(["-d", GRUB_BIOS_DIR]);
        }
        (false, true) => {
            cmd.args(["-d", GRUB_EFI_DIR]);
        }
        _ => {}
    }
    cmd.arg(&stage);
    let o = cmd
        .output()
        .map_err(|e| format!("grub-mkrescue: {e} (run ci/install-deps.sh)"))?;
    if !o.status.success() {
        return Err(format!(
            "grub-mkrescue failed: {}",
            String::from_utf8_lossy(&o.stderr)
        ));
    }
    let _ = std::fs::remove_dir_all(&stage);
    Ok(fw)
}

/// A short stable name for a command line (ISOs of the same image with different command lines
/// coexist).
fn cmdline_tag(cmdline: &str) -> String {
    if cmdline.is_empty() {
        return String::new();
    }
    let h = cmdline.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
    });
    format!("-{:08x}", h as u32)
}

/// Builds the GRUB ISO that boots `image` with `cmdline`, beside the image: `<image stem>[-<tag>].iso`,
/// the tag naming the command line. Returns its path.
pub fn iso_for(image: &Path, cmdline: &str) -> Result<PathBuf, String> {
    crate::cmd::require(&["grub-mkrescue", "xorriso"])?;
    let stem = image
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("image");
    let iso = image.with_file_name(format!("{stem}{}.iso", cmdline_tag(cmdline)));
    build_iso(image, &iso, cmdline)?;
    Ok(iso)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_lines_get_distinct_iso_names() {
        assert_eq!(cmdline_tag(""), "");
        assert_ne!(
            cmdline_tag("libvmm.vmx.bad=tpr-threshold"),
            cmdline_tag("libvmm.vmx.bad=tsc-multiplier")
        );
    }

    #[test]
    fn grub_cfg_boots_the_image_with_the_command_line_and_no_menu() {
        let c = grub_cfg("libvmm.vmx.bad=tpr-threshold \"x\"\n");
        assert!(c.contains("set timeout=0"));
        assert!(c.contains("multiboot2 /boot/libvmm.elf libvmm.vmx.bad=tpr-threshold  x "));
        assert!(!c.contains('"') || c.matches('"').count() == 2);
    }
}
