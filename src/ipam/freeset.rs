//! The free addresses of one family's pool: a hierarchical bitmap when the
//! pool's range is small ([`DENSE_MAX`] addresses at most), an [`IntervalSet`]
//! otherwise.
//!
//! At high fill, with the free addresses scattered, a dynamic allocation on an
//! `IntervalSet` pays a B-tree descent for `first_from` and another for
//! `remove`. [`DenseFree`] answers both in a handful of words: a bit per
//! address, plus summary levels (a bit per non-zero word of the level below)
//! so `first_from` climbs at most a few levels and comes back down, whatever
//! the fill. A /16 costs 8 KiB of bitmap, allocated at construction.

use std::fmt;

#[cfg(any(test, feature = "test-support"))]
use super::addr::intersect_spans;
use super::addr::IntervalSet;
use super::index::DENSE_MAX;

/// Bits per bitmap word.
const BITS: usize = 64;

/// Levels of a [`DenseFree`]: the bitmap and its summaries. 64^4 bits cover
/// the largest dense range (2^20: 16384, 256, 4 and 1 words).
const MAX_LEVELS: usize = 4;
const _: () = assert!((BITS as u128).pow(MAX_LEVELS as u32) >= DENSE_MAX);

/// The free members of `[base, base + span)` (`1 <= span <= DENSE_MAX`) as a
/// bitmap with summary levels.
///
/// All levels live in one vector: level 0 (a bit per address, bit `i % 64` of
/// word `i / 64` for offset `i`), then level 1 (a bit per non-zero word of
/// level 0), and so on up to a level of one word. Bits past the end of a
/// level are always zero. Numbers outside the range are simply not members.
#[derive(Clone)]
pub(crate) struct DenseFree {
    base: u128,
    /// Addresses covered, at most `DENSE_MAX`.
    span: usize,
    words: Vec<u64>,
    /// Where each level starts in `words`; `starts[depth] == words.len()`.
    starts: [usize; MAX_LEVELS + 1],
    /// Number of levels (1 when the bitmap is one word).
    depth: usize,
    /// Members (set bits of level 0).
    len: usize,
}

impl DenseFree {
    /// An empty set over `[base, base + span)`.
    ///
    /// Panics unless `1 <= span <= DENSE_MAX` and the range fits in `u128`.
    pub fn new(base: u128, span: u128) -> DenseFree {
        assert!(
            (1..=DENSE_MAX).contains(&span),
            "dense span {span} outside 1..={DENSE_MAX}"
        );
        assert!(
            base.checked_add(span - 1).is_some(),
            "dense range {base}+{span} overflows"
        );
        // At most DENSE_MAX: fits in usize.
        let span = span as usize;
        let mut starts = [0; MAX_LEVELS + 1];
        let mut depth = 0;
        let mut total = 0;
        let mut bits = span;
        loop {
            let words = bits.div_ceil(BITS);
            starts[depth] = total;
            total += words;
            depth += 1;
            if words == 1 {
                break;
            }
            bits = words;
        }
        starts[depth] = total;
        DenseFree {
            base,
            span,
            words: vec![0; total],
            starts,
            depth,
            len: 0,
        }
    }

    /// A set over `[base, base + span)` holding the members of `set` in that
    /// range (the others are left out).
    pub fn with_members(base: u128, span: u128, set: &IntervalSet) -> DenseFree {
        let mut dense = DenseFree::new(base, span);
        let last = base + (span - 1);
        for (s, e) in set.spans() {
            if e < base {
                continue;
            }
            if s > last {
                break;
            }
            // Both within [base, last]: offsets below DENSE_MAX.
            let lo = (s.max(base) - base) as usize;
            let hi = (e.min(last) - base) as usize;
            dense.fill(lo, hi);
        }
        dense.rebuild_summaries();
        dense
    }

    /// The set over exactly `[first member, last member]` of `set`, or `None`
    /// when `set` is empty or that range is wider than [`DENSE_MAX`].
    pub fn from_intervals(set: &IntervalSet) -> Option<DenseFree> {
        let (first, _) = set.spans().next()?;
        let (_, last) = set.spans().last()?;
        let span = (last - first).checked_add(1)?;
        (span <= DENSE_MAX).then(|| DenseFree::with_members(first, span, set))
    }

    /// Sets the level-0 bits of offsets `lo..=hi` (summaries and `len` are
    /// left to [`DenseFree::rebuild_summaries`]).
    fn fill(&mut self, lo: usize, hi: usize) {
        let (first, last) = (lo / BITS, hi / BITS);
        for w in first..=last {
            let from = if w == first { lo % BITS } else { 0 };
            let to = if w == last { hi % BITS } else { BITS - 1 };
            self.words[w] |= (u64::MAX << from) & (u64::MAX >> (BITS - 1 - to));
        }
    }

    /// Recomputes every summary level and `len` from level 0.
    fn rebuild_summaries(&mut self) {
        self.len = self.level(0).iter().map(|w| w.count_ones() as usize).sum();
        for level in 1..self.depth {
            let (below, above) = self.words.split_at_mut(self.starts[level]);
            let below = &below[self.starts[level - 1]..];
            let above = &mut above[..self.starts[level + 1] - self.starts[level]];
            above.fill(0);
            for (j, w) in below.iter().enumerate() {
                if *w != 0 {
                    above[j / BITS] |= 1 << (j % BITS);
                }
            }
        }
    }

    fn level(&self, level: usize) -> &[u64] {
        &self.words[self.starts[level]..self.starts[level + 1]]
    }

    /// The offset of `n` in the range, if it is in it.
    #[inline]
    fn offset(&self, n: u128) -> Option<usize> {
        let o = n.checked_sub(self.base)?;
        // Below span <= DENSE_MAX: fits in usize.
        (o < self.span as u128).then_some(o as usize)
    }

    /// The first member offset `>= from`, without wrapping.
    #[inline]
    fn next_set(&self, from: usize) -> Option<usize> {
        // Climb until a word has a set bit at or after the position...
        let mut level = 0;
        let mut i = from;
        loop {
            let (w, b) = (i / BITS, i % BITS);
            let at = self.starts[level] + w;
            if at >= self.starts[level + 1] {
                return None; // past the end of the level
            }
            let word = self.words[at] & (u64::MAX << b);
            if word != 0 {
                i = w * BITS + word.trailing_zeros() as usize;
                break;
            }
            level += 1;
            if level == self.depth {
                return None;
            }
            // The next word of this level: its bit in the level above.
            i = w + 1;
        }
        // ...then come down taking the lowest set bit: every summary bit
        // stands for a non-zero word.
        while level > 0 {
            level -= 1;
            let word = self.words[self.starts[level] + i];
            debug_assert_ne!(word, 0, "summary bit over a zero word");
            i = i * BITS + word.trailing_zeros() as usize;
        }
        Some(i)
    }

    /// The first non-member offset `>= from` (a member), or `stop` if every
    /// offset of `from..stop` is a member (`stop <= span`).
    fn run_end(&self, from: usize, stop: usize) -> usize {
        let mut w = from / BITS;
        let mut clear = !self.words[w] & (u64::MAX << (from % BITS));
        loop {
            if clear != 0 {
                return (w * BITS + clear.trailing_zeros() as usize).min(stop);
            }
            w += 1;
            if w * BITS >= stop {
                return stop;
            }
            clear = !self.words[w];
        }
    }

    /// Sets the bit of level-0 word `i` (which just became non-zero) in the
    /// summaries, as far up as needed.
    #[inline]
    fn mark_nonempty(&mut self, mut i: usize) {
        for level in 1..self.depth {
            let word = &mut self.words[self.starts[level] + i / BITS];
            let before = *word;
            *word |= 1 << (i % BITS);
            if before != 0 {
                break;
            }
            i /= BITS;
        }
    }

    /// Clears the bit of level-0 word `i` (which just became zero) in the
    /// summaries, as far up as needed.
    #[inline]
    fn mark_empty(&mut self, mut i: usize) {
        for level in 1..self.depth {
            let word = &mut self.words[self.starts[level] + i / BITS];
            *word &= !(1 << (i % BITS));
            if *word != 0 {
                break;
            }
            i /= BITS;
        }
    }

    /// Whether `n` is in `[base, base + span)`, the range the set can hold.
    #[inline]
    pub fn covers(&self, n: u128) -> bool {
        self.offset(n).is_some()
    }

    /// Test-only: the consistency check asks it.
    #[cfg(any(test, feature = "test-support"))]
    #[inline]
    pub fn contains(&self, n: u128) -> bool {
        self.offset(n)
            .is_some_and(|i| self.words[i / BITS] & (1 << (i % BITS)) != 0)
    }

    /// Adds `n`, which must be in the covered range: outside it this is a
    /// bug of the caller, which debug builds catch and release builds ignore.
    #[inline]
    pub fn insert(&mut self, n: u128) {
        let offset = self.offset(n);
        debug_assert!(
            offset.is_some(),
            "{n} outside the dense range {}+{}",
            self.base,
            self.span
        );
        let Some(i) = offset else { return };
        let word = &mut self.words[i / BITS];
        let before = *word;
        *word |= 1 << (i % BITS);
        if *word != before {
            self.len += 1;
            if before == 0 {
                self.mark_nonempty(i / BITS);
            }
        }
    }

    /// Removes `n`; returns whether it was a member.
    #[inline]
    pub fn remove(&mut self, n: u128) -> bool {
        let Some(i) = self.offset(n) else {
            return false;
        };
        let word = &mut self.words[i / BITS];
        let bit = 1 << (i % BITS);
        if *word & bit == 0 {
            return false;
        }
        *word &= !bit;
        self.len -= 1;
        if *word == 0 {
            self.mark_empty(i / BITS);
        }
        true
    }

    /// The first member `>= from`, wrapping around to the smallest member.
    #[inline]
    pub fn first_from(&self, from: u128) -> Option<u128> {
        if self.len == 0 {
            return None;
        }
        // Below the range, or above it (wrapping): the smallest member.
        let start = self.offset(from).unwrap_or(0);
        let i = match self.next_set(start) {
            Some(i) => i,
            None => self.next_set(0)?,
        };
        Some(self.base + i as u128)
    }

    #[inline]
    pub fn len(&self) -> u128 {
        self.len as u128
    }

    #[cfg(test)]
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Removes every member of `sorted` (ascending, duplicates allowed,
    /// members or not).
    pub fn remove_sorted(&mut self, sorted: &[u128]) {
        for &n in sorted {
            self.remove(n);
        }
    }

    /// The maximal runs of members `(start, end)`, inclusive, ascending.
    pub fn spans(&self) -> DenseSpans<'_> {
        DenseSpans {
            set: self,
            pos: 0,
            stop: self.span,
        }
    }

    pub fn to_intervals(&self) -> IntervalSet {
        let mut out = IntervalSet::new();
        for (s, e) in self.spans() {
            out.insert_range(s, e);
        }
        out
    }

    /// Members of `self` that are also in `other`.
    #[cfg(test)]
    pub fn intersect(&self, other: &IntervalSet) -> IntervalSet {
        intersect_spans(self.spans(), other.spans())
    }

    /// Checks the summaries, the zero tail of every level and `len`.
    #[cfg(test)]
    fn check_invariants(&self) {
        assert_eq!(self.starts[self.depth], self.words.len());
        assert_eq!(self.level(self.depth - 1).len(), 1, "top level is one word");
        let mut bits = self.span;
        for level in 0..self.depth {
            let words = self.level(level);
            assert_eq!(words.len(), bits.div_ceil(BITS), "level {level} size");
            if !bits.is_multiple_of(BITS) {
                let tail = words[words.len() - 1] >> (bits % BITS);
                assert_eq!(tail, 0, "level {level}: bits past the end");
            }
            if level > 0 {
                let below = self.level(level - 1);
                for (j, w) in below.iter().enumerate() {
                    let bit = words[j / BITS] >> (j % BITS) & 1;
                    assert_eq!(bit == 1, *w != 0, "level {level} bit {j}");
                }
            }
            bits = words.len();
        }
        let ones: usize = self.level(0).iter().map(|w| w.count_ones() as usize).sum();
        assert_eq!(ones, self.len, "len");
    }
}

/// The runs of members of a [`DenseFree`] (see [`DenseFree::spans`]): a
/// summary descent to each run's start, then a word-at-a-time scan to its end.
pub(crate) struct DenseSpans<'a> {
    set: &'a DenseFree,
    /// Offset to search from.
    pos: usize,
    /// Offset where the iteration stops (exclusive), at most `span`.
    stop: usize,
}

impl Iterator for DenseSpans<'_> {
    type Item = (u128, u128);

    fn next(&mut self) -> Option<(u128, u128)> {
        if self.pos >= self.stop {
            return None;
        }
        let Some(start) = self.set.next_set(self.pos).filter(|&s| s < self.stop) else {
            self.pos = self.stop;
            return None;
        };
        let end = self.set.run_end(start, self.stop);
        self.pos = end;
        let base = self.set.base;
        Some((base + start as u128, base + (end - 1) as u128))
    }
}

/// Membership, whatever the covered range.
impl PartialEq for DenseFree {
    fn eq(&self, other: &Self) -> bool {
        self.len == other.len && self.spans().eq(other.spans())
    }
}

impl Eq for DenseFree {}

/// Prints at most this many runs, then how many more there are.
const DEBUG_SPANS: usize = 32;

/// A run printed as `start-end`.
struct Span(u128, u128);

impl fmt::Debug for Span {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.0, self.1)
    }
}

/// A list of runs, cut after [`DEBUG_SPANS`].
struct SpanList<I>(std::cell::Cell<Option<I>>);

impl<I: Iterator<Item = (u128, u128)>> fmt::Debug for SpanList<I> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut list = f.debug_list();
        if let Some(mut spans) = self.0.take() {
            list.entries(spans.by_ref().take(DEBUG_SPANS).map(|(s, e)| Span(s, e)));
            let more = spans.count();
            if more > 0 {
                list.entry(&format_args!("... {more} more"));
            }
        }
        list.finish()
    }
}

fn span_list<I: Iterator<Item = (u128, u128)>>(spans: I) -> SpanList<I> {
    SpanList(std::cell::Cell::new(Some(spans)))
}

impl fmt::Debug for DenseFree {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DenseFree")
            .field("base", &self.base)
            .field("span", &self.span)
            .field("len", &self.len)
            .field("spans", &span_list(self.spans()))
            .finish()
    }
}

/// The free members of a pool: [`DenseFree`] for a small range,
/// [`IntervalSet`] otherwise. Same API as `IntervalSet` (the part the
/// allocator uses); equal when the members are, whatever the variant.
#[derive(Clone)]
pub(crate) enum FreeSet {
    Dense(DenseFree),
    Intervals(IntervalSet),
}

/// Either of two span iterators.
enum EitherSpans<A, B> {
    Dense(A),
    Intervals(B),
}

impl<A, B> Iterator for EitherSpans<A, B>
where
    A: Iterator<Item = (u128, u128)>,
    B: Iterator<Item = (u128, u128)>,
{
    type Item = (u128, u128);

    #[inline]
    fn next(&mut self) -> Option<(u128, u128)> {
        match self {
            EitherSpans::Dense(a) => a.next(),
            EitherSpans::Intervals(b) => b.next(),
        }
    }
}

impl FreeSet {
    /// A bitmap over `[first member, last member]` of `set` when that range
    /// has at most [`DENSE_MAX`] addresses; `set` itself otherwise (and when
    /// it is empty).
    pub fn new(set: IntervalSet) -> FreeSet {
        match DenseFree::from_intervals(&set) {
            Some(dense) => FreeSet::Dense(dense),
            None => FreeSet::Intervals(set),
        }
    }

    /// Whether the set is a bitmap.
    #[cfg(test)]
    pub fn is_dense(&self) -> bool {
        matches!(self, FreeSet::Dense(_))
    }

    /// Test-only: the consistency check asks it.
    #[cfg(any(test, feature = "test-support"))]
    #[inline]
    pub fn contains(&self, n: u128) -> bool {
        match self {
            FreeSet::Dense(d) => d.contains(n),
            FreeSet::Intervals(s) => s.contains(n),
        }
    }

    /// Adds `n`. A bitmap that does not cover `n` (the allocator never asks
    /// for that: it inserts addresses of the pool's own range) is rebuilt
    /// over the wider range, or turned into intervals if that range is too
    /// wide: the set never drops a member.
    #[inline]
    pub fn insert(&mut self, n: u128) {
        match self {
            FreeSet::Dense(d) if d.covers(n) => d.insert(n),
            FreeSet::Dense(_) => self.widen_to(n),
            FreeSet::Intervals(s) => s.insert(n),
        }
    }

    /// Makes a bitmap that does not cover `n` hold `n` as well.
    #[cold]
    fn widen_to(&mut self, n: u128) {
        let FreeSet::Dense(d) = self else {
            unreachable!("only a bitmap is widened")
        };
        let mut set = d.to_intervals();
        set.insert(n);
        let first = d.base.min(n);
        let last = (d.base + (d.span as u128 - 1)).max(n);
        let span = (last - first).checked_add(1);
        *self = match span.filter(|s| *s <= DENSE_MAX) {
            Some(span) => FreeSet::Dense(DenseFree::with_members(first, span, &set)),
            None => FreeSet::Intervals(set),
        };
    }

    /// Removes `n`; returns whether it was a member.
    #[inline]
    pub fn remove(&mut self, n: u128) -> bool {
        match self {
            FreeSet::Dense(d) => d.remove(n),
            FreeSet::Intervals(s) => s.remove(n),
        }
    }

    /// The first member `>= from`, wrapping around to the smallest member.
    #[inline]
    pub fn first_from(&self, from: u128) -> Option<u128> {
        match self {
            FreeSet::Dense(d) => d.first_from(from),
            FreeSet::Intervals(s) => s.first_from(from),
        }
    }

    #[inline]
    pub fn len(&self) -> u128 {
        match self {
            FreeSet::Dense(d) => d.len(),
            FreeSet::Intervals(s) => s.len(),
        }
    }

    #[cfg(test)]
    #[inline]
    pub fn is_empty(&self) -> bool {
        match self {
            FreeSet::Dense(d) => d.is_empty(),
            FreeSet::Intervals(s) => s.is_empty(),
        }
    }

    /// Removes every member of `sorted` (ascending, duplicates allowed,
    /// members or not).
    pub fn remove_sorted(&mut self, sorted: &[u128]) {
        match self {
            FreeSet::Dense(d) => d.remove_sorted(sorted),
            FreeSet::Intervals(s) => s.remove_sorted(sorted),
        }
    }

    /// The maximal runs of members `(start, end)`, inclusive, ascending.
    pub fn spans(&self) -> impl Iterator<Item = (u128, u128)> + '_ {
        match self {
            FreeSet::Dense(d) => EitherSpans::Dense(d.spans()),
            FreeSet::Intervals(s) => EitherSpans::Intervals(s.spans()),
        }
    }

    #[cfg(test)]
    pub fn to_intervals(&self) -> IntervalSet {
        match self {
            FreeSet::Dense(d) => d.to_intervals(),
            FreeSet::Intervals(s) => s.clone(),
        }
    }

    /// Members of `self` that are also in `other` (the consistency check's).
    #[cfg(any(test, feature = "test-support"))]
    pub fn intersect(&self, other: &IntervalSet) -> IntervalSet {
        intersect_spans(self.spans(), other.spans())
    }
}

/// Membership, whatever the variants.
impl PartialEq for FreeSet {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (FreeSet::Dense(a), FreeSet::Dense(b)) => a == b,
            (FreeSet::Intervals(a), FreeSet::Intervals(b)) => a == b,
            _ => self.len() == other.len() && self.spans().eq(other.spans()),
        }
    }
}

impl Eq for FreeSet {}

impl fmt::Debug for FreeSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FreeSet::Dense(d) => d.fmt(f),
            FreeSet::Intervals(s) => f
                .debug_struct("Intervals")
                .field("len", &s.len())
                .field("spans", &span_list(s.spans()))
                .finish(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn range(s: u128, e: u128) -> IntervalSet {
        let mut set = IntervalSet::new();
        set.insert_range(s, e);
        set
    }

    fn spans_of(d: &DenseFree) -> Vec<(u128, u128)> {
        d.spans().collect()
    }

    fn full(base: u128, span: u128) -> DenseFree {
        let d = DenseFree::with_members(base, span, &range(base, base + (span - 1)));
        d.check_invariants();
        d
    }

    #[test]
    fn empty_set_has_no_members() {
        let d = DenseFree::new(100, 65533);
        d.check_invariants();
        assert!(d.is_empty());
        assert_eq!(d.len(), 0);
        assert_eq!(d.first_from(0), None);
        assert_eq!(d.first_from(150), None);
        assert!(!d.contains(100));
        assert_eq!(spans_of(&d), vec![]);
        assert!(d.to_intervals().is_empty());
        assert!(d.intersect(&range(0, 1 << 20)).is_empty());
        assert_eq!(d, DenseFree::new(7, 3), "membership, not range");
    }

    #[test]
    fn single_address() {
        let mut d = DenseFree::new(42, 1);
        d.check_invariants();
        assert!(!d.remove(42));
        d.insert(42);
        d.insert(42);
        d.check_invariants();
        assert_eq!(d.len(), 1);
        assert!(d.contains(42) && !d.contains(41) && !d.contains(43));
        for from in [0, 41, 42, 43, u128::MAX] {
            assert_eq!(d.first_from(from), Some(42), "from {from}");
        }
        assert_eq!(spans_of(&d), vec![(42, 42)]);
        assert!(d.remove(42));
        assert!(!d.remove(42));
        d.check_invariants();
        assert_eq!(d.first_from(42), None);
        assert!(d.is_empty());
    }

    /// Full sets of awkward sizes: one run, exact len, the last address a
    /// member and the one past it not, first_from around both ends.
    #[test]
    fn spans_of_awkward_sizes() {
        for span in [1u128, 63, 64, 65, 4095, 4096, 4097, 65533, 262_145] {
            let base = 10 << 24;
            let last = base + span - 1;
            let mut d = full(base, span);
            assert_eq!(d.len(), span);
            assert_eq!(spans_of(&d), vec![(base, last)], "span {span}");
            assert!(d.contains(last) && !d.contains(last + 1) && !d.contains(base - 1));
            assert_eq!(d.first_from(last), Some(last));
            assert_eq!(d.first_from(last + 1), Some(base), "wraps past the end");
            assert_eq!(d.first_from(0), Some(base));
            assert_eq!(d.to_intervals(), range(base, last));
            // Empty it from the top: first_from always finds the lowest one.
            if span > 1 {
                assert!(d.remove(last));
                assert_eq!(d.first_from(last), Some(base), "span {span}");
                assert_eq!(spans_of(&d), vec![(base, last - 1)]);
            }
            d.check_invariants();
        }
    }

    #[test]
    fn first_from_wraps_and_clamps() {
        let base = (1u128 << 64) + 5; // above 2^64
        let mut d = DenseFree::new(base, 300);
        for off in [10, 11, 200] {
            d.insert(base + off);
        }
        d.check_invariants();
        assert_eq!(d.first_from(0), Some(base + 10), "below the base");
        assert_eq!(d.first_from(base - 1), Some(base + 10));
        assert_eq!(d.first_from(base + 11), Some(base + 11));
        assert_eq!(d.first_from(base + 12), Some(base + 200));
        assert_eq!(d.first_from(base + 201), Some(base + 10), "wraps");
        assert_eq!(d.first_from(base + 299), Some(base + 10));
        assert_eq!(d.first_from(base + 300), Some(base + 10), "above the end");
        assert_eq!(d.first_from(u128::MAX), Some(base + 10));
        assert_eq!(
            spans_of(&d),
            vec![(base + 10, base + 11), (base + 200, base + 200)]
        );
    }

    #[test]
    fn range_ending_at_u128_max() {
        let base = u128::MAX - 99;
        let mut d = full(base, 100);
        assert_eq!(d.first_from(u128::MAX), Some(u128::MAX));
        assert!(d.remove(u128::MAX));
        assert_eq!(d.first_from(u128::MAX), Some(base));
        assert_eq!(spans_of(&d), vec![(base, u128::MAX - 1)]);
        assert_eq!(
            d.intersect(&range(u128::MAX - 5, u128::MAX)),
            range(u128::MAX - 5, u128::MAX - 1)
        );
        d.check_invariants();
    }

    /// Emptying and refilling whole words and whole level-1 words keeps the
    /// summaries right, and first_from jumps over the emptied parts.
    #[test]
    fn word_and_summary_boundaries() {
        let base = 1000;
        let span = 64 * 64 * 3 + 17; // three level-1 words and a bit
        let mut d = full(base, span);
        // Empty word 1 (offsets 64..128).
        for off in 64..128 {
            assert!(d.remove(base + off));
        }
        d.check_invariants();
        assert_eq!(d.first_from(base + 63), Some(base + 63));
        assert_eq!(d.first_from(base + 64), Some(base + 128));
        // Empty the whole second level-1 word (offsets 4096..8192).
        for off in 4096..8192 {
            assert!(d.remove(base + off));
        }
        d.check_invariants();
        assert_eq!(d.first_from(base + 4095), Some(base + 4095));
        assert_eq!(d.first_from(base + 4096), Some(base + 8192));
        assert_eq!(d.len(), span - 64 - 4096);
        // Refill the last bit of that block and the first of word 1.
        d.insert(base + 8191);
        d.insert(base + 64);
        d.check_invariants();
        assert_eq!(d.first_from(base + 4096), Some(base + 8191));
        assert_eq!(d.first_from(base + 65), Some(base + 128));
        assert_eq!(
            spans_of(&d),
            vec![
                (base, base + 64),
                (base + 128, base + 4095),
                (base + 8191, base + span - 1)
            ]
        );
        // Keep only the last address: found from anywhere.
        let all: Vec<u128> = (base..base + span - 1).collect();
        d.remove_sorted(&all);
        d.check_invariants();
        assert_eq!(d.len(), 1);
        assert_eq!(d.first_from(base), Some(base + span - 1));
        assert_eq!(d.first_from(base + span), Some(base + span - 1));
    }

    #[test]
    fn remove_sorted_with_duplicates_and_non_members() {
        let base = 500;
        let mut d = full(base, 130);
        d.remove(base + 3);
        let mut model = range(base, base + 129);
        model.remove(base + 3);
        let points = [
            0,
            10,
            base,
            base,
            base + 3,
            base + 64,
            base + 64,
            base + 129,
            base + 130,
            u128::MAX,
        ];
        d.remove_sorted(&points);
        model.remove_sorted(&points);
        d.check_invariants();
        assert_eq!(d.len(), 130 - 4);
        assert_eq!(d.to_intervals(), model);
        assert_eq!(
            spans_of(&d),
            vec![
                (base + 1, base + 2),
                (base + 4, base + 63),
                (base + 65, base + 128)
            ]
        );
    }

    #[test]
    fn intersect_clips_to_both() {
        let base = 1 << 70;
        let mut d = full(base, 200);
        d.remove(base + 50);
        let mut other = range(0, base + 10);
        other.insert_range(base + 40, base + 60);
        other.insert_range(base + 190, base + 5000);
        let mut want = range(base, base + 10);
        want.insert_range(base + 40, base + 49);
        want.insert_range(base + 51, base + 60);
        want.insert_range(base + 190, base + 199);
        assert_eq!(d.intersect(&other), want);
        assert_eq!(d.intersect(&other), d.to_intervals().intersect(&other));
        assert!(d.intersect(&range(base + 200, base + 300)).is_empty());
    }

    #[test]
    fn free_set_picks_its_representation() {
        // A /16's usable range (network, gateway and broadcast out): dense.
        let v4 = 10u128 << 24 | 1 << 16;
        let usable = range(v4 + 2, v4 + 65534);
        let free = FreeSet::new(usable.clone());
        assert!(free.is_dense());
        assert_eq!(free.len(), 65533);
        assert_eq!(free.to_intervals(), usable);
        assert_eq!(
            free,
            FreeSet::Intervals(usable.clone()),
            "equal across variants"
        );
        // An IPv6 /64's usable range: intervals.
        let v6 = FreeSet::new(range(1, (1 << 64) - 2));
        assert!(!v6.is_dense());
        assert_eq!(v6.len(), (1 << 64) - 2);
        // Empty: intervals.
        let empty = FreeSet::new(IntervalSet::new());
        assert!(!empty.is_dense() && empty.is_empty());
        assert_eq!(empty.first_from(0), None);
        // Exactly DENSE_MAX between first and last member: dense; one more: not.
        let mut ends = IntervalSet::new();
        ends.insert(7);
        ends.insert(7 + DENSE_MAX - 1);
        let at_max = FreeSet::new(ends.clone());
        assert!(at_max.is_dense());
        assert_eq!(
            at_max.spans().collect::<Vec<_>>(),
            vec![(7, 7), (7 + DENSE_MAX - 1, 7 + DENSE_MAX - 1)]
        );
        ends.insert(7 + DENSE_MAX);
        assert!(!FreeSet::new(ends).is_dense());
        // The bitmap covers exactly [first member, last member].
        let FreeSet::Dense(d) = FreeSet::new(range(300, 400)) else {
            panic!("dense expected")
        };
        assert!(d.covers(300) && d.covers(400) && !d.covers(299) && !d.covers(401));
    }

    #[test]
    fn free_set_insert_outside_the_bitmap_widens() {
        let mut free = FreeSet::new(range(1000, 1999));
        assert!(free.remove(1500));
        free.insert(900);
        assert!(free.is_dense(), "still small enough for a bitmap");
        assert!(free.contains(900) && !free.contains(1500));
        assert_eq!(free.len(), 1000);
        assert_eq!(free.first_from(2000), Some(900));
        free.insert(1000 + DENSE_MAX);
        assert!(!free.is_dense(), "too wide: intervals");
        let mut want = range(1000, 1999);
        want.remove(1500);
        want.insert(900);
        want.insert(1000 + DENSE_MAX);
        assert_eq!(free.to_intervals(), want);
        assert_eq!(free.len(), 1001);
    }

    /// Inserting outside the covered range is a caller bug: debug builds say so.
    #[test]
    #[cfg(debug_assertions)]
    #[should_panic(expected = "outside the dense range")]
    fn dense_insert_outside_the_range_is_caught_in_debug() {
        DenseFree::new(10, 10).insert(20);
    }

    #[test]
    fn debug_prints_spans_and_cuts_long_lists() {
        let mut d = DenseFree::new(0, 200);
        d.insert(3);
        d.insert(4);
        d.insert(9);
        let text = format!("{d:?}");
        assert!(text.contains("[3-4, 9-9]"), "{text}");
        let mut many = full(0, 1000);
        for n in (0..1000).step_by(2) {
            many.remove(n);
        }
        let text = format!("{:?}", FreeSet::Dense(many.clone()));
        assert!(
            text.contains(&format!("... {} more", 500 - DEBUG_SPANS)),
            "{text}"
        );
        let text = format!("{:?}", FreeSet::Intervals(many.to_intervals()));
        assert!(
            text.starts_with("Intervals") && text.contains("1-1, 3-3"),
            "{text}"
        );
    }

    /// The largest dense range: four levels, summaries right at both ends.
    #[test]
    fn largest_dense_range() {
        let base = 10 << 24;
        let last = base + DENSE_MAX - 1;
        let mut d = full(base, DENSE_MAX);
        assert_eq!(d.depth, 4);
        assert_eq!(d.words.len(), 16384 + 256 + 4 + 1);
        assert_eq!(d.len(), DENSE_MAX);
        assert_eq!(d.first_from(last), Some(last));
        assert_eq!(d.first_from(last + 1), Some(base));
        // Empty everything but the last address, then first_from from the
        // start climbs to the top and back down.
        let all: Vec<u128> = (base..last).collect();
        d.remove_sorted(&all);
        d.check_invariants();
        assert_eq!(d.len(), 1);
        assert_eq!(d.first_from(base), Some(last));
        assert_eq!(
            d.level(3),
            &[1 << 3],
            "only the last level-2 word is non-zero"
        );
        d.insert(base + 4096 * 64); // the first address of level-2 word 1
        assert_eq!(d.first_from(base + 1), Some(base + 4096 * 64));
        assert_eq!(d.first_from(base + 4096 * 64 + 1), Some(last));
        assert!(d.remove(last));
        assert_eq!(
            d.first_from(base + 4096 * 64 + 1),
            Some(base + 4096 * 64),
            "wraps"
        );
        d.check_invariants();
        assert_eq!(spans_of(&d), vec![(base + 4096 * 64, base + 4096 * 64)]);
        assert!(d.remove(base + 4096 * 64));
        d.check_invariants();
        assert!(d.words.iter().all(|w| *w == 0));
        assert_eq!(d.first_from(base), None);
    }

    #[derive(Clone, Debug)]
    enum Op {
        Insert(u64),
        Remove(u64),
        FirstFrom(u64),
        RemoveSorted(Vec<u64>),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            3 => any::<u64>().prop_map(Op::Insert),
            3 => any::<u64>().prop_map(Op::Remove),
            2 => any::<u64>().prop_map(Op::FirstFrom),
            1 => proptest::collection::vec(any::<u64>(), 0..24).prop_map(Op::RemoveSorted),
        ]
    }

    fn base() -> impl Strategy<Value = u128> {
        prop_oneof![
            0u128..200,
            (1u128 << 32) - 6000..(1u128 << 32),
            (1u128 << 64) - 5000..(1u128 << 64) + 5000,
            (1u128 << 100)..(1u128 << 100) + 100_000,
            u128::MAX - 5000 - 64..=u128::MAX - 5000,
        ]
    }

    fn span() -> impl Strategy<Value = u128> {
        prop_oneof![1u128..=130, 1u128..=5000, Just(4096u128), Just(4097u128)]
    }

    /// `raw` as a number around the range: up to 64 below and above it.
    fn near(base: u128, span: u128, raw: u64) -> u128 {
        let off = u128::from(raw) % (span + 128);
        if off < 64 {
            base.saturating_sub(64 - off)
        } else {
            base.saturating_add(off - 64)
        }
    }

    /// An initial set of members of `[base, base + span)`: none, all, or
    /// about `density` quarters of them.
    fn initial(base: u128, span: u128, density: u8, seed: u64) -> IntervalSet {
        let mut set = IntervalSet::new();
        for off in 0..span {
            let mut z = (off as u64 ^ seed).wrapping_mul(0x9e37_79b9_7f4a_7c15);
            z ^= z >> 31;
            if z % 4 < u64::from(density) {
                set.insert(base + off);
            }
        }
        set
    }

    /// What the model and the set must agree on around `n`.
    fn agree(d: &DenseFree, model: &IntervalSet, n: u128) -> Result<(), TestCaseError> {
        for m in [n.saturating_sub(1), n, n.saturating_add(1)] {
            prop_assert_eq!(d.contains(m), model.contains(m), "contains({})", m);
            prop_assert_eq!(d.first_from(m), model.first_from(m), "first_from({})", m);
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

        /// Random edits on a bitmap and on an interval set side by side: same
        /// members, len, first_from and runs after every step.
        #[test]
        fn dense_matches_interval_set(
            base in base(),
            span in span(),
            density in 0u8..=4,
            seed in any::<u64>(),
            ops in proptest::collection::vec(op(), 1..80),
        ) {
            let mut model = initial(base, span, density, seed);
            let mut d = DenseFree::with_members(base, span, &model);
            d.check_invariants();
            prop_assert_eq!(d.len(), model.len());
            for op in ops {
                let touched = match op {
                    Op::Insert(raw) => {
                        let n = base + u128::from(raw) % span;
                        d.insert(n);
                        model.insert(n);
                        n
                    }
                    Op::Remove(raw) => {
                        let n = near(base, span, raw);
                        prop_assert_eq!(d.remove(n), model.remove(n), "remove({})", n);
                        n
                    }
                    Op::FirstFrom(raw) => near(base, span, raw),
                    Op::RemoveSorted(raws) => {
                        let mut points: Vec<u128> =
                            raws.iter().map(|r| near(base, span, *r)).collect();
                        points.sort_unstable();
                        if let Some(&p) = points.first() {
                            points.insert(0, p); // a duplicate
                        }
                        d.remove_sorted(&points);
                        model.remove_sorted(&points);
                        points.first().copied().unwrap_or(base)
                    }
                };
                d.check_invariants();
                prop_assert_eq!(d.len(), model.len());
                prop_assert_eq!(d.is_empty(), model.is_empty());
                agree(&d, &model, touched)?;
                for edge in [0, base, base + span - 1, base + span, u128::MAX] {
                    prop_assert_eq!(d.first_from(edge), model.first_from(edge), "first_from({})", edge);
                }
                prop_assert_eq!(d.spans().collect::<Vec<_>>(), model.spans().collect::<Vec<_>>());
            }
            prop_assert_eq!(d.to_intervals(), model.clone());
            let window = range(near(base, span, seed), near(base, span, seed / 3).max(near(base, span, seed)));
            prop_assert_eq!(d.intersect(&window), model.intersect(&window));
            prop_assert_eq!(d, DenseFree::with_members(base, span, &model));
        }

        /// The same through `FreeSet`, with inserts around and far outside the
        /// bitmap: it widens or turns into intervals, never losing a member.
        #[test]
        fn free_set_matches_interval_set(
            base in base(),
            span in span(),
            density in 1u8..=4,
            seed in any::<u64>(),
            ops in proptest::collection::vec((op(), proptest::bool::weighted(0.05)), 1..60),
        ) {
            let mut model = initial(base, span, density, seed);
            let mut free = FreeSet::new(model.clone());
            for (op, far) in ops {
                match op {
                    Op::Insert(raw) => {
                        let n = if far {
                            base.saturating_add(DENSE_MAX + u128::from(raw % 10))
                        } else {
                            near(base, span, raw)
                        };
                        free.insert(n);
                        model.insert(n);
                    }
                    Op::Remove(raw) => {
                        let n = near(base, span, raw);
                        prop_assert_eq!(free.remove(n), model.remove(n));
                    }
                    Op::FirstFrom(raw) => {
                        let n = near(base, span, raw);
                        prop_assert_eq!(free.first_from(n), model.first_from(n));
                    }
                    Op::RemoveSorted(raws) => {
                        let mut points: Vec<u128> =
                            raws.iter().map(|r| near(base, span, *r)).collect();
                        points.sort_unstable();
                        free.remove_sorted(&points);
                        model.remove_sorted(&points);
                    }
                }
                if let FreeSet::Dense(d) = &free {
                    d.check_invariants();
                }
                let extent = model.spans().next().zip(model.spans().last()).map(|((s, _), (_, e))| e - s);
                if extent.is_some_and(|x| x >= DENSE_MAX) {
                    prop_assert!(!free.is_dense(), "a bitmap over more than DENSE_MAX");
                }
                prop_assert_eq!(free.len(), model.len());
                prop_assert_eq!(free.is_empty(), model.is_empty());
                prop_assert_eq!(free.spans().collect::<Vec<_>>(), model.spans().collect::<Vec<_>>());
                prop_assert_eq!(&free, &FreeSet::Intervals(model.clone()));
            }
            prop_assert_eq!(free.to_intervals(), model.clone());
            let window = range(base, base + span / 2);
            prop_assert_eq!(free.intersect(&window), model.intersect(&window));
        }
    }
}
