//! Which of the cluster's EIPs and NAT rules this gateway programs, read from the CRs: the
//! EIPs whose `spec.natGwDp` names it and that have `status.ip`, and the FIP, DNAT and SNAT
//! rules on those EIPs that the controller marked `Validated` (for their current generation).
//! Each rule becomes a typed value (addresses parsed, protocol known); a rule of this gateway
//! that cannot be programmed is kept with the reason, so its `status.ready` can say false.
//! Pure: CRs in, values out. Turning the values into nftables rules is `plan.rs`.

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::fmt;
use std::net::{Ipv4Addr, SocketAddrV4};

use ipnet::Ipv4Net;
use kube::{Resource, ResourceExt};

use crate::api::condition::{find_condition, Condition, VALIDATED};
use crate::api::nat::{IptablesDnatRule, IptablesEIP, IptablesFIPRule, IptablesSnatRule};

/// The transport protocol of a DNAT rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Protocol {
    Tcp,
    Udp,
}

impl Protocol {
    /// The IP protocol number.
    pub fn number(self) -> u8 {
        match self {
            Protocol::Tcp => 6,
            Protocol::Udp => 17,
        }
    }

    fn parse(value: &str) -> Option<Self> {
        match value.to_ascii_lowercase().as_str() {
            "tcp" => Some(Protocol::Tcp),
            "udp" => Some(Protocol::Udp),
            _ => None,
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        })
    }
}

/// An EIP of this gateway.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Eip {
    pub name: String,
    pub address: Ipv4Addr,
}

/// A floating IP: everything to `eip` goes to `internal`, and `internal` leaves as `eip`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Fip {
    pub name: String,
    pub eip: Ipv4Addr,
    pub internal: Ipv4Addr,
}

/// A port forward from `eip:external_port` to `internal`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Dnat {
    pub name: String,
    pub eip: Ipv4Addr,
    pub protocol: Protocol,
    pub external_port: u16,
    pub internal: SocketAddrV4,
}

/// Traffic from `internal` leaves as `eip`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Snat {
    pub name: String,
    pub eip: Ipv4Addr,
    pub internal: Ipv4Net,
}

/// Everything this gateway programs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GatewayRules {
    pub eips: Vec<Eip>,
    pub fips: Vec<Fip>,
    pub dnats: Vec<Dnat>,
    pub snats: Vec<Snat>,
}

/// The kind of a NAT CR, for status writes and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RuleKind {
    Eip,
    Fip,
    Dnat,
    Snat,
}

impl fmt::Display for RuleKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RuleKind::Eip => "eip",
            RuleKind::Fip => "fip",
            RuleKind::Dnat => "dnat",
            RuleKind::Snat => "snat",
        })
    }
}

/// One CR: its kind and name.
pub type RuleRef = (RuleKind, String);

/// What this gateway programs, and which of its objects it cannot program and why.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selection {
    pub rules: GatewayRules,
    /// Objects of this gateway left out, with the reason.
    pub skipped: BTreeMap<RuleRef, String>,
}

impl Selection {
    /// Every object this gateway answers for, with whether it is programmed.
    pub fn objects(&self) -> BTreeMap<RuleRef, bool> {
        let r = &self.rules;
        let programmed = r
            .eips
            .iter()
            .map(|e| (RuleKind::Eip, &e.name))
            .chain(r.fips.iter().map(|x| (RuleKind::Fip, &x.name)))
            .chain(r.dnats.iter().map(|x| (RuleKind::Dnat, &x.name)))
            .chain(r.snats.iter().map(|x| (RuleKind::Snat, &x.name)))
            .map(|(k, n)| ((k, n.clone()), true));
        programmed
            .chain(self.skipped.keys().map(|k| (k.clone(), false)))
            .collect()
    }
}

/// The CRs as the reflectors hold them.
#[derive(Debug, Clone, Copy)]
pub struct NatObjects<'a> {
    pub eips: &'a [IptablesEIP],
    pub fips: &'a [IptablesFIPRule],
    pub dnats: &'a [IptablesDnatRule],
    pub snats: &'a [IptablesSnatRule],
}

/// Picks out gateway `gateway`'s EIPs and rules.
pub fn select(gateway: &str, objects: NatObjects<'_>) -> Selection {
    let mut selection = Selection::default();
    // EIP name → address, for every EIP of this gateway (with or without an address).
    let mut eips: BTreeMap<String, Option<Ipv4Addr>> = BTreeMap::new();
    for eip in objects.eips {
        // An EIP being deleted stays while its finalizer holds it: rules still name it.
        if eip.spec.nat_gw_dp != gateway {
            continue;
        }
        let name = eip.name_any();
        let ip = eip.status.as_ref().map(|s| s.ip.as_str()).unwrap_or("");
        let address = match ip.parse::<Ipv4Addr>() {
            Ok(a) => Some(a),
            Err(_) => {
                let reason = if ip.is_empty() {
                    "no address allocated yet (status.ip is empty)".to_string()
                } else {
                    format!("status.ip {ip:?} is not an IPv4 address")
                };
                selection
                    .skipped
                    .insert((RuleKind::Eip, name.clone()), reason);
                None
            }
        };
        if let Some(address) = address {
            selection.rules.eips.push(Eip {
                name: name.clone(),
                address,
            });
        }
        eips.insert(name, address);
    }
    selection.rules.eips.sort();

    let mut pass = RulePass {
        selection: &mut selection,
        eips: &eips,
    };
    pass.take(RuleKind::Fip, objects.fips, |fip, name, eip, taken| {
        let internal = parse_ipv4(&fip.spec.internal_ip, "internalIp")?;
        if let Some(o) = taken.fips.iter().find(|o| o.eip == eip) {
            return Err(format!(
                "EIP {} already has floating IP rule {}",
                fip.spec.eip, o.name
            ));
        }
        taken.fips.push(Fip {
            name,
            eip,
            internal,
        });
        Ok(())
    });
    pass.take(RuleKind::Dnat, objects.dnats, |dnat, name, eip, taken| {
        let spec = &dnat.spec;
        let protocol = Protocol::parse(&spec.protocol)
            .ok_or_else(|| format!("protocol {:?} is neither tcp nor udp", spec.protocol))?;
        let external_port = parse_port(&spec.external_port, "externalPort")?;
        let internal_port = parse_port(&spec.internal_port, "internalPort")?;
        let internal_ip = parse_ipv4(&spec.internal_ip, "internalIp")?;
        let same =
            |o: &&Dnat| (o.eip, o.protocol, o.external_port) == (eip, protocol, external_port);
        if let Some(o) = taken.dnats.iter().find(same) {
            return Err(format!(
                "{protocol} port {external_port} of EIP {} is already forwarded by DNAT rule {}",
                spec.eip, o.name
            ));
        }
        taken.dnats.push(Dnat {
            name,
            eip,
            protocol,
            external_port,
            internal: SocketAddrV4::new(internal_ip, internal_port),
        });
        Ok(())
    });
    pass.take(RuleKind::Snat, objects.snats, |snat, name, eip, taken| {
        let internal = parse_cidr(&snat.spec.internal_cidr)?;
        taken.snats.push(Snat {
            name,
            eip,
            internal,
        });
        Ok(())
    });
    selection
}

/// What FIP, DNAT and SNAT CRs have in common.
trait NatRuleObject: Resource {
    /// `spec.eip`.
    fn eip_name(&self) -> &str;
    fn conditions(&self) -> Option<&[Condition]>;
}

impl NatRuleObject for IptablesFIPRule {
    fn eip_name(&self) -> &str {
        &self.spec.eip
    }
    fn conditions(&self) -> Option<&[Condition]> {
        self.status.as_ref().map(|s| &s.rule.conditions[..])
    }
}

impl NatRuleObject for IptablesDnatRule {
    fn eip_name(&self) -> &str {
        &self.spec.eip
    }
    fn conditions(&self) -> Option<&[Condition]> {
        self.status.as_ref().map(|s| &s.rule.conditions[..])
    }
}

impl NatRuleObject for IptablesSnatRule {
    fn eip_name(&self) -> &str {
        &self.spec.eip
    }
    fn conditions(&self) -> Option<&[Condition]> {
        self.status.as_ref().map(|s| &s.rule.conditions[..])
    }
}

/// Taking one kind of rule after another into a selection.
struct RulePass<'a> {
    selection: &'a mut Selection,
    /// This gateway's EIPs by name, `None` while without an address.
    eips: &'a BTreeMap<String, Option<Ipv4Addr>>,
}

impl RulePass<'_> {
    /// Takes the validated `objects` on this gateway's EIPs, oldest first: `build` gets the
    /// object, its name, its EIP's address and what is taken so far, and adds the typed rule
    /// or says why not.
    fn take<K: NatRuleObject>(
        &mut self,
        kind: RuleKind,
        objects: &[K],
        mut build: impl FnMut(&K, String, Ipv4Addr, &mut GatewayRules) -> Result<(), String>,
    ) {
        for object in in_age_order(objects) {
            let name = object.name_any();
            let eip = match self.eips.get(object.eip_name()) {
                // Another gateway's rule, or an unknown EIP: not ours to report.
                None => continue,
                Some(None) => Err(format!("EIP {} has no address yet", object.eip_name())),
                Some(Some(address)) => Ok(*address),
            };
            let taken = eip.and_then(|eip| {
                validated(object, object.conditions())?;
                build(object, name.clone(), eip, &mut self.selection.rules)
            });
            if let Err(reason) = taken {
                self.selection.skipped.insert((kind, name), reason);
            }
        }
    }
}

/// Oldest first (creation time, then name), so that of two conflicting rules the older wins,
/// as the controller decides; objects being deleted are left out.
fn in_age_order<K: Resource>(objects: &[K]) -> Vec<&K> {
    let mut sorted: Vec<&K> = objects
        .iter()
        .filter(|o| o.meta().deletion_timestamp.is_none())
        .collect();
    sorted.sort_by(|a, b| {
        let (a, b) = (a.meta(), b.meta());
        match (&a.creation_timestamp, &b.creation_timestamp) {
            (Some(x), Some(y)) => x.0.cmp(&y.0),
            (None, Some(_)) => Ordering::Greater,
            (Some(_), None) => Ordering::Less,
            (None, None) => Ordering::Equal,
        }
        .then_with(|| a.name.cmp(&b.name))
    });
    sorted
}

/// The controller's verdict: `Validated` True for the object's current generation.
fn validated<K: Resource>(object: &K, conditions: Option<&[Condition]>) -> Result<(), String> {
    let Some(c) = conditions.and_then(|c| find_condition(c, VALIDATED)) else {
        return Err("not validated by the controller yet".into());
    };
    if !c.is_true() {
        return Err(format!("not valid: {} ({})", c.message, c.reason));
    }
    match (c.observed_generation, object.meta().generation) {
        (Some(seen), Some(current)) if seen != current => Err(format!(
            "generation {current} not validated yet (validated: {seen})"
        )),
        _ => Ok(()),
    }
}

fn parse_ipv4(value: &str, field: &str) -> Result<Ipv4Addr, String> {
    value
        .trim()
        .parse()
        .map_err(|_| format!("{field} {value:?} is not an IPv4 address"))
}

fn parse_port(value: &str, field: &str) -> Result<u16, String> {
    match value.trim().parse::<u16>() {
        Ok(p) if p > 0 => Ok(p),
        _ => Err(format!("{field} {value:?} is not a port (1-65535)")),
    }
}

/// A CIDR, or a bare address meaning that one host.
fn parse_cidr(value: &str) -> Result<Ipv4Net, String> {
    let value = value.trim();
    if let Ok(net) = value.parse::<Ipv4Net>() {
        return Ok(net.trunc());
    }
    value
        .parse::<Ipv4Addr>()
        .map(Ipv4Net::from)
        .map_err(|_| format!("internalCIDR {value:?} is not an IPv4 CIDR"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::condition::ConditionStatus;
    use crate::api::nat::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn validated_condition(ok: bool, generation: Option<i64>) -> Vec<Condition> {
        let status = if ok {
            ConditionStatus::True
        } else {
            ConditionStatus::False
        };
        vec![Condition::new(
            VALIDATED,
            status,
            if ok { "Valid" } else { "Conflict" },
            if ok { "" } else { "port taken" },
            generation,
            Time(k8s_openapi::jiff::Timestamp::from_second(0).unwrap()),
        )]
    }

    fn eip(name: &str, gw: &str, ip: &str) -> IptablesEIP {
        let mut e = IptablesEIP::new(
            name,
            IptablesEipSpec {
                nat_gw_dp: gw.into(),
                ..Default::default()
            },
        );
        e.status = Some(IptablesEipStatus {
            ip: ip.into(),
            ..Default::default()
        });
        e
    }

    fn rule_state(ok: bool) -> NatRuleState {
        NatRuleState {
            conditions: validated_condition(ok, None),
            ..Default::default()
        }
    }

    fn dnat(name: &str, eip: &str, port: &str, to: &str, age: i64) -> IptablesDnatRule {
        let mut d = IptablesDnatRule::new(
            name,
            IptablesDnatRuleSpec {
                eip: eip.into(),
                external_port: port.into(),
                protocol: "TCP".into(),
                internal_ip: to.into(),
                internal_port: "80".into(),
            },
        );
        d.metadata.creation_timestamp = Some(Time(
            k8s_openapi::jiff::Timestamp::from_second(age).unwrap(),
        ));
        d.status = Some(IptablesDnatRuleStatus {
            rule: rule_state(true),
            ..Default::default()
        });
        d
    }

    fn fip(name: &str, eip: &str, to: &str) -> IptablesFIPRule {
        let mut f = IptablesFIPRule::new(
            name,
            IptablesFipRuleSpec {
                eip: eip.into(),
                internal_ip: to.into(),
            },
        );
        f.status = Some(IptablesFipRuleStatus {
            rule: rule_state(true),
            ..Default::default()
        });
        f
    }

    fn snat(name: &str, eip: &str, cidr: &str) -> IptablesSnatRule {
        let mut s = IptablesSnatRule::new(
            name,
            IptablesSnatRuleSpec {
                eip: eip.into(),
                internal_cidr: cidr.into(),
            },
        );
        s.status = Some(IptablesSnatRuleStatus {
            rule: rule_state(true),
            ..Default::default()
        });
        s
    }

    #[test]
    fn takes_only_this_gateways_addressed_eips_and_their_validated_rules() {
        let eips = [
            eip("e1", "gw1", "172.19.0.11"),
            eip("e2", "gw1", ""),
            eip("other", "gw2", "172.19.0.99"),
        ];
        let mut invalid = snat("s-bad", "e1", "10.100.0.0/16");
        invalid.status.as_mut().unwrap().rule = rule_state(false);
        let snats = [
            snat("s1", "e1", "10.100.0.0/16"),
            snat("s-host", "e1", "10.100.0.7"),
            snat("s-pending", "e2", "10.100.0.0/16"),
            snat("s-other", "other", "10.100.0.0/16"),
            invalid,
        ];
        let fips = [fip("f1", "e1", "10.100.0.5")];
        let sel = select(
            "gw1",
            NatObjects {
                eips: &eips,
                fips: &fips,
                dnats: &[],
                snats: &snats,
            },
        );
        assert_eq!(
            sel.rules.eips,
            [Eip {
                name: "e1".into(),
                address: "172.19.0.11".parse().unwrap()
            }]
        );
        let names: Vec<_> = sel.rules.snats.iter().map(|s| s.name.as_str()).collect();
        // Same age: by name.
        assert_eq!(names, ["s-host", "s1"]);
        assert_eq!(
            sel.rules.snats[0].internal,
            "10.100.0.7/32".parse::<Ipv4Net>().unwrap()
        );
        assert_eq!(sel.rules.fips.len(), 1);
        let skipped: Vec<_> = sel
            .skipped
            .keys()
            .map(|(k, n)| format!("{k}/{n}"))
            .collect();
        assert_eq!(skipped, ["eip/e2", "snat/s-bad", "snat/s-pending"]);
        assert!(sel.skipped[&(RuleKind::Snat, "s-bad".into())].contains("port taken"));
        // Every object of this gateway gets a ready value; the other gateway's none.
        let objects = sel.objects();
        assert_eq!(objects.len(), 7);
        assert!(!objects.contains_key(&(RuleKind::Snat, "s-other".into())));
    }

    #[test]
    fn the_older_of_two_conflicting_dnats_wins_and_bad_fields_are_reported() {
        let eips = [eip("e1", "gw", "172.19.0.11")];
        let dnats = [
            dnat("young", "e1", "8080", "10.100.0.6", 200),
            dnat("old", "e1", "8080", "10.100.0.5", 100),
            dnat("badport", "e1", "70000", "10.100.0.5", 100),
            dnat("badip", "e1", "81", "10.100.0", 100),
        ];
        let sel = select(
            "gw",
            NatObjects {
                eips: &eips,
                fips: &[],
                dnats: &dnats,
                snats: &[],
            },
        );
        assert_eq!(sel.rules.dnats.len(), 1);
        let d = &sel.rules.dnats[0];
        assert_eq!(d.name, "old");
        assert_eq!(d.protocol, Protocol::Tcp);
        assert_eq!(d.internal, "10.100.0.5:80".parse().unwrap());
        assert!(sel.skipped[&(RuleKind::Dnat, "young".into())].contains("old"));
        assert!(sel.skipped[&(RuleKind::Dnat, "badport".into())].contains("externalPort"));
        assert!(sel.skipped[&(RuleKind::Dnat, "badip".into())].contains("internalIp"));
    }

    #[test]
    fn a_spec_changed_after_validation_waits_for_the_controller() {
        let eips = [eip("e1", "gw", "172.19.0.11")];
        let mut f = fip("f1", "e1", "10.100.0.5");
        f.metadata.generation = Some(3);
        f.status.as_mut().unwrap().rule.conditions = validated_condition(true, Some(2));
        let mut f2 = fip("f2", "e1", "10.100.0.6");
        f2.status = None;
        let sel = select(
            "gw",
            NatObjects {
                eips: &eips,
                fips: &[f, f2],
                dnats: &[],
                snats: &[],
            },
        );
        assert!(sel.rules.fips.is_empty());
        assert!(sel.skipped[&(RuleKind::Fip, "f1".into())].contains("generation 3"));
        assert!(sel.skipped[&(RuleKind::Fip, "f2".into())].contains("not validated"));
    }
}
