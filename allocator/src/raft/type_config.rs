//! [`TypeConfig`]: the types openraft is instantiated with, and [`NodeInfo`], what the membership
//! records about each replica.

use openraft::type_config::alias;

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

pub use hc_api::types::NodeInfo;

pub type LogId = alias::LogIdOf<TypeConfig>;
pub type Vote = alias::VoteOf<TypeConfig>;
pub type Entry = alias::EntryOf<TypeConfig>;
pub type StoredMembership = alias::StoredMembershipOf<TypeConfig>;
pub type SnapshotMeta = alias::SnapshotMetaOf<TypeConfig>;
/// A snapshot as openraft passes it around: meta plus an open handle on the snapshot file.
pub type Snapshot = alias::SnapshotOf<TypeConfig, SnapshotFile>;
