//! Address arithmetic for IPAM: addresses as `u128` offsets, the interval set
//! that holds free and excluded addresses, and the MACs IPAM generates.
//!
//! Both families live in `u128` (an IPv4 address is its `u32` widened) so the
//! allocator has one code path; the family is carried next to the number.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use serde::{Deserialize, Serialize};

use crate::api::mac::MacAddr;

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

/// A set of `u128` values stored as disjoint, non-adjacent inclusive intervals,
/// so a /64 with a handful of holes costs a handful of nodes.
///
/// The map is keyed by each interval's END, with its start as the value: the
/// interval holding or following `n` is one `range(n..)` away, and taking the
/// lowest member of an interval (what a dynamic allocation does) changes the
/// value in place instead of re-keying the node: one B-tree descent per
/// allocation where a start-keyed map needs several.
///
/// The interval a dynamic allocation is eating into from below (the tail
/// of a large range, a long run of free addresses) is kept apart as the
/// "hot" interval, outside the tree: taking its lowest member and asking for
/// the first member from the cursor are then a comparison and an add, no
/// B-tree descent. An interval becomes hot when an allocation takes the
/// lowest member of one at least [`HOT_MIN`] long; any other change touching
/// it first puts it back in the tree.
///
/// The representation is canonical (intervals are maximal; which one is hot
/// does not matter), so two sets with the same members compare equal however
/// they were built.
#[derive(Clone, Debug, Default)]
pub(crate) struct IntervalSet {
    /// end → start; never holds `hot` and never touches it (disjoint, not adjacent).
    spans: BTreeMap<u128, u128>,
    /// (start, end) of the interval kept out of the tree.
    hot: Option<(u128, u128)>,
    /// Members, `hot` included.
    len: u128,
}

/// The shortest remainder an allocation moves out of the tree as the hot
/// interval: moving costs two tree operations, repaid after a few allocations.
const HOT_MIN: u128 = 64;

impl PartialEq for IntervalSet {
    fn eq(&self, other: &Self) -> bool {
        self.len == other.len && self.spans().eq(other.spans())
    }
}

impl Eq for IntervalSet {}

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
        self.spans.is_empty() && self.hot.is_none()
    }

    /// Puts the hot interval back in the tree (before an edit that may touch it).
    fn settle(&mut self) {
        if let Some((s, e)) = self.hot.take() {
            self.spans.insert(e, s);
        }
    }

    /// The first interval that holds `n` or lies above it.
    fn at_or_above(&self, n: u128) -> Option<(u128, u128)> {
        let in_tree = self.spans.range(n..).next().map(|(&e, &s)| (s, e));
        match (self.hot, in_tree) {
            (Some((hs, he)), Some((_, e))) if he >= n && he < e => Some((hs, he)),
            (Some((hs, he)), None) if he >= n => Some((hs, he)),
            _ => in_tree,
        }
    }

    /// The interval containing `n`, if any.
    fn span_of(&self, n: u128) -> Option<(u128, u128)> {
        self.at_or_above(n).filter(|&(s, _)| s <= n)
    }

    pub fn contains(&self, n: u128) -> bool {
        self.span_of(n).is_some()
    }

    /// The tree's intervals that share a member with `[lo, hi]` (call after `settle`).
    fn overlapping(&self, lo: u128, hi: u128) -> Vec<(u128, u128)> {
        self.spans
            .range(lo..)
            .map(|(&e, &s)| (s, e))
            .take_while(|&(s, _)| s <= hi)
            .collect()
    }

    /// Adds the interval `[s, e]`, known to be disjoint from and not adjacent to the others.
    fn put(&mut self, s: u128, e: u128) {
        self.spans.insert(e, s);
        self.len = self.len.saturating_add(e - s).saturating_add(1);
    }

    /// Removes the interval ending at `e` (which must exist); returns its start.
    fn take_span(&mut self, e: u128) -> u128 {
        let s = self.spans.remove(&e).expect("interval present");
        self.len -= e - s + 1;
        s
    }

    /// Adds `[start, end]`, merging with overlapping or adjacent intervals.
    pub fn insert_range(&mut self, start: u128, end: u128) {
        debug_assert!(start <= end);
        self.settle();
        let lo = start.saturating_sub(1);
        let hi = end.saturating_add(1);
        // Every interval that overlaps or touches [start, end] is merged in.
        let touching = self.overlapping(lo, hi);
        let (mut new_start, mut new_end) = (start, end);
        for (s, e) in touching {
            self.take_span(e);
            new_start = new_start.min(s);
            new_end = new_end.max(e);
        }
        self.put(new_start, new_end);
    }

    /// Adds one member; the release hot path, so no temporary vector.
    pub fn insert(&mut self, n: u128) {
        if let Some((hs, he)) = self.hot {
            if (hs.saturating_sub(1)..=he.saturating_add(1)).contains(&n) {
                if hs <= n && n <= he {
                    return; // already a member
                }
                self.settle();
            }
        }
        // One descent finds the interval ending just below `n` (its left
        // neighbour, if adjacent) and the one holding or following `n`.
        let mut from_left = self.spans.range_mut(n.saturating_sub(1)..);
        let mut next = from_left.next();
        let mut left = None;
        if let Some((&e, s)) = &next {
            if n > 0 && e == n - 1 {
                left = Some((**s, e));
                next = from_left.next();
            }
        }
        let mut right_start = None;
        if let Some((_, s)) = next {
            if *s <= n {
                return; // already a member
            }
            if Some(*s) == n.checked_add(1) {
                right_start = Some(s);
            }
        }
        match (left, right_start) {
            (Some((ls, le)), Some(rs)) => {
                *rs = ls;
                self.spans.remove(&le);
            }
            (Some((ls, le)), None) => {
                self.spans.remove(&le);
                self.spans.insert(n, ls);
            }
            (None, Some(rs)) => *rs = n,
            (None, None) => {
                self.spans.insert(n, n);
            }
        }
        self.len += 1;
    }

    /// Removes `n`; returns whether it was a member.
    pub fn remove(&mut self, n: u128) -> bool {
        if let Some((hs, he)) = self.hot {
            if n == hs {
                // The allocation case: no tree access at all.
                self.hot = (hs < he).then(|| (hs + 1, he));
                self.len -= 1;
                return true;
            }
            if hs < n && n <= he {
                self.settle();
            }
        }
        let Some((&e, s)) = self.spans.range_mut(n..).next() else {
            return false;
        };
        let start = *s;
        if start > n {
            return false;
        }
        if start < n && n < e {
            // Split: [start, n-1] and [n+1, e].
            *s = n + 1;
            self.spans.insert(n - 1, start);
        } else if start == n && n < e {
            if e - n >= HOT_MIN {
                // A long run an allocation starts eating: keep it hot.
                self.spans.remove(&e);
                self.settle();
                self.hot = Some((n + 1, e));
            } else {
                *s = n + 1; // no re-keying
            }
        } else {
            self.spans.remove(&e);
            if start < n {
                self.spans.insert(n - 1, start);
            }
        }
        self.len -= 1;
        true
    }

    /// Removes every member of `[start, end]`.
    pub fn remove_range(&mut self, start: u128, end: u128) {
        self.settle();
        for (s, e) in self.overlapping(start, end) {
            self.take_span(e);
            if s < start {
                self.put(s, start - 1);
            }
            if e > end {
                self.put(end + 1, e);
            }
        }
    }

    /// Removes every member of `sorted` (ascending, duplicates allowed) in
    /// one pass: rebuilding free lists at load time without one B-tree
    /// split per held address.
    pub fn remove_sorted(&mut self, sorted: &[u128]) {
        if sorted.is_empty() {
            return;
        }
        self.settle();
        let mut out = IntervalSet::new();
        let mut points = sorted.iter().copied().peekable();
        for (s, e) in self.spans() {
            let mut start = s;
            while let Some(&p) = points.peek() {
                if p < start {
                    points.next();
                    continue;
                }
                if p > e {
                    break;
                }
                if p > start {
                    out.put(start, p - 1);
                }
                points.next();
                if p == e {
                    start = e;
                    break;
                }
                start = p + 1;
            }
            if !(start == e && sorted.binary_search(&e).is_ok()) && start <= e {
                out.put(start, e);
            }
        }
        *self = out;
    }

    /// The first member `>= from`, wrapping around to the smallest member.
    pub fn first_from(&self, from: u128) -> Option<u128> {
        if let Some((hs, he)) = self.hot {
            if hs <= from && from <= he {
                return Some(from);
            }
        }
        match self.at_or_above(from) {
            Some((s, _)) => Some(s.max(from)),
            None => self.spans().next().map(|(s, _)| s),
        }
    }

    /// The intervals `(start, end)`, ascending.
    pub fn spans(&self) -> impl Iterator<Item = (u128, u128)> + '_ {
        use std::ops::Bound::{Excluded, Unbounded};
        // The tree's intervals below the hot one, the hot one, those above.
        let (below, above) = match self.hot {
            Some((hs, he)) => ((Unbounded, Excluded(hs)), (Excluded(he), Unbounded)),
            None => ((Unbounded, Unbounded), (Excluded(u128::MAX), Unbounded)),
        };
        let tree = |r| self.spans.range(r).map(|(&e, &s)| (s, e));
        tree(below).chain(self.hot).chain(tree(above))
    }

    /// Members of `self` that are also in `other`, as intervals.
    pub fn intersect(&self, other: &IntervalSet) -> IntervalSet {
        intersect_spans(self.spans(), other.spans())
    }
}

/// The common members of two ascending sequences of maximal runs
/// `(start, end)`, as intervals (whatever set each sequence comes from).
pub(crate) fn intersect_spans(
    a: impl Iterator<Item = (u128, u128)>,
    b: impl Iterator<Item = (u128, u128)>,
) -> IntervalSet {
    let mut out = IntervalSet::new();
    let (mut a, mut b) = (a.peekable(), b.peekable());
    while let (Some(&(s0, e0)), Some(&(s1, e1))) = (a.peek(), b.peek()) {
        let (s, e) = (s0.max(s1), e0.min(e1));
        if s <= e {
            out.insert_range(s, e);
        }
        if e0 < e1 {
            a.next();
        } else {
            b.next();
        }
    }
    out
}

/// A small, fixed, well-mixed hash (splitmix64 over FNV-1a) so generated MACs
/// (the gateway's, and a dynamic MAC when [`address_mac`] is taken) are a pure
/// function of their inputs, and tests are reproducible.
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

/// The MAC a dynamic allocation gets first: `0a:58:` and the last four bytes
/// of its address (its IPv4 address, or the low 32 bits of an IPv6 one), the
/// convention of ovn-kubernetes. A reused address comes back with the same MAC,
/// so neighbours' ARP/ND caches stay right, and consecutive addresses get
/// consecutive MACs, which keeps the MAC index cache-local (see [`LocalHash`]).
pub(crate) fn address_mac(n: u128) -> MacAddr {
    let b = (n as u32).to_be_bytes();
    MacAddr([0x0a, 0x58, b[0], b[1], b[2], b[3]])
}

/// Hashing for the indexes keyed by address or MAC. The low 57 bits of the
/// hash are the value's own low bits, so the addresses a cursor hands out one
/// after another land in neighbouring buckets (one cache line serves many
/// allocations, where a mixing hash costs a cache miss each); the top 7 bits,
/// which hashbrown compares first, are mixed so that neighbours still differ
/// there. The values are addresses inside one subnet, chosen by the allocator
/// or by an authorised static request, so hash flooding is not a concern.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct LocalHash;

/// How many consecutive values share a run of neighbouring buckets.
const LOCAL_RUN: u64 = 8;

#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct LocalHasher(u64);

impl std::hash::BuildHasher for LocalHash {
    type Hasher = LocalHasher;
    fn build_hasher(&self) -> LocalHasher {
        LocalHasher(0)
    }
}

impl std::hash::Hasher for LocalHasher {
    fn finish(&self) -> u64 {
        let x = self.0;
        let run = x & (LOCAL_RUN - 1);
        let mut z = (x / LOCAL_RUN).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        z ^= z >> 29;
        (z & !(LOCAL_RUN - 1)) | run
    }

    /// Bytes (a MAC) as a big-endian number: the last byte lowest.
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }

    fn write_u128(&mut self, n: u128) {
        // The high half (an IPv6 prefix) is constant within a subnet.
        self.0 ^= (n as u64) ^ ((n >> 64) as u64).rotate_left(29);
    }

    fn write_usize(&mut self, n: usize) {
        self.0 = self.0.rotate_left(8) ^ n as u64;
    }
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

    /// Random inserts and removes (single and ranges) and allocations (take
    /// the first member from a cursor, like a dynamic allocation) against a
    /// `BTreeSet`: same members, same length, intervals maximal (never
    /// adjacent) and well-formed after every step.
    fn random_edits(seed: u64, universe: u128, max_run: u128) {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let mut set = IntervalSet::new();
        let mut model = std::collections::BTreeSet::new();
        let mut cursor = 0;
        let mut hot_seen = false;
        for step in 0..20_000 {
            let n: u128 = rng.gen_range(0..universe);
            match rng.gen_range(0..7) {
                0 | 1 => {
                    set.insert(n);
                    model.insert(n);
                }
                2 => assert_eq!(set.remove(n), model.remove(&n), "step {step}"),
                3 => {
                    let e = n + rng.gen_range(0..max_run);
                    set.insert_range(n, e);
                    model.extend(n..=e);
                }
                4 => {
                    let e = n + rng.gen_range(0..max_run / 4 + 1);
                    set.remove_range(n, e);
                    model.retain(|m| !(n..=e).contains(m));
                }
                _ => {
                    let want = model
                        .range(cursor..)
                        .next()
                        .or(model.iter().next())
                        .copied();
                    let got = set.first_from(cursor);
                    assert_eq!(got, want, "step {step}: first_from({cursor})");
                    if let Some(m) = got {
                        assert!(set.remove(m), "step {step}");
                        model.remove(&m);
                        cursor = m + 1;
                    }
                }
            }
            hot_seen |= set.hot.is_some();
            let members: Vec<u128> = set.spans().flat_map(|(s, e)| s..=e).collect();
            assert_eq!(
                members,
                model.iter().copied().collect::<Vec<_>>(),
                "step {step}"
            );
            assert_eq!(set.len(), model.len() as u128);
            assert_eq!(set.is_empty(), model.is_empty());
            let spans: Vec<(u128, u128)> = set.spans().collect();
            assert!(spans.iter().all(|(s, e)| s <= e));
            assert!(
                spans.windows(2).all(|w| w[0].1 + 1 < w[1].0),
                "not maximal: {spans:?}"
            );
            let probe: u128 = rng.gen_range(0..universe + 10);
            assert_eq!(set.contains(probe), model.contains(&probe));
            let want = model.range(probe..).next().or(model.iter().next()).copied();
            assert_eq!(set.first_from(probe), want, "first_from({probe})");
        }
        if max_run > HOT_MIN {
            assert!(hot_seen, "long runs never made an interval hot");
        }
    }

    #[test]
    fn interval_set_matches_a_plain_set_under_random_edits() {
        random_edits(11, 200, 8);
    }

    #[test]
    fn interval_set_with_long_runs_matches_a_plain_set() {
        random_edits(12, 3_000, 400);
    }

    /// Allocating from a long run keeps it hot (outside the tree) and the set
    /// still equals one built without a hot interval.
    #[test]
    fn hot_interval_serves_allocations_and_compares_canonically() {
        let mut s = IntervalSet::new();
        s.insert_range(100, 10_000);
        s.insert(50);
        assert!(s.remove(100));
        assert_eq!(s.hot, Some((101, 10_000)));
        assert_eq!(s.first_from(101), Some(101));
        assert!(s.remove(101));
        assert_eq!(s.spans().collect::<Vec<_>>(), vec![(50, 50), (102, 10_000)]);
        assert_eq!(s.first_from(10_001), Some(50));
        assert!(s.contains(5_000) && !s.contains(101));
        let mut plain = IntervalSet::new();
        plain.insert(50);
        plain.insert_range(102, 10_000);
        assert_eq!(s, plain);
        assert_eq!(s.len(), plain.len());
        // A release next to the hot interval merges with it.
        s.insert(101);
        assert_eq!(s.spans().collect::<Vec<_>>(), vec![(50, 50), (101, 10_000)]);
        assert_eq!(
            s.intersect(&plain).spans().collect::<Vec<_>>(),
            vec![(50, 50), (102, 10_000)]
        );
    }

    #[test]
    fn remove_sorted_matches_one_by_one() {
        let mut base = IntervalSet::new();
        base.insert_range(0, 20);
        base.insert_range(30, 40);
        base.insert(50);
        for points in [
            vec![],
            vec![0, 20, 30, 40, 50],
            vec![5, 5, 6, 25, 35, 39, 40, 60],
            (0..=60).collect::<Vec<u128>>(),
            vec![1, 3, 19],
        ] {
            let mut fast = base.clone();
            fast.remove_sorted(&points);
            let mut slow = base.clone();
            for p in &points {
                slow.remove(*p);
            }
            assert_eq!(fast, slow, "points {points:?}");
        }
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
}
