//! hc-allocator: the Raft-replicated IPAM store.
//!
//! Layout:
//! - `config.rs`: flags, environment and file, validated before anything starts;
//! - `raft/`: openraft type config, RocksDB log and state-machine stores, Raft over gRPC (a
//!   received snapshot the log already covers is answered, not installed: `hc-snapshot-guard`);
//! - `replica.rs`: propose (forwarding to the leader), read the applied state, cluster status;
//!   every write goes through `hc-batcher` (which can put concurrent allocations and releases
//!   in one Raft entry; `--batch-proposals`);
//! - `lease_keeper.rs`: the leader's in-memory lease deadlines and expiry proposals;
//! - `grpc.rs`: the `hc.v1.Ipam` service for agents and tools;
//! - `rest.rs`, `openapi.rs`: the management REST API;
//! - `metrics.rs`: `hc_allocator_*` Prometheus metrics;
//! - `server.rs`: wires one replica together and shuts it down.
//!
//! The state machine itself (pure, no I/O) is the `hc-allocator-state` crate.

pub mod config;
pub mod grpc;
pub mod lease_keeper;
pub mod memory;
pub mod metrics;
pub mod openapi;
pub mod raft;
pub mod replica;
pub mod rest;
pub mod server;
