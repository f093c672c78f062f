//! An IP pool: a CIDR on one L2 segment (optionally a VLAN), with what a pod needs to use it.

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use super::IpRange;

/// What an operator declares about a pool. Validated by the state machine before it is stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoolSpec {
    /// Unique name; `[a-z0-9]([-a-z0-9.]*[a-z0-9])?`, at most 63 characters.
    pub name: String,
    /// The pool's network. Pools never overlap.
    pub cidr: IpNet,
    /// The physical router on the segment; must lie inside `cidr` and is never handed out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<IpAddr>,
    /// 802.1Q VLAN id (1–4094); `None` means the bridge carries the pool untagged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vlan: Option<u16>,
    /// Extra routes installed in the pod besides the default route via `gateway`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<Route>,
    #[serde(default)]
    pub dns: Dns,
    /// Addresses inside `cidr` that are never handed out (single addresses, `a-b` ranges or CIDRs).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude: Vec<IpRange>,
    /// Which pods may draw from this pool when they do not name a pool.
    #[serde(default)]
    pub selector: Selector,
    /// Used by pods that name no pool and match no selector. At most one default per IP family.
    #[serde(default)]
    pub default: bool,
    /// A released address is not handed out again for this long (seconds), so that stale ARP
    /// caches and connections towards the old holder die first.
    #[serde(default)]
    pub reuse_cooldown_secs: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Route {
    pub dst: IpNet,
    /// Next hop; `None` means via the pool's gateway.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gw: Option<IpAddr>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Dns {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nameservers: Vec<IpAddr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub search: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
}

/// Pool affinity. Every non-empty field must match; an empty selector matches nothing (a pool
/// without a selector is reached only by name, by reservation, or as the default).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Selector {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub namespaces: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nodes: Vec<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub pod_labels: BTreeMap<String, String>,
}

impl Selector {
    pub fn is_empty(&self) -> bool {
        self.namespaces.is_empty() && self.nodes.is_empty() && self.node_labels.is_empty() && self.pod_labels.is_empty()
    }
}

/// A pool as the API reports it: the spec plus exact counts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoolStatus {
    #[serde(flatten)]
    pub spec: PoolSpec,
    /// Addresses that can ever be handed out: the CIDR less network/broadcast (IPv4), the
    /// subnet-router anycast address (IPv6), the gateway and the excluded ranges.
    pub size: u128,
    /// Addresses held by an allocation (quarantined ones included).
    pub used: u64,
    /// Reserved addresses not currently allocated (held for their key only).
    pub reserved_idle: u64,
    /// Released addresses still waiting out the reuse cooldown.
    pub cooling: u64,
    /// `size - used - reserved_idle - cooling`: what a new, unreserved owner can get.
    pub free: u128,
}
