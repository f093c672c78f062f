//! [`SimRecorder`]: the run's history in `hc-checker`'s format, timed by the simulated clock,
//! and a short human-readable trace beside it.
//!
//! `hc_checker::Recorder` reads the real clock; a simulated run needs its own times, so this
//! builds the same records (`op`, `fault`, `final_state`) from [`SimClock`].

use std::sync::{Mutex, MutexGuard, PoisonError};

use hc_checker::{Call, FaultEvent, FaultPhase, FinalState, History, Holding, Operation, Outcome, Record};
use tokio::time::Instant;

/// Simulated time since the run started. Under a paused tokio runtime `Instant` only moves when
/// every task waits, by exactly the next timer: the same seed reads the same times.
#[derive(Debug, Clone, Copy)]
pub struct SimClock {
    origin: Instant,
}

/// The wall-clock time the simulated run pretends to start at (ms since the epoch), so that
/// entries carry plausible leader times.
const EPOCH_MS: u64 = 1_750_000_000_000;

impl SimClock {
    pub fn start() -> Self {
        SimClock { origin: Instant::now() }
    }

    pub fn now_ns(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// The proposer's clock, as `Request::time_ms`.
    pub fn wall_ms(&self) -> u64 {
        EPOCH_MS + self.now_ns() / 1_000_000
    }
}

/// An operation invoked and not completed yet.
#[derive(Debug)]
#[must_use = "complete it, as unknown if the outcome is not known"]
pub struct Invocation {
    id: u64,
    process: String,
    call: Call,
    invoke_ns: u64,
}

#[derive(Debug)]
struct Book {
    next_id: u64,
    records: Vec<Record>,
    trace: Vec<String>,
}

#[derive(Debug)]
pub struct SimRecorder {
    clock: SimClock,
    /// The records and the trace, in the order things happened.
    book: Mutex<Book>,
    /// Commands written in entries of several (the batcher's), over every replica.
    batched: std::sync::atomic::AtomicU64,
}

impl SimRecorder {
    pub fn new(clock: SimClock) -> Self {
        SimRecorder {
            clock,
            book: Mutex::new(Book { next_id: 1, records: Vec::new(), trace: Vec::new() }),
            batched: Default::default(),
        }
    }

    /// A replica's batcher wrote an entry of `commands` commands.
    pub fn wrote_entry(&self, commands: usize) {
        if commands > 1 {
            self.batched.fetch_add(commands as u64, std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// Commands that shared an entry with others, so far.
    pub fn batched(&self) -> u64 {
        self.batched.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn book(&self) -> MutexGuard<'_, Book> {
        self.book.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn clock(&self) -> SimClock {
        self.clock
    }

    pub fn invoke(&self, process: &str, call: Call) -> Invocation {
        let mut b = self.book();
        let id = b.next_id;
        b.next_id += 1;
        Invocation { id, process: process.to_owned(), call, invoke_ns: self.clock.now_ns() }
    }

    /// A timeout is [`Outcome::Unknown`], never a failure.
    pub fn complete(&self, inv: Invocation, outcome: Outcome) {
        let Invocation { id, process, call, invoke_ns } = inv;
        let complete_ns = self.clock.now_ns();
        let line = format!("{process} {} #{id} -> {}", describe(&call), describe_outcome(&outcome));
        let mut b = self.book();
        b.trace.push(format!("{:>9.3}ms {line}", complete_ns as f64 / 1e6));
        b.records.push(Record::Op(Operation { id, process, invoke_ns, complete_ns, call, outcome }));
    }

    pub fn fault(&self, name: &str, phase: FaultPhase, detail: &str) {
        let at_ns = self.clock.now_ns();
        let mut b = self.book();
        b.trace.push(format!("{:>9.3}ms fault {name} {phase:?} ({detail})", at_ns as f64 / 1e6));
        b.records.push(Record::Fault(FaultEvent {
            name: name.to_owned(),
            phase,
            at_ns,
            detail: Some(detail.to_owned()),
        }));
    }

    pub fn final_state(&self, invoke_ns: u64, allocations: Vec<Holding>) {
        let complete_ns = self.clock.now_ns();
        let mut b = self.book();
        let id = b.next_id;
        b.next_id += 1;
        b.trace.push(format!("{:>9.3}ms final listing: {} allocations", complete_ns as f64 / 1e6, allocations.len()));
        b.records.push(Record::FinalState(FinalState { id, invoke_ns, complete_ns, allocations }));
    }

    /// A line in the trace only (leader changes, crashes, pool and reservation changes).
    pub fn note(&self, line: impl AsRef<str>) {
        let at = self.clock.now_ns() as f64 / 1e6;
        self.book().trace.push(format!("{at:>9.3}ms {}", line.as_ref()));
    }

    pub fn history(&self) -> History {
        History::new(self.book().records.clone())
    }

    pub fn trace(&self) -> Vec<String> {
        self.book().trace.clone()
    }
}

fn describe(call: &Call) -> String {
    match call {
        Call::Allocate { owner, pool, requested, reservation, fence } => {
            let mut s = format!("allocate {owner}");
            if let Some(p) = pool {
                s.push_str(&format!(" pool={p}"));
            }
            if let Some(a) = requested {
                s.push_str(&format!(" address={a}"));
            }
            if let Some(k) = reservation {
                s.push_str(&format!(" key={k}"));
            }
            if let Some(f) = fence {
                s.push_str(&format!(" token={}", f.token));
            }
            s
        }
        Call::Release { target, fence } => {
            let token = fence.as_ref().map(|f| format!(" token={}", f.token)).unwrap_or_default();
            format!("release {target:?}{token}")
        }
        Call::Grant { node } => format!("grant {node}"),
        Call::Expire { node } => format!("expire {node}"),
        Call::Read { address } => format!("read {address}"),
        Call::NodeGone { node } => format!("node_gone {node}"),
        Call::Reconcile { fence, valid } => {
            format!("reconcile {} token={} ({} valid)", fence.node, fence.token, valid.len())
        }
    }
}

fn describe_outcome(outcome: &Outcome) -> String {
    match outcome {
        Outcome::Ok(r) => format!("ok {r:?}"),
        Outcome::Fail { error } => format!("fail {}", error.as_deref().unwrap_or("")),
        Outcome::Unknown { error } => format!("unknown {}", error.as_deref().unwrap_or("")),
    }
}
