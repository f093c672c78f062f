//! What each CNI verb does (ADD, DEL, CHECK, GC, STATUS), and the one mapping of allocator
//! and datapath errors to CNI error codes.

use std::collections::BTreeSet;
use std::time::Instant as StdInstant;

use hc_api::command::{Command, Output};
use hc_api::types::{Allocated, AllocationState, Fence, ReleaseTarget};
use hc_api::{ErrorKind, IpamError};
use hc_cni::error::code;
use hc_cni::protocol::{AgentError, AttachmentRequest, Call, GcRequest, Plugin, Reply, Request, StatusRequest};
use hc_cni::result::CniResult;
use tokio::time::Instant;
use tracing::{Instrument, info, info_span, warn};

use crate::agent::Agent;
use crate::datapath::{
    Attached, AttachmentId, DatapathError, DatapathMode, DesiredAttachment, Prepared, ValidationError,
};
use crate::lease::is_fenced;
use crate::metrics;
use crate::request;
use crate::store::{self, Record};

impl Agent {
    /// Serves one decoded request and times it.
    pub async fn handle(&self, request: Request) -> Reply {
        let started = StdInstant::now();
        let verb = request.call.verb();
        let span = match &request.call {
            Call::Add(a) | Call::Del(a) | Call::Check(a) => info_span!("cni", verb, plugin = request.plugin.name(),
                container_id = %a.container_id, ifname = %a.ifname, network = %a.network.name),
            Call::Status(s) => info_span!("cni", verb, plugin = request.plugin.name(), network = %s.network.name),
            Call::Gc(g) => info_span!("cni", verb, plugin = request.plugin.name(), network = %g.network.name),
        };
        let reply = async {
            match request.call {
                Call::Add(a) => self.add(request.plugin, a).await.map(Reply::Ok),
                Call::Del(a) => self.del(request.plugin, a).await.map(|()| Reply::Ok(CniResult::default())),
                Call::Check(a) => self.check(a).await.map(|()| Reply::Ok(CniResult::default())),
                Call::Gc(g) => self.gc(g).await.map(|()| Reply::Ok(CniResult::default())),
                Call::Status(s) => self.status(&s).await.map(|()| Reply::Ok(CniResult::default())),
            }
            .unwrap_or_else(|e| {
                warn!(code = e.code, msg = %e.msg, "refused");
                Reply::Err(e)
            })
        }
        .instrument(span)
        .await;
        let result = match &reply {
            Reply::Ok(_) => "ok".to_owned(),
            Reply::Err(e) => e.code.to_string(),
        };
        metrics::cni_request(verb, &result, started.elapsed());
        reply
    }

    async fn add(&self, plugin: Plugin, req: AttachmentRequest) -> Result<CniResult, AgentError> {
        let id = AttachmentId { container_id: req.container_id.clone(), ifname: req.ifname.clone() };
        let netns = match (plugin, &req.netns) {
            (Plugin::Bridge, None) => return Err(AgentError::invalid_config("ADD needs the pod's netns")),
            (_, netns) => netns.clone(),
        };
        let step = StdInstant::now();
        let _shared = self.gate.read().await;
        let lock = self.attachment_lock(&id);
        let _one = lock.lock().await;
        metrics::cni_step("ADD", "gate_wait", step.elapsed());

        // ADD is idempotent per (container id, interface): the recorded result, nothing rebuilt.
        if let Some(record) = self.store.get(&id) {
            if record.network != req.network.name {
                return Err(AgentError::invalid_config(format!(
                    "{}/{} is already attached to network {}",
                    id.container_id, id.ifname, record.network
                )));
            }
            return Ok(record.result);
        }

        let status = self.lease.status();
        let now = Instant::now();
        let Some(fence) = status.fence(now).filter(|_| status.ready(now)) else {
            return Err(AgentError::try_again_later("this node has no valid lease yet; hc-agent is re-acquiring it"));
        };
        let alloc_req = request::allocate_request(&req, &self.config.node, &self.config.node_labels)?;
        // The veth pair needs nothing from the allocator: it is built while the address is
        // committed, and finished once the pool (VLAN, bridge, address, routes) is known.
        let veth = match (plugin, netns.as_deref()) {
            (Plugin::Bridge, Some(netns)) => Some(request::pod_veth(&req, netns)?),
            _ => None,
        };
        let client = self.allocator.client();
        let (allocated, prepared) = tokio::join!(
            timed("ADD", "allocate", client.allocate(Some(fence.clone()), alloc_req)),
            self.prepare(veth.as_ref()),
        );
        let allocated = match allocated {
            Ok(a) => a,
            Err(e) => {
                self.discard(prepared).await;
                return Err(self.ipam_error(e, &fence));
            }
        };
        let address = request::address_of(&allocated);
        info!(%address, pool = %allocated.pool.name, vlan = ?allocated.pool.vlan, created = allocated.created, "allocated");

        // From here on, a failure releases the address before answering.
        let built = self.build(plugin, &req, netns.as_deref(), &allocated, prepared).await;
        let (desired, attached) = match built {
            Ok(b) => b,
            Err(e) => {
                self.release_after_failure(&fence, &id).await;
                return Err(e);
            }
        };
        let result = request::cni_result(&req, &allocated, attached.as_ref());
        let (namespace, pod) = req.k8s.as_ref().map(|k| (k.namespace.clone(), k.pod.clone())).unwrap_or_default();
        let record = Record {
            container_id: id.container_id.clone(),
            ifname: id.ifname.clone(),
            network: req.network.name.clone(),
            plugin,
            netns,
            namespace,
            pod,
            pool: allocated.pool.name.clone(),
            vlan: allocated.pool.vlan,
            addresses: vec![address],
            gateway: allocated.pool.gateway,
            desired,
            result: result.clone(),
        };
        let step = StdInstant::now();
        let stored = store::blocking(|| self.store.put(record));
        metrics::cni_step("ADD", "record", step.elapsed());
        if let Err(e) = stored {
            warn!(error = %e, "cannot record the attachment; undoing it");
            if plugin == Plugin::Bridge
                && let Err(te) = self.datapath.read().await.teardown(&id).await
            {
                warn!(error = %te, "teardown after a failed record write");
            }
            self.release_after_failure(&fence, &id).await;
            return Err(AgentError::new(code::IO_FAILURE, format!("cannot record the attachment: {e}")));
        }
        metrics::attachments(self.store.len());
        Ok(result)
    }

    /// The address-independent part of an ADD's datapath (hc-bridge only), timed as its
    /// `prepare` step; nothing prepared for other plugins.
    async fn prepare(&self, veth: Option<&DesiredAttachment>) -> Prepared {
        let Some(veth) = veth else { return Prepared::nothing() };
        timed("ADD", "prepare", async { self.datapath.read().await.prepare(veth).await }).await
    }

    /// Removes what `prepare` built, for an ADD that goes no further.
    async fn discard(&self, prepared: Prepared) {
        if prepared.created() {
            self.datapath.read().await.discard(prepared).await;
        }
    }

    /// The datapath of an ADD (hc-bridge only), after checking the pool fits the network.
    /// What `prepare` built is removed again if the ADD fails here.
    async fn build(
        &self,
        plugin: Plugin,
        req: &AttachmentRequest,
        netns: Option<&str>,
        allocated: &Allocated,
        prepared: Prepared,
    ) -> Result<(Option<DesiredAttachment>, Option<Attached>), AgentError> {
        let desired = request::check_vlan(req, &allocated.pool).and_then(|()| match (plugin, netns) {
            (Plugin::Bridge, Some(netns)) => request::desired_attachment(req, netns, allocated).map(Some),
            _ => Ok(None),
        });
        let desired = match desired {
            Ok(Some(desired)) => desired,
            Ok(None) => return Ok((None, None)),
            Err(e) => {
                self.discard(prepared).await;
                return Err(e);
            }
        };
        let step = StdInstant::now();
        let shared = self.datapath.read().await;
        let complete = match shared.node().mode {
            DatapathMode::PerVlanBridge => shared.node_complete(desired.vlan).await,
            DatapathMode::VlanFiltering => Ok(false),
        };
        let attached = match complete {
            Ok(true) => {
                metrics::cni_step("ADD", "datapath_wait", step.elapsed());
                timed("ADD", "datapath", shared.setup_prepared(&desired, prepared)).await
            }
            Ok(false) => {
                drop(shared);
                let exclusive = self.datapath.write().await;
                metrics::cni_step("ADD", "datapath_wait", step.elapsed());
                timed("ADD", "datapath", exclusive.setup_prepared(&desired, prepared)).await
            }
            Err(e) => {
                shared.discard(prepared).await;
                Err(e)
            }
        };
        let attached = attached.map_err(datapath_error)?;
        Ok((Some(desired), Some(attached)))
    }

    /// DEL: best-effort teardown, release, forget. Nothing there is success.
    async fn del(&self, plugin: Plugin, req: AttachmentRequest) -> Result<(), AgentError> {
        let id = AttachmentId { container_id: req.container_id.clone(), ifname: req.ifname.clone() };
        let step = StdInstant::now();
        let _shared = self.gate.read().await;
        let lock = self.attachment_lock(&id);
        let _one = lock.lock().await;
        metrics::cni_step("DEL", "gate_wait", step.elapsed());
        let record = self.store.get(&id);
        let built_here = record.as_ref().map_or(plugin == Plugin::Bridge, |r| r.plugin == Plugin::Bridge);
        if built_here {
            // The address is released only once its veth is gone: while it may still be in use
            // it must not go to another pod.
            // Shared: deleting one veth by name is a plain request, no dump, no node link.
            let step = StdInstant::now();
            let datapath = self.datapath.read().await;
            metrics::cni_step("DEL", "datapath_wait", step.elapsed());
            let step = StdInstant::now();
            let torn_down = datapath.teardown(&id).await;
            metrics::cni_step("DEL", "datapath", step.elapsed());
            drop(datapath);
            torn_down
                .map_err(|e| AgentError::new(code::IO_FAILURE, format!("removing the pod's interface failed: {e}")))?;
        }
        let status = self.lease.status();
        match status.fence(Instant::now()) {
            Some(fence) => {
                match timed("DEL", "release", self.allocator.client().release(Some(fence.clone()), owner_target(&id)))
                    .await
                {
                    Ok(released) => {
                        for a in &released.released {
                            info!(address = %a.address, pool = %a.pool, "released");
                        }
                    }
                    Err(IpamError::AllocationNotFound { .. }) => {}
                    Err(e) => return Err(self.ipam_error(e, &fence)),
                }
            }
            // Recorded: the address is ours to release and we cannot yet; the runtime retries.
            None if record.is_some() => {
                return Err(AgentError::try_again_later(
                    "this node has no valid lease; the address cannot be released yet",
                ));
            }
            // Not recorded: anything the allocator still holds for it is released by the
            // reconcile that follows the next grant.
            None => {}
        }
        let step = StdInstant::now();
        let removed = store::blocking(|| self.store.remove(&id));
        metrics::cni_step("DEL", "record", step.elapsed());
        removed.map_err(|e| AgentError::new(code::IO_FAILURE, format!("cannot forget the attachment: {e}")))?;
        metrics::attachments(self.store.len());
        Ok(())
    }

    /// CHECK: the datapath matches the record, and the allocator still gives the address to
    /// this attachment.
    async fn check(&self, req: AttachmentRequest) -> Result<(), AgentError> {
        let id = AttachmentId { container_id: req.container_id.clone(), ifname: req.ifname.clone() };
        let _shared = self.gate.read().await;
        let Some(record) = self.store.get(&id) else {
            return Err(AgentError::refused(format!("hc-agent has no attachment {}/{}", id.container_id, id.ifname)));
        };
        if let Some(desired) = &record.desired {
            let drifts = self.datapath.write().await.check(desired).await.map_err(datapath_error)?;
            if !drifts.is_empty() {
                let list: Vec<String> = drifts.iter().map(ToString::to_string).collect();
                return Err(AgentError::refused(format!(
                    "the pod's network differs from what was built: {}",
                    list.join("; ")
                )));
            }
        }
        let held = self.allocations_of_node(Some(&record.pool)).await?;
        for address in &record.addresses {
            let ok = held.iter().any(|a| {
                a.address == address.addr()
                    && a.owner.container_id == id.container_id
                    && a.owner.interface == id.ifname
                    && a.state == AllocationState::Active
            });
            if !ok {
                return Err(AgentError::refused(format!(
                    "address {} is no longer allocated to {}/{}",
                    address.addr(),
                    id.container_id,
                    id.ifname
                )));
            }
        }
        Ok(())
    }

    /// GC: release this network's attachments on this node that the runtime no longer lists.
    async fn gc(&self, req: GcRequest) -> Result<(), AgentError> {
        let _exclusive = self.gate.write().await;
        let status = self.lease.status();
        let Some(fence) = status.fence(Instant::now()) else {
            return Err(AgentError::try_again_later("this node has no valid lease"));
        };
        let listed: BTreeSet<AttachmentId> = req
            .valid_attachments
            .iter()
            .map(|k| AttachmentId { container_id: k.container_id.clone(), ifname: k.ifname.clone() })
            .collect();
        let (stale, kept): (Vec<Record>, Vec<Record>) =
            self.store.all().into_iter().partition(|r| r.network == req.network.name && !listed.contains(&r.id()));
        if stale.is_empty() {
            return Ok(());
        }
        let stale_built: Vec<AttachmentId> =
            stale.iter().filter(|r| r.plugin == Plugin::Bridge).map(Record::id).collect();
        if let Err(e) = self.datapath.write().await.teardown_all(&stale_built).await {
            return Err(AgentError::new(code::IO_FAILURE, format!("GC could not remove interfaces: {e}")));
        }
        // The allocator's Reconcile is node-wide: keep every other network's attachments and
        // whatever the runtime listed.
        let valid: BTreeSet<hc_api::types::AttachmentId> =
            kept.iter().map(Record::id).chain(listed).map(|id| api_id(&id)).collect();
        let command = Command::Reconcile { fence: fence.clone(), valid: valid.into_iter().collect() };
        match self.allocator.client().propose(&command).await {
            Ok(Output::Reconciled { kept, released }) => info!(kept, released = ?released, "GC reconciled"),
            Ok(other) => warn!(?other, "unexpected reply to reconcile"),
            Err(e) => return Err(self.ipam_error(e, &fence)),
        }
        for r in &stale {
            store::blocking(|| self.store.remove(&r.id()))
                .map_err(|e| AgentError::new(code::IO_FAILURE, format!("cannot forget {}: {e}", r.container_id)))?;
        }
        metrics::attachments(self.store.len());
        Ok(())
    }

    /// STATUS: can ADD be served on this network? 51 while the uplink is down (running pods
    /// are cut off too), 50 while the node has no lease or while every pool the network draws
    /// from is exhausted — as the allocator counts them now, not as the last ADD found them.
    async fn status(&self, req: &StatusRequest) -> Result<(), AgentError> {
        if self.uplink_up().await == Some(false) {
            let uplink = self.config.datapath.uplink.as_deref().unwrap_or_default();
            return Err(AgentError::limited_connectivity(format!(
                "the uplink {uplink} is down: pods on this node cannot reach the network"
            )));
        }
        if !self.lease.status().ready(Instant::now()) {
            return Err(AgentError::not_available(
                "this node has no valid lease (the allocator is unreachable or has no quorum)",
            ));
        }
        let network = &req.network;
        let probe = request::status_probe(network, &self.config.node, &self.config.node_labels);
        let pools = match self.allocator.client().candidate_pools(&probe).await {
            Ok(pools) => pools,
            // Without a pool of its own the network's pools depend on the pod (namespace
            // selectors): nothing to judge without one.
            Err(IpamError::NoPoolMatches) if probe.pool.is_none() => return Ok(()),
            Err(e @ IpamError::PoolNotFound { .. }) => {
                return Err(AgentError::not_available(format!("network {}: {e}", network.name)));
            }
            Err(e) => {
                self.allocator.after_error(&e);
                return Err(AgentError::not_available(format!("cannot ask the allocator about the pools: {e}")));
            }
        };
        if pools.iter().all(|p| p.free == 0) {
            let list: Vec<String> =
                pools.iter().map(|p| format!("{} ({} of {} used)", p.spec.name, p.used, p.size)).collect();
            return Err(AgentError::not_available(format!(
                "every pool of network {} is exhausted: {}",
                network.name,
                list.join(", ")
            )));
        }
        Ok(())
    }

    /// The node's allocations (of `pool`), from the first replica that answers.
    pub(crate) async fn allocations_of_node(
        &self,
        pool: Option<&str>,
    ) -> Result<Vec<hc_api::types::Allocation>, AgentError> {
        let mut last = None;
        for i in 0..self.allocator.client().endpoints().len() {
            match self.allocator.client().list_allocations_at(i, pool, Some(&self.config.node)).await {
                Ok(list) => return Ok(list),
                Err(e) => {
                    self.allocator.after_error(&e);
                    last = Some(e)
                }
            }
        }
        Err(AgentError::try_again_later(format!(
            "no allocator replica answered: {}",
            last.map(|e| e.to_string()).unwrap_or_default()
        )))
    }

    /// Releases an attachment's address after a failed ADD; failures are logged (the
    /// reconcile after the next grant releases what is not recorded).
    async fn release_after_failure(&self, fence: &Fence, id: &AttachmentId) {
        match self.allocator.client().release(Some(fence.clone()), owner_target(id)).await {
            Ok(r) => info!(released = r.released.len(), "released the address of the failed ADD"),
            Err(e) => {
                if is_fenced(&e) {
                    self.lease.report_fenced(fence.token);
                }
                warn!(error = %e, "cannot release the address of the failed ADD")
            }
        }
    }

    /// The one mapping of allocator errors to CNI codes. A fenced write also tells the lease
    /// keeper.
    fn ipam_error(&self, e: IpamError, fence: &Fence) -> AgentError {
        self.allocator.after_error(&e);
        if is_fenced(&e) {
            self.lease.report_fenced(fence.token);
            return AgentError::try_again_later("the node's lease was lost; hc-agent is re-acquiring it")
                .with_details(e.to_string());
        }
        match (e.kind(), &e) {
            (ErrorKind::NotLeader | ErrorKind::Unavailable, _) => {
                AgentError::try_again_later(format!("the allocator is unavailable: {e}"))
            }
            (_, IpamError::PoolNotFound { .. }) | (ErrorKind::BadRequest, _) => {
                AgentError::invalid_config(e.to_string())
            }
            (_, IpamError::VlanNotFound { .. }) => AgentError::invalid_config(e.to_string()),
            _ => AgentError::refused(e.to_string()),
        }
    }
}

/// Awaits `f` and records how long it took as `step` of `verb`.
async fn timed<T>(verb: &'static str, step: &'static str, f: impl Future<Output = T>) -> T {
    let started = StdInstant::now();
    let out = f.await;
    metrics::cni_step(verb, step, started.elapsed());
    out
}

fn datapath_error(e: DatapathError) -> AgentError {
    match e {
        DatapathError::Invalid(v) => validation_error(v),
        other => AgentError::refused(format!("building the pod's network failed: {other}")),
    }
}

fn validation_error(v: ValidationError) -> AgentError {
    AgentError::invalid_config(format!("invalid attachment: {v}"))
}

fn owner_target(id: &AttachmentId) -> ReleaseTarget {
    ReleaseTarget::Owner(api_id(id))
}

pub fn api_id(id: &AttachmentId) -> hc_api::types::AttachmentId {
    hc_api::types::AttachmentId { container_id: id.container_id.clone(), interface: id.ifname.clone() }
}
