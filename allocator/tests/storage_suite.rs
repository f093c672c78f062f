//! Acceptance: the RocksDB log store and the state machine store pass openraft's storage
//! conformance suite (`openraft::testing::log::Suite`), each case on a fresh data directory.

use hc_allocator::raft::{self, LogStore, StateMachineStore, TypeConfig};
use openraft::StorageError;
use openraft::testing::log::{StoreBuilder, Suite};
use openraft::type_config::TypeConfigExt;
use tempfile::TempDir;

/// Opens the replica storage in a new temporary directory, removed when the case ends.
struct TempDirStore;

impl StoreBuilder<TypeConfig, LogStore, StateMachineStore, TempDir> for TempDirStore {
    async fn build(&self) -> Result<(TempDir, LogStore, StateMachineStore), StorageError<TypeConfig>> {
        let dir = tempfile::tempdir().map_err(|e| StorageError::write(TypeConfig::err_from_error(&e)))?;
        let (log_store, state_machine) =
            raft::open_storage(dir.path()).await.map_err(|e| StorageError::write(TypeConfig::err_from_error(&e)))?;
        Ok((dir, log_store, state_machine))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storage_passes_openraft_suite() -> Result<(), StorageError<TypeConfig>> {
    Suite::test_all(TempDirStore).await
}
