//! The typed VMCS: reads and writes go through [`super::fields::Field`] values, so the width of every
//! access is fixed by the field's type, over the raw VMREAD/VMWRITE/VM-entry operations of [`VmxOps`]
//! (the `arch` assembly on the target, a recording model in host tests).
#![forbid(unsafe_code)]

use super::fields::{Field, Width};

/// Guest general-purpose registers the world switch saves and restores (RSP and RIP live in the VMCS):
/// the x86 layout shared with SVM, whose offsets the `arch` assembly uses.
pub(crate) type GuestRegs = crate::x86::gprs::Gprs;

static_assertions::const_assert_eq!(core::mem::size_of::<GuestRegs>(), 15 * 8);

/// How a VMX instruction failed (SDM "Conventions": VMfailInvalid sets CF, VMfailValid sets ZF and
/// leaves the number in VM_INSTRUCTION_ERROR).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum VmFail {
    Invalid,
    Valid,
}

/// What the host's descriptor tables and selectors are, and where the CPU returns on a VM exit: the
/// host-state fields bring-up copies into the VMCS besides control registers and MSRs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct HostTables {
    /// CS, SS, DS, ES, FS, GS, TR.
    pub selectors: [u16; 7],
    pub tr_base: u64,
    pub gdtr_base: u64,
    pub idtr_base: u64,
    /// HOST_RIP: the world switch's exit entry.
    pub exit_rip: u64,
}

/// The VMX hardware under the backend: the raw operations on the current VMCS the exit path uses, and
/// the instructions, MSRs and control registers bring-up (`hw.rs`) uses. Implemented by `hw::HwVmcs`
/// over `arch::x86_64::vmx` and by `testing::vmcs::ModelVmcs` in host tests.
pub(crate) trait VmxOps {
    fn vmread(&self, encoding: u32) -> Result<u64, VmFail>;
    fn vmwrite(&mut self, encoding: u32, value: u64) -> Result<(), VmFail>;
    /// VMREAD of a field every VMX implementation has (exit reason, qualification, instruction length,
    /// guest RIP), on the exit path, where a current VMCS is guaranteed: such a VMREAD cannot fail (SDM
    /// VMREAD: VMfailInvalid needs an invalid current-VMCS pointer, VMfailValid(12) an unsupported
    /// component), so the hardware form skips capturing the flags.
    fn vmread_basic(&self, encoding: u32) -> u64 {
        self.vmread(encoding).unwrap_or(0)
    }
    /// VMWRITE of such a field (guest RIP) on the exit path; same reasoning (VMfailValid(13) needs a
    /// read-only field, which the typed layer rules out).
    fn vmwrite_basic(&mut self, encoding: u32, value: u64) {
        let _ = self.vmwrite(encoding, value);
    }
    /// VMLAUNCH (`launched == false`) or VMRESUME with `regs` loaded; returns at the next VM exit with the
    /// guest's registers saved back into `regs`, or with the instruction's failure.
    fn enter(&mut self, regs: &mut GuestRegs, launched: bool) -> Result<(), VmFail>;
    /// Writes a host MSR the VMCS does not switch (IA32_KERNEL_GS_BASE).
    fn wrmsr(&mut self, msr: u32, value: u64);
    /// VTPR: byte 0x80 of the virtual-APIC page (guest-writable while TPR shadow is on).
    fn read_vtpr(&self) -> u8;
    /// XSETBV of XCR0 with a value the policy checked (the guest's: XCR0 is not in the VMCS).
    fn xsetbv(&mut self, xcr0: u64);
    /// Flushes the guest's VPID-tagged linear translations (after an emulated CR0/CR4 write).
    fn flush_guest_tlb(&mut self) {}
    /// Loads the guest's CR2 for a #PF the VMM injects (VM entry does not load CR2).
    fn set_guest_cr2(&mut self, _cr2: u64) {}

    // Bring-up.
    fn cpuid(&self, leaf: u32, subleaf: u32) -> [u32; 4];
    fn rdmsr(&self, msr: u32) -> u64;
    fn host_cr0(&self) -> u64;
    fn host_cr3(&self) -> u64;
    fn host_cr4(&self) -> u64;
    fn set_host_cr0(&mut self, v: u64);
    fn set_host_cr4(&mut self, v: u64);
    /// Sets the host's CR4.OSXSAVE when the CPU has XSAVE (so a guest's checked XSETBV can be carried
    /// out); whether it did.
    fn enable_xsave(&mut self) -> bool;
    /// VMXON with the region at `pa`.
    fn vmxon(&mut self, pa: u64) -> Result<(), VmFail>;
    fn vmclear(&mut self, pa: u64) -> Result<(), VmFail>;
    fn vmptrld(&mut self, pa: u64) -> Result<(), VmFail>;
    fn invept_all(&mut self) -> Result<(), VmFail>;
    fn invvpid_all(&mut self) -> Result<(), VmFail>;
    /// The physical address of a VMM pointer (the VMM runs identity-mapped on the machine). No `self`,
    /// so the EPT builder takes it as a plain function.
    fn pa_ptr(p: *const u8) -> u64;
    /// The physical address of a VMM object.
    fn pa<T>(&self, r: &T) -> u64 {
        Self::pa_ptr(r as *const T as *const u8)
    }
    fn host_tables(&self) -> HostTables;
    /// The virtual-APIC page [`VmxOps::read_vtpr`] reads, if this CPU has one.
    fn virtual_apic_pa(&self) -> Option<u64>;
}

/// The current VMCS, typed.
pub(crate) struct Vmcs<H: VmxOps>(pub H);

impl<H: VmxOps> Vmcs<H> {
    pub fn read<W: Width>(&self, f: Field<W>) -> Result<W::Value, VmFail> {
        self.0.vmread(f.encoding()).map(W::from_raw)
    }
    pub fn write<W: Width>(&mut self, f: Field<W>, v: W::Value) -> Result<(), VmFail> {
        debug_assert!(!f.is_read_only());
        self.0.vmwrite(f.encoding(), v.into())
    }
    /// Exit-path read of a basic field (see [`VmxOps::vmread_basic`]).
    pub fn read_basic<W: Width>(&self, f: Field<W>) -> W::Value {
        W::from_raw(self.0.vmread_basic(f.encoding()))
    }
    pub fn write_basic<W: Width>(&mut self, f: Field<W>, v: W::Value) {
        debug_assert!(!f.is_read_only());
        self.0.vmwrite_basic(f.encoding(), v.into())
    }
}

/// VM-instruction error numbers (SDM Vol. 3C "VM Instruction Error Numbers").
pub(crate) const fn instruction_error_name(n: u64) -> &'static str {
    match n {
        1 => "VMCALL executed in VMX root operation",
        2 => "VMCLEAR with invalid physical address",
        3 => "VMCLEAR with VMXON pointer",
        4 => "VMLAUNCH with non-clear VMCS",
        5 => "VMRESUME with non-launched VMCS",
        6 => "VMRESUME after VMXOFF",
        7 => "VM entry with invalid control field(s)",
        8 => "VM entry with invalid host-state field(s)",
        9 => "VMPTRLD with invalid physical address",
        10 => "VMPTRLD with VMXON pointer",
        11 => "VMPTRLD with incorrect VMCS revision identifier",
        12 => "VMREAD/VMWRITE from/to unsupported VMCS component",
        13 => "VMWRITE to read-only VMCS component",
        15 => "VMXON executed in VMX root operation",
        26 => "VM entry with events blocked by MOV SS",
        28 => "invalid operand to INVEPT/INVVPID",
        _ => "VM-instruction error (see SDM table)",
    }
}
