//! Reachability across NATs: which addresses are fit to keep and dial (address hygiene),
//! which relays this node reserves slots on (auto-relay), and how each peer is reached
//! now (direct, hole-punched or relayed), with its round-trip time.
//!
//! Pure bookkeeping, owned by the swarm's event loop: every map here is bounded by the
//! connections the node allows, or by a constant.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use libp2p::multiaddr::Protocol;
use libp2p::swarm::ConnectionId;
use libp2p::{Multiaddr, PeerId};

/// How far an address reaches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Scope {
    /// This machine only.
    Loopback,
    /// A local network (private, link-local and carrier-grade NAT ranges).
    Private,
    /// The internet.
    Public,
}

/// How far `ip` reaches.
pub fn scope_of_ip(ip: IpAddr) -> Scope {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            if v4.is_loopback() {
                Scope::Loopback
            } else if v4.is_private() || v4.is_link_local() || (o[0] == 100 && (o[1] & 0xc0) == 64) {
                Scope::Private
            } else {
                Scope::Public
            }
        }
        IpAddr::V6(v6) => {
            let first = v6.segments()[0];
            if v6.is_loopback() {
                Scope::Loopback
            } else if (first & 0xfe00) == 0xfc00 || (first & 0xffc0) == 0xfe80 {
                Scope::Private
            } else if let Some(v4) = v6.to_ipv4_mapped() {
                scope_of_ip(IpAddr::V4(v4))
            } else {
                Scope::Public
            }
        }
    }
}

/// How far `addr` reaches: that of its first IP (a relayed address: its relay's), public
/// for a DNS name, `None` for an unspecified address or one without a host.
pub fn scope(addr: &Multiaddr) -> Option<Scope> {
    match addr.iter().next()? {
        Protocol::Ip4(ip) if ip.is_unspecified() => None,
        Protocol::Ip6(ip) if ip.is_unspecified() => None,
        Protocol::Ip4(ip) => Some(scope_of_ip(IpAddr::V4(ip))),
        Protocol::Ip6(ip) => Some(scope_of_ip(IpAddr::V6(ip))),
        Protocol::Dns(_) | Protocol::Dns4(_) | Protocol::Dns6(_) | Protocol::Dnsaddr(_) => {
            Some(Scope::Public)
        }
        _ => None,
    }
}

/// Whether an address that a peer reached over `over` told this node about is fit to
/// keep and dial: it must reach at least as far as that connection did. A peer across the
/// internet cannot be dialed at its private or loopback addresses (those name machines in
/// this node's own network, or none), and a peer on the local network not at its loopback
/// ones.
pub fn usable(addr: &Multiaddr, over: Scope) -> bool {
    scope(addr).is_some_and(|s| s >= over)
}

/// Whether `addr` goes through a circuit relay.
pub fn is_relayed(addr: &Multiaddr) -> bool {
    addr.iter().any(|p| p == Protocol::P2pCircuit)
}

/// How this node is connected to a peer now.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Path {
    /// A direct connection, dialed or accepted.
    Direct,
    /// A direct connection that DCUtR made through both NATs (hole punching).
    HolePunched,
    /// Only through a circuit relay.
    Relayed,
}

/// Relays a node behind a NAT keeps a reservation on.
pub const RELAYS_WANTED: usize = 2;
/// Relay-capable peers remembered, at most.
const MAX_RELAY_CANDIDATES: usize = 32;
/// How long a relay that refused or dropped a reservation is left alone.
const RELAY_RETRY: Duration = Duration::from_secs(60);
/// How long a connect to a peer reached only through a relay waits for a direct
/// connection (DCUtR) before the transfer goes through the relay.
pub const DIRECT_WAIT: Duration = Duration::from_secs(3);
/// How long a peer DCUtR failed for is not waited for again.
const PUNCH_RETRY: Duration = Duration::from_secs(10 * 60);
/// Peers remembered as not punchable, at most.
const MAX_UNPUNCHABLE: usize = 4096;

/// See the module's doc.
#[derive(Default)]
pub(crate) struct Reach {
    /// Relay-capable peers and an address to reach each.
    candidates: Vec<(PeerId, Multiaddr)>,
    /// Listeners on relay circuits (reservations asked or held), by relay.
    pub(crate) reservations: HashMap<libp2p::core::transport::ListenerId, PeerId>,
    /// Relays that accepted a reservation.
    reserved: HashSet<PeerId>,
    /// Relays the node was told to listen through (`--listen …/p2p-circuit`): they count
    /// toward [`RELAYS_WANTED`] and are not asked again.
    explicit: HashSet<PeerId>,
    /// Relays that refused or dropped one, and when.
    failed: HashMap<PeerId, Instant>,
    /// Each connected peer's connections, and whether each is relayed.
    conns: HashMap<PeerId, Vec<(ConnectionId, bool)>>,
    /// Peers DCUtR connected directly.
    punched: HashSet<PeerId>,
    /// Peers DCUtR could not connect directly lately, and when: transfers to them go
    /// through the relay at once (a symmetric NAT does not become punchable in minutes).
    unpunchable: HashMap<PeerId, Instant>,
    /// Each connected peer's last round-trip time (ping).
    rtt: HashMap<PeerId, Duration>,
    /// The address AutoNAT confirmed this node is reachable at, if any.
    pub(crate) public: Option<Multiaddr>,
    /// The address a UPnP / NAT-PMP port mapping gave this node, if any.
    pub(crate) mapped: Option<Multiaddr>,
    /// The UPnP router found is itself behind another NAT (its external address is not a
    /// public one): a mapping on it would not reach the internet.
    pub(crate) double_nat: bool,
}

impl Reach {
    /// Bookkeeping for a node told to listen at `listen`: the relays named in its circuit
    /// addresses (`…/p2p/RELAY/p2p-circuit`) are its own choice, and count.
    pub(crate) fn with_explicit(listen: &[Multiaddr]) -> Reach {
        let relay_of = |a: &Multiaddr| {
            a.iter()
                .take_while(|p| *p != Protocol::P2pCircuit)
                .filter_map(|p| match p {
                    Protocol::P2p(id) => Some(id),
                    _ => None,
                })
                .last()
        };
        Reach {
            explicit: listen.iter().filter(|a| is_relayed(a)).filter_map(relay_of).collect(),
            ..Reach::default()
        }
    }

    /// Whether this node is reachable without a relay (AutoNAT or a port mapping said so).
    pub(crate) fn reachable(&self) -> bool {
        self.public.is_some() || self.mapped.is_some()
    }

    /// Remembers a relay-capable peer and where to reach it.
    pub(crate) fn add_candidate(&mut self, relay: PeerId, mut addr: Multiaddr) {
        if is_relayed(&addr) {
            return;
        }
        if matches!(addr.iter().last(), Some(Protocol::P2p(_))) {
            addr.pop();
        }
        if let Some(c) = self.candidates.iter_mut().find(|(p, _)| *p == relay) {
            c.1 = addr;
            return;
        }
        if self.candidates.len() >= MAX_RELAY_CANDIDATES {
            self.candidates.remove(0);
        }
        self.candidates.push((relay, addr));
    }

    /// The next relays to ask for a reservation, as circuit listen addresses: none if this
    /// node is reachable or has enough; relays that failed lately are passed over.
    pub(crate) fn wanted(&mut self) -> Vec<(PeerId, Multiaddr)> {
        if self.reachable() {
            return Vec::new();
        }
        let missing = RELAYS_WANTED.saturating_sub(self.reservations.len() + self.explicit.len());
        self.failed.retain(|_, at| at.elapsed() < RELAY_RETRY);
        let asked: HashSet<PeerId> = self.reservations.values().chain(&self.explicit).copied().collect();
        self.candidates
            .iter()
            .filter(|(p, _)| !asked.contains(p) && !self.failed.contains_key(p))
            .take(missing)
            .map(|(p, a)| (*p, a.clone().with(Protocol::P2p(*p)).with(Protocol::P2pCircuit)))
            .collect()
    }

    pub(crate) fn accepted(&mut self, relay: PeerId) {
        self.reserved.insert(relay);
    }

    /// A circuit listener closed (refused, or the relay went away): its relay rests.
    pub(crate) fn listener_closed(&mut self, id: libp2p::core::transport::ListenerId) -> bool {
        let Some(relay) = self.reservations.remove(&id) else { return false };
        self.reserved.remove(&relay);
        if self.failed.len() < MAX_RELAY_CANDIDATES {
            self.failed.insert(relay, Instant::now());
        }
        true
    }

    /// The relays holding a reservation for this node now.
    pub(crate) fn relays(&self) -> Vec<PeerId> {
        let mut r: Vec<PeerId> = self.reserved.iter().copied().collect();
        r.sort();
        r
    }

    /// A connection is up. A direct one to a peer this node had reached only through a
    /// relay was made through both NATs (DCUtR reports it on one side only).
    pub(crate) fn connected(&mut self, peer: PeerId, id: ConnectionId, relayed: bool) {
        let conns = self.conns.entry(peer).or_default();
        if !relayed && !conns.is_empty() && conns.iter().all(|(_, r)| *r) {
            self.punched.insert(peer);
        }
        conns.push((id, relayed));
    }

    pub(crate) fn closed(&mut self, peer: PeerId, id: ConnectionId) {
        if let Some(c) = self.conns.get_mut(&peer) {
            c.retain(|(i, _)| *i != id);
            if c.is_empty() {
                self.conns.remove(&peer);
                self.punched.remove(&peer);
                self.rtt.remove(&peer);
            }
        }
    }

    /// DCUtR failed for `peer`, or a transfer's wait for it ran out.
    pub(crate) fn punch_failed(&mut self, peer: PeerId) {
        if self.unpunchable.len() >= MAX_UNPUNCHABLE {
            self.unpunchable.retain(|_, at| at.elapsed() < PUNCH_RETRY);
        }
        if self.unpunchable.len() < MAX_UNPUNCHABLE {
            self.unpunchable.insert(peer, Instant::now());
        }
    }

    /// Whether a transfer to `peer` should wait for DCUtR: not if it failed lately.
    pub(crate) fn worth_waiting(&self, peer: &PeerId) -> bool {
        self.unpunchable.get(peer).is_none_or(|at| at.elapsed() >= PUNCH_RETRY)
    }

    pub(crate) fn hole_punched(&mut self, peer: PeerId) {
        if self.conns.contains_key(&peer) {
            self.punched.insert(peer);
        }
    }

    pub(crate) fn pinged(&mut self, peer: PeerId, rtt: Duration) {
        if self.conns.contains_key(&peer) {
            self.rtt.insert(peer, rtt);
        }
    }

    /// How this node reaches `peer` now, if it is connected.
    pub(crate) fn path(&self, peer: &PeerId) -> Option<Path> {
        let conns = self.conns.get(peer)?;
        if conns.iter().all(|(_, relayed)| *relayed) {
            Some(Path::Relayed)
        } else if self.punched.contains(peer) {
            Some(Path::HolePunched)
        } else {
            Some(Path::Direct)
        }
    }

    /// Whether every connection to `peer` goes through a relay.
    pub(crate) fn only_relayed(&self, peer: &PeerId) -> bool {
        self.path(peer) == Some(Path::Relayed)
    }

    /// The relayed connections to `peer` once it also has a direct one: they hold a
    /// circuit on the relay (a slot in its limits) for nothing, so they are closed.
    pub(crate) fn redundant_relayed(&self, peer: &PeerId) -> Vec<ConnectionId> {
        let Some(conns) = self.conns.get(peer) else { return Vec::new() };
        if conns.iter().all(|(_, r)| *r) {
            return Vec::new();
        }
        conns.iter().filter(|(_, r)| *r).map(|(i, _)| *i).collect()
    }

    pub(crate) fn rtt(&self, peer: &PeerId) -> Option<Duration> {
        self.rtt.get(peer).copied()
    }

    /// Peers connected directly thanks to DCUtR.
    pub(crate) fn punched_count(&self) -> usize {
        self.punched.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> Multiaddr {
        s.parse().unwrap()
    }

    #[test]
    fn scopes_of_the_addresses_people_have() {
        assert_eq!(scope(&a("/ip4/127.0.0.1/tcp/1")), Some(Scope::Loopback));
        assert_eq!(scope(&a("/ip6/::1/tcp/1")), Some(Scope::Loopback));
        for p in ["/ip4/192.168.1.2/tcp/1", "/ip4/10.1.2.3/tcp/1", "/ip4/172.20.0.1/udp/1/quic-v1"] {
            assert_eq!(scope(&a(p)), Some(Scope::Private), "{p}");
        }
        assert_eq!(scope(&a("/ip4/100.64.3.4/tcp/1")), Some(Scope::Private), "carrier-grade NAT");
        assert_eq!(scope(&a("/ip6/fd00::1/tcp/1")), Some(Scope::Private));
        assert_eq!(scope(&a("/ip6/fe80::1/tcp/1")), Some(Scope::Private));
        assert_eq!(scope(&a("/ip4/11.0.1.3/tcp/4001")), Some(Scope::Public));
        assert_eq!(scope(&a("/ip6/2a01::1/tcp/1")), Some(Scope::Public));
        assert_eq!(scope(&a("/dns4/example.org/tcp/1")), Some(Scope::Public));
        assert_eq!(scope(&a("/ip4/0.0.0.0/tcp/1")), None);
    }

    #[test]
    fn an_address_must_reach_as_far_as_the_connection_it_came_over() {
        let (lo, private, public) =
            (a("/ip4/127.0.0.1/tcp/1"), a("/ip4/192.168.1.2/tcp/1"), a("/ip4/11.0.0.1/tcp/1"));
        let relayed =
            a("/ip4/11.0.0.1/tcp/4001/p2p/12D3KooWGzBVbNuH6sPpDpPnMgmeEj8ycTA5cTUQ7fnp4vLFhXAS/p2p-circuit");
        assert!([&lo, &private, &public].iter().all(|x| usable(x, Scope::Loopback)));
        assert!(!usable(&lo, Scope::Private) && usable(&private, Scope::Private));
        assert!(!usable(&lo, Scope::Public) && !usable(&private, Scope::Public));
        assert!(usable(&public, Scope::Public) && usable(&relayed, Scope::Public));
        assert!(is_relayed(&relayed) && !is_relayed(&public));
    }

    #[test]
    fn reservations_go_to_two_relays_until_the_node_is_reachable() {
        let mut r = Reach::default();
        let relays: Vec<PeerId> = (0..3).map(|_| PeerId::random()).collect();
        for (i, p) in relays.iter().enumerate() {
            r.add_candidate(*p, a(&format!("/ip4/11.0.0.{}/tcp/4001/p2p/{p}", i + 1)));
        }
        let wanted = r.wanted();
        assert_eq!(wanted.len(), RELAYS_WANTED);
        for (p, addr) in &wanted {
            assert_eq!(
                addr.to_string(),
                format!(
                    "/ip4/11.0.0.{}/tcp/4001/p2p/{p}/p2p-circuit",
                    relays.iter().position(|r| r == p).unwrap() + 1
                )
            );
        }
        // Asked: no more are wanted while those stand.
        let ids: Vec<_> = wanted.iter().map(|_| libp2p::core::transport::ListenerId::next()).collect();
        for (id, (p, _)) in ids.iter().zip(&wanted) {
            r.reservations.insert(*id, *p);
        }
        assert!(r.wanted().is_empty());
        // One refused: the third relay is asked, not the one that refused.
        assert!(r.listener_closed(ids[0]));
        let next = r.wanted();
        assert_eq!(next.len(), 1);
        assert_eq!(next[0].0, relays[2]);
        // Reachable (a port mapping): nothing is wanted.
        r.mapped = Some(a("/ip4/11.0.1.1/tcp/4001"));
        assert!(r.wanted().is_empty());
    }

    #[test]
    fn a_peer_is_relayed_only_while_it_has_no_direct_connection() {
        let mut r = Reach::default();
        let p = PeerId::random();
        let (relayed, direct) = (ConnectionId::new_unchecked(1), ConnectionId::new_unchecked(2));
        r.connected(p, relayed, true);
        assert_eq!(r.path(&p), Some(Path::Relayed));
        assert!(r.redundant_relayed(&p).is_empty(), "the only connection stays");
        r.connected(p, direct, false);
        assert_eq!(r.path(&p), Some(Path::HolePunched), "direct after relayed: hole-punched");
        assert_eq!(r.redundant_relayed(&p), vec![relayed]);
        r.closed(p, direct);
        r.closed(p, relayed);
        assert_eq!(r.path(&p), None);
        assert_eq!(r.punched_count(), 0);
    }
}
