//! Measures the two ways a put can make a file findable before it returns (issue 12):
//! (a) every holder announces its piece and the manifest as provider records, or
//! (b) the owner publishes one holders record. Both on a network of 23 in-process nodes on
//! 127.0.0.1, like `jewel bench net`'s devnet.
//!
//! `cargo run --release -p jewel-net --example dht_publish`

use std::sync::Arc;
use std::time::{Duration, Instant};

use jewel::{BlockId, MemStore};
use jewel_net::{Holder, HoldersRecord, Keypair, MultiaddrProtocol, NetConfig, Network};

const NODES: usize = 23;
const ROUNDS: usize = 30;
/// A jewels:3/5 file: 5 pieces and the manifest, on 5 holders.
const HOLDERS: usize = 5;

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn summary(name: &str, mut v: Vec<f64>) {
    v.sort_by(f64::total_cmp);
    println!(
        "{name:<58} median {:>6.1} ms  p90 {:>6.1} ms  max {:>6.1} ms",
        v[v.len() / 2],
        v[v.len() * 9 / 10],
        v[v.len() - 1]
    );
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let config = |bootstrap| NetConfig { bootstrap, ..NetConfig::default() };
    let first =
        Network::start(Keypair::generate_ed25519(), config(vec![]), Arc::new(MemStore::new(None))).await?;
    let boot =
        first.handle().listeners().await?[0].clone().with(MultiaddrProtocol::P2p(first.handle().peer_id()));
    let mut nodes = vec![first];
    for _ in 1..NODES {
        nodes.push(
            Network::start(
                Keypair::generate_ed25519(),
                config(vec![boot.clone()]),
                Arc::new(MemStore::new(None)),
            )
            .await?,
        );
    }
    for n in &nodes {
        n.handle().bootstrap().await?;
    }
    let (mut a, mut b, mut find_a, mut find_b) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for round in 0..ROUNDS {
        let ids: Vec<BlockId> =
            (0..=HOLDERS).map(|i| BlockId::of(format!("{round}-{i}").as_bytes())).collect();
        let holders: Vec<&Network> =
            (0..HOLDERS).map(|i| &nodes[1 + (round + i * 3) % (NODES - 1)]).collect();
        // (a) Each holder announces its piece and the manifest, all at once.
        let t = Instant::now();
        let provides = holders.iter().enumerate().flat_map(|(i, h)| {
            let (piece, manifest) = (ids[i], ids[HOLDERS]);
            [h.handle().provide(piece), h.handle().provide(manifest)]
        });
        for r in futures::future::join_all(provides).await {
            r?;
        }
        a.push(ms(t.elapsed()));
        // A getter elsewhere: the manifest's providers, then each piece's.
        let getter = &nodes[(round * 7 + 5) % NODES];
        let t = Instant::now();
        for id in &ids {
            getter.handle().providers(*id).await?;
        }
        find_a.push(ms(t.elapsed()));
        // (b) The owner publishes one record.
        let owner = &nodes[0];
        let record = HoldersRecord {
            group: ids[HOLDERS],
            seq: round as u64,
            holders: holders
                .iter()
                .zip(&ids)
                .map(|(h, id)| Holder { block: *id, peer: h.handle().peer_id(), addrs: vec![] })
                .collect(),
        };
        let t = Instant::now();
        owner.handle().publish_holders(record).await?;
        b.push(ms(t.elapsed()));
        let t = Instant::now();
        let found = getter.handle().find_holders(ids[HOLDERS]).await?;
        find_b.push(ms(t.elapsed()));
        assert!(found.is_some(), "round {round}: the record was not found");
    }
    println!("{NODES} nodes on 127.0.0.1, {ROUNDS} rounds, a file on {HOLDERS} holders");
    summary("(a) publish: 5 holders announce piece + manifest at once", a);
    summary("(a) find: the manifest's and 5 pieces' providers", find_a);
    summary("(b) publish: the owner puts one holders record (quorum 1)", b);
    summary("(b) find: one record lookup", find_b);
    for n in nodes {
        n.shutdown().await;
    }
    Ok(())
}
