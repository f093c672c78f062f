//! Replicas in one process, each with its own RocksDB and a real tonic server on 127.0.0.1:0.
//! No sleeps: every wait is on Raft metrics, with a deadline.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use hc_allocator_state::{Output, State};
use openraft::ServerState;
use openraft::async_runtime::WatchReceiver;
use tempfile::TempDir;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::TcpListenerStream;

use super::grant_lease;
use crate::raft::{DatabaseClosed, NetworkFactory, NodeInfo, Raft, open_storage, raft_config, raft_service};

const DEADLINE: Option<Duration> = Some(Duration::from_secs(20));

struct Replica {
    raft: Raft,
    node: NodeInfo,
    state: Arc<RwLock<State>>,
    closed: DatabaseClosed,
    stop_server: oneshot::Sender<()>,
    server: JoinHandle<Result<(), tonic::transport::Error>>,
    dir: TempDir,
}

impl Replica {
    async fn start(id: u64, config: &Arc<openraft::Config>) -> anyhow::Result<Self> {
        Self::start_in(tempfile::tempdir()?, id, config).await
    }

    /// Starts a replica on the data in `dir` (a restart, if it holds some).
    async fn start_in(dir: TempDir, id: u64, config: &Arc<openraft::Config>) -> anyhow::Result<Self> {
        let (log_store, state_machine) = open_storage(dir.path()).await?;
        let closed = log_store.closed();
        let state = state_machine.state();
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let node = NodeInfo { raft_addr: listener.local_addr()?.to_string(), rest_addr: String::new() };
        let raft = Raft::new(id, config.clone(), NetworkFactory::new(id), log_store, state_machine).await?;
        let (stop_server, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(
            tonic::transport::Server::builder().add_service(raft_service(raft.clone())).serve_with_incoming_shutdown(
                TcpListenerStream::new(listener),
                async {
                    let _ = stopped.await;
                },
            ),
        );
        Ok(Self { raft, node, state, closed, stop_server, server, dir })
    }

    fn state(&self) -> State {
        self.state.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    /// Stops Raft and the server; returns the data directory for a restart.
    async fn stop(self) -> anyhow::Result<TempDir> {
        self.raft.shutdown().await?;
        let _ = self.stop_server.send(());
        self.server.await??;
        self.closed.wait().await;
        Ok(self.dir)
    }
}

/// A member added after the log was purged can only catch up from a snapshot streamed over
/// gRPC; it must end with exactly the leader's state.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_member_catches_up_through_snapshot_after_purge() -> anyhow::Result<()> {
    init_tracing();
    within_deadline(catch_up_through_snapshot()).await
}

async fn catch_up_through_snapshot() -> anyhow::Result<()> {
    let mut config = raft_config(50, 250, 20)?;
    // Purge right after each snapshot, so the first entries are gone from every log.
    config.max_in_snapshot_log_to_keep = 0;
    let config = Arc::new(config);

    let r1 = Replica::start(1, &config).await?;
    let r2 = Replica::start(2, &config).await?;
    let members = BTreeMap::from([(1, r1.node.clone()), (2, r2.node.clone())]);
    r1.raft.initialize(members).await?;
    wait_leads(&r1).await?;

    for i in 0..60 {
        let written = r1.raft.client_write(grant_lease(&format!("node-{i}"))).await?;
        assert!(matches!(written.data, Ok(Output::Lease(_))), "{:?}", written.data);
    }
    let leader =
        r1.raft.wait(DEADLINE).metrics(|m| m.purged.is_some_and(|p| p.index >= 40), "leader purged its log").await?;
    assert!(leader.snapshot.is_some());

    let r3 = Replica::start(3, &config).await?;
    r1.raft.add_learner(3, r3.node.clone(), true).await?;
    r1.raft.change_membership([1, 2, 3], false).await?;
    let last = r1.raft.client_write(grant_lease("node-late")).await?.log_id.index;

    for replica in [&r1, &r2, &r3] {
        replica.raft.wait(DEADLINE).applied_index_at_least(Some(last), "every replica applied the last write").await?;
    }
    let joined = r3.raft.metrics().borrow_watched().clone();
    assert!(joined.snapshot.is_some(), "replica 3 got no snapshot: {joined:?}");
    assert!(joined.purged.is_some(), "replica 3 holds the purged log: {joined:?}");

    let expected = r1.state();
    assert_eq!(expected.leases().len(), 61);
    assert_eq!(r2.state(), expected);
    assert_eq!(r3.state(), expected);

    for replica in [r3, r2, r1] {
        replica.stop().await?;
    }
    Ok(())
}

/// A restarted replica loads its snapshot and re-applies only the log after it, back to the
/// state it had.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_restores_snapshot_then_log_tail() -> anyhow::Result<()> {
    init_tracing();
    within_deadline(restart_from_disk()).await
}

async fn restart_from_disk() -> anyhow::Result<()> {
    let mut config = raft_config(50, 250, 10)?;
    config.max_in_snapshot_log_to_keep = 0;
    let config = Arc::new(config);

    let r1 = Replica::start(1, &config).await?;
    r1.raft.initialize(BTreeMap::from([(1, r1.node.clone())])).await?;
    wait_leads(&r1).await?;
    for i in 0..25 {
        r1.raft.client_write(grant_lease(&format!("node-{i}"))).await?;
    }
    let m = r1
        .raft
        .wait(DEADLINE)
        .metrics(|m| m.snapshot.is_some_and(|s| s.index >= 10) && m.purged == m.snapshot, "snapshot and purge")
        .await?;
    let (last, snapshot) = (m.last_applied, m.snapshot);
    assert!(snapshot < last, "some entries must be after the snapshot: {snapshot:?} {last:?}");
    let before = r1.state();
    let dir = r1.stop().await?;

    let (log_store, state_machine) = open_storage(dir.path()).await?;
    let closed = log_store.closed();
    let loaded = state_machine.state().read().map(|s| s.last_applied_index()).unwrap_or_default();
    assert_eq!(Some(loaded), snapshot.map(|s| s.index), "open loads the snapshot, not more");
    drop((log_store, state_machine));
    closed.wait().await;

    let r1 = Replica::start_in(dir, 1, &config).await?;
    r1.raft.wait(DEADLINE).applied_index_at_least(last.map(|l| l.index), "log tail re-applied").await?;
    assert_eq!(r1.state(), before);
    r1.stop().await?;
    Ok(())
}

async fn wait_leads(replica: &Replica) -> anyhow::Result<()> {
    // Leading, with its first entry of the term applied: it accepts writes from here on.
    replica
        .raft
        .wait(DEADLINE)
        .metrics(
            |m| m.state == ServerState::Leader && m.last_applied.is_some_and(|a| a.leader_id.term == m.current_term),
            "leads",
        )
        .await?;
    Ok(())
}

fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

async fn within_deadline(scenario: impl Future<Output = anyhow::Result<()>>) -> anyhow::Result<()> {
    tokio::time::timeout(Duration::from_secs(120), scenario)
        .await
        .map_err(|_| anyhow::anyhow!("the scenario did not finish in time"))?
}
