//! Why a history could not be checked at all (as opposed to a violation found in it).

use std::fmt;
use std::net::IpAddr;

#[derive(Debug)]
pub enum HistoryError {
    Io(std::io::Error),
    /// A line that is not a record (`line` counts from 1).
    Json {
        line: usize,
        error: serde_json::Error,
    },
    DuplicateId {
        id: u64,
    },
    CompletesBeforeInvoke {
        id: u64,
    },
    /// An ok result whose shape does not fit its call (only possible for histories built in Rust).
    ResultMismatch {
        message: String,
    },
    /// A fault `stop` without an earlier `start` of the same name still open.
    UnmatchedFaultStop {
        name: String,
        at_ns: u64,
    },
    MultipleFinalStates,
    DuplicateFinalAddress {
        address: IpAddr,
    },
}

impl fmt::Display for HistoryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HistoryError::Io(e) => write!(f, "reading the history: {e}"),
            HistoryError::Json { line, error } => write!(f, "line {line}: {error}"),
            HistoryError::DuplicateId { id } => write!(f, "operation id {id} is used twice"),
            HistoryError::CompletesBeforeInvoke { id } => write!(f, "operation {id} completes before it is invoked"),
            HistoryError::ResultMismatch { message } => f.write_str(message),
            HistoryError::UnmatchedFaultStop { name, at_ns } => {
                write!(f, "fault {name:?} stops at {at_ns} ns without having started")
            }
            HistoryError::MultipleFinalStates => f.write_str("more than one final_state record"),
            HistoryError::DuplicateFinalAddress { address } => {
                write!(f, "final_state lists {address} more than once")
            }
        }
    }
}

impl std::error::Error for HistoryError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            HistoryError::Io(e) => Some(e),
            HistoryError::Json { error, .. } => Some(error),
            _ => None,
        }
    }
}
