//! [`Pool`]: one pool's spec and its address index (search, counts).
//!
//! Addresses are handled as `u128` numbers (an IPv4 address is its 32-bit value). The index is an
//! [`IntervalSet`] of occupied addresses — fixed exclusions, allocated, reserved and cooling —
//! plus a next-fit cursor, so memory grows with the addresses in use and a search is O(log n)
//! whatever the pool's size (a /8 or a /64 alike).

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use hc_api::types::PoolSpec;
use ipnet::IpNet;

use crate::interval::IntervalSet;

pub(crate) fn to_u128(a: IpAddr) -> u128 {
    match a {
        IpAddr::V4(v4) => u128::from(u32::from(v4)),
        IpAddr::V6(v6) => u128::from(v6),
    }
}

/// The address of family `v4` with number `n` (`n` fits the family: callers stay inside a pool).
pub(crate) fn from_u128(n: u128, v4: bool) -> IpAddr {
    if v4 { IpAddr::V4(Ipv4Addr::from((n & 0xffff_ffff) as u32)) } else { IpAddr::V6(Ipv6Addr::from(n)) }
}

/// The addresses of `spec` that are never handed out: network and broadcast (IPv4 up to /30),
/// the subnet-router anycast address (IPv6 up to /126), the gateway and the excluded ranges.
/// Parts of excluded ranges outside the CIDR are ignored (validation refuses them anyway).
pub(crate) fn fixed_addresses(spec: &PoolSpec) -> IntervalSet {
    let (lo, hi) = bounds(&spec.cidr);
    let mut fixed = IntervalSet::default();
    match spec.cidr {
        IpNet::V4(n) if n.prefix_len() <= 30 => {
            fixed.insert(lo, lo);
            fixed.insert(hi, hi);
        }
        IpNet::V6(n) if n.prefix_len() <= 126 => fixed.insert(lo, lo),
        _ => {}
    }
    if let Some(gw) = spec.gateway
        && spec.cidr.contains(&gw)
    {
        let g = to_u128(gw);
        fixed.insert(g, g);
    }
    for r in &spec.exclude {
        if r.start.is_ipv4() != spec.cidr.addr().is_ipv4() {
            continue;
        }
        let (s, e) = (to_u128(r.start).max(lo), to_u128(r.end).min(hi));
        if s <= e {
            fixed.insert(s, e);
        }
    }
    fixed
}

/// First and last address of a network, as numbers.
pub(crate) fn bounds(net: &IpNet) -> (u128, u128) {
    (to_u128(net.network()), to_u128(net.broadcast()))
}

/// Addresses of `spec` that can ever be handed out.
pub(crate) fn usable_size(spec: &PoolSpec, fixed: &IntervalSet) -> u128 {
    let (lo, hi) = bounds(&spec.cidr);
    // `hi - lo + 1` overflows only for ::/0, which validation refuses; saturate regardless.
    (hi - lo).saturating_add(1).saturating_sub(fixed.count_in(lo, hi))
}

/// One pool: its spec, the replicated next-fit cursor and cooling entries, and the derived
/// occupancy index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Pool {
    pub(crate) spec: PoolSpec,
    v4: bool,
    lo: u128,
    hi: u128,
    /// Where the next search starts. Replicated (it is in the snapshot): it decides which address
    /// the next allocation gets, so every replica must agree on it.
    cursor: u128,
    /// Released addresses → leader time (ms) from which they may be handed out again. Replicated.
    /// May also hold a reserved address: cooldown then only matters once the reservation goes.
    pub(crate) cooling: BTreeMap<IpAddr, u64>,
    /// Derived: addresses never handed out.
    fixed: IntervalSet,
    /// Derived: fixed ∪ allocated ∪ reserved ∪ cooling. Its complement is what a search may take.
    occupied: IntervalSet,
    /// Derived: `usable_size` of the spec.
    size: u128,
    /// Derived: number of allocations inside the pool.
    pub(crate) allocated: u64,
}

impl Pool {
    /// A pool with nothing in use. The spec must have been validated.
    pub(crate) fn new(spec: PoolSpec) -> Pool {
        let v4 = spec.cidr.addr().is_ipv4();
        let (lo, hi) = bounds(&spec.cidr);
        let fixed = fixed_addresses(&spec);
        let size = usable_size(&spec, &fixed);
        Pool {
            spec,
            v4,
            lo,
            hi,
            cursor: lo,
            cooling: BTreeMap::new(),
            occupied: fixed.clone(),
            fixed,
            size,
            allocated: 0,
        }
    }

    pub(crate) fn name(&self) -> &str {
        &self.spec.name
    }

    pub(crate) fn is_v4(&self) -> bool {
        self.v4
    }

    pub(crate) fn size(&self) -> u128 {
        self.size
    }

    /// First address of the CIDR.
    pub(crate) fn first(&self) -> IpAddr {
        from_u128(self.lo, self.v4)
    }

    /// Last address of the CIDR.
    pub(crate) fn last(&self) -> IpAddr {
        from_u128(self.hi, self.v4)
    }

    pub(crate) fn cursor(&self) -> IpAddr {
        from_u128(self.cursor, self.v4)
    }

    /// Restores a replicated cursor; one outside the CIDR restarts at the beginning.
    pub(crate) fn set_cursor(&mut self, cursor: IpAddr) {
        self.cursor = if self.contains(cursor) { to_u128(cursor) } else { self.lo };
    }

    pub(crate) fn contains(&self, a: IpAddr) -> bool {
        a.is_ipv4() == self.v4 && (self.lo..=self.hi).contains(&to_u128(a))
    }

    /// Never handed out (network, broadcast, anycast, gateway, excluded). `a` must be inside.
    pub(crate) fn is_fixed(&self, a: IpAddr) -> bool {
        self.fixed.contains(to_u128(a))
    }

    /// Marks `a` as not available to a search.
    pub(crate) fn occupy(&mut self, a: IpAddr) {
        let n = to_u128(a);
        self.occupied.insert(n, n);
    }

    /// Marks the addresses `[a, b]` (numbers, `a <= b`, inside the pool) as not available.
    pub(crate) fn occupy_range(&mut self, a: u128, b: u128) {
        self.occupied.insert(a, b);
    }

    /// Makes `a` available to a search again. The caller has checked that nothing else (an
    /// allocation, a reservation, a cooldown) still holds it; fixed addresses stay occupied.
    pub(crate) fn vacate(&mut self, a: IpAddr) {
        let n = to_u128(a);
        if !self.fixed.contains(n) {
            self.occupied.remove(n, n);
        }
    }

    /// The next free address at or after the cursor, wrapping around once. O(log n).
    pub(crate) fn find_free(&self) -> Option<IpAddr> {
        self.occupied
            .first_gap(self.cursor, self.hi)
            .or_else(|| self.occupied.first_gap(self.lo, self.hi))
            .map(|n| from_u128(n, self.v4))
    }

    /// Moves the cursor past `a`, which was just handed out by a search.
    pub(crate) fn advance_cursor(&mut self, a: IpAddr) {
        self.cursor = match to_u128(a).checked_add(1) {
            Some(n) if n <= self.hi => n,
            _ => self.lo,
        };
    }

    /// Occupied addresses of the CIDR, fixed ones included.
    pub(crate) fn occupied_count(&self) -> u128 {
        self.occupied.count_in(self.lo, self.hi)
    }

    /// Number of occupied runs: the index's memory is proportional to this.
    pub(crate) fn index_runs(&self) -> usize {
        self.occupied.runs()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn spec(cidr: &str) -> PoolSpec {
        PoolSpec {
            name: "p".into(),
            cidr: cidr.parse().unwrap(),
            gateway: None,
            vlan: None,
            routes: vec![],
            dns: Default::default(),
            exclude: vec![],
            selector: Default::default(),
            default: false,
            reuse_cooldown_secs: 0,
        }
    }

    #[test]
    fn ipv4_size_excludes_network_and_broadcast_up_to_slash_30() {
        assert_eq!(Pool::new(spec("10.0.0.0/24")).size(), 254);
        assert_eq!(Pool::new(spec("10.0.0.0/30")).size(), 2);
        assert_eq!(Pool::new(spec("10.0.0.0/31")).size(), 2);
        assert_eq!(Pool::new(spec("10.0.0.1/32")).size(), 1);
        assert_eq!(Pool::new(spec("10.0.0.0/8")).size(), (1 << 24) - 2);
    }

    #[test]
    fn ipv6_size_excludes_the_anycast_address_up_to_slash_126() {
        assert_eq!(Pool::new(spec("fd00::/64")).size(), (1u128 << 64) - 1);
        assert_eq!(Pool::new(spec("fd00::/126")).size(), 3);
        assert_eq!(Pool::new(spec("fd00::/127")).size(), 2);
        assert_eq!(Pool::new(spec("fd00::1/128")).size(), 1);
    }

    #[test]
    fn gateway_and_exclusions_count_once_even_when_they_overlap() {
        let mut s = spec("10.0.0.0/24");
        s.gateway = Some("10.0.0.1".parse().unwrap());
        s.exclude = vec!["10.0.0.0-10.0.0.10".parse().unwrap(), "10.0.0.5".parse().unwrap()];
        // .0-.10 (11 addresses, includes network and gateway) and .255.
        assert_eq!(Pool::new(s).size(), 256 - 12);
    }

    #[test]
    fn search_is_next_fit_and_wraps_once() {
        let mut p = Pool::new(spec("10.0.0.0/29"));
        let a = p.find_free().unwrap();
        assert_eq!(a, "10.0.0.1".parse::<IpAddr>().unwrap());
        p.occupy(a);
        p.advance_cursor(a);
        let b = p.find_free().unwrap();
        assert_eq!(b, "10.0.0.2".parse::<IpAddr>().unwrap());
        p.occupy(b);
        p.advance_cursor(b);
        p.vacate(a);
        // Next-fit: .3 before the freed .1.
        assert_eq!(p.find_free().unwrap(), "10.0.0.3".parse::<IpAddr>().unwrap());
        for n in 3..=6 {
            let x: IpAddr = format!("10.0.0.{n}").parse().unwrap();
            p.occupy(x);
            p.advance_cursor(x);
        }
        // Wrapped back to the freed .1.
        assert_eq!(p.find_free().unwrap(), a);
        p.occupy(a);
        assert_eq!(p.find_free(), None);
    }

    #[test]
    fn vacate_never_frees_a_fixed_address() {
        let mut s = spec("10.0.0.0/30");
        s.gateway = Some("10.0.0.1".parse().unwrap());
        let mut p = Pool::new(s);
        p.vacate("10.0.0.1".parse().unwrap());
        p.vacate("10.0.0.0".parse().unwrap());
        assert_eq!(p.find_free().unwrap(), "10.0.0.2".parse::<IpAddr>().unwrap());
        p.occupy("10.0.0.2".parse().unwrap());
        assert_eq!(p.find_free(), None);
    }
}
