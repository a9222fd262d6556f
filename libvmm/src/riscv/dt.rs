//! A flattened-device-tree (FDT v17) reader that validates the whole blob once and never panics,
//! whatever the bytes: every read is a checked `get`, every offset sum a `checked_add`, and clippy
//! refuses indexing, unchecked arithmetic, `unwrap` and `panic!` in this file.
//!
//! Why hand-written instead of a crate: libvmm read the host tree with `fdt` 0.1.5, which panics on
//! corrupted trees (out-of-range slices, `bad node` assertions, subtraction overflow, `unwrap` on
//! `None`: about 135 distinct panics over a million mutated trees, issue 14). The candidates checked:
//! `fdt` 0.2.0 exists only as alphas; `flat_device_tree` 3.1.1 (a fork of `fdt` 0.1) removed the
//! `unwrap`s but keeps the same lazy, unvalidated structure walk; `fdt-rs` 0.4.5 reads through raw
//! pointers (61 `unsafe` sites) and pulls in `fallible-iterator`; `dtb` 0.2.0 is unmaintained since
//! 2019 and indexes unchecked. None validates the structure block up front, so each would need the
//! same fuzzing proof and could not be fixed here. Reading FDT is small: a 40-byte header, a structure
//! block of BEGIN_NODE / PROP / END_NODE / NOP / END tokens and a strings block. libvmm needs only
//! lookups (a node by path, by `device_type`, by `compatible`, a property, the first `reg` entry).
//!
//! [`Tree::new`] checks the header (magic, version 17, blocks inside `totalsize`) and walks the whole
//! structure block: one root, balanced nodes at most [`DT_MAX_DEPTH`] deep, names NUL-terminated
//! inside the block, property values inside the block, property names inside the strings block,
//! properties only before a node's children, END after the root. The lookups then walk the same
//! tokens with the same checked reads (a failed read ends a walk; it cannot panic either way). Every
//! walk moves forward by at least one 4-byte token, so it ends. The proof is the `dt` fuzz target
//! (`cargo xtask fuzz`), which mutates the real QEMU trees in `testdata/`.
#![forbid(unsafe_code)]
#![deny(
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::unreachable,
    clippy::as_conversions
)]

pub use crate::config::DT_MAX_DEPTH;

const MAGIC: u32 = 0xd00d_feed;
const BEGIN_NODE: u32 = 1;
const END_NODE: u32 = 2;
const PROP: u32 = 3;
const NOP: u32 = 4;
const END: u32 = 9;
/// The version this reader understands (and the lowest it accepts: v16 has no `size_dt_struct`).
const VERSION: u32 = 17;

/// Why a blob was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DtbError {
    /// Bad magic or version, or a block outside `totalsize` or the buffer.
    Header,
    /// The structure block is malformed (bad token, name, property, nesting or end).
    Structure,
}

fn be32(b: &[u8], off: usize) -> Option<u32> {
    let end = off.checked_add(4)?;
    Some(u32::from_be_bytes(b.get(off..end)?.try_into().ok()?))
}

fn usize_of(v: u32) -> Option<usize> {
    usize::try_from(v).ok()
}

fn align4(x: usize) -> Option<usize> {
    Some(x.checked_add(3)? & !3)
}

/// The bytes before the first NUL, if there is a NUL.
fn cstr(b: &[u8]) -> Option<&[u8]> {
    let n = b.iter().position(|&c| c == 0)?;
    b.get(..n)
}

#[derive(Clone, Copy)]
enum Token<'a> {
    Begin(&'a [u8]),
    Prop { name_off: u32, value: &'a [u8] },
    End,
    Nop,
    EndTree,
}

/// `#address-cells` / `#size-cells` of a node (what its children's `reg` use).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Cells {
    address: u32,
    size: u32,
}

/// The spec's defaults when a node does not say.
const DEFAULT_CELLS: Cells = Cells {
    address: 2,
    size: 1,
};

/// A validated device tree.
#[derive(Clone, Copy)]
pub struct Tree<'a> {
    structs: &'a [u8],
    strings: &'a [u8],
}

impl<'a> Tree<'a> {
    /// Checks the header and the whole structure block.
    pub fn new(blob: &'a [u8]) -> Result<Self, DtbError> {
        let field = |i: usize| i.checked_mul(4).and_then(|o| be32(blob, o));
        let h = |i: usize| field(i).and_then(usize_of).ok_or(DtbError::Header);
        if field(0) != Some(MAGIC) || field(5).is_none_or(|v| v < VERSION) {
            return Err(DtbError::Header);
        }
        if field(6).is_none_or(|v| v > VERSION) {
            return Err(DtbError::Header);
        }
        let blob = blob.get(..h(1)?).ok_or(DtbError::Header)?;
        let block = |off: usize, size: usize| {
            off.checked_add(size)
                .and_then(|end| blob.get(off..end))
                .ok_or(DtbError::Header)
        };
        let (off_struct, off_strings) = (h(2)?, h(3)?);
        if off_struct % 4 != 0 {
            return Err(DtbError::Header);
        }
        let tree = Tree {
            structs: block(off_struct, h(9)?)?,
            strings: block(off_strings, h(8)?)?,
        };
        tree.validate().ok_or(DtbError::Structure)?;
        Ok(tree)
    }

    fn validate(&self) -> Option<()> {
        let mut off = 0usize;
        let mut depth = 0usize;
        let mut seen_root = false;
        let mut props_allowed = false;
        loop {
            let (tok, next) = self.token(off)?;
            match tok {
                Token::Nop => {}
                Token::Begin(name) => {
                    if depth == 0 && (seen_root || !name.is_empty()) {
                        return None;
                    }
                    if depth != 0 && name.is_empty() {
                        return None;
                    }
                    seen_root = true;
                    depth = depth.checked_add(1)?;
                    if depth > DT_MAX_DEPTH {
                        return None;
                    }
                    props_allowed = true;
                }
                Token::Prop { name_off, .. } => {
                    if depth == 0 || !props_allowed {
                        return None;
                    }
                    self.string(name_off)?;
                }
                Token::End => {
                    depth = depth.checked_sub(1)?;
                    props_allowed = false;
                }
                Token::EndTree => return (depth == 0 && seen_root).then_some(()),
            }
            off = next;
        }
    }

    /// The token at `off` and the offset of the next one.
    fn token(&self, off: usize) -> Option<(Token<'a>, usize)> {
        let body = off.checked_add(4)?;
        let (tok, next) = match be32(self.structs, off)? {
            BEGIN_NODE => {
                let name = cstr(self.structs.get(body..)?)?;
                let end = body.checked_add(name.len())?.checked_add(1)?;
                (Token::Begin(name), align4(end)?)
            }
            PROP => {
                let len = usize_of(be32(self.structs, body)?)?;
                let name_off = be32(self.structs, body.checked_add(4)?)?;
                let start = body.checked_add(8)?;
                let end = start.checked_add(len)?;
                let value = self.structs.get(start..end)?;
                (Token::Prop { name_off, value }, align4(end)?)
            }
            END_NODE => (Token::End, body),
            NOP => (Token::Nop, body),
            END => (Token::EndTree, body),
            _ => return None,
        };
        (next <= self.structs.len()).then_some((tok, next))
    }

    fn string(&self, off: u32) -> Option<&'a [u8]> {
        cstr(self.strings.get(usize_of(off)?..)?)
    }

    /// The root node.
    pub fn root(&self) -> Option<Node<'a>> {
        let mut off = 0;
        loop {
            match self.token(off)? {
                (Token::Nop, next) => off = next,
                (Token::Begin(name), next) => {
                    return Some(Node {
                        tree: *self,
                        name,
                        body: next,
                        cells: DEFAULT_CELLS,
                    })
                }
                _ => return None,
            }
        }
    }

    /// The node at an absolute path such as `/cpus` or `/soc/serial@10000000` (a component without a
    /// unit address also matches a name with one).
    pub fn find(&self, path: &str) -> Option<Node<'a>> {
        let mut node = self.root()?;
        for part in path.split('/').filter(|p| !p.is_empty()) {
            node = node.children().find(|c| c.is_named(part))?;
        }
        Some(node)
    }

    /// Every node, depth first, the root first.
    pub fn nodes(&self) -> Nodes<'a> {
        Nodes {
            tree: *self,
            off: Some(0),
            stack: heapless::Vec::new(),
        }
    }

    /// The first node whose `compatible` list contains `compat`.
    pub fn find_compatible(&self, compat: &str) -> Option<Node<'a>> {
        self.nodes().find(|n| {
            n.property("compatible")
                .is_some_and(|p| p.value.split(|&c| c == 0).any(|s| s == compat.as_bytes()))
        })
    }
}

/// One node of a validated tree.
#[derive(Clone, Copy)]
pub struct Node<'a> {
    tree: Tree<'a>,
    name: &'a [u8],
    /// Offset of the first token after BEGIN_NODE and the name.
    body: usize,
    /// The parent's cells: how this node's `reg` reads.
    cells: Cells,
}

impl<'a> Node<'a> {
    /// The node name with its unit address (empty for the root; `""` if not UTF-8).
    #[cfg(any(test, feature = "fuzzing"))]
    pub fn name(&self) -> &'a str {
        core::str::from_utf8(self.name).unwrap_or("")
    }

    fn is_named(&self, part: &str) -> bool {
        let part = part.as_bytes();
        if self.name == part {
            return true;
        }
        !part.contains(&b'@')
            && self
                .name
                .split(|&c| c == b'@')
                .next()
                .is_some_and(|base| base == part)
    }

    pub fn properties(&self) -> Props<'a> {
        Props {
            tree: self.tree,
            off: Some(self.body),
        }
    }

    pub fn property(&self, name: &str) -> Option<Prop<'a>> {
        self.properties().find(|p| p.name == name.as_bytes())
    }

    /// The node's own `#address-cells` / `#size-cells` (what its children use).
    fn own_cells(&self) -> Cells {
        let get = |name, default| {
            self.property(name)
                .and_then(|p| p.as_u32())
                .unwrap_or(default)
        };
        Cells {
            address: get("#address-cells", DEFAULT_CELLS.address),
            size: get("#size-cells", DEFAULT_CELLS.size),
        }
    }

    pub fn children(&self) -> Children<'a> {
        Children {
            tree: self.tree,
            off: Some(self.body),
            cells: self.own_cells(),
        }
    }

    /// The first `reg` entry (address, size), read with the parent's cells (address 1 or 2 cells, size
    /// 0 to 2; anything else, or a value too short, is `None`).
    pub fn first_reg(&self) -> Option<(u64, u64)> {
        let Cells { address, size } = self.cells;
        if !(1..=2).contains(&address) || size > 2 {
            return None;
        }
        let v = self.property("reg")?.value;
        let read = |first: u32, n: u32| -> Option<u64> {
            let mut x = 0u64;
            for i in 0..n {
                let off = usize_of(first.checked_add(i)?.checked_mul(4)?)?;
                x = x.checked_shl(32)? | u64::from(be32(v, off)?);
            }
            Some(x)
        };
        Some((read(0, address)?, read(address, size)?))
    }
}

/// A property: its name (from the strings block) and raw value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Prop<'a> {
    pub name: &'a [u8],
    pub value: &'a [u8],
}

impl<'a> Prop<'a> {
    /// A string property: NUL-terminated, the text before the first NUL, valid UTF-8.
    pub fn as_str(&self) -> Option<&'a str> {
        if self.value.last() != Some(&0) {
            return None;
        }
        core::str::from_utf8(cstr(self.value)?).ok()
    }

    pub fn as_u32(&self) -> Option<u32> {
        Some(u32::from_be_bytes(self.value.try_into().ok()?))
    }

    /// A one- or two-cell number.
    pub fn as_u64(&self) -> Option<u64> {
        match self.value.len() {
            4 => self.as_u32().map(u64::from),
            _ => Some(u64::from_be_bytes(self.value.try_into().ok()?)),
        }
    }
}

/// A node's properties, in order.
pub struct Props<'a> {
    tree: Tree<'a>,
    off: Option<usize>,
}

impl<'a> Iterator for Props<'a> {
    type Item = Prop<'a>;
    fn next(&mut self) -> Option<Prop<'a>> {
        loop {
            let (tok, next) = self.tree.token(self.off.take()?)?;
            match tok {
                Token::Nop => self.off = Some(next),
                Token::Prop { name_off, value } => {
                    self.off = Some(next);
                    return Some(Prop {
                        name: self.tree.string(name_off)?,
                        value,
                    });
                }
                _ => return None,
            }
        }
    }
}

/// A node's children, in order.
pub struct Children<'a> {
    tree: Tree<'a>,
    off: Option<usize>,
    cells: Cells,
}

impl<'a> Children<'a> {
    /// The offset just after the END_NODE that closes the node whose body starts at `off`.
    fn end_of(&self, mut off: usize) -> Option<usize> {
        let mut depth = 1usize;
        loop {
            let (tok, next) = self.tree.token(off)?;
            match tok {
                Token::Begin(_) => depth = depth.checked_add(1)?,
                Token::End => {
                    depth = depth.checked_sub(1)?;
                    if depth == 0 {
                        return Some(next);
                    }
                }
                Token::EndTree => return None,
                Token::Nop | Token::Prop { .. } => {}
            }
            off = next;
        }
    }
}

impl<'a> Iterator for Children<'a> {
    type Item = Node<'a>;
    fn next(&mut self) -> Option<Node<'a>> {
        loop {
            let (tok, next) = self.tree.token(self.off.take()?)?;
            match tok {
                Token::Nop | Token::Prop { .. } => self.off = Some(next),
                Token::Begin(name) => {
                    self.off = Some(self.end_of(next)?);
                    return Some(Node {
                        tree: self.tree,
                        name,
                        body: next,
                        cells: self.cells,
                    });
                }
                Token::End | Token::EndTree => return None,
            }
        }
    }
}

/// Every node of a tree, depth first.
pub struct Nodes<'a> {
    tree: Tree<'a>,
    off: Option<usize>,
    /// The cells of each open node (validation bounds the depth).
    stack: heapless::Vec<Cells, DT_MAX_DEPTH>,
}

impl<'a> Iterator for Nodes<'a> {
    type Item = Node<'a>;
    fn next(&mut self) -> Option<Node<'a>> {
        loop {
            let (tok, next) = self.tree.token(self.off.take()?)?;
            match tok {
                Token::Nop | Token::Prop { .. } => self.off = Some(next),
                Token::End => {
                    self.stack.pop()?;
                    self.off = Some(next);
                }
                Token::Begin(name) => {
                    let node = Node {
                        tree: self.tree,
                        name,
                        body: next,
                        cells: self.stack.last().copied().unwrap_or(DEFAULT_CELLS),
                    };
                    self.stack.push(node.own_cells()).ok()?;
                    self.off = Some(next);
                    return Some(node);
                }
                Token::EndTree => return None,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::as_conversions)]
    use super::*;

    const QEMU: &[u8] = include_bytes!("testdata/qemu-virt-rv64.dtb");

    #[test]
    fn qemu_tree_lookups() {
        let t = Tree::new(QEMU).unwrap();
        assert_eq!(t.root().unwrap().name(), "");
        let chosen = t.find("/chosen").unwrap();
        assert_eq!(chosen.name(), "chosen");
        let cpu = t.find("/cpus/cpu@0").unwrap();
        assert_eq!(cpu.property("device_type").unwrap().as_str(), Some("cpu"));
        assert_eq!(t.find("/cpus/cpu").unwrap().name(), "cpu@0");
        assert!(t.find("/nope").is_none());
        let uart = t.find_compatible("ns16550a").unwrap();
        assert_eq!(uart.first_reg(), Some((0x1000_0000, 0x100)));
        let mem = t
            .nodes()
            .find(|n| n.property("device_type").and_then(|p| p.as_str()) == Some("memory"))
            .unwrap();
        assert_eq!(mem.first_reg(), Some((0x8000_0000, 128 << 20)));
        assert!(t.nodes().count() > 10);
        assert_eq!(
            t.find("/cpus")
                .unwrap()
                .property("timebase-frequency")
                .unwrap()
                .as_u64(),
            Some(10_000_000)
        );
    }

    /// Agrees with the `fdt` crate (the previous reader) on every node and property of the real tree.
    #[test]
    fn agrees_with_the_fdt_crate_on_the_real_trees() {
        for blob in [QEMU, include_bytes!("testdata/qemu-virt-rv64-zalasr.dtb")] {
            let ours = Tree::new(blob).unwrap();
            let theirs = fdt::Fdt::new(blob).unwrap();
            let a: Vec<_> = ours.nodes().map(|n| n.name().to_string()).collect();
            // `fdt` names the root "/"; the blob's root name is empty.
            let b: Vec<_> = theirs
                .all_nodes()
                .map(|n| n.name.replace('/', ""))
                .collect();
            assert_eq!(a, b);
            for (n, m) in ours.nodes().zip(theirs.all_nodes()) {
                let pa: Vec<_> = n.properties().map(|p| (p.name, p.value)).collect();
                let pb: Vec<_> = m
                    .properties()
                    .map(|p| (p.name.as_bytes(), p.value))
                    .collect();
                assert_eq!(pa, pb, "{}", n.name());
            }
        }
    }

    #[test]
    fn corrupt_trees_are_refused_not_panics() {
        assert_eq!(Tree::new(&[]).err(), Some(DtbError::Header));
        assert_eq!(Tree::new(&QEMU[..40]).err(), Some(DtbError::Header));
        assert_eq!(
            Tree::new(&QEMU[..QEMU.len() / 2]).err(),
            Some(DtbError::Header)
        );
        // The first structure token is not BEGIN_NODE.
        let off = u32::from_be_bytes(QEMU[8..12].try_into().unwrap()) as usize;
        let mut bad = QEMU.to_vec();
        bad[off + 3] = 7;
        assert_eq!(Tree::new(&bad).err(), Some(DtbError::Structure));
        // A property name offset far outside the strings block.
        let mut bad = QEMU.to_vec();
        let prop = (off..bad.len())
            .step_by(4)
            .find(|&i| bad[i..i + 4] == PROP.to_be_bytes())
            .unwrap();
        bad[prop + 8..prop + 12].copy_from_slice(&0xffff_fff0u32.to_be_bytes());
        assert_eq!(Tree::new(&bad).err(), Some(DtbError::Structure));
        // Every prefix and every single-byte corruption of the header is an error or a tree, never a
        // panic (the fuzz target does the rest).
        for n in 0..QEMU.len().min(200) {
            let _ = Tree::new(&QEMU[..n]);
        }
        for i in 0..40 {
            let mut b = QEMU.to_vec();
            b[i] ^= 0x80;
            if let Ok(t) = Tree::new(&b) {
                let _ = t.nodes().count();
            }
        }
    }

    /// Regression against the reader this replaced: single-byte corruptions of the real tree that make
    /// `fdt` 0.1.5 panic while walking it are a `Structure` error here.
    #[test]
    fn corruptions_that_panic_the_fdt_crate_are_errors_here() {
        for (at, v) in [(60, 0xff), (60, 0x80), (67, 0x01), (68, 0xff)] {
            let mut b = QEMU.to_vec();
            b[at] = v;
            let theirs = std::panic::catch_unwind(|| {
                if let Ok(f) = fdt::Fdt::new(&b) {
                    for n in f.all_nodes() {
                        for p in n.properties() {
                            let _ = p.as_str();
                        }
                    }
                    let _ = f.find_node("/chosen");
                }
            });
            assert!(theirs.is_err(), "fdt 0.1.5 panics on byte {at} = {v:#x}");
            assert_eq!(Tree::new(&b).err(), Some(DtbError::Structure));
        }
    }

    /// Regression: a 47-byte input made `fdt` 0.1.5 slice out of range (issue 14).
    #[test]
    fn tiny_inputs_that_broke_fdt() {
        let mut b = QEMU[..47].to_vec();
        b[4..8].copy_from_slice(&47u32.to_be_bytes());
        assert!(Tree::new(&b).is_err());
    }
}
