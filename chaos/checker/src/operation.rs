//! One recorded operation: who called what, when, and what came back.
//!
//! On the wire an operation is flat (`outcome` plus an optional `result` whose shape depends on
//! the call); in Rust the result is typed and checked against the call when the line is parsed.

use std::fmt;
use std::net::IpAddr;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize};

/// The holder of an address. Two owners are the same holder only if all three fields match.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Owner {
    pub container_id: String,
    pub interface: String,
    pub node: String,
}

impl Owner {
    pub fn attachment(&self) -> Attachment {
        Attachment { container_id: self.container_id.clone(), interface: self.interface.clone() }
    }
}

impl fmt::Display for Owner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}@{}", self.container_id, self.interface, self.node)
    }
}

/// `(container_id, interface)`: what a reconcile names as still valid on its node.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Attachment {
    pub container_id: String,
    pub interface: String,
}

/// `(node, token)` carried by a node-scoped write.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fence {
    pub node: String,
    pub token: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum ReleaseTarget {
    /// Release every address this owner holds (CNI DEL).
    Owner(Owner),
    /// Release whoever holds this address (operator).
    Address(IpAddr),
}

/// What the client asked for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Call {
    Allocate {
        owner: Owner,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pool: Option<String>,
        /// An explicit address: if the call succeeds it returns exactly this one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        requested: Option<IpAddr>,
        /// A reservation key: every successful call with this key returns the same address.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reservation: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        fence: Option<Fence>,
    },
    Release {
        target: ReleaseTarget,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        fence: Option<Fence>,
    },
    /// A lease grant: ok returns the node's new fencing token.
    Grant { node: String },
    /// An observed lease expiry. Allocations are quarantined, not freed, so it changes no holder.
    Expire { node: String },
    /// Who holds `address`.
    Read { address: IpAddr },
    /// The node is gone: every allocation of an owner on it is released.
    NodeGone { node: String },
    /// Releases every allocation of `fence.node` whose attachment is not in `valid`.
    Reconcile { fence: Fence, valid: Vec<Attachment> },
}

impl Call {
    /// The kind as written in the history (`allocate`, `node_gone`, …).
    pub fn kind(&self) -> &'static str {
        match self {
            Call::Allocate { .. } => "allocate",
            Call::Release { .. } => "release",
            Call::Grant { .. } => "grant",
            Call::Expire { .. } => "expire",
            Call::Read { .. } => "read",
            Call::NodeGone { .. } => "node_gone",
            Call::Reconcile { .. } => "reconcile",
        }
    }

    /// The fence of a write that carries one.
    pub fn fence(&self) -> Option<&Fence> {
        match self {
            Call::Allocate { fence, .. } | Call::Release { fence, .. } => fence.as_ref(),
            Call::Reconcile { fence, .. } => Some(fence),
            _ => None,
        }
    }
}

/// What a successful call returned. Which variant goes with which call is fixed (see
/// [`Operation::check_result`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OkResult {
    /// `allocate`.
    Allocated { address: IpAddr },
    /// `release`, `reconcile`, and `node_gone` when it lists what it released.
    Released { released: Vec<IpAddr> },
    /// `grant`.
    Granted { token: u64 },
    /// `read`: `None` when the address is free.
    Read { holder: Option<Owner> },
    /// `expire`, and `node_gone` without a list.
    Done,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Ok(OkResult),
    /// The call definitely did not take effect (a typed refusal, not a timeout).
    Fail {
        error: Option<String>,
    },
    /// The client gave up (timeout, lost connection): the call may take effect at any time
    /// after its invocation, even after `complete_ns`.
    Unknown {
        error: Option<String>,
    },
}

impl Outcome {
    pub fn is_ok(&self) -> bool {
        matches!(self, Outcome::Ok(_))
    }
}

/// One call and its outcome. `invoke_ns` and `complete_ns` come from one monotonic clock;
/// for an unknown outcome `complete_ns` is when the client stopped waiting.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "RawOperation", into = "RawOperation")]
pub struct Operation {
    pub id: u64,
    /// The client or agent that made the call.
    pub process: String,
    pub invoke_ns: u64,
    pub complete_ns: u64,
    pub call: Call,
    pub outcome: Outcome,
}

impl Operation {
    /// Whether an ok result has the shape its call returns.
    pub fn check_result(&self) -> Result<(), String> {
        let Outcome::Ok(result) = &self.outcome else { return Ok(()) };
        let fits = matches!(
            (&self.call, result),
            (Call::Allocate { .. }, OkResult::Allocated { .. })
                | (Call::Release { .. } | Call::Reconcile { .. }, OkResult::Released { .. })
                | (Call::NodeGone { .. }, OkResult::Released { .. } | OkResult::Done)
                | (Call::Grant { .. }, OkResult::Granted { .. })
                | (Call::Read { .. }, OkResult::Read { .. })
                | (Call::Expire { .. }, OkResult::Done)
        );
        if fits { Ok(()) } else { Err(format!("operation {}: {} cannot return {result:?}", self.id, self.call.kind())) }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Status {
    Ok,
    Fail,
    Unknown,
}

/// The wire form of [`Operation`].
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOperation {
    id: u64,
    process: String,
    invoke_ns: u64,
    complete_ns: u64,
    call: Call,
    outcome: Status,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    result: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AddressResult {
    address: IpAddr,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReleasedResult {
    released: Vec<IpAddr>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenResult {
    token: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HolderResult {
    /// Required: `null` means free; a missing field is a malformed line, not a free address.
    #[serde(deserialize_with = "present_option")]
    holder: Option<Owner>,
}

fn present_option<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Owner>, D::Error> {
    Option::<Owner>::deserialize(d)
}

fn parse<T: DeserializeOwned>(kind: &str, value: Option<serde_json::Value>) -> Result<T, String> {
    let value = value.ok_or_else(|| format!("ok {kind} needs a result"))?;
    serde_json::from_value(value).map_err(|e| format!("ok {kind} result: {e}"))
}

impl TryFrom<RawOperation> for Operation {
    type Error = String;

    fn try_from(raw: RawOperation) -> Result<Self, String> {
        let kind = raw.call.kind();
        let outcome = match raw.outcome {
            Status::Fail | Status::Unknown if raw.result.is_some() => {
                return Err(format!("operation {}: only an ok outcome has a result", raw.id));
            }
            Status::Fail => Outcome::Fail { error: raw.error },
            Status::Unknown => Outcome::Unknown { error: raw.error },
            Status::Ok => Outcome::Ok(match &raw.call {
                Call::Allocate { .. } => {
                    OkResult::Allocated { address: parse::<AddressResult>(kind, raw.result)?.address }
                }
                Call::Release { .. } | Call::Reconcile { .. } => {
                    OkResult::Released { released: parse::<ReleasedResult>(kind, raw.result)?.released }
                }
                Call::NodeGone { .. } if raw.result.is_none() => OkResult::Done,
                Call::NodeGone { .. } => {
                    OkResult::Released { released: parse::<ReleasedResult>(kind, raw.result)?.released }
                }
                Call::Grant { .. } => OkResult::Granted { token: parse::<TokenResult>(kind, raw.result)?.token },
                Call::Read { .. } => OkResult::Read { holder: parse::<HolderResult>(kind, raw.result)?.holder },
                Call::Expire { .. } if raw.result.is_none() => OkResult::Done,
                Call::Expire { .. } => return Err(format!("operation {}: ok expire has no result", raw.id)),
            }),
        };
        Ok(Operation {
            id: raw.id,
            process: raw.process,
            invoke_ns: raw.invoke_ns,
            complete_ns: raw.complete_ns,
            call: raw.call,
            outcome,
        })
    }
}

impl From<Operation> for RawOperation {
    fn from(op: Operation) -> Self {
        let (outcome, result, error) = match op.outcome {
            Outcome::Fail { error } => (Status::Fail, None, error),
            Outcome::Unknown { error } => (Status::Unknown, None, error),
            Outcome::Ok(result) => {
                let value = match result {
                    OkResult::Allocated { address } => Some(serde_json::json!({ "address": address })),
                    OkResult::Released { released } => Some(serde_json::json!({ "released": released })),
                    OkResult::Granted { token } => Some(serde_json::json!({ "token": token })),
                    OkResult::Read { holder } => Some(serde_json::json!({ "holder": holder })),
                    OkResult::Done => None,
                };
                (Status::Ok, value, None)
            }
        };
        RawOperation {
            id: op.id,
            process: op.process,
            invoke_ns: op.invoke_ns,
            complete_ns: op.complete_ns,
            call: op.call,
            outcome,
            result,
            error,
        }
    }
}
