//! The backends an image can be built for, and what each needs to build and boot.
use std::fmt;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Svm,
    Vmx,
    Tdx,
    Riscv,
}

impl Backend {
    pub const ALL: [Backend; 4] = [Backend::Svm, Backend::Vmx, Backend::Tdx, Backend::Riscv];

    pub fn parse(s: &str) -> Result<Self, String> {
        Ok(match s {
            "svm" => Self::Svm,
            "vmx" => Self::Vmx,
            "tdx" => Self::Tdx,
            "riscv" | "riscv-h" => Self::Riscv,
            _ => return Err(format!("unknown backend {s} (svm, vmx, tdx, riscv)")),
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Svm => "svm",
            Self::Vmx => "vmx",
            Self::Tdx => "tdx",
            Self::Riscv => "riscv",
        }
    }

    /// The cargo feature of `libvmm-image` (and libvmm) that selects it.
    pub fn feature(self) -> &'static str {
        self.name()
    }

    pub fn target(self) -> &'static str {
        match self {
            Self::Riscv => "riscv64gc-unknown-none-elf",
            _ => "x86_64-unknown-none",
        }
    }

    /// The payload linker script in `linker/`.
    pub fn guest_linker_script(self) -> &'static str {
        match self {
            Self::Riscv => "guest-riscv64.ld",
            _ => "guest-x86_64.ld",
        }
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}
