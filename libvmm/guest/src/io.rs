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
