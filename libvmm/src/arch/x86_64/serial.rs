//! COM1 (16550 UART at 0x3F8) as an `embedded_io::Write` console.
//!
//! Hand-written: the usual crate (`uart_16550`) speaks `core::fmt::Write` and pulls in the `x86_64`
//! crate beside the `x86` crate we already use; a polled 16550 is a dozen lines. Every wait is bounded,
//! so a machine without a UART (reads of 0xFF) cannot hang the VMM.

use super::cpu::{inb, outb};

const COM1: u16 = 0x3F8;
const LSR: u16 = COM1 + 5;
const LSR_THRE: u8 = 1 << 5;
const LSR_TEMT: u8 = 1 << 6;
const SPIN_LIMIT: u32 = 100_000;

pub struct Serial;

impl Serial {
    /// 115200 8N1, FIFO on, interrupts off.
    pub fn init() -> Self {
        outb(COM1 + 1, 0x00);
        outb(COM1 + 3, 0x80);
        outb(COM1, 0x01);
        outb(COM1 + 1, 0x00);
        outb(COM1 + 3, 0x03);
        outb(COM1 + 2, 0xC7);
        outb(COM1 + 4, 0x03);
        Serial
    }

    fn put(&mut self, b: u8) {
        let mut spins = 0;
        while inb(LSR) & LSR_THRE == 0 && spins < SPIN_LIMIT {
            spins += 1;
        }
        outb(COM1, b);
    }

    /// Waits until the transmitter is empty (Bochs loses the last bytes otherwise).
    pub fn drain(&mut self) {
        let mut spins = 0;
        while inb(LSR) & LSR_TEMT == 0 && spins < SPIN_LIMIT {
            spins += 1;
        }
    }
}

impl embedded_io::ErrorType for Serial {
    type Error = core::convert::Infallible;
}

impl embedded_io::Write for Serial {
    fn write(&mut self, buf: &[u8]) -> Result<usize, Self::Error> {
        for &b in buf {
            self.put(b);
        }
        crate::console::note_written(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> Result<(), Self::Error> {
        self.drain();
        Ok(())
    }
}
