//! The datapath driver: validate → setup / check / teardown / reconcile, each a loop of
//! observe → diff → plan → execute until nothing differs.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use tracing::{debug, info, warn};

use super::announce;
use super::br_netfilter::{self, BrNetfilter};
use super::desired::{AttachmentId, DesiredAttachment, DesiredNode, MacAddr};
use super::drift::{Drift, diff_attachment, diff_node, orphan_ports};
use super::error::{DatapathError, TeardownError, TeardownFailure};
use super::netlink::Netlink;
use super::netns::{self, NetnsRef};
use super::observed::{HostView, PodView};
use super::plan::{Action, plan};

/// Rounds of observe → repair before giving up. A fresh attachment needs two (build; then drop
/// the default VLAN the kernel gives a new port), the third confirms.
const MAX_ROUNDS: usize = 4;

/// The datapath of one node, bound to the node's network namespace.
pub struct Datapath {
    node: DesiredNode,
    host_ns: NetnsRef,
    host: Netlink,
}

/// What setup built (or found already built): the facts a CNI result reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attached {
    pub host_veth: String,
    pub host_mac: Option<MacAddr>,
    pub ifname: String,
    pub pod_mac: Option<MacAddr>,
    pub netns: PathBuf,
    /// What had to be repaired or built; empty when the attachment was already complete (a
    /// repeated ADD).
    pub repaired: Vec<Drift>,
}

/// What one reconcile pass found and did.
#[derive(Debug, Default)]
pub struct ReconcileReport {
    /// Drifts that were repaired.
    pub repaired: Vec<Drift>,
    /// Attachments (or the node, with `None`) that could not be brought to their desired state.
    pub failed: Vec<(Option<AttachmentId>, DatapathError)>,
}

/// A pod namespace's netlink connection, opened once per operation (`None`: namespace gone).
type PodConns = HashMap<PathBuf, Option<Netlink>>;

/// An attachment's veth pair, built by [`Datapath::prepare`] before its address is known, for
/// [`Datapath::setup_prepared`] to finish.
pub struct Prepared {
    /// Whether the host veth existed before `prepare` (`None`: it could not tell). Setup never
    /// removes an attachment that existed before it.
    existed: Option<bool>,
    /// The attachment whose pair `prepare` created: whoever ends the ADD before setup hands
    /// it to [`Datapath::discard`].
    created: Option<AttachmentId>,
    /// The connection into the pod's namespace, opened while the address was committed.
    conns: PodConns,
}

impl Prepared {
    /// Nothing prepared: setup does all the work.
    pub fn nothing() -> Self {
        Prepared { existed: None, created: None, conns: PodConns::new() }
    }

    /// Whether `prepare` built anything that must be removed if the ADD goes no further.
    pub fn created(&self) -> bool {
        self.created.is_some()
    }
}

/// What the last round of a converge loop observed: nothing left to repair.
struct Converged {
    repaired: Vec<Drift>,
    host: HostView,
    pod: Option<PodView>,
}

impl Datapath {
    /// Validates the node's desired state and connects to its namespace (`NetnsRef::Current`
    /// in production; tests use a namespace of their own as the "node").
    pub async fn connect(node: DesiredNode, host_ns: NetnsRef) -> Result<Self, DatapathError> {
        node.validate()?;
        let Some(host) = Netlink::connect(&host_ns).await? else {
            let path = match &host_ns {
                NetnsRef::Path(p) => p.clone(),
                NetnsRef::Current => PathBuf::new(),
            };
            return Err(DatapathError::Conflict { drifts: vec![Drift::NetnsMissing { netns: path }] });
        };
        Ok(Datapath { node, host_ns, host })
    }

    pub fn node(&self) -> &DesiredNode {
        &self.node
    }

    /// The node namespace's links and bridge VLANs.
    pub async fn host_view(&self) -> Result<HostView, DatapathError> {
        self.host.host_view().await
    }

    /// The pod side of `att` as the kernel reports it.
    pub async fn pod_view(&self, att: &DesiredAttachment) -> Result<PodView, DatapathError> {
        let mut conns = PodConns::new();
        pod_view(&mut conns, att).await
    }

    /// Whether the node's links for pods in `vlan` are all as they should be (nothing to build).
    pub async fn node_complete(&self, vlan: Option<u16>) -> Result<bool, DatapathError> {
        Ok(self.diff(Some(&BTreeSet::from([vlan])), None, &mut PodConns::new()).await?.0.is_empty())
    }

    /// Builds the node's bridges and uplink configuration for pods in `vlans`.
    pub async fn ensure_node(&self, vlans: &BTreeSet<Option<u16>>) -> Result<Vec<Drift>, DatapathError> {
        Ok(self.converge(Some(vlans), None, &mut PodConns::new()).await?.repaired)
    }

    /// The part of an attachment that needs nothing from the allocator: its veth pair, the
    /// peer born in the pod's namespace under its final name with its MTU and MAC, and a
    /// connection into that namespace. An ADD runs it while its address is being committed;
    /// [`Datapath::setup_prepared`] then does the rest (`att`'s VLAN, addresses and routes are
    /// not looked at here).
    ///
    /// Never fails: whatever it could not do (an invalid name, a missing namespace, a name
    /// already taken) setup finds again and reports. An existing host veth is left alone.
    pub async fn prepare(&self, att: &DesiredAttachment) -> Prepared {
        let mut prepared = Prepared::nothing();
        if let Err(e) = att.validate_veth() {
            debug!(error = %e, "nothing prepared: invalid attachment");
            return prepared;
        }
        match self.host.link(&att.host_veth).await {
            Ok(found) => prepared.existed = Some(found.is_some()),
            Err(e) => debug!(error = %e, "nothing prepared: cannot look up the host veth"),
        }
        if prepared.existed != Some(false) {
            return prepared;
        }
        let file = match netns::open(&att.netns) {
            Ok(Some(file)) => file,
            Ok(None) => return prepared,
            Err(e) => {
                debug!(error = %e, "nothing prepared");
                return prepared;
            }
        };
        let mtu = super::layout::pod_port(&self.node, att).mtu;
        match self.host.create_veth(&att.host_veth, &att.ifname, &file, mtu, att.mac).await {
            Ok(()) => prepared.created = Some(att.id()),
            Err(e) => {
                debug!(error = %e, "veth pair not prepared");
                return prepared;
            }
        }
        if let Err(e) = pod_conn(&mut prepared.conns, &att.netns).await {
            debug!(error = %e, "no connection into the pod's namespace yet");
        }
        prepared
    }

    /// Builds one attachment (and what the node needs for its VLAN). Idempotent: a complete
    /// attachment is left alone. On failure whatever was built for it is removed again.
    pub async fn setup(&self, att: &DesiredAttachment) -> Result<Attached, DatapathError> {
        self.setup_prepared(att, Prepared::nothing()).await
    }

    /// [`Datapath::setup`] after [`Datapath::prepare`]: what `prepare` built counts as built
    /// by this call (removed again on failure), what existed before it does not.
    #[tracing::instrument(skip_all, fields(container_id = %att.container_id, ifname = %att.ifname, vlan = ?att.vlan))]
    pub async fn setup_prepared(&self, att: &DesiredAttachment, prepared: Prepared) -> Result<Attached, DatapathError> {
        if let Err(e) = att.validate(&self.node) {
            self.discard(prepared).await;
            return Err(e.into());
        }
        let Prepared { existed, created, mut conns } = prepared;
        let vlans = BTreeSet::from([att.vlan]);
        // An attachment that existed before this call is never torn down by it: a failed
        // repair must not take down a working pod, and a conflict must not remove what is not
        // ours. Anything this call created is removed again on failure.
        let existed = match existed {
            Some(existed) => existed,
            None => self.host.link(&att.host_veth).await?.is_some(),
        };
        let built = async {
            let mut finished = Vec::new();
            if created.is_some() {
                // The pair `prepare` just created is in a known state, so what it still needs
                // is known without observing it first. The converge loop then observes the
                // result and repairs whatever is not as it should be: what failed here too (a
                // bridge not built yet, say), which it reports if it fails again.
                let port = super::layout::pod_port(&self.node, att);
                for action in &super::plan::finish_attachment(att, &port) {
                    if let Err(e) = self.execute(action, &mut conns).await {
                        debug!(error = %e, ?action, "finishing the prepared pair stopped; converging");
                        break;
                    }
                }
                finished.push(Drift::VethMissing { attachment: Box::new(att.clone()), port });
            }
            let mut done = self.converge(Some(&vlans), Some(att), &mut conns).await?;
            finished.append(&mut done.repaired);
            done.repaired = finished;
            Ok::<_, DatapathError>(done)
        };
        let done = match built.await {
            Ok(done) => done,
            Err(e) if existed => return Err(e),
            Err(e) => {
                warn!(error = %e, "setup failed; removing what was built");
                return Err(match self.teardown(&att.id()).await {
                    Ok(()) => e,
                    Err(cleanup) => DatapathError::SetupAndCleanup { source: Box::new(e), cleanup },
                });
            }
        };
        // The last round observed the finished attachment: its MACs need no further request.
        let Converged { repaired, host, pod } = done;
        let host_mac = host.link(&att.host_veth).and_then(|l| l.mac);
        let pod_mac = pod.and_then(|p| p.link).and_then(|l| l.mac);
        if !repaired.is_empty() {
            info!(host_veth = %att.host_veth, changes = repaired.len(), "attachment built");
        }
        Ok(Attached {
            host_veth: att.host_veth.clone(),
            host_mac,
            ifname: att.ifname.clone(),
            pod_mac,
            netns: att.netns.clone(),
            repaired,
        })
    }

    /// Every way `att` differs from what it should be, node-level state for its VLAN included
    /// (CNI CHECK). Changes nothing.
    pub async fn check(&self, att: &DesiredAttachment) -> Result<Vec<Drift>, DatapathError> {
        att.validate(&self.node)?;
        Ok(self.diff(Some(&BTreeSet::from([att.vlan])), Some(att), &mut PodConns::new()).await?.0)
    }

    /// Removes an attachment: deleting the host veth deletes its peer in the pod, and with it
    /// the pod's addresses and routes. Nothing there is fine; a second teardown succeeds.
    pub async fn teardown(&self, id: &AttachmentId) -> Result<(), TeardownError> {
        self.teardown_all(std::slice::from_ref(id)).await
    }

    /// Removes the veth pair [`Datapath::prepare`] created, for an ADD that goes no further;
    /// nothing when it created none. A failure is logged (the node's reconcile removes a port
    /// no attachment owns).
    pub async fn discard(&self, prepared: Prepared) {
        let Some(id) = prepared.created else { return };
        match self.teardown(&id).await {
            Ok(()) => debug!(container_id = %id.container_id, "prepared veth pair removed"),
            Err(e) => warn!(error = %e, "cannot remove the prepared veth pair"),
        }
    }

    /// Removes several attachments, carrying on past failures; the error lists each of them.
    /// Each deletion runs over a socket of its own, off the runtime's worker threads
    /// ([`Netlink::delete_link_detached`]), so that concurrent DELs overlap their waits.
    pub async fn teardown_all(&self, ids: &[AttachmentId]) -> Result<(), TeardownError> {
        let mut failures = Vec::new();
        for id in ids {
            let host_veth = id.host_veth();
            match Netlink::delete_link_detached(&self.host_ns, &host_veth).await {
                Ok(true) => debug!(%host_veth, container_id = %id.container_id, "host veth deleted"),
                Ok(false) => debug!(%host_veth, "host veth already gone"),
                Err(error) => failures.push(TeardownFailure { step: format!("delete host veth {host_veth}"), error }),
            }
        }
        if failures.is_empty() { Ok(()) } else { Err(TeardownError { failures }) }
    }

    /// Deletes a host veth that [`orphan_ports`] reported (a pod port no attachment owns).
    /// Anything not of the agent's naming and kind is left alone; `Ok(false)` when it is gone.
    pub async fn remove_orphan_port(&self, name: &str) -> Result<bool, DatapathError> {
        let host = self.host.host_view().await?;
        if !orphan_ports(&host, &[]).iter().any(|n| n == name) {
            return Ok(false);
        }
        self.host.delete_link(name).await
    }

    /// One self-healing pass: the node for the VLANs of `atts`, then each attachment on its
    /// own, so one broken pod does not keep the others from being repaired.
    pub async fn reconcile(&self, atts: &[DesiredAttachment]) -> ReconcileReport {
        let mut report = ReconcileReport::default();
        let vlans: BTreeSet<Option<u16>> = atts.iter().map(|a| a.vlan).collect();
        let mut conns = PodConns::new();
        match self.converge(Some(&vlans), None, &mut conns).await {
            Ok(done) => report.repaired.extend(done.repaired),
            Err(e) => report.failed.push((None, e)),
        }
        for att in atts {
            let result = match att.validate(&self.node) {
                // Node-level state was handled above; a node-level conflict (a missing uplink)
                // must not keep pods from being repaired.
                Ok(()) => self.converge(None, Some(att), &mut conns).await,
                Err(e) => Err(e.into()),
            };
            match result {
                Ok(done) => report.repaired.extend(done.repaired),
                Err(e) => report.failed.push((Some(att.id()), e)),
            }
        }
        for drift in &report.repaired {
            info!(kind = drift.kind(), %drift, "repaired");
        }
        report
    }

    /// Re-announces the pod's addresses from inside its namespace: a gratuitous ARP per IPv4
    /// address, an unsolicited neighbour advertisement per IPv6 one. Returns how many frames
    /// were sent.
    pub async fn announce(&self, att: &DesiredAttachment) -> Result<usize, DatapathError> {
        let Some(file) = netns::open(&att.netns)? else {
            return Err(DatapathError::Conflict { drifts: vec![Drift::NetnsMissing { netns: att.netns.clone() }] });
        };
        let (ifname, addresses) = (att.ifname.clone(), att.addresses.clone());
        netns::run_in(&att.netns, file, move || announce::send(&ifname, &addresses)).await?
    }

    /// Turns on `bridge-nf-call-iptables` in the node's namespace, so Service ClusterIPs work
    /// for bridged traffic; warns where the kernel lacks it.
    pub async fn enable_br_netfilter(&self) -> Result<BrNetfilter, DatapathError> {
        let proc_sys = Path::new(br_netfilter::PROC_SYS);
        match &self.host_ns {
            NetnsRef::Current => Ok(br_netfilter::enable(proc_sys)),
            NetnsRef::Path(path) => {
                let Some(file) = netns::open(path)? else {
                    return Err(DatapathError::Conflict { drifts: vec![Drift::NetnsMissing { netns: path.clone() }] });
                };
                Ok(netns::run_in(path, file, move || br_netfilter::enable(proc_sys)).await?)
            }
        }
    }

    /// Observe → diff → plan → execute until nothing differs. Returns the drifts found on the
    /// way (all of them repaired) and the last observation. Node-level state is included for
    /// `vlans` when given.
    async fn converge(
        &self,
        vlans: Option<&BTreeSet<Option<u16>>>,
        att: Option<&DesiredAttachment>,
        conns: &mut PodConns,
    ) -> Result<Converged, DatapathError> {
        let mut repaired = Vec::new();
        for round in 0..MAX_ROUNDS {
            let (drifts, host, pod) = self.diff(vlans, att, conns).await?;
            let plan = plan(&drifts);
            if !plan.conflicts.is_empty() {
                return Err(DatapathError::Conflict { drifts: plan.conflicts });
            }
            if plan.actions.is_empty() {
                return Ok(Converged { repaired, host, pod });
            }
            debug!(round, actions = ?plan.actions, "repairing");
            for action in &plan.actions {
                self.execute(action, conns).await?;
            }
            repaired.extend(drifts);
        }
        let (drifts, host, pod) = self.diff(vlans, att, conns).await?;
        if drifts.is_empty() {
            Ok(Converged { repaired, host, pod })
        } else {
            Err(DatapathError::NotConverged { rounds: MAX_ROUNDS, drifts })
        }
    }

    /// The drifts, with the views they were found in (the pod's when `att` is given).
    async fn diff(
        &self,
        vlans: Option<&BTreeSet<Option<u16>>>,
        att: Option<&DesiredAttachment>,
        conns: &mut PodConns,
    ) -> Result<(Vec<Drift>, HostView, Option<PodView>), DatapathError> {
        // Only the links this diff looks at: the node's for `vlans`, and the attachment's port.
        let mut names: Vec<String> = vlans
            .map(|v| super::layout::node_links(&self.node, v).into_iter().map(|l| l.name).collect())
            .unwrap_or_default();
        if let Some(att) = att {
            // The port's bridge too, even when the node's links are not diffed: its name is
            // what the port's master is compared with.
            let port = super::layout::pod_port(&self.node, att);
            for name in [Some(att.host_veth.clone()), port.master].into_iter().flatten() {
                if !names.contains(&name) {
                    names.push(name);
                }
            }
        }
        let with_vlans = self.node.mode == super::desired::DatapathMode::VlanFiltering;
        let host = self.host.host_view_of(&names, with_vlans).await?;
        let mut drifts = match vlans {
            Some(vlans) => diff_node(&self.node, vlans, &host),
            None => Vec::new(),
        };
        let pod = match att {
            Some(att) => {
                let pod = pod_view(conns, att).await?;
                drifts.extend(diff_attachment(&self.node, att, &host, &pod));
                Some(pod)
            }
            None => None,
        };
        Ok((drifts, host, pod))
    }

    async fn execute(&self, action: &Action, conns: &mut PodConns) -> Result<(), DatapathError> {
        let host = &self.host;
        match action {
            Action::CreateBridge { name, vlan_filtering, mtu } => host.create_bridge(name, *vlan_filtering, *mtu).await,
            Action::CreateVlan { name, parent, vid } => host.create_vlan(name, parent, *vid).await,
            Action::CreateVeth { host: name, peer, netns: path, mtu, mac } => {
                let Some(file) = netns::open(path)? else {
                    return Err(DatapathError::Conflict { drifts: vec![Drift::NetnsMissing { netns: path.clone() }] });
                };
                host.create_veth(name, peer, &file, *mtu, *mac).await
            }
            Action::DeleteLink { name } => host.delete_link(name).await.map(drop),
            Action::SetVlanFiltering { bridge, on } => host.set_vlan_filtering(bridge, *on).await,
            Action::SetMaster { link, master } => host.set_master(link, master).await,
            Action::SetMtu { link, mtu } => host.set_mtu(link, *mtu).await,
            Action::SetUp { link } => host.set_up(link).await,
            Action::AddPortVlan { port, vlan } => host.add_port_vlan(port, *vlan).await,
            Action::DelPortVlan { port, vid } => host.del_port_vlan(port, *vid).await,
            Action::PodSetUp { netns, link } => pod_conn(conns, netns).await?.set_up(link).await,
            Action::PodSetMtu { netns, link, mtu } => pod_conn(conns, netns).await?.set_mtu(link, *mtu).await,
            Action::PodSetMac { netns, link, mac } => pod_conn(conns, netns).await?.set_mac(link, *mac).await,
            Action::PodAddAddress { netns, link, address } => {
                pod_conn(conns, netns).await?.add_address(link, *address).await
            }
            Action::PodAddRoute { netns, link, route } => pod_conn(conns, netns).await?.add_route(link, *route).await,
        }
    }
}

/// The connection into the pod namespace at `path`, opened on first use.
async fn pod_conn<'a>(conns: &'a mut PodConns, path: &Path) -> Result<&'a Netlink, DatapathError> {
    if !conns.contains_key(path) {
        let conn = Netlink::connect(&NetnsRef::Path(path.to_path_buf())).await?;
        conns.insert(path.to_path_buf(), conn);
    }
    match conns.get(path) {
        Some(Some(conn)) => Ok(conn),
        _ => Err(DatapathError::Conflict { drifts: vec![Drift::NetnsMissing { netns: path.to_path_buf() }] }),
    }
}

async fn pod_view(conns: &mut PodConns, att: &DesiredAttachment) -> Result<PodView, DatapathError> {
    match pod_conn(conns, &att.netns).await {
        Ok(conn) => conn.pod_view(&att.ifname).await,
        Err(DatapathError::Conflict { .. }) => Ok(PodView::missing()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The CNI server and the reconciler spawn these futures on a multi-threaded runtime.
    #[allow(dead_code)]
    fn futures_are_send(dp: &Datapath, att: &DesiredAttachment, id: &AttachmentId) {
        fn send<T: Send>(_: T) {}
        send(dp.setup(att));
        send(dp.prepare(att));
        send(dp.check(att));
        send(dp.teardown(id));
        send(dp.reconcile(std::slice::from_ref(att)));
        send(dp.announce(att));
        send(dp.enable_br_netfilter());
        send(Datapath::connect(dp.node().clone(), NetnsRef::Current));
    }
}
