//! From drifts to actions. Pure: the executor in `driver.rs` performs the actions in order.

use std::path::PathBuf;

use ipnet::IpNet;

use super::desired::{DesiredAttachment, MacAddr, Route};
use super::drift::Drift;
use super::layout::{ExpectedKind, ExpectedLink};
use super::observed::PortVlan;

/// One change to make. Host-side actions act in the node's namespace, `Pod*` ones in `netns`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    CreateBridge {
        name: String,
        vlan_filtering: bool,
        mtu: Option<u32>,
    },
    CreateVlan {
        name: String,
        parent: String,
        vid: u16,
    },
    /// A veth pair whose peer is created directly inside `netns` under its final name, so no
    /// temporary name can clash with a host link.
    CreateVeth {
        host: String,
        peer: String,
        netns: PathBuf,
        mtu: Option<u32>,
        mac: Option<MacAddr>,
    },
    DeleteLink {
        name: String,
    },
    SetVlanFiltering {
        bridge: String,
        on: bool,
    },
    SetMaster {
        link: String,
        master: String,
    },
    SetMtu {
        link: String,
        mtu: u32,
    },
    SetUp {
        link: String,
    },
    AddPortVlan {
        port: String,
        vlan: PortVlan,
    },
    DelPortVlan {
        port: String,
        vid: u16,
    },
    PodSetUp {
        netns: PathBuf,
        link: String,
    },
    PodSetMtu {
        netns: PathBuf,
        link: String,
        mtu: u32,
    },
    PodSetMac {
        netns: PathBuf,
        link: String,
        mac: MacAddr,
    },
    PodAddAddress {
        netns: PathBuf,
        link: String,
        address: IpNet,
    },
    PodAddRoute {
        netns: PathBuf,
        link: String,
        route: Route,
    },
}

/// The actions that repair a list of drifts, and the drifts no action can repair.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    pub actions: Vec<Action>,
    pub conflicts: Vec<Drift>,
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.actions.is_empty() && self.conflicts.is_empty()
    }
}

/// Plans the repair of `drifts`, keeping their order (the diff lists a bridge before its
/// ports, and a link's membership before bringing it up).
pub fn plan(drifts: &[Drift]) -> Plan {
    let mut plan = Plan::default();
    for drift in drifts {
        if !drift.is_repairable() {
            plan.conflicts.push(drift.clone());
            continue;
        }
        let actions = &mut plan.actions;
        match drift {
            Drift::LinkMissing { expected } => create_link(actions, expected),
            Drift::VlanFiltering { bridge, want } => {
                actions.push(Action::SetVlanFiltering { bridge: bridge.clone(), on: *want })
            }
            Drift::NotInBridge { link, want, .. } => {
                actions.push(Action::SetMaster { link: link.clone(), master: want.clone() })
            }
            Drift::LinkDown { link } => actions.push(Action::SetUp { link: link.clone() }),
            Drift::Mtu { link, want, .. } => actions.push(Action::SetMtu { link: link.clone(), mtu: *want }),
            Drift::PortVlanMissing { port, vlan } => {
                actions.push(Action::AddPortVlan { port: port.clone(), vlan: *vlan })
            }
            Drift::PortVlanExtra { port, vlan } => {
                actions.push(Action::DelPortVlan { port: port.clone(), vid: vlan.vid })
            }
            Drift::VethMissing { attachment, port } => create_attachment(actions, attachment, port),
            Drift::PodLinkMissing { attachment, port } => {
                actions.push(Action::DeleteLink { name: attachment.host_veth.clone() });
                create_attachment(actions, attachment, port);
            }
            Drift::PodLinkDown { netns, ifname } => {
                actions.push(Action::PodSetUp { netns: netns.clone(), link: ifname.clone() })
            }
            Drift::LoopbackDown { netns } => actions.push(Action::PodSetUp { netns: netns.clone(), link: "lo".into() }),
            Drift::PodMtu { netns, ifname, want, .. } => {
                actions.push(Action::PodSetMtu { netns: netns.clone(), link: ifname.clone(), mtu: *want })
            }
            Drift::PodMac { netns, ifname, want, .. } => {
                actions.push(Action::PodSetMac { netns: netns.clone(), link: ifname.clone(), mac: *want })
            }
            Drift::AddressMissing { netns, ifname, address } => {
                actions.push(Action::PodAddAddress { netns: netns.clone(), link: ifname.clone(), address: *address })
            }
            Drift::RouteMissing { netns, ifname, route } => {
                actions.push(Action::PodAddRoute { netns: netns.clone(), link: ifname.clone(), route: *route })
            }
            Drift::UplinkMissing { .. }
            | Drift::WrongKind { .. }
            | Drift::NetnsMissing { .. }
            | Drift::PodLinkTaken { .. } => {}
        }
    }
    plan
}

/// Creates a node link and puts it in its final state at once, so a fresh node needs one round.
fn create_link(actions: &mut Vec<Action>, expected: &ExpectedLink) {
    let name = expected.name.clone();
    match &expected.kind {
        ExpectedKind::Bridge { vlan_filtering } => actions.push(Action::CreateBridge {
            name: name.clone(),
            vlan_filtering: *vlan_filtering,
            mtu: expected.mtu,
        }),
        ExpectedKind::Vlan { parent, vid } => {
            actions.push(Action::CreateVlan { name: name.clone(), parent: parent.clone(), vid: *vid });
            if let Some(mtu) = expected.mtu {
                actions.push(Action::SetMtu { link: name.clone(), mtu });
            }
        }
        // Never created here: the uplink is the operator's, a veth comes with its attachment.
        ExpectedKind::Existing | ExpectedKind::Veth => return,
    }
    port_membership(actions, expected);
    actions.push(Action::SetUp { link: name });
}

/// Master and VLAN memberships of a freshly created port.
fn port_membership(actions: &mut Vec<Action>, expected: &ExpectedLink) {
    if let Some(master) = &expected.master {
        actions.push(Action::SetMaster { link: expected.name.clone(), master: master.clone() });
    }
    if let Some(vlans) = &expected.vlans {
        for vlan in &vlans.entries {
            actions.push(Action::AddPortVlan { port: expected.name.clone(), vlan: *vlan });
        }
    }
}

/// The whole attachment: veth pair, host port, then the pod side (loopback, MAC and MTU at
/// creation, addresses, link up, routes — routes last, as their gateways must be on-link).
fn create_attachment(actions: &mut Vec<Action>, att: &DesiredAttachment, port: &ExpectedLink) {
    actions.push(Action::CreateVeth {
        host: att.host_veth.clone(),
        peer: att.ifname.clone(),
        netns: att.netns.clone(),
        mtu: port.mtu,
        mac: att.mac,
    });
    actions.extend(finish_attachment(att, port));
}

/// What a veth pair just created for `att` (down, on no bridge, its peer with its MAC and MTU
/// but no address) still needs: the host port's membership and link, then the pod side.
pub fn finish_attachment(att: &DesiredAttachment, port: &ExpectedLink) -> Vec<Action> {
    let mut actions = Vec::new();
    port_membership(&mut actions, port);
    actions.push(Action::SetUp { link: att.host_veth.clone() });
    let (netns, link) = (&att.netns, &att.ifname);
    actions.push(Action::PodSetUp { netns: netns.clone(), link: "lo".into() });
    for address in &att.addresses {
        actions.push(Action::PodAddAddress { netns: netns.clone(), link: link.clone(), address: *address });
    }
    actions.push(Action::PodSetUp { netns: netns.clone(), link: link.clone() });
    for route in att.effective_routes() {
        actions.push(Action::PodAddRoute { netns: netns.clone(), link: link.clone(), route });
    }
    actions
}

#[cfg(test)]
mod tests {
    //! The planner against a model of the kernel: from many broken states, repeated
    //! diff → plan → apply reaches a state with no drift within the driver's round limit, and
    //! states it must not touch end as conflicts.

    use std::collections::BTreeSet;

    use super::*;
    use crate::datapath::desired::{DatapathMode, DesiredNode, NATIVE_VID};
    use crate::datapath::drift::{diff_attachment, diff_node};
    use crate::datapath::observed::{HostView, LinkKind, ObservedLink, PodView};

    /// The kernel behaviours the plan relies on.
    #[derive(Debug, Clone)]
    struct Sim {
        host: HostView,
        pod: PodView,
        next_index: u32,
    }

    impl Sim {
        fn new() -> Self {
            let mut uplink = ObservedLink::new(2, "eth0", LinkKind::Other(String::new()));
            uplink.master = None;
            Sim {
                host: HostView { links: vec![ObservedLink::new(1, "lo", LinkKind::Other(String::new())), uplink] },
                pod: PodView { netns_present: true, link: None, loopback_up: false, ..PodView::default() },
                next_index: 100,
            }
        }

        fn host_link(&mut self, name: &str) -> Result<&mut ObservedLink, String> {
            self.host.links.iter_mut().find(|l| l.name == name).ok_or(format!("ENODEV {name}"))
        }

        fn is_filtering_bridge(&self, name: &str) -> bool {
            self.host.link(name).is_some_and(|l| l.kind == LinkKind::Bridge { vlan_filtering: Some(true) })
        }

        fn add(&mut self, name: &str, kind: LinkKind) -> Result<u32, String> {
            if self.host.link(name).is_some() {
                return Err(format!("EEXIST {name}"));
            }
            self.next_index += 1;
            let mut l = ObservedLink::new(self.next_index, name, kind);
            l.admin_up = false;
            self.host.links.push(l);
            Ok(self.next_index)
        }

        fn pod_link(&mut self, name: &str) -> Result<&mut ObservedLink, String> {
            self.pod.link.as_mut().filter(|l| l.name == name).ok_or(format!("ENODEV {name} in pod"))
        }

        fn apply(&mut self, action: &Action) -> Result<(), String> {
            match action {
                Action::CreateBridge { name, vlan_filtering, mtu } => {
                    // Like the driver, "exists" is not an error; the next diff judges it.
                    if self.host.link(name).is_none() {
                        self.add(name, LinkKind::Bridge { vlan_filtering: Some(*vlan_filtering) })?;
                        if let Some(m) = mtu {
                            self.host_link(name)?.mtu = *m;
                        }
                    }
                }
                Action::CreateVlan { name, parent, vid } => {
                    self.host_link(parent)?;
                    if self.host.link(name).is_none() {
                        self.add(name, LinkKind::Vlan { vid: *vid, parent: Some(parent.clone()) })?;
                    }
                }
                Action::CreateVeth { host, peer, mtu, mac, .. } => {
                    if !self.pod.netns_present {
                        return Err("ENOENT netns".into());
                    }
                    if self.pod.link.as_ref().is_some_and(|l| &l.name == peer) {
                        return Err(format!("EEXIST {peer} in pod"));
                    }
                    let index = self.add(host, LinkKind::Veth)?;
                    let mut p = ObservedLink::new(3, peer, LinkKind::Veth);
                    p.admin_up = false;
                    p.peer_index = Some(index);
                    p.mac = *mac;
                    let h = self.host_link(host)?;
                    h.peer_index = Some(3);
                    if let Some(m) = mtu {
                        h.mtu = *m;
                        p.mtu = *m;
                    }
                    self.pod.link = Some(p);
                }
                Action::DeleteLink { name } => {
                    let l = self.host_link(name)?.clone();
                    self.host.links.retain(|x| x.name != *name);
                    if l.kind == LinkKind::Veth && self.pod.link.as_ref().is_some_and(|p| Some(p.index) == l.peer_index)
                    {
                        self.pod.link = None;
                        self.pod.addresses.clear();
                        self.pod.routes.clear();
                    }
                }
                Action::SetVlanFiltering { bridge, on } => {
                    self.host_link(bridge)?.kind = LinkKind::Bridge { vlan_filtering: Some(*on) };
                }
                Action::SetMaster { link, master } => {
                    self.host_link(master)?;
                    let filtering = self.is_filtering_bridge(master);
                    let l = self.host_link(link)?;
                    l.master = Some(master.clone());
                    // A new port of a filtering bridge gets the default PVID (1), untagged.
                    l.vlans = if filtering { vec![PortVlan::access(1)] } else { vec![] };
                }
                Action::SetMtu { link, mtu } => self.host_link(link)?.mtu = *mtu,
                Action::SetUp { link } => self.host_link(link)?.admin_up = true,
                Action::AddPortVlan { port, vlan } => {
                    let master = self.host_link(port)?.master.clone().ok_or(format!("EOPNOTSUPP {port} not a port"))?;
                    if !self.is_filtering_bridge(&master) {
                        return Err(format!("EOPNOTSUPP {master} not filtering"));
                    }
                    let l = self.host_link(port)?;
                    if vlan.pvid {
                        for v in &mut l.vlans {
                            v.pvid = false;
                        }
                    }
                    l.vlans.retain(|v| v.vid != vlan.vid);
                    l.vlans.push(*vlan);
                    l.vlans.sort();
                }
                Action::DelPortVlan { port, vid } => self.host_link(port)?.vlans.retain(|v| v.vid != *vid),
                Action::PodSetUp { link, .. } if link == "lo" => self.pod.loopback_up = true,
                Action::PodSetUp { link, .. } => {
                    self.pod_link(link)?.admin_up = true;
                    // The kernel adds the connected routes when the link comes up.
                    for a in self.pod.addresses.clone() {
                        let r = Route { dst: a.trunc(), via: None };
                        if !self.pod.routes.contains(&r) {
                            self.pod.routes.push(r);
                        }
                    }
                }
                Action::PodSetMtu { link, mtu, .. } => self.pod_link(link)?.mtu = *mtu,
                Action::PodSetMac { link, mac, .. } => self.pod_link(link)?.mac = Some(*mac),
                Action::PodAddAddress { link, address, .. } => {
                    self.pod_link(link)?;
                    if !self.pod.addresses.contains(address) {
                        self.pod.addresses.push(*address);
                    }
                }
                Action::PodAddRoute { link, route, .. } => {
                    if !self.pod_link(link)?.admin_up {
                        return Err("ENETDOWN".into());
                    }
                    if let Some(via) = route.via
                        && !self.pod.addresses.iter().any(|a| a.contains(&via))
                    {
                        return Err(format!("ENETUNREACH {via}"));
                    }
                    if !self.pod.routes.contains(route) {
                        self.pod.routes.push(*route);
                    }
                }
            }
            Ok(())
        }

        fn drifts(&self, node: &DesiredNode, att: &DesiredAttachment) -> Vec<Drift> {
            let mut d = diff_node(node, &BTreeSet::from([att.vlan]), &self.host);
            d.extend(diff_attachment(node, att, &self.host, &self.pod));
            d
        }

        /// What the driver does: up to four rounds. Returns the rounds that changed something.
        fn converge(&mut self, node: &DesiredNode, att: &DesiredAttachment) -> Result<usize, String> {
            for round in 0..4 {
                let p = plan(&self.drifts(node, att));
                if !p.conflicts.is_empty() {
                    return Err(format!("conflicts {:?}", p.conflicts));
                }
                if p.actions.is_empty() {
                    return Ok(round);
                }
                for a in &p.actions {
                    self.apply(a).map_err(|e| format!("round {round}: {a:?}: {e}"))?;
                }
            }
            let left = self.drifts(node, att);
            if left.is_empty() { Ok(4) } else { Err(format!("not converged: {left:?}")) }
        }
    }

    fn node(mode: DatapathMode) -> DesiredNode {
        DesiredNode { mode, bridge: "br0".into(), uplink: Some("eth0".into()), mtu: None }
    }

    fn att(vlan: Option<u16>) -> DesiredAttachment {
        let mut a = DesiredAttachment::new("c1", "eth0", "/run/netns/p1");
        a.vlan = vlan;
        a.addresses = vec!["10.1.0.5/24".parse().expect("net"), "fd00::5/64".parse().expect("net")];
        a.gateways = vec!["10.1.0.1".parse().expect("ip"), "fd00::1".parse().expect("ip")];
        a.routes = vec![Route { dst: "192.168.0.0/16".parse().expect("net"), via: None }];
        a.mtu = Some(1450);
        a
    }

    /// Ways the state can break; each is applied to a converged state.
    /// A named way to break a converged state.
    type Mutation = (&'static str, fn(&mut Sim, &DesiredAttachment));

    fn mutations() -> Vec<Mutation> {
        vec![
            ("port off its bridge", |s, a| {
                let l = s.host_link(&a.host_veth).expect("veth");
                l.master = None;
                l.vlans.clear();
            }),
            ("port lost its VLAN", |s, a| s.host_link(&a.host_veth).expect("veth").vlans.clear()),
            ("port in an extra VLAN", |s, a| {
                s.host_link(&a.host_veth).expect("veth").vlans.push(PortVlan::tagged(999))
            }),
            ("port down", |s, a| s.host_link(&a.host_veth).expect("veth").admin_up = false),
            ("bridge down", |s, _| {
                s.host.links.iter_mut().filter(|l| l.name.starts_with("br0")).for_each(|l| l.admin_up = false)
            }),
            ("uplink down", |s, _| s.host_link("eth0").expect("eth0").admin_up = false),
            ("uplink off the bridge", |s, _| {
                let l = s.host_link("eth0").expect("eth0");
                l.master = None;
                l.vlans.clear();
            }),
            ("trunk lost its VLANs", |s, _| s.host_link("eth0").expect("eth0").vlans.clear()),
            ("vlan_filtering off", |s, _| {
                if let Ok(l) = s.host_link("br0") {
                    l.kind = LinkKind::Bridge { vlan_filtering: Some(false) };
                }
            }),
            ("VLAN bridge deleted", |s, a| {
                let name = format!("br0.{}", a.vlan.unwrap_or(0));
                s.host.links.retain(|l| l.name != name);
                for l in &mut s.host.links {
                    if l.master.as_deref() == Some(name.as_str()) {
                        l.master = None;
                    }
                }
            }),
            ("veth deleted", |s, a| {
                // Twice in a row the second finds nothing, as in the kernel.
                let _ = s.apply(&Action::DeleteLink { name: a.host_veth.clone() });
            }),
            ("pod link down", |s, _| {
                if let Some(l) = s.pod.link.as_mut() {
                    l.admin_up = false;
                }
                s.pod.routes.clear();
            }),
            ("pod loopback down", |s, _| s.pod.loopback_up = false),
            ("address removed", |s, _| {
                if !s.pod.addresses.is_empty() {
                    s.pod.addresses.remove(0);
                    s.pod.routes.retain(|r| r.dst.addr().is_ipv6());
                }
            }),
            ("route removed", |s, _| {
                s.pod.routes.pop();
            }),
            ("pod MTU changed", |s, _| {
                if let Some(l) = s.pod.link.as_mut() {
                    l.mtu = 1500;
                }
            }),
            ("pod link renamed away", |s, _| s.pod.link = None),
        ]
    }

    #[test]
    fn fresh_attachment_plans_in_order() {
        let n = node(DatapathMode::VlanFiltering);
        let a = att(Some(100));
        let mut sim = Sim::new();
        let p = plan(&sim.drifts(&n, &a));
        assert!(p.conflicts.is_empty());
        let ns = a.netns.clone();
        let link = a.ifname.clone();
        let veth = a.host_veth.clone();
        let expected = vec![
            Action::CreateBridge { name: "br0".into(), vlan_filtering: true, mtu: None },
            Action::SetUp { link: "br0".into() },
            Action::SetMaster { link: "eth0".into(), master: "br0".into() },
            Action::AddPortVlan { port: "eth0".into(), vlan: PortVlan::access(NATIVE_VID) },
            Action::AddPortVlan { port: "eth0".into(), vlan: PortVlan::tagged(100) },
            Action::CreateVeth {
                host: veth.clone(),
                peer: link.clone(),
                netns: ns.clone(),
                mtu: Some(1450),
                mac: None,
            },
            Action::SetMaster { link: veth.clone(), master: "br0".into() },
            Action::AddPortVlan { port: veth.clone(), vlan: PortVlan::access(100) },
            Action::SetUp { link: veth.clone() },
            Action::PodSetUp { netns: ns.clone(), link: "lo".into() },
            Action::PodAddAddress { netns: ns.clone(), link: link.clone(), address: a.addresses[0] },
            Action::PodAddAddress { netns: ns.clone(), link: link.clone(), address: a.addresses[1] },
            Action::PodSetUp { netns: ns.clone(), link: link.clone() },
        ];
        assert_eq!(p.actions[..expected.len()], expected[..]);
        let routes: Vec<Action> = a
            .effective_routes()
            .into_iter()
            .map(|route| Action::PodAddRoute { netns: ns.clone(), link: link.clone(), route })
            .collect();
        assert_eq!(p.actions[expected.len()..], routes[..]);
        // Round 1 builds, round 2 drops the default VLAN 1 the kernel gave the new port.
        assert_eq!(sim.converge(&n, &a), Ok(2));
        assert_eq!(sim.host.link(&veth).map(|l| l.vlans.clone()), Some(vec![PortVlan::access(100)]));
        // Idempotent: a second setup finds nothing to do.
        assert_eq!(sim.converge(&n, &a), Ok(0));
    }

    #[test]
    fn every_single_and_double_breakage_is_repaired() {
        let mut cases = 0;
        for mode in [DatapathMode::VlanFiltering, DatapathMode::PerVlanBridge] {
            for vlan in [None, Some(100)] {
                let n = node(mode);
                let a = att(vlan);
                let mut base = Sim::new();
                base.converge(&n, &a).expect("fresh setup converges");
                let ms = mutations();
                for (i, (name1, m1)) in ms.iter().enumerate() {
                    for (name2, m2) in ms.iter().skip(i).map(|(n, m)| (Some(*n), Some(m))).chain([(None, None)]) {
                        let mut sim = base.clone();
                        m1(&mut sim, &a);
                        if let Some(m2) = m2 {
                            m2(&mut sim, &a);
                        }
                        let what = format!("{mode:?} vlan {vlan:?}: {name1} + {name2:?}");
                        let rounds = sim.converge(&n, &a).unwrap_or_else(|e| panic!("{what}: {e}"));
                        assert!(rounds <= 3, "{what}: {rounds} rounds");
                        assert_eq!(sim.drifts(&n, &a), vec![], "{what}");
                        cases += 1;
                    }
                }
            }
        }
        assert!(cases > 4 * 150, "{cases}");
    }

    #[test]
    fn conflicts_are_not_planned() {
        let n = node(DatapathMode::VlanFiltering);
        let a = att(Some(100));
        // The pod already has an eth0 of someone else's.
        let mut sim = Sim::new();
        sim.pod.link = Some(ObservedLink::new(7, "eth0", LinkKind::Veth));
        let p = plan(&sim.drifts(&n, &a));
        assert!(matches!(&p.conflicts[..], [Drift::PodLinkTaken { .. }]), "{p:?}");
        assert!(!p.actions.iter().any(|x| matches!(x, Action::CreateVeth { .. } | Action::DeleteLink { .. })));
        // No uplink: nothing is created for it.
        let mut sim = Sim::new();
        sim.host.links.retain(|l| l.name != "eth0");
        let p = plan(&sim.drifts(&n, &a));
        assert_eq!(p.conflicts, vec![Drift::UplinkMissing { name: "eth0".into() }]);
        // The pod is gone: nothing at all is planned for it.
        let mut sim = Sim::new();
        sim.converge(&n, &a).expect("converge");
        sim.pod = PodView::missing();
        let p = plan(&diff_attachment(&n, &a, &sim.host, &sim.pod));
        assert!(p.actions.is_empty());
        assert_eq!(p.conflicts, vec![Drift::NetnsMissing { netns: a.netns.clone() }]);
    }

    #[test]
    fn renamed_pod_link_is_rebuilt() {
        let n = node(DatapathMode::VlanFiltering);
        let a = att(None);
        let mut sim = Sim::new();
        sim.converge(&n, &a).expect("converge");
        sim.pod.link = None;
        let p = plan(&diff_attachment(&n, &a, &sim.host, &sim.pod));
        assert_eq!(p.actions[0], Action::DeleteLink { name: a.host_veth.clone() });
        assert!(matches!(p.actions[1], Action::CreateVeth { .. }));
    }
}
