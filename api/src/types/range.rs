//! An inclusive address range, written `a`, `a-b` or as a CIDR.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use ipnet::IpNet;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct IpRange {
    pub start: IpAddr,
    pub end: IpAddr,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid address range {input:?}: {reason}")]
pub struct IpRangeError {
    pub input: String,
    pub reason: &'static str,
}

impl FromStr for IpRange {
    type Err = IpRangeError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |reason| IpRangeError { input: s.to_owned(), reason };
        let s = s.trim();
        if s.contains('/') {
            let net: IpNet = s.parse().map_err(|_| err("not a valid CIDR"))?;
            return Ok(IpRange { start: net.network(), end: net.broadcast() });
        }
        let (a, b) = match s.split_once('-') {
            Some((a, b)) => (a.trim(), b.trim()),
            None => (s, s),
        };
        let start: IpAddr = a.parse().map_err(|_| err("start is not an IP address"))?;
        let end: IpAddr = b.parse().map_err(|_| err("end is not an IP address"))?;
        if start.is_ipv4() != end.is_ipv4() {
            return Err(err("start and end are of different IP families"));
        }
        if start > end {
            return Err(err("start is after end"));
        }
        Ok(IpRange { start, end })
    }
}

impl fmt::Display for IpRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.start == self.end { write!(f, "{}", self.start) } else { write!(f, "{}-{}", self.start, self.end) }
    }
}

impl Serialize for IpRange {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for IpRange {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_single_range_and_cidr() {
        let r: IpRange = "10.0.0.5".parse().unwrap();
        assert_eq!(r.start, r.end);
        let r: IpRange = "10.0.0.5-10.0.0.9".parse().unwrap();
        assert_eq!(r.to_string(), "10.0.0.5-10.0.0.9");
        let r: IpRange = "10.0.1.0/30".parse().unwrap();
        assert_eq!(r.to_string(), "10.0.1.0-10.0.1.3");
    }

    #[test]
    fn rejects_reversed_and_mixed_ranges() {
        assert!("10.0.0.9-10.0.0.5".parse::<IpRange>().is_err());
        assert!("10.0.0.1-::1".parse::<IpRange>().is_err());
        assert!("nonsense".parse::<IpRange>().is_err());
    }
}
