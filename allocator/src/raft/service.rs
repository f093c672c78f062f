//! [`RaftService`]: the server side of `hc.v1.Raft`. Decodes each request, hands it to the local
//! [`Raft`], and encodes the answer. A Raft that has stopped answers `UNAVAILABLE`, which the
//! peer's client maps to `Unreachable` and backs off.

use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;

use futures::{Stream, StreamExt, future};
use hc_api::proto::raft_server::{self, RaftServer};
use hc_api::proto::raft_snapshot_chunk::Chunk;
use hc_api::proto::{RaftMessage, RaftSnapshotChunk};
use openraft::async_runtime::WatchReceiver;
use openraft::errors::{Fatal, RaftError};
use openraft::raft::{AppendEntriesRequest, SnapshotResponse, StreamAppendResult, TransferLeaderRequest, VoteRequest};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::io::AsyncWriteExt;
use tonic::{Request, Response, Status, Streaming};

use crate::raft::codec;
use crate::raft::network::MAX_MESSAGE_BYTES;
use crate::raft::run_blocking;
use crate::raft::snapshot_store::{SnapshotFile, SnapshotStore};
use crate::raft::state_machine::StateMachineStore;
use crate::raft::type_config::{Raft, Snapshot, SnapshotMeta, TypeConfig, Vote};

/// The `hc.v1.Raft` gRPC service, ready to add to the replica's tonic server.
pub fn raft_service(raft: Raft) -> RaftServer<RaftService> {
    RaftServer::new(RaftService::new(raft))
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES)
}

pub struct RaftService {
    raft: Raft,
    /// Where incoming snapshots are received: the state machine's snapshot directory (same
    /// filesystem as the snapshot it becomes). Asked of the state machine on first use.
    snapshots: tokio::sync::OnceCell<Arc<SnapshotStore>>,
}

impl RaftService {
    pub fn new(raft: Raft) -> Self {
        Self { raft, snapshots: tokio::sync::OnceCell::new() }
    }

    async fn snapshot_store(&self) -> Result<Arc<SnapshotStore>, Status> {
        self.snapshots
            .get_or_try_init(|| async {
                self.raft
                    .with_state_machine(|sm: &mut StateMachineStore| {
                        let store = sm.snapshot_store();
                        Box::pin(async move { store })
                    })
                    .await
                    .map_err(|e| fatal(&e))
            })
            .await
            .cloned()
    }

    /// Receives a snapshot into a file and installs it. The file is removed afterwards: the
    /// state machine keeps its own copy.
    async fn receive_snapshot(
        &self,
        mut chunks: Streaming<RaftSnapshotChunk>,
    ) -> Result<SnapshotResponse<TypeConfig>, Status> {
        let header = match chunks.message().await? {
            Some(RaftSnapshotChunk { chunk: Some(Chunk::Header(header)) }) => header,
            _ => return Err(Status::invalid_argument("a snapshot must start with its header")),
        };
        let (vote, meta): (Vote, SnapshotMeta) = decode(&header)?;

        let store = self.snapshot_store().await?;
        let (path, file) = run_blocking(move || store.create_incoming())
            .await
            .map_err(|e| Status::internal(format!("cannot create a file for the snapshot: {e}")))?;
        let _remove = RemoveOnDrop(path);

        let mut file = tokio::fs::File::from_std(file);
        let mut bytes = 0_u64;
        while let Some(chunk) = chunks.message().await? {
            match chunk.chunk {
                Some(Chunk::Data(data)) => {
                    file.write_all(&data).await.map_err(|e| io_status(&e))?;
                    bytes += data.len() as u64;
                }
                _ => return Err(Status::invalid_argument("only data may follow the snapshot header")),
            }
        }
        file.flush().await.map_err(|e| io_status(&e))?;
        tracing::info!(snapshot = %meta, bytes, "received snapshot");

        // A snapshot the log already covers is answered, not installed (`hc-snapshot-guard`).
        if let Some(done) = hc_snapshot_guard::covered_by_log(&self.raft, &vote, meta.last_log_id.as_ref())
            .await
            .map_err(|e| fatal(&e))?
        {
            return Ok(done);
        }
        let snapshot = Snapshot { meta, snapshot: SnapshotFile::new(file.into_std().await) };
        self.raft.install_full_snapshot(vote, snapshot).await.map_err(|e| fatal(&e))
    }
}

type ResponseStream = Pin<Box<dyn Stream<Item = Result<RaftMessage, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl raft_server::Raft for RaftService {
    async fn vote(&self, request: Request<RaftMessage>) -> Result<Response<RaftMessage>, Status> {
        let req: VoteRequest<TypeConfig> = decode(&request.into_inner().payload)?;
        let resp = self.raft.vote(req).await.map_err(|e| raft_error(&e))?;
        reply(&resp)
    }

    async fn pre_vote(&self, request: Request<RaftMessage>) -> Result<Response<RaftMessage>, Status> {
        let req: VoteRequest<TypeConfig> = decode(&request.into_inner().payload)?;
        let resp = self.raft.pre_vote(req).await.map_err(|e| raft_error(&e))?;
        reply(&resp)
    }

    async fn append(&self, request: Request<RaftMessage>) -> Result<Response<RaftMessage>, Status> {
        let req: AppendEntriesRequest<TypeConfig> = decode(&request.into_inner().payload)?;
        let resp = self.raft.append_entries(req).await.map_err(|e| raft_error(&e))?;
        reply(&resp)
    }

    type StreamAppendStream = ResponseStream;

    async fn stream_append(
        &self,
        request: Request<Streaming<RaftMessage>>,
    ) -> Result<Response<Self::StreamAppendStream>, Status> {
        // The request stream ends at the first message that fails (transport error or an
        // undecodable payload); openraft then answers everything before it and closes.
        let requests = request
            .into_inner()
            .take_until(stopped(self.raft.clone()))
            .map(|item| {
                item.map_err(|status| status.to_string())
                    .and_then(|msg| decode::<AppendEntriesRequest<TypeConfig>>(&msg.payload).map_err(|s| s.to_string()))
            })
            .take_while(|item| {
                if let Err(e) = item {
                    tracing::warn!(error = %e, "AppendEntries stream ended");
                }
                future::ready(item.is_ok())
            })
            .filter_map(|item| future::ready(item.ok()));

        // Ended when this Raft stops: openraft's stream would otherwise wait for the next
        // request forever, and the server's graceful shutdown waits for every open stream.
        let responses = self
            .raft
            .stream_append(requests)
            .map(|result| match result {
                Ok(append) => encode::<StreamAppendResult<TypeConfig>>(&append).map(|payload| RaftMessage { payload }),
                Err(e) => Err(fatal(&e)),
            })
            .take_until(stopped(self.raft.clone()));
        Ok(Response::new(Box::pin(responses)))
    }

    async fn snapshot(&self, request: Request<Streaming<RaftSnapshotChunk>>) -> Result<Response<RaftMessage>, Status> {
        let started = std::time::Instant::now();
        let result = self.receive_snapshot(request.into_inner()).await;
        let outcome = if result.is_ok() { "ok" } else { "error" };
        metrics::histogram!("hc_allocator_raft_snapshot_receive_seconds", "outcome" => outcome)
            .record(started.elapsed());
        reply(&result?)
    }

    async fn transfer_leader(&self, request: Request<RaftMessage>) -> Result<Response<RaftMessage>, Status> {
        let req: TransferLeaderRequest<TypeConfig> = decode(&request.into_inner().payload)?;
        let resp = self.raft.handle_transfer_leader(req).await.map_err(|e| fatal(&e))?;
        reply(&resp)
    }
}

/// Resolves once `raft` has stopped (its metrics channel closes or reports the stop).
async fn stopped(raft: Raft) {
    let mut metrics = raft.metrics();
    loop {
        if metrics.borrow_watched().running_state.is_err() {
            return;
        }
        if metrics.changed().await.is_err() {
            return;
        }
    }
}

/// Removes a received snapshot file however receiving ends. An open handle (the state machine
/// may still be copying from it) keeps the content readable after the name is gone.
struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_file(&self.0) {
            tracing::warn!(path = %self.0.display(), error = %e, "cannot remove received snapshot file");
        }
    }
}

fn decode<T: DeserializeOwned>(payload: &[u8]) -> Result<T, Status> {
    codec::decode(payload).map_err(|e| Status::invalid_argument(format!("undecodable Raft message: {e}")))
}

fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, Status> {
    codec::encode(value).map_err(|e| Status::internal(format!("cannot encode Raft reply: {e}")))
}

fn reply<T: Serialize>(value: &T) -> Result<Response<RaftMessage>, Status> {
    Ok(Response::new(RaftMessage { payload: encode(value)? }))
}

fn raft_error(e: &RaftError<TypeConfig>) -> Status {
    Status::unavailable(format!("raft is not running: {e}"))
}

fn fatal(e: &Fatal<TypeConfig>) -> Status {
    Status::unavailable(format!("raft is not running: {e}"))
}

fn io_status(e: &std::io::Error) -> Status {
    Status::internal(format!("cannot write the received snapshot: {e}"))
}
