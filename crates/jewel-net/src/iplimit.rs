//! Connection limits per IP address: identities are free, so one address could otherwise
//! take every pending slot (and with them, new peers' chance to connect) or most of the
//! established connections a node can carry. libp2p's own limits are global and per peer;
//! this behaviour adds the per-address ones, for inbound connections (outbound ones are
//! this node's own choice).

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::IpAddr;
use std::task::{Context, Poll};

use libp2p::core::transport::PortUse;
use libp2p::core::Endpoint;
use libp2p::multiaddr::Protocol;
use libp2p::swarm::behaviour::{ConnectionClosed, ListenFailure};
use libp2p::swarm::{
    dummy, ConnectionDenied, ConnectionId, FromSwarm, NetworkBehaviour, THandler, THandlerInEvent,
    THandlerOutEvent, ToSwarm,
};
use libp2p::{Multiaddr, PeerId};

/// Why an inbound connection was refused.
#[derive(Debug, thiserror::Error)]
pub enum IpLimitError {
    #[error("{ip} already has {count} connections being set up here (at most {max} per address)")]
    Pending { ip: IpAddr, count: u32, max: u32 },
    #[error("{ip} already has {count} connections here (at most {max} per address)")]
    Established { ip: IpAddr, count: u32, max: u32 },
}

/// Inbound connections per IP address, at most: `pending` being set up, `established` in all.
pub struct Behaviour {
    pending_max: u32,
    established_max: u32,
    pending: HashMap<ConnectionId, IpAddr>,
    established: HashMap<ConnectionId, IpAddr>,
    counts: HashMap<IpAddr, (u32, u32)>,
}

/// The IP address a multiaddr starts with, if any (a relayed address has the relay's).
pub(crate) fn ip_of(addr: &Multiaddr) -> Option<IpAddr> {
    addr.iter().find_map(|p| match p {
        Protocol::Ip4(ip) => Some(IpAddr::V4(ip)),
        Protocol::Ip6(ip) => Some(IpAddr::V6(ip)),
        _ => None,
    })
}

impl Behaviour {
    pub fn new(pending_max: u32, established_max: u32) -> Behaviour {
        Behaviour {
            pending_max,
            established_max,
            pending: HashMap::new(),
            established: HashMap::new(),
            counts: HashMap::new(),
        }
    }

    fn count(&mut self, ip: IpAddr, pending: i64, established: i64) {
        let c = self.counts.entry(ip).or_default();
        c.0 = (i64::from(c.0) + pending).max(0) as u32;
        c.1 = (i64::from(c.1) + established).max(0) as u32;
        if *c == (0, 0) {
            self.counts.remove(&ip);
        }
    }

    fn forget(&mut self, id: ConnectionId) {
        if let Some(ip) = self.pending.remove(&id) {
            self.count(ip, -1, 0);
        }
        if let Some(ip) = self.established.remove(&id) {
            self.count(ip, 0, -1);
        }
    }
}

impl NetworkBehaviour for Behaviour {
    type ConnectionHandler = dummy::ConnectionHandler;
    type ToSwarm = Infallible;

    fn handle_pending_inbound_connection(
        &mut self,
        id: ConnectionId,
        _local: &Multiaddr,
        remote: &Multiaddr,
    ) -> Result<(), ConnectionDenied> {
        let Some(ip) = ip_of(remote) else { return Ok(()) };
        let count = self.counts.get(&ip).map_or(0, |c| c.0);
        if count >= self.pending_max {
            return Err(ConnectionDenied::new(IpLimitError::Pending { ip, count, max: self.pending_max }));
        }
        self.pending.insert(id, ip);
        self.count(ip, 1, 0);
        Ok(())
    }

    fn handle_established_inbound_connection(
        &mut self,
        id: ConnectionId,
        _peer: PeerId,
        _local: &Multiaddr,
        remote: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        self.forget(id);
        let Some(ip) = ip_of(remote) else { return Ok(dummy::ConnectionHandler) };
        let count = self.counts.get(&ip).map_or(0, |c| c.1);
        if count >= self.established_max {
            return Err(ConnectionDenied::new(IpLimitError::Established {
                ip,
                count,
                max: self.established_max,
            }));
        }
        self.established.insert(id, ip);
        self.count(ip, 0, 1);
        Ok(dummy::ConnectionHandler)
    }

    fn handle_established_outbound_connection(
        &mut self,
        _id: ConnectionId,
        _peer: PeerId,
        _addr: &Multiaddr,
        _role: Endpoint,
        _port_use: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(dummy::ConnectionHandler)
    }

    fn on_swarm_event(&mut self, event: FromSwarm) {
        match event {
            FromSwarm::ConnectionClosed(ConnectionClosed { connection_id, .. })
            | FromSwarm::ListenFailure(ListenFailure { connection_id, .. }) => self.forget(connection_id),
            _ => {}
        }
    }

    fn on_connection_handler_event(&mut self, _: PeerId, _: ConnectionId, event: THandlerOutEvent<Self>) {
        match event {}
    }

    fn poll(&mut self, _: &mut Context<'_>) -> Poll<ToSwarm<Self::ToSwarm, THandlerInEvent<Self>>> {
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_address_has_its_own_pending_and_established_allowance() {
        let mut b = Behaviour::new(2, 3);
        let local: Multiaddr = "/ip4/127.0.0.1/tcp/1".parse().unwrap();
        let (a, other): (Multiaddr, Multiaddr) =
            ("/ip4/10.0.0.1/tcp/5".parse().unwrap(), "/ip4/10.0.0.2/tcp/5".parse().unwrap());
        let ids: Vec<ConnectionId> = (0..8).map(|_| ConnectionId::new_unchecked(rand_id())).collect();
        assert!(b.handle_pending_inbound_connection(ids[0], &local, &a).is_ok());
        assert!(b.handle_pending_inbound_connection(ids[1], &local, &a).is_ok());
        assert!(b.handle_pending_inbound_connection(ids[2], &local, &a).is_err(), "a third pending from a");
        assert!(b.handle_pending_inbound_connection(ids[3], &local, &other).is_ok(), "another address");
        // A pending one set up frees its pending slot; one that failed does too.
        let peer = PeerId::random();
        assert!(b.handle_established_inbound_connection(ids[0], peer, &local, &a).is_ok());
        b.forget(ids[1]);
        for id in &ids[4..6] {
            assert!(b.handle_pending_inbound_connection(*id, &local, &a).is_ok());
            assert!(b.handle_established_inbound_connection(*id, peer, &local, &a).is_ok());
        }
        assert!(b.handle_pending_inbound_connection(ids[6], &local, &a).is_ok());
        assert!(
            b.handle_established_inbound_connection(ids[6], peer, &local, &a).is_err(),
            "a fourth from a"
        );
        b.forget(ids[6]);
        // Closing one makes room again; nothing is left over once all are gone.
        b.forget(ids[0]);
        assert!(b.handle_pending_inbound_connection(ids[7], &local, &a).is_ok());
        assert!(b.handle_established_inbound_connection(ids[7], peer, &local, &a).is_ok());
        for id in &ids {
            b.forget(*id);
        }
        assert!(b.counts.is_empty() && b.pending.is_empty() && b.established.is_empty());
    }

    fn rand_id() -> usize {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static NEXT: AtomicUsize = AtomicUsize::new(1 << 40);
        NEXT.fetch_add(1, Ordering::Relaxed)
    }
}
