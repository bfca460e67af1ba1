//! `jewel devnet`: a local network of `jewel node` processes on 127.0.0.1.
//!
//! `up` starts N nodes (peer 0 first, the others bootstrapping from it), waits until every
//! node is ready and knows every other, and writes `DIR/devnet.json`. `status`, `down`,
//! `kill I` (SIGKILL: a crash) and `start I` (same home, same identity) work from that file.
//! Node output goes to `DIR/peer-I/node.log`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::remote::Api;

const READY_TIMEOUT: Duration = Duration::from_secs(20);
const POLL: Duration = Duration::from_millis(25);

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Peer {
    pub index: usize,
    pub pid: u32,
    pub peer_id: String,
    pub home: PathBuf,
    pub api: String,
    pub listen: Vec<String>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Devnet {
    pub peers: Vec<Peer>,
}

fn state_path(dir: &Path) -> PathBuf {
    dir.join("devnet.json")
}

fn load(dir: &Path) -> Result<Devnet> {
    let path = state_path(dir);
    let bytes = std::fs::read(&path)
        .with_context(|| format!("no devnet in {} (run `jewel devnet up`)", dir.display()))?;
    serde_json::from_slice(&bytes).with_context(|| format!("{} is damaged", path.display()))
}

fn save(dir: &Path, net: &Devnet) -> Result<()> {
    let tmp = dir.join("devnet.json.tmp");
    std::fs::write(&tmp, serde_json::to_vec_pretty(net)?)?;
    std::fs::rename(&tmp, state_path(dir))?;
    Ok(())
}

/// Whether process `pid` still runs, or is still exiting. A killed process's main thread
/// turns zombie before its other threads are gone, and those still hold its files (the
/// store's lock among them), so a zombie with threads left counts as alive.
pub fn alive(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { return false };
    if !stat.contains(") Z ") {
        return true;
    }
    std::fs::read_dir(format!("/proc/{pid}/task")).map(|d| d.count() > 1).unwrap_or(false)
}

/// Whether process `pid` is still the `jewel node` of `home`: a pid the devnet recorded
/// may since belong to another process, which must never be signalled.
fn is_our_node(pid: u32, home: &Path) -> bool {
    let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else { return false };
    let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
    let home = home.as_os_str().as_encoded_bytes();
    args.iter().any(|a| *a == b"node") && args.windows(2).any(|w| w[0] == b"--home" && w[1] == home)
}

fn signal(pid: u32, sig: &str) -> Result<()> {
    let status = Command::new("kill").arg(sig).arg(pid.to_string()).status().context("running kill")?;
    if !status.success() {
        bail!("could not signal process {pid}");
    }
    Ok(())
}

/// Starts one node process; returns once its api.json is written.
pub fn spawn(index: usize, home: &Path, bootstrap: Option<&str>) -> Result<Peer> {
    spawn_with(index, home, bootstrap, &[])
}

/// [`spawn`], with extra `jewel node` arguments.
pub fn spawn_with(index: usize, home: &Path, bootstrap: Option<&str>, extra: &[&str]) -> Result<Peer> {
    std::fs::create_dir_all(home)?;
    let _ = std::fs::remove_file(home.join("api.json"));
    let log = {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(home.join("node.log"))?
    };
    let mut cmd = Command::new(std::env::current_exe()?);
    cmd.arg("node").arg("--home").arg(home).args(extra);
    // A devnet stays on this machine: loopback, any port.
    if !extra.contains(&"--listen") {
        cmd.args(["--listen", "/ip4/127.0.0.1/tcp/0"]);
    }
    if let Some(b) = bootstrap {
        cmd.args(["--bootstrap", b]);
    }
    let child =
        cmd.stdin(Stdio::null()).stdout(log.try_clone()?).stderr(log).spawn().context("starting a node")?;
    let pid = child.id();
    let start = Instant::now();
    let api_json = home.join("api.json");
    while !api_json.is_file() {
        if !alive(pid) {
            let log = std::fs::read_to_string(home.join("node.log")).unwrap_or_default();
            let last = log.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("no output");
            bail!(
                "peer {index} exited during start-up: {} (log: {})",
                last.trim(),
                home.join("node.log").display()
            );
        }
        if start.elapsed() > READY_TIMEOUT {
            bail!(
                "peer {index} was not ready after {READY_TIMEOUT:?}; see {}",
                home.join("node.log").display()
            );
        }
        std::thread::sleep(POLL);
    }
    let info: jewel_node::ApiInfo = serde_json::from_slice(&std::fs::read(&api_json)?)?;
    let listen = info.listen.iter().map(|a| format!("{a}/p2p/{}", info.peer_id)).collect();
    Ok(Peer { index, pid, peer_id: info.peer_id, home: home.to_path_buf(), api: info.api, listen })
}

/// Waits until `peer` knows at least `want` other peers.
pub fn wait_known(peer: &Peer, want: usize) -> Result<()> {
    let api = Api::open(Some(&peer.home))?;
    let start = Instant::now();
    loop {
        let known = api.fetch::<jewel_node::api::Peers>()?.len();
        if known >= want {
            return Ok(());
        }
        if start.elapsed() > READY_TIMEOUT {
            bail!("peer {} knows {known} of {want} peers after {READY_TIMEOUT:?}", peer.index);
        }
        std::thread::sleep(POLL);
    }
}

/// Starts a devnet of `n` peers in `dir` and waits until every peer knows every other.
/// Returns it with the time that took.
pub fn launch(dir: &Path, n: usize) -> Result<(Devnet, Duration)> {
    if n == 0 || n > 64 {
        bail!("a devnet has 1 to 64 peers (got {n})");
    }
    if state_path(dir).exists() {
        let net = load(dir)?;
        if net.peers.iter().any(|p| alive(p.pid)) {
            bail!(
                "a devnet is already running in {}; `jewel devnet down --dir {}` first",
                dir.display(),
                dir.display()
            );
        }
    }
    std::fs::create_dir_all(dir)?;
    let started = Instant::now();
    let mut peers = vec![spawn(0, &dir.join("peer-0"), None)?];
    let boot = peers[0].listen.first().cloned().context("peer 0 has no listen address")?;
    for i in 1..n {
        match spawn(i, &dir.join(format!("peer-{i}")), Some(&boot)) {
            Ok(p) => peers.push(p),
            Err(e) => {
                for p in &peers {
                    let _ = signal(p.pid, "-TERM");
                }
                return Err(e);
            }
        }
    }
    let net = Devnet { peers };
    save(dir, &net)?;
    for p in &net.peers {
        wait_known(p, n - 1)?;
    }
    Ok((net, started.elapsed()))
}

pub fn up(dir: &Path, n: usize) -> Result<()> {
    let (net, took) = launch(dir, n)?;
    outln!("devnet of {n} peers ready in {:.2}s; state in {}", took.as_secs_f64(), state_path(dir).display());
    for p in &net.peers {
        outln!("peer {:>2}  pid {:>7}  {}  --home {}", p.index, p.pid, p.peer_id, p.home.display());
    }
    Ok(())
}

pub fn status(dir: &Path, json: bool) -> Result<()> {
    let net = load(dir)?;
    if json {
        let rows: Vec<serde_json::Value> =
            net.peers.iter().map(|p| serde_json::json!({ "peer": p, "running": alive(p.pid) })).collect();
        outln!("{}", serde_json::Value::Array(rows));
        return Ok(());
    }
    for p in &net.peers {
        let state = if alive(p.pid) { "running" } else { "stopped" };
        outln!("peer {:>2}  {state:<8} pid {:>7}  {}  api {}", p.index, p.pid, p.peer_id, p.api);
    }
    Ok(())
}

fn wait_exit(pid: u32) -> Result<()> {
    let start = Instant::now();
    while alive(pid) {
        if start.elapsed() > READY_TIMEOUT {
            bail!("process {pid} did not stop");
        }
        std::thread::sleep(POLL);
    }
    Ok(())
}

/// Stops every peer of the devnet in `dir` (SIGTERM, then waits); returns how many it had.
pub fn stop(dir: &Path) -> Result<usize> {
    let net = load(dir)?;
    let ours: Vec<&Peer> = net.peers.iter().filter(|p| alive(p.pid) && is_our_node(p.pid, &p.home)).collect();
    for p in &ours {
        signal(p.pid, "-TERM")?;
    }
    for p in &ours {
        wait_exit(p.pid)?;
    }
    std::fs::remove_file(state_path(dir))?;
    Ok(net.peers.len())
}

pub fn down(dir: &Path) -> Result<()> {
    let n = stop(dir)?;
    outln!("devnet in {} stopped ({n} peers); their folders are kept", dir.display());
    Ok(())
}

/// Kills a process abruptly (SIGKILL) and waits until it is gone.
pub fn kill_pid(pid: u32) -> Result<()> {
    signal(pid, "-KILL")?;
    wait_exit(pid)
}

pub fn kill(dir: &Path, index: usize) -> Result<()> {
    let net = load(dir)?;
    let p = net
        .peers
        .get(index)
        .with_context(|| format!("no peer {index}; the devnet has {}", net.peers.len()))?;
    if !alive(p.pid) || !is_our_node(p.pid, &p.home) {
        bail!("peer {index} is not running (process {} is not its node)", p.pid);
    }
    kill_pid(p.pid)?;
    let _ = std::fs::remove_file(p.home.join("api.json"));
    outln!("peer {index} killed");
    Ok(())
}

pub fn start(dir: &Path, index: usize) -> Result<()> {
    let mut net = load(dir)?;
    let p = net
        .peers
        .get(index)
        .cloned()
        .with_context(|| format!("no peer {index}; the devnet has {}", net.peers.len()))?;
    if alive(p.pid) && is_our_node(p.pid, &p.home) {
        bail!("peer {index} is already running");
    }
    let boot =
        net.peers.iter().find(|q| q.index != index && alive(q.pid)).and_then(|q| q.listen.first().cloned());
    let fresh = spawn(index, &p.home, boot.as_deref())?;
    if fresh.peer_id != p.peer_id {
        bail!("peer {index} came back with another identity");
    }
    if boot.is_some() {
        wait_known(&fresh, 1)?;
    }
    net.peers[index] = fresh;
    save(dir, &net)?;
    outln!("peer {index} started");
    Ok(())
}
