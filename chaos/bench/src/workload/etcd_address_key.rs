//! etcd, one key per address — how etcd-backed IPAMs that store each address as its own object
//! allocate: take the next candidate from this client's cursor, read its key linearizably, and
//! if it is free, create it in a transaction `If(version(key) == 0) Then(put key owner)`. A taken
//! candidate (seen by the read or lost in the transaction) moves the cursor on.
//!
//! Clients start their cursors evenly spread over the pool, so they rarely meet: this is etcd's
//! best case, with almost no conflicts.

use etcd_client::{Compare, CompareOp, KvClient, Txn, TxnOp};

use super::{Acked, AllocError, AllocatorClient, MAX_ATTEMPTS, POOL_SIZE, owner_name, pool_address};

pub struct EtcdAddressKeyClient {
    kv: KvClient,
    prefix: String,
    tag: String,
    id: usize,
    /// The next candidate offset into the pool.
    cursor: u32,
}

impl EtcdAddressKeyClient {
    /// Client `id` of `clients`, with keys `{prefix}{address}`.
    pub fn new(kv: KvClient, prefix: &str, tag: &str, id: usize, clients: usize) -> EtcdAddressKeyClient {
        let stride = (POOL_SIZE - 2) / clients.max(1) as u32;
        EtcdAddressKeyClient { kv, prefix: prefix.to_owned(), tag: tag.to_owned(), id, cursor: 1 + stride * id as u32 }
    }

    fn advance(&mut self) {
        self.cursor += 1;
        if self.cursor >= POOL_SIZE - 1 {
            self.cursor = 1;
        }
    }
}

impl AllocatorClient for EtcdAddressKeyClient {
    async fn allocate(&mut self, seq: u64) -> Result<Acked, AllocError> {
        let owner = owner_name(&self.tag, self.id, seq);
        for attempt in 0..MAX_ATTEMPTS {
            let address = pool_address(self.cursor);
            let key = format!("{}{address}", self.prefix);
            // Linearizable (the default): served through the leader's read index.
            let taken = !self.kv.get(key.as_str(), None).await?.kvs().is_empty();
            if !taken {
                let txn = Txn::new()
                    .when([Compare::version(key.as_str(), CompareOp::Equal, 0)])
                    .and_then([TxnOp::put(key.as_str(), owner.as_str(), None)]);
                if self.kv.txn(txn).await?.succeeded() {
                    self.advance();
                    return Ok(Acked { address, owner, conflicts: attempt });
                }
            }
            self.advance();
        }
        Err(AllocError::TooManyConflicts { attempts: MAX_ATTEMPTS })
    }
}
