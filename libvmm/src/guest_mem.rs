//! Guest memory: the one checked way from a guest-physical range to host bytes.
//!
//! Every address that comes from the guest (hypercall pointers, lengths, instruction fetches) goes through
//! a checked range: either it lies wholly inside the payload's window or the call fails; overflowing
//! `gpa + len` is an error, not a wrap. No handler ever forms a pointer from a guest register. The
//! window's host bytes come from `arch` once, at boot.
//!
//! **Shared by every vCPU.** With guest SMP each physical CPU runs one vCPU with its own `Vm`, and every
//! one of them (and the guest itself, on every CPU) reaches the same RAM at the same time. A
//! `&mut [u8]` held by several CPUs at once would be aliasing UB, so [`GuestMemory`] is a small `Copy`
//! handle over the bytes as `AtomicU8` (`arch::share_bytes`), and all access is by copy: `read` into a
//! VMM buffer, `write` from one and `fill` (bulk copies in `arch`, see `arch::copy_to_guest` and
//! `arch::copy_from_guest`: byte stores made the boot a fifth slower, byte loads the instruction
//! emulator's round trip a quarter slower), and
//! [`GuestMemory::for_each_chunk`] for streaming a guest buffer out (console writes) through a bounded
//! stack buffer. This is rust-vmm `vm-memory`'s `read_slice`/`write_slice` shape.
#![forbid(unsafe_code)]

use core::sync::atomic::AtomicU8;

/// Why a guest-physical range was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemError {
    /// `gpa + len` overflows.
    Overflow,
    /// The range is not wholly inside guest memory.
    OutOfRange,
}

/// Bytes a console write streams through at a time ([`GuestMemory::for_each_chunk`]).
const CHUNK: usize = 256;

/// The payload's RAM: byte 0 is guest-physical `base`. A shared, copyable handle (see the module doc).
#[derive(Clone, Copy)]
pub struct GuestMemory<'m> {
    base: u64,
    bytes: &'m [AtomicU8],
}

impl<'m> GuestMemory<'m> {
    /// The guest's RAM at `base`; the exclusive borrow of `bytes` becomes the shared handle.
    pub fn new(base: u64, bytes: &'m mut [u8]) -> Self {
        Self {
            base,
            bytes: crate::arch::share_bytes(bytes),
        }
    }

    pub fn base(&self) -> u64 {
        self.base
    }

    pub fn size(&self) -> u64 {
        self.bytes.len() as u64
    }

    /// The host bytes of `[gpa, gpa + len)`, checked.
    fn range(&self, gpa: u64, len: u64) -> Result<&'m [AtomicU8], MemError> {
        let end = gpa.checked_add(len).ok_or(MemError::Overflow)?;
        if gpa < self.base || end > self.base + self.size() {
            return Err(MemError::OutOfRange);
        }
        let start = (gpa - self.base) as usize;
        Ok(&self.bytes[start..start + len as usize])
    }

    /// Whether `[gpa, gpa + len)` lies wholly inside guest memory.
    pub fn check(&self, gpa: u64, len: u64) -> Result<(), MemError> {
        self.range(gpa, len).map(|_| ())
    }

    /// Copies `out.len()` bytes at `gpa` into `out`.
    #[cfg_attr(target_arch = "riscv64", allow(dead_code))] // x86: instruction fetch, page walks
    pub fn read(&self, gpa: u64, out: &mut [u8]) -> Result<(), MemError> {
        crate::arch::copy_from_guest(out, self.range(gpa, out.len() as u64)?);
        Ok(())
    }

    /// Copies `data` to `gpa`.
    pub fn write(&self, gpa: u64, data: &[u8]) -> Result<(), MemError> {
        crate::arch::copy_to_guest(self.range(gpa, data.len() as u64)?, data);
        Ok(())
    }

    pub fn fill(&self, gpa: u64, len: u64, byte: u8) -> Result<(), MemError> {
        crate::arch::fill_guest(self.range(gpa, len)?, byte);
        Ok(())
    }

    /// Hands `[gpa, gpa + len)` to `f` in order, a bounded chunk at a time (copied), after checking the
    /// whole range first. Stops at the first error `f` returns.
    pub fn for_each_chunk<E>(
        &self,
        gpa: u64,
        len: u64,
        mut f: impl FnMut(&[u8]) -> Result<(), E>,
    ) -> Result<Result<(), E>, MemError> {
        let r = self.range(gpa, len)?;
        let mut buf = [0u8; CHUNK];
        for part in r.chunks(CHUNK) {
            crate::arch::copy_from_guest(&mut buf[..part.len()], part);
            if let Err(e) = f(&buf[..part.len()]) {
                return Ok(Err(e));
            }
        }
        Ok(Ok(()))
    }

    #[cfg_attr(target_arch = "riscv64", allow(dead_code))]
    pub fn read_u64(&self, gpa: u64) -> Result<u64, MemError> {
        let mut w = [0u8; 8];
        self.read(gpa, &mut w)?;
        Ok(u64::from_le_bytes(w))
    }

    #[cfg(any(test, target_arch = "x86_64"))]
    pub fn write_u64(&self, gpa: u64, v: u64) -> Result<(), MemError> {
        self.write(gpa, &v.to_le_bytes())
    }

    /// A copy of `[gpa, gpa + len)` (host tests).
    #[cfg(test)]
    pub fn slice(&self, gpa: u64, len: u64) -> Result<std::vec::Vec<u8>, MemError> {
        let mut v = std::vec![0u8; len as usize];
        if len > (1 << 32) {
            return self.range(gpa, len).map(|_| v);
        }
        self.read(gpa, &mut v)?;
        Ok(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mem(buf: &mut [u8]) -> GuestMemory<'_> {
        GuestMemory::new(0x1000, buf)
    }

    #[test]
    fn inside_ranges_are_returned() {
        let mut buf = [0u8; 0x100];
        let m = mem(&mut buf);
        m.write(0x1010, b"abc").unwrap();
        assert_eq!(m.slice(0x1010, 3).unwrap(), b"abc");
        assert_eq!(m.slice(0x1000, 0x100).unwrap().len(), 0x100);
        assert_eq!(m.slice(0x10ff, 1).unwrap().len(), 1);
        assert_eq!(m.slice(0x1100, 0).unwrap().len(), 0);
    }

    #[test]
    fn ranges_outside_or_straddling_are_refused() {
        let mut buf = [0u8; 0x100];
        let m = mem(&mut buf);
        assert_eq!(m.check(0xfff, 1), Err(MemError::OutOfRange));
        assert_eq!(m.check(0x10ff, 2), Err(MemError::OutOfRange));
        assert_eq!(m.check(0x1100, 1), Err(MemError::OutOfRange));
        assert_eq!(m.check(0, 0x2000), Err(MemError::OutOfRange));
    }

    #[test]
    fn overflowing_lengths_are_refused_not_wrapped() {
        let mut buf = [0u8; 0x100];
        let m = mem(&mut buf);
        assert_eq!(m.check(0x1010, u64::MAX), Err(MemError::Overflow));
        assert_eq!(m.check(u64::MAX, 2), Err(MemError::Overflow));
        assert_eq!(
            m.check(0x1010, u64::MAX - 0x1010 + 1),
            Err(MemError::Overflow)
        );
    }

    #[test]
    fn chunks_stream_the_whole_range_in_order_and_copies_share_the_bytes() {
        let mut buf = [0u8; 0x400];
        let m = mem(&mut buf);
        let copy = m; // a second vCPU's handle
        for i in 0..0x300u64 {
            copy.write(0x1000 + i, &[i as u8]).unwrap();
        }
        let mut seen = std::vec::Vec::new();
        m.for_each_chunk(0x1000, 0x300, |c| {
            assert!(c.len() <= CHUNK);
            seen.extend_from_slice(c);
            Ok::<(), ()>(())
        })
        .unwrap()
        .unwrap();
        assert_eq!(seen.len(), 0x300);
        assert!(seen.iter().enumerate().all(|(i, &b)| b == i as u8));
        assert_eq!(
            m.for_each_chunk(0x1300, 0x101, |_| Ok::<(), ()>(())),
            Err(MemError::OutOfRange)
        );
    }
}
