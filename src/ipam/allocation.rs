//! What callers hand the allocator and what they get back: the request for
//! one attachment, the allocation it is answered with, why an allocation is
//! given back, and the reports of subnet changes, garbage collection, usage
//! and persisted cursors. Plain values; the rules that decide them live in
//! `allocator.rs` and `static_rules.rs`, the indexes in `state.rs`.

use std::fmt;
use std::net::IpAddr;
use std::ops::Deref;
use std::sync::Arc;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use smallvec::SmallVec;

use super::addr::Family;
use super::error::comma_separated;
use super::state::Holder;
use super::subnet::SubnetSpec;
use crate::api::mac::MacAddr;
use crate::api::selection::IpRequest;

/// What a caller asks for one attachment.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AllocationRequest {
    /// Attachment key `<ns>/<pod>/<provider>`.
    pub key: String,
    pub subnet: String,
    /// Static addresses, already parsed by the caller; a prefix, when given,
    /// must equal the subnet's; at most one per family. Families of the
    /// subnet without one get a dynamic address.
    pub ips: Vec<IpRequest>,
    /// Requested MAC; generated when absent.
    pub mac: Option<MacAddr>,
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

    pub fn with_ips(mut self, ips: impl IntoIterator<Item = IpRequest>) -> Self {
        self.ips = ips.into_iter().collect();
        self
    }

    pub fn with_mac(mut self, mac: MacAddr) -> Self {
        self.mac = Some(mac);
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
pub struct Allocated(pub(super) Holder);

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
        comma_separated(&self.ips)
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

/// A subnet has one family, or two (dual stack).
pub(crate) const MAX_FAMILIES: usize = 2;

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

#[cfg(test)]
mod tests {
    use super::*;

    /// Sled holds allocations in this JSON form: records written before
    /// `pool` and `sticky` existed, and every record since, keep loading.
    #[test]
    fn stored_allocation_form_is_stable() {
        let old = r#"{"key":"ns/p/x","subnet":"s","ips":["10.0.0.5","fd00::5"],"mac":"0a:58:0a:00:00:05"}"#;
        let loaded: Allocation = serde_json::from_str(old).expect("old record loads");
        let ips: Ips = ["10.0.0.5", "fd00::5"]
            .iter()
            .map(|ip| ip.parse().expect("test IP"))
            .collect();
        assert_eq!(
            loaded,
            Allocation {
                key: "ns/p/x".into(),
                subnet: "s".into(),
                ips,
                mac: MacAddr([0x0a, 0x58, 0x0a, 0, 0, 5]),
                pool: None,
                sticky: false,
            }
        );
        let stored = serde_json::to_value(&loaded).expect("serializes");
        assert_eq!(
            stored,
            serde_json::json!({
                "key": "ns/p/x",
                "subnet": "s",
                "ips": ["10.0.0.5", "fd00::5"],
                "mac": "0a:58:0a:00:00:05",
                "pool": null,
                "sticky": false
            })
        );
    }
}
