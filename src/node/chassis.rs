//! The node's chassis as the node role sets it up at start, through `ovn::vswitch`: the
//! Open_vSwitch root row (a fresh embedded database has none), its `external_ids` that make
//! ovn-controller a chassis of the cluster (system-id, hostname, ovn-remote, geneve encap on
//! the node IP, the bridge datapath type, `ovn-cms-options` marking the chassis ours in SB)
//! and `br-int` (`fail-mode=secure`); and the node's
//! [`Datapath`], which the handler and the QoS pass also follow. Supervising the daemons
//! themselves is `crate::ovn::daemons`.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

use tokio::time::Instant;
use tracing::info;

use crate::ovn::vswitch::{QosKind, Vswitch};

/// The integration bridge ovn-controller programs.
pub const INTEGRATION_BRIDGE: &str = "br-int";

/// The OVS datapath of the node's bridges.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Datapath {
    /// Userspace (`datapath_type=netdev`): veth ends need tx checksum offload off.
    Netdev,
    /// The kernel module (`datapath_type=system`).
    System,
}

impl Datapath {
    /// `Bridge.datapath_type` (OVS also spells `system` as the empty string).
    pub fn ovs_type(self) -> &'static str {
        match self {
            Datapath::Netdev => "netdev",
            Datapath::System => "system",
        }
    }

    /// How the pod's ingress limit is enforced. `linux-htb` (a kernel HTB qdisc on the host
    /// end) for both: OVS transmits to a veth through its qdisc on the userspace datapath too,
    /// while `egress-policer` exists only for DPDK ports.
    pub fn qos_kind(self) -> QosKind {
        QosKind::LinuxHtb
    }
}

/// Who this chassis is and how it reaches the cluster.
#[derive(Clone, Debug)]
pub struct ChassisIdentity {
    pub node_name: String,
    pub ovn_remote: String,
    pub encap_ip: IpAddr,
    pub datapath: Datapath,
    /// `ovn-monitor-all`: ovn-controller keeps all of the SB instead of asking for the
    /// datapaths it needs as ports appear, which saves a round trip on a node's first port
    /// of a switch (ADD latency) at the price of memory.
    pub monitor_all: bool,
}

impl ChassisIdentity {
    /// `Open_vSwitch.external_ids` that ovn-controller reads.
    pub fn external_ids(&self) -> BTreeMap<String, String> {
        [
            ("system-id", self.node_name.clone()),
            ("hostname", self.node_name.clone()),
            ("ovn-remote", self.ovn_remote.clone()),
            ("ovn-encap-type", "geneve".to_string()),
            ("ovn-encap-ip", self.encap_ip.to_string()),
            ("ovn-bridge", INTEGRATION_BRIDGE.to_string()),
            (
                "ovn-bridge-datapath-type",
                self.datapath.ovs_type().to_string(),
            ),
            ("ovn-monitor-all", self.monitor_all.to_string()),
            // Copied into the chassis' other_config: marks it as ours in SB.
            ("ovn-cms-options", crate::ovn::sb::CMS_OPTION.to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }
}

/// Connects to the node's Open_vSwitch database, retrying until `deadline` (an embedded
/// ovsdb-server may not be listening yet) or for ever (`None`: another process, the `ovs-ovn`
/// pod, starts it, maybe after us).
pub async fn connect(endpoint: &str, deadline: Option<Instant>) -> anyhow::Result<Vswitch> {
    let started = Instant::now();
    let mut next_report = started + Duration::from_secs(10);
    loop {
        match Vswitch::connect(endpoint).await {
            Ok(v) => return Ok(v),
            Err(e) if deadline.is_none_or(|d| Instant::now() < d) => {
                if Instant::now() >= next_report {
                    info!(endpoint, error = %e, waited_s = started.elapsed().as_secs(),
                        "waiting for the Open_vSwitch database (is the chassis running?)");
                    next_report += Duration::from_secs(10);
                } else {
                    tracing::debug!(endpoint, error = %e, "Open_vSwitch database not reachable yet");
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => anyhow::bail!("connecting to the Open_vSwitch database {endpoint}: {e}"),
        }
    }
}

/// Makes this OVS a chassis: root row, external_ids, br-int.
pub async fn configure(vswitch: &Vswitch, id: &ChassisIdentity) -> anyhow::Result<()> {
    vswitch
        .ensure_root_row()
        .await
        .map_err(|e| anyhow::anyhow!("creating the Open_vSwitch root row: {e}"))?;
    vswitch
        .set_ovs_external_ids(&id.external_ids())
        .await
        .map_err(|e| anyhow::anyhow!("setting Open_vSwitch external_ids: {e}"))?;
    vswitch
        .ensure_bridge(INTEGRATION_BRIDGE, id.datapath.ovs_type(), Some("secure"))
        .await
        .map_err(|e| anyhow::anyhow!("creating bridge {INTEGRATION_BRIDGE}: {e}"))?;
    info!(system_id = %id.node_name, ovn_remote = %id.ovn_remote, encap_ip = %id.encap_ip,
        datapath = id.datapath.ovs_type(), "chassis configured");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_chassis_is_named_after_the_node_and_tunnels_geneve_from_the_node_ip() {
        let id = ChassisIdentity {
            node_name: "node1".into(),
            ovn_remote: "tcp:10.0.0.1:6642".into(),
            encap_ip: "172.30.0.11".parse().expect("ip"),
            datapath: Datapath::Netdev,
            monitor_all: true,
        };
        let ids = id.external_ids();
        assert_eq!(ids["system-id"], "node1");
        assert_eq!(ids["hostname"], "node1");
        assert_eq!(ids["ovn-remote"], "tcp:10.0.0.1:6642");
        assert_eq!(ids["ovn-encap-type"], "geneve");
        assert_eq!(ids["ovn-encap-ip"], "172.30.0.11");
        assert_eq!(ids["ovn-bridge-datapath-type"], "netdev");
        assert_eq!(ids["ovn-monitor-all"], "true");
    }
}
