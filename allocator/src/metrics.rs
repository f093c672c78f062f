//! Prometheus metrics (`hc_allocator_*`): names in one place, recorded through the `metrics`
//! facade and rendered by metrics-exporter-prometheus on `/metrics`.

use std::time::Duration;

use hc_allocator_state::{Output, State};
use hc_api::IpamError;
use metrics::{counter, gauge, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::replica::ClusterStatus;

pub const PROPOSAL_SECONDS: &str = "hc_allocator_proposal_duration_seconds";
pub const APPLY_SECONDS: &str = "hc_allocator_apply_duration_seconds";
pub const SNAPSHOT_BYTES: &str = "hc_allocator_raft_snapshot_size_bytes";
pub const ALLOCATIONS: &str = "hc_allocator_allocations_total";
pub const RELEASES: &str = "hc_allocator_released_addresses_total";
pub const FENCING_REJECTIONS: &str = "hc_allocator_fencing_rejections_total";
pub const LEASE_GRANTS: &str = "hc_allocator_lease_grants_total";
pub const LEASE_EXPIRIES: &str = "hc_allocator_lease_expiries_total";
pub const LEADER_CHANGES: &str = "hc_allocator_raft_leader_changes_total";
pub const STORAGE_MEMORY: &str = "hc_allocator_storage_memory_bytes";
pub const BATCH_COMMANDS: &str = "hc_allocator_proposal_batch_commands";

/// Installs the global recorder and returns the handle `/metrics` renders. Only the first call
/// in a process installs; later ones get a handle that renders nothing.
pub fn install() -> PrometheusHandle {
    let buckets = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0];
    let builder = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &buckets)
        .expect("bucket list is not empty")
        .set_buckets_for_metric(Matcher::Full(BATCH_COMMANDS.into()), &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0])
        .expect("bucket list is not empty");
    let recorder = builder.build_recorder();
    let handle = recorder.handle();
    if metrics::set_global_recorder(recorder).is_err() {
        tracing::warn!("a metrics recorder is already installed; /metrics of this replica stays empty");
    }
    describe();
    handle
}

fn describe() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_histogram!(
        PROPOSAL_SECONDS,
        Unit::Seconds,
        "Time from proposing a command to its applied result (commit on a majority + apply), by command and result."
    );
    describe_histogram!(APPLY_SECONDS, Unit::Seconds, "Time the state machine took to apply one entry.");
    describe_histogram!(
        BATCH_COMMANDS,
        "Allocate and release commands carried by one committed log entry the batcher wrote (1: written alone)."
    );
    describe_gauge!(SNAPSHOT_BYTES, Unit::Bytes, "Size of the latest snapshot this replica built.");
    describe_histogram!(
        "hc_allocator_raft_log_sync_seconds",
        Unit::Seconds,
        "Time of one group sync of the log's WAL."
    );
    describe_histogram!("hc_allocator_raft_log_sync_batch", "Appends covered by one WAL sync.");
    describe_counter!("hc_allocator_raft_log_appended_entries_total", "Entries appended to this replica's log.");
    describe_counter!("hc_allocator_raft_applied_entries_total", "Entries applied to the state machine.");
    describe_counter!(
        "hc_allocator_raft_replication_failures_total",
        "Replication streams to a peer that failed to open or broke, by target replica id and stage (open, stream)."
    );
    describe_histogram!(
        "hc_allocator_raft_snapshot_build_seconds",
        Unit::Seconds,
        "Time to build and persist a snapshot."
    );
    describe_counter!(ALLOCATIONS, "Allocation commands by pool and result (ok, existing, or the error kind).");
    describe_counter!(RELEASES, "Addresses released, by pool.");
    describe_counter!(FENCING_REJECTIONS, "Node writes refused for a stale token or a missing lease.");
    describe_counter!(LEASE_GRANTS, "Node leases granted.");
    describe_counter!(LEASE_EXPIRIES, "Node leases expired by the leader.");
    describe_counter!(LEADER_CHANGES, "Changes of the leader seen by this replica.");
    describe_gauge!(
        STORAGE_MEMORY,
        Unit::Bytes,
        "Memory the log's RocksDB holds, by kind: memtables, table_readers (index and filter blocks), block_cache."
    );
    describe_gauge!("hc_allocator_raft_term", "Current Raft term.");
    describe_gauge!("hc_allocator_raft_is_leader", "1 while this replica is the leader.");
    describe_gauge!("hc_allocator_raft_last_log_index", "Index of the last entry in this replica's log.");
    describe_gauge!("hc_allocator_raft_committed_index", "Index of the last committed entry.");
    describe_gauge!("hc_allocator_raft_applied_index", "Index of the last applied entry.");
    describe_gauge!("hc_allocator_raft_log_entries", "Entries in the log (not yet compacted into a snapshot).");
    describe_gauge!("hc_allocator_raft_snapshot_index", "Last index covered by the latest snapshot.");
    describe_gauge!("hc_allocator_pool_size_addresses", "Addresses a pool can ever hand out.");
    describe_gauge!("hc_allocator_pool_used_addresses", "Addresses held by allocations.");
    describe_gauge!("hc_allocator_pool_free_addresses", "Addresses a new, unreserved owner can get.");
    describe_gauge!("hc_allocator_pool_reserved_idle_addresses", "Reserved addresses not currently allocated.");
    describe_gauge!("hc_allocator_pool_cooling_addresses", "Released addresses waiting out the reuse cooldown.");
    describe_gauge!("hc_allocator_allocations", "Allocations in the state.");
    describe_gauge!("hc_allocator_leases_active", "Active node leases.");
}

/// Records one proposal's latency and, for allocations and releases, the per-pool outcome.
pub fn record_proposal(kind: &'static str, result: &Result<(Output, u64), IpamError>, elapsed: Duration) {
    let outcome = match result {
        Ok(_) => "ok",
        Err(e) => e.kind_name(),
    };
    histogram!(PROPOSAL_SECONDS, "command" => kind, "result" => outcome).record(elapsed.as_secs_f64());
    if let Err(IpamError::StaleToken { .. } | IpamError::NoLease { .. }) = result {
        counter!(FENCING_REJECTIONS, "command" => kind).increment(1);
    }
    match result {
        Ok((Output::Allocated(a), _)) => {
            let result = if a.created { "ok" } else { "existing" };
            counter!(ALLOCATIONS, "pool" => a.allocation.pool.clone(), "result" => result).increment(1);
        }
        Err(e) if kind == "allocate" => {
            let pool = match e {
                IpamError::PoolExhausted { pool } => pool.clone(),
                _ => String::new(),
            };
            counter!(ALLOCATIONS, "pool" => pool, "result" => e.kind_name()).increment(1);
        }
        Ok((Output::Released(r), _)) => {
            for a in &r.released {
                counter!(RELEASES, "pool" => a.pool.clone()).increment(1);
            }
        }
        Ok((Output::Lease(_), _)) => counter!(LEASE_GRANTS).increment(1),
        _ => {}
    }
}

/// Refreshes the gauges that mirror Raft, storage and pool state: on every scrape of `/metrics`.
/// `storage` is [`crate::raft::StorageMemory::read`]'s `(kind, bytes)`.
pub fn refresh(status: &ClusterStatus, state: &State, storage: &[(&'static str, u64)]) {
    for &(kind, bytes) in storage {
        gauge!(STORAGE_MEMORY, "kind" => kind).set(bytes as f64);
    }
    gauge!("hc_allocator_raft_term").set(status.term as f64);
    gauge!("hc_allocator_raft_is_leader").set(if status.leader_id == Some(status.id) { 1.0 } else { 0.0 });
    let idx = |i: Option<u64>| i.unwrap_or(0) as f64;
    gauge!("hc_allocator_raft_last_log_index").set(idx(status.last_log_index));
    gauge!("hc_allocator_raft_committed_index").set(idx(status.committed_index));
    gauge!("hc_allocator_raft_applied_index").set(idx(status.applied_index));
    gauge!("hc_allocator_raft_snapshot_index").set(idx(status.snapshot_index));
    let log_entries = status.last_log_index.map_or(0, |last| {
        last.saturating_sub(status.purged_index.unwrap_or(0)) + u64::from(status.purged_index.is_none())
    });
    gauge!("hc_allocator_raft_log_entries").set(log_entries as f64);
    for p in state.pools() {
        let name = p.spec.name.clone();
        gauge!("hc_allocator_pool_size_addresses", "pool" => name.clone()).set(p.size as f64);
        gauge!("hc_allocator_pool_used_addresses", "pool" => name.clone()).set(p.used as f64);
        gauge!("hc_allocator_pool_free_addresses", "pool" => name.clone()).set(p.free as f64);
        gauge!("hc_allocator_pool_reserved_idle_addresses", "pool" => name.clone()).set(p.reserved_idle as f64);
        gauge!("hc_allocator_pool_cooling_addresses", "pool" => name).set(p.cooling as f64);
    }
    gauge!("hc_allocator_allocations").set(state.allocation_count() as f64);
    let active = state.leases().iter().filter(|l| l.state == hc_api::types::LeaseState::Active).count();
    gauge!("hc_allocator_leases_active").set(active as f64);
}
