//! SBI policy for RISC-V guests (calls other than libvmm's own hypercall extension).
//! Until the RISC-V backend lands, every extension answers SBI_ERR_NOT_SUPPORTED.
#![forbid(unsafe_code)]

use crate::exit::{Output, Reply};

pub const SBI_ERR_NOT_SUPPORTED: i64 = -2;

pub fn decide(_ext: u64, _fid: u64, _args: &[u64; 6]) -> Reply {
    Reply::Complete(Output::Sbi {
        error: SBI_ERR_NOT_SUPPORTED,
        value: 0,
    })
}
