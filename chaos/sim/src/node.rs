//! [`Live`]: one running replica — its openraft instance over the memory storage, its applied
//! [`State`], and the allocator's request handling around them, mirrored from `hc-allocator`
//! (which the simulator cannot link: it brings RocksDB and gRPC):
//! - a write is `client_write` of `Request { time_ms: the proposer's clock, command }`, through
//!   the allocator's own writer (`hc-batcher`, batching on: concurrent allocations and releases
//!   share an entry); "not leader" is a definite refusal with a hint, a discarded entry or a
//!   stopped Raft an unknown outcome (`replica.rs`);
//! - a grant is recorded by the leader's lease keeper, which takes keep-alives in memory and
//!   proposes `ExpireLease` once a whole TTL passed without one; a new leader first gives every
//!   active lease a fresh TTL (`lease_keeper.rs`).
//!
//! Everything here is volatile: a crash drops the [`Live`] and with it the keeper's deadlines.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use hc_allocator_state::{Command, Output, State};
use hc_api::IpamError;
use hc_api::types::{Lease, LeaseState};
use hc_checker::{Call, OkResult, Outcome};
use openraft::errors::{ClientWriteError, RaftError};
use openraft::type_config::async_runtime::WatchReceiver;
use tokio::time::Instant;

use crate::history::SimRecorder;
use crate::raft::Raft;

/// A client's request to a replica.
// One per call, moved once: boxing the command would cost an allocation and save nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub enum ApiRequest {
    Propose(Command),
    KeepAlive { node: String, lease_id: u64, token: u64 },
}

#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub enum ApiReply {
    Output(Output),
    /// A keep-alive was taken.
    Renewed,
}

/// Why a replica did not answer with a result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiError {
    /// The state machine (or the lease keeper) refused it: definite, nothing changed.
    Refused(IpamError),
    /// Not the leader: definite, nothing was proposed.
    NotLeader { leader: Option<u64> },
    /// The proposal may or may not commit.
    Unknown(String),
}

pub struct Live {
    pub id: u64,
    pub raft: Raft,
    /// The applied state, shared with the state machine store.
    pub state: Arc<Mutex<State>>,
    keeper: Mutex<Keeper>,
    recorder: Arc<SimRecorder>,
    batcher: hc_batcher::Batcher<crate::raft::TypeConfig, crate::raft::MemStateMachine>,
}

impl std::fmt::Debug for Live {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Live").field("id", &self.id).finish_non_exhaustive()
    }
}

/// The leader's lease deadlines (mirrors `hc-allocator`'s `LeaseKeeper`).
#[derive(Debug, Default)]
struct Keeper {
    /// node → (lease id, deadline).
    deadlines: BTreeMap<String, (u64, Instant)>,
    /// The term in which this replica last rebuilt its deadlines as leader.
    leader_term: Option<u64>,
}

impl Live {
    /// Starts the replica's batcher, so it must be called inside the simulation's runtime.
    pub fn new(id: u64, raft: Raft, state: Arc<Mutex<State>>, recorder: Arc<SimRecorder>) -> Self {
        let (clock, counted) = (recorder.clock(), recorder.clone());
        let hooks = hc_batcher::Hooks {
            now_ms: Arc::new(move || clock.wall_ms()),
            wrote_entry: Arc::new(move |commands| counted.wrote_entry(commands)),
        };
        let batcher = hc_batcher::Batcher::start(raft.clone(), hooks, true);
        Live { id, raft, state, keeper: Mutex::new(Keeper::default()), recorder, batcher }
    }

    fn keeper(&self) -> MutexGuard<'_, Keeper> {
        self.keeper.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn read<T>(&self, f: impl FnOnce(&State) -> T) -> T {
        f(&self.state.lock().unwrap_or_else(PoisonError::into_inner))
    }

    pub fn is_leader(&self) -> bool {
        self.raft.metrics().borrow_watched().current_leader == Some(self.id)
    }

    pub async fn handle(&self, req: ApiRequest) -> Result<ApiReply, ApiError> {
        match req {
            ApiRequest::Propose(command) => {
                let granted = matches!(command, Command::GrantLease { .. });
                let out = self.propose(command).await?;
                if let (true, Output::Lease(lease)) = (granted, &out) {
                    self.granted(lease);
                }
                Ok(ApiReply::Output(out))
            }
            ApiRequest::KeepAlive { node, lease_id, token } => {
                self.keep_alive(&node, lease_id, token).map(|_| ApiReply::Renewed)
            }
        }
    }

    /// Proposes `command` with this replica's clock.
    pub async fn propose(&self, command: Command) -> Result<Output, ApiError> {
        match self.batcher.write(command).await {
            Ok((response, _)) => response.map_err(ApiError::Refused),
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
                Err(ApiError::NotLeader { leader: f.leader_id })
            }
            Err(e) => Err(ApiError::Unknown(e.to_string())),
        }
    }

    fn granted(&self, lease: &Lease) {
        let deadline = Instant::now() + Duration::from_millis(lease.ttl_ms);
        self.keeper().deadlines.insert(lease.node.clone(), (lease.lease_id, deadline));
    }

    fn keep_alive(&self, node: &str, lease_id: u64, token: u64) -> Result<u64, ApiError> {
        if !self.is_leader() {
            let leader = self.raft.metrics().borrow_watched().current_leader;
            return Err(ApiError::NotLeader { leader });
        }
        let stale =
            |current| ApiError::Refused(IpamError::StaleToken { node: node.to_owned(), presented: token, current });
        let lease = self
            .read(|s| s.lease(node))
            .ok_or_else(|| ApiError::Refused(IpamError::NoLease { node: node.to_owned() }))?;
        if lease.state != LeaseState::Active || lease.lease_id != lease_id || lease.token != token {
            return Err(stale(lease.token));
        }
        let mut k = self.keeper();
        if k.deadlines.get(node).is_some_and(|(id, _)| *id != lease_id) {
            return Err(stale(lease.token));
        }
        k.deadlines.insert(node.to_owned(), (lease_id, Instant::now() + Duration::from_millis(lease.ttl_ms)));
        Ok(lease.ttl_ms)
    }

    /// One pass of the expiry loop: on a new leadership refresh every TTL, then propose the
    /// expiry of every lease whose deadline passed. Each expiry is recorded as an `expire` call.
    pub async fn tick(&self) {
        let (leader, term) = {
            let m = self.raft.metrics().borrow_watched().clone();
            (m.current_leader, m.current_term)
        };
        if leader != Some(self.id) {
            let mut k = self.keeper();
            k.leader_term = None;
            k.deadlines.clear();
            return;
        }
        let now = Instant::now();
        let active: Vec<Lease> =
            self.read(|s| s.leases()).into_iter().filter(|l| l.state == LeaseState::Active).collect();
        let expired: Vec<(String, u64)> = {
            let mut k = self.keeper();
            if k.leader_term != Some(term) {
                k.leader_term = Some(term);
                k.deadlines.clear();
                for l in &active {
                    k.deadlines.insert(l.node.clone(), (l.lease_id, now + Duration::from_millis(l.ttl_ms)));
                }
                self.recorder.note(format!("replica {} leads term {term}: refreshed {} leases", self.id, active.len()));
            }
            let current: BTreeMap<&str, &Lease> = active.iter().map(|l| (l.node.as_str(), l)).collect();
            k.deadlines.retain(|node, (id, _)| current.get(node.as_str()).is_some_and(|l| l.lease_id == *id));
            for l in &active {
                k.deadlines.entry(l.node.clone()).or_insert((l.lease_id, now + Duration::from_millis(l.ttl_ms)));
            }
            k.deadlines.iter().filter(|(_, (_, d))| *d <= now).map(|(n, (id, _))| (n.clone(), *id)).collect()
        };
        for (node, lease_id) in expired {
            let inv = self.recorder.invoke(&format!("keeper-{}", self.id), Call::Expire { node: node.clone() });
            match self.propose(Command::ExpireLease { node: node.clone(), lease_id }).await {
                Ok(_) => {
                    self.recorder.complete(inv, Outcome::Ok(OkResult::Done));
                    self.keeper().deadlines.remove(&node);
                }
                Err(ApiError::NotLeader { .. }) => {
                    self.recorder.complete(inv, Outcome::Fail { error: Some("not leader".into()) });
                }
                Err(e) => self.recorder.complete(inv, Outcome::Unknown { error: Some(format!("{e:?}")) }),
            }
        }
    }
}
