//! The diff: where observed state differs from desired state. Pure; CNI CHECK reports these
//! drifts, and [`super::plan`] turns the repairable ones into actions.
//!
//! Every drift carries what its repair needs, so a list of drifts can be planned on its own.

use std::collections::BTreeSet;
use std::fmt;
use std::path::PathBuf;

use ipnet::IpNet;

use super::desired::{DesiredAttachment, DesiredNode, MacAddr, Route};
use super::layout::{self, ExpectedKind, ExpectedLink};
use super::observed::{HostView, LinkKind, ObservedLink, PodView, PortVlan};

/// One difference between desired and observed state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Drift {
    /// A bridge or 802.1Q link the agent creates is absent.
    LinkMissing {
        expected: ExpectedLink,
    },
    /// The uplink does not exist (not repairable: the agent never creates it).
    UplinkMissing {
        name: String,
    },
    /// A name the datapath needs is taken by a link of another kind (not repairable).
    WrongKind {
        name: String,
        want: String,
        have: String,
    },
    VlanFiltering {
        bridge: String,
        want: bool,
    },
    NotInBridge {
        link: String,
        want: String,
        have: Option<String>,
    },
    LinkDown {
        link: String,
    },
    Mtu {
        link: String,
        want: u32,
        have: u32,
    },
    /// The port lacks this membership, or has the VID with other flags.
    PortVlanMissing {
        port: String,
        vlan: PortVlan,
    },
    /// A pod port is in a VLAN that is not its own.
    PortVlanExtra {
        port: String,
        vlan: PortVlan,
    },

    /// The pod's network namespace is gone (not repairable: the pod is).
    NetnsMissing {
        netns: PathBuf,
    },
    /// Neither end of the veth exists.
    VethMissing {
        attachment: Box<DesiredAttachment>,
        port: ExpectedLink,
    },
    /// The host end exists but its peer is not `ifname` in the pod (renamed or moved away).
    PodLinkMissing {
        attachment: Box<DesiredAttachment>,
        port: ExpectedLink,
    },
    /// `ifname` in the pod is not the peer of the host veth (not repairable: it is not ours).
    PodLinkTaken {
        netns: PathBuf,
        ifname: String,
    },
    PodLinkDown {
        netns: PathBuf,
        ifname: String,
    },
    LoopbackDown {
        netns: PathBuf,
    },
    PodMtu {
        netns: PathBuf,
        ifname: String,
        want: u32,
        have: u32,
    },
    PodMac {
        netns: PathBuf,
        ifname: String,
        want: MacAddr,
        have: Option<MacAddr>,
    },
    AddressMissing {
        netns: PathBuf,
        ifname: String,
        address: IpNet,
    },
    RouteMissing {
        netns: PathBuf,
        ifname: String,
        route: Route,
    },
}

impl Drift {
    /// Whether the datapath can fix this itself; the others need the operator or the pod's
    /// owner, and make setup fail.
    pub fn is_repairable(&self) -> bool {
        !matches!(
            self,
            Drift::UplinkMissing { .. }
                | Drift::WrongKind { .. }
                | Drift::NetnsMissing { .. }
                | Drift::PodLinkTaken { .. }
        )
    }

    /// A short label for metrics and logs ("repairs by kind").
    pub fn kind(&self) -> &'static str {
        match self {
            Drift::LinkMissing { .. } => "link_missing",
            Drift::UplinkMissing { .. } => "uplink_missing",
            Drift::WrongKind { .. } => "wrong_kind",
            Drift::VlanFiltering { .. } => "vlan_filtering",
            Drift::NotInBridge { .. } => "not_in_bridge",
            Drift::LinkDown { .. } => "link_down",
            Drift::Mtu { .. } => "mtu",
            Drift::PortVlanMissing { .. } => "port_vlan_missing",
            Drift::PortVlanExtra { .. } => "port_vlan_extra",
            Drift::NetnsMissing { .. } => "netns_missing",
            Drift::VethMissing { .. } => "veth_missing",
            Drift::PodLinkMissing { .. } => "pod_link_missing",
            Drift::PodLinkTaken { .. } => "pod_link_taken",
            Drift::PodLinkDown { .. } => "pod_link_down",
            Drift::LoopbackDown { .. } => "loopback_down",
            Drift::PodMtu { .. } => "pod_mtu",
            Drift::PodMac { .. } => "pod_mac",
            Drift::AddressMissing { .. } => "address_missing",
            Drift::RouteMissing { .. } => "route_missing",
        }
    }
}

impl fmt::Display for Drift {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Drift::LinkMissing { expected } => write!(f, "link {} is missing", expected.name),
            Drift::UplinkMissing { name } => write!(f, "uplink {name} does not exist"),
            Drift::WrongKind { name, want, have } => write!(f, "{name} is a {have}, not a {want}"),
            Drift::VlanFiltering { bridge, want } => {
                write!(f, "bridge {bridge} has vlan_filtering {}", if *want { "off" } else { "on" })
            }
            Drift::NotInBridge { link, want, have: Some(have) } => {
                write!(f, "{link} is a port of {have}, not of {want}")
            }
            Drift::NotInBridge { link, want, have: None } => write!(f, "{link} is not a port of {want}"),
            Drift::LinkDown { link } => write!(f, "{link} is down"),
            Drift::Mtu { link, want, have } => write!(f, "{link} has MTU {have}, not {want}"),
            Drift::PortVlanMissing { port, vlan } => write!(f, "port {port} lacks {vlan}"),
            Drift::PortVlanExtra { port, vlan } => write!(f, "port {port} has unexpected {vlan}"),
            Drift::NetnsMissing { netns } => write!(f, "network namespace {} is gone", netns.display()),
            Drift::VethMissing { attachment, .. } => {
                write!(f, "veth {} / {} does not exist", attachment.host_veth, attachment.ifname)
            }
            Drift::PodLinkMissing { attachment, .. } => write!(
                f,
                "host veth {} exists but {} is not in {}",
                attachment.host_veth,
                attachment.ifname,
                attachment.netns.display()
            ),
            Drift::PodLinkTaken { netns, ifname } => {
                write!(f, "{ifname} in {} is not this attachment's veth", netns.display())
            }
            Drift::PodLinkDown { netns, ifname } => write!(f, "{ifname} in {} is down", netns.display()),
            Drift::LoopbackDown { netns } => write!(f, "lo in {} is down", netns.display()),
            Drift::PodMtu { ifname, want, have, .. } => write!(f, "{ifname} has MTU {have}, not {want}"),
            Drift::PodMac { ifname, want, have, .. } => match have {
                Some(have) => write!(f, "{ifname} has MAC {have}, not {want}"),
                None => write!(f, "{ifname} has no MAC, not {want}"),
            },
            Drift::AddressMissing { ifname, address, .. } => write!(f, "{ifname} lacks address {address}"),
            Drift::RouteMissing { ifname, route, .. } => write!(f, "route {route} dev {ifname} is missing"),
        }
    }
}

/// Node-level drifts for pods in `vlans` (bridges, uplink, per-VLAN links).
pub fn diff_node(node: &DesiredNode, vlans: &BTreeSet<Option<u16>>, host: &HostView) -> Vec<Drift> {
    layout::node_links(node, vlans).iter().flat_map(|expected| diff_link(expected, host.link(&expected.name))).collect()
}

/// Attachment-level drifts: the veth pair, the host port, and the pod's interface, addresses
/// and routes. Node-level state is [`diff_node`]'s.
pub fn diff_attachment(node: &DesiredNode, att: &DesiredAttachment, host: &HostView, pod: &PodView) -> Vec<Drift> {
    if !pod.netns_present {
        return vec![Drift::NetnsMissing { netns: att.netns.clone() }];
    }
    let port = layout::pod_port(node, att);
    let taken = || Drift::PodLinkTaken { netns: att.netns.clone(), ifname: att.ifname.clone() };
    let (host_veth, pod_link) = match (host.link(&att.host_veth), &pod.link) {
        (None, None) => return vec![Drift::VethMissing { attachment: Box::new(att.clone()), port }],
        (None, Some(_)) => return vec![taken()],
        (Some(h), _) if h.kind != LinkKind::Veth => {
            return vec![Drift::WrongKind { name: h.name.clone(), want: "veth".into(), have: h.kind_name() }];
        }
        (Some(_), None) => return vec![Drift::PodLinkMissing { attachment: Box::new(att.clone()), port }],
        (Some(h), Some(p)) => (h, p),
    };
    if !is_pair(host_veth, pod_link) {
        return vec![taken()];
    }

    let mut out = diff_link(&port, Some(host_veth));
    let (netns, ifname) = (&att.netns, &att.ifname);
    if let Some(want) = att.mac
        && pod_link.mac != Some(want)
    {
        out.push(Drift::PodMac { netns: netns.clone(), ifname: ifname.clone(), want, have: pod_link.mac });
    }
    if let Some(want) = att.mtu.or(node.mtu)
        && pod_link.mtu != want
    {
        out.push(Drift::PodMtu { netns: netns.clone(), ifname: ifname.clone(), want, have: pod_link.mtu });
    }
    if !pod.loopback_up {
        out.push(Drift::LoopbackDown { netns: netns.clone() });
    }
    for address in &att.addresses {
        if !pod.addresses.contains(address) {
            out.push(Drift::AddressMissing { netns: netns.clone(), ifname: ifname.clone(), address: *address });
        }
    }
    if !pod_link.admin_up {
        out.push(Drift::PodLinkDown { netns: netns.clone(), ifname: ifname.clone() });
    }
    for route in att.effective_routes() {
        if !pod.routes.contains(&route) {
            out.push(Drift::RouteMissing { netns: netns.clone(), ifname: ifname.clone(), route });
        }
    }
    out
}

/// Host veths that look like the agent's (`hc` + 11 hex digits, kind veth) but belong to none of
/// `atts`: pods that left without a DEL. For GC and the reconciler; removing them is their
/// decision, not the diff's.
pub fn orphan_ports(host: &HostView, atts: &[DesiredAttachment]) -> Vec<String> {
    host.links
        .iter()
        .filter(|l| l.kind == LinkKind::Veth && is_host_veth_name(&l.name))
        .filter(|l| !atts.iter().any(|a| a.host_veth == l.name))
        .map(|l| l.name.clone())
        .collect()
}

fn is_host_veth_name(name: &str) -> bool {
    name.len() == 13
        && name.starts_with("hc")
        && name[2..].bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Whether the host veth and the pod's link are the two ends of one pair: each names the other
/// as its peer (IFLA_LINK).
fn is_pair(host: &ObservedLink, pod: &ObservedLink) -> bool {
    pod.kind == LinkKind::Veth && host.peer_index == Some(pod.index) && pod.peer_index == Some(host.index)
}

/// Drifts of one host link against what is expected of it.
fn diff_link(expected: &ExpectedLink, observed: Option<&ObservedLink>) -> Vec<Drift> {
    let name = &expected.name;
    let Some(link) = observed else {
        return vec![match expected.kind {
            ExpectedKind::Existing => Drift::UplinkMissing { name: name.clone() },
            _ => Drift::LinkMissing { expected: expected.clone() },
        }];
    };
    let wrong_kind = |want: &str| Drift::WrongKind { name: name.clone(), want: want.into(), have: link.kind_name() };
    let mut out = Vec::new();
    match (&expected.kind, &link.kind) {
        (ExpectedKind::Bridge { vlan_filtering: want }, LinkKind::Bridge { vlan_filtering: have }) => {
            if have.unwrap_or(false) != *want {
                out.push(Drift::VlanFiltering { bridge: name.clone(), want: *want });
            }
        }
        (ExpectedKind::Bridge { .. }, _) => return vec![wrong_kind("bridge")],
        (ExpectedKind::Vlan { parent, vid }, LinkKind::Vlan { vid: have_vid, parent: have_parent }) => {
            if vid != have_vid || have_parent.as_ref() != Some(parent) {
                return vec![wrong_kind(&format!("vlan {vid} on {parent}"))];
            }
        }
        (ExpectedKind::Vlan { .. }, _) => return vec![wrong_kind("vlan")],
        (ExpectedKind::Veth, LinkKind::Veth) | (ExpectedKind::Existing, _) => {}
        (ExpectedKind::Veth, _) => return vec![wrong_kind("veth")],
    }
    if let Some(want) = expected.mtu
        && link.mtu != want
    {
        out.push(Drift::Mtu { link: name.clone(), want, have: link.mtu });
    }
    let in_bridge = link.master == expected.master;
    if let Some(want) = &expected.master
        && !in_bridge
    {
        out.push(Drift::NotInBridge { link: name.clone(), want: want.clone(), have: link.master.clone() });
    }
    if let Some(vlans) = &expected.vlans {
        // Off its bridge the port's memberships are meaningless: all of them are to be added.
        let have: &[PortVlan] = if in_bridge { &link.vlans } else { &[] };
        for vlan in &vlans.entries {
            if !have.contains(vlan) {
                out.push(Drift::PortVlanMissing { port: name.clone(), vlan: *vlan });
            }
        }
        if vlans.prune {
            for vlan in have {
                if !vlans.entries.iter().any(|e| e.vid == vlan.vid) {
                    out.push(Drift::PortVlanExtra { port: name.clone(), vlan: *vlan });
                }
            }
        }
    }
    if !link.admin_up {
        out.push(Drift::LinkDown { link: name.clone() });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::datapath::desired::{DatapathMode, NATIVE_VID};
    use crate::datapath::observed::ObservedLink;

    pub(crate) fn node(mode: DatapathMode) -> DesiredNode {
        DesiredNode { mode, bridge: "br0".into(), uplink: Some("eth0".into()), mtu: None }
    }

    pub(crate) fn att(vlan: Option<u16>) -> DesiredAttachment {
        let mut a = DesiredAttachment::new("c1", "eth0", "/run/netns/p1");
        a.vlan = vlan;
        a.addresses = vec!["10.1.0.5/24".parse().expect("net")];
        a.gateways = vec!["10.1.0.1".parse().expect("ip")];
        a
    }

    fn link(index: u32, name: &str, kind: LinkKind) -> ObservedLink {
        ObservedLink::new(index, name, kind)
    }

    fn bridge(index: u32, name: &str, vlan_filtering: bool) -> ObservedLink {
        link(index, name, LinkKind::Bridge { vlan_filtering: Some(vlan_filtering) })
    }

    fn uplink(master: Option<&str>, vlans: Vec<PortVlan>) -> ObservedLink {
        let mut l = link(2, "eth0", LinkKind::Other(String::new()));
        l.master = master.map(str::to_string);
        l.vlans = vlans;
        l
    }

    /// A node and one attachment exactly as desired, in VlanFiltering mode with VLAN 100.
    fn converged_filtering() -> (HostView, PodView) {
        let mut veth = link(10, &att(None).host_veth, LinkKind::Veth);
        veth.master = Some("br0".into());
        veth.peer_index = Some(3);
        veth.vlans = vec![PortVlan::access(100)];
        let host = HostView {
            links: vec![
                link(1, "lo", LinkKind::Other(String::new())),
                uplink(Some("br0"), vec![PortVlan::access(NATIVE_VID), PortVlan::tagged(100)]),
                bridge(5, "br0", true),
                veth,
            ],
        };
        (host, converged_pod())
    }

    fn converged_pod() -> PodView {
        let mut pod_link = link(3, "eth0", LinkKind::Veth);
        pod_link.peer_index = Some(10);
        PodView {
            netns_present: true,
            link: Some(pod_link),
            loopback_up: true,
            addresses: vec!["10.1.0.5/24".parse().expect("net")],
            routes: vec![
                Route { dst: "10.1.0.0/24".parse().expect("net"), via: None },
                Route { dst: "0.0.0.0/0".parse().expect("net"), via: Some("10.1.0.1".parse().expect("ip")) },
            ],
        }
    }

    fn host_link<'a>(host: &'a mut HostView, name: &str) -> &'a mut ObservedLink {
        host.links.iter_mut().find(|l| l.name == name).expect("link")
    }

    fn vlans(v: &[Option<u16>]) -> BTreeSet<Option<u16>> {
        v.iter().copied().collect()
    }

    #[test]
    fn converged_state_has_no_drift() {
        let n = node(DatapathMode::VlanFiltering);
        let (host, pod) = converged_filtering();
        assert_eq!(diff_node(&n, &vlans(&[Some(100)]), &host), vec![]);
        assert_eq!(diff_attachment(&n, &att(Some(100)), &host, &pod), vec![]);
    }

    #[test]
    fn fresh_filtering_node() {
        let n = node(DatapathMode::VlanFiltering);
        let host = HostView { links: vec![uplink(None, vec![])] };
        let drifts = diff_node(&n, &vlans(&[Some(100), None]), &host);
        assert_eq!(drifts.len(), 4, "{drifts:#?}");
        assert!(matches!(&drifts[0], Drift::LinkMissing { expected } if expected.name == "br0"
            && expected.kind == ExpectedKind::Bridge { vlan_filtering: true }));
        assert_eq!(drifts[1], Drift::NotInBridge { link: "eth0".into(), want: "br0".into(), have: None });
        assert_eq!(drifts[2], Drift::PortVlanMissing { port: "eth0".into(), vlan: PortVlan::access(NATIVE_VID) });
        assert_eq!(drifts[3], Drift::PortVlanMissing { port: "eth0".into(), vlan: PortVlan::tagged(100) });
    }

    #[test]
    fn missing_uplink_is_a_conflict() {
        let n = node(DatapathMode::VlanFiltering);
        let host = HostView { links: vec![bridge(5, "br0", true)] };
        let drifts = diff_node(&n, &vlans(&[None]), &host);
        assert_eq!(drifts, vec![Drift::UplinkMissing { name: "eth0".into() }]);
        assert!(!drifts[0].is_repairable());
    }

    #[test]
    fn node_link_drifts() {
        let n = node(DatapathMode::VlanFiltering);
        let v = vlans(&[Some(100)]);
        let (mut host, _) = converged_filtering();
        host_link(&mut host, "br0").kind = LinkKind::Bridge { vlan_filtering: None };
        host_link(&mut host, "br0").admin_up = false;
        host_link(&mut host, "eth0").admin_up = false;
        assert_eq!(
            diff_node(&n, &v, &host),
            vec![
                Drift::VlanFiltering { bridge: "br0".into(), want: true },
                Drift::LinkDown { link: "br0".into() },
                Drift::LinkDown { link: "eth0".into() },
            ]
        );
        // A lost trunk VLAN; other VLANs on the uplink are left alone.
        let (mut host, _) = converged_filtering();
        host_link(&mut host, "eth0").vlans = vec![PortVlan::access(NATIVE_VID), PortVlan::tagged(300)];
        assert_eq!(
            diff_node(&n, &v, &host),
            vec![Drift::PortVlanMissing { port: "eth0".into(), vlan: PortVlan::tagged(100) }]
        );
        // A foreign link under the bridge's name.
        let (mut host, _) = converged_filtering();
        host_link(&mut host, "br0").kind = LinkKind::Veth;
        let drifts = diff_node(&n, &v, &host);
        assert_eq!(drifts, vec![Drift::WrongKind { name: "br0".into(), want: "bridge".into(), have: "veth".into() }]);
        assert!(!drifts[0].is_repairable());
        // MTU.
        let mut n = n;
        n.mtu = Some(9000);
        let (host, _) = converged_filtering();
        assert_eq!(diff_node(&n, &v, &host), vec![Drift::Mtu { link: "br0".into(), want: 9000, have: 1500 }]);
    }

    #[test]
    fn per_vlan_bridge_node() {
        let n = node(DatapathMode::PerVlanBridge);
        let v = vlans(&[Some(100), Some(200)]);
        let host = HostView { links: vec![uplink(None, vec![])] };
        let names: Vec<String> = diff_node(&n, &v, &host)
            .iter()
            .map(|d| match d {
                Drift::LinkMissing { expected } => format!("missing {}", expected.name),
                other => other.to_string(),
            })
            .collect();
        assert_eq!(
            names,
            [
                "missing br0",
                "eth0 is not a port of br0",
                "missing br0.100",
                "missing eth0.100",
                "missing br0.200",
                "missing eth0.200"
            ]
        );

        let mut sub = link(20, "eth0.100", LinkKind::Vlan { vid: 100, parent: Some("eth0".into()) });
        sub.master = Some("br0.100".into());
        let mut host = HostView {
            links: vec![uplink(Some("br0"), vec![]), bridge(5, "br0", false), bridge(6, "br0.100", false), sub],
        };
        assert_eq!(diff_node(&n, &vlans(&[Some(100)]), &host), vec![]);
        // A bridge that reports no vlan_filtering (kernel without it) counts as off.
        host_link(&mut host, "br0.100").kind = LinkKind::Bridge { vlan_filtering: None };
        assert_eq!(diff_node(&n, &vlans(&[Some(100)]), &host), vec![]);
        host_link(&mut host, "eth0.100").kind = LinkKind::Vlan { vid: 101, parent: Some("eth0".into()) };
        let drifts = diff_node(&n, &vlans(&[Some(100)]), &host);
        assert!(matches!(&drifts[..], [Drift::WrongKind { name, .. }] if name == "eth0.100"), "{drifts:?}");
    }

    #[test]
    fn node_without_uplink_needs_only_bridges() {
        let mut n = node(DatapathMode::PerVlanBridge);
        n.uplink = None;
        let links = layout::node_links(&n, &vlans(&[Some(7), None]));
        let names: Vec<&str> = links.iter().map(|l| l.name.as_str()).collect();
        assert_eq!(names, ["br0", "br0.7"]);
    }

    #[test]
    fn attachment_existence_cases() {
        let n = node(DatapathMode::VlanFiltering);
        let a = att(Some(100));
        let (host, pod) = converged_filtering();
        let host_without_veth =
            HostView { links: host.links.iter().filter(|l| l.name != a.host_veth).cloned().collect() };

        // Namespace gone: nothing else is judged.
        assert_eq!(
            diff_attachment(&n, &a, &host, &PodView::missing()),
            vec![Drift::NetnsMissing { netns: a.netns.clone() }]
        );
        // Neither end.
        let empty_pod = PodView { netns_present: true, loopback_up: true, ..PodView::default() };
        let drifts = diff_attachment(&n, &a, &host_without_veth, &empty_pod);
        assert!(matches!(&drifts[..], [Drift::VethMissing { .. }]), "{drifts:?}");
        // The pod already has an `eth0` that is not ours.
        let drifts = diff_attachment(&n, &a, &host_without_veth, &pod);
        assert_eq!(drifts, vec![Drift::PodLinkTaken { netns: a.netns.clone(), ifname: "eth0".into() }]);
        assert!(!drifts[0].is_repairable());
        // Host end present, pod end gone (renamed inside the pod).
        let drifts = diff_attachment(&n, &a, &host, &empty_pod);
        assert!(matches!(&drifts[..], [Drift::PodLinkMissing { .. }]), "{drifts:?}");
        // Both present but not each other's peer.
        let mut other = pod.clone();
        if let Some(l) = other.link.as_mut() {
            l.peer_index = Some(99);
        }
        assert_eq!(
            diff_attachment(&n, &a, &host, &other),
            vec![Drift::PodLinkTaken { netns: a.netns.clone(), ifname: "eth0".into() }]
        );
        // The host veth's name is taken by something else.
        let mut host2 = host.clone();
        host_link(&mut host2, &a.host_veth).kind = LinkKind::Bridge { vlan_filtering: Some(false) };
        let drifts = diff_attachment(&n, &a, &host2, &pod);
        assert!(matches!(&drifts[..], [Drift::WrongKind { want, have, .. }] if want == "veth" && have == "bridge"));
    }

    #[test]
    fn orphans_are_our_veths_without_an_attachment() {
        let a = att(None);
        let gone = crate::datapath::desired::host_veth_name("c2", "eth0");
        let host = HostView {
            links: vec![
                link(10, &a.host_veth, LinkKind::Veth),
                link(11, &gone, LinkKind::Veth),
                link(12, "hcnot-a-hash", LinkKind::Veth),
                link(13, "hc0123456789a", LinkKind::Bridge { vlan_filtering: None }),
            ],
        };
        assert_eq!(orphan_ports(&host, std::slice::from_ref(&a)), vec![gone]);
        assert_eq!(orphan_ports(&host, &[]).len(), 2);
    }

    #[test]
    fn detached_port_is_found() {
        let n = node(DatapathMode::VlanFiltering);
        let a = att(Some(100));
        let (mut host, pod) = converged_filtering();
        let veth = host_link(&mut host, &a.host_veth);
        veth.master = None;
        veth.vlans.clear();
        assert_eq!(
            diff_attachment(&n, &a, &host, &pod),
            vec![
                Drift::NotInBridge { link: a.host_veth.clone(), want: "br0".into(), have: None },
                Drift::PortVlanMissing { port: a.host_veth.clone(), vlan: PortVlan::access(100) },
            ]
        );
    }

    #[test]
    fn port_vlan_drifts() {
        let n = node(DatapathMode::VlanFiltering);
        let a = att(Some(100));
        let (mut host, pod) = converged_filtering();
        // What the kernel leaves after `vlan add 100 pvid untagged` on a fresh port.
        host_link(&mut host, &a.host_veth).vlans =
            vec![PortVlan { vid: 1, pvid: false, untagged: true }, PortVlan::access(100)];
        assert_eq!(
            diff_attachment(&n, &a, &host, &pod),
            vec![Drift::PortVlanExtra {
                port: a.host_veth.clone(),
                vlan: PortVlan { vid: 1, pvid: false, untagged: true }
            }]
        );
        // Right VID, wrong flags: re-adding fixes the flags; nothing to prune.
        host_link(&mut host, &a.host_veth).vlans = vec![PortVlan::tagged(100)];
        assert_eq!(
            diff_attachment(&n, &a, &host, &pod),
            vec![Drift::PortVlanMissing { port: a.host_veth.clone(), vlan: PortVlan::access(100) }]
        );
        // A pod in no VLAN sits in the native VLAN.
        let a = att(None);
        host_link(&mut host, &a.host_veth).vlans = vec![PortVlan::access(NATIVE_VID)];
        assert_eq!(diff_attachment(&n, &a, &host, &pod), vec![]);
    }

    #[test]
    fn per_vlan_bridge_attachment_ignores_vlans_and_wants_the_vlan_bridge() {
        let n = node(DatapathMode::PerVlanBridge);
        let a = att(Some(100));
        let (mut host, pod) = converged_filtering();
        host_link(&mut host, &a.host_veth).vlans.clear();
        assert_eq!(
            diff_attachment(&n, &a, &host, &pod),
            vec![Drift::NotInBridge { link: a.host_veth.clone(), want: "br0.100".into(), have: Some("br0".into()) }]
        );
        host_link(&mut host, &a.host_veth).master = Some("br0.100".into());
        assert_eq!(diff_attachment(&n, &a, &host, &pod), vec![]);
    }

    #[test]
    fn pod_side_drifts() {
        let n = node(DatapathMode::VlanFiltering);
        let mut a = att(Some(100));
        a.addresses.push("fd00::5/64".parse().expect("net"));
        a.gateways.push("fd00::1".parse().expect("ip"));
        a.mtu = Some(1400);
        a.mac = Some("02:00:00:00:00:05".parse().expect("mac"));
        let (mut host, mut pod) = converged_filtering();
        host_link(&mut host, &a.host_veth).admin_up = false;
        pod.loopback_up = false;
        if let Some(l) = pod.link.as_mut() {
            l.admin_up = false;
        }
        let (netns, ifname) = (a.netns.clone(), "eth0".to_string());
        let drifts = diff_attachment(&n, &a, &host, &pod);
        assert_eq!(
            drifts,
            vec![
                Drift::Mtu { link: a.host_veth.clone(), want: 1400, have: 1500 },
                Drift::LinkDown { link: a.host_veth.clone() },
                Drift::PodMac { netns: netns.clone(), ifname: ifname.clone(), want: a.mac.expect("mac"), have: None },
                Drift::PodMtu { netns: netns.clone(), ifname: ifname.clone(), want: 1400, have: 1500 },
                Drift::LoopbackDown { netns: netns.clone() },
                Drift::AddressMissing {
                    netns: netns.clone(),
                    ifname: ifname.clone(),
                    address: "fd00::5/64".parse().expect("net")
                },
                Drift::PodLinkDown { netns: netns.clone(), ifname: ifname.clone() },
                Drift::RouteMissing {
                    netns,
                    ifname,
                    route: Route { dst: "::/0".parse().expect("net"), via: Some("fd00::1".parse().expect("ip")) },
                },
            ]
        );
        assert!(drifts.iter().all(Drift::is_repairable));
        // Every drift says what it is, for CHECK's message.
        for d in &drifts {
            assert!(!d.to_string().is_empty());
            assert!(!d.kind().is_empty());
        }
    }
}
