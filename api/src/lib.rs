//! hc-api: what every hc-bridge binary shares.
//!
//! - [`command`]: the replicated log's commands and outputs (also the `Propose` payload);
//! - [`types`]: pools, VLANs, reservations, allocations, leases (the REST JSON and the log payload);
//! - [`error`]: [`IpamError`], mapped once to HTTP and gRPC status;
//! - [`proto`]: the versioned gRPC services (`hc.v1`);
//! - [`client`]: a gRPC client that finds the leader and retries.

pub mod client;
pub mod command;
pub mod error;
pub mod types;

pub use error::{ErrorKind, IpamError};

/// Generated gRPC code for package `hc.v1`.
#[allow(clippy::all, missing_docs)]
pub mod proto {
    tonic::include_proto!("hc.v1");
}
