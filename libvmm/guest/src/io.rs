//! `print!`/`println!` for payloads, through hermit-abi's `write` on fd 1.
use core::fmt;

pub struct Stdout;

impl fmt::Write for Stdout {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        // SAFETY: `s` is a valid buffer of `s.len()` bytes.
        let n = unsafe { hermit_abi::write(1, s.as_ptr(), s.len()) };
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
