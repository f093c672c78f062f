//! [`IntervalSet`]: a set of `u128` values kept as merged, inclusive intervals.
//!
//! A pool's occupied addresses are one of these, so memory grows with the number of runs of
//! occupied addresses (at most the number of allocations), never with the size of the pool, and
//! every operation is O(log n).

use std::collections::BTreeMap;

/// Disjoint, non-adjacent inclusive intervals `start -> end`. Canonical: the same set of values
/// always has the same representation, so derived `PartialEq` compares sets.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct IntervalSet {
    runs: BTreeMap<u128, u128>,
}

impl IntervalSet {
    /// The run containing `x`, if any.
    pub(crate) fn run_containing(&self, x: u128) -> Option<(u128, u128)> {
        self.runs.range(..=x).next_back().filter(|&(_, &end)| end >= x).map(|(&s, &e)| (s, e))
    }

    pub(crate) fn contains(&self, x: u128) -> bool {
        self.run_containing(x).is_some()
    }

    /// Adds every value of `[a, b]` (`a <= b`).
    pub(crate) fn insert(&mut self, a: u128, b: u128) {
        debug_assert!(a <= b);
        let (mut start, mut end) = (a, b);
        // A run starting at or before `a` that overlaps or touches `[a, b]`.
        if let Some((&s, &e)) = self.runs.range(..=a).next_back()
            && (e >= a || e.checked_add(1) == Some(a))
        {
            start = s;
            end = end.max(e);
            self.runs.remove(&s);
        }
        // Runs starting inside `[a, end + 1]`.
        loop {
            let limit = end.saturating_add(1);
            let Some((&s, &e)) = self.runs.range(start..=limit).next() else {
                break;
            };
            self.runs.remove(&s);
            end = end.max(e);
        }
        self.runs.insert(start, end);
    }

    /// Removes every value of `[a, b]` (`a <= b`).
    pub(crate) fn remove(&mut self, a: u128, b: u128) {
        debug_assert!(a <= b);
        let mut tail = None;
        // A run starting before `a` that reaches into `[a, b]`: cut it at `a - 1`.
        if let Some((&s, &e)) = self.runs.range(..a).next_back()
            && e >= a
        {
            // `s < a`, so `a - 1` does not underflow.
            self.runs.insert(s, a - 1);
            if e > b {
                tail = Some((b + 1, e));
            }
        }
        let inside: Vec<(u128, u128)> = self.runs.range(a..=b).map(|(&s, &e)| (s, e)).collect();
        for (s, e) in inside {
            self.runs.remove(&s);
            if e > b {
                tail = Some((b + 1, e));
            }
        }
        if let Some((s, e)) = tail {
            self.runs.insert(s, e);
        }
    }

    /// The first value `>= from` and `<= hi` that is not in the set.
    pub(crate) fn first_gap(&self, from: u128, hi: u128) -> Option<u128> {
        if from > hi {
            return None;
        }
        match self.run_containing(from) {
            None => Some(from),
            // Runs are merged, so `end + 1` is not in the set.
            Some((_, end)) if end < hi => Some(end + 1),
            Some(_) => None,
        }
    }

    /// How many values of `[lo, hi]` are in the set. O(runs in the range).
    pub(crate) fn count_in(&self, lo: u128, hi: u128) -> u128 {
        let mut n: u128 = 0;
        let first = self.run_containing(lo).map(|(s, _)| s).unwrap_or(lo);
        for (&s, &e) in self.runs.range(first..=hi) {
            let (s, e) = (s.max(lo), e.min(hi));
            n = n.saturating_add(e - s).saturating_add(1);
        }
        n
    }

    /// Number of runs (memory use is proportional to this).
    pub(crate) fn runs(&self) -> usize {
        self.runs.len()
    }

    #[cfg(test)]
    pub(crate) fn iter(&self) -> impl Iterator<Item = (u128, u128)> + '_ {
        self.runs.iter().map(|(&s, &e)| (s, e))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::collections::BTreeSet;

    use proptest::prelude::*;

    use super::*;

    fn naive(set: &IntervalSet) -> BTreeSet<u128> {
        set.iter().flat_map(|(s, e)| s..=e).collect()
    }

    #[test]
    fn adjacent_runs_merge_and_removal_splits() {
        let mut s = IntervalSet::default();
        s.insert(1, 3);
        s.insert(4, 6);
        assert_eq!(s.iter().collect::<Vec<_>>(), vec![(1, 6)]);
        s.remove(3, 4);
        assert_eq!(s.iter().collect::<Vec<_>>(), vec![(1, 2), (5, 6)]);
        assert_eq!(s.first_gap(1, 10), Some(3));
        assert_eq!(s.first_gap(5, 6), None);
        assert_eq!(s.count_in(0, 100), 4);
        assert_eq!(s.count_in(2, 5), 2);
    }

    #[test]
    fn extreme_values_do_not_overflow() {
        let mut s = IntervalSet::default();
        s.insert(u128::MAX - 1, u128::MAX);
        s.insert(0, 0);
        assert!(s.contains(u128::MAX));
        assert_eq!(s.first_gap(u128::MAX - 1, u128::MAX), None);
        s.remove(u128::MAX, u128::MAX);
        assert_eq!(s.first_gap(u128::MAX - 1, u128::MAX), Some(u128::MAX));
        s.remove(0, u128::MAX);
        assert_eq!(s.runs(), 0);
    }

    proptest! {
        #[test]
        fn behaves_like_a_plain_set(ops in proptest::collection::vec((any::<bool>(), 0u128..64, 0u128..8), 0..60)) {
            let mut s = IntervalSet::default();
            let mut model = BTreeSet::new();
            for (add, a, len) in ops {
                let b = a + len;
                if add { s.insert(a, b); model.extend(a..=b); } else { s.remove(a, b); for x in a..=b { model.remove(&x); } }
                prop_assert_eq!(naive(&s), model.clone());
                // Canonical: no two runs touch.
                let runs: Vec<_> = s.iter().collect();
                for w in runs.windows(2) { prop_assert!(w[0].1 + 1 < w[1].0); }
                for from in 0u128..75 {
                    let want = (from..=72).find(|x| !model.contains(x));
                    prop_assert_eq!(s.first_gap(from, 72), want);
                }
                prop_assert_eq!(s.count_in(10, 40), model.range(10..=40).count() as u128);
            }
        }
    }
}
