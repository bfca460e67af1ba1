//! The swarm's transports and behaviours, built from a [`NetConfig`].

use super::*;

#[derive(NetworkBehaviour)]
pub(crate) struct Behaviour {
    pub(super) limits: libp2p::connection_limits::Behaviour,
    pub(super) ip_limits: crate::iplimit::Behaviour,
    pub(super) kad: kad::Behaviour<crate::records::RecordBook>,
    pub(super) identify: identify::Behaviour,
    pub(super) ping: ping::Behaviour,
    pub(super) autonat: autonat::Behaviour,
    pub(super) relay: relay::client::Behaviour,
    pub(super) relay_server: Toggle<relay::Behaviour>,
    pub(super) dcutr: dcutr::Behaviour,
    pub(super) upnp: Toggle<libp2p::upnp::tokio::Behaviour>,
    pub(super) mdns: Toggle<mdns::tokio::Behaviour>,
    pub(super) gossip: gossipsub::Behaviour,
    pub(crate) stream: libp2p_stream::Behaviour,
}

pub(super) fn agent_version(zone: &Option<String>) -> String {
    match zone {
        Some(z) => format!("jewel/{} zone={z}", env!("CARGO_PKG_VERSION")),
        None => format!("jewel/{}", env!("CARGO_PKG_VERSION")),
    }
}

/// A dial error's first line (libp2p lists every address tried, one per line).
pub(super) fn first_line(text: &str) -> String {
    let line = text.lines().next().unwrap_or(text);
    line.chars().take(300).collect()
}

/// The zone a peer announced in its identify agent string, if any.
pub fn zone_of(agent: &str) -> Option<String> {
    agent.split_whitespace().find_map(|w| w.strip_prefix("zone=")).map(str::to_string)
}

pub(crate) fn build_swarm(
    keypair: identity::Keypair,
    config: &NetConfig,
) -> Result<Swarm<Behaviour>, NetError> {
    let transport = |e: &dyn std::fmt::Display| NetError::Transport(e.to_string());
    let mdns_on = config.mdns;
    let relay_on = config.relay_server.then(|| config.relay_limits.config());
    let upnp_on = config.upnp;
    let autonat_cfg = if config.autonat_local {
        autonat::Config {
            only_global_ips: false,
            boot_delay: Duration::from_secs(1),
            retry_interval: Duration::from_secs(5),
            throttle_server_period: Duration::ZERO,
            ..Default::default()
        }
    } else {
        autonat::Config::default()
    };
    let agent = agent_version(&config.zone);
    // Connections cost descriptors: strangers cannot open more than the node can carry.
    let total = config.max_connections.max(64);
    let limits = libp2p::connection_limits::ConnectionLimits::default()
        .with_max_pending_incoming(Some(MAX_PENDING_INCOMING))
        .with_max_established_per_peer(Some(MAX_CONNECTIONS_PER_PEER))
        .with_max_established_incoming(Some(total.saturating_sub(total / 4)))
        .with_max_established(Some(total));
    let swarm = SwarmBuilder::with_existing_identity(keypair)
        .with_tokio()
        // TLS first: its AES-GCM costs a third of noise's ChaCha20-Poly1305 here.
        .with_tcp(
            tcp::Config::default().nodelay(true),
            (tls::Config::new, noise::Config::new),
            crate::mux::Yamux::new,
        )
        .map_err(|e| transport(&e))?
        .with_quic()
        .with_relay_client(noise::Config::new, crate::mux::Yamux::new)
        .map_err(|e| transport(&e))?
        .with_behaviour(|key, relay| {
            let peer_id = key.public().to_peer_id();
            let mut kcfg = kad::Config::new(KAD_PROTOCOL);
            kcfg.set_query_timeout(Duration::from_secs(30));
            kcfg.set_substreams_timeout(KAD_REQUEST_TIMEOUT);
            // Provider records live PROVIDER_TTL on the peers that keep them; this node's own
            // announcer refreshes them (`crate::announce`), not Kademlia's hourly job.
            kcfg.set_provider_publication_interval(None);
            kcfg.set_provider_record_ttl(Some(crate::announce::PROVIDER_TTL));
            // Inbound records are checked before they are stored (see `EventLoop::inbound`).
            kcfg.set_record_filtering(kad::StoreInserts::FilterBoth);
            // Peers enter the routing table only when this node says so: once identify
            // shows they serve the DHT and blocks (see `routable`), never because they
            // connected. Kademlia-only identities (Sybils) cannot crowd out storage peers.
            kcfg.set_kbucket_inserts(kad::BucketInserts::Manual);
            let store = crate::records::RecordBook::new(peer_id, MAX_PROVIDED, crate::book::MAX_RECORD);
            let mut kad = kad::Behaviour::with_config(peer_id, store, kcfg);
            kad.set_mode(Some(kad::Mode::Server));
            // Gossip carries a user's index changes between their devices (one topic per
            // user); messages are signed by the sending peer, and their bodies sealed and
            // signed by the user (the node checks that), bounded in size.
            let gcfg = gossipsub::ConfigBuilder::default()
                .heartbeat_interval(Duration::from_millis(500))
                .max_transmit_size(GOSSIP_MAX)
                .validation_mode(gossipsub::ValidationMode::Strict)
                // Each message is checked by the topic's owner (see `Command::Subscribe`)
                // before it is forwarded or kept: a stranger's messages go nowhere.
                .validate_messages()
                .build()
                .map_err(|e| std::io::Error::other(e.to_string()))?;
            let mut gossip =
                gossipsub::Behaviour::new(gossipsub::MessageAuthenticity::Signed(key.clone()), gcfg)
                    .map_err(std::io::Error::other)?;
            // A peer whose messages a topic's check refuses is scored down, and past the
            // graylist threshold nothing it sends is read (see `gossip_scores`).
            let (params, thresholds) = gossip_scores();
            gossip.with_peer_score(params, thresholds).map_err(std::io::Error::other)?;
            let mdns = if mdns_on {
                Some(mdns::tokio::Behaviour::new(mdns::Config::default(), peer_id)?)
            } else {
                None
            };
            Ok(Behaviour {
                limits: libp2p::connection_limits::Behaviour::new(limits),
                // One address holds at most a quarter of the connections the node carries
                // (128 at least: on a loopback devnet every peer is one address).
                ip_limits: crate::iplimit::Behaviour::new(MAX_PENDING_PER_IP, (total / 4).max(128)),
                kad,
                identify: identify::Behaviour::new(
                    identify::Config::new(IDENTIFY_PROTOCOL.to_string(), key.public())
                        .with_agent_version(agent),
                ),
                ping: ping::Behaviour::new(
                    ping::Config::new()
                        .with_interval(crate::liveness::PING_EVERY)
                        .with_timeout(Duration::from_secs(30)),
                ),
                autonat: autonat::Behaviour::new(peer_id, autonat_cfg),
                relay,
                relay_server: Toggle::from(relay_on.map(|c| relay::Behaviour::new(peer_id, c))),
                dcutr: dcutr::Behaviour::new(peer_id),
                upnp: Toggle::from(upnp_on.then(libp2p::upnp::tokio::Behaviour::default)),
                mdns: Toggle::from(mdns),
                gossip,
                stream: libp2p_stream::Behaviour::new(),
            })
        })
        .map_err(|e| transport(&e))?
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(120)))
        .build();
    Ok(swarm)
}

/// Whether a peer that listed `protocols` (through identify) enters the routing table: it
/// must serve both the DHT and the block protocol. A node that serves no blocks can still
/// ask the DHT; it is just not asked.
pub(super) fn routable(protocols: &[StreamProtocol]) -> bool {
    protocols.contains(&KAD_PROTOCOL) && protocols.contains(&crate::block::BLOCK_PROTOCOL)
}

/// Gossip peer scoring: only refused messages count against a peer (each topic's
/// [`topic_score`]); the rest of gossipsub's scoring is off or mild, because Jewel's topics
/// are quiet (a user's index changes) and a loopback devnet puts every peer on one address.
/// Past the graylist threshold (-80) a peer's messages are dropped unread.
pub(super) fn gossip_scores() -> (gossipsub::PeerScoreParams, gossipsub::PeerScoreThresholds) {
    let params = gossipsub::PeerScoreParams {
        topics: HashMap::new(),
        // Per-address limits are the connection layer's (`iplimit`).
        ip_colocation_factor_weight: 0.0,
        // Broken IHAVE promises and slow peers: noted, never enough alone to graylist.
        behaviour_penalty_weight: -1.0,
        slow_peer_weight: -0.1,
        ..Default::default()
    };
    (params, gossipsub::PeerScoreThresholds::default())
}

/// A topic's scoring: each refused message counts (squared, weight -10: three refused
/// messages graylist a peer), forgotten slowly (×0.99 a second: a peer graylisted by
/// ten refused messages is heard again after about two minutes); quiet mesh peers are not
/// penalised.
pub(super) fn topic_score() -> gossipsub::TopicScoreParams {
    gossipsub::TopicScoreParams {
        topic_weight: 1.0,
        mesh_message_deliveries_weight: 0.0,
        mesh_failure_penalty_weight: 0.0,
        invalid_message_deliveries_weight: -10.0,
        invalid_message_deliveries_decay: 0.99,
        ..Default::default()
    }
}
