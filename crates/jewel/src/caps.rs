//! Capabilities: the printable strings that grant access to a file.
//!
//! A read cap (`jewel:r1:…`) holds the manifest id and the file key; a verify cap
//! (`jewel:v1:…`) holds the manifest id only, enough to check and repair a file but not
//! to read it. A slice cap (`jewel:p1:…`) names a file packed with others into one stored
//! file (a pack): the pack's read cap, where the file starts in it, its length and its
//! content's BLAKE3 hash; it opens the whole pack, so it is the owner's, not one to hand
//! out (sharing a packed file stores a copy of its own). Each carries a 4-byte checksum so
//! a mistyped cap is caught as such. Owns the cap grammar and its base32 form; it must not
//! fetch or decrypt anything.

use std::fmt;
use std::str::FromStr;

use crate::crypto::FileKey;
use crate::id::BlockId;

const PREFIX: &str = "jewel:";
const CHECK_LEN: usize = 4;
/// The longest cap string accepted (a read cap is 118 characters, a slice cap 195).
pub const MAX_CAP_LEN: usize = 256;

/// Why a cap string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CapError {
    #[error("not a jewel cap: it must start with `jewel:`")]
    NotACap,
    #[error("cap is {0} characters long; a cap is at most {MAX_CAP_LEN}")]
    TooLong(usize),
    #[error(
        "malformed cap: expected `jewel:r1:…` (read), `jewel:p1:…` (a packed file) or `jewel:v1:…` (verify)"
    )]
    Malformed,
    #[error("unknown cap kind `{0}`; `r` is a read cap, `p` a packed file's, `v` a verify cap")]
    UnknownKind(String),
    #[error("cap version {0} is not supported by this jewel (it knows version 1); upgrade jewel")]
    UnknownVersion(String),
    #[error("malformed cap: `{ch}` at position {pos} is not a base32 character (a-z, 2-7)")]
    BadCharacter { pos: usize, ch: char },
    #[error("truncated or padded cap: {actual} characters after its prefix, a {kind} cap has {expected}")]
    WrongLength { kind: &'static str, expected: usize, actual: usize },
    #[error("cap checksum mismatch: the cap was mistyped or cut short")]
    Checksum,
    #[error("this is a verify cap; reading the file needs its read cap")]
    NotReadCap,
    #[error("this cap names a file packed with others; it is read as that file, not as a whole file")]
    Packed,
    #[error("malformed cap: a packed file's place in its pack ends past 2^64 bytes")]
    SliceBounds,
}

/// A read capability: the manifest id and the key.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct ReadCap {
    pub manifest: BlockId,
    pub key: FileKey,
}

/// A verify capability: the manifest id only.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct VerifyCap {
    pub manifest: BlockId,
}

/// A slice capability: a file stored inside a pack, `len` bytes from `offset` of the
/// plaintext of the pack `pack` reads, whose BLAKE3 hash is `hash`.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct SliceCap {
    pub pack: ReadCap,
    pub offset: u64,
    pub len: u64,
    pub hash: [u8; 32],
}

impl SliceCap {
    /// Where the file lies in its pack's plaintext (end exclusive).
    pub fn range(&self) -> (u64, u64) {
        (self.offset, self.offset + self.len)
    }
}

/// Any kind of cap.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum Cap {
    Read(ReadCap),
    Verify(VerifyCap),
    Slice(SliceCap),
}

impl ReadCap {
    /// The verify cap of the same file.
    pub fn verify_cap(&self) -> VerifyCap {
        VerifyCap { manifest: self.manifest }
    }
}

impl Cap {
    /// The manifest of the stored file: for a slice, its pack's.
    pub fn manifest(&self) -> BlockId {
        match self {
            Cap::Read(r) => r.manifest,
            Cap::Verify(v) => v.manifest,
            Cap::Slice(s) => s.pack.manifest,
        }
    }

    /// The stored file's own cap: a slice's pack, else itself.
    pub fn stored(&self) -> Cap {
        match self {
            Cap::Slice(s) => Cap::Read(s.pack.clone()),
            other => other.clone(),
        }
    }

    pub fn parse(text: &str) -> Result<Cap, CapError> {
        let text = text.trim();
        if text.len() > MAX_CAP_LEN {
            return Err(CapError::TooLong(text.len()));
        }
        let rest = text.strip_prefix(PREFIX).ok_or(CapError::NotACap)?;
        let (tag, body) = rest.split_once(':').ok_or(CapError::Malformed)?;
        let mut chars = tag.chars();
        let kind = chars.next().ok_or(CapError::Malformed)?;
        let version = chars.as_str();
        let (kind, expected) = match kind {
            'r' => ("read", 64),
            'v' => ("verify", 32),
            'p' => ("packed file", SLICE_LEN),
            other => return Err(CapError::UnknownKind(other.to_string())),
        };
        if version != "1" {
            return Err(CapError::UnknownVersion(version.chars().take(16).collect()));
        }
        let offset = PREFIX.len() + tag.len() + 1;
        let (bytes, canonical) =
            base32_decode(body).map_err(|(pos, ch)| CapError::BadCharacter { pos: offset + pos, ch })?;
        if bytes.len() != expected + CHECK_LEN || !canonical {
            // Counted in the characters the user sees: one character too many still decodes
            // to the right number of bytes, so a byte count would tell them nothing.
            let chars = ((expected + CHECK_LEN) * 8).div_ceil(5);
            return Err(CapError::WrongLength { kind, expected: chars, actual: body.chars().count() });
        }
        let (payload, check) = bytes.split_at(expected);
        if checksum(tag, payload) != check {
            return Err(CapError::Checksum);
        }
        let mut manifest = [0u8; 32];
        manifest.copy_from_slice(&payload[..32]);
        let manifest = BlockId(manifest);
        if expected == 32 {
            return Ok(Cap::Verify(VerifyCap { manifest }));
        }
        let mut key = [0u8; 32];
        key.copy_from_slice(&payload[32..64]);
        let read = ReadCap { manifest, key: FileKey(key) };
        if expected == 64 {
            return Ok(Cap::Read(read));
        }
        let word = |at: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&payload[at..at + 8]);
            u64::from_be_bytes(b)
        };
        let (offset, len) = (word(64), word(72));
        if offset.checked_add(len).is_none() {
            return Err(CapError::SliceBounds);
        }
        let mut hash = [0u8; 32];
        hash.copy_from_slice(&payload[80..112]);
        Ok(Cap::Slice(SliceCap { pack: read, offset, len, hash }))
    }
}

/// A slice cap's payload: the pack's manifest id and key, offset, length, hash.
const SLICE_LEN: usize = 32 + 32 + 8 + 8 + 32;

fn checksum(tag: &str, payload: &[u8]) -> [u8; CHECK_LEN] {
    let mut h = blake3::Hasher::new();
    h.update(b"jewel cap ");
    h.update(tag.as_bytes());
    h.update(payload);
    let mut out = [0u8; CHECK_LEN];
    out.copy_from_slice(&h.finalize().as_bytes()[..CHECK_LEN]);
    out
}

fn format_cap(f: &mut fmt::Formatter<'_>, tag: &str, payload: &[u8]) -> fmt::Result {
    let mut bytes = payload.to_vec();
    bytes.extend_from_slice(&checksum(tag, payload));
    write!(f, "{PREFIX}{tag}:{}", base32_encode(&bytes))
}

impl fmt::Display for ReadCap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut payload = self.manifest.0.to_vec();
        payload.extend_from_slice(&self.key.0);
        format_cap(f, "r1", &payload)
    }
}

impl fmt::Display for VerifyCap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        format_cap(f, "v1", &self.manifest.0)
    }
}

impl fmt::Display for SliceCap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut payload = self.pack.manifest.0.to_vec();
        payload.extend_from_slice(&self.pack.key.0);
        payload.extend_from_slice(&self.offset.to_be_bytes());
        payload.extend_from_slice(&self.len.to_be_bytes());
        payload.extend_from_slice(&self.hash);
        format_cap(f, "p1", &payload)
    }
}

impl fmt::Display for Cap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Cap::Read(r) => r.fmt(f),
            Cap::Verify(v) => v.fmt(f),
            Cap::Slice(s) => s.fmt(f),
        }
    }
}

impl FromStr for Cap {
    type Err = CapError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Cap::parse(s)
    }
}

impl FromStr for ReadCap {
    type Err = CapError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match Cap::parse(s)? {
            Cap::Read(r) => Ok(r),
            Cap::Verify(_) => Err(CapError::NotReadCap),
            Cap::Slice(_) => Err(CapError::Packed),
        }
    }
}

impl FromStr for VerifyCap {
    type Err = CapError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match Cap::parse(s)? {
            Cap::Read(r) => Ok(r.verify_cap()),
            Cap::Verify(v) => Ok(v),
            Cap::Slice(s) => Ok(s.pack.verify_cap()),
        }
    }
}

const ALPHABET: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";

/// RFC 4648 base32, lowercase, without padding.
pub(crate) fn base32_encode(data: &[u8]) -> String {
    let mut out = String::with_capacity(data.len().div_ceil(5) * 8);
    let mut acc: u32 = 0;
    let mut bits = 0;
    for &b in data {
        acc = (acc << 8) | u32::from(b);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(ALPHABET[((acc >> bits) & 31) as usize] as char);
        }
    }
    if bits > 0 {
        out.push(ALPHABET[((acc << (5 - bits)) & 31) as usize] as char);
    }
    out
}

/// Decodes base32 (either case); on error returns the offending position and character.
/// Also says whether the trailing pad bits were zero (the one canonical spelling).
pub(crate) fn base32_decode(text: &str) -> Result<(Vec<u8>, bool), (usize, char)> {
    let mut out = Vec::with_capacity(text.len() * 5 / 8);
    let mut acc: u32 = 0;
    let mut bits = 0;
    for (pos, ch) in text.chars().enumerate() {
        let v = match ch {
            'a'..='z' => ch as u32 - 'a' as u32,
            'A'..='Z' => ch as u32 - 'A' as u32,
            '2'..='7' => ch as u32 - '2' as u32 + 26,
            _ => return Err((pos, ch)),
        };
        acc = (acc << 5) | v;
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
        acc &= (1 << bits) - 1;
    }
    Ok((out, acc == 0 && bits < 5))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample() -> ReadCap {
        ReadCap { manifest: BlockId::of(b"manifest"), key: FileKey([9u8; 32]) }
    }

    #[test]
    fn read_and_verify_caps_round_trip() {
        let r = sample();
        let text = r.to_string();
        assert!(text.starts_with("jewel:r1:"));
        assert_eq!(text.parse::<ReadCap>().unwrap(), r);
        let v = r.verify_cap();
        let vt = v.to_string();
        assert!(vt.starts_with("jewel:v1:"));
        assert_eq!(vt.parse::<VerifyCap>().unwrap(), v);
        assert_eq!(Cap::parse(&vt).unwrap(), Cap::Verify(v));
        assert_eq!(text.to_uppercase().replace("JEWEL:R1:", "jewel:r1:").parse::<ReadCap>().unwrap(), r);
    }

    #[test]
    fn each_malformation_has_its_own_error() {
        let text = sample().to_string();
        assert_eq!(Cap::parse("hello"), Err(CapError::NotACap));
        assert_eq!(Cap::parse("jewel:"), Err(CapError::Malformed));
        assert_eq!(Cap::parse("jewel:x1:abc"), Err(CapError::UnknownKind("x".into())));
        assert_eq!(Cap::parse("jewel:r2:abc"), Err(CapError::UnknownVersion("2".into())));
        assert!(matches!(Cap::parse("jewel:r1:ab1c"), Err(CapError::BadCharacter { ch: '1', pos: 11 })));
        let truncated = &text[..text.len() - 10];
        assert!(matches!(Cap::parse(truncated), Err(CapError::WrongLength { .. })));
        // One character too many: the message gives the real lengths.
        let good = ReadCap { manifest: BlockId([1; 32]), key: FileKey([2; 32]) }.to_string();
        let long = format!("{good}a");
        let e = Cap::parse(&long).unwrap_err().to_string();
        let body = good.len() - "jewel:r1:".len();
        assert!(
            e.contains(&format!("{} characters after its prefix, a read cap has {body}", body + 1)),
            "{e}"
        );
        // Change one character of the key part: the checksum catches it.
        let mut typo: Vec<char> = text.chars().collect();
        let i = 80;
        typo[i] = if typo[i] == 'a' { 'b' } else { 'a' };
        let typo: String = typo.into_iter().collect();
        assert_eq!(Cap::parse(&typo), Err(CapError::Checksum));
        assert_eq!(sample().verify_cap().to_string().parse::<ReadCap>(), Err(CapError::NotReadCap));
        assert!(matches!(Cap::parse(&"a".repeat(300)), Err(CapError::TooLong(300))));
    }

    #[test]
    fn slice_caps_round_trip_and_name_their_pack() {
        let s = SliceCap { pack: sample(), offset: 4096, len: 10, hash: [3; 32] };
        let text = s.to_string();
        assert!(text.starts_with("jewel:p1:") && text.len() <= MAX_CAP_LEN, "{text}");
        assert_eq!(Cap::parse(&text), Ok(Cap::Slice(s.clone())));
        assert_eq!(Cap::parse(&text).unwrap().manifest(), sample().manifest);
        assert_eq!(Cap::parse(&text).unwrap().stored(), Cap::Read(sample()));
        assert_eq!(text.parse::<ReadCap>(), Err(CapError::Packed));
        assert_eq!(text.parse::<VerifyCap>(), Ok(sample().verify_cap()));
        assert_eq!(s.range(), (4096, 4106));
        // A place past 2^64 is refused, not wrapped.
        let far = SliceCap { offset: u64::MAX, len: 2, ..s };
        assert_eq!(Cap::parse(&far.to_string()), Err(CapError::SliceBounds));
    }

    proptest! {
        #[test]
        fn any_cap_round_trips(id: [u8; 32], key: [u8; 32]) {
            let r = ReadCap { manifest: BlockId(id), key: FileKey(key) };
            prop_assert_eq!(r.to_string().parse::<ReadCap>().unwrap(), r.clone());
            let v = r.verify_cap();
            prop_assert_eq!(v.to_string().parse::<VerifyCap>().unwrap(), v);
        }

        #[test]
        fn base32_round_trips(data: Vec<u8>) {
            prop_assert_eq!(base32_decode(&base32_encode(&data)).unwrap(), (data, true));
        }

        #[test]
        fn parse_never_panics(s: String) {
            let _ = Cap::parse(&s);
        }
    }
}
