//! [`Agent`]: what the CNI server, the lease keeper and the reconciler share, and [`run`],
//! which starts them and stops them on one shutdown signal.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use hc_api::client::ClientConfig;
use tokio::sync::{RwLock, watch};
use tracing::{info, warn};

use crate::cni_server;
use crate::config::Config;
use crate::connection::Connection;
use crate::datapath::{AttachmentId, Datapath, NetnsRef};
use crate::lease::{LeaseHandle, LeaseKeeper};
use crate::metrics;
use crate::reconciler::{LinkChanges, Reconciler, watch_links};
use crate::store::Store;

pub struct Agent {
    pub config: Config,
    pub allocator: Connection,
    pub lease: Arc<LeaseHandle>,
    pub store: Store,
    /// Guards the datapath. Exclusive (write) for everything that dumps on the one host
    /// netlink socket (overlapping dumps fail with EBUSY) or may build node-level links (two
    /// converge loops would fight over the bridge): reconcile, CHECK, GC, and ADD in
    /// `vlan-filtering` mode or while the node's links are incomplete. Shared (read) for what
    /// touches only one pod's own links with plain requests: a DEL's veth deletion, and a
    /// `per-vlan-bridge` ADD once its bridge is in place — so ADDs and DELs of different pods
    /// overlap their netlink round trips instead of queueing behind each other.
    pub datapath: tokio::sync::RwLock<Datapath>,
    /// Single-attachment verbs (ADD, DEL, CHECK) hold it shared; whole-node passes (reconcile
    /// with the allocator, GC, the datapath reconcile) exclusively, so that a reconcile never
    /// runs between an ADD's allocation and its record (it would release the new address) or
    /// between a DEL's teardown and its record removal (it would rebuild the veth).
    pub gate: RwLock<()>,
    /// One lock per attachment, so calls for the same attachment run one after the other.
    /// Guards only the map; entries are dropped when no call holds them.
    locks: Mutex<HashMap<AttachmentId, Arc<tokio::sync::Mutex<()>>>>,
}

impl Agent {
    pub fn new(
        config: Config,
        allocator: Connection,
        lease: Arc<LeaseHandle>,
        store: Store,
        datapath: Datapath,
    ) -> Agent {
        Agent {
            config,
            allocator,
            lease,
            store,
            datapath: tokio::sync::RwLock::new(datapath),
            gate: RwLock::new(()),
            locks: Mutex::new(HashMap::new()),
        }
    }

    /// The lock of one attachment.
    pub fn attachment_lock(&self, id: &AttachmentId) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.locks.lock().unwrap_or_else(|p| p.into_inner());
        locks.retain(|_, l| Arc::strong_count(l) > 1);
        locks.entry(id.clone()).or_default().clone()
    }

    /// Whether the uplink is up now (`None`: no uplink configured, or it cannot be seen).
    pub async fn uplink_up(&self) -> Option<bool> {
        let uplink = self.config.datapath.uplink.as_ref()?;
        let host = self.datapath.write().await.host_view().await.ok()?;
        host.link(uplink).map(|l| l.admin_up && l.oper_up)
    }
}

/// Starts everything and runs until `shutdown` fires; then stops the CNI server first (no new
/// requests), lets requests in flight finish for a bounded time, and returns.
pub async fn run(config: Config, shutdown: watch::Receiver<bool>) -> anyhow::Result<()> {
    let prometheus = metrics::install();
    let metrics_listener =
        metrics::bind(config.metrics_addr).await.with_context(|| format!("binding {}", config.metrics_addr))?;
    let store = Store::open(&config.state_dir)?;
    metrics::attachments(store.len());
    info!(attachments = store.len(), dir = %config.state_dir.display(), "attachment record loaded");
    let host_ns = config.node_netns.clone().map_or(NetnsRef::Current, NetnsRef::path);
    let datapath = Datapath::connect(config.datapath.clone(), host_ns).await.context("connecting the datapath")?;
    match datapath.enable_br_netfilter().await {
        Ok(state) => info!(?state, "br_netfilter"),
        Err(e) => warn!(error = %e, "cannot enable br_netfilter; Service ClusterIPs may not work on bridged traffic"),
    }
    let allocator = Connection::new(
        config.allocators.clone(),
        ClientConfig { deadline: Duration::from_secs(10), attempt_timeout: Duration::from_secs(2) },
    )?;
    let listener = cni_server::bind(&config.socket)?;
    info!(socket = %config.socket.display(), node = %config.node, "serving CNI requests");
    let lease = LeaseHandle::new();
    metrics::lease_valid(false);
    let agent = Arc::new(Agent::new(config.clone(), allocator, lease.clone(), store, datapath));

    let keeper = LeaseKeeper {
        allocator: Connection::new(
            config.allocators.clone(),
            // A grant is a replicated write: give each attempt a second even with short keep-alives.
            ClientConfig { deadline: config.lease_ttl, attempt_timeout: config.keepalive.max(Duration::from_secs(1)) },
        )?,
        node: config.node.clone(),
        ttl: config.lease_ttl,
        interval: config.keepalive,
        handle: lease.clone(),
    };
    let reconciler = Reconciler { agent: agent.clone() };
    let mut tasks = tokio::task::JoinSet::new();
    {
        let shutdown = shutdown.clone();
        let reconciler = Reconciler { agent: agent.clone() };
        tasks.spawn(async move { keeper.run(&reconciler, shutdown).await });
    }
    let changes = Arc::new(LinkChanges::default());
    if config.link_events {
        tasks.spawn(watch_links(agent.clone(), changes.clone(), shutdown.clone()));
    }
    tasks.spawn(reconciler.run(changes, shutdown.clone()));
    tasks.spawn(cni_server::serve(listener, agent.clone(), config.max_concurrent, shutdown.clone()));
    {
        let shutdown = shutdown.clone();
        tasks.spawn(async move {
            if let Err(e) = metrics::serve(metrics_listener, prometheus, lease, shutdown).await {
                warn!(error = %e, "metrics server failed");
            }
        });
    }
    let mut shutdown = shutdown;
    let _ = shutdown.wait_for(|s| *s).await;
    info!("shutting down");
    let drained =
        tokio::time::timeout(Duration::from_secs(10), async { while tasks.join_next().await.is_some() {} }).await;
    if drained.is_err() {
        warn!("tasks did not stop within 10 s; leaving");
    }
    remove_socket(&config.socket);
    Ok(())
}

fn remove_socket(path: &Path) {
    if let Err(e) = std::fs::remove_file(path)
        && e.kind() != std::io::ErrorKind::NotFound
    {
        warn!(error = %e, path = %path.display(), "cannot remove the socket");
    }
}
