//! A cluster of real `hc-allocator` processes on loopback, each with its own RocksDB data
//! directory, for the integration tests. Processes are killed when the harness is dropped,
//! also when a test fails.
#![allow(dead_code, clippy::unwrap_used)]

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use hc_api::client::{Client, ClientConfig};
use hc_api::types::{AllocateRequest, Owner, PoolSpec};

pub fn pool(name: &str, cidr: &str) -> PoolSpec {
    serde_json::from_value(serde_json::json!({"name": name, "cidr": cidr})).unwrap()
}

/// A free loopback port: bound to port 0, then released for the child to bind. (A port can in
/// principle be taken by someone else in between; `Cluster::start` then starts afresh.)
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// The `hc-allocator` binary: Cargo's path when this harness is compiled into the allocator's
/// tests, else the one beside the test executable's directory (`target/debug/`), which
/// `cargo build --workspace` puts there.
pub fn allocator_bin() -> PathBuf {
    if let Some(p) = option_env!("CARGO_BIN_EXE_hc-allocator") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().unwrap();
    let bin = exe.parent().and_then(|deps| deps.parent()).unwrap().join("hc-allocator");
    assert!(bin.exists(), "{} is missing: run `cargo build --workspace` first", bin.display());
    bin
}

pub struct Replica {
    pub id: u64,
    pub grpc: String,
    pub rest: String,
    pub data_dir: PathBuf,
    pub child: Option<Child>,
    pub log: PathBuf,
}

pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub replicas: Vec<Replica>,
    pub extra_args: Vec<String>,
}

impl Cluster {
    /// Starts `n` replicas founding one cluster and waits until there is a leader.
    pub async fn start(n: usize, extra_args: &[&str]) -> Cluster {
        let extra_args = extra_args.iter().map(|s| s.to_string()).collect();
        let mut cluster = Cluster { dir: tempfile::tempdir().unwrap(), replicas: Vec::new(), extra_args };
        // A port picked by `free_port` can be taken (e.g. as the local port of some outgoing
        // connection) before the replica binds it; the replica then exits. Such an attempt is
        // thrown away and the cluster is started afresh on new ports and in new directories.
        for attempt in 1..=3 {
            let dir = cluster.dir.path().to_owned();
            cluster.replicas = (1..=n as u64)
                .map(|id| Replica {
                    id,
                    grpc: format!("127.0.0.1:{}", free_port()),
                    rest: format!("127.0.0.1:{}", free_port()),
                    data_dir: dir.join(format!("a{attempt}-r{id}")),
                    child: None,
                    log: dir.join(format!("a{attempt}-r{id}.log")),
                })
                .collect();
            for i in 0..n {
                cluster.spawn(i);
            }
            if cluster.wait_all_serving(Duration::from_secs(30)).await {
                cluster.leader_async(Duration::from_secs(20)).await;
                return cluster;
            }
            eprintln!("cluster start-up attempt {attempt} failed; its logs follow, then a retry on new ports");
            cluster.dump_logs();
            for i in 0..n {
                cluster.kill(i);
            }
        }
        panic!("the cluster did not start in 3 attempts");
    }

    /// Whether every replica answers a gRPC status call before `timeout`; false as soon as one
    /// of the processes has exited.
    async fn wait_all_serving(&mut self, timeout: Duration) -> bool {
        let client = self.client();
        let deadline = Instant::now() + timeout;
        for i in 0..self.replicas.len() {
            while client.status_at(i).await.is_err() {
                let exited = self.replicas[i].child.as_mut().is_none_or(|c| !matches!(c.try_wait(), Ok(None)));
                if exited || Instant::now() > deadline {
                    eprintln!("replica {} is not serving (exited: {exited})", self.replicas[i].id);
                    return false;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        true
    }

    pub fn initial_cluster(&self) -> String {
        self.replicas.iter().map(|r| format!("{}={}/{}", r.id, r.grpc, r.rest)).collect::<Vec<_>>().join(",")
    }

    /// (Re)starts replica `i` from its data directory.
    pub fn spawn(&mut self, i: usize) {
        let initial = self.initial_cluster();
        self.spawn_with(i, Some(&initial));
    }

    /// Adds a replica that is not a founding member (it waits to be added as a learner).
    pub fn add_unstarted(&mut self) -> usize {
        let id = self.replicas.iter().map(|r| r.id).max().unwrap_or(0) + 1;
        self.replicas.push(Replica {
            id,
            grpc: format!("127.0.0.1:{}", free_port()),
            rest: format!("127.0.0.1:{}", free_port()),
            data_dir: self.dir.path().join(format!("r{id}")),
            child: None,
            log: self.dir.path().join(format!("r{id}.log")),
        });
        let i = self.replicas.len() - 1;
        self.spawn_with(i, None);
        i
    }

    fn spawn_with(&mut self, i: usize, initial: Option<&str>) {
        let r = &mut self.replicas[i];
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&r.log).unwrap();
        let child = Command::new(allocator_bin())
            .arg("--id")
            .arg(r.id.to_string())
            .arg("--data-dir")
            .arg(&r.data_dir)
            .arg("--grpc-addr")
            .arg(&r.grpc)
            .arg("--rest-addr")
            .arg(&r.rest)
            .args(initial.map(|c| ["--initial-cluster", c]).into_iter().flatten())
            .args(&self.extra_args)
            .env("HC_LOG", "info,openraft=warn")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        r.child = Some(child);
    }

    /// Waits until replica `i` serves REST (`/healthz`), e.g. after `add_unstarted`.
    pub async fn wait_healthy(&self, i: usize, timeout: Duration) {
        let http = reqwest::Client::new();
        let deadline = Instant::now() + timeout;
        let url = format!("http://{}/healthz", self.replicas[i].rest);
        while !http.get(&url).send().await.is_ok_and(|r| r.status().is_success()) {
            if Instant::now() > deadline {
                self.dump_logs();
                panic!("replica {} not healthy within {timeout:?}", self.replicas[i].id);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// `kill -9` of replica `i`.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.replicas[i].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn pid(&self, i: usize) -> Option<u32> {
        self.replicas[i].child.as_ref().map(|c| c.id())
    }

    pub fn endpoints(&self) -> Vec<String> {
        self.replicas.iter().map(|r| r.grpc.clone()).collect()
    }

    /// A client whose first choice is replica `first` (writes through a follower are forwarded).
    pub fn client_via(&self, first: usize) -> Client {
        let mut eps = self.endpoints();
        let n = eps.len();
        eps.rotate_left(first % n);
        let config = ClientConfig { deadline: Duration::from_secs(30), attempt_timeout: Duration::from_secs(3) };
        // Stay on the chosen replica: these tests exercise writes through followers.
        Client::new(eps, config).map(Client::stay_on_endpoint).unwrap()
    }

    /// A client for direct per-replica reads (`status_at`, `list_allocations_at` by index).
    pub fn client(&self) -> Client {
        self.client_via(0)
    }

    /// Index of the running replica that is leader and says so itself; waits until one is.
    pub async fn leader_async(&self, timeout: Duration) -> usize {
        let client = self.client();
        let deadline = Instant::now() + timeout;
        loop {
            for (i, r) in self.replicas.iter().enumerate() {
                if r.child.is_none() {
                    continue;
                }
                if let Ok(s) = client.status_at(i).await
                    && let Some(l) = s.leader_id
                    && let Some(idx) = self.replicas.iter().position(|r| r.id == l && r.child.is_some())
                    && client.status_at(idx).await.map(|s| s.leader_id == Some(l)).unwrap_or(false)
                {
                    return idx;
                }
            }
            if Instant::now() > deadline {
                self.dump_logs();
                panic!("no leader within {timeout:?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until every running replica has applied at least `index`.
    pub async fn wait_applied(&self, index: u64, timeout: Duration) {
        let client = self.client();
        let deadline = Instant::now() + timeout;
        for (i, r) in self.replicas.iter().enumerate() {
            if r.child.is_none() {
                continue;
            }
            loop {
                let applied = client.status_at(i).await.map(|s| s.last_applied).unwrap_or(0);
                if applied >= index {
                    break;
                }
                if Instant::now() > deadline {
                    self.dump_logs();
                    panic!("replica {} applied {applied} < {index} after {timeout:?}", r.id);
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }

    /// Waits until every running replica has applied everything the leader has committed, so
    /// that reads from any replica see all acknowledged writes.
    pub async fn sync(&self) {
        let leader = self.leader_async(Duration::from_secs(20)).await;
        let commit = self.client().status_at(leader).await.unwrap().committed;
        self.wait_applied(commit, Duration::from_secs(30)).await;
    }

    pub fn dump_logs(&self) {
        for r in &self.replicas {
            let text = std::fs::read_to_string(&r.log).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(40).collect();
            eprintln!("---- replica {} log (last 40 lines) ----", r.id);
            for l in tail.iter().rev() {
                eprintln!("{l}");
            }
        }
    }

    /// Resident memory of replica `i` in bytes (from /proc).
    pub fn rss_bytes(&self, i: usize) -> u64 {
        let pid = self.pid(i).unwrap();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        let kb: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap();
        kb * 1024
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for i in 0..self.replicas.len() {
            self.kill(i);
        }
        if std::thread::panicking() {
            self.dump_logs();
        }
    }
}

/// A REST call helper: (status, JSON body).
pub async fn rest(
    http: &reqwest::Client,
    method: reqwest::Method,
    base: &str,
    path: &str,
    body: Option<serde_json::Value>,
) -> (u16, serde_json::Value) {
    let mut req = http.request(method, format!("http://{base}{path}"));
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text)))
}

pub fn request(pool: &str, container: &str) -> AllocateRequest {
    AllocateRequest {
        owner: Owner {
            container_id: container.to_owned(),
            interface: "eth0".into(),
            namespace: "default".into(),
            pod: container.to_owned(),
            node: "node-a".into(),
        },
        pool: Some(pool.to_owned()),
        ..Default::default()
    }
}

/// Runs `total` allocations over `clients` concurrent clients, client `i` entering through
/// replica `i % n`. Returns every acknowledged (container id → address).
pub async fn allocate_many(
    cluster: &Cluster,
    pool: &str,
    prefix: &str,
    clients: usize,
    total: usize,
    progress: Arc<AtomicUsize>,
) -> HashMap<String, IpAddr> {
    allocate_many_timed(cluster, pool, prefix, clients, total, progress).await.0
}

/// As `allocate_many`, also returning when each acknowledged allocation was started and
/// acknowledged (to measure unavailability around a fault).
pub async fn allocate_many_timed(
    cluster: &Cluster,
    pool: &str,
    prefix: &str,
    clients: usize,
    total: usize,
    progress: Arc<AtomicUsize>,
) -> (HashMap<String, IpAddr>, Vec<(Instant, Instant)>) {
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for c in 0..clients {
        let client = cluster.client_via(c);
        let next = next.clone();
        let progress = progress.clone();
        let pool = pool.to_owned();
        let prefix = prefix.to_owned();
        tasks.push(tokio::spawn(async move {
            let mut acked = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= total {
                    return acked;
                }
                let container = format!("{prefix}-{i}");
                let started = Instant::now();
                // The client retries through leader changes; allocation is idempotent per
                // (container, interface), so a retry after an unknown outcome is safe.
                let a = client
                    .allocate(None, request(&pool, &container))
                    .await
                    .unwrap_or_else(|e| panic!("allocation {container} failed: {e}"));
                assert_eq!(a.allocation.owner.container_id, container);
                acked.push((container, a.allocation.address, started, Instant::now()));
                progress.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    let mut all = HashMap::new();
    let mut spans = Vec::new();
    for t in tasks {
        for (c, a, started, acked) in t.await.unwrap() {
            assert!(all.insert(c, a).is_none());
            spans.push((started, acked));
        }
    }
    (all, spans)
}

pub fn assert_distinct(acked: &HashMap<String, IpAddr>) {
    let addrs: HashSet<IpAddr> = acked.values().copied().collect();
    assert_eq!(addrs.len(), acked.len(), "an address was handed out twice");
}
