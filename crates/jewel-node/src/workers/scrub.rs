//! Scrubbing: a holder re-verifies every block it stores against its id, in full, at a
//! bounded rate, and drops a block that rotted (and records the drop), so the owner's next
//! audit finds the piece missing and repairs it. A sampled audit proves presence; this
//! finds the rot an audit's sample misses.
//!
//! A pass lists the store once (blocks stored later wait for the next pass) and walks it in
//! id order; each run verifies about one second's worth of bytes at the rate, then waits
//! for the rest of the second (the worker shows as throttled meanwhile). After a whole pass
//! it rests for the pass interval. The position is kept in memory: a restart begins a new
//! pass.

use std::sync::Arc;

use jewel::lease::LeaseBook;
use jewel::store::{BlockStore, StoreError};
use jewel::BlockId;

use super::{count, Outcome, Run, Worker, WorkerError};
use crate::api::WorkerState;
use crate::state::StateStore;

/// Bytes read per verification call.
const READ: usize = 1 << 20;

pub struct ScrubWorker {
    store: Arc<dyn BlockStore>,
    leases: Arc<LeaseBook>,
    state: Arc<StateStore>,
    /// Bytes verified per second, at most.
    rate: u64,
    /// Seconds between whole passes.
    every: u64,
    /// This pass's blocks, in id order (empty: the next run starts a pass), and how many
    /// of them are done.
    ids: Vec<BlockId>,
    done: usize,
    /// Seconds the last run's bytes are worth at the rate, or the rest before a new pass.
    rest: u64,
    /// This pass so far: blocks verified, bytes, blocks dropped.
    pass: (usize, u64, usize),
}

impl ScrubWorker {
    pub(crate) fn new(
        store: Arc<dyn BlockStore>,
        leases: Arc<LeaseBook>,
        state: Arc<StateStore>,
        rate: u64,
        every: u64,
    ) -> ScrubWorker {
        ScrubWorker {
            store,
            leases,
            state,
            rate: rate.max(1),
            every: every.max(1),
            ids: Vec::new(),
            done: 0,
            rest: 0,
            pass: (0, 0, 0),
        }
    }
}

/// Reads a whole block through the store's verified reads; `Err(Corrupt)` if any part of
/// it does not match its id.
fn verify(store: &dyn BlockStore, id: &BlockId, buf: &mut [u8]) -> Result<u64, StoreError> {
    let reader = store.reader(id)?;
    let size = reader.len();
    let mut at = 0;
    while at < size {
        let n = (size - at).min(buf.len() as u64) as usize;
        reader.read_at(at, &mut buf[..n])?;
        at += n as u64;
    }
    Ok(size)
}

/// A pass's blocks: the store's, in id order.
fn listing(store: &dyn BlockStore) -> Result<Vec<BlockId>, StoreError> {
    let mut ids: Vec<BlockId> = store.list()?.into_iter().map(|(id, _)| id).collect();
    ids.sort_unstable_by_key(|id| id.0);
    Ok(ids)
}

/// One run: verifies `ids` in order until `budget` bytes are read or they end. Returns how
/// many it went through, the bytes verified, and the corrupt blocks it dropped.
fn scrub(
    store: &dyn BlockStore,
    leases: &LeaseBook,
    ids: &[BlockId],
    budget: u64,
) -> Result<(usize, u64, Vec<BlockId>), StoreError> {
    let mut buf = vec![0u8; READ];
    let (mut blocks, mut bytes, mut dropped) = (0, 0, Vec::new());
    for id in ids {
        if bytes >= budget {
            break;
        }
        match verify(store, id, &mut buf) {
            Ok(n) => bytes += n,
            Err(StoreError::Corrupt { .. }) => {
                tracing::warn!(block = %id, "scrub: the block does not match its id; dropped");
                store.remove(id)?;
                leases.forget(id).map_err(|e| StoreError::Unavailable { id: *id, reason: e.to_string() })?;
                dropped.push(*id);
            }
            // Removed meanwhile (GC, a release): nothing to verify.
            Err(StoreError::NotFound(_)) => {}
            Err(e) => return Err(e),
        }
        blocks += 1;
    }
    Ok((blocks, bytes, dropped))
}

impl Worker for ScrubWorker {
    fn name(&self) -> &'static str {
        "scrub"
    }

    fn due(&self, last: Option<u64>, now: u64) -> u64 {
        last.map_or(now, |l| l + self.rest)
    }

    fn run(&mut self, now: u64) -> Run<'_> {
        let (store, leases, budget) = (self.store.clone(), self.leases.clone(), self.rate);
        let (fresh, ids, done) = (self.ids.is_empty(), std::mem::take(&mut self.ids), self.done);
        Box::pin(async move {
            let interrupted = |_| WorkerError::Failed("interrupted".into());
            let (ids, blocks, bytes, dropped) = tokio::task::spawn_blocking(move || {
                let ids = if fresh { listing(store.as_ref())? } else { ids };
                let start = if fresh { 0 } else { done.min(ids.len()) };
                let (went, bytes, dropped) = scrub(store.as_ref(), &leases, &ids[start..], budget)?;
                Ok::<_, StoreError>((ids, went, bytes, dropped))
            })
            .await
            .map_err(interrupted)?
            .map_err(|e| WorkerError::Failed(e.to_string()))?;
            self.done = if fresh { blocks } else { done + blocks };
            let next = (self.done < ids.len()).then_some(());
            self.ids = if next.is_some() { ids } else { Vec::new() };
            let mut error = None;
            for id in &dropped {
                if let Err(e) = self.state.record_drop(id, now).await {
                    error = Some(e.to_string());
                }
            }
            self.pass.0 += blocks;
            self.pass.1 += bytes;
            self.pass.2 += dropped.len();
            let (pass_blocks, pass_bytes, pass_dropped) = self.pass;
            let so_far = format!(
                "verified {} ({pass_bytes} bytes), dropped {} corrupt",
                count(pass_blocks, "block", "blocks"),
                pass_dropped
            );
            let (found, after) = match next {
                Some(_) => {
                    self.rest = bytes.div_ceil(self.rate).max(1);
                    (format!("pass under way: {so_far}"), WorkerState::Throttled)
                }
                None => {
                    self.rest = self.every;
                    self.pass = (0, 0, 0);
                    (format!("pass done: {so_far}"), WorkerState::Idle)
                }
            };
            Ok(Outcome { found, after, error })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jewel::MemStore;

    fn store_with(n: usize) -> (MemStore, Vec<BlockId>) {
        let store = MemStore::new(None);
        let ids = (0..n).map(|i| store.put(&vec![i as u8; 40_000 + i]).unwrap()).collect();
        (store, ids)
    }

    #[test]
    fn a_pass_verifies_every_block_within_its_budget_and_drops_the_rotten_one() {
        let (store, ids) = store_with(5);
        let book = LeaseBook::in_memory().unwrap();
        let rotten = ids[3];
        assert!(store.tamper(&rotten, |d| d[20_000] ^= 1));
        // A budget of about two blocks per run: the pass takes several runs.
        let ids = listing(&store).unwrap();
        let (mut seen, mut dropped, mut runs) = (0, Vec::new(), 0);
        while seen < ids.len() {
            let (went, bytes, gone) = scrub(&store, &book, &ids[seen..], 80_000).unwrap();
            assert!(bytes <= 80_000 + 40_010, "a run reads about its budget: {bytes}");
            seen += went;
            dropped.extend(gone);
            runs += 1;
        }
        assert_eq!(seen, 5, "every block is verified once in the pass");
        assert!(runs >= 2, "the budget split the pass into runs: {runs}");
        assert_eq!(dropped, vec![rotten]);
        assert!(!store.has(&rotten).unwrap(), "the rotten block is gone");
        assert_eq!(store.list().unwrap().len(), 4, "the good ones stay");
    }
}
