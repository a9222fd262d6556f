//! Console helpers over `embedded_io::Write`: the VMM prints through any byte sink, formatted with
//! `core::fmt` through a small adapter (embedded-io has no `fmt::Write` bridge of its own for `no_std`).
#![forbid(unsafe_code)]

use core::fmt;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

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
        let _line = $crate::console::LineLock::acquire();
        $crate::console::fresh_line($w);
        let _ = core::fmt::Write::write_fmt(&mut $crate::console::Fmt($w), format_args!($($arg)*));
    }};
}

/// The console lock: one CPU's VMM line at a time, so lines from several CPUs arrive whole. A spin
/// lock on an atomic (no heap, no OS). Acquiring gives up after a bounded number of spins and prints
/// anyway: a CPU that died holding the lock (a fault or panic mid-line) must not silence the others'
/// reports, the stop line above all.
static LINE_LOCK: AtomicBool = AtomicBool::new(false);

/// Spins before the console lock is taken over from a holder that never released it.
const LINE_LOCK_SPINS: u32 = 1 << 24;

/// Held for one `vmm_print!`; released on drop.
pub struct LineLock(bool);

impl LineLock {
    pub fn acquire() -> Self {
        for _ in 0..LINE_LOCK_SPINS {
            if LINE_LOCK
                .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
                .is_ok()
            {
                return LineLock(true);
            }
            core::hint::spin_loop();
        }
        LineLock(false)
    }
}

impl Drop for LineLock {
    fn drop(&mut self) {
        if self.0 {
            LINE_LOCK.store(false, Ordering::Release);
        }
    }
}

/// Whether the console's last byte was not a newline (a guest left a line open). Set by the console
/// devices on every write; read when the VMM starts a line of its own. One console per machine.
static LINE_OPEN: AtomicBool = AtomicBool::new(false);

/// The boot token (see `libvmm_abi::stop::TOKEN_LINE_PREFIX`): set once before the payload runs,
/// printed in the token line and at the end of the stop line, never written into guest memory.
static TOKEN: AtomicU64 = AtomicU64::new(0);

/// Records what a console device just wrote (called by the devices).
#[cfg(target_os = "none")]
pub fn note_written(buf: &[u8]) {
    if let Some(&last) = buf.last() {
        LINE_OPEN.store(last != b'\n', Ordering::Relaxed);
    }
}

/// Ends a line the guest left open, so that a VMM line always starts at the beginning of a line.
pub fn fresh_line<W: embedded_io::Write>(w: &mut W) {
    if LINE_OPEN.swap(false, Ordering::Relaxed) {
        let _ = w.write_all(b"\n");
    }
}

/// Mixes raw entropy into a token (splitmix64 finaliser: a weak source still yields every bit).
pub fn make_token(raw: u64) -> u64 {
    let mut z = raw.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Sets the boot token and prints the token line. Called once, before the payload's first instruction.
pub fn announce_token<W: embedded_io::Write>(w: &mut W, token: u64) {
    TOKEN.store(token, Ordering::Relaxed);
    crate::vmm_print!(
        w,
        "{} {}\n",
        libvmm_abi::stop::TOKEN_LINE_PREFIX,
        libvmm_abi::stop::Token(token)
    );
}

/// Prints the stop line: `libvmm: stop <code> <reason> [<token>]`, on a fresh line.
pub fn stop_line<W: embedded_io::Write>(w: &mut W, code: u8, reason: fmt::Arguments<'_>) {
    crate::vmm_print!(
        w,
        "{} {} {} [{}]\n",
        libvmm_abi::stop::STOP_LINE_PREFIX,
        code,
        reason,
        libvmm_abi::stop::Token(TOKEN.load(Ordering::Relaxed))
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stop_lines_parse_back_with_their_token_only() {
        let mut out = crate::testing::RecordingConsole::default();
        announce_token(&mut out, make_token(7));
        stop_line(&mut out, 3, format_args!("payload exited with status 3"));
        let text = std::string::String::from_utf8(out.0).unwrap();
        let mut lines = text.lines();
        let token = libvmm_abi::stop::parse_token_line(lines.next().unwrap()).unwrap();
        assert_eq!(token, make_token(7));
        assert_eq!(
            libvmm_abi::stop::parse_stop_line(lines.next().unwrap(), token),
            Some(3)
        );
        assert_ne!(make_token(1), make_token(2));
    }
}
