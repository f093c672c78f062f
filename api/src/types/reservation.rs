//! A fixed-IP reservation: a key keeps one address of one pool, across pod restarts and
//! re-creations, until an explicit delete.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Reservation {
    /// What keeps the address: `namespace/statefulset/ordinal` for a StatefulSet member,
    /// `namespace/pod` for a single pod, or any string an operator chooses.
    pub key: String,
    pub pool: String,
    pub address: IpAddr,
}

/// The key a StatefulSet member's reservation is stored under.
pub fn statefulset_key(namespace: &str, statefulset: &str, ordinal: u32) -> String {
    format!("{namespace}/{statefulset}/{ordinal}")
}

/// The key a single pod's reservation is stored under.
pub fn pod_key(namespace: &str, pod: &str) -> String {
    format!("{namespace}/{pod}")
}
