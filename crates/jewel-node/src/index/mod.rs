//! The user's index on this device (see [`jewel::index`]): what the user stored, by path,
//! kept in the state store, shared with the user's other devices, and recoverable from the
//! recovery phrase alone.
//!
//! - Every change is an op, written to the state store in one transaction before the
//!   command that made it returns, then sent at once to the user's other online devices
//!   over gossip (one topic per user; the ops sealed with the index key and signed with
//!   the user's key).
//! - Shortly after, the device stores a snapshot of every op it knows (sealed with the
//!   index key) as an ordinary Jewel file, and publishes its cap as a signed name record
//!   in the DHT twice: in this device's slot and in the user's "latest" slot.
//! - At start, after `jewel id recover` or `init`, and every 10 seconds, it resolves the
//!   latest slot and the slot of every device its ops name, and merges the snapshots it
//!   has not merged yet. A record with a lower sequence number than one seen is refused.
//! - A version that falls off (more than [`KEEP_VERSIONS`] at a path, or every version of
//!   a path that was removed) is released, by the device that put it, once no kept entry
//!   names its cap.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use jewel::index::{self, By, Entry, FolderNode, Index, IndexError, Op};
use jewel::names::{self, NameError, NameRecord, Sealed};
use jewel::user::UserKey;
use jewel_net::NetError;
use serde::{Deserialize, Serialize};

use crate::api::{LsEntry, LsRequest, LsResponse};
use crate::node::{GetError, PutError, RmError};
use crate::workers::Clock;

mod glue;
use crate::state::{StateError, StateStore};
pub(crate) use glue::{spawn, NodeFiles, NodeNet};

/// Versions kept of each path (the live one included).
pub const KEEP_VERSIONS: usize = 5;
/// How far after this device's time another device's op may be made (clocks disagree a
/// little; a day is far more than any honest one).
pub const MAX_AHEAD: u64 = 24 * 3600;
/// How long a removed path keeps its versions (so `jewel undelete` can bring it back),
/// unless removed with `--purge`: 30 days.
pub const UNDELETE_FOR: u64 = 30 * 24 * 3600;
/// How often the versions that fell off, or whose grace ran out, are looked for.
const RELEASE_EVERY: Duration = Duration::from_secs(3600);
/// How often the device looks for its other devices' heads, and republishes its own.
const CATCH_UP_EVERY: Duration = Duration::from_secs(10);
const REPUBLISH_EVERY: Duration = Duration::from_secs(1800);
/// A change is published this long after it, so a burst of changes is one snapshot.
const PUBLISH_DELAY: Duration = Duration::from_millis(300);
/// Snapshots are stored at most this often (a long burst of changes, `put -r` say, makes
/// one every 2 s, not one per change; other devices get each change by gossip at once).
const PUBLISH_GAP: Duration = Duration::from_secs(2);
/// Devices looked up per catch-up, at most.
const MAX_DEVICES: usize = 64;
/// A device answers another's ask at most this often.
const ANSWER_EVERY: Duration = Duration::from_secs(2);
/// The name a pack's record carries (`jewel dir`).
pub(crate) const PACK_NAME: &str = ".jewel-pack";
/// Deltas a chain holds before the next publication is a checkpoint: a reader follows at
/// most this many back.
const MAX_DELTAS: usize = 16;
/// Ops per gossip message at most (a pack's change can hold thousands).
const OPS_PER_MESSAGE: usize = 256;
/// The largest folder node read, in bytes.
const MAX_FOLDER_NODE: u64 = 64 << 20;
/// Entries listed under one shared folder, at most.
const MAX_LISTED: usize = 100_000;
/// Distinct folder nodes one walk of a shared folder reads, at most.
const MAX_WALK_NODES: usize = 100_000;
/// Folders nested in a shared folder, at most.
const MAX_WALK_DEPTH: usize = 64;

/// Why an index command failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IndexOpError {
    #[error(transparent)]
    Index(#[from] IndexError),
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Net(#[from] NetError),
    #[error(transparent)]
    Get(#[from] GetError),
    #[error(transparent)]
    Rm(#[from] RmError),
    #[error(transparent)]
    Put(#[from] PutError),
    #[error(transparent)]
    Name(#[from] NameError),
    #[error("this node holds no user identity: make one with `jewel id init`, or `jewel id recover`")]
    NoUser,
    #[error("no record of {0} was found in the DHT")]
    NoRecord(String),
    #[error("{0} is {1} bytes, too large to be a folder")]
    TooLarge(String, u64),
    #[error("the index's file {0}: {1}")]
    Io(String, std::io::Error),
    #[error("interrupted (the node is stopping)")]
    Interrupted,
    #[error("the shared folder cannot be walked: {0}")]
    Walk(String),
    #[error("`{0}` was removed, and its versions freed (with --purge, or over 30 days ago): nothing can bring it back")]
    Freed(String),
}

/// What a head record's value says: the snapshot's cap, and where the device is.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct HeadValue {
    cap: String,
    device: u64,
    peer: String,
    #[serde(default)]
    addrs: Vec<String>,
}

/// What the index needs of the file service: store bytes, read them back into memory,
/// describe a file, release one. The node's is [`NodeFiles`]; unit tests use an
/// in-memory one.
#[async_trait::async_trait]
pub(crate) trait IndexFiles: Send + Sync {
    /// Stores `bytes` as a file of the node's own (a snapshot or a folder node); its cap.
    async fn store(&self, bytes: Vec<u8>, name: &str) -> Result<String, IndexOpError>;
    /// A file's bytes: its first `range` bytes, or all of it; at most `limit`.
    async fn read(&self, cap: &str, range: Option<u64>, limit: u64) -> Result<Vec<u8>, IndexOpError>;
    /// The length and scheme of the file `cap` names.
    async fn describe(&self, cap: &str) -> Result<(u64, String), IndexOpError>;
    /// Releases a file this node put (its holders may drop it; the node forgets it).
    async fn release(&self, cap: &str) -> Result<(), IndexOpError>;
}

/// What the index needs of the network: gossip to the user's devices, and signed name
/// records in the DHT.
#[async_trait::async_trait]
pub(crate) trait IndexNet: Send + Sync {
    async fn gossip(&self, topic: String, msg: Vec<u8>) -> Result<(), NetError>;
    async fn publish_name(&self, record: NameRecord) -> Result<(), NetError>;
    async fn find_name(&self, key: Vec<u8>) -> Result<Option<NameRecord>, NetError>;
    /// This node's peer id, and a few addresses it listens on (for the head record).
    async fn whereabouts(&self) -> Result<(String, Vec<String>), NetError>;
    /// Connects to another device of the user, so gossip reaches it directly.
    async fn meet(&self, peer: &str, addrs: &[String]);
}

/// The index as it is loaded from the state store, before the services it uses exist.
pub(crate) struct Loaded {
    device: u64,
    index: Index,
}

/// The index service: the user's index on this device, its sync with the user's other
/// devices, and the release of what falls off. It knows files only through
/// [`IndexFiles`], the network only through [`IndexNet`].
pub(crate) struct IndexService {
    /// This device's id (random, kept in the state store).
    pub device: u64,
    state: Arc<StateStore>,
    files: Arc<dyn IndexFiles>,
    net: Arc<dyn IndexNet>,
    clock: Arc<dyn Clock>,
    index: Mutex<Index>,
    user: RwLock<Option<UserKey>>,
    /// Wakes the publisher.
    changed: tokio::sync::Notify,
    /// Wakes the catch-up.
    catch_up: tokio::sync::Notify,
    /// Wakes the gossip receiver to join the user's topic.
    joined: tokio::sync::Notify,
    /// Messages heard from the user's other devices (not counting their asks).
    pub heard: tokio::sync::watch::Sender<u64>,
    /// When this device last answered an ask.
    answered: Mutex<Option<std::time::Instant>>,
    /// Wakes the release of fallen-off versions (one run for a burst of changes).
    release: tokio::sync::Notify,
    /// Held while a head is published (by the publisher, or for a command).
    publishing: tokio::sync::Mutex<()>,
}

impl Loaded {
    /// Loads the index and this device's id (made on first start).
    pub fn open(state: &StateStore) -> Result<Loaded, StateError> {
        let device = match state.index_device()? {
            Some(d) => d,
            None => {
                let mut b = [0u8; 8];
                jewel::crypto::fill_random(&mut b).map_err(|e| StateError::Db {
                    path: state.path().to_path_buf(),
                    reason: format!("no random numbers: {e}"),
                })?;
                let d = u64::from_be_bytes(b) >> 1;
                state.set_index_device(d).wait()?;
                d
            }
        };
        let mut index = Index::new();
        for op in state.index_ops()? {
            if let Err(e) = index.insert(op) {
                tracing::warn!(error = %e, "an index op in the state store was skipped");
            }
        }
        Ok(Loaded { device, index })
    }
}

impl IndexService {
    /// The service over what was loaded, for `user` (if the node holds one).
    pub fn new(
        loaded: Loaded,
        state: Arc<StateStore>,
        user: Option<UserKey>,
        files: Arc<dyn IndexFiles>,
        net: Arc<dyn IndexNet>,
        clock: Arc<dyn Clock>,
    ) -> IndexService {
        IndexService {
            device: loaded.device,
            state,
            files,
            net,
            clock,
            index: Mutex::new(loaded.index),
            user: RwLock::new(user),
            changed: Default::default(),
            catch_up: Default::default(),
            joined: Default::default(),
            heard: tokio::sync::watch::Sender::new(0),
            answered: Mutex::new(None),
            release: Default::default(),
            publishing: Default::default(),
        }
    }

    pub(crate) fn user(&self) -> Option<UserKey> {
        self.user.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    /// The node now holds `user` (after `jewel id init` or `recover`): join its topic and
    /// publish (the caller catches up).
    pub fn set_user(&self, user: UserKey) {
        *self.user.write().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(user);
        self.joined.notify_one();
        self.changed.notify_one();
    }

    /// The files the index shows.
    pub fn files(&self) -> usize {
        self.with(|ix| ix.files().len())
    }

    fn with<T>(&self, f: impl FnOnce(&mut Index) -> T) -> T {
        let mut guard = self.index.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut guard)
    }

    /// A sequence number for a record replacing one numbered `last`: the time in
    /// milliseconds, and always above `last`.
    fn next_seq(&self, last: u64) -> u64 {
        self.clock.now().saturating_mul(1000).max(last + 1)
    }
}

/// A test hook: `JEWEL_FAILPOINT_RELEASE_PAUSE_MS` pauses the release of fallen versions
/// between its two reads (the kept caps and the file records), so that a test can make the
/// race a put could win there likely, and show that it cannot be won.
fn failpoint_pause() {
    let pause = std::env::var("JEWEL_FAILPOINT_RELEASE_PAUSE_MS").ok().and_then(|v| v.parse().ok());
    if let Some(ms) = pause {
        std::thread::sleep(Duration::from_millis(ms));
    }
}

/// The stored files (manifest ids) of every version the index keeps `now`: the
/// [`KEEP_VERSIONS`] newest of each file, and of each path removed less than
/// [`UNDELETE_FOR`] ago (not purged). A packed file's is its pack's, which many entries share.
fn kept_files(ix: &Index, now: u64) -> HashSet<String> {
    let live = ix.files().into_keys();
    let in_grace =
        ix.removed_paths().into_iter().filter(|(_, at, purge)| in_grace(*at, *purge, now)).map(|(p, ..)| p);
    live.chain(in_grace)
        .flat_map(|p| ix.versions(p).into_iter().take(KEEP_VERSIONS))
        .filter_map(|(_, e)| jewel::caps::Cap::parse(&e.cap).ok())
        .map(|c| c.manifest().to_string())
        .collect()
}

/// Whether a path removed at `at` (purged or not) still keeps its versions `now`: for
/// [`UNDELETE_FOR`] after the remove, unless purged. (A remove by an older node carries no
/// time: its versions were freed at once, as they were then.)
fn in_grace(at: u64, purge: bool, now: u64) -> bool {
    !purge && at > 0 && at.saturating_add(UNDELETE_FOR) > now
}

impl IndexService {
    /// The paths whose shown entry is the file `cap` names.
    pub(crate) fn paths_of(&self, cap: &str) -> Vec<String> {
        let Ok(id) = jewel::caps::Cap::parse(cap).map(|c| c.manifest()) else { return Vec::new() };
        self.with(|ix| {
            ix.files()
                .into_iter()
                .filter(|(_, es)| {
                    es.iter().any(|e| jewel::caps::Cap::parse(&e.cap).is_ok_and(|c| c.manifest() == id))
                })
                .map(|(p, _)| p.to_string())
                .collect()
        })
    }

    /// What `jewel status` says of the index.
    pub(crate) fn status(&self) -> Result<crate::api::IndexStatus, StateError> {
        let (files, changes) = (self.files(), self.with(|ix| ix.len() as u64));
        let published_changes = self.state.head()?.ops;
        let shared = self.user().is_some();
        let chain = self.state.chain()?;
        Ok(crate::api::IndexStatus {
            files,
            changes,
            published_changes,
            shared,
            last_head_bytes: chain.last_bytes,
            last_head_delta: chain.last_delta,
        })
    }

    /// Where a put of a file called `name` goes: `at`, or into it if it is a folder (or
    /// ends with `/`), or `name` at the root; checked before anything is stored.
    pub(crate) fn precheck(
        &self,
        at: Option<&str>,
        name: &str,
        no_clobber: bool,
    ) -> Result<String, IndexError> {
        self.with(|ix| {
            let path = match at {
                None => index::normalize(name)?,
                Some(a) => {
                    let p = index::normalize(a)?;
                    if a.ends_with('/') || ix.is_folder(&p) {
                        index::normalize(&index::join(&p, name))?
                    } else {
                        p
                    }
                }
            };
            ix.check_target(&path, no_clobber)?;
            Ok(path)
        })
    }

    /// Applies a change to the index: the ops it makes are durable before this returns
    /// (with `new_file`, a put's file record, in the same transaction), then sent to the
    /// user's other devices, published, and what fell off is released.
    ///
    /// The change is made, and handed to the state writer, under the index's lock (so the
    /// store gets the changes in the order the index made them); its commit is awaited
    /// outside the lock, so that changes made meanwhile share one commit.
    pub(crate) async fn change(
        self: &Arc<Self>,
        indexed: &[String],
        new_file: Option<(String, crate::state::StoredFile)>,
        change: impl FnOnce(&mut Index, By) -> Result<Vec<Op>, IndexError>,
    ) -> Result<Vec<Op>, IndexOpError> {
        let (ops, kept) = self.with(|ix| -> Result<_, IndexOpError> {
            // A change that fails, or is not kept, leaves the index as the store holds it.
            let ops = match change(ix, By { device: self.device, at: self.clock.now() }) {
                Ok(ops) => ops,
                Err(e) => {
                    self.reload(ix)?;
                    return Err(e.into());
                }
            };
            let kept = self.state.add_index_ops(ops.clone(), indexed.to_vec(), new_file);
            Ok((ops, kept))
        })?;
        if let Err(e) = kept.await {
            self.with(|ix| self.reload(ix))?;
            return Err(e.into());
        }
        self.after_change(ops.clone(), true);
        Ok(ops)
    }

    /// Puts `ix` back to what the state store holds (after a change that was not kept),
    /// once every change queued before is committed (or failed): the changes of other
    /// callers, made in `ix` and queued but not committed yet, are not lost from it.
    /// Blocks for that one commit; only on a change that failed.
    fn reload(&self, ix: &mut Index) -> Result<(), StateError> {
        self.state.flush().wait()?;
        let mut back = Index::new();
        for op in self.state.index_ops()? {
            let _ = back.insert(op);
        }
        *ix = back;
        Ok(())
    }

    /// What follows a change: gossip (for this device's own changes), publication (for
    /// merged ones too: any one device's head is then the whole index, whichever devices
    /// are lost), release of what fell off.
    fn after_change(self: &Arc<Self>, ops: Vec<Op>, own: bool) {
        if ops.is_empty() {
            return;
        }
        self.changed.notify_one();
        // Only an op that replaces another can make a version fall off.
        if ops.iter().any(|op| !op.replaces.is_empty()) {
            self.release.notify_one();
        }
        if own {
            let node = self.clone();
            tokio::spawn(async move {
                if let Err(e) = node.gossip_ops(&ops).await {
                    tracing::debug!(error = %e, "index change not gossiped (the head record carries it)");
                }
            });
        }
    }

    async fn gossip_ops(&self, ops: &[Op]) -> Result<(), IndexOpError> {
        let Some(user) = self.user() else { return Ok(()) };
        for ops in ops.chunks(OPS_PER_MESSAGE) {
            let msg = index::seal_message(&user, &index::Message { ops: ops.to_vec(), ask: false })?;
            if msg.len() > jewel_net::swarm::GOSSIP_MAX {
                return Err(IndexError::Malformed(format!(
                    "{} bytes of changes, over the gossip limit",
                    msg.len()
                ))
                .into());
            }
            self.net.gossip(index::topic(&user), msg).await?;
        }
        Ok(())
    }

    /// Merges ops from another device; how many were new. An op made more than
    /// [`MAX_AHEAD`] after this device's time is refused (one line, for now: it merges once
    /// this clock catches up, from the next head or message that carries it): its time
    /// would hold removed versions past their grace and hide it from `--at` views.
    async fn merge_ops(self: &Arc<Self>, ops: Vec<Op>) -> Result<usize, IndexOpError> {
        let latest = self.clock.now().saturating_add(MAX_AHEAD);
        let (ahead, ops): (Vec<Op>, Vec<Op>) = ops.into_iter().partition(|op| op.at > latest);
        if let Some(first) = ahead.first() {
            tracing::warn!(
                ops = ahead.len(),
                path = %first.path,
                at = first.at,
                now = self.clock.now(),
                "refused index ops from another device made in the future (is its clock wrong?)"
            );
        }
        let (new, kept) = self.with(|ix| {
            let mut fresh = Vec::new();
            for op in ops {
                match ix.insert_foreign(op.clone()) {
                    Ok(true) => fresh.push(op),
                    Ok(false) => {}
                    Err(e) => tracing::warn!(error = %e, "skipped an index op from another device"),
                }
            }
            let kept = self.state.add_index_ops(fresh.clone(), Vec::new(), None);
            (fresh, kept)
        });
        if let Err(e) = kept.await {
            self.with(|ix| self.reload(ix))?;
            return Err(e.into());
        }
        let n = new.len();
        self.adopt(&new).await?;
        self.after_change(new, false);
        Ok(n)
    }

    /// Sends every op this device has to the user's other devices (when it joins their
    /// topic, asking for theirs in return; or to answer a device that just joined, at most
    /// once per [`ANSWER_EVERY`]). An index too large for one message is left to the heads.
    pub(crate) async fn tell_all(&self, ask: bool) -> Result<(), IndexOpError> {
        let Some(user) = self.user() else { return Ok(()) };
        let ops: Vec<Op> = self.with(|ix| ix.ops().cloned().collect());
        let mut msg = index::seal_message(&user, &index::Message { ops, ask })?;
        if msg.len() > jewel_net::swarm::GOSSIP_MAX {
            if !ask {
                return Ok(());
            }
            msg = index::seal_message(&user, &index::Message { ops: Vec::new(), ask })?;
        }
        self.net.gossip(index::topic(&user), msg).await?;
        Ok(())
    }

    fn answer_ask(self: &Arc<Self>) {
        let now = std::time::Instant::now();
        {
            let mut last = self.answered.lock().unwrap_or_else(|p| p.into_inner());
            if last.is_some_and(|t| now.duration_since(t) < ANSWER_EVERY) {
                return;
            }
            *last = Some(now);
        }
        let node = self.clone();
        tokio::spawn(async move {
            if let Err(e) = node.tell_all(false).await {
                tracing::debug!(error = %e, "could not answer another device");
            }
        });
    }

    /// Waits until another device's answer arrives after `before` (see
    /// [`UserIndex::heard`]), at most `within`.
    pub(crate) async fn wait_heard(&self, before: u64, within: Duration) {
        let mut rx = self.heard.subscribe();
        let _ = tokio::time::timeout(within, rx.wait_for(|n| *n > before)).await;
    }

    /// Takes on the files another device of the user put (the entries of `ops` this node
    /// has no record of): their leases are renewed, and they are audited and repaired,
    /// here too, so they outlive the device that put them.
    async fn adopt(&self, ops: &[Op]) -> Result<(), IndexOpError> {
        let mut records = Vec::new();
        for op in ops {
            let Some(e) = &op.entry else { continue };
            let Ok(cap) = jewel::caps::Cap::parse(&e.cap) else { continue };
            let id = cap.manifest().to_string();
            // A packed file's stored file is its pack: adopted once, at least as long as
            // the files in it reach.
            let (name, size) = match &cap {
                jewel::caps::Cap::Slice(s) => (PACK_NAME.to_string(), s.offset + s.len),
                _ => (op.path.clone(), e.size),
            };
            let record = crate::state::StoredFile {
                name,
                cap: Some(cap.stored().to_string()),
                scheme: e.scheme.clone(),
                size,
                holders: Vec::new(),
                audit: None,
                lease_missing: Vec::new(),
                leased_at: 0,
                corrupt: Vec::new(),
                indexed: true,
            };
            records.push((id, record));
        }
        if !records.is_empty() {
            self.state.insert_files_absent(records).await?;
        }
        Ok(())
    }

    /// A gossip message on the user's topic: checked (signature, seal) and merged.
    async fn receive_gossip(self: &Arc<Self>, data: &[u8]) -> Result<usize, IndexOpError> {
        let Some(user) = self.user() else { return Ok(0) };
        let message = index::open_message(&user, data)?;
        if message.ask {
            self.answer_ask();
        } else {
            self.heard.send_modify(|n| *n += 1);
        }
        self.merge_ops(message.ops).await
    }

    /// Releases the files this node put for the index that no kept entry names any more.
    ///
    /// The decision is made under the index's lock, with the kept caps and the file
    /// records read together: a put marks its record as the index's in the transaction
    /// that keeps its op, under the same lock, so a put landing meanwhile is either in
    /// both or in neither (read apart, a put between the two reads was released while its
    /// path showed it as current). Each release checks again just before, in case a merge
    /// made the file current again since.
    async fn release_fallen(self: &Arc<Self>) {
        let decided = self.with(|ix| -> Result<Vec<(String, String, String)>, StateError> {
            let kept = kept_files(ix, self.clock.now());
            failpoint_pause();
            Ok(self
                .state
                .files()?
                .into_iter()
                .filter_map(|(id, r)| {
                    let cap = r.cap.filter(|_| r.indexed && !kept.contains(&id))?;
                    Some((r.name, id, cap))
                })
                .collect())
        });
        let fallen = match decided {
            Ok(f) => f,
            Err(e) => return tracing::warn!(error = %e, "could not list files to release"),
        };
        let mut kept: Option<(usize, HashSet<String>)> = None;
        for (name, id, cap) in fallen {
            let still_fallen = self.with(|ix| {
                if kept.as_ref().is_none_or(|(len, _)| *len != ix.len()) {
                    kept = Some((ix.len(), kept_files(ix, self.clock.now())));
                }
                kept.as_ref().is_some_and(|(_, k)| !k.contains(&id))
            });
            if !still_fallen {
                continue;
            }
            match self.files.release(&cap).await {
                Ok(_) => tracing::info!(name = %name, "released a version no index entry keeps"),
                Err(e) => tracing::warn!(name = %name, error = %e, "could not release a fallen-off version"),
            }
        }
    }

    /// Records a put's file at `path`, with its record (`file`: manifest id, record) in
    /// the same transaction; whether it replaced an entry.
    pub(crate) async fn put(
        self: &Arc<Self>,
        path: &str,
        entry: Entry,
        no_clobber: bool,
        file: (String, crate::state::StoredFile),
    ) -> Result<bool, IndexOpError> {
        let replaced = self.with(|ix| ix.is_file(path));
        self.put_many(vec![(path.to_string(), entry)], no_clobber, Some(file)).await?;
        Ok(replaced)
    }

    /// Records many files at their paths in one change, with the record of the file that
    /// holds them (`file`: a pack's; none when they are all stored already) in the same
    /// transaction.
    pub(crate) async fn put_many(
        self: &Arc<Self>,
        entries: Vec<(String, Entry)>,
        no_clobber: bool,
        file: Option<(String, crate::state::StoredFile)>,
    ) -> Result<(), IndexOpError> {
        let manifest: Vec<String> = file.iter().map(|(id, _)| id.clone()).collect();
        self.change(&manifest, file, |ix, by| {
            entries.into_iter().map(|(path, entry)| ix.put(by, &path, entry, no_clobber)).collect()
        })
        .await?;
        Ok(())
    }

    /// The cap of the file the index shows at `path` (the newest, if devices disagree).
    pub(crate) fn cap_at(&self, path: &str) -> Option<String> {
        let path = index::normalize(path).ok()?;
        self.with(|ix| ix.entries(&path).last().map(|e| e.cap.clone()))
    }

    /// The caps of the files the index shows, by content hash and scheme: a content put
    /// again is not stored again.
    pub(crate) fn caps_by_content(&self) -> std::collections::HashMap<(String, String), String> {
        self.with(|ix| {
            ix.files()
                .into_values()
                .flat_map(|es| es.into_iter())
                .filter(|e| !e.hash.is_empty() && jewel::caps::Cap::parse(&e.cap).is_ok())
                .map(|e| ((e.hash.clone(), e.scheme.clone()), e.cap.clone()))
                .collect()
        })
    }

    /// `jewel ls`: a path of the index, or a cap (a file's, or a shared folder's).
    pub async fn ls(self: &Arc<Self>, req: LsRequest) -> Result<LsResponse, IndexOpError> {
        if req.target.starts_with("jewel:") {
            return self.ls_cap(&req.target, req.recursive).await;
        }
        let path = index::normalize(&req.target)?;
        let now = self.clock.now();
        self.with(|ix| {
            // The tree as it was then (`--at`): the ops made by that time.
            let past = req.at.map(|t| ix.as_of(t));
            let ix = past.as_ref().unwrap_or(ix);
            let now = req.at.unwrap_or(now);
            if req.versions {
                if ix.is_folder(&path) {
                    return Err(IndexError::IsFolder(path.clone()).into());
                }
                // A removed path's versions were released with it: none is listed.
                let removed_kept = ix.removed(&path).is_some_and(|(at, purge)| in_grace(at, purge, now));
                let kept = if ix.is_file(&path) || removed_kept { KEEP_VERSIONS } else { 0 };
                let versions: Vec<_> = ix.versions(&path).into_iter().take(kept).collect();
                if versions.is_empty() {
                    return Err(IndexError::NotFound(path.clone()).into());
                }
                let live = ix.entries(&path).len();
                return Ok(LsResponse {
                    entries: versions
                        .into_iter()
                        .enumerate()
                        .map(|(i, (_, e))| LsEntry {
                            version: Some(i + 1),
                            live: i < live,
                            ..LsEntry::file(&path, &[e])
                        })
                        .collect(),
                });
            }
            let listed = ix.list(&path, req.recursive)?;
            Ok(LsResponse {
                entries: listed
                    .into_iter()
                    .map(|l| {
                        if l.is_folder() {
                            LsEntry::folder(&l.path, l.files, l.size)
                        } else {
                            LsEntry::file(&l.path, &l.entries.iter().collect::<Vec<_>>())
                        }
                    })
                    .collect(),
            })
        })
    }

    /// `jewel log PATH`: every change made at `path`, oldest first.
    pub fn log(&self, path: &str) -> Result<Vec<crate::api::Change>, IndexOpError> {
        let path = index::normalize(path)?;
        let changes = self.with(|ix| {
            ix.log(&path)
                .into_iter()
                .map(|op| crate::api::Change {
                    at: op.at,
                    device: op.id.device,
                    cap: op.entry.as_ref().map(|e| e.cap.clone()),
                    size: op.entry.as_ref().map_or(0, |e| e.size),
                    purge: op.purge,
                })
                .collect::<Vec<_>>()
        });
        if changes.is_empty() {
            return Err(IndexError::NotFound(path).into());
        }
        Ok(changes)
    }

    /// Lists a cap: a file, or a shared folder (walked, with `recursive`, to every file).
    async fn ls_cap(self: &Arc<Self>, cap: &str, recursive: bool) -> Result<LsResponse, IndexOpError> {
        let Some(node) = self.read_folder(cap).await? else {
            let (len, scheme) = self.files.describe(cap).await?;
            let file = LsEntry { scheme, ..LsEntry::shared("", len, 0, cap) };
            return Ok(LsResponse { entries: vec![file] });
        };
        // A walk has a budget (folder nodes read, depth, entries listed), and a sub-folder
        // named many times is read once: a shared folder is a stranger's DAG, and one of
        // depth 20 whose two children are one node names a million paths.
        let mut out = Vec::new();
        let mut read: std::collections::HashMap<String, Arc<FolderNode>> = Default::default();
        let mut todo = vec![(String::new(), Arc::new(node), 0usize)];
        while let Some((at, node, depth)) = todo.pop() {
            for c in &node.children {
                let path = index::join(&at, &c.name);
                if out.len() + todo.len() >= MAX_LISTED {
                    return Err(IndexOpError::Walk(format!("it names more than {MAX_LISTED} entries")));
                }
                if c.folder && recursive {
                    if depth >= MAX_WALK_DEPTH {
                        return Err(IndexOpError::Walk(format!(
                            "it nests deeper than {MAX_WALK_DEPTH} folders"
                        )));
                    }
                    if let Some(sub) = read.get(&c.cap) {
                        todo.push((path, sub.clone(), depth + 1));
                        continue;
                    }
                    if read.len() >= MAX_WALK_NODES {
                        return Err(IndexOpError::Walk(format!("it has more than {MAX_WALK_NODES} folders")));
                    }
                    match self.read_folder(&c.cap).await? {
                        Some(sub) => {
                            let sub = Arc::new(sub);
                            read.insert(c.cap.clone(), sub.clone());
                            todo.push((path, sub, depth + 1));
                        }
                        None => tracing::warn!(%path, "a shared folder names a sub-folder that is not one"),
                    }
                } else if c.folder {
                    out.push(LsEntry { caps: vec![c.cap.clone()], ..LsEntry::folder(&path, 0, c.size) });
                } else {
                    out.push(LsEntry { mode: c.mode, ..LsEntry::shared(&path, c.size, c.mtime, &c.cap) });
                }
            }
        }
        out.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(LsResponse { entries: out })
    }

    /// The folder node a cap reads, or `None` if it reads a plain file.
    async fn read_folder(&self, cap: &str) -> Result<Option<FolderNode>, IndexOpError> {
        let (len, _) = self.files.describe(cap).await?;
        let head = self.files.read(cap, Some(10), 10).await?;
        if !FolderNode::is_folder(&head) {
            return Ok(None);
        }
        if len > MAX_FOLDER_NODE {
            return Err(IndexOpError::TooLarge(cap.to_string(), len));
        }
        let bytes = self.files.read(cap, None, MAX_FOLDER_NODE).await?;
        Ok(FolderNode::decode(&bytes).transpose()?)
    }

    /// `jewel rm PATH`.
    /// Its versions stay for [`UNDELETE_FOR`] (`jewel undelete`), or go at once with `purge`.
    pub async fn rm_path(
        self: &Arc<Self>,
        path: &str,
        recursive: bool,
        purge: bool,
    ) -> Result<Vec<String>, IndexOpError> {
        let ops = self.change(&[], None, |ix, by| ix.remove_purging(by, path, recursive, purge)).await?;
        if purge {
            self.release.notify_one();
        }
        Ok(ops.into_iter().map(|op| op.path).collect())
    }

    /// `jewel undelete PATH`: the removed file at `path` back, as its newest version, while
    /// its versions are kept; its cap.
    pub async fn undelete(self: &Arc<Self>, path: &str) -> Result<String, IndexOpError> {
        let path = index::normalize(path)?;
        let now = self.clock.now();
        if self.with(|ix| ix.removed(&path).is_some_and(|(at, purge)| !in_grace(at, purge, now))) {
            return Err(IndexOpError::Freed(path));
        }
        let ops = self
            .change(&[], None, |ix, by| {
                match ix.removed(&path) {
                    Some((at, purge)) if in_grace(at, purge, now) => {}
                    Some(_) => {
                        return Err(IndexError::NotFound(format!("{path} (removed, and its versions freed)")))
                    }
                    None if ix.is_file(&path) => return Err(IndexError::Exists(path.clone())),
                    None => return Err(IndexError::NotFound(path.clone())),
                }
                Ok(vec![ix.undelete(by, &path)?])
            })
            .await?;
        Ok(ops.first().and_then(|op| op.entry.as_ref()).map(|e| e.cap.clone()).unwrap_or_default())
    }

    /// `jewel mv A B`.
    pub async fn mv(self: &Arc<Self>, from: &str, to: &str) -> Result<Vec<(String, String)>, IndexOpError> {
        let ops = self.change(&[], None, |ix, by| ix.rename(by, from, to, KEEP_VERSIONS)).await?;
        let removed: Vec<&Op> = ops.iter().filter(|o| o.entry.is_none()).collect();
        // One put per version kept: a file's are one after another, its newest last.
        let mut put: Vec<&Op> = ops.iter().filter(|o| o.entry.is_some()).collect();
        put.dedup_by(|next, first| next.path == first.path);
        Ok(removed.iter().zip(put).map(|(a, b)| (a.path.clone(), b.path.clone())).collect())
    }

    /// `jewel share PATH`: a file's cap, or a folder's: the folder written out as folder
    /// nodes (each names its children by cap), bottom up; nodes already stored are reused.
    pub async fn share(self: &Arc<Self>, path: &str) -> Result<(String, bool), IndexOpError> {
        let path = index::normalize(path)?;
        let files: Vec<(String, Entry)> = self.with(|ix| -> Result<_, IndexError> {
            if ix.is_file(&path) {
                return Ok(vec![(String::new(), ix.entry(&path, None)?)]);
            }
            if !ix.is_folder(&path) {
                return Err(IndexError::NotFound(path.clone()));
            }
            let skip = if path.is_empty() { 0 } else { path.len() + 1 };
            Ok(ix
                .files_under(&path)
                .into_iter()
                .filter_map(|(p, e)| Some((p[skip..].to_string(), (*e.last()?).clone())))
                .collect())
        })?;
        // A packed file's cap opens its whole pack: what is shared is packed anew.
        let mut files = files;
        self.repack_to_share(&mut files).await?;
        if let [(rel, e)] = files.as_slice() {
            if rel.is_empty() {
                return Ok((e.cap.clone(), false));
            }
        }
        // Folders, deepest first, each with its children.
        let mut folders: BTreeMap<String, Vec<index::Child>> = BTreeMap::new();
        folders.insert(String::new(), Vec::new());
        for (rel, e) in &files {
            let (dir, name) = rel.rsplit_once('/').unwrap_or(("", rel));
            let mut d = dir;
            loop {
                folders.entry(d.to_string()).or_default();
                match d.rsplit_once('/') {
                    Some((up, _)) => d = up,
                    None if !d.is_empty() => d = "",
                    None => break,
                }
            }
            folders.entry(dir.to_string()).or_default().push(index::Child {
                name: name.to_string(),
                cap: e.cap.clone(),
                folder: false,
                size: e.size,
                mtime: e.mtime,
                mode: e.mode,
            });
        }
        let mut order: Vec<String> = folders.keys().cloned().collect();
        order.sort_by_key(|d| std::cmp::Reverse(if d.is_empty() { 0 } else { d.matches('/').count() + 1 }));
        let mut caps: BTreeMap<String, (String, u64)> = BTreeMap::new();
        for dir in order {
            let mut children = folders.remove(&dir).unwrap_or_default();
            for (sub, (cap, size)) in caps.iter().filter(|(s, _)| parent_of(s) == dir && !s.is_empty()) {
                let name = sub.rsplit_once('/').map_or(sub.as_str(), |(_, n)| n);
                children.push(index::Child {
                    name: name.to_string(),
                    cap: cap.clone(),
                    folder: true,
                    size: *size,
                    mtime: 0,
                    mode: 0,
                });
            }
            children.sort_by(|a, b| a.name.cmp(&b.name));
            let size = children.iter().map(|c| c.size).sum();
            let bytes = FolderNode { children }.encode()?;
            let hash: [u8; 32] = blake3::hash(&bytes).into();
            let cap = match self.state.folder_node(hash)? {
                Some(cap) => cap,
                None => {
                    let cap = self.files.store(bytes, ".jewel-folder").await?;
                    self.state.set_folder_node(hash, &cap).await?;
                    cap
                }
            };
            caps.insert(dir, (cap, size));
        }
        let (cap, _) = caps.remove("").ok_or_else(|| IndexError::NotFound(path.clone()))?;
        Ok((cap, true))
    }

    /// Gives the packed files among `files` caps into packs that hold only shared files:
    /// a packed file's cap opens its whole pack, which holds files not shared. Each source
    /// pack is read once (up to the last byte needed), each file checked against its hash;
    /// the new packs are kept by the list of caps they copy, so sharing again stores nothing.
    async fn repack_to_share(&self, files: &mut [(String, Entry)]) -> Result<(), IndexOpError> {
        use jewel::caps::{Cap, SliceCap};
        let packed: Vec<(usize, SliceCap)> = files
            .iter()
            .enumerate()
            .filter_map(|(i, (_, e))| match Cap::parse(&e.cap) {
                Ok(Cap::Slice(s)) => Some((i, s)),
                _ => None,
            })
            .collect();
        // In packs of at most PACK_MAX_BYTES each.
        let mut groups: Vec<Vec<(usize, SliceCap)>> = Vec::new();
        let mut bytes = 0;
        for (i, slice) in packed {
            if groups.is_empty() || bytes + slice.len > crate::api::PACK_MAX_BYTES {
                groups.push(Vec::new());
                bytes = 0;
            }
            bytes += slice.len;
            if let Some(g) = groups.last_mut() {
                g.push((i, slice));
            }
        }
        for group in groups {
            let caps: Vec<String> = group.iter().map(|(_, s)| s.to_string()).collect();
            let key: [u8; 32] = blake3::derive_key("jewel shared pack", caps.join("\n").as_bytes());
            let pack = match self.state.folder_node(key)? {
                Some(pack) => pack,
                None => {
                    let bytes = self.read_slices(&group).await?;
                    let pack = self.files.store(bytes, PACK_NAME).await?;
                    self.state.set_folder_node(key, &pack).await?;
                    pack
                }
            };
            let Ok(Cap::Read(pack)) = Cap::parse(&pack) else {
                return Err(IndexError::Malformed(format!("a shared pack's cap: {pack}")).into());
            };
            let mut offset = 0;
            for (i, s) in group {
                let copy = SliceCap { pack: pack.clone(), offset, len: s.len, hash: s.hash };
                offset += s.len;
                if let Some((_, e)) = files.get_mut(i) {
                    e.cap = copy.to_string();
                }
            }
        }
        Ok(())
    }

    /// The bytes of packed files, one after the other: each source pack read once, up to
    /// the last byte needed; each file checked against its hash.
    async fn read_slices(&self, group: &[(usize, jewel::caps::SliceCap)]) -> Result<Vec<u8>, IndexOpError> {
        let mut reach: BTreeMap<String, u64> = BTreeMap::new();
        for (_, s) in group {
            let end = reach.entry(jewel::caps::Cap::Read(s.pack.clone()).to_string()).or_default();
            *end = (*end).max(s.offset + s.len);
        }
        let mut packs = BTreeMap::new();
        for (cap, end) in reach {
            let bytes = self.files.read(&cap, Some(end), end).await?;
            packs.insert(cap, bytes);
        }
        let mut out = Vec::new();
        for (_, s) in group {
            let cap = jewel::caps::Cap::Read(s.pack.clone()).to_string();
            let (start, end) = (s.offset as usize, (s.offset + s.len) as usize);
            let bytes = packs.get(&cap).and_then(|b| b.get(start..end)).unwrap_or_default();
            if bytes.len() as u64 != s.len || *blake3::hash(bytes).as_bytes() != s.hash {
                return Err(IndexError::Malformed(
                    "a packed file does not match its hash in its pack".into(),
                )
                .into());
            }
            out.extend_from_slice(bytes);
        }
        Ok(out)
    }

    /// Publishes this device's head: a snapshot of the index as a Jewel file, and its cap
    /// in two signed records (this device's slot, and the user's latest).
    async fn publish_head(self: &Arc<Self>) -> Result<(), IndexOpError> {
        let Some(user) = self.user() else { return Ok(()) };
        let key = user.index_key();
        let head = self.state.head()?;
        let chain = self.state.chain()?;
        let seq = self.next_seq(head.seq);
        // A delta of what came since the last publication while the chain is short and the
        // delta small next to the whole; else a checkpoint (every op), which starts a chain.
        // (Read before the index's lock: every op committed is in the index already, which
        // applies a change before it queues its commit.)
        let (upto, fresh) = self.state.ops_after(chain.upto)?;
        let (sealed, count, delta) = self.with(|ix| -> Result<_, IndexOpError> {
            let count = ix.len();
            let follows =
                head.cap.clone().filter(|_| !chain.caps.is_empty() && chain.caps.len() <= MAX_DELTAS);
            match follows {
                Some(prev) if fresh.len().saturating_mul(4) < count => {
                    let ops = fresh.iter().filter_map(|id| ix.op(id).cloned()).collect();
                    let depth = u32::try_from(chain.caps.len()).unwrap_or(u32::MAX);
                    let delta = index::Delta { prev, prev_seq: head.seq, seq, depth, ops };
                    Ok((delta.seal(&key)?, count, true))
                }
                _ => Ok((ix.seal(&key)?, count, false)),
            }
        })?;
        if count == 0 {
            return Ok(());
        }
        let published = sealed.len();
        let cap = self.files.store(sealed, ".jewel-index").await?;
        let (peer, addrs) = self.net.whereabouts().await?;
        let value = HeadValue { cap: cap.clone(), device: self.device, peer, addrs };
        let value = serde_json::to_vec(&value).map_err(|e| IndexError::Malformed(e.to_string()))?;
        let mine = NameRecord::sign(user.signing_key(), names::device_slot(self.device), seq, &key, &value)?;
        let latest = NameRecord::sign(user.signing_key(), names::LATEST_SLOT, seq, &key, &value)?;
        let (mine, latest) = (mine.encode()?, latest.encode()?);
        let new_cap = cap.clone();
        self.state
            .update_head(move |h| {
                h.seq = seq;
                h.cap = Some(new_cap.clone());
                h.device_record = mine.clone();
                h.latest_record = latest.clone();
            })
            .await?;
        self.republish().await?;
        // Published is what can be found: a DHT crowded by strangers may take a record
        // and lose it. Not found means not published (`jewel status` says so), and the
        // publisher tries again.
        let pubkey = user.signing_key().verifying_key().to_bytes();
        let found = self.net.find_name(names::key(&pubkey, &names::LATEST_SLOT)).await?;
        if found.is_none_or(|r| r.seq < seq) {
            return Err(IndexOpError::NoRecord("this device's index head, just published,".into()));
        }
        // The chain grows by a delta; a checkpoint starts a new one, and the chain before
        // the one it replaces goes (that one is kept for readers that resolved its head a
        // moment ago).
        let mut next = chain.clone();
        (next.upto, next.last_bytes, next.last_delta) = (upto, published as u64, delta);
        let freed = if delta {
            next.caps.push(cap.clone());
            Vec::new()
        } else {
            next.previous = std::mem::replace(&mut next.caps, vec![cap.clone()]);
            if chain.caps.is_empty() {
                // The first chain of a device that published whole snapshots before: its
                // last two go with the next checkpoint.
                next.previous.extend(head.cap.iter().chain(&head.previous).cloned());
            }
            chain.previous.clone()
        };
        self.state.set_chain(next).await?;
        self.state.update_head(move |h| h.ops = count as u64).await?;
        tracing::info!(seq, ops = count, bytes = published, delta, "published the index head");
        for old in freed.into_iter().filter(|o| *o != cap) {
            if let Err(e) = self.files.release(&old).await {
                tracing::debug!(error = %e, "an old index head was not released");
            }
        }
        Ok(())
    }

    /// Puts this device's last head records (and its published names) in the DHT again.
    async fn republish(&self) -> Result<(), IndexOpError> {
        let head = self.state.head()?;
        let mut records = Vec::new();
        let named = self.state.names()?.into_iter().map(|(_, record)| record);
        for bytes in [head.device_record, head.latest_record].into_iter().chain(named) {
            if !bytes.is_empty() {
                records.push(NameRecord::decode(&bytes)?);
            }
        }
        for r in records {
            self.net.publish_name(r).await?;
        }
        Ok(())
    }

    /// Resolves the heads of the user's devices and merges what they have that this device
    /// has not; how many ops were new.
    pub(crate) async fn catch_up(self: &Arc<Self>) -> Result<usize, IndexOpError> {
        let Some(user) = self.user() else { return Ok(0) };
        let me = self.device;
        let pubkey = user.signing_key().verifying_key().to_bytes();
        let mut done: HashSet<[u8; 32]> = HashSet::from([names::device_slot(me)]);
        let mut todo = vec![names::LATEST_SLOT];
        let mut merged = 0;
        while let Some(slot) = todo.pop() {
            if !done.insert(slot) || done.len() > MAX_DEVICES {
                continue;
            }
            match self.merge_head(&user, &pubkey, slot).await {
                Ok(n) => merged += n,
                Err(e) => tracing::info!(error = %e, "a device's index head could not be merged"),
            }
            if todo.is_empty() {
                let devices: HashSet<u64> = self.with(|ix| ix.ops().map(|o| o.id.device).collect());
                todo.extend(devices.into_iter().map(names::device_slot).filter(|s| !done.contains(s)));
            }
        }
        Ok(merged)
    }

    async fn merge_head(
        self: &Arc<Self>,
        user: &UserKey,
        pubkey: &[u8; 32],
        slot: [u8; 32],
    ) -> Result<usize, IndexOpError> {
        let key = names::key(pubkey, &slot);
        let Some(record) = self.net.find_name(key.clone()).await? else { return Ok(0) };
        let seen_key: [u8; 32] = blake3::hash(&key).into();
        let seen = self.state.seen(seen_key)?;
        if record.seq < seen {
            tracing::warn!(
                seq = record.seq,
                seen,
                "refused a replayed index head (a lower sequence number than one seen)"
            );
            return Ok(0);
        }
        if record.seq == seen {
            return Ok(0);
        }
        let value: HeadValue = serde_json::from_slice(&record.open(&user.index_key())?)
            .map_err(|e| IndexError::Malformed(e.to_string()))?;
        let mut merged = 0;
        // The device's own slot says how far its chain was merged.
        let device_key: [u8; 32] =
            blake3::hash(&names::key(pubkey, &names::device_slot(value.device))).into();
        if value.device != self.device {
            self.net.meet(&value.peer, &value.addrs).await;
            let merged_upto = self.state.seen(device_key)?;
            // Back along the chain, to what was merged or to a checkpoint.
            let mut next = Some(value.cap.clone());
            let mut walked = 0;
            while let Some(cap) = next.take() {
                walked += 1;
                if walked > MAX_DELTAS + 2 {
                    return Err(
                        IndexError::Malformed("an index chain longer than any device makes".into()).into()
                    );
                }
                let bytes = self.files.read(&cap, None, index::MAX_SNAPSHOT as u64).await?;
                let ops = match index::open_head(&user.index_key(), &bytes)? {
                    index::HeadFile::Checkpoint(ops) => ops,
                    index::HeadFile::Delta(d) => {
                        next = Some(d.prev).filter(|_| d.prev_seq > merged_upto);
                        d.ops
                    }
                };
                merged += self.merge_ops(ops).await?;
            }
            if merged > 0 {
                tracing::info!(merged, heads = walked, "merged index changes from another device's head");
            }
        }
        self.state.set_seen(seen_key, record.seq).await?;
        if device_key != seen_key && self.state.seen(device_key)? < record.seq {
            self.state.set_seen(device_key, record.seq).await?;
        }
        Ok(merged)
    }

    /// `jewel name publish`: `cap` under the user's key and `label`.
    pub async fn name_publish(self: &Arc<Self>, cap: &str, label: &str) -> Result<String, IndexOpError> {
        let user = self.user().ok_or(IndexOpError::NoUser)?;
        jewel::caps::Cap::parse(cap).map_err(GetError::Cap)?;
        let pubkey = user.signing_key().verifying_key().to_bytes();
        let name = names::format_name(&pubkey, label);
        names::parse_name(&name)?;
        let last = self.state.name(label)?.and_then(|b| NameRecord::decode(&b).ok()).map_or(0, |r| r.seq);
        let seq = self.next_seq(last);
        let record = NameRecord::sign(
            user.signing_key(),
            names::label_slot(label),
            seq,
            &names::label_key(&pubkey, label),
            cap.as_bytes(),
        )?;
        self.state.set_name(label, record.encode()?).await?;
        self.net.publish_name(record).await?;
        // Published is what can be found (a DHT crowded by strangers may take a record and
        // lose it); the record is kept here and published again every half hour.
        let found = self.net.find_name(names::key(&pubkey, &names::label_slot(label))).await?;
        if found.is_none_or(|r| r.seq < seq) {
            return Err(IndexOpError::NoRecord(format!("{name}, just published,")));
        }
        Ok(name)
    }

    /// `jewel name resolve`: the cap a name names now.
    pub async fn name_resolve(&self, name: &str) -> Result<(String, u64), IndexOpError> {
        let (user, label) = names::parse_name(name)?;
        let key = names::key(&user, &names::label_slot(&label));
        let record =
            self.net.find_name(key.clone()).await?.ok_or_else(|| IndexOpError::NoRecord(name.to_string()))?;
        let seen_key: [u8; 32] = blake3::hash(&key).into();
        let seen = self.state.seen(seen_key)?;
        if record.seq < seen {
            tracing::warn!(seq = record.seq, seen, "refused a replayed name record");
            return Err(IndexOpError::NoRecord(format!("{name} newer than the one last seen")));
        }
        let cap = String::from_utf8(record.open(&names::label_key(&user, &label))?)
            .map_err(|_| NameError::Malformed("its value is not text"))?;
        self.state.set_seen(seen_key, record.seq).await?;
        Ok((cap, record.seq))
    }
}

fn parent_of(dir: &str) -> &str {
    dir.rsplit_once('/').map_or("", |(up, _)| up)
}

impl IndexService {
    /// Publishes a head holding every change made so far, unless the last one does (or
    /// the node holds no user identity: its index is its own, and shared with no one);
    /// what `jewel status` says of the index then. One publication at a time: a command's
    /// waits for the publisher's, and is then often already done.
    pub(crate) async fn publish_now(self: &Arc<Self>) -> Result<crate::api::IndexStatus, IndexOpError> {
        if self.user().is_some() {
            let _one = self.publishing.lock().await;
            let changes = self.with(|ix| ix.len() as u64);
            if self.state.head()?.ops != changes {
                self.publish_head().await?;
            }
        }
        Ok(self.status()?)
    }
}

/// How long the publisher waits after a change before it publishes, `since` the last
/// publication: a burst of changes is one snapshot, and snapshots are at most one per
/// [`PUBLISH_GAP`].
fn publish_wait(since: Duration) -> Duration {
    PUBLISH_GAP.saturating_sub(since).max(PUBLISH_DELAY)
}

impl IndexService {
    /// Runs the index's own background work until `shutdown`: publishing this device's
    /// head after changes (and again every half hour), waking the catch-up, and releasing
    /// what fell off. (The gossip it receives comes from [`glue::spawn`].)
    pub(crate) fn run(self: &Arc<Self>, shutdown: tokio::sync::watch::Receiver<bool>) {
        let releaser = self.clone();
        let mut stop = shutdown.clone();
        tokio::spawn(async move {
            // After changes that replace or purge, and every hour (removed paths whose
            // grace ran out).
            let mut every = tokio::time::interval(RELEASE_EVERY);
            loop {
                tokio::select! {
                    _ = releaser.release.notified() => releaser.release_fallen().await,
                    _ = every.tick() => releaser.release_fallen().await,
                    _ = stop.changed() => break,
                }
            }
        });
        let publisher = self.clone();
        let mut stop = shutdown;
        tokio::spawn(async move {
            // Changes made while no peer could take them (the device was offline) go out now.
            let published = publisher.state.head().map_or(0, |h| h.ops);
            if publisher.with(|ix| ix.len() as u64) != published {
                publisher.changed.notify_one();
            }
            let start = tokio::time::Instant::now();
            let mut last_publish = start.checked_sub(PUBLISH_GAP).unwrap_or(start);
            let mut republish = tokio::time::interval(REPUBLISH_EVERY);
            let mut catch_up = tokio::time::interval(CATCH_UP_EVERY);
            loop {
                tokio::select! {
                    _ = publisher.changed.notified() => {
                        tokio::time::sleep(publish_wait(last_publish.elapsed())).await;
                        if let Err(e) = publisher.publish_now().await {
                            tracing::warn!(error = %e, "could not publish the index head; trying again shortly");
                            tokio::time::sleep(Duration::from_secs(5)).await;
                            publisher.changed.notify_one();
                        }
                        last_publish = tokio::time::Instant::now();
                    }
                    _ = republish.tick() => {
                        // At start (the records this node published before it stopped), then
                        // every half hour.
                        if start.elapsed() < Duration::from_secs(1) || last_publish.elapsed() >= REPUBLISH_EVERY / 2 {
                            if let Err(e) = publisher.republish().await {
                                tracing::debug!(error = %e, "could not republish the index head");
                            }
                        }
                    }
                    _ = catch_up.tick() => publisher.catch_up.notify_one(),
                    _ = stop.changed() => break,
                }
            }
        });
    }
}

#[cfg(test)]
mod tests;
