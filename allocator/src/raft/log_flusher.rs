//! [`LogFlusher`]: group commit for the log. `append` writes without syncing and hands its
//! completion callback here; a dedicated thread syncs the RocksDB WAL once for every callback
//! that queued up meanwhile, then fires them all. One fsync covers many appends, so the write
//! rate is not bounded by the disk's sync latency.

use std::io;
use std::sync::mpsc;
use std::sync::{Arc, Weak};
use std::time::Instant;

use openraft::storage::IOFlushed;

use crate::raft::database::Database;
use crate::raft::type_config::TypeConfig;

/// Sending half of the flush queue. Dropping the last `LogFlusher` ends the thread.
pub(crate) struct LogFlusher {
    tx: mpsc::Sender<IOFlushed<TypeConfig>>,
}

impl LogFlusher {
    /// Starts the flush thread. It holds the database weakly so that closing the store closes
    /// the database (a reopen in the same process must find the RocksDB lock released).
    pub(crate) fn start(db: &Arc<Database>) -> io::Result<Self> {
        let (tx, rx) = mpsc::channel::<IOFlushed<TypeConfig>>();
        let db = Arc::downgrade(db);
        std::thread::Builder::new().name("raft-log-flush".to_owned()).spawn(move || run(&db, &rx))?;
        Ok(Self { tx })
    }

    /// Queues `callback` to fire after a WAL sync that starts after this call, i.e. one that
    /// covers every write the caller made before calling.
    pub(crate) fn after_next_sync(&self, callback: IOFlushed<TypeConfig>) {
        if let Err(mpsc::SendError(callback)) = self.tx.send(callback) {
            // The thread only ends when every sender is gone, and we are one; it can only have
            // died by a panic. Report the write as failed rather than durable.
            callback.io_completed(Err(io::Error::other("raft log flush thread is gone")));
        }
    }
}

fn run(db: &Weak<Database>, rx: &mpsc::Receiver<IOFlushed<TypeConfig>>) {
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        batch.extend(rx.try_iter());

        let started = Instant::now();
        let result = match db.upgrade() {
            // Durable: `flush_wal(true)` fsyncs the WAL, which holds every write made before
            // the callbacks in `batch` were queued.
            Some(db) => db.flush_wal(true).map_err(|e| e.into_string()),
            None => Err("raft log store is closed".to_owned()),
        };
        metrics::histogram!("hc_allocator_raft_log_sync_seconds").record(started.elapsed());
        metrics::histogram!("hc_allocator_raft_log_sync_batch").record(batch.len() as f64);

        if let Err(e) = &result {
            tracing::error!(error = %e, appends = batch.len(), "raft log WAL sync failed");
        }
        for callback in batch {
            callback.io_completed(result.clone().map_err(io::Error::other));
        }
    }
}
