//! The slow-upload attack, measured: 9 throwaway identities each keep 8 uploads open to one
//! holder, sending their header and one byte, then nothing (and open another as soon as the
//! holder drops one). Meanwhile 3 honest peers put and read 100 kB blocks through the same
//! holder. Prints the honest operations' latency (p50, p99, max) and failures without the
//! attack, with the 9 identities connected but idle (the control: their swarms share this
//! process's two threads), with the attackers at another address (127.0.0.2), and with the
//! attackers at the honest peers' own address (127.0.0.1, which shares its per-address
//! permits with them).
//!
//! `cargo run --release -p jewel-net --example slow_upload_attack [ROUNDS] [RETRY_MS]`
//! (default 200 put-and-get rounds per honest peer and phase; an attacker told `Busy` asks
//! again after RETRY_MS, default 100). The attackers run in this process, on this machine's
//! cores: the faster they retry, the more of the honest peers' CPU they take, which a real
//! attacker elsewhere would not.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{AsyncReadExt, AsyncWriteExt};
use jewel::{BlockId, MemStore};
use jewel_net::wire::{self, Request};
use jewel_net::{Keypair, MultiaddrProtocol, NetConfig, Network, PeerId, BLOCK_PROTOCOL};

const ATTACKERS: usize = 9;
const STREAMS_EACH: usize = 8;
const HONEST: usize = 3;

async fn node(
    listen: &str,
    bootstrap: Vec<jewel_net::Multiaddr>,
) -> Result<Network, Box<dyn std::error::Error>> {
    let config = NetConfig { listen: vec![listen.parse()?], bootstrap, ..NetConfig::default() };
    Ok(Network::start(Keypair::generate_ed25519(), config, Arc::new(MemStore::new(None))).await?)
}

/// One attacker stream, forever: ask to upload 1 MiB, send one byte once told to go, then
/// nothing until the holder drops it; then again.
async fn trickle_forever(a: jewel_net::BlockClient, target: PeerId, seed: u8, retry: Duration) {
    let mut control = a.stream_control();
    loop {
        let Ok(mut s) = control.open_stream(target, BLOCK_PROTOCOL).await else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let req = Request::Put { id: BlockId([seed; 32]), size: 1 << 20 }.encode();
        if s.write_all(&req).await.is_err() || s.flush().await.is_err() {
            continue;
        }
        if wire::read_status(&mut s).await.is_err() {
            // Busy: ask again soon.
            tokio::time::sleep(retry).await;
            continue;
        }
        let _ = s.write_all(&[0]).await;
        let _ = s.flush().await;
        let mut rest = Vec::new();
        let _ = s.read_to_end(&mut rest).await;
    }
}

/// Starts the attackers at `ip`, connected to `holder` by the holder's own dials (so the
/// holder sees them at `ip`), each with its streams running.
async fn attack(
    holder: &Network,
    ip: &str,
    streams: usize,
    retry: Duration,
) -> Result<(Vec<Network>, Vec<tokio::task::JoinHandle<()>>), Box<dyn std::error::Error>> {
    let target = holder.handle().peer_id();
    let (mut attackers, mut tasks) = (Vec::new(), Vec::new());
    for _ in 0..ATTACKERS {
        let config = NetConfig {
            listen: vec![format!("/ip4/{ip}/tcp/0").parse()?],
            serve_blocks: false,
            ..NetConfig::default()
        };
        let a = Network::start(Keypair::generate_ed25519(), config, Arc::new(MemStore::new(None))).await?;
        // The attacker waits for its own report of the holder's connection.
        let mut events = a.handle().events();
        holder.handle().dial(a.handle().listeners().await?[0].clone()).await?;
        let connected = async {
            while let Ok(e) = events.recv().await {
                if matches!(e, jewel_net::NetEvent::Connected { peer } if peer == target) {
                    return;
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(10), connected).await?;
        for i in 0..streams {
            tasks.push(tokio::spawn(trickle_forever(a.blocks().clone(), target, i as u8, retry)));
        }
        attackers.push(a);
    }
    // Let every trickle reach the holder before measuring.
    tokio::time::sleep(Duration::from_millis(500)).await;
    Ok((attackers, tasks))
}

/// Each honest peer puts a fresh 100 kB block and reads 1000 bytes of it back, `rounds`
/// times; returns every operation's latency, and the failures.
async fn honest_rounds(
    honest: &[Network],
    target: PeerId,
    rounds: usize,
    phase: u8,
) -> (Vec<Duration>, Vec<String>) {
    let runs = honest.iter().enumerate().map(|(h, n)| {
        let blocks = n.blocks().clone();
        async move {
            let (mut times, mut failures) = (Vec::new(), Vec::new());
            for r in 0..rounds {
                let block: Vec<u8> = (0..100_000u32)
                    .map(|i| (i as u8) ^ (r as u8).wrapping_mul(31) ^ (h as u8 * 7) ^ phase)
                    .collect();
                let id = BlockId::of(&block);
                let t = Instant::now();
                match blocks.put_block(target, id, &block).await {
                    Ok(()) => times.push(t.elapsed()),
                    Err(e) => failures.push(format!("put: {e}")),
                }
                let t = Instant::now();
                match blocks.get_range(target, id, block.len() as u64, 0, 1000).await {
                    Ok(got) if got == block[..1000] => times.push(t.elapsed()),
                    Ok(_) => failures.push("get: wrong bytes".into()),
                    Err(e) => failures.push(format!("get: {e}")),
                }
            }
            (times, failures)
        }
    });
    let all = futures::future::join_all(runs).await;
    let mut times: Vec<Duration> = all.iter().flat_map(|(t, _)| t.iter().copied()).collect();
    times.sort();
    (times, all.into_iter().flat_map(|(_, f)| f).collect())
}

fn report(phase: &str, (times, failures): &(Vec<Duration>, Vec<String>)) -> f64 {
    let at = |q: f64| {
        times.get(((times.len() as f64 - 1.0) * q) as usize).map_or(f64::NAN, |d| d.as_secs_f64() * 1e3)
    };
    println!(
        "{phase:<44} {:>5} ops  p50 {:>7.2} ms  p99 {:>8.2} ms  max {:>8.2} ms  failed {}",
        times.len(),
        at(0.5),
        at(0.99),
        at(1.0),
        failures.len()
    );
    if let Some(f) = failures.first() {
        println!("    first failure: {f}");
    }
    at(0.99)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let rounds = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(200);
    let retry = Duration::from_millis(std::env::args().nth(2).and_then(|a| a.parse().ok()).unwrap_or(100));
    let holder = node("/ip4/127.0.0.1/tcp/0", vec![]).await?;
    let boot =
        holder.handle().listeners().await?[0].clone().with(MultiaddrProtocol::P2p(holder.handle().peer_id()));
    let target = holder.handle().peer_id();
    let mut honest = Vec::new();
    for _ in 0..HONEST {
        honest.push(node("/ip4/127.0.0.1/tcp/0", vec![boot.clone()]).await?);
    }
    println!(
        "{HONEST} honest peers × {rounds} rounds (put 100 kB, read 1000 bytes) through one holder; \
         attack: {ATTACKERS} identities × {STREAMS_EACH} trickling uploads, Busy retried after {retry:?}"
    );
    let base = report("no attack", &honest_rounds(&honest, target, rounds, 1).await);
    for (phase, ip, streams, tag) in [
        ("9 idle peers at 127.0.0.2 (control)", "127.0.0.2", 0, 4u8),
        ("attackers at 127.0.0.2 (another address)", "127.0.0.2", STREAMS_EACH, 2),
        ("attackers at 127.0.0.1 (the honest peers')", "127.0.0.1", STREAMS_EACH, 3),
    ] {
        let (attackers, tasks) = attack(&holder, ip, streams, retry).await?;
        let p99 = report(phase, &honest_rounds(&honest, target, rounds, tag).await);
        println!("    p99 is {:.2}× the unattacked p99 (target ≤ 2×)", p99 / base);
        for t in tasks {
            t.abort();
        }
        for a in attackers {
            a.shutdown().await;
        }
    }
    for n in honest {
        n.shutdown().await;
    }
    holder.shutdown().await;
    Ok(())
}
