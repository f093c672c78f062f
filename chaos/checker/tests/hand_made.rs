//! Hand-made histories (`tests/histories/`), each with the checks it must violate and the
//! operations a violation must name. The valid ones must pass every check that runs.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;

use hc_checker::{CheckConfig, CheckName, CheckStatus, History, Report, check};

fn run(name: &str) -> Report {
    let path = format!("{}/tests/histories/{name}", env!("CARGO_MANIFEST_DIR"));
    let history = History::from_jsonl(&std::fs::read_to_string(path).unwrap()).unwrap();
    check(&history, &CheckConfig::default()).unwrap()
}

fn violated(report: &Report) -> BTreeSet<CheckName> {
    report.violations.iter().map(|v| v.check).collect()
}

/// The ops named by the first violation of `check`.
fn ops_of(report: &Report, check: CheckName) -> Vec<u64> {
    report.violations_of(check).next().map(|v| v.ops.clone()).unwrap_or_default()
}

#[test]
fn two_holders_of_one_address_are_found() {
    let r = run("double_holder.jsonl");
    assert_eq!(violated(&r), [CheckName::NoDoubleHolder, CheckName::Linearizable].into(), "{}", r.to_markdown());
    assert_eq!(ops_of(&r, CheckName::NoDoubleHolder), vec![3, 4]);
    assert_eq!(ops_of(&r, CheckName::Linearizable).last(), Some(&4));
}

#[test]
fn an_unknown_allocation_revealed_by_a_read_counts_as_a_holder() {
    let r = run("revealed_unknown_double_holder.jsonl");
    assert_eq!(violated(&r), [CheckName::NoDoubleHolder, CheckName::Linearizable].into(), "{}", r.to_markdown());
    assert_eq!(ops_of(&r, CheckName::NoDoubleHolder), vec![2, 3]);
}

#[test]
fn a_lost_acknowledged_allocation_is_found() {
    let r = run("lost_allocation.jsonl");
    assert_eq!(violated(&r), [CheckName::Durability, CheckName::Linearizable].into(), "{}", r.to_markdown());
    assert_eq!(ops_of(&r, CheckName::Durability), vec![1, 100]);
    let v = r.violations_of(CheckName::Durability).next().unwrap();
    assert_eq!(v.address, Some("10.0.0.5".parse().unwrap()));
}

#[test]
fn a_write_with_a_stale_token_is_found() {
    let r = run("stale_token.jsonl");
    assert_eq!(violated(&r), [CheckName::Fencing].into(), "{}", r.to_markdown());
    assert_eq!(ops_of(&r, CheckName::Fencing), vec![2, 3]);
}

#[test]
fn a_token_that_goes_back_is_found() {
    let r = run("token_went_back.jsonl");
    assert_eq!(violated(&r), [CheckName::Fencing].into(), "{}", r.to_markdown());
    assert_eq!(ops_of(&r, CheckName::Fencing), vec![1, 2]);
}

#[test]
fn a_read_of_a_released_holder_is_not_linearizable() {
    let r = run("stale_read.jsonl");
    assert_eq!(violated(&r), [CheckName::Linearizable].into(), "{}", r.to_markdown());
    assert_eq!(ops_of(&r, CheckName::Linearizable), vec![1, 2, 3]);
}

#[test]
fn a_reconcile_that_drops_a_valid_attachment_is_not_linearizable() {
    let r = run("reconcile_dropped_valid.jsonl");
    assert_eq!(violated(&r), [CheckName::Linearizable].into(), "{}", r.to_markdown());
    assert_eq!(ops_of(&r, CheckName::Linearizable).last(), Some(&3));
}

#[test]
fn a_recovery_slower_than_the_bound_is_found() {
    let r = run("slow_recovery.jsonl");
    assert_eq!(violated(&r), [CheckName::Recovery].into(), "{}", r.to_markdown());
    assert_eq!(ops_of(&r, CheckName::Recovery), vec![3]);
    let fault = &r.faults[0];
    assert_eq!((fault.first_ok_allocate, fault.unavailable_ns), (Some(3), Some(16_000_000_000)));
    assert_eq!(fault.after_heal_ns, Some(15_000_000_000));

    let generous = CheckConfig { recovery_bound_ns: 20_000_000_000, ..CheckConfig::default() };
    let text = std::fs::read_to_string(format!("{}/tests/histories/slow_recovery.jsonl", env!("CARGO_MANIFEST_DIR")));
    let r = check(&History::from_jsonl(&text.unwrap()).unwrap(), &generous).unwrap();
    assert!(r.is_ok(), "{}", r.to_markdown());
}

#[test]
fn valid_histories_have_no_violations() {
    for name in
        ["valid_concurrent.jsonl", "valid_unknowns.jsonl", "valid_idempotent.jsonl", "valid_lease_lifecycle.jsonl"]
    {
        let r = run(name);
        assert!(r.is_ok(), "{name}:\n{}", r.to_markdown());
        for c in &r.checks {
            assert!(matches!(c.status, CheckStatus::Passed | CheckStatus::Skipped), "{name}: {c:?}");
        }
        assert_eq!(r.status(CheckName::Durability), Some(CheckStatus::Passed), "{name}");
        assert_eq!(r.status(CheckName::Linearizable), Some(CheckStatus::Passed), "{name}");
    }
}

#[test]
fn the_report_measures_unavailability_around_each_fault() {
    let r = run("valid_lease_lifecycle.jsonl");
    assert_eq!(r.status(CheckName::Recovery), Some(CheckStatus::Passed));
    let fault = &r.faults[0];
    assert_eq!((fault.start_ns, fault.stop_ns), (1000, Some(2000)));
    // First ok allocation invoked after the start: op 4, completes at 1300.
    assert_eq!((fault.first_ok_allocate, fault.unavailable_ns), (Some(4), Some(300)));
    // After the heal: op 8, completes at 2600.
    assert_eq!(fault.after_heal_ns, Some(600));
    assert_eq!(r.by_kind["allocate"].ok, 3);
    assert_eq!(r.operations, 9);
    let md = r.to_markdown();
    assert!(md.contains("# History check: no violations"), "{md}");
    assert!(md.contains("| partition (n1 cut off past its lease TTL) |"), "{md}");
}

#[test]
fn a_history_round_trips_through_json_lines() {
    let path = format!("{}/tests/histories/valid_lease_lifecycle.jsonl", env!("CARGO_MANIFEST_DIR"));
    let history = History::from_jsonl(&std::fs::read_to_string(path).unwrap()).unwrap();
    let again = History::from_jsonl(&history.to_jsonl().unwrap()).unwrap();
    assert_eq!(history, again);
}

#[test]
fn malformed_lines_are_errors_not_violations() {
    let bad = [
        // an ok read must say who holds the address, even when nobody does
        r#"{"type":"op","id":1,"process":"p","invoke_ns":0,"complete_ns":1,"call":{"kind":"read","address":"10.0.0.1"},"outcome":"ok","result":{}}"#,
        // an unknown field
        r#"{"type":"op","id":1,"process":"p","invoke_ns":0,"complete_ns":1,"call":{"kind":"grant","node":"n1","x":1},"outcome":"fail"}"#,
        // a result on a failure
        r#"{"type":"op","id":1,"process":"p","invoke_ns":0,"complete_ns":1,"call":{"kind":"grant","node":"n1"},"outcome":"fail","result":{"token":1}}"#,
        // a result of the wrong shape
        r#"{"type":"op","id":1,"process":"p","invoke_ns":0,"complete_ns":1,"call":{"kind":"grant","node":"n1"},"outcome":"ok","result":{"address":"10.0.0.1"}}"#,
    ];
    for line in bad {
        assert!(History::from_jsonl(line).is_err(), "{line}");
    }
    let reversed = r#"{"type":"op","id":1,"process":"p","invoke_ns":5,"complete_ns":1,"call":{"kind":"grant","node":"n1"},"outcome":"fail"}"#;
    assert!(check(&History::from_jsonl(reversed).unwrap(), &CheckConfig::default()).is_err());
    let stray_stop = r#"{"type":"fault","name":"kill","phase":"stop","at_ns":3}"#;
    assert!(check(&History::from_jsonl(stray_stop).unwrap(), &CheckConfig::default()).is_err());
}

#[test]
fn a_fault_that_never_heals_fails_recovery() {
    let line = r#"{"type":"fault","name":"kill-leader","phase":"start","at_ns":3}"#;
    let r = check(&History::from_jsonl(line).unwrap(), &CheckConfig::default()).unwrap();
    assert_eq!(violated(&r), [CheckName::Recovery].into());
}
