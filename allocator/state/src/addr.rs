//! [`AddrMap`] and [`AddrSet`]: a `BTreeMap` and a `BTreeSet` keyed by address, kept per
//! family. An `IpAddr` is 17 bytes; an IPv4 key here is its `u32` (4 bytes) and an IPv6 key its
//! `u128`. The state holds one entry per allocation in each of two such structures, and B-tree
//! leaves filled in address order stay a little over half full, so on an IPv4 pool the two keys
//! cost ~60 bytes per allocation as `IpAddr`s and ~15 as `u32`s.
//!
//! Order is `IpAddr`'s: every IPv4 address before every IPv6 one, then by value. So iteration,
//! and with it a snapshot's bytes, is what a `BTreeMap<IpAddr, _>` gives.

use std::collections::{BTreeMap, BTreeSet, btree_map, btree_set};
use std::iter::{Chain, Map};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::ops::RangeInclusive;

fn v4(k: &u32) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(*k))
}

fn v6(k: &u128) -> IpAddr {
    IpAddr::V6(Ipv6Addr::from(*k))
}

/// The part of `first..=last` (in `IpAddr` order) in each family, as ranges of their keys
/// (`None` where the range has none of that family).
fn split(first: IpAddr, last: IpAddr) -> (Option<RangeInclusive<u32>>, Option<RangeInclusive<u128>>) {
    if first > last {
        return (None, None);
    }
    match (first, last) {
        (IpAddr::V4(f), IpAddr::V4(l)) => (Some(u32::from(f)..=u32::from(l)), None),
        (IpAddr::V4(f), IpAddr::V6(l)) => (Some(u32::from(f)..=u32::MAX), Some(0..=u128::from(l))),
        (IpAddr::V6(f), IpAddr::V6(l)) => (None, Some(u128::from(f)..=u128::from(l))),
        // `first > last` already.
        (IpAddr::V6(_), IpAddr::V4(_)) => (None, None),
    }
}

/// A map from address to `V`, in address order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct AddrMap<V> {
    v4: BTreeMap<u32, V>,
    v6: BTreeMap<u128, V>,
}

impl<V> Default for AddrMap<V> {
    fn default() -> Self {
        AddrMap { v4: BTreeMap::new(), v6: BTreeMap::new() }
    }
}

type Entry4<'a, V> = fn((&'a u32, &'a V)) -> (IpAddr, &'a V);
type Entry6<'a, V> = fn((&'a u128, &'a V)) -> (IpAddr, &'a V);

/// An [`AddrMap`]'s entries in address order.
pub(crate) type Iter<'a, V> =
    Chain<Map<btree_map::Iter<'a, u32, V>, Entry4<'a, V>>, Map<btree_map::Iter<'a, u128, V>, Entry6<'a, V>>>;

impl<V> AddrMap<V> {
    pub(crate) fn len(&self) -> usize {
        self.v4.len() + self.v6.len()
    }

    pub(crate) fn get(&self, address: &IpAddr) -> Option<&V> {
        match address {
            IpAddr::V4(a) => self.v4.get(&u32::from(*a)),
            IpAddr::V6(a) => self.v6.get(&u128::from(*a)),
        }
    }

    pub(crate) fn get_mut(&mut self, address: &IpAddr) -> Option<&mut V> {
        match address {
            IpAddr::V4(a) => self.v4.get_mut(&u32::from(*a)),
            IpAddr::V6(a) => self.v6.get_mut(&u128::from(*a)),
        }
    }

    pub(crate) fn contains_key(&self, address: &IpAddr) -> bool {
        self.get(address).is_some()
    }

    pub(crate) fn insert(&mut self, address: IpAddr, value: V) -> Option<V> {
        match address {
            IpAddr::V4(a) => self.v4.insert(u32::from(a), value),
            IpAddr::V6(a) => self.v6.insert(u128::from(a), value),
        }
    }

    pub(crate) fn remove(&mut self, address: &IpAddr) -> Option<V> {
        match address {
            IpAddr::V4(a) => self.v4.remove(&u32::from(*a)),
            IpAddr::V6(a) => self.v6.remove(&u128::from(*a)),
        }
    }

    pub(crate) fn iter(&self) -> Iter<'_, V> {
        let e4: Entry4<'_, V> = |(k, v)| (v4(k), v);
        let e6: Entry6<'_, V> = |(k, v)| (v6(k), v);
        self.v4.iter().map(e4).chain(self.v6.iter().map(e6))
    }

    /// The entries from `first` to `last`, both included, in address order.
    pub(crate) fn range(&self, first: IpAddr, last: IpAddr) -> impl Iterator<Item = (IpAddr, &V)> {
        let (r4, r6) = split(first, last);
        let e4: Entry4<'_, V> = |(k, v)| (v4(k), v);
        let e6: Entry6<'_, V> = |(k, v)| (v6(k), v);
        r4.into_iter()
            .flat_map(move |r| self.v4.range(r).map(e4))
            .chain(r6.into_iter().flat_map(move |r| self.v6.range(r).map(e6)))
    }
}

impl<'a, V> IntoIterator for &'a AddrMap<V> {
    type Item = (IpAddr, &'a V);
    type IntoIter = Iter<'a, V>;
    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

impl<V> FromIterator<(IpAddr, V)> for AddrMap<V> {
    /// Built in bulk (full leaves) when the entries come in address order, as a snapshot's do.
    fn from_iter<I: IntoIterator<Item = (IpAddr, V)>>(iter: I) -> Self {
        let (mut e4, mut e6) = (Vec::new(), Vec::new());
        for (address, value) in iter {
            match address {
                IpAddr::V4(a) => e4.push((u32::from(a), value)),
                IpAddr::V6(a) => e6.push((u128::from(a), value)),
            }
        }
        AddrMap { v4: e4.into_iter().collect(), v6: e6.into_iter().collect() }
    }
}

/// A set of addresses, in address order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct AddrSet {
    v4: BTreeSet<u32>,
    v6: BTreeSet<u128>,
}

/// An [`AddrSet`]'s addresses in order.
pub(crate) type SetIter<'a> =
    Chain<Map<btree_set::Iter<'a, u32>, fn(&u32) -> IpAddr>, Map<btree_set::Iter<'a, u128>, fn(&u128) -> IpAddr>>;

impl AddrSet {
    pub(crate) fn is_empty(&self) -> bool {
        self.v4.is_empty() && self.v6.is_empty()
    }

    /// Whether the address was not in the set.
    pub(crate) fn insert(&mut self, address: IpAddr) -> bool {
        match address {
            IpAddr::V4(a) => self.v4.insert(u32::from(a)),
            IpAddr::V6(a) => self.v6.insert(u128::from(a)),
        }
    }

    /// Whether the address was in the set.
    pub(crate) fn remove(&mut self, address: &IpAddr) -> bool {
        match address {
            IpAddr::V4(a) => self.v4.remove(&u32::from(*a)),
            IpAddr::V6(a) => self.v6.remove(&u128::from(*a)),
        }
    }

    pub(crate) fn iter(&self) -> SetIter<'_> {
        self.v4.iter().map(v4 as fn(&u32) -> IpAddr).chain(self.v6.iter().map(v6 as fn(&u128) -> IpAddr))
    }
}

impl<'a> IntoIterator for &'a AddrSet {
    type Item = IpAddr;
    type IntoIter = SetIter<'a>;
    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

impl FromIterator<IpAddr> for AddrSet {
    fn from_iter<I: IntoIterator<Item = IpAddr>>(iter: I) -> Self {
        let (mut a4, mut a6) = (Vec::new(), Vec::new());
        for address in iter {
            match address {
                IpAddr::V4(a) => a4.push(u32::from(a)),
                IpAddr::V6(a) => a6.push(u128::from(a)),
            }
        }
        AddrSet { v4: a4.into_iter().collect(), v6: a6.into_iter().collect() }
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
        for a in &addresses[..5] {
            assert_eq!(ours.remove(a), std.remove(a));
            assert_eq!(ours.remove(a), None);
        }
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
        for a in ["fd00::1", "10.0.0.2", "::", "10.0.0.1", "255.255.255.255"] {
            assert!(set.insert(ip(a)));
        }
        assert!(!set.insert(ip("10.0.0.1")));
        let order: Vec<IpAddr> = set.iter().collect();
        let mut sorted = order.clone();
        sorted.sort();
        assert_eq!(order, sorted);
        assert_eq!(order.len(), 5);
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
