//! Checks on what an operator declares (pool and VLAN specs, reservation keys) that need nothing
//! but the value itself. Checks against the rest of the state (overlap, one default per family,
//! addresses in use) live with the commands.

use std::net::IpAddr;

use hc_api::IpamError;
use hc_api::types::{PoolSpec, VlanSpec};
use ipnet::IpNet;

use crate::pool::{bounds, fixed_addresses, to_u128, usable_size};

/// Longest cooldown a pool may ask for: a week. Longer would only strand addresses.
pub const MAX_REUSE_COOLDOWN_SECS: u64 = 7 * 24 * 3600;
/// Longest reservation key, node name or container id accepted.
pub const MAX_KEY_LEN: usize = 512;
/// Longest pod name accepted (a Kubernetes pod name is at most 253 bytes, with its namespace
/// well under this).
pub const MAX_POD_LEN: usize = 4096;

/// `[a-z0-9]([-a-z0-9.]*[a-z0-9])?`, at most 63 characters.
pub fn validate_pool_name(name: &str) -> Result<(), IpamError> {
    let bad = |reason: &str| Err(IpamError::invalid("name", format!("{name:?}: {reason}")));
    if name.is_empty() {
        return bad("must not be empty");
    }
    if name.len() > 63 {
        return bad("longer than 63 characters");
    }
    let alnum = |c: u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    let bytes = name.as_bytes();
    if !bytes.iter().all(|&c| alnum(c) || c == b'-' || c == b'.') {
        return bad("only lowercase letters, digits, '-' and '.' are allowed");
    }
    if !bytes.first().is_some_and(|&c| alnum(c)) || !bytes.last().is_some_and(|&c| alnum(c)) {
        return bad("must start and end with a lowercase letter or digit");
    }
    Ok(())
}

pub fn validate_vlan_id(vlan: u16) -> Result<(), IpamError> {
    if (1..=4094).contains(&vlan) { Ok(()) } else { Err(IpamError::InvalidVlan { vlan: u32::from(vlan) }) }
}

/// A non-empty identifier of bounded length (reservation keys, node names, container ids).
pub fn validate_key(field: &str, value: &str) -> Result<(), IpamError> {
    if value.is_empty() {
        return Err(IpamError::invalid(field, "must not be empty"));
    }
    if value.len() > MAX_KEY_LEN {
        return Err(IpamError::invalid(field, format!("longer than {MAX_KEY_LEN} bytes")));
    }
    if value.chars().any(char::is_control) {
        return Err(IpamError::invalid(field, "must not contain control characters"));
    }
    Ok(())
}

/// A pod name: may be empty (a runtime outside Kubernetes has none), bounded in length.
pub fn validate_pod(pod: &str) -> Result<(), IpamError> {
    if pod.len() > MAX_POD_LEN {
        return Err(IpamError::invalid("owner.pod", format!("longer than {MAX_POD_LEN} bytes")));
    }
    Ok(())
}

fn same_family(a: IpAddr, net: &IpNet) -> bool {
    a.is_ipv4() == net.addr().is_ipv4()
}

/// A DNS name as resolv.conf takes it: labels of letters, digits, '-' and '_', at most 253
/// characters; a trailing dot is allowed.
fn validate_dns_name(field: &str, name: &str) -> Result<(), IpamError> {
    let trimmed = name.strip_suffix('.').unwrap_or(name);
    let ok = !trimmed.is_empty()
        && trimmed.len() <= 253
        && trimmed.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
                && !label.starts_with('-')
                && !label.ends_with('-')
        });
    if ok { Ok(()) } else { Err(IpamError::invalid(field, format!("{name:?} is not a DNS name"))) }
}

/// Everything about a pool spec that can be checked without the rest of the state.
pub fn validate_pool_spec(spec: &PoolSpec) -> Result<(), IpamError> {
    validate_pool_name(&spec.name)?;
    let cidr = &spec.cidr;
    if cidr.trunc() != *cidr {
        return Err(IpamError::invalid("cidr", format!("{cidr} has host bits set; the network is {}", cidr.trunc())));
    }
    if cidr.prefix_len() == 0 {
        return Err(IpamError::invalid("cidr", format!("{cidr} covers the whole address space")));
    }
    if let Some(gw) = spec.gateway {
        if !cidr.contains(&gw) {
            return Err(IpamError::GatewayOutsidePool { pool: spec.name.clone(), gateway: gw, cidr: cidr.to_string() });
        }
        if let IpNet::V4(n) = cidr
            && n.prefix_len() <= 30
            && (IpAddr::V4(n.network()) == gw || IpAddr::V4(n.broadcast()) == gw)
        {
            return Err(IpamError::invalid("gateway", format!("{gw} is the network or broadcast address of {cidr}")));
        }
    }
    if let Some(vlan) = spec.vlan {
        validate_vlan_id(vlan)?;
    }
    for (i, route) in spec.routes.iter().enumerate() {
        let field = format!("routes[{i}]");
        if route.dst.trunc() != route.dst {
            return Err(IpamError::invalid(field, format!("destination {} has host bits set", route.dst)));
        }
        if route.dst.addr().is_ipv4() != cidr.addr().is_ipv4() {
            return Err(IpamError::invalid(field, "destination is of the other IP family"));
        }
        match route.gw {
            Some(gw) if !cidr.contains(&gw) => {
                return Err(IpamError::invalid(field, format!("next hop {gw} is not on the pool's network {cidr}")));
            }
            None if spec.gateway.is_none() => {
                return Err(IpamError::invalid(field, "no next hop and the pool has no gateway"));
            }
            _ => {}
        }
    }
    for (i, ns) in spec.dns.nameservers.iter().enumerate() {
        if ns.is_unspecified() || ns.is_multicast() {
            return Err(IpamError::invalid(format!("dns.nameservers[{i}]"), format!("{ns} is not a unicast address")));
        }
    }
    if let Some(domain) = &spec.dns.domain {
        validate_dns_name("dns.domain", domain)?;
    }
    for (i, s) in spec.dns.search.iter().enumerate() {
        validate_dns_name(&format!("dns.search[{i}]"), s)?;
    }
    for (i, o) in spec.dns.options.iter().enumerate() {
        if o.is_empty() || o.chars().any(char::is_whitespace) {
            return Err(IpamError::invalid(format!("dns.options[{i}]"), format!("{o:?} is not a resolver option")));
        }
    }
    let (lo, hi) = bounds(cidr);
    for (i, r) in spec.exclude.iter().enumerate() {
        let inside = same_family(r.start, cidr) && to_u128(r.start) >= lo && to_u128(r.end) <= hi;
        if !inside {
            return Err(IpamError::invalid(format!("exclude[{i}]"), format!("{r} is not inside {cidr}")));
        }
    }
    for (field, values) in
        [("selector.namespaces", &spec.selector.namespaces), ("selector.nodes", &spec.selector.nodes)]
    {
        if values.iter().any(String::is_empty) {
            return Err(IpamError::invalid(field, "empty entry"));
        }
    }
    if spec.reuse_cooldown_secs > MAX_REUSE_COOLDOWN_SECS {
        return Err(IpamError::invalid("reuse_cooldown_secs", format!("at most {MAX_REUSE_COOLDOWN_SECS} seconds")));
    }
    if usable_size(spec, &fixed_addresses(spec)) == 0 {
        return Err(IpamError::invalid("cidr", format!("{cidr} has no usable address left")));
    }
    Ok(())
}

pub fn validate_vlan_spec(spec: &VlanSpec) -> Result<(), IpamError> {
    validate_vlan_id(spec.id)?;
    if spec.name.len() > 63 || spec.name.chars().any(char::is_control) {
        return Err(IpamError::invalid("name", "at most 63 printable characters"));
    }
    for node in &spec.nodes {
        validate_key("nodes", node)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn pool_names_follow_the_dns_label_rule() {
        for good in ["a", "pool-1", "vlan.100", "0abc", &"a".repeat(63)] {
            assert!(validate_pool_name(good).is_ok(), "{good}");
        }
        for bad in ["", "-a", "a-", "A", "a_b", "a b", ".a", "a.", &"a".repeat(64)] {
            assert!(validate_pool_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn vlan_ids_are_1_to_4094() {
        assert_eq!(validate_vlan_id(0), Err(IpamError::InvalidVlan { vlan: 0 }));
        assert_eq!(validate_vlan_id(4095), Err(IpamError::InvalidVlan { vlan: 4095 }));
        assert!(validate_vlan_id(1).is_ok());
        assert!(validate_vlan_id(4094).is_ok());
    }

    #[test]
    fn dns_names() {
        assert!(validate_dns_name("f", "cluster.local").is_ok());
        assert!(validate_dns_name("f", "svc.cluster.local.").is_ok());
        assert!(validate_dns_name("f", "").is_err());
        assert!(validate_dns_name("f", "a..b").is_err());
        assert!(validate_dns_name("f", "-a.b").is_err());
        assert!(validate_dns_name("f", "a b").is_err());
    }
}
