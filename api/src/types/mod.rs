//! Domain types shared by the allocator, the agent, the CNI plugins and `hcctl`.
//! They are the JSON of the REST API and the payload of the replicated log.

mod allocation;
mod cluster;
mod lease;
mod pool;
mod range;
mod reservation;
mod vlan;

pub use allocation::{
    AllocateRequest, Allocated, Allocation, AllocationState, AttachmentId, Owner, ReleaseTarget, Released,
};
pub use cluster::{ClusterStatus, NodeInfo};
pub use lease::{Fence, Lease, LeaseState};
pub use pool::{Dns, PoolSpec, PoolStatus, Route, Selector};
pub use range::{IpRange, IpRangeError};
pub use reservation::{Reservation, pod_key, statefulset_key};
pub use vlan::VlanSpec;
