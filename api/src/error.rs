//! The one error type of every IPAM operation, with its mappings to HTTP and gRPC status.
//! The CNI plugin maps `ErrorKind` to CNI error codes in its own crate.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

/// Why an IPAM operation was refused. Refusals change nothing in the state.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum IpamError {
    #[error("invalid {field}: {reason}")]
    InvalidArgument { field: String, reason: String },
    #[error("VLAN {vlan} is invalid: an 802.1Q id is 1 to 4094")]
    InvalidVlan { vlan: u32 },
    #[error("pool {pool} ({cidr}) overlaps pool {other} ({other_cidr})")]
    PoolOverlap { pool: String, cidr: String, other: String, other_cidr: String },
    #[error("gateway {gateway} is outside pool {pool} ({cidr})")]
    GatewayOutsidePool { pool: String, gateway: IpAddr, cidr: String },
    #[error("pool {pool} already exists")]
    PoolExists { pool: String },
    #[error("pool {pool} does not exist")]
    PoolNotFound { pool: String },
    #[error("pool {pool} still has {allocated} allocated addresses; release them or delete with force")]
    PoolInUse { pool: String, allocated: u64 },
    #[error("no pool matches this pod (no explicit pool, reservation, selector or default)")]
    NoPoolMatches,
    #[error("pool {pool} is exhausted: no free address left")]
    PoolExhausted { pool: String },
    #[error("address {address} is outside pool {pool} ({cidr})")]
    AddressOutsidePool { address: IpAddr, pool: String, cidr: String },
    #[error("address {address} is excluded from pool {pool}")]
    AddressExcluded { address: IpAddr, pool: String },
    #[error("address {address} is held by {holder}")]
    AddressInUse { address: IpAddr, holder: String },
    #[error("address {address} is reserved for {key}")]
    AddressReserved { address: IpAddr, key: String },
    #[error("address {address} is cooling down after release until {until_ms} ms")]
    AddressCoolingDown { address: IpAddr, until_ms: u64 },
    #[error("reservation conflict: {reason}")]
    ReservationConflict { key: String, reason: String },
    #[error("reservation {key} does not exist")]
    ReservationNotFound { key: String },
    #[error("VLAN {vlan} does not exist")]
    VlanNotFound { vlan: u16 },
    #[error("VLAN {vlan} is used by pool {pool}")]
    VlanInUse { vlan: u16, pool: String },
    #[error("no allocation for {what}")]
    AllocationNotFound { what: String },
    #[error("stale fencing token {presented} for node {node}; current token is {current}")]
    StaleToken { node: String, presented: u64, current: u64 },
    #[error("node {node} has no active lease; acquire one first")]
    NoLease { node: String },
    #[error("this replica is not the leader; leader is {leader:?}")]
    NotLeader { leader_id: Option<u64>, leader: Option<String> },
    #[error("unavailable: {reason}")]
    Unavailable { reason: String },
}

/// Stable machine-readable error kinds, as they appear in REST bodies and gRPC metadata.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    BadRequest,
    NotFound,
    Conflict,
    Exhausted,
    StaleToken,
    NoLease,
    NotLeader,
    Unavailable,
}

impl IpamError {
    pub fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        IpamError::InvalidArgument { field: field.into(), reason: reason.into() }
    }

    pub fn kind(&self) -> ErrorKind {
        use IpamError::*;
        match self {
            InvalidArgument { .. }
            | InvalidVlan { .. }
            | GatewayOutsidePool { .. }
            | AddressOutsidePool { .. }
            | AddressExcluded { .. } => ErrorKind::BadRequest,
            PoolNotFound { .. }
            | ReservationNotFound { .. }
            | VlanNotFound { .. }
            | AllocationNotFound { .. }
            | NoPoolMatches => ErrorKind::NotFound,
            PoolOverlap { .. }
            | PoolExists { .. }
            | PoolInUse { .. }
            | AddressInUse { .. }
            | AddressReserved { .. }
            | AddressCoolingDown { .. }
            | ReservationConflict { .. }
            | VlanInUse { .. } => ErrorKind::Conflict,
            PoolExhausted { .. } => ErrorKind::Exhausted,
            StaleToken { .. } => ErrorKind::StaleToken,
            NoLease { .. } => ErrorKind::NoLease,
            NotLeader { .. } => ErrorKind::NotLeader,
            Unavailable { .. } => ErrorKind::Unavailable,
        }
    }

    /// The snake_case variant name, as in the JSON `kind` field.
    pub fn kind_name(&self) -> &'static str {
        use IpamError::*;
        match self {
            InvalidArgument { .. } => "invalid_argument",
            InvalidVlan { .. } => "invalid_vlan",
            PoolOverlap { .. } => "pool_overlap",
            GatewayOutsidePool { .. } => "gateway_outside_pool",
            PoolExists { .. } => "pool_exists",
            PoolNotFound { .. } => "pool_not_found",
            PoolInUse { .. } => "pool_in_use",
            NoPoolMatches => "no_pool_matches",
            PoolExhausted { .. } => "pool_exhausted",
            AddressOutsidePool { .. } => "address_outside_pool",
            AddressExcluded { .. } => "address_excluded",
            AddressInUse { .. } => "address_in_use",
            AddressReserved { .. } => "address_reserved",
            AddressCoolingDown { .. } => "address_cooling_down",
            ReservationConflict { .. } => "reservation_conflict",
            ReservationNotFound { .. } => "reservation_not_found",
            VlanNotFound { .. } => "vlan_not_found",
            VlanInUse { .. } => "vlan_in_use",
            AllocationNotFound { .. } => "allocation_not_found",
            StaleToken { .. } => "stale_token",
            NoLease { .. } => "no_lease",
            NotLeader { .. } => "not_leader",
            Unavailable { .. } => "unavailable",
        }
    }

    pub fn http_status(&self) -> u16 {
        match self.kind() {
            ErrorKind::BadRequest => 400,
            ErrorKind::NotFound => 404,
            ErrorKind::Conflict => 409,
            ErrorKind::Exhausted => 507,
            ErrorKind::StaleToken | ErrorKind::NoLease => 412,
            ErrorKind::NotLeader => 421,
            ErrorKind::Unavailable => 503,
        }
    }

    pub fn grpc_code(&self) -> tonic::Code {
        match self.kind() {
            ErrorKind::BadRequest => tonic::Code::InvalidArgument,
            ErrorKind::NotFound => tonic::Code::NotFound,
            ErrorKind::Conflict => tonic::Code::AlreadyExists,
            ErrorKind::Exhausted => tonic::Code::ResourceExhausted,
            ErrorKind::StaleToken | ErrorKind::NoLease => tonic::Code::FailedPrecondition,
            ErrorKind::NotLeader | ErrorKind::Unavailable => tonic::Code::Unavailable,
        }
    }
}

/// gRPC carries the full error as JSON in this metadata key, so clients get the typed error back.
pub const GRPC_ERROR_METADATA: &str = "hc-error-bin";

impl From<IpamError> for tonic::Status {
    fn from(e: IpamError) -> Self {
        let mut status = tonic::Status::new(e.grpc_code(), e.to_string());
        if let Ok(json) = serde_json::to_vec(&e) {
            status.metadata_mut().insert_bin(GRPC_ERROR_METADATA, tonic::metadata::MetadataValue::from_bytes(&json));
        }
        status
    }
}

impl IpamError {
    /// Recovers the typed error from a gRPC status produced by `From<IpamError>`; transport
    /// failures and statuses from elsewhere become `Unavailable` or `InvalidArgument`.
    pub fn from_status(status: &tonic::Status) -> IpamError {
        if let Some(v) = status.metadata().get_bin(GRPC_ERROR_METADATA)
            && let Ok(bytes) = v.to_bytes()
            && let Ok(e) = serde_json::from_slice::<IpamError>(&bytes)
        {
            return e;
        }
        match status.code() {
            tonic::Code::InvalidArgument => IpamError::invalid("request", status.message()),
            _ => IpamError::Unavailable { reason: format!("{}: {}", status.code(), status.message()) },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_survives_a_grpc_round_trip() {
        let e = IpamError::StaleToken { node: "n1".into(), presented: 3, current: 7 };
        let status: tonic::Status = e.clone().into();
        assert_eq!(status.code(), tonic::Code::FailedPrecondition);
        assert_eq!(IpamError::from_status(&status), e);
    }

    #[test]
    fn kind_name_matches_json_tag() {
        let e = IpamError::PoolExhausted { pool: "p".into() };
        let v = serde_json::to_value(&e).unwrap();
        assert_eq!(v["kind"], e.kind_name());
    }
}
