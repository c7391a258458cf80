//! OVN-native DHCP for a Subnet with `enableDHCP`, as Kube-OVN does it
//! (`pkg/ovs/ovn-nb-dhcp_options.go`): one DHCP_Options row per family, its options parsed
//! from `dhcpV4Options`/`dhcpV6Options` (`key=value,…`, a `dns_server` list written with `;`)
//! over Kube-OVN's defaults (`lease_time=3600`, `router=<gateway>`, `server_id=169.254.0.254`,
//! `server_mac=<gateway MAC>`, `mtu=<spec.mtu>` when set; IPv6 `server_id=<gateway MAC>`).
//! Unlike Kube-OVN, an option OVN does not know or a malformed pair is refused (the Subnet's
//! condition), not dropped. Pure: the Subnet controller writes the rows (`ovn::nb`).

use std::net::IpAddr;

use ipnet::IpNet;

use crate::api::mac::MacAddr;
use crate::api::subnet::Subnet;
use crate::ovn::nb::DhcpSpec;

type Map = std::collections::BTreeMap<String, String>;

/// DHCPv4 option names OVN knows (ovn-nb(5), `DHCP_Options:options`).
const V4_OPTIONS: &[&str] = &[
    "offerip",
    "router",
    "netmask",
    "dns_server",
    "log_server",
    "lpr_server",
    "swap_server",
    "policy_filter",
    "router_solicitation",
    "nis_server",
    "ntp_server",
    "server_id",
    "tftp_server",
    "classless_static_route",
    "ms_classless_static_route",
    "ip_forward_enable",
    "router_discovery",
    "ethernet_encap",
    "default_ttl",
    "tcp_ttl",
    "mtu",
    "lease_time",
    "T1",
    "T2",
    "bootfile_name",
    "wpad",
    "path_prefix",
    "tftp_server_address",
    "hostname",
    "domain_name",
    "arp_cache_timeout",
    "tcp_keepalive_interval",
    "domain_search_list",
    "bootfile_name_alt",
    "broadcast_address",
    "netbios_name_server",
    "netbios_node_type",
    "server_mac",
    "next_server",
];
/// DHCPv6 option names OVN knows.
const V6_OPTIONS: &[&str] = &[
    "server_id",
    "ia_addr",
    "dns_server",
    "domain_search",
    "dhcpv6_stateless",
    "fqdn",
];

/// Parses one of the Subnet's option strings; `field` names it in errors.
pub fn parse_options(field: &str, raw: &str, known: &[&str]) -> Result<Map, String> {
    let mut out = Map::new();
    for pair in raw.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let Some((k, v)) = pair.split_once('=').map(|(k, v)| (k.trim(), v.trim())) else {
            return Err(format!("spec.{field}: {pair:?} is not key=value"));
        };
        if k.is_empty() || v.is_empty() {
            return Err(format!("spec.{field}: {pair:?} is not key=value"));
        }
        if !known.contains(&k) {
            return Err(format!(
                "spec.{field}: {k:?} is not an OVN DHCP option (ovn-nb(5) lists them)"
            ));
        }
        let v = if k == "dns_server" && v.contains(';') {
            format!("{{{}}}", v.replace(';', ","))
        } else {
            v.to_owned()
        };
        out.insert(k.to_owned(), v);
    }
    Ok(out)
}

/// The user's options of each family, checked (for validation; empty when DHCP is off).
pub fn user_options(subnet: &Subnet) -> Result<(Map, Map), String> {
    if subnet.spec.enable_dhcp != Some(true) {
        return Ok((Map::new(), Map::new()));
    }
    let v4 = parse_options(
        "dhcpV4Options",
        subnet.spec.dhcp_v4_options.as_deref().unwrap_or(""),
        V4_OPTIONS,
    )?;
    let v6 = parse_options(
        "dhcpV6Options",
        subnet.spec.dhcp_v6_options.as_deref().unwrap_or(""),
        V6_OPTIONS,
    )?;
    Ok((v4, v6))
}

/// The DHCP_Options rows `subnet` wants: none unless `enableDHCP`; else one per CIDR, with
/// the user's options over the defaults. `gateways` are the subnet's, one per CIDR.
pub fn plan(
    subnet: &Subnet,
    cidrs: &[IpNet],
    gateways: &[Option<IpAddr>],
    gateway_mac: MacAddr,
) -> Result<Vec<DhcpSpec>, String> {
    if subnet.spec.enable_dhcp != Some(true) {
        return Ok(Vec::new());
    }
    let (v4, v6) = user_options(subnet)?;
    let mut out = Vec::new();
    for (cidr, gateway) in cidrs.iter().zip(gateways) {
        let mut options = Map::new();
        match cidr {
            IpNet::V4(_) => {
                options.insert("lease_time".into(), "3600".into());
                if let Some(gw) = gateway {
                    options.insert("router".into(), gw.to_string());
                }
                options.insert("server_id".into(), "169.254.0.254".into());
                options.insert("server_mac".into(), gateway_mac.to_string());
                if let Some(mtu) = subnet.spec.mtu {
                    options.insert("mtu".into(), mtu.to_string());
                }
                options.extend(v4.clone());
            }
            IpNet::V6(_) => {
                options.insert("server_id".into(), gateway_mac.to_string());
                options.extend(v6.clone());
            }
        }
        out.push(DhcpSpec {
            cidr: cidr.trunc(),
            options,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::subnet::SubnetSpec;

    fn subnet(v4: Option<&str>, v6: Option<&str>) -> Subnet {
        Subnet::new(
            "s1",
            SubnetSpec {
                enable_dhcp: Some(true),
                dhcp_v4_options: v4.map(Into::into),
                dhcp_v6_options: v6.map(Into::into),
                ..Default::default()
            },
        )
    }

    #[test]
    fn defaults_as_kube_ovn_and_user_options_override_them() {
        let mac: MacAddr = "0a:00:00:00:00:01".parse().unwrap();
        let cidrs: Vec<IpNet> = vec!["10.0.0.0/24".parse().unwrap(), "fd00::/64".parse().unwrap()];
        let gws = [
            Some("10.0.0.1".parse().unwrap()),
            Some("fd00::1".parse().unwrap()),
        ];
        let rows = plan(&subnet(None, None), &cidrs, &gws, mac).unwrap();
        assert_eq!(rows[0].options["lease_time"], "3600");
        assert_eq!(rows[0].options["router"], "10.0.0.1");
        assert_eq!(rows[0].options["server_id"], "169.254.0.254");
        assert_eq!(rows[0].options["server_mac"], "0a:00:00:00:00:01");
        assert_eq!(rows[1].options["server_id"], "0a:00:00:00:00:01");
        assert_eq!(rows[1].protocol(), "IPv6");

        let rows = plan(
            &subnet(Some("lease_time=600, dns_server=8.8.8.8;1.1.1.1"), None),
            &cidrs[..1],
            &gws[..1],
            mac,
        )
        .unwrap();
        assert_eq!(rows[0].options["lease_time"], "600");
        assert_eq!(rows[0].options["dns_server"], "{8.8.8.8,1.1.1.1}");

        let mut off = subnet(None, None);
        off.spec.enable_dhcp = None;
        assert!(plan(&off, &cidrs, &gws, mac).unwrap().is_empty());
    }

    #[test]
    fn unknown_options_and_malformed_pairs_are_refused() {
        let err = user_options(&subnet(Some("lease_tme=600"), None)).unwrap_err();
        assert!(
            err.contains("\"lease_tme\" is not an OVN DHCP option"),
            "{err}"
        );
        let err = user_options(&subnet(Some("lease_time"), None)).unwrap_err();
        assert!(
            err.contains("spec.dhcpV4Options: \"lease_time\" is not key=value"),
            "{err}"
        );
        let err = user_options(&subnet(None, Some("router=fd00::1"))).unwrap_err();
        assert!(err.contains("spec.dhcpV6Options"), "{err}");
    }
}
