//! Each address's history is linearizable as a register whose value is the holder.
//!
//! Allocate writes its owner (from free or from the same owner), releases write free (as
//! [`Effect`] describes), reads and the final listing read. Addresses are checked
//! independently; a multi-address operation (a node release) is checked on each address it
//! touches but not for being atomic across them, so a violation found is real while a
//! cross-address anomaly can go unseen.
//!
//! The search has a step bound per address. When the whole history runs out of steps, windows
//! of it are checked instead: cut where no known operation spans the cut, each window is
//! searched from every holder the address could have at its start, with every earlier unknown
//! operation still available. A window that fails from every start is a real violation (it
//! only allows more than the whole does); if none fails the address is inconclusive, never
//! passed.

use std::collections::BTreeSet;

use crate::checks::Findings;
use crate::projection::{Owners, Projection, Touch};
use crate::register::{Effect, Holder};
use crate::report::{CheckName, Violation};
use crate::search::{Verdict, search};

/// Known operations per window (two chunks of this many, overlapping by one).
const CHUNK: usize = 32;
/// Steps for all windows of one address, in multiples of the whole search's bound.
const WINDOW_BUDGET: u64 = 4;

pub(crate) fn check(p: &Projection, max_steps: u64) -> Findings {
    let mut findings = Findings::default();
    let mut inconclusive = Vec::new();
    for (address, touches) in &p.by_address {
        let (verdict, window) = match search(touches, None, &mut max_steps.clone()) {
            Verdict::Inconclusive => match localize(touches, max_steps) {
                Some((v, start)) => (v, Some(start)),
                None => {
                    inconclusive.push(address.to_string());
                    continue;
                }
            },
            v => (v, None),
        };
        let context = match window {
            Some(start) => format!("from any holder at {}, ", crate::report::ms(start)),
            None => String::new(),
        };
        let (ops, explanation) = match verdict {
            Verdict::Linearizable | Verdict::Inconclusive => continue,
            Verdict::NeverAllocated { op, owner } => (
                vec![op],
                format!(
                    "op {op} ({}) needs {address} held by {}, but nothing allocates it to that owner{}",
                    describe(touches, op, &p.owners),
                    p.owners.name(owner),
                    if window.is_some() { " early enough" } else { "" }
                ),
            ),
            Verdict::NotLinearizable { blocked, prefix_tail, holder } => {
                let holder = holder.map_or_else(|| "free".to_owned(), |h| format!("held by {}", p.owners.name(h)));
                let after = if prefix_tail.is_empty() {
                    "from the start".to_owned()
                } else {
                    format!("after ops {prefix_tail:?}")
                };
                let explanation = format!(
                    "no order of the operations on {address} explains their results: {context}{after} \
                     (address {holder}), op {blocked} ({}) cannot take effect",
                    describe(touches, blocked, &p.owners)
                );
                let mut ops = prefix_tail;
                ops.push(blocked);
                (ops, explanation)
            }
        };
        findings.violations.push(Violation {
            check: CheckName::Linearizable,
            address: Some(*address),
            node: None,
            ops,
            explanation,
        });
    }
    let checked = p.by_address.len();
    if !inconclusive.is_empty() {
        findings.inconclusive = Some(format!(
            "search bound of {max_steps} steps reached on {} of {checked} addresses: {}",
            inconclusive.len(),
            inconclusive.join(", ")
        ));
    }
    findings.note = Some(format!("addresses checked: {checked}"));
    findings
}

/// Finds a window that no start explains; returns one of its failures and its start time. All
/// windows of an address share `WINDOW_BUDGET` times the whole search's bound, and one window
/// searched from one start gets an eighth of that bound.
fn localize(touches: &[Touch], max_steps: u64) -> Option<(Verdict, u64)> {
    let mut total = max_steps.saturating_mul(WINDOW_BUDGET);
    // Cuts: times no known operation spans, between chunks of about CHUNK known operations.
    let mut known: Vec<&Touch> = touches.iter().filter(|t| t.required).collect();
    known.sort_by_key(|t| t.invoke_ns);
    let mut cuts = vec![0u64];
    let (mut reach, mut since) = (0u64, 0usize);
    for t in &known {
        if since >= CHUNK && reach < t.invoke_ns {
            cuts.push(t.invoke_ns);
            since = 0;
        }
        reach = reach.max(t.complete_ns);
        since += 1;
    }
    cuts.push(u64::MAX);
    for (i, w) in cuts.windows(2).enumerate() {
        // The window spans the chunk before this cut too, for context.
        let (start, end) = (cuts[i.saturating_sub(1)], w[1]);
        let window: Vec<Touch> = touches
            .iter()
            .filter(|t| if t.required { t.invoke_ns >= start && t.invoke_ns < end } else { t.invoke_ns < end })
            .map(|t| Touch { invoke_ns: t.invoke_ns.max(start), ..t.clone() })
            .collect();
        // The history starts free; a later window may start free or held by anyone allocated before.
        let starts: BTreeSet<Holder> = touches
            .iter()
            .filter(|t| t.invoke_ns < start)
            .filter_map(|t| if let Effect::Allocate { owner } = t.effect { Some(Some(owner)) } else { None })
            .chain([None])
            .collect();
        let mut failure = None;
        let mut explained = false;
        for h in starts {
            if total == 0 {
                return None;
            }
            let mut budget = total.min((max_steps / 8).max(10_000));
            let before = budget;
            let v = search(&window, h, &mut budget);
            total -= before - budget;
            match v {
                Verdict::Linearizable | Verdict::Inconclusive => {
                    explained = true;
                    break;
                }
                // Prefer where the search got stuck over "never allocated" from a start that
                // needed an allocation before the window.
                Verdict::NotLinearizable { .. } if !matches!(failure, Some(Verdict::NotLinearizable { .. })) => {
                    failure = Some(v)
                }
                v => {
                    failure.get_or_insert(v);
                }
            }
        }
        if !explained && let Some(v) = failure {
            return Some((v, start));
        }
    }
    None
}

/// What op `id` does to the address, for people.
fn describe(touches: &[Touch], id: u64, owners: &Owners) -> String {
    let Some(t) = touches.iter().find(|t| t.op == id) else { return String::new() };
    let listed = |l: Option<bool>| match l {
        Some(true) => " that released it",
        Some(false) => " that did not release it",
        None => "",
    };
    let what = match &t.effect {
        Effect::Allocate { owner } => format!("allocate to {}", owners.name(*owner)),
        Effect::ReleaseOwner { owner, listed: l } => format!("release of {}{}", owners.name(*owner), listed(*l)),
        Effect::ReleaseAddress { listed: l } => format!("release of the address{}", listed(*l)),
        Effect::ReleaseNode { listed: l, .. } => format!("node release{}", listed(*l)),
        Effect::Read { holder: Some(h) } => format!("read: held by {}", owners.name(*h)),
        Effect::Read { holder: None } => "read: free".to_owned(),
    };
    if t.required { what } else { format!("{what}, outcome unknown") }
}
