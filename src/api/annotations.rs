//! Every pod annotation key kube-ovn reads or writes, and the `Provider` that
//! prefixes the per-attachment ones (`<provider>.kubernetes.io/<key>`).
//!
//! A provider is `<nad>.<nad-namespace>.ovn`; the second and later attachments of
//! the same NAD on one pod key on `<nad>.<nad-namespace>.ovn.<ifname>`.
//! Only key names and their parsing live here; values are read by the controllers.

use std::fmt;

use super::names::{check_dns1123_label, check_ifname};

/// Multus network selection: which NADs the pod attaches to.
pub const NETWORKS: &str = "k8s.v1.cni.cncf.io/networks";
/// Written by Multus after ADD: one entry per attached interface.
pub const NETWORK_STATUS: &str = "k8s.v1.cni.cncf.io/network-status";
/// The deprecated name older Multus wrote (the seed's troubleshooting grep).
pub const NETWORKS_STATUS_LEGACY: &str = "k8s.v1.cni.cncf.io/networks-status";
/// Replaces the cluster default network (eth0). We never write it.
pub const DEFAULT_NETWORK: &str = "v1.multus-cni.io/default-network";

/// Pod-wide ingress limit (Mbit/s) for every kube-ovn interface of the pod.
pub const POD_INGRESS_RATE: &str = "ovn.kubernetes.io/ingress_rate";
/// Pod-wide egress limit (Mbit/s) for every kube-ovn interface of the pod.
pub const POD_EGRESS_RATE: &str = "ovn.kubernetes.io/egress_rate";
/// Security groups of every kube-ovn attachment of the pod that does not name its own with
/// `<provider>.kubernetes.io/security_groups`.
pub const POD_SECURITY_GROUPS: &str = "ovn.kubernetes.io/security_groups";
/// On a VPC NAT gateway pod: the gateway's name.
pub const VPC_NAT_GW: &str = "ovn.kubernetes.io/vpc_nat_gw";
/// On a VPC NAT gateway pod: `"true"` once the gateway is initialised.
pub const VPC_NAT_GW_INIT: &str = "ovn.kubernetes.io/vpc_nat_gw_init";

/// The domain every per-provider key lives under.
const KEY_DOMAIN: &str = "kubernetes.io";
/// The last part of every NAD-derived provider.
const OVN_SUFFIX: &str = "ovn";

/// A per-provider annotation: `<provider>.kubernetes.io/<name>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProviderKey {
    /// Bare IPs, comma-separated for dual stack (user static request or controller result).
    IpAddress,
    /// The MAC (user request or controller result).
    MacAddress,
    /// The subnet's CIDR block (controller).
    Cidr,
    /// The subnet's gateway (controller).
    Gateway,
    /// The subnet name (user pin or controller result).
    LogicalSwitch,
    /// The subnet's VPC (controller).
    LogicalRouter,
    /// `"true"` once IPAM committed and the LSP exists (controller).
    Allocated,
    /// `"true"` after routes/port groups are in place (controller).
    Routed,
    /// `"true"`/`"false"`: whether this interface gets the default route (user).
    DefaultRoute,
    /// JSON `[{"dst":…,"gw":…}]` extra routes (user, NAT gateway controller).
    Routes,
    /// Ingress limit in Mbit/s for this interface (user).
    IngressRate,
    /// Egress limit in Mbit/s for this interface (user).
    EgressRate,
    /// Ingress burst in Mbit (user).
    IngressBurst,
    /// Egress burst in Mbit (user).
    EgressBurst,
    /// netem delay in ms for what the interface receives (user).
    Latency,
    /// netem delay variation in ms, with `Latency` (user).
    Jitter,
    /// netem queue limit in packets (user).
    Limit,
    /// netem loss in percent, 0..100 (user).
    Loss,
    /// `sg1,sg2` security groups (user).
    SecurityGroups,
    /// `"true"` fills the LSP's port_security (user).
    PortSecurity,
    /// IPPool name or IP list (user).
    IpPool,
    /// Address family to allocate (user).
    IpFamily,
    /// CIDRs routed in a NAT gateway pod (controller).
    VpcCidrs,
    /// The interface MTU: the subnet's `spec.mtu` (controller, when the subnet sets one).
    /// Not an upstream key: upstream's daemon reads the Subnet itself; ours watches only pods.
    Mtu,
}

impl ProviderKey {
    /// Every key, for reverse lookups.
    pub const ALL: [ProviderKey; 24] = [
        Self::IpAddress,
        Self::MacAddress,
        Self::Cidr,
        Self::Gateway,
        Self::LogicalSwitch,
        Self::LogicalRouter,
        Self::Allocated,
        Self::Routed,
        Self::DefaultRoute,
        Self::Routes,
        Self::IngressRate,
        Self::EgressRate,
        Self::IngressBurst,
        Self::EgressBurst,
        Self::Latency,
        Self::Jitter,
        Self::Limit,
        Self::Loss,
        Self::SecurityGroups,
        Self::PortSecurity,
        Self::IpPool,
        Self::IpFamily,
        Self::VpcCidrs,
        Self::Mtu,
    ];

    /// The part after `kubernetes.io/`.
    pub fn name(self) -> &'static str {
        match self {
            Self::IpAddress => "ip_address",
            Self::MacAddress => "mac_address",
            Self::Cidr => "cidr",
            Self::Gateway => "gateway",
            Self::LogicalSwitch => "logical_switch",
            Self::LogicalRouter => "logical_router",
            Self::Allocated => "allocated",
            Self::Routed => "routed",
            Self::DefaultRoute => "default_route",
            Self::Routes => "routes",
            Self::IngressRate => "ingress_rate",
            Self::EgressRate => "egress_rate",
            Self::IngressBurst => "ingress_burst",
            Self::EgressBurst => "egress_burst",
            Self::Latency => "latency",
            Self::Jitter => "jitter",
            Self::Limit => "limit",
            Self::Loss => "loss",
            Self::SecurityGroups => "security_groups",
            Self::PortSecurity => "port_security",
            Self::IpPool => "ip_pool",
            Self::IpFamily => "ip_family",
            Self::VpcCidrs => "vpc_cidrs",
            Self::Mtu => "mtu",
        }
    }

    fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.name() == name)
    }
}

/// `<provider>.kubernetes.io/<key>` for any provider string (also `ovn` or an
/// attachment key with an `.<ifname>` suffix).
pub fn provider_annotation(provider: &str, key: ProviderKey) -> String {
    format!("{provider}.{KEY_DOMAIN}/{}", key.name())
}

/// Splits `<provider>.kubernetes.io/<key>` into the provider string and the key;
/// `None` for any other annotation.
pub fn parse_provider_annotation(annotation: &str) -> Option<(&str, ProviderKey)> {
    let (prefix, name) = annotation.split_once('/')?;
    let provider = prefix.strip_suffix(KEY_DOMAIN)?.strip_suffix('.')?;
    if provider.is_empty() {
        return None;
    }
    Some((provider, ProviderKey::from_name(name)?))
}

/// Per-NIC static request keys (Kube-OVN #5848): no `.ovn` in the prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NicKey {
    /// `<nad>.<ns>.kubernetes.io/ip_address.<iface>`
    IpAddress,
    /// `<nad>.<ns>.kubernetes.io/mac_address.<iface>`
    MacAddress,
}

/// `<nad>.<ns>.kubernetes.io/{ip_address|mac_address}.<iface>`.
pub fn nic_annotation(nad: &str, namespace: &str, key: NicKey, iface: &str) -> String {
    let name = match key {
        NicKey::IpAddress => ProviderKey::IpAddress.name(),
        NicKey::MacAddress => ProviderKey::MacAddress.name(),
    };
    format!("{nad}.{namespace}.{KEY_DOMAIN}/{name}.{iface}")
}

/// Why a string is not a kube-ovn provider.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProviderError {
    /// Not `<nad>.<namespace>.ovn[.<ifname>]`.
    #[error("provider {0:?} is not of the form <nad>.<namespace>.ovn")]
    Form(String),
    /// Not `<nad>.<namespace>` (an IPAM-only provider).
    #[error("provider {0:?} is not of the form <nad>.<namespace>")]
    IpamForm(String),
    /// A part breaks the DNS-1123 label or interface-name rules.
    #[error("provider {provider:?}: {part} {value:?} {reason}")]
    Part {
        provider: String,
        part: &'static str,
        value: String,
        reason: String,
    },
}

impl ProviderError {
    /// The same error, naming `provider` as the string that was parsed.
    fn naming(self, provider: &str) -> Self {
        match self {
            ProviderError::Part {
                part,
                value,
                reason,
                ..
            } => ProviderError::Part {
                provider: provider.to_owned(),
                part,
                value,
                reason,
            },
            other => other,
        }
    }
}

/// The provider of a kube-ovn attachment: `<nad>.<namespace>.ovn`, optionally with
/// an `.<ifname>` suffix (the attachment key of a repeated NAD). An IPAM-only provider
/// (another plugin's NAD with `"ipam": {"type": "kube-ovn"}`, e.g. the NAT gateways'
/// macvlan network) is `<nad>.<namespace>`: addresses and annotations, no OVN port.
/// `parse` reads only the OVN form; `parse_ipam_only` the other.
///
/// NAD names must be DNS-1123 labels here (no dots), so the string form is
/// unambiguous; Multus's comma form requires the same.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Provider {
    nad: String,
    namespace: String,
    interface: Option<String>,
    text: String,
    ipam_only: bool,
}

impl Provider {
    /// The provider a NAD must declare: `<nad>.<namespace>.ovn`.
    pub fn for_nad(nad: &str, namespace: &str) -> Result<Self, ProviderError> {
        let text = format!("{nad}.{namespace}.{OVN_SUFFIX}");
        check_part(&text, "NAD name", nad, check_dns1123_label)?;
        check_part(&text, "namespace", namespace, check_dns1123_label)?;
        Ok(Self {
            nad: nad.to_owned(),
            namespace: namespace.to_owned(),
            interface: None,
            text,
            ipam_only: false,
        })
    }

    /// The provider of an IPAM-only NAD: `<nad>.<namespace>`.
    pub fn for_ipam_nad(nad: &str, namespace: &str) -> Result<Self, ProviderError> {
        let ovn = Self::for_nad(nad, namespace)?;
        Ok(Self {
            text: format!("{nad}.{namespace}"),
            ipam_only: true,
            ..ovn
        })
    }

    /// Parses an IPAM-only provider, `<nad>.<namespace>`.
    pub fn parse_ipam_only(value: &str) -> Result<Self, ProviderError> {
        let form = || ProviderError::IpamForm(value.to_owned());
        let (nad, namespace) = value.split_once('.').ok_or_else(form)?;
        if namespace.contains('.') {
            return Err(form());
        }
        Self::for_ipam_nad(nad, namespace).map_err(|e| e.naming(value))
    }

    /// Whether this is an IPAM-only provider (no OVN port, no logical switch).
    pub fn is_ipam_only(&self) -> bool {
        self.ipam_only
    }

    /// Parses `<nad>.<namespace>.ovn` or `<nad>.<namespace>.ovn.<ifname>`.
    pub fn parse(value: &str) -> Result<Self, ProviderError> {
        let form = || ProviderError::Form(value.to_owned());
        let mut parts = value.splitn(4, '.');
        let nad = parts.next().ok_or_else(form)?;
        let namespace = parts.next().ok_or_else(form)?;
        if parts.next() != Some(OVN_SUFFIX) {
            return Err(form());
        }
        let base = Self::for_nad(nad, namespace).map_err(|e| e.naming(value))?;
        match parts.next() {
            None => Ok(base),
            Some(ifname) => {
                check_part(value, "interface", ifname, check_ifname)?;
                Ok(base.with_interface(ifname))
            }
        }
    }

    /// The attachment key of a repeated NAD: `<nad>.<namespace>.ovn.<ifname>`.
    pub fn with_interface(&self, ifname: &str) -> Self {
        let base = self.base();
        Self {
            text: format!("{}.{ifname}", base.text),
            interface: Some(ifname.to_owned()),
            ..base
        }
    }

    /// The provider without an interface suffix (what Subnets and NAD configs name).
    pub fn base(&self) -> Self {
        let text = if self.ipam_only {
            format!("{}.{}", self.nad, self.namespace)
        } else {
            format!("{}.{}.{OVN_SUFFIX}", self.nad, self.namespace)
        };
        Self {
            nad: self.nad.clone(),
            namespace: self.namespace.clone(),
            interface: None,
            text,
            ipam_only: self.ipam_only,
        }
    }

    /// The NAD's name.
    pub fn nad(&self) -> &str {
        &self.nad
    }

    /// The NAD's namespace.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The interface suffix, for the second and later attachments of one NAD.
    pub fn interface(&self) -> Option<&str> {
        self.interface.as_deref()
    }

    /// The string form.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// `<provider>.kubernetes.io/<key>` for this provider (suffix included).
    pub fn annotation(&self, key: ProviderKey) -> String {
        provider_annotation(&self.text, key)
    }
}

impl fmt::Display for Provider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl std::str::FromStr for Provider {
    type Err = ProviderError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

fn check_part(
    provider: &str,
    part: &'static str,
    value: &str,
    check: fn(&str) -> Result<(), String>,
) -> Result<(), ProviderError> {
    check(value).map_err(|reason| ProviderError::Part {
        provider: provider.to_owned(),
        part,
        value: value.to_owned(),
        reason,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_provider_parses_and_names_its_keys() {
        let p = Provider::parse("kube-ovn-vpc-network.default.ovn").unwrap();
        assert_eq!(p.nad(), "kube-ovn-vpc-network");
        assert_eq!(p.namespace(), "default");
        assert_eq!(p.interface(), None);
        assert_eq!(
            p,
            Provider::for_nad("kube-ovn-vpc-network", "default").unwrap()
        );
        assert_eq!(
            p.annotation(ProviderKey::IpAddress),
            "kube-ovn-vpc-network.default.ovn.kubernetes.io/ip_address"
        );
        assert_eq!(
            p.annotation(ProviderKey::LogicalSwitch),
            "kube-ovn-vpc-network.default.ovn.kubernetes.io/logical_switch"
        );
    }

    #[test]
    fn repeated_nad_keys_on_the_interface_suffix() {
        let p = Provider::for_nad("net-a", "default")
            .unwrap()
            .with_interface("net2");
        assert_eq!(p.as_str(), "net-a.default.ovn.net2");
        assert_eq!(p.interface(), Some("net2"));
        assert_eq!(p.base().as_str(), "net-a.default.ovn");
        assert_eq!(
            p.annotation(ProviderKey::Allocated),
            "net-a.default.ovn.net2.kubernetes.io/allocated"
        );
        assert_eq!(Provider::parse("net-a.default.ovn.net2").unwrap(), p);
    }

    #[test]
    fn malformed_providers_are_rejected_with_the_reason() {
        for bad in [
            "ovn",
            "a.b",
            "a.b.c",
            "a.b.ovnx",
            "a..ovn",
            "a.b.ovn.",
            "a.b.ovn.x/y",
        ] {
            assert!(Provider::parse(bad).is_err(), "{bad}");
        }
        let err = Provider::parse("Net.default.ovn").unwrap_err();
        assert!(err.to_string().contains("NAD name \"Net\""), "{err}");
        let err = Provider::parse("a.b.ovn.abcdefghijklmnop").unwrap_err();
        assert!(err.to_string().contains("interface"), "{err}");
    }

    #[test]
    fn ipam_only_providers_have_no_ovn_part() {
        let p = Provider::parse_ipam_only("ovn-vpc-external-network.kube-system").unwrap();
        assert!(p.is_ipam_only());
        assert_eq!(p.nad(), "ovn-vpc-external-network");
        assert_eq!(p.namespace(), "kube-system");
        assert_eq!(
            p,
            Provider::for_ipam_nad("ovn-vpc-external-network", "kube-system").unwrap()
        );
        assert_eq!(
            p.annotation(ProviderKey::IpAddress),
            "ovn-vpc-external-network.kube-system.kubernetes.io/ip_address"
        );
        assert_eq!(p.base(), p);
        assert_eq!(p.with_interface("net2").base(), p);
        // Each parser reads its own form only.
        assert!(Provider::parse(p.as_str()).is_err());
        for bad in ["a", "a.b.ovn", "a.b.c", "A.b", "a."] {
            assert!(Provider::parse_ipam_only(bad).is_err(), "{bad}");
        }
        assert!(!Provider::parse("a.b.ovn").unwrap().is_ipam_only());
    }

    #[test]
    fn provider_annotations_round_trip() {
        for key in ProviderKey::ALL {
            let annotation = provider_annotation("n.ns.ovn.net2", key);
            assert_eq!(
                parse_provider_annotation(&annotation),
                Some(("n.ns.ovn.net2", key))
            );
        }
        assert_eq!(
            parse_provider_annotation(POD_INGRESS_RATE),
            Some(("ovn", ProviderKey::IngressRate))
        );
        assert_eq!(parse_provider_annotation(NETWORKS), None);
        assert_eq!(parse_provider_annotation("kubernetes.io/ip_address"), None);
        assert_eq!(parse_provider_annotation("x.kubernetes.io/unknown"), None);
    }

    #[test]
    fn per_nic_keys_have_no_ovn_part() {
        assert_eq!(
            nic_annotation("attachnet", "default", NicKey::IpAddress, "net2"),
            "attachnet.default.kubernetes.io/ip_address.net2"
        );
        assert_eq!(
            nic_annotation("attachnet", "default", NicKey::MacAddress, "net2"),
            "attachnet.default.kubernetes.io/mac_address.net2"
        );
    }

    #[test]
    fn pod_wide_qos_keys_are_the_seed_ones() {
        let seed = crate::api::seed::annotations(crate::api::seed::META_QOS);
        assert_eq!(seed[POD_INGRESS_RATE], "1000");
        assert_eq!(seed[POD_EGRESS_RATE], "1000");
        assert_eq!(
            POD_INGRESS_RATE,
            provider_annotation("ovn", ProviderKey::IngressRate)
        );
        assert_eq!(
            POD_EGRESS_RATE,
            provider_annotation("ovn", ProviderKey::EgressRate)
        );
    }
}
