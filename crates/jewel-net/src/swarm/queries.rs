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
            kad::QueryResult::GetRecord(result)
                if matches!(self.pending.get(&id), Some(Pending::FindName(..))) =>
            {
                let mut done = last || result.is_err();
                if let (
                    Ok(kad::GetRecordOk::FoundRecord(found)),
                    Some(Pending::FindName(key, best, count, _)),
                ) = (result, self.pending.get_mut(&id))
                {
                    match names::NameRecord::decode_at(key, &found.record.value) {
                        Ok(r) => {
                            *count += 1;
                            if best.as_ref().is_none_or(|b| b.seq < r.seq) {
                                *best = Some(r);
                            }
                            done |= *count >= NAME_ANSWERS;
                        }
                        Err(e) => {
                            tracing::warn!(peer = ?found.peer, error = %e, "refused a name record a peer answered with")
                        }
                    }
                }
                if done {
                    if let Some(mut q) = self.swarm.behaviour_mut().kad.query_mut(&id) {
                        q.finish();
                    }
                    if let Some(Pending::FindName(_, best, _, reply)) = self.pending.remove(&id) {
                        let _ = reply.send(best);
                    }
                }
            }
            kad::QueryResult::GetRecord(Ok(kad::GetRecordOk::FoundRecord(found))) => {
                let Some(Pending::Find(group, _)) = self.pending.get(&id) else { return };
                let record = HoldersRecord::decode(&found.record.value).ok().filter(|r| r.group == *group);
                let Some(mut record) = record else {
                    tracing::debug!(peer = ?found.peer, "a peer answered with a bad holders record");
                    return;
                };
                // Address hygiene: a record from across the internet (anyone can write one)
                // does not make this node dial its own network's or machine's addresses.
                // (One from this node's own store: as it would be published.)
                let over = match found.peer {
                    Some(p) => {
                        self.ips.get(&p).map_or(crate::reach::Scope::Public, crate::reach::scope_of_ip)
                    }
                    None => record.widest().unwrap_or(crate::reach::Scope::Public),
                };
                record.keep_reaching(over);
                // The first good record is enough: a get needs one placement, and every byte
                // it leads to is verified.
                if let Some(mut q) = self.swarm.behaviour_mut().kad.query_mut(&id) {
                    q.finish();
                }
                for h in &record.holders {
                    if !self.swarm.is_connected(&h.peer) {
                        for a in &h.addrs {
                            self.swarm.add_peer_address(h.peer, a.clone());
                        }
                    }
                }
                if let Some(Pending::Find(_, reply)) = self.pending.remove(&id) {
                    let _ = reply.send(Some(record));
                }
            }
            kad::QueryResult::GetRecord(_) if last => {
                if let Some(Pending::Find(_, reply)) = self.pending.remove(&id) {
                    let _ = reply.send(None);
                }
            }
            kad::QueryResult::GetRecord(Err(_)) => {
                if let Some(Pending::Find(_, reply)) = self.pending.remove(&id) {
                    let _ = reply.send(None);
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
}
