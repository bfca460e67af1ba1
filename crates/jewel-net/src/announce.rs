//! The block book's DHT side, off the request path: a holder announces the blocks it
//! stores as Kademlia provider records, and refreshes them.
//!
//! **What is announced.** Files are found through the holders record their owner publishes
//! (one DHT query names every piece's holder). Provider records are the fallback when that
//! record is gone or forged: the manifest's providers (every holder keeps the manifest) are
//! asked which pieces they hold. So a node announces only the blocks that pass
//! `NetConfig::announce_only` (a node: manifests), not every piece: about half the records
//! for small files, and one per file, not one per piece and file, for the rest.
//!
//! **When.** One announcement is a closest-peers query plus a record sent to up to 20
//! peers, which costs the whole network far more CPU than storing a small block. Done at
//! once, they slowed a 4 KiB put on a 23-peer devnet from about 20 ms to 100 ms. So an
//! announcement waits [`ANNOUNCE_DELAY`] after the store (by then the put that stored it
//! has usually returned), and at most [`ANNOUNCE_CONCURRENCY`] run at a time. Provider
//! records live [`PROVIDER_TTL`] on the peers that keep them; the announcer refreshes the
//! whole store every [`REFRESH_EVERY`] (Kademlia's own hourly republication is off), and
//! keeps when it last did in `NetConfig::announce_state`, so a restart within that time
//! announces nothing again: the records of the last pass are still alive, and blocks
//! stored since were announced when they came. Without a state file, the whole store is
//! announced at every start. The queue is bounded: an id that does not fit is dropped with
//! a warning, and announced at the next pass.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use futures::stream::{FuturesUnordered, StreamExt};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

use crate::swarm::NetHandle;
use jewel_store::store::BlockStore;
use jewel_store::BlockId;

/// How long an announcement waits after its block was stored.
pub const ANNOUNCE_DELAY: Duration = Duration::from_secs(1);
/// Announcements in flight at once, unless `NetConfig::announce_concurrency` says otherwise.
pub const ANNOUNCE_CONCURRENCY: usize = 4;
/// Ids waiting to be announced, at most (32 bytes and an instant each).
pub const ANNOUNCE_QUEUE: usize = 1 << 16;
/// The first bytes of a block that `NetConfig::announce_only` is shown.
pub const HEAD: usize = 16;
/// How long a provider record lives on the peers that keep it.
pub const PROVIDER_TTL: Duration = Duration::from_secs(48 * 3600);
/// How often the whole store is announced again (a quarter of [`PROVIDER_TTL`]: a pass
/// that fails or a node that is off for a day leaves the records alive).
pub const REFRESH_EVERY: Duration = Duration::from_secs(12 * 3600);

/// What the announcer's queue carries: a block to announce (once its delay is over), or a
/// pass's end (answered once everything before it was announced).
enum Item {
    Block(BlockId, Instant),
    PassDone(oneshot::Sender<()>),
}

/// Where stored blocks are queued for announcement.
#[derive(Clone)]
pub(crate) struct Announcer {
    tx: mpsc::Sender<Item>,
    /// Ids dropped because the queue was full (warned about at 1, 2, 4, 8, ...).
    dropped: Arc<std::sync::atomic::AtomicU64>,
}

/// Which blocks are announced, and from which store.
#[derive(Clone)]
pub(crate) struct Filter {
    pub store: Arc<dyn BlockStore>,
    pub only: Option<fn(&[u8]) -> bool>,
}

impl Filter {
    /// Whether `id` is to be announced (a block that cannot be read is not).
    async fn wants(&self, id: BlockId) -> bool {
        let Some(only) = self.only else { return true };
        let store = self.store.clone();
        let head = tokio::task::spawn_blocking(move || -> Option<Vec<u8>> {
            let reader = store.reader(&id).ok()?;
            let mut head = vec![0; (reader.len() as usize).min(HEAD)];
            reader.read_at(0, &mut head).ok()?;
            Some(head)
        })
        .await;
        matches!(head, Ok(Some(h)) if only(&h))
    }
}

impl Announcer {
    /// The queue, the task that drains it (spawn it), and the count of blocks announced.
    pub(crate) fn new(
        net: NetHandle,
        concurrency: usize,
        filter: Filter,
    ) -> (Announcer, impl std::future::Future<Output = ()>, watch::Receiver<u64>) {
        let (tx, rx) = mpsc::channel(ANNOUNCE_QUEUE);
        let (count, announced) = watch::channel(0);
        let drain = drain(net, rx, count, concurrency.max(1), filter);
        (Announcer { tx, dropped: Default::default() }, drain, announced)
    }

    /// Queues `id`; drops it if the queue is full (warning at the 1st, 2nd, 4th, ... drop).
    pub(crate) fn stored(&self, id: BlockId) {
        if let Err(mpsc::error::TrySendError::Full(_)) = self.tx.try_send(Item::Block(id, Instant::now())) {
            let dropped = self.dropped.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
            if dropped.is_power_of_two() {
                tracing::warn!(
                    block = %id,
                    dropped,
                    "announcement queue full; dropped blocks are announced at the next pass"
                );
            }
        }
    }

    /// Announces the whole store, every [`REFRESH_EVERY`], from when `state` says the last
    /// pass ended (at once if it says nothing); after each pass, `state` keeps its time.
    pub(crate) async fn refresh(&self, store: Arc<dyn BlockStore>, state: Option<PathBuf>) {
        loop {
            if let Some(last) = state.as_deref().and_then(last_pass) {
                let since = jewel_store::lease::now().saturating_sub(last);
                let wait = REFRESH_EVERY.saturating_sub(Duration::from_secs(since));
                tracing::debug!(?wait, "the store's provider records are alive; next pass later");
                tokio::time::sleep(wait).await;
            }
            let began = jewel_store::lease::now();
            if !self.everything(store.clone()).await {
                return;
            }
            let (done, passed) = oneshot::channel();
            if self.tx.send(Item::PassDone(done)).await.is_err() || passed.await.is_err() {
                return;
            }
            match &state {
                Some(path) => {
                    if let Err(e) = keep_pass(path, began) {
                        tracing::warn!(path = %path.display(), error = %e, "cannot keep the announcer's state");
                    }
                }
                None => return,
            }
        }
    }

    /// Queues every block in `store`, waiting for room in the queue as it goes; false if
    /// the announcer stopped.
    async fn everything(&self, store: Arc<dyn BlockStore>) -> bool {
        let listed = tokio::task::spawn_blocking(move || store.list()).await;
        let ids = match listed {
            Ok(Ok(ids)) => ids,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "cannot list the store to announce it");
                return true;
            }
            Err(_) => return false,
        };
        tracing::debug!(blocks = ids.len(), "announcing the store");
        for (id, _) in ids {
            if self.tx.send(Item::Block(id, Instant::now())).await.is_err() {
                return false;
            }
        }
        true
    }
}

/// When the last whole pass began (Unix seconds), as kept at `path`.
fn last_pass(path: &Path) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// Keeps `at` at `path` (mode 0600): written beside it, synced, then renamed over it.
fn keep_pass(path: &Path, at: u64) -> std::io::Result<()> {
    use std::io::Write;
    let tmp = path.with_extension("tmp");
    // 0600, as everything in a node's home.
    let mut f = {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp)?
    };
    f.write_all(at.to_string().as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

async fn drain(
    net: NetHandle,
    mut rx: mpsc::Receiver<Item>,
    count: watch::Sender<u64>,
    concurrency: usize,
    filter: Filter,
) {
    let (count, filter) = (&count, &filter);
    let mut inflight = FuturesUnordered::new();
    loop {
        tokio::select! {
            Some(()) = inflight.next(), if !inflight.is_empty() => {}
            item = rx.recv(), if inflight.len() < concurrency => {
                let (id, at) = match item {
                    None => break,
                    Some(Item::Block(id, at)) => (id, at),
                    Some(Item::PassDone(done)) => {
                        while inflight.next().await.is_some() {}
                        let _ = done.send(());
                        continue;
                    }
                };
                tokio::time::sleep_until(at + ANNOUNCE_DELAY).await;
                let net = net.clone();
                inflight.push(async move {
                    if !filter.wants(id).await {
                        return;
                    }
                    match net.provide(id).await {
                        Ok(()) => count.send_modify(|n| *n += 1),
                        Err(e) => tracing::debug!(block = %id, error = %e, "announcement failed"),
                    }
                });
            }
        }
    }
    while inflight.next().await.is_some() {}
}
