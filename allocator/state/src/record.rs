//! [`Record`]: an allocation as the state keeps it in memory — the API's [`Allocation`] without
//! its address (the key of the map that holds it), without its pool (pools never overlap, so the
//! address names it), with its repeated names as ids into [`Names`], and with the strings of the
//! attachment itself (container id, pod, reservation key) in one allocation.
//!
//! A state with a million allocations holds a million copies of a handful of interface,
//! namespace and node names: a record keeps a 4-byte id for each instead of a pointer and a
//! length. Records are turned back into [`Allocation`]s (through [`RecordRef`], the record with
//! its names resolved) for replies and reads, so replies are unchanged.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;

use hc_api::types::{Allocation, AllocationState, Owner};

/// Index of a name in [`Names`].
pub(crate) type NameId = u32;

/// One allocation, 56 bytes plus its own strings (one heap block).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Record {
    /// Container id, then pod, then the reservation key if there is one.
    text: Box<str>,
    container_len: u32,
    pod_len: u32,
    pub(crate) interface: NameId,
    pub(crate) namespace: NameId,
    pub(crate) node: NameId,
    has_reservation: bool,
    pub(crate) state: AllocationState,
    pub(crate) log_index: u64,
    pub(crate) allocated_at_ms: u64,
}

/// Why a record's strings cannot be stored (a string over 4 GiB: never from a validated
/// request, only from a corrupt snapshot).
#[derive(Debug)]
pub(crate) struct TooLong;

impl Record {
    /// A record of the given parts; the names are ids the caller holds in [`Names`].
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        container_id: &str,
        pod: &str,
        reservation: Option<&str>,
        [interface, namespace, node]: [NameId; 3],
        state: AllocationState,
        log_index: u64,
        allocated_at_ms: u64,
    ) -> Result<Record, TooLong> {
        let container_len = u32::try_from(container_id.len()).map_err(|_| TooLong)?;
        let pod_len = u32::try_from(pod.len()).map_err(|_| TooLong)?;
        let mut text = String::with_capacity(container_id.len() + pod.len() + reservation.map_or(0, str::len));
        text.push_str(container_id);
        text.push_str(pod);
        text.push_str(reservation.unwrap_or(""));
        u32::try_from(text.len()).map_err(|_| TooLong)?;
        Ok(Record {
            text: text.into_boxed_str(),
            container_len,
            pod_len,
            interface,
            namespace,
            node,
            has_reservation: reservation.is_some(),
            state,
            log_index,
            allocated_at_ms,
        })
    }

    pub(crate) fn container_id(&self) -> &str {
        &self.text[..self.container_len as usize]
    }

    pub(crate) fn pod(&self) -> &str {
        let start = self.container_len as usize;
        &self.text[start..start + self.pod_len as usize]
    }

    pub(crate) fn reservation(&self) -> Option<&str> {
        self.has_reservation.then(|| &self.text[(self.container_len + self.pod_len) as usize..])
    }

    /// Pins the record to reservation `key` (or to none).
    pub(crate) fn set_reservation(&mut self, key: Option<&str>) {
        let mut text = String::with_capacity(self.container_len as usize + self.pod_len as usize);
        text.push_str(self.container_id());
        text.push_str(self.pod());
        text.push_str(key.unwrap_or(""));
        self.text = text.into_boxed_str();
        self.has_reservation = key.is_some();
    }

    /// Whether this record belongs to the attachment `(container_id, interface)`.
    pub(crate) fn is_attachment(&self, names: &Names, container_id: &str, interface: &str) -> bool {
        self.container_id() == container_id && names.get(self.interface) == interface
    }

    /// The record with its names resolved in `names`.
    pub(crate) fn resolve<'a>(&'a self, names: &'a Names) -> RecordRef<'a> {
        RecordRef {
            container_id: self.container_id(),
            interface: names.get(self.interface),
            namespace: names.get(self.namespace),
            pod: self.pod(),
            node: names.get(self.node),
            reservation: self.reservation(),
            log_index: self.log_index,
            allocated_at_ms: self.allocated_at_ms,
            state: self.state,
        }
    }
}

/// A [`Record`] with its names resolved: what replies, error messages and comparisons read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RecordRef<'a> {
    pub(crate) container_id: &'a str,
    pub(crate) interface: &'a str,
    pub(crate) namespace: &'a str,
    pub(crate) pod: &'a str,
    pub(crate) node: &'a str,
    pub(crate) reservation: Option<&'a str>,
    pub(crate) log_index: u64,
    pub(crate) allocated_at_ms: u64,
    pub(crate) state: AllocationState,
}

impl RecordRef<'_> {
    /// The API's form of this record, held at `address` in `pool`.
    pub(crate) fn to_allocation(self, address: IpAddr, pool: &str) -> Allocation {
        Allocation {
            address,
            pool: pool.to_owned(),
            owner: Owner {
                container_id: self.container_id.to_owned(),
                interface: self.interface.to_owned(),
                namespace: self.namespace.to_owned(),
                pod: self.pod.to_owned(),
                node: self.node.to_owned(),
            },
            reservation: self.reservation.map(str::to_owned),
            log_index: self.log_index,
            allocated_at_ms: self.allocated_at_ms,
            state: self.state,
        }
    }
}

/// Interned names (interfaces, namespaces, nodes) the records refer to by id, each with the
/// number of record fields that use it; an id whose count drops to zero is free, and the lowest
/// free id is reused first. The table is written in the snapshot as it is, so a replica that
/// restored from a snapshot assigns the same ids as one that applied the whole log: their
/// snapshots stay byte-identical (the simulation compares them). Ids decide nothing, though:
/// two states compare equal whatever their tables hold, and records are compared through their
/// resolved names (see `State`'s `PartialEq`).
#[derive(Debug, Clone, Default)]
pub(crate) struct Names {
    /// Id → name and its use count (0: free, listed in `free`).
    entries: Vec<(Arc<str>, u64)>,
    by_name: BTreeMap<Arc<str>, NameId>,
    free: BTreeSet<NameId>,
}

impl PartialEq for Names {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for Names {}

impl Names {
    /// The name of `id` ("" for an id not in the table, which a state never holds).
    pub(crate) fn get(&self, id: NameId) -> &str {
        self.entries.get(id as usize).map_or("", |(name, _)| name)
    }

    /// One more use of `name`: its id, made if there is none.
    pub(crate) fn acquire(&mut self, name: &str) -> NameId {
        if let Some(&id) = self.by_name.get(name) {
            self.entries[id as usize].1 += 1;
            return id;
        }
        let shared: Arc<str> = Arc::from(name);
        let id = match self.free.pop_first() {
            Some(id) => {
                self.entries[id as usize] = (shared.clone(), 1);
                id
            }
            None => {
                // More than 4 billion distinct names cannot be in memory at once.
                let id = NameId::try_from(self.entries.len()).unwrap_or(NameId::MAX);
                self.entries.push((shared.clone(), 1));
                id
            }
        };
        self.by_name.insert(shared, id);
        id
    }

    /// One use of `id` fewer; the name is forgotten with its last use.
    pub(crate) fn release(&mut self, id: NameId) {
        let Some(entry) = self.entries.get_mut(id as usize) else {
            return;
        };
        entry.1 = entry.1.saturating_sub(1);
        if entry.1 == 0 {
            let name = std::mem::replace(&mut entry.0, Arc::from(""));
            self.by_name.remove(&name);
            self.free.insert(id);
        }
    }

    /// The ids of a new record's names, acquired.
    pub(crate) fn acquire_owner(&mut self, owner: &Owner) -> [NameId; 3] {
        [self.acquire(&owner.interface), self.acquire(&owner.namespace), self.acquire(&owner.node)]
    }

    /// Releases the names of a dropped record.
    pub(crate) fn release_record(&mut self, r: &Record) {
        for id in [r.interface, r.namespace, r.node] {
            self.release(id);
        }
    }

    /// The table as a list indexed by id, free ids as empty strings (for a snapshot).
    pub(crate) fn table(&self) -> impl ExactSizeIterator<Item = &str> {
        self.entries.iter().map(|(name, uses)| if *uses == 0 { "" } else { &**name })
    }

    /// A table holding `names` under their index as id, nothing used yet (loading a snapshot:
    /// each record then calls [`Names::count`], and [`Names::finish`] frees the unused ids).
    pub(crate) fn from_table(names: Vec<String>) -> Names {
        let entries = names.into_iter().map(|n| (Arc::from(n), 0)).collect();
        Names { entries, by_name: BTreeMap::new(), free: BTreeSet::new() }
    }

    /// Counts one use of `id` while loading; false if the id is not in the table.
    pub(crate) fn count(&mut self, id: NameId) -> bool {
        match self.entries.get_mut(id as usize) {
            Some(entry) => {
                entry.1 += 1;
                true
            }
            None => false,
        }
    }

    /// Ends loading: unused ids become free; a name under two used ids is an error.
    pub(crate) fn finish(&mut self) -> Result<(), String> {
        for (id, (name, uses)) in self.entries.iter_mut().enumerate() {
            let id = id as NameId;
            if *uses == 0 {
                *name = Arc::from("");
                self.free.insert(id);
            } else if self.by_name.insert(name.clone(), id).is_some() {
                return Err(format!("name {name:?} appears twice in the name table"));
            }
        }
        Ok(())
    }

    /// Number of names in use.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.by_name.len()
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

    fn record(names: &mut Names, a: &Allocation) -> Record {
        let ids = names.acquire_owner(&a.owner);
        Record::new(
            &a.owner.container_id,
            &a.owner.pod,
            a.reservation.as_deref(),
            ids,
            a.state,
            a.log_index,
            a.allocated_at_ms,
        )
        .unwrap()
    }

    #[test]
    fn a_record_round_trips_to_the_allocation() {
        let mut names = Names::default();
        for reservation in [None, Some(""), Some("ns/pod-1")] {
            let a = allocation(reservation);
            let r = record(&mut names, &a);
            assert_eq!(r.resolve(&names).to_allocation(a.address, "p"), a);
            assert!(r.is_attachment(&names, "c1", "eth0"));
            assert!(!r.is_attachment(&names, "c1", "eth1"));
        }
        let mut r = record(&mut names, &allocation(None));
        r.set_reservation(Some("k"));
        assert_eq!((r.container_id(), r.pod(), r.reservation()), ("c1", "pod-1", Some("k")));
        r.set_reservation(None);
        assert_eq!((r.container_id(), r.pod(), r.reservation()), ("c1", "pod-1", None));
        assert!(std::mem::size_of::<Record>() <= 56, "{}", std::mem::size_of::<Record>());
    }

    #[test]
    fn names_are_shared_and_forgotten_with_their_last_record() {
        let mut names = Names::default();
        let a = record(&mut names, &allocation(None));
        let b = record(&mut names, &allocation(None));
        assert_eq!(a.node, b.node);
        assert_eq!(names.len(), 3);
        names.release_record(&a);
        assert_eq!(names.len(), 3, "b still uses every name");
        names.release_record(&b);
        assert_eq!(names.len(), 0);
        // Freed ids are reused.
        let c = record(&mut names, &allocation(None));
        assert_eq!(names.entries.len(), 3);
        assert_eq!(c.resolve(&names).node, "n1");
    }

    #[test]
    fn the_lowest_free_id_is_reused_so_a_restored_table_assigns_the_same_ids() {
        let mut live = Names::default();
        let ids: Vec<NameId> = ["a", "b", "c", "d"].iter().map(|n| live.acquire(n)).collect();
        assert_eq!(ids, [0, 1, 2, 3]);
        live.release(1);
        live.release(3);
        let mut restored = Names::from_table(live.table().map(str::to_owned).collect());
        for id in [0, 2] {
            assert!(restored.count(id));
        }
        restored.finish().unwrap();
        for name in ["x", "y", "z"] {
            assert_eq!(live.acquire(name), restored.acquire(name), "{name}");
        }
        assert_eq!(live.table().collect::<Vec<_>>(), restored.table().collect::<Vec<_>>());
        assert_eq!(live.acquire("x"), 1);
    }
}
