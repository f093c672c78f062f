//! The workload: agents (one per simulated node) and an operator, all calling the replicas
//! through the simulated network while faults happen, every call recorded for hc-checker.
//!
//! - An agent takes a lease (grant, then reconcile with the attachments it knows), keeps it
//!   alive every quarter TTL, allocates for new owners from any pool (by search, by explicit
//!   address, by reservation key), releases what it holds, and repeats calls whose outcome it
//!   does not know. Now and then it restarts: it takes a new grant, and its previous
//!   incarnation lives on as a zombie that writes with the old token (every such write must be
//!   refused).
//! - The operator creates pools, puts and deletes reservations, releases addresses, and now and
//!   then declares a node gone.
//!
//! A client sends each call to the replica it believes leads; on "not leader" it follows the
//! hint, on a timeout or a refused connection it tries another replica, a few times — except
//! that the operator's address releases and node-gone calls are not sent again once an attempt
//! may have applied (as `hcctl` does): they are not idempotent. The outcome
//! recorded: the reply; a typed refusal is `fail` — unless an earlier attempt of the same call
//! timed out (it may still apply), then `unknown`, as is every call given up after a timeout.
//! A release-like call (release, reconcile, node gone) that succeeds after such an attempt is
//! `unknown` too: the retry lists only what was left.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use hc_allocator_state::{Command, Output};
use hc_api::IpamError;
use hc_api::types::{AllocateRequest, AttachmentId, Fence, Lease, Owner, PoolSpec, ReleaseTarget, Reservation};
use hc_checker::{Call, OkResult, Outcome};
use tokio::time::Instant;

use crate::cluster::spawn;
use crate::history::SimRecorder;
use crate::network::Net;
use crate::node::{ApiError, ApiReply, ApiRequest};
use crate::rng::Rng;

/// Lease TTL given to agents; keep-alives go every quarter of it.
pub const LEASE_TTL_MS: u64 = 800;
/// How long a client waits for one attempt.
const CALL_TIMEOUT: Duration = Duration::from_millis(400);
/// How long a replica's reply may take to reach a client that may still be waiting; a reply
/// later than the client's timeout is dropped anyway.
const SERVER_PATIENCE: Duration = Duration::from_secs(5);
/// Attempts per call before giving up.
const ATTEMPTS: u32 = 4;
/// The first pool, made before the agents start.
const FIRST_POOL: &str = "p0";
/// Reservation keys, each always for the same address of the first pool.
const RESERVATIONS: u8 = 4;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// What the workload's parts share.
pub struct World {
    pub net: Arc<Net>,
    pub recorder: Arc<SimRecorder>,
    pub replicas: Vec<u64>,
    /// Pools known to exist (created with an ok reply).
    pools: Mutex<Vec<String>>,
}

impl World {
    pub fn new(net: Arc<Net>, recorder: Arc<SimRecorder>, replicas: Vec<u64>) -> Self {
        World { net, recorder, replicas, pools: Mutex::new(Vec::new()) }
    }
}

/// One call's end, as the client saw it.
struct Called {
    reply: Result<ApiReply, Failure>,
    /// Some attempt timed out: it may have applied, or may still apply.
    uncertain: bool,
}

enum Failure {
    Refused(IpamError),
    GaveUp(String),
}

impl Called {
    /// The outcome to record. `ok` turns the reply into the checker's result (`None`: the reply
    /// does not fit the call); `lists` marks release-like calls.
    fn outcome(&self, lists: bool, ok: impl FnOnce(&Output) -> Option<OkResult>) -> Outcome {
        let unknown = |why: &str| Outcome::Unknown { error: Some(why.to_owned()) };
        match &self.reply {
            Ok(ApiReply::Output(out)) if lists && self.uncertain => {
                let _ = out;
                unknown("ok after an attempt that timed out: the listing may be partial")
            }
            Ok(ApiReply::Output(out)) => ok(out).map_or_else(|| unknown("unexpected reply"), Outcome::Ok),
            Ok(ApiReply::Renewed) => unknown("unexpected reply"),
            Err(Failure::Refused(e)) if self.uncertain => unknown(&format!("{e} (after an attempt that timed out)")),
            Err(Failure::Refused(e)) => Outcome::Fail { error: Some(e.to_string()) },
            Err(Failure::GaveUp(why)) if self.uncertain => unknown(why),
            Err(Failure::GaveUp(why)) => Outcome::Fail { error: Some(why.clone()) },
        }
    }

    fn refusal(&self) -> Option<&IpamError> {
        match &self.reply {
            Err(Failure::Refused(e)) => Some(e),
            _ => None,
        }
    }
}

/// A client of the cluster, following leader hints.
struct Client {
    world: Arc<World>,
    leader: u64,
    rng: Rng,
}

impl Client {
    fn new(world: Arc<World>, rng: Rng) -> Self {
        let leader = world.replicas[0];
        Client { world, leader, rng }
    }

    fn other_replica(&mut self) -> u64 {
        let others: Vec<u64> = self.world.replicas.iter().copied().filter(|r| *r != self.leader).collect();
        self.rng.pick(&others).copied().unwrap_or(self.leader)
    }

    async fn call(&mut self, req: ApiRequest) -> Called {
        self.call_with(req, true).await
    }

    /// `retry_lost: false` for calls that are not idempotent (releasing an address, a node gone):
    /// once an attempt may have applied, a retry could apply again to whoever holds the address
    /// by then. Like `hcctl`, such a call ends as unknown at its first lost attempt.
    async fn call_with(&mut self, req: ApiRequest, retry_lost: bool) -> Called {
        let mut uncertain = false;
        let mut last = String::new();
        for attempt in 0..ATTEMPTS {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_millis(self.rng.range(10, 60))).await;
            }
            let target = self.leader;
            let req = req.clone();
            // The replica works on the request in its own task: a client that gives up does not
            // cancel a proposal, which may still commit (that is what makes a timeout unknown).
            let (tx, rx) = tokio::sync::oneshot::channel();
            let net = self.world.net.clone();
            spawn(async move {
                let reply =
                    net.carry(None, target, SERVER_PATIENCE, |live| async move { Ok(live.handle(req).await) }).await;
                let _ = tx.send(reply);
            });
            let reply = match tokio::time::timeout(CALL_TIMEOUT, rx).await {
                Ok(Ok(reply)) => reply,
                _ => Err(None),
            };
            match reply {
                Ok(Ok(r)) => return Called { reply: Ok(r), uncertain },
                Ok(Err(ApiError::Refused(e))) => return Called { reply: Err(Failure::Refused(e)), uncertain },
                Ok(Err(ApiError::NotLeader { leader })) => {
                    last = format!("replica {target} is not the leader");
                    self.leader = match leader {
                        Some(l) if l != target => l,
                        _ => self.other_replica(),
                    };
                }
                Ok(Err(ApiError::Unknown(why))) => {
                    uncertain = true;
                    last = why;
                    self.leader = self.other_replica();
                    if !retry_lost {
                        break;
                    }
                }
                Err(Some(refused)) => {
                    last = refused;
                    self.leader = self.other_replica();
                }
                Err(None) => {
                    uncertain = true;
                    last = format!("no reply from replica {target} within {CALL_TIMEOUT:?}");
                    self.leader = self.other_replica();
                    if !retry_lost {
                        break;
                    }
                }
            }
        }
        Called { reply: Err(Failure::GaveUp(last)), uncertain }
    }

    async fn propose(&mut self, command: Command) -> Called {
        self.call(ApiRequest::Propose(command)).await
    }
}

fn checker_owner(o: &Owner) -> hc_checker::Owner {
    hc_checker::Owner { container_id: o.container_id.clone(), interface: o.interface.clone(), node: o.node.clone() }
}

fn checker_fence(f: &Fence) -> hc_checker::Fence {
    hc_checker::Fence { node: f.node.clone(), token: f.token }
}

fn allocated(out: &Output) -> Option<OkResult> {
    match out {
        Output::Allocated(a) => Some(OkResult::Allocated { address: a.allocation.address }),
        _ => None,
    }
}

fn released(out: &Output) -> Option<OkResult> {
    match out {
        Output::Released(r) => Some(OkResult::Released { released: r.released.iter().map(|a| a.address).collect() }),
        Output::Reconciled { released, .. } => Some(OkResult::Released { released: released.clone() }),
        _ => None,
    }
}

fn reserved_address(i: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(10, 0, 0, 200 + i))
}

fn pool_spec(name: &str, cidr: &str, cooldown_secs: u64) -> Option<PoolSpec> {
    Some(PoolSpec {
        name: name.to_owned(),
        cidr: cidr.parse().ok()?,
        gateway: None,
        vlan: None,
        routes: Vec::new(),
        dns: Default::default(),
        exclude: Vec::new(),
        selector: Default::default(),
        default: false,
        reuse_cooldown_secs: cooldown_secs,
    })
}

/// What the fault schedule can do to an agent.
#[derive(Debug, Default)]
pub struct AgentControl {
    /// Keep-alives are suspended (the lease lapses; the agent keeps writing with its token).
    pub lapsed: AtomicBool,
}

struct Agent {
    name: String,
    world: Arc<World>,
    client: Client,
    rng: Rng,
    control: Arc<AgentControl>,
    /// Shared with the keep-alive task.
    lease: Arc<Mutex<Option<Lease>>>,
    /// Set when a write or keep-alive found the token stale, or the agent restarts.
    regrant: Arc<AtomicBool>,
    next_container: u64,
    held: Vec<Owner>,
    uncertain: Vec<Owner>,
}

impl Agent {
    fn fence(lease: &Lease) -> Fence {
        Fence { node: lease.node.clone(), token: lease.token }
    }

    fn new_owner(&mut self, tag: &str) -> Owner {
        self.next_container += 1;
        let container_id = format!("{}-{tag}{}", self.name, self.next_container);
        Owner {
            pod: container_id.clone(),
            container_id,
            interface: "eth0".into(),
            namespace: "sim".into(),
            node: self.name.clone(),
        }
    }

    async fn grant(&mut self) -> Option<Lease> {
        let inv = self.world.recorder.invoke(&self.name, Call::Grant { node: self.name.clone() });
        let called = self.client.propose(Command::GrantLease { node: self.name.clone(), ttl_ms: LEASE_TTL_MS }).await;
        let lease = match &called.reply {
            Ok(ApiReply::Output(Output::Lease(l))) => Some(l.clone()),
            _ => None,
        };
        let token = |out: &Output| match out {
            Output::Lease(l) => Some(OkResult::Granted { token: l.token }),
            _ => None,
        };
        self.world.recorder.complete(inv, called.outcome(false, token));
        lease
    }

    async fn reconcile(&mut self, lease: &Lease) {
        let valid: Vec<AttachmentId> = self.held.iter().chain(&self.uncertain).map(Owner::attachment).collect();
        let fence = Self::fence(lease);
        let call = Call::Reconcile {
            fence: checker_fence(&fence),
            valid: valid
                .iter()
                .map(|a| hc_checker::Attachment {
                    container_id: a.container_id.clone(),
                    interface: a.interface.clone(),
                })
                .collect(),
        };
        let inv = self.world.recorder.invoke(&self.name, call);
        let called = self.client.propose(Command::Reconcile { fence, valid }).await;
        self.world.recorder.complete(inv, called.outcome(true, released));
        self.note_refusal(&called);
    }

    fn note_refusal(&self, called: &Called) {
        if matches!(called.refusal(), Some(IpamError::StaleToken { .. } | IpamError::NoLease { .. })) {
            self.regrant.store(true, Ordering::SeqCst);
        }
    }

    async fn allocate(&mut self, fence: &Fence, request: AllocateRequest, reservation: Option<String>) {
        let owner = request.owner.clone();
        let call = Call::Allocate {
            owner: checker_owner(&owner),
            pool: request.pool.clone(),
            requested: request.address,
            reservation,
            fence: Some(checker_fence(fence)),
        };
        let inv = self.world.recorder.invoke(&self.name, call);
        let called = self.client.propose(Command::Allocate { fence: Some(fence.clone()), request }).await;
        let outcome = called.outcome(false, allocated);
        match &outcome {
            Outcome::Ok(_) => {
                self.uncertain.retain(|o| *o != owner);
                if !self.held.contains(&owner) {
                    self.held.push(owner);
                }
            }
            Outcome::Unknown { .. } => {
                if !self.uncertain.contains(&owner) && !self.held.contains(&owner) {
                    self.uncertain.push(owner);
                }
            }
            Outcome::Fail { .. } => {}
        }
        self.world.recorder.complete(inv, outcome);
        self.note_refusal(&called);
    }

    async fn release(&mut self, fence: &Fence, owner: Owner) {
        let call = Call::Release {
            target: hc_checker::ReleaseTarget::Owner(checker_owner(&owner)),
            fence: Some(checker_fence(fence)),
        };
        let inv = self.world.recorder.invoke(&self.name, call);
        let called = self
            .client
            .propose(Command::Release { fence: Some(fence.clone()), target: ReleaseTarget::Owner(owner.attachment()) })
            .await;
        let outcome = called.outcome(true, released);
        match &outcome {
            Outcome::Ok(_) => {
                self.held.retain(|o| *o != owner);
                self.uncertain.retain(|o| *o != owner);
            }
            Outcome::Unknown { .. } => {
                self.held.retain(|o| *o != owner);
                if !self.uncertain.contains(&owner) {
                    self.uncertain.push(owner);
                }
            }
            Outcome::Fail { .. } => {}
        }
        self.world.recorder.complete(inv, outcome);
        self.note_refusal(&called);
    }

    /// One workload step with the current lease.
    async fn step(&mut self, lease: &Lease) {
        let fence = Self::fence(lease);
        let pools = lock(&self.world.pools).clone();
        let roll = self.rng.below(100);
        if !self.uncertain.is_empty() && roll < 10 {
            // Settle an unknown outcome: repeat the ADD (idempotent) or DEL it.
            let i = self.rng.below(self.uncertain.len() as u64) as usize;
            let owner = self.uncertain[i].clone();
            if self.rng.below(2) == 0 {
                let request = AllocateRequest { owner, pool: Some(FIRST_POOL.into()), ..Default::default() };
                self.allocate(&fence, request, None).await;
            } else {
                self.release(&fence, owner).await;
            }
        } else if roll < 18 {
            // An explicit address of the first pool.
            let address = IpAddr::V4(Ipv4Addr::new(10, 0, 0, self.rng.range(2, 40) as u8));
            let owner = self.new_owner("x");
            let request =
                AllocateRequest { owner, pool: Some(FIRST_POOL.into()), address: Some(address), ..Default::default() };
            self.allocate(&fence, request, None).await;
        } else if roll < 26 {
            // By reservation key (falls back to a search in the pool when the key is not there).
            let key = format!("sim/res-{}", self.rng.below(u64::from(RESERVATIONS)));
            let owner = self.new_owner("r");
            let request = AllocateRequest {
                owner,
                pool: Some(FIRST_POOL.into()),
                reservation_keys: vec![key.clone()],
                ..Default::default()
            };
            self.allocate(&fence, request, Some(key)).await;
        } else if self.held.len() < 3 || (self.held.len() < 12 && roll < 65) {
            let pool = self.rng.pick(&pools).cloned().unwrap_or_else(|| FIRST_POOL.to_owned());
            let owner = self.new_owner("c");
            let request = AllocateRequest { owner, pool: Some(pool), ..Default::default() };
            self.allocate(&fence, request, None).await;
        } else {
            let i = self.rng.below(self.held.len() as u64) as usize;
            let owner = self.held[i].clone();
            self.release(&fence, owner).await;
        }
    }

    async fn run(mut self, until: Instant) {
        let mut zombie_next = false;
        while Instant::now() < until {
            let current = lock(&self.lease).clone();
            let lapsed = self.control.lapsed.load(Ordering::SeqCst);
            let lease = match current {
                Some(l) if lapsed || !self.regrant.load(Ordering::SeqCst) => l,
                _ if lapsed => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
                old => {
                    self.regrant.store(false, Ordering::SeqCst);
                    match self.grant().await {
                        Some(new) => {
                            *lock(&self.lease) = Some(new.clone());
                            if let Some(old) = old.filter(|_| zombie_next) {
                                // The previous incarnation did not die: it writes on with its token.
                                let zombie = Zombie::new(&self, old);
                                spawn(zombie.run());
                            }
                            zombie_next = false;
                            self.reconcile(&new).await;
                        }
                        None => {
                            self.regrant.store(true, Ordering::SeqCst);
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                    }
                    continue;
                }
            };
            if self.rng.per_mille(12) {
                // The agent restarts: a new grant fences every write with the old token.
                self.regrant.store(true, Ordering::SeqCst);
                zombie_next = true;
                continue;
            }
            self.step(&lease).await;
            tokio::time::sleep(Duration::from_millis(self.rng.range(5, 30))).await;
        }
    }
}

/// An agent's previous incarnation, still writing with the token of its old lease after the
/// new incarnation's grant completed. Every write of it must be refused.
struct Zombie {
    name: String,
    world: Arc<World>,
    client: Client,
    rng: Rng,
    lease: Lease,
    prefix: String,
}

impl Zombie {
    fn new(agent: &Agent, lease: Lease) -> Self {
        let mut rng = Rng::derive(agent.rng.clone().next_u64(), lease.token);
        let client = Client::new(agent.world.clone(), Rng::derive(rng.next_u64(), 1));
        Zombie {
            name: format!("{}-zombie{}", agent.name, lease.token),
            world: agent.world.clone(),
            client,
            rng,
            prefix: format!("{}-z{}-", agent.name, lease.token),
            lease,
        }
    }

    async fn run(mut self) {
        let fence = Fence { node: self.lease.node.clone(), token: self.lease.token };
        for n in 0..self.rng.range(1, 3) {
            tokio::time::sleep(Duration::from_millis(self.rng.range(1, 40))).await;
            let owner = Owner {
                container_id: format!("{}{n}", self.prefix),
                interface: "eth0".into(),
                namespace: "sim".into(),
                pod: format!("{}{n}", self.prefix),
                node: self.lease.node.clone(),
            };
            let call = Call::Allocate {
                owner: checker_owner(&owner),
                pool: Some(FIRST_POOL.into()),
                requested: None,
                reservation: None,
                fence: Some(checker_fence(&fence)),
            };
            let inv = self.world.recorder.invoke(&self.name, call);
            let request = AllocateRequest { owner, pool: Some(FIRST_POOL.into()), ..Default::default() };
            let called = self.client.propose(Command::Allocate { fence: Some(fence.clone()), request }).await;
            self.world.recorder.complete(inv, called.outcome(false, allocated));
        }
    }
}

/// Renews the agent's lease every quarter TTL unless lapsed; a refusal asks for a re-grant.
async fn keep_alive(
    mut client: Client,
    lease: Arc<Mutex<Option<Lease>>>,
    control: Arc<AgentControl>,
    regrant: Arc<AtomicBool>,
    until: Instant,
) {
    while Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(LEASE_TTL_MS / 4)).await;
        if control.lapsed.load(Ordering::SeqCst) {
            continue;
        }
        let Some(l) = lock(&lease).clone() else { continue };
        let called =
            client.call(ApiRequest::KeepAlive { node: l.node.clone(), lease_id: l.lease_id, token: l.token }).await;
        if matches!(called.refusal(), Some(IpamError::StaleToken { .. } | IpamError::NoLease { .. })) {
            regrant.store(true, Ordering::SeqCst);
        }
    }
}

/// The operator: pools, reservations, releases by address, node gone.
struct Operator {
    world: Arc<World>,
    client: Client,
    rng: Rng,
    agents: Vec<String>,
    next_pool: u8,
}

impl Operator {
    const NAME: &'static str = "operator";

    async fn create_pool(&mut self, spec: PoolSpec) -> bool {
        let name = spec.name.clone();
        let called = self.client.propose(Command::CreatePool(spec)).await;
        let ok = called.reply.is_ok() || matches!(called.refusal(), Some(IpamError::PoolExists { .. }));
        self.world.recorder.note(format!("operator create_pool {name}: {}", if ok { "ok" } else { "not made" }));
        if ok {
            lock(&self.world.pools).push(name);
        }
        ok
    }

    async fn put_reservation(&mut self, i: u8) {
        let r = Reservation { key: format!("sim/res-{i}"), pool: FIRST_POOL.into(), address: reserved_address(i) };
        let called = self.client.propose(Command::PutReservation(r.clone())).await;
        self.world.recorder.note(format!("operator put_reservation {} {}: {}", r.key, r.address, summary(&called)));
    }

    /// Before the agents start: the first pool and its reservations, retried until made.
    async fn setup(&mut self, until: Instant) -> bool {
        let Some(spec) = pool_spec(FIRST_POOL, "10.0.0.0/24", 0) else { return false };
        let spec = PoolSpec { gateway: Some(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1))), ..spec };
        while !self.create_pool(spec.clone()).await {
            if Instant::now() >= until {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        for i in 0..RESERVATIONS {
            self.put_reservation(i).await;
        }
        true
    }

    async fn run(mut self, until: Instant) {
        while Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(self.rng.range(60, 250))).await;
            let roll = self.rng.below(100);
            if roll < 12 && self.next_pool <= 4 {
                let k = self.next_pool;
                self.next_pool += 1;
                if let Some(spec) = pool_spec(&format!("p{k}"), &format!("10.{k}.0.0/28"), self.rng.below(2)) {
                    self.create_pool(spec).await;
                }
            } else if roll < 40 {
                let i = self.rng.below(u64::from(RESERVATIONS)) as u8;
                self.put_reservation(i).await;
            } else if roll < 55 {
                let key = format!("sim/res-{}", self.rng.below(u64::from(RESERVATIONS)));
                let called = self.client.propose(Command::DeleteReservation { key: key.clone() }).await;
                self.world.recorder.note(format!("operator delete_reservation {key}: {}", summary(&called)));
            } else if roll < 85 {
                let address = IpAddr::V4(Ipv4Addr::new(10, 0, 0, self.rng.range(2, 40) as u8));
                let call = Call::Release { target: hc_checker::ReleaseTarget::Address(address), fence: None };
                let inv = self.world.recorder.invoke(Self::NAME, call);
                let command = Command::Release { fence: None, target: ReleaseTarget::Address(address) };
                let called = self.client.call_with(ApiRequest::Propose(command), false).await;
                self.world.recorder.complete(inv, called.outcome(true, released));
            } else if roll < 88 {
                let Some(node) = self.rng.pick(&self.agents).cloned() else { continue };
                let inv = self.world.recorder.invoke(Self::NAME, Call::NodeGone { node: node.clone() });
                let called = self.client.call_with(ApiRequest::Propose(Command::NodeGone { node }), false).await;
                self.world.recorder.complete(inv, called.outcome(true, released));
            }
        }
    }
}

fn summary(called: &Called) -> String {
    match &called.reply {
        Ok(_) => "ok".into(),
        Err(Failure::Refused(e)) => format!("refused: {e}"),
        Err(Failure::GaveUp(why)) => format!("gave up: {why}"),
    }
}

/// The running workload.
pub struct Workload {
    pub controls: Vec<Arc<AgentControl>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Workload {
    /// Makes the first pool, then starts `agents` agents and the operator, all until `until`.
    /// `None` when the first pool could not be made before `until`.
    pub async fn start(world: Arc<World>, seed: u64, agents: usize, until: Instant) -> Option<Workload> {
        let names: Vec<String> = (0..agents).map(|a| format!("node-{a}")).collect();
        let mut operator = Operator {
            world: world.clone(),
            client: Client::new(world.clone(), Rng::derive(seed, 50)),
            rng: Rng::derive(seed, 51),
            agents: names.clone(),
            next_pool: 1,
        };
        if !operator.setup(until).await {
            return None;
        }
        let mut tasks = vec![spawn(operator.run(until))];
        let mut controls = Vec::new();
        for (a, name) in names.into_iter().enumerate() {
            let salt = 100 + 10 * a as u64;
            let control = Arc::new(AgentControl::default());
            let lease = Arc::new(Mutex::new(None));
            let regrant = Arc::new(AtomicBool::new(true));
            let mut client = Client::new(world.clone(), Rng::derive(seed, salt));
            client.leader = world.replicas[a % world.replicas.len()];
            let agent = Agent {
                name,
                world: world.clone(),
                client,
                rng: Rng::derive(seed, salt + 1),
                control: control.clone(),
                lease: lease.clone(),
                regrant: regrant.clone(),
                next_container: 0,
                held: Vec::new(),
                uncertain: Vec::new(),
            };
            let ka = Client::new(world.clone(), Rng::derive(seed, salt + 2));
            tasks.push(spawn(agent.run(until)));
            tasks.push(spawn(keep_alive(ka, lease, control.clone(), regrant, until)));
            controls.push(control);
        }
        Some(Workload { controls, tasks })
    }

    /// Waits for every agent and the operator to finish their current call and stop.
    pub async fn join(self) {
        for t in self.tasks {
            let _ = t.await;
        }
    }
}
