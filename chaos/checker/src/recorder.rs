//! [`Recorder`]: what a workload calls around each operation to build a history as it runs.
//! Safe to share between threads and tasks; times come from one monotonic clock.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Instant;

use crate::history::{FaultEvent, FaultPhase, FinalState, History, Holding, Record};
use crate::operation::{Call, Operation, Outcome};

#[derive(Debug)]
pub struct Recorder {
    origin: Instant,
    next_id: AtomicU64,
    /// Completed records, in completion order. Guards nothing else.
    records: Mutex<Vec<Record>>,
}

/// An operation invoked and not completed yet.
#[derive(Debug)]
#[must_use = "complete it, as unknown if the outcome is not known"]
pub struct Invocation {
    pub id: u64,
    process: String,
    call: Call,
    invoke_ns: u64,
}

impl Default for Recorder {
    fn default() -> Self {
        Self::new()
    }
}

impl Recorder {
    pub fn new() -> Self {
        Recorder { origin: Instant::now(), next_id: AtomicU64::new(1), records: Mutex::new(Vec::new()) }
    }

    /// Nanoseconds since the recorder was made.
    pub fn now_ns(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// Call just before sending the request.
    pub fn invoke(&self, process: impl Into<String>, call: Call) -> Invocation {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        Invocation { id, process: process.into(), call, invoke_ns: self.now_ns() }
    }

    /// Call as soon as the outcome is known. A timeout is [`Outcome::Unknown`], never a failure.
    pub fn complete(&self, invocation: Invocation, outcome: Outcome) -> u64 {
        self.complete_at(invocation, outcome, self.now_ns())
    }

    /// [`Self::invoke`] for an operation another process timed: `at_ns` is on this recorder's
    /// clock ([`Self::now_ns`]), no later than the request was sent.
    pub fn invoke_at(&self, process: impl Into<String>, call: Call, at_ns: u64) -> Invocation {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        Invocation { id, process: process.into(), call, invoke_ns: at_ns }
    }

    /// [`Self::complete`] for an operation another process timed: `at_ns` is on this
    /// recorder's clock, no earlier than the reply arrived (never before the invocation).
    pub fn complete_at(&self, invocation: Invocation, outcome: Outcome, at_ns: u64) -> u64 {
        let Invocation { id, process, call, invoke_ns } = invocation;
        let op = Operation { id, process, invoke_ns, complete_ns: at_ns.max(invoke_ns), call, outcome };
        self.push(Record::Op(op));
        id
    }

    pub fn fault(&self, name: impl Into<String>, phase: FaultPhase, detail: Option<String>) {
        self.push(Record::Fault(FaultEvent { name: name.into(), phase, at_ns: self.now_ns(), detail }));
    }

    /// Records the allocator's complete listing; `invoke_ns` is [`Self::now_ns`] read before asking.
    pub fn final_state(&self, invoke_ns: u64, allocations: Vec<Holding>) {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let complete_ns = self.now_ns();
        self.push(Record::FinalState(FinalState { id, invoke_ns, complete_ns, allocations }));
    }

    /// The records so far.
    pub fn history(&self) -> History {
        History::new(self.records.lock().unwrap_or_else(PoisonError::into_inner).clone())
    }

    fn push(&self, record: Record) {
        self.records.lock().unwrap_or_else(PoisonError::into_inner).push(record);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::operation::{OkResult, Owner};

    #[test]
    fn concurrent_recording_yields_a_valid_history_with_monotonic_times() {
        let recorder = Arc::new(Recorder::new());
        let threads: Vec<_> = (0..4)
            .map(|n| {
                let recorder = Arc::clone(&recorder);
                std::thread::spawn(move || {
                    let owner = Owner { container_id: format!("c{n}"), interface: "eth0".into(), node: "n1".into() };
                    let call = Call::Allocate { owner, pool: None, requested: None, reservation: None, fence: None };
                    let address = std::net::IpAddr::from([10, 0, 0, n + 1]);
                    let inv = recorder.invoke(format!("p{n}"), call);
                    recorder.complete(inv, Outcome::Ok(OkResult::Allocated { address }))
                })
            })
            .collect();
        let ids: Vec<u64> = threads.into_iter().map(|t| t.join().expect("a recording thread")).collect();
        recorder.fault("kill-leader", FaultPhase::Start, None);
        recorder.fault("kill-leader", FaultPhase::Stop, None);
        let history = recorder.history();
        history.validate().expect("a valid history");
        assert_eq!(history.ops().count(), 4);
        assert_eq!(ids.iter().collect::<std::collections::BTreeSet<_>>().len(), 4);
        assert!(history.ops().all(|op| op.invoke_ns <= op.complete_ns));
        let windows = history.fault_windows().expect("paired faults");
        assert!(windows[0].start_ns <= windows[0].stop_ns.unwrap_or(0));
    }
}
