//! [`AddrMap`], [`AddrSet`] and [`TaggedAddrSet`]: a `BTreeMap` and two sets keyed by address,
//! kept per family. An `IpAddr` is 17 bytes. An IPv4 key here is its `u32`; an IPv6
//! address is split into its upper 64 bits (one outer entry per /64, of which a pool has one or
//! a few) and its lower 64 bits (the key of the inner tree). The state holds one entry per
//! allocation in each of three such structures, and B-tree leaves filled in address order stay
//! a little over half full, so every byte of a key is paid nearly twice.
//!
//! Order is `IpAddr`'s: every IPv4 address before every IPv6 one, then by value. So iteration,
//! and with it a snapshot's bytes, is what a `BTreeMap<IpAddr, _>` gives.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::ops::RangeInclusive;

fn v4(k: u32) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(k))
}

/// An IPv6 address's (upper, lower) 64 bits.
fn halves(a: Ipv6Addr) -> (u64, u64) {
    let n = u128::from(a);
    ((n >> 64) as u64, n as u64)
}

fn v6(hi: u64, lo: u64) -> IpAddr {
    IpAddr::V6(Ipv6Addr::from((u128::from(hi) << 64) | u128::from(lo)))
}

/// The part of `first..=last` (in `IpAddr` order) in each family: a range of IPv4 keys, and
/// the first and last IPv6 address as halves (`None` where the range has none of a family).
#[allow(clippy::type_complexity)]
fn split(first: IpAddr, last: IpAddr) -> (Option<RangeInclusive<u32>>, Option<((u64, u64), (u64, u64))>) {
    if first > last {
        return (None, None);
    }
    match (first, last) {
        (IpAddr::V4(f), IpAddr::V4(l)) => (Some(u32::from(f)..=u32::from(l)), None),
        (IpAddr::V4(f), IpAddr::V6(l)) => (Some(u32::from(f)..=u32::MAX), Some(((0, 0), halves(l)))),
        (IpAddr::V6(f), IpAddr::V6(l)) => (None, Some((halves(f), halves(l)))),
        // `first > last` already.
        (IpAddr::V6(_), IpAddr::V4(_)) => (None, None),
    }
}

/// Of the inner tree under upper half `hi`, the lower halves `(first, last)` covers.
fn lower_bounds(hi: u64, (first, last): ((u64, u64), (u64, u64))) -> RangeInclusive<u64> {
    let lo = if hi == first.0 { first.1 } else { 0 };
    let hi_end = if hi == last.0 { last.1 } else { u64::MAX };
    lo..=hi_end
}

/// A map from address to `V`, in address order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct AddrMap<V> {
    v4: BTreeMap<u32, V>,
    /// Upper half → lower half → value; no inner map is empty.
    v6: BTreeMap<u64, BTreeMap<u64, V>>,
    /// Entries in `v6`.
    len6: usize,
}

impl<V> Default for AddrMap<V> {
    fn default() -> Self {
        AddrMap { v4: BTreeMap::new(), v6: BTreeMap::new(), len6: 0 }
    }
}

impl<V> AddrMap<V> {
    pub(crate) fn len(&self) -> usize {
        self.v4.len() + self.len6
    }

    pub(crate) fn get(&self, address: &IpAddr) -> Option<&V> {
        match address {
            IpAddr::V4(a) => self.v4.get(&u32::from(*a)),
            IpAddr::V6(a) => {
                let (hi, lo) = halves(*a);
                self.v6.get(&hi)?.get(&lo)
            }
        }
    }

    pub(crate) fn get_mut(&mut self, address: &IpAddr) -> Option<&mut V> {
        match address {
            IpAddr::V4(a) => self.v4.get_mut(&u32::from(*a)),
            IpAddr::V6(a) => {
                let (hi, lo) = halves(*a);
                self.v6.get_mut(&hi)?.get_mut(&lo)
            }
        }
    }

    pub(crate) fn contains_key(&self, address: &IpAddr) -> bool {
        self.get(address).is_some()
    }

    pub(crate) fn insert(&mut self, address: IpAddr, value: V) -> Option<V> {
        match address {
            IpAddr::V4(a) => self.v4.insert(u32::from(a), value),
            IpAddr::V6(a) => {
                let (hi, lo) = halves(a);
                let old = self.v6.entry(hi).or_default().insert(lo, value);
                if old.is_none() {
                    self.len6 += 1;
                }
                old
            }
        }
    }

    pub(crate) fn remove(&mut self, address: &IpAddr) -> Option<V> {
        match address {
            IpAddr::V4(a) => self.v4.remove(&u32::from(*a)),
            IpAddr::V6(a) => {
                let (hi, lo) = halves(*a);
                let inner = self.v6.get_mut(&hi)?;
                let old = inner.remove(&lo)?;
                if inner.is_empty() {
                    self.v6.remove(&hi);
                }
                self.len6 -= 1;
                Some(old)
            }
        }
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = (IpAddr, &V)> {
        let a4 = self.v4.iter().map(|(k, v)| (v4(*k), v));
        let a6 = self.v6.iter().flat_map(|(hi, inner)| inner.iter().map(move |(lo, v)| (v6(*hi, *lo), v)));
        a4.chain(a6)
    }

    /// The entries from `first` to `last`, both included, in address order.
    pub(crate) fn range(&self, first: IpAddr, last: IpAddr) -> impl Iterator<Item = (IpAddr, &V)> {
        let (r4, r6) = split(first, last);
        let a4 = r4.into_iter().flat_map(move |r| self.v4.range(r).map(|(k, v)| (v4(*k), v)));
        let a6 = r6.into_iter().flat_map(move |bounds| {
            self.v6.range(bounds.0.0..=bounds.1.0).flat_map(move |(hi, inner)| {
                inner.range(lower_bounds(*hi, bounds)).map(move |(lo, v)| (v6(*hi, *lo), v))
            })
        });
        a4.chain(a6)
    }
}

impl<V> FromIterator<(IpAddr, V)> for AddrMap<V> {
    /// Built in bulk (full leaves) when the entries come in address order, as a snapshot's do.
    fn from_iter<I: IntoIterator<Item = (IpAddr, V)>>(iter: I) -> Self {
        let mut map = AddrMap::default();
        let mut e4 = Vec::new();
        let mut e6: Vec<(u64, Vec<(u64, V)>)> = Vec::new();
        for (address, value) in iter {
            match address {
                IpAddr::V4(a) => e4.push((u32::from(a), value)),
                IpAddr::V6(a) => {
                    let (hi, lo) = halves(a);
                    match e6.last_mut() {
                        Some((last, inner)) if *last == hi => inner.push((lo, value)),
                        _ => e6.push((hi, vec![(lo, value)])),
                    }
                }
            }
        }
        map.v4 = e4.into_iter().collect();
        for (hi, inner) in e6 {
            // Out-of-order input may name an upper half twice: merge, later entries winning.
            match map.v6.get_mut(&hi) {
                Some(tree) => tree.extend(inner),
                None => {
                    map.v6.insert(hi, inner.into_iter().collect());
                }
            }
        }
        map.len6 = map.v6.values().map(BTreeMap::len).sum();
        map
    }
}

/// A set of addresses, in address order: an [`AddrMap`] of `()` (as `BTreeSet` is a `BTreeMap`
/// of a zero-sized value, so the layout is a set's).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct AddrSet(AddrMap<()>);

impl AddrSet {
    pub(crate) fn is_empty(&self) -> bool {
        self.0.len() == 0
    }

    /// Whether the address was not in the set.
    pub(crate) fn insert(&mut self, address: IpAddr) -> bool {
        self.0.insert(address, ()).is_none()
    }

    /// Whether the address was in the set.
    pub(crate) fn remove(&mut self, address: &IpAddr) -> bool {
        self.0.remove(address).is_some()
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = IpAddr> {
        self.0.iter().map(|(a, _)| a)
    }
}

impl FromIterator<IpAddr> for AddrSet {
    /// Built in bulk when the addresses come in order.
    fn from_iter<I: IntoIterator<Item = IpAddr>>(iter: I) -> Self {
        AddrSet(iter.into_iter().map(|a| (a, ())).collect())
    }
}

/// A set of (4-byte tag, address) pairs, ordered by tag and then address: for finding the
/// addresses filed under one tag (the attachment index files each address under a hash).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct TaggedAddrSet {
    v4: BTreeSet<([u8; 4], u32)>,
    v6: BTreeSet<([u8; 4], [u8; 16])>,
}

impl TaggedAddrSet {
    /// Whether the pair was not in the set.
    pub(crate) fn insert(&mut self, (tag, address): ([u8; 4], IpAddr)) -> bool {
        match address {
            IpAddr::V4(a) => self.v4.insert((tag, u32::from(a))),
            IpAddr::V6(a) => self.v6.insert((tag, a.octets())),
        }
    }

    /// Whether the pair was in the set.
    pub(crate) fn remove(&mut self, (tag, address): &([u8; 4], IpAddr)) -> bool {
        match address {
            IpAddr::V4(a) => self.v4.remove(&(*tag, u32::from(*a))),
            IpAddr::V6(a) => self.v6.remove(&(*tag, a.octets())),
        }
    }

    /// The addresses filed under `tag`, in address order.
    pub(crate) fn tagged(&self, tag: [u8; 4]) -> impl Iterator<Item = IpAddr> {
        let a4 = self.v4.range((tag, u32::MIN)..=(tag, u32::MAX)).map(|&(_, a)| IpAddr::V4(Ipv4Addr::from(a)));
        let a6 = self.v6.range((tag, [0; 16])..=(tag, [0xff; 16])).map(|&(_, a)| IpAddr::V6(Ipv6Addr::from(a)));
        a4.chain(a6)
    }
}

impl FromIterator<([u8; 4], IpAddr)> for TaggedAddrSet {
    fn from_iter<I: IntoIterator<Item = ([u8; 4], IpAddr)>>(iter: I) -> Self {
        let (mut a4, mut a6) = (Vec::new(), Vec::new());
        for (tag, address) in iter {
            match address {
                IpAddr::V4(a) => a4.push((tag, u32::from(a))),
                IpAddr::V6(a) => a6.push((tag, a.octets())),
            }
        }
        TaggedAddrSet { v4: a4.into_iter().collect(), v6: a6.into_iter().collect() }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    /// The same operations on an `AddrMap` and a `BTreeMap<IpAddr, _>` give the same answers
    /// and the same order, across both families and their boundaries.
    #[test]
    fn behaves_as_a_btreemap_of_ipaddr() {
        let addresses = [
            "10.0.0.1",
            "0.0.0.0",
            "255.255.255.255",
            "10.0.0.2",
            "::",
            "::1",
            "fd00::5",
            "::ffff:10.0.0.1",
            "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
            "192.168.1.1",
            "fd00:0:0:1::1",
            "fd00::ffff:0:0:1",
            "fd00:0:0:1:ffff:ffff:ffff:ffff",
        ]
        .map(ip);
        let mut ours = AddrMap::default();
        let mut std = BTreeMap::new();
        for (i, a) in addresses.iter().enumerate() {
            assert_eq!(ours.insert(*a, i), std.insert(*a, i));
        }
        assert_eq!(ours.insert(ip("10.0.0.1"), 99), std.insert(ip("10.0.0.1"), 99));
        assert_eq!(ours.len(), std.len());
        assert_eq!(
            ours.iter().map(|(a, v)| (a, *v)).collect::<Vec<_>>(),
            std.iter().map(|(a, v)| (*a, *v)).collect::<Vec<_>>()
        );
        let ranges = [
            ("10.0.0.0", "10.0.0.255"),
            ("0.0.0.0", "255.255.255.255"),
            ("10.0.0.2", "::1"),
            ("::", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"),
            ("fd00::", "fd00::ffff"),
            ("0.0.0.0", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"),
            ("10.0.0.1", "10.0.0.1"),
            ("::1", "10.0.0.1"),
            ("fd00::6", "fd00:0:0:1::1"),
            ("fd00::5", "fd00:0:0:1::"),
            ("fd00:0:0:0:ffff::", "fd00:0:0:2::"),
            ("fd00:0:0:1::2", "fd00:0:0:1:ffff:ffff:ffff:ffff"),
        ];
        for (f, l) in ranges {
            let (f, l) = (ip(f), ip(l));
            let expected: Vec<(IpAddr, usize)> =
                if f <= l { std.range(f..=l).map(|(a, v)| (*a, *v)).collect() } else { Vec::new() };
            assert_eq!(ours.range(f, l).map(|(a, v)| (a, *v)).collect::<Vec<_>>(), expected, "{f}..={l}");
        }
        for a in addresses.iter().chain([ip("10.9.9.9"), ip("fd00::9")].iter()) {
            assert_eq!(ours.get(a), std.get(a));
            assert_eq!(ours.contains_key(a), std.contains_key(a));
        }
        *ours.get_mut(&ip("::1")).unwrap() += 100;
        *std.get_mut(&ip("::1")).unwrap() += 100;
        // Removing both of `fd00:0:0:1::/64`'s addresses empties its inner tree.
        for a in addresses[..5].iter().chain(&addresses[10..11]).chain(&addresses[12..]) {
            assert_eq!(ours.remove(a), std.remove(a));
            assert_eq!(ours.remove(a), None);
            assert_eq!(ours.len(), std.len());
        }
        assert!(!ours.v6.contains_key(&0xfd00_0000_0000_0001), "an emptied /64 leaves no inner tree");
        assert_eq!(
            ours.iter().map(|(a, v)| (a, *v)).collect::<Vec<_>>(),
            std.iter().map(|(a, v)| (*a, *v)).collect::<Vec<_>>()
        );
        let rebuilt: AddrMap<usize> = std.iter().map(|(a, v)| (*a, *v)).collect();
        assert_eq!(rebuilt, ours);
        assert_eq!(AddrMap::<u8>::default().iter().count(), 0);
    }

    #[test]
    fn a_set_keeps_address_order_across_families() {
        let mut set = AddrSet::default();
        for a in ["fd00::1", "10.0.0.2", "::", "10.0.0.1", "255.255.255.255", "fd00:0:0:1::", "::2"] {
            assert!(set.insert(ip(a)));
        }
        assert!(!set.insert(ip("10.0.0.1")));
        let order: Vec<IpAddr> = set.iter().collect();
        let mut sorted = order.clone();
        sorted.sort();
        assert_eq!(order, sorted);
        assert_eq!(order.len(), 7);
        assert!(set.remove(&ip("::")) && !set.remove(&ip("::")));
        assert_eq!(set.iter().collect::<AddrSet>(), set);
        for a in set.clone().iter() {
            set.remove(&a);
        }
        assert!(set.is_empty());
    }

    #[test]
    fn a_tagged_set_finds_every_address_under_a_tag_and_no_other() {
        let pairs = [
            ([1, 0, 0, 0], "10.0.0.1"),
            ([1, 0, 0, 0], "fd00::1"),
            ([1, 0, 0, 0], "0.0.0.0"),
            ([2, 0, 0, 0], "10.0.0.2"),
            ([0, 0, 0, 1], "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"),
            ([1, 0, 0, 0], "::"),
        ]
        .map(|(t, a)| (t, ip(a)));
        let mut set: TaggedAddrSet = pairs.iter().copied().collect();
        let under = |set: &TaggedAddrSet, t| set.tagged(t).collect::<Vec<_>>();
        assert_eq!(under(&set, [1, 0, 0, 0]), ["0.0.0.0", "10.0.0.1", "::", "fd00::1"].map(ip));
        assert_eq!(under(&set, [0, 0, 0, 1]), [ip("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff")]);
        assert!(under(&set, [9, 9, 9, 9]).is_empty());
        assert!(!set.insert(pairs[0]));
        assert!(set.remove(&pairs[1]) && !set.remove(&pairs[1]));
        assert_eq!(under(&set, [1, 0, 0, 0]), ["0.0.0.0", "10.0.0.1", "::"].map(ip));
    }
}
