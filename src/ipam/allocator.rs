//! The pure allocator and its policy: subnets added, updated and deleted,
//! addresses and MACs handed out and given back, garbage collection, usage.
//! No I/O; `store.rs` persists what it decides. Around it: the request and
//! answer types (`allocation.rs`), the per-subnet indexes (`state.rs`), the
//! rules for static addresses and requested MACs (`static_rules.rs`), restore
//! from the store and the consistency check (`restore.rs`).
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

use std::collections::{BTreeMap, HashSet};
use std::net::IpAddr;

use ipnet::IpNet;

use super::addr::{ip_to_u128, Family};
use super::allocation::{
    Allocated, Allocation, AllocationRequest, Conflict, FamilyUsage, ReconcileReport, Release,
    Released, SubnetChange, SubnetView, Usage, MAX_FAMILIES,
};
use super::error::{comma_separated, IpamError, Requested};
use super::state::{HeldSet, Holder, SubnetState};
use super::subnet::{layout, PoolId, SubnetSpec};

/// The allocator. With `cfg(test)` or the `test-support` feature,
/// `PartialEq` compares everything a reload must reproduce (subnets,
/// holders, free sets, cursors), not the sequence counter.
#[derive(Clone, Debug, Default)]
pub struct Allocator {
    pub(super) subnets: BTreeMap<String, SubnetState>,
    pub(super) held: HeldSet,
    /// Allocations read back for a subnet that is not (yet) defined.
    pub(super) parked: BTreeMap<String, Holder>,
    pub(super) next_seq: u64,
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
                    comma_separated(&old_nets),
                    comma_separated(&new_nets)
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
        let state = self.state(name)?;
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

        let wanted_all = subnet.static_addresses(&req.ips)?;
        let wanted = &wanted_all[..subnet.families.len()];

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
                    if let Some(err) = subnet.static_refusal(fam, *n, req) {
                        return Err(err);
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
                            cidr: fam.layout.net,
                            pool: pool_id.clone(),
                        })?;
                    *slot = (n, Some(pool_id));
                }
            }
        }

        let mac = match req.mac {
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
        let mismatch = |requested: Requested| IpamError::KeyMismatch {
            subnet: req.subnet.clone(),
            key: req.key.clone(),
            held_subnet: held.subnet.clone(),
            held: held.ips.to_vec(),
            requested,
        };
        if *held.subnet != *req.subnet {
            return Err(mismatch(Requested::Subnet(req.subnet.clone())));
        }
        for (fam, want) in subnet.families.iter().zip(wanted) {
            if let Some(n) = want {
                let ip = fam.layout.ip(*n);
                if !held.ips.contains(&ip) {
                    return Err(mismatch(Requested::Address(ip)));
                }
            }
        }
        if let Some(mac) = req.mac.filter(|&mac| mac != held.mac) {
            return Err(mismatch(Requested::Mac(mac)));
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

    fn state(&self, subnet: &str) -> Result<&SubnetState, IpamError> {
        self.subnets
            .get(subnet)
            .ok_or_else(|| IpamError::UnknownSubnet {
                subnet: subnet.to_string(),
            })
    }

    /// Counts of IP pool `pool` of `subnet`, one per family the pool has addresses of:
    /// `total` its addresses, `available` those free, `used` the rest.
    pub fn pool_usage(&self, subnet: &str, pool: &str) -> Result<Vec<FamilyUsage>, IpamError> {
        let state = self.state(subnet)?;
        if !state.spec.pools.contains_key(pool) {
            return Err(IpamError::UnknownPool {
                subnet: subnet.to_string(),
                pool: pool.to_string(),
            });
        }
        let id: PoolId = Some(pool.to_string());
        Ok(state
            .families
            .iter()
            .filter_map(|f| {
                let total = f.layout.usable_sets().get(&id)?.len();
                let available = f.free.get(&id).map_or(0, |l| l.free.len());
                Some(FamilyUsage {
                    family: f.layout.family,
                    cidr: f.layout.net.to_string(),
                    total,
                    used: total.saturating_sub(available),
                    available,
                })
            })
            .collect())
    }

    pub fn usage(&self, subnet: &str) -> Result<Usage, IpamError> {
        let state = self.state(subnet)?;
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::mac::MacAddr;
    use crate::ipam::addr::address_mac;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("test IP")
    }

    fn mac(s: &str) -> MacAddr {
        s.parse().expect("test MAC")
    }

    /// Both orders of a dual-stack subnet: each family's holders are found
    /// whichever index part (dense or hashed) it uses, and generated MACs
    /// follow the first family.
    #[test]
    fn dual_stack_holders_and_macs_in_either_family_order() {
        for (cidrs, first, second, generated) in [
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
            assert_eq!(got.mac, mac(generated), "{cidrs}");
            for addr in [first, second] {
                assert_eq!(a.holder("s", &ip(addr)), Some("k1"), "{cidrs} {addr}");
            }
            // k2 asks for the MAC k3's address would generate.
            let next_mac = address_mac(ip_to_u128(&ip(first)) + 2);
            let (k2, _) = a
                .allocate(&AllocationRequest::new("k2", "s").with_mac(next_mac))
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
