//! One schedule: a fresh cluster in fresh namespaces, the workload, the planned faults one
//! after another (each healed), a quiet tail, the final listing from the leader, and the check.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context;
use hc_api::IpamError;
use hc_api::client::Client;
use hc_api::command::Command;
use hc_api::types::{PoolSpec, Reservation};
use hc_checker::{CheckConfig, FaultPhase, Holding, Recorder, Report};
use serde::{Deserialize, Serialize};

use crate::agent::{RESERVED, reservation_key, reserved_address};
use crate::cluster::Cluster;
use crate::fault::{FaultKind, PlannedFault};
use crate::network::Network;
use crate::rng::Rng;
use crate::run::RunConfig;
use crate::workload::{POOL, POOL_CIDR, Workload, WorkloadConfig};

/// Workload before the first fault.
const WARMUP: Duration = Duration::from_secs(1);
/// Mean time between two `kill -9` restarts of one agent.
const AGENT_RESTART_EVERY: Duration = Duration::from_secs(6);
/// Workload after the last heal, so that recovery is observed.
pub const TAIL: Duration = Duration::from_secs(3);

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ScheduleReport {
    pub index: u64,
    pub planned: Vec<PlannedFault>,
    /// What each injected fault hit, in order.
    pub injected: Vec<String>,
    pub grants: u64,
    pub agent_restarts: u64,
    /// Pools created while the workload ran (besides the first).
    #[serde(default)]
    pub pools_created: u64,
    pub final_allocations: usize,
    pub duration_ms: u64,
    pub check: Report,
}

fn holding(a: &hc_api::types::Allocation) -> Holding {
    Holding {
        address: a.address,
        owner: hc_checker::Owner {
            container_id: a.owner.container_id.clone(),
            interface: a.owner.interface.clone(),
            node: a.owner.node.clone(),
        },
    }
}

struct Driver<'a> {
    cluster: &'a mut Cluster,
    workload: &'a Workload,
    recorder: &'a Recorder,
    injected: Vec<String>,
}

impl Driver<'_> {
    async fn leader(&self) -> anyhow::Result<usize> {
        self.cluster.wait_leader(Duration::from_secs(20)).await
    }

    fn followers(&self, leader: usize) -> Vec<usize> {
        (0..self.cluster.replicas.len()).filter(|i| *i != leader).collect()
    }

    async fn inject(&mut self, f: &PlannedFault) -> anyhow::Result<()> {
        let name = f.kind.name();
        let start = |detail: String, injected: &mut Vec<String>| {
            self.recorder.fault(name, FaultPhase::Start, Some(detail.clone()));
            injected.push(format!("{name}: {detail}"));
        };
        let mut injected = std::mem::take(&mut self.injected);
        match f.kind {
            FaultKind::IsolateLeader | FaultKind::IsolateFollower | FaultKind::OneWayCut => {
                let leader = self.leader().await?;
                let followers = self.followers(leader);
                let follower = followers[(f.pick % followers.len() as u64) as usize];
                match f.kind {
                    FaultKind::IsolateLeader => {
                        self.cluster.net.isolate(leader)?;
                        start(format!("replica {} (leader) isolated", leader + 1), &mut injected);
                    }
                    FaultKind::IsolateFollower => {
                        self.cluster.net.isolate(follower)?;
                        start(format!("replica {} (follower) isolated", follower + 1), &mut injected);
                    }
                    _ => {
                        self.cluster.net.cut_one_way(leader, follower)?;
                        start(format!("leader {} -> follower {} dropped", leader + 1, follower + 1), &mut injected);
                    }
                }
                tokio::time::sleep(f.hold()).await;
                self.cluster.net.heal()?;
            }
            FaultKind::PacketLoss => {
                self.cluster.net.lossy(f.loss)?;
                start(format!("{:.0}% loss on every replica", f.loss * 100.0), &mut injected);
                tokio::time::sleep(f.hold()).await;
                self.cluster.net.heal()?;
            }
            FaultKind::KillLeader => {
                let leader = self.leader().await?;
                self.cluster.kill(leader);
                start(format!("replica {} (leader) killed, down {} ms", leader + 1, f.hold_ms), &mut injected);
                tokio::time::sleep(f.hold()).await;
                self.cluster.spawn(leader)?;
            }
            FaultKind::KillFollower => {
                let leader = self.leader().await?;
                let followers = self.followers(leader);
                let follower = followers[(f.pick % followers.len() as u64) as usize];
                self.cluster.kill(follower);
                start(format!("replica {} (follower) killed, down {} ms", follower + 1, f.hold_ms), &mut injected);
                tokio::time::sleep(f.hold()).await;
                self.cluster.spawn(follower)?;
            }
            FaultKind::KillAll => {
                let n = self.cluster.replicas.len();
                for i in 0..n {
                    self.cluster.kill(i);
                }
                start(format!("all {n} replicas killed, down {} ms", f.hold_ms), &mut injected);
                tokio::time::sleep(f.hold()).await;
                for i in 0..n {
                    self.cluster.spawn(i)?;
                }
            }
            FaultKind::SplitMinority => {
                let leader = self.leader().await?;
                let n = self.cluster.replicas.len();
                let mut minority = vec![leader];
                if n == 5 {
                    let followers = self.followers(leader);
                    minority.push(followers[(f.pick % followers.len() as u64) as usize]);
                }
                self.cluster.net.split(&minority)?;
                let names: Vec<String> = minority.iter().map(|i| (i + 1).to_string()).collect();
                start(format!("replicas {} (with the leader) split from the rest", names.join("+")), &mut injected);
                tokio::time::sleep(f.hold()).await;
                self.cluster.net.heal()?;
            }
            FaultKind::PauseLeader => {
                let leader = self.leader().await?;
                self.cluster.pause(leader)?;
                start(format!("replica {} (leader) stopped {} ms", leader + 1, f.hold_ms), &mut injected);
                tokio::time::sleep(f.hold()).await;
                self.cluster.resume(leader)?;
            }
            FaultKind::LeaseLapse => {
                let agent = (f.pick % self.workload.agents() as u64) as usize;
                self.workload.lapse(agent).await;
                start(format!("agent {agent} without keep-alives for {} ms", f.hold_ms), &mut injected);
                tokio::time::sleep(f.hold()).await;
                self.workload.heal(agent).await;
            }
        }
        self.recorder.fault(name, FaultPhase::Stop, None);
        self.injected = injected;
        Ok(())
    }
}

pub async fn run_schedule(
    config: &RunConfig,
    index: u64,
    planned: Vec<PlannedFault>,
    dir: &Path,
) -> anyhow::Result<(ScheduleReport, hc_checker::History)> {
    let began = std::time::Instant::now();
    std::fs::create_dir_all(dir)?;
    let net = Network::create(config.replicas, index as u32)?;
    let extra = vec!["--lease-check-ms".into(), "100".into(), "--snapshot-every".into(), "500".into()];
    let mut cluster = Cluster::start(net, config.allocator_bin.clone(), dir, extra)?;
    cluster.wait_leader(Duration::from_secs(30)).await?;
    let admin = Client::new(cluster.endpoints(), config.client.clone())?;
    let spec: PoolSpec = serde_json::from_value(serde_json::json!({"name": POOL, "cidr": POOL_CIDR}))?;
    admin.propose(&Command::CreatePool(spec)).await.context("creating the pool")?;
    for ordinal in 0..RESERVED {
        let reservation =
            Reservation { key: reservation_key(ordinal), pool: POOL.to_owned(), address: reserved_address(ordinal) };
        admin.propose(&Command::PutReservation(reservation)).await.context("creating a reservation")?;
    }

    let recorder = Arc::new(Recorder::new());
    let wl_config = WorkloadConfig {
        agents: config.agents,
        lease_ttl: config.lease_ttl,
        client: config.client.clone(),
        agent_bin: config.agent_bin.clone(),
        dir: dir.join("agents"),
        restart_every: Some(AGENT_RESTART_EVERY),
    };
    let workload =
        Arc::new(Workload::start(&cluster.endpoints(), &wl_config, Arc::clone(&recorder), config.seed, index)?);
    let pools_created = Arc::new(AtomicU64::new(0));
    let pools = tokio::spawn(create_pools(
        admin,
        Arc::clone(&workload),
        Rng::derive(config.seed, 3000 + index),
        Arc::clone(&pools_created),
    ));
    tokio::time::sleep(WARMUP).await;

    let mut driver = Driver { cluster: &mut cluster, workload: &workload, recorder: &recorder, injected: Vec::new() };
    let mut failure = None;
    for f in &planned {
        tokio::time::sleep(f.gap()).await;
        if let Err(e) = driver.inject(f).await {
            // Heal whatever is left before giving up on the schedule.
            let _ = driver.cluster.net.heal();
            failure = Some(e);
            break;
        }
    }
    let injected = std::mem::take(&mut driver.injected);
    let remaining = Duration::from_secs(config.schedule_secs).saturating_sub(began.elapsed());
    tokio::time::sleep(remaining.max(TAIL)).await;
    pools.abort();
    let _ = pools.await;
    let pools_created = pools_created.load(Ordering::Relaxed);
    workload.stop().await;
    let grants = workload.counters.grants.load(Ordering::Relaxed);
    let restarts = workload.counters.restarts.load(Ordering::Relaxed);
    if let Some(e) = failure {
        return Err(e.context(cluster.log_tails(20)));
    }

    let leader = cluster.wait_settled(Duration::from_secs(30)).await?;
    let invoke_ns = recorder.now_ns();
    let listing = cluster.probe().list_allocations_at(leader, None, None).await.context("final listing")?;
    recorder.final_state(invoke_ns, listing.iter().map(holding).collect());
    let history = recorder.history();
    let check_config = CheckConfig { recovery_bound_ns: config.recovery_bound.as_nanos() as u64, ..Default::default() };
    let check = hc_checker::check(&history, &check_config).context("a malformed history")?;
    drop(cluster);
    // The data directories are large and say nothing the logs and the history do not.
    for i in 1..=config.replicas {
        let _ = std::fs::remove_dir_all(dir.join(format!("r{i}")));
    }
    let report = ScheduleReport {
        index,
        planned,
        injected,
        grants,
        agent_restarts: restarts,
        pools_created,
        final_allocations: listing.len(),
        duration_ms: began.elapsed().as_millis() as u64,
        check,
    };
    Ok((report, history))
}

/// Creates a new pool every 2–4 s while the workload runs and tells the agents; a creation
/// whose outcome is unknown is announced too (allocating in a pool that does not exist is a
/// typed refusal). Counts what it announced in `created`; runs until aborted.
async fn create_pools(admin: Client, workload: Arc<Workload>, mut rng: Rng, created: Arc<AtomicU64>) {
    for k in 0..200u32 {
        tokio::time::sleep(Duration::from_millis(rng.range(2000, 4000))).await;
        let name = format!("{POOL}-x{k}");
        let spec = serde_json::from_value::<PoolSpec>(serde_json::json!({
            "name": name, "cidr": format!("172.30.{k}.0/24"), "gateway": format!("172.30.{k}.1")
        }));
        let Ok(spec) = spec else { return };
        match admin.propose(&Command::CreatePool(spec)).await {
            Ok(_) | Err(IpamError::Unavailable { .. } | IpamError::NotLeader { .. }) => {
                workload.add_pool(&name).await;
                created.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => eprintln!("hc-chaos: creating pool {name}: {e}"),
        }
    }
}

/// Fault name → how many ran (for the run summary).
pub fn fault_counts(reports: &[ScheduleReport]) -> BTreeMap<String, u64> {
    let mut counts = BTreeMap::new();
    for f in reports.iter().flat_map(|r| &r.check.faults) {
        *counts.entry(f.name.clone()).or_default() += 1;
    }
    counts
}
