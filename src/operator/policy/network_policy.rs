//! MultiNetworkPolicy in NB terms, pure: each policy becomes a Port_Group of exactly the
//! attachments of its selected pods on the networks its `policy-for` names (eth0 and other
//! networks are never members), a default drop per direction it isolates, and an allow ACL per
//! rule × peer × port, with Kube-OVN's NetworkPolicy priorities (drop 2000, allow 2001).
//! Pod peers (`podSelector` in the policy's namespace, `namespaceSelector` alone for every pod
//! of the matching namespaces, both for the matching pods of the matching namespaces) become
//! address sets of their attachments' addresses on the same networks. A named port resolves,
//! per pod, in the container ports of the destination pods (ingress: the selected pods; egress:
//! any pod on the networks, within the rule's peers) with the same protocol: one address set of
//! the destinations per resolved number; pods without the name contribute nothing.

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

/// A named container port of a pod: name, protocol (`TCP`, `UDP`, `SCTP`) and number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamedPort {
    pub name: String,
    pub protocol: String,
    pub port: i32,
}

/// A pod as policies see it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PolicyPod {
    pub namespace: String,
    pub labels: BTreeMap<String, String>,
    pub attachments: Vec<PodAttachment>,
    /// Its containers' named ports.
    pub ports: Vec<NamedPort>,
}

/// Namespaces' labels by namespace name.
pub type Namespaces = BTreeMap<String, BTreeMap<String, String>>;

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

/// Whether `selector` selects `labels`; an invalid selector selects nothing and is reported.
fn matches(
    selector: &LabelSelector,
    labels: &BTreeMap<String, String>,
    problems: &mut Vec<String>,
) -> bool {
    selects(selector, labels).unwrap_or_else(|e| {
        if !problems.contains(&e) {
            problems.push(e);
        }
        false
    })
}

/// The pods `peer` selects for a policy in `namespace` (as NetworkPolicy does: `podSelector`
/// alone within the policy's namespace, `namespaceSelector` alone every pod of the matching
/// namespaces, both the matching pods of the matching namespaces). A namespace not (yet)
/// observed matches no `namespaceSelector`.
fn peer_pods<'a>(
    namespace: &str,
    peer: &NetworkPolicyPeer,
    pods: &'a [PolicyPod],
    namespaces: &Namespaces,
    problems: &mut Vec<String>,
) -> Vec<&'a PolicyPod> {
    let in_namespaces: Option<BTreeSet<&str>> = peer.namespace_selector.as_ref().map(|sel| {
        namespaces
            .iter()
            .filter(|(_, labels)| matches(sel, labels, problems))
            .map(|(name, _)| name.as_str())
            .collect()
    });
    pods.iter()
        .filter(|pod| match &in_namespaces {
            Some(names) => names.contains(pod.namespace.as_str()),
            None => pod.namespace == namespace,
        })
        .filter(|pod| {
            peer.pod_selector
                .as_ref()
                .is_none_or(|sel| matches(sel, &pod.labels, problems))
        })
        .collect()
}

/// One match part and the IP family it is bound to (`Some(true)` IPv4, `Some(false)` IPv6).
type Part = (String, Option<bool>);

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

/// The NB rows of `policies` over `pods`, with `namespaces`' labels for `namespaceSelector`.
pub fn plan(
    policies: &[NetworkPolicy],
    pods: &[PolicyPod],
    namespaces: &Namespaces,
) -> NetworkPolicyPlan {
    let mut out = NetworkPolicyPlan::default();
    for p in policies {
        let id = format!("{}/{}", p.namespace, p.name);
        let pg = port_group_name(&p.namespace, &p.name);
        let ids = external_ids::ours([(MULTI_NETWORK_POLICY, id.as_str())]);
        let mut problems = Vec::new();
        let selected: Vec<&PolicyPod> = pods
            .iter()
            .filter(|pod| pod.namespace == p.namespace)
            .filter(|pod| matches(&p.spec.pod_selector, &pod.labels, &mut problems))
            .collect();
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
        let mut sets: BTreeMap<String, AddressSetSpec> = BTreeMap::new();
        let mut set = |name: String, addresses: BTreeSet<String>| {
            sets.insert(
                name.clone(),
                AddressSetSpec {
                    name,
                    addresses,
                    external_ids: ids.clone(),
                },
            );
        };
        let mut counters: BTreeMap<&str, usize> = BTreeMap::new();
        for (dir, peers, l4) in rules {
            let n = counters.entry(dir.what).or_default();
            *n += 1;
            let rule = format!("{} rule {n}", dir.what);
            // Sources (or destinations): none means any.
            let mut ends: Vec<Part> = Vec::new();
            let peers = peers.map(Vec::as_slice).unwrap_or_default();
            let mut pod_ips: BTreeSet<IpAddr> = BTreeSet::new();
            let mut pod_peers = false;
            for peer in peers {
                if peer.pod_selector.is_some() || peer.namespace_selector.is_some() {
                    pod_peers = true;
                    for pod in peer_pods(&p.namespace, peer, pods, namespaces, &mut problems) {
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
                    let v4 = matches!(cidr, IpNet::V4(_));
                    let ip = if v4 { "ip4" } else { "ip6" };
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
                    ends.push((m, Some(v4)));
                }
            }
            if pod_peers {
                for v4 in [true, false] {
                    let ip = if v4 { "ip4" } else { "ip6" };
                    let name = format!("{pg}.{}.{n}.{}", dir.what, if v4 { "v4" } else { "v6" });
                    set(
                        name.clone(),
                        pod_ips
                            .iter()
                            .filter(|a| a.is_ipv4() == v4)
                            .map(ToString::to_string)
                            .collect(),
                    );
                    ends.push((format!("{ip}.{} == ${name}", dir.end), Some(v4)));
                }
            }
            if !peers.is_empty() && ends.is_empty() {
                continue;
            }
            if ends.is_empty() {
                ends.push(("ip".to_owned(), None));
            }
            let mut l4s: Vec<Option<Part>> = Vec::new();
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
                    (None, _) => l4s.push(Some((proto, None))),
                    (Some(IntOrString::Int(p)), None) => {
                        l4s.push(Some((format!("{proto}.dst == {p}"), None)))
                    }
                    (Some(IntOrString::Int(p)), Some(end)) => {
                        l4s.push(Some((format!("{p} <= {proto}.dst <= {end}"), None)))
                    }
                    (Some(IntOrString::String(named)), Some(_)) => problems.push(format!(
                        "{rule}: endPort with the named port {named:?} is invalid (NetworkPolicy allows endPort only with a numbered port; port left out)"
                    )),
                    (Some(IntOrString::String(named)), None) => {
                        // Where the name resolves: the destinations' container ports (egress:
                        // any pod on the networks; the rule's peers narrow it in the match).
                        let dests: Vec<&PolicyPod> = if dir.what == "ingress" {
                            selected.clone()
                        } else {
                            pods.iter().collect()
                        };
                        let mut numbers: BTreeMap<i32, BTreeSet<IpAddr>> = BTreeMap::new();
                        for pod in dests {
                            let Some(number) = pod
                                .ports
                                .iter()
                                .find(|c| {
                                    c.name == *named && c.protocol.eq_ignore_ascii_case(&proto)
                                })
                                .map(|c| c.port)
                            else {
                                continue;
                            };
                            numbers.entry(number).or_default().extend(
                                on_networks(pod, &p.providers).flat_map(|a| a.ips.iter().copied()),
                            );
                        }
                        for (number, ips) in numbers {
                            for v4 in [true, false] {
                                let addresses: BTreeSet<String> = ips
                                    .iter()
                                    .filter(|a| a.is_ipv4() == v4)
                                    .map(ToString::to_string)
                                    .collect();
                                if addresses.is_empty() {
                                    continue;
                                }
                                let (ip, fam) = if v4 { ("ip4", "v4") } else { ("ip6", "v6") };
                                let name = format!(
                                    "{pg}.{}.{n}.{proto}_{}_{number}.{fam}",
                                    dir.what,
                                    named.replace('-', "_")
                                );
                                set(name.clone(), addresses);
                                l4s.push(Some((
                                    format!("{ip}.dst == ${name} && {proto}.dst == {number}"),
                                    Some(v4),
                                )));
                            }
                        }
                    }
                }
            }
            if !l4.is_empty() && l4s.is_empty() {
                continue;
            }
            if l4s.is_empty() {
                l4s.push(None);
            }
            for (end, end_v4) in &ends {
                for l4 in &l4s {
                    let mut m = format!("{} == @{pg} && {end}", dir.side);
                    if let Some((l4, l4_v4)) = l4 {
                        // An IPv4 end never meets an IPv6 destination.
                        if matches!((end_v4, l4_v4), (Some(a), Some(b)) if a != b) {
                            continue;
                        }
                        m.push_str(" && ");
                        m.push_str(l4);
                    }
                    acls.push(acl(&pg, dir, ALLOW_PRIORITY, m, "allow-related"));
                }
            }
        }
        out.address_sets.extend(sets.into_values());
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
            ports: Vec::new(),
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
        let p = plan(&[server_policy()], &pods, &Namespaces::new());
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

    fn in_ns(ns: &str, app: &str, port: &str, ip: &str) -> PolicyPod {
        PolicyPod {
            namespace: ns.into(),
            ..pod(app, &[("net-a.default.ovn", port, ip)])
        }
    }

    fn namespaces(list: &[(&str, &[(&str, &str)])]) -> Namespaces {
        list.iter()
            .map(|(ns, labels)| {
                let labels = labels
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect();
                (ns.to_string(), labels)
            })
            .collect()
    }

    fn team(value: &str) -> LabelSelector {
        LabelSelector {
            match_labels: Some(BTreeMap::from([("team".to_owned(), value.to_owned())])),
            ..Default::default()
        }
    }

    /// The addresses of the policy's ingress rule 1 peers (IPv4).
    fn peers_v4(p: &NetworkPolicyPlan) -> Vec<String> {
        p.address_sets
            .iter()
            .find(|s| s.name == "ovn.mnp.default.web_only.ingress.1.v4")
            .expect("the peers' address set")
            .addresses
            .iter()
            .cloned()
            .collect()
    }

    fn cluster() -> Vec<PolicyPod> {
        vec![
            in_ns(
                "default",
                "server",
                "s.default.net-a.default.ovn",
                "10.0.0.2",
            ),
            in_ns(
                "default",
                "client",
                "c.default.net-a.default.ovn",
                "10.0.0.3",
            ),
            in_ns("blue", "client", "c.blue.net-a.default.ovn", "10.0.0.10"),
            in_ns("blue", "other", "o.blue.net-a.default.ovn", "10.0.0.11"),
            in_ns("red", "client", "c.red.net-a.default.ovn", "10.0.0.20"),
            // A blue client without an attachment on the policy's network.
            PolicyPod {
                namespace: "blue".into(),
                ..pod(
                    "client",
                    &[("net-b.default.ovn", "x.blue.net-b.default.ovn", "10.1.0.9")],
                )
            },
        ]
    }

    #[test]
    fn a_namespace_selector_alone_selects_every_pod_of_the_matching_namespaces() {
        let mut policy = server_policy();
        policy.spec.ingress[0].from = Some(vec![NetworkPolicyPeer {
            namespace_selector: Some(team("a")),
            ..Default::default()
        }]);
        let ns = namespaces(&[
            ("default", &[]),
            ("blue", &[("team", "a")]),
            ("red", &[("team", "b")]),
        ]);
        let p = plan(&[policy.clone()], &cluster(), &ns);
        assert!(p.problems.is_empty(), "{:?}", p.problems);
        // Both blue pods on net-a, not the red one, not default's, not blue's net-b address.
        assert_eq!(peers_v4(&p), ["10.0.0.10", "10.0.0.11"]);
        assert!(p.port_groups[0].acls.iter().any(|a| a.match_
            == "outport == @ovn.mnp.default.web_only && ip4.src == $ovn.mnp.default.web_only.ingress.1.v4 && tcp.dst == 80"));

        // An empty namespaceSelector: every namespace.
        policy.spec.ingress[0].from = Some(vec![NetworkPolicyPeer {
            namespace_selector: Some(LabelSelector::default()),
            ..Default::default()
        }]);
        let p = plan(&[policy], &cluster(), &ns);
        assert_eq!(
            peers_v4(&p),
            [
                "10.0.0.10",
                "10.0.0.11",
                "10.0.0.2",
                "10.0.0.20",
                "10.0.0.3"
            ]
        );
    }

    #[test]
    fn namespace_and_pod_selectors_in_one_peer_select_the_matching_pods_of_matching_namespaces() {
        let mut policy = server_policy();
        policy.spec.ingress[0].from = Some(vec![NetworkPolicyPeer {
            namespace_selector: Some(team("a")),
            pod_selector: Some(selector("client")),
            ..Default::default()
        }]);
        let ns = namespaces(&[
            ("default", &[]),
            ("blue", &[("team", "a")]),
            ("red", &[("team", "b")]),
        ]);
        let p = plan(&[policy.clone()], &cluster(), &ns);
        assert_eq!(peers_v4(&p), ["10.0.0.10"]);

        // A label change on a namespace changes the peers: red joins, blue leaves.
        let relabelled = namespaces(&[
            ("default", &[]),
            ("blue", &[("team", "b")]),
            ("red", &[("team", "a")]),
        ]);
        let p = plan(&[policy.clone()], &cluster(), &relabelled);
        assert_eq!(peers_v4(&p), ["10.0.0.20"]);

        // A namespace not observed matches no selector; no namespace matching: no peer at all
        // (the set is empty, the rule allows nothing).
        let p = plan(&[policy], &cluster(), &namespaces(&[("default", &[])]));
        assert!(peers_v4(&p).is_empty());
        assert!(p.problems.is_empty());
    }

    #[test]
    fn a_podselector_peer_without_namespaceselector_stays_in_the_policys_namespace() {
        let p = plan(
            &[server_policy()],
            &cluster(),
            &namespaces(&[("default", &[]), ("blue", &[("team", "a")])]),
        );
        assert_eq!(peers_v4(&p), ["10.0.0.3"]);
    }

    #[test]
    fn an_invalid_namespace_selector_selects_nothing_and_is_reported() {
        let mut policy = server_policy();
        policy.spec.ingress[0].from = Some(vec![NetworkPolicyPeer {
            namespace_selector: Some(LabelSelector {
                match_expressions: Some(vec![
                    k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement {
                        key: "team".into(),
                        operator: "Near".into(),
                        values: None,
                    },
                ]),
                ..Default::default()
            }),
            ..Default::default()
        }]);
        let ns = namespaces(&[("blue", &[("team", "a")])]);
        let p = plan(&[policy], &cluster(), &ns);
        assert!(peers_v4(&p).is_empty());
        assert!(p.problems["default/web-only"][0].contains("\"Near\""));
    }

    fn with_ports(mut pod: PolicyPod, ports: &[(&str, &str, i32)]) -> PolicyPod {
        pod.ports = ports
            .iter()
            .map(|(name, protocol, port)| NamedPort {
                name: name.to_string(),
                protocol: protocol.to_string(),
                port: *port,
            })
            .collect();
        pod
    }

    fn named(name: &str, protocol: Option<&str>) -> NetworkPolicyPort {
        NetworkPolicyPort {
            protocol: protocol.map(str::to_owned),
            port: Some(IntOrString::String(name.into())),
            end_port: None,
        }
    }

    fn allow_matches(p: &NetworkPolicyPlan) -> Vec<String> {
        p.port_groups[0]
            .acls
            .iter()
            .filter(|a| a.priority == ALLOW_PRIORITY)
            .map(|a| a.match_.clone())
            .collect()
    }

    fn set<'a>(p: &'a NetworkPolicyPlan, name: &str) -> Vec<&'a str> {
        p.address_sets
            .iter()
            .find(|s| s.name == name)
            .unwrap_or_else(|| panic!("no address set {name}: {:?}", p.address_sets))
            .addresses
            .iter()
            .map(String::as_str)
            .collect()
    }

    #[test]
    fn an_ingress_named_port_resolves_per_selected_pod_with_its_protocol() {
        let pods = vec![
            with_ports(
                in_ns(
                    "default",
                    "server",
                    "s1.default.net-a.default.ovn",
                    "10.0.0.2",
                ),
                &[("http", "TCP", 8080), ("dns", "UDP", 53)],
            ),
            with_ports(
                in_ns(
                    "default",
                    "server",
                    "s2.default.net-a.default.ovn",
                    "10.0.0.4",
                ),
                &[("http", "TCP", 9090)],
            ),
            with_ports(
                in_ns(
                    "default",
                    "server",
                    "s3.default.net-a.default.ovn",
                    "10.0.0.5",
                ),
                &[("http", "TCP", 8080)],
            ),
            // Named `http` over UDP: the protocol does not match.
            with_ports(
                in_ns(
                    "default",
                    "server",
                    "s4.default.net-a.default.ovn",
                    "10.0.0.6",
                ),
                &[("http", "UDP", 7070)],
            ),
            // No such port: contributes nothing.
            in_ns(
                "default",
                "server",
                "s5.default.net-a.default.ovn",
                "10.0.0.7",
            ),
            // Not selected (a client): its `http` never counts for ingress.
            with_ports(
                in_ns(
                    "default",
                    "client",
                    "c.default.net-a.default.ovn",
                    "10.0.0.3",
                ),
                &[("http", "TCP", 1111)],
            ),
        ];
        let mut policy = server_policy();
        policy.spec.ingress[0].from = Some(vec![NetworkPolicyPeer {
            pod_selector: Some(selector("client")),
            ..Default::default()
        }]);
        policy.spec.ingress[0].ports = Some(vec![named("http", None), named("dns", Some("UDP"))]);
        let p = plan(&[policy], &pods, &Namespaces::new());
        assert!(p.problems.is_empty(), "{:?}", p.problems);
        let pg = "ovn.mnp.default.web_only";
        assert_eq!(
            set(&p, &format!("{pg}.ingress.1.tcp_http_8080.v4")),
            ["10.0.0.2", "10.0.0.5"]
        );
        assert_eq!(
            set(&p, &format!("{pg}.ingress.1.tcp_http_9090.v4")),
            ["10.0.0.4"]
        );
        assert_eq!(
            set(&p, &format!("{pg}.ingress.1.udp_dns_53.v4")),
            ["10.0.0.2"]
        );
        assert!(!p
            .address_sets
            .iter()
            .any(|s| s.name.contains("7070") || s.name.contains("1111")));
        let src = format!("outport == @{pg} && ip4.src == ${pg}.ingress.1.v4");
        assert_eq!(
            allow_matches(&p),
            [
                format!("{src} && ip4.dst == ${pg}.ingress.1.tcp_http_8080.v4 && tcp.dst == 8080"),
                format!("{src} && ip4.dst == ${pg}.ingress.1.tcp_http_9090.v4 && tcp.dst == 9090"),
                format!("{src} && ip4.dst == ${pg}.ingress.1.udp_dns_53.v4 && udp.dst == 53"),
            ]
        );
    }

    #[test]
    fn an_egress_named_port_resolves_in_the_destination_pods() {
        let pods = vec![
            in_ns(
                "default",
                "server",
                "s.default.net-a.default.ovn",
                "10.0.0.2",
            ),
            with_ports(
                in_ns(
                    "default",
                    "client",
                    "c.default.net-a.default.ovn",
                    "10.0.0.3",
                ),
                &[("metrics", "TCP", 9100)],
            ),
            with_ports(
                in_ns("blue", "client", "c.blue.net-a.default.ovn", "10.0.0.10"),
                &[("metrics", "TCP", 9200)],
            ),
        ];
        let mut policy = server_policy();
        policy.spec.ingress.clear();
        policy.spec.policy_types = Some(vec!["Egress".into()]);
        policy.spec.egress = vec![k8s_openapi::api::networking::v1::NetworkPolicyEgressRule {
            to: Some(vec![NetworkPolicyPeer {
                pod_selector: Some(selector("client")),
                ..Default::default()
            }]),
            ports: Some(vec![named("metrics", None)]),
        }];
        let p = plan(&[policy], &pods, &Namespaces::new());
        let pg = "ovn.mnp.default.web_only";
        // Only default's client is a peer; the named port resolves in every pod on the
        // network, the peer set narrows it.
        assert_eq!(set(&p, &format!("{pg}.egress.1.v4")), ["10.0.0.3"]);
        assert_eq!(
            set(&p, &format!("{pg}.egress.1.tcp_metrics_9100.v4")),
            ["10.0.0.3"]
        );
        let dst = format!("inport == @{pg} && ip4.dst == ${pg}.egress.1.v4");
        assert!(allow_matches(&p).contains(&format!(
            "{dst} && ip4.dst == ${pg}.egress.1.tcp_metrics_9100.v4 && tcp.dst == 9100"
        )));
        // No IPv6 destination combined with an IPv4 one.
        assert!(!allow_matches(&p)
            .iter()
            .any(|m| m.contains("ip6") && m.contains("v4 &&")));
    }

    #[test]
    fn a_named_port_no_pod_has_allows_nothing_and_endport_with_a_name_is_reported() {
        let mut policy = server_policy();
        policy.spec.ingress[0].ports = Some(vec![named("http", None)]);
        let p = plan(&[policy.clone()], &cluster(), &Namespaces::new());
        // Only the default drop: nothing resolves `http`.
        assert_eq!(p.port_groups[0].acls.len(), 1);
        assert!(p.problems.is_empty());
        policy.spec.ingress[0].ports = Some(vec![NetworkPolicyPort {
            end_port: Some(90),
            ..named("http", None)
        }]);
        let p = plan(&[policy], &cluster(), &Namespaces::new());
        assert_eq!(p.port_groups[0].acls.len(), 1);
        assert!(p.problems["default/web-only"][0].contains("endPort with the named port"));
    }

    #[test]
    fn egress_only_policies_and_selectors() {
        let mut policy = server_policy();
        policy.spec.ingress.clear();
        policy.spec.policy_types = Some(vec!["Egress".into()]);
        let p = plan(&[policy], &[], &Namespaces::new());
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
