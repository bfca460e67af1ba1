//! Routing-table poisoning, the attacker's side (issue 19): COUNT throwaway identities, each
//! a whole node of its own on a loopback address of its own (127.0.1.1, 127.0.1.2, …),
//! connects to each of the given peers, so that every one of them meets it. With
//! `--claim-blocks` they also say (through identify) that they store blocks, which they
//! never do for anyone: their store is full. They stay until this process is killed: then
//! they all vanish at once, as a Sybil attack that ends does.
//!
//! `cargo run --release -p jewel-net --example sybil_swarm -- COUNT [--claim-blocks]
//! [--first N] BOOTSTRAP...`: `--first N` starts at the Nth address (for several processes,
//! each within its descriptor limit). Prints `ready COUNT` once every identity has met
//! every given peer.

use std::sync::Arc;

use jewel::MemStore;
use jewel_net::{Keypair, NetConfig, Network};

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let count: usize = args.next().ok_or("COUNT is missing")?.parse()?;
    let rest: Vec<String> = args.collect();
    let claim = rest.iter().any(|a| a == "--claim-blocks");
    let first: usize = match rest.iter().position(|a| a == "--first") {
        Some(i) => rest.get(i + 1).ok_or("--first needs a number")?.parse()?,
        None => 0,
    };
    let bootstrap: Vec<jewel_net::Multiaddr> =
        rest.iter().filter(|a| a.starts_with('/')).map(|a| a.parse()).collect::<Result<_, _>>()?;
    let mut sybils = Vec::with_capacity(count);
    for i in first..first + count {
        let ip = format!("127.0.{}.{}", 1 + i / 250, 1 + i % 250);
        let config = NetConfig {
            listen: vec![format!("/ip4/{ip}/tcp/0").parse()?],
            serve_blocks: claim,
            ..NetConfig::default()
        };
        // A store with no room: a block sent to a Sybil is refused.
        let store = Arc::new(MemStore::new(Some(0)));
        let n = match Network::start(Keypair::generate_ed25519(), config, store).await {
            Ok(n) => n,
            Err(e) => {
                eprintln!("identity {i} did not start: {e}");
                continue;
            }
        };
        // Each meets every honest peer itself and walks nowhere: the honest peers learn
        // of it from its connection (and of the others from each other), and 400 walking
        // identities would take this machine's two cores from the peers being measured.
        for b in &bootstrap {
            if let Err(e) = n.handle().dial(b.clone()).await {
                eprintln!("identity {i} could not reach {b}: {e}");
            }
        }
        sybils.push(n);
    }
    println!("ready {}", sybils.len());
    // Until killed.
    std::future::pending::<()>().await;
    Ok(())
}
