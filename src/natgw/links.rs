//! The gateway's own interfaces, over rtnetlink and a packet socket in this thread's netns:
//! the EIPs as /32 addresses on the external interface (every /32 there is an EIP: the CNI
//! gives the interface its own address with the subnet's prefix), gratuitous ARP for an EIP
//! so the external network learns where it moved, IPv4 forwarding, and reading interfaces
//! and the default route back. NAT rules are `nftables.rs`.

use std::collections::BTreeSet;
use std::io;
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use futures::TryStreamExt;
use ipnet::Ipv4Net;
use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::link::{LinkAttribute, LinkMessage};
use netlink_packet_route::route::{RouteAttribute, RouteHeader, RouteMessage, RouteType};
use rtnetlink::{Handle, RouteMessageBuilder};

const IP_FORWARD: &str = "/proc/sys/net/ipv4/ip_forward";
const ETH_P_ARP: u16 = 0x0806;

#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("{op} {object}: {source}")]
    Netlink {
        op: &'static str,
        object: String,
        source: rtnetlink::Error,
    },
    #[error("{op} {object}: {source}")]
    Io {
        op: &'static str,
        object: String,
        source: io::Error,
    },
    #[error("interface {0} does not exist in the gateway's netns")]
    Missing(String),
}

pub(super) fn nl(
    op: &'static str,
    object: impl Into<String>,
) -> impl FnOnce(rtnetlink::Error) -> LinkError {
    let object = object.into();
    move |source| LinkError::Netlink { op, object, source }
}

fn errno(e: &rtnetlink::Error) -> i32 {
    match e {
        rtnetlink::Error::NetlinkError(m) => m.raw_code().abs(),
        _ => 0,
    }
}

/// Turns on IPv4 forwarding in this netns (a write to the netns's own sysctl).
pub fn enable_forwarding() -> Result<bool, LinkError> {
    let io = |op| {
        move |source| LinkError::Io {
            op,
            object: IP_FORWARD.into(),
            source,
        }
    };
    let current = std::fs::read_to_string(IP_FORWARD).map_err(io("read"))?;
    if current.trim() == "1" {
        return Ok(false);
    }
    std::fs::write(IP_FORWARD, "1").map_err(io("write"))?;
    Ok(true)
}

/// An interface: index and MAC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub name: String,
    pub index: u32,
    pub mac: Option<[u8; 6]>,
}

fn link_of(m: &LinkMessage) -> Link {
    let mut name = String::new();
    let mut mac = None;
    for a in &m.attributes {
        match a {
            LinkAttribute::IfName(n) => name = n.clone(),
            LinkAttribute::Address(a) if a.len() == 6 => {
                let mut m = [0; 6];
                m.copy_from_slice(a);
                mac = Some(m);
            }
            _ => {}
        }
    }
    Link {
        name,
        index: m.header.index,
        mac,
    }
}

/// The interface `name`.
pub async fn link(handle: &Handle, name: &str) -> Result<Link, LinkError> {
    match handle
        .link()
        .get()
        .match_name(name.to_string())
        .execute()
        .try_next()
        .await
    {
        Ok(Some(m)) => Ok(link_of(&m)),
        Ok(None) => Err(LinkError::Missing(name.into())),
        Err(e) if errno(&e) == libc::ENODEV => Err(LinkError::Missing(name.into())),
        Err(e) => Err(nl("look up", format!("interface {name}"))(e)),
    }
}

/// Every interface with its IPv4 addresses (for finding the legs without network-status).
pub async fn interfaces(handle: &Handle) -> Result<Vec<(String, Vec<Ipv4Net>)>, LinkError> {
    let links: Vec<LinkMessage> = handle
        .link()
        .get()
        .execute()
        .try_collect()
        .await
        .map_err(nl("list", "interfaces"))?;
    let addresses: Vec<AddressMessage> = handle
        .address()
        .get()
        .execute()
        .try_collect()
        .await
        .map_err(nl("list", "addresses"))?;
    Ok(links
        .iter()
        .map(|l| {
            let link = link_of(l);
            let v4 = addresses
                .iter()
                .filter(|a| a.header.index == link.index)
                .filter_map(|a| Ipv4Net::new(ipv4_of(a)?, a.header.prefix_len).ok())
                .collect();
            (link.name, v4)
        })
        .collect())
}

fn ipv4_of(m: &AddressMessage) -> Option<Ipv4Addr> {
    let local = m.attributes.iter().find_map(|a| match a {
        AddressAttribute::Local(IpAddr::V4(ip)) => Some(*ip),
        _ => None,
    });
    local.or_else(|| {
        m.attributes.iter().find_map(|a| match a {
            AddressAttribute::Address(IpAddr::V4(ip)) => Some(*ip),
            _ => None,
        })
    })
}

/// The /32 addresses on `link`: the EIPs it holds.
pub async fn eips_on(handle: &Handle, link: &Link) -> Result<BTreeSet<Ipv4Addr>, LinkError> {
    Ok(eip_messages(handle, link)
        .await?
        .iter()
        .filter_map(ipv4_of)
        .collect())
}

async fn eip_messages(handle: &Handle, link: &Link) -> Result<Vec<AddressMessage>, LinkError> {
    let all: Vec<AddressMessage> = handle
        .address()
        .get()
        .set_link_index_filter(link.index)
        .execute()
        .try_collect()
        .await
        .map_err(nl("list addresses of", link.name.clone()))?;
    Ok(all
        .into_iter()
        .filter(|m| m.header.index == link.index && m.header.prefix_len == 32)
        .filter(|m| ipv4_of(m).is_some())
        .collect())
}

/// Adds the addresses of `wanted` missing on `link` as /32; returns those added.
pub async fn add_eips(
    handle: &Handle,
    link: &Link,
    wanted: &BTreeSet<Ipv4Addr>,
) -> Result<Vec<Ipv4Addr>, LinkError> {
    let have = eips_on(handle, link).await?;
    let mut added = Vec::new();
    for eip in wanted.difference(&have) {
        match handle
            .address()
            .add(link.index, IpAddr::V4(*eip), 32)
            .execute()
            .await
        {
            Ok(()) => added.push(*eip),
            Err(e) if errno(&e) == libc::EEXIST => {}
            Err(e) => return Err(nl("add address", format!("{eip}/32 on {}", link.name))(e)),
        }
    }
    Ok(added)
}

/// Removes the /32 addresses on `link` that are not in `wanted`; returns those removed.
pub async fn remove_eips_except(
    handle: &Handle,
    link: &Link,
    wanted: &BTreeSet<Ipv4Addr>,
) -> Result<Vec<Ipv4Addr>, LinkError> {
    let mut removed = Vec::new();
    for m in eip_messages(handle, link).await? {
        let Some(ip) = ipv4_of(&m) else { continue };
        if wanted.contains(&ip) {
            continue;
        }
        match handle.address().del(m).execute().await {
            Ok(()) => removed.push(ip),
            Err(e) if errno(&e) == libc::EADDRNOTAVAIL => {}
            Err(e) => return Err(nl("delete address", format!("{ip}/32 on {}", link.name))(e)),
        }
    }
    Ok(removed)
}

/// Every IPv4 route of every table.
pub(super) async fn ipv4_routes(handle: &Handle) -> Result<Vec<RouteMessage>, LinkError> {
    let mut query = RouteMessageBuilder::<Ipv4Addr>::new().build();
    query.header.table = RouteHeader::RT_TABLE_UNSPEC;
    handle
        .route()
        .get(query)
        .execute()
        .try_collect()
        .await
        .map_err(nl("list", "routes"))
}

/// The table a route is in (the attribute when present: tables above 255 need it).
pub(super) fn table_of(r: &RouteMessage) -> u32 {
    r.attributes
        .iter()
        .find_map(|a| match a {
            RouteAttribute::Table(t) => Some(*t),
            _ => None,
        })
        .unwrap_or(u32::from(r.header.table))
}

/// Whether `r` is a unicast default route of `table`.
pub(super) fn is_default_of(r: &RouteMessage, table: u32) -> bool {
    table_of(r) == table
        && r.header.kind == RouteType::Unicast
        && r.header.destination_prefix_length == 0
}

/// Whether the main table has an IPv4 default route.
pub async fn has_default_route(handle: &Handle) -> Result<bool, LinkError> {
    let main = u32::from(RouteHeader::RT_TABLE_MAIN);
    Ok(ipv4_routes(handle)
        .await?
        .iter()
        .any(|r| is_default_of(r, main)))
}

/// The ARP request a host sends about its own address (sender = target = `ip`).
pub fn gratuitous_arp(mac: [u8; 6], ip: Ipv4Addr) -> [u8; 28] {
    let mut p = [0u8; 28];
    p[0..2].copy_from_slice(&1u16.to_be_bytes()); // Ethernet
    p[2..4].copy_from_slice(&0x0800u16.to_be_bytes()); // IPv4
    p[4] = 6;
    p[5] = 4;
    p[6..8].copy_from_slice(&1u16.to_be_bytes()); // request
    p[8..14].copy_from_slice(&mac);
    p[14..18].copy_from_slice(&ip.octets());
    // Target hardware address stays zero.
    p[24..28].copy_from_slice(&ip.octets());
    p
}

/// Broadcasts a gratuitous ARP for each of `ips` out of `link`.
pub fn announce(link: &Link, ips: &[Ipv4Addr]) -> Result<(), LinkError> {
    if ips.is_empty() {
        return Ok(());
    }
    let io = |op| {
        let object = link.name.clone();
        move |source| LinkError::Io { op, object, source }
    };
    let Some(mac) = link.mac else {
        return Err(LinkError::Io {
            op: "announce on",
            object: link.name.clone(),
            source: io::Error::other("the interface has no MAC address"),
        });
    };
    // Protocol 0: a send-only socket that receives nothing. SAFETY: plain socket(2); the fd
    // is owned right away.
    let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io("open packet socket on")(io::Error::last_os_error()));
    }
    // SAFETY: fd is a fresh descriptor nobody else owns.
    let socket = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: all-zero is a valid sockaddr_ll.
    let mut to: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    to.sll_family = libc::AF_PACKET as u16;
    to.sll_protocol = ETH_P_ARP.to_be();
    to.sll_ifindex = link.index as i32;
    to.sll_halen = 6;
    to.sll_addr[..6].copy_from_slice(&[0xff; 6]);
    for ip in ips {
        let packet = gratuitous_arp(mac, *ip);
        // SAFETY: valid fd, buffer and sockaddr_ll of the sizes given.
        let rc = unsafe {
            libc::sendto(
                socket.as_raw_fd(),
                packet.as_ptr() as *const libc::c_void,
                packet.len(),
                0,
                &to as *const libc::sockaddr_ll as *const libc::sockaddr,
                std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            return Err(io("send gratuitous ARP on")(io::Error::last_os_error()));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gratuitous_arp_names_the_address_as_sender_and_target() {
        let p = gratuitous_arp([2, 0, 0, 0, 0, 1], "172.19.0.11".parse().unwrap());
        assert_eq!(&p[..8], &[0, 1, 8, 0, 6, 4, 0, 1]);
        assert_eq!(&p[8..14], &[2, 0, 0, 0, 0, 1]);
        assert_eq!(&p[14..18], &[172, 19, 0, 11]);
        assert_eq!(&p[18..24], &[0; 6]);
        assert_eq!(&p[24..28], &[172, 19, 0, 11]);
    }
}
