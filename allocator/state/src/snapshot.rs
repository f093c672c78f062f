//! [`State`] as a snapshot: only the replicated data is written (lists, so that every format can
//! hold it, JSON included); the indexes are rebuilt, and the data checked, when it is loaded.
//!
//! Written through borrowed views, so serializing a large state does not copy it.

use std::collections::BTreeMap;
use std::net::IpAddr;

use hc_api::types::{Allocation, Lease, PoolSpec, Reservation, VlanSpec};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::pool::Pool;
use crate::state::State;

/// Bumped when the snapshot's shape changes.
const SNAPSHOT_VERSION: u32 = 1;

/// Why a snapshot could not be loaded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("inconsistent snapshot: {0}")]
pub struct SnapshotError(String);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct Cooling {
    address: IpAddr,
    until_ms: u64,
}

/// A map's values, written as a list.
struct Values<'a, K, V>(&'a BTreeMap<K, V>);

impl<K, V: Serialize> Serialize for Values<'_, K, V> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.values())
    }
}

/// The allocation records, as a list.
struct Records<'a>(&'a BTreeMap<IpAddr, std::sync::Arc<crate::record::Record>>);

impl Serialize for Records<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.iter().map(|(address, a)| a.as_serialized(*address)))
    }
}

/// The pools, each as a `PoolRef`.
struct Pools<'a>(&'a BTreeMap<String, Pool>);

impl Serialize for Pools<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.values().map(|p| PoolRef {
            spec: &p.spec,
            cursor: p.cursor(),
            cooling: CoolingRef(&p.cooling),
        }))
    }
}

#[derive(Serialize)]
struct PoolRef<'a> {
    spec: &'a PoolSpec,
    cursor: IpAddr,
    cooling: CoolingRef<'a>,
}

struct CoolingRef<'a>(&'a BTreeMap<IpAddr, u64>);

impl Serialize for CoolingRef<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.iter().map(|(&address, &until_ms)| Cooling { address, until_ms }))
    }
}

#[derive(Serialize)]
struct SnapshotRef<'a> {
    version: u32,
    last_applied: u64,
    now_ms: u64,
    pools: Pools<'a>,
    vlans: Values<'a, u16, VlanSpec>,
    reservations: Values<'a, String, Reservation>,
    allocations: Records<'a>,
    leases: Values<'a, String, Lease>,
    max_tokens: &'a BTreeMap<String, u64>,
}

#[derive(Deserialize)]
struct PoolRecord {
    spec: PoolSpec,
    cursor: IpAddr,
    cooling: Vec<Cooling>,
}

#[derive(Deserialize)]
pub(crate) struct Snapshot {
    version: u32,
    last_applied: u64,
    now_ms: u64,
    pools: Vec<PoolRecord>,
    vlans: Vec<VlanSpec>,
    reservations: Vec<Reservation>,
    allocations: Vec<Allocation>,
    leases: Vec<Lease>,
    max_tokens: BTreeMap<String, u64>,
}

impl Serialize for State {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        SnapshotRef {
            version: SNAPSHOT_VERSION,
            last_applied: self.last_applied,
            now_ms: self.now_ms,
            pools: Pools(&self.pools),
            vlans: Values(&self.vlans),
            reservations: Values(&self.reservations),
            allocations: Records(&self.allocations),
            leases: Values(&self.leases),
            max_tokens: &self.max_tokens,
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for State {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let snapshot = Snapshot::deserialize(d)?;
        State::from_snapshot(snapshot).map_err(serde::de::Error::custom)
    }
}

impl State {
    /// The replicated data of this state, copied (for checks; serializing does not copy).
    pub(crate) fn to_snapshot(&self) -> Snapshot {
        Snapshot {
            version: SNAPSHOT_VERSION,
            last_applied: self.last_applied,
            now_ms: self.now_ms,
            pools: self
                .pools
                .values()
                .map(|p| PoolRecord {
                    spec: p.spec.clone(),
                    cursor: p.cursor(),
                    cooling: p.cooling.iter().map(|(&address, &until_ms)| Cooling { address, until_ms }).collect(),
                })
                .collect(),
            vlans: self.vlans.values().cloned().collect(),
            reservations: self.reservations.values().cloned().collect(),
            allocations: self.allocations.iter().map(|(address, a)| a.to_allocation(*address)).collect(),
            leases: self.leases.values().cloned().collect(),
            max_tokens: self.max_tokens.clone(),
        }
    }

    /// Rebuilds a state and its indexes from replicated data, refusing data that breaks the
    /// state's rules (overlapping pools, two holders of one address, ...).
    pub(crate) fn from_snapshot(s: Snapshot) -> Result<State, SnapshotError> {
        let err = |m: String| Err(SnapshotError(m));
        if s.version != SNAPSHOT_VERSION {
            return err(format!("version {} (expected {SNAPSHOT_VERSION})", s.version));
        }
        let mut st = State { last_applied: s.last_applied, now_ms: s.now_ms, ..State::default() };

        for rec in s.pools {
            let name = rec.spec.name.clone();
            let mut pool = Pool::new(rec.spec);
            if st.pools.contains_key(&name) {
                return err(format!("pool {name} appears twice"));
            }
            if let Some(other) = st
                .pools
                .values()
                .find(|o| o.is_v4() == pool.is_v4() && (o.contains(pool.first()) || pool.contains(o.first())))
            {
                return err(format!("pools {name} and {} overlap", other.name()));
            }
            pool.set_cursor(rec.cursor);
            for c in rec.cooling {
                if !pool.contains(c.address) || pool.is_fixed(c.address) {
                    return err(format!("cooling address {} is not usable in pool {name}", c.address));
                }
                pool.cooling.insert(c.address, c.until_ms);
                pool.occupy(c.address);
                st.idx.cooling_queue.insert((c.until_ms, c.address));
            }
            st.idx.pool_by_first.insert(pool.first(), name.clone());
            st.pools.insert(name, pool);
        }
        for v in s.vlans {
            if st.vlans.insert(v.id, v).is_some() {
                return err("a VLAN appears twice".to_owned());
            }
        }
        for r in s.reservations {
            match st.pools.get_mut(&r.pool) {
                Some(p) if p.contains(r.address) && !p.is_fixed(r.address) => p.occupy(r.address),
                _ => {
                    return err(format!("reservation {} is not usable in pool {}", r.key, r.pool));
                }
            }
            if st.idx.reservation_by_address.insert(r.address, r.key.clone()).is_some() {
                return err(format!("address {} is reserved twice", r.address));
            }
            if st.reservations.insert(r.key.clone(), r).is_some() {
                return err("a reservation key appears twice".to_owned());
            }
        }
        for a in s.allocations {
            match st.pools.get(&a.pool) {
                Some(p) if p.contains(a.address) && !p.is_fixed(a.address) => {}
                _ => {
                    return err(format!("allocation {} is not usable in pool {}", a.address, a.pool));
                }
            }
            if st.allocations.contains_key(&a.address) {
                return err(format!("address {} has two holders", a.address));
            }
            if st.attachment_address(&a.owner.container_id, &a.owner.interface).is_some() {
                return err(format!("attachment of {} holds two addresses", a.address));
            }
            if st.pools.get(&a.pool).is_some_and(|p| p.cooling.contains_key(&a.address)) {
                return err(format!("allocated address {} is also cooling down", a.address));
            }
            st.insert_allocation(&a);
        }
        for l in s.leases {
            if st.leases.insert(l.node.clone(), l).is_some() {
                return err("a node has two leases".to_owned());
            }
        }
        st.max_tokens = s.max_tokens;
        if let Some(l) = st.leases.values().find(|l| st.max_tokens.get(&l.node).is_none_or(|t| *t < l.token)) {
            return err(format!("lease of {} has a token above the node's maximum", l.node));
        }
        Ok(st)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use hc_api::types::{PoolSpec, ReleaseTarget, Reservation, VlanSpec};

    use crate::command::Command;
    use crate::state::State;
    use crate::testing::{Harness, ip, pool, req_in};

    /// A state with something of everything: both families, a VLAN, reservations (idle and
    /// allocated), cooling addresses, active and expired leases, a forgotten node's token.
    fn busy() -> Harness {
        let mut h = Harness::new();
        h.ok(Command::PutVlan(VlanSpec { id: 100, name: "db".into(), nodes: vec!["n1".into()] }));
        h.create(PoolSpec {
            vlan: Some(100),
            reuse_cooldown_secs: 60,
            gateway: Some(ip("10.0.0.1")),
            ..pool("v4", "10.0.0.0/24")
        });
        h.create(PoolSpec { default: true, ..pool("v6", "fd00::/64") });
        h.ok(Command::PutReservation(Reservation {
            key: "db/mysql/0".into(),
            pool: "v4".into(),
            address: ip("10.0.0.50"),
        }));
        h.ok(Command::PutReservation(Reservation { key: "idle".into(), pool: "v6".into(), address: ip("fd00::99") }));
        let f1 = h.grant("n1");
        let f2 = h.grant("n2");
        for i in 0..5 {
            h.alloc(Some(f1.clone()), req_in(&format!("a{i}"), "n1", "v4"));
            h.alloc(Some(f2.clone()), req_in(&format!("b{i}"), "n2", "v6"));
        }
        let mut r = req_in("m", "n1", "v4");
        r.reservation_keys = vec!["db/mysql/0".into()];
        h.alloc(Some(f1.clone()), r);
        h.release(Some(f1), ReleaseTarget::Address(ip("10.0.0.3")));
        let lease = h.lease("n2");
        h.ok(Command::ExpireLease { node: "n2".into(), lease_id: lease.lease_id });
        h.grant("n3");
        h.ok(Command::NodeGone { node: "n3".into() });
        h
    }

    #[test]
    fn a_state_survives_msgpack_and_json_round_trips() {
        let h = busy();
        let bytes = rmp_serde::to_vec_named(&h.state).unwrap();
        let back: State = rmp_serde::from_slice(&bytes).unwrap();
        assert_eq!(back, h.state);
        let json = serde_json::to_string(&h.state).unwrap();
        let back: State = serde_json::from_str(&json).unwrap();
        assert_eq!(back, h.state);
        let empty: State = rmp_serde::from_slice(&rmp_serde::to_vec_named(&State::default()).unwrap()).unwrap();
        assert_eq!(empty, State::default());
    }

    #[test]
    fn a_restored_replica_makes_the_same_decisions() {
        let mut h = busy();
        let bytes = rmp_serde::to_vec_named(&h.state).unwrap();
        let mut other = Harness { state: rmp_serde::from_slice(&bytes).unwrap(), index: h.index, now: h.now };
        for step in 0..20u64 {
            let cmd = match step % 4 {
                0 => Command::Allocate { fence: None, request: req_in(&format!("x{step}"), "n1", "v4") },
                1 => Command::Allocate { fence: None, request: req_in(&format!("y{step}"), "n1", "v6") },
                2 => Command::Release {
                    fence: None,
                    target: ReleaseTarget::Address(ip(&format!("10.0.0.{}", step + 2))),
                },
                _ => Command::GrantLease { node: "n1".into(), ttl_ms: 5 },
            };
            h.now += 7_000;
            other.now = h.now;
            assert_eq!(h.apply(cmd.clone()), other.apply(cmd));
            assert_eq!(h.state, other.state);
        }
    }

    fn tampered(edit: impl FnOnce(&mut serde_json::Value)) -> String {
        let mut v = serde_json::to_value(&busy().state).unwrap();
        edit(&mut v);
        let json = v.to_string();
        serde_json::from_str::<State>(&json).unwrap_err().to_string()
    }

    #[test]
    fn a_snapshot_with_two_holders_of_one_address_is_refused() {
        let e = tampered(|v| {
            let a = v["allocations"].as_array_mut().unwrap();
            let mut dup = a[0].clone();
            dup["owner"]["container_id"] = "other".into();
            a.push(dup);
        });
        assert!(e.contains("two holders"), "{e}");
    }

    #[test]
    fn a_snapshot_with_overlapping_pools_is_refused() {
        let e = tampered(|v| {
            let p = v["pools"].as_array_mut().unwrap();
            let mut dup = p[0].clone();
            dup["spec"]["name"] = "zz".into();
            p.push(dup);
        });
        assert!(e.contains("overlap"), "{e}");
    }

    #[test]
    fn a_snapshot_with_a_lease_above_its_nodes_max_token_is_refused() {
        let e = tampered(|v| {
            v["max_tokens"]["n1"] = 1.into();
        });
        assert!(e.contains("maximum"), "{e}");
    }

    #[test]
    fn a_snapshot_of_another_version_is_refused() {
        let e = tampered(|v| v["version"] = 99.into());
        assert!(e.contains("version"), "{e}");
    }
}
