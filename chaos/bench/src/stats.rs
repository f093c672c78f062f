//! Pure arithmetic over measurements: latency percentiles, medians, and the distinctness check
//! of acknowledged allocations.

use std::collections::HashMap;
use std::net::Ipv4Addr;

use crate::workload::Acked;

#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct LatencySummary {
    pub count: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub mean_ms: f64,
}

/// Percentiles by nearest rank over latencies in microseconds (sorted in place).
pub fn summarize(latencies_us: &mut [u64]) -> Option<LatencySummary> {
    if latencies_us.is_empty() {
        return None;
    }
    latencies_us.sort_unstable();
    let ms = |us: u64| us as f64 / 1000.0;
    let sum: u128 = latencies_us.iter().map(|&v| u128::from(v)).sum();
    Some(LatencySummary {
        count: latencies_us.len() as u64,
        p50_ms: ms(nearest_rank(latencies_us, 0.50)),
        p99_ms: ms(nearest_rank(latencies_us, 0.99)),
        max_ms: ms(latencies_us[latencies_us.len() - 1]),
        mean_ms: sum as f64 / latencies_us.len() as f64 / 1000.0,
    })
}

/// The smallest value with at least `q` of the sample at or below it. `sorted` is not empty.
pub fn nearest_rank(sorted: &[u64], q: f64) -> u64 {
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// The median (mean of the two middle values for an even count).
pub fn median(values: &[f64]) -> Option<f64> {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 })
}

/// An address acknowledged to two different owners.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Duplicate {
    pub address: Ipv4Addr,
    pub first: String,
    pub second: String,
}

/// Every address acknowledged to more than one owner (an owner acknowledged twice with the same
/// address is an idempotent repeat, not a duplicate).
pub fn duplicates<'a>(acked: impl IntoIterator<Item = &'a Acked>) -> Vec<Duplicate> {
    let mut holder: HashMap<Ipv4Addr, &str> = HashMap::new();
    let mut out = Vec::new();
    for a in acked {
        match holder.get(&a.address) {
            Some(first) if *first != a.owner => {
                out.push(Duplicate { address: a.address, first: (*first).to_owned(), second: a.owner.clone() });
            }
            Some(_) => {}
            None => {
                holder.insert(a.address, &a.owner);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acked(addr: [u8; 4], owner: &str) -> Acked {
        Acked { address: Ipv4Addr::from(addr), owner: owner.into(), conflicts: 0 }
    }

    #[test]
    fn percentiles_by_nearest_rank() {
        let mut v: Vec<u64> = (1..=100).rev().map(|x| x * 1000).collect();
        let s = summarize(&mut v).expect("non-empty");
        assert_eq!((s.p50_ms, s.p99_ms, s.max_ms), (50.0, 99.0, 100.0));
        assert_eq!(s.mean_ms, 50.5);
        assert_eq!(nearest_rank(&[7], 0.99), 7);
        assert_eq!(nearest_rank(&[1, 2], 0.5), 1);
        assert!(summarize(&mut []).is_none());
    }

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(median(&[]), None);
    }

    #[test]
    fn finds_an_address_given_to_two_owners() {
        let ok = [acked([10, 0, 0, 1], "a"), acked([10, 0, 0, 2], "b"), acked([10, 0, 0, 1], "a")];
        assert!(duplicates(&ok).is_empty());
        let bad = [acked([10, 0, 0, 1], "a"), acked([10, 0, 0, 2], "b"), acked([10, 0, 0, 1], "c")];
        assert_eq!(
            duplicates(&bad),
            vec![Duplicate { address: Ipv4Addr::new(10, 0, 0, 1), first: "a".into(), second: "c".into() }]
        );
    }
}
