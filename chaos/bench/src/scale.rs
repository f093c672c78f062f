//! Issue 5, scale: a 3-replica hc-allocator cluster (real processes, RocksDB, fsync on) filled
//! with many allocations from one pool — an IPv4 /8 and an IPv6 /64, each on a fresh cluster.
//!
//! For each pool family, in this order:
//! 1. start the cluster, create the pool, read each replica's resident memory (the baseline);
//! 2. fill 1,000 allocations, wait until every replica is quiet (under 5 % of a core), then time
//!    `probe` more with a fixed number of clients (latency at 1k);
//! 3. fill up to the target count with many clients;
//! 4. wait until the replicas are quiet again (the fill's last snapshots and compactions done),
//!    time `probe` more allocations (latency at the target), then keep allocating until a
//!    snapshot of the full state has been built, and read its size and build time from the
//!    leader's `/metrics`;
//! 5. read each replica's resident memory again: (now − baseline) / allocations;
//! 6. check that every replica holds exactly the acknowledged allocations (the pool's `used` count
//!    on each replica; with small runs, the full list);
//! 7. `kill -9` of all three replicas, restart them, and time until an allocation succeeds; check
//!    the restarted replicas hold the same allocations;
//! 8. start a fourth replica with an empty data directory, add it as a learner through the
//!    leader's REST API (as `hcctl cluster add-learner` does), and time until it has applied the
//!    leader's commit index as of the add; check it holds the same allocations.
//!
//! Every acknowledged address is checked distinct. Figures are printed, never asserted.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use hc_api::client::{Client, ClientConfig};
use hc_api::command::Command;
use hc_api::types::{AllocateRequest, Owner, PoolSpec};
use tokio::time::{Instant, sleep};

use crate::BenchError;
use crate::config::Config;
use crate::hc_cluster::HcCluster;
use crate::stats::summarize;
use crate::supervisor::Supervisor;

const LEADER_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest wait for a restarted cluster or a new replica; the figures are expected in seconds.
const RECOVERY_LIMIT: Duration = Duration::from_secs(600);
/// Attempts per allocation (each a full `hc_api` call with its own retries). Allocation is
/// idempotent per container id, so a retry after an unknown outcome gets the same address.
const ATTEMPTS: usize = 5;
/// Allocations before the "at 1k" latency probe.
const SMALL_STATE: u64 = 1_000;
/// Up to this many allocations, the restarted and the new replicas' full lists are compared
/// with what was acknowledged (a gRPC reply of 1M allocations is too large); above, the counts.
const LIST_CHECK_MAX: u64 = 50_000;

/// Pool family of one scale run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Family {
    /// 10.0.0.0/8
    V4,
    /// fd00:5ca1:e::/64
    V6,
}

impl Family {
    fn cidr(self) -> &'static str {
        match self {
            Family::V4 => "10.0.0.0/8",
            Family::V6 => "fd00:5ca1:e::/64",
        }
    }
    fn pool(self) -> &'static str {
        match self {
            Family::V4 => "scale-v4",
            Family::V6 => "scale-v6",
        }
    }
}

/// Latency of a fixed number of allocations with a fixed number of clients.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Probe {
    /// Allocations in the state when the probe started.
    pub state_allocations: u64,
    pub allocations: u64,
    pub clients: usize,
    pub allocations_per_sec: f64,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    /// How long the replicas took to go quiet (background snapshots, flushes, compactions of
    /// the allocations before) before the probe started; `None` if they did not within the cap.
    pub settled_secs: Option<f64>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct ScaleResult {
    pub family: Family,
    pub cidr: String,
    /// Allocations in the state at the end of the fill.
    pub allocations: u64,
    pub fill_clients: usize,
    pub fill_secs: f64,
    pub fill_per_sec: f64,
    pub at_1k: Probe,
    pub at_full: Probe,
    /// `at_full` p50 and p99 over `at_1k`'s.
    pub p50_ratio: Option<f64>,
    pub p99_ratio: Option<f64>,
    /// Resident memory of each founding replica (leader first) before the fill, in MiB.
    pub rss_baseline_mib: Vec<f64>,
    /// After the fill and a snapshot of the full state, in MiB.
    pub rss_full_mib: Vec<f64>,
    /// Peak resident memory (VmHWM) of each replica by then, in MiB.
    pub rss_peak_mib: Vec<f64>,
    /// (rss_full − rss_baseline) / allocations, per replica.
    pub bytes_per_allocation: Vec<f64>,
    /// What each replica's RocksDB held in memory when `rss_full_mib` was read (its
    /// `hc_allocator_storage_memory_bytes` gauges), in MiB: all kinds, and the memtables alone.
    pub rocksdb_mib: Vec<Option<f64>>,
    pub memtables_mib: Vec<Option<f64>>,
    /// Size of the leader's latest snapshot, of the full state.
    pub snapshot_bytes: Option<f64>,
    /// Mean build time of the snapshots the leader built with the full state (from its
    /// `hc_allocator_raft_snapshot_build_seconds` histogram).
    pub snapshot_build_secs: Option<f64>,
    /// `kill -9` of every replica, restart, until an allocation succeeds.
    pub restart_secs: Option<f64>,
    /// From the restart until each replica (leader first) answered a status call again.
    pub restart_serving_secs: Vec<Option<f64>>,
    /// From the restart until a replica first named a leader.
    pub restart_leader_secs: Option<f64>,
    /// From adding a learner with an empty data directory until it has applied the leader's
    /// commit index as of the add.
    pub catch_up_secs: Option<f64>,
    /// Allocations acknowledged in all (fill, probes, snapshot top-up, probe after restart).
    pub acked: u64,
    /// Addresses acknowledged to two owners (must be none).
    pub duplicates: u64,
    /// Allocations that failed `ATTEMPTS` times.
    pub failed: u64,
    pub first_error: Option<String>,
    /// Correctness checks that failed: replicas that do not hold what was acknowledged.
    pub problems: Vec<String>,
}

/// Scale knobs, from the config.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ScaleConfig {
    pub allocations: u64,
    pub fill_clients: usize,
    pub probe_clients: usize,
    pub probe_allocations: u64,
    pub families: Vec<Family>,
    /// `--snapshot-every` given to the replicas.
    pub snapshot_every: u64,
}

impl ScaleConfig {
    pub fn defaults(smoke: bool) -> ScaleConfig {
        ScaleConfig {
            allocations: if smoke { 5_000 } else { 1_000_000 },
            fill_clients: 64,
            probe_clients: 16,
            probe_allocations: if smoke { 500 } else { 5_000 },
            families: vec![Family::V4, Family::V6],
            snapshot_every: if smoke { 1_000 } else { 20_000 },
        }
    }
}

pub async fn run(cfg: &Config, sc: &ScaleConfig, sup: &Arc<Supervisor>) -> Result<Vec<ScaleResult>, BenchError> {
    let mut out = Vec::new();
    for &family in &sc.families {
        eprintln!("hc-bench: scale, {} allocations in {} ...", sc.allocations, family.cidr());
        out.push(run_family(cfg, sc, sup, family).await?);
    }
    Ok(out)
}

/// Every acknowledged allocation: address → container id.
#[derive(Default)]
struct Ledger {
    by_address: BTreeMap<IpAddr, String>,
    duplicates: u64,
    failed: u64,
    first_error: Option<String>,
}

impl Ledger {
    fn record(&mut self, d: Driven) {
        for (address, owner) in d.acked {
            if let Some(prev) = self.by_address.insert(address, owner.clone())
                && prev != owner
            {
                self.duplicates += 1;
            }
        }
        self.failed += d.failed;
        if self.first_error.is_none() {
            self.first_error = d.first_error;
        }
    }
}

struct Driven {
    latencies_us: Vec<u64>,
    acked: Vec<(IpAddr, String)>,
    failed: u64,
    first_error: Option<String>,
    took: Duration,
}

/// A container id shaped like the ones container runtimes pass (64 hex digits, here a hash of
/// `tag` and `n`), so that the memory per allocation is what a real cluster's would be.
fn sandbox_id(tag: &str, n: u64) -> String {
    use std::hash::{Hash, Hasher};
    (0..4u8)
        .map(|part| {
            let mut h = std::collections::hash_map::DefaultHasher::new();
            (tag, n, part).hash(&mut h);
            format!("{:016x}", h.finish())
        })
        .collect()
}

fn request(pool: &str, container: &str, pod: &str, node: usize) -> AllocateRequest {
    AllocateRequest {
        owner: Owner {
            container_id: container.to_owned(),
            interface: "eth0".into(),
            namespace: "bench".into(),
            pod: pod.to_owned(),
            node: format!("scale-node-{}", node % 16),
        },
        pool: Some(pool.to_owned()),
        ..Default::default()
    }
}

/// `count` allocations with container ids `sandbox_id(tag, n)` over `clients`, each client allocating back to back.
async fn drive(clients: &[Arc<Client>], pool: &str, tag: &str, count: u64) -> Driven {
    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let tasks: Vec<_> = clients
        .iter()
        .enumerate()
        .map(|(ci, client)| {
            let (client, next, pool, tag) = (client.clone(), next.clone(), pool.to_owned(), tag.to_owned());
            tokio::spawn(async move {
                let mut d = Driven {
                    latencies_us: Vec::new(),
                    acked: Vec::new(),
                    failed: 0,
                    first_error: None,
                    took: Duration::ZERO,
                };
                loop {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    if n >= count {
                        break;
                    }
                    let container = sandbox_id(&tag, n);
                    // Named like a Deployment's pod: `<name>-<template hash>-<suffix>`.
                    let pod = format!("{tag}-7d4b9c8f6d-{n:05x}");
                    let t = Instant::now();
                    let mut last = None;
                    for _ in 0..ATTEMPTS {
                        match client.allocate(None, request(&pool, &container, &pod, ci)).await {
                            Ok(a) if a.allocation.owner.container_id == container => {
                                last = None;
                                d.latencies_us.push(t.elapsed().as_micros() as u64);
                                d.acked.push((a.allocation.address, container.clone()));
                                break;
                            }
                            Ok(a) => {
                                last = Some(format!(
                                    "{container} got the allocation of {}",
                                    a.allocation.owner.container_id
                                ));
                                break;
                            }
                            Err(e) => last = Some(e.to_string()),
                        }
                    }
                    if let Some(e) = last {
                        d.failed += 1;
                        d.first_error.get_or_insert(e);
                    }
                }
                d
            })
        })
        .collect();
    let mut all =
        Driven { latencies_us: Vec::new(), acked: Vec::new(), failed: 0, first_error: None, took: Duration::ZERO };
    for t in tasks {
        match t.await {
            Ok(d) => {
                all.latencies_us.extend(d.latencies_us);
                all.acked.extend(d.acked);
                all.failed += d.failed;
                if all.first_error.is_none() {
                    all.first_error = d.first_error;
                }
            }
            Err(e) => {
                all.failed += 1;
                all.first_error.get_or_insert_with(|| format!("client task: {e}"));
            }
        }
    }
    all.took = started.elapsed();
    all
}

fn probe_of(d: &mut Driven, state_allocations: u64, clients: usize, settled_secs: Option<f64>) -> Probe {
    let s = summarize(&mut d.latencies_us);
    Probe {
        settled_secs,
        state_allocations,
        allocations: d.acked.len() as u64,
        clients,
        allocations_per_sec: d.acked.len() as f64 / d.took.as_secs_f64().max(1e-9),
        p50_ms: s.as_ref().map(|s| s.p50_ms),
        p99_ms: s.as_ref().map(|s| s.p99_ms),
    }
}

/// Replicas below this share of a core are quiet.
const QUIET_CORES: f64 = 0.05;
/// Longest wait for quiet replicas before a latency probe.
const SETTLE_CAP: Duration = Duration::from_secs(60);

/// Waits until every replica has used under `QUIET_CORES` over a 250 ms window, so that both
/// latency probes start alike: not inside the snapshot, memtable flush or compaction that the
/// allocations before them set off (at 1k those take milliseconds, at 1M up to a second per
/// replica on these 2 cores). Returns the time waited, or `None` after `SETTLE_CAP`.
async fn settle(sup: &Supervisor, cluster: &HcCluster) -> Option<f64> {
    let started = std::time::Instant::now();
    let window = Duration::from_millis(250);
    let procs = cluster.procs();
    while started.elapsed() < SETTLE_CAP {
        let before: Vec<Option<Duration>> = procs.iter().map(|&p| sup.cpu_time(p)).collect();
        sleep(window).await;
        let quiet = procs.iter().zip(&before).all(|(&p, b)| match (b, sup.cpu_time(p)) {
            (Some(b), Some(a)) => a.saturating_sub(*b).as_secs_f64() < QUIET_CORES * window.as_secs_f64(),
            _ => true,
        });
        if quiet {
            return Some(started.elapsed().as_secs_f64());
        }
    }
    None
}

fn clients(cluster: &HcCluster, n: usize) -> Result<Vec<Arc<Client>>, BenchError> {
    (0..n).map(|i| Ok(Arc::new(cluster.client(i)?))).collect()
}

/// A `/proc/PID/status` field in kB, as bytes.
fn proc_status_bytes(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb: u64 =
        status.lines().find_map(|l| l.strip_prefix(field))?.trim().trim_end_matches("kB").trim().parse().ok()?;
    Some(kb * 1024)
}

fn mib(b: u64) -> f64 {
    b as f64 / (1024.0 * 1024.0)
}

/// Resident and peak memory of replicas `order`, in bytes.
fn memory(sup: &Supervisor, cluster: &HcCluster, order: &[usize]) -> Vec<(u64, u64)> {
    order
        .iter()
        .map(|&i| {
            let pid = cluster.proc(i).and_then(|p| sup.pid(p));
            let rss = pid.and_then(|p| proc_status_bytes(p, "VmRSS:")).unwrap_or(0);
            let hwm = pid.and_then(|p| proc_status_bytes(p, "VmHWM:")).unwrap_or(0);
            (rss, hwm)
        })
        .collect()
}

/// A replica's `hc_allocator_storage_memory_bytes` gauges: kind → bytes.
fn storage_memory(text: &str) -> BTreeMap<String, u64> {
    let prefix = "hc_allocator_storage_memory_bytes{kind=\"";
    text.lines()
        .filter_map(|l| {
            let (kind, value) = l.strip_prefix(prefix)?.split_once("\"} ")?;
            Some((kind.to_owned(), value.trim().parse::<f64>().ok()? as u64))
        })
        .collect()
}

/// Reads `/metrics` of a replica's REST address.
pub async fn scrape(http: &reqwest::Client, rest: &str) -> Result<String, BenchError> {
    let r = http
        .get(format!("http://{rest}/metrics"))
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .map_err(|e| BenchError::Http(format!("GET {rest}/metrics: {e}")))?;
    r.text().await.map_err(|e| BenchError::Http(format!("GET {rest}/metrics: {e}")))
}

/// The value of the first sample of `name` (exactly that name, any labels) in a Prometheus text
/// exposition.
pub fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        let rest = l.strip_prefix(name)?;
        let rest = match rest.chars().next()? {
            '{' => &rest[rest.find('}')? + 1..],
            ' ' => rest,
            _ => return None,
        };
        rest.split_whitespace().next()?.parse().ok()
    })
}

const BUILD_SUM: &str = "hc_allocator_raft_snapshot_build_seconds_sum";
const BUILD_COUNT: &str = "hc_allocator_raft_snapshot_build_seconds_count";
const SNAPSHOT_BYTES: &str = "hc_allocator_raft_snapshot_size_bytes";

/// `used` of the pool on the replica at `rest`.
async fn used_on(http: &reqwest::Client, rest: &str, pool: &str) -> Result<u64, BenchError> {
    let v: serde_json::Value = http
        .get(format!("http://{rest}/v1/pools/{pool}"))
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .map_err(|e| BenchError::Http(format!("GET {rest}/v1/pools/{pool}: {e}")))?
        .json()
        .await
        .map_err(|e| BenchError::Http(format!("GET {rest}/v1/pools/{pool}: {e}")))?;
    v["used"].as_u64().ok_or_else(|| BenchError::Http(format!("GET {rest}/v1/pools/{pool}: no `used` in {v}")))
}

/// Checks that the replica at `rest` (gRPC `grpc`) holds exactly the ledger's allocations.
async fn check_replica(
    http: &reqwest::Client,
    name: &str,
    grpc: &str,
    rest: &str,
    pool: &str,
    ledger: &Ledger,
    problems: &mut Vec<String>,
) -> Result<(), BenchError> {
    let want = ledger.by_address.len() as u64;
    let used = used_on(http, rest, pool).await?;
    if used != want {
        problems.push(format!("{name} holds {used} allocations in {pool}, {want} were acknowledged"));
        return Ok(());
    }
    if want <= LIST_CHECK_MAX {
        let c = Client::new(
            [grpc.to_owned()],
            ClientConfig { deadline: Duration::from_secs(30), attempt_timeout: Duration::from_secs(20) },
        )?;
        let list = c.list_allocations_at(0, Some(pool), None).await?;
        let held: BTreeMap<IpAddr, String> = list.into_iter().map(|a| (a.address, a.owner.container_id)).collect();
        if held != ledger.by_address {
            let differ = held.iter().filter(|(a, o)| ledger.by_address.get(a) != Some(o)).count()
                + ledger.by_address.keys().filter(|a| !held.contains_key(a)).count();
            problems.push(format!("{name}: {differ} allocations differ from the acknowledged ones"));
        }
    }
    Ok(())
}

/// Polls the restarted replicas' status until each answers and one names a leader: (when each
/// first answered, when a leader was first named), seconds after `since`.
async fn watch_restart(grpcs: Vec<String>, since: Instant) -> (Vec<Option<f64>>, Option<f64>) {
    let quick = ClientConfig { deadline: Duration::from_millis(500), attempt_timeout: Duration::from_millis(500) };
    let clients: Vec<Option<Client>> = grpcs.iter().map(|g| Client::new([g.clone()], quick.clone()).ok()).collect();
    let mut serving = vec![None; grpcs.len()];
    let mut leader = None;
    while since.elapsed() < RECOVERY_LIMIT && (leader.is_none() || serving.iter().any(Option::is_none)) {
        for (i, c) in clients.iter().enumerate() {
            let Some(c) = c else { continue };
            if let Ok(s) = c.status_at(0).await {
                let now = since.elapsed().as_secs_f64();
                serving[i].get_or_insert(now);
                if s.leader_id.is_some() {
                    leader.get_or_insert(now);
                }
            }
        }
        sleep(Duration::from_millis(20)).await;
    }
    (serving, leader)
}

/// Waits until the replica at `grpc` answers status with `last_applied >= target`.
async fn wait_applied(grpc: &str, target: u64, limit: Duration) -> Result<bool, BenchError> {
    let c = Client::new(
        [grpc.to_owned()],
        ClientConfig { deadline: Duration::from_secs(2), attempt_timeout: Duration::from_secs(1) },
    )?;
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if c.status_at(0).await.is_ok_and(|s| s.last_applied >= target) {
            return Ok(true);
        }
        sleep(Duration::from_millis(20)).await;
    }
    Ok(false)
}

async fn run_family(
    cfg: &Config,
    sc: &ScaleConfig,
    sup: &Arc<Supervisor>,
    family: Family,
) -> Result<ScaleResult, BenchError> {
    let mut args = cfg.allocator_args.clone();
    if !args.iter().any(|a| a.starts_with("--snapshot-every")) {
        args.push(format!("--snapshot-every={}", sc.snapshot_every));
    }
    let name = format!("scale-{}", family.pool());
    let mut cluster = HcCluster::start(sup.clone(), cfg.allocator_bin.clone(), &args, &name).await?;
    let pool = family.pool();
    let spec: PoolSpec = serde_json::from_value(serde_json::json!({ "name": pool, "cidr": family.cidr() }))?;
    cluster.client(0)?.propose(&Command::CreatePool(spec)).await?;
    let http = reqwest::Client::new();
    let leader = cluster.leader(LEADER_TIMEOUT).await?;
    // Leader first, then the followers.
    let order: Vec<usize> = std::iter::once(leader).chain((0..3).filter(|&i| i != leader)).collect();
    sleep(Duration::from_secs(1)).await;
    let baseline = memory(sup, &cluster, &order);

    let mut ledger = Ledger::default();
    let probe_clients = clients(&cluster, sc.probe_clients)?;
    let fill_clients = clients(&cluster, sc.fill_clients)?;

    // Latency at 1k.
    let small = SMALL_STATE.min(sc.allocations);
    ledger.record(drive(&fill_clients, pool, "pre", small).await);
    let settled = settle(sup, &cluster).await;
    let mut d = drive(&probe_clients, pool, "p1k", sc.probe_allocations).await;
    let at_1k = probe_of(&mut d, small, sc.probe_clients, settled);
    ledger.record(d);

    // Fill.
    let have = ledger.by_address.len() as u64;
    let rest = sc.allocations.saturating_sub(have);
    eprintln!("hc-bench: scale, filling {rest} allocations with {} clients ...", sc.fill_clients);
    let fill = drive(&fill_clients, pool, "fill", rest).await;
    let fill_secs = fill.took.as_secs_f64();
    let fill_per_sec = fill.acked.len() as f64 / fill_secs.max(1e-9);
    ledger.record(fill);
    let full = ledger.by_address.len() as u64;

    // Latency at the full state, then a snapshot of it.
    let leader = cluster.leader(LEADER_TIMEOUT).await?;
    let leader_rest = cluster.addrs(leader).1.to_owned();
    let before = scrape(&http, &leader_rest).await?;
    let (sum0, count0) = (metric(&before, BUILD_SUM).unwrap_or(0.0), metric(&before, BUILD_COUNT).unwrap_or(0.0));
    let settled = settle(sup, &cluster).await;
    let mut d = drive(&probe_clients, pool, "pfull", sc.probe_allocations).await;
    let at_full = probe_of(&mut d, full, sc.probe_clients, settled);
    ledger.record(d);
    // A snapshot of the full state, built on the leader now: the replicas' own policy defers
    // snapshots until the log since the last one is a share of the state, so one may not come
    // for a long while. The followers keep theirs, so the cold restart below replays whatever
    // log tail each has, as after any restart.
    let url = format!("http://{leader_rest}/v1/cluster/snapshot");
    let asked = http
        .post(&url)
        .timeout(Duration::from_secs(120))
        .send()
        .await
        .map_err(|e| BenchError::Http(format!("POST {url}: {e}")))?;
    if !asked.status().is_success() {
        let status = asked.status();
        return Err(BenchError::Http(format!("POST {url}: {status}: {}", asked.text().await.unwrap_or_default())));
    }
    let now = scrape(&http, &leader_rest).await?;
    let (sum, count) = (metric(&now, BUILD_SUM).unwrap_or(0.0), metric(&now, BUILD_COUNT).unwrap_or(0.0));
    let snapshot_bytes = metric(&now, SNAPSHOT_BYTES);
    let snapshot_build_secs = (count > count0).then(|| (sum - sum0) / (count - count0));
    sleep(Duration::from_secs(1)).await;
    let after = memory(sup, &cluster, &order);
    let mut storage = Vec::new();
    for &i in &order {
        storage.push(scrape(&http, cluster.addrs(i).1).await.ok().map(|text| storage_memory(&text)));
    }
    let allocations = ledger.by_address.len() as u64;

    let mut problems = Vec::new();
    for &i in &order {
        let (grpc, rest) = cluster.addrs(i);
        check_replica(&http, &cluster.name(i), grpc, rest, pool, &ledger, &mut problems).await?;
    }

    // Cold restart of every replica.
    eprintln!("hc-bench: scale, restarting all replicas ...");
    for i in 0..3 {
        cluster.kill(i);
    }
    let t = Instant::now();
    for i in 0..3 {
        cluster.restart(i)?;
    }
    // Where the time goes: when each replica answers status again (its storage and snapshot are
    // loaded: the gRPC server starts after that), and when one first names a leader.
    let watch = {
        let grpcs: Vec<String> = order.iter().map(|&i| cluster.addrs(i).0.to_owned()).collect();
        tokio::spawn(async move { watch_restart(grpcs, t).await })
    };
    let probe = cluster.client(0)?;
    let mut restart_secs = None;
    let mut first_error = None;
    while t.elapsed() < RECOVERY_LIMIT {
        match probe.allocate(None, request(pool, "after-restart", "after-restart", 0)).await {
            Ok(a) => {
                restart_secs = Some(t.elapsed().as_secs_f64());
                if let Some(prev) = ledger.by_address.insert(a.allocation.address, "after-restart".into()) {
                    ledger.duplicates += 1;
                    problems.push(format!(
                        "after the restart {} was handed out again (held by {prev})",
                        a.allocation.address
                    ));
                }
                break;
            }
            Err(e) => {
                first_error.get_or_insert(e.to_string());
                sleep(Duration::from_millis(20)).await;
            }
        }
    }
    if restart_secs.is_none() {
        problems.push(format!("no allocation within {RECOVERY_LIMIT:?} of restarting every replica: {first_error:?}"));
    }
    let (restart_serving_secs, restart_leader_secs) = watch.await.unwrap_or_default();
    for i in 0..3 {
        cluster.wait_caught_up(i, RECOVERY_LIMIT).await?;
        let (grpc, rest) = cluster.addrs(i);
        check_replica(
            &http,
            &format!("{} after the restart", cluster.name(i)),
            grpc,
            rest,
            pool,
            &ledger,
            &mut problems,
        )
        .await?;
    }

    // A new replica catches up.
    eprintln!("hc-bench: scale, adding a learner ...");
    let new = cluster.spawn_new_replica()?;
    let (new_grpc, new_rest) = (cluster.addrs(new).0.to_owned(), cluster.addrs(new).1.to_owned());
    // Its servers must be up before the leader can replicate to it.
    let up = Instant::now();
    while http.get(format!("http://{new_rest}/healthz")).send().await.is_err() {
        if up.elapsed() > LEADER_TIMEOUT {
            return Err(BenchError::Http(format!("the new replica's REST server at {new_rest} never answered")));
        }
        sleep(Duration::from_millis(20)).await;
    }
    let leader = cluster.leader(LEADER_TIMEOUT).await?;
    let (_, leader_rest) = cluster.addrs(leader);
    let target = cluster.client(leader)?.status_at(leader).await?.committed;
    let body = serde_json::json!({ "id": cluster.id(new), "grpc_addr": new_grpc, "rest_addr": new_rest });
    let t = Instant::now();
    let add = {
        let (http, url) = (http.clone(), format!("http://{leader_rest}/v1/cluster/learners"));
        tokio::spawn(async move { http.post(url).json(&body).timeout(RECOVERY_LIMIT).send().await })
    };
    let caught_up = wait_applied(&new_grpc, target, RECOVERY_LIMIT).await?;
    let catch_up_secs = caught_up.then(|| t.elapsed().as_secs_f64());
    match add.await {
        Ok(Ok(r)) if r.status().is_success() => {}
        Ok(Ok(r)) => {
            problems.push(format!("adding the learner answered {}: {}", r.status(), r.text().await.unwrap_or_default()))
        }
        Ok(Err(e)) => problems.push(format!("adding the learner failed: {e}")),
        Err(e) => problems.push(format!("adding the learner: {e}")),
    }
    if caught_up {
        // It may not have applied the restart probe yet if that came after `target`; wait for
        // the current commit index before comparing.
        let now = cluster.client(leader)?.status_at(leader).await?.committed;
        wait_applied(&new_grpc, now, RECOVERY_LIMIT).await?;
        check_replica(&http, "the new replica", &new_grpc, &new_rest, pool, &ledger, &mut problems).await?;
    } else {
        problems.push(format!("the new replica did not apply index {target} within {RECOVERY_LIMIT:?}"));
    }

    let ratio = |a: Option<f64>, b: Option<f64>| a.zip(b).filter(|(_, b)| *b > 0.0).map(|(a, b)| a / b);
    Ok(ScaleResult {
        family,
        cidr: family.cidr().to_owned(),
        allocations,
        fill_clients: sc.fill_clients,
        fill_secs,
        fill_per_sec,
        p50_ratio: ratio(at_full.p50_ms, at_1k.p50_ms),
        p99_ratio: ratio(at_full.p99_ms, at_1k.p99_ms),
        at_1k,
        at_full,
        rss_baseline_mib: baseline.iter().map(|m| mib(m.0)).collect(),
        rss_full_mib: after.iter().map(|m| mib(m.0)).collect(),
        rss_peak_mib: after.iter().map(|m| mib(m.1)).collect(),
        bytes_per_allocation: baseline
            .iter()
            .zip(&after)
            .map(|(b, a)| a.0.saturating_sub(b.0) as f64 / allocations.max(1) as f64)
            .collect(),
        rocksdb_mib: storage.iter().map(|m| m.as_ref().map(|m| mib(m.values().sum()))).collect(),
        memtables_mib: storage.iter().map(|m| m.as_ref().and_then(|m| m.get("memtables")).map(|&b| mib(b))).collect(),
        snapshot_bytes,
        snapshot_build_secs,
        restart_secs,
        restart_serving_secs,
        restart_leader_secs,
        catch_up_secs,
        acked: ledger.by_address.len() as u64,
        duplicates: ledger.duplicates,
        failed: ledger.failed,
        first_error: ledger.first_error.or(first_error),
        problems,
    })
}

/// Correctness problems of the scale runs, for the report.
pub fn problems(results: &[ScaleResult]) -> Vec<String> {
    let mut out = Vec::new();
    for r in results {
        let what = format!("scale {}", r.cidr);
        if r.duplicates > 0 {
            out.push(format!("{what}: {} addresses acknowledged to two owners", r.duplicates));
        }
        if r.failed > 0 {
            out.push(format!("{what}: {} allocations failed {ATTEMPTS} times: {:?}", r.failed, r.first_error));
        }
        out.extend(r.problems.iter().map(|p| format!("{what}: {p}")));
    }
    out
}

fn opt(v: Option<f64>, digits: usize) -> String {
    v.map_or_else(|| "-".to_owned(), |v| format!("{v:.digits$}"))
}

fn list(v: &[f64], digits: usize) -> String {
    v.iter().map(|x| format!("{x:.digits$}")).collect::<Vec<_>>().join(" ")
}

/// The scale tables and the targets.
pub fn render(results: &[ScaleResult]) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    if results.is_empty() {
        return s;
    }
    let _ =
        writeln!(s, "\nScale: one pool on a fresh 3-replica cluster (RocksDB, fsync on); replicas listed leader first");
    for r in results {
        let _ = writeln!(
            s,
            "{} — {} allocations; fill {:.0}/s with {} clients ({:.0} s)",
            r.cidr, r.allocations, r.fill_per_sec, r.fill_clients, r.fill_secs
        );
        let _ = writeln!(
            s,
            "  latency, {} clients: at {:>8} allocations p50 {} ms p99 {} ms ({:.0}/s); at {:>8} p50 {} ms p99 {} ms ({:.0}/s); ratio p50 {} p99 {}",
            r.at_1k.clients,
            r.at_1k.state_allocations,
            opt(r.at_1k.p50_ms, 2),
            opt(r.at_1k.p99_ms, 2),
            r.at_1k.allocations_per_sec,
            r.at_full.state_allocations,
            opt(r.at_full.p50_ms, 2),
            opt(r.at_full.p99_ms, 2),
            r.at_full.allocations_per_sec,
            opt(r.p50_ratio, 2),
            opt(r.p99_ratio, 2),
        );
        let _ = writeln!(
            s,
            "  replicas quiet before the probes after {} s (at {}) and {} s (at {})",
            opt(r.at_1k.settled_secs, 2),
            r.at_1k.state_allocations,
            opt(r.at_full.settled_secs, 2),
            r.at_full.state_allocations,
        );
        let _ = writeln!(
            s,
            "  memory: RSS baseline {} MiB, full {} MiB, peak {} MiB; bytes per allocation {}",
            list(&r.rss_baseline_mib, 0),
            list(&r.rss_full_mib, 0),
            list(&r.rss_peak_mib, 0),
            list(&r.bytes_per_allocation, 0)
        );
        let _ = writeln!(
            s,
            "  of which RocksDB (memtables, table readers, block cache) {} MiB, the memtables {} MiB",
            r.rocksdb_mib.iter().map(|v| opt(*v, 1)).collect::<Vec<_>>().join(" "),
            r.memtables_mib.iter().map(|v| opt(*v, 1)).collect::<Vec<_>>().join(" "),
        );
        let _ = writeln!(
            s,
            "  snapshot {} MiB built in {} s; cold restart of all replicas to an allocation {} s (replicas serving \
             status after {} s, a leader named after {} s); new replica caught up in {} s",
            opt(r.snapshot_bytes.map(|b| b / (1024.0 * 1024.0)), 1),
            opt(r.snapshot_build_secs, 2),
            opt(r.restart_secs, 2),
            r.restart_serving_secs.iter().map(|v| opt(*v, 2)).collect::<Vec<_>>().join(" "),
            opt(r.restart_leader_secs, 2),
            opt(r.catch_up_secs, 2),
        );
        let _ = writeln!(
            s,
            "  correctness: {} acknowledged, {} duplicates, {} failed, {}",
            r.acked,
            r.duplicates,
            r.failed,
            if r.problems.is_empty() {
                "every replica holds exactly the acknowledged allocations".to_owned()
            } else {
                r.problems.join("; ")
            }
        );
    }
    s
}

/// Issue 5's scale targets, as (name, goal, measured, met).
pub fn targets(results: &[ScaleResult]) -> Vec<crate::report::Target> {
    let mut out = Vec::new();
    for r in results {
        let fam = match r.family {
            Family::V4 => "IPv4 /8",
            Family::V6 => "IPv6 /64",
        };
        let worst_mem =
            r.bytes_per_allocation.iter().copied().fold(None, |m: Option<f64>, x| Some(m.map_or(x, |m| m.max(x))));
        let max_ratio = r.p50_ratio.zip(r.p99_ratio).map(|(a, b)| a.max(b));
        for (name, goal, measured, met) in [
            (
                format!("memory per allocation (worst replica), {fam}"),
                "<= 300 B".to_owned(),
                opt(worst_mem, 0) + " B",
                worst_mem.map(|m| m <= 300.0),
            ),
            (
                format!("cold restart to serving, {fam}"),
                "<= 5 s".to_owned(),
                opt(r.restart_secs, 2) + " s",
                r.restart_secs.map(|s| s <= 5.0),
            ),
            (
                format!("new replica catch-up, {fam}"),
                "<= 15 s".to_owned(),
                opt(r.catch_up_secs, 2) + " s",
                r.catch_up_secs.map(|s| s <= 15.0),
            ),
            (
                format!("latency at full / at 1k (worse of p50, p99), {fam}"),
                "<= 1.5x".to_owned(),
                opt(max_ratio, 2) + "x",
                max_ratio.map(|x| x <= 1.5),
            ),
        ] {
            out.push(crate::report::Target { name, goal, measured, met });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metric_lines_with_and_without_labels() {
        let text = "# HELP x y\nhc_a_sum 2.5\nhc_a_count 3\nhc_b{pool=\"p\"} 7\nhc_a_summary 9\n";
        assert_eq!(metric(text, "hc_a_sum"), Some(2.5));
        assert_eq!(metric(text, "hc_a_count"), Some(3.0));
        assert_eq!(metric(text, "hc_b"), Some(7.0));
        assert_eq!(metric(text, "hc_a"), None);
        assert_eq!(metric(text, "hc_c"), None);
    }
}
