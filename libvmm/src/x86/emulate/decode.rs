//! Instruction fetch through the guest's page tables and decoding with `yaxpeax-x86`. At most 15 bytes
//! are fetched, page by page: an instruction that crosses into a page the guest cannot execute faults
//! there (CR2 = that page's first byte) only if its bytes are really needed, as on the CPU.
#![forbid(unsafe_code)]

use yaxpeax_arch::LengthedInstruction;
use yaxpeax_x86::long_mode::{DecodeError, InstDecoder, Instruction};

use super::walk::{canonical, Access, Fail, Walker, PAGE};
use super::{Exception, Stop};
use crate::guest_mem::GuestMemory;

/// Longest x86 instruction.
pub const MAX_LEN: usize = 15;

/// A decoded instruction and its length in bytes.
#[derive(Clone, Copy, Debug)]
pub struct Decoded {
    pub insn: Instruction,
    pub len: u8,
}

/// Fetches and decodes the instruction at `rip`. `is_device(gpa)` says whether a guest-physical address
/// is device memory (fetching from it stops the VM).
pub fn fetch(
    decoder: &InstDecoder,
    walker: &Walker,
    mem: &mut GuestMemory<'_>,
    is_device: impl Fn(u64) -> bool,
    rip: u64,
) -> Result<Decoded, Fail> {
    if !canonical(rip) {
        return Err(Exception::GeneralProtection(0).into());
    }
    let mut bytes = [0u8; MAX_LEN];
    let mut have = 0usize;
    let mut pending: Option<Fail> = None;
    let mut va = rip;
    while have < MAX_LEN {
        let n = ((PAGE - (va & (PAGE - 1))) as usize).min(MAX_LEN - have);
        let got = if !canonical(va) {
            Err(Fail::Exc(Exception::GeneralProtection(0)))
        } else {
            walker.translate(mem, va, Access::Fetch).and_then(|gpa| {
                if is_device(gpa) {
                    return Err(Stop::DeviceAccess { gpa }.into());
                }
                mem.read(gpa, &mut bytes[have..have + n])
                    .map_err(|_| Stop::Unmapped { gpa }.into())
            })
        };
        match got {
            Ok(()) => {}
            Err(f) if have == 0 => return Err(f),
            Err(f) => {
                pending = Some(f);
                break;
            }
        }
        have += n;
        va = va.wrapping_add(n as u64);
    }
    match decoder.decode_slice(&bytes[..have]) {
        Ok(insn) => {
            let len = insn.len().to_const() as u8;
            Ok(Decoded { insn, len })
        }
        Err(DecodeError::ExhaustedInput) => match pending {
            Some(f) => Err(f),
            // 15 bytes were not enough: the instruction is too long.
            None => Err(Exception::GeneralProtection(0).into()),
        },
        Err(DecodeError::TooLong) => Err(Exception::GeneralProtection(0).into()),
        Err(_) => Err(Exception::InvalidOpcode.into()),
    }
}
