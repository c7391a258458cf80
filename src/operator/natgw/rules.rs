//! The NAT rules (IptablesFIPRule, IptablesDnatRule, IptablesSnatRule): validation and
//! conflicts, as one pure pass over every rule and EIP (`plan`), and the loop that writes each
//! rule's status when it changed: a `Validated` condition (True, or False with a reason and a
//! message naming the other rule), the EIP's `v4ip` and gateway (`natGwDp`), and a copy of the
//! rule's spec fields. The `nat-gw` role programs a rule only while `Validated` is True.
//!
//! Conflicts (the LATER rule, by creation time then kind then name, gets `Validated=False`):
//! a FIP takes its EIP alone (a second FIP, or any DNAT or SNAT, on it conflicts); a DNAT's
//! (EIP, protocol, external port) is used once; an SNAT's internal CIDR once per gateway.
//! A rule whose EIP does not exist or has no address yet is not validated either.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use serde::Serialize;
use tracing::{debug, warn};

use super::NatContext;
use crate::api::condition::{set_condition, Condition, ConditionStatus, VALIDATED};
use crate::api::nat::{
    IptablesDnatRule, IptablesDnatRuleStatus, IptablesEIP, IptablesFIPRule, IptablesFipRuleStatus,
    IptablesSnatRule, IptablesSnatRuleStatus, NatRuleState,
};
use crate::operator::controller;

/// The three kinds of rule, in the order ties of creation time are broken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RuleKind {
    Fip,
    Dnat,
    Snat,
}

impl RuleKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RuleKind::Fip => "fip",
            RuleKind::Dnat => "dnat",
            RuleKind::Snat => "snat",
        }
    }
}

/// One rule, by kind and name.
pub type RuleId = (RuleKind, String);

/// An EIP as the rules see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EipFacts {
    /// `status.ip` (`None` until allocated).
    pub ip: Option<IpAddr>,
    /// `spec.natGwDp`.
    pub gateway: String,
}

/// Every rule and EIP, as the pass reads them.
#[derive(Debug, Clone, Default)]
pub struct RuleSet<'a> {
    pub eips: BTreeMap<String, EipFacts>,
    pub fips: Vec<&'a IptablesFIPRule>,
    pub dnats: Vec<&'a IptablesDnatRule>,
    pub snats: Vec<&'a IptablesSnatRule>,
}

/// What the pass decided for one rule: `Ok` or the reason and message, and the EIP it names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub outcome: Result<(), (&'static str, String)>,
    pub eip: Option<EipFacts>,
}

/// What a rule takes; two rules taking the same thing conflict.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Claim {
    /// A FIP's EIP, taken whole.
    Exclusive(String),
    /// A DNAT's or SNAT's EIP, shared with others of their kind.
    Shared(String),
    /// (EIP, protocol, external port) of a DNAT.
    Port(String, String, u16),
    /// (gateway, internal CIDR) of an SNAT.
    Source(String, String),
}

fn collides(a: &Claim, b: &Claim) -> bool {
    match (a, b) {
        (Claim::Exclusive(x), Claim::Exclusive(y) | Claim::Shared(y))
        | (Claim::Shared(x), Claim::Exclusive(y)) => x == y,
        (Claim::Shared(_), Claim::Shared(_)) => false,
        _ => a == b,
    }
}

fn port(value: &str) -> Option<u16> {
    value.trim().parse::<u16>().ok().filter(|p| *p > 0)
}

/// What a rule is, reduced to what validation needs.
struct Candidate {
    id: RuleId,
    created: Option<Timestamp>,
    /// Validated by an earlier pass: among rules created in the same second (the API's
    /// timestamps have no finer grain), the one already in force keeps its claim.
    incumbent: bool,
    eip: String,
    /// The rule's own fields, checked (claims without the gateway part, filled in later).
    checked: Result<Vec<Claim>, String>,
}

/// Whether a rule's status says an earlier pass validated it.
fn validated(state: Option<&NatRuleState>) -> bool {
    state.is_some_and(|s| {
        s.conditions
            .iter()
            .any(|c| c.type_ == VALIDATED && c.is_true())
    })
}

fn fip_candidate(r: &IptablesFIPRule) -> Candidate {
    let checked = match r.spec.internal_ip.trim().parse::<IpAddr>() {
        Ok(_) => Ok(vec![Claim::Exclusive(r.spec.eip.clone())]),
        Err(_) => Err(format!(
            "internalIp {:?} is not an IP address",
            r.spec.internal_ip
        )),
    };
    Candidate {
        id: (RuleKind::Fip, r.name_any()),
        created: r.metadata.creation_timestamp.as_ref().map(|t| t.0),
        incumbent: validated(r.status.as_ref().map(|s| &s.rule)),
        eip: r.spec.eip.clone(),
        checked,
    }
}

fn dnat_candidate(r: &IptablesDnatRule) -> Candidate {
    let s = &r.spec;
    let protocol = s.protocol.trim().to_ascii_lowercase();
    let checked = if !matches!(protocol.as_str(), "tcp" | "udp") {
        Err(format!("protocol {:?} is neither tcp nor udp", s.protocol))
    } else if s.internal_ip.trim().parse::<IpAddr>().is_err() {
        Err(format!(
            "internalIp {:?} is not an IP address",
            s.internal_ip
        ))
    } else if port(&s.internal_port).is_none() {
        Err(format!(
            "internalPort {:?} is not a port (1-65535)",
            s.internal_port
        ))
    } else {
        match port(&s.external_port) {
            None => Err(format!(
                "externalPort {:?} is not a port (1-65535)",
                s.external_port
            )),
            Some(p) => Ok(vec![
                Claim::Shared(s.eip.clone()),
                Claim::Port(s.eip.clone(), protocol, p),
            ]),
        }
    };
    Candidate {
        id: (RuleKind::Dnat, r.name_any()),
        created: r.metadata.creation_timestamp.as_ref().map(|t| t.0),
        incumbent: validated(r.status.as_ref().map(|s| &s.rule)),
        eip: s.eip.clone(),
        checked,
    }
}

fn snat_candidate(r: &IptablesSnatRule) -> Candidate {
    let cidr = r.spec.internal_cidr.trim();
    let parsed = cidr
        .parse::<IpNet>()
        .map(|n| n.trunc().to_string())
        .or_else(|_| cidr.parse::<IpAddr>().map(|ip| IpNet::from(ip).to_string()));
    let checked = match parsed {
        Ok(net) => Ok(vec![
            Claim::Shared(r.spec.eip.clone()),
            // The gateway is filled in once the EIP is known.
            Claim::Source(String::new(), net),
        ]),
        Err(_) => Err(format!("internalCIDR {cidr:?} is not a CIDR")),
    };
    Candidate {
        id: (RuleKind::Snat, r.name_any()),
        created: r.metadata.creation_timestamp.as_ref().map(|t| t.0),
        incumbent: validated(r.status.as_ref().map(|s| &s.rule)),
        eip: r.spec.eip.clone(),
        checked,
    }
}

fn describe(claim: &Claim) -> String {
    match claim {
        Claim::Exclusive(e) => format!("EIP {e:?} (a FIP takes its EIP alone)"),
        Claim::Shared(e) => format!("EIP {e:?} (its FIP takes it alone)"),
        Claim::Port(e, proto, p) => format!("{proto} port {p} of EIP {e:?}"),
        Claim::Source(gw, cidr) => format!("internal CIDR {cidr} on gateway {gw:?}"),
    }
}

/// Validates every rule of `set` and settles conflicts. Pure.
pub fn plan(set: &RuleSet<'_>) -> BTreeMap<RuleId, Verdict> {
    let mut candidates: Vec<Candidate> = set
        .fips
        .iter()
        .filter(|r| r.metadata.deletion_timestamp.is_none())
        .map(|r| fip_candidate(r))
        .chain(
            set.dnats
                .iter()
                .filter(|r| r.metadata.deletion_timestamp.is_none())
                .map(|r| dnat_candidate(r)),
        )
        .chain(
            set.snats
                .iter()
                .filter(|r| r.metadata.deletion_timestamp.is_none())
                .map(|r| snat_candidate(r)),
        )
        .collect();
    // Oldest first; in the same second the rule already in force, then kind and name.
    candidates.sort_by(|a, b| {
        (a.created, !a.incumbent, a.id.0, &a.id.1).cmp(&(b.created, !b.incumbent, b.id.0, &b.id.1))
    });
    let mut taken: Vec<(Claim, RuleId)> = Vec::new();
    let mut out = BTreeMap::new();
    for c in candidates {
        let eip = set.eips.get(&c.eip).cloned();
        let outcome = (|| {
            let claims = c.checked.map_err(|m| ("InvalidSpec", m))?;
            let Some(facts) = &eip else {
                return Err((
                    "EipNotFound",
                    format!("IptablesEIP {:?} does not exist", c.eip),
                ));
            };
            if facts.ip.is_none() {
                return Err((
                    "EipNotReady",
                    format!(
                        "IptablesEIP {:?} has no address yet (see its status)",
                        c.eip
                    ),
                ));
            }
            let claims: Vec<Claim> = claims
                .into_iter()
                .map(|claim| match claim {
                    Claim::Source(_, cidr) => Claim::Source(facts.gateway.clone(), cidr),
                    other => other,
                })
                .collect();
            for claim in &claims {
                if let Some((theirs, owner)) = taken.iter().find(|(t, _)| collides(claim, t)) {
                    return Err((
                        "Conflict",
                        format!(
                            "{} is already taken by {} {:?} (older); delete one of them",
                            describe(theirs),
                            owner.0.as_str(),
                            owner.1
                        ),
                    ));
                }
            }
            taken.extend(claims.into_iter().map(|claim| (claim, c.id.clone())));
            Ok(())
        })();
        let outcome = outcome.map_err(|(reason, message)| {
            (
                reason,
                format!("{} {:?}: {message}", c.id.0.as_str(), c.id.1),
            )
        });
        out.insert(c.id, Verdict { outcome, eip });
    }
    out
}

/// The shared part of a rule's status for `verdict` as of `now`, starting from `current`.
fn rule_state(
    current: &NatRuleState,
    verdict: &Verdict,
    generation: Option<i64>,
    now: Time,
) -> NatRuleState {
    let mut state = current.clone();
    let condition = match &verdict.outcome {
        Ok(()) => Condition::new(
            VALIDATED,
            ConditionStatus::True,
            "Valid",
            "",
            generation,
            now,
        ),
        Err((reason, message)) => Condition::new(
            VALIDATED,
            ConditionStatus::False,
            reason,
            message.clone(),
            generation,
            now,
        ),
    };
    set_condition(&mut state.conditions, condition);
    let eip = verdict.eip.as_ref();
    state.v4ip = eip
        .and_then(|e| e.ip)
        .map(|ip| ip.to_string())
        .unwrap_or_default();
    state.nat_gw_dp = eip.map(|e| e.gateway.clone()).unwrap_or_default();
    state
}

/// The FIP's status for `verdict`. Pure.
pub fn fip_status(r: &IptablesFIPRule, verdict: &Verdict, now: Time) -> IptablesFipRuleStatus {
    let current = r.status.clone().unwrap_or_default();
    IptablesFipRuleStatus {
        rule: rule_state(&current.rule, verdict, r.metadata.generation, now),
        internal_ip: r.spec.internal_ip.clone(),
    }
}

/// The DNAT rule's status for `verdict`. Pure.
pub fn dnat_status(r: &IptablesDnatRule, verdict: &Verdict, now: Time) -> IptablesDnatRuleStatus {
    let current = r.status.clone().unwrap_or_default();
    IptablesDnatRuleStatus {
        rule: rule_state(&current.rule, verdict, r.metadata.generation, now),
        protocol: r.spec.protocol.clone(),
        internal_ip: r.spec.internal_ip.clone(),
        internal_port: r.spec.internal_port.clone(),
        external_port: r.spec.external_port.clone(),
    }
}

/// The SNAT rule's status for `verdict`. Pure.
pub fn snat_status(r: &IptablesSnatRule, verdict: &Verdict, now: Time) -> IptablesSnatRuleStatus {
    let current = r.status.clone().unwrap_or_default();
    IptablesSnatRuleStatus {
        rule: rule_state(&current.rule, verdict, r.metadata.generation, now),
        internal_cidr: r.spec.internal_cidr.clone(),
    }
}

/// The EIPs as the rules see them.
pub fn eip_facts<'a>(
    eips: impl IntoIterator<Item = &'a IptablesEIP>,
) -> BTreeMap<String, EipFacts> {
    // An EIP being deleted still holds its address while rules name it: it counts.
    eips.into_iter()
        .map(|e| {
            let ip = e
                .status
                .as_ref()
                .and_then(|s| s.ip.trim().parse::<IpAddr>().ok());
            (
                e.name_any(),
                EipFacts {
                    ip,
                    gateway: e.spec.nat_gw_dp.clone(),
                },
            )
        })
        .collect()
}

/// Writes `status` of rule `name` of kind `K` (without `ready` and `redo`: the nat-gw role's).
async fn write<K, S>(client: &kube::Client, name: &str, status: &S) -> Result<(), kube::Error>
where
    K: kube::Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
    S: Serialize,
{
    let mut body = serde_json::to_value(status).expect("a status serializes");
    if let Some(fields) = body.as_object_mut() {
        fields.remove("ready");
        fields.remove("redo");
    }
    controller::apply_status::<K, _>(client, name, &body).await
}

/// One pass: every rule whose status differs from what `plan` says is written. Returns how
/// many were written and whether any write failed.
async fn pass(nat: &NatContext) -> (usize, bool) {
    let eips = nat.eips.state();
    let fips = nat.fips.state();
    let dnats = nat.dnats.state();
    let snats = nat.snats.state();
    let set = RuleSet {
        eips: eip_facts(eips.iter().map(|e| &**e)),
        fips: fips.iter().map(|r| &**r).collect(),
        dnats: dnats.iter().map(|r| &**r).collect(),
        snats: snats.iter().map(|r| &**r).collect(),
    };
    let verdicts = plan(&set);
    let client = &nat.ctx.client;
    let now = Time(Timestamp::now());
    let (mut written, mut failed) = (0, false);
    let mut note = |name: &str, r: Result<(), kube::Error>| match r {
        Ok(()) => written += 1,
        Err(e) => {
            warn!(rule = %name, error = %e, "writing NAT rule status; retrying");
            failed = true;
        }
    };
    for r in &fips {
        let name = r.name_any();
        let Some(v) = verdicts.get(&(RuleKind::Fip, name.clone())) else {
            continue;
        };
        let status = fip_status(r, v, now.clone());
        if r.status.as_ref() != Some(&status) {
            note(
                &name,
                write::<IptablesFIPRule, _>(client, &name, &status).await,
            );
        }
    }
    for r in &dnats {
        let name = r.name_any();
        let Some(v) = verdicts.get(&(RuleKind::Dnat, name.clone())) else {
            continue;
        };
        let status = dnat_status(r, v, now.clone());
        if r.status.as_ref() != Some(&status) {
            note(
                &name,
                write::<IptablesDnatRule, _>(client, &name, &status).await,
            );
        }
    }
    for r in &snats {
        let name = r.name_any();
        let Some(v) = verdicts.get(&(RuleKind::Snat, name.clone())) else {
            continue;
        };
        let status = snat_status(r, v, now.clone());
        if r.status.as_ref() != Some(&status) {
            note(
                &name,
                write::<IptablesSnatRule, _>(client, &name, &status).await,
            );
        }
    }
    (written, failed)
}

/// Runs the rules pass on every change of an EIP or a rule (and every minute) until the
/// process stops.
pub async fn run(nat: Arc<NatContext>) {
    loop {
        let (written, failed) = pass(&nat).await;
        if written > 0 {
            debug!(written, "NAT rule statuses written");
        }
        let wait = if failed {
            Duration::from_secs(2)
        } else {
            Duration::from_secs(60)
        };
        tokio::select! {
            _ = nat.rules_changed.notified() => {}
            _ = tokio::time::sleep(wait) => {}
        }
        // Let a burst of changes land before the next pass.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::nat::{IptablesDnatRuleSpec, IptablesFipRuleSpec, IptablesSnatRuleSpec};

    fn at(second: i64) -> Option<Time> {
        Some(Time(Timestamp::from_second(1_000_000 + second).unwrap()))
    }

    fn fip(name: &str, eip: &str, ip: &str, age: i64) -> IptablesFIPRule {
        let mut r = IptablesFIPRule::new(
            name,
            IptablesFipRuleSpec {
                eip: eip.into(),
                internal_ip: ip.into(),
            },
        );
        r.metadata.creation_timestamp = at(age);
        r
    }

    fn dnat(name: &str, eip: &str, proto: &str, port: &str, age: i64) -> IptablesDnatRule {
        let mut r = IptablesDnatRule::new(
            name,
            IptablesDnatRuleSpec {
                eip: eip.into(),
                external_port: port.into(),
                protocol: proto.into(),
                internal_ip: "10.100.0.5".into(),
                internal_port: "80".into(),
            },
        );
        r.metadata.creation_timestamp = at(age);
        r
    }

    fn snat(name: &str, eip: &str, cidr: &str, age: i64) -> IptablesSnatRule {
        let mut r = IptablesSnatRule::new(
            name,
            IptablesSnatRuleSpec {
                eip: eip.into(),
                internal_cidr: cidr.into(),
            },
        );
        r.metadata.creation_timestamp = at(age);
        r
    }

    fn eips() -> BTreeMap<String, EipFacts> {
        let facts = |ip: Option<&str>| EipFacts {
            ip: ip.map(|i| i.parse().unwrap()),
            gateway: "vpc-nat-gw".into(),
        };
        BTreeMap::from([
            ("e1".to_owned(), facts(Some("172.18.0.2"))),
            ("e2".to_owned(), facts(Some("172.18.0.3"))),
            ("e3".to_owned(), facts(Some("172.18.0.4"))),
            ("pending".to_owned(), facts(None)),
        ])
    }

    fn verdict<'v>(
        v: &'v BTreeMap<RuleId, Verdict>,
        kind: RuleKind,
        name: &str,
    ) -> &'v Result<(), (&'static str, String)> {
        &v[&(kind, name.to_owned())].outcome
    }

    #[test]
    fn the_later_of_two_fips_on_one_eip_is_refused_naming_the_older() {
        let older = fip("f-b", "e1", "10.100.0.5", 0);
        let newer = fip("f-a", "e1", "10.100.0.6", 5);
        let set = RuleSet {
            eips: eips(),
            fips: vec![&newer, &older],
            ..Default::default()
        };
        let v = plan(&set);
        assert_eq!(verdict(&v, RuleKind::Fip, "f-b"), &Ok(()));
        let Err((reason, message)) = verdict(&v, RuleKind::Fip, "f-a") else {
            panic!("the newer FIP must be refused");
        };
        assert_eq!(*reason, "Conflict");
        assert!(
            message.starts_with("fip \"f-a\": EIP \"e1\"") && message.contains("fip \"f-b\""),
            "{message}"
        );
        // Same age: the name decides.
        let twin = fip("f-c", "e1", "10.100.0.7", 0);
        let set = RuleSet {
            eips: eips(),
            fips: vec![&twin, &older],
            ..Default::default()
        };
        let v = plan(&set);
        assert_eq!(verdict(&v, RuleKind::Fip, "f-b"), &Ok(()));
        assert!(verdict(&v, RuleKind::Fip, "f-c").is_err());
    }

    #[test]
    fn in_the_same_second_the_rule_in_force_keeps_its_claim_whatever_the_names() {
        // dnat-web was validated by an earlier pass; dnat-clash comes within the same second
        // (timestamps have a one-second grain) and sorts first by name: it is still refused.
        let mut web = dnat("dnat-web", "e1", "tcp", "8080", 0);
        let first = plan(&RuleSet {
            eips: eips(),
            dnats: vec![&web],
            ..Default::default()
        });
        web.status = Some(dnat_status(
            &web,
            &first[&(RuleKind::Dnat, "dnat-web".to_string())],
            Time(Timestamp::now()),
        ));
        let clash = dnat("dnat-clash", "e1", "tcp", "8080", 0);
        let v = plan(&RuleSet {
            eips: eips(),
            dnats: vec![&clash, &web],
            ..Default::default()
        });
        assert_eq!(verdict(&v, RuleKind::Dnat, "dnat-web"), &Ok(()));
        let Err((reason, message)) = verdict(&v, RuleKind::Dnat, "dnat-clash") else {
            panic!("the newcomer must be refused");
        };
        assert_eq!(*reason, "Conflict");
        assert!(message.contains("dnat-web"), "{message}");
    }

    #[test]
    fn dnat_ports_are_used_once_per_eip_and_protocol() {
        let d1 = dnat("d1", "e2", "tcp", "8080", 0);
        let d2 = dnat("d2", "e2", "TCP", "8080", 1);
        let d3 = dnat("d3", "e2", "udp", "8080", 2);
        let d4 = dnat("d4", "e3", "tcp", "8080", 3);
        let set = RuleSet {
            eips: eips(),
            dnats: vec![&d1, &d2, &d3, &d4],
            ..Default::default()
        };
        let v = plan(&set);
        assert_eq!(verdict(&v, RuleKind::Dnat, "d1"), &Ok(()));
        let Err((reason, message)) = verdict(&v, RuleKind::Dnat, "d2") else {
            panic!("d2 takes d1's port")
        };
        assert_eq!(*reason, "Conflict");
        assert!(message.contains("tcp port 8080 of EIP \"e2\""), "{message}");
        assert_eq!(verdict(&v, RuleKind::Dnat, "d3"), &Ok(()));
        assert_eq!(verdict(&v, RuleKind::Dnat, "d4"), &Ok(()));
    }

    #[test]
    fn a_fip_takes_its_eip_alone_and_snat_sources_are_used_once() {
        let f = fip("f1", "e1", "10.100.0.5", 0);
        let d = dnat("d1", "e1", "tcp", "80", 1);
        let s_older = snat("s1", "e2", "10.100.0.0/16", 0);
        let s_dup = snat("s2", "e3", "10.100.7.7/16", 1);
        let s_shares = snat("s3", "e2", "10.101.0.0/24", 2);
        let set = RuleSet {
            eips: eips(),
            fips: vec![&f],
            dnats: vec![&d],
            snats: vec![&s_older, &s_dup, &s_shares],
        };
        let v = plan(&set);
        assert_eq!(verdict(&v, RuleKind::Fip, "f1"), &Ok(()));
        assert!(matches!(
            verdict(&v, RuleKind::Dnat, "d1"),
            Err(("Conflict", m)) if m.contains("fip \"f1\"")
        ));
        assert_eq!(verdict(&v, RuleKind::Snat, "s1"), &Ok(()));
        assert!(matches!(
            verdict(&v, RuleKind::Snat, "s2"),
            Err(("Conflict", m)) if m.contains("internal CIDR 10.100.0.0/16")
        ));
        assert_eq!(verdict(&v, RuleKind::Snat, "s3"), &Ok(()));
    }

    #[test]
    fn unknown_or_pending_eips_and_bad_fields_are_not_validated_and_take_nothing() {
        let ghost = fip("f0", "ghost", "10.100.0.5", 0);
        let pending = fip("f1", "pending", "10.100.0.5", 1);
        let bad_ip = fip("f2", "e1", "10.100.0.x", 2);
        let good = fip("f3", "e1", "10.100.0.5", 3);
        let bad_port = dnat("d1", "e2", "tcp", "0", 0);
        let bad_proto = dnat("d2", "e2", "sctp", "80", 0);
        let bad_cidr = snat("s1", "e3", "10.100.0.0/40", 0);
        let set = RuleSet {
            eips: eips(),
            fips: vec![&ghost, &pending, &bad_ip, &good],
            dnats: vec![&bad_port, &bad_proto],
            snats: vec![&bad_cidr],
        };
        let v = plan(&set);
        let reason = |kind, name| verdict(&v, kind, name).clone().unwrap_err().0;
        assert_eq!(reason(RuleKind::Fip, "f0"), "EipNotFound");
        assert_eq!(reason(RuleKind::Fip, "f1"), "EipNotReady");
        assert_eq!(reason(RuleKind::Fip, "f2"), "InvalidSpec");
        assert_eq!(verdict(&v, RuleKind::Fip, "f3"), &Ok(()), "f2 took nothing");
        assert_eq!(reason(RuleKind::Dnat, "d1"), "InvalidSpec");
        assert_eq!(reason(RuleKind::Dnat, "d2"), "InvalidSpec");
        assert_eq!(reason(RuleKind::Snat, "s1"), "InvalidSpec");
    }

    #[test]
    fn status_copies_the_spec_and_the_eip_and_never_sets_ready() {
        let d = dnat("d1", "e2", "tcp", "8080", 0);
        let set = RuleSet {
            eips: eips(),
            dnats: vec![&d],
            ..Default::default()
        };
        let v = plan(&set);
        let now = Time(Timestamp::from_second(2_000_000).unwrap());
        let status = dnat_status(&d, &v[&(RuleKind::Dnat, "d1".into())], now);
        assert_eq!(status.rule.v4ip, "172.18.0.3");
        assert_eq!(status.rule.nat_gw_dp, "vpc-nat-gw");
        assert_eq!(
            (
                status.protocol.as_str(),
                status.external_port.as_str(),
                status.internal_ip.as_str(),
                status.internal_port.as_str()
            ),
            ("tcp", "8080", "10.100.0.5", "80")
        );
        assert!(!status.rule.ready);
        let c = crate::api::condition::find_condition(&status.rule.conditions, VALIDATED).unwrap();
        assert!(c.is_true());
    }
}
