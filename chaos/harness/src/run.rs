//! A run: `schedules` schedules drawn from one seed, each checked, and the run's report
//! (`report.json`, `report.md`, one `schedule-K/history.jsonl` each) written to `out`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use hc_api::client::ClientConfig;
use serde::{Deserialize, Serialize};

use crate::fault;
use crate::schedule::{self, ScheduleReport, TAIL};

#[derive(Debug, Clone)]
pub struct RunConfig {
    pub seed: u64,
    pub schedules: u64,
    /// Faults every schedule runs in order, instead of the seeded plan.
    pub script: Option<Vec<fault::Step>>,
    /// Run only this schedule of the seed (to reproduce one).
    pub only: Option<u64>,
    pub schedule_secs: u64,
    pub out: PathBuf,
    pub replicas: usize,
    pub agents: usize,
    pub allocator_bin: PathBuf,
    /// `hc-chaos-agent`, one process per agent.
    pub agent_bin: PathBuf,
    pub lease_ttl: Duration,
    pub client: ClientConfig,
    /// After the last heal an allocation must succeed within this long.
    pub recovery_bound: Duration,
}

/// Median and maximum of some durations, in milliseconds.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Spread {
    pub samples: usize,
    pub median_ms: Option<f64>,
    pub max_ms: Option<f64>,
}

impl Spread {
    fn of(mut ns: Vec<u64>) -> Spread {
        ns.sort_unstable();
        let ms = |v: u64| v as f64 / 1e6;
        Spread {
            samples: ns.len(),
            median_ms: ns.get(ns.len() / 2).copied().map(ms),
            max_ms: ns.last().copied().map(ms),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FaultSummary {
    pub count: u64,
    /// From the fault's start to the first ok allocation invoked after it.
    pub unavailable: Spread,
    /// Faults after which no allocation succeeded before the schedule ended.
    pub never_recovered: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunReport {
    pub seed: u64,
    pub replicas: usize,
    pub agents: usize,
    pub schedule_secs: u64,
    pub duration_ms: u64,
    pub operations: u64,
    pub violations: u64,
    /// Checks that were inconclusive or skipped somewhere (not passed, not violated).
    pub not_conclusive: Vec<String>,
    pub faults: BTreeMap<String, FaultSummary>,
    pub schedules: Vec<ScheduleReport>,
    /// Schedules that could not run to the end (harness or cluster start-up errors).
    pub errors: Vec<String>,
}

impl RunReport {
    pub fn passed(&self) -> bool {
        self.violations == 0 && self.errors.is_empty()
    }

    pub fn to_markdown(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "# hc-chaos run, seed {}\n", self.seed);
        let _ = writeln!(
            s,
            "{} schedules × {} s, {} replicas, {} agents; {:.1} s in all. **{} operations checked, {} violations{}.**\n",
            self.schedules.len(),
            self.schedule_secs,
            self.replicas,
            self.agents,
            self.duration_ms as f64 / 1e3,
            self.operations,
            self.violations,
            if self.errors.is_empty() { String::new() } else { format!(", {} schedule errors", self.errors.len()) }
        );
        if !self.not_conclusive.is_empty() {
            let _ = writeln!(s, "Not conclusive: {}\n", self.not_conclusive.join("; "));
        }
        let _ = writeln!(s, "| fault | count | unavailable median | max | never recovered |\n|---|---|---|---|---|");
        let fmt = |v: Option<f64>| v.map_or("—".to_owned(), |v| format!("{v:.0} ms"));
        for (name, f) in &self.faults {
            let _ = writeln!(
                s,
                "| {name} | {} | {} | {} | {} |",
                f.count,
                fmt(f.unavailable.median_ms),
                fmt(f.unavailable.max_ms),
                f.never_recovered
            );
        }
        let _ = writeln!(
            s,
            "\nUnavailable = from the fault's start to the completion of the first successful allocation invoked after it.\n"
        );
        for r in &self.schedules {
            let _ = writeln!(
                s,
                "## Schedule {} ({:.1} s, {} grants, {} agent restarts (kill -9), {} pools created, {} allocations at \
                 the end)\n",
                r.index,
                r.duration_ms as f64 / 1e3,
                r.grants,
                r.agent_restarts,
                r.pools_created,
                r.final_allocations
            );
            for i in &r.injected {
                let _ = writeln!(s, "- {i}");
            }
            let _ = writeln!(s, "\n{}", r.check.to_markdown());
        }
        for e in &self.errors {
            let _ = writeln!(s, "## Error\n\n```\n{e}\n```\n");
        }
        s
    }
}

pub async fn run(config: &RunConfig) -> anyhow::Result<RunReport> {
    let began = Instant::now();
    std::fs::create_dir_all(&config.out).with_context(|| format!("cannot create {}", config.out.display()))?;
    let budget = Duration::from_secs(config.schedule_secs).saturating_sub(TAIL + Duration::from_secs(1));
    let mut schedules = Vec::new();
    let mut errors = Vec::new();
    for index in 0..config.schedules {
        if config.only.is_some_and(|k| k != index) {
            continue;
        }
        let planned = match &config.script {
            Some(steps) => fault::scripted(config.seed, index, steps, config.lease_ttl),
            None => fault::plan(config.seed, index, budget, config.lease_ttl),
        };
        let dir = config.out.join(format!("schedule-{index}"));
        eprintln!(
            "hc-chaos: schedule {index}: {}",
            planned.iter().map(|f| f.kind.name()).collect::<Vec<_>>().join(", ")
        );
        match schedule::run_schedule(config, index, planned, &dir).await {
            Ok((report, history)) => {
                let file = std::fs::File::create(dir.join("history.jsonl"))?;
                history.write_jsonl(std::io::BufWriter::new(file))?;
                eprintln!(
                    "hc-chaos: schedule {index}: {} operations, {} violations",
                    report.check.operations,
                    report.check.violations.len()
                );
                schedules.push(report);
            }
            Err(e) => {
                eprintln!("hc-chaos: schedule {index} failed: {e:#}");
                errors.push(format!("schedule {index}: {e:#}"));
            }
        }
    }
    let report = summarize(config, schedules, errors, began.elapsed());
    std::fs::write(config.out.join("report.json"), serde_json::to_string_pretty(&report)?)?;
    std::fs::write(config.out.join("report.md"), report.to_markdown())?;
    Ok(report)
}

fn summarize(config: &RunConfig, schedules: Vec<ScheduleReport>, errors: Vec<String>, took: Duration) -> RunReport {
    let mut by_name: BTreeMap<String, (u64, Vec<u64>, u64)> = BTreeMap::new();
    for f in schedules.iter().flat_map(|r| &r.check.faults) {
        let e = by_name.entry(f.name.clone()).or_default();
        e.0 += 1;
        match f.unavailable_ns {
            Some(ns) => e.1.push(ns),
            None => e.2 += 1,
        }
    }
    let faults = by_name
        .into_iter()
        .map(|(name, (count, ns, never))| {
            (name, FaultSummary { count, unavailable: Spread::of(ns), never_recovered: never })
        })
        .collect();
    let not_conclusive = schedules
        .iter()
        .flat_map(|r| {
            r.check.checks.iter().filter(|c| !matches!(c.status, hc_checker::CheckStatus::Passed)).map(move |c| {
                format!(
                    "schedule {}: {} {:?} {}",
                    r.index,
                    c.check.as_str(),
                    c.status,
                    c.note.clone().unwrap_or_default()
                )
            })
        })
        .collect();
    RunReport {
        seed: config.seed,
        replicas: config.replicas,
        agents: config.agents,
        schedule_secs: config.schedule_secs,
        duration_ms: took.as_millis() as u64,
        operations: schedules.iter().map(|r| r.check.operations).sum(),
        violations: schedules.iter().map(|r| r.check.violations.len() as u64).sum(),
        not_conclusive,
        faults,
        schedules,
        errors,
    }
}
