//! Dev-only test kit: real `jewel` processes, as a user runs them, with a timeout on
//! everything.
//!
//! - [`Node`]: one `jewel node` process in a home of its own (optionally inside a network
//!   namespace), ready once it printed its API address; it can be stopped (SIGTERM),
//!   killed (SIGKILL), frozen (SIGSTOP) and thawed, and restarted on the same home.
//! - [`Devnet`]: a hub node that only introduces peers, and N peers bootstrapping from it;
//!   ready when every peer knows every other.
//! - [`Cli`]: the `jewel` command against a node's home, killed if it hangs.
//! - [`Lan`]: two network namespaces joined by a veth pair, deleted when dropped.
//! - [`Wan`]: the WAN lab: public hosts and homes behind NAT routers (cone, symmetric,
//!   UPnP) on an internet of network namespaces (see [`wan`]).
//! - [`exclusive`]: one process test at a time per test binary, so a 2-core machine is not
//!   asked to run dozens of nodes at once.
//!
//! Nothing here sleeps to wait for a thing: readiness comes from what a process prints, and
//! conditions are polled (with a deadline) through the CLI, as a user would check them.

pub mod delay;
pub mod wan;
pub use wan::{in_netns, Home, Host, Router, Wan};

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{channel, Receiver};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// How long a CLI command may take before it is killed and the test fails.
pub const CLI_TIMEOUT: Duration = Duration::from_secs(90);
/// How long a node may take to print that it is ready.
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a condition polled with [`eventually`] may take.
pub const EVENTUALLY: Duration = Duration::from_secs(60);

/// Holds the process-test lock of this test binary: tests that start nodes take it, so
/// they run one after another however many test threads there are.
pub fn exclusive() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// Polls `check` until it returns `Some`, at most `within`; panics with `what` if it never
/// does. Each poll is a real observation (a CLI call, a file's size), never a guess.
pub fn eventually<T>(what: &str, within: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    let mut pause = Duration::from_millis(10);
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(start.elapsed() < within, "{what}: not within {within:?}");
        std::thread::park_timeout(pause);
        pause = (pause * 2).min(Duration::from_millis(200));
    }
}

/// What a finished command printed.
#[derive(Debug)]
pub struct Output {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    pub fn success(&self) -> bool {
        self.status.success()
    }
}

/// Sends `sig` to `pid`.
fn signal(pid: u32, sig: libc::c_int) {
    // SAFETY: kill(2) with a pid this kit started; no memory is touched.
    unsafe {
        libc::kill(pid as libc::pid_t, sig);
    }
}

/// Runs `cmd` to its end, killing it after `timeout`.
pub fn run_with_timeout(cmd: Command, timeout: Duration) -> Output {
    run_fed(cmd, timeout, None)
}

/// Runs `cmd` to its end with `input` on its standard input (none if `None`), killing it
/// after `timeout`.
pub fn run_fed(mut cmd: Command, timeout: Duration, input: Option<&[u8]>) -> Output {
    let described = format!("{cmd:?}");
    let stdin = if input.is_some() { Stdio::piped() } else { Stdio::null() };
    let mut child = cmd
        .stdin(stdin)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {described}: {e}"));
    if let (Some(bytes), Some(mut feed)) = (input, child.stdin.take()) {
        use std::io::Write;
        let bytes = bytes.to_vec();
        std::thread::spawn(move || {
            let _ = feed.write_all(&bytes);
        });
    }
    let pid = child.id();
    let drain = |r: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut s = String::new();
            if let Some(mut r) = r {
                let _ = r.read_to_string(&mut s);
            }
            s
        })
    };
    let out = drain(child.stdout.take().map(|s| Box::new(s) as Box<dyn Read + Send>));
    let err = drain(child.stderr.take().map(|s| Box::new(s) as Box<dyn Read + Send>));
    let (tx, rx) = channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait());
    });
    let status = match rx.recv_timeout(timeout) {
        Ok(status) => status.unwrap_or_else(|e| panic!("waiting for {described}: {e}")),
        Err(_) => {
            signal(pid, libc::SIGKILL);
            let _ = rx.recv();
            let (stdout, stderr) = (out.join().unwrap_or_default(), err.join().unwrap_or_default());
            panic!("{described} did not finish within {timeout:?}; stdout: {stdout} stderr: {stderr}");
        }
    };
    Output { status, stdout: out.join().unwrap_or_default(), stderr: err.join().unwrap_or_default() }
}

/// The `jewel` binary, run inside a network namespace if given.
#[derive(Clone, Debug)]
pub struct Cli {
    pub bin: PathBuf,
    pub ns: Option<String>,
}

impl Cli {
    pub fn new(bin: impl Into<PathBuf>) -> Cli {
        Cli { bin: bin.into(), ns: None }
    }

    pub fn in_netns(&self, ns: &str) -> Cli {
        Cli { bin: self.bin.clone(), ns: Some(ns.to_string()) }
    }

    /// A command for the binary (through `ip netns exec` inside a namespace).
    pub fn command(&self) -> Command {
        match &self.ns {
            Some(ns) => {
                let mut cmd = Command::new("ip");
                cmd.args(["netns", "exec", ns]).arg(&self.bin);
                cmd
            }
            None => Command::new(&self.bin),
        }
    }

    /// `jewel --home HOME ARGS…`, to its end (killed after [`CLI_TIMEOUT`]).
    pub fn run(&self, home: &Path, args: &[&str]) -> Output {
        let mut cmd = self.command();
        cmd.arg("--home").arg(home).args(args);
        run_with_timeout(cmd, CLI_TIMEOUT)
    }

    /// Like [`Cli::run`], with `input` on the command's standard input.
    pub fn run_fed(&self, home: &Path, args: &[&str], input: &[u8]) -> Output {
        let mut cmd = self.command();
        cmd.arg("--home").arg(home).args(args);
        run_fed(cmd, CLI_TIMEOUT, Some(input))
    }

    /// Like [`Cli::run`]; the command must succeed. Returns its stdout.
    pub fn ok(&self, home: &Path, args: &[&str]) -> String {
        let o = self.run(home, args);
        assert!(o.success(), "jewel {args:?} failed: {}", o.stderr.trim());
        o.stdout
    }

    /// Like [`Cli::ok`], parsing stdout as JSON.
    pub fn json(&self, home: &Path, args: &[&str]) -> serde_json::Value {
        let out = self.ok(home, args);
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("jewel {args:?} printed no JSON ({e}): {out}"))
    }

    /// Like [`Cli::run`]; the command must fail with exactly one line on stderr, which is
    /// returned.
    pub fn err_line(&self, home: &Path, args: &[&str]) -> String {
        let o = self.run(home, args);
        assert!(!o.success(), "jewel {args:?} should have failed; it printed {}", o.stdout);
        let e = o.stderr.trim().to_string();
        assert_eq!(e.lines().count(), 1, "jewel {args:?}: one error line, got: {e}");
        assert!(e.starts_with("error: "), "{e}");
        e
    }
}

/// One `jewel node` process.
pub struct Node {
    cli: Cli,
    child: Option<Child>,
    pub home: PathBuf,
    pub peer: String,
    /// Its first listen address, with its `/p2p/` id: what others bootstrap from.
    pub addr: String,
    args: Vec<String>,
    env: Vec<(String, String)>,
    nofile: Option<u64>,
    log: Option<Receiver<String>>,
    frozen: bool,
}

/// How to start a [`Node`].
pub struct NodeBuilder {
    cli: Cli,
    home: PathBuf,
    args: Vec<String>,
    env: Vec<(String, String)>,
    nofile: Option<u64>,
}

impl NodeBuilder {
    pub fn bootstrap(mut self, addr: &str) -> NodeBuilder {
        self.args.extend(["--bootstrap".to_string(), addr.to_string()]);
        self
    }

    /// Extra `jewel node` flags.
    pub fn args(mut self, args: &[&str]) -> NodeBuilder {
        self.args.extend(args.iter().map(|a| a.to_string()));
        self
    }

    pub fn netns(mut self, ns: &str) -> NodeBuilder {
        self.cli = self.cli.in_netns(ns);
        self
    }

    /// Starts the node with this soft limit on open files (as many systems start processes).
    pub fn soft_nofile(mut self, limit: u64) -> NodeBuilder {
        self.nofile = Some(limit);
        self
    }

    /// An environment variable for the node (`RUST_LOG` replaces the kit's `jewel=info`).
    pub fn env(mut self, key: &str, value: &str) -> NodeBuilder {
        self.env.push((key.to_string(), value.to_string()));
        self
    }

    /// Starts the node and waits until it printed its API address.
    pub fn start(self) -> Node {
        let mut node = Node {
            cli: self.cli,
            child: None,
            home: self.home,
            peer: String::new(),
            addr: String::new(),
            args: self.args,
            env: self.env,
            nofile: self.nofile,
            log: None,
            frozen: false,
        };
        node.launch();
        node
    }
}

impl Node {
    pub fn builder(cli: &Cli, home: &Path) -> NodeBuilder {
        NodeBuilder {
            cli: cli.clone(),
            home: home.to_path_buf(),
            args: Vec::new(),
            env: Vec::new(),
            nofile: None,
        }
    }

    /// Starts the process and reads its readiness lines; its log (RUST_LOG=jewel=info) is
    /// collected for [`Node::wait_log`].
    fn launch(&mut self) {
        let mut cmd = self.cli.command();
        cmd.arg("node").arg("--home").arg(&self.home).args(&self.args);
        // On this machine's own network a test node stays on loopback; inside a network
        // namespace it listens as a user's node does unless told otherwise.
        if self.cli.ns.is_none() && !self.args.iter().any(|a| a == "--listen") {
            cmd.args(["--listen", "/ip4/127.0.0.1/tcp/0"]);
        }
        cmd.env("RUST_LOG", "jewel=info");
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        if let Some(limit) = self.nofile {
            use std::os::unix::process::CommandExt;
            // SAFETY: getrlimit and setrlimit are async-signal-safe and touch only the child.
            unsafe {
                cmd.pre_exec(move || {
                    let mut now = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
                    libc::getrlimit(libc::RLIMIT_NOFILE, &mut now);
                    now.rlim_cur = limit.min(now.rlim_max);
                    libc::setrlimit(libc::RLIMIT_NOFILE, &now);
                    Ok(())
                });
            }
        }
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start jewel node: {e}"));
        let (tx, log) = channel();
        if let Some(err) = child.stderr.take() {
            std::thread::spawn(move || {
                for line in BufReader::new(err).lines().map_while(Result::ok) {
                    let _ = tx.send(line);
                }
            });
        }
        let (lines_tx, lines) = channel();
        if let Some(out) = child.stdout.take() {
            std::thread::spawn(move || {
                // Read to the end even once nobody listens, so the node never blocks on
                // a full pipe.
                for line in BufReader::new(out).lines().map_while(Result::ok) {
                    let _ = lines_tx.send(line);
                }
            });
        }
        let start = Instant::now();
        let (mut peer, mut addr) = (String::new(), String::new());
        loop {
            let left = READY_TIMEOUT.saturating_sub(start.elapsed());
            match lines.recv_timeout(left) {
                Ok(line) => {
                    if let Some(p) = line.strip_prefix("peer id: ") {
                        peer = p.trim().to_string();
                    } else if let Some(a) = line.strip_prefix("listening on ") {
                        if addr.is_empty() {
                            addr = a.trim().to_string();
                        }
                    } else if line.starts_with("api: ") {
                        break;
                    }
                }
                Err(_) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    let said: Vec<String> = log.try_iter().collect();
                    panic!("jewel node --home {} was not ready: {}", self.home.display(), said.join(" | "));
                }
            }
        }
        assert!(self.home.join("api.json").is_file(), "api.json is written before the node says it is ready");
        self.child = Some(child);
        self.peer = peer;
        self.addr = addr;
        self.log = Some(log);
        self.frozen = false;
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    pub fn cli(&self) -> &Cli {
        &self.cli
    }

    /// `jewel --home THIS ARGS…`.
    pub fn run(&self, args: &[&str]) -> Output {
        self.cli.run(&self.home, args)
    }

    pub fn ok(&self, args: &[&str]) -> String {
        self.cli.ok(&self.home, args)
    }

    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        self.cli.json(&self.home, args)
    }

    pub fn err_line(&self, args: &[&str]) -> String {
        self.cli.err_line(&self.home, args)
    }

    /// The log lines the node printed so far that no one has read yet.
    pub fn log_lines(&self) -> Vec<String> {
        self.log.as_ref().map(|l| l.try_iter().collect()).unwrap_or_default()
    }

    /// Waits (on the node's own log) for a line containing `text`.
    pub fn wait_log(&self, text: &str, within: Duration) -> String {
        let log = self.log.as_ref().unwrap_or_else(|| panic!("node {} is not running", self.peer));
        let start = Instant::now();
        loop {
            match log.recv_timeout(within.saturating_sub(start.elapsed())) {
                Ok(line) if line.contains(text) => return line,
                Ok(_) => {}
                Err(_) => panic!("node {} never logged {text:?} within {within:?}", self.peer),
            }
        }
    }

    /// Waits for the process to exit, at most `within`; kills it after that.
    fn reap(&mut self, within: Duration) -> Option<ExitStatus> {
        let mut child = self.child.take()?;
        let pid = child.id();
        let (tx, rx) = channel();
        std::thread::spawn(move || {
            let _ = tx.send(child.wait());
        });
        match rx.recv_timeout(within) {
            Ok(status) => status.ok(),
            Err(_) => {
                signal(pid, libc::SIGKILL);
                rx.recv().ok().and_then(Result::ok)
            }
        }
    }

    /// SIGTERM, then waits for it to exit (a node must stop within a few seconds).
    /// Returns its exit status, or `None` if it had to be killed.
    pub fn stop(&mut self) -> Option<ExitStatus> {
        self.thaw();
        let pid = self.pid();
        if pid == 0 {
            return None;
        }
        signal(pid, libc::SIGTERM);
        self.reap(Duration::from_secs(15))
    }

    /// SIGKILL: a crash.
    pub fn kill(&mut self) {
        let pid = self.pid();
        if pid == 0 {
            return;
        }
        signal(pid, libc::SIGKILL);
        self.reap(Duration::from_secs(15));
        self.frozen = false;
    }

    /// SIGSTOP: the process keeps its connections open and never answers.
    pub fn freeze(&mut self) {
        if self.pid() != 0 && !self.frozen {
            signal(self.pid(), libc::SIGSTOP);
            self.frozen = true;
        }
    }

    /// SIGCONT.
    pub fn thaw(&mut self) {
        if self.pid() != 0 && self.frozen {
            signal(self.pid(), libc::SIGCONT);
            self.frozen = false;
        }
    }

    /// Starts the node again on the same home with the same flags (after a stop or kill).
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "restart a node only once it is stopped");
        let before = self.peer.clone();
        self.launch();
        assert_eq!(self.peer, before, "a restarted node keeps its identity");
    }

    /// Starts the node again with different flags.
    pub fn restart_with(&mut self, args: &[&str]) {
        self.args = args.iter().map(|a| a.to_string()).collect();
        self.restart();
    }

    /// The peers this node knows (`jewel peers --json`).
    pub fn known_peers(&self) -> Vec<String> {
        let v = self.json(&["peers", "--json"]);
        v.as_array()
            .map(|a| a.iter().filter_map(|p| p["peer"].as_str().map(str::to_string)).collect())
            .unwrap_or_default()
    }

    /// Waits until this node knows every one of `peers`.
    pub fn wait_knows(&self, peers: &[&str]) {
        eventually(&format!("node {} knows {} peers", self.peer, peers.len()), EVENTUALLY, || {
            let known = self.known_peers();
            peers.iter().all(|p| known.iter().any(|k| k == p)).then_some(())
        });
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.thaw();
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A hub node that only introduces peers (it is everyone's bootstrap, and holds nothing a
/// test relies on), and `n` peers. Homes live in a temp folder removed when dropped.
pub struct Devnet {
    pub cli: Cli,
    pub hub: Node,
    pub peers: Vec<Node>,
    pub dir: tempfile::TempDir,
}

impl Devnet {
    /// Starts the hub and `n` peers, each with `extra(i)` flags, and waits until every peer
    /// knows every other.
    pub fn start(bin: &Path, n: usize, extra: impl Fn(usize) -> Vec<String>) -> Devnet {
        Devnet::start_with_hub(bin, &[], n, extra)
    }

    /// [`Devnet::start`], with environment variables for every node.
    pub fn start_env(
        bin: &Path,
        n: usize,
        env: &[(&str, &str)],
        extra: impl Fn(usize) -> Vec<String>,
    ) -> Devnet {
        Devnet::start_full(bin, &[], n, env, extra)
    }

    /// [`Devnet::start`], with flags for the hub too.
    pub fn start_with_hub(
        bin: &Path,
        hub: &[&str],
        n: usize,
        extra: impl Fn(usize) -> Vec<String>,
    ) -> Devnet {
        Devnet::start_full(bin, hub, n, &[], extra)
    }

    fn start_full(
        bin: &Path,
        hub: &[&str],
        n: usize,
        env: &[(&str, &str)],
        extra: impl Fn(usize) -> Vec<String>,
    ) -> Devnet {
        let cli = Cli::new(bin);
        let dir =
            tempfile::Builder::new().prefix("jewel-devnet-").tempdir().unwrap_or_else(|e| panic!("{e}"));
        let with_env = |mut b: NodeBuilder| {
            for (k, v) in env {
                b = b.env(k, v);
            }
            b
        };
        let hub = with_env(Node::builder(&cli, &dir.path().join("hub")).args(hub)).start();
        let peers: Vec<Node> = (0..n)
            .map(|i| {
                let flags = extra(i);
                let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
                let b = Node::builder(&cli, &dir.path().join(format!("peer-{i}")))
                    .bootstrap(&hub.addr)
                    .args(&flags);
                with_env(b).start()
            })
            .collect();
        let net = Devnet { cli, hub, peers, dir };
        net.wait_connected();
        net
    }

    /// Waits until every running peer knows every other running peer.
    pub fn wait_connected(&self) {
        let ids: Vec<&str> = self.peers.iter().filter(|p| p.is_running()).map(|p| p.peer.as_str()).collect();
        for p in self.peers.iter().filter(|p| p.is_running()) {
            let others: Vec<&str> = ids.iter().copied().filter(|id| *id != p.peer).collect();
            p.wait_knows(&others);
        }
    }

    /// Peer `i`.
    pub fn peer(&self, i: usize) -> &Node {
        &self.peers[i]
    }

    /// The node (the hub or a peer) with id `peer`.
    pub fn node(&self, peer: &str) -> &Node {
        std::iter::once(&self.hub)
            .chain(&self.peers)
            .find(|n| n.peer == peer)
            .unwrap_or_else(|| panic!("{peer} is not in the devnet"))
    }

    /// The index of the peer with id `peer`.
    pub fn index_of(&self, peer: &str) -> usize {
        self.peers
            .iter()
            .position(|p| p.peer == peer)
            .unwrap_or_else(|| panic!("{peer} is not a devnet peer"))
    }

    /// Starts one more peer, bootstrapping from the hub.
    pub fn add(&mut self, flags: &[&str]) -> usize {
        let i = self.peers.len();
        let node = Node::builder(&self.cli, &self.dir.path().join(format!("peer-{i}")))
            .bootstrap(&self.hub.addr)
            .args(flags)
            .start();
        self.peers.push(node);
        i
    }

    /// A path in the devnet's temp folder.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

/// Two hosts on a local network of their own: network namespaces made here, joined by a
/// veth pair (10.77.0.1 and 10.77.0.2), deleted when dropped.
pub struct Lan {
    pub ns: [String; 2],
}

impl Lan {
    pub fn new() -> Lan {
        let ns = [format!("jewel{}a", std::process::id()), format!("jewel{}b", std::process::id())];
        let ip = |args: &[&str]| {
            let o = Command::new("ip").args(args).output().unwrap_or_else(|e| panic!("iproute2's ip: {e}"));
            assert!(o.status.success(), "ip {args:?}: {}", String::from_utf8_lossy(&o.stderr));
        };
        for n in &ns {
            ip(&["netns", "add", n]);
        }
        let lan = Lan { ns };
        let [a, b] = &lan.ns;
        ip(&["link", "add", "va", "netns", a, "type", "veth", "peer", "name", "vb", "netns", b]);
        for (n, dev, addr) in [(a, "va", "10.77.0.1/24"), (b, "vb", "10.77.0.2/24")] {
            ip(&["-n", n, "addr", "add", addr, "dev", dev]);
            ip(&["-n", n, "link", "set", dev, "up"]);
            ip(&["-n", n, "link", "set", "lo", "up"]);
        }
        lan
    }
}

impl Default for Lan {
    fn default() -> Self {
        Lan::new()
    }
}

impl Drop for Lan {
    fn drop(&mut self) {
        for n in &self.ns {
            let _ = Command::new("ip").args(["netns", "del", n]).status();
        }
    }
}

/// Hosts on networks of their own: `sites` network namespaces made here, each joined by a
/// veth pair to one bridge in a hub namespace, so that every site reaches every other
/// directly. Site `i` has the address `10.78.i.2` (a /24 of its own, on one /16 link).
/// Everything is deleted when dropped (deleting the hub deletes the bridge and the links).
pub struct Sites {
    hub: String,
    pub ns: Vec<String>,
}

impl Sites {
    pub fn new(sites: usize) -> Sites {
        assert!(sites < 250, "at most 249 sites");
        let tag = format!("j{}s", std::process::id());
        let ip = |args: &[&str]| {
            let o = Command::new("ip").args(args).output().unwrap_or_else(|e| panic!("iproute2's ip: {e}"));
            assert!(o.status.success(), "ip {args:?}: {}", String::from_utf8_lossy(&o.stderr));
        };
        let lab = Sites { hub: format!("{tag}hub"), ns: (0..sites).map(|i| format!("{tag}{i}")).collect() };
        ip(&["netns", "add", &lab.hub]);
        ip(&["-n", &lab.hub, "link", "add", "name", "jbr", "type", "bridge"]);
        ip(&["-n", &lab.hub, "link", "set", "jbr", "up"]);
        for (i, n) in lab.ns.iter().enumerate() {
            ip(&["netns", "add", n]);
            let (inner, outer) = ("eth0".to_string(), format!("v{i}"));
            ip(&[
                "link", "add", &inner, "netns", n, "type", "veth", "peer", "name", &outer, "netns", &lab.hub,
            ]);
            ip(&["-n", &lab.hub, "link", "set", &outer, "master", "jbr"]);
            ip(&["-n", &lab.hub, "link", "set", &outer, "up"]);
            ip(&["-n", n, "addr", "add", &format!("{}/16", Sites::addr(i)), "dev", &inner]);
            ip(&["-n", n, "link", "set", &inner, "up"]);
            ip(&["-n", n, "link", "set", "lo", "up"]);
        }
        lab
    }

    /// Site `i`'s address.
    pub fn addr(i: usize) -> String {
        format!("10.78.{i}.2")
    }

    /// `--listen` flags for a node at site `i` (TCP, any port).
    pub fn listen(i: usize) -> [String; 2] {
        ["--listen".to_string(), format!("/ip4/{}/tcp/0", Sites::addr(i))]
    }
}

impl Drop for Sites {
    fn drop(&mut self) {
        for n in self.ns.iter().chain([&self.hub]) {
            let _ = Command::new("ip").args(["netns", "del", n]).status();
        }
    }
}

/// `len` bytes of seeded, incompressible data.
pub fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed ^ 0x9e37_79b9_7f4a_7c15;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Writes `data` to `path` and returns the path as a `&str`-able `String`.
pub fn write_file(path: &Path, data: &[u8]) -> String {
    std::fs::write(path, data).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    path.to_string_lossy().into_owned()
}
