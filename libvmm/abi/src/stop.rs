//! Stop codes: how an image reports why its VM stopped.
//!
//! A code is 0..=127. On x86 under QEMU the VMM writes it to `isa-debug-exit` (port 0xf4), and QEMU exits
//! with `(code << 1) | 1`; xtask maps that back. On RISC-V the `sifive_test` device exits with the code
//! itself (0 as PASS). Under Bochs, which cannot exit with a chosen status, xtask reads the final console
//! line [`STOP_LINE_PREFIX`]` <code> ...`. Every stop prints that line on every backend.

/// The last console line of every run: `libvmm: stop <code> <reason> [<token>]`.
pub const STOP_LINE_PREFIX: &str = "libvmm: stop";

/// The VMM's boot-token line, `libvmm: token <16 hex digits>`, printed once before the payload's first
/// instruction. The token comes from the CPU's entropy source (RDRAND, else the time-stamp counter; the
/// `time` counter on RISC-V) and is never shown to the guest. Every console line the host tools act on
/// (the stop line) ends with ` [<token>]`; the host tools trust only the first token line of a run (the
/// guest cannot print before it) and only stop lines that carry that token, so a payload that prints a
/// stop line of its own cannot forge the result.
pub const TOKEN_LINE_PREFIX: &str = "libvmm: token";

/// The token as the VMM prints it (16 lowercase hex digits).
pub struct Token(pub u64);

impl core::fmt::Display for Token {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// The token of a `libvmm: token <hex>` line.
pub fn parse_token_line(line: &str) -> Option<u64> {
    let hex = line
        .trim_end()
        .strip_prefix(TOKEN_LINE_PREFIX)?
        .strip_prefix(' ')?;
    if hex.len() != 16 {
        return None;
    }
    u64::from_str_radix(hex, 16).ok()
}

/// The stop code of a stop line that carries `token`; `None` for any other line (a forged stop line
/// without the token, or a line that only contains a stop line after guest text).
pub fn parse_stop_line(line: &str, token: u64) -> Option<u8> {
    let rest = line
        .trim_end()
        .strip_prefix(STOP_LINE_PREFIX)?
        .strip_prefix(' ')?;
    let mut suffix = [0u8; 19];
    let mut w = Cursor(&mut suffix, 0);
    core::fmt::write(&mut w, format_args!(" [{}]", Token(token))).ok()?;
    let rest = rest.strip_suffix(core::str::from_utf8(&suffix).ok()?)?;
    let code = rest.split(' ').next()?;
    if code.is_empty() || code.len() > 3 || !code.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    code.parse::<u8>().ok().filter(|c| *c <= 127)
}

struct Cursor<'a>(&'a mut [u8], usize);
impl core::fmt::Write for Cursor<'_> {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        let end = self.1 + s.len();
        self.0
            .get_mut(self.1..end)
            .ok_or(core::fmt::Error)?
            .copy_from_slice(s.as_bytes());
        self.1 = end;
        Ok(())
    }
}

/// The status `cargo xtask run` exits with when the emulator had to be killed at its time limit: never
/// a stop code (those are 0..=127), so a timed-out run is never mistaken for a result.
pub const HOST_TIMED_OUT: u8 = 124 + 128;

/// Payload exit statuses 0..=PAYLOAD_MAX map to themselves; larger ones (and negative) clamp to it.
pub const PAYLOAD_MAX: u8 = 95;

/// Stop codes the VMM chooses (above the payload range).
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopCode {
    /// The guest touched guest-physical memory that is not its own (nested/G-stage/EPT fault).
    GuestMemoryViolation = 96,
    /// The guest triple-faulted (x86 SHUTDOWN) or otherwise shut itself down uncleanly.
    TripleFault = 97,
    /// The payload called abort (or its runtime panicked).
    PayloadAbort = 98,
    /// The guest did something the VMM refuses to continue from (halt with nothing to wake it, an exit
    /// libvmm does not handle).
    GuestError = 99,
    /// The hardware or firmware refused the VMM's request (VMRUN/VMLAUNCH failure, SEAMCALL error).
    BackendError = 100,
    /// The CPU lacks a feature the backend needs.
    Unsupported = 101,
    /// Boot-time platform problem (memory map, device tree, payload does not fit).
    PlatformError = 102,
    /// A VM-entry consistency check in software failed.
    ConsistencyCheck = 103,
    /// The VMM itself panicked: a libvmm bug.
    VmmPanic = 126,
}

/// Stop code of a payload exit status.
pub const fn payload(status: i64) -> u8 {
    if status < 0 || status > PAYLOAD_MAX as i64 {
        PAYLOAD_MAX
    } else {
        status as u8
    }
}

/// Decodes a QEMU x86 process status written through isa-debug-exit: `Some(code)` for an odd status.
pub const fn from_qemu_debug_exit(status: i32) -> Option<u8> {
    if status & 1 == 1 && status > 0 && status < 256 {
        Some(((status - 1) >> 1) as u8)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_statuses_clamp() {
        assert_eq!(payload(0), 0);
        assert_eq!(payload(95), 95);
        assert_eq!(payload(96), 95);
        assert_eq!(payload(-1), 95);
    }

    #[test]
    fn only_stop_lines_with_the_token_count() {
        assert_eq!(
            parse_token_line("libvmm: token 00000000deadbeef"),
            Some(0xdead_beef)
        );
        assert_eq!(parse_token_line("libvmm: token deadbeef"), None);
        assert_eq!(parse_token_line("xlibvmm: token 00000000deadbeef"), None);
        let t = 0x0123_4567_89ab_cdef;
        assert_eq!(
            parse_stop_line(
                "libvmm: stop 3 payload exited with status 3 [0123456789abcdef]",
                t
            ),
            Some(3)
        );
        assert_eq!(
            parse_stop_line("libvmm: stop 0 payload exited with status 0", t),
            None,
            "a stop line without the token is forged"
        );
        assert_eq!(
            parse_stop_line("libvmm: stop 0 ok [0123456789abcdee]", t),
            None,
            "a guessed token that differs is forged"
        );
        assert_eq!(
            parse_stop_line("guest text libvmm: stop 0 x [0123456789abcdef]", t),
            None
        );
        assert_eq!(
            parse_stop_line("libvmm: stop 300 x [0123456789abcdef]", t),
            None
        );
    }

    #[test]
    fn qemu_status_decodes_every_code() {
        for code in 0u8..=127 {
            let status = ((code as i32) << 1) | 1;
            assert_eq!(from_qemu_debug_exit(status), Some(code));
        }
        assert_eq!(from_qemu_debug_exit(0), None);
        assert_eq!(from_qemu_debug_exit(2), None);
    }
}
