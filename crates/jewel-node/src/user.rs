//! The user identity a node holds for its user (`jewel id`): kept as `HOME/user.key` (the
//! phrase's 32 bytes of entropy, 0600, written whole or not at all), made from a new phrase
//! or recovered from one. Several nodes (a user's devices) may hold the same identity.

use std::path::{Path, PathBuf};

use jewel::user::{UserError, UserKey};

use crate::identity::{write_secret, IdentityError};

/// Why an identity command failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum UserIdError {
    #[error("this node already holds user {0}; a node holds one user")]
    Exists(String),
    #[error(transparent)]
    Phrase(#[from] UserError),
    #[error("{}: {source}", path.display())]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{} is damaged ({0}); move it away and recover the identity from its phrase", path.display())]
    Damaged { path: PathBuf, source: UserError },
    #[error(transparent)]
    Write(#[from] IdentityError),
}

/// Where a node keeps its user's secret.
pub fn user_path(home: &Path) -> PathBuf {
    home.join("user.key")
}

/// The user this node holds, if any.
pub fn load(home: &Path) -> Result<Option<UserKey>, UserIdError> {
    let path = user_path(home);
    match std::fs::read(&path) {
        Ok(bytes) => {
            UserKey::from_secret(&bytes).map(Some).map_err(|source| UserIdError::Damaged { path, source })
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(UserIdError::Read { path, source }),
    }
}

/// Makes a new identity for a node that holds none; returns it (its phrase is shown once).
pub fn init(home: &Path) -> Result<UserKey, UserIdError> {
    if let Some(held) = load(home)? {
        return Err(UserIdError::Exists(held.user_id()));
    }
    let key = UserKey::generate()?;
    write_secret(&user_path(home), &key.secret())?;
    Ok(key)
}

/// Takes on the identity `phrase` names: on a node that holds none, or holds the same one.
/// A mistyped phrase is refused before anything is written.
pub fn recover(home: &Path, phrase: &str) -> Result<UserKey, UserIdError> {
    let key = UserKey::from_phrase(phrase)?;
    match load(home)? {
        Some(held) if held.user_id() == key.user_id() => Ok(held),
        Some(held) => Err(UserIdError::Exists(held.user_id())),
        None => {
            write_secret(&user_path(home), &key.secret())?;
            Ok(key)
        }
    }
}
