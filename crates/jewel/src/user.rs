//! A user's identity: one 24-word recovery phrase (BIP-39, English list), from which every
//! key of the user derives, so the phrase alone brings everything back on a new device.
//!
//! The phrase encodes 32 bytes of entropy (and a checksum that catches a mistyped word).
//! Keys come from the BIP-39 seed of the phrase (no passphrase) through BLAKE3
//! `derive_key`, one context per key: an ed25519 signing key (its public half is the
//! user's id, `jewel:u1:…`) and a 32-byte index key. What a device keeps is the entropy
//! ([`UserKey::secret`]); no part of it is ever sent to a peer.

use ed25519_dalek::SigningKey;

/// Why a phrase or a stored secret is not a user key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum UserError {
    #[error("the recovery phrase has {0} words; a Jewel phrase has 24")]
    WordCount(usize),
    #[error("word {position} of the recovery phrase, `{word}`, is not in the BIP-39 English list")]
    UnknownWord { position: usize, word: String },
    #[error("the recovery phrase's checksum does not match: a word is mistyped, or two are swapped")]
    Checksum,
    #[error("the stored user secret is {0} bytes; it has 32")]
    SecretLength(usize),
    #[error("no random numbers: {0}")]
    Random(String),
}

/// Words in a Jewel recovery phrase.
pub const PHRASE_WORDS: usize = 24;
const SIGNING_CONTEXT: &str = "jewel 2026-12-01 user signing key";
const INDEX_CONTEXT: &str = "jewel 2026-12-01 user index key";

/// A user's keys, from their phrase.
#[derive(Clone)]
pub struct UserKey {
    entropy: [u8; 32],
    signing: SigningKey,
    index: [u8; 32],
}

impl std::fmt::Debug for UserKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "UserKey({})", self.user_id())
    }
}

impl UserKey {
    /// A new user key from fresh randomness.
    pub fn generate() -> Result<UserKey, UserError> {
        let mut entropy = [0u8; 32];
        getrandom::getrandom(&mut entropy).map_err(|e| UserError::Random(e.to_string()))?;
        Ok(UserKey::from_entropy(entropy))
    }

    /// The key a phrase names. Words may be separated by any white space, in any case, and
    /// numbered as `jewel id init` prints them ("1. opera 2. anger …": the numbers are
    /// skipped; no BIP-39 word has a digit).
    pub fn from_phrase(phrase: &str) -> Result<UserKey, UserError> {
        let numbering = |w: &&str| w.trim_end_matches(['.', ')']).chars().all(|c| c.is_ascii_digit());
        let words: Vec<String> =
            phrase.split_whitespace().filter(|w| !numbering(w)).map(str::to_lowercase).collect();
        if words.len() != PHRASE_WORDS {
            return Err(UserError::WordCount(words.len()));
        }
        let english = bip39::Language::English;
        if let Some((i, w)) = words.iter().enumerate().find(|(_, w)| english.find_word(w).is_none()) {
            return Err(UserError::UnknownWord { position: i + 1, word: w.clone() });
        }
        let mnemonic =
            bip39::Mnemonic::parse_in_normalized(english, &words.join(" ")).map_err(|e| match e {
                bip39::Error::InvalidChecksum => UserError::Checksum,
                bip39::Error::BadWordCount(n) => UserError::WordCount(n),
                bip39::Error::UnknownWord(i) => UserError::UnknownWord {
                    position: i + 1,
                    word: words.get(i).cloned().unwrap_or_default(),
                },
                _ => UserError::Checksum,
            })?;
        let bytes = mnemonic.to_entropy();
        let entropy: [u8; 32] =
            bytes.as_slice().try_into().map_err(|_| UserError::SecretLength(bytes.len()))?;
        Ok(UserKey::from_entropy(entropy))
    }

    /// The key a stored secret (see [`UserKey::secret`]) holds.
    pub fn from_secret(secret: &[u8]) -> Result<UserKey, UserError> {
        let entropy: [u8; 32] = secret.try_into().map_err(|_| UserError::SecretLength(secret.len()))?;
        Ok(UserKey::from_entropy(entropy))
    }

    fn from_entropy(entropy: [u8; 32]) -> UserKey {
        // 32 bytes are always a valid BIP-39 entropy length.
        let seed = bip39::Mnemonic::from_entropy_in(bip39::Language::English, &entropy)
            .map(|m| m.to_seed_normalized(""))
            .unwrap_or([0; 64]);
        let signing = SigningKey::from_bytes(&blake3::derive_key(SIGNING_CONTEXT, &seed));
        let index = blake3::derive_key(INDEX_CONTEXT, &seed);
        UserKey { entropy, signing, index }
    }

    /// The 24 words (to be shown once, and written down by the user).
    pub fn phrase(&self) -> String {
        bip39::Mnemonic::from_entropy_in(bip39::Language::English, &self.entropy)
            .map(|m| m.words().collect::<Vec<_>>().join(" "))
            .unwrap_or_default()
    }

    /// What a device keeps to be this user: 32 bytes, secret.
    pub fn secret(&self) -> [u8; 32] {
        self.entropy
    }

    /// The user's public id: `jewel:u1:` and the base32 of the ed25519 public key.
    pub fn user_id(&self) -> String {
        format!("jewel:u1:{}", crate::caps::base32_encode(self.signing.verifying_key().as_bytes()))
    }

    /// The key that signs the user's records.
    pub fn signing_key(&self) -> &SigningKey {
        &self.signing
    }

    /// The key that encrypts the user's private index.
    pub fn index_key(&self) -> [u8; 32] {
        self.index
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_phrase_brings_back_the_same_keys() {
        let key = UserKey::generate().unwrap();
        let phrase = key.phrase();
        assert_eq!(phrase.split(' ').count(), 24);
        let again =
            UserKey::from_phrase(&format!("  {}\n", phrase.to_uppercase().replace(' ', "\t "))).unwrap();
        assert_eq!(again.user_id(), key.user_id());
        assert_eq!(again.index_key(), key.index_key());
        assert_eq!(UserKey::from_secret(&key.secret()).unwrap().user_id(), key.user_id());
        // Copied with the numbers `jewel id init` prints.
        let numbered: Vec<String> =
            phrase.split(' ').enumerate().map(|(i, w)| format!("{}. {w}", i + 1)).collect();
        assert_eq!(UserKey::from_phrase(&numbered.join("   ")).unwrap().user_id(), key.user_id());
        // The keys are distinct from each other and from another user's.
        assert_ne!(key.index_key(), key.signing_key().to_bytes());
        assert_ne!(UserKey::generate().unwrap().user_id(), key.user_id());
        assert!(key.user_id().starts_with("jewel:u1:"));
    }

    #[test]
    fn known_vector_keeps_its_keys() {
        // The BIP-39 test vector of 32 zero bytes: "abandon" × 23, then "art".
        let key = UserKey::from_phrase(&format!("{} art", ["abandon"; 23].join(" "))).unwrap();
        assert_eq!(key.secret(), [0u8; 32]);
        let seed = bip39::Mnemonic::from_entropy(&[0u8; 32]).unwrap().to_seed_normalized("");
        assert_eq!(key.index_key(), blake3::derive_key(INDEX_CONTEXT, &seed));
    }

    #[test]
    fn mistakes_are_named() {
        let phrase = UserKey::generate().unwrap().phrase();
        let words: Vec<&str> = phrase.split(' ').collect();
        assert_eq!(UserKey::from_phrase(&words[..23].join(" ")).unwrap_err(), UserError::WordCount(23));
        let mut typo = words.clone();
        typo[4] = "abandonn";
        assert_eq!(
            UserKey::from_phrase(&typo.join(" ")).unwrap_err(),
            UserError::UnknownWord { position: 5, word: "abandonn".into() }
        );
        // A real word in place of another: the checksum catches it ("abandon" × 24 is the
        // all-zero phrase with its last word wrong).
        assert_eq!(UserKey::from_phrase(&["abandon"; 24].join(" ")).unwrap_err(), UserError::Checksum);
        assert_eq!(UserKey::from_secret(&[1; 31]).unwrap_err(), UserError::SecretLength(31));
    }
}
