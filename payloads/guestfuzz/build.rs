//! Generates the fuzzer's random instruction blobs at build time, from a fixed seed.
//!
//! Why at build time: the nested tables map a payload's text read+execute and its data read+write
//! without execute (W^X), so random bytes written at run time could never be run. The blobs go into
//! `.text.fuzzblobs`, which `linker/guest-*.ld` places inside the text segment (`*(.text .text.*)`),
//! and two tables of their addresses into read-only data. Every blob ends with a jump to `gf_done`
//! (a UD2 / illegal instruction the fuzzer's handler recognises as "ran to the end"), followed on x86
//! by 16 INT3 bytes: whatever instruction boundary the random bytes leave, the CPU meets an INT3
//! within 15 bytes (the longest x86 instruction) if it did not reach the jump.
//!
//! Two sets: *safe* blobs, whose every exception returns to the fuzzer's recovery point, so that one
//! boot runs hundreds of seeds; *wild* blobs, unfiltered, which may legitimately stop the VM (HLT with
//! nothing to wake it, a triple fault, an access outside guest memory, the exit hypercall).
//!
//! x86 safe filter (each candidate decoded with `yaxpeax-x86`, the decoder libvmm's instruction
//! emulator uses): no control transfer (a jump could loop for ever or land in data, which W^X stops),
//! no HLT, no hypercall (its random number could be EXIT), no descriptor-table or CR3 loads (the next
//! exception would triple-fault), nothing that names RSP but PUSH (the exception frame must land on
//! the fuzzer's stack), no RIP-relative or absolute memory operand and no displacement of 4 KiB or more
//! (the registers point into a scratch area; far-off addresses fault in the fuzzer's own page tables
//! instead of reaching the payload's text, whose write the nested tables would stop), REP string
//! instructions only first (RCX still holds its small start value), and no LMSW from memory (SVM stops
//! the VM there: an exit libvmm does not handle, code 99). RISC-V blobs are built from
//! encodings instead: no branches, jumps, ECALL, WFI or SRET, never SP as a destination, and no write
//! of `stvec` or `satp` in the safe set.
use std::fmt::Write as _;

const SAFE_BLOBS: usize = 2048;
const WILD_BLOBS: usize = 512;
const SEED: u64 = 0x6775_6573_7466_757a; // "guestfuz"

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // splitmix64
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let arch = std::env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_default();
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR").unwrap()).join("blobs.rs");
    let mut rng = Rng(SEED);
    let text = match arch.as_str() {
        "x86_64" => x86::generate(&mut rng),
        "riscv64" => riscv::generate(&mut rng),
        // Host builds (clippy of the workspace) need nothing runnable.
        _ => "pub const SAFE_BLOBS: usize = 0;\npub const WILD_BLOBS: usize = 0;\n".to_string(),
    };
    std::fs::write(out, text).unwrap();
}

/// The generated Rust: one `global_asm!` with the blobs (text) and their address tables (rodata).
fn emit(blobs: &[Vec<String>], safe: usize, extra: &str) -> String {
    let mut asm = String::new();
    asm.push_str(".section .text.fuzzblobs, \"ax\"\n");
    for (i, b) in blobs.iter().enumerate() {
        let _ = writeln!(asm, ".balign 4\n.Lgfb{i}:");
        for line in b {
            let _ = writeln!(asm, "{line}");
        }
    }
    asm.push_str(extra);
    asm.push_str(
        ".section .rodata.fuzzblobs, \"a\"\n.balign 8\n.global gf_blob_table\ngf_blob_table:\n",
    );
    for i in 0..blobs.len() {
        let _ = writeln!(asm, ".quad .Lgfb{i}");
    }
    format!(
        "pub const SAFE_BLOBS: usize = {safe};\npub const WILD_BLOBS: usize = {};\n\
         core::arch::global_asm!({asm:?});\n",
        blobs.len() - safe
    )
}

mod x86 {
    use super::Rng;
    use yaxpeax_arch::{Decoder, LengthedInstruction, U8Reader};
    use yaxpeax_x86::long_mode::{InstDecoder, Instruction, Operand};

    /// Opcode templates that reach the VMM or privileged state (the rest of a candidate is random).
    const TEMPLATES: &[&[u8]] = &[
        &[0x0F, 0x01], // group 7: SGDT..INVLPG, VMCALL, VMMCALL, XSETBV, SWAPGS, SVM insns...
        &[0x0F, 0x00], // group 6: SLDT, STR, LLDT, LTR, VERR, VERW
        &[0x0F, 0x20], // MOV r, CRn
        &[0x0F, 0x22], // MOV CRn, r
        &[0x0F, 0x21], // MOV r, DRn
        &[0x0F, 0x23], // MOV DRn, r
        &[0x0F, 0x30], // WRMSR
        &[0x0F, 0x32], // RDMSR
        &[0x0F, 0x33], // RDPMC
        &[0x0F, 0xA2], // CPUID
        &[0x0F, 0x31], // RDTSC
        &[0x0F, 0x06], // CLTS
        &[0x0F, 0x08], // INVD
        &[0x0F, 0x09], // WBINVD
        &[0x0F, 0x37], // GETSEC
        &[0x0F, 0x78], // VMREAD
        &[0x0F, 0x79], // VMWRITE
        &[0x0F, 0xC7], // group 9: CMPXCHG16B, RDRAND, VMPTRLD, VMCLEAR, VMXON ...
        &[0x0F, 0xAE], // group 15: FXSAVE, XSAVE, LFENCE, CLFLUSH, RDFSBASE ...
        &[0x66, 0x0F, 0x38], // INVEPT, INVVPID, INVPCID ...
        &[0xE4],       // IN AL, imm8
        &[0xE5],
        &[0xE6], // OUT imm8, AL
        &[0xE7],
        &[0xEC], // IN AL, DX
        &[0xED],
        &[0xEE], // OUT DX, AL
        &[0xEF],
        &[0xF3, 0x6C], // REP INSB
        &[0xF3, 0x6E], // REP OUTSB
        &[0xCD],       // INT imm8
        &[0xCC],
        &[0xF1],
        &[0x9D], // POPF
        &[0xFA],
        &[0xFB],
        &[0x8E], // MOV Sreg, r/m
        &[0xF4], // HLT (wild only)
    ];

    fn candidate(rng: &mut Rng) -> Vec<u8> {
        let mut b: Vec<u8> = (0..15).map(|_| rng.next() as u8).collect();
        match rng.below(100) {
            0..=34 => {}
            35..=64 => b[0] = 0x0F,
            65..=94 => {
                let t = TEMPLATES[rng.below(TEMPLATES.len() as u64) as usize];
                let skip = if rng.chance(20) {
                    b[0] = [0x48, 0x66, 0xF3, 0xF2, 0x41][rng.below(5) as usize];
                    1
                } else {
                    0
                };
                b[skip..skip + t.len()].copy_from_slice(t);
            }
            _ => b[0] = [0x48, 0x66, 0xF3, 0xF2, 0xF0, 0x2E, 0x64, 0x65][rng.below(8) as usize],
        }
        b
    }

    /// Whether a decoded instruction keeps the fuzzer's recovery intact (see the module doc).
    fn safe(inst: &Instruction, first: bool) -> bool {
        let text = inst.to_string();
        let mnemonic = text.split_whitespace().find(|w| {
            !matches!(
                *w,
                "lock" | "rep" | "repe" | "repne" | "repz" | "repnz" | "data16" | "addr32"
            )
        });
        let Some(m) = mnemonic else { return false };
        let banned = m.starts_with('j')
            || m.starts_with("loop")
            || m.starts_with("call")
            || m.starts_with("ret")
            || m.starts_with("iret")
            || m.starts_with("sys")
            || m.starts_with("xbegin")
            // String port I/O is emulated by the VMM (since the instruction emulator): INS writes guest
            // memory at RDI as the guest asked, which can be the fuzzer's own recovery state.
            || m.starts_with("ins")
            || m.starts_with("outs")
            || matches!(
                m,
                "hlt"
                    | "vmcall"
                    | "vmmcall"
                    | "lidt"
                    | "lgdt"
                    | "lldt"
                    | "ltr"
                    | "enter"
                    | "vmrun"
                    | "vmfunc"
                    | "mwait"
                    | "mwaitx"
                    | "tpause"
                    | "umwait"
                    // INT n / INTO / INT1: the guest's IDT has gates for all 256 vectors (it has an
                    // interrupt controller), so these run a handler instead of faulting.
                    | "int"
                    | "into"
                    | "int1"
            );
        // LMSW with a memory operand: the VMM does not emulate it on SVM (without decode assists it
        // reads the instruction itself) and stops the VM as an unhandled exit (99): wild mode only.
        let lmsw_memory = m == "lmsw" && text.contains('[');
        if banned || lmsw_memory || text.contains("rip") || text.contains("cr3") {
            return false;
        }
        if text.starts_with("rep") && !first {
            return false;
        }
        for i in 0..inst.operand_count() {
            match inst.operand(i) {
                Operand::Register { reg } => {
                    let r = reg.to_string();
                    // PUSH RSP only reads it; POP RSP would load it from the scratch stack.
                    if matches!(r.as_str(), "rsp" | "esp" | "sp" | "spl") && m != "push" {
                        return false;
                    }
                }
                Operand::AbsoluteU32 { .. } | Operand::AbsoluteU64 { .. } => return false,
                Operand::Disp { disp, .. }
                | Operand::MemIndexScaleDisp { disp, .. }
                | Operand::MemBaseIndexScaleDisp { disp, .. }
                | Operand::DispMasked { disp, .. }
                | Operand::MemIndexScaleDispMasked { disp, .. }
                | Operand::MemBaseIndexScaleDispMasked { disp, .. }
                    if disp.unsigned_abs() >= 0x1000 =>
                {
                    return false
                }
                _ => {}
            }
        }
        true
    }

    fn blob(rng: &mut Rng, filtered: bool) -> Vec<String> {
        let decoder = InstDecoder::default();
        let want = 1 + rng.below(6) as usize;
        let mut lines = Vec::new();
        let mut count = 0;
        let mut tries = 0;
        while count < want && tries < 200 {
            tries += 1;
            let b = candidate(rng);
            let mut reader = U8Reader::new(&b);
            let inst = match decoder.decode(&mut reader) {
                Ok(i) => i,
                // Bytes the decoder refuses: the CPU raises #UD (or runs something the decoder does not
                // know); a wild blob may end with them.
                Err(_) if !filtered && rng.chance(30) => {
                    lines.push(format!(".byte {}", hex(&b[..1 + rng.below(4) as usize])));
                    break;
                }
                Err(_) => continue,
            };
            if filtered && !safe(&inst, count == 0) {
                continue;
            }
            let len = inst.len().to_const() as usize;
            let note = inst.to_string().replace(['{', '}'], "");
            lines.push(format!(".byte {}   # {note}", hex(&b[..len])));
            count += 1;
        }
        lines.push("jmp gf_done".into());
        lines.push(".fill 16, 1, 0xcc".into());
        lines
    }

    fn hex(b: &[u8]) -> String {
        b.iter()
            .map(|x| format!("{x:#04x}"))
            .collect::<Vec<_>>()
            .join(", ")
    }

    pub fn generate(rng: &mut Rng) -> String {
        let mut blobs: Vec<Vec<String>> = (0..super::SAFE_BLOBS).map(|_| blob(rng, true)).collect();
        blobs.extend((0..super::WILD_BLOBS).map(|_| blob(rng, false)));
        super::emit(&blobs, super::SAFE_BLOBS, "")
    }
}

mod riscv {
    use super::Rng;
    use std::fmt::Write as _;

    const SSTATUS: u32 = 0x100;
    const STVEC: u32 = 0x105;
    const SATP: u32 = 0x180;
    /// CSR numbers a guest is likely to probe (S, VS, H, M, counters, debug, unprivileged FP/vector).
    const CSRS: &[u32] = &[
        0x001, 0x002, 0x003, 0x008, 0x009, 0x00A, 0x00F, 0x015, 0x100, 0x104, 0x105, 0x106, 0x10A,
        0x10C, 0x140, 0x141, 0x142, 0x143, 0x144, 0x14D, 0x180, 0x5A8, 0x200, 0x204, 0x240, 0x280,
        0x600, 0x602, 0x603, 0x604, 0x606, 0x607, 0x60A, 0x60C, 0x643, 0x644, 0x645, 0x64A, 0x680,
        0x300, 0x301, 0x302, 0x303, 0x304, 0x305, 0x30A, 0x340, 0x341, 0x342, 0x343, 0x344, 0x3A0,
        0x3B0, 0x7A0, 0x7B0, 0xB00, 0xC00, 0xC01, 0xC02, 0xC03, 0xDA0, 0xF11, 0xF12, 0xF13, 0xF14,
        0xF15, 0xC20, 0xC21, 0xC22,
    ];

    /// A register that may be written (never x2 = sp).
    fn rd(rng: &mut Rng) -> u32 {
        loop {
            let r = rng.below(32) as u32;
            if r != 2 {
                return r;
            }
        }
    }

    fn reg(rng: &mut Rng) -> u32 {
        rng.below(32) as u32
    }

    fn csr(rng: &mut Rng) -> u32 {
        if rng.chance(70) {
            CSRS[rng.below(CSRS.len() as u64) as usize]
        } else {
            rng.below(4096) as u32
        }
    }

    fn i_type(imm: u32, rs1: u32, f3: u32, rd: u32, op: u32) -> u32 {
        ((imm & 0xFFF) << 20) | (rs1 << 15) | (f3 << 12) | (rd << 7) | op
    }

    fn r_type(f7: u32, rs2: u32, rs1: u32, f3: u32, rd: u32, op: u32) -> u32 {
        (f7 << 25) | (rs2 << 20) | (rs1 << 15) | (f3 << 12) | (rd << 7) | op
    }

    fn s_type(imm: u32, rs2: u32, rs1: u32, f3: u32, op: u32) -> u32 {
        (((imm >> 5) & 0x7F) << 25)
            | (rs2 << 20)
            | (rs1 << 15)
            | (f3 << 12)
            | ((imm & 0x1F) << 7)
            | op
    }

    /// One instruction; `filtered` keeps the safe rules of the module doc.
    fn insn(rng: &mut Rng, filtered: bool) -> u32 {
        let imm = rng.next() as u32;
        match rng.below(14) {
            0 => r_type(
                [0, 0x20, 1][rng.below(3) as usize],
                reg(rng),
                reg(rng),
                rng.below(8) as u32,
                rd(rng),
                0x33,
            ),
            1 => r_type(
                [0, 0x20, 1][rng.below(3) as usize],
                reg(rng),
                reg(rng),
                rng.below(8) as u32,
                rd(rng),
                0x3B,
            ),
            2 => i_type(imm, reg(rng), rng.below(8) as u32, rd(rng), 0x13),
            3 => (imm & 0xFFFF_F000) | (rd(rng) << 7) | [0x37, 0x17][rng.below(2) as usize],
            4 => i_type(imm, reg(rng), rng.below(7) as u32, rd(rng), 0x03),
            5 => s_type(imm, reg(rng), reg(rng), rng.below(4) as u32, 0x23),
            6 => {
                let f5 = [
                    0x00, 0x01, 0x02, 0x03, 0x04, 0x08, 0x0C, 0x10, 0x14, 0x18, 0x1C,
                ][rng.below(11) as usize];
                r_type(
                    (f5 << 2) | rng.below(4) as u32,
                    reg(rng),
                    reg(rng),
                    2 + rng.below(2) as u32,
                    rd(rng),
                    0x2F,
                )
            }
            7 => {
                // FP load/store/op (illegal while sstatus.FS is off).
                match rng.below(3) {
                    0 => i_type(imm, reg(rng), 2 + rng.below(2) as u32, reg(rng), 0x07),
                    1 => s_type(imm, reg(rng), reg(rng), 2 + rng.below(2) as u32, 0x27),
                    _ => r_type(
                        rng.below(128) as u32,
                        reg(rng),
                        reg(rng),
                        rng.below(8) as u32,
                        reg(rng),
                        0x53,
                    ),
                }
            }
            8 => {
                // FENCE, FENCE.I, CBO.* (cbo.inval/clean/flush/zero: imm 0..=4, funct3 2).
                match rng.below(3) {
                    0 => i_type(imm, 0, 0, 0, 0x0F),
                    1 => i_type(0, 0, 1, 0, 0x0F),
                    _ => i_type(rng.below(5) as u32, reg(rng), 2, 0, 0x0F),
                }
            }
            9 | 10 => {
                // Zicsr: CSRRW/S/C and the immediate forms, on any CSR.
                loop {
                    let f3 = [1, 2, 3, 5, 6, 7][rng.below(6) as usize];
                    let c = csr(rng);
                    let src = reg(rng);
                    let writes = f3 == 1 || f3 == 5 || src != 0;
                    if filtered && writes && (c == SSTATUS || c == STVEC || c == SATP) {
                        continue;
                    }
                    return i_type(c, src, f3, rd(rng), 0x73);
                }
            }
            11 => {
                // Privileged SYSTEM forms: EBREAK, SFENCE.VMA, HFENCE.*, HLV/HSV, MRET; wild also ECALL, WFI, SRET.
                let safe: [u32; 6] = [
                    0x0010_0073,                                  // ebreak
                    r_type(0x09, reg(rng), reg(rng), 0, 0, 0x73), // sfence.vma
                    r_type(0x11, reg(rng), reg(rng), 0, 0, 0x73), // hfence.vvma
                    r_type(0x31, reg(rng), reg(rng), 0, 0, 0x73), // hfence.gvma
                    r_type(
                        0x30 + rng.below(8) as u32,
                        rng.below(4) as u32,
                        reg(rng),
                        4,
                        rd(rng),
                        0x73,
                    ), // hlv/hsv
                    0x3020_0073,                                  // mret
                ];
                let wild: [u32; 3] = [0x0000_0073, 0x1050_0073, 0x1020_0073]; // ecall, wfi, sret
                if !filtered && rng.chance(40) {
                    wild[rng.below(3) as usize]
                } else {
                    safe[rng.below(6) as usize]
                }
            }
            _ => {
                // Any 32-bit word but control transfers and SYSTEM, with rd never sp.
                loop {
                    let mut w = rng.next() as u32 | 3;
                    let op = w & 0x7F;
                    if matches!(op, 0x63 | 0x67 | 0x6F | 0x73) {
                        if filtered || rng.chance(80) {
                            continue;
                        }
                        // Wild: a branch or jump may go anywhere (and come back, or not).
                        return w;
                    }
                    if (w >> 7) & 0x1F == 2 {
                        w = (w & !(0x1F << 7)) | (5 << 7);
                    }
                    return w;
                }
            }
        }
    }

    fn blob(rng: &mut Rng, filtered: bool) -> Vec<String> {
        let n = 1 + rng.below(6);
        // `gf_run` jumps to the blob through t6 (x31): overwrite it first, or a store through it would
        // write the payload's own text (W^X stops the VM).
        let t6 = i_type(rng.next() as u32, 0, 0, 31, 0x13);
        let mut lines = vec![format!(".word {t6:#010x}")];
        lines.extend((0..n).map(|_| format!(".word {:#010x}", insn(rng, filtered))));
        lines.push("j gf_done".into());
        lines
    }

    /// One read stub and one write stub per CSR number (the number is an immediate of the instruction):
    /// `gf_csr_read_table[n]` runs `csrr a0, n`, `gf_csr_write_table[n]` runs `csrw n, a1`.
    fn csr_stubs() -> String {
        let mut s = String::from(".section .text.fuzzblobs, \"ax\"\n");
        for n in 0..4096u32 {
            let _ = writeln!(
                s,
                ".Lgfcr{n}:\n.word {:#010x}\nj gf_done",
                i_type(n, 0, 2, 10, 0x73)
            );
            let _ = writeln!(
                s,
                ".Lgfcw{n}:\n.word {:#010x}\nj gf_done",
                i_type(n, 11, 1, 0, 0x73)
            );
        }
        s.push_str(".section .rodata.fuzzblobs, \"a\"\n.balign 8\n.global gf_csr_read_table\ngf_csr_read_table:\n");
        for n in 0..4096 {
            let _ = writeln!(s, ".quad .Lgfcr{n}");
        }
        s.push_str(".global gf_csr_write_table\ngf_csr_write_table:\n");
        for n in 0..4096 {
            let _ = writeln!(s, ".quad .Lgfcw{n}");
        }
        s
    }

    pub fn generate(rng: &mut Rng) -> String {
        let mut blobs: Vec<Vec<String>> = (0..super::SAFE_BLOBS).map(|_| blob(rng, true)).collect();
        blobs.extend((0..super::WILD_BLOBS).map(|_| blob(rng, false)));
        super::emit(&blobs, super::SAFE_BLOBS, &csr_stubs())
    }
}
