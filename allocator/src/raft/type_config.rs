//! [`TypeConfig`]: the types openraft is instantiated with, and [`NodeInfo`], what the membership
//! records about each replica.

use std::fmt;

use openraft::type_config::alias;
use serde::{Deserialize, Serialize};

use crate::raft::snapshot_store::SnapshotFile;
use crate::raft::state_machine::StateMachineStore;

openraft::declare_raft_types!(
    /// The allocator's Raft: log entries carry [`hc_allocator_state::Request`]s and applying one
    /// returns a [`hc_allocator_state::Response`].
    pub TypeConfig:
        D = hc_allocator_state::Request,
        R = hc_allocator_state::Response,
        NodeId = u64,
        Node = NodeInfo,
        AsyncRuntime = openraft::impls::TokioRuntime,
);

/// A running replica's Raft handle.
pub type Raft = openraft::Raft<TypeConfig, StateMachineStore>;

/// Where a replica listens. Stored in the replicated membership, so every replica (and every
/// client following a "not leader" redirect) learns the others' addresses from the log.
/// Unknown fields are tolerated (not denied): this is log data that a newer replica may extend.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    /// `host:port` of the replica's gRPC server (Raft peers, agents, admin).
    pub raft_addr: String,
    /// `host:port` of the replica's REST server.
    pub rest_addr: String,
}

impl fmt::Display for NodeInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "raft={} rest={}", self.raft_addr, self.rest_addr)
    }
}

pub type LogId = alias::LogIdOf<TypeConfig>;
pub type Vote = alias::VoteOf<TypeConfig>;
pub type Entry = alias::EntryOf<TypeConfig>;
pub type StoredMembership = alias::StoredMembershipOf<TypeConfig>;
pub type SnapshotMeta = alias::SnapshotMetaOf<TypeConfig>;
/// A snapshot as openraft passes it around: meta plus an open handle on the snapshot file.
pub type Snapshot = alias::SnapshotOf<TypeConfig, SnapshotFile>;
