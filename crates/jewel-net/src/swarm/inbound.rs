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
    /// see `build_swarm`): provider records as they come; holders records only if they
    /// decode, are for the key they are stored under, and are not older than the one kept.
    /// Anything else is dropped: this node keeps no records it cannot read.
    pub(super) fn inbound(&mut self, request: kad::InboundRequest) {
        use kad::store::RecordStore;
        let store = self.swarm.behaviour_mut().kad.store_mut();
        match request {
            kad::InboundRequest::AddProvider { record: Some(record) } => {
                if let Err(e) = store.add_provider(record) {
                    tracing::debug!(error = %e, "provider record not stored");
                }
            }
            kad::InboundRequest::PutRecord { source, record: Some(record), .. }
                if record.key.as_ref().starts_with(names::KEY_PREFIX) =>
            {
                let decoded = names::NameRecord::decode_at(record.key.as_ref(), &record.value);
                let kept = store.get(&record.key).and_then(|r| names::NameRecord::decode(&r.value).ok());
                match decoded {
                    Ok(r) if kept.as_ref().is_none_or(|k| k.seq <= r.seq) => {
                        let mut record = record;
                        record.expires = Some(std::time::Instant::now() + NAME_TTL);
                        if let Err(e) = store.put_name(record, source, r.user) {
                            tracing::debug!(error = %e, "name record not stored");
                        }
                    }
                    Ok(r) => tracing::warn!(
                        peer = %source,
                        seq = r.seq,
                        kept = kept.map_or(0, |k| k.seq),
                        "refused a replayed name record (a lower sequence number than the one kept)"
                    ),
                    Err(e) => tracing::warn!(peer = %source, error = %e, "refused a name record"),
                }
            }
            kad::InboundRequest::PutRecord { source, record: Some(record), .. } => {
                let group = book::group_of(record.key.as_ref());
                let decoded = HoldersRecord::decode(&record.value);
                let kept = store.get(&record.key).and_then(|r| HoldersRecord::decode(&r.value).ok());
                match (group, decoded) {
                    (Some(g), Ok(r)) if r.group == g && kept.is_none_or(|k| k.seq <= r.seq) => {
                        if let Err(e) = store.put(record) {
                            tracing::debug!(error = %e, "holders record not stored");
                        }
                    }
                    (Some(_), Ok(_)) => {
                        tracing::info!(peer = %source, "refused a holders record older than the one kept or for another key");
                    }
                    (_, Err(e)) => {
                        tracing::info!(peer = %source, error = %e, "refused a malformed DHT record")
                    }
                    (None, Ok(_)) => {
                        tracing::info!(peer = %source, "refused a DHT record under a foreign key")
                    }
                }
            }
            _ => {}
        }
    }
}
