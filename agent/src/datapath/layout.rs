//! The host-side topology a node should have, derived from its [`DesiredNode`] and the VLANs in
//! use. Each mode's rules live in its own file; the diff is the same for both.

use std::collections::BTreeSet;

use super::desired::{DatapathMode, DesiredAttachment, DesiredNode};
use super::observed::PortVlan;
use super::{per_vlan_bridge, vlan_filtering};

/// What a link must be before it can be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExpectedKind {
    /// A bridge the agent creates.
    Bridge { vlan_filtering: bool },
    /// An 802.1Q link on `parent`, created by the agent.
    Vlan { parent: String, vid: u16 },
    /// The uplink: it must already exist (the agent never creates or deletes it).
    Existing,
    /// A pod's host veth (created together with its peer, see the attachment diff).
    Veth,
}

/// The VLAN memberships a bridge port must have.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpectedVlans {
    pub entries: Vec<PortVlan>,
    /// Remove memberships not in `entries` (pod ports: yes, so a pod sees only its VLAN; the
    /// uplink: no, VLANs of pods that left stay on the trunk until the node is pruned).
    pub prune: bool,
}

/// One link the node needs, with the state it must be in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpectedLink {
    pub name: String,
    pub kind: ExpectedKind,
    pub master: Option<String>,
    pub mtu: Option<u32>,
    /// `None`: VLAN membership is not managed on this link (no `vlan_filtering` bridge).
    pub vlans: Option<ExpectedVlans>,
}

/// The node's links, in creation order (a bridge before its ports), for pods in `vlans`.
pub fn node_links(node: &DesiredNode, vlans: &BTreeSet<Option<u16>>) -> Vec<ExpectedLink> {
    match node.mode {
        DatapathMode::VlanFiltering => vlan_filtering::node_links(node, vlans),
        DatapathMode::PerVlanBridge => per_vlan_bridge::node_links(node, vlans),
    }
}

/// The pod's host veth as a bridge port.
pub fn pod_port(node: &DesiredNode, att: &DesiredAttachment) -> ExpectedLink {
    let vlans = match node.mode {
        DatapathMode::VlanFiltering => Some(vlan_filtering::pod_port_vlans(att.vlan)),
        DatapathMode::PerVlanBridge => None,
    };
    ExpectedLink {
        name: att.host_veth.clone(),
        kind: ExpectedKind::Veth,
        master: Some(node.bridge_for(att.vlan)),
        mtu: att.mtu.or(node.mtu),
        vlans,
    }
}
