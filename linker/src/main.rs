#![no_std]
#![no_main]
// TEMPORARY riscv bring-up image (replaced by the lead's image crate).
const fn lui(rd: u32, imm: u32) -> u32 { (imm << 12) | (rd << 7) | 0x37 }
const fn addi(rd: u32, rs: u32, imm: i32) -> u32 { (((imm as u32) & 0xfff) << 20) | (rs << 15) | (rd << 7) | 0x13 }
const fn auipc(rd: u32, imm: u32) -> u32 { (imm << 12) | (rd << 7) | 0x17 }
const ECALL: u32 = 0x73;
const MSG: &[u8; 20] = b"hello from VS-mode\n\0";
const CODE: [u32; 11] = [lui(17, 0x0A005), addi(17, 17, -0x3AA), addi(16, 0, 1), addi(10, 0, 1), auipc(11, 0), addi(11, 11, 28), addi(12, 0, 19), ECALL, addi(16, 0, 2), addi(10, 0, 0), ECALL];
const fn guest() -> [u8; 64] {
    let mut b = [0u8; 64];
    let mut i = 0;
    while i < 11 { let w = CODE[i].to_le_bytes(); b[i*4] = w[0]; b[i*4+1] = w[1]; b[i*4+2] = w[2]; b[i*4+3] = w[3]; i += 1; }
    let mut j = 0;
    while j < 20 { b[44 + j] = MSG[j]; j += 1; }
    b
}
static GUEST: [u8; 64] = guest();
libvmm::image!(libvmm::Payload { name: "rvtest", load_gpa: libvmm::abi::layout::riscv64::PAYLOAD_BASE, entry_gpa: libvmm::abi::layout::riscv64::PAYLOAD_BASE, mem_size: 64, bytes: &GUEST });
