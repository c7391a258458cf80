//! The pod-side link work of ADD, DEL and CHECK, over rtnetlink, as the handler's steps: build
//! the pod end ([`Netlink::create_veth`]: a veth whose peer is created straight inside the pod
//! netns; or [`Netlink::adopt_veth`]: a passthru macvlan in the pod netns on the peer of a veth
//! pre-plugged in the node's netns, see `preplug.rs`), then configure it ([`PodEnd::configure`]:
//! up, addressed and routed, tx checksum offload off on both ends of a fresh veth); delete by
//! the host end; read the pod interface back for CHECK ([`inspect`]). The handler sequences
//! these steps with plugging the host end into OVS (`ovn::vswitch`), which is not here.
//!
//! By subject: `netns.rs` (sockets inside a pod's netns), `links.rs` (creating, configuring,
//! deleting and reading links), `addresses.rs` (addresses and routes), `tc.rs` (the pod's
//! egress shaping), `ethtool.rs` (tx checksum offload). This file holds the error, the node's
//! connection and the steps that combine them.

mod addresses;
mod ethtool;
mod links;
mod netns;
mod tc;

use std::io;
use std::path::{Path, PathBuf};

use ipnet::IpNet;
use rtnetlink::Handle;
use tokio::task::JoinHandle;

use crate::api::mac::MacAddr;
use crate::cni::protocol::RouteConfig;
use crate::cni::{CniError, ErrorCode};

use super::attachment::VethPlan;
use netns::PodNetns;

pub use ethtool::disable_tx_checksum;
pub use tc::{pod_egress_limit, set_pod_egress_limit};

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

/// An rtnetlink connection in this process's netns (the node's), driven on the current runtime.
/// Its link operations are in `links.rs`.
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

    /// Builds and configures the pod interface of `plan` in one go ([`Netlink::create_veth`],
    /// then [`PodEnd::configure`]), deleting the veth if configuring fails; for callers with
    /// nothing to run alongside (the node's handler plugs the host end meanwhile, so it takes
    /// the two steps itself). Idempotent like `create_veth`.
    pub async fn create_veth_in_netns(&self, plan: &VethPlan) -> Result<(), NetlinkError> {
        let pod_end = self.create_veth(plan).await?;
        if let Err(e) = pod_end.configure(plan).await {
            // Leave nothing half-built behind.
            let _ = self.delete_link(&plan.host_name).await;
            return Err(e);
        }
        Ok(())
    }
}

/// The pod end of an interface, built inside the pod netns and not configured yet, with
/// sockets in that netns to configure it.
pub struct PodEnd {
    pod: PodNetns,
    /// A veth made for this ADD (not one built ahead, whose ends have their offload set).
    fresh_veth: bool,
}

impl PodEnd {
    /// Brings the pod end up and gives it its addresses and routes; on a fresh veth, tx
    /// checksum offload off on both ends if `plan` asks.
    pub async fn configure(&self, plan: &VethPlan) -> Result<(), NetlinkError> {
        let pod = &self.pod;
        let index = pod.link_index(&plan.pod_ifname).await?;
        if ipv4_only(&plan.addresses) {
            // Before the link is up: otherwise the pod sends DAD, router solicitations and MLD
            // reports that OVN floods to every port of the logical switch, for nothing.
            links::drop_ipv6_link_local(pod, index, &plan.pod_ifname).await?;
        }
        links::set_up(pod, index, &plan.pod_ifname).await?;
        addresses::add_addresses(pod, index, plan).await?;
        addresses::add_routes(pod, index, plan).await?;
        if plan.tx_checksum_off && self.fresh_veth {
            ethtool::set_tx_checksum(&pod.ioctl_socket, &plan.pod_ifname, false)?;
            ethtool::set_tx_checksum(&ethtool::datagram_socket()?, &plan.host_name, false)?;
        }
        Ok(())
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

/// The global-scope addresses of every interface in the netns at `netns` (to find a pod's
/// netns by its primary address).
pub async fn netns_addresses(netns: &Path) -> Result<Vec<IpNet>, NetlinkError> {
    let pod = PodNetns::enter(netns).await?;
    let object = format!("netns {}", netns.display());
    addresses::global_addresses(&pod, None, &object).await
}

/// Reads back the pod interface `ifname` in `pod_netns`; `Ok(None)` if there is no such interface.
pub async fn inspect(pod_netns: &Path, ifname: &str) -> Result<Option<PodLinkState>, NetlinkError> {
    let pod = PodNetns::enter(pod_netns).await?;
    let Some(link) = links::get_link(&pod.handle, ifname).await? else {
        return Ok(None);
    };
    let object = pod.object(ifname);
    let (mac, mtu, up) = links::read_link(&link, &object)?;
    let index = link.header.index;
    Ok(Some(PodLinkState {
        name: ifname.to_string(),
        mac,
        mtu,
        up,
        addresses: addresses::addresses_of(&pod, index, &object).await?,
        routes: addresses::routes_through(&pod, index, &object).await?,
    }))
}
