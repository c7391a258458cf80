//! `k8s.v1.cni.cncf.io/network-status`, written by Multus after ADD (one entry per
//! attached interface, nad-client's `NetworkStatus`): read by the NAT gateway
//! controller for interface names, written by kube-sim's Multus, shown by the demo.

use serde::{Deserialize, Serialize};

/// One entry of the network-status list.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NetworkStatus {
    /// `ns/nad` (the cluster default network has its own name).
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<String>,
    /// Addresses without prefix length.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ips: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    /// True only for the cluster default network.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub default: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns: Option<serde_json::Value>,
    #[serde(
        rename = "device-info",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub device_info: Option<serde_json::Value>,
    /// Gateways of the result's default routes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gateway: Vec<String>,
}

/// Parses the annotation value.
pub fn parse_network_status(value: &str) -> Result<Vec<NetworkStatus>, serde_json::Error> {
    serde_json::from_str(value)
}

/// The interface Multus attached `network` (`ns/nad`) as, the first if several.
pub fn interface_of<'a>(statuses: &'a [NetworkStatus], network: &str) -> Option<&'a str> {
    statuses
        .iter()
        .find(|s| s.name == network)
        .and_then(|s| s.interface.as_deref())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_what_multus_writes() {
        let value = r#"[{"name":"cilium","interface":"eth0","ips":["10.0.1.5"],"mac":"aa:bb:cc:dd:ee:ff","default":true,"dns":{}},
            {"name":"default/kube-ovn-vpc-network","interface":"net1","ips":["10.100.0.2"],"mac":"0a:58:0a:64:00:02","dns":{}}]"#;
        let statuses = parse_network_status(value).unwrap();
        assert!(statuses[0].default);
        assert_eq!(
            interface_of(&statuses, "default/kube-ovn-vpc-network"),
            Some("net1")
        );
        assert_eq!(statuses[1].ips, ["10.100.0.2"]);
        assert_eq!(interface_of(&statuses, "default/other"), None);
        let json = serde_json::to_value(&statuses[1]).unwrap();
        assert!(json.get("default").is_none() && json.get("gateway").is_none());
    }
}
