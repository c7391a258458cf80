//! Renders the daemon's ADD answer as the CNI result of the caller's spec version.
//!
//! 0.3.0/0.3.1/0.4.0 carry `ips[].version` ("4"/"6"); 1.0.0 drops it; 1.1.0 adds the interface `mtu`.
//! There is one interface (the pod's, with `sandbox` = its netns path) and every IP points at it
//! (`ips[].interface` = 0), which is what Multus needs to write a correct network-status.

use serde_json::{json, Map, Value};

use super::protocol::CniResponse;

/// The CNI result for `version` (one of `version::SUPPORTED`).
pub fn render(resp: &CniResponse, version: &str) -> Value {
    let mut result = render_ipam(resp, version);
    let legacy = version.starts_with("0.");
    let with_mtu = !legacy && version != "1.0.0";

    let mut interface = Map::new();
    interface.insert("name".into(), json!(resp.interface.name));
    interface.insert("mac".into(), json!(resp.interface.mac.to_string()));
    if with_mtu {
        if let Some(mtu) = resp.interface.mtu {
            interface.insert("mtu".into(), json!(mtu));
        }
    }
    interface.insert("sandbox".into(), json!(resp.interface.sandbox));
    result["interfaces"] = json!([Value::Object(interface)]);
    if let Some(ips) = result["ips"].as_array_mut() {
        for ip in ips {
            ip["interface"] = json!(0);
        }
    }
    result
}

/// The result of an IPAM plugin (what a main plugin such as macvlan expects from its `ipam`):
/// addresses and routes, no interfaces and no `ips[].interface` (the main plugin sets them).
pub fn render_ipam(resp: &CniResponse, version: &str) -> Value {
    let legacy = version.starts_with("0.");
    let ips: Vec<Value> = resp
        .ips
        .iter()
        .map(|ip| {
            let mut o = Map::new();
            if legacy {
                let family = if ip.address.addr().is_ipv4() {
                    "4"
                } else {
                    "6"
                };
                o.insert("version".into(), json!(family));
            }
            o.insert("address".into(), json!(ip.address.to_string()));
            if let Some(gw) = ip.gateway {
                o.insert("gateway".into(), json!(gw.to_string()));
            }
            Value::Object(o)
        })
        .collect();

    let routes: Vec<Value> = resp
        .routes
        .iter()
        .map(|r| {
            let mut o = Map::new();
            o.insert("dst".into(), json!(r.dst.to_string()));
            if let Some(gw) = r.gw {
                o.insert("gw".into(), json!(gw.to_string()));
            }
            Value::Object(o)
        })
        .collect();

    json!({
        "cniVersion": version,
        "ips": ips,
        "routes": routes,
        "dns": {},
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cni::protocol::{IpConfig, PodInterface, RouteConfig};
    use serde::Deserialize;

    fn answer() -> CniResponse {
        CniResponse {
            interface: PodInterface {
                name: "net1".into(),
                mac: "0a:58:0a:10:00:05".parse().expect("mac"),
                mtu: Some(1400),
                sandbox: "/var/run/netns/p1".into(),
            },
            ips: vec![
                IpConfig {
                    address: "10.16.0.5/24".parse().expect("cidr"),
                    gateway: Some("10.16.0.1".parse().expect("ip")),
                },
                IpConfig {
                    address: "fd00:10:16::5/64".parse().expect("cidr"),
                    gateway: None,
                },
            ],
            routes: vec![RouteConfig {
                dst: "10.17.0.0/16".parse().expect("cidr"),
                gw: Some("10.16.0.1".parse().expect("ip")),
            }],
        }
    }

    // The spec's shapes, strict: an unexpected key fails the parse.
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Legacy {
        #[serde(rename = "cniVersion")]
        cni_version: String,
        interfaces: Vec<LegacyIface>,
        ips: Vec<LegacyIp>,
        routes: Vec<Route>,
        #[allow(dead_code)]
        dns: Value,
    }
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct LegacyIface {
        name: String,
        mac: String,
        sandbox: String,
    }
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct LegacyIp {
        version: String,
        address: String,
        gateway: Option<String>,
        interface: usize,
    }
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Route {
        dst: String,
        gw: Option<String>,
    }
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct V1 {
        #[serde(rename = "cniVersion")]
        cni_version: String,
        interfaces: Vec<V1Iface>,
        ips: Vec<V1Ip>,
        routes: Vec<Route>,
        #[allow(dead_code)]
        dns: Value,
    }
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct V1Iface {
        name: String,
        mac: String,
        mtu: Option<u32>,
        sandbox: String,
    }
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct V1Ip {
        address: String,
        gateway: Option<String>,
        interface: usize,
    }

    #[test]
    fn an_ipam_result_has_the_addresses_and_routes_but_no_interface() {
        let a = answer();
        for v in ["0.3.1", "1.0.0", "1.1.0"] {
            let r = render_ipam(&a, v);
            assert_eq!(r["cniVersion"], v);
            assert!(r.get("interfaces").is_none(), "{r}");
            let ips = r["ips"].as_array().expect("ips");
            assert_eq!(ips.len(), a.ips.len());
            for (ip, want) in ips.iter().zip(&a.ips) {
                assert!(ip.get("interface").is_none(), "{r}");
                assert_eq!(ip["address"], want.address.to_string());
                assert_eq!(ip.get("version").is_some(), v.starts_with("0."));
            }
            assert_eq!(
                r["routes"].as_array().expect("routes").len(),
                a.routes.len()
            );
        }
    }

    #[test]
    fn legacy_versions_carry_ip_version_and_no_mtu() {
        for v in ["0.3.0", "0.3.1", "0.4.0"] {
            let r: Legacy = serde_json::from_value(render(&answer(), v)).expect(v);
            assert_eq!(r.cni_version, v);
            assert_eq!(r.interfaces.len(), 1);
            assert_eq!(
                (r.interfaces[0].name.as_str(), r.interfaces[0].mac.as_str()),
                ("net1", "0a:58:0a:10:00:05")
            );
            assert_eq!(r.interfaces[0].sandbox, "/var/run/netns/p1");
            assert_eq!(r.ips[0].version, "4");
            assert_eq!(r.ips[0].address, "10.16.0.5/24");
            assert_eq!(r.ips[0].gateway.as_deref(), Some("10.16.0.1"));
            assert_eq!(r.ips[1].version, "6");
            assert_eq!(r.ips[1].gateway, None);
            assert!(r.ips.iter().all(|ip| ip.interface == 0));
            assert_eq!(r.routes[0].dst, "10.17.0.0/16");
            assert_eq!(r.routes[0].gw.as_deref(), Some("10.16.0.1"));
        }
    }

    #[test]
    fn v1_0_drops_ip_version_and_has_no_mtu() {
        let r: V1 = serde_json::from_value(render(&answer(), "1.0.0")).expect("1.0.0");
        assert_eq!(r.cni_version, "1.0.0");
        assert_eq!(r.interfaces[0].mtu, None);
        assert_eq!(r.interfaces[0].sandbox, "/var/run/netns/p1");
        assert_eq!(r.ips.len(), 2);
        assert!(r.ips.iter().all(|ip| ip.interface == 0));
        assert!(serde_json::from_value::<Legacy>(render(&answer(), "1.0.0")).is_err());
    }

    #[test]
    fn v1_1_adds_interface_mtu() {
        let r: V1 = serde_json::from_value(render(&answer(), "1.1.0")).expect("1.1.0");
        assert_eq!(r.interfaces[0].mtu, Some(1400));
        assert_eq!(
            (r.interfaces[0].name.as_str(), r.interfaces[0].mac.as_str()),
            ("net1", "0a:58:0a:10:00:05")
        );
        assert_eq!(r.ips[0].address, "10.16.0.5/24");
        assert_eq!(r.ips[0].gateway.as_deref(), Some("10.16.0.1"));
        assert_eq!(r.ips[1].address, "fd00:10:16::5/64");
        assert_eq!(r.routes.len(), 1);
    }
}
