//! Swarm events: connections and their ends, identify, reachability, relays, gossip.

use super::*;

impl EventLoop {
    pub(super) fn event(&mut self, event: SwarmEvent<BehaviourEvent>) {
        match event {
            SwarmEvent::ConnectionEstablished {
                peer_id, connection_id, endpoint, num_established, ..
            } => {
                if num_established.get() == 1 {
                    let _ = self.events.send(NetEvent::Connected { peer: peer_id });
                }
                if let Some(reply) = self.dials.remove(&connection_id) {
                    // Dialed by address on the user's word (a bootstrap peer): routable now,
                    // so a bootstrap walk can start before identify has answered.
                    let addr = endpoint.get_remote_address().clone();
                    self.swarm.behaviour_mut().kad.add_address(&peer_id, addr);
                    let _ = reply.send(Ok(peer_id));
                }
                // A relayed connection's remote address is just the peer's id on the side
                // that accepted it: the circuit is in its local address.
                let relayed = endpoint.is_relayed();
                self.reach.connected(peer_id, connection_id, relayed);
                // Any connection to the peer, ours or its own, answers every waiting connect
                // (one through a relay, once DCUtR had its chance).
                if let Some((_, waiting)) = self.connecting.remove(&peer_id) {
                    for (reply, direct) in waiting {
                        if direct {
                            self.connected_reply(peer_id, reply);
                        } else {
                            let _ = reply.send(Ok(peer_id));
                        }
                    }
                }
                if !relayed {
                    self.direct_wait_over(false);
                    // Streams take the direct connection now; the relayed one would hold a
                    // circuit (a slot in the relay's limits) until it idled out.
                    for id in self.reach.redundant_relayed(&peer_id) {
                        self.swarm.close_connection(id);
                    }
                }
                self.unreachable.remove(&peer_id);
                // A relayed peer counts at its relay's address (the circuit's address).
                let via = match &endpoint {
                    libp2p::core::ConnectedPoint::Listener { local_addr, .. } if relayed => local_addr,
                    _ => endpoint.get_remote_address(),
                };
                self.ips.connected(peer_id, via);
                self.liveness.heard(peer_id);
                if endpoint.is_dialer() {
                    // Into the routing table once identify shows the peer routable.
                    track(&mut self.dialed, peer_id, endpoint.get_remote_address().clone());
                }
            }
            SwarmEvent::ConnectionClosed { peer_id, connection_id, num_established, .. } => {
                self.reach.closed(peer_id, connection_id);
                if num_established == 0 {
                    self.ips.gone(&peer_id);
                    self.liveness.gone(&peer_id);
                    self.direct_wait_over(false);
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Ping(ping::Event { peer, result: Ok(rtt), .. })) => {
                self.liveness.heard(peer);
                self.reach.pinged(peer, rtt);
            }
            SwarmEvent::ListenerClosed { listener_id, .. } => {
                // A circuit listener closes when the relay refuses or drops the reservation.
                let was_relay = self.reach.listener_closed(listener_id);
                if was_relay {
                    tracing::info!("a relay reservation ended");
                    self.reserve();
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Upnp(e)) => match e {
                libp2p::upnp::Event::NewExternalAddr { external_addr: addr, .. } => {
                    tracing::info!(%addr, "the router mapped a port (UPnP): reachable from outside");
                    self.reach.mapped = Some(addr);
                    self.drop_reservations();
                    self.push_addresses();
                }
                libp2p::upnp::Event::ExpiredExternalAddr { external_addr: addr, .. } => {
                    tracing::info!(%addr, "a port mapping expired");
                    if self.reach.mapped.as_ref() == Some(&addr) {
                        self.reach.mapped = None;
                        self.reserve();
                    }
                }
                libp2p::upnp::Event::GatewayNotFound => tracing::debug!("no UPnP router found"),
                libp2p::upnp::Event::NonRoutableGateway => {
                    tracing::info!("the UPnP router is itself behind a NAT (double NAT): no mapping");
                    self.reach.double_nat = true;
                }
            },
            SwarmEvent::OutgoingConnectionError { connection_id, peer_id, error } => {
                if let Some(reply) = self.dials.remove(&connection_id) {
                    let _ =
                        reply.send(Err(NetError::Dial { target: "peer".into(), reason: error.to_string() }));
                }
                let Some(peer) = peer_id else { return };
                self.dial_failed(peer, &error);
                if self.connecting.get(&peer).is_some_and(|(id, _)| *id == connection_id) {
                    let reason = first_line(&error.to_string());
                    if let Some((_, waiting)) = self.connecting.remove(&peer) {
                        for (reply, _) in waiting {
                            let _ = reply.send(Err(NetError::Dial {
                                target: peer.to_string(),
                                reason: reason.clone(),
                            }));
                        }
                    }
                    if self.unreachable.len() >= MAX_TRACKED {
                        self.unreachable.retain(|_, (at, _)| at.elapsed() < UNREACHABLE_FOR);
                    }
                    if self.unreachable.len() < MAX_TRACKED {
                        self.unreachable.insert(peer, (std::time::Instant::now(), reason));
                    }
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Identify(identify::Event::Received {
                peer_id,
                info,
                ..
            })) => {
                // Bounded: past MAX_TRACKED peers, forget those not connected now.
                if self.addrs.len() >= MAX_TRACKED && !self.addrs.contains_key(&peer_id) {
                    let swarm = &self.swarm;
                    self.addrs.retain(|p, _| swarm.is_connected(p));
                    self.zones.retain(|p, _| swarm.is_connected(p));
                    self.serves_blocks.retain(|p, _| swarm.is_connected(p));
                }
                if let Some(zone) = zone_of(&info.agent_version) {
                    self.zones.insert(peer_id, zone);
                }
                let serves_blocks = info.protocols.contains(&crate::block::BLOCK_PROTOCOL);
                self.serves_blocks.insert(peer_id, serves_blocks);
                let dialed = self.dialed.remove(&peer_id);
                // Address hygiene: only addresses that reach as far as the connection they
                // came over (a peer across the internet is not dialed at its private or
                // loopback addresses).
                // (A peer whose connection has no address of its own, a relayed one: public.)
                let over =
                    self.ips.get(&peer_id).map_or(crate::reach::Scope::Public, crate::reach::scope_of_ip);
                let mut info = info;
                info.listen_addrs.retain(|a| crate::reach::usable(a, over));
                if info.protocols.contains(&relay::HOP_PROTOCOL_NAME) {
                    let direct =
                        dialed.iter().chain(&info.listen_addrs).find(|a| !crate::reach::is_relayed(a));
                    if let Some(addr) = direct {
                        self.reach.add_candidate(peer_id, addr.clone());
                        self.reserve();
                    }
                }
                if routable(&info.protocols) {
                    let kad = &mut self.swarm.behaviour_mut().kad;
                    for addr in info.listen_addrs.iter().chain(dialed.as_ref()) {
                        kad.add_address(&peer_id, addr.clone());
                    }
                }
                let mut addrs = info.listen_addrs;
                addrs.truncate(16);
                self.addrs.insert(peer_id, addrs);
            }
            SwarmEvent::Behaviour(BehaviourEvent::Autonat(autonat::Event::StatusChanged { new, .. })) => {
                let public = match new {
                    autonat::NatStatus::Public(addr) => Some(addr),
                    _ => None,
                };
                match &public {
                    Some(addr) => tracing::info!(%addr, "AutoNAT: reachable from outside"),
                    None => tracing::info!("AutoNAT: not reachable from outside (or not known yet)"),
                }
                self.reach.public = public.clone().filter(|a| !crate::reach::is_relayed(a));
                if self.reach.reachable() {
                    self.drop_reservations();
                } else {
                    self.reserve();
                }
                let _ = self.events.send(NetEvent::Reachability { public });
            }
            SwarmEvent::Behaviour(BehaviourEvent::Relay(relay::client::Event::ReservationReqAccepted {
                relay_peer_id,
                ..
            })) => {
                tracing::info!(relay = %relay_peer_id, "reachable through a relay");
                self.reach.accepted(relay_peer_id);
                self.push_addresses();
                let _ = self.events.send(NetEvent::RelayReserved { relay: relay_peer_id });
            }
            SwarmEvent::Behaviour(BehaviourEvent::Dcutr(dcutr::Event { remote_peer_id, result })) => {
                let event = match result {
                    Ok(_) => {
                        tracing::info!(peer = %remote_peer_id, "DCUtR: direct connection replaces the relayed one");
                        self.reach.hole_punched(remote_peer_id);
                        self.direct_wait_over(false);
                        NetEvent::DirectUpgrade { peer: remote_peer_id }
                    }
                    Err(e) => {
                        tracing::info!(peer = %remote_peer_id, error = %e, "DCUtR: no direct connection");
                        // The transfer goes through the relay without waiting any longer,
                        // and later ones do not wait for this peer.
                        self.reach.punch_failed(remote_peer_id);
                        if let Some((_, replies)) = self.direct_waiters.remove(&remote_peer_id) {
                            for reply in replies {
                                let _ = reply.send(Ok(remote_peer_id));
                            }
                        }
                        NetEvent::DirectUpgradeFailed { peer: remote_peer_id, reason: e.to_string() }
                    }
                };
                let _ = self.events.send(event);
            }
            SwarmEvent::Behaviour(BehaviourEvent::Mdns(mdns::Event::Discovered(found))) => {
                for (peer, addr) in found {
                    tracing::info!(%peer, %addr, "found a peer on the local network (mDNS)");
                    self.swarm.behaviour_mut().kad.add_address(&peer, addr.clone());
                    if !self.swarm.is_connected(&peer) {
                        let _ = self.swarm.dial(DialOpts::peer_id(peer).addresses(vec![addr]).build());
                    }
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Gossip(gossipsub::Event::Subscribed {
                peer_id,
                topic,
            })) => {
                let _ = self.events.send(NetEvent::Subscribed { topic: topic.into_string(), peer: peer_id });
            }
            SwarmEvent::Behaviour(BehaviourEvent::Gossip(gossipsub::Event::Message {
                propagation_source,
                message_id,
                message,
            })) => {
                let verdict = self.check_gossip(&propagation_source, &message);
                let accepted = verdict == gossipsub::MessageAcceptance::Accept;
                let gossip = &mut self.swarm.behaviour_mut().gossip;
                gossip.report_message_validation_result(&message_id, &propagation_source, verdict);
                if accepted {
                    let from = message.source.unwrap_or(propagation_source);
                    let topic = message.topic.into_string();
                    let _ = self.events.send(NetEvent::Gossip { topic, data: Arc::new(message.data), from });
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Kad(kad::Event::InboundRequest { request })) => {
                self.inbound(request);
            }
            SwarmEvent::Behaviour(BehaviourEvent::Kad(kad::Event::OutboundQueryProgressed {
                id,
                result,
                step,
                ..
            })) => {
                self.query(id, result, step.last);
            }
            _ => {}
        }
    }

    /// A dial to `peer` failed while it is not connected: it leaves the routing table (a
    /// Sybil that left, a peer gone for good), so walks and publications stop asking it.
    /// Kademlia alone keeps such a peer until a newcomer needs its slot, and seeds every
    /// walk with it. A live peer that only lost a dial race (two peers dialing each other
    /// at once) is connected, so it stays; one that connects later is routable again as
    /// soon as identify says so. Failures of this node's own making (limits, a dial already
    /// under way) do not count.
    pub(super) fn dial_failed(&mut self, peer: PeerId, error: &libp2p::swarm::DialError) {
        use libp2p::swarm::DialError;
        if self.swarm.is_connected(&peer)
            || matches!(
                error,
                DialError::Denied { .. } | DialError::DialPeerConditionFalse(_) | DialError::Aborted
            )
        {
            return;
        }
        if self.swarm.behaviour_mut().kad.remove_peer(&peer).is_some() {
            tracing::debug!(%peer, "a peer that cannot be reached left the routing table");
        }
    }
}
