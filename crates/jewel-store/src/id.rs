//! Block ids: the BLAKE3-256 hash of a block's bytes.
//!
//! Owns the id type and its hex form; it must not read or store anything.

use std::fmt;
use std::str::FromStr;

/// The BLAKE3-256 hash naming a block. Same bytes, same id.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BlockId(pub [u8; 32]);

/// Why a hex block id was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("a block id is 64 hex digits; got {0} characters")]
    Length(usize),
    #[error("a block id is hex; `{0}` is not a hex digit")]
    Digit(char),
}

impl BlockId {
    /// The id of `data`.
    pub fn of(data: &[u8]) -> Self {
        BlockId(*blake3::hash(data).as_bytes())
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The first 8 hex digits, for logs and tables.
    pub fn short(&self) -> String {
        self.to_string()[..8].to_string()
    }
}

impl From<blake3::Hash> for BlockId {
    fn from(h: blake3::Hash) -> Self {
        BlockId(*h.as_bytes())
    }
}

impl From<BlockId> for blake3::Hash {
    fn from(id: BlockId) -> Self {
        blake3::Hash::from(id.0)
    }
}

impl fmt::Display for BlockId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for BlockId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BlockId({})", self.short())
    }
}

impl FromStr for BlockId {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Some(c) = s.chars().find(|c| !c.is_ascii_hexdigit()) {
            return Err(IdError::Digit(c));
        }
        if s.len() != 64 {
            return Err(IdError::Length(s.len()));
        }
        let mut out = [0u8; 32];
        for (o, pair) in out.iter_mut().zip(s.as_bytes().chunks_exact(2)) {
            *o = hex_digit(pair[0]) << 4 | hex_digit(pair[1]);
        }
        Ok(BlockId(out))
    }
}

fn hex_digit(b: u8) -> u8 {
    (b as char).to_digit(16).unwrap_or(0) as u8
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip() {
        let id = BlockId::of(b"hello");
        assert_eq!(id.to_string().parse::<BlockId>().unwrap(), id);
        assert_eq!(id.to_string(), blake3::hash(b"hello").to_hex().to_string());
        assert!(matches!("ab".parse::<BlockId>(), Err(IdError::Length(2))));
        assert!(matches!("é".repeat(32).parse::<BlockId>(), Err(IdError::Digit('é'))));
        assert!(matches!("g".repeat(64).parse::<BlockId>(), Err(IdError::Digit('g'))));
    }
}
