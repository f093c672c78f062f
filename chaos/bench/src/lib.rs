//! hc-bench: hc-allocator side by side with etcd 3.4 on one machine, in one run (issue 5, the
//! store and failover parts). The runner starts every process itself on loopback, in a scratch
//! directory it removes at the end, also on failure or Ctrl-C.
//!
//! Layout:
//! - [`config`]: flags and the smoke / full defaults, validated before anything starts;
//! - [`supervisor`]: child processes and the scratch directory, killed and removed on drop;
//! - [`hc_cluster`], [`etcd_cluster`]: three-replica clusters that can lose their leader to
//!   `kill -9` and restart it from its data directory;
//! - [`workload`]: how one client allocates, per system and layout;
//! - [`load`]: the drivers — a timed row with all clients starting together, and steady load
//!   with a probe for the first allocation after a kill;
//! - [`store_bench`], [`failover_bench`]: the two parts;
//! - [`stats`], [`report`], [`machine`]: percentiles, the distinctness check, tables, JSON,
//!   targets.

pub mod burst;
pub mod config;
pub mod etcd_cluster;
pub mod failover_bench;
pub mod hc_cluster;
pub mod leases;
pub mod load;
pub mod machine;
pub mod node;
pub mod pod_path;
pub mod report;
pub mod scale;
pub mod stats;
pub mod steady;
pub mod store_bench;
pub mod supervisor;
pub mod workload;

use std::sync::Arc;
use std::time::Duration;

use config::{Config, Part};
use machine::Machine;
use report::Report;
use supervisor::Supervisor;

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error(transparent)]
    HcCluster(#[from] hc_cluster::HcClusterError),
    #[error(transparent)]
    EtcdCluster(#[from] etcd_cluster::EtcdClusterError),
    #[error("hc-allocator: {0}")]
    HcClient(#[from] hc_api::IpamError),
    #[error("etcd: {0}")]
    EtcdClient(#[from] etcd_client::Error),
    #[error("pool spec: {0}")]
    PoolSpec(#[from] serde_json::Error),
    #[error("warm-up allocation on {system} failed: {source}")]
    WarmUp { system: &'static str, source: workload::AllocError },
    #[error("the steady load acknowledged nothing for {waited:?} before a failover trial")]
    Stalled { waited: Duration },
    #[error("{0:#}")]
    Pods(#[from] anyhow::Error),
    #[error("HTTP: {0}")]
    Http(String),
}

/// Runs the configured parts and assembles the report.
pub async fn run(cfg: &Config, sup: &Arc<Supervisor>, machine: Machine) -> Result<Report, BenchError> {
    let store = if cfg.runs(Part::Store) { store_bench::run(cfg, sup).await? } else { Vec::new() };
    let failover = if cfg.runs(Part::Failover) { failover_bench::run(cfg, sup).await? } else { Vec::new() };
    let pod_path = if cfg.runs(Part::PodPath) { Some(pod_path::run(cfg, sup).await?) } else { None };
    let burst = if cfg.runs(Part::Burst) { Some(burst::run(cfg, sup).await?) } else { None };
    let scale = if cfg.runs(Part::Scale) { scale::run(cfg, &cfg.scale, sup).await? } else { Vec::new() };
    let leases = if cfg.runs(Part::Leases) { Some(leases::run(cfg, &cfg.leases, sup).await?) } else { None };
    let steady = if cfg.runs(Part::Steady) { Some(steady::run(cfg, sup).await?) } else { None };
    let store_ratios = report::store_ratios(&store);
    let hc = failover.iter().find(|f| f.system == report::System::Hc).and_then(|f| f.median_ms);
    let etcd = failover.iter().find(|f| f.system != report::System::Hc).and_then(|f| f.median_ms);
    let mut targets = report::targets(&store_ratios, &failover);
    let mut problems = report::problems(&store, &failover);
    if !cfg.runs(Part::Store) && !cfg.runs(Part::Failover) {
        // A run without store and failover measured none of their targets: leave them out.
        targets.clear();
    }
    targets.extend(scale::targets(&scale));
    problems.extend(scale::problems(&scale));
    problems.extend(leases.iter().flat_map(leases::problems));
    if let Some(st) = &steady {
        targets.extend(steady::targets(st));
        problems.extend(steady::problems(st));
    }
    if let Some(p) = &pod_path {
        targets.extend(pod_path::targets(p));
        problems.extend(p.problems.iter().cloned());
    }
    if let Some(b) = &burst {
        targets.extend(burst::targets(b));
        problems.extend(b.problems.iter().cloned());
    }
    Ok(Report {
        machine,
        config: cfg.clone(),
        targets,
        problems,
        pod_path,
        burst,
        scale,
        leases,
        steady,
        failover_etcd_over_hc: etcd.zip(hc).filter(|(_, h)| *h > 0.0).map(|(e, h)| e / h),
        store,
        store_ratios,
        failover,
    })
}
