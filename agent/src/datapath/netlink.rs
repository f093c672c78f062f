//! The thin layer over rtnetlink: one connection bound to one network namespace, reading links,
//! bridge VLANs, addresses and routes into the plain types of `observed.rs`, and performing
//! single changes. No decisions here.

use std::collections::HashMap;
use std::fs::File;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::AsRawFd;

use futures::TryStreamExt;
use ipnet::IpNet;
use netlink_packet_route::AddressFamily;
use netlink_packet_route::address::{AddressAttribute, AddressFlags, AddressMessage, AddressScope};
use netlink_packet_route::link::{
    AfSpecBridge, BridgeVlanInfoFlags, InfoBridge, InfoData, InfoKind, InfoVeth, InfoVlan, LinkAttribute,
    LinkExtentMask, LinkFlags, LinkInfo, LinkMessage, State,
};
use netlink_packet_route::route::{RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteScope, RouteType};
use rtnetlink::{
    Handle, LinkBridge, LinkBridgeVlan, LinkMessageBuilder, LinkUnspec, LinkVeth, LinkVlan, RouteMessageBuilder,
};

use super::desired::{MacAddr, Route};
use super::error::DatapathError;
use super::netns::{self, NetnsRef};
use super::observed::{HostView, LinkKind, ObservedLink, ObservedRoute, PodView, PortVlan};

const ENOENT: i32 = 2;
const ENODEV: i32 = 19;
const EEXIST: i32 = 17;

/// An rtnetlink connection whose socket lives in one network namespace.
pub struct Netlink {
    handle: Handle,
    /// Drives the socket; aborted when the connection is dropped. `None` when the caller
    /// drives it ([`Netlink::delete_link_detached`]).
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Drop for Netlink {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

impl Netlink {
    /// Connects in `ns`; `Ok(None)` when the namespace file does not exist. Must be called
    /// within a tokio runtime, which then drives the connection.
    pub async fn connect(ns: &NetnsRef) -> Result<Option<Netlink>, DatapathError> {
        let Some((conn, handle, _)) = open_in(ns, rtnetlink::new_connection).await? else { return Ok(None) };
        Ok(Some(Netlink { handle, task: Some(tokio::spawn(conn)) }))
    }

    /// Every bridge port's VLAN memberships (the kernel offers them only as a dump).
    async fn bridge_vlan_dump(&self) -> Result<Vec<LinkMessage>, DatapathError> {
        self.handle
            .link()
            .get()
            .set_filter_mask(AddressFamily::Bridge, vec![LinkExtentMask::Brvlan])
            .execute()
            .try_collect()
            .await
            .map_err(|e| nl_err("list bridge VLANs", "", e))
    }

    /// Every link with its bridge VLAN memberships.
    pub async fn host_view(&self) -> Result<HostView, DatapathError> {
        let msgs: Vec<LinkMessage> =
            self.handle.link().get().execute().try_collect().await.map_err(|e| nl_err("list links", "", e))?;
        let names: HashMap<u32, String> = msgs.iter().filter_map(|m| Some((m.header.index, link_name(m)?))).collect();
        let mut links: Vec<ObservedLink> = msgs.iter().filter_map(|m| to_observed(m, &names)).collect();
        let vlan_msgs = self.bridge_vlan_dump().await?;
        for msg in vlan_msgs {
            let vlans = port_vlans(&msg);
            if let Some(link) = links.iter_mut().find(|l| l.index == msg.header.index) {
                link.vlans = vlans;
            }
        }
        Ok(HostView { links })
    }

    /// Only the links named (those that exist), with their bridge VLAN memberships when
    /// `with_vlans`: all a diff of the node's links and one attachment looks at. Its cost does
    /// not grow with the number of pods on the node, where [`Netlink::host_view`]'s full dumps
    /// do (an ADD on a node with a hundred pods spent most of its datapath time parsing them).
    /// A master outside `names` is looked up by index, so masters are named as in a full view.
    pub async fn host_view_of(&self, names: &[String], with_vlans: bool) -> Result<HostView, DatapathError> {
        // The requests go out together: one wait for the answers, not one per link.
        let gets = names.iter().map(|name| async move {
            match self.handle.link().get().match_name(name.clone()).execute().try_next().await {
                Ok(msg) => Ok(msg),
                Err(e) if errno(&e) == Some(ENODEV) => Ok(None),
                Err(e) => Err(nl_err("get link", name, e)),
            }
        });
        let msgs: Vec<LinkMessage> = futures::future::try_join_all(gets).await?.into_iter().flatten().collect();
        let mut by_index: HashMap<u32, String> =
            msgs.iter().filter_map(|m| Some((m.header.index, link_name(m)?))).collect();
        let masters: Vec<u32> = msgs
            .iter()
            .flat_map(|m| &m.attributes)
            .filter_map(|a| match a {
                LinkAttribute::Controller(i) => Some(*i),
                _ => None,
            })
            .filter(|i| !by_index.contains_key(i))
            .collect();
        for index in masters {
            match self.handle.link().get().match_index(index).execute().try_next().await {
                Ok(Some(msg)) => {
                    if let Some(name) = link_name(&msg) {
                        by_index.insert(index, name);
                    }
                }
                Ok(None) => {}
                Err(e) if errno(&e) == Some(ENODEV) => {}
                Err(e) => return Err(nl_err("get link", &format!("#{index}"), e)),
            }
        }
        let mut links: Vec<ObservedLink> = msgs.iter().filter_map(|m| to_observed(m, &by_index)).collect();
        if with_vlans && !links.is_empty() {
            // The kernel answers bridge VLANs only as a dump of every port.
            let vlan_msgs = self.bridge_vlan_dump().await?;
            for msg in vlan_msgs {
                if let Some(link) = links.iter_mut().find(|l| l.index == msg.header.index) {
                    link.vlans = port_vlans(&msg);
                }
            }
        }
        Ok(HostView { links })
    }

    /// One link by name, without VLAN memberships; `None` if there is none.
    pub async fn link(&self, name: &str) -> Result<Option<ObservedLink>, DatapathError> {
        let msg = match self.handle.link().get().match_name(name).execute().try_next().await {
            Ok(msg) => msg,
            Err(e) if errno(&e) == Some(ENODEV) => return Ok(None),
            Err(e) => return Err(nl_err("get link", name, e)),
        };
        let Some(msg) = msg else { return Ok(None) };
        let names = HashMap::from([(msg.header.index, name.to_string())]);
        Ok(to_observed(&msg, &names))
    }

    async fn index(&self, name: &str) -> Result<u32, DatapathError> {
        match self.link(name).await? {
            Some(link) => Ok(link.index),
            None => Err(DatapathError::NoSuchLink { name: name.to_string() }),
        }
    }

    /// The pod's side of an attachment, as seen from inside its namespace.
    pub async fn pod_view(&self, ifname: &str) -> Result<PodView, DatapathError> {
        // Requests that need no answer of another's go out together.
        let (lo, link, routes) = tokio::try_join!(self.link("lo"), self.link(ifname), self.routes())?;
        let loopback_up = lo.is_some_and(|l| l.admin_up);
        let Some(link) = link else {
            return Ok(PodView { netns_present: true, link: None, loopback_up, ..PodView::default() });
        };
        let addresses = self.addresses(link.index).await?;
        let routes = routes
            .into_iter()
            .filter(|r| r.oif == Some(link.index))
            .map(|r| Route { dst: r.dst, via: r.via })
            .collect();
        Ok(PodView { netns_present: true, link: Some(link), loopback_up, addresses, routes })
    }

    /// Global addresses on link `index`.
    pub async fn addresses(&self, index: u32) -> Result<Vec<IpNet>, DatapathError> {
        let msgs: Vec<AddressMessage> = self
            .handle
            .address()
            .get()
            .set_link_index_filter(index)
            .execute()
            .try_collect()
            .await
            .map_err(|e| nl_err("list addresses", &index.to_string(), e))?;
        Ok(msgs
            .iter()
            .filter(|m| m.header.scope != AddressScope::Link && m.header.index == index)
            .filter_map(|m| {
                let local = m.attributes.iter().find_map(|a| match a {
                    AddressAttribute::Local(ip) => Some(*ip),
                    _ => None,
                });
                let addr = local.or_else(|| {
                    m.attributes.iter().find_map(|a| match a {
                        AddressAttribute::Address(ip) => Some(*ip),
                        _ => None,
                    })
                })?;
                IpNet::new(addr, m.header.prefix_len).ok()
            })
            .collect())
    }

    /// Unicast routes of the main table, both families.
    pub async fn routes(&self) -> Result<Vec<ObservedRoute>, DatapathError> {
        let dump = |family: RouteMessage| async move {
            let msgs: Vec<RouteMessage> = self
                .handle
                .route()
                .get(family)
                .execute()
                .try_collect()
                .await
                .map_err(|e| nl_err("list routes", "", e))?;
            Ok::<_, DatapathError>(msgs)
        };
        let (v4, v6) = tokio::try_join!(
            dump(RouteMessageBuilder::<Ipv4Addr>::new().build()),
            dump(RouteMessageBuilder::<Ipv6Addr>::new().build())
        )?;
        Ok(v4.iter().chain(&v6).filter_map(to_route).collect())
    }

    /// Creates a bridge; one that already exists is left for the next diff to judge.
    pub async fn create_bridge(&self, name: &str, vlan_filtering: bool, mtu: Option<u32>) -> Result<(), DatapathError> {
        let mut b = LinkMessageBuilder::<LinkBridge>::new(name);
        if vlan_filtering {
            // Only sent when wanted: kernels without VLAN filtering reject the attribute even as 0.
            b = b.vlan_filtering(true);
        }
        if let Some(mtu) = mtu {
            b = b.mtu(mtu);
        }
        ok_if_exists(self.handle.link().add(b.build()).execute().await).map_err(|e| nl_err("create bridge", name, e))
    }

    pub async fn set_vlan_filtering(&self, bridge: &str, on: bool) -> Result<(), DatapathError> {
        // By index only: an IFLA_IFNAME, even the unchanged name, is a rename, which kernels
        // before 6.x refuse with EBUSY while the bridge is up.
        let msg = LinkMessageBuilder::<LinkBridge>::new_with_info_kind(InfoKind::Bridge)
            .append_info_data(InfoBridge::VlanFiltering(on))
            .index(self.index(bridge).await?)
            .build();
        self.handle.link().change(msg).execute().await.map_err(|e| nl_err("set vlan_filtering on", bridge, e))
    }

    /// Creates the 802.1Q link `name` for `vid` on `parent`.
    pub async fn create_vlan(&self, name: &str, parent: &str, vid: u16) -> Result<(), DatapathError> {
        let msg = LinkVlan::new(name, self.index(parent).await?, vid).build();
        ok_if_exists(self.handle.link().add(msg).execute().await).map_err(|e| nl_err("create VLAN link", name, e))
    }

    /// Creates a veth pair with `peer` born inside the namespace `netns` (an open namespace
    /// file), both ends with `mtu`, the peer with `mac`.
    pub async fn create_veth(
        &self,
        host: &str,
        peer: &str,
        netns: &File,
        mtu: Option<u32>,
        mac: Option<MacAddr>,
    ) -> Result<(), DatapathError> {
        let mut peer_msg = LinkUnspec::new_with_name(peer).setns_by_fd(netns.as_raw_fd());
        let mut host_msg = LinkMessageBuilder::<LinkVeth>::new_with_info_kind(InfoKind::Veth).name(host.to_string());
        if let Some(mtu) = mtu {
            peer_msg = peer_msg.mtu(mtu);
            host_msg = host_msg.mtu(mtu);
        }
        if let Some(mac) = mac {
            peer_msg = peer_msg.address(mac.0.to_vec());
        }
        let msg = host_msg.set_info_data(InfoData::Veth(InfoVeth::Peer(peer_msg.build()))).build();
        // `netns` stays open (borrowed) until the kernel has answered.
        self.handle.link().add(msg).execute().await.map_err(|e| nl_err("create veth", &format!("{host}/{peer}"), e))
    }

    /// Deletes a link; `Ok(false)` when there was none.
    pub async fn delete_link(&self, name: &str) -> Result<bool, DatapathError> {
        let Some(link) = self.link(name).await? else { return Ok(false) };
        match self.handle.link().del(link.index).execute().await {
            Ok(()) => Ok(true),
            Err(e) if errno(&e) == Some(ENODEV) => Ok(false),
            Err(e) => Err(nl_err("delete link", name, e)),
        }
    }

    /// Deletes a link over a netlink socket of its own, driven on the calling thread, outside
    /// the runtime's worker threads; `Ok(false)` when there was none (or no namespace).
    ///
    /// The kernel runs a netlink request in the thread that sends it, and deleting a veth makes
    /// that thread wait for the network stack to let go of the device (RCU grace periods,
    /// 10–30 ms on a busy machine). Over the agent's one shared socket, concurrent DELs would
    /// wait one after the other, each holding one of the runtime's two worker threads; here
    /// each waits on a thread of its own (`block_in_place`), as separate plugin processes do.
    /// On a current-thread runtime (unit tests) this falls back to an ordinary connection.
    pub async fn delete_link_detached(ns: &NetnsRef, name: &str) -> Result<bool, DatapathError> {
        let runtime = tokio::runtime::Handle::current();
        match runtime.runtime_flavor() {
            tokio::runtime::RuntimeFlavor::MultiThread => {
                let ns = ns.clone();
                let name = name.to_owned();
                tokio::task::block_in_place(move || {
                    // A connection of this thread's own: its driving task must run here too,
                    // or the blocking send would land on a worker thread again.
                    let local = tokio::task::LocalSet::new();
                    runtime.block_on(local.run_until(async move {
                        let Some((conn, handle, _)) = open_in(&ns, rtnetlink::new_connection).await? else {
                            return Ok(false);
                        };
                        let driver = tokio::task::spawn_local(conn);
                        let nl = Netlink { handle, task: None };
                        let deleted = nl.delete_link(&name).await;
                        driver.abort();
                        deleted
                    }))
                })
            }
            _ => match Netlink::connect(ns).await? {
                Some(nl) => nl.delete_link(name).await,
                None => Ok(false),
            },
        }
    }

    pub async fn set_master(&self, link: &str, master: &str) -> Result<(), DatapathError> {
        let (link_index, master_index) = tokio::try_join!(self.index(link), self.index(master))?;
        let msg = LinkUnspec::new_with_index(link_index).controller(master_index).build();
        self.handle.link().set(msg).execute().await.map_err(|e| nl_err("enslave", &format!("{link} to {master}"), e))
    }

    pub async fn set_up(&self, link: &str) -> Result<(), DatapathError> {
        let msg = LinkUnspec::new_with_index(self.index(link).await?).up().build();
        self.handle.link().set(msg).execute().await.map_err(|e| nl_err("set up", link, e))
    }

    pub async fn set_mtu(&self, link: &str, mtu: u32) -> Result<(), DatapathError> {
        let msg = LinkUnspec::new_with_index(self.index(link).await?).mtu(mtu).build();
        self.handle.link().set(msg).execute().await.map_err(|e| nl_err("set MTU of", link, e))
    }

    pub async fn set_mac(&self, link: &str, mac: MacAddr) -> Result<(), DatapathError> {
        let msg = LinkUnspec::new_with_index(self.index(link).await?).address(mac.0.to_vec()).build();
        self.handle.link().set(msg).execute().await.map_err(|e| nl_err("set MAC of", link, e))
    }

    /// `bridge vlan add dev PORT vid V [pvid] [untagged]`: RTM_SETLINK, family AF_BRIDGE,
    /// IFLA_AF_SPEC / IFLA_BRIDGE_VLAN_INFO. Adding an existing VID updates its flags.
    pub async fn add_port_vlan(&self, port: &str, vlan: PortVlan) -> Result<(), DatapathError> {
        let mut flags = BridgeVlanInfoFlags::empty();
        flags.set(BridgeVlanInfoFlags::Pvid, vlan.pvid);
        flags.set(BridgeVlanInfoFlags::Untagged, vlan.untagged);
        let msg = LinkBridgeVlan::new(self.index(port).await?).vlan(vlan.vid, flags).build();
        self.handle
            .link()
            .set(msg)
            .execute()
            .await
            .map_err(|e| nl_err("add bridge VLAN", &format!("{vlan} to {port}"), e))
    }

    /// `bridge vlan del dev PORT vid V`: RTM_DELLINK, family AF_BRIDGE. A VID that is not
    /// there is fine.
    pub async fn del_port_vlan(&self, port: &str, vid: u16) -> Result<(), DatapathError> {
        let msg = LinkBridgeVlan::new(self.index(port).await?).vlan(vid, BridgeVlanInfoFlags::empty()).build();
        match self.handle.link().del_with_message(msg).execute().await {
            Err(e) if errno(&e) != Some(ENOENT) => {
                Err(nl_err("delete bridge VLAN", &format!("vid {vid} from {port}"), e))
            }
            _ => Ok(()),
        }
    }

    /// Adds an address; IPv6 ones skip duplicate address detection (the allocator guarantees
    /// uniqueness, and a tentative address would delay the pod's first packets by a second).
    pub async fn add_address(&self, link: &str, address: IpNet) -> Result<(), DatapathError> {
        let mut req = self.handle.address().add(self.index(link).await?, address.addr(), address.prefix_len());
        if address.addr().is_ipv6() {
            req.message_mut().attributes.push(AddressAttribute::Flags(AddressFlags::Nodad));
        }
        ok_if_exists(req.execute().await).map_err(|e| nl_err("add address", &format!("{address} to {link}"), e))
    }

    /// Adds a main-table route through `link`.
    pub async fn add_route(&self, link: &str, route: Route) -> Result<(), DatapathError> {
        let target = format!("{route} dev {link}");
        let bad = |message: String| DatapathError::Netlink {
            op: "build route",
            target: target.clone(),
            errno: None,
            message,
        };
        let mut b = RouteMessageBuilder::<IpAddr>::new()
            .destination_prefix(route.dst.addr(), route.dst.prefix_len())
            .map_err(|e| bad(e.to_string()))?
            .output_interface(self.index(link).await?);
        b = match route.via {
            Some(via) => b.gateway(via).map_err(|e| bad(e.to_string()))?,
            None => b.scope(RouteScope::Link),
        };
        ok_if_exists(self.handle.route().add(b.build()).execute().await).map_err(|e| nl_err("add route", &target, e))
    }
}

fn errno(e: &rtnetlink::Error) -> Option<i32> {
    match e {
        rtnetlink::Error::NetlinkError(msg) => msg.code.map(|c| -c.get()),
        _ => None,
    }
}

fn ok_if_exists(r: Result<(), rtnetlink::Error>) -> Result<(), rtnetlink::Error> {
    match r {
        Err(e) if errno(&e) == Some(EEXIST) => Ok(()),
        other => other,
    }
}

fn nl_err(op: &'static str, target: &str, e: rtnetlink::Error) -> DatapathError {
    let errno = errno(&e);
    let message = match errno {
        Some(n) => nix::errno::Errno::from_raw(n).desc().to_string(),
        None => e.to_string(),
    };
    DatapathError::Netlink { op, target: target.to_string(), errno, message }
}

/// Opens a netlink socket with `open` in `ns`; `Ok(None)` when the namespace file does not
/// exist. In another namespace, `open` runs on a thread that has joined it: the socket belongs
/// to that namespace for its whole life and registers with the caller's runtime, which then
/// drives it.
async fn open_in<T: Send + 'static>(
    ns: &NetnsRef,
    open: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> Result<Option<T>, DatapathError> {
    let opened = match ns {
        NetnsRef::Current => open(),
        NetnsRef::Path(path) => {
            let Some(file) = netns::open(path)? else { return Ok(None) };
            let runtime = tokio::runtime::Handle::current();
            netns::run_in(path, file, move || {
                let _entered = runtime.enter();
                open()
            })
            .await?
        }
    };
    opened.map(Some).map_err(DatapathError::Socket)
}

/// A change to a link the kernel announced: its name, and whether it was deleted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkEvent {
    pub name: String,
    pub deleted: bool,
}

/// The kernel's link notifications (the `RTNLGRP_LINK` multicast group, as `ip monitor link`
/// sees them: state, master and bridge-VLAN changes, creation, deletion) in one namespace.
pub struct LinkEvents {
    messages: futures::channel::mpsc::UnboundedReceiver<(
        rtnetlink::packet_core::NetlinkMessage<netlink_packet_route::RouteNetlinkMessage>,
        rtnetlink::sys::SocketAddr,
    )>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for LinkEvents {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl LinkEvents {
    /// Subscribes in `ns`; `Ok(None)` when the namespace file does not exist.
    pub async fn subscribe(ns: &NetnsRef) -> Result<Option<LinkEvents>, DatapathError> {
        let subscribe = || rtnetlink::new_multicast_connection(&[rtnetlink::MulticastGroup::Link]);
        let Some((conn, _handle, messages)) = open_in(ns, subscribe).await? else { return Ok(None) };
        Ok(Some(LinkEvents { messages, task: tokio::spawn(conn) }))
    }

    /// The next link event; `None` when the subscription ended (the socket failed).
    pub async fn next(&mut self) -> Option<LinkEvent> {
        use futures::StreamExt;
        use netlink_packet_route::RouteNetlinkMessage;
        use rtnetlink::packet_core::NetlinkPayload;
        loop {
            let (msg, _) = self.messages.next().await?;
            let (link, deleted) = match &msg.payload {
                NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewLink(l)) => (l, false),
                NetlinkPayload::InnerMessage(RouteNetlinkMessage::DelLink(l)) => (l, true),
                _ => continue,
            };
            if let Some(name) = link_name(link) {
                return Some(LinkEvent { name, deleted });
            }
        }
    }
}

fn link_name(msg: &LinkMessage) -> Option<String> {
    msg.attributes.iter().find_map(|a| match a {
        LinkAttribute::IfName(n) => Some(n.clone()),
        _ => None,
    })
}

fn to_observed(msg: &LinkMessage, names: &HashMap<u32, String>) -> Option<ObservedLink> {
    let mut link = ObservedLink::new(msg.header.index, &link_name(msg)?, LinkKind::Other(String::new()));
    link.admin_up = msg.header.flags.contains(LinkFlags::Up);
    link.oper_up = false;
    let mut vlan_parent = None;
    for attr in &msg.attributes {
        match attr {
            LinkAttribute::Mtu(m) => link.mtu = *m,
            LinkAttribute::Address(a) => link.mac = <[u8; 6]>::try_from(a.as_slice()).ok().map(MacAddr),
            LinkAttribute::Controller(i) => {
                link.master = Some(names.get(i).cloned().unwrap_or_else(|| format!("#{i}")))
            }
            LinkAttribute::Link(i) => {
                link.peer_index = Some(*i);
                vlan_parent = names.get(i).cloned();
            }
            LinkAttribute::OperState(s) => link.oper_up = matches!(s, State::Up | State::Unknown),
            LinkAttribute::LinkInfo(infos) => link.kind = kind_of(infos),
            _ => {}
        }
    }
    if let LinkKind::Vlan { parent, .. } = &mut link.kind {
        *parent = vlan_parent;
    }
    Some(link)
}

fn kind_of(infos: &[LinkInfo]) -> LinkKind {
    let kind = infos.iter().find_map(|i| match i {
        LinkInfo::Kind(k) => Some(k),
        _ => None,
    });
    let data = infos.iter().find_map(|i| match i {
        LinkInfo::Data(d) => Some(d),
        _ => None,
    });
    match kind {
        Some(InfoKind::Bridge) => {
            let vlan_filtering = match data {
                Some(InfoData::Bridge(b)) => b.iter().find_map(|i| match i {
                    InfoBridge::VlanFiltering(v) => Some(*v),
                    _ => None,
                }),
                _ => None,
            };
            LinkKind::Bridge { vlan_filtering }
        }
        Some(InfoKind::Veth) => LinkKind::Veth,
        Some(InfoKind::Vlan) => {
            let vid = match data {
                Some(InfoData::Vlan(v)) => v.iter().find_map(|i| match i {
                    InfoVlan::Id(id) => Some(*id),
                    _ => None,
                }),
                _ => None,
            };
            LinkKind::Vlan { vid: vid.unwrap_or(0), parent: None }
        }
        Some(other) => LinkKind::Other(other.to_string()),
        None => LinkKind::Other(String::new()),
    }
}

fn port_vlans(msg: &LinkMessage) -> Vec<PortVlan> {
    let mut out: Vec<PortVlan> = msg
        .attributes
        .iter()
        .filter_map(|a| match a {
            LinkAttribute::AfSpecBridge(specs) => Some(specs),
            _ => None,
        })
        .flatten()
        .filter_map(|s| match s {
            AfSpecBridge::VlanInfo(info) => Some(PortVlan {
                vid: info.vid,
                pvid: info.flags.contains(BridgeVlanInfoFlags::Pvid),
                untagged: info.flags.contains(BridgeVlanInfoFlags::Untagged),
            }),
            _ => None,
        })
        .collect();
    out.sort();
    out
}

fn to_route(msg: &RouteMessage) -> Option<ObservedRoute> {
    if msg.header.table != RouteHeader::RT_TABLE_MAIN || msg.header.kind != RouteType::Unicast {
        return None;
    }
    let ip = |a: &RouteAddress| match a {
        RouteAddress::Inet(v4) => Some(IpAddr::V4(*v4)),
        RouteAddress::Inet6(v6) => Some(IpAddr::V6(*v6)),
        _ => None,
    };
    let mut dst = None;
    let mut via = None;
    let mut oif = None;
    for attr in &msg.attributes {
        match attr {
            RouteAttribute::Destination(a) => dst = ip(a),
            RouteAttribute::Gateway(a) => via = ip(a),
            RouteAttribute::Oif(i) => oif = Some(*i),
            _ => {}
        }
    }
    let dst = match (dst, msg.header.address_family) {
        (Some(d), _) => d,
        (None, AddressFamily::Inet) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        (None, AddressFamily::Inet6) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        _ => return None,
    };
    Some(ObservedRoute { dst: IpNet::new(dst, msg.header.destination_prefix_length).ok()?, via, oif })
}
