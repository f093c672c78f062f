//! Runs `hc-bench --smoke --parts scale,leases` end to end — real 3-replica hc-allocator clusters
//! on loopback — and checks correctness only, never timing: every allocation acknowledged once,
//! every replica (after a cold restart of all of them, and a new replica after catching up)
//! holds exactly the acknowledged allocations, every figure was measured, keep-alives all
//! succeeded and added no entry to the leader's log, and nothing outlives the run.
//!
//! Needs the `hc-allocator` binary (`cargo build --workspace`, or `HC_ALLOCATOR_BIN`) and etcd
//! (the runner reports etcd's version even when it does not start it).

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// The run takes well under a minute; this only keeps a hung run from hanging CI.
const RUN_LIMIT: Duration = Duration::from_secs(300);

fn etcd_bin() -> String {
    std::env::var("HC_BENCH_ETCD_BIN").unwrap_or_else(|_| "etcd".to_owned())
}

/// Processes whose command line mentions `dir` (the run's children would).
fn processes_under(dir: &Path) -> Vec<String> {
    let needle = dir.to_string_lossy().into_owned();
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        if let Ok(cmd) = std::fs::read(entry.path().join("cmdline")) {
            let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
            if cmd.contains(&needle) {
                out.push(cmd);
            }
        }
    }
    out
}

#[test]
fn scale_and_leases_smoke_is_correct_and_cleans_up() {
    let work = tempfile::tempdir().expect("work dir");
    let out = tempfile::tempdir().expect("output dir");
    let json_path = out.path().join("scale.json");
    let started = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_hc-bench"))
        .args(["--smoke", "--parts", "scale,leases", "--json"])
        .arg(&json_path)
        .arg("--work-dir")
        .arg(work.path())
        .arg("--etcd-bin")
        .arg(etcd_bin())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start hc-bench");
    let stdout = child.stdout.take().expect("piped stdout");
    let reader = std::thread::spawn(move || std::io::read_to_string(stdout).unwrap_or_default());
    let status = loop {
        if let Some(s) = child.try_wait().expect("poll hc-bench") {
            break s;
        }
        if started.elapsed() > RUN_LIMIT {
            // SIGTERM lets the runner kill its children and remove its scratch directory.
            let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
            std::thread::sleep(Duration::from_secs(10));
            let _ = child.kill();
            let _ = child.wait();
            panic!("hc-bench --smoke --parts scale,leases did not finish within {RUN_LIMIT:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let stdout = reader.join().unwrap_or_default();
    println!("{stdout}");
    assert!(status.success(), "hc-bench exited with {status}");

    let report: Value =
        serde_json::from_str(&std::fs::read_to_string(&json_path).expect("JSON written")).expect("valid JSON");
    assert_eq!(report["problems"], Value::Array(vec![]), "correctness problems reported");

    let scale = report["scale"].as_array().expect("scale results");
    for family in ["v4", "v6"] {
        let r = scale.iter().find(|r| r["family"] == family).unwrap_or_else(|| panic!("no scale result for {family}"));
        // 5,000 filled, plus the probe at full size, the snapshot top-up and the allocation
        // after the restart: each acknowledged once.
        assert!(r["allocations"].as_u64().is_some_and(|n| n >= 5_000), "{family}: {r}");
        assert_eq!(r["duplicates"], 0, "{family}: an address acknowledged to two owners");
        assert_eq!(r["failed"], 0, "{family}: allocations failed: {}", r["first_error"]);
        assert_eq!(
            r["problems"],
            Value::Array(vec![]),
            "{family}: replicas disagree with the acknowledged allocations"
        );
        for field in ["restart_secs", "catch_up_secs", "snapshot_bytes", "snapshot_build_secs"] {
            assert!(r[field].is_number(), "{family}: {field} not measured: {r}");
        }
        for probe in ["at_1k", "at_full"] {
            assert!(r[probe]["p99_ms"].is_number(), "{family}: no {probe} latency: {r}");
        }
        assert_eq!(r["bytes_per_allocation"].as_array().map(Vec::len), Some(3), "{family}: memory of each replica");
    }

    let leases = &report["leases"];
    assert_eq!(leases["agents"], 200);
    assert_eq!(leases["keep_alive_errors"], 0, "keep-alives failed: {}", leases["first_error"]);
    assert!(leases["keep_alives_per_sec"].as_f64().is_some_and(|v| v > 0.0), "{leases}");
    assert_eq!(leases["log_entries_in_window"], 0, "keep-alives wrote to the log: {leases}");
    assert_eq!(leases["applied_in_window"], 0, "keep-alives were applied: {leases}");
    assert!(stdout.contains("Scale:") && stdout.contains("Leases:"), "tables missing from stdout");

    let left: Vec<_> = std::fs::read_dir(work.path()).expect("read work dir").flatten().map(|e| e.path()).collect();
    assert!(left.is_empty(), "scratch left behind: {left:?}");
    let procs = processes_under(work.path());
    assert!(procs.is_empty(), "processes left behind: {procs:?}");
}
