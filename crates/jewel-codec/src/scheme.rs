//! The `Scheme` trait: one segment in, one chunk per peer slot out, and back.
//!
//! Owns the contract every scheme keeps, the zero-copy [`Encoded`] output and the codec
//! error type. It must not know about files, keys, stores or peers: a slot is just an
//! index, and the caller decides where slot `i`'s chunk goes.

use std::fmt;
use std::ops::Range;

use crate::spec::SchemeSpec;

/// Why a segment could not be encoded or decoded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CodecError {
    #[error("not enough pieces to rebuild the data: {needed} needed, {available} available")]
    NotEnoughPieces { needed: usize, available: usize },
    #[error("got {actual} piece slots, the scheme has {expected}")]
    WrongSlotCount { expected: usize, actual: usize },
    #[error("piece {slot} holds {actual} bytes for this segment, {expected} were expected")]
    ChunkLength { slot: usize, expected: usize, actual: usize },
    #[error("encoded output was read against a segment of {actual} bytes, it was built from {expected}")]
    InputMismatch { expected: usize, actual: usize },
    #[error("chunks were placed in the output for a scheme that does not place them")]
    NotPlaceable,
    #[error("reed-solomon: {0}")]
    ReedSolomon(#[from] reed_solomon_erasure::Error),
}

/// A storage scheme: turns a segment into one chunk per peer slot, and any sufficient
/// set of chunks back into the segment.
///
/// Chunk `i` of every segment, concatenated, is the piece stored on slot `i`. Chunk
/// lengths depend only on the segment length, so a reader can find any segment's chunk
/// in a piece from the segment lengths alone.
pub trait Scheme: Send + Sync + fmt::Debug {
    /// The parameters this scheme was built from.
    fn spec(&self) -> &SchemeSpec;
    /// N: the number of peer slots (one piece each).
    fn slots(&self) -> usize;
    /// Bytes of slot `slot`'s chunk for a segment of `len` bytes.
    fn chunk_len(&self, slot: usize, len: usize) -> usize;
    /// Encodes one segment. `out` is reset and reused; its buffers keep their capacity.
    fn encode(&self, segment: &[u8], out: &mut Encoded) -> Result<(), CodecError>;
    /// Rebuilds a segment of `len` bytes into `out` from the chunks present (one entry per
    /// slot, `None` for missing). Present chunks may be used as scratch space.
    fn decode(&self, len: usize, chunks: &mut [Option<Vec<u8>>], out: &mut Vec<u8>)
        -> Result<(), CodecError>;
    /// Where slot `slot`'s chunk of a segment of `len` bytes lies, byte for byte, in the
    /// buffer [`Scheme::decode_placed`] builds (before it is cut to `len`), if it lies there
    /// whole. A reader may write such a chunk there directly instead of into a buffer of
    /// its own, and save the copy. `None` (the default): the chunk must be passed in.
    fn placed_range(&self, _slot: usize, _len: usize) -> Option<Range<usize>> {
        None
    }
    /// [`Scheme::decode`], where the chunks of the slots marked in `placed` were already
    /// written to their [`Scheme::placed_range`] in `out` (and are `None` in `chunks`).
    fn decode_placed(
        &self,
        len: usize,
        chunks: &mut [Option<Vec<u8>>],
        placed: &[bool],
        out: &mut Vec<u8>,
    ) -> Result<(), CodecError> {
        if placed.iter().any(|p| *p) {
            return Err(CodecError::NotPlaceable);
        }
        self.decode(len, chunks, out)
    }
    /// Whether the slots marked alive are enough to decode: the scheme's own claim, which
    /// the loss-pattern harness checks against real decodes.
    fn can_decode(&self, alive: &[bool]) -> bool;
    /// A small set of alive slots that is enough to decode, preferring slots that need
    /// no arithmetic (data shards, whole copies). `None` if the alive slots are not enough.
    fn select(&self, alive: &[bool]) -> Option<Vec<bool>>;
    /// M: the fewest peers that can be enough, if they are the right ones.
    fn min_peers(&self) -> usize;
    /// The most peers that may be lost, whichever they are, with the data still whole.
    fn tolerates(&self) -> usize;
    /// D for large files: bytes stored ÷ segment bytes, before padding.
    fn redundancy(&self) -> f64;

    /// Bytes stored over all slots for a segment of `len` bytes.
    fn stored_len(&self, len: usize) -> usize {
        (0..self.slots()).map(|s| self.chunk_len(s, len)).sum()
    }
}

/// Where one part of a slot's chunk lives.
#[derive(Clone, Debug)]
enum Part {
    /// A range of the segment that was encoded: no copy was made.
    Input(Range<usize>),
    /// A range of one of the owned buffers (parity, padded shards, nested pieces).
    Buf(usize, Range<usize>),
}

/// The chunks of one encoded segment. Most parts borrow the input segment; only parity,
/// padding and nested pieces are owned. Read it with [`Encoded::parts`].
#[derive(Debug, Default)]
pub struct Encoded {
    buffers: Vec<Vec<u8>>,
    used: usize,
    pieces: Vec<Vec<Part>>,
    input_len: usize,
}

impl Encoded {
    /// Number of slots in the last encode.
    pub fn slots(&self) -> usize {
        self.pieces.len()
    }

    /// The byte slices that make up slot `slot`'s chunk, in order. `input` must be the
    /// segment this was encoded from.
    pub fn parts<'a>(&'a self, input: &'a [u8], slot: usize) -> Result<Vec<&'a [u8]>, CodecError> {
        if input.len() != self.input_len {
            return Err(CodecError::InputMismatch { expected: self.input_len, actual: input.len() });
        }
        let parts = self.pieces.get(slot).map(Vec::as_slice).unwrap_or_default();
        Ok(parts
            .iter()
            .map(|part| match part {
                Part::Input(r) => input.get(r.clone()).unwrap_or_default(),
                Part::Buf(b, r) => {
                    self.buffers.get(*b).and_then(|buf| buf.get(r.clone())).unwrap_or_default()
                }
            })
            .collect())
    }

    /// Slot `slot`'s chunk, copied into one vector.
    pub fn to_vec(&self, input: &[u8], slot: usize) -> Result<Vec<u8>, CodecError> {
        Ok(self.parts(input, slot)?.concat())
    }

    pub(crate) fn reset(&mut self, slots: usize, input_len: usize) {
        self.used = 0;
        self.input_len = input_len;
        self.pieces.resize_with(slots, Vec::new);
        self.pieces.truncate(slots);
        for p in &mut self.pieces {
            p.clear();
        }
    }

    /// A zeroed owned buffer of `len` bytes; returns its index.
    pub(crate) fn alloc(&mut self, len: usize) -> usize {
        self.alloc_with(len, true)
    }

    /// An owned buffer of `len` bytes holding whatever its last use left there, for a
    /// caller that overwrites every byte (Reed-Solomon parity): reused buffers are not
    /// zeroed again each segment.
    pub(crate) fn alloc_overwritten(&mut self, len: usize) -> usize {
        self.alloc_with(len, false)
    }

    fn alloc_with(&mut self, len: usize, zeroed: bool) -> usize {
        if self.used == self.buffers.len() {
            self.buffers.push(Vec::new());
        }
        let idx = self.used;
        self.used += 1;
        if let Some(buf) = self.buffers.get_mut(idx) {
            if zeroed {
                buf.clear();
            }
            buf.resize(len, 0);
        }
        idx
    }

    /// Adopts an owned buffer as-is; returns its index.
    pub(crate) fn adopt(&mut self, buf: Vec<u8>) -> usize {
        let idx = self.alloc(0);
        if let Some(slot) = self.buffers.get_mut(idx) {
            *slot = buf;
        }
        idx
    }

    pub(crate) fn buffers_mut(&mut self) -> &mut [Vec<u8>] {
        &mut self.buffers[..self.used]
    }

    pub(crate) fn push_input(&mut self, slot: usize, range: Range<usize>) {
        if let Some(p) = self.pieces.get_mut(slot) {
            p.push(Part::Input(range));
        }
    }

    pub(crate) fn push_buf(&mut self, slot: usize, buf: usize, range: Range<usize>) {
        if let Some(p) = self.pieces.get_mut(slot) {
            p.push(Part::Buf(buf, range));
        }
    }

    /// Moves `inner`'s chunks into slots `base..` of `self`, where `inner` was encoded
    /// from owned buffer `source`.
    pub(crate) fn absorb(&mut self, base: usize, source: usize, inner: &mut Encoded) {
        let offset = self.used;
        for b in 0..inner.used {
            let buf = inner.buffers.get_mut(b).map(std::mem::take).unwrap_or_default();
            self.adopt(buf);
        }
        for (i, parts) in inner.pieces.iter().enumerate() {
            for part in parts {
                match part {
                    Part::Input(r) => self.push_buf(base + i, source, r.clone()),
                    Part::Buf(b, r) => self.push_buf(base + i, offset + b, r.clone()),
                }
            }
        }
    }
}

/// Checks the shape of a decode call: one entry per slot, each present chunk the length
/// the scheme gives it. Returns the number of chunks present.
pub(crate) fn check_chunks(
    scheme: &dyn Scheme,
    len: usize,
    chunks: &[Option<Vec<u8>>],
) -> Result<usize, CodecError> {
    if chunks.len() != scheme.slots() {
        return Err(CodecError::WrongSlotCount { expected: scheme.slots(), actual: chunks.len() });
    }
    let mut present = 0;
    for (slot, chunk) in chunks.iter().enumerate() {
        if let Some(chunk) = chunk {
            let expected = scheme.chunk_len(slot, len);
            if chunk.len() != expected {
                return Err(CodecError::ChunkLength { slot, expected, actual: chunk.len() });
            }
            present += 1;
        }
    }
    Ok(present)
}

pub(crate) fn not_enough(scheme: &dyn Scheme, available: usize) -> CodecError {
    CodecError::NotEnoughPieces { needed: scheme.min_peers(), available }
}

/// Bytes per shard when `len` bytes are cut into `k` equal shards (the last padded).
pub(crate) fn shard_len(len: usize, k: usize) -> usize {
    len.div_ceil(k.max(1))
}

/// Adds shard `i` of `segment` (cut into shards of `l` bytes) to `slot`: borrowed when the
/// shard lies wholly inside the segment, else copied into a zero-padded buffer.
pub(crate) fn push_shard(out: &mut Encoded, segment: &[u8], slot: usize, i: usize, l: usize) {
    let start = i * l;
    let end = start + l;
    if end <= segment.len() {
        out.push_input(slot, start..end);
    } else {
        let buf = out.alloc(l);
        let tail = segment.get(start.min(segment.len())..).unwrap_or_default();
        if let Some(b) = out.buffers_mut().get_mut(buf) {
            b[..tail.len()].copy_from_slice(tail);
        }
        out.push_buf(slot, buf, 0..l);
    }
}
