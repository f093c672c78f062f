//! hc-allocator: one `Allocate` command per address. The `hc_api` client finds the leader,
//! follows redirects and retries through failover; allocation is idempotent per (container id,
//! interface), so a retry after an unknown outcome returns the same address.

use std::net::IpAddr;

use hc_api::client::Client;
use hc_api::types::{AllocateRequest, Owner};

use super::{Acked, AllocError, AllocatorClient, owner_name};

pub struct HcClient {
    client: Client,
    pool: String,
    tag: String,
    id: usize,
}

impl HcClient {
    pub fn new(client: Client, pool: &str, tag: &str, id: usize) -> HcClient {
        HcClient { client, pool: pool.to_owned(), tag: tag.to_owned(), id }
    }
}

impl AllocatorClient for HcClient {
    async fn allocate(&mut self, seq: u64) -> Result<Acked, AllocError> {
        let container = owner_name(&self.tag, self.id, seq);
        let request = AllocateRequest {
            owner: Owner {
                container_id: container.clone(),
                interface: "eth0".into(),
                namespace: "bench".into(),
                pod: container.clone(),
                // Spread over a few nodes, as the attachments of real pods are.
                node: format!("bench-node-{}", self.id % 16),
            },
            pool: Some(self.pool.clone()),
            ..Default::default()
        };
        let a = self.client.allocate(None, request).await?.allocation;
        if a.owner.container_id != container {
            return Err(AllocError::WrongOwner { expected: container, got: a.owner.container_id });
        }
        match a.address {
            IpAddr::V4(address) => Ok(Acked { address, owner: container, conflicts: 0 }),
            address => Err(AllocError::NotIpv4 { address }),
        }
    }
}
