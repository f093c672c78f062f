//! Invariant 3: a write carrying a node's old fencing token is rejected; tokens only grow.
//!
//! Once an ok grant returned token `T` for a node at time `t`, every ok write for that node
//! invoked after `t` must carry a token of at least `T`. Grants of one node that follow each other
//! in real time (one completes before the next is invoked) must return growing tokens, and no two
//! ok grants may return the same token. Concurrent grants may take effect in either order.

use std::collections::BTreeMap;

use crate::checks::Findings;
use crate::history::History;
use crate::operation::{Call, OkResult, Outcome};
use crate::report::{CheckName, Violation};

#[derive(Debug, Clone, Copy)]
struct Grant {
    op: u64,
    invoke_ns: u64,
    complete_ns: u64,
    token: u64,
}

/// The grant with the highest token among those that completed before `t`.
fn highest_before(grants: &[Grant], t: u64) -> Option<&Grant> {
    grants.iter().filter(|g| g.complete_ns < t).max_by_key(|g| g.token)
}

pub(crate) fn check(history: &History) -> Findings {
    let mut findings = Findings::default();
    let mut grants: BTreeMap<&str, Vec<Grant>> = BTreeMap::new();
    for op in history.ops() {
        if let (Call::Grant { node }, Outcome::Ok(OkResult::Granted { token })) = (&op.call, &op.outcome) {
            let g = Grant { op: op.id, invoke_ns: op.invoke_ns, complete_ns: op.complete_ns, token: *token };
            grants.entry(node).or_default().push(g);
        }
    }
    let violation = |node: &str, ops: Vec<u64>, explanation: String| Violation {
        check: CheckName::Fencing,
        address: None,
        node: Some(node.to_owned()),
        ops,
        explanation,
    };

    for (node, gs) in &mut grants {
        gs.sort_by_key(|g| (g.complete_ns, g.op));
        let mut by_token: BTreeMap<u64, u64> = BTreeMap::new();
        for g in gs.iter() {
            if let Some(first) = by_token.insert(g.token, g.op) {
                findings.violations.push(violation(
                    node,
                    vec![first, g.op],
                    format!("grants {first} and {} of {node} both returned token {}", g.op, g.token),
                ));
            }
            if let Some(before) = highest_before(gs, g.invoke_ns).filter(|b| b.token > g.token) {
                findings.violations.push(violation(
                    node,
                    vec![before.op, g.op],
                    format!(
                        "grant {} of {node} returned token {} after grant {} had returned the larger token {}",
                        g.op, g.token, before.op, before.token
                    ),
                ));
            }
        }
    }

    let mut writes = 0usize;
    for op in history.ops().filter(|op| op.outcome.is_ok()) {
        let Some(fence) = op.call.fence() else { continue };
        writes += 1;
        let Some(newer) = grants.get(fence.node.as_str()).and_then(|gs| highest_before(gs, op.invoke_ns)) else {
            continue;
        };
        if fence.token < newer.token {
            findings.violations.push(violation(
                &fence.node,
                vec![newer.op, op.id],
                format!(
                    "{} {} accepted with token {} of {}, invoked after grant {} had returned token {}",
                    op.call.kind(),
                    op.id,
                    fence.token,
                    fence.node,
                    newer.op,
                    newer.token
                ),
            ));
        }
    }
    findings.note = Some(format!("{writes} fenced writes checked"));
    findings
}
