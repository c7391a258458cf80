//! The node's chassis as the node role sets it up at start, over OVSDB: the Open_vSwitch root
//! row (a fresh embedded database has none), its `external_ids` that make ovn-controller a
//! chassis of the cluster (system-id, hostname, ovn-remote, geneve encap on the node IP, the
//! bridge datapath type) and `br-int` (`fail-mode=secure`). Supervising the daemons themselves
//! is `crate::ovn::daemons`.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

use tokio::time::Instant;
use tracing::info;

use crate::ovn::vswitch::Vswitch;
use crate::ovsdb::model::vswitch::OpenVswitch;
use crate::ovsdb::{Op, Table};

use super::handler::Datapath;

/// The integration bridge ovn-controller programs.
pub const INTEGRATION_BRIDGE: &str = "br-int";

/// Who this chassis is and how it reaches the cluster.
#[derive(Clone, Debug)]
pub struct ChassisIdentity {
    pub node_name: String,
    pub ovn_remote: String,
    pub encap_ip: IpAddr,
    pub datapath: Datapath,
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
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }
}

/// Connects to the node's Open_vSwitch database, retrying until `deadline` (an embedded
/// ovsdb-server may not be listening yet).
pub async fn connect(endpoint: &str, deadline: Instant) -> anyhow::Result<Vswitch> {
    loop {
        match Vswitch::connect(endpoint).await {
            Ok(v) => return Ok(v),
            Err(e) if Instant::now() < deadline => {
                tracing::debug!(endpoint, error = %e, "Open_vSwitch database not reachable yet");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => anyhow::bail!("connecting to the Open_vSwitch database {endpoint}: {e}"),
        }
    }
}

/// Inserts the Open_vSwitch root row if the database has none (what `ovs-vsctl init` does).
pub async fn ensure_root_row(vswitch: &Vswitch) -> anyhow::Result<()> {
    let client = vswitch.client();
    if !client.list::<OpenVswitch>()?.is_empty() {
        return Ok(());
    }
    let ops = vec![
        Op::wait_absent(OpenVswitch::NAME, vec![]),
        Op::insert(OpenVswitch::NAME, Default::default(), None),
    ];
    if let Err(e) = client.transact(ops).await {
        // Someone else (ovs-vsctl, a restarted us) inserted it first: fine if it is there now.
        client.sync().await?;
        if client.list::<OpenVswitch>()?.is_empty() {
            anyhow::bail!("creating the Open_vSwitch root row: {e}");
        }
    }
    Ok(())
}

/// Makes this OVS a chassis: root row, external_ids, br-int.
pub async fn configure(vswitch: &Vswitch, id: &ChassisIdentity) -> anyhow::Result<()> {
    ensure_root_row(vswitch).await?;
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
