//! The `jewel` command. Parses arguments into validated options, runs one subcommand,
//! and turns any error into one line on stderr and a non-zero exit.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

/// Prints a line to stdout, returning an error (never panicking) if stdout is closed.
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        writeln!(std::io::stdout().lock(), $($arg)*)?
    }};
}

mod bench;
mod bench_net;
mod demo;
mod devnet;
mod menu;
mod remote;
mod size;
mod tree;

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use jewel::codec::SchemeSpec;
use jewel::offline::{decode_dir, encode_file, Output};
use jewel::pipeline::{default_threads, PutOptions};
use jewel::{CipherId, ReadCap};

use crate::size::parse_size;

/// Store your own files on other people's peers: compressed, encrypted, and cut into
/// pieces any sufficient set of which rebuilds the file.
#[derive(Parser, Debug)]
#[command(name = "jewel", version, about, propagate_version = true)]
struct Cli {
    /// The node's folder, for put/get/check/peers/dir/rm (and `node`).
    #[arg(long, global = true, env = "JEWEL_HOME")]
    home: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Store a sample file with every scheme on simulated peers, take the peers away one by
    /// one, and show which schemes still return the file.
    Demo {
        /// Size of the sample file (e.g. 16MiB).
        #[arg(long, default_value = "16MiB", value_parser = parse_size)]
        size: u64,
        /// Seed for the order in which peers go offline.
        #[arg(long, default_value_t = 7)]
        seed: u64,
    },
    /// For a per-peer uptime, compare every scheme family's availability, redundancy D and
    /// minimum peers M, and find the cheapest parameters that meet a target.
    Plan {
        /// Probability that any one peer is online (0..1).
        #[arg(long)]
        uptime: f64,
        /// Availability the file must reach (0..1), e.g. 0.999999.
        #[arg(long)]
        target: f64,
        /// Most peers one file may use.
        #[arg(long, default_value_t = 16)]
        max_peers: usize,
        /// Also show the figures of these specs.
        #[arg(long = "scheme", value_name = "SPEC")]
        schemes: Vec<String>,
        #[arg(long)]
        json: bool,
    },
    /// Encode a file into one folder per peer slot (DIR/peer-0, …) and print its read cap.
    Encode {
        file: PathBuf,
        /// hosting | replicate:N | shard:KxC[@P] | parity:K | jewels:K/N | nested:OUTER+INNER
        #[arg(long)]
        scheme: String,
        /// Output folder; must not exist yet (or be empty).
        #[arg(long)]
        out: PathBuf,
        #[command(flatten)]
        put: PutArgs,
        #[arg(long)]
        json: bool,
    },
    /// Rebuild a file from whichever peer folders remain.
    Decode {
        /// The read cap printed by `jewel encode`.
        cap: String,
        /// The folder `jewel encode` wrote.
        #[arg(long)]
        from: PathBuf,
        /// Output file, or `-` for stdout.
        #[arg(short = 'o', long = "output")]
        output: PathBuf,
        #[arg(long, default_value_t = default_threads())]
        threads: usize,
        #[arg(long)]
        json: bool,
    },
    /// Run a peer: a block store on the libp2p network, with a local control API.
    Node {
        /// Address to listen on (repeatable) [default: all interfaces, TCP and QUIC, on
        /// port 4001, or a free port kept for this node if 4001 is taken].
        #[arg(long)]
        listen: Vec<String>,
        /// A peer to join the network through, with its /p2p/ id (repeatable). Not needed
        /// after the first start: the node dials the peers it knew.
        #[arg(long)]
        bootstrap: Vec<String>,
        /// An invite (from `jewel invite` on a node of the network) to join through
        /// (repeatable).
        #[arg(long)]
        join: Vec<String>,
        /// Dial no peer at start, not even those known from the last run (to work
        /// offline; peers can still connect to it).
        #[arg(long)]
        alone: bool,
        /// The control API's address; loopback only.
        #[arg(long, default_value = "127.0.0.1:0")]
        api: std::net::SocketAddr,
        /// Most bytes this peer stores for others.
        #[arg(long, value_parser = parse_size)]
        capacity: Option<u64>,
        /// Most bytes any one peer may store here [default: a quarter of the capacity].
        #[arg(long, value_parser = parse_size)]
        peer_quota: Option<u64>,
        /// Most bytes all new peers (first seen here less than 7 days ago) may store here
        /// together [default: half of the capacity].
        #[arg(long, value_parser = parse_size)]
        newcomer_quota: Option<u64>,
        /// A failure domain to announce, so files spread over zones.
        #[arg(long)]
        zone: Option<String>,
        /// Find peers on the local network with mDNS.
        #[arg(long)]
        mdns: bool,
        /// Relay connections for peers behind NATs (they listen on
        /// `THIS-ADDR/p2p/THIS-PEER/p2p-circuit`).
        #[arg(long)]
        relay_server: bool,
        /// Relayed connections at once, at most (with --relay-server).
        #[arg(long, default_value_t = jewel_net::swarm::RelayLimits::default().circuits)]
        relay_circuits: usize,
        /// Bytes one relayed connection may carry, at most (with --relay-server).
        #[arg(long, value_parser = parse_size, default_value = "64MiB")]
        relay_circuit_bytes: u64,
        /// Seconds one relayed connection may last, at most (with --relay-server).
        #[arg(long, default_value_t = 600)]
        relay_circuit_secs: u64,
        /// Bytes per second one relayed connection may carry, both ways together, at most
        /// (with --relay-server; 0: no limit).
        #[arg(long, value_parser = parse_size, default_value = "1MiB")]
        relay_circuit_rate: u64,
        /// Most bytes per second to serve to peers (e.g. 20MiB); unlimited if not given.
        #[arg(long, value_parser = parse_size)]
        max_upload: Option<u64>,
        /// Seconds between audits of the files this node put (each may trigger a repair).
        #[arg(long, default_value_t = 600)]
        audit_every: u64,
        /// Repair a file once fewer than k + R pieces are alive; default (n-k)/2.
        #[arg(long, value_name = "R")]
        repair_margin: Option<usize>,
        /// Seconds the leases on this node's files run (renewed at every audit); holders
        /// delete pieces whose leases ran out.
        #[arg(long, default_value_t = 30 * 24 * 3600)]
        lease_secs: u64,
        /// Most bytes per second the scrubber re-verifies stored blocks at (e.g. 16MiB).
        #[arg(long, value_parser = parse_size, default_value = "16MiB")]
        scrub_rate: u64,
        /// Seconds between the scrubber's passes over the whole store.
        #[arg(long, default_value_t = 24 * 3600)]
        scrub_every: u64,
    },
    /// Store a file on the network through the node, under a path of your index; prints
    /// its read cap.
    Put {
        /// A regular file, a folder with -r, or `-` for standard input (streamed through
        /// the node; a pipe is spooled to a temporary file first, unless --size states its
        /// length).
        file: PathBuf,
        #[arg(long)]
        scheme: Option<String>,
        /// The path in your index [default: the file's (or folder's) name at the root].
        #[arg(long = "as", value_name = "PATH")]
        at: Option<String>,
        /// Store a whole folder (files in parallel; unchanged files are skipped).
        #[arg(short = 'r', long)]
        recursive: bool,
        /// Refuse if a file is already at the path (else it is replaced, and the previous
        /// version kept).
        #[arg(long)]
        no_clobber: bool,
        /// With -r: leave out what matches PATTERN (gitignore syntax, from the folder put;
        /// repeatable). A `.jewelignore` file in the tree does the same for its folder.
        #[arg(long, value_name = "PATTERN")]
        exclude: Vec<String>,
        /// With -r: list what would be stored, and store nothing.
        #[arg(long)]
        dry_run: bool,
        /// With `-`: the path to record the file under (as --as).
        #[arg(long)]
        name: Option<String>,
        /// With `-`: how many bytes standard input holds (a pipe then streams as it comes;
        /// more or fewer bytes fail the put).
        #[arg(long, value_parser = parse_size)]
        size: Option<u64>,
        /// Plaintext bytes per segment [default: 4MiB]: any read fetches whole segments, so
        /// smaller ones make seeks in a video cheaper, larger ones whole reads.
        #[arg(long, value_parser = parse_size)]
        segment_size: Option<u64>,
        #[arg(long)]
        json: bool,
    },
    /// Fetch a file by its path in your index or its read cap (a folder with -r).
    #[command(disable_version_flag = true)]
    Get {
        #[command(flatten)]
        cap: CapArg,
        /// A folder (a path, or a shared folder's cap) into the output folder.
        #[arg(short = 'r', long)]
        recursive: bool,
        /// Version N of the path (1 is the newest; `jewel ls --versions PATH` lists them).
        #[arg(long, value_name = "N")]
        version: Option<usize>,
        /// The path as it was at TIME (Unix seconds, or YYYY-MM-DD[ HH:MM[:SS]] in UTC); with
        /// -r, the whole folder as it was then.
        #[arg(long, value_name = "TIME")]
        at: Option<String>,
        /// Output file, or `-` for stdout. An interrupted get into a file resumes when run
        /// again.
        #[arg(short = 'o', long = "output")]
        output: PathBuf,
        /// Only bytes START-END of the file (END inclusive; `START-` to the end).
        #[arg(long)]
        range: Option<String>,
        /// Print what the get did (bytes read from each piece, faults) as JSON on stdout.
        #[arg(long)]
        json: bool,
        /// Replace the output file if it exists (never a folder or a link).
        #[arg(long)]
        force: bool,
    },
    /// Show each piece of a file with its holder and state, and whether it is recoverable.
    Check {
        #[command(flatten)]
        cap: CapArg,
        /// Fetch and verify every byte of every piece (a plain check proves one random
        /// chunk group of each).
        #[arg(long)]
        verify: bool,
        #[arg(long)]
        json: bool,
    },
    /// The node's addresses, its store, and its background workers (GC, lease renewal,
    /// audit, repair): each one's state, last run and what it found.
    Status {
        #[arg(long)]
        json: bool,
    },
    /// The peers this node knows: how each is reached, and its round-trip time.
    Peers {
        #[arg(long)]
        json: bool,
    },
    /// Print this node's invite: one line that another node joins the network through
    /// (`jewel join INVITE`, or `jewel node --join INVITE`).
    Invite {
        #[arg(long)]
        json: bool,
    },
    /// Join the network of the node an invite names (this node must be running).
    Join {
        /// The line `jewel invite` printed.
        invite: String,
    },
    /// What this node stores, and the files it put.
    Dir {
        #[arg(long)]
        json: bool,
    },
    /// Remove a path from your index (a folder with -r), or release a file by its cap.
    Rm {
        #[command(flatten)]
        cap: CapArg,
        #[arg(short = 'r', long)]
        recursive: bool,
        /// Free the removed versions at once (else they are kept 30 days: `jewel undelete`).
        #[arg(long)]
        purge: bool,
    },
    /// Put a removed file back (its newest version), within 30 days of its removal.
    Undelete { path: String },
    /// List your index: a folder's children (every file under it with -r), a file, or a
    /// cap (a shared folder's).
    Ls {
        /// A path of your index (the root if absent), a cap, or `-` to read a cap from
        /// standard input.
        path: Option<String>,
        /// Read the cap from this file (its first line).
        #[arg(long, value_name = "FILE", conflicts_with = "path")]
        cap_file: Option<PathBuf>,
        #[arg(short = 'r', long)]
        recursive: bool,
        /// Every version the file has had, newest first.
        #[arg(long)]
        versions: bool,
        /// Your index as it was at TIME (Unix seconds, or YYYY-MM-DD[ HH:MM[:SS]] in UTC).
        #[arg(long, value_name = "TIME")]
        at: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Every change made at a path of your index (puts and removes, when, by which device).
    Log {
        path: String,
        #[arg(long)]
        json: bool,
    },
    /// Move a file or a folder in your index.
    Mv { from: String, to: String },
    /// Print a path's read cap; a folder's reads the whole folder.
    Share { path: String },
    /// Names under your own key that anyone you give one to can resolve (IPNS's use).
    Name {
        #[command(subcommand)]
        command: NameCommand,
    },
    /// Serve your files to other programs over HTTP, until Ctrl-C; prints the URL first.
    Serve {
        #[command(subcommand)]
        command: ServeCommand,
    },
    /// Rebuild the lost or damaged pieces of a file onto new peers (same ids, same cap).
    Repair {
        #[command(flatten)]
        cap: CapArg,
        #[arg(long)]
        json: bool,
    },
    /// An interactive menu over the node: dir, store, delete, get, default scheme, help.
    Menu,
    /// A local network of node processes on 127.0.0.1, for trying things out.
    Devnet {
        #[command(subcommand)]
        command: DevnetCommand,
    },
    /// Your user identity: one 24-word recovery phrase that every key of yours derives from
    /// (`init` makes one, `show` prints its public id, `recover` takes it on another node).
    Id {
        #[command(subcommand)]
        command: IdCommand,
    },
    /// Measure the whole put/get pipeline (compress test, encrypt, encode, hash) in memory
    /// and on disk; `jewel bench net` measures a network of node processes.
    #[command(args_conflicts_with_subcommands = true)]
    Bench {
        #[command(subcommand)]
        target: Option<BenchCommand>,
        /// Bytes of random data to push through.
        #[arg(long, default_value = "256MiB", value_parser = parse_size)]
        size: u64,
        #[arg(long, default_value = "jewels:10/16")]
        scheme: String,
        /// Skip the on-disk runs.
        #[arg(long)]
        memory_only: bool,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand, Debug)]
enum BenchCommand {
    /// Start-up, idle cost, put/get throughput, client memory and small-file latency on a
    /// devnet of node processes on 127.0.0.1.
    Net {
        /// Bytes of random data to put and get.
        #[arg(long, default_value = "1GiB", value_parser = parse_size)]
        size: u64,
        /// Holders in the devnet (the owner node comes on top).
        #[arg(long, default_value_t = 16)]
        peers: usize,
        #[arg(long, default_value = "jewels:10/16")]
        scheme: String,
        /// Seconds of the idle-CPU window.
        #[arg(long, default_value_t = 10)]
        idle_secs: u64,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand, Debug)]
enum ServeCommand {
    /// A gateway for browsers and media players: `/jewel/CAP[/NAME]` (the cap is the
    /// capability) and `/files/PATH` (your index, with the token in the printed URL), with
    /// ranges, so a video seeks.
    Gateway {
        /// HOST:PORT to listen on (port 0: a free one).
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: String,
        /// Allow listening on an address other machines reach.
        #[arg(long)]
        public: bool,
    },
    /// restic's REST backend over your index, one folder per repository:
    /// `restic -r rest:URL/NAME/ init` (URL as printed, with its token).
    Restic {
        /// HOST:PORT to listen on (port 0: a free one).
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: String,
        /// Allow listening on an address other machines reach.
        #[arg(long)]
        public: bool,
        /// The scheme restic's objects are stored with (the node's default if absent).
        #[arg(long)]
        scheme: Option<String>,
    },
}

#[derive(Subcommand, Debug)]
enum NameCommand {
    /// Publish a cap (or a path's cap) under your key and LABEL; prints the name.
    Publish {
        /// A cap, a path of your index, or `-` to read a cap from standard input.
        #[command(flatten)]
        target: CapArg,
        #[arg(long, default_value = "default")]
        label: String,
    },
    /// Print the cap a name (`jewel:n1:…`) names now.
    Resolve { name: String },
}

#[derive(Subcommand, Debug)]
enum IdCommand {
    /// Make a user identity from a new recovery phrase, printed once: write it down.
    Init {
        #[arg(long)]
        json: bool,
    },
    /// Print the public id of the user this node holds.
    Show {
        #[arg(long)]
        json: bool,
    },
    /// Take on your identity on this node: the phrase is read from standard input.
    Recover {
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand, Debug)]
enum DevnetCommand {
    /// Start N peers (peer 0 first, the others bootstrapping from it) and wait until each
    /// knows all the others.
    Up {
        #[arg(long, default_value_t = 6)]
        peers: usize,
        #[arg(long, default_value = "./live")]
        dir: PathBuf,
    },
    /// Which peers are running.
    Status {
        #[arg(long, default_value = "./live")]
        dir: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Stop every peer.
    Down {
        #[arg(long, default_value = "./live")]
        dir: PathBuf,
    },
    /// Take peer I offline abruptly (SIGKILL).
    Kill {
        index: usize,
        #[arg(long, default_value = "./live")]
        dir: PathBuf,
    },
    /// Bring peer I back, with its identity and store.
    Start {
        index: usize,
        #[arg(long, default_value = "./live")]
        dir: PathBuf,
    },
}

/// A cap, given so that other users of the machine cannot read it: from a file
/// (`--cap-file`) or standard input (`-`). A cap on the command line works too, but shows
/// in `ps` while the command runs.
#[derive(clap::Args, Debug)]
#[group(required = true, multiple = false)]
struct CapArg {
    /// A path of your index, a cap (`jewel:r1:…` or `jewel:v1:…`), or `-` to read a cap
    /// from standard input.
    cap: Option<String>,
    /// Read the cap from this file (its first line).
    #[arg(long, value_name = "FILE")]
    cap_file: Option<PathBuf>,
}

impl CapArg {
    /// The cap's text, read from wherever it was given.
    fn read(&self) -> Result<String> {
        let text = match (&self.cap, &self.cap_file) {
            (_, Some(path)) => std::fs::read_to_string(path)
                .with_context(|| format!("cannot read the cap file {}", path.display()))?,
            (Some(c), None) if c == "-" => {
                let mut line = String::new();
                std::io::stdin().read_line(&mut line).context("cannot read the cap from standard input")?;
                line
            }
            // An argument is taken whole (a path with a control character is then refused by
            // name, not cut at its first line).
            (Some(c), None) if !c.trim().is_empty() => return Ok(c.trim().to_string()),
            (Some(_), None) => String::new(),
            (None, None) => {
                anyhow::bail!("give a cap, `-` to read it from standard input, or --cap-file FILE")
            }
        };
        let cap = text.lines().next().unwrap_or_default().trim().to_string();
        if cap.is_empty() {
            anyhow::bail!("no cap was given (the input was empty)");
        }
        Ok(cap)
    }
}

#[derive(clap::Args, Debug)]
struct PutArgs {
    /// Plaintext bytes per segment.
    #[arg(long, default_value = "4MiB", value_parser = parse_size)]
    segment_size: u64,
    /// aes (AES-256-GCM) or xchacha (XChaCha20-Poly1305); default: aes where the CPU has AES
    /// instructions.
    #[arg(long)]
    cipher: Option<String>,
    /// Never try zstd.
    #[arg(long)]
    no_compress: bool,
    #[arg(long, default_value_t = default_threads())]
    threads: usize,
}

impl PutArgs {
    fn options(&self, scheme: SchemeSpec) -> Result<PutOptions> {
        let mut opts = PutOptions::new(scheme);
        opts.segment_size = u32::try_from(self.segment_size).context("segment size is too large")?;
        if let Some(c) = &self.cipher {
            opts.cipher = CipherId::parse(c)?;
        }
        opts.compress = !self.no_compress;
        opts.threads = self.threads.clamp(1, 64);
        Ok(opts)
    }
}

fn main() -> ExitCode {
    let mut filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("error"));
    // The HTTP client dumps whole requests (the API token with them) at debug and trace
    // levels: no secret in a log, at any level.
    for quiet in ["ureq=info", "ureq_proto=info"] {
        if let Ok(d) = quiet.parse() {
            filter = filter.add_directive(d);
        }
    }
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            let line = format!("{e:#}").replace('\n', " ");
            eprintln!("error: {line}");
            ExitCode::FAILURE
        }
    }
}

/// A reader that closed our stdout (`jewel … | head`) is not an error worth a line.
fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

fn parse_spec(text: &str) -> Result<SchemeSpec> {
    SchemeSpec::parse(text).with_context(|| format!("bad --scheme `{text}`"))
}

fn run(cli: Cli) -> Result<()> {
    let home = cli.home.as_deref();
    match cli.command {
        Command::Node {
            listen,
            bootstrap,
            join,
            alone,
            api,
            capacity,
            peer_quota,
            newcomer_quota,
            zone,
            mdns,
            relay_server,
            relay_circuits,
            relay_circuit_bytes,
            relay_circuit_secs,
            relay_circuit_rate,
            max_upload,
            audit_every,
            repair_margin,
            lease_secs,
            scrub_rate,
            scrub_every,
        } => {
            let Some(home) = cli.home.clone() else {
                anyhow::bail!(
                    "`jewel node` needs --home DIR (or JEWEL_HOME): where its identity and store live"
                );
            };
            let parse = |a: &String| a.parse().with_context(|| format!("`{a}` is not a multiaddr"));
            let mut bootstrap: Vec<jewel_net::Multiaddr> =
                bootstrap.iter().map(parse).collect::<Result<_>>()?;
            for j in &join {
                let invite = jewel_net::invite::Invite::decode(j)?;
                bootstrap.extend(invite.dial_addrs());
            }
            let config = jewel_node::NodeConfig {
                home,
                listen: listen.iter().map(parse).collect::<Result<_>>()?,
                bootstrap,
                alone,
                api,
                capacity,
                quota: jewel_net::block::Quota { per_peer: peer_quota, newcomers: newcomer_quota },
                zone,
                mdns,
                relay_server,
                relay_limits: jewel_net::swarm::RelayLimits {
                    circuits: relay_circuits,
                    circuit_bytes: relay_circuit_bytes,
                    circuit_duration: std::time::Duration::from_secs(relay_circuit_secs.max(1)),
                    circuit_rate: relay_circuit_rate,
                    ..Default::default()
                },
                max_upload,
                audit_every: std::time::Duration::from_secs(audit_every.max(1)),
                repair_margin,
                lease: std::time::Duration::from_secs(lease_secs.max(1)),
                scrub_rate,
                scrub_every: std::time::Duration::from_secs(scrub_every.max(1)),
            };
            let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
            let ran = rt.block_on(jewel_node::run(config, |info| {
                // The node's readiness lines; a closed stdout must not stop the node.
                let mut out = std::io::stdout().lock();
                let _ = writeln!(out, "peer id: {}", info.peer_id);
                for a in &info.listen {
                    let _ = writeln!(out, "listening on {a}/p2p/{}", info.peer_id);
                }
                let _ = writeln!(out, "api: {}", info.api);
                let _ = out.flush();
            }));
            // A pipeline still running on a blocking thread is not waited for.
            rt.shutdown_timeout(std::time::Duration::from_secs(1));
            ran?;
            Ok(())
        }
        Command::Put { file, segment_size: Some(_), .. } if file.as_os_str() == "-" => {
            anyhow::bail!("--segment-size is for a file, not standard input")
        }
        Command::Put { file, scheme, name, at, size, no_clobber, json, .. } if file.as_os_str() == "-" => {
            let name = name.or(at);
            remote::put_stdin(home, scheme.as_deref(), name.as_deref(), size, no_clobber, json)
        }
        Command::Put { name: Some(_), .. } | Command::Put { size: Some(_), .. } => {
            anyhow::bail!("--name and --size are for `jewel put -` (standard input) only")
        }
        Command::Put { recursive: true, segment_size: Some(_), .. } => {
            anyhow::bail!("--segment-size is for one file: `put -r` packs small files and stores the rest with 4 MiB segments")
        }
        Command::Put { recursive: false, exclude, dry_run, .. } if !exclude.is_empty() || dry_run => {
            anyhow::bail!("--exclude and --dry-run are for `jewel put -r FOLDER`")
        }
        Command::Put { file, scheme, at, recursive: true, no_clobber, json, exclude, dry_run, .. } => {
            let how = tree::TreePut { at, scheme, no_clobber, json, exclude, dry_run };
            tree::put_tree(home, &file, &how)
        }
        Command::Put { file, scheme, at, no_clobber, json, segment_size, .. } => {
            let segment_size =
                segment_size.map(u32::try_from).transpose().context("--segment-size is too large")?;
            remote::put(home, &file, scheme.as_deref(), at.as_deref(), no_clobber, segment_size, json)
        }
        Command::Get { output, recursive: true, .. } if output.as_os_str() == "-" => {
            anyhow::bail!("a folder cannot go to standard output: give -o DIR")
        }
        Command::Get { cap, recursive: true, output, force, json, at, .. } => {
            let at = at.as_deref().map(tree::parse_time).transpose()?;
            tree::get_tree(home, &cap.read()?, &output, force, json, at)
        }
        Command::Get { cap, output, range, json, force, version, at, .. } => {
            let at = at.as_deref().map(tree::parse_time).transpose()?;
            let target = cap.read()?;
            if target.starts_with("jewel:n1:") {
                anyhow::bail!(
                    "`{target}` is a name, not a cap: `jewel name resolve NAME` gives the cap it names now"
                );
            }
            let range = range.as_deref().map(remote::parse_range).transpose()?;
            if json && output.as_os_str() == "-" {
                anyhow::bail!("--json prints to stdout, so the file cannot go there too: pass -o FILE");
            }
            let cap = tree::resolve_at(home, &target, version, at)?;
            remote::get(home, remote::GetArgs { cap: &cap, out: &output, range, json, force })
        }
        Command::Log { path, json } => tree::log(home, &path, json),
        Command::Ls { path, cap_file, recursive, versions, at, json } => {
            let at = at.as_deref().map(tree::parse_time).transpose()?;
            let target = match (path, cap_file) {
                (None, None) => String::new(),
                (Some(p), None) if p.trim().is_empty() => String::new(),
                (cap, cap_file) => CapArg { cap, cap_file }.read()?,
            };
            tree::ls(home, &target, recursive, versions, at, json)
        }
        Command::Mv { from, to } => tree::mv(home, &from, &to),
        Command::Share { path } => tree::share(home, &path),
        Command::Serve { command: ServeCommand::Gateway { listen, public } } => {
            let req = jewel_node::api::ServeRequest { listen: Some(listen), public, scheme: None };
            remote::serve(home, jewel_node::api::SERVE_GATEWAY_PATH, &req)
        }
        Command::Serve { command: ServeCommand::Restic { listen, public, scheme } } => {
            let req = jewel_node::api::ServeRequest { listen: Some(listen), public, scheme };
            remote::serve(home, jewel_node::api::SERVE_RESTIC_PATH, &req)
        }
        Command::Name { command } => match command {
            NameCommand::Publish { target, label } => {
                let cap = tree::resolve(home, &target.read()?, None)?;
                tree::name_publish(home, &cap, &label)
            }
            NameCommand::Resolve { name } => tree::name_resolve(home, &name),
        },
        Command::Check { cap, verify, json } => {
            remote::check(home, &tree::resolve(home, &cap.read()?, None)?, verify, json)
        }
        Command::Status { json } => remote::status(home, json),
        Command::Peers { json } => remote::peers(home, json),
        Command::Invite { json } => remote::invite(home, json),
        Command::Join { invite } => remote::join(home, &invite),
        Command::Dir { json } => remote::dir(home, json),
        Command::Rm { cap, recursive, purge } => {
            let target = cap.read()?;
            if tree::is_cap(&target) {
                remote::rm(home, &target)
            } else {
                tree::rm(home, &target, recursive, purge)
            }
        }
        Command::Undelete { path } => tree::undelete(home, &path),
        Command::Repair { cap, json } => {
            remote::repair(home, &tree::resolve(home, &cap.read()?, None)?, json)
        }
        Command::Menu => menu::run(home),
        Command::Id { command } => match command {
            IdCommand::Init { json } => remote::id_init(home, json),
            IdCommand::Show { json } => remote::id_show(home, json),
            IdCommand::Recover { json } => remote::id_recover(home, json),
        },
        Command::Devnet { command } => match command {
            DevnetCommand::Up { peers, dir } => devnet::up(&dir, peers),
            DevnetCommand::Status { dir, json } => devnet::status(&dir, json),
            DevnetCommand::Down { dir } => devnet::down(&dir),
            DevnetCommand::Kill { index, dir } => devnet::kill(&dir, index),
            DevnetCommand::Start { index, dir } => devnet::start(&dir, index),
        },
        Command::Demo { size, seed } => demo::run(size, seed),
        Command::Plan { uptime, target, max_peers, schemes, json } => {
            plan(uptime, target, max_peers, &schemes, json)
        }
        Command::Encode { file, scheme, out, put, json } => {
            let opts = put.options(parse_spec(&scheme)?)?;
            let report = encode_file(&file, &opts, &out)?;
            let s = &report.stats;
            if json {
                let v = serde_json::json!({
                    "cap": report.cap.to_string(),
                    "verify_cap": report.cap.verify_cap().to_string(),
                    "scheme": report.manifest.scheme.to_string(),
                    "out": out,
                    "stats": s,
                });
                outln!("{v}");
            } else {
                outln!("{}", report.cap);
                eprintln!(
                    "encoded {} bytes into {} pieces in {} ({} stored, {:.2}x; {}/{} segments compressed) in {:.2}s",
                    s.file_bytes,
                    report.manifest.pieces.len(),
                    out.display(),
                    s.stored_bytes,
                    s.stored_bytes as f64 / (s.file_bytes.max(1)) as f64,
                    s.compressed_segments,
                    s.segments,
                    s.elapsed.as_secs_f64()
                );
            }
            Ok(())
        }
        Command::Decode { cap, from, output, threads, json } => {
            let cap: ReadCap = cap.parse().context("bad cap")?;
            let target =
                if output.as_os_str() == "-" { Output::Stdout } else { Output::Path(output.clone()) };
            let stats = decode_dir(&cap, &from, &target, threads.clamp(1, 64))?;
            if json {
                outln!("{}", serde_json::to_string(&stats)?);
            } else {
                for f in &stats.faults {
                    eprintln!("skipped piece {}: {}", f.slot, f.reason);
                }
                eprintln!(
                    "decoded {} bytes to {} in {:.2}s",
                    stats.file_bytes,
                    output.display(),
                    stats.elapsed.as_secs_f64()
                );
            }
            Ok(())
        }
        Command::Bench {
            target: Some(BenchCommand::Net { size, peers, scheme, idle_secs, json }), ..
        } => bench_net::run(&bench_net::NetBench {
            size,
            peers,
            scheme: parse_spec(&scheme)?,
            idle: std::time::Duration::from_secs(idle_secs),
            json,
        }),
        Command::Bench { target: None, size, scheme, memory_only, json } => {
            bench::run(size, &parse_spec(&scheme)?, memory_only, json)
        }
    }
}

fn plan(uptime: f64, target: f64, max_peers: usize, schemes: &[String], json: bool) -> Result<()> {
    let plans = jewel::codec::plan(uptime, target, max_peers)?;
    let extra = schemes
        .iter()
        .map(|s| Ok(jewel::codec::figures(&parse_spec(s)?, uptime)?))
        .collect::<Result<Vec<_>>>()?;
    if json {
        let v = serde_json::json!({ "uptime": uptime, "target": target, "max_peers": max_peers, "plans": plans, "schemes": extra });
        outln!("{v}");
        return Ok(());
    }
    let mut out = std::io::stdout().lock();
    writeln!(out, "per-peer uptime {uptime}, target availability {target}, at most {max_peers} peers")?;
    writeln!(out)?;
    let header = format!(
        "{:<10} {:<28} {:>4} {:>6} {:>4} {:>9} {:>14} {:>6}  {}",
        "family", "cheapest spec", "N", "D", "M", "tolerates", "availability", "nines", "method"
    );
    writeln!(out, "{header}")?;
    for p in &plans {
        match &p.best {
            Some(f) => writeln!(out, "{:<10} {}", p.family, row(f))?,
            None => {
                writeln!(out, "{:<10} {:<28} (searched {})", p.family, "none meets the target", p.searched)?
            }
        }
    }
    if !extra.is_empty() {
        writeln!(out)?;
        for f in &extra {
            writeln!(out, "{:<10} {}", "asked", row(f))?;
        }
    }
    writeln!(out)?;
    writeln!(out, "N: peers used. D: bytes stored / file bytes. M: fewest peers that can be enough.")?;
    writeln!(out, "tolerates: peers that may be lost, whichever they are.")?;
    Ok(())
}

fn row(f: &jewel::codec::Figures) -> String {
    format!(
        "{:<28} {:>4} {:>6.3} {:>4} {:>9} {:>14.10} {:>6.2}  {}",
        f.spec,
        f.peers,
        f.redundancy,
        f.min_peers,
        f.tolerates,
        f.availability,
        f.nines,
        serde_json::to_value(f.method).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default()
    )
}
