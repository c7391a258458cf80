//! The `Subnet` CRD (`kubeovn.io/v1`, cluster-scoped, short name `subnet`): one OVN
//! Logical_Switch on its VPC's router, with its IPAM range. Field names are
//! Kube-OVN's; `spec.cidr` is accepted as an alias of `cidrBlock` because the
//! seed's manifests write it, and `SubnetSpec::cidr_block` is the one reader.

// kube-derive attributes repeat keys (`printcolumn(type_ = …)`) by design.
#![allow(clippy::duplicated_attributes)]

use ipnet::IpNet;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::condition::Condition;

/// What the user asks of a subnet.
#[derive(CustomResource, Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "kubeovn.io",
    version = "v1",
    kind = "Subnet",
    plural = "subnets",
    shortname = "subnet",
    status = "SubnetStatus",
    derive = "Default",
    derive = "PartialEq",
    doc = "A subnet: an OVN logical switch on its VPC's router and the address range pods get addresses from.",
    printcolumn(name = "Provider", type_ = "string", json_path = ".spec.provider"),
    printcolumn(name = "Vpc", type_ = "string", json_path = ".spec.vpc"),
    printcolumn(name = "Protocol", type_ = "string", json_path = ".spec.protocol"),
    printcolumn(
        name = "CIDR",
        type_ = "string",
        json_path = ".status.cidrBlock",
        description = "The effective CIDR (spec.cidrBlock, or its alias spec.cidr)"
    ),
    printcolumn(name = "V4Used", type_ = "integer", json_path = ".status.v4usingIPs"),
    printcolumn(
        name = "V4Available",
        type_ = "integer",
        json_path = ".status.v4availableIPs"
    ),
    printcolumn(name = "V6Used", type_ = "integer", json_path = ".status.v6usingIPs"),
    printcolumn(
        name = "V6Available",
        type_ = "integer",
        json_path = ".status.v6availableIPs"
    ),
    printcolumn(
        name = "ExcludeIPs",
        type_ = "string",
        json_path = ".spec.excludeIps",
        priority = 1
    )
)]
#[serde(rename_all = "camelCase")]
pub struct SubnetSpec {
    /// The VPC (Logical_Router) this subnet hangs off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vpc: Option<String>,
    /// `v4cidr`, `v6cidr` or `v4cidr,v6cidr`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cidr_block: Option<String>,
    /// Alias of `cidrBlock` (the seed's manifests use it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cidr: Option<String>,
    /// Gateway address(es); defaults to the first address of each CIDR.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
    /// Addresses never handed out: single IPs or `a..b` ranges.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude_ips: Vec<String>,
    /// `<nad>.<ns>.ovn` for a secondary network.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    /// `IPv4`, `IPv6` or `Dual`; derived from the CIDR when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
    /// Namespaces bound to this subnet.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub namespaces: Vec<String>,
    /// Skip the CNI's gateway reachability check.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disable_gateway_check: Option<bool>,
    /// Pod interface MTU on this subnet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    /// Upstream's node SNAT for the default VPC; not available here (`Unsupported`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nat_outgoing: Option<bool>,
    /// Only `allowSubnets` may reach a private subnet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub private: Option<bool>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow_subnets: Vec<String>,
    #[serde(
        rename = "enableDHCP",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub enable_dhcp: Option<bool>,
    /// OVN DHCPv4 options, `key=value` pairs separated by `,` (a `dns_server` list uses `;`);
    /// Kube-OVN's defaults fill `lease_time`, `router`, `server_id`, `server_mac` and `mtu`.
    #[serde(
        rename = "dhcpV4Options",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub dhcp_v4_options: Option<String>,
    /// OVN DHCPv6 options in the same form; `server_id` defaults to the gateway MAC.
    #[serde(
        rename = "dhcpV6Options",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub dhcp_v6_options: Option<String>,
    #[serde(
        rename = "enableIPv6RA",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub enable_ipv6_ra: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<bool>,
    /// `distributed` or `centralized` (Kube-OVN overlay gateways; unused here).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway_node: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vlan: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub vips: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub acls: Vec<SubnetAcl>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logical_gateway: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route_table: Option<String>,
    /// Upstream's underlay-to-overlay interconnection (underlay subnets only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub u2o_interconnection: Option<bool>,
    #[serde(
        rename = "u2oInterconnectionIP",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub u2o_interconnection_ip: Option<String>,
    /// Upstream's default-VPC egress through an external gateway.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_egress_gateway: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy_routing_priority: Option<u32>,
    #[serde(
        rename = "policyRoutingTableID",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub policy_routing_table_id: Option<u32>,
    /// Upstream's Service load balancers on the subnet's switch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enable_lb: Option<bool>,
    /// Upstream's ECMP over centralized gateway nodes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enable_ecmp: Option<bool>,
}

/// An ACL applied to the subnet's logical switch.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SubnetAcl {
    /// `from-lport` or `to-lport`.
    #[serde(default)]
    pub direction: String,
    #[serde(default)]
    pub priority: i32,
    #[serde(default)]
    pub r#match: String,
    /// `allow-related`, `allow`, `drop`, `reject`.
    #[serde(default)]
    pub action: String,
}

/// What the Subnet controller observed.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
// Status fields written by newer controllers survive an older CRD.
#[schemars(extend("x-kubernetes-preserve-unknown-fields" = true))]
pub struct SubnetStatus {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The CIDR in effect (`cidrBlock` or `cidr`), for the CIDR column.
    #[serde(rename = "cidrBlock", default, skip_serializing_if = "Option::is_none")]
    pub cidr_block: Option<String>,
    /// IPv4 addresses in use / still free.
    #[serde(rename = "v4usingIPs", default)]
    pub v4_using_ips: i64,
    #[serde(rename = "v4availableIPs", default)]
    pub v4_available_ips: i64,
    #[serde(rename = "v6usingIPs", default)]
    pub v6_using_ips: i64,
    /// Saturates at 9223372036854775807 for IPv6 subnets larger than /65.
    #[serde(rename = "v6availableIPs", default)]
    pub v6_available_ips: i64,
    /// Compact `a-b,c` forms of the used/free ranges.
    #[serde(
        rename = "v4usingIPrange",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub v4_using_ip_range: Option<String>,
    #[serde(
        rename = "v4availableIPrange",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub v4_available_ip_range: Option<String>,
    #[serde(
        rename = "v6usingIPrange",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub v6_using_ip_range: Option<String>,
    #[serde(
        rename = "v6availableIPrange",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub v6_available_ip_range: Option<String>,
    #[serde(
        rename = "observedGeneration",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub observed_generation: Option<i64>,
}

/// Why a subnet's CIDR cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubnetCidrError {
    #[error("subnet {subnet:?}: spec.cidrBlock (or spec.cidr) is required")]
    Missing { subnet: String },
    #[error(
        "subnet {subnet:?}: spec.cidrBlock {cidr_block:?} and spec.cidr {cidr:?} differ; set one"
    )]
    Conflict {
        subnet: String,
        cidr_block: String,
        cidr: String,
    },
    #[error("subnet {subnet:?}: {value:?} is not a CIDR")]
    Invalid { subnet: String, value: String },
    #[error(
        "subnet {subnet:?}: CIDR {given} has host bits set; write {network} (or a longer prefix) instead"
    )]
    HostBits {
        subnet: String,
        given: String,
        network: String,
    },
    #[error("subnet {subnet:?}: more than one {family} CIDR in {value:?}")]
    SameFamily {
        subnet: String,
        family: &'static str,
        value: String,
    },
}

impl SubnetSpec {
    /// The CIDR block: `cidrBlock` or its alias `cidr`, whichever is set; both set
    /// must agree. `subnet` names the object in errors.
    pub fn cidr_block(&self, subnet: &str) -> Result<&str, SubnetCidrError> {
        match (non_empty(&self.cidr_block), non_empty(&self.cidr)) {
            (None, None) => Err(SubnetCidrError::Missing {
                subnet: subnet.to_owned(),
            }),
            (Some(block), None) => Ok(block),
            (None, Some(cidr)) => Ok(cidr),
            (Some(block), Some(cidr)) if same_cidrs(block, cidr) => Ok(block),
            (Some(block), Some(cidr)) => Err(SubnetCidrError::Conflict {
                subnet: subnet.to_owned(),
                cidr_block: block.to_owned(),
                cidr: cidr.to_owned(),
            }),
        }
    }

    /// The CIDRs (one per family, at most one of each). A CIDR with host bits set
    /// (`10.0.0.5/24`) is refused, not truncated: the user may have meant another prefix.
    pub fn cidrs(&self, subnet: &str) -> Result<Vec<IpNet>, SubnetCidrError> {
        let value = self.cidr_block(subnet)?;
        let nets = parse_cidr_list(value).ok_or_else(|| SubnetCidrError::Invalid {
            subnet: subnet.to_owned(),
            value: value.to_owned(),
        })?;
        if let Some(net) = nets.iter().find(|n| n.trunc() != **n) {
            return Err(SubnetCidrError::HostBits {
                subnet: subnet.to_owned(),
                given: net.to_string(),
                network: net.trunc().to_string(),
            });
        }
        for (family, v4) in [("IPv4", true), ("IPv6", false)] {
            if nets
                .iter()
                .filter(|n| matches!(n, IpNet::V4(_)) == v4)
                .count()
                > 1
            {
                return Err(SubnetCidrError::SameFamily {
                    subnet: subnet.to_owned(),
                    family,
                    value: value.to_owned(),
                });
            }
        }
        Ok(nets)
    }
}

impl SubnetSpec {
    /// `spec.mtu` if it is one an interface of these `cidrs` can take: within
    /// [`MTU_RANGE`](crate::api::allocation::MTU_RANGE), and at least 1280 (IPv6's
    /// minimum) when the subnet has IPv6. `Err` says what is wrong.
    pub fn checked_mtu(&self, subnet: &str, cidrs: &[IpNet]) -> Result<Option<u32>, String> {
        let Some(mtu) = self.mtu else {
            return Ok(None);
        };
        let range = crate::api::allocation::MTU_RANGE;
        let ipv6 = cidrs.iter().any(|c| matches!(c, IpNet::V6(_)));
        if !range.contains(&mtu) {
            return Err(format!(
                "subnet {subnet:?}: spec.mtu {mtu} is outside {}..{}",
                range.start(),
                range.end()
            ));
        }
        if ipv6 && mtu < 1280 {
            return Err(format!(
                "subnet {subnet:?}: spec.mtu {mtu} is below 1280, the least IPv6 allows"
            ));
        }
        Ok(Some(mtu))
    }
}

fn non_empty(value: &Option<String>) -> Option<&str> {
    value.as_deref().map(str::trim).filter(|v| !v.is_empty())
}

fn parse_cidr_list(value: &str) -> Option<Vec<IpNet>> {
    value
        .split(',')
        .map(|part| part.trim().parse::<IpNet>().ok())
        .collect()
}

fn same_cidrs(a: &str, b: &str) -> bool {
    a == b || matches!((parse_cidr_list(a), parse_cidr_list(b)), (Some(x), Some(y)) if x == y)
}

impl Subnet {
    /// This subnet's provider, `ovn` when unset (Kube-OVN's default).
    pub fn provider(&self) -> &str {
        self.spec
            .provider
            .as_deref()
            .filter(|p| !p.is_empty())
            .unwrap_or("ovn")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(cidr_block: Option<&str>, cidr: Option<&str>) -> SubnetSpec {
        SubnetSpec {
            cidr_block: cidr_block.map(Into::into),
            cidr: cidr.map(Into::into),
            ..Default::default()
        }
    }

    #[test]
    fn seed_subnet_reads_through_the_cidr_alias() {
        let subnet = crate::api::seed::documents::<serde_yaml::Value>(crate::api::seed::VPC_SUBNET)
            .into_iter()
            .find(|d| d["kind"] == "Subnet")
            .map(|d| serde_yaml::from_value::<Subnet>(d).unwrap())
            .unwrap();
        assert_eq!(
            subnet.spec.cidr_block("subnet-secondary"),
            Ok("10.100.0.0/16")
        );
        assert_eq!(subnet.spec.gateway.as_deref(), Some("10.100.0.1"));
        assert_eq!(subnet.spec.vpc.as_deref(), Some("vpc-secondary"));
        assert_eq!(subnet.provider(), "kube-ovn-vpc-network.default.ovn");
        assert_eq!(
            subnet.spec.cidrs("subnet-secondary").unwrap(),
            ["10.100.0.0/16".parse::<IpNet>().unwrap()]
        );
    }

    #[test]
    fn cidr_block_wins_and_conflicts_are_errors() {
        assert_eq!(
            spec(Some("10.0.0.0/24"), None).cidr_block("s"),
            Ok("10.0.0.0/24")
        );
        assert_eq!(
            spec(Some("10.0.0.0/24"), Some("10.0.0.0/24")).cidr_block("s"),
            Ok("10.0.0.0/24")
        );
        assert_eq!(
            spec(
                Some("10.0.0.0/24,fd00::/64"),
                Some("10.0.0.0/24, fd00::0/64")
            )
            .cidr_block("s"),
            Ok("10.0.0.0/24,fd00::/64")
        );
        let err = spec(Some("10.0.0.0/24"), Some("10.1.0.0/24"))
            .cidr_block("s")
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "subnet \"s\": spec.cidrBlock \"10.0.0.0/24\" and spec.cidr \"10.1.0.0/24\" differ; set one"
        );
        let err = spec(None, Some("  ")).cidr_block("s").unwrap_err();
        assert!(matches!(err, SubnetCidrError::Missing { .. }), "{err}");
    }

    #[test]
    fn dual_stack_and_bad_cidrs() {
        let nets = spec(Some("10.0.0.0/24,fd00::/64"), None)
            .cidrs("s")
            .unwrap();
        assert_eq!(nets[0].to_string(), "10.0.0.0/24");
        assert_eq!(nets[1].to_string(), "fd00::/64");
        for (value, given, network) in [
            ("10.0.0.5/24", "10.0.0.5/24", "10.0.0.0/24"),
            ("10.0.0.0/24,fd00::1/64", "fd00::1/64", "fd00::/64"),
        ] {
            let err = spec(Some(value), None).cidrs("s").unwrap_err();
            assert_eq!(
                err,
                SubnetCidrError::HostBits {
                    subnet: "s".into(),
                    given: given.into(),
                    network: network.into()
                }
            );
            assert_eq!(
                err.to_string(),
                format!("subnet \"s\": CIDR {given} has host bits set; write {network} (or a longer prefix) instead")
            );
        }
        let err = spec(Some("10.0.0.0/33"), None).cidrs("s").unwrap_err();
        assert!(matches!(err, SubnetCidrError::Invalid { .. }), "{err}");
        let err = spec(Some("10.0.0.0/24,10.1.0.0/24"), None)
            .cidrs("s")
            .unwrap_err();
        assert!(err.to_string().contains("more than one IPv4"), "{err}");
    }

    #[test]
    fn default_provider_is_ovn() {
        assert_eq!(Subnet::new("s", SubnetSpec::default()).provider(), "ovn");
    }

    #[test]
    fn status_uses_kube_ovn_counter_names() {
        let status = SubnetStatus {
            v4_using_ips: 2,
            v4_available_ips: 65531,
            cidr_block: Some("10.100.0.0/16".into()),
            ..Default::default()
        };
        let json = serde_json::to_value(&status).unwrap();
        assert_eq!(json["v4usingIPs"], 2);
        assert_eq!(json["v4availableIPs"], 65531);
        assert_eq!(json["cidrBlock"], "10.100.0.0/16");
    }
}
