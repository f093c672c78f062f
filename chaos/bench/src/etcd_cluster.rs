//! [`EtcdCluster`]: a three-member etcd 3.4 on loopback, started as in
//! `../shared/ENVIRONMENT.md`, each member with a fresh data directory under the run's scratch
//! directory. Members can be killed with SIGKILL and restarted from their data directories.
//! Dropping the cluster kills its members and removes its directory.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use etcd_client::{Client, ConnectOptions};
use tokio::time::{Instant, sleep};

use crate::supervisor::{ProcId, Supervisor, free_port, tail};

const START_ATTEMPTS: usize = 3;
const POLL: Duration = Duration::from_millis(20);

#[derive(Debug, thiserror::Error)]
pub enum EtcdClusterError {
    #[error(
        "etcd is not installed or does not run ({bin}: {reason}); install etcd 3.4 with \
         `apt-get install -y etcd-server etcd-client` (scripts/deps.sh) or pass --etcd-bin"
    )]
    Missing { bin: String, reason: String },
    #[error("cannot start etcd: {0}")]
    Spawn(#[from] std::io::Error),
    #[error("etcd member {name} exited ({status}); last log lines:\n{log}")]
    Exited { name: String, status: String, log: String },
    #[error("{what} within {timeout:?}; last log lines of {name}:\n{log}")]
    Timeout { what: String, timeout: Duration, name: String, log: String },
    #[error("etcd client: {0}")]
    Client(#[from] etcd_client::Error),
}

/// `etcd --version`'s version, e.g. `3.4.23`.
pub fn etcd_version(bin: &Path) -> Result<String, EtcdClusterError> {
    let missing = |reason: String| EtcdClusterError::Missing { bin: bin.display().to_string(), reason };
    let out = Command::new(bin).arg("--version").output().map_err(|e| missing(e.to_string()))?;
    if !out.status.success() {
        return Err(missing(format!("`--version` exited with {}", out.status)));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find_map(|l| l.strip_prefix("etcd Version:"))
        .map(|v| v.trim().to_owned())
        .ok_or_else(|| missing(format!("unexpected `--version` output: {text}")))
}

/// Options of every etcd client of the benchmark: the same connect and per-request timeouts as
/// the hc-allocator clients.
pub fn connect_options() -> ConnectOptions {
    ConnectOptions::new().with_connect_timeout(Duration::from_millis(500)).with_timeout(Duration::from_secs(3))
}

#[derive(Debug)]
struct Member {
    name: String,
    client_url: String,
    peer_url: String,
    data_dir: PathBuf,
    log: PathBuf,
    proc: Option<ProcId>,
    /// etcd's member id, learnt from the first status reply.
    id: u64,
}

pub struct EtcdCluster {
    sup: Arc<Supervisor>,
    bin: PathBuf,
    /// Extra arguments for every member.
    args: Vec<String>,
    dir: PathBuf,
    token: String,
    members: Vec<Member>,
    /// One client per member, for maintenance status calls to that member alone.
    status: Vec<Client>,
}

impl std::fmt::Debug for EtcdCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdCluster").field("dir", &self.dir).field("members", &self.members).finish()
    }
}

impl EtcdCluster {
    /// Starts three members in `sup`'s scratch directory `name` and waits until every member
    /// knows the leader.
    pub async fn start(
        sup: Arc<Supervisor>,
        bin: PathBuf,
        args: &[String],
        name: &str,
    ) -> Result<EtcdCluster, EtcdClusterError> {
        let mut last = None;
        for attempt in 0..START_ATTEMPTS {
            let mut cluster = EtcdCluster::create(sup.clone(), bin.clone(), args, &format!("{name}-{attempt}")).await?;
            match cluster.boot().await {
                Ok(()) => return Ok(cluster),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| EtcdClusterError::Spawn(std::io::Error::other("no start-up attempt"))))
    }

    async fn create(
        sup: Arc<Supervisor>,
        bin: PathBuf,
        args: &[String],
        name: &str,
    ) -> Result<EtcdCluster, EtcdClusterError> {
        let dir = sup.path(name);
        std::fs::create_dir_all(&dir)?;
        let mut members = Vec::new();
        let mut status = Vec::new();
        for i in 1..=3 {
            let m = Member {
                name: format!("e{i}"),
                client_url: format!("http://127.0.0.1:{}", free_port()?),
                peer_url: format!("http://127.0.0.1:{}", free_port()?),
                data_dir: dir.join(format!("e{i}")),
                log: dir.join(format!("e{i}.log")),
                proc: None,
                id: 0,
            };
            // Connections are made on first use, so this succeeds before the member runs.
            status.push(Client::connect([m.client_url.as_str()], Some(connect_options())).await?);
            members.push(m);
        }
        let token = format!("hc-bench-{}", name.replace(|c: char| !c.is_ascii_alphanumeric(), "-"));
        Ok(EtcdCluster { sup, bin, args: args.to_vec(), dir, token, members, status })
    }

    async fn boot(&mut self) -> Result<(), EtcdClusterError> {
        for i in 0..self.members.len() {
            self.spawn(i)?;
        }
        let timeout = Duration::from_secs(20);
        let deadline = Instant::now() + timeout;
        for i in 0..self.members.len() {
            loop {
                self.check_alive()?;
                if let Ok(s) = self.status[i].clone().status().await
                    && s.leader() != 0
                    && let Some(h) = s.header()
                {
                    self.members[i].id = h.member_id();
                    break;
                }
                if Instant::now() > deadline {
                    return Err(self.timeout("member not healthy", timeout, i));
                }
                sleep(POLL).await;
            }
        }
        Ok(())
    }

    fn spawn(&mut self, i: usize) -> Result<(), EtcdClusterError> {
        let initial = self.members.iter().map(|m| format!("{}={}", m.name, m.peer_url)).collect::<Vec<_>>().join(",");
        let m = &self.members[i];
        let mut cmd = Command::new(&self.bin);
        // Restarting with the same flags is fine: with an existing data directory etcd ignores
        // the initial-cluster flags and rejoins.
        cmd.arg("--name")
            .arg(&m.name)
            .arg("--data-dir")
            .arg(&m.data_dir)
            .arg("--listen-client-urls")
            .arg(&m.client_url)
            .arg("--advertise-client-urls")
            .arg(&m.client_url)
            .arg("--listen-peer-urls")
            .arg(&m.peer_url)
            .arg("--initial-advertise-peer-urls")
            .arg(&m.peer_url)
            .arg("--initial-cluster")
            .arg(initial)
            .arg("--initial-cluster-token")
            .arg(&self.token)
            .arg("--initial-cluster-state")
            .arg("new")
            .arg("--logger")
            .arg("zap")
            .arg("--log-outputs")
            .arg("stderr")
            .args(&self.args);
        let proc = self.sup.spawn(cmd, &m.log)?;
        self.members[i].proc = Some(proc);
        Ok(())
    }

    pub fn endpoints(&self) -> Vec<String> {
        self.members.iter().map(|m| m.client_url.clone()).collect()
    }

    pub fn name(&self, i: usize) -> String {
        format!("member {}", self.members[i].name)
    }

    /// A client balanced over all three members.
    pub async fn client(&self) -> Result<Client, EtcdClusterError> {
        Ok(Client::connect(self.endpoints(), Some(connect_options())).await?)
    }

    /// A client of member `i` alone.
    pub async fn client_of(&self, i: usize) -> Result<Client, EtcdClusterError> {
        Ok(Client::connect([self.members[i].client_url.as_str()], Some(connect_options())).await?)
    }

    fn check_alive(&self) -> Result<(), EtcdClusterError> {
        for m in &self.members {
            if let Some(status) = m.proc.and_then(|p| self.sup.exited(p)) {
                return Err(EtcdClusterError::Exited {
                    name: m.name.clone(),
                    status: status.to_string(),
                    log: tail(&m.log, 30),
                });
            }
        }
        Ok(())
    }

    fn timeout(&self, what: impl Into<String>, timeout: Duration, i: usize) -> EtcdClusterError {
        let m = &self.members[i];
        EtcdClusterError::Timeout { what: what.into(), timeout, name: m.name.clone(), log: tail(&m.log, 30) }
    }

    /// Index of the running member that the maintenance status API names as leader, asked of
    /// that member itself.
    pub async fn leader(&self, timeout: Duration) -> Result<usize, EtcdClusterError> {
        let deadline = Instant::now() + timeout;
        loop {
            self.check_alive()?;
            for (i, m) in self.members.iter().enumerate() {
                if m.proc.is_some()
                    && let Ok(s) = self.status[i].clone().status().await
                    && s.leader() == m.id
                {
                    return Ok(i);
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
        self.members.iter().filter_map(|m| m.proc).collect()
    }

    /// `kill -9` of member `i`.
    pub fn kill(&mut self, i: usize) {
        if let Some(p) = self.members[i].proc.take() {
            self.sup.kill(p);
        }
    }

    /// Restarts member `i` from its data directory.
    pub fn restart(&mut self, i: usize) -> Result<(), EtcdClusterError> {
        self.kill(i);
        self.spawn(i)
    }

    /// Waits until member `i` has applied everything the leader had committed when this was
    /// called.
    pub async fn wait_caught_up(&self, i: usize, timeout: Duration) -> Result<(), EtcdClusterError> {
        let deadline = Instant::now() + timeout;
        let leader = self.leader(timeout).await?;
        let target = loop {
            match self.status[leader].clone().status().await {
                Ok(s) => break s.raft_index(),
                Err(_) if Instant::now() < deadline => sleep(POLL).await,
                Err(e) => return Err(e.into()),
            }
        };
        loop {
            self.check_alive()?;
            if self.status[i].clone().status().await.is_ok_and(|s| s.raft_applied_index() >= target) {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(self.timeout(format!("not caught up to index {target}"), timeout, i));
            }
            sleep(POLL).await;
        }
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            self.kill(i);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
