//! After the last fault heals, allocations succeed again within a bound.
//!
//! The heal is the last fault `stop`. Among the ok allocations invoked at or after it, the one
//! that completes first must complete within `bound_ns` of the heal. A fault that never stops
//! is itself a violation: recovery cannot be shown.

use crate::checks::Findings;
use crate::history::{FaultWindow, History};
use crate::operation::{Call, Operation};
use crate::report::{CheckName, Violation};

/// The ok allocation invoked at or after `t` that completes first.
pub(crate) fn first_allocation_after(history: &History, t: u64) -> Option<&Operation> {
    history
        .ops()
        .filter(|op| matches!(op.call, Call::Allocate { .. }) && op.outcome.is_ok() && op.invoke_ns >= t)
        .min_by_key(|op| (op.complete_ns, op.id))
}

pub(crate) fn check(history: &History, windows: &[FaultWindow], bound_ns: u64) -> Findings {
    let mut findings = Findings::default();
    if windows.is_empty() {
        findings.skipped = Some("the history has no faults".into());
        return findings;
    }
    let violation = |ops: Vec<u64>, explanation: String| Violation {
        check: CheckName::Recovery,
        address: None,
        node: None,
        ops,
        explanation,
    };
    for w in windows.iter().filter(|w| w.stop_ns.is_none()) {
        findings.violations.push(violation(
            vec![],
            format!("fault {} started at {} and never healed", w.name, crate::report::ms(w.start_ns)),
        ));
    }
    let Some(heal) = windows.iter().filter_map(|w| w.stop_ns).max() else { return findings };
    match first_allocation_after(history, heal) {
        None => {
            let tried: Vec<u64> = history
                .ops()
                .filter(|op| matches!(op.call, Call::Allocate { .. }) && op.invoke_ns >= heal)
                .map(|op| op.id)
                .take(5)
                .collect();
            let what = if tried.is_empty() { "none was invoked" } else { "none of those invoked succeeded" };
            findings.violations.push(violation(
                tried,
                format!("no allocation succeeded after the last heal at {}: {what}", crate::report::ms(heal)),
            ));
        }
        Some(op) if op.complete_ns.saturating_sub(heal) > bound_ns => findings.violations.push(violation(
            vec![op.id],
            format!(
                "the first allocation to succeed after the heal at {} completed {} later, over the bound of {}",
                crate::report::ms(heal),
                crate::report::ms(op.complete_ns.saturating_sub(heal)),
                crate::report::ms(bound_ns)
            ),
        )),
        Some(op) => {
            findings.note = Some(format!(
                "allocation {} succeeded {} after the last heal (bound {})",
                op.id,
                crate::report::ms(op.complete_ns.saturating_sub(heal)),
                crate::report::ms(bound_ns)
            ));
        }
    }
    findings
}
