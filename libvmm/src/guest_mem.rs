//! Guest memory: the one checked way from a guest-physical range to host bytes.
//!
//! Every address that comes from the guest (hypercall pointers, lengths, instruction fetches) goes through
//! [`GuestMemory::slice`], which either returns a slice that lies wholly inside the payload's window or an
//! error; overflowing `gpa + len` is an error, not a wrap. No handler ever forms a pointer from a guest
//! register. The window's host bytes come from `arch` once, at boot.
#![forbid(unsafe_code)]

/// Why a guest-physical range was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemError {
    /// `gpa + len` overflows.
    Overflow,
    /// The range is not wholly inside guest memory.
    OutOfRange,
}

/// The payload's RAM: `bytes[0]` is guest-physical `base`.
pub struct GuestMemory<'m> {
    base: u64,
    bytes: &'m mut [u8],
}

impl<'m> GuestMemory<'m> {
    pub fn new(base: u64, bytes: &'m mut [u8]) -> Self {
        Self { base, bytes }
    }

    pub fn base(&self) -> u64 {
        self.base
    }

    pub fn size(&self) -> u64 {
        self.bytes.len() as u64
    }

    /// The host index range of `[gpa, gpa + len)`, checked.
    fn range(&self, gpa: u64, len: u64) -> Result<core::ops::Range<usize>, MemError> {
        let end = gpa.checked_add(len).ok_or(MemError::Overflow)?;
        if gpa < self.base || end > self.base + self.size() {
            return Err(MemError::OutOfRange);
        }
        let start = (gpa - self.base) as usize;
        Ok(start..start + len as usize)
    }

    pub fn slice(&self, gpa: u64, len: u64) -> Result<&[u8], MemError> {
        let r = self.range(gpa, len)?;
        Ok(&self.bytes[r])
    }

    pub fn slice_mut(&mut self, gpa: u64, len: u64) -> Result<&mut [u8], MemError> {
        let r = self.range(gpa, len)?;
        Ok(&mut self.bytes[r])
    }

    pub fn write(&mut self, gpa: u64, data: &[u8]) -> Result<(), MemError> {
        self.slice_mut(gpa, data.len() as u64)?
            .copy_from_slice(data);
        Ok(())
    }

    pub fn fill(&mut self, gpa: u64, len: u64, byte: u8) -> Result<(), MemError> {
        self.slice_mut(gpa, len)?.fill(byte);
        Ok(())
    }

    #[cfg_attr(not(test), allow(dead_code))] // for backends that walk guest tables; used by tests
    pub fn read_u64(&self, gpa: u64) -> Result<u64, MemError> {
        let mut w = [0u8; 8];
        w.copy_from_slice(self.slice(gpa, 8)?);
        Ok(u64::from_le_bytes(w))
    }

    #[cfg(any(test, target_arch = "x86_64"))]
    pub fn write_u64(&mut self, gpa: u64, v: u64) -> Result<(), MemError> {
        self.write(gpa, &v.to_le_bytes())
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
        let mut m = mem(&mut buf);
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
        assert_eq!(m.slice(0xfff, 1), Err(MemError::OutOfRange));
        assert_eq!(m.slice(0x10ff, 2), Err(MemError::OutOfRange));
        assert_eq!(m.slice(0x1100, 1), Err(MemError::OutOfRange));
        assert_eq!(m.slice(0, 0x2000), Err(MemError::OutOfRange));
    }

    #[test]
    fn overflowing_lengths_are_refused_not_wrapped() {
        let mut buf = [0u8; 0x100];
        let m = mem(&mut buf);
        assert_eq!(m.slice(0x1010, u64::MAX), Err(MemError::Overflow));
        assert_eq!(m.slice(u64::MAX, 2), Err(MemError::Overflow));
        assert_eq!(
            m.slice(0x1010, u64::MAX - 0x1010 + 1),
            Err(MemError::Overflow)
        );
    }
}
