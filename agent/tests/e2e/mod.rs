//! End-to-end harness: a real `hc-allocator` (one replica, free ports), a real `hc-agent`
//! process whose bridge lives in a "node" namespace of the test's own (so no test touches the
//! host's interfaces), and the real plugin binaries exec'd the way a runtime does.
//! Everything is removed on drop, also when a test fails. Run as root, after
//! `cargo build --workspace` (the binaries are found beside the test executable's directory).

#![allow(dead_code, clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use hc_api::command::Command as AllocCommand;
use hc_api::types::{Allocation, PoolSpec};
use serde_json::{Value, json};

use crate::alloc::{Cluster, free_port};
use crate::common::{Netns, unique};

/// A binary of this workspace, beside the test executable's directory (`target/debug/`).
pub fn workspace_bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let bin = exe.parent().and_then(|deps| deps.parent()).unwrap().join(name);
    assert!(bin.exists(), "{} is missing: run `cargo build --workspace` first", bin.display());
    bin
}

pub fn agent_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_hc-agent"))
}

/// A pool spec from JSON fields.
pub fn pool(fields: Value) -> PoolSpec {
    serde_json::from_value(fields).unwrap()
}

/// Polls `f` until it returns `Some` or the deadline.
pub async fn eventually<T>(within: Duration, what: &str, mut f: impl AsyncFnMut() -> Option<T>) -> Result<T> {
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = f().await {
            return Ok(v);
        }
        if Instant::now() >= deadline {
            bail!("{what}: not within {within:?}");
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// The agent's settings a test may change.
#[derive(Debug, Clone)]
pub struct AgentOpts {
    pub lease_ttl_ms: u64,
    pub keepalive_ms: u64,
    pub reconcile_ms: u64,
    /// The allocator endpoints; default the cluster's.
    pub allocators: Option<Vec<String>>,
    /// Give the node an uplink `up0` (a veth whose peer `up0sw` stands in for the switch).
    pub uplink: bool,
    /// Repair on kernel link events as well as periodically (the agent's default).
    pub link_events: bool,
}

impl Default for AgentOpts {
    fn default() -> Self {
        AgentOpts {
            lease_ttl_ms: 3000,
            keepalive_ms: 500,
            reconcile_ms: 1000,
            allocators: None,
            uplink: false,
            link_events: true,
        }
    }
}

/// One `hc-agent` process.
pub struct Agent {
    pub child: Option<Child>,
    pub node: String,
    pub socket: PathBuf,
    pub state_dir: PathBuf,
    pub metrics: String,
    pub log: PathBuf,
    pub opts: AgentOpts,
    pub node_netns: PathBuf,
    pub allocators: Vec<String>,
}

impl Agent {
    pub fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log).unwrap();
        let child = Command::new(agent_bin())
            .args(["--node", &self.node])
            .args(["--allocators", &self.allocators.join(",")])
            .args(["--mode", "per-vlan-bridge", "--bridge", "br0"])
            .arg("--node-netns")
            .arg(&self.node_netns)
            .arg("--socket")
            .arg(&self.socket)
            .arg("--state-dir")
            .arg(&self.state_dir)
            .args(["--lease-ttl-ms", &self.opts.lease_ttl_ms.to_string()])
            .args(["--keepalive-ms", &self.opts.keepalive_ms.to_string()])
            .args(["--reconcile-ms", &self.opts.reconcile_ms.to_string()])
            .args(["--metrics-addr", &self.metrics])
            .args(["--link-events", if self.opts.link_events { "true" } else { "false" }])
            .args(if self.opts.uplink { &["--uplink", "up0"][..] } else { &[][..] })
            .env("HC_LOG", "info,hc_agent=debug")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// SIGTERM and wait (a clean stop).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill").args(["-TERM", &c.id().to_string()]).status();
            let _ = c.wait();
        }
    }

    pub fn signal(&self, sig: &str) {
        let _ = Command::new("kill").args([&format!("-{sig}"), &self.pid().to_string()]).status();
    }

    pub async fn get(&self, path: &str) -> Option<(u16, String)> {
        let r = reqwest::get(format!("http://{}{path}", self.metrics)).await.ok()?;
        let status = r.status().as_u16();
        Some((status, r.text().await.ok()?))
    }

    pub async fn ready(&self) -> bool {
        matches!(self.get("/readyz").await, Some((200, _)))
    }

    pub async fn wait_ready(&self) -> Result<()> {
        eventually(Duration::from_secs(20), "agent ready", async || self.ready().await.then_some(()))
            .await
            .inspect_err(|_| self.dump_log())
    }

    /// The value of an unlabelled metric, or of the first line starting with `prefix`.
    pub async fn metric(&self, prefix: &str) -> Option<f64> {
        let (_, text) = self.get("/metrics").await?;
        text.lines().find(|l| l.starts_with(prefix)).and_then(|l| l.rsplit(' ').next()).and_then(|v| v.parse().ok())
    }

    pub fn dump_log(&self) {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        eprintln!("---- hc-agent log (last 60 lines) ----");
        for l in &lines[lines.len().saturating_sub(60)..] {
            eprintln!("{l}");
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill").args(["-CONT", &c.id().to_string()]).status();
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The allocator, a node namespace and an agent on it.
pub struct Env {
    // Drop order: the agent first, then the namespace, then the allocator and the directory.
    pub agent: Agent,
    pub node: Netns,
    pub cluster: Cluster,
    pub dir: tempfile::TempDir,
    pub network: String,
}

impl Env {
    /// Starts the allocator with `pools`, and an agent that is ready.
    pub async fn start(pools: &[PoolSpec]) -> Result<Env> {
        let env = Env::start_with(pools, AgentOpts::default()).await?;
        env.agent.wait_ready().await?;
        Ok(env)
    }

    /// Starts everything without waiting for the agent to be ready.
    pub async fn start_with(pools: &[PoolSpec], opts: AgentOpts) -> Result<Env> {
        let cluster = Cluster::start(1, &[]).await;
        let client = cluster.client();
        for p in pools {
            client.propose(&AllocCommand::CreatePool(p.clone())).await.context("creating a pool")?;
        }
        let dir = tempfile::tempdir()?;
        let node = Netns::new()?;
        if opts.uplink {
            node.ip(&["link", "add", "up0", "type", "veth", "peer", "name", "up0sw"])?;
            node.ip(&["link", "set", "up0sw", "up"])?;
        }
        let allocators = opts.allocators.clone().unwrap_or_else(|| cluster.endpoints());
        let mut agent = Agent {
            child: None,
            node: unique("node"),
            socket: dir.path().join("agent.sock"),
            state_dir: dir.path().join("state"),
            metrics: format!("127.0.0.1:{}", free_port()),
            log: dir.path().join("agent.log"),
            opts,
            node_netns: node.path(),
            allocators,
        };
        agent.spawn();
        let env = Env { agent, node, cluster, dir, network: unique("net") };
        eventually(Duration::from_secs(20), "agent socket", async || env.agent.socket.exists().then_some(())).await?;
        Ok(env)
    }

    /// The hc-bridge configuration for this environment.
    pub fn bridge_config(&self, extra: Value) -> Value {
        let mut c = json!({"cniVersion": "1.0.0", "name": self.network, "type": "hc-bridge",
                           "agentSocket": self.agent.socket});
        merge(&mut c, extra);
        c
    }

    /// The node's allocations, as the allocator sees them.
    pub async fn allocations(&self) -> Vec<Allocation> {
        self.cluster.client().list_allocations_at(0, None, Some(&self.agent.node)).await.unwrap()
    }

    pub fn dump(&self) {
        self.agent.dump_log();
        self.cluster.dump_logs();
    }
}

pub fn merge(base: &mut Value, extra: Value) {
    if let (Some(b), Value::Object(e)) = (base.as_object_mut(), extra) {
        for (k, v) in e {
            b.insert(k, v);
        }
    }
}

/// What a plugin process did.
#[derive(Debug)]
pub struct Exec {
    pub status: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Exec {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {self:?}"))
    }

    pub fn ok(&self) -> &Self {
        assert_eq!(self.status, 0, "plugin failed: {self:?}");
        self
    }

    /// Asserts a CNI error with `code`; returns its message.
    pub fn error(&self, code: u64) -> String {
        assert_ne!(self.status, 0, "expected CNI error {code}: {self:?}");
        let json = self.json();
        assert_eq!(json["code"], code, "{self:?}");
        json["msg"].as_str().unwrap_or_default().to_owned()
    }

    /// The pod address of an ADD result ("10.1.0.7/24").
    pub fn address(&self) -> String {
        self.json()["ips"][0]["address"].as_str().unwrap().to_owned()
    }
}

/// One CNI call, as a runtime makes it.
pub struct Cni<'a> {
    pub plugin: &'a Path,
    pub container_id: &'a str,
    pub netns: Option<&'a Path>,
    pub ifname: &'a str,
    pub args: &'a str,
    pub path: Option<&'a Path>,
}

impl Cni<'_> {
    pub fn exec(&self, command: &str, config: &Value) -> Exec {
        let mut cmd = Command::new(self.plugin);
        cmd.env_clear()
            .env("CNI_COMMAND", command)
            .env("CNI_CONTAINERID", self.container_id)
            .env("CNI_IFNAME", self.ifname)
            .env("CNI_PATH", self.path.map_or_else(|| self.plugin.parent().unwrap().to_path_buf(), Path::to_path_buf));
        if let Some(ns) = self.netns {
            cmd.env("CNI_NETNS", ns);
        }
        if !self.args.is_empty() {
            cmd.env("CNI_ARGS", self.args);
        }
        run_with_stdin(cmd, &config.to_string())
    }
}

pub fn run_with_stdin(mut cmd: Command, stdin: &str) -> Exec {
    use std::io::Write;
    let mut child = cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    Exec {
        status: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// hc-bridge ADD/DEL/CHECK for a pod in `pod`, container id `cid`.
pub fn hc_bridge(env: &Env, cid: &str, pod: &Netns, command: &str, config: Value) -> Exec {
    let plugin = workspace_bin("hc-bridge");
    let path = pod.path();
    Cni { plugin: &plugin, container_id: cid, netns: Some(&path), ifname: "eth0", args: "", path: None }
        .exec(command, &env.bridge_config(config))
}
