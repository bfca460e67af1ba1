//! The HTTP gateway (`jewel serve gateway`): a user's files to browsers, media players and
//! anything that speaks HTTP, served by the node on a listener of its own while the command
//! that asked for it runs (its request to the API stays open; when it goes, the gateway
//! stops).
//!
//! - `GET`/`HEAD /jewel/CAP` and `/jewel/CAP/NAME` (NAME only names the file, for its type
//!   and a download's name): the cap is the capability itself, so these need nothing else.
//! - `GET`/`HEAD /files/PATH`: the user's index, with the gateway's token (HTTP Basic
//!   `jewel:TOKEN`, or `Authorization: Bearer TOKEN`).
//! - Single, suffix and open-ended ranges (206 with `Content-Range`, 416 when none can be
//!   served), `Accept-Ranges`, an `ETag` naming the content (answering `If-None-Match`
//!   with 304, and `If-Range`), a `Content-Type` from the name or from the first bytes.
//! - Bytes stream as they decode; a range fetches only the segments that cover it. Short
//!   ranges (a media player's) go through a small cache of whole segments, so many small
//!   reads do not fetch the same segment again. A client that goes away stops its read.
//! - Anything that names no readable cap or path is 404 with no detail; a path with `..`,
//!   an encoded slash or a NUL is refused. Requests at once are bounded; every answer
//!   carries `Content-Security-Policy: sandbox` (a stored HTML page runs in an origin of its
//!   own, never with the gateway's credentials) and `X-Content-Type-Options: nosniff`.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use jewel::sync::Locked;

use crate::node::Node;

/// Requests served at once, at most; more are answered 503.
pub const MAX_REQUESTS: usize = 64;
/// Ranges up to this long are served from whole segments kept in the cache.
const CACHED_RANGE: u64 = 1 << 20;
/// Bytes of segments the cache keeps, at most.
const CACHE_BYTES: usize = 64 << 20;
/// The bytes read to guess a type from the content.
const SNIFF: u64 = 512;

/// A gateway: the node it reads through, its token, its limits, its cache.
pub(crate) struct Gateway {
    node: Arc<Node>,
    token: String,
    requests: Arc<tokio::sync::Semaphore>,
    cache: Mutex<Cache>,
}

impl Gateway {
    pub(crate) fn new(node: Arc<Node>, token: String) -> Gateway {
        Gateway {
            node,
            token,
            requests: Arc::new(tokio::sync::Semaphore::new(MAX_REQUESTS)),
            cache: Mutex::new(Cache::default()),
        }
    }
}

/// A segment of a file: the cap that reads it, and its number.
type SegmentKey = (String, u64);

/// Whole segments read lately: the oldest goes first.
#[derive(Default)]
struct Cache {
    segments: VecDeque<(SegmentKey, Arc<Vec<u8>>)>,
    bytes: usize,
}

impl Cache {
    fn get(&mut self, key: &SegmentKey) -> Option<Arc<Vec<u8>>> {
        let i = self.segments.iter().position(|(k, _)| k == key)?;
        let hit = self.segments.remove(i)?;
        let bytes = hit.1.clone();
        self.segments.push_back(hit);
        Some(bytes)
    }

    fn put(&mut self, key: SegmentKey, bytes: Arc<Vec<u8>>) {
        if bytes.len() > CACHE_BYTES {
            return;
        }
        self.bytes += bytes.len();
        self.segments.push_back((key, bytes));
        while self.bytes > CACHE_BYTES {
            match self.segments.pop_front() {
                Some((_, old)) => self.bytes -= old.len(),
                None => break,
            }
        }
    }
}

type G = State<Arc<Gateway>>;

pub(crate) fn router(gateway: Arc<Gateway>) -> Router {
    Router::new()
        .route("/jewel/{cap}", get(by_cap))
        .route("/jewel/{cap}/{*name}", get(by_cap_named))
        .route("/files/{*path}", get(by_path))
        .fallback(|| async { not_found() })
        .with_state(gateway)
}

fn not_found() -> Response {
    plain(StatusCode::NOT_FOUND, "not found")
}

fn plain(status: StatusCode, text: &'static str) -> Response {
    let mut r = (status, text).into_response();
    guard_headers(r.headers_mut());
    r
}

/// What every answer carries: stored content never runs with the gateway's origin.
fn guard_headers(h: &mut HeaderMap) {
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static("sandbox"));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
}

async fn by_cap(State(g): G, Path(cap): Path<String>, method: Method, headers: HeaderMap) -> Response {
    serve(&g, &cap, None, &method, &headers, true).await
}

async fn by_cap_named(
    State(g): G,
    Path((cap, name)): Path<(String, String)>,
    method: Method,
    headers: HeaderMap,
) -> Response {
    serve(&g, &cap, Some(&name), &method, &headers, true).await
}

async fn by_path(State(g): G, uri: Uri, method: Method, headers: HeaderMap) -> Response {
    if !authorized(&g.token, &headers) {
        let mut r = plain(StatusCode::UNAUTHORIZED, "this needs the gateway's token");
        r.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Basic realm=\"jewel\""));
        return r;
    }
    let Some(path) = index_path(uri.path()) else { return not_found() };
    let Some(cap) = g.node.index.cap_at(&path) else { return not_found() };
    serve(&g, &cap, Some(&path), &method, &headers, false).await
}

/// The index path a `/files/…` URL path names: percent-decoded, with no encoded slash, no
/// NUL, no `.` or `..` (the index's own rules).
fn index_path(raw: &str) -> Option<String> {
    let rest = raw.strip_prefix("/files/")?;
    if rest.to_ascii_lowercase().contains("%2f") {
        return None;
    }
    let decoded = percent_decode(rest)?;
    jewel::index::normalize(&decoded).ok().filter(|p| !p.is_empty())
}

fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Whether the request carries the gateway's token: HTTP Basic (any user name) or Bearer.
pub(crate) fn authorized(token: &str, headers: &HeaderMap) -> bool {
    use base64::Engine;
    let Some(auth) = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) else { return false };
    let given = if let Some(b) = auth.strip_prefix("Bearer ") {
        b.trim().to_string()
    } else if let Some(b) = auth.strip_prefix("Basic ") {
        let Ok(raw) = base64::engine::general_purpose::STANDARD.decode(b.trim()) else { return false };
        let text = String::from_utf8_lossy(&raw).into_owned();
        text.split_once(':').map(|(_, p)| p.to_string()).unwrap_or_default()
    } else {
        return false;
    };
    // Compared as hashes: the time taken says nothing of how much of it matched.
    blake3::hash(given.as_bytes()) == blake3::hash(token.as_bytes())
}

/// A `Range` header's one range over `len` bytes (end exclusive): `None` if there is none
/// this serves (absent, or several ranges: the whole file is sent), `Some(Err)` if it
/// cannot be satisfied.
fn range_of(value: &str, len: u64) -> Option<Result<(u64, u64), ()>> {
    let spec = value.trim().strip_prefix("bytes=")?;
    if spec.contains(',') {
        return None;
    }
    let (a, b) = spec.split_once('-')?;
    let (a, b) = (a.trim(), b.trim());
    let range = match (a.is_empty(), b.is_empty()) {
        // The last b bytes.
        (true, false) => {
            let n: u64 = b.parse().ok()?;
            if n == 0 {
                return Some(Err(()));
            }
            (len.saturating_sub(n), len)
        }
        (false, _) => {
            let start: u64 = a.parse().ok()?;
            let end = if b.is_empty() { len } else { b.parse::<u64>().ok()?.saturating_add(1).min(len) };
            if start >= len || end <= start {
                return Some(Err(()));
            }
            (start, end)
        }
        (true, true) => return None,
    };
    if range.0 >= range.1 {
        return Some(Err(()));
    }
    Some(Ok(range))
}

/// Answers a read of `cap`: headers, then the bytes as they decode (see the module's doc).
pub(crate) async fn serve(
    g: &Arc<Gateway>,
    cap: &str,
    name: Option<&str>,
    method: &Method,
    headers: &HeaderMap,
    immutable: bool,
) -> Response {
    let Ok(permit) = g.requests.clone().try_acquire_owned() else {
        return plain(StatusCode::SERVICE_UNAVAILABLE, "the gateway is busy; try again");
    };
    let (len, tag, segment) = match g.node.describe_read(cap).await {
        Ok(d) => d,
        Err(e) => {
            tracing::debug!(error = %e, "gateway: no readable file");
            return not_found();
        }
    };
    let etag = format!("\"{tag}\"");
    let mut h = HeaderMap::new();
    guard_headers(&mut h);
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    if let Ok(v) = HeaderValue::from_str(&etag) {
        h.insert(header::ETAG, v);
    }
    let cache = if immutable { "private, max-age=31536000, immutable" } else { "private, no-cache" };
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    let matches =
        |v: &HeaderValue| v.to_str().is_ok_and(|t| t.split(',').any(|e| e.trim() == etag || e.trim() == "*"));
    if headers.get(header::IF_NONE_MATCH).is_some_and(matches) {
        return (StatusCode::NOT_MODIFIED, h).into_response();
    }
    // A range, unless If-Range names other content.
    let if_range_ok =
        headers.get(header::IF_RANGE).is_none_or(|v| v.to_str().is_ok_and(|t| t.trim() == etag));
    let asked = headers.get(header::RANGE).and_then(|v| v.to_str().ok()).filter(|_| if_range_ok);
    let (status, start, end) = match asked.and_then(|v| range_of(v, len)) {
        None => (StatusCode::OK, 0, len),
        Some(Ok((s, e))) => (StatusCode::PARTIAL_CONTENT, s, e),
        Some(Err(())) => {
            if let Ok(v) = HeaderValue::from_str(&format!("bytes */{len}")) {
                h.insert(header::CONTENT_RANGE, v);
            }
            return (StatusCode::RANGE_NOT_SATISFIABLE, h).into_response();
        }
    };
    if status == StatusCode::PARTIAL_CONTENT {
        if let Ok(v) = HeaderValue::from_str(&format!("bytes {start}-{}/{len}", end - 1)) {
            h.insert(header::CONTENT_RANGE, v);
        }
    }
    let kind = match name.and_then(|n| mime_guess::from_path(n).first_raw()) {
        Some(k) => k.to_string(),
        None => sniffed(g, cap, len, segment).await,
    };
    if let Ok(v) = HeaderValue::from_str(&kind) {
        h.insert(header::CONTENT_TYPE, v);
    }
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(end - start));
    if *method == Method::HEAD || start == end {
        return (status, h).into_response();
    }
    let body = if end - start <= CACHED_RANGE {
        match cached(g, cap, start, end, segment).await {
            Ok(bytes) => axum::body::Body::from(bytes),
            Err(e) => {
                tracing::info!(error = %e, "gateway: a read failed");
                return plain(StatusCode::BAD_GATEWAY, "the file could not be read now");
            }
        }
    } else {
        match g.node.read(cap, Some((start, end))).await {
            Ok((_, rx)) => {
                let stream =
                    // The stream holds the request's turn: a long download counts while it runs.
                    futures::stream::unfold((rx, permit), |(mut rx, permit)| async move {
                        rx.recv().await.map(|i| (i, (rx, permit)))
                    });
                axum::body::Body::from_stream(stream)
            }
            Err(e) => {
                tracing::info!(error = %e, "gateway: a read failed");
                return plain(StatusCode::BAD_GATEWAY, "the file could not be read now");
            }
        }
    };
    (status, h, body).into_response()
}

/// The type the first bytes say, or `application/octet-stream`.
async fn sniffed(g: &Arc<Gateway>, cap: &str, len: u64, segment: u32) -> String {
    let head = cached(g, cap, 0, len.min(SNIFF), segment).await.unwrap_or_default();
    infer::get(&head).map_or("application/octet-stream", |t| t.mime_type()).to_string()
}

/// Bytes `start..end` of the file, from whole segments kept in the cache; the segments
/// missing are read in one read of their span, and kept.
async fn cached(g: &Arc<Gateway>, cap: &str, start: u64, end: u64, segment: u32) -> Result<Vec<u8>, String> {
    let seg = u64::from(segment.max(1));
    let (first, last) = (start / seg, end.saturating_sub(1) / seg);
    let mut have: Vec<Option<Arc<Vec<u8>>>> = {
        let mut cache = g.cache.locked();
        (first..=last).map(|i| cache.get(&(cap.to_string(), i))).collect()
    };
    if let (Some(a), Some(b)) =
        (have.iter().position(Option::is_none), have.iter().rposition(Option::is_none))
    {
        let (from, to) = ((first + a as u64) * seg, (first + b as u64 + 1) * seg);
        let (len, mut rx) = g.node.read(cap, Some((from, to))).await.map_err(|e| e.to_string())?;
        let mut span = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
        while let Some(chunk) = rx.recv().await {
            span.extend_from_slice(&chunk.map_err(|e| e.to_string())?);
        }
        let mut cache = g.cache.locked();
        for (k, piece) in span.chunks(usize::try_from(seg).unwrap_or(usize::MAX)).enumerate() {
            let i = a + k;
            let whole = Arc::new(piece.to_vec());
            cache.put((cap.to_string(), first + i as u64), whole.clone());
            if let Some(slot) = have.get_mut(i) {
                *slot = Some(whole);
            }
        }
    }
    let mut out = Vec::with_capacity(usize::try_from(end - start).unwrap_or(0));
    for (k, bytes) in have.into_iter().enumerate() {
        let at = (first + k as u64) * seg;
        let bytes = bytes.unwrap_or_default();
        let from = usize::try_from(start.saturating_sub(at)).unwrap_or(usize::MAX);
        let to = usize::try_from(end - at).unwrap_or(usize::MAX).min(bytes.len());
        out.extend_from_slice(bytes.get(from..to).unwrap_or_default());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_are_read_as_http_says() {
        assert_eq!(range_of("bytes=0-99", 1000), Some(Ok((0, 100))));
        assert_eq!(range_of("bytes=900-", 1000), Some(Ok((900, 1000))));
        assert_eq!(range_of("bytes=-100", 1000), Some(Ok((900, 1000))));
        assert_eq!(range_of("bytes=-5000", 1000), Some(Ok((0, 1000))));
        assert_eq!(range_of("bytes=990-2000", 1000), Some(Ok((990, 1000))));
        assert_eq!(range_of("bytes=1000-", 1000), Some(Err(())));
        assert_eq!(range_of("bytes=-0", 1000), Some(Err(())));
        assert_eq!(range_of("bytes=5-2", 1000), Some(Err(())));
        assert_eq!(range_of("bytes=0-1,5-6", 1000), None, "several ranges: the whole file");
        assert_eq!(range_of("items=0-1", 1000), None);
        assert_eq!(range_of("bytes=x-1", 1000), None);
    }

    #[test]
    fn index_paths_from_urls_refuse_ways_out() {
        assert_eq!(index_path("/files/docs/a%20b.txt").as_deref(), Some("docs/a b.txt"));
        assert_eq!(index_path("/files/docs/../etc"), None);
        assert_eq!(index_path("/files/a%2Fb"), None);
        assert_eq!(index_path("/files/a%00b"), None);
        assert_eq!(index_path("/files/%zz"), None);
        assert_eq!(index_path("/files/"), None);
    }

    #[test]
    fn only_the_token_opens_the_index() {
        let mut h = HeaderMap::new();
        assert!(!authorized("t0k", &h));
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer t0k"));
        assert!(authorized("t0k", &h));
        // jewel:t0k
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic amV3ZWw6dDBr"));
        assert!(authorized("t0k", &h));
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic amV3ZWw6bm9wZQ=="));
        assert!(!authorized("t0k", &h));
    }

    #[test]
    fn the_cache_keeps_the_latest_segments_within_its_bytes() {
        let mut c = Cache::default();
        for i in 0..100 {
            c.put(("c".into(), i), Arc::new(vec![0; 1 << 20]));
        }
        assert!(c.bytes <= CACHE_BYTES);
        assert!(c.get(&("c".into(), 99)).is_some());
        assert!(c.get(&("c".into(), 0)).is_none());
    }
}
