//! Kademlia queries as they complete: publications, lookups of records and providers.

use super::*;

impl EventLoop {
    pub(super) fn query(&mut self, id: kad::QueryId, result: kad::QueryResult, last: bool) {
        match result {
            kad::QueryResult::PutRecord(r) => {
                match self.pending.remove(&id) {
                    Some(Pending::Publish { reply, walk, retry }) => self.published(r, reply, walk, retry),
                    // The walk ended first: if it stored the record, the caller is answered.
                    Some(Pending::WalkFor(fast)) if r.is_ok() => {
                        if let Some(Pending::Publish { reply, .. }) = self.pending.remove(&fast) {
                            let _ = reply.send(Ok(()));
                        }
                    }
                    _ => {}
                }
            }
            kad::QueryResult::GetRecord(result) => {
                let done = match self.pending.get_mut(&id) {
                    Some(Pending::FindName(lookup)) => lookup.answered(&result, last),
                    Some(Pending::FindHolders(lookup)) => lookup.answered(&result, last),
                    _ => return,
                };
                if !done {
                    return;
                }
                if let Some(mut q) = self.swarm.behaviour_mut().kad.query_mut(&id) {
                    q.finish();
                }
                match self.pending.remove(&id) {
                    Some(Pending::FindName(lookup)) => lookup.finish(|r, _| r),
                    Some(Pending::FindHolders(lookup)) => {
                        lookup.finish(|r, from| self.holders_found(r, from))
                    }
                    _ => {}
                }
            }
            kad::QueryResult::Bootstrap(r) if last => {
                if let Some(Pending::Bootstrap(reply)) = self.pending.remove(&id) {
                    let _ = reply.send(r.map(|_| ()).map_err(|e| NetError::Dht(e.to_string())));
                }
            }
            kad::QueryResult::StartProviding(r) => {
                if let Some(Pending::Provide(reply)) = self.pending.remove(&id) {
                    // A node with no peers yet still records itself; that is not a failure.
                    let _ = reply.send(r.map(|_| ()).or_else(|e| match e {
                        kad::AddProviderError::Timeout { .. } => Ok(()),
                    }));
                }
            }
            kad::QueryResult::GetProviders(r) => {
                let done = match r {
                    Ok(kad::GetProvidersOk::FoundProviders { providers, .. }) => {
                        if let Some(Pending::Providers(_, found)) = self.pending.get_mut(&id) {
                            found.extend(providers);
                        }
                        false
                    }
                    Ok(kad::GetProvidersOk::FinishedWithNoAdditionalRecord { .. }) | Err(_) => true,
                };
                if done || last {
                    if let Some(Pending::Providers(reply, found)) = self.pending.remove(&id) {
                        let _ = reply.send(found.into_iter().collect());
                    }
                }
            }
            _ => {}
        }
    }

    /// A holders record found (from `from`, or this node's own store), made safe to use:
    /// a record from across the internet (anyone can write one) does not make this node dial
    /// its own network's or machine's addresses; its holders' addresses are noted for the
    /// dials of the get that asked.
    fn holders_found(&mut self, mut record: HoldersRecord, from: Option<PeerId>) -> HoldersRecord {
        let over = match from {
            Some(p) => self.ips.get(&p).map_or(crate::reach::Scope::Public, crate::reach::scope_of_ip),
            // One from this node's own store: as it would be published.
            None => record.widest().unwrap_or(crate::reach::Scope::Public),
        };
        record.keep_reaching(over);
        for h in &record.holders {
            if !self.swarm.is_connected(&h.peer) {
                for a in &h.addrs {
                    self.swarm.add_peer_address(h.peer, a.clone());
                }
            }
        }
        record
    }
}
