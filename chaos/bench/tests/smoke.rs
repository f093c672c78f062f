//! Runs `hc-bench --smoke` end to end — a real 3-replica hc-allocator and a real 3-member etcd
//! 3.4 on loopback — and checks what must hold whatever the machine's speed: every store row
//! produced figures, no address was acknowledged twice, every failover trial recovered, and no
//! process or scratch directory outlives the run. It asserts no timing.
//!
//! Needs `etcd` (Debian `etcd-server`, installed by scripts/deps.sh) and the `hc-allocator`
//! binary (`cargo build --workspace`, or `HC_ALLOCATOR_BIN`).

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// The smoke run takes well under a minute; this only keeps a hung run from hanging CI.
const RUN_LIMIT: Duration = Duration::from_secs(300);

fn etcd_bin() -> String {
    std::env::var("HC_BENCH_ETCD_BIN").unwrap_or_else(|_| "etcd".to_owned())
}

fn require_etcd() {
    let ok = Command::new(etcd_bin()).arg("--version").output().is_ok_and(|o| o.status.success());
    assert!(
        ok,
        "`{} --version` does not run: this test needs etcd 3.4 — install it with \
         `apt-get install -y etcd-server etcd-client` (scripts/deps.sh does)",
        etcd_bin()
    );
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

fn run_smoke(work: &Path, json: &Path) -> (std::process::ExitStatus, String, Duration) {
    let started = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_hc-bench"))
        .arg("--smoke")
        .arg("--json")
        .arg(json)
        .arg("--work-dir")
        .arg(work)
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
            panic!("hc-bench --smoke did not finish within {RUN_LIMIT:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    (status, reader.join().unwrap_or_default(), started.elapsed())
}

#[test]
fn smoke_run_is_correct_and_cleans_up() {
    require_etcd();
    let work = tempfile::tempdir().expect("work dir");
    let out = tempfile::tempdir().expect("output dir");
    let json_path = out.path().join("smoke.json");

    let (status, stdout, took) = run_smoke(work.path(), &json_path);
    println!("{stdout}");
    eprintln!("hc-bench --smoke took {took:?}");
    assert!(status.success(), "hc-bench --smoke exited with {status}");

    let report: Value =
        serde_json::from_str(&std::fs::read_to_string(&json_path).expect("JSON written")).expect("valid JSON");
    assert_eq!(report["problems"], Value::Array(vec![]), "correctness problems reported");

    let store = report["store"].as_array().expect("store rows");
    for clients in [1, 16] {
        for system in ["hc", "etcd_address_key", "etcd_pool_key"] {
            let row = store
                .iter()
                .find(|r| r["system"] == system && r["clients"] == clients)
                .unwrap_or_else(|| panic!("no store row for {system} with {clients} clients"));
            assert!(row["in_window"].as_u64().is_some_and(|n| n > 0), "{system}/{clients}: nothing acknowledged");
            for field in ["allocations_per_sec", "p50_ms", "p99_ms"] {
                assert!(row[field].as_f64().is_some_and(|v| v > 0.0), "{system}/{clients}: no {field}: {row}");
            }
            assert_eq!(row["duplicates"], Value::Array(vec![]), "{system}/{clients}: an address acknowledged twice");
        }
    }
    let ratios = report["store_ratios"].as_array().expect("ratios");
    assert_eq!(ratios.len(), 2);
    assert!(
        ratios.iter().all(|r| r["throughput_vs_address_key"].is_number() && r["throughput_vs_pool_key"].is_number())
    );

    let failover = report["failover"].as_array().expect("failover results");
    for system in ["hc", "etcd_address_key"] {
        let f = failover.iter().find(|f| f["system"] == system).unwrap_or_else(|| panic!("no failover for {system}"));
        let trials = f["trials"].as_array().expect("trials");
        assert_eq!(trials.len(), 2, "{system}: smoke runs two trials");
        for t in trials {
            assert!(t["recovery_ms"].is_number(), "{system}: a trial did not recover: {t}");
            assert!(t["new_leader"].is_string() && t["new_leader"] != t["killed"], "{system}: no new leader: {t}");
        }
        assert!(f["acked"].as_u64().is_some_and(|n| n > 0));
        assert_eq!(f["duplicates"], Value::Array(vec![]), "{system}: an address acknowledged twice under failover");
    }
    assert!(stdout.contains("Store:") && stdout.contains("Failover:"), "tables missing from stdout");

    // Nothing outlives the run: no child process, no scratch directory.
    let left: Vec<_> = std::fs::read_dir(work.path()).expect("read work dir").flatten().map(|e| e.path()).collect();
    assert!(left.is_empty(), "scratch left behind: {left:?}");
    let procs = processes_under(work.path());
    assert!(procs.is_empty(), "processes left behind: {procs:?}");
}
