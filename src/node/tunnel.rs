//! Userspace tunnelling for the netdev datapath. There ovs-vswitchd, not the kernel,
//! terminates Geneve, and it routes tunnel packets through its own tables: the tunnel
//! endpoint address must sit on an OVS bridge that holds the NIC carrying tunnel traffic
//! (the OVS "userspace tunneling" guide). With `--tunnel-nic NIC --tunnel-address IP/PLEN`
//! the node role builds that bridge, `br-phy` (netdev), with NIC as a port and the address on
//! the bridge's internal interface. The kernel datapath needs none of this: its encap IP is
//! an ordinary host address. The NIC should be dedicated to the overlay: its own addresses
//! and routes stop working once OVS owns it.
//!
//! Also here: the per-node endpoint address from the Node annotation
//! [`TUNNEL_ADDRESS_ANNOTATION`] (so one DaemonSet serves every node), keeping the address on
//! `br-phy` while ovs-vswitchd restarts (its internal interface, and the address with it, dies
//! with the daemon), and giving the NIC back on uninstall.

use std::net::IpAddr;
use std::time::Duration;

use anyhow::{bail, Context};
use futures::TryStreamExt;
use ipnet::IpNet;
use rtnetlink::{Handle, LinkUnspec};
use tokio::time::Instant;

use crate::ovn::Vswitch;
use std::collections::BTreeMap;
use tokio::sync::watch;

/// The netdev bridge holding the tunnel NIC and the tunnel endpoint address.
pub const TUNNEL_BRIDGE: &str = "br-phy";

/// The Node annotation that gives a node's tunnel endpoint with its prefix (`172.31.1.10/24`),
/// read when `--tunnel-nic` comes without `--tunnel-address`.
pub const TUNNEL_ADDRESS_ANNOTATION: &str = "kube-ovn.io/tunnel-address";

/// How often the endpoint keeper looks at `br-phy`: bounds how long tunnels stay down after
/// ovs-vswitchd recreated the bridge's interface without its address.
const KEEP_INTERVAL: Duration = Duration::from_millis(250);

/// The tunnel endpoint of node `node` from its annotation value (`None`: no annotation).
pub fn endpoint_from_annotation(node: &str, value: Option<&str>) -> anyhow::Result<IpNet> {
    let example =
        format!("e.g. kubectl annotate node {node} {TUNNEL_ADDRESS_ANNOTATION}=172.31.1.10/24");
    let Some(value) = value.map(str::trim) else {
        bail!(
            "node {node} has no annotation {TUNNEL_ADDRESS_ANNOTATION}: --tunnel-nic needs this \
             node's tunnel endpoint address with its prefix ({example}), or pass --tunnel-address"
        );
    };
    let address: IpNet = value.parse().map_err(|_| {
        anyhow::anyhow!(
            "node {node}: annotation {TUNNEL_ADDRESS_ANNOTATION}={value:?} is not an address \
             with its prefix ({example})"
        )
    })?;
    if address.addr() == address.network() && address.prefix_len() < address.max_prefix_len() {
        bail!(
            "node {node}: annotation {TUNNEL_ADDRESS_ANNOTATION}={value:?} is a network, not \
             this node's address in it ({example})"
        );
    }
    Ok(address)
}

/// Makes `br-phy` (netdev) hold `nic` and carry `address`; idempotent. Call once
/// ovs-vswitchd runs: it creates the bridge's internal interface.
pub async fn ensure_tunnel_bridge(
    vswitch: &Vswitch,
    nic: &str,
    address: IpNet,
    deadline: Instant,
) -> anyhow::Result<()> {
    vswitch
        .ensure_bridge(TUNNEL_BRIDGE, "netdev", None)
        .await
        .with_context(|| format!("creating bridge {TUNNEL_BRIDGE}"))?;
    vswitch
        .plug_interface(TUNNEL_BRIDGE, nic, &BTreeMap::new())
        .await
        .with_context(|| format!("adding tunnel NIC {nic} to {TUNNEL_BRIDGE}"))?;
    super::netlink::disable_tx_checksum(nic)
        .with_context(|| format!("tunnel NIC {nic}: tx checksum offload"))?;

    let (connection, handle, _) =
        rtnetlink::new_connection().context("opening an rtnetlink socket")?;
    let connection = tokio::spawn(connection);
    let result = address_bridge(&handle, nic, address, deadline).await;
    connection.abort();
    result
}

/// Puts `address` back on `br-phy` whenever it goes missing (ovs-vswitchd restarted and made a
/// new interface for the bridge) until `stop` turns true.
pub async fn keep_endpoint(nic: String, address: IpNet, mut stop: watch::Receiver<bool>) {
    let (connection, handle, _) = match rtnetlink::new_connection() {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "tunnel endpoint keeper: opening an rtnetlink socket");
            return;
        }
    };
    let connection = tokio::spawn(connection);
    let mut was_intact = true;
    loop {
        match endpoint_intact(&handle, address).await {
            Ok(true) => was_intact = true,
            Ok(false) => {
                // The bridge's interface may not be back yet: try once, look again next tick.
                match address_bridge(&handle, &nic, address, Instant::now()).await {
                    Ok(()) => {
                        tracing::info!(%address, "tunnel endpoint restored on {TUNNEL_BRIDGE}")
                    }
                    Err(e) if was_intact => {
                        tracing::warn!(error = %e, "tunnel endpoint lost; restoring")
                    }
                    Err(e) => tracing::debug!(error = %e, "tunnel endpoint still down"),
                }
                was_intact = false;
            }
            Err(e) => tracing::debug!(error = %e, "reading the tunnel endpoint"),
        }
        tokio::select! {
            _ = tokio::time::sleep(KEEP_INTERVAL) => {}
            _ = stop.wait_for(|s| *s) => break,
        }
    }
    connection.abort();
}

async fn endpoint_intact(handle: &Handle, address: IpNet) -> anyhow::Result<bool> {
    let mut links = handle
        .link()
        .get()
        .match_name(TUNNEL_BRIDGE.to_string())
        .execute();
    let link = match links.try_next().await {
        Ok(Some(link)) => link,
        Ok(None) => return Ok(false),
        Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -libc::ENODEV => {
            return Ok(false)
        }
        Err(e) => return Err(e).with_context(|| format!("looking up {TUNNEL_BRIDGE}")),
    };
    let up = link
        .header
        .flags
        .contains(netlink_packet_route::link::LinkFlags::Up);
    Ok(up && has_address(handle, link.header.index, address.addr()).await?)
}

/// Takes `br-phy` away and gives `nic` back to the node, up (its own addresses were never
/// touched). Nothing there is fine. Returns whether `br-phy` existed.
pub async fn release_tunnel_bridge(vswitch: &Vswitch, nic: Option<&str>) -> anyhow::Result<bool> {
    let existed = vswitch
        .bridge_exists(TUNNEL_BRIDGE)
        .with_context(|| format!("reading bridge {TUNNEL_BRIDGE}"))?;
    vswitch
        .remove_bridge(TUNNEL_BRIDGE)
        .await
        .with_context(|| format!("removing bridge {TUNNEL_BRIDGE}"))?;
    let Some(nic) = nic else {
        return Ok(existed);
    };
    let (connection, handle, _) =
        rtnetlink::new_connection().context("opening an rtnetlink socket")?;
    let connection = tokio::spawn(connection);
    let result = async {
        match link_index(&handle, nic).await? {
            Some(index) => set_up(&handle, index, nic).await,
            None => {
                tracing::warn!(nic, "tunnel NIC is gone; nothing to give back");
                Ok(())
            }
        }
    }
    .await;
    connection.abort();
    result.map(|()| existed)
}

async fn address_bridge(
    handle: &Handle,
    nic: &str,
    address: IpNet,
    deadline: Instant,
) -> anyhow::Result<()> {
    let nic_index = link_index(handle, nic)
        .await?
        .with_context(|| format!("tunnel NIC {nic} does not exist"))?;
    set_up(handle, nic_index, nic).await?;
    let bridge_index = loop {
        if let Some(index) = link_index(handle, TUNNEL_BRIDGE).await? {
            break index;
        }
        if Instant::now() >= deadline {
            bail!("ovs-vswitchd did not create interface {TUNNEL_BRIDGE} in time");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    set_up(handle, bridge_index, TUNNEL_BRIDGE).await?;
    if !has_address(handle, bridge_index, address.addr()).await? {
        handle
            .address()
            .add(bridge_index, address.addr(), address.prefix_len())
            .execute()
            .await
            .with_context(|| format!("adding {address} to {TUNNEL_BRIDGE}"))?;
    }
    tracing::info!(nic, %address, bridge = TUNNEL_BRIDGE, "userspace tunnel endpoint ready");
    Ok(())
}

async fn link_index(handle: &Handle, name: &str) -> anyhow::Result<Option<u32>> {
    let mut links = handle.link().get().match_name(name.to_string()).execute();
    match links.try_next().await {
        Ok(link) => Ok(link.map(|l| l.header.index)),
        // The kernel answers ENODEV for an unknown name.
        Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -libc::ENODEV => Ok(None),
        Err(e) => Err(e).with_context(|| format!("looking up link {name}")),
    }
}

async fn set_up(handle: &Handle, index: u32, name: &str) -> anyhow::Result<()> {
    handle
        .link()
        .set(LinkUnspec::new_with_index(index).up().build())
        .execute()
        .await
        .with_context(|| format!("setting {name} up"))
}

async fn has_address(handle: &Handle, index: u32, address: IpAddr) -> anyhow::Result<bool> {
    let mut addresses = handle
        .address()
        .get()
        .set_link_index_filter(index)
        .set_address_filter(address)
        .execute();
    Ok(addresses
        .try_next()
        .await
        .context("listing addresses")?
        .is_some())
}
