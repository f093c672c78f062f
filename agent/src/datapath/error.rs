//! The datapath's errors: one enum for validation, one for operations, and the teardown error
//! that lists every failure.

use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;

use ipnet::IpNet;

use super::desired::Route;
use super::drift::Drift;

/// A desired state the datapath refuses before touching the kernel (CNI code 7).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValidationError {
    #[error("{what} name {name:?} is not a valid interface name (1-15 bytes, no '/', ':' or spaces)")]
    IfName { what: &'static str, name: String },
    #[error("bridge and uplink are both named {name:?}")]
    SameName { name: String },
    #[error("MTU {mtu} is outside 68..=65535")]
    Mtu { mtu: u32 },
    #[error("VLAN {vid} is outside 1..=4094")]
    Vlan { vid: u16 },
    #[error("VLAN {vid} is the bridge's untagged native VLAN in vlan-filtering mode; use a pool without a VLAN")]
    NativeVlan { vid: u16 },
    #[error("{value:?} is not a unicast MAC address")]
    Mac { value: String },
    #[error("container id is empty")]
    EmptyContainerId,
    #[error("network namespace path {path:?} is not absolute")]
    NetnsPath { path: PathBuf },
    #[error("an attachment needs at least one address")]
    NoAddress,
    #[error("address {address} is listed twice")]
    DuplicateAddress { address: IpNet },
    #[error("more than one gateway of the family of {gateway}")]
    TwoGateways { gateway: IpAddr },
    #[error("gateway {gateway} is not inside any of the pod's networks")]
    GatewayOffLink { gateway: IpAddr },
    #[error("route {route}: the next hop is not on-link or not of the destination's family")]
    RouteVia { route: Route },
}

/// Opening or entering a network namespace failed.
#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    #[error("cannot open {path}: {source}")]
    Open { path: PathBuf, source: std::io::Error },
    #[error("cannot enter {path}: {source}")]
    Enter { path: PathBuf, source: nix::Error },
    #[error("cannot start a thread to enter {path}: {source}")]
    Thread { path: PathBuf, source: std::io::Error },
    #[error("the thread working in {path} died")]
    ThreadDied { path: PathBuf },
}

/// An operation on the datapath failed.
#[derive(Debug, thiserror::Error)]
pub enum DatapathError {
    #[error(transparent)]
    Invalid(#[from] ValidationError),
    #[error(transparent)]
    Netns(#[from] NetnsError),
    #[error("cannot open a netlink socket: {0}")]
    Socket(std::io::Error),
    /// A netlink request failed; `errno` is the kernel's (positive) error number when it sent one.
    #[error("{op} {target}: {message}")]
    Netlink { op: &'static str, target: String, errno: Option<i32>, message: String },
    #[error("link {name} does not exist")]
    NoSuchLink { name: String },
    /// State the datapath will not overwrite (a foreign link under a name it needs, a missing
    /// uplink, a gone namespace).
    #[error("conflicting state: {}", list(.drifts))]
    Conflict { drifts: Vec<Drift> },
    #[error("still differs after {rounds} rounds of repair: {}", list(.drifts))]
    NotConverged { rounds: usize, drifts: Vec<Drift> },
    #[error("sending announcements from {ifname}: {source}")]
    Announce { ifname: String, source: nix::Error },
    /// Setup failed and removing what it had built failed too.
    #[error("{source}; cleaning up also failed: {cleanup}")]
    SetupAndCleanup { source: Box<DatapathError>, cleanup: TeardownError },
}

impl DatapathError {
    /// The kernel's errno, when the failure came from a netlink request.
    pub fn errno(&self) -> Option<i32> {
        match self {
            DatapathError::Netlink { errno, .. } => *errno,
            _ => None,
        }
    }
}

/// One step of a teardown that failed.
#[derive(Debug)]
pub struct TeardownFailure {
    /// What was being removed ("host veth hc0123…", "eth0 in /run/netns/x").
    pub step: String,
    pub error: DatapathError,
}

/// Every step of a teardown that failed; teardown carries on past each of them.
#[derive(Debug, thiserror::Error)]
#[error("teardown failed: {}", .failures.iter().map(|f| format!("{}: {}", f.step, f.error)).collect::<Vec<_>>().join("; "))]
pub struct TeardownError {
    pub failures: Vec<TeardownFailure>,
}

fn list(drifts: &[Drift]) -> String {
    drifts.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
}

impl fmt::Display for TeardownFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.step, self.error)
    }
}
