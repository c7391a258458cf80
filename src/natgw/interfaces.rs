//! Which of the pod's interfaces is the LAN leg and which the external one. From the pod's
//! `k8s.v1.cni.cncf.io/network-status` (Multus's record): LAN = the interface holding the
//! gateway's lanIp, external = the other secondary network (the first, if the gateway has
//! several external subnets). Without it, from the interfaces' addresses: LAN = the holder
//! of lanIp, external = the only other addressed interface besides `lo` and the primary CNI's
//! `eth0`. Pure; listing the interfaces is `links.rs`.

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

use crate::api::network_status::NetworkStatus;

use super::plan::Interfaces;

/// The primary CNI's interface, never a leg of the gateway.
const PRIMARY: &str = "eth0";

/// The legs from Multus's network-status.
pub fn from_network_status(
    statuses: &[NetworkStatus],
    lan_ip: Ipv4Addr,
) -> Result<Interfaces, String> {
    let lan_text = lan_ip.to_string();
    let lan = statuses
        .iter()
        .find(|s| !s.default && s.ips.iter().any(|ip| ip == &lan_text))
        .ok_or_else(|| format!("no network in network-status holds lanIp {lan_ip}"))?;
    let lan_if = lan
        .interface
        .clone()
        .ok_or_else(|| format!("network-status entry {} names no interface", lan.name))?;
    let external = statuses
        .iter()
        .filter(|s| !s.default && s.name != lan.name)
        .find_map(|s| s.interface.clone().filter(|i| i != &lan_if))
        .ok_or_else(|| {
            format!(
                "network-status has no external network besides the LAN {}",
                lan.name
            )
        })?;
    Ok(Interfaces {
        lan: lan_if,
        external,
    })
}

/// The legs from the interfaces' addresses (`links::interfaces`).
pub fn from_addresses(
    links: &[(String, Vec<Ipv4Net>)],
    lan_ip: Ipv4Addr,
) -> Result<Interfaces, String> {
    let lan = links
        .iter()
        .find(|(_, addrs)| addrs.iter().any(|a| a.addr() == lan_ip))
        .map(|(name, _)| name.clone())
        .ok_or_else(|| format!("no interface holds lanIp {lan_ip}"))?;
    let others: Vec<&String> = links
        .iter()
        .filter(|(name, addrs)| {
            name != &lan && name != "lo" && name != PRIMARY && !addrs.is_empty()
        })
        .map(|(name, _)| name)
        .collect();
    match others[..] {
        [external] => Ok(Interfaces {
            lan,
            external: external.clone(),
        }),
        [] => Err(format!(
            "no external interface: no addressed interface besides lo, {PRIMARY} and the LAN {lan}"
        )),
        _ => Err(format!(
            "cannot tell the external interface among {others:?}; \
             set --external-interface"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::network_status::parse_network_status;

    #[test]
    fn network_status_names_both_legs() {
        let statuses = parse_network_status(
            r#"[{"name":"cilium","interface":"eth0","ips":["10.0.1.5"],"default":true},
                {"name":"kube-system/vpc1-subnet","interface":"net1","ips":["10.100.0.254"]},
                {"name":"kube-system/ovn-vpc-external-network","interface":"net2","ips":["172.19.0.10"]}]"#,
        )
        .unwrap();
        let legs = from_network_status(&statuses, "10.100.0.254".parse().unwrap()).unwrap();
        assert_eq!(
            legs,
            Interfaces {
                lan: "net1".into(),
                external: "net2".into()
            }
        );
        let err = from_network_status(&statuses, "10.100.0.1".parse().unwrap()).unwrap_err();
        assert!(err.contains("10.100.0.1"), "{err}");
        let lan_only = &statuses[..2];
        let err = from_network_status(lan_only, "10.100.0.254".parse().unwrap()).unwrap_err();
        assert!(err.contains("no external network"), "{err}");
    }

    #[test]
    fn addresses_name_the_legs_when_network_status_is_missing() {
        let links = vec![
            ("lo".to_string(), vec!["127.0.0.1/8".parse().unwrap()]),
            ("eth0".to_string(), vec!["10.0.1.5/24".parse().unwrap()]),
            ("net1".to_string(), vec!["10.100.0.254/24".parse().unwrap()]),
            ("net2".to_string(), vec!["172.19.0.10/24".parse().unwrap()]),
        ];
        let legs = from_addresses(&links, "10.100.0.254".parse().unwrap()).unwrap();
        assert_eq!(legs.external, "net2");
        let mut two = links.clone();
        two.push(("net3".to_string(), vec!["172.20.0.10/24".parse().unwrap()]));
        let err = from_addresses(&two, "10.100.0.254".parse().unwrap()).unwrap_err();
        assert!(err.contains("--external-interface"), "{err}");
    }
}
