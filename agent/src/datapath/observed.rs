//! What the kernel reports, as plain data: the diff reads these, `netlink.rs` fills them.

use std::net::IpAddr;

use ipnet::IpNet;

use super::desired::{MacAddr, Route};

/// A bridge port's membership in one VLAN (`bridge vlan show`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PortVlan {
    pub vid: u16,
    /// Untagged frames entering the port are put in this VLAN.
    pub pvid: bool,
    /// Frames of this VLAN leave the port without a tag.
    pub untagged: bool,
}

impl PortVlan {
    /// The VLAN of an access port: PVID, egress untagged.
    pub fn access(vid: u16) -> Self {
        PortVlan { vid, pvid: true, untagged: true }
    }

    /// A tagged VLAN on a trunk port.
    pub fn tagged(vid: u16) -> Self {
        PortVlan { vid, pvid: false, untagged: false }
    }
}

impl std::fmt::Display for PortVlan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "vid {}", self.vid)?;
        if self.pvid {
            write!(f, " pvid")?;
        }
        if self.untagged {
            write!(f, " untagged")?;
        }
        Ok(())
    }
}

/// The kind of a link, as far as the datapath cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkKind {
    /// `vlan_filtering` is `None` when the kernel does not report it (built without
    /// CONFIG_BRIDGE_VLAN_FILTERING), which means off.
    Bridge {
        vlan_filtering: Option<bool>,
    },
    Veth,
    /// An 802.1Q link; `parent` is resolved to a name when it is in the same namespace.
    Vlan {
        vid: u16,
        parent: Option<String>,
    },
    /// Anything else, by its kind name ("" for physical devices, which have none).
    Other(String),
}

/// One link in one network namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObservedLink {
    pub index: u32,
    pub name: String,
    pub kind: LinkKind,
    /// The bridge it is a port of, by name.
    pub master: Option<String>,
    /// IFLA_LINK: for a veth, the peer's index (in the peer's namespace).
    pub peer_index: Option<u32>,
    /// IFF_UP: administratively up.
    pub admin_up: bool,
    /// Operational state is up (carrier and lower layers).
    pub oper_up: bool,
    pub mtu: u32,
    pub mac: Option<MacAddr>,
    /// Bridge VLAN memberships, for ports of a `vlan_filtering` bridge.
    pub vlans: Vec<PortVlan>,
}

impl ObservedLink {
    /// A minimal link, for building views in tests and by hand.
    pub fn new(index: u32, name: &str, kind: LinkKind) -> Self {
        ObservedLink {
            index,
            name: name.to_string(),
            kind,
            master: None,
            peer_index: None,
            admin_up: true,
            oper_up: true,
            mtu: 1500,
            mac: None,
            vlans: Vec::new(),
        }
    }

    pub fn kind_name(&self) -> String {
        match &self.kind {
            LinkKind::Bridge { .. } => "bridge".into(),
            LinkKind::Veth => "veth".into(),
            LinkKind::Vlan { .. } => "vlan".into(),
            LinkKind::Other(k) if k.is_empty() => "device".into(),
            LinkKind::Other(k) => k.clone(),
        }
    }
}

/// The links of the node's (host) namespace.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostView {
    pub links: Vec<ObservedLink>,
}

impl HostView {
    pub fn link(&self, name: &str) -> Option<&ObservedLink> {
        self.links.iter().find(|l| l.name == name)
    }
}

/// A pod's namespace as far as one attachment is concerned.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodView {
    /// The namespace file could be opened; when false the rest is empty.
    pub netns_present: bool,
    /// The link named `ifname`.
    pub link: Option<ObservedLink>,
    pub loopback_up: bool,
    /// Global addresses on `link` (IPv6 link-local ones are left out).
    pub addresses: Vec<IpNet>,
    /// Main-table routes whose output interface is `link`.
    pub routes: Vec<Route>,
}

impl PodView {
    pub fn missing() -> Self {
        PodView::default()
    }
}

/// A route as the kernel lists it, before it is matched against a pod's link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ObservedRoute {
    pub dst: IpNet,
    pub via: Option<IpAddr>,
    pub oif: Option<u32>,
}
