//! Starts one replica: storage, Raft, the gRPC server (Raft + IPAM services), the REST server
//! and the background tasks, and stops them all on one shutdown signal.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use openraft::type_config::async_runtime::WatchReceiver;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::config::Config;
use crate::lease_keeper::LeaseKeeper;
use crate::raft::{self, NodeInfo};
use crate::replica::Replica;

/// Runs the replica until `shutdown` becomes true, then stops gracefully (bounded).
pub async fn run(config: Config, mut shutdown: watch::Receiver<bool>) -> anyhow::Result<()> {
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("creating data directory {}", config.data_dir.display()))?;
    let metrics = crate::metrics::install();

    let (log_store, mut sm_store) = raft::open_storage(&config.data_dir)
        .await
        .with_context(|| format!("opening storage in {}", config.data_dir.display()))?;
    sm_store.set_snapshot_log_percent(config.snapshot_log_percent);
    let snapshot_now = sm_store.snapshot_now_flag();
    let state = sm_store.state();
    let storage = log_store.storage_memory();
    let raft_config = raft::raft_config(
        config.heartbeat.as_millis() as u64,
        config.election_timeout.as_millis() as u64,
        config.snapshot_every,
    )
    .context("raft config")?;
    let raft =
        raft::Raft::new(config.id, Arc::new(raft_config), raft::NetworkFactory::new(config.id), log_store, sm_store)
            .await
            .context("starting raft")?;

    let replica = Arc::new(Replica::new(config.id, raft.clone(), state, snapshot_now, config.batch_proposals));
    let leases = Arc::new(LeaseKeeper::default());

    let grpc_listener = TcpListener::bind(config.grpc_addr)
        .await
        .with_context(|| format!("binding gRPC address {}", config.grpc_addr))?;
    let rest_listener = TcpListener::bind(config.rest_addr)
        .await
        .with_context(|| format!("binding REST address {}", config.rest_addr))?;
    tracing::info!(id = config.id, grpc = %config.grpc_addr, rest = %config.rest_addr, data_dir = %config.data_dir.display(), batch_proposals = config.batch_proposals, "replica listening");

    let grpc = {
        let mut shutdown = shutdown.clone();
        // TCP_NODELAY on every accepted connection: with Nagle's algorithm, small gRPC replies
        // wait for the peer's delayed ACK (~40 ms) and cap throughput. (`Server::tcp_nodelay`
        // applies only to listeners tonic binds itself.)
        let incoming =
            tokio_stream::StreamExt::map(tokio_stream::wrappers::TcpListenerStream::new(grpc_listener), |s| {
                s.inspect(|tcp| {
                    if let Err(e) = tcp.set_nodelay(true) {
                        tracing::warn!(error = %e, "cannot set TCP_NODELAY");
                    }
                })
            });
        let router = tonic::transport::Server::builder()
            .tcp_nodelay(true)
            // Notice a peer that vanished without a reset (a partition) within seconds.
            .http2_keepalive_interval(Some(Duration::from_secs(1)))
            .http2_keepalive_timeout(Some(Duration::from_secs(2)))
            .add_service(raft::raft_service(raft.clone()))
            .add_service(crate::grpc::ipam_service(replica.clone(), leases.clone()));
        tokio::spawn(async move {
            router
                .serve_with_incoming_shutdown(incoming, async move {
                    let _ = shutdown.wait_for(|s| *s).await;
                })
                .await
        })
    };
    let rest = {
        let mut shutdown = shutdown.clone();
        let app = crate::rest::router(replica.clone(), metrics, storage);
        tokio::spawn(async move {
            use axum::serve::ListenerExt;
            let listener = rest_listener.tap_io(|tcp| {
                let _ = tcp.set_nodelay(true);
            });
            axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = shutdown.wait_for(|s| *s).await;
                })
                .await
        })
    };

    bootstrap(&config, &raft).await?;

    tokio::spawn(leases.clone().run(replica.clone(), config.lease_check, shutdown.clone()));
    tokio::spawn(watch_leader(replica.clone(), shutdown.clone()));

    let _ = shutdown.wait_for(|s| *s).await;
    tracing::info!("shutting down");
    let stop = async {
        let _ = grpc.await;
        let _ = rest.await;
        if let Err(e) = raft.shutdown().await {
            tracing::warn!(error = %e, "raft shutdown");
        }
    };
    if tokio::time::timeout(Duration::from_secs(10), stop).await.is_err() {
        tracing::warn!("graceful shutdown took over 10 s; exiting anyway");
    }
    Ok(())
}

/// On the first start of a new cluster, the founding replica with the smallest id initializes
/// the membership. Later starts (the log already has a membership) skip this.
async fn bootstrap(config: &Config, raft: &raft::Raft) -> anyhow::Result<()> {
    if config.initial_cluster.is_empty() || !config.is_bootstrapper() {
        return Ok(());
    }
    if raft.is_initialized().await.context("raft stopped")? {
        return Ok(());
    }
    let members: BTreeMap<u64, NodeInfo> = config
        .initial_cluster
        .iter()
        .map(|(id, m)| (*id, NodeInfo { raft_addr: m.grpc_addr.clone(), rest_addr: m.rest_addr.clone() }))
        .collect();
    tracing::info!(members = ?members.keys().collect::<Vec<_>>(), "initializing a new cluster");
    raft.initialize(members).await.context("initializing the cluster")?;
    Ok(())
}

/// Logs and counts leader changes.
async fn watch_leader(replica: Arc<Replica>, mut shutdown: watch::Receiver<bool>) {
    let mut metrics = replica.raft.metrics();
    let mut last = None;
    loop {
        let leader = metrics.borrow_and_update().current_leader;
        if leader != last {
            if leader.is_some() {
                metrics::counter!(crate::metrics::LEADER_CHANGES).increment(1);
            }
            tracing::info!(leader = ?leader, me = replica.id, "leader changed");
            last = leader;
        }
        tokio::select! {
            r = metrics.changed() => if r.is_err() { return },
            _ = shutdown.changed() => return,
        }
    }
}
