//! The operator's own CRD, `KubeOvn` (`operator.kubeovn.io/v1alpha1`,
//! cluster-scoped): the install switch. It is a singleton: the operator acts on
//! the object named `kube-ovn` (`KUBE_OVN_SINGLETON`) and reports any other as
//! not in use through its status.

// kube-derive attributes repeat keys (`printcolumn(type_ = …)`) by design.
#![allow(clippy::duplicated_attributes)]

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Toleration;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::condition::Condition;

/// The only `KubeOvn` object the operator acts on.
pub const KUBE_OVN_SINGLETON: &str = "kube-ovn";

/// How kube-ovn is installed and run on this cluster.
#[derive(CustomResource, Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "operator.kubeovn.io",
    version = "v1alpha1",
    kind = "KubeOvn",
    plural = "kubeovns",
    singular = "kubeovn",
    shortname = "kovn",
    status = "KubeOvnStatus",
    derive = "PartialEq",
    doc = "The kube-ovn installation (a singleton named kube-ovn): secondary OVN networks next to the cluster's primary CNI.",
    printcolumn(
        name = "NonPrimaryCNI",
        type_ = "boolean",
        json_path = ".spec.nonPrimaryCNI"
    ),
    printcolumn(name = "Version", type_ = "string", json_path = ".status.version"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct KubeOvnSpec {
    /// Run next to the cluster's primary CNI. `false` (primary mode) is not
    /// supported: the operator reports it as a condition and installs nothing.
    #[serde(rename = "nonPrimaryCNI", default = "default_true")]
    pub non_primary_cni: bool,
    /// Image of the node and NAT gateway roles; defaults to the operator's own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_pull_policy: Option<String>,
    /// Where OVN NB/SB run.
    #[serde(default)]
    pub ovn_central: OvnCentral,
    /// Whether the node role runs its own OVS/ovn-controller or uses the host's.
    #[serde(default)]
    pub node_ovs: NodeOvsMode,
    /// Nodes that get the node role (and thus secondary interfaces).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tolerations: Vec<Toleration>,
    /// Pod interface MTU when a Subnet sets none; defaults to the underlay MTU minus 100.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    /// Where the CNI binary is installed on nodes.
    #[serde(default = "default_cni_bin_dir")]
    pub cni_bin_dir: String,
    /// Log filter for every role (e.g. `info`, `kube_ovn=debug`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_level: Option<String>,
}

impl Default for KubeOvnSpec {
    fn default() -> Self {
        Self {
            non_primary_cni: true,
            image: None,
            image_pull_policy: None,
            ovn_central: OvnCentral::default(),
            node_ovs: NodeOvsMode::default(),
            node_selector: BTreeMap::new(),
            tolerations: Vec::new(),
            mtu: None,
            cni_bin_dir: default_cni_bin_dir(),
            log_level: None,
        }
    }
}

fn default_true() -> bool {
    true
}

fn default_cni_bin_dir() -> String {
    "/opt/cni/bin".into()
}

/// Where OVN central (NB, SB, northd) runs.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OvnCentral {
    #[serde(default)]
    pub mode: OvnCentralMode,
    /// `tcp:host:6641`, `ssl:…` or `unix:…`; required when `mode` is `External`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nb_address: Option<String>,
    /// Required when `mode` is `External`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sb_address: Option<String>,
}

/// Who runs OVN central.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum OvnCentralMode {
    /// The operator supervises NB/SB ovsdb-server and ovn-northd itself.
    #[default]
    Embedded,
    /// Use NB/SB at `nbAddress`/`sbAddress`.
    External,
}

/// Who runs OVS and ovn-controller on a node.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum NodeOvsMode {
    /// The node role supervises its own ovsdb-server, ovs-vswitchd and ovn-controller.
    #[default]
    Embedded,
    /// Use the host's OVS and ovn-controller.
    Host,
}

/// What the operator installed.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct KubeOvnStatus {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The version every role runs (set once all of them do).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    #[serde(default)]
    pub nodes_desired: u32,
    #[serde(default)]
    pub nodes_ready: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_spec_means_secondary_mode_with_embedded_ovn() {
        let kube_ovn: KubeOvn = serde_yaml::from_str(
            "apiVersion: operator.kubeovn.io/v1alpha1
kind: KubeOvn
metadata:
  name: kube-ovn
spec: {}
",
        )
        .unwrap();
        assert!(kube_ovn.spec.non_primary_cni);
        assert_eq!(kube_ovn.spec.ovn_central.mode, OvnCentralMode::Embedded);
        assert_eq!(kube_ovn.spec.node_ovs, NodeOvsMode::Embedded);
        assert_eq!(kube_ovn.spec.cni_bin_dir, "/opt/cni/bin");
        assert_eq!(kube_ovn.spec, KubeOvnSpec::default());
    }

    #[test]
    fn primary_mode_is_readable_so_it_can_be_refused() {
        let spec: KubeOvnSpec = serde_json::from_str(
            r#"{"nonPrimaryCNI": false, "ovnCentral": {"mode": "External", "nbAddress": "tcp:10.0.0.1:6641"}}"#,
        )
        .unwrap();
        assert!(!spec.non_primary_cni);
        assert_eq!(spec.ovn_central.mode, OvnCentralMode::External);
        assert_eq!(
            spec.ovn_central.nb_address.as_deref(),
            Some("tcp:10.0.0.1:6641")
        );
    }
}
