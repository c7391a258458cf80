//! What ADD wires for one pod interface, as pure functions of the CNI request and the pod's
//! annotations: which attachment key the controller used (`<provider>` or, for the second and
//! later attachments of one NAD, `<provider>.<ifname>`), the logical switch port it names, the
//! [`VethPlan`] (the ends' names, the interface's MAC, MTU, addresses and routes), the OVS
//! `external_ids` of the host end, and the answer to the shim. No I/O: the handler
//! (`handler.rs`) waits, wires and undoes; `netlink/` builds what the plan says.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;

use ipnet::IpNet;

use crate::api::allocation::{
    attachment_qos, attachment_routes, AllocatedAttachment, AttachmentQos,
};
use crate::api::annotations::{
    parse_provider_annotation, provider_annotation, Provider, ProviderKey, NETWORKS,
};
use crate::api::attachment_id::{self, AttachmentId};
use crate::api::mac::MacAddr;
use crate::api::selection::parse_networks;
use crate::cni::protocol::{CniRequest, CniResponse, IpConfig, PodInterface, RouteConfig};
use crate::cni::{CniError, ErrorCode};
use crate::ovn::external_ids;

use super::pod_index::PodView;

/// The attachment key of this interface ([`AttachmentId::key_for`], from the pod's networks
/// annotation). A provider that is not `<nad>.<ns>.ovn` is its own key: no NAD names it, so
/// the controller never annotates it and ADD reports that.
pub fn attachment_key(
    annotations: &BTreeMap<String, String>,
    pod_namespace: &str,
    provider: &str,
    ifname: &str,
) -> String {
    let Ok(provider) = Provider::parse(provider) else {
        return provider.to_owned();
    };
    let selections = annotations
        .get(NETWORKS)
        .and_then(|v| parse_networks(v, pod_namespace).ok())
        .unwrap_or_default();
    AttachmentId::key_for(&selections, &provider, ifname).to_string()
}

/// What ADD builds for one pod interface.
#[derive(Clone, Debug, PartialEq)]
pub struct VethPlan {
    /// The host end's name, see [`host_veth_name`].
    pub host_name: String,
    /// The pod's netns (`CNI_NETNS`).
    pub pod_netns: PathBuf,
    /// The pod end's name (`CNI_IFNAME`).
    pub pod_ifname: String,
    pub mac: MacAddr,
    pub mtu: u32,
    /// Addresses on the pod end, with their prefix.
    pub addresses: Vec<IpNet>,
    /// Routes in the pod via the pod end, exactly these (a default route only if listed).
    pub routes: Vec<RouteConfig>,
    /// Turn tx checksum offload off on both ends (needed by the netdev datapath).
    pub tx_checksum_off: bool,
}

/// The host end's name for a pod interface: Kube-OVN's `<cid[..12-len(if)]>_<if>_h` (15 bytes)
/// when the ifname is at most 8 bytes and the container id is plain, else `<12 hex of a
/// FNV-1a hash of "cid/if">_h`. Deterministic, so DEL finds it from the container id and ifname.
pub fn host_veth_name(container_id: &str, ifname: &str) -> String {
    let plain = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
    };
    if ifname.len() <= 8
        && plain(ifname)
        && container_id.len() >= 12 - ifname.len()
        && plain(container_id)
    {
        format!("{}_{ifname}_h", &container_id[..12 - ifname.len()])
    } else {
        format!("{}_h", name_stem(container_id, ifname))
    }
}

/// 12 hex digits of a FNV-1a hash of `"<a>/<b>"`: the stem of interface names that must
/// derive from two identifiers and fit IFNAMSIZ with a suffix.
pub fn name_stem(a: &str, b: &str) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in a.bytes().chain([b'/']).chain(b.bytes()) {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{:012x}", hash >> 16)
}

/// Everything ADD needs about one interface once the controller annotated the pod.
#[derive(Clone, Debug, PartialEq)]
pub struct Wiring {
    pub key: String,
    /// The pod's UID when the wiring was read.
    pub pod_uid: String,
    pub iface_id: String,
    pub veth: VethPlan,
    /// Each address with its subnet's gateway, for the answer.
    pub ips: Vec<IpConfig>,
    pub qos: AttachmentQos,
}

/// Node settings that the annotations can override.
#[derive(Clone, Copy, Debug)]
pub struct WiringDefaults {
    pub mtu: u32,
    pub tx_checksum_off: bool,
}

/// Reads the wiring of `req` from the pod. `Err(reason)` while the controller has not
/// annotated the pod yet (keep waiting); `Ok(Err(e))` when the annotations are there but
/// unusable (answer at once).
pub fn wiring(
    pod: &PodView,
    req: &CniRequest,
    defaults: WiringDefaults,
) -> Result<Result<Wiring, CniError>, String> {
    let key = attachment_key(&pod.annotations, &pod.namespace, &req.provider, &req.ifname);
    let allocation = match AllocatedAttachment::from_annotations(&pod.annotations, &key) {
        Ok(Some(a)) => a,
        Ok(None) => {
            return Err(format!(
                "annotation {} is not \"true\" yet",
                provider_annotation(&key, ProviderKey::Allocated)
            ))
        }
        Err(e) => return Ok(Err(invalid(pod, e.to_string()))),
    };
    let place = Placement {
        host_name: host_veth_name(&req.container_id, &req.ifname),
        pod_netns: PathBuf::from(&req.netns),
        pod_ifname: req.ifname.clone(),
    };
    Ok(build(pod, defaults, key, &allocation, place))
}

/// Where an interface's two ends go.
pub struct Placement {
    pub host_name: String,
    pub pod_netns: PathBuf,
    pub pod_ifname: String,
}

/// The attachment keys the controller allocated for `pod` (`<key>.kubernetes.io/allocated:
/// "true"` with a key of ours, `<nad>.<ns>.ovn[.<ifname>]`).
pub fn allocated_keys(pod: &PodView) -> impl Iterator<Item = &str> {
    pod.annotations.iter().filter_map(|(name, value)| {
        let (key, kind) = parse_provider_annotation(name)?;
        (kind == ProviderKey::Allocated && value.trim() == "true" && Provider::parse(key).is_ok())
            .then_some(key)
    })
}

/// The wiring of attachment `key` of `pod` with the ends placed at `place`, before any ADD
/// (for pre-plugging). `None` while the annotations are incomplete.
pub fn wiring_of_key(
    pod: &PodView,
    key: &str,
    defaults: WiringDefaults,
    place: Placement,
) -> Option<Result<Wiring, CniError>> {
    match AllocatedAttachment::from_annotations(&pod.annotations, key) {
        Ok(Some(a)) => Some(build(pod, defaults, key.to_string(), &a, place)),
        Ok(None) => None,
        Err(e) => Some(Err(invalid(pod, e.to_string()))),
    }
}

fn invalid(pod: &PodView, reason: String) -> CniError {
    CniError::new(
        ErrorCode::InvalidNetworkConfig,
        format!("pod {}/{}: {reason}", pod.namespace, pod.name),
    )
}

fn build(
    pod: &PodView,
    defaults: WiringDefaults,
    key: String,
    allocation: &AllocatedAttachment,
    place: Placement,
) -> Result<Wiring, CniError> {
    let addresses = allocation.addresses();
    if addresses.len() != allocation.ips.len() {
        return Err(invalid(
            pod,
            format!(
                "addresses {:?} do not all lie in the subnet CIDRs {:?} of {}",
                allocation.ips,
                allocation.cidrs,
                provider_annotation(&key, ProviderKey::Cidr)
            ),
        ));
    }
    let mtu = allocation.mtu.unwrap_or(defaults.mtu);
    let routes = routes(pod, &key, allocation)?;
    let qos = attachment_qos(&pod.annotations, &key).map_err(|e| invalid(pod, e.to_string()))?;
    let ips = addresses
        .iter()
        .map(|a| IpConfig {
            address: *a,
            gateway: allocation.gateway_for(a.addr()),
        })
        .collect();
    Ok(Wiring {
        iface_id: attachment_id::port_name(&pod.namespace, &pod.name, &key),
        key,
        pod_uid: pod.uid.clone(),
        veth: VethPlan {
            host_name: place.host_name,
            pod_netns: place.pod_netns,
            pod_ifname: place.pod_ifname,
            mac: allocation.mac,
            mtu,
            addresses,
            routes,
            tx_checksum_off: defaults.tx_checksum_off,
        },
        ips,
        qos,
    })
}

/// No routes unless asked: a default route per family through the subnet gateway when
/// `<key>.kubernetes.io/default_route` is `"true"`, plus `<key>.kubernetes.io/routes`
/// (a route without `gw` goes through the subnet gateway of its family).
fn routes(
    pod: &PodView,
    key: &str,
    allocation: &AllocatedAttachment,
) -> Result<Vec<RouteConfig>, CniError> {
    let mut out = Vec::new();
    let default_route = provider_annotation(key, ProviderKey::DefaultRoute);
    if pod.annotation(&default_route).map(str::trim) == Some("true") {
        for gw in &allocation.gateways {
            out.push(RouteConfig {
                dst: any_of_family(*gw),
                gw: Some(*gw),
            });
        }
    }
    let extra =
        attachment_routes(&pod.annotations, key).map_err(|e| invalid(pod, e.to_string()))?;
    let name = provider_annotation(key, ProviderKey::Routes);
    for r in extra {
        let gw: Option<IpAddr> = match r.gw.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(g) => Some(g.parse().map_err(|_| {
                invalid(
                    pod,
                    format!("annotation {name}: gateway {g:?} is not an IP"),
                )
            })?),
        };
        let dst: IpNet = match r.dst.as_deref().map(str::trim) {
            None | Some("") => match gw.or_else(|| allocation.gateways.first().copied()) {
                Some(ip) => any_of_family(ip),
                None => {
                    return Err(invalid(
                        pod,
                        format!("annotation {name}: a default route needs a gateway"),
                    ))
                }
            },
            Some(d) => d.parse().map_err(|_| {
                invalid(
                    pod,
                    format!("annotation {name}: destination {d:?} is not a CIDR"),
                )
            })?,
        };
        let gw = gw.or_else(|| {
            allocation
                .gateways
                .iter()
                .copied()
                .find(|g| g.is_ipv4() == dst.addr().is_ipv4())
        });
        let route = RouteConfig { dst, gw };
        if !out.contains(&route) {
            out.push(route);
        }
    }
    Ok(out)
}

fn any_of_family(ip: IpAddr) -> IpNet {
    match ip {
        IpAddr::V4(_) => IpNet::new(IpAddr::from([0u8; 4]), 0),
        IpAddr::V6(_) => IpNet::new(IpAddr::from([0u16; 8]), 0),
    }
    .expect("prefix 0 is valid for every family")
}

/// `Interface.external_ids` of the host end plugged for sandbox `sandbox` (empty: pre-plugged,
/// no sandbox yet; then the pod netns and ifname are empty too and left out).
pub fn interface_ids(
    pod_name: &str,
    pod_namespace: &str,
    w: &Wiring,
    sandbox: &str,
) -> BTreeMap<String, String> {
    let ips: Vec<String> = w.ips.iter().map(|i| i.address.addr().to_string()).collect();
    let mut ids = BTreeMap::from([
        (external_ids::IFACE_ID.to_string(), w.iface_id.clone()),
        (external_ids::POD_NAME.to_string(), pod_name.to_string()),
        (
            external_ids::POD_NAMESPACE.to_string(),
            pod_namespace.to_string(),
        ),
        (
            external_ids::POD_NETNS.to_string(),
            w.veth.pod_netns.display().to_string(),
        ),
        (
            external_ids::POD_IFNAME.to_string(),
            w.veth.pod_ifname.clone(),
        ),
        (
            external_ids::VENDOR_KEY.to_string(),
            external_ids::VENDOR.to_string(),
        ),
        (external_ids::IP.to_string(), ips.join(",")),
        (external_ids::SANDBOX.to_string(), sandbox.to_string()),
    ]);
    ids.retain(|k, v| {
        !v.is_empty()
            || ![
                external_ids::POD_NETNS,
                external_ids::POD_IFNAME,
                external_ids::SANDBOX,
            ]
            .contains(&k.as_str())
    });
    ids
}

/// The answer to the shim.
pub fn response(w: &Wiring) -> CniResponse {
    CniResponse {
        interface: PodInterface {
            name: w.veth.pod_ifname.clone(),
            mac: w.veth.mac,
            mtu: Some(w.veth.mtu),
            sandbox: w.veth.pod_netns.display().to_string(),
        },
        ips: w.ips.clone(),
        routes: w.veth.routes.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: &str = "attachnet.default.ovn";

    fn pod(annotations: &[(&str, &str)]) -> PodView {
        PodView {
            namespace: "default".into(),
            name: "web".into(),
            uid: "u1".into(),
            annotations: annotations
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            terminating: false,
            finished: false,
            pod_ips: Vec::new(),
        }
    }

    fn allocated(key: &str) -> Vec<(String, String)> {
        vec![
            (format!("{key}.kubernetes.io/allocated"), "true".into()),
            (format!("{key}.kubernetes.io/ip_address"), "10.1.0.5".into()),
            (
                format!("{key}.kubernetes.io/mac_address"),
                "0a:58:0a:01:00:05".into(),
            ),
            (format!("{key}.kubernetes.io/cidr"), "10.1.0.0/24".into()),
            (format!("{key}.kubernetes.io/gateway"), "10.1.0.1".into()),
            (format!("{key}.kubernetes.io/logical_switch"), "s1".into()),
        ]
    }

    fn with(base: Vec<(String, String)>, extra: &[(&str, &str)]) -> PodView {
        let mut all: Vec<(&str, &str)> =
            base.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        all.extend_from_slice(extra);
        pod(&all)
    }

    fn req(ifname: &str) -> CniRequest {
        CniRequest {
            container_id: "0123456789abcdef".into(),
            netns: "/var/run/netns/p1".into(),
            ifname: ifname.into(),
            pod_namespace: "default".into(),
            pod_name: "web".into(),
            pod_uid: "u1".into(),
            provider: P.into(),
            cni_version: "1.0.0".into(),
            ips: vec![],
            mac: None,
            config: serde_json::Value::Null,
            prev_result: None,
            ipam_only: false,
        }
    }

    const D: WiringDefaults = WiringDefaults {
        mtu: 1400,
        tx_checksum_off: true,
    };

    #[test]
    fn host_veth_name_follows_kube_ovn_and_fits_ifnamsiz() {
        assert_eq!(
            host_veth_name("3f2a8b9c0d1e2f3a4b5c", "net1"),
            "3f2a8b9c_net1_h"
        );
        assert_eq!(
            host_veth_name("3f2a8b9c0d1e2f3a4b5c", "eth0"),
            "3f2a8b9c_eth0_h"
        );
        assert_eq!(
            host_veth_name("3f2a8b9c0d1e", "net12345"),
            "3f2a_net12345_h"
        );
        for (cid, ifname) in [
            ("3f2a8b9c0d1e", "longifname123"),
            ("c", "net1"),
            ("a/b:c d 123456789", "net1"),
        ] {
            let name = host_veth_name(cid, ifname);
            assert_eq!(name.len(), 14, "{name}");
            assert!(name.ends_with("_h"));
            assert_eq!(name, host_veth_name(cid, ifname), "deterministic");
        }
        assert_ne!(
            host_veth_name("c", "longifname123"),
            host_veth_name("c", "longifname124")
        );
        assert!(host_veth_name("3f2a8b9c0d1e2f3a4b5c", "net1").len() <= 15);
    }

    #[test]
    fn an_unannotated_pod_keeps_waiting_and_names_the_missing_annotation() {
        let reason = wiring(&pod(&[]), &req("net1"), D).expect_err("not ready");
        assert!(
            reason.contains("attachnet.default.ovn.kubernetes.io/allocated"),
            "{reason}"
        );
    }

    #[test]
    fn an_allocated_pod_gives_addresses_with_the_subnet_prefix_and_no_routes() {
        let w = wiring(&with(allocated(P), &[]), &req("net1"), D)
            .expect("ready")
            .expect("valid");
        assert_eq!(w.iface_id, "web.default.attachnet.default.ovn");
        assert_eq!(
            w.veth.addresses,
            vec!["10.1.0.5/24".parse::<IpNet>().unwrap()]
        );
        assert_eq!(w.veth.mtu, 1400);
        assert!(w.veth.routes.is_empty());
        assert_eq!(w.veth.mac.to_string(), "0a:58:0a:01:00:05");
        assert_eq!(w.ips[0].gateway, Some("10.1.0.1".parse().unwrap()));
        let r = response(&w);
        assert_eq!(r.interface.sandbox, "/var/run/netns/p1");
    }

    #[test]
    fn default_route_mtu_and_extra_routes_come_from_annotations() {
        let p = with(
            allocated(P),
            &[
                ("attachnet.default.ovn.kubernetes.io/default_route", "true"),
                ("attachnet.default.ovn.kubernetes.io/mtu", "1300"),
                (
                    "attachnet.default.ovn.kubernetes.io/routes",
                    r#"[{"dst":"192.168.0.0/16"},{"dst":"172.16.0.0/12","gw":"10.1.0.254"}]"#,
                ),
            ],
        );
        let w = wiring(&p, &req("net1"), D).unwrap().unwrap();
        assert_eq!(w.veth.mtu, 1300);
        let routes: Vec<String> = w
            .veth
            .routes
            .iter()
            .map(|r| format!("{} {:?}", r.dst, r.gw))
            .collect();
        assert_eq!(
            routes,
            [
                "0.0.0.0/0 Some(10.1.0.1)",
                "192.168.0.0/16 Some(10.1.0.1)",
                "172.16.0.0/12 Some(10.1.0.254)"
            ]
        );
    }

    #[test]
    fn a_repeated_nad_keys_its_second_interface_on_the_ifname() {
        let nets =
            r#"[{"name":"attachnet","interface":"net1"},{"name":"attachnet","interface":"net2"}]"#;
        let a = pod(&[(NETWORKS, nets)]).annotations;
        assert_eq!(attachment_key(&a, "default", P, "net1"), P);
        assert_eq!(
            attachment_key(&a, "default", P, "net2"),
            format!("{P}.net2")
        );
        assert_eq!(attachment_key(&BTreeMap::new(), "default", P, "net2"), P);
        // Not a `<nad>.<ns>.ovn` provider: its own key.
        assert_eq!(attachment_key(&a, "default", "ovn", "net2"), "ovn");
    }

    #[test]
    fn broken_annotations_fail_at_once_with_code_7() {
        let p = with(
            allocated(P),
            &[("attachnet.default.ovn.kubernetes.io/mtu", "9")],
        );
        let e = wiring(&p, &req("net1"), D).unwrap().expect_err("bad mtu");
        assert_eq!(e.code, ErrorCode::InvalidNetworkConfig as u32);
        assert!(e.msg.contains("kubernetes.io/mtu"), "{}", e.msg);
    }
}
