//! `jewel demo`: every scheme side by side on a real local network.
//!
//! Starts 10 libp2p peers on 127.0.0.1 (each with an on-disk block store) and a client
//! node, stores an embedded sample file with every scheme (slot i on peer i), then takes
//! peers offline one at a time (in a seeded random order) and tries to read every file
//! back after each loss.
//! Prints, per scheme, N, D, M, how many of its peers were offline the last time its
//! file came back whole, and its put and get speed. Everything lives in a temp folder
//! that is removed at the end.

use std::io::Write;
use std::time::Instant;

use anyhow::{Context, Result};
use jewel::codec::{build, SchemeSpec, SplitMix64};
use std::path::Path;
use std::sync::Arc;

use jewel::pipeline::PutOptions;
use jewel::{BlockStore, FsStore, Manifest, ReadCap};
use jewel_net::{Keypair, MultiaddrProtocol, NetConfig, Network, PeerId};
use jewel_node::client;

/// The schemes the demo compares (each fits on the demo's 10 peers).
pub const DEMO_SCHEMES: &[&str] = &[
    "hosting",
    "replicate:3",
    "shard:3x2",
    "parity:4",
    "jewels:4/8",
    "jewels:6/10",
    "nested:jewels:2/3+parity:2",
];

/// A deterministic sample: alternating runs of English-like text and random bytes, so
/// that compression helps on some segments and is skipped on others.
pub fn sample(len: usize) -> Vec<u8> {
    const WORDS: &[&str] = &[
        "jewel",
        "peer",
        "shard",
        "parity",
        "segment",
        "the",
        "of",
        "stores",
        "your",
        "files",
        "and",
        "any",
        "k",
        "rebuild",
        "network",
        "offline",
        "private",
        "encrypted",
    ];
    let mut rng = SplitMix64(0x6a65_7765_6c21);
    let mut out = Vec::with_capacity(len);
    let mut text_run = true;
    while out.len() < len {
        let run = (256 << 10).min(len - out.len());
        let end = out.len() + run;
        if text_run {
            while out.len() < end {
                let w = WORDS[(rng.next_u64() % WORDS.len() as u64) as usize];
                out.extend_from_slice(w.as_bytes());
                out.push(b' ');
            }
            out.truncate(end);
        } else {
            while out.len() < end {
                out.extend_from_slice(&rng.next_u64().to_le_bytes());
            }
            out.truncate(end);
        }
        text_run = !text_run;
    }
    out
}

/// A writer that only hashes, so a get can be checked without keeping the output.
pub struct HashWriter(pub blake3::Hasher);

impl Write for HashWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

struct Entry {
    spec: SchemeSpec,
    manifest: Manifest,
    cap: ReadCap,
    /// The demo peer (index) holding each slot.
    holders: Vec<usize>,
    put_mbps: f64,
    get_mbps: f64,
    /// Its peers offline at the last successful read.
    lost_at_last_read: usize,
    readable: bool,
}

fn mbps(bytes: u64, secs: f64) -> f64 {
    bytes as f64 / secs.max(1e-9) / 1e6
}

struct Demo {
    rt: tokio::runtime::Runtime,
    client: Network,
    peers: Vec<Option<Network>>,
    ids: Vec<PeerId>,
}

impl Demo {
    fn read_back(&self, entry: &Entry, expect: &blake3::Hash) -> Result<bool> {
        let holders: Vec<Option<PeerId>> =
            entry.holders.iter().map(|i| self.peers[*i].as_ref().map(|_| self.ids[*i])).collect();
        let sink = HashWriter(blake3::Hasher::new());
        let got = self.rt.block_on(client::get_file(
            self.client.blocks(),
            &entry.manifest,
            &entry.cap.key,
            &holders,
            jewel::pipeline::ByteRange::ALL,
            sink,
            client::GET_THREADS,
        ));
        match got {
            Ok((_, sink)) => Ok(sink.0.finalize() == *expect),
            Err(client::ClientError::Pipeline(jewel::PipelineError::Codec(
                jewel::codec::CodecError::NotEnoughPieces { .. },
            ))) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }
}

/// Starts `n` peers with on-disk stores under `dir`, plus the demo's own client node.
fn start_network(dir: &Path, n: usize) -> Result<Demo> {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let (client, peers) = rt.block_on(async {
        let store = |name: String| -> Result<Arc<dyn BlockStore>> {
            Ok(Arc::new(FsStore::open(dir.join(name), None)?))
        };
        let client =
            Network::start(Keypair::generate_ed25519(), NetConfig::default(), store("client".into())?)
                .await?;
        let boot = client.handle().listeners().await?.first().cloned().context("no listen address")?;
        let boot = boot.with(MultiaddrProtocol::P2p(client.handle().peer_id()));
        let mut peers = Vec::with_capacity(n);
        for i in 0..n {
            let config = NetConfig { bootstrap: vec![boot.clone()], ..NetConfig::default() };
            peers.push(Some(
                Network::start(Keypair::generate_ed25519(), config, store(format!("peer-{i:02}"))?).await?,
            ));
        }
        Ok::<_, anyhow::Error>((client, peers))
    })?;
    let ids = peers.iter().flatten().map(|p| p.handle().peer_id()).collect();
    Ok(Demo { rt, client, peers, ids })
}

/// The peers a demo uses: enough for the widest scheme below.
pub const DEMO_PEERS: usize = 10;

pub fn run(size: u64, seed: u64) -> Result<()> {
    let dir =
        tempfile::Builder::new().prefix("jewel-demo-").tempdir().context("cannot create a temp folder")?;
    let size = usize::try_from(size).context("sample size too large")?;
    let data = sample(size);
    let expect = blake3::hash(&data);
    let specs: Vec<SchemeSpec> =
        DEMO_SCHEMES.iter().map(|s| SchemeSpec::parse(s)).collect::<Result<_, _>>()?;
    let peers = DEMO_PEERS;
    eprintln!(
        "jewel demo: a {} KiB sample, {} schemes, {} libp2p peers on 127.0.0.1 (stores in {})",
        size >> 10,
        specs.len(),
        peers,
        dir.path().display()
    );
    let mut demo = start_network(dir.path(), peers)?;

    let mut entries = Vec::new();
    for spec in specs {
        let slots = build(&spec)?.slots();
        let holders: Vec<usize> = (0..slots).collect();
        let peer_ids: Vec<PeerId> = holders.iter().map(|i| demo.ids[*i]).collect();
        let mut opts = PutOptions::new(spec.clone());
        opts.segment_size = 1 << 20;
        let t = Instant::now();
        let input = Box::new(std::io::Cursor::new(data.clone()));
        let placed = demo.rt.block_on(client::put_file(
            demo.client.blocks(),
            input,
            data.len() as u64,
            &opts,
            &peer_ids,
        ))?;
        let put_mbps = mbps(size as u64, t.elapsed().as_secs_f64());
        let mut entry = Entry {
            spec,
            manifest: placed.put.manifest,
            cap: placed.put.cap,
            holders,
            put_mbps,
            get_mbps: 0.0,
            lost_at_last_read: 0,
            readable: true,
        };
        let t = Instant::now();
        anyhow::ensure!(demo.read_back(&entry, &expect)?, "{} did not read back", entry.spec);
        entry.get_mbps = mbps(size as u64, t.elapsed().as_secs_f64());
        eprintln!(
            "  stored with {:<28} put {:>7.1} MB/s, get {:>7.1} MB/s",
            entry.spec.to_string(),
            put_mbps,
            entry.get_mbps
        );
        entries.push(entry);
    }

    // Take peers offline one by one, in a seeded random order.
    let mut order: Vec<usize> = (0..peers).collect();
    let mut rng = SplitMix64(seed);
    for i in (1..peers).rev() {
        order.swap(i, (rng.next_u64() % (i as u64 + 1)) as usize);
    }
    eprintln!("  taking peers offline in the order {order:?}");
    for &victim in &order {
        if let Some(net) = demo.peers[victim].take() {
            demo.rt.block_on(net.shutdown());
        }
        for e in entries.iter_mut().filter(|e| e.readable) {
            if !e.holders.contains(&victim) {
                continue;
            }
            if demo.read_back(e, &expect)? {
                e.lost_at_last_read = e.holders.iter().filter(|h| demo.peers[**h].is_none()).count();
            } else {
                e.readable = false;
            }
        }
    }
    let mut out = std::io::stdout().lock();
    writeln!(out)?;
    writeln!(
        out,
        "{:<28} {:>3} {:>5} {:>3} {:>9} {:>16} {:>9} {:>9}",
        "scheme", "N", "D", "M", "tolerates", "lost, still read", "put MB/s", "get MB/s"
    )?;
    for e in &entries {
        let scheme = build(&e.spec)?;
        writeln!(
            out,
            "{:<28} {:>3} {:>5.2} {:>3} {:>9} {:>16} {:>9.1} {:>9.1}",
            e.spec.to_string(),
            scheme.slots(),
            scheme.redundancy(),
            scheme.min_peers(),
            scheme.tolerates(),
            format!("{} of {}", e.lost_at_last_read, scheme.slots()),
            e.put_mbps,
            e.get_mbps
        )?;
    }
    writeln!(out)?;
    writeln!(out, "N: peers used. D: bytes stored / file bytes (before compression). M: fewest peers that can be enough.")?;
    writeln!(out, "tolerates: peers that may be lost, whichever they are. lost, still read: its peers offline at the last")?;
    writeln!(out, "successful read in this run (striped shards can outlive their guarantee when the right peers survive).")?;
    drop(out);
    let Demo { rt, client, peers, .. } = demo;
    rt.block_on(async {
        for p in peers.into_iter().flatten() {
            p.shutdown().await;
        }
        client.shutdown().await;
    });
    dir.close().context("cleaning up the demo folder")?;
    Ok(())
}
