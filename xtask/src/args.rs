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
    /// `run`: CPUs of the emulated machine (QEMU `-smp N`, Bochs `cpu: count=N`), 1 unless told.
    pub cpus: u32,
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
    Ok(a)
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
