//! Runs `hc-bench --smoke --parts pod-path,burst` end to end — a real 3-replica hc-allocator,
//! real hc-agent processes, the real hc-bridge plugin and Debian's reference bridge and
//! host-local plugins, in real network namespaces — and checks only what must hold whatever the
//! machine's speed: every call succeeded, every ADD answered a distinct address from its pool,
//! the DELs released everything (the runner checks the allocator, host-local's files, the
//! agents' records and the node namespaces, and reports any leftover as a problem), and no
//! process, namespace or scratch directory outlives the run. It asserts no timing.
//!
//! Needs root, `containernetworking-plugins` (installed by scripts/deps.sh) and the workspace's
//! binaries (`cargo build --workspace`: hc-allocator, hc-agent, hc-bridge).

use std::collections::HashSet;
use std::net::Ipv4Addr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// The smoke run takes well under a minute; this only keeps a hung run from hanging CI.
const RUN_LIMIT: Duration = Duration::from_secs(300);

fn require_reference_plugins() {
    for p in ["/usr/lib/cni/bridge", "/usr/lib/cni/host-local"] {
        assert!(
            Path::new(p).is_file(),
            "{p} is missing: this test needs the reference CNI plugins — \
             `apt-get install -y containernetworking-plugins` (scripts/deps.sh does)"
        );
    }
}

/// Processes whose command line mentions `needle`.
fn processes_mentioning(needle: &str) -> Vec<String> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        if let Ok(cmd) = std::fs::read(entry.path().join("cmdline")) {
            let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
            if cmd.contains(needle) {
                out.push(cmd);
            }
        }
    }
    out
}

/// The runner's network namespaces are `hcb<its pid>-…`.
fn namespaces_of(pid: u32) -> Vec<String> {
    let prefix = format!("hcb{pid}-");
    std::fs::read_dir("/run/netns")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| n.starts_with(&prefix))
        .collect()
}

/// Checks a list of ADD addresses (`10.231.0.7/22`): as many as `expected`, all distinct, all
/// inside `pool`.
fn check_addresses(what: &str, addresses: &Value, expected: usize, pool: &str) {
    let (net, len) = pool.split_once('/').expect("pool CIDR");
    let (net, len): (Ipv4Addr, u32) = (net.parse().expect("pool address"), len.parse().expect("prefix"));
    let mask = u32::MAX << (32 - len);
    let list = addresses.as_array().unwrap_or_else(|| panic!("{what}: no addresses in the report"));
    assert_eq!(list.len(), expected, "{what}: {} addresses for {expected} ADDs", list.len());
    let mut seen = HashSet::new();
    for a in list {
        let a = a.as_str().expect("address string");
        let ip: Ipv4Addr = a.split('/').next().and_then(|ip| ip.parse().ok()).expect("an IPv4 address");
        assert_eq!(u32::from(ip) & mask, u32::from(net) & mask, "{what}: {a} is outside {pool}");
        assert!(seen.insert(ip), "{what}: {ip} answered to two ADDs");
    }
}

#[test]
fn pod_path_and_burst_smoke_is_correct_and_cleans_up() {
    require_reference_plugins();
    let work = tempfile::tempdir().expect("work dir");
    let out = tempfile::tempdir().expect("output dir");
    let json_path = out.path().join("pods.json");

    let started = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_hc-bench"))
        .args(["--smoke", "--parts", "pod-path,burst", "--json"])
        .arg(&json_path)
        .arg("--work-dir")
        .arg(work.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start hc-bench");
    let pid = child.id();
    let stdout = child.stdout.take().expect("piped stdout");
    let reader = std::thread::spawn(move || std::io::read_to_string(stdout).unwrap_or_default());
    let status = loop {
        if let Some(s) = child.try_wait().expect("poll hc-bench") {
            break s;
        }
        if started.elapsed() > RUN_LIMIT {
            // SIGTERM lets the runner kill its children and delete its namespaces.
            let _ = Command::new("kill").arg("-TERM").arg(pid.to_string()).status();
            std::thread::sleep(Duration::from_secs(10));
            let _ = child.kill();
            let _ = child.wait();
            panic!("hc-bench did not finish within {RUN_LIMIT:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let stdout = reader.join().unwrap_or_default();
    println!("{stdout}");
    eprintln!("hc-bench --smoke --parts pod-path,burst took {:?}", started.elapsed());
    assert!(status.success(), "hc-bench exited with {status}");

    let report: Value =
        serde_json::from_str(&std::fs::read_to_string(&json_path).expect("JSON written")).expect("valid JSON");
    assert_eq!(report["problems"], Value::Array(vec![]), "correctness problems reported");

    // Pod path: both sides, both phases, ADD and DEL, 10 calls each, none failed.
    let rows = report["pod_path"]["rows"].as_array().expect("pod-path rows");
    for (side, pool) in [("hc_bridge", "10.231.0.0/22"), ("reference", "10.233.0.0/22")] {
        for phase in ["sequential", "concurrent"] {
            for verb in ["ADD", "DEL"] {
                let row = rows
                    .iter()
                    .find(|r| r["side"] == side && r["phase"] == phase && r["verb"] == verb)
                    .unwrap_or_else(|| panic!("no {side} {phase} {verb} row"));
                assert_eq!(row["calls"], 10, "{side} {phase} {verb}: {row}");
                assert_eq!(row["failures"], 0, "{side} {phase} {verb}: {row}");
                if verb == "ADD" {
                    check_addresses(&format!("{side} {phase}"), &row["addresses"], 10, pool);
                }
            }
        }
    }
    let concurrent = rows.iter().find(|r| r["phase"] == "concurrent").expect("a concurrent row");
    assert_eq!(concurrent["in_flight"], 10);

    // Burst: 40 ADDs over 2 agents, 20 each, then 40 DELs; none failed.
    let burst = &report["burst"];
    assert_eq!(burst["pods"], 40);
    for wave in ["add", "del"] {
        let w = &burst[wave];
        assert_eq!((w["calls"].as_u64(), w["failures"].as_u64()), (Some(40), Some(0)), "burst {wave}: {w}");
        let agents = w["per_agent"].as_array().expect("per-agent rows");
        assert_eq!(agents.len(), 2);
        assert!(agents.iter().all(|a| a["calls"] == 20 && a["failures"] == 0), "burst {wave}: {agents:?}");
    }
    check_addresses("burst", &burst["add"]["addresses"], 40, "10.232.0.0/20");
    assert!(stdout.contains("Pod path:") && stdout.contains("Burst:"), "tables missing from stdout");

    // Nothing outlives the run.
    let left: Vec<_> = std::fs::read_dir(work.path()).expect("read work dir").flatten().map(|e| e.path()).collect();
    assert!(left.is_empty(), "scratch left behind: {left:?}");
    let procs = processes_mentioning(&work.path().to_string_lossy());
    assert!(procs.is_empty(), "processes left behind: {procs:?}");
    let netns = namespaces_of(pid);
    assert!(netns.is_empty(), "network namespaces left behind: {netns:?}");
}
