//! `hc-chaos`: parse the flags, run, write the report, exit 0 only when the run passed.

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use hc_api::client::ClientConfig;
use hc_chaos::run::{RunConfig, run};

#[derive(Debug, Parser)]
#[command(about = "Runs an hc-allocator cluster under seeded faults and checks the history")]
struct Flags {
    #[arg(long, default_value_t = 1)]
    seed: u64,
    #[arg(long, default_value_t = 3)]
    schedules: u64,
    /// Scripted faults, run in order by every schedule instead of the seeded plan:
    /// `KIND[=HOLD_MS],…`, e.g. `kill-all=1500,split-minority,lease-lapse`.
    #[arg(long, value_delimiter = ',')]
    faults: Option<Vec<hc_chaos::fault::Step>>,
    /// Rerun only schedule K of this seed (faults are drawn per schedule, so it reproduces).
    #[arg(long)]
    replay_schedule: Option<u64>,
    /// Length of each schedule (faults, then a quiet tail).
    #[arg(long, default_value_t = 25)]
    schedule_secs: u64,
    #[arg(long)]
    out: PathBuf,
    /// 3 or 5.
    #[arg(long, default_value_t = 3, value_parser = replica_count)]
    replicas: usize,
    #[arg(long, default_value_t = 4)]
    agents: usize,
    /// The `hc-allocator` binary; default: beside this one.
    #[arg(long, env = "HC_ALLOCATOR_BIN")]
    allocator_bin: Option<PathBuf>,
    #[arg(long, default_value_t = 2000)]
    lease_ttl_ms: u64,
    /// How long an agent's call may take, retries included; past it the outcome is unknown.
    #[arg(long, default_value_t = 3000)]
    deadline_ms: u64,
    /// Timeout of one attempt inside a call.
    #[arg(long, default_value_t = 1000)]
    attempt_ms: u64,
}

fn replica_count(s: &str) -> Result<usize, String> {
    match s {
        "3" => Ok(3),
        "5" => Ok(5),
        _ => Err("3 or 5".into()),
    }
}

fn main() -> std::process::ExitCode {
    let flags = Flags::parse();
    let allocator_bin = match flags
        .allocator_bin
        .or_else(|| std::env::current_exe().ok().and_then(|e| e.parent().map(|d| d.join("hc-allocator"))))
    {
        Some(b) if b.exists() => b,
        other => {
            eprintln!("hc-chaos: no hc-allocator binary at {other:?}: build it or pass --allocator-bin");
            return std::process::ExitCode::from(2);
        }
    };
    let agent_bin = match std::env::current_exe().ok().and_then(|e| e.parent().map(|d| d.join("hc-chaos-agent"))) {
        Some(b) if b.exists() => b,
        other => {
            eprintln!("hc-chaos: no hc-chaos-agent binary at {other:?}: cargo build -p hc-chaos");
            return std::process::ExitCode::from(2);
        }
    };
    if flags.schedule_secs < 10 || flags.agents == 0 || flags.schedules == 0 {
        eprintln!("hc-chaos: need --schedule-secs ≥ 10, --agents ≥ 1, --schedules ≥ 1");
        return std::process::ExitCode::from(2);
    }
    let config = RunConfig {
        seed: flags.seed,
        schedules: flags.schedules.max(flags.replay_schedule.map_or(0, |k| k + 1)),
        only: flags.replay_schedule,
        script: flags.faults,
        schedule_secs: flags.schedule_secs,
        out: flags.out,
        replicas: flags.replicas,
        agents: flags.agents,
        allocator_bin,
        agent_bin,
        lease_ttl: Duration::from_millis(flags.lease_ttl_ms),
        client: ClientConfig {
            deadline: Duration::from_millis(flags.deadline_ms),
            attempt_timeout: Duration::from_millis(flags.attempt_ms),
        },
        recovery_bound: Duration::from_secs(10),
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("hc-chaos: cannot start the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        hc_chaos::cleanup::install_signal_handler();
        run(&config).await
    });
    let leftovers = hc_chaos::cleanup::remove_all();
    if !leftovers.is_empty() {
        eprintln!("hc-chaos: could not remove {leftovers:?}");
    }
    match result {
        Ok(report) => {
            println!("{}", report.to_markdown());
            eprintln!("hc-chaos: report in {}", config.out.display());
            if report.passed() { std::process::ExitCode::SUCCESS } else { std::process::ExitCode::FAILURE }
        }
        Err(e) => {
            eprintln!("hc-chaos: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
