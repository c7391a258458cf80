//! The NetworkAttachmentDefinition (`k8s.cni.cncf.io/v1`, namespaced, `spec.config`
//! a CNI config string) and the reading of a kube-ovn NAD config into
//! `KubeOvnNetConf`. Whether a NAD is ours is decided here: `type` is `kube-ovn`; another
//! plugin's NAD whose `ipam.type` is `kube-ovn` is IPAM-only (`KubeOvnIpamConf`).

// kube-derive attributes repeat keys (`printcolumn(type_ = …)`) by design.
#![allow(clippy::duplicated_attributes)]

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The CNI `type` of our plugin.
pub const KUBE_OVN_CNI_TYPE: &str = "kube-ovn";

/// The spec of a NetworkAttachmentDefinition.
#[derive(CustomResource, Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "k8s.cni.cncf.io",
    version = "v1",
    kind = "NetworkAttachmentDefinition",
    plural = "network-attachment-definitions",
    shortname = "net-attach-def",
    namespaced,
    derive = "Default",
    derive = "PartialEq"
)]
pub struct NetworkAttachmentDefinitionSpec {
    /// The CNI configuration (JSON) Multus hands to the plugin.
    #[serde(default)]
    pub config: String,
}

/// The kube-ovn plugin configuration a NAD carries.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KubeOvnNetConf {
    #[serde(rename = "cniVersion")]
    pub cni_version: String,
    /// Multus fills a missing name with the NAD's name; so do we.
    #[serde(default)]
    pub name: String,
    #[serde(rename = "type")]
    pub plugin_type: String,
    /// The node daemon's socket.
    pub server_socket: String,
    /// Must equal `<nad>.<nad-namespace>.ovn` (checked by the attachment planner); a
    /// missing one is [`NadConfigError::MissingProvider`].
    #[serde(default)]
    pub provider: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipam: Option<serde_json::Value>,
    /// Which runtimeConfig keys (`ips`, `mac`, …) libcni passes to the plugin.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub capabilities: std::collections::BTreeMap<String, bool>,
}

impl KubeOvnNetConf {
    /// Whether libcni will pass `runtimeConfig.<key>` to the plugin.
    pub fn has_capability(&self, key: &str) -> bool {
        self.capabilities.get(key).copied().unwrap_or(false)
    }
}

/// Why a NAD config is not a usable kube-ovn config.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NadConfigError {
    /// `spec.config` is not a JSON object.
    #[error("NAD {nad}: spec.config is not valid JSON: {reason}")]
    Malformed { nad: String, reason: String },
    /// Another plugin's NAD (or a plugin list): not ours.
    #[error("NAD {nad}: CNI type is {found:?}, not \"kube-ovn\"")]
    NotKubeOvn { nad: String, found: String },
    /// A kube-ovn config missing or mistyping a field.
    #[error("NAD {nad}: kube-ovn config: {reason}")]
    Invalid { nad: String, reason: String },
    /// No `provider`: Kube-OVN's default `ovn` is the primary network, which secondary mode
    /// does not serve, so no address would ever be allocated.
    #[error(
        "NAD {nad}: kube-ovn config has no \"provider\"; add \"provider\": \"{expected}\" \
         (<nad>.<namespace>.ovn) to its spec.config"
    )]
    MissingProvider { nad: String, expected: String },
}

impl NadConfigError {
    /// True when the NAD simply belongs to another plugin.
    pub fn is_not_kube_ovn(&self) -> bool {
        matches!(self, Self::NotKubeOvn { .. })
    }

    /// The Event reason (one CamelCase word).
    pub fn reason(&self) -> &'static str {
        match self {
            Self::MissingProvider { .. } => "MissingProvider",
            _ => "InvalidNetworkAttachmentDefinition",
        }
    }
}

/// Reads a NAD's `spec.config` as a kube-ovn config. `nad` (`ns/name`) names the
/// NAD in errors, and its name fills a missing `name`.
pub fn parse_kube_ovn_config(nad: &str, config: &str) -> Result<KubeOvnNetConf, NadConfigError> {
    let value: serde_json::Value =
        serde_json::from_str(config).map_err(|e| NadConfigError::Malformed {
            nad: nad.to_owned(),
            reason: e.to_string(),
        })?;
    let object = value.as_object().ok_or_else(|| NadConfigError::Malformed {
        nad: nad.to_owned(),
        reason: "not a JSON object".into(),
    })?;
    let found = match object.get("type") {
        Some(serde_json::Value::String(t)) => t.clone(),
        Some(_) => "a non-string value".into(),
        None if object.contains_key("plugins") => "a plugin list (\"plugins\")".into(),
        None => "missing".into(),
    };
    if found != KUBE_OVN_CNI_TYPE {
        return Err(NadConfigError::NotKubeOvn {
            nad: nad.to_owned(),
            found,
        });
    }
    let mut conf: KubeOvnNetConf =
        serde_json::from_value(value).map_err(|e| NadConfigError::Invalid {
            nad: nad.to_owned(),
            reason: e.to_string(),
        })?;
    let invalid = |reason: &str| NadConfigError::Invalid {
        nad: nad.to_owned(),
        reason: reason.to_owned(),
    };
    if conf.server_socket.is_empty() {
        return Err(invalid("\"server_socket\" is empty"));
    }
    if conf.provider.trim().is_empty() {
        let (namespace, name) = nad.split_once('/').unwrap_or(("<namespace>", nad));
        return Err(NadConfigError::MissingProvider {
            nad: nad.to_owned(),
            expected: format!("{name}.{namespace}.ovn"),
        });
    }
    if conf.cni_version.is_empty() {
        return Err(invalid("\"cniVersion\" is empty"));
    }
    if conf.name.is_empty() {
        conf.name = nad.rsplit('/').next().unwrap_or(nad).to_owned();
    }
    Ok(conf)
}

/// The `ipam` section of another plugin's NAD that takes its addresses from kube-ovn
/// (`"ipam": {"type": "kube-ovn", "server_socket": …, "provider": "<nad>.<ns>"}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KubeOvnIpamConf {
    #[serde(rename = "type")]
    pub ipam_type: String,
    #[serde(default)]
    pub server_socket: String,
    /// Must equal `<nad>.<nad-namespace>` (checked by the attachment planner).
    #[serde(default)]
    pub provider: String,
}

/// The kube-ovn IPAM section of a NAD config whose plugin is not kube-ovn: `Ok(None)` when
/// its IPAM is another one (or the config has none); an error when it names kube-ovn but
/// lacks the provider.
pub fn parse_kube_ovn_ipam(
    nad: &str,
    config: &str,
) -> Result<Option<KubeOvnIpamConf>, NadConfigError> {
    let value: serde_json::Value =
        serde_json::from_str(config).map_err(|e| NadConfigError::Malformed {
            nad: nad.to_owned(),
            reason: e.to_string(),
        })?;
    let Some(ipam) = value.get("ipam") else {
        return Ok(None);
    };
    if ipam.get("type").and_then(serde_json::Value::as_str) != Some(KUBE_OVN_CNI_TYPE) {
        return Ok(None);
    }
    let conf: KubeOvnIpamConf =
        serde_json::from_value(ipam.clone()).map_err(|e| NadConfigError::Invalid {
            nad: nad.to_owned(),
            reason: format!("ipam: {e}"),
        })?;
    if conf.provider.is_empty() {
        return Err(NadConfigError::Invalid {
            nad: nad.to_owned(),
            reason: "ipam: \"provider\" is empty (it must be <nad>.<namespace>)".into(),
        });
    }
    Ok(Some(conf))
}

impl NetworkAttachmentDefinition {
    /// `ns/name` of this NAD.
    pub fn key(&self) -> String {
        format!(
            "{}/{}",
            self.metadata.namespace.as_deref().unwrap_or_default(),
            self.metadata.name.as_deref().unwrap_or_default()
        )
    }

    /// This NAD's config as a kube-ovn config.
    pub fn kube_ovn_config(&self) -> Result<KubeOvnNetConf, NadConfigError> {
        parse_kube_ovn_config(&self.key(), &self.spec.config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_nad_reads_as_kube_ovn_config() {
        let nad: NetworkAttachmentDefinition = crate::api::seed::document(crate::api::seed::NAD);
        assert_eq!(nad.key(), "default/kube-ovn-vpc-network");
        let conf = nad.kube_ovn_config().unwrap();
        assert_eq!(conf.cni_version, "0.3.1");
        assert_eq!(conf.name, "kube-ovn-vpc-network");
        assert_eq!(conf.server_socket, "/run/openvswitch/kube-ovn-daemon.sock");
        assert_eq!(conf.provider, "kube-ovn-vpc-network.default.ovn");
        assert!(!conf.has_capability("ips"));
        assert_eq!(conf.ipam, None);
    }

    #[test]
    fn optional_fields_are_read() {
        let conf = parse_kube_ovn_config(
            "ns/n",
            r#"{"cniVersion":"1.0.0","name":"given","type":"kube-ovn","server_socket":"/s",
                "provider":"n.ns.ovn","ipam":{"type":"kube-ovn"},"capabilities":{"ips":true,"mac":false}}"#,
        )
        .unwrap();
        assert_eq!(conf.name, "given");
        assert!(conf.has_capability("ips"));
        assert!(!conf.has_capability("mac"));
        assert_eq!(conf.ipam.unwrap()["type"], "kube-ovn");
    }

    #[test]
    fn other_plugins_are_not_ours() {
        for config in [
            r#"{"cniVersion":"0.3.1","type":"macvlan","master":"eth0"}"#,
            r#"{"cniVersion":"0.3.1","plugins":[{"type":"kube-ovn"}]}"#,
            r#"{"cniVersion":"0.3.1"}"#,
        ] {
            let err = parse_kube_ovn_config("ns/n", config).unwrap_err();
            assert!(err.is_not_kube_ovn(), "{config}: {err}");
            assert!(
                err.to_string().starts_with("NAD ns/n: CNI type is"),
                "{err}"
            );
        }
    }

    #[test]
    fn other_plugins_may_take_addresses_from_kube_ovn() {
        let macvlan = r#"{"cniVersion":"0.3.1","type":"macvlan","master":"eth1","mode":"bridge",
            "ipam":{"type":"kube-ovn","server_socket":"/run/openvswitch/kube-ovn-daemon.sock",
            "provider":"ovn-vpc-external-network.kube-system"}}"#;
        let conf = parse_kube_ovn_ipam("kube-system/ovn-vpc-external-network", macvlan)
            .unwrap()
            .unwrap();
        assert_eq!(conf.provider, "ovn-vpc-external-network.kube-system");
        assert_eq!(conf.server_socket, "/run/openvswitch/kube-ovn-daemon.sock");
        let host_local = r#"{"cniVersion":"0.3.1","type":"macvlan","ipam":{"type":"host-local"}}"#;
        assert_eq!(parse_kube_ovn_ipam("ns/n", host_local).unwrap(), None);
        assert_eq!(
            parse_kube_ovn_ipam("ns/n", r#"{"type":"macvlan"}"#).unwrap(),
            None
        );
        let no_provider = r#"{"type":"macvlan","ipam":{"type":"kube-ovn"}}"#;
        let err = parse_kube_ovn_ipam("ns/n", no_provider).unwrap_err();
        assert!(err.to_string().contains("provider"), "{err}");
    }

    #[test]
    fn malformed_and_incomplete_configs_say_why() {
        let err = parse_kube_ovn_config("ns/n", "{ not json").unwrap_err();
        assert!(matches!(err, NadConfigError::Malformed { .. }), "{err}");
        let err = parse_kube_ovn_config("ns/n", "[1]").unwrap_err();
        assert!(matches!(err, NadConfigError::Malformed { .. }), "{err}");

        let missing_socket = r#"{"cniVersion":"0.3.1","type":"kube-ovn","provider":"n.ns.ovn"}"#;
        let err = parse_kube_ovn_config("ns/n", missing_socket).unwrap_err();
        assert!(err.to_string().contains("server_socket"), "{err}");
        let missing_provider = r#"{"cniVersion":"0.3.1","type":"kube-ovn","server_socket":"/s"}"#;
        let err = parse_kube_ovn_config("ns/n", missing_provider).unwrap_err();
        assert_eq!(
            err.to_string(),
            "NAD ns/n: kube-ovn config has no \"provider\"; add \"provider\": \"n.ns.ovn\" (<nad>.<namespace>.ovn) to its spec.config"
        );
        assert_eq!(err.reason(), "MissingProvider");
        let empty_provider =
            r#"{"cniVersion":"0.3.1","type":"kube-ovn","server_socket":"/s","provider":" "}"#;
        let err = parse_kube_ovn_config("ns/n", empty_provider).unwrap_err();
        assert!(
            matches!(err, NadConfigError::MissingProvider { ref expected, .. } if expected == "n.ns.ovn"),
            "{err}"
        );
        let no_version = r#"{"type":"kube-ovn","server_socket":"/s","provider":"n.ns.ovn"}"#;
        let err = parse_kube_ovn_config("ns/n", no_version).unwrap_err();
        assert!(err.to_string().contains("cniVersion"), "{err}");
    }
}
