//! [`State`]: everything the allocator replicates, `apply`, and the read queries.
//!
//! The command handlers live in `apply/`, one file per kind of object; this file holds the data,
//! the bookkeeping every handler shares (allocation indexes, cooldowns, the clock) and the reads.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;

use hc_api::IpamError;
use hc_api::types::{AllocateRequest, Allocation, AttachmentId, Lease, PoolSpec, PoolStatus, Reservation, VlanSpec};
use serde::{Deserialize, Serialize};

use crate::addr::{AddrMap, AddrSet, TaggedAddrSet};
use crate::command::{Command, Output, Request, Response};
use crate::pool::Pool;
use crate::record::{Names, Record, RecordRef};

/// Where an entry sits in the log. Passed to `apply`; the state keeps the last one.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApplyContext {
    pub log_index: u64,
}

/// The whole replicated state. Serialized as the snapshot (see `snapshot.rs`: only the
/// replicated data is written; the indexes are rebuilt on load).
///
/// `PartialEq` compares everything, indexes included (allocation records through their
/// resolved names: name ids are derived data); a state rebuilt from its own snapshot is equal
/// to it.
#[derive(Debug, Clone, Default)]
pub struct State {
    /// Log index of the last applied entry.
    pub(crate) last_applied: u64,
    /// Leader time (ms) of the latest entry, never decreasing: a new leader's clock may be behind
    /// the old one's, and time in the state must not step back (invariant 6: the only clock).
    pub(crate) now_ms: u64,
    pub(crate) pools: BTreeMap<String, Pool>,
    pub(crate) vlans: BTreeMap<u16, VlanSpec>,
    /// Reservation key → reservation.
    pub(crate) reservations: BTreeMap<String, Reservation>,
    /// Address → its one holder (invariant 1 by construction). Records are shared (`Arc`) so that
    /// a snapshot's copy of the state ([`State::replicated`]) does not copy them; a record is
    /// only changed through `Arc::make_mut`, which copies it first if a snapshot still holds it.
    pub(crate) allocations: AddrMap<Arc<Record>>,
    /// Node → its current lease (active or expired). Removed by `NodeGone`.
    pub(crate) leases: BTreeMap<String, Lease>,
    /// Highest token each node was ever granted. Never shrinks, so tokens stay monotonic even
    /// after the node's lease is dropped (invariant 3).
    pub(crate) max_tokens: BTreeMap<String, u64>,
    /// Derived from the fields above; rebuilt when a snapshot is loaded.
    pub(crate) idx: Index,
}

/// Lookups derived from the replicated data. Every mutation keeps them in step.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Index {
    /// First address of each pool → pool name (pools never overlap, so this finds an address's pool).
    pub(crate) pool_by_first: BTreeMap<IpAddr, String>,
    /// Reserved address → reservation key.
    pub(crate) reservation_by_address: BTreeMap<IpAddr, String>,
    /// (hash of an attachment, the address it holds), for ADD idempotency and release by owner.
    /// Only the hash is kept, not a second copy of the owner's strings: lookups check the
    /// candidates' allocation records, so a hash collision costs a comparison, never a wrong
    /// answer. The hash is fixed (FNV-1a), so the index is the same on every replica.
    pub(crate) by_attachment: TaggedAddrSet,
    /// Node → addresses its attachments hold (lease expiry, reconcile, node gone).
    pub(crate) by_node: BTreeMap<String, AddrSet>,
    /// (reuse time, address) of every cooling entry, oldest first, for lazy expiry.
    pub(crate) cooling_queue: BTreeSet<(u64, IpAddr)>,
    /// The names allocation records share.
    pub(crate) names: Names,
}

impl PartialEq for State {
    fn eq(&self, other: &Self) -> bool {
        self.last_applied == other.last_applied
            && self.now_ms == other.now_ms
            && self.pools == other.pools
            && self.vlans == other.vlans
            && self.reservations == other.reservations
            && self.leases == other.leases
            && self.max_tokens == other.max_tokens
            && self.idx == other.idx
            && self.allocations.len() == other.allocations.len()
            && self
                .allocations
                .iter()
                .zip(other.allocations.iter())
                .all(|((a, x), (b, y))| a == b && x.resolve(&self.idx.names) == y.resolve(&other.idx.names))
    }
}

impl Eq for State {}

impl State {
    /// Applies one committed entry. Deterministic: the same state and entry give the same
    /// result and the same new state on every replica. A refused command changes nothing
    /// (besides the applied index and the clock, which advance with every entry).
    pub fn apply(&mut self, ctx: ApplyContext, request: &Request) -> Response {
        self.last_applied = ctx.log_index;
        self.advance_clock(request.time_ms);
        match &request.command {
            Command::Batch(commands) => Ok(Output::Batch(
                commands.iter().map(|command| self.apply_in_batch(ctx, request.time_ms, command)).collect(),
            )),
            command => self.apply_command(ctx, request.time_ms, command),
        }
    }

    /// One command of a batch: as if it were an entry of its own at the batch's index and time.
    fn apply_in_batch(&mut self, ctx: ApplyContext, time_ms: u64, command: &Command) -> Response {
        if !command.batchable() {
            return Err(IpamError::invalid("command", "only Allocate and Release may be batched"));
        }
        self.apply_command(ctx, time_ms, command)
    }

    fn apply_command(&mut self, ctx: ApplyContext, time_ms: u64, command: &Command) -> Response {
        match command {
            Command::CreatePool(spec) => self.create_pool(spec),
            Command::UpdatePool(spec) => self.update_pool(spec),
            Command::DeletePool { name, force } => self.delete_pool(name, *force),
            Command::PutVlan(spec) => self.put_vlan(spec),
            Command::DeleteVlan { id } => self.delete_vlan(*id),
            Command::PutReservation(r) => self.put_reservation(r),
            Command::DeleteReservation { key } => self.delete_reservation(key),
            Command::Allocate { fence, request } => self.allocate(ctx, time_ms, fence.as_ref(), request),
            Command::Release { fence, target } => self.release(fence.as_ref(), target),
            Command::GrantLease { node, ttl_ms } => self.grant_lease(ctx, node, *ttl_ms),
            Command::ExpireLease { node, lease_id } => self.expire_lease(node, *lease_id),
            Command::Reconcile { fence, valid } => self.reconcile(fence, valid),
            Command::NodeGone { node } => self.node_gone(node),
            Command::Batch(_) => Err(IpamError::invalid("command", "a batch may not hold a batch")),
        }
    }

    /// Records a log entry that carries no command (openraft's blank and membership entries):
    /// only the applied index moves.
    pub fn mark_applied(&mut self, ctx: ApplyContext) {
        self.last_applied = ctx.log_index;
    }

    /// Moves the state's clock to `max(now, time_ms)` and ends the cooldowns that are over.
    fn advance_clock(&mut self, time_ms: u64) {
        self.now_ms = self.now_ms.max(time_ms);
        while let Some(&(until, address)) = self.idx.cooling_queue.first() {
            if until > self.now_ms {
                break;
            }
            self.idx.cooling_queue.remove(&(until, address));
            let held =
                self.allocations.contains_key(&address) || self.idx.reservation_by_address.contains_key(&address);
            if let Some(pool) = self.pool_of_mut(address) {
                pool.cooling.remove(&address);
                if !held {
                    pool.vacate(address);
                }
            }
        }
    }

    // ---- shared bookkeeping ----

    /// The pool whose CIDR contains `address`.
    pub(crate) fn pool_of(&self, address: IpAddr) -> Option<&Pool> {
        let (_, name) = self.idx.pool_by_first.range(..=address).next_back()?;
        self.pools.get(name).filter(|p| p.contains(address))
    }

    pub(crate) fn pool_of_mut(&mut self, address: IpAddr) -> Option<&mut Pool> {
        let (_, name) = self.idx.pool_by_first.range(..=address).next_back()?;
        self.pools.get_mut(name).filter(|p| p.contains(address))
    }

    /// Records a new allocation in every index. The caller has checked that the address is
    /// inside `allocation.pool`, usable, and not held, and that the attachment holds nothing.
    pub(crate) fn insert_allocation(&mut self, allocation: &Allocation) {
        let address = allocation.address;
        self.clear_cooling(address);
        if let Some(pool) = self.pools.get_mut(&allocation.pool) {
            pool.occupy(address);
            pool.allocated += 1;
        }
        self.idx
            .by_attachment
            .insert((attachment_hash(&allocation.owner.container_id, &allocation.owner.interface), address));
        self.idx.by_node.entry(allocation.owner.node.clone()).or_default().insert(address);
        let o = &allocation.owner;
        let ids = self.idx.names.acquire_owner(o);
        // The allocate command refuses strings longer than a record holds; should an older
        // log hold one, the record drops its strings rather than the replica stopping.
        let record = Record::new(
            o.container_id.as_str(),
            &o.pod,
            allocation.reservation.as_deref(),
            ids,
            allocation.state,
            allocation.log_index,
            allocation.allocated_at_ms,
        )
        .unwrap_or_else(|_| {
            Record::new("", "", None, ids, allocation.state, allocation.log_index, allocation.allocated_at_ms)
                .unwrap_or_else(|_| unreachable!("empty strings fit"))
        });
        self.allocations.insert(address, Arc::new(record));
    }

    /// Removes the allocation of `address` from every index. With `cooldown`, the address then
    /// waits out its pool's reuse cooldown; a reserved address stays held for its key either way.
    pub(crate) fn remove_allocation(&mut self, address: IpAddr, cooldown: bool) -> Option<Allocation> {
        let record = self.allocations.remove(&address)?;
        let allocation = self.allocation(address, &record);
        // A snapshot being written may still share the record; it has its own copy of the table.
        self.idx.names.release_record(&record);
        self.idx
            .by_attachment
            .remove(&(attachment_hash(&allocation.owner.container_id, &allocation.owner.interface), address));
        if let Some(set) = self.idx.by_node.get_mut(&allocation.owner.node) {
            set.remove(&address);
            if set.is_empty() {
                self.idx.by_node.remove(&allocation.owner.node);
            }
        }
        let reserved = self.idx.reservation_by_address.contains_key(&address);
        let now = self.now_ms;
        let mut cooling_until = None;
        if let Some(pool) = self.pools.get_mut(&allocation.pool) {
            pool.allocated = pool.allocated.saturating_sub(1);
            let secs = pool.spec.reuse_cooldown_secs;
            if cooldown && secs > 0 {
                let until = now.saturating_add(secs.saturating_mul(1000));
                pool.cooling.insert(address, until);
                cooling_until = Some(until);
            } else if !reserved {
                pool.vacate(address);
            }
        }
        if let Some(until) = cooling_until {
            self.idx.cooling_queue.insert((until, address));
        }
        Some(allocation)
    }

    /// The address the attachment `(container_id, interface)` holds.
    pub(crate) fn attachment_address(&self, container_id: &str, interface: &str) -> Option<IpAddr> {
        let h = attachment_hash(container_id, interface);
        self.idx.by_attachment.tagged(h).find(|a| {
            self.allocations.get(a).is_some_and(|x| x.is_attachment(&self.idx.names, container_id, interface))
        })
    }

    /// The name of the pool holding `address` ("" if none does, which no allocation's address
    /// is: pools never overlap, and an allocation sits inside its pool).
    pub(crate) fn pool_name_of(&self, address: IpAddr) -> &str {
        self.pool_of(address).map_or("", Pool::name)
    }

    /// The record at `address` with its names resolved.
    pub(crate) fn record_at(&self, address: IpAddr) -> Option<RecordRef<'_>> {
        self.allocations.get(&address).map(|r| r.resolve(&self.idx.names))
    }

    /// The API's form of `record`, held at `address`.
    pub(crate) fn allocation(&self, address: IpAddr, record: &Record) -> Allocation {
        record.resolve(&self.idx.names).into_allocation(address, self.pool_name_of(address))
    }

    /// A copy of the replicated data for writing a snapshot beside further applies: allocation
    /// records are shared, not copied, and the indexes are left out (a snapshot does not hold
    /// them). Serializes exactly as this state does.
    pub fn replicated(&self) -> Replicated {
        Replicated(State {
            last_applied: self.last_applied,
            now_ms: self.now_ms,
            pools: self.pools.clone(),
            vlans: self.vlans.clone(),
            reservations: self.reservations.clone(),
            allocations: self.allocations.clone(),
            leases: self.leases.clone(),
            max_tokens: self.max_tokens.clone(),
            // The records' names and pools are looked up while serializing: the copy keeps the
            // name table as of now (a few strings) and the pools' first addresses.
            idx: Index {
                pool_by_first: self.idx.pool_by_first.clone(),
                names: self.idx.names.clone(),
                ..Index::default()
            },
        })
    }

    /// Ends a cooldown early (the address was handed to its reservation's key, or left the pool).
    pub(crate) fn clear_cooling(&mut self, address: IpAddr) {
        if let Some(pool) = self.pool_of_mut(address)
            && let Some(until) = pool.cooling.remove(&address)
        {
            self.idx.cooling_queue.remove(&(until, address));
        }
    }

    /// Whether anything besides the pool's fixed exclusions keeps `address` from a search.
    pub(crate) fn is_held(&self, address: IpAddr) -> bool {
        self.allocations.contains_key(&address)
            || self.idx.reservation_by_address.contains_key(&address)
            || self.pool_of(address).is_some_and(|p| p.cooling.contains_key(&address))
    }

    /// Exact counts of one pool.
    pub(crate) fn status_of(&self, pool: &Pool) -> PoolStatus {
        let reserved: Vec<IpAddr> =
            self.idx.reservation_by_address.range(pool.first()..=pool.last()).map(|(a, _)| *a).collect();
        let reserved_idle = reserved.iter().filter(|a| !self.allocations.contains_key(a)).count() as u64;
        let reserved_cooling = reserved.iter().filter(|a| pool.cooling.contains_key(a)).count();
        let cooling = pool.cooling.len().saturating_sub(reserved_cooling) as u64;
        let used = pool.allocated;
        let free = pool
            .size()
            .saturating_sub(u128::from(used))
            .saturating_sub(u128::from(reserved_idle))
            .saturating_sub(u128::from(cooling));
        PoolStatus { spec: pool.spec.clone(), size: pool.size(), used, reserved_idle, cooling, free }
    }

    // ---- reads (served from any replica's applied state) ----

    /// Every pool with exact counts, by name.
    pub fn pools(&self) -> Vec<PoolStatus> {
        self.pools.values().map(|p| self.status_of(p)).collect()
    }
    pub fn pool(&self, name: &str) -> Option<PoolStatus> {
        self.pools.get(name).map(|p| self.status_of(p))
    }
    pub fn pool_spec(&self, name: &str) -> Option<&PoolSpec> {
        self.pools.get(name).map(|p| &p.spec)
    }
    /// The pool whose CIDR contains `address`.
    pub fn pool_containing(&self, address: IpAddr) -> Option<&PoolSpec> {
        self.pool_of(address).map(|p| &p.spec)
    }
    /// Runs of occupied addresses in the pool's search index: its memory is proportional to this.
    pub fn pool_index_runs(&self, name: &str) -> Option<usize> {
        self.pools.get(name).map(Pool::index_runs)
    }
    /// VLANs by id.
    pub fn vlans(&self) -> Vec<VlanSpec> {
        self.vlans.values().cloned().collect()
    }
    pub fn vlan(&self, id: u16) -> Option<&VlanSpec> {
        self.vlans.get(&id)
    }
    /// The pools an allocation like `req` would draw from when no reservation decides, in
    /// search order, with their counts: how a CNI STATUS tells "exhausted" from "serving".
    pub fn candidate_pools(&self, req: &AllocateRequest) -> Result<Vec<PoolStatus>, IpamError> {
        Ok(self.candidates(req)?.into_iter().map(|p| self.status_of(p)).collect())
    }
    /// Reservations by key.
    pub fn reservations(&self) -> Vec<Reservation> {
        self.reservations.values().cloned().collect()
    }
    pub fn reservation(&self, key: &str) -> Option<&Reservation> {
        self.reservations.get(key)
    }
    /// Allocations filtered by pool, node and pod namespace (each `None` matches all), sorted by
    /// address.
    pub fn allocations(&self, pool: Option<&str>, node: Option<&str>, namespace: Option<&str>) -> Vec<Allocation> {
        let names = &self.idx.names;
        let keep = |(address, a): &(IpAddr, &Record)| {
            pool.is_none_or(|p| self.pool_name_of(*address) == p)
                && node.is_none_or(|n| names.get(a.node) == n)
                && namespace.is_none_or(|ns| names.get(a.namespace) == ns)
        };
        let api = |(address, a): (IpAddr, &Record)| self.allocation(address, a);
        if let Some(node) = node {
            let Some(addresses) = self.idx.by_node.get(node) else {
                return Vec::new();
            };
            return addresses
                .iter()
                .filter_map(|a| self.allocations.get(&a).map(|r| (a, &**r)))
                .filter(keep)
                .map(api)
                .collect();
        }
        if let Some(name) = pool {
            let Some(p) = self.pools.get(name) else {
                return Vec::new();
            };
            return self.allocations.range(p.first(), p.last()).map(|(a, r)| (a, &**r)).filter(keep).map(api).collect();
        }
        self.allocations.iter().map(|(a, r)| (a, &**r)).filter(keep).map(api).collect()
    }
    pub fn allocation_by_address(&self, address: IpAddr) -> Option<Allocation> {
        self.allocations.get(&address).map(|a| self.allocation(address, a))
    }
    pub fn allocation_by_attachment(&self, id: &AttachmentId) -> Option<Allocation> {
        let address = self.attachment_address(&id.container_id, &id.interface)?;
        self.allocations.get(&address).map(|a| self.allocation(address, a))
    }
    /// Leases by node.
    pub fn leases(&self) -> Vec<Lease> {
        self.leases.values().cloned().collect()
    }
    pub fn lease(&self, node: &str) -> Option<Lease> {
        self.leases.get(node).cloned()
    }
    /// Number of allocations in the state.
    pub fn allocation_count(&self) -> u64 {
        self.allocations.len() as u64
    }
    /// Log index of the last applied entry.
    pub fn last_applied_index(&self) -> u64 {
        self.last_applied
    }
    /// The state's clock: the largest leader time (ms) of any applied entry.
    pub fn time_ms(&self) -> u64 {
        self.now_ms
    }
}

/// The replicated data of a [`State`], taken by [`State::replicated`]; it can only be
/// serialized (as a snapshot), never applied to or read from.
#[derive(Debug, Clone)]
pub struct Replicated(State);

impl Serialize for Replicated {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(s)
    }
}

/// FNV-1a (64 bits) of `container_id`, a 0xff byte (never part of UTF-8, so the split is
/// unambiguous) and `interface`. Fixed, unlike std's randomly seeded hashers.
pub(crate) fn attachment_hash(container_id: &str, interface: &str) -> AttachmentHash {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in container_id.as_bytes().iter().chain(&[0xff]).chain(interface.as_bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    ((h >> 32) as u32 ^ h as u32).to_be_bytes()
}

/// FNV-1a of an attachment folded to 32 bits, as bytes (big-endian, so they sort as the
/// number): with the address beside it, an index key is 21 bytes with no padding. A million
/// attachments share a 32-bit hash with about 0.0002 others each, which costs a comparison.
pub(crate) type AttachmentHash = [u8; 4];

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use hc_api::types::PoolSpec;

    use crate::testing::{Harness, ip, pool, req_in};

    #[test]
    fn allocations_filter_by_pool_node_and_namespace_sorted_by_address() {
        let mut h = Harness::new();
        h.create(pool("p", "10.0.0.0/24"));
        h.create(PoolSpec { ..pool("q", "fd00::/120") });
        h.take("a", "n2", "q");
        h.take("b", "n1", "p");
        let mut r = req_in("c", "n1", "q");
        r.owner.namespace = "db".into();
        h.alloc(None, r);
        h.take("d", "n2", "p");
        let ids = |v: Vec<hc_api::types::Allocation>| v.into_iter().map(|a| a.owner.container_id).collect::<Vec<_>>();
        assert_eq!(ids(h.state.allocations(None, None, None)), ["b", "d", "a", "c"]);
        assert_eq!(ids(h.state.allocations(Some("q"), None, None)), ["a", "c"]);
        assert_eq!(ids(h.state.allocations(None, Some("n1"), None)), ["b", "c"]);
        assert_eq!(ids(h.state.allocations(Some("p"), Some("n2"), None)), ["d"]);
        assert_eq!(ids(h.state.allocations(None, None, Some("db"))), ["c"]);
        assert_eq!(ids(h.state.allocations(Some("nope"), None, None)), Vec::<String>::new());
        assert_eq!(ids(h.state.allocations(None, Some("n9"), None)), Vec::<String>::new());
        assert_eq!(h.state.allocation_count(), 4);
        assert_eq!(h.state.allocation_by_address(ip("10.0.0.1")).unwrap().owner.container_id, "b");
        assert_eq!(h.state.pools().iter().map(|p| p.used).collect::<Vec<_>>(), [2, 2]);
    }

    #[test]
    fn attachment_lookups_check_the_record_so_a_hash_collision_is_harmless() {
        let mut h = Harness::new();
        h.create(pool("p", "10.0.0.0/24"));
        let a = h.take("a", "n1", "p");
        let b = h.take("b", "n1", "p");
        // Make `b`'s address a second candidate under `a`'s hash, as a collision would.
        let ha = super::attachment_hash("a", "eth0");
        h.state.idx.by_attachment.insert((ha, b));
        assert_eq!(h.state.attachment_address("a", "eth0"), Some(a));
        assert_eq!(h.state.attachment_address("b", "eth0"), Some(b));
        assert_eq!(h.state.attachment_address("a", "eth1"), None);
        assert_ne!(super::attachment_hash("ab", "c"), super::attachment_hash("a", "bc"));
    }

    #[test]
    fn a_snapshot_copy_serializes_like_the_state_and_shares_its_records() {
        let mut h = Harness::new();
        h.create(pool("p", "10.0.0.0/24"));
        let a = h.take("a", "n1", "p");
        let copy = h.state.replicated();
        assert_eq!(serde_json::to_string(&copy).unwrap(), serde_json::to_string(&h.state).unwrap());
        // Changing a shared record after the copy leaves the copy as it was.
        h.grant("n1");
        let before = serde_json::to_value(&copy).unwrap();
        let lease = h.lease("n1");
        h.ok(crate::command::Command::ExpireLease { node: "n1".into(), lease_id: lease.lease_id });
        assert_eq!(h.state.allocation_by_address(a).unwrap().state, hc_api::types::AllocationState::Quarantined);
        assert_eq!(serde_json::to_value(&copy).unwrap(), before);
        let copied: super::State = serde_json::from_value(before).unwrap();
        assert_eq!(copied.allocation_by_address(a).unwrap().state, hc_api::types::AllocationState::Active);
    }

    #[test]
    fn entries_without_a_command_only_move_the_applied_index() {
        let mut h = Harness::new();
        h.create(pool("p", "10.0.0.0/24"));
        let before = h.state.clone();
        h.state.mark_applied(crate::state::ApplyContext { log_index: 77 });
        assert_eq!(h.state.last_applied_index(), 77);
        h.state.last_applied = before.last_applied;
        assert_eq!(h.state, before);
    }
}
