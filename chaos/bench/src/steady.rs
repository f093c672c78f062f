//! Part 4's second target: no spurious leader change under steady load. A fresh 3-replica
//! cluster (default flags unless `--allocator-arg` says otherwise) takes back-to-back
//! allocations from `--failover-clients` clients for `--steady-secs`, while every replica's
//! term and leader are polled; any term past the one the load started in is a leader change
//! nobody asked for (nothing is killed or cut off in this part).

use std::sync::Arc;
use std::time::Duration;

use hc_api::command::Command;
use serde::Serialize;
use tokio::time::{Instant, sleep};

use crate::BenchError;
use crate::config::Config;
use crate::hc_cluster::HcCluster;
use crate::load::SteadyLoad;
use crate::report::Target;
use crate::supervisor::Supervisor;
use crate::workload::hc::HcClient;

const LEADER_TIMEOUT: Duration = Duration::from_secs(20);
const POLL: Duration = Duration::from_millis(250);

/// A term seen for the first time, and who led it.
#[derive(Debug, Clone, Serialize)]
pub struct TermSeen {
    pub at_secs: f64,
    pub term: u64,
    pub leader_id: Option<u64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct SteadyResult {
    pub secs: f64,
    pub clients: usize,
    pub allocations: u64,
    pub per_sec: f64,
    pub errors: u64,
    pub start_term: u64,
    /// Terms after the first, in the order seen: each is a leader change.
    pub changes: Vec<TermSeen>,
}

pub async fn run(cfg: &Config, sup: &Arc<Supervisor>) -> Result<SteadyResult, BenchError> {
    let secs = cfg.steady_secs;
    let n = cfg.failover_clients;
    eprintln!("hc-bench: steady load, hc-allocator, {n} clients for {secs} s, watching the leader ...");
    let cluster = HcCluster::start(sup.clone(), cfg.allocator_bin.clone(), &cfg.allocator_args, "steady-hc").await?;
    cluster.client(0)?.propose(&Command::CreatePool(crate::store_bench::hc_pool()?)).await?;
    let leader = cluster.leader(LEADER_TIMEOUT).await?;
    let start_term = cluster.status_of(leader).await?.term;
    let mut clients = Vec::with_capacity(n);
    for i in 0..n {
        clients.push(HcClient::new(cluster.client(i)?, crate::store_bench::HC_POOL, "s", i));
    }
    let window = Duration::from_secs_f64(secs);
    let started = Instant::now();
    let load = SteadyLoad::start(clients, window + Duration::from_secs(30));
    let mut highest = start_term;
    let mut changes = Vec::new();
    while started.elapsed() < window {
        for i in 0..cluster.len() {
            let Ok(s) = cluster.status_of(i).await else { continue };
            if s.term > highest {
                highest = s.term;
                let seen = TermSeen { at_secs: started.elapsed().as_secs_f64(), term: s.term, leader_id: s.leader_id };
                eprintln!(
                    "hc-bench: steady load: term {} (leader {:?}) at {:.1} s",
                    seen.term, seen.leader_id, seen.at_secs
                );
                changes.push(seen);
            }
        }
        sleep(POLL).await;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let tally = load.stop().await;
    let allocations = tally.acked.len() as u64;
    Ok(SteadyResult {
        secs: elapsed,
        clients: n,
        allocations,
        per_sec: allocations as f64 / elapsed.max(f64::EPSILON),
        errors: tally.error_count(),
        start_term,
        changes,
    })
}

/// The target: measured only by a run of at least 10 minutes.
pub fn targets(r: &SteadyResult) -> Vec<Target> {
    let measured = format!("{} in {:.0} s", r.changes.len(), r.secs);
    vec![Target {
        name: "spurious leader changes under steady load".into(),
        goal: "0 in 10 min".into(),
        measured,
        met: (r.secs >= 600.0).then_some(r.changes.is_empty()),
    }]
}

/// Correctness problems: allocations must go on.
pub fn problems(r: &SteadyResult) -> Vec<String> {
    if r.allocations == 0 { vec!["steady load: no allocation was acknowledged".into()] } else { Vec::new() }
}

pub fn render(r: &SteadyResult) -> String {
    let mut s = format!(
        "\nSteady load (no faults): {} clients for {:.0} s, {} allocations ({:.0}/s), {} errors; term {} at the start, \
         {} leader change(s)\n",
        r.clients,
        r.secs,
        r.allocations,
        r.per_sec,
        r.errors,
        r.start_term,
        r.changes.len()
    );
    for c in &r.changes {
        s.push_str(&format!("  term {} (leader {:?}) first seen at {:.1} s\n", c.term, c.leader_id, c.at_secs));
    }
    s
}
