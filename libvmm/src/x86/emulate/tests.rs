//! Host tests of the emulator over a model vCPU (`testing::emu_cpu`) and guest memory with real 4-level
//! page tables.
use super::alu::{self, Op, Unary};
use super::alu_vectors::ALU_VECTORS;
use super::ctl::*;
use super::rflags::*;
use super::walk::pf;
use super::*;
use crate::guest_mem::GuestMemory;

/// The model vCPU (shared with the emulator's fuzz target).
type Cpu = crate::testing::emu_cpu::ModelCpu;

const RAX: usize = 0;
const RCX: usize = 1;
const RDX: usize = 2;
const RBX: usize = 3;
const RSP: usize = 4;
const RBP: usize = 5;
const RSI: usize = 6;
const RDI: usize = 7;

/// Guest RAM: 4 MiB at guest-physical 0.
const RAM: usize = 4 << 20;
const PML4: u64 = 0x1000;
const PDPT: u64 = 0x2000;
const PD: u64 = 0x3000;
/// Page table for virtual 0..2 MiB (4 KiB pages, identity).
const PT: u64 = 0x4000;
const CODE: u64 = 0x10000;
const DATA: u64 = 0x20000;
const STACK: u64 = 0x80000;
/// Virtual 4 MiB..6 MiB maps (2 MiB page) guest-physical DEVICE_GPA..; the device is the first 4 KiB.
const DEVICE_VA: u64 = 0x40_0000;
const DEVICE_GPA: u64 = 0xD000_0000;
/// Virtual 6 MiB..8 MiB maps a guest-physical range that is neither RAM nor a device.
const HOLE_VA: u64 = 0x60_0000;
const HOLE_GPA: u64 = 0xE000_0000;

const P: u64 = 1;
const W: u64 = 2;
const U: u64 = 4;
const PS: u64 = 1 << 7;
const XD: u64 = 1 << 63;

struct Env {
    ram: Vec<u8>,
    cpu: Cpu,
    emu: Emulator<4>,
    io: [u8; 64],
}

impl Env {
    /// 64-bit supervisor mode, CR0.WP and EFER.NXE on; virtual 0..4 MiB identity-mapped (the first
    /// 2 MiB with 4 KiB pages, user-accessible and writable), the device and the hole above.
    fn new() -> Env {
        let mut e = Env {
            ram: vec![0; RAM],
            cpu: Cpu {
                rip: CODE,
                rflags: 0x2,
                cr0: CR0_PG | CR0_WP | 1,
                cr3: PML4,
                cr4: CR4_PAE,
                efer: EFER_LMA | EFER_NXE | (1 << 8),
                long: true,
                ..Cpu::default()
            },
            emu: Emulator::new(48),
            io: [0; 64],
        };
        e.cpu.gpr[RSP] = STACK;
        e.w64(PML4, PDPT | P | W | U);
        e.w64(PDPT, PD | P | W | U);
        e.w64(PD, PT | P | W | U);
        e.w64(PD + 8, 0x20_0000 | P | W | U | PS);
        e.w64(PD + 16, DEVICE_GPA | P | W | U | PS);
        e.w64(PD + 24, HOLE_GPA | P | W | U | PS);
        for i in 0..512 {
            e.w64(PT + i * 8, (i << 12) | P | W | U);
        }
        e.emu.add_device(DEVICE_GPA, 0x1000).unwrap();
        e
    }

    fn w64(&mut self, gpa: u64, v: u64) {
        self.ram[gpa as usize..gpa as usize + 8].copy_from_slice(&v.to_le_bytes());
    }

    fn r64(&self, gpa: u64) -> u64 {
        u64::from_le_bytes(self.ram[gpa as usize..gpa as usize + 8].try_into().unwrap())
    }

    fn put(&mut self, gpa: u64, bytes: &[u8]) {
        self.ram[gpa as usize..gpa as usize + bytes.len()].copy_from_slice(bytes);
    }

    /// Sets the flags of the 4 KiB PTE of `va` (< 2 MiB), keeping its frame.
    fn pte(&mut self, va: u64, flags: u64) {
        let at = PT + (va >> 12) * 8;
        self.w64(at, (va & !0xfff) | flags);
    }

    /// Puts `code` at the guest's RIP and emulates one instruction.
    fn run(&mut self, code: &[u8]) -> Outcome {
        let rip = self.cpu.rip;
        self.put(rip, code);
        self.step()
    }

    fn step(&mut self) -> Outcome {
        let mut mem = GuestMemory::new(0, &mut self.ram);
        self.emu.emulate(&mut self.cpu, &mut mem, &mut self.io)
    }

    fn forced(&mut self) -> Outcome {
        let mut mem = GuestMemory::new(0, &mut self.ram);
        self.emu
            .emulate_forced(&mut self.cpu, &mut mem, &mut self.io)
    }

    /// Completes a string I/O batch (IN data = `data`).
    fn complete_io(&mut self, io: PortIo, data: &[u8]) -> Retire {
        let mut mem = GuestMemory::new(0, &mut self.ram);
        let mut buf = [0u8; 64];
        buf[..data.len()].copy_from_slice(data);
        io.complete(&mut self.cpu, &mut mem, &buf).unwrap()
    }
}

fn pf_at(error: u32, address: u64) -> Outcome {
    Outcome::Exception(Exception::PageFault { error, address })
}

const RETIRED: Outcome = Outcome::Retired(Retire::INSN);
const BRANCH: Outcome = Outcome::Retired(Retire::BRANCH);

// ---- arithmetic and logic ----

fn op_of(name: &str) -> Result<Op, Unary> {
    match name {
        "add" => Ok(Op::Add),
        "adc" => Ok(Op::Adc),
        "sub" => Ok(Op::Sub),
        "sbb" => Ok(Op::Sbb),
        "and" => Ok(Op::And),
        "or" => Ok(Op::Or),
        "xor" => Ok(Op::Xor),
        "cmp" => Ok(Op::Cmp),
        "test" => Ok(Op::Test),
        "inc" => Err(Unary::Inc),
        "dec" => Err(Unary::Dec),
        "neg" => Err(Unary::Neg),
        _ => Err(Unary::Not),
    }
}

/// The flags an operation defines (AF is undefined after AND/OR/XOR/TEST).
fn defined(name: &str) -> u64 {
    match name {
        "and" | "or" | "xor" | "test" => ARITH & !AF,
        _ => ARITH,
    }
}

#[test]
fn alu_results_and_flags_match_the_recorded_cpu() {
    for &(name, w, a, b, fin, r, f) in ALU_VECTORS {
        let (got, gf) = match op_of(name) {
            Ok(op) => {
                let (res, fl, write) = alu::binary(op, a, b, fin, w);
                (if write { res } else { a & alu::mask(w) }, fl)
            }
            Err(u) => alu::unary(u, a, fin, w),
        };
        let m = defined(name);
        assert_eq!(
            (got, gf & m),
            (r, f & m),
            "{name} w={w} {a:#x},{b:#x} in {fin:#x}"
        );
    }
}

/// The opcode of `op r/m, reg` (byte form; +1 for the wider forms).
fn rm_reg_opcode(name: &str) -> Option<u8> {
    Some(match name {
        "add" => 0x00,
        "or" => 0x08,
        "adc" => 0x10,
        "sbb" => 0x18,
        "and" => 0x20,
        "sub" => 0x28,
        "xor" => 0x30,
        "cmp" => 0x38,
        "test" => 0x84,
        _ => return None,
    })
}

fn sized(w: u8, byte_op: u8, rest: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    match w {
        2 => v.push(0x66),
        8 => v.push(0x48),
        _ => {}
    }
    v.push(if w == 1 { byte_op } else { byte_op + 1 });
    v.extend_from_slice(rest);
    v
}

#[test]
fn alu_through_memory_and_register_operands_matches_the_recorded_cpu() {
    for (i, &(name, w, a, b, fin, r, f)) in ALU_VECTORS.iter().enumerate() {
        if i % 3 != 0 {
            continue;
        }
        let m = defined(name);
        let mask = alu::mask(w);
        // op [rbx], rcx  (memory destination)
        let mut e = Env::new();
        e.w64(DATA, 0x5555_5555_5555_5555);
        let before = e.r64(DATA);
        let width_bytes = w as usize;
        let mut mem = before.to_le_bytes();
        mem[..width_bytes].copy_from_slice(&a.to_le_bytes()[..width_bytes]);
        e.w64(DATA, u64::from_le_bytes(mem));
        e.cpu.gpr[RBX] = DATA;
        e.cpu.gpr[RCX] = b;
        e.cpu.rflags = 0x2 | fin;
        let code = match rm_reg_opcode(name) {
            Some(op) => sized(w, op, &[0x0b]),
            None => {
                let ext = match name {
                    "inc" => 0,
                    "dec" => 1,
                    "not" => 2,
                    _ => 3,
                };
                let op = if matches!(name, "inc" | "dec") {
                    0xfe
                } else {
                    0xf6
                };
                sized(w, op, &[0x03 | (ext << 3)])
            }
        };
        assert_eq!(e.run(&code), RETIRED, "{name} {code:02x?}");
        let got = e.r64(DATA) & mask;
        assert_eq!(got, r, "{name} w={w} {a:#x},{b:#x} memory");
        assert_eq!(e.cpu.rflags & m, f & m, "{name} w={w} {a:#x},{b:#x} flags");
        assert_eq!(e.cpu.rip, CODE + code.len() as u64);
        // Bytes beyond the operand are untouched.
        assert_eq!(e.r64(DATA) & !mask, u64::from_le_bytes(mem) & !mask);
    }
}

#[test]
fn register_destinations_follow_the_width_rules() {
    let mut e = Env::new();
    e.cpu.gpr[RAX] = 0xffff_ffff_ffff_ffff;
    e.cpu.gpr[RCX] = 1;
    // add eax, ecx: 32-bit result zero-extends.
    assert_eq!(e.run(&[0x01, 0xc8]), RETIRED);
    assert_eq!(e.cpu.gpr[RAX], 0);
    assert_eq!(e.cpu.rflags & (CF | ZF), CF | ZF);
    // add ah, cl: only bits 15:8 change.
    e.cpu.rip = CODE;
    e.cpu.gpr[RAX] = 0x1234_5678_9abc_def0;
    assert_eq!(e.run(&[0x00, 0xcc]), RETIRED);
    assert_eq!(e.cpu.gpr[RAX], 0x1234_5678_9abc_dff0);
    // add sil, cl (REX): low byte of RSI.
    e.cpu.rip = CODE;
    e.cpu.gpr[RSI] = 0xff;
    assert_eq!(e.run(&[0x40, 0x00, 0xce]), RETIRED);
    assert_eq!(e.cpu.gpr[RSI], 0);
    // add ax, 0x7fff with 0x0001: 16-bit overflow, upper bits kept.
    e.cpu.rip = CODE;
    e.cpu.gpr[RAX] = 0xaaaa_aaaa_aaaa_0001;
    assert_eq!(e.run(&[0x66, 0x05, 0xff, 0x7f]), RETIRED);
    assert_eq!(e.cpu.gpr[RAX], 0xaaaa_aaaa_aaaa_8000);
    assert_eq!(e.cpu.rflags & (OF | SF | CF), OF | SF);
    // sub rax, imm8 -1 sign-extends; cmp leaves rax.
    e.cpu.rip = CODE;
    e.cpu.gpr[RAX] = 5;
    assert_eq!(e.run(&[0x48, 0x83, 0xf8, 0xff]), RETIRED);
    assert_eq!(e.cpu.gpr[RAX], 5);
    assert_eq!(e.cpu.rflags & (CF | ZF), CF);
}

// ---- MOV and MMIO ----

#[test]
fn mov_loads_and_stores_every_width() {
    for (w, store, load) in [
        (1u8, vec![0x88, 0x0b], vec![0x8a, 0x13]),
        (2, vec![0x66, 0x89, 0x0b], vec![0x66, 0x8b, 0x13]),
        (4, vec![0x89, 0x0b], vec![0x8b, 0x13]),
        (8, vec![0x48, 0x89, 0x0b], vec![0x48, 0x8b, 0x13]),
    ] {
        let mask = alu::mask(w);
        let mut e = Env::new();
        e.w64(DATA, u64::MAX);
        e.cpu.gpr[RBX] = DATA;
        e.cpu.gpr[RCX] = 0x0102_0304_0506_0708;
        e.cpu.gpr[RDX] = 0xeeee_eeee_eeee_eeee;
        assert_eq!(e.run(&store), RETIRED);
        assert_eq!(e.r64(DATA), !mask | (0x0102_0304_0506_0708 & mask));
        e.cpu.rip = CODE;
        assert_eq!(e.run(&load), RETIRED);
        let want = match w {
            4 => 0x0506_0708,
            8 => 0x0102_0304_0506_0708,
            _ => (0xeeee_eeee_eeee_eeee & !mask) | (0x0102_0304_0506_0708 & mask),
        };
        assert_eq!(e.cpu.gpr[RDX], want, "w={w}");
    }
}

#[test]
fn mov_addressing_forms() {
    let mut e = Env::new();
    // mov qword [rbx], imm32 -1: sign-extended.
    e.cpu.gpr[RBX] = DATA;
    assert_eq!(e.run(&[0x48, 0xc7, 0x03, 0xff, 0xff, 0xff, 0xff]), RETIRED);
    assert_eq!(e.r64(DATA), u64::MAX);
    // mov eax, [rip + 0x100]: relative to the next instruction.
    e.cpu.rip = CODE;
    e.w64(CODE + 6 + 0x100, 0x1122_3344_5566_7788);
    assert_eq!(e.run(&[0x8b, 0x05, 0x00, 0x01, 0x00, 0x00]), RETIRED);
    assert_eq!(e.cpu.gpr[RAX], 0x5566_7788);
    // mov rax, fs:[rcx*8 + 0x10]
    e.cpu.rip = CODE;
    e.cpu.fs = DATA;
    e.cpu.gpr[RCX] = 2;
    e.w64(DATA + 0x20, 0xabcd);
    assert_eq!(
        e.run(&[0x64, 0x48, 0x8b, 0x04, 0xcd, 0x10, 0, 0, 0]),
        RETIRED
    );
    assert_eq!(e.cpu.gpr[RAX], 0xabcd);
    // mov rax, moffs64
    e.cpu.rip = CODE;
    let mut code = vec![0x48, 0xa1];
    code.extend_from_slice(&(DATA + 8).to_le_bytes());
    e.w64(DATA + 8, 0x77);
    assert_eq!(e.run(&code), RETIRED);
    assert_eq!(e.cpu.gpr[RAX], 0x77);
    // mov eax, [ebx] with 0x67: the address is truncated to 32 bits.
    e.cpu.rip = CODE;
    e.cpu.gpr[RBX] = 0xffff_ffff_0000_0000 | DATA;
    assert_eq!(e.run(&[0x67, 0x8b, 0x03]), RETIRED);
    assert_eq!(e.cpu.gpr[RAX], 0xffff_ffff);
    // A non-canonical address is #GP(0); through RBP it is #SS(0).
    e.cpu.rip = CODE;
    e.cpu.gpr[RBX] = 0x8000_0000_0000_0000;
    assert_eq!(
        e.run(&[0x8b, 0x03]),
        Outcome::Exception(Exception::GeneralProtection(0))
    );
    e.cpu.gpr[RBP] = 0x8000_0000_0000_0000;
    assert_eq!(
        e.run(&[0x8b, 0x45, 0x00]),
        Outcome::Exception(Exception::StackFault(0))
    );
    assert_eq!(e.cpu.rip, CODE);
}

#[test]
fn mov_to_a_device_range_is_an_mmio_outcome() {
    let mut e = Env::new();
    e.cpu.gpr[RBX] = DEVICE_VA + 0x10;
    e.cpu.gpr[RCX] = 0xdead_beef_cafe_f00d;
    // Store: mov [rbx], ecx
    match e.run(&[0x89, 0x0b]) {
        Outcome::Mmio(m) => {
            assert_eq!(
                (m.gpa, m.size, m.write),
                (DEVICE_GPA + 0x10, 4, Some(0xcafe_f00d))
            );
            assert_eq!(e.cpu.rip, CODE, "RIP waits for the device");
            assert_eq!(m.complete(&mut e.cpu, 0), Retire::INSN);
            assert_eq!(e.cpu.rip, CODE + 2);
        }
        o => panic!("{o:?}"),
    }
    // Load: mov ax, [rbx]
    e.cpu.rip = CODE;
    e.cpu.gpr[RAX] = 0x1111_1111_1111_1111;
    match e.run(&[0x66, 0x8b, 0x03]) {
        Outcome::Mmio(m) => {
            assert_eq!((m.gpa, m.size, m.write), (DEVICE_GPA + 0x10, 2, None));
            m.complete(&mut e.cpu, 0xffff_abcd);
            assert_eq!(e.cpu.gpr[RAX], 0x1111_1111_1111_abcd);
            assert_eq!(e.cpu.rip, CODE + 3);
        }
        o => panic!("{o:?}"),
    }
    // Store of an immediate: mov byte [rbx], 0x5a
    e.cpu.rip = CODE;
    assert!(matches!(
        e.run(&[0xc6, 0x03, 0x5a]),
        Outcome::Mmio(Mmio {
            size: 1,
            write: Some(0x5a),
            ..
        })
    ));
    // A read-modify-write of device memory stops the VM; so does a stack access there.
    e.cpu.rip = CODE;
    assert_eq!(
        e.run(&[0x01, 0x0b]),
        Outcome::Stop(Stop::DeviceAccess {
            gpa: DEVICE_GPA + 0x10
        })
    );
    e.cpu.gpr[RSP] = DEVICE_VA + 0x100;
    assert!(matches!(
        e.run(&[0x50]),
        Outcome::Stop(Stop::DeviceAccess { .. })
    ));
    // An access straddling the device's end (into the hole) stops the VM.
    e.cpu.gpr[RBX] = DEVICE_VA + 0xffe;
    assert_eq!(
        e.run(&[0x89, 0x0b]),
        Outcome::Stop(Stop::Unmapped {
            gpa: DEVICE_GPA + 0x1000
        })
    );
    // Neither RAM nor device: a clean stop naming the address.
    e.cpu.gpr[RBX] = HOLE_VA + 8;
    assert_eq!(
        e.run(&[0x89, 0x0b]),
        Outcome::Stop(Stop::Unmapped { gpa: HOLE_GPA + 8 })
    );
    assert_eq!(e.cpu.rip, CODE);
}

#[test]
fn mmio_instruction_crossing_a_page_boundary() {
    let mut e = Env::new();
    // mov dword [rbx + 0x20], 0x12345678: 7 bytes, 3 on the first page and 4 on the next.
    e.cpu.rip = CODE + 0xffd;
    e.cpu.gpr[RBX] = DEVICE_VA;
    match e.run(&[0xc7, 0x43, 0x20, 0x78, 0x56, 0x34, 0x12]) {
        Outcome::Mmio(m) => {
            assert_eq!(
                (m.gpa, m.size, m.write),
                (DEVICE_GPA + 0x20, 4, Some(0x1234_5678))
            );
            m.complete(&mut e.cpu, 0);
            assert_eq!(e.cpu.rip, CODE + 0x1004);
        }
        o => panic!("{o:?}"),
    }
    // The same with the second page not present: #PF on the fetch at that page's first byte.
    e.cpu.rip = CODE + 0xffd;
    e.pte(CODE + 0x1000, 0);
    assert_eq!(e.step(), pf_at(pf::FETCH, CODE + 0x1000));
    // An instruction wholly on the first page does not need the second.
    e.cpu.rip = CODE + 0xffe;
    assert_eq!(e.run(&[0x90]), RETIRED);
    // ...but one that does (2 bytes at the last byte) faults there.
    e.cpu.rip = CODE + 0xfff;
    assert_eq!(e.run(&[0x48]), pf_at(pf::FETCH, CODE + 0x1000));
}

#[test]
fn data_access_crossing_a_page_boundary() {
    let mut e = Env::new();
    e.cpu.gpr[RBX] = DATA + 0xffc;
    e.cpu.gpr[RCX] = 0x1122_3344_5566_7788;
    assert_eq!(e.run(&[0x48, 0x89, 0x0b]), RETIRED);
    assert_eq!(e.r64(DATA + 0xffc), 0x1122_3344_5566_7788);
    // Second page read-only: #PF (write, present) at its first byte, and nothing written.
    e.cpu.rip = CODE;
    e.pte(DATA + 0x1000, P | U);
    e.cpu.gpr[RCX] = 0;
    assert_eq!(
        e.run(&[0x48, 0x89, 0x0b]),
        pf_at(pf::PRESENT | pf::WRITE, DATA + 0x1000)
    );
    assert_eq!(e.r64(DATA + 0xffc), 0x1122_3344_5566_7788);
}

// ---- page-walk permissions ----

#[test]
fn page_walk_permissions_give_the_cpu_error_codes() {
    struct Case {
        pte: u64,
        cpl: u8,
        wp: bool,
        nxe: bool,
        smap: bool,
        code: &'static [u8],
        want: Option<u32>,
    }
    // Data page DATA, accessed by `mov [rbx], ecx` (write) or `mov ecx, [rbx]` (read).
    const WR: &[u8] = &[0x89, 0x0b];
    const RD: &[u8] = &[0x8b, 0x0b];
    let cases = [
        // Not present: P = 0.
        Case {
            pte: 0,
            cpl: 0,
            wp: true,
            nxe: true,
            smap: false,
            code: RD,
            want: Some(0),
        },
        Case {
            pte: 0,
            cpl: 0,
            wp: true,
            nxe: true,
            smap: false,
            code: WR,
            want: Some(pf::WRITE),
        },
        Case {
            pte: 0,
            cpl: 3,
            wp: true,
            nxe: true,
            smap: false,
            code: WR,
            want: Some(pf::WRITE | pf::USER),
        },
        // Read-only page: supervisor write faults with WP, succeeds without; user write always faults.
        Case {
            pte: P | U,
            cpl: 0,
            wp: true,
            nxe: true,
            smap: false,
            code: WR,
            want: Some(pf::PRESENT | pf::WRITE),
        },
        Case {
            pte: P | U,
            cpl: 0,
            wp: false,
            nxe: true,
            smap: false,
            code: WR,
            want: None,
        },
        Case {
            pte: P | U,
            cpl: 3,
            wp: false,
            nxe: true,
            smap: false,
            code: WR,
            want: Some(pf::PRESENT | pf::WRITE | pf::USER),
        },
        Case {
            pte: P | U,
            cpl: 3,
            wp: true,
            nxe: true,
            smap: false,
            code: RD,
            want: None,
        },
        // Supervisor page from user mode.
        Case {
            pte: P | W,
            cpl: 3,
            wp: true,
            nxe: true,
            smap: false,
            code: RD,
            want: Some(pf::PRESENT | pf::USER),
        },
        Case {
            pte: P | W,
            cpl: 0,
            wp: true,
            nxe: true,
            smap: false,
            code: RD,
            want: None,
        },
        // SMAP: supervisor data access to a user page with RFLAGS.AC = 0.
        Case {
            pte: P | W | U,
            cpl: 0,
            wp: true,
            nxe: true,
            smap: true,
            code: RD,
            want: Some(pf::PRESENT),
        },
        // XD without EFER.NXE is a reserved bit.
        Case {
            pte: P | W | U | XD,
            cpl: 0,
            wp: true,
            nxe: false,
            smap: false,
            code: RD,
            want: Some(pf::PRESENT | pf::RSVD),
        },
        // XD with NXE does not stop data accesses.
        Case {
            pte: P | W | U | XD,
            cpl: 0,
            wp: true,
            nxe: true,
            smap: false,
            code: WR,
            want: None,
        },
        // A frame above MAXPHYADDR (48) is a reserved-bit fault.
        Case {
            pte: P | W | U | (1 << 50),
            cpl: 3,
            wp: true,
            nxe: true,
            smap: false,
            code: RD,
            want: Some(pf::PRESENT | pf::RSVD | pf::USER),
        },
    ];
    for (i, c) in cases.iter().enumerate() {
        let mut e = Env::new();
        e.pte(DATA, c.pte);
        e.cpu.cpl = c.cpl;
        if !c.wp {
            e.cpu.cr0 &= !CR0_WP;
        }
        if !c.nxe {
            e.cpu.efer &= !EFER_NXE;
        }
        if c.smap {
            e.cpu.cr4 |= CR4_SMAP;
        }
        e.cpu.gpr[RBX] = DATA + 0x10;
        e.cpu.gpr[RCX] = 0x42;
        e.w64(DATA + 0x10, 7);
        let out = e.run(c.code);
        match c.want {
            Some(err) => {
                assert_eq!(out, pf_at(err, DATA + 0x10), "case {i}");
                assert_eq!(e.cpu.rip, CODE, "case {i}");
                assert_eq!(e.r64(DATA + 0x10), 7, "case {i}: memory unchanged");
            }
            None => assert_eq!(out, RETIRED, "case {i}"),
        }
    }
}

#[test]
fn fetch_permissions() {
    // XD code page with NXE: #PF with I/D.
    let mut e = Env::new();
    e.pte(CODE, P | W | U | XD);
    assert_eq!(e.run(&[0x90]), pf_at(pf::PRESENT | pf::FETCH, CODE));
    // SMEP: supervisor fetch from a user page.
    let mut e = Env::new();
    e.cpu.cr4 |= CR4_SMEP;
    assert_eq!(e.run(&[0x90]), pf_at(pf::PRESENT | pf::FETCH, CODE));
    e.pte(CODE, P | W);
    assert_eq!(e.run(&[0x90]), RETIRED);
    // Without NXE and SMEP the I/D bit is clear.
    let mut e = Env::new();
    e.cpu.efer &= !EFER_NXE;
    e.pte(CODE, 0);
    assert_eq!(e.run(&[0x90]), pf_at(0, CODE));
}

#[test]
fn upper_level_permissions_and_large_page_reserved_bits() {
    // A read-only PDPT entry makes every page below it read-only.
    let mut e = Env::new();
    e.w64(PML4, PDPT | P | W | U);
    e.w64(PDPT, PD | P | U);
    e.cpu.gpr[RBX] = DATA;
    assert_eq!(e.run(&[0x89, 0x0b]), pf_at(pf::PRESENT | pf::WRITE, DATA));
    // A 2 MiB page with bit 13 set is a reserved-bit fault.
    let mut e = Env::new();
    e.w64(PD + 8, 0x20_0000 | (1 << 13) | P | W | U | PS);
    e.cpu.gpr[RBX] = 0x20_0010;
    assert_eq!(
        e.run(&[0x8b, 0x0b]),
        pf_at(pf::PRESENT | pf::RSVD, 0x20_0010)
    );
    // PS in a PML4 entry is reserved.
    let mut e = Env::new();
    e.w64(PML4, PDPT | P | W | U | PS);
    assert_eq!(
        e.run(&[0x90]),
        pf_at(pf::PRESENT | pf::RSVD | pf::FETCH, CODE)
    );
    // A paging structure outside guest RAM stops the VM.
    let mut e = Env::new();
    e.w64(PML4, HOLE_GPA | P | W | U);
    assert_eq!(e.step(), Outcome::Stop(Stop::Unmapped { gpa: HOLE_GPA }));
    // 5-level paging is not emulated.
    let mut e = Env::new();
    e.cpu.cr4 |= CR4_LA57;
    assert_eq!(e.step(), Outcome::Stop(Stop::FiveLevelPaging));
}

#[test]
fn accessed_and_dirty_bits_are_set() {
    let mut e = Env::new();
    e.cpu.gpr[RBX] = DATA;
    assert_eq!(e.run(&[0x8b, 0x0b]), RETIRED);
    let pte = e.r64(PT + (DATA >> 12) * 8);
    assert_eq!(pte & 0x60, 0x20, "read: accessed, not dirty");
    e.cpu.rip = CODE;
    assert_eq!(e.run(&[0x89, 0x0b]), RETIRED);
    assert_eq!(e.r64(PT + (DATA >> 12) * 8) & 0x60, 0x60);
    assert_eq!(e.r64(PML4) & 0x20, 0x20);
}

// ---- stack operations and branches ----

#[test]
fn push_pop_forms() {
    let mut e = Env::new();
    e.cpu.gpr[RAX] = 0x1122_3344_5566_7788;
    assert_eq!(e.run(&[0x50]), RETIRED); // push rax
    assert_eq!(
        (e.cpu.gpr[RSP], e.r64(STACK - 8)),
        (STACK - 8, 0x1122_3344_5566_7788)
    );
    e.cpu.rip = CODE;
    assert_eq!(e.run(&[0x6a, 0xff]), RETIRED); // push -1 (imm8, 64-bit)
    assert_eq!(e.r64(STACK - 16), u64::MAX);
    e.cpu.rip = CODE;
    assert_eq!(e.run(&[0x66, 0x6a, 0x05]), RETIRED); // push word 5
    assert_eq!(e.cpu.gpr[RSP], STACK - 18);
    e.cpu.rip = CODE;
    e.cpu.gpr[RBX] = 0xffff_ffff_ffff_0000;
    assert_eq!(e.run(&[0x66, 0x5b]), RETIRED); // pop bx
    assert_eq!(e.cpu.gpr[RBX], 0xffff_ffff_ffff_0005);
    e.cpu.rip = CODE;
    assert_eq!(e.run(&[0x41, 0x58]), RETIRED); // pop r8
    assert_eq!(e.cpu.gpr[8], u64::MAX);
    // pop qword [rsp]: the address is computed after RSP moves.
    e.cpu.rip = CODE;
    e.w64(STACK, 0);
    assert_eq!(e.run(&[0x8f, 0x04, 0x24]), RETIRED);
    assert_eq!(
        (e.cpu.gpr[RSP], e.r64(STACK)),
        (STACK, 0x1122_3344_5566_7788)
    );
    // push qword [rbx]
    e.cpu.rip = CODE;
    e.cpu.gpr[RBX] = DATA;
    e.w64(DATA, 0xfeed);
    assert_eq!(e.run(&[0xff, 0x33]), RETIRED);
    assert_eq!(e.r64(STACK - 8), 0xfeed);
    // A non-canonical stack is #SS(0).
    e.cpu.rip = CODE;
    e.cpu.gpr[RSP] = 0x8000_0000_0000_0004;
    assert_eq!(e.run(&[0x50]), Outcome::Exception(Exception::StackFault(0)));
    // A read-only stack page is #PF, RSP unchanged.
    let mut e = Env::new();
    e.pte(STACK - 0x1000, P | U);
    assert_eq!(e.run(&[0x50]), pf_at(pf::PRESENT | pf::WRITE, STACK - 8));
    assert_eq!(e.cpu.gpr[RSP], STACK);
}

#[test]
fn enter_and_leave_are_stack_operations_not_branches() {
    let mut e = Env::new();
    e.cpu.gpr[RBP] = STACK + 0x100;
    // Outer frame pointers the level-3 ENTER copies.
    e.w64(STACK + 0x100 - 8, 0xaaaa);
    e.w64(STACK + 0x100 - 16, 0xbbbb);
    // enter 0x20, 3
    assert_eq!(e.run(&[0xc8, 0x20, 0x00, 0x03]), RETIRED);
    let frame = STACK - 8;
    assert_eq!(e.r64(STACK - 8), STACK + 0x100, "old RBP");
    assert_eq!(e.r64(STACK - 16), 0xaaaa);
    assert_eq!(e.r64(STACK - 24), 0xbbbb);
    assert_eq!(e.r64(STACK - 32), frame, "frame pointer");
    assert_eq!(e.cpu.gpr[RBP], frame);
    assert_eq!(e.cpu.gpr[RSP], STACK - 32 - 0x20);
    assert_eq!(e.cpu.rip, CODE + 4);
    // leave
    e.cpu.rip = CODE;
    assert_eq!(e.run(&[0xc9]), RETIRED);
    assert_eq!((e.cpu.gpr[RSP], e.cpu.gpr[RBP]), (STACK, STACK + 0x100));
    // enter 0, 0 pushes RBP only.
    e.cpu.rip = CODE;
    assert_eq!(e.run(&[0xc8, 0, 0, 0]), RETIRED);
    assert_eq!((e.cpu.gpr[RSP], e.cpu.gpr[RBP]), (STACK - 8, STACK - 8));
}

#[test]
fn enter_with_a_huge_frame_and_deep_nesting() {
    // enter 0xffff, 31 (level is taken mod 32): 32 pushes, then RSP - 0xffff; all in range.
    let mut e = Env::new();
    e.cpu.gpr[RBP] = STACK;
    assert_eq!(e.run(&[0xc8, 0xff, 0xff, 0x1f]), RETIRED);
    assert_eq!(e.cpu.gpr[RSP], STACK - 32 * 8 - 0xffff);
    // enter 0xffff, 0xff with a non-canonical RSP: #SS, nothing changed.
    let mut e = Env::new();
    e.cpu.gpr[RSP] = 0x8000_0000_0010;
    e.cpu.gpr[RBP] = STACK;
    assert_eq!(
        e.run(&[0xc8, 0xff, 0xff, 0xff]),
        Outcome::Exception(Exception::StackFault(0))
    );
    assert_eq!(
        (e.cpu.gpr[RSP], e.cpu.gpr[RBP], e.cpu.rip),
        (0x8000_0000_0010, STACK, CODE)
    );
    // RSP = 0: the first push wraps to the top of the address space, not mapped: #PF there.
    e.cpu.gpr[RSP] = 0;
    assert_eq!(e.step(), pf_at(pf::WRITE, u64::MAX - 7));
    // A level that reads outer frames from an unmapped page faults before any write.
    let mut e = Env::new();
    e.cpu.gpr[RBP] = 0x1_0000_0000; // PML4[0] -> PDPT[4]: not present
    assert_eq!(
        e.run(&[0xc8, 0x10, 0x00, 0x02]),
        pf_at(0, 0x1_0000_0000 - 8)
    );
    assert_eq!(e.cpu.gpr[RSP], STACK);
    assert_eq!(e.r64(STACK - 8), 0);
}

#[test]
fn branches_retire_as_branches() {
    let mut e = Env::new();
    // jmp rel8
    assert_eq!(e.run(&[0xeb, 0x10]), BRANCH);
    assert_eq!(e.cpu.rip, CODE + 0x12);
    // jz taken and not taken
    for (zf, want) in [(true, CODE + 2 + 0x20), (false, CODE + 2)] {
        e.cpu.rip = CODE;
        e.cpu.rflags = if zf { 0x2 | ZF } else { 0x2 };
        assert_eq!(e.run(&[0x74, 0x20]), BRANCH);
        assert_eq!(e.cpu.rip, want);
    }
    // jl (SF != OF) rel32 backwards
    e.cpu.rip = CODE + 0x100;
    e.cpu.rflags = 0x2 | SF;
    assert_eq!(e.run(&[0x0f, 0x8c, 0xf0, 0xff, 0xff, 0xff]), BRANCH);
    assert_eq!(e.cpu.rip, CODE + 0x106 - 0x10);
    // call rel32 / ret
    e.cpu.rip = CODE;
    assert_eq!(e.run(&[0xe8, 0x00, 0x01, 0x00, 0x00]), BRANCH);
    assert_eq!(
        (e.cpu.rip, e.cpu.gpr[RSP], e.r64(STACK - 8)),
        (CODE + 0x105, STACK - 8, CODE + 5)
    );
    assert_eq!(e.run(&[0xc3]), BRANCH);
    assert_eq!((e.cpu.rip, e.cpu.gpr[RSP]), (CODE + 5, STACK));
    // call rax; ret 0x10
    e.cpu.rip = CODE;
    e.cpu.gpr[RAX] = CODE + 0x200;
    assert_eq!(e.run(&[0xff, 0xd0]), BRANCH);
    assert_eq!(e.run(&[0xc2, 0x10, 0x00]), BRANCH);
    assert_eq!((e.cpu.rip, e.cpu.gpr[RSP]), (CODE + 2, STACK + 0x10));
    // jmp qword [rbx]
    e.cpu.rip = CODE;
    e.cpu.gpr[RBX] = DATA;
    e.w64(DATA, CODE + 0x300);
    assert_eq!(e.run(&[0xff, 0x23]), BRANCH);
    assert_eq!(e.cpu.rip, CODE + 0x300);
    // A non-canonical target is #GP(0) on the branch, nothing pushed.
    e.cpu.rip = CODE;
    e.cpu.gpr[RSP] = STACK;
    e.cpu.gpr[RAX] = 0x8000_0000_0000_0000;
    assert_eq!(
        e.run(&[0xff, 0xd0]),
        Outcome::Exception(Exception::GeneralProtection(0))
    );
    assert_eq!((e.cpu.rip, e.cpu.gpr[RSP]), (CODE, STACK));
}

#[test]
fn loop_family() {
    let mut e = Env::new();
    // loop: RCX 2 -> 1 taken, 1 -> 0 not taken; both branches.
    e.cpu.gpr[RCX] = 2;
    assert_eq!(e.run(&[0xe2, 0xfe]), BRANCH);
    assert_eq!((e.cpu.rip, e.cpu.gpr[RCX]), (CODE, 1));
    assert_eq!(e.run(&[0xe2, 0xfe]), BRANCH);
    assert_eq!((e.cpu.rip, e.cpu.gpr[RCX]), (CODE + 2, 0));
    // loope with ZF clear: not taken.
    e.cpu.rip = CODE;
    e.cpu.gpr[RCX] = 5;
    assert_eq!(e.run(&[0xe1, 0x10]), BRANCH);
    assert_eq!((e.cpu.rip, e.cpu.gpr[RCX]), (CODE + 2, 4));
    // loopne with ZF clear: taken.
    e.cpu.rip = CODE;
    assert_eq!(e.run(&[0xe0, 0x10]), BRANCH);
    assert_eq!(e.cpu.rip, CODE + 0x12);
    // jrcxz
    e.cpu.rip = CODE;
    e.cpu.gpr[RCX] = 0;
    assert_eq!(e.run(&[0xe3, 0x10]), BRANCH);
    assert_eq!((e.cpu.rip, e.cpu.gpr[RCX]), (CODE + 0x12, 0));
    // loop with 0x67 counts in ECX (and zero-extends it).
    e.cpu.rip = CODE;
    e.cpu.gpr[RCX] = 0xffff_ffff_0000_0000;
    assert_eq!(e.run(&[0x67, 0xe2, 0x10]), BRANCH);
    assert_eq!(e.cpu.gpr[RCX], 0xffff_ffff);
}

/// A PMU-style tally over a sequence, as the payload test will count: ENTER/LEAVE are instructions,
/// not branches.
#[test]
fn retirement_counts_are_exact_over_a_sequence() {
    let mut e = Env::new();
    e.cpu.gpr[RBP] = STACK;
    e.cpu.gpr[RCX] = 1;
    let seq: &[&[u8]] = &[
        &[0xc8, 0x08, 0x00, 0x00],       // enter 8, 0
        &[0x48, 0x01, 0xc8],             // add rax, rcx
        &[0xeb, 0x00],                   // jmp +0
        &[0x74, 0x00],                   // jz (not taken)
        &[0x75, 0x00],                   // jnz (taken, to the next)
        &[0xe8, 0x00, 0x00, 0x00, 0x00], // call next
        &[0xe2, 0x00],                   // loop (rcx 1 -> 0, not taken)
        &[0xc9],                         // leave
        &[0x90],                         // nop
        &[0x0f, 0x0b],                   // ud2: not emulated, not retired
    ];
    let (mut insns, mut branches) = (0, 0);
    for code in seq {
        match e.run(code) {
            Outcome::Retired(r) => {
                insns += u32::from(r.instruction);
                branches += u32::from(r.branch);
            }
            Outcome::Exception(Exception::InvalidOpcode) => {}
            o => panic!("{o:?}"),
        }
    }
    assert_eq!((insns, branches), (9, 5));
}

// ---- string I/O ----

#[test]
fn rep_outs_is_batched_and_bounded() {
    let mut e = Env::new();
    for i in 0..0x100u64 {
        e.ram[(DATA + i) as usize] = i as u8;
    }
    e.cpu.gpr[RSI] = DATA;
    e.cpu.gpr[RDX] = 0x3f8;
    e.cpu.gpr[RCX] = u64::MAX;
    // rep outsb: one batch is at most the 64-byte buffer; RIP stays until RCX is zero.
    let mut total = 0u64;
    for _ in 0..3 {
        match e.run(&[0xf3, 0x6e]) {
            Outcome::PortIo(io) => {
                assert_eq!((io.port, io.size, io.dir), (0x3f8, 1, IoDir::Out));
                assert_eq!(io.count, 64);
                let data = e.io;
                assert_eq!(data[0], total as u8);
                assert_eq!(e.complete_io(io, &[]), Retire::NONE);
                total += 64;
            }
            o => panic!("{o:?}"),
        }
        assert_eq!(e.cpu.rip, CODE);
    }
    assert_eq!(
        (e.cpu.gpr[RSI], e.cpu.gpr[RCX]),
        (DATA + total, u64::MAX - total)
    );
    // A batch stops at the page boundary.
    e.cpu.gpr[RSI] = DATA + 0xff0;
    match e.step() {
        Outcome::PortIo(io) => assert_eq!(io.count, 16),
        o => panic!("{o:?}"),
    }
    // The last batch retires the instruction once and moves RIP on.
    e.cpu.gpr[RSI] = DATA;
    e.cpu.gpr[RCX] = 3;
    match e.step() {
        Outcome::PortIo(io) => {
            assert_eq!(io.count, 3);
            assert_eq!(e.complete_io(io, &[]), Retire::INSN);
            assert_eq!((e.cpu.rip, e.cpu.gpr[RCX]), (CODE + 2, 0));
        }
        o => panic!("{o:?}"),
    }
    // RCX = 0: nothing moves, the instruction retires.
    e.cpu.rip = CODE;
    assert_eq!(e.step(), RETIRED);
}

#[test]
fn rep_ins_writes_guest_memory_in_both_directions() {
    let mut e = Env::new();
    e.cpu.gpr[RDI] = DATA;
    e.cpu.gpr[RDX] = 0x60;
    e.cpu.gpr[RCX] = 2;
    // rep insw
    match e.run(&[0x66, 0xf3, 0x6d]) {
        Outcome::PortIo(io) => {
            assert_eq!((io.size, io.count, io.dir), (2, 2, IoDir::In));
            assert_eq!(e.complete_io(io, &[1, 2, 3, 4]), Retire::INSN);
        }
        o => panic!("{o:?}"),
    }
    assert_eq!(e.r64(DATA) & 0xffff_ffff, 0x0403_0201);
    assert_eq!(e.cpu.gpr[RDI], DATA + 4);
    // DF = 1: insd goes down.
    e.cpu.rip = CODE;
    e.cpu.rflags = 0x2 | DF;
    e.cpu.gpr[RDI] = DATA + 0x104;
    e.cpu.gpr[RCX] = 2;
    match e.run(&[0xf3, 0x6d]) {
        Outcome::PortIo(io) => {
            assert_eq!(io.count, 2);
            e.complete_io(io, &[0x11, 0x11, 0x11, 0x11, 0x22, 0x22, 0x22, 0x22]);
        }
        o => panic!("{o:?}"),
    }
    assert_eq!(e.r64(DATA + 0x100), 0x1111_1111_2222_2222);
    assert_eq!(e.cpu.gpr[RDI], DATA + 0x104 - 8);
    // Into a read-only page: #PF at the first element, nothing asked of the port.
    e.cpu.rip = CODE;
    e.cpu.rflags = 0x2;
    e.pte(DATA, P | U);
    e.cpu.gpr[RDI] = DATA + 8;
    e.cpu.gpr[RCX] = 1;
    assert_eq!(e.step(), pf_at(pf::PRESENT | pf::WRITE, DATA + 8));
    // Into device memory: a clean stop.
    e.cpu.gpr[RDI] = DEVICE_VA;
    assert!(matches!(e.step(), Outcome::Stop(Stop::DeviceAccess { .. })));
}

// ---- CPUID, NOP, #UD, forced emulation ----

#[test]
fn cpuid_is_an_outcome_for_policy() {
    let mut e = Env::new();
    e.cpu.gpr[RAX] = 0xffff_ffff_0000_000a;
    e.cpu.gpr[RCX] = 3;
    match e.run(&[0x0f, 0xa2]) {
        Outcome::Cpuid(c) => {
            assert_eq!((c.leaf, c.subleaf), (0xa, 3));
            assert_eq!(c.complete(&mut e.cpu, [1, 2, 3, 4]), Retire::INSN);
            assert_eq!(&e.cpu.gpr[..4], &[1, 3, 4, 2]);
            assert_eq!(e.cpu.rip, CODE + 2);
        }
        o => panic!("{o:?}"),
    }
}

#[test]
fn nops_and_everything_else() {
    let mut e = Env::new();
    for code in [&[0x90][..], &[0xf3, 0x90], &[0x0f, 0x1f, 0x44, 0x00, 0x00]] {
        e.cpu.rip = CODE;
        assert_eq!(e.run(code), RETIRED, "{code:02x?}");
        assert_eq!(e.cpu.rip, CODE + code.len() as u64);
    }
    // hlt, ud2, mov rax, cr0, lock mov, far return, int3: #UD, RIP unchanged.
    for code in [
        &[0xf4][..],
        &[0x0f, 0x0b],
        &[0x0f, 0x20, 0xc0],
        &[0xf0, 0x8b, 0x00],
        &[0xcb],
        &[0xcc],
    ] {
        e.cpu.rip = CODE;
        assert_eq!(
            e.run(code),
            Outcome::Exception(Exception::InvalidOpcode),
            "{code:02x?}"
        );
        assert_eq!(e.cpu.rip, CODE);
    }
    // 16 prefixes: longer than 15 bytes is #GP(0).
    e.cpu.rip = CODE;
    assert_eq!(
        e.run(&[0x66; 16]),
        Outcome::Exception(Exception::GeneralProtection(0))
    );
    // Outside 64-bit mode: stop.
    e.cpu.long = false;
    assert_eq!(e.step(), Outcome::Stop(Stop::NotLongMode));
}

#[test]
fn forced_emulation_prefix() {
    let mut e = Env::new();
    let mut code = libvmm_abi::FORCED_EMULATION_PREFIX.to_vec();
    code.extend_from_slice(&[0xc8, 0x10, 0x00, 0x00]); // enter 0x10, 0
    e.put(CODE, &code);
    {
        let mut mem = GuestMemory::new(0, &mut e.ram);
        assert_eq!(e.emu.forced_target(&e.cpu, &mut mem), Some(CODE + 5));
    }
    assert_eq!(e.forced(), RETIRED);
    assert_eq!(e.cpu.rip, CODE + 9);
    // KVM's signature is not libvmm's: plain #UD.
    e.cpu.rip = CODE;
    e.put(CODE, &[0x0f, 0x0b, b'k', b'v', b'm', 0x90]);
    assert_eq!(e.forced(), Outcome::Exception(Exception::InvalidOpcode));
    assert_eq!(e.cpu.rip, CODE);
    // A signature running into a page the guest cannot fetch is not recognised.
    e.cpu.rip = CODE + 0xffe;
    e.put(CODE + 0xffe, &libvmm_abi::FORCED_EMULATION_PREFIX);
    e.pte(CODE + 0x1000, 0);
    assert_eq!(e.forced(), Outcome::Exception(Exception::InvalidOpcode));
    // A fault of the emulated instruction is reported at it, past the prefix.
    let mut e = Env::new();
    let mut code = libvmm_abi::FORCED_EMULATION_PREFIX.to_vec();
    code.extend_from_slice(&[0x89, 0x0b]);
    e.put(CODE, &code);
    e.cpu.gpr[RBX] = 0x8000_0000_0000_0000;
    assert_eq!(
        e.forced(),
        Outcome::Exception(Exception::GeneralProtection(0))
    );
    assert_eq!(e.cpu.rip, CODE + 5);
}

// ---- robustness ----

/// xorshift64: deterministic.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

#[test]
fn every_opcode_byte_with_random_operands_never_panics() {
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    let mut e = Env::new();
    // Interesting register values: in RAM, in the device, in the hole, non-canonical, huge.
    let values = [
        DATA,
        DATA + 0xffd,
        DEVICE_VA + 8,
        HOLE_VA,
        0x8000_0000_0000_0000,
        u64::MAX,
        0,
        STACK,
    ];
    let mut seen = [0u32; 6];
    for round in 0..120 {
        for (lead, escape) in (0..=255u8).flat_map(|b| [(b, false), (b, true)]) {
            let mut code = [0u8; 15];
            for b in code.iter_mut() {
                *b = rng.next() as u8;
            }
            if escape {
                code[0] = 0x0f;
                code[1] = lead;
            } else {
                code[0] = lead;
            }
            e.cpu.rip = CODE + (rng.next() % 0x2000);
            for r in 0..16 {
                e.cpu.gpr[r] = if rng.next().is_multiple_of(2) {
                    values[(rng.next() % values.len() as u64) as usize]
                } else {
                    rng.next()
                };
            }
            e.cpu.gpr[RSP] = if round % 4 == 0 { rng.next() } else { STACK };
            e.cpu.rflags = 0x2 | (rng.next() & (ARITH | DF));
            e.cpu.cpl = if round % 3 == 0 { 3 } else { 0 };
            let out = e.run(&code);
            let k = match out {
                Outcome::Retired(_) => 0,
                Outcome::Mmio(_) => 1,
                Outcome::PortIo(io) => {
                    // Complete it too (IN data from the buffer).
                    let data = e.io;
                    let _ = e.complete_io(io, &data);
                    2
                }
                Outcome::Cpuid(_) => 3,
                Outcome::Exception(_) => 4,
                Outcome::Stop(_) => 5,
            };
            seen[k] += 1;
            // Page tables and code stay where the test put them (the emulator only writes guest RAM
            // through checked slices; here we check it kept the paging structures intact enough to go on).
            e.w64(PML4, PDPT | P | W | U);
            e.w64(PDPT, PD | P | W | U);
            e.w64(PD, PT | P | W | U);
            e.w64(PD + 8, 0x20_0000 | P | W | U | PS);
            e.w64(PD + 16, DEVICE_GPA | P | W | U | PS);
            e.w64(PD + 24, HOLE_GPA | P | W | U | PS);
            for i in (CODE >> 12)..(CODE >> 12) + 4 {
                e.w64(PT + i * 8, (i << 12) | P | W | U);
            }
        }
    }
    // Every kind of outcome occurred.
    assert!(seen.iter().all(|&n| n > 0), "{seen:?}");
}

#[test]
fn device_ranges_are_checked() {
    let mut emu: Emulator<2> = Emulator::new(48);
    assert_eq!(emu.add_device(0x1000, 0), Err(DeviceError::Invalid));
    assert_eq!(emu.add_device(u64::MAX, 2), Err(DeviceError::Invalid));
    assert_eq!(emu.add_device(0x1000, 0x1000), Ok(()));
    assert_eq!(emu.add_device(0x1800, 0x1000), Err(DeviceError::Overlap));
    assert_eq!(emu.add_device(0x2000, 0x1000), Ok(()));
    assert_eq!(emu.add_device(0x4000, 0x1000), Err(DeviceError::Full));
}
