//! The `hc.v1.Ipam` gRPC service: what agents and admin tools call.

use std::sync::Arc;

use hc_allocator_state::{Command, Output};
use hc_api::IpamError;
use hc_api::proto::ipam_server::{Ipam, IpamServer};
use hc_api::proto::{
    CandidatePoolsRequest, GrantLeaseRequest, JsonReply, KeepAliveReply, KeepAliveRequest, LeaseReply,
    ListAllocationsRequest, ProposeReply, ProposeRequest, StatusReply, StatusRequest,
};
use tonic::{Request, Response, Status};

use crate::lease_keeper::LeaseKeeper;
use crate::replica::Replica;

pub struct IpamService {
    replica: Arc<Replica>,
    leases: Arc<LeaseKeeper>,
}

pub fn ipam_service(replica: Arc<Replica>, leases: Arc<LeaseKeeper>) -> IpamServer<IpamService> {
    IpamServer::new(IpamService { replica, leases })
}

fn json<T: serde::Serialize>(v: &T) -> Result<String, Status> {
    serde_json::to_string(v).map_err(|e| Status::internal(format!("encoding reply: {e}")))
}

fn non_empty(s: String) -> Option<String> {
    (!s.is_empty()).then_some(s)
}

#[tonic::async_trait]
impl Ipam for IpamService {
    async fn grant_lease(&self, req: Request<GrantLeaseRequest>) -> Result<Response<LeaseReply>, Status> {
        let req = req.into_inner();
        if req.node.is_empty() {
            return Err(IpamError::invalid("node", "must not be empty").into());
        }
        let (out, _) =
            self.replica.propose(Command::GrantLease { node: req.node.clone(), ttl_ms: req.ttl_ms }, false).await?;
        let Output::Lease(lease) = out else {
            return Err(Status::internal("grant returned no lease"));
        };
        if self.replica.is_leader() {
            self.leases.granted(&lease);
        }
        tracing::info!(node = %lease.node, token = lease.token, ttl_ms = lease.ttl_ms, "lease granted");
        Ok(Response::new(LeaseReply { lease_json: json(&lease)? }))
    }

    async fn keep_alive(&self, req: Request<KeepAliveRequest>) -> Result<Response<KeepAliveReply>, Status> {
        let req = req.into_inner();
        let ttl_ms = if self.replica.is_leader() {
            self.leases.keep_alive(&self.replica, &req.node, req.lease_id, req.token)?
        } else {
            self.replica.forward_keep_alive(req).await?
        };
        Ok(Response::new(KeepAliveReply { ttl_ms }))
    }

    async fn propose(&self, req: Request<ProposeRequest>) -> Result<Response<ProposeReply>, Status> {
        let req = req.into_inner();
        let command: Command =
            serde_json::from_str(&req.command_json).map_err(|e| IpamError::invalid("command_json", e.to_string()))?;
        if matches!(command, Command::Batch(_)) {
            // Batches are formed by the leader from single proposals (`hc-batcher`).
            return Err(IpamError::invalid("command", "Batch is formed by the allocator, not proposed").into());
        }
        if matches!(command, Command::ExpireLease { .. }) && !req.forwarded {
            // Expiry is the leader's decision alone (it is the one that saw no keep-alive).
            return Err(IpamError::invalid("command", "ExpireLease is proposed by the leader only").into());
        }
        let granted = matches!(command, Command::GrantLease { .. });
        let (out, log_index) = self.replica.propose(command, req.forwarded).await?;
        if let (true, Output::Lease(lease)) = (granted && self.replica.is_leader(), &out) {
            self.leases.granted(lease);
        }
        let leader = self.replica.leader().await.1.map(|n| n.raft_addr).unwrap_or_default();
        Ok(Response::new(ProposeReply { output_json: json(&out)?, log_index, leader }))
    }

    async fn list_allocations(&self, req: Request<ListAllocationsRequest>) -> Result<Response<JsonReply>, Status> {
        let req = req.into_inner();
        let (pool, node, ns) = (non_empty(req.pool), non_empty(req.node), non_empty(req.namespace));
        let list = self.replica.read(|s| s.allocations(pool.as_deref(), node.as_deref(), ns.as_deref()));
        Ok(Response::new(JsonReply { json: json(&list)? }))
    }

    async fn candidate_pools(&self, req: Request<CandidatePoolsRequest>) -> Result<Response<JsonReply>, Status> {
        let request: hc_api::types::AllocateRequest = serde_json::from_str(&req.into_inner().request_json)
            .map_err(|e| IpamError::invalid("request_json", e.to_string()))?;
        let pools = self.replica.read(|s| s.candidate_pools(&request))?;
        Ok(Response::new(JsonReply { json: json(&pools)? }))
    }

    async fn status(&self, _req: Request<StatusRequest>) -> Result<Response<StatusReply>, Status> {
        let s = self.replica.status();
        Ok(Response::new(StatusReply {
            id: s.id,
            leader_id: s.leader_id,
            leader_raft_addr: s.leader.map(|n| n.raft_addr).unwrap_or_default(),
            term: s.term,
            last_applied: s.applied_index.unwrap_or(0),
            committed: s.committed_index.unwrap_or(0),
        }))
    }
}
