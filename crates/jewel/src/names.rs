//! Signed names: small mutable records a user signs, stored in the DHT under a key that
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
const VALUE_CONTEXT: &[u8] = b"jewel name value v1";

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
    /// The value, sealed (see [`crate::crypto::seal_box`]).
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
    /// A record of `value`, sealed with `value_key` and signed with the user's key.
    pub fn sign(
        signer: &SigningKey,
        slot: [u8; 32],
        seq: u64,
        value_key: &[u8; 32],
        value: &[u8],
    ) -> Result<NameRecord, NameError> {
        let sealed =
            crate::crypto::seal_box(value_key, VALUE_CONTEXT, value).map_err(|_| NameError::Sealed)?;
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

    /// The value, opened with `value_key`.
    pub fn open(&self, value_key: &[u8; 32]) -> Result<Vec<u8>, NameError> {
        crate::crypto::open_box(value_key, VALUE_CONTEXT, &self.sealed).map_err(|_| NameError::Sealed)
    }
}

/// A published name: `jewel:n1:<user base32>/<label>`.
pub fn format_name(user: &[u8; 32], label: &str) -> String {
    format!("jewel:n1:{}/{label}", crate::caps::base32_encode(user))
}

/// The user and label of a published name.
pub fn parse_name(name: &str) -> Result<([u8; 32], String), NameError> {
    let bad = || NameError::BadName(name.to_string());
    let rest = name.trim().strip_prefix("jewel:n1:").ok_or_else(bad)?;
    let (user, label) = rest.split_once('/').ok_or_else(bad)?;
    let (bytes, _) = crate::caps::base32_decode(user).map_err(|_| bad())?;
    let user: [u8; 32] = bytes.try_into().map_err(|_| bad())?;
    if label.is_empty() || label.len() > 128 || label.contains(['/', '\0']) {
        return Err(bad());
    }
    Ok((user, label.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signer() -> SigningKey {
        SigningKey::from_bytes(&[7; 32])
    }

    #[test]
    fn a_record_round_trips_and_opens_only_with_its_key() {
        let r = NameRecord::sign(&signer(), device_slot(3), 42, &[1; 32], b"jewel:r1:abc").unwrap();
        let bytes = r.encode().unwrap();
        assert!(bytes.len() <= MAX_RECORD);
        let back = NameRecord::decode_at(&key(&r.user, &r.slot), &bytes).unwrap();
        assert_eq!(back, r);
        assert_eq!(back.open(&[1; 32]).unwrap(), b"jewel:r1:abc");
        assert_eq!(back.open(&[2; 32]), Err(NameError::Sealed));
        assert_eq!(NameRecord::decode_at(&key(&r.user, &LATEST_SLOT), &bytes), Err(NameError::WrongKey));
    }

    #[test]
    fn a_forged_or_altered_record_is_refused() {
        let r = NameRecord::sign(&signer(), LATEST_SLOT, 1, &[1; 32], b"v").unwrap();
        let mut bytes = r.encode().unwrap();
        // A higher sequence number, not signed by the user.
        bytes[75] ^= 0x10;
        assert_eq!(NameRecord::decode(&bytes), Err(NameError::Signature));
        // Signed by someone else, claiming the user.
        let mut forged =
            NameRecord::sign(&SigningKey::from_bytes(&[8; 32]), LATEST_SLOT, 9, &[1; 32], b"v").unwrap();
        forged.user = r.user;
        assert_eq!(NameRecord::decode(&forged.encode().unwrap()), Err(NameError::Signature));
        assert!(matches!(NameRecord::decode(&[0u8; 2000]), Err(NameError::TooLarge(2000))));
        assert!(NameRecord::sign(&signer(), LATEST_SLOT, 1, &[1; 32], &[0; 1000]).unwrap().encode().is_err());
    }

    #[test]
    fn names_parse() {
        let n = format_name(&[5; 32], "site");
        assert_eq!(parse_name(&n).unwrap(), ([5; 32], "site".to_string()));
        assert!(parse_name("jewel:n1:abc").is_err());
        assert!(parse_name("jewel:r1:x/y").is_err());
    }
}
