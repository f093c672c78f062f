//! PutReservation, DeleteReservation.

use hc_api::IpamError;
use hc_api::types::{Reservation, pod_key, statefulset_key};

use super::holder;
use crate::command::{Output, Response};
use crate::state::State;
use crate::validate::validate_key;

/// The StatefulSet key of a pod named `<statefulset>-<ordinal>`, if the name has that shape.
fn statefulset_key_of(namespace: &str, pod: &str) -> Option<String> {
    let (set, ordinal) = pod.rsplit_once('-')?;
    let n: u32 = ordinal.parse().ok()?;
    (!set.is_empty() && n.to_string() == ordinal).then(|| statefulset_key(namespace, set, n))
}

/// Whether `key` names the holder of `a`: the allocation came through that key, or the key is
/// the holder's pod key (`namespace/pod`) or StatefulSet key (`namespace/set/ordinal`). Such an
/// allocation may be pinned by a new reservation under that key.
pub(crate) fn owner_matches_key(a: &crate::record::RecordRef<'_>, key: &str) -> bool {
    if a.reservation == Some(key) {
        return true;
    }
    let o = a;
    if o.namespace.is_empty() || o.pod.is_empty() {
        return false;
    }
    pod_key(o.namespace, o.pod) == key || statefulset_key_of(o.namespace, o.pod).is_some_and(|k| k == key)
}

impl State {
    /// Creates or moves a reservation. The address must be usable in the pool, not reserved
    /// under another key, and not held by anyone the key does not name; moving a key is allowed
    /// while its old address is not allocated. Reserving an address its holder already has
    /// pins it: the allocation records the key and goes back to the key when released.
    pub(crate) fn put_reservation(&mut self, r: &Reservation) -> Response {
        validate_key("key", &r.key)?;
        let Some(pool) = self.pools.get(&r.pool) else {
            return Err(IpamError::PoolNotFound { pool: r.pool.clone() });
        };
        if !pool.contains(r.address) {
            return Err(IpamError::AddressOutsidePool {
                address: r.address,
                pool: r.pool.clone(),
                cidr: pool.spec.cidr.to_string(),
            });
        }
        if pool.is_fixed(r.address) {
            return Err(IpamError::AddressExcluded { address: r.address, pool: r.pool.clone() });
        }
        let conflict = |reason: String| IpamError::ReservationConflict { key: r.key.clone(), reason };
        if let Some(other) = self.idx.reservation_by_address.get(&r.address)
            && *other != r.key
        {
            return Err(conflict(format!("{} is already reserved for {other}", r.address)));
        }
        if let Some(a) = self.record_at(r.address)
            && !owner_matches_key(&a, &r.key)
        {
            return Err(conflict(format!("{} is held by {}", r.address, holder(a))));
        }
        let old = self.reservations.get(&r.key).map(|o| o.address).filter(|o| *o != r.address);
        if let Some(old) = old
            && let Some(a) = self.record_at(old)
        {
            return Err(conflict(format!(
                "the key's current address {old} is held by {}; release it first",
                holder(a)
            )));
        }

        // Checked: move the key.
        if let Some(old) = old {
            self.idx.reservation_by_address.remove(&old);
            if !self.is_held(old)
                && let Some(p) = self.pool_of_mut(old)
            {
                p.vacate(old);
            }
        }
        self.reservations.insert(r.key.clone(), r.clone());
        self.idx.reservation_by_address.insert(r.address, r.key.clone());
        if let Some(p) = self.pools.get_mut(&r.pool) {
            p.occupy(r.address);
        }
        if let Some(a) = self.allocations.get_mut(&r.address).map(std::sync::Arc::make_mut) {
            a.set_reservation(Some(&r.key));
        }
        Ok(Output::Done)
    }

    /// Drops a reservation; its address becomes free for anyone once it is neither allocated
    /// nor cooling down.
    pub(crate) fn delete_reservation(&mut self, key: &str) -> Response {
        let Some(r) = self.reservations.remove(key) else {
            return Err(IpamError::ReservationNotFound { key: key.to_owned() });
        };
        self.idx.reservation_by_address.remove(&r.address);
        if !self.is_held(r.address)
            && let Some(p) = self.pool_of_mut(r.address)
        {
            p.vacate(r.address);
        }
        Ok(Output::Done)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statefulset_keys_come_from_ordinal_pod_names() {
        assert_eq!(statefulset_key_of("db", "mysql-0").as_deref(), Some("db/mysql/0"));
        assert_eq!(statefulset_key_of("db", "my-sql-12").as_deref(), Some("db/my-sql/12"));
        assert_eq!(statefulset_key_of("db", "mysql-01"), None);
        assert_eq!(statefulset_key_of("db", "mysql"), None);
        assert_eq!(statefulset_key_of("db", "-3"), None);
        assert_eq!(statefulset_key_of("db", "web-abc"), None);
    }
}

#[cfg(test)]
mod state_tests {
    #![allow(clippy::unwrap_used)]

    use hc_api::IpamError;
    use hc_api::types::{AllocateRequest, PoolSpec, ReleaseTarget, Reservation};

    use crate::command::Command;
    use crate::testing::{Harness, ip, owner, pool, req_in};

    fn res(key: &str, pool: &str, address: &str) -> Command {
        Command::PutReservation(Reservation { key: key.into(), pool: pool.into(), address: ip(address) })
    }

    fn keyed(container: &str, node: &str, keys: &[&str]) -> AllocateRequest {
        AllocateRequest {
            owner: owner(container, node),
            reservation_keys: keys.iter().map(|k| (*k).to_owned()).collect(),
            ..Default::default()
        }
    }

    fn setup() -> Harness {
        let mut h = Harness::new();
        h.create(PoolSpec { gateway: Some(ip("10.0.0.1")), ..pool("p", "10.0.0.0/29") });
        h
    }

    #[test]
    fn a_reserved_address_goes_to_its_key_and_nobody_else() {
        let mut h = setup();
        h.ok(res("db/mysql/0", "p", "10.0.0.2"));
        assert_eq!(h.status("p").reserved_idle, 1);
        // Searches skip it.
        assert_eq!(h.take("c1", "n1", "p"), ip("10.0.0.3"));
        // An explicit request for it is refused.
        let e = h
            .try_alloc(None, AllocateRequest { address: Some(ip("10.0.0.2")), ..req_in("c2", "n1", "p") })
            .unwrap_err();
        assert_eq!(e, IpamError::AddressReserved { address: ip("10.0.0.2"), key: "db/mysql/0".into() });
        // The key gets it, with no pool named at all.
        let a = h.alloc(None, keyed("c3", "n2", &["db/mysql/0"])).allocation;
        assert_eq!((a.address, a.reservation.as_deref()), (ip("10.0.0.2"), Some("db/mysql/0")));
        let st = h.status("p");
        assert_eq!((st.used, st.reserved_idle), (2, 0));
    }

    #[test]
    fn put_reservation_refuses_unknown_pools_and_unusable_addresses() {
        let mut h = setup();
        assert_eq!(h.refused(res("k", "q", "10.0.0.2")), IpamError::PoolNotFound { pool: "q".into() });
        assert_eq!(
            h.refused(res("k", "p", "10.0.1.2")),
            IpamError::AddressOutsidePool { address: ip("10.0.1.2"), pool: "p".into(), cidr: "10.0.0.0/29".into() }
        );
        for excluded in ["10.0.0.0", "10.0.0.1", "10.0.0.7"] {
            assert_eq!(
                h.refused(res("k", "p", excluded)),
                IpamError::AddressExcluded { address: ip(excluded), pool: "p".into() }
            );
        }
        assert!(matches!(h.refused(res("", "p", "10.0.0.2")), IpamError::InvalidArgument { .. }));
    }

    #[test]
    fn put_reservation_refuses_an_address_reserved_for_another_key() {
        let mut h = setup();
        h.ok(res("a", "p", "10.0.0.2"));
        assert!(
            matches!(h.refused(res("b", "p", "10.0.0.2")), IpamError::ReservationConflict { ref key, .. } if key == "b")
        );
    }

    #[test]
    fn put_reservation_refuses_an_address_held_by_someone_the_key_does_not_name() {
        let mut h = setup();
        let a = h.take("c1", "n1", "p");
        let e = h.refused(res("other/pod", "p", &a.to_string()));
        assert!(matches!(e, IpamError::ReservationConflict { ref reason, .. } if reason.contains("c1")), "{e}");
    }

    #[test]
    fn put_reservation_pins_the_address_its_own_pod_holds() {
        let mut h = setup();
        let a = h.take("c1", "n1", "p");
        // owner("c1") is pod ns/pod-c1.
        h.ok(res("ns/pod-c1", "p", &a.to_string()));
        assert_eq!(h.state.allocation_by_address(a).unwrap().reservation.as_deref(), Some("ns/pod-c1"));
        h.release(None, ReleaseTarget::Address(a));
        let st = h.status("p");
        assert_eq!((st.used, st.reserved_idle), (0, 1));
        assert_eq!(h.alloc(None, keyed("c9", "n2", &["ns/pod-c1"])).allocation.address, a);
    }

    #[test]
    fn put_reservation_pins_a_statefulset_members_address_by_ordinal_key() {
        let mut h = setup();
        let mut r = req_in("c1", "n1", "p");
        r.owner.namespace = "db".into();
        r.owner.pod = "mysql-2".into();
        let a = h.alloc(None, r).allocation.address;
        h.ok(res("db/mysql/2", "p", &a.to_string()));
        assert!(matches!(h.refused(res("db/mysql/3", "p", &a.to_string())), IpamError::ReservationConflict { .. }));
    }

    #[test]
    fn put_reservation_is_idempotent() {
        let mut h = setup();
        h.ok(res("k", "p", "10.0.0.2"));
        let before = h.state.reservations();
        h.ok(res("k", "p", "10.0.0.2"));
        assert_eq!(h.state.reservations(), before);
        assert_eq!(h.state.reservation("k").unwrap().address, ip("10.0.0.2"));
    }

    #[test]
    fn moving_a_key_frees_its_old_address() {
        let mut h = setup();
        h.ok(res("k", "p", "10.0.0.2"));
        h.ok(res("k", "p", "10.0.0.4"));
        assert_eq!(h.status("p").reserved_idle, 1);
        assert_eq!(h.take("c1", "n1", "p"), ip("10.0.0.2"));
        assert_eq!(h.take("c2", "n1", "p"), ip("10.0.0.3"));
        assert_eq!(h.take("c3", "n1", "p"), ip("10.0.0.5"));
    }

    #[test]
    fn moving_a_key_is_refused_while_its_old_address_is_allocated() {
        let mut h = setup();
        h.ok(res("k", "p", "10.0.0.2"));
        h.alloc(None, keyed("c1", "n1", &["k"]));
        let e = h.refused(res("k", "p", "10.0.0.4"));
        assert!(matches!(e, IpamError::ReservationConflict { ref key, .. } if key == "k"));
    }

    #[test]
    fn delete_reservation_of_an_unknown_key_is_not_found() {
        let mut h = setup();
        assert_eq!(
            h.refused(Command::DeleteReservation { key: "k".into() }),
            IpamError::ReservationNotFound { key: "k".into() }
        );
    }

    #[test]
    fn delete_reservation_frees_the_address_for_anybody() {
        let mut h = setup();
        h.ok(res("k", "p", "10.0.0.2"));
        h.ok(Command::DeleteReservation { key: "k".into() });
        assert_eq!(h.status("p").free, 5);
        assert_eq!(h.take("c1", "n1", "p"), ip("10.0.0.2"));
    }

    #[test]
    fn delete_reservation_keeps_the_allocation_made_through_it() {
        let mut h = setup();
        h.ok(res("k", "p", "10.0.0.2"));
        let a = h.alloc(None, keyed("c1", "n1", &["k"])).allocation.address;
        h.ok(Command::DeleteReservation { key: "k".into() });
        assert_eq!(h.state.allocation_by_address(a).unwrap().owner.container_id, "c1");
        h.release(None, ReleaseTarget::Address(a));
        // No cooldown in this pool and no reservation left: free for anybody.
        assert_eq!(h.status("p").free, 5);
    }

    #[test]
    fn a_released_reserved_address_goes_back_to_its_key_not_into_cooldown() {
        let mut h = Harness::new();
        h.create(PoolSpec { reuse_cooldown_secs: 60, ..pool("p", "10.0.0.0/29") });
        h.ok(res("k", "p", "10.0.0.2"));
        let a = h.alloc(None, keyed("c1", "n1", &["k"])).allocation.address;
        h.release(None, ReleaseTarget::Address(a));
        let st = h.status("p");
        assert_eq!((st.used, st.reserved_idle, st.cooling), (0, 1, 0));
        // The key gets it back at once.
        assert_eq!(h.alloc(None, keyed("c2", "n2", &["k"])).allocation.address, a);
        h.release(None, ReleaseTarget::Address(a));
        // Deleting the reservation now leaves the address cooling for everybody else.
        h.ok(Command::DeleteReservation { key: "k".into() });
        let st = h.status("p");
        assert_eq!((st.reserved_idle, st.cooling, st.free), (0, 1, 5));
        let e = h.try_alloc(None, AllocateRequest { address: Some(a), ..req_in("c3", "n1", "p") }).unwrap_err();
        assert!(matches!(e, IpamError::AddressCoolingDown { .. }));
        h.now += 60_000;
        h.ok(Command::ExpireLease { node: String::new(), lease_id: 0 });
        assert_eq!(h.status("p").free, 6);
    }
}
