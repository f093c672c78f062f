//! The node side shared by the pod-path and burst benchmarks: their flags, network namespaces
//! made and removed in batches, `hc-agent` processes on a node namespace of their own, and CNI
//! plugins exec'd the way a runtime execs them (environment variables, configuration on stdin,
//! timed from exec to exit).
//!
//! Everything a run creates in the kernel lives in network namespaces named `hcb<pid>-…`: the
//! nodes' bridges and the host ends of the pods' veths sit in node namespaces, never on the
//! host's interfaces. Deleting those namespaces removes everything; the run registers that with
//! the [`Supervisor`], so Ctrl-C and failures leave nothing behind either.

use std::fs::File;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::config::{ConfigError, allocator_candidates};
use crate::supervisor::{ProcId, Supervisor, free_port, tail};

/// Flags of the pod-path and burst parts (flattened into the runner's flags).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct PodFlags {
    /// Pod path: ADDs (then DELs) per side and phase, sequential and concurrent (full: 200,
    /// smoke: 10).
    #[arg(long)]
    pub pod_adds: Option<usize>,
    /// Pod path: plugin calls in flight at once in the concurrent phase (default 10).
    #[arg(long)]
    pub pod_concurrency: Option<usize>,
    /// Burst: pod ADDs fired at once (full: 1000, smoke: 40).
    #[arg(long)]
    pub burst_pods: Option<usize>,
    /// Burst: hc-agent processes (simulated nodes) the pods are spread over (full: 10, smoke: 2).
    #[arg(long)]
    pub burst_agents: Option<usize>,
    /// The `hc-agent` binary (default: found like hc-allocator).
    #[arg(long, env = "HC_AGENT_BIN")]
    pub agent_bin: Option<PathBuf>,
    /// The `hc-bridge` CNI plugin binary (default: found like hc-allocator).
    #[arg(long, env = "HC_BRIDGE_BIN")]
    pub bridge_bin: Option<PathBuf>,
    /// Where the reference CNI plugins (`bridge`, `host-local`) are.
    #[arg(long, env = "HC_BENCH_CNI_DIR", default_value = "/usr/lib/cni")]
    pub cni_dir: PathBuf,
}

/// The validated settings of the pod-path and burst parts.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PodConfig {
    pub adds: usize,
    pub concurrency: usize,
    pub burst_pods: usize,
    pub burst_agents: usize,
    pub agent_bin: PathBuf,
    pub bridge_bin: PathBuf,
    pub cni_dir: PathBuf,
}

/// At most this many pods per run: each is a network namespace and, during the burst, a thread
/// and a plugin process of the runner's.
const MAX_PODS: usize = 5000;
const MAX_AGENTS: usize = 100;

impl PodConfig {
    /// Merges the flags over the full or smoke defaults and validates. The binaries are only
    /// looked up (and required) when `needed`, i.e. when a pod part runs.
    pub fn load(
        flags: PodFlags,
        smoke: bool,
        needed: bool,
        env: &impl Fn(&str) -> Option<String>,
    ) -> Result<PodConfig, ConfigError> {
        let invalid = |flag, reason: String| ConfigError::Invalid { flag, reason };
        let adds = flags.pod_adds.unwrap_or(if smoke { 10 } else { 200 });
        let concurrency = flags.pod_concurrency.unwrap_or(10);
        let burst_pods = flags.burst_pods.unwrap_or(if smoke { 40 } else { 1000 });
        let burst_agents = flags.burst_agents.unwrap_or(if smoke { 2 } else { 10 });
        if adds == 0 || adds > MAX_PODS {
            return Err(invalid("pod-adds", format!("must be 1..={MAX_PODS}")));
        }
        if concurrency == 0 || concurrency > adds {
            return Err(invalid("pod-concurrency", "must be 1..=pod-adds".into()));
        }
        if burst_agents == 0 || burst_agents > MAX_AGENTS {
            return Err(invalid("burst-agents", format!("must be 1..={MAX_AGENTS}")));
        }
        if burst_pods < burst_agents || burst_pods > MAX_PODS {
            return Err(invalid("burst-pods", format!("must be burst-agents..={MAX_PODS}")));
        }
        let exe = std::env::current_exe().ok();
        let find = |flag: &'static str, given: Option<PathBuf>, name: &str| -> Result<PathBuf, ConfigError> {
            if let Some(p) = given {
                return if p.is_file() || !needed {
                    Ok(p)
                } else {
                    Err(invalid(flag, format!("{} not found", p.display())))
                };
            }
            let candidates: Vec<PathBuf> =
                allocator_candidates(exe.as_deref(), env).into_iter().map(|p| p.with_file_name(name)).collect();
            match candidates.iter().find(|p| p.is_file()) {
                Some(p) => Ok(p.clone()),
                None if !needed => Ok(PathBuf::from(name)),
                None => Err(invalid(
                    flag,
                    format!(
                        "{name} not found (looked at {}); build it with `cargo build --workspace`",
                        candidates.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
                    ),
                )),
            }
        };
        let agent_bin = find("agent-bin", flags.agent_bin, "hc-agent")?;
        let bridge_bin = find("bridge-bin", flags.bridge_bin, "hc-bridge")?;
        if needed {
            for p in ["bridge", "host-local"] {
                if !flags.cni_dir.join(p).is_file() {
                    return Err(invalid(
                        "cni-dir",
                        format!(
                            "{} has no {p} plugin: `apt-get install -y containernetworking-plugins`",
                            flags.cni_dir.display()
                        ),
                    ));
                }
            }
        }
        Ok(PodConfig { adds, concurrency, burst_pods, burst_agents, agent_bin, bridge_bin, cni_dir: flags.cni_dir })
    }
}

/// The prefix of every network namespace of this run.
pub fn run_prefix() -> String {
    format!("hcb{}", std::process::id())
}

/// Set at shutdown: no plugin is exec'd any more.
static STOPPING: AtomicBool = AtomicBool::new(false);
/// Plugin processes running now. At shutdown they are waited for (a plugin still running would
/// write into the scratch directory after its removal: host-local keeps its files there).
static IN_FLIGHT: AtomicUsize = AtomicUsize::new(0);
const PLUGIN_DRAIN: Duration = Duration::from_secs(10);

struct InFlight;

impl InFlight {
    fn enter() -> Result<InFlight> {
        IN_FLIGHT.fetch_add(1, Ordering::SeqCst);
        if STOPPING.load(Ordering::SeqCst) {
            IN_FLIGHT.fetch_sub(1, Ordering::SeqCst);
            bail!("the run is shutting down");
        }
        Ok(InFlight)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        IN_FLIGHT.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Stops plugin execs, waits (bounded) for those running, then deletes every network namespace
/// of this run, whatever created it — at shutdown, also after Ctrl-C (registered with the
/// supervisor once per part; the supervisor runs it after killing its children).
pub fn register_cleanup(sup: &Supervisor) {
    sup.on_shutdown(|| {
        STOPPING.store(true, Ordering::SeqCst);
        let deadline = Instant::now() + PLUGIN_DRAIN;
        while IN_FLIGHT.load(Ordering::SeqCst) > 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        let prefix = format!("{}-", run_prefix());
        let names: Vec<String> = std::fs::read_dir("/run/netns")
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|n| n.starts_with(&prefix))
            .collect();
        if let Err(e) = netns_batch("del", &names) {
            eprintln!("hc-bench: removing network namespaces: {e:#}");
        }
    });
}

/// `ip netns add|del` of every name, in one `ip -batch` process (a thousand `ip` processes
/// take seconds).
pub fn netns_batch(op: &str, names: &[String]) -> Result<()> {
    if names.is_empty() {
        return Ok(());
    }
    let script: String = names.iter().map(|n| format!("netns {op} {n}\n")).collect();
    let mut child = Command::new("ip")
        .args(["-force", "-batch", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("running `ip` (apt-get install iproute2)")?;
    child.stdin.take().context("ip's stdin")?.write_all(script.as_bytes())?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!("ip netns {op} of {} namespaces: {}", names.len(), String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}

/// Network namespaces created together and deleted together on drop.
#[derive(Debug)]
pub struct NetnsSet {
    pub names: Vec<String>,
}

impl NetnsSet {
    /// `count` namespaces `hcb<pid>-<tag><i>`.
    pub fn create(tag: &str, count: usize) -> Result<NetnsSet> {
        let prefix = run_prefix();
        let names: Vec<String> = (0..count).map(|i| format!("{prefix}-{tag}{i}")).collect();
        let set = NetnsSet { names };
        netns_batch("add", &set.names)?;
        Ok(set)
    }

    pub fn path(&self, i: usize) -> PathBuf {
        netns_path(&self.names[i])
    }

    pub fn len(&self) -> usize {
        self.names.len()
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }
}

impl Drop for NetnsSet {
    fn drop(&mut self) {
        if let Err(e) = netns_batch("del", &self.names) {
            eprintln!("hc-bench: {e:#}");
        }
    }
}

pub fn netns_path(name: &str) -> PathBuf {
    Path::new("/run/netns").join(name)
}

/// Links in a namespace other than `lo` and bridges: what a DEL must have removed.
pub fn leftover_links(netns: &str) -> Result<Vec<String>> {
    let out = Command::new("ip").args(["-j", "-d", "-n", netns, "link", "show"]).output()?;
    if !out.status.success() {
        bail!("ip -n {netns} link show: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    let links: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout)?;
    Ok(links
        .iter()
        .filter(|l| l["ifname"] != "lo" && l["linkinfo"]["info_kind"] != "bridge")
        .map(|l| l["ifname"].as_str().unwrap_or("?").to_owned())
        .collect())
}

/// One `hc-agent` process on a node namespace of its own, with its socket, state directory and
/// metrics address. Dropping it kills the agent (the namespace goes with its [`NetnsSet`]).
#[derive(Debug)]
pub struct AgentNode {
    pub node: String,
    pub netns: String,
    pub socket: PathBuf,
    pub state_dir: PathBuf,
    pub metrics: SocketAddr,
    pub log: PathBuf,
    proc: ProcId,
    sup: Arc<Supervisor>,
}

impl AgentNode {
    /// Starts an agent for node `node` whose bridge lives in namespace `netns`.
    pub fn start(
        sup: &Arc<Supervisor>,
        bin: &Path,
        allocators: &[String],
        node: &str,
        netns: &str,
    ) -> Result<AgentNode> {
        let dir = sup.path(format!("agent-{node}"));
        std::fs::create_dir_all(&dir)?;
        let socket = dir.join("agent.sock");
        let state_dir = dir.join("state");
        let metrics = SocketAddr::from(([127, 0, 0, 1], free_port()?));
        let log = dir.join("agent.log");
        let mut cmd = Command::new(bin);
        cmd.args(["--node", node])
            .args(["--allocators", &allocators.join(",")])
            // The pools are untagged: one bridge per node, as in the agent's own end-to-end tests.
            .args(["--mode", "per-vlan-bridge", "--bridge", "br0"])
            .arg("--node-netns")
            .arg(netns_path(netns))
            .arg("--socket")
            .arg(&socket)
            .arg("--state-dir")
            .arg(&state_dir)
            .arg("--metrics-addr")
            .arg(metrics.to_string())
            .env("HC_LOG", "warn");
        let proc = sup.spawn(cmd, &log)?;
        Ok(AgentNode {
            node: node.to_owned(),
            netns: netns.to_owned(),
            socket,
            state_dir,
            metrics,
            log,
            proc,
            sup: sup.clone(),
        })
    }

    /// Waits until the agent holds a lease (`/readyz` answers 200) and its socket exists.
    pub async fn wait_ready(&self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.sup.exited(self.proc) {
                bail!("hc-agent {} exited ({status}); last log lines:\n{}", self.node, tail(&self.log, 30));
            }
            if self.socket.exists() && matches!(http_get(self.metrics, "/readyz").await, Ok((200, _))) {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("hc-agent {} not ready within {timeout:?}; last log lines:\n{}", self.node, tail(&self.log, 30));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The agent's Prometheus text.
    pub async fn metrics_text(&self) -> Result<String> {
        match http_get(self.metrics, "/metrics").await? {
            (200, body) => Ok(body),
            (code, _) => bail!("hc-agent {} /metrics answered {code}", self.node),
        }
    }

    /// Attachment records left in the state directory.
    pub fn records(&self) -> usize {
        std::fs::read_dir(&self.state_dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
            .count()
    }

    pub fn log_tail(&self) -> String {
        tail(&self.log, 30)
    }
}

impl Drop for AgentNode {
    fn drop(&mut self) {
        self.sup.kill(self.proc);
    }
}

/// A minimal HTTP/1.0 GET (the agent's metrics endpoint is all it is for): status and body.
pub async fn http_get(addr: SocketAddr, path: &str) -> Result<(u16, String)> {
    let io = async {
        let mut s = tokio::net::TcpStream::connect(addr).await?;
        s.write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes()).await?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await?;
        Ok::<_, std::io::Error>(buf)
    };
    let buf = tokio::time::timeout(Duration::from_secs(5), io).await.context("HTTP GET timed out")??;
    let text = String::from_utf8_lossy(&buf);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head.split_whitespace().nth(1).and_then(|c| c.parse().ok()).context("no HTTP status line")?;
    Ok((status, body.to_owned()))
}

/// Bucket bound (seconds) above which `step_means` counts a call as slow.
pub const SLOW_SECS: &str = "0.05";

/// Mean seconds of each `hc_agent_cni_step_duration_seconds{verb,step}` (and of the whole
/// request, as step `total`) from Prometheus text: `(verb, step, count, mean_ms, slow)`, where
/// `slow` counts the calls above `SLOW_SECS` (from the histogram's buckets; `None` when the
/// text has no bucket with that bound).
pub fn step_means(metrics: &str) -> Vec<(String, String, u64, f64, Option<u64>)> {
    use std::collections::BTreeMap;
    // (sum, count, calls within SLOW_SECS)
    let mut sums: BTreeMap<(String, String), (f64, u64, Option<u64>)> = BTreeMap::new();
    for line in metrics.lines() {
        let (name, rest) = match line.split_once('{') {
            Some(x) => x,
            None => continue,
        };
        let (kind, is_total) = match name {
            "hc_agent_cni_step_duration_seconds_sum" => ("sum", false),
            "hc_agent_cni_step_duration_seconds_count" => ("count", false),
            "hc_agent_cni_step_duration_seconds_bucket" => ("bucket", false),
            "hc_agent_cni_duration_seconds_sum" => ("sum", true),
            "hc_agent_cni_duration_seconds_count" => ("count", true),
            "hc_agent_cni_duration_seconds_bucket" => ("bucket", true),
            _ => continue,
        };
        let Some((labels, value)) = rest.rsplit_once("} ") else { continue };
        let label = |k: &str| {
            labels.split(',').find_map(|kv| kv.strip_prefix(&format!("{k}=\""))).map(|v| v.trim_end_matches('"'))
        };
        if is_total && label("result") != Some("ok") {
            continue;
        }
        if kind == "bucket" && label("le") != Some(SLOW_SECS) {
            continue;
        }
        let Some(verb) = label("verb") else { continue };
        let step = if is_total { "total" } else { label("step").unwrap_or("?") };
        let Ok(v) = value.trim().parse::<f64>() else { continue };
        // The whole request is labelled `add`, its steps `ADD`.
        let e = sums.entry((verb.to_uppercase(), step.to_owned())).or_default();
        match kind {
            "sum" => e.0 += v,
            "count" => e.1 += v as u64,
            _ => *e.2.get_or_insert(0) += v as u64,
        }
    }
    sums.into_iter()
        .filter(|(_, (_, n, _))| *n > 0)
        .map(|((verb, step), (sum, n, fast))| {
            (verb, step, n, sum * 1000.0 / n as f64, fast.map(|f| n.saturating_sub(f)))
        })
        .collect()
}

/// A CNI plugin as a runtime sees it: the binary and the `CNI_PATH` it is given.
#[derive(Debug, Clone)]
pub struct Plugin {
    pub bin: PathBuf,
    pub cni_path: String,
}

/// What one plugin process did, timed from exec to exit.
#[derive(Debug, Clone)]
pub struct Exec {
    pub ok: bool,
    pub stdout: String,
    pub stderr: String,
    pub took: Duration,
    /// When it exited, for the burst's wall time.
    pub ended: Instant,
}

impl Exec {
    /// The first address of an ADD result (`10.1.0.7/24`), if any.
    pub fn address(&self) -> Option<String> {
        let v: serde_json::Value = serde_json::from_str(&self.stdout).ok()?;
        v["ips"][0]["address"].as_str().map(str::to_owned)
    }

    /// The failure in a line: the CNI error message or the exit.
    pub fn failure(&self) -> String {
        let v: serde_json::Value = serde_json::from_str(&self.stdout).unwrap_or_default();
        match v["msg"].as_str() {
            Some(msg) => format!("CNI error {}: {msg}", v["code"]),
            None => format!("stdout {:?}, stderr {:?}", self.stdout.trim(), self.stderr.trim()),
        }
    }
}

impl Plugin {
    /// Execs the plugin once with `CNI_COMMAND=command`, the container id, the pod's namespace
    /// and `config` on stdin; timed from the spawn to the exit (output read).
    pub fn exec(&self, command: &str, container_id: &str, netns: &Path, config: &str) -> Result<Exec> {
        let _running = InFlight::enter()?;
        let started = Instant::now();
        let mut child = Command::new(&self.bin)
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("CNI_COMMAND", command)
            .env("CNI_CONTAINERID", container_id)
            .env("CNI_NETNS", netns)
            .env("CNI_IFNAME", "eth0")
            .env("CNI_PATH", &self.cni_path)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("exec {}", self.bin.display()))?;
        let mut stdin = child.stdin.take().context("plugin stdin")?;
        // A plugin that fails before reading its stdin closes the pipe: not the runner's error.
        let _ = stdin.write_all(config.as_bytes());
        drop(stdin);
        let out = child.wait_with_output()?;
        let ended = Instant::now();
        Ok(Exec {
            ok: out.status.success(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            took: ended - started,
            ended,
        })
    }
}

/// Moves the calling thread into the network namespace at `path`; processes it spawns
/// afterwards start there (a namespace is per thread, and a child inherits its parent thread's).
/// The reference bridge plugin builds its bridge in the namespace it runs in, so its callers sit
/// in the node namespace, as a runtime on that node would.
pub fn enter_netns(path: &Path) -> Result<()> {
    let f = File::open(path).with_context(|| format!("open {}", path.display()))?;
    nix::sched::setns(&f, nix::sched::CloneFlags::CLONE_NEWNET).with_context(|| format!("setns {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn step_means_from_prometheus_text() {
        let text = "\
hc_agent_cni_step_duration_seconds_sum{verb=\"ADD\",step=\"allocate\"} 0.5
hc_agent_cni_step_duration_seconds_count{verb=\"ADD\",step=\"allocate\"} 100
hc_agent_cni_step_duration_seconds_bucket{verb=\"ADD\",step=\"allocate\",le=\"0.025\"} 90
hc_agent_cni_step_duration_seconds_bucket{verb=\"ADD\",step=\"allocate\",le=\"0.05\"} 97
hc_agent_cni_duration_seconds_sum{verb=\"add\",result=\"ok\"} 1.5
hc_agent_cni_duration_seconds_count{verb=\"add\",result=\"ok\"} 100
hc_agent_cni_duration_seconds_sum{verb=\"ADD\",result=\"11\"} 9
hc_agent_cni_duration_seconds_count{verb=\"ADD\",result=\"11\"} 1
";
        let m = step_means(text);
        assert_eq!(m.len(), 2, "{m:?}");
        assert_eq!(m[0], ("ADD".into(), "allocate".into(), 100, 5.0, Some(3)));
        assert_eq!(m[1], ("ADD".into(), "total".into(), 100, 15.0, None), "no bucket line: not measured");
    }

    #[test]
    fn pod_config_defaults_and_limits() {
        let env = |_: &str| None;
        let full = PodConfig::load(PodFlags::default(), false, false, &env).expect("valid");
        assert_eq!((full.adds, full.concurrency, full.burst_pods, full.burst_agents), (200, 10, 1000, 10));
        let smoke = PodConfig::load(PodFlags::default(), true, false, &env).expect("valid");
        assert_eq!((smoke.adds, smoke.burst_pods, smoke.burst_agents), (10, 40, 2));
        let bad = PodFlags { pod_adds: Some(5), pod_concurrency: Some(6), ..PodFlags::default() };
        assert!(PodConfig::load(bad, false, false, &env).is_err());
        let bad = PodFlags { burst_pods: Some(1), burst_agents: Some(2), ..PodFlags::default() };
        assert!(PodConfig::load(bad, false, false, &env).is_err());
    }
}
