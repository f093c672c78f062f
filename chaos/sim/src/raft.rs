//! openraft wired to memory: [`TypeConfig`] (the allocator's shape, on a runtime whose RNG is
//! seeded), [`MemLog`] (log, vote, committed) and [`MemStateMachine`] (the real
//! [`State`] plus its latest snapshot).
//!
//! A replica's [`Disk`] is what survives a simulated crash: the log store's data and the latest
//! snapshot. Every write to it is "synced" at once (the simulator does not model torn or
//! unsynced writes; RocksDB's durability is tested in `hc-allocator`). The applied [`State`] is
//! volatile, as in the real allocator: after a restart the replica starts from its snapshot and
//! openraft re-applies the log.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::io;
use std::ops::RangeBounds;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use futures::TryStreamExt;
use hc_allocator_state::{ApplyContext, Output, State};
use openraft::entry::RaftEntry;
use openraft::storage::RaftSnapshotBuilder;
use openraft::storage::{EntryResponder, IOFlushed, LogState, RaftLogReader, RaftLogStorage, RaftStateMachine};
use openraft::type_config::alias;
use openraft::{EntryPayload, OptionalSend};

pub use crate::runtime::SimRuntime;

openraft::declare_raft_types!(
    /// The allocator's Raft shape (`hc-allocator`'s `raft/type_config.rs`): entries carry
    /// [`hc_allocator_state::Request`]s, applying one returns a [`hc_allocator_state::Response`].
    pub TypeConfig:
        D = hc_allocator_state::Request,
        R = hc_allocator_state::Response,
        NodeId = u64,
        Node = openraft::impls::BasicNode,
        AsyncRuntime = SimRuntime,
);

pub type Raft = openraft::Raft<TypeConfig, MemStateMachine>;
pub type LogId = alias::LogIdOf<TypeConfig>;
pub type Vote = alias::VoteOf<TypeConfig>;
pub type Entry = alias::EntryOf<TypeConfig>;
pub type StoredMembership = alias::StoredMembershipOf<TypeConfig>;
pub type SnapshotMeta = alias::SnapshotMetaOf<TypeConfig>;
/// Snapshot data: the state serialized with MessagePack, as the real snapshot file is.
pub type SnapshotData = Vec<u8>;
pub type Snapshot = alias::SnapshotOf<TypeConfig, SnapshotData>;

/// What a replica keeps across a crash.
#[derive(Debug, Default, Clone)]
pub struct Disk {
    pub log: Arc<Mutex<LogData>>,
    pub snapshot: Arc<Mutex<Option<(SnapshotMeta, SnapshotData)>>>,
    /// Snapshots received from a leader and installed, over every incarnation.
    pub installs: Arc<AtomicU64>,
    /// The process that may write: a crashed instance's tasks may still be winding down, and a
    /// dead process must not write to the disk its successor uses.
    incarnation: Arc<AtomicU64>,
}

impl Disk {
    /// Hands the disk to a new process (a start), fencing off the previous one.
    pub fn new_incarnation(&self) -> u64 {
        self.incarnation.fetch_add(1, Ordering::SeqCst) + 1
    }

    fn writer(&self, incarnation: u64) -> Writer {
        Writer { current: self.incarnation.clone(), mine: incarnation }
    }
}

/// Checks that the process writing is the disk's current one.
#[derive(Debug, Clone)]
struct Writer {
    current: Arc<AtomicU64>,
    mine: u64,
}

impl Writer {
    fn check(&self) -> io::Result<()> {
        if self.current.load(Ordering::SeqCst) == self.mine {
            Ok(())
        } else {
            Err(io::Error::other("this process crashed: its disk belongs to its successor"))
        }
    }
}

#[derive(Debug, Default)]
pub struct LogData {
    pub vote: Option<Vote>,
    pub committed: Option<LogId>,
    pub last_purged: Option<LogId>,
    pub entries: BTreeMap<u64, Entry>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The log store handed to openraft (and, cloned, its log readers).
#[derive(Debug, Clone)]
pub struct MemLog {
    data: Arc<Mutex<LogData>>,
    writer: Writer,
}

impl MemLog {
    pub fn new(disk: &Disk, incarnation: u64) -> Self {
        MemLog { data: disk.log.clone(), writer: disk.writer(incarnation) }
    }
}

impl RaftLogReader<TypeConfig> for MemLog {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, io::Error> {
        Ok(lock(&self.data).entries.range(range).map(|(_, e)| e.clone()).collect())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, io::Error> {
        Ok(lock(&self.data).vote)
    }
}

impl RaftLogStorage<TypeConfig> for MemLog {
    type LogReader = MemLog;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, io::Error> {
        let d = lock(&self.data);
        let last = d.entries.values().next_back().map(|e| e.log_id()).or(d.last_purged);
        Ok(LogState { last_purged_log_id: d.last_purged, last_log_id: last })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), io::Error> {
        self.writer.check()?;
        lock(&self.data).vote = Some(*vote);
        Ok(())
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), io::Error> {
        self.writer.check()?;
        lock(&self.data).committed = committed;
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, io::Error> {
        Ok(lock(&self.data).committed)
    }

    async fn append<I>(&mut self, entries: I, callback: IOFlushed<TypeConfig>) -> Result<(), io::Error>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        self.writer.check()?;
        {
            let mut d = lock(&self.data);
            for entry in entries {
                d.entries.insert(entry.index(), entry);
            }
        }
        // Durable as soon as written: see the module docs.
        callback.io_completed(Ok(()));
        Ok(())
    }

    async fn truncate_after(&mut self, last_log_id: Option<LogId>) -> Result<(), io::Error> {
        self.writer.check()?;
        let from = last_log_id.map_or(0, |id| id.index + 1);
        let mut d = lock(&self.data);
        let _ = d.entries.split_off(&from);
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), io::Error> {
        self.writer.check()?;
        let mut d = lock(&self.data);
        d.last_purged = Some(log_id);
        d.entries = d.entries.split_off(&(log_id.index + 1));
        Ok(())
    }
}

/// The applied state (volatile) and the latest snapshot (on the [`Disk`]).
pub struct MemStateMachine {
    /// Read by the node's request handlers (lease keeper, final listing); written only here.
    state: Arc<Mutex<State>>,
    last_applied: Option<LogId>,
    last_membership: StoredMembership,
    snapshot: Arc<Mutex<Option<(SnapshotMeta, SnapshotData)>>>,
    writer: Writer,
    installs: Arc<AtomicU64>,
}

impl MemStateMachine {
    /// Starts from the disk's snapshot, as a restarted replica does.
    pub fn open(disk: &Disk, incarnation: u64) -> io::Result<Self> {
        let loaded = lock(&disk.snapshot).clone();
        let (last_applied, last_membership, state) = match loaded {
            Some((meta, data)) => (meta.last_log_id, meta.last_membership, decode(&data)?),
            None => (None, StoredMembership::default(), State::default()),
        };
        Ok(MemStateMachine {
            state: Arc::new(Mutex::new(state)),
            last_applied,
            last_membership,
            snapshot: disk.snapshot.clone(),
            writer: disk.writer(incarnation),
            installs: disk.installs.clone(),
        })
    }

    pub fn state(&self) -> Arc<Mutex<State>> {
        self.state.clone()
    }

    fn builder(&self) -> SnapshotBuilder {
        SnapshotBuilder {
            meta: SnapshotMeta { last_log_id: self.last_applied, last_membership: self.last_membership.clone() },
            state: lock(&self.state).clone(),
            snapshot: self.snapshot.clone(),
            writer: self.writer.clone(),
        }
    }
}

fn encode(state: &State) -> io::Result<SnapshotData> {
    rmp_serde::to_vec_named(state).map_err(io::Error::other)
}

fn decode(data: &[u8]) -> io::Result<State> {
    rmp_serde::from_slice(data).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

impl RaftStateMachine<TypeConfig> for MemStateMachine {
    type SnapshotData = SnapshotData;
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), io::Error> {
        Ok((self.last_applied, self.last_membership.clone()))
    }

    async fn apply<Strm>(&mut self, mut entries: Strm) -> Result<(), io::Error>
    where
        Strm: futures::Stream<Item = Result<EntryResponder<TypeConfig>, io::Error>> + Unpin + OptionalSend,
    {
        while let Some((entry, responder)) = entries.try_next().await? {
            let log_id = entry.log_id;
            let ctx = ApplyContext { log_index: log_id.index };
            let response = {
                let mut state = lock(&self.state);
                match entry.payload {
                    EntryPayload::Normal(request) => state.apply(ctx, &request),
                    EntryPayload::Blank => {
                        state.mark_applied(ctx);
                        Ok(Output::Done)
                    }
                    EntryPayload::Membership(membership) => {
                        state.mark_applied(ctx);
                        self.last_membership = StoredMembership::new(Some(log_id), membership);
                        Ok(Output::Done)
                    }
                }
            };
            self.last_applied = Some(log_id);
            if let Some(responder) = responder {
                responder.send(response);
            }
        }
        Ok(())
    }

    async fn try_create_snapshot_builder(&mut self, _force: bool) -> Option<Self::SnapshotBuilder> {
        Some(self.builder())
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.builder()
    }

    async fn install_snapshot(&mut self, meta: &SnapshotMeta, snapshot: SnapshotData) -> Result<(), io::Error> {
        self.writer.check()?;
        let state = decode(&snapshot)?;
        *lock(&self.state) = state;
        self.last_applied = meta.last_log_id;
        self.last_membership = meta.last_membership.clone();
        *lock(&self.snapshot) = Some((meta.clone(), snapshot));
        self.installs.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, io::Error> {
        Ok(lock(&self.snapshot).clone().map(|(meta, snapshot)| Snapshot { meta, snapshot }))
    }
}

/// Builds one snapshot from a copy of the state taken when openraft asked for the builder.
pub struct SnapshotBuilder {
    meta: SnapshotMeta,
    state: State,
    snapshot: Arc<Mutex<Option<(SnapshotMeta, SnapshotData)>>>,
    writer: Writer,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    type SnapshotData = SnapshotData;

    async fn build_snapshot(&mut self) -> Result<Snapshot, io::Error> {
        self.writer.check()?;
        let data = encode(&self.state)?;
        let mut current = lock(&self.snapshot);
        // Keep a newer snapshot installed meanwhile (as the real snapshot store does).
        let newer = current.as_ref().is_some_and(|(m, _)| m.last_log_id > self.meta.last_log_id);
        if !newer {
            *current = Some((self.meta.clone(), data.clone()));
        }
        Ok(Snapshot { meta: self.meta.clone(), snapshot: data })
    }
}

/// The state as bytes, to compare replicas.
pub fn state_bytes(state: &State) -> Vec<u8> {
    encode(state).unwrap_or_default()
}
