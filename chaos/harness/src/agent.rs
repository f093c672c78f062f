//! One chaos agent, run as its own process (`hc-chaos-agent`): a node with its own lease,
//! fencing token and keep-alives, allocating for random new owners — now and then at an
//! explicit address, for a StatefulSet member with a reservation, or in a pool created during
//! the run — and releasing what it holds. It keeps a record of its attachments in a file, as
//! `hc-agent` does, and after a restart reconciles the allocator with it.
//!
//! It reports every operation on stdout as JSON lines ([`AgentEvent`]), timed on the system's
//! monotonic clock: the invocation is written before the request is sent, the completion after
//! the reply arrived, so the harness's history bounds each operation correctly even when the
//! process is killed mid-call (a missing completion becomes `unknown`). The harness steers it
//! through stdin ([`AgentCommand`]).
//!
//! A release whose reply lists nothing is recorded as `unknown`: the client retries inside one
//! call, and a retry after a first attempt that did release finds nothing left.

use std::io::Write;
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use hc_api::IpamError;
use hc_api::client::{Client, ClientConfig};
use hc_api::command::{Command, Output};
use hc_api::types::{AllocateRequest, AttachmentId, Fence, Lease, Owner, ReleaseTarget, pod_key};
use hc_checker::{Call, OkResult, Operation, Outcome};
use serde::{Deserialize, Serialize};
use tokio::io::AsyncBufReadExt;

use crate::rng::Rng;

/// The pool every schedule starts with.
pub const POOL: &str = "chaos";
pub const POOL_CIDR: &str = "172.31.0.0/20";
/// StatefulSet members `sts-0` … with a reservation each, in the last /24 of [`POOL_CIDR`].
pub const RESERVED: u8 = 16;
/// The namespace of every pod the workload makes.
pub const NAMESPACE: &str = "chaos";

/// The reserved address of `sts-{ordinal}`.
pub fn reserved_address(ordinal: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(172, 31, 15, 100 + ordinal))
}

/// The reservation key of `sts-{ordinal}` (the pod key hc-agent sends).
pub fn reservation_key(ordinal: u8) -> String {
    pod_key(NAMESPACE, &format!("sts-{ordinal}"))
}

/// Nanoseconds on `CLOCK_MONOTONIC`, which every process on the machine shares.
pub fn monotonic_ns() -> u64 {
    match nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC) {
        Ok(t) => (t.tv_sec() as u64).saturating_mul(1_000_000_000).saturating_add(t.tv_nsec() as u64),
        Err(_) => 0,
    }
}

/// What the agent reports, one JSON object per line on stdout.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AgentEvent {
    /// About to send the request.
    Invoke { id: u64, at_ns: u64, call: Call },
    /// The reply arrived: the whole operation, its times on the monotonic clock.
    Complete { op: Operation },
}

/// What the harness tells the agent, one JSON object per line on stdin.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AgentCommand {
    /// Stop keep-alives and keep writing with the old token (cut off from the allocator).
    Lapse,
    /// Renew again: re-grant before the next write.
    Heal,
    /// A pool now exists to allocate in.
    Pool { name: String },
    /// Finish the current call and exit.
    Stop,
}

/// The agent's command line.
#[derive(Debug, Clone, clap::Parser)]
#[command(name = "hc-chaos-agent", about = "One chaos workload agent (started by hc-chaos)")]
pub struct AgentArgs {
    /// The node name (the lease is per node).
    #[arg(long)]
    pub node: String,
    /// Allocator gRPC endpoints, comma-separated, in the order to try.
    #[arg(long, value_delimiter = ',')]
    pub endpoints: Vec<String>,
    #[arg(long)]
    pub seed: u64,
    #[arg(long)]
    pub lease_ttl_ms: u64,
    #[arg(long)]
    pub deadline_ms: u64,
    #[arg(long)]
    pub attempt_timeout_ms: u64,
    /// The attachment record (created if missing).
    #[arg(long)]
    pub record: PathBuf,
    /// Pools besides [`POOL`] that exist already.
    #[arg(long, value_delimiter = ',')]
    pub pools: Vec<String>,
}

/// Writes events to stdout; a write failure (the harness is gone) ends the process.
struct Events {
    process: String,
    next_id: AtomicU64,
}

/// An operation sent and not answered yet.
struct Pending {
    id: u64,
    at_ns: u64,
    call: Call,
}

impl Events {
    fn emit(&self, event: &AgentEvent) {
        let mut line = serde_json::to_vec(event).unwrap_or_default();
        line.push(b'\n');
        let mut out = std::io::stdout().lock();
        if out.write_all(&line).and_then(|()| out.flush()).is_err() {
            std::process::exit(1);
        }
    }

    fn invoke(&self, call: Call) -> Pending {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let at_ns = monotonic_ns();
        self.emit(&AgentEvent::Invoke { id, at_ns, call: call.clone() });
        Pending { id, at_ns, call }
    }

    fn complete(&self, pending: Pending, outcome: Outcome) {
        let Pending { id, at_ns, call } = pending;
        let op = Operation {
            id,
            process: self.process.clone(),
            invoke_ns: at_ns,
            complete_ns: monotonic_ns(),
            call,
            outcome,
        };
        self.emit(&AgentEvent::Complete { op });
    }
}

/// What the harness changed, read by the agent's loop.
#[derive(Debug, Default)]
struct Control {
    lapsed: AtomicBool,
    regrant: AtomicBool,
    stop: AtomicBool,
    /// Pools created during the run.
    pools: Mutex<Vec<String>>,
}

/// The attachment record: owners held or in doubt, written after every change (atomically),
/// read after a restart.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Record {
    held: Vec<Owner>,
    uncertain: Vec<Owner>,
    next_container: u64,
}

fn outcome_of_error(e: &IpamError) -> Outcome {
    match e {
        IpamError::Unavailable { .. } | IpamError::NotLeader { .. } => Outcome::Unknown { error: Some(e.to_string()) },
        _ => Outcome::Fail { error: Some(e.to_string()) },
    }
}

fn checker_owner(o: &Owner) -> hc_checker::Owner {
    hc_checker::Owner { container_id: o.container_id.clone(), interface: o.interface.clone(), node: o.node.clone() }
}

fn checker_fence(lease: &Lease) -> hc_checker::Fence {
    hc_checker::Fence { node: lease.node.clone(), token: lease.token }
}

fn is_fenced(e: &IpamError) -> bool {
    matches!(e, IpamError::StaleToken { .. } | IpamError::NoLease { .. })
}

struct Agent {
    args: AgentArgs,
    client: Client,
    events: Events,
    control: Arc<Control>,
    lease: Arc<Mutex<Option<Lease>>>,
    rng: Rng,
    record: Record,
    /// The record must be reconciled with the allocator after the next grant.
    reconcile: bool,
}

impl Agent {
    fn lease(&self) -> Option<Lease> {
        self.lease.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    fn save(&self) {
        let tmp = self.args.record.with_extension("tmp");
        let written = serde_json::to_vec(&self.record)
            .map_err(std::io::Error::other)
            .and_then(|bytes| std::fs::write(&tmp, bytes))
            .and_then(|()| std::fs::rename(&tmp, &self.args.record));
        if let Err(e) = written {
            eprintln!("hc-chaos-agent {}: cannot write the record: {e}", self.args.node);
        }
    }

    fn forget(&mut self, owner: &Owner) {
        self.record.held.retain(|o| o != owner);
        self.record.uncertain.retain(|o| o != owner);
    }

    fn doubt(&mut self, owner: Owner) {
        self.record.held.retain(|o| o != &owner);
        if !self.record.uncertain.contains(&owner) {
            self.record.uncertain.push(owner);
        }
    }

    async fn grant(&mut self) -> bool {
        let id = self.events.invoke(Call::Grant { node: self.args.node.clone() });
        match self.client.grant_lease(&self.args.node, Duration::from_millis(self.args.lease_ttl_ms)).await {
            Ok(lease) => {
                self.events.complete(id, Outcome::Ok(OkResult::Granted { token: lease.token }));
                *self.lease.lock().unwrap_or_else(PoisonError::into_inner) = Some(lease);
                true
            }
            Err(e) => {
                self.events.complete(id, outcome_of_error(&e));
                false
            }
        }
    }

    /// After a restart: the allocator keeps what the record names and releases the rest of
    /// the node's allocations (made by the previous incarnation after its last record write).
    async fn reconcile(&mut self, lease: &Lease) {
        let valid: Vec<&Owner> = self.record.held.iter().chain(&self.record.uncertain).collect();
        let call = Call::Reconcile {
            fence: checker_fence(lease),
            valid: valid.iter().map(|o| checker_owner(o).attachment()).collect(),
        };
        let command = Command::Reconcile {
            fence: Fence { node: lease.node.clone(), token: lease.token },
            valid: valid
                .iter()
                .map(|o| AttachmentId { container_id: o.container_id.clone(), interface: o.interface.clone() })
                .collect(),
        };
        let id = self.events.invoke(call);
        match self.client.propose(&command).await {
            Ok(Output::Reconciled { released, .. }) => {
                self.events.complete(id, Outcome::Ok(OkResult::Released { released }));
                self.reconcile = false;
            }
            Ok(other) => self.events.complete(id, Outcome::Unknown { error: Some(format!("unexpected {other:?}")) }),
            Err(e) => {
                self.events.complete(id, outcome_of_error(&e));
                if is_fenced(&e) {
                    self.control.regrant.store(true, Ordering::Relaxed);
                }
            }
        }
    }

    async fn allocate(&mut self, lease: &Lease, owner: Owner, how: Ask) {
        let (pool, requested, reservation) = match &how {
            Ask::Next { pool } => (Some(pool.clone()), None, None),
            Ask::Address(a) => (Some(POOL.to_owned()), Some(*a), None),
            Ask::Reserved(key) => (None, None, Some(key.clone())),
        };
        let call = Call::Allocate {
            owner: checker_owner(&owner),
            pool: pool.clone(),
            requested,
            reservation: reservation.clone(),
            fence: Some(checker_fence(lease)),
        };
        let request = AllocateRequest {
            owner: owner.clone(),
            pool,
            address: requested,
            reservation_keys: reservation.into_iter().collect(),
            ..Default::default()
        };
        let fence = Fence { node: lease.node.clone(), token: lease.token };
        // In doubt until the reply says otherwise: a kill mid-call must leave it in the record.
        self.doubt(owner.clone());
        self.save();
        let id = self.events.invoke(call);
        match self.client.allocate(Some(fence), request).await {
            Ok(a) => {
                self.events.complete(id, Outcome::Ok(OkResult::Allocated { address: a.allocation.address }));
                self.forget(&owner);
                self.record.held.push(owner);
            }
            Err(e) => {
                let outcome = outcome_of_error(&e);
                if !matches!(outcome, Outcome::Unknown { .. }) {
                    self.forget(&owner);
                }
                self.events.complete(id, outcome);
                if is_fenced(&e) {
                    self.control.regrant.store(true, Ordering::Relaxed);
                }
            }
        }
        self.save();
    }

    async fn release(&mut self, lease: &Lease, owner: Owner) {
        let call = Call::Release {
            target: hc_checker::ReleaseTarget::Owner(checker_owner(&owner)),
            fence: Some(checker_fence(lease)),
        };
        let fence = Fence { node: lease.node.clone(), token: lease.token };
        let target = ReleaseTarget::Owner(AttachmentId {
            container_id: owner.container_id.clone(),
            interface: owner.interface.clone(),
        });
        let id = self.events.invoke(call);
        match self.client.release(Some(fence), target).await {
            Ok(r) if r.released.is_empty() => {
                self.events.complete(id, Outcome::Unknown { error: Some("released nothing".into()) });
                self.forget(&owner);
            }
            Ok(r) => {
                let released = r.released.iter().map(|a| a.address).collect();
                self.events.complete(id, Outcome::Ok(OkResult::Released { released }));
                self.forget(&owner);
            }
            Err(e) => {
                let outcome = outcome_of_error(&e);
                if matches!(outcome, Outcome::Unknown { .. }) {
                    self.doubt(owner);
                }
                self.events.complete(id, outcome);
                if is_fenced(&e) {
                    self.control.regrant.store(true, Ordering::Relaxed);
                }
            }
        }
        self.save();
    }

    fn new_owner(&mut self, pod: Option<String>) -> Owner {
        self.record.next_container += 1;
        let container_id = format!("{}-c{}", self.args.node, self.record.next_container);
        Owner {
            pod: pod.unwrap_or_else(|| container_id.clone()),
            container_id,
            interface: "eth0".into(),
            namespace: NAMESPACE.into(),
            node: self.args.node.clone(),
        }
    }

    /// How the next new owner asks: mostly the next free address of the first pool or of a
    /// pool made during the run; sometimes an explicit address or a StatefulSet reservation.
    fn next_ask(&mut self) -> (Ask, Option<String>) {
        let roll = self.rng.below(100);
        if roll < 8 {
            let ordinal = self.rng.below(u64::from(RESERVED)) as u8;
            return (Ask::Reserved(reservation_key(ordinal)), Some(format!("sts-{ordinal}")));
        }
        if roll < 18 {
            // Anywhere below the reserved /24: free, held, or cooling down.
            let n = self.rng.range(1, 15 * 256 - 1) as u32;
            let base = u32::from(Ipv4Addr::new(172, 31, 0, 0));
            return (Ask::Address(IpAddr::V4(Ipv4Addr::from(base + n))), None);
        }
        let extra = self.control.pools.lock().unwrap_or_else(PoisonError::into_inner).clone();
        if roll < 40 && !extra.is_empty() {
            let pool = extra[self.rng.below(extra.len() as u64) as usize].clone();
            return (Ask::Next { pool }, None);
        }
        (Ask::Next { pool: POOL.to_owned() }, None)
    }

    async fn run(mut self) {
        while !self.control.stop.load(Ordering::Relaxed) {
            let lease = match self.lease() {
                Some(l) if !self.control.regrant.load(Ordering::Relaxed) => l,
                Some(l) if self.control.lapsed.load(Ordering::Relaxed) => l, // cut off: the old token
                _ if self.control.lapsed.load(Ordering::Relaxed) => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
                _ => {
                    self.control.regrant.store(false, Ordering::Relaxed);
                    if !self.grant().await {
                        self.control.regrant.store(true, Ordering::Relaxed);
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    continue;
                }
            };
            if self.reconcile {
                self.reconcile(&lease).await;
                continue;
            }
            let roll = self.rng.below(100);
            let (held, uncertain) = (self.record.held.len(), self.record.uncertain.len());
            if uncertain > 0 && roll < 10 {
                // Resolve an unknown outcome: DEL it (ADD cannot be repeated for an owner whose
                // request is not remembered exactly).
                let owner = self.record.uncertain[self.rng.below(uncertain as u64) as usize].clone();
                self.release(&lease, owner).await;
            } else if held < 4 || (held < 40 && roll < 60) {
                let (ask, pod) = self.next_ask();
                let owner = self.new_owner(pod);
                self.allocate(&lease, owner, ask).await;
            } else {
                let owner = self.record.held[self.rng.below(held as u64) as usize].clone();
                self.release(&lease, owner).await;
            }
            tokio::time::sleep(Duration::from_millis(self.rng.range(10, 40))).await;
        }
    }
}

enum Ask {
    Next { pool: String },
    Address(IpAddr),
    Reserved(String),
}

/// Renews the lease every quarter TTL unless lapsed; a refusal asks for a re-grant.
async fn keep_alive(client: Client, lease: Arc<Mutex<Option<Lease>>>, control: Arc<Control>, ttl: Duration) {
    while !control.stop.load(Ordering::Relaxed) {
        tokio::time::sleep(ttl / 4).await;
        if control.lapsed.load(Ordering::Relaxed) {
            continue;
        }
        let Some(current) = lease.lock().unwrap_or_else(PoisonError::into_inner).clone() else { continue };
        if let Err(e) = client.keep_alive(&current).await
            && is_fenced(&e)
        {
            control.regrant.store(true, Ordering::Relaxed);
        }
    }
}

/// Applies the harness's commands until stdin closes (the harness is gone: stop).
async fn read_commands(control: Arc<Control>) {
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        match serde_json::from_str::<AgentCommand>(&line) {
            Ok(AgentCommand::Lapse) => control.lapsed.store(true, Ordering::Relaxed),
            Ok(AgentCommand::Heal) => {
                control.lapsed.store(false, Ordering::Relaxed);
                control.regrant.store(true, Ordering::Relaxed);
            }
            Ok(AgentCommand::Pool { name }) => control.pools.lock().unwrap_or_else(PoisonError::into_inner).push(name),
            Ok(AgentCommand::Stop) => break,
            Err(e) => eprintln!("hc-chaos-agent: ignoring {line:?}: {e}"),
        }
    }
    control.stop.store(true, Ordering::Relaxed);
}

/// The agent process: runs until told to stop or stdin closes.
pub async fn run(args: AgentArgs) -> anyhow::Result<()> {
    let config = ClientConfig {
        deadline: Duration::from_millis(args.deadline_ms),
        attempt_timeout: Duration::from_millis(args.attempt_timeout_ms),
    };
    let client = Client::new(args.endpoints.clone(), config.clone())?;
    let ka_client = Client::new(args.endpoints.clone(), config)?;
    let record: Record = match std::fs::read(&args.record) {
        Ok(bytes) => serde_json::from_slice(&bytes)?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Record::default(),
        Err(e) => return Err(e.into()),
    };
    // A record from an earlier incarnation: the allocator may hold more than it names.
    let reconcile = args.record.exists();
    let control = Arc::new(Control { pools: Mutex::new(args.pools.clone()), ..Control::default() });
    let lease = Arc::new(Mutex::new(None));
    let ttl = Duration::from_millis(args.lease_ttl_ms);
    // Each incarnation draws differently, yet reproducibly from the seed and its record.
    let rng = Rng::derive(args.seed, record.next_container);
    let events = Events { process: args.node.clone(), next_id: AtomicU64::new(1) };
    let agent = Agent {
        args,
        client,
        events,
        control: Arc::clone(&control),
        lease: Arc::clone(&lease),
        rng,
        record,
        reconcile,
    };
    tokio::spawn(read_commands(Arc::clone(&control)));
    tokio::spawn(keep_alive(ka_client, lease, Arc::clone(&control), ttl));
    agent.run().await;
    Ok(())
}
