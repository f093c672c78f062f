//! [`NetworkFactory`] and [`PeerClient`]: openraft's outgoing RPCs over gRPC (`hc.v1.Raft`).
//!
//! Connections are lazy: a client is created without dialing, and tonic connects (and
//! reconnects) on use. Errors are mapped so openraft backs off from a peer that is down
//! (`Unreachable`) and treats a slow one as a timeout:
//! - our own deadline or `DEADLINE_EXCEEDED` → `Timeout`;
//! - `CANCELLED` (the stream was reset) → `Network`, retried at once;
//! - anything else (connection refused, peer shutting down, undecodable reply) → `Unreachable`.

use std::collections::HashMap;
use std::future::Future;
use std::io::SeekFrom;
use std::time::Duration;

use futures::{StreamExt, future};
use hc_api::proto::raft_client::RaftClient;
use hc_api::proto::raft_snapshot_chunk::Chunk;
use hc_api::proto::{RaftMessage, RaftSnapshotChunk};
use openraft::base::{BoxFuture, BoxStream};
use openraft::errors::{NetworkError, RPCError, ReplicationClosed, StreamingError, Timeout, Unreachable};
use openraft::network::{RPCOption, RPCTypes, RaftNetworkFactory, RaftNetworkV2};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, StreamAppendResult, TransferLeaderRequest,
    TransferLeaderResponse, VoteRequest, VoteResponse,
};
use openraft::type_config::TypeConfigExt;
use openraft::{OptionalSend, StorageError};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tonic::transport::{Channel, Endpoint};

use crate::raft::codec;
use crate::raft::type_config::{NodeInfo, Snapshot, TypeConfig, Vote};

/// Largest gRPC message either side accepts. AppendEntries batches are bounded by openraft's
/// `max_payload_entries`; this only has to exceed the largest batch of large entries.
pub(crate) const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;
/// Snapshot chunk size when openraft does not say (it passes `snapshot_max_chunk_size`).
const DEFAULT_SNAPSHOT_CHUNK: usize = 1024 * 1024;

type RpcError = RPCError<TypeConfig>;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Lane {
    /// Votes, AppendEntries and heartbeats: small, latency-sensitive, multiplexed on one
    /// HTTP/2 connection.
    Replication,
    /// Snapshot transfers, on their own connection so a 100 MB stream cannot hold up heartbeats.
    Snapshot,
}

/// Creates the per-peer clients openraft asks for.
pub struct NetworkFactory {
    /// This replica's id, reported in timeout errors.
    self_id: u64,
    /// One channel per peer address and lane, shared by every client openraft creates for that
    /// peer (it creates new ones per election and per leadership term).
    channels: HashMap<(String, Lane), Channel>,
}

impl NetworkFactory {
    pub fn new(self_id: u64) -> Self {
        Self { self_id, channels: HashMap::new() }
    }

    fn peer(&mut self, target: u64, node: &NodeInfo, lane: Lane) -> PeerClient {
        let key = (node.raft_addr.clone(), lane);
        let channel = match self.channels.get(&key) {
            Some(channel) => Ok(channel.clone()),
            None => connect_lazy(&node.raft_addr).inspect(|channel| {
                self.channels.insert(key, channel.clone());
            }),
        };
        PeerClient { link: Link { self_id: self.self_id, target }, channel }
    }
}

fn connect_lazy(addr: &str) -> Result<Channel, String> {
    let endpoint = Endpoint::from_shared(format!("http://{addr}"))
        .map_err(|e| format!("invalid raft address {addr:?}: {e}"))?
        .connect_timeout(Duration::from_secs(1))
        .tcp_nodelay(true)
        // A long-lived AppendEntries stream to a peer that vanished (no RST, e.g. a partition)
        // is detected by keep-alive, not by a per-response deadline (an idle stream is normal).
        .http2_keep_alive_interval(Duration::from_secs(1))
        .keep_alive_timeout(Duration::from_secs(2))
        .keep_alive_while_idle(true);
    Ok(endpoint.connect_lazy())
}

impl RaftNetworkFactory<TypeConfig> for NetworkFactory {
    type Network = PeerClient;

    async fn new_client(&mut self, target: u64, node: &NodeInfo) -> PeerClient {
        self.peer(target, node, Lane::Replication)
    }

    async fn new_snapshot_client(&mut self, target: u64, node: &NodeInfo) -> PeerClient {
        self.peer(target, node, Lane::Snapshot)
    }
}

/// openraft's connection to one peer.
pub struct PeerClient {
    link: Link,
    /// `Err` when the peer's address does not parse; every RPC then fails as `Unreachable`.
    channel: Result<Channel, String>,
}

/// Who talks to whom, for error reports.
#[derive(Debug, Clone, Copy)]
struct Link {
    self_id: u64,
    target: u64,
}

impl Link {
    /// Counts a failed replication stream to `target`: not opened (`open`), or broken after
    /// opening (`stream`). A peer that is down adds an `open` per heartbeat and one
    /// per replication backoff interval.
    fn count_failure(self, stage: &'static str) {
        metrics::counter!("hc_allocator_raft_replication_failures_total", "target" => self.target.to_string(), "stage" => stage)
            .increment(1);
    }

    fn timeout(self, action: RPCTypes, ttl: Duration) -> Timeout<TypeConfig> {
        Timeout { action, id: self.self_id, target: self.target, timeout: ttl }
    }

    fn status_error(self, action: RPCTypes, ttl: Duration, status: &tonic::Status) -> RpcError {
        match status.code() {
            tonic::Code::DeadlineExceeded => RPCError::Timeout(self.timeout(action, ttl)),
            tonic::Code::Cancelled => RPCError::Network(NetworkError::new(status)),
            _ => RPCError::Unreachable(Unreachable::new(status)),
        }
    }
}

impl PeerClient {
    fn client(&self) -> Result<RaftClient<Channel>, RpcError> {
        match &self.channel {
            Ok(channel) => Ok(RaftClient::new(channel.clone())
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_MESSAGE_BYTES)),
            Err(e) => Err(RPCError::Unreachable(Unreachable::from_string(e))),
        }
    }

    /// One request, one reply, within `option`'s soft TTL.
    async fn unary<Req, Resp, F, Fut>(
        &self,
        action: RPCTypes,
        req: &Req,
        option: &RPCOption,
        call: F,
    ) -> Result<Resp, RpcError>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        F: FnOnce(RaftClient<Channel>, tonic::Request<RaftMessage>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<RaftMessage>, tonic::Status>>,
    {
        let ttl = option.soft_ttl();
        let payload = codec::encode(req).map_err(|e| unreachable(&e))?;
        let mut request = tonic::Request::new(RaftMessage { payload });
        // Tell the server too, so it stops working on a request nobody waits for.
        request.set_timeout(ttl);
        let client = self.client()?;
        let reply = match tokio::time::timeout(ttl, call(client, request)).await {
            Err(_elapsed) => return Err(RPCError::Timeout(self.link.timeout(action, ttl))),
            Ok(Err(status)) => return Err(self.link.status_error(action, ttl, &status)),
            Ok(Ok(reply)) => reply.into_inner(),
        };
        codec::decode(&reply.payload).map_err(|e| unreachable(&e))
    }

    fn snapshot_reply(
        &self,
        ttl: Duration,
        reply: Result<tonic::Response<RaftMessage>, tonic::Status>,
    ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        match reply {
            Ok(reply) => codec::decode(&reply.into_inner().payload)
                .map_err(|e| StreamingError::Unreachable(Unreachable::new(&e))),
            Err(status) => Err(self.link.status_error(RPCTypes::InstallSnapshot, ttl, &status).into()),
        }
    }

    /// Streams the snapshot file in chunks: phase one sends (each chunk within the soft TTL),
    /// phase two waits (within the soft TTL) for the receiver to install it and reply.
    async fn send_snapshot(
        &self,
        vote: Vote,
        snapshot: Snapshot,
        cancel: impl Future<Output = ReplicationClosed> + OptionalSend + 'static,
        option: RPCOption,
    ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        let ttl = option.soft_ttl();
        let chunk_size = option.snapshot_chunk_size().unwrap_or(DEFAULT_SNAPSHOT_CHUNK).max(1);
        let signature = snapshot.meta.signature();
        let header =
            codec::encode(&(&vote, &snapshot.meta)).map_err(|e| StreamingError::Unreachable(Unreachable::new(&e)))?;
        let mut client = self.client()?;

        let (tx, rx) = tokio::sync::mpsc::channel::<RaftSnapshotChunk>(4);
        let call = client.snapshot(tokio_stream::wrappers::ReceiverStream::new(rx));
        let send = async {
            let chunk = |chunk| RaftSnapshotChunk { chunk: Some(chunk) };
            let read_err = |e: std::io::Error| {
                StreamingError::StorageError(StorageError::read_snapshot(
                    Some(signature.clone()),
                    TypeConfig::err_from_error(&e),
                ))
            };
            let mut pending = Some(chunk(Chunk::Header(header)));
            let mut file = tokio::fs::File::from_std(snapshot.snapshot.into_file());
            file.seek(SeekFrom::Start(0)).await.map_err(read_err)?;
            while let Some(next) = pending.take() {
                match tokio::time::timeout(ttl, tx.send(next)).await {
                    Err(_elapsed) => {
                        return Err(StreamingError::Timeout(self.link.timeout(RPCTypes::InstallSnapshot, ttl)));
                    }
                    // The call ended (the receiver failed); its result says why.
                    Ok(Err(_closed)) => return Ok(()),
                    Ok(Ok(())) => {}
                }
                let mut buf = vec![0; chunk_size];
                let n = file.read(&mut buf).await.map_err(read_err)?;
                if n > 0 {
                    buf.truncate(n);
                    pending = Some(chunk(Chunk::Data(buf)));
                }
            }
            // Dropping `tx` ends the request stream: the receiver installs and replies.
            drop(tx);
            Ok::<(), StreamingError<TypeConfig>>(())
        };

        tokio::pin!(call, send, cancel);
        tokio::select! {
            sent = &mut send => sent?,
            reply = &mut call => return self.snapshot_reply(ttl, reply),
            closed = &mut cancel => return Err(StreamingError::Closed(closed)),
        }
        tokio::select! {
            reply = tokio::time::timeout(ttl, &mut call) => match reply {
                Ok(reply) => self.snapshot_reply(ttl, reply),
                Err(_elapsed) => Err(StreamingError::Timeout(self.link.timeout(RPCTypes::InstallSnapshot, ttl))),
            },
            closed = &mut cancel => Err(StreamingError::Closed(closed)),
        }
    }
}

impl RaftNetworkV2<TypeConfig> for PeerClient {
    type SnapshotData = crate::raft::snapshot_store::SnapshotFile;

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<TypeConfig>, RpcError> {
        self.unary(RPCTypes::AppendEntries, &rpc, &option, |mut c, r| async move { c.append(r).await }).await
    }

    /// Pipelined AppendEntries over one bidirectional gRPC stream: requests go out as openraft
    /// produces them, responses come back in order. The soft TTL bounds opening the stream
    /// only; an idle stream is normal, and a dead peer is caught by HTTP/2 keep-alive.
    fn stream_append<'s, S>(
        &'s mut self,
        mut input: S,
        option: RPCOption,
    ) -> BoxFuture<'s, Result<BoxStream<'s, Result<StreamAppendResult<TypeConfig>, RpcError>>, RpcError>>
    where
        S: futures::Stream<Item = AppendEntriesRequest<TypeConfig>> + OptionalSend + Unpin + 'static,
    {
        Box::pin(async move {
            let ttl = option.soft_ttl();
            let mut client = self.client()?;
            let link = self.link;
            let target = link.target;
            // Wait for openraft's first request before dialing. openraft applies its backoff
            // from a peer that failed while it produces a request; were the stream opened
            // first, a refused connection would fail before that, and openraft would redial
            // at once, again and again, while the peer is down.
            let Some(first) = input.next().await else {
                return Ok(Box::pin(futures::stream::empty()) as BoxStream<'s, _>);
            };
            let input = futures::stream::once(future::ready(first)).chain(input);
            // Openraft's request stream never ends by itself. End it when openraft drops the
            // response stream (session over, or the peer ended it), so the HTTP/2 stream closes
            // on both sides and the peer's graceful shutdown is not left waiting for it.
            // An entry that cannot be encoded also ends it; the follower answers what it got and
            // openraft resends the rest in a new stream.
            let (session_open, session_over) = tokio::sync::oneshot::channel::<()>();
            let requests = input
                .take_until(session_over)
                .map(|req| codec::encode(&req))
                .take_while(move |encoded| {
                    if let Err(e) = encoded {
                        tracing::error!(target, error = %e, "cannot encode AppendEntries");
                    }
                    future::ready(encoded.is_ok())
                })
                .filter_map(|encoded| future::ready(encoded.ok().map(|payload| RaftMessage { payload })));

            let opened = tokio::time::timeout(ttl, client.stream_append(requests)).await;
            let responses = match opened {
                Err(_elapsed) => {
                    link.count_failure("open");
                    return Err(RPCError::Timeout(link.timeout(RPCTypes::AppendEntries, ttl)));
                }
                Ok(Err(status)) => {
                    link.count_failure("open");
                    return Err(link.status_error(RPCTypes::AppendEntries, ttl, &status));
                }
                Ok(Ok(responses)) => responses.into_inner(),
            };
            let results = responses.map(move |item| {
                // Held (dropped) with the response stream: see `session_over`.
                let _session = &session_open;
                match item {
                    Ok(msg) => {
                        codec::decode::<StreamAppendResult<TypeConfig>>(&msg.payload).map_err(|e| unreachable(&e))
                    }
                    Err(status) => {
                        link.count_failure("stream");
                        Err(link.status_error(RPCTypes::AppendEntries, ttl, &status))
                    }
                }
            });
            Ok(Box::pin(results) as BoxStream<'s, _>)
        })
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RpcError> {
        self.unary(RPCTypes::Vote, &rpc, &option, |mut c, r| async move { c.vote(r).await }).await
    }

    async fn pre_vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RpcError> {
        self.unary(RPCTypes::Vote, &rpc, &option, |mut c, r| async move { c.pre_vote(r).await }).await
    }

    async fn full_snapshot(
        &mut self,
        vote: Vote,
        snapshot: Snapshot,
        cancel: impl Future<Output = ReplicationClosed> + OptionalSend + 'static,
        option: RPCOption,
    ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        let started = std::time::Instant::now();
        let result = self.send_snapshot(vote, snapshot, cancel, option).await;
        let outcome = if result.is_ok() { "ok" } else { "error" };
        metrics::histogram!("hc_allocator_raft_snapshot_send_seconds", "outcome" => outcome).record(started.elapsed());
        result
    }

    async fn transfer_leader(
        &mut self,
        req: TransferLeaderRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<TransferLeaderResponse<TypeConfig>, RpcError> {
        self.unary(RPCTypes::TransferLeader, &req, &option, |mut c, r| async move { c.transfer_leader(r).await }).await
    }
}

fn unreachable(e: &std::io::Error) -> RpcError {
    RPCError::Unreachable(Unreachable::new(e))
}
