//! [`Record`]: an allocation as the state keeps it in memory — the API's [`Allocation`] without
//! its address (the key of the map that holds it) and with its repeated strings shared.
//!
//! A state with a million allocations holds a million copies of a handful of pool, interface,
//! namespace and node names. [`Names`] interns them, so each record points at one shared copy;
//! only the strings of the attachment itself (container id, pod) are its own. Records are
//! turned back into [`Allocation`]s for replies and reads, and serialize in the same shape, so
//! snapshots are unchanged.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::sync::Arc;

use hc_api::types::{Allocation, AllocationState, Owner};
use serde::Serialize;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct OwnerRecord {
    pub(crate) container_id: Box<str>,
    pub(crate) interface: Arc<str>,
    pub(crate) namespace: Arc<str>,
    pub(crate) pod: Box<str>,
    pub(crate) node: Arc<str>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Record {
    pub(crate) pool: Arc<str>,
    pub(crate) owner: OwnerRecord,
    pub(crate) reservation: Option<Box<str>>,
    pub(crate) log_index: u64,
    pub(crate) allocated_at_ms: u64,
    pub(crate) state: AllocationState,
}

impl Record {
    /// The API's form of this record, held at `address`.
    pub(crate) fn to_allocation(&self, address: IpAddr) -> Allocation {
        let o = &self.owner;
        Allocation {
            address,
            pool: self.pool.to_string(),
            owner: Owner {
                container_id: o.container_id.to_string(),
                interface: o.interface.to_string(),
                namespace: o.namespace.to_string(),
                pod: o.pod.to_string(),
                node: o.node.to_string(),
            },
            reservation: self.reservation.as_deref().map(str::to_owned),
            log_index: self.log_index,
            allocated_at_ms: self.allocated_at_ms,
            state: self.state,
        }
    }

    /// Whether this record belongs to the attachment `(container_id, interface)`.
    pub(crate) fn is_attachment(&self, container_id: &str, interface: &str) -> bool {
        &*self.owner.container_id == container_id && &*self.owner.interface == interface
    }

    /// A view that serializes exactly as the [`Allocation`] at `address` does.
    pub(crate) fn as_serialized(&self, address: IpAddr) -> AllocationRef<'_> {
        let o = &self.owner;
        AllocationRef {
            address,
            pool: &self.pool,
            owner: OwnerRef {
                container_id: &o.container_id,
                interface: &o.interface,
                namespace: &o.namespace,
                pod: &o.pod,
                node: &o.node,
            },
            reservation: self.reservation.as_deref(),
            log_index: self.log_index,
            allocated_at_ms: self.allocated_at_ms,
            state: self.state,
        }
    }
}

/// Field for field the serialized form of [`Allocation`] (same names, same order, same
/// skipped `None`).
#[derive(Serialize)]
pub(crate) struct AllocationRef<'a> {
    address: IpAddr,
    pool: &'a str,
    owner: OwnerRef<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reservation: Option<&'a str>,
    log_index: u64,
    allocated_at_ms: u64,
    state: AllocationState,
}

/// Field for field the serialized form of [`Owner`].
#[derive(Serialize)]
struct OwnerRef<'a> {
    container_id: &'a str,
    interface: &'a str,
    namespace: &'a str,
    pod: &'a str,
    node: &'a str,
}

/// Interned names (pools, interfaces, namespaces, nodes) shared by the records. Derived data:
/// it changes no decision, so two states compare equal whatever their tables hold.
#[derive(Debug, Clone, Default)]
pub(crate) struct Names {
    set: BTreeSet<Arc<str>>,
}

impl PartialEq for Names {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for Names {}

impl Names {
    /// The shared copy of `s`, made if there is none.
    pub(crate) fn intern(&mut self, s: &str) -> Arc<str> {
        if let Some(x) = self.set.get(s) {
            return x.clone();
        }
        let x: Arc<str> = Arc::from(s);
        self.set.insert(x.clone());
        x
    }

    /// The record for `a`, its names shared.
    pub(crate) fn record(&mut self, a: &Allocation) -> Record {
        let o = &a.owner;
        Record {
            pool: self.intern(&a.pool),
            owner: OwnerRecord {
                container_id: o.container_id.as_str().into(),
                interface: self.intern(&o.interface),
                namespace: self.intern(&o.namespace),
                pod: o.pod.as_str().into(),
                node: self.intern(&o.node),
            },
            reservation: a.reservation.as_deref().map(Into::into),
            log_index: a.log_index,
            allocated_at_ms: a.allocated_at_ms,
            state: a.state,
        }
    }

    /// Forgets the names of a dropped record that nothing else uses any more.
    pub(crate) fn release(&mut self, r: Record) {
        let names = [r.pool, r.owner.interface, r.owner.namespace, r.owner.node];
        for name in names {
            // One reference is `name` itself, one is the table's.
            if Arc::strong_count(&name) == 2 {
                self.set.remove(&*name);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn allocation(reservation: Option<&str>) -> Allocation {
        Allocation {
            address: "10.0.0.7".parse().unwrap(),
            pool: "p".into(),
            owner: Owner {
                container_id: "c1".into(),
                interface: "eth0".into(),
                namespace: "ns".into(),
                pod: "pod-1".into(),
                node: "n1".into(),
            },
            reservation: reservation.map(str::to_owned),
            log_index: 9,
            allocated_at_ms: 1234,
            state: AllocationState::Quarantined,
        }
    }

    #[test]
    fn a_record_round_trips_and_serializes_like_the_allocation() {
        let mut names = Names::default();
        for reservation in [None, Some("ns/pod-1")] {
            let a = allocation(reservation);
            let r = names.record(&a);
            assert_eq!(r.to_allocation(a.address), a);
            assert_eq!(serde_json::to_string(&r.as_serialized(a.address)).unwrap(), serde_json::to_string(&a).unwrap());
            assert_eq!(
                rmp_serde::to_vec_named(&r.as_serialized(a.address)).unwrap(),
                rmp_serde::to_vec_named(&a).unwrap()
            );
        }
    }

    #[test]
    fn names_are_shared_and_forgotten_with_their_last_record() {
        let mut names = Names::default();
        let a = names.record(&allocation(None));
        let b = names.record(&allocation(None));
        assert!(Arc::ptr_eq(&a.owner.node, &b.owner.node));
        assert_eq!(names.set.len(), 4);
        names.release(a);
        assert_eq!(names.set.len(), 4, "b still uses every name");
        names.release(b);
        assert!(names.set.is_empty());
    }
}
