//! The plugin ↔ agent protocol, shared by the plugins (client side) and hc-agent (server side).
//!
//! # Transport
//!
//! A unix stream socket, by default [`DEFAULT_AGENT_SOCKET`], overridable per network with
//! `"agentSocket"` in the plugin's configuration. One request per connection:
//!
//! 1. the plugin connects, writes one [`Request`] as a single line of JSON terminated by `\n`,
//!    and half-closes its write side;
//! 2. the agent reads up to the newline (or EOF), at most [`MAX_MESSAGE_BYTES`], and writes one
//!    [`Reply`] as a single line of JSON terminated by `\n`, then closes.
//!
//! JSON text never contains a raw newline (serde_json escapes it inside strings), so a line
//! is a message. This also makes the socket easy to poke by hand:
//! `echo '{"protocol":1,"plugin":"hc-bridge","verb":"status","network":{…}}' | socat - UNIX:/run/hc-bridge/agent.sock`.
//!
//! # Compatibility
//!
//! The plugin binaries on a node and the agent are upgraded separately, so both sides ignore
//! fields they do not know and additions are backwards compatible. A change that is not
//! bumps [`PROTOCOL_VERSION`]; [`Request::decode`] refuses a version it does not speak with
//! a reply the plugin turns into CNI error 1.
//!
//! # Request
//!
//! `protocol` and `plugin` (`"hc-bridge"`: build the datapath; `"hcipam"`: allocate only,
//! another plugin builds the interface) are on every request; `verb` selects the rest.
//! `add`, `del` and `check` carry the attachment ([`AttachmentRequest`]); `status` only the
//! network; `gc` the network and the attachments the runtime still has.
//!
//! ```json
//! {"protocol":1,"plugin":"hc-bridge","verb":"add",
//!  "container_id":"3f6940ab5ab4","ifname":"eth0","netns":"/var/run/netns/cni-1234",
//!  "k8s":{"namespace":"shop","pod":"web-0","uid":"6f1c2a4e-4be1-4a5e-9d0e-2f3b5f0c9a11"},
//!  "network":{"name":"hc","cni_version":"1.0.0","config":{"pool":"web","vlan":100,"mtu":1500},
//!             "dns":{"nameservers":["10.1.0.53"]}},
//!  "runtime_config":{"ips":["10.1.0.7"],"mac":"02:42:0a:01:00:07"},
//!  "args":{"pool":"web"}}
//! ```
//!
//! - `netns` is absent on DEL when the runtime no longer has the namespace.
//! - `k8s` is present when CNI_ARGS named the pod (K8S_POD_NAMESPACE and K8S_POD_NAME;
//!   `uid` from K8S_POD_UID when given).
//! - `network.config` is the plugin's own configuration section after validation (pool,
//!   VLAN, MTU); `network.dns` the configuration's standard `dns`.
//! - `runtime_config` holds the runtime's capability arguments (`ips`, `mac`); `args` what
//!   the configuration's `args.cni` and CNI_ARGS `IP=` ask for. Requested addresses carry no
//!   prefix: the pool decides it.
//! - `prev_result` (CHECK and DEL, and ADD when chained after another plugin) is the result
//!   of the earlier ADD in the version-neutral shape of [`CniResult`].
//! - `gc` carries `valid_attachments: [{"container_id":…,"ifname":…}]`, taken from
//!   `cni.dev/valid-attachments`. The agent releases the node's attachments **of this network
//!   (`network.name`)** that are missing from the list, and nothing else. An empty list is
//!   meaningful ("none left"); the plugin refuses a GC whose configuration has no list at all.
//!
//! # Reply
//!
//! Either `{"ok": result}` or `{"err": {"code", "msg", "details"}}`:
//!
//! ```json
//! {"ok":{"interfaces":[{"name":"hc3f6940ab5ab4","mac":"5a:1e:0c:33:71:02"},
//!                      {"name":"eth0","mac":"02:42:0a:01:00:07","sandbox":"/var/run/netns/cni-1234"}],
//!        "ips":[{"interface":1,"address":"10.1.0.7/24","gateway":"10.1.0.1"}],
//!        "routes":[{"dst":"0.0.0.0/0","gw":"10.1.0.1"}],
//!        "dns":{"nameservers":["10.1.0.53"]}}}
//! {"ok":{}}
//! {"err":{"code":999,"msg":"pool web is exhausted: no free address left"}}
//! {"err":{"code":11,"msg":"the allocator has no quorum","details":"last leader 10.0.0.3:7001 2.1 s ago"}}
//! {"err":{"code":50,"msg":"this node has no lease"}}
//! ```
//!
//! `ok` carries the 1.1.0 result without `cniVersion` (the plugin shapes it to the
//! configuration's version); for `del`, `check`, `gc` and `status` it is `{}` and its contents
//! are ignored. `err.code` is a CNI error code and is passed to the runtime as is
//! (see [`crate::error::code`]): 7 for a request the agent finds invalid (unknown pool,
//! VLAN mismatch), 11 while the allocator has no quorum or the lease is being re-acquired,
//! 50/51 for STATUS, 999 for our own refusals (pool exhausted, address taken). DEL with
//! nothing to delete is `ok`.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::error::code;
use crate::result::{CniResult, Dns};

/// The protocol version this build speaks.
pub const PROTOCOL_VERSION: u32 = 1;

/// Where the agent listens unless a network's configuration says `"agentSocket"`.
pub const DEFAULT_AGENT_SOCKET: &str = "/run/hc-bridge/agent.sock";

/// Upper bound for one message in either direction, newline included. A request is a few
/// KiB (a `prevResult` dominates); a GC request lists every attachment on the node (110 pods
/// × ~120 bytes), far below this.
pub const MAX_MESSAGE_BYTES: usize = 1 << 20;

/// Which plugin sent the request, which decides what the agent does for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Plugin {
    /// The main plugin: the agent allocates and builds the datapath.
    #[serde(rename = "hc-bridge")]
    Bridge,
    /// The IPAM plugin under another main plugin: the agent allocates only.
    #[serde(rename = "hcipam")]
    Ipam,
}

impl Plugin {
    pub fn name(self) -> &'static str {
        match self {
            Plugin::Bridge => "hc-bridge",
            Plugin::Ipam => "hcipam",
        }
    }
}

/// One request, as the plugin sends it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    pub protocol: u32,
    pub plugin: Plugin,
    /// The verb and its arguments; `verb` sits next to `protocol` and `plugin` on the wire.
    #[serde(flatten)]
    pub call: Call,
}

/// A CNI verb with what the agent needs for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "verb", rename_all = "lowercase")]
pub enum Call {
    Add(AttachmentRequest),
    Del(AttachmentRequest),
    Check(AttachmentRequest),
    Status(StatusRequest),
    Gc(GcRequest),
}

impl Call {
    pub fn verb(&self) -> &'static str {
        match self {
            Call::Add(_) => "add",
            Call::Del(_) => "del",
            Call::Check(_) => "check",
            Call::Status(_) => "status",
            Call::Gc(_) => "gc",
        }
    }
}

/// ADD, DEL and CHECK: one attachment, identified by (container id, interface name).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttachmentRequest {
    pub container_id: String,
    pub ifname: String,
    /// The pod's network namespace path; absent only on DEL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub netns: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub k8s: Option<PodRef>,
    pub network: Network,
    #[serde(default)]
    pub runtime_config: RuntimeConfig,
    #[serde(default)]
    pub args: RequestArgs,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prev_result: Option<CniResult>,
}

/// The Kubernetes pod behind the attachment, from CNI_ARGS.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodRef {
    pub namespace: String,
    pub pod: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
}

/// The network the call is about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Network {
    /// The configuration's `name`: attachments and GC are scoped by it.
    pub name: String,
    /// The configuration's `cniVersion`, for the agent's logs; the plugin shapes results.
    pub cni_version: String,
    #[serde(default)]
    pub config: NetworkConfig,
    #[serde(default, skip_serializing_if = "Dns::is_empty")]
    pub dns: Dns,
}

/// The plugin's own configuration fields, validated. hcipam sets only `pool`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct NetworkConfig {
    /// The pool this network draws from when the pod asks for none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool: Option<String>,
    /// The VLAN this network is pinned to (1–4094): the agent refuses a pool on another VLAN.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vlan: Option<u16>,
    /// MTU of the pod's interface and its host-side peer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
}

/// Capability arguments the runtime passed in `runtimeConfig`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct RuntimeConfig {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ips: Vec<IpAddr>,
    /// Lowercase, colon-separated, unicast.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
}

/// What the pod asks for through the configuration's `args.cni` and CNI_ARGS.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct RequestArgs {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ips: Vec<IpAddr>,
}

/// STATUS: can the agent serve ADD on this network?
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusRequest {
    pub network: Network,
}

/// GC: release this network's attachments on this node that are not in `valid_attachments`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GcRequest {
    pub network: Network,
    pub valid_attachments: Vec<AttachmentKey>,
}

/// An attachment the runtime still has.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct AttachmentKey {
    pub container_id: String,
    pub ifname: String,
}

/// The agent's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Reply {
    Ok(CniResult),
    Err(AgentError),
}

/// A refusal, with the CNI error code the plugin reports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentError {
    pub code: u32,
    pub msg: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<String>,
}

impl AgentError {
    pub fn new(code: u32, msg: impl Into<String>) -> AgentError {
        AgentError { code, msg: msg.into(), details: None }
    }

    pub fn with_details(mut self, details: impl Into<String>) -> AgentError {
        self.details = Some(details.into());
        self
    }

    /// Code 7: the request names something that does not fit (unknown pool, VLAN mismatch).
    pub fn invalid_config(msg: impl Into<String>) -> AgentError {
        AgentError::new(code::INVALID_CONFIG, msg)
    }

    /// Code 11: transient; the runtime retries (no quorum, lease being re-acquired).
    pub fn try_again_later(msg: impl Into<String>) -> AgentError {
        AgentError::new(code::TRY_AGAIN_LATER, msg)
    }

    /// Code 50 (STATUS): cannot serve ADD (no lease, no quorum, pools exhausted).
    pub fn not_available(msg: impl Into<String>) -> AgentError {
        AgentError::new(code::NOT_AVAILABLE, msg)
    }

    /// Code 51 (STATUS): not available, and existing pods may have limited connectivity.
    pub fn limited_connectivity(msg: impl Into<String>) -> AgentError {
        AgentError::new(code::LIMITED_CONNECTIVITY, msg)
    }

    /// Code 999: hc-bridge's own refusals ("pool web is exhausted").
    pub fn refused(msg: impl Into<String>) -> AgentError {
        AgentError::new(code::HC_BRIDGE, msg)
    }
}

/// Why a message could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    #[error("message is larger than {MAX_MESSAGE_BYTES} bytes")]
    TooLarge,
    #[error("malformed message: {reason}")]
    Malformed { reason: String },
    #[error("protocol version {got} is not supported; this side speaks {PROTOCOL_VERSION}")]
    UnsupportedVersion { got: u32 },
}

impl ProtocolError {
    /// The reply an agent sends for a request it cannot decode.
    pub fn to_reply(&self) -> Reply {
        let code = match self {
            ProtocolError::UnsupportedVersion { .. } => code::INCOMPATIBLE_VERSION,
            ProtocolError::TooLarge | ProtocolError::Malformed { .. } => code::DECODE_FAILURE,
        };
        Reply::Err(AgentError::new(code, format!("hc-agent cannot read the request: {self}")))
    }
}

impl Request {
    pub fn new(plugin: Plugin, call: Call) -> Request {
        Request { protocol: PROTOCOL_VERSION, plugin, call }
    }

    /// One line of JSON, newline included.
    pub fn encode(&self) -> Vec<u8> {
        encode_line(self)
    }

    /// Decodes one message (with or without its newline) and checks the protocol version first,
    /// so a request from a newer plugin is refused as such rather than as malformed.
    pub fn decode(message: &[u8]) -> Result<Request, ProtocolError> {
        #[derive(Deserialize)]
        struct Header {
            protocol: u32,
        }
        let message = check_size(message)?;
        let header: Header = serde_json::from_slice(message).map_err(malformed)?;
        if header.protocol != PROTOCOL_VERSION {
            return Err(ProtocolError::UnsupportedVersion { got: header.protocol });
        }
        serde_json::from_slice(message).map_err(malformed)
    }
}

impl Reply {
    /// One line of JSON, newline included.
    pub fn encode(&self) -> Vec<u8> {
        encode_line(self)
    }

    pub fn decode(message: &[u8]) -> Result<Reply, ProtocolError> {
        serde_json::from_slice(check_size(message)?).map_err(malformed)
    }
}

fn encode_line<T: Serialize>(value: &T) -> Vec<u8> {
    // The protocol types hold strings, integers, addresses and maps with string keys, which
    // always serialize.
    let mut line = serde_json::to_vec(value).unwrap_or_default();
    line.push(b'\n');
    line
}

fn check_size(message: &[u8]) -> Result<&[u8], ProtocolError> {
    if message.len() > MAX_MESSAGE_BYTES {
        return Err(ProtocolError::TooLarge);
    }
    Ok(message.strip_suffix(b"\n").unwrap_or(message))
}

fn malformed(e: serde_json::Error) -> ProtocolError {
    ProtocolError::Malformed { reason: e.to_string() }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn network() -> Network {
        Network {
            name: "hc".into(),
            cni_version: "1.0.0".into(),
            config: NetworkConfig { pool: Some("web".into()), vlan: Some(100), mtu: Some(1500) },
            dns: Dns { nameservers: vec!["10.1.0.53".into()], ..Dns::default() },
        }
    }

    fn add() -> Request {
        Request::new(
            Plugin::Bridge,
            Call::Add(AttachmentRequest {
                container_id: "3f6940ab5ab4".into(),
                ifname: "eth0".into(),
                netns: Some("/var/run/netns/cni-1234".into()),
                k8s: Some(PodRef {
                    namespace: "shop".into(),
                    pod: "web-0".into(),
                    uid: Some("6f1c2a4e-4be1-4a5e-9d0e-2f3b5f0c9a11".into()),
                }),
                network: network(),
                runtime_config: RuntimeConfig {
                    ips: vec!["10.1.0.7".parse().expect("ip")],
                    mac: Some("02:42:0a:01:00:07".into()),
                },
                args: RequestArgs { pool: Some("web".into()), ips: vec![] },
                prev_result: None,
            }),
        )
    }

    /// The wire form is part of the contract with hc-agent: this pins it (it is the example
    /// in the module documentation).
    #[test]
    fn add_request_wire_form() {
        let wire: serde_json::Value = serde_json::from_slice(&add().encode()).expect("JSON");
        assert_eq!(
            wire,
            json!({"protocol":1,"plugin":"hc-bridge","verb":"add",
                "container_id":"3f6940ab5ab4","ifname":"eth0","netns":"/var/run/netns/cni-1234",
                "k8s":{"namespace":"shop","pod":"web-0","uid":"6f1c2a4e-4be1-4a5e-9d0e-2f3b5f0c9a11"},
                "network":{"name":"hc","cni_version":"1.0.0","config":{"pool":"web","vlan":100,"mtu":1500},
                           "dns":{"nameservers":["10.1.0.53"]}},
                "runtime_config":{"ips":["10.1.0.7"],"mac":"02:42:0a:01:00:07"},
                "args":{"pool":"web"}})
        );
    }

    #[test]
    fn every_verb_round_trips_as_one_line() {
        let gc = Request::new(
            Plugin::Ipam,
            Call::Gc(GcRequest {
                network: network(),
                valid_attachments: vec![AttachmentKey { container_id: "c1".into(), ifname: "eth0".into() }],
            }),
        );
        let status = Request::new(Plugin::Bridge, Call::Status(StatusRequest { network: network() }));
        let mut del = add();
        if let Call::Add(a) = del.call {
            del.call = Call::Del(AttachmentRequest { netns: None, ..a });
        }
        for request in [add(), del, gc, status] {
            let line = request.encode();
            assert_eq!(line.iter().filter(|b| **b == b'\n').count(), 1);
            assert_eq!(line.last(), Some(&b'\n'));
            assert_eq!(Request::decode(&line).expect("decodes"), request);
        }
    }

    #[test]
    fn status_and_gc_wire_forms() {
        let status = Request::new(Plugin::Bridge, Call::Status(StatusRequest { network: network() }));
        let wire: serde_json::Value = serde_json::from_slice(&status.encode()).expect("JSON");
        assert_eq!(wire["verb"], "status");
        assert_eq!(wire["network"]["name"], "hc");
        let gc = Request::new(
            Plugin::Bridge,
            Call::Gc(GcRequest {
                network: network(),
                valid_attachments: vec![AttachmentKey { container_id: "c1".into(), ifname: "eth0".into() }],
            }),
        );
        let wire: serde_json::Value = serde_json::from_slice(&gc.encode()).expect("JSON");
        assert_eq!(wire["verb"], "gc");
        assert_eq!(wire["valid_attachments"], json!([{"container_id":"c1","ifname":"eth0"}]));
    }

    #[test]
    fn replies_have_ok_or_err() {
        let ok = Reply::Ok(CniResult::default());
        assert_eq!(ok.encode(), b"{\"ok\":{}}\n");
        let err = Reply::Err(AgentError::refused("pool web is exhausted").with_details("254 of 254 used"));
        assert_eq!(
            serde_json::from_slice::<serde_json::Value>(&err.encode()).expect("JSON"),
            json!({"err":{"code":999,"msg":"pool web is exhausted","details":"254 of 254 used"}})
        );
        for reply in [ok, err] {
            assert_eq!(Reply::decode(&reply.encode()).expect("decodes"), reply);
        }
    }

    /// Plugins and agent are upgraded separately: a field added on one side must not break the other.
    #[test]
    fn unknown_fields_are_ignored_both_ways() {
        let mut wire: serde_json::Value = serde_json::from_slice(&add().encode()).expect("JSON");
        wire["added_in_a_later_version"] = json!({"x": 1});
        wire["network"]["config"]["future"] = json!(true);
        let decoded = Request::decode(wire.to_string().as_bytes()).expect("decodes");
        assert_eq!(decoded, add());
        let reply = Reply::decode(br#"{"ok":{"ips":[{"address":"10.0.0.2/24"}],"future":1}}"#).expect("decodes");
        assert!(matches!(reply, Reply::Ok(r) if r.ips.len() == 1));
    }

    #[test]
    fn another_protocol_version_is_refused_with_code_1() {
        let err = Request::decode(br#"{"protocol":2,"plugin":"hc-bridge","verb":"teleport"}"#).expect_err("refused");
        assert_eq!(err, ProtocolError::UnsupportedVersion { got: 2 });
        assert!(matches!(err.to_reply(), Reply::Err(AgentError { code: 1, .. })));
    }

    #[test]
    fn malformed_and_oversized_requests_are_refused() {
        for bad in [&b"{"[..], b"{\"protocol\":1}", b"{\"protocol\":1,\"plugin\":\"hc-bridge\",\"verb\":\"nope\"}"] {
            let err = Request::decode(bad).expect_err("refused");
            assert!(matches!(err, ProtocolError::Malformed { .. }), "{err:?}");
            assert!(matches!(err.to_reply(), Reply::Err(AgentError { code: 6, .. })));
        }
        let huge = vec![b' '; MAX_MESSAGE_BYTES + 1];
        assert_eq!(Request::decode(&huge), Err(ProtocolError::TooLarge));
    }
}
