//! [`Record`]: an allocation as the state keeps it in memory — the API's [`Allocation`] without
//! its address (the key of the map that holds it), without its pool (pools never overlap, so the
//! address names it), with its repeated names as ids into [`Names`], and with the strings of the
//! attachment itself (container id, pod, reservation key) in one allocation.
//!
//! A state with a million allocations holds a million copies of a handful of interface,
//! namespace and node names: a record keeps a 4-byte id for each instead of a pointer and a
//! length. A container id in lowercase hex (what every CRI runtime passes: 64 digits) is kept as
//! its bytes, half the size. Records are turned back into [`Allocation`]s (through
//! [`RecordRef`], the record with its names resolved) for replies and reads, so replies are
//! unchanged.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;

use hc_api::types::{Allocation, AllocationState, Owner};

/// Index of a name in [`Names`].
pub(crate) type NameId = u32;

/// Longest pod name a record holds; the commands refuse longer ones, and the container id and
/// the reservation key are bounded by `MAX_KEY_LEN`, far below what the shape can count.
pub(crate) use crate::validate::MAX_POD_LEN;

/// `Record::shape`: the stored container id's length (bits 0–12), the pod's (bits 13–25), and
/// flags. 48 bytes in all, so the record and its `Arc` counts fit a 64-byte heap block.
const LEN_BITS: u32 = 13;
const LEN_MASK: u32 = (1 << LEN_BITS) - 1;
const HAS_RESERVATION: u32 = 1 << 26;
const CONTAINER_HEX: u32 = 1 << 27;
const QUARANTINED: u32 = 1 << 28;

/// One allocation, 48 bytes plus its own strings (one heap block).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Record {
    /// The container id (its bytes if it is lowercase hex of even length, else its UTF-8), then
    /// the pod, then the reservation key if there is one.
    text: Box<[u8]>,
    pub(crate) interface: NameId,
    pub(crate) namespace: NameId,
    pub(crate) node: NameId,
    shape: u32,
    pub(crate) log_index: u64,
    pub(crate) allocated_at_ms: u64,
}

/// Why a record's strings cannot be stored (a container id or pod longer than the request
/// validation allows: never from a validated request, only from a corrupt snapshot).
#[derive(Debug)]
pub(crate) struct TooLong;

/// `id` as bytes if it is lowercase hex of even length (so that it round-trips exactly).
fn hex_bytes(id: &str) -> Option<Vec<u8>> {
    let digits = id.as_bytes();
    if digits.is_empty() || !digits.len().is_multiple_of(2) {
        return None;
    }
    let nibble = |d: u8| match d {
        b'0'..=b'9' => Some(d - b'0'),
        b'a'..=b'f' => Some(d - b'a' + 10),
        _ => None,
    };
    digits.chunks_exact(2).map(|pair| Some(nibble(pair[0])? << 4 | nibble(pair[1])?)).collect()
}

fn hex_string(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    s
}

/// A container id as given to [`Record::new`]: its text (kept as bytes if it is lowercase hex),
/// or the bytes such an id spells, as a snapshot holds them (any non-empty bytes are one).
#[derive(Clone, Copy, Debug)]
pub(crate) enum Container<'a> {
    Id(&'a str),
    Hex(&'a [u8]),
}

impl<'a> From<&'a str> for Container<'a> {
    fn from(id: &'a str) -> Self {
        Container::Id(id)
    }
}

/// `text` as a string: every string part of a record came from a `&str`, so this never falls
/// back to "" for a record this module made.
fn utf8(text: &[u8]) -> &str {
    std::str::from_utf8(text).unwrap_or("")
}

impl Record {
    /// A record of the given parts; the names are ids the caller holds in [`Names`].
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new<'a>(
        container: impl Into<Container<'a>>,
        pod: &str,
        reservation: Option<&str>,
        [interface, namespace, node]: [NameId; 3],
        state: AllocationState,
        log_index: u64,
        allocated_at_ms: u64,
    ) -> Result<Record, TooLong> {
        let packed;
        let (container, hex): (&[u8], bool) = match container.into() {
            Container::Id(id) => {
                packed = hex_bytes(id);
                (packed.as_deref().unwrap_or(id.as_bytes()), packed.is_some())
            }
            Container::Hex(bytes) => (bytes, true),
        };
        let len = |n: usize| u32::try_from(n).ok().filter(|&n| n <= LEN_MASK).ok_or(TooLong);
        let (container_len, pod_len) = (len(container.len())?, len(pod.len())?);
        if pod.len() > MAX_POD_LEN {
            return Err(TooLong);
        }
        let mut text = Vec::with_capacity(container.len() + pod.len() + reservation.map_or(0, str::len));
        text.extend_from_slice(container);
        text.extend_from_slice(pod.as_bytes());
        text.extend_from_slice(reservation.unwrap_or("").as_bytes());
        let mut shape = container_len | pod_len << LEN_BITS;
        if reservation.is_some() {
            shape |= HAS_RESERVATION;
        }
        if hex {
            shape |= CONTAINER_HEX;
        }
        let mut record =
            Record { text: text.into_boxed_slice(), interface, namespace, node, shape, log_index, allocated_at_ms };
        record.set_state(state);
        Ok(record)
    }

    fn container_len(&self) -> usize {
        (self.shape & LEN_MASK) as usize
    }

    fn pod_len(&self) -> usize {
        (self.shape >> LEN_BITS & LEN_MASK) as usize
    }

    /// Whether the container id is kept as the bytes its lowercase hex digits spell.
    pub(crate) fn container_is_hex(&self) -> bool {
        self.shape & CONTAINER_HEX != 0
    }

    /// The container id as kept: its UTF-8 text, or its bytes if [`Self::container_is_hex`].
    pub(crate) fn container_bytes(&self) -> &[u8] {
        &self.text[..self.container_len()]
    }

    pub(crate) fn container_id(&self) -> Cow<'_, str> {
        if self.shape & CONTAINER_HEX != 0 {
            Cow::Owned(hex_string(self.container_bytes()))
        } else {
            Cow::Borrowed(utf8(self.container_bytes()))
        }
    }

    /// Whether the container id is `id`, without spelling it out.
    pub(crate) fn container_is(&self, id: &str) -> bool {
        if self.shape & CONTAINER_HEX != 0 {
            hex_bytes(id).is_some_and(|b| b == self.container_bytes())
        } else {
            self.container_bytes() == id.as_bytes()
        }
    }

    pub(crate) fn pod(&self) -> &str {
        let start = self.container_len();
        utf8(&self.text[start..start + self.pod_len()])
    }

    pub(crate) fn reservation(&self) -> Option<&str> {
        (self.shape & HAS_RESERVATION != 0).then(|| utf8(&self.text[self.container_len() + self.pod_len()..]))
    }

    pub(crate) fn state(&self) -> AllocationState {
        if self.shape & QUARANTINED != 0 { AllocationState::Quarantined } else { AllocationState::Active }
    }

    pub(crate) fn set_state(&mut self, state: AllocationState) {
        match state {
            AllocationState::Active => self.shape &= !QUARANTINED,
            AllocationState::Quarantined => self.shape |= QUARANTINED,
        }
    }

    /// Pins the record to reservation `key` (or to none).
    pub(crate) fn set_reservation(&mut self, key: Option<&str>) {
        let kept = self.container_len() + self.pod_len();
        let mut text = Vec::with_capacity(kept + key.map_or(0, str::len));
        text.extend_from_slice(&self.text[..kept]);
        text.extend_from_slice(key.unwrap_or("").as_bytes());
        self.text = text.into_boxed_slice();
        match key {
            Some(_) => self.shape |= HAS_RESERVATION,
            None => self.shape &= !HAS_RESERVATION,
        }
    }

    /// Whether this record belongs to the attachment `(container_id, interface)`.
    pub(crate) fn is_attachment(&self, names: &Names, container_id: &str, interface: &str) -> bool {
        self.container_is(container_id) && names.get(self.interface) == interface
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
            state: self.state(),
        }
    }
}

/// A [`Record`] with its names resolved: what replies, error messages and comparisons read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RecordRef<'a> {
    pub(crate) container_id: Cow<'a, str>,
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
    pub(crate) fn into_allocation(self, address: IpAddr, pool: &str) -> Allocation {
        Allocation {
            address,
            pool: pool.to_owned(),
            owner: Owner {
                container_id: self.container_id.into_owned(),
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
            a.owner.container_id.as_str(),
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
            assert_eq!(r.resolve(&names).into_allocation(a.address, "p"), a);
            assert!(r.is_attachment(&names, "c1", "eth0"));
            assert!(!r.is_attachment(&names, "c1", "eth1"));
        }
        let mut r = record(&mut names, &allocation(None));
        r.set_reservation(Some("k"));
        assert_eq!((&*r.container_id(), r.pod(), r.reservation()), ("c1", "pod-1", Some("k")));
        r.set_reservation(None);
        assert_eq!((&*r.container_id(), r.pod(), r.reservation()), ("c1", "pod-1", None));
        // With its Arc counts (16 bytes) a record fills one 64-byte heap block.
        assert!(std::mem::size_of::<Record>() <= 48, "{}", std::mem::size_of::<Record>());
    }

    #[test]
    fn container_ids_round_trip_whether_or_not_they_are_kept_as_bytes() {
        let mut names = Names::default();
        let sandbox = "3f1c9a0be4d2c7186a5b0e9f7d3c2a1b4e5f6a7b8c9d0e1f2a3b4c5d6e7f8091";
        for (id, packed) in [
            (sandbox, true),
            ("00", true),
            ("0A", false),
            ("abc", false),
            ("c1", true),
            ("c-1", false),
            ("deadbeefg0", false),
            ("ünïcode-id", false),
        ] {
            let mut a = allocation(Some("key"));
            a.owner.container_id = id.to_owned();
            let r = record(&mut names, &a);
            assert_eq!(r.shape & CONTAINER_HEX != 0, packed, "{id}");
            assert_eq!(r.container_id(), id);
            assert!(r.container_is(id));
            assert!(!r.container_is(&id.to_uppercase()) || id == id.to_uppercase());
            assert!(!r.container_is("ff"));
            assert_eq!((r.pod(), r.reservation()), ("pod-1", Some("key")));
            assert_eq!(r.resolve(&names).into_allocation(a.address, "p"), a);
        }
        let mut a = allocation(None);
        a.owner.container_id = sandbox.to_owned();
        assert_eq!(record(&mut names, &a).text.len(), 32 + "pod-1".len(), "64 hex digits are kept as 32 bytes");
    }

    #[test]
    fn state_and_lengths_live_beside_each_other_in_the_shape() {
        let mut names = Names::default();
        let mut a = allocation(Some("r"));
        a.owner.pod = "p".repeat(MAX_POD_LEN);
        a.owner.container_id = "c".repeat(512);
        let mut r = record(&mut names, &a);
        assert_eq!(r.state(), AllocationState::Quarantined);
        r.set_state(AllocationState::Active);
        assert_eq!((r.state(), r.pod().len(), r.container_id().len()), (AllocationState::Active, MAX_POD_LEN, 512));
        r.set_state(AllocationState::Quarantined);
        assert_eq!(r.reservation(), Some("r"));
        assert_eq!(r.state(), AllocationState::Quarantined);
        a.owner.pod.push('p');
        let ids = names.acquire_owner(&a.owner);
        assert!(Record::new("c", &a.owner.pod, None, ids, AllocationState::Active, 1, 1).is_err());
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
