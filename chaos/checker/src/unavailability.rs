//! How long allocation was unavailable around each fault: from the fault's start (and from its
//! stop) to the completion of the first ok allocation invoked after it.

use crate::checks::recovery::first_allocation_after;
use crate::history::{FaultWindow, History};
use crate::report::FaultReport;

pub(crate) fn faults(history: &History, windows: &[FaultWindow]) -> Vec<FaultReport> {
    windows
        .iter()
        .map(|w| {
            let first = first_allocation_after(history, w.start_ns);
            let after_heal = w.stop_ns.and_then(|stop| first_allocation_after(history, stop).map(|op| (stop, op)));
            FaultReport {
                name: w.name.clone(),
                detail: w.detail.clone(),
                start_ns: w.start_ns,
                stop_ns: w.stop_ns,
                first_ok_allocate: first.map(|op| op.id),
                unavailable_ns: first.map(|op| op.complete_ns.saturating_sub(w.start_ns)),
                after_heal_ns: after_heal.map(|(stop, op)| op.complete_ns.saturating_sub(stop)),
            }
        })
        .collect()
}
