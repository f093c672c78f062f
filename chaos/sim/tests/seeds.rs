//! The simulation as CI runs it: a thousand seeds must pass, and a seed must replay exactly.
//! (The deliberately broken build is shown to be caught by `scripts/test.sh`, from the command
//! line: the feature must never be enabled from a manifest.)

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Instant;

use hc_sim::{SeedReport, SimOptions, repro_command, run_seed, run_seed_caught};

/// Runs `seeds` on two threads; returns the failing reports and the operations checked.
fn run_seeds(seeds: std::ops::Range<u64>, options: &SimOptions) -> (Vec<SeedReport>, u64) {
    let next = AtomicU64::new(seeds.start);
    let operations = AtomicU64::new(0);
    let failed = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..2 {
            s.spawn(|| {
                loop {
                    let seed = next.fetch_add(1, Ordering::SeqCst);
                    if seed >= seeds.end {
                        break;
                    }
                    let report = run_seed_caught(seed, options).unwrap_or_else(|e| {
                        panic!("seed {seed} could not run: {e:#}; {}", repro_command(seed, options))
                    });
                    operations.fetch_add(report.operations, Ordering::SeqCst);
                    if !report.ok() {
                        failed.lock().unwrap_or_else(PoisonError::into_inner).push(report);
                    }
                }
            });
        }
    });
    (failed.into_inner().unwrap_or_else(PoisonError::into_inner), operations.load(Ordering::SeqCst))
}

fn assert_none_failed(failed: &[SeedReport], options: &SimOptions) {
    for report in failed {
        println!("seed {} violated:", report.seed);
        for v in &report.violations {
            println!("  - {v}");
        }
        for line in report.short_trace(30) {
            println!("    {line}");
        }
        println!("  reproduce: {}", repro_command(report.seed, options));
    }
    assert!(failed.is_empty(), "{} seeds found violations (see above for how to reproduce each)", failed.len());
}

#[test]
fn a_thousand_seeds_of_three_replicas_find_no_violation() {
    if hc_allocator_state::DELIBERATE_BUG {
        println!("skipped: this build has the deliberate bug");
        return;
    }
    let options = SimOptions::default();
    let started = Instant::now();
    let (failed, operations) = run_seeds(0..1_000, &options);
    let secs = started.elapsed().as_secs_f64();
    println!(
        "hc-sim: 1000 seeds, 3 replicas, {secs:.1} s, {:.0} seeds/min, {operations} operations checked, {} with violations",
        1000.0 * 60.0 / secs,
        failed.len()
    );
    assert_none_failed(&failed, &options);
}

#[test]
fn fifty_seeds_of_five_replicas_find_no_violation() {
    if hc_allocator_state::DELIBERATE_BUG {
        return;
    }
    let options = SimOptions { replicas: 5, ..SimOptions::default() };
    let (failed, operations) = run_seeds(10_000..10_050, &options);
    println!("hc-sim: 50 seeds, 5 replicas, {operations} operations checked");
    assert_none_failed(&failed, &options);
}

#[test]
fn a_seed_replays_exactly_and_another_seed_differs() {
    let options = SimOptions::default();
    let run = |seed| run_seed(seed, &options).expect("the simulation runs");
    let a = run(4242);
    let b = run(4242);
    assert_eq!(a.trace, b.trace, "same seed, same trace");
    assert_eq!(a.digest, b.digest, "same seed, same history");
    assert!(a.operations > 50, "the run did something: {} operations", a.operations);
    let c = run(4243);
    assert_ne!(a.digest, c.digest, "another seed, another run");
}
