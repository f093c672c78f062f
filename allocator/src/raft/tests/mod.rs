//! Tests of the Raft layer against real RocksDB, files and gRPC (no mocks).
//!
//! - `storage.rs`: what must survive a restart (log, vote, pointers, snapshots);
//! - `network.rs`: error mapping of the gRPC client;
//! - `cluster.rs`: replicas over real gRPC, a new member caught up by snapshot.

mod cluster;
mod network;
mod storage;

use std::io;

use hc_allocator_state::{Command, Request};
use openraft::entry::RaftEntry;
use openraft::storage::{IOFlushed, RaftLogStorage, RaftStateMachine};
use openraft::type_config::TypeConfigExt;
use openraft::vote::RaftLeaderIdExt;
use openraft::{Membership, RaftTypeConfig};

use crate::raft::{Entry, LogId, LogStore, StateMachineStore, TypeConfig};

fn log_id(term: u64, index: u64) -> LogId {
    LogId::new(<TypeConfig as RaftTypeConfig>::LeaderId::new_committed(term, 1), index)
}

fn blank(term: u64, index: u64) -> Entry {
    Entry::new_blank(log_id(term, index))
}

fn membership(term: u64, index: u64, voters: &[u64]) -> Entry {
    Entry::new_membership(
        log_id(term, index),
        Membership::new_with_defaults(vec![voters.iter().copied().collect()], []),
    )
}

fn grant_lease(node: &str) -> Request {
    Request { time_ms: 1_000, command: Command::GrantLease { node: node.to_owned(), ttl_ms: 10_000 } }
}

fn normal(term: u64, index: u64, node: &str) -> Entry {
    Entry::new_normal(log_id(term, index), grant_lease(node))
}

/// Appends and waits until openraft would count the entries as persisted.
async fn append(store: &mut LogStore, entries: Vec<Entry>) -> io::Result<()> {
    let (tx, rx) = TypeConfig::oneshot();
    store.append(entries, IOFlushed::signal(tx)).await?;
    rx.await.map_err(io::Error::other)?
}

async fn apply(sm: &mut StateMachineStore, entries: Vec<Entry>) -> io::Result<()> {
    let items = entries.into_iter().map(|entry| Ok((entry, None)));
    sm.apply(futures::stream::iter(items)).await
}
