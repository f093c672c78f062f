//! Node leases and fencing: GrantLease, ExpireLease, Reconcile, NodeGone, and the fencing check
//! every node-scoped write goes through.

use std::collections::BTreeSet;
use std::net::IpAddr;

use hc_api::IpamError;
use hc_api::types::{AllocationState, AttachmentId, Fence, Lease, LeaseState, Released};

use crate::addr::AddrSet;
use crate::command::{Output, Response};
use crate::state::{ApplyContext, State};
use crate::validate::validate_key;

impl State {
    /// Admits a node-scoped write: the node has a lease, it is active, and the token is its
    /// current one (invariant 3). An expired lease makes every token stale: the current one is
    /// answered `NoLease` (the holder must acquire a new lease), any other `StaleToken`.
    pub(crate) fn check_fence(&self, fence: &Fence) -> Result<(), IpamError> {
        let Some(lease) = self.leases.get(&fence.node) else {
            return Err(IpamError::NoLease { node: fence.node.clone() });
        };
        if lease.state != LeaseState::Active && fence.token == lease.token {
            return Err(IpamError::NoLease { node: fence.node.clone() });
        }
        if fence.token != lease.token {
            return Err(IpamError::StaleToken {
                node: fence.node.clone(),
                presented: fence.token,
                current: lease.token,
            });
        }
        Ok(())
    }

    /// A new grant for `node`, fencing every earlier one. The token (also the lease id) is the
    /// entry's log index, which grows across the whole log; it is bumped past the node's
    /// highest token should an index ever not be larger.
    pub(crate) fn grant_lease(&mut self, ctx: ApplyContext, node: &str, ttl_ms: u64) -> Response {
        validate_key("node", node)?;
        if ttl_ms == 0 {
            return Err(IpamError::invalid("ttl_ms", "must be greater than 0"));
        }
        let floor = self.max_tokens.get(node).map_or(1, |t| t.saturating_add(1));
        let token = ctx.log_index.max(floor);
        let lease = Lease {
            node: node.to_owned(),
            lease_id: token,
            token,
            ttl_ms,
            state: LeaseState::Active,
            granted_at_ms: self.now_ms,
        };
        self.max_tokens.insert(node.to_owned(), token);
        self.leases.insert(node.to_owned(), lease.clone());
        Ok(Output::Lease(lease))
    }

    /// Expires the grant `lease_id` of `node` if it is still the current, active one, and
    /// quarantines the node's allocations (invariant 4). Anything else is a no-op: the leader
    /// may propose an expiry that a newer grant overtook.
    pub(crate) fn expire_lease(&mut self, node: &str, lease_id: u64) -> Response {
        let Some(lease) = self.leases.get_mut(node) else {
            return Ok(Output::Done);
        };
        if lease.lease_id != lease_id || lease.state != LeaseState::Active {
            return Ok(Output::Done);
        }
        lease.state = LeaseState::Expired;
        for address in self.idx.by_node.get(node).into_iter().flat_map(AddrSet::iter) {
            if let Some(a) = self.allocations.get_mut(&address).map(std::sync::Arc::make_mut) {
                a.set_state(AllocationState::Quarantined);
            }
        }
        Ok(Output::Done)
    }

    /// The agent's list of live attachments: the node's allocations in it are kept (and lose
    /// any quarantine), all others are released with cooldown.
    pub(crate) fn reconcile(&mut self, fence: &Fence, valid: &[AttachmentId]) -> Response {
        self.check_fence(fence)?;
        let valid: BTreeSet<&AttachmentId> = valid.iter().collect();
        let addresses: Vec<IpAddr> = self.idx.by_node.get(&fence.node).into_iter().flat_map(AddrSet::iter).collect();
        let mut kept = 0;
        let mut released = Vec::new();
        for address in addresses {
            let Some(a) = self.record_at(address) else {
                continue;
            };
            let id = AttachmentId { container_id: a.container_id.into_owned(), interface: a.interface.to_owned() };
            if valid.contains(&id) {
                if let Some(a) = self.allocations.get_mut(&address).map(std::sync::Arc::make_mut) {
                    a.set_state(AllocationState::Active);
                }
                kept += 1;
            } else if self.remove_allocation(address, true).is_some() {
                released.push(address);
            }
        }
        Ok(Output::Reconciled { kept, released })
    }

    /// The node is confirmed gone: release all its allocations (with cooldown) and drop its
    /// lease. Its highest token stays in `max_tokens`.
    pub(crate) fn node_gone(&mut self, node: &str) -> Response {
        let addresses: Vec<IpAddr> = self.idx.by_node.get(node).into_iter().flat_map(AddrSet::iter).collect();
        let released = addresses.into_iter().filter_map(|a| self.remove_allocation(a, true)).collect();
        self.leases.remove(node);
        Ok(Output::Released(Released { released }))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use hc_api::IpamError;
    use hc_api::types::{AllocationState, AttachmentId, Fence, LeaseState, PoolSpec, ReleaseTarget};

    use crate::command::{Command, Output};
    use crate::testing::{Harness, pool, req_in};

    #[test]
    fn every_grant_has_a_larger_token_and_fences_the_previous_one() {
        let mut h = Harness::new();
        let a = h.grant("n1");
        h.grant("n2");
        let b = h.grant("n1");
        assert!(b.token > a.token);
        let l = h.lease("n1");
        assert_eq!((l.token, l.lease_id, l.state, l.ttl_ms), (b.token, b.token, LeaseState::Active, 10_000));
        assert_eq!(l.granted_at_ms, h.now);
        assert_eq!(h.state.leases().len(), 2);
    }

    #[test]
    fn grant_lease_refuses_a_zero_ttl_or_an_empty_node() {
        let mut h = Harness::new();
        assert!(matches!(
            h.refused(Command::GrantLease { node: "n1".into(), ttl_ms: 0 }),
            IpamError::InvalidArgument { .. }
        ));
        assert!(matches!(
            h.refused(Command::GrantLease { node: String::new(), ttl_ms: 5 }),
            IpamError::InvalidArgument { .. }
        ));
    }

    #[test]
    fn tokens_stay_monotonic_across_node_gone_and_odd_log_indexes() {
        let mut h = Harness::new();
        h.index = 100;
        let a = h.grant("n1");
        h.ok(Command::NodeGone { node: "n1".into() });
        assert!(h.state.lease("n1").is_none());
        // Even if the index were to go back (it does not in Raft), the token still grows.
        h.index = 10;
        let b = h.grant("n1");
        assert!(b.token > a.token, "{} > {}", b.token, a.token);
        assert_eq!(
            h.refused(Command::Release {
                fence: Some(a.clone()),
                target: ReleaseTarget::Address(crate::testing::ip("10.0.0.1"))
            }),
            IpamError::StaleToken { node: "n1".into(), presented: a.token, current: b.token }
        );
    }

    #[test]
    fn expiry_quarantines_the_nodes_allocations_and_keeps_their_addresses() {
        let mut h = Harness::new();
        h.create(PoolSpec { reuse_cooldown_secs: 5, ..pool("p", "10.0.0.0/30") });
        let f1 = h.grant("n1");
        let f2 = h.grant("n2");
        let a = h.alloc(Some(f1), req_in("c1", "n1", "p")).allocation.address;
        let b = h.alloc(Some(f2), req_in("c2", "n2", "p")).allocation.address;
        let lease = h.lease("n1");
        assert_eq!(h.ok(Command::ExpireLease { node: "n1".into(), lease_id: lease.lease_id }), Output::Done);
        assert_eq!(h.lease("n1").state, LeaseState::Expired);
        assert_eq!(h.state.allocation_by_address(a).unwrap().state, AllocationState::Quarantined);
        assert_eq!(h.state.allocation_by_address(b).unwrap().state, AllocationState::Active);
        assert_eq!(h.status("p").used, 2);
        // Nobody else gets the quarantined address, however long it takes.
        h.now += 1_000_000_000;
        assert!(h.apply(Command::Allocate { fence: None, request: req_in("c3", "n2", "p") }).is_err());
    }

    #[test]
    fn an_expiry_naming_an_older_grant_is_a_no_op() {
        let mut h = Harness::new();
        h.create(pool("p", "10.0.0.0/24"));
        h.grant("n1");
        let old = h.lease("n1");
        let f = h.grant("n1");
        h.alloc(Some(f.clone()), req_in("c1", "n1", "p"));
        let before = h.state.clone();
        assert_eq!(h.ok(Command::ExpireLease { node: "n1".into(), lease_id: old.lease_id }), Output::Done);
        assert_eq!(h.ok(Command::ExpireLease { node: "n9".into(), lease_id: 1 }), Output::Done);
        assert_eq!(h.state.leases, before.leases);
        assert_eq!(h.state.allocations, before.allocations);
        // Expiring twice is a no-op too.
        let cur = h.lease("n1");
        h.ok(Command::ExpireLease { node: "n1".into(), lease_id: cur.lease_id });
        let expired = h.state.clone();
        h.ok(Command::ExpireLease { node: "n1".into(), lease_id: cur.lease_id });
        assert_eq!(h.state.leases, expired.leases);
    }

    #[test]
    fn reconcile_keeps_the_listed_attachments_and_releases_the_rest() {
        let mut h = Harness::new();
        h.create(PoolSpec { reuse_cooldown_secs: 60, ..pool("p", "10.0.0.0/24") });
        let f = h.grant("n1");
        let other = h.take("x", "n2", "p");
        let a = h.alloc(Some(f.clone()), req_in("c1", "n1", "p")).allocation.address;
        let b = h.alloc(Some(f.clone()), req_in("c2", "n1", "p")).allocation.address;
        let lease = h.lease("n1");
        h.ok(Command::ExpireLease { node: "n1".into(), lease_id: lease.lease_id });
        let f = h.grant("n1");
        // Quarantine lasts until the agent reconciles.
        assert_eq!(h.state.allocation_by_address(a).unwrap().state, AllocationState::Quarantined);
        let valid = vec![
            AttachmentId { container_id: "c1".into(), interface: "eth0".into() },
            AttachmentId { container_id: "x".into(), interface: "eth0".into() },
            AttachmentId { container_id: "gone".into(), interface: "eth0".into() },
        ];
        let out = h.ok(Command::Reconcile { fence: f.clone(), valid });
        assert_eq!(out, Output::Reconciled { kept: 1, released: vec![b] });
        assert_eq!(h.state.allocation_by_address(a).unwrap().state, AllocationState::Active);
        assert!(h.state.allocation_by_address(b).is_none());
        assert_eq!(h.state.allocation_by_address(other).unwrap().owner.node, "n2");
        assert_eq!(h.status("p").cooling, 1);
    }

    #[test]
    fn reconcile_with_a_stale_token_is_refused() {
        let mut h = Harness::new();
        h.create(pool("p", "10.0.0.0/24"));
        let old = h.grant("n1");
        h.alloc(Some(old.clone()), req_in("c1", "n1", "p"));
        let cur = h.grant("n1");
        assert_eq!(
            h.refused(Command::Reconcile { fence: old.clone(), valid: vec![] }),
            IpamError::StaleToken { node: "n1".into(), presented: old.token, current: cur.token }
        );
        assert_eq!(
            h.refused(Command::Reconcile { fence: Fence { node: "n7".into(), token: 3 }, valid: vec![] }),
            IpamError::NoLease { node: "n7".into() }
        );
    }

    #[test]
    fn node_gone_releases_everything_of_the_node_and_drops_its_lease() {
        let mut h = Harness::new();
        h.create(PoolSpec { reuse_cooldown_secs: 60, ..pool("p", "10.0.0.0/24") });
        let f = h.grant("n1");
        h.alloc(Some(f.clone()), req_in("c1", "n1", "p"));
        h.alloc(Some(f.clone()), req_in("c2", "n1", "p"));
        let keep = h.take("x", "n2", "p");
        let lease = h.lease("n1");
        h.ok(Command::ExpireLease { node: "n1".into(), lease_id: lease.lease_id });
        let Output::Released(r) = h.ok(Command::NodeGone { node: "n1".into() }) else { panic!() };
        assert_eq!(r.released.len(), 2);
        assert!(h.state.lease("n1").is_none());
        assert_eq!(h.state.allocations(None, None, None).iter().map(|a| a.address).collect::<Vec<_>>(), vec![keep]);
        let st = h.status("p");
        assert_eq!((st.used, st.cooling), (1, 2));
        assert_eq!(h.refused(Command::Reconcile { fence: f, valid: vec![] }), IpamError::NoLease { node: "n1".into() });
        // Forgetting an unknown node is a no-op.
        assert_eq!(
            h.ok(Command::NodeGone { node: "n9".into() }),
            Output::Released(hc_api::types::Released { released: vec![] })
        );
    }
}
