//! [`PoolBitmap`]: the value of the single pool key in the etcd pool-key layout. Bit `i` is set
//! when the pool's `i`-th address is allocated; the encoding stops at the last non-zero byte, so
//! the value grows with the allocations made (first fit keeps it dense), not with the pool.

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PoolBitmap {
    bytes: Vec<u8>,
}

impl PoolBitmap {
    pub fn decode(value: &[u8]) -> PoolBitmap {
        PoolBitmap { bytes: value.to_vec() }
    }

    pub fn encode(&self) -> Vec<u8> {
        let len = self.bytes.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
        self.bytes[..len].to_vec()
    }

    pub fn contains(&self, offset: u32) -> bool {
        let (byte, bit) = split(offset);
        self.bytes.get(byte).is_some_and(|b| b & bit != 0)
    }

    pub fn insert(&mut self, offset: u32) {
        let (byte, bit) = split(offset);
        if self.bytes.len() <= byte {
            self.bytes.resize(byte + 1, 0);
        }
        self.bytes[byte] |= bit;
    }

    /// The lowest clear offset in `from..until`.
    pub fn first_free(&self, from: u32, until: u32) -> Option<u32> {
        let mut offset = from;
        while offset < until {
            let (byte, _) = split(offset);
            match self.bytes.get(byte) {
                // Past the stored bytes everything is free.
                None => return Some(offset),
                // A full byte: skip to the next one.
                Some(0xff) => offset = (offset | 7) + 1,
                Some(_) if !self.contains(offset) => return Some(offset),
                Some(_) => offset += 1,
            }
        }
        None
    }

    pub fn len(&self) -> u64 {
        self.bytes.iter().map(|b| u64::from(b.count_ones())).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn split(offset: u32) -> (usize, u8) {
    ((offset / 8) as usize, 1 << (offset % 8))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_fit_fills_in_order_and_skips_full_bytes() {
        let mut b = PoolBitmap::default();
        for expected in 1..40 {
            let got = b.first_free(1, 64).expect("free offset");
            assert_eq!(got, expected);
            b.insert(got);
        }
        assert_eq!(b.len(), 39);
        assert!(b.contains(1) && b.contains(39) && !b.contains(0) && !b.contains(40));
    }

    #[test]
    fn finds_holes_and_reports_full() {
        let mut b = PoolBitmap::default();
        for o in 0..16 {
            if o != 11 {
                b.insert(o);
            }
        }
        assert_eq!(b.first_free(1, 16), Some(11));
        b.insert(11);
        assert_eq!(b.first_free(1, 16), None);
        assert_eq!(b.first_free(1, 17), Some(16));
    }

    #[test]
    fn encoding_round_trips_and_trims() {
        let mut b = PoolBitmap::default();
        b.insert(3);
        b.insert(100);
        let enc = b.encode();
        assert_eq!(enc.len(), 13);
        let d = PoolBitmap::decode(&enc);
        assert_eq!(d, b);
        assert_eq!(PoolBitmap::decode(&[1, 0, 0]).encode(), vec![1]);
        assert!(PoolBitmap::decode(&[]).is_empty());
    }
}
