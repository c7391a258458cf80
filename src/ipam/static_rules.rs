//! The rules a request's own choices must meet in a subnet: static addresses
//! (at most one per family; its family is one of the subnet's, its prefix,
//! when given, is the subnet's, it lies in the usable range, is neither
//! excluded nor the gateway, is not held by another key and, with a pool
//! named, lies in the pool) and a requested MAC (unicast, not zero,
//! not the gateway's, not held by another key). IPAM is the one place these
//! are checked; callers hand typed values and get a typed refusal. Dynamic
//! choices are in `allocator.rs`.

use std::net::IpAddr;

use super::addr::{ip_to_u128, Family};
use super::allocation::{AllocationRequest, MAX_FAMILIES};
use super::error::IpamError;
use super::state::{FamilyState, SubnetState};
use crate::api::mac::MacAddr;
use crate::api::selection::IpRequest;

impl SubnetState {
    /// The requested static address of each family (by family index), each
    /// checked for family and prefix; at most one per family (the same one
    /// twice is one). On the allocate path: no allocation.
    #[inline]
    pub(super) fn static_addresses(
        &self,
        requests: &[IpRequest],
    ) -> Result<[Option<u128>; MAX_FAMILIES], IpamError> {
        let mut wanted = [None; MAX_FAMILIES];
        for request in requests {
            let (i, n) = self.static_slot(request)?;
            if let Some(first) = wanted[i].filter(|&m| m != n) {
                let fam = &self.families[i].layout;
                return Err(IpamError::SecondAddress {
                    subnet: self.name().to_string(),
                    family: fam.family,
                    first: fam.ip(first),
                    second: request.address,
                });
            }
            wanted[i] = Some(n);
        }
        Ok(wanted)
    }

    /// The family index and offset of a static address, checked for family and prefix.
    fn static_slot(&self, request: &IpRequest) -> Result<(usize, u128), IpamError> {
        let ip = request.address;
        let family = Family::of(&ip);
        let index = self
            .family_index(family)
            .ok_or_else(|| IpamError::WrongFamily {
                subnet: self.name().to_string(),
                ip,
                family,
                cidrs: self.cidrs(),
            })?;
        let net = self.families[index].layout.net;
        if let Some(given) = request.prefix_len {
            if given != net.prefix_len() {
                return Err(IpamError::PrefixMismatch {
                    subnet: self.name().to_string(),
                    ip,
                    given,
                    cidr: net,
                });
            }
        }
        Ok((index, ip_to_u128(&ip)))
    }

    /// Why `n` cannot be taken statically for `req` (None: it can).
    pub(super) fn static_refusal(
        &self,
        fam: &FamilyState,
        n: u128,
        req: &AllocationRequest,
    ) -> Option<IpamError> {
        let ip: IpAddr = fam.layout.ip(n);
        let subnet = self.name().to_string();
        if !fam.layout.in_range(n) {
            return Some(IpamError::OutOfRange {
                subnet,
                ip,
                cidr: fam.layout.net,
            });
        }
        if fam.layout.gateway == Some(n) {
            return Some(IpamError::IsGateway { subnet, ip });
        }
        if fam.layout.excluded.contains(n) {
            return Some(IpamError::Excluded { subnet, ip });
        }
        if let Some(holder) = fam.holders.get(&n).filter(|h| h.as_str() != req.key) {
            return Some(IpamError::HeldBy {
                subnet,
                ip,
                holder: holder.as_str().to_string(),
            });
        }
        // A pool without addresses of this family does not restrict it.
        let pool = req.pool.as_ref()?;
        let in_pool = fam.layout.pools.get(pool)?.contains(n);
        (!in_pool).then(|| IpamError::NotInPool {
            subnet,
            pool: pool.clone(),
            ip,
        })
    }

    /// `mac` if `key` may have it.
    pub(super) fn check_mac(&self, mac: MacAddr, key: &str) -> Result<MacAddr, IpamError> {
        let bad = |reason: &'static str| IpamError::BadMac {
            subnet: self.name().to_string(),
            mac,
            reason,
        };
        if mac.is_multicast() {
            return Err(bad(
                "multicast/broadcast MAC cannot be an interface address",
            ));
        }
        if mac.is_zero() {
            return Err(bad("all-zero MAC"));
        }
        if mac == self.gateway_mac {
            return Err(bad("it is the subnet gateway's MAC"));
        }
        match self.macs.get(&mac) {
            Some(holder) if holder.as_str() != key => Err(IpamError::MacHeldBy {
                subnet: self.name().to_string(),
                mac,
                holder: holder.as_str().to_string(),
            }),
            _ => Ok(mac),
        }
    }
}
