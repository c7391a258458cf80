//! Per-subnet state: for each family of a subnet, who holds which address
//! and the free set of each pool with its cursor; per subnet, who holds which
//! MAC. Also the shared entry ([`Holder`]) that the forward index and the
//! reverse indexes point to, and the bookkeeping that records and forgets a
//! holder. What may be taken (the static rules, the dynamic policy) is
//! decided in `static_rules.rs` and `allocator.rs`, not here.

use std::borrow::Borrow;
use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::hash::{Hash, Hasher};
use std::ops::Deref;
use std::sync::Arc;

use ipnet::IpNet;

use super::addr::{address_mac, generated_mac, ip_to_u128, Family};
use super::allocation::{Allocation, SubnetView};
use super::error::IpamError;
use super::freeset::FreeSet;
use super::index::HolderIndex;
use super::subnet::{FamilyLayout, PoolId, SubnetLayout, SubnetSpec};
use crate::api::mac::MacAddr;

/// The forward index, on the hot path: aHash (fast, keyed per process so pod
/// names cannot be chosen to collide).
pub(super) type HeldSet = HashSet<Holder, ahash::RandomState>;
/// The reverse indexes: who holds an address, a MAC.
pub(super) type Holders<V> = HolderIndex<V, Holder>;

#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct FreeList {
    pub(super) free: FreeSet,
    /// Where the next dynamic search starts.
    pub(super) cursor: u128,
    /// `seq` of the allocation that last moved the cursor (0: none yet);
    /// lets a reload pick the newest persisted cursor position.
    pub(super) cursor_seq: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct FamilyState {
    pub(super) layout: FamilyLayout,
    pub(super) holders: Holders<u128>,
    pub(super) free: BTreeMap<PoolId, FreeList>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct SubnetState {
    pub(super) spec: SubnetSpec,
    /// `spec.name`, shared by the subnet's allocations.
    pub(super) name: Arc<str>,
    pub(super) gateway_mac: MacAddr,
    pub(super) families: Vec<FamilyState>,
    pub(super) macs: Holders<MacAddr>,
    /// Number of allocations in this subnet.
    pub(super) count: usize,
}

/// What a key holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Held {
    pub(super) alloc: Allocation,
    pub(super) seq: u64,
}

// The small methods below are `#[inline]`: the allocate and release paths in
// `allocator.rs` call them from another module, which may land in another
// codegen unit.

/// An attachment as the indexes see it: its [`Held`] behind one shared
/// pointer, so `held` (a set looked up by key string) and the reverse
/// indexes cost a pointer per entry, and an attachment one allocation besides
/// its `Allocation`. Hashed and compared by key, as `Borrow<str>` requires.
#[derive(Clone)]
pub(super) struct Holder(Arc<Held>);

impl Holder {
    #[inline]
    pub(super) fn new(alloc: Allocation, seq: u64) -> Self {
        Holder(Arc::new(Held { alloc, seq }))
    }

    #[inline]
    pub(super) fn as_str(&self) -> &str {
        &self.0.alloc.key
    }

    /// The same attachment: the same entry, or one with the same key.
    #[inline]
    pub(super) fn same(&self, other: &Holder) -> bool {
        self.is(other) || self.as_str() == other.as_str()
    }

    /// The same entry (what a consistent allocator's indexes point to).
    #[inline]
    pub(super) fn is(&self, other: &Holder) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }

    /// The held entry, without a copy when nothing else refers to it.
    #[inline]
    pub(super) fn into_held(self) -> Held {
        Arc::try_unwrap(self.0).unwrap_or_else(|shared| (*shared).clone())
    }
}

impl Deref for Holder {
    type Target = Held;
    #[inline]
    fn deref(&self) -> &Held {
        &self.0
    }
}

impl Borrow<str> for Holder {
    #[inline]
    fn borrow(&self) -> &str {
        self.as_str()
    }
}

impl Hash for Holder {
    #[inline]
    fn hash<S: Hasher>(&self, state: &mut S) {
        self.as_str().hash(state);
    }
}

impl PartialEq for Holder {
    #[inline]
    fn eq(&self, other: &Self) -> bool {
        self.same(other)
    }
}

impl Eq for Holder {}

impl fmt::Debug for Holder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl FamilyState {
    pub(super) fn new(layout: FamilyLayout) -> Self {
        let first = layout.first;
        let free = layout
            .usable_sets()
            .into_iter()
            .map(|(pool, free)| {
                let list = FreeList {
                    free: FreeSet::new(free),
                    cursor: first,
                    cursor_seq: 0,
                };
                (pool, list)
            })
            .collect();
        FamilyState {
            holders: HolderIndex::new(layout.first, layout.last),
            layout,
            free,
        }
    }

    pub(super) fn take(&mut self, n: u128) {
        if let Some(pool) = self.layout.pool_of(n) {
            if let Some(list) = self.free.get_mut(&pool) {
                list.free.remove(n);
            }
        }
    }

    pub(super) fn give_back(&mut self, n: u128) {
        if let Some(pool) = self.layout.pool_of(n) {
            if let Some(list) = self.free.get_mut(&pool) {
                list.free.insert(n);
            }
        }
    }
}

impl SubnetState {
    pub(super) fn new(spec: SubnetSpec, layout: SubnetLayout) -> Self {
        // Generated MACs derive from the first family's addresses.
        let macs = layout.families.first().map_or_else(
            || HolderIndex::new(1, 0),
            |f| HolderIndex::new(f.first, f.last),
        );
        SubnetState {
            name: spec.name.as_str().into(),
            spec,
            gateway_mac: layout.gateway_mac,
            families: layout.families.into_iter().map(FamilyState::new).collect(),
            macs,
            count: 0,
        }
    }

    #[inline]
    pub(super) fn name(&self) -> &str {
        &self.spec.name
    }

    pub(super) fn cidrs(&self) -> Vec<IpNet> {
        self.families.iter().map(|f| f.layout.net).collect()
    }

    #[inline]
    pub(super) fn family_index(&self, family: Family) -> Option<usize> {
        self.families.iter().position(|f| f.layout.family == family)
    }

    /// A MAC for `key`, whose first address is `first`: [`address_mac`] of
    /// it when free, else 40 hashed bits per attempt (a collision is rare,
    /// many in a row impossible).
    #[inline]
    pub(super) fn generate_mac(&self, key: &str, first: u128) -> Result<MacAddr, IpamError> {
        let free = |mac: &MacAddr| *mac != self.gateway_mac && !self.macs.contains(mac);
        let mac = address_mac(first);
        if free(&mac) {
            return Ok(mac);
        }
        for attempt in 0..64 {
            let mac = generated_mac(&[self.name().as_bytes(), key.as_bytes()], attempt);
            if free(&mac) {
                return Ok(mac);
            }
        }
        Err(IpamError::NoFreeMac {
            subnet: self.name().to_string(),
            key: key.to_string(),
        })
    }

    /// Records `holder` (its addresses already validated as free for it). `taken[i]`: the
    /// caller already removed family `i`'s address from its free list (a dynamic allocation
    /// has that list at hand; the others are looked up by address).
    #[inline]
    pub(super) fn hold(&mut self, holder: &Holder, taken: &[bool]) {
        let alloc = &holder.alloc;
        for ip in &alloc.ips {
            let n = ip_to_u128(ip);
            if let Some(i) = self.family_index(Family::of(ip)) {
                let fam = &mut self.families[i];
                if !taken.get(i).copied().unwrap_or(false) {
                    fam.take(n);
                }
                fam.holders.insert(n, holder.clone());
            }
        }
        self.macs.insert(alloc.mac, holder.clone());
        self.count += 1;
    }

    #[inline]
    pub(super) fn unhold(&mut self, holder: &Holder) {
        let alloc = &holder.alloc;
        for ip in &alloc.ips {
            let n = ip_to_u128(ip);
            if let Some(i) = self.family_index(Family::of(ip)) {
                let fam = &mut self.families[i];
                // One lookup: take the entry, put back one that is not ours.
                match fam.holders.remove(&n) {
                    Some(h) if h.same(holder) => fam.give_back(n),
                    Some(other) => {
                        fam.holders.insert(n, other);
                    }
                    None => {}
                }
            }
        }
        if let Some(other) = self.macs.remove(&alloc.mac).filter(|h| !h.same(holder)) {
            self.macs.insert(alloc.mac, other);
        }
        self.count -= 1;
    }

    pub(super) fn view(&self) -> SubnetView {
        SubnetView {
            spec: self.spec.clone(),
            cidrs: self.cidrs(),
            gateways: self
                .families
                .iter()
                .map(|f| f.layout.gateway.map(|g| f.layout.ip(g)))
                .collect(),
            gateway_mac: self.gateway_mac,
        }
    }
}
