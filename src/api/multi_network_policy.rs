//! `MultiNetworkPolicy` (`k8s.cni.cncf.io/v1beta1`, namespaced): NetworkPolicy for the
//! networks a NAD names, as the Network Plumbing Working Group defines it. Not our CRD: its
//! schema is the community's (`crds/multi-networkpolicy.yaml`), so none is generated here.
//! The spec is Kubernetes' `NetworkPolicySpec`, field for field; the networks it applies to are
//! named by the annotation `k8s.v1.cni.cncf.io/policy-for` (`ns/nad` or `nad`, comma-separated).

use k8s_openapi::api::networking::v1::{NetworkPolicyEgressRule, NetworkPolicyIngressRule};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::CustomResource;
use serde::{Deserialize, Serialize};

/// The networks a MultiNetworkPolicy applies to.
pub const POLICY_FOR: &str = "k8s.v1.cni.cncf.io/policy-for";

#[derive(CustomResource, Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[kube(
    group = "k8s.cni.cncf.io",
    version = "v1beta1",
    kind = "MultiNetworkPolicy",
    plural = "multi-networkpolicies",
    namespaced,
    schema = "disabled"
)]
#[serde(rename_all = "camelCase")]
pub struct MultiNetworkPolicySpec {
    #[serde(default)]
    pub pod_selector: LabelSelector,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ingress: Vec<NetworkPolicyIngressRule>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub egress: Vec<NetworkPolicyEgressRule>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy_types: Option<Vec<String>>,
}

/// The NADs of `policy-for` as `(namespace, name)`; a bare name is in `namespace`.
pub fn policy_for(value: &str, namespace: &str) -> Vec<(String, String)> {
    value
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| match s.split_once('/') {
            Some((ns, name)) => (ns.to_owned(), name.to_owned()),
            None => (namespace.to_owned(), s.to_owned()),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_for_names_nads_in_the_policys_namespace_unless_qualified() {
        assert_eq!(
            policy_for("net-a, other/net-b,,", "default"),
            vec![
                ("default".to_owned(), "net-a".to_owned()),
                ("other".to_owned(), "net-b".to_owned())
            ]
        );
    }

    #[test]
    fn the_communitys_example_parses() {
        let p: MultiNetworkPolicy = serde_json::from_value(serde_json::json!({
            "apiVersion": "k8s.cni.cncf.io/v1beta1", "kind": "MultiNetworkPolicy",
            "metadata": {"name": "p", "namespace": "default",
                         "annotations": {POLICY_FOR: "net-a"}},
            "spec": {"podSelector": {"matchLabels": {"app": "server"}},
                     "policyTypes": ["Ingress"],
                     "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "client"}}},
                                           {"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.1.0.0/16"]}}],
                                  "ports": [{"protocol": "TCP", "port": 80}]}]}
        }))
        .unwrap();
        assert_eq!(p.spec.ingress[0].from.as_ref().unwrap().len(), 2);
    }
}
