//! Allocations: who holds which address, and the requests that create and release them.

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use super::PoolSpec;

/// The holder of an address. `(container_id, interface)` identifies an attachment: ADD is
/// idempotent per that pair.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Owner {
    pub container_id: String,
    pub interface: String,
    #[serde(default)]
    pub namespace: String,
    #[serde(default)]
    pub pod: String,
    /// The node the attachment lives on; allocations belong to the node, not to a lease.
    pub node: String,
}

/// `(container_id, interface)`: the identity of one attachment.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttachmentId {
    pub container_id: String,
    pub interface: String,
}

impl Owner {
    pub fn attachment(&self) -> AttachmentId {
        AttachmentId { container_id: self.container_id.clone(), interface: self.interface.clone() }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AllocationState {
    Active,
    /// The node's lease expired while it held this address: nobody else may get the address
    /// until the node's agent reconciles, the node is confirmed gone, or an operator forces it.
    Quarantined,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Allocation {
    pub address: IpAddr,
    pub pool: String,
    pub owner: Owner,
    /// The reservation key this address came from, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reservation: Option<String>,
    /// Raft log index of the command that created it.
    pub log_index: u64,
    /// Leader's wall clock (ms since the epoch) carried by that command.
    pub allocated_at_ms: u64,
    pub state: AllocationState,
}

/// Everything the state machine needs to choose a pool and an address.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AllocateRequest {
    pub owner: Owner,
    /// Take the address from this pool.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool: Option<String>,
    /// Take exactly this address (it must be free, or reserved for one of `reservation_keys`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<IpAddr>,
    /// Reservation keys to try, in order (e.g. `ns/sts/0`, then `ns/pod`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reservation_keys: Vec<String>,
    /// Labels used by pool selectors.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub pod_labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_labels: BTreeMap<String, String>,
}

impl Default for Owner {
    fn default() -> Self {
        Owner {
            container_id: String::new(),
            interface: "eth0".to_owned(),
            namespace: String::new(),
            pod: String::new(),
            node: String::new(),
        }
    }
}

/// What an ADD needs back: the allocation and the pool it came from (gateway, routes, DNS, VLAN).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Allocated {
    pub allocation: Allocation,
    pub pool: PoolSpec,
    /// False when the request repeated an existing attachment (idempotent ADD).
    pub created: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum ReleaseTarget {
    /// Release what this attachment holds (CNI DEL).
    Owner(AttachmentId),
    /// Release whatever holds this address (operator).
    Address(IpAddr),
}

/// What a release did. Releasing nothing is not an error (DEL is idempotent).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Released {
    pub released: Vec<Allocation>,
}
