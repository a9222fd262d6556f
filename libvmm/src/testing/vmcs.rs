//! A software VMCS for host tests: fields in a map, entries scripted.
use crate::vmx::vmcs::*;
use std::collections::BTreeMap;
use std::vec::Vec;

/// What the model's next `enter` does.
pub enum Step {
    /// Exit with these read-only fields (encoding, value) and these guest registers.
    Exit(Vec<(u32, u64)>, Option<GuestRegs>),
    Fail(VmFail, u64),
}

#[derive(Default)]
pub struct ModelVmcs {
    pub fields: BTreeMap<u32, u64>,
    pub steps: Vec<Step>,
    pub entries: Vec<(bool, GuestRegs, BTreeMap<u32, u64>)>,
    pub msrs: Vec<(u32, u64)>,
    pub vtpr: u8,
    /// Each XCR0 loaded with XSETBV, and how many guest TLB flushes were asked for.
    pub xcr0: Vec<u64>,
    pub tlb_flushes: u32,
}

impl VmxOps for ModelVmcs {
    fn vmread(&self, e: u32) -> Result<u64, VmFail> {
        Ok(self.fields.get(&e).copied().unwrap_or(0))
    }
    fn vmwrite(&mut self, e: u32, v: u64) -> Result<(), VmFail> {
        self.fields.insert(e, v);
        Ok(())
    }
    fn enter(&mut self, regs: &mut GuestRegs, launched: bool) -> Result<(), VmFail> {
        self.entries.push((launched, *regs, self.fields.clone()));
        assert!(!self.steps.is_empty(), "model script ended");
        match self.steps.remove(0) {
            Step::Exit(ro, r) => {
                for (e, v) in ro {
                    self.fields.insert(e, v);
                }
                // The CPU clears the valid bit of the event-injection field on every VM exit.
                let inj = crate::vmx::fields::ENTRY_INTERRUPTION_INFO.encoding();
                let v = self.fields.get(&inj).copied().unwrap_or(0) & !(1 << 31);
                self.fields.insert(inj, v);
                if let Some(r) = r {
                    *regs = r;
                }
                Ok(())
            }
            Step::Fail(f, err) => {
                self.fields
                    .insert(crate::vmx::fields::VM_INSTRUCTION_ERROR.encoding(), err);
                Err(f)
            }
        }
    }
    fn wrmsr(&mut self, msr: u32, value: u64) {
        self.msrs.push((msr, value));
    }
    fn read_vtpr(&self) -> u8 {
        self.vtpr
    }
    fn xsetbv(&mut self, xcr0: u64) {
        self.xcr0.push(xcr0);
    }
    fn flush_guest_tlb(&mut self) {
        self.tlb_flushes += 1;
    }
}
