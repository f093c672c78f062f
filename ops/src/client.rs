//! [`Client`]: the allocator's REST API as typed calls, over a list of servers.
//!
//! Failover: servers are tried in order, moving on only when a request certainly did not reach
//! the server (the connection failed), or, for reads, when it got no answer. A write that got no
//! answer may have been applied, so it is reported (`interrupted`), never repeated elsewhere.
//!
//! Redirect: writes to pools, VLANs, reservations and allocations are forwarded to the leader by
//! the server itself. Membership changes are not; a `not_leader` refusal of one names the
//! leader's REST address, and the call is made there once more.

use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

use hc_api::types::{
    AllocateRequest, Allocated, Allocation, Lease, PoolSpec, PoolStatus, ReleaseTarget, Released, Reservation, VlanSpec,
};
use reqwest::header::CONTENT_TYPE;
use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::cli::{Server, parse_server};
use crate::cluster_status::ClusterStatus;

/// A connection that takes longer than this is treated as failed, and the next server is tried.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

pub struct Client {
    http: reqwest::Client,
    /// Tried in this order for every call.
    servers: Vec<Server>,
}

/// Why a call failed.
#[derive(Debug)]
pub enum ClientError {
    /// A server answered with an error.
    Refused(Refusal),
    /// No server accepted the request: each one tried, with why.
    Unreachable { tried: Vec<(String, String)> },
    /// A write was sent but no answer came back: it may or may not have been applied.
    Interrupted { server: String, reason: String },
    /// A server answered with something hcctl does not understand.
    BadResponse { server: String, reason: String },
    /// The HTTP client could not be built.
    Setup(String),
}

/// An error reply: `{"kind": …, "message": …, …}` from the API, or whatever else came back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The API's snake_case error kind, or `http_<status>` when the body was not an API error.
    pub kind: String,
    pub message: String,
    /// For `not_leader`: where the leader is, if known.
    pub leader: Option<String>,
}

impl Refusal {
    fn decode(status: StatusCode, body: &[u8]) -> Refusal {
        #[derive(Deserialize)]
        struct ApiErrorBody {
            kind: String,
            message: String,
            #[serde(default)]
            leader: Option<String>,
        }
        match serde_json::from_slice::<ApiErrorBody>(body) {
            Ok(e) => Refusal { kind: e.kind, message: e.message, leader: e.leader },
            Err(_) => {
                let text = String::from_utf8_lossy(body).trim().to_owned();
                let message = if text.is_empty() {
                    status.canonical_reason().unwrap_or("no reason given").to_owned()
                } else {
                    text
                };
                Refusal { kind: format!("http_{}", status.as_u16()), message, leader: None }
            }
        }
    }
}

impl ClientError {
    /// The kind printed after the message: the API's own kind for refusals.
    pub fn kind(&self) -> &str {
        match self {
            ClientError::Refused(refusal) => &refusal.kind,
            ClientError::Unreachable { .. } => "unreachable",
            ClientError::Interrupted { .. } => "interrupted",
            ClientError::BadResponse { .. } => "bad_response",
            ClientError::Setup(_) => "client_setup",
        }
    }
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientError::Refused(refusal) => f.write_str(&refusal.message),
            ClientError::Unreachable { tried } => {
                f.write_str("could not reach any allocator")?;
                for (i, (server, reason)) in tried.iter().enumerate() {
                    write!(f, "{} {server}: {reason}", if i == 0 { ":" } else { ";" })?;
                }
                Ok(())
            }
            ClientError::Interrupted { server, reason } => {
                write!(f, "no answer from {server} ({reason}); the change may or may not have been applied")
            }
            ClientError::BadResponse { server, reason } => {
                write!(f, "unexpected answer from {server}: {reason}")
            }
            ClientError::Setup(reason) => write!(f, "cannot set up the HTTP client: {reason}"),
        }
    }
}

/// One API call, kept whole so that it can be sent again to another server.
struct Call {
    method: Method,
    path: Vec<String>,
    query: Vec<(&'static str, String)>,
    body: Option<Vec<u8>>,
    /// Follow a `not_leader` refusal to the leader it names (membership changes only).
    follow_leader: bool,
}

impl Call {
    fn new(method: Method, path: &[&str]) -> Call {
        Call {
            method,
            path: path.iter().map(|s| (*s).to_owned()).collect(),
            query: Vec::new(),
            body: None,
            follow_leader: false,
        }
    }

    fn get(path: &[&str]) -> Call {
        Call::new(Method::GET, path)
    }

    fn with_body<T: Serialize>(mut self, body: &T) -> Result<Call, ClientError> {
        let bytes = serde_json::to_vec(body).map_err(|e| ClientError::Setup(format!("cannot encode request: {e}")))?;
        self.body = Some(bytes);
        Ok(self)
    }

    fn membership(mut self) -> Call {
        self.follow_leader = true;
        self
    }
}

/// A status and body from a server.
struct Answer {
    server: String,
    status: StatusCode,
    body: Vec<u8>,
}

/// What sending a call to one server gave.
enum Attempt {
    Answered(Answer),
    /// The request certainly never reached the server.
    NotSent(String),
    /// The request may have reached the server, but no answer came back.
    Lost(String),
}

impl Client {
    pub fn new(servers: Vec<Server>, timeout: Duration) -> Result<Client, ClientError> {
        let http = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(timeout)
            // Replicas are addressed directly; an HTTP proxy from the environment would stand
            // between hcctl and the failover it does itself.
            .no_proxy()
            .user_agent(concat!("hcctl/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| ClientError::Setup(e.to_string()))?;
        Ok(Client { http, servers })
    }

    // ---- pools ----

    pub async fn list_pools(&self) -> Result<Vec<PoolStatus>, ClientError> {
        self.json(Call::get(&["v1", "pools"])).await
    }

    pub async fn get_pool(&self, name: &str) -> Result<PoolStatus, ClientError> {
        self.json(Call::get(&["v1", "pools", name])).await
    }

    pub async fn create_pool(&self, spec: &PoolSpec) -> Result<PoolStatus, ClientError> {
        self.json(Call::new(Method::POST, &["v1", "pools"]).with_body(spec)?).await
    }

    /// Replaces the spec of the pool `spec` names.
    pub async fn update_pool(&self, spec: &PoolSpec) -> Result<PoolStatus, ClientError> {
        self.json(Call::new(Method::PUT, &["v1", "pools", &spec.name]).with_body(spec)?).await
    }

    pub async fn delete_pool(&self, name: &str, force: bool) -> Result<(), ClientError> {
        let mut call = Call::new(Method::DELETE, &["v1", "pools", name]);
        if force {
            call.query.push(("force", "true".to_owned()));
        }
        self.execute(call).await.map(drop)
    }

    // ---- VLANs ----

    pub async fn list_vlans(&self) -> Result<Vec<VlanSpec>, ClientError> {
        self.json(Call::get(&["v1", "vlans"])).await
    }

    pub async fn put_vlan(&self, vlan: &VlanSpec) -> Result<VlanSpec, ClientError> {
        self.json(Call::new(Method::POST, &["v1", "vlans"]).with_body(vlan)?).await
    }

    pub async fn delete_vlan(&self, id: u16) -> Result<(), ClientError> {
        self.execute(Call::new(Method::DELETE, &["v1", "vlans", &id.to_string()])).await.map(drop)
    }

    // ---- reservations ----

    pub async fn list_reservations(&self) -> Result<Vec<Reservation>, ClientError> {
        self.json(Call::get(&["v1", "reservations"])).await
    }

    pub async fn get_reservation(&self, key: &str) -> Result<Reservation, ClientError> {
        self.json(Call::get(&["v1", "reservations", key])).await
    }

    pub async fn put_reservation(&self, r: &Reservation) -> Result<Reservation, ClientError> {
        self.json(Call::new(Method::POST, &["v1", "reservations"]).with_body(r)?).await
    }

    pub async fn delete_reservation(&self, key: &str) -> Result<(), ClientError> {
        self.execute(Call::new(Method::DELETE, &["v1", "reservations", key])).await.map(drop)
    }

    // ---- allocations, leases, nodes ----

    /// Allocations, each filter applied when given.
    pub async fn list_allocations(
        &self,
        pool: Option<&str>,
        node: Option<&str>,
        namespace: Option<&str>,
    ) -> Result<Vec<Allocation>, ClientError> {
        let mut call = Call::get(&["v1", "allocations"]);
        for (name, value) in [("pool", pool), ("node", node), ("namespace", namespace)] {
            if let Some(v) = value {
                call.query.push((name, v.to_owned()));
            }
        }
        self.json(call).await
    }

    pub async fn get_allocation(&self, address: IpAddr) -> Result<Allocation, ClientError> {
        self.json(Call::get(&["v1", "allocations", &address.to_string()])).await
    }

    pub async fn allocate(&self, req: &AllocateRequest) -> Result<Allocated, ClientError> {
        self.json(Call::new(Method::POST, &["v1", "allocations"]).with_body(req)?).await
    }

    pub async fn release_address(&self, address: IpAddr) -> Result<Released, ClientError> {
        self.json(Call::new(Method::DELETE, &["v1", "allocations", &address.to_string()])).await
    }

    pub async fn release(&self, target: &ReleaseTarget) -> Result<Released, ClientError> {
        self.json(Call::new(Method::POST, &["v1", "allocations", "release"]).with_body(target)?).await
    }

    pub async fn list_leases(&self) -> Result<Vec<Lease>, ClientError> {
        self.json(Call::get(&["v1", "leases"])).await
    }

    pub async fn node_gone(&self, node: &str) -> Result<Released, ClientError> {
        self.json(Call::new(Method::POST, &["v1", "nodes", node, "gone"])).await
    }

    // ---- cluster ----

    pub async fn cluster_status(&self) -> Result<ClusterStatus, ClientError> {
        self.json(Call::get(&["v1", "cluster"])).await
    }

    pub async fn add_learner(&self, id: u64, grpc_addr: &str, rest_addr: &str) -> Result<ClusterStatus, ClientError> {
        let body = json!({"id": id, "grpc_addr": grpc_addr, "rest_addr": rest_addr});
        self.json(Call::new(Method::POST, &["v1", "cluster", "learners"]).with_body(&body)?.membership()).await
    }

    pub async fn promote_voter(&self, id: u64) -> Result<ClusterStatus, ClientError> {
        let body = json!({"id": id});
        self.json(Call::new(Method::POST, &["v1", "cluster", "voters"]).with_body(&body)?.membership()).await
    }

    pub async fn remove_member(&self, id: u64) -> Result<ClusterStatus, ClientError> {
        self.json(Call::new(Method::DELETE, &["v1", "cluster", "members", &id.to_string()]).membership()).await
    }

    /// Builds a snapshot on the replica that answers (each replica keeps its own).
    pub async fn snapshot_now(&self) -> Result<ClusterStatus, ClientError> {
        self.json(Call::new(Method::POST, &["v1", "cluster", "snapshot"])).await
    }

    // ---- transport ----

    async fn json<T: DeserializeOwned>(&self, call: Call) -> Result<T, ClientError> {
        let answer = self.execute(call).await?;
        serde_json::from_slice(&answer.body).map_err(|e| ClientError::BadResponse {
            server: answer.server,
            reason: format!("cannot decode the reply ({e}): {}", String::from_utf8_lossy(&answer.body)),
        })
    }

    /// Sends `call` to the first server that takes it; returns a success answer.
    async fn execute(&self, call: Call) -> Result<Answer, ClientError> {
        let mut tried = Vec::new();
        for server in &self.servers {
            match self.attempt(server, &call).await {
                Attempt::Answered(answer) => return self.check(&call, answer).await,
                Attempt::NotSent(reason) => tried.push((server.to_string(), reason)),
                // A read can be asked again anywhere.
                Attempt::Lost(reason) if call.method == Method::GET => tried.push((server.to_string(), reason)),
                Attempt::Lost(reason) => {
                    return Err(ClientError::Interrupted { server: server.to_string(), reason });
                }
            }
        }
        Err(ClientError::Unreachable { tried })
    }

    /// A success answer as is; a refusal as an error, after following a `not_leader` once when
    /// the call allows it.
    async fn check(&self, call: &Call, answer: Answer) -> Result<Answer, ClientError> {
        if answer.status.is_success() {
            return Ok(answer);
        }
        let refusal = Refusal::decode(answer.status, &answer.body);
        let leader = refusal.leader.as_deref().and_then(|l| parse_server(l).ok());
        match leader {
            Some(leader) if call.follow_leader && refusal.kind == "not_leader" => {
                match self.attempt(&leader, call).await {
                    Attempt::Answered(a) if a.status.is_success() => Ok(a),
                    Attempt::Answered(a) => Err(ClientError::Refused(Refusal::decode(a.status, &a.body))),
                    Attempt::NotSent(reason) => Err(ClientError::Unreachable {
                        tried: vec![(format!("{leader} (the leader, named by {})", answer.server), reason)],
                    }),
                    Attempt::Lost(reason) => Err(ClientError::Interrupted { server: leader.to_string(), reason }),
                }
            }
            _ => Err(ClientError::Refused(refusal)),
        }
    }

    async fn attempt(&self, server: &Server, call: &Call) -> Attempt {
        let path: Vec<&str> = call.path.iter().map(String::as_str).collect();
        let mut req = self.http.request(call.method.clone(), server.url(&path));
        if !call.query.is_empty() {
            req = req.query(&call.query);
        }
        if let Some(body) = &call.body {
            req = req.header(CONTENT_TYPE, "application/json").body(body.clone());
        }
        let resp = match req.send().await {
            Ok(resp) => resp,
            Err(e) if e.is_connect() => return Attempt::NotSent(root_cause(&e)),
            Err(e) => return Attempt::Lost(root_cause(&e)),
        };
        let status = resp.status();
        match resp.bytes().await {
            Ok(body) => Attempt::Answered(Answer { server: server.to_string(), status, body: body.to_vec() }),
            Err(e) => Attempt::Lost(root_cause(&e)),
        }
    }
}

/// The innermost cause ("Connection refused (os error 111)", "operation timed out"), which says
/// more than reqwest's "error sending request for url (…)".
fn root_cause(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        return "timed out".to_owned();
    }
    let mut cause: &dyn std::error::Error = e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}

#[cfg(test)]
mod tests {
    //! The client against tiny fake servers on 127.0.0.1:0, each answering a fixed script.

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;
    use tokio::task::JoinHandle;

    use super::*;

    /// One request as the fake server saw it.
    #[derive(Debug)]
    struct Seen {
        /// `METHOD /path?query`
        line: String,
        body: String,
    }

    /// Serves `replies` (status, JSON body) to successive connections, then returns what it saw.
    async fn fake_server(replies: Vec<(u16, String)>) -> (Server, JoinHandle<Vec<Seen>>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let server = parse_server(&listener.local_addr().expect("addr").to_string()).expect("server");
        let task = tokio::spawn(async move {
            let mut seen = Vec::new();
            for (status, body) in replies {
                let (mut conn, _) = listener.accept().await.expect("accept");
                let mut buf = Vec::new();
                let header_end = loop {
                    let mut chunk = [0u8; 4096];
                    let n = conn.read(&mut chunk).await.expect("read");
                    assert!(n > 0, "client closed early");
                    buf.extend_from_slice(&chunk[..n]);
                    if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        break i + 4;
                    }
                };
                let head = String::from_utf8_lossy(&buf[..header_end]).to_string();
                let length: usize = head
                    .lines()
                    .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().to_owned()))
                    .map(|v| v.parse().expect("length"))
                    .unwrap_or(0);
                while buf.len() < header_end + length {
                    let mut chunk = [0u8; 4096];
                    let n = conn.read(&mut chunk).await.expect("read");
                    buf.extend_from_slice(&chunk[..n]);
                }
                let line =
                    head.lines().next().unwrap_or("").rsplit_once(' ').map(|(l, _)| l.to_owned()).unwrap_or_default();
                seen.push(Seen { line, body: String::from_utf8_lossy(&buf[header_end..]).to_string() });
                let reply = format!(
                    "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                conn.write_all(reply.as_bytes()).await.expect("write");
                conn.shutdown().await.expect("shutdown");
            }
            seen
        });
        (server, task)
    }

    /// A port nothing listens on: bound, then released.
    async fn closed_port() -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        drop(listener);
        parse_server(&addr.to_string()).expect("server")
    }

    fn client(servers: Vec<Server>) -> Client {
        Client::new(servers, Duration::from_secs(10)).expect("client")
    }

    const STATUS: &str = r#"{"id":2,"leader_id":2,"leader":{"raft_addr":"a:1","rest_addr":"a:2"},"term":3,
        "last_log_index":9,"committed_index":9,"applied_index":9,"snapshot_index":null,"purged_index":null,
        "voters":[1,2],"learners":[3],"members":{"1":{"raft_addr":"b:1","rest_addr":"b:2"},
        "2":{"raft_addr":"a:1","rest_addr":"a:2"},"3":{"raft_addr":"c:1","rest_addr":"c:2"}}}"#;

    #[tokio::test(flavor = "current_thread")]
    async fn fails_over_past_a_closed_port() {
        let dead = closed_port().await;
        let (live, seen) = fake_server(vec![(200, "[]".into())]).await;
        let pools = client(vec![dead, live]).list_pools().await.expect("second server answers");
        assert!(pools.is_empty());
        assert_eq!(seen.await.expect("server")[0].line, "GET /v1/pools");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn unreachable_names_every_server_tried() {
        let (a, b) = (closed_port().await, closed_port().await);
        let err = client(vec![a.clone(), b.clone()]).list_pools().await.expect_err("must fail");
        assert_eq!(err.kind(), "unreachable");
        let text = err.to_string();
        assert!(text.contains(&a.to_string()) && text.contains(&b.to_string()), "{text}");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn membership_change_follows_not_leader_once() {
        let (leader, leader_seen) = fake_server(vec![(200, STATUS.into())]).await;
        let redirect =
            json!({"kind": "not_leader", "message": "not the leader", "leader_id": 2, "leader": leader.to_string()});
        let (follower, follower_seen) = fake_server(vec![(421, redirect.to_string())]).await;
        let status = client(vec![follower]).promote_voter(3).await.expect("leader answers");
        assert_eq!(status.leader_id, Some(2));
        assert_eq!(follower_seen.await.expect("server")[0].line, "POST /v1/cluster/voters");
        let at_leader = leader_seen.await.expect("server");
        assert_eq!(at_leader[0].line, "POST /v1/cluster/voters");
        assert_eq!(serde_json::from_str::<serde_json::Value>(&at_leader[0].body).expect("json"), json!({"id": 3}));
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_second_not_leader_is_reported_not_chased() {
        let (b, _) = fake_server(vec![]).await;
        let to_b = json!({"kind": "not_leader", "message": "ask b", "leader": b.to_string()}).to_string();
        let (c, c_seen) = fake_server(vec![(421, to_b.clone())]).await;
        let to_c = json!({"kind": "not_leader", "message": "ask c", "leader": c.to_string()}).to_string();
        let (a, _) = fake_server(vec![(421, to_c)]).await;
        let err = client(vec![a]).remove_member(3).await.expect_err("must fail");
        assert_eq!((err.kind(), err.to_string().as_str()), ("not_leader", "ask b"));
        assert_eq!(c_seen.await.expect("server")[0].line, "DELETE /v1/cluster/members/3");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn data_writes_do_not_follow_not_leader() {
        // The server forwards data writes itself; its `leader` there is a gRPC address.
        let redirect =
            json!({"kind": "not_leader", "message": "no leader", "leader_id": null, "leader": "127.0.0.1:1"});
        let (a, _) = fake_server(vec![(421, redirect.to_string())]).await;
        let err = client(vec![a]).node_gone("n1").await.expect_err("must fail");
        assert_eq!(err.kind(), "not_leader");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn refusals_keep_the_api_kind_and_message() {
        let body = json!({"kind": "pool_not_found", "message": "pool x does not exist", "pool": "x"});
        let (a, _) =
            fake_server(vec![(404, body.to_string()), (422, "Failed to deserialize the JSON body".into())]).await;
        let c = client(vec![a]);
        let err = c.get_pool("x").await.expect_err("must fail");
        assert_eq!((err.kind(), err.to_string().as_str()), ("pool_not_found", "pool x does not exist"));
        let err = c.put_vlan(&VlanSpec { id: 5, name: String::new(), nodes: vec![] }).await.expect_err("must fail");
        assert_eq!((err.kind(), err.to_string().as_str()), ("http_422", "Failed to deserialize the JSON body"));
    }

    #[tokio::test(flavor = "current_thread")]
    async fn request_paths_queries_and_bodies() {
        let released = r#"{"released":[]}"#.to_owned();
        let (a, seen) = fake_server(vec![
            (204, String::new()),
            (200, "[]".into()),
            (200, released.clone()),
            (200, released),
            (204, String::new()),
        ])
        .await;
        let c = client(vec![a]);
        c.delete_reservation("db/mysql/0").await.expect("deleted");
        c.list_allocations(Some("blue"), None, Some("db")).await.expect("listed");
        c.release_address("fd00::5".parse().expect("ip")).await.expect("released");
        let target =
            ReleaseTarget::Owner(hc_api::types::AttachmentId { container_id: "c1".into(), interface: "eth0".into() });
        c.release(&target).await.expect("released");
        c.delete_pool("blue", true).await.expect("deleted");
        let seen = seen.await.expect("server");
        let lines: Vec<&str> = seen.iter().map(|s| s.line.as_str()).collect();
        assert_eq!(
            lines,
            [
                "DELETE /v1/reservations/db%2Fmysql%2F0",
                "GET /v1/allocations?pool=blue&namespace=db",
                "DELETE /v1/allocations/fd00::5",
                "POST /v1/allocations/release",
                "DELETE /v1/pools/blue?force=true",
            ]
        );
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&seen[3].body).expect("json"),
            json!({"owner": {"container_id": "c1", "interface": "eth0"}})
        );
    }

    #[tokio::test(flavor = "current_thread")]
    async fn an_undecodable_reply_is_a_bad_response() {
        // e.g. `null` where a list was expected.
        let (a, _) = fake_server(vec![(200, "null".into())]).await;
        let err = client(vec![a]).list_pools().await.expect_err("must fail");
        assert_eq!(err.kind(), "bad_response");
    }
}
