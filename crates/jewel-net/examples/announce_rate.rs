//! How fast a node announces its store in the DHT (provider records): a node starts with
//! N blocks already stored, among 22 others on 127.0.0.1, and announces them all (the
//! start-up sweep, the same work as re-announcing a store). Measured for several numbers
//! of announcements in flight.
//!
//! `cargo run --release -p jewel-net --example announce_rate [BLOCKS] [CONCURRENCY...]`
//! (defaults: 3000 blocks; 4, 16 and 32 in flight).

use std::sync::Arc;
use std::time::{Duration, Instant};

use jewel::{BlockStore, MemStore};
use jewel_net::{Keypair, MultiaddrProtocol, NetConfig, Network};

const NODES: usize = 23;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<usize> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let blocks = args.first().copied().unwrap_or(3000);
    let levels = if args.len() > 1 { args[1..].to_vec() } else { vec![4, 16, 32] };
    let config = |bootstrap| NetConfig { bootstrap, ..NetConfig::default() };
    let first =
        Network::start(Keypair::generate_ed25519(), config(vec![]), Arc::new(MemStore::new(None))).await?;
    let boot =
        first.handle().listeners().await?[0].clone().with(MultiaddrProtocol::P2p(first.handle().peer_id()));
    let mut nodes = vec![first];
    for _ in 1..NODES - 1 {
        nodes.push(
            Network::start(
                Keypair::generate_ed25519(),
                config(vec![boot.clone()]),
                Arc::new(MemStore::new(None)),
            )
            .await?,
        );
    }
    println!("{NODES} nodes on 127.0.0.1; a node starts with {blocks} blocks stored and announces them");
    for (round, concurrency) in levels.into_iter().enumerate() {
        let store = MemStore::new(None);
        for i in 0..blocks {
            store.put(format!("round {round} block {i}").as_bytes())?;
        }
        let config = NetConfig {
            bootstrap: vec![boot.clone()],
            announce_concurrency: concurrency,
            ..NetConfig::default()
        };
        let t = Instant::now();
        let node = Network::start(Keypair::generate_ed25519(), config, Arc::new(store)).await?;
        let mut announced = node.announced();
        tokio::time::timeout(Duration::from_secs(3600), announced.wait_for(|n| *n >= blocks as u64))
            .await??;
        let secs = t.elapsed().as_secs_f64();
        println!(
            "{concurrency:>3} in flight: {blocks} blocks in {secs:>6.1} s = {:>6.0} blocks/s; 100 000 blocks would take {:>5.0} s",
            blocks as f64 / secs,
            100_000.0 * secs / blocks as f64
        );
        node.shutdown().await;
    }
    for n in nodes {
        n.shutdown().await;
    }
    Ok(())
}
