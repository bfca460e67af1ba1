//! The manifest: a small public block saying how a file decomposes into pieces.
//!
//! It holds the format version, the scheme, segment size and lengths, cipher and
//! compression ids, the nonce prefix, a key-check value and the piece ids in slot order.
//! It holds no key and no file name, so a verify-cap holder can check and repair the
//! file without reading it. Owns the versioned binary encoding and its validation; it
//! must not fetch or decrypt anything.
//!
//! Encoding, version 1 (integers little-endian, `varint` = unsigned LEB128):
//!
//! ```text
//! "JWLM" | version u8 = 1 | scheme-spec len u8 + utf-8 | segment_size u32 | file_len u64
//! | cipher u8 | compression u8 | nonce_prefix [19] | key_check [16]
//! | segment count varint | each stored segment length varint
//! | piece count u16 | each piece id [32]
//! ```

use jewel_codec::{build, Scheme, SchemeSpec};

use crate::crypto::{CipherId, FileKey, KEY_CHECK_LEN, NONCE_PREFIX_LEN, TAG_LEN};
use crate::id::BlockId;

const MAGIC: &[u8; 4] = b"JWLM";
/// The manifest format this build writes and reads.
pub const VERSION: u8 = 1;
/// The largest manifest accepted (a 1 TiB file in 4 MiB segments needs under 1 MiB).
pub const MAX_MANIFEST_LEN: usize = 16 << 20;
/// Segment sizes accepted, in bytes.
pub const MIN_SEGMENT_SIZE: u32 = 4 << 10;
pub const MAX_SEGMENT_SIZE: u32 = 64 << 20;
/// Bytes a stored segment has beyond its payload: a one-byte flag and the AEAD tag.
pub const SEGMENT_OVERHEAD: usize = 1 + TAG_LEN;

/// How segment payloads may be compressed. Each segment's own flag byte (inside the
/// ciphertext) says whether it was.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Compression {
    None = 0,
    Zstd = 1,
}

/// Why manifest bytes were refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ManifestError {
    #[error("not a jewel manifest (bad magic bytes)")]
    BadMagic,
    #[error("manifest format version {0} is not supported by this jewel (it reads version {VERSION}); upgrade jewel")]
    UnknownVersion(u8),
    #[error("truncated manifest: it ends at byte {at} while reading {field}")]
    Truncated { at: usize, field: &'static str },
    #[error("manifest is {0} bytes; at most {MAX_MANIFEST_LEN} are accepted")]
    TooLarge(usize),
    #[error("manifest has {0} bytes after its end")]
    TrailingBytes(usize),
    #[error("manifest names an invalid scheme: {0}")]
    Scheme(#[from] jewel_codec::SpecError),
    #[error("manifest is inconsistent: {0}")]
    Invalid(&'static str),
    #[error("manifest names unknown {what} id {id}")]
    UnknownId { what: &'static str, id: u8 },
    #[error("the cap's key does not open this file (wrong key for this manifest)")]
    WrongKey,
}

/// A file's public description.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Manifest {
    pub scheme: SchemeSpec,
    /// Plaintext bytes per segment (the last may be shorter).
    pub segment_size: u32,
    /// Plaintext length of the whole file.
    pub file_len: u64,
    pub cipher: CipherId,
    pub compression: Compression,
    pub nonce_prefix: [u8; NONCE_PREFIX_LEN],
    pub key_check: [u8; KEY_CHECK_LEN],
    /// Stored (flag + payload + tag) length of each segment, in order.
    pub segments: Vec<u32>,
    /// The piece in each slot, in slot order.
    pub pieces: Vec<BlockId>,
}

impl Manifest {
    /// Whether a block starting with `head` may be a manifest (its magic bytes): what a
    /// holder announces in the DHT (see `jewel_net::announce`). Pieces are ciphertext: one
    /// starts with these four bytes once in 2^32.
    pub fn looks_like(head: &[u8]) -> bool {
        head.starts_with(MAGIC)
    }

    /// Number of segments a file of `file_len` bytes has: at least one, so that even an
    /// empty file carries an authenticated "last segment".
    pub fn segment_count(file_len: u64, segment_size: u32) -> u64 {
        file_len.div_ceil(u64::from(segment_size.max(1))).max(1)
    }

    /// Plaintext length of segment `i`.
    pub fn plain_len(&self, i: usize) -> usize {
        let start = i as u64 * u64::from(self.segment_size);
        self.file_len.saturating_sub(start).min(u64::from(self.segment_size)) as usize
    }

    /// The scheme, built.
    pub fn build_scheme(&self) -> Result<Box<dyn Scheme>, ManifestError> {
        Ok(build(&self.scheme)?)
    }

    /// Bytes of the piece in `slot`: the sum of its chunk of every segment.
    pub fn piece_len(&self, scheme: &dyn Scheme, slot: usize) -> u64 {
        self.segments.iter().map(|s| scheme.chunk_len(slot, *s as usize) as u64).sum()
    }

    /// Bytes stored over all slots.
    pub fn stored_len(&self, scheme: &dyn Scheme) -> u64 {
        (0..scheme.slots()).map(|s| self.piece_len(scheme, s)).sum()
    }

    /// Fails with `WrongKey` unless `key` is this file's key.
    pub fn check_key(&self, key: &FileKey) -> Result<(), ManifestError> {
        if key.check_value() != self.key_check {
            return Err(ManifestError::WrongKey);
        }
        Ok(())
    }

    /// The versioned binary encoding.
    pub fn encode(&self) -> Vec<u8> {
        let spec = self.scheme.to_string();
        let mut out = Vec::with_capacity(96 + self.segments.len() * 3 + self.pieces.len() * 32);
        out.extend_from_slice(MAGIC);
        out.push(VERSION);
        out.push(spec.len() as u8);
        out.extend_from_slice(spec.as_bytes());
        out.extend_from_slice(&self.segment_size.to_le_bytes());
        out.extend_from_slice(&self.file_len.to_le_bytes());
        out.push(self.cipher as u8);
        out.push(self.compression as u8);
        out.extend_from_slice(&self.nonce_prefix);
        out.extend_from_slice(&self.key_check);
        put_varint(&mut out, self.segments.len() as u64);
        for s in &self.segments {
            put_varint(&mut out, u64::from(*s));
        }
        out.extend_from_slice(&(self.pieces.len() as u16).to_le_bytes());
        for p in &self.pieces {
            out.extend_from_slice(&p.0);
        }
        out
    }

    /// The manifest's id: the hash of its encoding.
    pub fn id(&self) -> BlockId {
        BlockId::of(&self.encode())
    }

    /// Parses and validates an encoding. Never panics, whatever the bytes.
    pub fn decode(bytes: &[u8]) -> Result<Manifest, ManifestError> {
        if bytes.len() > MAX_MANIFEST_LEN {
            return Err(ManifestError::TooLarge(bytes.len()));
        }
        let mut r = Reader { bytes, pos: 0 };
        if r.take(4, "magic")? != MAGIC {
            return Err(ManifestError::BadMagic);
        }
        let version = r.u8("version")?;
        if version != VERSION {
            return Err(ManifestError::UnknownVersion(version));
        }
        let spec_len = r.u8("scheme length")? as usize;
        let spec = std::str::from_utf8(r.take(spec_len, "scheme")?)
            .map_err(|_| ManifestError::Invalid("scheme is not UTF-8"))?;
        let scheme = SchemeSpec::parse(spec)?;
        if scheme.to_string() != spec {
            return Err(ManifestError::Invalid("scheme spec is not in canonical form"));
        }
        let segment_size = u32::from_le_bytes(r.array("segment size")?);
        let file_len = u64::from_le_bytes(r.array("file length")?);
        let cipher_id = r.u8("cipher")?;
        let cipher =
            CipherId::from_u8(cipher_id).ok_or(ManifestError::UnknownId { what: "cipher", id: cipher_id })?;
        let compression = match r.u8("compression")? {
            0 => Compression::None,
            1 => Compression::Zstd,
            id => return Err(ManifestError::UnknownId { what: "compression", id }),
        };
        let nonce_prefix = r.array("nonce prefix")?;
        let key_check = r.array("key check")?;
        if !(MIN_SEGMENT_SIZE..=MAX_SEGMENT_SIZE).contains(&segment_size) {
            return Err(ManifestError::Invalid("segment size out of range"));
        }
        let count = r.varint("segment count")?;
        if count != Manifest::segment_count(file_len, segment_size) {
            return Err(ManifestError::Invalid("segment count does not match the file length"));
        }
        // Every segment takes at least one byte, so a count past the remaining bytes is a lie.
        if count > (bytes.len() - r.pos) as u64 {
            return Err(ManifestError::Truncated { at: bytes.len(), field: "segment lengths" });
        }
        let mut segments = Vec::with_capacity(count as usize);
        for i in 0..count as usize {
            let len = r.varint("segment length")?;
            let plain =
                file_len.saturating_sub(i as u64 * u64::from(segment_size)).min(u64::from(segment_size));
            if len < SEGMENT_OVERHEAD as u64 || len > plain + SEGMENT_OVERHEAD as u64 {
                return Err(ManifestError::Invalid(
                    "a segment length is impossible for its plaintext length",
                ));
            }
            segments.push(len as u32);
        }
        let pieces_n = u16::from_le_bytes(r.array("piece count")?) as usize;
        let slots = build(&scheme)?.slots();
        if pieces_n != slots {
            return Err(ManifestError::Invalid("piece count does not match the scheme"));
        }
        let mut pieces = Vec::with_capacity(pieces_n);
        for _ in 0..pieces_n {
            pieces.push(BlockId(r.array("piece id")?));
        }
        if r.pos != bytes.len() {
            return Err(ManifestError::TrailingBytes(bytes.len() - r.pos));
        }
        Ok(Manifest {
            scheme,
            segment_size,
            file_len,
            cipher,
            compression,
            nonce_prefix,
            key_check,
            segments,
            pieces,
        })
    }
}

struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, field: &'static str) -> Result<&'a [u8], ManifestError> {
        let end = self.pos.checked_add(n).filter(|e| *e <= self.bytes.len());
        let end = end.ok_or(ManifestError::Truncated { at: self.bytes.len(), field })?;
        let s = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn u8(&mut self, field: &'static str) -> Result<u8, ManifestError> {
        Ok(self.take(1, field)?[0])
    }
    fn array<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], ManifestError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N, field)?);
        Ok(a)
    }
    fn varint(&mut self, field: &'static str) -> Result<u64, ManifestError> {
        let mut v: u64 = 0;
        for shift in (0..64).step_by(7) {
            let b = self.u8(field)?;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                if b == 0 && shift > 0 {
                    return Err(ManifestError::Invalid("non-canonical varint"));
                }
                return Ok(v);
            }
        }
        Err(ManifestError::Invalid("varint longer than 64 bits"))
    }
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    pub(crate) fn sample(file_len: u64) -> Manifest {
        let segment_size = 4096u32;
        let count = Manifest::segment_count(file_len, segment_size);
        let key = FileKey([1u8; 32]);
        Manifest {
            scheme: SchemeSpec::parse("jewels:2/3").unwrap(),
            segment_size,
            file_len,
            cipher: CipherId::XChaCha20Poly1305,
            compression: Compression::Zstd,
            nonce_prefix: [3u8; NONCE_PREFIX_LEN],
            key_check: key.check_value(),
            segments: (0..count as usize)
                .map(|i| {
                    let plain = file_len.saturating_sub(i as u64 * 4096).min(4096);
                    (plain as usize + SEGMENT_OVERHEAD) as u32
                })
                .collect(),
            pieces: (0..3u8).map(|i| BlockId::of(&[i])).collect(),
        }
    }

    #[test]
    fn round_trip_and_id() {
        for len in [0, 1, 4096, 4097, 100_000] {
            let m = sample(len);
            let bytes = m.encode();
            assert_eq!(Manifest::decode(&bytes).unwrap(), m);
            assert_eq!(m.id(), BlockId::of(&bytes));
        }
    }

    #[test]
    fn bad_bytes_get_their_own_errors() {
        let bytes = sample(10_000).encode();
        for cut in [0, 3, 5, 20, bytes.len() - 1] {
            assert!(
                matches!(Manifest::decode(&bytes[..cut]), Err(ManifestError::Truncated { .. })),
                "cut at {cut}: {:?}",
                Manifest::decode(&bytes[..cut])
            );
        }
        let mut v = bytes.clone();
        v[4] = 9;
        assert_eq!(Manifest::decode(&v), Err(ManifestError::UnknownVersion(9)));
        let mut v = bytes.clone();
        v[0] = b'X';
        assert_eq!(Manifest::decode(&v), Err(ManifestError::BadMagic));
        let mut v = bytes.clone();
        v.push(0);
        assert_eq!(Manifest::decode(&v), Err(ManifestError::TrailingBytes(1)));
        let m = sample(10);
        assert!(m.check_key(&FileKey([1u8; 32])).is_ok());
        assert_eq!(m.check_key(&FileKey([2u8; 32])), Err(ManifestError::WrongKey));
    }

    proptest! {
        #[test]
        fn decode_never_panics(bytes: Vec<u8>) {
            let _ = Manifest::decode(&bytes);
        }

        #[test]
        fn mutated_manifests_never_panic(len in 0u64..50_000, pos: usize, byte: u8) {
            let mut bytes = sample(len).encode();
            let i = pos % bytes.len();
            bytes[i] = byte;
            if let Ok(m) = Manifest::decode(&bytes) {
                prop_assert_eq!(m.encode(), bytes);
            }
        }
    }
}
