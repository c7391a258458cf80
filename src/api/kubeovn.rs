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
        name = "Available",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Available\")].status"
    ),
    printcolumn(name = "Version", type_ = "string", json_path = ".status.version"),
    printcolumn(
        name = "Reason",
        type_ = "string",
        priority = 1,
        json_path = ".status.conditions[?(@.type==\"Available\")].reason"
    ),
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
    /// Namespace of the workloads the operator runs (`ovn-central`, `ovs-ovn`,
    /// `kube-ovn-cni`); created if absent, never deleted.
    #[serde(default = "default_namespace")]
    pub namespace: String,
    /// Image of every role (central, chassis, node, NAT gateway), e.g.
    /// `registry.example.com/kube-ovn:v0.2.0`; defaults to the operator's own
    /// (`RELATED_IMAGE_KUBE_OVN`, else the operator pod's image).
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
    /// The bridges' datapath: `System` (the kernel module, production) or `Netdev`
    /// (userspace, for hosts without the module; needs `tunnelInterface`).
    #[serde(default)]
    pub datapath: DatapathType,
    /// `Netdev` only: the NIC that carries Geneve tunnels, taken over by OVS on every
    /// node. Each node's tunnel address is its annotation `kube-ovn.io/tunnel-address`
    /// (e.g. `172.31.1.10/24`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tunnel_interface: Option<String>,
    /// Nodes that get the node role (and thus secondary interfaces).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tolerations: Vec<Toleration>,
    /// Pod interface MTU when a Subnet sets none; unset: each node's tunnel-endpoint link MTU
    /// minus 100 (Geneve).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    /// Where the CNI binary is installed on nodes.
    #[serde(default = "default_cni_bin_dir")]
    pub cni_bin_dir: String,
    /// Log filter for every role (e.g. `info`, `kube_ovn=debug`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_level: Option<String>,
    /// VPC NAT gateways: the external network their pods reach the outside through.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nat_gateway: Option<NatGatewayConfig>,
}

/// Cluster-wide settings of the VPC NAT gateways.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NatGatewayConfig {
    /// When set, the operator creates the Subnet `ovn-vpc-external-network` and the macvlan
    /// NetworkAttachmentDefinition `<namespace>/ovn-vpc-external-network` on `interface`
    /// (removed again when unset). Unset: create them yourself, or use none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_network: Option<ExternalNetwork>,
}

/// The underlay network NAT gateways hold their EIPs on.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExternalNetwork {
    /// The nodes' NIC on the external network (the macvlan master), e.g. `eth1`.
    pub interface: String,
    /// The external network's CIDR, e.g. `172.18.0.0/16`.
    pub cidr: String,
    /// Its gateway (the NAT gateways' default route).
    pub gateway: String,
    /// Addresses never handed out (in use outside the cluster): single IPs or `a..b` ranges.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude_ips: Vec<String>,
}

impl Default for KubeOvnSpec {
    fn default() -> Self {
        Self {
            non_primary_cni: true,
            namespace: default_namespace(),
            image: None,
            image_pull_policy: None,
            ovn_central: OvnCentral::default(),
            node_ovs: NodeOvsMode::default(),
            datapath: DatapathType::default(),
            tunnel_interface: None,
            node_selector: BTreeMap::new(),
            tolerations: Vec::new(),
            mtu: None,
            cni_bin_dir: default_cni_bin_dir(),
            log_level: None,
            nat_gateway: None,
        }
    }
}

fn default_true() -> bool {
    true
}

fn default_cni_bin_dir() -> String {
    "/opt/cni/bin".into()
}

fn default_namespace() -> String {
    "kube-system".into()
}

fn default_central_replicas() -> u32 {
    1
}

/// The datapath of the node's bridges.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum DatapathType {
    /// The Open vSwitch kernel module.
    #[default]
    System,
    /// The userspace datapath (no kernel module; slower).
    Netdev,
}

/// Where OVN central (NB, SB, northd) runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OvnCentral {
    #[serde(default)]
    pub mode: OvnCentralMode,
    /// `Embedded` only: 1, or 3 for NB and SB as raft clusters (one member per node).
    #[serde(default = "default_central_replicas")]
    pub replicas: u32,
    /// `tcp:host:6641`, `ssl:…` or `unix:…`; required when `mode` is `External`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nb_address: Option<String>,
    /// Required when `mode` is `External`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sb_address: Option<String>,
}

impl Default for OvnCentral {
    fn default() -> Self {
        Self {
            mode: OvnCentralMode::default(),
            replicas: default_central_replicas(),
            nb_address: None,
            sb_address: None,
        }
    }
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
// Status fields written by newer controllers survive an older CRD.
#[schemars(extend("x-kubernetes-preserve-unknown-fields" = true))]
pub struct KubeOvnStatus {
    /// `Available`, `Progressing`, `Degraded` (and `Validated`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The version every component runs (set once all of them do).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// One entry per workload the operator runs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub components: Vec<ComponentStatus>,
    /// Where OVN central runs and how to reach it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub central: Option<CentralStatus>,
}

/// The rollout of one workload.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ComponentStatus {
    /// `ovn-central`, `ovs-ovn`, `kube-ovn-cni`.
    pub name: String,
    /// Pods wanted.
    pub desired: u32,
    /// Pods ready.
    pub ready: u32,
    /// The version all its pods run, once they all run the same.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
}

/// OVN central as the nodes and the operator reach it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CentralStatus {
    /// The nodes that run a member (embedded mode), kept stable once chosen.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nodes: Vec<String>,
    /// NB endpoints, comma-separated (`tcp:10.0.0.1:6641,…`).
    pub nb_address: String,
    /// SB endpoints, comma-separated.
    pub sb_address: String,
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
        assert_eq!(kube_ovn.spec.namespace, "kube-system");
        assert_eq!(kube_ovn.spec.ovn_central.replicas, 1);
        assert_eq!(kube_ovn.spec.datapath, DatapathType::System);
        assert_eq!(kube_ovn.spec, KubeOvnSpec::default());
    }

    #[test]
    fn the_external_network_reads() {
        let spec: KubeOvnSpec = serde_json::from_str(
            r#"{"natGateway": {"externalNetwork": {"interface": "eth1", "cidr": "172.18.0.0/16",
                "gateway": "172.18.0.1", "excludeIps": ["172.18.0.2..172.18.0.9"]}}}"#,
        )
        .unwrap();
        let ext = spec.nat_gateway.unwrap().external_network.unwrap();
        assert_eq!(ext.interface, "eth1");
        assert_eq!(ext.cidr, "172.18.0.0/16");
        assert_eq!(ext.gateway, "172.18.0.1");
        assert_eq!(ext.exclude_ips, ["172.18.0.2..172.18.0.9"]);
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
