//! The node's home and its secrets: the home folder (0700), the node's identity key
//! (`HOME/identity.key`, ed25519, kept across restarts) and files that hold secrets.
//!
//! A secret file is created 0600 before any secret byte is written to it, fsynced, and
//! only then renamed into place (and its folder fsynced): a crash leaves the old file or
//! the new one, never a half-written or world-readable one.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use jewel_net::Keypair;

/// Why a secret or the home could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IdentityError {
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error("identity file {} is damaged; move it away to make a new identity", .0.display())]
    Damaged(PathBuf),
    #[error("no random numbers: {0}")]
    Random(String),
    #[error("another jewel node (process {pid}) is running on {}; stop it first, or use another --home", home.display())]
    Busy { home: PathBuf, pid: String },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> IdentityError + '_ {
    move |source| IdentityError::Io { path: path.to_path_buf(), source }
}

/// Creates the home folder if needed, readable by its owner only.
pub fn ensure_home(home: &Path) -> Result<(), IdentityError> {
    std::fs::create_dir_all(home).map_err(io(home))?;
    std::fs::set_permissions(home, std::fs::Permissions::from_mode(0o700)).map_err(io(home))
}

/// Holds a home for one node: an exclusive lock on `HOME/node.lock`, taken before the node
/// touches anything else in the home, released when dropped (or when the process ends,
/// however it ends).
#[derive(Debug)]
pub struct HomeLock {
    /// Held open: the lock lives as long as the file does.
    _file: std::fs::File,
}

/// Takes `home`'s lock, or says which process holds it.
pub fn lock_home(home: &Path) -> Result<HomeLock, IdentityError> {
    let path = home.join("node.lock");
    let mut file = private_file(&path).map_err(io(&path))?;
    match file.try_lock() {
        Ok(()) => {
            use std::io::Seek;
            let _ = file.set_len(0);
            let _ = file.rewind();
            let _ = write!(file, "{}", std::process::id());
            Ok(HomeLock { _file: file })
        }
        Err(std::fs::TryLockError::WouldBlock) => {
            let pid = std::fs::read_to_string(&path).unwrap_or_default();
            Err(IdentityError::Busy { home: home.to_path_buf(), pid: pid.trim().to_string() })
        }
        Err(std::fs::TryLockError::Error(e)) => Err(IdentityError::Io { path, source: e }),
    }
}

/// Opens `path` for reading and writing, creating it 0600 if it is not there (and making
/// an existing one 0600).
pub fn private_file(path: &Path) -> std::io::Result<std::fs::File> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)?;
    file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    Ok(file)
}

/// Writes `bytes` to `path` as a secret: a new temp file created 0600, written, fsynced,
/// renamed over `path`, and the folder fsynced.
pub fn write_secret(path: &Path, bytes: &[u8]) -> Result<(), IdentityError> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let mut name = path.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(format!(".tmp-{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed)));
    let tmp = path.with_file_name(name);
    let written = (|| {
        let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(IdentityError::Io { path: path.to_path_buf(), source: e });
    }
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(io(dir))
}

/// The node's identity key, made (and kept) on first start.
pub fn load_identity(home: &Path) -> Result<Keypair, IdentityError> {
    let path = home.join("identity.key");
    match std::fs::read(&path) {
        Ok(bytes) => Keypair::from_protobuf_encoding(&bytes).map_err(|_| IdentityError::Damaged(path)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key = Keypair::generate_ed25519();
            let bytes = key.to_protobuf_encoding().map_err(|_| IdentityError::Damaged(path.clone()))?;
            write_secret(&path, &bytes)?;
            Ok(key)
        }
        Err(e) => Err(IdentityError::Io { path, source: e }),
    }
}

/// A new random API token: 16 bytes, in hex.
pub fn new_token() -> Result<String, IdentityError> {
    let mut token = [0u8; 16];
    jewel::crypto::fill_random(&mut token).map_err(|e| IdentityError::Random(e.to_string()))?;
    Ok(token.iter().map(|b| format!("{b:02x}")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn secrets_are_0600_and_replace_the_old_file_whole() {
        let dir = tempfile::tempdir().unwrap();
        let home = dir.path().join("home");
        ensure_home(&home).unwrap();
        assert_eq!(mode(&home), 0o700);
        let p = home.join("api.json");
        write_secret(&p, b"first").unwrap();
        write_secret(&p, b"second, longer").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"second, longer");
        assert_eq!(mode(&p), 0o600);
        // No temp file is left behind.
        assert_eq!(std::fs::read_dir(&home).unwrap().count(), 1);
    }

    #[test]
    fn a_home_is_held_by_one_node_at_a_time() {
        let home = tempfile::tempdir().unwrap();
        let lock = lock_home(home.path()).unwrap();
        let e = lock_home(home.path()).unwrap_err();
        let line = e.to_string();
        assert!(
            line.contains(&format!("process {}", std::process::id())) && line.contains("stop it first"),
            "{line}"
        );
        drop(lock);
        lock_home(home.path()).unwrap();
    }

    #[test]
    fn the_identity_is_kept_and_a_damaged_one_is_named() {
        let home = tempfile::tempdir().unwrap();
        let a = load_identity(home.path()).unwrap();
        let b = load_identity(home.path()).unwrap();
        assert_eq!(a.public(), b.public());
        assert_eq!(mode(&home.path().join("identity.key")), 0o600);
        std::fs::write(home.path().join("identity.key"), b"garbage").unwrap();
        let e = load_identity(home.path()).unwrap_err();
        assert!(e.to_string().contains("identity.key is damaged"), "{e}");
    }
}
