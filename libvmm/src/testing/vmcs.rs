//! A software VMX CPU for host tests: the current VMCS's fields in a map, entries scripted; for
//! bring-up, CPUID and MSRs of a capable CPU (Bochs' `corei7_skylake_x` capability MSRs), control
//! registers, and VMXON / VMCLEAR / VMPTRLD / INVEPT / INVVPID that check and record what hardware would.
//! Host interrupts as the CPU treats them: a scripted external-interrupt exit (reason 1) leaves its
//! interrupt pending in the host's local APIC ([`super::HostIrqLine`]) unless the exit controls ask to
//! acknowledge it on exit; while one is pending and external-interrupt exiting is on, every entry ends
//! at once with another external-interrupt exit (share the line with the [`super::ModelPlatform`] the
//! loop runs on: its `clear_kick` takes it).
use crate::vmx::vmcs::*;
use crate::x86::msr;
use std::collections::BTreeMap;
use std::vec::Vec;

/// What the model's next `enter` does.
pub enum Step {
    /// Exit with these read-only fields (encoding, value) and these guest registers.
    Exit(Vec<(u32, u64)>, Option<GuestRegs>),
    Fail(VmFail, u64),
}

/// Capability MSR values of Bochs 2.7 `cpu: model=corei7_skylake_x`, as the VMX bring-up read them
/// there (MAXPHYADDR 40).
pub fn skylake_x_msr(m: u32) -> u64 {
    match m {
        msr::VMX_BASIC => 0x00d8_1000_0000_002b,
        msr::VMX_PINBASED_CTLS | msr::VMX_TRUE_PINBASED_CTLS => 0x7f_0000_0016,
        msr::VMX_PROCBASED_CTLS => 0xf7f9_fffe_0401_e172,
        msr::VMX_TRUE_PROCBASED_CTLS => 0xf7f9_fffe_0400_6172,
        msr::VMX_EXIT_CTLS => 0x7f_ffff_0003_6dff,
        msr::VMX_TRUE_EXIT_CTLS => 0x7f_ffff_0003_6dfb,
        msr::VMX_ENTRY_CTLS => 0xffff_0000_11ff,
        msr::VMX_TRUE_ENTRY_CTLS => 0xffff_0000_11fb,
        msr::VMX_MISC => 0x6004_01e0,
        msr::VMX_CR0_FIXED0 => 0x8000_0021,
        msr::VMX_CR0_FIXED1 => 0xffff_ffff,
        msr::VMX_CR4_FIXED0 => 0x2000,
        msr::VMX_CR4_FIXED1 => 0x37_27ff,
        msr::VMX_PROCBASED_CTLS2 => 0x0217_7fff_0000_0000,
        msr::VMX_EPT_VPID_CAP => 0xf01_0633_4141,
        _ => 0,
    }
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
    /// Bring-up: CPUID.1:ECX.VMX cleared when set; MSR values that differ from `skylake_x_msr`
    /// (IA32_FEATURE_CONTROL among them: 0, unlocked, unless set here or written).
    pub no_vmx: bool,
    pub msr_values: BTreeMap<u32, u64>,
    pub cr0: u64,
    pub cr4: u64,
    pub xsave_enabled: bool,
    /// VMXON's region, the current VMCS, the regions VMCLEAR cleared, INVEPT and INVVPID counts.
    pub vmxon: Option<u64>,
    pub current: Option<u64>,
    pub cleared: Vec<u64>,
    pub invept: u32,
    pub invvpid: u32,
    /// VMXON fails (VMfailInvalid) although its preconditions hold: a CPU that refuses it.
    pub refuse_vmxon: bool,
    pub vapic_pa: Option<u64>,
    /// The host's local APIC: a host interrupt pending there (not yet taken).
    pub host_irq: std::sync::Arc<super::HostIrqLine>,
    /// External-interrupt exits delivered for a pending host interrupt (not scripted ones).
    pub ext_intr_exits: u32,
}

impl ModelVmcs {
    fn control(&self, field: crate::vmx::fields::Field<crate::vmx::fields::W32>) -> u32 {
        self.fields.get(&field.encoding()).copied().unwrap_or(0) as u32
    }

    /// The exit of a host interrupt: pending in the local APIC, or acknowledged by the CPU itself when
    /// the exit controls say so.
    fn host_interrupt_exit(&mut self) {
        use crate::vmx::fields as f;
        self.host_irq.raise();
        if self.control(f::EXIT_CONTROLS) & crate::vmx::controls::exit::ACK_INTR_ON_EXIT != 0 {
            self.host_irq.ack_on_exit();
        }
    }
}

impl ModelVmcs {
    /// A CPU ready for bring-up: the host state a 64-bit VMM runs with (CR0 PE|NE|PG, CR4 PAE), a
    /// virtual-APIC page.
    pub fn cpu() -> Self {
        Self {
            cr0: 0x8000_0031,
            cr4: 0x20,
            vapic_pa: Some(0x10_5000),
            ..Default::default()
        }
    }
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
        use crate::vmx::fields as f;
        self.entries.push((launched, *regs, self.fields.clone()));
        // The CPU clears the valid bit of the event-injection field on every VM exit.
        let clear_injection = |fields: &mut BTreeMap<u32, u64>| {
            let inj = f::ENTRY_INTERRUPTION_INFO.encoding();
            let v = fields.get(&inj).copied().unwrap_or(0) & !(1 << 31);
            fields.insert(inj, v);
        };
        // A host interrupt still pending: with external-interrupt exiting, the entry ends at once.
        if self.host_irq.pending()
            && self.control(f::PIN_BASED_CONTROLS) & crate::vmx::controls::pin::EXT_INTR_EXITING
                != 0
        {
            self.ext_intr_exits += 1;
            self.fields.insert(
                f::EXIT_REASON.encoding(),
                u64::from(crate::vmx::decode::reason::EXTERNAL_INTERRUPT),
            );
            clear_injection(&mut self.fields);
            self.host_interrupt_exit();
            return Ok(());
        }
        assert!(!self.steps.is_empty(), "model script ended");
        match self.steps.remove(0) {
            Step::Exit(ro, r) => {
                for (e, v) in ro {
                    self.fields.insert(e, v);
                }
                clear_injection(&mut self.fields);
                if let Some(r) = r {
                    *regs = r;
                }
                if self.fields.get(&f::EXIT_REASON.encoding()).copied()
                    == Some(u64::from(crate::vmx::decode::reason::EXTERNAL_INTERRUPT))
                {
                    self.host_interrupt_exit();
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
        self.msr_values.insert(msr, value);
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
    fn cpuid(&self, leaf: u32, _: u32) -> [u32; 4] {
        match leaf {
            1 => [0, 0, if self.no_vmx { 0 } else { 1 << 5 }, 0],
            0x8000_0000 => [0x8000_0008, 0, 0, 0],
            0x8000_0008 => [40, 0, 0, 0],
            _ => [0; 4],
        }
    }
    fn rdmsr(&self, m: u32) -> u64 {
        self.msr_values
            .get(&m)
            .copied()
            .unwrap_or_else(|| skylake_x_msr(m))
    }
    fn host_cr0(&self) -> u64 {
        self.cr0
    }
    fn host_cr3(&self) -> u64 {
        0x1000
    }
    fn host_cr4(&self) -> u64 {
        self.cr4
    }
    fn set_host_cr0(&mut self, v: u64) {
        self.cr0 = v;
    }
    fn set_host_cr4(&mut self, v: u64) {
        self.cr4 = v;
    }
    fn enable_xsave(&mut self) -> bool {
        self.xsave_enabled = true;
        true
    }
    /// VMXON's checks (SDM VMXON): CR4.VMXE, the CR0/CR4 fixed bits and IA32_FEATURE_CONTROL locked
    /// with VMX outside SMX are #GP/#UD on hardware, VMfailInvalid here; a second VMXON is
    /// VMfailValid(15).
    fn vmxon(&mut self, pa: u64) -> Result<(), VmFail> {
        let fixed = |v: u64, f0: u32, f1: u32| {
            v & self.rdmsr(f0) == self.rdmsr(f0) && v & !self.rdmsr(f1) == 0
        };
        let fc = msr::FEATURE_CONTROL_LOCK | msr::FEATURE_CONTROL_VMX_OUTSIDE_SMX;
        if self.vmxon.is_some() {
            return Err(VmFail::Valid);
        }
        if self.refuse_vmxon
            || self.cr4 & (1 << 13) == 0
            || !fixed(self.cr0, msr::VMX_CR0_FIXED0, msr::VMX_CR0_FIXED1)
            || !fixed(self.cr4, msr::VMX_CR4_FIXED0, msr::VMX_CR4_FIXED1)
            || self.rdmsr(msr::IA32_FEATURE_CONTROL) & fc != fc
            || pa & 0xFFF != 0
        {
            return Err(VmFail::Invalid);
        }
        self.vmxon = Some(pa);
        Ok(())
    }
    fn vmclear(&mut self, pa: u64) -> Result<(), VmFail> {
        if self.vmxon.is_none() || pa & 0xFFF != 0 {
            return Err(VmFail::Invalid);
        }
        if Some(pa) == self.vmxon {
            return Err(VmFail::Valid);
        }
        self.cleared.push(pa);
        Ok(())
    }
    fn vmptrld(&mut self, pa: u64) -> Result<(), VmFail> {
        if self.vmxon.is_none() || pa & 0xFFF != 0 {
            return Err(VmFail::Invalid);
        }
        if Some(pa) == self.vmxon {
            return Err(VmFail::Valid);
        }
        self.current = Some(pa);
        Ok(())
    }
    fn invept_all(&mut self) -> Result<(), VmFail> {
        self.invept += 1;
        Ok(())
    }
    fn invvpid_all(&mut self) -> Result<(), VmFail> {
        self.invvpid += 1;
        Ok(())
    }
    /// A host pointer made a "physical" address below the model's MAXPHYADDR (40): the low 40 bits,
    /// which keep page alignment and tell apart the pages of one test.
    fn pa_ptr(p: *const u8) -> u64 {
        p as u64 & ((1 << 40) - 1)
    }
    fn host_tables(&self) -> HostTables {
        HostTables {
            selectors: [0x08, 0x10, 0x10, 0x10, 0, 0, 0x18],
            tr_base: 0x20_0000,
            gdtr_base: 0x20_1000,
            idtr_base: 0x20_2000,
            exit_rip: 0x10_0000,
        }
    }
    fn virtual_apic_pa(&self) -> Option<u64> {
        self.vapic_pa
    }
}

/// The model through a borrow, so a test keeps it (its entries, fields) after a run that consumed its
/// `VmxOps` (an AP's vCPU, `vmx::hw::run_ap`).
impl VmxOps for &mut ModelVmcs {
    fn vmread(&self, e: u32) -> Result<u64, VmFail> {
        (**self).vmread(e)
    }
    fn vmwrite(&mut self, e: u32, v: u64) -> Result<(), VmFail> {
        (**self).vmwrite(e, v)
    }
    fn enter(&mut self, regs: &mut GuestRegs, launched: bool) -> Result<(), VmFail> {
        (**self).enter(regs, launched)
    }
    fn wrmsr(&mut self, msr: u32, value: u64) {
        (**self).wrmsr(msr, value)
    }
    fn read_vtpr(&self) -> u8 {
        (**self).read_vtpr()
    }
    fn xsetbv(&mut self, xcr0: u64) {
        (**self).xsetbv(xcr0)
    }
    fn flush_guest_tlb(&mut self) {
        (**self).flush_guest_tlb()
    }
    fn cpuid(&self, leaf: u32, subleaf: u32) -> [u32; 4] {
        (**self).cpuid(leaf, subleaf)
    }
    fn rdmsr(&self, m: u32) -> u64 {
        (**self).rdmsr(m)
    }
    fn host_cr0(&self) -> u64 {
        (**self).host_cr0()
    }
    fn host_cr3(&self) -> u64 {
        (**self).host_cr3()
    }
    fn host_cr4(&self) -> u64 {
        (**self).host_cr4()
    }
    fn set_host_cr0(&mut self, v: u64) {
        (**self).set_host_cr0(v)
    }
    fn set_host_cr4(&mut self, v: u64) {
        (**self).set_host_cr4(v)
    }
    fn enable_xsave(&mut self) -> bool {
        (**self).enable_xsave()
    }
    fn vmxon(&mut self, pa: u64) -> Result<(), VmFail> {
        (**self).vmxon(pa)
    }
    fn vmclear(&mut self, pa: u64) -> Result<(), VmFail> {
        (**self).vmclear(pa)
    }
    fn vmptrld(&mut self, pa: u64) -> Result<(), VmFail> {
        (**self).vmptrld(pa)
    }
    fn invept_all(&mut self) -> Result<(), VmFail> {
        (**self).invept_all()
    }
    fn invvpid_all(&mut self) -> Result<(), VmFail> {
        (**self).invvpid_all()
    }
    fn pa_ptr(p: *const u8) -> u64 {
        ModelVmcs::pa_ptr(p)
    }
    fn host_tables(&self) -> HostTables {
        (**self).host_tables()
    }
    fn virtual_apic_pa(&self) -> Option<u64> {
        (**self).virtual_apic_pa()
    }
}
