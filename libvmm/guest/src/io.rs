//! `print!`/`println!` for payloads: hermit-abi's `write` on fd 1 (this crate's own `sys_write`).
#![forbid(unsafe_code)]

use core::fmt;

pub struct Stdout;

impl fmt::Write for Stdout {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let n = crate::hermit::write(1, s.as_ptr(), s.len());
        if n == s.len() as isize {
            Ok(())
        } else {
            Err(fmt::Error)
        }
    }
}

#[macro_export]
macro_rules! print {
    ($($arg:tt)*) => {{
        let _ = core::fmt::Write::write_fmt(&mut $crate::io::Stdout, format_args!($($arg)*));
    }};
}

#[macro_export]
macro_rules! println {
    () => { $crate::print!("\n") };
    ($($arg:tt)*) => {{
        $crate::print!($($arg)*);
        $crate::print!("\n");
    }};
}

/// A line formatted into a bounded buffer and written with one `write` (one hypercall): with several
/// CPUs printing, each such line reaches the console whole (the VMM writes one guest write under its
/// console lock). Longer lines are cut at [`LINE_MAX`] bytes.
pub fn write_line(args: fmt::Arguments<'_>) {
    let mut b = LineBuf {
        buf: [0; LINE_MAX],
        len: 0,
    };
    let _ = fmt::Write::write_fmt(&mut b, args);
    if b.len == LINE_MAX {
        b.buf[LINE_MAX - 1] = b'\n';
    } else {
        b.buf[b.len] = b'\n';
        b.len += 1;
    }
    crate::hermit::write(1, b.buf.as_ptr(), b.len);
}

/// The longest line [`write_line`] writes whole (bytes, newline included).
pub const LINE_MAX: usize = 256;

struct LineBuf {
    buf: [u8; LINE_MAX],
    len: usize,
}

impl fmt::Write for LineBuf {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let n = s.len().min(LINE_MAX - 1 - self.len.min(LINE_MAX - 1));
        self.buf[self.len..self.len + n].copy_from_slice(&s.as_bytes()[..n]);
        self.len += n;
        Ok(())
    }
}

/// `println!` for several CPUs: the line goes out in one write, whole ([`write_line`]).
#[macro_export]
macro_rules! println_whole {
    ($($arg:tt)*) => {{
        $crate::io::write_line(format_args!($($arg)*));
    }};
}
