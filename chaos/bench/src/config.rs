//! The runner's configuration: flags (and `HC_BENCH_*` / `HC_ALLOCATOR_BIN` environment), merged
//! over the full or the smoke defaults and validated before any process starts.

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Parser;

/// Command-line flags. Unset flags take the full run's defaults, or the smoke defaults with
/// `--smoke`.
#[derive(Debug, Parser)]
#[command(name = "hc-bench", version, about = "hc-allocator against etcd 3.4: store throughput and leader failover")]
pub struct Flags {
    /// A small run for CI: 1 and 16 clients, 2 s per row, 2 failover trials.
    #[arg(long)]
    pub smoke: bool,
    /// Which parts to run, comma-separated: `store`, `failover`, `pod-path`, `burst`, `scale`,
    /// `leases` (default: store and failover).
    #[arg(long, value_delimiter = ',')]
    pub parts: Option<Vec<Part>>,
    /// Concurrent clients per store row, comma-separated (full: 1,16,64,256).
    #[arg(long, value_delimiter = ',')]
    pub clients: Option<Vec<usize>>,
    /// Length of each store row's measurement window, in seconds (full: 10, smoke: 2).
    #[arg(long)]
    pub duration_secs: Option<f64>,
    /// Run each store row for this many allocations instead of a fixed window.
    #[arg(long)]
    pub count: Option<u64>,
    /// How long allocations still in flight at the end of a row may take to finish before they
    /// are abandoned (and reported as such), in seconds.
    #[arg(long)]
    pub grace_secs: Option<f64>,
    /// Failover trials per system (full: 10, smoke: 2).
    #[arg(long)]
    pub failover_trials: Option<usize>,
    /// Concurrent clients keeping the load steady during failover trials.
    #[arg(long)]
    pub failover_clients: Option<usize>,
    /// Steady load before each kill, in seconds (full: 2, smoke: 0.5).
    #[arg(long)]
    pub settle_secs: Option<f64>,
    /// Write the results as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// The `hc-allocator` binary (default: beside this binary, then `$CARGO_TARGET_DIR/debug`,
    /// then `target/debug`).
    #[arg(long, env = "HC_ALLOCATOR_BIN")]
    pub allocator_bin: Option<PathBuf>,
    /// Where store clients send requests: `spread` (default; over all three members, as agents
    /// configured with every endpoint do — followers forward writes to the leader) or `leader`
    /// (every client talks to the leader only; a diagnostic of the forwarding cost).
    #[arg(long, value_enum, default_value = "spread")]
    pub entry: Entry,
    /// An extra argument for every hc-allocator replica, e.g. `--allocator-arg=--election-timeout-ms=300`
    /// (repeatable; the default is none, i.e. the allocator's defaults).
    #[arg(long = "allocator-arg", allow_hyphen_values = true)]
    pub allocator_args: Vec<String>,
    /// An extra argument for every etcd member (repeatable; default none).
    #[arg(long = "etcd-arg", allow_hyphen_values = true)]
    pub etcd_args: Vec<String>,
    /// The etcd 3.4 server binary.
    #[arg(long, env = "HC_BENCH_ETCD_BIN", default_value = "etcd")]
    pub etcd_bin: PathBuf,
    /// Scale part: allocations in the state (full: 1000000, smoke: 5000).
    #[arg(long)]
    pub scale_allocations: Option<u64>,
    /// Scale part: pool families, comma-separated `v4` (a /8), `v6` (a /64) (default both).
    #[arg(long, value_delimiter = ',', value_enum)]
    pub scale_families: Option<Vec<crate::scale::Family>>,
    /// Leases part: simulated agents (full: 5000, smoke: 200).
    #[arg(long)]
    pub lease_agents: Option<usize>,
    /// Steady part: how long the load runs while leader changes are counted, in seconds (full:
    /// 600, smoke: 5).
    #[arg(long)]
    pub steady_secs: Option<f64>,
    /// Leases part: measurement window in seconds (full: 30, smoke: 3).
    #[arg(long)]
    pub lease_secs: Option<f64>,
    /// Where the scratch directory with every data directory and log is created.
    #[arg(long, env = "HC_BENCH_WORK_DIR")]
    pub work_dir: Option<PathBuf>,
    #[command(flatten)]
    pub pods: crate::node::PodFlags,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Part {
    Store,
    Failover,
    /// CNI ADD/DEL through hc-bridge against the reference bridge + host-local plugins.
    PodPath,
    /// Pod ADDs fired at once over several agents.
    Burst,
    Scale,
    Leases,
    /// Steady load without faults, watching for leader changes.
    Steady,
}

/// Which members the store rows' clients talk to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Entry {
    Spread,
    Leader,
}

/// When a store row ends.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RowLength {
    /// Clients start allocations until the window closes.
    Window { secs: f64 },
    /// Clients start allocations until this many have been started in all.
    Count { allocations: u64 },
}

/// The validated configuration.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Config {
    pub smoke: bool,
    pub parts: Vec<Part>,
    pub clients: Vec<usize>,
    pub row_length: RowLength,
    #[serde(serialize_with = "secs")]
    pub grace: Duration,
    pub failover_trials: usize,
    pub failover_clients: usize,
    #[serde(serialize_with = "secs")]
    pub settle: Duration,
    #[serde(skip)]
    pub json: Option<PathBuf>,
    pub entry: Entry,
    pub allocator_bin: PathBuf,
    pub allocator_args: Vec<String>,
    pub etcd_bin: PathBuf,
    pub etcd_args: Vec<String>,
    pub work_dir: PathBuf,
    pub pods: crate::node::PodConfig,
    pub scale: crate::scale::ScaleConfig,
    pub steady_secs: f64,
    pub leases: crate::leases::LeaseConfig,
}

fn secs<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("invalid --{flag}: {reason}")]
    Invalid { flag: &'static str, reason: String },
    #[error(
        "hc-allocator binary not found (looked at {looked}); build it with `cargo build --workspace` \
         or pass --allocator-bin / HC_ALLOCATOR_BIN"
    )]
    AllocatorMissing { looked: String },
}

fn invalid(flag: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid { flag, reason: reason.into() }
}

/// Upper bounds that keep every run finite.
const MAX_CLIENTS: usize = 4096;
const MAX_TRIALS: usize = 1000;
const MAX_SECS: f64 = 3600.0;

impl Config {
    /// Merges the flags over the defaults, finds the allocator binary and validates. `env` reads
    /// an environment variable (a parameter so that tests need not set any).
    pub fn load(flags: Flags, env: impl Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        let smoke = flags.smoke;
        let parts = flags.parts.unwrap_or_else(|| vec![Part::Store, Part::Failover]);
        let clients = flags.clients.unwrap_or_else(|| if smoke { vec![1, 16] } else { vec![1, 16, 64, 256] });
        let row_length = match (flags.count, flags.duration_secs) {
            (Some(_), Some(_)) => return Err(invalid("count", "give either --count or --duration-secs, not both")),
            (Some(n), None) => RowLength::Count { allocations: n },
            (None, d) => RowLength::Window { secs: d.unwrap_or(if smoke { 2.0 } else { 10.0 }) },
        };
        let grace = flags.grace_secs.unwrap_or(if smoke { 3.0 } else { 10.0 });
        let settle = flags.settle_secs.unwrap_or(if smoke { 0.5 } else { 2.0 });
        let failover_trials = flags.failover_trials.unwrap_or(if smoke { 2 } else { 10 });
        let failover_clients = flags.failover_clients.unwrap_or(16);

        if parts.is_empty() {
            return Err(invalid("parts", "name at least one part"));
        }
        if clients.is_empty() || clients.iter().any(|&c| c == 0 || c > MAX_CLIENTS) {
            return Err(invalid("clients", format!("each count must be 1..={MAX_CLIENTS}")));
        }
        match row_length {
            RowLength::Window { secs } if !(secs > 0.0 && secs <= MAX_SECS) => {
                return Err(invalid("duration-secs", format!("must be in (0, {MAX_SECS}]")));
            }
            RowLength::Count { allocations: 0 } => return Err(invalid("count", "must be positive")),
            _ => {}
        }
        for (flag, v) in [("grace-secs", grace), ("settle-secs", settle)] {
            if !(0.0..=MAX_SECS).contains(&v) {
                return Err(invalid(flag, format!("must be in [0, {MAX_SECS}]")));
            }
        }
        if failover_trials == 0 || failover_trials > MAX_TRIALS {
            return Err(invalid("failover-trials", format!("must be 1..={MAX_TRIALS}")));
        }
        if failover_clients == 0 || failover_clients > MAX_CLIENTS {
            return Err(invalid("failover-clients", format!("must be 1..={MAX_CLIENTS}")));
        }

        let mut scale = crate::scale::ScaleConfig::defaults(smoke);
        if let Some(n) = flags.scale_allocations {
            if n == 0 || n > 100_000_000 {
                return Err(invalid("scale-allocations", "must be 1..=100000000"));
            }
            scale.allocations = n;
        }
        if let Some(f) = flags.scale_families.filter(|f| !f.is_empty()) {
            scale.families = f;
        }
        let steady_secs = flags.steady_secs.unwrap_or(if smoke { 5.0 } else { 600.0 });
        if !(steady_secs > 0.0 && steady_secs <= 24.0 * 3600.0) {
            return Err(invalid("steady-secs", "must be in (0, 86400]"));
        }
        let mut leases = crate::leases::LeaseConfig::defaults(smoke);
        if let Some(n) = flags.lease_agents {
            if n == 0 || n > 100_000 {
                return Err(invalid("lease-agents", "must be 1..=100000"));
            }
            leases.agents = n;
        }
        if let Some(w) = flags.lease_secs {
            if !(w > 0.0 && w <= MAX_SECS) {
                return Err(invalid("lease-secs", format!("must be in (0, {MAX_SECS}]")));
            }
            leases.window_secs = w;
        }

        let allocator_bin = match flags.allocator_bin {
            Some(p) if p.is_file() => p,
            Some(p) => return Err(ConfigError::AllocatorMissing { looked: p.display().to_string() }),
            None => find_allocator(&allocator_candidates(std::env::current_exe().ok().as_deref(), &env))?,
        };
        let pods_needed = parts.iter().any(|p| matches!(p, Part::PodPath | Part::Burst));
        let pods = crate::node::PodConfig::load(flags.pods, smoke, pods_needed, &env)?;
        let work_dir = flags.work_dir.unwrap_or_else(std::env::temp_dir);
        if !work_dir.is_dir() {
            return Err(invalid("work-dir", format!("{} is not a directory", work_dir.display())));
        }

        Ok(Config {
            smoke,
            parts,
            clients,
            row_length,
            grace: Duration::from_secs_f64(grace),
            failover_trials,
            failover_clients,
            settle: Duration::from_secs_f64(settle),
            json: flags.json,
            entry: flags.entry,
            allocator_bin,
            allocator_args: flags.allocator_args,
            etcd_bin: flags.etcd_bin,
            etcd_args: flags.etcd_args,
            work_dir,
            pods,
            scale,
            steady_secs,
            leases,
        })
    }

    pub fn runs(&self, part: Part) -> bool {
        self.parts.contains(&part)
    }
}

/// Where `hc-allocator` may be, in order: beside this executable (`cargo build --workspace`
/// puts both in one `target/debug`; a test binary sits one level deeper, in `deps/`), in
/// `$CARGO_TARGET_DIR/debug`, in `./target/debug`.
pub fn allocator_candidates(exe: Option<&Path>, env: &impl Fn(&str) -> Option<String>) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Some(dir) = exe.and_then(Path::parent) {
        out.push(dir.join("hc-allocator"));
        if dir.ends_with("deps")
            && let Some(up) = dir.parent()
        {
            out.push(up.join("hc-allocator"));
        }
    }
    if let Some(t) = env("CARGO_TARGET_DIR") {
        out.push(Path::new(&t).join("debug").join("hc-allocator"));
    }
    out.push(Path::new("target").join("debug").join("hc-allocator"));
    out
}

fn find_allocator(candidates: &[PathBuf]) -> Result<PathBuf, ConfigError> {
    candidates.iter().find(|p| p.is_file()).cloned().ok_or_else(|| ConfigError::AllocatorMissing {
        looked: candidates.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", "),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flags(args: &[&str]) -> Flags {
        let mut all = vec!["hc-bench", "--allocator-bin", "/bin/sh"];
        all.extend_from_slice(args);
        Flags::try_parse_from(all).expect("flags parse")
    }

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn full_and_smoke_defaults() {
        let full = Config::load(flags(&[]), no_env).expect("valid");
        assert_eq!(full.clients, vec![1, 16, 64, 256]);
        assert_eq!(full.row_length, RowLength::Window { secs: 10.0 });
        assert_eq!(full.failover_trials, 10);
        let smoke = Config::load(flags(&["--smoke"]), no_env).expect("valid");
        assert_eq!(smoke.clients, vec![1, 16]);
        assert_eq!(smoke.row_length, RowLength::Window { secs: 2.0 });
        assert_eq!(smoke.failover_trials, 2);
    }

    #[test]
    fn rejects_bad_values() {
        for args in [
            &["--clients", "0"][..],
            &["--count", "5", "--duration-secs", "1"],
            &["--duration-secs", "0"],
            &["--failover-trials", "0"],
            &["--count", "0"],
        ] {
            assert!(Config::load(flags(args), no_env).is_err(), "{args:?} accepted");
        }
    }

    #[test]
    fn allocator_lookup_order() {
        let env = |k: &str| (k == "CARGO_TARGET_DIR").then(|| "/t".to_owned());
        let c = allocator_candidates(Some(Path::new("/x/debug/deps/smoke-123")), &env);
        assert_eq!(
            c,
            vec![
                PathBuf::from("/x/debug/deps/hc-allocator"),
                PathBuf::from("/x/debug/hc-allocator"),
                PathBuf::from("/t/debug/hc-allocator"),
                PathBuf::from("target/debug/hc-allocator"),
            ]
        );
        let missing = find_allocator(&[PathBuf::from("/nonexistent/hc-allocator")]);
        assert!(matches!(missing, Err(ConfigError::AllocatorMissing { .. })));
    }
}
