//! Signed names' records (their format, key and signature; sealing and opening the value
//! are the engine's, `jewel::names`): small mutable records a user signs, stored in the DHT under a key that
//! derives from the user's public key and a slot, with a sequence number (a higher one
//! replaces a lower one) and an encrypted value.
//!
//! Slots: each device's index head ([`device_slot`]), the user's latest head
//! ([`LATEST_SLOT`]), and names the user publishes for others ([`label_slot`]). Anyone can
//! check a record's signature and key; only who holds the value key can read the value
//! (the user's devices for heads; whoever is given the name for a published name).
//!
//! Format (version 1), at most [`MAX_RECORD`] bytes:
//! `"JNR1" ‖ user (32) ‖ slot (32) ‖ seq (u64 BE) ‖ len (u16 BE) ‖ sealed value ‖ sig (64)`,
//! the ed25519 signature covering everything before it.

use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};

/// The largest record, in bytes.
pub const MAX_RECORD: usize = 1024;
const MAGIC: &[u8; 4] = b"JNR1";
const HEADER: usize = 4 + 32 + 32 + 8 + 2;
/// The DHT key's prefix.
pub const KEY_PREFIX: &[u8] = b"/jewel/name/";
/// The slot of the user's latest index head (any device's).
pub const LATEST_SLOT: [u8; 32] = [0; 32];

/// Why a record is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NameError {
    #[error("name record: {0}")]
    Malformed(&'static str),
    #[error("name record of {0} bytes; the limit is {MAX_RECORD}")]
    TooLarge(usize),
    #[error("name record's signature does not verify (forged or damaged)")]
    Signature,
    #[error("name record stored under another key than its own")]
    WrongKey,
    #[error("name record's value does not open with this key")]
    Sealed,
    #[error("malformed name `{0}`: a name is jewel:n1:<user>/<label>")]
    BadName(String),
}

/// A signed, sealed record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NameRecord {
    pub user: [u8; 32],
    pub slot: [u8; 32],
    pub seq: u64,
    /// The value, sealed (by the engine: `jewel::crypto::seal_box`).
    pub sealed: Vec<u8>,
    pub sig: [u8; 64],
}

/// The slot of one device's head.
pub fn device_slot(device: u64) -> [u8; 32] {
    blake3::derive_key("jewel 2026-12-01 device head slot", &device.to_be_bytes())
}

/// The slot of a published name.
pub fn label_slot(label: &str) -> [u8; 32] {
    blake3::derive_key("jewel 2026-12-01 name label slot", label.as_bytes())
}

/// The key that seals a published name's value: anyone who knows the name derives it.
pub fn label_key(user: &[u8; 32], label: &str) -> [u8; 32] {
    let mut m = user.to_vec();
    m.extend_from_slice(label.as_bytes());
    blake3::derive_key("jewel 2026-12-01 name value key", &m)
}

/// The DHT key of `user`'s record in `slot`.
pub fn key(user: &[u8; 32], slot: &[u8; 32]) -> Vec<u8> {
    let mut h = blake3::Hasher::new();
    h.update(user);
    h.update(slot);
    let mut k = KEY_PREFIX.to_vec();
    k.extend_from_slice(h.finalize().as_bytes());
    k
}

impl NameRecord {
    /// A record of the already sealed value `sealed`, signed with the user's key (sealing
    /// is the engine's: `jewel::names::Sealed::sign`).
    pub fn signed(
        signer: &SigningKey,
        slot: [u8; 32],
        seq: u64,
        sealed: Vec<u8>,
    ) -> Result<NameRecord, NameError> {
        let mut r = NameRecord { user: signer.verifying_key().to_bytes(), slot, seq, sealed, sig: [0; 64] };
        let body = r.body()?;
        r.sig = signer.sign(&body).to_bytes();
        Ok(r)
    }

    fn body(&self) -> Result<Vec<u8>, NameError> {
        let len = u16::try_from(self.sealed.len()).map_err(|_| NameError::TooLarge(self.sealed.len()))?;
        let mut b = Vec::with_capacity(HEADER + self.sealed.len() + 64);
        b.extend_from_slice(MAGIC);
        b.extend_from_slice(&self.user);
        b.extend_from_slice(&self.slot);
        b.extend_from_slice(&self.seq.to_be_bytes());
        b.extend_from_slice(&len.to_be_bytes());
        b.extend_from_slice(&self.sealed);
        Ok(b)
    }

    pub fn encode(&self) -> Result<Vec<u8>, NameError> {
        let mut b = self.body()?;
        b.extend_from_slice(&self.sig);
        if b.len() > MAX_RECORD {
            return Err(NameError::TooLarge(b.len()));
        }
        Ok(b)
    }

    /// Decodes and verifies a record: its format, its size, and its signature.
    pub fn decode(bytes: &[u8]) -> Result<NameRecord, NameError> {
        if bytes.len() > MAX_RECORD {
            return Err(NameError::TooLarge(bytes.len()));
        }
        if bytes.len() < HEADER + 64 || &bytes[..4] != MAGIC {
            return Err(NameError::Malformed("not a name record"));
        }
        let arr32 = |at: usize| -> [u8; 32] {
            let mut a = [0u8; 32];
            a.copy_from_slice(&bytes[at..at + 32]);
            a
        };
        let mut seq = [0u8; 8];
        seq.copy_from_slice(&bytes[68..76]);
        let len = usize::from(u16::from_be_bytes([bytes[76], bytes[77]]));
        if bytes.len() != HEADER + len + 64 {
            return Err(NameError::Malformed("its length does not add up"));
        }
        let mut sig = [0u8; 64];
        sig.copy_from_slice(&bytes[HEADER + len..]);
        let r = NameRecord {
            user: arr32(4),
            slot: arr32(36),
            seq: u64::from_be_bytes(seq),
            sealed: bytes[HEADER..HEADER + len].to_vec(),
            sig,
        };
        let vk = VerifyingKey::from_bytes(&r.user).map_err(|_| NameError::Signature)?;
        vk.verify(&bytes[..HEADER + len], &Signature::from_bytes(&r.sig))
            .map_err(|_| NameError::Signature)?;
        Ok(r)
    }

    /// Decodes and verifies a record found under DHT key `key`.
    pub fn decode_at(key_bytes: &[u8], bytes: &[u8]) -> Result<NameRecord, NameError> {
        let r = NameRecord::decode(bytes)?;
        if key(&r.user, &r.slot) != key_bytes {
            return Err(NameError::WrongKey);
        }
        Ok(r)
    }
}
