//! Peers of the test process's own, played as strangers would: shared by the hostile and
//! WAN-lab tests.

#![allow(dead_code)]

/// An identity of this test process's own on the network (a stranger's peer): listening
/// on `listen`, joining through `bootstrap`, holding `store` (or serving no blocks). A
/// start whose first dial loses a race for its port (port reuse) is tried again.
pub async fn stranger(
    listen: &str,
    bootstrap: Vec<jewel_net::Multiaddr>,
    store: Option<std::sync::Arc<dyn jewel::store::BlockStore>>,
) -> jewel_net::Network {
    let mut last = None;
    for _ in 0..5 {
        let config = jewel_net::NetConfig {
            listen: vec![listen.parse().unwrap()],
            bootstrap: bootstrap.clone(),
            serve_blocks: store.is_some(),
            ..jewel_net::NetConfig::default()
        };
        let store = store.clone().unwrap_or_else(|| std::sync::Arc::new(jewel::MemStore::new(None)));
        match jewel_net::Network::start(jewel_net::Keypair::generate_ed25519(), config, store).await {
            Ok(n) => return n,
            Err(e) => last = Some(e),
        }
    }
    panic!("a stranger's peer could not start: {last:?}");
}

/// A peer that takes every block and keeps none: it says it stored each (its writer
/// "commits" whatever id it is told), says it has every block, grants every lease, and
/// cannot prove or serve a byte.
pub struct BlackHole;

struct Swallow(u64);

impl jewel::store::BlockWriter for Swallow {
    fn write(&mut self, data: &[u8]) -> Result<(), jewel::store::StoreError> {
        self.0 += data.len() as u64;
        Ok(())
    }
    fn written(&self) -> u64 {
        self.0
    }
    fn commit(
        self: Box<Self>,
        expected: Option<jewel::BlockId>,
    ) -> Result<jewel::BlockId, jewel::store::StoreError> {
        Ok(expected.unwrap_or(jewel::BlockId([0; 32])))
    }
}

impl jewel::store::BlockStore for BlackHole {
    fn writer(&self) -> Result<Box<dyn jewel::store::BlockWriter>, jewel::store::StoreError> {
        Ok(Box::new(Swallow(0)))
    }
    fn has(&self, _: &jewel::BlockId) -> Result<bool, jewel::store::StoreError> {
        Ok(true)
    }
    fn reader(
        &self,
        id: &jewel::BlockId,
    ) -> Result<Box<dyn jewel::store::BlockReader>, jewel::store::StoreError> {
        Err(jewel::store::StoreError::NotFound(*id))
    }
    fn remove(&self, _: &jewel::BlockId) -> Result<bool, jewel::store::StoreError> {
        Ok(true)
    }
    fn list(&self) -> Result<Vec<(jewel::BlockId, u64)>, jewel::store::StoreError> {
        Ok(Vec::new())
    }
    fn usage(&self) -> jewel::store::Usage {
        jewel::store::Usage { used: 0, capacity: None }
    }
}
