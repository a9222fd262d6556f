//! The in-memory file system of Rust `std` payloads (hermit targets): `std::fs` on libvmm.
//!
//! One tree in guest RAM (heap), rooted at `/`, holding the files given at image build time
//! (`cargo xtask build-image --file HOST_PATH:GUEST_PATH`: the archive `libvmm_abi::files` describes,
//! which the runtime finds as a read-only segment of its own ELF) and whatever the program creates:
//! a tmpfs. A build-time file is read in place, without a copy, until the program first writes it
//! (then its bytes move to the heap). Nothing is persistent: the tree lives as long as the VM.
//!
//! The calls are hermit-abi's (`open`, `read`, `write`, `lseek`, `fstat`, `stat`, `lstat`,
//! `getdents64`, `mkdir`, `rmdir`, `unlink`, `close`): `arch/abi_exports.rs` turns the C pointers into
//! slices and calls the methods of [`Fs`] here, which are safe code, return `Err(errno)` (positive,
//! hermit-abi's values; the export negates it, as std expects) and are host-tested. Errors follow
//! Linux: `ENOENT`, `ENOTDIR`, `EISDIR`, `EEXIST`, `ENOTEMPTY`, `EBADF`, `EINVAL`, `ENAMETOOLONG`,
//! `EMFILE`, `ENOSPC` (the heap is full: never an allocation failure that aborts), `EBUSY` (removing
//! `/`). Two behaviours are Hermit's rather than Linux's, because std's hermit code relies on them:
//! `getdents64` returns every remaining entry at once or `EINVAL` when they do not all fit (std then
//! retries with a bigger buffer and reads once), and it lists no `.` and `..` (std's hermit `ReadDir`
//! would hand them to the program). There are no symbolic links (`lstat` is `stat`), no permissions
//! (mode bits are reported, never enforced), no times (all zero) and no current directory (relative
//! paths start at `/`).
#![forbid(unsafe_code)]

extern crate alloc;

use alloc::collections::BTreeMap;
use alloc::vec::Vec;

use hermit_abi::errno::{
    EBADF, EBUSY, EEXIST, EINVAL, EISDIR, EMFILE, ENAMETOOLONG, ENOENT, ENOSPC, ENOTDIR, ENOTEMPTY,
};
use hermit_abi::{
    DT_DIR, DT_REG, O_APPEND, O_CREAT, O_DIRECTORY, O_EXCL, O_RDWR, O_TRUNC, O_WRONLY, SEEK_CUR,
    SEEK_END, SEEK_SET, S_IFDIR, S_IFREG,
};
use libvmm_abi::files::{NAME_MAX, PATH_MAX};

/// The first file descriptor of the file system (0, 1, 2 are stdio).
pub const FD_FIRST: i32 = 3;
/// Files open at once.
pub const OPEN_MAX: usize = 1024;
/// Size of the `dirent64` header before the name (`d_ino`, `d_off`, `d_reclen`, `d_type`).
const DIRENT_NAME_AT: usize = 19;

pub type Result<T> = core::result::Result<T, i32>;

enum Data<'a> {
    /// A build-time file, read in place.
    Image(&'a [u8]),
    Ram(Vec<u8>),
}

impl Data<'_> {
    fn bytes(&self) -> &[u8] {
        match self {
            Data::Image(b) => b,
            Data::Ram(v) => v,
        }
    }
    /// The heap copy, made on the first write.
    fn ram(&mut self) -> Result<&mut Vec<u8>> {
        if let Data::Image(b) = *self {
            let mut v = Vec::new();
            v.try_reserve_exact(b.len()).map_err(|_| ENOSPC)?;
            v.extend_from_slice(b);
            *self = Data::Ram(v);
        }
        match self {
            Data::Ram(v) => Ok(v),
            Data::Image(_) => Err(EINVAL),
        }
    }
}

enum Kind<'a> {
    Dir(BTreeMap<Vec<u8>, usize>),
    File(Data<'a>),
}

struct Node<'a> {
    kind: Kind<'a>,
    /// In a directory (false once removed).
    linked: bool,
    /// Open file descriptions on it: a removed node lives until the last is closed.
    opens: usize,
}

#[derive(Clone, Copy)]
struct Open {
    node: usize,
    pos: u64,
    read: bool,
    write: bool,
    append: bool,
}

/// What `stat` reports (hermit-abi's `stat` is built from it at the export).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stat {
    pub ino: u64,
    pub mode: u32,
    pub nlink: u64,
    pub size: u64,
}

impl Stat {
    pub fn to_hermit(self) -> hermit_abi::stat {
        hermit_abi::stat {
            st_ino: self.ino,
            st_nlink: self.nlink,
            st_mode: self.mode,
            st_size: self.size as i64,
            st_blksize: 4096,
            st_blocks: self.size.div_ceil(512) as i64,
            ..Default::default()
        }
    }
}

/// The tree and the open files.
pub struct Fs<'a> {
    nodes: Vec<Option<Node<'a>>>,
    open: Vec<Option<Open>>,
}

impl Default for Fs<'_> {
    fn default() -> Self {
        Self::new()
    }
}

impl<'a> Fs<'a> {
    /// An empty tree: `/` only.
    pub fn new() -> Self {
        let root = Node {
            kind: Kind::Dir(BTreeMap::new()),
            linked: true,
            opens: 0,
        };
        Self {
            nodes: alloc::vec![Some(root)],
            open: Vec::new(),
        }
    }

    /// The tree of a validated build-time archive (its directories implied by the paths).
    pub fn from_archive(a: &libvmm_abi::files::Archive<'a>) -> Result<Self> {
        let mut fs = Self::new();
        for (path, data) in a.iter() {
            fs.add_image_file(path.as_bytes(), data)?;
        }
        Ok(fs)
    }

    /// Adds a read-in-place file at `path`, creating its directories.
    pub fn add_image_file(&mut self, path: &[u8], data: &'a [u8]) -> Result<()> {
        let comps = components(path)?;
        let (last, dirs) = comps.split_last().ok_or(EISDIR)?;
        let mut dir = 0;
        for c in dirs {
            dir = match self.child(dir, c)? {
                Some(n) => n,
                None => self.insert(dir, c, Kind::Dir(BTreeMap::new()))?,
            };
        }
        if self.child(dir, last)?.is_some() {
            return Err(EEXIST);
        }
        self.insert(dir, last, Kind::File(Data::Image(data)))?;
        Ok(())
    }

    fn node(&self, n: usize) -> &Node<'a> {
        // Indices come from directory entries and open files, which only name live nodes.
        self.nodes[n].as_ref().expect("live node")
    }

    fn node_mut(&mut self, n: usize) -> &mut Node<'a> {
        self.nodes[n].as_mut().expect("live node")
    }

    /// The entry `name` of directory `dir` (`ENOTDIR` when `dir` is a file).
    fn child(&self, dir: usize, name: &[u8]) -> Result<Option<usize>> {
        match &self.node(dir).kind {
            Kind::Dir(m) => Ok(m.get(name).copied()),
            Kind::File(_) => Err(ENOTDIR),
        }
    }

    fn insert(&mut self, dir: usize, name: &[u8], kind: Kind<'a>) -> Result<usize> {
        let node = Node {
            kind,
            linked: true,
            opens: 0,
        };
        let slot = match self.nodes.iter().position(Option::is_none) {
            Some(i) => i,
            None => {
                self.nodes.try_reserve(1).map_err(|_| ENOSPC)?;
                self.nodes.push(None);
                self.nodes.len() - 1
            }
        };
        let mut key = Vec::new();
        key.try_reserve_exact(name.len()).map_err(|_| ENOSPC)?;
        key.extend_from_slice(name);
        match &mut self.node_mut(dir).kind {
            Kind::Dir(m) => {
                m.insert(key, slot);
            }
            Kind::File(_) => return Err(ENOTDIR),
        }
        self.nodes[slot] = Some(node);
        Ok(slot)
    }

    /// The node `path` names.
    fn lookup(&self, path: &[u8]) -> Result<usize> {
        let mut n = 0;
        for c in components(path)? {
            n = self.child(n, c)?.ok_or(ENOENT)?;
        }
        Ok(n)
    }

    /// The directory that holds `path`'s last component, and that component (`None` for `/`).
    fn lookup_parent<'p>(&self, path: &'p [u8]) -> Result<(usize, Option<&'p [u8]>)> {
        let comps = components(path)?;
        let Some((last, dirs)) = comps.split_last() else {
            return Ok((0, None));
        };
        let mut n = 0;
        for c in dirs {
            n = self.child(n, c)?.ok_or(ENOENT)?;
        }
        self.child(n, b"")?; // the parent must be a directory
        Ok((n, Some(*last)))
    }

    fn stat_of(&self, n: usize) -> Stat {
        let node = self.node(n);
        match &node.kind {
            Kind::Dir(m) => Stat {
                ino: n as u64 + 1,
                mode: S_IFDIR | 0o755,
                nlink: 2 + m.values().filter(|&&c| self.is_dir(c)).count() as u64,
                size: 0,
            },
            Kind::File(d) => Stat {
                ino: n as u64 + 1,
                mode: S_IFREG | 0o644,
                nlink: node.linked as u64,
                size: d.bytes().len() as u64,
            },
        }
    }

    fn is_dir(&self, n: usize) -> bool {
        matches!(self.node(n).kind, Kind::Dir(_))
    }

    fn fd(&self, fd: i32) -> Result<Open> {
        let i = fd.checked_sub(FD_FIRST).ok_or(EBADF)?;
        usize::try_from(i)
            .ok()
            .and_then(|i| self.open.get(i).copied().flatten())
            .ok_or(EBADF)
    }

    fn set_fd(&mut self, fd: i32, o: Open) {
        self.open[(fd - FD_FIRST) as usize] = Some(o);
    }

    /// `open(path, flags, mode)`: a new file descriptor.
    pub fn open(&mut self, path: &[u8], flags: i32, _mode: i32) -> Result<i32> {
        let acc = flags & 0b11;
        let (read, write) = match acc {
            0 => (true, false),
            O_WRONLY => (false, true),
            O_RDWR => (true, true),
            _ => return Err(EINVAL),
        };
        let n = match self.lookup(path) {
            Ok(_) if flags & O_CREAT != 0 && flags & O_EXCL != 0 => return Err(EEXIST),
            Ok(n) => n,
            Err(ENOENT) if flags & O_CREAT != 0 => {
                let (dir, name) = self.lookup_parent(path)?;
                let name = name.ok_or(EISDIR)?;
                if flags & O_DIRECTORY != 0 {
                    return Err(EINVAL);
                }
                self.reserve_fd()?;
                self.insert(dir, name, Kind::File(Data::Ram(Vec::new())))?
            }
            Err(e) => return Err(e),
        };
        let dir = self.is_dir(n);
        if dir && write {
            return Err(EISDIR);
        }
        if !dir && flags & O_DIRECTORY != 0 {
            return Err(ENOTDIR);
        }
        let slot = self.reserve_fd()?;
        if flags & O_TRUNC != 0 && write {
            if let Kind::File(d) = &mut self.node_mut(n).kind {
                *d = Data::Ram(Vec::new());
            }
        }
        self.node_mut(n).opens += 1;
        self.open[slot] = Some(Open {
            node: n,
            pos: 0,
            read,
            write,
            append: flags & O_APPEND != 0,
        });
        Ok(slot as i32 + FD_FIRST)
    }

    /// A free slot in the open-file table (grown on demand up to [`OPEN_MAX`]).
    fn reserve_fd(&mut self) -> Result<usize> {
        if let Some(i) = self.open.iter().position(Option::is_none) {
            return Ok(i);
        }
        if self.open.len() >= OPEN_MAX {
            return Err(EMFILE);
        }
        self.open.try_reserve(1).map_err(|_| ENOSPC)?;
        self.open.push(None);
        Ok(self.open.len() - 1)
    }

    pub fn close(&mut self, fd: i32) -> Result<()> {
        let o = self.fd(fd)?;
        self.open[(fd - FD_FIRST) as usize] = None;
        let node = self.node_mut(o.node);
        node.opens -= 1;
        if !node.linked && node.opens == 0 {
            self.nodes[o.node] = None;
        }
        Ok(())
    }

    pub fn read(&mut self, fd: i32, buf: &mut [u8]) -> Result<usize> {
        let mut o = self.fd(fd)?;
        if !o.read {
            return Err(EBADF);
        }
        let Kind::File(d) = &self.node(o.node).kind else {
            return Err(EISDIR);
        };
        let b = d.bytes();
        let at = usize::try_from(o.pos).unwrap_or(usize::MAX).min(b.len());
        let n = buf.len().min(b.len() - at);
        buf[..n].copy_from_slice(&b[at..at + n]);
        o.pos += n as u64;
        self.set_fd(fd, o);
        Ok(n)
    }

    pub fn write(&mut self, fd: i32, buf: &[u8]) -> Result<usize> {
        let mut o = self.fd(fd)?;
        if !o.write {
            return Err(EBADF);
        }
        let Kind::File(d) = &mut self.node_mut(o.node).kind else {
            return Err(EISDIR);
        };
        let v = d.ram()?;
        let at = if o.append { v.len() as u64 } else { o.pos };
        let at = usize::try_from(at).map_err(|_| ENOSPC)?;
        let end = at.checked_add(buf.len()).ok_or(ENOSPC)?;
        if end > v.len() {
            v.try_reserve(end - v.len()).map_err(|_| ENOSPC)?;
            v.resize(end, 0); // a write past the end fills the gap with zeros
        }
        v[at..end].copy_from_slice(buf);
        o.pos = end as u64;
        self.set_fd(fd, o);
        Ok(buf.len())
    }

    /// `lseek(fd, offset, whence)`: the new position (`EINVAL` below 0 or for an unknown `whence`).
    pub fn lseek(&mut self, fd: i32, offset: i64, whence: i32) -> Result<u64> {
        let mut o = self.fd(fd)?;
        let base = match whence {
            SEEK_SET => 0,
            SEEK_CUR => o.pos as i64,
            SEEK_END => self.stat_of(o.node).size as i64,
            _ => return Err(EINVAL),
        };
        let pos = base.checked_add(offset).filter(|p| *p >= 0).ok_or(EINVAL)?;
        o.pos = pos as u64;
        self.set_fd(fd, o);
        Ok(o.pos)
    }

    pub fn fstat(&self, fd: i32) -> Result<Stat> {
        Ok(self.stat_of(self.fd(fd)?.node))
    }

    /// `stat` and `lstat` (there are no symbolic links).
    pub fn stat(&self, path: &[u8]) -> Result<Stat> {
        Ok(self.stat_of(self.lookup(path)?))
    }

    pub fn mkdir(&mut self, path: &[u8], _mode: u32) -> Result<()> {
        let (dir, name) = self.lookup_parent(path)?;
        let name = name.ok_or(EEXIST)?;
        if self.child(dir, name)?.is_some() {
            return Err(EEXIST);
        }
        self.insert(dir, name, Kind::Dir(BTreeMap::new()))?;
        Ok(())
    }

    /// Removes the entry `path` if `want_dir` matches what it is.
    fn remove(&mut self, path: &[u8], want_dir: bool) -> Result<()> {
        let (dir, name) = self.lookup_parent(path)?;
        let Some(name) = name else {
            return Err(if want_dir { EBUSY } else { EISDIR });
        };
        let n = self.child(dir, name)?.ok_or(ENOENT)?;
        match (&self.node(n).kind, want_dir) {
            (Kind::Dir(m), true) if !m.is_empty() => return Err(ENOTEMPTY),
            (Kind::Dir(_), false) => return Err(EISDIR),
            (Kind::File(_), true) => return Err(ENOTDIR),
            _ => {}
        }
        if let Kind::Dir(m) = &mut self.node_mut(dir).kind {
            m.remove(name);
        }
        let node = self.node_mut(n);
        node.linked = false;
        if node.opens == 0 {
            self.nodes[n] = None;
        }
        Ok(())
    }

    pub fn rmdir(&mut self, path: &[u8]) -> Result<()> {
        self.remove(path, true)
    }

    pub fn unlink(&mut self, path: &[u8]) -> Result<()> {
        self.remove(path, false)
    }

    /// `getdents64(fd, buf)`: every entry not yet returned, as `dirent64` records (8-byte aligned
    /// records: inode, offset of the next, record length, type, NUL-terminated name); 0 at the end;
    /// `EINVAL` when they do not all fit (see the module doc).
    pub fn getdents64(&mut self, fd: i32, buf: &mut [u8]) -> Result<usize> {
        let mut o = self.fd(fd)?;
        let Kind::Dir(m) = &self.node(o.node).kind else {
            return Err(ENOTDIR);
        };
        let skip = usize::try_from(o.pos).unwrap_or(usize::MAX);
        let need: usize = m.keys().skip(skip).map(|k| reclen(k.len())).sum();
        if need > buf.len() {
            return Err(EINVAL);
        }
        let mut at = 0;
        let mut idx = skip;
        for (name, &child) in m.iter().skip(skip) {
            let len = reclen(name.len());
            idx += 1;
            let r = &mut buf[at..at + len];
            r.fill(0);
            r[0..8].copy_from_slice(&(child as u64 + 1).to_le_bytes());
            r[8..16].copy_from_slice(&(idx as i64).to_le_bytes());
            r[16..18].copy_from_slice(&(len as u16).to_le_bytes());
            r[18] = if self.is_dir(child) { DT_DIR } else { DT_REG };
            r[DIRENT_NAME_AT..DIRENT_NAME_AT + name.len()].copy_from_slice(name);
            at += len;
        }
        o.pos = idx as u64;
        self.set_fd(fd, o);
        Ok(at)
    }
}

/// A `dirent64` record's length for a name of `n` bytes (with its NUL), 8-byte aligned.
fn reclen(n: usize) -> usize {
    (DIRENT_NAME_AT + n + 1).next_multiple_of(8)
}

/// The components of `path` after `.` and `..` (`..` of `/` is `/`); relative paths start at `/`.
fn components(path: &[u8]) -> Result<Vec<&[u8]>> {
    if path.is_empty() {
        return Err(ENOENT);
    }
    if path.len() > PATH_MAX {
        return Err(ENAMETOOLONG);
    }
    let mut v: Vec<&[u8]> = Vec::new();
    for c in path.split(|&b| b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => {
                v.pop();
            }
            c if c.len() > NAME_MAX => return Err(ENAMETOOLONG),
            c => {
                v.try_reserve(1).map_err(|_| ENOSPC)?;
                v.push(c)
            }
        }
    }
    Ok(v)
}

/// The one file system of a `std` payload, behind a lock (the runtime's threads are cooperative and
/// no call here blocks, so the lock is never held across a thread switch).
#[cfg(target_os = "hermit")]
pub(crate) static FS: spin::Mutex<Option<Fs<'static>>> = spin::Mutex::new(None);

/// Runs `f` on the file system (made empty on first use when the image has no files).
#[cfg(target_os = "hermit")]
pub(crate) fn with<T>(f: impl FnOnce(&mut Fs<'static>) -> Result<T>) -> Result<T> {
    let mut g = FS.lock();
    f(g.get_or_insert_with(Fs::new))
}

/// Loads the build-time archive (the runtime's start calls this with its archive segment's bytes).
#[cfg(target_os = "hermit")]
pub(crate) fn init(archive: &'static [u8]) {
    let fs = libvmm_abi::files::Archive::parse(archive)
        .map_err(|e| e.describe())
        .and_then(|a| Fs::from_archive(&a).map_err(|_| "file archive: out of memory"));
    match fs {
        Ok(fs) => *FS.lock() = Some(fs),
        Err(e) => crate::println!("payload: {e}; starting with an empty file system"),
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use hermit_abi::O_RDONLY;
    use std::string::String;

    fn names(fs: &mut Fs<'_>, dir: &str) -> Vec<(String, u8)> {
        let fd = fs.open(dir.as_bytes(), O_RDONLY | O_DIRECTORY, 0).unwrap();
        let mut buf = [0u8; 4096];
        let n = fs.getdents64(fd, &mut buf).unwrap();
        assert_eq!(fs.getdents64(fd, &mut buf), Ok(0));
        fs.close(fd).unwrap();
        let mut out = Vec::new();
        let mut at = 0;
        while at < n {
            let len = u16::from_le_bytes([buf[at + 16], buf[at + 17]]) as usize;
            assert_eq!(len % 8, 0);
            let name = &buf[at + DIRENT_NAME_AT..at + len];
            let name = &name[..name.iter().position(|&b| b == 0).unwrap()];
            out.push((String::from_utf8(name.to_vec()).unwrap(), buf[at + 18]));
            at += len;
        }
        out
    }

    fn image() -> Fs<'static> {
        let mut fs = Fs::new();
        fs.add_image_file(b"/etc/motd", b"hello from the image\n")
            .unwrap();
        fs.add_image_file(b"/data/a/b.bin", &[1, 2, 3]).unwrap();
        fs
    }

    #[test]
    fn build_time_files_are_readable_and_their_directories_exist() {
        let mut fs = image();
        let fd = fs.open(b"/etc/motd", O_RDONLY, 0).unwrap();
        assert_eq!(fd, FD_FIRST);
        let mut buf = [0u8; 8];
        assert_eq!(fs.read(fd, &mut buf), Ok(8));
        assert_eq!(&buf, b"hello fr");
        assert_eq!(fs.fstat(fd).unwrap().size, 21);
        assert_eq!(fs.lseek(fd, -2, SEEK_END), Ok(19));
        assert_eq!(fs.read(fd, &mut buf), Ok(2));
        assert_eq!(fs.read(fd, &mut buf), Ok(0));
        assert_eq!(fs.write(fd, b"x"), Err(EBADF));
        fs.close(fd).unwrap();
        assert_eq!(fs.close(fd), Err(EBADF));
        assert_eq!(fs.stat(b"/data/a").unwrap().mode, S_IFDIR | 0o755);
        assert_eq!(fs.stat(b"data/./a/../a/b.bin").unwrap().size, 3);
        assert_eq!(
            names(&mut fs, "/"),
            [("data".into(), DT_DIR), ("etc".into(), DT_DIR)]
        );
    }

    #[test]
    fn tmpfs_round_trip() {
        let mut fs = image();
        fs.mkdir(b"/scratch", 0o777).unwrap();
        assert_eq!(fs.mkdir(b"/scratch", 0o777), Err(EEXIST));
        let fd = fs
            .open(b"/scratch/f.txt", O_WRONLY | O_CREAT | O_TRUNC, 0o644)
            .unwrap();
        assert_eq!(fs.write(fd, b"abc"), Ok(3));
        assert_eq!(fs.lseek(fd, 5, SEEK_SET), Ok(5));
        assert_eq!(fs.write(fd, b"z"), Ok(1));
        fs.close(fd).unwrap();
        let fd = fs.open(b"/scratch/f.txt", O_RDWR | O_APPEND, 0).unwrap();
        assert_eq!(fs.write(fd, b"!"), Ok(1));
        assert_eq!(fs.lseek(fd, 0, SEEK_SET), Ok(0));
        let mut buf = [0xffu8; 16];
        assert_eq!(fs.read(fd, &mut buf), Ok(7));
        assert_eq!(&buf[..7], b"abc\0\0z!");
        fs.close(fd).unwrap();
        assert_eq!(names(&mut fs, "/scratch"), [("f.txt".into(), DT_REG)]);
        assert_eq!(fs.rmdir(b"/scratch"), Err(ENOTEMPTY));
        assert_eq!(fs.unlink(b"/scratch"), Err(EISDIR));
        assert_eq!(fs.rmdir(b"/scratch/f.txt"), Err(ENOTDIR));
        fs.unlink(b"/scratch/f.txt").unwrap();
        assert_eq!(fs.stat(b"/scratch/f.txt"), Err(ENOENT));
        fs.rmdir(b"/scratch").unwrap();
        assert_eq!(fs.stat(b"/scratch"), Err(ENOENT));
        assert_eq!(fs.rmdir(b"/"), Err(EBUSY));
    }

    #[test]
    fn writing_a_build_time_file_copies_it_first() {
        let mut fs = image();
        let fd = fs.open(b"/etc/motd", O_WRONLY, 0).unwrap();
        assert_eq!(fs.write(fd, b"HELLO"), Ok(5));
        fs.close(fd).unwrap();
        let fd = fs.open(b"/etc/motd", O_RDONLY, 0).unwrap();
        let mut buf = [0u8; 64];
        let n = fs.read(fd, &mut buf).unwrap();
        assert_eq!(&buf[..n], b"HELLO from the image\n");
    }

    #[test]
    fn errors_are_linux_errnos_never_panics() {
        let mut fs = image();
        assert_eq!(fs.open(b"/nope", O_RDONLY, 0), Err(ENOENT));
        assert_eq!(fs.open(b"", O_RDONLY, 0), Err(ENOENT));
        assert_eq!(fs.open(b"/etc/motd/x", O_RDONLY, 0), Err(ENOTDIR));
        assert_eq!(
            fs.open(b"/etc/motd", O_RDONLY | O_DIRECTORY, 0),
            Err(ENOTDIR)
        );
        assert_eq!(fs.open(b"/etc", O_WRONLY, 0), Err(EISDIR));
        assert_eq!(
            fs.open(b"/etc/motd", O_CREAT | O_EXCL | O_WRONLY, 0),
            Err(EEXIST)
        );
        assert_eq!(fs.open(b"/etc/motd", 3, 0), Err(EINVAL));
        assert_eq!(fs.open(b"/x/y", O_CREAT | O_WRONLY, 0), Err(ENOENT));
        let long = [b'a'; 256];
        assert_eq!(fs.stat(&long), Err(ENAMETOOLONG));
        assert_eq!(fs.stat(&[b'/'; PATH_MAX + 1]), Err(ENAMETOOLONG));
        assert_eq!(fs.read(99, &mut [0; 4]), Err(EBADF));
        assert_eq!(fs.read(-1, &mut [0; 4]), Err(EBADF));
        assert_eq!(fs.write(i32::MAX, b"x"), Err(EBADF));
        let fd = fs.open(b"/etc", O_RDONLY, 0).unwrap();
        assert_eq!(fs.read(fd, &mut [0; 4]), Err(EISDIR));
        assert_eq!(fs.getdents64(fd, &mut [0; 8]), Err(EINVAL));
        assert_eq!(fs.lseek(fd, -1, SEEK_SET), Err(EINVAL));
        assert_eq!(fs.lseek(fd, 0, 7), Err(EINVAL));
        assert_eq!(fs.lseek(fd, i64::MAX, SEEK_SET), Ok(i64::MAX as u64));
        assert_eq!(fs.lseek(fd, 1, SEEK_CUR), Err(EINVAL));
        let f = fs.open(b"/etc/motd", O_RDONLY, 0).unwrap();
        assert_eq!(fs.getdents64(f, &mut [0; 64]), Err(ENOTDIR));
        assert_eq!(fs.mkdir(b"/etc/motd/d", 0), Err(ENOTDIR));
        assert_eq!(fs.mkdir(b"/", 0), Err(EEXIST));
        assert_eq!(fs.unlink(b"/"), Err(EISDIR));
        assert_eq!(fs.unlink(b"/etc/none"), Err(ENOENT));
    }

    #[test]
    fn a_removed_file_lives_until_closed_and_descriptors_are_limited() {
        let mut fs = Fs::new();
        let fd = fs.open(b"/f", O_RDWR | O_CREAT, 0).unwrap();
        fs.write(fd, b"data").unwrap();
        fs.unlink(b"/f").unwrap();
        fs.lseek(fd, 0, SEEK_SET).unwrap();
        let mut b = [0u8; 4];
        assert_eq!(fs.read(fd, &mut b), Ok(4));
        assert_eq!(fs.fstat(fd).unwrap().nlink, 0);
        fs.close(fd).unwrap();
        assert_eq!(fs.nodes.iter().flatten().count(), 1);
        for _ in 0..OPEN_MAX {
            fs.open(b"/", O_RDONLY, 0).unwrap();
        }
        assert_eq!(fs.open(b"/", O_RDONLY, 0), Err(EMFILE));
        assert_eq!(fs.open(b"/g", O_RDWR | O_CREAT, 0), Err(EMFILE));
        assert_eq!(fs.stat(b"/g"), Err(ENOENT));
    }

    #[test]
    fn getdents_returns_all_or_einval_then_the_end() {
        let mut fs = Fs::new();
        for i in 0..40 {
            let p = std::format!("/file-number-{i:02}");
            let fd = fs.open(p.as_bytes(), O_WRONLY | O_CREAT, 0).unwrap();
            fs.close(fd).unwrap();
        }
        let fd = fs.open(b"/", O_RDONLY | O_DIRECTORY, 0).unwrap();
        let mut small = [0u8; 512];
        assert_eq!(fs.getdents64(fd, &mut small), Err(EINVAL));
        let mut big = [0u8; 2048];
        assert_eq!(fs.getdents64(fd, &mut big), Ok(40 * 40));
        assert_eq!(fs.getdents64(fd, &mut big), Ok(0));
        assert_eq!(names(&mut fs, "/").len(), 40);
    }

    /// Random call sequences over a few paths and descriptors (a deterministic generator): every call
    /// returns, errors are errnos, and the tree stays consistent (each open descriptor names a live
    /// node; reading a file gives what `fstat` says it holds).
    #[test]
    fn random_call_sequences_never_panic() {
        let paths: [&[u8]; 8] = [
            b"/",
            b"/a",
            b"/a/b",
            b"/a/b/c",
            b"/d",
            b"/d/../a/x",
            b"rel",
            b"/etc/motd",
        ];
        let mut fs = image();
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let mut buf = [0u8; 600];
        for _ in 0..20_000 {
            let r = next();
            let p = paths[(r >> 8) as usize % paths.len()];
            let fd = FD_FIRST + (r >> 16) as i32 % 6 - 1;
            let flags = [
                O_RDONLY,
                O_WRONLY | O_CREAT,
                O_RDWR | O_APPEND,
                O_RDONLY | O_DIRECTORY,
            ][(r >> 24) as usize % 4]
                | if r & (1 << 40) != 0 { O_TRUNC } else { 0 };
            let len = (r >> 32) as usize % buf.len();
            let _ = match r % 10 {
                0 => fs.open(p, flags, 0).map(|_| ()),
                1 => fs.close(fd),
                2 => fs.read(fd, &mut buf[..len]).map(|_| ()),
                3 => fs.write(fd, &buf[..len]).map(|_| ()),
                4 => fs
                    .lseek(fd, (r >> 44) as i64 % 700 - 100, (r >> 50) as i32 % 4)
                    .map(|_| ()),
                5 => fs.getdents64(fd, &mut buf[..len]).map(|_| ()),
                6 => fs.mkdir(p, 0),
                7 => fs.rmdir(p),
                8 => fs.unlink(p),
                _ => fs.stat(p).map(|_| ()),
            };
            for (i, o) in fs.open.iter().enumerate() {
                if let Some(o) = o {
                    assert!(fs.nodes[o.node].is_some(), "fd {} names a freed node", i);
                }
            }
        }
        let fd = fs.open(b"/check", O_RDWR | O_CREAT | O_TRUNC, 0).unwrap();
        fs.write(fd, b"12345").unwrap();
        fs.lseek(fd, 0, SEEK_SET).unwrap();
        assert_eq!(
            fs.read(fd, &mut buf),
            Ok(fs.fstat(fd).unwrap().size as usize)
        );
    }

    #[test]
    fn archives_load_and_conflicts_are_refused() {
        let files: [(&str, &[u8]); 2] = [("/a/x", b"1"), ("/b", b"22")];
        let mut v = std::vec![0u8; libvmm_abi::files::encoded_len(&files)];
        libvmm_abi::files::encode(&files, &mut v).unwrap();
        let v: &'static [u8] = v.leak();
        let a = libvmm_abi::files::Archive::parse(v).unwrap();
        let fs = Fs::from_archive(&a).unwrap();
        assert_eq!(fs.stat(b"/b").unwrap().size, 2);
        let mut fs = Fs::new();
        fs.add_image_file(b"/a", b"").unwrap();
        assert_eq!(fs.add_image_file(b"/a", b""), Err(EEXIST));
        assert_eq!(fs.add_image_file(b"/a/b", b""), Err(ENOTDIR));
        assert_eq!(fs.add_image_file(b"/", b""), Err(EISDIR));
    }
}
