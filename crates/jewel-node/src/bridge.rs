//! The one adapter between the blocking pipelines (`jewel::pipeline`) and the async network:
//! every `block_on` and every blocking send of the node is here.
//!
//! [`Bridge::run`] runs a pipeline on tokio's blocking pool and gives it a [`Bridge`], which
//! turns network parts into the pipeline's traits: [`Bridge::sinks`] gives one
//! `BlockWriter` per peer that streams its piece to that peer as it is written, and
//! [`Bridge::fetch`] makes a [`NetFetch`] (async, hedged) a `Fetch`. Code outside this
//! module is either synchronous (the engine) or async (everything else), never both.

use jewel::sync::Locked;
use std::sync::{Arc, Mutex};

use jewel::pipeline::{Fetch, Fetched, PieceFault, PipelineError};
use jewel::pool::Pool;
use jewel::store::{BlockWriter, StoreError};
use jewel::BlockId;
use jewel_net::{BlockClient, NetError, PeerId};
use tokio::runtime::Handle;

use crate::client::{ClientError, NetFetch};

/// Chunks a slot's piece may have queued for its peer: bounds the memory of a put.
const SEND_QUEUE: usize = 4;

/// A put's uploads that are not done once at least half of the others are get this long:
/// three times the slowest of those done, and this much more.
const STRAGGLER_SLACK: std::time::Duration = std::time::Duration::from_millis(200);

/// The uploads of one pipeline's pieces, timed together, so that one that lags far behind
/// the others (a holder frozen a moment ago, before anything found it silent) is given up
/// on, and its piece goes to a spare, instead of holding the put until the holder is found.
struct Race {
    started: tokio::time::Instant,
    total: usize,
    /// Uploads done, and the slowest of them.
    done: Mutex<(usize, std::time::Duration)>,
    finished: tokio::sync::Notify,
}

impl Race {
    fn finish(&self) {
        let took = self.started.elapsed();
        let mut d = self.done.lock().unwrap_or_else(|p| p.into_inner());
        d.0 += 1;
        d.1 = d.1.max(took);
        drop(d);
        self.finished.notify_waiters();
    }

    /// Resolves once an upload not yet done counts as a straggler (never, for uploads that
    /// are not to be given up: `total` 0).
    async fn straggler(&self) {
        if self.total == 0 {
            return std::future::pending().await;
        }
        loop {
            let next = self.finished.notified();
            let (done, slowest) = *self.done.lock().unwrap_or_else(|p| p.into_inner());
            if done > 0 && done * 2 >= self.total {
                tokio::time::sleep_until(self.started + slowest * 3 + STRAGGLER_SLACK).await;
                return;
            }
            next.await;
        }
    }
}

/// How one streamed upload ended, once its writer was committed (`None` before that).
pub(crate) type Outcome = Arc<Mutex<Option<Result<(), NetError>>>>;

/// What a pipeline running on a blocking thread uses to reach the network.
pub struct Bridge {
    rt: Handle,
}

impl Bridge {
    /// Runs `work` on the blocking pool with a bridge to this runtime, and waits for it.
    /// Must be called inside a Tokio runtime.
    pub async fn run<T: Send + 'static>(
        work: impl FnOnce(&Bridge) -> T + Send + 'static,
    ) -> Result<T, ClientError> {
        let bridge = Bridge { rt: Handle::current() };
        tokio::task::spawn_blocking(move || work(&bridge)).await.map_err(|_| ClientError::Interrupted)
    }

    /// `fetch` as the get pipeline's [`Fetch`]: each segment is fetched by the async,
    /// hedged [`NetFetch::segment`], waited for on this blocking thread.
    pub fn fetch<'a>(&self, fetch: &'a NetFetch) -> impl Fetch + 'a {
        Blocking { rt: self.rt.clone(), fetch }
    }

    /// One streaming writer per peer (see [`NetWriter`]), each bounded by `max[i]` bytes,
    /// and where each upload's outcome will be. With `give_up`, an upload that lags far
    /// behind the others is given up (for a caller with spare peers to put its piece on).
    pub(crate) fn sinks(
        &self,
        blocks: &BlockClient,
        peers: &[PeerId],
        max: &[u64],
        give_up: bool,
    ) -> (Vec<Box<dyn BlockWriter>>, Vec<Outcome>) {
        let mut outcomes = Vec::with_capacity(peers.len());
        let mut sinks: Vec<Box<dyn BlockWriter>> = Vec::with_capacity(peers.len());
        let race = Arc::new(Race {
            started: tokio::time::Instant::now(),
            total: if give_up { peers.len() } else { 0 },
            done: Mutex::new((0, std::time::Duration::ZERO)),
            finished: tokio::sync::Notify::new(),
        });
        for (peer, max) in peers.iter().zip(max) {
            let (tx, rx) = tokio::sync::mpsc::channel(SEND_QUEUE);
            let outcome = Arc::new(Mutex::new(None));
            let (client, peer, max, timed) = (blocks.clone(), *peer, *max, race.clone());
            let task = self.rt.spawn(async move {
                let sent = client.send_block(peer, max, rx).await;
                if sent.1.is_ok() {
                    timed.finish();
                }
                sent
            });
            outcomes.push(outcome.clone());
            sinks.push(Box::new(NetWriter {
                tx: Some(tx),
                task: Some(task),
                rt: self.rt.clone(),
                written: 0,
                outcome,
                hasher: blake3::Hasher::new(),
                peer,
                race: race.clone(),
                blocks: blocks.clone(),
            }));
        }
        (sinks, outcomes)
    }
}

/// A [`NetFetch`] for the blocking pipeline.
struct Blocking<'a> {
    rt: Handle,
    fetch: &'a NetFetch,
}

impl Fetch for Blocking<'_> {
    fn fetch(
        &self,
        scheme: &dyn jewel::codec::Scheme,
        segment: usize,
        want: &[(u64, usize)],
        pool: &Pool<Vec<u8>>,
        places: &mut [Option<&mut [u8]>],
    ) -> Result<Fetched, PipelineError> {
        self.rt.block_on(self.fetch.segment(scheme, segment, want, pool, places))
    }

    fn report(&self) -> (Vec<u64>, Vec<PieceFault>) {
        self.fetch.report()
    }
}

/// A piece on its way to a peer, as the pipeline writes it: each chunk is handed to a
/// task that streams it to the peer (see [`BlockClient::send_block`]). A failed upload does
/// not stop the pipeline; the id is still computed, and the failure is kept in `outcome`.
struct NetWriter {
    tx: Option<tokio::sync::mpsc::Sender<Vec<u8>>>,
    task: Option<tokio::task::JoinHandle<(BlockId, Result<(), NetError>)>>,
    rt: Handle,
    written: u64,
    outcome: Outcome,
    /// The piece's id as written: the manifest needs it even when the upload is given up.
    hasher: blake3::Hasher,
    peer: PeerId,
    race: Arc<Race>,
    blocks: BlockClient,
}

impl BlockWriter for NetWriter {
    fn write(&mut self, data: &[u8]) -> Result<(), StoreError> {
        // An empty chunk on the channel says the piece is complete (see `send_block`).
        if data.is_empty() {
            return Ok(());
        }
        self.written += data.len() as u64;
        self.hasher.update(data);
        let sent = self.tx.as_ref().map(|tx| tx.blocking_send(data.to_vec()));
        if let Some(Err(_)) = sent {
            return Err(StoreError::Unavailable { id: BlockId([0; 32]), reason: "upload task ended".into() });
        }
        Ok(())
    }

    fn written(&self) -> u64 {
        self.written
    }

    fn commit(mut self: Box<Self>, _expected: Option<BlockId>) -> Result<BlockId, StoreError> {
        let id = BlockId::from(self.hasher.finalize());
        let (Some(tx), Some(mut task)) = (self.tx.take(), self.task.take()) else {
            return Err(StoreError::Unavailable { id, reason: "upload task failed".into() });
        };
        // The piece is whole: say so, so the upload ends with the id (a writer dropped
        // without a commit closes the channel without it, and nothing is committed). An
        // upload that lags far behind the others is given up (its piece goes to a spare).
        let race = self.race.clone();
        let ended = self.rt.block_on(async {
            let finish = async {
                let _ = tx.send(Vec::new()).await;
                drop(tx);
                (&mut task).await
            };
            tokio::select! {
                r = finish => Some(r),
                () = race.straggler() => None,
            }
        });
        let result = match ended {
            Some(Ok((_, result))) => result,
            Some(Err(_)) => return Err(StoreError::Unavailable { id, reason: "upload task failed".into() }),
            None => {
                task.abort();
                let waited = race.started.elapsed();
                tracing::info!(peer = %self.peer, ?waited, "an upload lagged far behind the others: its piece goes elsewhere");
                self.blocks.net().liveness().mark_silent(self.peer);
                Err(NetError::Unresponsive { peer: self.peer, waited })
            }
        };
        *self.outcome.locked() = Some(result);
        Ok(id)
    }
}
