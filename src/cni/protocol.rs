//! The JSON the CNI shim and the node daemon exchange over the daemon's unix socket.
//!
//! The shim POSTs a [`CniRequest`] to [`ADD_PATH`], [`DEL_PATH`] or [`CHECK_PATH`]:
//!
//! ```json
//! {"containerId":"3f2a…","netns":"/var/run/netns/cni-1234","ifname":"net1",
//!  "podNamespace":"default","podName":"web-0","podUid":"9c1d…",
//!  "provider":"attachnet.default.ovn","cniVersion":"0.3.1",
//!  "ips":["10.1.0.5/24"],"mac":"00:00:00:12:34:56",
//!  "config":{ …the NAD config exactly as received on stdin… }}
//! ```
//!
//! `ips` and `mac` are what the caller asked for: runtimeConfig `ips`/`mac` (present only when the NAD
//! declares those capabilities) or else CNI_ARGS `IP=`/`MAC=`. `netns` is empty on a DEL whose runtime
//! gave none; `podNamespace`/`podName` may be empty on DEL only. `prevResult` is passed on for CHECK.
//!
//! Answers:
//! - ADD: `200` with a [`CniResponse`]:
//!   `{"interface":{"name":"net1","mac":"…","mtu":1400,"sandbox":"/var/run/netns/…"},
//!     "ips":[{"address":"10.1.0.5/24","gateway":"10.1.0.1"}],
//!     "routes":[{"dst":"10.2.0.0/16","gw":"10.1.0.1"}]}`
//!   which the shim renders as the CNI result in the caller's version (see `result.rs`);
//! - DEL and CHECK: `204` with no body;
//! - any failure: a non-2xx status with a CNI error body `{"cniVersion","code","msg","details"}`,
//!   which the shim prints unchanged (except `cniVersion`, set to the caller's).
//!
//! `GET` [`HEALTH_PATH`] answers `200` when the daemon can serve ADD, else a CNI error (code 50).

use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::api::mac::MacAddr;

pub const ADD_PATH: &str = "/api/v1/add";
pub const DEL_PATH: &str = "/api/v1/del";
pub const CHECK_PATH: &str = "/api/v1/check";
pub const HEALTH_PATH: &str = "/healthz";

/// One CNI invocation as the daemon sees it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CniRequest {
    pub container_id: String,
    /// Path of the pod's network namespace; empty when the runtime gave none (DEL only).
    #[serde(default)]
    pub netns: String,
    pub ifname: String,
    #[serde(default)]
    pub pod_namespace: String,
    #[serde(default)]
    pub pod_name: String,
    #[serde(default)]
    pub pod_uid: String,
    pub provider: String,
    pub cni_version: String,
    /// Requested addresses, bare (`10.1.0.5`) or CIDR (`10.1.0.5/24`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ips: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<MacAddr>,
    /// The NAD config (stdin) as received, for fields the shim does not interpret (`routes`, `args`…).
    #[serde(default)]
    pub config: serde_json::Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prev_result: Option<serde_json::Value>,
    /// The shim runs as another plugin's IPAM: ADD answers addresses and routes and builds
    /// no interface; DEL and CHECK have nothing to do on the node.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub ipam_only: bool,
}

/// The daemon's answer to ADD: what it configured in the pod.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CniResponse {
    pub interface: PodInterface,
    #[serde(default)]
    pub ips: Vec<IpConfig>,
    #[serde(default)]
    pub routes: Vec<RouteConfig>,
}

/// The pod-side interface.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PodInterface {
    pub name: String,
    pub mac: MacAddr,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    /// The pod's netns path.
    pub sandbox: String,
}

/// An address on the pod interface (CIDR) and its subnet's gateway.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct IpConfig {
    pub address: IpNet,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<IpAddr>,
}

/// A route in the pod via the interface; no `gw` means on-link.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct RouteConfig {
    pub dst: IpNet,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gw: Option<IpAddr>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_round_trips_with_optional_fields_absent() {
        let json = r#"{"containerId":"c1","ifname":"net1","provider":"p","cniVersion":"1.0.0"}"#;
        let req: CniRequest = serde_json::from_str(json).expect("request");
        assert_eq!(req.netns, "");
        assert!(req.ips.is_empty() && req.mac.is_none() && req.prev_result.is_none());
        let again: CniRequest =
            serde_json::from_str(&serde_json::to_string(&req).expect("ser")).expect("de");
        assert_eq!(again, req);
    }
}
