//! An independent checker of allocation histories. It shares no code with the allocator: its
//! history types, its model of an address and its checks are its own, so a bug in the
//! allocator's types or logic cannot hide itself here.
//!
//! A history is JSON lines, one [`Record`] each: `op` (a call, its invoke and complete times on
//! one monotonic clock, and an outcome `ok` / `fail` / `unknown`; a timeout is unknown and may
//! take effect at any later time), `fault` (start / stop of a named fault) and one `final_state`
//! (the allocator's listing after healing). [`check`] runs every check and returns a [`Report`].
//! A violation is reported only when no order of the operations consistent with their times and
//! outcomes explains the history.
//!
//! # Layout
//! - `operation.rs`, `history.rs`: the format; `recorder.rs`: building a history while running.
//! - `projection.rs`: the history cut per address; `register.rs`: what each call does to an
//!   address; `search.rs`: the Wing & Gong / Lowe linearizability search.
//! - `checks/`: one invariant per file: `no_double_holder`, `durability`, `fencing`,
//!   `linearizable`, `recovery`.
//! - `report.rs`, `unavailability.rs`: the report; `bin/hc-check.rs`: the command line.

mod checks;
mod config;
mod error;
mod history;
mod operation;
mod projection;
mod recorder;
mod register;
mod report;
pub mod rng;
mod search;
mod unavailability;

pub use config::CheckConfig;
pub use error::HistoryError;
pub use history::{FaultEvent, FaultPhase, FaultWindow, FinalState, History, Holding, Record};
pub use operation::{Attachment, Call, Fence, OkResult, Operation, Outcome, Owner, ReleaseTarget};
pub use recorder::{Invocation, Recorder};
pub use report::{CheckName, CheckStatus, CheckSummary, FaultReport, OutcomeCounts, Report, Violation};

use projection::Projection;

/// Checks a history against every invariant. Errors only when the history itself is malformed.
pub fn check(history: &History, config: &CheckConfig) -> Result<Report, HistoryError> {
    history.validate()?;
    let windows = history.fault_windows()?;
    let projection = Projection::new(history);
    let findings = [
        (CheckName::NoDoubleHolder, checks::no_double_holder::check(&projection)),
        (CheckName::Durability, checks::durability::check(history, &projection)),
        (CheckName::Fencing, checks::fencing::check(history)),
        (CheckName::Linearizable, checks::linearizable::check(&projection, config.max_search_steps)),
        (CheckName::Recovery, checks::recovery::check(history, &windows, config.recovery_bound_ns)),
    ];
    let checks = findings.iter().map(|(name, f)| f.summary(*name)).collect();
    let violations = findings.into_iter().flat_map(|(_, f)| f.violations).collect();
    Ok(Report {
        operations: history.ops().count() as u64,
        by_kind: OutcomeCounts::by_kind(history),
        faults: unavailability::faults(history, &windows),
        checks,
        violations,
    })
}
