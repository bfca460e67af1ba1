//! `jewel bench`: the whole put/get pipeline's throughput, with the machine's memory-copy
//! bandwidth measured beside it.
//!
//! Put = zstd sample test + encrypt + encode + hash every piece into a block. Runs on one
//! thread and on all cores, into memory stores and into on-disk stores in a temp folder.

use std::io::Write;
use std::time::Instant;

use anyhow::{Context, Result};
use jewel::codec::{build, SchemeSpec, SplitMix64};
use jewel::pipeline::{default_threads, get, put, slot_sources, PutOptions};
use jewel::{BlockStore, BlockWriter, FsStore, MemStore};
use serde::Serialize;

use crate::demo::HashWriter;

#[derive(Serialize)]
struct Row {
    case: String,
    threads: usize,
    seconds: f64,
    gib_per_s: f64,
}

fn gib(bytes: u64, secs: f64) -> f64 {
    bytes as f64 / secs.max(1e-9) / (1u64 << 30) as f64
}

/// Single-thread memory-copy bandwidth, GiB/s (best of 5 copies of 256 MiB).
pub fn memcpy_gib_s() -> f64 {
    let n = 256 << 20;
    let src = vec![1u8; n];
    let mut dst = vec![0u8; n];
    let mut best = f64::MAX;
    for _ in 0..5 {
        let t = Instant::now();
        dst.copy_from_slice(&src);
        std::hint::black_box(&mut dst);
        best = best.min(t.elapsed().as_secs_f64());
    }
    gib(n as u64, best)
}

/// Loopback TCP bandwidth, GiB/s: one connection on 127.0.0.1, 1 GiB in 1 MiB writes.
pub fn loopback_gib_s() -> Result<f64> {
    use std::io::Read;
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let total: u64 = 1 << 30;
    let reader = std::thread::spawn(move || -> std::io::Result<u64> {
        let (mut s, _) = listener.accept()?;
        let mut buf = vec![0u8; 1 << 20];
        let mut got = 0u64;
        loop {
            let n = s.read(&mut buf)?;
            if n == 0 {
                return Ok(got);
            }
            got += n as u64;
        }
    });
    let t = Instant::now();
    let mut s = std::net::TcpStream::connect(addr)?;
    let buf = vec![7u8; 1 << 20];
    for _ in 0..(total >> 20) {
        s.write_all(&buf)?;
    }
    drop(s);
    let got = reader.join().map_err(|_| anyhow::anyhow!("loopback reader thread failed"))??;
    anyhow::ensure!(got == total, "loopback transferred {got} of {total} bytes");
    Ok(gib(total, t.elapsed().as_secs_f64()))
}

fn random(len: usize) -> Vec<u8> {
    let mut rng = SplitMix64(0xbe7c);
    let mut v = Vec::with_capacity(len + 8);
    while v.len() < len {
        v.extend_from_slice(&rng.next_u64().to_le_bytes());
    }
    v.truncate(len);
    v
}

/// A piece sink that only hashes: the put pipeline's own cost, without a store's.
struct HashSink(blake3::Hasher, u64);

impl BlockWriter for HashSink {
    fn write(&mut self, data: &[u8]) -> Result<(), jewel::StoreError> {
        self.0.update(data);
        self.1 += data.len() as u64;
        Ok(())
    }
    fn written(&self) -> u64 {
        self.1
    }
    fn commit(
        self: Box<Self>,
        _expected: Option<jewel::BlockId>,
    ) -> Result<jewel::BlockId, jewel::StoreError> {
        Ok(jewel::BlockId::from(self.0.finalize()))
    }
}

fn stores_get<S: BlockStore>(
    stores: &[S],
    done: &jewel::pipeline::Put,
    alive: &[bool],
    threads: usize,
    expect: &blake3::Hash,
) -> Result<f64> {
    let sources = slot_sources(stores, &done.manifest, alive);
    let mut sink = HashWriter(blake3::Hasher::new());
    let t = Instant::now();
    get(&done.manifest, &done.cap.key, sources, &mut sink, threads)?;
    let secs = t.elapsed().as_secs_f64();
    anyhow::ensure!(sink.0.finalize() == *expect, "bench get returned wrong bytes");
    Ok(secs)
}

pub fn run(size: u64, spec: &SchemeSpec, memory_only: bool, json: bool) -> Result<()> {
    let len = usize::try_from(size).context("size too large")?;
    let data = random(len);
    let expect = blake3::hash(&data);
    let scheme = build(spec)?;
    let n = scheme.slots();
    let all = default_threads();
    let mut rows = Vec::new();
    let memcpy = memcpy_gib_s();
    let loopback = loopback_gib_s()?;
    let mut push = |case: &str, threads: usize, secs: f64| {
        if !json {
            eprintln!("  {case:<40} {threads} thread(s) {:>7.3} s {:>7.2} GiB/s", secs, gib(size, secs));
        }
        rows.push(Row { case: case.to_string(), threads, seconds: secs, gib_per_s: gib(size, secs) });
    };
    // With n > k, lose the first n-k slots (data shards first) so every segment is decoded.
    let lost = scheme.tolerates().min(n.saturating_sub(1));
    let degraded: Vec<bool> = (0..n).map(|s| s >= lost).collect();

    let mut thread_counts = vec![1];
    if all > 1 {
        thread_counts.push(all);
    }
    for &threads in &thread_counts {
        let sinks: Vec<Box<dyn BlockWriter>> =
            (0..n).map(|_| Box::new(HashSink(blake3::Hasher::new(), 0)) as Box<dyn BlockWriter>).collect();
        let mut opts = PutOptions::new(spec.clone());
        opts.threads = threads;
        let t = Instant::now();
        put(&mut &data[..], &opts, sinks)?;
        push("put pipeline, hashing sinks", threads, t.elapsed().as_secs_f64());
    }
    for &threads in &thread_counts {
        let stores: Vec<MemStore> = (0..n).map(|_| MemStore::new(None)).collect();
        let sinks: Vec<Box<dyn BlockWriter>> = stores.iter().map(|s| s.writer()).collect::<Result<_, _>>()?;
        let mut opts = PutOptions::new(spec.clone());
        opts.threads = threads;
        // The memory store is a test double; its put time is not a product figure.
        let done = put(&mut &data[..], &opts, sinks)?;
        push("get, memory stores", threads, stores_get(&stores, &done, &vec![true; n], threads, &expect)?);
        push(
            &format!("get, memory stores, {lost} pieces lost"),
            threads,
            stores_get(&stores, &done, &degraded, threads, &expect)?,
        );
    }
    if !memory_only {
        let dir = tempfile::Builder::new().prefix("jewel-bench-").tempdir()?;
        let stores: Vec<FsStore> = (0..n)
            .map(|i| FsStore::open(dir.path().join(format!("peer-{i}")), None))
            .collect::<Result<_, _>>()?;
        let sinks: Vec<Box<dyn BlockWriter>> = stores.iter().map(|s| s.writer()).collect::<Result<_, _>>()?;
        let mut opts = PutOptions::new(spec.clone());
        opts.threads = all;
        let t = Instant::now();
        let done = put(&mut &data[..], &opts, sinks)?;
        push("put, disk stores (fsync)", all, t.elapsed().as_secs_f64());
        push("get, disk stores", all, stores_get(&stores, &done, &vec![true; n], all, &expect)?);
        push(
            &format!("get, disk stores, {lost} pieces lost"),
            all,
            stores_get(&stores, &done, &degraded, all, &expect)?,
        );
    }
    if json {
        let v = serde_json::json!({
            "scheme": spec.to_string(),
            "bytes": size,
            "cipher": jewel::CipherId::preferred().name(),
            "memcpy_gib_per_s": memcpy,
            "loopback_tcp_gib_per_s": loopback,
            "rows": rows,
        });
        outln!("{v}");
        return Ok(());
    }
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "\n{} of random data, {}, cipher {}; machine: memory copy {:.1} GiB/s (1 thread), loopback TCP {:.1} GiB/s\n",
        human(size),
        spec,
        jewel::CipherId::preferred().name(),
        memcpy,
        loopback
    )?;
    writeln!(out, "{:<40} {:>7} {:>9} {:>9} {:>10}", "case", "threads", "seconds", "GiB/s", "of memcpy")?;
    for r in &rows {
        writeln!(
            out,
            "{:<40} {:>7} {:>9.3} {:>9.2} {:>9.1}%",
            r.case,
            r.threads,
            r.seconds,
            r.gib_per_s,
            100.0 * r.gib_per_s / memcpy
        )?;
    }
    Ok(())
}

fn human(bytes: u64) -> String {
    if bytes >= 1 << 30 {
        format!("{:.1} GiB", bytes as f64 / (1u64 << 30) as f64)
    } else {
        format!("{:.1} MiB", bytes as f64 / (1u64 << 20) as f64)
    }
}
