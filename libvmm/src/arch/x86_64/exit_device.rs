//! Ending the machine with a stop code: QEMU's `isa-debug-exit` at port 0xF4 (status = code << 1 | 1),
//! then Bochs' shutdown port (0x8900, "Shutdown"), then halt. Bochs and real machines learn the code
//! from the stop line printed before.

use super::cpu::{halt_forever, outb, outl};

pub const DEBUG_EXIT_PORT: u16 = 0xF4;
const BOCHS_SHUTDOWN_PORT: u16 = 0x8900;

pub fn exit(code: u8) -> ! {
    outl(DEBUG_EXIT_PORT, code as u32);
    for &b in b"Shutdown" {
        outb(BOCHS_SHUTDOWN_PORT, b);
    }
    halt_forever()
}
