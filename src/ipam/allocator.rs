//! The pure allocator: subnets, who holds which address and MAC, and the free
//! lists. No I/O; `store.rs` persists what it decides.
//!
//! Indexes: forward `key → Allocation` (one shared `Arc` per attachment,
//! handed out as [`Allocated`]); reverse per subnet family `address → key`
//! and per subnet `MAC → key` (`index.rs`: dense tables for ranges of at most
//! 2^20 addresses, hashed pages above); per family and pool a free set
//! (`freeset.rs`: a bitmap with summary levels up to 2^20 addresses, an
//! interval B-tree above, whose run the cursor is eating is kept out of the
//! tree). Every lookup is a table, bitmap, hash or B-tree operation, so
//! allocation costs the same whatever the fill, and an IPv6 /64 costs memory
//! in proportion to its holes and holders, not its size.
//!
//! Dynamic policy: next free address after the last one handed out in the
//! same pool, wrapping around at the end of the range. A just-released address
//! is therefore reused only after the cursor has gone round the whole range,
//! which is what Whereabouts users ask for (delayed reuse: a stale ARP entry or
//! a slow peer never meets a new pod on an old address), while lowest-free
//! (Kube-OVN) hands it out again at once.

use std::borrow::Borrow;
use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::hash::{Hash, Hasher};
use std::net::IpAddr;
use std::ops::Deref;
use std::sync::Arc;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use smallvec::SmallVec;

use super::addr::{address_mac, generated_mac, ip_to_u128, Family, MacAddr};
use super::error::IpamError;
use super::freeset::FreeSet;
use super::index::HolderIndex;
use super::subnet::{layout, FamilyLayout, PoolId, SubnetLayout, SubnetSpec};

/// What a caller asks for one attachment.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AllocationRequest {
    /// Attachment key `<ns>/<pod>/<provider>`.
    pub key: String,
    pub subnet: String,
    /// Static addresses, bare (`10.100.0.100`) or CIDR (`10.100.0.100/16`,
    /// prefix must equal the subnet's); at most one per family. Families of
    /// the subnet without one get a dynamic address.
    pub ips: Vec<String>,
    /// Requested MAC; generated when absent.
    pub mac: Option<String>,
    /// IP pool of the subnet to draw dynamic addresses from.
    pub pool: Option<String>,
    /// A StatefulSet pod: kept when the pod goes away, freed only by
    /// [`Release::Claim`].
    pub sticky: bool,
}

impl AllocationRequest {
    pub fn new(key: impl Into<String>, subnet: impl Into<String>) -> Self {
        AllocationRequest {
            key: key.into(),
            subnet: subnet.into(),
            ..Default::default()
        }
    }

    pub fn with_ips<S: Into<String>>(mut self, ips: impl IntoIterator<Item = S>) -> Self {
        self.ips = ips.into_iter().map(Into::into).collect();
        self
    }

    pub fn with_mac(mut self, mac: impl Into<String>) -> Self {
        self.mac = Some(mac.into());
        self
    }

    pub fn with_pool(mut self, pool: impl Into<String>) -> Self {
        self.pool = Some(pool.into());
        self
    }

    pub fn sticky(mut self, sticky: bool) -> Self {
        self.sticky = sticky;
        self
    }
}

/// An attachment's addresses: one per family of its subnet, in `cidrBlock`
/// order, and its MAC.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Allocation {
    pub key: String,
    /// Shared with the allocator's subnet (and every allocation in it).
    pub subnet: Arc<str>,
    pub ips: Ips,
    pub mac: MacAddr,
    #[serde(default)]
    pub pool: Option<String>,
    #[serde(default)]
    pub sticky: bool,
}

/// An allocation as the allocator holds it, handed out by
/// [`Allocator::allocate`]: shared, so returning it costs a reference count,
/// not a copy of the key, subnet name and addresses. Reads as an
/// [`Allocation`]; later changes to the allocator do not change it.
#[derive(Clone)]
pub struct Allocated(Holder);

impl Allocated {
    /// The allocation's own copy.
    pub fn to_allocation(&self) -> Allocation {
        self.0.alloc.clone()
    }

    /// Its order among the allocator's allocations (persisted with it).
    pub fn seq(&self) -> u64 {
        self.0.seq
    }
}

impl Deref for Allocated {
    type Target = Allocation;
    fn deref(&self) -> &Allocation {
        &self.0.alloc
    }
}

impl PartialEq for Allocated {
    fn eq(&self, other: &Self) -> bool {
        **self == **other
    }
}

impl Eq for Allocated {}

impl fmt::Debug for Allocated {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&**self, f)
    }
}

impl From<Allocated> for Allocation {
    fn from(a: Allocated) -> Allocation {
        a.0.into_held().alloc
    }
}

impl Allocation {
    /// The `<P>.kubernetes.io/ip_address` annotation value (`v4,v6`).
    pub fn ip_annotation(&self) -> String {
        self.ips
            .iter()
            .map(|ip| ip.to_string())
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// An attachment's addresses, one per family of its subnet: inline, no
/// allocation of their own. Serialized as a plain list.
pub type Ips = SmallVec<[IpAddr; MAX_FAMILIES]>;

/// Why an allocation is being given back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Release {
    /// The pod is gone: sticky allocations stay.
    PodGone,
    /// The claim itself is released (StatefulSet scaled down, IP CR deleted):
    /// frees sticky allocations too.
    Claim,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Released {
    Freed(Allocation),
    KeptSticky(Allocation),
    NotHeld,
}

/// An existing allocation that a subnet update now puts on an excluded
/// address or the gateway; it is kept and reported.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Conflict {
    pub key: String,
    pub ip: IpAddr,
    pub reason: &'static str,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SubnetChange {
    pub created: bool,
    pub conflicts: Vec<Conflict>,
    /// Allocations parked at load time (their subnet was not known) that the
    /// re-added subnet could not take back; they are gone.
    pub dropped: Vec<Allocation>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReconcileReport {
    /// Allocations whose key is not live: freed.
    pub freed: Vec<Allocation>,
    /// Sticky allocations whose key is not live: kept until released.
    pub retained_sticky: Vec<String>,
    /// Live keys with no allocation (the controller allocates them again).
    pub missing: Vec<String>,
}

/// Counts for one family. `total` is exact in u128 (a /64 has 2^64 − 1
/// usable addresses); metrics that need f64 convert.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FamilyUsage {
    pub family: Family,
    pub cidr: String,
    /// Usable addresses: range minus gateway minus excludeIps.
    pub total: u128,
    /// Held addresses (including any on addresses excluded after the fact).
    pub used: u128,
    pub available: u128,
}

/// Subnet counts. For dual stack `total` and `available` are the minimum
/// over families (each attachment needs one address of each) and `used` is
/// the number of attachments.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Usage {
    pub total: u128,
    pub used: u128,
    pub available: u128,
    pub families: Vec<FamilyUsage>,
}

/// A subnet's resolved parameters, for annotations and the router port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SubnetView {
    pub spec: SubnetSpec,
    pub cidrs: Vec<IpNet>,
    pub gateways: Vec<Option<IpAddr>>,
    pub gateway_mac: MacAddr,
}

/// The forward index, on the hot path: aHash (fast, keyed per process so pod
/// names cannot be chosen to collide).
type HeldSet = HashSet<Holder, ahash::RandomState>;

/// A subnet has one family, or two (dual stack).
pub(crate) const MAX_FAMILIES: usize = 2;

/// The reverse indexes: who holds an address, a MAC.
type Holders<V> = HolderIndex<V, Holder>;

#[derive(Clone, Debug, PartialEq, Eq)]
struct FreeList {
    free: FreeSet,
    /// Where the next dynamic search starts.
    cursor: u128,
    /// `seq` of the allocation that last moved the cursor (0: none yet);
    /// lets a reload pick the newest persisted cursor position.
    cursor_seq: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct FamilyState {
    layout: FamilyLayout,
    holders: Holders<u128>,
    free: BTreeMap<PoolId, FreeList>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct SubnetState {
    spec: SubnetSpec,
    /// `spec.name`, shared by the subnet's allocations.
    name: Arc<str>,
    gateway_mac: MacAddr,
    families: Vec<FamilyState>,
    macs: Holders<MacAddr>,
    /// Number of allocations in this subnet.
    count: usize,
}

/// What a key holds.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Held {
    alloc: Allocation,
    seq: u64,
}

/// An attachment as the indexes see it: its [`Held`] behind one shared
/// pointer, so `held` (a set looked up by key string) and the reverse
/// indexes cost a pointer per entry, and an attachment one allocation besides
/// its `Allocation`. Hashed and compared by key, as `Borrow<str>` requires.
#[derive(Clone)]
struct Holder(Arc<Held>);

impl Holder {
    fn new(alloc: Allocation, seq: u64) -> Self {
        Holder(Arc::new(Held { alloc, seq }))
    }

    fn as_str(&self) -> &str {
        &self.0.alloc.key
    }

    /// The same attachment: the same entry, or one with the same key.
    fn same(&self, other: &Holder) -> bool {
        self.is(other) || self.as_str() == other.as_str()
    }

    /// The same entry (what a consistent allocator's indexes point to).
    fn is(&self, other: &Holder) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }

    /// The held entry, without a copy when nothing else refers to it.
    fn into_held(self) -> Held {
        Arc::try_unwrap(self.0).unwrap_or_else(|shared| (*shared).clone())
    }
}

impl Deref for Holder {
    type Target = Held;
    fn deref(&self) -> &Held {
        &self.0
    }
}

impl Borrow<str> for Holder {
    fn borrow(&self) -> &str {
        self.as_str()
    }
}

impl Hash for Holder {
    fn hash<S: Hasher>(&self, state: &mut S) {
        self.as_str().hash(state);
    }
}

impl PartialEq for Holder {
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

/// A cursor position, as persisted; `seq` is that of the allocation that set
/// it, so the newest of several records wins on reload.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CursorRecord {
    pub subnet: String,
    pub family: Family,
    pub pool: Option<String>,
    pub cursor: u128,
    pub seq: u64,
}

/// The allocator. `PartialEq` compares everything a reload must reproduce
/// (subnets, holders, free sets, cursors), not the sequence counter.
#[derive(Clone, Debug, Default)]
pub struct Allocator {
    subnets: BTreeMap<String, SubnetState>,
    held: HeldSet,
    /// Allocations read back for a subnet that is not (yet) defined.
    parked: BTreeMap<String, Holder>,
    next_seq: u64,
}

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

impl FamilyState {
    fn new(layout: FamilyLayout) -> Self {
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

    fn take(&mut self, n: u128) {
        if let Some(pool) = self.layout.pool_of(n) {
            if let Some(list) = self.free.get_mut(&pool) {
                list.free.remove(n);
            }
        }
    }

    fn give_back(&mut self, n: u128) {
        if let Some(pool) = self.layout.pool_of(n) {
            if let Some(list) = self.free.get_mut(&pool) {
                list.free.insert(n);
            }
        }
    }
}

impl SubnetState {
    fn new(spec: SubnetSpec, layout: SubnetLayout) -> Self {
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

    fn name(&self) -> &str {
        &self.spec.name
    }

    fn cidrs(&self) -> String {
        self.families
            .iter()
            .map(|f| f.layout.net.to_string())
            .collect::<Vec<_>>()
            .join(",")
    }

    fn family_index(&self, family: Family) -> Option<usize> {
        self.families.iter().position(|f| f.layout.family == family)
    }

    /// Why `ip` cannot be taken statically by `key` (None: it can).
    fn static_refusal(&self, fam: &FamilyState, n: u128, key: &str) -> Option<IpamError> {
        let ip = fam.layout.ip(n);
        let subnet = self.name().to_string();
        if !fam.layout.in_range(n) {
            return Some(IpamError::OutOfRange {
                subnet,
                ip,
                cidr: fam.layout.net.to_string(),
            });
        }
        if fam.layout.gateway == Some(n) {
            return Some(IpamError::IsGateway { subnet, ip });
        }
        if fam.layout.excluded.contains(n) {
            return Some(IpamError::Excluded { subnet, ip });
        }
        match fam.holders.get(&n) {
            Some(holder) if holder.as_str() != key => Some(IpamError::HeldBy {
                subnet,
                ip,
                holder: holder.as_str().to_string(),
            }),
            _ => None,
        }
    }

    fn check_mac(&self, mac: &str, key: &str) -> Result<MacAddr, IpamError> {
        let bad = |reason: &str| IpamError::BadMac {
            subnet: self.name().to_string(),
            mac: mac.to_string(),
            reason: reason.to_string(),
        };
        let parsed: MacAddr = mac
            .parse()
            .map_err(|_| bad("want six hex octets separated by ':' or '-'"))?;
        if parsed.is_multicast() {
            return Err(bad(
                "multicast/broadcast MAC cannot be an interface address",
            ));
        }
        if parsed.is_zero() {
            return Err(bad("all-zero MAC"));
        }
        if parsed == self.gateway_mac {
            return Err(bad("it is the subnet gateway's MAC"));
        }
        match self.macs.get(&parsed) {
            Some(holder) if holder.as_str() != key => Err(IpamError::MacHeldBy {
                subnet: self.name().to_string(),
                mac: parsed,
                holder: holder.as_str().to_string(),
            }),
            _ => Ok(parsed),
        }
    }

    /// A MAC for `key`, whose first address is `first`: [`address_mac`] of
    /// it when free, else 40 hashed bits per attempt (a collision is rare,
    /// many in a row impossible).
    fn generate_mac(&self, key: &str, first: u128) -> Result<MacAddr, IpamError> {
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
        Err(IpamError::BadMac {
            subnet: self.name().to_string(),
            mac: String::new(),
            reason: format!("no free MAC found for {key:?} after 64 attempts"),
        })
    }

    /// Records `holder` (its addresses already validated as free for it). `taken[i]`: the
    /// caller already removed family `i`'s address from its free list (a dynamic allocation
    /// has that list at hand; the others are looked up by address).
    fn hold(&mut self, holder: &Holder, taken: &[bool]) {
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

    fn unhold(&mut self, holder: &Holder) {
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

    /// Whether `alloc` (read back from the store) fits: every address in
    /// range, of a family of the subnet, not held by another key, MAC free.
    fn can_restore(&self, alloc: &Allocation) -> bool {
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

    fn view(&self) -> SubnetView {
        SubnetView {
            spec: self.spec.clone(),
            cidrs: self.families.iter().map(|f| f.layout.net).collect(),
            gateways: self
                .families
                .iter()
                .map(|f| f.layout.gateway.map(|g| f.layout.ip(g)))
                .collect(),
            gateway_mac: self.gateway_mac,
        }
    }
}

/// Parses one static address of a request against the subnet.
fn parse_static(subnet: &SubnetState, input: &str) -> Result<(usize, u128), IpamError> {
    let input_t = input.trim();
    let (ip, prefix) = match input_t.split_once('/') {
        Some(_) => {
            let net: IpNet = input_t.parse().map_err(|_| IpamError::BadAddress {
                subnet: subnet.name().to_string(),
                input: input.to_string(),
            })?;
            (net.addr(), Some(net.prefix_len()))
        }
        None => (
            input_t
                .parse::<IpAddr>()
                .map_err(|_| IpamError::BadAddress {
                    subnet: subnet.name().to_string(),
                    input: input.to_string(),
                })?,
            None,
        ),
    };
    let family = Family::of(&ip);
    let index = subnet
        .family_index(family)
        .ok_or_else(|| IpamError::WrongFamily {
            subnet: subnet.name().to_string(),
            ip,
            family,
            cidrs: subnet.cidrs(),
        })?;
    let net = subnet.families[index].layout.net;
    if let Some(given) = prefix {
        if given != net.prefix_len() {
            return Err(IpamError::PrefixMismatch {
                subnet: subnet.name().to_string(),
                input: input.to_string(),
                given,
                cidr: net.to_string(),
            });
        }
    }
    Ok((index, ip_to_u128(&ip)))
}

impl Allocator {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a subnet; an identical re-add is a no-op, a different one an
    /// update. Parked allocations of this subnet are taken back.
    pub fn apply_subnet(&mut self, spec: SubnetSpec) -> Result<SubnetChange, IpamError> {
        if self.subnets.contains_key(&spec.name) {
            return self.update_subnet(spec);
        }
        self.add_subnet(spec)
    }

    /// Adds a new subnet; refuses a name already defined with another spec.
    pub fn add_subnet(&mut self, spec: SubnetSpec) -> Result<SubnetChange, IpamError> {
        if let Some(existing) = self.subnets.get(&spec.name) {
            if existing.spec == spec {
                return Ok(SubnetChange::default());
            }
            return Err(IpamError::InvalidSubnet {
                subnet: spec.name.clone(),
                reason: "already defined with a different spec (update it instead)".into(),
            });
        }
        let state = SubnetState::new(spec.clone(), layout(&spec)?);
        self.subnets.insert(spec.name.clone(), state);
        let mut change = SubnetChange {
            created: true,
            ..Default::default()
        };
        let parked: Vec<String> = self
            .parked
            .iter()
            .filter(|(_, h)| *h.alloc.subnet == *spec.name)
            .map(|(k, _)| k.clone())
            .collect();
        let mut parked: Vec<Holder> = parked
            .into_iter()
            .filter_map(|k| self.parked.remove(&k))
            .collect();
        parked.sort_by_key(|h| std::cmp::Reverse(h.seq));
        for holder in parked {
            let state = self
                .subnets
                .get_mut(&spec.name)
                .expect("subnet inserted above");
            if state.can_restore(&holder.alloc) {
                state.hold(&holder, &[]);
                self.held.insert(holder);
            } else {
                change.dropped.push(holder.into_held().alloc);
            }
        }
        Ok(change)
    }

    /// Updates a subnet. A CIDR change is refused while any address is held;
    /// other changes keep every allocation and report those now on an
    /// excluded address or the gateway.
    pub fn update_subnet(&mut self, spec: SubnetSpec) -> Result<SubnetChange, IpamError> {
        let state = self
            .subnets
            .get(&spec.name)
            .ok_or_else(|| IpamError::UnknownSubnet {
                subnet: spec.name.clone(),
            })?;
        if state.spec == spec {
            return Ok(SubnetChange::default());
        }
        let new_layout = layout(&spec)?;
        let old_nets: Vec<IpNet> = state.families.iter().map(|f| f.layout.net).collect();
        let new_nets: Vec<IpNet> = new_layout.families.iter().map(|f| f.net).collect();
        if old_nets != new_nets && state.count > 0 {
            return Err(IpamError::InUse {
                subnet: spec.name.clone(),
                count: state.count,
                action: format!(
                    "change cidrBlock from {} to {}",
                    state.cidrs(),
                    new_layout.cidrs()
                ),
            });
        }
        let mut next = SubnetState::new(spec.clone(), new_layout);
        let mut conflicts = Vec::new();
        for (old, new) in state.families.iter().zip(next.families.iter_mut()) {
            for (pool, list) in &old.free {
                if let Some(new_list) = new.free.get_mut(pool) {
                    new_list.cursor = list.cursor;
                    new_list.cursor_seq = list.cursor_seq;
                }
            }
            let mut holders: Vec<(u128, &Holder)> = old.holders.iter().collect();
            holders.sort_by_key(|(n, _)| *n);
            for (n, key) in holders {
                let reason = if new.layout.gateway == Some(n) {
                    Some("now the gateway")
                } else if new.layout.excluded.contains(n) {
                    Some("now in excludeIps")
                } else {
                    None
                };
                if let Some(reason) = reason {
                    conflicts.push(Conflict {
                        key: key.as_str().to_string(),
                        ip: new.layout.ip(n),
                        reason,
                    });
                }
                new.take(n);
                new.holders.insert(n, key.clone());
            }
        }
        for (mac, key) in state.macs.iter() {
            next.macs.insert(mac, key.clone());
        }
        next.count = state.count;
        self.subnets.insert(spec.name.clone(), next);
        Ok(SubnetChange {
            created: false,
            conflicts,
            dropped: Vec::new(),
        })
    }

    /// Deletes a subnet. Refused while addresses are held unless `force`
    /// (cleanup), which frees them and returns what was freed.
    pub fn delete_subnet(&mut self, name: &str, force: bool) -> Result<Vec<Allocation>, IpamError> {
        let state = self
            .subnets
            .get(name)
            .ok_or_else(|| IpamError::UnknownSubnet {
                subnet: name.to_string(),
            })?;
        if state.count > 0 && !force {
            return Err(IpamError::InUse {
                subnet: name.to_string(),
                count: state.count,
                action: "delete the subnet".into(),
            });
        }
        let mut keys: Vec<String> = self
            .held
            .iter()
            .filter(|h| *h.alloc.subnet == *name)
            .map(|h| h.alloc.key.clone())
            .collect();
        keys.sort();
        // The subnet's reverse indexes go first: the entries are then unshared.
        self.subnets.remove(name);
        Ok(keys
            .into_iter()
            .filter_map(|k| self.held.take(k.as_str()).map(|h| h.into_held().alloc))
            .collect())
    }

    /// Allocates for `req.key`, or returns what the key already holds when
    /// the request agrees with it. `fresh` says whether anything changed.
    pub fn allocate(&mut self, req: &AllocationRequest) -> Result<(Allocated, bool), IpamError> {
        let subnet = self
            .subnets
            .get(&req.subnet)
            .ok_or_else(|| IpamError::UnknownSubnet {
                subnet: req.subnet.clone(),
            })?;

        // Static addresses, one per family at most.
        let mut wanted_all = [None; MAX_FAMILIES];
        let wanted = &mut wanted_all[..subnet.families.len()];
        for input in &req.ips {
            let (i, n) = parse_static(subnet, input)?;
            if wanted[i].is_some_and(|m| m != n) {
                return Err(IpamError::BadAddress {
                    subnet: req.subnet.clone(),
                    input: format!(
                        "{input} (a second {} address)",
                        subnet.families[i].layout.family
                    ),
                });
            }
            wanted[i] = Some(n);
        }

        if let Some(existing) = self
            .held
            .get(req.key.as_str())
            .or_else(|| self.parked.get(&req.key))
        {
            Self::repeat(&existing.alloc, subnet, req, wanted)?;
            return Ok((Allocated(existing.clone()), false));
        }

        if let Some(pool) = &req.pool {
            if !subnet.spec.pools.contains_key(pool) {
                return Err(IpamError::UnknownPool {
                    subnet: req.subnet.clone(),
                    pool: pool.clone(),
                });
            }
        }

        let mut chosen: [(u128, Option<PoolId>); MAX_FAMILIES] = Default::default();
        let chosen = &mut chosen[..wanted.len()];
        for ((fam, want), slot) in subnet
            .families
            .iter()
            .zip(wanted.iter())
            .zip(chosen.iter_mut())
        {
            match want {
                Some(n) => {
                    if let Some(err) = subnet.static_refusal(fam, *n, &req.key) {
                        return Err(err);
                    }
                    if let Some(pool) = &req.pool {
                        let in_pool = fam.layout.pools.get(pool).is_some_and(|s| s.contains(*n));
                        if fam.layout.pools.contains_key(pool) && !in_pool {
                            return Err(IpamError::NotInPool {
                                subnet: req.subnet.clone(),
                                pool: pool.clone(),
                                ip: fam.layout.ip(*n),
                            });
                        }
                    }
                    *slot = (*n, None);
                }
                None => {
                    // A pool without addresses of this family leaves that
                    // family to the general list.
                    let pool_id: PoolId = req
                        .pool
                        .clone()
                        .filter(|p| fam.layout.pools.contains_key(p));
                    let list = fam.free.get(&pool_id).expect("every pool has a free list");
                    let n = list
                        .free
                        .first_from(list.cursor)
                        .ok_or_else(|| IpamError::Full {
                            subnet: req.subnet.clone(),
                            family: fam.layout.family,
                            scope: match &pool_id {
                                Some(p) => format!("pool {p:?}"),
                                None => fam.layout.net.to_string(),
                            },
                        })?;
                    *slot = (n, Some(pool_id));
                }
            }
        }

        let mac = match &req.mac {
            Some(mac) => subnet.check_mac(mac, &req.key)?,
            None => subnet.generate_mac(&req.key, chosen[0].0)?,
        };

        let alloc = Allocation {
            key: req.key.clone(),
            subnet: subnet.name.clone(),
            ips: subnet
                .families
                .iter()
                .zip(chosen.iter())
                .map(|(f, (n, _))| f.layout.ip(*n))
                .collect(),
            mac,
            pool: req.pool.clone(),
            sticky: req.sticky,
        };
        let subnet = self
            .subnets
            .get_mut(&req.subnet)
            .expect("subnet looked up above");
        let seq = self.next_seq.max(1);
        self.next_seq = seq + 1;
        let mut taken = [false; MAX_FAMILIES];
        for ((fam, (n, dynamic)), taken) in subnet
            .families
            .iter_mut()
            .zip(chosen.iter())
            .zip(taken.iter_mut())
        {
            if let Some(pool_id) = dynamic {
                if let Some(list) = fam.free.get_mut(pool_id) {
                    list.cursor = n.wrapping_add(1);
                    list.cursor_seq = seq;
                    *taken = list.free.remove(*n);
                }
            }
        }
        let holder = Holder::new(alloc, seq);
        subnet.hold(&holder, &taken);
        self.held.insert(holder.clone());
        Ok((Allocated(holder), true))
    }

    /// A repeated request for a key that already holds an allocation.
    fn repeat(
        held: &Allocation,
        subnet: &SubnetState,
        req: &AllocationRequest,
        wanted: &[Option<u128>],
    ) -> Result<(), IpamError> {
        let mismatch = |requested: String| IpamError::KeyMismatch {
            subnet: req.subnet.clone(),
            key: req.key.clone(),
            held: format!("{} in subnet {:?}", held.ip_annotation(), held.subnet),
            requested,
        };
        if *held.subnet != *req.subnet {
            return Err(mismatch(format!("subnet {:?}", req.subnet)));
        }
        for (fam, want) in subnet.families.iter().zip(wanted) {
            if let Some(n) = want {
                let ip = fam.layout.ip(*n);
                if !held.ips.contains(&ip) {
                    return Err(mismatch(ip.to_string()));
                }
            }
        }
        if let Some(mac) = &req.mac {
            if mac.parse::<MacAddr>().ok() != Some(held.mac) {
                return Err(mismatch(format!("MAC {mac}")));
            }
        }
        Ok(())
    }

    /// Gives back what `key` holds (see [`Release`] for sticky keys).
    pub fn release(&mut self, key: &str, why: Release) -> Released {
        let keep = |holder: &Holder| holder.alloc.sticky && why == Release::PodGone;
        if let Some(holder) = self.held.take(key) {
            if keep(&holder) {
                let kept = holder.alloc.clone();
                self.held.insert(holder);
                return Released::KeptSticky(kept);
            }
            if let Some(subnet) = self.subnets.get_mut(&*holder.alloc.subnet) {
                subnet.unhold(&holder);
            }
            return Released::Freed(holder.into_held().alloc);
        }
        match self.parked.get(key) {
            None => Released::NotHeld,
            Some(holder) if keep(holder) => Released::KeptSticky(holder.alloc.clone()),
            Some(_) => {
                let holder = self.parked.remove(key).expect("looked up above");
                Released::Freed(holder.into_held().alloc)
            }
        }
    }

    /// Garbage collection: frees every non-sticky allocation whose key is not
    /// in `live`, and lists live keys that hold nothing.
    pub fn reconcile(&mut self, live: &HashSet<String>) -> ReconcileReport {
        let mut report = ReconcileReport::default();
        let mut stale: Vec<String> = self
            .held
            .iter()
            .map(Holder::as_str)
            .chain(self.parked.keys().map(String::as_str))
            .filter(|k| !live.contains(*k))
            .map(str::to_string)
            .collect();
        stale.sort();
        for key in stale {
            match self.release(&key, Release::PodGone) {
                Released::Freed(a) => report.freed.push(a),
                Released::KeptSticky(_) => report.retained_sticky.push(key),
                Released::NotHeld => {}
            }
        }
        report.missing = live
            .iter()
            .filter(|k| !self.held.contains(k.as_str()) && !self.parked.contains_key(*k))
            .cloned()
            .collect();
        report.missing.sort();
        report
    }

    pub fn get(&self, key: &str) -> Option<&Allocation> {
        self.held
            .get(key)
            .or_else(|| self.parked.get(key))
            .map(|h| &h.alloc)
    }

    /// The key holding `ip` in `subnet`.
    pub fn holder(&self, subnet: &str, ip: &IpAddr) -> Option<&str> {
        let state = self.subnets.get(subnet)?;
        let fam = &state.families[state.family_index(Family::of(ip))?];
        fam.holders.get(&ip_to_u128(ip)).map(Holder::as_str)
    }

    pub fn subnet(&self, name: &str) -> Option<SubnetView> {
        self.subnets.get(name).map(SubnetState::view)
    }

    pub fn subnet_names(&self) -> impl Iterator<Item = &str> {
        self.subnets.keys().map(String::as_str)
    }

    /// Every allocation, parked ones included, in no particular order.
    pub fn allocations(&self) -> impl Iterator<Item = &Allocation> {
        self.held
            .iter()
            .map(|h| &h.alloc)
            .chain(self.parked.values().map(|h| &h.alloc))
    }

    pub fn len(&self) -> usize {
        self.held.len() + self.parked.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn usage(&self, subnet: &str) -> Result<Usage, IpamError> {
        let state = self
            .subnets
            .get(subnet)
            .ok_or_else(|| IpamError::UnknownSubnet {
                subnet: subnet.to_string(),
            })?;
        let families: Vec<FamilyUsage> = state
            .families
            .iter()
            .map(|f| {
                let total = f.layout.usable_sets().values().map(|s| s.len()).sum();
                FamilyUsage {
                    family: f.layout.family,
                    cidr: f.layout.net.to_string(),
                    total,
                    used: f.holders.len() as u128,
                    available: f.free.values().map(|l| l.free.len()).sum(),
                }
            })
            .collect();
        Ok(Usage {
            total: families.iter().map(|f| f.total).min().unwrap_or(0),
            used: state.count as u128,
            available: families.iter().map(|f| f.available).min().unwrap_or(0),
            families,
        })
    }

    // ---- persistence support (used by store.rs) ----

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

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("test IP")
    }

    /// Both orders of a dual-stack subnet: each family's holders are found
    /// whichever index part (dense or hashed) it uses, and generated MACs
    /// follow the first family.
    #[test]
    fn dual_stack_holders_and_macs_in_either_family_order() {
        for (cidrs, first, second, mac) in [
            (
                "10.0.0.0/16,fd00::/64",
                "10.0.0.2",
                "fd00::2",
                "0a:58:0a:00:00:02",
            ),
            (
                "fd00::/112,10.0.0.0/24",
                "fd00::2",
                "10.0.0.2",
                "0a:58:00:00:00:02",
            ),
        ] {
            let mut a = Allocator::new();
            a.add_subnet(SubnetSpec::new("s", cidrs)).expect("subnet");
            let (got, _) = a.allocate(&AllocationRequest::new("k1", "s")).expect("k1");
            assert_eq!(got.ips[..], [ip(first), ip(second)], "{cidrs}");
            assert_eq!(got.mac.to_string(), mac, "{cidrs}");
            for addr in [first, second] {
                assert_eq!(a.holder("s", &ip(addr)), Some("k1"), "{cidrs} {addr}");
            }
            // k2 asks for the MAC k3's address would generate.
            let next_mac = address_mac(ip_to_u128(&ip(first)) + 2);
            let (k2, _) = a
                .allocate(&AllocationRequest::new("k2", "s").with_mac(next_mac.to_string()))
                .expect("k2");
            let (k3, _) = a.allocate(&AllocationRequest::new("k3", "s")).expect("k3");
            assert_eq!(k2.mac, next_mac);
            assert_ne!(k3.mac, next_mac, "{cidrs}");
            a.check_consistency().expect("consistent");
            assert!(matches!(
                a.release("k1", Release::Claim),
                Released::Freed(_)
            ));
            for addr in [first, second] {
                assert_eq!(a.holder("s", &ip(addr)), None, "{cidrs} {addr}");
            }
            a.check_consistency().expect("consistent after release");
        }
    }
}
