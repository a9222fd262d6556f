//! The `sys_*` symbols hermit-abi declares (`extern "C"` with `link_name = "sys_*"`), exported unmangled
//! so a payload's hermit-abi calls link against this runtime.
//!
//! They live in `arch/` because exporting an unmangled symbol is unsafe code (rustc's `unsafe_code` lint
//! flags every `#[no_mangle]` item: the name could clash with, and silently replace, another symbol), and
//! `sys_clock_gettime` writes through the pointer its C caller passes. Each export only forwards to the
//! safe implementation in `hermit.rs`, which is `#![forbid(unsafe_code)]`.
use hermit_abi::{clockid_t, pid_t, timespec};

use crate::hermit;

#[no_mangle]
pub extern "C" fn sys_write(fd: i32, buf: *const u8, len: usize) -> isize {
    hermit::write(fd, buf, len)
}

#[no_mangle]
pub extern "C" fn sys_read(fd: i32, buf: *mut u8, len: usize) -> isize {
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

    use hermit_abi::errno::{EINVAL, ENOSYS};
    use hermit_abi::{iovec, timespec, Tid};

    use crate::arch::heap;
    use crate::{hermit, sched};

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

    /// Entropy from RDRAND (x86); without a source, -ENOSYS (never a constant).
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
        // The CPUs the VMM gives the payload: std threads run on all of them (`sched`).
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
            let r = hermit::write(fd, v.iov_base as *const u8, v.iov_len);
            if r < 0 {
                return if n > 0 { n } else { r };
            }
            n += r;
        }
        n
    }

    #[no_mangle]
    pub extern "C" fn sys_readv(_fd: i32, _iov: *const iovec, _iovcnt: usize) -> isize {
        0
    }

    #[no_mangle]
    pub extern "C" fn sys_close(fd: i32) -> i32 {
        if (0..=2).contains(&fd) {
            0
        } else {
            -hermit_abi::errno::EBADF
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
}
