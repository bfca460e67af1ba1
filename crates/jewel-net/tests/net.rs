//! The network layer in one process: nodes on 127.0.0.1 find each other through the DHT
//! and move verified blocks; lying, full and overloaded peers are refused cleanly.

use std::sync::Arc;

use jewel::{BlockId, BlockStore, MemStore};
use jewel_net::wire::{self, Request, Status, WireError};
use jewel_net::{
    Keypair, Multiaddr, MultiaddrProtocol, NetConfig, NetError, NetEvent, Network, BLOCK_PROTOCOL,
};

fn data(len: usize, seed: u8) -> Vec<u8> {
    (0..len).map(|i| (i as u8).wrapping_mul(13).wrapping_add(seed)).collect()
}

/// A node whose store has no quota beyond its capacity (the quota has its own test).
async fn start(store: MemStore, bootstrap: Vec<jewel_net::Multiaddr>) -> Network {
    let quota = jewel_net::block::Quota { per_peer: Some(u64::MAX), newcomers: Some(u64::MAX) };
    let config = NetConfig { bootstrap, quota, ..NetConfig::default() };
    Network::start(Keypair::generate_ed25519(), config, Arc::new(store)).await.unwrap()
}

/// Node 0 first, then the others bootstrapping from it.
async fn network(n: usize, capacity: Option<u64>) -> (Vec<Network>, Vec<MemStore>) {
    let stores: Vec<MemStore> = (0..n).map(|_| MemStore::new(capacity)).collect();
    let first = start(stores[0].clone(), vec![]).await;
    let addr = first.handle().listeners().await.unwrap()[0].clone();
    let boot = addr.with(libp2p_peer(first.handle().peer_id()));
    let mut nodes = vec![first];
    for s in &stores[1..] {
        nodes.push(start(s.clone(), vec![boot.clone()]).await);
    }
    (nodes, stores)
}

/// Waits until `node` has announced `n` blocks (30 s at most, so a broken announcer fails
/// the test rather than hanging it).
async fn announced(node: &Network, n: u64) {
    let mut count = node.announced();
    let waited =
        tokio::time::timeout(std::time::Duration::from_secs(30), count.wait_for(|c| *c >= n)).await.is_ok();
    assert!(waited, "{} of {n} blocks announced", *count.borrow());
}

fn libp2p_peer(p: jewel_net::PeerId) -> jewel_net::MultiaddrProtocol<'static> {
    jewel_net::MultiaddrProtocol::P2p(p)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_nodes_move_verified_blocks_and_find_providers() {
    let (nodes, stores) = network(8, None).await;
    // Every node knows others through the DHT, not only the bootstrap peer it was given.
    let boot = nodes[0].handle().peer_id();
    for node in &nodes[1..] {
        let table = node.handle().routing_table().await.unwrap();
        let me = node.handle().peer_id();
        assert!(table.iter().any(|p| *p != boot && *p != me), "{me} knows only {table:?}");
    }
    let block = data(300_000, 1);
    let id = BlockId::of(&block);
    let holder = nodes[5].handle().peer_id();
    nodes[1].blocks().put_block(holder, id, &block).await.unwrap();
    assert!(stores[5].has(&id).unwrap());

    // The holder announces it by itself; a node that never talked to it finds it through
    // the DHT.
    announced(&nodes[5], 1).await;
    let found = nodes[7].handle().providers(id).await.unwrap();
    assert!(found.contains(&holder), "{found:?}");

    // Verified range reads, has, and a storage proof.
    let got = nodes[7].blocks().get_range(holder, id, block.len() as u64, 100_000, 50_000).await.unwrap();
    assert_eq!(got, block[100_000..150_000]);
    // Into a reused buffer full of stale bytes, at an offset, unaligned to chunk groups:
    // the range lands exactly there and nothing before it is touched.
    let mut reused = vec![0xee; 200_000];
    let range = (20_001, 70_000);
    nodes[7].blocks().get_range_into(holder, id, block.len() as u64, range, &mut reused, 1000).await.unwrap();
    assert!(reused[..1000].iter().all(|&b| b == 0xee));
    assert_eq!(reused[1000..71_000], block[20_001..90_001]);
    // Into a place inside a larger buffer: both ends unaligned, so the last chunk group
    // runs past the place; the bytes on either side stay as they were.
    let mut segment = vec![0xee; 100_000];
    let range = (16_385, 49_000);
    let place = &mut segment[3..49_003];
    nodes[7].blocks().get_range_into_slice(holder, id, block.len() as u64, range, place).await.unwrap();
    assert_eq!(segment[3..49_003], block[16_385..65_385]);
    assert!(segment[..3].iter().chain(&segment[49_003..]).all(|&b| b == 0xee));
    let short = &mut segment[..10];
    let err = nodes[7].blocks().get_range_into_slice(holder, id, block.len() as u64, range, short).await;
    assert!(
        matches!(err, Err(NetError::Fragment { source: jewel::store::FragmentError::Truncated, .. })),
        "a place of the wrong length is refused: {err:?}"
    );
    let other = BlockId::of(b"absent");
    assert_eq!(nodes[2].blocks().has(holder, &[id, other]).await.unwrap(), vec![true, false]);
    let moved = nodes[3].blocks().prove(holder, id, block.len() as u64, 7).await.unwrap();
    assert!(moved < 20_000, "a proof moves one chunk group and its path, not {moved} bytes");

    // A block that is not there is NotFound, not a hang.
    let err = nodes[2].blocks().get_range(holder, other, 10, 0, 10).await.unwrap_err();
    assert!(matches!(err, NetError::Wire(WireError::Refused { status: Status::NotFound, .. })), "{err}");
    for n in nodes {
        n.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lying_full_and_mismatched_peers_are_refused() {
    let (nodes, stores) = network(3, Some(200_000)).await;
    let a = nodes[0].blocks();
    let b = nodes[1].handle().peer_id();

    // Data that does not match the announced id is refused and not stored.
    let block = data(50_000, 2);
    let wrong = BlockId::of(b"something else");
    let err = a.put_block(b, wrong, &block).await.unwrap_err();
    assert!(matches!(err, NetError::Wire(WireError::Refused { status: Status::HashMismatch, .. })), "{err}");
    assert!(stores[1].list().unwrap().is_empty());

    // Over capacity: refused with a reason, before the data is sent.
    let big = data(300_000, 3);
    let err = a.put_block(b, BlockId::of(&big), &big).await.unwrap_err();
    match err {
        NetError::Wire(WireError::Refused { status: Status::Full, reason }) => {
            assert!(reason.contains("full"))
        }
        other => panic!("{other}"),
    }

    // A peer whose disk rotted: it refuses to serve (its own check fails) ...
    let id = BlockId::of(&block);
    a.put_block(b, id, &block).await.unwrap();
    assert!(stores[1].tamper(&id, |d| d[10] ^= 1));
    let err = nodes[2].blocks().get_range(b, id, block.len() as u64, 0, 100).await.unwrap_err();
    assert!(matches!(err, NetError::Wire(WireError::Refused { status: Status::Corrupt, .. })), "{err}");
    // ... and asking with the wrong size (a stale or forged manifest, say) is caught by
    // verification: the holder's true size does not match.
    let err = nodes[2].blocks().get_range(b, id, block.len() as u64 + 1, 40_000, 100).await.unwrap_err();
    assert!(matches!(err, NetError::Fragment { .. }), "{err}");
    for n in nodes {
        n.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_frames_get_clear_refusals() {
    use futures::AsyncWriteExt;
    let (nodes, _stores) = network(2, None).await;
    let peer = nodes[1].handle().peer_id();
    let mut control = nodes[0].blocks().stream_control();
    // An unknown protocol version.
    let mut s = control.open_stream(peer, BLOCK_PROTOCOL).await.unwrap();
    s.write_all(b"JB\x09\x02").await.unwrap();
    let err = wire::read_status(&mut s).await.unwrap_err();
    assert!(matches!(err, WireError::Refused { status: Status::UnsupportedVersion, .. }), "{err}");
    // An oversized request.
    let mut s = control.open_stream(peer, BLOCK_PROTOCOL).await.unwrap();
    let req = Request::Get { id: BlockId::of(b"x"), offset: 0, len: wire::MAX_GET }.encode();
    let mut req = req;
    req[44..52].copy_from_slice(&(wire::MAX_GET * 4).to_le_bytes());
    s.write_all(&req).await.unwrap();
    let err = wire::read_status(&mut s).await.unwrap_err();
    assert!(matches!(err, WireError::Refused { status: Status::BadRequest, .. }), "{err}");
    // A put whose stream ends early is refused, and the server keeps serving.
    let mut s = control.open_stream(peer, BLOCK_PROTOCOL).await.unwrap();
    s.write_all(&Request::Put { id: BlockId::of(b"y"), size: 1000 }.encode()).await.unwrap();
    wire::read_status(&mut s).await.unwrap();
    s.write_all(&[0u8; 10]).await.unwrap();
    s.close().await.unwrap();
    let err = wire::read_status(&mut s).await.unwrap_err();
    assert!(matches!(err, WireError::Refused { status: Status::BadRequest, .. }), "{err}");
    let block = data(1000, 9);
    nodes[0].blocks().put_block(peer, BlockId::of(&block), &block).await.unwrap();
    for n in nodes {
        n.shutdown().await;
    }
}

/// Gets reuse one stream per peer rather than opening one per read, and a server answers
/// request after request on one stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gets_reuse_their_stream_and_a_stream_carries_many_requests() {
    use futures::AsyncWriteExt;
    let (nodes, _stores) = network(2, None).await;
    let (a, holder) = (nodes[0].blocks(), nodes[1].handle().peer_id());
    let block = data(200_000, 4);
    let id = BlockId::of(&block);
    a.put_block(holder, id, &block).await.unwrap();
    let before = a.streams_opened();
    for i in 0..6u64 {
        let (off, len) = (i * 30_000, 25_000);
        let got = a.get_range(holder, id, block.len() as u64, off, len).await.unwrap();
        assert!(got == block[off as usize..(off + len) as usize], "read {i}");
    }
    assert_eq!(a.streams_opened() - before, 1, "six gets in a row use one stream");

    // By hand: three requests, one stream, three answers.
    let mut s = a.stream_control().open_stream(holder, BLOCK_PROTOCOL).await.unwrap();
    for off in [0u64, 70_000, 150_000] {
        s.write_all(&Request::Get { id, offset: off, len: 1000 }.encode()).await.unwrap();
        let (size, frag) = wire::read_fragment(&mut s).await.unwrap();
        let got = jewel::store::decode_fragment(id.into(), size, off, 1000, &frag).unwrap();
        assert!(got == block[off as usize..off as usize + 1000]);
    }
    s.write_all(&Request::Has { ids: vec![id] }.encode()).await.unwrap();
    assert_eq!(wire::read_has(&mut s, 1).await.unwrap(), vec![true]);
    for n in nodes {
        n.shutdown().await;
    }
}

/// Sends `block` with SEND (id at the end) in 70 kB chunks, announcing `max` bytes; the
/// writer says the data is complete unless `cut`.
async fn send_maybe_cut(
    net: &jewel_net::BlockClient,
    peer: jewel_net::PeerId,
    max: u64,
    block: &[u8],
    cut: bool,
) -> (BlockId, Result<(), NetError>) {
    let (tx, rx) = tokio::sync::mpsc::channel(2);
    let mut chunks: Vec<Vec<u8>> = block.chunks(70_000).map(<[u8]>::to_vec).collect();
    if !cut {
        chunks.push(Vec::new());
    }
    let feed = tokio::spawn(async move {
        for c in chunks {
            if tx.send(c).await.is_err() {
                break;
            }
        }
    });
    let r = net.send_block(peer, max, rx).await;
    feed.await.unwrap();
    r
}

async fn send(
    net: &jewel_net::BlockClient,
    peer: jewel_net::PeerId,
    max: u64,
    block: &[u8],
) -> (BlockId, Result<(), NetError>) {
    send_maybe_cut(net, peer, max, block, false).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_streams_a_block_whose_id_comes_last() {
    use futures::AsyncWriteExt;
    let (nodes, stores) = network(2, Some(400_000)).await;
    let a = nodes[0].blocks();
    let b = nodes[1].handle().peer_id();

    // A good send: the id is the data's hash, known to both sides only at the end.
    let block = data(250_000, 4);
    let (id, r) = send(a, b, 250_000, &block).await;
    r.unwrap();
    assert_eq!(id, BlockId::of(&block));
    assert!(stores[1].has(&id).unwrap());

    // A writer that stops before its data is whole (a put that failed) commits nothing,
    // though what it sent hashes to an id of its own. Issue 19: a cut put left its partial
    // pieces committed, charged to the owner's quota.
    let cut = data(200_000, 6);
    let (id, r) = send_maybe_cut(a, b, 250_000, &cut, true).await;
    assert!(r.is_err(), "a cut send must fail: {r:?}");
    assert!(!stores[1].has(&id).unwrap(), "a cut send stored its partial data");

    // More data than announced: refused, nothing stored, and the id is still computed.
    let other = data(120_000, 5);
    let (id, r) = send(a, b, 100_000, &other).await;
    assert_eq!(id, BlockId::of(&other));
    assert!(matches!(r, Err(NetError::Wire(WireError::Refused { status: Status::BadRequest, .. }))), "{r:?}");
    assert!(!stores[1].has(&id).unwrap());

    // Over capacity: refused before any data moves.
    let (_, r) = send(a, b, 300_000, &other).await;
    assert!(matches!(r, Err(NetError::Wire(WireError::Refused { status: Status::Full, .. }))), "{r:?}");

    // A sender whose end names another id: refused as a hash mismatch, nothing stored.
    let mut s = a.stream_control().open_stream(b, BLOCK_PROTOCOL).await.unwrap();
    s.write_all(&Request::Send { max_size: 1000 }.encode()).await.unwrap();
    wire::read_status(&mut s).await.unwrap();
    wire::write_frame(&mut s, &[7u8; 500]).await.unwrap();
    wire::write_end(&mut s, &BlockId::of(b"not this")).await.unwrap();
    let err = wire::read_status(&mut s).await.unwrap_err();
    assert!(matches!(err, WireError::Refused { status: Status::HashMismatch, .. }), "{err}");
    assert!(!stores[1].has(&BlockId::of(&[7u8; 500])).unwrap());
    assert_eq!(stores[1].list().unwrap().len(), 1, "only the good block is stored");
    for n in nodes {
        n.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leases_keep_blocks_until_no_file_needs_them() {
    let (nodes, stores) = network(2, None).await;
    let a = nodes[0].blocks();
    let b = nodes[1].handle().peer_id();
    let block = data(40_000, 6);
    let id = BlockId::of(&block);
    a.put_block(b, id, &block).await.unwrap();
    let (f1, f2) = (BlockId::of(b"file one"), BlockId::of(b"file two"));
    // Two files share the block (same content).
    assert_eq!(a.lease(b, f1, 3600, &[id]).await.unwrap(), vec![true]);
    assert_eq!(a.lease(b, f2, 3600, &[id]).await.unwrap(), vec![true]);
    // Releasing one file keeps it; releasing the other deletes it at once.
    a.lease(b, f1, 0, &[id]).await.unwrap();
    assert!(stores[1].has(&id).unwrap(), "file two still needs it");
    a.lease(b, f2, 0, &[id]).await.unwrap();
    assert!(!stores[1].has(&id).unwrap(), "nobody needs it any more");
    // A renewal for a block the holder does not have is answered as such.
    assert_eq!(a.lease(b, f1, 3600, &[id]).await.unwrap(), vec![false]);
    for n in nodes {
        n.shutdown().await;
    }
}

/// A stranger who leases a block it did not store cannot keep it past its sender's
/// release; a block it stored itself stays until its own leases go.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_strangers_lease_does_not_outlive_the_senders_release() {
    let (nodes, stores) = network(3, None).await;
    let (owner, stranger) = (nodes[0].blocks(), nodes[2].blocks());
    let holder = nodes[1].handle().peer_id();
    let block = data(30_000, 8);
    let id = BlockId::of(&block);
    owner.put_block(holder, id, &block).await.unwrap();
    let file = BlockId::of(b"the file");
    owner.lease(holder, file, 3600, &[id]).await.unwrap();
    assert_eq!(stranger.lease(holder, BlockId::of(b"pin"), 90 * 24 * 3600, &[id]).await.unwrap(), vec![true]);
    // The stranger's release changes nothing of the owner's.
    stranger.lease(holder, BlockId::of(b"pin"), 0, &[id]).await.unwrap();
    assert!(stores[1].has(&id).unwrap(), "the owner's lease keeps it");
    stranger.lease(holder, BlockId::of(b"pin"), 3600, &[id]).await.unwrap();
    owner.lease(holder, file, 0, &[id]).await.unwrap();
    assert!(!stores[1].has(&id).unwrap(), "the sender released it: the stranger's lease does not keep it");
    for n in nodes {
        n.shutdown().await;
    }
}

/// QUIC carries the block protocol as well as TCP does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocks_move_over_quic() {
    let quic: jewel_net::Multiaddr = "/ip4/127.0.0.1/udp/0/quic-v1".parse().unwrap();
    let start_quic = |bootstrap: Vec<jewel_net::Multiaddr>, store: MemStore| {
        let config = NetConfig { listen: vec![quic.clone()], bootstrap, ..NetConfig::default() };
        Network::start(Keypair::generate_ed25519(), config, Arc::new(store))
    };
    let first = start_quic(vec![], MemStore::new(None)).await.unwrap();
    let addr = first.handle().listeners().await.unwrap()[0].clone();
    assert!(addr.to_string().contains("quic-v1"), "{addr}");
    let store = MemStore::new(None);
    let second =
        start_quic(vec![addr.with(libp2p_peer(first.handle().peer_id()))], store.clone()).await.unwrap();
    let block = data(200_000, 8);
    let id = BlockId::of(&block);
    first.blocks().put_block(second.handle().peer_id(), id, &block).await.unwrap();
    assert!(store.has(&id).unwrap());
    let got = first.blocks().get_range(second.handle().peer_id(), id, 200_000, 1000, 5000).await.unwrap();
    assert_eq!(got, block[1000..6000]);
    first.shutdown().await;
    second.shutdown().await;
}

/// Provider records live in memory: a holder that restarts (same identity, same store) into
/// a network that has forgotten its records announces what it already stores, so its
/// blocks can be found again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_holder_announces_what_it_already_stores() {
    let key = Keypair::generate_ed25519();
    let store = MemStore::new(None);
    let with_key = |bootstrap: Vec<Multiaddr>| {
        let config = NetConfig { bootstrap, ..NetConfig::default() };
        Network::start(key.clone(), config, Arc::new(store.clone()))
    };
    let boot_of = |n: &Network| {
        let (n, id) = (n.handle().clone(), n.handle().peer_id());
        async move { n.listeners().await.unwrap()[0].clone().with(libp2p_peer(id)) }
    };
    // First life: blocks arrive over the network and are announced.
    let (first, _) = network(3, None).await;
    let holder = with_key(vec![boot_of(&first[0]).await]).await.unwrap();
    let blocks: Vec<Vec<u8>> = (0..3).map(|i| data(10_000 + i, i as u8)).collect();
    for b in &blocks {
        first[1].blocks().put_block(holder.handle().peer_id(), BlockId::of(b), b).await.unwrap();
    }
    announced(&holder, 3).await;
    holder.shutdown().await;
    for n in first {
        n.shutdown().await;
    }
    // Second life, in a network that never heard of these blocks.
    let (second, _) = network(3, None).await;
    let none = second[2].handle().providers(BlockId::of(&blocks[0])).await.unwrap();
    assert!(none.is_empty(), "{none:?}");
    let holder = with_key(vec![boot_of(&second[0]).await]).await.unwrap();
    announced(&holder, 3).await;
    for b in &blocks {
        let found = second[2].handle().providers(BlockId::of(b)).await.unwrap();
        assert!(found.contains(&holder.handle().peer_id()), "{found:?}");
    }
    holder.shutdown().await;
    for n in second {
        n.shutdown().await;
    }
}

/// Waits (30 s at most) for an event that `want` accepts, and returns it.
async fn event(
    what: &str,
    rx: &mut tokio::sync::broadcast::Receiver<NetEvent>,
    want: impl Fn(&NetEvent) -> bool,
) -> NetEvent {
    let found = tokio::time::timeout(std::time::Duration::from_secs(30), async {
        loop {
            match rx.recv().await {
                Ok(e) if want(&e) => return e,
                Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(e) => panic!("event stream ended: {e}"),
            }
        }
    })
    .await;
    found.unwrap_or_else(|_| panic!("no {what} within 30 s"))
}

/// A peer that can only be reached through a relay: the relay reserves it a slot, a
/// second peer dials its circuit address, DCUtR replaces the relayed connection with a
/// direct one, and blocks move between them. AutoNAT (checking loopback addresses too,
/// in local mode) finds the relay's clients reachable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_dcutr_and_autonat_work_between_real_peers() {
    let config = |listen: Vec<Multiaddr>, bootstrap: Vec<Multiaddr>, relay_server: bool| NetConfig {
        listen,
        bootstrap,
        relay_server,
        autonat_local: true,
        ..NetConfig::default()
    };
    let tcp: Multiaddr = "/ip4/127.0.0.1/tcp/0".parse().unwrap();
    let start = |c: NetConfig| Network::start(Keypair::generate_ed25519(), c, Arc::new(MemStore::new(None)));
    let relay = start(config(vec![tcp.clone()], vec![], true)).await.unwrap();
    let relay_addr =
        relay.handle().listeners().await.unwrap()[0].clone().with(libp2p_peer(relay.handle().peer_id()));
    let circuit = relay_addr.clone().with(MultiaddrProtocol::P2pCircuit);

    // A listens on the relay too; start returns once the reservation is accepted.
    let a = start(config(vec![tcp.clone(), circuit.clone()], vec![relay_addr.clone()], false)).await.unwrap();
    let mut a_events = a.handle().events();
    let a_id = a.handle().peer_id();
    let listening = a.handle().listeners().await.unwrap();
    assert!(listening.iter().any(|l| l.iter().any(|p| p == MultiaddrProtocol::P2pCircuit)), "{listening:?}");
    let reach = event("AutoNAT verdict", &mut a_events, |e| matches!(e, NetEvent::Reachability { .. })).await;
    assert!(matches!(reach, NetEvent::Reachability { public: Some(_) }), "{reach:?}");

    // B reaches A through the relay first; DCUtR then connects them directly. A hole punch
    // has deadlines and can fail on a starved machine (seen with both cores busy), so a
    // fresh B tries again, up to five times: the test asks DCUtR to succeed once, and
    // every attempt must end in an upgrade or a reported failure.
    let mut upgraded_b = None;
    for attempt in 1..=5 {
        let b = start(config(vec![tcp.clone()], vec![], false)).await.unwrap();
        let mut b_events = b.handle().events();
        let b_id = b.handle().peer_id();
        let through_relay = circuit.clone().with(libp2p_peer(a_id));
        assert_eq!(b.handle().dial(through_relay).await.unwrap(), a_id);
        // The side that runs the hole punch reports it: A about B, or B about A.
        let about = |who: jewel_net::PeerId| {
            move |e: &NetEvent| match e {
                NetEvent::DirectUpgrade { peer } | NetEvent::DirectUpgradeFailed { peer, .. } => *peer == who,
                _ => false,
            }
        };
        let outcome = tokio::select! {
            e = event("DCUtR on A", &mut a_events, about(b_id)) => e,
            e = event("DCUtR on B", &mut b_events, about(a_id)) => e,
        };
        if matches!(outcome, NetEvent::DirectUpgrade { .. }) {
            upgraded_b = Some(b);
            break;
        }
        eprintln!("hole punch attempt {attempt}: {outcome:?}");
        b.shutdown().await;
    }
    let b = upgraded_b.expect("DCUtR upgraded none of five relayed connections");

    let block = data(50_000, 9);
    let id = BlockId::of(&block);
    b.blocks().put_block(a_id, id, &block).await.unwrap();
    assert_eq!(
        b.blocks().get_range(a_id, id, block.len() as u64, 0, block.len() as u64).await.unwrap(),
        block
    );
}

/// One unreachable bootstrap peer among several does not stop a node from starting; when
/// none can be reached, starting fails with the reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_bootstrap_peer_is_skipped_unless_it_is_the_only_one() {
    let (nodes, _) = network(2, None).await;
    let live = nodes[0].handle().listeners().await.unwrap()[0]
        .clone()
        .with(libp2p_peer(nodes[0].handle().peer_id()));
    // A port nothing listens on any more.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let dead: Multiaddr =
        format!("/ip4/127.0.0.1/tcp/{port}/p2p/{}", nodes[1].handle().peer_id()).parse().unwrap();

    let node = start(MemStore::new(None), vec![dead.clone(), live]).await;
    assert!(node.handle().routing_table().await.unwrap().contains(&nodes[0].handle().peer_id()));

    let config = NetConfig { bootstrap: vec![dead], ..NetConfig::default() };
    let err = Network::start(Keypair::generate_ed25519(), config, Arc::new(MemStore::new(None))).await;
    assert!(matches!(err, Err(NetError::Dial { .. })), "{:?}", err.err());
}

/// A peer that is gone costs one failed dial: requests to it that follow within a few
/// seconds fail at once from that failure, concurrent ones share it, and the peer is
/// reachable again as soon as it connects.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_peer_costs_one_failed_dial() {
    let (mut nodes, _) = network(3, None).await;
    let gone = nodes.remove(2);
    let (a, dead) = (nodes[0].blocks().clone(), gone.handle().peer_id());
    a.net().connect(dead).await.unwrap();
    gone.shutdown().await;
    // Wait until the connection is seen to be closed (a request on it fails).
    let block = data(1000, 9);
    let id = BlockId::of(&block);
    let first = a.put_block(dead, id, &block).await.unwrap_err();
    assert!(matches!(first, NetError::OpenStream { .. } | NetError::Wire(_)), "{first}");
    // Eight more at once: every one fails at once from the remembered failure.
    let t = std::time::Instant::now();
    let ids = [id];
    let asks = (0..8).map(|_| a.has(dead, &ids));
    for r in futures::future::join_all(asks).await {
        let e = r.unwrap_err();
        assert!(e.to_string().contains(" s ago)"), "answered from the failed dial: {e}");
    }
    assert!(t.elapsed() < std::time::Duration::from_secs(1), "{:?}", t.elapsed());
    for n in nodes {
        n.shutdown().await;
    }
}

/// Peers say through identify whether they serve the block protocol, so that one that does
/// not is never picked to hold a piece.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_say_whether_they_serve_blocks() {
    let (nodes, _) = network(2, None).await;
    let boot = nodes[0].handle().listeners().await.unwrap()[0]
        .clone()
        .with(libp2p_peer(nodes[0].handle().peer_id()));
    let config = NetConfig { bootstrap: vec![boot], serve_blocks: false, ..NetConfig::default() };
    let bystander =
        Network::start(Keypair::generate_ed25519(), config, Arc::new(MemStore::new(None))).await.unwrap();
    let asker = nodes[1].handle();
    asker.connect(bystander.handle().peer_id()).await.unwrap();
    let about = |peers: &[jewel_net::PeerInfo], who: jewel_net::PeerId| {
        peers.iter().find(|p| p.peer == who.to_string()).and_then(|p| p.blocks)
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let peers = asker.peers().await.unwrap();
        let (server, bystanding) =
            (about(&peers, nodes[0].handle().peer_id()), about(&peers, bystander.handle().peer_id()));
        if server.is_some() && bystanding.is_some() {
            assert_eq!((server, bystanding), (Some(true), Some(false)));
            break;
        }
        assert!(std::time::Instant::now() < deadline, "identify never told: {peers:?}");
        tokio::task::yield_now().await;
    }
    bystander.shutdown().await;
    for n in nodes {
        n.shutdown().await;
    }
}

/// A stranger cannot make a holder keep a block for ever: a lease of 136 years is granted
/// for 90 days.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leases_are_capped() {
    let (nodes, _) = network(1, None).await;
    let boot = nodes[0].handle().listeners().await.unwrap()[0]
        .clone()
        .with(libp2p_peer(nodes[0].handle().peer_id()));
    let book = Arc::new(jewel::lease::LeaseBook::in_memory().unwrap());
    let config = NetConfig { bootstrap: vec![boot], leases: Some(book.clone()), ..NetConfig::default() };
    let holder =
        Network::start(Keypair::generate_ed25519(), config, Arc::new(MemStore::new(None))).await.unwrap();
    let block = data(10_000, 7);
    let id = BlockId::of(&block);
    let a = nodes[0].blocks();
    a.put_block(holder.handle().peer_id(), id, &block).await.unwrap();
    let file = BlockId::of(b"a file");
    assert_eq!(a.lease(holder.handle().peer_id(), file, u32::MAX, &[id]).await.unwrap(), vec![true]);
    let expiry = book.expiry(&id).unwrap().unwrap();
    let now = jewel::lease::now();
    assert!(expiry <= now + jewel::lease::MAX_LEASE_SECS, "expires in {} s", expiry - now);
    assert!(
        expiry + 60 >= now + jewel::lease::MAX_LEASE_SECS,
        "granted the cap, not less: {} s",
        expiry - now
    );
    holder.shutdown().await;
    for n in nodes {
        n.shutdown().await;
    }
}

/// A holder's store error reaches the asker as a status and a reason that names nothing of
/// the holder's machine: its local paths stay in its own log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_sent_to_peers_hold_no_local_paths() {
    let (nodes, _) = network(1, None).await;
    let boot = nodes[0].handle().listeners().await.unwrap()[0]
        .clone()
        .with(libp2p_peer(nodes[0].handle().peer_id()));
    let dir = tempfile::tempdir().unwrap();
    let store = jewel::FsStore::open(dir.path().join("store"), None).unwrap();
    let config = NetConfig { bootstrap: vec![boot], ..NetConfig::default() };
    let holder = Network::start(Keypair::generate_ed25519(), config, Arc::new(store.clone())).await.unwrap();
    let block = data(50_000, 8);
    let id = BlockId::of(&block);
    let a = nodes[0].blocks();
    a.put_block(holder.handle().peer_id(), id, &block).await.unwrap();
    // The block's file turns into a link to itself: opening it fails with an I/O error
    // that names the path.
    let hex = id.to_string();
    let path = dir.path().join("store").join("blocks").join(&hex[..2]).join(&hex);
    std::fs::remove_file(&path).unwrap();
    std::os::unix::fs::symlink(&path, &path).unwrap();
    let err = a.get_range(holder.handle().peer_id(), id, block.len() as u64, 0, 1000).await.unwrap_err();
    match &err {
        NetError::Wire(WireError::Refused { status: Status::Internal, reason }) => {
            assert!(!reason.contains(dir.path().to_str().unwrap()), "a local path went to a peer: {reason}");
        }
        other => panic!("{other}"),
    }
    holder.shutdown().await;
    for n in nodes {
        n.shutdown().await;
    }
}

/// Many requests at once to one holder, from several peers: none is dropped. (libp2p-stream
/// queued one inbound stream at a time and dropped the rest; ours queues a bounded number.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_to_one_holder_all_succeed() {
    let (nodes, _) = network(9, None).await;
    let holder = nodes[0].handle().peer_id();
    let block = data(20_000, 9);
    let id = BlockId::of(&block);
    nodes[1].blocks().put_block(holder, id, &block).await.unwrap();
    let ids = [id];
    for round in 0..20 {
        let asks = nodes[1..].iter().flat_map(|n| (0..2).map(|_| n.blocks().has(holder, &ids)));
        let answers = futures::future::join_all(asks).await;
        let failed: Vec<String> =
            answers.iter().filter_map(|a| a.as_ref().err().map(|e| e.to_string())).collect();
        assert!(failed.is_empty(), "round {round}: {} of 16 failed: {failed:?}", failed.len());
    }
    for n in nodes {
        n.shutdown().await;
    }
}

/// The slow-upload attack: 9 throwaway identities at `ip`, each opening 8 uploads to
/// `holder` that send their header and, once the holder says go, one byte, then nothing.
/// Returns the attackers and the uploads the holder took on (the others were refused as
/// busy). The holder dials them, so that they are at `ip` for it (libp2p-tcp dials from the
/// unspecified address: on loopback, every node's own dials come from 127.0.0.1).
async fn trickle(holder: &Network, ip: &str) -> (Vec<Network>, Vec<libp2p::Stream>) {
    use futures::AsyncWriteExt;
    let target = holder.handle().peer_id();
    let mut attackers = Vec::new();
    let mut held = Vec::new();
    for _ in 0..9 {
        let config = NetConfig {
            listen: vec![format!("/ip4/{ip}/tcp/0").parse().unwrap()],
            serve_blocks: false,
            ..NetConfig::default()
        };
        let a =
            Network::start(Keypair::generate_ed25519(), config, Arc::new(MemStore::new(None))).await.unwrap();
        let at = a.handle().listeners().await.unwrap()[0].clone();
        assert!(at.to_string().starts_with(&format!("/ip4/{ip}/")), "{at}");
        // The attacker's side of the connection may be a moment behind the holder's: it
        // waits for its own report of it.
        let mut events = a.handle().events();
        holder.handle().dial(at).await.unwrap();
        event(
            "the holder's connection",
            &mut events,
            |e| matches!(e, NetEvent::Connected { peer } if *peer == target),
        )
        .await;
        for i in 0..8u8 {
            let mut s = a.blocks().stream_control().open_stream(target, BLOCK_PROTOCOL).await.unwrap();
            s.write_all(&Request::Put { id: BlockId([i; 32]), size: 1 << 20 }.encode()).await.unwrap();
            s.flush().await.unwrap();
            if wire::read_status(&mut s).await.is_ok() {
                s.write_all(&[0u8]).await.unwrap();
                s.flush().await.unwrap();
                held.push(s);
            }
        }
        attackers.push(a);
    }
    (attackers, held)
}

/// An honest peer's put and read of a 100 kB block through `holder`.
async fn honest_put_and_get(honest: &Network, holder: jewel_net::PeerId, seed: u8) {
    let block = data(100_000, seed);
    let id = BlockId::of(&block);
    honest.blocks().put_block(holder, id, &block).await.unwrap();
    assert_eq!(
        honest.blocks().get_range(holder, id, block.len() as u64, 0, 1000).await.unwrap(),
        block[..1000]
    );
}

/// The slow-upload lock-out, from one address: the trickles hold every permit the holder
/// gives that address. Uploads must keep moving, so the holder drops them (after
/// `data_stall`), and an honest peer at the same address, which waits for a permit
/// meanwhile (a busy holder is asked again), gets its upload and read through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trickling_uploads_cannot_lock_a_holder_out() {
    use futures::AsyncReadExt;
    let (nodes, _) = network(1, None).await;
    let boot = nodes[0].handle().listeners().await.unwrap()[0]
        .clone()
        .with(libp2p_peer(nodes[0].handle().peer_id()));
    let config = NetConfig {
        bootstrap: vec![boot.clone()],
        data_stall: std::time::Duration::from_millis(800),
        ..NetConfig::default()
    };
    let holder =
        Network::start(Keypair::generate_ed25519(), config, Arc::new(MemStore::new(None))).await.unwrap();
    let target = holder.handle().peer_id();
    let (attackers, held) = trickle(&holder, "127.0.0.1").await;
    assert_eq!(held.len(), jewel_net::block::MAX_PER_IP, "the holder took on its limit for one address");
    honest_put_and_get(&nodes[0], target, 10).await;
    // The trickling streams were closed by the holder.
    for mut s in held {
        let mut rest = Vec::new();
        let _ =
            tokio::time::timeout(std::time::Duration::from_secs(10), s.read_to_end(&mut rest)).await.unwrap();
    }
    for a in attackers {
        a.shutdown().await;
    }
    holder.shutdown().await;
    for n in nodes {
        n.shutdown().await;
    }
}

/// The same attack from another address (127.0.0.2) leaves room for everyone else: the
/// honest peer's put and read go through at once, while the holder still holds the
/// trickles (they are dropped only after the 15 s stall allowance).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strangers_at_one_address_leave_room_for_the_rest() {
    use futures::{AsyncReadExt, FutureExt};
    let (nodes, _) = network(2, None).await;
    let target = nodes[1].handle().peer_id();
    let (attackers, mut held) = trickle(&nodes[1], "127.0.0.2").await;
    assert_eq!(held.len(), jewel_net::block::MAX_PER_IP, "the holder took on its limit for one address");
    honest_put_and_get(&nodes[0], target, 11).await;
    let mut buf = [0u8; 1];
    let open =
        held.iter_mut().filter_map(|s| s.read(&mut buf).now_or_never().is_none().then_some(())).count();
    assert_eq!(open, held.len(), "the honest requests did not wait for the trickles to be dropped");
    for a in attackers {
        a.shutdown().await;
    }
    for n in nodes {
        n.shutdown().await;
    }
}

/// Strangers' uploads are bounded twice over: each peer may fill a share of the holder's
/// store, and all new peers together another (identities are free). A peer the holder has
/// known for a week gets its own share even when the newcomers' one is used up; a refusal
/// comes before any data, with the reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_peer_and_all_new_peers_get_a_bounded_share_of_a_holder() {
    let leases = Arc::new(jewel::lease::LeaseBook::in_memory().unwrap());
    let store = MemStore::new(None);
    let quota = jewel_net::block::Quota { per_peer: Some(250_000), newcomers: Some(500_000) };
    let config = NetConfig { leases: Some(leases.clone()), quota, ..NetConfig::default() };
    let holder = Network::start(Keypair::generate_ed25519(), config, Arc::new(store.clone())).await.unwrap();
    let boot =
        holder.handle().listeners().await.unwrap()[0].clone().with(libp2p_peer(holder.handle().peer_id()));
    let mut peers = Vec::new();
    for _ in 0..4 {
        peers.push(start(MemStore::new(None), vec![boot.clone()]).await);
    }
    let target = holder.handle().peer_id();
    let put = |p: usize, len: usize, seed: u8| {
        let blocks = peers[p].blocks().clone();
        async move {
            let block = data(len, seed);
            blocks.put_block(target, BlockId::of(&block), &block).await
        }
    };
    let refused = |r: Result<(), NetError>, says: &str| match r {
        Err(NetError::Wire(WireError::Refused { status: Status::Full, reason })) => {
            assert!(reason.contains(says), "{reason}")
        }
        other => panic!("expected a refusal saying {says:?}, got {other:?}"),
    };

    // A peer's own share: 200 kB fits, 100 kB more does not.
    put(0, 200_000, 1).await.unwrap();
    refused(put(0, 100_000, 2).await, "this peer's share of the holder is full");
    // Another new peer has its own share, but all new peers share 500 kB: the third is
    // refused though its own share is empty.
    put(1, 200_000, 3).await.unwrap();
    refused(put(2, 200_000, 4).await, "no more from new peers");
    assert_eq!(store.list().unwrap().len(), 2, "nothing of the refused uploads was stored");

    // A peer first seen here 8 days ago is not new: its share is its own.
    let old = peers[3].handle().peer_id().to_bytes();
    let eight_days_ago = jewel::lease::now() - 8 * 24 * 3600;
    leases.charge(&BlockId([9; 32]), &old, 1, eight_days_ago).unwrap();
    put(3, 200_000, 5).await.unwrap();

    // Collected blocks give their bytes back: the first peer may store again.
    let first = BlockId::of(&data(200_000, 1));
    assert!(store.remove(&first).unwrap());
    leases.forget(&first).unwrap();
    put(0, 200_000, 6).await.unwrap();
    for n in peers.into_iter().chain([holder]) {
        n.shutdown().await;
    }
}

/// Signed name records (a user's index heads): a valid one is found from any node; one
/// that is forged (signed by someone else for the user) or replayed (an older sequence
/// number) is refused by the peers that hold the record and by the reader, so a reader
/// always gets the user's newest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn name_records_are_verified_and_never_go_back() {
    use jewel::names::{self, NameRecord, Sealed};
    let (nodes, _stores) = network(4, None).await;
    let user = jewel::user::UserKey::generate().unwrap();
    let value_key = user.index_key();
    let slot = names::device_slot(7);
    let key = names::key(&user.signing_key().verifying_key().to_bytes(), &slot);
    let sign =
        |seq: u64, value: &[u8]| NameRecord::sign(user.signing_key(), slot, seq, &value_key, value).unwrap();
    nodes[0].handle().publish_name(sign(10, b"ten")).await.unwrap();
    let found = nodes[3].handle().find_name(key.clone()).await.unwrap().expect("the record is found");
    assert_eq!((found.seq, found.open(&value_key).unwrap()), (10, b"ten".to_vec()));
    // Every node finds it before the attacks (its publication reaches the others as it goes).
    for n in &nodes {
        let mut tries = 0;
        while n.handle().find_name(key.clone()).await.unwrap().map(|r| r.seq) != Some(10) {
            tries += 1;
            assert!(tries < 100, "node never found the record");
            tokio::task::yield_now().await;
        }
    }

    // Forged: a higher sequence number, signed by another key in the user's name.
    let mallory = jewel::user::UserKey::generate().unwrap();
    let mut forged = NameRecord::sign(mallory.signing_key(), slot, 99, &value_key, b"evil").unwrap();
    forged.user = user.signing_key().verifying_key().to_bytes();
    let _ = nodes[1].handle().publish_name(forged).await;
    // Replayed: a genuine older record.
    let _ = nodes[2].handle().publish_name(sign(5, b"five")).await;
    for n in &nodes {
        let found = n.handle().find_name(key.clone()).await.unwrap().expect("still found");
        assert_eq!(found.seq, 10, "a forged or replayed record replaced the newest");
    }
    // A newer genuine one replaces it everywhere.
    nodes[1].handle().publish_name(sign(11, b"eleven")).await.unwrap();
    let found = nodes[3].handle().find_name(key).await.unwrap().unwrap();
    assert_eq!((found.seq, found.open(&value_key).unwrap()), (11, b"eleven".to_vec()));
}

/// A peer whose gossip a topic's check refuses is scored down, and after a few refused
/// messages nothing it sends on the topic is read, genuine or not, even when an honest
/// peer (one that joined the topic after the forgeries, so it never refused any) relays
/// it; the honest peer's own messages still arrive. Issue 19: refused messages stopped
/// going further, but the flooder could go on sending, and every message was still
/// decoded and checked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_whose_gossip_is_refused_is_no_longer_heard() {
    let (nodes, _) = network(3, None).await;
    let (device, honest, stranger) = (&nodes[0], &nodes[1], &nodes[2]);
    let topic = "user-topic".to_string();
    let genuine: jewel_net::swarm::GossipCheck = Arc::new(|d: &[u8]| d.starts_with(b"ok"));
    let mut events = device.handle().events();
    let mut honest_hears = honest.handle().events();
    let mut stranger_hears = stranger.handle().events();
    let subscribed = |topic: String, who: jewel_net::PeerId| move |e: &NetEvent| matches!(e, NetEvent::Subscribed { topic: t, peer } if *t == topic && *peer == who);
    let (d, h, s) = (device.handle().peer_id(), honest.handle().peer_id(), stranger.handle().peer_id());
    device.handle().subscribe(topic.clone(), genuine.clone()).await.unwrap();
    stranger.handle().subscribe(topic.clone(), Arc::new(|_: &[u8]| true)).await.unwrap();
    event("the stranger's subscription", &mut events, subscribed(topic.clone(), s)).await;
    event("the device's subscription", &mut stranger_hears, subscribed(topic.clone(), d)).await;
    let heard = |from: jewel_net::PeerId, what: &'static [u8]| move |e: &NetEvent| matches!(e, NetEvent::Gossip { data, from: f, .. } if *f == from && data.as_slice() == what);
    // Before: the stranger is heard like anyone.
    stranger.handle().gossip(topic.clone(), b"ok, first".to_vec()).await.unwrap();
    event("the stranger's first message", &mut events, heard(s, b"ok, first")).await;
    // Ten forged messages: the device refuses them and scores the stranger down.
    for i in 0..10u8 {
        stranger.handle().gossip(topic.clone(), vec![b'x', i]).await.unwrap();
    }
    let graylisted = tokio::time::timeout(std::time::Duration::from_secs(30), async {
        loop {
            let peers = device.handle().peers().await.unwrap();
            let score = peers.iter().find(|p| p.peer == s.to_string()).and_then(|p| p.gossip_score);
            if score.is_some_and(|s| s < -80.0) {
                return score;
            }
            tokio::task::yield_now().await;
        }
    })
    .await;
    assert!(graylisted.is_ok(), "the stranger was never graylisted");
    // The honest peer joins now: it never saw a forgery, so it takes the stranger's
    // messages and relays them to the device.
    honest.handle().subscribe(topic.clone(), genuine).await.unwrap();
    event("the honest peer's subscription", &mut events, subscribed(topic.clone(), h)).await;
    event("the honest peer's subscription", &mut stranger_hears, subscribed(topic.clone(), h)).await;
    event("the device's subscription", &mut honest_hears, subscribed(topic.clone(), d)).await;
    // After: the stranger's genuine-looking messages go unread, direct or relayed; the
    // honest peer's (sent after them) arrive, and nothing of the stranger's came before.
    for _ in 0..3 {
        stranger.handle().gossip(topic.clone(), b"ok, again".to_vec()).await.unwrap();
    }
    event("the stranger's message, at the honest peer", &mut honest_hears, heard(s, b"ok, again")).await;
    honest.handle().gossip(topic.clone(), b"ok, honest".to_vec()).await.unwrap();
    let first =
        event("a message after the forgeries", &mut events, |e| matches!(e, NetEvent::Gossip { .. })).await;
    assert!(heard(h, b"ok, honest")(&first), "heard {first:?} first");
    let later = tokio::time::timeout(std::time::Duration::from_secs(1), async {
        event("any later message", &mut events, |e| matches!(e, NetEvent::Gossip { .. })).await
    })
    .await;
    assert!(later.is_err(), "the graylisted stranger was still heard: {later:?}");
}

/// Routing-table poisoning (issue 19): identities that speak only Kademlia never enter a
/// storage peer's routing table; identities that also claim to store blocks do, and when
/// they all vanish at once, every holders record published afterwards still lands, and
/// the vanished ones leave the table as their dials fail.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sybils_neither_crowd_the_routing_table_nor_outlive_their_leaving() {
    let (nodes, _) = network(3, None).await;
    let boot = nodes[0].handle().listeners().await.unwrap()[0]
        .clone()
        .with(libp2p_peer(nodes[0].handle().peer_id()));
    let sybil = |serve_blocks: bool| {
        let config = NetConfig {
            bootstrap: vec![boot.clone()],
            serve_blocks,
            listen: vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()],
            ..NetConfig::default()
        };
        Network::start(Keypair::generate_ed25519(), config, Arc::new(MemStore::new(None)))
    };
    // 20 Kademlia-only identities; each walks the DHT, meeting every honest peer.
    let mut dht_only = Vec::new();
    for _ in 0..20 {
        dht_only.push(sybil(false).await.unwrap());
    }
    let dht_only_ids: Vec<_> = dht_only.iter().map(|s| s.handle().peer_id()).collect();
    // 40 that claim to store: they fill the tables (PUBLISH_TO is 20).
    let mut storing = Vec::new();
    for _ in 0..40 {
        storing.push(sybil(true).await.unwrap());
    }
    let storing_ids: Vec<_> = storing.iter().map(|s| s.handle().peer_id()).collect();
    for s in &storing {
        s.handle().bootstrap().await.unwrap();
    }
    let publisher = nodes[1].handle();
    // Once the publisher has heard, through identify, from every Kademlia-only identity it
    // met, none of them is in its table, while storing ones are.
    let table = publisher.routing_table().await.unwrap();
    let peers = publisher.peers().await.unwrap();
    let identified: Vec<_> =
        peers.iter().filter(|p| p.blocks == Some(false)).map(|p| p.peer.clone()).collect();
    for n in &nodes {
        let t = n.handle().routing_table().await.unwrap();
        let crowd: Vec<_> = t.iter().filter(|p| dht_only_ids.contains(p)).collect();
        assert!(
            crowd.is_empty(),
            "Kademlia-only identities in a routing table: {crowd:?} (identified: {identified:?})"
        );
    }
    let in_table = table.iter().filter(|p| storing_ids.contains(p)).count();
    assert!(in_table >= 20, "only {in_table} of the storing identities were in the table");
    // They all leave at once.
    for s in storing.into_iter().chain(dht_only) {
        s.shutdown().await;
    }
    for round in 0..20u64 {
        let group = BlockId::of(&round.to_be_bytes());
        let record = jewel_net::HoldersRecord {
            group,
            seq: round,
            holders: vec![jewel_net::Holder {
                block: group,
                peer: nodes[2].handle().peer_id(),
                addrs: vec![],
            }],
        };
        publisher.publish_holders(record).await.unwrap_or_else(|e| panic!("publish {round} failed: {e}"));
        // The record landed: another peer finds it. One walk of that peer may start from
        // 20 vanished identities only (its table still holds them until it dials them, and
        // Kademlia's walk starts from the 20 closest it knows), so it may walk again, as
        // a get's lookup does; each walk drops the dead ones it met.
        let mut found = None;
        for _ in 0..3 {
            found = nodes[2].handle().find_holders(group).await.unwrap();
            if found.is_some() {
                break;
            }
        }
        assert!(found.is_some(), "record {round} was not found");
    }
    let left: Vec<_> =
        publisher.routing_table().await.unwrap().into_iter().filter(|p| storing_ids.contains(p)).collect();
    assert!(left.len() < in_table, "none of the {in_table} vanished identities left the table");
    for n in nodes {
        n.shutdown().await;
    }
}

/// A holder announces only the blocks its filter names (a node: manifests, not pieces),
/// and one restarted within [`jewel_net::announce::REFRESH_EVERY`] of its last whole pass
/// (kept in its state file) announces nothing again: the records of that pass are still
/// alive. Without the state file it announces its store at every start (the test above).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_holder_announces_only_what_its_filter_names_and_not_again_after_a_quick_restart() {
    let key = Keypair::generate_ed25519();
    let store = MemStore::new(None);
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("announced");
    let (others, _) = network(3, None).await;
    let boot = others[0].handle().listeners().await.unwrap()[0]
        .clone()
        .with(libp2p_peer(others[0].handle().peer_id()));
    let with_key = |bootstrap: Vec<Multiaddr>| {
        let config = NetConfig {
            bootstrap,
            announce_only: Some(|head: &[u8]| head.starts_with(b"SAY")),
            announce_state: Some(state.clone()),
            ..NetConfig::default()
        };
        Network::start(key.clone(), config, Arc::new(store.clone()))
    };
    let holder = with_key(vec![boot.clone()]).await.unwrap();
    let (said, quiet) = (b"SAY this one".to_vec(), data(10_000, 3));
    for b in [&quiet, &said] {
        others[1].blocks().put_block(holder.handle().peer_id(), BlockId::of(b), b).await.unwrap();
    }
    announced(&holder, 1).await;
    let found = others[2].handle().providers(BlockId::of(&said)).await.unwrap();
    assert!(found.contains(&holder.handle().peer_id()), "{found:?}");
    let none = others[2].handle().providers(BlockId::of(&quiet)).await.unwrap();
    assert!(none.is_empty(), "a block the filter does not name was announced: {none:?}");
    // The start-up pass (of an empty store) has ended and been kept.
    assert!(state.exists(), "the pass's time is kept");
    holder.shutdown().await;
    let again = with_key(vec![boot]).await.unwrap();
    // The announcer is idle until the next pass is due: a block stored now is announced,
    // and it is the only one (the two already held are not announced again).
    let fresh = b"SAY a newer one".to_vec();
    others[1].blocks().put_block(again.handle().peer_id(), BlockId::of(&fresh), &fresh).await.unwrap();
    announced(&again, 1).await;
    let found = others[2].handle().providers(BlockId::of(&fresh)).await.unwrap();
    assert!(found.contains(&again.handle().peer_id()), "{found:?}");
    assert_eq!(*again.announced().borrow(), 1, "only the new block was announced after the restart");
    again.shutdown().await;
    for n in others {
        n.shutdown().await;
    }
}

/// A peer that accepts requests and probes and answers neither, as a frozen process does
/// (SIGSTOP keeps its connections open): a request waiting on it ends as soon as a probe
/// goes unanswered, seconds before its answer timeout, and the next request to it fails at
/// once. Idle peers are not probed, so this is how a peer in use is found frozen.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_stops_answering_is_found_by_the_request_waiting_on_it() {
    use jewel_net::liveness::{ALIVE_PROTOCOL, PROBE_AFTER, PROBE_WITHIN};
    let (nodes, _) = network(1, None).await;
    let asker = &nodes[0];
    let config = NetConfig { serve_blocks: false, ..NetConfig::default() };
    let frozen =
        Network::start(Keypair::generate_ed25519(), config, Arc::new(MemStore::new(None))).await.unwrap();
    let mut control = frozen.blocks().stream_control();
    let (mut requests, mut probes) =
        (control.accept(BLOCK_PROTOCOL).unwrap(), control.accept(ALIVE_PROTOCOL).unwrap());
    // Streams are taken and held, never read or answered.
    let held = tokio::spawn(async move {
        use futures::StreamExt;
        let mut kept = Vec::new();
        loop {
            tokio::select! {
                Some(s) = requests.next() => kept.push(s),
                Some(s) = probes.next() => kept.push(s),
            }
        }
    });
    let at = frozen.handle().listeners().await.unwrap()[0].clone();
    let peer = frozen.handle().peer_id();
    asker.handle().dial(at.with(libp2p_peer(peer))).await.unwrap();
    let t = std::time::Instant::now();
    let r = asker.blocks().block_size(peer, BlockId([7; 32])).await;
    let took = t.elapsed();
    assert!(matches!(r, Err(NetError::Silent { .. })), "{r:?}");
    assert!(took >= PROBE_AFTER, "found before any probe: {took:?}");
    assert!(took < PROBE_AFTER * 2 + PROBE_WITHIN + std::time::Duration::from_secs(1), "took {took:?}");
    assert!(asker.blocks().net().liveness().is_silent(&peer));
    let t = std::time::Instant::now();
    let again = asker.blocks().block_size(peer, BlockId([7; 32])).await;
    assert!(matches!(again, Err(NetError::Silent { .. })), "{again:?}");
    assert!(
        t.elapsed() < std::time::Duration::from_millis(100),
        "the second request waited {:?}",
        t.elapsed()
    );
    held.abort();
    frozen.shutdown().await;
    for n in nodes {
        n.shutdown().await;
    }
}

/// Probes are a surface any peer can reach: a stranger that opens many and never finishes
/// them gets each closed after a few seconds (at most 64 are served at once), and the holder
/// still answers an honest peer's probes and requests meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_probes_cost_a_holder_nothing_lasting() {
    use futures::{AsyncReadExt, AsyncWriteExt};
    use jewel_net::liveness::{ALIVE_PROTOCOL, PROBE_WITHIN};
    let (nodes, _) = network(3, None).await;
    let (holder, stranger, honest) = (&nodes[0], &nodes[1], &nodes[2]);
    let target = holder.handle().peer_id();
    stranger.handle().connect(target).await.unwrap();
    let mut held = Vec::new();
    // Until the holder stops taking them (its connection limits may close the stranger's
    // connection first).
    for _ in 0..200 {
        let Ok(mut s) = stranger.blocks().stream_control().open_stream(target, ALIVE_PROTOCOL).await else {
            break;
        };
        // Past the holder's 64 the stream is closed at once; the stranger keeps trying.
        if s.write_all(&[1, 2, 3]).await.is_ok() && s.flush().await.is_ok() {
            held.push(s);
        }
    }
    assert!(held.len() >= 64, "only {} probes were held", held.len());
    let t = std::time::Instant::now();
    honest.handle().connect(target).await.unwrap();
    honest.blocks().net().liveness().probe(honest.blocks().stream_control(), target).await;
    assert!(!honest.blocks().net().liveness().is_silent(&target), "an honest probe went unanswered");
    let block = data(100_000, 3);
    honest.blocks().put_block(target, BlockId::of(&block), &block).await.unwrap();
    assert_eq!(honest.blocks().block_size(target, BlockId::of(&block)).await.unwrap(), 100_000);
    // Every held probe is closed by the holder (the first 64 after their time, the rest at
    // once): reads end instead of hanging.
    for s in &mut held {
        let mut b = [0u8; 8];
        let r = tokio::time::timeout(PROBE_WITHIN * 3, s.read(&mut b)).await;
        assert!(matches!(r, Ok(Ok(0)) | Ok(Err(_))), "a held probe stayed open: {r:?}");
    }
    assert!(t.elapsed() < PROBE_WITHIN * 4, "took {:?}", t.elapsed());
    for n in nodes {
        n.shutdown().await;
    }
}
