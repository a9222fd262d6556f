//! The VMM's own options on the image's command line: words `libvmm.KEY=VALUE` (the payload receives the
//! whole line and ignores them). Parsed here, once, into one typed [`Options`] that boot hands to the
//! backends by reference; nothing else reads the command line for the VMM.
//!
//! An option the VMM does not know, or a value it cannot parse, is refused at boot with the option's
//! name: never silently ignored (a user who asked for a time limit must not get a run without one).
#![forbid(unsafe_code)]

/// `libvmm.selftest=`: make the VMM fail on purpose (tests of its panic, exception and AP-failure
/// paths, which no emulator here reaches on its own).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Selftest {
    Panic,
    Fault,
    /// `ap-fail` or `ap-fail=N` (N >= 1, below `MAX_CPUS`): CPU N (default: the last one the VMM
    /// starts) fails its own bring-up with the reason `selftest`, so the real report and
    /// `libvmm.ap_failure` run.
    ApFail(Option<usize>),
}

/// `libvmm.ap_failure=`: what a CPU that fails bring-up does to the boot.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ApFailure {
    /// Report the CPU by number and run on the rest (the default).
    #[default]
    Continue,
    /// Stop the boot with the reason.
    Stop,
}

/// Every VMM option, typed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Options<'a> {
    /// `libvmm.timeout_ms=N`: stop the guest after N ms.
    pub timeout_ms: Option<u64>,
    /// `libvmm.selftest=panic|fault|ap-fail[=N]`.
    pub selftest: Option<Selftest>,
    /// `libvmm.stats=1`: print the exits by reason and their total before the stop line.
    pub stats: bool,
    /// RISC-V `libvmm.isa=-ext,+ext,...`: per-guest ISA extension changes.
    pub isa: Option<&'a str>,
    /// VMX debug: `libvmm.vmx.bad=NAME` builds a deliberately invalid configuration.
    pub vmx_bad: Option<&'a str>,
    /// VMX debug: `libvmm.vmx.skip-checks`: bypass the software VM-entry checks.
    pub vmx_skip_checks: bool,
    /// VMX debug: `libvmm.vmx.report-missed`: report entries the CPU refused that the checks passed.
    pub vmx_report_missed: bool,
    /// `libvmm.ap_failure=continue|stop`: a CPU that fails bring-up is left out, or stops the boot.
    pub ap_failure: ApFailure,
    /// x86 `libvmm.force_emulation=1`: intercept #UD and emulate the instruction after libvmm's
    /// forced-emulation prefix (`libvmm_abi::FORCED_EMULATION_PREFIX`). Off by default, like KVM's
    /// `force_emulation_prefix` module parameter: without it the #UD is not intercepted at all, so the
    /// default exit path is unchanged and the prefix is just the guest's #UD.
    pub force_emulation: bool,
    /// `libvmm.mem=SIZE` (bytes, with an optional `K`, `M` or `G` suffix): the guest's memory, instead
    /// of all the RAM the machine has for it. Rounded down to 2 MiB at boot; more than there is stops
    /// the boot naming both sizes.
    pub mem: Option<u64>,
    /// `libvmm.cpus=N` (N >= 1): the guest gets at most N vCPUs (default: one per CPU the VMM brought
    /// up).
    pub cpus: Option<u64>,
}

/// Why the command line was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OptionError {
    Unknown,
    BadValue,
}

/// The first refused `libvmm.` word and why.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Refused<'a> {
    pub word: &'a str,
    pub why: OptionError,
}

impl core::fmt::Display for Refused<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self.why {
            OptionError::Unknown => write!(f, "unknown VMM option `{}`", self.word),
            OptionError::BadValue => write!(f, "bad value in VMM option `{}`", self.word),
        }
    }
}

fn decimal(v: &str) -> Option<u64> {
    if v.is_empty() || v.len() > 19 || !v.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    v.parse().ok()
}

/// `N`, `NK`, `NM` or `NG` (binary multiples), refused on overflow.
fn size(v: &str) -> Option<u64> {
    let (digits, shift) = match v.as_bytes().last()? {
        b'K' | b'k' => (&v[..v.len() - 1], 10),
        b'M' | b'm' => (&v[..v.len() - 1], 20),
        b'G' | b'g' => (&v[..v.len() - 1], 30),
        _ => (v, 0),
    };
    let n = decimal(digits)?;
    (n.leading_zeros() >= shift).then_some(n << shift)
}

fn flag(v: Option<&str>) -> Option<bool> {
    match v {
        None | Some("1") | Some("on") => Some(true),
        Some("0") | Some("off") => Some(false),
        _ => None,
    }
}

impl<'a> Options<'a> {
    /// Parses every `libvmm.` word of `cmdline`; other words are the payload's.
    pub fn parse(cmdline: &'a [u8]) -> Result<Self, Refused<'a>> {
        let mut o = Options {
            vmx_report_missed: cfg!(debug_assertions),
            ..Options::default()
        };
        for word in cmdline.split(|b| b.is_ascii_whitespace()) {
            let Some(opt) = word.strip_prefix(b"libvmm.") else {
                continue;
            };
            let Ok(word) = core::str::from_utf8(word) else {
                return Err(Refused {
                    word: "libvmm.(not UTF-8)",
                    why: OptionError::BadValue,
                });
            };
            let opt = &word[word.len() - opt.len()..];
            let (key, value) = match opt.split_once('=') {
                Some((k, v)) => (k, Some(v)),
                None => (opt, None),
            };
            let bad = Refused {
                word,
                why: OptionError::BadValue,
            };
            match key {
                "timeout_ms" => o.timeout_ms = Some(value.and_then(decimal).ok_or(bad)?),
                "selftest" => {
                    o.selftest = Some(match value {
                        Some("panic") => Selftest::Panic,
                        Some("fault") => Selftest::Fault,
                        Some("ap-fail") => Selftest::ApFail(None),
                        Some(v) => match v.strip_prefix("ap-fail=").and_then(decimal) {
                            Some(n) if (1..crate::config::MAX_CPUS as u64).contains(&n) => {
                                Selftest::ApFail(Some(n as usize))
                            }
                            _ => return Err(bad),
                        },
                        None => return Err(bad),
                    })
                }
                "stats" => o.stats = flag(value).ok_or(bad)?,
                "isa" => o.isa = Some(value.ok_or(bad)?),
                "vmx.bad" => o.vmx_bad = Some(value.ok_or(bad)?),
                "vmx.skip-checks" => o.vmx_skip_checks = flag(value).ok_or(bad)?,
                "ap_failure" => {
                    o.ap_failure = match value {
                        Some("continue") => ApFailure::Continue,
                        Some("stop") => ApFailure::Stop,
                        _ => return Err(bad),
                    }
                }
                "vmx.report-missed" => o.vmx_report_missed = flag(value).ok_or(bad)?,
                "force_emulation" => o.force_emulation = flag(value).ok_or(bad)?,
                "mem" => o.mem = Some(value.and_then(size).filter(|&n| n > 0).ok_or(bad)?),
                "cpus" => o.cpus = Some(value.and_then(decimal).filter(|&n| n >= 1).ok_or(bad)?),
                _ => {
                    return Err(Refused {
                        word,
                        why: OptionError::Unknown,
                    })
                }
            }
        }
        Ok(o)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_option_stops_the_boot_naming_it() {
        let refused = Options::parse(b"libvmm.nonsense=1").unwrap_err();
        let stop = crate::vm::StopReason::Option(refused);
        assert_eq!(stop.code(), libvmm_abi::stop::StopCode::Unsupported as u8);
        assert_eq!(
            std::format!("{stop}"),
            "unsupported: unknown VMM option `libvmm.nonsense=1`"
        );
    }

    #[test]
    fn finds_libvmm_options_among_payload_words() {
        let o = Options::parse(b"attack=spin libvmm.timeout_ms=250 libvmm.selftest=panic").unwrap();
        assert_eq!(o.timeout_ms, Some(250));
        assert_eq!(o.selftest, Some(Selftest::Panic));
        let o =
            Options::parse(b"libvmm.vmx.bad=tpr-vtpr libvmm.vmx.skip-checks libvmm.isa=-zicboz")
                .unwrap();
        assert_eq!(o.vmx_bad, Some("tpr-vtpr"));
        assert!(o.vmx_skip_checks);
        assert_eq!(o.isa, Some("-zicboz"));
        assert_eq!(Options::parse(b"").unwrap().timeout_ms, None);
        assert!(Options::parse(b"libvmm.stats=1").unwrap().stats);
        assert!(!Options::parse(b"libvmm.stats=0").unwrap().stats);
        assert!(!Options::parse(b"").unwrap().stats);
        assert_eq!(Options::parse(b"").unwrap().ap_failure, ApFailure::Continue);
        assert_eq!(
            Options::parse(b"libvmm.ap_failure=stop")
                .unwrap()
                .ap_failure,
            ApFailure::Stop
        );
        let selftest = |w: &[u8]| Options::parse(w).unwrap().selftest;
        assert_eq!(selftest(b"libvmm.selftest=fault"), Some(Selftest::Fault));
        assert_eq!(
            selftest(b"libvmm.selftest=ap-fail"),
            Some(Selftest::ApFail(None))
        );
        assert_eq!(
            selftest(b"libvmm.selftest=ap-fail=3 libvmm.ap_failure=stop"),
            Some(Selftest::ApFail(Some(3)))
        );
        assert!(
            Options::parse(b"libvmm.force_emulation=1")
                .unwrap()
                .force_emulation
        );
        assert!(!Options::parse(b"").unwrap().force_emulation);
        let mem = |w: &[u8]| Options::parse(w).unwrap().mem;
        assert_eq!(mem(b"libvmm.mem=256M"), Some(256 << 20));
        assert_eq!(mem(b"libvmm.mem=8m"), Some(8 << 20));
        assert_eq!(mem(b"libvmm.mem=2G"), Some(2 << 30));
        assert_eq!(mem(b"libvmm.mem=4096K"), Some(4 << 20));
        assert_eq!(mem(b"libvmm.mem=12582912"), Some(12 << 20));
        assert_eq!(mem(b""), None);
    }

    #[test]
    fn ap_fail_names_an_ap_the_vmm_can_have() {
        let last = std::format!("libvmm.selftest=ap-fail={}", crate::config::MAX_CPUS - 1);
        assert_eq!(
            Options::parse(last.as_bytes()).unwrap().selftest,
            Some(Selftest::ApFail(Some(crate::config::MAX_CPUS - 1)))
        );
        let beyond = std::format!("libvmm.selftest=ap-fail={}", crate::config::MAX_CPUS);
        let e = Options::parse(beyond.as_bytes()).unwrap_err();
        assert_eq!(e.why, OptionError::BadValue);
    }

    #[test]
    fn unknown_options_and_bad_values_are_refused_by_name() {
        let e = Options::parse(b"x libvmm.timeout_msx=1").unwrap_err();
        assert_eq!(
            (e.word, e.why),
            ("libvmm.timeout_msx=1", OptionError::Unknown)
        );
        for c in [
            &b"libvmm.timeout_ms="[..],
            b"libvmm.timeout_ms",
            b"libvmm.timeout_ms=-1",
            b"libvmm.timeout_ms=1e3",
            b"libvmm.timeout_ms=99999999999999999999",
            b"libvmm.selftest=maybe",
            b"libvmm.selftest",
            b"libvmm.selftest=ap-fail=",
            b"libvmm.selftest=ap-fail=0",
            b"libvmm.selftest=ap-fail=x",
            b"libvmm.selftest=ap-fail-1",
            b"libvmm.vmx.skip-checks=yes",
            b"libvmm.stats=2",
            b"libvmm.ap_failure=maybe",
            b"libvmm.ap_failure",
            b"libvmm.force_emulation=yes",
            b"libvmm.mem",
            b"libvmm.mem=",
            b"libvmm.mem=M",
            b"libvmm.mem=0",
            b"libvmm.mem=12T",
            b"libvmm.mem=-8M",
            b"libvmm.mem=17179869184G",
        ] {
            let e = Options::parse(c).unwrap_err();
            assert_eq!(
                e.why,
                OptionError::BadValue,
                "{}",
                String::from_utf8_lossy(c)
            );
        }
    }
}
