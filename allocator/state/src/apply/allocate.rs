//! Allocate: pool choice, address choice, ADD idempotency.

use std::net::IpAddr;

use hc_api::IpamError;
use hc_api::types::{AllocateRequest, Allocated, Allocation, AllocationState, Fence, LeaseState, Selector};

use super::holder;
use crate::command::{Output, Response};
use crate::pool::Pool;
use crate::state::{ApplyContext, State};
use crate::validate::{validate_key, validate_pod};

/// Whether a pool's selector takes this request: the selector is not empty and every non-empty
/// field matches (namespace and node in the lists, every label present with the same value).
pub(crate) fn selector_matches(sel: &Selector, req: &AllocateRequest) -> bool {
    !sel.is_empty()
        && (sel.namespaces.is_empty() || sel.namespaces.contains(&req.owner.namespace))
        && (sel.nodes.is_empty() || sel.nodes.contains(&req.owner.node))
        && sel.node_labels.iter().all(|(k, v)| req.node_labels.get(k) == Some(v))
        && sel.pod_labels.iter().all(|(k, v)| req.pod_labels.get(k) == Some(v))
}

/// The outcome of choosing, before anything is changed.
struct Choice {
    pool: String,
    address: IpAddr,
    reservation: Option<String>,
    /// Found by a search: the pool's cursor moves past it.
    searched: bool,
}

impl State {
    pub(crate) fn allocate(
        &mut self,
        ctx: ApplyContext,
        time_ms: u64,
        fence: Option<&Fence>,
        req: &AllocateRequest,
    ) -> Response {
        if let Some(f) = fence {
            // The `deliberate-bug` build skips this check (stale tokens are accepted) so that
            // the simulator can show it catches a broken fencing rule; see `lib.rs`.
            #[cfg(not(feature = "deliberate-bug"))]
            self.check_fence(f)?;
            if req.owner.node != f.node {
                return Err(IpamError::invalid(
                    "owner.node",
                    format!("{:?} is not the fenced node {:?}", req.owner.node, f.node),
                ));
            }
        }
        validate_key("owner.container_id", &req.owner.container_id)?;
        validate_key("owner.interface", &req.owner.interface)?;
        validate_key("owner.node", &req.owner.node)?;
        validate_pod(&req.owner.pod)?;
        for key in &req.reservation_keys {
            validate_key("reservation_keys", key)?;
        }

        // ADD is idempotent per attachment (invariant 5): hand back what it holds.
        if let Some(address) = self.attachment_address(&req.owner.container_id, &req.owner.interface) {
            return self.repeat_allocation(address, fence);
        }

        let choice = self.choose(req)?;

        let allocation = Allocation {
            address: choice.address,
            pool: choice.pool.clone(),
            owner: req.owner.clone(),
            reservation: choice.reservation,
            log_index: ctx.log_index,
            allocated_at_ms: time_ms,
            state: self.initial_state(&req.owner.node),
        };
        let Some(pool) = self.pools.get_mut(&choice.pool) else {
            return Err(IpamError::PoolNotFound { pool: choice.pool });
        };
        if choice.searched {
            pool.advance_cursor(choice.address);
        }
        let spec = pool.spec.clone();
        self.insert_allocation(&allocation);
        Ok(Output::Allocated(Box::new(Allocated { allocation, pool: spec, created: true })))
    }

    /// A new allocation is active, unless its node's lease has expired (possible for an
    /// operator's unfenced write): then it is quarantined like the node's other allocations.
    fn initial_state(&self, node: &str) -> AllocationState {
        match self.leases.get(node) {
            Some(l) if l.state == LeaseState::Expired => AllocationState::Quarantined,
            _ => AllocationState::Active,
        }
    }

    /// A repeated ADD. A fenced repeat from another node is refused rather than handing that
    /// node an address in use elsewhere; a fenced repeat from the holder's own node (with its
    /// current token) confirms the attachment and lifts a quarantine.
    fn repeat_allocation(&mut self, address: IpAddr, fence: Option<&Fence>) -> Response {
        let Some(existing) = self.record_at(address) else {
            return Err(IpamError::AllocationNotFound { what: address.to_string() });
        };
        let Some(pool) = self.pool_of(address) else {
            return Err(IpamError::PoolNotFound { pool: String::new() });
        };
        let spec = pool.spec.clone();
        if let Some(f) = fence {
            if existing.node != f.node {
                return Err(IpamError::AddressInUse { address, holder: holder(existing) });
            }
            if let Some(r) = self.allocations.get_mut(&address).map(std::sync::Arc::make_mut) {
                r.set_state(AllocationState::Active);
            }
        }
        let allocation = self
            .allocation_by_address(address)
            .ok_or_else(|| IpamError::AllocationNotFound { what: address.to_string() })?;
        Ok(Output::Allocated(Box::new(Allocated { allocation, pool: spec, created: false })))
    }

    /// Pool and address for a new allocation: a reservation of one of the request's keys, then
    /// the named pool, then the pool containing a named address, then selectors, then the
    /// default pool.
    fn choose(&self, req: &AllocateRequest) -> Result<Choice, IpamError> {
        if let Some(r) = req.reservation_keys.iter().find_map(|k| self.reservations.get(k)) {
            let conflict = |reason: String| IpamError::ReservationConflict { key: r.key.clone(), reason };
            if let Some(p) = req.pool.as_ref().filter(|p| **p != r.pool) {
                return Err(conflict(format!("the key is reserved in pool {} but the request names pool {p}", r.pool)));
            }
            if let Some(a) = req.address.filter(|a| *a != r.address) {
                return Err(conflict(format!("the key is reserved at {} but the request names {a}", r.address)));
            }
            if let Some(a) = self.record_at(r.address) {
                return Err(IpamError::AddressInUse { address: r.address, holder: holder(a) });
            }
            // A cooldown does not apply to the reservation's own key.
            return Ok(Choice {
                pool: r.pool.clone(),
                address: r.address,
                reservation: Some(r.key.clone()),
                searched: false,
            });
        }

        let pools = self.candidates(req)?;
        if let [only] = pools[..] {
            return self.choose_in(only, req.address);
        }
        // Selector matches in name order (no address asked for): a full pool passes the pod on
        // to the next one.
        pools
            .iter()
            .find_map(|p| self.choose_in(p, None).ok())
            .ok_or_else(|| IpamError::PoolExhausted { pool: pools[0].name().to_owned() })
    }

    /// The pools a request draws from when no reservation decides, in search order: the named
    /// pool, else the pool containing a named address, else the pools whose selector takes the
    /// request (by name), else the default pool (IPv4 if there is one, else IPv6). Never empty.
    pub(crate) fn candidates(&self, req: &AllocateRequest) -> Result<Vec<&Pool>, IpamError> {
        if let Some(name) = &req.pool {
            return Ok(vec![self.pools.get(name).ok_or_else(|| IpamError::PoolNotFound { pool: name.clone() })?]);
        }
        if let Some(address) = req.address {
            return Ok(vec![self.pool_of(address).ok_or(IpamError::NoPoolMatches)?]);
        }
        let matching: Vec<&Pool> = self.pools.values().filter(|p| selector_matches(&p.spec.selector, req)).collect();
        if !matching.is_empty() {
            return Ok(matching);
        }
        let default = self
            .pools
            .values()
            .filter(|p| p.spec.default)
            .min_by_key(|p| !p.is_v4())
            .ok_or(IpamError::NoPoolMatches)?;
        Ok(vec![default])
    }

    /// `address` if it is free in `pool`, or else the next free address of the pool.
    fn choose_in(&self, pool: &Pool, address: Option<IpAddr>) -> Result<Choice, IpamError> {
        let name = pool.name().to_owned();
        let Some(address) = address else {
            let address = pool.find_free().ok_or(IpamError::PoolExhausted { pool: name.clone() })?;
            return Ok(Choice { pool: name, address, reservation: None, searched: true });
        };
        if !pool.contains(address) {
            return Err(IpamError::AddressOutsidePool { address, pool: name, cidr: pool.spec.cidr.to_string() });
        }
        if pool.is_fixed(address) {
            return Err(IpamError::AddressExcluded { address, pool: name });
        }
        if let Some(a) = self.record_at(address) {
            return Err(IpamError::AddressInUse { address, holder: holder(a) });
        }
        if let Some(key) = self.idx.reservation_by_address.get(&address) {
            return Err(IpamError::AddressReserved { address, key: key.clone() });
        }
        if let Some(&until_ms) = pool.cooling.get(&address) {
            return Err(IpamError::AddressCoolingDown { address, until_ms });
        }
        Ok(Choice { pool: name, address, reservation: None, searched: false })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::collections::BTreeSet;

    use hc_api::IpamError;
    use hc_api::types::{AllocateRequest, AllocationState, PoolSpec, Reservation, Selector};

    use crate::command::Command;
    use crate::testing::{Harness, ip, owner, pool, req_in};

    fn bare(container: &str, node: &str) -> AllocateRequest {
        AllocateRequest { owner: owner(container, node), ..Default::default() }
    }

    fn at(container: &str, pool: &str, address: &str) -> AllocateRequest {
        AllocateRequest { address: Some(ip(address)), ..req_in(container, "n1", pool) }
    }

    #[test]
    fn allocate_records_the_log_index_and_leader_time() {
        let mut h = Harness::new();
        h.create(pool("p", "10.0.0.0/24"));
        h.now = 42_000;
        let a = h.alloc(None, req_in("c1", "n1", "p"));
        assert!(a.created);
        assert_eq!(a.pool, *h.state.pool_spec("p").unwrap());
        assert_eq!(a.allocation.log_index, h.index);
        assert_eq!(a.allocation.allocated_at_ms, 42_000);
        assert_eq!(a.allocation.state, AllocationState::Active);
        assert_eq!(a.allocation.reservation, None);
        assert_eq!(h.state.last_applied_index(), h.index);
    }

    #[test]
    fn allocate_is_idempotent_per_attachment_even_if_the_request_differs() {
        let mut h = Harness::new();
        h.create(pool("p", "10.0.0.0/24"));
        h.create(pool("q", "10.0.1.0/24"));
        let first = h.alloc(None, req_in("c1", "n1", "p"));
        let again = h.alloc(None, req_in("c1", "n1", "q"));
        assert!(!again.created);
        assert_eq!(again.allocation, first.allocation);
        assert_eq!(again.pool.name, "p");
        assert_eq!(h.state.allocation_count(), 1);
        // Another interface of the same container is another attachment.
        let mut r = req_in("c1", "n1", "p");
        r.owner.interface = "net1".into();
        assert_ne!(h.alloc(None, r).allocation.address, first.allocation.address);
    }

    #[test]
    fn allocate_refuses_an_owner_without_container_interface_or_node_or_with_overlong_names() {
        let mut h = Harness::new();
        h.create(pool("p", "10.0.0.0/24"));
        for f in [
            |r: &mut AllocateRequest| r.owner.container_id.clear(),
            |r: &mut AllocateRequest| r.owner.interface.clear(),
            |r: &mut AllocateRequest| r.owner.node.clear(),
            |r: &mut AllocateRequest| r.reservation_keys = vec![String::new()],
            |r: &mut AllocateRequest| r.owner.container_id = "a".repeat(crate::validate::MAX_KEY_LEN + 1),
            |r: &mut AllocateRequest| r.owner.pod = "p".repeat(crate::validate::MAX_POD_LEN + 1),
        ] {
            let mut r = req_in("c1", "n1", "p");
            f(&mut r);
            assert!(matches!(
                h.refused(Command::Allocate { fence: None, request: r }),
                IpamError::InvalidArgument { .. }
            ));
        }
        assert_eq!(h.state.allocation_count(), 0);
        let mut r = req_in("c1", "n1", "p");
        r.owner.pod = "p".repeat(crate::validate::MAX_POD_LEN);
        assert_eq!(h.alloc(None, r).allocation.owner.pod.len(), crate::validate::MAX_POD_LEN);
    }

    #[test]
    fn search_skips_network_broadcast_gateway_and_exclusions() {
        let mut h = Harness::new();
        h.create(PoolSpec {
            gateway: Some(ip("10.0.0.1")),
            exclude: vec!["10.0.0.3-10.0.0.4".parse().unwrap()],
            ..pool("p", "10.0.0.0/29")
        });
        let got: Vec<_> = (0..3).map(|i| h.take(&format!("c{i}"), "n1", "p")).collect();
        assert_eq!(got, vec![ip("10.0.0.2"), ip("10.0.0.5"), ip("10.0.0.6")]);
        assert_eq!(
            h.refused(Command::Allocate { fence: None, request: req_in("c9", "n1", "p") }),
            IpamError::PoolExhausted { pool: "p".into() }
        );
    }

    #[test]
    fn tiny_pools_use_every_address() {
        let mut h = Harness::new();
        h.create(pool("p31", "10.0.0.0/31"));
        h.create(pool("p32", "10.0.1.7/32"));
        h.create(pool("v6", "fd00::/127"));
        let p31: BTreeSet<_> = (0..2).map(|i| h.take(&format!("a{i}"), "n", "p31")).collect();
        assert_eq!(p31, [ip("10.0.0.0"), ip("10.0.0.1")].into());
        assert_eq!(h.take("b", "n", "p32"), ip("10.0.1.7"));
        let v6: BTreeSet<_> = (0..2).map(|i| h.take(&format!("c{i}"), "n", "v6")).collect();
        assert_eq!(v6, [ip("fd00::"), ip("fd00::1")].into());
    }

    #[test]
    fn ipv6_search_skips_the_subnet_router_anycast_address() {
        let mut h = Harness::new();
        h.create(pool("v6", "fd00::/126"));
        let got: Vec<_> = (0..3).map(|i| h.take(&format!("c{i}"), "n", "v6")).collect();
        assert_eq!(got, vec![ip("fd00::1"), ip("fd00::2"), ip("fd00::3")]);
        assert!(matches!(
            h.refused(Command::Allocate { fence: None, request: at("x", "v6", "fd00::") }),
            IpamError::AddressExcluded { .. }
        ));
    }

    #[test]
    fn search_is_next_fit_so_a_released_address_is_not_reused_at_once() {
        let mut h = Harness::new();
        h.create(pool("p", "10.0.0.0/24"));
        let a = h.take("c1", "n1", "p");
        h.release(None, hc_api::types::ReleaseTarget::Address(a));
        assert_ne!(h.take("c2", "n1", "p"), a);
    }

    #[test]
    fn explicit_address_must_be_usable_free_unreserved_and_not_cooling() {
        let mut h = Harness::new();
        h.create(PoolSpec {
            gateway: Some(ip("10.0.0.1")),
            exclude: vec!["10.0.0.100-10.0.0.110".parse().unwrap()],
            reuse_cooldown_secs: 10,
            ..pool("p", "10.0.0.0/24")
        });
        let refuse = |h: &mut Harness, request| h.refused(Command::Allocate { fence: None, request });
        assert_eq!(
            refuse(&mut h, at("x", "p", "10.0.1.5")),
            IpamError::AddressOutsidePool { address: ip("10.0.1.5"), pool: "p".into(), cidr: "10.0.0.0/24".into() }
        );
        for excluded in ["10.0.0.0", "10.0.0.1", "10.0.0.105", "10.0.0.255"] {
            assert_eq!(
                refuse(&mut h, at("x", "p", excluded)),
                IpamError::AddressExcluded { address: ip(excluded), pool: "p".into() }
            );
        }
        h.alloc(None, at("c1", "p", "10.0.0.50"));
        let e = refuse(&mut h, at("x", "p", "10.0.0.50"));
        assert!(
            matches!(e, IpamError::AddressInUse { ref holder, .. } if holder.contains("c1") && holder.contains("n1")),
            "{e}"
        );
        h.ok(Command::PutReservation(Reservation { key: "k".into(), pool: "p".into(), address: ip("10.0.0.60") }));
        assert_eq!(
            refuse(&mut h, at("x", "p", "10.0.0.60")),
            IpamError::AddressReserved { address: ip("10.0.0.60"), key: "k".into() }
        );
        h.release(None, hc_api::types::ReleaseTarget::Address(ip("10.0.0.50")));
        assert_eq!(
            refuse(&mut h, at("x", "p", "10.0.0.50")),
            IpamError::AddressCoolingDown { address: ip("10.0.0.50"), until_ms: h.now + 10_000 }
        );
        h.now += 10_000;
        assert_eq!(h.alloc(None, at("x", "p", "10.0.0.50")).allocation.address, ip("10.0.0.50"));
    }

    #[test]
    fn an_explicit_address_without_a_pool_picks_the_pool_containing_it() {
        let mut h = Harness::new();
        h.create(pool("p", "10.0.0.0/24"));
        h.create(pool("q", "10.0.1.0/24"));
        let r = AllocateRequest { address: Some(ip("10.0.1.9")), ..bare("c1", "n1") };
        assert_eq!(h.alloc(None, r).allocation.pool, "q");
        let r = AllocateRequest { address: Some(ip("10.9.9.9")), ..bare("c2", "n1") };
        assert_eq!(h.refused(Command::Allocate { fence: None, request: r }), IpamError::NoPoolMatches);
    }

    #[test]
    fn an_unknown_explicit_pool_is_not_found() {
        let mut h = Harness::new();
        assert_eq!(
            h.refused(Command::Allocate { fence: None, request: req_in("c", "n", "nope") }),
            IpamError::PoolNotFound { pool: "nope".into() }
        );
    }

    #[test]
    fn without_pool_selector_or_default_nothing_matches() {
        let mut h = Harness::new();
        h.create(pool("p", "10.0.0.0/24"));
        assert_eq!(h.refused(Command::Allocate { fence: None, request: bare("c", "n") }), IpamError::NoPoolMatches);
    }

    fn selecting(name: &str, cidr: &str, selector: Selector) -> PoolSpec {
        PoolSpec { selector, ..pool(name, cidr) }
    }

    #[test]
    fn selectors_need_every_non_empty_field_to_match() {
        let mut h = Harness::new();
        h.create(PoolSpec { default: true, ..pool("default", "10.9.0.0/24") });
        let mut sel = Selector { namespaces: vec!["db".into()], nodes: vec!["n1".into()], ..Default::default() };
        sel.node_labels.insert("rack".into(), "r1".into());
        sel.pod_labels.insert("app".into(), "mysql".into());
        h.create(selecting("sel", "10.0.0.0/24", sel));
        // An empty selector matches nothing.
        h.create(selecting("empty", "10.1.0.0/24", Selector::default()));

        let full = || {
            let mut r = bare("c", "n1");
            r.owner.namespace = "db".into();
            r.node_labels.insert("rack".into(), "r1".into());
            r.pod_labels.insert("app".into(), "mysql".into());
            r.pod_labels.insert("extra".into(), "ok".into());
            r
        };
        let mut misses: Vec<AllocateRequest> = Vec::new();
        let mut r = full();
        r.owner.namespace = "web".into();
        misses.push(r);
        let mut r = full();
        r.owner.node = "n2".into();
        misses.push(r);
        let mut r = full();
        r.node_labels.insert("rack".into(), "r2".into());
        misses.push(r);
        let mut r = full();
        r.pod_labels.clear();
        misses.push(r);
        for (i, mut r) in misses.into_iter().enumerate() {
            r.owner.container_id = format!("miss{i}");
            assert_eq!(h.alloc(None, r).allocation.pool, "default");
        }
        assert_eq!(h.alloc(None, full()).allocation.pool, "sel");
    }

    #[test]
    fn several_matching_pools_are_tried_by_name_and_a_full_one_passes_on() {
        let mut h = Harness::new();
        let sel = Selector { namespaces: vec!["ns".into()], ..Default::default() };
        h.create(selecting("b", "10.0.1.0/30", sel.clone()));
        h.create(selecting("a", "10.0.0.0/30", sel));
        let pools: Vec<String> = (0..4).map(|i| h.alloc(None, bare(&format!("c{i}"), "n1")).allocation.pool).collect();
        assert_eq!(pools, ["a", "a", "b", "b"]);
        assert_eq!(
            h.refused(Command::Allocate { fence: None, request: bare("c9", "n1") }),
            IpamError::PoolExhausted { pool: "a".into() }
        );
    }

    #[test]
    fn candidate_pools_are_the_pools_allocation_searches_with_their_counts() {
        let mut h = Harness::new();
        let sel = Selector { namespaces: vec!["ns".into()], ..Default::default() };
        h.create(selecting("b", "10.0.1.0/30", sel.clone()));
        h.create(selecting("a", "10.0.0.0/30", sel));
        h.create(PoolSpec { default: true, ..pool("default", "10.9.0.0/24") });
        let names = |h: &Harness, r: &AllocateRequest| -> Vec<(String, u128)> {
            h.state.candidate_pools(r).unwrap().into_iter().map(|p| (p.spec.name, p.free)).collect()
        };
        let mut other_ns = bare("x", "n1");
        other_ns.owner.namespace = "web".into();
        assert_eq!(names(&h, &other_ns), [("default".to_owned(), 254)]);
        assert_eq!(names(&h, &req_in("x", "n1", "b")), [("b".to_owned(), 2)]);
        assert_eq!(names(&h, &bare("x", "n1")), [("a".to_owned(), 2), ("b".to_owned(), 2)]);
        for i in 0..4 {
            h.alloc(None, bare(&format!("c{i}"), "n1"));
        }
        // Every candidate full: exactly when an allocation is refused as exhausted.
        assert_eq!(names(&h, &bare("x", "n1")), [("a".to_owned(), 0), ("b".to_owned(), 0)]);
        assert!(matches!(h.try_alloc(None, bare("x", "n1")), Err(IpamError::PoolExhausted { .. })));
        assert_eq!(
            h.state.candidate_pools(&req_in("x", "n1", "nope")),
            Err(IpamError::PoolNotFound { pool: "nope".into() })
        );
        let mut bare_state = Harness::new();
        bare_state.create(pool("plain", "10.8.0.0/24"));
        assert_eq!(bare_state.state.candidate_pools(&other_ns), Err(IpamError::NoPoolMatches));
    }

    #[test]
    fn the_explicit_pool_wins_over_selectors_and_the_default() {
        let mut h = Harness::new();
        let sel = Selector { namespaces: vec!["ns".into()], ..Default::default() };
        h.create(selecting("sel", "10.0.0.0/24", sel));
        h.create(PoolSpec { default: true, ..pool("default", "10.9.0.0/24") });
        h.create(pool("named", "10.5.0.0/24"));
        assert_eq!(h.alloc(None, req_in("c1", "n1", "named")).allocation.pool, "named");
        assert_eq!(h.alloc(None, bare("c2", "n1")).allocation.pool, "sel");
    }

    #[test]
    fn the_ipv4_default_is_preferred_over_the_ipv6_default() {
        let mut h = Harness::new();
        h.create(PoolSpec { default: true, ..pool("a6", "fd00::/64") });
        assert_eq!(h.alloc(None, bare("c1", "n1")).allocation.pool, "a6");
        h.create(PoolSpec { default: true, ..pool("z4", "10.0.0.0/24") });
        assert_eq!(h.alloc(None, bare("c2", "n1")).allocation.pool, "z4");
    }

    #[test]
    fn reservation_keys_are_tried_in_order_and_beat_selectors() {
        let mut h = Harness::new();
        let sel = Selector { namespaces: vec!["ns".into()], ..Default::default() };
        h.create(selecting("sel", "10.0.0.0/24", sel));
        h.create(pool("fixed", "10.1.0.0/24"));
        h.ok(Command::PutReservation(Reservation {
            key: "ns/pod".into(),
            pool: "fixed".into(),
            address: ip("10.1.0.20"),
        }));
        h.ok(Command::PutReservation(Reservation {
            key: "ns/set/0".into(),
            pool: "fixed".into(),
            address: ip("10.1.0.10"),
        }));
        let mut r = bare("c1", "n1");
        r.reservation_keys = vec!["ns/none".into(), "ns/set/0".into(), "ns/pod".into()];
        let a = h.alloc(None, r).allocation;
        assert_eq!((a.address, a.reservation.as_deref()), (ip("10.1.0.10"), Some("ns/set/0")));
        let mut r = bare("c2", "n1");
        r.reservation_keys = vec!["ns/none".into()];
        assert_eq!(h.alloc(None, r).allocation.pool, "sel");
    }

    #[test]
    fn a_reservation_in_another_pool_than_the_named_one_conflicts() {
        let mut h = Harness::new();
        h.create(pool("p", "10.0.0.0/24"));
        h.create(pool("q", "10.0.1.0/24"));
        h.ok(Command::PutReservation(Reservation { key: "k".into(), pool: "p".into(), address: ip("10.0.0.7") }));
        let mut r = req_in("c1", "n1", "q");
        r.reservation_keys = vec!["k".into()];
        assert!(
            matches!(h.refused(Command::Allocate { fence: None, request: r }), IpamError::ReservationConflict { ref key, .. } if key == "k")
        );
        let mut r = at("c1", "p", "10.0.0.8");
        r.reservation_keys = vec!["k".into()];
        assert!(matches!(
            h.refused(Command::Allocate { fence: None, request: r }),
            IpamError::ReservationConflict { .. }
        ));
        // Naming the reservation's own pool and address is fine.
        let mut r = at("c1", "p", "10.0.0.7");
        r.reservation_keys = vec!["k".into()];
        assert_eq!(h.alloc(None, r).allocation.address, ip("10.0.0.7"));
    }

    #[test]
    fn a_reserved_address_still_held_by_an_old_pod_is_not_handed_to_the_new_one() {
        let mut h = Harness::new();
        h.create(pool("p", "10.0.0.0/24"));
        h.ok(Command::PutReservation(Reservation {
            key: "db/mysql/0".into(),
            pool: "p".into(),
            address: ip("10.0.0.7"),
        }));
        let n1 = h.grant("n1");
        let mut r = bare("old", "n1");
        r.reservation_keys = vec!["db/mysql/0".into()];
        h.alloc(Some(n1), r);
        // n1 goes silent: its allocations are quarantined, not freed.
        let lease = h.lease("n1");
        h.ok(Command::ExpireLease { node: "n1".into(), lease_id: lease.lease_id });
        let mut r = bare("new", "n2");
        r.reservation_keys = vec!["db/mysql/0".into()];
        let e = h.refused(Command::Allocate { fence: None, request: r });
        assert!(matches!(e, IpamError::AddressInUse { ref holder, .. } if holder.contains("quarantined")), "{e}");
    }

    #[test]
    fn fenced_allocate_needs_the_nodes_current_active_token_and_its_own_node() {
        let mut h = Harness::new();
        h.create(pool("p", "10.0.0.0/24"));
        let alloc = |fence: hc_api::types::Fence, node: &str| Command::Allocate {
            fence: Some(fence),
            request: req_in("c1", node, "p"),
        };
        let fence = |node: &str, token| hc_api::types::Fence { node: node.into(), token };
        assert_eq!(h.refused(alloc(fence("n1", 1), "n1")), IpamError::NoLease { node: "n1".into() });
        let old = h.grant("n1");
        let cur = h.grant("n1");
        assert_eq!(
            h.refused(alloc(old.clone(), "n1")),
            IpamError::StaleToken { node: "n1".into(), presented: old.token, current: cur.token }
        );
        assert_eq!(
            h.refused(alloc(fence("n1", cur.token + 1), "n1")),
            IpamError::StaleToken { node: "n1".into(), presented: cur.token + 1, current: cur.token }
        );
        assert!(
            matches!(h.refused(alloc(cur.clone(), "n2")), IpamError::InvalidArgument { ref field, .. } if field == "owner.node")
        );
        h.alloc(Some(cur.clone()), req_in("c1", "n1", "p"));
        let lease = h.lease("n1");
        h.ok(Command::ExpireLease { node: "n1".into(), lease_id: lease.lease_id });
        assert_eq!(h.refused(alloc(cur.clone(), "n1")), IpamError::NoLease { node: "n1".into() });
    }

    #[test]
    fn an_operator_allocation_for_a_node_with_an_expired_lease_starts_quarantined() {
        let mut h = Harness::new();
        h.create(pool("p", "10.0.0.0/24"));
        h.grant("n1");
        let lease = h.lease("n1");
        h.ok(Command::ExpireLease { node: "n1".into(), lease_id: lease.lease_id });
        assert_eq!(h.alloc(None, req_in("c1", "n1", "p")).allocation.state, AllocationState::Quarantined);
        assert_eq!(h.alloc(None, req_in("c2", "n2", "p")).allocation.state, AllocationState::Active);
    }

    #[test]
    fn a_fenced_repeat_add_from_another_node_is_refused() {
        let mut h = Harness::new();
        h.create(pool("p", "10.0.0.0/24"));
        h.take("c1", "n1", "p");
        let n2 = h.grant("n2");
        let e = h.refused(Command::Allocate { fence: Some(n2), request: req_in("c1", "n2", "p") });
        assert!(matches!(e, IpamError::AddressInUse { .. }));
    }

    #[test]
    fn a_fenced_repeat_add_by_the_regranted_node_lifts_the_quarantine() {
        let mut h = Harness::new();
        h.create(pool("p", "10.0.0.0/24"));
        let f = h.grant("n1");
        let a = h.alloc(Some(f), req_in("c1", "n1", "p")).allocation;
        let lease = h.lease("n1");
        h.ok(Command::ExpireLease { node: "n1".into(), lease_id: lease.lease_id });
        assert_eq!(h.state.allocation_by_address(a.address).unwrap().state, AllocationState::Quarantined);
        // An operator's repeat does not change it.
        assert_eq!(h.alloc(None, req_in("c1", "n1", "p")).allocation.state, AllocationState::Quarantined);
        let f = h.grant("n1");
        let again = h.alloc(Some(f), req_in("c1", "n1", "p"));
        assert!(!again.created);
        assert_eq!(again.allocation.address, a.address);
        assert_eq!(again.allocation.state, AllocationState::Active);
    }
}
