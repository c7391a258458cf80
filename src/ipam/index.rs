//! The allocator's reverse indexes: which key holds an address (one index per
//! subnet family) and which key holds a MAC (one per subnet). What is free
//! lives in `freeset.rs`, the allocation policy in `allocator.rs`; this file
//! only answers "who holds this value".
//!
//! A [`HolderIndex`] has three parts. Values that fall in a small range (a
//! family's usable range of at most [`DENSE_MAX`] addresses) live in a dense
//! table: a slot per address, in lazily allocated chunks, so a lookup is one
//! cache line and an empty /16 costs a vector of chunk pointers. Other values
//! with a position (addresses of a large family such as an IPv6 /64, MACs
//! derived from them) live in pages of [`PAGE`] neighbouring slots found
//! through a hash map of pages: the addresses a cursor hands out one after
//! another share a page, so the table stays as cache-friendly as a dense one,
//! at 8 bytes a slot instead of a hashed entry's 24 or more. Values without a
//! position (requested MACs outside the derived space) are hashed. Each value
//! has exactly one place, decided by the value alone, so lookups and
//! uniqueness checks stay exact whichever part holds it.

use std::collections::HashMap;
use std::fmt;
use std::hash::Hash;

use super::addr::{address_mac, LocalHash};
use crate::api::mac::MacAddr;

/// The largest usable range that gets a dense table: with a pointer-sized
/// holder a full one costs 8 bytes per address (8 MiB here), an empty one
/// 8 bytes per chunk (16 KiB).
pub(crate) const DENSE_MAX: u128 = 1 << 20;

/// Slots per chunk: 4 KiB of pointer-sized holders.
const CHUNK: usize = 512;

type Chunk<H> = [Option<H>; CHUNK];

/// A value that may have a slot in a dense table covering `[base, base + span)`.
pub(crate) trait DenseValue: Copy + Eq + Hash {
    /// Where the value sits in the dense numbering of a table starting at
    /// `base`, or `None` when it has no place there (it is then hashed).
    fn position(&self, base: u128) -> Option<u128>;
    /// The value at dense position `n` (inverse of `position`).
    fn at(n: u128) -> Self;
}

/// An address is its own position.
impl DenseValue for u128 {
    fn position(&self, _base: u128) -> Option<u128> {
        Some(*self)
    }

    fn at(n: u128) -> Self {
        n
    }
}

/// A MAC in the space [`address_mac`] generates (`0a:58:` and 32 low
/// address bits) sits at the address it was derived from, inside the 2^32
/// block of `base`; every other MAC is hashed.
impl DenseValue for MacAddr {
    fn position(&self, base: u128) -> Option<u128> {
        let [a, b, c, d, e, f] = self.0;
        if [a, b] != [0x0a, 0x58] {
            return None;
        }
        let low = u32::from_be_bytes([c, d, e, f]);
        Some((base & !u128::from(u32::MAX)) | u128::from(low))
    }

    fn at(n: u128) -> Self {
        address_mac(n)
    }
}

/// One slot per position of `[base, base + span)`, in chunks allocated on
/// first use and kept (an allocation and release in an emptied chunk must not
/// cost a chunk allocation each).
#[derive(Clone)]
struct DenseTable<H> {
    base: u128,
    span: u128,
    chunks: Vec<Option<Box<Chunk<H>>>>,
    len: usize,
}

impl<H> DenseTable<H> {
    fn new(base: u128, span: u128) -> Self {
        let chunks =
            usize::try_from(span.div_ceil(CHUNK as u128)).expect("dense span is at most DENSE_MAX");
        DenseTable {
            base,
            span,
            chunks: std::iter::repeat_with(|| None).take(chunks).collect(),
            len: 0,
        }
    }

    /// The slot of position `n`: chunk and index in it.
    fn slot(&self, n: u128) -> Option<(usize, usize)> {
        let offset = n.checked_sub(self.base).filter(|o| *o < self.span)?;
        // Below DENSE_MAX: fits in usize.
        let offset = offset as usize;
        Some((offset / CHUNK, offset % CHUNK))
    }

    fn get(&self, (chunk, i): (usize, usize)) -> Option<&H> {
        self.chunks[chunk].as_ref()?[i].as_ref()
    }

    fn insert(&mut self, (chunk, i): (usize, usize), key: H) -> Option<H> {
        let chunk = self.chunks[chunk].get_or_insert_with(|| Box::new([const { None }; CHUNK]));
        let old = chunk[i].replace(key);
        if old.is_none() {
            self.len += 1;
        }
        old
    }

    fn remove(&mut self, (chunk, i): (usize, usize)) -> Option<H> {
        let old = self.chunks[chunk].as_mut()?[i].take();
        if old.is_some() {
            self.len -= 1;
        }
        old
    }

    /// `(position, key)` in ascending position.
    fn iter(&self) -> impl Iterator<Item = (u128, &H)> + '_ {
        self.chunks
            .iter()
            .enumerate()
            .filter_map(|(c, chunk)| chunk.as_ref().map(|chunk| (c, chunk)))
            .flat_map(move |(c, chunk)| {
                chunk.iter().enumerate().filter_map(move |(i, key)| {
                    let n = self.base + (c * CHUNK + i) as u128;
                    key.as_ref().map(|key| (n, key))
                })
            })
    }
}

/// Slots per page of a [`PagedTable`]: 512 bytes of holders. Small, because a
/// page lives as long as one of its slots is held (a long-lived attachment
/// among churned ones keeps its page).
pub(crate) const PAGE: usize = 64;

#[derive(Clone)]
struct Page<H> {
    slots: [Option<H>; PAGE],
    used: usize,
}

/// Slots for positions anywhere in u128, in pages allocated on first use and
/// freed when emptied (one emptied page is kept as a spare, so an allocation
/// and release at a page's edge do not cost a page allocation each).
#[derive(Clone)]
struct PagedTable<H> {
    pages: HashMap<u128, Box<Page<H>>, LocalHash>,
    spare: Option<Box<Page<H>>>,
    len: usize,
}

impl<H> Default for PagedTable<H> {
    fn default() -> Self {
        PagedTable {
            pages: HashMap::default(),
            spare: None,
            len: 0,
        }
    }
}

impl<H> PagedTable<H> {
    fn split(n: u128) -> (u128, usize) {
        (n / PAGE as u128, (n % PAGE as u128) as usize)
    }

    fn get(&self, n: u128) -> Option<&H> {
        let (page, i) = Self::split(n);
        self.pages.get(&page)?.slots[i].as_ref()
    }

    fn insert(&mut self, n: u128, key: H) -> Option<H> {
        let (page, i) = Self::split(n);
        let spare = &mut self.spare;
        let page = self.pages.entry(page).or_insert_with(|| {
            spare.take().unwrap_or_else(|| {
                Box::new(Page {
                    slots: [const { None }; PAGE],
                    used: 0,
                })
            })
        });
        let old = page.slots[i].replace(key);
        if old.is_none() {
            page.used += 1;
            self.len += 1;
        }
        old
    }

    fn remove(&mut self, n: u128) -> Option<H> {
        let (number, i) = Self::split(n);
        let page = self.pages.get_mut(&number)?;
        let old = page.slots[i].take()?;
        page.used -= 1;
        self.len -= 1;
        if page.used == 0 {
            let emptied = self.pages.remove(&number);
            if self.spare.is_none() {
                self.spare = emptied;
            }
        }
        Some(old)
    }

    /// `(position, key)`, pages in no particular order.
    fn iter(&self) -> impl Iterator<Item = (u128, &H)> + '_ {
        self.pages.iter().flat_map(|(number, page)| {
            page.slots.iter().enumerate().filter_map(move |(i, key)| {
                key.as_ref()
                    .map(|key| (number * PAGE as u128 + i as u128, key))
            })
        })
    }
}

/// Who (`H`) holds each value (`V`: address or MAC) of one subnet or family.
#[derive(Clone)]
pub(crate) struct HolderIndex<V, H> {
    /// Positions are computed against it (a MAC's depends on its 2^32 block).
    base: u128,
    dense: Option<DenseTable<H>>,
    paged: PagedTable<H>,
    hashed: HashMap<V, H, LocalHash>,
}

/// Where a value lives.
enum Place {
    Dense((usize, usize)),
    Paged(u128),
    Hashed,
}

impl<V: DenseValue, H> HolderIndex<V, H> {
    /// An index whose values in `[first, last]` (by [`DenseValue::position`])
    /// are dense when that range has at most [`DENSE_MAX`] positions.
    pub fn new(first: u128, last: u128) -> Self {
        let span = last.checked_sub(first).map(|d| d.saturating_add(1));
        HolderIndex {
            base: first,
            dense: span
                .filter(|s| *s <= DENSE_MAX)
                .map(|s| DenseTable::new(first, s)),
            paged: PagedTable::default(),
            hashed: HashMap::default(),
        }
    }

    fn place(&self, value: &V) -> Place {
        let Some(n) = value.position(self.base) else {
            return Place::Hashed;
        };
        match self.dense.as_ref().and_then(|t| t.slot(n)) {
            Some(slot) => Place::Dense(slot),
            None => Place::Paged(n),
        }
    }

    /// Whether values in the range given to [`HolderIndex::new`] are dense.
    #[cfg(test)]
    fn is_dense(&self) -> bool {
        self.dense.is_some()
    }

    fn dense_mut(&mut self) -> &mut DenseTable<H> {
        self.dense.as_mut().expect("slot found in the dense table")
    }

    pub fn get(&self, value: &V) -> Option<&H> {
        match self.place(value) {
            Place::Dense(slot) => self.dense.as_ref()?.get(slot),
            Place::Paged(n) => self.paged.get(n),
            Place::Hashed => self.hashed.get(value),
        }
    }

    pub fn contains(&self, value: &V) -> bool {
        self.get(value).is_some()
    }

    /// Sets the holder of `value`; returns the previous one.
    pub fn insert(&mut self, value: V, key: H) -> Option<H> {
        match self.place(&value) {
            Place::Dense(slot) => self.dense_mut().insert(slot, key),
            Place::Paged(n) => self.paged.insert(n, key),
            Place::Hashed => self.hashed.insert(value, key),
        }
    }

    pub fn remove(&mut self, value: &V) -> Option<H> {
        match self.place(value) {
            Place::Dense(slot) => self.dense_mut().remove(slot),
            Place::Paged(n) => self.paged.remove(n),
            Place::Hashed => self.hashed.remove(value),
        }
    }

    pub fn len(&self) -> usize {
        self.dense.as_ref().map_or(0, |t| t.len) + self.paged.len + self.hashed.len()
    }

    /// Every `(value, holder)`: the dense part in ascending order, then the
    /// paged and hashed parts in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (V, &H)> + '_ {
        let dense = self.dense.iter().flat_map(DenseTable::iter);
        dense
            .chain(self.paged.iter())
            .map(|(n, key)| (V::at(n), key))
            .chain(self.hashed.iter().map(|(v, key)| (*v, key)))
    }
}

/// Same holders for the same values, however the parts are laid out or
/// whichever chunks happen to be allocated.
impl<V: DenseValue, H: PartialEq> PartialEq for HolderIndex<V, H> {
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len() && self.iter().all(|(v, key)| other.get(&v) == Some(key))
    }
}

impl<V: DenseValue, H: Eq> Eq for HolderIndex<V, H> {}

impl<V: DenseValue + fmt::Debug, H: fmt::Debug> fmt::Debug for HolderIndex<V, H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    type Key = Arc<str>;

    fn key(s: &str) -> Key {
        Arc::from(s)
    }

    /// A /16's usable range, 10.0.0.1 ..= 10.0.255.254.
    fn slash_16() -> HolderIndex<u128, Key> {
        HolderIndex::new(0x0a00_0001, 0x0a00_fffe)
    }

    #[test]
    fn dense_values_are_found_across_a_chunk_boundary() {
        let mut index = slash_16();
        assert!(index.is_dense());
        let first = 0x0a00_0001;
        // Positions 511 and 512 of the table are the last slot of chunk 0 and
        // the first of chunk 1.
        for n in [first, first + 511, first + 512, 0x0a00_fffe] {
            assert_eq!(index.insert(n, key(&format!("k{n}"))), None);
        }
        assert_eq!(index.len(), 4);
        assert_eq!(index.get(&(first + 511)).map(|k| &**k), Some("k167772672"));
        assert_eq!(index.get(&(first + 512)).map(|k| &**k), Some("k167772673"));
        assert_eq!(index.get(&(first + 513)), None);
        let order: Vec<u128> = index.iter().map(|(n, _)| n).collect();
        assert_eq!(order, vec![first, first + 511, first + 512, 0x0a00_fffe]);
        assert_eq!(index.remove(&(first + 511)).as_deref(), Some("k167772672"));
        assert_eq!(index.remove(&(first + 511)), None);
        assert_eq!(index.len(), 3);
        assert!(index.contains(&(first + 512)));
    }

    #[test]
    fn insert_replaces_and_returns_the_previous_holder() {
        let mut index = slash_16();
        assert_eq!(index.insert(0x0a00_0005, key("a")), None);
        assert_eq!(index.insert(0x0a00_0005, key("b")).as_deref(), Some("a"));
        assert_eq!(index.len(), 1);
        assert_eq!(index.get(&0x0a00_0005).map(|k| &**k), Some("b"));
    }

    #[test]
    fn values_outside_the_dense_range_are_paged() {
        let mut index = slash_16();
        // The network address and one outside the subnet.
        for n in [0x0a00_0000, 0x0b00_0000] {
            index.insert(n, key("outside"));
        }
        assert_eq!(index.paged.len, 2);
        assert_eq!(index.len(), 2);
        assert!(index.contains(&0x0a00_0000) && index.contains(&0x0b00_0000));
        assert!(!index.contains(&0x0a00_0001));
        assert_eq!(index.remove(&0x0b00_0000).as_deref(), Some("outside"));
        assert_eq!(index.len(), 1);
    }

    #[test]
    fn dense_up_to_the_threshold_and_paged_above() {
        let at = HolderIndex::<u128, Key>::new(1, DENSE_MAX);
        assert!(at.is_dense());
        let above = HolderIndex::<u128, Key>::new(1, DENSE_MAX + 1);
        assert!(!above.is_dense());
        let v6_64 = HolderIndex::<u128, Key>::new(
            (0xfd00 << 112) | 1,
            (0xfd00 << 112) | u128::from(u64::MAX),
        );
        assert!(!v6_64.is_dense());

        // Both behave the same.
        for mut index in [at, above] {
            index.insert(DENSE_MAX, key("last"));
            index.insert(1, key("first"));
            assert_eq!(index.get(&DENSE_MAX).map(|k| &**k), Some("last"));
            assert_eq!(index.len(), 2);
            let mut all: Vec<u128> = index.iter().map(|(n, _)| n).collect();
            all.sort();
            assert_eq!(all, vec![1, DENSE_MAX]);
        }
    }

    #[test]
    fn an_empty_range_has_no_dense_part() {
        assert!(!HolderIndex::<u128, Key>::new(5, 4).is_dense());
        assert!(HolderIndex::<u128, Key>::new(5, 5).is_dense());
    }

    #[test]
    fn dense_ipv6_family() {
        // fd00::/112, usable fd00::1 ..= fd00::fffe.
        let base = 0xfd00u128 << 112;
        let mut index = HolderIndex::<u128, Key>::new(base + 1, base + 0xfffe);
        assert!(index.is_dense());
        index.insert(base + 0x200, key("k"));
        assert_eq!(index.get(&(base + 0x200)).map(|k| &**k), Some("k"));
        // Same low bits under another prefix: a different address.
        assert_eq!(index.get(&0x200), None);
    }

    fn mac(s: &str) -> MacAddr {
        s.parse().expect("test MAC")
    }

    /// An IPv6 /64 family: addresses in pages of PAGE slots, a page found
    /// by hash, freed when emptied, one kept as a spare.
    #[test]
    fn large_family_addresses_share_pages() {
        let base = 0xfd00u128 << 112;
        let mut index = HolderIndex::<u128, Key>::new(base + 1, base + u128::from(u64::MAX));
        assert!(!index.is_dense());
        let page = PAGE as u128;
        // Last slot of one page, first of the next, and one far away.
        let far = base + (1 << 40) + 5;
        for n in [base + page - 1, base + page, far] {
            assert_eq!(index.insert(n, key(&format!("k{}", n - base))), None);
        }
        assert_eq!(index.paged.pages.len(), 3);
        assert_eq!(index.len(), 3);
        assert!(index.hashed.is_empty());
        assert_eq!(index.get(&(base + page)).map(|k| &**k), Some("k64"));
        assert_eq!(index.get(&(base + page + 1)), None);
        assert_eq!(index.insert(base + page + 1, key("k65")), None);
        assert_eq!(index.paged.pages.len(), 3, "same page");

        // Emptying a page frees it (kept as the spare); the next new page reuses it.
        assert_eq!(
            index.remove(&far).as_deref(),
            Some(&*format!("k{}", far - base))
        );
        assert_eq!(index.remove(&far), None);
        assert_eq!(index.paged.pages.len(), 2);
        assert!(index.paged.spare.is_some());
        index.insert(base + 10 * page, key("new page"));
        assert!(index.paged.spare.is_none());
        assert_eq!(index.len(), 4);

        let mut all: Vec<u128> = index.iter().map(|(n, _)| n - base).collect();
        all.sort();
        assert_eq!(all, vec![page - 1, page, page + 1, 10 * page]);
        // Equality by content, not by pages or spares.
        let mut fresh = HolderIndex::<u128, Key>::new(base + 1, base + u128::from(u64::MAX));
        for (n, k) in index.iter() {
            fresh.insert(n, k.clone());
        }
        assert_eq!(index, fresh);
    }

    #[test]
    fn macs_of_a_large_family_are_paged_requested_ones_hashed() {
        let base = 0xfd00u128 << 112;
        let mut macs = HolderIndex::<MacAddr, Key>::new(base + 1, base + u128::from(u64::MAX));
        let derived = address_mac(base + 0x1_0000_0042);
        assert_eq!(derived, mac("0a:58:00:00:00:42"));
        macs.insert(derived, key("dynamic"));
        macs.insert(mac("02:00:00:00:00:01"), key("requested"));
        assert_eq!((macs.paged.len, macs.hashed.len()), (1, 1));
        assert_eq!(macs.get(&derived).map(|k| &**k), Some("dynamic"));
        let mut all: Vec<MacAddr> = macs.iter().map(|(m, _)| m).collect();
        all.sort_by_key(|m| m.0);
        assert_eq!(all, vec![mac("02:00:00:00:00:01"), derived]);
        assert_eq!(macs.remove(&derived).as_deref(), Some("dynamic"));
        assert_eq!(macs.len(), 1);
    }

    #[test]
    fn generated_macs_are_dense_and_others_hashed() {
        let mut macs = HolderIndex::<MacAddr, Key>::new(0x0a00_0001, 0x0a00_fffe);
        let generated = address_mac(0x0a00_0102);
        assert_eq!(generated, mac("0a:58:0a:00:01:02"));
        macs.insert(generated, key("dynamic"));
        // A requested MAC outside the derived space, and one with the prefix
        // but the low bits of an address outside the subnet.
        macs.insert(mac("02:00:00:00:00:01"), key("requested"));
        macs.insert(mac("0a:58:0b:00:00:01"), key("elsewhere"));
        assert_eq!(macs.len(), 3);
        assert_eq!(macs.get(&generated).map(|k| &**k), Some("dynamic"));
        assert_eq!(
            macs.get(&mac("02:00:00:00:00:01")).map(|k| &**k),
            Some("requested")
        );
        let mut all: Vec<MacAddr> = macs.iter().map(|(m, _)| m).collect();
        all.sort_by_key(|m| m.0);
        assert_eq!(
            all,
            vec![
                mac("02:00:00:00:00:01"),
                generated,
                mac("0a:58:0b:00:00:01")
            ]
        );
    }

    #[test]
    fn a_requested_mac_in_the_derived_space_blocks_that_address_mac() {
        let mut macs = HolderIndex::<MacAddr, Key>::new(0x0a00_0001, 0x0a00_fffe);
        // Requested by one key: the MAC another address would generate.
        macs.insert(mac("0A-58-0A-00-00-07"), key("requested"));
        assert_eq!(
            macs.get(&address_mac(0x0a00_0007)).map(|k| &**k),
            Some("requested")
        );
        assert_eq!(macs.len(), 1);
    }

    #[test]
    fn macs_of_a_dense_ipv6_family_use_its_low_bits() {
        let base = 0xfd00u128 << 112;
        let mut macs = HolderIndex::<MacAddr, Key>::new(base + 1, base + 0xfffe);
        macs.insert(address_mac(base + 0x42), key("k"));
        assert_eq!(macs.get(&mac("0a:58:00:00:00:42")).map(|k| &**k), Some("k"));
        let all: Vec<MacAddr> = macs.iter().map(|(m, _)| m).collect();
        assert_eq!(all, vec![mac("0a:58:00:00:00:42")]);
    }

    #[test]
    fn equality_ignores_which_chunks_were_ever_allocated() {
        let mut churned = slash_16();
        churned.insert(0x0a00_8000, key("gone"));
        churned.remove(&0x0a00_8000);
        churned.insert(0x0a00_0002, key("k"));
        let mut fresh = slash_16();
        fresh.insert(0x0a00_0002, key("k"));
        assert_eq!(churned, fresh);
        fresh.insert(0x0a00_0003, key("k2"));
        assert_ne!(churned, fresh);
        assert_eq!(format!("{churned:?}"), r#"{167772162: "k"}"#);
    }
}
