//! The security protocols on TCP: peers offer libp2p-tls first, then noise, and the patched
//! libp2p-tls (vendor/libp2p-tls) makes two Jewel peers agree on AES-GCM. A peer that
//! speaks only one of the two still connects.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use jewel::MemStore;
use jewel_net::{Keypair, Multiaddr, MultiaddrProtocol, NetConfig, Network};
use libp2p::swarm::SwarmEvent;
use libp2p::{noise, ping, tcp, tls, yamux, SwarmBuilder};
use rustls::pki_types::ServerName;
use rustls::{CipherSuite, ClientConnection, ServerConnection};

/// Moves every pending TLS record from one side to the other until neither has any.
fn handshake(client: &mut ClientConnection, server: &mut ServerConnection) {
    for _ in 0..16 {
        let mut to_server = Vec::new();
        while client.wants_write() {
            client.write_tls(&mut to_server).unwrap();
        }
        let mut to_client = Vec::new();
        while server.wants_write() {
            server.write_tls(&mut to_client).unwrap();
        }
        if to_server.is_empty() && to_client.is_empty() {
            return;
        }
        let mut rd = &to_server[..];
        while !rd.is_empty() {
            server.read_tls(&mut rd).unwrap();
            server.process_new_packets().unwrap();
        }
        let mut rd = &to_client[..];
        while !rd.is_empty() {
            client.read_tls(&mut rd).unwrap();
            client.process_new_packets().unwrap();
        }
    }
    panic!("the handshake did not settle");
}

#[test]
fn two_jewel_peers_agree_on_aes_gcm() {
    let (a, b) = (Keypair::generate_ed25519(), Keypair::generate_ed25519());
    let client_config = tls::make_client_config(&a, Some(b.public().to_peer_id())).unwrap();
    let server_config = tls::make_server_config(&b).unwrap();
    // As libp2p-tls dials: no server name indication.
    let name = ServerName::IpAddress(std::net::Ipv4Addr::UNSPECIFIED.into());
    let mut client = ClientConnection::new(Arc::new(client_config), name).unwrap();
    let mut server = ServerConnection::new(Arc::new(server_config)).unwrap();
    handshake(&mut client, &mut server);
    assert!(!client.is_handshaking() && !server.is_handshaking());
    for side in [client.negotiated_cipher_suite(), server.negotiated_cipher_suite()] {
        assert_eq!(side.map(|s| s.suite()), Some(CipherSuite::TLS13_AES_128_GCM_SHA256));
    }
}

/// A bare libp2p peer on 127.0.0.1 with one security protocol, driven by its own task.
async fn foreign_peer(use_tls: bool) -> (Multiaddr, tokio::task::JoinHandle<()>) {
    let builder = SwarmBuilder::with_new_identity().with_tokio();
    let mut swarm = if use_tls {
        builder
            .with_tcp(tcp::Config::default(), tls::Config::new, yamux::Config::default)
            .unwrap()
            .with_behaviour(|_| ping::Behaviour::default())
            .unwrap()
            .build()
    } else {
        builder
            .with_tcp(tcp::Config::default(), noise::Config::new, yamux::Config::default)
            .unwrap()
            .with_behaviour(|_| ping::Behaviour::default())
            .unwrap()
            .build()
    };
    swarm.listen_on("/ip4/127.0.0.1/tcp/0".parse().unwrap()).unwrap();
    let addr = loop {
        if let SwarmEvent::NewListenAddr { address, .. } = swarm.select_next_some().await {
            break address;
        }
    };
    let addr = addr.with(MultiaddrProtocol::P2p(*swarm.local_peer_id()));
    let task = tokio::spawn(async move {
        loop {
            swarm.select_next_some().await;
        }
    });
    (addr, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_that_speak_only_noise_or_only_tls_still_connect() {
    let config = NetConfig { listen: vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()], ..NetConfig::default() };
    let node =
        Network::start(Keypair::generate_ed25519(), config, Arc::new(MemStore::new(None))).await.unwrap();
    for use_tls in [false, true] {
        let (addr, task) = foreign_peer(use_tls).await;
        let dialed = tokio::time::timeout(Duration::from_secs(30), node.handle().dial(addr.clone())).await;
        task.abort();
        let peer = dialed.expect("the dial timed out").unwrap_or_else(|e| panic!("tls={use_tls}: {e}"));
        assert_eq!(Some(MultiaddrProtocol::P2p(peer)), addr.iter().last());
    }
    node.shutdown().await;
}
