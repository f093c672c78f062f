//! Self-healing: after every lease grant (a start, a restart, a re-grant after a partition)
//! the allocator's view of the node is brought in line with the local record; and
//! periodically the datapath of every recorded attachment is repaired where it drifted.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use hc_api::IpamError;
use hc_api::command::{Command, Output};
use hc_api::types::Fence;
use hc_cni::protocol::Plugin;
use tokio::sync::watch;
use tracing::{info, warn};

use crate::agent::Agent;
use crate::cni_handler::api_id;
use crate::datapath::{DesiredAttachment, ReconcileReport, orphan_ports};
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
    /// One datapath pass over the record; the caller holds the gate exclusively.
    async fn datapath_pass(&self) -> ReconcileReport {
        let desired = desired_datapath(&self.agent.store.all(), Path::exists);
        if desired.is_empty() {
            return ReconcileReport::default();
        }
        let report = self.agent.datapath.write().await.reconcile(&desired).await;
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

    /// Whether the uplink is up now (`None`: no uplink configured or not found).
    async fn uplink_up(&self) -> Option<bool> {
        let uplink = self.agent.config.datapath.uplink.as_ref()?;
        let host = self.agent.datapath.write().await.host_view().await.ok()?;
        host.link(uplink).map(|l| l.admin_up && l.oper_up)
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

    /// Runs the datapath pass every `reconcile_every` until shutdown; re-announces pod
    /// addresses when the uplink comes back.
    pub async fn run_periodic(self, mut shutdown: watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(self.agent.config.reconcile_every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut uplink_was_up = None;
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.changed() => return,
            }
            let _exclusive = self.agent.gate.write().await;
            let report = self.datapath_pass().await;
            if !report.repaired.is_empty() {
                info!(repaired = report.repaired.len(), "datapath drift repaired");
            }
            self.remove_orphans().await;
            let uplink_up = self.uplink_up().await;
            metrics::uplink_up(uplink_up);
            if uplink_came_back(uplink_was_up, uplink_up) {
                self.announce_all().await;
            }
            uplink_was_up = uplink_up;
            drop(_exclusive);
            match traffic::read(self.agent.config.node_netns.clone()).await {
                Ok(stats) => traffic::export(&self.agent.store.all(), &stats),
                Err(e) => warn!(error = %e, "cannot read interface counters"),
            }
        }
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
        let result = self.agent.allocator.client().propose(&Command::Reconcile { fence, valid }).await;
        metrics::reconciled("allocator", result.is_ok());
        if let Err(e) = &result {
            self.agent.allocator.after_error(e);
        }
        match result? {
            Output::Reconciled { kept, released } => {
                info!(recorded = records.len(), kept, released = ?released, "reconciled with the allocator");
                if (kept as usize) < records.len() {
                    warn!(
                        missing = records.len() - kept as usize,
                        "the allocator holds fewer addresses than the record names; CHECK will report them"
                    );
                }
            }
            other => warn!(?other, "unexpected reply to reconcile"),
        }
        let report = self.datapath_pass().await;
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
