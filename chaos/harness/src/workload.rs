//! The workload: several agents, each its own `hc-chaos-agent` process (see `agent.rs`) with
//! its own node name, lease, fencing token, keep-alives and attachment record. The harness
//! reads each agent's reported operations into the [`Recorder`], steers agents through their
//! stdin (a lapsed lease, new pools), and restarts them at random with `kill -9`: the new
//! incarnation re-grants (fencing the old token), reconciles its record, and goes on. An
//! operation the killed process never completed is recorded as `unknown`.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use anyhow::Context;
use hc_api::client::ClientConfig;
use hc_checker::{Invocation, OkResult, Outcome, Recorder};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
use tokio::process::{Child, ChildStdin, Command};

use crate::agent::{AgentCommand, AgentEvent, monotonic_ns};
use crate::cleanup;
use crate::rng::Rng;

pub use crate::agent::{POOL, POOL_CIDR};

#[derive(Debug, Clone)]
pub struct WorkloadConfig {
    pub agents: usize,
    pub lease_ttl: Duration,
    pub client: ClientConfig,
    /// The `hc-chaos-agent` binary.
    pub agent_bin: PathBuf,
    /// Where the agents' records and logs go.
    pub dir: PathBuf,
    /// Mean time between two restarts of one agent; `None`: never.
    pub restart_every: Option<Duration>,
}

#[derive(Debug, Default)]
pub struct Counters {
    pub grants: AtomicU64,
    pub restarts: AtomicU64,
}

/// Converts the agents' monotonic times to the recorder's clock.
#[derive(Debug, Clone, Copy)]
struct Clock {
    /// `CLOCK_MONOTONIC` at the recorder's origin.
    origin_ns: u64,
}

impl Clock {
    fn of(recorder: &Recorder) -> Clock {
        let before = recorder.now_ns();
        let mono = monotonic_ns();
        let after = recorder.now_ns();
        Clock { origin_ns: mono.saturating_sub(before / 2 + after / 2) }
    }

    fn to_recorder(self, mono_ns: u64) -> u64 {
        mono_ns.saturating_sub(self.origin_ns)
    }
}

/// One running incarnation of an agent.
struct Running {
    pid: Option<u32>,
    child: Child,
    stdin: ChildStdin,
    reader: tokio::task::JoinHandle<()>,
}

/// One agent: its node name and the process currently playing it.
struct Slot {
    node: String,
    /// The replicas in the order this agent tries them.
    endpoints: Vec<String>,
    seed: u64,
    lapsed: AtomicBool,
    incarnation: AtomicU64,
    running: tokio::sync::Mutex<Option<Running>>,
}

struct Shared {
    config: WorkloadConfig,
    recorder: Arc<Recorder>,
    clock: Clock,
    counters: Arc<Counters>,
    /// Pools created during the run (a restarted agent learns them on its command line).
    pools: Mutex<Vec<String>>,
}

/// The running workload; [`Workload::stop`] ends every agent after its current call.
pub struct Workload {
    shared: Arc<Shared>,
    slots: Vec<Arc<Slot>>,
    stop: Arc<AtomicBool>,
    restarters: Mutex<Vec<tokio::task::JoinHandle<()>>>,
    pub counters: Arc<Counters>,
}

impl std::fmt::Debug for Workload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Workload").field("agents", &self.slots.len()).finish()
    }
}

impl Shared {
    /// Starts the next incarnation of `slot`.
    fn spawn(&self, slot: &Slot) -> anyhow::Result<Running> {
        let incarnation = slot.incarnation.fetch_add(1, Ordering::Relaxed) + 1;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.config.dir.join(format!("{}.log", slot.node)))?;
        let pools = self.pools.lock().unwrap_or_else(PoisonError::into_inner).join(",");
        let mut command = Command::new(&self.config.agent_bin);
        command
            .args(["--node", &slot.node])
            .args(["--endpoints", &slot.endpoints.join(",")])
            .args(["--seed", &slot.seed.to_string()])
            .args(["--lease-ttl-ms", &self.config.lease_ttl.as_millis().to_string()])
            .args(["--deadline-ms", &self.config.client.deadline.as_millis().to_string()])
            .args(["--attempt-timeout-ms", &self.config.client.attempt_timeout.as_millis().to_string()])
            .arg("--record")
            .arg(self.config.dir.join(format!("{}.record.json", slot.node)))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(log)
            .kill_on_drop(true);
        if !pools.is_empty() {
            command.args(["--pools", &pools]);
        }
        let mut child = command.spawn().with_context(|| format!("starting {}", self.config.agent_bin.display()))?;
        let pid = child.id();
        if let Some(pid) = pid {
            cleanup::add_pid(pid);
        }
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            anyhow::bail!("the agent's pipes are missing");
        };
        let process = format!("{}/{incarnation}", slot.node);
        let reader = tokio::spawn(read_events(
            stdout,
            Arc::clone(&self.recorder),
            self.clock,
            process,
            Arc::clone(&self.counters),
        ));
        Ok(Running { pid, child, stdin, reader })
    }
}

/// Reads one incarnation's events into the recorder until its stdout closes; what it invoked
/// and never completed is then `unknown` (it may still take effect).
async fn read_events(
    stdout: tokio::process::ChildStdout,
    recorder: Arc<Recorder>,
    clock: Clock,
    process: String,
    counters: Arc<Counters>,
) {
    let mut pending: HashMap<u64, Invocation> = HashMap::new();
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        match serde_json::from_str::<AgentEvent>(&line) {
            Ok(AgentEvent::Invoke { id, at_ns, call }) => {
                pending.insert(id, recorder.invoke_at(process.clone(), call, clock.to_recorder(at_ns)));
            }
            Ok(AgentEvent::Complete { op }) => {
                if matches!(op.outcome, Outcome::Ok(OkResult::Granted { .. })) {
                    counters.grants.fetch_add(1, Ordering::Relaxed);
                }
                if let Some(inv) = pending.remove(&op.id) {
                    recorder.complete_at(inv, op.outcome, clock.to_recorder(op.complete_ns));
                }
            }
            // A torn last line from a killed process: its operation stays pending.
            Err(e) => eprintln!("hc-chaos: {process}: unreadable event {line:?}: {e}"),
        }
    }
    let mut left: Vec<(u64, Invocation)> = pending.into_iter().collect();
    left.sort_by_key(|(id, _)| *id);
    for (_, inv) in left {
        recorder.complete(inv, Outcome::Unknown { error: Some("the agent process died".into()) });
    }
}

async fn send(running: &mut Running, command: &AgentCommand) {
    let mut line = serde_json::to_vec(command).unwrap_or_default();
    line.push(b'\n');
    // A process that just died cannot be told anything; its next incarnation starts afresh.
    let _ = running.stdin.write_all(&line).await;
    let _ = running.stdin.flush().await;
}

/// Ends an incarnation: `kill -9`, then waits for its events to be read.
async fn kill(mut running: Running) {
    let _ = running.child.kill().await;
    if let Some(pid) = running.pid {
        cleanup::remove_pid(pid);
    }
    let _ = running.reader.await;
}

/// Restarts the slot's agent now and then (never while its lease is lapsed on purpose).
async fn restart_now_and_then(
    shared: Arc<Shared>,
    slot: Arc<Slot>,
    every: Duration,
    mut rng: Rng,
    stop: Arc<AtomicBool>,
) {
    let mean = every.as_millis() as u64;
    loop {
        let wait = Duration::from_millis(rng.range(mean / 2, mean * 3 / 2 + 1));
        let step = Duration::from_millis(100);
        let mut waited = Duration::ZERO;
        while waited < wait {
            if stop.load(Ordering::Relaxed) {
                return;
            }
            tokio::time::sleep(step).await;
            waited += step;
        }
        if slot.lapsed.load(Ordering::Relaxed) {
            continue;
        }
        let mut running = slot.running.lock().await;
        if stop.load(Ordering::Relaxed) {
            return;
        }
        if let Some(old) = running.take() {
            kill(old).await;
        }
        match shared.spawn(&slot) {
            Ok(r) => {
                *running = Some(r);
                shared.counters.restarts.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => eprintln!("hc-chaos: cannot restart agent {}: {e:#}", slot.node),
        }
    }
}

impl Workload {
    pub fn start(
        endpoints: &[String],
        config: &WorkloadConfig,
        recorder: Arc<Recorder>,
        seed: u64,
        tag: u64,
    ) -> anyhow::Result<Workload> {
        std::fs::create_dir_all(&config.dir)?;
        let counters = Arc::new(Counters::default());
        let shared = Arc::new(Shared {
            config: config.clone(),
            clock: Clock::of(&recorder),
            recorder,
            counters: Arc::clone(&counters),
            pools: Mutex::new(Vec::new()),
        });
        let stop = Arc::new(AtomicBool::new(false));
        let mut slots = Vec::new();
        let mut restarters = Vec::new();
        for a in 0..config.agents {
            // Each agent enters through a different replica, as agents spread over a cluster would.
            let mut eps = endpoints.to_vec();
            let n = eps.len();
            eps.rotate_left(a % n);
            let slot = Arc::new(Slot {
                node: format!("node-{tag}-{a}"),
                endpoints: eps,
                seed: Rng::derive(seed, 1000 + a as u64).next_u64(),
                lapsed: AtomicBool::new(false),
                incarnation: AtomicU64::new(0),
                running: tokio::sync::Mutex::new(None),
            });
            let first = shared.spawn(&slot)?;
            *slot.running.try_lock().map_err(|_| anyhow::anyhow!("agent slot busy"))? = Some(first);
            if let Some(every) = config.restart_every {
                restarters.push(tokio::spawn(restart_now_and_then(
                    Arc::clone(&shared),
                    Arc::clone(&slot),
                    every,
                    Rng::derive(seed, 2000 + a as u64),
                    Arc::clone(&stop),
                )));
            }
            slots.push(slot);
        }
        Ok(Workload { shared, slots, stop, restarters: Mutex::new(restarters), counters })
    }

    pub fn agents(&self) -> usize {
        self.slots.len()
    }

    /// Agent `i` stops its keep-alives and keeps writing with its old token.
    pub async fn lapse(&self, i: usize) {
        let slot = &self.slots[i];
        slot.lapsed.store(true, Ordering::Relaxed);
        if let Some(r) = slot.running.lock().await.as_mut() {
            send(r, &AgentCommand::Lapse).await;
        }
    }

    /// Agent `i` renews again (re-granting first).
    pub async fn heal(&self, i: usize) {
        let slot = &self.slots[i];
        if let Some(r) = slot.running.lock().await.as_mut() {
            send(r, &AgentCommand::Heal).await;
        }
        slot.lapsed.store(false, Ordering::Relaxed);
    }

    /// Every agent may allocate in `pool` from now on.
    pub async fn add_pool(&self, pool: &str) {
        self.shared.pools.lock().unwrap_or_else(PoisonError::into_inner).push(pool.to_owned());
        for slot in &self.slots {
            if let Some(r) = slot.running.lock().await.as_mut() {
                send(r, &AgentCommand::Pool { name: pool.to_owned() }).await;
            }
        }
    }

    /// Stops the restarts, then every agent after its current call (killing one that does
    /// not stop within 10 s).
    pub async fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
        let restarters = std::mem::take(&mut *self.restarters.lock().unwrap_or_else(PoisonError::into_inner));
        for t in restarters {
            let _ = t.await;
        }
        for slot in &self.slots {
            let Some(mut r) = slot.running.lock().await.take() else { continue };
            send(&mut r, &AgentCommand::Stop).await;
            match tokio::time::timeout(Duration::from_secs(10), r.child.wait()).await {
                Ok(_) => {
                    if let Some(pid) = r.pid {
                        cleanup::remove_pid(pid);
                    }
                    let _ = r.reader.await;
                }
                Err(_) => kill(r).await,
            }
        }
    }
}
