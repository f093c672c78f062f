//! [`Cluster`]: the replicas of one run — start, crash (drop everything volatile), restart from
//! the replica's [`Disk`], and wait for every replica to apply the same log.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use openraft::impls::BasicNode;
use openraft::type_config::async_runtime::WatchReceiver;
use openraft::{AsyncRuntime, Config};
use tokio::task::JoinHandle;

use crate::history::SimRecorder;
use crate::network::{Net, SimNetworkFactory};
use crate::node::Live;
use crate::raft::{Disk, MemLog, MemStateMachine, Raft, SimRuntime};

/// How often each replica's lease keeper looks for expired leases (the allocator's default).
const KEEPER_TICK: Duration = Duration::from_millis(100);

/// Spawns on the simulation's runtime, so the task gets its own deterministic RNG seed.
pub fn spawn<F>(future: F) -> JoinHandle<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    SimRuntime::spawn(future)
}

pub struct Cluster {
    pub net: Arc<Net>,
    pub ids: Vec<u64>,
    config: Arc<Config>,
    recorder: Arc<SimRecorder>,
    disks: BTreeMap<u64, Disk>,
    keepers: BTreeMap<u64, JoinHandle<()>>,
    /// Restarts so far.
    pub restarts: u64,
}

/// The Raft settings of the simulation: the allocator's shape (`raft_config`: pre-vote, purge
/// after a snapshot, keep a short tail) with short timeouts and frequent snapshots, so that a
/// few simulated seconds see elections, snapshots, purges and snapshot installs.
pub fn sim_raft_config() -> Result<Config, openraft::ConfigError> {
    Config {
        cluster_name: "hc-sim".to_owned(),
        heartbeat_interval: 50,
        election_timeout_min: 150,
        election_timeout_max: 300,
        enable_pre_vote: Some(true),
        install_snapshot_timeout: 500,
        snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(40),
        max_in_snapshot_log_to_keep: 8,
        purge_batch_size: 1,
        replication_lag_threshold: 60,
        ..Default::default()
    }
    .validate()
}

impl Cluster {
    pub fn new(ids: Vec<u64>, net: Arc<Net>, recorder: Arc<SimRecorder>) -> anyhow::Result<Self> {
        let config = Arc::new(sim_raft_config()?);
        let disks = ids.iter().map(|id| (*id, Disk::default())).collect();
        Ok(Cluster { net, ids, config, recorder, disks, keepers: BTreeMap::new(), restarts: 0 })
    }

    /// Starts every replica and makes the first one initialize the membership.
    pub async fn boot(&mut self) -> anyhow::Result<()> {
        for id in self.ids.clone() {
            self.start(id).await?;
        }
        let members: BTreeMap<u64, BasicNode> =
            self.ids.iter().map(|id| (*id, BasicNode::new(format!("sim-{id}")))).collect();
        let first =
            self.net.live(self.ids[0]).ok_or_else(|| anyhow::anyhow!("replica {} did not start", self.ids[0]))?;
        first.raft.initialize(members).await?;
        Ok(())
    }

    /// Starts `id` from its disk (a restart, if it ran before).
    pub async fn start(&mut self, id: u64) -> anyhow::Result<()> {
        let disk = self.disks.get(&id).cloned().ok_or_else(|| anyhow::anyhow!("no replica {id}"))?;
        let incarnation = disk.new_incarnation();
        let log = MemLog::new(&disk, incarnation);
        let sm = MemStateMachine::open(&disk, incarnation)?;
        let state = sm.state();
        let factory = SimNetworkFactory { from: id, net: self.net.clone() };
        let raft: Raft = Raft::new(id, self.config.clone(), factory, log, sm).await?;
        let live = Arc::new(Live::new(id, raft, state, self.recorder.clone()));
        self.net.set_up(id, live.clone());
        self.keepers.insert(
            id,
            spawn(async move {
                let mut every = tokio::time::interval(KEEPER_TICK);
                every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    every.tick().await;
                    live.tick().await;
                }
            }),
        );
        Ok(())
    }

    /// Crashes `id`: off the network, its tasks stopped, its volatile state gone. Its disk stays.
    pub async fn crash(&mut self, id: u64) {
        if let Some(k) = self.keepers.remove(&id) {
            k.abort();
        }
        let Some(live) = self.net.set_down(id) else { return };
        // A dead process writes nothing more: the disk refuses the old incarnation from now on.
        if let Some(disk) = self.disks.get(&id) {
            disk.new_incarnation();
        }
        let _ = live.raft.shutdown().await;
    }

    pub async fn restart(&mut self, id: u64) -> anyhow::Result<()> {
        self.restarts += 1;
        self.start(id).await
    }

    /// Stops every lease keeper: after the workload, nobody renews, and expiries would keep
    /// changing the state while replicas are compared.
    pub fn stop_keepers(&mut self) {
        for (_, k) in std::mem::take(&mut self.keepers) {
            k.abort();
        }
    }

    /// Waits until one replica leads and every running replica has applied the leader's last
    /// log entry. `None` when that does not happen within `within`.
    pub async fn converge(&self, within: Duration) -> Option<u64> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let lives: Vec<Arc<Live>> = self.ids.iter().filter_map(|id| self.net.live(*id)).collect();
            let leader = lives.iter().find(|l| l.is_leader());
            if let Some(leader) = leader {
                let last = leader.raft.metrics().borrow_watched().last_log_index;
                let applied = |l: &Arc<Live>| l.raft.metrics().borrow_watched().last_applied.map(|id| id.index);
                if last.is_some() && lives.iter().all(|l| applied(l) == last) {
                    return Some(leader.id);
                }
            }
            if tokio::time::Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Snapshots installed from a leader, over all replicas and incarnations.
    pub fn snapshot_installs(&self) -> u64 {
        self.disks.values().map(|d| d.installs.load(std::sync::atomic::Ordering::SeqCst)).sum()
    }

    /// The highest term any running replica is in (the number of elections, roughly).
    pub fn term(&self) -> u64 {
        self.ids
            .iter()
            .filter_map(|id| self.net.live(*id))
            .map(|l| l.raft.metrics().borrow_watched().current_term)
            .max()
            .unwrap_or(0)
    }

    pub async fn shutdown(&mut self) {
        self.stop_keepers();
        for id in self.ids.clone() {
            if let Some(live) = self.net.set_down(id) {
                let _ = live.raft.shutdown().await;
            }
        }
    }
}
