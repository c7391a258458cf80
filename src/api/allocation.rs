//! The per-attachment pod annotations as a typed contract between the operator
//! (which writes them once IPAM committed) and the node daemon (which waits for
//! them before wiring the interface): `<key>.kubernetes.io/ip_address`,
//! `mac_address`, `cidr`, `gateway`, `logical_switch`, `logical_router`,
//! `allocated`; plus the user's per-interface knobs the daemon reads: QoS
//! (`<key>.kubernetes.io/ingress_rate|egress_rate|ingress_burst|egress_burst` and netem's
//! `latency|jitter|limit|loss`, each over the pod-wide `ovn.kubernetes.io/…`), extra
//! `routes` and `default_route`.
//! `key` is an attachment key (`<nad>.<ns>.ovn` or `<nad>.<ns>.ovn.<ifname>`).

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use super::annotations::{provider_annotation, ProviderKey};
use super::mac::MacAddr;

/// The MTUs an interface may get.
pub const MTU_RANGE: std::ops::RangeInclusive<u32> = 576..=65535;

/// What the controller allocated for one attachment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllocatedAttachment {
    /// One per family (bare in the annotation).
    pub ips: Vec<IpAddr>,
    pub mac: MacAddr,
    /// The subnet's CIDRs (its `cidrBlock`).
    pub cidrs: Vec<IpNet>,
    /// The subnet's gateways, one per family.
    pub gateways: Vec<IpAddr>,
    /// The subnet's name.
    pub logical_switch: String,
    /// The subnet's VPC.
    pub logical_router: Option<String>,
    /// The subnet's `spec.mtu`, if it sets one (else the node's default applies).
    pub mtu: Option<u32>,
}

/// Why the allocation annotations of an attachment cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AllocationAnnotationError {
    #[error("annotation {key} is missing although {allocated} is \"true\"")]
    Missing { key: String, allocated: String },
    #[error("annotation {key}: {value:?} {reason}")]
    Invalid {
        key: String,
        value: String,
        reason: String,
    },
}

impl AllocatedAttachment {
    /// The annotations to merge into the pod, `allocated: "true"` included.
    pub fn to_annotations(&self, key: &str) -> BTreeMap<String, String> {
        let join = |items: Vec<String>| items.join(",");
        let mut out = BTreeMap::from([
            (
                provider_annotation(key, ProviderKey::IpAddress),
                join(self.ips.iter().map(ToString::to_string).collect()),
            ),
            (
                provider_annotation(key, ProviderKey::MacAddress),
                self.mac.to_string(),
            ),
            (
                provider_annotation(key, ProviderKey::Cidr),
                join(self.cidrs.iter().map(ToString::to_string).collect()),
            ),
            (
                provider_annotation(key, ProviderKey::Gateway),
                join(self.gateways.iter().map(ToString::to_string).collect()),
            ),
            (
                provider_annotation(key, ProviderKey::LogicalSwitch),
                self.logical_switch.clone(),
            ),
            (
                provider_annotation(key, ProviderKey::Allocated),
                "true".into(),
            ),
        ]);
        if let Some(router) = &self.logical_router {
            out.insert(
                provider_annotation(key, ProviderKey::LogicalRouter),
                router.clone(),
            );
        }
        if let Some(mtu) = self.mtu {
            out.insert(provider_annotation(key, ProviderKey::Mtu), mtu.to_string());
        }
        out
    }

    /// Reads the allocation of attachment `key`; `Ok(None)` until `allocated` is `"true"`.
    pub fn from_annotations(
        annotations: &BTreeMap<String, String>,
        key: &str,
    ) -> Result<Option<Self>, AllocationAnnotationError> {
        let allocated = provider_annotation(key, ProviderKey::Allocated);
        if annotations.get(&allocated).map(|v| v.trim()) != Some("true") {
            return Ok(None);
        }
        let get = |k: ProviderKey| {
            let name = provider_annotation(key, k);
            match annotations.get(&name).map(|v| v.trim()) {
                Some(v) if !v.is_empty() => Ok((name, v)),
                _ => Err(AllocationAnnotationError::Missing {
                    key: name,
                    allocated: allocated.clone(),
                }),
            }
        };
        let (name, value) = get(ProviderKey::IpAddress)?;
        let ips = parse_list::<IpAddr>(&name, value, "is not a list of IP addresses")?;
        let (name, value) = get(ProviderKey::MacAddress)?;
        let mac = value
            .parse()
            .map_err(|_| invalid(&name, value, "is not a MAC address"))?;
        let (name, value) = get(ProviderKey::Cidr)?;
        let cidrs = parse_list::<IpNet>(&name, value, "is not a list of CIDRs")?;
        let (name, value) = get(ProviderKey::Gateway)?;
        let gateways = parse_list::<IpAddr>(&name, value, "is not a list of IP addresses")?;
        let (_, logical_switch) = get(ProviderKey::LogicalSwitch)?;
        let logical_router = annotations
            .get(&provider_annotation(key, ProviderKey::LogicalRouter))
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty());
        let mtu_key = provider_annotation(key, ProviderKey::Mtu);
        let mtu = match annotations.get(&mtu_key).map(|v| v.trim()) {
            None | Some("") => None,
            Some(v) => Some(
                v.parse::<u32>()
                    .ok()
                    .filter(|m| MTU_RANGE.contains(m))
                    .ok_or_else(|| invalid(&mtu_key, v, "is not an MTU (576..65535)"))?,
            ),
        };
        Ok(Some(Self {
            ips,
            mac,
            cidrs,
            gateways,
            logical_switch: logical_switch.to_owned(),
            logical_router,
            mtu,
        }))
    }

    /// Each address with its subnet's prefix length (`10.100.0.2/16`), as the
    /// interface gets it.
    pub fn addresses(&self) -> Vec<IpNet> {
        self.ips
            .iter()
            .filter_map(|ip| {
                let cidr = self.cidrs.iter().find(|c| c.contains(ip))?;
                IpNet::new(*ip, cidr.prefix_len()).ok()
            })
            .collect()
    }

    /// The gateway of `ip`'s family.
    pub fn gateway_for(&self, ip: IpAddr) -> Option<IpAddr> {
        self.gateways
            .iter()
            .copied()
            .find(|g| g.is_ipv4() == ip.is_ipv4())
    }
}

fn invalid(key: &str, value: &str, reason: &str) -> AllocationAnnotationError {
    AllocationAnnotationError::Invalid {
        key: key.to_owned(),
        value: value.to_owned(),
        reason: reason.to_owned(),
    }
}

fn parse_list<T: std::str::FromStr>(
    key: &str,
    value: &str,
    reason: &str,
) -> Result<Vec<T>, AllocationAnnotationError> {
    value
        .split(',')
        .map(|part| part.trim().parse::<T>())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| invalid(key, value, reason))
}

/// Rate limits and network emulation of one attachment.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct AttachmentQos {
    /// Mbit/s (`None`: unlimited).
    pub ingress_mbps: Option<u64>,
    pub egress_mbps: Option<u64>,
    /// Mbit (`None`: Kube-OVN's defaults, 80 % of a second of the rate for egress policing,
    /// a tenth of a second for the ingress queue).
    pub ingress_burst_mbit: Option<u64>,
    pub egress_burst_mbit: Option<u64>,
    /// netem on what the interface receives (`None`: none).
    pub netem: Option<Netem>,
}

/// Kube-OVN's netem keys (`latency`, `jitter`, `limit`, `loss`) of one attachment.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Netem {
    pub latency_ms: u32,
    pub jitter_ms: u32,
    /// Packets the qdisc holds (0: the kernel's default, 1000).
    pub limit_packets: u32,
    /// Percent, 0..=100.
    pub loss_percent: f64,
}

/// The value of QoS key `own` for attachment `key`: `<key>.kubernetes.io/<own>`, else the
/// pod-wide `ovn.kubernetes.io/<own>`; with the annotation's name, for messages.
fn qos_value<'a>(
    annotations: &'a BTreeMap<String, String>,
    key: &str,
    own: ProviderKey,
) -> Option<(String, &'a str)> {
    [
        provider_annotation(key, own),
        provider_annotation(POD_WIDE, own),
    ]
    .into_iter()
    .find_map(|k| {
        let v = annotations.get(&k)?.trim();
        (!v.is_empty()).then_some((k, v))
    })
}

/// The pod-wide provider prefix (`ovn.kubernetes.io/…`).
const POD_WIDE: &str = "ovn";

/// QoS of attachment `key`: each of `<key>.kubernetes.io/ingress_rate|egress_rate|
/// ingress_burst|egress_burst|latency|jitter|limit|loss`, else the pod-wide
/// `ovn.kubernetes.io/…` one. A rate of `0` means unlimited, netem values of `0` mean none.
/// Any bad value refuses the whole set, so nothing half-applies.
pub fn attachment_qos(
    annotations: &BTreeMap<String, String>,
    key: &str,
) -> Result<AttachmentQos, AllocationAnnotationError> {
    fn whole<T: std::str::FromStr>(
        annotations: &BTreeMap<String, String>,
        key: &str,
        own: ProviderKey,
        what: &str,
    ) -> Result<Option<T>, AllocationAnnotationError> {
        let Some((name, value)) = qos_value(annotations, key, own) else {
            return Ok(None);
        };
        value
            .parse()
            .map(Some)
            .map_err(|_| invalid(&name, value, &format!("is not a whole number of {what}")))
    }
    let nonzero = |v: Option<u64>| v.filter(|n| *n > 0);
    let ingress_mbps = nonzero(whole(annotations, key, ProviderKey::IngressRate, "Mbit/s")?);
    let egress_mbps = nonzero(whole(annotations, key, ProviderKey::EgressRate, "Mbit/s")?);
    let ingress_burst_mbit = whole(annotations, key, ProviderKey::IngressBurst, "Mbit")?;
    let egress_burst_mbit = whole(annotations, key, ProviderKey::EgressBurst, "Mbit")?;
    let latency_ms: u32 =
        whole(annotations, key, ProviderKey::Latency, "milliseconds")?.unwrap_or(0);
    let jitter_ms: u32 = whole(annotations, key, ProviderKey::Jitter, "milliseconds")?.unwrap_or(0);
    let limit_packets: u32 = whole(annotations, key, ProviderKey::Limit, "packets")?.unwrap_or(0);
    let loss_percent = match qos_value(annotations, key, ProviderKey::Loss) {
        None => 0.0,
        Some((name, value)) => value
            .parse::<f64>()
            .ok()
            .filter(|p| (0.0..=100.0).contains(p))
            .ok_or_else(|| invalid(&name, value, "is not a percentage from 0 to 100"))?,
    };
    if jitter_ms > 0 && latency_ms == 0 {
        let (name, value) =
            qos_value(annotations, key, ProviderKey::Jitter).expect("jitter was read above");
        return Err(invalid(
            &name,
            value,
            &format!(
                "needs a latency to vary around: set {} too",
                provider_annotation(key, ProviderKey::Latency)
            ),
        ));
    }
    let netem = (latency_ms > 0 || jitter_ms > 0 || limit_packets > 0 || loss_percent > 0.0)
        .then_some(Netem {
            latency_ms,
            jitter_ms,
            limit_packets,
            loss_percent,
        });
    if let (Some(_), Some(mbps)) = (netem, ingress_mbps) {
        let (name, _) = qos_value(annotations, key, ProviderKey::IngressRate)
            .expect("ingress_rate was read above");
        return Err(invalid(
            &name,
            &mbps.to_string(),
            "cannot apply together with latency/jitter/limit/loss: an interface has one \
             queueing discipline towards the pod (Kube-OVN would silently drop the netem keys); \
             remove one of them",
        ));
    }
    Ok(AttachmentQos {
        ingress_mbps,
        egress_mbps,
        ingress_burst_mbit,
        egress_burst_mbit,
        netem,
    })
}

/// One extra route of `<key>.kubernetes.io/routes`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodRoute {
    /// Destination CIDR; absent means the default route.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dst: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gw: Option<String>,
}

/// The extra routes of attachment `key` (empty when the annotation is absent).
pub fn attachment_routes(
    annotations: &BTreeMap<String, String>,
    key: &str,
) -> Result<Vec<PodRoute>, AllocationAnnotationError> {
    let name = provider_annotation(key, ProviderKey::Routes);
    match annotations.get(&name).map(|v| v.trim()) {
        None | Some("") => Ok(Vec::new()),
        Some(value) => serde_json::from_str(value)
            .map_err(|e| invalid(&name, value, &format!("is not a JSON route list: {e}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "kube-ovn-vpc-network.default.ovn";

    fn seed_allocation() -> AllocatedAttachment {
        AllocatedAttachment {
            ips: vec!["10.100.0.2".parse().unwrap()],
            mac: "0a:58:0a:64:00:02".parse().unwrap(),
            cidrs: vec!["10.100.0.0/16".parse().unwrap()],
            gateways: vec!["10.100.0.1".parse().unwrap()],
            logical_switch: "subnet-secondary".into(),
            logical_router: Some("vpc-secondary".into()),
            mtu: None,
        }
    }

    #[test]
    fn written_annotations_read_back() {
        let annotations = seed_allocation().to_annotations(KEY);
        assert_eq!(
            annotations[&format!("{KEY}.kubernetes.io/ip_address")],
            "10.100.0.2"
        );
        assert_eq!(
            annotations[&format!("{KEY}.kubernetes.io/cidr")],
            "10.100.0.0/16"
        );
        assert_eq!(
            annotations[&format!("{KEY}.kubernetes.io/gateway")],
            "10.100.0.1"
        );
        assert_eq!(
            annotations[&format!("{KEY}.kubernetes.io/logical_router")],
            "vpc-secondary"
        );
        assert_eq!(
            annotations[&format!("{KEY}.kubernetes.io/allocated")],
            "true"
        );
        let back = AllocatedAttachment::from_annotations(&annotations, KEY)
            .unwrap()
            .unwrap();
        assert_eq!(back, seed_allocation());
        assert_eq!(
            back.addresses(),
            ["10.100.0.2/16".parse::<IpNet>().unwrap()]
        );
        assert_eq!(
            back.gateway_for(back.ips[0]),
            Some("10.100.0.1".parse().unwrap())
        );
        assert!(!annotations.contains_key(&format!("{KEY}.kubernetes.io/mtu")));
    }

    #[test]
    fn the_subnet_mtu_travels_as_an_annotation_and_bad_ones_are_refused() {
        let with_mtu = AllocatedAttachment {
            mtu: Some(1300),
            ..seed_allocation()
        };
        let mut annotations = with_mtu.to_annotations(KEY);
        assert_eq!(annotations[&format!("{KEY}.kubernetes.io/mtu")], "1300");
        let back = AllocatedAttachment::from_annotations(&annotations, KEY).unwrap();
        assert_eq!(back, Some(with_mtu));
        for bad in ["9", "70000", "big"] {
            annotations.insert(format!("{KEY}.kubernetes.io/mtu"), bad.into());
            let err = AllocatedAttachment::from_annotations(&annotations, KEY).unwrap_err();
            assert_eq!(
                err.to_string(),
                format!("annotation {KEY}.kubernetes.io/mtu: {bad:?} is not an MTU (576..65535)")
            );
        }
    }

    #[test]
    fn dual_stack_round_trips() {
        let mut allocation = seed_allocation();
        allocation.ips.push("fd00::2".parse().unwrap());
        allocation.cidrs.push("fd00::/64".parse().unwrap());
        allocation.gateways.push("fd00::1".parse().unwrap());
        let annotations = allocation.to_annotations(KEY);
        assert_eq!(
            annotations[&format!("{KEY}.kubernetes.io/ip_address")],
            "10.100.0.2,fd00::2"
        );
        let back = AllocatedAttachment::from_annotations(&annotations, KEY)
            .unwrap()
            .unwrap();
        assert_eq!(back.addresses()[1].to_string(), "fd00::2/64");
        assert_eq!(
            back.gateway_for("fd00::2".parse().unwrap()),
            Some("fd00::1".parse().unwrap())
        );
    }

    #[test]
    fn nothing_until_allocated_and_errors_name_the_key() {
        let mut annotations = seed_allocation().to_annotations(KEY);
        annotations.remove(&format!("{KEY}.kubernetes.io/allocated"));
        assert_eq!(
            AllocatedAttachment::from_annotations(&annotations, KEY),
            Ok(None)
        );

        let mut annotations = seed_allocation().to_annotations(KEY);
        annotations.remove(&format!("{KEY}.kubernetes.io/mac_address"));
        let err = AllocatedAttachment::from_annotations(&annotations, KEY).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("annotation {KEY}.kubernetes.io/mac_address is missing although {KEY}.kubernetes.io/allocated is \"true\"")
        );
        let mut annotations = seed_allocation().to_annotations(KEY);
        annotations.insert(format!("{KEY}.kubernetes.io/cidr"), "10.100.0.0".into());
        let err = AllocatedAttachment::from_annotations(&annotations, KEY).unwrap_err();
        assert!(err.to_string().contains("is not a list of CIDRs"), "{err}");
    }

    #[test]
    fn seed_pod_wide_qos_applies_and_per_attachment_keys_override() {
        let mut annotations = crate::api::seed::annotations(crate::api::seed::META_QOS);
        let qos = attachment_qos(&annotations, KEY).unwrap();
        assert_eq!(
            qos,
            AttachmentQos {
                ingress_mbps: Some(1000),
                egress_mbps: Some(1000),
                ..Default::default()
            }
        );
        annotations.insert(format!("{KEY}.kubernetes.io/egress_rate"), "50".into());
        annotations.insert(format!("{KEY}.kubernetes.io/ingress_rate"), "0".into());
        let qos = attachment_qos(&annotations, KEY).unwrap();
        assert_eq!(
            qos,
            AttachmentQos {
                ingress_mbps: None,
                egress_mbps: Some(50),
                ..Default::default()
            }
        );
        annotations.insert(format!("{KEY}.kubernetes.io/egress_rate"), "fast".into());
        let err = attachment_qos(&annotations, KEY).unwrap_err();
        assert!(
            err.to_string()
                .contains("egress_rate: \"fast\" is not a whole number"),
            "{err}"
        );
        assert_eq!(
            attachment_qos(&BTreeMap::new(), KEY),
            Ok(AttachmentQos::default())
        );
    }

    #[test]
    fn netem_keys_parse_per_interface_over_pod_wide_and_bad_values_name_the_key() {
        let mut annotations = BTreeMap::from([
            ("ovn.kubernetes.io/latency".to_string(), "100".to_string()),
            ("ovn.kubernetes.io/loss".to_string(), "5".to_string()),
            (format!("{KEY}.kubernetes.io/latency"), "50".to_string()),
            (format!("{KEY}.kubernetes.io/jitter"), "10".to_string()),
            (format!("{KEY}.kubernetes.io/limit"), "200".to_string()),
            (format!("{KEY}.kubernetes.io/egress_burst"), "3".to_string()),
        ]);
        let qos = attachment_qos(&annotations, KEY).unwrap();
        assert_eq!(
            qos.netem,
            Some(Netem {
                latency_ms: 50,
                jitter_ms: 10,
                limit_packets: 200,
                loss_percent: 5.0
            })
        );
        assert_eq!(qos.egress_burst_mbit, Some(3));
        assert_eq!(
            attachment_qos(&BTreeMap::new(), KEY).unwrap().netem,
            None,
            "no keys, no netem"
        );

        let bad = |k: &str, v: &str, expect: &str| {
            let mut a = annotations.clone();
            a.insert(k.to_string(), v.to_string());
            let err = attachment_qos(&a, KEY).unwrap_err().to_string();
            assert!(err.contains(expect), "{k}={v}: {err}");
        };
        bad(
            &format!("{KEY}.kubernetes.io/latency"),
            "50ms",
            "latency: \"50ms\" is not a whole number of milliseconds",
        );
        bad(
            "ovn.kubernetes.io/loss",
            "120",
            "is not a percentage from 0 to 100",
        );
        bad(
            "ovn.kubernetes.io/loss",
            "-1",
            "is not a percentage from 0 to 100",
        );
        bad(
            &format!("{KEY}.kubernetes.io/limit"),
            "-5",
            "is not a whole number of packets",
        );
        bad(
            &format!("{KEY}.kubernetes.io/ingress_burst"),
            "lots",
            "ingress_burst: \"lots\" is not a whole number of Mbit",
        );
        bad(
            "ovn.kubernetes.io/ingress_rate",
            "10",
            "cannot apply together with latency/jitter/limit/loss",
        );
        annotations.remove(&format!("{KEY}.kubernetes.io/latency"));
        annotations.remove("ovn.kubernetes.io/latency");
        let err = attachment_qos(&annotations, KEY).unwrap_err().to_string();
        assert!(err.contains("needs a latency"), "{err}");
    }

    #[test]
    fn routes_parse() {
        let mut annotations = BTreeMap::new();
        assert_eq!(attachment_routes(&annotations, KEY), Ok(vec![]));
        annotations.insert(
            format!("{KEY}.kubernetes.io/routes"),
            r#"[{"dst":"192.168.0.0/16","gw":"10.100.0.254"},{"gw":"10.100.0.1"}]"#.into(),
        );
        let routes = attachment_routes(&annotations, KEY).unwrap();
        assert_eq!(routes[0].dst.as_deref(), Some("192.168.0.0/16"));
        assert_eq!(routes[1].dst, None);
        annotations.insert(format!("{KEY}.kubernetes.io/routes"), "[{".into());
        assert!(attachment_routes(&annotations, KEY).is_err());
    }
}
