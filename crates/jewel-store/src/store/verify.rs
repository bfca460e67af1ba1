//! Verified reads: any byte range of a block, checked against the block id through its
//! bao outboard (BLAKE3 verified streaming, 16 KiB chunk groups).
//!
//! Walks the tree from the root down to the chunk groups covering the range, checking
//! every parent pair and every leaf, like bao-tree's `encode_ranges_validated`, but
//! writes only the requested bytes. Shared by both stores.

use std::io;

use bao_tree::blake3::hazmat::{
    merge_subtrees_non_root, merge_subtrees_root, ChainingValue, HasherExt, Mode,
};
use bao_tree::blake3::{self, Hash};
use bao_tree::io::round_up_to_chunks_groups;
use bao_tree::io::sync::{Outboard, ReadAt};
use bao_tree::iter::BaoChunk;
use bao_tree::{BaoTree, BlockSize, ChunkNum, ChunkRanges, TreeNode};

/// log2 of chunks (1 KiB each) per chunk group: 16 KiB groups.
pub const CHUNK_GROUP_LOG: u8 = 4;
/// Bytes per chunk group: the unit of verification.
pub const CHUNK_GROUP_SIZE: usize = 1024 << CHUNK_GROUP_LOG;

pub(crate) fn tree(size: u64) -> BaoTree {
    BaoTree::new(size, BlockSize::from_chunk_log(CHUNK_GROUP_LOG))
}

/// Bytes of outboard a block of `size` bytes has.
pub fn outboard_len(size: u64) -> u64 {
    tree(size).outboard_size()
}

/// Why a verified read failed.
#[derive(Debug)]
pub(crate) enum VerifyError {
    Io(io::Error),
    /// The data or the outboard does not match the root at this byte offset.
    Mismatch {
        offset: u64,
    },
}

impl From<io::Error> for VerifyError {
    fn from(e: io::Error) -> Self {
        VerifyError::Io(e)
    }
}

fn parent_cv(left: &Hash, right: &Hash, is_root: bool) -> Hash {
    let l: ChainingValue = *left.as_bytes();
    let r: ChainingValue = *right.as_bytes();
    if is_root {
        merge_subtrees_root(&l, &r, Mode::Hash)
    } else {
        Hash::from(merge_subtrees_non_root(&l, &r, Mode::Hash))
    }
}

fn leaf_cv(start_chunk: u64, data: &[u8], is_root: bool) -> Hash {
    if is_root {
        blake3::hash(data)
    } else {
        let mut h = blake3::Hasher::new();
        h.set_input_offset(start_chunk * 1024);
        h.update(data);
        Hash::from(h.finalize_non_root())
    }
}

/// A block's id and pre-order bao outboard, built from its bytes as they arrive, so a
/// store need not read a block back to hash it. Keeps one chaining value (32 bytes) per
/// 16 KiB chunk group until [`StreamingOutboard::finish`], plus the first group's bytes
/// (a block of one group is hashed whole, as the root).
pub(crate) struct StreamingOutboard {
    group: blake3::Hasher,
    in_group: usize,
    groups: Vec<Hash>,
    first: Vec<u8>,
    len: u64,
}

impl StreamingOutboard {
    pub(crate) fn new() -> Self {
        StreamingOutboard {
            group: blake3::Hasher::new(),
            in_group: 0,
            groups: Vec::new(),
            first: Vec::new(),
            len: 0,
        }
    }

    pub(crate) fn update(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            let take = data.len().min(CHUNK_GROUP_SIZE - self.in_group);
            let (now, rest) = data.split_at(take);
            if self.groups.is_empty() {
                self.first.extend_from_slice(now);
            }
            self.group.update(now);
            self.in_group += take;
            self.len += take as u64;
            data = rest;
            if self.in_group == CHUNK_GROUP_SIZE {
                self.close_group();
            }
        }
    }

    fn close_group(&mut self) {
        self.groups.push(Hash::from(self.group.finalize_non_root()));
        let next = self.groups.len() as u64 * CHUNK_GROUP_SIZE as u64;
        self.group = blake3::Hasher::new();
        self.group.set_input_offset(next);
        self.in_group = 0;
    }

    /// The root (the block id) and the outboard bytes: for every parent node in pre-order,
    /// its left and right chaining values.
    pub(crate) fn finish(mut self) -> (Hash, Vec<u8>) {
        let groups = self.len.div_ceil(CHUNK_GROUP_SIZE as u64).max(1) as usize;
        if groups == 1 {
            return (blake3::hash(&self.first), Vec::new());
        }
        if self.in_group > 0 {
            self.close_group();
        }
        let mut out = Vec::with_capacity((groups - 1) * 64);
        let root = subtree(&self.groups, true, &mut out);
        (root, out)
    }
}

/// The chaining value of the subtree over `groups`, appending its parents' pairs to `out`
/// in pre-order. BLAKE3's left subtree holds the largest power of two of chunks below the
/// total, which for more than one group is a power of two of whole groups.
fn subtree(groups: &[Hash], is_root: bool, out: &mut Vec<u8>) -> Hash {
    if let [one] = groups {
        return *one;
    }
    let left_len = 1usize << (usize::BITS - 1 - (groups.len() - 1).leading_zeros());
    let (left, right) = groups.split_at(left_len);
    let at = out.len();
    out.extend_from_slice(&[0u8; 64]);
    let l = subtree(left, false, out);
    let r = subtree(right, false, out);
    out[at..at + 32].copy_from_slice(l.as_bytes());
    out[at + 32..at + 64].copy_from_slice(r.as_bytes());
    parent_cv(&l, &r, is_root)
}

/// One step of a walk down the tree to the chunk groups of a range, in pre-order: the
/// order a fragment's encoding has (each parent's pair of chaining values, 64 bytes, and
/// each chunk group's data).
#[derive(Clone, Copy, Debug)]
enum Step {
    Parent(ParentStep),
    Leaf(LeafStep),
}

/// A parent node of the walk, and which of its children the walk goes on into.
#[derive(Clone, Copy, Debug)]
struct ParentStep {
    node: TreeNode,
    is_root: bool,
    left: bool,
    right: bool,
}

/// A chunk group of the walk: its byte offset in the block and its length.
#[derive(Clone, Copy, Debug)]
struct LeafStep {
    start: u64,
    size: usize,
    is_root: bool,
}

impl Step {
    fn encoded_len(&self) -> u64 {
        match self {
            Step::Parent(_) => 64,
            Step::Leaf(leaf) => leaf.size as u64,
        }
    }
}

/// The walk for `ranges`, collected (a few steps per 16 KiB) so it can be driven by reads.
fn steps(tree: &BaoTree, ranges: &ChunkRanges) -> Vec<Step> {
    tree.ranges_pre_order_chunks_iter_ref(ranges, 0)
        .map(|item| match item {
            BaoChunk::Parent { node, is_root, left, right, .. } => {
                Step::Parent(ParentStep { node, is_root, left, right })
            }
            BaoChunk::Leaf { start_chunk, size, is_root, .. } => {
                Step::Leaf(LeafStep { start: start_chunk.to_bytes(), size, is_root })
            }
        })
        .collect()
}

/// Checks the walk's parents and leaves against the root, top down: each parent pair must
/// hash to the chaining value its own parent promised, and each leaf to its pair's half.
struct Checker {
    stack: Vec<Hash>,
}

impl Checker {
    fn new(root: Hash) -> Self {
        Checker { stack: vec![root] }
    }

    /// Checks a parent's pair; `Err` carries the byte offset of the node.
    fn parent(&mut self, step: &ParentStep, l: &Hash, r: &Hash) -> Result<(), u64> {
        let at = step.node.chunk_range().start.to_bytes();
        let expected = self.stack.pop().ok_or(at)?;
        if parent_cv(l, r, step.is_root) != expected {
            return Err(at);
        }
        if step.right {
            self.stack.push(*r);
        }
        if step.left {
            self.stack.push(*l);
        }
        Ok(())
    }

    /// Checks a chunk group's bytes; `Err` carries its byte offset.
    fn leaf(&mut self, step: &LeafStep, data: &[u8]) -> Result<(), u64> {
        let expected = self.stack.pop().ok_or(step.start)?;
        if data.len() != step.size || leaf_cv(step.start / 1024, data, step.is_root) != expected {
            return Err(step.start);
        }
        Ok(())
    }
}

/// Reads `buf.len()` bytes at `offset` from `data`, verifying every chunk group they touch
/// (and the tree path above it) against `outboard`'s root. The caller checks the range.
/// Chunk groups wholly inside the range are read straight into `buf`.
pub(crate) fn read_verified<D: ReadAt, O: Outboard>(
    data: &D,
    outboard: &O,
    offset: u64,
    buf: &mut [u8],
) -> Result<(), VerifyError> {
    if buf.is_empty() {
        return Ok(());
    }
    let tree = outboard.tree();
    let end = offset + buf.len() as u64;
    let mut check = Checker::new(outboard.root());
    let mut scratch = Vec::new();
    for step in steps(&tree, &group_ranges(&tree, offset, buf.len() as u64)) {
        match step {
            Step::Parent(parent) => {
                let (l, r) = load(outboard, parent.node)?;
                check.parent(&parent, &l, &r).map_err(|offset| VerifyError::Mismatch { offset })?;
            }
            Step::Leaf(group) => {
                let LeafStep { start, size, .. } = group;
                let stop = start + size as u64;
                let leaf = if start >= offset && stop <= end {
                    &mut buf[(start - offset) as usize..(stop - offset) as usize]
                } else {
                    scratch.resize(size, 0);
                    &mut scratch[..]
                };
                data.read_exact_at(start, leaf)?;
                check.leaf(&group, leaf).map_err(|offset| VerifyError::Mismatch { offset })?;
                // A group that straddles an end of the range: copy its overlap.
                if start < offset || stop > end {
                    let (from, to) = (offset.max(start), end.min(stop));
                    let src = &scratch[(from - start) as usize..(to - start) as usize];
                    buf[(from - offset) as usize..(to - offset) as usize].copy_from_slice(src);
                }
            }
        }
    }
    Ok(())
}

/// A parent's pair from the outboard; a missing one is a mismatch at the node.
fn load<O: Outboard>(outboard: &O, node: TreeNode) -> Result<(Hash, Hash), VerifyError> {
    let at = node.chunk_range().start.to_bytes();
    outboard.load(node)?.ok_or(VerifyError::Mismatch { offset: at })
}

/// The chunk ranges (rounded out to whole chunk groups) covering `len` bytes at `offset`.
fn group_ranges(tree: &BaoTree, offset: u64, len: u64) -> ChunkRanges {
    let end = offset.saturating_add(len).min(tree.size());
    let ranges = ChunkRanges::from(ChunkNum(offset / 1024)..ChunkNum(end.div_ceil(1024)));
    round_up_to_chunks_groups(ranges, tree.block_size())
}

/// A verified fragment: the bao encoding (parent hashes + chunk groups) of the byte range,
/// checked against the root while it is produced, so a rotten store serves an error, not
/// bad bytes. Each chunk group is read straight into the output, then hashed there. The
/// receiver checks it again with a [`FragmentDecoder`]. Replaces what `out` held: `out` is
/// a reused buffer, overwritten in place, so only bytes past its old length are zeroed
/// before the disk fills them (safe Rust cannot read into uninitialised memory).
pub(crate) fn encode_fragment<D: ReadAt, O: Outboard>(
    data: &D,
    outboard: &O,
    offset: u64,
    len: u64,
    out: &mut Vec<u8>,
) -> Result<(), VerifyError> {
    let tree = outboard.tree();
    let steps = steps(&tree, &group_ranges(&tree, offset, len));
    let total: u64 = steps.iter().map(Step::encoded_len).sum();
    // Sized up front (capped: it is only a reservation); growing by doubling copies.
    out.reserve(usize::try_from(total.min(64 << 20)).unwrap_or(0).saturating_sub(out.len()));
    let mut check = Checker::new(outboard.root());
    let mut at = 0;
    for step in &steps {
        match step {
            Step::Parent(parent) => {
                let (l, r) = load(outboard, parent.node)?;
                check.parent(parent, &l, &r).map_err(|offset| VerifyError::Mismatch { offset })?;
                let pair = room(out, at, 64);
                pair[..32].copy_from_slice(l.as_bytes());
                pair[32..].copy_from_slice(r.as_bytes());
                at += 64;
            }
            Step::Leaf(group) => {
                let leaf = room(out, at, group.size);
                data.read_exact_at(group.start, leaf)?;
                check.leaf(group, leaf).map_err(|offset| VerifyError::Mismatch { offset })?;
                at += group.size;
            }
        }
    }
    out.truncate(at);
    Ok(())
}

/// `out[at..at + n]`, for overwriting: `out` grows (zero-filled) only if it is shorter.
/// Reused buffers keep their length between uses, so a buffer that held a fragment of
/// this size before is not zeroed again.
pub fn room(out: &mut Vec<u8>, at: usize, n: usize) -> &mut [u8] {
    if out.len() < at + n {
        out.resize(at + n, 0);
    }
    &mut out[at..at + n]
}

/// Why a received fragment was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FragmentError {
    #[error("fragment does not verify against the block id at byte {offset}")]
    Mismatch { offset: u64 },
    #[error("fragment is truncated")]
    Truncated,
    #[error("fragment has {0} bytes past its end")]
    Trailing(usize),
}

/// What a [`FragmentDecoder`] needs next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Want {
    /// A parent's pair of chaining values (64 bytes), for [`FragmentDecoder::pair`].
    Pair,
    /// A chunk group of this many bytes, read onto the end of the output, for
    /// [`FragmentDecoder::leaf`].
    Leaf(usize),
    /// Nothing: the fragment is complete and verified.
    Done,
}

/// Checks a fragment of block `root` as it arrives, so the receiver can read each chunk
/// group straight into its output buffer and need not hold the whole encoding: it says
/// what comes next ([`FragmentDecoder::want`]), checks each piece against the root, and
/// trims the first and last chunk groups to the range asked for.
pub struct FragmentDecoder {
    steps: Vec<Step>,
    next: usize,
    check: Checker,
    offset: u64,
    end: u64,
}

impl FragmentDecoder {
    /// A decoder for `len` bytes at `offset` of a block of `size` bytes whose id is `root`.
    pub fn new(root: Hash, size: u64, offset: u64, len: u64) -> Result<Self, FragmentError> {
        let end = offset.checked_add(len).filter(|e| *e <= size).ok_or(FragmentError::Truncated)?;
        let tree = tree(size);
        let steps = steps(&tree, &group_ranges(&tree, offset, len));
        Ok(FragmentDecoder { steps, next: 0, check: Checker::new(root), offset, end })
    }

    /// The exact length of the encoding: a fragment announced longer or shorter is wrong.
    pub fn encoded_len(&self) -> u64 {
        self.steps.iter().map(Step::encoded_len).sum()
    }

    /// Checks an announced fragment length against [`FragmentDecoder::encoded_len`].
    pub fn check_len(&self, announced: u64) -> Result<(), FragmentError> {
        let want = self.encoded_len();
        match announced.cmp(&want) {
            std::cmp::Ordering::Less => Err(FragmentError::Truncated),
            std::cmp::Ordering::Equal => Ok(()),
            std::cmp::Ordering::Greater => {
                Err(FragmentError::Trailing(usize::try_from(announced - want).unwrap_or(usize::MAX)))
            }
        }
    }

    pub fn want(&self) -> Want {
        match self.steps.get(self.next) {
            Some(Step::Parent(_)) => Want::Pair,
            Some(Step::Leaf(group)) => Want::Leaf(group.size),
            None => Want::Done,
        }
    }

    /// Checks the next parent's pair (left ‖ right chaining values).
    pub fn pair(&mut self, pair: &[u8; 64]) -> Result<(), FragmentError> {
        let step = match self.steps.get(self.next) {
            Some(Step::Parent(parent)) => *parent,
            // Not what `want` asked for: a pair where a chunk group or the end belongs.
            Some(Step::Leaf(group)) => return Err(FragmentError::Mismatch { offset: group.start }),
            None => return Err(FragmentError::Trailing(64)),
        };
        let (l, r) = pair.split_at(32);
        let l = Hash::from_slice(l).map_err(|_| FragmentError::Truncated)?;
        let r = Hash::from_slice(r).map_err(|_| FragmentError::Truncated)?;
        self.check.parent(&step, &l, &r).map_err(|offset| FragmentError::Mismatch { offset })?;
        self.next += 1;
        Ok(())
    }

    /// Checks the chunk group just read into `group` (the [`Want::Leaf`] length), moves its
    /// bytes that lie in the range to the front, and returns how many there are.
    pub fn leaf(&mut self, group: &mut [u8]) -> Result<usize, FragmentError> {
        let step = match self.steps.get(self.next) {
            Some(Step::Leaf(step)) => *step,
            // Not what `want` asked for: a chunk group where a pair or the end belongs.
            Some(Step::Parent(_)) => return Err(FragmentError::Mismatch { offset: self.offset }),
            None => return Err(FragmentError::Trailing(group.len())),
        };
        self.check.leaf(&step, group).map_err(|offset| FragmentError::Mismatch { offset })?;
        let (start, size) = (step.start, step.size as u64);
        let (from, to) = (self.offset.max(start), self.end.min(start + size));
        let (a, b) = if from < to { ((from - start) as usize, (to - start) as usize) } else { (0, 0) };
        group.copy_within(a..b, 0);
        self.next += 1;
        Ok(b - a)
    }
}

/// Checks a fragment received for block `root` of `size` bytes and returns exactly the
/// `len` bytes at `offset`. Any mismatch, truncation or excess is an error.
pub fn decode_fragment(
    root: Hash,
    size: u64,
    offset: u64,
    len: u64,
    encoded: &[u8],
) -> Result<Vec<u8>, FragmentError> {
    let mut out = Vec::with_capacity(encoded.len().min(usize::try_from(len).unwrap_or(0)));
    decode_fragment_into(root, size, offset, len, encoded, &mut out)?;
    Ok(out)
}

/// Like [`decode_fragment`], appending the bytes to `out` (a reused buffer); on error,
/// `out` is left as it was.
pub fn decode_fragment_into(
    root: Hash,
    size: u64,
    offset: u64,
    len: u64,
    encoded: &[u8],
    out: &mut Vec<u8>,
) -> Result<(), FragmentError> {
    let before = out.len();
    let mut append = || -> Result<(), FragmentError> {
        let mut dec = FragmentDecoder::new(root, size, offset, len)?;
        dec.check_len(encoded.len() as u64)?;
        let mut rest = encoded;
        loop {
            match dec.want() {
                Want::Pair => {
                    let (pair, tail) = rest.split_first_chunk::<64>().ok_or(FragmentError::Truncated)?;
                    dec.pair(pair)?;
                    rest = tail;
                }
                Want::Leaf(n) => {
                    let (data, tail) = rest.split_at_checked(n).ok_or(FragmentError::Truncated)?;
                    let at = out.len();
                    out.extend_from_slice(data);
                    let kept = dec.leaf(&mut out[at..])?;
                    out.truncate(at + kept);
                    rest = tail;
                }
                Want::Done => break,
            }
        }
        if (out.len() - before) as u64 != len {
            return Err(FragmentError::Truncated);
        }
        Ok(())
    };
    let result = append();
    if result.is_err() {
        out.truncate(before);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use bao_tree::io::outboard::PreOrderMemOutboard;

    /// The streamed id and outboard are bao-tree's own, byte for byte, at every size around
    /// the group and tree boundaries, however the bytes are cut.
    #[test]
    fn streaming_outboard_matches_bao_tree() {
        let g = CHUNK_GROUP_SIZE;
        let sizes = [
            0,
            1,
            1023,
            1024,
            1025,
            g - 1,
            g,
            g + 1,
            2 * g,
            2 * g + 1,
            3 * g,
            4 * g + 7,
            5 * g,
            17 * g - 3,
            300_000,
            1 << 20,
        ];
        for len in sizes {
            let d = data(len);
            let ob = PreOrderMemOutboard::create(&d, BlockSize::from_chunk_log(CHUNK_GROUP_LOG));
            for cut in [1, 7, 1000, g, 100_000] {
                let mut s = StreamingOutboard::new();
                for piece in d.chunks(cut) {
                    s.update(piece);
                }
                let (root, outboard) = s.finish();
                assert_eq!(root, ob.root, "root, len {len} cut {cut}");
                assert_eq!(root, blake3::hash(&d), "the root is the BLAKE3 hash, len {len}");
                assert!(outboard == ob.data, "outboard, len {len} cut {cut}");
            }
        }
    }

    #[test]
    fn fragments_round_trip_and_lies_are_caught() {
        let len = 300_000usize;
        let d = data(len);
        let ob = PreOrderMemOutboard::create(&d, BlockSize::from_chunk_log(CHUNK_GROUP_LOG));
        for (off, n) in [(0u64, len as u64), (5, 10), (100_000, 50_000), (len as u64 - 1, 1), (7, 0)] {
            let frag = encoded(&d, &ob, off, n);
            let got = decode_fragment(ob.root, len as u64, off, n, &frag).unwrap();
            assert_eq!(got, d[off as usize..(off + n) as usize]);
            if n > 0 {
                // A lying server: flipped byte, truncated fragment, wrong block.
                let mut bad = frag.clone();
                let i = bad.len() - 1;
                bad[i] ^= 1;
                assert!(matches!(
                    decode_fragment(ob.root, len as u64, off, n, &bad),
                    Err(FragmentError::Mismatch { .. })
                ));
                assert!(matches!(
                    decode_fragment(ob.root, len as u64, off, n, &frag[..frag.len() - 1]),
                    Err(FragmentError::Truncated)
                ));
                assert!(matches!(
                    decode_fragment(blake3::hash(b"x"), len as u64, off, n, &frag),
                    Err(FragmentError::Mismatch { .. })
                ));
                let mut long = frag.clone();
                long.push(0);
                assert_eq!(
                    decode_fragment(ob.root, len as u64, off, n, &long),
                    Err(FragmentError::Trailing(1))
                );
            }
        }
        // A fragment for a small range is small: one chunk group plus the path to it.
        let frag = encoded(&d, &ob, 150_000, 1);
        assert!(frag.len() < CHUNK_GROUP_SIZE + 64 * 8, "{}", frag.len());
    }

    /// Decoding into a buffer appends after what it holds, and a bad fragment leaves it
    /// exactly as it was, even when the bad bytes come after good ones.
    #[test]
    fn decoding_into_a_buffer_appends_or_leaves_it_alone() {
        let len = 300_000usize;
        let d = data(len);
        let ob = PreOrderMemOutboard::create(&d, BlockSize::from_chunk_log(CHUNK_GROUP_LOG));
        let mut out = b"kept".to_vec();
        let frag = encoded(&d, &ob, 1_000, 100_000);
        decode_fragment_into(ob.root, len as u64, 1_000, 100_000, &frag, &mut out).unwrap();
        assert!(out[..4] == *b"kept" && out[4..] == d[1_000..101_000]);
        let mut bad = frag.clone();
        let i = bad.len() - 10;
        bad[i] ^= 1;
        let before = out.clone();
        assert!(matches!(
            decode_fragment_into(ob.root, len as u64, 1_000, 100_000, &bad, &mut out),
            Err(FragmentError::Mismatch { .. })
        ));
        assert!(out == before);
    }

    /// Our fragments are bao-tree's encoding byte for byte, and bao-tree's encodings
    /// decode: the wire format did not change when the walk became our own.
    #[test]
    fn fragments_are_bao_tree_encodings() {
        for len in [1usize, 1024, CHUNK_GROUP_SIZE, CHUNK_GROUP_SIZE + 1, 300_000, 1 << 20] {
            let d = data(len);
            let ob = PreOrderMemOutboard::create(&d, BlockSize::from_chunk_log(CHUNK_GROUP_LOG));
            let size = len as u64;
            for (off, n) in [(0, size), (size / 3, size / 3), (size - 1, 1), (size / 2, 0), (1, size - 1)] {
                let mut theirs = Vec::new();
                let ranges = group_ranges(&tree(size), off, n);
                bao_tree::io::sync::encode_ranges_validated(&d, &ob, &ranges, &mut theirs).unwrap();
                assert!(encoded(&d, &ob, off, n) == theirs, "len {len} range {off}+{n}");
                let got = decode_fragment(ob.root, size, off, n, &theirs).unwrap();
                assert!(got == d[off as usize..(off + n) as usize], "len {len} range {off}+{n}");
                let dec = FragmentDecoder::new(ob.root, size, off, n).unwrap();
                assert_eq!(dec.encoded_len(), theirs.len() as u64);
            }
        }
    }

    /// A decoder fed out of order (a chunk group where a pair is due, or a pair where a
    /// chunk group or the end is) refuses, and does not move on.
    #[test]
    fn a_decoder_refuses_pieces_out_of_order() {
        let d = data(300_000);
        let ob = PreOrderMemOutboard::create(&d, BlockSize::from_chunk_log(CHUNK_GROUP_LOG));
        let mut dec = FragmentDecoder::new(ob.root, d.len() as u64, 0, 1000).unwrap();
        assert_eq!(dec.want(), Want::Pair);
        let mut out = vec![0u8; CHUNK_GROUP_SIZE];
        assert!(matches!(dec.leaf(&mut out), Err(FragmentError::Mismatch { .. })));
        assert_eq!(dec.want(), Want::Pair);
        let small = data(1000);
        let root = blake3::hash(&small);
        let mut dec = FragmentDecoder::new(root, 1000, 0, 1000).unwrap();
        assert_eq!(dec.want(), Want::Leaf(1000));
        assert!(matches!(dec.pair(&[0u8; 64]), Err(FragmentError::Mismatch { .. })));
        let mut out = small.clone();
        assert_eq!(dec.leaf(&mut out).unwrap(), 1000);
        assert!(out == small && dec.want() == Want::Done);
        assert_eq!(dec.pair(&[0u8; 64]), Err(FragmentError::Trailing(64)));
    }

    fn encoded(d: &Vec<u8>, ob: &PreOrderMemOutboard, offset: u64, len: u64) -> Vec<u8> {
        // A reused buffer with stale bytes in it, longer than any fragment here: they must
        // not leak into the fragment.
        let mut out = vec![0xee; 3 << 20];
        encode_fragment(d, ob, offset, len, &mut out).unwrap();
        out
    }

    fn data(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 31 % 251) as u8).collect()
    }

    #[test]
    fn ranges_verify_and_tampering_is_caught() {
        for len in [1usize, 1024, 16 * 1024, 16 * 1024 + 1, 200_000] {
            let d = data(len);
            let ob = PreOrderMemOutboard::create(&d, BlockSize::from_chunk_log(CHUNK_GROUP_LOG));
            assert_eq!(ob.root, blake3::hash(&d), "root is the plain BLAKE3 hash");
            for (off, n) in [(0, len), (len / 2, len - len / 2), (len - 1, 1), (len / 3, len / 3)] {
                let mut buf = vec![0u8; n];
                read_verified(&d, &ob, off as u64, &mut buf).unwrap();
                assert_eq!(buf, d[off..off + n]);
            }
            // Flip one byte: a read touching its chunk group fails, one far away passes.
            let mut bad = d.clone();
            bad[len - 1] ^= 0xff;
            let mut buf = vec![0u8; 1];
            assert!(matches!(
                read_verified(&bad, &ob, (len - 1) as u64, &mut buf),
                Err(VerifyError::Mismatch { .. })
            ));
            if len > 2 * CHUNK_GROUP_SIZE {
                read_verified(&bad, &ob, 0, &mut buf).unwrap();
            }
            // A corrupt outboard is caught too.
            if ob.data.len() >= 64 {
                let mut bad_ob = ob.clone();
                bad_ob.data[0] ^= 1;
                assert!(matches!(read_verified(&d, &bad_ob, 0, &mut buf), Err(VerifyError::Mismatch { .. })));
            }
        }
    }
}
