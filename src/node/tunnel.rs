//! Userspace tunnelling for the netdev datapath. There ovs-vswitchd, not the kernel,
//! terminates Geneve, and it routes tunnel packets through its own tables: the tunnel
//! endpoint address must sit on an OVS bridge that holds the NIC carrying tunnel traffic
//! (the OVS "userspace tunneling" guide). With `--tunnel-nic NIC --tunnel-address IP/PLEN`
//! the node role builds that bridge, `br-phy` (netdev), with NIC as a port and the address on
//! the bridge's internal interface. The kernel datapath needs none of this: its encap IP is
//! an ordinary host address. The NIC should be dedicated to the overlay: its own addresses
//! and routes stop working once OVS owns it.

use std::net::IpAddr;
use std::time::Duration;

use anyhow::{bail, Context};
use futures::TryStreamExt;
use ipnet::IpNet;
use rtnetlink::{Handle, LinkUnspec};
use tokio::time::Instant;

use crate::ovn::Vswitch;
use std::collections::BTreeMap;

/// The netdev bridge holding the tunnel NIC and the tunnel endpoint address.
pub const TUNNEL_BRIDGE: &str = "br-phy";

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
