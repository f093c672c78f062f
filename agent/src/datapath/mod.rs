//! The datapath: puts a pod's interface on the node's bridge, in its pool's VLAN, with its
//! addresses and routes — over rtnetlink only, never by running `ip`.
//!
//! Decisions are pure and tested without I/O; the kernel is touched only by `netlink.rs`
//! (requests), `netns.rs` (entering a pod's namespace), `announce.rs` (raw frames) and
//! `br_netfilter.rs` (one sysctl).
//!
//! Layout:
//! - `desired.rs`: [`DesiredNode`], [`DesiredAttachment`], validation, veth naming
//! - `observed.rs`: what the kernel reports ([`HostView`], [`PodView`])
//! - `layout.rs`, `vlan_filtering.rs`, `per_vlan_bridge.rs`: the host links each mode needs
//! - `drift.rs`: the diff, desired vs observed → [`Drift`]s (CNI CHECK reports these)
//! - `plan.rs`: drifts → [`Action`]s
//! - `driver.rs`: [`Datapath`]: setup, check, teardown, reconcile, announce
//! - `netlink.rs`, `netns.rs`: the rtnetlink layer and namespace entry
//! - `announce.rs`: gratuitous ARP and unsolicited neighbour advertisements
//! - `br_netfilter.rs`, `kernel.rs`: the bridge-nf sysctl, probing kernel features

mod announce;
mod br_netfilter;
mod desired;
mod drift;
mod driver;
mod error;
mod kernel;
mod layout;
mod netlink;
mod netns;
mod observed;
mod per_vlan_bridge;
mod plan;
mod vlan_filtering;

pub use announce::{gratuitous_arp, unsolicited_na};
pub use br_netfilter::{BrNetfilter, PROC_SYS, enable as enable_br_netfilter_at};
pub use desired::{
    AttachmentId, DatapathMode, DesiredAttachment, DesiredNode, MAX_IFNAME_LEN, MacAddr, NATIVE_VID, Route,
    check_ifname, host_veth_name, vlan_link_name,
};
pub use drift::{Drift, diff_attachment, diff_node, orphan_ports};
pub use driver::{Attached, Datapath, Prepared, ReconcileReport};
pub use error::{DatapathError, NetnsError, TeardownError, TeardownFailure, ValidationError};
pub use kernel::{KernelSupport, probe as probe_kernel};
pub use layout::{ExpectedKind, ExpectedLink, ExpectedVlans, node_links, pod_port};
pub use netlink::{LinkEvent, LinkEvents};
pub use netns::NetnsRef;
pub use observed::{HostView, LinkKind, ObservedLink, ObservedRoute, PodView, PortVlan};
pub use plan::{Action, Plan, plan};
