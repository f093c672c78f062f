//! etcd, one key holding the whole pool — the Whereabouts and original HC Bridge layout: read
//! the pool key, pick the first free address in its bitmap, and write the new bitmap back in a
//! transaction `If(mod_revision(key) == r) Then(put key bitmap)`; on a conflict read again.

use etcd_client::{Compare, CompareOp, KvClient, Txn, TxnOp};

use super::bitmap::PoolBitmap;
use super::{Acked, AllocError, AllocatorClient, MAX_ATTEMPTS, POOL_SIZE, owner_name, pool_address};

pub struct EtcdPoolKeyClient {
    kv: KvClient,
    key: String,
    tag: String,
    id: usize,
}

impl EtcdPoolKeyClient {
    pub fn new(kv: KvClient, key: &str, tag: &str, id: usize) -> EtcdPoolKeyClient {
        EtcdPoolKeyClient { kv, key: key.to_owned(), tag: tag.to_owned(), id }
    }
}

impl AllocatorClient for EtcdPoolKeyClient {
    async fn allocate(&mut self, seq: u64) -> Result<Acked, AllocError> {
        let owner = owner_name(&self.tag, self.id, seq);
        for attempt in 0..MAX_ATTEMPTS {
            let resp = self.kv.get(self.key.as_str(), None).await?;
            // An absent key is an empty pool with mod_revision 0, which the compare accepts.
            let (mut bitmap, revision) = match resp.kvs().first() {
                Some(kv) => (PoolBitmap::decode(kv.value()), kv.mod_revision()),
                None => (PoolBitmap::default(), 0),
            };
            let offset = bitmap.first_free(1, POOL_SIZE - 1).ok_or(AllocError::Exhausted { offset: POOL_SIZE })?;
            bitmap.insert(offset);
            let txn = Txn::new()
                .when([Compare::mod_revision(self.key.as_str(), CompareOp::Equal, revision)])
                .and_then([TxnOp::put(self.key.as_str(), bitmap.encode(), None)]);
            if self.kv.txn(txn).await?.succeeded() {
                return Ok(Acked { address: pool_address(offset), owner, conflicts: attempt });
            }
        }
        Err(AllocError::TooManyConflicts { attempts: MAX_ATTEMPTS })
    }
}
