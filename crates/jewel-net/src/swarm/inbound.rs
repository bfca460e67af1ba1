//! What peers send this node: gossip messages and DHT records, checked before they are
//! passed on or kept.

use super::*;

impl EventLoop {
    /// Whether a gossip message from `source` is passed on (to this node and to the topic's
    /// other peers): within the peer's rate, on a topic this node checks, and genuine.
    pub(super) fn check_gossip(
        &mut self,
        source: &PeerId,
        message: &gossipsub::Message,
    ) -> gossipsub::MessageAcceptance {
        let now = std::time::Instant::now();
        if self.gossip_rate.len() >= MAX_TRACKED {
            self.gossip_rate.retain(|_, (at, _)| now.duration_since(*at) < Duration::from_secs(1));
        }
        let (start, count) = self.gossip_rate.entry(*source).or_insert((now, 0));
        if now.duration_since(*start) >= Duration::from_secs(1) {
            (*start, *count) = (now, 0);
        }
        *count += 1;
        if *count > GOSSIP_PER_PEER_PER_SEC {
            return gossipsub::MessageAcceptance::Ignore;
        }
        // An author this node has graylisted is not heard through others either: an honest
        // peer that forwards its genuine-looking messages is not penalised for it.
        let graylist = gossipsub::PeerScoreThresholds::default().graylist_threshold;
        let author_score = message.source.and_then(|a| self.swarm.behaviour().gossip.peer_score(&a));
        if author_score.is_some_and(|s| s < graylist) {
            return gossipsub::MessageAcceptance::Ignore;
        }
        match self.gossip_checks.get(&message.topic) {
            Some(check) if check(&message.data) => gossipsub::MessageAcceptance::Accept,
            Some(_) => {
                tracing::debug!(peer = %source, "refused a gossip message (not genuine)");
                gossipsub::MessageAcceptance::Reject
            }
            None => gossipsub::MessageAcceptance::Ignore,
        }
    }

    /// Records and provider records other peers ask this node to store (they are filtered,
    /// see `build_swarm`): provider records as they come; name and holders records only if
    /// they decode, are genuine and for the key they are stored under, and are not older
    /// than the one kept (`dht_record::accept`). Anything else is dropped: this node keeps
    /// no records it cannot read.
    pub(super) fn inbound(&mut self, request: kad::InboundRequest) {
        use kad::store::RecordStore;
        let store = self.swarm.behaviour_mut().kad.store_mut();
        match request {
            kad::InboundRequest::AddProvider { record: Some(record) } => {
                if let Err(e) = store.add_provider(record) {
                    tracing::debug!(error = %e, "provider record not stored");
                }
            }
            kad::InboundRequest::PutRecord { source, record: Some(mut record), .. } => {
                if record.key.as_ref().starts_with(names::KEY_PREFIX) {
                    match dht_record::accept::<NameRecord>(store, &record) {
                        Ok(r) => {
                            record.expires = Some(std::time::Instant::now() + NAME_TTL);
                            if let Err(e) = store.put_name(record, source, r.user) {
                                tracing::debug!(error = %e, "name record not stored");
                            }
                        }
                        Err(e) => tracing::warn!(peer = %source, error = %e, "refused a name record"),
                    }
                } else {
                    match dht_record::accept::<HoldersRecord>(store, &record) {
                        Ok(_) => {
                            if let Err(e) = store.put(record) {
                                tracing::debug!(error = %e, "holders record not stored");
                            }
                        }
                        Err(e) => tracing::info!(peer = %source, error = %e, "refused a DHT record"),
                    }
                }
            }
            _ => {}
        }
    }
}
