//! RISC-V ISA extensions as a typed set, parsed from the device tree.
//!
//! Two device-tree forms exist (Linux `Documentation/devicetree/bindings/riscv/extensions.yaml`):
//! - `riscv,isa-extensions`: a string list, one lower-case extension name per entry. Linux prefers it, and
//!   so do we: [`parse_isa_extensions`].
//! - `riscv,isa` (deprecated): one string `rv64imafdch_zicsr_...` following the unprivileged spec's naming
//!   rules: `rv32`/`rv64`, single letters (which may carry a `<major>p<minor>` version), then multi-letter
//!   names separated by `_`, each possibly versioned; `g` means `imafd_zicsr_zifencei`; for legacy reasons
//!   `i` implies `zicntr_zicsr_zifencei_zihpm`. Names are case-insensitive: [`parse_isa_string`].
//!
//! [`Ext`] lists the extensions libvmm knows, in canonical order, with KVM's rule for each on whether it can
//! be hidden from a guest at all (`kvm_riscv_isa_disable_allowed`: A, C, I, M, Zalasr, Zba ... have no
//! architectural switch). Names libvmm does not know are counted, not errors: new hardware must still boot.
#![forbid(unsafe_code)]

/// Whether an extension can be enabled for / hidden from a guest (KVM's `enable_allowed` /
/// `disable_allowed`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Control {
    /// Can be given to a guest and taken away (an architectural enable bit or trap exists).
    Hideable,
    /// Given to every guest when the host has it: nothing architectural can hide it (KVM's "cannot be
    /// disabled" list: A, C, I, M, Sstc, Zalasr, Zba, ...).
    AlwaysOn,
    /// Hideable only when the host has a helper extension (KVM: Ssaia needs Smstateen, Svade needs Svadu).
    HideableIf(Ext),
    /// Never given to a guest (H: no nested virtualization; M-mode and hypervisor-level extensions).
    Never,
}

macro_rules! extensions {
    ($($v:ident $name:literal $ctl:expr;)*) => {
        /// An ISA extension libvmm knows, in canonical order (single letters first, then multi-letter names
        /// by class and alphabetically), which is also the order of a generated `riscv,isa-extensions`.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
        #[repr(u8)]
        pub enum Ext { $($v),* }

        impl Ext {
            /// Every known extension, in canonical order.
            pub const ALL: &'static [Ext] = &[$(Ext::$v),*];

            /// The lower-case device-tree name.
            pub const fn name(self) -> &'static str {
                match self { $(Ext::$v => $name),* }
            }

            /// Can this extension be given to / hidden from a guest?
            pub const fn control(self) -> Control {
                use Control::*;
                match self { $(Ext::$v => $ctl),* }
            }
        }
    };
}

extensions! {
    I "i" AlwaysOn;
    M "m" AlwaysOn;
    A "a" AlwaysOn;
    F "f" Hideable;
    D "d" Hideable;
    Q "q" Hideable;
    C "c" AlwaysOn;
    B "b" AlwaysOn;
    V "v" Hideable;
    H "h" Never;
    Zic64b "zic64b" AlwaysOn;
    Zicbom "zicbom" Hideable;
    Zicbop "zicbop" AlwaysOn;
    Zicboz "zicboz" Hideable;
    Ziccamoa "ziccamoa" AlwaysOn;
    Ziccif "ziccif" AlwaysOn;
    Zicclsm "zicclsm" AlwaysOn;
    Ziccrse "ziccrse" AlwaysOn;
    Zicntr "zicntr" AlwaysOn;
    Zicond "zicond" AlwaysOn;
    Zicsr "zicsr" AlwaysOn;
    Zifencei "zifencei" AlwaysOn;
    Zihintntl "zihintntl" AlwaysOn;
    Zihintpause "zihintpause" AlwaysOn;
    Zihpm "zihpm" AlwaysOn;
    Zimop "zimop" AlwaysOn;
    Zmmul "zmmul" AlwaysOn;
    Za64rs "za64rs" AlwaysOn;
    Zaamo "zaamo" AlwaysOn;
    Zabha "zabha" AlwaysOn;
    Zacas "zacas" AlwaysOn;
    Zalasr "zalasr" AlwaysOn;
    Zalrsc "zalrsc" AlwaysOn;
    Zawrs "zawrs" AlwaysOn;
    Zfa "zfa" AlwaysOn;
    Zfbfmin "zfbfmin" AlwaysOn;
    Zfh "zfh" AlwaysOn;
    Zfhmin "zfhmin" AlwaysOn;
    Zca "zca" AlwaysOn;
    Zcb "zcb" AlwaysOn;
    Zcd "zcd" AlwaysOn;
    Zcf "zcf" AlwaysOn;
    Zcmop "zcmop" AlwaysOn;
    Zba "zba" AlwaysOn;
    Zbb "zbb" AlwaysOn;
    Zbc "zbc" AlwaysOn;
    Zbkb "zbkb" AlwaysOn;
    Zbkc "zbkc" AlwaysOn;
    Zbkx "zbkx" AlwaysOn;
    Zbs "zbs" AlwaysOn;
    Zknd "zknd" AlwaysOn;
    Zkne "zkne" AlwaysOn;
    Zknh "zknh" AlwaysOn;
    Zkr "zkr" AlwaysOn;
    Zksed "zksed" AlwaysOn;
    Zksh "zksh" AlwaysOn;
    Zkt "zkt" AlwaysOn;
    Ztso "ztso" AlwaysOn;
    Zvbb "zvbb" AlwaysOn;
    Zvbc "zvbc" AlwaysOn;
    Zvfh "zvfh" AlwaysOn;
    Zvfhmin "zvfhmin" AlwaysOn;
    Zvkb "zvkb" AlwaysOn;
    Zvkg "zvkg" AlwaysOn;
    Zvkned "zvkned" AlwaysOn;
    Zvknha "zvknha" AlwaysOn;
    Zvknhb "zvknhb" AlwaysOn;
    Zvksed "zvksed" AlwaysOn;
    Zvksh "zvksh" AlwaysOn;
    Zvkt "zvkt" AlwaysOn;
    Shcounterenw "shcounterenw" Never;
    Shgatpa "shgatpa" Never;
    Shtvala "shtvala" Never;
    Shvsatpa "shvsatpa" Never;
    Shvstvala "shvstvala" Never;
    Shvstvecd "shvstvecd" Never;
    Smaia "smaia" Never;
    Smstateen "smstateen" Hideable;
    Ssaia "ssaia" HideableIf(Ext::Smstateen);
    Ssccptr "ssccptr" AlwaysOn;
    Sscofpmf "sscofpmf" AlwaysOn;
    Sscounterenw "sscounterenw" AlwaysOn;
    Ssnpm "ssnpm" AlwaysOn;
    Sstc "sstc" AlwaysOn;
    Sstvala "sstvala" AlwaysOn;
    Sstvecd "sstvecd" AlwaysOn;
    Ssu64xl "ssu64xl" AlwaysOn;
    Svade "svade" HideableIf(Ext::Svadu);
    Svadu "svadu" Hideable;
    Svinval "svinval" AlwaysOn;
    Svnapot "svnapot" AlwaysOn;
    Svpbmt "svpbmt" Hideable;
    Svvptc "svvptc" AlwaysOn;
}

static_assertions::const_assert!((Ext::Svvptc as usize) < 128);

impl Ext {
    /// Looks up a lower-case name (exact match).
    pub fn from_name(name: &str) -> Option<Ext> {
        Ext::ALL.iter().copied().find(|e| e.name() == name)
    }

    /// A stable small number for the extension (its position in [`Ext::ALL`]); used as the register
    /// index in [`crate::riscv::guest_isa::RegId`].
    pub const fn id(self) -> u8 {
        self as u8
    }

    pub fn from_id(id: u64) -> Option<Ext> {
        Ext::ALL.get(usize::try_from(id).ok()?).copied()
    }
}

/// A set of [`Ext`], one bit each.
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct ExtSet(u128);

impl ExtSet {
    pub const EMPTY: ExtSet = ExtSet(0);

    pub const fn contains(self, e: Ext) -> bool {
        self.0 & (1u128 << e as u8) != 0
    }
    pub fn insert(&mut self, e: Ext) {
        self.0 |= 1u128 << e as u8;
    }
    pub fn remove(&mut self, e: Ext) {
        self.0 &= !(1u128 << e as u8);
    }
    #[cfg(test)]
    pub const fn with(self, e: Ext) -> ExtSet {
        ExtSet(self.0 | (1u128 << e as u8))
    }
    pub const fn intersect(self, o: ExtSet) -> ExtSet {
        ExtSet(self.0 & o.0)
    }
    #[cfg(test)]
    pub const fn len(self) -> u32 {
        self.0.count_ones()
    }
    #[cfg(test)]
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }
    /// Members in canonical order.
    pub fn iter(self) -> impl Iterator<Item = Ext> {
        Ext::ALL.iter().copied().filter(move |e| self.contains(*e))
    }
    #[cfg(test)]
    pub fn from_slice(exts: &[Ext]) -> ExtSet {
        let mut s = ExtSet::EMPTY;
        for e in exts {
            s.insert(*e);
        }
        s
    }
}

impl core::fmt::Debug for ExtSet {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_set().entries(self.iter().map(Ext::name)).finish()
    }
}

/// Writes the names separated by spaces.
impl core::fmt::Display for ExtSet {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        for (i, e) in self.iter().enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            f.write_str(e.name())?;
        }
        Ok(())
    }
}

/// The ISA of one hart as the device tree describes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Isa {
    /// 32 or 64.
    pub xlen: u8,
    pub exts: ExtSet,
    /// Well-formed names libvmm does not know (they are ignored: never given to a guest).
    pub unknown: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IsaError {
    /// The string does not start with `rv32` or `rv64`, or the base is not `i`/`e`/`g`.
    BadBase,
    /// A character or name that the naming rules do not allow.
    BadName,
    /// An empty `riscv,isa-extensions` list or one without `i`.
    NoBase,
}

const NAME_MAX: usize = 32;

/// Parses a `riscv,isa` string (naming rules in the module doc).
pub fn parse_isa_string(s: &str) -> Result<Isa, IsaError> {
    let b = s.as_bytes();
    if b.len() < 5 || !b[..2].eq_ignore_ascii_case(b"rv") {
        return Err(IsaError::BadBase);
    }
    let xlen = match &b[2..4] {
        b"64" => 64,
        b"32" => 32,
        _ => return Err(IsaError::BadBase),
    };
    let mut isa = Isa {
        xlen,
        exts: ExtSet::EMPTY,
        unknown: 0,
    };
    let base = b[4].to_ascii_lowercase();
    if !matches!(base, b'i' | b'e' | b'g') {
        return Err(IsaError::BadBase);
    }
    let mut tokens = s[4..].split('_');
    let first = tokens.next().unwrap_or("");
    // First token: single letters (each optionally versioned), possibly followed directly by one
    // multi-letter name (the binding's regex allows `rv64imac` + `zicsr` without an underscore).
    let fb = first.as_bytes();
    let mut pos = 0;
    while pos < fb.len() {
        let c = fb[pos].to_ascii_lowercase();
        if matches!(c, b's' | b'z' | b'x') {
            add_multi(&first[pos..], &mut isa)?;
            break;
        }
        if !c.is_ascii_lowercase() {
            return Err(IsaError::BadName);
        }
        add_single(c, &mut isa);
        pos += 1;
        pos = skip_version(fb, pos);
    }
    for tok in tokens {
        match tok.len() {
            0 => return Err(IsaError::BadName),
            1 => {
                let c = tok.as_bytes()[0].to_ascii_lowercase();
                if !c.is_ascii_lowercase() || matches!(c, b's' | b'z' | b'x') {
                    return Err(IsaError::BadName);
                }
                add_single(c, &mut isa);
            }
            _ => add_multi(tok, &mut isa)?,
        }
    }
    Ok(isa)
}

/// Skips a `<major>[p<minor>]` version starting at `pos`.
fn skip_version(b: &[u8], mut pos: usize) -> usize {
    let start = pos;
    while pos < b.len() && b[pos].is_ascii_digit() {
        pos += 1;
    }
    if pos > start
        && pos + 1 < b.len()
        && b[pos].eq_ignore_ascii_case(&b'p')
        && b[pos + 1].is_ascii_digit()
    {
        pos += 1;
        while pos < b.len() && b[pos].is_ascii_digit() {
            pos += 1;
        }
    }
    pos
}

fn add_single(c: u8, isa: &mut Isa) {
    let mut add = |n: &str| match Ext::from_name(n) {
        Some(e) => isa.exts.insert(e),
        None => isa.unknown += 1,
    };
    match c {
        b'g' => {
            for n in ["i", "m", "a", "f", "d", "zicsr", "zifencei"] {
                add(n);
            }
        }
        // Legacy: `i` in `riscv,isa` implies the counters, Zicsr and Zifencei (extensions.yaml).
        b'i' => {
            for n in ["i", "zicntr", "zicsr", "zifencei", "zihpm"] {
                add(n);
            }
        }
        _ => {
            let buf = [c];
            add(core::str::from_utf8(&buf).unwrap_or("?"));
        }
    }
}

/// Adds one multi-letter name, with its version suffix removed and case folded.
fn add_multi(tok: &str, isa: &mut Isa) -> Result<(), IsaError> {
    let b = tok.as_bytes();
    if b.len() < 2 || b.len() > NAME_MAX || !b.iter().all(|c| c.is_ascii_alphanumeric()) {
        return Err(IsaError::BadName);
    }
    if !b[0].is_ascii_alphabetic() {
        return Err(IsaError::BadName);
    }
    // Strip `<major>` or `<major>p<minor>` from the end (names never end in a digit).
    let mut end = b.len();
    while end > 0 && b[end - 1].is_ascii_digit() {
        end -= 1;
    }
    if end < b.len()
        && end >= 2
        && b[end - 1].eq_ignore_ascii_case(&b'p')
        && b[end - 2].is_ascii_digit()
    {
        end -= 1;
        while end > 0 && b[end - 1].is_ascii_digit() {
            end -= 1;
        }
    }
    if end < 2 {
        return Err(IsaError::BadName);
    }
    let mut lower = [0u8; NAME_MAX];
    for (d, s) in lower.iter_mut().zip(&b[..end]) {
        *d = s.to_ascii_lowercase();
    }
    let name = core::str::from_utf8(&lower[..end]).map_err(|_| IsaError::BadName)?;
    match Ext::from_name(name) {
        Some(e) => isa.exts.insert(e),
        None => isa.unknown += 1,
    }
    Ok(())
}

/// Parses a `riscv,isa-extensions` list (each entry one lower-case name, no versions). `xlen` comes from
/// `riscv,isa-base`.
pub fn parse_isa_extensions<'a>(
    xlen: u8,
    names: impl Iterator<Item = &'a str>,
) -> Result<Isa, IsaError> {
    let mut isa = Isa {
        xlen,
        exts: ExtSet::EMPTY,
        unknown: 0,
    };
    for n in names {
        if n.is_empty()
            || !n
                .bytes()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        {
            return Err(IsaError::BadName);
        }
        match Ext::from_name(n) {
            Some(e) => isa.exts.insert(e),
            None => isa.unknown += 1,
        }
    }
    if !isa.exts.contains(Ext::I) {
        return Err(IsaError::NoBase);
    }
    Ok(isa)
}

/// Splits a device-tree string-list property value (NUL-terminated strings back to back).
pub fn string_list(value: &[u8]) -> impl Iterator<Item = &str> {
    value
        .split(|&c| c == 0)
        .filter(|s| !s.is_empty())
        .map(|s| core::str::from_utf8(s).unwrap_or("\u{fffd}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const QEMU_ISA: &str = "rv64imafdch_zic64b_zicbom_zicbop_zicboz_ziccamoa_ziccif_zicclsm_ziccrse_zicntr_zicsr_\
zifencei_zihintntl_zihintpause_zihpm_zmmul_za64rs_zaamo_zalrsc_zawrs_zfa_zca_zcd_zba_zbb_zbc_zbs_shcounterenw_\
shgatpa_shtvala_shvsatpa_shvstvala_shvstvecd_ssccptr_sscounterenw_sstc_sstvala_sstvecd_ssu64xl_svadu_svvptc";

    #[test]
    fn names_round_trip_and_are_lower_case_and_canonically_ordered() {
        for (i, e) in Ext::ALL.iter().enumerate() {
            assert_eq!(Ext::from_name(e.name()), Some(*e));
            assert_eq!(e.id() as usize, i);
            assert!(e
                .name()
                .bytes()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit()));
        }
        // Multi-letter names: within each class alphabetical is not required (Z names go by category
        // letter), but the classes come in the canonical order Z, Sh, Sm, Ss, Sv.
        let class = |e: &Ext| match e.name().as_bytes() {
            [_] => 0,
            [b'z', ..] => 1,
            [b's', b'h', ..] => 2,
            [b's', b'm', ..] => 3,
            [b's', b's', ..] => 4,
            [b's', b'v', ..] => 5,
            _ => 9,
        };
        assert!(Ext::ALL.windows(2).all(|w| class(&w[0]) <= class(&w[1])));
    }

    #[test]
    fn qemu_isa_string_parses_into_the_same_set_as_its_extension_list() {
        let s = parse_isa_string(QEMU_ISA).unwrap();
        assert_eq!(s.xlen, 64);
        assert_eq!(s.unknown, 0);
        let list = QEMU_ISA[4..].replace('_', " ");
        let mut names: Vec<String> = "imafdch".chars().map(|c| c.to_string()).collect();
        names.extend(list.split(' ').skip(1).map(str::to_string));
        let l = parse_isa_extensions(64, names.iter().map(String::as_str)).unwrap();
        assert_eq!(s.exts, l.exts);
        assert!(
            s.exts.contains(Ext::H) && s.exts.contains(Ext::Sstc) && !s.exts.contains(Ext::Zalasr)
        );
    }

    #[test]
    fn zalasr_is_discovered_from_both_forms() {
        let s = parse_isa_string("rv64imac_zalasr_zicsr").unwrap();
        assert!(s.exts.contains(Ext::Zalasr));
        let l = parse_isa_extensions(64, ["i", "m", "a", "zalasr"].into_iter()).unwrap();
        assert!(l.exts.contains(Ext::Zalasr));
        assert_eq!(Ext::Zalasr.control(), Control::AlwaysOn);
    }

    #[test]
    fn versions_case_and_g_follow_the_naming_rules() {
        let s = parse_isa_string("RV64G2p0C_Zicsr2p0_zba1_Zalasr0p1").unwrap();
        for e in [
            Ext::I,
            Ext::M,
            Ext::A,
            Ext::F,
            Ext::D,
            Ext::C,
            Ext::Zicsr,
            Ext::Zifencei,
            Ext::Zba,
            Ext::Zalasr,
        ] {
            assert!(s.exts.contains(e), "{e:?}");
        }
        assert_eq!(s.unknown, 0);
        // `zic64b` ends in a letter after digits: not a version.
        assert!(parse_isa_string("rv64i_zic64b")
            .unwrap()
            .exts
            .contains(Ext::Zic64b));
        // A directly attached multi-letter name, and `p` as a single letter (packed SIMD, unknown here).
        let s = parse_isa_string("rv32imapzicsr").unwrap();
        assert_eq!(s.xlen, 32);
        assert!(s.exts.contains(Ext::Zicsr));
        assert_eq!(s.unknown, 1);
        // Legacy implications of `i`.
        assert!(parse_isa_string("rv64i")
            .unwrap()
            .exts
            .contains(Ext::Zicntr));
    }

    #[test]
    fn malformed_strings_are_errors_not_panics() {
        for bad in [
            "",
            "rv",
            "rv64",
            "rv128i",
            "x64i",
            "rv64q",
            "rv64i__zicsr",
            "rv64i_z",
            "rv64i_zi-csr",
            "rv64i_2p0",
            "rv64i_\u{e9}",
            "rv64i_zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz",
        ] {
            assert!(parse_isa_string(bad).is_err(), "{bad:?}");
        }
        assert_eq!(
            parse_isa_extensions(64, [].into_iter()),
            Err(IsaError::NoBase)
        );
        assert_eq!(
            parse_isa_extensions(64, ["i", "Zba"].into_iter()),
            Err(IsaError::BadName)
        );
        // Unknown but well-formed names are counted, not refused.
        let s = parse_isa_extensions(64, ["i", "xfoo", "zfuture"].into_iter()).unwrap();
        assert_eq!(s.unknown, 2);
    }

    #[test]
    fn string_lists_split_on_nul() {
        let v: Vec<&str> = string_list(b"i\0m\0zalasr\0").collect();
        assert_eq!(v, ["i", "m", "zalasr"]);
    }
}
