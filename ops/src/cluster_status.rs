//! The JSON of `GET /v1/cluster` (and of the membership calls' replies). The allocator defines
//! it in its own crate, which hcctl does not link; this mirror reads the same fields.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterStatus {
    /// The replica that answered.
    pub id: u64,
    pub leader_id: Option<u64>,
    pub leader: Option<Member>,
    pub term: u64,
    pub last_log_index: Option<u64>,
    pub committed_index: Option<u64>,
    pub applied_index: Option<u64>,
    pub snapshot_index: Option<u64>,
    pub purged_index: Option<u64>,
    pub voters: Vec<u64>,
    pub learners: Vec<u64>,
    /// Every member, voters and learners, by id.
    pub members: BTreeMap<u64, Member>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// Where the member serves Raft and gRPC.
    pub raft_addr: String,
    pub rest_addr: String,
}
