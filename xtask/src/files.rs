//! Build-time files (`--file HOST_PATH:GUEST_PATH`): packed into the archive `libvmm_abi::files`
//! describes and appended to the payload ELF as one more read-only `PT_LOAD` segment (flag
//! `PF_LIBVMM_FILES`), on the page after the payload's last segment. The VMM loads and maps it like any
//! read-only segment; the std runtime finds it in its own program headers and serves it through
//! `std::fs`. The new program header takes the slot of `PT_GNU_STACK` (a hint for OS loaders that
//! nothing here reads), so the header table keeps its size and place, inside the first segment where
//! the runtime reads it.
use std::path::PathBuf;

use libvmm_abi::files::{encode, encoded_len, valid_path, PF_LIBVMM_FILES};

/// One `--file` argument.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct FileSpec {
    pub host: PathBuf,
    pub guest: String,
}

impl FileSpec {
    /// `HOST_PATH:GUEST_PATH` (the guest path is after the last `:`, absolute).
    pub fn parse(s: &str) -> Result<FileSpec, String> {
        let (host, guest) = s
            .rsplit_once(':')
            .ok_or_else(|| format!("--file {s}: expected HOST_PATH:GUEST_PATH"))?;
        if host.is_empty() || !valid_path(guest) {
            return Err(format!(
                "--file {s}: the guest path must be absolute and normalised (like /data/input.txt)"
            ));
        }
        Ok(FileSpec {
            host: PathBuf::from(host),
            guest: guest.to_string(),
        })
    }
}

/// The archive of `specs` (host files read now; relative host paths from `base`).
pub fn pack(specs: &[FileSpec], base: &std::path::Path) -> Result<Vec<u8>, String> {
    let mut files: Vec<(String, Vec<u8>)> = Vec::new();
    for s in specs {
        let p = base.join(&s.host);
        let data = std::fs::read(&p).map_err(|e| format!("--file {}: {e}", p.display()))?;
        files.push((s.guest.clone(), data));
    }
    files.sort_by(|a, b| a.0.cmp(&b.0));
    let refs: Vec<(&str, &[u8])> = files
        .iter()
        .map(|(p, d)| (p.as_str(), d.as_slice()))
        .collect();
    let mut out = vec![0u8; encoded_len(&refs)];
    encode(&refs, &mut out).map_err(|e| format!("--file: {}", e.describe()))?;
    Ok(out)
}

const PT_LOAD: u32 = 1;
const PT_GNU_STACK: u32 = 0x6474_e551;
const PF_R: u32 = 4;
const PAGE: u64 = 4096;

fn rd(b: &[u8], at: usize, n: usize) -> Result<u64, String> {
    let s = b
        .get(at..at + n)
        .ok_or("payload ELF: truncated program headers")?;
    Ok(s.iter().rev().fold(0u64, |v, &x| (v << 8) | x as u64))
}

fn wr(b: &mut [u8], at: usize, n: usize, v: u64) {
    b[at..at + n].copy_from_slice(&v.to_le_bytes()[..n]);
}

/// `elf` with `archive` appended as a read-only `PT_LOAD` after its last segment.
pub fn attach(elf: &[u8], archive: &[u8]) -> Result<Vec<u8>, String> {
    if elf.len() < 64 || &elf[..4] != b"\x7fELF" || elf[4] != 2 || elf[5] != 1 {
        return Err("payload is not a little-endian 64-bit ELF file".into());
    }
    let phoff = rd(elf, 32, 8)? as usize;
    let phentsize = rd(elf, 54, 2)? as usize;
    let phnum = rd(elf, 56, 2)? as usize;
    if phentsize != 56 {
        return Err("payload ELF: unexpected program header size".into());
    }
    let mut phdrs: Vec<Vec<u8>> = (0..phnum)
        .map(|i| {
            elf.get(phoff + i * 56..phoff + (i + 1) * 56)
                .map(<[u8]>::to_vec)
                .ok_or_else(|| "payload ELF: truncated program headers".to_string())
        })
        .collect::<Result<_, _>>()?;
    let ty = |p: &[u8]| rd(p, 0, 4).map(|t| t as u32);
    let spare = phdrs
        .iter()
        .position(|p| ty(p) == Ok(PT_GNU_STACK))
        .ok_or("payload ELF has no PT_GNU_STACK program header to reuse for the file archive")?;
    if phdrs
        .iter()
        .any(|p| ty(p) == Ok(PT_LOAD) && rd(p, 4, 4).is_ok_and(|f| f as u32 & PF_LIBVMM_FILES != 0))
    {
        return Err("payload ELF already carries a file archive".into());
    }
    phdrs.remove(spare);
    let mut end = 0u64;
    let mut last_load = 0;
    for (i, p) in phdrs.iter().enumerate() {
        if ty(p)? == PT_LOAD {
            end = end.max(rd(p, 16, 8)? + rd(p, 40, 8)?);
            last_load = i + 1;
        }
    }
    let vaddr = end.next_multiple_of(PAGE);
    let offset = (elf.len() as u64).next_multiple_of(PAGE);
    let mut h = vec![0u8; 56];
    wr(&mut h, 0, 4, PT_LOAD as u64);
    wr(&mut h, 4, 4, (PF_R | PF_LIBVMM_FILES) as u64);
    wr(&mut h, 8, 8, offset);
    wr(&mut h, 16, 8, vaddr);
    wr(&mut h, 24, 8, vaddr);
    wr(&mut h, 32, 8, archive.len() as u64);
    wr(&mut h, 40, 8, archive.len() as u64);
    wr(&mut h, 48, 8, PAGE);
    phdrs.insert(last_load, h);
    let mut out = elf.to_vec();
    for (i, p) in phdrs.iter().enumerate() {
        out[phoff + i * 56..phoff + (i + 1) * 56].copy_from_slice(p);
    }
    out.resize(offset as usize, 0);
    out.extend_from_slice(archive);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use libvmm_abi::files::Archive;

    /// A minimal PIE: header, 3 program headers (LOAD r-x, LOAD rw-, GNU_STACK), some bytes.
    fn pie() -> Vec<u8> {
        let mut f = vec![0u8; 0x1800];
        f[..4].copy_from_slice(b"\x7fELF");
        f[4] = 2;
        f[5] = 1;
        wr(&mut f, 16, 2, 3);
        wr(&mut f, 32, 8, 64);
        wr(&mut f, 54, 2, 56);
        wr(&mut f, 56, 2, 3);
        let ph = |f: &mut Vec<u8>, i: usize, t: u32, fl: u32, off: u64, va: u64, sz: u64| {
            let a = 64 + i * 56;
            wr(f, a, 4, t as u64);
            wr(f, a + 4, 4, fl as u64);
            wr(f, a + 8, 8, off);
            wr(f, a + 16, 8, va);
            wr(f, a + 32, 8, sz);
            wr(f, a + 40, 8, sz + 0x100);
        };
        ph(&mut f, 0, PT_GNU_STACK, 6, 0, 0, 0);
        ph(&mut f, 1, PT_LOAD, 5, 0, 0, 0x1000);
        ph(&mut f, 2, PT_LOAD, 6, 0x1000, 0x2000, 0x800);
        f
    }

    #[test]
    fn the_archive_becomes_the_last_load_segment_and_parses_back() {
        let dir = std::env::temp_dir().join(format!("xtask-files-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("b.txt"), b"bee").unwrap();
        std::fs::write(dir.join("a.txt"), b"ay").unwrap();
        let specs = [
            FileSpec::parse("b.txt:/x/b").unwrap(),
            FileSpec::parse("a.txt:/a").unwrap(),
        ];
        let archive = pack(&specs, &dir).unwrap();
        let out = attach(&pie(), &archive).unwrap();
        // The GNU_STACK slot is gone; the loads keep their order and the archive follows them.
        let t: Vec<u64> = (0..3).map(|i| rd(&out, 64 + i * 56, 4).unwrap()).collect();
        assert_eq!(t, [1, 1, 1]);
        let h = 64 + 2 * 56;
        assert_eq!(rd(&out, h + 4, 4).unwrap() as u32, PF_R | PF_LIBVMM_FILES);
        assert_eq!(rd(&out, h + 16, 8).unwrap(), 0x3000); // page after 0x2000 + 0x900
        let off = rd(&out, h + 8, 8).unwrap() as usize;
        assert_eq!(off % 4096, 0);
        let a = Archive::parse(&out[off..]).unwrap();
        let v: Vec<_> = a.iter().collect();
        assert_eq!(v, [("/a", &b"ay"[..]), ("/x/b", &b"bee"[..])]);
        assert!(attach(&out, &archive).is_err()); // no spare header any more
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn bad_specs_and_elfs_are_refused() {
        assert!(FileSpec::parse("nocolon").is_err());
        assert!(FileSpec::parse("x:relative").is_err());
        assert!(FileSpec::parse(":/a").is_err());
        assert!(FileSpec::parse("a:b:/c").is_ok_and(|s| s.host.as_os_str() == "a:b"));
        assert!(attach(b"not an elf", b"").is_err());
        let mut e = pie();
        wr(&mut e, 56, 2, 2); // no GNU_STACK among the first two
        wr(&mut e, 64, 4, PT_LOAD as u64);
        assert!(attach(&e, b"").is_err());
        let one = FileSpec::parse("Cargo.toml:/a").unwrap();
        let dup = [one.clone(), one];
        assert!(pack(&dup, &crate::cmd::root().join("xtask")).is_err());
    }
}
