//! The management REST API (`/v1/…`, JSON), `/metrics`, `/healthz` and `/readyz`.
//! Reads come from this replica's applied state; writes go through Raft (forwarded to the
//! leader when needed), so any replica can be used.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::sync::Arc;

use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use hc_allocator_state::{Command, Output};
use hc_api::IpamError;
use hc_api::types::{AllocateRequest, Allocation, Lease, PoolSpec, PoolStatus, ReleaseTarget, Reservation, VlanSpec};
use metrics_exporter_prometheus::PrometheusHandle;
use openraft::ChangeMembers;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::raft::{NodeInfo, StorageMemory};
use crate::replica::{ClusterStatus, Replica};

#[derive(Clone)]
struct AppState {
    replica: Arc<Replica>,
    metrics: PrometheusHandle,
    storage: StorageMemory,
}

/// An `IpamError` as a response: its HTTP status and `{"kind": …, "message": …, …fields}`.
pub struct ApiError(pub IpamError);

impl From<IpamError> for ApiError {
    fn from(e: IpamError) -> Self {
        ApiError(e)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.0.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut body = serde_json::to_value(&self.0).unwrap_or_else(|_| json!({}));
        body["message"] = Value::String(self.0.to_string());
        (status, Json(body)).into_response()
    }
}

type ApiResult<T> = Result<T, ApiError>;

/// A JSON body whose rejection (malformed JSON, unknown field, wrong content type) is an
/// `invalid_argument` error like every other refusal.
#[derive(FromRequest)]
#[from_request(via(Json), rejection(ApiError))]
struct ApiJson<T>(T);

impl From<JsonRejection> for ApiError {
    fn from(r: JsonRejection) -> Self {
        ApiError(IpamError::invalid("body", r.body_text()))
    }
}

pub fn router(replica: Arc<Replica>, metrics: PrometheusHandle, storage: StorageMemory) -> Router {
    Router::new()
        .route("/v1/pools", get(list_pools).post(create_pool))
        .route("/v1/pools/{name}", get(get_pool).put(update_pool).delete(delete_pool))
        .route("/v1/vlans", get(list_vlans).post(put_vlan))
        .route("/v1/vlans/{id}", delete(delete_vlan))
        .route("/v1/reservations", get(list_reservations).post(put_reservation))
        .route("/v1/reservations/{*key}", get(get_reservation).delete(delete_reservation))
        .route("/v1/allocations", get(list_allocations).post(allocate))
        .route("/v1/allocations/release", post(release))
        .route("/v1/allocations/{address}", get(get_allocation).delete(release_address))
        .route("/v1/leases", get(list_leases))
        .route("/v1/nodes/{node}/gone", post(node_gone))
        .route("/v1/cluster", get(cluster))
        .route("/v1/cluster/snapshot", post(snapshot_now))
        .route("/v1/cluster/learners", post(add_learner))
        .route("/v1/cluster/voters", post(promote_voter))
        .route("/v1/cluster/members/{id}", delete(remove_member))
        .route("/v1/openapi.json", get(openapi))
        .route("/metrics", get(render_metrics))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .fallback(|| async { ApiError(IpamError::invalid("path", "no such resource; see /v1/openapi.json")) })
        .with_state(AppState { replica, metrics, storage })
}

/// Proposes a command and waits until this replica has applied it, so that what the handler
/// reads next (and what the client reads next from this replica) includes the write.
async fn propose(st: &AppState, command: Command) -> ApiResult<Output> {
    let (out, index) = st.replica.propose(command, false).await?;
    st.replica.wait_applied(index).await?;
    Ok(out)
}

fn pool_status(st: &AppState, name: &str) -> ApiResult<Json<PoolStatus>> {
    let status = st.replica.read(|s| s.pool(name)).ok_or_else(|| IpamError::PoolNotFound { pool: name.to_owned() })?;
    Ok(Json(status))
}

// ---- pools ----

async fn list_pools(State(st): State<AppState>) -> Json<Vec<PoolStatus>> {
    Json(st.replica.read(|s| s.pools()))
}

async fn create_pool(
    State(st): State<AppState>,
    ApiJson(spec): ApiJson<PoolSpec>,
) -> ApiResult<(StatusCode, Json<PoolStatus>)> {
    let name = spec.name.clone();
    propose(&st, Command::CreatePool(spec)).await?;
    tracing::info!(pool = %name, "pool created");
    Ok((StatusCode::CREATED, pool_status(&st, &name)?))
}

async fn get_pool(State(st): State<AppState>, Path(name): Path<String>) -> ApiResult<Json<PoolStatus>> {
    pool_status(&st, &name)
}

async fn update_pool(
    State(st): State<AppState>,
    Path(name): Path<String>,
    ApiJson(spec): ApiJson<PoolSpec>,
) -> ApiResult<Json<PoolStatus>> {
    if spec.name != name {
        return Err(IpamError::invalid("name", format!("body names pool {:?}, path names {name:?}", spec.name)).into());
    }
    propose(&st, Command::UpdatePool(spec)).await?;
    pool_status(&st, &name)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ForceQuery {
    #[serde(default)]
    force: bool,
}

async fn delete_pool(
    State(st): State<AppState>,
    Path(name): Path<String>,
    Query(q): Query<ForceQuery>,
) -> ApiResult<StatusCode> {
    propose(&st, Command::DeletePool { name: name.clone(), force: q.force }).await?;
    tracing::info!(pool = %name, force = q.force, "pool deleted");
    Ok(StatusCode::NO_CONTENT)
}

// ---- VLANs ----

async fn list_vlans(State(st): State<AppState>) -> Json<Vec<VlanSpec>> {
    Json(st.replica.read(|s| s.vlans()))
}

async fn put_vlan(
    State(st): State<AppState>,
    ApiJson(v): ApiJson<VlanSpec>,
) -> ApiResult<(StatusCode, Json<VlanSpec>)> {
    propose(&st, Command::PutVlan(v.clone())).await?;
    Ok((StatusCode::CREATED, Json(v)))
}

async fn delete_vlan(State(st): State<AppState>, Path(id): Path<String>) -> ApiResult<StatusCode> {
    let id: u16 = id.parse().map_err(|_| IpamError::invalid("vlan", format!("{id:?} is not a VLAN id")))?;
    propose(&st, Command::DeleteVlan { id }).await?;
    Ok(StatusCode::NO_CONTENT)
}

// ---- reservations ----

async fn list_reservations(State(st): State<AppState>) -> Json<Vec<Reservation>> {
    Json(st.replica.read(|s| s.reservations()))
}

async fn put_reservation(
    State(st): State<AppState>,
    ApiJson(r): ApiJson<Reservation>,
) -> ApiResult<(StatusCode, Json<Reservation>)> {
    propose(&st, Command::PutReservation(r.clone())).await?;
    Ok((StatusCode::CREATED, Json(r)))
}

async fn get_reservation(State(st): State<AppState>, Path(key): Path<String>) -> ApiResult<Json<Reservation>> {
    st.replica
        .read(|s| s.reservations().into_iter().find(|r| r.key == key))
        .map(Json)
        .ok_or_else(|| IpamError::ReservationNotFound { key }.into())
}

async fn delete_reservation(State(st): State<AppState>, Path(key): Path<String>) -> ApiResult<StatusCode> {
    propose(&st, Command::DeleteReservation { key }).await?;
    Ok(StatusCode::NO_CONTENT)
}

// ---- allocations ----

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AllocationFilter {
    pool: Option<String>,
    node: Option<String>,
    namespace: Option<String>,
}

async fn list_allocations(State(st): State<AppState>, Query(f): Query<AllocationFilter>) -> Json<Vec<Allocation>> {
    Json(st.replica.read(|s| s.allocations(f.pool.as_deref(), f.node.as_deref(), f.namespace.as_deref())))
}

fn parse_address(s: &str) -> Result<IpAddr, IpamError> {
    s.parse().map_err(|_| IpamError::invalid("address", format!("{s:?} is not an IP address")))
}

async fn get_allocation(State(st): State<AppState>, Path(address): Path<String>) -> ApiResult<Json<Allocation>> {
    let addr = parse_address(&address)?;
    let a =
        st.replica.read(|s| s.allocation_by_address(addr)).ok_or(IpamError::AllocationNotFound { what: address })?;
    Ok(Json(a))
}

/// An operator allocation: no fence (it is not a node's write).
async fn allocate(State(st): State<AppState>, ApiJson(req): ApiJson<AllocateRequest>) -> ApiResult<Response> {
    match propose(&st, Command::Allocate { fence: None, request: req }).await? {
        Output::Allocated(a) => {
            let code = if a.created { StatusCode::CREATED } else { StatusCode::OK };
            Ok((code, Json(a)).into_response())
        }
        other => Ok(Json(other).into_response()),
    }
}

async fn release(State(st): State<AppState>, ApiJson(target): ApiJson<ReleaseTarget>) -> ApiResult<Response> {
    let out = propose(&st, Command::Release { fence: None, target }).await?;
    Ok(output_response(out))
}

async fn release_address(State(st): State<AppState>, Path(address): Path<String>) -> ApiResult<Response> {
    let addr = parse_address(&address)?;
    let out = propose(&st, Command::Release { fence: None, target: ReleaseTarget::Address(addr) }).await?;
    Ok(output_response(out))
}

/// The payload of an output (`Released` as `{"released": […]}`), without the enum wrapper.
fn output_response(out: Output) -> Response {
    match out {
        Output::Released(r) => Json(r).into_response(),
        Output::Allocated(a) => Json(a).into_response(),
        Output::Lease(l) => Json(l).into_response(),
        Output::Pool(p) => Json(p).into_response(),
        other => Json(other).into_response(),
    }
}

// ---- leases and nodes ----

async fn list_leases(State(st): State<AppState>) -> Json<Vec<Lease>> {
    Json(st.replica.read(|s| s.leases()))
}

/// The operator (or, later, the Kubernetes watcher) confirms a node gone: its allocations,
/// quarantined or not, are released.
async fn node_gone(State(st): State<AppState>, Path(node): Path<String>) -> ApiResult<Response> {
    let out = propose(&st, Command::NodeGone { node: node.clone() }).await?;
    tracing::warn!(%node, "node declared gone: its allocations are released");
    Ok(output_response(out))
}

// ---- cluster ----

async fn cluster(State(st): State<AppState>) -> Json<ClusterStatus> {
    Json(st.replica.status())
}

/// Builds a snapshot on this replica now (compacting its log) and answers its status after.
async fn snapshot_now(State(st): State<AppState>) -> Result<Json<ClusterStatus>, ApiError> {
    st.replica.snapshot_now().await.map(Json).map_err(ApiError)
}

fn raft_err(e: impl std::fmt::Display, replica: &Replica) -> ApiError {
    let s = replica.status();
    if s.leader_id != Some(replica.id) {
        return ApiError(IpamError::NotLeader { leader_id: s.leader_id, leader: s.leader.map(|n| n.rest_addr) });
    }
    ApiError(IpamError::Unavailable { reason: e.to_string() })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LearnerBody {
    id: u64,
    grpc_addr: String,
    rest_addr: String,
}

/// Adds a replica as a learner and waits until it has caught up with the log.
async fn add_learner(State(st): State<AppState>, ApiJson(b): ApiJson<LearnerBody>) -> ApiResult<Json<ClusterStatus>> {
    if b.id == 0 {
        return Err(IpamError::invalid("id", "must be positive").into());
    }
    let node = NodeInfo { raft_addr: b.grpc_addr, rest_addr: b.rest_addr };
    st.replica.raft.add_learner(b.id, node, true).await.map_err(|e| raft_err(e, &st.replica))?;
    tracing::info!(id = b.id, "learner added");
    Ok(Json(st.replica.status()))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct VoterBody {
    id: u64,
}

/// Promotes a learner to voter.
async fn promote_voter(State(st): State<AppState>, ApiJson(b): ApiJson<VoterBody>) -> ApiResult<Json<ClusterStatus>> {
    let ids = BTreeSet::from([b.id]);
    st.replica
        .raft
        .change_membership(ChangeMembers::AddVoterIds(ids), true)
        .await
        .map_err(|e| raft_err(e, &st.replica))?;
    tracing::info!(id = b.id, "learner promoted to voter");
    Ok(Json(st.replica.status()))
}

/// Removes a replica: a voter is demoted and dropped, a learner dropped.
async fn remove_member(State(st): State<AppState>, Path(id): Path<u64>) -> ApiResult<Json<ClusterStatus>> {
    let status = st.replica.status();
    if !status.members.contains_key(&id) {
        return Err(IpamError::invalid("id", format!("{id} is not a member")).into());
    }
    let ids = BTreeSet::from([id]);
    if status.voters.contains(&id) {
        st.replica
            .raft
            .change_membership(ChangeMembers::RemoveVoters(ids.clone()), false)
            .await
            .map_err(|e| raft_err(e, &st.replica))?;
    }
    if st.replica.status().members.contains_key(&id) {
        st.replica
            .raft
            .change_membership(ChangeMembers::RemoveNodes(ids), false)
            .await
            .map_err(|e| raft_err(e, &st.replica))?;
    }
    tracing::info!(id, "replica removed from the cluster");
    Ok(Json(st.replica.status()))
}

// ---- health, metrics, spec ----

/// Ready when this replica knows a leader (so writes can be served, here or forwarded).
async fn readyz(State(st): State<AppState>) -> (StatusCode, &'static str) {
    match st.replica.status().leader_id {
        Some(_) => (StatusCode::OK, "ready"),
        None => (StatusCode::SERVICE_UNAVAILABLE, "no leader"),
    }
}

async fn render_metrics(State(st): State<AppState>) -> impl IntoResponse {
    let status = st.replica.status();
    let storage = st.storage.read();
    st.replica.read(|s| crate::metrics::refresh(&status, s, &storage));
    ([("content-type", "text/plain; version=0.0.4")], st.metrics.render())
}

async fn openapi() -> Json<Value> {
    Json(crate::openapi::spec())
}
