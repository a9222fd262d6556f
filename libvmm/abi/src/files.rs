//! The build-time file archive: files given with `cargo xtask build-image --file HOST_PATH:GUEST_PATH`,
//! packed by xtask and read by the guest runtime (`libvmm-guest`'s file system), which offers them
//! through `std::fs`.
//!
//! **How it reaches the guest.** xtask appends the archive to the payload ELF as one more `PT_LOAD`
//! segment, read-only, with the OS-specific program-header flag [`PF_LIBVMM_FILES`], placed on the page
//! after the payload's last segment (it takes the program-header slot of `PT_GNU_STACK`, which nothing
//! here reads). So the VMM needs nothing new: its loader validates and copies that segment like any
//! other and maps it read-only (W^X); the runtime finds it among its own program headers. Any payload
//! ELF with a spare program header takes files, an ELF given to `cargo xtask run --elf` included.
//!
//! **Format** (little-endian; offsets from the archive's start):
//! ```text
//! 0   magic "LVMMFS01"          8 bytes
//! 8   count                     u32   (<= FILES_MAX)
//! 12  reserved                  u32   (0)
//! 16  count entries of 24 bytes: path offset u32, path length u32, data offset u64, data length u64
//!     then the path and data bytes
//! ```
//! Paths are absolute (`/etc/motd`), UTF-8, without empty, `.` or `..` components or NUL bytes, each
//! component at most [`NAME_MAX`] bytes and the whole at most [`PATH_MAX`]; entries are sorted by path
//! (bytewise, strictly: no duplicates) and no file's path is a directory of another (`/a` and `/a/b`).
//! Directories are implied by the paths.
//!
//! The bytes are the payload's own memory, which a buggy or hostile payload may have changed before the
//! runtime reads them: [`Archive::parse`] checks every rule above, with checked arithmetic, and never
//! panics (host tests feed it malformed archives; the `files` fuzz target mutates valid ones). Written by
//! hand rather than with `tar`/`cpio` crates: the guest needs a no_std, allocation-free reader with all
//! of these checks, and the format is 30 lines.

/// The archive's first 8 bytes.
pub const MAGIC: [u8; 8] = *b"LVMMFS01";
/// Header and entry sizes.
pub const HEADER_LEN: usize = 16;
pub const ENTRY_LEN: usize = 24;
/// Most files in one archive.
pub const FILES_MAX: usize = 4096;
/// Longest path component and path (bytes), as Linux's `NAME_MAX` and `PATH_MAX`.
pub const NAME_MAX: usize = 255;
pub const PATH_MAX: usize = 4096;
/// The program-header flag (in `PF_MASKOS`) that marks the archive's `PT_LOAD` segment.
pub const PF_LIBVMM_FILES: u32 = 0x0010_0000;

/// Why an archive was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ArchiveError {
    /// Shorter than its header, or the magic is wrong.
    BadMagic,
    /// More than [`FILES_MAX`] entries, or the entry table lies outside the archive.
    BadCount,
    /// The reserved word is not 0.
    Reserved,
    /// An entry's path or data lies outside the archive.
    Outside,
    /// A path breaks the path rules (see the module doc).
    BadPath,
    /// Paths are not in strictly increasing order (a duplicate included).
    Unsorted,
    /// A file's path is a directory of another file's path.
    FileIsDirectory,
    /// (Encoding) the output buffer is too small.
    TooSmall,
}

impl ArchiveError {
    pub const fn describe(self) -> &'static str {
        match self {
            Self::BadMagic => "file archive: bad magic or truncated header",
            Self::BadCount => "file archive: too many entries, or the entry table is truncated",
            Self::Reserved => "file archive: reserved header word is not 0",
            Self::Outside => "file archive: an entry's path or data lies outside the archive",
            Self::BadPath => {
                "file archive: a path is not absolute, normalised UTF-8 within the limits"
            }
            Self::Unsorted => "file archive: paths are not sorted or repeat",
            Self::FileIsDirectory => "file archive: a file's path is also another file's directory",
            Self::TooSmall => "file archive: output buffer too small",
        }
    }
}

/// Whether `p` is a valid archive path: `/` then components separated by single `/`, none empty, `.`
/// or `..`, none longer than [`NAME_MAX`], no NUL, at most [`PATH_MAX`] bytes, no trailing `/`.
pub fn valid_path(p: &str) -> bool {
    let Some(rest) = p.strip_prefix('/') else {
        return false;
    };
    p.len() <= PATH_MAX
        && !rest.is_empty()
        && !p.contains('\0')
        && rest
            .split('/')
            .all(|c| !c.is_empty() && c != "." && c != ".." && c.len() <= NAME_MAX)
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(
        b.get(at..at.checked_add(4)?)?.try_into().ok()?,
    ))
}

fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(
        b.get(at..at.checked_add(8)?)?.try_into().ok()?,
    ))
}

/// A validated archive.
#[derive(Clone, Copy, Debug)]
pub struct Archive<'a> {
    bytes: &'a [u8],
    count: usize,
}

impl<'a> Archive<'a> {
    /// Checks every rule of the format; afterwards [`Archive::get`] cannot fail for `i < len()`.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, ArchiveError> {
        if bytes.len() < HEADER_LEN || bytes[..8] != MAGIC {
            return Err(ArchiveError::BadMagic);
        }
        let count = u32_at(bytes, 8).ok_or(ArchiveError::BadMagic)? as usize;
        if u32_at(bytes, 12) != Some(0) {
            return Err(ArchiveError::Reserved);
        }
        let table_end = count
            .checked_mul(ENTRY_LEN)
            .and_then(|t| t.checked_add(HEADER_LEN));
        if count > FILES_MAX || table_end.is_none_or(|e| e > bytes.len()) {
            return Err(ArchiveError::BadCount);
        }
        let a = Self { bytes, count };
        let mut prev: Option<&str> = None;
        for i in 0..count {
            let (path, _) = a.entry(i)?;
            if prev.is_some_and(|q| q >= path) {
                return Err(ArchiveError::Unsorted);
            }
            prev = Some(path);
        }
        // A file `/a` and a file `/a/b`: in sorted order every path under `/a/` follows `/a`, after any
        // sibling like `/a.x` ('.' < '/'); a binary search finds the first path >= "/a/".
        for i in 0..count {
            let (path, _) = a.entry(i)?;
            let (mut lo, mut hi) = (i + 1, count);
            while lo < hi {
                let mid = lo + (hi - lo) / 2;
                if cmp_slash(a.entry(mid)?.0, path) == core::cmp::Ordering::Less {
                    lo = mid + 1;
                } else {
                    hi = mid;
                }
            }
            if lo < count {
                let next = a.entry(lo)?.0.as_bytes();
                if next.len() > path.len()
                    && next.starts_with(path.as_bytes())
                    && next[path.len()] == b'/'
                {
                    return Err(ArchiveError::FileIsDirectory);
                }
            }
        }
        Ok(a)
    }

    /// Entry `i`, fully checked (used by `parse` before anything trusts it).
    fn entry(&self, i: usize) -> Result<(&'a str, &'a [u8]), ArchiveError> {
        let at = HEADER_LEN + i * ENTRY_LEN;
        let b = self.bytes;
        let (po, pl) = (u32_at(b, at), u32_at(b, at + 4));
        let (dof, dl) = (u64_at(b, at + 8), u64_at(b, at + 16));
        let (Some(po), Some(pl), Some(dof), Some(dl)) = (po, pl, dof, dl) else {
            return Err(ArchiveError::BadCount);
        };
        let range = |o: u64, l: u64| {
            let o = usize::try_from(o).ok()?;
            let e = o.checked_add(usize::try_from(l).ok()?)?;
            b.get(o..e)
        };
        let path = range(po as u64, pl as u64).ok_or(ArchiveError::Outside)?;
        let data = range(dof, dl).ok_or(ArchiveError::Outside)?;
        let path = core::str::from_utf8(path).map_err(|_| ArchiveError::BadPath)?;
        if !valid_path(path) {
            return Err(ArchiveError::BadPath);
        }
        Ok((path, data))
    }

    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The path and contents of entry `i`.
    pub fn get(&self, i: usize) -> Option<(&'a str, &'a [u8])> {
        if i >= self.count {
            return None;
        }
        self.entry(i).ok()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&'a str, &'a [u8])> + '_ {
        (0..self.count).filter_map(|i| self.get(i))
    }
}

/// Compares `p` with `q` followed by `/`.
fn cmp_slash(p: &str, q: &str) -> core::cmp::Ordering {
    let (p, q) = (p.as_bytes(), q.as_bytes());
    let n = p.len().min(q.len());
    match p[..n].cmp(&q[..n]) {
        core::cmp::Ordering::Equal => {}
        o => return o,
    }
    if p.len() <= q.len() {
        return core::cmp::Ordering::Less; // p is a prefix of q (or equal): shorter than q + "/"
    }
    p[n].cmp(&b'/')
}

/// Bytes [`encode`] needs for `files`.
pub fn encoded_len(files: &[(&str, &[u8])]) -> usize {
    HEADER_LEN
        + files
            .iter()
            .map(|(p, d)| ENTRY_LEN + p.len() + d.len())
            .sum::<usize>()
}

/// Writes the archive of `files` (which must already be sorted by path and valid: checked by parsing
/// the result) into `out`; returns its length.
pub fn encode(files: &[(&str, &[u8])], out: &mut [u8]) -> Result<usize, ArchiveError> {
    let len = encoded_len(files);
    if out.len() < len {
        return Err(ArchiveError::TooSmall);
    }
    if files.len() > FILES_MAX || files.len() > u32::MAX as usize {
        return Err(ArchiveError::BadCount);
    }
    out[..8].copy_from_slice(&MAGIC);
    out[8..12].copy_from_slice(&(files.len() as u32).to_le_bytes());
    out[12..16].copy_from_slice(&0u32.to_le_bytes());
    let mut at = HEADER_LEN + files.len() * ENTRY_LEN;
    for (i, (p, d)) in files.iter().enumerate() {
        let e = HEADER_LEN + i * ENTRY_LEN;
        let plen = u32::try_from(p.len()).map_err(|_| ArchiveError::BadPath)?;
        let poff = u32::try_from(at).map_err(|_| ArchiveError::Outside)?;
        out[e..e + 4].copy_from_slice(&poff.to_le_bytes());
        out[e + 4..e + 8].copy_from_slice(&plen.to_le_bytes());
        out[at..at + p.len()].copy_from_slice(p.as_bytes());
        at += p.len();
        out[e + 8..e + 16].copy_from_slice(&(at as u64).to_le_bytes());
        out[e + 16..e + 24].copy_from_slice(&(d.len() as u64).to_le_bytes());
        out[at..at + d.len()].copy_from_slice(d);
        at += d.len();
    }
    Archive::parse(&out[..len])?;
    Ok(len)
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use std::vec;
    use std::vec::Vec;

    fn enc(files: &[(&str, &[u8])]) -> Vec<u8> {
        let mut v = vec![0u8; encoded_len(files)];
        let n = encode(files, &mut v).unwrap();
        v.truncate(n);
        v
    }

    #[test]
    fn round_trip() {
        let v = enc(&[("/a.txt", b"hello"), ("/d/e/f", b""), ("/d/g", b"xyz")]);
        let a = Archive::parse(&v).unwrap();
        assert_eq!(a.len(), 3);
        let all: Vec<_> = a.iter().collect();
        assert_eq!(
            all,
            [
                ("/a.txt", &b"hello"[..]),
                ("/d/e/f", &b""[..]),
                ("/d/g", &b"xyz"[..])
            ]
        );
        assert!(Archive::parse(&enc(&[])).unwrap().is_empty());
    }

    #[test]
    fn paths() {
        for ok in ["/a", "/a/b", "/a.b/..c", "/x y"] {
            assert!(valid_path(ok), "{ok}");
        }
        let long = std::format!("/{}", "n".repeat(256));
        for bad in [
            "",
            "/",
            "a",
            "/a/",
            "//a",
            "/a//b",
            "/./a",
            "/a/..",
            "/a\0",
            &long[..],
        ] {
            assert!(!valid_path(bad), "{bad:?}");
        }
    }

    #[test]
    fn malformed_archives_are_refused_by_name() {
        let good = enc(&[("/a", b"1"), ("/b", b"22")]);
        let set = |at: usize, v: &[u8]| {
            let mut b = good.clone();
            b[at..at + v.len()].copy_from_slice(v);
            b
        };
        assert_eq!(Archive::parse(&[]).unwrap_err(), ArchiveError::BadMagic);
        assert_eq!(
            Archive::parse(&good[..15]).unwrap_err(),
            ArchiveError::BadMagic
        );
        assert_eq!(
            Archive::parse(&set(0, b"X")).unwrap_err(),
            ArchiveError::BadMagic
        );
        assert_eq!(
            Archive::parse(&set(8, &[3, 0, 0, 0])).unwrap_err(),
            ArchiveError::BadCount
        );
        assert_eq!(
            Archive::parse(&set(8, &[0xff; 4])).unwrap_err(),
            ArchiveError::BadCount
        );
        assert_eq!(
            Archive::parse(&set(12, &[1])).unwrap_err(),
            ArchiveError::Reserved
        );
        // Truncated: the last file's data is cut.
        assert_eq!(
            Archive::parse(&good[..good.len() - 1]).unwrap_err(),
            ArchiveError::Outside
        );
        // Path offset, path length, data offset, data length beyond the end or overflowing.
        assert_eq!(
            Archive::parse(&set(16, &[0xff; 4])).unwrap_err(),
            ArchiveError::Outside
        );
        assert_eq!(
            Archive::parse(&set(20, &[0xff; 4])).unwrap_err(),
            ArchiveError::Outside
        );
        assert_eq!(
            Archive::parse(&set(24, &[0xff; 8])).unwrap_err(),
            ArchiveError::Outside
        );
        assert_eq!(
            Archive::parse(&set(32, &[0xff; 8])).unwrap_err(),
            ArchiveError::Outside
        );
        // Path bytes: not absolute, not UTF-8.
        let p0 = u32_at(&good, 16).unwrap() as usize;
        assert_eq!(
            Archive::parse(&set(p0, b"x")).unwrap_err(),
            ArchiveError::BadPath
        );
        assert_eq!(
            Archive::parse(&set(p0 + 1, &[0xff])).unwrap_err(),
            ArchiveError::BadPath
        );
        // Order and duplicates.
        assert_eq!(
            Archive::parse(&set(p0 + 1, b"c")).unwrap_err(),
            ArchiveError::Unsorted
        );
        assert_eq!(
            Archive::parse(&set(p0 + 1, b"b")).unwrap_err(),
            ArchiveError::Unsorted
        );
        // A file that is another's directory, with a sibling sorting between them.
        let mut v = vec![0u8; 256];
        let files: [(&str, &[u8]); 3] = [("/a", b""), ("/a.x", b""), ("/a/b", b"")];
        assert_eq!(
            encode(&files, &mut v).unwrap_err(),
            ArchiveError::FileIsDirectory
        );
        assert_eq!(
            encode(&files, &mut [0u8; 8]).unwrap_err(),
            ArchiveError::TooSmall
        );
    }

    #[test]
    fn every_truncation_and_bit_flip_is_an_error_or_a_valid_archive() {
        let good = enc(&[("/a", b"1"), ("/dir/b", b"22"), ("/dir/c", b"333")]);
        for n in 0..good.len() {
            assert!(Archive::parse(&good[..n]).is_err());
        }
        for i in 0..good.len() {
            for bit in 0..8 {
                let mut b = good.clone();
                b[i] ^= 1 << bit;
                if let Ok(a) = Archive::parse(&b) {
                    for (p, d) in a.iter() {
                        assert!(valid_path(p));
                        assert!(d.len() <= b.len());
                    }
                }
            }
        }
    }
}
