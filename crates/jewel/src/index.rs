//! A user's private index: paths → files, kept by each of the user's devices as a log of
//! changes that merges as a CRDT.
//!
//! Every change is an [`Op`]: "put this entry at this path" or "remove this path", with a
//! unique id (a Lamport clock and the device that made it) and the ids of the ops it
//! replaces — the ones at that path its device saw when it made it. An op that no other op
//! replaces is *live*; a path shows its live puts. The index is the set of ops, and merging
//! is set union, so merges are commutative, associative and idempotent (property-tested
//! below), and every device that has the same ops shows the same index:
//! - edits to different paths never touch each other;
//! - two devices that put the same path concurrently leave two live puts: a conflict that
//!   shows both entries until a later put replaces both;
//! - a remove replaces only the puts it saw, so a concurrent put survives it.
//!
//! The ops a path has seen, newest first, are its versions ([`Index::versions`]).
//! Snapshots ([`Index::seal`]) are the ops, compressed and sealed with the user's index
//! key; folders are listed from the paths ([`Index::list`]) and can be written out as a
//! Merkle tree of [`FolderNode`]s that name their children by cap.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use serde::{Deserialize, Serialize};

/// The longest path, in bytes.
pub const MAX_PATH: usize = 4096;
/// The longest path component, in bytes.
pub const MAX_COMPONENT: usize = 255;
/// Ops in one snapshot or one message, at most.
pub const MAX_OPS: usize = 1 << 20;
/// The largest snapshot, sealed, in bytes.
pub const MAX_SNAPSHOT: usize = 256 << 20;
const SNAPSHOT_MAGIC: &[u8; 4] = b"JIX1";
const SNAPSHOT_CONTEXT: &[u8] = b"jewel index snapshot v1";
const DELTA_MAGIC: &[u8; 4] = b"JIX2";
const DELTA_CONTEXT: &[u8] = b"jewel index delta v1";
const FOLDER_MAGIC: &[u8] = b"JEWELDIR1\n";

/// Why a path, an op or a snapshot is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IndexError {
    #[error("path `{path}`: {why}")]
    BadPath { path: String, why: &'static str },
    #[error("no file or folder at `{0}` in your index")]
    NotFound(String),
    #[error("`{0}` is a folder (`ls`, `get -r` and `rm -r` take folders)")]
    IsFolder(String),
    #[error("`{0}` already exists in your index")]
    Exists(String),
    #[error("`{0}` is a folder; give -r to act on the whole folder")]
    NeedsRecursive(String),
    #[error("`{0}` is a file, so it cannot hold `{1}`")]
    UnderFile(String, String),
    #[error("`{path}` has {count} conflicting versions (made on different devices at once); name one with --version")]
    Conflict { path: String, count: usize },
    #[error("`{path}` has no version {version}; `jewel ls --versions {path}` lists them")]
    NoVersion { path: String, version: usize },
    #[error("index snapshot: {0}")]
    Malformed(String),
    #[error(
        "the index snapshot or message does not open with this user's index key (another user's, or damaged)"
    )]
    Sealed,
    #[error("an index message not signed by this user")]
    Signature,
}

/// Checks a path and gives its canonical form: components joined by `/`, without a
/// leading or trailing `/`. The root is the empty string. Refuses `.` and `..`, NUL bytes,
/// empty components (`a//b`), and overlong paths or components.
pub fn normalize(path: &str) -> Result<String, IndexError> {
    let bad = |why| Err(IndexError::BadPath { path: path.escape_debug().to_string(), why });
    if path.len() > MAX_PATH {
        return bad("longer than 4096 bytes");
    }
    if path.contains('\0') {
        return bad("it has a NUL byte");
    }
    if path.chars().any(char::is_control) {
        return bad("it has a control character (a newline, a tab, …)");
    }
    let trimmed = path.strip_prefix('/').unwrap_or(path);
    if trimmed.is_empty() {
        return Ok(String::new());
    }
    let trimmed = trimmed.strip_suffix('/').unwrap_or(trimmed);
    for c in trimmed.split('/') {
        match c {
            "" => return bad("it has an empty component (`//`)"),
            "." | ".." => return bad("`.` and `..` are not allowed"),
            c if c.len() > MAX_COMPONENT => return bad("a component is longer than 255 bytes"),
            _ => {}
        }
    }
    Ok(trimmed.to_string())
}

/// Joins a folder and a name (both canonical).
pub fn join(folder: &str, name: &str) -> String {
    if folder.is_empty() {
        name.to_string()
    } else if name.is_empty() {
        folder.to_string()
    } else {
        format!("{folder}/{name}")
    }
}

/// The highest Lamport clock an op from another device may carry (see
/// [`Index::insert_foreign`]).
pub const MAX_CLOCK: u64 = u64::MAX >> 1;

/// An op's id: its Lamport clock, then its device. Unique, because a device never reuses
/// a clock value; ordered so that an op comes after every op its device had seen.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct OpId {
    pub clock: u64,
    pub device: u64,
}

/// A file in the index.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Its read cap.
    pub cap: String,
    pub size: u64,
    /// Modification time, Unix seconds.
    pub mtime: u64,
    pub scheme: String,
    /// Its content's BLAKE3 hash (hex), so an unchanged file is not stored again.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub hash: String,
    /// Its permission bits (`0o644`, `0o600`...), restored by a get; 0 when not known (a
    /// file streamed in, or put by an older node).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub mode: u32,
}

fn is_zero(v: &u32) -> bool {
    *v == 0
}

/// One change to the index.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Op {
    pub id: OpId,
    pub path: String,
    /// The entry put at `path`; `None` removes it.
    pub entry: Option<Entry>,
    /// The ops at `path` this one replaces.
    #[serde(default)]
    pub replaces: Vec<OpId>,
    /// When it was made (Unix seconds, by its device's clock; 0: by an older node).
    #[serde(default, skip_serializing_if = "is_zero64")]
    pub at: u64,
    /// A remove that frees the path's versions at once, with no grace period.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub purge: bool,
}

fn is_zero64(v: &u64) -> bool {
    *v == 0
}

/// Who makes a change, and when: the device, and the time (Unix seconds) its ops carry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct By {
    pub device: u64,
    pub at: u64,
}

impl From<u64> for By {
    /// A device, with no time (tests, and changes whose time does not matter).
    fn from(device: u64) -> By {
        By { device, at: 0 }
    }
}

/// What is at a path, as listed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Listed {
    pub path: String,
    /// For a file, its live entries: one, or more when devices made it concurrently (a
    /// conflict). Empty for a folder.
    pub entries: Vec<Entry>,
    /// For a folder: the files under it, and their total size.
    pub files: usize,
    pub size: u64,
}

impl Listed {
    pub fn is_folder(&self) -> bool {
        self.entries.is_empty()
    }
}

/// The set of ops, and what it shows.
#[derive(Clone, Debug, Default)]
pub struct Index {
    ops: BTreeMap<OpId, Op>,
    /// Ids some op replaces.
    replaced: HashSet<OpId>,
    /// Every op's id, by path.
    at: BTreeMap<String, BTreeSet<OpId>>,
    /// The highest clock seen.
    clock: u64,
}

impl PartialEq for Index {
    fn eq(&self, other: &Index) -> bool {
        self.ops == other.ops
    }
}

impl Index {
    pub fn new() -> Index {
        Index::default()
    }

    /// Adds an op made on some device; false if it was already here. An op whose path is
    /// not canonical is refused.
    pub fn insert(&mut self, op: Op) -> Result<bool, IndexError> {
        if normalize(&op.path)? != op.path || op.path.is_empty() {
            return Err(IndexError::BadPath { path: op.path, why: "not a canonical file path" });
        }

        if self.ops.contains_key(&op.id) {
            return Ok(false);
        }
        self.clock = self.clock.max(op.id.clock);
        self.replaced.extend(op.replaces.iter().copied());
        self.at.entry(op.path.clone()).or_default().insert(op.id);
        self.ops.insert(op.id, op);
        Ok(true)
    }

    /// [`Self::insert`] for an op another device made: also refused if its Lamport clock
    /// is past [`MAX_CLOCK`]. No device counts that far (an op a nanosecond for 290 years);
    /// a clock near the end of the range would leave this device's next ops no room.
    pub fn insert_foreign(&mut self, op: Op) -> Result<bool, IndexError> {
        if op.id.clock > MAX_CLOCK {
            return Err(IndexError::Malformed(format!(
                "an op with clock {}, past any device's",
                op.id.clock
            )));
        }
        self.insert(op)
    }

    /// Adds every op (made on other devices: [`Self::insert_foreign`]); how many were new.
    pub fn merge<'a>(&mut self, ops: impl IntoIterator<Item = &'a Op>) -> Result<usize, IndexError> {
        let mut new = 0;
        for op in ops {
            new += usize::from(self.insert_foreign(op.clone())?);
        }
        Ok(new)
    }

    pub fn ops(&self) -> impl Iterator<Item = &Op> {
        self.ops.values()
    }

    pub fn len(&self) -> usize {
        self.ops.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// The live ops at `path`, oldest first.
    fn live(&self, path: &str) -> impl Iterator<Item = &Op> {
        self.at
            .get(path)
            .into_iter()
            .flatten()
            .filter(|id| !self.replaced.contains(id))
            .filter_map(|id| self.ops.get(id))
    }

    /// The live entries of the file at `path` (more than one: a conflict).
    pub fn entries(&self, path: &str) -> Vec<&Entry> {
        self.live(path).filter_map(|op| op.entry.as_ref()).collect()
    }

    /// Every entry `path` has had, newest first (the live ones first).
    pub fn versions(&self, path: &str) -> Vec<(OpId, &Entry)> {
        let mut v: Vec<(bool, OpId, &Entry)> = self
            .at
            .get(path)
            .into_iter()
            .flatten()
            .filter_map(|id| Some((!self.replaced.contains(id), *id, self.ops.get(id)?.entry.as_ref()?)))
            .collect();
        v.sort_by_key(|&(live, id, _)| std::cmp::Reverse((live, id)));
        v.into_iter().map(|(_, id, e)| (id, e)).collect()
    }

    /// The files shown, by path, each with its live entries.
    pub fn files(&self) -> BTreeMap<&str, Vec<&Entry>> {
        self.at.keys().map(|p| (p.as_str(), self.entries(p))).filter(|(_, e)| !e.is_empty()).collect()
    }

    /// The files shown under `folder` (all of them for the root), by path.
    pub fn files_under(&self, folder: &str) -> Vec<(&str, Vec<&Entry>)> {
        let prefix = if folder.is_empty() { String::new() } else { format!("{folder}/") };
        self.at
            .range(prefix.clone()..)
            .take_while(|(p, _)| p.starts_with(&prefix))
            .map(|(p, _)| (p.as_str(), self.entries(p)))
            .filter(|(_, e)| !e.is_empty())
            .collect()
    }

    /// Whether `path` is a file shown.
    pub fn is_file(&self, path: &str) -> bool {
        self.live(path).any(|op| op.entry.is_some())
    }

    /// Whether `path` is a folder: the root, or a prefix of a file shown.
    pub fn is_folder(&self, path: &str) -> bool {
        path.is_empty() || !self.files_under(path).is_empty()
    }

    /// What `path` shows: the file itself, or a folder's children (with `recursive`, every
    /// file under it instead).
    pub fn list(&self, path: &str, recursive: bool) -> Result<Vec<Listed>, IndexError> {
        if self.is_file(path) {
            let entries = self.entries(path).into_iter().cloned().collect();
            return Ok(vec![Listed { path: path.to_string(), entries, files: 0, size: 0 }]);
        }
        let under = self.files_under(path);
        if under.is_empty() && !path.is_empty() {
            return Err(IndexError::NotFound(path.to_string()));
        }
        let skip = if path.is_empty() { 0 } else { path.len() + 1 };
        let mut out: BTreeMap<String, Listed> = BTreeMap::new();
        for (p, entries) in under {
            let rest = &p[skip..];
            match rest.split_once('/') {
                Some((child, _)) if !recursive => {
                    let l = out.entry(join(path, child)).or_insert_with(|| Listed {
                        path: join(path, child),
                        entries: Vec::new(),
                        files: 0,
                        size: 0,
                    });
                    l.files += 1;
                    l.size += entries.iter().map(|e| e.size).max().unwrap_or(0);
                }
                _ => {
                    out.insert(
                        p.to_string(),
                        Listed {
                            path: p.to_string(),
                            entries: entries.into_iter().cloned().collect(),
                            files: 0,
                            size: 0,
                        },
                    );
                }
            }
        }
        Ok(out.into_values().collect())
    }

    /// A new op id for `device`, after every op seen.
    fn next(&mut self, device: u64) -> OpId {
        OpId { clock: self.clock.saturating_add(1), device }
    }

    /// Puts `entry` at `path` (canonical) on `device`, replacing what is there; the op made.
    /// Refuses a path under a file, and (with `no_clobber`) a path that is a file.
    pub fn put(
        &mut self,
        by: impl Into<By>,
        path: &str,
        entry: Entry,
        no_clobber: bool,
    ) -> Result<Op, IndexError> {
        let by = by.into();
        let path = normalize(path)?;
        self.check_target(&path, no_clobber)?;
        let replaces = self.live(&path).map(|op| op.id).collect();
        let op = Op { id: self.next(by.device), path, entry: Some(entry), replaces, at: by.at, purge: false };
        self.insert(op.clone())?;
        Ok(op)
    }

    /// Removes the file at `path`, or (with `recursive`) every file under the folder; the
    /// ops made.
    pub fn remove(&mut self, by: impl Into<By>, path: &str, recursive: bool) -> Result<Vec<Op>, IndexError> {
        self.remove_purging(by, path, recursive, false)
    }

    /// [`Index::remove`]; with `purge`, the removed versions are freed at once (no grace).
    pub fn remove_purging(
        &mut self,
        by: impl Into<By>,
        path: &str,
        recursive: bool,
        purge: bool,
    ) -> Result<Vec<Op>, IndexError> {
        let by = by.into();
        let path = normalize(path)?;
        if path.is_empty() {
            return Err(IndexError::BadPath {
                path: "/".into(),
                why: "the whole index is not removed at once; remove its folders one by one",
            });
        }
        let targets: Vec<String> = if self.is_file(&path) {
            vec![path.clone()]
        } else if self.is_folder(&path) {
            if !recursive {
                return Err(IndexError::NeedsRecursive(path));
            }
            self.files_under(&path).into_iter().map(|(p, _)| p.to_string()).collect()
        } else {
            return Err(IndexError::NotFound(path));
        };
        let mut made = Vec::with_capacity(targets.len());
        for p in targets {
            let replaces = self.live(&p).map(|op| op.id).collect();
            let op = Op { id: self.next(by.device), path: p, entry: None, replaces, at: by.at, purge };
            self.insert(op.clone())?;
            made.push(op);
        }
        Ok(made)
    }

    /// Moves a file or a folder from `from` to `to`: each file's `keep` newest versions are
    /// put at its new path, oldest first (so its history moves with it, and its newest is
    /// the one shown), and removed from the old one. A conflict moves as the newest entry.
    /// Refuses a destination that exists.
    pub fn rename(
        &mut self,
        by: impl Into<By>,
        from: &str,
        to: &str,
        keep: usize,
    ) -> Result<Vec<Op>, IndexError> {
        let by = by.into();
        let (from, mut to) = (normalize(from)?, normalize(to)?);
        if from.is_empty() {
            return Err(IndexError::BadPath { path: "/".into(), why: "the root cannot be moved" });
        }
        if !self.is_file(&from) && !self.is_folder(&from) {
            return Err(IndexError::NotFound(from));
        }
        // Into an existing folder, as `mv` does.
        if self.is_folder(&to) {
            to = join(&to, from.rsplit_once('/').map_or(from.as_str(), |(_, name)| name));
        }
        if to == from {
            return Err(IndexError::BadPath { path: to, why: "it is where it would move to" });
        }
        if to.starts_with(&format!("{from}/")) {
            return Err(IndexError::BadPath { path: to, why: "a folder cannot move into itself" });
        }
        if self.is_file(&to) || self.is_folder(&to) {
            return Err(IndexError::Exists(to));
        }
        // Each file's history, oldest first, ending with its newest live entry.
        let history = |p: &str| -> Result<Vec<Entry>, IndexError> {
            let newest = self.newest(p)?;
            let mut older: Vec<Entry> =
                self.versions(p).into_iter().map(|(_, e)| e.clone()).filter(|e| *e != newest).collect();
            older.truncate(keep.saturating_sub(1));
            older.reverse();
            older.push(newest);
            Ok(older)
        };
        let moves: Vec<(String, Vec<Entry>)> = if self.is_file(&from) {
            vec![(to.clone(), history(&from)?)]
        } else if !from.is_empty() && self.is_folder(&from) {
            let mut m = Vec::new();
            for (p, _) in self.files_under(&from) {
                m.push((join(&to, &p[from.len() + 1..]), history(p)?));
            }
            m
        } else {
            return Err(IndexError::NotFound(from));
        };
        // Every destination is checked before anything changes: a move that fails moves
        // nothing.
        for (p, _) in &moves {
            self.check_target(p, true)?;
        }
        let mut made = self.remove(by, &from, true)?;
        for (p, versions) in moves {
            for (i, e) in versions.into_iter().enumerate() {
                made.push(self.put(by, &p, e, i == 0)?);
            }
        }
        Ok(made)
    }

    /// The index as it was at `t` (Unix seconds): the ops made then or before. Ops by an
    /// older node carry no time, and count as made before any time.
    pub fn as_of(&self, t: u64) -> Index {
        let mut past = Index::new();
        for op in self.ops.values().filter(|op| op.at <= t) {
            // Every op here was inserted once already: it is canonical.
            let _ = past.insert(op.clone());
        }
        past
    }

    /// Every change made at `path`, oldest first (by op id: the order devices saw them in).
    pub fn log(&self, path: &str) -> Vec<&Op> {
        self.at.get(path).into_iter().flatten().filter_map(|id| self.ops.get(id)).collect()
    }

    /// When the file at `path` was removed, if it was (no entry shows there, and its last
    /// op is a remove): the remove's time, and whether it purged.
    pub fn removed(&self, path: &str) -> Option<(u64, bool)> {
        if self.is_file(path) {
            return None;
        }
        let last = self.live(path).last()?;
        last.entry.is_none().then_some((last.at, last.purge))
    }

    /// Paths removed, each with when and whether purged (see [`Index::removed`]).
    pub fn removed_paths(&self) -> Vec<(&str, u64, bool)> {
        self.at.keys().filter_map(|p| self.removed(p).map(|(at, purge)| (p.as_str(), at, purge))).collect()
    }

    /// Puts the newest version of the removed file at `path` back.
    pub fn undelete(&mut self, by: impl Into<By>, path: &str) -> Result<Op, IndexError> {
        let path = normalize(path)?;
        if self.is_file(&path) {
            return Err(IndexError::Exists(path));
        }
        let newest = self.versions(&path).first().map(|(_, e)| (*e).clone());
        let entry = newest.ok_or_else(|| IndexError::NotFound(path.clone()))?;
        self.put(by, &path, entry, true)
    }

    /// Whether a file could be put at `path` (canonical, not the root): not onto a folder,
    /// nor under a file, nor (with `no_clobber`) onto a file.
    pub fn check_target(&self, path: &str, no_clobber: bool) -> Result<(), IndexError> {
        if path.is_empty() {
            return Err(IndexError::BadPath { path: "/".into(), why: "the root is a folder" });
        }
        if no_clobber && self.is_file(path) {
            return Err(IndexError::Exists(path.to_string()));
        }
        if self.is_folder(path) {
            return Err(IndexError::IsFolder(path.to_string()));
        }
        let mut up = path;
        while let Some((parent, _)) = up.rsplit_once('/') {
            if self.is_file(parent) {
                return Err(IndexError::UnderFile(parent.to_string(), path.to_string()));
            }
            up = parent;
        }
        Ok(())
    }

    fn newest(&self, path: &str) -> Result<Entry, IndexError> {
        self.live(path)
            .filter_map(|op| op.entry.as_ref())
            .last()
            .cloned()
            .ok_or_else(|| IndexError::NotFound(path.to_string()))
    }

    /// The entry of the file at `path`: its only live one, or version `version` (1 is the
    /// newest) of [`Index::versions`].
    pub fn entry(&self, path: &str, version: Option<usize>) -> Result<Entry, IndexError> {
        match version {
            Some(v) => self
                .versions(path)
                .get(v.wrapping_sub(1))
                .map(|(_, e)| (*e).clone())
                .ok_or(IndexError::NoVersion { path: path.to_string(), version: v }),
            None => match self.entries(path).as_slice() {
                [] if self.is_folder(path) => Err(IndexError::NeedsRecursive(path.to_string())),
                [] => Err(IndexError::NotFound(path.to_string())),
                [one] => Ok((*one).clone()),
                many => Err(IndexError::Conflict { path: path.to_string(), count: many.len() }),
            },
        }
    }

    /// The snapshot of every op, compressed and sealed with `key` (the user's index key).
    pub fn seal(&self, key: &[u8; 32]) -> Result<Vec<u8>, IndexError> {
        let ops: Vec<&Op> = self.ops.values().collect();
        seal_json(key, SNAPSHOT_MAGIC, SNAPSHOT_CONTEXT, &ops)
    }

    /// The op with id `id`, if the index has it.
    pub fn op(&self, id: &OpId) -> Option<&Op> {
        self.ops.get(id)
    }

    /// The ops of a snapshot [`Index::seal`] made with `key`.
    pub fn open(key: &[u8; 32], bytes: &[u8]) -> Result<Vec<Op>, IndexError> {
        if bytes.len() > MAX_SNAPSHOT {
            return Err(IndexError::Malformed(format!("{} bytes; the limit is {MAX_SNAPSHOT}", bytes.len())));
        }
        let sealed =
            bytes.strip_prefix(SNAPSHOT_MAGIC).ok_or(IndexError::Malformed("not a snapshot".into()))?;
        let packed =
            crate::crypto::open_box(key, SNAPSHOT_CONTEXT, sealed).map_err(|_| IndexError::Sealed)?;
        decode_ops(&packed)
    }
}

/// What a device publishes between two checkpoints (full snapshots, [`Index::seal`]): the
/// ops it took in since its previous publication, and that publication's file (its cap),
/// so a reader follows the chain back until it reaches what it has merged, or a checkpoint.
/// A change costs what changed, not the whole index.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delta {
    /// The cap of the publication this one follows (a delta or a checkpoint).
    pub prev: String,
    /// That publication's sequence number: a reader that merged it stops there.
    pub prev_seq: u64,
    /// The sequence number of the publication that made it.
    pub seq: u64,
    /// Deltas since the checkpoint, this one included.
    pub depth: u32,
    pub ops: Vec<Op>,
}

/// A published head's file: a checkpoint (every op) or a delta.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HeadFile {
    Checkpoint(Vec<Op>),
    Delta(Delta),
}

impl Delta {
    /// Compressed and sealed with `key` (the user's index key).
    pub fn seal(&self, key: &[u8; 32]) -> Result<Vec<u8>, IndexError> {
        seal_json(key, DELTA_MAGIC, DELTA_CONTEXT, self)
    }
}

/// `magic` ‖ `value` as JSON, compressed and sealed with `key` under `context`.
fn seal_json(
    key: &[u8; 32],
    magic: &[u8; 4],
    context: &[u8],
    value: &impl Serialize,
) -> Result<Vec<u8>, IndexError> {
    let json = serde_json::to_vec(value).map_err(|e| IndexError::Malformed(e.to_string()))?;
    let packed = zstd::encode_all(&json[..], 3).map_err(|e| IndexError::Malformed(e.to_string()))?;
    let sealed =
        crate::crypto::seal_box(key, context, &packed).map_err(|e| IndexError::Malformed(e.to_string()))?;
    let mut out = magic.to_vec();
    out.extend_from_slice(&sealed);
    Ok(out)
}

/// A head's file, sealed with `key`: a checkpoint or a delta, bounded as snapshots are.
pub fn open_head(key: &[u8; 32], bytes: &[u8]) -> Result<HeadFile, IndexError> {
    if bytes.starts_with(SNAPSHOT_MAGIC) {
        return Index::open(key, bytes).map(HeadFile::Checkpoint);
    }
    if bytes.len() > MAX_SNAPSHOT {
        return Err(IndexError::Malformed(format!("{} bytes; the limit is {MAX_SNAPSHOT}", bytes.len())));
    }
    let sealed = bytes.strip_prefix(DELTA_MAGIC).ok_or(IndexError::Malformed("not an index head".into()))?;
    let packed = crate::crypto::open_box(key, DELTA_CONTEXT, sealed).map_err(|_| IndexError::Sealed)?;
    let delta: Delta =
        serde_json::from_slice(&unpack(&packed)?).map_err(|e| IndexError::Malformed(e.to_string()))?;
    if delta.ops.len() > MAX_OPS {
        return Err(IndexError::Malformed(format!("{} ops; the limit is {MAX_OPS}", delta.ops.len())));
    }
    if delta.prev.len() > crate::caps::MAX_CAP_LEN {
        return Err(IndexError::Malformed("a delta whose previous head is no cap".into()));
    }
    Ok(HeadFile::Delta(delta))
}

/// Ops from compressed JSON, bounded in count and size.
fn decode_ops(packed: &[u8]) -> Result<Vec<Op>, IndexError> {
    let json = unpack(packed)?;
    let ops: Vec<Op> = serde_json::from_slice(&json).map_err(|e| IndexError::Malformed(e.to_string()))?;
    if ops.len() > MAX_OPS {
        return Err(IndexError::Malformed(format!("{} ops; the limit is {MAX_OPS}", ops.len())));
    }
    Ok(ops)
}

const MESSAGE_CONTEXT: &[u8] = b"jewel index message v1";

/// What a device tells the user's other devices: ops, and whether it asks them for theirs
/// (a device that just joined does).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    pub ops: Vec<Op>,
    #[serde(default)]
    pub ask: bool,
}

/// A message for the user's other devices: compressed, sealed with the user's index key,
/// and signed with the user's key (`signature (64) ‖ sealed`).
pub fn seal_message(user: &crate::user::UserKey, message: &Message) -> Result<Vec<u8>, IndexError> {
    use ed25519_dalek::Signer;
    let json = serde_json::to_vec(message).map_err(|e| IndexError::Malformed(e.to_string()))?;
    let packed = zstd::encode_all(&json[..], 3).map_err(|e| IndexError::Malformed(e.to_string()))?;
    let sealed = crate::crypto::seal_box(&user.index_key(), MESSAGE_CONTEXT, &packed)
        .map_err(|e| IndexError::Malformed(e.to_string()))?;
    let mut msg = user.signing_key().sign(&sealed).to_bytes().to_vec();
    msg.extend_from_slice(&sealed);
    Ok(msg)
}

/// Whether `msg` carries the user's signature (the first check of [`open_message`], cheap
/// enough for every gossip message before it is forwarded).
pub fn signed_by(user: &crate::user::UserKey, msg: &[u8]) -> bool {
    use ed25519_dalek::Verifier;
    let Some((sig, sealed)) = msg.split_at_checked(64) else { return false };
    let Ok(sig) = ed25519_dalek::Signature::from_slice(sig) else { return false };
    user.signing_key().verifying_key().verify(sealed, &sig).is_ok()
}

/// A message [`seal_message`] made for the same user; refused if it is not signed by the
/// user, or does not open with the index key.
pub fn open_message(user: &crate::user::UserKey, msg: &[u8]) -> Result<Message, IndexError> {
    use ed25519_dalek::Verifier;
    if msg.len() < 64 {
        return Err(IndexError::Malformed("a message shorter than its signature".into()));
    }
    let (sig, sealed) = msg.split_at(64);
    let sig = ed25519_dalek::Signature::from_slice(sig).map_err(|_| IndexError::Signature)?;
    user.signing_key().verifying_key().verify(sealed, &sig).map_err(|_| IndexError::Signature)?;
    let packed = crate::crypto::open_box(&user.index_key(), MESSAGE_CONTEXT, sealed)
        .map_err(|_| IndexError::Sealed)?;
    let json = unpack(&packed)?;
    let m: Message = serde_json::from_slice(&json).map_err(|e| IndexError::Malformed(e.to_string()))?;
    if m.ops.len() > MAX_OPS {
        return Err(IndexError::Malformed(format!("{} ops; the limit is {MAX_OPS}", m.ops.len())));
    }
    Ok(m)
}

fn unpack(packed: &[u8]) -> Result<Vec<u8>, IndexError> {
    use std::io::Read;
    let mut json = Vec::new();
    zstd::Decoder::new(packed)
        .map_err(|e| IndexError::Malformed(e.to_string()))?
        .take(MAX_SNAPSHOT as u64 * 8)
        .read_to_end(&mut json)
        .map_err(|e| IndexError::Malformed(e.to_string()))?;
    Ok(json)
}

/// The gossip topic of a user's devices (it names the user to no one who does not know
/// their public key).
pub fn topic(user: &crate::user::UserKey) -> String {
    let h = blake3::derive_key(
        "jewel 2026-12-01 user gossip topic",
        user.signing_key().verifying_key().as_bytes(),
    );
    format!("/jewel/user/{}", &blake3::Hash::from(h).to_hex()[..32])
}

/// One child of a [`FolderNode`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Child {
    pub name: String,
    /// The child's read cap: a file's, or the folder node's of a sub-folder.
    pub cap: String,
    pub folder: bool,
    pub size: u64,
    #[serde(default)]
    pub mtime: u64,
    /// A file's permission bits (0: not known).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub mode: u32,
}

/// A folder as a stored file: its children by name and cap, so a folder's cap reads its
/// whole subtree (a Merkle DAG: every cap pins the bytes it names).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FolderNode {
    pub children: Vec<Child>,
}

impl FolderNode {
    pub fn encode(&self) -> Result<Vec<u8>, IndexError> {
        let mut out = FOLDER_MAGIC.to_vec();
        serde_json::to_writer(&mut out, self).map_err(|e| IndexError::Malformed(e.to_string()))?;
        Ok(out)
    }

    /// A folder node, if `bytes` are one; every child's name is checked to be one plain
    /// path component.
    pub fn decode(bytes: &[u8]) -> Option<Result<FolderNode, IndexError>> {
        let json = bytes.strip_prefix(FOLDER_MAGIC)?;
        let node: FolderNode = match serde_json::from_slice(json) {
            Ok(n) => n,
            Err(e) => return Some(Err(IndexError::Malformed(e.to_string()))),
        };
        for c in &node.children {
            if c.name.contains('/')
                || normalize(&c.name).as_deref() != Ok(c.name.as_str())
                || c.name.is_empty()
            {
                return Some(Err(IndexError::BadPath {
                    path: c.name.clone(),
                    why: "not a plain name in a folder",
                }));
            }
        }
        Some(Ok(node))
    }

    /// Whether `bytes` start as a folder node.
    pub fn is_folder(bytes: &[u8]) -> bool {
        bytes.starts_with(FOLDER_MAGIC)
    }
}

/// Two indexes made apart: each device puts `edits` paths, `shared` of them the same
/// paths as the other's (for the merge benchmark and its test).
pub fn apart(edits: usize, shared: usize) -> (Index, Index) {
    let make = |device: u64| {
        let mut ix = Index::new();
        for i in 0..edits {
            let path =
                if i < shared { format!("shared/{i}.txt") } else { format!("d{device}/{}/{i}.txt", i % 50) };
            let entry = Entry {
                cap: format!("jewel:r1:{device}x{i}"),
                size: i as u64,
                mtime: 1_764_000_000,
                scheme: "jewels:3/5".into(),
                hash: String::new(),
                mode: 0o644,
            };
            let _ = ix.put(device, &path, entry, false);
        }
        ix
    };
    (make(1), make(2))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn entry(cap: &str) -> Entry {
        Entry {
            cap: cap.into(),
            size: cap.len() as u64,
            mtime: 1,
            scheme: "jewels:3/5".into(),
            hash: String::new(),
            mode: 0,
        }
    }

    #[test]
    fn paths_are_checked_and_made_canonical() {
        assert_eq!(normalize("/a/b/").unwrap(), "a/b");
        assert_eq!(normalize("").unwrap(), "");
        assert_eq!(normalize("/").unwrap(), "");
        for bad in ["a//b", "a/../b", "..", "./a", "a\0b", "//"] {
            assert!(matches!(normalize(bad), Err(IndexError::BadPath { .. })), "{bad:?}");
        }
        assert!(normalize(&"x".repeat(256)).is_err());
    }

    #[test]
    fn the_index_as_it_was_at_a_time_and_a_paths_log() {
        let mut ix = Index::new();
        ix.put(By { device: 1, at: 100 }, "a.txt", entry("a1"), false).unwrap();
        ix.put(By { device: 1, at: 200 }, "b.txt", entry("b1"), false).unwrap();
        ix.put(By { device: 2, at: 300 }, "a.txt", entry("a2"), false).unwrap();
        ix.remove(By { device: 1, at: 400 }, "b.txt", false).unwrap();
        let files =
            |ix: &Index| ix.files().into_iter().map(|(p, e)| format!("{p}={}", e[0].cap)).collect::<Vec<_>>();
        assert!(files(&ix.as_of(99)).is_empty());
        assert_eq!(files(&ix.as_of(250)), ["a.txt=a1", "b.txt=b1"]);
        assert_eq!(files(&ix.as_of(350)), ["a.txt=a2", "b.txt=b1"]);
        assert_eq!(files(&ix.as_of(u64::MAX)), ["a.txt=a2"]);
        let log: Vec<(u64, Option<&str>)> = ix
            .log("b.txt")
            .into_iter()
            .map(|op| (op.at, op.entry.as_ref().map(|e| e.cap.as_str())))
            .collect();
        assert_eq!(log, [(200, Some("b1")), (400, None)]);
    }

    #[test]
    fn a_removed_file_says_when_and_comes_back_as_its_newest_version() {
        let mut ix = Index::new();
        ix.put(By { device: 1, at: 10 }, "a.txt", entry("v1"), false).unwrap();
        ix.put(By { device: 1, at: 20 }, "a.txt", entry("v2"), false).unwrap();
        assert_eq!(ix.removed("a.txt"), None);
        ix.remove_purging(By { device: 1, at: 30 }, "a.txt", false, false).unwrap();
        assert_eq!(ix.removed("a.txt"), Some((30, false)));
        assert_eq!(ix.removed_paths(), vec![("a.txt", 30, false)]);
        let op = ix.undelete(By { device: 1, at: 40 }, "a.txt").unwrap();
        assert_eq!((op.at, op.entry.map(|e| e.cap)), (40, Some("v2".to_string())));
        assert!(matches!(ix.undelete(1, "a.txt"), Err(IndexError::Exists(_))));
        ix.remove_purging(By { device: 1, at: 50 }, "a.txt", false, true).unwrap();
        assert_eq!(ix.removed("a.txt"), Some((50, true)));
        assert!(matches!(ix.undelete(1, "never.txt"), Err(IndexError::NotFound(_))));
    }

    #[test]
    fn a_move_takes_the_kept_versions_along() {
        let mut ix = Index::new();
        for v in ["v1", "v2", "v3", "v4"] {
            ix.put(1, "a.txt", entry(v), false).unwrap();
        }
        ix.put(1, "dir/b.txt", entry("b"), false).unwrap();
        ix.rename(1, "a.txt", "dir/c.txt", 3).unwrap();
        let caps =
            |p: &str, ix: &Index| ix.versions(p).into_iter().map(|(_, e)| e.cap.clone()).collect::<Vec<_>>();
        assert_eq!(caps("dir/c.txt", &ix), ["v4", "v3", "v2"], "the 3 newest, newest shown");
        assert_eq!(ix.entries("dir/c.txt").len(), 1);
        assert_eq!(ix.entries("dir/c.txt")[0].cap, "v4");
        assert!(!ix.is_file("a.txt"));
        // A folder's files each take theirs.
        ix.rename(1, "dir", "moved", 3).unwrap();
        assert_eq!(caps("moved/c.txt", &ix), ["v4", "v3", "v2"]);
        assert_eq!(caps("moved/b.txt", &ix), ["b"]);
    }

    #[test]
    fn put_list_rename_and_remove() {
        let mut ix = Index::new();
        ix.put(1, "docs/a.txt", entry("A"), false).unwrap();
        ix.put(1, "docs/sub/b.txt", entry("B"), false).unwrap();
        ix.put(1, "c.txt", entry("C"), false).unwrap();
        let top: Vec<String> = ix.list("", false).unwrap().into_iter().map(|l| l.path).collect();
        assert_eq!(top, ["c.txt", "docs"]);
        let all: Vec<String> = ix.list("", true).unwrap().into_iter().map(|l| l.path).collect();
        assert_eq!(all, ["c.txt", "docs/a.txt", "docs/sub/b.txt"]);
        assert!(matches!(ix.put(1, "c.txt/x", entry("X"), false), Err(IndexError::UnderFile(..))));
        assert!(matches!(ix.put(1, "docs", entry("X"), false), Err(IndexError::IsFolder(_))));
        assert!(matches!(ix.put(1, "c.txt", entry("X"), true), Err(IndexError::Exists(_))));
        ix.rename(1, "docs", "papers", 5).unwrap();
        assert_eq!(ix.entry("papers/sub/b.txt", None).unwrap().cap, "B");
        assert!(matches!(ix.entry("docs/a.txt", None), Err(IndexError::NotFound(_))));
        assert!(matches!(ix.remove(1, "papers", false), Err(IndexError::NeedsRecursive(_))));
        ix.remove(1, "papers", true).unwrap();
        assert_eq!(ix.files().len(), 1);
    }

    #[test]
    fn an_overwrite_keeps_the_previous_versions() {
        let mut ix = Index::new();
        for cap in ["v1", "v2", "v3"] {
            ix.put(1, "f", entry(cap), false).unwrap();
        }
        let caps: Vec<&str> = ix.versions("f").iter().map(|(_, e)| e.cap.as_str()).collect();
        assert_eq!(caps, ["v3", "v2", "v1"]);
        assert_eq!(ix.entry("f", Some(3)).unwrap().cap, "v1");
        assert!(matches!(ix.entry("f", Some(4)), Err(IndexError::NoVersion { .. })));
    }

    #[test]
    fn concurrent_puts_conflict_and_a_remove_does_not_beat_a_concurrent_put() {
        let mut a = Index::new();
        a.put(1, "f", entry("base"), false).unwrap();
        let mut b = a.clone();
        a.put(1, "f", entry("from a"), false).unwrap();
        b.put(2, "f", entry("from b"), false).unwrap();
        a.merge(b.ops().collect::<Vec<_>>()).unwrap();
        let caps: BTreeSet<&str> = a.entries("f").iter().map(|e| e.cap.as_str()).collect();
        assert_eq!(caps, BTreeSet::from(["from a", "from b"]));
        assert!(matches!(a.entry("f", None), Err(IndexError::Conflict { count: 2, .. })));
        // A later put settles it, everywhere it reaches.
        a.put(1, "f", entry("settled"), false).unwrap();
        assert_eq!(a.entry("f", None).unwrap().cap, "settled");

        let mut c = Index::new();
        c.put(1, "g", entry("base"), false).unwrap();
        let mut d = c.clone();
        c.remove(1, "g", false).unwrap();
        d.put(2, "g", entry("new"), false).unwrap();
        c.merge(d.ops().collect::<Vec<_>>()).unwrap();
        assert_eq!(c.entry("g", None).unwrap().cap, "new");
    }

    #[test]
    fn snapshots_round_trip_and_open_only_with_the_key() {
        let mut ix = Index::new();
        ix.put(7, "a/b", entry("X"), false).unwrap();
        let sealed = ix.seal(&[1; 32]).unwrap();
        let ops = Index::open(&[1; 32], &sealed).unwrap();
        let mut back = Index::new();
        back.merge(&ops).unwrap();
        assert_eq!(back, ix);
        assert_eq!(Index::open(&[2; 32], &sealed), Err(IndexError::Sealed));
        let mut bad = sealed.clone();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        assert_eq!(Index::open(&[1; 32], &bad), Err(IndexError::Sealed));
    }

    #[test]
    fn heads_are_checkpoints_or_deltas_and_open_only_with_the_key() {
        let mut ix = Index::new();
        ix.put(7, "a/b", entry("X"), false).unwrap();
        let op = ix.ops().next().unwrap().clone();
        let delta =
            Delta { prev: "jewel:r1:prev".into(), prev_seq: 41, seq: 42, depth: 3, ops: vec![op.clone()] };
        let sealed = delta.seal(&[1; 32]).unwrap();
        assert!(sealed.len() < 1024, "a delta of one op is small: {} bytes", sealed.len());
        assert_eq!(open_head(&[1; 32], &sealed), Ok(HeadFile::Delta(delta)));
        assert_eq!(open_head(&[2; 32], &sealed), Err(IndexError::Sealed));
        assert_eq!(open_head(&[1; 32], &ix.seal(&[1; 32]).unwrap()), Ok(HeadFile::Checkpoint(vec![op])));
        assert!(matches!(open_head(&[1; 32], b"JIX9whatever"), Err(IndexError::Malformed(_))));
        let mut bad = sealed;
        bad[10] ^= 1;
        assert_eq!(open_head(&[1; 32], &bad), Err(IndexError::Sealed));
    }

    #[test]
    fn folder_nodes_refuse_names_that_leave_the_folder() {
        let node = FolderNode {
            children: vec![Child {
                name: "..".into(),
                cap: "c".into(),
                folder: false,
                size: 1,
                mtime: 0,
                mode: 0,
            }],
        };
        let bytes = node.encode().unwrap();
        assert!(matches!(FolderNode::decode(&bytes), Some(Err(IndexError::BadPath { .. }))));
        assert!(FolderNode::decode(b"plain file").is_none());
    }

    /// The merge target's scenario: two devices apart make 5 000 edits each, 1 000 of them
    /// to the same paths; after each takes the other's ops, both show the same index, and
    /// every same-path edit is a conflict with both entries.
    #[test]
    fn two_devices_apart_agree_after_they_meet() {
        let (a, b) = apart(5000, 1000);
        let mut a2 = a.clone();
        a2.merge(b.ops().collect::<Vec<_>>()).unwrap();
        let mut b2 = b.clone();
        b2.merge(a.ops().collect::<Vec<_>>()).unwrap();
        assert!(a2 == b2);
        assert_eq!(view(&a2), view(&b2));
        assert_eq!(a2.files().len(), 9000);
        assert_eq!(a2.files().values().filter(|e| e.len() == 2).count(), 1000);
    }

    /// A device's edits: (path number, put or remove).
    fn edits() -> impl Strategy<Value = Vec<(u8, bool)>> {
        proptest::collection::vec((0u8..6, proptest::bool::weighted(0.75)), 0..12)
    }

    fn replay(device: u64, base: &Index, edits: &[(u8, bool)]) -> Index {
        let mut ix = base.clone();
        for (i, (p, put)) in edits.iter().enumerate() {
            let path = format!("d{}/f{p}", p % 2);
            if *put {
                let _ = ix.put(device, &path, entry(&format!("{device}-{i}")), false);
            } else {
                let _ = ix.remove(device, &path, false);
            }
        }
        ix
    }

    fn merged(parts: &[&Index]) -> Index {
        let mut out = Index::new();
        for p in parts {
            out.merge(p.ops().collect::<Vec<_>>()).unwrap();
        }
        out
    }

    fn view(ix: &Index) -> BTreeMap<String, BTreeSet<String>> {
        ix.files()
            .into_iter()
            .map(|(p, e)| (p.to_string(), e.iter().map(|e| e.cap.clone()).collect()))
            .collect()
    }

    proptest! {
        #[test]
        fn merges_are_commutative_associative_and_idempotent(
            e1 in edits(), e2 in edits(), e3 in edits(), shared in edits()
        ) {
            let base = replay(9, &Index::new(), &shared);
            let (a, b, c) = (replay(1, &base, &e1), replay(2, &base, &e2), replay(3, &base, &e3));
            let abc = merged(&[&merged(&[&a, &b]), &c]);
            let cba = merged(&[&c, &merged(&[&b, &a])]);
            let bca = merged(&[&b, &merged(&[&c, &a])]);
            prop_assert_eq!(view(&abc), view(&cba));
            prop_assert_eq!(view(&abc), view(&bca));
            prop_assert!(abc == cba);
            let again = merged(&[&abc, &a, &b, &c]);
            prop_assert_eq!(view(&again), view(&abc));
            // Nothing a device made and nobody replaced is lost.
            for ix in [&a, &b, &c] {
                for (path, caps) in view(ix) {
                    for cap in caps {
                        let survived = abc.versions(&path).iter().any(|(_, e)| e.cap == cap);
                        prop_assert!(survived, "{} lost at {}", cap, path);
                    }
                }
            }
        }
    }

    /// An op whose Lamport clock is near the end of the range is refused: the ops after it
    /// would have no clock left (a panic, or a wrap that breaks their order).
    #[test]
    fn an_op_with_a_clock_past_any_devices_is_refused() {
        let (mut ix, mut other) = (Index::new(), Index::new());
        let mut op = other.put(1u64, "f", entry("a"), false).unwrap();
        op.id.clock = MAX_CLOCK + 1;
        assert!(matches!(ix.insert_foreign(op.clone()), Err(IndexError::Malformed(_))));
        op.id.clock = MAX_CLOCK;
        assert!(ix.insert_foreign(op).unwrap());
        let next = ix.put(2u64, "g", entry("b"), false).unwrap();
        assert_eq!(next.id.clock, MAX_CLOCK + 1, "the next op still comes after it");
    }
}
