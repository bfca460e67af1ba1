//! The node's background work as workers: garbage collection, lease renewal, audits,
//! repair and scrubbing, each with a name, a state (busy, idle, throttled), its
//! last run, what that run found, and its last error, shown by `jewel status`.
//!
//! A worker decides only from the time it is given: [`Worker::due`] says when it wants to
//! run next and [`Worker::run`] takes `now`, both in Unix seconds from a [`Clock`]. The
//! node gives them [`SystemClock`]; a test gives a [`ManualClock`] and calls `run` itself,
//! so it drives a worker's decisions through days of virtual time in no time at all.

mod audit;
mod gc;
mod release;
mod renew;
mod repair;
mod scrub;

use jewel::sync::Locked;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub use audit::AuditWorker;
pub use gc::GcWorker;
pub use release::ReleaseWorker;
pub use renew::RenewWorker;
pub use repair::{backoff, RepairWorker};
pub use scrub::ScrubWorker;

use crate::api::{WorkerState, WorkerStatus};

/// Unix seconds, from wherever the node or a test says.
pub trait Clock: Send + Sync {
    fn now(&self) -> u64;
}

/// The real time.
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> u64 {
        jewel::lease::now()
    }
}

/// A clock that moves only when told to: for tests.
#[derive(Debug, Default)]
pub struct ManualClock(AtomicU64);

impl ManualClock {
    pub fn new(now: u64) -> ManualClock {
        ManualClock(AtomicU64::new(now))
    }

    pub fn set(&self, now: u64) {
        self.0.store(now, Ordering::Relaxed);
    }

    pub fn advance(&self, secs: u64) {
        self.0.fetch_add(secs, Ordering::Relaxed);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Why a run failed (the worker runs again when next due).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WorkerError {
    #[error("{0}")]
    Failed(String),
}

/// What a run found, and the state the worker is in after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// A few words: "collected 3 blocks (12 MB)", "audited 2 files, 1 piece missing".
    pub found: String,
    /// `Idle` if it has nothing more to do until it is due again, `Throttled` if it holds
    /// work back (a backoff), `Busy` if it has more to do at once.
    pub after: WorkerState,
    /// The last error of a run that did part of its work (a file that failed among many).
    pub error: Option<String>,
}

impl Outcome {
    pub fn idle(found: impl Into<String>) -> Outcome {
        Outcome { found: found.into(), after: WorkerState::Idle, error: None }
    }

    /// `self`, recording `error` if there was one.
    pub fn failed(mut self, error: Option<String>) -> Outcome {
        self.error = error;
        self
    }
}

/// A run in progress.
pub type Run<'a> = Pin<Box<dyn Future<Output = Result<Outcome, WorkerError>> + Send + 'a>>;

/// One kind of background work.
pub trait Worker: Send + 'static {
    fn name(&self) -> &'static str;
    /// When the next run is due (Unix seconds), given that the last one ended at `last`
    /// (`None`: it has not run yet) and the time is `now`.
    fn due(&self, last: Option<u64>, now: u64) -> u64;
    /// One run at `now`.
    fn run(&mut self, now: u64) -> Run<'_>;
}

/// The running workers: their status, and a way to wake one before it is due.
pub struct Workers {
    slots: Vec<Slot>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

struct Slot {
    name: &'static str,
    status: Arc<Mutex<WorkerStatus>>,
    wake: Arc<tokio::sync::Notify>,
}

/// A worker's wake-up call, for another part of the node (an audit that found losses
/// wakes the repair worker).
#[derive(Clone, Default)]
pub struct Waker(Arc<tokio::sync::Notify>);

impl Waker {
    pub fn wake(&self) {
        self.0.notify_one();
    }
}

impl Workers {
    /// Starts each worker on its own task. `wakers[i]`, if given, wakes worker i early.
    pub fn spawn(workers: Vec<(Box<dyn Worker>, Waker)>, clock: Arc<dyn Clock>) -> Workers {
        let mut slots = Vec::with_capacity(workers.len());
        let mut tasks = Vec::with_capacity(workers.len());
        for (worker, waker) in workers {
            let status = Arc::new(Mutex::new(WorkerStatus {
                name: worker.name().to_string(),
                state: WorkerState::Idle,
                runs: 0,
                last_run: None,
                last_found: None,
                last_error: None,
                next_run: None,
            }));
            slots.push(Slot { name: worker.name(), status: status.clone(), wake: waker.0.clone() });
            tasks.push(tokio::spawn(drive(worker, status, clock.clone(), waker.0)));
        }
        Workers { slots, tasks }
    }

    /// Every worker's status, in the order they were started.
    pub fn status(&self) -> Vec<WorkerStatus> {
        self.slots.iter().map(|s| s.status.locked().clone()).collect()
    }

    /// Wakes the worker called `name` now.
    pub fn wake(&self, name: &str) {
        if let Some(s) = self.slots.iter().find(|s| s.name == name) {
            s.wake.notify_one();
        }
    }

    /// Stops every worker (a run in progress is dropped where it waits).
    pub fn stop(&self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Runs one worker whenever it is due (or woken), recording each run in `status`.
async fn drive(
    mut worker: Box<dyn Worker>,
    status: Arc<Mutex<WorkerStatus>>,
    clock: Arc<dyn Clock>,
    wake: Arc<tokio::sync::Notify>,
) {
    let set = |f: &dyn Fn(&mut WorkerStatus)| {
        let mut s = status.locked();
        f(&mut s);
    };
    let mut last = None;
    loop {
        let now = clock.now();
        let due = worker.due(last, now);
        set(&|s| s.next_run = Some(due));
        if due > now {
            tokio::select! {
                () = tokio::time::sleep(Duration::from_secs(due - now)) => {}
                () = wake.notified() => {}
            }
        }
        set(&|s| s.state = WorkerState::Busy);
        let result = worker.run(clock.now()).await;
        let ended = clock.now();
        last = Some(ended);
        match result {
            Ok(outcome) => {
                tracing::debug!(worker = worker.name(), found = %outcome.found, "worker ran");
                if let Some(e) = &outcome.error {
                    tracing::warn!(worker = worker.name(), error = %e, "worker run had failures");
                }
                set(&|s| {
                    s.runs += 1;
                    s.last_run = Some(ended);
                    s.last_found = Some(outcome.found.clone());
                    s.last_error = outcome.error.clone();
                    s.state = outcome.after;
                });
            }
            Err(e) => {
                tracing::warn!(worker = worker.name(), error = %e, "worker failed");
                set(&|s| {
                    s.runs += 1;
                    s.last_run = Some(ended);
                    s.last_error = Some(e.to_string());
                    s.state = WorkerState::Idle;
                });
            }
        }
    }
}

/// "1 file", "3 files".
pub(crate) fn count(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

#[cfg(test)]
mod tests {
    use super::*;
    use jewel::lease::{Lease, LeaseBook};
    use jewel::{BlockId, BlockStore, MemStore};

    /// Tokio's (paused) time as Unix seconds: the runner's sleeps and the workers' `now`
    /// move together, and a test passes hours in no time.
    struct Virtual {
        unix: u64,
        start: tokio::time::Instant,
    }

    impl Clock for Virtual {
        fn now(&self) -> u64 {
            self.unix + self.start.elapsed().as_secs()
        }
    }

    /// The runner wakes a worker when it is due, on the injected clock, and records each
    /// run: a block leased until t0 + 150 s is kept by the collections at t0 + 60 and
    /// t0 + 120, and collected by the one at t0 + 180.
    #[tokio::test(start_paused = true)]
    async fn the_runner_drives_a_worker_on_the_injected_clock() {
        const T0: u64 = 1_000_000;
        let store = MemStore::new(None);
        let id = store.put(b"leased for a while").unwrap();
        let book = Arc::new(LeaseBook::in_memory().unwrap());
        let lease = Lease { block: id, file: BlockId([1; 32]), owner: vec![1], expires: T0 + 150 };
        book.apply(&[lease]).unwrap();
        let clock = Arc::new(Virtual { unix: T0, start: tokio::time::Instant::now() });
        let gc = GcWorker::new(Arc::new(store.clone()), book, 60);
        let workers = Workers::spawn(vec![(Box::new(gc), Waker::default())], clock.clone());
        let status = |workers: &Workers| workers.status().remove(0);

        tokio::time::sleep(Duration::from_secs(130)).await;
        let s = status(&workers);
        assert_eq!((s.runs, s.last_run, s.next_run), (2, Some(T0 + 120), Some(T0 + 180)), "{s:?}");
        assert_eq!(s.last_found.as_deref(), Some("collected 0 blocks (0 bytes)"));
        assert!(store.has(&id).unwrap(), "still leased at t0 + 120");

        tokio::time::sleep(Duration::from_secs(60)).await;
        let s = status(&workers);
        assert_eq!((s.runs, s.last_run, s.state), (3, Some(T0 + 180), WorkerState::Idle), "{s:?}");
        assert_eq!(s.last_found.as_deref(), Some("collected 1 block (18 bytes)"));
        assert!(!store.has(&id).unwrap(), "collected once its lease ran out");
        workers.stop();
    }
}
