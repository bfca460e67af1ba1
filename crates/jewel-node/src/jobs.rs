//! Progress of puts and gets that a client follows by a job id it chose: a bounded table of
//! counters, and the reader and fetch wrappers that feed them.

use jewel::sync::Locked;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use jewel::manifest::Manifest;
use jewel::pipeline::{Fetch, Fetched, PieceFault, PipelineError};
use jewel::pool::Pool;

/// Jobs whose progress a client may follow, at most.
const MAX_JOBS: usize = 64;
/// A job id is at most this long.
const MAX_JOB_ID: usize = 64;

/// How far one put or get is: bytes of the file done, of `total`.
#[derive(Default)]
pub struct Progress {
    done: AtomicU64,
    total: AtomicU64,
}

impl Progress {
    pub fn add(&self, n: u64) {
        self.done.fetch_add(n, Ordering::Relaxed);
    }

    pub fn set_done(&self, n: u64) {
        self.done.store(n, Ordering::Relaxed);
    }
}

/// The jobs running now, by the id each client chose.
#[derive(Default)]
pub struct Jobs(Mutex<BTreeMap<String, Arc<Progress>>>);

impl Jobs {
    /// Starts following job `id` (if the client named one and there is room).
    pub fn start(&self, id: Option<&str>, total: u64) -> Option<JobGuard<'_>> {
        let id = id?;
        if id.is_empty() || id.len() > MAX_JOB_ID {
            return None;
        }
        let mut jobs = self.0.locked();
        if jobs.len() >= MAX_JOBS {
            return None;
        }
        let p = Arc::new(Progress::default());
        p.total.store(total, Ordering::Relaxed);
        jobs.insert(id.to_string(), p.clone());
        Some(JobGuard { jobs: self, id: id.to_string(), progress: p })
    }

    /// (done, total) of a running job.
    pub fn get(&self, id: &str) -> Option<(u64, u64)> {
        let jobs = self.0.locked();
        let p = jobs.get(id)?;
        Some((p.done.load(Ordering::Relaxed), p.total.load(Ordering::Relaxed)))
    }
}

/// Removes its job when the put or get ends, however it ends.
pub struct JobGuard<'a> {
    jobs: &'a Jobs,
    id: String,
    pub progress: Arc<Progress>,
}

impl Drop for JobGuard<'_> {
    fn drop(&mut self) {
        self.jobs.0.locked().remove(&self.id);
    }
}

/// Counts each segment fetched (its plaintext length) into a job's progress, and stops
/// the get (before its next segment) once `stop` is set.
pub struct CountedFetch<'a, F> {
    pub inner: F,
    pub progress: Option<Arc<Progress>>,
    pub manifest: &'a Manifest,
    pub stop: Option<Arc<std::sync::atomic::AtomicBool>>,
}

impl<F: Fetch> Fetch for CountedFetch<'_, F> {
    fn fetch(
        &self,
        scheme: &dyn jewel::codec::Scheme,
        segment: usize,
        want: &[(u64, usize)],
        pool: &Pool<Vec<u8>>,
        places: &mut [Option<&mut [u8]>],
    ) -> Result<Fetched, PipelineError> {
        if self.stop.as_ref().is_some_and(|s| s.load(std::sync::atomic::Ordering::SeqCst)) {
            let why = "the get was stopped (its client went, or a new get of the same output began)";
            return Err(PipelineError::Output(std::io::Error::new(std::io::ErrorKind::Interrupted, why)));
        }
        let chunks = self.inner.fetch(scheme, segment, want, pool, places)?;
        if let Some(p) = &self.progress {
            p.add(self.manifest.plain_len(segment) as u64);
        }
        Ok(chunks)
    }

    fn report(&self) -> (Vec<u64>, Vec<PieceFault>) {
        self.inner.report()
    }
}

/// Counts the bytes that pass through a reader into a job's progress.
pub struct Counted<T> {
    pub inner: T,
    pub progress: Option<Arc<Progress>>,
}

impl<R: std::io::Read> std::io::Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        if let Some(p) = &self.progress {
            p.add(n as u64);
        }
        Ok(n)
    }
}
