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

use crate::api::{FileRecord, PendingRelease, Settings};

/// The store's file name in the node's home.
pub const STATE_FILE: &str = "state.redb";
/// The layout this build writes and reads.
pub const VERSION: u64 = 1;

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
/// The index's bookkeeping: this device's id, its head's sequence number and cap, the
/// highest sequence number seen of each record, the folder nodes stored.
const INDEX_META: TableDefinition<&str, &[u8]> = TableDefinition::new("index_meta");
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
}

/// The node's state store. Cheap to share: every method is one transaction.
pub struct StateStore {
    db: Arc<Database>,
    path: PathBuf,
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
        let store = StateStore { db: Arc::new(db), path };
        let version = store.version().map_err(|e| store.damaged(e))?;
        match version {
            Some(v) if v > VERSION => return Err(StateError::Newer { path: store.path.clone(), found: v }),
            Some(_) => {}
            None => store.migrate(home)?,
        }
        store.files().map_err(|e| match e {
            StateError::Db { reason, .. } => store.damaged(reason),
            e => e,
        })?;
        store.settings()?;
        Ok(store)
    }

    fn damaged(&self, reason: impl std::fmt::Display) -> StateError {
        StateError::Damaged { path: self.path.clone(), reason: reason.to_string() }
    }

    fn db_err(&self) -> impl Fn(&dyn std::fmt::Display) -> StateError + '_ {
        move |e| StateError::Db { path: self.path.clone(), reason: e.to_string() }
    }

    /// Every entry of `table`, in key order, each turned into a `T` by `each` (which says
    /// when one is damaged); a table not made yet is empty.
    fn scan<K: redb::Key + 'static, V: redb::Value + 'static, T>(
        &self,
        table: redb::TableDefinition<K, V>,
        mut each: impl for<'a> FnMut(K::SelfType<'a>, V::SelfType<'a>) -> Result<T, StateError>,
    ) -> Result<Vec<T>, StateError> {
        let err = self.db_err();
        let tx = self.db.begin_read().map_err(|e| err(&e))?;
        let t = match tx.open_table(table) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
            Err(e) => return Err(err(&e)),
        };
        let mut out = Vec::new();
        for entry in t.iter().map_err(|e| err(&e))? {
            let (k, v) = entry.map_err(|e| err(&e))?;
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

    /// Takes over `files.json`, `settings.json` and `leases.redb` from an older node, all
    /// in the transaction that sets the version; then renames them `*.migrated`.
    fn migrate(&self, home: &Path) -> Result<(), StateError> {
        let files_json = home.join("files.json");
        let files: BTreeMap<String, FileRecord> = read_json(&files_json)?.unwrap_or_default();
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
        let err = self.db_err();
        let tx = self.db.begin_write().map_err(|e| err(&e))?;
        {
            let mut t = tx.open_table(FILES).map_err(|e| err(&e))?;
            for (id, record) in &files {
                let bytes = serde_json::to_vec(record).map_err(|e| err(&e))?;
                t.insert(id.as_str(), bytes.as_slice()).map_err(|e| err(&e))?;
            }
            let mut s = tx.open_table(SETTINGS).map_err(|e| err(&e))?;
            if let Some(settings) = &settings {
                let bytes = serde_json::to_vec(settings).map_err(|e| err(&e))?;
                s.insert(SETTINGS_KEY, bytes.as_slice()).map_err(|e| err(&e))?;
            }
            let mut m = tx.open_table(META).map_err(|e| err(&e))?;
            m.insert("version", VERSION).map_err(|e| err(&e))?;
        }
        tx.commit().map_err(|e| err(&e))?;
        // Leases are a holder's promise to keep blocks for their owners; they come over in
        // their own transaction (redb reads them from the old file), before it is renamed.
        if let Some(old) = old_leases {
            let book = LeaseBook::in_database(self.db.clone()).map_err(|e| err(&e))?;
            let n = book
                .import(&old)
                .map_err(|e| StateError::Migrate { path: leases_path.clone(), reason: e.to_string() })?;
            tracing::info!(leases = n, "migrated leases.redb into the node state");
        }
        for old in [&files_json, &settings_json, &leases_path] {
            if old.exists() {
                let mut done = old.as_os_str().to_owned();
                done.push(".migrated");
                std::fs::rename(old, &done).map_err(|e| err(&e))?;
            }
        }
        if !files.is_empty() {
            tracing::info!(files = files.len(), "migrated files.json into the node state");
        }
        Ok(())
    }

    /// Every file this node put, by manifest id.
    pub fn files(&self) -> Result<BTreeMap<String, FileRecord>, StateError> {
        let files = self.scan(FILES, |k, v| {
            let record: FileRecord = serde_json::from_slice(v)
                .map_err(|e| self.damaged(format!("the record of file {k}: {e}")))?;
            Ok((k.to_string(), record))
        })?;
        Ok(files.into_iter().collect())
    }

    /// One file's record, if this node put it.
    pub fn file(&self, id: &str) -> Result<Option<FileRecord>, StateError> {
        let err = self.db_err();
        let tx = self.db.begin_read().map_err(|e| err(&e))?;
        let t = match tx.open_table(FILES) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(e) => return Err(err(&e)),
        };
        let Some(v) = t.get(id).map_err(|e| err(&e))? else { return Ok(None) };
        let record = serde_json::from_slice(v.value())
            .map_err(|e| self.damaged(format!("the record of file {id}: {e}")))?;
        Ok(Some(record))
    }

    /// Records a file, durably, before this returns.
    pub fn insert_file(&self, id: &str, record: &FileRecord) -> Result<(), StateError> {
        let err = self.db_err();
        let bytes = serde_json::to_vec(record).map_err(|e| err(&e))?;
        let tx = self.db.begin_write().map_err(|e| err(&e))?;
        {
            let mut t = tx.open_table(FILES).map_err(|e| err(&e))?;
            t.insert(id, bytes.as_slice()).map_err(|e| err(&e))?;
        }
        tx.commit().map_err(|e| err(&e))
    }

    /// Records the files not recorded yet, durably, in one transaction; how many were new.
    pub fn insert_files_absent(&self, records: &[(String, FileRecord)]) -> Result<usize, StateError> {
        let err = self.db_err();
        let tx = self.db.begin_write().map_err(|e| err(&e))?;
        let mut new = 0;
        {
            let mut t = tx.open_table(FILES).map_err(|e| err(&e))?;
            for (id, record) in records {
                if t.get(id.as_str()).map_err(|e| err(&e))?.is_some() {
                    continue;
                }
                let bytes = serde_json::to_vec(record).map_err(|e| err(&e))?;
                t.insert(id.as_str(), bytes.as_slice()).map_err(|e| err(&e))?;
                new += 1;
            }
        }
        tx.commit().map_err(|e| err(&e))?;
        Ok(new)
    }

    /// Changes a file's record in one transaction (read, change, write); false if this node
    /// has no such file.
    pub fn update_file(&self, id: &str, change: impl FnOnce(&mut FileRecord)) -> Result<bool, StateError> {
        let err = self.db_err();
        let tx = self.db.begin_write().map_err(|e| err(&e))?;
        let found = {
            let mut t = tx.open_table(FILES).map_err(|e| err(&e))?;
            let current = t.get(id).map_err(|e| err(&e))?.map(|v| v.value().to_vec());
            match current {
                Some(bytes) => {
                    let mut record: FileRecord = serde_json::from_slice(&bytes)
                        .map_err(|e| self.damaged(format!("the record of file {id}: {e}")))?;
                    change(&mut record);
                    let bytes = serde_json::to_vec(&record).map_err(|e| err(&e))?;
                    t.insert(id, bytes.as_slice()).map_err(|e| err(&e))?;
                    true
                }
                None => false,
            }
        };
        tx.commit().map_err(|e| err(&e))?;
        Ok(found)
    }

    /// Every index op kept, in id order.
    pub fn index_ops(&self) -> Result<Vec<jewel::index::Op>, StateError> {
        self.scan(INDEX_OPS, |_, v| {
            serde_json::from_slice(v).map_err(|e| self.damaged(format!("an index op: {e}")))
        })
    }

    /// Keeps index ops, durably, in one transaction; in the same one, marks the files
    /// `indexed` names (by manifest id) as the index's (see [`FileRecord::indexed`]).
    pub fn add_index_ops(&self, ops: &[jewel::index::Op], indexed: &[String]) -> Result<(), StateError> {
        let err = self.db_err();
        let tx = self.db.begin_write().map_err(|e| err(&e))?;
        {
            let mut t = tx.open_table(INDEX_OPS).map_err(|e| err(&e))?;
            for op in ops {
                let bytes = serde_json::to_vec(op).map_err(|e| err(&e))?;
                t.insert((op.id.clock, op.id.device), bytes.as_slice()).map_err(|e| err(&e))?;
            }
            let mut files = tx.open_table(FILES).map_err(|e| err(&e))?;
            for id in indexed {
                let current = files.get(id.as_str()).map_err(|e| err(&e))?.map(|v| v.value().to_vec());
                if let Some(bytes) = current {
                    let mut record: FileRecord = serde_json::from_slice(&bytes)
                        .map_err(|e| self.damaged(format!("the record of file {id}: {e}")))?;
                    record.indexed = true;
                    let bytes = serde_json::to_vec(&record).map_err(|e| err(&e))?;
                    files.insert(id.as_str(), bytes.as_slice()).map_err(|e| err(&e))?;
                }
            }
        }
        tx.commit().map_err(|e| err(&e))
    }

    /// A value of the index's bookkeeping.
    pub fn index_meta(&self, key: &str) -> Result<Option<Vec<u8>>, StateError> {
        let err = self.db_err();
        let tx = self.db.begin_read().map_err(|e| err(&e))?;
        let t = match tx.open_table(INDEX_META) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(e) => return Err(err(&e)),
        };
        Ok(t.get(key).map_err(|e| err(&e))?.map(|v| v.value().to_vec()))
    }

    /// When this node first saw each peer it has seen.
    pub fn peers_seen(&self) -> Result<Vec<(Vec<u8>, u64)>, StateError> {
        self.scan(PEERS_SEEN, |k, v| Ok((k.to_vec(), v)))
    }

    /// Records peers seen for the first time (kept if already there), in one transaction.
    /// Not waited for on disk: a crash forgets only that some peers were seen a little
    /// earlier, which makes them count as new a little longer.
    pub fn add_peers_seen(&self, peers: &[(Vec<u8>, u64)]) -> Result<(), StateError> {
        let err = self.db_err();
        let mut tx = self.db.begin_write().map_err(|e| err(&e))?;
        tx.set_durability(redb::Durability::None);
        {
            let mut t = tx.open_table(PEERS_SEEN).map_err(|e| err(&e))?;
            for (peer, at) in peers {
                if t.get(peer.as_slice()).map_err(|e| err(&e))?.is_none() {
                    t.insert(peer.as_slice(), *at).map_err(|e| err(&e))?;
                }
            }
        }
        tx.commit().map_err(|e| err(&e))
    }

    /// The peers this node was connected to lately.
    pub fn known_peers(&self) -> Result<Vec<(Vec<u8>, KnownPeer)>, StateError> {
        self.scan(KNOWN_PEERS, |k, v| Ok((k.to_vec(), serde_json::from_slice(v).unwrap_or_default())))
    }

    /// Remembers peers seen now (replacing what was known of them), keeping the
    /// [`MAX_KNOWN_PEERS`] seen last, in one transaction (not waited for on disk: a crash
    /// forgets only the last sightings).
    pub fn remember_peers(&self, peers: &[(Vec<u8>, KnownPeer)]) -> Result<(), StateError> {
        let err = self.db_err();
        let mut tx = self.db.begin_write().map_err(|e| err(&e))?;
        tx.set_durability(redb::Durability::None);
        {
            let mut t = tx.open_table(KNOWN_PEERS).map_err(|e| err(&e))?;
            for (peer, known) in peers {
                let bytes = serde_json::to_vec(known).map_err(|e| err(&e))?;
                t.insert(peer.as_slice(), bytes.as_slice()).map_err(|e| err(&e))?;
            }
            let mut all = Vec::new();
            for entry in t.iter().map_err(|e| err(&e))? {
                let (k, v) = entry.map_err(|e| err(&e))?;
                let seen = serde_json::from_slice::<KnownPeer>(v.value()).map(|p| p.seen).unwrap_or(0);
                all.push((seen, k.value().to_vec()));
            }
            all.sort_unstable_by_key(|a| std::cmp::Reverse(a.0));
            for (_, k) in all.iter().skip(MAX_KNOWN_PEERS) {
                t.remove(k.as_slice()).map_err(|e| err(&e))?;
            }
        }
        tx.commit().map_err(|e| err(&e))
    }

    /// The port the node listens on when no `--listen` is given, once chosen.
    pub fn listen_port(&self) -> Result<Option<u16>, StateError> {
        let err = self.db_err();
        let tx = self.db.begin_read().map_err(|e| err(&e))?;
        let t = match tx.open_table(META) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(e) => return Err(err(&e)),
        };
        let port = t.get("listen_port").map_err(|e| err(&e))?.map(|v| v.value());
        Ok(port.and_then(|p| u16::try_from(p).ok()))
    }

    /// Keeps the port chosen for the node (durably: peers remember it).
    pub fn set_listen_port(&self, port: u16) -> Result<(), StateError> {
        let err = self.db_err();
        let tx = self.db.begin_write().map_err(|e| err(&e))?;
        {
            let mut t = tx.open_table(META).map_err(|e| err(&e))?;
            t.insert("listen_port", u64::from(port)).map_err(|e| err(&e))?;
        }
        tx.commit().map_err(|e| err(&e))
    }

    /// Sets values of the index's bookkeeping, durably, in one transaction.
    pub fn set_index_meta(&self, values: &[(&str, &[u8])]) -> Result<(), StateError> {
        let err = self.db_err();
        let tx = self.db.begin_write().map_err(|e| err(&e))?;
        {
            let mut t = tx.open_table(INDEX_META).map_err(|e| err(&e))?;
            for (k, v) in values {
                t.insert(*k, *v).map_err(|e| err(&e))?;
            }
        }
        tx.commit().map_err(|e| err(&e))
    }

    /// Forgets a file; false if this node has no such file.
    pub fn remove_file(&self, id: &str) -> Result<bool, StateError> {
        let err = self.db_err();
        let tx = self.db.begin_write().map_err(|e| err(&e))?;
        let removed = {
            let mut t = tx.open_table(FILES).map_err(|e| err(&e))?;
            let removed = t.remove(id).map_err(|e| err(&e))?.is_some();
            removed
        };
        tx.commit().map_err(|e| err(&e))?;
        Ok(removed)
    }

    /// Forgets a file and records, in the same transaction, the releases its holders still
    /// owe; false if this node has no such file.
    pub fn remove_file_owing(&self, id: &str, owed: &[PendingRelease]) -> Result<bool, StateError> {
        let err = self.db_err();
        let tx = self.db.begin_write().map_err(|e| err(&e))?;
        let removed = {
            let mut t = tx.open_table(FILES).map_err(|e| err(&e))?;
            let removed = t.remove(id).map_err(|e| err(&e))?.is_some();
            let mut r = tx.open_table(RELEASES).map_err(|e| err(&e))?;
            for p in owed {
                let bytes = serde_json::to_vec(p).map_err(|e| err(&e))?;
                r.insert(format!("{}/{}", p.file, p.holder).as_str(), bytes.as_slice())
                    .map_err(|e| err(&e))?;
            }
            removed
        };
        tx.commit().map_err(|e| err(&e))?;
        Ok(removed)
    }

    /// The releases holders still owe.
    pub fn pending_releases(&self) -> Result<Vec<PendingRelease>, StateError> {
        self.scan(RELEASES, |k, v| {
            serde_json::from_slice(v).map_err(|e| self.damaged(format!("the pending release {k}: {e}")))
        })
    }

    /// A release is done (or no longer needed).
    pub fn settle_release(&self, p: &PendingRelease) -> Result<(), StateError> {
        let err = self.db_err();
        let tx = self.db.begin_write().map_err(|e| err(&e))?;
        {
            let mut t = tx.open_table(RELEASES).map_err(|e| err(&e))?;
            t.remove(format!("{}/{}", p.file, p.holder).as_str()).map_err(|e| err(&e))?;
        }
        tx.commit().map_err(|e| err(&e))
    }

    /// Records that the scrubber dropped `block` at `now` (the newest [`MAX_DROPPED`] kept).
    pub fn record_drop(&self, block: &jewel::BlockId, now: u64) -> Result<(), StateError> {
        let err = self.db_err();
        let tx = self.db.begin_write().map_err(|e| err(&e))?;
        {
            let mut t = tx.open_table(DROPPED).map_err(|e| err(&e))?;
            t.insert(block.to_string().as_str(), now).map_err(|e| err(&e))?;
            let len = t.len().map_err(|e| err(&e))? as usize;
            if len > MAX_DROPPED {
                let mut all: Vec<(String, u64)> = Vec::with_capacity(len);
                for entry in t.iter().map_err(|e| err(&e))? {
                    let (k, v) = entry.map_err(|e| err(&e))?;
                    all.push((k.value().to_string(), v.value()));
                }
                all.sort_by_key(|(_, at)| *at);
                for (k, _) in &all[..len - MAX_DROPPED] {
                    t.remove(k.as_str()).map_err(|e| err(&e))?;
                }
            }
        }
        tx.commit().map_err(|e| err(&e))
    }

    /// The blocks the scrubber dropped, oldest first: (id, Unix seconds).
    pub fn dropped(&self) -> Result<Vec<(String, u64)>, StateError> {
        let mut out = self.scan(DROPPED, |k, v| Ok((k.to_string(), v)))?;
        out.sort_by_key(|(_, at)| *at);
        Ok(out)
    }

    /// The owner's settings (the defaults if never set).
    pub fn settings(&self) -> Result<Settings, StateError> {
        let err = self.db_err();
        let tx = self.db.begin_read().map_err(|e| err(&e))?;
        let t = match tx.open_table(SETTINGS) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Settings::default()),
            Err(e) => return Err(err(&e)),
        };
        match t.get(SETTINGS_KEY).map_err(|e| err(&e))? {
            Some(v) => {
                serde_json::from_slice(v.value()).map_err(|e| self.damaged(format!("the settings: {e}")))
            }
            None => Ok(Settings::default()),
        }
    }

    pub fn set_settings(&self, settings: &Settings) -> Result<(), StateError> {
        let err = self.db_err();
        let bytes = serde_json::to_vec(settings).map_err(|e| err(&e))?;
        let tx = self.db.begin_write().map_err(|e| err(&e))?;
        {
            let mut t = tx.open_table(SETTINGS).map_err(|e| err(&e))?;
            t.insert(SETTINGS_KEY, bytes.as_slice()).map_err(|e| err(&e))?;
        }
        tx.commit().map_err(|e| err(&e))
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

    fn record(name: &str) -> FileRecord {
        FileRecord {
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
            s.insert_file("f1", &record("one")).unwrap();
            s.insert_file("f2", &record("two")).unwrap();
            assert!(s.update_file("f1", |r| r.lease_missing = vec![3]).unwrap());
            assert!(!s.update_file("nope", |r| r.size = 0).unwrap());
            assert!(s.remove_file("f2").unwrap());
            s.set_settings(&Settings { default_scheme: "replicate:2".into() }).unwrap();
        }
        let s = StateStore::open(home.path()).unwrap();
        s.record_drop(&jewel::BlockId([3; 32]), 77).unwrap();
        let owed =
            PendingRelease { file: "f1".into(), holder: "h".into(), blocks: vec!["b".into()], until: 9 };
        s.insert_file("gone", &record("gone")).unwrap();
        assert!(s.remove_file_owing("gone", std::slice::from_ref(&owed)).unwrap());
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

    #[test]
    fn the_last_peers_seen_and_the_port_survive_a_reopen() {
        let home = tempfile::tempdir().unwrap();
        {
            let s = StateStore::open(home.path()).unwrap();
            assert_eq!(s.listen_port().unwrap(), None);
            s.set_listen_port(4001).unwrap();
            let peers: Vec<_> = (0..MAX_KNOWN_PEERS as u64 + 6)
                .map(|i| {
                    (
                        i.to_be_bytes().to_vec(),
                        KnownPeer { addrs: vec![format!("/ip4/11.0.0.1/tcp/{i}")], seen: i },
                    )
                })
                .collect();
            s.remember_peers(&peers[..10]).unwrap();
            s.remember_peers(&peers[10..]).unwrap();
            // Seen again: replaced, not doubled.
            s.remember_peers(&[(peers[0].0.clone(), KnownPeer { addrs: vec![], seen: 1000 })]).unwrap();
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
        let leases = LeaseBook::in_database(s.database()).unwrap();
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
            s.insert_file("f1", &record("one")).unwrap();
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
