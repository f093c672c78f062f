//! Pure translation of a CNI ADD: what to ask the allocator for, what the datapath should build
//! with the pool it answered, and the CNI result to reply. No I/O here.

use std::collections::BTreeMap;
use std::net::IpAddr;

use hc_api::types::{AllocateRequest, Allocated, Owner, PoolSpec, pod_key, statefulset_key};
use hc_cni::protocol::{AgentError, AttachmentRequest, Network};
use hc_cni::result::{CniResult, Dns, Interface, IpConfig, Route as CniRoute};
use ipnet::IpNet;

use crate::datapath::{Attached, DesiredAttachment, MacAddr, Route};

/// The allocation request for an ADD: the pool asked for (args, else the network's), the
/// address asked for (args, else runtimeConfig `ips`), and the reservation keys of the pod.
pub fn allocate_request(
    req: &AttachmentRequest,
    node: &str,
    node_labels: &BTreeMap<String, String>,
) -> Result<AllocateRequest, AgentError> {
    let (namespace, pod) = req.k8s.as_ref().map(|k| (k.namespace.clone(), k.pod.clone())).unwrap_or_default();
    let requested: Vec<IpAddr> =
        if req.args.ips.is_empty() { req.runtime_config.ips.clone() } else { req.args.ips.clone() };
    if requested.len() > 1 {
        return Err(AgentError::invalid_config(format!(
            "{} addresses requested; hc-bridge gives one address per interface",
            requested.len()
        )));
    }
    Ok(AllocateRequest {
        owner: Owner {
            container_id: req.container_id.clone(),
            interface: req.ifname.clone(),
            namespace: namespace.clone(),
            pod: pod.clone(),
            node: node.to_owned(),
        },
        pool: req.args.pool.clone().or_else(|| req.network.config.pool.clone()),
        address: requested.first().copied(),
        reservation_keys: reservation_keys(&namespace, &pod),
        pod_labels: BTreeMap::new(),
        node_labels: node_labels.clone(),
    })
}

/// What STATUS asks the allocator about: a pod-less request on `network` from this node, whose
/// candidate pools are the network's.
pub fn status_probe(network: &Network, node: &str, node_labels: &BTreeMap<String, String>) -> AllocateRequest {
    AllocateRequest {
        owner: Owner { node: node.to_owned(), ..Owner::default() },
        pool: network.config.pool.clone(),
        node_labels: node_labels.clone(),
        ..AllocateRequest::default()
    }
}

/// `ns/pod`, and `ns/sts/ordinal` when the pod's name looks like a StatefulSet member
/// (`<name>-<ordinal>`). No keys without a pod.
pub fn reservation_keys(namespace: &str, pod: &str) -> Vec<String> {
    if namespace.is_empty() || pod.is_empty() {
        return Vec::new();
    }
    let mut keys = vec![pod_key(namespace, pod)];
    if let Some((set, ordinal)) = pod.rsplit_once('-')
        && !set.is_empty()
        && !ordinal.is_empty()
        && ordinal.bytes().all(|b| b.is_ascii_digit())
        && (ordinal == "0" || !ordinal.starts_with('0'))
        && let Ok(n) = ordinal.parse::<u32>()
    {
        keys.push(statefulset_key(namespace, set, n));
    }
    keys
}

/// The pool's VLAN must match the network's when the network pins one.
pub fn check_vlan(req: &AttachmentRequest, pool: &PoolSpec) -> Result<(), AgentError> {
    match req.network.config.vlan {
        Some(want) if pool.vlan != Some(want) => Err(AgentError::invalid_config(format!(
            "pool {} is on VLAN {}, but network {} is pinned to VLAN {want}",
            pool.name,
            pool.vlan.map_or("none".to_owned(), |v| v.to_string()),
            req.network.name
        ))),
        _ => Ok(()),
    }
}

/// The address with the pool's prefix.
pub fn address_of(allocated: &Allocated) -> IpNet {
    let prefix = allocated.pool.cidr.prefix_len();
    IpNet::new(allocated.allocation.address, prefix).unwrap_or_else(|_| IpNet::from(allocated.allocation.address))
}

/// What the datapath should build for an ADD that got `allocated`.
pub fn desired_attachment(
    req: &AttachmentRequest,
    netns: &str,
    allocated: &Allocated,
) -> Result<DesiredAttachment, AgentError> {
    let pool = &allocated.pool;
    let mut att = pod_veth(req, netns)?;
    att.vlan = pool.vlan;
    att.addresses = vec![address_of(allocated)];
    att.gateways = pool.gateway.into_iter().collect();
    att.routes = pool.routes.iter().map(|r| Route { dst: r.dst, via: r.gw }).collect();
    Ok(att)
}

/// The attachment as far as it is known before the allocator answers: the veth pair's names,
/// namespace, MTU and MAC, no VLAN, addresses or routes.
pub fn pod_veth(req: &AttachmentRequest, netns: &str) -> Result<DesiredAttachment, AgentError> {
    let mut att = DesiredAttachment::new(&req.container_id, &req.ifname, netns);
    att.mtu = req.network.config.mtu;
    att.mac = match &req.runtime_config.mac {
        Some(m) => {
            Some(m.parse::<MacAddr>().map_err(|e| AgentError::invalid_config(format!("runtimeConfig mac {m}: {e}")))?)
        }
        None => None,
    };
    Ok(att)
}

/// The CNI result: the host veth and the pod interface (hc-bridge only), the address with the
/// pool's gateway, the default route plus the pool's routes, and DNS (the pool's, else the
/// network's).
pub fn cni_result(req: &AttachmentRequest, allocated: &Allocated, attached: Option<&Attached>) -> CniResult {
    let pool = &allocated.pool;
    let address = address_of(allocated);
    let mut result = CniResult::default();
    let mut pod_index = None;
    if let Some(a) = attached {
        result.interfaces.push(Interface {
            name: a.host_veth.clone(),
            mac: a.host_mac.map(|m| m.to_string()),
            ..Interface::default()
        });
        result.interfaces.push(Interface {
            name: a.ifname.clone(),
            mac: a.pod_mac.map(|m| m.to_string()),
            sandbox: Some(a.netns.display().to_string()),
            ..Interface::default()
        });
        pod_index = Some(1);
    }
    let gateway = pool.gateway.filter(|g| g.is_ipv4() == address.addr().is_ipv4());
    result.ips.push(IpConfig { interface: pod_index, address, gateway });
    if let Some(gw) = gateway {
        let dst = if gw.is_ipv4() { IpNet::V4(Default::default()) } else { IpNet::V6(Default::default()) };
        result.routes.push(cni_route(dst, Some(gw)));
    }
    for r in &pool.routes {
        result.routes.push(cni_route(r.dst, r.gw.or(gateway)));
    }
    result.dns = if pool.dns.nameservers.is_empty() && pool.dns.search.is_empty() && pool.dns.domain.is_none() {
        req.network.dns.clone()
    } else {
        Dns {
            nameservers: pool.dns.nameservers.iter().map(ToString::to_string).collect(),
            domain: pool.dns.domain.clone(),
            search: pool.dns.search.clone(),
            options: pool.dns.options.clone(),
        }
    };
    result
}

fn cni_route(dst: IpNet, gw: Option<IpAddr>) -> CniRoute {
    CniRoute { dst, gw, mtu: None, advmss: None, priority: None, table: None, scope: None }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hc_cni::protocol::{Network, NetworkConfig, PodRef, RequestArgs, RuntimeConfig};

    fn req() -> AttachmentRequest {
        AttachmentRequest {
            container_id: "c1".into(),
            ifname: "eth0".into(),
            netns: Some("/run/netns/p".into()),
            k8s: Some(PodRef { namespace: "db".into(), pod: "mysql-2".into(), uid: None }),
            network: Network {
                name: "hc".into(),
                cni_version: "1.0.0".into(),
                config: NetworkConfig { pool: Some("net".into()), vlan: None, mtu: Some(1400) },
                dns: Default::default(),
            },
            runtime_config: RuntimeConfig::default(),
            args: RequestArgs::default(),
            prev_result: None,
        }
    }

    fn allocated() -> Allocated {
        serde_json::from_value(serde_json::json!({
            "allocation": {"address": "10.1.0.7", "pool": "web", "owner": {"container_id": "c1", "interface": "eth0", "node": "n"},
                           "log_index": 3, "allocated_at_ms": 1, "state": "active"},
            "pool": {"name": "web", "cidr": "10.1.0.0/24", "gateway": "10.1.0.1", "vlan": 100,
                     "routes": [{"dst": "192.168.0.0/16"}, {"dst": "172.16.0.0/12", "gw": "10.1.0.254"}],
                     "dns": {"nameservers": ["10.1.0.53"]}},
            "created": true
        }))
        .expect("allocated")
    }

    #[test]
    fn reservation_keys_follow_the_pod_name() {
        assert_eq!(reservation_keys("db", "mysql-2"), vec!["db/mysql-2", "db/mysql/2"]);
        assert_eq!(reservation_keys("db", "web-7d9f8"), vec!["db/web-7d9f8"]);
        assert_eq!(reservation_keys("db", "x-01"), vec!["db/x-01"]);
        assert_eq!(reservation_keys("db", "-3"), vec!["db/-3"]);
        assert!(reservation_keys("", "p").is_empty());
    }

    #[test]
    fn args_win_over_network_and_runtime_config() {
        let mut r = req();
        r.runtime_config.ips = vec!["10.1.0.9".parse().expect("ip")];
        let a = allocate_request(&r, "n1", &BTreeMap::new()).expect("ok");
        assert_eq!(a.pool.as_deref(), Some("net"));
        assert_eq!(a.address, Some("10.1.0.9".parse().expect("ip")));
        assert_eq!(a.owner.pod, "mysql-2");
        r.args = RequestArgs { pool: Some("arg".into()), ips: vec!["10.1.0.5".parse().expect("ip")] };
        let a = allocate_request(&r, "n1", &BTreeMap::new()).expect("ok");
        assert_eq!((a.pool.as_deref(), a.address), (Some("arg"), Some("10.1.0.5".parse().expect("ip"))));
        r.args.ips.push("10.1.0.6".parse().expect("ip"));
        assert_eq!(allocate_request(&r, "n1", &BTreeMap::new()).expect_err("two").code, 7);
    }

    #[test]
    fn the_pool_shapes_the_attachment_and_the_result() {
        let att = desired_attachment(&req(), "/run/netns/p", &allocated()).expect("ok");
        assert_eq!(att.addresses, vec!["10.1.0.7/24".parse::<IpNet>().expect("net")]);
        assert_eq!(att.vlan, Some(100));
        assert_eq!(att.mtu, Some(1400));
        assert_eq!(att.routes.len(), 2);
        let result = cni_result(&req(), &allocated(), None);
        let json = serde_json::to_value(&result).expect("json");
        assert_eq!(
            json,
            serde_json::json!({"ips":[{"address":"10.1.0.7/24","gateway":"10.1.0.1"}],
                "routes":[{"dst":"0.0.0.0/0","gw":"10.1.0.1"},{"dst":"192.168.0.0/16","gw":"10.1.0.1"},{"dst":"172.16.0.0/12","gw":"10.1.0.254"}],
                "dns":{"nameservers":["10.1.0.53"]}})
        );
    }

    #[test]
    fn a_pinned_vlan_must_match() {
        let mut r = req();
        r.network.config.vlan = Some(200);
        assert_eq!(check_vlan(&r, &allocated().pool).expect_err("mismatch").code, 7);
        r.network.config.vlan = Some(100);
        assert!(check_vlan(&r, &allocated().pool).is_ok());
    }
}
