//! The `IPPool` CRD (`kubeovn.io/v1`, cluster-scoped, short name `ippool`): a named
//! slice of a subnet's addresses reserved for some namespaces.

// kube-derive attributes repeat keys (`printcolumn(type_ = …)`) by design.
#![allow(clippy::duplicated_attributes)]

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::condition::Condition;

/// A pool of addresses within one subnet.
#[derive(CustomResource, Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "kubeovn.io",
    version = "v1",
    kind = "IPPool",
    plural = "ippools",
    singular = "ippool",
    shortname = "ippool",
    status = "IpPoolStatus",
    derive = "Default",
    derive = "PartialEq",
    doc = "A pool of addresses of one subnet, reserved for some namespaces.",
    printcolumn(name = "Subnet", type_ = "string", json_path = ".spec.subnet"),
    printcolumn(name = "IPs", type_ = "string", json_path = ".spec.ips"),
    printcolumn(name = "V4Used", type_ = "integer", json_path = ".status.v4UsingIPs"),
    printcolumn(
        name = "V4Available",
        type_ = "integer",
        json_path = ".status.v4AvailableIPs"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct IpPoolSpec {
    #[serde(default)]
    pub subnet: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub namespaces: Vec<String>,
    /// IPs, CIDRs or `a..b` ranges inside the subnet.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ips: Vec<String>,
}

/// Pool usage as the IPPool controller last saw it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct IpPoolStatus {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    #[serde(rename = "v4UsingIPs", default)]
    pub v4_using_ips: i64,
    #[serde(rename = "v4AvailableIPs", default)]
    pub v4_available_ips: i64,
    #[serde(rename = "v6UsingIPs", default)]
    pub v6_using_ips: i64,
    #[serde(rename = "v6AvailableIPs", default)]
    pub v6_available_ips: i64,
    #[serde(
        rename = "v4UsingIPRange",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub v4_using_ip_range: Option<String>,
    #[serde(
        rename = "v4AvailableIPRange",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub v4_available_ip_range: Option<String>,
    #[serde(
        rename = "v6UsingIPRange",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub v6_using_ip_range: Option<String>,
    #[serde(
        rename = "v6AvailableIPRange",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub v6_available_ip_range: Option<String>,
}
