//! `hc-allocator`'s configuration: flags, environment (`HC_ALLOCATOR_*`) and an optional TOML
//! file, merged in that order of precedence and validated before anything starts.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Parser;
use serde::Deserialize;

/// Command-line flags. Every flag also reads `HC_ALLOCATOR_<NAME>`; unset ones fall back to the
/// config file, then to the defaults.
#[derive(Debug, Parser)]
#[command(name = "hc-allocator", version, about = "hc-bridge's Raft-replicated IPAM store")]
pub struct Flags {
    /// Run one replica that bootstraps itself: the local allocator for development and demos.
    #[arg(long, env = "HC_ALLOCATOR_DEV")]
    pub dev: bool,
    /// TOML file with the same keys as the long flags (snake_case); unknown keys are an error.
    #[arg(long, env = "HC_ALLOCATOR_CONFIG")]
    pub config: Option<PathBuf>,
    /// This replica's Raft id (a positive integer, unique in the cluster).
    #[arg(long, env = "HC_ALLOCATOR_ID")]
    pub id: Option<u64>,
    /// Where the Raft log, snapshots and state live.
    #[arg(long, env = "HC_ALLOCATOR_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// REST (management, /metrics, /healthz) listen address.
    #[arg(long, env = "HC_ALLOCATOR_REST_ADDR")]
    pub rest_addr: Option<SocketAddr>,
    /// gRPC (agents, admin, Raft between replicas) listen address.
    #[arg(long, env = "HC_ALLOCATOR_GRPC_ADDR")]
    pub grpc_addr: Option<SocketAddr>,
    /// The founding members, `ID=GRPC_ADDR/REST_ADDR` separated by commas. The replica with the
    /// smallest id initializes the cluster on first start; later starts ignore this.
    #[arg(long, env = "HC_ALLOCATOR_INITIAL_CLUSTER")]
    pub initial_cluster: Option<String>,
    /// Raft heartbeat interval (default 50 ms).
    #[arg(long, env = "HC_ALLOCATOR_HEARTBEAT_MS")]
    pub heartbeat_ms: Option<u64>,
    /// Lower bound of the randomized election timeout (the upper bound is 1.5× this; default
    /// 150 ms with a 50 ms heartbeat). A new leader is elected after two sampled timeouts
    /// (openraft's followers honour the old leader's lease for the upper bound, so the first
    /// candidate is refused): this sets the failover time, 2–3× the value.
    #[arg(long, env = "HC_ALLOCATOR_ELECTION_TIMEOUT_MS")]
    pub election_timeout_ms: Option<u64>,
    /// Build a snapshot (and compact the log) after this many entries.
    #[arg(long, env = "HC_ALLOCATOR_SNAPSHOT_EVERY")]
    pub snapshot_every: Option<u64>,
    /// ... but only once the entries since the last snapshot reach this percentage of the
    /// allocations held (default 25; 0 = every `snapshot_every` entries whatever the state's
    /// size). A snapshot writes the whole state, so a fixed interval costs each entry more as
    /// the state grows; a proportional one keeps that cost per entry constant.
    #[arg(long, env = "HC_ALLOCATOR_SNAPSHOT_LOG_PERCENT")]
    pub snapshot_log_percent: Option<u64>,
    /// How often the leader looks for expired leases.
    #[arg(long, env = "HC_ALLOCATOR_LEASE_CHECK_MS")]
    pub lease_check_ms: Option<u64>,
    /// Let concurrent allocations and releases share a Raft entry (default true). Set it to
    /// false on every replica while one of a build before batching is still in the cluster: such
    /// a build cannot decode a batch entry.
    #[arg(long, env = "HC_ALLOCATOR_BATCH_PROPOSALS", value_name = "BOOL", action = clap::ArgAction::Set)]
    pub batch_proposals: Option<bool>,
}

/// The file's keys: the long flags in snake_case.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    id: Option<u64>,
    data_dir: Option<PathBuf>,
    rest_addr: Option<SocketAddr>,
    grpc_addr: Option<SocketAddr>,
    initial_cluster: Option<String>,
    heartbeat_ms: Option<u64>,
    election_timeout_ms: Option<u64>,
    snapshot_every: Option<u64>,
    snapshot_log_percent: Option<u64>,
    lease_check_ms: Option<u64>,
    batch_proposals: Option<bool>,
}

/// One founding member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub grpc_addr: String,
    pub rest_addr: String,
}

/// The validated configuration a replica runs with.
#[derive(Debug, Clone)]
pub struct Config {
    pub id: u64,
    pub data_dir: PathBuf,
    pub rest_addr: SocketAddr,
    pub grpc_addr: SocketAddr,
    /// Founding members; with `--dev`, just this replica.
    pub initial_cluster: BTreeMap<u64, Member>,
    pub heartbeat: Duration,
    pub election_timeout: Duration,
    pub snapshot_every: u64,
    pub snapshot_log_percent: u64,
    pub lease_check: Duration,
    /// Concurrent allocations and releases may share a Raft entry (`hc-batcher`).
    pub batch_proposals: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("config file {path}: {source}")]
    Parse { path: PathBuf, source: Box<toml::de::Error> },
    #[error("invalid {field}: {reason}")]
    Invalid { field: &'static str, reason: String },
}

fn invalid(field: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid { field, reason: reason.into() }
}

pub const DEFAULT_REST_ADDR: &str = "127.0.0.1:7380";
pub const DEFAULT_GRPC_ADDR: &str = "127.0.0.1:7381";

impl Config {
    /// Merges flags (and their environment variables) over the file over the defaults, then
    /// validates. Nothing is started or created here.
    pub fn load(flags: Flags) -> Result<Config, ConfigError> {
        let file = match &flags.config {
            Some(path) => read_file(path)?,
            None => FileConfig::default(),
        };
        let id = flags.id.or(file.id).unwrap_or(1);
        let data_dir = flags.data_dir.or(file.data_dir).unwrap_or_else(|| PathBuf::from("hc-allocator-data"));
        let rest_addr = flags.rest_addr.or(file.rest_addr).unwrap_or(parse_default(DEFAULT_REST_ADDR));
        let grpc_addr = flags.grpc_addr.or(file.grpc_addr).unwrap_or(parse_default(DEFAULT_GRPC_ADDR));
        let heartbeat = Duration::from_millis(flags.heartbeat_ms.or(file.heartbeat_ms).unwrap_or(50));
        let election_timeout =
            Duration::from_millis(flags.election_timeout_ms.or(file.election_timeout_ms).unwrap_or(150));
        let snapshot_every = flags.snapshot_every.or(file.snapshot_every).unwrap_or(20_000);
        let snapshot_log_percent = flags.snapshot_log_percent.or(file.snapshot_log_percent).unwrap_or(25);
        let lease_check = Duration::from_millis(flags.lease_check_ms.or(file.lease_check_ms).unwrap_or(100));
        let batch_proposals = flags.batch_proposals.or(file.batch_proposals).unwrap_or(true);

        let initial_cluster = match flags.initial_cluster.or(file.initial_cluster) {
            Some(spec) => {
                if flags.dev {
                    return Err(invalid("initial_cluster", "--dev runs one replica; drop --initial-cluster"));
                }
                parse_cluster(&spec)?
            }
            None if flags.dev => {
                BTreeMap::from([(id, Member { grpc_addr: grpc_addr.to_string(), rest_addr: rest_addr.to_string() })])
            }
            None => BTreeMap::new(),
        };

        let config = Config {
            id,
            data_dir,
            rest_addr,
            grpc_addr,
            initial_cluster,
            heartbeat,
            election_timeout,
            snapshot_every,
            snapshot_log_percent,
            lease_check,
            batch_proposals,
        };
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if self.id == 0 {
            return Err(invalid("id", "must be a positive integer"));
        }
        if self.rest_addr == self.grpc_addr {
            return Err(invalid("rest_addr", "must differ from grpc_addr"));
        }
        if self.heartbeat.is_zero() {
            return Err(invalid("heartbeat_ms", "must be positive"));
        }
        if self.election_timeout <= self.heartbeat * 2 {
            return Err(invalid(
                "election_timeout_ms",
                format!(
                    "must exceed twice the heartbeat ({} ms), or followers start elections against a healthy leader",
                    self.heartbeat.as_millis()
                ),
            ));
        }
        if self.snapshot_every < 100 {
            return Err(invalid("snapshot_every", "must be at least 100 entries"));
        }
        if self.snapshot_log_percent > 1_000 {
            return Err(invalid(
                "snapshot_log_percent",
                "must be at most 1000 (a log ten times the state replays for long on restart)",
            ));
        }
        if self.lease_check.is_zero() {
            return Err(invalid("lease_check_ms", "must be positive"));
        }
        if !self.initial_cluster.is_empty() && !self.initial_cluster.contains_key(&self.id) {
            return Err(invalid("initial_cluster", format!("does not name this replica's id {}", self.id)));
        }
        Ok(())
    }

    /// The replica that initializes a new cluster: the smallest founding id.
    pub fn is_bootstrapper(&self) -> bool {
        self.initial_cluster.keys().next() == Some(&self.id)
    }
}

fn parse_default(s: &str) -> SocketAddr {
    s.parse().expect("default addresses are valid")
}

fn read_file(path: &Path) -> Result<FileConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_owned(), source })?;
    toml::from_str(&text).map_err(|source| ConfigError::Parse { path: path.to_owned(), source: Box::new(source) })
}

/// Parses `1=127.0.0.1:7381/127.0.0.1:7380,2=…`.
pub fn parse_cluster(spec: &str) -> Result<BTreeMap<u64, Member>, ConfigError> {
    let mut members = BTreeMap::new();
    for item in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (id, addrs) = item
            .split_once('=')
            .ok_or_else(|| invalid("initial_cluster", format!("{item:?} is not ID=GRPC_ADDR/REST_ADDR")))?;
        let id: u64 = id
            .trim()
            .parse()
            .ok()
            .filter(|&i| i > 0)
            .ok_or_else(|| invalid("initial_cluster", format!("{id:?} is not a positive id")))?;
        let (grpc, rest) = addrs
            .split_once('/')
            .ok_or_else(|| invalid("initial_cluster", format!("{item:?} is not ID=GRPC_ADDR/REST_ADDR")))?;
        for a in [grpc, rest] {
            if a.parse::<SocketAddr>().is_err() {
                return Err(invalid("initial_cluster", format!("{a:?} is not an address:port")));
            }
        }
        let member = Member { grpc_addr: grpc.to_owned(), rest_addr: rest.to_owned() };
        if members.insert(id, member).is_some() {
            return Err(invalid("initial_cluster", format!("id {id} appears twice")));
        }
    }
    if members.is_empty() {
        return Err(invalid("initial_cluster", "names no member"));
    }
    Ok(members)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flags(args: &[&str]) -> Flags {
        Flags::try_parse_from(std::iter::once("hc-allocator").chain(args.iter().copied())).expect("flags parse")
    }

    #[test]
    fn dev_defaults_to_one_local_replica() {
        let c = Config::load(flags(&["--dev"])).expect("valid");
        assert_eq!(c.rest_addr.to_string(), DEFAULT_REST_ADDR);
        assert_eq!(c.grpc_addr.to_string(), DEFAULT_GRPC_ADDR);
        assert_eq!(c.initial_cluster.len(), 1);
        assert!(c.is_bootstrapper());
    }

    #[test]
    fn election_timeout_must_exceed_heartbeats() {
        let e = Config::load(flags(&["--dev", "--heartbeat-ms", "300", "--election-timeout-ms", "500"]))
            .expect_err("rejected");
        assert!(e.to_string().contains("election_timeout_ms"), "{e}");
    }

    #[test]
    fn batching_defaults_to_on_and_can_be_turned_off() {
        assert!(Config::load(flags(&["--dev"])).expect("valid").batch_proposals);
        assert!(!Config::load(flags(&["--dev", "--batch-proposals", "false"])).expect("valid").batch_proposals);
        assert!(Flags::try_parse_from(["hc-allocator", "--batch-proposals", "maybe"]).is_err());
    }

    #[test]
    fn snapshot_share_defaults_to_a_quarter_and_is_bounded() {
        assert_eq!(Config::load(flags(&["--dev"])).expect("valid").snapshot_log_percent, 25);
        assert_eq!(
            Config::load(flags(&["--dev", "--snapshot-log-percent", "0"])).expect("valid").snapshot_log_percent,
            0
        );
        let e = Config::load(flags(&["--dev", "--snapshot-log-percent", "5000"])).expect_err("rejected");
        assert!(e.to_string().contains("snapshot_log_percent"), "{e}");
    }

    #[test]
    fn cluster_spec_is_checked() {
        assert!(parse_cluster("1=127.0.0.1:1/127.0.0.1:2,2=127.0.0.1:3/127.0.0.1:4").is_ok());
        assert!(parse_cluster("1=127.0.0.1:1").is_err());
        assert!(parse_cluster("0=127.0.0.1:1/127.0.0.1:2").is_err());
        assert!(parse_cluster("1=a/b").is_err());
        assert!(parse_cluster("1=127.0.0.1:1/127.0.0.1:2,1=127.0.0.1:3/127.0.0.1:4").is_err());
        let e = Config::load(flags(&["--id", "3", "--initial-cluster", "1=127.0.0.1:1/127.0.0.1:2"]))
            .expect_err("id not in cluster");
        assert!(e.to_string().contains("does not name"), "{e}");
    }

    #[test]
    fn unknown_file_keys_are_rejected() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "id = 2\nbogus = 1\n").expect("write");
        let e = Config::load(flags(&["--config", path.to_str().expect("utf8")])).expect_err("rejected");
        assert!(e.to_string().contains("bogus"), "{e}");
    }
}
