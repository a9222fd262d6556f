//! Execution of one decoded instruction against [`GuestCpu`] and guest memory. Every state change waits
//! until every access the instruction makes has been translated and checked, so an instruction that
//! faults changes nothing the guest can see (bar accessed bits, which the CPU also sets on a walk).
#![forbid(unsafe_code)]

use libvmm_abi::FORCED_EMULATION_PREFIX;
use yaxpeax_x86::long_mode::{
    register_class, ConditionCode, InstDecoder, Instruction, Opcode, Operand, RegSpec, Segment,
};

use super::alu::{self, Op, Unary};
use super::ctl::EFER_LMA;
use super::decode;
use super::rflags::{ARITH, CF, DF, OF, PF, SF, ZF};
use super::walk::{canonical, Access, Fail, Span, Walker, PAGE};
use super::{Cpuid, Done, Exception, GuestCpu, IoDir, Mmio, Outcome, PortIo, Reg, Retire, Stop};
use crate::guest_mem::GuestMemory;

/// Why a device range was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceError {
    /// Empty, or `base + size` overflows.
    Invalid,
    /// It overlaps a range already registered.
    Overlap,
    /// The table (`N` ranges) is full.
    Full,
}

/// The emulator of one VM: the decoder, the device ranges (at most `N`, a limit the caller takes from
/// `config`), and the guest's physical-address width.
pub struct Emulator<const N: usize> {
    decoder: InstDecoder,
    devices: heapless::Vec<(u64, u64), N>,
    maxphyaddr: u8,
}

/// Where a translated memory operand lives.
enum Target {
    Ram(Span),
    Device(u64),
}

fn fail(f: Fail) -> Outcome {
    match f {
        Fail::Exc(e) => Outcome::Exception(e),
        Fail::Stop(s) => Outcome::Stop(s),
    }
}

const fn ud() -> Fail {
    Fail::Exc(Exception::InvalidOpcode)
}

impl<const N: usize> Emulator<N> {
    /// `maxphyaddr`: the guest's physical-address width (CPUID 0x8000_0008 EAX[7:0]); paging-structure
    /// bits above it are reserved.
    pub fn new(maxphyaddr: u8) -> Self {
        Emulator {
            decoder: InstDecoder::default(),
            devices: heapless::Vec::new(),
            maxphyaddr,
        }
    }

    /// Registers `[base, base + size)` as device memory: MOVs there become [`Outcome::Mmio`]. A device
    /// range takes precedence over guest RAM.
    pub fn add_device(&mut self, base: u64, size: u64) -> Result<(), DeviceError> {
        let end = base
            .checked_add(size)
            .filter(|_| size != 0)
            .ok_or(DeviceError::Invalid)?;
        if self.devices.iter().any(|&(b, e)| base < e && b < end) {
            return Err(DeviceError::Overlap);
        }
        self.devices
            .push((base, end))
            .map_err(|_| DeviceError::Full)
    }

    /// `gpa` lies in a registered device range (a nested page fault there is MMIO).
    pub fn is_device(&self, gpa: u64) -> bool {
        self.device(gpa).is_some()
    }

    /// The device range holding `gpa`, as `(base, end)`.
    fn device(&self, gpa: u64) -> Option<(u64, u64)> {
        self.devices
            .iter()
            .copied()
            .find(|&(b, e)| gpa >= b && gpa < e)
    }

    fn long_mode(cpu: &impl GuestCpu) -> bool {
        cpu.efer() & EFER_LMA != 0 && cpu.cs_long()
    }

    /// Emulates the instruction at the guest's RIP. `io` is the caller's string I/O buffer: a batch is
    /// at most `io.len()` bytes (and never crosses a page), which bounds the work of one call.
    pub fn emulate(
        &self,
        cpu: &mut impl GuestCpu,
        mem: &mut GuestMemory<'_>,
        io: &mut [u8],
    ) -> Outcome {
        if !Self::long_mode(cpu) {
            return Outcome::Stop(Stop::NotLongMode);
        }
        let walker = Walker::new(cpu, self.maxphyaddr);
        let rip = cpu.rip();
        let d = match decode::fetch(
            &self.decoder,
            &walker,
            mem,
            |g| self.device(g).is_some(),
            rip,
        ) {
            Ok(d) => d,
            Err(f) => return fail(f),
        };
        let mut x = Exec {
            emu: self,
            cpu,
            mem,
            walker,
            insn: d.insn,
            next_rip: rip.wrapping_add(u64::from(d.len)),
        };
        match x.run(io) {
            Ok(o) => o,
            Err(f) => fail(f),
        }
    }

    /// If the guest's RIP holds libvmm's forced-emulation prefix (read through the guest's page tables
    /// with execute permission), the address of the instruction after it. Anything else (another
    /// instruction, bytes the guest cannot fetch, device memory) is `None`: the guest's #UD stands.
    pub fn forced_target(&self, cpu: &impl GuestCpu, mem: &mut GuestMemory<'_>) -> Option<u64> {
        if !Self::long_mode(cpu) {
            return None;
        }
        let rip = cpu.rip();
        let len = FORCED_EMULATION_PREFIX.len() as u64;
        let last = rip.checked_add(len - 1)?;
        if !canonical(rip) || !canonical(last) {
            return None;
        }
        let walker = Walker::new(cpu, self.maxphyaddr);
        let span = walker.span(mem, rip, len, Access::Fetch).ok()?;
        if span.pieces().any(|(g, n)| self.touches_device(g, n)) {
            return None;
        }
        let mut got = [0u8; FORCED_EMULATION_PREFIX.len()];
        span.read(mem, 0, &mut got).ok()?;
        (got == FORCED_EMULATION_PREFIX).then_some(rip + len)
    }

    /// The #UD intercept with forced emulation on: if the prefix is at RIP, RIP moves past it and the
    /// next instruction is emulated (an exception it raises is reported at that instruction, as KVM
    /// does); otherwise the guest's #UD.
    pub fn emulate_forced(
        &self,
        cpu: &mut impl GuestCpu,
        mem: &mut GuestMemory<'_>,
        io: &mut [u8],
    ) -> Outcome {
        match self.forced_target(cpu, mem) {
            Some(next) => {
                cpu.set_rip(next);
                self.emulate(cpu, mem, io)
            }
            None => Outcome::Exception(Exception::InvalidOpcode),
        }
    }

    fn touches_device(&self, gpa: u64, len: u64) -> bool {
        let end = gpa.saturating_add(len);
        self.devices.iter().any(|&(b, e)| gpa < e && b < end)
    }
}

/// One instruction's execution.
struct Exec<'e, 'm, C: GuestCpu, const N: usize> {
    emu: &'e Emulator<N>,
    cpu: &'e mut C,
    mem: &'e mut GuestMemory<'m>,
    walker: Walker,
    insn: Instruction,
    next_rip: u64,
}

/// An operand, evaluated.
#[derive(Clone, Copy)]
enum Opnd {
    Reg(Reg),
    /// A memory operand: linear address and whether it is stack-segment relative (#SS, not #GP).
    Mem {
        va: u64,
        ss: bool,
    },
    Imm(u64),
}

fn reg_of(spec: RegSpec) -> Option<Reg> {
    let c = spec.class();
    let n = spec.num();
    let (num, width, high) = if c == register_class::Q {
        (n, 8, false)
    } else if c == register_class::D {
        (n, 4, false)
    } else if c == register_class::W {
        (n, 2, false)
    } else if c == register_class::B {
        if n >= 4 {
            (n - 4, 1, true)
        } else {
            (n, 1, false)
        }
    } else if c == register_class::RB {
        (n, 1, false)
    } else {
        return None;
    };
    (num < 16).then_some(Reg { num, width, high })
}

fn le(bytes: &[u8]) -> u64 {
    let mut w = [0u8; 8];
    w[..bytes.len()].copy_from_slice(bytes);
    u64::from_le_bytes(w)
}

fn cond(c: ConditionCode, f: u64) -> bool {
    let (cf, zf, sf, of, pf) = (
        f & CF != 0,
        f & ZF != 0,
        f & SF != 0,
        f & OF != 0,
        f & PF != 0,
    );
    match c {
        ConditionCode::O => of,
        ConditionCode::NO => !of,
        ConditionCode::B => cf,
        ConditionCode::AE => !cf,
        ConditionCode::Z => zf,
        ConditionCode::NZ => !zf,
        ConditionCode::A => !cf && !zf,
        ConditionCode::BE => cf || zf,
        ConditionCode::S => sf,
        ConditionCode::NS => !sf,
        ConditionCode::P => pf,
        ConditionCode::NP => !pf,
        ConditionCode::L => sf != of,
        ConditionCode::GE => sf == of,
        ConditionCode::G => !zf && sf == of,
        ConditionCode::LE => zf || sf != of,
    }
}

/// The most bytes a single ENTER writes: RBP, 31 outer frame pointers, the frame pointer.
const ENTER_MAX_PUSHES: usize = 33;

impl<C: GuestCpu, const N: usize> Exec<'_, '_, C, N> {
    fn run(&mut self, io: &mut [u8]) -> Result<Outcome, Fail> {
        let op = self.insn.opcode();
        match op {
            Opcode::NOP => self.retire(Retire::INSN),
            Opcode::MOV => self.mov(),
            Opcode::ADD => self.binary(Op::Add),
            Opcode::ADC => self.binary(Op::Adc),
            Opcode::SUB => self.binary(Op::Sub),
            Opcode::SBB => self.binary(Op::Sbb),
            Opcode::AND => self.binary(Op::And),
            Opcode::OR => self.binary(Op::Or),
            Opcode::XOR => self.binary(Op::Xor),
            Opcode::CMP => self.binary(Op::Cmp),
            Opcode::TEST => self.binary(Op::Test),
            Opcode::INC => self.unary(Unary::Inc),
            Opcode::DEC => self.unary(Unary::Dec),
            Opcode::NEG => self.unary(Unary::Neg),
            Opcode::NOT => self.unary(Unary::Not),
            Opcode::PUSH => self.push_insn(),
            Opcode::POP => self.pop_insn(),
            Opcode::ENTER => self.enter(),
            Opcode::LEAVE => self.leave(),
            Opcode::CALL => self.call(),
            Opcode::JMP => {
                let t = self.target()?;
                self.branch_to(t)
            }
            Opcode::RETURN => self.ret(),
            Opcode::LOOP | Opcode::LOOPZ | Opcode::LOOPNZ | Opcode::JRCXZ | Opcode::JECXZ => {
                self.loop_insn(op)
            }
            Opcode::INS | Opcode::OUTS => self.string_io(op == Opcode::INS, io),
            Opcode::CPUID => Ok(Outcome::Cpuid(Cpuid {
                leaf: self.cpu.gpr(0) as u32,
                subleaf: self.cpu.gpr(1) as u32,
                done: Done {
                    next_rip: self.next_rip,
                    retire: Retire::INSN,
                },
            })),
            _ => match op.condition() {
                Some(c) if op.is_jcc() => {
                    if cond(c, self.cpu.rflags()) {
                        let t = self.target()?;
                        self.branch_to(t)
                    } else {
                        self.retire(Retire::BRANCH)
                    }
                }
                _ => Err(ud()),
            },
        }
    }

    fn retire(&mut self, r: Retire) -> Result<Outcome, Fail> {
        self.cpu.set_rip(self.next_rip);
        Ok(Outcome::Retired(r))
    }

    fn branch_to(&mut self, target: u64) -> Result<Outcome, Fail> {
        if !canonical(target) {
            return Err(Exception::GeneralProtection(0).into());
        }
        self.cpu.set_rip(target);
        Ok(Outcome::Retired(Retire::BRANCH))
    }

    fn addr32(&self) -> bool {
        self.insn.prefixes.address_size()
    }

    /// Operand size of stack operations: 16 bits with 0x66 and no REX.W, else 64.
    fn stack_size(&self) -> u8 {
        let w = self.insn.prefixes.rex().map(|r| r.w()).unwrap_or(false);
        if self.insn.prefixes.operand_size() && !w {
            2
        } else {
            8
        }
    }

    fn seg_base(&self) -> u64 {
        match self.insn.prefixes.segment() {
            Segment::FS => self.cpu.fs_base(),
            Segment::GS => self.cpu.gs_base(),
            _ => 0,
        }
    }

    /// A base or index register's value in an address.
    fn addr_reg(&self, r: RegSpec, rsp: Option<u64>) -> Result<u64, Fail> {
        let c = r.class();
        if c == register_class::RIP {
            return Ok(self.next_rip);
        }
        if c == register_class::EIP {
            return Ok(self.next_rip & 0xffff_ffff);
        }
        let reg = reg_of(r).ok_or_else(ud)?;
        let v = match rsp {
            Some(v) if reg.num == 4 => v,
            _ => self.cpu.gpr(reg.num),
        };
        Ok(v & alu::mask(reg.width))
    }

    /// Evaluates operand `i`; `rsp` overrides RSP as a base (POP to memory addresses after its
    /// increment).
    fn operand(&self, i: u8, rsp: Option<u64>) -> Result<Opnd, Fail> {
        if i >= self.insn.operand_count() {
            return Err(ud());
        }
        let o = self.insn.operand(i);
        let ss_base = |r: RegSpec| {
            (r.class() == register_class::Q || r.class() == register_class::D)
                && (r.num() == 4 || r.num() == 5)
        };
        let imm = |v: u64| Ok(Opnd::Imm(v));
        let (ea, ss) = match o {
            Operand::ImmediateI8 { imm: v } => return imm(v as i64 as u64),
            Operand::ImmediateU8 { imm: v } => return imm(u64::from(v)),
            Operand::ImmediateI16 { imm: v } => return imm(v as i64 as u64),
            Operand::ImmediateU16 { imm: v } => return imm(u64::from(v)),
            Operand::ImmediateI32 { imm: v } => return imm(v as i64 as u64),
            Operand::ImmediateU32 { imm: v } => return imm(u64::from(v)),
            Operand::ImmediateI64 { imm: v } => return imm(v as u64),
            Operand::ImmediateU64 { imm: v } => return imm(v),
            Operand::Register { reg } => return reg_of(reg).map(Opnd::Reg).ok_or_else(ud),
            Operand::AbsoluteU32 { addr } => {
                if self.addr32() {
                    (u64::from(addr), false)
                } else {
                    (addr as i32 as i64 as u64, false)
                }
            }
            Operand::AbsoluteU64 { addr } => (addr, false),
            Operand::MemDeref { base } => (self.addr_reg(base, rsp)?, ss_base(base)),
            Operand::Disp { base, disp } => (
                self.addr_reg(base, rsp)?.wrapping_add(disp as i64 as u64),
                ss_base(base),
            ),
            Operand::MemIndexScale { index, scale } => (
                self.addr_reg(index, rsp)?.wrapping_mul(u64::from(scale)),
                false,
            ),
            Operand::MemIndexScaleDisp { index, scale, disp } => (
                self.addr_reg(index, rsp)?
                    .wrapping_mul(u64::from(scale))
                    .wrapping_add(disp as i64 as u64),
                false,
            ),
            Operand::MemBaseIndexScale { base, index, scale } => (
                self.addr_reg(base, rsp)?
                    .wrapping_add(self.addr_reg(index, rsp)?.wrapping_mul(u64::from(scale))),
                ss_base(base),
            ),
            Operand::MemBaseIndexScaleDisp {
                base,
                index,
                scale,
                disp,
            } => (
                self.addr_reg(base, rsp)?
                    .wrapping_add(self.addr_reg(index, rsp)?.wrapping_mul(u64::from(scale)))
                    .wrapping_add(disp as i64 as u64),
                ss_base(base),
            ),
            _ => return Err(ud()),
        };
        let ea = if self.addr32() { ea & 0xffff_ffff } else { ea };
        Ok(Opnd::Mem {
            va: self.seg_base().wrapping_add(ea),
            ss,
        })
    }

    /// The width of a memory operand (from the decoder).
    fn mem_width(&self) -> Result<u8, Fail> {
        match self.insn.mem_size().and_then(|m| m.bytes_size()) {
            Some(w @ (1 | 2 | 4 | 8)) => Ok(w),
            _ => Err(ud()),
        }
    }

    /// The operation width of an instruction whose operand 0 is its destination.
    fn width_of(&self, dst: Opnd) -> Result<u8, Fail> {
        match dst {
            Opnd::Reg(r) => Ok(r.width),
            _ => self.mem_width(),
        }
    }

    /// Translates `[va, va + len)` for `access` and classifies it.
    fn target_of(&mut self, va: u64, len: u64, access: Access, ss: bool) -> Result<Target, Fail> {
        let noncanon = if ss {
            Exception::StackFault(0)
        } else {
            Exception::GeneralProtection(0)
        };
        let last = va.wrapping_add(len - 1);
        if !canonical(va) || !canonical(last) || last < va {
            return Err(noncanon.into());
        }
        let span = self.walker.span(self.mem, va, len, access)?;
        let mut device = None;
        let mut ram = false;
        for (gpa, n) in span.pieces() {
            match self.emu.device(gpa) {
                Some((_, end)) if gpa + n <= end => {
                    if device.is_some() {
                        // Two device pieces: not one contiguous device access.
                        return Err(Stop::DeviceAccess { gpa }.into());
                    }
                    device = Some(gpa);
                }
                Some(_) => return Err(Stop::DeviceAccess { gpa }.into()),
                None => {
                    if self.emu.touches_device(gpa, n) {
                        return Err(Stop::DeviceAccess { gpa }.into());
                    }
                    self.mem.check(gpa, n).map_err(|_| Stop::Unmapped { gpa })?;
                    ram = true;
                }
            }
        }
        match (device, ram) {
            (Some(gpa), false) => Ok(Target::Device(gpa)),
            (Some(gpa), true) => Err(Stop::DeviceAccess { gpa }.into()),
            (None, _) => Ok(Target::Ram(span)),
        }
    }

    /// A RAM-only access (stack, string, read-modify-write): device memory stops the VM.
    fn ram(&mut self, va: u64, len: u64, access: Access, ss: bool) -> Result<Span, Fail> {
        match self.target_of(va, len, access, ss)? {
            Target::Ram(s) => Ok(s),
            Target::Device(gpa) => Err(Stop::DeviceAccess { gpa }.into()),
        }
    }

    fn read_span(&self, s: &Span, w: u8) -> Result<u64, Fail> {
        let mut b = [0u8; 8];
        s.read(self.mem, 0, &mut b[..w as usize])?;
        Ok(le(&b[..w as usize]))
    }

    fn write_span(&mut self, s: &Span, w: u8, v: u64) -> Result<(), Fail> {
        s.write(self.mem, 0, &v.to_le_bytes()[..w as usize])?;
        Ok(())
    }

    /// Reads a register, immediate or RAM operand of width `w`.
    fn read(&mut self, o: Opnd, w: u8) -> Result<u64, Fail> {
        match o {
            Opnd::Reg(r) => Ok(r.read(self.cpu)),
            Opnd::Imm(v) => Ok(v & alu::mask(w)),
            Opnd::Mem { va, ss } => {
                let s = self.ram(va, u64::from(w), Access::Read, ss)?;
                self.read_span(&s, w)
            }
        }
    }

    fn mov(&mut self) -> Result<Outcome, Fail> {
        let dst = self.operand(0, None)?;
        let src = self.operand(1, None)?;
        let w = self.width_of(dst)?;
        let done = Done {
            next_rip: self.next_rip,
            retire: Retire::INSN,
        };
        match (dst, src) {
            (Opnd::Reg(d), Opnd::Mem { va, ss }) => {
                match self.target_of(va, u64::from(w), Access::Read, ss)? {
                    Target::Ram(s) => {
                        let v = self.read_span(&s, w)?;
                        d.write(self.cpu, v);
                    }
                    Target::Device(gpa) => {
                        return Ok(Outcome::Mmio(Mmio {
                            gpa,
                            size: w,
                            write: None,
                            dest: Some(d),
                            done,
                        }))
                    }
                }
            }
            (Opnd::Reg(d), src) => {
                let v = self.read(src, w)?;
                d.write(self.cpu, v);
            }
            (Opnd::Mem { va, ss }, src @ (Opnd::Reg(_) | Opnd::Imm(_))) => {
                let v = self.read(src, w)?;
                match self.target_of(va, u64::from(w), Access::Write, ss)? {
                    Target::Ram(s) => self.write_span(&s, w, v)?,
                    Target::Device(gpa) => {
                        return Ok(Outcome::Mmio(Mmio {
                            gpa,
                            size: w,
                            write: Some(v),
                            dest: None,
                            done,
                        }))
                    }
                }
            }
            _ => return Err(ud()),
        }
        self.retire(Retire::INSN)
    }

    fn set_flags(&mut self, f: u64) {
        let r = self.cpu.rflags();
        self.cpu.set_rflags((r & !ARITH) | (f & ARITH));
    }

    fn binary(&mut self, op: Op) -> Result<Outcome, Fail> {
        let dst = self.operand(0, None)?;
        let src = self.operand(1, None)?;
        let w = self.width_of(dst)?;
        let writes = !matches!(op, Op::Cmp | Op::Test);
        let dst_span = match dst {
            Opnd::Mem { va, ss } => Some(self.ram(
                va,
                u64::from(w),
                if writes { Access::Write } else { Access::Read },
                ss,
            )?),
            Opnd::Reg(_) => None,
            Opnd::Imm(_) => return Err(ud()),
        };
        let a = match (&dst_span, dst) {
            (Some(s), _) => self.read_span(s, w)?,
            (None, o) => self.read(o, w)?,
        };
        let b = self.read(src, w)?;
        let (r, f, write) = alu::binary(op, a, b, self.cpu.rflags(), w);
        if write {
            match (dst_span, dst) {
                (Some(s), _) => self.write_span(&s, w, r)?,
                (None, Opnd::Reg(d)) => d.write(self.cpu, r),
                _ => return Err(ud()),
            }
        }
        self.set_flags(f);
        self.retire(Retire::INSN)
    }

    fn unary(&mut self, op: Unary) -> Result<Outcome, Fail> {
        let dst = self.operand(0, None)?;
        let w = self.width_of(dst)?;
        let (a, span) = match dst {
            Opnd::Mem { va, ss } => {
                let s = self.ram(va, u64::from(w), Access::Write, ss)?;
                (self.read_span(&s, w)?, Some(s))
            }
            Opnd::Reg(r) => (r.read(self.cpu), None),
            Opnd::Imm(_) => return Err(ud()),
        };
        let (r, f) = alu::unary(op, a, self.cpu.rflags(), w);
        match (span, dst) {
            (Some(s), _) => self.write_span(&s, w, r)?,
            (None, Opnd::Reg(d)) => d.write(self.cpu, r),
            _ => return Err(ud()),
        }
        self.set_flags(f);
        self.retire(Retire::INSN)
    }

    /// Translates a push of `size` bytes below `rsp`: (span, new RSP).
    fn stack_push(&mut self, rsp: u64, size: u8) -> Result<(Span, u64), Fail> {
        let new = rsp.wrapping_sub(u64::from(size));
        let s = self.ram(new, u64::from(size), Access::Write, true)?;
        Ok((s, new))
    }

    fn stack_read(&mut self, at: u64, size: u8) -> Result<u64, Fail> {
        let s = self.ram(at, u64::from(size), Access::Read, true)?;
        self.read_span(&s, size)
    }

    fn push_insn(&mut self) -> Result<Outcome, Fail> {
        let size = self.stack_size();
        let v = match self.operand(0, None)? {
            Opnd::Reg(r) => Reg { width: size, ..r }.read(self.cpu),
            o => self.read(o, size)?,
        };
        let (s, new) = self.stack_push(self.cpu.gpr(4), size)?;
        self.write_span(&s, size, v)?;
        self.cpu.set_gpr(4, new);
        self.retire(Retire::INSN)
    }

    fn pop_insn(&mut self) -> Result<Outcome, Fail> {
        let size = self.stack_size();
        let rsp = self.cpu.gpr(4);
        let v = self.stack_read(rsp, size)?;
        let new = rsp.wrapping_add(u64::from(size));
        match self.operand(0, Some(new))? {
            Opnd::Reg(r) => {
                self.cpu.set_gpr(4, new);
                Reg { width: size, ..r }.write(self.cpu, v);
            }
            Opnd::Mem { va, ss } => {
                let s = self.ram(va, u64::from(size), Access::Write, ss)?;
                self.write_span(&s, size, v)?;
                self.cpu.set_gpr(4, new);
            }
            Opnd::Imm(_) => return Err(ud()),
        }
        self.retire(Retire::INSN)
    }

    fn enter(&mut self) -> Result<Outcome, Fail> {
        let size = self.stack_size();
        let (frame_size, level) = match (self.operand(0, None)?, self.operand(1, None)?) {
            (Opnd::Imm(a), Opnd::Imm(b)) => (a & 0xffff, (b & 0x1f) as usize),
            _ => return Err(ud()),
        };
        let s = u64::from(size);
        let rsp0 = self.cpu.gpr(4);
        let rbp = self.cpu.gpr(5);
        // The values pushed, in order: RBP, the outer frame pointers, the new frame pointer.
        let mut values = [0u64; ENTER_MAX_PUSHES];
        let mut n = 0;
        values[n] = rbp;
        n += 1;
        let frame = rsp0.wrapping_sub(s);
        if level > 0 {
            for i in 1..level as u64 {
                values[n] = self.stack_read(rbp.wrapping_sub(i * s), size)?;
                n += 1;
            }
            values[n] = frame;
            n += 1;
        }
        let mut spans = [None; ENTER_MAX_PUSHES];
        let mut rsp = rsp0;
        for span in spans.iter_mut().take(n) {
            let (sp, new) = self.stack_push(rsp, size)?;
            *span = Some(sp);
            rsp = new;
        }
        let final_rsp = rsp.wrapping_sub(frame_size);
        if !canonical(final_rsp) {
            return Err(Exception::StackFault(0).into());
        }
        for (v, sp) in values.iter().zip(spans.iter()).take(n) {
            if let Some(sp) = sp {
                self.write_span(sp, size, *v)?;
            }
        }
        if size == 8 {
            self.cpu.set_gpr(5, frame);
        } else {
            Reg {
                num: 5,
                width: 2,
                high: false,
            }
            .write(self.cpu, frame);
        }
        self.cpu.set_gpr(4, final_rsp);
        self.retire(Retire::INSN)
    }

    fn leave(&mut self) -> Result<Outcome, Fail> {
        let size = self.stack_size();
        let rbp = self.cpu.gpr(5);
        let v = self.stack_read(rbp, size)?;
        self.cpu.set_gpr(4, rbp.wrapping_add(u64::from(size)));
        Reg {
            num: 5,
            width: size,
            high: false,
        }
        .write(self.cpu, v);
        self.retire(Retire::INSN)
    }

    /// The target of a near JMP/CALL/Jcc: relative to the next instruction, or indirect (64 bits).
    fn target(&mut self) -> Result<u64, Fail> {
        match self.operand(0, None)? {
            Opnd::Imm(rel) => Ok(self.next_rip.wrapping_add(rel)),
            Opnd::Reg(r) => Ok(Reg { width: 8, ..r }.read(self.cpu)),
            o @ Opnd::Mem { .. } => self.read(o, 8),
        }
    }

    fn call(&mut self) -> Result<Outcome, Fail> {
        let t = self.target()?;
        if !canonical(t) {
            return Err(Exception::GeneralProtection(0).into());
        }
        let (s, new) = self.stack_push(self.cpu.gpr(4), 8)?;
        self.write_span(&s, 8, self.next_rip)?;
        self.cpu.set_gpr(4, new);
        self.branch_to(t)
    }

    fn ret(&mut self) -> Result<Outcome, Fail> {
        let extra = match self.insn.operand_count() {
            0 => 0,
            _ => match self.operand(0, None)? {
                Opnd::Imm(v) => v & 0xffff,
                _ => return Err(ud()),
            },
        };
        let rsp = self.cpu.gpr(4);
        let t = self.stack_read(rsp, 8)?;
        if !canonical(t) {
            return Err(Exception::GeneralProtection(0).into());
        }
        self.cpu.set_gpr(4, rsp.wrapping_add(8).wrapping_add(extra));
        self.branch_to(t)
    }

    fn loop_insn(&mut self, op: Opcode) -> Result<Outcome, Fail> {
        let count = Reg {
            num: 1,
            width: if self.addr32() { 4 } else { 8 },
            high: false,
        };
        let c = count.read(self.cpu);
        let zf = self.cpu.rflags() & ZF != 0;
        let (new, taken) = match op {
            Opcode::JRCXZ | Opcode::JECXZ => (c, c == 0),
            _ => {
                let n = c.wrapping_sub(1) & alu::mask(count.width);
                let more = n != 0;
                let taken = match op {
                    Opcode::LOOPZ => more && zf,
                    Opcode::LOOPNZ => more && !zf,
                    _ => more,
                };
                (n, taken)
            }
        };
        let t = if taken { Some(self.target()?) } else { None };
        if let Some(t) = t {
            if !canonical(t) {
                return Err(Exception::GeneralProtection(0).into());
            }
        }
        count.write(self.cpu, new);
        match t {
            Some(t) => self.branch_to(t),
            None => self.retire(Retire::BRANCH),
        }
    }

    /// INS/OUTS (with or without REP): one batch of elements within one page (a single element may
    /// straddle two) and within the caller's buffer.
    fn string_io(&mut self, ins: bool, io: &mut [u8]) -> Result<Outcome, Fail> {
        let size = self.mem_width()?;
        if !matches!(size, 1 | 2 | 4) {
            return Err(ud());
        }
        let s = u64::from(size);
        let a32 = self.addr32();
        let am = if a32 { 0xffff_ffffu64 } else { u64::MAX };
        let rep = self.insn.prefixes.rep_any();
        let want = if rep {
            let c = self.cpu.gpr(1) & am;
            if c == 0 {
                return self.retire(Retire::INSN);
            }
            c
        } else {
            1
        };
        if io.len() < size as usize {
            return Err(Stop::IoBuffer.into());
        }
        let down = self.cpu.rflags() & DF != 0;
        let (index, base) = if ins {
            (7u8, 0)
        } else {
            (6u8, self.seg_base())
        };
        let va = base.wrapping_add(self.cpu.gpr(index) & am);
        // Elements wholly inside the first element's page, in the direction of travel.
        let off = va & (PAGE - 1);
        let in_page = if off + s > PAGE {
            1
        } else if down {
            off / s + 1
        } else {
            (PAGE - off) / s
        };
        let count = want.min(in_page).min(io.len() as u64 / s).max(1);
        let lo = if down {
            va.wrapping_sub((count - 1) * s)
        } else {
            va
        };
        let access = if ins { Access::Write } else { Access::Read };
        // The first element first, so a fault names its address.
        self.ram(va, s, access, false)?;
        let span = self.ram(lo, count * s, access, false)?;
        let first = va.wrapping_sub(lo);
        if !ins {
            for i in 0..count {
                let at = if down { first - i * s } else { first + i * s };
                span.read(
                    self.mem,
                    at,
                    &mut io[(i * s) as usize..((i + 1) * s) as usize],
                )?;
            }
        }
        Ok(Outcome::PortIo(PortIo {
            port: self.cpu.gpr(2) as u16,
            size,
            count: count as u32,
            dir: if ins { IoDir::In } else { IoDir::Out },
            span,
            first,
            down,
            addr32: a32,
            rep,
            next_rip: self.next_rip,
        }))
    }
}
