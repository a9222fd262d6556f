//! The command line of `cargo xtask`.
use crate::backend::Backend;

/// What every subcommand is given.
pub struct Args {
    pub backend: Backend,
    /// Whether `--backend` was given (`guestfuzz` runs every backend otherwise).
    pub backend_given: bool,
    pub payload: String,
    pub cmdline: String,
    /// `run`: the host's time limit in seconds (default `run::DEFAULT_TIMEOUT_SECS`).
    pub timeout: Option<u64>,
    /// `--cpus N`, 1 unless told. `run`: CPUs of the emulated machine (QEMU `-smp N`, Bochs
    /// `cpu: count=N`); `test`: the machine of every boot case without a count of its own; `bench`:
    /// the one count of the SMP figures.
    pub cpus: u32,
    /// Whether `--cpus` was given (`bench` measures its default list of counts otherwise).
    pub cpus_given: bool,
    /// `run`: RAM of the emulated machine in MiB (QEMU `-m`, Bochs `megs:`), 128 unless told.
    pub mem_mb: Option<u32>,
    /// `--file HOST_PATH:GUEST_PATH` (repeatable): build-time files of a std payload (`files.rs`).
    pub files: Vec<crate::files::FileSpec>,
    /// `run --elf PATH`: boot this payload ELF instead of building a payload of the workspace.
    pub elf: Option<std::path::PathBuf>,
    /// The words after a bare `--`: the payload's `argv` after its name (`run --elf PATH -- ARGS`).
    pub argv: Option<Vec<String>>,
    pub rest: Vec<String>,
}

pub fn parse(args: &[String]) -> Result<Args, String> {
    let mut a = Args {
        backend: Backend::Svm,
        backend_given: false,
        payload: "hello".into(),
        cmdline: String::new(),
        timeout: None,
        cpus: 1,
        cpus_given: false,
        mem_mb: None,
        files: Vec::new(),
        elf: None,
        argv: None,
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
            "--backend" => {
                a.backend = Backend::parse(&value("--backend")?)?;
                a.backend_given = true;
            }
            "--payload" => a.payload = value("--payload")?,
            "--cmdline" => a.cmdline = value("--cmdline")?,
            "--timeout" => {
                let v = value("--timeout")?;
                a.timeout = Some(
                    v.parse()
                        .ok()
                        .filter(|s| *s > 0)
                        .ok_or_else(|| format!("--timeout needs a number of seconds, not {v}"))?,
                );
            }
            "--cpus" => {
                let v = value("--cpus")?;
                a.cpus = v
                    .parse()
                    .ok()
                    .filter(|n| (1..=64).contains(n))
                    .ok_or_else(|| format!("--cpus needs a CPU count from 1 to 64, not {v}"))?;
                a.cpus_given = true;
            }
            "--mem" => {
                let v = value("--mem")?;
                a.mem_mb = Some(
                    v.parse()
                        .ok()
                        .filter(|n| (64..=4096).contains(n))
                        .ok_or_else(|| format!("--mem needs MiB from 64 to 4096, not {v}"))?,
                );
            }
            "--file" => a
                .files
                .push(crate::files::FileSpec::parse(&value("--file")?)?),
            "--elf" => a.elf = Some(value("--elf")?.into()),
            "--" => {
                a.argv = Some(it.by_ref().cloned().collect());
            }
            other => a.rest.push(other.to_string()),
        }
    }
    if a.backend == Backend::Vmx && a.cpus > BOCHS_MAX_CPUS {
        return Err(format!(
            "--cpus {}: Bochs 2.7 (Debian's build) runs at most {BOCHS_MAX_CPUS} CPUs (with 16 it \
             stops: \"register_timer: too many registered timers\")",
            a.cpus
        ));
    }
    Ok(a)
}

/// The most CPUs the VMM runs (`libvmm/src/config.rs`, `MAX_CPUS`; a host test keeps the two equal).
/// `run --cpus N` may boot more, to see the VMM report and leave the rest alone.
pub const VMM_MAX_CPUS: u32 = 8;

/// The most CPUs Debian's Bochs 2.7 runs (`cpu: count=N`): 16 stop it at start-up ("register_timer:
/// too many registered timers"), 255 and more are refused by its SMP build's xAPIC limit.
pub const BOCHS_MAX_CPUS: u32 = 15;

/// `test --cpus N` and `bench --cpus N`: a count the VMM can give a guest (at most
/// [`VMM_MAX_CPUS`]); more would measure and check CPUs it leaves alone.
pub fn vmm_cpus(n: u32) -> Result<u32, String> {
    if n > VMM_MAX_CPUS {
        Err(format!(
            "--cpus {n}: the VMM runs at most {VMM_MAX_CPUS} CPUs (config::MAX_CPUS); only `run` \
             boots a bigger machine (the VMM names the CPUs it leaves alone)"
        ))
    } else {
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn timeout_is_a_positive_number_of_seconds() {
        let a = parse(&strings(&["--backend", "riscv", "--timeout", "20"])).unwrap();
        assert_eq!(a.backend, Backend::Riscv);
        assert_eq!(a.timeout, Some(20));
        assert_eq!(parse(&[]).unwrap().timeout, None);
        assert!(parse(&strings(&["--timeout", "0"])).is_err());
        assert!(parse(&strings(&["--timeout", "soon"])).is_err());
        assert!(parse(&strings(&["--timeout"])).is_err());
    }

    #[test]
    fn cpus_are_counted_and_limited_where_the_vmm_or_bochs_stop() {
        let a = parse(&strings(&["--cpus", "4"])).unwrap();
        assert_eq!((a.cpus, a.cpus_given), (4, true));
        let a = parse(&[]).unwrap();
        assert_eq!((a.cpus, a.cpus_given), (1, false));
        assert!(parse(&strings(&["--cpus", "0"])).is_err());
        assert!(parse(&strings(&["--cpus", "65"])).is_err());
        // QEMU takes 64; Bochs 15 (either order of the options).
        assert!(parse(&strings(&["--cpus", "64", "--backend", "riscv"])).is_ok());
        assert!(parse(&strings(&["--backend", "vmx", "--cpus", "15"])).is_ok());
        let e = parse(&strings(&["--cpus", "16", "--backend", "vmx"])).err();
        assert!(e.unwrap().contains("at most 15"));
        assert_eq!(vmm_cpus(8), Ok(8));
        assert!(vmm_cpus(9).unwrap_err().contains("at most 8"));
    }

    #[test]
    fn the_vmm_cpu_limit_is_config_max_cpus() {
        let config = include_str!("../../libvmm/src/config.rs");
        let line = format!("pub const MAX_CPUS: usize = {VMM_MAX_CPUS};");
        assert!(config.lines().any(|l| l.trim() == line), "{line}");
    }

    #[test]
    fn files_elf_and_program_arguments() {
        let a = parse(&strings(&[
            "--file",
            "a.txt:/a",
            "--elf",
            "x/prog",
            "--file",
            "b:/d/b",
            "--",
            "--nocapture",
            "t",
        ]))
        .unwrap();
        assert_eq!(a.files.len(), 2);
        assert_eq!(a.files[1].guest, "/d/b");
        assert_eq!(a.elf, Some("x/prog".into()));
        assert_eq!(a.argv, Some(strings(&["--nocapture", "t"])));
        assert!(a.rest.is_empty());
        assert!(parse(&strings(&["--file", "relative"])).is_err());
        assert_eq!(parse(&strings(&["--"])).unwrap().argv, Some(vec![]));
    }
}
