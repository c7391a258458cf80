//! Restore and checking: rebuilding an allocator from the records the store
//! read back (later write wins on a double claim; records of unknown subnets
//! are parked), the cursor records the store persists, and, for tests and
//! benchmarks only (`cfg(test)` or the `test-support` feature), the check that
//! every index agrees with every other and the comparison of a reloaded
//! allocator with the one that was in memory. The allocation policy is in
//! `allocator.rs`.

use super::addr::{ip_to_u128, Family};
use super::allocation::{Allocation, CursorRecord, MAX_FAMILIES};
use super::allocator::Allocator;
use super::state::{Holder, SubnetState};
use super::subnet::{layout, SubnetSpec};

impl SubnetState {
    /// Whether `alloc` (read back from the store) fits: every address in
    /// range, of a family of the subnet, not held by another key, MAC free.
    pub(super) fn can_restore(&self, alloc: &Allocation) -> bool {
        let families_ok = alloc.ips.len() == self.families.len()
            && alloc.ips.iter().all(|ip| {
                self.family_index(Family::of(ip)).is_some_and(|i| {
                    let fam = &self.families[i];
                    let n = ip_to_u128(ip);
                    fam.layout.in_range(n)
                        && fam.holders.get(&n).is_none_or(|h| h.as_str() == alloc.key)
                })
            });
        families_ok
            && alloc.mac != self.gateway_mac
            && self
                .macs
                .get(&alloc.mac)
                .is_none_or(|h| h.as_str() == alloc.key)
    }
}

/// What `store.rs` persists besides allocations, and reads back.
impl Allocator {
    pub(crate) fn spec(&self, subnet: &str) -> Option<&SubnetSpec> {
        self.subnets.get(subnet).map(|s| &s.spec)
    }
    /// The cursors of `subnet` whose last move was by allocation `seq`
    /// (every cursor when `seq` is `None`).
    pub(crate) fn cursors(&self, subnet: &str, seq: Option<u64>) -> Vec<CursorRecord> {
        let Some(state) = self.subnets.get(subnet) else {
            return Vec::new();
        };
        state
            .families
            .iter()
            .flat_map(|f| {
                f.free
                    .iter()
                    .filter(move |(_, list)| seq.is_none_or(|s| list.cursor_seq == s))
                    .map(|(pool, list)| CursorRecord {
                        subnet: subnet.to_string(),
                        family: f.layout.family,
                        pool: pool.clone(),
                        cursor: list.cursor,
                        seq: list.cursor_seq,
                    })
            })
            .collect()
    }

    /// Whether releasing `key` would lose the record of the newest cursor
    /// move (the store then persists the cursors separately).
    pub(crate) fn moved_last_cursor(&self, key: &str) -> bool {
        let Some(held) = self.held.get(key) else {
            return false;
        };
        !self.cursors(&held.alloc.subnet, Some(held.seq)).is_empty()
    }

    /// Rebuilds an allocator from persisted records. On a conflict (two keys
    /// on one address or MAC) the later allocation (higher `seq`) wins: it
    /// was made after the earlier one's release, whose write was lost. Records
    /// of an unknown or unreadable subnet are parked, not lost. Returns the
    /// allocator and the allocations it dropped.
    pub fn restore(
        subnets: Vec<SubnetSpec>,
        mut allocations: Vec<(u64, Allocation)>,
        cursors: Vec<CursorRecord>,
    ) -> (Allocator, Vec<Allocation>) {
        let mut me = Allocator::new();
        for spec in subnets {
            let name = spec.name.clone();
            match layout(&spec) {
                Ok(l) => {
                    me.subnets.insert(name, SubnetState::new(spec, l));
                }
                Err(err) => {
                    tracing::warn!(subnet = %name, %err, "stored subnet unreadable; its allocations are parked")
                }
            }
        }
        allocations.sort_by_key(|(seq, _)| std::cmp::Reverse(*seq));
        let newest = allocations.first().map_or(0, |(s, _)| *s);
        let newest_cursor = cursors.iter().map(|c| c.seq).max().unwrap_or(0);
        me.next_seq = newest.max(newest_cursor) + 1;
        me.held.reserve(allocations.len());
        let mut dropped = Vec::new();
        // Holders first, free lists once at the end: one pass per address.
        for (seq, alloc) in allocations {
            if me.held.contains(alloc.key.as_str()) || me.parked.contains_key(&alloc.key) {
                dropped.push(alloc);
                continue;
            }
            let Some(state) = me.subnets.get_mut(&*alloc.subnet) else {
                me.parked.insert(alloc.key.clone(), Holder::new(alloc, seq));
                continue;
            };
            if !state.can_restore(&alloc) {
                tracing::warn!(key = %alloc.key, subnet = %alloc.subnet, ips = %alloc.ip_annotation(), "stored allocation conflicts with a later one; dropped");
                dropped.push(alloc);
                continue;
            }
            let holder = Holder::new(alloc, seq);
            // The free lists are trimmed once for all, below.
            state.hold(&holder, &[true; MAX_FAMILIES]);
            me.held.insert(holder);
        }
        for state in me.subnets.values_mut() {
            for fam in &mut state.families {
                let mut holders: Vec<u128> = fam.holders.iter().map(|(n, _)| n).collect();
                holders.sort_unstable();
                for list in fam.free.values_mut() {
                    list.free.remove_sorted(&holders);
                }
            }
        }
        for c in cursors {
            if let Some(state) = me.subnets.get_mut(&c.subnet) {
                if let Some(i) = state.family_index(c.family) {
                    if let Some(list) = state.families[i].free.get_mut(&c.pool) {
                        if c.seq >= list.cursor_seq {
                            list.cursor = c.cursor;
                            list.cursor_seq = c.seq;
                        }
                    }
                }
            }
        }
        (me, dropped)
    }
}

#[cfg(any(test, feature = "test-support"))]
impl Allocator {
    /// Checks every invariant between the indexes; `Err` says which broke.
    /// Cheap enough for tests after every step, not meant for hot paths.
    pub fn check_consistency(&self) -> Result<(), String> {
        for key in &self.held {
            let a = &key.alloc;
            let state = self
                .subnets
                .get(&*a.subnet)
                .ok_or_else(|| format!("{key:?} held in unknown subnet {:?}", a.subnet))?;
            if a.ips.len() != state.families.len() {
                return Err(format!("{key:?} has {} addresses", a.ips.len()));
            }
            for ip in &a.ips {
                let i = state
                    .family_index(Family::of(ip))
                    .ok_or_else(|| format!("{key:?}: {ip} has no family in {:?}", a.subnet))?;
                let fam = &state.families[i];
                let n = ip_to_u128(ip);
                if fam.holders.get(&n).is_none_or(|h| !h.is(key)) {
                    return Err(format!(
                        "{key:?}: reverse index of {ip} says {:?}",
                        fam.holders.get(&n)
                    ));
                }
                if fam.free.values().any(|l| l.free.contains(n)) {
                    return Err(format!("{key:?}: {ip} is also on a free list"));
                }
            }
            if state.macs.get(&a.mac).is_none_or(|h| !h.is(key)) {
                return Err(format!(
                    "{key:?}: MAC {} maps to {:?}",
                    a.mac,
                    state.macs.get(&a.mac)
                ));
            }
        }
        for state in self.subnets.values() {
            let mut counted = 0usize;
            for fam in &state.families {
                for (n, key) in fam.holders.iter() {
                    let ip = fam.layout.ip(n);
                    let ok = self.held.get(key.as_str()).is_some_and(|h| {
                        *h.alloc.subnet == *state.spec.name && h.alloc.ips.contains(&ip)
                    });
                    if !ok {
                        return Err(format!("reverse entry {ip} → {key:?} has no forward entry"));
                    }
                }
                counted += fam.holders.len();
                for (pool, usable) in fam.layout.usable_sets() {
                    let list = fam.free.get(&pool).ok_or_else(|| {
                        format!("{}: no free list for pool {pool:?}", state.spec.name)
                    })?;
                    let held_usable = fam
                        .holders
                        .iter()
                        .filter(|(n, _)| usable.contains(*n))
                        .count();
                    if list.free.len() + held_usable as u128 != usable.len()
                        || list.free.intersect(&usable).len() != list.free.len()
                    {
                        return Err(format!(
                            "{}: free list of pool {pool:?} ({}) + held ({held_usable}) != usable ({})",
                            state.spec.name,
                            list.free.len(),
                            usable.len()
                        ));
                    }
                }
            }
            if counted != state.count * state.families.len() {
                return Err(format!(
                    "{}: {counted} reverse entries for {} keys",
                    state.spec.name, state.count
                ));
            }
            if state.macs.len() != state.count {
                return Err(format!(
                    "{}: {} MACs for {} keys",
                    state.spec.name,
                    state.macs.len(),
                    state.count
                ));
            }
        }
        Ok(())
    }
}

/// Compares everything a reload must reproduce (subnets, holders, free sets,
/// cursors), not the sequence counter.
#[cfg(any(test, feature = "test-support"))]
impl PartialEq for Allocator {
    fn eq(&self, other: &Self) -> bool {
        // `held` compares whole entries, not only keys.
        self.subnets == other.subnets
            && self.held.len() == other.held.len()
            && self
                .held
                .iter()
                .all(|h| other.held.get(h.as_str()).is_some_and(|o| **o == **h))
            && self.parked.len() == other.parked.len()
            && self
                .parked
                .iter()
                .zip(&other.parked)
                .all(|((k, h), (ok, oh))| k == ok && **h == **oh)
    }
}
