//! The allocator's Raft layer: openraft wired to RocksDB storage and gRPC transport.
//!
//! Layout:
//! - `type_config.rs`: [`TypeConfig`], the [`Raft`] handle type, [`NodeInfo`];
//! - `log_store.rs`: [`LogStore`], the log and vote in RocksDB; `log_flusher.rs`: its group
//!   WAL sync; `database.rs`: the shared RocksDB handle, which reports when it is closed;
//! - `state_machine.rs`: [`StateMachineStore`], the applied [`hc_allocator_state::State`];
//! - `snapshot_store.rs`: the latest snapshot as a file ([`SnapshotFile`]);
//! - `network.rs`: [`NetworkFactory`], the gRPC client side;
//! - `service.rs`: [`RaftService`], the gRPC server side;
//! - `codec.rs`: the MessagePack encoding of everything stored or sent.
//!
//! On disk, under a replica's data directory: `raft/` is the RocksDB database (log, vote, log
//! pointers) and `snapshot/` holds the latest snapshot.
//!
//! Startup, in the caller:
//! ```ignore
//! let (log_store, state_machine) = raft::open_storage(&data_dir).await?;
//! let state = state_machine.state(); // for the read paths
//! let config = Arc::new(raft::raft_config(100, 300, 10_000)?);
//! let network = raft::NetworkFactory::new(node_id);
//! let raft = raft::Raft::new(node_id, config, network, log_store, state_machine).await?;
//! // add raft::raft_service(raft.clone()) to the replica's tonic server
//! ```
//! To reopen the same directory in the same process, take `log_store.closed()` before handing
//! the store to Raft, and wait on it after `raft.shutdown()`: RocksDB's lock is released only
//! once openraft's tasks have dropped their handles.

mod codec;
mod database;
mod log_flusher;
mod log_store;
mod network;
mod service;
mod snapshot_store;
mod state_machine;
mod type_config;

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rocksdb::{BlockBasedOptions, Cache, ColumnFamilyDescriptor, DB, DBCompressionType, Options};

use self::database::Database;

pub use self::database::DatabaseClosed;
pub use self::log_store::{LogReader, LogStore, StorageMemory};
pub use self::network::{NetworkFactory, PeerClient};
pub use self::service::{RaftService, raft_service};
pub use self::snapshot_store::{SnapshotFile, SnapshotStore};
pub use self::state_machine::{SnapshotBuilder, StateMachineStore};
pub use self::type_config::{Entry, LogId, NodeInfo, Raft, Snapshot, SnapshotMeta, StoredMembership, TypeConfig, Vote};

/// Subdirectory of the data directory holding the RocksDB database.
pub const DB_DIR: &str = "raft";
/// Subdirectory of the data directory holding the latest snapshot.
pub const SNAPSHOT_DIR: &str = "snapshot";

/// Why the Raft storage could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenStorageError {
    #[error("cannot open the Raft log database at {path}: {source}")]
    Database {
        path: PathBuf,
        #[source]
        source: rocksdb::Error,
    },
    #[error("cannot open the snapshot store at {path}: {source}")]
    Snapshot {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot start the Raft log store: {source}")]
    LogStore {
        #[source]
        source: io::Error,
    },
    #[error("the runtime shut down while the Raft storage was being opened")]
    Cancelled,
}

/// Opens (creating if needed) a replica's Raft storage under `data_dir`: the RocksDB database in
/// `data_dir/raft` and the snapshot in `data_dir/snapshot`. The state machine starts from the
/// latest snapshot; openraft re-applies the log after it when the [`Raft`] is created.
pub async fn open_storage(data_dir: &Path) -> Result<(LogStore, StateMachineStore), OpenStorageError> {
    let data_dir = data_dir.to_owned();
    // Opening RocksDB and decoding a snapshot (up to ~100 MB) block: keep them off the runtime.
    let opened = tokio::task::spawn_blocking(move || open_storage_blocking(&data_dir)).await;
    match opened {
        Ok(result) => result,
        Err(join) if join.is_panic() => std::panic::resume_unwind(join.into_panic()),
        Err(_) => Err(OpenStorageError::Cancelled),
    }
}

fn open_storage_blocking(data_dir: &Path) -> Result<(LogStore, StateMachineStore), OpenStorageError> {
    let db_path = data_dir.join(DB_DIR);
    let db = open_db(&db_path).map_err(|source| OpenStorageError::Database { path: db_path.clone(), source })?;
    let db = Arc::new(Database::new(db));

    let snapshot_path = data_dir.join(SNAPSHOT_DIR);
    let (snapshots, loaded) = SnapshotStore::open(&snapshot_path)
        .map_err(|source| OpenStorageError::Snapshot { path: snapshot_path.clone(), source })?;

    let log_store = LogStore::new(db).map_err(|source| OpenStorageError::LogStore { source })?;
    Ok((log_store, StateMachineStore::new(snapshots, loaded)))
}

/// Memtable size of each column family (see `open_db`).
const WRITE_BUFFER_BYTES: usize = 8 << 20;
/// The block cache both column families share (see `open_db`).
const BLOCK_CACHE_BYTES: usize = 4 << 20;

fn open_db(path: &Path) -> Result<DB, rocksdb::Error> {
    let mut opts = Options::default();
    opts.create_if_missing(true);
    opts.create_missing_column_families(true);
    // RocksDB is built without compression libraries here; say so rather than rely on defaults.
    opts.set_compression_type(DBCompressionType::None);
    let cache = Cache::new_lru_cache(BLOCK_CACHE_BYTES);
    let cf = |name: &str| {
        let mut cf_opts = Options::default();
        cf_opts.set_compression_type(DBCompressionType::None);
        // Memtables hold every appended entry until they are flushed, purged entries included;
        // RocksDB's default (64 MiB, two of them per column family) is far more memory than a
        // log that is purged after every snapshot needs. Durability is the WAL's, unchanged.
        cf_opts.set_write_buffer_size(WRITE_BUFFER_BYTES);
        cf_opts.set_max_write_buffer_number(2);
        // Log reads bypass the block cache (`log_store::read_entries`); the metadata is a few
        // keys. RocksDB's default, a 32 MiB cache per column family, could fill with entries
        // read back from flushed files and keep them resident (not measured directly).
        let mut table = BlockBasedOptions::default();
        table.set_block_cache(&cache);
        cf_opts.set_block_based_table_factory(&table);
        ColumnFamilyDescriptor::new(name, cf_opts)
    };
    DB::open_cf_descriptors(&opts, path, [cf(log_store::CF_LOGS), cf(log_store::CF_META)])
}

/// The Raft settings for an allocator replica: heartbeat every `heartbeat_ms`, elections after
/// `election_timeout_ms` to 1.5× that without a leader, and a snapshot every
/// `snapshot_logs_since_last` applied entries (the log before it is then purged, keeping a short
/// tail so a follower that is just behind catches up from the log rather than a snapshot).
pub fn raft_config(
    heartbeat_ms: u64,
    election_timeout_ms: u64,
    snapshot_logs_since_last: u64,
) -> Result<openraft::Config, openraft::ConfigError> {
    openraft::Config {
        cluster_name: "hc-allocator".to_owned(),
        heartbeat_interval: heartbeat_ms,
        election_timeout_min: election_timeout_ms,
        // A narrow range: openraft's followers refuse to vote for `election_timeout_max` after the
        // last heartbeat (the leader lease), so a first candidate, whose timer fires before that,
        // is always refused and the election succeeds one timeout later. Failover therefore
        // takes two sampled timeouts: 2–3× `election_timeout_ms` with a 1.5× upper bound, where
        // a 2× bound gives 2–4×. Split votes stay rare: the survivors' timers still differ by up
        // to half a timeout, far more than a vote's round trip.
        election_timeout_max: election_timeout_max(election_timeout_ms),
        // Pre-Vote keeps a replica that was cut off from bumping the term and deposing a
        // healthy leader when it comes back.
        enable_pre_vote: Some(true),
        // Bounds each snapshot chunk and the receiver's install (see `network.rs`); a 100 MB
        // snapshot takes seconds to install.
        install_snapshot_timeout: 30_000,
        snapshot_max_chunk_size: 1024 * 1024,
        snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(snapshot_logs_since_last),
        max_in_snapshot_log_to_keep: 64,
        purge_batch_size: 1,
        // A follower further behind than this gets a snapshot; below it, log entries.
        replication_lag_threshold: snapshot_logs_since_last.saturating_add(1_000),
        ..Default::default()
    }
    .validate()
}

/// The upper bound of the randomized election timeout: 1.5× the lower bound.
pub fn election_timeout_max(election_timeout_min_ms: u64) -> u64 {
    election_timeout_min_ms.saturating_add(election_timeout_min_ms.div_ceil(2).max(1))
}

/// [`raft_config`] with the replica's default timeouts: a 50 ms heartbeat and a 150–225 ms
/// election timeout.
pub fn default_raft_config(snapshot_logs_since_last: u64) -> Result<openraft::Config, openraft::ConfigError> {
    raft_config(50, 150, snapshot_logs_since_last)
}

/// Runs blocking I/O on tokio's blocking pool. A panic there is re-raised here.
pub(crate) async fn run_blocking<T, F>(f: F) -> io::Result<T>
where
    F: FnOnce() -> io::Result<T> + Send + 'static,
    T: Send + 'static,
{
    join_blocking(tokio::task::spawn_blocking(f)).await
}

/// The result of a blocking task: its panic resumed here, its cancellation an I/O error.
pub(crate) async fn join_blocking<T>(task: tokio::task::JoinHandle<io::Result<T>>) -> io::Result<T> {
    match task.await {
        Ok(result) => result,
        Err(join) if join.is_panic() => std::panic::resume_unwind(join.into_panic()),
        Err(join) => Err(io::Error::other(join)),
    }
}

#[cfg(test)]
mod tests;
