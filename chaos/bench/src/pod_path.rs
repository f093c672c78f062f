//! Issue 5, the pod path: CNI ADD and DEL through `hc-bridge` (exec → unix socket → `hc-agent`
//! → a commit on a 3-replica `hc-allocator` cluster with fsync → veth, bridge, address and
//! route in the pod's namespace) against Debian's reference `bridge` plugin with `host-local`
//! IPAM, on the same machine in the same run.
//!
//! Both sides are driven alike: the pods' network namespaces exist before any clock starts;
//! each call execs the plugin binary with the CNI environment and the configuration on stdin,
//! exactly as a runtime does, and is timed from the exec to the exit. Each side's bridge lives in
//! a node namespace of its own (the reference plugin is exec'd from a thread inside it, since
//! it builds its bridge wherever it runs). One ADD and DEL per side warm up (the bridge is
//! created then) and are not counted. Then, per side:
//! - sequential: `pod_adds` ADDs one after the other, the two sides interleaved call by call
//!   (so that load on the machine hits both alike), then the DELs the same way;
//! - concurrent: the same ADDs with `pod_concurrency` calls in flight, then the DELs; the
//!   reference side first, then hc-bridge.
//!
//! DELs carry the ADD's result as `prevResult`, as runtimes send it. Correctness is checked
//! after every phase: every ADD answered a distinct address from its pool, and after the DELs
//! no address is held (allocator, host-local's files), no record is left in the agent and no
//! veth in either node namespace.

use std::collections::HashSet;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{Context, Result};
use hc_api::command::Command as AllocCommand;
use serde_json::{Value, json};

use crate::config::Config;
use crate::hc_cluster::HcCluster;
use crate::node::{AgentNode, Exec, NetnsSet, Plugin, enter_netns, leftover_links, register_cleanup, step_means};
use crate::report::Target;
use crate::stats::summarize;
use crate::supervisor::Supervisor;

const HC_POOL: &str = "podpath";
const HC_CIDR: &str = "10.231.0.0/22";
const REF_CIDR: &str = "10.233.0.0/22";
/// VERSION execs per side: what starting the plugin process costs without any work.
const VERSION_EXECS: usize = 50;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Side {
    HcBridge,
    Reference,
}

impl Side {
    pub fn label(self) -> &'static str {
        match self {
            Side::HcBridge => "hc-bridge (3 replicas)",
            Side::Reference => "bridge + host-local",
        }
    }
}

/// Latencies of one kind of call (side, phase, verb).
#[derive(Debug, Clone, serde::Serialize)]
pub struct PodRow {
    pub side: Side,
    /// `sequential` or `concurrent`.
    pub phase: &'static str,
    /// Calls in flight at once.
    pub in_flight: usize,
    pub verb: &'static str,
    pub calls: usize,
    pub failures: usize,
    pub first_failure: Option<String>,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub max_ms: Option<f64>,
    pub mean_ms: Option<f64>,
    /// From the first exec to the last exit.
    pub wall_secs: f64,
    /// The addresses the ADDs answered, in call order (empty for other verbs).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub addresses: Vec<String>,
}

/// hc-bridge's figure over the reference's (below 1 is better).
#[derive(Debug, Clone, serde::Serialize)]
pub struct PodRatio {
    pub phase: &'static str,
    pub verb: &'static str,
    pub p50: Option<f64>,
    pub p99: Option<f64>,
}

/// Mean time of one step inside the agent.
#[derive(Debug, Clone, serde::Serialize)]
pub struct StepMean {
    pub verb: String,
    pub step: String,
    pub count: u64,
    pub mean_ms: f64,
    /// Calls of this step that took over 50 ms (`None`: the agent's text had no such bucket).
    pub over_50ms: Option<u64>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct PodPathResult {
    pub rows: Vec<PodRow>,
    pub ratios: Vec<PodRatio>,
    /// `CNI_COMMAND=VERSION` execs (no work, no socket): the process start-up floor per side.
    pub version_exec: Vec<PodRow>,
    /// Where hc-agent's time went (its own metrics, every call of the run).
    pub agent_steps: Vec<StepMean>,
    pub problems: Vec<String>,
}

/// One side: its plugin, its configuration and the node namespace its callers sit in.
struct SideSpec {
    side: Side,
    plugin: Plugin,
    config: Value,
    node_ns: PathBuf,
    pods: NetnsSet,
    /// Container ids are `<tag><i>`.
    tag: &'static str,
}

/// One plugin call to make.
#[derive(Clone)]
struct Job {
    spec: Arc<SideSpec>,
    command: &'static str,
    pod: usize,
    stdin: String,
}

impl Job {
    fn container_id(&self) -> String {
        format!("{}{}", self.spec.tag, self.pod)
    }
}

pub async fn run(cfg: &Config, sup: &Arc<Supervisor>) -> Result<PodPathResult> {
    let pc = &cfg.pods;
    register_cleanup(sup);
    eprintln!("hc-bench: pod path, {} ADDs per side and phase ...", pc.adds);
    let cluster = HcCluster::start(sup.clone(), cfg.allocator_bin.clone(), &cfg.allocator_args, "pod-hc").await?;
    let pool = serde_json::from_value(json!({"name": HC_POOL, "cidr": HC_CIDR, "gateway": "10.231.0.1"}))?;
    cluster.client(0)?.propose(&AllocCommand::CreatePool(pool)).await.context("creating the pool")?;
    let nodes = NetnsSet::create("node", 2)?;
    let agent = AgentNode::start(sup, &pc.agent_bin, &cluster.endpoints_from(0), "bench-pod-node", &nodes.names[0])?;
    agent.wait_ready(Duration::from_secs(30)).await?;

    let ipam_dir = sup.path("host-local");
    let bridge_dir = pc.bridge_bin.parent().unwrap_or(Path::new("/")).display().to_string();
    let hc = Arc::new(SideSpec {
        side: Side::HcBridge,
        plugin: Plugin { bin: pc.bridge_bin.clone(), cni_path: bridge_dir },
        config: json!({"cniVersion": "1.0.0", "name": "hcb-pod", "type": "hc-bridge",
                       "agentSocket": agent.socket, "pool": HC_POOL}),
        node_ns: nodes.path(0),
        pods: NetnsSet::create("ph", pc.adds)?,
        tag: "h",
    });
    let reference = Arc::new(SideSpec {
        side: Side::Reference,
        plugin: Plugin { bin: pc.cni_dir.join("bridge"), cni_path: pc.cni_dir.display().to_string() },
        config: json!({"cniVersion": "1.0.0", "name": "hcb-ref", "type": "bridge", "bridge": "hcbref0",
                       "isGateway": true, "isDefaultGateway": true,
                       "ipam": {"type": "host-local", "ranges": [[{"subnet": REF_CIDR}]], "dataDir": ipam_dir}}),
        node_ns: nodes.path(1),
        pods: NetnsSet::create("pr", pc.adds)?,
        tag: "r",
    });
    let sides = [reference.clone(), hc.clone()];
    let mut problems = Vec::new();

    // Process start-up alone, and the warm-up that creates each bridge.
    let mut version_exec = Vec::new();
    for spec in &sides {
        let jobs =
            vec![
                Job { spec: spec.clone(), command: "VERSION", pod: 0, stdin: "{\"cniVersion\":\"1.0.0\"}".into() };
                VERSION_EXECS
            ];
        let execs = blocking(move || run_jobs(&jobs, 1)).await?;
        version_exec.push(row(spec.side, "sequential", 1, "VERSION", &execs, &mut problems));
    }
    for spec in &sides {
        let add = Job { spec: spec.clone(), command: "ADD", pod: 0, stdin: spec.config.to_string() };
        let execs = blocking(move || run_jobs(&[add], 1)).await?;
        let mut del = Job { spec: spec.clone(), command: "DEL", pod: 0, stdin: String::new() };
        del.stdin = with_prev(&spec.config, &execs[0]);
        let dels = blocking(move || run_jobs(&[del], 1)).await?;
        if let Some(e) = execs.iter().chain(&dels).find(|e| !e.ok) {
            anyhow::bail!("warm-up call of {} failed: {}", spec.side.label(), e.failure());
        }
    }

    let mut rows = Vec::new();
    for (phase, in_flight) in [("sequential", 1), ("concurrent", pc.concurrency)] {
        eprintln!("hc-bench:   {phase} ({in_flight} in flight) ...");
        // ADDs. Sequential: one list, the sides interleaved; concurrent: one side after the other.
        let batches: Vec<Vec<Job>> = if in_flight == 1 {
            vec![(0..pc.adds).flat_map(|i| sides.iter().map(move |s| add_job(s, i))).collect()]
        } else {
            sides.iter().map(|s| (0..pc.adds).map(|i| add_job(s, i)).collect()).collect()
        };
        let mut adds: Vec<(Job, Exec)> = Vec::new();
        for batch in batches {
            let execs = blocking({
                let batch = batch.clone();
                move || run_jobs(&batch, in_flight)
            })
            .await?;
            adds.extend(batch.into_iter().zip(execs));
        }
        for spec in &sides {
            let mine: Vec<&(Job, Exec)> = adds.iter().filter(|(j, _)| j.spec.side == spec.side).collect();
            let execs: Vec<Exec> = mine.iter().map(|(_, e)| e.clone()).collect();
            rows.push(row(spec.side, phase, in_flight, "ADD", &execs, &mut problems));
            check_adds(spec, phase, &mine, &mut problems);
        }
        match held_by_allocator(&cluster).await {
            Ok(n) if n != pc.adds => {
                problems.push(format!("{phase}: the allocator holds {n} addresses after {} ADDs", pc.adds))
            }
            Ok(_) => {}
            Err(e) => problems.push(format!("{phase}: listing allocations: {e:#}")),
        }
        if let Some(held) = host_local_held(&ipam_dir, "hcb-ref")
            && held != pc.adds
        {
            problems.push(format!("{phase}: host-local holds {held} addresses after {} ADDs", pc.adds));
        }

        // DELs, in the same arrangement, each with its ADD's result.
        let dels: Vec<Job> = adds
            .iter()
            .map(|(j, e)| Job { spec: j.spec.clone(), command: "DEL", pod: j.pod, stdin: with_prev(&j.spec.config, e) })
            .collect();
        let batches: Vec<Vec<Job>> = if in_flight == 1 {
            vec![dels]
        } else {
            sides.iter().map(|s| dels.iter().filter(|j| j.spec.side == s.side).cloned().collect()).collect()
        };
        let mut done: Vec<(Side, Exec)> = Vec::new();
        for batch in batches {
            let sides_of: Vec<Side> = batch.iter().map(|j| j.spec.side).collect();
            let execs = blocking(move || run_jobs(&batch, in_flight)).await?;
            done.extend(sides_of.into_iter().zip(execs));
        }
        for spec in &sides {
            let execs: Vec<Exec> = done.iter().filter(|(s, _)| *s == spec.side).map(|(_, e)| e.clone()).collect();
            rows.push(row(spec.side, phase, in_flight, "DEL", &execs, &mut problems));
        }
        check_released(phase, &cluster, &agent, &sides, &ipam_dir, &mut problems).await;
    }

    let agent_steps = match agent.metrics_text().await {
        Ok(text) => step_means(&text)
            .into_iter()
            .map(|(verb, step, count, mean_ms, over_50ms)| StepMean { verb, step, count, mean_ms, over_50ms })
            .collect(),
        Err(e) => {
            eprintln!("hc-bench: cannot read the agent's metrics: {e:#}");
            Vec::new()
        }
    };
    let ratios = ratios(&rows);
    Ok(PodPathResult { rows, ratios, version_exec, agent_steps, problems })
}

fn add_job(spec: &Arc<SideSpec>, pod: usize) -> Job {
    Job { spec: spec.clone(), command: "ADD", pod, stdin: spec.config.to_string() }
}

/// The configuration with `prevResult` set to the ADD's result, as a runtime sends DEL.
fn with_prev(config: &Value, add: &Exec) -> String {
    let mut c = config.clone();
    if let Ok(prev) = serde_json::from_str::<Value>(&add.stdout)
        && add.ok
    {
        c["prevResult"] = prev;
    }
    c.to_string()
}

/// Runs blocking plugin calls off the async runtime.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f).await.context("plugin-calling thread panicked")?
}

/// Runs `jobs` on `workers` threads (each call in order of the list, `workers` at a time) and
/// returns their results in the list's order. Each thread enters the node namespace of its
/// job's side before the exec, outside the timing.
fn run_jobs(jobs: &[Job], workers: usize) -> Result<Vec<Exec>> {
    let next = AtomicUsize::new(0);
    let results: Vec<std::sync::Mutex<Option<Result<Exec>>>> = jobs.iter().map(|_| Default::default()).collect();
    std::thread::scope(|scope| {
        for _ in 0..workers.min(jobs.len()) {
            scope.spawn(|| {
                let mut current: Option<PathBuf> = None;
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(job) = jobs.get(i) else { break };
                    let r = (|| {
                        if current.as_deref() != Some(job.spec.node_ns.as_path()) {
                            enter_netns(&job.spec.node_ns)?;
                            current = Some(job.spec.node_ns.clone());
                        }
                        job.spec.plugin.exec(job.command, &job.container_id(), &job.spec.pods.path(job.pod), &job.stdin)
                    })();
                    *results[i].lock().unwrap_or_else(|p| p.into_inner()) = Some(r);
                }
            });
        }
    });
    results
        .into_iter()
        .map(|m| m.into_inner().unwrap_or_else(|p| p.into_inner()).unwrap_or_else(|| Err(anyhow::anyhow!("not run"))))
        .collect()
}

/// Summarises calls; failures go to `problems`.
fn row(
    side: Side,
    phase: &'static str,
    in_flight: usize,
    verb: &'static str,
    execs: &[Exec],
    problems: &mut Vec<String>,
) -> PodRow {
    let mut us: Vec<u64> = execs.iter().map(|e| e.took.as_micros() as u64).collect();
    let s = summarize(&mut us);
    let failed: Vec<&Exec> = execs.iter().filter(|e| !e.ok).collect();
    let first_failure = failed.first().map(|e| e.failure());
    if let Some(f) = &first_failure {
        problems.push(format!(
            "{} {phase} {verb}: {} of {} calls failed, first: {f}",
            side.label(),
            failed.len(),
            execs.len()
        ));
    }
    PodRow {
        side,
        phase,
        in_flight,
        verb,
        calls: execs.len(),
        failures: failed.len(),
        first_failure,
        p50_ms: s.map(|s| s.p50_ms),
        p99_ms: s.map(|s| s.p99_ms),
        max_ms: s.map(|s| s.max_ms),
        mean_ms: s.map(|s| s.mean_ms),
        wall_secs: wall(execs).as_secs_f64(),
        addresses: if verb == "ADD" { execs.iter().filter_map(Exec::address).collect() } else { Vec::new() },
    }
}

/// From the first exec to the last exit.
pub fn wall(execs: &[Exec]) -> Duration {
    let start = execs.iter().map(|e| e.ended - e.took).min();
    let end = execs.iter().map(|e| e.ended).max();
    start.zip(end).map_or(Duration::ZERO, |(s, e)| e.saturating_duration_since(s))
}

/// Every successful ADD answered an address of its side's pool, none twice.
fn check_adds(spec: &SideSpec, phase: &str, adds: &[&(Job, Exec)], problems: &mut Vec<String>) {
    let subnet: ipnet::Ipv4Net = match spec.side {
        Side::HcBridge => HC_CIDR,
        Side::Reference => REF_CIDR,
    }
    .parse()
    .expect("constant CIDR");
    let mut seen = HashSet::new();
    for (job, e) in adds.iter().filter(|(_, e)| e.ok) {
        let addr = e.address().and_then(|a| a.split('/').next().and_then(|ip| ip.parse::<std::net::Ipv4Addr>().ok()));
        match addr {
            Some(a) if !subnet.contains(&a) => problems.push(format!(
                "{} {phase}: ADD of {} got {a}, outside {subnet}",
                spec.side.label(),
                job.container_id()
            )),
            Some(a) if !seen.insert(a) => {
                problems.push(format!("{} {phase}: address {a} answered to two ADDs", spec.side.label()))
            }
            Some(_) => {}
            None => problems.push(format!(
                "{} {phase}: ADD of {} answered no address",
                spec.side.label(),
                job.container_id()
            )),
        }
    }
}

/// Addresses the allocator's leader holds in the pod-path pool.
async fn held_by_allocator(cluster: &HcCluster) -> Result<usize> {
    let leader = cluster.leader(Duration::from_secs(20)).await?;
    Ok(cluster.client(0)?.list_allocations_at(leader, Some(HC_POOL), None).await?.len())
}

/// Addresses host-local has on file for `network` (one file per address, named by it).
pub fn host_local_held(data_dir: &Path, network: &str) -> Option<usize> {
    let dir = std::fs::read_dir(data_dir.join(network)).ok()?;
    Some(dir.flatten().filter(|e| e.file_name().to_str().is_some_and(|n| n.parse::<IpAddr>().is_ok())).count())
}

async fn check_released(
    phase: &str,
    cluster: &HcCluster,
    agent: &AgentNode,
    sides: &[Arc<SideSpec>],
    ipam_dir: &Path,
    problems: &mut Vec<String>,
) {
    match held_by_allocator(cluster).await {
        Ok(0) => {}
        Ok(n) => problems.push(format!("{phase}: the allocator still holds {n} addresses after the DELs")),
        Err(e) => problems.push(format!("{phase}: listing allocations: {e:#}")),
    }
    if agent.records() != 0 {
        problems.push(format!("{phase}: hc-agent kept {} attachment records after the DELs", agent.records()));
    }
    match host_local_held(ipam_dir, "hcb-ref") {
        Some(0) | None => {}
        Some(n) => problems.push(format!("{phase}: host-local still holds {n} addresses after the DELs")),
    }
    for spec in sides {
        let ns = spec.node_ns.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_owned();
        match leftover_links(&ns) {
            Ok(left) if left.is_empty() => {}
            Ok(left) => problems.push(format!(
                "{} {phase}: {} links left in the node namespace after the DELs, e.g. {}",
                spec.side.label(),
                left.len(),
                left[0]
            )),
            Err(e) => problems.push(format!("{phase}: {e:#}")),
        }
    }
}

fn ratio(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    a.zip(b).filter(|(_, b)| *b > 0.0).map(|(a, b)| a / b)
}

pub fn ratios(rows: &[PodRow]) -> Vec<PodRatio> {
    let mut out = Vec::new();
    for phase in ["sequential", "concurrent"] {
        for verb in ["ADD", "DEL"] {
            let find = |side| rows.iter().find(|r| r.side == side && r.phase == phase && r.verb == verb);
            let (hc, rf) = (find(Side::HcBridge), find(Side::Reference));
            if hc.is_none() && rf.is_none() {
                continue;
            }
            out.push(PodRatio {
                phase,
                verb,
                p50: ratio(hc.and_then(|r| r.p50_ms), rf.and_then(|r| r.p50_ms)),
                p99: ratio(hc.and_then(|r| r.p99_ms), rf.and_then(|r| r.p99_ms)),
            });
        }
    }
    out
}

fn fmt_opt(v: Option<f64>, digits: usize) -> String {
    v.map_or_else(|| "-".to_owned(), |v| format!("{v:.digits$}"))
}

/// Issue 5's pod-path targets: ADD p50 and p99 at most half the reference's.
pub fn targets(r: &PodPathResult) -> Vec<Target> {
    let mut out = Vec::new();
    for q in r.ratios.iter().filter(|q| q.verb == "ADD") {
        for (what, v) in [("p50", q.p50), ("p99", q.p99)] {
            out.push(Target {
                name: format!("pod path ADD {what} vs bridge+host-local, {}", q.phase),
                goal: "<= 0.5x".into(),
                measured: fmt_opt(v, 2) + "x",
                met: v.map(|v| v <= 0.5),
            });
        }
    }
    out
}

pub fn render(s: &mut String, r: &PodPathResult) {
    use std::fmt::Write as _;
    let _ = writeln!(
        s,
        "\nPod path: CNI calls exec'd like a runtime, timed from exec to exit (pod namespaces made beforehand)"
    );
    let _ = writeln!(
        s,
        "{:<24} {:<11} {:>6} {:<7} {:>6} {:>8} {:>8} {:>8} {:>8} {:>8} {:>5}",
        "side", "phase", "flight", "verb", "calls", "p50 ms", "p99 ms", "max ms", "mean ms", "wall s", "fail"
    );
    for row in r.version_exec.iter().chain(&r.rows) {
        let _ = writeln!(
            s,
            "{:<24} {:<11} {:>6} {:<7} {:>6} {:>8} {:>8} {:>8} {:>8} {:>8.2} {:>5}",
            row.side.label(),
            row.phase,
            row.in_flight,
            row.verb,
            row.calls,
            fmt_opt(row.p50_ms, 2),
            fmt_opt(row.p99_ms, 2),
            fmt_opt(row.max_ms, 1),
            fmt_opt(row.mean_ms, 2),
            row.wall_secs,
            row.failures
        );
    }
    let _ = writeln!(s, "\nPod path ratios, hc-bridge / bridge+host-local (lower is better)");
    let _ = writeln!(s, "{:<11} {:<5} {:>8} {:>8}", "phase", "verb", "p50", "p99");
    for q in &r.ratios {
        let _ = writeln!(s, "{:<11} {:<5} {:>7}x {:>7}x", q.phase, q.verb, fmt_opt(q.p50, 2), fmt_opt(q.p99, 2));
    }
    if !r.agent_steps.is_empty() {
        let _ = writeln!(s, "\nInside hc-agent (its metrics, all pod-path calls): mean ms per step, calls over 50 ms");
        for st in &r.agent_steps {
            let _ = writeln!(
                s,
                "  {:<4} {:<14} {:>6} calls {:>8.2} ms {:>5} over 50 ms",
                st.verb,
                st.step,
                st.count,
                st.mean_ms,
                st.over_50ms.map_or("?".to_owned(), |n| n.to_string())
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prow(side: Side, phase: &'static str, verb: &'static str, p50: f64, p99: f64) -> PodRow {
        PodRow {
            side,
            phase,
            in_flight: 1,
            verb,
            calls: 10,
            failures: 0,
            first_failure: None,
            p50_ms: Some(p50),
            p99_ms: Some(p99),
            max_ms: Some(p99),
            mean_ms: Some(p50),
            wall_secs: 1.0,
            addresses: vec![],
        }
    }

    #[test]
    fn ratios_and_targets() {
        let rows = vec![
            prow(Side::HcBridge, "sequential", "ADD", 4.0, 10.0),
            prow(Side::Reference, "sequential", "ADD", 16.0, 40.0),
            prow(Side::HcBridge, "sequential", "DEL", 4.0, 10.0),
            prow(Side::Reference, "sequential", "DEL", 2.0, 5.0),
        ];
        let q = ratios(&rows);
        assert_eq!(q.len(), 2);
        assert_eq!((q[0].p50, q[0].p99), (Some(0.25), Some(0.25)));
        assert_eq!((q[1].p50, q[1].p99), (Some(2.0), Some(2.0)));
        let r = PodPathResult { rows, ratios: q, version_exec: vec![], agent_steps: vec![], problems: vec![] };
        let t = targets(&r);
        assert_eq!(t.len(), 2);
        assert!(t.iter().all(|t| t.met == Some(true)), "{t:#?}");
    }
}
