//! Entry points for the fuzz targets in `fuzz/` (feature `fuzzing`, host only, never in an image).
//!
//! libvmm's internals are `pub(crate)`; this facade is the one door to them from outside: each function
//! takes the fuzzer's bytes, turns them into the typed inputs of one parser or decision (biased towards
//! the values that matter: known exit codes, hypercall numbers, SBI extensions, addresses at the edges of
//! guest memory), runs the real code, checks what must always hold of its answer (a broken invariant is a
//! panic, i.e. a finding), and returns a small signature of the outcome that the fuzz engine uses as
//! feedback (an input with a new signature joins the corpus).
//!
//! Every target must return normally for every input: a panic anywhere below is a VMM bug (a hostile
//! guest, or a corrupt device tree, must never panic the VMM).
#![forbid(unsafe_code)]

use std::boxed::Box;
use std::cell::{Cell, RefCell};
use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::vec;
use std::vec::Vec;

use libvmm_abi::sbi::{EXT_BASE, EXT_DBCN, EXT_SRST, EXT_TIME};
use libvmm_abi::{BackendId, SBI_EXT_LIBVMM};

use crate::backend::BackendError;
use crate::exit::{Access, Exit, IoAccess, Reply, VirtInsn};
use crate::guest_mem::GuestMemory;
use crate::riscv::isa::{Ext, ExtSet};
use crate::testing::{ModelPlatform, ScriptedBackend};
use crate::vm::{StopReason, Vm};
use crate::x86::gprs::Gprs;

/// A fuzz target: bytes in, outcome signature out.
pub type Target = fn(&[u8]) -> u64;

/// Every target, by name.
pub const TARGETS: &[(&str, Target)] = &[
    ("hypercall", hypercall),
    ("svm_decode", svm_decode),
    ("vmx_decode", vmx_decode),
    ("vcpu_handle", vcpu_handle),
    ("riscv_trap", riscv_trap),
    ("sbi", sbi),
    ("isa", isa),
    ("dt", dt),
    ("guest_dt", guest_dt),
    #[cfg(feature = "kvm-models")]
    ("sev_snp", sev_snp),
    ("vmx_checks", vmx_checks),
    ("x2apic", x2apic),
    ("apic", apic),
    ("acpi", acpi),
    ("cmdline", cmdline),
    ("loader", loader),
    #[cfg(target_arch = "x86_64")]
    ("emulator", emulator),
    ("files", files),
];

/// The model guest window: guest-physical base and size.
const MEM_BASE: u64 = 0x8400_0000;
const MEM_SIZE: usize = 0x4000;

/// The fuzzer's bytes, read as typed values (zeros once exhausted).
struct Input<'a> {
    data: &'a [u8],
}

impl<'a> Input<'a> {
    fn bytes(&mut self, n: usize) -> &'a [u8] {
        let (a, b) = self.data.split_at(n.min(self.data.len()));
        self.data = b;
        a
    }
    fn u8(&mut self) -> u8 {
        self.bytes(1).first().copied().unwrap_or(0)
    }
    fn bool(&mut self) -> bool {
        self.u8() & 1 != 0
    }
    fn raw64(&mut self) -> u64 {
        let mut b = [0u8; 8];
        let s = self.bytes(8);
        b[..s.len()].copy_from_slice(s);
        u64::from_le_bytes(b)
    }
    fn u32(&mut self) -> u32 {
        self.u64() as u32
    }
    /// A 64-bit value, often an edge case.
    fn u64(&mut self) -> u64 {
        const EDGES: [u64; 12] = [
            0,
            1,
            2,
            0x7f,
            0xff,
            0xffff,
            0xffff_ffff,
            0x1_0000_0000,
            i64::MAX as u64,
            1 << 63,
            u64::MAX,
            u64::MAX - 1,
        ];
        match self.u8() % 4 {
            0 => EDGES[self.u8() as usize % EDGES.len()],
            1 => self.u8() as u64,
            _ => self.raw64(),
        }
    }
    /// A guest-physical address, often at an edge of the model window.
    fn gpa(&mut self) -> u64 {
        let end = MEM_BASE + MEM_SIZE as u64;
        let delta = (self.u8() as i8) as i64 as u64;
        match self.u8() % 4 {
            0 => MEM_BASE.wrapping_add(delta),
            1 => end.wrapping_add(delta),
            2 => MEM_BASE + (self.u64() % MEM_SIZE as u64),
            _ => self.u64(),
        }
    }
    /// A length, often small or at an edge.
    fn len(&mut self) -> u64 {
        match self.u8() % 3 {
            0 => self.u8() as u64,
            1 => (MEM_SIZE as u64).wrapping_add((self.u8() as i8) as i64 as u64),
            _ => self.u64(),
        }
    }
    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.u8() as usize % items.len()]
    }
    /// One of `known` (usually) or any value.
    fn code(&mut self, known: &[u64]) -> u64 {
        if !self.u8().is_multiple_of(8) {
            self.pick(known)
        } else {
            self.u64()
        }
    }
    fn str(&mut self) -> &'a str {
        let n = self.u8() as usize;
        let b = self.bytes(n);
        match core::str::from_utf8(b) {
            Ok(s) => s,
            Err(e) => core::str::from_utf8(&b[..e.valid_up_to()]).unwrap_or(""),
        }
    }
    fn gprs(&mut self) -> Gprs {
        Gprs {
            rax: self.u64(),
            rbx: self.u64(),
            rcx: self.u64(),
            rdx: self.u64(),
            rsi: self.u64(),
            rdi: self.gpa(),
            rbp: self.u64(),
            r8: self.u64(),
            r9: self.u64(),
            r10: self.u64(),
            r11: self.u64(),
            r12: self.u64(),
            r13: self.u64(),
            r14: self.u64(),
            r15: self.u64(),
        }
    }
    fn is_empty(&self) -> bool {
        self.data.is_empty()
    }
}

fn sig<T: Hash>(v: T) -> u64 {
    let mut h = DefaultHasher::new();
    v.hash(&mut h);
    h.finish()
}

fn exit_sig(e: &Exit) -> u64 {
    let extra = match e {
        Exit::VirtInsn(v) => *v as u64,
        Exit::Io(io) => io.size as u64 | (io.string as u64) << 8 | (io.write as u64) << 9,
        Exit::GuestMemoryFault { access, .. } => *access as u64,
        _ => 0,
    };
    sig((core::mem::discriminant(e), extra))
}

fn stop_sig(s: &StopReason) -> u64 {
    sig((core::mem::discriminant(s), s.code()))
}

/// Guest memory whose first bytes come from the input (the rest a fixed pattern).
fn model_memory(inp: &mut Input<'_>) -> Vec<u8> {
    let mut mem = vec![0x5au8; MEM_SIZE];
    let n = inp.u8() as usize;
    let b = inp.bytes(n);
    mem[..b.len()].copy_from_slice(b);
    mem
}

/// The libvmm hypercall dispatcher over a model guest memory.
pub fn hypercall(data: &[u8]) -> u64 {
    use crate::policy::hypercall::{dispatch, Outcome};
    let mut inp = Input { data };
    let mut mem = model_memory(&mut inp);
    let snapshot = mem.clone();
    let mut vm = Vm::new(
        GuestMemory::new(MEM_BASE, &mut mem),
        ModelPlatform::default(),
    );
    vm.exits = inp.u64();
    let mut out = 0;
    while !inp.is_empty() {
        let nr = inp.code(&[0, 1, 1, 1, 2, 3, 4, 5, 6, 7, 8, 64]);
        let args = [inp.code(&[0, 1, 2, 3]), inp.gpa(), inp.len(), inp.u64()];
        let before = vm.platform.console.0.len();
        let r = dispatch(nr, args, &mut vm);
        if let (1, Outcome::Return(n)) = (nr, &r) {
            if *n >= 0 {
                // A successful write printed exactly the guest's bytes.
                let printed = &vm.platform.console.0[before..];
                let start = (args[1] - MEM_BASE) as usize;
                assert_eq!(printed.len() as i64, *n);
                assert_eq!(printed, &snapshot[start..start + printed.len()]);
            }
        }
        out ^= sig((
            nr.min(16),
            matches!(r, Outcome::Stop(_)),
            match r {
                Outcome::Return(v) => v.clamp(-64, 1),
                Outcome::Stop(s) => s.code() as i64,
            },
        ));
    }
    out
}

const SVM_CODES: &[u64] = &[
    0x60,
    0x61,
    0x62,
    0x63,
    0x64,
    0x72,
    0x78,
    0x7A,
    0x7B,
    0x7C,
    0x7F,
    0x80,
    0x81,
    0x82,
    0x83,
    0x84,
    0x85,
    0x86,
    0x8A,
    0x8B,
    0x8C,
    0x400,
    0xFFFF_FFFF,
    0x6E,
    0x403,
];

/// The SVM exit decoder from random EXITCODE / EXITINFO / registers, and the instruction length.
pub fn svm_decode(data: &[u8]) -> u64 {
    use crate::svm::decode::{decode, insn_len, ExitInfo};
    let mut inp = Input { data };
    let e = ExitInfo {
        code: inp.code(SVM_CODES),
        info1: inp.u64(),
        info2: inp.u64(),
        rax: inp.u64(),
        rsp: inp.u64(),
        next_rip: if inp.bool() { inp.u64() } else { 0 },
    };
    let g = inp.gprs();
    // Without decode assists the backend reads the instruction from guest memory (its own target would
    // need a guest page walk): here that path answers with a marker.
    let exit = decode(&e, &g, || Exit::Unknown {
        code: u64::MAX,
        info1: 0,
        info2: 0,
    });
    check_exit(&exit);
    assert!(insn_len(e.code) <= 15);
    exit_sig(&exit) ^ insn_len(e.code)
}

const VMX_REASONS: &[u64] = &[
    0,
    1,
    2,
    10,
    11,
    12,
    13,
    18,
    19,
    20,
    21,
    22,
    23,
    24,
    25,
    26,
    27,
    28,
    30,
    31,
    32,
    33,
    34,
    36,
    39,
    41,
    48,
    49,
    50,
    52,
    53,
    55,
    59,
    60,
    76,
    77,
    0x8000_0021,
    0x8000_0022,
];

/// The VMX exit decoder from a random exit reason, qualification, GPA and registers.
pub fn vmx_decode(data: &[u8]) -> u64 {
    use crate::vmx::decode::{decode, RawExit};
    let mut inp = Input { data };
    let raw = RawExit {
        reason: inp.code(VMX_REASONS) as u32,
        qualification: inp.u64(),
        guest_physical: inp.gpa(),
    };
    let regs = inp.gprs();
    let rsp = inp.u64();
    let ctx = crate::vmx::decode::CrContext {
        state: crate::exit::CrState {
            cr0: inp.u64(),
            cr4: inp.u64(),
            ..Default::default()
        },
        rsp,
    };
    let exit = decode(&raw, &regs, || ctx);
    check_exit(&exit);
    exit_sig(&exit)
}

/// What every decoder's exit must satisfy.
fn check_exit(e: &Exit) {
    if let Exit::Io(io) = e {
        assert!(io.size <= 8);
    }
}

/// One generic exit built from the input.
fn exit_from(inp: &mut Input<'_>) -> Exit {
    const INSNS: [VirtInsn; 20] = [
        VirtInsn::Vmrun,
        VirtInsn::Vmload,
        VirtInsn::Vmsave,
        VirtInsn::Stgi,
        VirtInsn::Clgi,
        VirtInsn::Skinit,
        VirtInsn::Invlpga,
        VirtInsn::Vmcall,
        VirtInsn::Vmlaunch,
        VirtInsn::Vmresume,
        VirtInsn::Vmptrld,
        VirtInsn::Vmptrst,
        VirtInsn::Vmclear,
        VirtInsn::Vmread,
        VirtInsn::Vmwrite,
        VirtInsn::Vmxon,
        VirtInsn::Vmxoff,
        VirtInsn::Invept,
        VirtInsn::Invvpid,
        VirtInsn::Vmfunc,
    ];
    match inp.u8() % 14 {
        0 | 1 => Exit::Cpuid {
            leaf: inp.code(&[
                0,
                1,
                7,
                0xd,
                0x4000_0000,
                0x4000_0001,
                0x8000_0000,
                0x8000_0001,
                0x8000_0008,
            ]) as u32,
            subleaf: inp.u32(),
        },
        2 | 3 => Exit::Hypercall {
            nr: inp.code(&[0, 1, 1, 4, 5, 6, 7]),
            args: [inp.code(&[1, 2, 0]), inp.gpa(), inp.len(), inp.u64()],
        },
        4 => Exit::Sbi {
            ext: inp.code(&[EXT_BASE, EXT_TIME, EXT_SRST, EXT_DBCN, 0, 1, 8]),
            fid: inp.code(&[0, 1, 2, 3, 4, 5, 6]),
            args: [
                inp.u64(),
                inp.gpa(),
                inp.u64(),
                inp.u64(),
                inp.u64(),
                inp.u64(),
            ],
        },
        5 => Exit::MsrRead {
            msr: inp.code(&[
                0xC000_0080,
                0xC000_0100,
                0xC000_0101,
                0xC000_0102,
                0x277,
                0x10,
                0x1b,
                0x3a,
            ]) as u32,
        },
        6 => Exit::MsrWrite {
            msr: inp.code(&[
                0xC000_0080,
                0xC000_0100,
                0xC000_0101,
                0xC000_0102,
                0x277,
                0x10,
                0x1b,
                0x3a,
            ]) as u32,
            value: inp.u64(),
        },
        7 => Exit::Io(IoAccess {
            port: inp.u64() as u16,
            size: inp.pick(&[1, 2, 4, 0, 3, 8]),
            write: inp.bool(),
            value: inp.u32(),
            string: inp.bool(),
        }),
        8 => Exit::GuestMemoryFault {
            gpa: inp.gpa(),
            access: inp.pick(&[Access::Read, Access::Write, Access::Execute]),
        },
        9 => Exit::VirtInsn(inp.pick(&INSNS)),
        10 => Exit::IllegalInsn { raw: inp.u64() },
        11 => Exit::HostEvent,
        12 => Exit::Halt,
        _ => match inp.u8() % 3 {
            0 => Exit::TripleFault,
            _ => Exit::Unknown {
                code: inp.u64(),
                info1: inp.u64(),
                info2: inp.u64(),
            },
        },
    }
}

/// The whole generic path (`vcpu::run` -> `handle` -> every policy) over a scripted backend.
pub fn vcpu_handle(data: &[u8]) -> u64 {
    let mut inp = Input { data };
    let mut mem = model_memory(&mut inp);
    let mut script = Vec::new();
    while !inp.is_empty() && script.len() < 64 {
        script.push(exit_from(&mut inp));
    }
    let n = script.len();
    let mut cpu = ScriptedBackend {
        script,
        replies: Vec::new(),
        last: None,
    };
    let mut vm = Vm::new(
        GuestMemory::new(MEM_BASE, &mut mem),
        ModelPlatform::default(),
    );
    let stop = crate::vcpu::run(&mut cpu, &mut vm);
    // Every exit before the stop was answered, and the stop is the script's end or a real reason.
    assert_eq!(vm.exits as usize, n - cpu.script.len());
    assert!(cpu.replies.len() <= vm.exits as usize);
    let mut out = stop_sig(&stop);
    for (e, r) in &cpu.replies {
        out = out.rotate_left(5) ^ exit_sig(e) ^ sig(core::mem::discriminant(r));
    }
    if let StopReason::Backend(BackendError::EntryFailed { what, .. }) = stop {
        assert_eq!(what, "script ended");
    }
    out
}

/// The RISC-V trap path: a model hart delivers scripted traps (scause, stval, htval, registers) to the
/// real backend (decode, virtual-instruction emulation, SBI, replies) under the generic loop.
pub fn riscv_trap(data: &[u8]) -> u64 {
    use crate::riscv::{csr, RiscvH, A0, A6, A7};
    use crate::testing::hart::{ModelHart, Trap};
    const CAUSES: &[u64] = &[
        csr::EXC_ECALL_VS,
        csr::EXC_ECALL_VS,
        csr::EXC_ECALL_VS,
        csr::EXC_INSN_GUEST_PAGE_FAULT,
        csr::EXC_LOAD_GUEST_PAGE_FAULT,
        csr::EXC_STORE_GUEST_PAGE_FAULT,
        csr::EXC_VIRTUAL_INSN,
        csr::EXC_VIRTUAL_INSN,
        csr::EXC_ILLEGAL_INSN,
        csr::CAUSE_INTERRUPT | csr::IRQ_S_TIMER,
        csr::CAUSE_INTERRUPT | 9,
        0,
        2,
        8,
        12,
    ];
    let mut inp = Input { data };
    let mut mem = model_memory(&mut inp);
    let mut script = Vec::new();
    while !inp.is_empty() && script.len() < 64 {
        let scause = inp.code(CAUSES);
        let mut regs = Vec::new();
        if scause == csr::EXC_ECALL_VS {
            regs.push((
                A7,
                inp.code(&[
                    SBI_EXT_LIBVMM,
                    SBI_EXT_LIBVMM,
                    EXT_BASE,
                    EXT_TIME,
                    EXT_SRST,
                    EXT_DBCN,
                    0,
                    1,
                ]),
            ));
            regs.push((A6, inp.code(&[0, 1, 2, 3, 4, 5, 6, 7])));
            regs.push((A0, inp.code(&[0, 1, 2])));
            regs.push((A0 + 1, inp.gpa()));
            regs.push((A0 + 2, inp.len()));
        }
        for _ in 0..inp.u8() % 4 {
            regs.push((inp.u8() as usize % 32, inp.u64()));
        }
        // Virtual-instruction traps carry the instruction in stval: often a SYSTEM-opcode word.
        let stval = if inp.bool() {
            (inp.u32() & !0x7f) as u64 | 0x73
        } else {
            inp.u64()
        };
        script.push(Trap {
            scause,
            stval,
            htval: inp.u64(),
            htinst: inp.code(&[0, 0x2000, 0x2020, 0x3000, 0x3020, 0x3003]),
            regs,
        });
    }
    let hart = ModelHart {
        script,
        ..Default::default()
    };
    let mut cpu = RiscvH::new(
        hart,
        MEM_BASE + 0x1000,
        0,
        MEM_BASE,
        MEM_BASE + 0x2000,
        MEM_BASE + 0x100,
    );
    let mut vm = Vm::new(
        GuestMemory::new(MEM_BASE, &mut mem),
        ModelPlatform::default(),
    );
    let stop = crate::vcpu::run(&mut cpu, &mut vm);
    stop_sig(&stop) ^ sig(vm.exits.min(8))
}

/// The RISC-V SBI decision (BASE, TIME, SRST, DBCN, the guest-SMP HSM/IPI/RFENCE calls on a VM of
/// four vCPUs of its own, everything else refused).
pub fn sbi(data: &[u8]) -> u64 {
    let mut inp = Input { data };
    let mut mem = model_memory(&mut inp);
    let shared = crate::smp::Shared::new();
    shared.publish(4);
    let mut vm = Vm::new(
        GuestMemory::new(MEM_BASE, &mut mem),
        ModelPlatform::default(),
    );
    vm.smp = &shared;
    let mut out = 0;
    while !inp.is_empty() {
        let ext = inp.code(&[
            EXT_BASE,
            EXT_TIME,
            EXT_SRST,
            EXT_DBCN,
            SBI_EXT_LIBVMM,
            0,
            1,
            2,
            8,
            0x735049,
            0x48534D,
            0x52464E43,
        ]);
        let fid = inp.code(&[0, 1, 2, 3, 4, 5, 6]);
        let args = [
            inp.code(&[0, 1, 2, EXT_BASE, EXT_DBCN, SBI_EXT_LIBVMM]),
            inp.gpa(),
            inp.code(&[0, 1]),
            inp.u64(),
            inp.u64(),
            inp.u64(),
        ];
        let before = vm.platform.console.0.len();
        // This vCPU's own fences and IPIs are carried out at once; the other vCPUs never reach
        // "running" here (nothing takes their start requests), so no fence waits for them.
        let r = crate::policy::sbi::decide(ext, fid, &args, &mut vm, &mut |v| {
            let (_, f) = v.smp.take_events(v.cpu);
            v.smp.fences_done(v.cpu, f);
        });
        if let Ok(Reply::Complete(crate::exit::Output::Sbi { error: 0, value })) = r {
            if ext == EXT_DBCN && fid == 0 {
                assert_eq!(vm.platform.console.0.len() - before, value as usize);
            }
        }
        out ^= sig((
            ext.min(16),
            fid.min(8),
            match r {
                Ok(Reply::Complete(crate::exit::Output::Sbi { error, .. })) => error,
                Ok(_) => 100,
                Err(s) => 200 + s.code() as i64,
            },
        ));
    }
    out
}

/// The ISA parsers (`riscv,isa` strings, `riscv,isa-extensions` lists) and KVM's ISA_EXT rules.
pub fn isa(data: &[u8]) -> u64 {
    use crate::riscv::guest_isa::GuestIsa;
    use crate::riscv::isa::{parse_isa_extensions, parse_isa_string, string_list};
    let s = match core::str::from_utf8(data) {
        Ok(s) => s,
        Err(e) => core::str::from_utf8(&data[..e.valid_up_to()]).unwrap_or(""),
    };
    let a = parse_isa_string(s);
    let b = parse_isa_extensions(64, string_list(data));
    let c = parse_isa_extensions(32, string_list(data));
    let mut out = sig((
        a.map(|i| i.exts).map_err(|e| core::mem::discriminant(&e)),
        b.map(|i| i.exts).map_err(|e| core::mem::discriminant(&e)),
        c.is_ok(),
    ));
    if let Ok(isa) = a {
        // The guest's view: every allowed host extension enabled, then toggled by the input.
        let mut g = GuestIsa::new(isa.exts);
        assert_eq!(g.enabled().intersect(isa.exts), g.enabled());
        let mut inp = Input { data };
        for _ in 0..8 {
            let e = Ext::ALL[inp.u8() as usize % Ext::ALL.len()];
            let r = g.set(e, inp.bool());
            let _ = g.get(e);
            let id = inp.u64() % 256;
            let _ = g.get_reg(id);
            let _ = g.set_reg(id, inp.u64());
            out ^= sig(r.is_ok());
        }
        assert_eq!(g.enabled().intersect(isa.exts), g.enabled());
        let _ = g.reg_list().count();
        let _ = g.single_letter_mask();
        let _ = g.hw();
        g.freeze();
        let e = Ext::ALL[inp.u8() as usize % Ext::ALL.len()];
        let before = g.enabled();
        let _ = g.set(e, inp.bool());
        assert_eq!(g.enabled(), before, "nothing changes after the first run");
    }
    out
}

/// The host device-tree reader and `HostPlatform::parse` over any bytes (seeded with real trees).
pub fn dt(data: &[u8]) -> u64 {
    use crate::riscv::dt::Tree;
    use crate::riscv::host_dt::HostPlatform;
    let parsed = HostPlatform::parse(data);
    let mut out = sig(parsed
        .map(|p| (p.harts, p.uart.is_some()))
        .map_err(|e| e.what()));
    if let Ok(t) = Tree::new(data) {
        let mut n = 0u64;
        for node in t.nodes() {
            n += 1;
            let _ = node.name();
            for p in node.properties() {
                let _ = (p.as_str(), p.as_u32(), p.as_u64());
            }
            let _ = node.first_reg();
            let _ = node.children().count();
        }
        for path in [
            "/",
            "/cpus",
            "/cpus/cpu@0",
            "/chosen",
            "/soc/serial",
            "/memory",
        ] {
            let _ = t
                .find(path)
                .map(|n| n.property("bootargs").and_then(|p| p.as_str()));
        }
        let _ = t.find_compatible("ns16550a");
        out ^= sig(n.min(64));
    }
    out
}

/// The guest device-tree generator: random inputs, any buffer size; what it writes parses back to the
/// same facts.
pub fn guest_dt(data: &[u8]) -> u64 {
    use crate::riscv::guest_dt::{build, GuestTree};
    use crate::riscv::host_dt::HostPlatform;
    let mut inp = Input { data };
    let mut exts = ExtSet::EMPTY;
    if inp.bool() {
        for e in [Ext::I, Ext::M, Ext::A, Ext::F, Ext::D, Ext::C] {
            exts.insert(e);
        }
    }
    for e in Ext::ALL {
        if inp.u8() < 64 {
            exts.insert(*e);
        }
    }
    let t = GuestTree {
        mem_base: inp.gpa(),
        mem_size: inp.len(),
        timebase_hz: inp.u32(),
        exts,
        bootargs: inp.str(),
        harts: 1,
    };
    let size = match inp.u8() % 4 {
        0 => inp.u8() as usize,
        _ => 4096,
    };
    let mut buf = vec![0u8; size];
    match build(&t, &mut buf) {
        Err(_) => sig(0u8),
        Ok(n) => {
            assert!(n <= size);
            let tree =
                crate::riscv::dt::Tree::new(&buf[..n]).expect("the generator wrote a valid tree");
            if !t.bootargs.contains('\0') {
                let b = tree
                    .find("/chosen")
                    .and_then(|c| c.property("bootargs"))
                    .and_then(|p| p.as_str());
                assert_eq!(b.unwrap_or(""), t.bootargs);
            }
            match HostPlatform::parse(&buf[..n]) {
                Ok(back) => {
                    assert_eq!(back.isa.exts, exts);
                    assert_eq!(back.memory, (t.mem_base, t.mem_size));
                    assert_eq!(back.timebase_hz, t.timebase_hz as u64);
                    sig(1u8)
                }
                Err(e) => sig(e.what()),
            }
        }
    }
}

/// SEV-SNP policy: firmware facts -> published bits -> attribute query -> launch validation.
#[cfg(feature = "kvm-models")]
pub fn sev_snp(data: &[u8]) -> u64 {
    use crate::svm::sev_snp::*;
    let mut inp = Input { data };
    let f = FirmwareFacts {
        snp_active: inp.bool(),
        feature_info_ecx: if inp.bool() { Some(inp.u32()) } else { None },
        version: (inp.u8(), inp.u8()),
    };
    let supported = supported_policy_bits(&f);
    assert_eq!(supported & !LIBVMM_VALID, 0);
    assert_eq!(supported & !firmware_policy_bits(&f), 0);
    let attr = inp.code(&[ATTR_VMSA_FEATURES, ATTR_SNP_POLICY_BITS, 2]);
    let vmsa = inp.u64();
    let a = get_attr(attr, supported, vmsa);
    let policy = if inp.bool() {
        inp.u64()
    } else {
        supported & inp.u64() | RSVD_MBO
    };
    let (snp, started, flags) = (inp.bool(), inp.bool(), inp.code(&[0, 0, 1]));
    let r = validate_launch_start(snp, started, flags, policy, supported);
    if r.is_ok() {
        assert!(snp && !started && flags == 0);
        assert_eq!(policy & !supported, 0);
        assert_ne!(policy & RSVD_MBO, 0);
    }
    let _ = may_decrypt_vmsa(inp.bool(), policy);
    sig((a.is_ok(), r.map_err(|e| core::mem::discriminant(&e))))
}

/// The VMX software VM-entry checks over random capability MSRs and controls.
pub fn vmx_checks(data: &[u8]) -> u64 {
    use crate::vmx::caps::Caps;
    use crate::vmx::checks::{check, check_eptp, check_guest_crs, GuestCrs, GuestFacts};
    use crate::vmx::controls::Controls;
    let mut inp = Input { data };
    let msrs: Vec<u64> = (0..16).map(|_| inp.u64()).collect();
    let next = Cell::new(0usize);
    let caps = Caps::read(
        |_| {
            let i = next.get();
            next.set(i + 1);
            msrs[i % msrs.len()]
        },
        inp.u8(),
    );
    // Controls: often the capabilities' own adjustment of a wanted value (passes the allowed-settings
    // rules, so the later rules are reached), sometimes raw.
    let word = |inp: &mut Input<'_>, a: crate::vmx::caps::Allowed| {
        let want = inp.u32();
        if inp.bool() {
            a.adjust(want).unwrap_or(want)
        } else {
            want
        }
    };
    let c = Controls {
        pin: word(&mut inp, caps.pin),
        proc1: word(&mut inp, caps.proc1),
        proc2: word(&mut inp, caps.proc2),
        exit: word(&mut inp, caps.exit),
        entry: word(&mut inp, caps.entry),
        cr3_target_count: inp.u8() as u32 % 8,
        io_bitmap_a: inp.u64() & !0xfff,
        io_bitmap_b: inp.u64() & !0xfff,
        msr_bitmap: inp.u64(),
        virtual_apic: inp.u64(),
        tpr_threshold: inp.u32(),
        tsc_multiplier: inp.u64(),
        eptp: inp.u64(),
        vpid: inp.u64() as u16,
        exit_msr_store_count: inp.u32(),
        exit_msr_load_count: inp.u32(),
        entry_msr_load_count: inp.u32(),
        entry_intr_info: inp.u32(),
        entry_error_code: inp.u32(),
        entry_instr_len: inp.u32(),
    };
    let g = GuestFacts {
        vtpr: inp.u8(),
        protected_mode: inp.bool(),
    };
    let r = check(&c, &caps, g);
    let crs = GuestCrs {
        cr0: inp.u64(),
        cr4: inp.u64(),
        efer: inp.u64(),
    };
    let r = r.and_then(|_| check_guest_crs(&c, &caps, crs));
    let e = check_eptp(c.eptp, &caps);
    let _ = (
        caps.fix_cr0(inp.u64()),
        caps.fix_cr4(inp.u64()),
        caps.phys_ok(inp.u64()),
    );
    let _ = (
        caps.revision_id(),
        caps.region_size(),
        caps.cr3_target_max(),
    );
    sig((r.map_err(|c| c.name()), e.map_err(|c| c.name())))
}

/// The AVIC / x2AVIC enable policy from random CPUID and parameters, and the x2APIC MSR pass-through
/// over the MSR permission map: exactly the listed x2APIC MSRs change, every other MSR still exits.
pub fn x2apic(data: &[u8]) -> u64 {
    use crate::svm::avic::*;
    use crate::svm::permission_maps::{MsrPermissionMap, MSRPM_SIZE};
    let mut inp = Input { data };
    let param = AvicParam::parse(if inp.bool() {
        None
    } else {
        Some(inp.pick(&[
            "auto", "1", "y", "on", "0", "off", "false", "", "maybe", "AUTO",
        ]))
    });
    let regs: Vec<[u32; 4]> = (0..4)
        .map(|_| [inp.u32(), inp.u32(), inp.u32(), inp.u32()])
        .collect();
    let mut h = HostFacts::from_cpuid(
        |leaf, _| match leaf {
            1 => regs[0],
            0x8000_0000 => regs[1],
            0x8000_000A => regs[2],
            _ => regs[3],
        },
        inp.bool(),
    );
    h.force_avic = inp.bool();
    h.snp_without_hv_inuse_wr = inp.bool();
    let mut out = 0;
    if let Some(p) = param {
        let d = decide(p, &h);
        if matches!(d.mode, AvicMode::X2avic | AvicMode::Hybrid) {
            assert!(h.npt_enabled && (h.avic || h.force_avic) && p != AvicParam::Off);
        }
        let ext = inp.bool();
        let id = inp.u32();
        assert_eq!(
            id_inhibits_avic(id, d.mode, ext),
            id > max_physical_id(d.mode, ext)
        );
        out = sig((core::mem::discriminant(&d.mode), d.warning));
    }
    let mut map = MsrPermissionMap([0; MSRPM_SIZE]);
    map.deny_all();
    for _ in 0..inp.u8() % 8 {
        let msr = inp.code(&[
            0x802,
            0x80B,
            0x83E,
            0x1FFF,
            0xC000_0080,
            0xC001_1FFF,
            0x2000,
            0x800,
        ]) as u32;
        let (r, w) = (inp.bool(), inp.bool());
        if map.set_intercept(msr, r, w) {
            assert_eq!(
                (map.intercepts(msr, false), map.intercepts(msr, true)),
                (r, w)
            );
        } else {
            assert!(map.intercepts(msr, false) && map.intercepts(msr, true));
        }
    }
    let before: Vec<(bool, bool)> = (0x800..0x900)
        .map(|m| (map.intercepts(m, false), map.intercepts(m, true)))
        .collect();
    let intercept = inp.bool();
    set_x2apic_msr_interception(&mut map, intercept);
    for (i, m) in (0x800u32..0x900).enumerate() {
        let now = (map.intercepts(m, false), map.intercepts(m, true));
        if X2APIC_PASSTHROUGH.contains(&m) {
            assert_eq!(now, (intercept, intercept));
        } else {
            assert_eq!(now, before[i], "MSR {m:#x} is not x2AVIC's to change");
        }
    }
    out
}

/// The VMM's command-line options (`libvmm.*`, parsed once at boot).
pub fn cmdline(data: &[u8]) -> u64 {
    use crate::cmdline::Options;
    let r = Options::parse(data);
    match r {
        Ok(o) => {
            assert_eq!(Options::parse(data), Ok(o), "parsing is deterministic");
            sig((
                1u8,
                o.timeout_ms.is_some(),
                o.isa.is_some(),
                o.vmx_skip_checks,
            ))
        }
        Err(refused) => {
            // The refused word is a piece of the command line (named back to the user).
            let base = data.as_ptr() as usize;
            let w = refused.word.as_ptr() as usize;
            let inside = w >= base && w + refused.word.len() <= base + data.len();
            assert!(inside || refused.word == "libvmm.(not UTF-8)");
            let _ = std::format!("{refused}");
            sig((2u8, core::mem::discriminant(&refused.why)))
        }
    }
}

/// The virtual x2APIC model: random sequences of RDMSR/WRMSR over its whole MSR range (and APIC_BASE,
/// TSC_DEADLINE, neighbours), timer ticks, entry and HLT decisions, with time moving forward. Invariants:
/// no panic; a deadline is never in the past; an injected vector is one the guest can take (>= 16).
pub fn apic(data: &[u8]) -> u64 {
    use crate::x86::apic::delivery::{EntryAction, HaltAction, Interruptibility};
    use crate::x86::apic::VirtualApic;
    let mut inp = Input { data };
    let mut a = VirtualApic::new(0, true, 39, 1000);
    let mut now = inp.u64() >> 8;
    let mut sig = 0u64;
    for _ in 0..32 {
        if inp.data.is_empty() {
            break;
        }
        now = now.saturating_add(inp.u64() % 100_000);
        let msr = inp.code(&[
            0x1B, 0x6E0, 0x802, 0x803, 0x808, 0x80B, 0x80F, 0x828, 0x830, 0x832, 0x838, 0x839,
            0x83E, 0x83F, 0x800, 0x8FF, 0x900,
        ]) as u32;
        let msr = if inp.bool() {
            0x800 | (inp.u8() as u32)
        } else {
            msr
        };
        let cpu = Interruptibility {
            interrupts_enabled: inp.bool(),
            shadow: inp.bool(),
        };
        match inp.u8() % 6 {
            0 | 1 => sig = sig.rotate_left(3) ^ a.write_msr(msr, inp.u64(), now).is_ok() as u64,
            2 => sig = sig.rotate_left(3) ^ a.read_msr(msr, now).map_or(7, |v| v & 0xFF),
            3 => sig ^= a.tick(now) as u64,
            4 => {
                if let EntryAction::Inject(v) = a.before_entry(cpu, inp.bool()) {
                    assert!(v >= 16, "vector {v} injected");
                    sig ^= v as u64;
                }
            }
            _ => {
                if let HaltAction::SleepUntil(t) = a.on_halt(now, cpu.interrupts_enabled) {
                    assert!(t >= now, "sleep until {t} before now {now}");
                }
            }
        }
        if let Some(d) = a.next_deadline(now) {
            assert!(d >= now, "deadline {d} before now {now}");
        }
    }
    sig
}

/// The ACPI reader (x86 CPU enumeration): a random MADT on its own, and a random RSDP -> RSDT/XSDT -> MADT
/// chain in a model physical memory of 64 KiB (addresses outside it are unreadable). No panic; whatever
/// it accepts has at most `MAX_CPUS` CPUs.
pub fn acpi(data: &[u8]) -> u64 {
    use crate::x86::acpi::{cpus_from_rsdp, parse_madt};
    let sig = match parse_madt(data) {
        Ok(c) => {
            assert!(c.apic_ids.len() <= crate::config::MAX_CPUS);
            c.apic_ids.len() as u64
        }
        Err(e) => e as u64 + 100,
    };
    let mut inp = Input { data };
    let rsdp = inp.u64() % 0x1_0000;
    let sig2 = match cpus_from_rsdp(rsdp, |addr, len| {
        let end = addr.checked_add(len as u64)?;
        if end > data.len() as u64 {
            return None;
        }
        data.get(addr as usize..end as usize)
    }) {
        Ok(c) => c.apic_ids.len() as u64,
        Err(e) => e as u64 + 100,
    };
    sig ^ (sig2 << 8)
}

thread_local! {
    /// The loader's model window (reused: the size varies per input, the allocation does not).
    static WINDOW: RefCell<Box<[u8]>> = RefCell::new(vec![0u8; 0x4_0000].into_boxed_slice());
}

/// The payload loader over a payload ELF: the input is the ELF file itself (seeded from real payload
/// ELFs and mutated), parsed for x86-64, then loaded into a model window with W^X segment checks and
/// relocations. No panic; what loads has its entry inside an executable segment in the window.
pub fn loader(data: &[u8]) -> u64 {
    use crate::loader::{elf_image, load};
    use libvmm_abi::layout;
    let base = MEM_BASE;
    let at = base + layout::PAYLOAD_OFFSET;
    let img = match elf_image::parse(data, at, elf_image::native()) {
        Ok(img) => img,
        Err(e) => return e as u64 + 1000,
    };
    WINDOW.with(|w| {
        let mut w = w.borrow_mut();
        let mut mem = GuestMemory::new(base, &mut w[..]);
        match load(&img, &mut mem, BackendId::Svm, b"fuzz", 0) {
            Ok(l) => {
                assert!(l.entry >= base && l.entry < base + 0x4_0000);
                1
            }
            Err(e) => e as u64 + 2000,
        }
    })
}

/// The x86 instruction emulator's vCPU model for [`emulator`] (the emulator tests' model).
#[cfg(target_arch = "x86_64")]
use crate::testing::emu_cpu::ModelCpu as EmuModelCpu;

/// The x86 instruction emulator (decode with yaxpeax-x86, then execute): arbitrary instruction bytes
/// (plain, or behind the forced-emulation prefix) at a RIP that may sit at a page's end, arbitrary
/// registers and control bits, over 64 KiB of guest RAM whose 4-level page tables the input edits (any
/// entry of the four tables: flags, frames in RAM, on the device, in a hole or anywhere), with a device
/// range mapped by a 2 MiB page. The outcomes that need the caller are completed as the loop does (MMIO
/// answered, string I/O batches carried out until the REP ends, CPUID answered). Must hold: no panic; an
/// MMIO access lies inside the device and is 1/2/4/8 bytes; a string I/O batch fits the buffer and has
/// 1..=4-byte elements; an exception leaves every register and RFLAGS as they were; each step ends in a
/// retire, an exception or a stop.
#[cfg(target_arch = "x86_64")]
pub fn emulator(data: &[u8]) -> u64 {
    use crate::x86::emulate::{ctl, Emulator, IoDir, Outcome};
    const RAM: usize = 0x1_0000;
    const PML4: u64 = 0x1000;
    const PDPT: u64 = 0x2000;
    const PD: u64 = 0x3000;
    const PT: u64 = 0x4000;
    const CODE: u64 = 0x5000;
    const DEVICE_VA: u64 = 0x20_0000;
    const DEVICE_GPA: u64 = 0xD000_0000;
    const HOLE_VA: u64 = 0x40_0000;
    const HOLE_GPA: u64 = 0xE000_0000;
    const PWU: u64 = 0b111;
    const PS: u64 = 1 << 7;

    let mut inp = Input { data };
    let mut ram = vec![0u8; RAM];
    let w64 = |ram: &mut [u8], gpa: u64, v: u64| {
        ram[gpa as usize..gpa as usize + 8].copy_from_slice(&v.to_le_bytes())
    };
    w64(&mut ram, PML4, PDPT | PWU);
    w64(&mut ram, PDPT, PD | PWU);
    w64(&mut ram, PD, PT | PWU);
    w64(&mut ram, PD + 8, DEVICE_GPA | PWU | PS);
    w64(&mut ram, PD + 16, HOLE_GPA | PWU | PS);
    for i in 0..(RAM as u64 >> 12) {
        w64(&mut ram, PT + i * 8, (i << 12) | PWU);
    }
    // Page-table edits: which table, which entry, flags and frame.
    for _ in 0..inp.u8() % 6 {
        let table = inp.pick(&[PML4, PDPT, PD, PT]);
        let index = u64::from(inp.u8() % 24);
        let frame = match inp.u8() % 6 {
            0 => u64::from(inp.u8() % 16) << 12,
            1 => DEVICE_GPA,
            2 => HOLE_GPA,
            3 => inp.pick(&[PDPT, PD, PT, CODE]),
            _ => inp.raw64() & 0x000F_FFFF_FFFF_F000,
        };
        let flags = match inp.u8() % 3 {
            0 => PWU,
            1 => u64::from(inp.u8()) | (u64::from(inp.bool()) << 63),
            _ => inp.raw64() & !0x000F_FFFF_FFFF_F000,
        };
        w64(&mut ram, table + index * 8, frame | flags);
    }
    // Data the instruction may read (the stack and data pages).
    let n = usize::from(inp.u8());
    let b = inp.bytes(n);
    ram[0x8000..0x8000 + b.len()].copy_from_slice(b);

    let addr = |inp: &mut Input<'_>| -> u64 {
        let off = u64::from(inp.u8()) * 16;
        match inp.u8() % 8 {
            0 => 0x8000 + off,
            1 => 0xF000 + off,
            2 | 3 => DEVICE_VA + off % 0x1000 + u64::from(inp.u8() % 8),
            4 => HOLE_VA + off,
            5 => 0x1_0000 - u64::from(inp.u8() % 16),
            6 => DEVICE_VA + 0x1000 - u64::from(inp.u8() % 8),
            _ => inp.u64(),
        }
    };
    let mut cpu = EmuModelCpu {
        rflags: (inp.raw64() & 0x3F_7FD5) | 2,
        cr0: ctl::CR0_PG | 1 | if inp.bool() { ctl::CR0_WP } else { 0 },
        cr3: PML4
            | if inp.u8().is_multiple_of(8) {
                inp.raw64()
            } else {
                0
            },
        cr4: ctl::CR4_PAE
            | inp.pick(&[
                0,
                ctl::CR4_SMEP,
                ctl::CR4_SMAP,
                ctl::CR4_SMEP | ctl::CR4_SMAP,
            ])
            | if inp.u8().is_multiple_of(16) {
                ctl::CR4_LA57
            } else {
                0
            },
        efer: (1 << 8)
            | if !inp.u8().is_multiple_of(16) {
                ctl::EFER_LMA
            } else {
                0
            }
            | if inp.bool() { ctl::EFER_NXE } else { 0 },
        cpl: if inp.bool() { 3 } else { 0 },
        long: !inp.u8().is_multiple_of(16),
        fs: addr(&mut inp),
        gs: addr(&mut inp),
        ..Default::default()
    };
    for r in 0..16 {
        cpu.gpr[r] = if inp.bool() {
            addr(&mut inp)
        } else {
            inp.u64()
        };
    }
    cpu.gpr[4] = if inp.u8().is_multiple_of(4) {
        addr(&mut inp)
    } else {
        0xF800
    };
    // The instruction: at the start of the code page, near its end (crossing into the next page, whose
    // PTE the edits may have changed), or anywhere.
    cpu.rip = match inp.u8() % 3 {
        0 => CODE,
        1 => CODE + 0x1000 - u64::from(inp.u8() % 20),
        _ => addr(&mut inp),
    };
    let forced = inp.bool();
    let prefix: &[u8] = if forced {
        &libvmm_abi::FORCED_EMULATION_PREFIX
    } else {
        &[]
    };
    // Usually a prefix and an opcode the emulator implements (string I/O, MOV forms, stack and branch
    // operations, ALU groups, CPUID, NOPs) with fuzzed operand bytes after them; otherwise raw bytes.
    const PREFIXES: [&[u8]; 9] = [
        &[],
        &[],
        &[0xF3],
        &[0xF2],
        &[0x66],
        &[0x48],
        &[0x67],
        &[0xF0],
        &[0xF3, 0x48],
    ];
    const OPCODES: [&[u8]; 40] = [
        &[0x6C],
        &[0x6D],
        &[0x6E],
        &[0x6F],
        &[0x88],
        &[0x89],
        &[0x8A],
        &[0x8B],
        &[0xC6],
        &[0xC7],
        &[0xA0],
        &[0xA1],
        &[0xA2],
        &[0xA3],
        &[0x0F, 0xA2],
        &[0xC8],
        &[0xC9],
        &[0xE8],
        &[0xE9],
        &[0xEB],
        &[0x74],
        &[0x75],
        &[0xE0],
        &[0xE2],
        &[0xE3],
        &[0xFF],
        &[0x50],
        &[0x58],
        &[0x8F],
        &[0x68],
        &[0xC2],
        &[0xC3],
        &[0x01],
        &[0x81],
        &[0x83],
        &[0xF6],
        &[0xF7],
        &[0xFE],
        &[0x0F, 0x1F],
        &[0x90],
    ];
    let mut insn: Vec<u8> = prefix.to_vec();
    if !inp.u8().is_multiple_of(4) {
        insn.extend_from_slice(inp.pick(&PREFIXES));
        insn.extend_from_slice(inp.pick(&OPCODES));
    }
    let len = usize::from(inp.u8() % 16);
    insn.extend_from_slice(inp.bytes(len));
    if cpu.rip < RAM as u64 {
        let at = cpu.rip as usize;
        let end = (at + insn.len()).min(RAM);
        ram[at..end].copy_from_slice(&insn[..end - at]);
    }

    let mut emu: Emulator<2> = Emulator::new(inp.pick(&[36, 40, 48, 52]));
    emu.add_device(DEVICE_GPA, 0x1000).expect("one device fits");
    let mut mem = GuestMemory::new(0, &mut ram);
    let mut io = [0u8; 64];
    let mut first = true;
    let mut outcomes = Vec::new();
    for _ in 0..8 {
        let before = cpu.clone();
        let out = if first && forced {
            emu.emulate_forced(&mut cpu, &mut mem, &mut io)
        } else {
            emu.emulate(&mut cpu, &mut mem, &mut io)
        };
        first = false;
        let code = match out {
            Outcome::Retired(r) => {
                outcomes.push((0u8, u64::from(r.instruction) | u64::from(r.branch) << 1));
                break;
            }
            Outcome::Exception(e) => {
                // The forced path may have moved RIP past the prefix: the fault is reported at the
                // instruction. Nothing else changed.
                assert_eq!(cpu.gpr, before.gpr, "{e:?} changed a register");
                assert_eq!(cpu.rflags, before.rflags, "{e:?} changed RFLAGS");
                if !forced {
                    assert_eq!(cpu.rip, before.rip, "{e:?} moved RIP");
                }
                outcomes.push((1, u64::from(e.vector())));
                break;
            }
            Outcome::Stop(s) => {
                outcomes.push((2, sig(core::mem::discriminant(&s))));
                break;
            }
            Outcome::Mmio(m) => {
                assert!(
                    matches!(m.size, 1 | 2 | 4 | 8)
                        && emu.is_device(m.gpa)
                        && emu.is_device(m.gpa + u64::from(m.size) - 1),
                    "MMIO outside the device: {m:?}"
                );
                if let Some(v) = m.write {
                    let mask = if m.size == 8 {
                        u64::MAX
                    } else {
                        (1u64 << (m.size * 8)) - 1
                    };
                    assert_eq!(v & !mask, 0, "MMIO store wider than its size: {m:?}");
                }
                let r = m.complete(&mut cpu, inp.u64());
                outcomes.push((3, u64::from(m.size) | u64::from(r.branch) << 8));
                break;
            }
            Outcome::Cpuid(c) => {
                let r = c.complete(&mut cpu, [inp.u32(), inp.u32(), inp.u32(), inp.u32()]);
                outcomes.push((4, u64::from(r.instruction)));
                break;
            }
            Outcome::PortIo(p) => {
                assert!(
                    matches!(p.size, 1 | 2 | 4) && p.count >= 1 && p.bytes() <= io.len(),
                    "string I/O batch does not fit: {p:?}"
                );
                if p.dir == IoDir::In {
                    let fill = inp.u8();
                    io.iter_mut().for_each(|b| *b = fill);
                }
                match p.complete(&mut cpu, &mut mem, &io) {
                    Ok(r) => {
                        let code = (5u8, u64::from(p.size) | u64::from(r.instruction) << 8);
                        if r.instruction {
                            outcomes.push(code);
                            break;
                        }
                        code
                    }
                    Err(s) => {
                        outcomes.push((6, sig(core::mem::discriminant(&s))));
                        break;
                    }
                }
            }
        };
        outcomes.push(code);
    }
    sig((outcomes, insn.get(prefix.len()).copied(), forced))
}

/// The build-time file archive (`libvmm_abi::files`): the bytes the guest runtime reads from its own
/// memory and parses at start-up (a payload may have changed them). Every input is refused by name or
/// yields entries that keep the format's promises: valid, sorted, unique paths and data inside the input.
pub fn files(data: &[u8]) -> u64 {
    use libvmm_abi::files::{valid_path, Archive};
    let a = match Archive::parse(data) {
        Ok(a) => a,
        Err(e) => return e as u64 + 1,
    };
    let mut prev: Option<&str> = None;
    let mut total = 0usize;
    for (p, d) in a.iter() {
        assert!(valid_path(p), "accepted an invalid path {p:?}");
        assert!(prev.is_none_or(|q| q < p), "accepted unsorted paths");
        let start = d.as_ptr() as usize - data.as_ptr() as usize;
        assert!(start + d.len() <= data.len(), "data outside the archive");
        total += d.len();
        prev = Some(p);
    }
    assert_eq!(a.iter().count(), a.len());
    100 + a.len() as u64 * 7 + (total as u64 & 0xff)
}
