//! CreatePool, UpdatePool, DeletePool.

use std::net::IpAddr;

use hc_api::IpamError;
use hc_api::types::PoolSpec;
use ipnet::IpNet;

use super::holder;
use crate::command::{Output, Response};
use crate::pool::Pool;
use crate::state::State;
use crate::validate::validate_pool_spec;

fn family(net: &IpNet) -> &'static str {
    if net.addr().is_ipv4() { "IPv4" } else { "IPv6" }
}

fn overlaps(a: &IpNet, b: &IpNet) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

impl State {
    /// Rules against the other pools: no overlap, one default per family.
    fn check_against_other_pools(&self, spec: &PoolSpec) -> Result<(), IpamError> {
        for other in self.pools.values().filter(|p| p.name() != spec.name) {
            if overlaps(&other.spec.cidr, &spec.cidr) {
                return Err(IpamError::PoolOverlap {
                    pool: spec.name.clone(),
                    cidr: spec.cidr.to_string(),
                    other: other.spec.name.clone(),
                    other_cidr: other.spec.cidr.to_string(),
                });
            }
            if spec.default && other.spec.default && other.is_v4() == spec.cidr.addr().is_ipv4() {
                return Err(IpamError::invalid(
                    "default",
                    format!("pool {} is already the default {} pool", other.name(), family(&spec.cidr)),
                ));
            }
        }
        Ok(())
    }

    pub(crate) fn create_pool(&mut self, spec: &PoolSpec) -> Response {
        validate_pool_spec(spec)?;
        if self.pools.contains_key(&spec.name) {
            return Err(IpamError::PoolExists { pool: spec.name.clone() });
        }
        self.check_against_other_pools(spec)?;
        let pool = Pool::new(spec.clone());
        self.idx.pool_by_first.insert(pool.first(), spec.name.clone());
        self.pools.insert(spec.name.clone(), pool);
        Ok(Output::Pool(spec.clone()))
    }

    pub(crate) fn update_pool(&mut self, spec: &PoolSpec) -> Response {
        validate_pool_spec(spec)?;
        let Some(old) = self.pools.get(&spec.name) else {
            return Err(IpamError::PoolNotFound { pool: spec.name.clone() });
        };
        if !spec.cidr.contains(&old.spec.cidr) {
            return Err(IpamError::invalid(
                "cidr",
                format!("a pool may only grow: {} does not contain {}", spec.cidr, old.spec.cidr),
            ));
        }
        self.check_against_other_pools(spec)?;
        let mut new = Pool::new(spec.clone());
        // Nothing in use may become excluded (gateway, exclusions, a grown network's
        // network/broadcast address).
        let (first, last) = (old.first(), old.last());
        if let Some((address, a)) = self.allocations.range(first, last).find(|(a, _)| new.is_fixed(*a)) {
            return Err(IpamError::AddressInUse { address, holder: holder(a.resolve(&self.idx.names)) });
        }
        if let Some((address, key)) =
            self.idx.reservation_by_address.range(first..=last).find(|(a, _)| new.is_fixed(**a))
        {
            return Err(IpamError::AddressReserved { address: *address, key: key.clone() });
        }

        // Checked: now replace the pool and rebuild its index.
        let Some(old) = self.pools.remove(&spec.name) else {
            return Err(IpamError::PoolNotFound { pool: spec.name.clone() });
        };
        self.idx.pool_by_first.remove(&old.first());
        new.set_cursor(old.cursor());
        for (address, until) in old.cooling {
            if new.is_fixed(address) {
                // Excluded now: the cooldown no longer matters.
                self.idx.cooling_queue.remove(&(until, address));
            } else {
                new.cooling.insert(address, until);
                new.occupy(address);
            }
        }
        for a in self.allocations.range(first, last).map(|(a, _)| a) {
            new.occupy(a);
            new.allocated += 1;
        }
        for a in self.idx.reservation_by_address.range(first..=last).map(|(a, _)| *a) {
            new.occupy(a);
        }
        self.idx.pool_by_first.insert(new.first(), spec.name.clone());
        self.pools.insert(spec.name.clone(), new);
        Ok(Output::Pool(spec.clone()))
    }

    pub(crate) fn delete_pool(&mut self, name: &str, force: bool) -> Response {
        let Some(pool) = self.pools.get(name) else {
            return Err(IpamError::PoolNotFound { pool: name.to_owned() });
        };
        if pool.allocated > 0 && !force {
            return Err(IpamError::PoolInUse { pool: name.to_owned(), allocated: pool.allocated });
        }
        let keys: Vec<String> = self.reservations.values().filter(|r| r.pool == name).map(|r| r.key.clone()).collect();
        if let (Some(key), false) = (keys.first(), force) {
            return Err(IpamError::ReservationConflict {
                key: key.clone(),
                reason: format!(
                    "pool {name} still has {} reservations; delete them or delete the pool with force",
                    keys.len()
                ),
            });
        }

        // Checked (or forced): drop the allocations, reservations and cooldowns with the pool.
        let (first, last) = (pool.first(), pool.last());
        let addresses: Vec<IpAddr> = self.allocations.range(first, last).map(|(a, _)| a).collect();
        for a in addresses {
            self.remove_allocation(a, false);
        }
        for key in keys {
            if let Some(r) = self.reservations.remove(&key) {
                self.idx.reservation_by_address.remove(&r.address);
            }
        }
        if let Some(pool) = self.pools.remove(name) {
            for (address, until) in &pool.cooling {
                self.idx.cooling_queue.remove(&(*until, *address));
            }
            self.idx.pool_by_first.remove(&pool.first());
        }
        Ok(Output::Done)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use hc_api::IpamError;
    use hc_api::types::{ReleaseTarget, Reservation, Route};

    use crate::command::{Command, Output};
    use crate::testing::{Harness, ip, pool, req_in};

    #[test]
    fn create_pool_returns_the_spec_and_exact_counts() {
        let mut h = Harness::new();
        let spec = crate::testing::pool("p", "10.0.0.0/24");
        let spec = hc_api::types::PoolSpec { gateway: Some(ip("10.0.0.1")), ..spec };
        assert_eq!(h.ok(Command::CreatePool(spec.clone())), Output::Pool(spec.clone()));
        let st = h.status("p");
        assert_eq!((st.size, st.used, st.reserved_idle, st.cooling, st.free), (253, 0, 0, 0, 253));
        assert_eq!(h.state.pool_spec("p"), Some(&spec));
        assert!(h.state.pool("nope").is_none());
    }

    #[test]
    fn create_pool_refuses_a_taken_name() {
        let mut h = Harness::new();
        h.create(pool("p", "10.0.0.0/24"));
        let e = h.refused(Command::CreatePool(pool("p", "10.1.0.0/24")));
        assert_eq!(e, IpamError::PoolExists { pool: "p".into() });
    }

    #[test]
    fn create_pool_refuses_a_bad_name() {
        let mut h = Harness::new();
        for name in ["", "Pool", "-p", "p_1", &"a".repeat(64)] {
            let e = h.refused(Command::CreatePool(pool(name, "10.0.0.0/24")));
            assert!(matches!(e, IpamError::InvalidArgument { ref field, .. } if field == "name"), "{e}");
        }
    }

    #[test]
    fn create_pool_refuses_host_bits_in_the_cidr() {
        let mut h = Harness::new();
        let e = h.refused(Command::CreatePool(pool("p", "10.0.0.5/24")));
        assert!(
            matches!(e, IpamError::InvalidArgument { ref field, ref reason } if field == "cidr" && reason.contains("10.0.0.0/24"))
        );
        let e = h.refused(Command::CreatePool(pool("p", "fd00::1/64")));
        assert!(matches!(e, IpamError::InvalidArgument { ref field, .. } if field == "cidr"));
    }

    #[test]
    fn create_pool_refuses_a_gateway_outside_the_cidr() {
        let mut h = Harness::new();
        let spec = hc_api::types::PoolSpec { gateway: Some(ip("10.0.1.1")), ..pool("p", "10.0.0.0/24") };
        let e = h.refused(Command::CreatePool(spec));
        assert_eq!(
            e,
            IpamError::GatewayOutsidePool { pool: "p".into(), gateway: ip("10.0.1.1"), cidr: "10.0.0.0/24".into() }
        );
        let spec = hc_api::types::PoolSpec { gateway: Some(ip("fd00::1")), ..pool("p", "10.0.0.0/24") };
        assert!(matches!(h.refused(Command::CreatePool(spec)), IpamError::GatewayOutsidePool { .. }));
        let spec = hc_api::types::PoolSpec { gateway: Some(ip("10.0.0.255")), ..pool("p", "10.0.0.0/24") };
        assert!(matches!(h.refused(Command::CreatePool(spec)), IpamError::InvalidArgument { .. }));
    }

    #[test]
    fn create_pool_refuses_vlan_0_and_above_4094() {
        let mut h = Harness::new();
        for vlan in [0u16, 4095, 5000] {
            let spec = hc_api::types::PoolSpec { vlan: Some(vlan), ..pool("p", "10.0.0.0/24") };
            assert_eq!(h.refused(Command::CreatePool(spec)), IpamError::InvalidVlan { vlan: u32::from(vlan) });
        }
    }

    #[test]
    fn a_pool_may_name_an_undeclared_vlan() {
        let mut h = Harness::new();
        h.create(hc_api::types::PoolSpec { vlan: Some(4094), ..pool("p", "10.0.0.0/24") });
        assert!(h.state.vlans().is_empty());
    }

    #[test]
    fn pools_never_overlap() {
        let mut h = Harness::new();
        h.create(pool("a", "10.0.0.0/24"));
        for cidr in ["10.0.0.0/24", "10.0.0.128/25", "10.0.0.0/16", "10.0.0.7/32"] {
            let e = h.refused(Command::CreatePool(pool("b", cidr)));
            assert_eq!(
                e,
                IpamError::PoolOverlap {
                    pool: "b".into(),
                    cidr: cidr.into(),
                    other: "a".into(),
                    other_cidr: "10.0.0.0/24".into()
                }
            );
        }
        h.create(pool("b", "10.0.1.0/24"));
    }

    #[test]
    fn ipv4_and_ipv6_pools_with_equal_numbers_do_not_overlap() {
        let mut h = Harness::new();
        h.create(pool("v4", "10.0.0.0/8"));
        h.create(pool("v6", "::a00:0/104"));
        let a = h.take("c1", "n1", "v4");
        let b = h.take("c2", "n1", "v6");
        assert_eq!((a, b), (ip("10.0.0.1"), ip("::a00:1")));
        assert_eq!(h.state.pool_containing(ip("::a00:5")).unwrap().name, "v6");
        assert_eq!(h.state.pool_containing(ip("10.0.0.5")).unwrap().name, "v4");
    }

    #[test]
    fn at_most_one_default_pool_per_family() {
        let mut h = Harness::new();
        h.create(hc_api::types::PoolSpec { default: true, ..pool("a", "10.0.0.0/24") });
        h.create(hc_api::types::PoolSpec { default: true, ..pool("v6", "fd00::/64") });
        let e = h.refused(Command::CreatePool(hc_api::types::PoolSpec { default: true, ..pool("b", "10.0.1.0/24") }));
        assert!(matches!(e, IpamError::InvalidArgument { ref field, .. } if field == "default"));
        h.create(pool("b", "10.0.1.0/24"));
        let e = h.refused(Command::UpdatePool(hc_api::types::PoolSpec { default: true, ..pool("b", "10.0.1.0/24") }));
        assert!(matches!(e, IpamError::InvalidArgument { ref field, .. } if field == "default"));
        // A pool may stay the default when it is updated.
        h.ok(Command::UpdatePool(hc_api::types::PoolSpec { default: true, vlan: Some(7), ..pool("a", "10.0.0.0/24") }));
    }

    #[test]
    fn create_pool_refuses_exclusions_outside_the_cidr() {
        let mut h = Harness::new();
        for ex in ["10.0.1.0-10.0.1.5", "10.0.0.250-10.0.1.5", "fd00::1"] {
            let spec = hc_api::types::PoolSpec { exclude: vec![ex.parse().unwrap()], ..pool("p", "10.0.0.0/24") };
            let e = h.refused(Command::CreatePool(spec));
            assert!(matches!(e, IpamError::InvalidArgument { ref field, .. } if field == "exclude[0]"), "{e}");
        }
    }

    #[test]
    fn create_pool_refuses_insane_routes_dns_and_cooldown() {
        let mut h = Harness::new();
        let base = || hc_api::types::PoolSpec { gateway: Some(ip("10.0.0.1")), ..pool("p", "10.0.0.0/24") };
        let route = |dst: &str, gw: Option<&str>| Route { dst: dst.parse().unwrap(), gw: gw.map(ip) };
        let bad = [
            hc_api::types::PoolSpec { routes: vec![route("192.168.0.1/16", None)], ..base() },
            hc_api::types::PoolSpec { routes: vec![route("fd00::/8", None)], ..base() },
            hc_api::types::PoolSpec { routes: vec![route("192.168.0.0/16", Some("10.9.9.9"))], ..base() },
            hc_api::types::PoolSpec { routes: vec![route("192.168.0.0/16", None)], gateway: None, ..base() },
            hc_api::types::PoolSpec {
                dns: hc_api::types::Dns { nameservers: vec![ip("0.0.0.0")], ..Default::default() },
                ..base()
            },
            hc_api::types::PoolSpec {
                dns: hc_api::types::Dns { search: vec!["bad name".into()], ..Default::default() },
                ..base()
            },
            hc_api::types::PoolSpec {
                dns: hc_api::types::Dns { options: vec!["".into()], ..Default::default() },
                ..base()
            },
            hc_api::types::PoolSpec { reuse_cooldown_secs: 8 * 24 * 3600, ..base() },
        ];
        for spec in bad {
            assert!(matches!(h.refused(Command::CreatePool(spec)), IpamError::InvalidArgument { .. }));
        }
        h.create(hc_api::types::PoolSpec {
            routes: vec![route("192.168.0.0/16", None), route("172.16.0.0/12", Some("10.0.0.254"))],
            dns: hc_api::types::Dns {
                nameservers: vec![ip("10.0.0.53")],
                domain: Some("cluster.local".into()),
                search: vec!["svc.cluster.local".into()],
                options: vec!["ndots:5".into()],
            },
            reuse_cooldown_secs: 60,
            ..base()
        });
    }

    #[test]
    fn create_pool_refuses_a_pool_without_usable_addresses() {
        let mut h = Harness::new();
        let spec = hc_api::types::PoolSpec { gateway: Some(ip("10.0.0.1")), ..pool("p", "10.0.0.1/32") };
        assert!(matches!(h.refused(Command::CreatePool(spec)), IpamError::InvalidArgument { .. }));
        assert!(matches!(h.refused(Command::CreatePool(pool("p", "0.0.0.0/0"))), IpamError::InvalidArgument { .. }));
        assert!(matches!(h.refused(Command::CreatePool(pool("p", "::/0"))), IpamError::InvalidArgument { .. }));
    }

    #[test]
    fn update_pool_grows_the_cidr_and_keeps_allocations() {
        let mut h = Harness::new();
        h.create(pool("p", "10.0.0.0/30"));
        let a = h.take("c1", "n1", "p");
        let b = h.take("c2", "n1", "p");
        assert!(h.apply(Command::Allocate { fence: None, request: req_in("c3", "n1", "p") }).is_err());
        h.ok(Command::UpdatePool(pool("p", "10.0.0.0/29")));
        assert_eq!(h.state.allocation_count(), 2);
        let st = h.status("p");
        assert_eq!((st.size, st.used, st.free), (6, 2, 4));
        let c = h.take("c3", "n1", "p");
        assert!(![a, b].contains(&c));
        // The old broadcast address is an ordinary address now.
        assert_eq!(c, ip("10.0.0.3"));
    }

    #[test]
    fn update_pool_refuses_to_shrink_or_move_the_cidr() {
        let mut h = Harness::new();
        h.create(pool("p", "10.0.0.0/24"));
        for cidr in ["10.0.0.0/25", "10.0.1.0/24", "fd00::/64"] {
            let e = h.refused(Command::UpdatePool(pool("p", cidr)));
            assert!(matches!(e, IpamError::InvalidArgument { ref field, .. } if field == "cidr"), "{e}");
        }
        assert_eq!(
            h.refused(Command::UpdatePool(pool("q", "10.0.0.0/24"))),
            IpamError::PoolNotFound { pool: "q".into() }
        );
    }

    #[test]
    fn update_pool_refuses_to_grow_into_another_pool() {
        let mut h = Harness::new();
        h.create(pool("p", "10.0.0.0/24"));
        h.create(pool("q", "10.0.1.0/24"));
        assert!(matches!(h.refused(Command::UpdatePool(pool("p", "10.0.0.0/23"))), IpamError::PoolOverlap { .. }));
    }

    #[test]
    fn update_pool_refuses_to_exclude_an_allocated_address() {
        let mut h = Harness::new();
        h.create(pool("p", "10.0.0.0/24"));
        let a = h.take("c1", "n1", "p");
        let spec =
            hc_api::types::PoolSpec { exclude: vec!["10.0.0.0/28".parse().unwrap()], ..pool("p", "10.0.0.0/24") };
        assert!(
            matches!(h.refused(Command::UpdatePool(spec)), IpamError::AddressInUse { address, .. } if address == a)
        );
        let spec = hc_api::types::PoolSpec { gateway: Some(a), ..pool("p", "10.0.0.0/24") };
        assert!(
            matches!(h.refused(Command::UpdatePool(spec)), IpamError::AddressInUse { address, .. } if address == a)
        );
        // Excluding free addresses is fine, and they stop being handed out.
        let spec =
            hc_api::types::PoolSpec { exclude: vec!["10.0.0.2-10.0.0.9".parse().unwrap()], ..pool("p", "10.0.0.0/24") };
        h.ok(Command::UpdatePool(spec));
        assert_eq!(h.take("c2", "n1", "p"), ip("10.0.0.10"));
        assert_eq!(h.status("p").size, 254 - 8);
    }

    #[test]
    fn update_pool_refuses_a_slash_31_to_30_growth_over_an_allocated_network_address() {
        let mut h = Harness::new();
        h.create(pool("p", "10.0.0.0/31"));
        assert_eq!(h.take("c1", "n1", "p"), ip("10.0.0.0"));
        assert!(matches!(h.refused(Command::UpdatePool(pool("p", "10.0.0.0/30"))), IpamError::AddressInUse { .. }));
    }

    #[test]
    fn update_pool_refuses_to_exclude_a_reserved_address() {
        let mut h = Harness::new();
        h.create(pool("p", "10.0.0.0/24"));
        h.ok(Command::PutReservation(Reservation { key: "k".into(), pool: "p".into(), address: ip("10.0.0.5") }));
        let spec = hc_api::types::PoolSpec { exclude: vec!["10.0.0.5".parse().unwrap()], ..pool("p", "10.0.0.0/24") };
        assert_eq!(
            h.refused(Command::UpdatePool(spec)),
            IpamError::AddressReserved { address: ip("10.0.0.5"), key: "k".into() }
        );
    }

    #[test]
    fn update_pool_drops_the_cooldown_of_a_newly_excluded_address() {
        let mut h = Harness::new();
        h.create(hc_api::types::PoolSpec { reuse_cooldown_secs: 60, ..pool("p", "10.0.0.0/24") });
        let a = h.take("c1", "n1", "p");
        h.release(None, ReleaseTarget::Address(a));
        assert_eq!(h.status("p").cooling, 1);
        let spec = hc_api::types::PoolSpec {
            exclude: vec![a.to_string().parse().unwrap()],
            reuse_cooldown_secs: 60,
            ..pool("p", "10.0.0.0/24")
        };
        h.ok(Command::UpdatePool(spec));
        let st = h.status("p");
        assert_eq!((st.size, st.cooling, st.free), (253, 0, 253));
    }

    #[test]
    fn update_pool_changes_routes_dns_selector_vlan_and_cooldown() {
        let mut h = Harness::new();
        h.create(pool("p", "10.0.0.0/24"));
        h.take("c1", "n1", "p");
        let mut spec = pool("p", "10.0.0.0/24");
        spec.gateway = Some(ip("10.0.0.254"));
        spec.vlan = Some(100);
        spec.routes = vec![Route { dst: "192.168.0.0/16".parse().unwrap(), gw: None }];
        spec.dns.nameservers = vec![ip("10.0.0.53")];
        spec.selector.namespaces = vec!["db".into()];
        spec.reuse_cooldown_secs = 30;
        assert_eq!(h.ok(Command::UpdatePool(spec.clone())), Output::Pool(spec.clone()));
        assert_eq!(h.state.pool_spec("p"), Some(&spec));
        assert_eq!(h.status("p").used, 1);
    }

    #[test]
    fn delete_pool_is_refused_while_addresses_are_allocated() {
        let mut h = Harness::new();
        h.create(pool("p", "10.0.0.0/24"));
        h.take("c1", "n1", "p");
        h.take("c2", "n1", "p");
        assert_eq!(
            h.refused(Command::DeletePool { name: "p".into(), force: false }),
            IpamError::PoolInUse { pool: "p".into(), allocated: 2 }
        );
        assert_eq!(
            h.refused(Command::DeletePool { name: "q".into(), force: false }),
            IpamError::PoolNotFound { pool: "q".into() }
        );
    }

    #[test]
    fn delete_pool_is_refused_while_reservations_point_at_it() {
        let mut h = Harness::new();
        h.create(pool("p", "10.0.0.0/24"));
        h.ok(Command::PutReservation(Reservation { key: "k".into(), pool: "p".into(), address: ip("10.0.0.5") }));
        assert!(matches!(
            h.refused(Command::DeletePool { name: "p".into(), force: false }),
            IpamError::ReservationConflict { ref key, .. } if key == "k"
        ));
        h.ok(Command::DeleteReservation { key: "k".into() });
        h.ok(Command::DeletePool { name: "p".into(), force: false });
        assert!(h.state.pools().is_empty());
    }

    #[test]
    fn forced_delete_pool_drops_allocations_reservations_and_cooldowns() {
        let mut h = Harness::new();
        h.create(hc_api::types::PoolSpec { reuse_cooldown_secs: 60, ..pool("p", "10.0.0.0/24") });
        h.create(pool("other", "10.0.1.0/24"));
        let keep = h.take("x", "n1", "other");
        h.take("c1", "n1", "p");
        let c = h.take("c2", "n1", "p");
        h.release(None, ReleaseTarget::Address(c));
        h.ok(Command::PutReservation(Reservation { key: "k".into(), pool: "p".into(), address: ip("10.0.0.9") }));
        h.ok(Command::DeletePool { name: "p".into(), force: true });
        assert!(h.state.pool("p").is_none());
        assert!(h.state.reservations().is_empty());
        assert_eq!(h.state.allocations(None, None, None).len(), 1);
        assert_eq!(h.state.allocation_by_address(keep).unwrap().owner.container_id, "x");
        assert!(h.state.allocation_by_attachment(&crate::testing::owner("c1", "n1").attachment()).is_none());
        // The range is free for a new pool, which starts empty.
        h.create(pool("p2", "10.0.0.0/24"));
        assert_eq!(h.take("c1", "n1", "p2"), ip("10.0.0.1"));
        assert_eq!(h.status("p2").cooling, 0);
    }
}
