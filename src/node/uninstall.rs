//! Uninstall on the node: whether a stopping role is being removed for good (the `KubeOvn`
//! object is gone or being deleted) or only restarted, and, when removed, taking away
//! everything the node role put on the node: the CNI plugin binary, every OVS port it plugged
//! with its veth (deleting the host end takes the pod-side interface with it), `br-phy` (the
//! tunnel NIC given back), `br-int`, the chassis `external_ids` and then the node's Chassis
//! rows in SB (`ovn::sb`; ovn-controller keeps them on a plain stop). The chassis role's own
//! files (database, pidfiles, sockets) are `chassis_role.rs`'s.
//!
//! A plain stop (rolling update, pod deleted and re-created) must leave the data path alone,
//! so anything but a clear "removed" answer from the API server means: keep everything.

use std::path::Path;
use std::time::Duration;

use kube::api::Api;
use tracing::{info, warn};

use crate::api::kubeovn::{KubeOvn, KUBE_OVN_SINGLETON};
use crate::ovn::Vswitch;

use super::chassis::{ChassisIdentity, INTEGRATION_BRIDGE};
use super::install::PLUGIN_NAME;
use super::netlink::Netlink;
use super::tunnel;

/// How long a stopping role waits for the API server's answer.
const ASK_TIMEOUT: Duration = Duration::from_secs(10);

/// What the API server says about the installation when a role stops.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InstallState {
    /// `KubeOvn/kube-ovn` exists and is not being deleted: a restart, keep everything.
    Installed,
    /// Absent or carrying a `deletionTimestamp`: remove what we created.
    Removed,
    /// No answer: keep everything (why, for the log).
    Unknown(String),
}

/// Asks for `kubeovns/kube-ovn` (a cluster-scoped get).
pub async fn install_state(client: Option<&kube::Client>) -> InstallState {
    let Some(client) = client else {
        return InstallState::Unknown("no Kubernetes client".into());
    };
    let api: Api<KubeOvn> = Api::all(client.clone());
    match tokio::time::timeout(ASK_TIMEOUT, api.get_opt(KUBE_OVN_SINGLETON)).await {
        Err(_) => InstallState::Unknown(format!(
            "getting KubeOvn {KUBE_OVN_SINGLETON} took over {ASK_TIMEOUT:?}"
        )),
        Ok(Err(e)) => InstallState::Unknown(format!("getting KubeOvn {KUBE_OVN_SINGLETON}: {e}")),
        Ok(Ok(None)) => InstallState::Removed,
        Ok(Ok(Some(k))) if k.metadata.deletion_timestamp.is_some() => InstallState::Removed,
        Ok(Ok(Some(_))) => InstallState::Installed,
    }
}

/// What [`remove_node_install`] removed.
#[derive(Debug, Default)]
pub struct Removal {
    pub plugin_removed: bool,
    pub ports: usize,
    pub veths: usize,
    pub tunnel_bridge: bool,
    pub integration_bridge: bool,
    /// Chassis and Chassis_Private rows deleted from SB.
    pub chassis_rows: i64,
    pub errors: Vec<String>,
}

/// How long an uninstall tries to take the chassis out of SB.
const CHASSIS_REMOVAL_WAIT: Duration = Duration::from_secs(10);

/// Removes what the node role created on the node. Goes on past failures (each is logged and
/// counted) so that one stuck object does not leave the rest behind.
pub async fn remove_node_install(
    vswitch: &Vswitch,
    cni_bin_dir: &Path,
    identity: &ChassisIdentity,
    tunnel_nic: Option<&str>,
) -> Removal {
    let mut done = Removal::default();
    let failed = |what: String| {
        warn!("uninstall: {what}");
        what
    };
    let plugin = cni_bin_dir.join(PLUGIN_NAME);
    match std::fs::remove_file(&plugin) {
        Ok(()) => done.plugin_removed = true,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => done
            .errors
            .push(failed(format!("removing {}: {e}", plugin.display()))),
    }

    match (vswitch.our_interfaces(), Netlink::new()) {
        (Ok(interfaces), Ok(netlink)) => {
            for iface in interfaces {
                match vswitch.unplug_interface(&iface.name).await {
                    Ok(_) => done.ports += 1,
                    Err(e) => done
                        .errors
                        .push(failed(format!("unplugging {}: {e}", iface.name))),
                }
                match netlink.delete_link(&iface.name).await {
                    Ok(true) => done.veths += 1,
                    Ok(false) => {}
                    Err(e) => done
                        .errors
                        .push(failed(format!("deleting veth {}: {e}", iface.name))),
                }
            }
        }
        (Err(e), _) => done
            .errors
            .push(failed(format!("listing our interfaces: {e}"))),
        (_, Err(e)) => done.errors.push(failed(format!("rtnetlink: {e}"))),
    }
    if let Err(e) = vswitch.collect_qos_garbage().await {
        done.errors
            .push(failed(format!("removing unused QoS rows: {e}")));
    }

    match tunnel::release_tunnel_bridge(vswitch, tunnel_nic).await {
        Ok(existed) => done.tunnel_bridge = existed,
        Err(e) => done.errors.push(failed(format!("{e:#}"))),
    }
    match vswitch.bridge_exists(INTEGRATION_BRIDGE) {
        Ok(existed) => done.integration_bridge = existed,
        Err(e) => done
            .errors
            .push(failed(format!("reading {INTEGRATION_BRIDGE}: {e}"))),
    }
    if let Err(e) = vswitch.remove_bridge(INTEGRATION_BRIDGE).await {
        done.errors
            .push(failed(format!("removing {INTEGRATION_BRIDGE}: {e}")));
    }
    let ids = identity.external_ids();
    let keys: Vec<&str> = ids.keys().map(String::as_str).collect();
    match vswitch.remove_ovs_external_ids(&keys).await {
        Err(e) => done
            .errors
            .push(failed(format!("removing the chassis external_ids: {e}"))),
        // ovn-controller no longer has a system-id: its chassis can go from SB.
        Ok(_) => match crate::ovn::sb::remove_chassis(
            &identity.ovn_remote,
            &identity.node_name,
            CHASSIS_REMOVAL_WAIT,
        )
        .await
        {
            Ok(n) => done.chassis_rows = n,
            Err(e) => done.errors.push(failed(format!(
                "removing chassis {} from the southbound database: {e}",
                identity.node_name
            ))),
        },
    }
    info!(
        plugin_removed = done.plugin_removed,
        ports = done.ports,
        veths = done.veths,
        tunnel_bridge = done.tunnel_bridge,
        integration_bridge = done.integration_bridge,
        chassis_rows = done.chassis_rows,
        errors = done.errors.len(),
        "uninstalled from the node"
    );
    done
}
