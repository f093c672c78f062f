//! What the datapath should look like: the node's bridge layout and one pod attachment.
//!
//! Plain data, validated once ([`DesiredNode::validate`], [`DesiredAttachment::validate`])
//! before anything touches the kernel.

use std::collections::BTreeSet;
use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;
use std::str::FromStr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use super::error::ValidationError;

/// Longest interface name the kernel accepts (IFNAMSIZ - 1).
pub const MAX_IFNAME_LEN: usize = 15;

/// In `VlanFiltering` mode the bridge's default VLAN: pods of pools without a VLAN sit in it,
/// and the uplink carries it untagged (the switch's native VLAN).
pub const NATIVE_VID: u16 = 1;

/// How VLANs are realised on the node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DatapathMode {
    /// One `vlan_filtering` bridge; the uplink is a tagged trunk; each pod port is untagged with
    /// its pool's VLAN as PVID.
    VlanFiltering,
    /// For NICs or kernels without VLAN filtering: an `uplink.<vid>` 802.1Q link and a bridge
    /// `<bridge>.<vid>` per VLAN; pools without a VLAN use `<bridge>` itself.
    PerVlanBridge,
}

/// The node-wide part of the datapath.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DesiredNode {
    pub mode: DatapathMode,
    /// The base bridge (`br0`); per-VLAN bridges are named `<bridge>.<vid>`.
    pub bridge: String,
    /// The physical (or bond) interface trunked to the switch; `None` keeps pods node-local.
    pub uplink: Option<String>,
    /// MTU of the bridges the agent creates; `None` leaves the kernel's choice.
    pub mtu: Option<u32>,
}

impl DesiredNode {
    /// Checks names and MTU, including that every derived per-VLAN name fits in 15 bytes.
    pub fn validate(&self) -> Result<(), ValidationError> {
        check_ifname("bridge", &self.bridge)?;
        if let Some(uplink) = &self.uplink {
            check_ifname("uplink", uplink)?;
            if uplink == &self.bridge {
                return Err(ValidationError::SameName { name: uplink.clone() });
            }
        }
        if let Some(mtu) = self.mtu {
            check_mtu(mtu)?;
        }
        if self.mode == DatapathMode::PerVlanBridge {
            // The longest VLAN suffix is ".4094": 5 bytes.
            check_ifname("per-VLAN bridge", &vlan_link_name(&self.bridge, 4094))?;
            if let Some(uplink) = &self.uplink {
                check_ifname("uplink VLAN link", &vlan_link_name(uplink, 4094))?;
            }
        }
        Ok(())
    }

    /// The bridge a port in `vlan` is attached to.
    pub fn bridge_for(&self, vlan: Option<u16>) -> String {
        match (self.mode, vlan) {
            (DatapathMode::PerVlanBridge, Some(vid)) => vlan_link_name(&self.bridge, vid),
            _ => self.bridge.clone(),
        }
    }
}

/// `<base>.<vid>`, the naming of both per-VLAN bridges and 802.1Q links.
pub fn vlan_link_name(base: &str, vid: u16) -> String {
    format!("{base}.{vid}")
}

/// A route in the pod: `dst` via `via`, or on-link through the pod's interface when `via` is
/// `None`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Route {
    pub dst: IpNet,
    pub via: Option<IpAddr>,
}

impl fmt::Display for Route {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.via {
            Some(via) => write!(f, "{} via {via}", self.dst),
            None => write!(f, "{} on-link", self.dst),
        }
    }
}

/// An Ethernet address.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct MacAddr(pub [u8; 6]);

impl MacAddr {
    /// A unicast, non-zero address: one a port may use as its own.
    pub fn is_valid_unicast(&self) -> bool {
        self.0[0] & 1 == 0 && self.0 != [0; 6]
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

impl fmt::Debug for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl FromStr for MacAddr {
    type Err = ValidationError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || ValidationError::Mac { value: s.to_string() };
        let mut out = [0u8; 6];
        let mut parts = s.split(':');
        for byte in &mut out {
            let part = parts.next().ok_or_else(bad)?;
            if part.len() != 2 {
                return Err(bad());
            }
            *byte = u8::from_str_radix(part, 16).map_err(|_| bad())?;
        }
        if parts.next().is_some() {
            return Err(bad());
        }
        Ok(MacAddr(out))
    }
}

impl Serialize for MacAddr {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for MacAddr {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// One pod interface: a veth pair whose host end is a bridge port and whose other end is
/// `ifname` in the pod's network namespace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DesiredAttachment {
    pub container_id: String,
    /// The interface name inside the pod (CNI_IFNAME).
    pub ifname: String,
    /// The host end of the veth: [`host_veth_name`] of (container id, ifname).
    pub host_veth: String,
    /// `/var/run/netns/NAME` or `/proc/PID/ns/net`.
    pub netns: PathBuf,
    /// The pool's VLAN; `None` uses the bridge untagged.
    pub vlan: Option<u16>,
    /// Addresses with their prefix length (the pool's).
    pub addresses: Vec<IpNet>,
    /// Default gateways, at most one per address family; each inside one of `addresses`.
    pub gateways: Vec<IpAddr>,
    /// Extra routes; a route without `via` goes via the gateway of its family, or on-link when
    /// there is none (CNI's rule).
    pub routes: Vec<Route>,
    pub mtu: Option<u32>,
    pub mac: Option<MacAddr>,
}

impl DesiredAttachment {
    /// An attachment named the standard way, without addresses or routes yet.
    pub fn new(container_id: &str, ifname: &str, netns: impl Into<PathBuf>) -> Self {
        DesiredAttachment {
            container_id: container_id.to_string(),
            ifname: ifname.to_string(),
            host_veth: host_veth_name(container_id, ifname),
            netns: netns.into(),
            vlan: None,
            addresses: Vec::new(),
            gateways: Vec::new(),
            routes: Vec::new(),
            mtu: None,
            mac: None,
        }
    }

    /// The key the runtime identifies an attachment by.
    pub fn id(&self) -> AttachmentId {
        AttachmentId { container_id: self.container_id.clone(), ifname: self.ifname.clone() }
    }

    /// Checks the attachment on its own and against the node it goes on.
    pub fn validate(&self, node: &DesiredNode) -> Result<(), ValidationError> {
        self.validate_veth()?;
        if let Some(vid) = self.vlan {
            if !(1..=4094).contains(&vid) {
                return Err(ValidationError::Vlan { vid });
            }
            if node.mode == DatapathMode::VlanFiltering && vid == NATIVE_VID {
                // VLAN 1 is the bridge's native VLAN and would leave the trunk untagged.
                return Err(ValidationError::NativeVlan { vid });
            }
        }
        if self.addresses.is_empty() {
            return Err(ValidationError::NoAddress);
        }
        let mut seen = BTreeSet::new();
        for addr in &self.addresses {
            if !seen.insert(addr.addr()) {
                return Err(ValidationError::DuplicateAddress { address: *addr });
            }
        }
        let mut families = BTreeSet::new();
        for gw in &self.gateways {
            if !families.insert(gw.is_ipv4()) {
                return Err(ValidationError::TwoGateways { gateway: *gw });
            }
            if !self.on_link(*gw) {
                return Err(ValidationError::GatewayOffLink { gateway: *gw });
            }
        }
        for route in &self.routes {
            if let Some(via) = route.via
                && (via.is_ipv4() != route.dst.addr().is_ipv4() || !self.on_link(via))
            {
                return Err(ValidationError::RouteVia { route: *route });
            }
        }
        Ok(())
    }

    /// Checks what the veth pair alone is made of: names, namespace, MTU and MAC. All an
    /// attachment needs before its address is known ([`super::Datapath::prepare`]).
    pub fn validate_veth(&self) -> Result<(), ValidationError> {
        if self.container_id.is_empty() {
            return Err(ValidationError::EmptyContainerId);
        }
        check_ifname("pod interface", &self.ifname)?;
        check_ifname("host veth", &self.host_veth)?;
        if !self.netns.is_absolute() {
            return Err(ValidationError::NetnsPath { path: self.netns.clone() });
        }
        if let Some(mtu) = self.mtu {
            check_mtu(mtu)?;
        }
        if let Some(mac) = self.mac
            && !mac.is_valid_unicast()
        {
            return Err(ValidationError::Mac { value: mac.to_string() });
        }
        Ok(())
    }

    /// Whether `ip` is inside one of the attachment's connected networks.
    fn on_link(&self, ip: IpAddr) -> bool {
        self.addresses.iter().any(|net| net.contains(&ip) && net.addr() != ip)
    }

    /// Every route the pod should have: a default route per gateway, then the extra routes
    /// with CNI's gateway defaulting applied.
    pub fn effective_routes(&self) -> Vec<Route> {
        let mut out: Vec<Route> = Vec::new();
        for gw in &self.gateways {
            let dst = match gw {
                IpAddr::V4(_) => IpNet::V4(ipnet::Ipv4Net::default()),
                IpAddr::V6(_) => IpNet::V6(ipnet::Ipv6Net::default()),
            };
            out.push(Route { dst, via: Some(*gw) });
        }
        for route in &self.routes {
            let via =
                route.via.or_else(|| self.gateways.iter().copied().find(|g| g.is_ipv4() == route.dst.addr().is_ipv4()));
            let route = Route { dst: route.dst.trunc(), via };
            if !out.contains(&route) {
                out.push(route);
            }
        }
        out
    }
}

/// What the runtime names an attachment by (CNI: container id + interface).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct AttachmentId {
    pub container_id: String,
    pub ifname: String,
}

impl AttachmentId {
    pub fn host_veth(&self) -> String {
        host_veth_name(&self.container_id, &self.ifname)
    }
}

/// The host end of a pod's veth: `hc` + 11 hex digits of a 64-bit FNV-1a hash of
/// `container_id` and `ifname`. Stable across agent versions and restarts (FNV is fixed, unlike
/// std's hasher), 13 bytes, and distinct for a pod's several interfaces.
pub fn host_veth_name(container_id: &str, ifname: &str) -> String {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut hash = OFFSET;
    for byte in container_id.bytes().chain(std::iter::once(0)).chain(ifname.bytes()) {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(PRIME);
    }
    format!("hc{:011x}", hash >> 20)
}

/// The kernel's rule for interface names (`dev_valid_name`).
pub fn check_ifname(what: &'static str, name: &str) -> Result<(), ValidationError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_IFNAME_LEN
        && name != "."
        && name != ".."
        && !name.bytes().any(|b| b == b'/' || b == b':' || b.is_ascii_whitespace() || b == 0);
    if ok { Ok(()) } else { Err(ValidationError::IfName { what, name: name.to_string() }) }
}

fn check_mtu(mtu: u32) -> Result<(), ValidationError> {
    // 68 is IPv4's minimum; 65535 the largest any Ethernet-like device takes.
    if (68..=65535).contains(&mtu) { Ok(()) } else { Err(ValidationError::Mtu { mtu }) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(mode: DatapathMode) -> DesiredNode {
        DesiredNode { mode, bridge: "br0".into(), uplink: Some("eth0".into()), mtu: None }
    }

    fn att() -> DesiredAttachment {
        let mut a = DesiredAttachment::new("abc123", "eth0", "/var/run/netns/p1");
        a.addresses = vec!["10.1.0.5/24".parse().expect("net")];
        a.gateways = vec!["10.1.0.1".parse().expect("ip")];
        a
    }

    #[test]
    fn host_veth_name_is_stable_short_and_distinct() {
        let a = host_veth_name("0123456789abcdef", "eth0");
        assert_eq!(a.len(), 13);
        assert!(a.starts_with("hc"));
        assert!(check_ifname("x", &a).is_ok());
        assert_eq!(a, host_veth_name("0123456789abcdef", "eth0"));
        assert_ne!(a, host_veth_name("0123456789abcdef", "eth1"));
        assert_ne!(a, host_veth_name("0123456789abcdee", "eth0"));
        // The separator keeps ("ab","c") and ("a","bc") apart.
        assert_ne!(host_veth_name("ab", "c"), host_veth_name("a", "bc"));
        // Pinned: a changed hash would orphan every existing pod port after an upgrade.
        // (The value was computed independently of this code.)
        assert_eq!(host_veth_name("c1", "eth0"), "hcf53f02b3bfe");
    }

    #[test]
    fn ifname_rules() {
        for ok in ["eth0", "a", "br0.4094", "123456789012345"] {
            assert!(check_ifname("x", ok).is_ok(), "{ok}");
        }
        for bad in ["", ".", "..", "a/b", "a:b", "a b", "1234567890123456"] {
            assert!(check_ifname("x", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn node_validation() {
        assert!(node(DatapathMode::VlanFiltering).validate().is_ok());
        assert!(node(DatapathMode::PerVlanBridge).validate().is_ok());
        let mut n = node(DatapathMode::PerVlanBridge);
        n.bridge = "bridge-name".into(); // 11 + ".4094" = 16 bytes
        assert!(matches!(n.validate(), Err(ValidationError::IfName { .. })));
        n.mode = DatapathMode::VlanFiltering; // no derived names in this mode
        assert!(n.validate().is_ok());
        n.uplink = Some("bridge-name".into());
        assert!(matches!(n.validate(), Err(ValidationError::SameName { .. })));
        let mut n = node(DatapathMode::VlanFiltering);
        n.mtu = Some(40);
        assert!(matches!(n.validate(), Err(ValidationError::Mtu { mtu: 40 })));
    }

    #[test]
    fn bridge_for_each_mode() {
        assert_eq!(node(DatapathMode::VlanFiltering).bridge_for(Some(100)), "br0");
        assert_eq!(node(DatapathMode::VlanFiltering).bridge_for(None), "br0");
        assert_eq!(node(DatapathMode::PerVlanBridge).bridge_for(Some(100)), "br0.100");
        assert_eq!(node(DatapathMode::PerVlanBridge).bridge_for(None), "br0");
    }

    #[test]
    fn attachment_validation() {
        let n = node(DatapathMode::VlanFiltering);
        assert!(att().validate(&n).is_ok());

        let mut a = att();
        a.vlan = Some(1);
        assert!(matches!(a.validate(&n), Err(ValidationError::NativeVlan { vid: 1 })));
        assert!(a.validate(&node(DatapathMode::PerVlanBridge)).is_ok());
        a.vlan = Some(4095);
        assert!(matches!(a.validate(&n), Err(ValidationError::Vlan { vid: 4095 })));

        let mut a = att();
        a.gateways = vec!["10.2.0.1".parse().expect("ip")];
        assert!(matches!(a.validate(&n), Err(ValidationError::GatewayOffLink { .. })));
        a.gateways = vec!["10.1.0.5".parse().expect("ip")]; // its own address
        assert!(matches!(a.validate(&n), Err(ValidationError::GatewayOffLink { .. })));
        a.gateways = vec!["10.1.0.1".parse().expect("ip"), "10.1.0.2".parse().expect("ip")];
        assert!(matches!(a.validate(&n), Err(ValidationError::TwoGateways { .. })));

        let mut a = att();
        a.addresses.clear();
        assert!(matches!(a.validate(&n), Err(ValidationError::NoAddress)));
        let mut a = att();
        a.addresses.push("10.1.0.5/32".parse().expect("net"));
        assert!(matches!(a.validate(&n), Err(ValidationError::DuplicateAddress { .. })));

        let mut a = att();
        a.netns = "relative/ns".into();
        assert!(matches!(a.validate(&n), Err(ValidationError::NetnsPath { .. })));
        let mut a = att();
        a.mac = Some("01:00:00:00:00:01".parse().expect("mac")); // multicast
        assert!(matches!(a.validate(&n), Err(ValidationError::Mac { .. })));
        let mut a = att();
        a.routes = vec![Route { dst: "fd00::/8".parse().expect("net"), via: Some("10.1.0.1".parse().expect("ip")) }];
        assert!(matches!(a.validate(&n), Err(ValidationError::RouteVia { .. })));
        let mut a = att();
        a.container_id.clear();
        assert!(matches!(a.validate(&n), Err(ValidationError::EmptyContainerId)));
    }

    #[test]
    fn effective_routes_apply_cni_gateway_defaulting() {
        let mut a = att();
        a.addresses.push("fd00::5/64".parse().expect("net"));
        a.routes = vec![
            Route { dst: "192.168.0.0/16".parse().expect("net"), via: None },
            Route { dst: "fd10::/48".parse().expect("net"), via: None },
            Route { dst: "172.16.0.9/12".parse().expect("net"), via: Some("10.1.0.254".parse().expect("ip")) },
        ];
        let routes = a.effective_routes();
        let gw4: IpAddr = "10.1.0.1".parse().expect("ip");
        assert_eq!(
            routes,
            vec![
                Route { dst: "0.0.0.0/0".parse().expect("net"), via: Some(gw4) },
                Route { dst: "192.168.0.0/16".parse().expect("net"), via: Some(gw4) },
                Route { dst: "fd10::/48".parse().expect("net"), via: None },
                Route { dst: "172.16.0.0/12".parse().expect("net"), via: Some("10.1.0.254".parse().expect("ip")) },
            ]
        );
    }

    #[test]
    fn mac_round_trip() {
        let mac: MacAddr = "02:aB:00:10:ff:01".parse().expect("mac");
        assert_eq!(mac.0, [2, 0xab, 0, 0x10, 0xff, 1]);
        assert_eq!(mac.to_string(), "02:ab:00:10:ff:01");
        assert!(mac.is_valid_unicast());
        for bad in ["", "02:ab:00:10:ff", "02:ab:00:10:ff:01:02", "2:ab:00:10:ff:01", "zz:ab:00:10:ff:01"] {
            assert!(bad.parse::<MacAddr>().is_err(), "{bad}");
        }
        assert!(!MacAddr::default().is_valid_unicast());
    }
}
