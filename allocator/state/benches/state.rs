//! Micro-benchmarks of the state machine (criterion), through its public API only:
//! - `search/…`: allocate the next free address (and release it again, so the state keeps its
//!   size) in an IPv4 /8 or an IPv6 /64 pool with 1k, 100k or 1M addresses allocated, dense
//!   (one run) or fragmented (every other address released, i.e. one run per allocation);
//! - `apply/…`: `State::apply` of an allocate, a release, and a lease grant (the one lease
//!   command that goes through the log; keep-alives do not);
//! - `snapshot/…`: MessagePack (the Raft layer's codec) serialize and restore of a large state.
//!
//! `cargo bench -p hc-allocator-state` runs the full sizes. `cargo test -p hc-allocator-state
//! --benches` runs every benchmark once, with at most 10k allocations per state, so that CI
//! checks they still work without spending minutes building large states.

use std::hint::black_box;

use criterion::{BatchSize, BenchmarkId, Criterion, criterion_group, criterion_main};
use hc_allocator_state::{ApplyContext, Command, Output, Request, State};
use hc_api::types::{AllocateRequest, AttachmentId, Owner, PoolSpec, ReleaseTarget};

/// `cargo bench` passes `--bench`; `cargo test --benches` does not (criterion's test mode).
fn full_run() -> bool {
    std::env::args().any(|a| a == "--bench")
}

fn sizes() -> Vec<u64> {
    if full_run() { vec![1_000, 100_000, 1_000_000] } else { vec![1_000, 10_000] }
}

/// A state and the next log index to apply at.
struct Bench {
    state: State,
    index: u64,
}

impl Bench {
    fn apply(&mut self, command: Command) -> Output {
        self.index += 1;
        let req = Request { time_ms: 1_000_000 + self.index, command };
        self.state.apply(ApplyContext { log_index: self.index }, &req).expect("command accepted")
    }
}

fn pool_spec(name: &str, cidr: &str) -> PoolSpec {
    serde_json::from_value(serde_json::json!({ "name": name, "cidr": cidr })).expect("pool spec")
}

fn owner(container: &str) -> Owner {
    Owner {
        container_id: container.to_owned(),
        interface: "eth0".into(),
        namespace: "bench".into(),
        pod: container.to_owned(),
        node: format!("node-{}", container.len() % 16),
    }
}

fn allocate(pool: &str, container: &str) -> Command {
    Command::Allocate {
        fence: None,
        request: AllocateRequest { owner: owner(container), pool: Some(pool.to_owned()), ..Default::default() },
    }
}

fn release(container: &str) -> Command {
    Command::Release {
        fence: None,
        target: ReleaseTarget::Owner(AttachmentId { container_id: container.to_owned(), interface: "eth0".into() }),
    }
}

/// A state with one pool holding `n` allocations; fragmented: `2n` allocated, then every
/// other one released (the pool has no reuse cooldown, so the gaps are free at once).
fn filled(cidr: &str, n: u64, fragmented: bool) -> Bench {
    let mut b = Bench { state: State::default(), index: 0 };
    b.apply(Command::CreatePool(pool_spec("p", cidr)));
    let total = if fragmented { 2 * n } else { n };
    for i in 0..total {
        b.apply(allocate("p", &format!("c{i}")));
    }
    if fragmented {
        for i in (0..total).step_by(2) {
            b.apply(release(&format!("c{i}")));
        }
    }
    assert_eq!(b.state.allocation_count(), n);
    b
}

fn search(c: &mut Criterion) {
    let mut g = c.benchmark_group("search");
    for (family, cidr) in [("v4", "10.0.0.0/8"), ("v6", "fd00::/64")] {
        for fragmented in [false, true] {
            for n in sizes() {
                let mut b = filled(cidr, n, fragmented);
                let layout = if fragmented { "fragmented" } else { "dense" };
                let id = BenchmarkId::new(format!("{family}/{layout}/allocate+release"), n);
                g.bench_function(id, |bench| {
                    bench.iter(|| {
                        black_box(b.apply(allocate("p", "probe")));
                        black_box(b.apply(release("probe")));
                    })
                });
            }
        }
    }
    g.finish();
}

fn apply(c: &mut Criterion) {
    let mut g = c.benchmark_group("apply");
    let n = *sizes().last().expect("sizes");
    let mut b = filled("10.0.0.0/8", n, false);
    let mut next = n;
    g.bench_function(BenchmarkId::new("allocate", n), |bench| {
        bench.iter(|| {
            next += 1;
            black_box(b.apply(allocate("p", &format!("c{next}"))))
        })
    });
    // Releases what the allocate benchmark added (and then nothing, which is idempotent and
    // still a full apply), so the state returns to about `n` allocations.
    let mut victim = n;
    g.bench_function(BenchmarkId::new("release", n), |bench| {
        bench.iter(|| {
            victim += 1;
            black_box(b.apply(release(&format!("c{victim}"))))
        })
    });
    g.bench_function(BenchmarkId::new("grant_lease", n), |bench| {
        bench.iter(|| black_box(b.apply(Command::GrantLease { node: "node-1".into(), ttl_ms: 10_000 })))
    });
    g.finish();
}

fn snapshot(c: &mut Criterion) {
    let mut g = c.benchmark_group("snapshot");
    g.sample_size(10);
    let n = *sizes().last().expect("sizes");
    let b = filled("10.0.0.0/8", n, false);
    let bytes = rmp_serde::to_vec_named(&b.state).expect("serialize");
    g.bench_function(BenchmarkId::new("serialize", n), |bench| {
        bench.iter(|| black_box(rmp_serde::to_vec_named(&b.state).expect("serialize")))
    });
    g.bench_function(BenchmarkId::new("restore", n), |bench| {
        bench.iter_batched(
            || (),
            |()| black_box(rmp_serde::from_slice::<State>(&bytes).expect("restore")),
            BatchSize::PerIteration,
        )
    });
    g.finish();
    println!(
        "snapshot of {n} allocations: {} bytes ({:.0} bytes per allocation)",
        bytes.len(),
        bytes.len() as f64 / n as f64
    );
}

criterion_group!(benches, search, apply, snapshot);
criterion_main!(benches);
