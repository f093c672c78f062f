//! [`Cluster`]: `hc-allocator` processes, one per namespace of a [`Network`], each with its
//! own data directory; kill -9, restart from the data directory, SIGSTOP / SIGCONT.
//!
//! `ip netns exec` execs the allocator in place, so the child's pid is the allocator's.

use std::fs::OpenOptions;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use hc_api::client::{Client, ClientConfig};

use crate::cleanup;
use crate::network::Network;

/// gRPC and REST ports: the same in every namespace, since each replica has its own address.
const GRPC_PORT: u16 = 7400;
const REST_PORT: u16 = 7401;

#[derive(Debug)]
pub struct Replica {
    pub id: u64,
    pub grpc: String,
    pub rest: String,
    pub data_dir: PathBuf,
    pub log: PathBuf,
    child: Option<Child>,
    /// SIGSTOPped and not continued yet.
    pub paused: bool,
}

#[derive(Debug)]
pub struct Cluster {
    // Dropped before `net`: processes die before their namespaces go.
    pub replicas: Vec<Replica>,
    pub net: Network,
    bin: PathBuf,
    extra_args: Vec<String>,
    /// Short attempt timeouts: status probes must not stall on an isolated replica.
    probe: Client,
}

impl Cluster {
    pub fn start(net: Network, bin: PathBuf, dir: &std::path::Path, extra_args: Vec<String>) -> anyhow::Result<Self> {
        let replicas: Vec<Replica> = (0..net.namespaces.len())
            .map(|i| Replica {
                id: i as u64 + 1,
                grpc: format!("{}:{GRPC_PORT}", net.replica_addr(i)),
                rest: format!("{}:{REST_PORT}", net.replica_addr(i)),
                data_dir: dir.join(format!("r{}", i + 1)),
                log: dir.join(format!("r{}.log", i + 1)),
                child: None,
                paused: false,
            })
            .collect();
        let endpoints: Vec<String> = replicas.iter().map(|r| r.grpc.clone()).collect();
        let probe = Client::new(
            endpoints,
            ClientConfig { deadline: Duration::from_millis(400), attempt_timeout: Duration::from_millis(300) },
        )?;
        let mut cluster = Cluster { replicas, net, bin, extra_args, probe };
        for i in 0..cluster.replicas.len() {
            cluster.spawn(i)?;
        }
        Ok(cluster)
    }

    pub fn endpoints(&self) -> Vec<String> {
        self.replicas.iter().map(|r| r.grpc.clone()).collect()
    }

    fn initial_cluster(&self) -> String {
        self.replicas.iter().map(|r| format!("{}={}/{}", r.id, r.grpc, r.rest)).collect::<Vec<_>>().join(",")
    }

    /// (Re)starts replica `i` in its namespace from its data directory.
    pub fn spawn(&mut self, i: usize) -> anyhow::Result<()> {
        let initial = self.initial_cluster();
        let r = &self.replicas[i];
        let log = OpenOptions::new().create(true).append(true).open(&r.log).context("replica log")?;
        let child = Command::new("ip")
            .args(["netns", "exec", &self.net.namespaces[i]])
            .arg(&self.bin)
            .args(["--id", &r.id.to_string(), "--data-dir"])
            .arg(&r.data_dir)
            .args(["--grpc-addr", &r.grpc, "--rest-addr", &r.rest, "--initial-cluster", &initial])
            .args(&self.extra_args)
            .env("HC_LOG", "info,openraft=warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| format!("cannot start {}", self.bin.display()))?;
        cleanup::add_pid(child.id());
        let r = &mut self.replicas[i];
        r.child = Some(child);
        r.paused = false;
        Ok(())
    }

    /// `kill -9` of replica `i`.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.replicas[i].child.take() {
            let _ = c.kill();
            let _ = c.wait();
            cleanup::remove_pid(c.id());
        }
        self.replicas[i].paused = false;
    }

    pub fn is_running(&self, i: usize) -> bool {
        self.replicas[i].child.is_some()
    }

    fn signal(&self, i: usize, sig: &str) -> anyhow::Result<()> {
        let Some(c) = &self.replicas[i].child else { bail!("replica {} is not running", i + 1) };
        if !cleanup::quiet("kill", &[sig, &c.id().to_string()]) {
            bail!("kill {sig} of replica {} failed", i + 1);
        }
        Ok(())
    }

    pub fn pause(&mut self, i: usize) -> anyhow::Result<()> {
        self.signal(i, "-STOP")?;
        self.replicas[i].paused = true;
        Ok(())
    }

    pub fn resume(&mut self, i: usize) -> anyhow::Result<()> {
        self.signal(i, "-CONT")?;
        self.replicas[i].paused = false;
        Ok(())
    }

    /// The replica that is leader by its own word and by the word of another replica (or the
    /// only one asked), if any right now.
    pub async fn leader_now(&self) -> Option<usize> {
        for i in 0..self.replicas.len() {
            if !self.is_running(i) || self.replicas[i].paused {
                continue;
            }
            let Ok(s) = self.probe.status_at(i).await else { continue };
            let Some(l) = s.leader_id else { continue };
            let idx = self.replicas.iter().position(|r| r.id == l)?;
            if self.is_running(idx)
                && !self.replicas[idx].paused
                && self.probe.status_at(idx).await.is_ok_and(|s| s.leader_id == Some(l))
            {
                return Some(idx);
            }
        }
        None
    }

    pub async fn wait_leader(&self, timeout: Duration) -> anyhow::Result<usize> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(i) = self.leader_now().await {
                return Ok(i);
            }
            if Instant::now() > deadline {
                bail!("no leader within {timeout:?}\n{}", self.log_tails(20));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until the leader has applied everything it committed; returns its index.
    pub async fn wait_settled(&self, timeout: Duration) -> anyhow::Result<usize> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(i) = self.leader_now().await
                && self.probe.status_at(i).await.is_ok_and(|s| s.last_applied >= s.committed)
            {
                return Ok(i);
            }
            if Instant::now() > deadline {
                bail!("the cluster did not settle within {timeout:?}\n{}", self.log_tails(20));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn probe(&self) -> &Client {
        &self.probe
    }

    pub fn log_tails(&self, lines: usize) -> String {
        let mut out = String::new();
        for r in &self.replicas {
            let text = std::fs::read_to_string(&r.log).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(lines).collect();
            out.push_str(&format!("---- replica {} ({}) ----\n", r.id, r.log.display()));
            for l in tail.iter().rev() {
                out.push_str(l);
                out.push('\n');
            }
        }
        out
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for i in 0..self.replicas.len() {
            self.kill(i);
        }
    }
}
