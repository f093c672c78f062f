//! The workload: agents, each a task with its own node name, lease, fencing token and
//! keep-alives, allocating for random new owners and releasing what it holds; now and then an
//! agent restarts (re-grants, fencing its old token). Every call is recorded in the
//! [`Recorder`]: a typed refusal is `fail`, a timeout or transport failure is `unknown`.
//!
//! A release whose reply lists nothing is recorded as `unknown`: the client retries inside one
//! call, and a retry after a first attempt that did release finds nothing left. (A typed
//! refusal that follows such a hidden, applied attempt would still be recorded as `fail`; no
//! run so far has shown one.)

use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use hc_api::IpamError;
use hc_api::client::{Client, ClientConfig};
use hc_api::types::{AllocateRequest, AttachmentId, Fence, Lease, Owner, ReleaseTarget};
use hc_checker::{Call, OkResult, Outcome, Recorder};

use crate::rng::Rng;

pub const POOL: &str = "chaos";
pub const POOL_CIDR: &str = "172.31.0.0/20";

#[derive(Debug, Clone)]
pub struct WorkloadConfig {
    pub agents: usize,
    pub lease_ttl: Duration,
    pub client: ClientConfig,
}

/// What the fault driver can do to one agent while it runs.
#[derive(Debug, Default)]
pub struct AgentControl {
    /// Keep-alives are suspended (the lease-lapse fault).
    pub lapsed: AtomicBool,
    /// Re-grant before the next write.
    pub regrant: AtomicBool,
}

#[derive(Debug, Default)]
pub struct Counters {
    pub grants: AtomicU64,
    pub restarts: AtomicU64,
}

/// The running workload; [`Workload::stop`] ends every agent after its current call.
#[derive(Debug)]
pub struct Workload {
    stop: Arc<AtomicBool>,
    pub controls: Vec<Arc<AgentControl>>,
    pub counters: Arc<Counters>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
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

struct Agent {
    name: String,
    client: Client,
    recorder: Arc<Recorder>,
    control: Arc<AgentControl>,
    counters: Arc<Counters>,
    lease: Arc<Mutex<Option<Lease>>>,
    ttl: Duration,
    rng: Rng,
    next_container: u64,
    /// Owners whose allocation was acknowledged and not released.
    held: Vec<Owner>,
    /// Owners whose allocation or release outcome is unknown.
    uncertain: Vec<Owner>,
}

impl Agent {
    fn lease(&self) -> Option<Lease> {
        self.lease.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    fn set_lease(&self, lease: Option<Lease>) {
        *self.lease.lock().unwrap_or_else(PoisonError::into_inner) = lease;
    }

    async fn grant(&mut self) -> bool {
        let inv = self.recorder.invoke(&self.name, Call::Grant { node: self.name.clone() });
        match self.client.grant_lease(&self.name, self.ttl).await {
            Ok(lease) => {
                self.recorder.complete(inv, Outcome::Ok(OkResult::Granted { token: lease.token }));
                self.counters.grants.fetch_add(1, Ordering::Relaxed);
                self.set_lease(Some(lease));
                true
            }
            Err(e) => {
                self.recorder.complete(inv, outcome_of_error(&e));
                false
            }
        }
    }

    async fn allocate(&mut self, lease: &Lease, owner: Owner) {
        let call = Call::Allocate {
            owner: checker_owner(&owner),
            pool: Some(POOL.to_owned()),
            requested: None,
            reservation: None,
            fence: Some(checker_fence(lease)),
        };
        let inv = self.recorder.invoke(&self.name, call);
        let request = AllocateRequest { owner: owner.clone(), pool: Some(POOL.to_owned()), ..Default::default() };
        let fence = Fence { node: lease.node.clone(), token: lease.token };
        match self.client.allocate(Some(fence), request).await {
            Ok(a) => {
                let address: IpAddr = a.allocation.address;
                self.recorder.complete(inv, Outcome::Ok(OkResult::Allocated { address }));
                self.uncertain.retain(|o| o != &owner);
                if !self.held.contains(&owner) {
                    self.held.push(owner);
                }
            }
            Err(e) => {
                let outcome = outcome_of_error(&e);
                if matches!(outcome, Outcome::Unknown { .. }) && !self.uncertain.contains(&owner) {
                    self.uncertain.push(owner);
                }
                self.recorder.complete(inv, outcome);
                if matches!(e, IpamError::StaleToken { .. } | IpamError::NoLease { .. }) {
                    self.control.regrant.store(true, Ordering::Relaxed);
                }
            }
        }
    }

    async fn release(&mut self, lease: &Lease, owner: Owner) {
        let call = Call::Release {
            target: hc_checker::ReleaseTarget::Owner(checker_owner(&owner)),
            fence: Some(checker_fence(lease)),
        };
        let inv = self.recorder.invoke(&self.name, call);
        let fence = Fence { node: lease.node.clone(), token: lease.token };
        let target = ReleaseTarget::Owner(AttachmentId {
            container_id: owner.container_id.clone(),
            interface: owner.interface.clone(),
        });
        match self.client.release(Some(fence), target).await {
            Ok(r) if r.released.is_empty() => {
                self.recorder.complete(inv, Outcome::Unknown { error: Some("released nothing".into()) });
                self.held.retain(|o| o != &owner);
                self.uncertain.retain(|o| o != &owner);
            }
            Ok(r) => {
                let released = r.released.iter().map(|a| a.address).collect();
                self.recorder.complete(inv, Outcome::Ok(OkResult::Released { released }));
                self.held.retain(|o| o != &owner);
                self.uncertain.retain(|o| o != &owner);
            }
            Err(e) => {
                let outcome = outcome_of_error(&e);
                if matches!(outcome, Outcome::Unknown { .. }) {
                    self.held.retain(|o| o != &owner);
                    if !self.uncertain.contains(&owner) {
                        self.uncertain.push(owner);
                    }
                }
                self.recorder.complete(inv, outcome);
                if matches!(e, IpamError::StaleToken { .. } | IpamError::NoLease { .. }) {
                    self.control.regrant.store(true, Ordering::Relaxed);
                }
            }
        }
    }

    fn new_owner(&mut self) -> Owner {
        self.next_container += 1;
        let container_id = format!("{}-c{}", self.name, self.next_container);
        Owner {
            pod: container_id.clone(),
            container_id,
            interface: "eth0".into(),
            namespace: "chaos".into(),
            node: self.name.clone(),
        }
    }

    async fn run(mut self, stop: Arc<AtomicBool>) {
        while !stop.load(Ordering::Relaxed) {
            let lease = match self.lease() {
                Some(l) if !self.control.regrant.load(Ordering::Relaxed) => l,
                _ => {
                    if self.control.lapsed.load(Ordering::Relaxed) {
                        // Cut off: keep writing with the old token (or wait, if none yet).
                        match self.lease() {
                            Some(l) => l,
                            None => {
                                tokio::time::sleep(Duration::from_millis(50)).await;
                                continue;
                            }
                        }
                    } else {
                        self.control.regrant.store(false, Ordering::Relaxed);
                        if !self.grant().await {
                            self.control.regrant.store(true, Ordering::Relaxed);
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                        continue;
                    }
                }
            };
            // An agent restart: a new grant fences every write with the old token.
            if self.rng.chance(0.004) {
                self.counters.restarts.fetch_add(1, Ordering::Relaxed);
                self.control.regrant.store(true, Ordering::Relaxed);
                continue;
            }
            let roll = self.rng.below(100);
            if !self.uncertain.is_empty() && roll < 10 {
                // Resolve an unknown outcome: repeat the ADD (idempotent) or DEL it.
                let i = self.rng.below(self.uncertain.len() as u64) as usize;
                let owner = self.uncertain[i].clone();
                if self.rng.chance(0.5) {
                    self.allocate(&lease, owner).await;
                } else {
                    self.release(&lease, owner).await;
                }
            } else if self.held.len() < 4 || (self.held.len() < 40 && roll < 60) {
                let owner = self.new_owner();
                self.allocate(&lease, owner).await;
            } else {
                let i = self.rng.below(self.held.len() as u64) as usize;
                let owner = self.held[i].clone();
                self.release(&lease, owner).await;
            }
            tokio::time::sleep(Duration::from_millis(self.rng.range(10, 40))).await;
        }
    }
}

/// Renews `lease` every quarter TTL unless the agent is lapsed; a refusal asks for a re-grant.
async fn keep_alive(
    client: Arc<Client>,
    lease: Arc<Mutex<Option<Lease>>>,
    control: Arc<AgentControl>,
    ttl: Duration,
    stop: Arc<AtomicBool>,
) {
    while !stop.load(Ordering::Relaxed) {
        tokio::time::sleep(ttl / 4).await;
        if control.lapsed.load(Ordering::Relaxed) {
            continue;
        }
        let Some(current) = lease.lock().unwrap_or_else(PoisonError::into_inner).clone() else { continue };
        if let Err(IpamError::StaleToken { .. } | IpamError::NoLease { .. }) = client.keep_alive(&current).await {
            control.regrant.store(true, Ordering::Relaxed);
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
        let stop = Arc::new(AtomicBool::new(false));
        let counters = Arc::new(Counters::default());
        let mut controls = Vec::new();
        let mut tasks = Vec::new();
        for a in 0..config.agents {
            let name = format!("node-{tag}-{a}");
            let control = Arc::new(AgentControl::default());
            let lease = Arc::new(Mutex::new(None));
            // Each agent enters through a different replica, as agents spread over a cluster would.
            let mut eps = endpoints.to_vec();
            let n = eps.len();
            eps.rotate_left(a % n);
            let ka_client = Arc::new(Client::new(eps.clone(), config.client.clone())?);
            let agent = Agent {
                name,
                client: Client::new(eps, config.client.clone())?,
                recorder: Arc::clone(&recorder),
                control: Arc::clone(&control),
                counters: Arc::clone(&counters),
                lease: Arc::clone(&lease),
                ttl: config.lease_ttl,
                rng: Rng::derive(seed, 1000 + a as u64),
                next_container: 0,
                held: Vec::new(),
                uncertain: Vec::new(),
            };
            control.regrant.store(true, Ordering::Relaxed);
            tasks.push(tokio::spawn(agent.run(Arc::clone(&stop))));
            tasks.push(tokio::spawn(keep_alive(
                ka_client,
                lease,
                Arc::clone(&control),
                config.lease_ttl,
                Arc::clone(&stop),
            )));
            controls.push(control);
        }
        Ok(Workload { stop, controls, counters, tasks })
    }

    pub async fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            let _ = t.await;
        }
    }
}
