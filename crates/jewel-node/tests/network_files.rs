//! Whole files over a real libp2p network in one process: 11 nodes on 127.0.0.1, every
//! scheme, pieces on distinct peers. With as many holders stopped as the scheme tolerates
//! (the worst ones), get still returns the exact bytes; with one more, it fails with a clear
//! NotEnoughPieces.

use std::sync::Arc;
use std::time::Duration;

use jewel::codec::{build, CodecError, SchemeSpec, SplitMix64};
use jewel::pipeline::{PipelineError, PutOptions};
use jewel::policy::{place, Candidate, PolicyError};
use jewel::MemStore;
use jewel_net::{Keypair, MultiaddrProtocol, NetConfig, Network, PeerId};
use jewel_node::client::{fetch_manifest, get_file, put_file, ClientError};

const SPECS: &[&str] =
    &["hosting", "replicate:3", "shard:3x2", "parity:4", "jewels:4/8", "nested:jewels:2/3+parity:2"];

/// A node's network settings for the DHT: it announces manifests only, as a node does (see
/// `jewel_net::announce`); pieces are found by asking the manifest's providers.
fn as_a_node() -> NetConfig {
    NetConfig { announce_only: Some(jewel::manifest::Manifest::looks_like), ..NetConfig::default() }
}

async fn network(n: usize) -> Vec<Network> {
    let first = Network::start(Keypair::generate_ed25519(), as_a_node(), Arc::new(MemStore::new(None)))
        .await
        .unwrap();
    let boot = first.handle().listeners().await.unwrap()[0]
        .clone()
        .with(MultiaddrProtocol::P2p(first.handle().peer_id()));
    let mut nodes = vec![first];
    for _ in 1..n {
        let config = NetConfig { bootstrap: vec![boot.clone()], ..as_a_node() };
        nodes.push(
            Network::start(Keypair::generate_ed25519(), config, Arc::new(MemStore::new(None))).await.unwrap(),
        );
    }
    nodes
}

/// The smallest set of slots whose loss breaks the scheme, found by enumeration.
fn breaking_set(spec: &SchemeSpec) -> Vec<usize> {
    let scheme = build(spec).unwrap();
    let n = scheme.slots();
    let size = scheme.tolerates() + 1;
    (0u32..(1 << n))
        .filter(|m| m.count_ones() as usize == size)
        .map(|m| (0..n).filter(|s| m & (1 << s) != 0).collect::<Vec<_>>())
        .find(|lost| {
            let alive: Vec<bool> = (0..n).map(|s| !lost.contains(&s)).collect();
            !scheme.can_decode(&alive)
        })
        .unwrap()
}

/// Puts `data` with `spec` on `peers`.
async fn put_blocking(
    client: &jewel_net::BlockClient,
    data: &[u8],
    spec: &str,
    segment: u32,
    peers: &[PeerId],
) -> jewel_node::client::Placed {
    let mut opts = PutOptions::new(SchemeSpec::parse(spec).unwrap());
    opts.segment_size = segment;
    put_file(client, reader(data), data.len() as u64, &opts, peers).await.unwrap()
}

fn reader(data: &[u8]) -> Box<dyn std::io::Read + Send> {
    Box::new(std::io::Cursor::new(data.to_vec()))
}

/// Gets the whole file of `placed` from `holders` with `threads`: the bytes and the get's
/// statistics, or why it failed.
async fn get_blocking(
    client: &jewel_net::BlockClient,
    placed: &jewel_node::client::Placed,
    holders: &[Option<PeerId>],
    threads: usize,
) -> Result<(Vec<u8>, jewel::pipeline::GetStats), ClientError> {
    let (manifest, key) = (&placed.put.manifest, &placed.put.cap.key);
    let range = jewel::pipeline::ByteRange::ALL;
    get_file(client, manifest, key, holders, range, Vec::new(), threads)
        .await
        .map(|(stats, out)| (out, stats))
}

fn random(len: usize, seed: u64) -> Vec<u8> {
    let mut rng = SplitMix64(seed);
    (0..len).map(|_| rng.next_u64() as u8).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_scheme_survives_exactly_what_it_promises() {
    for (i, text) in SPECS.iter().enumerate() {
        let spec = SchemeSpec::parse(text).unwrap();
        let mut nodes: Vec<Option<Network>> = network(11).await.into_iter().map(Some).collect();
        let client = nodes[0].as_ref().unwrap().blocks().clone();
        let candidates: Vec<Candidate<PeerId>> = nodes[1..]
            .iter()
            .map(|n| Candidate {
                peer: n.as_ref().unwrap().handle().peer_id(),
                zone: None,
                site: None,
                new: false,
            })
            .collect();
        let slots = build(&spec).unwrap().slots();
        let holders = place(slots, &candidates).unwrap();
        let data = random(300_000 + i, i as u64);
        let mut opts = PutOptions::new(spec.clone());
        opts.segment_size = 64 << 10;

        let placed = put_file(&client, reader(&data), data.len() as u64, &opts, &holders).await.unwrap();
        let fetch = |holders: Vec<Option<PeerId>>| {
            let (client, placed) = (&client, &placed);
            async move { get_blocking(client, placed, &holders, 2).await.map(|(out, _)| out) }
        };
        let all: Vec<Option<PeerId>> = placed.holders.iter().copied().map(Some).collect();
        assert_eq!(fetch(all.clone()).await.unwrap(), data, "{text}");

        // The manifest is on every holder, and verified when fetched: from the other holders,
        // or, when there are none, from whoever the DHT says holds it, once the only holder
        // has announced the manifest (the one block of the two it announces).
        if placed.holders.len() == 1 {
            let holder = nodes.iter().flatten().find(|n| n.handle().peer_id() == placed.holders[0]).unwrap();
            let mut count = holder.announced();
            let waited = tokio::time::timeout(Duration::from_secs(30), count.wait_for(|c| *c >= 1)).await;
            assert!(waited.is_ok(), "the holder never announced its blocks");
        }
        let m = fetch_manifest(&client, placed.put.cap.manifest, &placed.holders[1..]).await.unwrap();
        assert_eq!(m, placed.put.manifest);

        // Stop all but one of the worst set: still whole.
        let breaking = breaking_set(&spec);
        let stop = |slot: usize, nodes: &mut Vec<Option<Network>>| {
            let peer = placed.holders[slot];
            let idx =
                nodes.iter().position(|n| n.as_ref().is_some_and(|n| n.handle().peer_id() == peer)).unwrap();
            nodes[idx].take().unwrap()
        };
        for &slot in &breaking[..breaking.len() - 1] {
            stop(slot, &mut nodes).shutdown().await;
        }
        assert_eq!(fetch(all.clone()).await.unwrap(), data, "{text} with {} stopped", breaking.len() - 1);
        // One more: a clear NotEnoughPieces.
        stop(*breaking.last().unwrap(), &mut nodes).shutdown().await;
        match fetch(all).await {
            Err(ClientError::Pipeline(PipelineError::Codec(CodecError::NotEnoughPieces {
                needed, ..
            }))) => {
                assert_eq!(needed, build(&spec).unwrap().min_peers(), "{text}");
            }
            other => panic!("{text}: expected NotEnoughPieces, got {:?}", other.map(|v| v.len())),
        }
        for n in nodes.into_iter().flatten() {
            n.shutdown().await;
        }
    }
}

#[test]
fn placement_uses_distinct_peers_and_spreads_over_zones() {
    let peers: Vec<PeerId> = (0..6).map(|_| PeerId::random()).collect();
    let zones = ["a", "a", "a", "b", "b", "c"];
    let candidates: Vec<Candidate<PeerId>> = peers
        .iter()
        .zip(zones)
        .map(|(p, z)| Candidate { peer: *p, zone: Some(z.to_string()), site: None, new: false })
        .collect();
    let chosen = place(3, &candidates).unwrap();
    let chosen_zones: std::collections::HashSet<&str> =
        chosen.iter().map(|c| zones[peers.iter().position(|p| p == c).unwrap()]).collect();
    assert_eq!(chosen_zones.len(), 3, "one piece per zone first");
    let all = place(6, &candidates).unwrap();
    assert_eq!(all.iter().collect::<std::collections::HashSet<_>>().len(), 6);
    match place(7, &candidates) {
        Err(e @ PolicyError::NotEnoughPeers { needed: 7, found: 6 }) => {
            assert!(e.to_string().contains("needs 7 distinct peers, but only 6"));
        }
        other => panic!("{other:?}"),
    }
}

/// A peer that answers every read with forged bytes: the client's verification catches it,
/// skips it, and the file still comes back exact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lying_peer_is_detected_and_skipped() {
    use futures::{AsyncWriteExt, StreamExt};
    use jewel_net::wire::{self, Request};

    let nodes = network(6).await;
    let client = nodes[0].blocks().clone();
    let honest: Vec<PeerId> = nodes[1..5].iter().map(|n| n.handle().peer_id()).collect();
    // The liar joins the network but plays the block protocol by hand.
    let config = NetConfig {
        bootstrap: vec![nodes[0].handle().listeners().await.unwrap()[0]
            .clone()
            .with(MultiaddrProtocol::P2p(nodes[0].handle().peer_id()))],
        serve_blocks: false,
        ..NetConfig::default()
    };
    let liar =
        Network::start(Keypair::generate_ed25519(), config, Arc::new(MemStore::new(None))).await.unwrap();
    let mut incoming = liar.blocks().stream_control().accept(jewel_net::BLOCK_PROTOCOL).unwrap();
    let forged = tokio::spawn(async move {
        let mut lies = 0;
        while let Some((_, mut s)) = incoming.next().await {
            if let Ok(Request::Get { len, .. } | Request::Prove { group: len, .. }) =
                Request::read(&mut s).await
            {
                // Right-looking size, wrong bytes.
                let _ =
                    wire::write_fragment(&mut s, 1 << 20, &vec![0xAB; len.min(1 << 16) as usize + 64]).await;
                lies += 1;
            }
            let _ = s.close().await;
        }
        lies
    });

    let data = random(500_000, 99);
    let placed = put_blocking(&client, &data, "jewels:2/4", 64 << 10, &honest).await;
    // Tell the client that the liar holds slot 0 (say, a stale placement record).
    let mut holders: Vec<Option<PeerId>> = placed.holders.iter().copied().map(Some).collect();
    holders[0] = Some(liar.handle().peer_id());
    let (out, stats) = get_blocking(&client, &placed, &holders, 2).await.unwrap();
    assert_eq!(out, data, "the output is exact");
    assert!(stats.faults.iter().any(|f| f.slot == 0), "the liar is recorded: {:?}", stats.faults);
    liar.shutdown().await;
    assert!(forged.await.unwrap() >= 1, "the liar was asked and lied");
    for n in nodes {
        n.shutdown().await;
    }
}

/// Hedged reads: the holder of slot 0 (the one a naive reader asks first) serves at
/// 200 KB/s, about 50× slower than the others, and slot 1's holder is gone. The get is
/// exact, reads little from the slow holder (it is outrun and then asked last), and the
/// dead one costs at most one failed request per segment in flight, not one per segment
/// (none, when spares asked on the first answers' hedge delay outrun its failure too).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_holder_is_outrun_and_a_dead_one_fails_at_most_once_per_segment_in_flight() {
    let mut nodes = network(6).await;
    let boot = nodes[0].handle().listeners().await.unwrap()[0]
        .clone()
        .with(MultiaddrProtocol::P2p(nodes[0].handle().peer_id()));
    let config = NetConfig { bootstrap: vec![boot], max_upload: Some(200_000), ..NetConfig::default() };
    let slow =
        Network::start(Keypair::generate_ed25519(), config, Arc::new(MemStore::new(None))).await.unwrap();
    let client = nodes[0].blocks().clone();
    let mut holders: Vec<PeerId> = vec![slow.handle().peer_id()];
    holders.extend(nodes[1..].iter().map(|n| n.handle().peer_id()));
    let data = random(2 << 20, 5);
    let segments = (2usize << 20) / (64 << 10);
    let placed = {
        let mut opts = PutOptions::new(SchemeSpec::parse("jewels:3/6").unwrap());
        opts.segment_size = 64 << 10;
        opts.compress = false;
        put_file(&client, reader(&data), data.len() as u64, &opts, &holders).await.unwrap()
    };
    // Slot 1's holder goes away.
    nodes.remove(1).shutdown().await;
    let threads = 2;
    let all: Vec<Option<PeerId>> = holders.iter().copied().map(Some).collect();
    let (out, stats) = get_blocking(&client, &placed, &all, threads).await.unwrap();
    assert!(out == data, "the file comes back exact");
    let chunk = stats.read_by_slot.iter().max().unwrap() / segments as u64;
    assert!(
        stats.read_by_slot[0] <= 2 * threads as u64 * chunk,
        "the slow holder served {} bytes; a chunk is {chunk}",
        stats.read_by_slot[0]
    );
    let dead = stats.faults.iter().filter(|f| f.slot == 1).count();
    assert!(dead <= threads, "the dead holder failed {dead} times for {segments} segments");
    assert_eq!(stats.read_by_slot[1], 0);
    slow.shutdown().await;
    for n in nodes {
        n.shutdown().await;
    }
}

/// Repair over the network, for every scheme: the holders of the worst tolerated set stop;
/// their pieces are rebuilt onto fresh peers with their old ids, and the file then comes
/// back from a set that needs the rebuilt pieces. Repair writes just the lost bytes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repair_rebuilds_exactly_the_lost_pieces_for_every_scheme() {
    use jewel_node::client::repair_slots;
    for (i, text) in SPECS.iter().enumerate() {
        let spec = SchemeSpec::parse(text).unwrap();
        let scheme = build(&spec).unwrap();
        let n = scheme.slots();
        let lost: Vec<usize> = breaking_set(&spec).split_last().map(|(_, rest)| rest.to_vec()).unwrap();
        if lost.is_empty() {
            continue;
        }
        let mut nodes: Vec<Option<Network>> =
            network(1 + n + lost.len()).await.into_iter().map(Some).collect();
        let client = nodes[0].as_ref().unwrap().blocks().clone();
        let ids: Vec<PeerId> = nodes.iter().map(|n| n.as_ref().unwrap().handle().peer_id()).collect();
        let (holders, spares) = (ids[1..=n].to_vec(), ids[n + 1..].to_vec());
        let data = random(200_000 + i, 70 + i as u64);
        let placed = put_blocking(&client, &data, text, 32 << 10, &holders).await;
        for &slot in &lost {
            nodes[1 + slot].take().unwrap().shutdown().await;
        }
        let mut located: Vec<Option<PeerId>> = holders.iter().copied().map(Some).collect();
        let manifest = placed.put.manifest.clone();
        let repaired = repair_slots(&client, &manifest, &located, &lost, &spares, 2).await.unwrap();
        let lost_bytes: u64 = lost.iter().map(|s| manifest.piece_len(scheme.as_ref(), *s)).sum();
        assert_eq!(repaired.bytes_lost, lost_bytes, "{text}");
        assert!(repaired.bytes_written as f64 <= 1.05 * lost_bytes as f64 + 2048.0, "{text}: {repaired:?}");
        for (j, slot) in lost.iter().enumerate() {
            located[*slot] = Some(repaired.holders[j].parse().unwrap());
        }
        // Now stop originals until the rebuilt pieces are needed: the worst set that
        // avoids the rebuilt slots, if the scheme allows one, else any tolerated loss.
        let others: Vec<usize> = (0..n).filter(|s| !lost.contains(s)).take(scheme.tolerates()).collect();
        for &slot in &others {
            if let Some(node) = nodes[1 + slot].take() {
                node.shutdown().await;
            }
        }
        let (out, _) = get_blocking(&client, &placed, &located, 2).await.unwrap();
        assert!(out == data, "{text}: exact after repair");
        for n in nodes.into_iter().flatten() {
            n.shutdown().await;
        }
    }
}

/// A repair whose new holder vanishes fails cleanly and changes nothing recorded; the file
/// is still whole, and running the repair again (to a live peer) completes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_repair_leaves_the_file_no_worse_and_can_be_run_again() {
    use jewel_node::client::repair_slots;
    let mut nodes: Vec<Option<Network>> = network(8).await.into_iter().map(Some).collect();
    let client = nodes[0].as_ref().unwrap().blocks().clone();
    let ids: Vec<PeerId> = nodes.iter().map(|n| n.as_ref().unwrap().handle().peer_id()).collect();
    let holders = ids[1..6].to_vec();
    let data = random(300_000, 80);
    let placed = put_blocking(&client, &data, "jewels:3/5", 32 << 10, &holders).await;
    nodes[1].take().unwrap().shutdown().await;
    // The chosen new holder is gone before the repair starts.
    nodes[6].take().unwrap().shutdown().await;
    let located: Vec<Option<PeerId>> = holders.iter().copied().map(Some).collect();
    let manifest = placed.put.manifest.clone();
    let err = repair_slots(&client, &manifest, &located, &[0], &[ids[6]], 2).await.unwrap_err();
    assert!(matches!(err, ClientError::Upload { slot: 0, .. }), "{err}");
    let again = repair_slots(&client, &manifest, &located, &[0], &[ids[7]], 2).await.unwrap();
    assert_eq!(again.slots, vec![0]);
    // Slot 0 from its new holder, slots 1 and 2 stopped: only the rebuilt piece makes k.
    nodes[2].take().unwrap().shutdown().await;
    nodes[3].take().unwrap().shutdown().await;
    let mut now = located.clone();
    now[0] = Some(ids[7]);
    let (out, _) = get_blocking(&client, &placed, &now, 2).await.unwrap();
    assert!(out == data);
    for n in nodes.into_iter().flatten() {
        n.shutdown().await;
    }
}

/// A holder that is gone when its piece is sent: the put rebuilds that piece from the
/// others and places it on the next spare peer, and reports that placement.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_piece_whose_peer_is_gone_goes_to_a_spare() {
    let mut nodes: Vec<Option<Network>> = network(8).await.into_iter().map(Some).collect();
    let client = nodes[0].as_ref().unwrap().blocks().clone();
    let ids: Vec<PeerId> = nodes.iter().map(|n| n.as_ref().unwrap().handle().peer_id()).collect();
    nodes[2].take().unwrap().shutdown().await;
    let data = random(400_000, 90);
    // Slot 1 goes to the stopped peer; peers 6 and 7 are spares.
    let peers = ids[1..].to_vec();
    let placed = put_blocking(&client, &data, "jewels:3/5", 64 << 10, &peers).await;
    assert_eq!(placed.holders.len(), 5);
    assert_eq!(placed.holders[1], ids[6], "the lost piece went to the first spare");
    assert!(!placed.holders.contains(&ids[2]));
    // Stop two of the others: the piece on the spare is needed, and right.
    nodes[1].take().unwrap().shutdown().await;
    nodes[3].take().unwrap().shutdown().await;
    let holders: Vec<Option<PeerId>> = placed.holders.iter().copied().map(Some).collect();
    let (out, _) = get_blocking(&client, &placed, &holders, 2).await.unwrap();
    assert!(out == data);
    for n in nodes.into_iter().flatten() {
        n.shutdown().await;
    }
}

/// A holder that vanishes in the middle of receiving its piece (it accepted the upload and
/// took some of the data, then its whole node went away): the put rebuilds that piece onto
/// a spare, and the file needs it and reads back exact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_piece_whose_peer_vanishes_mid_upload_goes_to_a_spare() {
    use futures::StreamExt;
    use jewel_net::wire::{self, Request};
    let mut nodes: Vec<Option<Network>> = network(7).await.into_iter().map(Some).collect();
    let client = nodes[0].as_ref().unwrap().blocks().clone();
    let ids: Vec<PeerId> = nodes.iter().map(|n| n.as_ref().unwrap().handle().peer_id()).collect();
    let boot = nodes[0].as_ref().unwrap().handle().listeners().await.unwrap()[0]
        .clone()
        .with(MultiaddrProtocol::P2p(ids[0]));
    let config = NetConfig { bootstrap: vec![boot], serve_blocks: false, ..NetConfig::default() };
    let vanishing =
        Network::start(Keypair::generate_ed25519(), config, Arc::new(MemStore::new(None))).await.unwrap();
    let gone = vanishing.handle().peer_id();
    let mut incoming = vanishing.blocks().stream_control().accept(jewel_net::BLOCK_PROTOCOL).unwrap();
    // It says go, takes one frame of the piece, then tells the test it is mid-upload.
    let (mid, mut mid_rx) = tokio::sync::mpsc::channel(1);
    let taker = tokio::spawn(async move {
        while let Some((_, mut s)) = incoming.next().await {
            if let Ok(Request::Send { .. }) = Request::read(&mut s).await {
                wire::write_ok(&mut s).await.unwrap();
                let _ = wire::read_frame(&mut s).await.unwrap();
                mid.send(s).await.unwrap();
                return;
            }
        }
    });
    let data = random(3 << 20, 91);
    // Slot 1 on the vanishing peer; peers 5 and 6 are spares.
    let peers = vec![ids[1], gone, ids[2], ids[3], ids[4], ids[5], ids[6]];
    let put = {
        let (client, data) = (client.clone(), data.clone());
        tokio::spawn(async move { put_blocking(&client, &data, "jewels:3/5", 64 << 10, &peers).await })
    };
    let held_open = mid_rx.recv().await.expect("the vanishing peer received part of its piece");
    taker.await.unwrap();
    vanishing.shutdown().await;
    drop(held_open);
    let placed = put.await.unwrap();
    assert_eq!(placed.holders[1], ids[5], "the lost piece went to the first spare");
    assert!(!placed.holders.contains(&gone));
    // Stop two of the others: the rebuilt piece is needed, and right.
    nodes[1].take().unwrap().shutdown().await;
    nodes[2].take().unwrap().shutdown().await;
    let holders: Vec<Option<PeerId>> = placed.holders.iter().copied().map(Some).collect();
    let (out, _) = get_blocking(&client, &placed, &holders, 2).await.unwrap();
    assert!(out == data);
    for n in nodes.into_iter().flatten() {
        n.shutdown().await;
    }
}

/// A forged holders record (newer, naming peers that do not exist) costs a getter a bounded
/// time and nothing more: it finds the file through the manifest's providers (the holders,
/// which announce the manifest and not their pieces) and asks them which pieces they hold,
/// and gets the right manifest and holders.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_holders_record_costs_a_bounded_time() {
    use jewel_net::{Holder, HoldersRecord};
    use jewel_node::client::{find_file, publish_holders, LOOKUP_FOR};
    let nodes = network(9).await;
    let client = nodes[0].blocks().clone();
    let ids: Vec<PeerId> = nodes.iter().map(|n| n.handle().peer_id()).collect();
    let data = random(200_000, 93);
    let placed = put_blocking(&client, &data, "jewels:3/5", 64 << 10, &ids[1..6]).await;
    let file = placed.put.cap.manifest;
    let located: Vec<Option<PeerId>> = placed.holders.iter().copied().map(Some).collect();
    publish_holders(&client, file, &placed.put.manifest, &located).await.unwrap();
    // A forger publishes a newer record for the same file, naming peers that do not exist.
    let forged = HoldersRecord {
        group: file,
        seq: u64::MAX,
        holders: placed
            .put
            .manifest
            .pieces
            .iter()
            .map(|b| Holder {
                block: *b,
                peer: PeerId::random(),
                addrs: vec!["/ip4/127.0.0.1/tcp/9".parse().unwrap()],
            })
            .collect(),
    };
    nodes[6].handle().publish_holders(forged).await.unwrap();
    let t = std::time::Instant::now();
    let (manifest, holders) = find_file(nodes[8].blocks(), file, None).await.unwrap();
    assert_eq!(manifest, placed.put.manifest);
    let found = holders.iter().zip(&placed.holders).filter(|(h, p)| **h == Some(**p)).count();
    assert!(found >= 3, "enough true holders were found: {holders:?}");
    assert!(t.elapsed() < LOOKUP_FOR, "{:?}", t.elapsed());
    let (out, _) = get_blocking(nodes[8].blocks(), &placed, &holders, 2).await.unwrap();
    assert!(out == data);
    for n in nodes {
        n.shutdown().await;
    }
}

/// A holders record older than the one a node keeps is refused: a replayed record cannot
/// take a file's placement back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_older_holders_record_does_not_replace_a_newer_one() {
    use jewel_net::{Holder, HoldersRecord};
    let nodes = network(4).await;
    let group = jewel::BlockId([5; 32]);
    let record = |seq: u64, peer: PeerId| HoldersRecord {
        group,
        seq,
        holders: vec![Holder { block: jewel::BlockId([6; 32]), peer, addrs: vec![] }],
    };
    let (new, old) = (nodes[1].handle().peer_id(), nodes[2].handle().peer_id());
    // A publication returns once one close peer keeps the record, so each node that is to
    // answer below publishes the newer record too (a node keeps what it publishes): each
    // keeps it before the older one comes, which must not replace it.
    for n in &nodes[..3] {
        n.handle().publish_holders(record(20, new)).await.unwrap();
    }
    nodes[3].handle().publish_holders(record(10, old)).await.unwrap();
    // Every other node still answers with the newer one.
    for n in &nodes[1..3] {
        let got = n.handle().find_holders(group).await.unwrap().unwrap();
        assert_eq!((got.seq, got.holders[0].peer), (20, new));
    }
    for n in nodes {
        n.shutdown().await;
    }
}
