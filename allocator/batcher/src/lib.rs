//! [`Batcher`]: puts concurrent `Allocate` and `Release` proposals into one Raft entry.
//!
//! Every Raft entry costs the same fixed work however small its command: the Raft core's
//! bookkeeping, a log key and write on every replica, a frame in each replication stream, a
//! decode and an apply call on every replica, a responder. The batcher lets at most
//! [`MAX_IN_FLIGHT`] entries of its own be in flight (proposed, not yet applied) at once;
//! proposals that arrive meanwhile wait, and the next entry takes every one that waits (up to
//! [`MAX_BATCH`]) as a [`Command::Batch`]. A lone proposal on an idle replica is written at once
//! as a plain entry, so batching adds no latency when there is nothing to share an entry with,
//! and entries carry more commands exactly when the load is high.
//!
//! A batch is one entry: it commits, or is discarded by a leader change, as a whole, and each of
//! its commands is applied as if it were an entry of its own at that index and time
//! (`State::apply`). Only commands that take nothing from their entry but the time are batched
//! ([`Command::batchable`]).
//!
//! Generic over the Raft type config, so that `hc-allocator` (RocksDB, gRPC) and the
//! deterministic simulation (`hc-sim`, memory, simulated network) run the same code.

use std::fmt;
use std::sync::Arc;

use hc_api::IpamError;
use hc_api::command::{Command, Output, Request, Response};
use openraft::errors::{ClientWriteError, Fatal, RaftError};
use openraft::storage::RaftStateMachine;
use openraft::{Raft, RaftTypeConfig};
use tokio::sync::{Semaphore, mpsc, oneshot};

/// Entries of the batcher's own that may be in flight at once. More lets the Raft pipeline
/// overlap them; fewer makes each carry more commands (BENCHMARKS.md compares 1, 2 and 4).
pub const MAX_IN_FLIGHT: usize = 4;
/// The most commands one entry carries.
pub const MAX_BATCH: usize = 128;
/// Proposals that may wait for an entry before [`Batcher::write`] itself waits.
const QUEUE: usize = 4096;

/// Why a write failed before it was applied, as openraft says it.
pub type WriteError<C> = RaftError<C, ClientWriteError<C>>;
/// What applying a command gave, and the index of the entry that carried it.
pub type Written<C> = Result<(Response, u64), WriteError<C>>;

/// What the batcher needs from its replica besides Raft.
#[derive(Clone)]
pub struct Hooks {
    /// The proposer's wall clock, ms since the Unix epoch: each entry's `Request::time_ms`.
    pub now_ms: Arc<dyn Fn() -> u64 + Send + Sync>,
    /// Called with the number of commands of each entry written and committed (for metrics);
    /// not for a write refused (e.g. by a follower, which forwards them) or lost.
    pub wrote_entry: Arc<dyn Fn(usize) + Send + Sync>,
}

impl fmt::Debug for Hooks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Hooks")
    }
}

struct Pending<C: RaftTypeConfig> {
    command: Command,
    reply: oneshot::Sender<Written<C>>,
}

/// A replica's writer: every command goes through [`Batcher::write`]. The task that forms and
/// writes batches (only started when batching is on) ends when this is dropped.
pub struct Batcher<C, SM>
where
    C: RaftTypeConfig,
    SM: RaftStateMachine<C>,
{
    raft: Raft<C, SM>,
    hooks: Hooks,
    /// `None`: batching is off, and every command is an entry of its own.
    tx: Option<mpsc::Sender<Pending<C>>>,
}

impl<C, SM> fmt::Debug for Batcher<C, SM>
where
    C: RaftTypeConfig,
    SM: RaftStateMachine<C>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Batcher").finish_non_exhaustive()
    }
}

impl<C, SM> Batcher<C, SM>
where
    C: RaftTypeConfig<D = Request, R = Response>,
    SM: RaftStateMachine<C> + 'static,
{
    /// With `batching`, starts the batching task on the current tokio runtime. Without it, every
    /// command is written as an entry of its own, as a build without the batcher does: a
    /// replica must run so while a replica of such a build is still in the cluster (it cannot
    /// decode a batch entry).
    pub fn start(raft: Raft<C, SM>, hooks: Hooks, batching: bool) -> Self {
        let tx = batching.then(|| {
            let (tx, rx) = mpsc::channel(QUEUE);
            tokio::spawn(run(raft.clone(), hooks.clone(), rx));
            tx
        });
        Batcher { raft, hooks, tx }
    }

    /// Writes `command` through Raft and returns what applying it gave, with the index of the
    /// entry that carried it. A [`Command::batchable`] command may share its entry with others
    /// (when batching is on); every other command is an entry of its own, stamped with the clock.
    pub async fn write(&self, command: Command) -> Written<C> {
        let tx = match &self.tx {
            Some(tx) if command.batchable() => tx,
            _ => {
                let request = Request { time_ms: (self.hooks.now_ms)(), command };
                return self.raft.client_write(request).await.map(|r| (r.data, r.log_id.index));
            }
        };
        let (reply, rx) = oneshot::channel();
        if tx.send(Pending { command, reply }).await.is_err() {
            return Err(RaftError::Fatal(Fatal::Stopped));
        }
        rx.await.unwrap_or(Err(RaftError::Fatal(Fatal::Stopped)))
    }
}

async fn run<C, SM>(raft: Raft<C, SM>, hooks: Hooks, mut rx: mpsc::Receiver<Pending<C>>)
where
    C: RaftTypeConfig<D = Request, R = Response>,
    SM: RaftStateMachine<C> + 'static,
{
    let in_flight = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    loop {
        let Ok(permit) = in_flight.clone().acquire_owned().await else { return };
        let mut batch = Vec::new();
        if rx.recv_many(&mut batch, MAX_BATCH).await == 0 {
            return; // every sender is gone
        }
        let (raft, hooks) = (raft.clone(), hooks.clone());
        tokio::spawn(async move {
            write_entry(&raft, &hooks, batch).await;
            drop(permit);
        });
    }
}

/// Writes one entry holding `batch`'s commands and answers each of them.
async fn write_entry<C, SM>(raft: &Raft<C, SM>, hooks: &Hooks, mut batch: Vec<Pending<C>>)
where
    C: RaftTypeConfig<D = Request, R = Response>,
    SM: RaftStateMachine<C> + 'static,
{
    let time_ms = (hooks.now_ms)();
    if batch.len() == 1 {
        let Pending { command, reply } = batch.pop().expect("one");
        let written = raft.client_write(Request { time_ms, command }).await.map(|r| (r.data, r.log_id.index));
        if written.is_ok() {
            (hooks.wrote_entry)(1);
        }
        let _ = reply.send(written);
        return;
    }
    let (commands, replies): (Vec<Command>, Vec<_>) = batch.into_iter().map(|p| (p.command, p.reply)).unzip();
    let count = commands.len();
    let written = match raft.client_write(Request { time_ms, command: Command::Batch(commands) }).await {
        Ok(written) => written,
        Err(e) => {
            for reply in replies {
                let _ = reply.send(Err(e.clone()));
            }
            return;
        }
    };
    (hooks.wrote_entry)(count);
    let index = written.log_id.index;
    match split(written.data, count) {
        Ok(results) => {
            for (reply, result) in replies.into_iter().zip(results) {
                let _ = reply.send(Ok((result, index)));
            }
        }
        Err(error) => {
            tracing::error!(index, count, %error, "a batch entry's result does not match its commands");
            for reply in replies {
                let _ = reply.send(Ok((Err(error.clone()), index)));
            }
        }
    }
}

/// One result per command of a batch of `count`, from what applying the batch gave. Anything
/// but [`Output::Batch`] of `count` results is a bug, and no caller may then be told that its
/// command did what nobody knows: each gets an "outcome unknown" error instead.
fn split(applied: Response, count: usize) -> Result<Vec<Response>, IpamError> {
    match applied {
        Ok(Output::Batch(results)) if results.len() == count => Ok(results),
        other => {
            Err(IpamError::Unavailable { reason: format!("a batch of {count} gave {other:?}; outcome unknown, retry") })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_result_is_split_one_per_command_and_anything_else_is_an_unknown_outcome() {
        let results = vec![Ok(Output::Done), Err(IpamError::NoPoolMatches)];
        assert_eq!(split(Ok(Output::Batch(results.clone())), 2), Ok(results.clone()));
        for wrong in [Ok(Output::Batch(results)), Ok(Output::Done), Err(IpamError::NoPoolMatches)] {
            let err = split(wrong, 3).expect_err("not one result per command");
            assert!(matches!(err, IpamError::Unavailable { .. }), "{err:?}");
        }
    }
}
