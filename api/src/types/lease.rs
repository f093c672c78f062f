//! Node leases and the fencing tokens they carry.

use serde::{Deserialize, Serialize};

/// A node's lease as replicated. Deadlines are not replicated: keep-alives are tracked by the
/// leader in memory and expiry is a command the leader proposes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Lease {
    pub node: String,
    /// Identifies this grant; an expiry names the grant it expires so that it cannot hit a newer one.
    pub lease_id: u64,
    /// Fencing token: larger than any token this node had before.
    pub token: u64,
    pub ttl_ms: u64,
    pub state: LeaseState,
    /// Leader time (ms) of the grant.
    pub granted_at_ms: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LeaseState {
    Active,
    Expired,
}

/// `(node, token)`: carried by every node-scoped write and checked by the state machine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fence {
    pub node: String,
    pub token: u64,
}
