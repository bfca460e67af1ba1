//! The control API's HTTP server: hyper over the loopback listener, with what
//! `axum::serve` leaves out, so that idle local connections cannot take the node's
//! descriptors (any local user can open them; only the token makes them useful):
//!
//! - a connection waiting for a request's headers (a new one, or one kept alive after a
//!   reply) is closed after [`HEADER_TIMEOUT`];
//! - at most [`MAX_CONNECTIONS`] are open: past that, the oldest one with no request in
//!   flight is closed to make room, so a client that sends its request at once is served
//!   however many idle ones others keep opening;
//! - a stop lets requests in flight finish (the caller bounds how long).

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes, HttpBody};
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use tower::ServiceExt;

/// How long a connection may take to send a request's headers once it waits for one.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// API connections open at once, at most.
pub const MAX_CONNECTIONS: usize = 512;

/// Counts a connection's requests in flight while it lives (dropped with the reply's body).
struct Busy(Arc<AtomicUsize>);

impl Busy {
    fn new(count: &Arc<AtomicUsize>) -> Busy {
        count.fetch_add(1, Ordering::SeqCst);
        Busy(count.clone())
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A reply's body that keeps its connection counted busy until it is sent or dropped.
struct Guarded {
    inner: Body,
    _busy: Busy,
}

impl HttpBody for Guarded {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

struct Conn {
    busy: Arc<AtomicUsize>,
    close: tokio::sync::oneshot::Sender<()>,
}

#[derive(Default)]
struct Conns {
    next: u64,
    open: BTreeMap<u64, Conn>,
}

impl Conns {
    /// Makes room for one more: closes the oldest connection with nothing in flight.
    fn make_room(&mut self) {
        if self.open.len() < MAX_CONNECTIONS {
            return;
        }
        let idle = self.open.iter().find(|(_, c)| c.busy.load(Ordering::SeqCst) == 0).map(|(id, _)| *id);
        if let Some(conn) = idle.and_then(|id| self.open.remove(&id)) {
            let _ = conn.close.send(());
        }
    }
}

/// Serves `app` on `listener` until `shutdown` resolves, then until the requests in
/// flight are done.
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: Router,
    shutdown: impl std::future::Future<Output = ()>,
) -> std::io::Result<()> {
    let conns = Arc::new(Mutex::new(Conns::default()));
    let (stopping, stop) = tokio::sync::watch::channel(false);
    let closed = Arc::new(tokio::sync::Notify::new());
    tokio::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            r = listener.accept() => match r {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of descriptors, say: the connections open will close.
                    tracing::warn!(error = %e, "API: could not accept a connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let busy = Arc::new(AtomicUsize::new(0));
        let (close, closing) = tokio::sync::oneshot::channel();
        let id = {
            let mut c = conns.lock().unwrap_or_else(|p| p.into_inner());
            c.make_room();
            let id = c.next;
            c.next += 1;
            c.open.insert(id, Conn { busy: busy.clone(), close });
            id
        };
        let (app, conns, closed, stop) = (app.clone(), conns.clone(), closed.clone(), stop.clone());
        tokio::spawn(async move {
            connection(stream, app, busy, closing, stop).await;
            conns.lock().unwrap_or_else(|p| p.into_inner()).open.remove(&id);
            closed.notify_waiters();
        });
    }
    let _ = stopping.send(true);
    loop {
        let wait = closed.notified();
        if conns.lock().unwrap_or_else(|p| p.into_inner()).open.is_empty() {
            return Ok(());
        }
        wait.await;
    }
}

async fn connection(
    stream: tokio::net::TcpStream,
    app: Router,
    busy: Arc<AtomicUsize>,
    mut closing: tokio::sync::oneshot::Receiver<()>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let service = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
        let app = app.clone();
        let guard = Busy::new(&busy);
        async move {
            let reply = app.oneshot(req.map(Body::new)).await;
            reply.map(|r| r.map(|b| Body::new(Guarded { inner: b, _busy: guard })))
        }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder.timer(TokioTimer::new()).header_read_timeout(HEADER_TIMEOUT).keep_alive(true);
    let conn = builder.serve_connection(TokioIo::new(stream), service);
    tokio::pin!(conn);
    let mut stopping = *stop.borrow();
    if stopping {
        conn.as_mut().graceful_shutdown();
    }
    loop {
        tokio::select! {
            r = conn.as_mut() => {
                if let Err(e) = r {
                    tracing::debug!(error = %e, "API connection ended");
                }
                return;
            }
            _ = &mut closing => return,
            r = stop.changed(), if !stopping => {
                stopping = true;
                if r.is_ok() {
                    conn.as_mut().graceful_shutdown();
                }
            }
        }
    }
}
