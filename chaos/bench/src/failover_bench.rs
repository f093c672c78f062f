//! Part 4, failover: under steady load, `kill -9` of the leader, then the time from the kill to
//! the first acknowledged allocation that was started after the killed process was reaped. The
//! killed replica is restarted from its data directory and caught up before the next trial.
//! hc-allocator first, then etcd (key per address, its fastest layout), each on a fresh cluster.

use std::sync::Arc;
use std::time::Duration;

use hc_api::command::Command;
use tokio::time::{Instant, sleep};

use crate::BenchError;
use crate::config::Config;
use crate::etcd_cluster::EtcdCluster;
use crate::hc_cluster::HcCluster;
use crate::load::{SteadyLoad, Tally};
use crate::report::{FailoverResult, System, Trial};
use crate::stats::{duplicates, median};
use crate::supervisor::Supervisor;
use crate::workload::etcd_address_key::EtcdAddressKeyClient;
use crate::workload::hc::HcClient;

/// Longest wait for the first allocation after a kill before the trial counts as not recovered.
const RECOVERY_TIMEOUT: Duration = Duration::from_secs(30);
const LEADER_TIMEOUT: Duration = Duration::from_secs(20);
const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the load may make no progress before a trial before the run gives up.
const STALL_TIMEOUT: Duration = Duration::from_secs(20);
/// Upper bound of one trial, for the steady load's own limit.
const TRIAL_BOUND: Duration = Duration::from_secs(180);

/// A replicated system whose leader can be found, killed and restarted.
trait Replicated {
    async fn leader(&self) -> Result<usize, BenchError>;
    fn kill(&mut self, i: usize);
    async fn restart_and_catch_up(&mut self, i: usize) -> Result<(), BenchError>;
    fn name(&self, i: usize) -> String;
}

impl Replicated for HcCluster {
    async fn leader(&self) -> Result<usize, BenchError> {
        Ok(HcCluster::leader(self, LEADER_TIMEOUT).await?)
    }
    fn kill(&mut self, i: usize) {
        HcCluster::kill(self, i);
    }
    async fn restart_and_catch_up(&mut self, i: usize) -> Result<(), BenchError> {
        self.restart(i)?;
        Ok(self.wait_caught_up(i, CATCH_UP_TIMEOUT).await?)
    }
    fn name(&self, i: usize) -> String {
        HcCluster::name(self, i)
    }
}

impl Replicated for EtcdCluster {
    async fn leader(&self) -> Result<usize, BenchError> {
        Ok(EtcdCluster::leader(self, LEADER_TIMEOUT).await?)
    }
    fn kill(&mut self, i: usize) {
        EtcdCluster::kill(self, i);
    }
    async fn restart_and_catch_up(&mut self, i: usize) -> Result<(), BenchError> {
        self.restart(i)?;
        Ok(self.wait_caught_up(i, CATCH_UP_TIMEOUT).await?)
    }
    fn name(&self, i: usize) -> String {
        EtcdCluster::name(self, i)
    }
}

pub async fn run(cfg: &Config, sup: &Arc<Supervisor>) -> Result<Vec<FailoverResult>, BenchError> {
    let limit = TRIAL_BOUND * cfg.failover_trials as u32;
    let n = cfg.failover_clients;

    eprintln!("hc-bench: failover, hc-allocator, {} trials ...", cfg.failover_trials);
    let hc = {
        let mut cluster =
            HcCluster::start(sup.clone(), cfg.allocator_bin.clone(), &cfg.allocator_args, "failover-hc").await?;
        cluster.client(0)?.propose(&Command::CreatePool(crate::store_bench::hc_pool()?)).await?;
        let mut clients = Vec::with_capacity(n);
        for i in 0..n {
            clients.push(HcClient::new(cluster.client(i)?, crate::store_bench::HC_POOL, "f", i));
        }
        let load = SteadyLoad::start(clients, limit);
        let trials = trials(cfg, &mut cluster, &load).await;
        result(System::Hc, n, trials?, load.stop().await)
    };

    eprintln!("hc-bench: failover, etcd, {} trials ...", cfg.failover_trials);
    let etcd = {
        let mut cluster =
            EtcdCluster::start(sup.clone(), cfg.etcd_bin.clone(), &cfg.etcd_args, "failover-etcd").await?;
        let mut clients = Vec::with_capacity(n);
        for i in 0..n {
            clients.push(EtcdAddressKeyClient::new(cluster.client().await?.kv_client(), "/hc-bench/f/", "f", i, n));
        }
        let load = SteadyLoad::start(clients, limit);
        let trials = trials(cfg, &mut cluster, &load).await;
        result(System::EtcdAddressKey, n, trials?, load.stop().await)
    };
    Ok(vec![hc, etcd])
}

async fn trials<R: Replicated>(cfg: &Config, cluster: &mut R, load: &SteadyLoad) -> Result<Vec<Trial>, BenchError> {
    let mut out = Vec::with_capacity(cfg.failover_trials);
    for trial in 1..=cfg.failover_trials {
        wait_for_progress(load, cfg.settle).await?;
        let leader = cluster.leader().await?;
        let killed = cluster.name(leader);
        let killed_at = Instant::now();
        cluster.kill(leader);
        // Only allocations started once the old leader is reaped count: none of them can have
        // been served by it.
        load.probe().arm(Instant::now());
        let deadline = killed_at + RECOVERY_TIMEOUT;
        // Wait for the first allocation and, alongside, note when a survivor declares itself
        // leader: the difference is the time spent in clients and request routing.
        let first_allocation = async {
            loop {
                if let Some(t) = load.probe().first_success() {
                    break Some(t);
                }
                if Instant::now() > deadline {
                    break None;
                }
                sleep(Duration::from_millis(2)).await;
            }
        };
        let election = async { cluster.leader().await.ok().map(|i| (i, Instant::now())) };
        let (first, elected) = tokio::join!(first_allocation, election);
        load.probe().disarm();
        let ms = |t: Instant| t.duration_since(killed_at).as_secs_f64() * 1000.0;
        let recovery_ms = first.map(ms);
        let leader_seen_ms = elected.map(|(_, t)| ms(t));
        let new_leader = elected.map(|(i, _)| cluster.name(i));
        eprintln!(
            "hc-bench:   trial {trial}: killed {killed}; new leader {} seen after {} ms; first allocation after {} ms",
            new_leader.as_deref().unwrap_or("-"),
            leader_seen_ms.map_or_else(|| "-".to_owned(), |v| format!("{v:.0}")),
            recovery_ms.map_or_else(|| "-".to_owned(), |v| format!("{v:.0}"))
        );
        out.push(Trial { trial, killed, new_leader, leader_seen_ms, recovery_ms });
        cluster.restart_and_catch_up(leader).await?;
    }
    Ok(out)
}

/// Waits `settle`, then until the load has acknowledged at least one allocation since the wait
/// began (the cluster is serving again after the previous restart).
async fn wait_for_progress(load: &SteadyLoad, settle: Duration) -> Result<(), BenchError> {
    let before = load.probe().successes();
    sleep(settle).await;
    let deadline = Instant::now() + STALL_TIMEOUT;
    while load.probe().successes() == before {
        if Instant::now() > deadline {
            return Err(BenchError::Stalled { waited: settle + STALL_TIMEOUT });
        }
        sleep(Duration::from_millis(10)).await;
    }
    Ok(())
}

fn result(system: System, clients: usize, trials: Vec<Trial>, tally: Tally) -> FailoverResult {
    let ms: Vec<f64> = trials.iter().filter_map(|t| t.recovery_ms).collect();
    FailoverResult {
        system,
        clients,
        median_ms: median(&ms),
        max_ms: ms.iter().copied().reduce(f64::max),
        min_ms: ms.iter().copied().reduce(f64::min),
        trials,
        acked: tally.acked.len() as u64,
        errors: tally.errors.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect(),
        first_error: tally.first_error.clone(),
        duplicates: duplicates(&tally.acked),
    }
}
