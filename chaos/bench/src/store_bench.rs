//! Part 1, the store: for each client count, one row per system and layout, each on a fresh
//! cluster started for it alone, in the order hc-allocator, etcd key per address, etcd pool key
//! (adjacent rows share the machine's noise). Every acknowledged allocation of a row, warm-up
//! included, is checked distinct.

use std::sync::Arc;
use std::time::{Duration, Instant};

use hc_api::command::Command;
use hc_api::types::PoolSpec;

use crate::BenchError;
use crate::config::{Config, Entry};
use crate::etcd_cluster::EtcdCluster;
use crate::hc_cluster::HcCluster;
use crate::load::{RowOutcome, run_row};
use crate::report::{StoreRow, System};
use crate::stats::{duplicates, summarize};
use crate::supervisor::{ProcId, Supervisor, own_cpu_time};
use crate::workload::etcd_address_key::EtcdAddressKeyClient;
use crate::workload::etcd_pool_key::EtcdPoolKeyClient;
use crate::workload::hc::HcClient;
use crate::workload::{Acked, AllocatorClient, POOL_CIDR};

pub const HC_POOL: &str = "bench";
const ADDRESS_PREFIX: &str = "/hc-bench/addresses/";
const POOL_KEY: &str = "/hc-bench/pools/bench";
/// The warm-up allocation's sequence number (rows count from 0 and never get near it).
const WARM_UP_SEQ: u64 = u64::MAX;

pub async fn run(cfg: &Config, sup: &Arc<Supervisor>) -> Result<Vec<StoreRow>, BenchError> {
    let mut rows = Vec::new();
    for &clients in &cfg.clients {
        for system in [System::Hc, System::EtcdAddressKey, System::EtcdPoolKey] {
            eprintln!("hc-bench: store, {} clients, {} ...", clients, system.label());
            let row = match system {
                System::Hc => hc_row(cfg, sup, clients).await?,
                System::EtcdAddressKey | System::EtcdPoolKey => etcd_row(cfg, sup, system, clients).await?,
            };
            let ms = |v: Option<f64>| v.map_or_else(|| "-".to_owned(), |v| format!("{v:.2}"));
            eprintln!(
                "hc-bench:   {:.0} alloc/s, p50 {} ms, p99 {} ms, {} acked, {} errors",
                row.allocations_per_sec,
                ms(row.p50_ms),
                ms(row.p99_ms),
                row.acked,
                row.errors.values().sum::<u64>()
            );
            rows.push(row);
        }
    }
    Ok(rows)
}

/// The pool every hc-allocator run allocates from.
pub fn hc_pool() -> Result<PoolSpec, BenchError> {
    Ok(serde_json::from_value(serde_json::json!({ "name": HC_POOL, "cidr": POOL_CIDR }))?)
}

async fn hc_row(cfg: &Config, sup: &Arc<Supervisor>, clients: usize) -> Result<StoreRow, BenchError> {
    let cluster =
        HcCluster::start(sup.clone(), cfg.allocator_bin.clone(), &cfg.allocator_args, &format!("store-hc-{clients}"))
            .await?;
    cluster.client(0)?.propose(&Command::CreatePool(hc_pool()?)).await?;
    let tag = format!("s{clients}");
    let leader = cluster.leader(Duration::from_secs(20)).await?;
    let mut all = Vec::with_capacity(clients);
    for i in 0..clients {
        // Spread: client i enters through replica i mod 3 (a follower forwards to the leader).
        let first = match cfg.entry {
            Entry::Spread => i,
            Entry::Leader => leader,
        };
        all.push(HcClient::new(cluster.client(first)?, HC_POOL, &tag, i));
    }
    let mut row = measure(cfg, sup, &cluster.procs(), System::Hc, clients, all).await?;
    row.allocations_per_entry = allocations_per_entry(cluster.addrs(leader).1).await;
    Ok(row)
}

/// The mean allocations per log entry the leader's batcher wrote, from its `/metrics`; `None`
/// (and a note) when they cannot be read.
async fn allocations_per_entry(rest: &str) -> Option<f64> {
    let text = match crate::scale::scrape(&reqwest::Client::new(), rest).await {
        Ok(text) => text,
        Err(e) => {
            eprintln!("hc-bench:   allocations per entry not read: {e}");
            return None;
        }
    };
    let sum = crate::scale::metric(&text, BATCH_SUM)?;
    let count = crate::scale::metric(&text, BATCH_COUNT)?;
    (count > 0.0).then(|| sum / count)
}

const BATCH_SUM: &str = "hc_allocator_proposal_batch_commands_sum";
const BATCH_COUNT: &str = "hc_allocator_proposal_batch_commands_count";

async fn etcd_row(cfg: &Config, sup: &Arc<Supervisor>, system: System, clients: usize) -> Result<StoreRow, BenchError> {
    let name = format!("store-{}-{clients}", if system == System::EtcdPoolKey { "etcd-pool" } else { "etcd-key" });
    let cluster = EtcdCluster::start(sup.clone(), cfg.etcd_bin.clone(), &cfg.etcd_args, &name).await?;
    let tag = format!("s{clients}");
    let leader = cluster.leader(Duration::from_secs(20)).await?;
    // Spread: balanced over all three members (followers forward to the leader), as each
    // node's IPAM plugin configured with every endpoint would be. Leader: the leader alone.
    let connect = async || match cfg.entry {
        Entry::Spread => cluster.client().await,
        Entry::Leader => cluster.client_of(leader).await,
    };
    if system == System::EtcdPoolKey {
        cluster.client().await?.put(POOL_KEY, Vec::new(), None).await?;
        let mut all = Vec::with_capacity(clients);
        for i in 0..clients {
            // One etcd client per benchmark client, as each node's IPAM plugin has its own.
            all.push(EtcdPoolKeyClient::new(connect().await?.kv_client(), POOL_KEY, &tag, i));
        }
        measure(cfg, sup, &cluster.procs(), system, clients, all).await
    } else {
        let mut all = Vec::with_capacity(clients);
        for i in 0..clients {
            all.push(EtcdAddressKeyClient::new(connect().await?.kv_client(), ADDRESS_PREFIX, &tag, i, clients));
        }
        measure(cfg, sup, &cluster.procs(), system, clients, all).await
    }
}

/// Warms every client up with one allocation (connections, leader discovery), then runs the row
/// while accounting the CPU time of the servers (`procs`) and of this process (the clients).
async fn measure<C: AllocatorClient>(
    cfg: &Config,
    sup: &Supervisor,
    procs: &[ProcId],
    system: System,
    clients: usize,
    mut all: Vec<C>,
) -> Result<StoreRow, BenchError> {
    let mut warm = Vec::with_capacity(all.len());
    for c in &mut all {
        warm.push(c.allocate(WARM_UP_SEQ).await.map_err(|e| BenchError::WarmUp { system: system.label(), source: e })?);
    }
    let cpu_before: Vec<Option<Duration>> = procs.iter().map(|&p| sup.cpu_time(p)).collect();
    let client_before = own_cpu_time();
    let started = Instant::now();
    let out = run_row(all, cfg.row_length, cfg.grace).await;
    let cpu = CpuUse {
        wall: started.elapsed(),
        servers: procs
            .iter()
            .zip(cpu_before)
            .map(|(&p, before)| sup.cpu_time(p).zip(before).map(|(a, b)| a.saturating_sub(b)))
            .collect(),
        client: own_cpu_time().zip(client_before).map(|(a, b)| a.saturating_sub(b)),
    };
    Ok(store_row(system, clients, out, warm, &cpu))
}

/// CPU time used during a row.
#[derive(Debug, Clone, Default)]
pub struct CpuUse {
    pub wall: Duration,
    /// Per server process; `None` when it could not be read.
    pub servers: Vec<Option<Duration>>,
    /// The benchmark process, i.e. all its clients.
    pub client: Option<Duration>,
}

pub fn store_row(system: System, clients: usize, mut out: RowOutcome, warm: Vec<Acked>, cpu: &CpuUse) -> StoreRow {
    let per_sec = out.per_sec();
    let wall = cpu.wall.as_secs_f64();
    let acked_in_row = out.tally.acked.len();
    let per_alloc = |d: Duration| (acked_in_row > 0).then(|| d.as_secs_f64() * 1000.0 / acked_in_row as f64);
    let servers_total: Option<Duration> = cpu.servers.iter().copied().sum();
    let lat = summarize(&mut out.tally.latencies_us);
    let dups = duplicates(warm.iter().chain(&out.tally.acked));
    StoreRow {
        system,
        clients,
        allocations_per_sec: per_sec,
        in_window: out.tally.in_window,
        measured_secs: out.measured.as_secs_f64(),
        acked: (warm.len() + out.tally.acked.len()) as u64,
        p50_ms: lat.map(|l| l.p50_ms),
        p99_ms: lat.map(|l| l.p99_ms),
        max_ms: lat.map(|l| l.max_ms),
        mean_ms: lat.map(|l| l.mean_ms),
        conflicts: out.tally.conflicts,
        errors: out.tally.errors.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect(),
        first_error: out.tally.first_error,
        abandoned: out.tally.abandoned,
        duplicates: dups,
        server_cores: cpu.servers.iter().map(|d| d.map_or(0.0, |d| d.as_secs_f64() / wall.max(1e-9))).collect(),
        server_cpu_ms_per_alloc: servers_total.and_then(per_alloc),
        allocations_per_entry: None,
        client_cpu_ms_per_alloc: cpu.client.and_then(per_alloc),
    }
}
