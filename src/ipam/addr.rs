//! Address arithmetic for IPAM: addresses as `u128` offsets, the interval set
//! that holds free and excluded addresses, and the MAC address type.
//!
//! Both families live in `u128` (an IPv4 address is its `u32` widened) so the
//! allocator has one code path; the family is carried next to the number.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// An address family of a subnet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    pub fn of(ip: &IpAddr) -> Family {
        match ip {
            IpAddr::V4(_) => Family::V4,
            IpAddr::V6(_) => Family::V6,
        }
    }

    pub(crate) fn to_ip(self, n: u128) -> IpAddr {
        match self {
            // Offsets of a V4 family never exceed u32::MAX: they come from V4 addresses.
            Family::V4 => IpAddr::V4(Ipv4Addr::from(n as u32)),
            Family::V6 => IpAddr::V6(Ipv6Addr::from(n)),
        }
    }
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Family::V4 => "IPv4",
            Family::V6 => "IPv6",
        })
    }
}

pub(crate) fn ip_to_u128(ip: &IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u128::from(u32::from(*v4)),
        IpAddr::V6(v6) => u128::from(*v6),
    }
}

/// A set of `u128` values stored as disjoint, non-adjacent inclusive intervals
/// (`start → end`), so a /64 with a handful of holes costs a handful of nodes.
///
/// The representation is canonical (intervals are maximal), so two sets with
/// the same members compare equal however they were built.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct IntervalSet {
    spans: BTreeMap<u128, u128>,
    len: u128,
}

impl IntervalSet {
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of members (exact: a /64 has 2^64 members, which fits in u128;
    /// only a full IPv6 /0 would saturate).
    pub fn len(&self) -> u128 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    /// The interval containing `n`, if any.
    fn span_of(&self, n: u128) -> Option<(u128, u128)> {
        self.spans
            .range(..=n)
            .next_back()
            .filter(|(_, &end)| end >= n)
            .map(|(&s, &e)| (s, e))
    }

    pub fn contains(&self, n: u128) -> bool {
        self.span_of(n).is_some()
    }

    /// Adds `[start, end]`, merging with overlapping or adjacent intervals.
    pub fn insert_range(&mut self, start: u128, end: u128) {
        debug_assert!(start <= end);
        let mut new_start = start;
        let mut new_end = end;
        // Every interval that overlaps or touches [start, end] is merged in.
        let lo = start.saturating_sub(1);
        let touching: Vec<(u128, u128)> = {
            let mut v: Vec<(u128, u128)> = Vec::new();
            if let Some((&s, &e)) = self.spans.range(..lo).next_back() {
                if e >= lo {
                    v.push((s, e));
                }
            }
            let hi = end.saturating_add(1);
            v.extend(self.spans.range(lo..=hi).map(|(&s, &e)| (s, e)));
            v
        };
        for (s, e) in touching {
            self.spans.remove(&s);
            self.len -= e - s + 1;
            new_start = new_start.min(s);
            new_end = new_end.max(e);
        }
        self.spans.insert(new_start, new_end);
        self.len = self
            .len
            .saturating_add(new_end - new_start)
            .saturating_add(1);
    }

    pub fn insert(&mut self, n: u128) {
        self.insert_range(n, n);
    }

    /// Removes `n`; returns whether it was a member.
    pub fn remove(&mut self, n: u128) -> bool {
        let Some((s, e)) = self.span_of(n) else {
            return false;
        };
        self.spans.remove(&s);
        if s < n {
            self.spans.insert(s, n - 1);
        }
        if n < e {
            self.spans.insert(n + 1, e);
        }
        self.len -= 1;
        true
    }

    /// Removes every member of `[start, end]`.
    pub fn remove_range(&mut self, start: u128, end: u128) {
        let overlapping: Vec<(u128, u128)> = self
            .span_of(start)
            .into_iter()
            .chain(self.spans_starting_in(start, end))
            .collect();
        for (s, e) in overlapping {
            self.spans.remove(&s);
            self.len -= e - s + 1;
            if s < start {
                self.spans.insert(s, start - 1);
                self.len += start - s;
            }
            if e > end {
                self.spans.insert(end + 1, e);
                self.len += e - end;
            }
        }
    }

    /// The first member `>= from`, wrapping around to the smallest member.
    pub fn first_from(&self, from: u128) -> Option<u128> {
        if let Some((_, e)) = self.span_of(from) {
            debug_assert!(e >= from);
            return Some(from);
        }
        self.spans
            .range(from..)
            .next()
            .or_else(|| self.spans.iter().next())
            .map(|(&s, _)| s)
    }

    /// Intervals starting in `(after, end]`.
    fn spans_starting_in(&self, after: u128, end: u128) -> impl Iterator<Item = (u128, u128)> + '_ {
        let range = (after < end).then(|| self.spans.range(after + 1..=end));
        range.into_iter().flatten().map(|(&s, &e)| (s, e))
    }

    pub fn spans(&self) -> impl Iterator<Item = (u128, u128)> + '_ {
        self.spans.iter().map(|(&s, &e)| (s, e))
    }

    /// Members of `self` that are also in `other`, as intervals.
    pub fn intersect(&self, other: &IntervalSet) -> IntervalSet {
        let mut out = IntervalSet::new();
        for (s, e) in other.spans() {
            if let Some((_, e0)) = self.span_of(s) {
                out.insert_range(s, e0.min(e));
            }
            for (s1, e1) in self.spans_starting_in(s, e) {
                out.insert_range(s1, e1.min(e));
            }
        }
        out
    }
}

/// A MAC address. Parsed from `aa:bb:cc:dd:ee:ff` (or `-` separated),
/// printed lower-case with colons as OVN and the CNI result expect.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MacAddr(pub [u8; 6]);

impl MacAddr {
    /// Multicast (group) bit: such a MAC cannot be an interface address.
    pub fn is_multicast(&self) -> bool {
        self.0[0] & 0x01 != 0
    }

    pub fn is_locally_administered(&self) -> bool {
        self.0[0] & 0x02 != 0
    }

    pub fn is_zero(&self) -> bool {
        self.0 == [0; 6]
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            b[0], b[1], b[2], b[3], b[4], b[5]
        )
    }
}

impl FromStr for MacAddr {
    type Err = &'static str;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let parts: Vec<&str> = s.split([':', '-']).collect();
        if parts.len() != 6 {
            return Err("expected six octets separated by ':'");
        }
        let mut out = [0u8; 6];
        for (slot, part) in out.iter_mut().zip(parts) {
            if part.len() != 2 {
                return Err("each octet must be two hex digits");
            }
            *slot = u8::from_str_radix(part, 16).map_err(|_| "octet is not hexadecimal")?;
        }
        Ok(MacAddr(out))
    }
}

impl Serialize for MacAddr {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for MacAddr {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A small, fixed, well-mixed hash (splitmix64 over FNV-1a) so generated MACs
/// are a pure function of their inputs: the same subnet and key get the same
/// MAC after a release, and tests are reproducible.
pub(crate) fn mix_hash(parts: &[&[u8]], salt: u64) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ salt;
    for part in parts {
        for &b in *part {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        h ^= 0xff;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    let mut z = h.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A locally administered unicast MAC (`0a:…`) derived from `parts` and `attempt`.
pub(crate) fn generated_mac(parts: &[&[u8]], attempt: u64) -> MacAddr {
    let h = mix_hash(parts, attempt).to_be_bytes();
    MacAddr([0x0a, h[0], h[1], h[2], h[3], h[4]])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn members(s: &IntervalSet) -> Vec<(u128, u128)> {
        s.spans().collect()
    }

    #[test]
    fn interval_set_merges_and_splits_canonically() {
        let mut s = IntervalSet::new();
        s.insert_range(10, 20);
        s.insert_range(22, 30);
        assert_eq!(s.len(), 20);
        s.insert(21);
        assert_eq!(members(&s), vec![(10, 30)]);
        assert!(s.remove(15));
        assert!(!s.remove(15));
        assert_eq!(members(&s), vec![(10, 14), (16, 30)]);
        s.remove_range(12, 25);
        assert_eq!(members(&s), vec![(10, 11), (26, 30)]);
        assert_eq!(s.len(), 7);
        s.insert_range(0, 100);
        assert_eq!(members(&s), vec![(0, 100)]);
        assert_eq!(s.len(), 101);
    }

    #[test]
    fn first_from_wraps_around() {
        let mut s = IntervalSet::new();
        s.insert_range(5, 6);
        s.insert(9);
        assert_eq!(s.first_from(0), Some(5));
        assert_eq!(s.first_from(6), Some(6));
        assert_eq!(s.first_from(7), Some(9));
        assert_eq!(s.first_from(10), Some(5));
        assert_eq!(IntervalSet::new().first_from(3), None);
    }

    #[test]
    fn intersect_keeps_common_members() {
        let mut a = IntervalSet::new();
        a.insert_range(0, 10);
        a.insert_range(20, 30);
        let mut b = IntervalSet::new();
        b.insert_range(5, 25);
        let i = a.intersect(&b);
        assert_eq!(members(&i), vec![(5, 10), (20, 25)]);
    }

    #[test]
    fn mac_parses_and_prints() {
        let m: MacAddr = "0A-00-00-00-00-01".parse().expect("valid");
        assert_eq!(m.to_string(), "0a:00:00:00:00:01");
        assert!(m.is_locally_administered() && !m.is_multicast());
        assert!("01:00:5e:00:00:01"
            .parse::<MacAddr>()
            .expect("valid")
            .is_multicast());
        assert!("zz:00:00:00:00:01".parse::<MacAddr>().is_err());
        assert!("00:00:00:00:01".parse::<MacAddr>().is_err());
    }
}
