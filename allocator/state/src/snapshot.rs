//! [`State`] as a snapshot: only the replicated data is written (lists, so that every format can
//! hold it, JSON included); the indexes are rebuilt, and the data checked, when it is loaded.
//!
//! Written through borrowed views, so serializing a large state does not copy it.
//!
//! Version 2 (written since issue 5) stores the allocations compactly: `names` is the state's
//! name table (interfaces, namespaces, nodes; an allocation refers to each by its index) and
//! `records` is a list of byte strings, each holding up to [`CHUNK`] allocations in address
//! order in a positional binary layout (see [`encode_record`]); the pool of an allocation is
//! the pool containing its address. Loading decodes straight into the in-memory records and
//! builds every map from sorted data in bulk. Version 1 (`allocations`: a list of the API's
//! allocations, with named fields) is still read, so data directories written before keep
//! starting. Version 3 differs from 2 in one point: a container id in lowercase hex is written
//! as the bytes its digits spell (half the size; see [`encode_record`]). Version 2 is read by
//! the same code.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use hc_api::types::{Allocation, AllocationState, Lease, PoolSpec, Reservation, VlanSpec};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::addr::AddrSet;
use crate::pool::{Pool, to_u128};
use crate::record::{Container, NameId, Names, Record};
use crate::state::{AttachmentHash, State, attachment_hash};

/// Bumped when the snapshot's shape changes. Versions 1 and 2 are still read.
const SNAPSHOT_VERSION: u32 = 3;

/// Allocations per byte string of `records`: large enough that the per-string framing is
/// nothing, small enough that writing never holds more than a few hundred KiB extra.
const CHUNK: usize = 4096;

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

/// The name table, as a list indexed by id.
struct NameTable<'a>(&'a Names);

impl Serialize for NameTable<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.table())
    }
}

/// The allocation records, as a list of byte strings of up to [`CHUNK`] records each, encoded
/// one chunk at a time while writing.
struct Records<'a>(&'a State);

impl Serialize for Records<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let st = self.0;
        let mut records = st.allocations.iter().peekable();
        let chunks = std::iter::from_fn(move || {
            records.peek()?;
            let mut buf = Vec::with_capacity(CHUNK * 48);
            for (address, r) in records.by_ref().take(CHUNK) {
                encode_record(&mut buf, address, r, true);
            }
            Some(Chunk(buf))
        });
        s.collect_seq(chunks)
    }
}

/// One byte string of encoded records.
#[derive(Default)]
struct Chunk(Vec<u8>);

impl Serialize for Chunk {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.0)
    }
}

impl<'de> Deserialize<'de> for Chunk {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Chunk;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a byte string of allocation records")
            }
            fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Chunk, E> {
                Ok(Chunk(v.to_vec()))
            }
            fn visit_byte_buf<E: serde::de::Error>(self, v: Vec<u8>) -> Result<Chunk, E> {
                Ok(Chunk(v))
            }
            // Formats without byte strings (JSON) write a list of numbers.
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Chunk, A::Error> {
                let mut v = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1 << 20));
                while let Some(b) = seq.next_element::<u8>()? {
                    v.push(b);
                }
                Ok(Chunk(v))
            }
        }
        d.deserialize_bytes(V)
    }
}

/// Appends `r`, held at `address`, to `buf`: the address (a byte 4 or 6, then its 4 or 16
/// bytes), the interface, namespace and node ids, the container id, the pod, the reservation
/// key (a byte 0 for none, 1 then the key), the log index, the allocation time (ms) and the
/// state (a byte: bit 0 set for quarantined, bit 1 set if the container id was written as the
/// bytes its lowercase hex digits spell, which version 2 never did). Numbers are LEB128
/// varints; strings are their length then their UTF-8 bytes. `hex_as_bytes` is false only
/// where a test writes version 2.
fn encode_record(buf: &mut Vec<u8>, address: IpAddr, r: &Record, hex_as_bytes: bool) {
    match address {
        IpAddr::V4(a) => {
            buf.push(4);
            buf.extend_from_slice(&a.octets());
        }
        IpAddr::V6(a) => {
            buf.push(6);
            buf.extend_from_slice(&a.octets());
        }
    }
    for id in [r.interface, r.namespace, r.node] {
        put_varint(buf, u64::from(id));
    }
    let hex = hex_as_bytes && r.container_is_hex();
    if hex {
        put_bytes(buf, r.container_bytes());
    } else {
        put_str(buf, &r.container_id());
    }
    put_str(buf, r.pod());
    match r.reservation() {
        None => buf.push(0),
        Some(key) => {
            buf.push(1);
            put_str(buf, key);
        }
    }
    put_varint(buf, r.log_index);
    put_varint(buf, r.allocated_at_ms);
    let state = match r.state() {
        AllocationState::Active => 0,
        AllocationState::Quarantined => STATE_QUARANTINED,
    };
    buf.push(if hex { state | STATE_HEX_CONTAINER } else { state });
}

/// The bits of a record's last byte.
const STATE_QUARANTINED: u8 = 1;
const STATE_HEX_CONTAINER: u8 = 2;

fn put_varint(buf: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        buf.push((v as u8) | 0x80);
        v >>= 7;
    }
    buf.push(v as u8);
}

fn put_str(buf: &mut Vec<u8>, s: &str) {
    put_bytes(buf, s.as_bytes());
}

fn put_bytes(buf: &mut Vec<u8>, b: &[u8]) {
    put_varint(buf, b.len() as u64);
    buf.extend_from_slice(b);
}

/// Reads [`encode_record`]'s layout; every read is bounds-checked, so a corrupt chunk is an
/// error, never a panic.
struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn bytes(&mut self, n: usize) -> Result<&'a [u8], SnapshotError> {
        if n > self.buf.len() {
            return Err(SnapshotError("an allocation record is cut off".to_owned()));
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }

    fn byte(&mut self) -> Result<u8, SnapshotError> {
        Ok(self.bytes(1)?[0])
    }

    fn varint(&mut self) -> Result<u64, SnapshotError> {
        let mut v: u64 = 0;
        for shift in (0..64).step_by(7) {
            let b = self.byte()?;
            let bits = u64::from(b & 0x7f);
            if shift == 63 && bits > 1 {
                break;
            }
            v |= bits << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(SnapshotError("a number in an allocation record is out of range".to_owned()))
    }

    fn name(&mut self) -> Result<NameId, SnapshotError> {
        NameId::try_from(self.varint()?).map_err(|_| SnapshotError("a name id is out of range".to_owned()))
    }

    fn str(&mut self) -> Result<&'a str, SnapshotError> {
        utf8(self.counted()?)
    }

    /// A length, then that many bytes.
    fn counted(&mut self) -> Result<&'a [u8], SnapshotError> {
        let len = usize::try_from(self.varint()?).unwrap_or(usize::MAX);
        self.bytes(len)
    }

    fn address(&mut self) -> Result<IpAddr, SnapshotError> {
        match self.byte()? {
            4 => {
                let b: [u8; 4] = self.bytes(4)?.try_into().unwrap_or([0; 4]);
                Ok(IpAddr::V4(Ipv4Addr::from(b)))
            }
            6 => {
                let b: [u8; 16] = self.bytes(16)?.try_into().unwrap_or([0; 16]);
                Ok(IpAddr::V6(Ipv6Addr::from(b)))
            }
            f => Err(SnapshotError(format!("unknown address family {f} in an allocation record"))),
        }
    }

    /// One record; its names are counted in `names` (ids outside the table are refused).
    fn record(&mut self, names: &mut Names) -> Result<(IpAddr, Record), SnapshotError> {
        let address = self.address()?;
        let ids = [self.name()?, self.name()?, self.name()?];
        for id in ids {
            if !names.count(id) {
                return Err(SnapshotError(format!("allocation {address} names id {id}, not in the name table")));
            }
        }
        let container = self.counted()?;
        let pod = self.str()?;
        let reservation = match self.byte()? {
            0 => None,
            1 => Some(self.str()?),
            b => return Err(SnapshotError(format!("allocation {address}: bad reservation marker {b}"))),
        };
        let log_index = self.varint()?;
        let allocated_at_ms = self.varint()?;
        let byte = self.byte()?;
        if byte & !(STATE_QUARANTINED | STATE_HEX_CONTAINER) != 0 {
            return Err(SnapshotError(format!("allocation {address}: unknown state {byte}")));
        }
        let state = if byte & STATE_QUARANTINED != 0 { AllocationState::Quarantined } else { AllocationState::Active };
        let record = if byte & STATE_HEX_CONTAINER != 0 {
            if container.is_empty() {
                return Err(SnapshotError(format!("allocation {address}: an empty hex container id")));
            }
            Record::new(Container::Hex(container), pod, reservation, ids, state, log_index, allocated_at_ms)
        } else {
            // Version 2 wrote hex ids as text: `new` packs them as a record keeps them.
            Record::new(utf8(container)?, pod, reservation, ids, state, log_index, allocated_at_ms)
        }
        .map_err(|_| SnapshotError(format!("allocation {address}: a string is too long")))?;
        Ok((address, record))
    }
}

fn utf8(b: &[u8]) -> Result<&str, SnapshotError> {
    std::str::from_utf8(b).map_err(|_| SnapshotError("a string in an allocation record is not UTF-8".to_owned()))
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
    names: NameTable<'a>,
    records: Records<'a>,
    leases: Values<'a, String, Lease>,
    max_tokens: &'a BTreeMap<String, u64>,
}

#[derive(Serialize, Deserialize)]
struct PoolRecord {
    spec: PoolSpec,
    cursor: IpAddr,
    cooling: Vec<Cooling>,
}

/// A snapshot as read: version 1 has `allocations`, version 2 `names` and `records`. Also
/// written (with `allocations`, as version 1) by the tests that load a version-1 snapshot.
#[derive(Serialize, Deserialize)]
pub(crate) struct Snapshot {
    version: u32,
    last_applied: u64,
    now_ms: u64,
    pools: Vec<PoolRecord>,
    vlans: Vec<VlanSpec>,
    reservations: Vec<Reservation>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    allocations: Vec<Allocation>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    names: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    records: Vec<Chunk>,
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
            names: NameTable(&self.idx.names),
            records: Records(self),
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
    /// The replicated data of this state, copied (for checks; serializing does not copy), in
    /// the current version.
    pub(crate) fn to_snapshot(&self) -> Snapshot {
        let all: Vec<_> = self.allocations.iter().collect();
        let records = all
            .chunks(CHUNK)
            .map(|part| {
                let mut chunk = Chunk::default();
                for (address, r) in part {
                    encode_record(&mut chunk.0, *address, r, true);
                }
                chunk
            })
            .collect();
        Snapshot {
            names: self.idx.names.table().map(str::to_owned).collect(),
            records,
            ..self.snapshot_without_allocations(SNAPSHOT_VERSION)
        }
    }

    /// The replicated data in version 1's shape (what states were written as before version 2).
    #[cfg(test)]
    pub(crate) fn to_snapshot_v1(&self) -> Snapshot {
        Snapshot {
            allocations: self.allocations.iter().map(|(address, r)| self.allocation(address, r)).collect(),
            ..self.snapshot_without_allocations(1)
        }
    }

    fn snapshot_without_allocations(&self, version: u32) -> Snapshot {
        Snapshot {
            version,
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
            allocations: Vec::new(),
            names: Vec::new(),
            records: Vec::new(),
            leases: self.leases.values().cloned().collect(),
            max_tokens: self.max_tokens.clone(),
        }
    }

    /// Rebuilds a state and its indexes from replicated data, refusing data that breaks the
    /// state's rules (overlapping pools, two holders of one address, ...).
    pub(crate) fn from_snapshot(s: Snapshot) -> Result<State, SnapshotError> {
        let err = |m: String| Err(SnapshotError(m));
        match s.version {
            1 if s.names.is_empty() && s.records.is_empty() => {}
            1 => return err("version 1 with version 2's records".to_owned()),
            2..=SNAPSHOT_VERSION if s.allocations.is_empty() => {}
            v @ 2..=SNAPSHOT_VERSION => return err(format!("version {v} with version 1's allocations")),
            v => return err(format!("version {v} (expected 1 to {SNAPSHOT_VERSION})")),
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
        if s.version == 1 {
            st.load_v1_allocations(s.allocations)?;
        } else {
            st.load_records(s.names, &s.records)?;
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

    /// Version 1's allocations, one at a time through the same path as an apply.
    fn load_v1_allocations(&mut self, allocations: Vec<Allocation>) -> Result<(), SnapshotError> {
        let err = |m: String| Err(SnapshotError(m));
        for a in allocations {
            match self.pools.get(&a.pool) {
                Some(p) if p.contains(a.address) && !p.is_fixed(a.address) => {}
                _ => {
                    return err(format!("allocation {} is not usable in pool {}", a.address, a.pool));
                }
            }
            if self.allocations.contains_key(&a.address) {
                return err(format!("address {} has two holders", a.address));
            }
            if self.attachment_address(&a.owner.container_id, &a.owner.interface).is_some() {
                return err(format!("attachment of {} holds two addresses", a.address));
            }
            if self.pools.get(&a.pool).is_some_and(|p| p.cooling.contains_key(&a.address)) {
                return err(format!("allocated address {} is also cooling down", a.address));
            }
            self.insert_allocation(&a);
        }
        Ok(())
    }

    /// Version 2's records: decoded straight into [`Record`]s, checked, and every index built
    /// from sorted data in bulk. The pools, reservations and cooldowns are loaded already.
    fn load_records(&mut self, table: Vec<String>, chunks: &[Chunk]) -> Result<(), SnapshotError> {
        let err = |m: String| Err(SnapshotError(m));
        let mut names = Names::from_table(table);
        let mut records: Vec<(IpAddr, Arc<Record>)> = Vec::with_capacity(chunks.len().saturating_mul(CHUNK));
        for chunk in chunks {
            let mut reader = Reader { buf: &chunk.0 };
            while !reader.buf.is_empty() {
                let (address, record) = reader.record(&mut names)?;
                if let Some((last, _)) = records.last()
                    && *last >= address
                {
                    return err(format!("allocations out of order: {address} after {last}"));
                }
                records.push((address, Arc::new(record)));
            }
        }
        names.finish().map_err(SnapshotError)?;

        // Each address in a pool, usable, not cooling; runs of consecutive addresses of one
        // pool are occupied at once.
        let mut i = 0;
        while i < records.len() {
            let address = records[i].0;
            let Some((_, name)) = self.idx.pool_by_first.range(..=address).next_back() else {
                return err(format!("allocation {address} is in no pool"));
            };
            let Some(pool) = self.pools.get_mut(name).filter(|p| p.contains(address)) else {
                return err(format!("allocation {address} is in no pool"));
            };
            let mut run_start = to_u128(address);
            let mut run_end = run_start;
            while let Some((a, _)) = records.get(i).filter(|(a, _)| pool.contains(*a)) {
                let a = *a;
                if pool.is_fixed(a) {
                    return err(format!("allocation {a} is not usable in pool {}", pool.name()));
                }
                if pool.cooling.contains_key(&a) {
                    return err(format!("allocated address {a} is also cooling down"));
                }
                let n = to_u128(a);
                if run_end.checked_add(1) != Some(n) && n != run_start {
                    pool.occupy_range(run_start, run_end);
                    run_start = n;
                }
                run_end = n;
                pool.allocated += 1;
                i += 1;
            }
            pool.occupy_range(run_start, run_end);
        }

        // One address per attachment: sort by (hash, address); equal hashes are compared.
        let mut by_attachment: Vec<(AttachmentHash, IpAddr, usize)> = records
            .iter()
            .enumerate()
            .map(|(i, (a, r))| (attachment_hash(&r.container_id(), names.get(r.interface)), *a, i))
            .collect();
        by_attachment.sort_unstable();
        for (k, x) in by_attachment.iter().enumerate() {
            for y in by_attachment[k + 1..].iter().take_while(|y| y.0 == x.0) {
                let (a, b) = (&records[x.2].1, &records[y.2].1);
                if a.container_id() == b.container_id() && a.interface == b.interface {
                    return err(format!("attachment of {} holds two addresses", y.1));
                }
            }
        }
        self.idx.by_attachment = by_attachment.into_iter().map(|(h, a, _)| (h, a)).collect();

        // Per node, its addresses (in address order already).
        let mut per_node: BTreeMap<NameId, Vec<IpAddr>> = BTreeMap::new();
        for (a, r) in &records {
            per_node.entry(r.node).or_default().push(*a);
        }
        self.idx.by_node = per_node
            .into_iter()
            .map(|(id, addresses)| (names.get(id).to_owned(), addresses.into_iter().collect::<AddrSet>()))
            .collect();
        self.idx.names = names;
        self.allocations = records.into_iter().collect();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use hc_api::types::{AttachmentId, PoolSpec, ReleaseTarget, Reservation, VlanSpec};

    use super::{CHUNK, SNAPSHOT_VERSION, encode_record};
    use crate::command::{Command, Request};
    use crate::record::Record;
    use crate::state::{ApplyContext, State};
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
            // Byte for byte, name ids included (the simulation compares replicas' snapshots).
            assert_eq!(rmp_serde::to_vec_named(&h.state).unwrap(), rmp_serde::to_vec_named(&other.state).unwrap());
        }
    }

    /// The error loading `busy()`'s state as a version-1 JSON snapshot after `edit`.
    fn tampered(edit: impl FnOnce(&mut serde_json::Value)) -> String {
        let mut v = serde_json::to_value(busy().state.to_snapshot_v1()).unwrap();
        edit(&mut v);
        let json = v.to_string();
        serde_json::from_str::<State>(&json).unwrap_err().to_string()
    }

    #[test]
    fn a_version_1_snapshot_loads() {
        let h = busy();
        let v1 = h.state.to_snapshot_v1();
        assert_eq!(v1.version, 1);
        let bytes = rmp_serde::to_vec_named(&v1).unwrap();
        let back: State = rmp_serde::from_slice(&bytes).unwrap();
        assert_eq!(back, h.state);
        let back: State = serde_json::from_str(&serde_json::to_string(&v1).unwrap()).unwrap();
        assert_eq!(back, h.state);
        // And it is written back in the current version.
        let now = serde_json::to_value(&back).unwrap();
        assert_eq!(now["version"], SNAPSHOT_VERSION);
        assert!(now.get("allocations").is_none());
    }

    #[test]
    fn hex_container_ids_are_written_as_bytes_and_version_2_text_still_loads() {
        let mut h = Harness::new();
        h.create(pool("p", "10.0.0.0/24"));
        let sandbox = |i: u32| format!("{i:08x}").repeat(8);
        for i in 0..20 {
            let id = if i % 2 == 0 { sandbox(i) } else { format!("ctr-{i}") };
            h.alloc(None, req_in(&id, "n1", "p"));
        }
        let v3 = serde_json::to_value(&h.state).unwrap();
        let chunk3: Vec<u8> = serde_json::from_value(v3["records"][0].clone()).unwrap();
        let mut chunk2 = Vec::new();
        for (address, r) in h.state.allocations.iter() {
            encode_record(&mut chunk2, address, r, false);
        }
        assert_eq!(chunk2.len() - chunk3.len(), 10 * 32, "ten 64-digit ids, 32 bytes saved each");
        let mut v2 = v3.clone();
        v2["version"] = 2.into();
        v2["records"] = serde_json::to_value(vec![chunk2]).unwrap();
        for v in [v3, v2] {
            let back: State = serde_json::from_value(v).unwrap();
            assert_eq!(back, h.state);
            assert!(back.attachment_address(&sandbox(4), "eth0").is_some());
        }
    }

    /// A version-1 snapshot of `busy()` written by the code before version 2 (MessagePack,
    /// named fields), so this test keeps checking the real old bytes, not this code's idea of
    /// them.
    #[test]
    fn a_version_1_snapshot_written_by_the_old_code_loads() {
        let bytes = include_bytes!("../tests/data/snapshot-v1.msgpack");
        let back: State = rmp_serde::from_slice(bytes).unwrap();
        let h = busy();
        assert_eq!(back, h.state);
        back.check_invariants().unwrap();
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

    /// `busy()`'s snapshot as version 2 with its records replaced by those of `records`:
    /// (address, container id, interface) each, the rest as in the first record.
    fn v2_with(records: &[(&str, &str, &str)]) -> Result<State, String> {
        let h = busy();
        let first = h.state.allocations.iter().next().unwrap().1.clone();
        let mut names = h.state.idx.names.clone();
        let mut buf = Vec::new();
        for (address, container, interface) in records {
            let [_, namespace, node] = [first.interface, first.namespace, first.node];
            let iface = names.acquire(interface);
            let r = Record::new(*container, "pod", None, [iface, namespace, node], first.state(), 1, 2).unwrap();
            encode_record(&mut buf, ip(address), &r, false);
        }
        let mut v = serde_json::to_value(&h.state).unwrap();
        v["version"] = 2.into();
        v["names"] = serde_json::to_value(names.table().collect::<Vec<_>>()).unwrap();
        v["records"] = serde_json::to_value(vec![buf]).unwrap();
        serde_json::from_value::<State>(v).map_err(|e| e.to_string())
    }

    #[test]
    fn a_version_2_or_3_snapshot_is_checked_like_version_1() {
        v2_with(&[("10.0.0.20", "x", "eth0"), ("10.0.0.21", "y", "eth0"), ("10.0.0.22", "x", "eth1")]).unwrap();
        let e = v2_with(&[("10.0.0.20", "x", "eth0"), ("10.0.0.20", "y", "eth0")]).unwrap_err();
        assert!(e.contains("out of order"), "{e}");
        let e = v2_with(&[("10.0.0.21", "x", "eth0"), ("10.0.0.20", "y", "eth0")]).unwrap_err();
        assert!(e.contains("out of order"), "{e}");
        let e = v2_with(&[("10.0.0.20", "x", "eth0"), ("fd00::20", "x", "eth0")]).unwrap_err();
        assert!(e.contains("two addresses"), "{e}");
        let e = v2_with(&[("10.0.0.0", "x", "eth0")]).unwrap_err();
        assert!(e.contains("not usable"), "{e}");
        let e = v2_with(&[("10.0.0.3", "x", "eth0")]).unwrap_err();
        assert!(e.contains("cooling"), "{e}");
        let e = v2_with(&[("10.1.0.3", "x", "eth0")]).unwrap_err();
        assert!(e.contains("no pool"), "{e}");
    }

    #[test]
    fn a_corrupt_version_3_snapshot_is_an_error_not_a_panic() {
        let h = busy();
        let v = serde_json::to_value(&h.state).unwrap();
        let chunk: Vec<u8> = serde_json::from_value(v["records"][0].clone()).unwrap();
        // Every truncation of the chunk, and every single byte set to 0xff.
        for cut in 0..chunk.len() {
            let mut t = v.clone();
            t["records"][0] = serde_json::to_value(&chunk[..cut]).unwrap();
            let _ = serde_json::from_value::<State>(t);
        }
        for i in 0..chunk.len() {
            let mut bad = chunk.clone();
            bad[i] = 0xff;
            let mut t = v.clone();
            t["records"][0] = serde_json::to_value(&bad).unwrap();
            let _ = serde_json::from_value::<State>(t);
        }
        let mut t = v.clone();
        t["names"] = serde_json::json!([]);
        let e = serde_json::from_value::<State>(t).unwrap_err().to_string();
        assert!(e.contains("name table"), "{e}");
        let mut t = v.clone();
        t["records"][0] = serde_json::to_value(&chunk[..chunk.len() - 1]).unwrap();
        let e = serde_json::from_value::<State>(t).unwrap_err().to_string();
        assert!(e.contains("cut off"), "{e}");
    }

    #[test]
    fn a_large_state_is_written_in_chunks_and_restored_equal() {
        let mut h = Harness::new();
        h.create(pool("big", "10.0.0.0/16"));
        h.create(pool("big6", "fd01::/64"));
        for i in 0..(2 * CHUNK) {
            h.state
                .apply(
                    ApplyContext { log_index: 100 + i as u64 },
                    &Request {
                        time_ms: h.now,
                        command: Command::Allocate { fence: None, request: req_in(&format!("c{i}"), "n1", "big") },
                    },
                )
                .unwrap();
        }
        for i in 0..10 {
            h.alloc(None, req_in(&format!("d{i}"), &format!("n{i}"), "big6"));
        }
        // Fragment it: release every third.
        for i in (0..2 * CHUNK).step_by(3) {
            let target = ReleaseTarget::Owner(AttachmentId { container_id: format!("c{i}"), interface: "eth0".into() });
            let request = Request { time_ms: h.now, command: Command::Release { fence: None, target } };
            h.index += 1;
            h.state.apply(ApplyContext { log_index: h.index + 100_000 }, &request).unwrap();
        }
        let v = serde_json::to_value(&h.state).unwrap();
        let n = h.state.allocation_count() as usize;
        assert!(n > CHUNK, "{n}");
        assert_eq!(v["records"].as_array().unwrap().len(), n.div_ceil(CHUNK));
        let bytes = rmp_serde::to_vec_named(&h.state).unwrap();
        let back: State = rmp_serde::from_slice(&bytes).unwrap();
        assert_eq!(back, h.state);
        back.check_invariants().unwrap();
    }
}
