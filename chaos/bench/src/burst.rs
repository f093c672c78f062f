//! Issue 5, the burst: `burst_pods` pod ADDs spread round-robin over `burst_agents` hc-agent
//! processes — simulated nodes, each with its own node name, node namespace and bridge, socket
//! and state directory, all on one 3-replica hc-allocator cluster with fsync, all drawing from
//! one pool — fired at once. Measured: the time from the start signal until every ADD's plugin
//! process has exited, and each agent's p50/p99 (exec to exit). Then the DELs the same way.
//!
//! Every pod's network namespace exists before the clock starts (their creation is timed
//! separately) and is deleted afterwards. Each ADD runs on a thread of its own that waits at a
//! barrier: at the signal, every thread execs its plugin. One ADD and DEL per agent before the
//! burst build each node's bridge and are not counted. All simulated nodes share this
//! machine's cores, so the figure is a worst case for 10 real nodes.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use hc_api::command::Command as AllocCommand;
use serde_json::{Value, json};

use crate::config::Config;
use crate::hc_cluster::HcCluster;
use crate::node::{AgentNode, Exec, NetnsSet, Plugin, leftover_links, register_cleanup, step_means};
use crate::pod_path::StepMean;
use crate::report::Target;
use crate::stats::summarize;
use crate::supervisor::Supervisor;

const POOL: &str = "burst";
const CIDR: &str = "10.232.0.0/20";
/// The target: every ADD of the burst done within this.
pub const TARGET_SECS: f64 = 2.0;

/// One agent's share of a burst.
#[derive(Debug, Clone, serde::Serialize)]
pub struct AgentRow {
    pub node: String,
    pub calls: usize,
    pub failures: usize,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub max_ms: Option<f64>,
}

/// One verb's burst.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Wave {
    pub verb: &'static str,
    pub calls: usize,
    pub failures: usize,
    pub first_failure: Option<String>,
    /// From the start signal until the last plugin process exited.
    pub all_done_secs: f64,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub max_ms: Option<f64>,
    pub per_agent: Vec<AgentRow>,
    /// The addresses the ADDs answered, in pod order (empty for DEL).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub addresses: Vec<String>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct BurstResult {
    pub pods: usize,
    pub agents: usize,
    /// Creating the pods' network namespaces (before the clock).
    pub netns_setup_secs: f64,
    pub add: Wave,
    pub del: Wave,
    /// Mean ms per step inside the agents, over all agents (their metrics).
    pub agent_steps: Vec<StepMean>,
    pub problems: Vec<String>,
}

pub async fn run(cfg: &Config, sup: &Arc<Supervisor>) -> Result<BurstResult> {
    let pc = &cfg.pods;
    register_cleanup(sup);
    eprintln!("hc-bench: burst, {} pod ADDs over {} agents ...", pc.burst_pods, pc.burst_agents);
    let cluster = HcCluster::start(sup.clone(), cfg.allocator_bin.clone(), &cfg.allocator_args, "burst-hc").await?;
    let pool = serde_json::from_value(json!({"name": POOL, "cidr": CIDR, "gateway": "10.232.0.1"}))?;
    cluster.client(0)?.propose(&AllocCommand::CreatePool(pool)).await.context("creating the pool")?;
    let nodes = NetnsSet::create("bn", pc.burst_agents)?;
    let mut agents = Vec::with_capacity(pc.burst_agents);
    for i in 0..pc.burst_agents {
        // Each agent's first choice is another replica, as agents spread over a cluster would be.
        let eps = cluster.endpoints_from(i);
        agents.push(AgentNode::start(sup, &pc.agent_bin, &eps, &format!("bench-burst-n{i}"), &nodes.names[i])?);
    }
    for a in &agents {
        a.wait_ready(Duration::from_secs(30)).await?;
    }
    let started = Instant::now();
    let pods = Arc::new(NetnsSet::create("b", pc.burst_pods)?);
    let netns_setup_secs = started.elapsed().as_secs_f64();
    eprintln!("hc-bench:   {} pod namespaces made in {netns_setup_secs:.1} s", pods.len());

    let plugin = Plugin {
        bin: pc.bridge_bin.clone(),
        cni_path: pc.bridge_bin.parent().map(|p| p.display().to_string()).unwrap_or_default(),
    };
    let configs: Vec<Value> = agents
        .iter()
        .map(|a| {
            json!({"cniVersion": "1.0.0", "name": "hcb-burst", "type": "hc-bridge",
                        "agentSocket": a.socket, "pool": POOL})
        })
        .collect();
    let mut problems = Vec::new();

    // Warm-up: each node's bridge, built by one ADD and DEL on the first pods.
    let warm: Vec<Call> = (0..agents.len())
        .map(|i| Call { command: "ADD", container_id: format!("warm{i}"), pod: i, stdin: configs[i].to_string() })
        .collect();
    let warm_adds = fire(&plugin, &pods, &warm).await?;
    let warm_dels: Vec<Call> = warm
        .iter()
        .zip(&warm_adds)
        .map(|(c, e)| Call { command: "DEL", stdin: with_prev(&configs[c.pod], e), ..c.clone() })
        .collect();
    let warm_dels = fire(&plugin, &pods, &warm_dels).await?;
    if let Some(e) = warm_adds.iter().chain(&warm_dels).find(|e| !e.ok) {
        bail!("warm-up call failed: {}", e.failure());
    }

    let agent_of = |pod: usize| pod % agents.len();
    let adds: Vec<Call> = (0..pods.len())
        .map(|p| Call {
            command: "ADD",
            container_id: format!("b{p}"),
            pod: p,
            stdin: configs[agent_of(p)].to_string(),
        })
        .collect();
    let (add_execs, add_secs) = fire_timed(&plugin, &pods, &adds).await?;
    let add = wave("ADD", &agents, &add_execs, add_secs, agent_of, &mut problems);
    eprintln!("hc-bench:   {} ADDs done in {:.2} s", adds.len(), add_secs);

    let mut seen = HashSet::new();
    let subnet: ipnet::Ipv4Net = CIDR.parse().expect("constant CIDR");
    for (c, e) in adds.iter().zip(&add_execs).filter(|(_, e)| e.ok) {
        match e.address().and_then(|a| a.split('/').next().and_then(|ip| ip.parse::<std::net::Ipv4Addr>().ok())) {
            Some(a) if subnet.contains(&a) && seen.insert(a) => {}
            Some(a) => {
                problems.push(format!("burst: ADD of {} got {a}: outside {subnet} or answered twice", c.container_id))
            }
            None => problems.push(format!("burst: ADD of {} answered no address", c.container_id)),
        }
    }
    let leader = cluster.leader(Duration::from_secs(20)).await?;
    let held = cluster.client(0)?.list_allocations_at(leader, Some(POOL), None).await?.len();
    let ok_adds = add_execs.iter().filter(|e| e.ok).count();
    if held != ok_adds {
        problems.push(format!("burst: the allocator holds {held} addresses after {ok_adds} successful ADDs"));
    }

    let dels: Vec<Call> = adds
        .iter()
        .zip(&add_execs)
        .map(|(c, e)| Call { command: "DEL", stdin: with_prev(&configs[agent_of(c.pod)], e), ..c.clone() })
        .collect();
    let (del_execs, del_secs) = fire_timed(&plugin, &pods, &dels).await?;
    let del = wave("DEL", &agents, &del_execs, del_secs, agent_of, &mut problems);
    eprintln!("hc-bench:   {} DELs done in {:.2} s", dels.len(), del_secs);

    let leader = cluster.leader(Duration::from_secs(20)).await?;
    let held = cluster.client(0)?.list_allocations_at(leader, Some(POOL), None).await?.len();
    if held != 0 {
        problems.push(format!("burst: the allocator still holds {held} addresses after the DELs"));
    }
    let mut steps: std::collections::BTreeMap<(String, String), (u64, f64, Option<u64>)> = Default::default();
    for a in &agents {
        if a.records() != 0 {
            problems.push(format!("burst: {} kept {} attachment records after the DELs", a.node, a.records()));
        }
        match leftover_links(&a.netns) {
            Ok(left) if left.is_empty() => {}
            Ok(left) => problems.push(format!("burst: {} links left on {} after the DELs", left.len(), a.node)),
            Err(e) => problems.push(format!("burst: {e:#}")),
        }
        match a.metrics_text().await {
            Ok(text) => {
                for (verb, step, n, mean, slow) in step_means(&text) {
                    let e = steps.entry((verb, step)).or_default();
                    e.0 += n;
                    e.1 += mean * n as f64;
                    if let Some(slow) = slow {
                        *e.2.get_or_insert(0) += slow;
                    }
                }
            }
            Err(e) => eprintln!("hc-bench: {e:#}"),
        }
    }
    let agent_steps = steps
        .into_iter()
        .map(|((verb, step), (count, total, over_50ms))| StepMean {
            verb,
            step,
            count,
            mean_ms: total / count.max(1) as f64,
            over_50ms,
        })
        .collect();
    drop(agents);
    Ok(BurstResult { pods: pods.len(), agents: pc.burst_agents, netns_setup_secs, add, del, agent_steps, problems })
}

#[derive(Debug, Clone)]
struct Call {
    command: &'static str,
    container_id: String,
    pod: usize,
    stdin: String,
}

fn with_prev(config: &Value, add: &Exec) -> String {
    let mut c = config.clone();
    if let Ok(prev) = serde_json::from_str::<Value>(&add.stdout)
        && add.ok
    {
        c["prevResult"] = prev;
    }
    c.to_string()
}

async fn fire(plugin: &Plugin, pods: &Arc<NetnsSet>, calls: &[Call]) -> Result<Vec<Exec>> {
    Ok(fire_timed(plugin, pods, calls).await?.0)
}

/// One thread per call, all released at once by a barrier; returns the results in order and
/// the seconds from the release until the last exit.
async fn fire_timed(plugin: &Plugin, pods: &Arc<NetnsSet>, calls: &[Call]) -> Result<(Vec<Exec>, f64)> {
    let (plugin, pods, calls) = (plugin.clone(), pods.clone(), calls.to_vec());
    tokio::task::spawn_blocking(move || {
        let barrier = Barrier::new(calls.len() + 1);
        let paths: Vec<PathBuf> = calls.iter().map(|c| pods.path(c.pod)).collect();
        std::thread::scope(|scope| {
            let mut handles = Vec::with_capacity(calls.len());
            for (c, path) in calls.iter().zip(&paths) {
                let (barrier, plugin) = (&barrier, &plugin);
                let h = std::thread::Builder::new()
                    .stack_size(256 * 1024)
                    .spawn_scoped(scope, move || {
                        barrier.wait();
                        plugin.exec(c.command, &c.container_id, path, &c.stdin)
                    })
                    .context("starting a caller thread")?;
                handles.push(h);
            }
            barrier.wait();
            let start = Instant::now();
            let mut out = Vec::with_capacity(handles.len());
            for h in handles {
                out.push(h.join().map_err(|_| anyhow::anyhow!("caller thread panicked"))??);
            }
            let end = out.iter().map(|e| e.ended).max().unwrap_or(start);
            Ok((out, end.saturating_duration_since(start).as_secs_f64()))
        })
    })
    .await
    .context("burst thread panicked")?
}

fn wave(
    verb: &'static str,
    agents: &[AgentNode],
    execs: &[Exec],
    all_done_secs: f64,
    agent_of: impl Fn(usize) -> usize,
    problems: &mut Vec<String>,
) -> Wave {
    let mut all: Vec<u64> = execs.iter().map(|e| e.took.as_micros() as u64).collect();
    let s = summarize(&mut all);
    let failed: Vec<&Exec> = execs.iter().filter(|e| !e.ok).collect();
    let first_failure = failed.first().map(|e| e.failure());
    if let Some(f) = &first_failure {
        problems.push(format!("burst {verb}: {} of {} calls failed, first: {f}", failed.len(), execs.len()));
    }
    let per_agent = agents
        .iter()
        .enumerate()
        .map(|(i, a)| {
            let mine: Vec<&Exec> =
                execs.iter().enumerate().filter(|(p, _)| agent_of(*p) == i).map(|(_, e)| e).collect();
            let mut us: Vec<u64> = mine.iter().map(|e| e.took.as_micros() as u64).collect();
            let s = summarize(&mut us);
            AgentRow {
                node: a.node.clone(),
                calls: mine.len(),
                failures: mine.iter().filter(|e| !e.ok).count(),
                p50_ms: s.map(|s| s.p50_ms),
                p99_ms: s.map(|s| s.p99_ms),
                max_ms: s.map(|s| s.max_ms),
            }
        })
        .collect();
    Wave {
        verb,
        calls: execs.len(),
        failures: failed.len(),
        first_failure,
        all_done_secs,
        p50_ms: s.map(|s| s.p50_ms),
        p99_ms: s.map(|s| s.p99_ms),
        max_ms: s.map(|s| s.max_ms),
        per_agent,
        addresses: if verb == "ADD" { execs.iter().filter_map(Exec::address).collect() } else { Vec::new() },
    }
}

pub fn targets(r: &BurstResult) -> Vec<Target> {
    vec![Target {
        name: format!("burst: {} pod ADDs over {} agents all done", r.pods, r.agents),
        goal: format!("<= {TARGET_SECS} s"),
        measured: format!("{:.2} s", r.add.all_done_secs),
        met: Some(r.add.failures == 0 && r.add.all_done_secs <= TARGET_SECS),
    }]
}

fn fmt_opt(v: Option<f64>, digits: usize) -> String {
    v.map_or_else(|| "-".to_owned(), |v| format!("{v:.digits$}"))
}

pub fn render(s: &mut String, r: &BurstResult) {
    use std::fmt::Write as _;
    let _ = writeln!(
        s,
        "\nBurst: {} hc-bridge ADDs, then DELs, over {} hc-agents (simulated nodes, one 3-replica cluster), \
         all fired at once ({} pod namespaces made beforehand in {:.1} s)",
        r.pods, r.agents, r.pods, r.netns_setup_secs
    );
    for w in [&r.add, &r.del] {
        let _ = writeln!(
            s,
            "  {}: all {} done in {:.3} s; p50 {} ms, p99 {} ms, max {} ms; {} failed",
            w.verb,
            w.calls,
            w.all_done_secs,
            fmt_opt(w.p50_ms, 1),
            fmt_opt(w.p99_ms, 1),
            fmt_opt(w.max_ms, 1),
            w.failures
        );
        let _ = writeln!(
            s,
            "  {:<22} {:>6} {:>9} {:>9} {:>9} {:>5}",
            "node", "calls", "p50 ms", "p99 ms", "max ms", "fail"
        );
        for a in &w.per_agent {
            let _ = writeln!(
                s,
                "  {:<22} {:>6} {:>9} {:>9} {:>9} {:>5}",
                a.node,
                a.calls,
                fmt_opt(a.p50_ms, 1),
                fmt_opt(a.p99_ms, 1),
                fmt_opt(a.max_ms, 1),
                a.failures
            );
        }
    }
    if !r.agent_steps.is_empty() {
        let _ = writeln!(s, "  Inside the agents (their metrics, warm-up included): mean ms per step");
        for st in &r.agent_steps {
            let _ = writeln!(s, "    {:<4} {:<14} {:>6} calls {:>8.2} ms", st.verb, st.step, st.count, st.mean_ms);
        }
    }
}
