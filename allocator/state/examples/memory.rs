//! Resident memory of the state machine alone: fills one pool with N allocations through
//! `State::apply` (as a replica applies the log) and prints the growth of this process's
//! resident set per allocation, then the same while a snapshot copy of the state exists and
//! after it was dropped and the replica went on applying (1,000 more allocations a second later:
//! mimalloc, the allocator `hc-allocator` runs with and this example too, hands freed pages back
//! to the kernel lazily, on later activity). Then the snapshot's size and the time to write it
//! and to restore a state from it.
//!
//! `cargo run --release -p hc-allocator-state --example memory -- 1000000 [short|kubelet]`
//!
//! `kubelet` owners look like the ones kubelet passes (a 64-hex-digit sandbox id and a
//! Deployment pod name); `short` ones are `fill-N`, as the scale benchmark used to send.

use hc_allocator_state::{ApplyContext, Command, Request, State};
use hc_api::types::{AllocateRequest, Owner, PoolSpec};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const MORE: u64 = 1000;

fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

fn owner(i: u64, kubelet: bool) -> Owner {
    let (container_id, pod) = if kubelet {
        // FNV-1a-style mixing: distinct, hex, 64 digits, like a containerd sandbox id.
        let mut x = i.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ 0xcbf2_9ce4_8422_2325;
        let mut id = String::with_capacity(64);
        for _ in 0..4 {
            x = x.wrapping_mul(0x100_0000_01b3) ^ (x >> 29);
            id.push_str(&format!("{x:016x}"));
        }
        (id, format!("web-frontend-7d4b9c8f6d-{:05x}", i & 0xf_ffff))
    } else {
        (format!("fill-{i}"), format!("fill-{i}"))
    };
    Owner {
        container_id,
        interface: "eth0".into(),
        namespace: "bench".into(),
        pod,
        node: format!("scale-node-{}", i % 16),
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let n: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(1_000_000);
    let kubelet = args.next().as_deref() == Some("kubelet");
    let mut state = State::default();
    let mut index = 0;
    let mut apply = |state: &mut State, command: Command| {
        index += 1;
        let req = Request { time_ms: 1_000_000 + index, command };
        state.apply(ApplyContext { log_index: index }, &req).expect("command accepted");
    };
    let pool: PoolSpec =
        serde_json::from_value(serde_json::json!({ "name": "p", "cidr": "10.0.0.0/8" })).expect("pool");
    apply(&mut state, Command::CreatePool(pool));
    let mut allocate = |state: &mut State, range: std::ops::Range<u64>| {
        for i in range {
            let request = AllocateRequest { owner: owner(i, kubelet), pool: Some("p".into()), ..Default::default() };
            apply(state, Command::Allocate { fence: None, request });
        }
    };
    let before = rss_bytes();
    allocate(&mut state, 0..n);
    let filled = rss_bytes();
    let copy = state.replicated();
    let with_copy = rss_bytes();
    drop(copy);
    std::thread::sleep(std::time::Duration::from_secs(1));
    allocate(&mut state, n..n + MORE);
    let after_copy = rss_bytes();
    let per = |bytes: u64| bytes.saturating_sub(before) as f64 / n as f64;
    println!(
        "{n} allocations ({} owners): {:.0} B per allocation; with a snapshot copy {:.0} B; after dropping it {:.0} B",
        if kubelet { "kubelet" } else { "short" },
        per(filled),
        per(with_copy),
        per(after_copy),
    );
    // The snapshot as a replica writes it, and a state restored from it (a restarted replica).
    let started = std::time::Instant::now();
    let bytes = rmp_serde::to_vec_named(&state).expect("serialize");
    let written = started.elapsed().as_secs_f64();
    let started = std::time::Instant::now();
    let restored: State = rmp_serde::from_slice(&bytes).expect("restore");
    println!(
        "snapshot {:.1} MiB ({:.0} B per allocation), written in {written:.2} s, restored in {:.2} s",
        bytes.len() as f64 / (1 << 20) as f64,
        bytes.len() as f64 / (n + MORE) as f64,
        started.elapsed().as_secs_f64(),
    );
    assert_eq!(state.allocation_count(), n + MORE);
    assert_eq!(restored, state);
}
