//! `libvmm-fuzz`: runs libvmm's fuzz targets (`libvmm::fuzzing::TARGETS`) with the engine in `engine.rs`.
//!
//! ```text
//! libvmm-fuzz [--target NAME]... [--execs N | --secs S] [--seed N] [--crash-dir DIR]
//! libvmm-fuzz --replay FILE --target NAME      runs one saved input (a crash reproducer)
//! ```
//! Prints one line per target: executions, time, rate, corpus, distinct outcomes, crashes; exits 1 if
//! any target crashed. `cargo xtask fuzz` builds it with `--profile fuzz` and runs it.
mod engine;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use engine::Budget;
use libvmm::fuzzing::TARGETS;

const QEMU_DTB: &[u8] = include_bytes!("../../libvmm/src/riscv/testdata/qemu-virt-rv64.dtb");
const ZALASR_DTB: &[u8] =
    include_bytes!("../../libvmm/src/riscv/testdata/qemu-virt-rv64-zalasr.dtb");

/// A valid MADT with a local APIC and an x2APIC entry (checksum set), the `acpi` target's seed.
fn madt_seed() -> Vec<u8> {
    let mut t = b"APIC".to_vec();
    t.extend_from_slice(&[0; 4]); // length, set below
    t.extend_from_slice(&[3, 0]); // revision, checksum
    t.extend_from_slice(b"LIBVMMFUZZTABLE1"); // OEM id, table id
    t.extend_from_slice(&[0; 12]); // OEM revision, creator id and revision
    t.extend_from_slice(&0xFEE0_0000u32.to_le_bytes()); // local APIC address
    t.extend_from_slice(&1u32.to_le_bytes()); // flags: PC-AT compatible
    t.extend_from_slice(&[0, 8, 0, 0, 1, 0, 0, 0]); // local APIC 0, enabled
    t.extend_from_slice(&[9, 16, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0]); // x2APIC 1, enabled
    let len = t.len() as u32;
    t[4..8].copy_from_slice(&len.to_le_bytes());
    let sum = t.iter().fold(0u8, |a, b| a.wrapping_add(*b));
    t[9] = 0u8.wrapping_sub(sum);
    t
}

/// A minimal x86-64 payload ELF (`ET_EXEC`, one read+execute `PT_LOAD` at the `loader` target's payload
/// address, entry at its start), the `loader` target's seed; mutations reach every rule of the parser.
fn elf_seed() -> Vec<u8> {
    // The fuzzing facade's model window starts at 0x8400_0000; the payload area follows the boot page.
    let at: u64 = 0x8400_0000 + libvmm::abi::layout::PAYLOAD_OFFSET;
    let body = [0x90u8, 0x90, 0xc3, 0];
    let (ehsz, phsz) = (64u64, 56u64);
    let off = ehsz + phsz;
    let mut e = Vec::new();
    e.extend_from_slice(b"\x7fELF");
    e.extend_from_slice(&[2, 1, 1, 0]); // 64-bit, little-endian, version 1, SysV
    e.extend_from_slice(&[0; 8]);
    e.extend_from_slice(&2u16.to_le_bytes()); // ET_EXEC
    e.extend_from_slice(&62u16.to_le_bytes()); // EM_X86_64
    e.extend_from_slice(&1u32.to_le_bytes());
    e.extend_from_slice(&at.to_le_bytes()); // entry
    e.extend_from_slice(&ehsz.to_le_bytes()); // phoff
    e.extend_from_slice(&0u64.to_le_bytes()); // shoff
    e.extend_from_slice(&0u32.to_le_bytes()); // flags
    e.extend_from_slice(&(ehsz as u16).to_le_bytes());
    e.extend_from_slice(&(phsz as u16).to_le_bytes());
    e.extend_from_slice(&1u16.to_le_bytes()); // phnum
    e.extend_from_slice(&[0; 6]); // shentsize, shnum, shstrndx
    e.extend_from_slice(&1u32.to_le_bytes()); // PT_LOAD
    e.extend_from_slice(&5u32.to_le_bytes()); // PF_R | PF_X
    e.extend_from_slice(&off.to_le_bytes());
    e.extend_from_slice(&at.to_le_bytes()); // vaddr
    e.extend_from_slice(&at.to_le_bytes()); // paddr
    e.extend_from_slice(&(body.len() as u64).to_le_bytes());
    e.extend_from_slice(&0x1000u64.to_le_bytes()); // memsz
    e.extend_from_slice(&0x1000u64.to_le_bytes()); // align
    e.extend_from_slice(&body);
    e
}

/// A valid build-time file archive with nested directories and an empty file, the `files` target's seed.
fn files_seed() -> Vec<u8> {
    use libvmm::abi::files::{encode, encoded_len};
    let files: [(&str, &[u8]); 4] = [
        ("/a.txt", b"hello"),
        ("/d/e/empty", b""),
        ("/d/f", b"\x00\xff"),
        ("/z", b"last"),
    ];
    let mut v = vec![0u8; encoded_len(&files)];
    encode(&files, &mut v).expect("a valid seed archive");
    v
}

/// Real inputs each target starts from, and its longest input.
fn seeds(target: &str) -> (Vec<Vec<u8>>, usize) {
    let v = |s: &[&[u8]]| s.iter().map(|b| b.to_vec()).collect::<Vec<_>>();
    match target {
        "dt" => (v(&[QEMU_DTB, ZALASR_DTB]), 2 * QEMU_DTB.len().max(ZALASR_DTB.len())),
        "acpi" => (vec![madt_seed()], 1024),
        "loader" => (vec![elf_seed()], 4096),
        "files" => (vec![files_seed()], 1024),
        "isa" => (
            v(&[
                b"rv64imafdch_zicbom_zicboz_zicntr_zicsr_zifencei_zihintntl_zihintpause_zihpm_zawrs_zfa_zca_zcd_zba_zbb_zbc_zbs_sstc_svadu",
                b"rv64gc",
                b"rv32imac_zicsr_xfoo_sscofpmf",
                b"i\0m\0a\0f\0d\0c\0h\0zicsr\0zifencei\0zalasr\0zicboz\0",
                b"rv64IMA_Zba2p0_x",
            ]),
            512,
        ),
        "cmdline" => (
            v(&[
                b"libvmm.timeout_ms=100 console=ttyS0 x=1",
                b"libvmm.isa=-zicboz,+zalasr libvmm.selftest=panic",
                b"libvmm.vmx.bad=tpr-vtpr libvmm.vmx.skip-checks libvmm.vmx.report-missed=off",
                b"libvmm.selftest=fault libvmm.timeout_ms=99999999999999999999",
            ]),
            512,
        ),
        "guest_dt" => (Vec::new(), 1024),
        _ => (Vec::new(), 512),
    }
}

struct Cli {
    targets: Vec<String>,
    budget: Budget,
    seed: u64,
    crash_dir: PathBuf,
    replay: Option<PathBuf>,
}

fn parse(args: &[String]) -> Result<Cli, String> {
    let mut c = Cli {
        targets: Vec::new(),
        budget: Budget::Execs(100_000),
        seed: 1,
        crash_dir: PathBuf::from("target/fuzz-crashes"),
        replay: None,
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut val = || it.next().cloned().ok_or(format!("{a} needs a value"));
        let num = |s: String| {
            s.parse::<u64>()
                .map_err(|_| format!("{a}: not a number: {s}"))
        };
        match a.as_str() {
            "--target" => c.targets.push(val()?),
            "--execs" => c.budget = Budget::Execs(num(val()?)?),
            "--secs" => c.budget = Budget::Time(Duration::from_secs(num(val()?)?)),
            "--seed" => c.seed = num(val()?)?,
            "--crash-dir" => c.crash_dir = PathBuf::from(val()?),
            "--replay" => c.replay = Some(PathBuf::from(val()?)),
            _ => return Err(format!("unknown argument {a}")),
        }
    }
    for t in &c.targets {
        if !TARGETS.iter().any(|(n, _)| n == t) {
            let names: Vec<_> = TARGETS.iter().map(|(n, _)| *n).collect();
            return Err(format!(
                "unknown target {t} (targets: {})",
                names.join(", ")
            ));
        }
    }
    Ok(c)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let cli = match parse(&args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("libvmm-fuzz: {e}");
            return ExitCode::from(2);
        }
    };
    if !cfg!(panic = "unwind") {
        eprintln!("libvmm-fuzz: built with panic=abort; build it with --profile fuzz");
        return ExitCode::from(2);
    }
    let selected: Vec<_> = TARGETS
        .iter()
        .filter(|(n, _)| cli.targets.is_empty() || cli.targets.iter().any(|t| t == n))
        .collect();
    if let Some(file) = &cli.replay {
        let [(name, f)] = selected[..] else {
            eprintln!("libvmm-fuzz: --replay needs exactly one --target");
            return ExitCode::from(2);
        };
        let input = match std::fs::read(file) {
            Ok(b) => b,
            Err(e) => {
                eprintln!("libvmm-fuzz: {}: {e}", file.display());
                return ExitCode::from(2);
            }
        };
        // The default hook prints the panic with its location.
        return match std::panic::catch_unwind(|| f(&input)) {
            Ok(sig) => {
                println!("{name}: no panic (outcome {sig:#018x})");
                ExitCode::SUCCESS
            }
            Err(_) => ExitCode::from(1),
        };
    }
    engine::quiet_panics();
    let (mut execs, mut crashes) = (0u64, 0u64);
    for (name, f) in selected {
        let (seeds, max_len) = seeds(name);
        let s = engine::fuzz(
            name,
            *f,
            &seeds,
            max_len,
            cli.budget,
            cli.seed,
            &cli.crash_dir,
        );
        println!(
            "fuzz {name:<12} {:>12} execs in {:>7.1} s ({:>9.0}/s), corpus {:>4}, outcomes {:>5}, crashes {} ({} distinct)",
            s.execs,
            s.secs,
            s.execs as f64 / s.secs.max(1e-9),
            s.corpus,
            s.signatures,
            s.crashes,
            s.distinct.len()
        );
        execs += s.execs;
        crashes += s.crashes;
    }
    println!("fuzz total: {execs} execs, {crashes} crashes");
    if crashes == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_target_takes_the_empty_input_and_its_seeds() {
        for (name, f) in TARGETS {
            f(&[]);
            for s in seeds(name).0 {
                f(&s);
            }
        }
    }

    #[test]
    fn the_dt_seeds_are_real_trees_and_differ_from_garbage() {
        let (seeds, _) = seeds("dt");
        let dt = TARGETS.iter().find(|(n, _)| *n == "dt").unwrap().1;
        assert_ne!(dt(&seeds[0]), dt(&[]));
    }

    /// The emulator target gets past decoding: inputs from a fixed PRNG reach many distinct outcomes
    /// (a target stuck on one answer, e.g. "not in long mode" for every input, would not).
    #[test]
    fn the_emulator_target_reaches_many_outcomes() {
        let f = TARGETS.iter().find(|(n, _)| *n == "emulator").unwrap().1;
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut outcomes = std::collections::HashSet::new();
        for _ in 0..20_000 {
            let input: Vec<u8> = (0..200)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                })
                .collect();
            outcomes.insert(f(&input));
        }
        assert!(outcomes.len() > 500, "{} outcomes", outcomes.len());
    }

    #[test]
    fn the_command_line_is_checked() {
        assert!(parse(&["--target".into(), "nope".into()]).is_err());
        assert!(parse(&["--execs".into(), "x".into()]).is_err());
        assert!(matches!(
            parse(&["--secs".into(), "3".into()]).unwrap().budget,
            Budget::Time(d) if d.as_secs() == 3
        ));
    }
}
