//! The guest's linear-to-guest-physical translation, done by the emulator as the CPU would: 4-level
//! long-mode paging from CR3, 4 KiB / 2 MiB / 1 GiB pages, permissions accumulated over the levels
//! (R/W with CR0.WP, U/S, XD with EFER.NXE, SMEP, SMAP with RFLAGS.AC), reserved bits (above MAXPHYADDR,
//! XD without NXE, PS in a PML4E, the low bits of a large-page frame), and the accessed and dirty bits set
//! once the access is allowed. A failure is the guest's #PF with the CPU's error code and CR2; a paging
//! structure outside guest RAM stops the VM. 5-level paging is refused (stop).
#![forbid(unsafe_code)]

use super::ctl::{CR0_WP, CR4_LA57, CR4_SMAP, CR4_SMEP, EFER_NXE};
use super::rflags::AC;
use super::{Exception, GuestCpu, Stop};
use crate::guest_mem::GuestMemory;

pub const PAGE: u64 = 4096;

const P: u64 = 1 << 0;
const RW: u64 = 1 << 1;
const US: u64 = 1 << 2;
const A: u64 = 1 << 5;
const D: u64 = 1 << 6;
const PS: u64 = 1 << 7;
const XD: u64 = 1 << 63;

/// #PF error-code bits.
pub mod pf {
    pub const PRESENT: u32 = 1 << 0;
    pub const WRITE: u32 = 1 << 1;
    pub const USER: u32 = 1 << 2;
    pub const RSVD: u32 = 1 << 3;
    pub const FETCH: u32 = 1 << 4;
}

/// Why an emulated access did not complete.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fail {
    Exc(Exception),
    Stop(Stop),
}

impl From<Exception> for Fail {
    fn from(e: Exception) -> Self {
        Fail::Exc(e)
    }
}

impl From<Stop> for Fail {
    fn from(s: Stop) -> Self {
        Fail::Stop(s)
    }
}

/// The kind of access being translated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    Read,
    Write,
    Fetch,
}

/// A 48-bit canonical linear address.
pub const fn canonical(va: u64) -> bool {
    ((va as i64) << 16 >> 16) as u64 == va
}

/// The paging state of one translation, snapshotted from the vCPU.
#[derive(Clone, Copy, Debug)]
pub struct Walker {
    pub cr0: u64,
    pub cr3: u64,
    pub cr4: u64,
    pub efer: u64,
    pub user: bool,
    pub ac: bool,
    pub maxphyaddr: u8,
}

impl Walker {
    pub fn new(cpu: &impl GuestCpu, maxphyaddr: u8) -> Self {
        Walker {
            cr0: cpu.cr0(),
            cr3: cpu.cr3(),
            cr4: cpu.cr4(),
            efer: cpu.efer(),
            user: cpu.cpl() == 3,
            ac: cpu.rflags() & AC != 0,
            maxphyaddr: maxphyaddr.clamp(32, 52),
        }
    }

    fn frame_mask(&self) -> u64 {
        ((1u64 << self.maxphyaddr) - 1) & !(PAGE - 1)
    }

    /// Translates one linear address for `access`.
    pub fn translate(
        &self,
        mem: &mut GuestMemory<'_>,
        va: u64,
        access: Access,
    ) -> Result<u64, Fail> {
        if self.cr4 & CR4_LA57 != 0 {
            return Err(Stop::FiveLevelPaging.into());
        }
        let nxe = self.efer & EFER_NXE != 0;
        let smep = self.cr4 & CR4_SMEP != 0;
        let mut code = 0u32;
        if access == Access::Write {
            code |= pf::WRITE;
        }
        if self.user {
            code |= pf::USER;
        }
        if access == Access::Fetch && (nxe || smep) {
            code |= pf::FETCH;
        }
        let fault = |extra: u32| {
            Fail::Exc(Exception::PageFault {
                error: code | extra,
                address: va,
            })
        };
        // Bits MAXPHYADDR..=51 of every entry are reserved; bits 62:52 are ignored.
        let high_rsvd = ((1u64 << 52) - 1) & !((1u64 << self.maxphyaddr) - 1);
        let mut table = self.cr3 & self.frame_mask();
        let (mut rw, mut us, mut xd) = (true, true, false);
        let mut entries = [0u64; 4];
        let mut walked = 0;
        let mut gpa = 0;
        for level in (1..=4u32).rev() {
            let shift = 12 + 9 * (level - 1);
            let egpa = table + ((va >> shift) & 0x1ff) * 8;
            let e = mem
                .read_u64(egpa)
                .map_err(|_| Fail::Stop(Stop::Unmapped { gpa: egpa }))?;
            if e & P == 0 {
                return Err(fault(0));
            }
            let leaf = level == 1 || (level <= 3 && e & PS != 0);
            let size = 1u64 << shift;
            let rsvd = e & high_rsvd != 0
                || (!nxe && e & XD != 0)
                || (level == 4 && e & PS != 0)
                || (leaf && level > 1 && e & (size - 1) & !(PAGE - 1) & !(1 << 12) != 0);
            if rsvd {
                return Err(fault(pf::PRESENT | pf::RSVD));
            }
            rw &= e & RW != 0;
            us &= e & US != 0;
            xd |= nxe && e & XD != 0;
            entries[walked] = egpa;
            walked += 1;
            if leaf {
                gpa = (e & self.frame_mask() & !(size - 1)) | (va & (size - 1));
                break;
            }
            table = e & self.frame_mask();
        }
        let denied = match access {
            _ if self.user && !us => true,
            Access::Write if !rw && (self.user || self.cr0 & CR0_WP != 0) => true,
            Access::Fetch => xd || (!self.user && us && smep),
            Access::Read | Access::Write => {
                !self.user && us && self.cr4 & CR4_SMAP != 0 && !self.ac
            }
        };
        if denied {
            return Err(fault(pf::PRESENT));
        }
        // Allowed: set A on every entry used, D on the leaf of a write (what the CPU writes back).
        for (i, &egpa) in entries[..walked].iter().enumerate() {
            let mut e = mem
                .read_u64(egpa)
                .map_err(|_| Fail::Stop(Stop::Unmapped { gpa: egpa }))?;
            let old = e;
            e |= A;
            if i + 1 == walked && access == Access::Write {
                e |= D;
            }
            if e != old {
                mem.write_u64(egpa, e)
                    .map_err(|_| Fail::Stop(Stop::Unmapped { gpa: egpa }))?;
            }
        }
        Ok(gpa)
    }

    /// Translates `[va, va + len)` (len 1..=4096) for `access`: one piece, or two if it crosses a 4 KiB
    /// boundary (the second page's fault has CR2 = its first byte).
    pub fn span(
        &self,
        mem: &mut GuestMemory<'_>,
        va: u64,
        len: u64,
        access: Access,
    ) -> Result<Span, Fail> {
        let first_len = (PAGE - (va & (PAGE - 1))).min(len);
        let g0 = self.translate(mem, va, access)?;
        let mut span = Span {
            parts: [(g0, first_len), (0, 0)],
        };
        if first_len < len {
            let va1 = va.wrapping_add(first_len);
            let g1 = self.translate(mem, va1, access)?;
            span.parts[1] = (g1, len - first_len);
        }
        Ok(span)
    }
}

/// A translated linear range: at most two guest-physical pieces.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Span {
    pub parts: [(u64, u64); 2],
}

impl Span {
    /// The pieces that hold bytes.
    pub fn pieces(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.parts.iter().copied().filter(|p| p.1 != 0)
    }

    /// Reads `out.len()` bytes from byte `off` of the span.
    pub fn read(&self, mem: &GuestMemory<'_>, off: u64, out: &mut [u8]) -> Result<(), Stop> {
        self.for_parts(off, out.len() as u64, |gpa, at, n| {
            mem.read(gpa, &mut out[at..at + n as usize])
                .map_err(|_| Stop::Unmapped { gpa })
        })
    }

    /// Writes `data` at byte `off` of the span.
    pub fn write(&self, mem: &mut GuestMemory<'_>, off: u64, data: &[u8]) -> Result<(), Stop> {
        self.for_parts(off, data.len() as u64, |gpa, at, n| {
            mem.write(gpa, &data[at..at + n as usize])
                .map_err(|_| Stop::Unmapped { gpa })
        })
    }

    fn for_parts(
        &self,
        off: u64,
        len: u64,
        mut f: impl FnMut(u64, usize, u64) -> Result<(), Stop>,
    ) -> Result<(), Stop> {
        let mut base = 0u64;
        for (gpa, plen) in self.parts {
            let lo = off.max(base);
            let hi = (off + len).min(base + plen);
            if lo < hi {
                f(gpa + (lo - base), (lo - off) as usize, hi - lo)?;
            }
            base += plen;
        }
        Ok(())
    }
}
