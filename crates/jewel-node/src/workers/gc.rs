//! Garbage collection: deletes the blocks held for others whose leases all ran out.

use std::sync::Arc;

use jewel::lease::LeaseBook;
use jewel::store::BlockStore;

use super::{count, Outcome, Run, Worker, WorkerError};

pub struct GcWorker {
    store: Arc<dyn BlockStore>,
    leases: Arc<LeaseBook>,
    /// Seconds between collections.
    every: u64,
}

impl GcWorker {
    pub fn new(store: Arc<dyn BlockStore>, leases: Arc<LeaseBook>, every: u64) -> GcWorker {
        GcWorker { store, leases, every: every.max(1) }
    }
}

impl Worker for GcWorker {
    fn name(&self) -> &'static str {
        "gc"
    }

    fn due(&self, last: Option<u64>, now: u64) -> u64 {
        last.unwrap_or(now) + self.every
    }

    fn run(&mut self, now: u64) -> Run<'_> {
        let (store, book) = (self.store.clone(), self.leases.clone());
        Box::pin(async move {
            let collected = tokio::task::spawn_blocking(move || jewel::lease::gc(store.as_ref(), &book, now))
                .await
                .map_err(|_| WorkerError::Failed("interrupted".into()))?
                .map_err(|e| WorkerError::Failed(e.to_string()))?;
            if collected.blocks > 0 {
                tracing::info!(blocks = collected.blocks, bytes = collected.bytes, "collected");
            }
            Ok(Outcome::idle(format!(
                "collected {} ({} bytes)",
                count(collected.blocks, "block", "blocks"),
                collected.bytes
            )))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jewel::lease::Lease;
    use jewel::{BlockId, BlockStore, MemStore};

    /// The collector keeps a leased block until the virtual clock passes its expiry, and
    /// keeps a block two files share until both leases ran out.
    #[tokio::test]
    async fn blocks_go_only_once_every_lease_ran_out() {
        let store = MemStore::new(None);
        let book = Arc::new(LeaseBook::in_memory().unwrap());
        let put = |data: &[u8]| {
            let mut w = store.writer().unwrap();
            w.write(data).unwrap();
            w.commit(None).unwrap()
        };
        let (a, b) = (put(b"held for one file"), put(b"held for two files"));
        let lease =
            |block, file: u8, expires| Lease { block, file: BlockId([file; 32]), owner: vec![9], expires };
        book.apply(&[lease(a, 1, 1_000), lease(b, 1, 1_000), lease(b, 2, 5_000)]).unwrap();
        let mut gc = GcWorker::new(Arc::new(store.clone()), book, 60);
        assert_eq!(gc.due(Some(100), 130), 160);

        let found = gc.run(999).await.unwrap();
        assert_eq!(found.found, "collected 0 blocks (0 bytes)");
        assert!(store.has(&a).unwrap() && store.has(&b).unwrap());
        gc.run(1_000).await.unwrap();
        assert!(!store.has(&a).unwrap(), "a's only lease expired at 1000");
        assert!(store.has(&b).unwrap(), "b is still leased for file 2");
        let found = gc.run(5_000).await.unwrap();
        assert_eq!(found.found, "collected 1 block (18 bytes)");
        assert!(!store.has(&b).unwrap());
    }
}
