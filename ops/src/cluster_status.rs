//! The JSON of `GET /v1/cluster` (and of the membership calls' replies), defined once in
//! `hc_api` for the allocator and hcctl alike.

pub use hc_api::types::ClusterStatus;
