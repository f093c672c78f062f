//! [`LogStore`]: the Raft log, vote and log pointers in RocksDB.
//!
//! Column families:
//! - `logs`: key = log index as big-endian u64 (so key order is index order), value = the entry;
//! - `meta`: `vote`, `committed`, `last_purged`.
//!
//! Durability, per write (each write below says which and why):
//! - the vote is synced before `save_vote` returns (Raft's one vote per term must survive a crash);
//! - appended entries are written unsynced and the append's callback fires after a group WAL sync
//!   ([`LogFlusher`]): openraft counts an entry as persisted only when its callback fires;
//! - truncation, purge and `committed` are unsynced: losing them in a crash is harmless (see each).
//!
//! RocksDB's WAL is recovered as a prefix (point-in-time recovery), so an unsynced write that
//! survives a crash implies every earlier write survived too.

use std::fmt::Debug;
use std::io;
use std::ops::{Bound, RangeBounds};
use std::sync::{Arc, Weak};

use openraft::OptionalSend;
use openraft::entry::RaftEntry;
use openraft::storage::{IOFlushed, LogState, RaftLogReader, RaftLogStorage};
use rocksdb::{ColumnFamily, DB, Direction, IteratorMode, ReadOptions, WriteBatch, WriteOptions};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::raft::codec;
use crate::raft::database::{Database, DatabaseClosed};
use crate::raft::log_flusher::LogFlusher;
use crate::raft::run_blocking;
use crate::raft::type_config::{Entry, LogId, TypeConfig, Vote};

pub(crate) const CF_LOGS: &str = "logs";
pub(crate) const CF_META: &str = "meta";

const KEY_VOTE: &[u8] = b"vote";
const KEY_COMMITTED: &[u8] = b"committed";
const KEY_LAST_PURGED: &[u8] = b"last_purged";

/// The log storage handed to openraft. Writes are serialized by openraft (it awaits each call).
pub struct LogStore {
    db: Arc<Database>,
    flusher: LogFlusher,
}

/// A read-only view of the log for openraft's replication tasks.
#[derive(Clone)]
pub struct LogReader {
    db: Arc<Database>,
}

/// What the log's RocksDB holds in memory, for `/metrics`. The handle is weak, so it never keeps
/// the database open after the replica's Raft has shut down.
#[derive(Clone, Debug, Default)]
pub struct StorageMemory {
    db: Weak<Database>,
}

impl StorageMemory {
    /// `(kind, bytes)`: the memtables and the table readers (index and filter blocks), summed
    /// over the column families, and the block cache they share. Empty once the database is
    /// closed; a kind RocksDB cannot report is left out.
    pub fn read(&self) -> Vec<(&'static str, u64)> {
        let Some(db) = self.db.upgrade() else { return Vec::new() };
        let per_family = |property: &str| -> Option<Vec<u64>> {
            [CF_LOGS, CF_META]
                .iter()
                .map(|name| db.cf_handle(name).and_then(|cf| db.property_int_value_cf(cf, property).ok().flatten()))
                .collect()
        };
        // The block cache is shared, so one family reports all of it.
        let shared_cache = db
            .cf_handle(CF_LOGS)
            .and_then(|cf| db.property_int_value_cf(cf, "rocksdb.block-cache-usage").ok().flatten());
        let kinds = [
            ("memtables", per_family("rocksdb.cur-size-all-mem-tables").map(|v| v.iter().sum())),
            ("table_readers", per_family("rocksdb.estimate-table-readers-mem").map(|v| v.iter().sum())),
            ("block_cache", shared_cache),
        ];
        kinds.into_iter().filter_map(|(kind, bytes)| Some((kind, bytes?))).collect()
    }
}

impl LogStore {
    /// A handle reporting the database's memory (see [`StorageMemory`]).
    pub fn storage_memory(&self) -> StorageMemory {
        StorageMemory { db: Arc::downgrade(&self.db) }
    }

    pub(crate) fn new(db: Arc<Database>) -> io::Result<Self> {
        cf(&db, CF_LOGS)?;
        cf(&db, CF_META)?;
        let flusher = LogFlusher::start(&db)?;
        Ok(Self { db, flusher })
    }

    /// Resolves when the database is closed, i.e. once this store, its readers and the Raft
    /// that owns them are all gone. Take it before handing the store to [`openraft::Raft`].
    pub fn closed(&self) -> DatabaseClosed {
        self.db.closed()
    }

    fn reader(&self) -> LogReader {
        LogReader { db: self.db.clone() }
    }
}

impl RaftLogReader<TypeConfig> for LogReader {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, io::Error> {
        read_entries(&self.db, &range)
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, io::Error> {
        get_meta(&self.db, KEY_VOTE)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogReader;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, io::Error> {
        let last_purged_log_id: Option<LogId> = get_meta(&self.db, KEY_LAST_PURGED)?;
        let last = self.db.iterator_cf(cf(&self.db, CF_LOGS)?, IteratorMode::End).next();
        let last_log_id = match last {
            Some(item) => {
                let (_, value) = item.map_err(rocks_err)?;
                Some(codec::decode::<Entry>(&value)?.log_id())
            }
            None => last_purged_log_id,
        };
        Ok(LogState { last_purged_log_id, last_log_id })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.reader()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), io::Error> {
        let value = codec::encode(vote)?;
        let db = self.db.clone();
        run_blocking(move || {
            // Durable (synced) before returning: a replica that forgot its vote after a crash
            // could vote twice in one term and let two leaders be elected.
            let mut opts = WriteOptions::default();
            opts.set_sync(true);
            db.put_cf_opt(cf(&db, CF_META)?, KEY_VOTE, value, &opts).map_err(rocks_err)
        })
        .await
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), io::Error> {
        // Not synced: `committed` only lets a restart re-apply the log up to where it was. If
        // it is lost, the replica restarts from an older point and catches up from the leader;
        // Raft does not depend on it. Written after the entries it covers, so (WAL prefix) a
        // surviving `committed` never points past the surviving log.
        put_meta(&self.db, KEY_COMMITTED, &committed)
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, io::Error> {
        Ok(get_meta::<Option<LogId>>(&self.db, KEY_COMMITTED)?.flatten())
    }

    async fn append<I>(&mut self, entries: I, callback: IOFlushed<TypeConfig>) -> Result<(), io::Error>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let logs = cf(&self.db, CF_LOGS)?;
        let mut batch = WriteBatch::default();
        let mut count = 0_u64;
        for entry in entries {
            batch.put_cf(logs, index_key(entry.index()), codec::encode(&entry)?);
            count += 1;
        }
        // Not synced here, but not acknowledged either: readable as soon as this returns (as
        // openraft requires), durable only when `callback` fires after the flusher's WAL sync.
        self.db.write_opt(batch, &WriteOptions::default()).map_err(rocks_err)?;
        metrics::counter!("hc_allocator_raft_log_appended_entries_total").increment(count);
        self.flusher.after_next_sync(callback);
        Ok(())
    }

    async fn truncate_after(&mut self, last_log_id: Option<LogId>) -> Result<(), io::Error> {
        let from = last_log_id.map_or(0, |id| id.index + 1);
        // Not synced: truncation removes only entries that are not committed. If a crash undoes
        // it, the replica comes back with its older (valid) log, as if the conflicting leader's
        // message never arrived. Any later append's sync also makes this deletion durable.
        let mut batch = WriteBatch::default();
        batch.delete_range_cf(cf(&self.db, CF_LOGS)?, index_key(from), index_key(u64::MAX));
        self.db.write_opt(batch, &WriteOptions::default()).map_err(rocks_err)
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), io::Error> {
        // Not synced: openraft purges only entries covered by a snapshot that is already durable.
        // If a crash undoes the purge, the entries come back and are purged again. The pointer
        // and the deletion are one atomic batch, so the log never has a hole below the pointer.
        let mut batch = WriteBatch::default();
        batch.put_cf(cf(&self.db, CF_META)?, KEY_LAST_PURGED, codec::encode(&log_id)?);
        batch.delete_range_cf(cf(&self.db, CF_LOGS)?, index_key(0), index_key(log_id.index + 1));
        self.db.write_opt(batch, &WriteOptions::default()).map_err(rocks_err)
    }
}

fn read_entries(db: &DB, range: &impl RangeBounds<u64>) -> io::Result<Vec<Entry>> {
    let start = match range.start_bound() {
        Bound::Included(&i) => i,
        Bound::Excluded(&i) => match i.checked_add(1) {
            Some(i) => i,
            None => return Ok(Vec::new()),
        },
        Bound::Unbounded => 0,
    };
    let mut opts = ReadOptions::default();
    // Entries are read once (to apply, or to send to a follower): caching their blocks would
    // only hold dead entries resident.
    opts.fill_cache(false);
    match range.end_bound() {
        Bound::Included(&i) => {
            if let Some(end) = i.checked_add(1) {
                opts.set_iterate_upper_bound(index_key(end));
            }
        }
        Bound::Excluded(&i) => opts.set_iterate_upper_bound(index_key(i)),
        Bound::Unbounded => {}
    }

    let from = index_key(start);
    // The iterator reads from an implicit RocksDB snapshot: the result is one consistent view.
    let iter = db.iterator_cf_opt(cf(db, CF_LOGS)?, opts, IteratorMode::From(&from, Direction::Forward));
    let mut entries = Vec::new();
    for item in iter {
        let (key, value) = item.map_err(rocks_err)?;
        let index = key_index(&key)?;
        if !range.contains(&index) {
            break;
        }
        let entry: Entry = codec::decode(&value)?;
        if entry.index() != index {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("log entry under key {index} has index {}", entry.index()),
            ));
        }
        entries.push(entry);
    }
    Ok(entries)
}

pub(crate) fn cf<'a>(db: &'a DB, name: &str) -> io::Result<&'a ColumnFamily> {
    db.cf_handle(name)
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("column family `{name}` is missing")))
}

fn get_meta<T: DeserializeOwned>(db: &DB, key: &[u8]) -> io::Result<Option<T>> {
    match db.get_cf(cf(db, CF_META)?, key).map_err(rocks_err)? {
        Some(bytes) => codec::decode(&bytes).map(Some),
        None => Ok(None),
    }
}

fn put_meta<T: Serialize>(db: &DB, key: &[u8], value: &T) -> io::Result<()> {
    db.put_cf_opt(cf(db, CF_META)?, key, codec::encode(value)?, &WriteOptions::default()).map_err(rocks_err)
}

fn index_key(index: u64) -> [u8; 8] {
    index.to_be_bytes()
}

fn key_index(key: &[u8]) -> io::Result<u64> {
    let bytes: [u8; 8] =
        key.try_into().map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "log key is not 8 bytes"))?;
    Ok(u64::from_be_bytes(bytes))
}

pub(crate) fn rocks_err(e: rocksdb::Error) -> io::Error {
    io::Error::other(e.into_string())
}
