//! The `SecurityGroup` CRD (`kubeovn.io/v1`, cluster-scoped, short name `sg`):
//! ingress/egress rules that become OVN ACLs on a Port_Group of the member ports
//! (pods name their groups in `<provider>.kubernetes.io/security_groups`).

// kube-derive attributes repeat keys (`printcolumn(type_ = …)`) by design.
#![allow(clippy::duplicated_attributes)]

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::condition::Condition;

/// The rules of one security group.
#[derive(CustomResource, Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "kubeovn.io",
    version = "v1",
    kind = "SecurityGroup",
    plural = "security-groups",
    singular = "security-group",
    shortname = "sg",
    status = "SecurityGroupStatus",
    derive = "Default",
    derive = "PartialEq",
    doc = "A security group: ingress and egress rules applied to the ports that name it.",
    printcolumn(name = "PortGroup", type_ = "string", json_path = ".status.portGroup"),
    printcolumn(name = "Members", type_ = "integer", json_path = ".status.members"),
    printcolumn(name = "Ready", type_ = "boolean", json_path = ".status.ready"),
    printcolumn(
        name = "AllowSameGroup",
        type_ = "boolean",
        json_path = ".spec.allowSameGroupTraffic"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct SecurityGroupSpec {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ingress_rules: Vec<SecurityGroupRule>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub egress_rules: Vec<SecurityGroupRule>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_same_group_traffic: Option<bool>,
    /// ACL tier the rules go to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tier: Option<i32>,
}

/// One rule.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecurityGroupRule {
    /// `ipv4` or `ipv6`.
    #[serde(default)]
    pub ip_version: String,
    /// `all`, `icmp`, `tcp` or `udp`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
    /// 1..=16384; lower wins.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<i32>,
    /// `address` or `securityGroup`.
    #[serde(default)]
    pub remote_type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote_address: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote_security_group: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port_range_min: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port_range_max: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local_address: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_port_range_min: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_port_range_max: Option<i32>,
    /// `allow`, `drop` or `pass`.
    #[serde(default)]
    pub policy: String,
}

/// What the SecurityGroup controller applied.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
// Status fields written by newer controllers survive an older CRD.
#[schemars(extend("x-kubernetes-preserve-unknown-fields" = true))]
pub struct SecurityGroupStatus {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port_group: Option<String>,
    /// Logical switch ports in the group (attachments that name it).
    #[serde(default)]
    pub members: u32,
    /// Every rule is in NB (condition `Ready` says which were left out, if any).
    #[serde(default)]
    pub ready: bool,
    #[serde(default)]
    pub allow_same_group_traffic: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingress_md5: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub egress_md5: Option<String>,
    #[serde(default)]
    pub ingress_last_sync_success: bool,
    #[serde(default)]
    pub egress_last_sync_success: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}
