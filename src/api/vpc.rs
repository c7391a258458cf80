//! The `Vpc` CRD (`kubeovn.io/v1`, cluster-scoped, short name `vpc`): one OVN
//! Logical_Router per VPC. Field names and `kubectl get vpc` columns are Kube-OVN's.

// kube-derive attributes repeat keys (`printcolumn(type_ = …)`) by design.
#![allow(clippy::duplicated_attributes)]

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::condition::Condition;

/// What the user asks of a VPC.
#[derive(CustomResource, Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "kubeovn.io",
    version = "v1",
    kind = "Vpc",
    plural = "vpcs",
    shortname = "vpc",
    status = "VpcStatus",
    derive = "Default",
    derive = "PartialEq",
    doc = "A VPC: an isolated OVN logical router and the subnets attached to it.",
    printcolumn(
        name = "EnableExternal",
        type_ = "boolean",
        json_path = ".status.enableExternal"
    ),
    printcolumn(name = "EnableBfd", type_ = "boolean", json_path = ".status.enableBfd"),
    printcolumn(name = "Standby", type_ = "boolean", json_path = ".status.standby"),
    printcolumn(name = "Subnets", type_ = "string", json_path = ".status.subnets"),
    printcolumn(
        name = "ExtraExternalSubnets",
        type_ = "string",
        json_path = ".status.extraExternalSubnets"
    ),
    printcolumn(name = "Namespaces", type_ = "string", json_path = ".spec.namespaces"),
    printcolumn(
        name = "DefaultSubnet",
        type_ = "string",
        json_path = ".status.defaultLogicalSwitch"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct VpcSpec {
    /// Namespaces whose pods may use this VPC.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub namespaces: Vec<String>,
    /// The subnet pods land on when nothing else picks one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_subnet: Option<String>,
    /// Logical_Router_Static_Route rows.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub static_routes: Vec<StaticRoute>,
    /// Logical_Router_Policy rows.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub policy_routes: Vec<PolicyRoute>,
    /// Peerings with other VPCs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub vpc_peerings: Vec<VpcPeering>,
    /// Reach the external network through the default external subnet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enable_external: Option<bool>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extra_external_subnets: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enable_bfd: Option<bool>,
}

/// A static route on the VPC's router.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StaticRoute {
    /// `policyDst` (default) or `policySrc`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<String>,
    pub cidr: String,
    #[serde(rename = "nextHopIP")]
    pub next_hop_ip: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ecmp_mode: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bfd_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route_table: Option<String>,
}

/// A routing policy on the VPC's router.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PolicyRoute {
    /// 0..=32767.
    #[serde(default)]
    pub priority: i32,
    #[serde(default)]
    pub r#match: String,
    /// `allow`, `drop` or `reroute`.
    #[serde(default)]
    pub action: String,
    /// Only for `reroute`.
    #[serde(rename = "nextHopIP", default, skip_serializing_if = "Option::is_none")]
    pub next_hop_ip: Option<String>,
}

/// A peering with another VPC.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VpcPeering {
    #[serde(default)]
    pub remote_vpc: String,
    #[serde(rename = "localConnectIP", default)]
    pub local_connect_ip: String,
}

/// What the Vpc controller observed.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
// Status fields written by newer controllers survive an older CRD.
#[schemars(extend("x-kubernetes-preserve-unknown-fields" = true))]
pub struct VpcStatus {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The Logical_Router's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub router: Option<String>,
    /// Subnets attached to this VPC.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subnets: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_logical_switch: Option<String>,
    #[serde(default)]
    pub standby: bool,
    #[serde(default)]
    pub default: bool,
    #[serde(default)]
    pub enable_external: bool,
    #[serde(default)]
    pub enable_bfd: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub vpc_peerings: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extra_external_subnets: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_vpc_reads() {
        let vpc = crate::api::seed::documents::<serde_yaml::Value>(crate::api::seed::VPC_SUBNET)
            .into_iter()
            .find(|d| d["kind"] == "Vpc")
            .map(|d| serde_yaml::from_value::<Vpc>(d).unwrap())
            .unwrap();
        assert_eq!(vpc.metadata.name.as_deref(), Some("vpc-secondary"));
        assert_eq!(vpc.spec.namespaces, ["default"]);
        assert_eq!(vpc.status, None);
    }
}
