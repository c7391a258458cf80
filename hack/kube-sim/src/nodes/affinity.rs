//! The pure matching rules behind kube-scheduler's affinity and port filters, as kube-sim
//! models them: node selector terms (`nodeAffinity`, ORed terms of ANDed `matchExpressions`
//! and `matchFields`), label selectors, which pods an inter-pod (anti-)affinity term selects,
//! and host port conflicts. Which node a pod goes to is decided in `scheduler`; nothing here
//! reads the API.

use std::cmp::Ordering;
use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    NodeSelectorRequirement, NodeSelectorTerm, Pod, PodAffinityTerm, PodSpec,
    PreferredSchedulingTerm,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement};

/// The one field a node selector term's `matchFields` may name (as in Kubernetes).
const NODE_NAME_FIELD: &str = "metadata.name";

/// Whether the node `name` with `labels` satisfies the pod's required node affinity (none
/// means every node does). The terms are ORed; an empty list matches no node.
pub fn required_node_affinity_matches(
    spec: &PodSpec,
    name: &str,
    labels: &BTreeMap<String, String>,
) -> bool {
    let required = spec
        .affinity
        .as_ref()
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|n| {
            n.required_during_scheduling_ignored_during_execution
                .as_ref()
        });
    required.is_none_or(|selector| {
        selector
            .node_selector_terms
            .iter()
            .any(|term| node_term_matches(term, name, labels))
    })
}

/// The summed weights of the pod's preferred node affinity terms this node matches.
pub fn preferred_node_affinity_score(
    spec: &PodSpec,
    name: &str,
    labels: &BTreeMap<String, String>,
) -> i64 {
    let preferred: &[PreferredSchedulingTerm] = spec
        .affinity
        .as_ref()
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|n| {
            n.preferred_during_scheduling_ignored_during_execution
                .as_deref()
        })
        .unwrap_or_default();
    preferred
        .iter()
        .filter(|p| node_term_matches(&p.preference, name, labels))
        .map(|p| i64::from(p.weight))
        .sum()
}

/// One node selector term: every expression on the labels and every field requirement hold.
/// A term with neither matches nothing, as in Kubernetes.
pub fn node_term_matches(
    term: &NodeSelectorTerm,
    name: &str,
    labels: &BTreeMap<String, String>,
) -> bool {
    let expressions = term.match_expressions.as_deref().unwrap_or_default();
    let fields = term.match_fields.as_deref().unwrap_or_default();
    if expressions.is_empty() && fields.is_empty() {
        return false;
    }
    expressions
        .iter()
        .all(|r| node_requirement_matches(r, labels.get(&r.key).map(String::as_str)))
        && fields
            .iter()
            .all(|r| r.key == NODE_NAME_FIELD && node_requirement_matches(r, Some(name)))
}

/// One requirement against the value the node has for its key (`None`: no such label).
/// `Gt`/`Lt` compare integers and need exactly one value; anything unparsable fails.
pub fn node_requirement_matches(
    requirement: &NodeSelectorRequirement,
    value: Option<&str>,
) -> bool {
    let values = requirement.values.as_deref().unwrap_or_default();
    match requirement.operator.as_str() {
        "Gt" => compare_integers(value, values) == Some(Ordering::Greater),
        "Lt" => compare_integers(value, values) == Some(Ordering::Less),
        operator => set_operator_matches(operator, values, value),
    }
}

fn compare_integers(value: Option<&str>, values: &[String]) -> Option<Ordering> {
    let [bound] = values else {
        return None;
    };
    let value: i64 = value?.parse().ok()?;
    Some(value.cmp(&bound.parse().ok()?))
}

/// `In`, `NotIn`, `Exists`, `DoesNotExist`: shared by node and label selectors. An unknown
/// operator matches nothing.
fn set_operator_matches(operator: &str, values: &[String], value: Option<&str>) -> bool {
    match operator {
        "In" => value.is_some_and(|v| values.iter().any(|x| x == v)),
        "NotIn" => value.is_none_or(|v| !values.iter().any(|x| x == v)),
        "Exists" => value.is_some(),
        "DoesNotExist" => value.is_none(),
        _ => false,
    }
}

/// Whether `labels` satisfy `selector`: all `matchLabels` and all `matchExpressions`. An empty
/// selector matches everything.
pub fn label_selector_matches(selector: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    let pairs = selector
        .match_labels
        .iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v));
    let expressions: &[LabelSelectorRequirement] =
        selector.match_expressions.as_deref().unwrap_or_default();
    pairs
        && expressions.iter().all(|r| {
            set_operator_matches(
                &r.operator,
                r.values.as_deref().unwrap_or_default(),
                labels.get(&r.key).map(String::as_str),
            )
        })
}

/// Whether the inter-pod affinity `term`, written in a pod of namespace `owner_namespace`,
/// selects `pod`: its namespace is one the term covers (listed, or all through an empty
/// `namespaceSelector`, else the owner's) and its labels match the term's selector (none
/// selects nothing). Parts kube-sim does not model are an error, never ignored.
pub fn term_selects(
    term: &PodAffinityTerm,
    owner_namespace: &str,
    pod: &Pod,
) -> Result<bool, String> {
    check_term_supported(term)?;
    let namespace = pod.metadata.namespace.as_deref().unwrap_or_default();
    let listed = term.namespaces.as_deref().unwrap_or_default();
    let every_namespace = term.namespace_selector.is_some();
    let in_scope = every_namespace
        || listed.iter().any(|n| n == namespace)
        || (listed.is_empty() && namespace == owner_namespace);
    let labels = pod.metadata.labels.clone().unwrap_or_default();
    Ok(in_scope
        && term
            .label_selector
            .as_ref()
            .is_some_and(|s| label_selector_matches(s, &labels)))
}

/// The parts of an affinity term kube-sim refuses rather than misreads.
pub fn check_term_supported(term: &PodAffinityTerm) -> Result<(), String> {
    let selector_is_empty = |s: &LabelSelector| {
        s.match_labels.as_ref().is_none_or(BTreeMap::is_empty)
            && s.match_expressions.as_ref().is_none_or(Vec::is_empty)
    };
    if term
        .namespace_selector
        .as_ref()
        .is_some_and(|s| !selector_is_empty(s))
    {
        return Err(
            "a pod affinity term's non-empty namespaceSelector is not supported yet".into(),
        );
    }
    let keys = |k: &Option<Vec<String>>| k.as_ref().is_some_and(|k| !k.is_empty());
    if keys(&term.match_label_keys) || keys(&term.mismatch_label_keys) {
        return Err(
            "a pod affinity term's matchLabelKeys/mismatchLabelKeys is not supported yet".into(),
        );
    }
    Ok(())
}

/// A host port a pod takes on its node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPort {
    pub protocol: String,
    /// Empty or `0.0.0.0`: every address of the node.
    pub ip: String,
    pub port: i32,
}

impl HostPort {
    /// Whether two pods taking these ports could not share a node: same protocol and port, on
    /// the same address or one of them on every address.
    pub fn conflicts_with(&self, other: &HostPort) -> bool {
        let every = |ip: &str| ip.is_empty() || ip == "0.0.0.0" || ip == "::";
        self.protocol == other.protocol
            && self.port == other.port
            && (self.ip == other.ip || every(&self.ip) || every(&other.ip))
    }
}

/// The host ports of a pod's containers: `hostPort`s, and for a host-network pod every
/// `containerPort` (the API server defaults `hostPort` to it there).
pub fn host_ports(spec: &PodSpec) -> Vec<HostPort> {
    let host_network = spec.host_network.unwrap_or(false);
    spec.containers
        .iter()
        .flat_map(|c| c.ports.iter().flatten())
        .filter_map(|p| {
            let port = p
                .host_port
                .filter(|p| *p > 0)
                .or(host_network.then_some(p.container_port))?;
            Some(HostPort {
                protocol: p.protocol.clone().unwrap_or_else(|| "TCP".into()),
                ip: p.host_ip.clone().unwrap_or_default(),
                port,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{
        Affinity, Container, ContainerPort, NodeAffinity, NodeSelector,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn requirement(key: &str, operator: &str, values: &[&str]) -> NodeSelectorRequirement {
        NodeSelectorRequirement {
            key: key.into(),
            operator: operator.into(),
            values: Some(values.iter().map(|v| v.to_string()).collect()),
        }
    }

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn in_and_not_in_compare_against_the_values() {
        let r = requirement("zone", "In", &["a", "b"]);
        assert!(node_requirement_matches(&r, Some("a")));
        assert!(!node_requirement_matches(&r, Some("c")));
        assert!(!node_requirement_matches(&r, None));
        let r = requirement("zone", "NotIn", &["a", "b"]);
        assert!(!node_requirement_matches(&r, Some("b")));
        assert!(node_requirement_matches(&r, Some("c")));
        assert!(
            node_requirement_matches(&r, None),
            "a missing label is not in the set"
        );
    }

    #[test]
    fn exists_and_does_not_exist_look_only_at_the_key() {
        let r = requirement("gpu", "Exists", &[]);
        assert!(node_requirement_matches(&r, Some("")));
        assert!(!node_requirement_matches(&r, None));
        let r = requirement("gpu", "DoesNotExist", &[]);
        assert!(!node_requirement_matches(&r, Some("x")));
        assert!(node_requirement_matches(&r, None));
    }

    #[test]
    fn gt_and_lt_compare_integers_and_refuse_anything_else() {
        let gt = requirement("cores", "Gt", &["4"]);
        assert!(node_requirement_matches(&gt, Some("8")));
        assert!(!node_requirement_matches(&gt, Some("4")));
        assert!(!node_requirement_matches(&gt, Some("two")));
        assert!(!node_requirement_matches(&gt, None));
        let lt = requirement("cores", "Lt", &["4"]);
        assert!(node_requirement_matches(&lt, Some("-1")));
        assert!(!node_requirement_matches(&lt, Some("4")));
        let two_values = requirement("cores", "Gt", &["1", "2"]);
        assert!(!node_requirement_matches(&two_values, Some("8")));
        assert!(!node_requirement_matches(
            &requirement("cores", "Near", &["4"]),
            Some("4")
        ));
    }

    #[test]
    fn terms_and_their_parts_within_or_across() {
        let node = labels(&[("kubernetes.io/hostname", "n1"), ("zone", "a")]);
        let term = |exprs: Vec<NodeSelectorRequirement>, fields: Vec<NodeSelectorRequirement>| {
            NodeSelectorTerm {
                match_expressions: Some(exprs),
                match_fields: Some(fields),
            }
        };
        let both = term(
            vec![requirement("zone", "In", &["a"])],
            vec![requirement("metadata.name", "In", &["n1"])],
        );
        assert!(node_term_matches(&both, "n1", &node));
        assert!(!node_term_matches(&both, "n2", &node));
        let not_named = term(vec![], vec![requirement("metadata.name", "NotIn", &["n1"])]);
        assert!(!node_term_matches(&not_named, "n1", &node));
        assert!(node_term_matches(&not_named, "n2", &node));
        assert!(
            !node_term_matches(&term(vec![], vec![]), "n1", &node),
            "an empty term matches nothing"
        );
        assert!(!node_term_matches(
            &term(vec![], vec![requirement("metadata.uid", "In", &["n1"])]),
            "n1",
            &node
        ));

        let spec = |terms: Vec<NodeSelectorTerm>| PodSpec {
            affinity: Some(Affinity {
                node_affinity: Some(NodeAffinity {
                    required_during_scheduling_ignored_during_execution: Some(NodeSelector {
                        node_selector_terms: terms,
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let either = spec(vec![
            term(vec![requirement("zone", "In", &["b"])], vec![]),
            term(
                vec![requirement("kubernetes.io/hostname", "In", &["n1"])],
                vec![],
            ),
        ]);
        assert!(required_node_affinity_matches(&either, "n1", &node));
        assert!(!required_node_affinity_matches(
            &either,
            "n2",
            &labels(&[("kubernetes.io/hostname", "n2"), ("zone", "a")])
        ));
        assert!(required_node_affinity_matches(
            &PodSpec::default(),
            "n1",
            &node
        ));
        assert!(!required_node_affinity_matches(&spec(vec![]), "n1", &node));
    }

    #[test]
    fn label_selectors_and_with_expressions() {
        let selector = LabelSelector {
            match_labels: Some(labels(&[("app", "ovn-central")])),
            match_expressions: Some(vec![LabelSelectorRequirement {
                key: "tier".into(),
                operator: "NotIn".into(),
                values: Some(vec!["test".into()]),
            }]),
        };
        assert!(label_selector_matches(
            &selector,
            &labels(&[("app", "ovn-central")])
        ));
        assert!(!label_selector_matches(
            &selector,
            &labels(&[("app", "ovn-central"), ("tier", "test")])
        ));
        assert!(!label_selector_matches(
            &selector,
            &labels(&[("app", "other")])
        ));
        assert!(label_selector_matches(
            &LabelSelector::default(),
            &labels(&[])
        ));
    }

    #[test]
    fn affinity_terms_select_in_their_namespaces() {
        let pod = |namespace: &str| Pod {
            metadata: ObjectMeta {
                namespace: Some(namespace.into()),
                labels: Some(labels(&[("app", "x")])),
                ..Default::default()
            },
            ..Default::default()
        };
        let selecting = LabelSelector {
            match_labels: Some(labels(&[("app", "x")])),
            ..Default::default()
        };
        let term = PodAffinityTerm {
            label_selector: Some(selecting.clone()),
            topology_key: "kubernetes.io/hostname".into(),
            ..Default::default()
        };
        assert_eq!(term_selects(&term, "a", &pod("a")), Ok(true));
        assert_eq!(term_selects(&term, "a", &pod("b")), Ok(false));
        let listed = PodAffinityTerm {
            namespaces: Some(vec!["b".into()]),
            ..term.clone()
        };
        assert_eq!(term_selects(&listed, "a", &pod("b")), Ok(true));
        assert_eq!(term_selects(&listed, "a", &pod("a")), Ok(false));
        let everywhere = PodAffinityTerm {
            namespace_selector: Some(LabelSelector::default()),
            ..term.clone()
        };
        assert_eq!(term_selects(&everywhere, "a", &pod("c")), Ok(true));
        let no_selector = PodAffinityTerm {
            label_selector: None,
            ..term.clone()
        };
        assert_eq!(term_selects(&no_selector, "a", &pod("a")), Ok(false));
        let by_namespace_labels = PodAffinityTerm {
            namespace_selector: Some(selecting),
            ..term
        };
        assert!(term_selects(&by_namespace_labels, "a", &pod("a"))
            .is_err_and(|e| e.contains("not supported yet")));
    }

    #[test]
    fn host_ports_include_host_network_container_ports_and_conflict_by_address() {
        let port = |container_port: i32, host_port: Option<i32>, ip: Option<&str>| ContainerPort {
            container_port,
            host_port,
            host_ip: ip.map(Into::into),
            ..Default::default()
        };
        let spec = |host_network: bool, ports: Vec<ContainerPort>| PodSpec {
            host_network: Some(host_network),
            containers: vec![Container {
                name: "c".into(),
                ports: Some(ports),
                ..Default::default()
            }],
            ..Default::default()
        };
        let plain = host_ports(&spec(
            false,
            vec![port(80, None, None), port(81, Some(8081), None)],
        ));
        assert_eq!(plain.iter().map(|p| p.port).collect::<Vec<_>>(), vec![8081]);
        let host = host_ports(&spec(true, vec![port(6641, None, None)]));
        assert_eq!(host[0].port, 6641);
        assert_eq!(host[0].protocol, "TCP");

        let at = |ip: &str, protocol: &str| HostPort {
            protocol: protocol.into(),
            ip: ip.into(),
            port: 53,
        };
        assert!(at("", "TCP").conflicts_with(&at("10.0.0.1", "TCP")));
        assert!(at("10.0.0.1", "TCP").conflicts_with(&at("10.0.0.1", "TCP")));
        assert!(!at("10.0.0.1", "TCP").conflicts_with(&at("10.0.0.2", "TCP")));
        assert!(!at("", "TCP").conflicts_with(&at("", "UDP")));
    }
}
