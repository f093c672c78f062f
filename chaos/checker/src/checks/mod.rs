//! One invariant per file. Each reports only what no order of the recorded operations
//! consistent with their times and outcomes can explain: a violation is never a guess.

pub(crate) mod durability;
pub(crate) mod fencing;
pub(crate) mod linearizable;
pub(crate) mod no_double_holder;
pub(crate) mod recovery;

use crate::report::{CheckName, CheckStatus, CheckSummary, Violation};

/// What one check found.
#[derive(Debug, Default)]
pub(crate) struct Findings {
    pub violations: Vec<Violation>,
    /// Set when the check could not run (and says why).
    pub skipped: Option<String>,
    /// Set when the check ran but could not decide everything (and says what).
    pub inconclusive: Option<String>,
    pub note: Option<String>,
}

impl Findings {
    pub(crate) fn summary(&self, check: CheckName) -> CheckSummary {
        let (status, note) = if let Some(why) = &self.skipped {
            (CheckStatus::Skipped, Some(why.clone()))
        } else if !self.violations.is_empty() {
            let notes: Vec<&str> = self.note.iter().chain(&self.inconclusive).map(String::as_str).collect();
            (CheckStatus::Violated, (!notes.is_empty()).then(|| notes.join("; ")))
        } else if let Some(what) = &self.inconclusive {
            (CheckStatus::Inconclusive, Some(what.clone()))
        } else {
            (CheckStatus::Passed, self.note.clone())
        };
        CheckSummary { check, status, note }
    }
}
