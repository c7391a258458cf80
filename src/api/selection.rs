//! Parsing of the `k8s.v1.cni.cncf.io/networks` pod annotation as multi-net-spec
//! v1.3 and Multus read it: a JSON list when the value contains `[`, `{` or `"`,
//! else the comma form `[ns/]name[@ifname]`. Each element is resolved to the
//! namespace (the pod's when missing) and the interface name Multus will give it
//! (`net<position>` unless requested). Pure: values in, values out.

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::annotations::NETWORKS;
use super::mac::MacAddr;
use super::names::{check_dns1123_label, check_ifname};

/// One element of the JSON form, as written by the user (multi-net-spec v1.3
/// `NetworkSelectionElement` plus Multus's own keys). Unknown keys are ignored.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NetworkSelectionElement {
    /// NAD name; `ns/name` is accepted when `namespace` is absent (the seed writes it).
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Requested addresses, bare or CIDR.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ips: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    #[serde(
        rename = "infiniband-guid",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub infiniband_guid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<String>,
    /// Pre-3.2 Multus spelling of `interface`.
    #[serde(
        rename = "interfaceRequest",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub interface_request: Option<String>,
    #[serde(
        rename = "portMappings",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub port_mappings: Option<Vec<PortMapping>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bandwidth: Option<Bandwidth>,
    #[serde(rename = "cni-args", default, skip_serializing_if = "Option::is_none")]
    pub cni_args: Option<serde_json::Map<String, serde_json::Value>>,
    /// Gateways this interface should get the default route through.
    #[serde(
        rename = "default-route",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub default_route: Option<Vec<String>>,
    #[serde(
        rename = "ipam-claim-reference",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub ipam_claim_reference: Option<String>,
    #[serde(rename = "deviceID", default, skip_serializing_if = "Option::is_none")]
    pub device_id: Option<String>,
}

/// A port mapping request (CNI `portMappings` capability).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PortMapping {
    pub host_port: i32,
    pub container_port: i32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
    #[serde(rename = "hostIP", default, skip_serializing_if = "Option::is_none")]
    pub host_ip: Option<String>,
}

/// A bandwidth request (CNI `bandwidth` capability; rates in bit/s, bursts in bits).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Bandwidth {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingress_rate: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingress_burst: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub egress_rate: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub egress_burst: Option<u64>,
}

/// A requested address: bare (`10.100.0.100`) or with a prefix (`10.100.0.100/16`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct IpRequest {
    pub address: IpAddr,
    /// The prefix length when given in CIDR form; it must then match the subnet's.
    pub prefix_len: Option<u8>,
}

impl FromStr for IpRequest {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let text = s.trim();
        match text.split_once('/') {
            None => text
                .parse()
                .map(|address| Self {
                    address,
                    prefix_len: None,
                })
                .map_err(|_| format!("{s:?} is not an IP address")),
            Some(_) => text
                .parse::<ipnet::IpNet>()
                .map(|net| Self {
                    address: net.addr(),
                    prefix_len: Some(net.prefix_len()),
                })
                .map_err(|_| format!("{s:?} is not an IP address or CIDR")),
        }
    }
}

impl fmt::Display for IpRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.prefix_len {
            Some(len) => write!(f, "{}/{len}", self.address),
            None => write!(f, "{}", self.address),
        }
    }
}

/// One network the pod asked for, resolved: namespace filled in, interface named.
#[derive(Debug, Clone, PartialEq)]
pub struct NetworkSelection {
    /// Position in the annotation (0-based).
    pub index: usize,
    /// The NAD's namespace.
    pub namespace: String,
    /// The NAD's name.
    pub name: String,
    /// The interface name Multus gives it.
    pub interface: String,
    /// Whether `interface` (or `@ifname`) was given explicitly.
    pub interface_requested: bool,
    pub ips: Vec<IpRequest>,
    pub mac: Option<MacAddr>,
    /// Gateways for the default route; non-empty means this interface wants it.
    pub default_route: Vec<IpAddr>,
    pub cni_args: Option<serde_json::Map<String, serde_json::Value>>,
    pub bandwidth: Option<Bandwidth>,
    pub port_mappings: Vec<PortMapping>,
    /// The IPAMClaim (in the pod's namespace) that owns this interface's address.
    pub ipam_claim_reference: Option<String>,
}

impl NetworkSelection {
    /// `ns/name`, as Multus names networks in events and network-status.
    pub fn network_name(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

/// Why the networks annotation cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SelectionError {
    /// The value looks like JSON but is not a list of elements.
    #[error("annotation {NETWORKS}: malformed JSON: {0}")]
    Json(String),
    /// One element is invalid; `element` is its text or name as the user wrote it.
    #[error("annotation {NETWORKS}: element {index} ({element}): {reason}")]
    Element {
        index: usize,
        element: String,
        reason: String,
    },
}

/// The first index Multus uses for annotation networks when no `defaultNetworks`
/// are configured (the cluster default network is index 0, `eth0`).
const FIRST_ANNOTATION_INDEX: usize = 1;

/// Parses the networks annotation of a pod in `pod_namespace`. An empty value
/// means no networks.
pub fn parse_networks(
    value: &str,
    pod_namespace: &str,
) -> Result<Vec<NetworkSelection>, SelectionError> {
    if value.is_empty() {
        return Ok(Vec::new());
    }
    let elements = if value.contains(['[', '{', '"']) {
        serde_json::from_str::<Vec<NetworkSelectionElement>>(value)
            .map_err(|e| SelectionError::Json(e.to_string()))?
            .into_iter()
            .enumerate()
            .map(|(index, element)| {
                let label = element.name.clone();
                (index, label, split_json_name(element))
            })
            .collect::<Vec<_>>()
    } else {
        value
            .split(',')
            .enumerate()
            .map(|(index, item)| {
                let item = item.trim();
                (index, item.to_owned(), parse_comma_item(item))
            })
            .collect()
    };
    let mut selections = Vec::with_capacity(elements.len());
    let mut interfaces: HashMap<String, usize> = HashMap::new();
    for (index, label, element) in elements {
        let fail = |reason: String| SelectionError::Element {
            index,
            element: label.clone(),
            reason,
        };
        let selection = element
            .and_then(|e| resolve(index, e, pod_namespace))
            .map_err(fail)?;
        if let Some(first) = interfaces.insert(selection.interface.clone(), index) {
            return Err(fail(format!(
                "interface {:?} is already used by element {first}",
                selection.interface
            )));
        }
        selections.push(selection);
    }
    Ok(selections)
}

/// `[ns/]name[@ifname]`, each part a DNS-1123 label, the ifname a valid interface.
fn parse_comma_item(item: &str) -> Result<NetworkSelectionElement, String> {
    let (namespace, rest) = match item.split('/').collect::<Vec<_>>().as_slice() {
        [rest] => (None, *rest),
        [namespace, rest] => (Some((*namespace).to_owned()), *rest),
        _ => return Err("more than one '/' (want [namespace/]name[@interface])".into()),
    };
    let (name, interface) = match rest.split('@').collect::<Vec<_>>().as_slice() {
        [name] => (*name, None),
        [name, ifname] => (*name, Some((*ifname).to_owned())),
        _ => return Err("more than one '@' (want [namespace/]name[@interface])".into()),
    };
    Ok(NetworkSelectionElement {
        name: name.to_owned(),
        namespace,
        interface,
        ..Default::default()
    })
}

/// Accepts `"name": "ns/name"` when no `namespace` key is given.
fn split_json_name(
    mut element: NetworkSelectionElement,
) -> Result<NetworkSelectionElement, String> {
    if let Some((namespace, name)) = element.name.split_once('/') {
        if let Some(given) = &element.namespace {
            return Err(format!(
                "name {:?} carries a namespace and \"namespace\" is {given:?} as well",
                element.name
            ));
        }
        element.namespace = Some(namespace.to_owned());
        element.name = name.to_owned();
    }
    Ok(element)
}

fn resolve(
    index: usize,
    element: NetworkSelectionElement,
    pod_namespace: &str,
) -> Result<NetworkSelection, String> {
    let namespace = element
        .namespace
        .filter(|ns| !ns.is_empty())
        .unwrap_or_else(|| pod_namespace.to_owned());
    check_dns1123_label(&namespace).map_err(|r| format!("namespace {namespace:?} {r}"))?;
    check_dns1123_label(&element.name).map_err(|r| format!("name {:?} {r}", element.name))?;

    let requested = element
        .interface
        .filter(|i| !i.is_empty())
        .or(element.interface_request.filter(|i| !i.is_empty()));
    if let Some(ifname) = &requested {
        check_ifname(ifname).map_err(|r| format!("interface {ifname:?} {r}"))?;
    }
    let interface_requested = requested.is_some();
    let interface = requested.unwrap_or_else(|| format!("net{}", index + FIRST_ANNOTATION_INDEX));

    let ips = element.ips.unwrap_or_default();
    let ipam_claim_reference = element
        .ipam_claim_reference
        .filter(|c| !c.trim().is_empty());
    if !ips.is_empty() && ipam_claim_reference.is_some() {
        return Err("\"ips\" and \"ipam-claim-reference\" are mutually exclusive".into());
    }
    let ips = ips
        .iter()
        .map(|ip| ip.parse::<IpRequest>())
        .collect::<Result<Vec<_>, _>>()?;
    let mac = element
        .mac
        .filter(|m| !m.is_empty())
        .map(|m| m.parse::<MacAddr>())
        .transpose()
        .map_err(|e| e.to_string())?;
    let default_route = element
        .default_route
        .unwrap_or_default()
        .iter()
        .map(|gw| {
            gw.parse::<IpAddr>()
                .map_err(|_| format!("default-route gateway {gw:?} is not an IP address"))
        })
        .collect::<Result<Vec<_>, _>>()?;

    Ok(NetworkSelection {
        index,
        namespace,
        name: element.name,
        interface,
        interface_requested,
        ips,
        mac,
        default_route,
        cni_args: element.cni_args,
        bandwidth: element.bandwidth,
        port_mappings: element.port_mappings.unwrap_or_default(),
        ipam_claim_reference,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::seed;

    fn seed_networks(yaml: &str) -> String {
        seed::annotations(yaml)[NETWORKS].clone()
    }

    #[test]
    fn seed_tenant_pods_each_get_net1() {
        let pods: Vec<k8s_openapi::api::core::v1::Pod> = seed::documents(seed::PODS_TENANTS);
        let got: Vec<_> = pods
            .iter()
            .map(|pod| {
                let value = &pod.metadata.annotations.as_ref().unwrap()[NETWORKS];
                let nets = parse_networks(value, "default").unwrap();
                (nets[0].network_name(), nets[0].interface.clone())
            })
            .collect();
        assert_eq!(
            got,
            [
                ("default/tenant-a-network".to_owned(), "net1".to_owned()),
                ("default/tenant-b-network".to_owned(), "net1".to_owned())
            ]
        );
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn seed_comma_form_single_network() {
        let nets = parse_networks(&seed_networks(seed::POD_MULTI_NETWORK), "default").unwrap();
        assert_eq!(nets.len(), 1);
        assert_eq!(nets[0].namespace, "default");
        assert_eq!(nets[0].name, "kube-ovn-vpc-network");
        assert_eq!(nets[0].interface, "net1");
        assert!(!nets[0].interface_requested);
        assert_eq!(nets[0].network_name(), "default/kube-ovn-vpc-network");
    }

    #[test]
    fn seed_json_list_with_namespace_in_name() {
        let value = seed_networks(seed::POD_FRONTEND);
        let nets = parse_networks(&value, "other").unwrap();
        let got: Vec<_> = nets
            .iter()
            .map(|n| (n.namespace.as_str(), n.name.as_str(), n.interface.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                ("default", "public-network", "net1"),
                ("default", "internal-network", "net2")
            ]
        );
    }

    #[test]
    fn seed_json_explicit_interfaces() {
        let value = seed_networks(seed::META_MULTIPLE_PROVIDERS);
        let nets = parse_networks(&value, "default").unwrap();
        assert_eq!(nets[0].interface, "net1");
        assert_eq!(nets[1].interface, "net2");
        assert!(nets.iter().all(|n| n.interface_requested));
    }

    #[test]
    fn seed_static_ip_in_cidr_form() {
        let value = seed_networks(seed::META_STATIC_IP);
        let nets = parse_networks(&value, "default").unwrap();
        assert_eq!(
            nets[0].ips,
            [IpRequest {
                address: ip("10.100.0.100"),
                prefix_len: Some(16)
            }]
        );
        assert_eq!(nets[0].ips[0].to_string(), "10.100.0.100/16");
    }

    #[test]
    fn comma_form_resolves_namespace_and_ifname() {
        let nets = parse_networks(" a , other/b@eth9 ,c", "pods").unwrap();
        let got: Vec<_> = nets
            .iter()
            .map(|n| (n.namespace.as_str(), n.name.as_str(), n.interface.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                ("pods", "a", "net1"),
                ("other", "b", "eth9"),
                ("pods", "c", "net3")
            ]
        );
    }

    #[test]
    fn json_fields_are_read() {
        let value = r#"[{"name":"n","namespace":"ns","ips":["10.0.0.5","fd00::5/64"],
            "mac":"0A:58:0A:00:00:05","default-route":["10.0.0.1"],
            "cni-args":{"k":"v"},"bandwidth":{"ingressRate":1000,"egressBurst":5},
            "portMappings":[{"hostPort":80,"containerPort":8080,"protocol":"tcp"}],
            "interfaceRequest":"old0","x.example.com/extra":1}]"#;
        let n = &parse_networks(value, "pods").unwrap()[0];
        assert_eq!(n.namespace, "ns");
        assert_eq!(n.interface, "old0");
        assert_eq!(
            n.ips[0],
            IpRequest {
                address: ip("10.0.0.5"),
                prefix_len: None
            }
        );
        assert_eq!(n.ips[1].prefix_len, Some(64));
        assert_eq!(n.mac.unwrap().to_string(), "0a:58:0a:00:00:05");
        assert_eq!(n.default_route, [ip("10.0.0.1")]);
        assert_eq!(n.cni_args.as_ref().unwrap()["k"], "v");
        assert_eq!(n.bandwidth.as_ref().unwrap().ingress_rate, Some(1000));
        assert_eq!(n.port_mappings[0].container_port, 8080);
    }

    #[test]
    fn same_nad_twice_gets_two_interfaces() {
        let nets = parse_networks("default/a,default/a", "default").unwrap();
        assert_eq!(nets[0].interface, "net1");
        assert_eq!(nets[1].interface, "net2");
    }

    #[test]
    fn empty_value_means_no_networks() {
        assert_eq!(parse_networks("", "default").unwrap(), []);
    }

    fn element_error(value: &str) -> (usize, String, String) {
        match parse_networks(value, "default") {
            Err(SelectionError::Element {
                index,
                element,
                reason,
            }) => (index, element, reason),
            other => panic!("{value}: expected an element error, got {other:?}"),
        }
    }

    #[test]
    fn comma_form_errors_name_the_element() {
        let (index, element, reason) = element_error("good, Bad_Name");
        assert_eq!((index, element.as_str()), (1, "Bad_Name"));
        assert!(reason.contains("DNS-1123"), "{reason}");

        let (_, _, reason) = element_error("a/b/c");
        assert!(reason.contains("'/'"), "{reason}");
        let (_, _, reason) = element_error("a@b@c");
        assert!(reason.contains("'@'"), "{reason}");
        let (_, _, reason) = element_error("a@abcdefghijklmnop");
        assert!(reason.contains("at most 15"), "{reason}");
        let (_, _, reason) = element_error(" ");
        assert!(reason.contains("empty"), "{reason}");
    }

    #[test]
    fn json_errors_name_the_element() {
        let err = parse_networks(r#"[{"name": "a""#, "default").unwrap_err();
        assert!(matches!(err, SelectionError::Json(_)), "{err}");
        let err = parse_networks(r#"{"name": "a"}"#, "default").unwrap_err();
        assert!(matches!(err, SelectionError::Json(_)), "{err}");

        let cases = [
            (r#"[{"name":"a","ips":["10.0.0.300"]}]"#, "10.0.0.300"),
            (r#"[{"name":"a","mac":"zz:00:00:00:00:00"}]"#, "MAC"),
            (r#"[{"name":"a","interface":"a/b"}]"#, "interface"),
            (r#"[{"name":"a","default-route":["gw"]}]"#, "default-route"),
            (
                r#"[{"name":"a","ips":["10.0.0.5"],"ipam-claim-reference":"c"}]"#,
                "mutually exclusive",
            ),
            (r#"[{"name":"x/a","namespace":"y"}]"#, "namespace"),
            (r#"[{"name":"a","namespace":"Bad"}]"#, "namespace"),
        ];
        for (value, needle) in cases {
            let (index, element, reason) = element_error(value);
            assert_eq!(index, 0);
            assert!(element.contains('a'), "{value}: {element}");
            assert!(reason.contains(needle), "{value}: {reason}");
        }
    }

    #[test]
    fn duplicate_interface_names_are_rejected() {
        let (index, _, reason) = element_error(r#"[{"name":"a","interface":"net2"},{"name":"b"}]"#);
        assert_eq!(index, 1);
        assert!(
            reason.contains("\"net2\" is already used by element 0"),
            "{reason}"
        );
    }

    #[test]
    fn error_messages_read_for_an_event() {
        let err = parse_networks("ok,Bad", "default").unwrap_err();
        assert_eq!(
            err.to_string(),
            "annotation k8s.v1.cni.cncf.io/networks: element 1 (Bad): name \"Bad\" must consist of lower case alphanumeric characters or '-' (DNS-1123 label)"
        );
    }

    mod properties {
        use super::*;
        use crate::api::annotations::Provider;
        use proptest::prelude::*;

        fn label() -> impl Strategy<Value = String> {
            "[a-z0-9]([-a-z0-9]{0,20}[a-z0-9])?"
        }

        proptest! {
            #[test]
            fn comma_form_round_trips(
                items in proptest::collection::vec((proptest::option::of(label()), label()), 1..5)
            ) {
                let value = items
                    .iter()
                    .map(|(ns, name)| match ns {
                        Some(ns) => format!("{ns}/{name}"),
                        None => name.clone(),
                    })
                    .collect::<Vec<_>>()
                    .join(",");
                let nets = parse_networks(&value, "pods").unwrap();
                for (i, ((ns, name), net)) in items.iter().zip(&nets).enumerate() {
                    prop_assert_eq!(&net.namespace, ns.as_deref().unwrap_or("pods"));
                    prop_assert_eq!(&net.name, name);
                    prop_assert_eq!(net.interface.clone(), format!("net{}", i + 1));
                    let provider = Provider::for_nad(&net.name, &net.namespace).unwrap();
                    prop_assert_eq!(Provider::parse(provider.as_str()).unwrap(), provider);
                }
            }

            #[test]
            fn json_and_comma_forms_agree(name in label(), ns in label(), ifname in "[a-z][a-z0-9]{0,14}") {
                let comma = parse_networks(&format!("{ns}/{name}@{ifname}"), "pods").unwrap();
                let json = parse_networks(
                    &format!(r#"[{{"name":"{name}","namespace":"{ns}","interface":"{ifname}"}}]"#),
                    "pods",
                )
                .unwrap();
                prop_assert_eq!(comma, json);
            }
        }
    }
}
