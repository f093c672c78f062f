//! The state machine's own memory per allocation, measured in-process from `/proc/self/status`
//! (resident set size before and after), for the benchmark report. Ignored by default: it builds
//! a large state and prints a figure rather than asserting one. Run with
//! `cargo test -p hc-allocator-state --test memory -- --ignored --nocapture`
//! (`HC_MEMORY_ALLOCATIONS` sets the count, default 200,000). Also prints the snapshot's size
//! and the memory and time of a state restored from it (a restarted replica's state machine).

use hc_allocator_state::{ApplyContext, Command, Request, State};
use hc_api::types::{AllocateRequest, Owner, PoolSpec};

fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS");
    kb * 1024
}

#[test]
#[ignore = "prints a memory figure; run explicitly"]
fn memory_per_allocation() {
    let n: u64 = std::env::var("HC_MEMORY_ALLOCATIONS").ok().and_then(|v| v.parse().ok()).unwrap_or(200_000);
    let mut state = State::default();
    let mut index = 0;
    let mut apply = |state: &mut State, command: Command| {
        index += 1;
        let req = Request { time_ms: 1_000_000 + index, command };
        state.apply(ApplyContext { log_index: index }, &req).expect("accepted");
    };
    let spec: PoolSpec =
        serde_json::from_value(serde_json::json!({ "name": "scale-v4", "cidr": "10.0.0.0/8" })).expect("spec");
    apply(&mut state, Command::CreatePool(spec));
    let before = rss_bytes();
    for i in 0..n {
        // The same owners as hc-bench's scale part.
        let container = format!("fill-{i}");
        let request = AllocateRequest {
            owner: Owner {
                container_id: container.clone(),
                interface: "eth0".into(),
                namespace: "bench".into(),
                pod: container,
                node: format!("scale-node-{}", i % 16),
            },
            pool: Some("scale-v4".into()),
            ..Default::default()
        };
        apply(&mut state, Command::Allocate { fence: None, request });
    }
    let filled = rss_bytes();
    let copy = state.replicated();
    let with_copy = rss_bytes();
    let bytes = rmp_serde::to_vec_named(&copy).expect("serialize");
    drop(copy);
    // A state restored from the snapshot (a restarted replica): its maps are built in bulk.
    let before_restore = rss_bytes();
    let started = std::time::Instant::now();
    let restored: State = rmp_serde::from_slice(&bytes).expect("restore");
    let restore_secs = started.elapsed().as_secs_f64();
    let with_restored = rss_bytes();
    println!(
        "state machine: {n} allocations, {:.0} bytes of RSS per allocation; a snapshot copy adds {:.0} bytes per \
         allocation; snapshot {:.0} bytes per allocation; restored from it in {restore_secs:.3} s: {:.0} bytes per \
         allocation",
        filled.saturating_sub(before) as f64 / n as f64,
        with_copy.saturating_sub(filled) as f64 / n as f64,
        bytes.len() as f64 / n as f64,
        with_restored.saturating_sub(before_restore) as f64 / n as f64
    );
    assert_eq!(state.allocation_count(), n);
    assert_eq!(restored, state);
}
