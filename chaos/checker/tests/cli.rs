//! `hc-check` end to end: reads a history, prints the report, exits 1 on violations.
#![allow(clippy::unwrap_used)]

use std::io::Write;
use std::process::{Command, Stdio};

fn run(args: &[&str], stdin: &str) -> (i32, String, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_hc-check"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    (out.status.code().unwrap(), String::from_utf8(out.stdout).unwrap(), String::from_utf8(out.stderr).unwrap())
}

fn history(name: &str) -> String {
    std::fs::read_to_string(format!("{}/tests/histories/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

#[test]
fn a_valid_history_exits_zero_and_prints_the_report() {
    let (code, out, _) = run(&["-"], &history("valid_lease_lifecycle.jsonl"));
    assert_eq!(code, 0, "{out}");
    assert!(out.starts_with("# History check: no violations"), "{out}");
}

#[test]
fn a_violation_exits_one_and_is_named() {
    let (code, out, _) = run(&["-"], &history("stale_token.jsonl"));
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("- **fencing** (ops 2, 3)"), "{out}");
}

#[test]
fn the_recovery_bound_is_a_flag() {
    let (code, _, _) = run(&["-"], &history("slow_recovery.jsonl"));
    assert_eq!(code, 1);
    let (code, out, _) = run(&["--recovery-bound-ms", "20000", "-"], &history("slow_recovery.jsonl"));
    assert_eq!(code, 0, "{out}");
}

#[test]
fn a_malformed_history_exits_two() {
    let (code, _, err) = run(&["-"], "{\"type\":\"op\"}\n");
    assert_eq!(code, 2);
    assert!(err.contains("line 1"), "{err}");
    let (code, _, err) = run(&["--max-steps"], "");
    assert_eq!(code, 2);
    assert!(err.contains("--max-steps needs a number"), "{err}");
}
