//! The traffic-policy plan, pure: from the SecurityGroups, the member ports (each attachment's
//! logical switch port with its addresses and the groups its pod names) and the Subnets' policy
//! fields to the Port_Groups, Address_Sets and ACLs NB should hold (`PolicySpec`), plus what to
//! report per group and per subnet. Names and priorities are Kube-OVN's (`ovn-nb-acl.go`,
//! `security_group.go`): port group `ovn.sg.<name>` (`-` → `.`), address sets
//! `ovn.sg.<name>.associated.v4|v6`, every member in `ovn.sg.kubeovn_deny_all` (drop at 2003),
//! base allow at 2005, same-group allow at 2004, rule priority `18484 − priority`; a private
//! subnet drops at 1000 and allows its own and the allowed CIDRs at 1001.
//! Nothing here reads a client or writes NB (`mod.rs` does).

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use ipnet::IpNet;

use crate::api::security_group::{SecurityGroupRule, SecurityGroupSpec};
use crate::api::subnet::SubnetAcl;
use crate::ovn::external_ids;
use crate::ovn::nb::policy::{
    AclSpec, AddressSetSpec, PolicySpec, PortGroupSpec, PARENT, SECURITY_GROUP, SUBNET,
};

/// The group every port naming any security group belongs to (drops what no rule allows).
pub const DENY_ALL: &str = "kubeovn_deny_all";
pub const DENY_ALL_PRIORITY: i64 = 2003;
pub const SAME_GROUP_PRIORITY: i64 = 2004;
pub const BASE_PRIORITY: i64 = 2005;
/// Rule ACLs sit at `RULE_TOP − rule.priority`.
pub const RULE_TOP: i64 = 18484;
pub const RULE_PRIORITY_MAX: i32 = 16384;
pub const SUBNET_DROP_PRIORITY: i64 = 1000;
pub const SUBNET_ALLOW_PRIORITY: i64 = 1001;

pub const TO_LPORT: &str = "to-lport";
pub const FROM_LPORT: &str = "from-lport";

/// Port group of security group `sg`.
pub fn port_group_name(sg: &str) -> String {
    format!("ovn.sg.{sg}").replace('-', ".")
}

/// Address set of the members' addresses of family `v4`/`v6`.
pub fn address_set_name(sg: &str, v4: bool) -> String {
    let family = if v4 { "v4" } else { "v6" };
    format!("{}.associated.{family}", port_group_name(sg))
}

/// One attachment as the policy sees it: its logical switch port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// Logical switch port name.
    pub port: String,
    pub ips: Vec<IpAddr>,
    /// Security groups its pod names for it, in order.
    pub groups: Vec<String>,
}

/// The policy fields of one Subnet.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SubnetPolicy {
    /// Subnet = logical switch name.
    pub name: String,
    pub cidrs: Vec<IpNet>,
    pub private: bool,
    pub allow_subnets: Vec<String>,
    pub acls: Vec<SubnetAcl>,
}

/// What became of one security group.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct GroupOutcome {
    pub port_group: String,
    /// Member ports.
    pub members: usize,
    /// Rules left out, each with why (`ingress rule 2: …`).
    pub problems: Vec<String>,
}

/// The plan: NB's wanted policy rows and the reports.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct PolicyPlan {
    pub nb: PolicySpec,
    pub groups: BTreeMap<String, GroupOutcome>,
    /// Subnet policy entries left out, by subnet.
    pub subnets: BTreeMap<String, Vec<String>>,
}

fn group_ids(sg: &str) -> BTreeMap<String, String> {
    external_ids::ours([(SECURITY_GROUP, sg)])
}

fn acl(parent: &str, direction: &str, priority: i64, m: String, action: &str) -> AclSpec {
    AclSpec {
        direction: direction.to_owned(),
        priority,
        match_: m,
        action: action.to_owned(),
        name: None,
        external_ids: external_ids::ours([(PARENT, parent)]),
    }
}

/// `outport` for ingress (to the port), `inport` for egress.
fn port_side(direction: &str) -> &'static str {
    if direction == TO_LPORT {
        "outport"
    } else {
        "inport"
    }
}

/// The plan for `groups` (name and spec), `members` and `subnets`.
pub fn plan(
    groups: &[(String, SecurityGroupSpec)],
    members: &[Member],
    subnets: &[SubnetPolicy],
) -> PolicyPlan {
    let mut out = PolicyPlan::default();
    let known: BTreeSet<&str> = groups.iter().map(|(n, _)| n.as_str()).collect();

    let mut by_group: BTreeMap<&str, Vec<&Member>> = BTreeMap::new();
    let mut protected = BTreeSet::new();
    for m in members.iter().filter(|m| !m.groups.is_empty()) {
        // A port naming only missing groups is still protected: it fails closed.
        protected.insert(m.port.clone());
        for g in &m.groups {
            if known.contains(g.as_str()) {
                by_group.entry(g.as_str()).or_default().push(m);
            }
        }
    }

    if !protected.is_empty() || !groups.is_empty() {
        let pg = port_group_name(DENY_ALL);
        out.nb.port_groups.push(PortGroupSpec {
            acls: vec![
                acl(
                    &pg,
                    TO_LPORT,
                    DENY_ALL_PRIORITY,
                    format!("outport == @{pg} && ip"),
                    "drop",
                ),
                acl(
                    &pg,
                    FROM_LPORT,
                    DENY_ALL_PRIORITY,
                    format!("inport == @{pg} && ip"),
                    "drop",
                ),
            ],
            name: pg,
            ports: protected,
            external_ids: group_ids(DENY_ALL),
        });
    }

    for (name, spec) in groups {
        let pg = port_group_name(name);
        let members = by_group
            .get(name.as_str())
            .map(Vec::as_slice)
            .unwrap_or(&[]);
        let mut outcome = GroupOutcome {
            port_group: pg.clone(),
            members: members.len(),
            problems: Vec::new(),
        };
        for v4 in [true, false] {
            let addresses = members
                .iter()
                .flat_map(|m| &m.ips)
                .filter(|ip| ip.is_ipv4() == v4)
                .map(ToString::to_string)
                .collect();
            out.nb.address_sets.push(AddressSetSpec {
                name: address_set_name(name, v4),
                addresses,
                external_ids: group_ids(name),
            });
        }
        let mut acls = Vec::new();
        for direction in [TO_LPORT, FROM_LPORT] {
            acls.extend(base_acls(&pg, direction));
            if spec.allow_same_group_traffic.unwrap_or(false) {
                let (side, end) = (port_side(direction), src_or_dst(direction));
                for v4 in [true, false] {
                    let ip = if v4 { "ip4" } else { "ip6" };
                    acls.push(acl(
                        &pg,
                        direction,
                        SAME_GROUP_PRIORITY,
                        format!(
                            "{side} == @{pg} && {ip} && {ip}.{end} == ${}",
                            address_set_name(name, v4)
                        ),
                        "allow-related",
                    ));
                }
            }
            let (rules, what) = if direction == TO_LPORT {
                (&spec.ingress_rules, "ingress")
            } else {
                (&spec.egress_rules, "egress")
            };
            for (i, rule) in rules.iter().enumerate() {
                match rule_acl(&pg, direction, rule, &known) {
                    Ok(a) => acls.push(a),
                    Err(reason) => outcome
                        .problems
                        .push(format!("{what} rule {}: {reason}", i + 1)),
                }
            }
        }
        dedup(&mut acls);
        out.nb.port_groups.push(PortGroupSpec {
            name: pg,
            ports: members.iter().map(|m| m.port.clone()).collect(),
            acls,
            external_ids: group_ids(name),
        });
        out.groups.insert(name.clone(), outcome);
    }

    for s in subnets {
        let (acls, problems) = subnet_acls(s);
        if !acls.is_empty() {
            out.nb.switch_acls.insert(s.name.clone(), acls);
        }
        if !problems.is_empty() {
            out.subnets.insert(s.name.clone(), problems);
        }
    }
    out
}

/// Two rules may translate to one ACL; OVN keys ACLs by (direction, priority, match, action).
fn dedup(acls: &mut Vec<AclSpec>) {
    let mut seen = BTreeSet::new();
    acls.retain(|a| {
        seen.insert((
            a.direction.clone(),
            a.priority,
            a.match_.clone(),
            a.action.clone(),
        ))
    });
}

/// `src` for ingress (where traffic comes from), `dst` for egress.
fn src_or_dst(direction: &str) -> &'static str {
    if direction == TO_LPORT {
        "src"
    } else {
        "dst"
    }
}

/// ARP, IPv6 ND/MLD and DHCP always pass a group's ports.
fn base_acls(pg: &str, direction: &str) -> Vec<AclSpec> {
    let side = port_side(direction);
    let ((v4_src, v4_dst), (v6_src, v6_dst)) = if direction == TO_LPORT {
        ((67, 68), (547, 546))
    } else {
        ((68, 67), (546, 547))
    };
    [
        format!("{side} == @{pg} && arp"),
        format!(
            "{side} == @{pg} && icmp6.type == {{130, 134, 135, 136}} && icmp6.code == 0 && ip.ttl == 255"
        ),
        format!("{side} == @{pg} && udp.src == {v4_src} && udp.dst == {v4_dst} && ip4"),
        format!("{side} == @{pg} && udp.src == {v6_src} && udp.dst == {v6_dst} && ip6"),
    ]
    .into_iter()
    .map(|m| acl(pg, direction, BASE_PRIORITY, m, "allow-related"))
    .collect()
}

/// A network (`10.0.0.0/24`) or an address (`10.0.0.5`).
fn parse_net(s: &str) -> Option<IpNet> {
    let s = s.trim();
    s.parse::<IpNet>()
        .ok()
        .or_else(|| s.parse::<IpAddr>().ok().map(IpNet::from))
}

/// `tcp.dst == 80` or `1 <= tcp.dst <= 1024`; `None` for all ports.
fn port_range(field: &str, min: Option<i32>, max: Option<i32>) -> Result<Option<String>, String> {
    let (lo, hi) = match (min, max) {
        (None, None) => return Ok(None),
        (Some(lo), None) => (lo, lo),
        (None, Some(hi)) => (hi, hi),
        (Some(lo), Some(hi)) => (lo, hi),
    };
    if !(1..=65535).contains(&lo) || !(1..=65535).contains(&hi) || lo > hi {
        return Err(format!("port range {lo}..{hi} is not within 1..65535"));
    }
    if lo == 1 && hi == 65535 {
        return Ok(None);
    }
    Ok(Some(if lo == hi {
        format!("{field} == {lo}")
    } else {
        format!("{lo} <= {field} <= {hi}")
    }))
}

/// The ACL of one rule of group port group `pg`.
fn rule_acl(
    pg: &str,
    direction: &str,
    rule: &SecurityGroupRule,
    known: &BTreeSet<&str>,
) -> Result<AclSpec, String> {
    let priority = rule
        .priority
        .ok_or_else(|| format!("priority is required (1..{RULE_PRIORITY_MAX})"))?;
    if !(1..=RULE_PRIORITY_MAX).contains(&priority) {
        return Err(format!(
            "priority {priority} is not within 1..{RULE_PRIORITY_MAX}"
        ));
    }
    let v4 = match rule.ip_version.as_str() {
        "ipv4" | "" => true,
        "ipv6" => false,
        other => return Err(format!("ipVersion {other:?} is neither ipv4 nor ipv6")),
    };
    let ip = if v4 { "ip4" } else { "ip6" };
    let (side, end) = (port_side(direction), src_or_dst(direction));
    let mut m = vec![format!("{side} == @{pg}"), ip.to_owned()];
    let family_ok = |net: &IpNet| matches!(net, IpNet::V4(_)) == v4;
    match rule.remote_type.as_str() {
        "address" | "" => {
            let raw = rule.remote_address.as_deref().unwrap_or_default();
            let net = parse_net(raw)
                .ok_or_else(|| format!("remoteAddress {raw:?} is not an address or CIDR"))?;
            if !family_ok(&net) {
                return Err(format!("remoteAddress {raw} is not {}", rule_family(v4)));
            }
            // `0.0.0.0/0` matches every address of the family: no condition.
            if net.prefix_len() != 0 {
                m.push(format!("{ip}.{end} == {net}"));
            }
        }
        "securityGroup" => {
            let remote = rule.remote_security_group.as_deref().unwrap_or_default();
            if !known.contains(remote) {
                return Err(format!("remoteSecurityGroup {remote:?} does not exist"));
            }
            m.push(format!("{ip}.{end} == ${}", address_set_name(remote, v4)));
        }
        other => {
            return Err(format!(
                "remoteType {other:?} is neither address nor securityGroup"
            ))
        }
    }
    if let Some(local) = rule.local_address.as_deref().filter(|s| !s.is_empty()) {
        let net =
            parse_net(local).ok_or_else(|| format!("localAddress {local:?} is not an address"))?;
        if !family_ok(&net) {
            return Err(format!("localAddress {local} is not {}", rule_family(v4)));
        }
        let local_end = if end == "src" { "dst" } else { "src" };
        m.push(format!("{ip}.{local_end} == {net}"));
    }
    match rule.protocol.as_deref().unwrap_or("all") {
        "all" | "" => {}
        "icmp" => m.push(if v4 { "icmp4" } else { "icmp6" }.to_owned()),
        proto @ ("tcp" | "udp") => {
            let dst = port_range(
                &format!("{proto}.dst"),
                rule.port_range_min,
                rule.port_range_max,
            )?;
            let src = port_range(
                &format!("{proto}.src"),
                rule.source_port_range_min,
                rule.source_port_range_max,
            )?;
            if dst.is_none() && src.is_none() {
                m.push(proto.to_owned());
            }
            m.extend(dst);
            m.extend(src);
        }
        other => return Err(format!("protocol {other:?} is none of all, icmp, tcp, udp")),
    }
    let action = match rule.policy.as_str() {
        "allow" => "allow-related",
        "drop" => "drop",
        "pass" => "pass",
        other => return Err(format!("policy {other:?} is none of allow, drop, pass")),
    };
    Ok(acl(
        pg,
        direction,
        RULE_TOP - i64::from(priority),
        m.join(" && "),
        action,
    ))
}

fn rule_family(v4: bool) -> &'static str {
    if v4 {
        "IPv4 (ipVersion ipv4)"
    } else {
        "IPv6 (ipVersion ipv6)"
    }
}

const SUBNET_ACTIONS: [&str; 6] = [
    "allow-related",
    "allow",
    "allow-stateless",
    "drop",
    "reject",
    "pass",
];

/// The switch ACLs of a subnet (`private` + `allowSubnets`, then `acls`) and the entries left
/// out.
fn subnet_acls(s: &SubnetPolicy) -> (Vec<AclSpec>, Vec<String>) {
    let ls = s.name.as_str();
    let mut acls = Vec::new();
    let mut problems = Vec::new();
    let with_subnet = |mut a: AclSpec| {
        a.external_ids.insert(SUBNET.to_owned(), ls.to_owned());
        a
    };
    if s.private {
        let mut drop = acl(ls, TO_LPORT, SUBNET_DROP_PRIORITY, "ip".to_owned(), "drop");
        drop.name = Some(ls.to_owned());
        acls.push(drop);
        for cidr in &s.cidrs {
            let ip = if matches!(cidr, IpNet::V4(_)) {
                "ip4"
            } else {
                "ip6"
            };
            acls.push(acl(
                ls,
                TO_LPORT,
                SUBNET_ALLOW_PRIORITY,
                format!("{ip}.src == {cidr} && {ip}.dst == {cidr}"),
                "allow-related",
            ));
            for allowed in &s.allow_subnets {
                let allowed = allowed.trim();
                if allowed.is_empty() {
                    continue;
                }
                let Some(net) = parse_net(allowed) else {
                    // Reported once, not per family.
                    if matches!(cidr, IpNet::V4(_)) || s.cidrs.len() == 1 {
                        problems.push(format!("allowSubnets entry {allowed:?} is not a CIDR"));
                    }
                    continue;
                };
                if matches!(net, IpNet::V4(_)) != matches!(cidr, IpNet::V4(_)) {
                    continue;
                }
                acls.push(acl(
                    ls,
                    TO_LPORT,
                    SUBNET_ALLOW_PRIORITY,
                    format!(
                        "({ip}.src == {cidr} && {ip}.dst == {net}) || ({ip}.src == {net} && {ip}.dst == {cidr})"
                    ),
                    "allow-related",
                ));
            }
        }
    } else if !s.allow_subnets.is_empty() {
        problems.push("allowSubnets is ignored unless private is true".to_owned());
    }
    for (i, a) in s.acls.iter().enumerate() {
        let n = i + 1;
        if a.direction != TO_LPORT && a.direction != FROM_LPORT {
            problems.push(format!(
                "acl {n}: direction {:?} is neither from-lport nor to-lport",
                a.direction
            ));
            continue;
        }
        if !(0..=32767).contains(&a.priority) {
            problems.push(format!(
                "acl {n}: priority {} is not within 0..32767",
                a.priority
            ));
            continue;
        }
        if a.r#match.trim().is_empty() {
            problems.push(format!("acl {n}: match is empty"));
            continue;
        }
        if !SUBNET_ACTIONS.contains(&a.action.as_str()) {
            problems.push(format!(
                "acl {n}: action {:?} is none of {}",
                a.action,
                SUBNET_ACTIONS.join(", ")
            ));
            continue;
        }
        acls.push(with_subnet(acl(
            ls,
            &a.direction,
            i64::from(a.priority),
            a.r#match.trim().to_owned(),
            &a.action,
        )));
    }
    dedup(&mut acls);
    (acls, problems)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(
        proto: &str,
        port: Option<i32>,
        remote_sg: Option<&str>,
        policy: &str,
    ) -> SecurityGroupRule {
        SecurityGroupRule {
            ip_version: "ipv4".into(),
            protocol: Some(proto.into()),
            priority: Some(1),
            remote_type: if remote_sg.is_some() {
                "securityGroup".into()
            } else {
                "address".into()
            },
            remote_address: remote_sg.is_none().then(|| "0.0.0.0/0".into()),
            remote_security_group: remote_sg.map(Into::into),
            port_range_min: port,
            port_range_max: port,
            policy: policy.into(),
            ..Default::default()
        }
    }

    fn member(port: &str, ip: &str, groups: &[&str]) -> Member {
        Member {
            port: port.into(),
            ips: vec![ip.parse().unwrap()],
            groups: groups.iter().map(|g| g.to_string()).collect(),
        }
    }

    fn web_and_client() -> Vec<(String, SecurityGroupSpec)> {
        let web = SecurityGroupSpec {
            ingress_rules: vec![rule("tcp", Some(80), Some("client-sg"), "allow")],
            egress_rules: vec![rule("all", None, None, "allow")],
            ..Default::default()
        };
        let client = SecurityGroupSpec {
            egress_rules: vec![rule("all", None, None, "allow")],
            ..Default::default()
        };
        vec![("web-sg".into(), web), ("client-sg".into(), client)]
    }

    fn group<'a>(plan: &'a PolicyPlan, name: &str) -> &'a PortGroupSpec {
        plan.nb
            .port_groups
            .iter()
            .find(|g| g.name == name)
            .unwrap_or_else(|| panic!("no port group {name}: {:#?}", plan.nb.port_groups))
    }

    fn matches(g: &PortGroupSpec, priority: i64) -> Vec<(&str, &str, &str)> {
        g.acls
            .iter()
            .filter(|a| a.priority == priority)
            .map(|a| (a.direction.as_str(), a.match_.as_str(), a.action.as_str()))
            .collect()
    }

    #[test]
    fn names_follow_kube_ovn() {
        assert_eq!(port_group_name("web-sg"), "ovn.sg.web.sg");
        assert_eq!(
            address_set_name("web-sg", true),
            "ovn.sg.web.sg.associated.v4"
        );
        assert_eq!(
            address_set_name("web-sg", false),
            "ovn.sg.web.sg.associated.v6"
        );
        assert_eq!(port_group_name(DENY_ALL), "ovn.sg.kubeovn_deny_all");
    }

    #[test]
    fn a_rule_from_another_group_becomes_one_acl_on_the_group_and_members_fill_the_sets() {
        let members = [
            member("web.default.n.default.ovn", "10.0.0.2", &["web-sg"]),
            member("cli.default.n.default.ovn", "10.0.0.3", &["client-sg"]),
            member("other.default.n.default.ovn", "10.0.0.4", &[]),
        ];
        let p = plan(&web_and_client(), &members, &[]);
        let web = group(&p, "ovn.sg.web.sg");
        assert_eq!(
            web.ports,
            BTreeSet::from(["web.default.n.default.ovn".to_string()])
        );
        assert_eq!(
            matches(web, RULE_TOP - 1),
            vec![
                (
                    TO_LPORT,
                    "outport == @ovn.sg.web.sg && ip4 && ip4.src == $ovn.sg.client.sg.associated.v4 && tcp.dst == 80",
                    "allow-related"
                ),
                (FROM_LPORT, "inport == @ovn.sg.web.sg && ip4", "allow-related"),
            ]
        );
        // Base ACLs both ways; no same-group ACL unless asked.
        assert_eq!(
            web.acls
                .iter()
                .filter(|a| a.priority == BASE_PRIORITY)
                .count(),
            8
        );
        assert!(matches(web, SAME_GROUP_PRIORITY).is_empty());
        let client_v4 =
            p.nb.address_sets
                .iter()
                .find(|s| s.name == "ovn.sg.client.sg.associated.v4")
                .unwrap();
        assert_eq!(
            client_v4.addresses,
            BTreeSet::from(["10.0.0.3".to_string()])
        );
        // Both annotated ports are denied by default, the third is not.
        let deny = group(&p, "ovn.sg.kubeovn_deny_all");
        assert_eq!(deny.ports.len(), 2);
        assert!(!deny.ports.contains("other.default.n.default.ovn"));
        assert_eq!(
            matches(deny, DENY_ALL_PRIORITY),
            vec![
                (
                    TO_LPORT,
                    "outport == @ovn.sg.kubeovn_deny_all && ip",
                    "drop"
                ),
                (
                    FROM_LPORT,
                    "inport == @ovn.sg.kubeovn_deny_all && ip",
                    "drop"
                ),
            ]
        );
        assert_eq!(p.groups["web-sg"].members, 1);
        assert!(p.groups["web-sg"].problems.is_empty());
        // Every row carries our mark and its group.
        assert!(web
            .acls
            .iter()
            .all(
                |a| a.external_ids.get(PARENT).map(String::as_str) == Some("ovn.sg.web.sg")
                    && external_ids::is_ours(&a.external_ids)
            ));
        assert_eq!(
            web.external_ids.get(SECURITY_GROUP).map(String::as_str),
            Some("web-sg")
        );
    }

    #[test]
    fn removing_a_rule_removes_only_its_acl() {
        let members = [member("w", "10.0.0.2", &["web-sg"])];
        let before = plan(&web_and_client(), &members, &[]);
        let mut groups = web_and_client();
        groups[0].1.ingress_rules.clear();
        let after = plan(&groups, &members, &[]);
        let (b, a) = (
            group(&before, "ovn.sg.web.sg"),
            group(&after, "ovn.sg.web.sg"),
        );
        assert_eq!(b.acls.len() - 1, a.acls.len());
        assert!(matches(a, RULE_TOP - 1)
            .iter()
            .all(|(d, _, _)| *d == FROM_LPORT));
    }

    #[test]
    fn same_group_traffic_matches_the_groups_own_sets() {
        let groups = vec![(
            "db".to_string(),
            SecurityGroupSpec {
                allow_same_group_traffic: Some(true),
                ..Default::default()
            },
        )];
        let p = plan(&groups, &[member("d", "10.0.0.9", &["db"])], &[]);
        assert_eq!(
            matches(group(&p, "ovn.sg.db"), SAME_GROUP_PRIORITY),
            vec![
                (
                    TO_LPORT,
                    "outport == @ovn.sg.db && ip4 && ip4.src == $ovn.sg.db.associated.v4",
                    "allow-related"
                ),
                (
                    TO_LPORT,
                    "outport == @ovn.sg.db && ip6 && ip6.src == $ovn.sg.db.associated.v6",
                    "allow-related"
                ),
                (
                    FROM_LPORT,
                    "inport == @ovn.sg.db && ip4 && ip4.dst == $ovn.sg.db.associated.v4",
                    "allow-related"
                ),
                (
                    FROM_LPORT,
                    "inport == @ovn.sg.db && ip6 && ip6.dst == $ovn.sg.db.associated.v6",
                    "allow-related"
                ),
            ]
        );
    }

    #[test]
    fn invalid_rules_are_left_out_and_reported() {
        let mut bad_port = rule("tcp", Some(70000), None, "allow");
        bad_port.priority = Some(2);
        let groups = vec![(
            "g".to_string(),
            SecurityGroupSpec {
                ingress_rules: vec![
                    rule("tcp", Some(22), Some("nope"), "allow"),
                    bad_port,
                    SecurityGroupRule {
                        priority: None,
                        ..rule("all", None, None, "drop")
                    },
                    rule("all", None, None, "maybe"),
                    rule("icmp", None, None, "drop"),
                ],
                ..Default::default()
            },
        )];
        let p = plan(&groups, &[], &[]);
        let problems = &p.groups["g"].problems;
        assert_eq!(problems.len(), 4, "{problems:?}");
        assert!(
            problems[0].contains("ingress rule 1")
                && problems[0].contains("\"nope\" does not exist")
        );
        assert!(problems[1].contains("70000"));
        assert!(problems[2].contains("priority is required"));
        assert!(problems[3].contains("\"maybe\""));
        assert_eq!(
            matches(group(&p, "ovn.sg.g"), RULE_TOP - 1),
            vec![(TO_LPORT, "outport == @ovn.sg.g && ip4 && icmp4", "drop")]
        );
    }

    #[test]
    fn rules_translate_ranges_addresses_and_ipv6() {
        let r = SecurityGroupRule {
            ip_version: "ipv6".into(),
            protocol: Some("udp".into()),
            priority: Some(100),
            remote_type: "address".into(),
            remote_address: Some("fd00::/64".into()),
            port_range_min: Some(5000),
            port_range_max: Some(5010),
            policy: "drop".into(),
            ..Default::default()
        };
        let a = rule_acl("ovn.sg.g", FROM_LPORT, &r, &BTreeSet::new()).unwrap();
        assert_eq!(a.priority, 18384);
        assert_eq!(
            a.match_,
            "inport == @ovn.sg.g && ip6 && ip6.dst == fd00::/64 && 5000 <= udp.dst <= 5010"
        );
        assert_eq!(a.action, "drop");
        let mixed = SecurityGroupRule {
            remote_address: Some("10.0.0.0/8".into()),
            ..r
        };
        assert!(rule_acl("ovn.sg.g", FROM_LPORT, &mixed, &BTreeSet::new())
            .unwrap_err()
            .contains("not IPv6"));
    }

    #[test]
    fn a_port_naming_only_missing_groups_is_still_denied() {
        let p = plan(&[], &[member("p", "10.0.0.2", &["ghost"])], &[]);
        assert_eq!(
            group(&p, "ovn.sg.kubeovn_deny_all").ports,
            BTreeSet::from(["p".to_string()])
        );
        // Nobody uses groups: no policy rows at all.
        assert_eq!(
            plan(&[], &[member("p", "10.0.0.2", &[])], &[]).nb,
            PolicySpec::default()
        );
    }

    #[test]
    fn a_private_subnet_admits_itself_and_the_allowed_cidrs_only() {
        let s = SubnetPolicy {
            name: "s1".into(),
            cidrs: vec!["10.1.0.0/24".parse().unwrap()],
            private: true,
            allow_subnets: vec!["10.2.0.0/24".into(), "fd00::/64".into(), "bogus".into()],
            acls: vec![],
        };
        let p = plan(&[], &[], &[s]);
        let acls: Vec<_> = p.nb.switch_acls["s1"]
            .iter()
            .map(|a| (a.priority, a.match_.as_str(), a.action.as_str()))
            .collect();
        assert_eq!(
            acls,
            vec![
                (1000, "ip", "drop"),
                (1001, "ip4.src == 10.1.0.0/24 && ip4.dst == 10.1.0.0/24", "allow-related"),
                (
                    1001,
                    "(ip4.src == 10.1.0.0/24 && ip4.dst == 10.2.0.0/24) || (ip4.src == 10.2.0.0/24 && ip4.dst == 10.1.0.0/24)",
                    "allow-related"
                ),
            ]
        );
        assert!(p.nb.switch_acls["s1"]
            .iter()
            .all(|a| a.direction == TO_LPORT));
        assert_eq!(
            p.subnets["s1"],
            vec!["allowSubnets entry \"bogus\" is not a CIDR"]
        );
    }

    #[test]
    fn subnet_acls_are_applied_as_written_and_checked() {
        let acl = |direction: &str, priority: i32, m: &str, action: &str| SubnetAcl {
            direction: direction.into(),
            priority,
            r#match: m.into(),
            action: action.into(),
        };
        let s = SubnetPolicy {
            name: "s1".into(),
            cidrs: vec!["10.1.0.0/24".parse().unwrap()],
            acls: vec![
                acl("to-lport", 1005, "ip4.src == 10.9.0.0/16", "drop"),
                acl("sideways", 1, "ip", "drop"),
                acl("from-lport", 1, "ip", "explode"),
            ],
            ..Default::default()
        };
        let p = plan(&[], &[], &[s]);
        let acls = &p.nb.switch_acls["s1"];
        assert_eq!(acls.len(), 1);
        assert_eq!(acls[0].match_, "ip4.src == 10.9.0.0/16");
        assert_eq!(
            acls[0].external_ids.get(SUBNET).map(String::as_str),
            Some("s1")
        );
        assert_eq!(p.subnets["s1"].len(), 2);
        // Nothing asked: no ACLs and nothing to report.
        let plain = SubnetPolicy {
            name: "s2".into(),
            ..Default::default()
        };
        let p = plan(&[], &[], &[plain]);
        assert!(p.nb.switch_acls.is_empty() && p.subnets.is_empty());
    }
}
