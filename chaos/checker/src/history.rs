//! A history: every record of one run, read from and written to JSON lines.

use std::collections::{BTreeMap, HashSet};
use std::io::{BufRead, Write};
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::error::HistoryError;
use crate::operation::{Operation, Owner};

/// One line of a history file.
// Nearly every record is an `Op`: boxing it would cost an allocation each and save nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Record {
    Op(Operation),
    Fault(FaultEvent),
    FinalState(FinalState),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultPhase {
    Start,
    Stop,
}

/// The start or end of a named fault. A `stop` closes the latest open `start` of its name; an
/// instantaneous fault (`kill -9`) starts at the kill and stops when the process is back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultEvent {
    pub name: String,
    pub phase: FaultPhase,
    pub at_ns: u64,
    /// Free text for the report (which replicas, which cut).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// The allocator's complete listing, taken after the last fault healed and the workload stopped.
/// Addresses it does not list are free.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FinalState {
    /// Shares the id space of operations, so violations can name it.
    pub id: u64,
    pub invoke_ns: u64,
    pub complete_ns: u64,
    pub allocations: Vec<Holding>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Holding {
    pub address: IpAddr,
    pub owner: Owner,
}

/// A fault from its start to its stop (`None`: never healed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FaultWindow {
    pub name: String,
    pub detail: Option<String>,
    pub start_ns: u64,
    pub stop_ns: Option<u64>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct History {
    pub records: Vec<Record>,
}

impl History {
    pub fn new(records: Vec<Record>) -> Self {
        History { records }
    }

    /// Parses JSON lines; blank lines and lines starting with `#` are skipped.
    pub fn from_jsonl(text: &str) -> Result<Self, HistoryError> {
        let mut records = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let record = serde_json::from_str(line).map_err(|error| HistoryError::Json { line: n + 1, error })?;
            records.push(record);
        }
        Ok(History { records })
    }

    pub fn read_jsonl(mut reader: impl BufRead) -> Result<Self, HistoryError> {
        let mut text = String::new();
        reader.read_to_string(&mut text).map_err(HistoryError::Io)?;
        Self::from_jsonl(&text)
    }

    pub fn write_jsonl(&self, mut writer: impl Write) -> Result<(), HistoryError> {
        for record in &self.records {
            let line = serde_json::to_string(record).map_err(|error| HistoryError::Json { line: 0, error })?;
            writeln!(writer, "{line}").map_err(HistoryError::Io)?;
        }
        Ok(())
    }

    pub fn to_jsonl(&self) -> Result<String, HistoryError> {
        let mut out = Vec::new();
        self.write_jsonl(&mut out)?;
        Ok(String::from_utf8_lossy(&out).into_owned())
    }

    pub fn ops(&self) -> impl Iterator<Item = &Operation> {
        self.records.iter().filter_map(|r| if let Record::Op(op) = r { Some(op) } else { None })
    }

    pub fn final_state(&self) -> Option<&FinalState> {
        self.records.iter().rev().find_map(|r| if let Record::FinalState(f) = r { Some(f) } else { None })
    }

    /// Faults paired start → stop, in order of start.
    pub fn fault_windows(&self) -> Result<Vec<FaultWindow>, HistoryError> {
        let mut events: Vec<&FaultEvent> =
            self.records.iter().filter_map(|r| if let Record::Fault(f) = r { Some(f) } else { None }).collect();
        // Stable: a start and a stop at the same instant keep their file order.
        events.sort_by_key(|e| e.at_ns);
        let mut windows: Vec<FaultWindow> = Vec::new();
        let mut open: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
        for e in events {
            match e.phase {
                FaultPhase::Start => {
                    open.entry(&e.name).or_default().push(windows.len());
                    windows.push(FaultWindow {
                        name: e.name.clone(),
                        detail: e.detail.clone(),
                        start_ns: e.at_ns,
                        stop_ns: None,
                    });
                }
                FaultPhase::Stop => {
                    let i = open
                        .get_mut(e.name.as_str())
                        .and_then(Vec::pop)
                        .ok_or_else(|| HistoryError::UnmatchedFaultStop { name: e.name.clone(), at_ns: e.at_ns })?;
                    if let Some(w) = windows.get_mut(i) {
                        w.stop_ns = Some(e.at_ns);
                    }
                }
            }
        }
        Ok(windows)
    }

    /// Everything a check relies on that the types cannot say.
    pub fn validate(&self) -> Result<(), HistoryError> {
        let mut ids = HashSet::new();
        let mut finals = 0;
        for record in &self.records {
            match record {
                Record::Op(op) => {
                    if !ids.insert(op.id) {
                        return Err(HistoryError::DuplicateId { id: op.id });
                    }
                    if op.complete_ns < op.invoke_ns {
                        return Err(HistoryError::CompletesBeforeInvoke { id: op.id });
                    }
                    op.check_result().map_err(|message| HistoryError::ResultMismatch { message })?;
                }
                Record::FinalState(f) => {
                    finals += 1;
                    if !ids.insert(f.id) {
                        return Err(HistoryError::DuplicateId { id: f.id });
                    }
                    if f.complete_ns < f.invoke_ns {
                        return Err(HistoryError::CompletesBeforeInvoke { id: f.id });
                    }
                    let mut seen = HashSet::new();
                    if let Some(h) = f.allocations.iter().find(|h| !seen.insert(h.address)) {
                        return Err(HistoryError::DuplicateFinalAddress { address: h.address });
                    }
                }
                Record::Fault(_) => {}
            }
        }
        if finals > 1 {
            return Err(HistoryError::MultipleFinalStates);
        }
        self.fault_windows().map(|_| ())
    }
}
