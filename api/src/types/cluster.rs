//! The cluster as one replica sees it: the JSON of `GET /v1/cluster` and of the membership
//! calls' replies, and the address pair every member is known by.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

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

/// Raft status and membership as seen by the replica that answered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterStatus {
    /// The replica that answered.
    pub id: u64,
    pub leader_id: Option<u64>,
    pub leader: Option<NodeInfo>,
    pub term: u64,
    pub last_log_index: Option<u64>,
    pub committed_index: Option<u64>,
    pub applied_index: Option<u64>,
    pub snapshot_index: Option<u64>,
    pub purged_index: Option<u64>,
    pub voters: Vec<u64>,
    pub learners: Vec<u64>,
    /// Every member, voters and learners, by id.
    pub members: BTreeMap<u64, NodeInfo>,
}
