//! [`StateMachineStore`]: the applied [`State`] in memory, persisted only as snapshots.
//!
//! Applying does not write to disk. After a crash the replica loads the latest snapshot and
//! openraft re-applies the log from there (up to the saved `committed`, then whatever the leader
//! commits), so a restart replays only the log tail after the snapshot.

use std::fs::File;
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, Instant};

use futures::TryStreamExt;
use hc_allocator_state::{ApplyContext, Output, State};
use openraft::storage::{EntryResponder, RaftSnapshotBuilder, RaftStateMachine};
use openraft::{EntryPayload, OptionalSend};
use tokio::task::JoinHandle;

use crate::raft::snapshot_store::{SnapshotFile, SnapshotStore};
use crate::raft::type_config::{LogId, Snapshot, SnapshotMeta, StoredMembership, TypeConfig};
use crate::raft::{join_blocking, run_blocking};

pub struct StateMachineStore {
    /// The applied state. Written only here (`apply`, `install_snapshot`), i.e. by openraft's
    /// state machine worker; read by the REST and gRPC servers through [`Self::state`]. Each
    /// write holds the lock for one entry, so readers see whole entries applied, never half.
    state: Arc<RwLock<State>>,
    last_applied: Option<LogId>,
    last_membership: StoredMembership,
    snapshots: Arc<SnapshotStore>,
    /// Log index of the latest snapshot started, installed or loaded (0: none). A build that
    /// then fails still counts: openraft's own policy also counts from the last attempt.
    snapshot_index: u64,
    /// See [`Self::set_snapshot_log_percent`].
    snapshot_log_percent: u64,
    /// Set by an operator's request for a snapshot now: the next one is not deferred.
    snapshot_now: Arc<AtomicBool>,
}

impl StateMachineStore {
    /// Wraps the state loaded from the latest snapshot (or an empty one).
    pub(crate) fn new(snapshots: SnapshotStore, loaded: Option<(SnapshotMeta, State)>) -> Self {
        let (last_applied, last_membership, state) = match loaded {
            Some((meta, state)) => (meta.last_log_id, meta.last_membership, state),
            None => (None, StoredMembership::default(), State::default()),
        };
        Self {
            state: Arc::new(RwLock::new(state)),
            snapshot_index: last_applied.map_or(0, |l| l.index),
            last_applied,
            last_membership,
            snapshots: Arc::new(snapshots),
            snapshot_log_percent: 0,
            snapshot_now: Arc::default(),
        }
    }

    /// The flag that makes the next snapshot openraft asks for (e.g. through
    /// `raft.trigger().snapshot()`) be built at once, however short the log since the last one.
    pub fn snapshot_now_flag(&self) -> Arc<AtomicBool> {
        self.snapshot_now.clone()
    }

    /// Defers the snapshots openraft's policy asks for (every `snapshot_every` entries) until the
    /// entries applied since the last snapshot reach `percent` % of the allocations held. A
    /// snapshot serializes the whole state, so with a fixed interval its cost per entry grows
    /// with the state (at a million allocations, 0.6 s of CPU on every replica every 20,000
    /// entries); with a proportional one it stays constant, and a restart replays at most that
    /// share of the state's size in log entries. 0 defers nothing.
    pub fn set_snapshot_log_percent(&mut self, percent: u64) {
        self.snapshot_log_percent = percent;
    }

    /// Whether a snapshot asked for now should wait (see [`Self::set_snapshot_log_percent`]).
    fn defer_snapshot(&self) -> bool {
        if self.snapshot_log_percent == 0 {
            return false;
        }
        let since = self.applied_index().saturating_sub(self.snapshot_index);
        let Ok(state) = self.state.read() else {
            return false; // poisoned: `builder` reports it
        };
        let wanted = state.allocation_count().saturating_mul(self.snapshot_log_percent) / 100;
        drop(state);
        if since < wanted {
            tracing::debug!(since, wanted, "snapshot deferred: the log since the last one is short next to the state");
            return true;
        }
        false
    }

    /// The applied state, shared with the servers that answer reads. Take the read lock briefly:
    /// applying waits for it. A poisoned lock means applying an entry panicked; the replica's
    /// Raft has then stopped and the state must not be served.
    pub fn state(&self) -> Arc<RwLock<State>> {
        self.state.clone()
    }

    pub(crate) fn snapshot_store(&self) -> Arc<SnapshotStore> {
        self.snapshots.clone()
    }

    fn applied_index(&self) -> u64 {
        self.last_applied.map_or(0, |l| l.index)
    }

    /// Starts a snapshot of the state as applied now. A blocking thread copies the state, and
    /// applying waits for that copy, so the snapshot is exactly the state at `last_applied`;
    /// the same thread then serializes and writes it beside further applies, drops the copy and
    /// hands its memory back (see [`crate::memory`]: it must be the thread that made the copy).
    /// The copy shares the allocation records and leaves out the indexes: a deep copy would
    /// double the replica's memory while the snapshot is written.
    ///
    /// openraft builds every builder it is given; one dropped unbuilt would still write its
    /// snapshot, which is harmless: it holds applied, hence committed, entries only.
    async fn builder(&mut self) -> SnapshotBuilder {
        self.snapshot_index = self.applied_index();
        let meta = SnapshotMeta { last_log_id: self.last_applied, last_membership: self.last_membership.clone() };
        let (copied, copy_taken) = tokio::sync::oneshot::channel();
        let (state, snapshots, task_meta) = (self.state.clone(), self.snapshots.clone(), meta.clone());
        let task = tokio::task::spawn_blocking(move || {
            let copy = state.read().map(|s| s.replicated()).ok();
            let _ = copied.send(());
            let copy = copy.ok_or_else(poisoned)?;
            let started = Instant::now();
            let file = snapshots.save_built(&task_meta, &copy)?;
            let took = started.elapsed();
            drop(copy);
            crate::memory::release_freed();
            Ok((file, took))
        });
        // Err only if the copy panicked; `build_snapshot` then reports the panic.
        let _ = copy_taken.await;
        SnapshotBuilder { meta, task: Some(task) }
    }
}

impl RaftStateMachine<TypeConfig> for StateMachineStore {
    type SnapshotData = SnapshotFile;
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
            let started = Instant::now();
            let mut state = self.state.write().map_err(|_| poisoned())?;
            let response = match entry.payload {
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
            };
            drop(state);
            metrics::histogram!(crate::metrics::APPLY_SECONDS).record(started.elapsed());
            self.last_applied = Some(log_id);
            metrics::counter!("hc_allocator_raft_applied_entries_total").increment(1);
            if let Some(responder) = responder {
                responder.send(response);
            }
        }
        Ok(())
    }

    async fn try_create_snapshot_builder(&mut self, force: bool) -> Option<Self::SnapshotBuilder> {
        let asked = self.snapshot_now.swap(false, Ordering::SeqCst);
        if !force && !asked && self.defer_snapshot() {
            return None;
        }
        Some(self.builder().await)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.builder().await
    }

    async fn install_snapshot(&mut self, meta: &SnapshotMeta, snapshot: SnapshotFile) -> Result<(), io::Error> {
        let snapshots = self.snapshots.clone();
        let owned_meta = meta.clone();
        let state = run_blocking(move || snapshots.install(&owned_meta, snapshot)).await?;

        // The whole state is replaced, so a lock poisoned by an earlier panic is healed here.
        let mut guard = self.state.write().unwrap_or_else(PoisonError::into_inner);
        *guard = state;
        drop(guard);
        self.state.clear_poison();

        self.last_applied = meta.last_log_id;
        self.snapshot_index = self.applied_index();
        self.last_membership = meta.last_membership.clone();
        tracing::info!(snapshot = %meta, "installed snapshot");
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, io::Error> {
        let snapshots = self.snapshots.clone();
        let current = run_blocking(move || snapshots.current()).await?;
        Ok(current.map(|(meta, file)| Snapshot { meta, snapshot: SnapshotFile::new(file) }))
    }
}

/// One snapshot, being written by the blocking task [`StateMachineStore::builder`] started.
pub struct SnapshotBuilder {
    meta: SnapshotMeta,
    /// The written snapshot and the time serializing and writing it took; `None` once built.
    task: Option<JoinHandle<io::Result<(File, Duration)>>>,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    type SnapshotData = SnapshotFile;

    async fn build_snapshot(&mut self) -> Result<Snapshot, io::Error> {
        let task = self.task.take().ok_or_else(|| io::Error::other("this snapshot was already built"))?;
        let (file, took) = join_blocking(task).await?;
        metrics::histogram!("hc_allocator_raft_snapshot_build_seconds").record(took);
        let bytes = file.metadata().map(|m| m.len()).unwrap_or(0);
        metrics::gauge!(crate::metrics::SNAPSHOT_BYTES).set(bytes as f64);
        tracing::info!(snapshot = %self.meta, bytes, "built snapshot");
        Ok(Snapshot { meta: self.meta.clone(), snapshot: SnapshotFile::new(file) })
    }
}

fn poisoned() -> io::Error {
    io::Error::other("state lock poisoned: applying an entry panicked")
}
