//! Allocation at scale: 100,000 addresses from a /8 IPv4 pool and 100,000 from a /64 IPv6 pool.
//! The search index must stay proportional to the runs of addresses in use, not to the pool
//! size, and the counts must stay exact. Timings and sizes are printed (`--nocapture`), never
//! asserted.
#![allow(clippy::unwrap_used)]

use std::net::IpAddr;
use std::time::Instant;

use hc_allocator_state::{ApplyContext, Command, Output, Request, State};
use hc_api::types::{AllocateRequest, Owner, PoolSpec, ReleaseTarget};

const N: u64 = 100_000;

fn pool(name: &str, cidr: &str) -> PoolSpec {
    PoolSpec {
        name: name.into(),
        cidr: cidr.parse().unwrap(),
        gateway: None,
        vlan: None,
        routes: vec![],
        dns: Default::default(),
        exclude: vec![],
        selector: Default::default(),
        default: false,
        reuse_cooldown_secs: 0,
    }
}

struct Log {
    state: State,
    index: u64,
}

impl Log {
    fn apply(&mut self, command: Command) -> Output {
        self.index += 1;
        let r = self.state.apply(ApplyContext { log_index: self.index }, &Request { time_ms: self.index, command });
        r.unwrap()
    }

    /// Allocates `N` addresses from `pool` for realistic-looking owners; returns them in order.
    fn fill(&mut self, pool: &str) -> Vec<IpAddr> {
        let start = Instant::now();
        let mut got = Vec::with_capacity(N as usize);
        for i in 0..N {
            let request = AllocateRequest {
                owner: Owner {
                    container_id: format!("{pool}{i:060x}"),
                    interface: "eth0".into(),
                    namespace: "team-a".into(),
                    pod: format!("web-{i}"),
                    node: format!("node-{:04}", i % 1000),
                },
                pool: Some(pool.into()),
                ..Default::default()
            };
            let Output::Allocated(a) = self.apply(Command::Allocate { fence: None, request }) else { panic!() };
            got.push(a.allocation.address);
        }
        let elapsed = start.elapsed();
        println!(
            "{pool}: {N} allocations in {:.2?} ({:.1} µs each), index runs: {}",
            elapsed,
            elapsed.as_secs_f64() * 1e6 / N as f64,
            self.state.pool_index_runs(pool).unwrap()
        );
        got
    }
}

#[test]
fn a_hundred_thousand_allocations_in_a_slash_8_and_a_slash_64() {
    let mut log = Log { state: State::default(), index: 0 };
    log.apply(Command::CreatePool(pool("big4", "10.0.0.0/8")));
    log.apply(Command::CreatePool(pool("big6", "fd00:1::/64")));

    let v4 = log.fill("big4");
    let v6 = log.fill("big6");

    // Every address distinct, counts exact, the index a handful of runs.
    let mut all: Vec<IpAddr> = v4.iter().chain(&v6).copied().collect();
    all.sort();
    all.dedup();
    assert_eq!(all.len() as u64, 2 * N);
    let s4 = log.state.pool("big4").unwrap();
    assert_eq!((s4.size, s4.used, s4.free), ((1 << 24) - 2, N, (1 << 24) - 2 - u128::from(N)));
    let s6 = log.state.pool("big6").unwrap();
    assert_eq!((s6.size, s6.used, s6.free), ((1 << 64) - 1, N, (1 << 64) - 1 - u128::from(N)));
    assert!(log.state.pool_index_runs("big4").unwrap() <= 2);
    assert!(log.state.pool_index_runs("big6").unwrap() <= 2);

    // Fragment the IPv4 pool: release every other address. The index grows with the runs in
    // use (about N/2), still nothing like the pool's 16 million addresses.
    for a in v4.iter().step_by(2) {
        log.apply(Command::Release { fence: None, target: ReleaseTarget::Address(*a) });
    }
    let runs = log.state.pool_index_runs("big4").unwrap();
    println!("big4 after releasing every other address: index runs: {runs}");
    assert!(runs <= N as usize / 2 + 2);
    assert_eq!(log.state.pool("big4").unwrap().used, N / 2);

    let start = Instant::now();
    let bytes = rmp_serde::to_vec_named(&log.state).unwrap();
    let encode = start.elapsed();
    let start = Instant::now();
    let back: State = rmp_serde::from_slice(&bytes).unwrap();
    let decode = start.elapsed();
    assert!(back == log.state);
    let count = log.state.allocation_count();
    println!(
        "snapshot: {} bytes for {count} allocations ≈ {} bytes/allocation (encode {encode:.2?}, decode+rebuild {decode:.2?})",
        bytes.len(),
        bytes.len() as u64 / count
    );
}
