//! What one benchmark client does to allocate an address, for each system and layout:
//!
//! - [`hc`]: one `Allocate` command through the leader-following `hc_api` client;
//! - [`etcd_address_key`]: etcd, one key per address (a linearizable read of the candidate, then
//!   a transaction creating the key only if it does not exist);
//! - [`etcd_pool_key`]: etcd, one key holding the whole pool as a bitmap ([`bitmap`]), updated by
//!   compare-and-swap on its `mod_revision` (the Whereabouts / original HC Bridge layout).

pub mod bitmap;
pub mod etcd_address_key;
pub mod etcd_pool_key;
pub mod hc;

use std::future::Future;
use std::net::Ipv4Addr;

use hc_api::IpamError;

/// An allocation the system acknowledged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Acked {
    pub address: Ipv4Addr,
    /// The attachment it was allocated for (unique per run).
    pub owner: String,
    /// Attempts lost to a concurrent writer before this one succeeded (etcd layouts).
    pub conflicts: u32,
}

/// One client of a system under test; the load driver runs one per concurrent client.
pub trait AllocatorClient: Send + 'static {
    /// Allocates one address for this client's `seq`-th attachment.
    fn allocate(&mut self, seq: u64) -> impl Future<Output = Result<Acked, AllocError>> + Send;
}

#[derive(Debug, thiserror::Error)]
pub enum AllocError {
    #[error("hc-allocator: {0}")]
    Hc(#[from] IpamError),
    #[error("etcd: {0}")]
    Etcd(#[from] etcd_client::Error),
    #[error("gave up after {attempts} attempts lost to concurrent writers")]
    TooManyConflicts { attempts: u32 },
    #[error("pool exhausted after {offset} addresses")]
    Exhausted { offset: u32 },
    #[error("asked for {expected}, the reply names {got}")]
    WrongOwner { expected: String, got: String },
    #[error("the reply carries a non-IPv4 address {address}")]
    NotIpv4 { address: std::net::IpAddr },
}

impl AllocError {
    /// A short label for counting errors by kind in the report.
    pub fn kind(&self) -> &'static str {
        match self {
            AllocError::Hc(e) => match e {
                IpamError::Unavailable { .. } => "hc_unavailable",
                IpamError::NotLeader { .. } => "hc_not_leader",
                _ => "hc_rejected",
            },
            AllocError::Etcd(etcd_client::Error::GRpcStatus(_)) => "etcd_status",
            AllocError::Etcd(etcd_client::Error::TransportError(_)) => "etcd_transport",
            AllocError::Etcd(_) => "etcd_other",
            AllocError::TooManyConflicts { .. } => "too_many_conflicts",
            AllocError::Exhausted { .. } => "exhausted",
            AllocError::WrongOwner { .. } => "wrong_owner",
            AllocError::NotIpv4 { .. } => "not_ipv4",
        }
    }
}

/// Attempts per allocation before an etcd client gives up (each attempt is one or two round
/// trips; the driver's deadline bounds the time as well).
pub const MAX_ATTEMPTS: u32 = 10_000;

/// The pool every layout allocates from: 10.0.0.0/8, so that no run exhausts it.
pub const POOL_CIDR: &str = "10.0.0.0/8";
pub const POOL_BASE: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 0);
/// Usable offsets are 1..POOL_SIZE-1 (not the network or broadcast address).
pub const POOL_SIZE: u32 = 1 << 24;

/// The address at `offset` into the pool.
pub fn pool_address(offset: u32) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(POOL_BASE) + offset)
}

/// The attachment name of client `client`'s `seq`-th allocation in a row tagged `tag`.
pub fn owner_name(tag: &str, client: usize, seq: u64) -> String {
    format!("{tag}-c{client}-{seq}")
}
