//! The agent's configuration: flags, `HC_AGENT_*` environment variables and an optional TOML
//! file, merged (flag/env > file > default) into one [`Config`] that is validated before
//! anything starts.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Parser;
use serde::Deserialize;

use crate::datapath::{DatapathMode, DesiredNode};

/// What a config source may contain; everything optional so sources merge field by field.
#[derive(Debug, Clone, Default, Parser, Deserialize)]
#[command(name = "hc-agent", version, about = "hc-bridge node agent: lease keeper, CNI server, datapath")]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Sources {
    /// TOML file with any of the settings below (kebab-case keys); flags and env win over it.
    #[arg(long, env = "HC_AGENT_CONFIG")]
    #[serde(skip)]
    pub config: Option<PathBuf>,
    /// This node's name (the Kubernetes node name).
    #[arg(long, env = "HC_AGENT_NODE")]
    pub node: Option<String>,
    /// Allocator replicas' gRPC `host:port`, comma-separated.
    #[arg(long, env = "HC_AGENT_ALLOCATORS", value_delimiter = ',')]
    pub allocators: Option<Vec<String>>,
    /// The physical interface trunked to the switch; none keeps pods node-local.
    #[arg(long, env = "HC_AGENT_UPLINK")]
    pub uplink: Option<String>,
    /// The base bridge [default: br0].
    #[arg(long, env = "HC_AGENT_BRIDGE")]
    pub bridge: Option<String>,
    /// `vlan-filtering` or `per-vlan-bridge` [default: vlan-filtering].
    #[arg(long, env = "HC_AGENT_MODE", value_parser = parse_mode)]
    pub mode: Option<DatapathMode>,
    /// MTU of the bridges the agent creates.
    #[arg(long, env = "HC_AGENT_BRIDGE_MTU")]
    pub bridge_mtu: Option<u32>,
    /// The namespace the node's bridge lives in (a file such as /run/netns/NAME); default the
    /// agent's own. Tests use it to keep the datapath off the host's interfaces.
    #[arg(long, env = "HC_AGENT_NODE_NETNS")]
    pub node_netns: Option<PathBuf>,
    /// The CNI socket [default: /run/hc-bridge/agent.sock].
    #[arg(long, env = "HC_AGENT_SOCKET")]
    pub socket: Option<PathBuf>,
    /// Where attachment records live [default: /var/lib/hc-bridge/agent].
    #[arg(long, env = "HC_AGENT_STATE_DIR")]
    pub state_dir: Option<PathBuf>,
    /// Lease TTL in milliseconds [default: 10000].
    #[arg(long, env = "HC_AGENT_LEASE_TTL_MS")]
    pub lease_ttl_ms: Option<u64>,
    /// Keep-alive interval in milliseconds [default: 2000].
    #[arg(long, env = "HC_AGENT_KEEPALIVE_MS")]
    pub keepalive_ms: Option<u64>,
    /// Period of the self-healing datapath reconcile in milliseconds [default: 5000].
    #[arg(long, env = "HC_AGENT_RECONCILE_MS")]
    pub reconcile_ms: Option<u64>,
    /// Repair drift as soon as the kernel reports a link change, not only on the periodic
    /// reconcile [default: true].
    #[arg(long, env = "HC_AGENT_LINK_EVENTS")]
    pub link_events: Option<bool>,
    /// `/metrics`, `/healthz`, `/readyz` [default: 127.0.0.1:9464].
    #[arg(long, env = "HC_AGENT_METRICS_ADDR")]
    pub metrics_addr: Option<SocketAddr>,
    /// Node labels for pool selectors, `key=value`, comma-separated.
    #[arg(long, env = "HC_AGENT_NODE_LABELS", value_delimiter = ',', value_parser = parse_label)]
    #[serde(default, deserialize_with = "labels_from_map")]
    pub node_labels: Option<Vec<(String, String)>>,
    /// CNI requests served at once; more wait [default: 16].
    #[arg(long, env = "HC_AGENT_MAX_CONCURRENT")]
    pub max_concurrent: Option<usize>,
}

fn parse_mode(s: &str) -> Result<DatapathMode, String> {
    match s {
        "vlan-filtering" => Ok(DatapathMode::VlanFiltering),
        "per-vlan-bridge" => Ok(DatapathMode::PerVlanBridge),
        other => Err(format!("unknown datapath mode {other:?} (vlan-filtering or per-vlan-bridge)")),
    }
}

fn parse_label(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
        _ => Err(format!("node label {s:?} is not key=value")),
    }
}

fn labels_from_map<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Vec<(String, String)>>, D::Error> {
    Ok(Some(BTreeMap::<String, String>::deserialize(d)?.into_iter().collect()))
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub node: String,
    pub allocators: Vec<String>,
    pub datapath: DesiredNode,
    pub node_netns: Option<PathBuf>,
    pub socket: PathBuf,
    pub state_dir: PathBuf,
    pub lease_ttl: Duration,
    pub keepalive: Duration,
    pub reconcile_every: Duration,
    pub link_events: bool,
    pub metrics_addr: SocketAddr,
    pub node_labels: BTreeMap<String, String>,
    pub max_concurrent: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path}: {source}")]
    Parse { path: PathBuf, source: Box<toml::de::Error> },
    #[error("{field} is required")]
    Missing { field: &'static str },
    #[error("invalid {field}: {reason}")]
    Invalid { field: &'static str, reason: String },
}

impl Config {
    /// Parses `args` (flags; clap also reads `HC_AGENT_*`), reads the file they name, merges
    /// and validates.
    pub fn load(args: impl IntoIterator<Item = std::ffi::OsString>) -> Result<Config, anyhow::Error> {
        let cli = Sources::try_parse_from(args)?;
        let file = match &cli.config {
            Some(path) => read_file(path)?,
            None => Sources::default(),
        };
        Ok(Config::merge(cli, file)?)
    }

    /// `primary` wins field by field over `file`; then defaults; then cross-field checks.
    pub fn merge(primary: Sources, file: Sources) -> Result<Config, ConfigError> {
        let node = primary.node.or(file.node).ok_or(ConfigError::Missing { field: "node" })?;
        let allocators = primary.allocators.or(file.allocators).unwrap_or_default();
        let config = Config {
            node,
            allocators,
            datapath: DesiredNode {
                mode: primary.mode.or(file.mode).unwrap_or(DatapathMode::VlanFiltering),
                bridge: primary.bridge.or(file.bridge).unwrap_or_else(|| "br0".to_owned()),
                uplink: primary.uplink.or(file.uplink),
                mtu: primary.bridge_mtu.or(file.bridge_mtu),
            },
            node_netns: primary.node_netns.or(file.node_netns),
            socket: primary
                .socket
                .or(file.socket)
                .unwrap_or_else(|| PathBuf::from(hc_cni::protocol::DEFAULT_AGENT_SOCKET)),
            state_dir: primary
                .state_dir
                .or(file.state_dir)
                .unwrap_or_else(|| PathBuf::from("/var/lib/hc-bridge/agent")),
            lease_ttl: Duration::from_millis(primary.lease_ttl_ms.or(file.lease_ttl_ms).unwrap_or(10_000)),
            keepalive: Duration::from_millis(primary.keepalive_ms.or(file.keepalive_ms).unwrap_or(2_000)),
            reconcile_every: Duration::from_millis(primary.reconcile_ms.or(file.reconcile_ms).unwrap_or(5_000)),
            link_events: primary.link_events.or(file.link_events).unwrap_or(true),
            metrics_addr: primary
                .metrics_addr
                .or(file.metrics_addr)
                .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 9464))),
            node_labels: primary.node_labels.or(file.node_labels).unwrap_or_default().into_iter().collect(),
            max_concurrent: primary.max_concurrent.or(file.max_concurrent).unwrap_or(16),
        };
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |field, reason: &str| Err(ConfigError::Invalid { field, reason: reason.to_owned() });
        if self.node.is_empty() || self.node.len() > 253 {
            return invalid("node", "must be 1 to 253 characters");
        }
        if self.allocators.is_empty() {
            return Err(ConfigError::Missing { field: "allocators" });
        }
        for a in &self.allocators {
            if a.rsplit_once(':').is_none_or(|(host, port)| host.is_empty() || port.parse::<u16>().is_err()) {
                return Err(ConfigError::Invalid { field: "allocators", reason: format!("{a:?} is not host:port") });
            }
        }
        self.datapath.validate().map_err(|e| ConfigError::Invalid { field: "datapath", reason: e.to_string() })?;
        if !self.socket.is_absolute() || self.socket.as_os_str().len() > 107 {
            return invalid("socket", "must be an absolute path of at most 107 bytes");
        }
        if !self.state_dir.is_absolute() {
            return invalid("state-dir", "must be an absolute path");
        }
        if self.keepalive.is_zero() {
            return invalid("keepalive-ms", "must be positive");
        }
        // At least two renewals per TTL, so one lost keep-alive does not lose the lease.
        if self.lease_ttl < self.keepalive * 2 {
            return invalid("lease-ttl-ms", "must be at least twice keepalive-ms");
        }
        if self.reconcile_every < Duration::from_millis(100) {
            return invalid("reconcile-ms", "must be at least 100");
        }
        if self.max_concurrent == 0 {
            return invalid("max-concurrent", "must be positive");
        }
        Ok(())
    }
}

fn read_file(path: &Path) -> Result<Sources, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.into(), source })?;
    toml::from_str(&text).map_err(|source| ConfigError::Parse { path: path.into(), source: Box::new(source) })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(extra: &[&str]) -> Sources {
        let mut all = vec!["hc-agent", "--node", "n1", "--allocators", "127.0.0.1:7001,127.0.0.1:7002"];
        all.extend_from_slice(extra);
        Sources::try_parse_from(all).expect("parses")
    }

    #[test]
    fn defaults_fill_what_is_not_given() {
        let c = Config::merge(args(&[]), Sources::default()).expect("valid");
        assert_eq!(c.allocators.len(), 2);
        assert_eq!(c.datapath.bridge, "br0");
        assert_eq!(c.lease_ttl, Duration::from_secs(10));
        assert_eq!(c.keepalive, Duration::from_secs(2));
        assert_eq!(c.socket, PathBuf::from("/run/hc-bridge/agent.sock"));
    }

    #[test]
    fn flags_win_over_the_file_and_the_file_over_defaults() {
        let file: Sources = toml::from_str(
            "bridge = \"brfile\"\nuplink = \"eth1\"\nlease-ttl-ms = 6000\nnode-labels = { zone = \"a\" }\n",
        )
        .expect("toml");
        let c = Config::merge(args(&["--bridge", "brflag"]), file).expect("valid");
        assert_eq!(c.datapath.bridge, "brflag");
        assert_eq!(c.datapath.uplink.as_deref(), Some("eth1"));
        assert_eq!(c.lease_ttl, Duration::from_secs(6));
        assert_eq!(c.node_labels.get("zone").map(String::as_str), Some("a"));
    }

    #[test]
    fn unknown_file_keys_are_rejected() {
        assert!(toml::from_str::<Sources>("brige = \"x\"").is_err());
    }

    #[test]
    fn cross_field_rules_are_checked() {
        let cases: &[(&[&str], &str)] = &[
            (&["--lease-ttl-ms", "3000", "--keepalive-ms", "2000"], "lease-ttl-ms"),
            (&["--keepalive-ms", "0"], "keepalive-ms"),
            (&["--socket", "relative.sock"], "socket"),
            (&["--bridge", "a-bridge-name-too-long"], "datapath"),
            (&["--state-dir", "rel"], "state-dir"),
        ];
        for (extra, field) in cases {
            let err = Config::merge(args(extra), Sources::default()).expect_err("invalid");
            assert!(err.to_string().contains(field), "{extra:?}: {err}");
        }
        let no_alloc = Sources::try_parse_from(["hc-agent", "--node", "n"]).expect("parses");
        assert!(matches!(Config::merge(no_alloc, Sources::default()), Err(ConfigError::Missing { .. })));
        let bad = Sources::try_parse_from(["hc-agent", "--node", "n", "--allocators", "nohost"]).expect("parses");
        assert!(Config::merge(bad, Sources::default()).is_err());
        assert!(Sources::try_parse_from(["hc-agent", "--mode", "vxlan"]).is_err());
        assert!(Sources::try_parse_from(["hc-agent", "--node-labels", "novalue"]).is_err());
    }
}
