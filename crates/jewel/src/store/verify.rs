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
use bao_tree::{BaoTree, BlockSize, ChunkNum, ChunkRanges};

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

/// Reads `buf.len()` bytes at `offset` from `data`, verifying every chunk group they touch
/// (and the tree path above it) against `outboard`'s root. The caller checks the range.
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
    let ranges = ChunkRanges::from(ChunkNum(offset / 1024)..ChunkNum(end.div_ceil(1024)));
    let ranges = round_up_to_chunks_groups(ranges, tree.block_size());
    let mut stack: Vec<Hash> = vec![outboard.root()];
    let mut leaf = vec![0u8; tree.block_size().bytes()];
    for item in tree.ranges_pre_order_chunks_iter_ref(&ranges, 0) {
        match item {
            BaoChunk::Parent { node, is_root, left, right, .. } => {
                let at = node.chunk_range().start.to_bytes();
                let (l, r) = outboard.load(node)?.ok_or(VerifyError::Mismatch { offset: at })?;
                let expected = stack.pop().ok_or(VerifyError::Mismatch { offset: at })?;
                if parent_cv(&l, &r, is_root) != expected {
                    return Err(VerifyError::Mismatch { offset: at });
                }
                if right {
                    stack.push(r);
                }
                if left {
                    stack.push(l);
                }
            }
            BaoChunk::Leaf { start_chunk, size, is_root, .. } => {
                let start = start_chunk.to_bytes();
                let expected = stack.pop().ok_or(VerifyError::Mismatch { offset: start })?;
                let leaf = &mut leaf[..size];
                data.read_exact_at(start, leaf)?;
                if leaf_cv(start_chunk.0, leaf, is_root) != expected {
                    return Err(VerifyError::Mismatch { offset: start });
                }
                // Copy the overlap of this chunk group with the requested range.
                let from = offset.max(start);
                let to = end.min(start + size as u64);
                if from < to {
                    let src = &leaf[(from - start) as usize..(to - start) as usize];
                    buf[(from - offset) as usize..(to - offset) as usize].copy_from_slice(src);
                }
            }
        }
    }
    Ok(())
}

/// The chunk ranges (rounded out to whole chunk groups) covering `len` bytes at `offset`.
fn group_ranges(tree: &BaoTree, offset: u64, len: u64) -> ChunkRanges {
    let end = offset.saturating_add(len).min(tree.size());
    let ranges = ChunkRanges::from(ChunkNum(offset / 1024)..ChunkNum(end.div_ceil(1024)));
    round_up_to_chunks_groups(ranges, tree.block_size())
}

/// A verified fragment: the bao encoding (parent hashes + chunk groups) of the byte range,
/// checked against the root while it is produced, so a rotten store serves an error, not
/// bad bytes. The receiver checks it again with [`decode_fragment`].
pub(crate) fn encode_fragment<D: ReadAt, O: Outboard>(
    data: &D,
    outboard: &O,
    offset: u64,
    len: u64,
) -> Result<Vec<u8>, VerifyError> {
    let tree = outboard.tree();
    let ranges = group_ranges(&tree, offset, len);
    // Sized up front: growing by doubling copied each fragment about twice more.
    let mut out = Vec::with_capacity(encoded_len(len));
    bao_tree::io::sync::encode_ranges_validated(data, outboard, &ranges, &mut out).map_err(|e| match e {
        bao_tree::io::EncodeError::Io(e) => VerifyError::Io(e),
        _ => VerifyError::Mismatch { offset },
    })?;
    Ok(out)
}

/// An upper bound on the encoded size of a `len`-byte fragment: the data, plus a pair of
/// 32-byte hashes per chunk group in it and per level above it (64 levels at most).
/// (Capped: it is only a reservation.)
fn encoded_len(len: u64) -> usize {
    let len = len.min(64 << 20);
    let groups = len / CHUNK_GROUP_SIZE as u64 + 2;
    usize::try_from(len + (groups + 64) * 64).unwrap_or(0)
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
        use bao_tree::io::sync::DecodeResponseIter;
        use bao_tree::io::BaoContentItem;
        let end = offset.checked_add(len).filter(|e| *e <= size).ok_or(FragmentError::Truncated)?;
        let tree = tree(size);
        let ranges = group_ranges(&tree, offset, len);
        let mut reader = std::io::Cursor::new(encoded);
        // Leaves arrive in order, so the wanted bytes are appended (no zeroing first).
        for item in DecodeResponseIter::new(root, tree, &mut reader, &ranges) {
            match item {
                Ok(BaoContentItem::Parent(_)) => {}
                Ok(BaoContentItem::Leaf(leaf)) => {
                    let start = leaf.offset;
                    let stop = start + leaf.data.len() as u64;
                    let from = offset.max(start);
                    let to = end.min(stop);
                    if from < to {
                        if from - offset != (out.len() - before) as u64 {
                            return Err(FragmentError::Mismatch { offset: from });
                        }
                        out.extend_from_slice(&leaf.data[(from - start) as usize..(to - start) as usize]);
                    }
                }
                Err(bao_tree::io::DecodeError::Io(_)) => return Err(FragmentError::Truncated),
                Err(_) => return Err(FragmentError::Mismatch { offset }),
            }
        }
        if (out.len() - before) as u64 != len {
            return Err(FragmentError::Truncated);
        }
        let rest = encoded.len() as u64 - reader.position();
        if rest != 0 {
            return Err(FragmentError::Trailing(rest as usize));
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
            let frag = encode_fragment(&d, &ob, off, n).unwrap();
            let got = decode_fragment(ob.root, len as u64, off, n, &frag).unwrap();
            assert_eq!(got, d[off as usize..(off + n) as usize]);
            if n > 0 {
                // A lying server: flipped byte, truncated fragment, wrong block.
                let mut bad = frag.clone();
                let i = bad.len() - 1;
                bad[i] ^= 1;
                assert!(decode_fragment(ob.root, len as u64, off, n, &bad).is_err());
                assert!(decode_fragment(ob.root, len as u64, off, n, &frag[..frag.len() - 1]).is_err());
                assert!(decode_fragment(blake3::hash(b"x"), len as u64, off, n, &frag).is_err());
                let mut long = frag.clone();
                long.push(0);
                assert_eq!(
                    decode_fragment(ob.root, len as u64, off, n, &long),
                    Err(FragmentError::Trailing(1))
                );
            }
        }
        // A fragment for a small range is small: one chunk group plus the path to it.
        let frag = encode_fragment(&d, &ob, 150_000, 1).unwrap();
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
        let frag = encode_fragment(&d, &ob, 1_000, 100_000).unwrap();
        decode_fragment_into(ob.root, len as u64, 1_000, 100_000, &frag, &mut out).unwrap();
        assert!(out[..4] == *b"kept" && out[4..] == d[1_000..101_000]);
        let mut bad = frag.clone();
        let i = bad.len() - 10;
        bad[i] ^= 1;
        let before = out.clone();
        assert!(decode_fragment_into(ob.root, len as u64, 1_000, 100_000, &bad, &mut out).is_err());
        assert!(out == before);
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
                assert!(read_verified(&d, &bad_ob, 0, &mut buf).is_err());
            }
        }
    }
}
