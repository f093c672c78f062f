//! [`Client`]: a gRPC client for any set of allocator replicas. It sends to the replica it
//! believes is the leader, follows `NotLeader` redirects, moves to the next replica when one is
//! unreachable, and retries with backoff until the call's deadline.
//!
//! Retries are safe for what agents send: allocation is idempotent per (container id,
//! interface), releases by owner and reconciles are idempotent, and a repeated lease grant only
//! fences the grant before it. An operator's `CreatePool` retried after an unknown outcome may
//! answer `PoolExists`. A release by address is the exception: applied twice it could free the
//! address's next holder, so it is not retried once its outcome is unknown (the deterministic
//! simulation found this with its own operator client).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tonic::transport::{Channel, Endpoint};

use crate::IpamError;
use crate::command::{Command, Output};
use crate::proto::ipam_client::IpamClient;
use crate::proto::{
    CandidatePoolsRequest, GrantLeaseRequest, KeepAliveRequest, ListAllocationsRequest, ProposeRequest, StatusReply,
    StatusRequest,
};
use crate::types::{AllocateRequest, Allocated, Allocation, Fence, Lease, PoolStatus, ReleaseTarget, Released};

/// Longest pause between two attempts.
const MAX_BACKOFF: Duration = Duration::from_millis(50);

/// A random duration in [d/2, d].
fn jitter(d: Duration) -> Duration {
    use std::hash::{BuildHasher, Hasher};
    let r = std::collections::hash_map::RandomState::new().build_hasher().finish();
    d / 2 + Duration::from_nanos(r % (d.as_nanos() as u64 / 2 + 1))
}

#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// How long one call may take in all, retries included.
    pub deadline: Duration,
    /// Timeout of one attempt.
    pub attempt_timeout: Duration,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig { deadline: Duration::from_secs(15), attempt_timeout: Duration::from_secs(3) }
    }
}

#[derive(Debug)]
pub struct Client {
    endpoints: Vec<String>,
    channels: Vec<Channel>,
    /// Index of the replica believed to be the leader.
    current: AtomicUsize,
    config: ClientConfig,
    /// Move to the leader a follower forwarded to (saves a hop per call).
    follow_leader: bool,
}

impl Client {
    /// `endpoints` are the replicas' gRPC `host:port`s. Connections are made lazily.
    pub fn new(
        endpoints: impl IntoIterator<Item = impl Into<String>>,
        config: ClientConfig,
    ) -> Result<Self, IpamError> {
        let endpoints: Vec<String> = endpoints.into_iter().map(Into::into).collect();
        if endpoints.is_empty() {
            return Err(IpamError::invalid("endpoints", "at least one allocator address is needed"));
        }
        let channels = endpoints
            .iter()
            .map(|e| {
                Endpoint::from_shared(format!("http://{e}"))
                    .map(|ep| ep.connect_timeout(Duration::from_millis(500)).tcp_nodelay(true).connect_lazy())
                    .map_err(|err| IpamError::invalid("endpoint", format!("{e}: {err}")))
            })
            .collect::<Result<_, _>>()?;
        Ok(Client { endpoints, channels, current: AtomicUsize::new(0), config, follow_leader: true })
    }

    /// Keeps sending to the first endpoint (while it answers) instead of moving to the leader
    /// it forwards to: for exercising writes through a chosen follower.
    pub fn stay_on_endpoint(mut self) -> Self {
        self.follow_leader = false;
        self
    }

    pub fn endpoints(&self) -> &[String] {
        &self.endpoints
    }

    /// Runs `call` against the believed leader, retrying as described in the module docs.
    async fn with_retry<T, F, Fut>(&self, call: F) -> Result<T, IpamError>
    where
        F: FnMut(IpamClient<Channel>, Duration) -> Fut,
        Fut: std::future::Future<Output = Result<T, tonic::Status>>,
    {
        self.with_retry_if(true, call).await
    }

    /// [`Self::with_retry`]; with `retry_unavailable` false, an `Unavailable` answer (the call
    /// may or may not have been applied) is returned at once instead of retried, for calls
    /// that must not be applied twice.
    async fn with_retry_if<T, F, Fut>(&self, retry_unavailable: bool, mut call: F) -> Result<T, IpamError>
    where
        F: FnMut(IpamClient<Channel>, Duration) -> Fut,
        Fut: std::future::Future<Output = Result<T, tonic::Status>>,
    {
        let started = Instant::now();
        let mut backoff = Duration::from_millis(5);
        loop {
            let idx = self.current.load(Ordering::Relaxed) % self.channels.len();
            let client = IpamClient::new(self.channels[idx].clone());
            let err = match call(client, self.config.attempt_timeout).await {
                Ok(v) => return Ok(v),
                Err(status) => IpamError::from_status(&status),
            };
            match &err {
                IpamError::NotLeader { leader, .. } => {
                    let next =
                        leader.as_ref().and_then(|l| self.endpoints.iter().position(|e| e == l)).unwrap_or(idx + 1);
                    let _ = self.current.compare_exchange(
                        idx,
                        next % self.channels.len(),
                        Ordering::Relaxed,
                        Ordering::Relaxed,
                    );
                }
                IpamError::Unavailable { .. } if !retry_unavailable => return Err(err),
                IpamError::Unavailable { .. } => {
                    let _ = self.current.compare_exchange(
                        idx,
                        (idx + 1) % self.channels.len(),
                        Ordering::Relaxed,
                        Ordering::Relaxed,
                    );
                }
                _ => return Err(err),
            }
            if started.elapsed() + backoff > self.config.deadline {
                return Err(err);
            }
            // Jittered, so that many clients failing over together do not retry in lockstep.
            tokio::time::sleep(jitter(backoff)).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    /// Moves this client to `leader` (a gRPC address) if it is one of its endpoints.
    fn follow(&self, leader: &str) {
        if let Some(i) = self.endpoints.iter().position(|e| e == leader) {
            self.current.store(i, Ordering::Relaxed);
        }
    }

    /// Proposes a state-machine command through the leader. A command applied twice would do
    /// harm — releasing whatever holds an address: a retry after a lost reply could free the
    /// address's next holder — is not retried after an `Unavailable` answer (the caller learns
    /// the outcome is unknown); everything else is idempotent and retried.
    pub async fn propose(&self, command: &Command) -> Result<Output, IpamError> {
        let retry_unavailable = !matches!(command, Command::Release { target: ReleaseTarget::Address(_), .. });
        let json = serde_json::to_string(command).map_err(|e| IpamError::invalid("command", e.to_string()))?;
        let reply = self
            .with_retry_if(retry_unavailable, |mut c, timeout| {
                let mut req = tonic::Request::new(ProposeRequest { command_json: json.clone(), forwarded: false });
                req.set_timeout(timeout);
                async move { c.propose(req).await.map(|r| r.into_inner()) }
            })
            .await?;
        if self.follow_leader && !reply.leader.is_empty() {
            self.follow(&reply.leader);
        }
        serde_json::from_str(&reply.output_json)
            .map_err(|e| IpamError::Unavailable { reason: format!("undecodable reply: {e}") })
    }

    pub async fn grant_lease(&self, node: &str, ttl: Duration) -> Result<Lease, IpamError> {
        let reply = self
            .with_retry(|mut c, timeout| {
                let mut req =
                    tonic::Request::new(GrantLeaseRequest { node: node.to_owned(), ttl_ms: ttl.as_millis() as u64 });
                req.set_timeout(timeout);
                async move { c.grant_lease(req).await.map(|r| r.into_inner()) }
            })
            .await?;
        serde_json::from_str(&reply.lease_json)
            .map_err(|e| IpamError::Unavailable { reason: format!("undecodable lease: {e}") })
    }

    /// Renews the lease; returns the TTL the leader granted from now.
    pub async fn keep_alive(&self, lease: &Lease) -> Result<Duration, IpamError> {
        let ttl_ms = self
            .with_retry(|mut c, timeout| {
                let mut req = tonic::Request::new(KeepAliveRequest {
                    node: lease.node.clone(),
                    lease_id: lease.lease_id,
                    token: lease.token,
                    forwarded: false,
                });
                req.set_timeout(timeout);
                async move { c.keep_alive(req).await.map(|r| r.into_inner().ttl_ms) }
            })
            .await?;
        Ok(Duration::from_millis(ttl_ms))
    }

    pub async fn allocate(&self, fence: Option<Fence>, request: AllocateRequest) -> Result<Allocated, IpamError> {
        match self.propose(&Command::Allocate { fence, request }).await? {
            Output::Allocated(a) => Ok(*a),
            other => Err(IpamError::Unavailable { reason: format!("unexpected reply {other:?}") }),
        }
    }

    pub async fn release(&self, fence: Option<Fence>, target: ReleaseTarget) -> Result<Released, IpamError> {
        match self.propose(&Command::Release { fence, target }).await? {
            Output::Released(r) => Ok(r),
            other => Err(IpamError::Unavailable { reason: format!("unexpected reply {other:?}") }),
        }
    }

    /// The pools `request` would draw from, with their counts, from the applied state of the
    /// replica this client is on (a follower may lag the leader by a few entries).
    pub async fn candidate_pools(&self, request: &AllocateRequest) -> Result<Vec<PoolStatus>, IpamError> {
        let json = serde_json::to_string(request).map_err(|e| IpamError::invalid("request", e.to_string()))?;
        let reply = self
            .with_retry(|mut c, timeout| {
                let mut req = tonic::Request::new(CandidatePoolsRequest { request_json: json.clone() });
                req.set_timeout(timeout);
                async move { c.candidate_pools(req).await.map(|r| r.into_inner()) }
            })
            .await?;
        serde_json::from_str(&reply.json)
            .map_err(|e| IpamError::Unavailable { reason: format!("undecodable reply: {e}") })
    }

    /// Lists allocations from the applied state of the replica at `endpoint` (an index into
    /// the endpoints given to `new`), without retries: for checking what one replica holds.
    pub async fn list_allocations_at(
        &self,
        endpoint: usize,
        pool: Option<&str>,
        node: Option<&str>,
    ) -> Result<Vec<Allocation>, IpamError> {
        let ch = self
            .channels
            .get(endpoint)
            .ok_or_else(|| IpamError::invalid("endpoint", format!("no endpoint #{endpoint}")))?;
        let mut req = tonic::Request::new(ListAllocationsRequest {
            pool: pool.unwrap_or_default().to_owned(),
            node: node.unwrap_or_default().to_owned(),
            namespace: String::new(),
        });
        req.set_timeout(self.config.attempt_timeout);
        let reply = IpamClient::new(ch.clone()).list_allocations(req).await.map_err(|s| IpamError::from_status(&s))?;
        serde_json::from_str(&reply.into_inner().json)
            .map_err(|e| IpamError::Unavailable { reason: format!("undecodable reply: {e}") })
    }

    /// Raft status of the replica at `endpoint`.
    pub async fn status_at(&self, endpoint: usize) -> Result<StatusReply, IpamError> {
        let ch = self
            .channels
            .get(endpoint)
            .ok_or_else(|| IpamError::invalid("endpoint", format!("no endpoint #{endpoint}")))?;
        let mut req = tonic::Request::new(StatusRequest {});
        req.set_timeout(self.config.attempt_timeout);
        let reply = IpamClient::new(ch.clone()).status(req).await.map_err(|s| IpamError::from_status(&s))?;
        Ok(reply.into_inner())
    }
}
