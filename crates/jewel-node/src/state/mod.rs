//! The node's state in one transactional store, `HOME/state.redb`: the files this node put
//! (their caps and placement), the owner's settings, and the leases of the blocks it holds
//! for others. Every change is written, durably, in the same transaction that makes it, so
//! a crash keeps either the old state or the new one, never a mix or nothing.
//!
//! The store is versioned ([`VERSION`]). On first start it takes over the files an older
//! node kept (`files.json`, `settings.json`, `leases.redb`), in the transaction that sets
//! the version, and renames them `*.migrated`. A store that is damaged, or that an older
//! file cannot be migrated into, stops the node with one line that names the file and
//! says what to do: the node never starts silently empty.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use jewel::lease::LeaseBook;
use redb::{Database, ReadableTable, ReadableTableMetadata, TableDefinition};

use crate::api::{Audit, PendingRelease, Settings};

mod index;
pub use index::Chain;
pub use index::Head;
pub use jewel::writer::{Durability, Writer, WriterError, MAX_BATCH, WRITE_QUEUE};
/// A change handed to the state's writer (see [`jewel::writer`]).
pub type Pending<R> = jewel::writer::Pending<R, StateError>;

/// A file this node put, as the store keeps it: where its pieces went, and the state of
/// its background work. The API shows it as [`crate::api::FileRecord`]; the two change
/// apart (a field the API adds is not a change of layout, nor the other way round).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct StoredFile {
    pub name: String,
    /// The read cap, so the owner can get the file back by name (the store is 0600).
    #[serde(default)]
    pub cap: Option<String>,
    pub scheme: String,
    pub size: u64,
    pub holders: Vec<String>,
    /// The last audit, if any.
    #[serde(default)]
    pub audit: Option<Audit>,
    /// Slots whose holder said, at the last lease renewal, that it no longer has the piece.
    #[serde(default)]
    pub lease_missing: Vec<usize>,
    /// When the leases on the pieces were last renewed (Unix seconds; 0: at the put).
    #[serde(default)]
    pub leased_at: u64,
    /// Slots whose piece a full verification (`check --verify`) found corrupt, until a
    /// repair replaces them.
    #[serde(default)]
    pub corrupt: Vec<usize>,
    /// The user's index names it: released once no kept entry or version does.
    #[serde(default)]
    pub indexed: bool,
}

impl From<StoredFile> for crate::api::FileRecord {
    fn from(f: StoredFile) -> Self {
        crate::api::FileRecord {
            name: f.name,
            cap: f.cap,
            scheme: f.scheme,
            size: f.size,
            holders: f.holders,
            audit: f.audit,
            lease_missing: f.lease_missing,
            leased_at: f.leased_at,
            corrupt: f.corrupt,
            indexed: f.indexed,
        }
    }
}

/// The store's file name in the node's home.
pub const STATE_FILE: &str = "state.redb";
/// The layout this build writes and reads.
pub const VERSION: u64 = 2;

const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const FILES: TableDefinition<&str, &[u8]> = TableDefinition::new("files");
const SETTINGS: TableDefinition<&str, &[u8]> = TableDefinition::new("settings");
const SETTINGS_KEY: &str = "settings";
/// Blocks the scrubber dropped because they rotted: id → when (Unix seconds).
const DROPPED: TableDefinition<&str, u64> = TableDefinition::new("dropped");
/// Drops remembered, at most (the oldest are forgotten first).
const MAX_DROPPED: usize = 1000;
/// The user's index: every op this device knows (its own and its other devices'), by id
/// (clock, device) → the op (JSON).
const INDEX_OPS: TableDefinition<(u64, u64), &[u8]> = TableDefinition::new("index_ops");
/// Releases holders still owe: "file/holder" → the release (JSON).
const RELEASES: TableDefinition<&str, &[u8]> = TableDefinition::new("releases");
/// Peer id (bytes) → when this node first saw it (Unix seconds), for placement to tell
/// peers known for a while from new ones.
const PEERS_SEEN: TableDefinition<&[u8], u64> = TableDefinition::new("peers_seen");
/// Peers this node was connected to lately (peer id bytes → [`KnownPeer`] as JSON): it
/// bootstraps from them at its next start.
const KNOWN_PEERS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("known_peers");
/// Known peers kept at most (the most recently seen).
pub const MAX_KNOWN_PEERS: usize = 64;
/// The background work queued per file, by when it is due: (work, time, file id) →
/// failures in a row. See [`Work`] for what the time means.
const DUE: TableDefinition<(u8, u64, &str), u32> = TableDefinition::new("due");
/// (work, file id) → its time in [`DUE`].
const DUE_OF: TableDefinition<(u8, &str), u64> = TableDefinition::new("due_of");

/// Background work a file is queued for, in the state store (so that a worker's pass
/// touches what is due, and a restart forgets no backoff). The time a file is queued at is,
/// for [`Work::Audit`] and [`Work::Renew`], the time its worker's interval counts from (its
/// last audit or renewal; 0 for never), so that an interval changed at a restart applies at
/// once; for [`Work::Repair`], when it may be tried next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Work {
    Audit = 0,
    Renew = 1,
    Repair = 2,
}

/// A file queued for some work: its manifest id, its time (see [`Work`]), and the failures
/// in a row so far.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Due {
    pub file: String,
    pub at: u64,
    pub failures: u32,
}

/// Why the state store cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StateError {
    #[error(
        "node state {} is damaged ({reason}); the node will not start with it: restore it from a backup, or move it away to start empty (the node then forgets the files it put)",
        path.display()
    )]
    Damaged { path: PathBuf, reason: String },
    #[error("node state {} is version {found}, newer than this jewel reads ({VERSION}); run a newer jewel", path.display())]
    Newer { path: PathBuf, found: u64 },
    #[error(
        "{} cannot be migrated into the node state ({reason}); repair or move it away, then start the node again",
        path.display()
    )]
    Migrate { path: PathBuf, reason: String },
    #[error("node state {}: {reason}", path.display())]
    Db { path: PathBuf, reason: String },
    #[error("the node's state writer has stopped (is the node shutting down?)")]
    Stopped,
    #[error("node state: {0}")]
    Redb(Box<redb::Error>),
    #[error("node state: a record: {0}")]
    Json(#[from] serde_json::Error),
    #[error("node state: a record cannot be written: {0}")]
    Encode(String),
}

/// redb's errors (and by step: a transaction, a table, storage, a commit), as
/// [`StateError::Redb`].
macro_rules! from_redb {
    ($($t:ty),*) => {
        $(impl From<$t> for StateError {
            fn from(e: $t) -> Self {
                StateError::Redb(Box::new(e.into()))
            }
        })*
    };
}
from_redb!(redb::Error, redb::TransactionError, redb::TableError, redb::StorageError, redb::CommitError);

impl From<WriterError> for StateError {
    fn from(e: WriterError) -> Self {
        match e {
            WriterError::Db { path, reason } => StateError::Db { path, reason },
            _ => StateError::Stopped,
        }
    }
}

/// Changes file `id`'s record within `tx`; what `change` returns, `None` if there is no
/// such file.
fn change_record<R>(
    tx: &redb::WriteTransaction,
    id: &str,
    damaged: &impl Fn(String) -> StateError,
    mut change: impl FnMut(&mut StoredFile) -> R,
) -> Result<Option<R>, StateError> {
    let mut t = tx.open_table(FILES)?;
    let current = t.get(id)?.map(|v| v.value().to_vec());
    let Some(bytes) = current else { return Ok(None) };
    let mut record: StoredFile =
        serde_json::from_slice(&bytes).map_err(|e| damaged(format!("the record of file {id}: {e}")))?;
    let out = change(&mut record);
    let bytes = serde_json::to_vec(&record)?;
    t.insert(id, bytes.as_slice())?;
    Ok(Some(out))
}

fn damaged_at(path: &Path) -> impl Fn(String) -> StateError + Send + 'static {
    let path = path.to_path_buf();
    move |reason| StateError::Damaged { path: path.clone(), reason }
}

/// A read transaction, and a table in it.
type ReadTable<K, V> = (redb::ReadTransaction, redb::ReadOnlyTable<K, V>);

/// Queues `file` for `work` at `at` with `failures`, in `tx`, replacing its place if queued.
fn set_due(
    tx: &redb::WriteTransaction,
    work: Work,
    file: &str,
    at: u64,
    failures: u32,
) -> Result<(), StateError> {
    let mut of = tx.open_table(DUE_OF)?;
    let mut due = tx.open_table(DUE)?;
    let old = of.insert((work as u8, file), at)?.map(|v| v.value());
    if let Some(old) = old {
        due.remove((work as u8, old, file))?;
    }
    due.insert((work as u8, at, file), failures)?;
    Ok(())
}

/// Takes `file` off the queue of each of `works`, in `tx`.
fn clear_due(tx: &redb::WriteTransaction, works: &[Work], file: &str) -> Result<(), StateError> {
    let mut of = tx.open_table(DUE_OF)?;
    let mut due = tx.open_table(DUE)?;
    for work in works {
        if let Some(at) = of.remove((*work as u8, file))?.map(|v| v.value()) {
            due.remove((*work as u8, at, file))?;
        }
    }
    Ok(())
}

/// Queues a file just recorded for its audits and renewals (and a repair, if its last audit
/// found pieces lost: the repair worker decides), in `tx`.
fn queue_file(tx: &redb::WriteTransaction, file: &str, record: &StoredFile) -> Result<(), StateError> {
    set_due(tx, Work::Audit, file, record.audit.as_ref().map_or(0, |a| a.at), 0)?;
    set_due(tx, Work::Renew, file, record.leased_at, 0)?;
    if record.audit.as_ref().is_some_and(|a| !crate::audit::lost_slots(a).is_empty()) {
        set_due(tx, Work::Repair, file, 0, 0)?;
    }
    Ok(())
}

/// The node's state store. Reads are read transactions on the caller's thread (redb's
/// readers never wait for the writer, nor touch the disk's sync); every change goes to the
/// one writer thread ([`jewel::writer`]), which commits changes queued together in one transaction.
pub struct StateStore {
    db: Arc<Database>,
    path: PathBuf,
    writer: Writer,
}

impl std::fmt::Debug for StateStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "StateStore({})", self.path.display())
    }
}

impl StateStore {
    /// Opens (or creates, 0600) `HOME/state.redb`, migrates an older node's files into it on
    /// first start, and checks every record.
    pub fn open(home: &Path) -> Result<StateStore, StateError> {
        let path = home.join(STATE_FILE);
        let existed = path.exists();
        let file = crate::identity::private_file(&path)
            .map_err(|e| StateError::Db { path: path.clone(), reason: e.to_string() })?;
        let db = Database::builder().create_file(file).map_err(|e| match e {
            redb::DatabaseError::DatabaseAlreadyOpen => StateError::Db {
                path: path.clone(),
                reason: "it is open in another process (is a node already running on this home?)".into(),
            },
            e if existed => StateError::Damaged { path: path.clone(), reason: e.to_string() },
            e => StateError::Db { path: path.clone(), reason: e.to_string() },
        })?;
        let db = Arc::new(db);
        let writer = Writer::start(db.clone(), path.clone())?;
        let store = StateStore { db, path, writer };
        let version = store.version().map_err(|e| store.damaged(e))?;
        match version {
            Some(v) if v > VERSION => return Err(StateError::Newer { path: store.path.clone(), found: v }),
            Some(v) if v < VERSION => store.upgrade(v)?,
            Some(_) => {}
            None => store.migrate(home)?,
        }
        store.files().map_err(|e| match e {
            StateError::Db { reason, .. } => store.damaged(reason),
            StateError::Redb(e) => store.damaged(e),
            StateError::Json(e) => store.damaged(e),
            e => e,
        })?;
        store.settings()?;
        store.seed_due()?;
        Ok(store)
    }

    /// Queues every file for its work once, in a store made before the due-queues were
    /// (one transaction; marked done in it).
    fn seed_due(&self) -> Result<(), StateError> {
        let tx = self.db.begin_read()?;
        let seeded = match tx.open_table(META) {
            Ok(t) => t.get("due_seeded")?.is_some(),
            Err(redb::TableError::TableDoesNotExist(_)) => false,
            Err(e) => return Err(e.into()),
        };
        if seeded {
            return Ok(());
        }
        let files = self.files()?;
        self.write(Durability::Durable, move |tx| {
            for (id, record) in &files {
                queue_file(tx, id, record)?;
            }
            let mut m = tx.open_table(META)?;
            m.insert("due_seeded", 1)?;
            Ok(())
        })
        .wait()
    }

    /// The files queued for `work` at or before `until`, earliest first, at most `limit`.
    pub fn due(&self, work: Work, until: u64, limit: usize) -> Result<Vec<Due>, StateError> {
        let Some((_tx, t)) = self.open_read(DUE)? else { return Ok(Vec::new()) };
        let mut out = Vec::new();
        for entry in t.range((work as u8, 0, "")..(work as u8 + 1, 0, ""))? {
            let (k, v) = entry?;
            let (_, at, file) = k.value();
            if at > until || out.len() >= limit {
                break;
            }
            out.push(Due { file: file.to_string(), at, failures: v.value() });
        }
        Ok(out)
    }

    /// The earliest time a file is queued at for `work`.
    pub fn first_due(&self, work: Work) -> Result<Option<u64>, StateError> {
        Ok(self.due(work, u64::MAX, 1)?.first().map(|d| d.at))
    }

    /// How many files are queued for `work`.
    pub fn queued(&self, work: Work) -> Result<usize, StateError> {
        let Some((_tx, t)) = self.open_read(DUE)? else { return Ok(0) };
        let range = t.range((work as u8, 0, "")..(work as u8 + 1, 0, ""))?;
        Ok(range.count())
    }

    /// Queues `file` for `work` at `at` (replacing its place if queued).
    pub fn schedule(&self, work: Work, file: &str, at: u64, failures: u32) -> Pending<()> {
        let file = file.to_string();
        self.write(Durability::Durable, move |tx| set_due(tx, work, &file, at, failures))
    }

    /// Queues `file` for `work` at `at` unless it is queued already (a repair waiting out a
    /// backoff keeps its place); whether it was queued now.
    pub fn schedule_absent(&self, work: Work, file: &str, at: u64) -> Pending<bool> {
        let file = file.to_string();
        self.write(Durability::Durable, move |tx| {
            let queued = {
                let of = tx.open_table(DUE_OF)?;
                let queued = of.get((work as u8, file.as_str()))?.is_some();
                queued
            };
            if queued {
                return Ok(false);
            }
            set_due(tx, work, &file, at, 0)?;
            Ok(true)
        })
    }

    /// Takes `file` off `work`'s queue.
    pub fn unschedule(&self, work: Work, file: &str) -> Pending<()> {
        let file = file.to_string();
        self.write(Durability::Durable, move |tx| clear_due(tx, &[work], &file))
    }

    /// Hands `change` to the writer (see [`jewel::writer`]).
    fn write<R, F>(&self, durability: Durability, change: F) -> Pending<R>
    where
        R: Send + 'static,
        F: FnMut(&redb::WriteTransaction) -> Result<R, StateError> + Send + 'static,
    {
        self.writer.submit(durability, change)
    }

    /// Done once every change handed to the writer before it is committed (or failed).
    pub fn flush(&self) -> Pending<()> {
        self.write(Durability::None, |_| Ok(()))
    }

    /// The writer of the store's database, for what else keeps state in it (the leases of
    /// the blocks this node holds: they share its commits).
    pub fn writer(&self) -> Writer {
        self.writer.clone()
    }

    /// Write transactions committed since the store was opened (a batch of changes is one).
    pub fn commits(&self) -> u64 {
        self.writer.commits()
    }

    fn damaged(&self, reason: impl std::fmt::Display) -> StateError {
        StateError::Damaged { path: self.path.clone(), reason: reason.to_string() }
    }

    fn db_err(&self) -> impl Fn(&dyn std::fmt::Display) -> StateError + '_ {
        move |e| StateError::Db { path: self.path.clone(), reason: e.to_string() }
    }

    /// A read transaction and `table` in it; `None` if the table is not made yet.
    fn open_read<K: redb::Key + 'static, V: redb::Value + 'static>(
        &self,
        table: TableDefinition<K, V>,
    ) -> Result<Option<ReadTable<K, V>>, StateError> {
        let tx = self.db.begin_read()?;
        match tx.open_table(table) {
            Ok(t) => Ok(Some((tx, t))),
            Err(redb::TableError::TableDoesNotExist(_)) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Every entry of `table`, in key order, each turned into a `T` by `each` (which says
    /// when one is damaged); a table not made yet is empty.
    fn scan<K: redb::Key + 'static, V: redb::Value + 'static, T>(
        &self,
        table: redb::TableDefinition<K, V>,
        mut each: impl for<'a> FnMut(K::SelfType<'a>, V::SelfType<'a>) -> Result<T, StateError>,
    ) -> Result<Vec<T>, StateError> {
        let Some((_tx, t)) = self.open_read(table)? else { return Ok(Vec::new()) };
        let mut out = Vec::new();
        for entry in t.iter()? {
            let (k, v) = entry?;
            out.push(each(k.value(), v.value())?);
        }
        Ok(out)
    }

    /// The database, for the lease book that shares it.
    pub fn database(&self) -> Arc<Database> {
        self.db.clone()
    }

    /// The store's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn version(&self) -> Result<Option<u64>, String> {
        let tx = self.db.begin_read().map_err(|e| e.to_string())?;
        let t = match tx.open_table(META) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(e) => return Err(e.to_string()),
        };
        let v = t.get("version").map_err(|e| e.to_string())?.map(|v| v.value());
        Ok(v)
    }

    /// Brings a store of layout `from` to [`VERSION`], in one transaction. Layout 1 kept the
    /// index's bookkeeping in one string-keyed table (see [`index`]).
    fn upgrade(&self, from: u64) -> Result<(), StateError> {
        let moved = self
            .write(Durability::Durable, move |tx| {
                let moved = if from < 2 { index::migrate_meta(tx)? } else { 0 };
                tx.open_table(META)?.insert("version", VERSION)?;
                Ok(moved)
            })
            .wait()?;
        tracing::info!(from, to = VERSION, rows = moved, "upgraded the node state's layout");
        Ok(())
    }

    /// Takes over `files.json`, `settings.json` and `leases.redb` from an older node, all
    /// in the transaction that sets the version; then renames them `*.migrated`.
    fn migrate(&self, home: &Path) -> Result<(), StateError> {
        let files_json = home.join("files.json");
        let files: BTreeMap<String, StoredFile> = read_json(&files_json)?.unwrap_or_default();
        let settings_json = home.join("settings.json");
        let settings: Option<Settings> = read_json(&settings_json)?;
        let leases_path = home.join("leases.redb");
        let old_leases = if leases_path.exists() {
            let book = LeaseBook::open(&leases_path)
                .map_err(|e| StateError::Migrate { path: leases_path.clone(), reason: e.to_string() })?;
            Some(book)
        } else {
            None
        };
        let taken = (files.clone(), settings.clone());
        self.write(Durability::Durable, move |tx| {
            let (files, settings) = &taken;
            let mut t = tx.open_table(FILES)?;
            for (id, record) in files {
                let bytes = serde_json::to_vec(record)?;
                t.insert(id.as_str(), bytes.as_slice())?;
            }
            let mut s = tx.open_table(SETTINGS)?;
            if let Some(settings) = settings {
                let bytes = serde_json::to_vec(settings)?;
                s.insert(SETTINGS_KEY, bytes.as_slice())?;
            }
            let mut m = tx.open_table(META)?;
            m.insert("version", VERSION)?;
            Ok(())
        })
        .wait()?;
        // Leases are a holder's promise to keep blocks for their owners; they come over in
        // their own transaction (redb reads them from the old file), before it is renamed.
        if let Some(old) = old_leases {
            let book = LeaseBook::in_database(self.db.clone(), self.writer.clone())
                .map_err(|e| self.db_err()(&e))?;
            let n = book
                .import(&old)
                .map_err(|e| StateError::Migrate { path: leases_path.clone(), reason: e.to_string() })?;
            tracing::info!(leases = n, "migrated leases.redb into the node state");
        }
        for old in [&files_json, &settings_json, &leases_path] {
            if old.exists() {
                let mut done = old.as_os_str().to_owned();
                done.push(".migrated");
                std::fs::rename(old, &done).map_err(|e| self.db_err()(&e))?;
            }
        }
        if !files.is_empty() {
            tracing::info!(files = files.len(), "migrated files.json into the node state");
        }
        Ok(())
    }

    /// Every file this node put, by manifest id.
    pub fn files(&self) -> Result<BTreeMap<String, StoredFile>, StateError> {
        let files = self.scan(FILES, |k, v| {
            let record: StoredFile = serde_json::from_slice(v)
                .map_err(|e| self.damaged(format!("the record of file {k}: {e}")))?;
            Ok((k.to_string(), record))
        })?;
        Ok(files.into_iter().collect())
    }

    /// One file's record, if this node put it.
    pub fn file(&self, id: &str) -> Result<Option<StoredFile>, StateError> {
        let Some((_tx, t)) = self.open_read(FILES)? else { return Ok(None) };
        let Some(v) = t.get(id)? else { return Ok(None) };
        let record = serde_json::from_slice(v.value())
            .map_err(|e| self.damaged(format!("the record of file {id}: {e}")))?;
        Ok(Some(record))
    }

    /// Records a file, durably.
    pub fn insert_file(&self, id: &str, record: &StoredFile) -> Pending<()> {
        let (id, bytes, record) = (id.to_string(), serde_json::to_vec(record), record.clone());
        self.write(Durability::Durable, move |tx| {
            let bytes = bytes.as_ref().map_err(|e| StateError::Encode(e.to_string()))?;
            let mut t = tx.open_table(FILES)?;
            t.insert(id.as_str(), bytes.as_slice())?;
            queue_file(tx, &id, &record)
        })
    }

    /// Records the files not recorded yet, durably, in one transaction; how many were new.
    pub fn insert_files_absent(&self, records: Vec<(String, StoredFile)>) -> Pending<usize> {
        self.write(Durability::Durable, move |tx| {
            let mut new = 0;
            let mut t = tx.open_table(FILES)?;
            for (id, record) in &records {
                if t.get(id.as_str())?.is_some() {
                    continue;
                }
                let bytes = serde_json::to_vec(record)?;
                t.insert(id.as_str(), bytes.as_slice())?;
                queue_file(tx, id, record)?;
                new += 1;
            }
            Ok(new)
        })
    }

    /// Changes a file's record in one transaction (read, change, write).
    /// What `change` returns; `None` if there is no such file. (`change` may run more than
    /// once, each time on the record as stored: see [`jewel::writer`].)
    pub fn update_file<R: Send + 'static>(
        &self,
        id: &str,
        mut change: impl FnMut(&mut StoredFile) -> R + Send + 'static,
    ) -> Pending<Option<R>> {
        let (damaged, id) = (damaged_at(&self.path), id.to_string());
        self.write(Durability::Durable, move |tx| change_record(tx, &id, &damaged, &mut change))
    }

    /// Records a renewal of file `id`'s leases at `now` (and the slots whose holder said it
    /// no longer has its piece) and queues the next, in one transaction; false if the file
    /// is gone (released meanwhile: nothing is queued).
    pub fn record_renewal(&self, id: &str, now: u64, missing: Vec<usize>) -> Pending<bool> {
        let (damaged, id) = (damaged_at(&self.path), id.to_string());
        self.write(Durability::Durable, move |tx| {
            let renewed = |r: &mut StoredFile| {
                r.lease_missing = missing.clone();
                r.leased_at = now;
            };
            if change_record(tx, &id, &damaged, renewed)?.is_none() {
                return Ok(false);
            }
            set_due(tx, Work::Renew, &id, now, 0)?;
            Ok(true)
        })
    }

    /// Every index op kept, in id order.
    pub fn index_ops(&self) -> Result<Vec<jewel::index::Op>, StateError> {
        self.scan(INDEX_OPS, |_, v| {
            serde_json::from_slice(v).map_err(|e| self.damaged(format!("an index op: {e}")))
        })
    }

    /// Keeps index ops, durably, in one transaction; in the same one, marks the files
    /// `indexed` names (by manifest id) as the index's (see [`StoredFile::indexed`]).
    /// A put's file (`new_file`, its manifest id and record) is recorded in that same
    /// transaction too, so that a file is never kept without its entry nor the other way.
    pub fn add_index_ops(
        &self,
        ops: Vec<jewel::index::Op>,
        indexed: Vec<String>,
        new_file: Option<(String, StoredFile)>,
    ) -> Pending<()> {
        let damaged = damaged_at(&self.path);
        self.write(Durability::Durable, move |tx| {
            let mut t = tx.open_table(INDEX_OPS)?;
            for op in &ops {
                let bytes = serde_json::to_vec(op)?;
                t.insert((op.id.clock, op.id.device), bytes.as_slice())?;
            }
            index::order_ops(tx, &ops)?;
            let mut files = tx.open_table(FILES)?;
            if let Some((id, record)) = &new_file {
                let bytes = serde_json::to_vec(record)?;
                files.insert(id.as_str(), bytes.as_slice())?;
                queue_file(tx, id, record)?;
            }
            for id in &indexed {
                let current = files.get(id.as_str())?.map(|v| v.value().to_vec());
                if let Some(bytes) = current {
                    let mut record: StoredFile = serde_json::from_slice(&bytes)
                        .map_err(|e| damaged(format!("the record of file {id}: {e}")))?;
                    record.indexed = true;
                    let bytes = serde_json::to_vec(&record)?;
                    files.insert(id.as_str(), bytes.as_slice())?;
                }
            }
            Ok(())
        })
    }

    /// When this node first saw each peer it has seen.
    pub fn peers_seen(&self) -> Result<Vec<(Vec<u8>, u64)>, StateError> {
        self.scan(PEERS_SEEN, |k, v| Ok((k.to_vec(), v)))
    }

    /// Records peers seen for the first time (kept if already there), in one transaction.
    /// Not waited for on disk: a crash forgets only that some peers were seen a little
    /// earlier, which makes them count as new a little longer.
    pub fn add_peers_seen(&self, peers: Vec<(Vec<u8>, u64)>) -> Pending<()> {
        self.write(Durability::None, move |tx| {
            let mut t = tx.open_table(PEERS_SEEN)?;
            for (peer, at) in &peers {
                if t.get(peer.as_slice())?.is_none() {
                    t.insert(peer.as_slice(), *at)?;
                }
            }
            Ok(())
        })
    }

    /// The peers this node was connected to lately.
    pub fn known_peers(&self) -> Result<Vec<(Vec<u8>, KnownPeer)>, StateError> {
        self.scan(KNOWN_PEERS, |k, v| Ok((k.to_vec(), serde_json::from_slice(v).unwrap_or_default())))
    }

    /// Remembers peers seen now (replacing what was known of them), keeping the
    /// [`MAX_KNOWN_PEERS`] seen last, in one transaction (not waited for on disk: a crash
    /// forgets only the last sightings).
    pub fn remember_peers(&self, peers: Vec<(Vec<u8>, KnownPeer)>) -> Pending<()> {
        self.write(Durability::None, move |tx| {
            let mut t = tx.open_table(KNOWN_PEERS)?;
            for (peer, known) in &peers {
                let bytes = serde_json::to_vec(known)?;
                t.insert(peer.as_slice(), bytes.as_slice())?;
            }
            let mut all = Vec::new();
            for entry in t.iter()? {
                let (k, v) = entry?;
                let seen = serde_json::from_slice::<KnownPeer>(v.value()).map(|p| p.seen).unwrap_or(0);
                all.push((seen, k.value().to_vec()));
            }
            all.sort_unstable_by_key(|a| std::cmp::Reverse(a.0));
            for (_, k) in all.iter().skip(MAX_KNOWN_PEERS) {
                t.remove(k.as_slice())?;
            }
            Ok(())
        })
    }

    /// The port the node listens on when no `--listen` is given, once chosen.
    pub fn listen_port(&self) -> Result<Option<u16>, StateError> {
        let Some((_tx, t)) = self.open_read(META)? else { return Ok(None) };
        let port = t.get("listen_port")?.map(|v| v.value());
        Ok(port.and_then(|p| u16::try_from(p).ok()))
    }

    /// Keeps the port chosen for the node (durably: peers remember it).
    pub fn set_listen_port(&self, port: u16) -> Pending<()> {
        self.write(Durability::Durable, move |tx| {
            let mut t = tx.open_table(META)?;
            t.insert("listen_port", u64::from(port))?;
            Ok(())
        })
    }

    /// Forgets a file; false if this node has no such file.
    pub fn remove_file(&self, id: &str) -> Pending<bool> {
        self.remove_file_owing(id, Vec::new())
    }

    /// Forgets a file and records, in the same transaction, the releases its holders still
    /// owe; false if this node has no such file.
    pub fn remove_file_owing(&self, id: &str, owed: Vec<PendingRelease>) -> Pending<bool> {
        let id = id.to_string();
        self.write(Durability::Durable, move |tx| {
            let mut t = tx.open_table(FILES)?;
            let removed = t.remove(id.as_str())?.is_some();
            clear_due(tx, &[Work::Audit, Work::Renew, Work::Repair], &id)?;
            let mut r = tx.open_table(RELEASES)?;
            for p in &owed {
                let bytes = serde_json::to_vec(p)?;
                r.insert(format!("{}/{}", p.file, p.holder).as_str(), bytes.as_slice())?;
            }
            Ok(removed)
        })
    }

    /// The releases holders still owe.
    pub fn pending_releases(&self) -> Result<Vec<PendingRelease>, StateError> {
        self.scan(RELEASES, |k, v| {
            serde_json::from_slice(v).map_err(|e| self.damaged(format!("the pending release {k}: {e}")))
        })
    }

    /// A release is done (or no longer needed).
    pub fn settle_release(&self, p: &PendingRelease) -> Pending<()> {
        let key = format!("{}/{}", p.file, p.holder);
        self.write(Durability::Durable, move |tx| {
            let mut t = tx.open_table(RELEASES)?;
            t.remove(key.as_str())?;
            Ok(())
        })
    }

    /// Records that the scrubber dropped `block` at `now` (the newest [`MAX_DROPPED`] kept).
    pub fn record_drop(&self, block: &jewel::BlockId, now: u64) -> Pending<()> {
        let block = block.to_string();
        self.write(Durability::Durable, move |tx| {
            let mut t = tx.open_table(DROPPED)?;
            t.insert(block.as_str(), now)?;
            let len = t.len()? as usize;
            if len > MAX_DROPPED {
                let mut all: Vec<(String, u64)> = Vec::with_capacity(len);
                for entry in t.iter()? {
                    let (k, v) = entry?;
                    all.push((k.value().to_string(), v.value()));
                }
                all.sort_by_key(|(_, at)| *at);
                for (k, _) in &all[..len - MAX_DROPPED] {
                    t.remove(k.as_str())?;
                }
            }
            Ok(())
        })
    }

    /// The blocks the scrubber dropped, oldest first: (id, Unix seconds).
    pub fn dropped(&self) -> Result<Vec<(String, u64)>, StateError> {
        let mut out = self.scan(DROPPED, |k, v| Ok((k.to_string(), v)))?;
        out.sort_by_key(|(_, at)| *at);
        Ok(out)
    }

    /// The owner's settings (the defaults if never set).
    pub fn settings(&self) -> Result<Settings, StateError> {
        let Some((_tx, t)) = self.open_read(SETTINGS)? else { return Ok(Settings::default()) };
        match t.get(SETTINGS_KEY)? {
            Some(v) => {
                serde_json::from_slice(v.value()).map_err(|e| self.damaged(format!("the settings: {e}")))
            }
            None => Ok(Settings::default()),
        }
    }

    pub fn set_settings(&self, settings: &Settings) -> Pending<()> {
        let bytes = serde_json::to_vec(settings);
        self.write(Durability::Durable, move |tx| {
            let bytes = bytes.as_ref().map_err(|e| StateError::Encode(e.to_string()))?;
            let mut t = tx.open_table(SETTINGS)?;
            t.insert(SETTINGS_KEY, bytes.as_slice())?;
            Ok(())
        })
    }
}

/// Reads a JSON file an older node wrote: `None` if it is not there, an error that names it
/// if it cannot be read or parsed (a damaged file is never taken for an empty one).
fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<Option<T>, StateError> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(StateError::Migrate { path: path.to_path_buf(), reason: e.to_string() }),
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| StateError::Migrate { path: path.to_path_buf(), reason: e.to_string() })
}

/// A peer this node was connected to: where it was reached, and when (Unix seconds).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct KnownPeer {
    pub addrs: Vec<String>,
    pub seen: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(name: &str) -> StoredFile {
        StoredFile {
            name: name.into(),
            cap: Some(format!("jewel:r1:{name}")),
            scheme: "jewels:3/5".into(),
            size: 7,
            holders: vec!["a".into(); 5],
            audit: None,
            lease_missing: Vec::new(),
            leased_at: 0,
            corrupt: Vec::new(),
            indexed: false,
        }
    }

    #[test]
    fn records_survive_a_reopen_and_changes_are_read_modify_write() {
        let home = tempfile::tempdir().unwrap();
        {
            let s = StateStore::open(home.path()).unwrap();
            s.insert_file("f1", &record("one")).wait().unwrap();
            s.insert_file("f2", &record("two")).wait().unwrap();
            assert!(s.update_file("f1", |r| r.lease_missing = vec![3]).wait().unwrap().is_some());
            assert!(s.update_file("nope", |r| r.size = 0).wait().unwrap().is_none());
            assert!(s.remove_file("f2").wait().unwrap());
            s.set_settings(&Settings { default_scheme: "replicate:2".into() }).wait().unwrap();
        }
        let s = StateStore::open(home.path()).unwrap();
        s.record_drop(&jewel::BlockId([3; 32]), 77).wait().unwrap();
        let owed =
            PendingRelease { file: "f1".into(), holder: "h".into(), blocks: vec!["b".into()], until: 9 };
        s.insert_file("gone", &record("gone")).wait().unwrap();
        assert!(s.remove_file_owing("gone", vec![owed.clone()]).wait().unwrap());
        assert_eq!(s.pending_releases().unwrap(), vec![owed.clone()]);
        assert_eq!(s.dropped().unwrap(), vec![(jewel::BlockId([3; 32]).to_string(), 77)]);
        let files = s.files().unwrap();
        assert_eq!(files.len(), 1);
        assert_eq!(files["f1"].lease_missing, vec![3]);
        assert_eq!(s.settings().unwrap().default_scheme, "replicate:2");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(home.path().join(STATE_FILE)).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    /// Holds the writer in a change (in a batch of its own: it is running when this
    /// returns) until the returned sender is dropped or sent to, so that changes queued
    /// meanwhile meet in the next batch.
    fn hold_writer(s: &StateStore) -> (std::sync::mpsc::Sender<()>, Pending<()>) {
        let (go, wait) = std::sync::mpsc::channel::<()>();
        let (running, started) = std::sync::mpsc::channel::<()>();
        let held = s.write(Durability::Durable, move |_| {
            let _ = running.send(());
            let _ = wait.recv();
            Ok(())
        });
        started.recv().unwrap();
        (go, held)
    }

    #[test]
    fn changes_queued_together_share_one_commit_on_the_writer_thread() {
        let home = tempfile::tempdir().unwrap();
        let s = StateStore::open(home.path()).unwrap();
        let before = s.commits();
        let (go, held) = hold_writer(&s);
        let pending: Vec<_> = (0..100).map(|i| s.insert_file(&format!("f{i}"), &record("x"))).collect();
        let thread = s.write(Durability::Durable, |_| Ok(std::thread::current().name().map(str::to_string)));
        drop(go);
        held.wait().unwrap();
        for p in pending {
            p.wait().unwrap();
        }
        assert_eq!(
            thread.wait().unwrap().as_deref(),
            Some("jewel-state"),
            "changes run on the writer thread"
        );
        assert_eq!(s.commits() - before, 2, "the held change, then one commit for the 101 queued behind it");
        assert_eq!(s.files().unwrap().len(), 100);
        drop(s);
        assert_eq!(StateStore::open(home.path()).unwrap().files().unwrap().len(), 100, "committed durably");
    }

    /// The leases of the blocks a node holds live in the same database and go through the
    /// same writer (its commits count them), so peers' uploads and the node's own changes
    /// share its group commits, and none runs outside its thread.
    #[test]
    fn a_holders_leases_go_through_the_state_writer() {
        let home = tempfile::tempdir().unwrap();
        let s = StateStore::open(home.path()).unwrap();
        let book = LeaseBook::in_database(s.database(), s.writer()).unwrap();
        let id = jewel::BlockId([7; 32]);
        let before = s.commits();
        book.charge(&id, b"peer", 1000, 5).unwrap();
        assert_eq!(s.commits(), before + 1, "the charge was the state writer's commit");
        let first = jewel::lease::Lease {
            block: id,
            file: jewel::lease::UNASSIGNED,
            owner: b"peer".to_vec(),
            expires: 99,
        };
        book.apply_soon(&[first]).unwrap();
        book.forget(&jewel::BlockId([8; 32])).unwrap();
        assert_eq!(s.commits(), before + 3);
        assert_eq!(book.charge_of(b"peer").unwrap().map(|c| c.bytes), Some(1000));
        assert_eq!(book.expiry(&id).unwrap(), Some(99));
        drop(book);
        drop(s);
        let s = StateStore::open(home.path()).unwrap();
        let book = LeaseBook::in_database(s.database(), s.writer()).unwrap();
        assert_eq!(book.expiry(&id).unwrap(), Some(99), "kept in the node's state");
    }

    #[test]
    fn a_change_that_fails_fails_alone_and_leaves_nothing() {
        let home = tempfile::tempdir().unwrap();
        let s = StateStore::open(home.path()).unwrap();
        let (go, held) = hold_writer(&s);
        let first = s.insert_file("before", &record("before"));
        let bad_record = serde_json::to_vec(&record("half")).unwrap();
        // Writes a record, then fails: neither it nor its write may be kept.
        let failing = s.write(Durability::Durable, move |tx| -> Result<(), StateError> {
            let mut t = tx.open_table(FILES)?;
            t.insert("half", bad_record.as_slice())?;
            Err(StateError::Damaged { path: PathBuf::from("x"), reason: "made to fail".into() })
        });
        let after = s.insert_file("after", &record("after"));
        drop(go);
        held.wait().unwrap();
        first.wait().unwrap();
        after.wait().unwrap();
        let e = failing.wait().unwrap_err();
        assert!(e.to_string().contains("made to fail"), "{e}");
        let files = s.files().unwrap();
        assert!(files.contains_key("before") && files.contains_key("after"), "{files:?}");
        assert!(!files.contains_key("half"), "the failed change's write was kept");
    }

    #[test]
    fn files_are_queued_for_their_work_and_a_pass_reads_only_what_is_due() {
        let home = tempfile::tempdir().unwrap();
        {
            let s = StateStore::open(home.path()).unwrap();
            let mut old = record("old");
            old.leased_at = 100;
            s.insert_file("old", &old).wait().unwrap();
            let mut new = record("new");
            new.leased_at = 500;
            s.insert_file("new", &new).wait().unwrap();
            // Never audited: both due at once; renewals by when they were leased.
            let files = |d: Vec<Due>| d.into_iter().map(|d| d.file).collect::<Vec<_>>();
            assert_eq!(files(s.due(Work::Audit, 0, 10).unwrap()), ["new", "old"]);
            assert_eq!(files(s.due(Work::Renew, 499, 10).unwrap()), ["old"]);
            assert_eq!((s.first_due(Work::Renew).unwrap(), s.queued(Work::Renew).unwrap()), (Some(100), 2));
            // Audited "old" at 1000: only "new" is due before it.
            s.schedule(Work::Audit, "old", 1000, 0).wait().unwrap();
            assert_eq!(files(s.due(Work::Audit, 999, 10).unwrap()), ["new"]);
            assert_eq!(s.due(Work::Audit, u64::MAX, 1).unwrap().len(), 1, "at most the limit");
            // A repair that failed twice waits out its backoff, across a restart.
            assert!(s.schedule_absent(Work::Repair, "old", 1000).wait().unwrap());
            s.schedule(Work::Repair, "old", 1040, 2).wait().unwrap();
            assert!(!s.schedule_absent(Work::Repair, "old", 1001).wait().unwrap(), "it keeps its place");
            // A removed file leaves every queue.
            assert!(s.remove_file("new").wait().unwrap());
            assert_eq!(files(s.due(Work::Audit, u64::MAX, 10).unwrap()), ["old"]);
            assert_eq!(files(s.due(Work::Renew, u64::MAX, 10).unwrap()), ["old"]);
        }
        let s = StateStore::open(home.path()).unwrap();
        assert!(s.due(Work::Repair, 1039, 10).unwrap().is_empty(), "the backoff outlives the restart");
        assert_eq!(
            s.due(Work::Repair, 1040, 10).unwrap(),
            vec![Due { file: "old".into(), at: 1040, failures: 2 }]
        );
        s.unschedule(Work::Repair, "old").wait().unwrap();
        assert_eq!((s.first_due(Work::Repair).unwrap(), s.queued(Work::Repair).unwrap()), (None, 0));
    }

    #[test]
    fn a_renewal_is_recorded_and_queued_again_in_one_commit_unless_the_file_is_gone() {
        let home = tempfile::tempdir().unwrap();
        let s = StateStore::open(home.path()).unwrap();
        s.insert_file("f", &record("f")).wait().unwrap();
        let before = s.commits();
        assert!(s.record_renewal("f", 700, vec![2]).wait().unwrap());
        assert_eq!(s.commits(), before + 1);
        let f = s.file("f").unwrap().unwrap();
        assert_eq!((f.leased_at, f.lease_missing), (700, vec![2]));
        assert_eq!(
            s.due(Work::Renew, u64::MAX, 10).unwrap(),
            vec![Due { file: "f".into(), at: 700, failures: 0 }]
        );
        // Released while its renewal ran: nothing is recorded, nothing queued.
        assert!(s.remove_file("f").wait().unwrap());
        assert!(!s.record_renewal("f", 800, Vec::new()).wait().unwrap());
        assert!(s.due(Work::Renew, u64::MAX, 10).unwrap().is_empty());
    }

    #[test]
    fn a_store_made_before_the_queues_has_its_files_queued_once() {
        let home = tempfile::tempdir().unwrap();
        {
            let s = StateStore::open(home.path()).unwrap();
            let mut lost = record("lost");
            lost.leased_at = 7;
            lost.audit = Some(crate::api::Audit {
                at: 50,
                states: vec![crate::api::PieceState::Alive, crate::api::PieceState::Missing],
                ..Default::default()
            });
            s.insert_file("lost", &lost).wait().unwrap();
            s.insert_file("fine", &record("fine")).wait().unwrap();
            // As a store made before the queues: no queue, no mark.
            s.write(Durability::Durable, move |tx| {
                tx.delete_table(DUE)?;
                tx.delete_table(DUE_OF)?;
                let mut m = tx.open_table(META)?;
                m.remove("due_seeded")?;
                Ok(())
            })
            .wait()
            .unwrap();
            assert!(s.due(Work::Audit, u64::MAX, 10).unwrap().is_empty());
        }
        let s = StateStore::open(home.path()).unwrap();
        let audit: Vec<_> =
            s.due(Work::Audit, u64::MAX, 10).unwrap().into_iter().map(|d| (d.file, d.at)).collect();
        assert_eq!(audit, [("fine".to_string(), 0), ("lost".to_string(), 50)]);
        let repair: Vec<_> = s.due(Work::Repair, u64::MAX, 10).unwrap().into_iter().map(|d| d.file).collect();
        assert_eq!(repair, ["lost"], "a file whose last audit lost pieces goes to the repair worker");
        // Seeded once: a file taken off a queue stays off at the next start.
        s.unschedule(Work::Repair, "lost").wait().unwrap();
        drop(s);
        assert!(StateStore::open(home.path()).unwrap().due(Work::Repair, u64::MAX, 10).unwrap().is_empty());
    }

    #[test]
    fn the_last_peers_seen_and_the_port_survive_a_reopen() {
        let home = tempfile::tempdir().unwrap();
        {
            let s = StateStore::open(home.path()).unwrap();
            assert_eq!(s.listen_port().unwrap(), None);
            s.set_listen_port(4001).wait().unwrap();
            let peers: Vec<_> = (0..MAX_KNOWN_PEERS as u64 + 6)
                .map(|i| {
                    (
                        i.to_be_bytes().to_vec(),
                        KnownPeer { addrs: vec![format!("/ip4/11.0.0.1/tcp/{i}")], seen: i },
                    )
                })
                .collect();
            s.remember_peers(peers[..10].to_vec()).wait().unwrap();
            s.remember_peers(peers[10..].to_vec()).wait().unwrap();
            // Seen again: replaced, not doubled.
            s.remember_peers(vec![(peers[0].0.clone(), KnownPeer { addrs: vec![], seen: 1000 })])
                .wait()
                .unwrap();
        }
        let s = StateStore::open(home.path()).unwrap();
        assert_eq!(s.listen_port().unwrap(), Some(4001));
        let known = s.known_peers().unwrap();
        assert_eq!(known.len(), MAX_KNOWN_PEERS, "only the last seen are kept");
        assert!(known.iter().any(|(_, k)| k.seen == 1000), "the one seen again stays");
        assert!(known.iter().all(|(_, k)| k.seen == 1000 || k.seen >= 7), "the oldest went");
    }

    #[test]
    fn an_older_nodes_files_are_migrated_once_and_kept_aside() {
        let home = tempfile::tempdir().unwrap();
        let mut old = BTreeMap::new();
        old.insert("m1".to_string(), record("photo.raw"));
        std::fs::write(home.path().join("files.json"), serde_json::to_vec(&old).unwrap()).unwrap();
        std::fs::write(home.path().join("settings.json"), br#"{"default_scheme":"parity:4"}"#).unwrap();
        let book = LeaseBook::open(&home.path().join("leases.redb")).unwrap();
        let lease = jewel::lease::Lease {
            block: jewel::BlockId([7; 32]),
            file: jewel::BlockId([8; 32]),
            owner: vec![1, 2],
            expires: 4_000_000_000,
        };
        book.apply(&[lease]).unwrap();
        drop(book);

        let s = StateStore::open(home.path()).unwrap();
        assert_eq!(s.files().unwrap(), old);
        assert_eq!(s.settings().unwrap().default_scheme, "parity:4");
        let leases = LeaseBook::in_database(s.database(), s.writer()).unwrap();
        assert_eq!(leases.expiry(&jewel::BlockId([7; 32])).unwrap(), Some(4_000_000_000));
        for f in ["files.json", "settings.json", "leases.redb"] {
            assert!(!home.path().join(f).exists(), "{f} was moved aside");
            assert!(home.path().join(format!("{f}.migrated")).exists());
        }
        drop((s, leases));
        // A later files.json (put back by hand, say) is not migrated over the store again.
        std::fs::write(home.path().join("files.json"), b"{}").unwrap();
        let s = StateStore::open(home.path()).unwrap();
        assert_eq!(s.files().unwrap(), old);
    }

    #[test]
    fn a_damaged_files_json_stops_the_start_and_is_left_as_it_was() {
        let home = tempfile::tempdir().unwrap();
        std::fs::write(home.path().join("files.json"), b"{\"m1\": {\"name\": ").unwrap();
        let e = StateStore::open(home.path()).unwrap_err();
        let line = e.to_string();
        assert!(matches!(e, StateError::Migrate { .. }), "{e:?}");
        assert!(line.contains("files.json") && line.contains("cannot be migrated"), "{line}");
        assert!(home.path().join("files.json").exists());
    }

    #[test]
    fn a_damaged_store_stops_the_start_with_a_line_that_names_it() {
        let home = tempfile::tempdir().unwrap();
        {
            let s = StateStore::open(home.path()).unwrap();
            s.insert_file("f1", &record("one")).wait().unwrap();
        }
        let path = home.path().join(STATE_FILE);
        let mut bytes = std::fs::read(&path).unwrap();
        for b in bytes.iter_mut().take(4096) {
            *b = 0xa5;
        }
        std::fs::write(&path, bytes).unwrap();
        let e = StateStore::open(home.path()).unwrap_err();
        assert!(matches!(e, StateError::Damaged { .. }), "{e:?}");
        let line = e.to_string();
        assert!(line.contains("state.redb") && line.contains("damaged") && !line.contains('\n'), "{line}");
    }
}
