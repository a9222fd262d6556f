//! Vendor-neutral x86 pieces shared by the SVM and VMX backends (not TDX: a TD's state is the module's).
#![forbid(unsafe_code)]

pub(crate) mod bootproto;
pub(crate) mod gprs;
pub(crate) mod guest_setup;
pub(crate) mod segment;
pub(crate) mod user_return_msr;
