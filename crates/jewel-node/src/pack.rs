//! Small files stored together (`put -r`). A pack is one stored file (erasure-coded,
//! leased, audited and repaired as any other) holding many files' bytes back to back; each
//! file is an entry of the user's index whose cap is a slice cap (`jewel:p1:`): the pack,
//! the file's place in it and its content hash, so reading it is a verified range read of
//! the pack. One put, one lease per piece and one index change for all of them, instead of
//! one each. A content the index shows already (same hash and scheme) is not stored again.
//!
//! A pack is kept while any kept version names it (the release of fallen versions counts
//! stored files, not caps).

use std::io::Read;
use std::path::Path;
use std::sync::Arc;

use jewel::caps::{ReadCap, SliceCap};
use jewel::index::Entry;

use crate::api::{
    PackFailure, PackFile, PackedFile, PutPackRequest, PutPackResponse, PACK_FILE_MAX, PACK_MAX_BYTES,
    PACK_MAX_FILES,
};
use crate::client::ClientError;
use crate::index::PACK_NAME;
use crate::node::{open_input, time_and_mode, How, Keep, Node, PutError};

/// A pack's segment size: a packed file read alone fetches the one or two segments that
/// hold it, not megabytes.
pub const PACK_SEGMENT: u32 = 256 << 10;
/// Packs read into memory at once, at most (each up to [`PACK_MAX_BYTES`]).
pub const MAX_PACKS: usize = 2;

/// A small file read for a pack.
struct Small {
    /// Its path in the index.
    path: String,
    len: u64,
    mtime: u64,
    mode: u32,
    hash: [u8; 32],
    /// Where its bytes are: a cap the index already names, or this pack at an offset.
    place: Place,
}

enum Place {
    Known(String, String),
    At(u64),
}

/// The pack's bytes, shared by the tries of one put.
#[derive(Clone)]
struct Shared(Arc<Vec<u8>>);

impl AsRef<[u8]> for Shared {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

/// Reads one small file (or a link's target), refusing one of [`PACK_FILE_MAX`] bytes or
/// more; its bytes, time and mode.
fn read_small(path: &Path, link: bool) -> Result<(Vec<u8>, u64, u32), PutError> {
    let (input, size, meta) = open_input(path, link)?;
    let too_big = |n: u64| {
        PutError::Pack(format!("{} has {n} bytes; a pack takes files under {PACK_FILE_MAX}", path.display()))
    };
    if size >= PACK_FILE_MAX {
        return Err(too_big(size));
    }
    let mut bytes = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
    input
        .take(PACK_FILE_MAX)
        .read_to_end(&mut bytes)
        .map_err(|source| PutError::Unreadable { path: path.to_path_buf(), source })?;
    if bytes.len() as u64 >= PACK_FILE_MAX {
        return Err(too_big(bytes.len() as u64));
    }
    let (mtime, mode) = time_and_mode(meta.as_ref(), link);
    Ok((bytes, mtime, mode))
}

/// Reads the files (on the blocking pool's thread that calls it), laying out the pack: a
/// content the index shows already, or that an earlier file of this pack has, is not
/// stored again. Files past [`PACK_MAX_BYTES`] of new bytes fail, each on its own.
fn lay_out(
    wanted: Vec<(String, PackFile)>,
    known: &std::collections::HashMap<(String, String), String>,
    scheme: &str,
) -> (Vec<u8>, Vec<Small>, Vec<PackFailure>) {
    let mut pack = Vec::new();
    let mut here: std::collections::HashMap<[u8; 32], u64> = std::collections::HashMap::new();
    let (mut files, mut failed) = (Vec::new(), Vec::new());
    for (path, f) in wanted {
        let (bytes, mtime, mode) = match read_small(&f.path, f.link) {
            Ok(read) => read,
            Err(e) => {
                failed.push(PackFailure { file: f.path, error: e.to_string() });
                continue;
            }
        };
        let hash: [u8; 32] = blake3::hash(&bytes).into();
        let hex = blake3::Hash::from(hash).to_hex().to_string();
        let place = if let Some(cap) = known.get(&(hex, scheme.to_string())) {
            Place::Known(cap.clone(), scheme.to_string())
        } else if let Some(at) = here.get(&hash) {
            Place::At(*at)
        } else if pack.len() as u64 + bytes.len() as u64 > PACK_MAX_BYTES {
            let error = format!("the pack is full ({PACK_MAX_BYTES} bytes); put it in another");
            failed.push(PackFailure { file: f.path, error });
            continue;
        } else {
            let at = pack.len() as u64;
            pack.extend_from_slice(&bytes);
            here.insert(hash, at);
            Place::At(at)
        };
        files.push(Small { path, len: bytes.len() as u64, mtime, mode, hash, place });
    }
    (pack, files, failed)
}

/// The index entries of a pack's files, once the pack is stored as `pack` with `scheme`
/// (with no pack, the files of known contents only: a file placed in a pack has no entry
/// until the pack is stored).
fn entries(files: &[Small], pack: Option<&ReadCap>, scheme: &str) -> Vec<(String, Entry)> {
    files
        .iter()
        .filter_map(|f| {
            let (cap, scheme) = match (&f.place, pack) {
                (Place::Known(cap, scheme), _) => (cap.clone(), scheme.clone()),
                (Place::At(offset), Some(pack)) => {
                    let slice = SliceCap { pack: pack.clone(), offset: *offset, len: f.len, hash: f.hash };
                    (slice.to_string(), scheme.to_string())
                }
                (Place::At(_), None) => return None,
            };
            let entry = Entry {
                cap,
                size: f.len,
                mtime: f.mtime,
                scheme,
                hash: blake3::Hash::from(f.hash).to_hex().to_string(),
                mode: f.mode,
            };
            Some((f.path.clone(), entry))
        })
        .collect()
}

impl Node {
    /// Stores small files as one pack, each an entry of the user's index, in one change
    /// (see the module's doc). A file that cannot be read or placed fails alone; the put of
    /// the pack, or its index change, fails them all.
    pub async fn put_pack(self: &Arc<Self>, req: PutPackRequest) -> Result<PutPackResponse, PutError> {
        let _user = self.users.begin();
        if req.files.len() > PACK_MAX_FILES {
            return Err(PutError::Pack(format!(
                "{} files in one pack; at most {PACK_MAX_FILES}",
                req.files.len()
            )));
        }
        let _packing =
            self.packing.acquire().await.map_err(|_| PutError::Transfer(ClientError::Interrupted))?;
        let default = self.settings()?.default_scheme;
        let text = req.scheme.as_deref().unwrap_or(&default);
        let scheme =
            jewel::codec::SchemeSpec::parse(text).map_err(|e| PutError::Scheme(e.to_string()))?.to_string();
        let (mut wanted, mut failed) = (Vec::new(), Vec::new());
        for f in req.files {
            let name = f.path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            match self.index.precheck(Some(&f.at), &name, req.no_clobber) {
                Ok(path) => wanted.push((path, f)),
                Err(e) => failed.push(PackFailure { file: f.path, error: e.to_string() }),
            }
        }
        let known = self.index.caps_by_content();
        let chosen = scheme.clone();
        let (pack, files, unread) = tokio::task::spawn_blocking(move || lay_out(wanted, &known, &chosen))
            .await
            .map_err(|_| PutError::Transfer(ClientError::Interrupted))?;
        failed.extend(unread);
        let known = files.iter().filter(|f| matches!(f.place, Place::Known(..))).count();
        if files.is_empty() {
            return Ok(PutPackResponse { pack: None, stored: Vec::new(), known, failed });
        }
        let (no_clobber, files) = (req.no_clobber, Arc::new(files));
        let stored = |pack: Option<&ReadCap>| -> Vec<PackedFile> {
            entries(&files, pack, &scheme)
                .into_iter()
                .map(|(path, e)| PackedFile { path, cap: e.cap })
                .collect()
        };
        if files.iter().all(|f| matches!(f.place, Place::Known(..))) {
            // Every content is stored already: only the index changes. (A pack of empty
            // files only is stored all the same, empty: its files need a cap.)
            self.index
                .put_many(entries(&files, None, &scheme), no_clobber, None)
                .await
                .map_err(|e| PutError::Index(e.to_string()))?;
            return Ok(PutPackResponse { pack: None, stored: stored(None), known, failed });
        }
        let (size, pack) = (pack.len() as u64, Shared(Arc::new(pack)));
        let what = format!("a pack of {} files", files.len());
        let how = How { scheme: Some(&scheme), segment_size: Some(PACK_SEGMENT), job: None };
        let put = self
            .put_retrying(|| {
                let input = Box::new(std::io::Cursor::new(pack.clone()));
                let (index, files) = (self.index.clone(), files.clone());
                let keep: Keep = Box::new(move |file, record| {
                    Box::pin(async move {
                        let cap: ReadCap = record
                            .cap
                            .as_deref()
                            .unwrap_or_default()
                            .parse()
                            .map_err(|e| PutError::Pack(format!("the pack's own cap: {e}")))?;
                        let entries = entries(&files, Some(&cap), &record.scheme);
                        index
                            .put_many(entries, no_clobber, Some((file, record)))
                            .await
                            .map_err(|e| PutError::Index(e.to_string()))?;
                        Ok((None, false))
                    })
                });
                self.put_input(input, size, what.clone(), PACK_NAME.to_string(), how, keep)
            })
            .await?;
        let cap: ReadCap = put.cap.parse().map_err(|e| PutError::Pack(format!("the pack's own cap: {e}")))?;
        Ok(PutPackResponse { pack: Some(put.cap), stored: stored(Some(&cap)), known, failed })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(dir: &Path, name: &str, bytes: &[u8]) -> (String, PackFile) {
        let path = dir.join(name);
        std::fs::write(&path, bytes).unwrap();
        (name.to_string(), PackFile { path, at: name.to_string(), link: false })
    }

    #[test]
    fn a_pack_holds_each_new_content_once_and_names_known_ones() {
        let dir = tempfile::tempdir().unwrap();
        let old = blake3::hash(b"known").to_hex().to_string();
        let known =
            std::collections::HashMap::from([((old, "replicate:2".to_string()), "jewel:r1:old".to_string())]);
        let wanted = vec![
            file(dir.path(), "a", b"alpha"),
            file(dir.path(), "b", b"beta!"),
            file(dir.path(), "a2", b"alpha"),
            file(dir.path(), "k", b"known"),
            (
                String::from("gone"),
                PackFile { path: dir.path().join("gone"), at: "gone".into(), link: false },
            ),
        ];
        let (pack, files, failed) = lay_out(wanted, &known, "replicate:2");
        assert_eq!(pack, b"alphabeta!");
        assert_eq!(failed.len(), 1, "the missing file fails alone");
        assert!(failed[0].error.contains("gone"), "{}", failed[0].error);
        let cap = ReadCap { manifest: jewel::BlockId::of(b"m"), key: jewel::crypto::FileKey([1; 32]) };
        let es = entries(&files, Some(&cap), "replicate:2");
        let slice = |i: usize| match jewel::caps::Cap::parse(&es[i].1.cap).unwrap() {
            jewel::caps::Cap::Slice(s) => (s.offset, s.len, s.hash),
            other => panic!("{other:?}"),
        };
        assert_eq!(slice(0), (0, 5, *blake3::hash(b"alpha").as_bytes()));
        assert_eq!(slice(1), (5, 5, *blake3::hash(b"beta!").as_bytes()));
        assert_eq!(slice(2), slice(0), "the same content is stored once");
        assert_eq!(es[3].1.cap, "jewel:r1:old", "a content the index holds is named, not stored");
        assert_eq!(es[2].0, "a2");
        // Under another scheme, the known content is stored again.
        let (pack, ..) = lay_out(vec![file(dir.path(), "k2", b"known")], &known, "replicate:3");
        assert_eq!(pack, b"known");
    }

    #[test]
    fn a_file_too_large_for_a_pack_fails_alone() {
        let dir = tempfile::tempdir().unwrap();
        let big = vec![7u8; PACK_FILE_MAX as usize];
        let wanted = vec![file(dir.path(), "big", &big), file(dir.path(), "small", b"s")];
        let (pack, files, failed) = lay_out(wanted, &Default::default(), "replicate:2");
        assert_eq!((pack.as_slice(), files.len(), failed.len()), (&b"s"[..], 1, 1));
        assert!(failed[0].error.contains("a pack takes files under"), "{}", failed[0].error);
    }
}
