//! CNI ADD results of every spec version, converted to one shape (as libcni's
//! `NewResultFromResult` converts to 1.0), and the `k8s.v1.cni.cncf.io/network-status` entries
//! Multus 4.x builds from them (nad-client `CreateNetworkStatuses`). Pure: no I/O here.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The annotation Multus writes after every delegate succeeded.
pub const NETWORK_STATUS_ANNOTATION: &str = "k8s.v1.cni.cncf.io/network-status";

/// A CNI result in the 1.0 shape.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct CniResult {
    pub interfaces: Vec<ResultInterface>,
    pub ips: Vec<ResultIp>,
    pub routes: Vec<ResultRoute>,
    pub dns: Dns,
}

#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
pub struct ResultInterface {
    pub name: String,
    #[serde(default)]
    pub mac: String,
    #[serde(default)]
    pub mtu: u32,
    #[serde(default)]
    pub sandbox: String,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ResultIp {
    /// CIDR form, e.g. `10.244.1.2/24`.
    pub address: String,
    #[serde(default)]
    pub gateway: Option<String>,
    #[serde(default)]
    pub interface: Option<usize>,
}

impl ResultIp {
    /// The address without its prefix length.
    pub fn bare(&self) -> &str {
        self.address.split('/').next().unwrap_or(&self.address)
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ResultRoute {
    pub dst: String,
    #[serde(default)]
    pub gw: Option<String>,
}

impl ResultRoute {
    fn is_default(&self) -> bool {
        let net = self.dst.split('/').next().unwrap_or_default();
        matches!(net, "" | "0.0.0.0" | "::")
    }
}

/// CNI `dns`; also the `dns` of a network-status entry, which Multus always writes (`{}` when
/// empty) because Go's `omitempty` does not omit structs.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Dns {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nameservers: Vec<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub domain: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub search: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
#[error("CNI result (cniVersion {version:?}) cannot be read: {reason}")]
pub struct ResultError {
    pub version: String,
    pub reason: String,
}

#[derive(Deserialize)]
struct Current {
    #[serde(default)]
    interfaces: Vec<ResultInterface>,
    #[serde(default)]
    ips: Vec<ResultIp>,
    #[serde(default)]
    routes: Vec<ResultRoute>,
    #[serde(default)]
    dns: Dns,
}

/// 0.1.0/0.2.0: `ip4`/`ip6` objects and no interfaces.
#[derive(Deserialize)]
struct Legacy {
    #[serde(default)]
    ip4: Option<LegacyIp>,
    #[serde(default)]
    ip6: Option<LegacyIp>,
    #[serde(default)]
    dns: Dns,
}

#[derive(Deserialize)]
struct LegacyIp {
    ip: String,
    #[serde(default)]
    gateway: Option<String>,
    #[serde(default)]
    routes: Vec<ResultRoute>,
}

impl CniResult {
    /// Reads a plugin's ADD output, whatever `cniVersion` it declares. In 0.3.x/0.4.0 results
    /// `ips[].version` is ignored and interfaces carry no `mtu`, exactly as after libcni's
    /// conversion.
    pub fn parse(raw: &Value) -> Result<CniResult, ResultError> {
        let version = raw
            .get("cniVersion")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let fail = |e: serde_json::Error| ResultError {
            version: version.clone(),
            reason: e.to_string(),
        };
        match version.as_str() {
            "0.1.0" | "0.2.0" => {
                let legacy: Legacy = serde_json::from_value(raw.clone()).map_err(fail)?;
                let mut result = CniResult {
                    dns: legacy.dns,
                    ..CniResult::default()
                };
                for ip in [legacy.ip4, legacy.ip6].into_iter().flatten() {
                    result.ips.push(ResultIp {
                        address: ip.ip,
                        gateway: ip.gateway,
                        interface: None,
                    });
                    result.routes.extend(ip.routes);
                }
                Ok(result)
            }
            "0.3.0" | "0.3.1" | "0.4.0" => {
                let current: Current = serde_json::from_value(raw.clone()).map_err(fail)?;
                let mut result = CniResult::from(current);
                for interface in &mut result.interfaces {
                    interface.mtu = 0;
                }
                Ok(result)
            }
            v if v.starts_with("1.") => {
                let current: Current = serde_json::from_value(raw.clone()).map_err(fail)?;
                Ok(CniResult::from(current))
            }
            _ => Err(ResultError {
                version: version.clone(),
                reason: "unknown CNI version".into(),
            }),
        }
    }

    /// Addresses (CIDR form) placed on the interface named `ifname` inside the sandbox, or all
    /// addresses when the result says nothing about interfaces.
    pub fn sandbox_addresses(&self, ifname: &str) -> Vec<&ResultIp> {
        self.ips
            .iter()
            .filter(
                |ip| match ip.interface.and_then(|i| self.interfaces.get(i)) {
                    Some(interface) => interface.name == ifname && !interface.sandbox.is_empty(),
                    None => true,
                },
            )
            .collect()
    }

    fn default_gateways(&self) -> Vec<String> {
        self.routes
            .iter()
            .filter(|r| r.is_default())
            .filter_map(|r| r.gw.clone())
            .collect()
    }
}

impl From<Current> for CniResult {
    fn from(c: Current) -> Self {
        CniResult {
            interfaces: c.interfaces,
            ips: c.ips,
            routes: c.routes,
            dns: c.dns,
        }
    }
}

/// One entry of `k8s.v1.cni.cncf.io/network-status` (nad-client `NetworkStatus`; field order and
/// omissions as Go's encoding/json writes them).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NetworkStatus {
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub interface: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ips: Vec<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub mac: String,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub mtu: u32,
    #[serde(default, skip_serializing_if = "is_false")]
    pub default: bool,
    #[serde(default)]
    pub dns: Dns,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gateway: Vec<String>,
}

fn is_zero(v: &u32) -> bool {
    *v == 0
}

fn is_false(v: &bool) -> bool {
    !*v
}

/// The entries Multus writes for one delegate's result: `network_name` is `<ns>/<nad>` for a
/// NAD, the config name for the cluster default network (`default` true).
pub fn network_statuses(
    result: &CniResult,
    network_name: &str,
    default: bool,
) -> Vec<NetworkStatus> {
    if result.interfaces.len() == 1 {
        return vec![single_interface_status(result, network_name, default)];
    }
    let gateways = result.default_gateways();
    // The cluster default marks the sandbox interface that carries a gateway, else the first.
    let gateway_interface = default
        .then(|| {
            result
                .ips
                .iter()
                .find(|ip| ip.gateway.is_some() && ip.interface.is_some())
                .and_then(|ip| ip.interface)
        })
        .flatten();
    let mut statuses = Vec::new();
    let mut index_of = std::collections::HashMap::new();
    let mut marked_default = false;
    for (i, interface) in result.interfaces.iter().enumerate() {
        if interface.sandbox.is_empty() {
            continue;
        }
        let is_default = default && !marked_default && gateway_interface.is_none_or(|g| g == i);
        marked_default |= is_default;
        index_of.insert(i, statuses.len());
        statuses.push(NetworkStatus {
            name: network_name.to_string(),
            interface: interface.name.clone(),
            ips: Vec::new(),
            mac: interface.mac.clone(),
            mtu: interface.mtu,
            default: is_default,
            dns: result.dns.clone(),
            gateway: gateways.clone(),
        });
    }
    let last = statuses.len().checked_sub(1);
    for ip in &result.ips {
        // IPs that name a host-side interface are dropped; IPs that name none go to the last
        // sandbox interface.
        let target = match ip.interface {
            Some(i) => index_of.get(&i).copied(),
            None => last,
        };
        if let Some(t) = target {
            statuses[t].ips.push(ip.bare().to_string());
        }
    }
    statuses
}

fn single_interface_status(result: &CniResult, network_name: &str, default: bool) -> NetworkStatus {
    let mut status = NetworkStatus {
        name: network_name.to_string(),
        interface: String::new(),
        ips: result.ips.iter().map(|ip| ip.bare().to_string()).collect(),
        mac: String::new(),
        mtu: 0,
        default,
        dns: result.dns.clone(),
        gateway: result.default_gateways(),
    };
    if let Some(interface) = result.interfaces.iter().rfind(|i| !i.sandbox.is_empty()) {
        status.interface = interface.name.clone();
        status.mac = interface.mac.clone();
        status.mtu = interface.mtu;
    }
    status
}

/// The annotation value as Multus writes it: `[` + entries indented by four spaces, joined
/// by `,` + `]`.
pub fn render_network_status(statuses: &[NetworkStatus]) -> String {
    let entries: Vec<String> = statuses
        .iter()
        .map(|s| {
            let mut out = Vec::new();
            let formatter = serde_json::ser::PrettyFormatter::with_indent(b"    ");
            let mut serializer = serde_json::Serializer::with_formatter(&mut out, formatter);
            s.serialize(&mut serializer)
                .expect("a NetworkStatus always serializes");
            String::from_utf8(out).expect("serde_json writes UTF-8")
        })
        .collect();
    format!("[{}]", entries.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// What Debian's bridge plugin (1.0.0) returns: bridge, host veth, pod eth0.
    fn bridge_result() -> Value {
        json!({
            "cniVersion": "1.0.0",
            "interfaces": [
                {"name": "ksim0", "mac": "aa:aa:aa:aa:aa:01"},
                {"name": "veth1234", "mac": "aa:aa:aa:aa:aa:02"},
                {"name": "eth0", "mac": "aa:aa:aa:aa:aa:03", "sandbox": "/run/netns/p1"}
            ],
            "ips": [{"interface": 2, "address": "10.244.1.2/24", "gateway": "10.244.1.1"}],
            "routes": [{"dst": "0.0.0.0/0", "gw": "10.244.1.1"}],
            "dns": {}
        })
    }

    #[test]
    fn bridge_result_gives_one_entry_for_the_sandbox_interface() {
        let result = CniResult::parse(&bridge_result()).expect("valid");
        let statuses = network_statuses(&result, "kube-sim-primary", true);
        assert_eq!(
            statuses,
            vec![NetworkStatus {
                name: "kube-sim-primary".into(),
                interface: "eth0".into(),
                ips: vec!["10.244.1.2".into()],
                mac: "aa:aa:aa:aa:aa:03".into(),
                mtu: 0,
                default: true,
                dns: Dns::default(),
                gateway: vec!["10.244.1.1".into()],
            }]
        );
    }

    #[test]
    fn kube_ovn_style_031_result_single_interface() {
        let raw = json!({
            "cniVersion": "0.3.1",
            "interfaces": [{"name": "net1", "mac": "00:00:00:aa:bb:cc", "mtu": 1400, "sandbox": "/run/netns/p"}],
            "ips": [{"version": "4", "interface": 0, "address": "10.100.0.2/16", "gateway": "10.100.0.1"}],
            "dns": {}
        });
        let result = CniResult::parse(&raw).expect("valid");
        let statuses = network_statuses(&result, "default/vpc-net", false);
        assert_eq!(statuses.len(), 1);
        assert_eq!(statuses[0].interface, "net1");
        assert_eq!(statuses[0].ips, vec!["10.100.0.2"]);
        // 0.3.x results have no interface mtu, so none reaches the status.
        assert_eq!(statuses[0].mtu, 0);
        assert!(!statuses[0].default);
        assert!(statuses[0].gateway.is_empty());
        let rendered = render_network_status(&statuses);
        let back: Vec<Value> = serde_json::from_str(&rendered).expect("json");
        assert_eq!(
            back[0],
            json!({"name": "default/vpc-net", "interface": "net1", "ips": ["10.100.0.2"],
                   "mac": "00:00:00:aa:bb:cc", "dns": {}})
        );
    }

    #[test]
    fn version_1_keeps_mtu_and_multi_interface_ips_follow_their_index() {
        let raw = json!({
            "cniVersion": "1.1.0",
            "interfaces": [
                {"name": "host", "mac": "00:00:00:00:00:01"},
                {"name": "net1", "mac": "00:00:00:00:00:02", "mtu": 1400, "sandbox": "/x"},
                {"name": "net2", "mac": "00:00:00:00:00:03", "sandbox": "/x"}
            ],
            "ips": [
                {"interface": 2, "address": "10.0.2.2/24"},
                {"interface": 1, "address": "fd00::2/64"},
                {"interface": 0, "address": "192.168.0.1/24"},
                {"address": "10.9.9.9/32"}
            ],
            "routes": [{"dst": "::/0", "gw": "fd00::1"}, {"dst": "10.0.0.0/8", "gw": "10.0.2.1"}]
        });
        let result = CniResult::parse(&raw).expect("valid");
        let statuses = network_statuses(&result, "ns/multi", false);
        assert_eq!(statuses.len(), 2);
        assert_eq!(statuses[0].interface, "net1");
        assert_eq!(statuses[0].mtu, 1400);
        assert_eq!(statuses[0].ips, vec!["fd00::2"]);
        assert_eq!(statuses[1].ips, vec!["10.0.2.2", "10.9.9.9"]);
        assert_eq!(statuses[1].gateway, vec!["fd00::1"]);
        assert!(statuses.iter().all(|s| !s.default));
    }

    #[test]
    fn legacy_020_result_without_interfaces_has_no_entry() {
        let raw = json!({"cniVersion": "0.2.0", "ip4": {"ip": "10.1.0.5/16", "gateway": "10.1.0.1",
                         "routes": [{"dst": "0.0.0.0/0"}]}});
        let result = CniResult::parse(&raw).expect("valid");
        assert_eq!(result.ips[0].bare(), "10.1.0.5");
        assert!(network_statuses(&result, "ns/old", false).is_empty());
    }

    #[test]
    fn unknown_versions_are_errors() {
        assert!(CniResult::parse(&json!({"cniVersion": "9.9.9"})).is_err());
        assert!(CniResult::parse(&json!({"cniVersion": "1.0.0", "ips": 3})).is_err());
    }

    #[test]
    fn rendering_matches_multus_layout() {
        let status = NetworkStatus {
            name: "a".into(),
            interface: "eth0".into(),
            ips: vec!["10.0.0.1".into()],
            mac: String::new(),
            mtu: 0,
            default: true,
            dns: Dns::default(),
            gateway: vec![],
        };
        assert_eq!(
            render_network_status(&[status]),
            "[{\n    \"name\": \"a\",\n    \"interface\": \"eth0\",\n    \"ips\": [\n        \"10.0.0.1\"\n    ],\n    \"default\": true,\n    \"dns\": {}\n}]"
        );
    }
}
