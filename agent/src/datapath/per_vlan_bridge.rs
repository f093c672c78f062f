//! Alternative mode for NICs or kernels without VLAN filtering: per VLAN an 802.1Q link
//! `<uplink>.<vid>` and a plain bridge `<bridge>.<vid>`; pools without a VLAN use `<bridge>`,
//! which has the uplink itself as its port.

use std::collections::BTreeSet;

use super::desired::{DesiredNode, vlan_link_name};
use super::layout::{ExpectedKind, ExpectedLink};

pub(super) fn node_links(node: &DesiredNode, vlans: &BTreeSet<Option<u16>>) -> Vec<ExpectedLink> {
    let bridge = |name: String| ExpectedLink {
        name,
        kind: ExpectedKind::Bridge { vlan_filtering: false },
        master: None,
        mtu: node.mtu,
        vlans: None,
    };
    let mut out = vec![bridge(node.bridge.clone())];
    if let Some(uplink) = &node.uplink {
        out.push(ExpectedLink {
            name: uplink.clone(),
            kind: ExpectedKind::Existing,
            master: Some(node.bridge.clone()),
            mtu: None,
            vlans: None,
        });
    }
    for vid in vlans.iter().flatten() {
        let vlan_bridge = vlan_link_name(&node.bridge, *vid);
        out.push(bridge(vlan_bridge.clone()));
        if let Some(uplink) = &node.uplink {
            out.push(ExpectedLink {
                name: vlan_link_name(uplink, *vid),
                kind: ExpectedKind::Vlan { parent: uplink.clone(), vid: *vid },
                master: Some(vlan_bridge),
                mtu: None,
                vlans: None,
            });
        }
    }
    out
}
