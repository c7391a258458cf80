//! Picking a node for a pending pod: round-robin over the nodes whose labels satisfy the pod's
//! `spec.nodeSelector`. Pure; binding (setting `spec.nodeName`) is done by the kubelet loop.
//! Affinity, taints and resources are not simulated.

use std::collections::BTreeMap;

/// A node as the scheduler sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    pub name: String,
    pub labels: BTreeMap<String, String>,
}

/// The node for a pod with `node_selector`, taking turns through `cursor` (advanced on every
/// pick). `None` when no node matches.
pub fn pick_node<'a>(
    candidates: &'a [Candidate],
    node_selector: Option<&BTreeMap<String, String>>,
    cursor: &mut usize,
) -> Option<&'a Candidate> {
    let matching: Vec<&Candidate> = candidates
        .iter()
        .filter(|c| {
            node_selector
                .into_iter()
                .flatten()
                .all(|(k, v)| c.labels.get(k) == Some(v))
        })
        .collect();
    if matching.is_empty() {
        return None;
    }
    let pick = matching[*cursor % matching.len()];
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
            })
            .collect()
    }

    #[test]
    fn round_robin_over_all_nodes() {
        let nodes = candidates();
        let mut cursor = 0;
        let picks: Vec<&str> = (0..4)
            .map(|_| {
                pick_node(&nodes, None, &mut cursor)
                    .expect("a node")
                    .name
                    .as_str()
            })
            .collect();
        assert_eq!(picks, vec!["a", "b", "c", "a"]);
    }

    #[test]
    fn node_selector_restricts_the_choice() {
        let nodes = candidates();
        let mut cursor = 0;
        let zone_y = BTreeMap::from([("zone".to_string(), "y".to_string())]);
        let picks: Vec<&str> = (0..3)
            .map(|_| {
                pick_node(&nodes, Some(&zone_y), &mut cursor)
                    .expect("a node")
                    .name
                    .as_str()
            })
            .collect();
        assert_eq!(picks, vec!["b", "c", "b"]);
        let nowhere = BTreeMap::from([("zone".to_string(), "z".to_string())]);
        assert_eq!(pick_node(&nodes, Some(&nowhere), &mut cursor), None);
    }
}
