//! Invariant 1: an address has at most one holder at a time.
//!
//! For each owner of each address we compute when it *certainly* held it. Evidence is an ok
//! allocation or a read (or the final listing) that saw the owner, taking effect somewhere in
//! `[invoke, complete]`; from `complete` the owner holds the address until some operation that
//! may release it takes effect. The hold therefore certainly lasts from `complete` to the
//! earliest invoke of such a release that could take effect after the evidence (one completing
//! at or after the evidence's invoke; unknown releases never complete). Repeats by the same owner
//! are the same hold. A violation is two owners' certain holds overlapping, or a read seeing
//! another owner inside a certain hold.
//!
//! An allocation with an unknown outcome is not evidence by itself: it may never have happened.
//! It becomes evidence once a read or the final listing reveals it.

use std::collections::BTreeSet;

use crate::checks::Findings;
use crate::projection::{OwnerId, Projection, Touch};
use crate::register::Effect;
use crate::report::{CheckName, Violation};

#[derive(Debug, Clone, Copy)]
struct Hold {
    owner: OwnerId,
    start: u64,
    /// Exclusive; `u64::MAX` when nothing may release it.
    end: u64,
    evidence: u64,
}

pub(crate) fn check(p: &Projection) -> Findings {
    let mut findings = Findings::default();
    for (address, touches) in &p.by_address {
        let mut holds = Vec::new();
        let mut reads = Vec::new();
        for t in touches.iter().filter(|t| t.required) {
            let owner = match t.effect {
                Effect::Allocate { owner } => owner,
                Effect::Read { holder: Some(owner) } => {
                    reads.push((owner, t));
                    owner
                }
                _ => continue,
            };
            let end = touches
                .iter()
                .filter(|c| c.effect.may_release(owner) && c.complete_ns >= t.invoke_ns)
                .map(|c| c.invoke_ns)
                .min()
                .unwrap_or(u64::MAX);
            if end > t.complete_ns {
                holds.push(Hold { owner, start: t.complete_ns, end, evidence: t.op });
            }
        }
        holds.sort_by_key(|h| h.start);

        let mut reported: BTreeSet<(OwnerId, OwnerId)> = BTreeSet::new();
        let mut report = |a: &Hold, b_owner: OwnerId, b_op: u64, what: &str| {
            let pair = (a.owner.min(b_owner), a.owner.max(b_owner));
            if reported.insert(pair) {
                findings.violations.push(Violation {
                    check: CheckName::NoDoubleHolder,
                    address: Some(*address),
                    node: None,
                    ops: vec![a.evidence, b_op],
                    explanation: format!(
                        "{address} held by {} (op {}) {what} {} (op {b_op}), with no release in between",
                        p.owners.name(a.owner),
                        a.evidence,
                        p.owners.name(b_owner),
                    ),
                });
            }
        };
        for (i, a) in holds.iter().enumerate() {
            for b in holds.iter().skip(i + 1).take_while(|b| b.start < a.end) {
                if b.owner != a.owner {
                    report(a, b.owner, b.evidence, "while it was also held by");
                }
            }
        }
        for (owner, read) in reads {
            let Touch { invoke_ns, complete_ns, op, .. } = *read;
            for h in holds.iter().filter(|h| h.owner != owner && h.start < invoke_ns && complete_ns < h.end) {
                report(h, owner, op, "while a read saw it held by");
            }
        }
    }
    findings
}
