//! [`HcCluster`]: three durable `hc-allocator` replicas on loopback, each with its own data
//! directory and log under the run's scratch directory. Replicas can be killed with SIGKILL and
//! restarted from their data directories. Dropping the cluster kills its replicas and removes
//! its directory.

use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use hc_api::client::{Client, ClientConfig};
use tokio::time::{Instant, sleep};

use crate::supervisor::{ProcId, Supervisor, free_port, tail};

/// Start-up attempts with fresh ports (a port picked free may be taken before the child binds).
const START_ATTEMPTS: usize = 3;
const POLL: Duration = Duration::from_millis(20);

#[derive(Debug, thiserror::Error)]
pub enum HcClusterError {
    #[error("cannot start hc-allocator: {0}")]
    Spawn(#[from] std::io::Error),
    #[error("replica {id} exited ({status}); last log lines:\n{log}")]
    Exited { id: u64, status: String, log: String },
    #[error("{what} within {timeout:?}; last log lines of replica {id}:\n{log}")]
    Timeout { what: String, timeout: Duration, id: u64, log: String },
    #[error("hc-allocator client: {0}")]
    Client(#[from] hc_api::IpamError),
}

#[derive(Debug)]
struct Replica {
    id: u64,
    grpc: String,
    rest: String,
    data_dir: PathBuf,
    log: PathBuf,
    proc: Option<ProcId>,
    /// Named in `--initial-cluster`; a replica added later joins as a learner instead.
    founder: bool,
}

#[derive(Debug)]
pub struct HcCluster {
    sup: Arc<Supervisor>,
    bin: PathBuf,
    /// Extra arguments for every replica.
    args: Vec<String>,
    dir: PathBuf,
    replicas: Vec<Replica>,
    /// Per-replica status calls (no retries).
    status: Client,
}

/// Per-call limits of the benchmark's clients. Failover retries happen inside one call.
pub fn client_config() -> ClientConfig {
    ClientConfig { deadline: Duration::from_secs(10), attempt_timeout: Duration::from_secs(3) }
}

impl HcCluster {
    /// Starts three founding replicas in `sup`'s scratch directory `name`, and waits for a leader.
    pub async fn start(
        sup: Arc<Supervisor>,
        bin: PathBuf,
        args: &[String],
        name: &str,
    ) -> Result<HcCluster, HcClusterError> {
        let mut last = None;
        for attempt in 0..START_ATTEMPTS {
            let mut cluster = HcCluster::create(sup.clone(), bin.clone(), args, &format!("{name}-{attempt}"))?;
            match cluster.boot().await {
                Ok(()) => return Ok(cluster),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| HcClusterError::Spawn(std::io::Error::other("no start-up attempt"))))
    }

    fn create(sup: Arc<Supervisor>, bin: PathBuf, args: &[String], name: &str) -> Result<HcCluster, HcClusterError> {
        let dir = sup.path(name);
        std::fs::create_dir_all(&dir)?;
        let mut replicas = Vec::new();
        for id in 1..=3u64 {
            replicas.push(Replica {
                id,
                grpc: format!("127.0.0.1:{}", free_port()?),
                rest: format!("127.0.0.1:{}", free_port()?),
                data_dir: dir.join(format!("r{id}")),
                log: dir.join(format!("r{id}.log")),
                proc: None,
                founder: true,
            });
        }
        let status = Client::new(
            replicas.iter().map(|r| r.grpc.clone()),
            ClientConfig { deadline: Duration::from_secs(2), attempt_timeout: Duration::from_secs(1) },
        )?;
        Ok(HcCluster { sup, bin, args: args.to_vec(), dir, replicas, status })
    }

    async fn boot(&mut self) -> Result<(), HcClusterError> {
        for i in 0..self.replicas.len() {
            self.spawn(i)?;
        }
        self.leader(Duration::from_secs(20)).await.map(|_| ())
    }

    fn initial_cluster(&self) -> String {
        self.replicas
            .iter()
            .filter(|r| r.founder)
            .map(|r| format!("{}={}/{}", r.id, r.grpc, r.rest))
            .collect::<Vec<_>>()
            .join(",")
    }

    fn spawn(&mut self, i: usize) -> Result<(), HcClusterError> {
        let initial = self.initial_cluster();
        let r = &self.replicas[i];
        let mut cmd = Command::new(&self.bin);
        cmd.arg("--id")
            .arg(r.id.to_string())
            .arg("--data-dir")
            .arg(&r.data_dir)
            .arg("--grpc-addr")
            .arg(&r.grpc)
            .arg("--rest-addr")
            .arg(&r.rest);
        if r.founder {
            cmd.arg("--initial-cluster").arg(initial);
        }
        cmd.args(&self.args).env("HC_LOG", "warn");
        let proc = self.sup.spawn(cmd, &r.log)?;
        self.replicas[i].proc = Some(proc);
        Ok(())
    }

    pub fn len(&self) -> usize {
        self.replicas.len()
    }

    pub fn is_empty(&self) -> bool {
        self.replicas.is_empty()
    }

    pub fn name(&self, i: usize) -> String {
        format!("replica {}", self.replicas[i].id)
    }

    /// gRPC endpoints, rotated so that the first is replica `first`.
    pub fn endpoints_from(&self, first: usize) -> Vec<String> {
        let mut eps: Vec<String> = self.replicas.iter().map(|r| r.grpc.clone()).collect();
        let n = eps.len();
        eps.rotate_left(first % n);
        eps
    }

    /// A leader-following client whose first choice is replica `first`.
    pub fn client(&self, first: usize) -> Result<Client, HcClusterError> {
        Ok(Client::new(self.endpoints_from(first), client_config())?)
    }

    fn check_alive(&self) -> Result<(), HcClusterError> {
        for r in &self.replicas {
            if let Some(status) = r.proc.and_then(|p| self.sup.exited(p)) {
                return Err(HcClusterError::Exited { id: r.id, status: status.to_string(), log: tail(&r.log, 30) });
            }
        }
        Ok(())
    }

    fn timeout(&self, what: impl Into<String>, timeout: Duration, i: usize) -> HcClusterError {
        let r = &self.replicas[i];
        HcClusterError::Timeout { what: what.into(), timeout, id: r.id, log: tail(&r.log, 30) }
    }

    /// Raft status of replica `i`, as it answers it.
    pub async fn status_of(&self, i: usize) -> Result<hc_api::proto::StatusReply, HcClusterError> {
        self.status.status_at(i).await.map_err(|e| self.timeout(format!("status: {e}"), Duration::ZERO, i))
    }

    /// Index of the running replica that is leader and says so itself.
    pub async fn leader(&self, timeout: Duration) -> Result<usize, HcClusterError> {
        let deadline = Instant::now() + timeout;
        loop {
            self.check_alive()?;
            for (i, r) in self.replicas.iter().enumerate() {
                if r.proc.is_none() {
                    continue;
                }
                let Ok(s) = self.status.status_at(i).await else { continue };
                let Some(l) = s.leader_id else { continue };
                let Some(li) = self.replicas.iter().position(|r| r.id == l && r.proc.is_some()) else { continue };
                if self.status.status_at(li).await.is_ok_and(|s| s.leader_id == Some(l)) {
                    return Ok(li);
                }
            }
            if Instant::now() > deadline {
                return Err(self.timeout("no leader", timeout, 0));
            }
            sleep(POLL).await;
        }
    }

    /// The running processes, for CPU accounting.
    pub fn procs(&self) -> Vec<ProcId> {
        self.replicas.iter().filter_map(|r| r.proc).collect()
    }

    /// The process of replica `i`, while it runs.
    pub fn proc(&self, i: usize) -> Option<ProcId> {
        self.replicas[i].proc
    }

    /// gRPC and REST `host:port` of replica `i`.
    pub fn addrs(&self, i: usize) -> (&str, &str) {
        (&self.replicas[i].grpc, &self.replicas[i].rest)
    }

    /// Raft id of replica `i`.
    pub fn id(&self, i: usize) -> u64 {
        self.replicas[i].id
    }

    /// Starts one more replica with an empty data directory and no `--initial-cluster`: it
    /// waits to be added to the cluster (as a learner, through the leader's REST API). Returns
    /// its index. The status client only knows the founding replicas; use a separate client for
    /// the new one.
    pub fn spawn_new_replica(&mut self) -> Result<usize, HcClusterError> {
        let id = self.replicas.iter().map(|r| r.id).max().unwrap_or(0) + 1;
        self.replicas.push(Replica {
            id,
            grpc: format!("127.0.0.1:{}", free_port()?),
            rest: format!("127.0.0.1:{}", free_port()?),
            data_dir: self.dir.join(format!("r{id}")),
            log: self.dir.join(format!("r{id}.log")),
            proc: None,
            founder: false,
        });
        let i = self.replicas.len() - 1;
        self.spawn(i)?;
        Ok(i)
    }

    /// `kill -9` of replica `i`.
    pub fn kill(&mut self, i: usize) {
        if let Some(p) = self.replicas[i].proc.take() {
            self.sup.kill(p);
        }
    }

    /// Restarts replica `i` from its data directory.
    pub fn restart(&mut self, i: usize) -> Result<(), HcClusterError> {
        self.kill(i);
        self.spawn(i)
    }

    /// Waits until replica `i` has applied everything the leader had committed when this was
    /// called.
    pub async fn wait_caught_up(&self, i: usize, timeout: Duration) -> Result<(), HcClusterError> {
        let deadline = Instant::now() + timeout;
        let leader = self.leader(timeout).await?;
        let target = loop {
            match self.status.status_at(leader).await {
                Ok(s) => break s.committed,
                Err(_) if Instant::now() < deadline => sleep(POLL).await,
                Err(e) => return Err(e.into()),
            }
        };
        loop {
            self.check_alive()?;
            if self.status.status_at(i).await.is_ok_and(|s| s.last_applied >= target) {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(self.timeout(format!("not caught up to index {target}"), timeout, i));
            }
            sleep(POLL).await;
        }
    }
}

impl Drop for HcCluster {
    fn drop(&mut self) {
        for i in 0..self.replicas.len() {
            self.kill(i);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
