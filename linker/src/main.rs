#![no_std]
#![no_main]
// TEMPORARY riscv bring-up image (replaced by the lead's image crate).
const fn lui(rd: u32, imm: u32) -> u32 { (imm << 12) | (rd << 7) | 0x37 }
const fn addi(rd: u32, rs: u32, imm: i32) -> u32 { (((imm as u32) & 0xfff) << 20) | (rs << 15) | (rd << 7) | 0x13 }
const fn auipc(rd: u32, imm: u32) -> u32 { (imm << 12) | (rd << 7) | 0x17 }
const ECALL: u32 = 0x73;
const fn csrr_cycle(rd: u32) -> u32 { (0xC00 << 20) | (2 << 12) | (rd << 7) | 0x73 }
const fn sub(rd: u32, a: u32, b: u32) -> u32 { (0x20 << 25) | (b << 20) | (a << 15) | (rd << 7) | 0x33 }
const fn divu(rd: u32, a: u32, b: u32) -> u32 { (1 << 25) | (b << 20) | (a << 15) | (5 << 12) | (rd << 7) | 0x33 }
const fn bne_back8(rs: u32) -> u32 { let imm: u32 = (-8i32) as u32; (((imm >> 12) & 1) << 31) | (((imm >> 5) & 0x3f) << 25) | (rs << 15) | (1 << 12) | (((imm >> 1) & 0xf) << 8) | (((imm >> 11) & 1) << 7) | 0x63 }
const CODE: [u32; 23] = [lui(17, 0x0A005), addi(17, 17, -0x3AA), addi(16, 0, 5), addi(19, 0, 1000), csrr_cycle(18),
  ECALL, addi(19, 19, -1), bne_back8(19), csrr_cycle(20), sub(21, 20, 18),
  addi(19, 0, 1000), csrr_cycle(18), addi(0, 0, 0), addi(19, 19, -1), bne_back8(19), csrr_cycle(20), sub(22, 20, 18),
  sub(21, 21, 22), addi(23, 0, 1000), divu(10, 21, 23), addi(10, 10, -40), addi(16, 0, 2), ECALL];
const fn guest() -> [u8; 92] {
    let mut b = [0u8; 92];
    let mut i = 0;
    while i < 23 { let w = CODE[i].to_le_bytes(); b[i*4] = w[0]; b[i*4+1] = w[1]; b[i*4+2] = w[2]; b[i*4+3] = w[3]; i += 1; }
    b
}
static GUEST: [u8; 92] = guest();
libvmm::image!(libvmm::Payload { name: "rvbench", load_gpa: libvmm::abi::layout::riscv64::PAYLOAD_BASE, entry_gpa: libvmm::abi::layout::riscv64::PAYLOAD_BASE, mem_size: 92, bytes: &GUEST });
