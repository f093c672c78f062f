//! Every way a plugin call fails, and its one mapping to a CNI error code.
//!
//! The error JSON (`{cniVersion, code, msg, details}`) goes to stdout and the process exits
//! non-zero; the runtime shows `msg` to the user (podman prints it, kubelet records it in the
//! pod's events), so messages name the field, variable or pool at fault.

use std::path::PathBuf;

use serde::Serialize;

use crate::version::CniVersion;

/// CNI error codes. 1–99 are the specification's well-known codes; 999 is ours.
pub mod code {
    /// The configuration's `cniVersion` is missing or unsupported, or the verb does not exist in it.
    pub const INCOMPATIBLE_VERSION: u32 = 1;
    /// A CNI_* environment variable is missing or malformed; the message names it.
    pub const INVALID_ENVIRONMENT: u32 = 4;
    /// Reading the configuration from stdin failed.
    pub const IO_FAILURE: u32 = 5;
    /// The configuration (or another JSON document) could not be decoded.
    pub const DECODE_FAILURE: u32 = 6;
    /// The configuration decoded but a field is invalid; the message names the field.
    pub const INVALID_CONFIG: u32 = 7;
    /// A transient condition: the agent is unreachable or the allocator has no quorum.
    /// The runtime retries.
    pub const TRY_AGAIN_LATER: u32 = 11;
    /// STATUS: the plugin cannot serve ADD (agent down, no lease, no quorum, pools exhausted).
    pub const NOT_AVAILABLE: u32 = 50;
    /// STATUS: not available, and existing pods may have limited connectivity (e.g. the
    /// uplink or the bridge is down).
    pub const LIMITED_CONNECTIVITY: u32 = 51;
    /// hc-bridge's own refusals that no well-known code describes ("pool web is exhausted",
    /// "no pool matches this pod", "address 10.0.0.5 is held by …").
    pub const HC_BRIDGE: u32 = 999;
}

/// Why a plugin call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CniError {
    #[error("CNI_COMMAND is not set")]
    MissingCommand,
    #[error("CNI_COMMAND {command:?} is not one of ADD, DEL, CHECK, STATUS, GC, VERSION")]
    UnknownCommand { command: String },
    #[error("invalid environment variables {}: {reason}", vars.join(", "))]
    InvalidEnvironment { vars: Vec<String>, reason: String },
    #[error("cannot read the network configuration from stdin: {reason}")]
    Stdin { reason: String },
    #[error("cannot decode the network configuration: {reason}")]
    Decode { reason: String },
    #[error("the network configuration has no cniVersion")]
    MissingVersion,
    #[error("CNI version {version:?} is not supported (supported: 0.3.0, 0.3.1, 0.4.0, 1.0.0, 1.1.0)")]
    UnsupportedVersion { version: String },
    #[error("{verb} needs a network configuration of CNI version {needs} or later; this one is {version}")]
    VerbNotInVersion { verb: &'static str, version: CniVersion, needs: CniVersion },
    #[error("invalid network configuration: {field}: {reason}")]
    InvalidConfig { field: String, reason: String },
    #[error("hc-agent is unreachable at {}: {reason}", socket.display())]
    AgentUnreachable { socket: PathBuf, reason: String },
    #[error("hc-agent at {} did not answer within {seconds} s", socket.display())]
    AgentTimeout { socket: PathBuf, seconds: u64 },
    /// STATUS while the agent cannot be asked: the plugin cannot serve ADD.
    #[error("hc-bridge is not available: {reason}")]
    NotAvailable { reason: String },
    #[error("hc-agent sent a reply this plugin cannot read: {reason}")]
    BadReply { reason: String },
    /// The agent's own answer, passed through with its code.
    #[error("{msg}")]
    Agent { code: u32, msg: String, details: Option<String> },
}

impl CniError {
    pub fn invalid_config(field: impl Into<String>, reason: impl Into<String>) -> CniError {
        CniError::InvalidConfig { field: field.into(), reason: reason.into() }
    }

    pub fn invalid_env(var: &str, reason: impl Into<String>) -> CniError {
        CniError::InvalidEnvironment { vars: vec![var.to_owned()], reason: reason.into() }
    }

    pub fn code(&self) -> u32 {
        match self {
            CniError::MissingCommand | CniError::UnknownCommand { .. } | CniError::InvalidEnvironment { .. } => {
                code::INVALID_ENVIRONMENT
            }
            CniError::Stdin { .. } => code::IO_FAILURE,
            CniError::Decode { .. } => code::DECODE_FAILURE,
            CniError::MissingVersion | CniError::UnsupportedVersion { .. } | CniError::VerbNotInVersion { .. } => {
                code::INCOMPATIBLE_VERSION
            }
            CniError::InvalidConfig { .. } => code::INVALID_CONFIG,
            CniError::AgentUnreachable { .. } | CniError::AgentTimeout { .. } => code::TRY_AGAIN_LATER,
            CniError::NotAvailable { .. } => code::NOT_AVAILABLE,
            CniError::BadReply { .. } => code::HC_BRIDGE,
            // An agent must never send 0 (that would read as success); treat it as ours.
            CniError::Agent { code, .. } if *code == 0 => code::HC_BRIDGE,
            CniError::Agent { code, .. } => *code,
        }
    }

    fn details(&self) -> Option<&str> {
        match self {
            CniError::Agent { details, .. } => details.as_deref(),
            CniError::AgentUnreachable { .. } | CniError::AgentTimeout { .. } => {
                Some("the runtime should retry; check that hc-agent runs on this node")
            }
            _ => None,
        }
    }

    /// The error JSON printed on stdout, tagged with the configuration's version when known.
    pub fn to_json(&self, version: Option<CniVersion>) -> String {
        #[derive(Serialize)]
        struct ErrorJson<'a> {
            #[serde(rename = "cniVersion")]
            cni_version: &'static str,
            code: u32,
            msg: String,
            #[serde(skip_serializing_if = "Option::is_none")]
            details: Option<&'a str>,
        }
        let body = ErrorJson {
            cni_version: version.unwrap_or(CniVersion::CURRENT).as_str(),
            code: self.code(),
            msg: self.to_string(),
            details: self.details(),
        };
        // Serializing a struct of strings and integers cannot fail; keep a fallback anyway.
        serde_json::to_string(&body).unwrap_or_else(|_| {
            format!(r#"{{"cniVersion":"{}","code":{},"msg":"error"}}"#, CniVersion::CURRENT, self.code())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json(e: &CniError) -> serde_json::Value {
        serde_json::from_str(&e.to_json(Some(CniVersion::V0_4_0))).expect("valid JSON")
    }

    #[test]
    fn each_kind_maps_to_its_spec_code() {
        let cases = [
            (CniError::MissingCommand, 4),
            (CniError::invalid_env("CNI_IFNAME", "missing"), 4),
            (CniError::Stdin { reason: "x".into() }, 5),
            (CniError::Decode { reason: "x".into() }, 6),
            (CniError::MissingVersion, 1),
            (CniError::UnsupportedVersion { version: "0.2.0".into() }, 1),
            (CniError::VerbNotInVersion { verb: "GC", version: CniVersion::V1_0_0, needs: CniVersion::V1_1_0 }, 1),
            (CniError::invalid_config("mtu", "too big"), 7),
            (CniError::AgentUnreachable { socket: "/x".into(), reason: "gone".into() }, 11),
            (CniError::AgentTimeout { socket: "/x".into(), seconds: 1 }, 11),
            (CniError::NotAvailable { reason: "x".into() }, 50),
            (CniError::BadReply { reason: "x".into() }, 999),
            (CniError::Agent { code: 51, msg: "uplink down".into(), details: None }, 51),
            (CniError::Agent { code: 0, msg: "confused agent".into(), details: None }, 999),
        ];
        for (e, want) in cases {
            assert_eq!(e.code(), want, "{e:?}");
            assert_eq!(json(&e)["code"], want, "{e:?}");
        }
    }

    #[test]
    fn error_json_has_the_spec_shape() {
        let e = CniError::Agent { code: 999, msg: "pool web is exhausted".into(), details: Some("254 of 254".into()) };
        assert_eq!(
            json(&e),
            serde_json::json!({"cniVersion": "0.4.0", "code": 999, "msg": "pool web is exhausted", "details": "254 of 254"})
        );
        let e = CniError::invalid_config("vlan", "5000 is outside 1..=4094");
        let v: serde_json::Value = serde_json::from_str(&e.to_json(None)).expect("valid JSON");
        assert_eq!(
            v,
            serde_json::json!({"cniVersion": "1.1.0", "code": 7, "msg": "invalid network configuration: vlan: 5000 is outside 1..=4094"})
        );
    }

    #[test]
    fn environment_errors_name_the_variables() {
        let e = CniError::InvalidEnvironment {
            vars: vec!["CNI_NETNS".into(), "CNI_IFNAME".into()],
            reason: "not set".into(),
        };
        assert_eq!(e.to_string(), "invalid environment variables CNI_NETNS, CNI_IFNAME: not set");
    }
}
