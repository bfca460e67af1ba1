//! The client side of a running node's control API: `jewel put/get/check/peers/dir/rm`
//! reach the node named by `--home` (or `JEWEL_HOME`) through `HOME/api.json`.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use jewel_node::ApiInfo;
use serde_json::Value;

pub struct Api {
    base: String,
    token: String,
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
        Ok(Api { base: format!("http://{}", info.api), token: info.token })
    }

    fn handle(&self, r: Result<ureq::http::Response<ureq::Body>, ureq::Error>) -> Result<Value> {
        let mut resp = r.with_context(|| format!("cannot reach the node's API at {}", self.base))?;
        let status = resp.status();
        let body: Value = resp.body_mut().read_json().context("the node sent a malformed reply")?;
        if !status.is_success() {
            let msg = body.get("error").and_then(Value::as_str).unwrap_or("unknown error");
            bail!("{msg}");
        }
        Ok(body)
    }

    fn agent(&self) -> ureq::Agent {
        ureq::Agent::config_builder().http_status_as_error(false).build().into()
    }

    pub fn get(&self, path: &str) -> Result<Value> {
        let r = self
            .agent()
            .get(format!("{}{path}", self.base))
            .header("authorization", format!("Bearer {}", self.token))
            .call();
        self.handle(r)
    }

    pub fn post(&self, path: &str, body: Value) -> Result<Value> {
        let r = self
            .agent()
            .post(format!("{}{path}", self.base))
            .header("authorization", format!("Bearer {}", self.token))
            .send_json(body);
        self.handle(r)
    }
}

fn absolute(p: &Path) -> Result<PathBuf> {
    Ok(if p.is_absolute() { p.to_path_buf() } else { std::env::current_dir()?.join(p) })
}

/// Runs `call` (a put or get naming job `id`, if any) with a progress bar on stderr that
/// follows the node's `/v1/progress/{id}`, when stderr is a terminal.
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
    let (stop, stopped) = std::sync::mpsc::channel::<()>();
    let result = std::thread::scope(|scope| {
        let (bar, job) = (&bar, &job);
        scope.spawn(move || {
            // Refresh ten times a second until the call returns.
            while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
                stopped.recv_timeout(std::time::Duration::from_millis(100))
            {
                if let Ok(v) = api.get(&format!("/v1/progress/{job}")) {
                    if bar.is_hidden() {
                        bar.set_draw_target(indicatif::ProgressDrawTarget::stderr());
                    }
                    bar.set_length(v["total"].as_u64().unwrap_or(0));
                    bar.set_position(v["done"].as_u64().unwrap_or(0));
                }
            }
        });
        let r = call(Some(job));
        let _ = stop.send(());
        r
    });
    bar.finish_and_clear();
    result
}

pub fn put(home: Option<&Path>, file: &Path, scheme: Option<&str>, json: bool) -> Result<()> {
    let api = Api::open(home)?;
    let path = absolute(file)?;
    let v = with_progress(&api, "put", |job| {
        api.post("/v1/put", serde_json::json!({ "path": path, "scheme": scheme, "job": job }))
    })?;
    if json {
        outln!("{v}");
    } else {
        outln!("{}", v["cap"].as_str().unwrap_or_default());
        let holders = v["holders"].as_array().map(Vec::len).unwrap_or(0);
        eprintln!("stored {} bytes as {holders} pieces on {holders} peers", v["stats"]["file_bytes"]);
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

pub fn get(home: Option<&Path>, cap: &str, out: &Path, range: Option<(u64, u64)>) -> Result<()> {
    let api = Api::open(home)?;
    let to_stdout = out.as_os_str() == "-";
    let target = if to_stdout {
        let home = home.map(Path::to_path_buf).unwrap_or_default();
        absolute(&home.join(format!("stdout-{}.tmp", std::process::id())))?
    } else {
        absolute(out)?
    };
    let v = with_progress(&api, "get", |job| {
        api.post("/v1/get", serde_json::json!({ "cap": cap, "out": target, "range": range, "job": job }))
    })?;
    if to_stdout {
        let mut f = std::fs::File::open(&target)?;
        std::io::copy(&mut f, &mut std::io::stdout().lock()).context("writing to stdout")?;
        let _ = std::fs::remove_file(&target);
    } else {
        let resumed = v["resumed_from"].as_u64().unwrap_or(0);
        let note = if resumed > 0 { format!(" (resumed after {resumed} bytes)") } else { String::new() };
        eprintln!("got {} bytes into {}{note}", v["file_bytes"], out.display());
    }
    Ok(())
}

pub fn check(home: Option<&Path>, cap: &str, json: bool) -> Result<()> {
    let v = Api::open(home)?.post("/v1/check", serde_json::json!({ "cap": cap }))?;
    if json {
        outln!("{v}");
        return Ok(());
    }
    print_check(&v)
}

pub fn repair(home: Option<&Path>, cap: &str, json: bool) -> Result<()> {
    let v = Api::open(home)?.post("/v1/repair", serde_json::json!({ "cap": cap }))?;
    if json {
        outln!("{v}");
        return Ok(());
    }
    let r = &v["repaired"];
    let slots = r["slots"].as_array().map(Vec::len).unwrap_or(0);
    if slots == 0 {
        eprintln!("nothing to repair: every piece is alive");
    } else {
        eprintln!(
            "rebuilt {slots} piece(s) onto new peers: read {} bytes, wrote {} bytes for {} bytes lost",
            r["bytes_read"], r["bytes_written"], r["bytes_lost"]
        );
    }
    print_check(&v["check"])
}

fn print_check(v: &Value) -> Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{:>4}  {:<10} {:<54} {:<8}", "slot", "piece", "holder", "state")?;
    for p in v["pieces"].as_array().into_iter().flatten() {
        writeln!(
            out,
            "{:>4}  {:<10} {:<54} {:<8}",
            p["slot"].as_u64().unwrap_or_default(),
            p["piece"].as_str().unwrap_or_default().get(..8).unwrap_or_default(),
            p["holder"].as_str().unwrap_or("-"),
            p["state"].as_str().unwrap_or_default()
        )?;
    }
    writeln!(
        out,
        "{}: N={} D={:.2} M={}, {} of {} pieces alive, {}",
        v["scheme"].as_str().unwrap_or_default(),
        v["n"],
        v["d"].as_f64().unwrap_or_default(),
        v["m"],
        v["alive"],
        v["n"],
        if v["recoverable"].as_bool().unwrap_or(false) { "recoverable" } else { "NOT recoverable" }
    )?;
    Ok(())
}

pub fn peers(home: Option<&Path>, json: bool) -> Result<()> {
    let v = Api::open(home)?.get("/v1/peers")?;
    if json {
        outln!("{v}");
        return Ok(());
    }
    let mut out = std::io::stdout().lock();
    for p in v.as_array().into_iter().flatten() {
        writeln!(
            out,
            "{} {} {}{}",
            p["peer"].as_str().unwrap_or_default(),
            if p["connected"].as_bool().unwrap_or(false) { "connected" } else { "known" },
            p["addrs"].as_array().and_then(|a| a.first()).and_then(Value::as_str).unwrap_or("-"),
            p["zone"].as_str().map(|z| format!(" zone={z}")).unwrap_or_default()
        )?;
    }
    Ok(())
}

pub fn dir(home: Option<&Path>, json: bool) -> Result<()> {
    let v = Api::open(home)?.get("/v1/dir")?;
    if json {
        outln!("{v}");
        return Ok(());
    }
    let mut out = std::io::stdout().lock();
    writeln!(out, "blocks held for peers:")?;
    for b in v["blocks"].as_array().into_iter().flatten() {
        writeln!(out, "  {} {:>12} bytes", b["id"].as_str().unwrap_or_default(), b["size"])?;
    }
    writeln!(out, "files this node put:")?;
    for (id, f) in v["files"].as_object().into_iter().flatten() {
        writeln!(
            out,
            "  {} {} {} bytes, {}",
            &id[..8.min(id.len())],
            f["name"].as_str().unwrap_or_default(),
            f["size"],
            f["scheme"].as_str().unwrap_or_default()
        )?;
    }
    let capacity = v["capacity"].as_u64().map_or("unlimited".to_string(), |c| format!("{c} bytes"));
    writeln!(out, "used {} bytes, capacity {capacity}", v["used"])?;
    Ok(())
}

pub fn rm(home: Option<&Path>, cap: &str) -> Result<()> {
    let v = Api::open(home)?.post("/v1/rm", serde_json::json!({ "cap": cap }))?;
    eprintln!("released {}", v["released"].as_str().unwrap_or_default());
    Ok(())
}
