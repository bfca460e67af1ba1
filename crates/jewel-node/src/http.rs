//! The control API's HTTP edge: routes for every [`crate::api`] endpoint, the token check,
//! request bodies read strictly (a wrong field is a 400 that names it), and domain errors
//! turned into statuses here and nowhere else.

use std::sync::Arc;

use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};

use crate::api::{self, Endpoint, ErrorBody};
use crate::audit::AuditError;
use crate::client::ClientError;
use crate::index::IndexOpError;
use crate::node::{DirError, GetError, Node, PutError, RmError};
use crate::repair::RepairError;
use crate::state::StateError;
use crate::user::UserIdError;
use crate::workers::Workers;

/// What the handlers share.
pub(crate) struct Served {
    pub node: Arc<Node>,
    pub workers: Workers,
    pub token: String,
    /// Requests served at once, at most [`MAX_REQUESTS`]; more are answered busy.
    pub requests: Arc<tokio::sync::Semaphore>,
}

/// API requests served at once, at most.
pub const MAX_REQUESTS: usize = 64;

type S = State<Arc<Served>>;

/// An API error: an HTTP status and one line of text.
#[derive(Debug)]
pub struct ApiError(pub StatusCode, pub String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(ErrorBody { error: self.1 })).into_response()
    }
}

fn status(code: StatusCode, e: impl std::fmt::Display) -> ApiError {
    ApiError(code, e.to_string())
}

/// A JSON body read strictly: a syntax error, a missing or unknown field, or a value of
/// the wrong type is a 400 whose line names the field (axum reports serde's path).
pub(crate) struct Body<T>(pub T);

impl<T, St> FromRequest<St> for Body<T>
where
    Json<T>: FromRequest<St, Rejection = JsonRejection>,
    St: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &St) -> Result<Self, Self::Rejection> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(v)) => Ok(Body(v)),
            Err(e) => Err(ApiError(StatusCode::BAD_REQUEST, format!("bad request: {}", e.body_text()))),
        }
    }
}

impl From<ClientError> for ApiError {
    fn from(e: ClientError) -> Self {
        let code = match &e {
            ClientError::ManifestNotFound(_) | ClientError::NotFound { .. } => StatusCode::NOT_FOUND,
            ClientError::Policy(_) => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::BAD_GATEWAY,
        };
        status(code, e)
    }
}

impl From<StateError> for ApiError {
    fn from(e: StateError) -> Self {
        status(StatusCode::INTERNAL_SERVER_ERROR, e)
    }
}

impl From<PutError> for ApiError {
    fn from(e: PutError) -> Self {
        match e {
            PutError::Scheme(_)
            | PutError::Unreadable { .. }
            | PutError::NotRegular { .. }
            | PutError::Pack(_)
            | PutError::Options(_) => status(StatusCode::BAD_REQUEST, e),
            PutError::Transfer(ClientError::Pipeline(jewel::PipelineError::Input(_))) => {
                status(StatusCode::BAD_REQUEST, e)
            }
            PutError::Placement(_) => status(StatusCode::SERVICE_UNAVAILABLE, e),
            PutError::Index(_) => status(StatusCode::CONFLICT, e),
            PutError::Transfer(e) => e.into(),
            PutError::State(e) => e.into(),
            e => status(StatusCode::BAD_GATEWAY, e),
        }
    }
}

impl From<IndexOpError> for ApiError {
    fn from(e: IndexOpError) -> Self {
        use jewel::index::IndexError as I;
        match e {
            IndexOpError::Index(I::NotFound(_) | I::NoVersion { .. }) | IndexOpError::NoRecord(_) => {
                status(StatusCode::NOT_FOUND, e)
            }
            IndexOpError::Index(
                I::Exists(_) | I::Conflict { .. } | I::IsFolder(_) | I::UnderFile(..) | I::NeedsRecursive(_),
            )
            | IndexOpError::NoUser => status(StatusCode::CONFLICT, e),
            IndexOpError::Index(_)
            | IndexOpError::Name(_)
            | IndexOpError::TooLarge(..)
            | IndexOpError::Walk(_) => status(StatusCode::BAD_REQUEST, e),
            IndexOpError::Freed(_) => status(StatusCode::GONE, e),
            IndexOpError::Net(e) => e.into(),
            IndexOpError::Get(e) => e.into(),
            IndexOpError::Put(e) => e.into(),
            IndexOpError::State(e) => e.into(),
            e => status(StatusCode::INTERNAL_SERVER_ERROR, e),
        }
    }
}

impl From<GetError> for ApiError {
    fn from(e: GetError) -> Self {
        match e {
            GetError::Cap(_) | GetError::Range { .. } | GetError::PastEnd { .. } | GetError::Key(_) => {
                status(StatusCode::BAD_REQUEST, e)
            }
            GetError::Output(_) => status(StatusCode::CONFLICT, e),
            GetError::Locate(e) => e.into(),
            GetError::Transfer(jewel::offline::OfflineError::OutputExists { .. }) => {
                status(StatusCode::CONFLICT, e)
            }
            e => status(StatusCode::BAD_GATEWAY, e),
        }
    }
}

impl From<AuditError> for ApiError {
    fn from(e: AuditError) -> Self {
        match e {
            AuditError::Cap(_) | AuditError::Scheme(_) => status(StatusCode::BAD_REQUEST, e),
            AuditError::Locate(e) => e.into(),
            AuditError::State(e) => e.into(),
        }
    }
}

impl From<RepairError> for ApiError {
    fn from(e: RepairError) -> Self {
        match e {
            RepairError::Cap(_) => status(StatusCode::BAD_REQUEST, e),
            RepairError::Busy(_) => status(StatusCode::CONFLICT, e),
            RepairError::Audit(e) => e.into(),
            RepairError::Placement(_) => status(StatusCode::SERVICE_UNAVAILABLE, e),
            RepairError::Rebuild(e) => e.into(),
            RepairError::State(e) => e.into(),
            e => status(StatusCode::BAD_GATEWAY, e),
        }
    }
}

impl From<UserIdError> for ApiError {
    fn from(e: UserIdError) -> Self {
        match e {
            UserIdError::Exists(_) => status(StatusCode::CONFLICT, e),
            UserIdError::Phrase(_) => status(StatusCode::BAD_REQUEST, e),
            e => status(StatusCode::INTERNAL_SERVER_ERROR, e),
        }
    }
}

/// Runs an identity operation on the blocking pool (it reads and fsyncs a file).
async fn on_home<T: Send + 'static>(
    s: &Served,
    f: impl FnOnce(&std::path::Path) -> Result<T, UserIdError> + Send + 'static,
) -> Result<T, ApiError> {
    let home = s.node.home.clone();
    match tokio::task::spawn_blocking(move || f(&home)).await {
        Ok(r) => Ok(r?),
        Err(_) => Err(ApiError(StatusCode::INTERNAL_SERVER_ERROR, "internal error".into())),
    }
}

/// How long `jewel id recover` waits for the user's index.
const RECOVER_WAIT: std::time::Duration = std::time::Duration::from_secs(20);
/// How long `jewel id recover` waits for an online device's answer.
const ONLINE_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

async fn id_show(State(s): S) -> Reply<api::IdShow> {
    let user = on_home(&s, crate::user::load).await?;
    Ok(Json(api::IdResponse { user: user.map(|u| u.user_id()), index_files: None }))
}

async fn id_init(State(s): S, Body(_): Req<api::IdInit>) -> Reply<api::IdInit> {
    let key = on_home(&s, crate::user::init).await?;
    s.node.index.set_user(key.clone());
    Ok(Json(api::IdInitResponse { phrase: key.phrase(), user: key.user_id() }))
}

async fn id_recover(State(s): S, Body(req): Req<api::IdRecover>) -> Reply<api::IdRecover> {
    let key = on_home(&s, move |home| crate::user::recover(home, &req.phrase)).await?;
    let before = *s.node.index.heard.borrow();
    s.node.index.set_user(key.clone());
    // The user's index before the command returns: from their other devices' heads in the
    // DHT, and from those online, which answer this device's ask at once.
    let caught = tokio::time::timeout(RECOVER_WAIT, s.node.index.catch_up()).await;
    s.node.index.wait_heard(before, ONLINE_WAIT).await;
    let index_files = match caught {
        Ok(Ok(_)) => Some(s.node.index.files()),
        Ok(Err(e)) => {
            tracing::info!(error = %e, "no index head found at recovery");
            None
        }
        Err(_) => None,
    };
    Ok(Json(api::IdResponse { user: Some(key.user_id()), index_files }))
}

impl From<RmError> for ApiError {
    fn from(e: RmError) -> Self {
        match e {
            RmError::Cap(_) | RmError::Packed => status(StatusCode::BAD_REQUEST, e),
            RmError::Unknown(_) => status(StatusCode::NOT_FOUND, e),
            RmError::Locate(e) => e.into(),
            RmError::State(e) => e.into(),
        }
    }
}

impl From<DirError> for ApiError {
    fn from(e: DirError) -> Self {
        status(StatusCode::INTERNAL_SERVER_ERROR, e)
    }
}

impl From<jewel_net::NetError> for ApiError {
    fn from(e: jewel_net::NetError) -> Self {
        status(StatusCode::SERVICE_UNAVAILABLE, e)
    }
}

type Reply<E> = Result<Json<<E as Endpoint>::Response>, ApiError>;
type Req<E> = Body<<E as Endpoint>::Request>;

async fn ls(State(s): S, Body(req): Req<api::Ls>) -> Reply<api::Ls> {
    Ok(Json(s.node.index.ls(req).await?))
}

async fn rm_path(State(s): S, Body(req): Req<api::RmPath>) -> Reply<api::RmPath> {
    let removed = s.node.index.rm_path(&req.path, req.recursive, req.purge).await?;
    Ok(Json(api::PathsResponse { paths: removed.into_iter().map(|p| (p, String::new())).collect() }))
}

async fn mv(State(s): S, Body(req): Req<api::Mv>) -> Reply<api::Mv> {
    Ok(Json(api::PathsResponse { paths: s.node.index.mv(&req.from, &req.to).await? }))
}

async fn share(State(s): S, Body(req): Req<api::Share>) -> Reply<api::Share> {
    let (cap, folder) = s.node.index.share(&req.path).await?;
    Ok(Json(api::ShareResponse { cap, folder }))
}

async fn log(State(s): S, Body(req): Req<api::Log>) -> Reply<api::Log> {
    Ok(Json(api::LogResponse { changes: s.node.index.log(&req.path)? }))
}

async fn undelete(State(s): S, Body(req): Req<api::Undelete>) -> Reply<api::Undelete> {
    let cap = s.node.index.undelete(&req.path).await?;
    Ok(Json(api::PathsResponse { paths: vec![(req.path, cap)] }))
}

async fn index_publish(State(s): S) -> Reply<api::IndexPublish> {
    Ok(Json(s.node.index.publish_now().await?))
}

async fn name_publish(State(s): S, Body(req): Req<api::NamePublish>) -> Reply<api::NamePublish> {
    let name = s.node.index.name_publish(&req.cap, &req.label).await?;
    Ok(Json(api::NameResponse { name, cap: req.cap, seq: 0 }))
}

async fn name_resolve(State(s): S, Body(req): Req<api::NameResolve>) -> Reply<api::NameResolve> {
    let (cap, seq) = s.node.index.name_resolve(&req.name).await?;
    Ok(Json(api::NameResponse { name: req.name, cap, seq }))
}

async fn status_(State(s): S) -> Reply<api::Status> {
    let net = s.node.blocks.net();
    Ok(Json(api::StatusResponse {
        peer_id: net.peer_id().to_string(),
        listen: net.listeners().await?.iter().map(|a| a.to_string()).collect(),
        usage: jewel::BlockStore::usage(&s.node.store),
        workers: s.workers.status(),
        dropped: s.node.state.dropped()?.into_iter().map(|(id, at)| api::DroppedBlock { id, at }).collect(),
        puts_running: s.node.reading.load(std::sync::atomic::Ordering::SeqCst),
        gets_running: s.node.gets.lock().map_or(0, |g| g.len()),
        transfers_running: s.node.users.active(),
        index: Some(s.node.index.status()?),
        reach: Some(net.reachability().await?),
        state_commits: s.node.state.commits(),
    }))
}

async fn invite(State(s): S) -> Reply<api::Invite> {
    Ok(Json(s.node.invite().await?))
}

async fn join(State(s): S, Body(req): Req<api::Join>) -> Reply<api::Join> {
    let invite =
        jewel_net::invite::Invite::decode(&req.invite).map_err(|e| status(StatusCode::BAD_REQUEST, e))?;
    let peer = s.node.join(&invite).await.map_err(|e| status(StatusCode::BAD_GATEWAY, e))?;
    Ok(Json(api::JoinResponse { peer: peer.to_string() }))
}

async fn peers(State(s): S) -> Reply<api::Peers> {
    Ok(Json(s.node.peers().await?))
}

async fn dir(State(s): S) -> Reply<api::Dir> {
    Ok(Json(s.node.dir().await?))
}

async fn put(State(s): S, Body(req): Req<api::Put>) -> Reply<api::Put> {
    Ok(Json(s.node.put(req).await?))
}

async fn put_pack(State(s): S, Body(req): Req<api::PutPack>) -> Reply<api::PutPack> {
    Ok(Json(s.node.put_pack(req).await?))
}

/// Chunks of a streamed body queued for the put's reader, at most.
const BODY_QUEUE: usize = 4;

/// `POST /v1/put-stream`: the body, read as it arrives (through a queue of
/// [`BODY_QUEUE`] chunks) by the put's pipeline on the blocking pool.
async fn put_stream(
    State(s): S,
    query: Result<axum::extract::Query<api::PutStreamQuery>, axum::extract::rejection::QueryRejection>,
    body: axum::body::Body,
) -> Reply<api::Put> {
    let axum::extract::Query(query) =
        query.map_err(|e| ApiError(StatusCode::BAD_REQUEST, format!("bad request: {}", e.body_text())))?;
    Ok(Json(put_body(&s.node, &query, body).await?))
}

/// Stores a request's body (exactly `query.size` bytes) as [`Node::put_stream`] does, read
/// as it arrives through a queue of [`BODY_QUEUE`] chunks.
pub(crate) async fn put_body(
    node: &Arc<Node>,
    query: &api::PutStreamQuery,
    body: axum::body::Body,
) -> Result<api::PutResponse, PutError> {
    use futures::StreamExt;
    let (tx, rx) = tokio::sync::mpsc::channel(BODY_QUEUE);
    let mut chunks = body.into_data_stream();
    let pump = async move {
        while let Some(chunk) = chunks.next().await {
            let chunk = chunk.map_err(|e| e.to_string());
            let failed = chunk.is_err();
            // The put stopped reading (done or failed): stop too.
            if tx.send(chunk).await.is_err() || failed {
                break;
            }
        }
    };
    let reader = BodyReader { rx, current: axum::body::Bytes::new() };
    let (put, ()) = tokio::join!(node.put_stream(query, Box::new(reader)), pump);
    put
}

/// A streamed body as a blocking reader (for the blocking pool only).
struct BodyReader {
    rx: tokio::sync::mpsc::Receiver<Result<axum::body::Bytes, String>>,
    current: axum::body::Bytes,
}

impl std::io::Read for BodyReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.current.is_empty() {
            match self.rx.blocking_recv() {
                Some(Ok(chunk)) => self.current = chunk,
                Some(Err(e)) => return Err(std::io::Error::other(format!("the upload broke: {e}"))),
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current.split_to(n));
        Ok(n)
    }
}

/// `POST /v1/read` (see [`api::READ_PATH`]): the file's bytes as the body, streamed.
async fn read_stream(State(s): S, Body(req): Body<api::ReadRequest>) -> Response {
    match s.node.read(&req.cap, req.range).await {
        Ok((len, rx)) => {
            let body =
                futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|item| (item, rx)) });
            Response::builder()
                .header(axum::http::header::CONTENT_TYPE, "application/octet-stream")
                .header(axum::http::header::CONTENT_LENGTH, len)
                .body(axum::body::Body::from_stream(body))
                .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
        }
        Err(e) => ApiError::from(e).into_response(),
    }
}

/// How often an open gateway request is sent a blank line (a client gone is noticed then).
const SERVE_HEARTBEAT: std::time::Duration = std::time::Duration::from_secs(2);

/// `POST /v1/serve/gateway`: the HTTP gateway (see [`serve_front`]).
async fn serve_gateway(State(s): S, Body(req): Body<api::ServeRequest>) -> Response {
    serve_front(&s, req, |node, token, _| {
        crate::gateway::router(Arc::new(crate::gateway::Gateway::new(node, token)))
    })
    .await
}

/// `POST /v1/serve/restic`: restic's REST backend (see [`serve_front`]).
async fn serve_restic(State(s): S, Body(req): Body<api::ServeRequest>) -> Response {
    serve_front(&s, req, |node, token, scheme| {
        crate::restic::router(Arc::new(crate::restic::Restic::new(node, token, scheme)))
    })
    .await
}

/// A front-end: binds its listener, answers its URL (with a fresh token) as the first
/// line, and serves the router `make` gives until this request's client goes away (or the
/// node stops).
async fn serve_front(
    s: &Arc<Served>,
    req: api::ServeRequest,
    make: impl FnOnce(Arc<Node>, String, Option<String>) -> Router,
) -> Response {
    let listen = req.listen.unwrap_or_else(|| "127.0.0.1:0".to_string());
    let Ok(addr) = listen.parse::<std::net::SocketAddr>() else {
        return status(
            StatusCode::BAD_REQUEST,
            format!("--listen {listen}: expected HOST:PORT, e.g. 127.0.0.1:8080"),
        )
        .into_response();
    };
    if !addr.ip().is_loopback() && !req.public {
        return status(
            StatusCode::BAD_REQUEST,
            format!("--listen {listen} is reachable from other machines: pass --public to mean it"),
        )
        .into_response();
    }
    if let Some(spec) = &req.scheme {
        if let Err(e) = jewel::codec::SchemeSpec::parse(spec) {
            return status(StatusCode::BAD_REQUEST, format!("bad scheme: {e}")).into_response();
        }
    }
    let listener = match tokio::net::TcpListener::bind(addr).await {
        Ok(l) => l,
        Err(e) => {
            return status(StatusCode::CONFLICT, format!("cannot listen on {listen}: {e}")).into_response()
        }
    };
    let bound = listener.local_addr().map(|a| a.to_string()).unwrap_or(listen);
    let token = match crate::identity::new_token() {
        Ok(t) => t,
        Err(e) => return status(StatusCode::INTERNAL_SERVER_ERROR, e).into_response(),
    };
    let line = api::ServeLine { url: format!("http://jewel:{token}@{bound}/"), token: token.clone() };
    let app = make(s.node.clone(), token, req.scheme);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        if let Err(e) = crate::serve::serve(listener, app, async move { drop(stopped.await) }).await {
            tracing::warn!(error = %e, "a front-end stopped");
        }
    });
    tracing::info!(addr = %bound, "front-end up");
    let mut first = serde_json::to_vec(&line).unwrap_or_default();
    first.push(b'\n');
    // The stream holds `stop`: dropped (the client went away), the front-end stops.
    let lines = futures::stream::unfold((Some(first), stop), |(first, stop)| async move {
        match first {
            Some(line) => Some((Ok::<_, std::io::Error>(line), (None, stop))),
            None => {
                tokio::time::sleep(SERVE_HEARTBEAT).await;
                Some((Ok(b"\n".to_vec()), (None, stop)))
            }
        }
    });
    Response::builder()
        .header(axum::http::header::CONTENT_TYPE, "application/x-ndjson")
        .body(axum::body::Body::from_stream(lines))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

async fn get_file(State(s): S, Body(req): Req<api::Get>) -> Reply<api::Get> {
    Ok(Json(s.node.get(req).await?))
}

async fn check(State(s): S, Body(req): Req<api::Check>) -> Reply<api::Check> {
    Ok(Json(s.node.check(&req.cap, req.verify).await?))
}

async fn repair(State(s): S, Body(req): Req<api::Repair>) -> Reply<api::Repair> {
    Ok(Json(s.node.repair(&req.cap).await?))
}

async fn rm(State(s): S, Body(req): Req<api::Rm>) -> Reply<api::Rm> {
    let mut done = s.node.rm(&req.cap).await?;
    // The index must not show a released file: the paths that showed it go too.
    let paths = s.node.index.paths_of(&req.cap);
    for path in &paths {
        // The file itself was just released: nothing is left to undelete.
        s.node.index.rm_path(path, false, true).await?;
    }
    done.unindexed = paths;
    Ok(Json(done))
}

async fn progress(State(s): S, Body(req): Req<api::Progress>) -> Reply<api::Progress> {
    match s.node.jobs.get(&req.job) {
        Some((done, total)) => Ok(Json(api::ProgressResponse { done, total })),
        None => Err(ApiError(StatusCode::NOT_FOUND, format!("no job {} is running", req.job))),
    }
}

/// `POST /v1/progress/watch` (see [`api::WATCH_PATH`]): the job's progress, one line each
/// time it moves, until it ends.
async fn watch_progress(State(s): S, Body(req): Body<api::ProgressRequest>) -> Response {
    struct Watch {
        served: Arc<Served>,
        job: String,
        last: Option<(u64, u64)>,
        asked: tokio::time::Instant,
    }
    let first = Watch { served: s, job: req.job, last: None, asked: tokio::time::Instant::now() };
    let lines = futures::stream::unfold(first, |mut w| async move {
        loop {
            match w.served.node.jobs.get(&w.job) {
                Some(now) if w.last != Some(now) => {
                    w.last = Some(now);
                    let (done, total) = now;
                    let mut line = serde_json::to_vec(&api::ProgressResponse { done, total }).ok()?;
                    line.push(b'\n');
                    return Some((Ok::<_, std::io::Error>(line), w));
                }
                Some(_) => {}
                // The job ended (it was seen), or never started.
                None if w.last.is_some() || w.asked.elapsed() >= api::WATCH_WAIT => return None,
                None => {}
            }
            tokio::time::sleep(api::WATCH_EVERY).await;
        }
    });
    Response::builder()
        .header(axum::http::header::CONTENT_TYPE, "application/x-ndjson")
        .body(axum::body::Body::from_stream(lines))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

async fn settings(State(s): S) -> Reply<api::GetSettings> {
    Ok(Json(s.node.settings()?))
}

async fn set_settings(State(s): S, Body(req): Req<api::SetSettings>) -> Reply<api::SetSettings> {
    let spec = jewel::codec::SchemeSpec::parse(&req.default_scheme)
        .map_err(|e| ApiError(StatusCode::BAD_REQUEST, format!("bad scheme: {e}")))?;
    let settings = api::Settings { default_scheme: spec.to_string() };
    s.node.state.set_settings(&settings).await?;
    Ok(Json(settings))
}

/// Answers busy past [`MAX_REQUESTS`] requests at once.
async fn limit(State(s): S, req: Request, next: Next) -> Response {
    let Ok(_permit) = s.requests.clone().try_acquire_owned() else {
        let busy = format!("the node is busy ({MAX_REQUESTS} requests at once); try again shortly");
        return ApiError(StatusCode::SERVICE_UNAVAILABLE, busy).into_response();
    };
    next.run(req).await
}

async fn auth(State(s): S, req: Request, next: Next) -> Response {
    let ok = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        // In constant time (blake3's `Hash` compares so): how long a wrong guess takes
        // says nothing of how much of it was right.
        .is_some_and(|t| blake3::hash(t.as_bytes()) == blake3::hash(s.token.as_bytes()));
    if !ok {
        return ApiError(
            StatusCode::UNAUTHORIZED,
            "wrong or missing API token; it is in HOME/api.json".into(),
        )
        .into_response();
    }
    next.run(req).await
}

/// The API's routes, behind the token.
pub(crate) fn router(served: Arc<Served>) -> Router {
    fn at<E: Endpoint>() -> &'static str {
        E::PATH
    }
    Router::new()
        .route(at::<api::Status>(), get(status_))
        .route(at::<api::Peers>(), get(peers))
        .route(at::<api::Invite>(), get(invite))
        .route(at::<api::Join>(), post(join))
        .route(at::<api::Dir>(), get(dir))
        .route(at::<api::Put>(), post(put))
        .route(at::<api::PutPack>(), post(put_pack))
        .route(api::PUT_STREAM_PATH, post(put_stream))
        .route(at::<api::Get>(), post(get_file))
        .route(api::READ_PATH, post(read_stream))
        .route(api::SERVE_GATEWAY_PATH, post(serve_gateway))
        .route(api::SERVE_RESTIC_PATH, post(serve_restic))
        .route(api::WATCH_PATH, post(watch_progress))
        .route(at::<api::Check>(), post(check))
        .route(at::<api::Repair>(), post(repair))
        .route(at::<api::Rm>(), post(rm))
        .route(at::<api::Progress>(), post(progress))
        .route(at::<api::GetSettings>(), get(settings).post(set_settings))
        .route(at::<api::IdShow>(), get(id_show))
        .route(at::<api::IdInit>(), post(id_init))
        .route(at::<api::IdRecover>(), post(id_recover))
        .route(at::<api::Ls>(), post(ls))
        .route(at::<api::RmPath>(), post(rm_path))
        .route(at::<api::Mv>(), post(mv))
        .route(at::<api::Share>(), post(share))
        .route(at::<api::IndexPublish>(), post(index_publish))
        .route(at::<api::Undelete>(), post(undelete))
        .route(at::<api::Log>(), post(log))
        .route(at::<api::NamePublish>(), post(name_publish))
        .route(at::<api::NameResolve>(), post(name_resolve))
        .layer(axum::middleware::from_fn_with_state(served.clone(), auth))
        .layer(axum::middleware::from_fn_with_state(served.clone(), limit))
        .with_state(served)
}
