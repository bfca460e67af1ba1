//! The event loop's commands, one by one, and the publication of records.

use super::*;

impl EventLoop {
    /// Stores `record` here and on the closest peers this node knows; `reply` hears when
    /// the first of them has it.
    pub(super) fn publish(&mut self, record: kad::Record, reply: oneshot::Sender<Result<(), NetError>>) {
        let kad = &mut self.swarm.behaviour_mut().kad;
        // Kademlia's own publication: stored here (and republished while this node
        // runs) and sent to the closest peers a walk finds. The walk waits for every
        // close peer's answer, a frozen one's too, so the caller does not wait for it.
        // A full store here (see `records`) only loses the local copy and its republishing.
        let walk = match kad.put_record(record.clone(), kad::Quorum::One) {
            Ok(q) => Some(q),
            Err(e) => {
                tracing::debug!(error = %e, "a record is not kept here; it goes to the closest peers only");
                None
            }
        };
        // The caller waits for the closest peers this node knows: the first that
        // stores the record makes it findable.
        let target = kad::KBucketKey::new(record.key.clone());
        // Peers that failed a dial just now or stopped answering are passed over.
        let (unreachable, liveness) = (&self.unreachable, &self.liveness);
        let closest: Vec<PeerId> = kad
            .get_closest_local_peers(&target)
            .map(|k| *k.preimage())
            .filter(|p| {
                !liveness.is_silent(p)
                    && unreachable.get(p).is_none_or(|(at, _)| at.elapsed() >= UNREACHABLE_FOR)
            })
            .take(PUBLISH_TO)
            .collect();
        if closest.is_empty() {
            let _ = reply.send(Err(NetError::NoPeers));
            return;
        }
        let q = kad.put_record_to(record.clone(), closest.into_iter(), kad::Quorum::One);
        self.pending.insert(q, Pending::Publish { reply, walk, retry: Some((record, WALKS_AFTER_FAILURE)) });
        if let Some(w) = walk {
            self.pending.insert(w, Pending::WalkFor(q));
        }
    }

    /// A publication ended with `r`. On failure, the caller waits for the walk started with
    /// it, if it still runs, or else for one more walk.
    pub(super) fn published(
        &mut self,
        r: kad::PutRecordResult,
        reply: oneshot::Sender<Result<(), NetError>>,
        walk: Option<kad::QueryId>,
        retry: Option<(kad::Record, u8)>,
    ) {
        if r.is_err() {
            if let Some(w) = walk.filter(|w| self.pending.contains_key(w)) {
                self.pending.insert(w, Pending::Publish { reply, walk: None, retry });
                return;
            }
            if let Some((record, walks)) = retry.filter(|(_, walks)| *walks > 0) {
                match self.swarm.behaviour_mut().kad.put_record(record.clone(), kad::Quorum::One) {
                    Ok(q) => {
                        let retry = Some((record, walks - 1));
                        self.pending.insert(q, Pending::Publish { reply, walk: None, retry });
                    }
                    Err(e) => {
                        let _ = reply.send(Err(NetError::Dht(e.to_string())));
                    }
                }
                return;
            }
        }
        if let Some(w) = walk {
            self.pending.remove(&w);
        }
        let _ = reply.send(r.map(|_| ()).map_err(|e| NetError::Dht(e.to_string())));
    }

    pub(super) fn command(&mut self, cmd: Command) {
        let kad = &mut self.swarm.behaviour_mut().kad;
        match cmd {
            Command::Listeners { reply } => {
                let _ = reply.send(self.swarm.listeners().cloned().collect());
            }
            Command::Dial { addr, reply } => {
                let target = addr.to_string();
                self.dial(DialOpts::unknown_peer_id().address(addr).build(), target, reply);
            }
            Command::Connect { peer, direct, reply } => {
                if self.swarm.is_connected(&peer) {
                    if direct {
                        self.connected_reply(peer, reply);
                    } else {
                        let _ = reply.send(Ok(peer));
                    }
                    return;
                }
                if let Some((at, reason)) = self.unreachable.get(&peer) {
                    if at.elapsed() < UNREACHABLE_FOR {
                        let reason = format!("{reason} ({:.1} s ago)", at.elapsed().as_secs_f64());
                        let _ = reply.send(Err(NetError::Dial { target: peer.to_string(), reason }));
                        return;
                    }
                }
                if let Some((_, waiting)) = self.connecting.get_mut(&peer) {
                    waiting.push((reply, direct));
                    return;
                }
                // A dial already on its way (mDNS, Kademlia) does not make this one fail:
                // libp2p's default condition would refuse to dial a peer being dialed.
                let opts = DialOpts::peer_id(peer).condition(PeerCondition::Disconnected).build();
                let id = opts.connection_id();
                match self.swarm.dial(opts) {
                    Ok(()) => {
                        self.connecting.insert(peer, (id, vec![(reply, direct)]));
                    }
                    Err(e) => {
                        let _ = reply
                            .send(Err(NetError::Dial { target: peer.to_string(), reason: e.to_string() }));
                    }
                }
            }
            Command::Bootstrap { reply } => match kad.bootstrap() {
                Ok(q) => {
                    self.pending.insert(q, Pending::Bootstrap(reply));
                }
                Err(_) => {
                    let _ = reply.send(Err(NetError::NoPeers));
                }
            },
            Command::Provide { id, reply } => match kad.start_providing(kad_key(&id)) {
                Ok(q) => {
                    self.pending.insert(q, Pending::Provide(reply));
                }
                Err(e) => {
                    let _ = reply.send(Err(NetError::Dht(e.to_string())));
                }
            },
            Command::Providers { id, reply } => {
                let q = kad.get_providers(kad_key(&id));
                self.pending.insert(q, Pending::Providers(reply, HashSet::new()));
            }
            Command::PublishHolders { record, reply } => {
                match dht_record::to_publish(kad.store_mut(), &record) {
                    Ok(r) => self.publish(r, reply),
                    Err(e) => {
                        let _ = reply.send(Err(NetError::Dht(e)));
                    }
                }
            }
            Command::PublishName { record, reply } => {
                match dht_record::to_publish(kad.store_mut(), &record) {
                    Ok(r) => self.publish(r, reply),
                    Err(e) => {
                        let _ = reply.send(Err(NetError::Dht(e)));
                    }
                }
            }
            Command::FindName { key, reply } => {
                let q = kad.get_record(kad::RecordKey::new(&key));
                self.pending.insert(q, Pending::FindName(dht_record::Lookup::new(key, reply)));
            }
            Command::Subscribe { topic, check, reply } => {
                let t = gossipsub::IdentTopic::new(topic);
                self.gossip_checks.insert(t.hash(), check);
                let gossip = &mut self.swarm.behaviour_mut().gossip;
                if let Err(e) = gossip.set_topic_params(t.clone(), topic_score()) {
                    tracing::warn!(error = e, "gossip scoring is off for a topic");
                }
                let r = gossip.subscribe(&t);
                let _ = reply.send(r.map(|_| ()).map_err(|e| NetError::Dht(e.to_string())));
            }
            Command::Gossip { topic, data, reply } => {
                let t = gossipsub::IdentTopic::new(topic);
                let r = self.swarm.behaviour_mut().gossip.publish(t, data);
                let _ = reply.send(r.map(|_| ()).map_err(|e| NetError::Dht(format!("gossip: {e}"))));
            }
            Command::FindHolders { group, reply } => {
                let key = book::key(&group);
                let q = kad.get_record(kad::RecordKey::new(&key));
                self.pending.insert(q, Pending::FindHolders(dht_record::Lookup::new(key, reply)));
            }
            Command::RoutingTable { reply } => {
                let peers =
                    kad.kbuckets().flat_map(|b| b.iter().map(|e| *e.node.key.preimage()).collect::<Vec<_>>());
                let _ = reply.send(peers.collect());
            }
            Command::Peers { reply } => {
                let mut known: Vec<PeerId> = kad
                    .kbuckets()
                    .flat_map(|b| b.iter().map(|e| *e.node.key.preimage()).collect::<Vec<_>>())
                    .collect();
                for p in self.swarm.connected_peers() {
                    if !known.contains(p) {
                        known.push(*p);
                    }
                }
                let infos = known
                    .into_iter()
                    .map(|p| PeerInfo {
                        peer: p.to_string(),
                        addrs: self
                            .addrs
                            .get(&p)
                            .map(|a| a.iter().map(|m| m.to_string()).collect())
                            .unwrap_or_default(),
                        connected: self.swarm.is_connected(&p),
                        zone: self.zones.get(&p).cloned(),
                        blocks: self.serves_blocks.get(&p).copied(),
                        ip: self.ips.get(&p).map(|ip| ip.to_string()),
                        silent: self.liveness.is_silent(&p),
                        gossip_score: self.swarm.behaviour().gossip.peer_score(&p),
                        path: self.reach.path(&p),
                        rtt_ms: self.reach.rtt(&p).map(|d| d.as_secs_f64() * 1e3),
                    })
                    .collect();
                let _ = reply.send(infos);
            }
            Command::Reachability { reply } => {
                let mut addrs: Vec<String> = self
                    .swarm
                    .external_addresses()
                    .chain(self.swarm.listeners().filter(|a| crate::reach::is_relayed(a)))
                    .map(|a| a.to_string())
                    .collect();
                addrs.dedup();
                let _ = reply.send(Reachability {
                    public: self.reach.public.as_ref().map(|a| a.to_string()),
                    mapped: self.reach.mapped.as_ref().map(|a| a.to_string()),
                    relays: self.reach.relays().iter().map(|p| p.to_string()).collect(),
                    addrs,
                    hole_punched: self.reach.punched_count(),
                    double_nat: self.reach.double_nat,
                });
            }
        }
    }
}
