//! Links over rtnetlink: the steps that build a pod end (a veth with its peer created
//! straight in the pod netns; a passthru macvlan in the pod netns on a pre-plugged veth's
//! peer; the pre-plugged veth itself, built in the node's netns), the link settings of
//! configuring it (no IPv6 link-local address, up), deleting by the host end, and looking
//! links up and reading them back. Addresses and routes are `addresses.rs`.

use std::io;

use futures::TryStreamExt;
use netlink_packet_route::link::{
    AfSpecInet6, AfSpecUnspec, In6AddrGenMode, InfoData, InfoKind, InfoVeth, LinkAttribute,
    LinkFlags, LinkMessage, MacVlanMode,
};
use netlink_packet_route::RouteNetlinkMessage;
use rtnetlink::packet_core::{NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_REQUEST};
use rtnetlink::{Handle, LinkMacVlan, LinkMessageBuilder, LinkUnspec, LinkVeth};

use crate::api::mac::MacAddr;

use super::ethtool::{datagram_socket, set_tx_checksum};
use super::netns::PodNetns;
use super::{errno, nl_err, Netlink, NetlinkError, PodEnd, VethPlan};

impl Netlink {
    /// Creates the veth of `plan` with its peer, the pod end, straight in the pod netns, not
    /// configured yet ([`PodEnd::configure`] is the next step). Idempotent: a host end of the
    /// same name left by an earlier attempt is deleted first (its peer goes with it). Fails if
    /// another interface named `pod_ifname` exists in the pod netns.
    pub async fn create_veth(&self, plan: &VethPlan) -> Result<PodEnd, NetlinkError> {
        let pod = PodNetns::enter(&plan.pod_netns).await?;
        self.delete_link(&plan.host_name).await?;

        let peer = LinkMessageBuilder::<LinkUnspec>::new()
            .name(plan.pod_ifname.clone())
            .address(plan.mac.0.to_vec())
            .mtu(plan.mtu)
            .setns_by_fd(pod.fd())
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
        Ok(PodEnd {
            pod,
            fresh_veth: true,
        })
    }

    /// Creates the pod interface of `plan` straight in the pod netns as a passthru macvlan on
    /// `peer`, the pod end of a veth built ahead by [`Netlink::create_detached_veth`] (which
    /// stays in this netns and lends the macvlan its MAC and MTU); not configured yet. Not a
    /// move of `peer` itself: moving a link between namespaces waits for RCU
    /// (`rcu_barrier`, 15-23 ms measured here), more than pre-plugging saves.
    pub async fn adopt_veth(&self, plan: &VethPlan, peer: &str) -> Result<PodEnd, NetlinkError> {
        let pod = PodNetns::enter(&plan.pod_netns).await?;
        let index = self.existing_link_index(peer).await?;
        let msg = LinkMacVlan::new(&plan.pod_ifname, index, MacVlanMode::Passthrough)
            .setns_by_fd(pod.fd())
            .build();
        self.handle.link().add(msg).execute().await.map_err(nl_err(
            "create",
            format!(
                "macvlan {} on {peer} in {}",
                plan.pod_ifname,
                plan.pod_netns.display()
            ),
        ))?;
        // No tx checksum work on it: `create_detached_veth` turned offload off on both veth
        // ends already, and the macvlan cannot switch it off and need not (its frames leave
        // through the peer, where the kernel completes their checksums).
        Ok(PodEnd {
            pod,
            fresh_veth: false,
        })
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

    /// The MTU of the link in this netns that holds address `ip` (the node's tunnel endpoint),
    /// if some link does.
    pub async fn mtu_of_address(&self, ip: std::net::IpAddr) -> Result<Option<u32>, NetlinkError> {
        use netlink_packet_route::address::AddressAttribute;
        let object = format!("the link holding {ip}");
        let messages: Vec<_> = self
            .handle
            .address()
            .get()
            .execute()
            .try_collect()
            .await
            .map_err(nl_err("list addresses for", object.clone()))?;
        let Some(index) = messages
            .iter()
            .find(|m| {
                m.attributes.iter().any(|a| {
                    matches!(a, AddressAttribute::Local(a) | AddressAttribute::Address(a) if *a == ip)
                })
            })
            .map(|m| m.header.index)
        else {
            return Ok(None);
        };
        let link = self
            .handle
            .link()
            .get()
            .match_index(index)
            .execute()
            .try_next()
            .await
            .map_err(nl_err("look up", object))?;
        Ok(link.and_then(|l| {
            l.attributes.iter().find_map(|a| match a {
                LinkAttribute::Mtu(m) => Some(*m),
                _ => None,
            })
        }))
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

/// Sets IPv6 address generation to none on the pod end `index` (so it gets no link-local
/// address; see `ipv4_only` in `mod.rs`). A kernel without IPv6 has nothing to turn off.
pub(super) async fn drop_ipv6_link_local(
    pod: &PodNetns,
    index: u32,
    ifname: &str,
) -> Result<(), NetlinkError> {
    let mut msg = LinkUnspec::new_with_index(index).build();
    msg.attributes
        .push(LinkAttribute::AfSpecUnspec(vec![AfSpecUnspec::Inet6(
            vec![AfSpecInet6::AddrGenMode(In6AddrGenMode::None)],
        )]));
    match pod.handle.link().set(msg).execute().await {
        Ok(()) => Ok(()),
        Err(e) if errno(&e) == libc::EAFNOSUPPORT => Ok(()),
        Err(e) => Err(nl_err("set IPv6 addrgenmode none on", pod.object(ifname))(
            e,
        )),
    }
}

/// Brings the pod end `index` up. Not at creation: a veth refuses to open before both ends
/// are linked.
pub(super) async fn set_up(pod: &PodNetns, index: u32, ifname: &str) -> Result<(), NetlinkError> {
    pod.handle
        .link()
        .set(LinkUnspec::new_with_index(index).up().build())
        .execute()
        .await
        .map_err(nl_err("set up", pod.object(ifname)))
}

/// The MAC, MTU and whether it is up, of a link read back (`object` names it in errors).
pub(super) fn read_link(
    link: &LinkMessage,
    object: &str,
) -> Result<(MacAddr, u32, bool), NetlinkError> {
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
    let mac = mac.ok_or_else(|| NetlinkError::Io {
        op: "read MAC of",
        object: object.to_string(),
        source: io::Error::new(io::ErrorKind::InvalidData, "no 6-byte link address"),
    })?;
    Ok((mac, mtu, link.header.flags.contains(LinkFlags::Up)))
}

pub(super) async fn get_link(
    handle: &Handle,
    name: &str,
) -> Result<Option<LinkMessage>, NetlinkError> {
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

pub(super) async fn link_index(handle: &Handle, name: &str) -> Result<Option<u32>, NetlinkError> {
    Ok(get_link(handle, name).await?.map(|l| l.header.index))
}
