//! VPC NAT gateway CRDs (`kubeovn.io/v1`, cluster-scoped): `VpcNatGateway`
//! (`vpc-nat-gw`) and the rules its pod programs, `IptablesEIP` (`eip`),
//! `IptablesFIPRule` (`fip`), `IptablesDnatRule` (`dnat`), `IptablesSnatRule`
//! (`snat`). Field names are Kube-OVN's, so its users' manifests keep working.

// kube-derive attributes repeat keys (`printcolumn(type_ = …)`) by design.
#![allow(clippy::duplicated_attributes)]

use k8s_openapi::api::core::v1::Toleration;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::condition::Condition;

/// A NAT gateway for one VPC: a pod on the VPC's subnet and on external subnets.
#[derive(CustomResource, Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "kubeovn.io",
    version = "v1",
    kind = "VpcNatGateway",
    plural = "vpc-nat-gateways",
    singular = "vpc-nat-gateway",
    shortname = "vpc-nat-gw",
    status = "VpcNatGatewayStatus",
    derive = "Default",
    derive = "PartialEq",
    doc = "A VPC NAT gateway: a pod with one leg on a VPC subnet (lanIp) and one on each external subnet.",
    printcolumn(name = "Vpc", type_ = "string", json_path = ".spec.vpc"),
    printcolumn(name = "Subnet", type_ = "string", json_path = ".spec.subnet"),
    printcolumn(name = "LanIP", type_ = "string", json_path = ".spec.lanIp"),
    printcolumn(
        name = "ExternalSubnets",
        type_ = "string",
        json_path = ".status.externalSubnets"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct VpcNatGatewaySpec {
    #[serde(default)]
    pub vpc: String,
    /// The VPC subnet the gateway's LAN leg is on.
    #[serde(default)]
    pub subnet: String,
    /// The LAN leg's address in `subnet`.
    #[serde(default)]
    pub lan_ip: String,
    /// External subnets; Kube-OVN defaults to `ovn-vpc-external-network`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub external_subnets: Vec<String>,
    /// Node selector as `"key: value"` strings.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub selector: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tolerations: Vec<Toleration>,
    /// A core/v1 Affinity, kept as written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "super::schema::preserve_unknown_object")]
    pub affinity: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub qos_policy: Option<String>,
    /// Extra routes in the gateway pod.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<NatGatewayRoute>,
    #[serde(
        rename = "noDefaultEIP",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub no_default_eip: Option<bool>,
}

/// A route inside the gateway pod.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct NatGatewayRoute {
    #[serde(default)]
    pub cidr: String,
    #[serde(rename = "nextHopIP", default)]
    pub next_hop_ip: String,
}

/// What the VpcNatGateway controller observed.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
// Status fields written by newer controllers survive an older CRD.
#[schemars(extend("x-kubernetes-preserve-unknown-fields" = true))]
pub struct VpcNatGatewayStatus {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub external_subnets: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub selector: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub qos_policy: Option<String>,
    /// The gateway pod's name once it runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<String>,
    /// The pod's addresses on its LAN leg (lanIp), from its network-status.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub lan_ips: Vec<String>,
    /// The pod's own addresses on the external network(s) (not the EIPs).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub external_ips: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// An external address on a NAT gateway.
#[derive(CustomResource, Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "kubeovn.io",
    version = "v1",
    kind = "IptablesEIP",
    plural = "iptables-eips",
    singular = "iptables-eip",
    shortname = "eip",
    status = "IptablesEipStatus",
    derive = "Default",
    derive = "PartialEq",
    doc = "An external IP held by a VPC NAT gateway, allocated from an external subnet.",
    printcolumn(name = "IP", type_ = "string", json_path = ".status.ip"),
    printcolumn(name = "Mac", type_ = "string", json_path = ".spec.macAddress"),
    printcolumn(name = "Nat", type_ = "string", json_path = ".status.nat"),
    printcolumn(name = "NatGwDp", type_ = "string", json_path = ".spec.natGwDp"),
    printcolumn(name = "Ready", type_ = "boolean", json_path = ".status.ready")
)]
#[serde(rename_all = "camelCase")]
pub struct IptablesEipSpec {
    /// Static IPv4 address; allocated from the external subnet when empty.
    #[serde(default)]
    pub v4ip: String,
    #[serde(default)]
    pub v6ip: String,
    #[serde(default)]
    pub mac_address: String,
    /// The VpcNatGateway holding the address.
    #[serde(default)]
    pub nat_gw_dp: String,
    #[serde(default)]
    pub qos_policy: String,
    #[serde(default)]
    pub external_subnet: String,
}

/// The state of an EIP.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
// Status fields written by newer controllers survive an older CRD.
#[schemars(extend("x-kubernetes-preserve-unknown-fields" = true))]
pub struct IptablesEipStatus {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    #[serde(default)]
    pub ready: bool,
    #[serde(default)]
    pub ip: String,
    /// Which rules use it (`fip`, `dnat`, `snat`).
    #[serde(default)]
    pub nat: String,
    #[serde(default)]
    pub redo: String,
    #[serde(default)]
    pub qos_policy: String,
}

/// A one-to-one NAT between an EIP and an internal address.
#[derive(CustomResource, Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "kubeovn.io",
    version = "v1",
    kind = "IptablesFIPRule",
    plural = "iptables-fip-rules",
    singular = "iptables-fip-rule",
    shortname = "fip",
    status = "IptablesFipRuleStatus",
    derive = "Default",
    derive = "PartialEq",
    doc = "A floating IP: all traffic of an EIP to one internal address and back.",
    printcolumn(name = "Eip", type_ = "string", json_path = ".spec.eip"),
    printcolumn(name = "V4ip", type_ = "string", json_path = ".status.v4ip"),
    printcolumn(name = "InternalIp", type_ = "string", json_path = ".spec.internalIp"),
    printcolumn(name = "NatGwDp", type_ = "string", json_path = ".status.natGwDp"),
    printcolumn(name = "Ready", type_ = "boolean", json_path = ".status.ready")
)]
#[serde(rename_all = "camelCase")]
pub struct IptablesFipRuleSpec {
    #[serde(default)]
    pub eip: String,
    #[serde(default)]
    pub internal_ip: String,
}

/// The status part every NAT rule (FIP, DNAT, SNAT) shares.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NatRuleState {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    #[serde(default)]
    pub ready: bool,
    #[serde(default)]
    pub v4ip: String,
    #[serde(default)]
    pub v6ip: String,
    #[serde(default)]
    pub nat_gw_dp: String,
    #[serde(default)]
    pub redo: String,
}

/// The state of a floating IP rule.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
// Status fields written by newer controllers survive an older CRD.
#[schemars(extend("x-kubernetes-preserve-unknown-fields" = true))]
pub struct IptablesFipRuleStatus {
    /// What every NAT rule reports.
    #[serde(flatten)]
    pub rule: NatRuleState,
    #[serde(default)]
    pub internal_ip: String,
}

/// A port forward from an EIP to an internal address.
#[derive(CustomResource, Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "kubeovn.io",
    version = "v1",
    kind = "IptablesDnatRule",
    plural = "iptables-dnat-rules",
    singular = "iptables-dnat-rule",
    shortname = "dnat",
    status = "IptablesDnatRuleStatus",
    derive = "Default",
    derive = "PartialEq",
    doc = "A DNAT rule: one port of an EIP forwarded to an internal address and port.",
    printcolumn(name = "Eip", type_ = "string", json_path = ".spec.eip"),
    printcolumn(name = "Protocol", type_ = "string", json_path = ".spec.protocol"),
    printcolumn(name = "V4ip", type_ = "string", json_path = ".status.v4ip"),
    printcolumn(name = "InternalIp", type_ = "string", json_path = ".spec.internalIp"),
    printcolumn(
        name = "ExternalPort",
        type_ = "string",
        json_path = ".spec.externalPort"
    ),
    printcolumn(
        name = "InternalPort",
        type_ = "string",
        json_path = ".spec.internalPort"
    ),
    printcolumn(name = "NatGwDp", type_ = "string", json_path = ".status.natGwDp"),
    printcolumn(name = "Ready", type_ = "boolean", json_path = ".status.ready")
)]
#[serde(rename_all = "camelCase")]
pub struct IptablesDnatRuleSpec {
    #[serde(default)]
    pub eip: String,
    #[serde(default)]
    pub external_port: String,
    /// `tcp` or `udp`.
    #[serde(default)]
    pub protocol: String,
    #[serde(default)]
    pub internal_ip: String,
    #[serde(default)]
    pub internal_port: String,
}

/// The state of a DNAT rule.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
// Status fields written by newer controllers survive an older CRD.
#[schemars(extend("x-kubernetes-preserve-unknown-fields" = true))]
pub struct IptablesDnatRuleStatus {
    /// What every NAT rule reports.
    #[serde(flatten)]
    pub rule: NatRuleState,
    #[serde(default)]
    pub protocol: String,
    #[serde(default)]
    pub internal_ip: String,
    #[serde(default)]
    pub internal_port: String,
    #[serde(default)]
    pub external_port: String,
}

/// Source NAT of an internal CIDR behind an EIP.
#[derive(CustomResource, Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "kubeovn.io",
    version = "v1",
    kind = "IptablesSnatRule",
    plural = "iptables-snat-rules",
    singular = "iptables-snat-rule",
    shortname = "snat",
    status = "IptablesSnatRuleStatus",
    derive = "Default",
    derive = "PartialEq",
    doc = "An SNAT rule: traffic from an internal CIDR leaves with an EIP as source.",
    printcolumn(name = "Eip", type_ = "string", json_path = ".spec.eip"),
    printcolumn(name = "V4ip", type_ = "string", json_path = ".status.v4ip"),
    printcolumn(
        name = "InternalCIDR",
        type_ = "string",
        json_path = ".spec.internalCIDR"
    ),
    printcolumn(name = "NatGwDp", type_ = "string", json_path = ".status.natGwDp"),
    printcolumn(name = "Ready", type_ = "boolean", json_path = ".status.ready")
)]
#[serde(rename_all = "camelCase")]
pub struct IptablesSnatRuleSpec {
    #[serde(default)]
    pub eip: String,
    #[serde(rename = "internalCIDR", default)]
    pub internal_cidr: String,
}

/// The state of an SNAT rule.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
// Status fields written by newer controllers survive an older CRD.
#[schemars(extend("x-kubernetes-preserve-unknown-fields" = true))]
pub struct IptablesSnatRuleStatus {
    /// What every NAT rule reports.
    #[serde(flatten)]
    pub rule: NatRuleState,
    #[serde(rename = "internalCIDR", default)]
    pub internal_cidr: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_vpc_nat_gateway_reads() {
        let gw: VpcNatGateway = crate::api::seed::document(crate::api::seed::VPC_NAT_GATEWAY);
        assert_eq!(gw.spec.vpc, "vpc-secondary");
        assert_eq!(gw.spec.subnet, "subnet-secondary");
        assert_eq!(gw.spec.lan_ip, "10.100.0.254");
        assert!(gw.spec.external_subnets.is_empty());
    }

    #[test]
    fn rule_specs_use_kube_ovn_field_names() {
        let snat: IptablesSnatRuleSpec =
            serde_json::from_str(r#"{"eip":"e1","internalCIDR":"10.100.0.0/16"}"#).unwrap();
        assert_eq!(snat.internal_cidr, "10.100.0.0/16");
        let dnat: IptablesDnatRuleSpec = serde_json::from_str(
            r#"{"eip":"e1","externalPort":"8080","protocol":"tcp","internalIp":"10.100.0.5","internalPort":"80"}"#,
        )
        .unwrap();
        assert_eq!(
            (dnat.external_port.as_str(), dnat.internal_port.as_str()),
            ("8080", "80")
        );
        let fip: IptablesFipRuleSpec =
            serde_json::from_str(r#"{"eip":"e1","internalIp":"10.100.0.5"}"#).unwrap();
        assert_eq!(fip.internal_ip, "10.100.0.5");
        let eip: IptablesEipSpec =
            serde_json::from_str(r#"{"v4ip":"172.18.0.10","natGwDp":"gw","externalSubnet":"ext"}"#)
                .unwrap();
        assert_eq!(eip.nat_gw_dp, "gw");
    }

    #[test]
    fn rule_status_is_flat_as_kube_ovn_writes_it() {
        let status = IptablesSnatRuleStatus {
            rule: NatRuleState {
                ready: true,
                v4ip: "172.18.0.10".into(),
                nat_gw_dp: "gw".into(),
                ..Default::default()
            },
            internal_cidr: "10.100.0.0/16".into(),
        };
        let json = serde_json::to_value(&status).unwrap();
        assert_eq!(json["ready"], true);
        assert_eq!(json["v4ip"], "172.18.0.10");
        assert_eq!(json["natGwDp"], "gw");
        assert_eq!(json["internalCIDR"], "10.100.0.0/16");
        let back: IptablesSnatRuleStatus = serde_json::from_value(json).unwrap();
        assert_eq!(back, status);
    }
}
