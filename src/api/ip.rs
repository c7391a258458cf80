//! The `IP` CRD (`kubeovn.io/v1`, cluster-scoped, short name `ip`): the record of
//! one attachment's address, named `<pod>.<ns>.<provider>`. Like Kube-OVN's it has
//! no status: the spec is written once IPAM committed.

// kube-derive attributes repeat keys (`printcolumn(type_ = …)`) by design.
#![allow(clippy::duplicated_attributes)]

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// An allocated address of one pod attachment.
#[derive(CustomResource, Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "kubeovn.io",
    version = "v1",
    kind = "IP",
    plural = "ips",
    singular = "ip",
    shortname = "ip",
    derive = "Default",
    derive = "PartialEq",
    doc = "The address of one pod attachment, named <pod>.<namespace>.<provider>.",
    printcolumn(name = "V4IP", type_ = "string", json_path = ".spec.v4IpAddress"),
    printcolumn(name = "V6IP", type_ = "string", json_path = ".spec.v6IpAddress"),
    printcolumn(name = "Mac", type_ = "string", json_path = ".spec.macAddress"),
    printcolumn(name = "Node", type_ = "string", json_path = ".spec.nodeName"),
    printcolumn(name = "Subnet", type_ = "string", json_path = ".spec.subnet")
)]
#[serde(rename_all = "camelCase")]
pub struct IpSpec {
    #[serde(default)]
    pub pod_name: String,
    #[serde(default)]
    pub namespace: String,
    #[serde(default)]
    pub subnet: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attach_subnets: Vec<String>,
    #[serde(default)]
    pub node_name: String,
    /// Bare IPs, comma-separated for dual stack.
    #[serde(default)]
    pub ip_address: String,
    #[serde(default)]
    pub v4_ip_address: String,
    #[serde(default)]
    pub v6_ip_address: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attach_ips: Vec<String>,
    #[serde(default)]
    pub mac_address: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attach_macs: Vec<String>,
    #[serde(
        rename = "containerID",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub container_id: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub pod_type: String,
}
