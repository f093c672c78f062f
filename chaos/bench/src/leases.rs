//! Issue 5, leases: many simulated agents on a fresh 3-replica cluster, each granted a lease
//! once and then renewing it every second through `hc_api::Client::keep_alive` — the gRPC path
//! `hc-agent` uses. Over a measurement window, the leader's CPU time (`/proc/PID/stat`) and the
//! growth of its Raft log (last log index and applied index) are read: keep-alives are served
//! from the leader's memory, so the log should not grow at all.
//!
//! Agents share a few gRPC clients (HTTP/2 multiplexes their calls), as thousands of real
//! agents would each hold one connection; the benchmark is about the leader's work per renewal.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use hc_api::client::Client;
use tokio::sync::Semaphore;
use tokio::time::{Instant, MissedTickBehavior, interval_at, sleep};

use crate::BenchError;
use crate::config::Config;
use crate::hc_cluster::HcCluster;
use crate::scale::{metric, scrape};
use crate::stats::summarize;
use crate::supervisor::Supervisor;

const LEADER_TIMEOUT: Duration = Duration::from_secs(30);
/// Agents' TTL: ten renewals per TTL, so a slow renewal never lets a lease lapse.
const TTL: Duration = Duration::from_secs(10);
const RENEW_EVERY: Duration = Duration::from_secs(1);
/// Lease grants in flight at once.
const GRANT_CONCURRENCY: usize = 64;
/// gRPC clients shared by the agents.
const CONNECTIONS: usize = 16;
/// Renewals before the window opens, so every agent is in its steady rhythm.
const WARM_UP: Duration = Duration::from_secs(3);

#[derive(Debug, Clone, serde::Serialize)]
pub struct LeaseConfig {
    pub agents: usize,
    pub window_secs: f64,
}

impl LeaseConfig {
    pub fn defaults(smoke: bool) -> LeaseConfig {
        LeaseConfig { agents: if smoke { 200 } else { 5_000 }, window_secs: if smoke { 3.0 } else { 30.0 } }
    }
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct LeaseResult {
    pub agents: usize,
    pub window_secs: f64,
    pub grant_secs: f64,
    /// Keep-alives acknowledged inside the window, per second.
    pub keep_alives_per_sec: f64,
    pub keep_alive_p50_ms: Option<f64>,
    pub keep_alive_p99_ms: Option<f64>,
    pub keep_alive_errors: u64,
    pub first_error: Option<String>,
    /// The leader's CPU time over the window divided by the window (cores used).
    pub leader_cores: f64,
    /// The followers' (they serve nothing here; their share is heartbeats).
    pub follower_cores: Vec<f64>,
    /// Leader CPU time per keep-alive, in microseconds.
    pub leader_cpu_us_per_keep_alive: Option<f64>,
    /// Growth of the leader's last log index over the window.
    pub log_entries_in_window: u64,
    pub log_entries_per_sec: f64,
    /// Growth of its applied index over the window.
    pub applied_in_window: u64,
    /// Whether the leader stayed the same through the window.
    pub same_leader: bool,
}

pub async fn run(cfg: &Config, lc: &LeaseConfig, sup: &Arc<Supervisor>) -> Result<LeaseResult, BenchError> {
    eprintln!("hc-bench: leases, {} agents renewing every {RENEW_EVERY:?} ...", lc.agents);
    let cluster = HcCluster::start(sup.clone(), cfg.allocator_bin.clone(), &cfg.allocator_args, "leases").await?;
    let leader = cluster.leader(LEADER_TIMEOUT).await?;
    // Agents talk to the leader first, as hc-agent's client does once it has found it.
    let clients: Vec<Arc<Client>> =
        (0..CONNECTIONS).map(|_| cluster.client(leader).map(Arc::new)).collect::<Result<_, _>>()?;

    let granted = Instant::now();
    let sem = Arc::new(Semaphore::new(GRANT_CONCURRENCY));
    let grants: Vec<_> = (0..lc.agents)
        .map(|i| {
            let (client, sem) = (clients[i % CONNECTIONS].clone(), sem.clone());
            tokio::spawn(async move {
                let _permit = sem.acquire_owned().await;
                client.grant_lease(&format!("lease-agent-{i}"), TTL).await
            })
        })
        .collect();
    let mut leases = Vec::with_capacity(lc.agents);
    for g in grants {
        match g.await {
            Ok(Ok(l)) => leases.push(l),
            Ok(Err(e)) => return Err(e.into()),
            Err(e) => return Err(BenchError::Http(format!("grant task: {e}"))),
        }
    }
    let grant_secs = granted.elapsed().as_secs_f64();

    // Each agent renews every second, phases spread evenly over the second.
    let start = Instant::now() + Duration::from_millis(100);
    let window_start = start + WARM_UP;
    let window_end = window_start + Duration::from_secs_f64(lc.window_secs);
    let stop_at = window_end + RENEW_EVERY;
    let in_window = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let n = leases.len().max(1) as u32;
    let agents: Vec<_> = leases
        .into_iter()
        .enumerate()
        .map(|(i, lease)| {
            let client = clients[i % CONNECTIONS].clone();
            let (in_window, errors) = (in_window.clone(), errors.clone());
            let first = start + RENEW_EVERY * i as u32 / n;
            tokio::spawn(async move {
                let mut tick = interval_at(first, RENEW_EVERY);
                tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
                let mut latencies = Vec::new();
                let mut first_error = None;
                loop {
                    let t = tick.tick().await;
                    if t >= stop_at {
                        break;
                    }
                    let sent = Instant::now();
                    match client.keep_alive(&lease).await {
                        Ok(_) => {
                            let done = Instant::now();
                            if sent >= window_start && done <= window_end {
                                in_window.fetch_add(1, Ordering::Relaxed);
                                latencies.push(done.duration_since(sent).as_micros() as u64);
                            }
                        }
                        Err(e) => {
                            errors.fetch_add(1, Ordering::Relaxed);
                            first_error.get_or_insert(e.to_string());
                        }
                    }
                }
                (latencies, first_error)
            })
        })
        .collect();

    tokio::time::sleep_until(window_start).await;
    let http = reqwest::Client::new();
    let leader_rest = cluster.addrs(leader).1.to_owned();
    let procs: Vec<_> = (0..3).map(|i| cluster.proc(i)).collect();
    let cpu = |i: usize| procs[i].and_then(|p| sup.cpu_time(p)).unwrap_or_default();
    let cpu0: Vec<Duration> = (0..3).map(cpu).collect();
    let m0 = scrape(&http, &leader_rest).await?;
    let w0 = Instant::now();
    tokio::time::sleep_until(window_end).await;
    let m1 = scrape(&http, &leader_rest).await?;
    let cpu1: Vec<Duration> = (0..3).map(cpu).collect();
    let wall = w0.elapsed().as_secs_f64();
    let same_leader = cluster.leader(LEADER_TIMEOUT).await? == leader;

    let mut latencies = Vec::new();
    let mut first_error = None;
    for a in agents {
        if let Ok((l, e)) = a.await {
            latencies.extend(l);
            if first_error.is_none() {
                first_error = e;
            }
        }
    }
    // Let the last calls settle before the cluster is dropped.
    sleep(Duration::from_millis(50)).await;
    let summary = summarize(&mut latencies);
    let grow = |name: &str| {
        let (a, b) = (metric(&m0, name).unwrap_or(0.0), metric(&m1, name).unwrap_or(0.0));
        (b - a).max(0.0) as u64
    };
    let log_entries = grow("hc_allocator_raft_last_log_index");
    let applied = grow("hc_allocator_raft_applied_index");
    let cores = |i: usize| cpu1[i].saturating_sub(cpu0[i]).as_secs_f64() / wall.max(1e-9);
    let keep_alives = in_window.load(Ordering::Relaxed);
    let window = lc.window_secs;
    Ok(LeaseResult {
        agents: lc.agents,
        window_secs: window,
        grant_secs,
        keep_alives_per_sec: keep_alives as f64 / window,
        keep_alive_p50_ms: summary.as_ref().map(|s| s.p50_ms),
        keep_alive_p99_ms: summary.as_ref().map(|s| s.p99_ms),
        keep_alive_errors: errors.load(Ordering::Relaxed),
        first_error,
        leader_cores: cores(leader),
        follower_cores: (0..3).filter(|&i| i != leader).map(cores).collect(),
        leader_cpu_us_per_keep_alive: (keep_alives > 0)
            .then(|| cpu1[leader].saturating_sub(cpu0[leader]).as_secs_f64() * 1e6 / keep_alives as f64),
        log_entries_in_window: log_entries,
        log_entries_per_sec: log_entries as f64 / wall.max(1e-9),
        applied_in_window: applied,
        same_leader,
    })
}

/// Correctness problems of the lease run: failed renewals, log growth from keep-alives.
pub fn problems(r: &LeaseResult) -> Vec<String> {
    let mut out = Vec::new();
    if r.keep_alive_errors > 0 {
        out.push(format!("leases: {} keep-alives failed, e.g. {:?}", r.keep_alive_errors, r.first_error));
    }
    if r.log_entries_in_window > 0 || r.applied_in_window > 0 {
        out.push(format!(
            "leases: the leader's log grew by {} entries ({} applied) during a window of keep-alives only{}",
            r.log_entries_in_window,
            r.applied_in_window,
            if r.same_leader { "" } else { " (the leader changed)" }
        ));
    }
    if r.keep_alives_per_sec <= 0.0 {
        out.push("leases: no keep-alive acknowledged in the window".to_owned());
    }
    out
}

pub fn render(r: &LeaseResult) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    let opt = |v: Option<f64>| v.map_or_else(|| "-".to_owned(), |v| format!("{v:.2}"));
    let _ = writeln!(
        s,
        "\nLeases: {} agents, each granted once ({:.1} s for all grants), then a keep-alive every second; {} s window",
        r.agents, r.grant_secs, r.window_secs
    );
    let _ = writeln!(
        s,
        "  keep-alives {:.0}/s, p50 {} ms, p99 {} ms, errors {}",
        r.keep_alives_per_sec,
        opt(r.keep_alive_p50_ms),
        opt(r.keep_alive_p99_ms),
        r.keep_alive_errors
    );
    let _ = writeln!(
        s,
        "  leader CPU {:.3} cores ({} µs per keep-alive); followers {}",
        r.leader_cores,
        opt(r.leader_cpu_us_per_keep_alive),
        r.follower_cores.iter().map(|c| format!("{c:.3}")).collect::<Vec<_>>().join(" ")
    );
    let _ = writeln!(
        s,
        "  leader's log: {} entries appended in the window ({:.2}/s), {} applied{}",
        r.log_entries_in_window,
        r.log_entries_per_sec,
        r.applied_in_window,
        if r.same_leader { "" } else { "; the leader changed during the window" }
    );
    s
}
