//! The CNI result: one version-neutral model, shaped on output to the version the
//! configuration asked for.
//!
//! The model is the 1.1.0 result without `cniVersion`. It is what the agent sends in a
//! successful reply, and what a `prevResult` of any supported version parses into (an
//! `ips[].version` field of 0.3.x/0.4.0 is ignored on input: the address says the family).
//!
//! Shaping ([`CniResult::to_json`]):
//! - 0.3.0, 0.3.1, 0.4.0: `ips[]` carry `"version": "4"|"6"`;
//! - 1.0.0 and later: no `version` field;
//! - 1.1.0 only: `interfaces[].mtu/socketPath/pciID` and `routes[].mtu/advmss/priority/table/scope`.
//!
//! Empty lists and an empty `dns` are left out, as the reference implementation does with
//! `omitempty`.

use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::version::CniVersion;

/// What a plugin reports after ADD.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct CniResult {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub interfaces: Vec<Interface>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ips: Vec<IpConfig>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<Route>,
    #[serde(default, skip_serializing_if = "Dns::is_empty")]
    pub dns: Dns,
}

/// An interface the plugin created or moved; the pod's has `sandbox` set to its netns path.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Interface {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    /// 1.1.0 and later.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<String>,
    /// 1.1.0 and later.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub socket_path: Option<String>,
    /// 1.1.0 and later.
    #[serde(default, rename = "pciID", skip_serializing_if = "Option::is_none")]
    pub pci_id: Option<String>,
}

/// An address given to an interface: the host address with the pool's prefix ("10.1.0.7/24").
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpConfig {
    /// Index into `interfaces`; absent in IPAM-only results.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<usize>,
    pub address: IpNet,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<IpAddr>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    pub dst: IpNet,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gw: Option<IpAddr>,
    /// This and the following fields are 1.1.0 and later.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub advmss: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<u32>,
}

/// Resolver settings, both in a network configuration's `dns` and in a result.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Dns {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nameservers: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub search: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
}

impl Dns {
    pub fn is_empty(&self) -> bool {
        self.nameservers.is_empty() && self.domain.is_none() && self.search.is_empty() && self.options.is_empty()
    }
}

impl CniResult {
    /// The result as an IPAM plugin returns it: addresses, routes and DNS, no interfaces.
    pub fn into_ipam_only(mut self) -> CniResult {
        self.interfaces.clear();
        for ip in &mut self.ips {
            ip.interface = None;
        }
        self
    }

    /// The result JSON for `version`, as printed on stdout after ADD.
    pub fn to_json(&self, version: CniVersion) -> String {
        let extended = version.has_extended_fields();
        let shaped = Shaped {
            cni_version: version.as_str(),
            interfaces: self
                .interfaces
                .iter()
                .map(|i| ShapedInterface {
                    name: &i.name,
                    mac: i.mac.as_deref(),
                    mtu: i.mtu.filter(|_| extended),
                    sandbox: i.sandbox.as_deref(),
                    socket_path: i.socket_path.as_deref().filter(|_| extended),
                    pci_id: i.pci_id.as_deref().filter(|_| extended),
                })
                .collect(),
            ips: self
                .ips
                .iter()
                .map(|ip| ShapedIp {
                    version: version.has_ip_version_field().then_some(match ip.address {
                        IpNet::V4(_) => "4",
                        IpNet::V6(_) => "6",
                    }),
                    interface: ip.interface,
                    address: ip.address,
                    gateway: ip.gateway,
                })
                .collect(),
            routes: self
                .routes
                .iter()
                .map(|r| ShapedRoute {
                    dst: r.dst,
                    gw: r.gw,
                    mtu: r.mtu.filter(|_| extended),
                    advmss: r.advmss.filter(|_| extended),
                    priority: r.priority.filter(|_| extended),
                    table: r.table.filter(|_| extended),
                    scope: r.scope.filter(|_| extended),
                })
                .collect(),
            dns: (!self.dns.is_empty()).then_some(&self.dns),
        };
        // Strings, integers and addresses only: serialization cannot fail.
        serde_json::to_string(&shaped).unwrap_or_default()
    }
}

#[derive(Serialize)]
struct Shaped<'a> {
    #[serde(rename = "cniVersion")]
    cni_version: &'static str,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    interfaces: Vec<ShapedInterface<'a>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    ips: Vec<ShapedIp>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    routes: Vec<ShapedRoute>,
    #[serde(skip_serializing_if = "Option::is_none")]
    dns: Option<&'a Dns>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ShapedInterface<'a> {
    name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    mac: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    mtu: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    sandbox: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    socket_path: Option<&'a str>,
    #[serde(rename = "pciID", skip_serializing_if = "Option::is_none")]
    pci_id: Option<&'a str>,
}

#[derive(Serialize)]
struct ShapedIp {
    #[serde(skip_serializing_if = "Option::is_none")]
    version: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    interface: Option<usize>,
    address: IpNet,
    #[serde(skip_serializing_if = "Option::is_none")]
    gateway: Option<IpAddr>,
}

#[derive(Serialize)]
struct ShapedRoute {
    dst: IpNet,
    #[serde(skip_serializing_if = "Option::is_none")]
    gw: Option<IpAddr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    mtu: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    advmss: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    priority: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    table: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    scope: Option<u32>,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The golden input: a dual-stack pod with every 1.1.0 field set, so each version's
    /// golden file shows exactly what that version drops or adds.
    fn sample() -> CniResult {
        serde_json::from_str(include_str!("../testdata/result/input.json")).expect("golden input parses")
    }

    fn golden(version: CniVersion, file: &str) {
        let got: serde_json::Value = serde_json::from_str(&sample().to_json(version)).expect("valid JSON");
        let want: serde_json::Value = serde_json::from_str(file).expect("golden file parses");
        assert_eq!(got, want, "result for {version}:\n{got:#}");
    }

    #[test]
    fn golden_0_3_0() {
        golden(CniVersion::V0_3_0, include_str!("../testdata/result/0.3.0.json"));
    }

    #[test]
    fn golden_0_3_1() {
        golden(CniVersion::V0_3_1, include_str!("../testdata/result/0.3.1.json"));
    }

    #[test]
    fn golden_0_4_0() {
        golden(CniVersion::V0_4_0, include_str!("../testdata/result/0.4.0.json"));
    }

    #[test]
    fn golden_1_0_0() {
        golden(CniVersion::V1_0_0, include_str!("../testdata/result/1.0.0.json"));
    }

    #[test]
    fn golden_1_1_0() {
        golden(CniVersion::V1_1_0, include_str!("../testdata/result/1.1.0.json"));
    }

    #[test]
    fn golden_ipam_only_0_4_0() {
        let got: serde_json::Value =
            serde_json::from_str(&sample().into_ipam_only().to_json(CniVersion::V0_4_0)).expect("valid JSON");
        let want: serde_json::Value =
            serde_json::from_str(include_str!("../testdata/result/ipam-0.4.0.json")).expect("golden file parses");
        assert_eq!(got, want, "{got:#}");
    }

    /// Every shaped result reads back into the same model (minus what the version drops), so a
    /// result we printed is a `prevResult` we accept on CHECK and DEL.
    #[test]
    fn shaped_results_parse_back_as_prev_results() {
        let full = sample();
        for version in CniVersion::ALL {
            let back: CniResult = serde_json::from_str(&full.to_json(version)).expect("parses back");
            assert_eq!(back.ips, full.ips, "{version}");
            assert_eq!(back.dns, full.dns, "{version}");
            assert_eq!(back.interfaces.len(), full.interfaces.len(), "{version}");
            if version.has_extended_fields() {
                assert_eq!(back, full, "{version}");
            }
        }
    }

    #[test]
    fn empty_result_is_just_the_version() {
        assert_eq!(CniResult::default().to_json(CniVersion::V1_0_0), r#"{"cniVersion":"1.0.0"}"#);
    }

    #[test]
    fn host_bits_of_an_address_are_kept() {
        let r: CniResult = serde_json::from_str(r#"{"ips":[{"address":"10.1.0.7/24"}]}"#).expect("parses");
        assert_eq!(r.ips[0].address.to_string(), "10.1.0.7/24");
    }
}
