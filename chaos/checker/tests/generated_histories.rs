//! Property: valid histories from a sequential model (made concurrent by jitter, with unknown
//! outcomes) pass every check; the same histories with one injected corruption do not.
#![allow(clippy::unwrap_used)]

mod model;

use hc_checker::{
    Call, CheckConfig, CheckName, CheckStatus, History, OkResult, Operation, Outcome, Owner, Record, ReleaseTarget,
    check,
};
use model::{Generated, Knobs, Rng, generate};
use proptest::prelude::*;

fn config(g: &Generated) -> CheckConfig {
    CheckConfig { recovery_bound_ns: g.recovery_bound_ns, ..CheckConfig::default() }
}

fn intruder() -> Owner {
    Owner { container_id: "intruder".into(), interface: "eth0".into(), node: "n9".into() }
}

/// The ways to break a valid history, each guaranteed to be caught when it applies.
#[derive(Debug, Clone, Copy)]
enum Corruption {
    /// A read sees an owner that never allocated anything (linearizable).
    ReadOfAStranger,
    /// The final listing names such an owner (linearizable).
    FinalStranger,
    /// A fenced ok write gets a token below one granted before it was invoked (fencing).
    StaleToken,
    /// Two grants of a node in real-time order swap tokens (fencing).
    TokensGoBack,
    /// Every allocation after the heal fails (recovery).
    NoRecovery,
    /// An acknowledged allocation that nothing could release is missing from the listing (durability).
    LostAllocation,
    /// A stranger is given an address the listing shows held and nothing could release (no double holder).
    SecondHolder,
}

const ALL: [Corruption; 7] = [
    Corruption::ReadOfAStranger,
    Corruption::FinalStranger,
    Corruption::StaleToken,
    Corruption::TokensGoBack,
    Corruption::NoRecovery,
    Corruption::LostAllocation,
    Corruption::SecondHolder,
];

fn ops_mut(h: &mut History) -> impl Iterator<Item = &mut Operation> {
    h.records.iter_mut().filter_map(|r| if let Record::Op(op) = r { Some(op) } else { None })
}

/// Whether `op` might release `owner`'s hold on `address` after `after_ns` (a conservative superset).
fn may_release(op: &Operation, owner: &Owner, address: std::net::IpAddr, after_ns: u64) -> bool {
    let complete = if matches!(op.outcome, Outcome::Unknown { .. }) { u64::MAX } else { op.complete_ns };
    if matches!(op.outcome, Outcome::Fail { .. }) || complete < after_ns {
        return false;
    }
    match &op.call {
        Call::Release { target: ReleaseTarget::Owner(o), .. } => o == owner,
        Call::Release { target: ReleaseTarget::Address(a), .. } => *a == address,
        Call::NodeGone { node } => *node == owner.node,
        Call::Reconcile { fence, .. } => fence.node == owner.node,
        _ => false,
    }
}

/// Applies `c` to a copy of `g`'s history; `None` when it has nothing to act on.
fn corrupt(g: &Generated, c: Corruption) -> Option<History> {
    let mut h = g.history.clone();
    let ops: Vec<Operation> = g.history.ops().cloned().collect();
    let last = g.history.final_state()?.clone();
    match c {
        Corruption::ReadOfAStranger => {
            let op = ops_mut(&mut h).find(|op| matches!(op.outcome, Outcome::Ok(OkResult::Read { .. })))?;
            op.outcome = Outcome::Ok(OkResult::Read { holder: Some(intruder()) });
        }
        Corruption::FinalStranger => {
            let Some(Record::FinalState(f)) = h.records.iter_mut().find(|r| matches!(r, Record::FinalState(_))) else {
                return None;
            };
            f.allocations.first_mut()?.owner = intruder();
        }
        Corruption::StaleToken => {
            let grants: Vec<(&str, u64, u64)> = ops
                .iter()
                .filter_map(|op| match (&op.call, &op.outcome) {
                    (Call::Grant { node }, Outcome::Ok(OkResult::Granted { token })) => {
                        Some((node.as_str(), op.complete_ns, *token))
                    }
                    _ => None,
                })
                .collect();
            let (id, token) = ops.iter().filter(|op| op.outcome.is_ok()).find_map(|op| {
                let fence = op.call.fence()?;
                let (_, _, t) = grants.iter().find(|(n, done, _)| *n == fence.node && *done < op.invoke_ns)?;
                Some((op.id, *t - 1))
            })?;
            let op = ops_mut(&mut h).find(|op| op.id == id)?;
            match &mut op.call {
                Call::Allocate { fence: Some(f), .. } | Call::Release { fence: Some(f), .. } => f.token = token,
                Call::Reconcile { fence, .. } => fence.token = token,
                _ => return None,
            }
        }
        Corruption::TokensGoBack => {
            let grants: Vec<&Operation> = ops
                .iter()
                .filter(|op| matches!((&op.call, &op.outcome), (Call::Grant { .. }, Outcome::Ok(_))))
                .collect();
            let (a, b) = grants.iter().find_map(|a| {
                let b = grants.iter().find(|b| b.call == a.call && a.complete_ns < b.invoke_ns)?;
                Some((a.id, b.id))
            })?;
            let token = |id: u64| ops.iter().find(|op| op.id == id).map(|op| op.outcome.clone());
            let (ta, tb) = (token(a)?, token(b)?);
            for op in ops_mut(&mut h) {
                if op.id == a {
                    op.outcome = tb.clone();
                } else if op.id == b {
                    op.outcome = ta.clone();
                }
            }
        }
        Corruption::NoRecovery => {
            for op in ops_mut(&mut h) {
                if matches!(op.call, Call::Allocate { .. }) && op.outcome.is_ok() && op.invoke_ns >= g.heal_ns {
                    op.outcome = Outcome::Fail { error: None };
                }
            }
        }
        Corruption::LostAllocation => {
            let lost = last.allocations.iter().position(|held| {
                ops.iter().any(|a| {
                    let acked = matches!(&a.call, Call::Allocate { owner, .. } if *owner == held.owner)
                        && a.outcome == Outcome::Ok(OkResult::Allocated { address: held.address })
                        && a.complete_ns < last.invoke_ns;
                    acked && !ops.iter().any(|r| may_release(r, &held.owner, held.address, a.invoke_ns))
                })
            })?;
            let Some(Record::FinalState(f)) = h.records.iter_mut().find(|r| matches!(r, Record::FinalState(_))) else {
                return None;
            };
            f.allocations.remove(lost);
        }
        Corruption::SecondHolder => {
            let held = last
                .allocations
                .iter()
                .find(|held| !ops.iter().any(|r| may_release(r, &held.owner, held.address, last.invoke_ns)))?;
            let call =
                Call::Allocate { owner: intruder(), pool: None, requested: None, reservation: None, fence: None };
            h.records.push(Record::Op(Operation {
                id: last.id + 1,
                process: "intruder".into(),
                invoke_ns: last.complete_ns + 10,
                complete_ns: last.complete_ns + 20,
                call,
                outcome: Outcome::Ok(OkResult::Allocated { address: held.address }),
            }));
        }
    }
    Some(h)
}

fn knobs() -> impl Strategy<Value = Knobs> {
    (any::<u64>(), 1usize..120, 0u64..35, 0u64..4_000).prop_map(|(seed, ops, unknown_pct, jitter_ns)| Knobs {
        seed,
        ops,
        unknown_pct,
        jitter_ns,
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn valid_histories_pass_every_check(k in knobs()) {
        let g = generate(k);
        let report = check(&g.history, &config(&g)).unwrap();
        prop_assert!(report.is_ok(), "{k:?}\n{}\n{}", report.to_markdown(), g.history.to_jsonl().unwrap());
        for c in &report.checks {
            prop_assert_eq!(c.status, CheckStatus::Passed, "{:?} {:?}", k, c);
        }
    }

    #[test]
    fn one_corruption_is_always_caught(k in knobs()) {
        let g = generate(k);
        let first = Rng::new(k.seed ^ 0x5EED).below(ALL.len() as u64) as usize;
        let (which, history) = (0..ALL.len())
            .map(|i| ALL[(first + i) % ALL.len()])
            .find_map(|c| corrupt(&g, c).map(|h| (c, h)))
            .unwrap();
        let report = check(&history, &config(&g)).unwrap();
        prop_assert!(!report.is_ok(), "{which:?} not caught, {k:?}\n{}", history.to_jsonl().unwrap());
    }
}

/// Every corruption must be reachable, or the property above would test less than it claims.
#[test]
fn every_corruption_applies_to_some_generated_history_and_is_caught_by_its_check() {
    for c in ALL {
        let expected = match c {
            Corruption::ReadOfAStranger | Corruption::FinalStranger => CheckName::Linearizable,
            Corruption::StaleToken | Corruption::TokensGoBack => CheckName::Fencing,
            Corruption::NoRecovery => CheckName::Recovery,
            Corruption::LostAllocation => CheckName::Durability,
            Corruption::SecondHolder => CheckName::NoDoubleHolder,
        };
        let mut caught = 0;
        for seed in 0..200 {
            let g = generate(Knobs { seed, ops: 60, unknown_pct: 10, jitter_ns: 2_000 });
            let Some(history) = corrupt(&g, c) else { continue };
            let report = check(&history, &config(&g)).unwrap();
            assert!(report.violations_of(expected).next().is_some(), "{c:?} seed {seed}:\n{}", report.to_markdown());
            caught += 1;
        }
        assert!(caught >= 20, "{c:?} applied to only {caught} of 200 histories");
    }
}

/// Regression: a long history whose whole search runs out of steps must still be found wrong by
/// its windows, not reported inconclusive.
#[test]
fn a_violation_deep_in_a_long_history_is_found_by_windows() {
    let g = generate(Knobs { seed: 2, ops: 3_000, unknown_pct: 10, jitter_ns: 3_000 });
    let mut h = g.history.clone();
    // Mid-history, a read sees the address's first holder again.
    let mid = h.records.len() / 2;
    let (address, id) = h.records[mid..]
        .iter()
        .find_map(|r| match r {
            Record::Op(Operation { call: Call::Read { address }, outcome: Outcome::Ok(_), id, .. }) => {
                Some((*address, *id))
            }
            _ => None,
        })
        .unwrap();
    let first = h
        .ops()
        .find_map(|op| match (&op.call, &op.outcome) {
            (Call::Allocate { owner, .. }, Outcome::Ok(OkResult::Allocated { address: a })) if *a == address => {
                Some(owner.clone())
            }
            _ => None,
        })
        .unwrap();
    ops_mut(&mut h).find(|op| op.id == id).unwrap().outcome = Outcome::Ok(OkResult::Read { holder: Some(first) });
    let whole = CheckConfig { max_search_steps: 1_000_000, ..config(&g) };
    let small = CheckConfig { max_search_steps: 20_000, ..config(&g) };
    for config in [&whole, &small] {
        let report = check(&h, config).unwrap();
        assert_eq!(report.status(CheckName::Linearizable), Some(CheckStatus::Violated), "{}", report.to_markdown());
    }
    assert!(check(&g.history, &small).unwrap().is_ok());
}
