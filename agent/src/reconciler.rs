//! Self-healing: after every lease grant (a start, a restart, a re-grant after a partition)
//! the allocator's view of the node is brought in line with the local record; and
//! periodically the datapath of every recorded attachment is repaired where it drifted.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hc_api::IpamError;
use hc_api::command::{Command, Output};
use hc_api::types::{AllocateRequest, Fence, Owner};
use hc_cni::protocol::Plugin;
use tokio::sync::{Notify, watch};
use tracing::{error, info, warn};

use crate::agent::Agent;
use crate::cni_handler::api_id;
use crate::datapath::{DesiredAttachment, DesiredNode, LinkEvents, NetnsRef, ReconcileReport, orphan_ports};
use crate::lease::AfterGrant;
use crate::metrics;
use crate::traffic;

pub struct Reconciler {
    pub agent: Arc<Agent>,
}

/// The attachments the datapath should have: recorded hc-bridge ones whose namespace still
/// exists (a gone namespace is the runtime's to DEL; rebuilding into nothing is impossible).
pub fn desired_datapath(
    records: &[crate::store::Record],
    netns_exists: impl Fn(&Path) -> bool,
) -> Vec<DesiredAttachment> {
    records
        .iter()
        .filter(|r| r.plugin == Plugin::Bridge)
        .filter_map(|r| r.desired.clone())
        .filter(|d| netns_exists(&d.netns))
        .collect()
}

/// How long an event-driven pass waits for more events after the first: a `ip link set ...`
/// or a pod's teardown emits a few in a row, and one pass should handle them together.
pub const EVENT_DEBOUNCE: Duration = Duration::from_millis(15);

/// Attachments checked per hold of the exclusive gate in a datapath pass.
const PASS_BATCH: usize = 4;

/// At most this many changed names are kept between passes; beyond it the next pass covers
/// every attachment (an event storm, e.g. many pods deleted at once).
const MAX_CHANGED: usize = 4096;

/// Whether a link belongs to the node's datapath rather than to one pod: the bridge, a
/// per-VLAN bridge (`<bridge>.<vid>`), the uplink or one of its VLAN links.
pub fn is_node_link(node: &DesiredNode, name: &str) -> bool {
    let own = |base: &str| name == base || name.strip_prefix(base).and_then(|r| r.strip_prefix('.')).is_some();
    own(&node.bridge) || node.uplink.as_deref().is_some_and(own)
}

/// What an event-driven pass must look at.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Changed {
    /// A node link changed (or too many names to keep): every attachment, and the uplink.
    pub node: bool,
    /// Host veth names of recorded attachments that changed.
    pub ports: BTreeSet<String>,
}

/// Link changes reported by the kernel and not yet handled, shared by the watcher (which adds)
/// and the reconciler (which takes).
#[derive(Default)]
pub struct LinkChanges {
    changed: Mutex<Changed>,
    notify: Notify,
}

impl LinkChanges {
    fn lock(&self) -> std::sync::MutexGuard<'_, Changed> {
        self.changed.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn node(&self) {
        self.lock().node = true;
        self.notify.notify_one();
    }

    pub fn port(&self, name: String) {
        {
            let mut c = self.lock();
            if c.ports.len() >= MAX_CHANGED {
                c.node = true;
                c.ports.clear();
            } else if !c.node {
                c.ports.insert(name);
            }
        }
        self.notify.notify_one();
    }

    fn take(&self) -> Changed {
        std::mem::take(&mut *self.lock())
    }
}

/// Keeps a subscription to the kernel's link events in the node's namespace and records the
/// ones that concern the datapath: node links always, pod ports only once recorded (an ADD's
/// own half-built veth is not drift). A lost subscription is renewed; meanwhile the periodic
/// reconcile covers, and the first pass after renewal looks at everything.
pub async fn watch_links(agent: Arc<Agent>, changes: Arc<LinkChanges>, mut shutdown: watch::Receiver<bool>) {
    let ns = agent.config.node_netns.clone().map_or(NetnsRef::Current, NetnsRef::path);
    let mut first = true;
    loop {
        match LinkEvents::subscribe(&ns).await {
            Ok(Some(mut events)) => {
                info!(namespace = %ns, "watching link events");
                if !first {
                    changes.node();
                }
                loop {
                    let event = tokio::select! {
                        e = events.next() => e,
                        _ = shutdown.changed() => return,
                    };
                    let Some(event) = event else { break };
                    if is_node_link(&agent.config.datapath, &event.name) {
                        changes.node();
                    } else if agent.store.has_port(&event.name) {
                        changes.port(event.name);
                    }
                }
                warn!("the link event subscription ended; renewing it (the periodic reconcile still runs)");
            }
            Ok(None) => warn!(namespace = %ns, "cannot watch link events: the namespace does not exist"),
            Err(e) => warn!(error = %e, "cannot watch link events; the periodic reconcile still runs"),
        }
        first = false;
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = shutdown.changed() => return,
        }
    }
}

/// A failover finished: the uplink was seen down and is up now.
pub fn uplink_came_back(before: Option<bool>, now: Option<bool>) -> bool {
    before == Some(false) && now == Some(true)
}

/// Repairs counted by drift kind.
pub fn repairs_by_kind(report: &ReconcileReport) -> BTreeMap<&'static str, u64> {
    let mut out = BTreeMap::new();
    for d in &report.repaired {
        *out.entry(d.kind()).or_insert(0) += 1;
    }
    out
}

impl Reconciler {
    /// One datapath pass over `desired`; the caller holds the gate exclusively.
    async fn datapath_pass(&self, desired: &[DesiredAttachment]) -> ReconcileReport {
        if desired.is_empty() {
            return ReconcileReport::default();
        }
        let report = self.agent.datapath.write().await.reconcile(desired).await;
        for (kind, n) in repairs_by_kind(&report) {
            for _ in 0..n {
                metrics::repaired(kind);
            }
        }
        for (id, e) in &report.failed {
            warn!(attachment = ?id, error = %e, "datapath repair failed");
        }
        metrics::reconciled("datapath", report.failed.is_empty());
        report
    }

    /// Removes host veths that look like ours but belong to no record: pods whose ADD built
    /// the datapath and then failed or crashed before recording it. The caller holds the gate
    /// exclusively, so no ADD is between its setup and its record.
    async fn remove_orphans(&self) {
        let recorded: Vec<DesiredAttachment> = self.agent.store.all().into_iter().filter_map(|r| r.desired).collect();
        let host = match self.agent.datapath.write().await.host_view().await {
            Ok(h) => h,
            Err(e) => return warn!(error = %e, "cannot list the node's links"),
        };
        for name in orphan_ports(&host, &recorded) {
            match self.agent.datapath.write().await.remove_orphan_port(&name).await {
                Ok(false) => {}
                Ok(true) => {
                    info!(host_veth = %name, "removed an orphaned pod port");
                    metrics::repaired("orphan_port");
                }
                Err(e) => warn!(host_veth = %name, error = %e, "cannot remove an orphaned pod port"),
            }
        }
    }

    /// Re-announces every pod's addresses so switches learn the path through the uplink again.
    async fn announce_all(&self) {
        let desired = desired_datapath(&self.agent.store.all(), Path::exists);
        let mut frames = 0;
        for att in &desired {
            match self.agent.datapath.write().await.announce(att).await {
                Ok(n) => frames += n,
                Err(e) => warn!(container_id = %att.container_id, error = %e, "cannot re-announce"),
            }
        }
        metrics::announced(frames);
        info!(pods = desired.len(), frames, "uplink is back; pod addresses re-announced");
    }

    /// Runs until shutdown: a full pass every `reconcile_every` (datapath, orphan ports,
    /// uplink, traffic counters), and between them a pass over what the kernel reported
    /// changed. Re-announces pod addresses when the uplink comes back.
    pub async fn run(self, changes: Arc<LinkChanges>, mut shutdown: watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(self.agent.config.reconcile_every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut uplink_was_up = None;
        loop {
            let periodic = tokio::select! {
                _ = tick.tick() => true,
                _ = changes.notify.notified() => false,
                _ = shutdown.changed() => return,
            };
            if !periodic {
                tokio::time::sleep(EVENT_DEBOUNCE).await;
            }
            let changed = changes.take();
            let node_pass = periodic || changed.node;
            if !node_pass && !changed.ports.iter().any(|p| self.agent.store.has_port(p)) {
                continue; // the ports went with their records (a DEL)
            }
            let started = tokio::time::Instant::now();
            let mut desired = desired_datapath(&self.agent.store.all(), Path::exists);
            if !node_pass {
                desired.retain(|d| changed.ports.contains(&d.id().host_veth()));
            }
            // A few attachments at a time, each batch under the exclusive gate. Held for a pass
            // over every pod, it queued ADDs behind it for up to ~110 ms with 200 pods (the pod
            // path's slowest calls, in `gate_wait`); between batches, ADDs and DELs run.
            let mut repaired = 0;
            for batch in desired.chunks(PASS_BATCH) {
                let _exclusive = self.agent.gate.write().await;
                // A DEL may have finished between batches: only what is still recorded as is.
                let batch: Vec<DesiredAttachment> = batch
                    .iter()
                    .filter(|d| self.agent.store.get(&d.id()).and_then(|r| r.desired).as_ref() == Some(*d))
                    .cloned()
                    .collect();
                repaired += self.datapath_pass(&batch).await.repaired.len();
            }
            if repaired > 0 {
                let trigger = if periodic { "periodic" } else { "link event" };
                info!(repaired, trigger, took = ?started.elapsed(), "datapath drift repaired");
            }
            let _exclusive = self.agent.gate.write().await;
            if periodic {
                self.remove_orphans().await;
            }
            if node_pass {
                let uplink_up = self.agent.uplink_up().await;
                metrics::uplink_up(uplink_up);
                if uplink_came_back(uplink_was_up, uplink_up) {
                    self.announce_all().await;
                }
                uplink_was_up = uplink_up;
            }
            drop(_exclusive);
            if periodic {
                match traffic::read(self.agent.config.node_netns.clone()).await {
                    Ok(stats) => traffic::export(&self.agent.store.all(), &stats),
                    Err(e) => warn!(error = %e, "cannot read interface counters"),
                }
            }
        }
    }
}

impl Reconciler {
    /// The allocator lost some of the node's addresses (an operator released them, or the
    /// node was declared gone) while the pods still run with them: claim each back for its
    /// attachment, at its address. An address someone else took meanwhile is a conflict that
    /// only an operator can settle: it is logged and counted, and CHECK reports the pod.
    async fn reclaim(&self, fence: &Fence, records: &[crate::store::Record]) {
        let held = match self.agent.allocations_of_node(None).await {
            Ok(list) => list.into_iter().map(|a| (a.owner.container_id, a.owner.interface)).collect::<BTreeSet<_>>(),
            Err(e) => return warn!(error = %e.msg, "cannot list the node's allocations to re-claim lost addresses"),
        };
        let client = self.agent.allocator.client();
        for r in records.iter().filter(|r| !held.contains(&(r.container_id.clone(), r.ifname.clone()))) {
            for address in &r.addresses {
                let request = reclaim_request(r, &self.agent.config.node, address.addr());
                match client.allocate(Some(fence.clone()), request).await {
                    Ok(_) => {
                        metrics::reclaimed(true);
                        info!(container_id = %r.container_id, %address, "re-claimed an address the allocator had lost")
                    }
                    Err(e) => {
                        metrics::reclaimed(false);
                        error!(container_id = %r.container_id, %address, error = %e,
                            "a running pod's address is lost and cannot be re-claimed; an operator must resolve it")
                    }
                }
            }
        }
    }
}

/// The allocation that gives a recorded attachment its address back.
pub fn reclaim_request(r: &crate::store::Record, node: &str, address: std::net::IpAddr) -> AllocateRequest {
    AllocateRequest {
        owner: Owner {
            container_id: r.container_id.clone(),
            interface: r.ifname.clone(),
            namespace: r.namespace.clone(),
            pod: r.pod.clone(),
            node: node.to_owned(),
        },
        pool: Some(r.pool.clone()),
        address: Some(address),
        reservation_keys: crate::request::reservation_keys(&r.namespace, &r.pod),
        ..AllocateRequest::default()
    }
}

impl AfterGrant for Reconciler {
    /// Tells the allocator which of the node's attachments still exist (the record): it keeps
    /// (and un-quarantines) those and releases the rest, e.g. an address allocated just before
    /// a crash that never made it into the record. Then repairs the datapath.
    async fn after_grant(&self, fence: Fence) -> Result<(), IpamError> {
        let _exclusive = self.agent.gate.write().await;
        let records = self.agent.store.all();
        let valid = records.iter().map(|r| api_id(&r.id())).collect();
        let result = self.agent.allocator.client().propose(&Command::Reconcile { fence: fence.clone(), valid }).await;
        metrics::reconciled("allocator", result.is_ok());
        if let Err(e) = &result {
            self.agent.allocator.after_error(e);
        }
        match result? {
            Output::Reconciled { kept, released } => {
                info!(recorded = records.len(), kept, released = ?released, "reconciled with the allocator");
                if (kept as usize) < records.len() {
                    self.reclaim(&fence, &records).await;
                }
            }
            other => warn!(?other, "unexpected reply to reconcile"),
        }
        let desired = desired_datapath(&self.agent.store.all(), Path::exists);
        let report = self.datapath_pass(&desired).await;
        info!(repaired = report.repaired.len(), failed = report.failed.len(), "datapath reconciled after the grant");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Record;
    use hc_cni::result::CniResult;

    fn record(cid: &str, plugin: Plugin, netns: &str) -> Record {
        Record {
            container_id: cid.into(),
            ifname: "eth0".into(),
            network: "n".into(),
            plugin,
            netns: Some(netns.into()),
            namespace: String::new(),
            pod: String::new(),
            pool: "p".into(),
            vlan: None,
            addresses: vec![],
            gateway: None,
            desired: (plugin == Plugin::Bridge).then(|| DesiredAttachment::new(cid, "eth0", netns)),
            result: CniResult::default(),
        }
    }

    #[test]
    fn node_links_are_the_bridges_and_the_uplink_with_their_vlan_links() {
        let node = DesiredNode {
            mode: crate::datapath::DatapathMode::PerVlanBridge,
            bridge: "br0".into(),
            uplink: Some("eth1".into()),
            mtu: None,
        };
        for name in ["br0", "br0.100", "eth1", "eth1.4094"] {
            assert!(is_node_link(&node, name), "{name}");
        }
        for name in ["br00", "br", "eth10", "eth1x", "hc0123456789a", "lo"] {
            assert!(!is_node_link(&node, name), "{name}");
        }
        assert!(!is_node_link(&DesiredNode { uplink: None, ..node }, "eth1"));
    }

    #[test]
    fn changes_collapse_into_a_full_pass_when_too_many_or_a_node_link_changed() {
        let changes = LinkChanges::default();
        changes.port("a".into());
        changes.port("b".into());
        assert_eq!(changes.take(), Changed { node: false, ports: ["a".to_owned(), "b".to_owned()].into() });
        assert_eq!(changes.take(), Changed::default(), "taken once");
        changes.port("a".into());
        changes.node();
        changes.port("c".into());
        assert!(changes.take().node);
        for i in 0..=MAX_CHANGED {
            changes.port(format!("p{i}"));
        }
        let storm = changes.take();
        assert!(storm.node && storm.ports.len() <= MAX_CHANGED);
    }

    #[test]
    fn announce_only_when_the_uplink_comes_back() {
        assert!(uplink_came_back(Some(false), Some(true)));
        for (before, now) in
            [(None, Some(true)), (Some(true), Some(true)), (Some(true), Some(false)), (Some(false), None)]
        {
            assert!(!uplink_came_back(before, now), "{before:?} -> {now:?}");
        }
    }

    #[test]
    fn only_built_attachments_with_a_living_namespace_are_repaired() {
        let records = vec![
            record("a", Plugin::Bridge, "/run/netns/alive"),
            record("b", Plugin::Bridge, "/run/netns/gone"),
            record("c", Plugin::Ipam, "/run/netns/alive"),
        ];
        let desired = desired_datapath(&records, |p| p.ends_with("alive"));
        assert_eq!(desired.iter().map(|d| d.container_id.as_str()).collect::<Vec<_>>(), vec!["a"]);
    }
}
