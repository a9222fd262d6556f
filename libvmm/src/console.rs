//! Console helpers over `embedded_io::Write`: the VMM prints through any byte sink, formatted with
//! `core::fmt` through a small adapter (embedded-io has no `fmt::Write` bridge of its own for `no_std`).
#![forbid(unsafe_code)]

use core::fmt;

/// Adapts an `embedded_io::Write` to `core::fmt::Write`.
pub struct Fmt<'a, W: embedded_io::Write>(pub &'a mut W);

impl<W: embedded_io::Write> fmt::Write for Fmt<'_, W> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.0.write_all(s.as_bytes()).map_err(|_| fmt::Error)
    }
}

/// `vmm_print!(console, "...", args)`: formats onto any `embedded_io::Write`.
#[macro_export]
#[doc(hidden)]
macro_rules! vmm_print {
    ($w:expr, $($arg:tt)*) => {{
        let _ = core::fmt::Write::write_fmt(&mut $crate::console::Fmt($w), format_args!($($arg)*));
    }};
}
