//! Picking a node for a pending pod, as kube-scheduler's filters would for what kube-sim
//! models: the node's live labels against the pod's `spec.nodeSelector`, the node's
//! `NoSchedule`/`NoExecute` taints against the pod's tolerations, `spec.unschedulable`
//! (cordon); round-robin among the nodes left. The rules are pure and shared with the
//! DaemonSet controller; `candidates` reads the Node objects, so `kubectl label node` and
//! `kubectl taint` take effect on the next pick. Binding (POST `pods/<name>/binding`) is done
//! by the kubelet loop. Affinity and resources are not simulated.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Node as NodeObject, PodSpec, Taint, Toleration};
use kube::api::{Api, ListParams};
use kube::Client;

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

    /// Whether a pod with `spec` may be placed here: its node selector matches and it
    /// tolerates every taint that keeps new pods off.
    pub fn admits(&self, spec: &PodSpec) -> bool {
        self.selected_and_tolerated(spec, &["NoSchedule", "NoExecute"])
    }

    /// Whether a pod with `spec` already here may stay: a `NoSchedule` taint keeps new pods
    /// off but evicts nobody; `NoExecute` evicts.
    pub fn keeps(&self, spec: &PodSpec) -> bool {
        self.selected_and_tolerated(spec, &["NoExecute"])
    }

    fn selected_and_tolerated(&self, spec: &PodSpec, effects: &[&str]) -> bool {
        let selected = spec
            .node_selector
            .iter()
            .flatten()
            .all(|(k, v)| self.labels.get(k) == Some(v));
        let tolerations = spec.tolerations.as_deref().unwrap_or_default();
        selected
            && self
                .taints
                .iter()
                .filter(|t| effects.contains(&t.effect.as_str()))
                .all(|t| tolerates(tolerations, t))
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

/// The node for a pod with `spec`, taking turns through `cursor` (advanced on every pick).
/// `None` when no node admits it.
pub fn pick_node<'a>(
    candidates: &'a [Candidate],
    spec: &PodSpec,
    cursor: &mut usize,
) -> Option<&'a Candidate> {
    let admitting: Vec<&Candidate> = candidates
        .iter()
        .filter(|c| !c.unschedulable && c.admits(spec))
        .collect();
    if admitting.is_empty() {
        return None;
    }
    let pick = admitting[*cursor % admitting.len()];
    *cursor = cursor.wrapping_add(1);
    Some(pick)
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let mut cursor = 0;
        (0..n)
            .filter_map(|_| pick_node(nodes, spec, &mut cursor).map(|c| c.name.clone()))
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
}
