//! [`Replica`]: one allocator replica as the servers see it — propose a command (forwarded to
//! the leader when this replica is not it), read the applied state, report cluster status.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hc_allocator_state::{Command, Output, State};
use hc_api::IpamError;
use hc_api::proto::ipam_client::IpamClient;
use hc_api::proto::{KeepAliveRequest, ProposeRequest};
use openraft::errors::{ClientWriteError, RaftError};
use openraft::type_config::async_runtime::WatchReceiver;
use tonic::transport::{Channel, Endpoint};

use crate::metrics as m;
use crate::raft::{NodeInfo, Raft, StateMachineStore, TypeConfig};

/// How long a forwarded call to the leader may take.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a requested snapshot may take (a million allocations take about a second).
const SNAPSHOT_WAIT: Duration = Duration::from_secs(60);
/// How long a snapshot request waits before triggering again (see [`Replica::snapshot_now`]).
const SNAPSHOT_RETRIGGER: Duration = Duration::from_millis(200);
/// How long a write waits for a leader to be elected before answering `NotLeader`.
const LEADER_WAIT: Duration = Duration::from_secs(3);

pub struct Replica {
    pub id: u64,
    pub raft: Raft,
    /// The applied state machine, shared with the Raft state-machine store. Readers hold the
    /// lock only to copy out what they answer.
    state: Arc<RwLock<State>>,
    /// gRPC channels to other replicas (by gRPC address), for forwarding to the leader.
    /// Guards only the map; channels are cheap to clone and used outside the lock.
    peers: std::sync::Mutex<HashMap<String, Channel>>,
    /// The state machine's "build the next snapshot at once" flag (see [`Self::snapshot_now`]).
    snapshot_now: Arc<AtomicBool>,
    /// Writes every proposal through Raft (allocations and releases several to an entry, unless
    /// `--batch-proposals false`).
    batcher: hc_batcher::Batcher<TypeConfig, StateMachineStore>,
}

pub use hc_api::types::ClusterStatus;

pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

impl Replica {
    /// `snapshot_now` is the state machine store's flag
    /// ([`crate::raft::StateMachineStore::snapshot_now_flag`]). `batching`: concurrent
    /// allocations and releases may share an entry. Starts the batcher, so it must be called on
    /// the runtime that serves the replica.
    pub fn new(id: u64, raft: Raft, state: Arc<RwLock<State>>, snapshot_now: Arc<AtomicBool>, batching: bool) -> Self {
        let hooks = hc_batcher::Hooks {
            now_ms: Arc::new(now_ms),
            wrote_entry: Arc::new(|commands| metrics::histogram!(m::BATCH_COMMANDS).record(commands as f64)),
        };
        let batcher = hc_batcher::Batcher::start(raft.clone(), hooks, batching);
        Replica { id, raft, state, peers: Default::default(), snapshot_now, batcher }
    }

    /// Builds a snapshot of this replica's state now (and compacts its log), however short the
    /// log since the last one, and waits until it covers everything applied when asked.
    pub async fn snapshot_now(&self) -> Result<ClusterStatus, IpamError> {
        let applied = self.raft.metrics().borrow_watched().last_applied.map_or(0, |l| l.index);
        let deadline = Instant::now() + SNAPSHOT_WAIT;
        // openraft ignores a trigger while a build is under way (one of the policy's, or an
        // earlier request's, perhaps of an older state): trigger again until one covers `applied`.
        loop {
            self.snapshot_now.store(true, Ordering::SeqCst);
            self.raft.trigger().snapshot().await.map_err(|e| IpamError::Unavailable { reason: e.to_string() })?;
            let waited = self
                .raft
                .wait(Some(SNAPSHOT_RETRIGGER.min(deadline.saturating_duration_since(Instant::now()))))
                .metrics(|m| m.snapshot.is_some_and(|s| s.index >= applied), "a snapshot of the applied state")
                .await;
            if waited.is_ok() {
                // A build of the policy's may have met the wait: the flag must not force the next.
                self.snapshot_now.store(false, Ordering::SeqCst);
                return Ok(self.status());
            }
            if Instant::now() >= deadline {
                self.snapshot_now.store(false, Ordering::SeqCst);
                return Err(IpamError::Unavailable {
                    reason: format!("no snapshot of index {applied} within {SNAPSHOT_WAIT:?}"),
                });
            }
        }
    }

    /// Runs `f` over the applied state.
    pub fn read<T>(&self, f: impl FnOnce(&State) -> T) -> T {
        let state = self.state.read().unwrap_or_else(|p| p.into_inner());
        f(&state)
    }

    /// Proposes `command` through Raft and returns what applying it gave, with its log index.
    /// On a follower the command is forwarded once to the leader, which stamps the time.
    pub async fn propose(&self, command: Command, forwarded: bool) -> Result<(Output, u64), IpamError> {
        let kind = command_kind(&command);
        let started = Instant::now();
        let result = self.propose_inner(command, forwarded).await;
        m::record_proposal(kind, &result, started.elapsed());
        result
    }

    async fn propose_inner(&self, command: Command, forwarded: bool) -> Result<(Output, u64), IpamError> {
        let mut waited_for_leader = false;
        let forward = loop {
            match self.batcher.write(command.clone()).await {
                Ok((response, index)) => return response.map(|out| (out, index)),
                Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
                    if f.leader_node.is_none() && !waited_for_leader {
                        // An election is under way, or this replica just started and has not
                        // yet learnt the leader's address: wait once rather than fail.
                        waited_for_leader = true;
                        let _ = self
                            .raft
                            .wait(Some(LEADER_WAIT))
                            .metrics(
                                |m| m.current_leader.is_some_and(|l| m.membership_config.get_node(&l).is_some()),
                                "a leader with a known address",
                            )
                            .await;
                        continue;
                    }
                    break f;
                }
                Err(RaftError::APIError(ClientWriteError::LogEntryDiscarded(_))) => {
                    // The entry may or may not commit through the new leader: the outcome is
                    // unknown. Every agent command is idempotent, so the caller may retry.
                    return Err(IpamError::Unavailable {
                        reason: "leader changed while the command was in flight; outcome unknown, retry".into(),
                    });
                }
                Err(e) => return Err(IpamError::Unavailable { reason: e.to_string() }),
            }
        };
        let Some(leader) = forward.leader_node.clone().filter(|_| !forwarded) else {
            return Err(self.not_leader(forward.leader_id, forward.leader_node));
        };
        let mut client = self.peer(&leader.raft_addr)?;
        let json = serde_json::to_string(&command).map_err(|e| IpamError::invalid("command", e.to_string()))?;
        let mut req = tonic::Request::new(ProposeRequest { command_json: json, forwarded: true });
        req.set_timeout(FORWARD_TIMEOUT);
        let reply = client.propose(req).await.map_err(|s| IpamError::from_status(&s))?.into_inner();
        let out: Output = serde_json::from_str(&reply.output_json)
            .map_err(|e| IpamError::Unavailable { reason: format!("bad reply from leader: {e}") })?;
        Ok((out, reply.log_index))
    }

    /// Waits (bounded) until this replica has applied `index`, so that a read after a write
    /// through a follower sees the write.
    pub async fn wait_applied(&self, index: u64) -> Result<(), IpamError> {
        self.raft
            .wait(Some(FORWARD_TIMEOUT))
            .applied_index_at_least(Some(index), "read your writes")
            .await
            .map(|_| ())
            .map_err(|e| IpamError::Unavailable { reason: format!("this replica lags behind the leader: {e}") })
    }

    /// Forwards a keep-alive to the leader (keep-alives are served by the leader alone).
    pub async fn forward_keep_alive(&self, mut req: KeepAliveRequest) -> Result<u64, IpamError> {
        let (leader_id, leader) = self.leader().await;
        let Some(leader) = leader.filter(|_| !req.forwarded && leader_id != Some(self.id)) else {
            return Err(self.not_leader(leader_id, None));
        };
        req.forwarded = true;
        let mut client = self.peer(&leader.raft_addr)?;
        let mut r = tonic::Request::new(req);
        r.set_timeout(FORWARD_TIMEOUT);
        let reply = client.keep_alive(r).await.map_err(|s| IpamError::from_status(&s))?;
        Ok(reply.into_inner().ttl_ms)
    }

    fn not_leader(&self, leader_id: Option<u64>, node: Option<NodeInfo>) -> IpamError {
        let leader = node.map(|n| n.raft_addr).or_else(|| {
            let members = self.members();
            leader_id.and_then(|id| members.get(&id).map(|n| n.raft_addr.clone()))
        });
        IpamError::NotLeader { leader_id, leader }
    }

    fn peer(&self, addr: &str) -> Result<IpamClient<Channel>, IpamError> {
        let mut peers = self.peers.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(ch) = peers.get(addr) {
            return Ok(IpamClient::new(ch.clone()));
        }
        let ch = Endpoint::from_shared(format!("http://{addr}"))
            .map_err(|e| IpamError::Unavailable { reason: format!("bad leader address {addr}: {e}") })?
            .connect_timeout(Duration::from_secs(1))
            .tcp_nodelay(true)
            .connect_lazy();
        peers.insert(addr.to_owned(), ch.clone());
        Ok(IpamClient::new(ch))
    }

    /// The leader this replica knows of, with its address.
    pub async fn leader(&self) -> (Option<u64>, Option<NodeInfo>) {
        let id = self.raft.current_leader().await;
        let node = id.and_then(|id| self.members().get(&id).cloned());
        (id, node)
    }

    pub fn is_leader(&self) -> bool {
        self.raft.is_leader()
    }

    /// Every member (voters and learners) of the current membership config.
    pub fn members(&self) -> std::collections::BTreeMap<u64, NodeInfo> {
        let metrics = self.raft.metrics().borrow_watched().clone();
        metrics.membership_config.nodes().map(|(id, n)| (*id, n.clone())).collect()
    }

    pub fn status(&self) -> ClusterStatus {
        let mt = self.raft.metrics().borrow_watched().clone();
        let voters: Vec<u64> = mt.membership_config.voter_ids().collect();
        let learners: Vec<u64> = mt.membership_config.membership().learner_ids().collect();
        let members: std::collections::BTreeMap<u64, NodeInfo> =
            mt.membership_config.nodes().map(|(id, n)| (*id, n.clone())).collect();
        ClusterStatus {
            id: self.id,
            leader_id: mt.current_leader,
            leader: mt.current_leader.and_then(|id| members.get(&id).cloned()),
            term: mt.current_term,
            last_log_index: mt.last_log_index,
            committed_index: mt.cluster_committed.or(mt.local_committed).map(|l| l.index),
            applied_index: mt.last_applied.map(|l| l.index),
            snapshot_index: mt.snapshot.map(|l| l.index),
            purged_index: mt.purged.map(|l| l.index),
            voters,
            learners,
            members,
        }
    }
}

/// A short label for metrics and logs.
pub fn command_kind(c: &Command) -> &'static str {
    match c {
        Command::CreatePool(_) => "create_pool",
        Command::UpdatePool(_) => "update_pool",
        Command::DeletePool { .. } => "delete_pool",
        Command::PutVlan(_) => "put_vlan",
        Command::DeleteVlan { .. } => "delete_vlan",
        Command::PutReservation(_) => "put_reservation",
        Command::DeleteReservation { .. } => "delete_reservation",
        Command::Allocate { .. } => "allocate",
        Command::Release { .. } => "release",
        Command::GrantLease { .. } => "grant_lease",
        Command::ExpireLease { .. } => "expire_lease",
        Command::Reconcile { .. } => "reconcile",
        Command::NodeGone { .. } => "node_gone",
        Command::Batch(_) => "batch",
    }
}
