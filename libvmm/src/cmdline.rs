//! The VMM's own options on the image's command line: words `libvmm.KEY=VALUE` (the payload receives
//! the whole line and ignores them). Parsed here, once, into typed values.
#![forbid(unsafe_code)]

/// The value of `libvmm.<key>=` in `cmdline`.
pub fn value<'a>(cmdline: &'a [u8], key: &str) -> Option<&'a [u8]> {
    cmdline.split(|b| b.is_ascii_whitespace()).find_map(|w| {
        let rest = w.strip_prefix(b"libvmm.")?.strip_prefix(key.as_bytes())?;
        rest.strip_prefix(b"=")
    })
}

/// A decimal `u64` option; `None` when absent or malformed.
pub fn number(cmdline: &[u8], key: &str) -> Option<u64> {
    let v = value(cmdline, key)?;
    if v.is_empty() || v.len() > 19 || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(v.iter().fold(0u64, |n, d| n * 10 + (d - b'0') as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_libvmm_options_among_payload_words() {
        let c = b"attack=spin libvmm.timeout_ms=250 libvmm.selftest=panic";
        assert_eq!(value(c, "selftest"), Some(&b"panic"[..]));
        assert_eq!(number(c, "timeout_ms"), Some(250));
        assert_eq!(value(c, "attack"), None);
        assert_eq!(value(b"libvmm.timeout_msx=1", "timeout_ms"), None);
    }

    #[test]
    fn malformed_numbers_are_none() {
        for c in [
            &b"libvmm.timeout_ms="[..],
            b"libvmm.timeout_ms=-1",
            b"libvmm.timeout_ms=1e3",
            b"libvmm.timeout_ms=99999999999999999999",
        ] {
            assert_eq!(
                number(c, "timeout_ms"),
                None,
                "{}",
                String::from_utf8_lossy(c)
            );
        }
    }
}
