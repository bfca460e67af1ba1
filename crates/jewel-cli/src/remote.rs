//! The client side of a running node's control API: `jewel put/get/check/peers/dir/rm/
//! repair/status` reach the node named by `--home` (or `JEWEL_HOME`) through
//! `HOME/api.json`, with the request and reply types of `jewel_node::api`.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use jewel_node::api::{self, ApiInfo, Endpoint, ErrorBody, NoBody};

#[derive(Clone)]
pub struct Api {
    base: String,
    token: String,
    /// One HTTP agent for every call (its connections are kept and reused).
    agent: ureq::Agent,
}

impl Api {
    /// Reads `HOME/api.json`.
    pub fn open(home: Option<&Path>) -> Result<Api> {
        let Some(home) = home else {
            bail!("no node given: pass --home DIR (or set JEWEL_HOME) for a running `jewel node --home DIR`");
        };
        let path = home.join("api.json");
        let bytes = std::fs::read(&path).with_context(|| {
            format!(
                "no running node at {} (start one with `jewel node --home {}`)",
                home.display(),
                home.display()
            )
        })?;
        let info: ApiInfo =
            serde_json::from_slice(&bytes).with_context(|| format!("{} is damaged", path.display()))?;
        let agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
        Ok(Api { base: format!("http://{}", info.api), token: info.token, agent })
    }

    /// Calls endpoint `E` with `req`; an error reply becomes its one line.
    pub fn call<E: Endpoint>(&self, req: &E::Request) -> Result<E::Response> {
        let agent = &self.agent;
        let url = format!("{}{}", self.base, E::PATH);
        let auth = format!("Bearer {}", self.token);
        let r = if E::POST {
            agent.post(&url).header("authorization", &auth).send_json(req)
        } else {
            agent.get(&url).header("authorization", &auth).call()
        };
        self.reply(r)
    }

    /// The reply to a request, or its error as one line.
    fn reply<T: serde::de::DeserializeOwned>(
        &self,
        r: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
    ) -> Result<T> {
        let mut resp = r.with_context(|| format!("cannot reach the node's API at {}", self.base))?;
        if !resp.status().is_success() {
            let body: ErrorBody =
                resp.body_mut().read_json().context("the node sent a malformed error reply")?;
            bail!("{}", body.error);
        }
        // No size limit: this node's own reply, as large as what it lists (an index or a
        // shared folder of 100 000 entries is some 17 MB), read as it arrives.
        let reader = std::io::BufReader::new(resp.body_mut().with_config().reader());
        serde_json::from_reader(reader).context("the node sent a malformed reply")
    }

    /// Streams `body` (exactly `query.size` bytes) to the node's put-stream endpoint.
    pub fn put_stream(
        &self,
        query: &api::PutStreamQuery,
        body: &mut dyn std::io::Read,
    ) -> Result<api::PutResponse> {
        let agent = &self.agent;
        let url = format!("{}{}", self.base, api::PUT_STREAM_PATH);
        let mut req = agent
            .post(&url)
            .header("authorization", &format!("Bearer {}", self.token))
            .query("size", query.size.to_string());
        for (key, value) in [("name", &query.name), ("scheme", &query.scheme), ("job", &query.job)] {
            if let Some(v) = value {
                req = req.query(key, v);
            }
        }
        if query.no_clobber {
            req = req.query("no_clobber", "true");
        }
        self.reply(req.send(ureq::SendBody::from_reader(body)))
    }

    /// Streams a file's bytes from the node (`/v1/read`) into `out`, as they decode; a
    /// stream cut short (the get failed midway) is an error. Returns the bytes written.
    pub fn read_into(&self, req: &api::ReadRequest, out: &mut dyn Write) -> Result<u64> {
        let agent = &self.agent;
        let url = format!("{}{}", self.base, api::READ_PATH);
        let r = agent.post(&url).header("authorization", &format!("Bearer {}", self.token)).send_json(req);
        let mut resp = r.with_context(|| format!("cannot reach the node's API at {}", self.base))?;
        if !resp.status().is_success() {
            let body: ErrorBody =
                resp.body_mut().read_json().context("the node sent a malformed error reply")?;
            bail!("{}", body.error);
        }
        let expected = resp.body().content_length();
        let mut body = resp.body_mut().with_config().reader();
        let copied = match std::io::copy(&mut body, out) {
            Ok(n) => n,
            // The reader stopped reading (`| head`): end quietly, as `cat` does on SIGPIPE
            // (the node stops the get when the connection goes).
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => std::process::exit(141),
            Err(e) => bail!("the get failed midway (the output is cut short): {e}"),
        };
        if expected.is_some_and(|n| n != copied) {
            bail!(
                "the get failed midway (the output is cut short): {copied} of {} bytes",
                expected.unwrap_or(0)
            );
        }
        out.flush().context("writing to stdout")?;
        Ok(copied)
    }

    /// Follows job `job`'s progress (`/v1/progress/watch`, one streamed reply): `each` is
    /// called with every line the node sends, until the job ends.
    pub fn watch(&self, job: &str, mut each: impl FnMut(api::ProgressResponse)) -> Result<()> {
        use std::io::BufRead;
        let url = format!("{}{}", self.base, api::WATCH_PATH);
        let req = api::ProgressRequest { job: job.to_string() };
        let r =
            self.agent.post(&url).header("authorization", &format!("Bearer {}", self.token)).send_json(&req);
        let mut resp = r.with_context(|| format!("cannot reach the node's API at {}", self.base))?;
        if !resp.status().is_success() {
            bail!("the node would not report progress: {}", resp.status());
        }
        let body = std::io::BufReader::new(resp.body_mut().with_config().reader());
        for line in body.lines() {
            each(serde_json::from_str(&line?).context("the node sent a malformed progress line")?);
        }
        Ok(())
    }

    /// Runs a front-end the node serves while this request stays open (`path`, one of the
    /// API's `serve` paths): `first` gets its first line; returns when the node ends it.
    pub fn serve(
        &self,
        path: &str,
        req: &api::ServeRequest,
        first: impl FnOnce(api::ServeLine) -> Result<()>,
    ) -> Result<()> {
        use std::io::BufRead;
        let url = format!("{}{}", self.base, path);
        let r =
            self.agent.post(&url).header("authorization", &format!("Bearer {}", self.token)).send_json(req);
        let mut resp = r.with_context(|| format!("cannot reach the node's API at {}", self.base))?;
        if !resp.status().is_success() {
            let body: ErrorBody =
                resp.body_mut().read_json().context("the node sent a malformed error reply")?;
            bail!("{}", body.error);
        }
        let mut lines = std::io::BufReader::new(resp.body_mut().with_config().reader()).lines();
        let line = lines.next().context("the node ended the front-end at once")??;
        first(serde_json::from_str(&line).context("the node sent a malformed first line")?)?;
        for line in lines {
            line.context("the connection to the node broke")?;
        }
        bail!("the node stopped serving (it is stopping, or its API went away)")
    }

    /// Calls an endpoint that takes no request body.
    pub fn fetch<E: Endpoint<Request = NoBody>>(&self) -> Result<E::Response> {
        self.call::<E>(&NoBody {})
    }
}

fn absolute(p: &Path) -> Result<PathBuf> {
    Ok(if p.is_absolute() { p.to_path_buf() } else { std::env::current_dir()?.join(p) })
}

/// Runs `call` (a put or get naming job `id`, if any) with a progress bar on stderr that
/// follows the node's report of the job (one streamed reply, `/v1/progress/watch`), when
/// stderr is a terminal.
fn with_progress<T>(api: &Api, label: &str, call: impl FnOnce(Option<&str>) -> Result<T>) -> Result<T> {
    use std::io::IsTerminal;
    if !std::io::stderr().is_terminal() {
        return call(None);
    }
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    let job = format!("{}-{nanos:x}", std::process::id());
    // Hidden until the node reports the job: no empty bar for a call that ends at once.
    let bar = indicatif::ProgressBar::with_draw_target(Some(0), indicatif::ProgressDrawTarget::hidden());
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{msg} [{bar:32}] {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    bar.set_message(label.to_string());
    // Set, under its lock, when the call returned: the watcher draws nothing after.
    let done = std::sync::Arc::new(std::sync::Mutex::new(false));
    let (watcher, seen, shown) = (api.clone(), job.clone(), bar.clone());
    let finished = done.clone();
    // Not joined: the watch ends with the job, and a call that fails before its job starts
    // does not wait for it (the process ends).
    std::thread::spawn(move || {
        let _ = watcher.watch(&seen, |p| {
            let finished = finished.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            if *finished {
                return;
            }
            if shown.is_hidden() {
                shown.set_draw_target(indicatif::ProgressDrawTarget::stderr());
            }
            shown.set_length(p.total);
            shown.set_position(p.done);
        });
    });
    let result = call(Some(&job));
    let mut finished = done.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    *finished = true;
    bar.finish_and_clear();
    drop(finished);
    result
}

pub fn put(
    home: Option<&Path>,
    file: &Path,
    scheme: Option<&str>,
    at: Option<&str>,
    no_clobber: bool,
    segment_size: Option<u32>,
    json: bool,
) -> Result<()> {
    let api = Api::open(home)?;
    let path = absolute(file)?;
    if path.is_dir() {
        bail!("{} is a folder: `jewel put -r {}` stores a whole folder", file.display(), file.display());
    }
    let v = with_progress(&api, "put", |job| {
        let req = api::PutRequest {
            path,
            scheme: scheme.map(str::to_string),
            job: job.map(str::to_string),
            at: at.map(str::to_string),
            no_clobber,
            // Only `put -r` hashes (to skip unchanged files): a single put reads the file once.
            hash: None,
            link: false,
            segment_size,
        };
        api.call::<api::Put>(&req)
    })?;
    publish_index(&api);
    print_put(&v, json)
}

/// Makes a command's index changes durable on the network before it returns (a head the
/// node published and found again: see [`api::IndexPublish`]), once per command. When it
/// cannot be done now (no peer is reachable), one warning line: the change is kept on this
/// device and goes out as soon as peers are back.
pub fn publish_index(api: &Api) {
    if let Err(e) = api.call::<api::IndexPublish>(&NoBody {}) {
        eprintln!(
            "warning: the change to your index is kept on this device only for now ({e:#}); it goes out as soon as peers are reachable"
        );
    }
}

/// `jewel put -`: this process's standard input, streamed through the node's API. Its
/// length must be known before the first byte is encrypted: a redirected file's is; a pipe
/// needs `size`, or is spooled to a temporary file (deleted when done) first.
pub fn put_stdin(
    home: Option<&Path>,
    scheme: Option<&str>,
    name: Option<&str>,
    size: Option<u64>,
    no_clobber: bool,
    json: bool,
) -> Result<()> {
    use std::io::Seek;
    use std::os::fd::AsFd;
    let api = Api::open(home)?;
    let mut input = std::fs::File::from(std::io::stdin().as_fd().try_clone_to_owned()?);
    let meta = input.metadata().context("cannot read standard input")?;
    let (mut input, size): (Box<dyn std::io::Read>, u64) = match size {
        _ if meta.is_file() => {
            let at = input.stream_position().unwrap_or(0);
            let left = meta.len().saturating_sub(at);
            if size.is_some_and(|s| s != left) {
                bail!("--size says {} bytes, but standard input has {left} left", size.unwrap_or(0));
            }
            (Box::new(input), left)
        }
        Some(size) => (Box::new(input), size),
        None => {
            let mut spool =
                tempfile::tempfile().context("cannot make a temporary file for standard input")?;
            let size = std::io::copy(&mut input, &mut spool).context("cannot read standard input")?;
            spool.rewind()?;
            (Box::new(spool), size)
        }
    };
    let mut stated = Stated { inner: &mut input, left: size, over: false };
    let v = with_progress(&api, "put", |job| {
        let query = api::PutStreamQuery {
            size,
            name: name.map(str::to_string),
            scheme: scheme.map(str::to_string),
            job: job.map(str::to_string),
            no_clobber,
        };
        api.put_stream(&query, &mut stated)
    });
    if stated.over {
        bail!("standard input has more bytes than its size said ({size}); nothing was stored");
    }
    let v = v?;
    if v.path.is_some() {
        publish_index(&api);
    }
    print_put(&v, json)
}

/// Standard input up to its stated size; a byte more fails the read (so the node never
/// finishes a put of a cut stream) and is remembered, to say so.
struct Stated<'a> {
    inner: &'a mut dyn std::io::Read,
    left: u64,
    over: bool,
}

impl std::io::Read for Stated<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.left == 0 {
            let mut probe = [0u8; 1];
            if self.inner.read(&mut probe)? == 0 {
                return Ok(0);
            }
            self.over = true;
            return Err(std::io::Error::other("more bytes than stated"));
        }
        let want = buf.len().min(usize::try_from(self.left).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..want])?;
        self.left -= n as u64;
        Ok(n)
    }
}

fn print_put(v: &api::PutResponse, json: bool) -> Result<()> {
    if json {
        outln!("{}", serde_json::to_string(v)?);
    } else {
        outln!("{}", v.cap);
        let holders = v.holders.len();
        eprintln!("stored {} bytes as {holders} pieces on {holders} peers", v.stats.file_bytes);
        if v.crowded > 0 {
            eprintln!(
                "note: {} of its pieces share a network with another piece (too few networks could take them)",
                v.crowded
            );
        }
        match &v.path {
            Some(p) if v.replaced => eprintln!(
                "replaced {p} (the previous version is kept: `jewel ls --versions {p}`, `jewel get {p} --version 2`)"
            ),
            Some(p) => eprintln!("saved as {p}"),
            None => {}
        }
    }
    Ok(())
}

/// `jewel id init`: a new identity; its phrase is printed once.
pub fn id_init(home: Option<&Path>, json: bool) -> Result<()> {
    let v = Api::open(home)?.call::<api::IdInit>(&NoBody {})?;
    if json {
        outln!("{}", serde_json::to_string(&v)?);
    } else {
        outln!("Your recovery phrase. Write it down and keep it safe: it is shown only now, and");
        outln!("it alone brings back everything you store, on any device.\n");
        for (i, chunk) in v.phrase.split(' ').collect::<Vec<_>>().chunks(6).enumerate() {
            let numbered: Vec<String> =
                chunk.iter().enumerate().map(|(j, w)| format!("{:>2}. {w:<9}", i * 6 + j + 1)).collect();
            outln!("  {}", numbered.join(" ").trim_end());
        }
        outln!("\nuser {}", v.user);
    }
    Ok(())
}

/// `jewel id show`.
pub fn id_show(home: Option<&Path>, json: bool) -> Result<()> {
    let v = Api::open(home)?.fetch::<api::IdShow>()?;
    if json {
        outln!("{}", serde_json::to_string(&v)?);
    } else {
        match v.user {
            Some(u) => outln!("{u}"),
            None => bail!(
                "this node holds no user identity: make one with `jewel id init`, or `jewel id recover`"
            ),
        }
    }
    Ok(())
}

/// `jewel id recover`: the phrase from standard input (one line from a terminal).
pub fn id_recover(home: Option<&Path>, json: bool) -> Result<()> {
    use std::io::{BufRead, IsTerminal};
    let api = Api::open(home)?;
    let mut phrase = String::new();
    if std::io::stdin().is_terminal() {
        eprintln!("Type your 24 words, separated by spaces, then Enter:");
        std::io::stdin().lock().read_line(&mut phrase)?;
    } else {
        std::io::stdin().lock().take(4096).read_to_string(&mut phrase).context("cannot read the phrase")?;
    }
    let v = api.call::<api::IdRecover>(&api::IdRecoverRequest { phrase })?;
    if json {
        outln!("{}", serde_json::to_string(&v)?);
    } else {
        outln!("{}", v.user.unwrap_or_default());
        match v.index_files {
            Some(n) => eprintln!("your index has {n} files (`jewel ls -r` lists them)"),
            None => eprintln!("your index was not found yet; it is looked for again every 10 seconds"),
        }
    }
    Ok(())
}

/// Parses `START-END` (END inclusive, as in HTTP) or `START-` into a half-open range.
pub fn parse_range(text: &str) -> Result<(u64, u64)> {
    let (a, b) = text.split_once('-').with_context(|| format!("bad --range `{text}`: expected START-END"))?;
    let start: u64 =
        a.trim().parse().with_context(|| format!("bad --range `{text}`: START is not a number"))?;
    let end = if b.trim().is_empty() {
        u64::MAX
    } else {
        let last: u64 =
            b.trim().parse().with_context(|| format!("bad --range `{text}`: END is not a number"))?;
        if last < start {
            bail!("bad --range `{text}`: END is before START");
        }
        last.saturating_add(1)
    };
    Ok((start, end))
}

pub struct GetArgs<'a> {
    pub cap: &'a str,
    pub out: &'a Path,
    pub range: Option<(u64, u64)>,
    pub json: bool,
    pub force: bool,
}

pub fn get(home: Option<&Path>, args: GetArgs<'_>) -> Result<()> {
    let GetArgs { cap, out, range, json, force } = args;
    let api = Api::open(home)?;
    if out.as_os_str() == "-" {
        // Streamed as it decodes: nothing is written to disk.
        let req = api::ReadRequest { cap: cap.to_string(), range };
        api.read_into(&req, &mut std::io::stdout().lock())?;
        return Ok(());
    }
    // Before anything is fetched: a wrong output costs nothing.
    jewel_node::check_output(out, force)?;
    let target = absolute(out)?;
    let v = with_progress(&api, "get", |job| {
        let req = api::GetRequest {
            cap: cap.to_string(),
            out: target.clone(),
            range,
            job: job.map(str::to_string),
            force,
        };
        api.call::<api::Get>(&req)
    })?;
    if range.is_none() {
        refuse_folder(cap, &target)?;
    }
    if json {
        outln!("{}", serde_json::to_string(&v)?);
    } else {
        let resumed = v.resumed_from;
        let note = if resumed > 0 { format!(" (resumed after {resumed} bytes)") } else { String::new() };
        eprintln!("got {} bytes into {}{note}", v.stats.file_bytes, out.display());
    }
    Ok(())
}

/// A shared folder's cap got without `-r` reads the folder node (its children's names and
/// caps), not a file of the user's: what was written is removed, and the user told how to
/// get the folder.
fn refuse_folder(cap: &str, out: &Path) -> Result<()> {
    let mut head = [0u8; 16];
    let n = std::fs::File::open(out).and_then(|mut f| f.read(&mut head)).unwrap_or(0);
    if !jewel::index::FolderNode::is_folder(&head[..n]) {
        return Ok(());
    }
    let whole = std::fs::read(out).unwrap_or_default();
    if !matches!(jewel::index::FolderNode::decode(&whole), Some(Ok(_))) {
        return Ok(());
    }
    std::fs::remove_file(out).with_context(|| format!("cannot remove {}", out.display()))?;
    bail!(
        "`{cap}` is a shared folder, not a file (nothing was kept): `jewel get -r CAP -o DIR` gets its files"
    )
}

fn cap_request(cap: &str) -> api::CapRequest {
    api::CapRequest { cap: cap.to_string() }
}

pub fn check(home: Option<&Path>, cap: &str, verify: bool, json: bool) -> Result<()> {
    let v = Api::open(home)?.call::<api::Check>(&api::CheckRequest { cap: cap.to_string(), verify })?;
    if json {
        outln!("{}", serde_json::to_string(&v)?);
        return Ok(());
    }
    print_check(&v)
}

pub fn repair(home: Option<&Path>, cap: &str, json: bool) -> Result<()> {
    let v = Api::open(home)?.call::<api::Repair>(&cap_request(cap))?;
    if json {
        outln!("{}", serde_json::to_string(&v)?);
        return Ok(());
    }
    let r = &v.repaired;
    if r.slots.is_empty() {
        eprintln!("nothing to repair: every piece is alive");
    } else {
        eprintln!(
            "rebuilt {} piece(s) onto new peers: read {} bytes, wrote {} bytes for {} bytes lost",
            r.slots.len(),
            r.bytes_read,
            r.bytes_written,
            r.bytes_lost
        );
    }
    print_check(&v.check)
}

fn print_check(v: &api::CheckReport) -> Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{:>4}  {:<10} {:<54} {:<8}", "slot", "piece", "holder", "state")?;
    for p in &v.pieces {
        writeln!(
            out,
            "{:>4}  {:<10} {:<54} {:<8}",
            p.slot,
            p.piece.get(..8).unwrap_or_default(),
            p.holder.as_deref().unwrap_or("-"),
            p.state.as_str()
        )?;
    }
    if v.verified {
        writeln!(out, "every byte of every piece fetched and verified ({} bytes)", v.audit_bytes)?;
    }
    writeln!(
        out,
        "{}: N={} D={:.2} M={}, {} of {} pieces alive, {}",
        v.scheme,
        v.n,
        v.d,
        v.m,
        v.alive,
        v.n,
        if v.recoverable { "recoverable" } else { "NOT recoverable" }
    )?;
    Ok(())
}

pub fn peers(home: Option<&Path>, json: bool) -> Result<()> {
    let v = Api::open(home)?.fetch::<api::Peers>()?;
    if json {
        outln!("{}", serde_json::to_string(&v)?);
        return Ok(());
    }
    let mut out = std::io::stdout().lock();
    for p in &v {
        let path = match p.path {
            Some(jewel_net::reach::Path::Direct) => " direct",
            Some(jewel_net::reach::Path::HolePunched) => " hole-punched",
            Some(jewel_net::reach::Path::Relayed) => " relayed",
            None => "",
        };
        writeln!(
            out,
            "{} {}{path}{}{} {}{}{}{}",
            p.peer,
            match (p.connected, p.silent) {
                (true, true) => "not-answering",
                (true, false) => "connected",
                _ => "known",
            },
            p.rtt_ms.map(|r| format!(" rtt={r:.0}ms")).unwrap_or_default(),
            p.rate_bps.map(|r| format!(" rate={:.1}MB/s", r / 1e6)).unwrap_or_default(),
            p.addrs.first().map_or("-", String::as_str),
            p.zone.as_ref().map(|z| format!(" zone={z}")).unwrap_or_default(),
            // Its gossip is not read (it sent messages that were refused).
            if p.gossip_score.is_some_and(|s| s < -80.0) { " gossip-ignored" } else { "" },
            // It took a piece and could not prove it kept it: no pieces for an hour.
            if p.unproven { " unproven" } else { "" }
        )?;
    }
    Ok(())
}

pub fn invite(home: Option<&Path>, json: bool) -> Result<()> {
    let v = Api::open(home)?.fetch::<api::Invite>()?;
    if json {
        outln!("{}", serde_json::to_string(&v)?);
    } else {
        outln!("{}", v.invite);
    }
    Ok(())
}

pub fn join(home: Option<&Path>, invite: &str) -> Result<()> {
    // A bad invite is told here, before any node is asked.
    jewel_net::invite::Invite::decode(invite)?;
    let v = Api::open(home)?.call::<api::Join>(&api::JoinRequest { invite: invite.to_string() })?;
    eprintln!("joined the network through {}", v.peer);
    Ok(())
}

/// How a node is reached, in words (`jewel status`).
fn reached(r: &api::Reachability) -> String {
    let short = |p: &String| p.get(p.len().saturating_sub(8)..).unwrap_or(p).to_string();
    let punched = if r.hole_punched > 0 {
        format!("; hole-punched to {} peers", r.hole_punched)
    } else {
        String::new()
    };
    let double = if r.double_nat {
        "; the router's UPnP cannot help: it is itself behind another NAT (double NAT)"
    } else {
        ""
    };
    if let Some(a) = &r.mapped {
        format!("port-mapped by the router (UPnP) at {a}{punched}")
    } else if let Some(a) = &r.public {
        format!("public at {a}{punched}")
    } else if !r.relays.is_empty() {
        let relays: Vec<String> = r.relays.iter().map(short).collect();
        format!("behind a NAT, relayed through …{}{punched}{double}", relays.join(", …"))
    } else {
        format!("not known to be reachable from outside yet (no relay reservation){punched}{double}")
    }
}

/// `jewel serve …`: prints the front-end's URL as the first line, and serves until
/// Ctrl-C (or the node stops).
pub fn serve(home: Option<&Path>, path: &str, req: &api::ServeRequest) -> Result<()> {
    let api = Api::open(home)?;
    api.serve(path, req, |line| {
        outln!("{}", line.url);
        std::io::stdout().flush()?;
        eprintln!("serving until Ctrl-C");
        Ok(())
    })
}

pub fn dir(home: Option<&Path>, json: bool) -> Result<()> {
    let v = Api::open(home)?.fetch::<api::Dir>()?;
    if json {
        outln!("{}", serde_json::to_string(&v)?);
        return Ok(());
    }
    let mut out = std::io::stdout().lock();
    writeln!(out, "blocks held for peers:")?;
    for b in &v.blocks {
        writeln!(out, "  {} {:>12} bytes", b.id, b.size)?;
    }
    writeln!(out, "files this node put:")?;
    for (id, f) in &v.files {
        writeln!(out, "  {} {} {} bytes, {}", id.get(..8).unwrap_or(id), f.name, f.size, f.scheme)?;
    }
    let capacity = v.capacity.map_or("unlimited".to_string(), |c| format!("{c} bytes"));
    writeln!(out, "used {} bytes, capacity {capacity}", v.used)?;
    Ok(())
}

pub fn rm(home: Option<&Path>, cap: &str) -> Result<()> {
    let api = Api::open(home)?;
    let v = api.call::<api::Rm>(&cap_request(cap))?;
    if !v.unindexed.is_empty() {
        publish_index(&api);
    }
    eprintln!("released {}", v.released);
    for path in &v.unindexed {
        eprintln!("removed {path} from your index");
    }
    for holder in &v.owed {
        eprintln!("  {holder} did not answer: it still owes the release, which is asked again until it answers or its lease runs out");
    }
    Ok(())
}

/// A number of seconds the way a person reads it: 42s, 10m, 3.5h, 7.5d.
fn span(secs: u64) -> String {
    match secs {
        0..120 => format!("{secs}s"),
        120..7200 => format!("{}m", secs / 60),
        7200..172_800 => format!("{:.1}h", secs as f64 / 3600.0),
        _ => format!("{:.1}d", secs as f64 / 86_400.0),
    }
}

/// `jewel status`: the node and its background workers.
pub fn status(home: Option<&Path>, json: bool) -> Result<()> {
    let v = Api::open(home)?.fetch::<api::Status>()?;
    if json {
        outln!("{}", serde_json::to_string(&v)?);
        return Ok(());
    }
    let mut out = std::io::stdout().lock();
    writeln!(out, "peer id: {}", v.peer_id)?;
    for a in &v.listen {
        writeln!(out, "listening on {a}")?;
    }
    if let Some(r) = &v.reach {
        writeln!(out, "reached: {}", reached(r))?;
    }
    let capacity = v.usage.capacity.map_or("unlimited".to_string(), |c| format!("{c} bytes"));
    writeln!(out, "store: {} bytes used, capacity {capacity}", v.usage.used)?;
    writeln!(out, "puts running: {}, gets running: {}", v.puts_running, v.gets_running)?;
    if let Some(ix) = &v.index {
        let saved = if !ix.shared {
            "kept on this node only: `jewel id init` shares it with your other devices".to_string()
        } else if ix.published_changes == ix.changes {
            let kind = if ix.last_head_delta { "the changes since the one before" } else { "every change" };
            format!("all published; the last publication: {} bytes, {kind}", ix.last_head_bytes)
        } else {
            format!("{} of them published so far", ix.published_changes)
        };
        writeln!(out, "index: {} files, {} changes ({saved})", ix.files, ix.changes)?;
    }
    writeln!(out)?;
    let now = jewel::lease::now();
    let ago =
        |t: Option<u64>| t.map_or("never".to_string(), |t| format!("{} ago", span(now.saturating_sub(t))));
    let until = |t: Option<u64>| t.map_or("-".to_string(), |t| format!("in {}", span(t.saturating_sub(now))));
    writeln!(
        out,
        "{:<8} {:<10} {:>5} {:<10} {:<10}  last found",
        "worker", "state", "runs", "last run", "next"
    )?;
    for w in &v.workers {
        let state = serde_json::to_value(w.state)?.as_str().map(str::to_string).unwrap_or_default();
        writeln!(
            out,
            "{:<8} {:<10} {:>5} {:<10} {:<10}  {}",
            w.name,
            state,
            w.runs,
            ago(w.last_run),
            until(w.next_run),
            w.last_found.as_deref().unwrap_or("-")
        )?;
        if let Some(e) = &w.last_error {
            writeln!(out, "{:<8} last error: {e}", "")?;
        }
    }
    if !v.dropped.is_empty() {
        writeln!(out, "\nblocks the scrubber dropped (they no longer matched their id):")?;
        for d in &v.dropped {
            writeln!(out, "  {} {}", d.id, ago(Some(d.at)))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_read_like_a_person_says_them() {
        assert_eq!(span(42), "42s");
        assert_eq!(span(600), "10m");
        assert_eq!(span(3 * 3600 + 1800), "3.5h");
        assert_eq!(span(648_000), "7.5d");
    }

    #[test]
    fn ranges_are_inclusive_and_checked() {
        assert_eq!(parse_range("0-99").unwrap(), (0, 100));
        assert_eq!(parse_range("5-").unwrap(), (5, u64::MAX));
        assert!(parse_range("9-3").unwrap_err().to_string().contains("END is before START"));
    }

    #[test]
    fn status_says_how_the_node_is_reached_and_why_upnp_did_not_help() {
        let mut r = api::Reachability {
            relays: vec!["12D3KooWrelayone".into()],
            hole_punched: 2,
            ..Default::default()
        };
        assert_eq!(reached(&r), "behind a NAT, relayed through …relayone; hole-punched to 2 peers");
        r.double_nat = true;
        assert!(reached(&r).ends_with("it is itself behind another NAT (double NAT)"), "{}", reached(&r));
        r.mapped = Some("/ip4/11.1.1.1/tcp/4001".into());
        assert!(reached(&r).starts_with("port-mapped by the router (UPnP) at /ip4/11.1.1.1"));
    }
}
