//! The index service on its own: an in-memory file service and DHT, gossip handed from
//! device to device by the test, and a clock that moves only when told. No process, no
//! network, no sleep. Test code only: `index/mod.rs` declares it under #[cfg(test)], and
//! the attribute below says so again.
#![cfg(test)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use jewel::caps::{Cap, ReadCap};
use jewel::crypto::FileKey;
use jewel::index::Entry;
use jewel::names::NameRecord;
use jewel::user::UserKey;
use jewel::BlockId;
use jewel_net::NetError;

use super::*;
use crate::api::LsRequest;
use crate::state::StoredFile;
use crate::workers::ManualClock;

/// What every device of a test shares: the files stored "on the network", and the DHT.
#[derive(Default)]
struct World {
    files: Mutex<HashMap<String, Vec<u8>>>,
    names: Mutex<HashMap<Vec<u8>, NameRecord>>,
    /// How many files were stored (snapshots and folder nodes), and read.
    stored: AtomicU64,
    reads: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap()
}

/// A cap naming `bytes` (a real cap: the index parses them).
fn cap_of(bytes: &[u8], n: u64) -> String {
    let mut salted = bytes.to_vec();
    salted.extend_from_slice(&n.to_be_bytes());
    Cap::Read(ReadCap { manifest: BlockId::of(&salted), key: FileKey([7; 32]) }).to_string()
}

struct MemFiles {
    world: Arc<World>,
    state: Arc<StateStore>,
    released: Mutex<Vec<String>>,
}

#[async_trait::async_trait]
impl IndexFiles for MemFiles {
    async fn store(&self, bytes: Vec<u8>, _name: &str) -> Result<String, IndexOpError> {
        let n = self.world.stored.fetch_add(1, Ordering::Relaxed);
        let cap = cap_of(&bytes, n);
        lock(&self.world.files).insert(cap.clone(), bytes);
        Ok(cap)
    }

    async fn read(&self, cap: &str, range: Option<u64>, limit: u64) -> Result<Vec<u8>, IndexOpError> {
        self.world.reads.fetch_add(1, Ordering::Relaxed);
        let files = lock(&self.world.files);
        let bytes = files.get(cap).ok_or_else(|| IndexOpError::NoRecord(cap.to_string()))?;
        let end = range.unwrap_or(u64::MAX).min(limit).min(bytes.len() as u64) as usize;
        Ok(bytes[..end].to_vec())
    }

    async fn describe(&self, cap: &str) -> Result<(u64, String), IndexOpError> {
        let files = lock(&self.world.files);
        let bytes = files.get(cap).ok_or_else(|| IndexOpError::NoRecord(cap.to_string()))?;
        Ok((bytes.len() as u64, "replicate:1".into()))
    }

    async fn release(&self, cap: &str) -> Result<(), IndexOpError> {
        lock(&self.released).push(cap.to_string());
        let id = Cap::parse(cap).unwrap().manifest().to_string();
        self.state.remove_file(&id).await?;
        Ok(())
    }
}

struct MemNet {
    world: Arc<World>,
    peer: String,
    /// What this device gossiped, for the test to hand to the others.
    sent: tokio::sync::mpsc::UnboundedSender<Vec<u8>>,
}

#[async_trait::async_trait]
impl IndexNet for MemNet {
    async fn gossip(&self, _topic: String, msg: Vec<u8>) -> Result<(), NetError> {
        let _ = self.sent.send(msg);
        Ok(())
    }

    async fn publish_name(&self, record: NameRecord) -> Result<(), NetError> {
        lock(&self.world.names).insert(jewel::names::key(&record.user, &record.slot), record);
        Ok(())
    }

    async fn find_name(&self, key: Vec<u8>) -> Result<Option<NameRecord>, NetError> {
        Ok(lock(&self.world.names).get(&key).cloned())
    }

    async fn whereabouts(&self) -> Result<(String, Vec<String>), NetError> {
        Ok((self.peer.clone(), Vec::new()))
    }

    async fn meet(&self, _peer: &str, _addrs: &[String]) {}
}

/// One device of the user: its index service, its state store, what it gossips.
struct Device {
    svc: Arc<IndexService>,
    files: Arc<MemFiles>,
    state: Arc<StateStore>,
    sent: tokio::sync::mpsc::UnboundedReceiver<Vec<u8>>,
    _home: tempfile::TempDir,
}

fn device(world: &Arc<World>, user: &UserKey, clock: &Arc<ManualClock>) -> Device {
    let home = tempfile::tempdir().unwrap();
    let state = Arc::new(StateStore::open(home.path()).unwrap());
    let files = Arc::new(MemFiles { world: world.clone(), state: state.clone(), released: Mutex::default() });
    let (tx, sent) = tokio::sync::mpsc::unbounded_channel();
    let net =
        Arc::new(MemNet { world: world.clone(), peer: format!("peer-{}", home.path().display()), sent: tx });
    let loaded = Loaded::open(&state).unwrap();
    let svc = IndexService::new(loaded, state.clone(), Some(user.clone()), files.clone(), net, clock.clone());
    Device { svc: Arc::new(svc), files, state, sent, _home: home }
}

struct Lab {
    world: Arc<World>,
    user: UserKey,
    clock: Arc<ManualClock>,
}

impl Lab {
    fn new() -> Lab {
        Lab {
            world: Arc::default(),
            user: UserKey::generate().unwrap(),
            clock: Arc::new(ManualClock::new(1_000_000)),
        }
    }

    fn device(&self) -> Device {
        device(&self.world, &self.user, &self.clock)
    }
}

/// A user's put of `path` on `d`: a file (its bytes in the world) and its record.
async fn put(d: &Device, path: &str, content: &str) -> Result<String, IndexOpError> {
    let cap = d.files.store(content.as_bytes().to_vec(), path).await?;
    let id = Cap::parse(&cap).unwrap().manifest().to_string();
    let entry = Entry {
        cap: cap.clone(),
        size: content.len() as u64,
        mtime: 5,
        scheme: "replicate:1".into(),
        hash: String::new(),
        mode: 0o644,
    };
    let record = StoredFile {
        name: path.into(),
        cap: Some(cap.clone()),
        scheme: "replicate:1".into(),
        size: content.len() as u64,
        holders: Vec::new(),
        audit: None,
        lease_missing: Vec::new(),
        leased_at: 0,
        corrupt: Vec::new(),
        indexed: false,
    };
    d.svc.put(path, entry, false, (id, record)).await?;
    Ok(cap)
}

async fn paths(d: &Device, at: &str) -> Vec<String> {
    let req = LsRequest { target: at.into(), recursive: true, versions: false, at: None };
    let listed = d.svc.ls(req).await.unwrap();
    listed.entries.into_iter().filter(|e| !e.folder).map(|e| e.path).collect()
}

#[tokio::test]
async fn a_put_keeps_its_record_and_its_entry_together_and_both_outlive_a_restart() {
    let lab = Lab::new();
    let d = lab.device();
    let cap = put(&d, "docs/a.txt", "hello").await.unwrap();
    let id = Cap::parse(&cap).unwrap().manifest().to_string();
    let record = d.state.file(&id).unwrap().expect("the file's record");
    assert!(record.indexed, "the record is marked as the index's in the same change");
    // What a restart loads: the entry is there, and the device keeps its id.
    let again = Loaded::open(&d.state).unwrap();
    assert_eq!(again.device, d.svc.device);
    assert_eq!(again.index.files().keys().copied().collect::<Vec<_>>(), vec!["docs/a.txt"]);
}

#[tokio::test]
async fn a_change_that_fails_leaves_the_index_as_the_store_holds_it() {
    let lab = Lab::new();
    let d = lab.device();
    put(&d, "a.txt", "one").await.unwrap();
    // A put into a path below a file fails, and changes nothing.
    assert!(put(&d, "a.txt/b.txt", "two").await.is_err());
    assert_eq!(paths(&d, "").await, vec!["a.txt"]);
    assert_eq!(d.state.index_ops().unwrap().len(), 1);
}

#[tokio::test]
async fn a_change_reaches_another_device_by_gossip_and_is_adopted_there() {
    let lab = Lab::new();
    let (mut a, b) = (lab.device(), lab.device());
    let cap = put(&a, "photos/cat.jpg", "meow").await.unwrap();
    let msg = a.sent.recv().await.expect("the change is gossiped");
    assert_eq!(b.svc.receive_gossip(&msg).await.unwrap(), 1);
    assert_eq!(paths(&b, "").await, vec!["photos/cat.jpg"]);
    // B takes the file on: it renews, audits and repairs it too.
    let id = Cap::parse(&cap).unwrap().manifest().to_string();
    assert!(b.state.file(&id).unwrap().is_some_and(|r| r.indexed));
    // The same message again changes nothing.
    assert_eq!(b.svc.receive_gossip(&msg).await.unwrap(), 0);
}

#[tokio::test]
async fn gossip_not_signed_by_the_user_is_refused() {
    let lab = Lab::new();
    let other =
        Lab { world: lab.world.clone(), user: UserKey::generate().unwrap(), clock: lab.clock.clone() };
    let (mut stranger, b) = (other.device(), lab.device());
    put(&stranger, "evil.txt", "x").await.unwrap();
    let msg = stranger.sent.recv().await.unwrap();
    assert!(b.svc.receive_gossip(&msg).await.is_err());
    assert!(paths(&b, "").await.is_empty());
}

#[tokio::test]
async fn a_new_device_catches_up_from_the_published_head_once() {
    let lab = Lab::new();
    let a = lab.device();
    for i in 0..3 {
        put(&a, &format!("f{i}.txt"), &format!("file {i}")).await.unwrap();
    }
    a.svc.publish_head().await.unwrap();
    assert_eq!(a.svc.status().unwrap().published_changes, 3);
    let b = lab.device();
    assert_eq!(b.svc.catch_up().await.unwrap(), 3);
    assert_eq!(paths(&b, "").await, vec!["f0.txt", "f1.txt", "f2.txt"]);
    // A head already merged is not read again.
    let reads = lab.world.reads.load(Ordering::Relaxed);
    assert_eq!(b.svc.catch_up().await.unwrap(), 0);
    assert_eq!(lab.world.reads.load(Ordering::Relaxed), reads);
    // B's own changes reach A through B's head (B's slot, named by B's ops).
    put(&b, "from-b.txt", "b").await.unwrap();
    b.svc.publish_head().await.unwrap();
    assert_eq!(a.svc.catch_up().await.unwrap(), 1);
    assert!(paths(&a, "").await.contains(&"from-b.txt".to_string()));
}

#[tokio::test]
async fn a_replayed_older_head_is_refused() {
    let lab = Lab::new();
    let a = lab.device();
    put(&a, "old.txt", "old").await.unwrap();
    a.svc.publish_head().await.unwrap();
    let old: Vec<NameRecord> = lock(&lab.world.names).values().cloned().collect();
    lab.clock.advance(60);
    a.svc.rm_path("old.txt", false, false).await.unwrap();
    a.svc.publish_head().await.unwrap();
    let b = lab.device();
    b.svc.catch_up().await.unwrap();
    assert!(paths(&b, "").await.is_empty(), "the removal is merged");
    // A DHT peer serves the older records again: B refuses them unread (a stranger's
    // replay costs no snapshot read), and old.txt stays removed.
    for r in old {
        lock(&lab.world.names).insert(jewel::names::key(&r.user, &r.slot), r);
    }
    let reads = lab.world.reads.load(Ordering::Relaxed);
    assert_eq!(b.svc.catch_up().await.unwrap(), 0);
    assert_eq!(lab.world.reads.load(Ordering::Relaxed), reads, "no replayed snapshot is read");
    assert!(paths(&b, "").await.is_empty());
}

#[tokio::test]
async fn versions_that_fall_off_are_released_and_kept_ones_are_not() {
    let lab = Lab::new();
    let d = lab.device();
    let mut caps = Vec::new();
    for v in 0..KEEP_VERSIONS + 2 {
        caps.push(put(&d, "notes.txt", &format!("version {v}")).await.unwrap());
    }
    d.svc.release_fallen().await;
    let released = lock(&d.files.released).clone();
    assert_eq!(released.len(), 2, "the two oldest of {} versions fall off", caps.len());
    assert!(released.contains(&caps[0]) && released.contains(&caps[1]));
    // Removing the path releases every version it kept.
    d.svc.rm_path("notes.txt", false, true).await.unwrap();
    d.svc.release_fallen().await;
    let released = lock(&d.files.released).clone();
    assert_eq!(released.len(), caps.len());
    assert!(d.state.files().unwrap().is_empty(), "no record is left to renew");
}

#[tokio::test]
async fn every_device_that_took_a_file_on_releases_it_once_it_falls_off() {
    let lab = Lab::new();
    let (mut a, b) = (lab.device(), lab.device());
    let mut caps = Vec::new();
    for v in 0..KEEP_VERSIONS + 1 {
        caps.push(put(&a, "shared.txt", &format!("v{v}")).await.unwrap());
    }
    while let Ok(msg) = a.sent.try_recv() {
        b.svc.receive_gossip(&msg).await.unwrap();
    }
    // Both renew every version (B adopted them); both let go of the one that fell off.
    for d in [&a, &b] {
        d.svc.release_fallen().await;
        assert_eq!(*lock(&d.files.released), vec![caps[0].clone()]);
        assert_eq!(d.state.files().unwrap().len(), KEEP_VERSIONS);
    }
}

#[tokio::test]
async fn a_shared_folder_is_written_as_folder_nodes_and_walked_back() {
    let lab = Lab::new();
    let d = lab.device();
    put(&d, "trip/day1/a.jpg", "aaa").await.unwrap();
    put(&d, "trip/day1/b.jpg", "bbbb").await.unwrap();
    put(&d, "trip/notes.txt", "n").await.unwrap();
    put(&d, "other.txt", "o").await.unwrap();
    let (cap, folder) = d.svc.share("trip").await.unwrap();
    assert!(folder);
    assert_eq!(paths(&d, &cap).await, vec!["day1/a.jpg", "day1/b.jpg", "notes.txt"]);
    // Sharing again stores nothing new (the nodes are reused).
    let stored = lab.world.stored.load(Ordering::Relaxed);
    assert_eq!(d.svc.share("trip").await.unwrap().0, cap);
    assert_eq!(lab.world.stored.load(Ordering::Relaxed), stored);
    // A file's cap is listed as one file.
    let (file, folder) = d.svc.share("other.txt").await.unwrap();
    assert!(!folder);
    assert_eq!(paths(&d, &file).await, vec![""]);
}

#[tokio::test]
async fn a_move_is_one_change_that_other_devices_see_whole() {
    let lab = Lab::new();
    let (mut a, b) = (lab.device(), lab.device());
    put(&a, "x/1.txt", "1").await.unwrap();
    put(&a, "x/2.txt", "2").await.unwrap();
    let moved = a.svc.mv("x", "y").await.unwrap();
    assert_eq!(moved.len(), 2);
    while let Ok(msg) = a.sent.try_recv() {
        b.svc.receive_gossip(&msg).await.unwrap();
    }
    assert_eq!(paths(&b, "").await, vec!["y/1.txt", "y/2.txt"]);
}

#[test]
fn a_burst_of_changes_is_published_once_and_snapshots_keep_their_gap() {
    // Right after a publication, the next waits out the gap; long after, only the delay.
    assert_eq!(publish_wait(Duration::ZERO), PUBLISH_GAP);
    assert_eq!(publish_wait(PUBLISH_GAP / 2), PUBLISH_GAP / 2);
    assert_eq!(publish_wait(Duration::from_secs(3600)), PUBLISH_DELAY);
}

#[tokio::test]
async fn sequence_numbers_follow_the_clock_and_never_go_back() {
    let lab = Lab::new();
    let d = lab.device();
    assert_eq!(d.svc.next_seq(0), 1_000_000_000);
    // A clock set back still numbers above the last record.
    lab.clock.set(10);
    assert_eq!(d.svc.next_seq(1_000_000_000), 1_000_000_001);
}

#[tokio::test]
async fn a_moved_file_keeps_its_versions_and_none_is_released() {
    let lab = Lab::new();
    let d = lab.device();
    let mut caps = Vec::new();
    for v in 0..3 {
        caps.push(put(&d, "draft.txt", &format!("draft {v}")).await.unwrap());
    }
    assert_eq!(
        d.svc.mv("draft.txt", "final.txt").await.unwrap(),
        vec![("draft.txt".into(), "final.txt".into())]
    );
    let req = LsRequest { target: "final.txt".into(), recursive: false, versions: true, at: None };
    let versions: Vec<String> =
        d.svc.ls(req).await.unwrap().entries.into_iter().map(|e| e.caps[0].clone()).collect();
    assert_eq!(versions, caps.iter().rev().cloned().collect::<Vec<_>>());
    d.svc.release_fallen().await;
    assert!(lock(&d.files.released).is_empty(), "a move released a version it keeps");
}

#[tokio::test]
async fn a_removed_file_can_be_undone_until_its_grace_runs_out() {
    let lab = Lab::new();
    let d = lab.device();
    let mut caps = Vec::new();
    for v in 0..2 {
        caps.push(put(&d, "a.txt", &format!("a {v}")).await.unwrap());
    }
    d.svc.rm_path("a.txt", false, false).await.unwrap();
    d.svc.release_fallen().await;
    assert!(lock(&d.files.released).is_empty(), "a removed file's versions are kept for undelete");
    assert_eq!(d.svc.undelete("a.txt").await.unwrap(), caps[1]);
    assert_eq!(paths(&d, "").await, vec!["a.txt"]);
    // Removed again, and a day past the grace: freed, and it cannot come back.
    d.svc.rm_path("a.txt", false, false).await.unwrap();
    lab.clock.advance(UNDELETE_FOR + 24 * 3600);
    d.svc.release_fallen().await;
    let mut released = lock(&d.files.released).clone();
    released.sort();
    let mut want = caps.clone();
    want.sort();
    assert_eq!(released, want);
    assert!(d.svc.undelete("a.txt").await.is_err());
}

#[tokio::test]
async fn a_purged_file_is_freed_at_once() {
    let lab = Lab::new();
    let d = lab.device();
    let cap = put(&d, "secret.txt", "s").await.unwrap();
    d.svc.rm_path("secret.txt", false, true).await.unwrap();
    d.svc.release_fallen().await;
    assert_eq!(*lock(&d.files.released), vec![cap]);
    assert!(d.svc.undelete("secret.txt").await.is_err());
}

#[tokio::test]
async fn the_tree_as_it_was_at_a_time_and_a_paths_log() {
    let lab = Lab::new();
    let d = lab.device();
    let t0 = lab.clock.now();
    let first = put(&d, "docs/plan.txt", "plan 1").await.unwrap();
    put(&d, "docs/old.txt", "old").await.unwrap();
    lab.clock.advance(60);
    let second = put(&d, "docs/plan.txt", "plan 2").await.unwrap();
    d.svc.rm_path("docs/old.txt", false, false).await.unwrap();
    let ls = |at: Option<u64>| {
        let svc = d.svc.clone();
        async move {
            let req = LsRequest { target: "docs".into(), recursive: true, versions: false, at };
            let entries = svc.ls(req).await.unwrap().entries;
            entries.into_iter().map(|e| format!("{}={}", e.path, e.caps[0])).collect::<Vec<_>>()
        }
    };
    assert_eq!(ls(None).await, vec![format!("docs/plan.txt={second}")]);
    let then = ls(Some(t0)).await;
    assert_eq!(then.len(), 2, "{then:?}");
    assert!(then.contains(&format!("docs/plan.txt={first}")), "{then:?}");
    let log = d.svc.log("docs/old.txt").unwrap();
    assert_eq!(
        log.iter().map(|c| (c.at, c.cap.is_some())).collect::<Vec<_>>(),
        vec![(t0, true), (t0 + 60, false)]
    );
    assert!(d.svc.log("never.txt").is_err());
}

/// Bad input (issue 22): an op made in the future (another device's clock days ahead) is
/// refused with one line, nothing already in the index is lost, and the op merges once
/// this device's clock catches up (from the next message or head that carries it).
#[tokio::test]
async fn an_op_from_the_future_is_refused_until_its_time() {
    let lab = Lab::new();
    let mut ahead = lab.device();
    let behind_clock = Arc::new(ManualClock::new(1_000_000 - 10 * 24 * 3600));
    let behind = device(&lab.world, &lab.user, &behind_clock);
    put(&behind, "mine.txt", "kept").await.unwrap();
    put(&ahead, "later.txt", "from ten days ahead").await.unwrap();
    let msg = ahead.sent.recv().await.unwrap();
    assert_eq!(behind.svc.receive_gossip(&msg).await.unwrap(), 0, "refused");
    assert_eq!(paths(&behind, "").await, vec!["mine.txt"], "nothing lost");
    behind_clock.set(1_000_000 - 3600);
    assert_eq!(behind.svc.receive_gossip(&msg).await.unwrap(), 1, "within a day: merged");
    assert_eq!(paths(&behind, "").await, vec!["later.txt", "mine.txt"]);
}

/// Sync that costs what changed (issue 22): after a checkpoint of 2 000 entries, a change of
/// one file publishes a delta of well under 4 KiB, not the whole index again; a device that
/// merged the checkpoint reads only the delta; a new device merges the whole chain. After
/// `MAX_DELTAS` deltas the next publication is a checkpoint, and the chain before the one
/// it replaces is released (the one it replaces is kept for readers on their way).
#[tokio::test]
async fn publications_are_deltas_between_checkpoints() {
    let lab = Lab::new();
    let a = lab.device();
    let entries = (0..2000)
        .map(|i| {
            let e = Entry {
                cap: cap_of(b"f", i),
                size: 1,
                mtime: 5,
                scheme: "replicate:1".into(),
                hash: String::new(),
                mode: 0o644,
            };
            (format!("d/f{i}.txt"), e)
        })
        .collect();
    a.svc.put_many(entries, false, None).await.unwrap();
    a.svc.publish_head().await.unwrap();
    let head_size = |d: &Device| {
        let cap = d.state.head().unwrap().cap.unwrap();
        lock(&lab.world.files)[&cap].len()
    };
    let whole = head_size(&a);
    assert!(whole > 20_000, "the checkpoint holds every entry: {whole} bytes");
    let b = lab.device();
    assert_eq!(b.svc.catch_up().await.unwrap(), 2000);

    lab.clock.advance(1);
    put(&a, "d/f7.txt", "changed").await.unwrap();
    a.svc.publish_head().await.unwrap();
    let delta = head_size(&a);
    assert!(delta < 4096, "one change publishes {delta} bytes (the whole index is {whole})");
    let reads = lab.world.reads.load(Ordering::Relaxed);
    assert_eq!(b.svc.catch_up().await.unwrap(), 1);
    assert_eq!(lab.world.reads.load(Ordering::Relaxed), reads + 1, "only the delta is read");
    let c = lab.device();
    assert_eq!(c.svc.catch_up().await.unwrap(), 2001, "a new device merges the chain");
    assert_eq!(c.svc.files(), 2000);

    // The chain's length is bounded: a checkpoint after MAX_DELTAS deltas.
    let first = a.state.chain().unwrap().caps[0].clone();
    // The first delta, MAX_DELTAS - 1 more, a checkpoint, MAX_DELTAS deltas, a checkpoint.
    for round in 0..2 * MAX_DELTAS + 1 {
        lab.clock.advance(1);
        put(&a, &format!("more/{round}.txt"), "x").await.unwrap();
        a.svc.publish_head().await.unwrap();
        assert!(a.state.chain().unwrap().caps.len() <= MAX_DELTAS + 1);
    }
    let chain = a.state.chain().unwrap();
    assert!(!chain.previous.contains(&first) && !chain.caps.contains(&first));
    assert!(lock(&a.files.released).contains(&first), "the chain before the last is released");
    let d = lab.device();
    assert_eq!(d.svc.catch_up().await.unwrap(), a.svc.with(|ix| ix.len()));
    assert_eq!(paths(&d, "more").await.len(), 2 * MAX_DELTAS + 1);
}

/// A device that published whole snapshots before chains: its last two snapshots are
/// released with its first chain, once a later checkpoint replaces that chain.
#[tokio::test]
async fn snapshots_from_before_chains_are_released_with_the_first_chain() {
    let lab = Lab::new();
    let a = lab.device();
    put(&a, "f.txt", "x").await.unwrap();
    let (old, older) = (cap_of(b"old snapshot", 1), cap_of(b"older snapshot", 2));
    let (o, p) = (old.clone(), older.clone());
    a.state
        .update_head(move |h| {
            h.cap = Some(o.clone());
            h.previous = Some(p.clone());
        })
        .await
        .unwrap();
    a.svc.publish_head().await.unwrap();
    assert!(a.state.chain().unwrap().previous.contains(&old), "kept for readers at first");
    // Checkpoints until the first chain is replaced twice over.
    for round in 0..2 * (MAX_DELTAS + 1) {
        lab.clock.advance(1);
        put(&a, &format!("g{round}.txt"), "y").await.unwrap();
        a.svc.publish_head().await.unwrap();
    }
    let released = lock(&a.files.released).clone();
    assert!(released.contains(&old) && released.contains(&older), "{released:?}");
}
