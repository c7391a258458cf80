//! MultiNetworkPolicy in NB terms, pure: each policy becomes a Port_Group of exactly the
//! attachments of its selected pods on the networks its `policy-for` names (eth0 and other
//! networks are never members), a default drop per direction it isolates, and an allow ACL per
//! rule × peer × port, with Kube-OVN's NetworkPolicy priorities (drop 2000, allow 2001).
//! Pod peers become address sets of their attachments' addresses on the same networks.
//! `namespaceSelector` and named ports are not supported yet: such a peer or port is left out
//! (traffic stays denied) and reported.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use ipnet::IpNet;
use k8s_openapi::api::networking::v1::{NetworkPolicyPeer, NetworkPolicyPort};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::plan::{FROM_LPORT, TO_LPORT};
use crate::api::multi_network_policy::MultiNetworkPolicySpec;
use crate::ovn::external_ids;
use crate::ovn::nb::policy::{
    AclSpec, AddressSetSpec, PortGroupSpec, MULTI_NETWORK_POLICY, PARENT,
};

pub const DROP_PRIORITY: i64 = 2000;
pub const ALLOW_PRIORITY: i64 = 2001;

/// One MultiNetworkPolicy.
#[derive(Debug, Clone, PartialEq)]
pub struct NetworkPolicy {
    pub namespace: String,
    pub name: String,
    /// Providers (`<nad>.<ns>.ovn`) of the networks `policy-for` names.
    pub providers: Vec<String>,
    pub spec: MultiNetworkPolicySpec,
}

/// One attachment of a pod: its key (provider, or `<provider>.<ifname>`), port and addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodAttachment {
    pub key: String,
    pub port: String,
    pub ips: Vec<IpAddr>,
}

/// A pod as policies see it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PolicyPod {
    pub namespace: String,
    pub labels: BTreeMap<String, String>,
    pub attachments: Vec<PodAttachment>,
}

/// NB rows for every policy, and what each left out (by `ns/name`).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct NetworkPolicyPlan {
    pub port_groups: Vec<PortGroupSpec>,
    pub address_sets: Vec<AddressSetSpec>,
    pub problems: BTreeMap<String, Vec<String>>,
}

/// Port group of policy `ns/name` (`-` → `_`, which k8s names never hold, so names stay
/// distinct).
pub fn port_group_name(namespace: &str, name: &str) -> String {
    format!("ovn.mnp.{namespace}.{name}").replace('-', "_")
}

/// Whether `labels` satisfy `selector` (an empty selector selects everything).
pub fn selects(
    selector: &LabelSelector,
    labels: &BTreeMap<String, String>,
) -> Result<bool, String> {
    for (k, v) in selector.match_labels.iter().flatten() {
        if labels.get(k) != Some(v) {
            return Ok(false);
        }
    }
    for e in selector.match_expressions.iter().flatten() {
        let values = e.values.as_deref().unwrap_or_default();
        let have = labels.get(&e.key);
        let ok = match e.operator.as_str() {
            "In" => have.is_some_and(|h| values.contains(h)),
            "NotIn" => !have.is_some_and(|h| values.contains(h)),
            "Exists" => have.is_some(),
            "DoesNotExist" => have.is_none(),
            other => {
                return Err(format!(
                    "selector operator {other:?} is none of In, NotIn, Exists, DoesNotExist"
                ))
            }
        };
        if !ok {
            return Ok(false);
        }
    }
    Ok(true)
}

fn on_networks<'a>(
    pod: &'a PolicyPod,
    providers: &'a [String],
) -> impl Iterator<Item = &'a PodAttachment> {
    pod.attachments.iter().filter(move |a| {
        providers.iter().any(|p| {
            a.key == *p
                || a.key
                    .strip_prefix(p.as_str())
                    .is_some_and(|r| r.starts_with('.'))
        })
    })
}

/// One rule: its direction, peers (`from`/`to`) and ports.
type Rule<'a> = (
    &'a Direction,
    Option<&'a Vec<NetworkPolicyPeer>>,
    Option<&'a Vec<NetworkPolicyPort>>,
);

/// Ingress or egress, in OVN words.
struct Direction {
    what: &'static str,
    acl: &'static str,
    side: &'static str,
    end: &'static str,
}

const INGRESS: Direction = Direction {
    what: "ingress",
    acl: TO_LPORT,
    side: "outport",
    end: "src",
};
const EGRESS: Direction = Direction {
    what: "egress",
    acl: FROM_LPORT,
    side: "inport",
    end: "dst",
};

pub fn plan(policies: &[NetworkPolicy], pods: &[PolicyPod]) -> NetworkPolicyPlan {
    let mut out = NetworkPolicyPlan::default();
    for p in policies {
        let id = format!("{}/{}", p.namespace, p.name);
        let pg = port_group_name(&p.namespace, &p.name);
        let ids = external_ids::ours([(MULTI_NETWORK_POLICY, id.as_str())]);
        let mut problems = Vec::new();
        let in_ns = |sel: &LabelSelector, problems: &mut Vec<String>| -> Vec<&PolicyPod> {
            pods.iter()
                .filter(|pod| pod.namespace == p.namespace)
                .filter(|pod| match selects(sel, &pod.labels) {
                    Ok(s) => s,
                    Err(e) => {
                        problems.push(e);
                        false
                    }
                })
                .collect()
        };
        let selected = in_ns(&p.spec.pod_selector, &mut problems);
        let ports: BTreeSet<String> = selected
            .iter()
            .flat_map(|pod| on_networks(pod, &p.providers))
            .map(|a| a.port.clone())
            .collect();
        let types: Vec<String> = p.spec.policy_types.clone().unwrap_or_else(|| {
            let mut t = vec!["Ingress".to_owned()];
            if !p.spec.egress.is_empty() {
                t.push("Egress".to_owned());
            }
            t
        });
        let mut acls = Vec::new();
        let rules: Vec<Rule<'_>> = {
            let mut r = Vec::new();
            if types.iter().any(|t| t == "Ingress") {
                acls.push(acl(
                    &pg,
                    &INGRESS,
                    DROP_PRIORITY,
                    format!("outport == @{pg} && ip"),
                    "drop",
                ));
                r.extend(
                    p.spec
                        .ingress
                        .iter()
                        .map(|x| (&INGRESS, x.from.as_ref(), x.ports.as_ref())),
                );
            }
            if types.iter().any(|t| t == "Egress") {
                acls.push(acl(
                    &pg,
                    &EGRESS,
                    DROP_PRIORITY,
                    format!("inport == @{pg} && ip"),
                    "drop",
                ));
                r.extend(
                    p.spec
                        .egress
                        .iter()
                        .map(|x| (&EGRESS, x.to.as_ref(), x.ports.as_ref())),
                );
            }
            r
        };
        let mut counters: BTreeMap<&str, usize> = BTreeMap::new();
        for (dir, peers, l4) in rules {
            let n = counters.entry(dir.what).or_default();
            *n += 1;
            let rule = format!("{} rule {n}", dir.what);
            // Sources (or destinations): none means any.
            let mut ends: Vec<String> = Vec::new();
            let peers = peers.map(Vec::as_slice).unwrap_or_default();
            let mut pod_ips: BTreeSet<IpAddr> = BTreeSet::new();
            let mut pod_peers = false;
            for peer in peers {
                if peer.namespace_selector.is_some() {
                    problems.push(format!(
                        "{rule}: namespaceSelector is not supported yet (peer left out)"
                    ));
                    continue;
                }
                if let Some(sel) = &peer.pod_selector {
                    pod_peers = true;
                    for pod in in_ns(sel, &mut problems) {
                        pod_ips.extend(
                            on_networks(pod, &p.providers).flat_map(|a| a.ips.iter().copied()),
                        );
                    }
                }
                if let Some(block) = &peer.ip_block {
                    let Ok(cidr) = block.cidr.parse::<IpNet>() else {
                        problems.push(format!(
                            "{rule}: ipBlock cidr {:?} is not a CIDR",
                            block.cidr
                        ));
                        continue;
                    };
                    let ip = if matches!(cidr, IpNet::V4(_)) {
                        "ip4"
                    } else {
                        "ip6"
                    };
                    let mut m = format!("{ip}.{} == {cidr}", dir.end);
                    let except: Vec<String> = block
                        .except
                        .iter()
                        .flatten()
                        .filter_map(|e| e.parse::<IpNet>().ok())
                        .map(|e| e.to_string())
                        .collect();
                    if !except.is_empty() {
                        m.push_str(&format!(
                            " && {ip}.{} != {{{}}}",
                            dir.end,
                            except.join(", ")
                        ));
                    }
                    ends.push(m);
                }
            }
            if pod_peers {
                for v4 in [true, false] {
                    let ip = if v4 { "ip4" } else { "ip6" };
                    let name = format!("{pg}.{}.{n}.{}", dir.what, if v4 { "v4" } else { "v6" });
                    out.address_sets.push(AddressSetSpec {
                        name: name.clone(),
                        addresses: pod_ips
                            .iter()
                            .filter(|a| a.is_ipv4() == v4)
                            .map(ToString::to_string)
                            .collect(),
                        external_ids: ids.clone(),
                    });
                    ends.push(format!("{ip}.{} == ${name}", dir.end));
                }
            }
            if !peers.is_empty() && ends.is_empty() {
                continue;
            }
            if ends.is_empty() {
                ends.push("ip".to_owned());
            }
            let mut l4s: Vec<Option<String>> = Vec::new();
            let l4 = l4.map(Vec::as_slice).unwrap_or_default();
            for port in l4 {
                let proto = port.protocol.as_deref().unwrap_or("TCP").to_lowercase();
                if !matches!(proto.as_str(), "tcp" | "udp" | "sctp") {
                    problems.push(format!(
                        "{rule}: protocol {proto:?} is none of TCP, UDP, SCTP"
                    ));
                    continue;
                }
                match (&port.port, port.end_port) {
                    (None, _) => l4s.push(Some(proto)),
                    (Some(IntOrString::Int(p)), None) => {
                        l4s.push(Some(format!("{proto}.dst == {p}")))
                    }
                    (Some(IntOrString::Int(p)), Some(end)) => {
                        l4s.push(Some(format!("{p} <= {proto}.dst <= {end}")))
                    }
                    (Some(IntOrString::String(named)), _) => problems.push(format!(
                        "{rule}: named port {named:?} is not supported yet (port left out)"
                    )),
                }
            }
            if !l4.is_empty() && l4s.is_empty() {
                continue;
            }
            if l4s.is_empty() {
                l4s.push(None);
            }
            for end in &ends {
                for l4 in &l4s {
                    let mut m = format!("{} == @{pg} && {end}", dir.side);
                    if let Some(l4) = l4 {
                        m.push_str(" && ");
                        m.push_str(l4);
                    }
                    acls.push(acl(&pg, dir, ALLOW_PRIORITY, m, "allow-related"));
                }
            }
        }
        let mut seen = BTreeSet::new();
        acls.retain(|a| seen.insert((a.direction.clone(), a.match_.clone())));
        out.port_groups.push(PortGroupSpec {
            name: pg,
            ports,
            acls,
            external_ids: ids,
        });
        if !problems.is_empty() {
            problems.dedup();
            out.problems.insert(id, problems);
        }
    }
    out
}

fn acl(pg: &str, dir: &Direction, priority: i64, m: String, action: &str) -> AclSpec {
    AclSpec {
        direction: dir.acl.to_owned(),
        priority,
        match_: m,
        action: action.to_owned(),
        name: None,
        external_ids: external_ids::ours([(PARENT, pg)]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::networking::v1::{IPBlock, NetworkPolicyIngressRule};

    fn labels(app: &str) -> BTreeMap<String, String> {
        BTreeMap::from([("app".to_owned(), app.to_owned())])
    }

    fn pod(app: &str, attachments: &[(&str, &str, &str)]) -> PolicyPod {
        PolicyPod {
            namespace: "default".into(),
            labels: labels(app),
            attachments: attachments
                .iter()
                .map(|(key, port, ip)| PodAttachment {
                    key: key.to_string(),
                    port: port.to_string(),
                    ips: vec![ip.parse().unwrap()],
                })
                .collect(),
        }
    }

    fn selector(app: &str) -> LabelSelector {
        LabelSelector {
            match_labels: Some(labels(app)),
            ..Default::default()
        }
    }

    fn server_policy() -> NetworkPolicy {
        NetworkPolicy {
            namespace: "default".into(),
            name: "web-only".into(),
            providers: vec!["net-a.default.ovn".into()],
            spec: MultiNetworkPolicySpec {
                pod_selector: selector("server"),
                ingress: vec![NetworkPolicyIngressRule {
                    from: Some(vec![
                        NetworkPolicyPeer {
                            pod_selector: Some(selector("client")),
                            ..Default::default()
                        },
                        NetworkPolicyPeer {
                            ip_block: Some(IPBlock {
                                cidr: "192.168.0.0/16".into(),
                                except: Some(vec!["192.168.1.0/24".into()]),
                            }),
                            ..Default::default()
                        },
                    ]),
                    ports: Some(vec![NetworkPolicyPort {
                        protocol: Some("TCP".into()),
                        port: Some(IntOrString::Int(80)),
                        end_port: None,
                    }]),
                }],
                ..Default::default()
            },
        }
    }

    #[test]
    fn a_policy_covers_exactly_the_selected_pods_attachments_on_its_networks() {
        let pods = [
            pod(
                "server",
                &[
                    (
                        "net-a.default.ovn",
                        "s.default.net-a.default.ovn",
                        "10.0.0.2",
                    ),
                    (
                        "net-b.default.ovn",
                        "s.default.net-b.default.ovn",
                        "10.1.0.2",
                    ),
                ],
            ),
            pod(
                "client",
                &[
                    (
                        "net-a.default.ovn",
                        "c.default.net-a.default.ovn",
                        "10.0.0.3",
                    ),
                    (
                        "net-b.default.ovn",
                        "c.default.net-b.default.ovn",
                        "10.1.0.3",
                    ),
                ],
            ),
            pod(
                "other",
                &[(
                    "net-a.default.ovn",
                    "o.default.net-a.default.ovn",
                    "10.0.0.4",
                )],
            ),
        ];
        let p = plan(&[server_policy()], &pods);
        let pg = &p.port_groups[0];
        assert_eq!(pg.name, "ovn.mnp.default.web_only");
        assert_eq!(
            pg.ports,
            BTreeSet::from(["s.default.net-a.default.ovn".to_string()])
        );
        let acls: Vec<(&str, i64, &str)> = pg
            .acls
            .iter()
            .map(|a| (a.direction.as_str(), a.priority, a.match_.as_str()))
            .collect();
        assert_eq!(
            acls,
            vec![
                (TO_LPORT, 2000, "outport == @ovn.mnp.default.web_only && ip"),
                (TO_LPORT, 2001, "outport == @ovn.mnp.default.web_only && ip4.src == 192.168.0.0/16 && ip4.src != {192.168.1.0/24} && tcp.dst == 80"),
                (TO_LPORT, 2001, "outport == @ovn.mnp.default.web_only && ip4.src == $ovn.mnp.default.web_only.ingress.1.v4 && tcp.dst == 80"),
                (TO_LPORT, 2001, "outport == @ovn.mnp.default.web_only && ip6.src == $ovn.mnp.default.web_only.ingress.1.v6 && tcp.dst == 80"),
            ]
        );
        // The client's address on the policy's network only.
        let v4 = p
            .address_sets
            .iter()
            .find(|s| s.name.ends_with(".v4"))
            .unwrap();
        assert_eq!(v4.addresses, BTreeSet::from(["10.0.0.3".to_string()]));
        assert!(p.problems.is_empty());
    }

    #[test]
    fn unsupported_peers_and_ports_are_left_out_and_reported() {
        let mut policy = server_policy();
        policy.spec.ingress[0].from = Some(vec![NetworkPolicyPeer {
            namespace_selector: Some(LabelSelector::default()),
            ..Default::default()
        }]);
        let p = plan(&[policy], &[]);
        // Only the default drop: the rule allows nothing it cannot express.
        assert_eq!(p.port_groups[0].acls.len(), 1);
        assert!(
            p.problems["default/web-only"][0].contains("namespaceSelector is not supported yet")
        );
        let mut named = server_policy();
        named.spec.ingress[0].ports = Some(vec![NetworkPolicyPort {
            port: Some(IntOrString::String("http".into())),
            ..Default::default()
        }]);
        let p = plan(&[named], &[]);
        assert_eq!(p.port_groups[0].acls.len(), 1);
        assert!(p.problems["default/web-only"][0].contains("named port"));
    }

    #[test]
    fn egress_only_policies_and_selectors() {
        let mut policy = server_policy();
        policy.spec.ingress.clear();
        policy.spec.policy_types = Some(vec!["Egress".into()]);
        let p = plan(&[policy], &[]);
        assert_eq!(p.port_groups[0].acls.len(), 1);
        assert_eq!(p.port_groups[0].acls[0].direction, FROM_LPORT);
        let sel = LabelSelector {
            match_expressions: Some(vec![
                k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement {
                    key: "app".into(),
                    operator: "NotIn".into(),
                    values: Some(vec!["x".into()]),
                },
            ]),
            ..Default::default()
        };
        assert!(selects(&sel, &labels("server")).unwrap());
        assert!(!selects(&sel, &labels("x")).unwrap());
        assert!(selects(&LabelSelector::default(), &BTreeMap::new()).unwrap());
    }
}
