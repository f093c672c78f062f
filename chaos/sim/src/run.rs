//! One seed, start to end: boot the replicas, run the workload under the seed's faults, heal,
//! let the replicas converge, and check — the history with hc-checker, and every replica's
//! applied state (equal everywhere, `State::check_invariants` holds).
//!
//! The run happens on a fresh single-threaded tokio runtime with paused time, inside openraft's
//! deterministic-RNG scope seeded with the run's seed: tasks are polled in a fixed order, time
//! moves only when every task waits (straight to the next timer), and every random choice —
//! ours and openraft's — comes from the seed. The same seed gives the same run; [`SeedReport::digest`]
//! shows it.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use hc_checker::{CheckConfig, FaultPhase, Holding};
use tokio::time::Instant;

use crate::cluster::Cluster;
use crate::history::{SimClock, SimRecorder};
use crate::network::{BASE_DELAY_MS, Net};
use crate::raft::{SimRuntime, state_bytes};
use crate::rng::Rng;
use crate::workload::{LEASE_TTL_MS, Workload, World};

/// The shape of every seed's run.
#[derive(Debug, Clone)]
pub struct SimOptions {
    pub replicas: usize,
    pub agents: usize,
    /// Simulated time with faults.
    pub faulty_ms: u64,
    /// Simulated time of workload after the last fault healed.
    pub healed_ms: u64,
}

impl Default for SimOptions {
    fn default() -> Self {
        SimOptions { replicas: 3, agents: 3, faulty_ms: 2_500, healed_ms: 1_000 }
    }
}

/// What one seed found.
#[derive(Debug, Clone)]
pub struct SeedReport {
    pub seed: u64,
    /// FNV-1a of the recorded history (JSON lines) and the final state: equal for equal runs.
    pub digest: u64,
    pub operations: u64,
    pub faults: usize,
    pub restarts: u64,
    /// The Raft term at the end: 1 + the elections that bumped it.
    pub term: u64,
    pub snapshot_installs: u64,
    /// Snapshots a replica answered from its own log instead of installing (`hc-snapshot-guard`).
    pub snapshots_covered: u64,
    /// Operations recorded with an unknown outcome.
    pub unknown: u64,
    /// Allocate and release commands that shared a log entry with others (`hc-batcher`).
    pub batched: u64,
    /// Everything wrong: hc-checker's violations, replicas that differ or break an invariant.
    pub violations: Vec<String>,
    /// The run's trace, one line per event.
    pub trace: Vec<String>,
    /// The recorded history as JSON lines, for `hc-check`.
    pub history: String,
}

impl SeedReport {
    pub fn ok(&self) -> bool {
        self.violations.is_empty()
    }

    /// The trace lines that name an operation of a violation, and the last few lines.
    pub fn short_trace(&self, tail: usize) -> Vec<String> {
        let ids: Vec<String> = self
            .violations
            .iter()
            .flat_map(|v| v.split("ops ").nth(1).map(str::to_owned))
            .flat_map(|ops| {
                ops.split(|c: char| !c.is_ascii_digit())
                    .filter(|s| !s.is_empty())
                    .map(|s| format!("#{s} "))
                    .collect::<Vec<_>>()
            })
            .collect();
        let mut lines: Vec<String> =
            self.trace.iter().filter(|l| ids.iter().any(|id| l.contains(id.as_str()))).cloned().collect();
        let start = self.trace.len().saturating_sub(tail);
        lines.push(format!("… last {} of {} trace lines:", self.trace.len() - start, self.trace.len()));
        lines.extend(self.trace[start..].iter().cloned());
        lines
    }
}

#[derive(Debug, Clone)]
enum FaultKind {
    /// Cut every link between `side` and the rest, both ways.
    Partition {
        side: Vec<u64>,
        leader: bool,
    },
    /// Cut `from → to` only.
    OneWay {
        from: u64,
        to: u64,
    },
    /// Crash at the start, restart from disk at the end.
    Crash {
        node: u64,
        leader: bool,
    },
    Loss {
        per_mille: u64,
    },
    Slow {
        max_ms: u64,
    },
    /// The agent's keep-alives stop: its lease expires and its writes turn stale.
    Lapse {
        agent: usize,
    },
}

#[derive(Debug, Clone)]
struct Fault {
    name: String,
    start_ms: u64,
    stop_ms: u64,
    kind: FaultKind,
}

/// The seed's faults: 2 to 5, each 150–1200 ms, inside the faulty phase; a partition or crash
/// is aimed at whoever leads when it starts two times in three.
fn schedule(rng: &mut Rng, ids: &[u64], agents: usize, faulty_ms: u64) -> Vec<Fault> {
    let n = rng.range(2, 5);
    (0..n)
        .map(|i| {
            let kind = match rng.below(7) {
                0 | 1 => {
                    let size = rng.range(1, ((ids.len() - 1) / 2).max(1) as u64) as usize;
                    let mut side: Vec<u64> = Vec::new();
                    while side.len() < size {
                        let id = ids[rng.below(ids.len() as u64) as usize];
                        if !side.contains(&id) {
                            side.push(id);
                        }
                    }
                    FaultKind::Partition { side, leader: rng.below(3) != 0 }
                }
                2 => {
                    let from = ids[rng.below(ids.len() as u64) as usize];
                    let others: Vec<u64> = ids.iter().copied().filter(|i| *i != from).collect();
                    FaultKind::OneWay { from, to: others[rng.below(others.len() as u64) as usize] }
                }
                3 => FaultKind::Crash { node: ids[rng.below(ids.len() as u64) as usize], leader: rng.below(3) != 0 },
                4 => FaultKind::Loss { per_mille: rng.range(50, 300) },
                5 => FaultKind::Slow { max_ms: rng.range(20, 120) },
                _ => FaultKind::Lapse { agent: rng.below(agents as u64) as usize },
            };
            let min = if matches!(kind, FaultKind::Lapse { .. }) { LEASE_TTL_MS * 3 / 2 } else { 150 };
            let len = rng.range(min, min.max(1_200));
            let start_ms = rng.range(100, faulty_ms.saturating_sub(len).max(100));
            let name = match &kind {
                FaultKind::Partition { .. } => "partition",
                FaultKind::OneWay { .. } => "one-way-cut",
                FaultKind::Crash { .. } => "crash",
                FaultKind::Loss { .. } => "loss",
                FaultKind::Slow { .. } => "slow",
                FaultKind::Lapse { .. } => "lease-lapse",
            };
            Fault { name: format!("{name}-{i}"), start_ms, stop_ms: start_ms + len, kind }
        })
        .collect()
}

/// Runs one seed. Errors only when the simulation itself cannot run (not for a violation).
pub fn run_seed(seed: u64, options: &SimOptions) -> anyhow::Result<SeedReport> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build()?;
    rt.block_on(SimRuntime::scope(seed, run(seed, options.clone())))
}

/// Faults in force, so that overlapping ones combine and each stop undoes only its own.
#[derive(Default)]
struct InForce {
    loss: Vec<u64>,
    slow: Vec<u64>,
    /// The links each running fault cut, by fault name.
    cuts: BTreeMap<String, Vec<(u64, u64)>>,
    /// The node each running crash took down, by fault name.
    crashed: BTreeMap<String, u64>,
}

async fn run(seed: u64, options: SimOptions) -> anyhow::Result<SeedReport> {
    let clock = SimClock::start();
    let recorder = Arc::new(SimRecorder::new(clock));
    let net = Arc::new(Net::new(Rng::derive(seed, 1)));
    let ids: Vec<u64> = (1..=options.replicas as u64).collect();
    let mut cluster = Cluster::new(ids.clone(), net.clone(), recorder.clone())?;
    cluster.boot().await?;

    let mut rng = Rng::derive(seed, 2);
    let faults = schedule(&mut rng, &ids, options.agents, options.faulty_ms);
    let world = Arc::new(World::new(net.clone(), recorder.clone(), ids.clone()));
    let t0 = Instant::now();
    let end = t0 + Duration::from_millis(options.faulty_ms + options.healed_ms);
    let Some(workload) = Workload::start(world, seed, options.agents, end).await else {
        anyhow::bail!("no leader made the first pool within the run");
    };

    // Drive the faults.
    let mut events: Vec<(u64, bool, usize)> =
        faults.iter().enumerate().flat_map(|(i, f)| [(f.start_ms, true, i), (f.stop_ms, false, i)]).collect();
    events.sort();
    let mut in_force = InForce::default();
    for (at_ms, start, i) in events {
        tokio::time::sleep_until(t0 + Duration::from_millis(at_ms)).await;
        let fault = &faults[i];
        if start {
            let detail = start_fault(fault, &mut cluster, &workload, &mut in_force).await;
            recorder.fault(&fault.name, FaultPhase::Start, &detail);
        } else {
            stop_fault(fault, &mut cluster, &workload, &mut in_force).await?;
            recorder.fault(&fault.name, FaultPhase::Stop, "healed");
        }
    }
    workload.join().await;

    // Converge and compare.
    cluster.stop_keepers();
    let mut violations = Vec::new();
    let listing_at = clock.now_ns();
    let leader = cluster.converge(Duration::from_secs(20)).await;
    let mut final_digest = 0;
    match leader.and_then(|l| net.live(l)) {
        None => violations.push("replicas did not converge within 20 s (simulated) after healing".to_owned()),
        Some(leader) => {
            let reference = leader.read(state_bytes);
            final_digest = fnv1a(&reference, FNV_OFFSET);
            for id in &ids {
                let Some(live) = net.live(*id) else {
                    violations.push(format!("replica {id} is not running after healing"));
                    continue;
                };
                if let Err(e) = live.read(|s| s.check_invariants()) {
                    violations.push(format!("replica {id}: {e}"));
                }
                if live.read(state_bytes) != reference {
                    violations.push(format!(
                        "replica {id}'s applied state differs from the leader's (replica {})",
                        leader.id
                    ));
                }
            }
            let holdings: Vec<Holding> = leader.read(|s| {
                s.allocations(None, None, None)
                    .into_iter()
                    .map(|a| Holding {
                        address: a.address,
                        owner: hc_checker::Owner {
                            container_id: a.owner.container_id,
                            interface: a.owner.interface,
                            node: a.owner.node,
                        },
                    })
                    .collect()
            });
            recorder.final_state(listing_at, holdings);
        }
    }
    let restarts = cluster.restarts;
    let term = cluster.term();
    let snapshot_installs = cluster.snapshot_installs();
    cluster.shutdown().await;

    let history = recorder.history();
    let config = CheckConfig { recovery_bound_ns: 10_000_000_000, max_search_steps: 200_000 };
    match hc_checker::check(&history, &config) {
        Ok(report) => {
            for v in &report.violations {
                let ops: Vec<String> = v.ops.iter().map(u64::to_string).collect();
                violations.push(format!("hc-checker {} (ops {}): {}", v.check.as_str(), ops.join(", "), v.explanation));
            }
        }
        Err(e) => violations.push(format!("hc-checker could not read the history: {e}")),
    }
    let jsonl = history.to_jsonl().unwrap_or_default();
    let digest = fnv1a(jsonl.as_bytes(), final_digest ^ FNV_OFFSET);
    Ok(SeedReport {
        seed,
        digest,
        operations: history.ops().count() as u64,
        faults: faults.len(),
        restarts,
        term,
        snapshot_installs,
        snapshots_covered: net.stats().snapshots_covered,
        unknown: history.ops().filter(|op| matches!(op.outcome, hc_checker::Outcome::Unknown { .. })).count() as u64,
        batched: recorder.batched(),
        violations,
        trace: recorder.trace(),
        history: jsonl,
    })
}

/// The replica that leads now, if any.
fn current_leader(cluster: &Cluster) -> Option<u64> {
    cluster.ids.iter().copied().find(|id| cluster.net.live(*id).is_some_and(|l| l.is_leader()))
}

async fn start_fault(fault: &Fault, cluster: &mut Cluster, workload: &Workload, f: &mut InForce) -> String {
    let net = cluster.net.clone();
    match &fault.kind {
        FaultKind::Partition { side, leader } => {
            let mut side = side.clone();
            if let (true, Some(l)) = (*leader, current_leader(cluster)) {
                side = vec![l];
            }
            let mut cut = Vec::new();
            for a in &side {
                for b in cluster.ids.iter().filter(|b| !side.contains(b)) {
                    cut.extend([(*a, *b), (*b, *a)]);
                }
            }
            for (a, b) in &cut {
                net.cut(*a, *b);
            }
            f.cuts.insert(fault.name.clone(), cut);
            format!("replicas {side:?} cut off from the rest")
        }
        FaultKind::OneWay { from, to } => {
            net.cut(*from, *to);
            f.cuts.insert(fault.name.clone(), vec![(*from, *to)]);
            format!("{from} → {to} cut")
        }
        FaultKind::Crash { node, leader } => {
            let target = if *leader { current_leader(cluster).unwrap_or(*node) } else { *node };
            if f.crashed.values().any(|n| *n == target) || net.live(target).is_none() {
                return format!("replica {target} already down");
            }
            cluster.crash(target).await;
            f.crashed.insert(fault.name.clone(), target);
            format!("replica {target} crashed")
        }
        FaultKind::Loss { per_mille } => {
            f.loss.push(*per_mille);
            net.set_loss(f.loss.iter().copied().max().unwrap_or(0));
            format!("{per_mille}‰ of messages lost")
        }
        FaultKind::Slow { max_ms } => {
            f.slow.push(*max_ms);
            net.set_delay((BASE_DELAY_MS.0, f.slow.iter().copied().max().unwrap_or(BASE_DELAY_MS.1)));
            format!("delays up to {max_ms} ms")
        }
        FaultKind::Lapse { agent } => {
            if let Some(c) = workload.controls.get(*agent) {
                c.lapsed.store(true, Ordering::SeqCst);
            }
            format!("node-{agent} stops its keep-alives")
        }
    }
}

async fn stop_fault(fault: &Fault, cluster: &mut Cluster, workload: &Workload, f: &mut InForce) -> anyhow::Result<()> {
    let net = cluster.net.clone();
    match &fault.kind {
        FaultKind::Partition { .. } | FaultKind::OneWay { .. } => {
            for (a, b) in f.cuts.remove(&fault.name).unwrap_or_default() {
                net.uncut(a, b);
            }
        }
        FaultKind::Crash { .. } => {
            if let Some(node) = f.crashed.remove(&fault.name) {
                cluster.restart(node).await?;
                cluster.net.live(node).ok_or_else(|| anyhow::anyhow!("replica {node} did not restart"))?;
            }
        }
        FaultKind::Loss { per_mille } => {
            if let Some(i) = f.loss.iter().position(|p| p == per_mille) {
                f.loss.remove(i);
            }
            net.set_loss(f.loss.iter().copied().max().unwrap_or(0));
        }
        FaultKind::Slow { max_ms } => {
            if let Some(i) = f.slow.iter().position(|p| p == max_ms) {
                f.slow.remove(i);
            }
            net.set_delay((BASE_DELAY_MS.0, f.slow.iter().copied().max().unwrap_or(BASE_DELAY_MS.1)));
        }
        FaultKind::Lapse { agent } => {
            if let Some(c) = workload.controls.get(*agent) {
                c.lapsed.store(false, Ordering::SeqCst);
            }
        }
    }
    Ok(())
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;

fn fnv1a(bytes: &[u8], seed: u64) -> u64 {
    bytes.iter().fold(seed, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01B3))
}
