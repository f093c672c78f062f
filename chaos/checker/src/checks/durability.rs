//! Invariant 2: an acknowledged allocation survives until it is released.
//!
//! Every ok allocation acknowledged before the final listing started must be in that listing
//! with the same owner, unless some operation that may release it (a release of its owner or
//! address, a `node_gone` of its node, a reconcile that drops it; ok and listing it, or unknown)
//! could have taken effect after it and before the listing.

use std::collections::BTreeSet;

use crate::checks::Findings;
use crate::history::History;
use crate::projection::Projection;
use crate::register::Effect;
use crate::report::{CheckName, Violation};

pub(crate) fn check(history: &History, p: &Projection) -> Findings {
    let mut findings = Findings::default();
    let Some(last) = history.final_state() else {
        findings.skipped = Some("the history has no final_state record".into());
        return findings;
    };
    let mut checked = 0usize;
    for (address, touches) in &p.by_address {
        let listed = touches.iter().find_map(|t| match t.effect {
            Effect::Read { holder } if t.op == last.id => Some(holder),
            _ => None,
        });
        let listed = listed.flatten();
        let mut reported = BTreeSet::new();
        for t in touches.iter().filter(|t| t.required && t.complete_ns < last.invoke_ns) {
            let Effect::Allocate { owner } = t.effect else { continue };
            checked += 1;
            let released = touches.iter().any(|c| {
                c.effect.may_release(owner) && c.complete_ns >= t.invoke_ns && c.invoke_ns <= last.complete_ns
            });
            if released || listed == Some(owner) || !reported.insert(owner) {
                continue;
            }
            let now = listed.map_or_else(|| "free".to_owned(), |h| format!("held by {}", p.owners.name(h)));
            findings.violations.push(Violation {
                check: CheckName::Durability,
                address: Some(*address),
                node: None,
                ops: vec![t.op, last.id],
                explanation: format!(
                    "{address} acknowledged to {} (op {}) and never released, but the final listing has it {now}",
                    p.owners.name(owner),
                    t.op
                ),
            });
        }
    }
    findings.note = Some(format!("{checked} acknowledged allocations checked against the final listing"));
    findings
}
