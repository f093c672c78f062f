//! The results: what the JSON file holds, the human tables, and the targets evaluated
//! against the figures. Everything here is pure.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::config::Config;
use crate::machine::Machine;
use crate::stats::Duplicate;

/// The system and layout a store row or failover run measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum System {
    /// hc-allocator, 3 durable replicas.
    Hc,
    /// etcd 3.4, one key per address.
    EtcdAddressKey,
    /// etcd 3.4, one key holding the pool.
    EtcdPoolKey,
}

impl System {
    pub fn label(self) -> &'static str {
        match self {
            System::Hc => "hc-allocator (3 replicas)",
            System::EtcdAddressKey => "etcd: key per address",
            System::EtcdPoolKey => "etcd: one pool key",
        }
    }
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct StoreRow {
    pub system: System,
    pub clients: usize,
    pub allocations_per_sec: f64,
    /// Acknowledged inside the measured time (the throughput's numerator).
    pub in_window: u64,
    pub measured_secs: f64,
    /// Every acknowledged allocation of the row, warm-up included (all checked distinct).
    pub acked: u64,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub max_ms: Option<f64>,
    pub mean_ms: Option<f64>,
    pub conflicts: u64,
    pub errors: BTreeMap<String, u64>,
    pub first_error: Option<String>,
    pub abandoned: u64,
    pub duplicates: Vec<Duplicate>,
    /// CPU cores each server process used during the row (CPU time over wall time).
    pub server_cores: Vec<f64>,
    /// Server CPU time (all three processes) per allocation acknowledged in the row.
    pub server_cpu_ms_per_alloc: Option<f64>,
    /// The benchmark process's CPU time (all clients) per allocation acknowledged in the row.
    pub client_cpu_ms_per_alloc: Option<f64>,
    /// hc-allocator: the mean number of allocations its leader's batcher put in one log entry
    /// over the row, warm-up included (`hc_allocator_proposal_batch_commands`). `None` for etcd,
    /// or when the leader's metrics could not be read.
    pub allocations_per_entry: Option<f64>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct StoreRatio {
    pub clients: usize,
    /// hc-allocator's allocations/s over etcd's.
    pub throughput_vs_address_key: Option<f64>,
    pub throughput_vs_pool_key: Option<f64>,
    /// hc-allocator's p99 over etcd's (below 1 is better).
    pub p99_vs_address_key: Option<f64>,
    pub p99_vs_pool_key: Option<f64>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Trial {
    pub trial: usize,
    pub killed: String,
    pub new_leader: Option<String>,
    /// From the kill until a survivor's status call said it was leader (polled every 20 ms).
    pub leader_seen_ms: Option<f64>,
    /// From the kill to the first acknowledged allocation started after it; `None` if none
    /// within the recovery timeout.
    pub recovery_ms: Option<f64>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct FailoverResult {
    pub system: System,
    pub clients: usize,
    pub trials: Vec<Trial>,
    pub median_ms: Option<f64>,
    pub max_ms: Option<f64>,
    pub min_ms: Option<f64>,
    pub acked: u64,
    pub errors: BTreeMap<String, u64>,
    pub first_error: Option<String>,
    pub duplicates: Vec<Duplicate>,
}

impl FailoverResult {
    pub fn recovered(&self) -> usize {
        self.trials.iter().filter(|t| t.recovery_ms.is_some()).count()
    }
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Target {
    pub name: String,
    pub goal: String,
    pub measured: String,
    /// `None` when the run did not measure it.
    pub met: Option<bool>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Report {
    pub machine: Machine,
    pub config: Config,
    pub store: Vec<StoreRow>,
    pub store_ratios: Vec<StoreRatio>,
    pub failover: Vec<FailoverResult>,
    /// etcd's failover median over hc-allocator's (above 1 is better).
    pub failover_etcd_over_hc: Option<f64>,
    pub targets: Vec<Target>,
    /// Correctness problems: duplicates, rows without figures, trials that did not recover.
    pub problems: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pod_path: Option<crate::pod_path::PodPathResult>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub burst: Option<crate::burst::BurstResult>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub scale: Vec<crate::scale::ScaleResult>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub leases: Option<crate::leases::LeaseResult>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub steady: Option<crate::steady::SteadyResult>,
}

fn ratio(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => Some(a / b),
        _ => None,
    }
}

fn find(rows: &[StoreRow], system: System, clients: usize) -> Option<&StoreRow> {
    rows.iter().find(|r| r.system == system && r.clients == clients)
}

/// Ours over etcd's, per client count.
pub fn store_ratios(rows: &[StoreRow]) -> Vec<StoreRatio> {
    let mut counts: Vec<usize> = Vec::new();
    for r in rows {
        if !counts.contains(&r.clients) {
            counts.push(r.clients);
        }
    }
    counts
        .into_iter()
        .map(|clients| {
            let hc = find(rows, System::Hc, clients);
            let ak = find(rows, System::EtcdAddressKey, clients);
            let pk = find(rows, System::EtcdPoolKey, clients);
            let tput = |r: Option<&StoreRow>| r.map(|r| r.allocations_per_sec);
            let p99 = |r: Option<&StoreRow>| r.and_then(|r| r.p99_ms);
            StoreRatio {
                clients,
                throughput_vs_address_key: ratio(tput(hc), tput(ak)),
                throughput_vs_pool_key: ratio(tput(hc), tput(pk)),
                p99_vs_address_key: ratio(p99(hc), p99(ak)),
                p99_vs_pool_key: ratio(p99(hc), p99(pk)),
            }
        })
        .collect()
}

fn fmt_opt(v: Option<f64>, digits: usize) -> String {
    v.map_or_else(|| "-".to_owned(), |v| format!("{v:.digits$}"))
}

/// Issue 5's store and failover targets.
pub fn targets(ratios: &[StoreRatio], failover: &[FailoverResult]) -> Vec<Target> {
    let at64 = ratios.iter().find(|r| r.clients == 64);
    let ge = |v: Option<f64>, goal: f64| v.map(|v| v >= goal);
    let le = |v: Option<f64>, goal: f64| v.map(|v| v <= goal);
    let pick = |f: fn(&StoreRatio) -> Option<f64>| at64.and_then(f);
    let mut out = vec![
        Target {
            name: "store throughput vs etcd key per address, 64 clients".into(),
            goal: ">= 10x".into(),
            measured: fmt_opt(pick(|r| r.throughput_vs_address_key), 1) + "x",
            met: ge(pick(|r| r.throughput_vs_address_key), 10.0),
        },
        Target {
            name: "store throughput vs etcd one pool key, 64 clients".into(),
            goal: ">= 100x".into(),
            measured: fmt_opt(pick(|r| r.throughput_vs_pool_key), 1) + "x",
            met: ge(pick(|r| r.throughput_vs_pool_key), 100.0),
        },
        Target {
            name: "store p99 vs etcd key per address, 64 clients".into(),
            goal: "<= 0.2x".into(),
            measured: fmt_opt(pick(|r| r.p99_vs_address_key), 3) + "x",
            met: le(pick(|r| r.p99_vs_address_key), 0.2),
        },
        Target {
            name: "store p99 vs etcd one pool key, 64 clients".into(),
            goal: "<= 0.2x".into(),
            measured: fmt_opt(pick(|r| r.p99_vs_pool_key), 3) + "x",
            met: le(pick(|r| r.p99_vs_pool_key), 0.2),
        },
    ];
    let hc = failover.iter().find(|f| f.system == System::Hc).and_then(|f| f.median_ms);
    let etcd = failover.iter().find(|f| f.system != System::Hc).and_then(|f| f.median_ms);
    out.push(Target {
        name: "failover median, hc-allocator".into(),
        goal: "<= 1000 ms".into(),
        measured: fmt_opt(hc, 0) + " ms",
        met: le(hc, 1000.0),
    });
    out.push(Target {
        name: "failover median vs etcd".into(),
        goal: "<= 0.5x".into(),
        measured: fmt_opt(ratio(hc, etcd), 2) + "x",
        met: le(ratio(hc, etcd), 0.5),
    });
    out
}

/// The correctness problems the report shows; the run fails when there is any.
pub fn problems(store: &[StoreRow], failover: &[FailoverResult]) -> Vec<String> {
    let mut out = Vec::new();
    for r in store {
        let what = format!("{} with {} clients", r.system.label(), r.clients);
        if !r.duplicates.is_empty() {
            out.push(format!(
                "{what}: {} addresses acknowledged twice, e.g. {:?}",
                r.duplicates.len(),
                r.duplicates[0]
            ));
        }
        if r.in_window == 0 || r.p50_ms.is_none() || r.p99_ms.is_none() {
            out.push(format!("{what}: no figures (no allocation acknowledged in the window)"));
        }
    }
    for f in failover {
        let what = format!("failover of {}", f.system.label());
        if !f.duplicates.is_empty() {
            out.push(format!(
                "{what}: {} addresses acknowledged twice, e.g. {:?}",
                f.duplicates.len(),
                f.duplicates[0]
            ));
        }
        for t in f.trials.iter().filter(|t| t.recovery_ms.is_none()) {
            out.push(format!("{what}: trial {} (killed {}) did not recover", t.trial, t.killed));
        }
    }
    out
}

fn errors_cell(errors: &BTreeMap<String, u64>) -> String {
    let total: u64 = errors.values().sum();
    total.to_string()
}

/// The human tables.
pub fn render(r: &Report) -> String {
    let mut s = String::new();
    let m = &r.machine;
    let _ = writeln!(
        s,
        "hc-bench {} — {} cores, {:.0} GiB, kernel {}, {}, etcd {}, load average at start {}",
        m.date_utc, m.nproc, m.mem_total_gib, m.kernel, m.cpu, m.etcd_version, m.loadavg_at_start
    );
    if !r.store.is_empty() {
        let length = match r.config.row_length {
            crate::config::RowLength::Window { secs } => format!("{secs} s per row"),
            crate::config::RowLength::Count { allocations } => format!("{allocations} allocations per row"),
        };
        let entry = match r.config.entry {
            crate::config::Entry::Spread => "clients spread over all members",
            crate::config::Entry::Leader => "clients talk to the leader only",
        };
        let _ = writeln!(s, "\nStore: allocations on a fresh 3-member cluster per row ({length}, {entry})");
        let _ = writeln!(
            s,
            "{:>7}  {:<26} {:>10} {:>9} {:>9} {:>9} {:>8} {:>9} {:>6} {:>5} {:>5}",
            "clients",
            "system",
            "alloc/s",
            "p50 ms",
            "p99 ms",
            "max ms",
            "acked",
            "conflicts",
            "errors",
            "aband",
            "dups"
        );
        for row in &r.store {
            let _ = writeln!(
                s,
                "{:>7}  {:<26} {:>10.0} {:>9} {:>9} {:>9} {:>8} {:>9} {:>6} {:>5} {:>5}",
                row.clients,
                row.system.label(),
                row.allocations_per_sec,
                fmt_opt(row.p50_ms, 2),
                fmt_opt(row.p99_ms, 2),
                fmt_opt(row.max_ms, 1),
                row.acked,
                row.conflicts,
                errors_cell(&row.errors),
                row.abandoned,
                row.duplicates.len()
            );
        }
        let _ = writeln!(
            s,
            "\nCPU during each row: server cores used (per process), CPU ms per allocation; allocations per log entry (hc-allocator's batches)"
        );
        let _ = writeln!(
            s,
            "{:>7}  {:<26} {:>20} {:>14} {:>14} {:>11}",
            "clients", "system", "server cores", "server ms/alloc", "client ms/alloc", "per entry"
        );
        for row in &r.store {
            let cores: Vec<String> = row.server_cores.iter().map(|c| format!("{c:.2}")).collect();
            let _ = writeln!(
                s,
                "{:>7}  {:<26} {:>20} {:>14} {:>14} {:>11}",
                row.clients,
                row.system.label(),
                cores.join(" "),
                fmt_opt(row.server_cpu_ms_per_alloc, 3),
                fmt_opt(row.client_cpu_ms_per_alloc, 3),
                fmt_opt(row.allocations_per_entry, 1)
            );
        }
        let _ = writeln!(s, "\nRatios, hc-allocator / etcd (throughput: higher is better; p99: lower is better)");
        let _ = writeln!(
            s,
            "{:>7}  {:>16} {:>16} {:>16} {:>16}",
            "clients", "alloc/s vs key", "alloc/s vs pool", "p99 vs key", "p99 vs pool"
        );
        for q in &r.store_ratios {
            let _ = writeln!(
                s,
                "{:>7}  {:>15}x {:>15}x {:>15}x {:>15}x",
                q.clients,
                fmt_opt(q.throughput_vs_address_key, 1),
                fmt_opt(q.throughput_vs_pool_key, 1),
                fmt_opt(q.p99_vs_address_key, 3),
                fmt_opt(q.p99_vs_pool_key, 3)
            );
        }
    }
    if !r.failover.is_empty() {
        let clients = r.failover.first().map_or(0, |f| f.clients);
        let _ = writeln!(
            s,
            "\nFailover: kill -9 of the leader under {clients} clients; time to the first acknowledged allocation \
             started after the kill"
        );
        let _ = writeln!(
            s,
            "{:<26} {:>7} {:>9} {:>10} {:>8} {:>8} {:>8} {:>6} {:>5}",
            "system", "trials", "recovered", "median ms", "min ms", "max ms", "acked", "errors", "dups"
        );
        for f in &r.failover {
            let _ = writeln!(
                s,
                "{:<26} {:>7} {:>9} {:>10} {:>8} {:>8} {:>8} {:>6} {:>5}",
                f.system.label(),
                f.trials.len(),
                f.recovered(),
                fmt_opt(f.median_ms, 0),
                fmt_opt(f.min_ms, 0),
                fmt_opt(f.max_ms, 0),
                f.acked,
                errors_cell(&f.errors),
                f.duplicates.len()
            );
        }
        for f in &r.failover {
            let each: Vec<String> = f.trials.iter().map(|t| fmt_opt(t.recovery_ms, 0)).collect();
            let seen: Vec<String> = f.trials.iter().map(|t| fmt_opt(t.leader_seen_ms, 0)).collect();
            let _ = writeln!(s, "  {}: first allocation (ms) {}", f.system.label(), each.join(" "));
            let _ = writeln!(s, "  {}: new leader seen (ms)  {}", f.system.label(), seen.join(" "));
        }
        let _ = writeln!(s, "  etcd median / hc-allocator median: {}x", fmt_opt(r.failover_etcd_over_hc, 2));
    }
    if let Some(p) = &r.pod_path {
        crate::pod_path::render(&mut s, p);
    }
    if let Some(b) = &r.burst {
        crate::burst::render(&mut s, b);
    }
    s.push_str(&crate::scale::render(&r.scale));
    if let Some(l) = &r.leases {
        s.push_str(&crate::leases::render(l));
    }
    if let Some(st) = &r.steady {
        s.push_str(&crate::steady::render(st));
    }
    if !r.targets.is_empty() {
        let _ = writeln!(s, "\nTargets (issue 5)");
        for t in &r.targets {
            let verdict = match t.met {
                Some(true) => "met",
                Some(false) => "MISSED",
                None => "not measured",
            };
            let _ = writeln!(s, "  {:<58} goal {:<10} measured {:<12} {verdict}", t.name, t.goal, t.measured);
        }
    }
    if r.problems.is_empty() {
        let _ = writeln!(
            s,
            "\nCorrectness: every acknowledged allocation distinct; every row measured; every trial recovered"
        );
    } else {
        let _ = writeln!(s, "\nCORRECTNESS PROBLEMS:");
        for p in &r.problems {
            let _ = writeln!(s, "  {p}");
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(system: System, clients: usize, tput: f64, p99: f64) -> StoreRow {
        StoreRow {
            system,
            clients,
            allocations_per_sec: tput,
            in_window: 10,
            measured_secs: 1.0,
            acked: 10,
            p50_ms: Some(p99 / 2.0),
            p99_ms: Some(p99),
            max_ms: Some(p99),
            mean_ms: Some(p99 / 2.0),
            conflicts: 0,
            errors: BTreeMap::new(),
            first_error: None,
            abandoned: 0,
            duplicates: vec![],
            server_cores: vec![],
            server_cpu_ms_per_alloc: None,
            client_cpu_ms_per_alloc: None,
            allocations_per_entry: None,
        }
    }

    fn failover(system: System, ms: &[Option<f64>]) -> FailoverResult {
        let trials: Vec<Trial> = ms
            .iter()
            .enumerate()
            .map(|(i, &recovery_ms)| Trial {
                trial: i + 1,
                killed: "x".into(),
                new_leader: None,
                leader_seen_ms: None,
                recovery_ms,
            })
            .collect();
        let vals: Vec<f64> = ms.iter().flatten().copied().collect();
        FailoverResult {
            system,
            clients: 16,
            trials,
            median_ms: crate::stats::median(&vals),
            max_ms: vals.iter().copied().reduce(f64::max),
            min_ms: vals.iter().copied().reduce(f64::min),
            acked: 1,
            errors: BTreeMap::new(),
            first_error: None,
            duplicates: vec![],
        }
    }

    #[test]
    fn ratios_and_targets_at_64_clients() {
        let rows = vec![
            row(System::Hc, 64, 20_000.0, 10.0),
            row(System::EtcdAddressKey, 64, 1_000.0, 100.0),
            row(System::EtcdPoolKey, 64, 100.0, 3000.0),
        ];
        let ratios = store_ratios(&rows);
        assert_eq!(ratios.len(), 1);
        assert_eq!(ratios[0].throughput_vs_address_key, Some(20.0));
        assert_eq!(ratios[0].throughput_vs_pool_key, Some(200.0));
        assert_eq!(ratios[0].p99_vs_address_key, Some(0.1));
        let f =
            vec![failover(System::Hc, &[Some(600.0), Some(800.0)]), failover(System::EtcdAddressKey, &[Some(2000.0)])];
        let t = targets(&ratios, &f);
        assert!(t.iter().all(|t| t.met == Some(true)), "{t:#?}");
        let none = targets(&[], &[]);
        assert!(none.iter().all(|t| t.met.is_none()));
    }

    #[test]
    fn problems_name_duplicates_empty_rows_and_unrecovered_trials() {
        let mut dup = row(System::Hc, 1, 1.0, 1.0);
        dup.duplicates.push(Duplicate {
            address: std::net::Ipv4Addr::new(10, 0, 0, 1),
            first: "a".into(),
            second: "b".into(),
        });
        let mut empty = row(System::EtcdPoolKey, 1, 0.0, 1.0);
        empty.in_window = 0;
        let p = problems(&[dup, empty, row(System::Hc, 16, 1.0, 1.0)], &[failover(System::Hc, &[Some(1.0), None])]);
        assert_eq!(p.len(), 3, "{p:#?}");
        assert!(problems(&[row(System::Hc, 1, 1.0, 1.0)], &[failover(System::Hc, &[Some(1.0)])]).is_empty());
    }
}
