//! What a run's check found: serializable to JSON, and a markdown summary for people.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::history::History;
use crate::operation::Outcome;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckName {
    NoDoubleHolder,
    Durability,
    Fencing,
    Linearizable,
    Recovery,
}

impl CheckName {
    pub fn as_str(self) -> &'static str {
        match self {
            CheckName::NoDoubleHolder => "no_double_holder",
            CheckName::Durability => "durability",
            CheckName::Fencing => "fencing",
            CheckName::Linearizable => "linearizable",
            CheckName::Recovery => "recovery",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckStatus {
    Passed,
    Violated,
    /// Could not run (no final listing, no faults).
    Skipped,
    /// Ran out of search steps somewhere, found nothing wrong elsewhere.
    Inconclusive,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckSummary {
    pub check: CheckName,
    pub status: CheckStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Violation {
    pub check: CheckName,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<IpAddr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// The operations involved, by id (the final listing counts as one).
    pub ops: Vec<u64>,
    pub explanation: String,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutcomeCounts {
    pub ok: u64,
    pub fail: u64,
    pub unknown: u64,
}

impl OutcomeCounts {
    pub(crate) fn by_kind(history: &History) -> BTreeMap<String, OutcomeCounts> {
        let mut by_kind: BTreeMap<String, OutcomeCounts> = BTreeMap::new();
        for op in history.ops() {
            let c = by_kind.entry(op.call.kind().to_owned()).or_default();
            match op.outcome {
                Outcome::Ok(_) => c.ok += 1,
                Outcome::Fail { .. } => c.fail += 1,
                Outcome::Unknown { .. } => c.unknown += 1,
            }
        }
        by_kind
    }
}

/// One fault and how long allocation was unavailable around it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FaultReport {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    pub start_ns: u64,
    pub stop_ns: Option<u64>,
    /// The ok allocation invoked at or after the start that completed first.
    pub first_ok_allocate: Option<u64>,
    /// From the start to that allocation's completion (for a leader kill: the failover time).
    pub unavailable_ns: Option<u64>,
    /// From the stop to the completion of the first ok allocation invoked after it.
    pub after_heal_ns: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    pub operations: u64,
    /// By call kind (`allocate`, `release`, …).
    pub by_kind: BTreeMap<String, OutcomeCounts>,
    pub faults: Vec<FaultReport>,
    pub checks: Vec<CheckSummary>,
    pub violations: Vec<Violation>,
}

/// Nanoseconds as milliseconds for people.
pub(crate) fn ms(ns: u64) -> String {
    format!("{:.3} ms", ns as f64 / 1e6)
}

impl Report {
    /// No violations (some checks may still be skipped or inconclusive).
    pub fn is_ok(&self) -> bool {
        self.violations.is_empty()
    }

    pub fn status(&self, check: CheckName) -> Option<CheckStatus> {
        self.checks.iter().find(|c| c.check == check).map(|c| c.status)
    }

    pub fn violations_of(&self, check: CheckName) -> impl Iterator<Item = &Violation> {
        self.violations.iter().filter(move |v| v.check == check)
    }

    pub fn to_markdown(&self) -> String {
        let mut s = String::new();
        let verdict = match self.violations.len() {
            0 => "no violations".to_owned(),
            1 => "1 violation".to_owned(),
            n => format!("{n} violations"),
        };
        let _ = writeln!(s, "# History check: {verdict}\n");

        let _ = writeln!(s, "## Checks\n\n| check | status | note |\n|---|---|---|");
        for c in &self.checks {
            let status = serde_json::to_value(c.status).ok().and_then(|v| v.as_str().map(str::to_owned));
            let _ = writeln!(
                s,
                "| {} | {} | {} |",
                c.check.as_str(),
                status.unwrap_or_default(),
                c.note.as_deref().unwrap_or("")
            );
        }

        let _ =
            writeln!(s, "\n## Operations: {}\n\n| kind | ok | fail | unknown |\n|---|---|---|---|", self.operations);
        for (kind, c) in &self.by_kind {
            let _ = writeln!(s, "| {kind} | {} | {} | {} |", c.ok, c.fail, c.unknown);
        }

        let _ = writeln!(s, "\n## Faults: {}\n", self.faults.len());
        if !self.faults.is_empty() {
            let _ =
                writeln!(s, "| fault | start | stop | unavailable from start | after heal |\n|---|---|---|---|---|");
            let or_dash = |v: Option<u64>| v.map_or_else(|| "—".to_owned(), ms);
            for f in &self.faults {
                let name = match &f.detail {
                    Some(d) => format!("{} ({d})", f.name),
                    None => f.name.clone(),
                };
                let _ = writeln!(
                    s,
                    "| {name} | {} | {} | {} | {} |",
                    ms(f.start_ns),
                    or_dash(f.stop_ns),
                    or_dash(f.unavailable_ns),
                    or_dash(f.after_heal_ns)
                );
            }
        }

        if !self.violations.is_empty() {
            let _ = writeln!(s, "\n## Violations\n");
            for v in &self.violations {
                let ops: Vec<String> = v.ops.iter().map(u64::to_string).collect();
                let _ = writeln!(s, "- **{}** (ops {}): {}", v.check.as_str(), ops.join(", "), v.explanation);
            }
        }
        s
    }
}
