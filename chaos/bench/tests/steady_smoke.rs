//! Runs `hc-bench --smoke --parts steady` end to end — a real 3-replica hc-allocator cluster on
//! loopback under steady load for a few seconds while every replica's term is polled — and
//! checks what the report must hold, never timing or the number of leader changes (which a
//! loaded CI machine could cause and the full run reports).

use std::process::Command;

use serde_json::Value;

#[test]
fn steady_smoke_allocates_and_reports_the_terms_it_saw() {
    let work = tempfile::tempdir().expect("work dir");
    let out = tempfile::tempdir().expect("output dir");
    let json_path = out.path().join("steady.json");
    let output = Command::new(env!("CARGO_BIN_EXE_hc-bench"))
        .args(["--smoke", "--parts", "steady", "--json"])
        .arg(&json_path)
        .arg("--work-dir")
        .arg(work.path())
        .output()
        .expect("run hc-bench");
    let stdout = String::from_utf8_lossy(&output.stdout);
    println!("{stdout}");
    assert!(
        output.status.success(),
        "hc-bench exited with {}: {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    let report: Value = serde_json::from_slice(&std::fs::read(&json_path).expect("the JSON report")).expect("JSON");
    let steady = &report["steady"];
    assert!(steady["allocations"].as_u64().is_some_and(|n| n > 0), "{steady}");
    assert_eq!(steady["errors"], 0, "{steady}");
    assert!(steady["start_term"].as_u64().is_some_and(|t| t >= 1), "{steady}");
    let changes = steady["changes"].as_array().expect("changes listed");
    assert!(changes.iter().all(|c| c["term"].as_u64() > steady["start_term"].as_u64()), "{steady}");
    // A smoke run is far shorter than 10 minutes: the target is reported as not measured.
    let target = report["targets"]
        .as_array()
        .expect("targets")
        .iter()
        .find(|t| t["name"].as_str().unwrap_or("").contains("spurious"));
    assert!(target.is_some_and(|t| t["met"].is_null()), "{report}");
    assert!(
        std::fs::read_dir(work.path()).expect("work dir").next().is_none(),
        "the scratch directory was left behind"
    );
}
