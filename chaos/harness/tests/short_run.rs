//! The short chaos run CI runs: 3 schedules × 22 s (over a minute in all), each with a leader
//! kill and a partition, every fault kind at least once, zero violations. Also: an interrupted
//! run leaves no namespace, link or process behind.
//!
//! Needs root, iproute2 and iptables (`scripts/deps.sh`) and a built `hc-allocator` beside
//! `hc-chaos` (`cargo build -p hc-allocator`). Without them the tests fail, never skip.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use hc_chaos::fault::FaultKind;
use hc_chaos::run::RunReport;

fn preconditions() -> PathBuf {
    let uid = Command::new("id").arg("-u").output().expect("id -u");
    assert_eq!(String::from_utf8_lossy(&uid.stdout).trim(), "0", "the chaos run needs root (namespaces, iptables)");
    for tool in ["ip", "iptables"] {
        let found = Command::new("sh").args(["-c", &format!("command -v {tool}")]).status().expect("sh");
        assert!(found.success(), "{tool} is missing: run scripts/deps.sh");
    }
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_hc-chaos"));
    let allocator = bin.with_file_name("hc-allocator");
    assert!(allocator.exists(), "{} is missing: cargo build -p hc-allocator", allocator.display());
    bin
}

/// Namespaces and links named after the run with process id `pid`.
fn leftovers(pid: u32) -> Vec<String> {
    let ns = Command::new("ip").args(["netns", "list"]).output().expect("ip netns");
    let links = Command::new("ip").args(["-o", "link", "show"]).output().expect("ip link");
    let netns_prefix = format!("hcc{pid}s");
    let link_prefix = format!("hcc{}", pid % 100_000);
    let mut found: Vec<String> = String::from_utf8_lossy(&ns.stdout)
        .lines()
        .filter(|l| l.starts_with(&netns_prefix))
        .map(str::to_owned)
        .collect();
    found.extend(
        String::from_utf8_lossy(&links.stdout)
            .lines()
            .filter_map(|l| l.split(": ").nth(1))
            .map(|name| name.split('@').next().unwrap_or(name))
            .filter(|name| name.starts_with(&link_prefix) && name[link_prefix.len()..].starts_with(['b', 'v']))
            .map(str::to_owned),
    );
    found
}

#[test]
fn short_run_has_no_violations_and_runs_every_fault_kind() {
    let bin = preconditions();
    let out = tempfile::tempdir().expect("a scratch dir");
    let started = Instant::now();
    let child = Command::new(&bin)
        .args(["--seed", "1", "--schedules", "3", "--schedule-secs", "22", "--out"])
        .arg(out.path())
        .stdout(Stdio::null())
        .spawn()
        .expect("hc-chaos starts");
    let pid = child.id();
    let status = child.wait_with_output().expect("hc-chaos runs").status;
    let took = started.elapsed();
    let text = std::fs::read_to_string(out.path().join("report.json")).expect("report.json written");
    let report: RunReport = serde_json::from_str(&text).expect("report.json parses");
    let markdown = std::fs::read_to_string(out.path().join("report.md")).expect("report.md written");
    assert!(report.errors.is_empty(), "schedules failed: {:?}", report.errors);
    assert_eq!(report.violations, 0, "{markdown}");
    assert!(status.success(), "hc-chaos exited {status}");
    assert_eq!(report.schedules.len(), 3);
    assert!(took >= Duration::from_secs(60), "the short run must last a minute, took {took:?}");
    assert!(report.operations > 1000, "too few operations: {}", report.operations);
    for kind in FaultKind::COVERED {
        let ran = report.faults.get(kind.name()).map_or(0, |f| f.count);
        assert!(ran >= 1, "{} never ran", kind.name());
    }
    for s in &report.schedules {
        let names: Vec<&str> = s.check.faults.iter().map(|f| f.name.as_str()).collect();
        assert!(names.contains(&"kill-leader"), "schedule {} has no leader kill", s.index);
        assert!(
            names.iter().any(|n| ["isolate-leader", "isolate-follower", "one-way-cut"].contains(n)),
            "schedule {} has no partition",
            s.index
        );
    }
    let kill = &report.faults["kill-leader"];
    assert_eq!(kill.never_recovered, 0, "allocation never came back after a leader kill");
    assert!(leftovers(pid).is_empty(), "left behind: {:?}", leftovers(pid));
    eprintln!("{markdown}");
}

#[test]
fn an_interrupted_run_leaves_nothing_behind() {
    let bin = preconditions();
    let out = tempfile::tempdir().expect("a scratch dir");
    let mut child = Command::new(&bin)
        .args(["--seed", "2", "--schedules", "1", "--schedule-secs", "30", "--out"])
        .arg(out.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("hc-chaos starts");
    let pid = child.id();
    // Interrupt once the cluster is up (its namespaces exist), in the middle of the workload.
    let deadline = Instant::now() + Duration::from_secs(30);
    while leftovers(pid).len() < 4 {
        assert!(Instant::now() < deadline, "the cluster never came up");
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_secs(3));
    assert!(Command::new("kill").args(["-INT", &pid.to_string()]).status().expect("kill").success());
    let status = child.wait().expect("hc-chaos exits");
    assert_eq!(status.code(), Some(130), "interrupted run exit status");
    assert!(leftovers(pid).is_empty(), "left behind: {:?}", leftovers(pid));
    // The allocators' command lines name their data directories, which are under `out`.
    let ps = Command::new("pgrep").arg("-f").arg(out.path()).output().expect("pgrep");
    assert!(ps.stdout.is_empty(), "allocator processes left: {}", String::from_utf8_lossy(&ps.stdout));
}
