//! Addresses and routes on the pod end, over rtnetlink inside the pod netns: adding the
//! plan's (IPv6 without DAD, routes replaced) and reading back the global addresses and the
//! main-table routes through the interface, for CHECK. The link itself is `links.rs`.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use futures::TryStreamExt;
use ipnet::IpNet;
use netlink_packet_route::address::{AddressAttribute, AddressHeaderFlags, AddressScope};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use rtnetlink::RouteMessageBuilder;

use crate::cni::protocol::RouteConfig;

use super::netns::PodNetns;
use super::{nl_err, NetlinkError, VethPlan};

/// Adds the plan's addresses to the pod end `index`.
pub(super) async fn add_addresses(
    pod: &PodNetns,
    index: u32,
    plan: &VethPlan,
) -> Result<(), NetlinkError> {
    for addr in &plan.addresses {
        let mut req = pod
            .handle
            .address()
            .add(index, addr.addr(), addr.prefix_len());
        if addr.addr().is_ipv6() {
            // The address comes from IPAM and OVN answers for it; DAD would only delay the pod.
            req.message_mut().header.flags |= AddressHeaderFlags::Nodad;
        }
        req.execute().await.map_err(nl_err(
            "add address",
            format!("{addr} on {}", plan.pod_ifname),
        ))?;
    }
    Ok(())
}

/// Adds (or replaces) the plan's routes through the pod end `index`.
pub(super) async fn add_routes(
    pod: &PodNetns,
    index: u32,
    plan: &VethPlan,
) -> Result<(), NetlinkError> {
    for route in &plan.routes {
        let msg = route_message(route, index).map_err(|e| NetlinkError::Io {
            op: "build route",
            object: format!("{route:?}"),
            source: io::Error::new(io::ErrorKind::InvalidInput, e),
        })?;
        pod.handle
            .route()
            .add(msg)
            .replace()
            .execute()
            .await
            .map_err(nl_err(
                "add route",
                format!("{} via {:?} on {}", route.dst, route.gw, plan.pod_ifname),
            ))?;
    }
    Ok(())
}

/// The global-scope addresses of link `index` (`object` names it in errors).
pub(super) async fn addresses_of(
    pod: &PodNetns,
    index: u32,
    object: &str,
) -> Result<Vec<IpNet>, NetlinkError> {
    global_addresses(pod, Some(index), object).await
}

/// The global-scope addresses of link `index`, or of every link (`None`).
pub(super) async fn global_addresses(
    pod: &PodNetns,
    index: Option<u32>,
    object: &str,
) -> Result<Vec<IpNet>, NetlinkError> {
    let mut request = pod.handle.address().get();
    if let Some(index) = index {
        request = request.set_link_index_filter(index);
    }
    let messages: Vec<_> = request
        .execute()
        .try_collect()
        .await
        .map_err(nl_err("list addresses of", object))?;
    let mut addresses = Vec::new();
    for m in messages {
        if index.is_some_and(|i| m.header.index != i) || m.header.scope != AddressScope::Universe {
            continue;
        }
        let ip = m
            .attributes
            .iter()
            .find_map(|a| match a {
                AddressAttribute::Local(ip) => Some(*ip),
                _ => None,
            })
            .or_else(|| {
                m.attributes.iter().find_map(|a| match a {
                    AddressAttribute::Address(ip) => Some(*ip),
                    _ => None,
                })
            });
        if let Some(net) = ip.and_then(|ip| IpNet::new(ip, m.header.prefix_len).ok()) {
            addresses.push(net);
        }
    }
    Ok(addresses)
}

/// The routes someone added through link `index`, both families, sorted.
pub(super) async fn routes_through(
    pod: &PodNetns,
    index: u32,
    object: &str,
) -> Result<Vec<RouteConfig>, NetlinkError> {
    let mut routes = Vec::new();
    for family in [
        RouteMessageBuilder::<Ipv4Addr>::new().build(),
        RouteMessageBuilder::<Ipv6Addr>::new().build(),
    ] {
        let messages: Vec<RouteMessage> = pod
            .handle
            .route()
            .get(family)
            .execute()
            .try_collect()
            .await
            .map_err(nl_err("list routes of", object))?;
        routes.extend(messages.iter().filter_map(|m| route_through(m, index)));
    }
    routes.sort();
    Ok(routes)
}

/// A main-table unicast route through `index` that someone added (not a kernel prefix route).
fn route_through(m: &RouteMessage, index: u32) -> Option<RouteConfig> {
    let h = &m.header;
    let table = m
        .attributes
        .iter()
        .find_map(|a| match a {
            RouteAttribute::Table(t) => Some(*t),
            _ => None,
        })
        .unwrap_or(u32::from(h.table));
    if table != u32::from(RouteHeader::RT_TABLE_MAIN)
        || h.kind != RouteType::Unicast
        || h.protocol == RouteProtocol::Kernel
    {
        return None;
    }
    let mut oif = None;
    let mut dst = None;
    let mut gw = None;
    for a in &m.attributes {
        match a {
            RouteAttribute::Oif(i) => oif = Some(*i),
            RouteAttribute::Destination(d) => dst = route_ip(d),
            RouteAttribute::Gateway(g) => gw = route_ip(g),
            _ => {}
        }
    }
    if oif != Some(index) {
        return None;
    }
    let dst = match dst {
        Some(ip) => IpNet::new(ip, h.destination_prefix_length).ok()?,
        None if h.address_family == netlink_packet_route::AddressFamily::Inet6 => {
            IpNet::new(IpAddr::from([0u16; 8]), 0).ok()?
        }
        None => IpNet::new(IpAddr::from([0u8; 4]), 0).ok()?,
    };
    Some(RouteConfig { dst, gw })
}

fn route_ip(a: &RouteAddress) -> Option<IpAddr> {
    match a {
        RouteAddress::Inet(v4) => Some(IpAddr::V4(*v4)),
        RouteAddress::Inet6(v6) => Some(IpAddr::V6(*v6)),
        _ => None,
    }
}

fn route_message(route: &RouteConfig, index: u32) -> Result<RouteMessage, String> {
    let mut builder = RouteMessageBuilder::<IpAddr>::new()
        .destination_prefix(route.dst.addr(), route.dst.prefix_len())
        .map_err(|e| e.to_string())?
        .output_interface(index);
    builder = match route.gw {
        Some(gw) => builder.gateway(gw).map_err(|e| e.to_string())?,
        None => builder.scope(RouteScope::Link),
    };
    Ok(builder.build())
}
