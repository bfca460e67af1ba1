//! A database's one writer: a thread of its own that owns every write transaction of a redb
//! database (a node's `state.redb`: its files, index, settings and the leases of the blocks
//! it holds). Callers hand it a change and wait for the commit (awaiting it on an async
//! thread, or blocking on it elsewhere); no write transaction, and so no fsync, ever runs
//! on an async worker thread, and changes from every part of the node share commits.
//!
//! **Group commit.** The writer takes every change queued while it was committing the last
//! ones (at most [`MAX_BATCH`]) into one transaction: a burst of index changes (a `put -r`
//! of many files) costs one fsync per batch, not one per change. A batch is durable unless
//! every change in it asked for less ([`Durability::None`] for peers seen, say). A change
//! that fails (a damaged record it reads, say) must not fail the others: the batch is then
//! aborted and each change is run again in a transaction of its own.

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::sync::Arc;
use std::task::{Context, Poll};

use futures::channel::oneshot;
use redb::{Database, WriteTransaction};

/// What the writer itself can fail with; each caller's error type says it its own way
/// (`E: From<WriterError>`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WriterError {
    /// A transaction could not begin or commit (the disk, say).
    #[error("{}: {reason}", path.display())]
    Db { path: PathBuf, reason: String },
    /// The writer has stopped (the database is closing).
    #[error("the database's writer has stopped (is the node shutting down?)")]
    Stopped,
}

/// Changes waiting for the writer, at most; a caller past it waits for room.
pub const WRITE_QUEUE: usize = 1024;
/// Changes committed in one transaction, at most.
pub const MAX_BATCH: usize = 256;

/// Whether a change must be on disk before its caller hears it is done.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Durability {
    /// fsynced before the reply (what a user stored, their settings, the index).
    Durable,
    /// Kept, but a crash may forget it (peers seen, known peers): cheap bookkeeping.
    None,
}

/// How a change ran in a transaction (its own error, if any, is kept in the change).
#[derive(Debug)]
struct Failed;

/// One change, type-erased for the queue.
trait Job: Send {
    /// Makes the change in `tx`; may run again (in a fresh transaction) if the batch it was
    /// in failed.
    fn run(&mut self, tx: &WriteTransaction) -> Result<(), Failed>;
    /// Tells the caller how it ended: `committed` is the commit's outcome; the change's
    /// own error, if it failed, goes first.
    fn finish(self: Box<Self>, committed: Result<(), WriterError>);
    fn durability(&self) -> Durability;
}

struct Typed<R, E, F> {
    change: F,
    out: Option<Result<R, E>>,
    reply: oneshot::Sender<Result<R, E>>,
    durability: Durability,
}

impl<R, E, F> Job for Typed<R, E, F>
where
    R: Send,
    E: From<WriterError> + Send,
    F: FnMut(&WriteTransaction) -> Result<R, E> + Send,
{
    fn run(&mut self, tx: &WriteTransaction) -> Result<(), Failed> {
        let out = (self.change)(tx);
        let failed = out.is_err();
        self.out = Some(out);
        if failed {
            Err(Failed)
        } else {
            Ok(())
        }
    }

    fn finish(self: Box<Self>, committed: Result<(), WriterError>) {
        let this = *self;
        let reply = match (committed, this.out) {
            (_, Some(Err(own))) => Err(own),
            (Ok(()), Some(Ok(out))) => Ok(out),
            (Err(e), _) => Err(E::from(e)),
            (Ok(()), None) => Err(E::from(WriterError::Stopped)),
        };
        // A caller that stopped waiting does not need the answer; the change stands.
        let _ = this.reply.send(reply);
    }

    fn durability(&self) -> Durability {
        self.durability
    }
}

/// A change handed to the writer: `.await` it, or [`Pending::wait`] off async threads.
/// Dropping it does not undo or stop the change.
#[must_use = "the change is only known to be kept once this is awaited or waited for"]
pub struct Pending<R, E> {
    rx: Result<oneshot::Receiver<Result<R, E>>, Option<E>>,
}

// Nothing in it is ever pinned in place: the receiver moves freely, and so may the error.
impl<R, E> Unpin for Pending<R, E> {}

impl<R, E: From<WriterError>> Pending<R, E> {
    /// Blocks this thread until the change is committed (or failed). Not for async
    /// threads: await it there.
    pub fn wait(self) -> Result<R, E> {
        futures::executor::block_on(self)
    }
}

impl<R, E: From<WriterError>> Future for Pending<R, E> {
    type Output = Result<R, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        match &mut this.rx {
            Err(e) => Poll::Ready(Err(e.take().unwrap_or_else(|| E::from(WriterError::Stopped)))),
            Ok(rx) => Pin::new(rx).poll(cx).map(|r| r.unwrap_or_else(|_| Err(E::from(WriterError::Stopped)))),
        }
    }
}

/// The handle to the writer thread, shared by everything that writes to its database
/// (clones are cheap); once the last is dropped the thread finishes what is queued and is
/// waited for (so the database is closed when its users are dropped).
#[derive(Clone)]
pub struct Writer {
    inner: Arc<Inner>,
}

struct Inner {
    tx: Option<SyncSender<Box<dyn Job>>>,
    thread: Option<std::thread::JoinHandle<()>>,
    commits: Arc<AtomicU64>,
}

impl Writer {
    /// Starts the writer of `db` (at `path`, for messages; any name for one in memory).
    pub fn start(db: Arc<Database>, path: PathBuf) -> Result<Writer, WriterError> {
        let (tx, rx) = std::sync::mpsc::sync_channel(WRITE_QUEUE);
        let commits = Arc::new(AtomicU64::new(0));
        let counted = commits.clone();
        let named = path.clone();
        let thread = std::thread::Builder::new()
            .name("jewel-state".into())
            .spawn(move || run(&db, &path, &rx, &counted))
            .map_err(|e| WriterError::Db { path: named, reason: format!("cannot start its writer: {e}") })?;
        Ok(Writer { inner: Arc::new(Inner { tx: Some(tx), thread: Some(thread), commits }) })
    }

    /// Queues `change` (waiting for room while [`WRITE_QUEUE`] changes are queued).
    pub fn submit<R, E, F>(&self, durability: Durability, change: F) -> Pending<R, E>
    where
        R: Send + 'static,
        E: From<WriterError> + Send + 'static,
        F: FnMut(&WriteTransaction) -> Result<R, E> + Send + 'static,
    {
        let (reply, rx) = oneshot::channel();
        let job: Box<dyn Job> = Box::new(Typed { change, out: None, reply, durability });
        let Some(queue) = &self.inner.tx else {
            return Pending { rx: Err(Some(E::from(WriterError::Stopped))) };
        };
        let sent = match queue.try_send(job) {
            Ok(()) => Ok(()),
            // Full: back-pressure, the writer is fsyncing as fast as the disk allows.
            Err(TrySendError::Full(job)) => queue.send(job).map_err(|_| ()),
            Err(TrySendError::Disconnected(_)) => Err(()),
        };
        match sent {
            Ok(()) => Pending { rx: Ok(rx) },
            Err(()) => Pending { rx: Err(Some(E::from(WriterError::Stopped))) },
        }
    }

    /// Write transactions committed since the writer started.
    pub fn commits(&self) -> u64 {
        self.inner.commits.load(Ordering::Relaxed)
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.tx = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn run(db: &Database, path: &std::path::Path, rx: &Receiver<Box<dyn Job>>, commits: &AtomicU64) {
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        if batch.len() > 1 {
            match commit(db, path, &mut batch) {
                Ok(()) => {
                    commits.fetch_add(1, Ordering::Relaxed);
                    for job in batch {
                        job.finish(Ok(()));
                    }
                    continue;
                }
                Err(e) => {
                    tracing::debug!(error = %e, changes = batch.len(), "a batch failed; committing its changes one by one")
                }
            }
        }
        for mut job in batch {
            let r = commit(db, path, std::slice::from_mut(&mut job));
            if r.is_ok() {
                commits.fetch_add(1, Ordering::Relaxed);
            }
            job.finish(r);
        }
    }
}

/// Runs `jobs` in one write transaction and commits it; the first error aborts it all (a
/// change's own error is kept in it; the batch is told `Stopped`, which that change's
/// error overrides).
fn commit(db: &Database, path: &std::path::Path, jobs: &mut [Box<dyn Job>]) -> Result<(), WriterError> {
    let err = |e: &dyn std::fmt::Display| WriterError::Db { path: path.to_path_buf(), reason: e.to_string() };
    let mut tx = db.begin_write().map_err(|e| err(&e))?;
    if jobs.iter().all(|j| j.durability() == Durability::None) {
        tx.set_durability(redb::Durability::None);
    }
    for job in jobs.iter_mut() {
        if job.run(&tx).is_err() {
            let _ = tx.abort();
            return Err(WriterError::Db { path: path.to_path_buf(), reason: "a change failed".into() });
        }
    }
    tx.commit().map_err(|e| err(&e))
}
