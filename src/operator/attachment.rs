//! Attachment planning for the pod controller (../shared/ARCHITECTURE.md, "A secondary
//! interface", steps 2–3 and the request half of step 4): from a pod's
//! annotations, the NADs it names and the Subnets, decide for every kube-ovn
//! network which provider, subnet, VPC, interface, static addresses, MAC and
//! default route it gets — or why it cannot. Pure: no client, no IPAM; the
//! controller feeds it reflector state and turns errors into pod Events.
//!
//! Decisions (also in the report to the lead):
//! - The NAD config's `provider` must equal `<nad>.<nad-namespace>.ovn`.
//! - Subnet: `<key>.kubernetes.io/logical_switch` (the attachment key, then the
//!   base provider's key) names it; that subnet must exist and carry the
//!   attachment's provider (a pin onto another provider's subnet is an error,
//!   never a silent cross-wiring). Without the annotation, exactly one Subnet
//!   with that provider must exist.
//! - Static IPs, first found wins: the element's `ips`, the per-NIC
//!   `<nad>.<ns>.kubernetes.io/ip_address.<iface>`, then
//!   `<key>.kubernetes.io/ip_address` (which is also where the controller records
//!   the allocation, so re-planning an allocated pod is stable). Each address must
//!   lie in the subnet; a CIDR-form request's prefix must equal the subnet's; at
//!   most one per family. Gateway, excluded and taken addresses are IPAM's checks.
//! - MAC: element `mac`, per-NIC `mac_address.<iface>`, `<key>.kubernetes.io/mac_address`.
//! - Default route: element `default-route` gateways, else
//!   `<key>.kubernetes.io/default_route: "true"`.
//! - Pool: `<key>.kubernetes.io/ip_pool` (then the base provider's key), as Kube-OVN reads
//!   it: an IPPool's name (dynamic addresses from the pool; the pool's subnet is the
//!   attachment's when no `logical_switch` pins one, and must be it when one does; a pool
//!   with `namespaces` serves only pods of those), or a list of addresses (`;`-separated
//!   entries of one address per family, or `,`-separated single addresses; two of different
//!   families are one dual-stack entry): a StatefulSet pod takes the entry of its ordinal,
//!   any other pod the first free one (`pod/`). A static request wins over the pool.
//! - Claim: the element's `ipam-claim-reference` names an IPAMClaim; the address is the
//!   claim's (IPAM key `<ns>/claim:<claim>/<key>`, kept until the claim goes), so a pod
//!   re-created with the same claim (a KubeVirt VM's next launcher pod) gets it back.
//! - Another plugin's NAD whose `ipam` is kube-ovn (the NAT gateways' macvlan external
//!   network) is IPAM-only: provider `<nad>.<nad-namespace>` (its `ipam.provider` must say
//!   so), a subnet with that provider, the same annotations and IP CR, and no OVN port.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;

use crate::api::annotations::{nic_annotation, NicKey, Provider, ProviderKey, NETWORKS};
use crate::api::attachment_id::AttachmentId;
use crate::api::mac::MacAddr;
use crate::api::nad::{parse_kube_ovn_config, parse_kube_ovn_ipam, NadConfigError};
use crate::api::selection::{parse_networks, IpRequest, NetworkSelection, SelectionError};
use crate::api::subnet::{Subnet, SubnetCidrError};

/// The pod as the planner sees it.
#[derive(Debug, Clone, Copy)]
pub struct PodAttachmentInput<'a> {
    pub name: &'a str,
    pub namespace: &'a str,
    pub annotations: &'a BTreeMap<String, String>,
}

/// One subnet as the planner needs it.
#[derive(Debug, Clone, PartialEq)]
pub struct SubnetEntry {
    pub name: String,
    /// `spec.provider`, `ovn` when unset.
    pub provider: String,
    pub vpc: Option<String>,
    /// The CIDRs, or why the subnet has none usable.
    pub cidrs: Result<Vec<IpNet>, SubnetCidrError>,
    /// `spec.mtu` when valid (the Subnet controller reports an invalid one).
    pub mtu: Option<u32>,
}

/// One IPPool as the planner needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolEntry {
    pub subnet: String,
    /// Empty: any namespace.
    pub namespaces: Vec<String>,
}

/// Subnets by name and by provider, and the IPPools; build it once per batch of pods.
#[derive(Debug, Clone, Default)]
pub struct SubnetIndex {
    by_name: HashMap<String, SubnetEntry>,
    by_provider: HashMap<String, Vec<String>>,
    pools: HashMap<String, PoolEntry>,
}

impl SubnetIndex {
    /// Indexes `subnets` (unnamed objects are ignored).
    pub fn new<'a>(subnets: impl IntoIterator<Item = &'a Subnet>) -> Self {
        let mut index = Self::default();
        for subnet in subnets {
            let Some(name) = subnet.metadata.name.clone() else {
                continue;
            };
            let cidrs = subnet.spec.cidrs(&name);
            let mtu = match &cidrs {
                Ok(c) => subnet.spec.checked_mtu(&name, c).ok().flatten(),
                Err(_) => None,
            };
            let entry = SubnetEntry {
                provider: subnet.provider().to_owned(),
                vpc: subnet.spec.vpc.clone().filter(|v| !v.is_empty()),
                cidrs,
                mtu,
                name: name.clone(),
            };
            index
                .by_provider
                .entry(entry.provider.clone())
                .or_default()
                .push(name.clone());
            index.by_name.insert(name, entry);
        }
        for names in index.by_provider.values_mut() {
            names.sort();
        }
        index
    }

    /// The same index knowing the IPPools `pools` (unnamed objects are ignored).
    pub fn with_pools<'a>(
        mut self,
        pools: impl IntoIterator<Item = &'a crate::api::ippool::IPPool>,
    ) -> Self {
        for pool in pools {
            let Some(name) = pool.metadata.name.clone() else {
                continue;
            };
            self.pools.insert(
                name,
                PoolEntry {
                    subnet: pool.spec.subnet.clone(),
                    namespaces: pool.spec.namespaces.clone(),
                },
            );
        }
        self
    }

    /// The subnet called `name`.
    pub fn get(&self, name: &str) -> Option<&SubnetEntry> {
        self.by_name.get(name)
    }

    /// Names of the subnets whose provider is `provider`, sorted.
    pub fn for_provider(&self, provider: &str) -> &[String] {
        self.by_provider.get(provider).map_or(&[], Vec::as_slice)
    }
}

/// Where a static address or MAC request came from (for messages).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestSource {
    /// The element's `ips` / `mac` in `k8s.v1.cni.cncf.io/networks`.
    NetworkElement,
    /// A pod annotation, by key.
    Annotation(String),
}

impl fmt::Display for RequestSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NetworkElement => write!(f, "annotation {NETWORKS}"),
            Self::Annotation(key) => write!(f, "annotation {key}"),
        }
    }
}

/// Everything the controller needs to allocate and wire one attachment.
#[derive(Debug, Clone, PartialEq)]
pub struct AttachmentPlan {
    /// `ns/name` of the NAD.
    pub network: String,
    /// `<nad>.<ns>.ovn`: what the Subnet and the NAD config name.
    pub provider: Provider,
    /// The provider, or `<provider>.<ifname>` for the second and later
    /// attachments of one NAD: prefix of this attachment's annotations.
    pub key: Provider,
    /// Logical_Switch_Port and IP CR name: `<pod>.<ns>.<key>`.
    pub lsp_name: String,
    pub subnet: String,
    /// The subnet's VPC (Logical_Router), if it names one.
    pub vpc: Option<String>,
    /// The subnet's CIDRs (one per family).
    pub cidrs: Vec<IpNet>,
    /// The subnet's `spec.mtu`, if set.
    pub mtu: Option<u32>,
    /// Interface name in the pod.
    pub interface: String,
    /// Requested static addresses, as written (empty: allocate dynamically). IPAM checks
    /// them against the subnet.
    pub ips: Vec<IpRequest>,
    pub ips_source: Option<RequestSource>,
    pub mac: Option<MacAddr>,
    pub mac_source: Option<RequestSource>,
    /// `<key>.kubernetes.io/ip_pool`, parsed, with the annotation it came from.
    pub pool: Option<(PoolRequest, String)>,
    /// The element's `ipam-claim-reference`: an IPAMClaim of the pod's namespace that owns
    /// the address (it outlives the pod).
    pub claim: Option<String>,
    /// Whether this interface gets the pod's default route.
    pub default_route: bool,
    /// Gateways from the element's `default-route` (empty: the subnet gateway).
    pub default_route_gateways: Vec<IpAddr>,
}

impl AttachmentPlan {
    /// `<key>.kubernetes.io/<key>` for this attachment.
    pub fn annotation(&self, key: ProviderKey) -> String {
        self.key.annotation(key)
    }
}

/// What `<key>.kubernetes.io/ip_pool` asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PoolRequest {
    /// An IPPool by name: dynamic addresses from its range.
    Named(String),
    /// Kube-OVN's address list: each entry holds one address per family.
    Addresses(Vec<Vec<IpRequest>>),
}

impl PoolRequest {
    /// Parses an `ip_pool` value as Kube-OVN does (`pkg/controller/pod.go`): `;` separates
    /// entries (each may be `v4,v6`); else `,` separates single addresses, except that
    /// exactly two of different families are one dual-stack entry; a single token that is no
    /// address is an IPPool name.
    pub fn parse(value: &str) -> Result<Self, String> {
        let value = value.trim();
        let parse_entry = |entry: &str| {
            entry
                .split(',')
                .map(|a| a.parse::<IpRequest>())
                .collect::<Result<Vec<_>, _>>()
        };
        if value.contains(';') {
            return value
                .split(';')
                .map(str::trim)
                .filter(|e| !e.is_empty())
                .map(parse_entry)
                .collect::<Result<Vec<_>, _>>()
                .map(Self::Addresses);
        }
        let parts: Vec<&str> = value.split(',').map(str::trim).collect();
        if let [only] = parts.as_slice() {
            if only.parse::<IpRequest>().is_err() {
                let is_name = only
                    .split('.')
                    .all(|l| crate::api::names::check_dns1123_label(l).is_ok());
                return if is_name {
                    Ok(Self::Named((*only).to_owned()))
                } else {
                    Err(format!(
                        "{only:?} is neither an IP address nor an IPPool name"
                    ))
                };
            }
        }
        let addresses = parts
            .iter()
            .map(|a| a.parse::<IpRequest>())
            .collect::<Result<Vec<_>, _>>()?;
        match addresses.as_slice() {
            [a, b] if a.address.is_ipv4() != b.address.is_ipv4() => {
                Ok(Self::Addresses(vec![addresses]))
            }
            _ => Ok(Self::Addresses(
                addresses.into_iter().map(|a| vec![a]).collect(),
            )),
        }
    }
}

/// A network of the pod that belongs to another CNI plugin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkippedNetwork {
    pub network: String,
    pub interface: String,
    /// The NAD's CNI `type` as found.
    pub cni_type: String,
}

/// Why one network of a pod cannot be attached. Messages name the NAD, subnet
/// and address so they can go straight into a pod Event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AttachmentError {
    #[error(transparent)]
    Selection(#[from] SelectionError),
    /// Retry when the NAD appears.
    #[error("network {network}: NetworkAttachmentDefinition {network} not found")]
    NadNotFound { network: String },
    #[error("network {network}: {source}")]
    NadConfig {
        network: String,
        source: NadConfigError,
    },
    #[error("network {network}: NAD provider {configured:?} must be {expected:?} ({form})")]
    ProviderMismatch {
        network: String,
        configured: String,
        expected: String,
        /// `<nad>.<namespace>.ovn`, or `<nad>.<namespace>` for an IPAM-only NAD.
        form: &'static str,
    },
    #[error("network {network}: {reason}")]
    InvalidProvider { network: String, reason: String },
    #[error("network {network}: provider {provider} is not bound to any subnet")]
    NoSubnet { network: String, provider: String },
    #[error("network {network}: provider {provider} is bound to several subnets ({}); pick one with annotation {annotation}", subnets.join(", "))]
    AmbiguousSubnet {
        network: String,
        provider: String,
        subnets: Vec<String>,
        annotation: String,
    },
    #[error(
        "network {network}: subnet {subnet:?} named by annotation {annotation} does not exist"
    )]
    SubnetNotFound {
        network: String,
        subnet: String,
        annotation: String,
    },
    #[error("network {network}: subnet {subnet:?} named by annotation {annotation} belongs to provider {subnet_provider}, not {provider}")]
    SubnetProviderMismatch {
        network: String,
        subnet: String,
        annotation: String,
        subnet_provider: String,
        provider: String,
    },
    #[error("network {network}: {source}")]
    SubnetCidr {
        network: String,
        source: SubnetCidrError,
    },
    #[error("network {network}: {origin}: {value:?} is not an IP address list")]
    InvalidStaticIp {
        network: String,
        origin: RequestSource,
        value: String,
    },
    #[error("network {network}: {origin}: {value:?} is not a usable MAC address")]
    InvalidMac {
        network: String,
        origin: RequestSource,
        value: String,
    },
    #[error("network {network}: annotation {annotation}: {reason}")]
    InvalidIpPool {
        network: String,
        annotation: String,
        reason: String,
    },
    /// Retry when the pool appears.
    #[error("network {network}: IPPool {pool:?} named by annotation {annotation} does not exist")]
    IpPoolNotFound {
        network: String,
        pool: String,
        annotation: String,
    },
    #[error("network {network}: IPPool {pool:?} (annotation {annotation}): {reason}")]
    IpPoolUnusable {
        network: String,
        pool: String,
        annotation: String,
        reason: String,
    },
}

impl AttachmentError {
    /// The Event reason (one CamelCase word) and metric label.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Selection(_) => "InvalidNetworksAnnotation",
            Self::NadNotFound { .. } => "NetworkAttachmentDefinitionNotFound",
            Self::NadConfig { source, .. } => source.reason(),
            Self::ProviderMismatch { .. } | Self::InvalidProvider { .. } => "ProviderMismatch",
            Self::NoSubnet { .. } => "NoSubnetForProvider",
            Self::AmbiguousSubnet { .. } => "AmbiguousSubnet",
            Self::SubnetNotFound { .. } => "SubnetNotFound",
            Self::SubnetProviderMismatch { .. } => "SubnetProviderMismatch",
            Self::SubnetCidr { .. } => "InvalidSubnet",
            Self::InvalidStaticIp { .. } => "InvalidStaticIP",
            Self::InvalidMac { .. } => "InvalidMAC",
            Self::InvalidIpPool { .. } => "InvalidIPPool",
            Self::IpPoolNotFound { .. } => "IPPoolNotFound",
            Self::IpPoolUnusable { .. } => "IPPoolUnusable",
        }
    }

    /// The `ns/name` of the NAD the error is about (none for annotation errors).
    pub fn network(&self) -> Option<&str> {
        match self {
            Self::Selection(_) => None,
            Self::NadNotFound { network }
            | Self::NadConfig { network, .. }
            | Self::ProviderMismatch { network, .. }
            | Self::InvalidProvider { network, .. }
            | Self::NoSubnet { network, .. }
            | Self::AmbiguousSubnet { network, .. }
            | Self::SubnetNotFound { network, .. }
            | Self::SubnetProviderMismatch { network, .. }
            | Self::SubnetCidr { network, .. }
            | Self::InvalidStaticIp { network, .. }
            | Self::InvalidMac { network, .. }
            | Self::InvalidIpPool { network, .. }
            | Self::IpPoolNotFound { network, .. }
            | Self::IpPoolUnusable { network, .. } => Some(network),
        }
    }
}

/// The outcome for one pod.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PodAttachments {
    /// The kube-ovn attachments that can be allocated, in annotation order.
    pub plans: Vec<AttachmentPlan>,
    /// Networks of other plugins.
    pub skipped: Vec<SkippedNetwork>,
    /// Networks that cannot be attached.
    pub errors: Vec<AttachmentError>,
}

impl PodAttachments {
    /// All plans, or every error. Multus fails the pod's sandbox when any of its
    /// networks fails, so allocating for the rest would only hold addresses.
    pub fn into_result(self) -> Result<Vec<AttachmentPlan>, Vec<AttachmentError>> {
        if self.errors.is_empty() {
            Ok(self.plans)
        } else {
            Err(self.errors)
        }
    }

    /// Whether some error will go away by itself once a missing NAD appears.
    pub fn waits_for_nad(&self) -> bool {
        self.errors
            .iter()
            .any(|e| matches!(e, AttachmentError::NadNotFound { .. }))
    }
}

/// Plans every kube-ovn attachment of `pod`. `nad_config(namespace, name)` returns
/// the NAD's `spec.config`, or `None` when the NAD does not exist.
pub fn plan_pod_attachments<F>(
    pod: PodAttachmentInput<'_>,
    nad_config: F,
    subnets: &SubnetIndex,
) -> PodAttachments
where
    F: Fn(&str, &str) -> Option<String>,
{
    let mut out = PodAttachments::default();
    let Some(value) = pod.annotations.get(NETWORKS) else {
        return out;
    };
    let selections = match parse_networks(value, pod.namespace) {
        Ok(selections) => selections,
        Err(e) => {
            out.errors.push(e.into());
            return out;
        }
    };
    for selection in &selections {
        let network = selection.network_name();
        let Some(config) = nad_config(&selection.namespace, &selection.name) else {
            out.errors.push(AttachmentError::NadNotFound { network });
            continue;
        };
        let provider = match parse_kube_ovn_config(&network, &config) {
            Ok(conf) => Configured::Ovn(conf.provider),
            Err(NadConfigError::NotKubeOvn { found, .. }) => {
                match parse_kube_ovn_ipam(&network, &config) {
                    Ok(Some(ipam)) => Configured::IpamOnly(ipam.provider),
                    Ok(None) => {
                        out.skipped.push(SkippedNetwork {
                            network,
                            interface: selection.interface.clone(),
                            cni_type: found,
                        });
                        continue;
                    }
                    Err(source) => {
                        out.errors
                            .push(AttachmentError::NadConfig { network, source });
                        continue;
                    }
                }
            }
            Err(source) => {
                out.errors
                    .push(AttachmentError::NadConfig { network, source });
                continue;
            }
        };
        match plan_one(pod, &selections, selection, &provider, subnets) {
            Ok(plan) => out.plans.push(plan),
            Err(e) => out.errors.push(e),
        }
    }
    out
}

/// The provider a NAD config declares, and of which kind.
enum Configured {
    /// A kube-ovn NAD: an OVN port on a logical switch.
    Ovn(String),
    /// Another plugin's NAD with kube-ovn as its IPAM: addresses only.
    IpamOnly(String),
}

fn plan_one(
    pod: PodAttachmentInput<'_>,
    selections: &[NetworkSelection],
    selection: &NetworkSelection,
    configured: &Configured,
    subnets: &SubnetIndex,
) -> Result<AttachmentPlan, AttachmentError> {
    let network = selection.network_name();
    let (expected, configured_provider, form) = match configured {
        Configured::Ovn(p) => (
            Provider::for_nad(&selection.name, &selection.namespace),
            p,
            "<nad>.<namespace>.ovn",
        ),
        Configured::IpamOnly(p) => (
            Provider::for_ipam_nad(&selection.name, &selection.namespace),
            p,
            "<nad>.<namespace>",
        ),
    };
    let provider = expected.map_err(|e| AttachmentError::InvalidProvider {
        network: network.clone(),
        reason: e.to_string(),
    })?;
    if configured_provider != provider.as_str() {
        return Err(AttachmentError::ProviderMismatch {
            network,
            configured: configured_provider.clone(),
            expected: provider.to_string(),
            form,
        });
    }
    let key = AttachmentId::key_for(selections, &provider, &selection.interface);
    let pool = requested_pool(pod, &network, &provider, &key)?;
    let pool_subnet = match &pool {
        Some((PoolRequest::Named(name), annotation)) => {
            let unusable = |reason: String| AttachmentError::IpPoolUnusable {
                network: network.clone(),
                pool: name.clone(),
                annotation: annotation.clone(),
                reason,
            };
            let entry = subnets
                .pools
                .get(name)
                .ok_or_else(|| AttachmentError::IpPoolNotFound {
                    network: network.clone(),
                    pool: name.clone(),
                    annotation: annotation.clone(),
                })?;
            if !entry.namespaces.is_empty() && !entry.namespaces.iter().any(|n| n == pod.namespace)
            {
                return Err(unusable(format!(
                    "it serves namespaces {} only, not {}",
                    entry.namespaces.join(", "),
                    pod.namespace
                )));
            }
            let Some(subnet) = subnets.get(&entry.subnet) else {
                return Err(unusable(format!(
                    "its subnet {:?} does not exist",
                    entry.subnet
                )));
            };
            if subnet.provider != provider.as_str() {
                return Err(unusable(format!(
                    "its subnet {:?} belongs to provider {}, not {provider}",
                    subnet.name, subnet.provider
                )));
            }
            Some(subnet)
        }
        _ => None,
    };
    let subnet = match (pool_subnet, has_pin(pod, &provider, &key)) {
        (Some(s), false) => s,
        (pool_subnet, _) => {
            let chosen = choose_subnet(pod, &network, &provider, &key, subnets)?;
            if let (Some(p), Some((PoolRequest::Named(name), annotation))) = (pool_subnet, &pool) {
                if p.name != chosen.name {
                    return Err(AttachmentError::IpPoolUnusable {
                        network: network.clone(),
                        pool: name.clone(),
                        annotation: annotation.clone(),
                        reason: format!(
                            "it is a pool of subnet {:?}, but the attachment's subnet is {:?}",
                            p.name, chosen.name
                        ),
                    });
                }
            }
            chosen
        }
    };
    let cidrs = subnet
        .cidrs
        .clone()
        .map_err(|source| AttachmentError::SubnetCidr {
            network: network.clone(),
            source,
        })?;

    // Parsed here; whether they fit the subnet is IPAM's rule (checked once, at allocation).
    let (ips, ips_source) = match requested_ips(pod, selection, &network, &provider, &key)? {
        Some((requests, source)) => (requests, Some(source)),
        None => (Vec::new(), None),
    };
    let (mac, mac_source) = match requested_mac(pod, selection, &network, &provider, &key)? {
        Some((mac, source)) => (Some(mac), Some(source)),
        None => (None, None),
    };
    let default_route = !selection.default_route.is_empty()
        || pod
            .annotations
            .get(&key.annotation(ProviderKey::DefaultRoute))
            .is_some_and(|v| v.trim() == "true");

    Ok(AttachmentPlan {
        lsp_name: AttachmentId::new(pod.namespace, pod.name, key.clone()).port_name(),
        network,
        subnet: subnet.name.clone(),
        vpc: subnet.vpc.clone(),
        cidrs,
        mtu: subnet.mtu,
        interface: selection.interface.clone(),
        ips,
        ips_source,
        mac,
        mac_source,
        pool,
        claim: selection.ipam_claim_reference.clone(),
        default_route,
        default_route_gateways: selection.default_route.clone(),
        provider,
        key,
    })
}

/// Whether the pod pins this attachment's subnet with `logical_switch`.
fn has_pin(pod: PodAttachmentInput<'_>, provider: &Provider, key: &Provider) -> bool {
    first_annotation(
        pod,
        [key, provider].map(|p| p.annotation(ProviderKey::LogicalSwitch)),
    )
    .is_some()
}

/// `<key>.kubernetes.io/ip_pool`, then the base provider's, parsed.
fn requested_pool(
    pod: PodAttachmentInput<'_>,
    network: &str,
    provider: &Provider,
    key: &Provider,
) -> Result<Option<(PoolRequest, String)>, AttachmentError> {
    let Some((annotation, value)) = first_annotation(
        pod,
        [key, provider].map(|p| p.annotation(ProviderKey::IpPool)),
    ) else {
        return Ok(None);
    };
    PoolRequest::parse(value)
        .map(|p| Some((p, annotation.clone())))
        .map_err(|reason| AttachmentError::InvalidIpPool {
            network: network.to_owned(),
            annotation,
            reason,
        })
}

fn choose_subnet<'s>(
    pod: PodAttachmentInput<'_>,
    network: &str,
    provider: &Provider,
    key: &Provider,
    subnets: &'s SubnetIndex,
) -> Result<&'s SubnetEntry, AttachmentError> {
    let pinned = [key, provider].into_iter().find_map(|p| {
        let annotation = p.annotation(ProviderKey::LogicalSwitch);
        let value = pod.annotations.get(&annotation)?.trim();
        (!value.is_empty()).then(|| (annotation, value.to_owned()))
    });
    if let Some((annotation, name)) = pinned {
        let subnet = subnets
            .get(&name)
            .ok_or_else(|| AttachmentError::SubnetNotFound {
                network: network.to_owned(),
                subnet: name.clone(),
                annotation: annotation.clone(),
            })?;
        if subnet.provider != provider.as_str() {
            return Err(AttachmentError::SubnetProviderMismatch {
                network: network.to_owned(),
                subnet: name,
                annotation,
                subnet_provider: subnet.provider.clone(),
                provider: provider.to_string(),
            });
        }
        return Ok(subnet);
    }
    match subnets.for_provider(provider.as_str()) {
        [] => Err(AttachmentError::NoSubnet {
            network: network.to_owned(),
            provider: provider.to_string(),
        }),
        [only] => Ok(subnets
            .get(only)
            .expect("the provider index only names indexed subnets")),
        several => Err(AttachmentError::AmbiguousSubnet {
            network: network.to_owned(),
            provider: provider.to_string(),
            subnets: several.to_vec(),
            annotation: key.annotation(ProviderKey::LogicalSwitch),
        }),
    }
}

/// The first non-empty annotation among `keys`, with its key.
fn first_annotation<'p>(
    pod: PodAttachmentInput<'p>,
    keys: impl IntoIterator<Item = String>,
) -> Option<(String, &'p str)> {
    keys.into_iter().find_map(|k| {
        let value = pod.annotations.get(&k)?.trim();
        (!value.is_empty()).then_some((k, value))
    })
}

type Requested<T> = Option<(T, RequestSource)>;

fn requested_ips(
    pod: PodAttachmentInput<'_>,
    selection: &NetworkSelection,
    network: &str,
    provider: &Provider,
    key: &Provider,
) -> Result<Requested<Vec<IpRequest>>, AttachmentError> {
    if !selection.ips.is_empty() {
        return Ok(Some((selection.ips.clone(), RequestSource::NetworkElement)));
    }
    let keys = [
        nic_annotation(
            provider.nad(),
            provider.namespace(),
            NicKey::IpAddress,
            &selection.interface,
        ),
        key.annotation(ProviderKey::IpAddress),
    ];
    let Some((annotation, value)) = first_annotation(pod, keys) else {
        return Ok(None);
    };
    let source = RequestSource::Annotation(annotation);
    let requests = value
        .split(',')
        .map(|part| part.parse::<IpRequest>())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| AttachmentError::InvalidStaticIp {
            network: network.to_owned(),
            origin: source.clone(),
            value: value.to_owned(),
        })?;
    Ok(Some((requests, source)))
}

fn requested_mac(
    pod: PodAttachmentInput<'_>,
    selection: &NetworkSelection,
    network: &str,
    provider: &Provider,
    key: &Provider,
) -> Result<Requested<MacAddr>, AttachmentError> {
    let (mac, source, text) = match selection.mac {
        Some(mac) => (Ok(mac), RequestSource::NetworkElement, mac.to_string()),
        None => {
            let keys = [
                nic_annotation(
                    provider.nad(),
                    provider.namespace(),
                    NicKey::MacAddress,
                    &selection.interface,
                ),
                key.annotation(ProviderKey::MacAddress),
            ];
            let Some((annotation, value)) = first_annotation(pod, keys) else {
                return Ok(None);
            };
            (
                value.parse::<MacAddr>(),
                RequestSource::Annotation(annotation),
                value.to_owned(),
            )
        }
    };
    match mac {
        Ok(mac) if !mac.is_multicast() => Ok(Some((mac, source))),
        _ => Err(AttachmentError::InvalidMac {
            network: network.to_owned(),
            origin: source,
            value: text,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::annotations::NETWORKS;
    use crate::api::nad::NetworkAttachmentDefinition;
    use crate::api::seed;
    use crate::api::subnet::SubnetSpec;

    /// The seed's NAD plus kube-ovn NADs `<name>` in `default` with the right provider.
    fn nads(extra: &[&str]) -> HashMap<(String, String), String> {
        let seed_nad: NetworkAttachmentDefinition = seed::document(seed::NAD);
        let mut nads = HashMap::from([(
            ("default".to_owned(), "kube-ovn-vpc-network".to_owned()),
            seed_nad.spec.config,
        )]);
        for name in extra {
            nads.insert(
                ("default".into(), (*name).into()),
                kube_ovn_config(name, "default"),
            );
        }
        nads
    }

    fn kube_ovn_config(name: &str, namespace: &str) -> String {
        format!(
            r#"{{"cniVersion":"0.3.1","type":"kube-ovn","server_socket":"/run/openvswitch/kube-ovn-daemon.sock","provider":"{name}.{namespace}.ovn"}}"#
        )
    }

    fn lookup(
        nads: &HashMap<(String, String), String>,
    ) -> impl Fn(&str, &str) -> Option<String> + '_ {
        |ns, name| nads.get(&(ns.to_owned(), name.to_owned())).cloned()
    }

    fn seed_subnet() -> Subnet {
        seed::documents::<serde_yaml::Value>(seed::VPC_SUBNET)
            .into_iter()
            .find(|d| d["kind"] == "Subnet")
            .map(|d| serde_yaml::from_value(d).unwrap())
            .unwrap()
    }

    fn subnet(name: &str, provider: &str, vpc: &str, cidr: &str) -> Subnet {
        Subnet::new(
            name,
            SubnetSpec {
                provider: Some(provider.into()),
                vpc: Some(vpc.into()),
                cidr_block: Some(cidr.into()),
                ..Default::default()
            },
        )
    }

    fn plan(
        pod: &str,
        annotations: &BTreeMap<String, String>,
        nads: &HashMap<(String, String), String>,
        subnets: &[Subnet],
    ) -> PodAttachments {
        let input = PodAttachmentInput {
            name: pod,
            namespace: "default",
            annotations,
        };
        plan_pod_attachments(input, lookup(nads), &SubnetIndex::new(subnets))
    }

    fn networks(value: &str) -> BTreeMap<String, String> {
        BTreeMap::from([(NETWORKS.to_owned(), value.to_owned())])
    }

    fn only_error(out: PodAttachments) -> AttachmentError {
        assert!(out.plans.is_empty(), "unexpected plans {:?}", out.plans);
        let mut errors = out.errors;
        assert_eq!(errors.len(), 1, "{errors:?}");
        errors.remove(0)
    }

    #[test]
    fn seed_pod_gets_net1_on_the_seed_subnet() {
        let pod: k8s_openapi::api::core::v1::Pod = seed::document(seed::POD_MULTI_NETWORK);
        let annotations = pod.metadata.annotations.unwrap();
        let out = plan(
            "multi-network-pod",
            &annotations,
            &nads(&[]),
            &[seed_subnet()],
        );
        let plans = out.into_result().unwrap();
        assert_eq!(plans.len(), 1);
        let p = &plans[0];
        assert_eq!(p.network, "default/kube-ovn-vpc-network");
        assert_eq!(p.provider.as_str(), "kube-ovn-vpc-network.default.ovn");
        assert_eq!(p.key, p.provider);
        assert_eq!(
            p.lsp_name,
            "multi-network-pod.default.kube-ovn-vpc-network.default.ovn"
        );
        assert_eq!(p.subnet, "subnet-secondary");
        assert_eq!(p.vpc.as_deref(), Some("vpc-secondary"));
        assert_eq!(p.cidrs, ["10.100.0.0/16".parse::<IpNet>().unwrap()]);
        assert_eq!(p.interface, "net1");
        assert!(p.ips.is_empty() && p.mac.is_none() && !p.default_route);
        assert_eq!(
            p.annotation(ProviderKey::IpAddress),
            "kube-ovn-vpc-network.default.ovn.kubernetes.io/ip_address"
        );
    }

    fn addresses(plan: &AttachmentPlan) -> Vec<IpAddr> {
        plan.ips.iter().map(|r| r.address).collect()
    }

    #[test]
    fn seed_static_ip_in_cidr_form_keeps_its_prefix_for_ipam() {
        // The seed's static-IP fragment names NAD default/kube-ovn-network.
        let annotations = seed::annotations(seed::META_STATIC_IP);
        let nads = nads(&["kube-ovn-network"]);
        let subnets = [subnet(
            "s",
            "kube-ovn-network.default.ovn",
            "vpc-secondary",
            "10.100.0.0/16",
        )];
        let plans = plan("static", &annotations, &nads, &subnets)
            .into_result()
            .unwrap();
        assert_eq!(
            plans[0].ips,
            [IpRequest {
                address: "10.100.0.100".parse().unwrap(),
                prefix_len: Some(16)
            }]
        );
        assert_eq!(plans[0].ips_source, Some(RequestSource::NetworkElement));
    }

    #[test]
    fn seed_json_lists_give_net1_and_net2_on_different_subnets() {
        let nads = nads(&[
            "public-network",
            "internal-network",
            "kube-ovn-network-1",
            "kube-ovn-network-2",
        ]);
        let subnets = [
            subnet(
                "public",
                "public-network.default.ovn",
                "vpc-a",
                "10.1.0.0/24",
            ),
            subnet(
                "internal",
                "internal-network.default.ovn",
                "vpc-a",
                "10.2.0.0/24",
            ),
            subnet(
                "one",
                "kube-ovn-network-1.default.ovn",
                "vpc-b",
                "10.3.0.0/24",
            ),
            subnet(
                "two",
                "kube-ovn-network-2.default.ovn",
                "vpc-b",
                "10.4.0.0/24",
            ),
        ];
        let frontend: k8s_openapi::api::core::v1::Pod = seed::document(seed::POD_FRONTEND);
        for (annotations, want) in [
            (
                frontend.metadata.annotations.unwrap(),
                [("net1", "public"), ("net2", "internal")],
            ),
            (
                seed::annotations(seed::META_MULTIPLE_PROVIDERS),
                [("net1", "one"), ("net2", "two")],
            ),
        ] {
            let plans = plan("frontend", &annotations, &nads, &subnets)
                .into_result()
                .unwrap();
            let got: Vec<_> = plans
                .iter()
                .map(|p| (p.interface.as_str(), p.subnet.as_str()))
                .collect();
            assert_eq!(got, want);
        }
    }

    #[test]
    fn seed_tenants_land_in_their_own_vpcs() {
        let nads = nads(&["tenant-a-network", "tenant-b-network"]);
        let subnets = [
            subnet(
                "tenant-a",
                "tenant-a-network.default.ovn",
                "vpc-a",
                "10.10.0.0/24",
            ),
            subnet(
                "tenant-b",
                "tenant-b-network.default.ovn",
                "vpc-b",
                "10.10.0.0/24",
            ),
        ];
        let pods: Vec<k8s_openapi::api::core::v1::Pod> = seed::documents(seed::PODS_TENANTS);
        let vpcs: Vec<_> = pods
            .iter()
            .map(|pod| {
                let name = pod.metadata.name.as_deref().unwrap();
                let annotations = pod.metadata.annotations.clone().unwrap();
                let plans = plan(name, &annotations, &nads, &subnets)
                    .into_result()
                    .unwrap();
                plans[0].vpc.clone().unwrap()
            })
            .collect();
        assert_eq!(vpcs, ["vpc-a", "vpc-b"]);
    }

    #[test]
    fn same_nad_twice_keys_later_attachments_on_the_interface() {
        let annotations =
            networks("default/kube-ovn-vpc-network,default/kube-ovn-vpc-network@extra");
        let plans = plan("p", &annotations, &nads(&[]), &[seed_subnet()])
            .into_result()
            .unwrap();
        assert_eq!(plans[0].key.as_str(), "kube-ovn-vpc-network.default.ovn");
        assert_eq!(
            plans[0].lsp_name,
            "p.default.kube-ovn-vpc-network.default.ovn"
        );
        assert_eq!(
            plans[1].key.as_str(),
            "kube-ovn-vpc-network.default.ovn.extra"
        );
        assert_eq!(
            plans[1].provider.as_str(),
            "kube-ovn-vpc-network.default.ovn"
        );
        assert_eq!(
            plans[1].lsp_name,
            "p.default.kube-ovn-vpc-network.default.ovn.extra"
        );
        assert_eq!(plans[1].interface, "extra");
        assert_eq!(plans[1].subnet, "subnet-secondary");
    }

    #[test]
    fn annotations_request_ips_macs_and_default_route_per_attachment() {
        let mut annotations = networks("kube-ovn-vpc-network,kube-ovn-vpc-network");
        let p = "kube-ovn-vpc-network.default.ovn";
        annotations.insert(format!("{p}.kubernetes.io/ip_address"), "10.100.0.7".into());
        annotations.insert(
            format!("{p}.kubernetes.io/mac_address"),
            "0A:58:0A:64:00:07".into(),
        );
        annotations.insert(format!("{p}.kubernetes.io/default_route"), "true".into());
        // Per-NIC keys (no `.ovn`) win over the provider keys for that interface.
        annotations.insert(
            "kube-ovn-vpc-network.default.kubernetes.io/ip_address.net2".into(),
            "10.100.0.8/16".into(),
        );
        annotations.insert(
            "kube-ovn-vpc-network.default.kubernetes.io/mac_address.net2".into(),
            "0a:58:0a:64:00:08".into(),
        );
        let plans = plan("p", &annotations, &nads(&[]), &[seed_subnet()])
            .into_result()
            .unwrap();
        assert_eq!(
            addresses(&plans[0]),
            ["10.100.0.7".parse::<IpAddr>().unwrap()]
        );
        assert_eq!(
            plans[0].ips_source,
            Some(RequestSource::Annotation(format!(
                "{p}.kubernetes.io/ip_address"
            )))
        );
        assert_eq!(plans[0].mac.unwrap().to_string(), "0a:58:0a:64:00:07");
        assert!(plans[0].default_route);
        assert_eq!(
            addresses(&plans[1]),
            ["10.100.0.8".parse::<IpAddr>().unwrap()]
        );
        assert_eq!(plans[1].mac.unwrap().to_string(), "0a:58:0a:64:00:08");
        // `default_route` was set for the first attachment's key only.
        assert!(!plans[1].default_route);
    }

    #[test]
    fn element_requests_win_over_annotations() {
        let mut annotations = networks(
            r#"[{"name":"kube-ovn-vpc-network","ips":["10.100.0.9"],"mac":"0a:58:0a:64:00:09","default-route":["10.100.0.1"]}]"#,
        );
        annotations.insert(
            "kube-ovn-vpc-network.default.ovn.kubernetes.io/ip_address".into(),
            "10.100.0.7".into(),
        );
        let plans = plan("p", &annotations, &nads(&[]), &[seed_subnet()])
            .into_result()
            .unwrap();
        assert_eq!(
            addresses(&plans[0]),
            ["10.100.0.9".parse::<IpAddr>().unwrap()]
        );
        assert_eq!(plans[0].mac_source, Some(RequestSource::NetworkElement));
        assert!(plans[0].default_route);
        assert_eq!(
            plans[0].default_route_gateways,
            ["10.100.0.1".parse::<IpAddr>().unwrap()]
        );
    }

    #[test]
    fn dual_stack_static_ips() {
        let nads = nads(&["ds"]);
        let subnets = [subnet("ds", "ds.default.ovn", "v", "10.0.0.0/24,fd00::/64")];
        let plans = plan(
            "p",
            &networks(r#"[{"name":"ds","ips":["10.0.0.5/24","fd00::5"]}]"#),
            &nads,
            &subnets,
        )
        .into_result()
        .unwrap();
        assert_eq!(plans[0].ips.len(), 2);
        // Two of one family are passed on as written: IPAM refuses them (its rule, checked
        // once; see the pod controller's refusal test).
        let plans = plan(
            "p",
            &networks(r#"[{"name":"ds","ips":["10.0.0.5","10.0.0.6"]}]"#),
            &nads,
            &subnets,
        )
        .into_result()
        .unwrap();
        assert_eq!(plans[0].ips.len(), 2);
    }

    #[test]
    fn logical_switch_annotation_picks_among_several_subnets() {
        let subnets = [
            seed_subnet(),
            subnet(
                "subnet-other",
                "kube-ovn-vpc-network.default.ovn",
                "vpc-secondary",
                "10.101.0.0/16",
            ),
        ];
        let mut annotations = networks("default/kube-ovn-vpc-network");
        let err = only_error(plan("p", &annotations, &nads(&[]), &subnets));
        assert_eq!(err.reason(), "AmbiguousSubnet");
        assert_eq!(
            err.to_string(),
            "network default/kube-ovn-vpc-network: provider kube-ovn-vpc-network.default.ovn is bound to several subnets (subnet-other, subnet-secondary); pick one with annotation kube-ovn-vpc-network.default.ovn.kubernetes.io/logical_switch"
        );
        annotations.insert(
            "kube-ovn-vpc-network.default.ovn.kubernetes.io/logical_switch".into(),
            "subnet-other".into(),
        );
        let plans = plan("p", &annotations, &nads(&[]), &subnets)
            .into_result()
            .unwrap();
        assert_eq!(plans[0].subnet, "subnet-other");
    }

    #[test]
    fn missing_nad_is_a_distinct_retryable_error() {
        let out = plan("p", &networks("default/nope"), &nads(&[]), &[seed_subnet()]);
        assert!(out.waits_for_nad());
        let err = only_error(out);
        assert_eq!(
            err,
            AttachmentError::NadNotFound {
                network: "default/nope".into()
            }
        );
        assert_eq!(
            err.to_string(),
            "network default/nope: NetworkAttachmentDefinition default/nope not found"
        );
        assert_eq!(err.reason(), "NetworkAttachmentDefinitionNotFound");
        assert_eq!(err.network(), Some("default/nope"));
    }

    #[test]
    fn other_plugins_nads_are_skipped() {
        let mut nads = nads(&[]);
        nads.insert(
            ("default".into(), "macvlan".into()),
            r#"{"cniVersion":"0.3.1","type":"macvlan","master":"eth0"}"#.into(),
        );
        let out = plan(
            "p",
            &networks("macvlan,kube-ovn-vpc-network"),
            &nads,
            &[seed_subnet()],
        );
        assert_eq!(
            out.skipped,
            [SkippedNetwork {
                network: "default/macvlan".into(),
                interface: "net1".into(),
                cni_type: "macvlan".into()
            }]
        );
        let plans = out.into_result().unwrap();
        assert_eq!(plans.len(), 1);
        assert_eq!(plans[0].interface, "net2");
    }

    #[test]
    fn ipam_only_nads_are_planned_without_a_port() {
        let mut nads = nads(&[]);
        let macvlan = |provider: &str| {
            format!(
                r#"{{"cniVersion":"0.3.1","type":"macvlan","master":"eth1","mode":"bridge","ipam":{{"type":"kube-ovn","server_socket":"/run/openvswitch/kube-ovn-daemon.sock","provider":"{provider}"}}}}"#
            )
        };
        nads.insert(
            ("default".into(), "external".into()),
            macvlan("external.default"),
        );
        let external = Subnet::new(
            "ext",
            SubnetSpec {
                provider: Some("external.default".into()),
                cidr_block: Some("172.18.0.0/16".into()),
                ..Default::default()
            },
        );
        let subnets = [seed_subnet(), external];
        let plans = plan(
            "gw",
            &networks("kube-ovn-vpc-network,external"),
            &nads,
            &subnets,
        )
        .into_result()
        .unwrap();
        assert!(!plans[0].provider.is_ipam_only());
        assert_eq!(plans[1].provider.as_str(), "external.default");
        assert!(plans[1].provider.is_ipam_only());
        assert_eq!(plans[1].subnet, "ext");
        assert_eq!(plans[1].vpc, None);
        assert_eq!(plans[1].interface, "net2");
        assert_eq!(
            plans[1].annotation(ProviderKey::IpAddress),
            "external.default.kubernetes.io/ip_address"
        );

        nads.insert(
            ("default".into(), "external".into()),
            macvlan("external.default.ovn"),
        );
        let err = only_error(plan("gw", &networks("external"), &nads, &subnets));
        assert_eq!(err.reason(), "ProviderMismatch");
        assert_eq!(
            err.to_string(),
            "network default/external: NAD provider \"external.default.ovn\" must be \"external.default\" (<nad>.<namespace>)"
        );
    }

    #[test]
    fn malformed_nad_config_is_reported_on_the_pod() {
        let mut nads = nads(&[]);
        nads.insert(("default".into(), "broken".into()), "{ not json".into());
        let err = only_error(plan("p", &networks("broken"), &nads, &[seed_subnet()]));
        assert_eq!(err.reason(), "InvalidNetworkAttachmentDefinition");
        assert!(
            err.to_string().starts_with(
                "network default/broken: NAD default/broken: spec.config is not valid JSON"
            ),
            "{err}"
        );
    }

    #[test]
    fn provider_must_match_the_nad_identity() {
        let mut nads = nads(&[]);
        nads.insert(
            ("default".into(), "renamed".into()),
            kube_ovn_config("kube-ovn-vpc-network", "default"),
        );
        let err = only_error(plan("p", &networks("renamed"), &nads, &[seed_subnet()]));
        assert_eq!(
            err.to_string(),
            "network default/renamed: NAD provider \"kube-ovn-vpc-network.default.ovn\" must be \"renamed.default.ovn\" (<nad>.<namespace>.ovn)"
        );
        assert_eq!(err.reason(), "ProviderMismatch");
    }

    #[test]
    fn provider_without_subnet() {
        let err = only_error(plan(
            "p",
            &networks("kube-ovn-vpc-network"),
            &nads(&[]),
            &[],
        ));
        assert_eq!(
            err.to_string(),
            "network default/kube-ovn-vpc-network: provider kube-ovn-vpc-network.default.ovn is not bound to any subnet"
        );
        assert_eq!(err.reason(), "NoSubnetForProvider");
    }

    #[test]
    fn pinned_subnet_must_exist_and_carry_the_provider() {
        let key = "kube-ovn-vpc-network.default.ovn.kubernetes.io/logical_switch";
        let subnets = [
            seed_subnet(),
            subnet("foreign", "other.default.ovn", "v", "10.9.0.0/24"),
        ];
        let mut annotations = networks("kube-ovn-vpc-network");
        annotations.insert(key.into(), "ghost".into());
        let err = only_error(plan("p", &annotations, &nads(&[]), &subnets));
        assert_eq!(
            err.to_string(),
            format!("network default/kube-ovn-vpc-network: subnet \"ghost\" named by annotation {key} does not exist")
        );
        annotations.insert(key.into(), "foreign".into());
        let err = only_error(plan("p", &annotations, &nads(&[]), &subnets));
        assert_eq!(err.reason(), "SubnetProviderMismatch");
        assert!(
            err.to_string().contains(
                "belongs to provider other.default.ovn, not kube-ovn-vpc-network.default.ovn"
            ),
            "{err}"
        );
    }

    #[test]
    fn bad_annotation_addresses_and_macs() {
        let p = "kube-ovn-vpc-network.default.ovn";
        let mut annotations = networks("kube-ovn-vpc-network");
        annotations.insert(format!("{p}.kubernetes.io/ip_address"), "10.100.0.x".into());
        let err = only_error(plan("p", &annotations, &nads(&[]), &[seed_subnet()]));
        assert_eq!(
            err.to_string(),
            format!("network default/kube-ovn-vpc-network: annotation {p}.kubernetes.io/ip_address: \"10.100.0.x\" is not an IP address list")
        );
        let mut annotations = networks("kube-ovn-vpc-network");
        annotations.insert(
            format!("{p}.kubernetes.io/mac_address"),
            "01:00:5e:00:00:01".into(),
        );
        let err = only_error(plan("p", &annotations, &nads(&[]), &[seed_subnet()]));
        assert_eq!(err.reason(), "InvalidMAC");
        assert!(err.to_string().contains("01:00:5e:00:00:01"), "{err}");
    }

    #[test]
    fn subnet_without_cidr_is_reported() {
        let broken = Subnet::new(
            "subnet-secondary",
            SubnetSpec {
                provider: Some("kube-ovn-vpc-network.default.ovn".into()),
                ..Default::default()
            },
        );
        let err = only_error(plan(
            "p",
            &networks("kube-ovn-vpc-network"),
            &nads(&[]),
            &[broken],
        ));
        assert_eq!(err.reason(), "InvalidSubnet");
        assert!(
            err.to_string()
                .contains("subnet \"subnet-secondary\": spec.cidrBlock (or spec.cidr) is required"),
            "{err}"
        );
    }

    #[test]
    fn malformed_networks_annotation_is_one_error() {
        let err = only_error(plan(
            "p",
            &networks(r#"[{"name": "#),
            &nads(&[]),
            &[seed_subnet()],
        ));
        assert_eq!(err.reason(), "InvalidNetworksAnnotation");
        assert_eq!(err.network(), None);
    }

    #[test]
    fn one_bad_network_does_not_hide_the_good_ones() {
        let out = plan(
            "p",
            &networks("nope,kube-ovn-vpc-network"),
            &nads(&[]),
            &[seed_subnet()],
        );
        assert_eq!(out.plans.len(), 1);
        assert_eq!(out.plans[0].interface, "net2");
        assert_eq!(out.errors.len(), 1);
        assert!(out.into_result().is_err());
    }

    #[test]
    fn ip_pool_values_parse_as_kube_ovn_reads_them() {
        let ip = |s: &str| s.parse::<IpRequest>().unwrap();
        assert_eq!(
            PoolRequest::parse("web-pool"),
            Ok(PoolRequest::Named("web-pool".into()))
        );
        assert_eq!(
            PoolRequest::parse("10.0.0.5, 10.0.0.6"),
            Ok(PoolRequest::Addresses(vec![
                vec![ip("10.0.0.5")],
                vec![ip("10.0.0.6")]
            ]))
        );
        assert_eq!(
            PoolRequest::parse("10.0.0.5,fd00::5"),
            Ok(PoolRequest::Addresses(vec![vec![
                ip("10.0.0.5"),
                ip("fd00::5")
            ]])),
            "two of different families are one dual-stack entry"
        );
        assert_eq!(
            PoolRequest::parse("10.0.0.5,fd00::5;10.0.0.6,fd00::6"),
            Ok(PoolRequest::Addresses(vec![
                vec![ip("10.0.0.5"), ip("fd00::5")],
                vec![ip("10.0.0.6"), ip("fd00::6")]
            ]))
        );
        assert!(PoolRequest::parse("10.0.0.5,nonsense")
            .unwrap_err()
            .contains("nonsense"));
        assert!(PoolRequest::parse("Not_A_Name").is_err());
    }

    #[test]
    fn a_named_pool_picks_its_subnet_and_guards_its_namespaces() {
        let mut pool = crate::api::ippool::IPPool::new(
            "p1",
            crate::api::ippool::IpPoolSpec {
                subnet: "s2".into(),
                ips: vec!["10.1.0.10".into()],
                namespaces: vec!["default".into()],
            },
        );
        let subnets = [
            subnet("s1", "n1.default.ovn", "vpc", "10.0.0.0/24"),
            subnet("s2", "n1.default.ovn", "vpc", "10.1.0.0/24"),
        ];
        let index =
            |pool: &crate::api::ippool::IPPool| SubnetIndex::new(subnets.iter()).with_pools([pool]);
        let nads = nads(&["n1"]);
        let run = |annotations: &BTreeMap<String, String>, pool: &crate::api::ippool::IPPool| {
            plan_pod_attachments(
                PodAttachmentInput {
                    name: "p",
                    namespace: "default",
                    annotations,
                },
                lookup(&nads),
                &index(pool),
            )
        };
        let mut annotations = networks("n1");
        annotations.insert("n1.default.ovn.kubernetes.io/ip_pool".into(), "p1".into());
        let out = run(&annotations, &pool);
        assert_eq!(out.plans[0].subnet, "s2", "the pool's subnet, no ambiguity");
        assert_eq!(
            out.plans[0].pool,
            Some((
                PoolRequest::Named("p1".into()),
                "n1.default.ovn.kubernetes.io/ip_pool".into()
            ))
        );

        annotations.insert(
            "n1.default.ovn.kubernetes.io/logical_switch".into(),
            "s1".into(),
        );
        let e = only_error(run(&annotations, &pool));
        assert_eq!(e.reason(), "IPPoolUnusable");
        assert!(e.to_string().contains("subnet \"s2\""), "{e}");

        annotations.remove("n1.default.ovn.kubernetes.io/logical_switch");
        pool.spec.namespaces = vec!["other".into()];
        let e = only_error(run(&annotations, &pool));
        assert!(e.to_string().contains("namespaces other only"), "{e}");

        annotations.insert("n1.default.ovn.kubernetes.io/ip_pool".into(), "p9".into());
        assert_eq!(
            only_error(run(&annotations, &pool)).reason(),
            "IPPoolNotFound"
        );
    }

    #[test]
    fn pods_without_networks_plan_nothing() {
        let out = plan("p", &BTreeMap::new(), &nads(&[]), &[seed_subnet()]);
        assert_eq!(out, PodAttachments::default());
    }
}
