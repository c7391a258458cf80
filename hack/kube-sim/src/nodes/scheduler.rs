//! Picking a node for a pending pod, as kube-scheduler's filters would for what kube-sim
//! models: cordon (`spec.unschedulable`), the node's `NoSchedule`/`NoExecute` taints against
//! the pod's tolerations, the node's live labels against `spec.nodeSelector` and the required
//! node affinity, free host ports, and required inter-pod affinity and anti-affinity (the
//! pod's own terms and those of pods already placed). Preferred node affinity breaks ties
//! (highest summed weight), then round-robin among the nodes left; preferred inter-pod terms
//! are not scored. A pod no node fits gets kube-scheduler's message (`0/3 nodes are
//! available: …`). The node rules are shared with the DaemonSet controller; `candidates`
//! reads the Node objects, so `kubectl label node` and `kubectl taint` take effect on the next
//! pick. Binding (POST `pods/<name>/binding`) is done by the kubelet loop. Resources are not
//! simulated; the matching itself lives in `affinity`.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Node as NodeObject, Pod, PodAffinityTerm, PodSpec, Taint, Toleration,
};
use kube::api::{Api, ListParams};
use kube::Client;

use super::affinity::{
    check_term_supported, host_ports, preferred_node_affinity_score,
    required_node_affinity_matches, term_selects,
};

/// A node as the scheduler sees it.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Candidate {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub taints: Vec<Taint>,
    /// Cordoned (`kubectl cordon`): no new pods, DaemonSet pods excepted.
    pub unschedulable: bool,
}

impl Candidate {
    pub fn of(node: &NodeObject) -> Self {
        let spec = node.spec.clone().unwrap_or_default();
        Self {
            name: node.metadata.name.clone().unwrap_or_default(),
            labels: node.metadata.labels.clone().unwrap_or_default(),
            taints: spec.taints.unwrap_or_default(),
            unschedulable: spec.unschedulable.unwrap_or(false),
        }
    }

    /// Whether a pod with `spec` may be placed here: its node selector and required node
    /// affinity match and it tolerates every taint that keeps new pods off.
    pub fn admits(&self, spec: &PodSpec) -> bool {
        self.selects(spec)
            && self
                .untolerated(spec, &["NoSchedule", "NoExecute"])
                .is_none()
    }

    /// Whether a pod with `spec` already here may stay: a `NoSchedule` taint keeps new pods
    /// off but evicts nobody; `NoExecute` evicts.
    pub fn keeps(&self, spec: &PodSpec) -> bool {
        self.selects(spec) && self.untolerated(spec, &["NoExecute"]).is_none()
    }

    /// `spec.nodeSelector` and the required node affinity both match this node.
    pub fn selects(&self, spec: &PodSpec) -> bool {
        spec.node_selector
            .iter()
            .flatten()
            .all(|(k, v)| self.labels.get(k) == Some(v))
            && required_node_affinity_matches(spec, &self.name, &self.labels)
    }

    /// The first taint with one of `effects` the pod does not tolerate.
    fn untolerated(&self, spec: &PodSpec, effects: &[&str]) -> Option<&Taint> {
        let tolerations = spec.tolerations.as_deref().unwrap_or_default();
        self.taints
            .iter()
            .filter(|t| effects.contains(&t.effect.as_str()))
            .find(|t| !tolerates(tolerations, t))
    }
}

/// Whether one of `tolerations` tolerates `taint` (an empty key with `Exists` tolerates all).
pub fn tolerates(tolerations: &[Toleration], taint: &Taint) -> bool {
    tolerations.iter().any(|t| {
        let effect = t.effect.as_deref().unwrap_or_default();
        if !effect.is_empty() && effect != taint.effect {
            return false;
        }
        let key = t.key.as_deref().unwrap_or_default();
        match t.operator.as_deref().unwrap_or("Equal") {
            "Exists" => key.is_empty() || key == taint.key,
            _ => {
                key == taint.key
                    && t.value.as_deref().unwrap_or_default()
                        == taint.value.as_deref().unwrap_or_default()
            }
        }
    })
}

/// The Node objects of the nodes named in `simulated`, as they are now.
pub async fn candidates(
    client: &Client,
    simulated: &[&str],
) -> Result<Vec<Candidate>, kube::Error> {
    let nodes: Api<NodeObject> = Api::all(client.clone());
    let mut found: Vec<Candidate> = nodes
        .list(&ListParams::default())
        .await?
        .items
        .iter()
        .map(Candidate::of)
        .filter(|c| simulated.contains(&c.name.as_str()))
        .collect();
    found.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(found)
}

/// The node for `pod` among `candidates` (sorted by name), given the pods already `placed`
/// (any list of pods: those unbound, finished or the pod itself are skipped). Among the nodes
/// that pass every filter, those with the best preferred node affinity score take turns
/// through `cursor` (advanced on every pick). `Err` carries the reason for the pod's
/// `PodScheduled=False` condition and `FailedScheduling` Event.
pub fn pick_node<'a>(
    candidates: &'a [Candidate],
    pod: &Pod,
    placed: &[Pod],
    cursor: &mut usize,
) -> Result<&'a Candidate, String> {
    let filter = Filter::new(candidates, pod, placed)?;
    let mut misfits: BTreeMap<String, usize> = BTreeMap::new();
    let mut fitting = Vec::new();
    for candidate in candidates {
        match filter.misfit(candidate) {
            Some(reason) => *misfits.entry(reason).or_default() += 1,
            None => fitting.push(candidate),
        }
    }
    let score = |c: &Candidate| preferred_node_affinity_score(filter.spec, &c.name, &c.labels);
    let Some(best) = fitting.iter().map(|c| score(c)).max() else {
        return Err(no_node_fits(candidates.len(), &misfits));
    };
    fitting.retain(|c| score(c) == best);
    let pick = fitting[*cursor % fitting.len()];
    *cursor = cursor.wrapping_add(1);
    Ok(pick)
}

/// kube-scheduler's summary: each node counted under the first filter it failed, the
/// `<count> <reason>` parts sorted.
fn no_node_fits(total: usize, misfits: &BTreeMap<String, usize>) -> String {
    if total == 0 {
        return "no nodes available to schedule pods".into();
    }
    let mut parts: Vec<String> = misfits
        .iter()
        .map(|(reason, count)| format!("{count} {reason}"))
        .collect();
    parts.sort();
    format!("0/{total} nodes are available: {}.", parts.join(", "))
}

/// One required inter-pod term and whose it is.
struct Term<'p> {
    term: &'p PodAffinityTerm,
    /// The namespace of the pod that wrote it (the default scope of the term).
    namespace: &'p str,
}

/// The filters for one pod, with what they need from the pods already placed.
struct Filter<'p> {
    pod: &'p Pod,
    spec: &'p PodSpec,
    /// Node labels by node name, for topology domains.
    node_labels: BTreeMap<&'p str, &'p BTreeMap<String, String>>,
    /// Bound, unfinished pods other than this one, with their node.
    placed: Vec<(&'p str, &'p Pod)>,
    affinity: Vec<Term<'p>>,
    anti_affinity: Vec<Term<'p>>,
}

static NO_SPEC: std::sync::LazyLock<PodSpec> = std::sync::LazyLock::new(PodSpec::default);

impl<'p> Filter<'p> {
    fn new(candidates: &'p [Candidate], pod: &'p Pod, placed: &'p [Pod]) -> Result<Self, String> {
        let spec = pod.spec.as_ref().unwrap_or(&NO_SPEC);
        let namespace = pod.metadata.namespace.as_deref().unwrap_or_default();
        let terms = |terms: Option<&'p Vec<PodAffinityTerm>>| -> Result<Vec<Term<'p>>, String> {
            terms
                .into_iter()
                .flatten()
                .map(|term| {
                    check_term_supported(term)?;
                    Ok(Term { term, namespace })
                })
                .collect()
        };
        let affinity = spec.affinity.as_ref();
        let pod_affinity = affinity.and_then(|a| a.pod_affinity.as_ref());
        let pod_anti_affinity = affinity.and_then(|a| a.pod_anti_affinity.as_ref());
        let preferred = pod_affinity
            .and_then(|a| {
                a.preferred_during_scheduling_ignored_during_execution
                    .as_ref()
            })
            .into_iter()
            .chain(pod_anti_affinity.and_then(|a| {
                a.preferred_during_scheduling_ignored_during_execution
                    .as_ref()
            }))
            .any(|p| !p.is_empty());
        if preferred {
            tracing::debug!(pod = %pod_name(pod), "preferred pod (anti-)affinity is not scored; ignored");
        }
        // By uid, so that an older pod of the same name (a StatefulSet's, still terminating)
        // still holds its node.
        let itself = |p: &Pod| match (&pod.metadata.uid, &p.metadata.uid) {
            (Some(a), Some(b)) => a == b,
            _ => {
                p.metadata.name == pod.metadata.name
                    && p.metadata.namespace == pod.metadata.namespace
            }
        };
        let placed = placed
            .iter()
            .filter(|p| !itself(p))
            .filter(|p| {
                !matches!(
                    p.status.as_ref().and_then(|s| s.phase.as_deref()),
                    Some("Succeeded" | "Failed")
                )
            })
            .filter_map(|p| {
                let node = p.spec.as_ref()?.node_name.as_deref()?;
                (!node.is_empty()).then_some((node, p))
            })
            .collect();
        Ok(Self {
            pod,
            spec,
            node_labels: candidates
                .iter()
                .map(|c| (c.name.as_str(), &c.labels))
                .collect(),
            placed,
            affinity: terms(pod_affinity.and_then(|a| {
                a.required_during_scheduling_ignored_during_execution
                    .as_ref()
            }))?,
            anti_affinity: terms(pod_anti_affinity.and_then(|a| {
                a.required_during_scheduling_ignored_during_execution
                    .as_ref()
            }))?,
        })
    }

    /// The first filter `node` fails, in kube-scheduler's order and words; `None` if it fits.
    fn misfit(&self, node: &Candidate) -> Option<String> {
        if node.unschedulable {
            return Some("node(s) were unschedulable".into());
        }
        if let Some(taint) = node.untolerated(self.spec, &["NoSchedule", "NoExecute"]) {
            let value = taint.value.as_deref().unwrap_or_default();
            return Some(format!(
                "node(s) had untolerated taint {{{}: {value}}}",
                taint.key
            ));
        }
        if !node.selects(self.spec) {
            return Some("node(s) didn't match Pod's node affinity/selector".into());
        }
        let wanted = host_ports(self.spec);
        let taken = self
            .placed
            .iter()
            .filter(|(on, _)| *on == node.name)
            .flat_map(|(_, p)| p.spec.as_ref().map(host_ports).unwrap_or_default());
        if taken
            .into_iter()
            .any(|t| wanted.iter().any(|w| w.conflicts_with(&t)))
        {
            return Some("node(s) didn't have free ports for the requested pod ports".into());
        }
        if !self.affinity.iter().all(|t| self.affinity_holds(node, t)) {
            return Some("node(s) didn't match pod affinity rules".into());
        }
        if self
            .anti_affinity
            .iter()
            .any(|t| self.shares_domain_with_selected(node, t))
        {
            return Some("node(s) didn't match pod anti-affinity rules".into());
        }
        if self.placed_anti_affinity_repels(node) {
            return Some("node(s) didn't satisfy existing pods anti-affinity rules".into());
        }
        None
    }

    /// Some placed pod the term selects runs in `node`'s domain of the term's topology key;
    /// or none runs anywhere and the pod selects itself (the first of a group may go
    /// anywhere, as in kube-scheduler).
    fn affinity_holds(&self, node: &Candidate, term: &Term) -> bool {
        let mut selected = self.selected_by(term).peekable();
        if selected.peek().is_none() {
            return self.selects(term, self.pod);
        }
        selected.any(|on| self.same_domain(node, on, &term.term.topology_key))
    }

    fn shares_domain_with_selected(&self, node: &Candidate, term: &Term) -> bool {
        self.selected_by(term)
            .any(|on| self.same_domain(node, on, &term.term.topology_key))
    }

    /// The nodes of the placed pods `term` selects.
    fn selected_by<'s>(&'s self, term: &'s Term) -> impl Iterator<Item = &'p str> + 's {
        self.placed
            .iter()
            .filter(|(_, p)| self.selects(term, p))
            .map(|(on, _)| *on)
    }

    fn selects(&self, term: &Term, pod: &Pod) -> bool {
        term_selects(term.term, term.namespace, pod).unwrap_or_else(|reason| {
            tracing::warn!(pod = %pod_name(pod), %reason, "affinity term ignored");
            false
        })
    }

    /// A placed pod's required anti-affinity selects this pod and that pod runs in `node`'s
    /// domain.
    fn placed_anti_affinity_repels(&self, node: &Candidate) -> bool {
        self.placed.iter().any(|(on, placed)| {
            let namespace = placed.metadata.namespace.as_deref().unwrap_or_default();
            placed
                .spec
                .as_ref()
                .and_then(|s| s.affinity.as_ref())
                .and_then(|a| a.pod_anti_affinity.as_ref())
                .and_then(|a| {
                    a.required_during_scheduling_ignored_during_execution
                        .as_ref()
                })
                .into_iter()
                .flatten()
                .any(|term| {
                    self.selects(&Term { term, namespace }, self.pod)
                        && self.same_domain(node, on, &term.topology_key)
                })
        })
    }

    /// `node` and the node named `other` have the same value for `key` (both have it).
    fn same_domain(&self, node: &Candidate, other: &str, key: &str) -> bool {
        let Some(value) = node.labels.get(key) else {
            return false;
        };
        self.node_labels
            .get(other)
            .and_then(|labels| labels.get(key))
            == Some(value)
    }
}

fn pod_name(pod: &Pod) -> String {
    format!(
        "{}/{}",
        pod.metadata.namespace.as_deref().unwrap_or_default(),
        pod.metadata.name.as_deref().unwrap_or_default()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{
        Affinity, Container, ContainerPort, NodeAffinity, NodeSelector, NodeSelectorRequirement,
        NodeSelectorTerm, PodAffinity, PodAntiAffinity, PodStatus, PreferredSchedulingTerm,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};

    fn candidates() -> Vec<Candidate> {
        ["a", "b", "c"]
            .iter()
            .map(|n| Candidate {
                name: n.to_string(),
                labels: BTreeMap::from([
                    ("kubernetes.io/hostname".to_string(), n.to_string()),
                    (
                        "zone".to_string(),
                        if *n == "a" { "x" } else { "y" }.to_string(),
                    ),
                ]),
                ..Default::default()
            })
            .collect()
    }

    fn selecting(labels: &[(&str, &str)]) -> PodSpec {
        PodSpec {
            node_selector: Some(
                labels
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ),
            ..Default::default()
        }
    }

    fn taint(key: &str, value: &str, effect: &str) -> Taint {
        Taint {
            key: key.into(),
            value: Some(value.into()),
            effect: effect.into(),
            ..Default::default()
        }
    }

    fn picks(nodes: &[Candidate], spec: &PodSpec, n: usize) -> Vec<String> {
        let pod = Pod {
            spec: Some(spec.clone()),
            ..Default::default()
        };
        let mut cursor = 0;
        (0..n)
            .filter_map(|_| {
                pick_node(nodes, &pod, &[], &mut cursor)
                    .ok()
                    .map(|c| c.name.clone())
            })
            .collect()
    }

    #[test]
    fn round_robin_over_all_nodes() {
        assert_eq!(
            picks(&candidates(), &PodSpec::default(), 4),
            vec!["a", "b", "c", "a"]
        );
    }

    #[test]
    fn node_selector_restricts_the_choice() {
        let nodes = candidates();
        assert_eq!(
            picks(&nodes, &selecting(&[("zone", "y")]), 3),
            vec!["b", "c", "b"]
        );
        assert!(picks(&nodes, &selecting(&[("zone", "z")]), 1).is_empty());
    }

    #[test]
    fn taints_keep_pods_off_unless_tolerated_and_cordoned_nodes_take_none() {
        let mut nodes = candidates();
        nodes[0].taints = vec![taint("dedicated", "infra", "NoSchedule")];
        nodes[1].taints = vec![taint("noisy", "", "PreferNoSchedule")];
        nodes[2].unschedulable = true;
        assert_eq!(picks(&nodes, &PodSpec::default(), 2), vec!["b", "b"]);

        let tolerant = PodSpec {
            tolerations: Some(vec![Toleration {
                key: Some("dedicated".into()),
                operator: Some("Equal".into()),
                value: Some("infra".into()),
                effect: Some("NoSchedule".into()),
                ..Default::default()
            }]),
            ..Default::default()
        };
        assert_eq!(picks(&nodes, &tolerant, 2), vec!["a", "b"]);
    }

    #[test]
    fn tolerations_match_by_key_value_effect_or_exist() {
        let t = taint("k", "v", "NoExecute");
        let toleration = |key: &str, op: &str, value: &str, effect: &str| Toleration {
            key: Some(key.into()),
            operator: Some(op.into()),
            value: Some(value.into()),
            effect: Some(effect.into()),
            ..Default::default()
        };
        assert!(tolerates(&[toleration("k", "Equal", "v", "NoExecute")], &t));
        assert!(tolerates(&[toleration("k", "Equal", "v", "")], &t));
        assert!(tolerates(&[toleration("k", "Exists", "", "")], &t));
        assert!(tolerates(&[toleration("", "Exists", "", "")], &t));
        assert!(!tolerates(&[toleration("k", "Equal", "w", "")], &t));
        assert!(!tolerates(
            &[toleration("k", "Exists", "", "NoSchedule")],
            &t
        ));
        assert!(!tolerates(&[], &t));
    }

    fn placed_pod(name: &str, node: &str, labels: &[(&str, &str)], spec: PodSpec) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("default".into()),
                uid: Some(format!("uid-{name}")),
                labels: Some(
                    labels
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                ),
                ..Default::default()
            },
            spec: Some(PodSpec {
                node_name: (!node.is_empty()).then(|| node.to_string()),
                ..spec
            }),
            ..Default::default()
        }
    }

    fn anti_affinity(app: &str, topology_key: &str) -> Affinity {
        Affinity {
            pod_anti_affinity: Some(PodAntiAffinity {
                required_during_scheduling_ignored_during_execution: Some(vec![PodAffinityTerm {
                    label_selector: Some(LabelSelector {
                        match_labels: Some(BTreeMap::from([("app".to_string(), app.to_string())])),
                        ..Default::default()
                    }),
                    topology_key: topology_key.into(),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn node_affinity(key: &str, operator: &str, values: &[&str]) -> Affinity {
        Affinity {
            node_affinity: Some(NodeAffinity {
                required_during_scheduling_ignored_during_execution: Some(NodeSelector {
                    node_selector_terms: vec![NodeSelectorTerm {
                        match_expressions: Some(vec![NodeSelectorRequirement {
                            key: key.into(),
                            operator: operator.into(),
                            values: Some(values.iter().map(|v| v.to_string()).collect()),
                        }]),
                        ..Default::default()
                    }],
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn pick(nodes: &[Candidate], pod: &Pod, placed: &[Pod]) -> Result<String, String> {
        pick_node(nodes, pod, placed, &mut 0).map(|c| c.name.clone())
    }

    #[test]
    fn required_anti_affinity_spreads_replicas_and_explains_the_one_left_over() {
        let nodes = candidates();
        let spec = || PodSpec {
            affinity: Some(anti_affinity("central", "kubernetes.io/hostname")),
            ..Default::default()
        };
        let mut placed = Vec::new();
        for i in 0..3 {
            let pod = placed_pod(&format!("central-{i}"), "", &[("app", "central")], spec());
            let node = pick(&nodes, &pod, &placed).expect("a free node");
            placed.push(placed_pod(
                &format!("central-{i}"),
                &node,
                &[("app", "central")],
                spec(),
            ));
        }
        let mut used: Vec<_> = placed
            .iter()
            .filter_map(|p| p.spec.as_ref()?.node_name.clone())
            .collect();
        used.sort();
        assert_eq!(used, vec!["a", "b", "c"]);
        let fourth = placed_pod("central-3", "", &[("app", "central")], spec());
        assert_eq!(
            pick(&nodes, &fourth, &placed),
            Err("0/3 nodes are available: 3 node(s) didn't match pod anti-affinity rules.".into())
        );
        // A finished pod holds no node.
        let mut done = placed_pod("old", "a", &[("app", "central")], spec());
        done.status = Some(PodStatus {
            phase: Some("Succeeded".into()),
            ..Default::default()
        });
        assert_eq!(pick(&nodes, &fourth, &[done]), Ok("a".into()));
    }

    #[test]
    fn reasons_are_counted_per_node_and_sorted_as_kube_scheduler_prints_them() {
        let nodes = candidates();
        let placed = vec![placed_pod(
            "web-0",
            "a",
            &[("app", "web")],
            PodSpec::default(),
        )];
        let pod = placed_pod(
            "web-1",
            "",
            &[("app", "web")],
            PodSpec {
                affinity: Some(Affinity {
                    node_affinity: node_affinity("kubernetes.io/hostname", "In", &["a"])
                        .node_affinity,
                    ..anti_affinity("web", "kubernetes.io/hostname")
                }),
                ..Default::default()
            },
        );
        assert_eq!(
            pick(&nodes, &pod, &placed),
            Err(
                "0/3 nodes are available: 1 node(s) didn't match pod anti-affinity rules, \
                 2 node(s) didn't match Pod's node affinity/selector."
                    .into()
            )
        );
    }

    #[test]
    fn anti_affinity_on_a_zone_covers_every_node_of_it_and_binds_existing_pods_too() {
        let nodes = candidates();
        // A placed pod on b (zone y) repels pods labelled app=web from all of zone y.
        let guard = placed_pod(
            "guard",
            "b",
            &[("app", "guard")],
            PodSpec {
                affinity: Some(anti_affinity("web", "zone")),
                ..Default::default()
            },
        );
        let web = placed_pod("web", "", &[("app", "web")], PodSpec::default());
        let mut cursor = 0;
        for _ in 0..2 {
            let picked = pick_node(&nodes, &web, std::slice::from_ref(&guard), &mut cursor);
            assert_eq!(picked.map(|c| c.name.as_str()), Ok("a"));
        }
        let pinned = placed_pod(
            "web",
            "",
            &[("app", "web")],
            PodSpec {
                affinity: Some(node_affinity("zone", "In", &["y"])),
                ..Default::default()
            },
        );
        assert_eq!(
            pick(&nodes, &pinned, &[guard]),
            Err(
                "0/3 nodes are available: 1 node(s) didn't match Pod's node affinity/selector, \
                 2 node(s) didn't satisfy existing pods anti-affinity rules."
                    .into()
            )
        );
    }

    #[test]
    fn pod_affinity_follows_the_selected_pods_and_lets_the_first_go_anywhere() {
        let nodes = candidates();
        let affinity = || Affinity {
            pod_affinity: Some(PodAffinity {
                required_during_scheduling_ignored_during_execution: anti_affinity(
                    "cache",
                    "kubernetes.io/hostname",
                )
                .pod_anti_affinity
                .and_then(|a| a.required_during_scheduling_ignored_during_execution),
                ..Default::default()
            }),
            ..Default::default()
        };
        let spec = || PodSpec {
            affinity: Some(affinity()),
            ..Default::default()
        };
        let first = placed_pod("cache-0", "", &[("app", "cache")], spec());
        assert_eq!(pick(&nodes, &first, &[]), Ok("a".into()));
        let stranger = placed_pod("other", "", &[("app", "other")], spec());
        assert!(pick(&nodes, &stranger, &[])
            .is_err_and(|m| m.contains("3 node(s) didn't match pod affinity rules")));
        let cache = placed_pod("cache-0", "c", &[("app", "cache")], spec());
        let mut cursor = 0;
        for _ in 0..2 {
            let picked = pick_node(&nodes, &stranger, std::slice::from_ref(&cache), &mut cursor);
            assert_eq!(picked.map(|c| c.name.as_str()), Ok("c"));
        }
    }

    #[test]
    fn a_taken_host_port_sends_the_pod_elsewhere_and_other_protocols_share() {
        let nodes = candidates();
        let ports = |protocol: &str, host_network: bool| PodSpec {
            host_network: Some(host_network),
            containers: vec![Container {
                name: "c".into(),
                ports: Some(vec![ContainerPort {
                    container_port: 6641,
                    host_port: (!host_network).then_some(6641),
                    protocol: Some(protocol.into()),
                    ..Default::default()
                }]),
                ..Default::default()
            }],
            affinity: Some(node_affinity("zone", "In", &["x"])),
            ..Default::default()
        };
        let placed = vec![placed_pod("nb", "a", &[], ports("TCP", true))];
        assert_eq!(
            pick(
                &nodes,
                &placed_pod("p", "", &[], ports("TCP", false)),
                &placed
            ),
            Err(
                "0/3 nodes are available: 1 node(s) didn't have free ports for the requested \
                 pod ports, 2 node(s) didn't match Pod's node affinity/selector."
                    .into()
            )
        );
        assert_eq!(
            pick(
                &nodes,
                &placed_pod("p", "", &[], ports("UDP", false)),
                &placed
            ),
            Ok("a".into())
        );
    }

    #[test]
    fn preferred_node_affinity_breaks_ties_without_rejecting() {
        let nodes = candidates();
        let prefer = |zone: &str, weight: i32| PreferredSchedulingTerm {
            weight,
            preference: NodeSelectorTerm {
                match_expressions: Some(vec![NodeSelectorRequirement {
                    key: "zone".into(),
                    operator: "In".into(),
                    values: Some(vec![zone.into()]),
                }]),
                ..Default::default()
            },
        };
        let spec = |terms: Vec<PreferredSchedulingTerm>| PodSpec {
            affinity: Some(Affinity {
                node_affinity: Some(NodeAffinity {
                    preferred_during_scheduling_ignored_during_execution: Some(terms),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(
            picks(&nodes, &spec(vec![prefer("y", 10)]), 3),
            vec!["b", "c", "b"]
        );
        assert_eq!(
            picks(&nodes, &spec(vec![prefer("y", 10), prefer("x", 20)]), 2),
            vec!["a", "a"]
        );
        assert_eq!(
            picks(&nodes, &spec(vec![prefer("z", 10)]), 2),
            vec!["a", "b"]
        );
    }

    #[test]
    fn unsupported_affinity_parts_are_refused_by_name() {
        let mut affinity = anti_affinity("x", "kubernetes.io/hostname");
        if let Some(term) = affinity
            .pod_anti_affinity
            .as_mut()
            .and_then(|a| {
                a.required_during_scheduling_ignored_during_execution
                    .as_mut()
            })
            .and_then(|t| t.first_mut())
        {
            term.match_label_keys = Some(vec!["pod-template-hash".into()]);
        }
        let pod = placed_pod(
            "p",
            "",
            &[],
            PodSpec {
                affinity: Some(affinity),
                ..Default::default()
            },
        );
        assert!(pick(&candidates(), &pod, &[]).is_err_and(|m| m.contains("not supported yet")));
    }

    #[test]
    fn required_node_affinity_also_decides_where_daemons_belong_and_stay() {
        let nodes = candidates();
        let spec = PodSpec {
            affinity: Some(node_affinity("zone", "NotIn", &["x"])),
            ..Default::default()
        };
        let admitting: Vec<&str> = nodes
            .iter()
            .filter(|n| n.admits(&spec))
            .map(|n| n.name.as_str())
            .collect();
        assert_eq!(admitting, vec!["b", "c"]);
        assert!(
            !nodes[0].keeps(&spec),
            "a node that no longer matches loses its daemon"
        );
    }
}
