//! The command line: clap types, and the pure functions that turn parsed arguments into the
//! API's request bodies. Nothing here performs I/O.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;

use clap::{ArgGroup, Args, Parser, Subcommand};
use hc_api::types::{AllocateRequest, AttachmentId, Dns, IpRange, Owner, PoolSpec, ReleaseTarget, Route, Selector};
use reqwest::Url;
use serde::de::DeserializeOwned;

use crate::output::Format;

/// Administer an hc-bridge allocator cluster over its REST API.
#[derive(Debug, Parser)]
#[command(name = "hcctl", version, propagate_version = true)]
pub struct Cli {
    /// Allocator REST address, HOST:PORT. A comma-separated list is tried in order until one
    /// accepts the connection.
    #[arg(
        long,
        short = 's',
        global = true,
        env = "HCCTL_SERVER",
        default_value = "127.0.0.1:7380",
        value_delimiter = ',',
        value_name = "HOST:PORT[,…]",
        value_parser = parse_server
    )]
    pub server: Vec<Server>,

    /// Output format: aligned tables for people, or the server's JSON.
    #[arg(long, short = 'o', global = true, value_enum, default_value_t = Format::Table)]
    pub output: Format,

    /// Give up on a request after this many seconds (adding a learner waits for it to catch up).
    #[arg(long, global = true, env = "HCCTL_TIMEOUT", default_value_t = 30, value_name = "SECS")]
    pub timeout: u64,

    #[command(subcommand)]
    pub command: Command,
}

/// One allocator's REST address, `host:port` (no scheme: the API is plain HTTP).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Server {
    hostport: String,
    /// `http://{hostport}/`, checked when parsed.
    base: Url,
}

impl Server {
    /// The URL of `path_segments` on this server; each segment is percent-encoded whole, so a
    /// reservation key's `/` travels as `%2F` and the server decodes it back.
    pub fn url(&self, path_segments: &[&str]) -> Url {
        let mut url = self.base.clone();
        if let Ok(mut segments) = url.path_segments_mut() {
            segments.clear().extend(path_segments);
        }
        url
    }
}

impl fmt::Display for Server {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.hostport)
    }
}

/// Accepts `host:port`, `[v6]:port` or `http://host:port`; refuses https (no TLS in hcctl yet)
/// and anything with a path.
pub fn parse_server(s: &str) -> Result<Server, String> {
    let s = s.trim();
    if s.starts_with("https://") {
        return Err(format!("{s:?}: hcctl speaks plain HTTP; TLS is not supported yet"));
    }
    let hostport = s.strip_prefix("http://").unwrap_or(s).trim_end_matches('/');
    if hostport.is_empty() || hostport.contains('/') || hostport.contains("://") {
        return Err(format!("{s:?} is not HOST:PORT"));
    }
    let base = Url::parse(&format!("http://{hostport}/")).map_err(|e| format!("{s:?} is not HOST:PORT: {e}"))?;
    // `Url` hides an explicit default port, so look at the text for it.
    if base.port().is_none() && !hostport.ends_with(":80") {
        return Err(format!("{s:?} has no port (HOST:PORT, e.g. 127.0.0.1:7380)"));
    }
    Ok(Server { hostport: hostport.to_owned(), base })
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// IP pools: a CIDR on one L2 segment, with gateway, VLAN, routes, DNS and selectors.
    #[command(subcommand)]
    Pool(PoolCmd),
    /// VLANs and the nodes whose uplinks carry them.
    #[command(subcommand)]
    Vlan(VlanCmd),
    /// Fixed-IP reservations: a key keeps one address of one pool.
    #[command(subcommand)]
    Reservation(ReservationCmd),
    /// Allocations: which attachment holds which address.
    #[command(subcommand)]
    Allocation(AllocationCmd),
    /// Node leases and their fencing tokens.
    #[command(subcommand)]
    Lease(LeaseCmd),
    /// Nodes.
    #[command(subcommand)]
    Node(NodeCmd),
    /// The allocator's Raft cluster: status and membership.
    #[command(subcommand)]
    Cluster(ClusterCmd),
}

#[derive(Debug, Subcommand)]
pub enum PoolCmd {
    /// List pools with their address counts.
    List,
    /// Show one pool.
    Get { name: String },
    /// Create a pool from flags, or from a PoolSpec JSON file with -f.
    Create(Box<PoolCreateArgs>),
    /// Replace a pool's spec with the PoolSpec in a JSON file (the file names the pool).
    Update {
        /// PoolSpec JSON; `-` reads standard input.
        #[arg(short = 'f', long = "file", value_name = "FILE.json")]
        file: PathBuf,
    },
    /// Delete a pool.
    Delete {
        name: String,
        /// Delete even if addresses are allocated from it (the allocations are dropped).
        #[arg(long)]
        force: bool,
    },
}

#[derive(Debug, Args)]
pub struct PoolCreateArgs {
    /// Pool name.
    #[arg(required_unless_present = "file")]
    pub name: Option<String>,
    /// The pool's network, e.g. 10.1.0.0/24.
    #[arg(long, required_unless_present = "file")]
    pub cidr: Option<String>,
    /// The physical router on the segment.
    #[arg(long, value_name = "IP")]
    pub gateway: Option<IpAddr>,
    /// 802.1Q VLAN id (1–4094); none means untagged.
    #[arg(long, value_name = "ID")]
    pub vlan: Option<u16>,
    /// Extra route in the pod, via GW or else via the gateway (repeatable).
    #[arg(long = "route", value_name = "DST[=GW]", value_parser = parse_route)]
    pub routes: Vec<Route>,
    /// DNS nameserver (repeatable).
    #[arg(long = "dns", value_name = "IP")]
    pub dns: Vec<IpAddr>,
    /// Never hand out these addresses: IP, A-B or CIDR (repeatable).
    #[arg(long = "exclude", value_name = "RANGE")]
    pub exclude: Vec<IpRange>,
    /// Selector: pods in this namespace may use the pool (repeatable).
    #[arg(long = "namespace", value_name = "NS")]
    pub namespaces: Vec<String>,
    /// Selector: pods on this node may use the pool (repeatable).
    #[arg(long = "node", value_name = "NODE")]
    pub nodes: Vec<String>,
    /// Selector: pods with this label (repeatable).
    #[arg(long = "pod-label", value_name = "K=V", value_parser = parse_label)]
    pub pod_labels: Vec<(String, String)>,
    /// Selector: pods on nodes with this label (repeatable).
    #[arg(long = "node-label", value_name = "K=V", value_parser = parse_label)]
    pub node_labels: Vec<(String, String)>,
    /// Use this pool for pods that name no pool and match no selector.
    #[arg(long)]
    pub default: bool,
    /// Seconds a released address waits before it is handed out again.
    #[arg(long, value_name = "SECS")]
    pub cooldown: Option<u64>,
    /// Read the whole PoolSpec from this JSON file instead (`-` reads standard input).
    #[arg(
        short = 'f',
        long = "file",
        value_name = "FILE.json",
        conflicts_with_all = [
            "name", "cidr", "gateway", "vlan", "routes", "dns", "exclude", "namespaces", "nodes",
            "pod_labels", "node_labels", "default", "cooldown",
        ]
    )]
    pub file: Option<PathBuf>,
}

/// An argument clap could not check by itself; reported like clap's usage errors (exit 2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageError(pub String);

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl PoolCreateArgs {
    /// The PoolSpec the flags describe (not used with `-f`).
    pub fn to_spec(&self) -> Result<PoolSpec, UsageError> {
        let name = self.name.clone().ok_or_else(|| UsageError("a pool name is required".into()))?;
        let cidr = self.cidr.as_deref().ok_or_else(|| UsageError("--cidr is required".into()))?;
        Ok(PoolSpec {
            name,
            cidr: via_serde(cidr).map_err(|e| UsageError(format!("invalid --cidr {cidr:?}: {e}")))?,
            gateway: self.gateway,
            vlan: self.vlan,
            routes: self.routes.clone(),
            dns: Dns { nameservers: self.dns.clone(), ..Dns::default() },
            exclude: self.exclude.clone(),
            selector: Selector {
                namespaces: self.namespaces.clone(),
                nodes: self.nodes.clone(),
                node_labels: label_map("--node-label", &self.node_labels)?,
                pod_labels: label_map("--pod-label", &self.pod_labels)?,
            },
            default: self.default,
            reuse_cooldown_secs: self.cooldown.unwrap_or(0),
        })
    }
}

/// A PoolSpec from a JSON document; unknown fields are refused here, before anything is sent.
pub fn parse_pool_spec(text: &str, origin: &str) -> Result<PoolSpec, UsageError> {
    serde_json::from_str(text).map_err(|e| UsageError(format!("{origin} is not a valid PoolSpec: {e}")))
}

/// Parses `s` the way the API's JSON does. Used for the CIDR types hc-api takes from `ipnet`,
/// so that the CLI accepts exactly what the server would.
fn via_serde<T: DeserializeOwned>(s: &str) -> Result<T, serde_json::Error> {
    serde_json::from_value(serde_json::Value::String(s.to_owned()))
}

/// `DST[=GW]`: a destination CIDR, and a next hop (default: the pool's gateway).
pub fn parse_route(s: &str) -> Result<Route, String> {
    let (dst, gw) = match s.split_once('=') {
        Some((dst, gw)) => (dst.trim(), Some(gw.trim())),
        None => (s.trim(), None),
    };
    let dst = via_serde(dst).map_err(|e| format!("destination {dst:?} is not a CIDR ({e}); expected DST[=GW]"))?;
    let gw = gw
        .map(|gw| gw.parse::<IpAddr>().map_err(|_| format!("next hop {gw:?} is not an IP address; expected DST[=GW]")))
        .transpose()?;
    Ok(Route { dst, gw })
}

/// `KEY=VALUE`, with a non-empty key.
pub fn parse_label(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_owned(), v.trim().to_owned())),
        _ => Err(format!("{s:?} is not KEY=VALUE")),
    }
}

/// Labels as a map; the same key twice is a mistake, not "last one wins".
fn label_map(flag: &str, labels: &[(String, String)]) -> Result<BTreeMap<String, String>, UsageError> {
    let mut map = BTreeMap::new();
    for (k, v) in labels {
        if map.insert(k.clone(), v.clone()).is_some() {
            return Err(UsageError(format!("{flag} {k:?} is given more than once")));
        }
    }
    Ok(map)
}

#[derive(Debug, Subcommand)]
pub enum VlanCmd {
    /// List VLANs.
    List,
    /// Create or replace a VLAN.
    Create {
        /// 802.1Q id, 1–4094.
        id: u16,
        #[arg(long, default_value = "")]
        name: String,
        /// A node whose uplink carries the VLAN (repeatable; none means every node).
        #[arg(long = "node", value_name = "NODE")]
        nodes: Vec<String>,
    },
    /// Delete a VLAN (refused while a pool uses it).
    Delete { id: u16 },
}

#[derive(Debug, Subcommand)]
pub enum ReservationCmd {
    /// List reservations.
    List,
    /// Show one reservation.
    Get { key: String },
    /// Reserve an address of a pool for a key (e.g. ns/statefulset/0 or ns/pod).
    Create {
        key: String,
        #[arg(long)]
        pool: String,
        #[arg(long, value_name = "IP")]
        address: IpAddr,
    },
    /// Delete a reservation (an allocation made from it is kept).
    Delete { key: String },
}

#[derive(Debug, Subcommand)]
pub enum AllocationCmd {
    /// List allocations, optionally filtered.
    List {
        #[arg(long)]
        pool: Option<String>,
        #[arg(long)]
        node: Option<String>,
        /// Pod namespace.
        #[arg(long)]
        namespace: Option<String>,
    },
    /// Show the allocation holding an address.
    Get { address: IpAddr },
    /// Allocate an address to an attachment by hand (idempotent per container id and interface).
    Allocate(AllocateArgs),
    /// Release an address, or what an attachment holds.
    Release(ReleaseArgs),
}

#[derive(Debug, Args)]
pub struct AllocateArgs {
    #[arg(long)]
    pub container_id: String,
    #[arg(long, default_value = "eth0")]
    pub interface: String,
    /// The node the attachment lives on.
    #[arg(long)]
    pub node: String,
    /// Pod namespace.
    #[arg(long, default_value = "")]
    pub namespace: String,
    /// Pod name.
    #[arg(long, default_value = "")]
    pub pod: String,
    /// Take the address from this pool.
    #[arg(long)]
    pub pool: Option<String>,
    /// Take exactly this address.
    #[arg(long, value_name = "IP")]
    pub address: Option<IpAddr>,
    /// Reservation key to try, in order (repeatable).
    #[arg(long = "reservation-key", value_name = "KEY")]
    pub reservation_keys: Vec<String>,
    /// Pod label for pool selectors (repeatable).
    #[arg(long = "pod-label", value_name = "K=V", value_parser = parse_label)]
    pub pod_labels: Vec<(String, String)>,
    /// Node label for pool selectors (repeatable).
    #[arg(long = "node-label", value_name = "K=V", value_parser = parse_label)]
    pub node_labels: Vec<(String, String)>,
}

impl AllocateArgs {
    pub fn to_request(&self) -> Result<AllocateRequest, UsageError> {
        Ok(AllocateRequest {
            owner: Owner {
                container_id: self.container_id.clone(),
                interface: self.interface.clone(),
                namespace: self.namespace.clone(),
                pod: self.pod.clone(),
                node: self.node.clone(),
            },
            pool: self.pool.clone(),
            address: self.address,
            reservation_keys: self.reservation_keys.clone(),
            pod_labels: label_map("--pod-label", &self.pod_labels)?,
            node_labels: label_map("--node-label", &self.node_labels)?,
        })
    }
}

#[derive(Debug, Args)]
#[command(group(ArgGroup::new("target").required(true).args(["address", "container_id"])))]
pub struct ReleaseArgs {
    /// Release whatever holds this address.
    #[arg(value_name = "ADDRESS", conflicts_with = "container_id")]
    pub address: Option<IpAddr>,
    /// Release what this attachment holds.
    #[arg(long)]
    pub container_id: Option<String>,
    /// The attachment's interface [default: eth0].
    #[arg(long, conflicts_with = "address")]
    pub interface: Option<String>,
}

/// Which release call a `release` command makes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReleaseBy {
    Address(IpAddr),
    Target(ReleaseTarget),
}

impl ReleaseArgs {
    pub fn to_release(&self) -> Result<ReleaseBy, UsageError> {
        match (&self.address, &self.container_id) {
            (Some(a), None) => Ok(ReleaseBy::Address(*a)),
            (None, Some(c)) => Ok(ReleaseBy::Target(ReleaseTarget::Owner(AttachmentId {
                container_id: c.clone(),
                interface: self.interface.clone().unwrap_or_else(|| "eth0".to_owned()),
            }))),
            _ => Err(UsageError("give either ADDRESS or --container-id".into())),
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum LeaseCmd {
    /// List node leases.
    List,
}

#[derive(Debug, Subcommand)]
pub enum NodeCmd {
    /// Declare a node gone: release all its allocations, quarantined or not, and drop its lease.
    Gone { node: String },
}

#[derive(Debug, Subcommand)]
pub enum ClusterCmd {
    /// Leader, term, log indexes and members, as the answering replica sees them.
    Status,
    /// Add a replica as a learner; returns once it has caught up with the log.
    AddLearner {
        id: u64,
        /// The replica's Raft/gRPC address, HOST:PORT.
        #[arg(long)]
        grpc_addr: String,
        /// The replica's REST address, HOST:PORT.
        #[arg(long)]
        rest_addr: String,
    },
    /// Promote a learner to voter.
    Promote { id: u64 },
    /// Remove a replica (a voter is demoted first).
    Remove { id: u64 },
    /// Build a snapshot on the answering replica now and compact its log (e.g. before
    /// maintenance, so a restart replays no log tail); returns once it covers the applied state.
    Snapshot,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;
    use clap::error::ErrorKind;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("hcctl").chain(args.iter().copied()))
    }

    fn pool_create(args: &[&str]) -> PoolCreateArgs {
        let mut full = vec!["pool", "create"];
        full.extend_from_slice(args);
        match parse(&full).expect("parses").command {
            Command::Pool(PoolCmd::Create(a)) => *a,
            other => panic!("parsed as {other:?}"),
        }
    }

    #[test]
    fn clap_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn route_with_and_without_next_hop() {
        let r = parse_route("10.0.0.0/8=10.1.0.1").expect("parses");
        assert_eq!(r.dst.to_string(), "10.0.0.0/8");
        assert_eq!(r.gw, Some("10.1.0.1".parse().expect("ip")));
        let r = parse_route("fd00::/8").expect("parses");
        assert_eq!(r.dst.to_string(), "fd00::/8");
        assert_eq!(r.gw, None);
    }

    #[test]
    fn malformed_routes_are_refused() {
        assert!(parse_route("10.0.0.0/8=nonsense").expect_err("must fail").contains("next hop"));
        assert!(parse_route("10.0.0.0=10.1.0.1").expect_err("must fail").contains("not a CIDR"));
        assert!(parse_route("").is_err());
        let err = parse(&["pool", "create", "p", "--cidr", "10.0.0.0/24", "--route", "x"]).expect_err("must fail");
        assert_eq!(err.kind(), ErrorKind::ValueValidation);
    }

    #[test]
    fn pool_flags_build_the_full_spec() {
        let args = pool_create(&[
            "blue",
            "--cidr",
            "10.1.0.0/24",
            "--gateway",
            "10.1.0.1",
            "--vlan",
            "100",
            "--route",
            "10.0.0.0/8=10.1.0.254",
            "--route",
            "192.168.0.0/16",
            "--dns",
            "10.1.0.53",
            "--dns",
            "10.1.0.54",
            "--exclude",
            "10.1.0.2-10.1.0.9",
            "--exclude",
            "10.1.0.128/28",
            "--namespace",
            "db",
            "--node",
            "n1",
            "--node",
            "n2",
            "--pod-label",
            "app=mysql",
            "--node-label",
            "rack=r1",
            "--default",
            "--cooldown",
            "30",
        ]);
        let spec = args.to_spec().expect("valid");
        let json = serde_json::to_value(&spec).expect("serializes");
        assert_eq!(
            json,
            serde_json::json!({
                "name": "blue",
                "cidr": "10.1.0.0/24",
                "gateway": "10.1.0.1",
                "vlan": 100,
                "routes": [{"dst": "10.0.0.0/8", "gw": "10.1.0.254"}, {"dst": "192.168.0.0/16"}],
                "dns": {"nameservers": ["10.1.0.53", "10.1.0.54"]},
                "exclude": ["10.1.0.2-10.1.0.9", "10.1.0.128-10.1.0.143"],
                "selector": {
                    "namespaces": ["db"],
                    "nodes": ["n1", "n2"],
                    "node_labels": {"rack": "r1"},
                    "pod_labels": {"app": "mysql"}
                },
                "default": true,
                "reuse_cooldown_secs": 30
            })
        );
    }

    #[test]
    fn minimal_pool_has_empty_selector_and_no_cooldown() {
        let spec = pool_create(&["p", "--cidr", "fd00:1::/64"]).to_spec().expect("valid");
        assert_eq!(spec.cidr.to_string(), "fd00:1::/64");
        assert!(spec.selector.is_empty());
        assert_eq!((spec.gateway, spec.vlan, spec.default, spec.reuse_cooldown_secs), (None, None, false, 0));
    }

    #[test]
    fn bad_cidr_and_duplicate_labels_are_usage_errors() {
        let err = pool_create(&["p", "--cidr", "10.0.0.0/33"]).to_spec().expect_err("must fail");
        assert!(err.0.contains("--cidr"), "{err}");
        let err = pool_create(&["p", "--cidr", "10.0.0.0/24", "--pod-label", "a=1", "--pod-label", "a=2"])
            .to_spec()
            .expect_err("must fail");
        assert!(err.0.contains("more than once"), "{err}");
    }

    #[test]
    fn pool_create_needs_cidr_or_file_but_not_both() {
        assert_eq!(parse(&["pool", "create", "p"]).expect_err("must fail").kind(), ErrorKind::MissingRequiredArgument);
        let err = parse(&["pool", "create", "p", "--cidr", "10.0.0.0/24", "-f", "x.json"]).expect_err("must fail");
        assert_eq!(err.kind(), ErrorKind::ArgumentConflict);
        let args = pool_create(&["-f", "x.json"]);
        assert_eq!(args.file, Some(PathBuf::from("x.json")));
    }

    #[test]
    fn pool_spec_file_rejects_unknown_fields() {
        let ok = parse_pool_spec(r#"{"name": "p", "cidr": "10.0.0.0/24"}"#, "x.json").expect("valid");
        assert_eq!(ok.name, "p");
        let err =
            parse_pool_spec(r#"{"name": "p", "cidr": "10.0.0.0/24", "vlna": 5}"#, "x.json").expect_err("must fail");
        assert!(err.0.contains("x.json") && err.0.contains("vlna"), "{err}");
    }

    #[test]
    fn labels_need_a_key() {
        assert_eq!(parse_label("app=web"), Ok(("app".into(), "web".into())));
        assert_eq!(parse_label("empty="), Ok(("empty".into(), String::new())));
        assert!(parse_label("=v").is_err());
        assert!(parse_label("novalue").is_err());
    }

    #[test]
    fn allocate_flags_build_the_request() {
        let cli = parse(&[
            "allocation",
            "allocate",
            "--container-id",
            "c1",
            "--node",
            "n1",
            "--namespace",
            "db",
            "--pod",
            "mysql-0",
            "--reservation-key",
            "db/mysql/0",
            "--reservation-key",
            "db/mysql-0",
            "--pod-label",
            "app=mysql",
        ])
        .expect("parses");
        let Command::Allocation(AllocationCmd::Allocate(a)) = cli.command else { panic!("wrong command") };
        let req = a.to_request().expect("valid");
        assert_eq!(
            serde_json::to_value(&req).expect("serializes"),
            serde_json::json!({
                "owner": {"container_id": "c1", "interface": "eth0", "namespace": "db", "pod": "mysql-0", "node": "n1"},
                "reservation_keys": ["db/mysql/0", "db/mysql-0"],
                "pod_labels": {"app": "mysql"}
            })
        );
    }

    #[test]
    fn release_by_address_or_by_attachment() {
        let release = |args: &[&str]| {
            let mut full = vec!["allocation", "release"];
            full.extend_from_slice(args);
            parse(&full).map(|cli| match cli.command {
                Command::Allocation(AllocationCmd::Release(r)) => r.to_release().expect("valid"),
                other => panic!("parsed as {other:?}"),
            })
        };
        assert_eq!(release(&["10.0.0.5"]).expect("parses"), ReleaseBy::Address("10.0.0.5".parse().expect("ip")));
        let by_owner = release(&["--container-id", "c1"]).expect("parses");
        let ReleaseBy::Target(target) = by_owner else { panic!("wrong target") };
        assert_eq!(
            serde_json::to_value(&target).expect("serializes"),
            serde_json::json!({"owner": {"container_id": "c1", "interface": "eth0"}})
        );
        let ReleaseBy::Target(ReleaseTarget::Owner(id)) =
            release(&["--container-id", "c1", "--interface", "net1"]).expect("parses")
        else {
            panic!("wrong target")
        };
        assert_eq!(id.interface, "net1");
        assert_eq!(release(&[]).expect_err("must fail").kind(), ErrorKind::MissingRequiredArgument);
        assert_eq!(
            release(&["10.0.0.5", "--container-id", "c1"]).expect_err("must fail").kind(),
            ErrorKind::ArgumentConflict
        );
        assert_eq!(
            release(&["--interface", "eth1", "10.0.0.5"]).expect_err("must fail").kind(),
            ErrorKind::ArgumentConflict
        );
        assert_eq!(release(&["not-an-ip"]).expect_err("must fail").kind(), ErrorKind::ValueValidation);
    }

    #[test]
    fn server_list_and_its_forms() {
        let cli = parse(&["--server", "10.0.0.1:7380,[fd00::1]:7380, http://h:1/", "lease", "list"]).expect("parses");
        let servers: Vec<String> = cli.server.iter().map(ToString::to_string).collect();
        assert_eq!(servers, ["10.0.0.1:7380", "[fd00::1]:7380", "h:1"]);
        assert!(parse_server("https://h:1").expect_err("must fail").contains("TLS"));
        assert!(parse_server("h").expect_err("must fail").contains("no port"));
        assert!(parse_server("h:1/v1").is_err());
        assert!(parse_server("").is_err());
    }

    #[test]
    fn reservation_keys_travel_as_one_path_segment() {
        let s = parse_server("127.0.0.1:1").expect("valid");
        assert_eq!(s.url(&["v1", "reservations", "db/mysql/0"]).path(), "/v1/reservations/db%2Fmysql%2F0");
        assert_eq!(s.url(&["v1", "allocations", "fd00::5"]).as_str(), "http://127.0.0.1:1/v1/allocations/fd00::5");
    }
}
