//! restic's REST backend, version 2 (`jewel serve restic`), over the user's index: a
//! repository is a folder of the index (`NAME/config`, `NAME/data/ID`, `NAME/keys/ID`,
//! `NAME/locks/ID`, `NAME/snapshots/ID`, `NAME/index/ID`), each object an ordinary Jewel
//! file (encrypted, erasure-coded, leased, audited and repaired), so
//! `restic -r rest:http://jewel:TOKEN@127.0.0.1:PORT/NAME/` backs up to the network.
//!
//! - `POST /NAME/?create=true` makes a repository (its folder comes with its first object);
//!   `GET`/`HEAD`/`POST /NAME/config`; `GET /NAME/TYPE/` lists (v2: names and sizes, as
//!   JSON, when asked for `application/vnd.x.restic.rest.v2`; v1: names); `GET` (with
//!   ranges), `HEAD`, `POST` and `DELETE /NAME/TYPE/ID`.
//! - An object is stored whole before its `POST` is answered (and kept in the index in the
//!   same transaction); the index is published before a snapshot's `POST` is answered, so
//!   a backup restic reports done survives the loss of this device.
//! - Every route needs the token (HTTP Basic, any user name). Names are checked: a
//!   repository is one path component, a type one of restic's, an id 64 hex digits.
//!   `DELETE` frees the object at once (restic deletes only what it no longer needs).

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;

use crate::gateway::{authorized, Gateway};
use crate::node::Node;

/// Objects larger than this are refused (restic's packs are a few to 128 MiB).
pub const MAX_OBJECT: u64 = 256 << 20;
/// The types of object a repository holds.
const TYPES: [&str; 5] = ["data", "keys", "locks", "snapshots", "index"];
/// restic's media type for version 2 listings.
const V2: &str = "application/vnd.x.restic.rest.v2";

/// A restic backend: the node, its token, the scheme objects are stored with, and a
/// gateway for its reads (ranges, its cache).
pub(crate) struct Restic {
    node: Arc<Node>,
    token: String,
    scheme: Option<String>,
    reads: Arc<Gateway>,
}

impl Restic {
    pub(crate) fn new(node: Arc<Node>, token: String, scheme: Option<String>) -> Restic {
        let reads = Arc::new(Gateway::new(node.clone(), token.clone()));
        Restic { node, token, scheme, reads }
    }
}

type R = State<Arc<Restic>>;

pub(crate) fn router(restic: Arc<Restic>) -> Router {
    Router::new()
        .route("/{repo}/", post(create))
        .route("/{repo}/config", get(config).post(save_config))
        .route("/{repo}/{kind}/", get(list))
        .route("/{repo}/{kind}/{id}", get(object).post(save).delete(delete))
        .layer(axum::middleware::from_fn_with_state(restic.clone(), auth))
        .with_state(restic)
}

async fn auth(State(r): R, req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    if !authorized(&r.token, req.headers()) {
        let mut resp =
            (StatusCode::UNAUTHORIZED, "this needs the token in the URL jewel printed").into_response();
        resp.headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Basic realm=\"jewel\""));
        return resp;
    }
    next.run(req).await
}

/// The index path of a repository's object, if its names are ones restic uses.
fn object_path(repo: &str, kind: &str, id: &str) -> Option<String> {
    let ok_id = id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit());
    if !TYPES.contains(&kind) || !ok_id {
        return None;
    }
    Some(format!("{}/{kind}/{id}", repo_path(repo)?))
}

/// A repository's folder: one plain path component.
fn repo_path(repo: &str) -> Option<String> {
    jewel::index::normalize(repo).ok().filter(|p| !p.is_empty() && !p.contains('/'))
}

fn bad(what: &'static str) -> Response {
    (StatusCode::BAD_REQUEST, what).into_response()
}

async fn create(
    Path(repo): Path<String>,
    Query(q): Query<std::collections::HashMap<String, String>>,
) -> Response {
    if repo_path(&repo).is_none() {
        return bad("a repository is named by one path component");
    }
    if q.get("create").is_none_or(|v| v != "true") {
        return bad("POST /NAME/?create=true makes a repository");
    }
    // The folder is made with its first object.
    StatusCode::OK.into_response()
}

async fn config(State(r): R, Path(repo): Path<String>, method: Method, headers: HeaderMap) -> Response {
    let Some(path) = repo_path(&repo).map(|p| format!("{p}/config")) else {
        return bad("bad repository name");
    };
    read(&r, &path, &method, &headers).await
}

async fn object(
    State(r): R,
    Path((repo, kind, id)): Path<(String, String, String)>,
    method: Method,
    headers: HeaderMap,
) -> Response {
    let Some(path) = object_path(&repo, &kind, &id) else { return bad("bad object name") };
    read(&r, &path, &method, &headers).await
}

/// An object's bytes (or a range of them), or 404.
async fn read(r: &Arc<Restic>, path: &str, method: &Method, headers: &HeaderMap) -> Response {
    let Some(cap) = r.node.index.cap_at(path) else { return StatusCode::NOT_FOUND.into_response() };
    crate::gateway::serve(&r.reads, &cap, Some("object.bin"), method, headers, false).await
}

async fn save_config(
    State(r): R,
    Path(repo): Path<String>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Response {
    let Some(path) = repo_path(&repo).map(|p| format!("{p}/config")) else {
        return bad("bad repository name");
    };
    store(&r, path, &headers, body, false).await
}

async fn save(
    State(r): R,
    Path((repo, kind, id)): Path<(String, String, String)>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Response {
    let Some(path) = object_path(&repo, &kind, &id) else { return bad("bad object name") };
    store(&r, path, &headers, body, kind == "snapshots").await
}

/// Stores a request's body at `path` of the index; with `publish`, the index is published
/// before the answer.
async fn store(
    r: &Arc<Restic>,
    path: String,
    headers: &HeaderMap,
    body: axum::body::Body,
    publish: bool,
) -> Response {
    let Some(size) = headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
    else {
        return (StatusCode::LENGTH_REQUIRED, "an object is sent with its Content-Length").into_response();
    };
    if size > MAX_OBJECT {
        return (StatusCode::PAYLOAD_TOO_LARGE, "an object of more than 256 MiB").into_response();
    }
    let query = crate::api::PutStreamQuery {
        size,
        name: Some(path.clone()),
        scheme: r.scheme.clone(),
        job: None,
        no_clobber: false,
    };
    if let Err(e) = crate::http::put_body(&r.node, &query, body).await {
        tracing::info!(path, error = %e, "restic: an object was not stored");
        return (StatusCode::SERVICE_UNAVAILABLE, e.to_string()).into_response();
    }
    if publish {
        if let Err(e) = r.node.index.publish_now().await {
            // Kept here all the same: the publisher sends it once peers are back.
            tracing::warn!(error = %e, "restic: a snapshot is stored but the index not published yet");
        }
    }
    StatusCode::OK.into_response()
}

async fn delete(State(r): R, Path((repo, kind, id)): Path<(String, String, String)>) -> Response {
    let Some(path) = object_path(&repo, &kind, &id) else { return bad("bad object name") };
    if r.node.index.cap_at(&path).is_none() {
        return StatusCode::NOT_FOUND.into_response();
    }
    match r.node.index.rm_path(&path, false, true).await {
        Ok(_) => StatusCode::OK.into_response(),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, e.to_string()).into_response(),
    }
}

async fn list(State(r): R, Path((repo, kind)): Path<(String, String)>, headers: HeaderMap) -> Response {
    let Some(folder) =
        repo_path(&repo).filter(|_| TYPES.contains(&kind.as_str())).map(|p| format!("{p}/{kind}"))
    else {
        return bad("bad repository or type");
    };
    let req = crate::api::LsRequest { target: folder, recursive: true, versions: false, at: None };
    let entries = match r.node.index.ls(req).await {
        Ok(listed) => listed.entries.into_iter().filter(|e| !e.folder).collect(),
        // No such folder yet: nothing of that type.
        Err(_) => Vec::new(),
    };
    let named: Vec<(String, u64)> =
        entries.into_iter().filter_map(|e| Some((e.path.rsplit('/').next()?.to_string(), e.size))).collect();
    let v2 = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()).is_some_and(|a| a.contains(V2));
    let (body, kind) = if v2 {
        let items: Vec<serde_json::Value> =
            named.iter().map(|(name, size)| serde_json::json!({"name": name, "size": size})).collect();
        (serde_json::Value::from(items), V2)
    } else {
        (
            named.iter().map(|(name, _)| serde_json::Value::from(name.as_str())).collect(),
            "application/vnd.x.restic.rest.v1",
        )
    };
    ([(header::CONTENT_TYPE, kind)], body.to_string()).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_names_restic_uses_are_paths() {
        let id = "ab".repeat(32);
        assert_eq!(object_path("repo", "data", &id), Some(format!("repo/data/{id}")));
        assert_eq!(object_path("repo", "other", &id), None);
        assert_eq!(object_path("repo", "data", "abc"), None);
        assert_eq!(object_path("..", "data", &id), None);
        assert_eq!(object_path("a/b", "data", &id), None);
        assert_eq!(object_path("repo", "data", &"zz".repeat(32)), None);
    }
}
