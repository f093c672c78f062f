//! [`Database`]: the replica's RocksDB handle, shared (`Arc`) by the log store, its readers and
//! the flush thread, that reports when it is closed.
//!
//! RocksDB holds a lock on its directory until the last handle is dropped, and openraft's tasks
//! drop theirs a little after `Raft::shutdown` returns. A restart in the same process (tests, a
//! supervisor) waits on [`DatabaseClosed`] instead of guessing when the lock is free.

use std::ops::Deref;

use rocksdb::DB;
use tokio::sync::watch;

pub(crate) struct Database {
    /// Always `Some` until dropped; taken in `drop` to close RocksDB before reporting it closed.
    db: Option<DB>,
    closed: watch::Sender<bool>,
}

impl Database {
    pub(crate) fn new(db: DB) -> Self {
        Self { db: Some(db), closed: watch::Sender::new(false) }
    }

    pub(crate) fn closed(&self) -> DatabaseClosed {
        DatabaseClosed(self.closed.subscribe())
    }
}

impl Deref for Database {
    type Target = DB;

    fn deref(&self) -> &DB {
        // `db` is only `None` inside `drop`, where no one can call this.
        self.db.as_ref().unwrap_or_else(|| unreachable!("database used while being dropped"))
    }
}

impl Drop for Database {
    fn drop(&mut self) {
        // Closes RocksDB (and releases its directory lock) before anyone is told.
        drop(self.db.take());
        self.closed.send_replace(true);
    }
}

/// Resolves once the replica's database is closed: every handle dropped, the lock released.
pub struct DatabaseClosed(watch::Receiver<bool>);

impl DatabaseClosed {
    pub async fn wait(mut self) {
        // An error means the sender is gone, which also only happens after the close.
        let _ = self.0.wait_for(|closed| *closed).await;
    }
}
