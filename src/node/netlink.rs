//! The pod-side link work of ADD, DEL and CHECK, over rtnetlink: a veth whose peer is created
//! directly inside the pod's netns, or (pre-plugged, see `preplug.rs`) a veth built in the node's
//! netns ahead of the sandbox, whose peer ADD extends into the pod's netns as a passthru
//! macvlan; the pod interface named, addressed and routed there;
//! tx checksum offload off on both ends (the userspace OVS datapath drops packets with partial
//! checksums); deletion by the host end; reading the pod interface back for CHECK.
//!
//! Netlink in the pod netns: a netlink socket belongs to the netns it was created in. To get one
//! inside the pod netns we spawn a short-lived OS thread that `setns`es into it and creates the
//! rtnetlink socket (and a datagram socket for the ethtool ioctl) there, then exits; the sockets
//! are then driven from the caller's tokio runtime like any other. No thread of the runtime ever
//! changes netns. The OVS port for the host end is not here (`src/ovn`/the node role plugs it).

use std::fs::File;
use std::io;
use std::net::IpAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use futures::{StreamExt, TryStreamExt};
use ipnet::IpNet;
use netlink_packet_route::address::{AddressAttribute, AddressHeaderFlags, AddressScope};
use netlink_packet_route::link::{
    AfSpecInet6, AfSpecUnspec, In6AddrGenMode, InfoData, InfoKind, InfoVeth, LinkAttribute,
    LinkFlags, LinkMessage, MacVlanMode,
};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::tc::{TcAttribute, TcHandle, TcMessage, TcOption};
use netlink_packet_route::RouteNetlinkMessage;
use rtnetlink::packet_core::{
    DefaultNla, NetlinkMessage, NetlinkPayload, Nla, NLM_F_ACK, NLM_F_CREATE, NLM_F_REPLACE,
    NLM_F_REQUEST,
};
use rtnetlink::{
    Handle, LinkMacVlan, LinkMessageBuilder, LinkUnspec, LinkVeth, RouteMessageBuilder,
};
use tokio::task::JoinHandle;

use crate::cni::protocol::{MacAddr, RouteConfig};
use crate::cni::{CniError, ErrorCode};

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

/// A pod interface as read back from the kernel.
#[derive(Clone, Debug, PartialEq)]
pub struct PodLinkState {
    pub name: String,
    pub mac: MacAddr,
    pub mtu: u32,
    pub up: bool,
    /// Global-scope addresses (link-local ones are left out).
    pub addresses: Vec<IpNet>,
    /// Unicast routes of the main table through this interface, except the kernel's prefix routes.
    pub routes: Vec<RouteConfig>,
}

#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    #[error("netns {path}: {source}")]
    Netns { path: PathBuf, source: io::Error },
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
    #[error("interface {name} in netns {netns} was not found")]
    Missing { name: String, netns: String },
}

impl NetlinkError {
    /// The pod's netns does not exist (any more).
    pub fn is_netns_gone(&self) -> bool {
        matches!(self, NetlinkError::Netns { source, .. } if source.kind() == io::ErrorKind::NotFound)
    }

    /// The CNI error to answer with: a gone netns is code 3 (container unknown), the rest code 5.
    pub fn to_cni(&self) -> CniError {
        let code = if self.is_netns_gone() {
            ErrorCode::UnknownContainer
        } else {
            ErrorCode::Io
        };
        CniError::new(code, self.to_string())
    }
}

fn nl_err(
    op: &'static str,
    object: impl Into<String>,
) -> impl FnOnce(rtnetlink::Error) -> NetlinkError {
    let object = object.into();
    move |source| NetlinkError::Netlink { op, object, source }
}

fn io_err(op: &'static str, object: impl Into<String>) -> impl FnOnce(io::Error) -> NetlinkError {
    let object = object.into();
    move |source| NetlinkError::Io { op, object, source }
}

fn errno(e: &rtnetlink::Error) -> i32 {
    match e {
        rtnetlink::Error::NetlinkError(m) => m.raw_code().abs(),
        _ => 0,
    }
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

/// An rtnetlink connection in this process's netns (the node's), driven on the current runtime.
pub struct Netlink {
    handle: Handle,
    connection: JoinHandle<()>,
}

impl Drop for Netlink {
    fn drop(&mut self) {
        self.connection.abort();
    }
}

impl Netlink {
    /// Opens the connection; must be called inside a tokio runtime.
    pub fn new() -> Result<Self, NetlinkError> {
        let (connection, handle, _) =
            rtnetlink::new_connection().map_err(io_err("open", "rtnetlink socket"))?;
        Ok(Netlink {
            handle,
            connection: tokio::spawn(connection),
        })
    }

    /// Builds the pod interface of `plan`. Idempotent: a host end of the same name left by an
    /// earlier attempt is deleted first (its peer goes with it). Fails if another interface
    /// named `pod_ifname` exists in the pod netns.
    pub async fn create_veth_in_netns(&self, plan: &VethPlan) -> Result<(), NetlinkError> {
        self.create_veth_in_netns_with(plan, async {}).await.0
    }

    /// [`Netlink::create_veth_in_netns`] that runs `alongside` (plugging the host end into OVS
    /// and waiting for it) concurrently with configuring the pod end, once the veth exists.
    /// Returns the pod side's outcome and `alongside`'s, which is `None` when the pod side
    /// failed first (then `alongside` is dropped and the veth deleted).
    pub async fn create_veth_in_netns_with<T>(
        &self,
        plan: &VethPlan,
        alongside: impl std::future::Future<Output = T>,
    ) -> (Result<(), NetlinkError>, Option<T>) {
        self.pod_end_with(plan, self.create_veth(plan), true, alongside)
            .await
    }

    /// [`Netlink::create_veth_in_netns_with`] for a veth built ahead of the sandbox by
    /// [`Netlink::create_detached_veth`]: the pod interface `pod_ifname` is created straight in
    /// the pod netns as a passthru macvlan on `peer` (which stays in this netns), and configured
    /// there. Not a move of `peer` itself: moving a link between namespaces waits for RCU
    /// (`rcu_barrier`, 15-23 ms measured here), more than pre-plugging saves.
    pub async fn adopt_veth_in_netns_with<T>(
        &self,
        plan: &VethPlan,
        peer: &str,
        alongside: impl std::future::Future<Output = T>,
    ) -> (Result<(), NetlinkError>, Option<T>) {
        // No tx checksum work here: `create_detached_veth` turned offload off on both veth
        // ends already, and the macvlan cannot switch it off and need not (its frames leave
        // through the peer, where the kernel completes their checksums).
        self.pod_end_with(plan, self.macvlan_on_peer(plan, peer), false, alongside)
            .await
    }

    /// Runs `build` (which leaves the pod end in the pod netns), then configures the pod end
    /// (and, for a `fresh_veth`, tx checksum offload on both its ends) while `alongside` runs;
    /// deletes the veth if the pod side fails.
    async fn pod_end_with<T>(
        &self,
        plan: &VethPlan,
        build: impl std::future::Future<Output = Result<PodNetns, NetlinkError>>,
        fresh_veth: bool,
        alongside: impl std::future::Future<Output = T>,
    ) -> (Result<(), NetlinkError>, Option<T>) {
        let started = std::time::Instant::now();
        let pod = match build.await {
            Ok(pod) => pod,
            Err(e) => return (Err(e), None),
        };
        let created = started.elapsed();
        let configure = configure_pod_end(&pod, plan, fresh_veth);
        tokio::pin!(configure, alongside);
        let mut configured = None;
        let mut other = None;
        while configured.is_none() || other.is_none() {
            tokio::select! {
                r = &mut configure, if configured.is_none() => {
                    if r.is_err() {
                        // Leave nothing half-built behind.
                        let _ = self.delete_link(&plan.host_name).await;
                        return (r, None);
                    }
                    configured = Some(r);
                    tracing::debug!(
                        veth_ms = created.as_secs_f64() * 1e3,
                        pod_end_ms = started.elapsed().as_secs_f64() * 1e3,
                        "pod end configured"
                    );
                }
                t = &mut alongside, if other.is_none() => other = Some(t),
            }
        }
        (configured.unwrap_or(Ok(())), other)
    }

    /// Builds a veth entirely in this netns, ahead of any sandbox (pre-plugging): `host` (the
    /// switch port) and `peer` (the lower device of the pod's future macvlan, with the pod's
    /// MAC and MTU), both up, without IPv6 and without addresses (so neither sends anything),
    /// tx checksum offload off on both if asked. A link left under either name by an earlier
    /// attempt is deleted first.
    pub async fn create_detached_veth(
        &self,
        host: &str,
        peer: &str,
        mac: MacAddr,
        mtu: u32,
        tx_checksum_off: bool,
    ) -> Result<(), NetlinkError> {
        self.delete_link(host).await?;
        self.delete_link(peer).await?;
        let peer_msg = LinkMessageBuilder::<LinkUnspec>::new()
            .name(peer.to_string())
            .address(mac.0.to_vec())
            .mtu(mtu)
            .build();
        let veth = LinkMessageBuilder::<LinkVeth>::new_with_info_kind(InfoKind::Veth)
            .name(host.to_string())
            .mtu(mtu)
            .up()
            .set_info_data(InfoData::Veth(InfoVeth::Peer(peer_msg)))
            .build();
        self.handle
            .link()
            .add(veth)
            .execute()
            .await
            .map_err(nl_err("create", format!("veth {host} (peer {peer})")))?;
        let configured = async {
            silence_ipv6(host)?;
            silence_ipv6(peer)?;
            if tx_checksum_off {
                let socket = datagram_socket()?;
                set_tx_checksum(&socket, host, false)?;
                set_tx_checksum(&socket, peer, false)?;
            }
            let index = self.existing_link_index(peer).await?;
            self.handle
                .link()
                .set(LinkUnspec::new_with_index(index).up().build())
                .execute()
                .await
                .map_err(nl_err("set up", peer.to_string()))
        };
        if let Err(e) = configured.await {
            let _ = self.delete_link(host).await;
            return Err(e);
        }
        Ok(())
    }

    /// Creates `pod_ifname` in the pod netns as a passthru macvlan on `peer` (a link of this
    /// netns, which lends it its MAC and MTU); returns sockets in that netns.
    async fn macvlan_on_peer(&self, plan: &VethPlan, peer: &str) -> Result<PodNetns, NetlinkError> {
        let netns = open_netns(&plan.pod_netns)?;
        let pod = PodNetns::enter(&netns, &plan.pod_netns).await?;
        let index = self.existing_link_index(peer).await?;
        let msg = LinkMacVlan::new(&plan.pod_ifname, index, MacVlanMode::Passthrough)
            .setns_by_fd(netns.as_raw_fd())
            .build();
        self.handle.link().add(msg).execute().await.map_err(nl_err(
            "create",
            format!(
                "macvlan {} on {peer} in {}",
                plan.pod_ifname,
                plan.pod_netns.display()
            ),
        ))?;
        Ok(pod)
    }

    /// Creates the veth with its peer in the pod netns; returns sockets in that netns.
    async fn create_veth(&self, plan: &VethPlan) -> Result<PodNetns, NetlinkError> {
        let netns = open_netns(&plan.pod_netns)?;
        let pod = PodNetns::enter(&netns, &plan.pod_netns).await?;
        self.delete_link(&plan.host_name).await?;

        let peer = LinkMessageBuilder::<LinkUnspec>::new()
            .name(plan.pod_ifname.clone())
            .address(plan.mac.0.to_vec())
            .mtu(plan.mtu)
            .setns_by_fd(netns.as_raw_fd())
            .build();
        let veth = LinkMessageBuilder::<LinkVeth>::new_with_info_kind(InfoKind::Veth)
            .name(plan.host_name.clone())
            .mtu(plan.mtu)
            .up()
            .set_info_data(InfoData::Veth(InfoVeth::Peer(peer)))
            .build();
        let object = format!(
            "veth {} (peer {} in {})",
            plan.host_name,
            plan.pod_ifname,
            plan.pod_netns.display()
        );
        self.handle
            .link()
            .add(veth)
            .execute()
            .await
            .map_err(nl_err("create", object))?;
        // The host end is a switch port: no IPv6 stack on it, so it never sends DAD, router
        // solicitations or MLD reports into br-int (its carrier is still down here: the pod
        // end is not up yet, so nothing was sent before this).
        silence_ipv6(&plan.host_name)?;

        Ok(pod)
    }

    /// Deletes the link `name` in this netns (for a veth, its peer goes too). `Ok(false)` if it
    /// did not exist.
    ///
    /// Not over the shared connection: the kernel runs an RTM_DELLINK in the sender's context,
    /// and for a veth waits there, after releasing RTNL, for RCU (15-20 ms on the test VM).
    /// On one socket those waits queue up (16 concurrent DELs took 20, 40, ... 380 ms) and
    /// stall the runtime worker that drives it; each on its own socket and blocking thread,
    /// they overlap as separate plugin processes' do.
    pub async fn delete_link(&self, name: &str) -> Result<bool, NetlinkError> {
        // Asking first is cheap and keeps ADD's clean-up of a leftover (usually absent) off
        // the blocking pool.
        if link_index(&self.handle, name).await?.is_none() {
            return Ok(false);
        }
        let owned = name.to_string();
        tokio::task::spawn_blocking(move || delete_link_blocking(&owned))
            .await
            .map_err(|e| NetlinkError::Io {
                op: "delete",
                object: format!("link {name}"),
                source: io::Error::other(e),
            })?
    }

    /// The index of the link `name` in this netns, which must exist.
    async fn existing_link_index(&self, name: &str) -> Result<u32, NetlinkError> {
        link_index(&self.handle, name)
            .await?
            .ok_or_else(|| NetlinkError::Missing {
                name: name.to_string(),
                netns: "the node".to_string(),
            })
    }

    /// The index of the link `name` in this netns, if it exists.
    pub async fn link_index(&self, name: &str) -> Result<Option<u32>, NetlinkError> {
        link_index(&self.handle, name).await
    }
}

/// RTM_DELLINK by name on a fresh rtnetlink socket of this thread's netns; waits for the ack.
fn delete_link_blocking(name: &str) -> Result<bool, NetlinkError> {
    use rtnetlink::sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};
    let io_err = |op: &'static str| {
        let object = format!("link {name}");
        move |source: io::Error| NetlinkError::Io { op, object, source }
    };
    let mut socket = Socket::new(NETLINK_ROUTE).map_err(io_err("open rtnetlink socket for"))?;
    socket
        .bind_auto()
        .map_err(io_err("bind rtnetlink socket for"))?;
    socket
        .connect(&SocketAddr::new(0, 0))
        .map_err(io_err("connect rtnetlink socket for"))?;
    let mut link = LinkMessage::default();
    link.attributes
        .push(LinkAttribute::IfName(name.to_string()));
    let mut msg = NetlinkMessage::from(RouteNetlinkMessage::DelLink(link));
    msg.header.flags = NLM_F_REQUEST | NLM_F_ACK;
    msg.header.sequence_number = 1;
    msg.finalize();
    let mut buf = vec![0u8; msg.buffer_len()];
    msg.serialize(&mut buf);
    socket.send(&buf, 0).map_err(io_err("delete"))?;
    loop {
        let (reply, _) = socket.recv_from_full().map_err(io_err("delete"))?;
        let mut offset = 0;
        while offset < reply.len() {
            let answer = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&reply[offset..])
                .map_err(|e| io_err("parse the answer to deleting")(io::Error::other(e)))?;
            offset += (answer.header.length as usize).max(1);
            if answer.header.sequence_number != 1 {
                continue;
            }
            if let NetlinkPayload::Error(e) = answer.payload {
                return match e.code {
                    None => Ok(true),
                    Some(code) if -code.get() == libc::ENODEV => Ok(false),
                    Some(_) => Err(io_err("delete")(e.to_io())),
                };
            }
        }
    }
}

/// Turns IPv6 off on the link `name` of this process's netns (through procfs: rtnetlink has no
/// per-link switch for it that a new link accepts). A kernel without IPv6 has nothing to turn off.
fn silence_ipv6(name: &str) -> Result<(), NetlinkError> {
    let path = format!("/proc/sys/net/ipv6/conf/{name}/disable_ipv6");
    match std::fs::write(&path, b"1") {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(NetlinkError::Io {
            op: "disable IPv6 on",
            object: name.to_string(),
            source,
        }),
    }
}

/// Whether an attachment's addresses are all IPv4 (and there is at least one). Its interface
/// then gets no IPv6 link-local address: the subnet has no IPv6, and each multicast packet a
/// pod sends (DAD, router solicitation, MLD report: several per interface as it comes up) is
/// flooded by OVN to every port of the switch, which costs every pod on it, and on a userspace
/// datapath stalls ovs-vswitchd as ports accumulate (measured: with 100 ports on br-int, the
/// time from a port's insertion to ovn-installed was 40 ms with link-local IPv6 on the pods
/// and 13 ms without). An attachment without addresses (pure L2) is left as the kernel makes it.
fn ipv4_only(addresses: &[IpNet]) -> bool {
    !addresses.is_empty() && addresses.iter().all(|a| a.addr().is_ipv4())
}

/// Brings the pod end up and gives it its addresses and routes; on a `fresh_veth` (not one
/// built ahead, whose offload is set already) tx checksum offload off on both ends if asked.
async fn configure_pod_end(
    pod: &PodNetns,
    plan: &VethPlan,
    fresh_veth: bool,
) -> Result<(), NetlinkError> {
    let index = pod.link_index(&plan.pod_ifname).await?;
    if ipv4_only(&plan.addresses) {
        // No IPv6 link-local address on an IPv4-only attachment, set before the link is up:
        // otherwise the pod sends DAD, router solicitations and MLD reports that OVN floods to
        // every port of the logical switch, for nothing (see `ipv4_only`).
        let mut msg = LinkUnspec::new_with_index(index).build();
        msg.attributes
            .push(LinkAttribute::AfSpecUnspec(vec![AfSpecUnspec::Inet6(
                vec![AfSpecInet6::AddrGenMode(In6AddrGenMode::None)],
            )]));
        match pod.handle.link().set(msg).execute().await {
            Ok(()) => {}
            // A kernel without IPv6 has nothing to turn off.
            Err(e) if errno(&e) == libc::EAFNOSUPPORT => {}
            Err(e) => {
                return Err(nl_err(
                    "set IPv6 addrgenmode none on",
                    format!("{} in {}", plan.pod_ifname, plan.pod_netns.display()),
                )(e))
            }
        }
    }
    // The peer cannot be created up (veth refuses to open before both ends are linked).
    pod.handle
        .link()
        .set(LinkUnspec::new_with_index(index).up().build())
        .execute()
        .await
        .map_err(nl_err(
            "set up",
            format!("{} in {}", plan.pod_ifname, plan.pod_netns.display()),
        ))?;
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
    if plan.tx_checksum_off && fresh_veth {
        set_tx_checksum(&pod.ioctl_socket, &plan.pod_ifname, false)?;
        set_tx_checksum(&datagram_socket()?, &plan.host_name, false)?;
    }
    Ok(())
}

/// Reads back the pod interface `ifname` in `pod_netns`; `Ok(None)` if there is no such interface.
pub async fn inspect(pod_netns: &Path, ifname: &str) -> Result<Option<PodLinkState>, NetlinkError> {
    let netns = open_netns(pod_netns)?;
    let pod = PodNetns::enter(&netns, pod_netns).await?;
    let Some(link) = get_link(&pod.handle, ifname).await? else {
        return Ok(None);
    };
    let index = link.header.index;
    let mut mac = None;
    let mut mtu = 0;
    for attr in &link.attributes {
        match attr {
            LinkAttribute::Address(a) => {
                mac = <[u8; 6]>::try_from(a.as_slice()).ok().map(MacAddr);
            }
            LinkAttribute::Mtu(m) => mtu = *m,
            _ => {}
        }
    }
    let object = format!("{ifname} in {}", pod_netns.display());
    let mac = mac.ok_or_else(|| NetlinkError::Io {
        op: "read MAC of",
        object: object.clone(),
        source: io::Error::new(io::ErrorKind::InvalidData, "no 6-byte link address"),
    })?;

    let messages: Vec<_> = pod
        .handle
        .address()
        .get()
        .set_link_index_filter(index)
        .execute()
        .try_collect()
        .await
        .map_err(nl_err("list addresses of", object.clone()))?;
    let mut addresses = Vec::new();
    for m in messages {
        if m.header.index != index || m.header.scope != AddressScope::Universe {
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

    let mut routes = Vec::new();
    for family in [
        RouteMessageBuilder::<std::net::Ipv4Addr>::new().build(),
        RouteMessageBuilder::<std::net::Ipv6Addr>::new().build(),
    ] {
        let messages: Vec<RouteMessage> = pod
            .handle
            .route()
            .get(family)
            .execute()
            .try_collect()
            .await
            .map_err(nl_err("list routes of", object.clone()))?;
        routes.extend(messages.iter().filter_map(|m| route_through(m, index)));
    }
    routes.sort();
    Ok(Some(PodLinkState {
        name: ifname.to_string(),
        mac,
        mtu,
        up: link.header.flags.contains(LinkFlags::Up),
        addresses,
        routes,
    }))
}

/// Kernel TBF attributes and constants (`linux/pkt_sched.h`).
const TCA_OPTIONS: u16 = 2;
const TCA_TBF_PARMS: u16 = 1;
const TCA_TBF_RATE64: u16 = 4;
const TCA_TBF_BURST: u16 = 6;
const TC_LINKLAYER_ETHERNET: u8 = 1;
/// `PSCHED_SHIFT`: the kernel's scheduler ticks are 64 ns.
const PSCHED_SHIFT: u32 = 6;
const TBF: &str = "tbf";

/// `TCA_OPTIONS` of a token bucket shaping to `mbps`: a burst of 10 ms of traffic (at least
/// 16 KiB, so GSO-sized packets pass) and 50 ms of queue.
fn tbf_options(mbps: u64) -> Vec<TcOption> {
    let rate = mbps.saturating_mul(125_000); // bytes/s
    let burst = (rate / 100).clamp(16 * 1024, 64 << 20);
    let limit = (burst + rate / 20).min(u64::from(u32::MAX)) as u32;
    let burst_ticks = ((burst as u128 * 1_000_000_000 / u128::from(rate.max(1))) >> PSCHED_SHIFT)
        .min(u128::from(u32::MAX)) as u32;
    let ratespec = |r: u32| {
        // struct tc_ratespec: cell_log, linklayer, overhead, cell_align, mpu, rate
        let mut b = vec![0u8, TC_LINKLAYER_ETHERNET];
        b.extend(0u16.to_ne_bytes());
        b.extend(0i16.to_ne_bytes());
        b.extend(0u16.to_ne_bytes());
        b.extend(r.to_ne_bytes());
        b
    };
    // struct tc_tbf_qopt: rate, peakrate, limit, buffer, mtu
    let mut parms = ratespec(rate.min(u64::from(u32::MAX)) as u32);
    parms.extend(ratespec(0));
    parms.extend(limit.to_ne_bytes());
    parms.extend(burst_ticks.to_ne_bytes());
    parms.extend(0u32.to_ne_bytes());
    let mut options = vec![
        TcOption::Other(DefaultNla::new(TCA_TBF_PARMS, parms)),
        TcOption::Other(DefaultNla::new(
            TCA_TBF_BURST,
            (burst as u32).to_ne_bytes().to_vec(),
        )),
    ];
    if rate > u64::from(u32::MAX) {
        options.push(TcOption::Other(DefaultNla::new(
            TCA_TBF_RATE64,
            rate.to_ne_bytes().to_vec(),
        )));
    }
    options
}

/// Shapes what the pod sends on `ifname` to `mbps` with a root TBF qdisc on the pod end, or
/// removes that qdisc (`None`). This is the pod's egress limit on the userspace datapath, where
/// OVS's ingress policing on the host end never sees the packets (OVS reads them from an
/// AF_PACKET socket, which the kernel serves before the ingress qdisc).
pub async fn set_pod_egress_limit(
    pod_netns: &Path,
    ifname: &str,
    mbps: Option<u64>,
) -> Result<(), NetlinkError> {
    let netns = open_netns(pod_netns)?;
    let pod = PodNetns::enter(&netns, pod_netns).await?;
    let index = pod.link_index(ifname).await? as i32;
    let object = format!("{ifname} in {}", pod_netns.display());
    match mbps {
        Some(mbps) => {
            let mut msg = TcMessage::with_index(index);
            msg.header.parent = TcHandle::ROOT;
            msg.header.handle = TcHandle { major: 1, minor: 0 };
            msg.attributes.push(TcAttribute::Kind(TBF.to_string()));
            msg.attributes.push(TcAttribute::Options(tbf_options(mbps)));
            let mut req = NetlinkMessage::from(RouteNetlinkMessage::NewQueueDiscipline(msg));
            req.header.flags = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE;
            let mut handle = pod.handle.clone();
            let mut responses = handle
                .request(req)
                .map_err(nl_err("shape egress of", object.clone()))?;
            while let Some(m) = responses.next().await {
                if let NetlinkPayload::Error(e) = m.payload {
                    if e.code.is_some() {
                        return Err(nl_err("shape egress of", object)(
                            rtnetlink::Error::NetlinkError(e),
                        ));
                    }
                }
            }
            Ok(())
        }
        None => {
            if root_tbf(&pod.handle, index, &object).await?.is_none() {
                return Ok(());
            }
            let mut del = pod.handle.qdisc().del(index);
            del.message_mut().header.parent = TcHandle::ROOT;
            del.execute()
                .await
                .map_err(nl_err("remove egress shaping of", object))
        }
    }
}

/// The payload of attribute `kind` in a buffer of netlink attributes.
fn nested_attribute(buf: &[u8], kind: u16) -> Option<Vec<u8>> {
    let mut rest = buf;
    while rest.len() >= 4 {
        let len = usize::from(u16::from_ne_bytes([rest[0], rest[1]]));
        let this = u16::from_ne_bytes([rest[2], rest[3]]) & 0x3fff;
        if len < 4 || len > rest.len() {
            return None;
        }
        if this == kind {
            return Some(rest[4..len].to_vec());
        }
        rest = &rest[((len + 3) & !3).min(rest.len())..];
    }
    None
}

/// The root TBF qdisc of link `index`, if there is one.
async fn root_tbf(
    handle: &Handle,
    index: i32,
    object: &str,
) -> Result<Option<TcMessage>, NetlinkError> {
    let qdiscs: Vec<TcMessage> = handle
        .clone()
        .qdisc()
        .get()
        .index(index)
        .execute()
        .try_collect()
        .await
        .map_err(nl_err("list qdiscs of", object))?;
    Ok(qdiscs.into_iter().find(|q| {
        q.header.index == index
            && q.header.parent == TcHandle::ROOT
            && q.attributes.contains(&TcAttribute::Kind(TBF.to_string()))
    }))
}

/// The pod end's egress limit in Mbit/s, if a TBF we set is there (for tests and CHECK).
pub async fn pod_egress_limit(pod_netns: &Path, ifname: &str) -> Result<Option<u64>, NetlinkError> {
    let netns = open_netns(pod_netns)?;
    let pod = PodNetns::enter(&netns, pod_netns).await?;
    let index = pod.link_index(ifname).await? as i32;
    let object = format!("{ifname} in {}", pod_netns.display());
    let Some(q) = root_tbf(&pod.handle, index, &object).await? else {
        return Ok(None);
    };
    // The options of a qdisc kind the crate does not model come back as one raw TCA_OPTIONS
    // (or as its raw attributes): find TCA_TBF_PARMS in either form.
    let raw: Vec<(u16, Vec<u8>)> = q
        .attributes
        .iter()
        .filter_map(|a| match a {
            TcAttribute::Options(opts) => Some(opts),
            _ => None,
        })
        .flatten()
        .filter_map(|o| match o {
            TcOption::Other(nla) => {
                let mut value = vec![0u8; nla.value_len()];
                nla.emit_value(&mut value);
                Some((nla.kind(), value))
            }
            _ => None,
        })
        .collect();
    let parms = raw.iter().find_map(|(kind, value)| match *kind {
        TCA_TBF_PARMS => Some(value.clone()),
        TCA_OPTIONS => nested_attribute(value, TCA_TBF_PARMS),
        _ => None,
    });
    // tc_tbf_qopt starts with the rate's tc_ratespec, whose rate (bytes/s) is at offset 8.
    Ok(parms
        .and_then(|p| p.get(8..12).map(|r| [r[0], r[1], r[2], r[3]]))
        .map(|r| u64::from(u32::from_ne_bytes(r)) / 125_000))
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

async fn get_link(handle: &Handle, name: &str) -> Result<Option<LinkMessage>, NetlinkError> {
    match handle
        .link()
        .get()
        .match_name(name.to_string())
        .execute()
        .try_next()
        .await
    {
        Ok(link) => Ok(link),
        Err(e) if errno(&e) == libc::ENODEV => Ok(None),
        Err(e) => Err(nl_err("look up", format!("link {name}"))(e)),
    }
}

async fn link_index(handle: &Handle, name: &str) -> Result<Option<u32>, NetlinkError> {
    Ok(get_link(handle, name).await?.map(|l| l.header.index))
}

fn open_netns(path: &Path) -> Result<File, NetlinkError> {
    File::open(path).map_err(|source| NetlinkError::Netns {
        path: path.to_path_buf(),
        source,
    })
}

/// Sockets created inside a pod's netns.
struct PodNetns {
    handle: Handle,
    connection: JoinHandle<()>,
    ioctl_socket: OwnedFd,
    netns: PathBuf,
}

impl Drop for PodNetns {
    fn drop(&mut self) {
        self.connection.abort();
    }
}

impl PodNetns {
    async fn enter(netns: &File, path: &Path) -> Result<Self, NetlinkError> {
        let runtime = tokio::runtime::Handle::current();
        let netns_fd = netns.try_clone().map_err(|source| NetlinkError::Netns {
            path: path.to_path_buf(),
            source,
        })?;
        let (tx, rx) = tokio::sync::oneshot::channel();
        std::thread::Builder::new()
            .name("netns-enter".into())
            .spawn(move || {
                // This thread only creates sockets in the pod netns and ends; it never returns to a pool.
                let opened = (|| {
                    let _runtime = runtime.enter();
                    nix::sched::setns(&netns_fd, nix::sched::CloneFlags::CLONE_NEWNET)
                        .map_err(io::Error::from)?;
                    let (connection, handle, _) = rtnetlink::new_connection()?;
                    let socket = datagram_socket_raw()?;
                    Ok::<_, io::Error>((connection, handle, socket))
                })();
                let _ = tx.send(opened);
            })
            .map_err(|source| NetlinkError::Io {
                op: "spawn thread for",
                object: format!("netns {}", path.display()),
                source,
            })?;
        let (connection, handle, ioctl_socket) = rx
            .await
            .map_err(|_| NetlinkError::Io {
                op: "enter",
                object: format!("netns {}", path.display()),
                source: io::Error::other("the netns thread ended without an answer"),
            })?
            .map_err(|source| NetlinkError::Netns {
                path: path.to_path_buf(),
                source,
            })?;
        Ok(PodNetns {
            handle,
            connection: tokio::spawn(connection),
            ioctl_socket,
            netns: path.to_path_buf(),
        })
    }

    async fn link_index(&self, name: &str) -> Result<u32, NetlinkError> {
        link_index(&self.handle, name)
            .await?
            .ok_or_else(|| NetlinkError::Missing {
                name: name.to_string(),
                netns: self.netns.display().to_string(),
            })
    }
}

fn datagram_socket_raw() -> io::Result<OwnedFd> {
    // SAFETY: plain socket(2); the fd is owned by the OwnedFd on success.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh, valid descriptor nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn datagram_socket() -> Result<OwnedFd, NetlinkError> {
    datagram_socket_raw().map_err(io_err("open", "ioctl socket"))
}

const ETHTOOL_STXCSUM: u32 = 0x17;

#[repr(C)]
struct EthtoolValue {
    cmd: u32,
    data: u32,
}

/// `struct ifreq` with the `ifr_data` member of its union (40 bytes on 64-bit Linux).
#[repr(C)]
struct IfreqData {
    name: [libc::c_char; libc::IFNAMSIZ],
    data: *mut libc::c_void,
    _union_rest: [u8; 16],
}

/// Sets tx checksum offload of `ifname` (in the socket's netns) through the ethtool ioctl, like
/// `ethtool -K <if> tx off`; the kernel also drops the offloads that depend on it (TSO…).
fn set_tx_checksum(socket: &OwnedFd, ifname: &str, on: bool) -> Result<(), NetlinkError> {
    let mut value = EthtoolValue {
        cmd: ETHTOOL_STXCSUM,
        data: u32::from(on),
    };
    let mut req = IfreqData {
        name: [0; libc::IFNAMSIZ],
        data: std::ptr::null_mut(),
        _union_rest: [0; 16],
    };
    for (dst, src) in req
        .name
        .iter_mut()
        .zip(ifname.bytes().take(libc::IFNAMSIZ - 1))
    {
        *dst = src as libc::c_char;
    }
    req.data = (&mut value as *mut EthtoolValue).cast();
    // SAFETY: SIOCETHTOOL reads the ifreq and the ethtool_value it points to, both alive here.
    let rc = unsafe { libc::ioctl(socket.as_raw_fd(), libc::SIOCETHTOOL as _, &mut req) };
    if rc < 0 {
        return Err(NetlinkError::Io {
            op: "turn tx checksum offload off on",
            object: ifname.to_string(),
            source: io::Error::last_os_error(),
        });
    }
    Ok(())
}

/// Turns tx checksum offload off on `ifname` in this process's netns: a kernel NIC attached to
/// a netdev (userspace) OVS bridge must not hand it packets with partial checksums.
pub fn disable_tx_checksum(ifname: &str) -> Result<(), NetlinkError> {
    set_tx_checksum(&datagram_socket()?, ifname, false)
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
