//! The network configuration on stdin: decoded, then validated field by field, before anything
//! is sent to the agent.
//!
//! hc-bridge (`"type": "hc-bridge"`) reads its fields at the top level:
//!
//! ```json
//! {"cniVersion":"1.0.0","name":"hc","type":"hc-bridge",
//!  "pool":"web","vlan":100,"mtu":1500,
//!  "agentSocket":"/run/hc-bridge/agent.sock","timeoutSeconds":30}
//! ```
//!
//! hcipam reads its fields from the `ipam` section of the main plugin's configuration and
//! leaves every other top-level key to that plugin:
//!
//! ```json
//! {"cniVersion":"1.0.0","name":"ref","type":"bridge","bridge":"hcbr0",
//!  "ipam":{"type":"hcipam","pool":"web","agentSocket":"/run/hc-bridge/agent.sock"}}
//! ```
//!
//! | field | meaning | valid |
//! |---|---|---|
//! | `pool` | the pool this network draws from when the pod asks for none | `[a-z0-9]([-a-z0-9.]*[a-z0-9])?`, ≤ 63 |
//! | `vlan` (hc-bridge) | pins the network to a VLAN; the agent refuses a pool on another | 1–4094 |
//! | `mtu` (hc-bridge) | MTU of the pod's interface and its host peer | 68–65535 |
//! | `agentSocket` | the agent's socket | absolute path, ≤ 107 bytes (`sun_path`) |
//! | `timeoutSeconds` | how long to wait for the agent's answer (default 30) | 1–600 |
//!
//! Also read, from the top level in both plugins: `name` (required), `dns`, `runtimeConfig`
//! (`ips`, `mac`; other capabilities are the runtime's and are ignored), `args.cni` (`pool`,
//! `ips`; the rest of `args` is ignored, as the spec asks), `prevResult`, and
//! `cni.dev/valid-attachments` (GC; `cni.dev/attachments`, which libcni also sends for
//! compatibility with an earlier draft, is the fallback).
//!
//! Unknown keys in our section (hc-bridge's top level, hcipam's `ipam`) are an error (code 7)
//! naming the key, so a typo like `"vlanid"` fails the first ADD instead of silently giving
//! pods the wrong VLAN. The standard keys (`capabilities`, `cniVersions`) and runtime-injected
//! `cni.dev/*` keys are accepted.

use std::net::IpAddr;
use std::ops::RangeInclusive;
use std::path::PathBuf;
use std::time::Duration;

use ipnet::IpNet;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::client::AgentTarget;
use crate::error::CniError;
use crate::protocol::{
    AttachmentKey, DEFAULT_AGENT_SOCKET, Network, NetworkConfig, Plugin, RequestArgs, RuntimeConfig,
};
use crate::result::{CniResult, Dns};
use crate::version::CniVersion;

/// How long a plugin waits for the agent unless the configuration says `timeoutSeconds`.
/// An ADD normally takes milliseconds; the allocator electing a leader takes seconds. The
/// runtime's own deadline (kubelet: 4 minutes) is much longer.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

const BRIDGE_KEYS: &str = "agentSocket, mtu, pool, timeoutSeconds, vlan";
const IPAM_KEYS: &str = "type, agentSocket, pool, timeoutSeconds";

/// A validated configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginConfig {
    pub cni_version: CniVersion,
    pub name: String,
    pub agent: AgentTarget,
    pub network: NetworkConfig,
    pub dns: Dns,
    pub runtime_config: RuntimeConfig,
    pub args: RequestArgs,
    pub prev_result: Option<CniResult>,
    /// `None` when the configuration has no list, which is not the same as an empty list.
    pub valid_attachments: Option<Vec<AttachmentKey>>,
}

impl PluginConfig {
    /// The network as the protocol describes it.
    pub fn network(&self) -> Network {
        Network {
            name: self.name.clone(),
            cni_version: self.cni_version.as_str().to_owned(),
            config: self.network.clone(),
            dns: self.dns.clone(),
        }
    }
}

/// A configuration that is a JSON object with a supported `cniVersion`, not yet validated.
#[derive(Debug, Clone, PartialEq)]
pub struct RawConfig {
    pub version: CniVersion,
    fields: Map<String, Value>,
}

/// First step: JSON (code 6) and `cniVersion` (code 1). The version is known from here on, so
/// later errors carry it.
pub fn decode(bytes: &[u8]) -> Result<RawConfig, CniError> {
    let value: Value = serde_json::from_slice(bytes).map_err(|e| CniError::Decode { reason: e.to_string() })?;
    let Value::Object(mut fields) = value else {
        return Err(CniError::Decode { reason: "the configuration is not a JSON object".into() });
    };
    let version = match fields.remove("cniVersion") {
        None | Some(Value::Null) => return Err(CniError::MissingVersion),
        Some(Value::String(s)) => CniVersion::parse(&s).ok_or(CniError::UnsupportedVersion { version: s })?,
        Some(other) => return Err(CniError::Decode { reason: format!("cniVersion {other} is not a string") }),
    };
    Ok(RawConfig { version, fields })
}

impl RawConfig {
    /// Second step: every field (code 7).
    pub fn validate(self, plugin: Plugin) -> Result<PluginConfig, CniError> {
        let RawConfig { version, mut fields } = self;
        let common = Common::take(&mut fields)?;
        let own = match plugin {
            Plugin::Bridge => {
                if fields.contains_key("ipam") {
                    return Err(CniError::invalid_config(
                        "ipam",
                        "hc-bridge takes its addresses from hc-agent and has no ipam section; \
                         to use hc-bridge pools under another plugin, give that plugin \"ipam\": {\"type\": \"hcipam\"}",
                    ));
                }
                required::<String>(&mut fields, "type", "type")?;
                fields.remove("capabilities");
                fields.remove("cniVersions");
                let own = Own::take(&mut fields, "", true)?;
                reject_unknown(&fields, "", BRIDGE_KEYS, |key| key.starts_with("cni.dev/"))?;
                own
            }
            Plugin::Ipam => {
                let mut ipam = match fields.remove("ipam") {
                    Some(Value::Object(ipam)) => ipam,
                    None | Some(Value::Null) => return Err(CniError::invalid_config("ipam", "missing")),
                    Some(other) => return Err(CniError::invalid_config("ipam", format!("{other} is not an object"))),
                };
                required::<String>(&mut ipam, "type", "ipam.type")?;
                let own = Own::take(&mut ipam, "ipam.", false)?;
                reject_unknown(&ipam, "ipam.", IPAM_KEYS, |_| false)?;
                // Every other top-level key belongs to the main plugin.
                own
            }
        };
        Ok(PluginConfig {
            cni_version: version,
            name: common.name,
            agent: own.agent,
            network: own.network,
            dns: common.dns,
            runtime_config: common.runtime_config,
            args: common.args,
            prev_result: common.prev_result,
            valid_attachments: common.valid_attachments,
        })
    }
}

/// The standard fields both plugins read from the top level.
struct Common {
    name: String,
    dns: Dns,
    runtime_config: RuntimeConfig,
    args: RequestArgs,
    prev_result: Option<CniResult>,
    valid_attachments: Option<Vec<AttachmentKey>>,
}

impl Common {
    fn take(fields: &mut Map<String, Value>) -> Result<Common, CniError> {
        let name: String = required(fields, "name", "name")?;
        validate_network_name(&name).map_err(|reason| CniError::invalid_config("name", reason))?;

        let dns: Dns = take(fields, "dns", "dns")?.unwrap_or_default();
        for (i, ns) in dns.nameservers.iter().enumerate() {
            ns.parse::<IpAddr>().map_err(|_| {
                CniError::invalid_config(format!("dns.nameservers[{i}]"), format!("{ns:?} is not an address"))
            })?;
        }

        let mut runtime_config = RuntimeConfig::default();
        if let Some(mut rc) = take_object(fields, "runtimeConfig", "runtimeConfig")? {
            runtime_config.ips = take_ips(&mut rc, "ips", "runtimeConfig.ips")?;
            if let Some(mac) = take::<String>(&mut rc, "mac", "runtimeConfig.mac")? {
                let mac =
                    normalize_mac(&mac).map_err(|reason| CniError::invalid_config("runtimeConfig.mac", reason))?;
                runtime_config.mac = Some(mac);
            }
        }

        let mut args = RequestArgs::default();
        // Only `args.cni` is ours; the rest of `args` is the runtime's.
        if let Some(mut a) = take_object(fields, "args", "args")?
            && let Some(mut cni) = take_object(&mut a, "cni", "args.cni")?
        {
            args.ips = take_ips(&mut cni, "ips", "args.cni.ips")?;
            if let Some(pool) = take::<String>(&mut cni, "pool", "args.cni.pool")? {
                validate_pool_name(&pool).map_err(|reason| CniError::invalid_config("args.cni.pool", reason))?;
                args.pool = Some(pool);
            }
        }

        let prev_result = take::<CniResult>(fields, "prevResult", "prevResult")?;

        #[derive(Deserialize)]
        struct GcAttachment {
            #[serde(rename = "containerID")]
            container_id: String,
            ifname: String,
        }
        let mut attachments =
            take::<Vec<GcAttachment>>(fields, "cni.dev/valid-attachments", "cni.dev/valid-attachments")?;
        if attachments.is_none() {
            attachments = take(fields, "cni.dev/attachments", "cni.dev/attachments")?;
        }
        let valid_attachments = attachments.map(|list| {
            list.into_iter().map(|a| AttachmentKey { container_id: a.container_id, ifname: a.ifname }).collect()
        });

        Ok(Common { name, dns, runtime_config, args, prev_result, valid_attachments })
    }
}

/// Our own fields: hc-bridge's top level or hcipam's `ipam` section.
struct Own {
    agent: AgentTarget,
    network: NetworkConfig,
}

impl Own {
    fn take(fields: &mut Map<String, Value>, prefix: &str, datapath: bool) -> Result<Own, CniError> {
        let path = |key: &str| format!("{prefix}{key}");
        let socket = match take::<String>(fields, "agentSocket", &path("agentSocket"))? {
            Some(s) => {
                validate_socket_path(&s).map_err(|reason| CniError::invalid_config(path("agentSocket"), reason))?;
                PathBuf::from(s)
            }
            None => PathBuf::from(DEFAULT_AGENT_SOCKET),
        };
        let timeout = take_int(fields, "timeoutSeconds", &path("timeoutSeconds"), 1..=600)?
            .map_or(DEFAULT_TIMEOUT, |s| Duration::from_secs(s.unsigned_abs()));
        let pool = take::<String>(fields, "pool", &path("pool"))?;
        if let Some(pool) = &pool {
            validate_pool_name(pool).map_err(|reason| CniError::invalid_config(path("pool"), reason))?;
        }
        let mut network = NetworkConfig { pool, vlan: None, mtu: None };
        if datapath {
            network.vlan = take_int(fields, "vlan", &path("vlan"), 1..=4094)?.map(|v| v as u16);
            network.mtu = take_int(fields, "mtu", &path("mtu"), 68..=65535)?.map(|v| v as u32);
        }
        Ok(Own { agent: AgentTarget { socket, timeout }, network })
    }
}

/// Removes `key`; absent and `null` are both `None`.
fn take<T: DeserializeOwned>(fields: &mut Map<String, Value>, key: &str, path: &str) -> Result<Option<T>, CniError> {
    match fields.remove(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => serde_json::from_value(v).map(Some).map_err(|e| CniError::invalid_config(path, e.to_string())),
    }
}

fn required<T: DeserializeOwned>(fields: &mut Map<String, Value>, key: &str, path: &str) -> Result<T, CniError> {
    take(fields, key, path)?.ok_or_else(|| CniError::invalid_config(path, "missing"))
}

fn take_object(fields: &mut Map<String, Value>, key: &str, path: &str) -> Result<Option<Map<String, Value>>, CniError> {
    match fields.remove(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(m)) => Ok(Some(m)),
        Some(other) => Err(CniError::invalid_config(path, format!("{other} is not an object"))),
    }
}

fn take_int(
    fields: &mut Map<String, Value>,
    key: &str,
    path: &str,
    range: RangeInclusive<i64>,
) -> Result<Option<i64>, CniError> {
    let Some(v) = take::<Value>(fields, key, path)? else { return Ok(None) };
    match v.as_i64() {
        Some(n) if range.contains(&n) => Ok(Some(n)),
        Some(n) => Err(CniError::invalid_config(path, format!("{n} is outside {}..={}", range.start(), range.end()))),
        None => Err(CniError::invalid_config(path, format!("{v} is not an integer"))),
    }
}

fn take_ips(fields: &mut Map<String, Value>, key: &str, path: &str) -> Result<Vec<IpAddr>, CniError> {
    let list: Vec<String> = take(fields, key, path)?.unwrap_or_default();
    list.iter()
        .enumerate()
        .map(|(i, s)| parse_requested_ip(s).map_err(|reason| CniError::invalid_config(format!("{path}[{i}]"), reason)))
        .collect()
}

fn reject_unknown(
    fields: &Map<String, Value>,
    prefix: &str,
    known: &str,
    allowed: impl Fn(&str) -> bool,
) -> Result<(), CniError> {
    let unknown: Vec<String> = fields.keys().filter(|k| !allowed(k)).map(|k| format!("{prefix}{k}")).collect();
    if unknown.is_empty() {
        return Ok(());
    }
    Err(CniError::invalid_config(
        unknown.join(", "),
        format!("unknown key (known here: {known}, and the standard CNI keys)"),
    ))
}

/// A requested address: `10.1.0.7` or `10.1.0.7/24`. The prefix is checked and dropped: the
/// pool decides the prefix.
pub(crate) fn parse_requested_ip(s: &str) -> Result<IpAddr, String> {
    let addr = if s.contains('/') {
        s.parse::<IpNet>().map(|n| n.addr()).map_err(|_| format!("{s:?} is not an address or address/prefix"))?
    } else {
        s.parse::<IpAddr>().map_err(|_| format!("{s:?} is not an address"))?
    };
    if addr.is_unspecified() || addr.is_multicast() || addr.is_loopback() {
        return Err(format!("{s} cannot be a pod's address"));
    }
    Ok(addr)
}

/// `aa:bb:cc:dd:ee:ff` or `aa-bb-…`, unicast, not all zero; returned lowercase with colons.
fn normalize_mac(s: &str) -> Result<String, String> {
    let sep = if s.contains('-') { '-' } else { ':' };
    let octets: Vec<u8> = s
        .split(sep)
        .map(|p| if p.len() == 2 { u8::from_str_radix(p, 16).ok() } else { None })
        .collect::<Option<_>>()
        .filter(|o: &Vec<u8>| o.len() == 6)
        .ok_or_else(|| format!("{s:?} is not a MAC address like 02:42:0a:01:00:07"))?;
    if octets[0] & 1 == 1 {
        return Err(format!("{s} is a multicast address"));
    }
    if octets.iter().all(|o| *o == 0) {
        return Err(format!("{s} is the zero address"));
    }
    Ok(octets.iter().map(|o| format!("{o:02x}")).collect::<Vec<_>>().join(":"))
}

/// The spec's rule for network names.
fn validate_network_name(name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric());
    if first_ok && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')) {
        Ok(())
    } else {
        Err(format!("{name:?} must start with a letter or digit followed by letters, digits, '_', '.' or '-'"))
    }
}

/// The allocator's rule for pool names (hc-api `Pool::name`).
fn validate_pool_name(name: &str) -> Result<(), String> {
    let bytes = name.as_bytes();
    let edge_ok = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let ok = !bytes.is_empty()
        && bytes.len() <= 63
        && bytes.first().is_some_and(edge_ok)
        && bytes.last().is_some_and(edge_ok)
        && bytes.iter().all(|b| edge_ok(b) || *b == b'-' || *b == b'.');
    if ok { Ok(()) } else { Err(format!("{name:?} is not a pool name ([a-z0-9]([-a-z0-9.]*[a-z0-9])?, at most 63)")) }
}

fn validate_socket_path(path: &str) -> Result<(), String> {
    if !path.starts_with('/') {
        return Err(format!("{path:?} is not an absolute path"));
    }
    // sun_path holds 108 bytes including the terminating NUL.
    if path.len() > 107 {
        return Err(format!("{path:?} is longer than a unix socket path can be (107 bytes)"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn bridge(v: Value) -> Result<PluginConfig, CniError> {
        decode(v.to_string().as_bytes())?.validate(Plugin::Bridge)
    }

    fn ipam(v: Value) -> Result<PluginConfig, CniError> {
        decode(v.to_string().as_bytes())?.validate(Plugin::Ipam)
    }

    fn invalid_field(result: Result<PluginConfig, CniError>) -> String {
        match result {
            Err(CniError::InvalidConfig { field, .. }) => field,
            other => panic!("expected an invalid-config error, got {other:?}"),
        }
    }

    #[test]
    fn minimal_bridge_config_takes_the_defaults() {
        let c = bridge(json!({"cniVersion":"1.0.0","name":"hc","type":"hc-bridge"})).expect("valid");
        assert_eq!(c.cni_version, CniVersion::V1_0_0);
        assert_eq!(c.agent, AgentTarget { socket: DEFAULT_AGENT_SOCKET.into(), timeout: DEFAULT_TIMEOUT });
        assert_eq!(c.network, NetworkConfig::default());
        assert_eq!(c.prev_result, None);
        assert_eq!(c.valid_attachments, None);
    }

    #[test]
    fn full_bridge_config() {
        let c = bridge(json!({
            "cniVersion":"0.4.0","name":"hc","type":"hc-bridge",
            "pool":"web","vlan":100,"mtu":9000,"agentSocket":"/tmp/a.sock","timeoutSeconds":5,
            "dns":{"nameservers":["10.1.0.53"],"search":["svc.example"]},
            "capabilities":{"ips":true,"mac":true},
            "runtimeConfig":{"ips":["10.1.0.7/24"],"mac":"02-42-0A-01-00-07","portMappings":[]},
            "args":{"cni":{"pool":"db","ips":["10.2.0.9"]},"labels":{"app":"x"}},
            "prevResult":{"cniVersion":"0.4.0","ips":[{"version":"4","address":"10.1.0.7/24","interface":0}],
                          "interfaces":[{"name":"eth0","sandbox":"/n"}]},
            "cni.dev/valid-attachments":[{"containerID":"c1","ifname":"eth0"}]
        }))
        .expect("valid");
        assert_eq!(c.network, NetworkConfig { pool: Some("web".into()), vlan: Some(100), mtu: Some(9000) });
        assert_eq!(c.agent, AgentTarget { socket: "/tmp/a.sock".into(), timeout: Duration::from_secs(5) });
        assert_eq!(c.dns.nameservers, vec!["10.1.0.53"]);
        assert_eq!(c.runtime_config.ips, vec!["10.1.0.7".parse::<IpAddr>().expect("ip")]);
        assert_eq!(c.runtime_config.mac.as_deref(), Some("02:42:0a:01:00:07"));
        assert_eq!(c.args, RequestArgs { pool: Some("db".into()), ips: vec!["10.2.0.9".parse().expect("ip")] });
        let prev = c.prev_result.expect("prevResult");
        assert_eq!(prev.ips[0].address.to_string(), "10.1.0.7/24");
        assert_eq!(prev.ips[0].interface, Some(0));
        assert_eq!(c.valid_attachments, Some(vec![AttachmentKey { container_id: "c1".into(), ifname: "eth0".into() }]));
    }

    #[test]
    fn json_and_version_errors_come_first() {
        assert!(matches!(decode(b"{not json"), Err(CniError::Decode { .. })));
        assert!(matches!(decode(b"[1,2]"), Err(CniError::Decode { .. })));
        assert_eq!(decode(br#"{"name":"hc","type":"hc-bridge"}"#), Err(CniError::MissingVersion));
        assert_eq!(
            decode(br#"{"cniVersion":"0.2.0","name":"hc"}"#),
            Err(CniError::UnsupportedVersion { version: "0.2.0".into() })
        );
        assert!(matches!(decode(br#"{"cniVersion":1}"#), Err(CniError::Decode { .. })));
    }

    #[test]
    fn each_invalid_field_is_named() {
        let base = || json!({"cniVersion":"1.0.0","name":"hc","type":"hc-bridge"});
        let with = |key: &str, v: Value| {
            let mut c = base();
            c[key] = v;
            c
        };
        let cases = [
            (with("mtu", json!(0)), "mtu"),
            (with("mtu", json!(70000)), "mtu"),
            (with("mtu", json!("1500")), "mtu"),
            (with("vlan", json!(0)), "vlan"),
            (with("vlan", json!(4095)), "vlan"),
            (with("vlan", json!(1.5)), "vlan"),
            (with("pool", json!("Web")), "pool"),
            (with("pool", json!("-web")), "pool"),
            (with("pool", json!("")), "pool"),
            (with("agentSocket", json!("relative.sock")), "agentSocket"),
            (with("agentSocket", json!(format!("/{}", "x".repeat(200)))), "agentSocket"),
            (with("timeoutSeconds", json!(0)), "timeoutSeconds"),
            (with("name", json!("-hc")), "name"),
            (with("vlanid", json!(100)), "vlanid"),
            (with("ipam", json!({"type":"host-local"})), "ipam"),
            (with("runtimeConfig", json!({"mac":"01:00:5e:00:00:01"})), "runtimeConfig.mac"),
            (with("runtimeConfig", json!({"mac":"02:42:0a:01:00"})), "runtimeConfig.mac"),
            (with("runtimeConfig", json!({"ips":["10.1.0.7","nope"]})), "runtimeConfig.ips[1]"),
            (with("runtimeConfig", json!([])), "runtimeConfig"),
            (with("args", json!({"cni":{"pool":"BAD"}})), "args.cni.pool"),
            (with("args", json!({"cni":{"ips":["0.0.0.0"]}})), "args.cni.ips[0]"),
            (with("dns", json!({"nameservers":["dns.example"]})), "dns.nameservers[0]"),
            (with("prevResult", json!({"ips":[{"address":"10.1.0.7"}]})), "prevResult"),
            (with("cni.dev/valid-attachments", json!([{"ifname":"eth0"}])), "cni.dev/valid-attachments"),
        ];
        for (config, field) in cases {
            let err = bridge(config.clone()).expect_err("invalid");
            assert_eq!(err.code(), 7, "{config}: {err}");
            assert_eq!(invalid_field(Err(err)), field, "{config}");
        }
        let missing_name = json!({"cniVersion":"1.0.0","type":"hc-bridge"});
        assert_eq!(invalid_field(bridge(missing_name)), "name");
        let missing_type = json!({"cniVersion":"1.0.0","name":"hc"});
        assert_eq!(invalid_field(bridge(missing_type)), "type");
    }

    #[test]
    fn unknown_keys_are_listed_together() {
        let err = bridge(json!({"cniVersion":"1.0.0","name":"hc","type":"hc-bridge","vlanid":1,"bridge":"br0"}))
            .expect_err("unknown keys");
        assert_eq!(invalid_field(Err(err.clone())), "bridge, vlanid");
        assert!(err.to_string().contains("agentSocket, mtu, pool"), "{err}");
    }

    #[test]
    fn runtime_injected_keys_are_accepted() {
        let c = bridge(json!({"cniVersion":"1.1.0","name":"hc","type":"hc-bridge","cniVersions":["1.0.0","1.1.0"],
            "cni.dev/attachments":[{"containerID":"c2","ifname":"net1"}],"cni.dev/some-future-key":1}))
        .expect("valid");
        // cni.dev/attachments is the fallback for cni.dev/valid-attachments.
        assert_eq!(c.valid_attachments, Some(vec![AttachmentKey { container_id: "c2".into(), ifname: "net1".into() }]));
    }

    #[test]
    fn an_empty_attachment_list_is_kept_apart_from_no_list() {
        let c = bridge(json!({"cniVersion":"1.1.0","name":"hc","type":"hc-bridge","cni.dev/valid-attachments":[]}))
            .expect("valid");
        assert_eq!(c.valid_attachments, Some(vec![]));
    }

    #[test]
    fn ipam_reads_its_section_and_leaves_the_rest_to_the_main_plugin() {
        let c = ipam(json!({
            "cniVersion":"1.0.0","name":"ref","type":"bridge","bridge":"hcbr0","isGateway":true,
            "ipam":{"type":"hcipam","pool":"web","agentSocket":"/tmp/a.sock"},
            "runtimeConfig":{"ips":["10.1.0.9"]}
        }))
        .expect("valid");
        assert_eq!(c.network, NetworkConfig { pool: Some("web".into()), vlan: None, mtu: None });
        assert_eq!(c.agent.socket, PathBuf::from("/tmp/a.sock"));
        assert_eq!(c.runtime_config.ips.len(), 1);

        let no_ipam = json!({"cniVersion":"1.0.0","name":"ref","type":"bridge"});
        assert_eq!(invalid_field(ipam(no_ipam)), "ipam");
        let typo = json!({"cniVersion":"1.0.0","name":"ref","type":"bridge","ipam":{"type":"hcipam","pol":"web"}});
        assert_eq!(invalid_field(ipam(typo)), "ipam.pol");
        // The datapath fields are hc-bridge's only.
        let vlan = json!({"cniVersion":"1.0.0","name":"ref","type":"bridge","ipam":{"type":"hcipam","vlan":100}});
        assert_eq!(invalid_field(ipam(vlan)), "ipam.vlan");
        let no_type = json!({"cniVersion":"1.0.0","name":"ref","type":"bridge","ipam":{"pool":"web"}});
        assert_eq!(invalid_field(ipam(no_type)), "ipam.type");
    }

    #[test]
    fn requested_ips_accept_plain_and_cidr_forms() {
        assert_eq!(parse_requested_ip("10.1.0.7"), Ok("10.1.0.7".parse().expect("ip")));
        assert_eq!(parse_requested_ip("10.1.0.7/24"), Ok("10.1.0.7".parse().expect("ip")));
        assert_eq!(parse_requested_ip("2001:db8::7/64"), Ok("2001:db8::7".parse().expect("ip")));
        for bad in ["10.1.0.7/33", "10.1.0", "", "::", "224.0.0.1", "127.0.0.1", " 10.1.0.7"] {
            assert!(parse_requested_ip(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn macs_are_normalized() {
        assert_eq!(normalize_mac("02:42:0A:01:00:07").as_deref(), Ok("02:42:0a:01:00:07"));
        assert_eq!(normalize_mac("02-42-0a-01-00-07").as_deref(), Ok("02:42:0a:01:00:07"));
        for bad in ["00:00:00:00:00:00", "ff:ff:ff:ff:ff:ff", "02:42:0a:01:00", "02:42:0a:01:00:07:08", "2:42:a:1:0:7"]
        {
            assert!(normalize_mac(bad).is_err(), "{bad}");
        }
    }
}
