//! The `sys_*` symbols hermit-abi declares (`extern "C"` with `link_name = "sys_*"`), exported unmangled
//! so a payload's hermit-abi calls link against this runtime.
//!
//! They live in `arch/` because exporting an unmangled symbol is unsafe code (rustc's `unsafe_code` lint
//! flags every `#[no_mangle]` item: the name could clash with, and silently replace, another symbol), and
//! `sys_clock_gettime` writes through the pointer its C caller passes. Each export only forwards to the
//! safe implementation in `hermit.rs`, which is `#![forbid(unsafe_code)]`.
use hermit_abi::{clockid_t, pid_t, timespec};

use crate::hermit;

/// Files 0..=2 are the console (`hermit.rs`); on the hermit targets higher ones are the file system's.
#[no_mangle]
pub extern "C" fn sys_write(fd: i32, buf: *const u8, len: usize) -> isize {
    #[cfg(target_os = "hermit")]
    if fd >= crate::fs::FD_FIRST {
        return std_exports::file_io(fd, buf as *mut u8, len, false);
    }
    hermit::write(fd, buf, len)
}

#[no_mangle]
pub extern "C" fn sys_read(fd: i32, buf: *mut u8, len: usize) -> isize {
    #[cfg(target_os = "hermit")]
    if fd >= crate::fs::FD_FIRST {
        return std_exports::file_io(fd, buf, len, true);
    }
    hermit::read(fd, buf, len)
}

#[no_mangle]
pub extern "C" fn sys_exit(status: i32) -> ! {
    hermit::exit(status)
}

#[no_mangle]
pub extern "C" fn sys_abort() -> ! {
    hermit::abort()
}

#[no_mangle]
pub extern "C" fn sys_getpid() -> pid_t {
    hermit::getpid()
}

/// # Safety
/// `tp` must be null or valid for a write of a `timespec`, as hermit-abi requires.
#[no_mangle]
pub unsafe extern "C" fn sys_clock_gettime(clock: clockid_t, tp: *mut timespec) -> i32 {
    if tp.is_null() {
        return hermit::EINVAL;
    }
    match hermit::clock_gettime(clock) {
        Ok(t) => {
            // SAFETY: checked non-null; validity for a write is the caller's contract (above).
            unsafe { tp.write(t) };
            0
        }
        Err(e) => e,
    }
}

#[no_mangle]
pub extern "C" fn sys_usleep(usecs: u64) {
    #[cfg(target_os = "hermit")]
    crate::sched::usleep(usecs);
    #[cfg(not(target_os = "hermit"))]
    hermit::usleep(usecs)
}

/// The hermit-abi functions Rust `std` calls beyond the ones above (hermit targets only).
#[cfg(target_os = "hermit")]
mod std_exports {
    use core::sync::atomic::{AtomicI32, AtomicU32, Ordering};

    use core::ffi::{c_char, CStr};

    use hermit_abi::errno::{EINVAL, ENOSYS};
    use hermit_abi::{dirent64, iovec, stat, timespec, Tid};

    use super::{sys_read, sys_write};
    use crate::arch::heap;
    use crate::{fs, sched};

    static ERRNO: AtomicI32 = AtomicI32::new(0);

    #[no_mangle]
    pub extern "C" fn sys_malloc(size: usize, align: usize) -> *mut u8 {
        heap::alloc(size, align)
    }

    #[no_mangle]
    pub extern "C" fn sys_alloc(size: usize, align: usize) -> *mut u8 {
        heap::alloc(size, align)
    }

    #[no_mangle]
    pub extern "C" fn sys_alloc_zeroed(size: usize, align: usize) -> *mut u8 {
        let p = heap::alloc(size, align);
        if !p.is_null() {
            // SAFETY: a fresh block of `size` bytes.
            unsafe { core::ptr::write_bytes(p, 0, size) };
        }
        p
    }

    #[no_mangle]
    pub extern "C" fn sys_realloc(
        ptr: *mut u8,
        size: usize,
        align: usize,
        new_size: usize,
    ) -> *mut u8 {
        heap::realloc(ptr, size, align, new_size)
    }

    #[no_mangle]
    pub extern "C" fn sys_free(ptr: *mut u8, size: usize, align: usize) {
        heap::free(ptr, size, align)
    }

    #[no_mangle]
    pub extern "C" fn sys_dealloc(ptr: *mut u8, size: usize, align: usize) {
        heap::free(ptr, size, align)
    }

    #[no_mangle]
    pub extern "C" fn sys_get_errno() -> i32 {
        ERRNO.load(Ordering::Relaxed)
    }

    #[no_mangle]
    pub extern "C" fn sys_errno() -> i32 {
        ERRNO.load(Ordering::Relaxed)
    }

    /// Entropy: RDRAND (x86); RISC-V the Zkr `seed` CSR, else the VMM's entropy hypercall; without any
    /// source, -ENOSYS (never a constant).
    #[no_mangle]
    pub extern "C" fn sys_read_entropy(buf: *mut u8, len: usize, _flags: u32) -> isize {
        if buf.is_null() {
            return -(EINVAL as isize);
        }
        // SAFETY: std passes a buffer valid for `len` bytes of writes.
        let b = unsafe { core::slice::from_raw_parts_mut(buf, len) };
        if crate::arch::hw_random(b) {
            len as isize
        } else {
            -(ENOSYS as isize)
        }
    }

    #[no_mangle]
    pub extern "C" fn sys_available_parallelism() -> usize {
        // The CPUs the VMM gives the payload (std threads themselves stay cooperative on CPU 0).
        crate::smp::cpu_count()
    }

    #[no_mangle]
    pub extern "C" fn sys_spawn2(
        func: extern "C" fn(usize),
        arg: usize,
        _prio: u8,
        stack_size: usize,
        _core_id: isize,
    ) -> Tid {
        sched::spawn(func, arg, stack_size) as Tid
    }

    #[no_mangle]
    pub extern "C" fn sys_spawn(
        id: *mut Tid,
        func: extern "C" fn(usize),
        arg: usize,
        prio: u8,
        core_id: isize,
    ) -> i32 {
        let t = sys_spawn2(func, arg, prio, 1 << 20, core_id);
        if !id.is_null() {
            // SAFETY: the caller passes null or a writable Tid.
            unsafe { id.write(t) };
        }
        if t == 0 {
            -hermit_abi::errno::ENOMEM
        } else {
            0
        }
    }

    #[no_mangle]
    pub extern "C" fn sys_join(tid: Tid) -> i32 {
        sched::join(tid)
    }

    #[no_mangle]
    pub extern "C" fn sys_yield() {
        sched::yield_now()
    }

    #[no_mangle]
    pub extern "C" fn sys_getprio(_id: *const Tid) -> i32 {
        let p: u8 = hermit_abi::NORMAL_PRIO.into();
        p as i32
    }

    /// # Safety
    /// `address` must point at a live 32-bit futex word and `timeout` be null or a valid timespec.
    #[no_mangle]
    pub unsafe extern "C" fn sys_futex_wait(
        address: *mut u32,
        expected: u32,
        timeout: *const timespec,
        flags: u32,
    ) -> i32 {
        if address.is_null() {
            return -EINVAL;
        }
        // SAFETY: the caller's contract: a live, aligned futex word (std passes an `AtomicU32`).
        let word = unsafe { AtomicU32::from_ptr(address) };
        let deadline = if timeout.is_null() {
            None
        } else {
            // SAFETY: non-null and valid by the caller's contract.
            let t = unsafe { timeout.read() };
            match sched::deadline(
                t.tv_sec,
                t.tv_nsec,
                flags & hermit_abi::FUTEX_RELATIVE_TIMEOUT != 0,
            ) {
                Ok(d) => Some(d),
                Err(e) => return e,
            }
        };
        sched::futex_wait(word, expected, deadline)
    }

    /// # Safety
    /// `address` must point at a live 32-bit futex word.
    #[no_mangle]
    pub unsafe extern "C" fn sys_futex_wake(address: *mut u32, count: i32) -> i32 {
        if address.is_null() {
            return -EINVAL;
        }
        // SAFETY: as in `sys_futex_wait`.
        sched::futex_wake(unsafe { AtomicU32::from_ptr(address) }, count)
    }

    /// # Safety
    /// `iov` must point at `iovcnt` valid iovecs.
    #[no_mangle]
    pub unsafe extern "C" fn sys_writev(fd: i32, iov: *const iovec, iovcnt: usize) -> isize {
        let mut n = 0isize;
        for i in 0..iovcnt {
            // SAFETY: the caller's contract.
            let v = unsafe { iov.add(i).read() };
            let r = sys_write(fd, v.iov_base as *const u8, v.iov_len);
            if r < 0 {
                return if n > 0 { n } else { r };
            }
            n += r;
        }
        n
    }

    /// # Safety
    /// `iov` must point at `iovcnt` valid iovecs, each a writable buffer.
    #[no_mangle]
    pub unsafe extern "C" fn sys_readv(fd: i32, iov: *const iovec, iovcnt: usize) -> isize {
        let mut n = 0isize;
        for i in 0..iovcnt {
            // SAFETY: the caller's contract.
            let v = unsafe { iov.add(i).read() };
            let r = sys_read(fd, v.iov_base as *mut u8, v.iov_len);
            if r < 0 {
                return if n > 0 { n } else { r };
            }
            n += r;
            if (r as usize) < v.iov_len {
                break;
            }
        }
        n
    }

    #[no_mangle]
    pub extern "C" fn sys_close(fd: i32) -> i32 {
        if (0..=2).contains(&fd) {
            0
        } else {
            errno(fs::with(|f| f.close(fd)).map(|()| 0))
        }
    }

    // Files: the in-memory file system (`crate::fs`). Each export turns the C arguments into slices
    // and returns the result, or the negated errno, as std's `cvt` expects.

    /// The bytes of a NUL-terminated path (without the NUL), or `None` for a null pointer.
    ///
    /// # Safety
    /// `p` must be null or a NUL-terminated string that stays valid during the call.
    unsafe fn path<'a>(p: *const c_char) -> Option<&'a [u8]> {
        // SAFETY: the caller's contract.
        (!p.is_null()).then(|| unsafe { CStr::from_ptr(p) }.to_bytes())
    }

    /// `read` (into `buf`) or `write` (from it) on a file-system descriptor.
    pub(super) fn file_io(fd: i32, buf: *mut u8, len: usize, read: bool) -> isize {
        if buf.is_null() && len != 0 {
            return -(EINVAL as isize);
        }
        let r = if len == 0 {
            fs::with(|f| {
                if read {
                    f.read(fd, &mut [])
                } else {
                    f.write(fd, &[])
                }
            })
        } else if read {
            // SAFETY: hermit-abi's contract for read: `len` writable bytes at `buf`.
            let b = unsafe { core::slice::from_raw_parts_mut(buf, len) };
            fs::with(|f| f.read(fd, b))
        } else {
            // SAFETY: hermit-abi's contract for write: `len` readable bytes at `buf`.
            let b = unsafe { core::slice::from_raw_parts(buf as *const u8, len) };
            fs::with(|f| f.write(fd, b))
        };
        match r {
            Ok(n) => n as isize,
            Err(e) => -(e as isize),
        }
    }

    fn errno<T: Into<i64>>(r: fs::Result<T>) -> i32 {
        match r {
            Ok(v) => v.into() as i32,
            Err(e) => -e,
        }
    }

    /// # Safety
    /// `name` must be null or a NUL-terminated string.
    #[no_mangle]
    pub unsafe extern "C" fn sys_open(name: *const c_char, flags: i32, mode: i32) -> i32 {
        // SAFETY: the caller's contract.
        let Some(p) = (unsafe { path(name) }) else {
            return -EINVAL;
        };
        errno(fs::with(|f| f.open(p, flags, mode)))
    }

    /// # Safety
    /// `name` must be null or a NUL-terminated string.
    #[no_mangle]
    pub unsafe extern "C" fn sys_unlink(name: *const c_char) -> i32 {
        // SAFETY: the caller's contract.
        let Some(p) = (unsafe { path(name) }) else {
            return -EINVAL;
        };
        errno(fs::with(|f| f.unlink(p)).map(|()| 0))
    }

    /// # Safety
    /// `name` must be null or a NUL-terminated string.
    #[no_mangle]
    pub unsafe extern "C" fn sys_rmdir(name: *const c_char) -> i32 {
        // SAFETY: the caller's contract.
        let Some(p) = (unsafe { path(name) }) else {
            return -EINVAL;
        };
        errno(fs::with(|f| f.rmdir(p)).map(|()| 0))
    }

    /// # Safety
    /// `name` must be null or a NUL-terminated string.
    #[no_mangle]
    pub unsafe extern "C" fn sys_mkdir(name: *const c_char, mode: u32) -> i32 {
        // SAFETY: the caller's contract.
        let Some(p) = (unsafe { path(name) }) else {
            return -EINVAL;
        };
        errno(fs::with(|f| f.mkdir(p, mode)).map(|()| 0))
    }

    /// Writes `s` through `out` (null: `EINVAL`).
    ///
    /// # Safety
    /// `out` must be null or valid for a write of a `stat`.
    unsafe fn put_stat(r: fs::Result<fs::Stat>, out: *mut stat) -> i32 {
        match r {
            Ok(s) if !out.is_null() => {
                // SAFETY: non-null; validity is the caller's contract.
                unsafe { out.write(s.to_hermit()) };
                0
            }
            Ok(_) => -EINVAL,
            Err(e) => -e,
        }
    }

    /// # Safety
    /// `name` must be null or a NUL-terminated string, `st` null or valid for a write of a `stat`.
    #[no_mangle]
    pub unsafe extern "C" fn sys_stat(name: *const c_char, st: *mut stat) -> i32 {
        // SAFETY: the caller's contract.
        let Some(p) = (unsafe { path(name) }) else {
            return -EINVAL;
        };
        // SAFETY: the caller's contract.
        unsafe { put_stat(fs::with(|f| f.stat(p)), st) }
    }

    /// There are no symbolic links: `lstat` is `stat`.
    ///
    /// # Safety
    /// As [`sys_stat`].
    #[no_mangle]
    pub unsafe extern "C" fn sys_lstat(name: *const c_char, st: *mut stat) -> i32 {
        // SAFETY: the caller's contract.
        unsafe { sys_stat(name, st) }
    }

    /// # Safety
    /// `st` must be null or valid for a write of a `stat`.
    #[no_mangle]
    pub unsafe extern "C" fn sys_fstat(fd: i32, st: *mut stat) -> i32 {
        let r = if (0..=2).contains(&fd) {
            // stdio: a character device.
            Ok(fs::Stat {
                ino: 0,
                mode: hermit_abi::S_IFCHR | 0o620,
                nlink: 1,
                size: 0,
            })
        } else {
            fs::with(|f| f.fstat(fd))
        };
        // SAFETY: the caller's contract.
        unsafe { put_stat(r, st) }
    }

    #[no_mangle]
    pub extern "C" fn sys_lseek(fd: i32, offset: isize, whence: i32) -> isize {
        if (0..=2).contains(&fd) {
            return -(hermit_abi::errno::ESPIPE as isize);
        }
        match fs::with(|f| f.lseek(fd, offset as i64, whence)) {
            Ok(p) => isize::try_from(p).unwrap_or(-(hermit_abi::errno::EOVERFLOW as isize)),
            Err(e) => -(e as isize),
        }
    }

    /// # Safety
    /// `dirp` must be null or valid for writes of `count` bytes.
    #[no_mangle]
    pub unsafe extern "C" fn sys_getdents64(fd: i32, dirp: *mut dirent64, count: usize) -> i64 {
        if dirp.is_null() {
            return -(EINVAL as i64);
        }
        // SAFETY: the caller's contract: `count` writable bytes at `dirp` (std passes a Vec's buffer).
        let buf = unsafe { core::slice::from_raw_parts_mut(dirp as *mut u8, count) };
        match fs::with(|f| f.getdents64(fd, buf)) {
            Ok(n) => n as i64,
            Err(e) => -(e as i64),
        }
    }

    // Networking: there is no network device. Every socket call answers -ENOSYS ("function not
    // implemented"); std reports it as an io::Error with that raw OS error.
    #[no_mangle]
    pub extern "C" fn sys_socket(_domain: i32, _ty: i32, _protocol: i32) -> i32 {
        -ENOSYS
    }

    #[no_mangle]
    pub extern "C" fn sys_connect(_s: i32, _name: usize, _len: u32) -> i32 {
        -ENOSYS
    }

    #[no_mangle]
    pub extern "C" fn sys_getsockname(_s: i32, _name: usize, _len: usize) -> i32 {
        -ENOSYS
    }

    #[no_mangle]
    pub extern "C" fn sys_getpeername(_s: i32, _name: usize, _len: usize) -> i32 {
        -ENOSYS
    }

    #[no_mangle]
    pub extern "C" fn sys_getaddrinfo(
        _node: usize,
        _service: usize,
        _hints: usize,
        _res: usize,
    ) -> i32 {
        -ENOSYS
    }

    #[no_mangle]
    pub extern "C" fn sys_freeaddrinfo(_ai: usize) {}

    // The rest of the socket calls std's net code makes (listening, sending, receiving, options,
    // polling) and the descriptor calls the runtime does not offer (`dup`, `fcntl`, `ioctl`): -ENOSYS,
    // so a program that uses them gets an error, not a link failure.
    #[no_mangle]
    pub extern "C" fn sys_accept(_s: i32, _addr: usize, _len: usize) -> i32 {
        -ENOSYS
    }

    #[no_mangle]
    pub extern "C" fn sys_bind(_s: i32, _name: usize, _len: u32) -> i32 {
        -ENOSYS
    }

    #[no_mangle]
    pub extern "C" fn sys_listen(_s: i32, _backlog: i32) -> i32 {
        -ENOSYS
    }

    #[no_mangle]
    pub extern "C" fn sys_recv(_s: i32, _buf: usize, _len: usize, _flags: i32) -> isize {
        -(ENOSYS as isize)
    }

    #[no_mangle]
    pub extern "C" fn sys_recvfrom(
        _s: i32,
        _buf: usize,
        _len: usize,
        _flags: i32,
        _addr: usize,
        _addrlen: usize,
    ) -> isize {
        -(ENOSYS as isize)
    }

    #[no_mangle]
    pub extern "C" fn sys_send(_s: i32, _buf: usize, _len: usize, _flags: i32) -> isize {
        -(ENOSYS as isize)
    }

    #[no_mangle]
    pub extern "C" fn sys_sendto(
        _s: i32,
        _buf: usize,
        _len: usize,
        _flags: i32,
        _addr: usize,
        _addrlen: u32,
    ) -> isize {
        -(ENOSYS as isize)
    }

    #[no_mangle]
    pub extern "C" fn sys_shutdown(_s: i32, _how: i32) -> i32 {
        -ENOSYS
    }

    #[no_mangle]
    pub extern "C" fn sys_setsockopt(
        _s: i32,
        _level: i32,
        _name: i32,
        _val: usize,
        _len: u32,
    ) -> i32 {
        -ENOSYS
    }

    #[no_mangle]
    pub extern "C" fn sys_getsockopt(
        _s: i32,
        _level: i32,
        _name: i32,
        _val: usize,
        _len: usize,
    ) -> i32 {
        -ENOSYS
    }

    #[no_mangle]
    pub extern "C" fn sys_poll(_fds: usize, _nfds: usize, _timeout: i32) -> i32 {
        -ENOSYS
    }

    #[no_mangle]
    pub extern "C" fn sys_ioctl(_s: i32, _cmd: i32, _argp: usize) -> i32 {
        -ENOSYS
    }

    #[no_mangle]
    pub extern "C" fn sys_dup(_fd: i32) -> i32 {
        -ENOSYS
    }

    #[no_mangle]
    pub extern "C" fn sys_fcntl(_fd: i32, _cmd: i32, _arg: i32) -> i32 {
        -ENOSYS
    }
}
