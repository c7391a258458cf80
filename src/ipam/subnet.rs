//! A subnet as IPAM sees it: the spec (strings, as the Subnet/IPPool CRDs
//! write them, persisted as given) and its parsed layout per family (usable
//! range, gateway, excludeIps, named pools). Parsing and validation only; who
//! holds which address lives in `state.rs`.
//!
//! Usable range: network+1 ..= last−1 for both families (as Kube-OVN, which
//! also keeps the IPv6 all-ones address back); a /31 or /127 keeps both
//! addresses and a /32 or /128 its single address. The gateway defaults to the
//! first usable address, except in a single-address subnet, which has none.

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use super::addr::{generated_mac, ip_to_u128, Family, IntervalSet};
use super::error::IpamError;
use crate::api::mac::MacAddr;

/// What the operator hands IPAM for one Subnet (plus its IPPools).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubnetSpec {
    pub name: String,
    /// `cidrBlock`: one CIDR, or `"v4cidr,v6cidr"` for dual stack.
    pub cidr_block: String,
    /// `gateway`: one address per family, comma-separated; missing families
    /// default to the first usable address.
    #[serde(default)]
    pub gateway: Option<String>,
    /// `excludeIps`: addresses, `a..b` ranges or CIDRs; parts outside the
    /// subnet are ignored.
    #[serde(default)]
    pub exclude_ips: Vec<String>,
    /// IPPools of this subnet: name → entries in the `excludeIps` forms. A
    /// pool's addresses are handed out only to requests naming the pool (or
    /// statically); pools must lie inside the subnet and must not overlap.
    #[serde(default)]
    pub pools: BTreeMap<String, Vec<String>>,
}

impl SubnetSpec {
    pub fn new(name: impl Into<String>, cidr_block: impl Into<String>) -> Self {
        SubnetSpec {
            name: name.into(),
            cidr_block: cidr_block.into(),
            gateway: None,
            exclude_ips: Vec::new(),
            pools: BTreeMap::new(),
        }
    }

    pub fn with_gateway(mut self, gateway: impl Into<String>) -> Self {
        self.gateway = Some(gateway.into());
        self
    }

    pub fn with_exclude_ips<S: Into<String>>(mut self, ips: impl IntoIterator<Item = S>) -> Self {
        self.exclude_ips = ips.into_iter().map(Into::into).collect();
        self
    }

    pub fn with_pool<S: Into<String>>(
        mut self,
        name: impl Into<String>,
        ips: impl IntoIterator<Item = S>,
    ) -> Self {
        self.pools
            .insert(name.into(), ips.into_iter().map(Into::into).collect());
        self
    }
}

/// One family of a subnet, parsed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct FamilyLayout {
    pub family: Family,
    pub net: IpNet,
    /// Usable range, inclusive.
    pub first: u128,
    pub last: u128,
    pub gateway: Option<u128>,
    /// excludeIps clipped to the usable range.
    pub excluded: IntervalSet,
    /// Named pools clipped to the usable range, minus excluded and gateway.
    pub pools: BTreeMap<String, IntervalSet>,
}

/// Which free list an address belongs to: the subnet's general one (`None`)
/// or a named pool.
pub(crate) type PoolId = Option<String>;

impl FamilyLayout {
    pub fn ip(&self, n: u128) -> IpAddr {
        self.family.to_ip(n)
    }

    pub fn in_range(&self, n: u128) -> bool {
        (self.first..=self.last).contains(&n)
    }

    /// The free list `n` belongs to, or `None` when it can never be handed
    /// out (outside the range, excluded, the gateway).
    pub fn pool_of(&self, n: u128) -> Option<PoolId> {
        if !self.in_range(n) || self.gateway == Some(n) || self.excluded.contains(n) {
            return None;
        }
        for (name, set) in &self.pools {
            if set.contains(n) {
                return Some(Some(name.clone()));
            }
        }
        Some(None)
    }

    /// Every address of each free list (before removing holders).
    pub fn usable_sets(&self) -> BTreeMap<PoolId, IntervalSet> {
        let mut general = IntervalSet::new();
        general.insert_range(self.first, self.last);
        if let Some(g) = self.gateway {
            general.remove(g);
        }
        for (s, e) in self.excluded.spans() {
            general.remove_range(s, e);
        }
        let mut out = BTreeMap::new();
        for (name, set) in &self.pools {
            for (s, e) in set.spans() {
                general.remove_range(s, e);
            }
            out.insert(Some(name.clone()), set.clone());
        }
        out.insert(None, general);
        out
    }
}

/// A subnet's spec and its parsed families, in `cidr_block` order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct SubnetLayout {
    pub families: Vec<FamilyLayout>,
    pub gateway_mac: MacAddr,
}

/// The gateway MAC a subnet gets: a pure function of its name, so the
/// operator and IPAM agree without storing it twice.
pub fn gateway_mac(subnet: &str) -> MacAddr {
    generated_mac(&[b"gateway", subnet.as_bytes()], 0)
}

fn invalid(spec: &SubnetSpec, reason: impl Into<String>) -> IpamError {
    IpamError::InvalidSubnet {
        subnet: spec.name.clone(),
        reason: reason.into(),
    }
}

/// Parses `"a"`, `"a..b"` or a CIDR into an inclusive range of one family.
pub(crate) fn parse_range(entry: &str) -> Result<(Family, u128, u128), String> {
    let entry = entry.trim();
    if let Some((a, b)) = entry.split_once("..") {
        let a: IpAddr = a
            .trim()
            .parse()
            .map_err(|_| format!("{a:?} is not an IP"))?;
        let b: IpAddr = b
            .trim()
            .parse()
            .map_err(|_| format!("{b:?} is not an IP"))?;
        if Family::of(&a) != Family::of(&b) {
            return Err(format!("{entry:?} mixes address families"));
        }
        let family = Family::of(&a);
        let (a, b) = (ip_to_u128(&a), ip_to_u128(&b));
        if a > b {
            return Err(format!("{entry:?} ends before it starts"));
        }
        return Ok((family, a, b));
    }
    if entry.contains('/') {
        let net: IpNet = entry
            .parse()
            .map_err(|_| format!("{entry:?} is not a CIDR"))?;
        let net = net.trunc();
        let fam = Family::of(&net.network());
        return Ok((
            fam,
            ip_to_u128(&net.network()),
            ip_to_u128(&net.broadcast()),
        ));
    }
    let ip: IpAddr = entry
        .parse()
        .map_err(|_| format!("{entry:?} is neither an IP, a range a..b nor a CIDR"))?;
    let n = ip_to_u128(&ip);
    Ok((Family::of(&ip), n, n))
}

fn usable_range(net: &IpNet) -> (u128, u128) {
    let network = ip_to_u128(&net.network());
    let last = ip_to_u128(&net.broadcast());
    let host_bits = net.max_prefix_len() - net.prefix_len();
    match host_bits {
        0 | 1 => (network, last),
        _ => (network + 1, last - 1),
    }
}

/// Parses and validates a spec.
pub(crate) fn layout(spec: &SubnetSpec) -> Result<SubnetLayout, IpamError> {
    if spec.name.is_empty() {
        return Err(invalid(spec, "empty name"));
    }
    let mut families: Vec<FamilyLayout> = Vec::new();
    for part in spec.cidr_block.split(',') {
        let part = part.trim();
        let net: IpNet = part
            .parse()
            .map_err(|_| invalid(spec, format!("cidrBlock part {part:?} is not a CIDR")))?;
        let net = net.trunc();
        let family = Family::of(&net.network());
        if families.iter().any(|f| f.family == family) {
            return Err(invalid(spec, format!("cidrBlock has two {family} CIDRs")));
        }
        let (first, last) = usable_range(&net);
        families.push(FamilyLayout {
            family,
            net,
            first,
            last,
            gateway: (first != last).then_some(first),
            excluded: IntervalSet::new(),
            pools: BTreeMap::new(),
        });
    }

    if let Some(gw) = spec.gateway.as_deref().filter(|g| !g.trim().is_empty()) {
        for part in gw.split(',') {
            let ip: IpAddr = part
                .trim()
                .parse()
                .map_err(|_| invalid(spec, format!("gateway {part:?} is not an IP")))?;
            let fam = families
                .iter_mut()
                .find(|f| f.family == Family::of(&ip))
                .ok_or_else(|| invalid(spec, format!("gateway {ip} has no CIDR of its family")))?;
            let n = ip_to_u128(&ip);
            if !(fam.first..=fam.last).contains(&n) {
                return Err(invalid(
                    spec,
                    format!("gateway {ip} is outside the usable range of {}", fam.net),
                ));
            }
            fam.gateway = Some(n);
        }
    }

    for entry in &spec.exclude_ips {
        let (family, s, e) =
            parse_range(entry).map_err(|r| invalid(spec, format!("excludeIps: {r}")))?;
        if let Some(fam) = families.iter_mut().find(|f| f.family == family) {
            let (s, e) = (s.max(fam.first), e.min(fam.last));
            if s <= e {
                fam.excluded.insert_range(s, e);
            }
        }
    }

    for (pool, entries) in &spec.pools {
        if pool.is_empty() {
            return Err(invalid(spec, "a pool has an empty name"));
        }
        for entry in entries {
            let (family, s, e) =
                parse_range(entry).map_err(|r| invalid(spec, format!("pool {pool:?}: {r}")))?;
            let fam = families
                .iter_mut()
                .find(|f| f.family == family)
                .ok_or_else(|| {
                    invalid(
                        spec,
                        format!("pool {pool:?}: {entry:?} has no CIDR of its family"),
                    )
                })?;
            if s < fam.first || e > fam.last {
                return Err(invalid(
                    spec,
                    format!(
                        "pool {pool:?}: {entry:?} is outside the usable range of {}",
                        fam.net
                    ),
                ));
            }
            let mut set = IntervalSet::new();
            set.insert_range(s, e);
            if let Some(g) = fam.gateway {
                set.remove(g);
            }
            for (xs, xe) in fam.excluded.spans() {
                set.remove_range(xs, xe);
            }
            for (other, other_set) in &fam.pools {
                if other != pool && !other_set.intersect(&set).is_empty() {
                    return Err(invalid(
                        spec,
                        format!("pools {other:?} and {pool:?} overlap"),
                    ));
                }
            }
            let slot = fam.pools.entry(pool.clone()).or_default();
            for (ps, pe) in set.spans() {
                slot.insert_range(ps, pe);
            }
        }
    }

    Ok(SubnetLayout {
        families,
        gateway_mac: gateway_mac(&spec.name),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_for_small_prefixes() {
        let l = layout(&SubnetSpec::new("s", "10.0.0.0/31")).expect("valid");
        let f = &l.families[0];
        assert_eq!((f.last - f.first), 1);
        assert_eq!(f.gateway, Some(f.first));
        let l = layout(&SubnetSpec::new("s", "10.0.0.7/32")).expect("valid");
        let f = &l.families[0];
        assert_eq!((f.first, f.gateway), (f.last, None));
        let l = layout(&SubnetSpec::new("s", "fd00::/127")).expect("valid");
        assert_eq!(l.families[0].last - l.families[0].first, 1);
        let l = layout(&SubnetSpec::new("s", "10.0.0.0/24")).expect("valid");
        let f = &l.families[0];
        assert_eq!(f.ip(f.first).to_string(), "10.0.0.1");
        assert_eq!(f.ip(f.last).to_string(), "10.0.0.254");
    }

    #[test]
    fn parse_range_forms() {
        assert_eq!(
            parse_range("10.0.0.1..10.0.0.3").expect("range"),
            (Family::V4, 0x0a00_0001, 0x0a00_0003)
        );
        assert_eq!(
            parse_range("10.0.0.0/30").expect("cidr"),
            (Family::V4, 0x0a00_0000, 0x0a00_0003)
        );
        assert!(parse_range("10.0.0.3..10.0.0.1").is_err());
        assert!(parse_range("10.0.0.1..fd00::1").is_err());
        assert!(parse_range("nonsense").is_err());
    }

    #[test]
    fn invalid_specs_name_the_subnet() {
        for spec in [
            SubnetSpec::new("bad", "10.0.0.0/33"),
            SubnetSpec::new("bad", "10.0.0.0/24,10.1.0.0/24"),
            SubnetSpec::new("bad", "10.0.0.0/24").with_gateway("10.0.1.1"),
            SubnetSpec::new("bad", "10.0.0.0/24").with_exclude_ips(["x"]),
            SubnetSpec::new("bad", "10.0.0.0/24").with_pool("p", ["10.0.1.5"]),
            SubnetSpec::new("bad", "10.0.0.0/24")
                .with_pool("p", ["10.0.0.5..10.0.0.9"])
                .with_pool("q", ["10.0.0.9"]),
        ] {
            let err = layout(&spec).expect_err("must be refused");
            assert!(err.to_string().contains("\"bad\""), "{err}");
        }
    }
}
