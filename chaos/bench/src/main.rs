//! `hc-bench`: parse and validate, start the Ctrl-C handler, run, print the tables, write the
//! JSON. Exits 0 when every correctness check passed, 3 when one failed, 1 when the run could not
//! complete, 2 on bad flags.

use std::process::ExitCode;
use std::sync::{Arc, Weak};

use clap::Parser;
use hc_bench::config::{Config, Flags};
use hc_bench::etcd_cluster::etcd_version;
use hc_bench::machine::Machine;
use hc_bench::supervisor::Supervisor;

fn main() -> ExitCode {
    let cfg = match Config::load(Flags::parse(), |k| std::env::var(k).ok()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("hc-bench: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("hc-bench: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cfg)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("hc-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cfg: Config) -> anyhow::Result<ExitCode> {
    // Checked before anything starts, so that a machine without etcd fails with the fix.
    let uses_etcd = cfg.runs(hc_bench::config::Part::Store) || cfg.runs(hc_bench::config::Part::Failover);
    let etcd = if uses_etcd { etcd_version(&cfg.etcd_bin)? } else { "not used".to_owned() };
    let machine = Machine::probe(etcd);
    let sup = Arc::new(Supervisor::new(&cfg.work_dir)?);
    tokio::spawn(kill_on_signal(Arc::downgrade(&sup)));
    let report = hc_bench::run(&cfg, &sup, machine).await;
    sup.shutdown();
    let report = report?;
    print!("{}", hc_bench::report::render(&report));
    if let Some(path) = &cfg.json {
        std::fs::write(path, serde_json::to_string_pretty(&report)?)
            .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?;
    }
    Ok(if report.problems.is_empty() { ExitCode::SUCCESS } else { ExitCode::from(3) })
}

/// On Ctrl-C or SIGTERM: kill every child, remove the scratch directory, exit 130.
async fn kill_on_signal(sup: Weak<Supervisor>) {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut term) = signal(SignalKind::terminate()) else { return };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    eprintln!("hc-bench: interrupted; stopping every process and removing the scratch directory");
    if let Some(sup) = sup.upgrade() {
        sup.shutdown();
    }
    std::process::exit(130);
}
