//! `jewel demo`: every scheme side by side on simulated peers (one folder each).
//!
//! Stores an embedded sample file with every scheme, then takes peers offline one at a
//! time (in a seeded random order) and tries to read every file back after each loss.
//! Prints, per scheme, N, D, M, how many of its peers were offline the last time its
//! file came back whole, and its put and get speed. Everything lives in a temp folder
//! that is removed at the end.

use std::io::Write;
use std::time::Instant;

use anyhow::{Context, Result};
use jewel::codec::{build, SchemeSpec, SplitMix64};
use jewel::pipeline::{get, put, slot_sources, PutOptions};
use jewel::{BlockStore, BlockWriter, FsStore, Manifest, ReadCap};

/// The schemes the demo compares.
pub const DEMO_SCHEMES: &[&str] = &[
    "hosting",
    "replicate:3",
    "shard:3x2",
    "parity:4",
    "jewels:4/8",
    "jewels:10/16",
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
    put_mbps: f64,
    get_mbps: f64,
    /// Its peers offline at the last successful read.
    lost_at_last_read: usize,
    readable: bool,
}

fn mbps(bytes: u64, secs: f64) -> f64 {
    bytes as f64 / secs.max(1e-9) / 1e6
}

fn read_back(entry: &Entry, stores: &[FsStore], alive: &[bool], expect: &blake3::Hash) -> Result<bool> {
    let sources = slot_sources(stores, &entry.manifest, alive);
    let mut sink = HashWriter(blake3::Hasher::new());
    match get(&entry.manifest, &entry.cap.key, sources, &mut sink, jewel::pipeline::default_threads()) {
        Ok(_) => Ok(sink.0.finalize() == *expect),
        Err(jewel::PipelineError::Codec(jewel::codec::CodecError::NotEnoughPieces { .. })) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

pub fn run(size: u64, seed: u64) -> Result<()> {
    let dir =
        tempfile::Builder::new().prefix("jewel-demo-").tempdir().context("cannot create a temp folder")?;
    let size = usize::try_from(size).context("sample size too large")?;
    let data = sample(size);
    let expect = blake3::hash(&data);
    let specs: Vec<SchemeSpec> =
        DEMO_SCHEMES.iter().map(|s| SchemeSpec::parse(s)).collect::<Result<_, _>>()?;
    let peers = specs.iter().map(|s| s.slots()).max().unwrap_or(1);
    eprintln!(
        "jewel demo: a {} KiB sample, {} schemes, {} simulated peers in {}",
        size >> 10,
        specs.len(),
        peers,
        dir.path().display()
    );
    let stores: Vec<FsStore> = (0..peers)
        .map(|i| FsStore::open(dir.path().join(format!("peer-{i:02}")), None))
        .collect::<Result<_, _>>()?;

    let mut entries = Vec::new();
    for spec in specs {
        let slots = build(&spec)?.slots();
        let sinks: Vec<Box<dyn BlockWriter>> =
            stores[..slots].iter().map(|s| s.writer()).collect::<Result<_, _>>()?;
        let mut opts = PutOptions::new(spec.clone());
        opts.segment_size = 1 << 20;
        let t = Instant::now();
        let done = put(&mut &data[..], &opts, sinks)?;
        for s in &stores[..slots] {
            s.put(&done.manifest_bytes)?;
        }
        let put_mbps = mbps(size as u64, t.elapsed().as_secs_f64());
        let mut entry = Entry {
            spec,
            manifest: done.manifest,
            cap: done.cap,
            put_mbps,
            get_mbps: 0.0,
            lost_at_last_read: 0,
            readable: true,
        };
        let t = Instant::now();
        anyhow::ensure!(
            read_back(&entry, &stores, &vec![true; peers], &expect)?,
            "{} did not read back",
            entry.spec
        );
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
    let mut alive = vec![true; peers];
    for &victim in &order {
        alive[victim] = false;
        std::fs::remove_dir_all(stores[victim].root()).with_context(|| format!("removing peer {victim}"))?;
        for e in entries.iter_mut().filter(|e| e.readable) {
            let slots = e.manifest.pieces.len();
            if victim >= slots {
                continue;
            }
            if read_back(e, &stores, &alive, &expect)? {
                e.lost_at_last_read = alive[..slots].iter().filter(|a| !**a).count();
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
    dir.close().context("cleaning up the demo folder")?;
    Ok(())
}
