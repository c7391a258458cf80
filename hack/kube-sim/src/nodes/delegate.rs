//! A delegate: one network of a pod sandbox (the cluster default network on eth0, or a
//! NetworkAttachmentDefinition from the networks annotation), with the config, interface name,
//! `CNI_ARGS` and `runtimeConfig` Multus and libcni would give its plugin(s). Pure: building
//! and rendering only; exec lives in `exec.rs`.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::net::IpAddr;

use super::selection::NetworkSelection;

/// Everything needed to ADD and later DEL one network, cached per sandbox so that DEL works
/// after the NAD is gone.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Delegate {
    /// `<ns>/<nad>` for a NAD; the config name for the cluster default network.
    pub network_name: String,
    pub ifname: String,
    /// The cluster default network (Multus "master plugin").
    pub master: bool,
    /// A single plugin config or a conflist (`plugins`), `name` filled, `cni-args` merged.
    pub config: Value,
    /// Capability arguments Multus offers (`ips`, `mac`, `portMappings`, `bandwidth`); libcni
    /// passes a key in `runtimeConfig` only to a plugin that declares the capability.
    pub capability_args: Map<String, Value>,
    /// `MAC=`/`IP=` appended to `CNI_ARGS` on ADD (deprecated since Multus 3.5, still done).
    pub add_args: Vec<(String, String)>,
    /// The element's `default-route`: after ADD, the interface's default routes are replaced
    /// by routes via these gateways.
    #[serde(default)]
    pub gateway_request: Vec<IpAddr>,
    /// Another delegate asked for the IPv4 / IPv6 default route: after ADD, this interface's
    /// default routes are deleted (Multus `IsFilterV4Gateway`/`IsFilterV6Gateway`).
    #[serde(default)]
    pub filter_v4_gateway: bool,
    #[serde(default)]
    pub filter_v6_gateway: bool,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum DelegateError {
    #[error("network-attachment-definition {nad}: invalid config: {reason}")]
    Config { nad: String, reason: String },
    #[error("network {nad}: failed to parse IP address {ip:?}")]
    Ip { nad: String, ip: String },
    #[error("network {nad}: failed to parse mac address {mac:?}")]
    Mac { nad: String, mac: String },
    #[error("network {nad}: invalid default-route gateway {gateway:?}")]
    DefaultRoute { nad: String, gateway: String },
    #[error("multus does not support ECMP for default-route")]
    Ecmp,
}

/// The pod a sandbox belongs to, as `CNI_ARGS` names it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PodIdentity {
    pub namespace: String,
    pub name: String,
    pub uid: String,
}

impl Delegate {
    /// The cluster default network (eth0), from a conflist or single config.
    pub fn cluster_default(config: Value, ifname: &str) -> Delegate {
        let network_name = config_name(&config).to_string();
        Delegate {
            network_name,
            ifname: ifname.to_string(),
            master: true,
            config,
            capability_args: Map::new(),
            add_args: Vec::new(),
            gateway_request: Vec::new(),
            filter_v4_gateway: false,
            filter_v6_gateway: false,
        }
    }

    /// A NAD's delegate: `spec.config` with a missing `name` filled with the NAD name
    /// (nad-client `GetCNIConfigFromSpec`), `cni-args` merged under `args.cni` of every plugin;
    /// interface name from the element, else `net<position>` (`position` counts the cluster
    /// default network as 0).
    pub fn for_nad(
        selection: &NetworkSelection,
        nad_config: &str,
        position: usize,
    ) -> Result<Delegate, DelegateError> {
        let nad = format!("{}/{}", selection.namespace, selection.name);
        let config_error = |reason: String| DelegateError::Config {
            nad: nad.clone(),
            reason,
        };
        let mut config: Value =
            serde_json::from_str(nad_config).map_err(|e| config_error(format!("not JSON: {e}")))?;
        let object = config
            .as_object_mut()
            .ok_or_else(|| config_error("not a JSON object".into()))?;
        if object
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .is_empty()
        {
            object.insert("name".into(), Value::from(selection.name.clone()));
        }
        if let Some(plugins) = object.get("plugins") {
            let ok = plugins
                .as_array()
                .is_some_and(|p| !p.is_empty() && p.iter().all(|p| p.get("type").is_some()));
            if !ok {
                return Err(config_error(
                    "`plugins` must be a non-empty list of plugin configs with `type`".into(),
                ));
            }
        } else if object
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .is_empty()
        {
            return Err(config_error("no `type`".into()));
        }
        if let Some(args) = &selection.cni_args {
            merge_cni_args(&mut config, args);
        }
        let mut gateway_request = Vec::new();
        for gateway in &selection.default_route {
            let ip = gateway
                .parse::<IpAddr>()
                .map_err(|_| DelegateError::DefaultRoute {
                    nad: nad.clone(),
                    gateway: gateway.clone(),
                })?;
            gateway_request.push(ip);
        }
        let mut capability_args = Map::new();
        let mut add_args = Vec::new();
        if let Some(mac) = &selection.mac {
            if !is_mac(mac) {
                return Err(DelegateError::Mac {
                    nad,
                    mac: mac.clone(),
                });
            }
            capability_args.insert("mac".into(), Value::from(mac.clone()));
            add_args.push(("MAC".into(), mac.clone()));
        }
        if !selection.ips.is_empty() {
            for ip in &selection.ips {
                if !is_ip_or_cidr(ip) {
                    return Err(DelegateError::Ip {
                        nad,
                        ip: ip.clone(),
                    });
                }
            }
            capability_args.insert("ips".into(), Value::from(selection.ips.clone()));
            add_args.push(("IP".into(), selection.ips.join(",")));
        }
        if let Some(mappings) = &selection.port_mappings {
            capability_args.insert("portMappings".into(), mappings.clone());
        }
        if let Some(bandwidth) = &selection.bandwidth {
            capability_args.insert("bandwidth".into(), bandwidth.clone());
        }
        Ok(Delegate {
            network_name: nad,
            ifname: selection
                .interface
                .clone()
                .unwrap_or_else(|| format!("net{position}")),
            master: false,
            config,
            capability_args,
            add_args,
            gateway_request,
            filter_v4_gateway: false,
            filter_v6_gateway: false,
        })
    }

    /// Whether, after ADD, this interface's default routes are removed (and, with a
    /// `default-route` request, replaced).
    pub fn rewrites_default_route(&self) -> bool {
        self.filter_v4_gateway || self.filter_v6_gateway || !self.gateway_request.is_empty()
    }

    /// The configs of the plugins to exec, in ADD order.
    pub fn plugins(&self) -> Vec<&Map<String, Value>> {
        match self.config.get("plugins").and_then(Value::as_array) {
            Some(list) => list.iter().filter_map(Value::as_object).collect(),
            None => self.config.as_object().into_iter().collect(),
        }
    }

    pub fn cni_version(&self) -> &str {
        self.config
            .get("cniVersion")
            .and_then(Value::as_str)
            .unwrap_or_default()
    }

    /// libcni's `buildOneConfig`: the plugin config with the network's `name` and `cniVersion`,
    /// `runtimeConfig` holding only the declared capabilities, and `prevResult` when given.
    pub fn plugin_stdin(&self, plugin: &Map<String, Value>, prev_result: Option<&Value>) -> Value {
        let mut stdin = plugin.clone();
        stdin.insert("name".into(), Value::from(config_name(&self.config)));
        stdin.insert("cniVersion".into(), Value::from(self.cni_version()));
        let declared = plugin.get("capabilities").and_then(Value::as_object);
        let runtime: Map<String, Value> = self
            .capability_args
            .iter()
            .filter(|(key, _)| {
                declared.is_some_and(|caps| caps.get(*key).and_then(Value::as_bool) == Some(true))
            })
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        if !runtime.is_empty() {
            stdin.insert("runtimeConfig".into(), Value::Object(runtime));
        }
        if let Some(prev) = prev_result {
            stdin.insert("prevResult".into(), prev.clone());
        }
        Value::Object(stdin)
    }

    /// Whether libcni hands DEL the cached result as `prevResult` (config version ≥ 0.4.0).
    pub fn del_gets_prev_result(&self) -> bool {
        !matches!(
            self.cni_version(),
            "" | "0.1.0" | "0.2.0" | "0.3.0" | "0.3.1"
        )
    }
}

/// Multus `CheckGatewayConfig`: when some element asks for the default route of a family
/// (`default-route`), every other delegate (the cluster default network included) loses its
/// default route of that family. At most one gateway per family overall.
pub fn apply_gateway_requests(delegates: &mut [Delegate]) -> Result<(), DelegateError> {
    let count = |v4: bool| {
        delegates
            .iter()
            .flat_map(|d| d.gateway_request.iter())
            .filter(|g| g.is_ipv4() == v4)
            .count()
    };
    let (v4, v6) = (count(true), count(false));
    if v4 > 1 || v6 > 1 {
        return Err(DelegateError::Ecmp);
    }
    for delegate in delegates.iter_mut() {
        let asks = |v4_family: bool| {
            delegate
                .gateway_request
                .iter()
                .any(|g| g.is_ipv4() == v4_family)
        };
        let (asks_v4, asks_v6) = (asks(true), asks(false));
        delegate.filter_v4_gateway = v4 > 0 && !asks_v4;
        delegate.filter_v6_gateway = v6 > 0 && !asks_v6;
    }
    Ok(())
}

/// `CNI_ARGS` exactly as Multus builds them (`createRuntimeConf`), plus `extra` (`MAC=`, `IP=`)
/// on ADD.
pub fn cni_args(pod: &PodIdentity, container_id: &str, extra: &[(String, String)]) -> String {
    let mut args = format!(
        "IgnoreUnknown=true;K8S_POD_NAMESPACE={};K8S_POD_NAME={};K8S_POD_INFRA_CONTAINER_ID={};K8S_POD_UID={}",
        pod.namespace, pod.name, container_id, pod.uid
    );
    for (key, value) in extra {
        args.push_str(&format!(";{key}={value}"));
    }
    args
}

fn config_name(config: &Value) -> &str {
    config
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or_default()
}

/// Multus `injectCNIArgs`: element keys win over the config's `args.cni`.
fn merge_cni_args(config: &mut Value, extra: &Map<String, Value>) {
    let targets: Vec<&mut Value> = match config.get_mut("plugins") {
        Some(Value::Array(list)) => list.iter_mut().collect(),
        _ => vec![config],
    };
    for target in targets {
        let Some(object) = target.as_object_mut() else {
            continue;
        };
        let args = object
            .entry("args")
            .or_insert_with(|| Value::Object(Map::new()));
        if !args.is_object() {
            *args = Value::Object(Map::new());
        }
        let cni = args
            .as_object_mut()
            .expect("args was just made an object")
            .entry("cni")
            .or_insert_with(|| Value::Object(Map::new()));
        if !cni.is_object() {
            *cni = Value::Object(Map::new());
        }
        let cni = cni
            .as_object_mut()
            .expect("args.cni was just made an object");
        for (k, v) in extra {
            cni.insert(k.clone(), v.clone());
        }
    }
}

fn is_ip_or_cidr(s: &str) -> bool {
    match s.split_once('/') {
        Some((ip, prefix)) => {
            let Ok(ip) = ip.parse::<IpAddr>() else {
                return false;
            };
            let max = if ip.is_ipv4() { 32 } else { 128 };
            prefix.parse::<u8>().is_ok_and(|p| p <= max)
        }
        None => s.parse::<IpAddr>().is_ok(),
    }
}

fn is_mac(s: &str) -> bool {
    let parts: Vec<&str> = s.split([':', '-']).collect();
    parts.len() == 6
        && parts
            .iter()
            .all(|p| p.len() == 2 && p.chars().all(|c| c.is_ascii_hexdigit()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn element(json: Value) -> NetworkSelection {
        let mut s: NetworkSelection = serde_json::from_value(json).expect("element");
        if s.namespace.is_empty() {
            s.namespace = "default".into();
        }
        s
    }

    const SEED_NAD: &str = r#"{"cniVersion":"0.3.1","type":"kube-ovn",
        "server_socket":"/run/openvswitch/kube-ovn-daemon.sock","provider":"kube-ovn-vpc-network.default.ovn"}"#;

    #[test]
    fn seed_nad_gets_its_name_and_no_runtime_config() {
        let e = element(
            json!({"name": "kube-ovn-vpc-network", "ips": ["10.100.0.100"],
                               "mac": "00:00:00:11:22:33"}),
        );
        let d = Delegate::for_nad(&e, SEED_NAD, 1).expect("valid");
        assert_eq!(d.network_name, "default/kube-ovn-vpc-network");
        assert_eq!(d.ifname, "net1");
        let stdin = d.plugin_stdin(d.plugins()[0], None);
        assert_eq!(stdin["name"], "kube-ovn-vpc-network");
        assert_eq!(stdin["cniVersion"], "0.3.1");
        assert_eq!(
            stdin["server_socket"],
            "/run/openvswitch/kube-ovn-daemon.sock"
        );
        // No capabilities declared: requested addresses reach the plugin only as CNI_ARGS.
        assert!(stdin.get("runtimeConfig").is_none());
        let pod = PodIdentity {
            namespace: "default".into(),
            name: "p".into(),
            uid: "u-1".into(),
        };
        assert_eq!(
            cni_args(&pod, "abc", &d.add_args),
            "IgnoreUnknown=true;K8S_POD_NAMESPACE=default;K8S_POD_NAME=p;\
             K8S_POD_INFRA_CONTAINER_ID=abc;K8S_POD_UID=u-1;MAC=00:00:00:11:22:33;IP=10.100.0.100"
        );
        assert!(!d.del_gets_prev_result());
    }

    #[test]
    fn declared_capabilities_get_runtime_config_and_cni_args_merge() {
        let config = r#"{"cniVersion":"1.0.0","name":"given","type":"bridge","capabilities":{"ips":true,"mac":false},
                         "args":{"cni":{"keep":"1","over":"old"}}}"#;
        let e = element(
            json!({"name": "br", "interface": "blue", "ips": ["10.1.0.5/24"], "mac": "02:00:00:00:00:01",
                               "cni-args": {"over": "new"}}),
        );
        let d = Delegate::for_nad(&e, config, 3).expect("valid");
        assert_eq!(d.ifname, "blue");
        let stdin = d.plugin_stdin(d.plugins()[0], Some(&json!({"cniVersion": "1.0.0"})));
        assert_eq!(stdin["name"], "given");
        assert_eq!(stdin["runtimeConfig"], json!({"ips": ["10.1.0.5/24"]}));
        assert_eq!(stdin["args"]["cni"], json!({"keep": "1", "over": "new"}));
        assert_eq!(stdin["prevResult"]["cniVersion"], "1.0.0");
        assert!(d.del_gets_prev_result());
    }

    #[test]
    fn conflist_plugins_take_the_list_name_and_version() {
        let config = r#"{"cniVersion":"0.4.0","plugins":[{"type":"bridge"},{"type":"tuning"}]}"#;
        let d = Delegate::for_nad(&element(json!({"name": "l"})), config, 2).expect("valid");
        let plugins = d.plugins();
        assert_eq!(plugins.len(), 2);
        let second = d.plugin_stdin(plugins[1], None);
        assert_eq!(second["name"], "l");
        assert_eq!(second["cniVersion"], "0.4.0");
        assert_eq!(second["type"], "tuning");
        assert_eq!(d.ifname, "net2");
    }

    #[test]
    fn a_default_route_request_filters_the_other_interfaces() {
        let primary = Delegate::cluster_default(json!({"name": "p", "type": "bridge"}), "eth0");
        let wants = element(json!({"name": "a", "default-route": ["10.100.0.1"]}));
        let other = element(json!({"name": "b"}));
        let mut delegates = vec![
            primary,
            Delegate::for_nad(&wants, SEED_NAD, 1).expect("valid"),
            Delegate::for_nad(&other, SEED_NAD, 2).expect("valid"),
        ];
        apply_gateway_requests(&mut delegates).expect("one gateway");
        let flags: Vec<(bool, bool, bool)> = delegates
            .iter()
            .map(|d| {
                (
                    d.filter_v4_gateway,
                    d.filter_v6_gateway,
                    d.rewrites_default_route(),
                )
            })
            .collect();
        assert_eq!(
            flags,
            vec![
                (true, false, true),
                (false, false, true),
                (true, false, true)
            ]
        );

        let twice = element(json!({"name": "c", "default-route": ["10.1.0.1"]}));
        delegates.push(Delegate::for_nad(&twice, SEED_NAD, 3).expect("valid"));
        assert_eq!(
            apply_gateway_requests(&mut delegates),
            Err(DelegateError::Ecmp)
        );
    }

    #[test]
    fn no_default_route_request_changes_nothing() {
        let mut delegates = vec![Delegate::cluster_default(
            json!({"name": "p", "type": "bridge"}),
            "eth0",
        )];
        apply_gateway_requests(&mut delegates).expect("fine");
        assert!(!delegates[0].rewrites_default_route());
    }

    #[test]
    fn invalid_configs_and_requests_are_errors() {
        let e = element(json!({"name": "x"}));
        assert!(matches!(
            Delegate::for_nad(&e, "", 1),
            Err(DelegateError::Config { .. })
        ));
        assert!(matches!(
            Delegate::for_nad(&e, "{\"cniVersion\":\"1.0.0\"}", 1),
            Err(DelegateError::Config { .. })
        ));
        assert!(matches!(
            Delegate::for_nad(&e, "{\"plugins\":[]}", 1),
            Err(DelegateError::Config { .. })
        ));
        let bad_ip = element(json!({"name": "x", "ips": ["10.0.0.300"]}));
        assert!(matches!(
            Delegate::for_nad(&bad_ip, SEED_NAD, 1),
            Err(DelegateError::Ip { .. })
        ));
        let bad_mac = element(json!({"name": "x", "mac": "zz"}));
        assert!(matches!(
            Delegate::for_nad(&bad_mac, SEED_NAD, 1),
            Err(DelegateError::Mac { .. })
        ));
        let route = element(json!({"name": "x", "default-route": ["10.0.0"]}));
        assert!(matches!(
            Delegate::for_nad(&route, SEED_NAD, 1),
            Err(DelegateError::DefaultRoute { .. })
        ));
    }
}
