//! hc-agent: the node agent. It keeps the node's lease, serves the CNI plugins' requests on a
//! unix socket, builds each pod's network through the datapath, keeps a local record of what
//! it built, and repairs drift.
//!
//! Layout:
//! - `config.rs`: flags, `HC_AGENT_*` environment and TOML file → a validated [`config::Config`]
//! - `agent.rs`: [`agent::Agent`], what the tasks share, and [`agent::run`], which wires them
//! - `connection.rs`: the allocator client, reconnected after failures
//! - `lease.rs`: acquiring and keeping the lease; the fence every write carries
//! - `cni_server.rs`: the socket (0600, root peers only, bounded concurrency)
//! - `cni_handler.rs`: ADD, DEL, CHECK, GC, STATUS and the mapping of errors to CNI codes
//! - `request.rs`: pure translation of an ADD into an allocation, an attachment and a result
//! - `store.rs`: the attachment record on disk
//! - `reconciler.rs`: reconcile with the allocator after a grant; periodic datapath repair
//! - `metrics.rs`: `hc_agent_*` metrics, `/metrics`, `/healthz`, `/readyz`
//! - `traffic.rs`: per-pod traffic from the host-side veth counters
//! - `datapath/`: bridges, VLANs and veths over rtnetlink

pub mod agent;
pub mod cni_handler;
pub mod cni_server;
pub mod config;
pub mod connection;
pub mod datapath;
pub mod lease;
pub mod metrics;
pub mod reconciler;
pub mod request;
pub mod store;
pub mod traffic;
