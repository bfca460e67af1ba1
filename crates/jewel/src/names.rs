//! Signed names (see `jewel_store::names` for the record's format, key and signature):
//! sealing and opening a record's value, and the names users publish.

pub use jewel_store::names::*;

use ed25519_dalek::SigningKey;

const VALUE_CONTEXT: &[u8] = b"jewel name value v1";

/// Sealing and opening a name record's value (the record itself is the store crate's).
pub trait Sealed: Sized {
    /// A record of `value`, sealed with `value_key` and signed with the user's key.
    fn sign(
        signer: &SigningKey,
        slot: [u8; 32],
        seq: u64,
        value_key: &[u8; 32],
        value: &[u8],
    ) -> Result<Self, NameError>;
    /// The value, opened with `value_key`.
    fn open(&self, value_key: &[u8; 32]) -> Result<Vec<u8>, NameError>;
}

impl Sealed for NameRecord {
    fn sign(
        signer: &SigningKey,
        slot: [u8; 32],
        seq: u64,
        value_key: &[u8; 32],
        value: &[u8],
    ) -> Result<Self, NameError> {
        let sealed =
            crate::crypto::seal_box(value_key, VALUE_CONTEXT, value).map_err(|_| NameError::Sealed)?;
        NameRecord::signed(signer, slot, seq, sealed)
    }

    fn open(&self, value_key: &[u8; 32]) -> Result<Vec<u8>, NameError> {
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
