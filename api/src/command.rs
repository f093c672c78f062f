//! The commands of the replicated log and what applying them returns. They are also the
//! payload of the gRPC `Propose` call, so agents and tools build them directly.

use std::net::IpAddr;

use crate::IpamError;
use crate::types::{
    AllocateRequest, Allocated, AttachmentId, Fence, Lease, PoolSpec, ReleaseTarget, Released, Reservation, VlanSpec,
};
use serde::{Deserialize, Serialize};

/// One entry of the replicated log: a command and the leader's clock when it was proposed.
/// The state machine takes time from here and never reads a clock (invariant 6).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    /// Leader's wall clock, ms since the Unix epoch.
    pub time_ms: u64,
    pub command: Command,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    CreatePool(PoolSpec),
    /// Replace a pool's spec. The CIDR may only grow (the new one must contain the old one and
    /// every allocation); routes, DNS, selectors, exclusions of free addresses, cooldown may change.
    UpdatePool(PoolSpec),
    /// Refused while the pool holds allocations unless `force`, which drops them.
    DeletePool {
        name: String,
        force: bool,
    },
    PutVlan(VlanSpec),
    DeleteVlan {
        id: u16,
    },
    PutReservation(Reservation),
    DeleteReservation {
        key: String,
    },
    /// `fence` is `None` only for operator writes through the admin API.
    Allocate {
        fence: Option<Fence>,
        request: AllocateRequest,
    },
    Release {
        fence: Option<Fence>,
        target: ReleaseTarget,
    },
    /// Grants `node` a new lease whose token is larger than any it had. Proposed by the leader
    /// when an agent asks.
    GrantLease {
        node: String,
        ttl_ms: u64,
    },
    /// Proposed by the leader when it saw no keep-alive for a whole TTL. Only expires the grant
    /// named by `lease_id`; the node's allocations become quarantined.
    ExpireLease {
        node: String,
        lease_id: u64,
    },
    /// The agent's view after a (re)grant or a CNI GC: every allocation of `fence.node` whose
    /// attachment is in `valid` is kept (and un-quarantined); every other one is released.
    Reconcile {
        fence: Fence,
        valid: Vec<AttachmentId>,
    },
    /// The node is gone (Kubernetes confirmed, or an operator forced it): release all its
    /// allocations, quarantined or not, and drop its lease. Tokens are kept so they stay monotonic.
    NodeGone {
        node: String,
    },
    /// Several `Allocate` and `Release` commands in one log entry, applied in order, each as if
    /// it were an entry of its own at this entry's index and time. Formed by the leader from
    /// concurrent proposals (the allocator's `batcher`); refused from clients. Applying gives
    /// [`Output::Batch`], one result per command; a command of any other kind in it is refused
    /// alone (see [`Command::batchable`]).
    Batch(Vec<Command>),
}

impl Command {
    /// Whether the leader may put this command in a [`Command::Batch`]: it takes nothing from
    /// the entry but the time (a lease's token is its entry's index, so grants stay alone).
    pub fn batchable(&self) -> bool {
        matches!(self, Command::Allocate { .. } | Command::Release { .. })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Output {
    Done,
    Pool(PoolSpec),
    Allocated(Box<Allocated>),
    Released(Released),
    Lease(Lease),
    /// What a reconcile kept and released.
    Reconciled {
        kept: u64,
        released: Vec<IpAddr>,
    },
    /// What each command of a [`Command::Batch`] gave, in order.
    Batch(Vec<Response>),
}

/// What applying one entry returns to the proposer. Errors are results, not failures: the entry
/// is applied (as a no-op) on every replica alike.
pub type Response = Result<Output, IpamError>;

impl std::fmt::Display for Request {
    /// One line for logs: the command kind and its main subject, never the whole payload.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.command {
            Command::CreatePool(p) => write!(f, "create_pool {}", p.name),
            Command::UpdatePool(p) => write!(f, "update_pool {}", p.name),
            Command::DeletePool { name, force } => write!(f, "delete_pool {name} force={force}"),
            Command::PutVlan(v) => write!(f, "put_vlan {}", v.id),
            Command::DeleteVlan { id } => write!(f, "delete_vlan {id}"),
            Command::PutReservation(r) => write!(f, "put_reservation {}", r.key),
            Command::DeleteReservation { key } => write!(f, "delete_reservation {key}"),
            Command::Allocate { request, .. } => {
                write!(f, "allocate {}/{}", request.owner.container_id, request.owner.interface)
            }
            Command::Release { target, .. } => write!(f, "release {target:?}"),
            Command::GrantLease { node, .. } => write!(f, "grant_lease {node}"),
            Command::ExpireLease { node, lease_id } => write!(f, "expire_lease {node} #{lease_id}"),
            Command::Reconcile { fence, valid } => write!(f, "reconcile {} ({} valid)", fence.node, valid.len()),
            Command::NodeGone { node } => write!(f, "node_gone {node}"),
            Command::Batch(commands) => write!(f, "batch of {}", commands.len()),
        }
    }
}
