//! `hc-sim`: runs seeds of the deterministic simulation and reports what they found.
//!
//! Exit status: 0 when every seed passed (or, with `--expect-violation`, when some seed found a
//! violation); 1 otherwise, after printing the command that reproduces each failing seed.

use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Instant;

use clap::Parser;
use hc_sim::{SeedReport, SimOptions, repro_command, run_seed_caught};

#[derive(Debug, Parser)]
#[command(name = "hc-sim", about = "Deterministic simulation of the allocator under seeded faults")]
struct Args {
    /// How many seeds to run.
    #[arg(long, default_value_t = 100)]
    seeds: u64,
    /// The first seed.
    #[arg(long, default_value_t = 0)]
    start_seed: u64,
    /// Run exactly this seed, with its whole trace.
    #[arg(long, conflicts_with_all = ["seeds", "start_seed"])]
    seed: Option<u64>,
    /// Replicas per cluster.
    #[arg(long, default_value_t = 3, value_parser = parse_replicas)]
    replicas: usize,
    /// Succeed only if some seed finds a violation (to show a deliberately broken build is caught).
    #[arg(long)]
    expect_violation: bool,
    /// With `--seed`: also write the recorded history (JSON lines) here, for `hc-check`.
    #[arg(long, requires = "seed")]
    history: Option<std::path::PathBuf>,
    /// Threads running seeds (each seed runs alone on its own single-threaded runtime).
    #[arg(long)]
    jobs: Option<usize>,
}

fn parse_replicas(s: &str) -> Result<usize, String> {
    match s {
        "3" => Ok(3),
        "5" => Ok(5),
        _ => Err(format!("{s:?}: a cluster here has 3 or 5 replicas")),
    }
}

fn print_failure(report: &SeedReport, options: &SimOptions, tail: usize) {
    println!("seed {} FAILED: {} violation(s)", report.seed, report.violations.len());
    for v in &report.violations {
        println!("  - {v}");
    }
    println!("  trace:");
    for line in report.short_trace(tail) {
        println!("    {line}");
    }
    println!("  reproduce: {}", repro_command(report.seed, options));
}

fn main() -> ExitCode {
    let args = Args::parse();
    if hc_allocator_state::DELIBERATE_BUG {
        println!("WARNING: BUILT WITH deliberate-bug — allocate accepts stale fencing tokens. Never ship this build.");
    }
    let options = SimOptions { replicas: args.replicas, ..SimOptions::default() };

    if let Some(seed) = args.seed {
        return match run_seed_caught(seed, &options) {
            Ok(report) => {
                for line in &report.trace {
                    println!("{line}");
                }
                if let Some(path) = &args.history {
                    if let Err(e) = std::fs::write(path, &report.history) {
                        println!("cannot write the history to {}: {e}", path.display());
                        return ExitCode::FAILURE;
                    }
                    println!("history written to {} (check it with hc-check)", path.display());
                }
                println!(
                    "seed {seed}: {} operations ({} unknown, {} batched), {} faults, {} restarts, term {}, {} snapshot installs ({} answered from the log), digest {:016x}",
                    report.operations,
                    report.unknown,
                    report.batched,
                    report.faults,
                    report.restarts,
                    report.term,
                    report.snapshot_installs,
                    report.snapshots_covered,
                    report.digest
                );
                if report.ok() {
                    println!("seed {seed}: no violations");
                    if args.expect_violation { ExitCode::FAILURE } else { ExitCode::SUCCESS }
                } else {
                    print_failure(&report, &options, 0);
                    if args.expect_violation { ExitCode::SUCCESS } else { ExitCode::FAILURE }
                }
            }
            Err(e) => {
                println!("seed {seed}: the simulation could not run: {e:#}");
                println!("  reproduce: {}", repro_command(seed, &options));
                ExitCode::FAILURE
            }
        };
    }

    let jobs = args.jobs.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get())).max(1);
    let started = Instant::now();
    let next = AtomicU64::new(args.start_seed);
    let end = args.start_seed.saturating_add(args.seeds);
    let done = AtomicU64::new(0);
    let operations = AtomicU64::new(0);
    let unknown = AtomicU64::new(0);
    let restarts = AtomicU64::new(0);
    let elections = AtomicU64::new(0);
    let installs = AtomicU64::new(0);
    let covered = AtomicU64::new(0);
    let batched = AtomicU64::new(0);
    let stop = AtomicBool::new(false);
    let failures: Mutex<Vec<SeedReport>> = Mutex::new(Vec::new());
    let errors: Mutex<Vec<(u64, String)>> = Mutex::new(Vec::new());
    let step = (args.seeds / 10).max(1);
    std::thread::scope(|s| {
        for _ in 0..jobs {
            s.spawn(|| {
                while !stop.load(Ordering::SeqCst) {
                    let seed = next.fetch_add(1, Ordering::SeqCst);
                    if seed >= end {
                        break;
                    }
                    match run_seed_caught(seed, &options) {
                        Ok(report) => {
                            operations.fetch_add(report.operations, Ordering::SeqCst);
                            unknown.fetch_add(report.unknown, Ordering::SeqCst);
                            restarts.fetch_add(report.restarts, Ordering::SeqCst);
                            elections.fetch_add(report.term.saturating_sub(1), Ordering::SeqCst);
                            installs.fetch_add(report.snapshot_installs, Ordering::SeqCst);
                            covered.fetch_add(report.snapshots_covered, Ordering::SeqCst);
                            batched.fetch_add(report.batched, Ordering::SeqCst);
                            if !report.ok() {
                                if args.expect_violation {
                                    stop.store(true, Ordering::SeqCst);
                                }
                                failures.lock().unwrap_or_else(PoisonError::into_inner).push(report);
                            }
                        }
                        Err(e) => errors.lock().unwrap_or_else(PoisonError::into_inner).push((seed, format!("{e:#}"))),
                    }
                    let n = done.fetch_add(1, Ordering::SeqCst) + 1;
                    if n.is_multiple_of(step) {
                        let secs = started.elapsed().as_secs_f64();
                        println!("{n}/{} seeds, {:.0} seeds/min", args.seeds, n as f64 * 60.0 / secs.max(1e-9));
                    }
                }
            });
        }
    });
    let secs = started.elapsed().as_secs_f64();
    let n = done.load(Ordering::SeqCst);
    let mut failures = failures.into_inner().unwrap_or_else(PoisonError::into_inner);
    failures.sort_by_key(|r| r.seed);
    let errors = errors.into_inner().unwrap_or_else(PoisonError::into_inner);
    println!(
        "hc-sim: {n} seeds ({}..{}), {} replicas, {} jobs, {:.1} s, {:.0} seeds/min, {} operations checked, {} seeds with violations, {} seeds that could not run",
        args.start_seed,
        args.start_seed + n,
        options.replicas,
        jobs,
        secs,
        n as f64 * 60.0 / secs.max(1e-9),
        operations.load(Ordering::SeqCst),
        failures.len(),
        errors.len()
    );
    println!(
        "  of which {} unknown outcomes and {} allocations or releases that shared a log entry; {} replica restarts, {} elections after the first, {} snapshot installs, {} snapshots answered from the log",
        unknown.load(Ordering::SeqCst),
        batched.load(Ordering::SeqCst),
        restarts.load(Ordering::SeqCst),
        elections.load(Ordering::SeqCst),
        installs.load(Ordering::SeqCst),
        covered.load(Ordering::SeqCst)
    );
    for (seed, e) in &errors {
        println!("seed {seed}: the simulation could not run: {e}");
        println!("  reproduce: {}", repro_command(*seed, &options));
    }
    if args.expect_violation {
        return match failures.first() {
            Some(report) => {
                println!("expected a violation and found one:");
                print_failure(report, &options, 10);
                ExitCode::SUCCESS
            }
            None => {
                println!("expected a violation, but no seed found one");
                ExitCode::FAILURE
            }
        };
    }
    for report in failures.iter().take(3) {
        print_failure(report, &options, 40);
    }
    if failures.len() > 3 {
        let seeds: Vec<String> = failures.iter().skip(3).map(|r| r.seed.to_string()).collect();
        println!("also failed: seeds {}", seeds.join(", "));
    }
    if failures.is_empty() && errors.is_empty() { ExitCode::SUCCESS } else { ExitCode::FAILURE }
}
