//! Default mode: one `vlan_filtering` bridge, the uplink as a tagged trunk (plus the native VLAN
//! untagged), each pod port an access port of its pool's VLAN.

use std::collections::BTreeSet;

use super::desired::{DesiredNode, NATIVE_VID};
use super::layout::{ExpectedKind, ExpectedLink, ExpectedVlans};
use super::observed::PortVlan;

pub(super) fn node_links(node: &DesiredNode, vlans: &BTreeSet<Option<u16>>) -> Vec<ExpectedLink> {
    let mut out = vec![ExpectedLink {
        name: node.bridge.clone(),
        kind: ExpectedKind::Bridge { vlan_filtering: true },
        master: None,
        mtu: node.mtu,
        vlans: None,
    }];
    if let Some(uplink) = &node.uplink {
        let mut entries = vec![PortVlan::access(NATIVE_VID)];
        entries.extend(vlans.iter().flatten().map(|vid| PortVlan::tagged(*vid)));
        out.push(ExpectedLink {
            name: uplink.clone(),
            kind: ExpectedKind::Existing,
            master: Some(node.bridge.clone()),
            mtu: None,
            vlans: Some(ExpectedVlans { entries, prune: false }),
        });
    }
    out
}

/// A pod port is an access port: its pool's VLAN (or the native one) as PVID, untagged, and
/// nothing else.
pub(super) fn pod_port_vlans(vlan: Option<u16>) -> ExpectedVlans {
    ExpectedVlans { entries: vec![PortVlan::access(vlan.unwrap_or(NATIVE_VID))], prune: true }
}
