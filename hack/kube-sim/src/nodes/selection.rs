//! The pod annotation `k8s.v1.cni.cncf.io/networks`, parsed the way Multus (nad-client
//! `ParseNetworkAnnotation`) does: a JSON list when the value contains `[`, `{` or `"`, else the
//! comma form `[ns/]name[@ifname]` whose parts must be DNS-1123 labels. Pure: no I/O here.

use serde::Deserialize;
use serde_json::{Map, Value};

/// The annotation Multus reads the pod's extra networks from.
pub const NETWORKS_ANNOTATION: &str = "k8s.v1.cni.cncf.io/networks";
/// The annotation that replaces the cluster default network (eth0) with a NAD.
pub const DEFAULT_NETWORK_ANNOTATION: &str = "v1.multus-cni.io/default-network";
/// Where a `default-network` NAD without a namespace is looked up (Multus's namespace).
pub const MULTUS_NAMESPACE: &str = "kube-system";

/// One element of the networks annotation (multi-net-spec v1.3 `NetworkSelectionElement`).
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
pub struct NetworkSelection {
    pub name: String,
    /// Defaults to the pod's namespace after parsing.
    #[serde(default)]
    pub namespace: String,
    /// Requested interface name (`@ifname` in the comma form).
    #[serde(default)]
    pub interface: Option<String>,
    #[serde(default)]
    pub ips: Vec<String>,
    #[serde(default)]
    pub mac: Option<String>,
    /// Merged into the delegate config under `args.cni`.
    #[serde(default, rename = "cni-args")]
    pub cni_args: Option<Map<String, Value>>,
    #[serde(default, rename = "default-route")]
    pub default_route: Vec<String>,
    #[serde(default, rename = "portMappings")]
    pub port_mappings: Option<Value>,
    #[serde(default)]
    pub bandwidth: Option<Value>,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum SelectionError {
    #[error("failed to parse pod Network Attachment Selection Annotation JSON format: {0}")]
    Json(String),
    #[error("invalid network object {item:?}: {reason}")]
    Item { item: String, reason: String },
    #[error("network selection element without a name")]
    NoName,
}

/// Parses the annotation value; elements without a namespace get `pod_namespace`.
/// An empty value means no extra networks (Multus treats it as "no kubernetes network").
pub fn parse_networks(
    value: &str,
    pod_namespace: &str,
) -> Result<Vec<NetworkSelection>, SelectionError> {
    if value.trim().is_empty() {
        return Ok(Vec::new());
    }
    let mut networks = if value.contains(['[', '{', '"']) {
        serde_json::from_str::<Vec<NetworkSelection>>(value)
            .map_err(|e| SelectionError::Json(e.to_string()))?
    } else {
        value
            .split(',')
            .map(|item| parse_comma_item(item.trim()))
            .collect::<Result<Vec<_>, _>>()?
    };
    for network in &mut networks {
        if network.name.is_empty() {
            return Err(SelectionError::NoName);
        }
        // The user guide's JSON examples write `"name": "default/public-network"`; like
        // kube-ovn's own parser, take `ns/name` apart when no `namespace` key is given.
        if network.namespace.is_empty() {
            if let Some((namespace, name)) = network.name.split_once('/') {
                let (namespace, name) = (namespace.to_string(), name.to_string());
                network.namespace = namespace;
                network.name = name;
            }
        }
        if network.namespace.is_empty() {
            network.namespace = pod_namespace.to_string();
        }
    }
    Ok(networks)
}

/// `[ns/]name[@ifname]`.
fn parse_comma_item(item: &str) -> Result<NetworkSelection, SelectionError> {
    let fail = |reason: &str| SelectionError::Item {
        item: item.to_string(),
        reason: reason.to_string(),
    };
    let (namespace, rest) = match item.split('/').collect::<Vec<_>>()[..] {
        [name] => ("", name),
        [namespace, name] => (namespace.trim(), name),
        _ => return Err(fail("failed at '/'")),
    };
    let (name, interface) = match rest.split('@').collect::<Vec<_>>()[..] {
        [name] => (name.trim(), ""),
        [name, interface] => (name.trim(), interface.trim()),
        _ => return Err(fail("failed at '@'")),
    };
    // Multus checks namespace and name as DNS-1123 labels, the interface only for length and
    // characters.
    for part in [namespace, name] {
        if !part.is_empty() && !is_dns1123_label(part) {
            return Err(fail(&format!(
                "{part:?} is not a DNS-1123 label (lower case alphanumerics and '-', \
                 starting and ending alphanumerically)"
            )));
        }
    }
    if interface.len() > 15 || interface.contains(|c: char| c.is_whitespace() || c == '/') {
        return Err(fail(&format!(
            "interface name {interface:?}: must be less than 15 chars and not contain '/' or spaces"
        )));
    }
    Ok(NetworkSelection {
        name: name.to_string(),
        namespace: namespace.to_string(),
        interface: (!interface.is_empty()).then(|| interface.to_string()),
        ..NetworkSelection::default()
    })
}

fn is_dns1123_label(s: &str) -> bool {
    let bytes = s.as_bytes();
    let alnum = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    !bytes.is_empty()
        && bytes.iter().all(|b| alnum(b) || *b == b'-')
        && bytes.first().is_some_and(alnum)
        && bytes.last().is_some_and(alnum)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[NetworkSelection]) -> Vec<(String, String, Option<String>)> {
        list.iter()
            .map(|n| (n.namespace.clone(), n.name.clone(), n.interface.clone()))
            .collect()
    }

    #[test]
    fn json_name_with_a_namespace_is_split_as_the_guide_writes_it() {
        let parsed = parse_networks(
            r#"[{"name": "default/public-network"}, {"name": "x/y", "namespace": "n"}]"#,
            "pods",
        )
        .expect("parses");
        assert_eq!(
            (parsed[0].namespace.as_str(), parsed[0].name.as_str()),
            ("default", "public-network")
        );
        // An explicit namespace wins; the name is then taken as written.
        assert_eq!(
            (parsed[1].namespace.as_str(), parsed[1].name.as_str()),
            ("n", "x/y")
        );
    }

    #[test]
    fn comma_form_with_namespaces_and_interfaces() {
        let parsed = parse_networks(
            "default/kube-ovn-vpc-network, other@eth9 ,ns2/b@Net_5",
            "pods",
        )
        .expect("valid");
        assert_eq!(
            names(&parsed),
            vec![
                ("default".into(), "kube-ovn-vpc-network".into(), None),
                ("pods".into(), "other".into(), Some("eth9".into())),
                ("ns2".into(), "b".into(), Some("Net_5".into())),
            ]
        );
    }

    #[test]
    fn json_form_keeps_every_field() {
        let value = r#"[{"name":"a","interface":"net7","ips":["10.100.0.100/16"],"mac":"00:00:00:00:00:01",
            "cni-args":{"x":"y"},"default-route":["10.100.0.1"]},{"name":"b","namespace":"n"}]"#;
        let parsed = parse_networks(value, "pods").expect("valid");
        assert_eq!(parsed[0].namespace, "pods");
        assert_eq!(parsed[0].interface.as_deref(), Some("net7"));
        assert_eq!(parsed[0].ips, vec!["10.100.0.100/16"]);
        assert_eq!(parsed[0].mac.as_deref(), Some("00:00:00:00:00:01"));
        assert_eq!(
            parsed[0].cni_args.as_ref().and_then(|a| a.get("x")),
            Some(&Value::from("y"))
        );
        assert_eq!(parsed[0].default_route, vec!["10.100.0.1"]);
        assert_eq!(parsed[1].namespace, "n");
    }

    #[test]
    fn empty_annotation_means_no_networks() {
        assert_eq!(parse_networks("", "pods"), Ok(vec![]));
    }

    #[test]
    fn malformed_values_are_errors() {
        assert!(matches!(
            parse_networks("[{\"name\":", "p"),
            Err(SelectionError::Json(_))
        ));
        assert!(matches!(
            parse_networks("a/b/c", "p"),
            Err(SelectionError::Item { .. })
        ));
        assert!(matches!(
            parse_networks("a@b@c", "p"),
            Err(SelectionError::Item { .. })
        ));
        assert!(matches!(
            parse_networks("Upper", "p"),
            Err(SelectionError::Item { .. })
        ));
        assert!(matches!(
            parse_networks("a@bad\tname", "p"),
            Err(SelectionError::Item { .. })
        ));
        assert!(matches!(
            parse_networks("a@abcdefghijklmnop", "p"),
            Err(SelectionError::Item { .. })
        ));
        assert_eq!(parse_networks("a,,b", "p"), Err(SelectionError::NoName));
        assert!(matches!(
            parse_networks("[{\"namespace\":\"x\"}]", "p"),
            Err(SelectionError::Json(_))
        ));
        assert_eq!(
            parse_networks("[{\"name\":\"\"}]", "p"),
            Err(SelectionError::NoName)
        );
    }
}
